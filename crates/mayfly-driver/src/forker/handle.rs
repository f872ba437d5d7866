//! The forker's answers to the daemon's requests. Quick ones are answered at once; those
//! that wait for an instance become pending operations (see `pending`).

use std::os::fd::OwnedFd;

use rustix::process::{Pid, Signal};

use super::pending::{self, Kind, Pending};
use super::{Container, Forker, Source, exec, logs, spawn};
use crate::cgroup::FreezerState;
use crate::protocol::{
    ContainerState, Envelope, Failure, FailureKind, LogTarget, PROTOCOL_VERSION, Reply, Request,
};
use crate::spec::StdioSpec;

fn not_running(id: &str) -> Failure {
    Failure {
        kind: FailureKind::UnknownContainer,
        message: format!("container {id} is not running"),
    }
}

impl Forker {
    /// Answers `envelope` (now, or once its pending operation completes).
    pub(super) fn handle(&mut self, generation: u64, envelope: Envelope, fds: Vec<OwnedFd>) {
        let seq = envelope.seq;
        let mut reply_fds = Vec::new();
        let result = match envelope.request {
            Request::Hello { .. } => Ok(self.hello()),
            Request::Spawn(spec) => match self.begin_spawn(generation, seq, *spec, fds) {
                Ok(()) => return,
                Err(f) => Err(f),
            },
            Request::Signal { id, signal } => self.signal(&id, signal),
            Request::KillAll { id } => self.kill_all(&id),
            Request::Exec {
                id,
                exec_id,
                process,
            } => match self.begin_exec(generation, seq, &id, exec_id, &process, fds) {
                Ok(()) => return,
                Err(f) => Err(f),
            },
            Request::SignalExec { exec_id, signal } => self.signal_exec(exec_id, signal),
            Request::Freeze { id, frozen } => match self.begin_freeze(generation, seq, &id, frozen)
            {
                Ok(()) => return,
                Err(f) => Err(f),
            },
            Request::Adopt {
                id,
                pid,
                start_time,
                cgroup,
                log,
            } => self.adopt(id, pid, start_time, cgroup, log, fds),
            Request::LogReader { id } => match self.running(&id) {
                Ok(c) => {
                    reply_fds.extend(
                        c.log
                            .as_ref()
                            .and_then(|l| l.pipe())
                            .and_then(|p| p.try_clone().ok()),
                    );
                    Ok(Reply::Done)
                }
                Err(f) => Err(f),
            },
            Request::Console { id } => match self.attach_console(&id) {
                Ok(fds) => {
                    reply_fds = fds;
                    Ok(Reply::Done)
                }
                Err(f) => Err(f),
            },
            Request::ProbeIdmap { path } => Ok(Reply::Probe {
                unsupported: super::probe::probe_idmap(&path).err(),
            }),
            Request::Release { id } => match self.begin_release(generation, seq, &id) {
                Ok(()) => return,
                Err(f) => Err(f),
            },
        };
        self.reply(generation, seq, result, reply_fds);
    }

    fn hello(&self) -> Reply {
        let containers = self
            .containers
            .iter()
            .map(|(id, c)| ContainerState {
                id: id.clone(),
                pid: c.pid.as_raw_nonzero().get(),
                start_time: c.start_time,
                exited: c.exited.flatten(),
            })
            .collect();
        Reply::Hello {
            protocol: PROTOCOL_VERSION,
            pid: rustix::process::getpid().as_raw_nonzero().get(),
            cgroup_mode: self.cgroups.mode().as_str().to_owned(),
            containers,
        }
    }

    pub(super) fn running(&self, id: &str) -> Result<&Container, Failure> {
        match self.containers.get(id) {
            Some(c) if c.exited.is_none() => Ok(c),
            _ => Err(not_running(id)),
        }
    }

