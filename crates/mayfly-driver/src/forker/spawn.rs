//! Starting containers and exec'd processes: the forker's side of each clone.
//!
//! A container start, in order: create its cgroup; clone a child into new user, mount, pid,
//! uts, ipc and net namespaces, where it waits on a socket; write its uid/gid maps; move it
//! into its cgroup; build the overlay root on the host side (template layers cloned as
//! read-only, no-dev, idmapped detached mounts, so templates are never chowned per instance);
//! pass that detached mount to the child, which attaches it inside its own mount namespace
//! (the host's mount table never sees it, so it cannot leak) and goes on to exec the init.
//! The sync socket is close-on-exec: EOF means the init runs; a message means setup failed,
//! and then the child is reaped and the cgroup removed before the error is returned.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use mayfly_sys::process::{CloneFlags, Forked};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, OpenTreeFlags};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use rustix::process::Pid;

use super::child::{self, ChildFailure, ChildStdio};
use crate::cgroup::Cgroups;
use crate::protocol::{self, Failure, FailureKind};
use crate::spec::{ContainerSpec, NetworkMode, ProcessSpec, StdioSpec};

/// A container whose init runs.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub pid: Pid,
    pub pidfd: OwnedFd,
    pub start_time: u64,
    /// Read end of the init's output pipe, for [`StdioSpec::Log`].
    pub log_pipe: Option<OwnedFd>,
}

/// An exec'd process that runs.
#[derive(Debug)]
pub(crate) struct ExecSpawned {
    pub pid: Pid,
    pub pidfd: OwnedFd,
    /// Master side of the terminal made inside the instance, which replaces the one passed.
    pub terminal: Option<OwnedFd>,
}

fn failure(context: &str, e: impl std::fmt::Display) -> Failure {
    Failure::other(format!("{context}: {e}"))
}

fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), Failure> {
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| failure("create sync socket", e))
}

/// Takes the stdio descriptors of a request: one for a terminal, three otherwise.
fn passed_stdio(tty: bool, mut fds: Vec<OwnedFd>) -> Result<ChildStdio, Failure> {
    match (tty, fds.len()) {
        (true, 1) => Ok(ChildStdio::Tty(fds.remove(0))),
        (false, 3) => {
            let e = fds.pop();
            let o = fds.pop();
            let i = fds.pop();
            match (i, o, e) {
                (Some(i), Some(o), Some(e)) => Ok(ChildStdio::Three(i, o, e)),
                _ => Err(Failure::other("stdio descriptors missing")),
            }
        }
        (tty, n) => Err(Failure::other(format!(
            "expected {} stdio descriptors, got {n}",
            if tty { 1 } else { 3 }
        ))),
    }
}

/// Hands terminal `tty` (a pseudo-terminal of the host's devpts) to the root of a user
/// namespace that maps its uid 0 to host uid `map.0` (and gid 5, `tty`, to `map.1`): without
/// it the host's root owns the terminal and the instance's root, an unprivileged user on the
/// host, can neither reopen it (`/dev/console`) nor change its modes (`stty`).
fn give_terminal(tty: &ChildStdio, map: Option<(u32, u32)>) -> Result<(), Failure> {
    let (ChildStdio::Tty(fd), Some((uid, gid))) = (tty, map) else {
        return Ok(());
    };
    rustix::fs::fchown(
        fd,
        Some(rustix::process::Uid::from_raw(uid)),
        Some(rustix::process::Gid::from_raw(gid)),
    )
    .map_err(|e| failure("give the terminal to the instance", e))?;
    rustix::fs::fchmod(fd, rustix::fs::Mode::from_raw_mode(0o620))
        .map_err(|e| failure("give the terminal to the instance", e))
}

