//! Stopping instances: `stop` (the stop signal, SIGKILL after the timeout; idempotent),
//! `restart` and `reset`, and the wait for an init's end that they share. The rules are at
//! the top of `instance.rs`.

use std::sync::Arc;
use std::time::Duration;

use mayfly_api::{InstanceInfo, InstanceState, Mode, StopRequest};
use mayfly_driver::InitStdio;
use tokio::sync::oneshot;

use crate::events::Ev;
use crate::instance::wrong_state;
use crate::slot::Slot;
use crate::{Engine, EngineError, lock, process};

/// Default grace period between the stop signal and SIGKILL.
const DEFAULT_STOP_TIMEOUT: u64 = 10;

/// The note of a `stop` that found nothing to do.
const ALREADY_STOPPED: &str = "already stopped";
/// The note of a `stop` that removed the instance.
const REMOVED: &str = "removed: an ephemeral instance is deleted when it stops";

/// Checks a stop request before anything happens: its signal must be one, and a forced stop
/// sends none.
fn check_stop_request(req: &StopRequest) -> Result<(), EngineError> {
    if let Some(given) = &req.signal {
        if req.force {
            return Err(EngineError::invalid(
                "--signal and --force do not go together: a forced stop kills at once (SIGKILL)",
                "give one of them",
            ));
        }
        process::check_stop_signal(given, "--signal")?;
    }
    Ok(())
}

/// Whether process `pid` takes signal `sig`: it has a handler for it (`SigCgt` in
/// /proc/<pid>/status), blocks it (`SigBlk`: it is queued for later), or sleeps in
/// `sigtimedwait`/`sigwaitinfo`, as busybox init and mayfly's own init do (the set it waits
/// for is not in /proc; an init that waits for signals is taken to want them). Unknown
/// (unreadable) counts as yes.
fn catches(pid: i32, sig: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let mask = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
    };
    let (Some(caught), Some(blocked)) = (mask("SigCgt:"), mask("SigBlk:")) else {
        return true;
    };
    let bit = |m: u64| (1..=64).contains(&sig) && m & (1u64 << (sig - 1)) != 0;
    bit(caught) || bit(blocked) || waits_for_signals(pid)
}

/// Whether process `pid` is blocked in `rt_sigtimedwait` (`/proc/<pid>/syscall`).
fn waits_for_signals(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/syscall")).is_ok_and(|s| {
        s.split_whitespace()
            .next()
            .and_then(|n| n.parse::<libc::c_long>().ok())
            == Some(libc::SYS_rt_sigtimedwait)
    })
}

impl Engine {
    /// Stops a running instance (see the module rules) and answers how it is now. A stopped
    /// one is left alone (`note`: already stopped); an ephemeral one is gone after the stop,
    /// and the answer is how it was last (`note`: removed).
    pub async fn stop_instance(
        self: &Arc<Self>,
        name: &str,
        req: StopRequest,
    ) -> Result<InstanceInfo, EngineError> {
        let slot = self.slot(name)?;
        self.stop_slot(slot, req).await
    }

    /// Stops the instance with id `id` (what an attached run follows: a later instance of
    /// the same name is never taken for it).
    pub async fn stop_instance_id(
        self: &Arc<Self>,
        id: &str,
        req: StopRequest,
    ) -> Result<InstanceInfo, EngineError> {
        let slot = lock(&self.slots).by_id(id).ok_or_else(|| {
            EngineError::Store(mayfly_store::StoreError::NotFound {
                kind: "instance",
                name: format!("with id {id}"),
            })
        })?;
        self.stop_slot(slot, req).await
    }

    async fn stop_slot(
        self: &Arc<Self>,
        slot: Arc<Slot>,
        req: StopRequest,
    ) -> Result<InstanceInfo, EngineError> {
        check_stop_request(&req)?;
        let name = slot.name.as_str();
        let note = {
            let _guard = slot.acquire("stop").await?;
            // A stop asked for now wins over an interrupted restart's wish to run again, and
            // over a restart policy's pending restart.
            self.forget_restart(&slot).await;
            self.cancel_restart(&slot).await;
            let idle = {
                let rt = lock(&slot.rt);
                rt.state == InstanceState::Stopped && rt.pending_exit.is_none()
            };
            if idle {
                Some(ALREADY_STOPPED)
            } else {
                let (before, template, ifaces) = self.instance_and_template(name).await?;
                self.stop_locked(&slot, &req).await?;
                self.emit(
                    Ev::new("instance.stop")
                        .on("instance", name)
                        .details(serde_json::to_value(&req).unwrap_or_default()),
                );
                // An end that came unasked just before this stop was judged by its policy
                // while the stop settled it: the stop wins.
                self.cancel_restart(&slot).await;
                if lock(&self.slots).get(name).is_none_or(|s| s.id != slot.id) {
                    let mut info = self.info_of(&before, template.as_ref(), None, &ifaces);
                    info.note = Some(REMOVED.to_owned());
                    return Ok(info);
                }
                None
            }
        };
        // Without the size of the writable layer: a walk of a persistent instance's layer
        // would make every stop as slow as that walk.
        let (rec, template, ifaces) = self.instance_and_template(name).await?;
        let mut info = self.info_of(&rec, template.as_ref(), None, &ifaces);
        info.note = note.map(str::to_owned);
        Ok(info)
    }