    fn begin_spawn(
        &mut self,
        generation: u64,
        seq: u64,
        spec: crate::spec::ContainerSpec,
        fds: Vec<OwnedFd>,
    ) -> Result<(), Failure> {
        if self.containers.contains_key(&spec.id) || self.spawning(&spec.id).is_some() {
            return Err(Failure::other(format!(
                "container {} is already running",
                spec.id
            )));
        }
        self.cgroups
            .create(&spec.cgroup)
            .map_err(|e| Failure::other(format!("create cgroup: {}", crate::error_chain(&e))))?;
        // Before the first process joins: only the devices mayfly provides.
        if let Err(e) = self.cgroups.restrict_devices(&spec.cgroup) {
            self.remove_cgroup_later(spec.cgroup.clone());
            return Err(Failure::other(format!(
                "set device rules: {}",
                crate::error_chain(&e)
            )));
        }
        // Still before the first process joins: the instance's limits. The IO device is the
        // disk its writable layer (in the state directory) is on.
        let io_device = crate::cgroup::limits::io_device(&spec.upper);
        let refused = self
            .cgroups
            .apply_limits(&spec.cgroup, &spec.limits, io_device.as_deref());
        if !refused.is_empty() {
            self.remove_cgroup_later(spec.cgroup.clone());
            let each: Vec<String> = refused
                .iter()
                .map(|(key, why)| format!("--{key}: {why}"))
                .collect();
            return Err(Failure {
                kind: crate::protocol::FailureKind::LimitRefused,
                message: format!("cannot apply the instance's limits: {}", each.join("; ")),
            });
        }
        let starting =
            match spawn::begin_container(&self.cgroups, &spec, fds, self.faults.init_slow) {
                Ok(s) => s,
                Err(aborted) => {
                    if let Some(child) = aborted.child {
                        self.orphan(child);
                    }
                    self.remove_cgroup_later(spec.cgroup.clone());
                    return Err(aborted.failure);
                }
            };
        let log = match &spec.stdio {
            StdioSpec::Log { path, max_bytes } => Some((path.clone(), *max_bytes)),
            StdioSpec::Passed => None,
        };
        self.add_pending(Pending::new(
            generation,
            seq,
            pending::SPAWN_DEADLINE,
            Kind::Spawn {
                id: spec.id.clone(),
                cgroup: spec.cgroup.clone(),
                starting,
                log,
            },
        ));
        Ok(())
    }

    fn signal(&mut self, id: &str, signal: i32) -> Result<Reply, Failure> {
        let c = self.running(id)?;
        let sig = mayfly_sys::signal::sendable(signal)
            .ok_or_else(|| Failure::other(format!("unknown signal {signal}")))?;
        if let Some(pidfd) = &c.pidfd {
            rustix::process::pidfd_send_signal(pidfd, sig)
                .map_err(|e| Failure::other(format!("signal {id}: {e}")))?;
        }
        Ok(Reply::Done)
    }

    fn kill_all(&mut self, id: &str) -> Result<Reply, Failure> {
        if let Some(op) = self.spawning(id) {
            // Its daemon gave up on the start: it must not run unasked.
            self.cancel_spawn(op, &format!("the start of container {id} was cancelled"));
            return Ok(Reply::Done);
        }
        let c = self.running(id)?;
        if let Some(pidfd) = &c.pidfd {
            let _ = rustix::process::pidfd_send_signal(pidfd, Signal::KILL);
        }
        let cgroup = c.cgroup.clone();
        self.cgroups
            .kill_all(&cgroup)
            .map_err(|e| Failure::other(crate::error_chain(&e)))?;
        // A frozen v1 group keeps its killed processes until it thaws: let them die.
        if !matches!(
            self.cgroups.freezer_state(&cgroup),
            Ok(FreezerState::Thawed)
        ) {
            let _ = self.cgroups.request_frozen(&cgroup, false);
        }
        Ok(Reply::Done)
    }

    fn begin_exec(
        &mut self,
        generation: u64,
        seq: u64,
        id: &str,
        exec_id: u64,
        process: &crate::spec::ProcessSpec,
        fds: Vec<OwnedFd>,
    ) -> Result<(), Failure> {
        let c = self.running(id)?;
        let Some(pidfd) = &c.pidfd else {
            return Err(not_running(id));
        };
        // A helper that joins a frozen group stops there; say so at once instead.
        match self.cgroups.freezer_state(&c.cgroup) {
            Ok(FreezerState::Thawed) => {}
            Ok(_) => {
                return Err(Failure {
                    kind: FailureKind::Frozen,
                    message: format!(
                        "instance {id} is frozen (a snapshot, clone or publish is copying it, or it was paused): nothing can start in it until it is thawed"
                    ),
                });
            }
            Err(e) => return Err(Failure::other(crate::error_chain(&e))),
        }
        let (helper, starting) = exec::begin_exec(
            &self.cgroups,
            &c.cgroup,
            c.pid.as_raw_nonzero().get(),
            pidfd,
            process,
            fds,
            self.faults.exec_stall && process.env.iter().any(|e| e == "MAYFLY_FAULT_STALL=1"),
        )?;
        self.orphan(helper);
        self.add_pending(Pending::new(
            generation,
            seq,
            pending::EXEC_DEADLINE,
            Kind::Exec { exec_id, starting },
        ));
        Ok(())
    }