/// Host uid of uid 0 and host gid of gid 5 in the user namespace of process `pid`, from its
/// maps (`None` without a user namespace).
fn namespace_root(pid: i32) -> Option<(u32, u32)> {
    let first = |file: &str, id: u32| -> Option<u32> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
        text.lines().find_map(|l| {
            let mut f = l.split_whitespace().map(|v| v.parse::<u32>().ok());
            let (inside, host, count) = (f.next()??, f.next()??, f.next()??);
            (id >= inside && id - inside < count).then(|| host + (id - inside))
        })
    };
    let uid = first("uid_map", 0)?;
    // An identity map is no user namespace at all.
    if uid == 0 {
        return None;
    }
    Some((uid, first("gid_map", 5).or_else(|| first("gid_map", 0))?))
}

/// Turns the child's report into the forker's answer.
fn child_failure(f: ChildFailure) -> Failure {
    let kind = if f.step.starts_with("exec ") {
        match f.errno {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => FailureKind::ProgramNotFound,
            Some(libc::EACCES) | Some(libc::ENOEXEC) | Some(libc::EISDIR) => {
                FailureKind::ProgramNotExecutable
            }
            _ => FailureKind::Other,
        }
    } else {
        FailureKind::Other
    };
    let message = if kind == FailureKind::Other {
        format!("container setup failed at `{}`: {}", f.step, f.detail)
    } else {
        format!("cannot {}: {}", f.step, f.detail)
    };
    Failure { kind, message }
}

/// Waits for the child's verdict on the sync socket: `Ok` when it closed without a word
/// (the program was executed), the failure otherwise.
fn await_exec(sock: &OwnedFd) -> Result<(), Failure> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match protocol::recv(sock.as_fd(), &mut buf) {
            Ok((0, _)) => return Ok(()),
            Ok((n, _)) => {
                let f: ChildFailure =
                    serde_json::from_slice(&buf[..n]).unwrap_or_else(|e| ChildFailure {
                        step: "report".into(),
                        errno: None,
                        detail: format!("unreadable report from the child: {e}"),
                    });
                return Err(child_failure(f));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(failure("wait for the child", e)),
        }
    }
}

/// Reports `f` to the forker and ends the child.
fn child_exit(sock: &OwnedFd, f: ChildFailure) -> ! {
    let _ = protocol::send_json(sock, &f, &[]);
    mayfly_sys::process::exit_immediately(126)
}

fn reap(pid: Pid) {
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
}

/// Start time of `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`): with the
/// pid, it names a process unambiguously.
pub(crate) fn start_time(pid: i32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other("malformed /proc/<pid>/stat"))
}

fn write_id_maps(pid: Pid, spec: &ContainerSpec) -> Result<(), Failure> {
    let Some(map) = spec.idmap else { return Ok(()) };
    let line = format!("0 {} {}", map.host_base, map.count);
    for file in ["uid_map", "gid_map"] {
        let path = format!("/proc/{}/{file}", pid.as_raw_nonzero());
        std::fs::write(&path, &line).map_err(|e| failure(&format!("write {path}"), e))?;
    }
    Ok(())
}

/// Template layers: read-only (and no-dev, always); setuid programs in them must work.
const LAYER_ATTRS: mayfly_sys::mount::DetachedAttrs = mayfly_sys::mount::DetachedAttrs {
    readonly: true,
    nosuid: false,
};

/// Detached (idmapped) mounts of the spec's bind sources, in order.
fn build_binds(spec: &ContainerSpec, userns: Option<&OwnedFd>) -> io::Result<Vec<OwnedFd>> {
    let mut out = Vec::with_capacity(spec.binds.len());
    for bind in &spec.binds {
        let tree = rustix::mount::open_tree(
            rustix::fs::CWD,
            &bind.source,
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_RECURSIVE,
        )
        .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", bind.source.display())))?;
        let attrs = mayfly_sys::mount::DetachedAttrs {
            readonly: bind.readonly,
            nosuid: true,
        };
        mayfly_sys::mount::set_detached_mount_attrs(&tree, userns, attrs).map_err(|e| {
            io::Error::new(e.kind(), format!("prepare {}: {e}", bind.source.display()))
        })?;
        out.push(tree);
    }
    Ok(out)
}

