//! Operations whose answer waits for something an instance does: a container's or exec'd
//! process's set-up, a freeze or thaw, a cgroup emptying. Each has a deadline; the loop
//! polls or watches them and answers when they complete or the deadline passes, so that no
//! instance can hold up the others.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::exec::ExecStarting;
use super::spawn::{Starting, Verdict, read_verdict};
use super::{Container, ExecProcess, Forker, Source, logs};
use crate::cgroup::FreezerState;
use crate::protocol::{Failure, FailureKind, Reply};

/// How long a container's child may take from clone to exec (mounts, and for a clone's first
/// start a new identity, SSH host keys included).
pub(super) const SPAWN_DEADLINE: Duration = Duration::from_secs(60);
/// How long an exec helper may take to start its process.
pub(super) const EXEC_DEADLINE: Duration = Duration::from_secs(10);
/// How long a freeze or thaw may take.
pub(super) const FREEZE_DEADLINE: Duration = Duration::from_secs(10);
/// How long an ended container's group may take to empty before `Release` says so.
pub(super) const RELEASE_DEADLINE: Duration = Duration::from_secs(5);

/// How often a freeze in progress is looked at.
const FREEZE_POLL: Duration = Duration::from_millis(1);
/// How often a group that does not empty yet is tried again.
const RELEASE_POLL: Duration = Duration::from_millis(5);

/// One operation waiting for its answer.
#[derive(Debug)]
pub(super) struct Pending {
    /// The connection that asked (answers go to it only).
    pub generation: u64,
    /// Its request's sequence number.
    pub seq: u64,
    pub started: Instant,
    pub deadline: Instant,
    /// When a polled operation is looked at next.
    next_poll: Instant,
    pub kind: Kind,
}

#[derive(Debug)]
pub(super) enum Kind {
    /// A container whose child sets itself up.
    Spawn {
        id: String,
        cgroup: String,
        starting: Starting,
        /// Where its output goes (detached containers).
        log: Option<(PathBuf, u64)>,
    },
    /// An exec'd process on its way.
    Exec {
        exec_id: u64,
        starting: ExecStarting,
    },
    /// A freeze (`frozen`) or thaw of group `cgroup`.
    Freeze {
        id: String,
        cgroup: String,
        frozen: bool,
    },
    /// An ended container's group, to remove once empty.
    Release { id: String, cgroup: String },
}

impl Pending {
    pub(super) fn new(generation: u64, seq: u64, deadline: Duration, kind: Kind) -> Pending {
        let started = Instant::now();
        Pending {
            generation,
            seq,
            started,
            deadline: started + deadline,
            next_poll: started,
            kind,
        }
    }

    /// How often this operation is polled (`None`: it is watched, not polled).
    fn poll_every(&self) -> Option<Duration> {
        match self.kind {
            Kind::Freeze { .. } => Some(FREEZE_POLL),
            Kind::Release { .. } => Some(RELEASE_POLL),
            Kind::Spawn { .. } | Kind::Exec { .. } => None,
        }
    }

    /// How soon the loop must look at this operation again.
    pub(super) fn wakeup(&self) -> Duration {
        let now = Instant::now();
        let left = self.deadline.saturating_duration_since(now);
        match self.poll_every() {
            Some(_) => left.min(self.next_poll.saturating_duration_since(now)),
            None => left,
        }
    }

    /// The socket the loop watches for this operation, if any.
    pub(super) fn sock(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        match &self.kind {
            Kind::Spawn { starting, .. } => Some(starting.sock.as_fd()),
            Kind::Exec { starting, .. } => Some(starting.sock()),
            _ => None,
        }
    }
}

impl Forker {
    /// Registers `p` (and watches its socket).
    pub(super) fn add_pending(&mut self, p: Pending) {
        let op = self.next_op;
        self.next_op += 1;
        if let Some(sock) = p.sock() {
            self.watch(&sock, Source::Pending(op));
        }
        self.pending.insert(op, p);
        // Freezes and removals may be complete already.
        self.poll_one(op);
    }

    fn take_pending(&mut self, op: u64) -> Option<Pending> {
        let p = self.pending.remove(&op)?;
        self.unwatch(&Source::Pending(op));
        Some(p)
    }

    /// The id of the container being started as `id`, if one is.
    pub(super) fn spawning(&self, id: &str) -> Option<u64> {
        self.pending.iter().find_map(|(op, p)| match &p.kind {
            Kind::Spawn { id: i, .. } if i == id => Some(*op),
            _ => None,
        })
    }

