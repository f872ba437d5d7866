//! Code that runs in a freshly cloned child of the forker, between `clone` and `execve`:
//! building the container's root inside its own mount namespace, and turning the child into
//! the requested process (identity, terminal, confinement, program).
//!
//! The forker is single-threaded, so the child may allocate and use std freely. Every
//! failure is described (step, path, errno) and sent to the forker over the sync socket; the
//! child then exits. Success is the socket closing on `execve` (it is close-on-exec).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::mount::{MountFlags, MountPropagationFlags, MoveMountFlags, UnmountFlags};
use serde::{Deserialize, Serialize};

use crate::cgroup::BootMounts;
use crate::security;
use crate::spec::{ContainerSpec, NetworkMode, ProcessSpec};
use crate::user::Identity;

/// A setup step that failed inside the child.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChildFailure {
    /// What the child was doing.
    pub step: String,
    /// errno, when a system call failed.
    pub errno: Option<i32>,
    /// Human-readable cause.
    pub detail: String,
}

/// The step name of a failure to resolve the process's user: the forker classifies it as
/// [`crate::protocol::FailureKind::BadUser`] (see `spawn::child_failure`).
pub(crate) const RESOLVE_USER_STEP: &str = "resolve user";

/// The step name of mounting a bind on its target inside the instance: the forker
/// classifies it as [`crate::protocol::FailureKind::BadMountTarget`] (the instance's own
/// files are in the way).
pub(crate) const MOUNT_TARGET_STEP: &str = "mount on";

/// The step name of taking the resolved ids; one the user namespace does not map
/// (`EINVAL`) is the user's error too.
pub(crate) const TAKE_IDS_STEP: &str = "take";

impl ChildFailure {
    /// The user `user` cannot be resolved in the instance: `detail` says why.
    pub(crate) fn bad_user(user: &str, detail: String) -> Self {
        let user = if user.is_empty() { "root" } else { user };
        ChildFailure {
            step: format!("{RESOLVE_USER_STEP} `{user}`"),
            errno: None,
            detail,
        }
    }

    pub(crate) fn io(step: impl Into<String>, e: impl Into<io::Error>) -> Self {
        let e: io::Error = e.into();
        ChildFailure {
            step: step.into(),
            errno: e.raw_os_error(),
            detail: e.to_string(),
        }
    }
}

pub(crate) type ChildResult<T> = Result<T, ChildFailure>;

pub(super) trait Step<T> {
    fn step(self, what: impl FnOnce() -> String) -> ChildResult<T>;
}

impl<T, E: Into<io::Error>> Step<T> for Result<T, E> {
    fn step(self, what: impl FnOnce() -> String) -> ChildResult<T> {
        self.map_err(|e| ChildFailure::io(what(), e))
    }
}

/// Descriptors that become the process's standard input, output and error.
#[derive(Debug)]
pub(crate) enum ChildStdio {
    /// Three descriptors (stdin, stdout, stderr).
    Three(OwnedFd, OwnedFd, OwnedFd),
    /// One terminal for all three; it becomes the controlling terminal.
    Tty(OwnedFd),
    /// `/dev/null` (opened inside the container) for stdin, this for stdout and stderr.
    Log(OwnedFd),
}