/// Builds the instance's root as a detached overlay mount.
fn build_overlay(spec: &ContainerSpec, userns: Option<&OwnedFd>) -> io::Result<OwnedFd> {
    let fs = rustix::mount::fsopen(c"overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    // Layers as detached read-only, no-dev mounts (idmapped when the instance has a user
    // namespace). `lowerdir+` adds layers from the top down; passing descriptors (Linux 6.13)
    // avoids path-length limits entirely, and `/proc/self/fd/N` strings (Linux 6.8) are the
    // fallback.
    let mut trees = Vec::with_capacity(spec.layers.len());
    for layer in spec.layers.iter().rev() {
        let tree = rustix::mount::open_tree(
            rustix::fs::CWD,
            layer,
            OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
        )
        .map_err(|e| io::Error::new(e.kind(), format!("open layer {}: {e}", layer.display())))?;
        mayfly_sys::mount::set_detached_mount_attrs(&tree, userns, LAYER_ATTRS).map_err(|e| {
            io::Error::new(e.kind(), format!("prepare layer {}: {e}", layer.display()))
        })?;
        trees.push(tree);
    }
    for tree in &trees {
        if rustix::mount::fsconfig_set_fd(&fs, c"lowerdir+", tree).is_err() {
            let path = format!("/proc/self/fd/{}", tree.as_raw_fd());
            rustix::mount::fsconfig_set_string(&fs, c"lowerdir+", path.as_str()).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("add overlay layer (needs Linux 6.8 or later): {e}"),
                )
            })?;
        }
    }
    rustix::mount::fsconfig_set_string(&fs, c"upperdir", &spec.upper).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("overlay upperdir {}: {e}", spec.upper.display()),
        )
    })?;
    rustix::mount::fsconfig_set_string(&fs, c"workdir", &spec.work).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("overlay workdir {}: {e}", spec.work.display()),
        )
    })?;
    // Keep the writable layer a plain diff (whiteouts and opaque markers only) that snapshot,
    // publish and export can read without overlayfs: no redirects, no index, no metacopy.
    for (key, value) in [
        ("redirect_dir", "off"),
        ("index", "off"),
        ("metacopy", "off"),
    ] {
        let _ = rustix::mount::fsconfig_set_string(&fs, key, value);
    }
    rustix::mount::fsconfig_create(&fs).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("create overlay: {e} (see `dmesg` for overlayfs's reason)"),
        )
    })?;
    let mnt = rustix::mount::fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NODEV,
    )?;
    Ok(mnt)
}

/// Starts a container (see the module documentation for the sequence).
pub(crate) fn spawn_container(
    cgroups: &Cgroups,
    spec: &ContainerSpec,
    fds: Vec<OwnedFd>,
) -> Result<Spawned, Failure> {
    let (child_stdio, log_pipe) = match &spec.stdio {
        StdioSpec::Log { .. } => {
            let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|e| failure("create log pipe", e))?;
            (ChildStdio::Log(w), Some(r))
        }
        StdioSpec::Passed => {
            let stdio = passed_stdio(spec.process.tty, fds)?;
            let tty_owner = spec.idmap.map(|m| {
                let gid = m.to_host(5).or_else(|| m.to_host(0)).unwrap_or(m.host_base);
                (m.host_base, gid)
            });
            give_terminal(&stdio, tty_owner)?;
            (stdio, None)
        }
    };
    let console = match &child_stdio {
        ChildStdio::Tty(tty) => Some(detached_console(tty)?),
        _ => None,
    };
    cgroups
        .create(&spec.cgroup)
        .map_err(|e| failure("create cgroup", crate::error_chain(&e)))?;
    let result = cgroups
        .restrict_devices(&spec.cgroup)
        .map_err(|e| failure("set device rules", crate::error_chain(&e)))
        .and_then(|()| spawn_in_cgroup(cgroups, spec, child_stdio, console));
    match result {
        Ok((pid, pidfd)) => {
            let start_time = start_time(pid.as_raw_nonzero().get()).unwrap_or(0);
            Ok(Spawned {
                pid,
                pidfd,
                start_time,
                log_pipe,
            })
        }
        Err(f) => {
            let _ = cgroups.remove(&spec.cgroup);
            Err(f)
        }
    }
}

