//! Thin wrappers over the system calls the benchmark makes itself: the new mount API
//! (`open_tree`, `mount_setattr`, `fsopen`/`fsconfig`/`fsmount`, `move_mount`), `clone` with
//! namespace flags, and a few classic calls. Raw `libc::syscall` so that the code does exactly
//! what it says and nothing more (this is the "floor" after all).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub const OPEN_TREE_CLONE: libc::c_uint = 1;
pub const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_SET_FD: libc::c_uint = 5;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
pub const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
pub const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

pub fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn fd(ret: libc::c_long) -> io::Result<OwnedFd> {
    let raw = check(ret)?;
    // SAFETY: the kernel just returned this descriptor to us and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw as RawFd) })
}

fn ctx(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A detached clone of the mount at `path` (not recursive).
pub fn open_tree_clone(path: &Path) -> io::Result<OwnedFd> {
    let p = cstr(path);
    // SAFETY: valid NUL-terminated path, plain integer flags.
    fd(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            p.as_ptr(),
            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC,
        )
    })
    .map_err(ctx(format!("open_tree {}", path.display())))
}

/// `mount_setattr` on a detached mount: sets `attrs`, idmapped through `userns` if given.
pub fn set_attrs(tree: &OwnedFd, attrs: u64, userns: Option<&OwnedFd>) -> io::Result<()> {
    let mut attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    if let Some(ns) = userns {
        attr.attr_set |= MOUNT_ATTR_IDMAP;
        attr.userns_fd = ns.as_raw_fd() as u64;
    }
    // SAFETY: `attr` lives across the call and its size is passed.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
    .map_err(ctx("mount_setattr"))
}

fn fsconfig_string(fs: &OwnedFd, key: &CStr, value: &CStr) -> io::Result<()> {
    // SAFETY: valid NUL-terminated strings.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        )
    })
    .map(drop)
}

/// A detached overlay mount over `lower` (cloned read-only, no-dev, idmapped through
/// `userns` when given) with the given upper and work directories: the same construction
/// as mayfly's forker.
pub fn build_overlay(
    lower: &Path,
    upper: &Path,
    work: &Path,
    userns: Option<&OwnedFd>,
) -> io::Result<OwnedFd> {
    let tree = open_tree_clone(lower)?;
    set_attrs(&tree, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV, userns)
        .map_err(ctx(format!("prepare lower {}", lower.display())))?;
    // SAFETY: valid NUL-terminated name.
    let fs = fd(unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) })
        .map_err(ctx("fsopen overlay"))?;
    // SAFETY: valid key and descriptor.
    let by_fd = check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_FD,
            c"lowerdir+".as_ptr(),
            std::ptr::null::<libc::c_char>(),
            tree.as_raw_fd(),
        )
    });
    if by_fd.is_err() {
        let path = CString::new(format!("/proc/self/fd/{}", tree.as_raw_fd())).expect("no NUL");
        fsconfig_string(&fs, c"lowerdir+", &path).map_err(ctx("overlay lowerdir+"))?;
    }
    fsconfig_string(&fs, c"upperdir", &cstr(upper)).map_err(ctx("overlay upperdir"))?;
    fsconfig_string(&fs, c"workdir", &cstr(work)).map_err(ctx("overlay workdir"))?;
    for (k, v) in [
        (c"redirect_dir", c"off"),
        (c"index", c"off"),
        (c"metacopy", c"off"),
    ] {
        let _ = fsconfig_string(&fs, k, v);
    }
    // SAFETY: null key and value are what FSCONFIG_CMD_CREATE takes.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })
    .map_err(ctx("create overlay (see dmesg)"))?;
    // SAFETY: plain integer arguments.
    fd(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_NODEV as libc::c_uint,
        )
    })
    .map_err(ctx("fsmount overlay"))
}

/// Attaches detached mount `tree` at `target` in the caller's mount namespace.
pub fn attach(tree: &OwnedFd, target: &Path) -> io::Result<()> {
    let t = cstr(target);
    // SAFETY: valid descriptor and strings.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map(drop)
    .map_err(ctx(format!("attach at {}", target.display())))
}

pub fn umount(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let t = cstr(target);
    // SAFETY: valid string.
    check(unsafe { libc::umount2(t.as_ptr(), flags) } as libc::c_long)
        .map(drop)
        .map_err(ctx(format!("umount {}", target.display())))
}

pub fn mount(
    src: &CStr,
    target: &Path,
    fstype: &CStr,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let t = cstr(target);
    // SAFETY: valid strings (or null data).
    check(unsafe {
        libc::mount(
            src.as_ptr(),
            t.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    } as libc::c_long)
    .map(drop)
    .map_err(ctx(format!("mount {}", target.display())))
}

pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for two descriptors.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } as libc::c_long)?;
    // SAFETY: both descriptors were just created and are ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `clone` without a new stack (fork semantics) and with `flags | SIGCHLD`. Returns 0 in
/// the child. The caller must be single-threaded (this program is).
pub fn clone(flags: libc::c_int) -> io::Result<libc::pid_t> {
    // SAFETY: fork-like clone (no CLONE_VM, null stack) in a single-threaded process.
    check(unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    })
    .map(|p| p as libc::pid_t)
}

/// Waits for `pid`; returns its exit code, or 128+signal.
pub fn wait(pid: libc::pid_t) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    })
}

pub fn write_id_maps(pid: libc::pid_t, base: u32, count: u32) -> io::Result<()> {
    let line = format!("0 {base} {count}");
    for file in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{pid}/{file}"), &line)
            .map_err(ctx(format!("write /proc/{pid}/{file}")))?;
    }
    Ok(())
}

/// A user namespace mapping 0 → `base` for `count` ids, kept alive by the returned
/// descriptor alone. Idmapped mounts only read the mapping, so one such namespace serves
/// every iteration that needs an idmapped lower layer.
pub fn mapping_userns(base: u32, count: u32) -> io::Result<OwnedFd> {
    let (r, w) = pipe()?;
    let pid = clone(libc::CLONE_NEWUSER)?;
    if pid == 0 {
        drop(w);
        let mut b = [0u8; 1];
        // SAFETY: reading into a local buffer; then leave without running any Rust teardown.
        unsafe {
            libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), 1);
            libc::_exit(0)
        }
    }
    drop(r);
    let result = write_id_maps(pid, base, count).and_then(|()| {
        let p = CString::new(format!("/proc/{pid}/ns/user")).expect("no NUL");
        // SAFETY: valid string.
        fd(unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) } as libc::c_long)
    });
    drop(w);
    let _ = wait(pid);
    result.map_err(ctx("create the id-mapping user namespace"))
}

/// The first line of `uname -srm`.
pub fn uname() -> String {
    // SAFETY: zeroed utsname is a valid out buffer.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid out pointer.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    let s = |f: &[libc::c_char]| {
        // SAFETY: uname fills NUL-terminated strings.
        unsafe { CStr::from_ptr(f.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    format!("{} {} {}", s(&u.sysname), s(&u.release), s(&u.machine))
}

pub fn online_cpus() -> i64 {
    // SAFETY: plain query.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }
}

pub fn chown(path: &Path, id: u32) -> io::Result<()> {
    std::os::unix::fs::chown(path, Some(id), Some(id))
        .map_err(ctx(format!("chown {}", path.display())))
}