/// Builds the root filesystem inside the child's new mount namespace from the detached
/// overlay mount `root_mount`, and pivots into it.
pub(crate) fn enter_rootfs(
    spec: &ContainerSpec,
    root_mount: &OwnedFd,
    mount_point: &OwnedFd,
    binds: Vec<OwnedFd>,
    cgroup_mounts: BootMounts,
    console: Option<&OwnedFd>,
) -> ChildResult<()> {
    // Nothing we mount may propagate back to the host.
    rustix::mount::mount_change(
        c"/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .step(|| "make mounts private".into())?;
    // The mount point was opened by the forker (as host root): the instance's own root
    // cannot look up paths inside the private state directory, and must not need to.
    rustix::mount::move_mount(
        root_mount.as_fd(),
        c"",
        mount_point.as_fd(),
        c"",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .step(|| format!("attach root at {}", spec.rootfs.display()))?;
    rustix::process::fchdir(root_mount).step(|| "enter root".into())?;

    // Until pivot_root, an absolute symlink would resolve against the host's root: the
    // top-level mount points come from the template, so make sure they are real directories
    // before anything is mounted on or created under them. Below them everything is ours
    // (kernel filesystems and our own tmpfs). Nothing of the instance runs yet, so the check
    // cannot be raced.
    for top in ["proc", "sys", "dev"] {
        ensure_dir(top)?;
        let st = rustix::fs::statat(rustix::fs::CWD, top, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            .step(|| format!("inspect /{top}"))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
            return Err(ChildFailure {
                step: format!("check /{top}"),
                errno: None,
                detail: format!(
                    "the template's /{top} is not a directory (a symlink?); a root filesystem needs real /proc, /sys and /dev directories"
                ),
            });
        }
    }
    let nosuid_nodev_noexec = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    rustix::mount::mount(c"proc", c"proc", c"proc", nosuid_nodev_noexec, None)
        .step(|| "mount /proc".into())?;
    if spec.network == NetworkMode::Host {
        // sysfs can only be mounted from a user namespace that owns the network namespace;
        // sharing the host's, show the host's /sys read-only instead.
        let sys = detached_host_tree("/sys", true)?;
        attach(&sys, root_mount, "sys", "mount /sys")?;
    } else {
        rustix::mount::mount(
            c"sysfs",
            c"sys",
            c"sysfs",
            nosuid_nodev_noexec | MountFlags::RDONLY,
            None,
        )
        .step(|| "mount /sys".into())?;
    }
    super::boot_mounts::mount_cgroups(cgroup_mounts, spec.idmap.is_some())?;
    build_dev(spec, console)?;
    // mayfly's own /run tmpfs (when it mounted one): fresh, with nothing of the tenant in it
    // yet; binds below /run are resolved inside it (see below).
    let mut run_root = None;
    if super::boot_mounts::boots_init(&spec.process.args) {
        super::boot_mounts::mount_run(&spec.id)?;
        run_root = rustix::fs::open(
            "run",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()
        .filter(|fd| rustix::fs::fstatfs(fd).is_ok_and(|st| st.f_type == libc::TMPFS_MAGIC));
    }
    let mut bases: Vec<(String, &OwnedFd)> = Vec::new();
    if let Some(run) = &run_root {
        bases.push(("run".to_owned(), run));
    }
    // Binds come after every filesystem mayfly mounts (the /run tmpfs above all): one whose
    // target is below such a mount point must land on it, not under it.
    for (bind, tree) in spec.binds.iter().zip(&binds) {
        if bind.only_over_file {
            super::file_mounts::mount_over_file(&spec.id, root_mount, bind, tree)?;
            continue;
        }
        let st = rustix::fs::statx(
            tree,
            c"",
            rustix::fs::AtFlags::EMPTY_PATH,
            rustix::fs::StatxFlags::TYPE,
        )
        .step(|| format!("inspect bind source {}", bind.source.display()))?;
        let kind = rustix::fs::FileType::from_raw_mode(u32::from(st.stx_mode));
        let rel = bind.target.trim_start_matches('/');
        // Resolved inside the deepest mount already made above it (our /run tmpfs, an
        // earlier bind): the root's resolution does not cross onto mounts.
        let (base, below) = bases
            .iter()
            .filter_map(|(path, fd)| {
                rel.strip_prefix(path.as_str())
                    .and_then(|r| r.strip_prefix('/'))
                    .filter(|r| !r.is_empty())
                    .map(|r| (path.len(), *fd, r))
            })
            .max_by_key(|(len, _, _)| *len)
            .map_or((root_mount, rel), |(_, fd, r)| (fd, r));
        let on_target = |f: ChildFailure| ChildFailure {
            step: format!("{MOUNT_TARGET_STEP} {}", bind.target),
            errno: f.errno,
            detail: format!("{}: {}", f.step, f.detail),
        };
        let target = open_in_root(base, below, Some(kind)).map_err(on_target)?;
        move_onto(tree, &target)
            .step(|| format!("mount {}", bind.source.display()))
            .map_err(on_target)?;
        if kind == rustix::fs::FileType::Directory {
            bases.push((rel.to_owned(), tree));
        }
    }
    drop(binds);
    mask_paths()?;

    // pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only
    // the container's tree (runc's trick, no put_old directory needed).
    rustix::process::pivot_root(c".", c".").step(|| "pivot_root".into())?;
    rustix::mount::unmount(c".", UnmountFlags::DETACH).step(|| "detach host root".into())?;
    rustix::process::chdir(c"/").step(|| "chdir /".into())?;
    Ok(())
}

/// A detached recursive clone of host path `path`, read-only when asked, never with devices
/// or setuid.
fn detached_host_tree(path: &str, readonly: bool) -> ChildResult<OwnedFd> {
    use rustix::mount::OpenTreeFlags;
    let tree = rustix::mount::open_tree(
        rustix::fs::CWD,
        path,
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE,
    )
    .step(|| format!("clone {path}"))?;
    let attrs = mayfly_sys::mount::DetachedAttrs {
        readonly,
        nosuid: true,
    };
    mayfly_sys::mount::set_detached_mount_attrs(&tree, None::<&OwnedFd>, attrs)
        .step(|| format!("protect {path}"))?;
    Ok(tree)
}

/// Attaches detached mount `tree` at `rel` inside the root.
fn attach(tree: &OwnedFd, root: &OwnedFd, rel: &str, step: &str) -> ChildResult<()> {
    let target = open_in_root(root, rel, None)?;
    move_onto(tree, &target).step(|| step.to_owned())
}

pub(crate) fn move_onto(tree: &OwnedFd, target: &OwnedFd) -> rustix::io::Result<()> {
    rustix::mount::move_mount(
        tree.as_fd(),
        c"",
        target.as_fd(),
        c"",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
}

/// Opens `rel` inside the instance's root (an `O_PATH` descriptor), resolving every component
/// as if the root were `/` — a symlink in the template can never lead to the host — and
/// without leaving the root filesystem. With `create`, missing directories are made and a
/// missing last component is created as that kind (a directory, else an empty file).
fn open_in_root(
    root: &OwnedFd,
    rel: &str,
    create: Option<rustix::fs::FileType>,
) -> ChildResult<OwnedFd> {
    use rustix::fs::{OFlags, ResolveFlags};
    let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV;
    let open = |path: &str| {
        rustix::fs::openat2(
            root,
            path,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            how,
        )
    };
    match open(rel) {
        Ok(fd) => return Ok(fd),
        Err(rustix::io::Errno::NOENT) if create.is_some() => {}
        Err(e) => return Err(ChildFailure::io(format!("find /{rel}"), e)),
    }
    let parts: Vec<&str> = rel
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let mut prefix = String::new();
    for (i, part) in parts.iter().enumerate() {
        let parent = if prefix.is_empty() {
            ".".to_owned()
        } else {
            prefix.clone()
        };
        let dir = rustix::fs::openat2(
            root,
            parent.as_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            how,
        )
        .step(|| format!("open /{parent}"))?;
        let last = i + 1 == parts.len();
        let made = if !last || create == Some(rustix::fs::FileType::Directory) {
            rustix::fs::mkdirat(&dir, *part, Mode::from_raw_mode(0o755))
        } else {
            rustix::fs::openat(
                &dir,
                *part,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map(drop)
        };
        match made {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(ChildFailure::io(format!("create /{prefix}/{part}"), e)),
        }
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(part);
    }
    open(rel).step(|| format!("find /{rel}"))
}

fn ensure_dir(path: &str) -> ChildResult<()> {
    match rustix::fs::mkdir(path, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(ChildFailure::io(format!("create /{path}"), e)),
    }
}

fn ensure_file(path: &str) -> ChildResult<()> {
    rustix::fs::open(
        path,
        OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map(drop)
    .step(|| format!("create /{path}"))
}

/// A minimal `/dev`: a tmpfs with the harmless host devices bind-mounted (device nodes
/// cannot be created in a user namespace, and should not be anyway), a private devpts, shm
/// and mqueue.
///
/// The tmpfs is `nodev`: without a user namespace root inside has CAP_MKNOD, and a node it
/// made there must not open (the device rules of the cgroup refuse it too). The devices we
/// give are bind mounts, which keep the flags of their source (the host's `/dev`, the
/// devpts of the console), so they still open; devpts is mounted without `nodev` since its
/// `ptmx` and terminals are devices, and it makes no other nodes.
fn build_dev(spec: &ContainerSpec, console: Option<&OwnedFd>) -> ChildResult<()> {
    ensure_dir("dev")?;
    rustix::mount::mount(
        c"tmpfs",
        c"dev",
        c"tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        Some(c"mode=755,size=65536k"),
    )
    .step(|| "mount /dev".into())?;
    for dev in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = format!("dev/{dev}");
        ensure_file(&target)?;
        rustix::mount::mount_bind(format!("/dev/{dev}").as_str(), target.as_str())
            .step(|| format!("bind /dev/{dev}"))?;
    }
    ensure_dir("dev/pts")?;
    let gid5 = spec.idmap.is_none_or(|m| m.count > 5);
    let pts_opts: &std::ffi::CStr = if gid5 {
        c"newinstance,ptmxmode=0666,mode=0620,gid=5"
    } else {
        c"newinstance,ptmxmode=0666,mode=0620"
    };
    rustix::mount::mount(
        c"devpts",
        c"dev/pts",
        c"devpts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        Some(pts_opts),
    )
    .step(|| "mount /dev/pts".into())?;
    ensure_dir("dev/shm")?;
    rustix::mount::mount(
        c"shm",
        c"dev/shm",
        c"tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        Some(c"mode=1777,size=65536k"),
    )
    .step(|| "mount /dev/shm".into())?;
    ensure_dir("dev/mqueue")?;
    rustix::mount::mount(
        c"mqueue",
        c"dev/mqueue",
        c"mqueue",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )
    .step(|| "mount /dev/mqueue".into())?;
    for (link, target) in [
        ("dev/ptmx", "pts/ptmx"),
        ("dev/fd", "/proc/self/fd"),
        ("dev/stdin", "/proc/self/fd/0"),
        ("dev/stdout", "/proc/self/fd/1"),
        ("dev/stderr", "/proc/self/fd/2"),
    ] {
        rustix::fs::symlink(target, link).step(|| format!("create /{link}"))?;
    }
    if let Some(console) = console {
        // A detached mount of the terminal, made by the forker in the host's namespace (see
        // `spawn::detached_console`); /dev is our fresh tmpfs, so the path cannot be a link.
        ensure_file("dev/console")?;
        let target = rustix::fs::open(
            "dev/console",
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .step(|| "open /dev/console".into())?;
        move_onto(console, &target).step(|| "mount /dev/console".into())?;
    }
    Ok(())
}

fn mask_paths() -> ChildResult<()> {
    for file in security::MASKED_FILES {
        if Path::new(file).exists() {
            rustix::mount::mount_bind("/dev/null", *file).step(|| format!("mask /{file}"))?;
        }
    }
    for dir in security::MASKED_DIRS {
        if Path::new(dir).is_dir() {
            rustix::mount::mount(
                c"tmpfs",
                *dir,
                c"tmpfs",
                MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                Some(c"size=0"),
            )
            .step(|| format!("mask /{dir}"))?;
        }
    }
    for path in security::READONLY_PATHS {
        if Path::new(path).exists() {
            rustix::mount::mount_bind(*path, *path).step(|| format!("bind /{path}"))?;
            rustix::mount::mount_remount(
                *path,
                MountFlags::BIND
                    | MountFlags::RDONLY
                    | MountFlags::NOSUID
                    | MountFlags::NODEV
                    | MountFlags::NOEXEC,
                c"",
            )
            .step(|| format!("make /{path} read-only"))?;
        }
    }
    Ok(())
}

/// Turns the child into `process`, running as `identity` (resolved inside the instance by
/// [`super::identity::resolve_user`]), and executes it; returns only on failure.
///
/// Expects to run inside the instance's namespaces with its root as `/`. The order matters:
/// the seccomp filter goes in while we still hold CAP_SYS_ADMIN in the user namespace (so
/// no `no_new_privs` is needed), the bounding set is cut before the identity change, and the
/// capability sets last. A process that is not root gets no capabilities at all (as with
/// runc and Docker: the kernel clears the permitted and effective sets when every uid
/// leaves 0, and the inheritable and ambient sets are emptied), though the bounding set
/// still allows setuid programs inside what it allows root.
pub(crate) fn become_process(
    process: &ProcessSpec,
    identity: &Identity,
    stdio: ChildStdio,
) -> ChildFailure {
    match prepare_process(process, identity, stdio) {
        Ok(()) => exec_program(process, identity),
        Err(f) => f,
    }
}

fn prepare_process(
    process: &ProcessSpec,
    identity: &Identity,
    stdio: ChildStdio,
) -> ChildResult<()> {
    rustix::process::setsid().step(|| "start a session".into())?;
    match stdio {
        ChildStdio::Three(i, o, e) => {
            dup_to(&i, 0)?;
            dup_to(&o, 1)?;
            dup_to(&e, 2)?;
        }
        ChildStdio::Tty(t) => {
            rustix::process::ioctl_tiocsctty(&t).step(|| "take the terminal".into())?;
            if identity.uid != 0 {
                // The terminal belongs to the instance's root; its user must be able to
                // reopen it (`/dev/tty`, `/proc/self/fd/0`) and change its modes.
                let _ = rustix::fs::fchown(
                    &t,
                    Some(rustix::process::Uid::from_raw(identity.uid)),
                    None,
                );
            }
            for n in 0..3 {
                dup_to(&t, n)?;
            }
        }
        ChildStdio::Log(out) => {
            let null = rustix::fs::open(
                c"/dev/null",
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .step(|| "open /dev/null".into())?;
            dup_to(&null, 0)?;
            dup_to(&out, 1)?;
            dup_to(&out, 2)?;
        }
    }
    if let Err(e) = rustix::process::chdir(process.cwd.as_str()) {
        return Err(ChildFailure {
            step: format!("enter working directory {}", process.cwd),
            errno: Some(e.raw_os_error()),
            detail: format!("{e}: it must exist inside the instance"),
        });
    }
    confine(identity)?;
    conventional_nofile();
    mayfly_sys::signal::reset_all().step(|| "reset signals".into())?;
    mayfly_sys::process::cloexec_from(3).step(|| "close inherited descriptors".into())?;
    Ok(())
}

/// The forker raised its own descriptor limit for the host's sake; processes inside get the
/// conventional soft limit back (programs that close every possible descriptor at start
/// would crawl through a million), with the hard limit left for them to raise.
pub(super) fn conventional_nofile() {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(limit.current.unwrap_or(1024).min(1024)),
            maximum: limit.maximum,
        },
    );
}

/// What confines a process of the instance (the command, or the init that runs it): the
/// seccomp filter, the bounding set, the identity and the capability sets.
pub(super) fn confine(identity: &Identity) -> ChildResult<()> {
    // Without a user namespace of its own, the instance may not make one either (see
    // `security::filter`).
    if let Some(filter) = security::filter(security::in_initial_user_namespace()) {
        mayfly_sys::seccomp::install_filter(&filter).step(|| "install seccomp filter".into())?;
    }
    drop_bounding_set()?;
    set_identity(identity)?;
    let kept = if identity.uid == 0 {
        security::kept_capabilities()
    } else {
        rustix::thread::CapabilitySet::empty()
    };
    rustix::thread::set_capabilities(
        None,
        rustix::thread::CapabilitySets {
            effective: kept,
            permitted: kept,
            inheritable: rustix::thread::CapabilitySet::empty(),
        },
    )
    .step(|| "set capabilities".into())?;
    let _ = rustix::thread::clear_ambient_capability_set();
    Ok(())
}

/// Sets the supplementary groups, then the gids, then the uids (each needs the capability
/// the next step gives up). An id the instance's user namespace does not map fails with
/// `EINVAL`: said in words.
fn set_identity(identity: &Identity) -> ChildResult<()> {
    let unmapped = |what: String| {
        move |e: rustix::io::Errno| {
            let detail = if e == rustix::io::Errno::INVAL {
                "not mapped in the instance's user namespace (`mayfly info NAME` shows the ids it has)".to_owned()
            } else {
                e.to_string()
            };
            ChildFailure {
                step: format!("{TAKE_IDS_STEP} {what}"),
                errno: Some(e.raw_os_error()),
                detail,
            }
        }
    };
    let groups: Vec<rustix::process::Gid> = identity
        .groups
        .iter()
        .map(|g| rustix::process::Gid::from_raw(*g))
        .collect();
    rustix::thread::set_thread_groups(&groups).map_err(unmapped(format!(
        "supplementary groups {:?}",
        identity.groups
    )))?;
    let gid = rustix::process::Gid::from_raw(identity.gid);
    rustix::thread::set_thread_res_gid(gid, gid, gid)
        .map_err(unmapped(format!("gid {}", identity.gid)))?;
    let uid = rustix::process::Uid::from_raw(identity.uid);
    rustix::thread::set_thread_res_uid(uid, uid, uid)
        .map_err(unmapped(format!("uid {}", identity.uid)))?;
    Ok(())
}

/// Turns the child into mayfly's init (`--init`, see `mayfly_sys::init`): it forks, the new
/// child becomes `process` (reporting its own failures on the start-up socket, as without an
/// init), and this side confines itself like the command, lets go of everything, and serves
/// as PID 1 until the command ends. Returns only if the init could not be set up (the
/// command's side is killed then).
///
/// The command is the instance's first program: until the init has let go of the forker's
/// descriptors and memory, a process of the same user could trace it or open its
/// `/proc/1/fd` and take them. So the init is not dumpable from before the fork, and the
/// command's side waits for it to have let go (the end of a pipe that only the init holds
/// closes with its descriptors) before it goes on. `slow` is a fault the tests inject: the
/// init dawdles before it lets go.
pub(crate) fn become_init(
    process: &ProcessSpec,
    identity: &Identity,
    stdio: ChildStdio,
    slow: bool,
) -> ChildFailure {
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        return ChildFailure::io("make the init not dumpable", e);
    }
    if let Err(e) = mayfly_sys::init::block_signals() {
        return ChildFailure::io("block signals for the init", e);
    }
    let (released, holding) = match rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC) {
        Ok(pair) => pair,
        Err(e) => return ChildFailure::io("create the init's pipe", e),
    };
    let flags = mayfly_sys::process::CloneFlags::default();
    let child = match mayfly_sys::process::clone_process(flags) {
        Ok(mayfly_sys::process::Forked::Child) => {
            drop(holding);
            if let Err(f) = wait_for_close(&released) {
                return f;
            }
            drop(released);
            return become_process(process, identity, stdio);
        }
        Ok(mayfly_sys::process::Forked::Parent(pid)) => pid,
        Err(e) => return ChildFailure::io("fork the command from the init", e),
    };
    drop(released);
    drop(stdio);
    let ready = rustix::process::setsid()
        .step(|| "start the init's session".into())
        .and_then(|_| confine(identity))
        .and_then(|()| {
            if slow {
                std::thread::sleep(std::time::Duration::from_secs(2));
            }
            // Closes `holding` (with every other descriptor) last: the command goes on then.
            mayfly_sys::init::shed(c"mayfly-init").step(|| "set up the init".into())
        });
    if let Err(f) = ready {
        let _ = rustix::process::kill_process(child, rustix::process::Signal::KILL);
        return f;
    }
    mayfly_sys::init::serve(child.as_raw_nonzero().get())
}

/// Waits until every write end of `pipe` is closed (the init has let go of what it
/// inherited, or it is gone). No deadline of its own: the init closes it as its last step of
/// setting up, or ends (and the forker's start deadline covers both).
fn wait_for_close(pipe: &OwnedFd) -> ChildResult<()> {
    let mut byte = [0u8; 1];
    loop {
        match rustix::io::read(pipe, &mut byte) {
            Ok(0) => return Ok(()),
            Ok(_) => continue,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(ChildFailure::io("wait for the init", e)),
        }
    }
}

fn dup_to(fd: &OwnedFd, n: i32) -> ChildResult<()> {
    mayfly_sys::process::dup_onto(fd.as_fd(), n).step(|| format!("set up descriptor {n}"))
}

fn drop_bounding_set() -> ChildResult<()> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    let keep = security::kept_capabilities();
    for cap in 0..=last {
        if 1u64
            .checked_shl(cap)
            .is_some_and(|bit| keep.bits() & bit != 0)
        {
            continue;
        }
        mayfly_sys::process::drop_bounding_capability(cap)
            .step(|| format!("drop capability {cap} from the bounding set"))?;
    }
    Ok(())
}

/// Looks the program up like `execvp` (in `PATH` from the process's environment) and
/// executes it, with `HOME` from the user's passwd entry when the environment has none (as
/// Docker does).
fn exec_program(process: &ProcessSpec, identity: &Identity) -> ChildFailure {
    let Some(program) = process.args.first() else {
        return ChildFailure {
            step: "exec".into(),
            errno: None,
            detail: "no program given".into(),
        };
    };
    let to_c = |s: &str| CString::new(s).ok();
    let home = (!process.env.iter().any(|e| e.starts_with("HOME=")))
        .then(|| format!("HOME={}", identity.home));
    let (Some(argv), Some(envp)) = (
        process
            .args
            .iter()
            .map(|a| to_c(a))
            .collect::<Option<Vec<_>>>(),
        process
            .env
            .iter()
            .map(String::as_str)
            .chain(home.as_deref())
            .map(to_c)
            .collect::<Option<Vec<_>>>(),
    ) else {
        return ChildFailure {
            step: "exec".into(),
            errno: None,
            detail: "an argument or environment entry contains a NUL byte".into(),
        };
    };
    let candidates: Vec<String> = if program.contains('/') {
        vec![program.clone()]
    } else {
        let path = process
            .env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(crate::DEFAULT_PATH);
        path.split(':')
            .map(|d| if d.is_empty() { "." } else { d })
            .map(|d| format!("{d}/{program}"))
            .collect()
    };
    let mut denied = false;
    let mut last = io::Error::from_raw_os_error(libc::ENOENT);
    for candidate in &candidates {
        let Some(path) = to_c(candidate) else {
            continue;
        };
        let err = mayfly_sys::process::execve(&path, &argv, &envp);
        match err.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => {}
            Some(libc::EACCES) => denied = true,
            _ => {
                last = err;
                return ChildFailure {
                    step: format!("exec {candidate}"),
                    errno: last.raw_os_error(),
                    detail: last.to_string(),
                };
            }
        }
        last = err;
    }
    if denied {
        last = io::Error::from_raw_os_error(libc::EACCES);
    }
    let detail = if program.contains('/') {
        last.to_string()
    } else {
        format!("{last} (looked in PATH)")
    };
    ChildFailure {
        step: format!("exec {program}"),
        errno: last.raw_os_error(),
        detail,
    }
}