    /// Gives up on starting container `id` (its daemon asked to kill it, or gave up on it).
    pub(super) fn cancel_spawn(&mut self, op: u64, why: &str) {
        if let Some(p) = self.take_pending(op) {
            let reply = Failure::other(why.to_owned());
            self.fail_spawn(p, reply);
        }
    }

    /// The sync socket of operation `op` has something to say.
    pub(super) fn pending_ready(&mut self, op: u64) {
        let done = match self.pending.get_mut(&op).map(|p| &mut p.kind) {
            Some(Kind::Spawn { starting, .. }) => match read_verdict(&starting.sock) {
                Verdict::Pending => return,
                v => Some(v),
            },
            Some(Kind::Exec { starting, .. }) => {
                if !starting.progress() {
                    return;
                }
                None
            }
            _ => return,
        };
        let Some(p) = self.take_pending(op) else {
            return;
        };
        match done {
            Some(Verdict::Failed(f)) => self.fail_spawn(p, f),
            Some(_) => self.finish_spawn(p),
            None => self.finish_exec(p, None),
        }
    }

    /// Looks at every operation that polls, and at every deadline.
    pub(super) fn poll_pending(&mut self) {
        let ops: Vec<u64> = self.pending.keys().copied().collect();
        for op in ops {
            self.poll_one(op);
        }
    }

    fn poll_one(&mut self, op: u64) {
        let Some(p) = self.pending.get_mut(&op) else {
            return;
        };
        let now = Instant::now();
        let late = now >= p.deadline;
        if !late {
            match p.poll_every() {
                // Watched: only its deadline matters here.
                None => return,
                Some(_) if now < p.next_poll => return,
                Some(every) => p.next_poll = now + every,
            }
        }
        let Some(p) = self.pending.get(&op) else {
            return;
        };
        let done = match &p.kind {
            Kind::Freeze { cgroup, frozen, .. } => {
                let want = if *frozen {
                    FreezerState::Frozen
                } else {
                    FreezerState::Thawed
                };
                let state = match self.cgroups.freezer_state(cgroup) {
                    Ok(_) if *frozen && self.faults.freeze_stall => FreezerState::Freezing,
                    Ok(s) => s,
                    Err(e) => {
                        let f = Failure::other(crate::error_chain(&e));
                        if let Some(p) = self.take_pending(op) {
                            self.reply(p.generation, p.seq, Err(f), Vec::new());
                        }
                        return;
                    }
                };
                state == want
            }
            Kind::Release { cgroup, .. } => {
                !self.faults.remove_busy && self.try_remove_cgroup(cgroup)
            }
            Kind::Spawn { .. } | Kind::Exec { .. } => false,
        };
        if !done && !late {
            return;
        }
        let Some(p) = self.take_pending(op) else {
            return;
        };
        let waited = p.started.elapsed();
        match p.kind {
            Kind::Freeze {
                ref id,
                ref cgroup,
                frozen,
            } => {
                let result = if done {
                    Ok(Reply::Done)
                } else if frozen {
                    // Do not leave it half frozen: whatever stopped already runs again.
                    let _ = self.cgroups.request_frozen(cgroup, false);
                    Err(Failure {
                        kind: FailureKind::TimedOut,
                        message: format!(
                            "instance {id} could not be frozen within {} s (a process of it is probably in uninterruptible sleep, e.g. on a hung filesystem); it was thawed again",
                            waited.as_secs()
                        ),
                    })
                } else {
                    Err(Failure {
                        kind: FailureKind::TimedOut,
                        message: format!(
                            "instance {id} is still frozen {} s after it was asked to thaw",
                            waited.as_secs()
                        ),
                    })
                };
                self.reply(p.generation, p.seq, result, Vec::new());
            }
            Kind::Release { ref id, ref cgroup } => {
                let result = if done {
                    Ok(Reply::Done)
                } else {
                    // The injected fault holds up one release only.
                    self.faults.remove_busy = false;
                    // Keep trying while the forker runs; say so now.
                    self.leftover_cgroups.push((cgroup.clone(), Instant::now()));
                    Err(Failure {
                        kind: FailureKind::TimedOut,
                        message: format!(
                            "the cgroup of instance {id} still holds processes {} s after its init ended; the forker keeps trying to remove it",
                            waited.as_secs()
                        ),
                    })
                };
                self.reply(p.generation, p.seq, result, Vec::new());
            }
            Kind::Spawn { .. } => {
                let f = Failure {
                    kind: FailureKind::TimedOut,
                    message: format!(
                        "the container did not finish its set-up within {} s (a hung filesystem, or a slow first start of a clone); it was killed",
                        waited.as_secs()
                    ),
                };
                self.fail_spawn(p, f);
            }
            Kind::Exec { .. } => {
                let mut p = p;
                // A word that arrived at the last moment (the process's pid) still counts:
                // then the process is known, and ended with the rest.
                if let Kind::Exec { starting, .. } = &mut p.kind {
                    starting.progress();
                }
                self.finish_exec(p, Some(waited));
            }
        }
    }