/// A detached mount of the terminal `tty`, to become the instance's `/dev/console`.
///
/// It must be made here, in the host's mount namespace: the terminal lives on the host's
/// devpts mount, and the kernel refuses to bind a file whose mount is not in the caller's
/// namespace (the child, in its new mount namespace, would get `EINVAL`). A detached mount
/// can be attached from any namespace.
fn detached_console(tty: &OwnedFd) -> Result<OwnedFd, Failure> {
    rustix::mount::open_tree(
        tty,
        c"",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| failure("prepare /dev/console", e))
}

fn spawn_in_cgroup(
    cgroups: &Cgroups,
    spec: &ContainerSpec,
    stdio: ChildStdio,
    console: Option<OwnedFd>,
) -> Result<(Pid, OwnedFd), Failure> {
    let (parent_sock, child_sock) = seqpacket_pair()?;
    let flags = CloneFlags {
        user: spec.idmap.is_some(),
        mount: true,
        pid: true,
        uts: true,
        ipc: true,
        net: spec.network == NetworkMode::Isolated,
        ..CloneFlags::default()
    };
    match mayfly_sys::process::clone_process(flags).map_err(|e| failure("clone", e))? {
        Forked::Child => {
            drop(parent_sock);
            let f = container_child(spec, cgroups, &child_sock, stdio, console);
            child_exit(&child_sock, f)
        }
        Forked::Parent(pid) => {
            drop(child_sock);
            drop(stdio);
            let setup = (|| {
                write_id_maps(pid, spec)?;
                cgroups
                    .add_process(&spec.cgroup, pid.as_raw_nonzero().get())
                    .map_err(|e| failure("join cgroup", crate::error_chain(&e)))?;
                let userns = match spec.idmap {
                    Some(_) => Some(
                        rustix::fs::open(
                            format!("/proc/{}/ns/user", pid.as_raw_nonzero()).as_str(),
                            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                            rustix::fs::Mode::empty(),
                        )
                        .map_err(|e| failure("open the user namespace", e))?,
                    ),
                    None => None,
                };
                let root =
                    build_overlay(spec, userns.as_ref()).map_err(|e| failure("mount root", e))?;
                let binds = build_binds(spec, userns.as_ref())
                    .map_err(|e| failure("prepare bind mounts", e))?;
                let mut fds = vec![root.as_fd()];
                fds.extend(binds.iter().map(|b| b.as_fd()));
                protocol::send(parent_sock.as_fd(), b"go", &fds)
                    .map_err(|e| failure("hand the root to the child", e))?;
                drop(root);
                await_exec(&parent_sock)?;
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
                    .map_err(|e| failure("open pidfd", e))
            })();
            match setup {
                Ok(pidfd) => Ok((pid, pidfd)),
                Err(f) => {
                    reap(pid);
                    Err(f)
                }
            }
        }
    }
}

