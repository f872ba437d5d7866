//! Starting containers and exec'd processes: the forker's side of each clone.
//!
//! A container start, in order: create its cgroup; clone a child into new user, mount, pid,
//! uts, ipc and net namespaces, where it waits on a socket; write its uid/gid maps; move it
//! into its cgroup; attach its network interfaces (veths whose inside end is made in its
//! namespace, see `mayfly_net::link::attach`); build the overlay root on the host side
//! (template layers cloned as read-only, no-dev, idmapped detached mounts, so templates are
//! never chowned per instance); pass that detached mount to the child, which attaches it
//! inside its own mount namespace (the host's mount table never sees it, so it cannot leak)
//! and goes on to exec the init.
//! The sync socket is close-on-exec: EOF means the init runs; a message means setup failed.
//!
//! Only the quick host-side steps run here, synchronously. The child's own set-up (mounts,
//! a clone's new identity, the exec) can take a while or hang on a bad filesystem, so the
//! forker does not wait for its verdict: [`begin_container`] returns a [`Starting`] whose
//! sync socket the forker's loop watches, with a deadline, while it serves others.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use mayfly_sys::process::{CloneFlags, Forked};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, OpenTreeFlags};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use rustix::process::Pid;

use super::child::{self, ChildFailure, ChildStdio};
use super::identity;
use crate::cgroup::Cgroups;
use crate::protocol::{self, Failure, FailureKind};
use crate::spec::{ContainerSpec, NetworkMode, StdioSpec};

/// A container whose child has been told to go on, and whose verdict is awaited.
#[derive(Debug)]
pub(crate) struct Starting {
    /// Host pid of the child (the init to be).
    pub pid: Pid,
    /// Its pidfd: whatever the verdict, it is reaped through this.
    pub pidfd: OwnedFd,
    /// The forker's end of the sync socket (non-blocking): EOF once the init runs, a report
    /// if setup failed.
    pub sock: OwnedFd,
    /// Read end of the init's output pipe, for [`StdioSpec::Log`].
    pub log_pipe: Option<OwnedFd>,
    /// The console (master, slave) of a detached container (see `console`).
    pub console: Option<(OwnedFd, OwnedFd)>,
}

/// A start that failed before the child was told to go on.
#[derive(Debug)]
pub(crate) struct Aborted {
    /// Why.
    pub failure: Failure,
    /// The child, if one was cloned: killed already, still to be reaped.
    pub child: Option<OwnedFd>,
}

/// What the sync socket of a starting container or exec'd process says now.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Nothing yet.
    Pending,
    /// The socket closed without a word: the program was executed.
    Ran,
    /// Setup failed.
    Failed(Failure),
}

pub(super) fn failure(context: &str, e: impl std::fmt::Display) -> Failure {
    Failure::other(format!("{context}: {e}"))
}

pub(super) fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), Failure> {
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| failure("create sync socket", e))
}

