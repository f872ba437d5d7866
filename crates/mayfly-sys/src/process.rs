//! Process creation and replacement: a fork-like `clone` with namespace flags, `execve`, `_exit`.
//!
//! Forking a process that has other threads is unsound in Rust (another thread may hold the
//! allocator's or stdio's lock, and the child would deadlock on it), so [`clone_process`]
//! checks that the calling process has exactly one thread and refuses otherwise. The daemon
//! never calls it: only the single-threaded `forker` helper does.

use std::ffi::CString;
use std::io;

use rustix::process::Pid;

/// Namespace and process flags understood by [`clone_process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CloneFlags {
    /// New user namespace (`CLONE_NEWUSER`).
    pub user: bool,
    /// New mount namespace (`CLONE_NEWNS`).
    pub mount: bool,
    /// New pid namespace (`CLONE_NEWPID`): the child becomes its pid 1.
    pub pid: bool,
    /// New UTS namespace (`CLONE_NEWUTS`).
    pub uts: bool,
    /// New IPC namespace (`CLONE_NEWIPC`).
    pub ipc: bool,
    /// New network namespace (`CLONE_NEWNET`).
    pub net: bool,
    /// New cgroup namespace (`CLONE_NEWCGROUP`).
    pub cgroup: bool,
    /// The child's parent is the caller's parent (`CLONE_PARENT`), so that the caller's
    /// parent can reap it.
    pub parent: bool,
}

impl CloneFlags {
    fn bits(self) -> libc::c_ulong {
        let mut bits = libc::c_ulong::from(libc::SIGCHLD.unsigned_abs());
        let table = [
            (self.user, libc::CLONE_NEWUSER),
            (self.mount, libc::CLONE_NEWNS),
            (self.pid, libc::CLONE_NEWPID),
            (self.uts, libc::CLONE_NEWUTS),
            (self.ipc, libc::CLONE_NEWIPC),
            (self.net, libc::CLONE_NEWNET),
            (self.cgroup, libc::CLONE_NEWCGROUP),
            (self.parent, libc::CLONE_PARENT),
        ];
        for (on, flag) in table {
            if on {
                bits |= libc::c_ulong::from(flag.unsigned_abs());
            }
        }
        bits
    }
}

/// Which side of a [`clone_process`] the caller is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// In the new process.
    Child,
    /// In the calling process; the new process has this pid (in the caller's pid namespace).
    Parent(Pid),
}

/// The host's procfs, opened once. A child that later joins another mount namespace (the
/// exec helper) still reads its own entry through it.
static HOST_PROC: std::sync::OnceLock<std::os::fd::OwnedFd> = std::sync::OnceLock::new();

/// How many threads the calling process has, from `/proc/<pid>/stat`.
pub fn thread_count() -> io::Result<u32> {
    use std::io::Read;
    let proc = match HOST_PROC.get() {
        Some(fd) => fd,
        None => {
            let fd = rustix::fs::open(
                "/proc",
                rustix::fs::OFlags::PATH
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )?;
            HOST_PROC.get_or_init(|| fd)
        }
    };
    // `self` in the host's procfs is the caller's host pid, also from inside a pid
    // namespace (where `getpid()` would name another process of the host: an instance's
    // init is pid 1 there).
    let fd = rustix::fs::openat(
        proc,
        "self/stat",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let mut stat = String::new();
    std::fs::File::from(fd).read_to_string(&mut stat)?;
    // The command name (field 2) may contain spaces and parentheses; fields after the last
    // `)` are plain numbers. num_threads is field 20, the 18th after the name.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other("malformed /proc/self/stat"))?;
    after
        .split_whitespace()
        .nth(17)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other("malformed /proc/self/stat"))
}

/// Creates a child process like `fork`, optionally in new namespaces.
///
/// Refuses with an error unless the calling process is single-threaded: that is what makes it
/// sound to run arbitrary Rust code (allocations included) in the child afterwards.
pub fn clone_process(flags: CloneFlags) -> io::Result<Forked> {
    if thread_count()? != 1 {
        return Err(io::Error::other(
            "refusing to fork a multi-threaded process (only the forker may create containers)",
        ));
    }
    // SAFETY: a raw clone without CLONE_VM and with a null stack behaves like fork: the child
    // gets a copy of the address space. The process is single-threaded (checked above), so no
    // lock can be held by a thread that does not exist in the child. glibc does not cache the
    // pid since 2.25, so getpid() stays right in the child.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags.bits(),
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => {
            let pid =
                i32::try_from(pid).map_err(|_| io::Error::other("clone returned a bad pid"))?;
            Pid::from_raw(pid)
                .map(Forked::Parent)
                .ok_or_else(|| io::Error::other("clone returned a bad pid"))
        }
    }
}