    pub(crate) async fn stop_locked(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        req: &StopRequest,
    ) -> Result<(), EngineError> {
        // A paused instance is thawed first (and its pause cleared): a frozen init cannot
        // act on its stop signal, nor die of a kill on cgroup v1.
        if lock(&slot.rt).pending_exit.is_none() {
            self.unpause_locked(slot).await?;
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut rt = lock(&slot.rt);
            if rt.pending_exit.is_none() {
                if rt.state != InstanceState::Running {
                    let state = rt.state;
                    drop(rt);
                    return Err(wrong_state(slot, state, "stop"));
                }
                rt.state = InstanceState::Stopping;
                rt.exit_waiter = Some(tx);
            }
        }
        if lock(&slot.rt).exit_waiter.is_some() {
            let waited = async {
                let signal = if req.force {
                    None
                } else if let Some(given) = &req.signal {
                    Some(process::check_stop_signal(given, "--signal")?.0)
                } else {
                    let name = slot.name.clone();
                    let rec = self.db(move |s| s.instance(&name)).await?;
                    let tname = rec.template.clone();
                    let template = self.db(move |s| s.template(&tname)).await.ok();
                    let version = rec
                        .pinned_version
                        .or(template.as_ref().map(|t| t.current_version));
                    Some(
                        template
                            .as_ref()
                            .and_then(|t| version.and_then(|v| t.version(v)))
                            .map(|v| process::stop_signal(&v.config))
                            .unwrap_or(libc::SIGTERM),
                    )
                };
                let timeout = Duration::from_secs(req.timeout.unwrap_or(DEFAULT_STOP_TIMEOUT));
                self.wait_for_exit(slot, rx, signal, timeout).await
            }
            .await;
            if let Err(e) = waited {
                // The stop failed: the instance runs on (unless its end arrived meanwhile,
                // which is settled now), and is not left `stopping` with nobody to finish it.
                let runs_on = {
                    let mut rt = lock(&slot.rt);
                    rt.exit_waiter = None;
                    if rt.pending_exit.is_none() && rt.state == InstanceState::Stopping {
                        rt.state = InstanceState::Running;
                    }
                    rt.pending_exit.is_none()
                };
                if runs_on {
                    self.clear_stop_requested(&slot.id).await;
                }
                self.settle(slot).await;
                return Err(e);
            }
        }
        self.settle(slot).await;
        Ok(())
    }

    /// Asks the init to end with `signal` (or kills at once when `None`), kills everything
    /// after `timeout`, and waits for the driver to report the end.
    async fn wait_for_exit(
        &self,
        slot: &Arc<Slot>,
        mut ended: oneshot::Receiver<()>,
        signal: Option<i32>,
        timeout: Duration,
    ) -> Result<(), EngineError> {
        let gone = |e: &mayfly_driver::DriverError| {
            e.failure_kind() == Some(mayfly_driver::FailureKind::UnknownContainer)
        };
        // The init is pid 1 of its namespace: the kernel drops a signal it has no handler
        // for, so waiting would only burn the timeout (an init stopped right after it started,
        // before its shell installed its trap, is the common case).
        // Recorded before any signal: an end after this point is never the restart
        // policy's, even if this daemon dies before it settles it.
        self.note_stop_requested(&slot.id).await;
        self.note_stopping(&slot.id);
        let pid = lock(&slot.rt).pid;
        let signal = signal.filter(|sig| pid.is_none_or(|p| catches(p, *sig)));
        let graceful = match signal {
            Some(sig) => {
                self.note_signal(&slot.id, Some(sig));
                match self.driver.signal(&slot.id, sig).await {
                    Err(e) if !gone(&e) => return Err(EngineError::Driver(e)),
                    _ => {
                        crate::failpoint("stop:signalled");
                        tokio::time::timeout(timeout, &mut ended).await.is_ok()
                    }
                }
            }
            None => false,
        };
        if graceful {
            return Ok(());
        }
        self.note_signal(&slot.id, None);
        match self.driver.kill(&slot.id).await {
            Err(e) if !gone(&e) => return Err(EngineError::Driver(e)),
            _ => {}
        }
        match tokio::time::timeout(Duration::from_secs(30), ended).await {
            Ok(_) => Ok(()),
            Err(_) => {
                lock(&slot.rt).exit_waiter = None;
                Err(EngineError::Internal(format!(
                    "instance `{}` did not end 30 s after SIGKILL",
                    slot.name
                )))
            }
        }
    }

