//! Per-instance runtime state and the end of a run.
//!
//! A slot serialises the actions that change an instance (its operation lock) and holds what
//! only the running daemon knows: the state, the init's pid, a pending exit, and who waits
//! for the end of the run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mayfly_api::{InstanceState, Mode};
use mayfly_driver::{ExitStatus, FailureKind};
use mayfly_store::ExitRecord;
use tokio::sync::{OwnedMutexGuard, oneshot};

use crate::events::Ev;
use crate::{Engine, EngineError, lock};

/// How long the end of a run waits for the group's usage figures (its OOM kills).
const USAGE_DEADLINE: Duration = Duration::from_secs(2);

/// What the daemon knows of a running (or ending) instance.
#[derive(Debug)]
pub(crate) struct Runtime {
    pub state: InstanceState,
    pub pid: Option<i32>,
    pub version: Option<u32>,
    pub started_at: Option<i64>,
    /// The init ended and the run is not settled yet (`Some(None)`: status unknown).
    pub pending_exit: Option<Option<ExitStatus>>,
    /// The action (holding the operation lock) that waits for the init to end.
    pub exit_waiter: Option<oneshot::Sender<()>>,
    /// Told how the run ended once it is settled (attached runs).
    pub watchers: Vec<oneshot::Sender<Option<ExitStatus>>>,
    /// What went wrong when the last run was cleaned up, if anything did (shown by `info`;
    /// the next start retries what failed, or fails with the reason).
    pub last_error: Option<String>,
    /// Start the instance again once this run ends: a restart, reset or restore was
    /// interrupted (by the end of a daemon) after it may have asked the run to stop. The
    /// journal entry that says so, closed once the start is done.
    pub restart_on_exit: Option<i64>,
    /// What mayfly did to the init during this run (how its end reads: `power.rs`).
    pub asked: crate::power::Asked,
    /// When the instance's latest reboots were (a reboot loop leaves it stopped).
    pub reboots: Vec<std::time::Instant>,
    /// Paused by its user (`state` stays `Running`; shown as `Paused`).
    pub paused: bool,
}

impl Runtime {
    /// The state `list` and `info` show: `paused` for a paused running instance.
    pub(crate) fn shown_state(&self) -> InstanceState {
        if self.paused && self.state == InstanceState::Running {
            InstanceState::Paused
        } else {
            self.state
        }
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            state: InstanceState::Stopped,
            pid: None,
            version: None,
            started_at: None,
            pending_exit: None,
            exit_waiter: None,
            watchers: Vec::new(),
            last_error: None,
            restart_on_exit: None,
            asked: crate::power::Asked::default(),
            reboots: Vec::new(),
            paused: false,
        }
    }
}

/// One instance's slot.
#[derive(Debug)]
pub(crate) struct Slot {
    pub id: String,
    pub name: String,
    op: Arc<tokio::sync::Mutex<()>>,
    op_name: Arc<Mutex<&'static str>>,
    pub rt: Arc<Mutex<Runtime>>,
}

impl Slot {
    pub(crate) fn new(id: &str, name: &str) -> Arc<Slot> {
        Arc::new(Slot {
            id: id.to_owned(),
            name: name.to_owned(),
            op: Arc::new(tokio::sync::Mutex::new(())),
            op_name: Arc::new(Mutex::new("")),
            rt: Arc::new(Mutex::new(Runtime::default())),
        })
    }

    /// The same instance under name `name` (a rename): the operation lock and the runtime
    /// state are shared with this slot.
    pub(crate) fn renamed(&self, name: &str) -> Arc<Slot> {
        Arc::new(Slot {
            id: self.id.clone(),
            name: name.to_owned(),
            op: self.op.clone(),
            op_name: self.op_name.clone(),
            rt: self.rt.clone(),
        })
    }

    pub(crate) fn state(&self) -> InstanceState {
        lock(&self.rt).state
    }

    /// Takes the operation lock for `operation`, waiting up to two seconds for a running
    /// action to finish; after that the caller gets a `busy` error naming that action.
    pub(crate) async fn acquire(
        &self,
        operation: &'static str,
    ) -> Result<OpGuard<'_>, EngineError> {
        match tokio::time::timeout(Duration::from_secs(2), self.op.clone().lock_owned()).await {
            Ok(guard) => {
                *lock(&self.op_name) = operation;
                Ok(OpGuard {
                    _guard: guard,
                    slot: self,
                })
            }
            Err(_) => Err(EngineError::Busy {
                name: self.name.clone(),
                operation: (*lock(&self.op_name)).to_owned(),
            }),
        }
    }

    /// Takes the operation lock however long it takes (internal settling).
    pub(crate) async fn acquire_wait(&self, operation: &'static str) -> OpGuard<'_> {
        let guard = self.op.clone().lock_owned().await;
        *lock(&self.op_name) = operation;
        OpGuard {
            _guard: guard,
            slot: self,
        }
    }
}