    fn signal_exec(&mut self, exec_id: u64, signal: i32) -> Result<Reply, Failure> {
        let e = self.execs.get(&exec_id).ok_or(Failure {
            kind: FailureKind::UnknownContainer,
            message: format!("no exec'd process {exec_id}"),
        })?;
        let sig = mayfly_sys::signal::sendable(signal)
            .ok_or_else(|| Failure::other(format!("unknown signal {signal}")))?;
        // The whole process group, as a terminal would: what the process started (a shell's
        // children) hears the hang-up or interrupt too, unless it left the group.
        let _ = rustix::process::pidfd_send_signal(&e.pidfd, sig);
        let _ = rustix::process::kill_process_group(e.pid, sig);
        Ok(Reply::Done)
    }

    fn begin_freeze(
        &mut self,
        generation: u64,
        seq: u64,
        id: &str,
        frozen: bool,
    ) -> Result<(), Failure> {
        let cgroup = match self.running(id) {
            Ok(c) => c.cgroup.clone(),
            // A thaw reaches a group whatever tracks it: recovery thaws instances that an
            // interrupted operation left frozen, before or while a new forker adopts them.
            Err(_) if !frozen => {
                let cgroup = format!("{}/{id}", self.cgroup_parent);
                if !self.cgroups.exists(&cgroup) {
                    self.reply(generation, seq, Ok(Reply::Done), Vec::new());
                    return Ok(());
                }
                cgroup
            }
            Err(f) => return Err(f),
        };
        self.cgroups
            .request_frozen(&cgroup, frozen)
            .map_err(|e| Failure::other(crate::error_chain(&e)))?;
        self.add_pending(Pending::new(
            generation,
            seq,
            pending::FREEZE_DEADLINE,
            Kind::Freeze {
                id: id.to_owned(),
                cgroup,
                frozen,
            },
        ));
        Ok(())
    }

    fn begin_release(&mut self, generation: u64, seq: u64, id: &str) -> Result<(), Failure> {
        match self.containers.get(id) {
            Some(c) if c.exited.is_some() => {}
            Some(_) => {
                return Err(Failure {
                    kind: FailureKind::StillRunning,
                    message: format!("container {id} is still running"),
                });
            }
            None => {
                self.reply(generation, seq, Ok(Reply::Done), Vec::new());
                return Ok(());
            }
        }
        let Some(c) = self.containers.remove(id) else {
            return Ok(());
        };
        self.add_pending(Pending::new(
            generation,
            seq,
            pending::RELEASE_DEADLINE,
            Kind::Release {
                id: id.to_owned(),
                cgroup: c.cgroup,
            },
        ));
        Ok(())
    }

    fn adopt(
        &mut self,
        id: String,
        pid: i32,
        start_time: u64,
        cgroup: String,
        log: Option<LogTarget>,
        mut fds: Vec<OwnedFd>,
    ) -> Result<Reply, Failure> {
        if self.containers.contains_key(&id) {
            return Ok(Reply::Done);
        }
        let alive = Pid::from_raw(pid)
            .filter(|_| spawn::start_time(pid).ok() == Some(start_time))
            .and_then(|p| {
                rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
                    .ok()
                    .map(|fd| (p, fd))
            });
        let Some((p, pidfd)) = alive else {
            // It ended while nobody watched; make sure nothing of it is left.
            let _ = self.cgroups.kill_all(&cgroup);
            self.remove_cgroup_later(cgroup);
            return Err(Failure {
                kind: FailureKind::UnknownContainer,
                message: format!("container {id} is no longer running"),
            });
        };
        self.watch(&pidfd, Source::Init(id.clone()));
        // The daemon kept a reader of the output pipe while no forker did; pump it again.
        let pump = match (log, fds.pop()) {
            (Some(target), Some(pipe)) => {
                logs::LogPump::open(pipe, target.path.clone(), target.max_bytes)
                    .map_err(|e| eprintln!("forker: log {}: {e}", target.path.display()))
                    .ok()
            }
            _ => None,
        };
        if let Some(pipe) = pump.as_ref().and_then(|p| p.pipe()) {
            self.watch(pipe, Source::Log(id.clone()));
        }
        self.containers.insert(
            id,
            Container {
                pid: p,
                pidfd: Some(pidfd),
                start_time,
                cgroup,
                log: pump,
                console: None,
                exited: None,
                adopted: true,
            },
        );
        Ok(Reply::Done)
    }
}