/// The container's init, from clone to exec.
fn container_child(
    spec: &ContainerSpec,
    cgroups: &Cgroups,
    sock: &OwnedFd,
    stdio: ChildStdio,
    console: Option<OwnedFd>,
) -> ChildFailure {
    let mut buf = [0u8; 16];
    let (root, binds) = match protocol::recv(sock.as_fd(), &mut buf) {
        Ok((n, mut fds)) if n > 0 && fds.len() == 1 + spec.binds.len() => {
            let root = fds.remove(0);
            (root, fds)
        }
        Ok(_) => {
            return ChildFailure {
                step: "receive root".into(),
                errno: None,
                detail: "the forker sent no root mount".into(),
            };
        }
        Err(e) => {
            return ChildFailure {
                step: "receive root".into(),
                errno: e.raw_os_error(),
                detail: e.to_string(),
            };
        }
    };
    let run = || -> Result<(), ChildFailure> {
        let io_fail = |step: &str| {
            let step = step.to_owned();
            move |e: io::Error| ChildFailure {
                step,
                errno: e.raw_os_error(),
                detail: e.to_string(),
            }
        };
        // Resolve the mount point now, in our own mount namespace, while our file system
        // identity is still the host root that owns the private state directory; the
        // instance's root (a high host uid) may not look up paths in it.
        let mount_point = rustix::fs::open(
            &spec.rootfs,
            rustix::fs::OFlags::PATH
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::NOFOLLOW
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| io_fail("open the mount point")(e.into()))?;
        if spec.idmap.is_some() {
            // Become the namespace's root (host uid `host_base`); until now we were the
            // unmapped host root.
            let zero_u = rustix::process::Uid::from_raw(0);
            let zero_g = rustix::process::Gid::from_raw(0);
            rustix::thread::set_thread_res_gid(zero_g, zero_g, zero_g)
                .map_err(|e| io_fail("become root in the user namespace")(e.into()))?;
            rustix::thread::set_thread_res_uid(zero_u, zero_u, zero_u)
                .map_err(|e| io_fail("become root in the user namespace")(e.into()))?;
        }
        mayfly_sys::process::unshare_cgroup_namespace()
            .map_err(io_fail("enter a cgroup namespace"))?;
        child::enter_rootfs(
            spec,
            &root,
            &mount_point,
            binds,
            cgroups.mode(),
            console.as_ref(),
        )?;
        rustix::system::sethostname(spec.hostname.as_bytes())
            .map_err(|e| io_fail("set hostname")(e.into()))?;
        if spec.network == NetworkMode::Isolated {
            mayfly_sys::net::loopback_up().map_err(io_fail("bring up lo"))?;
        }
        if spec.new_identity {
            child::regenerate_identity(&spec.hostname)?;
        }
        Ok(())
    };
    if let Err(f) = run() {
        return f;
    }
    drop(root);
    child::become_process(&spec.process, stdio)
}