/// Proof that the holder has the slot's operation lock.
#[derive(Debug)]
pub(crate) struct OpGuard<'a> {
    _guard: OwnedMutexGuard<()>,
    slot: &'a Slot,
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        *lock(&self.slot.op_name) = "";
    }
}

/// Every instance's slot, by name and by id.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    by_name: HashMap<String, Arc<Slot>>,
    name_of: HashMap<String, String>,
}

impl Slots {
    pub(crate) fn get(&self, name: &str) -> Option<Arc<Slot>> {
        self.by_name.get(name).cloned()
    }

    pub(crate) fn by_id(&self, id: &str) -> Option<Arc<Slot>> {
        self.name_of
            .get(id)
            .and_then(|n| self.by_name.get(n))
            .cloned()
    }

    pub(crate) fn insert(&mut self, slot: Arc<Slot>) {
        self.name_of.insert(slot.id.clone(), slot.name.clone());
        self.by_name.insert(slot.name.clone(), slot);
    }

    /// Removes the slot of `slot`'s instance (found by id: it may have been renamed since
    /// the caller took `slot`).
    pub(crate) fn remove(&mut self, slot: &Slot) {
        if let Some(name) = self.name_of.remove(&slot.id) {
            self.by_name.remove(&name);
        }
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<Slot>> {
        self.by_name.values()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }
}

impl Engine {
    pub(crate) fn slot(&self, name: &str) -> Result<Arc<Slot>, EngineError> {
        lock(&self.slots).get(name).ok_or_else(|| {
            EngineError::Store(mayfly_store::StoreError::NotFound {
                kind: "instance",
                name: name.to_owned(),
            })
        })
    }

    /// A driver reported that instance `id`'s init ended.
    pub(crate) fn on_exit(self: &Arc<Self>, id: &str, status: Option<ExitStatus>) {
        if let Some(waiter) = lock(&self.build_waiters).remove(id) {
            let _ = waiter.send(status);
            return;
        }
        let Some(slot) = lock(&self.slots).by_id(id) else {
            // Not ours (any more): just make the driver forget it.
            let engine = self.clone();
            let id = id.to_owned();
            tokio::spawn(async move {
                let _ = engine.driver.release(&id).await;
            });
            return;
        };
        let mut rt = lock(&slot.rt);
        rt.pending_exit = Some(status);
        if rt.state == InstanceState::Running {
            rt.state = InstanceState::Stopping;
        }
        if let Some(waiter) = rt.exit_waiter.take()
            && waiter.send(()).is_ok()
        {
            // The action that waits holds the operation lock and settles the run itself.
            return;
        }
        // Nobody waits (or the action that did gave up): settle it here.
        drop(rt);
        let engine = self.clone();
        tokio::spawn(async move {
            let _guard = slot.acquire_wait("finish the run").await;
            engine.settle(&slot).await;
        });
    }

    /// Settles a pending exit, if there is one. The caller holds the operation lock.
    pub(crate) async fn settle(self: &Arc<Self>, slot: &Arc<Slot>) {
        let pending = lock(&slot.rt).pending_exit.take();
        if let Some(status) = pending {
            self.finish_run(slot, status).await;
        }
    }

