//! The forker's children: every process it makes or learns is tracked until `waitid` collects
//! it — container inits and exec'd processes (reported to the daemon when they end), orphans
//! (reaped, reported to no one), and strays (children that nothing tracks, found by a sweep of
//! `/proc/self/task/*/children` and ended). A pidfd that is ready before its process can be
//! collected is handed to the slow poll instead of spinning the loop.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::process::{Pid, WaitId, WaitIdOptions};

use super::{Forker, Source, pending};
use crate::protocol::Event;
use crate::spec::ExitStatus;

/// How often the forker looks for children nothing tracks.
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How long a child may go untracked before it is taken for a stray: longer than any start
/// takes to name its processes (see `pending::EXEC_DEADLINE`).
const STRAY_AFTER: Duration = Duration::from_secs(15);

impl Forker {
    /// Hands child `pidfd` to the orphans: reaped when it ends, reported to no one.
    pub(super) fn orphan(&mut self, pidfd: OwnedFd) {
        let key = self.next_orphan;
        self.next_orphan += 1;
        self.watch(&pidfd, Source::Orphan(key));
        self.orphans.insert(key, pidfd);
    }

    pub(super) fn reap_orphan(&mut self, key: u64) {
        let Some(pidfd) = self.orphans.get(&key) else {
            return;
        };
        match collect(pidfd) {
            Collected::NotYet => self.go_slow(Source::Orphan(key)),
            Collected::Exited(_) | Collected::Gone => {
                self.orphans.remove(&key);
                self.unwatch(&Source::Orphan(key));
            }
        }
    }

    pub(super) fn init_exited(&mut self, id: &str) {
        let Some(c) = self.containers.get(id) else {
            return;
        };
        let Some(pidfd) = &c.pidfd else { return };
        let status = if c.adopted {
            // Not our child: readable means it ended; its status is its old parent's.
            None
        } else {
            match collect(pidfd) {
                Collected::NotYet => {
                    self.go_slow(Source::Init(id.to_owned()));
                    return;
                }
                Collected::Exited(st) => Some(st),
                Collected::Gone => None,
            }
        };
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        if c.pidfd.take().is_none() {
            return;
        }
        c.exited = Some(status);
        let mut log = c.log.take();
        let cgroup = c.cgroup.clone();
        self.unwatch(&Source::Init(id.to_owned()));
        self.close_console(id, log.as_mut());
        if let Some(mut pump) = log {
            // The namespace is gone, so every writer is gone: drain what is left.
            while pump.pump() {}
            self.unwatch(&Source::Log(id.to_owned()));
        }
        // Nothing can run in the group any more; empty it of stragglers (processes that
        // joined through exec without being in the pid namespace cannot exist, but be sure).
        let _ = self.cgroups.kill_all(&cgroup);
        self.emit(Event::Exited {
            id: id.to_owned(),
            status,
        });
    }

    pub(super) fn pump_log(&mut self, id: &str) {
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        let Some(pump) = c.log.as_mut() else { return };
        if !pump.pump() {
            // The console may still write to the log: it stays open while there is one.
            if c.console.is_some() {
                pump.close_pipe();
            } else {
                c.log = None;
            }
            self.unwatch(&Source::Log(id.to_owned()));
        }
    }

    pub(super) fn exec_exited(&mut self, exec_id: u64) {
        let Some(e) = self.execs.get(&exec_id) else {
            return;
        };
        let status = match collect(&e.pidfd) {
            Collected::NotYet => {
                self.go_slow(Source::Exec(exec_id));
                return;
            }
            Collected::Exited(st) => st,
            Collected::Gone => ExitStatus::exited(-1),
        };
        self.execs.remove(&exec_id);
        self.unwatch(&Source::Exec(exec_id));
        self.emit(Event::ExecExited { exec_id, status });
    }

    /// The pids of every child the forker tracks.
    fn known_children(&self) -> std::collections::HashSet<i32> {
        let mut known: std::collections::HashSet<i32> = self
            .containers
            .values()
            .map(|c| c.pid.as_raw_nonzero().get())
            .collect();
        let mut fds: Vec<BorrowedFd<'_>> = Vec::new();
        fds.extend(self.execs.values().map(|e| e.pidfd.as_fd()));
        fds.extend(self.orphans.values().map(|fd| fd.as_fd()));
        for p in self.pending.values() {
            match &p.kind {
                pending::Kind::Spawn { starting, .. } => fds.push(starting.pidfd.as_fd()),
                pending::Kind::Exec { starting, .. } => fds.extend(starting.pidfds()),
                _ => {}
            }
        }
        known.extend(fds.into_iter().filter_map(pid_of_pidfd));
        known
    }

    /// Finds children nothing tracks (see `strays`): a zombie is reaped, a live one killed and
    /// handed to the orphans, once it has been a stray for [`STRAY_AFTER`].
    pub(super) fn sweep_strays(&mut self) {
        let me = rustix::process::getpid().as_raw_nonzero().get();
        let Ok(list) = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")) else {
            return;
        };
        let known = self.known_children();
        let now = Instant::now();
        let children: std::collections::HashSet<i32> = list
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|p| !known.contains(p))
            .collect();
        self.strays.retain(|pid, _| children.contains(pid));
        for pid in children {
            let since = *self.strays.entry(pid).or_insert(now);
            if now.duration_since(since) < STRAY_AFTER {
                continue;
            }
            self.strays.remove(&pid);
            let Some(p) = Pid::from_raw(pid) else {
                continue;
            };
            eprintln!("forker: child {pid} was tracked by nothing; ending and reaping it");
            match rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) {
                Ok(fd) => {
                    let _ = rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL);
                    self.orphan(fd);
                }
                Err(_) => {
                    let _ = rustix::process::waitpid(Some(p), rustix::process::WaitOptions::NOHANG);
                }
            }
        }
    }
}

/// The pid a pidfd refers to (`Pid:` in its fdinfo; -1 once the process is reaped).
fn pid_of_pidfd(fd: BorrowedFd<'_>) -> Option<i32> {
    use std::os::fd::AsRawFd;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())
        .filter(|p: &i32| *p > 0)
}

/// What `waitid` says of a child's pidfd that was ready.
enum Collected {
    /// It ended with this status (and is reaped).
    Exited(ExitStatus),
    /// It cannot be collected yet.
    NotYet,
    /// It is not ours to collect, or already collected.
    Gone,
}

fn collect(pidfd: &OwnedFd) -> Collected {
    match rustix::process::waitid(
        WaitId::PidFd(pidfd.as_fd()),
        WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
    ) {
        Ok(Some(st)) => Collected::Exited(exit_status(&st)),
        Ok(None) => Collected::NotYet,
        Err(rustix::io::Errno::INTR) => Collected::NotYet,
        Err(_) => Collected::Gone,
    }
}

fn exit_status(st: &rustix::process::WaitIdStatus) -> ExitStatus {
    if let Some(code) = st.exit_status() {
        ExitStatus::exited(code)
    } else if let Some(sig) = st.terminating_signal() {
        ExitStatus::killed(sig)
    } else {
        ExitStatus::exited(-1)
    }
}