/// Takes the stdio descriptors of a request: one for a terminal, three otherwise.
pub(super) fn passed_stdio(tty: bool, mut fds: Vec<OwnedFd>) -> Result<ChildStdio, Failure> {
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
pub(super) fn give_terminal(tty: &ChildStdio, map: Option<(u32, u32)>) -> Result<(), Failure> {
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
pub(super) fn namespace_root(pid: i32) -> Option<(u32, u32)> {
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
pub(super) fn child_failure(f: ChildFailure) -> Failure {
    let unmapped_id = f.step.starts_with(child::TAKE_IDS_STEP) && f.errno == Some(libc::EINVAL);
    let kind = if f.step.starts_with(child::RESOLVE_USER_STEP) || unmapped_id {
        FailureKind::BadUser
    } else if f.step.starts_with(child::MOUNT_TARGET_STEP) {
        FailureKind::BadMountTarget
    } else if f.step.starts_with("exec ") {
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
    let message = if kind == FailureKind::BadUser {
        format!("cannot {}: {}", f.step, f.detail)
    } else if kind == FailureKind::Other {
        format!("container setup failed at `{}`: {}", f.step, f.detail)
    } else {
        format!("cannot {}: {}", f.step, f.detail)
    };
    Failure { kind, message }
}

/// Reads what the sync socket `sock` (non-blocking) holds: nothing yet, EOF (the program was
/// executed) or a failure report.
pub(crate) fn read_verdict(sock: &OwnedFd) -> Verdict {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match protocol::recv(sock.as_fd(), &mut buf) {
            Ok((0, _)) => return Verdict::Ran,
            Ok((n, _)) => return Verdict::Failed(child_failure(parse_report(&buf[..n]))),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Verdict::Pending,
            Err(e) => return Verdict::Failed(failure("wait for the child", e)),
        }
    }
}

/// A child's failure report, or a description of why it cannot be read.
pub(super) fn parse_report(bytes: &[u8]) -> ChildFailure {
    serde_json::from_slice(bytes).unwrap_or_else(|e| ChildFailure {
        step: "report".into(),
        errno: None,
        detail: format!("unreadable report from the child: {e}"),
    })
}

/// Reports `f` to the forker and ends the child.
pub(super) fn child_exit(sock: &OwnedFd, f: ChildFailure) -> ! {
    let _ = protocol::send_json(sock, &f, &[]);
    mayfly_sys::process::exit_immediately(126)
}

/// Kills `pid` (a child of ours) and reaps it now. Only for children that cannot be stuck
/// (not in any instance's cgroup, so never frozen); others go to the forker's orphans.
pub(super) fn reap_now(pid: Pid) {
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
pub(super) const LAYER_ATTRS: mayfly_sys::mount::DetachedAttrs = mayfly_sys::mount::DetachedAttrs {
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

/// Starts a container up to the point where its child sets itself up (see the module
/// documentation for the sequence). The caller has created its cgroup (`spec.cgroup`) and
/// removes it if this fails. `slow_init` is a fault the tests inject (see `Faults`).
pub(crate) fn begin_container(
    cgroups: &Cgroups,
    spec: &ContainerSpec,
    fds: Vec<OwnedFd>,
    slow_init: bool,
) -> Result<Starting, Aborted> {
    let early = |failure: Failure| Aborted {
        failure,
        child: None,
    };
    let tty_owner = spec.idmap.map(|m| {
        let gid = m.to_host(5).or_else(|| m.to_host(0)).unwrap_or(m.host_base);
        (m.host_base, gid)
    });
    let (child_stdio, log_pipe, console_pair) = match &spec.stdio {
        StdioSpec::Log { .. } => {
            let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|e| early(failure("create log pipe", e)))?;
            // A detached init gets a console of its own, held by the forker; its stdio stays
            // the log pipe (see `console`).
            let pair = super::console::open_pair(tty_owner).map_err(early)?;
            (ChildStdio::Log(w), Some(r), Some(pair))
        }
        StdioSpec::Passed => {
            let stdio = passed_stdio(spec.process.tty, fds).map_err(early)?;
            give_terminal(&stdio, tty_owner).map_err(early)?;
            (stdio, None, None)
        }
    };
    let console = match (&child_stdio, &console_pair) {
        (ChildStdio::Tty(tty), _) => Some(detached_console(tty).map_err(early)?),
        (_, Some((_, slave))) => Some(detached_console(slave).map_err(early)?),
        _ => None,
    };
    let (parent_sock, child_sock) = seqpacket_pair().map_err(early)?;
    let flags = CloneFlags {
        user: spec.idmap.is_some(),
        mount: true,
        // Always: reboot(2) with the CAP_SYS_BOOT instances keep ends only this namespace's
        // init (security.rs, KEPT_CAPABILITIES); in the host's it would reboot the host.
        pid: true,
        uts: true,
        ipc: true,
        net: spec.network == NetworkMode::Isolated,
        ..CloneFlags::default()
    };
    let pid = match mayfly_sys::process::clone_process(flags)
        .map_err(|e| early(failure("clone", e)))?
    {
        Forked::Child => {
            drop(parent_sock);
            let f = container_child(spec, cgroups, &child_sock, child_stdio, console, slow_init);
            child_exit(&child_sock, f)
        }
        Forked::Parent(pid) => pid,
    };
    drop(child_sock);
    drop(child_stdio);
    let pidfd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            // Without a pidfd the loop cannot reap it later; it has not started anything yet.
            reap_now(pid);
            return Err(early(failure("open pidfd", e)));
        }
    };
    let setup = (|| {
        write_id_maps(pid, spec)?;
        cgroups
            .add_process(&spec.cgroup, pid.as_raw_nonzero().get())
            .map_err(|e| failure("join cgroup", crate::error_chain(&e)))?;
        if let Some(map) = spec.idmap {
            // Its own group is the instance root's to manage (see `cgroup::boot`).
            cgroups
                .delegate(&spec.cgroup, map.host_base, map.host_base)
                .map_err(|e| failure("delegate cgroup", crate::error_chain(&e)))?;
        }
        attach_interfaces(pid, spec)?;
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
        let root = build_overlay(spec, userns.as_ref()).map_err(|e| failure("mount root", e))?;
        let binds =
            build_binds(spec, userns.as_ref()).map_err(|e| failure("prepare bind mounts", e))?;
        let mut fds = vec![root.as_fd()];
        fds.extend(binds.iter().map(|b| b.as_fd()));
        protocol::send(parent_sock.as_fd(), b"go", &fds)
            .map_err(|e| failure("hand the root to the child", e))?;
        rustix::io::ioctl_fionbio(&parent_sock, true).map_err(|e| failure("watch the child", e))?;
        Ok(())
    })();
    match setup {
        Ok(()) => Ok(Starting {
            pid,
            pidfd,
            sock: parent_sock,
            log_pipe,
            console: console_pair,
        }),
        Err(failure) => {
            let _ = rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL);
            Err(Aborted {
                failure,
                child: Some(pidfd),
            })
        }
    }
}

/// Gives the child (in its own network namespace, waiting) the spec's network interfaces.
/// On failure none of them is left: the one that failed cleans up after itself, the ones
/// before it are deleted here (they would go with the namespace too, but only once the
/// kernel gets round to it).
fn attach_interfaces(pid: Pid, spec: &ContainerSpec) -> Result<(), Failure> {
    if spec.interfaces.is_empty() {
        return Ok(());
    }
    if spec.network != NetworkMode::Isolated {
        return Err(Failure::other(
            "network interfaces need the instance's own network namespace, not the host's",
        ));
    }
    let netns = rustix::fs::open(
        format!("/proc/{}/ns/net", pid.as_raw_nonzero()).as_str(),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| failure("open the instance's network namespace", e))?;
    for (i, iface) in spec.interfaces.iter().enumerate() {
        if let Err(e) = mayfly_net::link::attach(netns.as_fd(), iface) {
            for done in &spec.interfaces[..i] {
                let _ = mayfly_net::link::delete_link(&done.host_name);
            }
            return Err(failure("attach network interface", e));
        }
    }
    Ok(())
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

/// The container's init, from clone to exec.
fn container_child(
    spec: &ContainerSpec,
    cgroups: &Cgroups,
    sock: &OwnedFd,
    stdio: ChildStdio,
    console: Option<OwnedFd>,
    slow_init: bool,
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
    #[allow(clippy::type_complexity)]
    let run =
        || -> Result<(crate::user::Identity, Option<super::user_data::Prepared>), ChildFailure> {
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
            // Same reason: the user data's files are in the instance's private directory.
            let user_data = spec
                .user_data
                .as_ref()
                .map(super::user_data::prepare)
                .transpose()?;
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
                cgroups.boot_mounts(),
                console.as_ref(),
            )?;
            rustix::system::sethostname(spec.hostname.as_bytes())
                .map_err(|e| io_fail("set hostname")(e.into()))?;
            if spec.network == NetworkMode::Isolated {
                mayfly_sys::net::loopback_up().map_err(io_fail("bring up lo"))?;
            }
            if spec.new_identity {
                super::machine_identity::regenerate_identity(&spec.hostname)?;
            }
            Ok((identity::resolve_user(&spec.process.user)?, user_data))
        };
    let (identity, user_data) = match run() {
        Ok(found) => found,
        Err(f) => return f,
    };
    drop(root);
    let Some(user_data) = user_data else {
        return become_init_or_process(spec, &identity, stdio, slow_init);
    };
    // The container is set up: the start is reported now (EOF on the sync socket), not after
    // the user data, which may take minutes. A failure to execute the init from here on
    // ends the instance, with the reason in its output.
    let _ = rustix::net::shutdown(sock, rustix::net::Shutdown::Write);
    super::user_data::run(user_data, &stdio);
    let out = super::user_data::duplicate_output(&stdio);
    let f = become_init_or_process(spec, &identity, stdio, slow_init);
    if let Some(out) = out {
        let _ = rustix::io::write(
            &out,
            format!(
                "mayfly: cannot start the init: cannot {}: {}\n",
                f.step, f.detail
            )
            .as_bytes(),
        );
    }
    f
}

fn become_init_or_process(
    spec: &ContainerSpec,
    identity: &crate::user::Identity,
    stdio: ChildStdio,
    slow_init: bool,
) -> ChildFailure {
    if spec.init {
        return child::become_init(&spec.process, identity, stdio, slow_init);
    }
    child::become_process(&spec.process, identity, stdio)
}
