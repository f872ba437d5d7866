//! Starting a process inside a running container (`exec`).
//!
//! A helper child joins the instance's cgroup (as host root, before it loses that; in the
//! hierarchies delegated to the instance's init, the leaf `cgroup::EXEC_LEAF` below it) and its
//! namespaces (one `setns` on the init's pidfd), then clones the process as a sibling
//! (`CLONE_PARENT`), so that the forker is its parent and reaps it, tells the forker its pid
//! (and the terminal it made inside, if any), and exits. The process reports a failure to
//! execute on the same socket, or closes it by executing.
//!
//! The helper can be held up — joining a group that is frozen stops it there — so the
//! forker never waits for it: [`begin_exec`] returns an [`ExecStarting`] whose socket the
//! loop reads as words arrive, with a deadline. Every pid the forker learns is opened as a
//! pidfd at once, so that whatever happens it is reaped.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use mayfly_sys::process::{CloneFlags, Forked};
use rustix::process::Pid;

use super::child::{self, ChildFailure, ChildStdio};
use super::identity;
use super::spawn::{
    child_exit, child_failure, failure, give_terminal, namespace_root, parse_report, passed_stdio,
    seqpacket_pair,
};
use crate::cgroup::Cgroups;
use crate::protocol::{self, Failure};
use crate::spec::ProcessSpec;

/// An exec whose helper is on its way.
#[derive(Debug)]
pub(crate) struct ExecStarting {
    /// The forker's end of the helper's socket (non-blocking).
    sock: OwnedFd,
    /// The helper (a duplicate of its pidfd: the forker's orphans reap it), to kill if it
    /// does not get on in time.
    helper: OwnedFd,
    /// The process, once the helper named it: its pid and pidfd.
    process: Option<(Pid, OwnedFd)>,
    /// The master side of the terminal made inside the instance.
    terminal: Option<OwnedFd>,
    /// The process's (or the helper's) failure report.
    report: Option<ChildFailure>,
    /// The socket broke.
    broken: Option<Failure>,
}

/// A process that runs.
#[derive(Debug)]
pub(crate) struct ExecRunning {
    pub pid: Pid,
    pub pidfd: OwnedFd,
    pub terminal: Option<OwnedFd>,
}

/// An exec that did not start: why, and the process to reap if one was made.
#[derive(Debug)]
pub(crate) struct ExecFailed {
    pub failure: Failure,
    pub process: Option<OwnedFd>,
}

impl ExecStarting {
    /// The socket to watch.
    pub(crate) fn sock(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// The pidfds of the processes this exec made so far (the helper, and the process once
    /// named).
    pub(crate) fn pidfds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        std::iter::once(self.helper.as_fd()).chain(self.process.as_ref().map(|(_, fd)| fd.as_fd()))
    }

    /// Reads what has arrived; `true` once the helper and the process are both done with the
    /// socket (then [`Self::finish`] tells the outcome).
    pub(crate) fn progress(&mut self) -> bool {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match protocol::recv(self.sock.as_fd(), &mut buf) {
                Ok((0, _)) => return true,
                Ok((n, mut fds)) => {
                    let msg = &buf[..n];
                    match std::str::from_utf8(msg)
                        .ok()
                        .and_then(|s| s.strip_prefix("pid "))
                        .and_then(|p| p.parse::<i32>().ok())
                        .and_then(Pid::from_raw)
                    {
                        Some(pid) => {
                            self.terminal = fds.pop();
                            match rustix::process::pidfd_open(
                                pid,
                                rustix::process::PidfdFlags::empty(),
                            ) {
                                Ok(fd) => self.process = Some((pid, fd)),
                                Err(e) => {
                                    // Cannot happen for a live child of ours; if it does, it
                                    // can only be killed by pid, and is reaped as a zombie
                                    // when the forker leaves.
                                    let _ = rustix::process::kill_process(
                                        pid,
                                        rustix::process::Signal::KILL,
                                    );
                                    self.broken = Some(failure("open the process's pidfd", e));
                                }
                            }
                        }
                        None => self.report = Some(parse_report(msg)),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    self.broken = Some(failure("wait for the exec helper", e));
                    return true;
                }
            }
        }
    }