    /// Ends a run: the driver forgets the instance, the mode decides what happens to the
    /// writable layer and the instance, watchers learn how it ended.
    ///
    /// Every path out of here leaves the instance settled (`stopped`, or gone) and wakes
    /// every watcher: a step that fails is recorded (the instance's `error`, the log) and the
    /// others still run. What failed is retried where it matters: a transient instance's
    /// next start discards its old layer again (and refuses to start on it), an ephemeral
    /// instance that could not be removed is removed at the daemon's next start.
    async fn finish_run(self: &Arc<Self>, slot: &Arc<Slot>, status: Option<ExitStatus>) {
        let mut errors: Vec<String> = Vec::new();
        let chain =
            |what: &str, e: &EngineError| format!("{what}: {}", mayfly_driver::error_chain(e));
        // A paused run is thawed first: frozen processes cannot be killed (cgroup v1) and
        // the group could not be emptied. Its OOM kills are read before the group goes.
        let thawed = lock(&slot.rt).paused;
        if thawed && let Err(e) = self.driver.freeze(&slot.id, false).await {
            errors.push(chain("thaw the paused instance", &EngineError::Driver(e)));
        }
        let oom_kills =
            match tokio::time::timeout(USAGE_DEADLINE, self.driver.usage(&slot.id)).await {
                Ok(Ok(u)) => u.oom_kills,
                _ => 0,
            };
        match self.driver.release(&slot.id).await {
            Err(e) if e.failure_kind() == Some(FailureKind::StillRunning) => {
                // A second report of a run that was settled already (a daemon that started
                // up while it ended learns of it from the forker's state and from its
                // event), arriving after the next run started: that run is not over.
                tracing::warn!(instance = %slot.name, "ignoring a late report of an earlier run's end");
                if thawed {
                    // That run is paused: it stays so.
                    let _ = self.driver.freeze(&slot.id, true).await;
                }
                let mut rt = lock(&slot.rt);
                if rt.state == InstanceState::Stopping && rt.pid.is_some() {
                    rt.state = InstanceState::Running;
                }
                return;
            }
            Err(e) if e.failure_kind() != Some(FailureKind::UnknownContainer) => {
                errors.push(chain("release", &EngineError::Driver(e)));
            }
            _ => {}
        }
        // The run's names, rules and host ends go first: nothing of a stopped instance
        // stays reachable.
        self.instance_net_down(&slot.id).await;
        let id = slot.id.clone();
        let rec = match crate::inject("finish-run:read") {
            Ok(()) => self.db(move |s| s.instance_by_id(&id)).await,
            Err(e) => Err(e),
        };
        let mut asked = std::mem::take(&mut lock(&slot.rt).asked);
        if let (Ok(rec), Some(st)) = (&rec, status)
            && asked == crate::power::Asked::default()
            && rec.restart_state.as_ref().is_some_and(|s| s.stop_requested)
        {
            // Asked to stop by a daemon that died before it saw the end.
            asked.signal = Some(st.signal.unwrap_or(libc::SIGTERM));
            asked.stopping = true;
        }
        let ending = status.map(|s| crate::power::ending(&s, asked));
        let exit = status.map(|s| ExitRecord {
            code: s.code,
            signal: s.signal,
            at: mayfly_store::now(),
            ending,
            oom_kills,
        });
        let exit_details = serde_json::json!({
            "code": status.map(|s| s.code),
            "signal": status.and_then(|s| s.signal),
            "ending": ending,
            "oom_kills": oom_kills,
        });
        let mut reboot = None;
        let mut judged = None;
        match rec {
            Err(e) => errors.push(chain("read the catalogue", &e)),
            Ok(rec) => {
                if ending == Some(mayfly_api::Ending::Rebooted) && rec.mode != Mode::Ephemeral {
                    // Before the run is recorded as ended: the journal entry starts it again
                    // even if the daemon dies in between.
                    match self.plan_reboot(slot).await {
                        Ok(journal) => reboot = journal,
                        Err(e) => errors.push(e),
                    }
                    crate::failpoint("reboot:journalled");
                }
                // Judged before the end is recorded, and recorded with it (one transaction).
                let again = reboot.is_some() || lock(&slot.rt).restart_on_exit.is_some();
                if !again && rec.mode != Mode::Ephemeral {
                    judged = self.judge_end(&rec, status, ending, mayfly_store::now());
                }
                let write = crate::restart_policy::restart_write(
                    judged.as_ref(),
                    rec.restart_state.as_ref(),
                );
                let result = match rec.mode {
                    Mode::Ephemeral => self.delete_instance(slot, &rec).await,
                    Mode::Transient => {
                        let discarded = match crate::inject("finish-run:discard") {
                            Ok(()) => self.discard_writable(&rec.id, rec.writable_gen).await,
                            Err(e) => Err(e),
                        };
                        if let Err(e) = discarded {
                            errors.push(chain("discard the writable layer", &e));
                        }
                        let id = rec.id.clone();
                        self.db(move |s| {
                            s.end_run(
                                &id,
                                Mode::Transient,
                                exit.as_ref(),
                                write.as_ref().map(|w| w.as_ref()),
                            )
                        })
                        .await
                    }
                    Mode::Persistent => {
                        let id = rec.id.clone();
                        self.db(move |s| {
                            s.end_run(
                                &id,
                                Mode::Persistent,
                                exit.as_ref(),
                                write.as_ref().map(|w| w.as_ref()),
                            )
                        })
                        .await
                    }
                };
                // The end and the policy's decision are recorded together: a daemon killed
                // here re-arms the restart at its next start.
                crate::failpoint("finish-run:recorded");
                if result.is_err() {
                    // Not recorded: nothing pending to follow (the next start-up judges the
                    // run the catalogue still holds).
                    judged = None;
                }
                if let Err(e) = result {
                    let what = match rec.mode {
                        Mode::Ephemeral => "remove the ephemeral instance",
                        _ => "record the end of the run",
                    };
                    errors.push(chain(what, &e));
                }
            }
        }
        let error = (!errors.is_empty()).then(|| errors.join("; "));
        if let Some(e) = &error {
            tracing::error!(instance = %slot.name, "cleaning up after the run failed: {e}");
        }
        if oom_kills > 0 {
            self.emit(
                Ev::new("instance.oom")
                    .on("instance", &slot.name)
                    .details(serde_json::json!({ "oom_kills": oom_kills })),
            );
        }
        let mut exit_event = Ev::new("instance.exit")
            .on("instance", &slot.name)
            .details(exit_details);
        if let Some(e) = &error {
            exit_event = exit_event.outcome(mayfly_api::Outcome::Failed {
                code: "internal".to_owned(),
                message: format!("cleaning up after the run failed: {e}"),
            });
        }
        self.emit(exit_event);
        let (watchers, again) = {
            let mut rt = lock(&slot.rt);
            rt.state = InstanceState::Stopped;
            rt.paused = false;
            rt.pid = None;
            rt.version = None;
            rt.started_at = None;
            rt.last_error = error;
            (
                std::mem::take(&mut rt.watchers),
                std::mem::take(&mut rt.restart_on_exit).or(reboot),
            )
        };
        if reboot.is_some() {
            tracing::info!(instance = %slot.name, "rebooted from inside: starting it again");
        }
        for w in watchers {
            let _ = w.send(status);
        }
        if again.is_none()
            && let Some(decision) = judged
        {
            // Settled and not started again anyway: its restart policy decided (recorded
            // with the end; a daemon killed before this point re-arms it at start-up).
            crate::failpoint("restart-policy:recorded");
            self.follow_decision(slot, decision);
        }
        if let Some(journal) = again {
            // By id: the instance may have been renamed since `slot` was taken.
            let current = lock(&self.slots).by_id(&slot.id).map(|s| s.name.clone());
            if let Some(name) = current {
                // After the operation lock is let go (the caller holds it now).
                let why = if reboot == Some(journal) {
                    "it was rebooted from inside"
                } else {
                    "a restart, reset or restore of it was interrupted"
                };
                tokio::spawn(start_again(self.clone(), name, journal, why));
            } else {
                self.journal_end(journal).await;
            }
        }
    }