/// Replaces the process image. Returns only on failure, with the error.
///
/// `path` is used as given (no `PATH` search); `argv` and `envp` are passed verbatim.
pub fn execve(path: &CString, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    // SAFETY: every pointer points into a CString that outlives the call, and both arrays
    // are null-terminated as execve requires.
    unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
    io::Error::last_os_error()
}

/// Ends the process at once with `code`, without running exit handlers or destructors.
///
/// Used in forked children, where flushing the parent's buffered state twice would be wrong.
pub fn exit_immediately(code: i32) -> ! {
    // SAFETY: _exit has no preconditions; it never returns.
    unsafe { libc::_exit(code) }
}

/// Marks every file descriptor from `first` upwards close-on-exec, so that nothing the
/// caller inherited leaks through the next `execve`.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors; it closes
    // nothing, so no owned descriptor is invalidated.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Moves the calling process into a new cgroup namespace rooted at its current cgroup.
///
/// Done after the process has been placed in its instance's cgroup, so that the instance
/// sees that group as `/`.
pub fn unshare_cgroup_namespace() -> io::Result<()> {
    // SAFETY: unsharing only the cgroup namespace changes no memory, file table or fs state
    // that Rust code relies on (unlike CLONE_FILES or CLONE_FS, which the unsafe rustix API
    // guards against).
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWCGROUP) }
        .map_err(io::Error::from)
}

/// Moves the calling thread into a new network namespace (tests that must not touch the
/// host's network: nextest runs each test in its own process, and the processes the thread
/// spawns inherit its namespace).
pub fn unshare_network_namespace() -> io::Result<()> {
    // SAFETY: unsharing only the network namespace changes no memory, file table or fs state
    // that Rust code relies on.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
        .map_err(io::Error::from)
}

/// Duplicates `fd` onto descriptor number `target` (0, 1 or 2 in practice), replacing what
/// was there; the duplicate is inherited across `execve`.
pub fn dup_onto(fd: std::os::fd::BorrowedFd<'_>, target: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    if fd.as_raw_fd() == target {
        // dup2 would keep the close-on-exec flag; clear it instead.
        let flags = rustix::io::fcntl_getfd(fd)?;
        return rustix::io::fcntl_setfd(fd, flags - rustix::io::FdFlags::CLOEXEC)
            .map_err(Into::into);
    }
    // SAFETY: dup2 on a valid borrowed source; the target number is meant to be replaced, and
    // no Rust object owns descriptors 0-2 in the forker's children.
    if unsafe { libc::dup2(fd.as_raw_fd(), target) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the calling thread's filesystem uid and gid: the owner of what it creates from now
/// on (its other ids and its capabilities stay). Fails if the kernel refused either.
pub fn set_fs_ids(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: setfsuid and setfsgid take integers and change only the calling thread's
    // credentials; an invalid id (-1) changes nothing and returns the current one.
    let (fsuid, fsgid) = unsafe {
        libc::setfsgid(gid);
        libc::setfsuid(uid);
        (libc::setfsuid(u32::MAX), libc::setfsgid(u32::MAX))
    };
    if fsuid.cast_unsigned() != uid || fsgid.cast_unsigned() != gid {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    Ok(())
}

/// Removes capability number `cap` from the calling thread's bounding set.
pub fn drop_bounding_capability(cap: u32) -> io::Result<()> {
    // SAFETY: PR_CAPBSET_DROP takes an integer and touches no memory of ours.
    let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
    if ret == -1 {
        let err = io::Error::last_os_error();
        // EINVAL: the kernel does not know this capability; nothing to drop.
        if err.raw_os_error() == Some(libc::EINVAL) {
            return Ok(());
        }
        return Err(err);
    }
    Ok(())
}

/// Removes `key` from the environment of this process (so no child started from now on
/// inherits it) and returns its value.
///
/// Refuses with an error unless the calling process is single-threaded: `std::env::remove_var`
/// is sound only when no other thread may read or write the environment at the same time.
pub fn take_env_var(key: &str) -> io::Result<Option<std::ffi::OsString>> {
    let value = std::env::var_os(key);
    if value.is_none() {
        return Ok(None);
    }
    if thread_count()? != 1 {
        return Err(io::Error::other(
            "refusing to change the environment of a multi-threaded process",
        ));
    }
    // SAFETY: the process has one thread (checked above), so nothing else reads or writes the
    // environment while it changes.
    unsafe { std::env::remove_var(key) };
    Ok(value)
}