    /// The outcome once [`Self::progress`] said done (or the deadline passed: then `late`
    /// says how long was waited, and whatever started is ended).
    pub(crate) fn finish(
        self,
        late: Option<std::time::Duration>,
    ) -> Result<ExecRunning, ExecFailed> {
        let kill = |fd: &OwnedFd| {
            let _ = rustix::process::pidfd_send_signal(fd, rustix::process::Signal::KILL);
        };
        if let Some(after) = late {
            kill(&self.helper);
            if let Some((_, fd)) = &self.process {
                kill(fd);
            }
            return Err(ExecFailed {
                failure: Failure {
                    kind: crate::protocol::FailureKind::TimedOut,
                    message: format!(
                        "the process did not start within {} s (the instance may be frozen, or its set-up hung); it was killed",
                        after.as_secs()
                    ),
                },
                process: self.process.map(|(_, fd)| fd),
            });
        }
        match (self.process, self.report, self.broken) {
            (Some((pid, pidfd)), None, None) => Ok(ExecRunning {
                pid,
                pidfd,
                terminal: self.terminal,
            }),
            (process, report, broken) => {
                if let Some((_, fd)) = &process {
                    kill(fd);
                }
                Err(ExecFailed {
                    failure: broken.or(report.map(child_failure)).unwrap_or_else(|| {
                        Failure::other("the exec helper exited without starting the process")
                    }),
                    process: process.map(|(_, fd)| fd),
                })
            }
        }
    }
}

/// Starts the helper of an exec of `process` into the running container whose init is
/// `init_pid`/`init_pidfd` (in group `cgroup`). Returns the helper's pidfd (to reap) and
/// the exec to follow.
pub(crate) fn begin_exec(
    cgroups: &Cgroups,
    cgroup: &str,
    init_pid: i32,
    init_pidfd: &OwnedFd,
    process: &ProcessSpec,
    fds: Vec<OwnedFd>,
    stall: bool,
) -> Result<(OwnedFd, ExecStarting), Failure> {
    let stdio = passed_stdio(process.tty, fds)?;
    give_terminal(&stdio, namespace_root(init_pid))?;
    let (parent_sock, child_sock) = seqpacket_pair()?;
    rustix::io::ioctl_fionbio(&parent_sock, true).map_err(|e| failure("exec helper socket", e))?;
    let helper = match mayfly_sys::process::clone_process(CloneFlags::default())
        .map_err(|e| failure("clone", e))?
    {
        Forked::Child => {
            drop(parent_sock);
            let f = exec_helper(
                cgroups,
                cgroup,
                init_pidfd,
                process,
                &child_sock,
                stdio,
                stall,
            );
            child_exit(&child_sock, f)
        }
        Forked::Parent(helper) => helper,
    };
    drop(child_sock);
    drop(stdio);
    let helper_fd = match rustix::process::pidfd_open(helper, rustix::process::PidfdFlags::empty())
    {
        Ok(fd) => fd,
        Err(e) => {
            // Cannot happen for a child that has not been reaped; kill it rather than lose it.
            let _ = rustix::process::kill_process(helper, rustix::process::Signal::KILL);
            return Err(failure("open the exec helper's pidfd", e));
        }
    };
    let helper = match helper_fd.try_clone() {
        Ok(fd) => fd,
        Err(e) => {
            let _ = rustix::process::pidfd_send_signal(&helper_fd, rustix::process::Signal::KILL);
            let _ = rustix::process::waitpid(Some(helper), rustix::process::WaitOptions::empty());
            return Err(failure("duplicate the exec helper's pidfd", e));
        }
    };
    Ok((
        helper_fd,
        ExecStarting {
            sock: parent_sock,
            helper,
            process: None,
            terminal: None,
            report: None,
            broken: None,
        },
    ))
}

fn exec_helper(
    cgroups: &Cgroups,
    cgroup: &str,
    init_pidfd: &OwnedFd,
    process: &ProcessSpec,
    sock: &OwnedFd,
    stdio: ChildStdio,
    stall: bool,
) -> ChildFailure {
    let fail = |step: &str, e: io::Error| ChildFailure {
        step: step.to_owned(),
        errno: e.raw_os_error(),
        detail: e.to_string(),
    };
    // Not dumpable: the container's root must not ptrace or read /proc/<pid>/exe of a
    // process that still runs the forker's code.
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    if stall {
        // Fault injection (MAYFLY_FORKER_FAULTS=exec-stall): a helper that never gets on,
        // as one that joined a frozen group would.
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
    let me = rustix::process::getpid().as_raw_nonzero().get();
    if let Err(e) = cgroups.add_exec_process(cgroup, me) {
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
    // The instance's root is ours now: its own account files say who the user is.
    let identity = match identity::resolve_user(&process.user) {
        Ok(identity) => identity,
        Err(f) => return f,
    };
    // A terminal of the instance's own devpts, so that it has a name there (`tty`, `ssh`,
    // `screen` and `sudo` look it up); the host's terminal stays as the fallback.
    let (stdio, master) = match stdio {
        ChildStdio::Tty(host) => match inside_terminal(&host, identity.uid, identity.gid) {
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
            child::become_process(process, &identity, stdio)
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