    /// Removes an instance for good: catalogue row, then its directory (to the trash).
    pub(crate) async fn delete_instance(
        &self,
        slot: &Arc<Slot>,
        rec: &mayfly_store::InstanceRecord,
    ) -> Result<(), EngineError> {
        let (id, mode) = (rec.id.clone(), rec.mode);
        let (snapshots, channels) = self
            .db(move |s| {
                let snaps = s.snapshots(&id)?;
                let channels = s.channels_of(&id)?;
                s.delete_instance(&id, mode)?;
                Ok((snaps, channels))
            })
            .await?;
        lock(&self.slots).remove(slot);
        self.emit(
            Ev::new("instance.remove")
                .on("instance", &slot.name)
                .details(serde_json::json!({ "mode": rec.mode, "snapshots": snapshots.len() })),
        );
        // Its disk goes before its directory (a quota would stay on the project id; an
        // image's mount cannot be moved to the trash). Whatever its limit now: an image
        // stays until a start without a limit copies it out.
        self.release_disk(&rec.id).await;
        let mut dirs = vec![self.layout.instance_dir(&rec.id)];
        dirs.extend(snapshots.iter().map(|s| self.layout.snapshot_dir(&s.id)));
        dirs.extend(channels.iter().map(|c| self.layout.channel_dir(&c.name)));
        for dir in dirs {
            self.trash.discard(&dir)?;
        }
        Ok(())
    }
}

/// Starts instance `name` again after an interrupted restart (boxed: starting may end a run,
/// which may start one again, and the future's type must not contain itself).
fn start_again(
    engine: Arc<Engine>,
    name: String,
    journal: i64,
    why: &'static str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(async move {
        match engine.start_instance(&name).await {
            Ok(_) => tracing::warn!("started instance `{name}` again: {why}"),
            Err(e) => {
                tracing::error!("cannot start instance `{name}` again ({why}): {e}");
                if let Ok(slot) = engine.slot(&name) {
                    let mut rt = lock(&slot.rt);
                    if rt.state == InstanceState::Stopped {
                        rt.last_error = Some(format!("cannot start it again ({why}): {e}"));
                    }
                }
            }
        }
        engine.journal_end(journal).await;
    })
}

impl Engine {
    /// Drops an interrupted restart's wish to run again (the user stopped or removed the
    /// instance since), closing its journal entry.
    pub(crate) async fn forget_restart(&self, slot: &Slot) {
        let journal = lock(&slot.rt).restart_on_exit.take();
        if let Some(j) = journal {
            self.journal_end(j).await;
        }
    }
}