    /// Stops (if running) and starts an instance.
    pub async fn restart_instance(
        self: &Arc<Self>,
        name: &str,
        req: StopRequest,
    ) -> Result<InstanceInfo, EngineError> {
        check_stop_request(&req)?;
        let slot = self.slot(name)?;
        {
            let _guard = slot.acquire("restart").await?;
            self.refuse_ephemeral_restart(&slot, "restart").await?;
            // It ends with a start: a restart policy's row (and pending restart) ends too.
            self.cancel_restart(&slot).await;
            let mut journal = None;
            let stopped = if slot.state() != InstanceState::Stopped {
                journal = Some(self.journal_restart(&slot.id).await?);
                self.stop_locked(&slot, &req).await
            } else {
                Ok(())
            };
            // The stop's settle may have judged an unasked end and armed a restart: this
            // restart starts it itself.
            self.cancel_restart(&slot).await;
            // Whatever happens from here, the journal entry goes: a stop that failed leaves
            // the instance running, and a start that failed is reported now.
            let started = match stopped.and_then(|()| self.ensure_not_gone(&slot)) {
                Ok(()) => {
                    let max = self.config.log_max_bytes;
                    self.start_locked(&slot, InitStdio::Log { max_bytes: max }, false)
                        .await
                }
                Err(e) => Err(e),
            };
            if let Some(j) = journal {
                self.journal_end(j).await;
            }
            started?;
            self.emit(Ev::new("instance.restart").on("instance", name));
        }
        self.instance_info(name).await
    }

    /// Refuses `action` (a restart or reset) of a running ephemeral instance before anything
    /// happens: its stop would delete it, and nothing would be left to start again.
    async fn refuse_ephemeral_restart(
        &self,
        slot: &Arc<Slot>,
        action: &str,
    ) -> Result<(), EngineError> {
        if slot.state() == InstanceState::Stopped {
            return Ok(());
        }
        let n = slot.name.clone();
        let rec = self.db(move |s| s.instance(&n)).await?;
        if rec.mode != Mode::Ephemeral {
            return Ok(());
        }
        Err(EngineError::invalid(
            format!(
                "instance `{}` is ephemeral: a {action} would delete it (it is deleted when it stops)",
                slot.name
            ),
            format!(
                "to start over, stop it (`mayfly stop {}`) and launch a new one (`mayfly launch {} --ephemeral`)",
                slot.name, rec.template
            ),
        ))
    }

    fn ensure_not_gone(&self, slot: &Arc<Slot>) -> Result<(), EngineError> {
        if lock(&self.slots).get(&slot.name).is_none() {
            return Err(EngineError::WrongState {
                name: slot.name.clone(),
                state: "gone",
                action: "start",
                hint: Some(
                    "an ephemeral instance is deleted when it stops: launch a new one".into(),
                ),
            });
        }
        Ok(())
    }

    /// Rolls an instance back to the clean template now: a running one is stopped, its
    /// writable layer discarded, and started again; a stopped one just loses its writable layer.
    pub async fn reset_instance(
        self: &Arc<Self>,
        name: &str,
        req: StopRequest,
    ) -> Result<InstanceInfo, EngineError> {
        check_stop_request(&req)?;
        let slot = self.slot(name)?;
        {
            let _guard = slot.acquire("reset").await?;
            self.settle(&slot).await;
            self.refuse_ephemeral_restart(&slot, "reset").await?;
            let was_running = slot.state() != InstanceState::Stopped;
            let journal = if was_running {
                Some(self.journal_restart(&slot.id).await?)
            } else {
                None
            };
            let reset = self.reset_locked(&slot, name, &req, was_running).await;
            if let Some(j) = journal {
                self.journal_end(j).await;
            }
            reset?;
            self.emit(
                Ev::new("instance.reset")
                    .on("instance", name)
                    .details(serde_json::json!({ "was_running": was_running })),
            );
        }
        self.instance_info(name).await
    }

    /// The body of [`Self::reset_instance`], with the instance's slot held.
    async fn reset_locked(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        name: &str,
        req: &StopRequest,
        was_running: bool,
    ) -> Result<(), EngineError> {
        if was_running {
            self.stop_locked(slot, req).await?;
            self.ensure_not_gone(slot)?;
        }
        let n = name.to_owned();
        let rec = self.db(move |s| s.instance(&n)).await?;
        self.discard_writable(&rec.id, rec.writable_gen).await?;
        // A restore or clone waiting for the next start is void too: clean means clean.
        if rec.next_run.is_some() || rec.writable_version.is_some() {
            let id = rec.id.clone();
            let generation = rec.writable_gen;
            self.db(move |s| s.set_writable(&id, generation, None, None, None))
                .await?;
        }
        if was_running {
            let max = self.config.log_max_bytes;
            self.start_locked(slot, InitStdio::Log { max_bytes: max }, false)
                .await?;
        }
        Ok(())
    }
}