    /// A container's child failed (or is given up on): it goes, with its group.
    fn fail_spawn(&mut self, p: Pending, f: Failure) {
        let Kind::Spawn {
            cgroup,
            starting,
            log,
            ..
        } = p.kind
        else {
            return;
        };
        if let Some((path, _)) = &log {
            // The log says why there is nothing else in it (as a console would show it).
            logs::append_line(path, &format!("mayfly: the init did not start: {f}"));
        }
        let _ = rustix::process::pidfd_send_signal(&starting.pidfd, rustix::process::Signal::KILL);
        self.orphan(starting.pidfd);
        self.remove_cgroup_later(cgroup);
        self.reply(p.generation, p.seq, Err(f), Vec::new());
    }

    /// A container's init runs: track it and answer.
    fn finish_spawn(&mut self, p: Pending) {
        let Kind::Spawn {
            id,
            cgroup,
            starting,
            log,
        } = p.kind
        else {
            return;
        };
        if p.generation != self.generation() {
            // The daemon that asked is gone and was told the start failed: nobody expects
            // this container. End it.
            let _ =
                rustix::process::pidfd_send_signal(&starting.pidfd, rustix::process::Signal::KILL);
            self.orphan(starting.pidfd);
            self.remove_cgroup_later(cgroup);
            return;
        }
        let pump = match (log, starting.log_pipe) {
            (Some((path, max_bytes)), Some(pipe)) => {
                match logs::LogPump::open(pipe, path.clone(), max_bytes) {
                    Ok(pump) => Some(pump),
                    Err(e) => {
                        eprintln!("forker: log {}: {e}", path.display());
                        None
                    }
                }
            }
            _ => None,
        };
        self.watch(&starting.pidfd, Source::Init(id.clone()));
        let mut reply_fds = Vec::new();
        if let Some(pipe) = pump.as_ref().and_then(|p| p.pipe()) {
            self.watch(pipe, Source::Log(id.clone()));
            // The daemon keeps a reader of the pipe, so that it never loses its last reader
            // (and the init its output) if this forker dies.
            if let Ok(fd) = pipe.try_clone() {
                reply_fds.push(fd);
            }
        }
        let pid = starting.pid.as_raw_nonzero().get();
        let start_time = super::spawn::start_time(pid).unwrap_or(0);
        let id_for_console = id.clone();
        self.containers.insert(
            id,
            Container {
                pid: starting.pid,
                pidfd: Some(starting.pidfd),
                start_time,
                cgroup,
                log: pump,
                console: None,
                exited: None,
                adopted: false,
            },
        );
        self.watch_console(&id_for_console, starting.console);
        self.reply(
            p.generation,
            p.seq,
            Ok(Reply::Spawned { pid, start_time }),
            reply_fds,
        );
    }

    /// An exec'd process started, failed to, or ran out of time (`late`).
    fn finish_exec(&mut self, p: Pending, late: Option<Duration>) {
        let Kind::Exec { exec_id, starting } = p.kind else {
            return;
        };
        match starting.finish(late) {
            Ok(running) => {
                if p.generation != self.generation() {
                    let _ = rustix::process::pidfd_send_signal(
                        &running.pidfd,
                        rustix::process::Signal::KILL,
                    );
                    self.orphan(running.pidfd);
                    return;
                }
                let pid = running.pid.as_raw_nonzero().get();
                self.watch(&running.pidfd, Source::Exec(exec_id));
                self.execs.insert(
                    exec_id,
                    ExecProcess {
                        pid: running.pid,
                        pidfd: running.pidfd,
                    },
                );
                let fds: Vec<OwnedFd> = running.terminal.into_iter().collect();
                self.reply(p.generation, p.seq, Ok(Reply::ExecStarted { pid }), fds);
            }
            Err(failed) => {
                if let Some(fd) = failed.process {
                    self.orphan(fd);
                }
                self.reply(p.generation, p.seq, Err(failed.failure), Vec::new());
            }
        }
    }
}