/// Starts `process` inside the running container whose init is `init_pidfd` (in group
/// `cgroup`).
///
/// A helper child joins the cgroup (as host root, before it loses that) and the container's
/// namespaces, then clones the process as a sibling (`CLONE_PARENT`), so that the forker
/// reaps it directly, tells the forker its pid, and exits.
pub(crate) fn spawn_exec(
    cgroups: &Cgroups,
    cgroup: &str,
    init_pid: i32,
    init_pidfd: &OwnedFd,
    process: &ProcessSpec,
    fds: Vec<OwnedFd>,
) -> Result<ExecSpawned, Failure> {
    let stdio = passed_stdio(process.tty, fds)?;
    give_terminal(&stdio, namespace_root(init_pid))?;
    let (parent_sock, child_sock) = seqpacket_pair()?;
    match mayfly_sys::process::clone_process(CloneFlags::default())
        .map_err(|e| failure("clone", e))?
    {
        Forked::Child => {
            drop(parent_sock);
            let f = exec_helper(cgroups, cgroup, init_pidfd, process, &child_sock, stdio);
            child_exit(&child_sock, f)
        }
        Forked::Parent(helper) => {
            drop(child_sock);
            drop(stdio);
            // Two writers share the child end: the helper ("pid N", then exit) and the
            // process (a failure report, or nothing when it executes). Read until both are
            // done, in whatever order their words arrive.
            let mut pid = None;
            let mut terminal = None;
            let mut report: Option<ChildFailure> = None;
            let mut buf = vec![0u8; 16 * 1024];
            let mut broken = None;
            loop {
                match protocol::recv(parent_sock.as_fd(), &mut buf) {
                    Ok((0, _)) => break,
                    Ok((n, mut fds)) => {
                        let msg = &buf[..n];
                        if let Some(p) = std::str::from_utf8(msg)
                            .ok()
                            .and_then(|s| s.strip_prefix("pid "))
                            .and_then(|p| p.parse::<i32>().ok())
                            .and_then(Pid::from_raw)
                        {
                            pid = Some(p);
                            terminal = fds.pop();
                        } else {
                            report = Some(serde_json::from_slice(msg).unwrap_or(ChildFailure {
                                step: "exec helper".into(),
                                errno: None,
                                detail: "unreadable report".into(),
                            }));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        broken = Some(failure("wait for the exec helper", e));
                        break;
                    }
                }
            }
            // The helper has exited (or is about to); reap it whatever happened.
            let _ = rustix::process::waitpid(Some(helper), rustix::process::WaitOptions::empty());

            match (pid, report, broken) {
                (Some(pid), None, None) => {
                    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
                        .map(|pidfd| ExecSpawned {
                            pid,
                            pidfd,
                            terminal,
                        })
                        .map_err(|e| {
                            reap(pid);
                            failure("open pidfd", e)
                        })
                }
                (pid, report, broken) => {
                    if let Some(pid) = pid {
                        reap(pid);
                    }
                    Err(broken.or(report.map(child_failure)).unwrap_or_else(|| {
                        Failure::other("the exec helper exited without starting the process")
                    }))
                }
            }
        }
    }
}

fn exec_helper(
    cgroups: &Cgroups,
    cgroup: &str,
    init_pidfd: &OwnedFd,
    process: &ProcessSpec,
    sock: &OwnedFd,
    stdio: ChildStdio,
) -> ChildFailure {
    let fail = |step: &str, e: io::Error| ChildFailure {
        step: step.to_owned(),
        errno: e.raw_os_error(),
        detail: e.to_string(),
    };
    // Not dumpable: the container's root must not ptrace or read /proc/<pid>/exe of a
    // process that still runs the forker's code.
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    let me = rustix::process::getpid().as_raw_nonzero().get();
    if let Err(e) = cgroups.add_process(cgroup, me) {
        return fail("join cgroup", io::Error::other(crate::error_chain(&e)));
    }
    use rustix::thread::ThreadNameSpaceType as Ns;
    let namespaces = Ns::USER
        | Ns::MOUNT
        | Ns::PROCESS_ID
        | Ns::HOST_NAME_AND_NIS_DOMAIN_NAME
        | Ns::INTER_PROCESS_COMMUNICATION
        | Ns::NETWORK
        | Ns::CONTROL_GROUP;
    let joined = rustix::thread::move_into_thread_name_spaces(init_pidfd.as_fd(), namespaces)
        .or_else(|e| {
            // Without a user namespace the container shares the host's; joining "it" fails.
            if e == rustix::io::Errno::INVAL {
                rustix::thread::move_into_thread_name_spaces(
                    init_pidfd.as_fd(),
                    namespaces - Ns::USER,
                )
            } else {
                Err(e)
            }
        });
    if let Err(e) = joined {
        return fail("join the instance's namespaces", e.into());
    }
    // A terminal of the instance's own devpts, so that it has a name there (`tty`, `ssh`,
    // `screen` and `sudo` look it up); the host's terminal stays as the fallback.
    let (stdio, master) = match stdio {
        ChildStdio::Tty(host) => match inside_terminal(&host, process.uid, process.gid) {
            Some((master, slave)) => (ChildStdio::Tty(slave), Some(master)),
            None => (ChildStdio::Tty(host), None),
        },
        other => (other, None),
    };
    let flags = CloneFlags {
        parent: true,
        ..CloneFlags::default()
    };
    match mayfly_sys::process::clone_process(flags) {
        Err(e) => fail("clone", e),
        Ok(Forked::Child) => {
            drop(master);
            child::become_process(process, stdio)
        }
        Ok(Forked::Parent(pid)) => {
            let msg = format!("pid {}", pid.as_raw_nonzero());
            let fds: Vec<BorrowedFd<'_>> = master.iter().map(|m| m.as_fd()).collect();
            let _ = protocol::send(sock.as_fd(), msg.as_bytes(), &fds);
            mayfly_sys::process::exit_immediately(0)
        }
    }
}

/// Opens a new terminal on the devpts of the mount namespace we are in, owned by `uid` and
/// `gid` (the devpts mount may give it group `tty`), sized like `like`. `None` when the
/// instance has no usable devpts: its root may have replaced `/dev/pts`, so the node must
/// be a real `ptmx` on a real devpts, opened without following links or blocking.
fn inside_terminal(like: &OwnedFd, uid: u32, gid: u32) -> Option<(OwnedFd, OwnedFd)> {
    use rustix::fs::{OFlags, ResolveFlags};
    const DEVPTS_SUPER_MAGIC: i64 = 0x1cd1;
    mayfly_sys::process::set_fs_ids(uid, gid).ok()?;
    let master = rustix::fs::openat2(
        rustix::fs::CWD,
        "/dev/pts/ptmx",
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC | OFlags::NONBLOCK,
        rustix::fs::Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    let st = rustix::fs::fstat(&master).ok()?;
    let fs = rustix::fs::fstatfs(&master).ok()?;
    let is_ptmx = rustix::fs::FileType::from_raw_mode(st.st_mode)
        == rustix::fs::FileType::CharacterDevice
        && rustix::fs::major(st.st_rdev) == 5
        && rustix::fs::minor(st.st_rdev) == 2;
    if !is_ptmx || fs.f_type as i64 != DEVPTS_SUPER_MAGIC {
        return None;
    }
    rustix::pty::unlockpt(&master).ok()?;
    let flags = rustix::pty::OpenptFlags::RDWR
        | rustix::pty::OpenptFlags::NOCTTY
        | rustix::pty::OpenptFlags::CLOEXEC;
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags).ok()?;
    if let Ok(size) = rustix::termios::tcgetwinsize(like) {
        let _ = rustix::termios::tcsetwinsize(&master, size);
    }
    Some((master, slave))
}

/// Checks that `path` can be mounted idmapped through a fresh user namespace: a child
/// unshares one, we map it, clone `path` as a detached mount and idmap it. Returns why not.
pub(crate) fn probe_idmap(path: &std::path::Path) -> Result<(), String> {
    let (parent_sock, child_sock) = seqpacket_pair().map_err(|f| f.message)?;
    let flags = CloneFlags {
        user: true,
        ..CloneFlags::default()
    };
    let pid = match mayfly_sys::process::clone_process(flags) {
        Err(e) => return Err(format!("cannot create a user namespace: {e}")),
        Ok(Forked::Child) => {
            // Wait until the parent is done with our namespace, then leave.
            drop(parent_sock);
            let mut buf = [0u8; 4];
            let _ = protocol::recv(child_sock.as_fd(), &mut buf);
            mayfly_sys::process::exit_immediately(0)
        }
        Ok(Forked::Parent(pid)) => pid,
    };
    drop(child_sock);
    let result = (|| {
        let line = "0 2147418112 65536";
        for file in ["uid_map", "gid_map"] {
            std::fs::write(format!("/proc/{}/{file}", pid.as_raw_nonzero()), line)
                .map_err(|e| format!("cannot map ids in a user namespace: {e}"))?;
        }
        let userns = rustix::fs::open(
            format!("/proc/{}/ns/user", pid.as_raw_nonzero()).as_str(),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| format!("cannot open a user namespace: {e}"))?;
        let tree = rustix::mount::open_tree(
            rustix::fs::CWD,
            path,
            OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
        )
        .map_err(|e| format!("cannot clone a mount of {}: {e}", path.display()))?;
        mayfly_sys::mount::set_detached_mount_attrs(&tree, Some(&userns), LAYER_ATTRS).map_err(|e| {
            format!(
                "the filesystem of {} does not support idmapped mounts ({e}); Linux 5.19 or later with ext4, xfs, btrfs or tmpfs does",
                path.display()
            )
        })
    })();
    let _ = protocol::send(parent_sock.as_fd(), b"done", &[]);
    reap(pid);
    result
}
