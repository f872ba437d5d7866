//! Instance actions: create, start, stop, restart, reset, remove, attached runs, and what
//! `list`/`info` show (`exec` is in `exec.rs`).
//!
//! Rules, in one place:
//! - `start` needs a stopped instance; a transient or ephemeral one always starts from a
//!   fresh writable layer, a persistent one keeps its own.
//! - `stop` sends the template's stop signal, waits `timeout`, then kills everything; it
//!   returns once the run is settled (for an ephemeral instance: once it is gone).
//! - `reset` brings an instance back to the clean template now: a running one is stopped,
//!   its writable layer discarded, and started again.
//! - `rm` refuses a running instance unless forced.
//! - A launch that cannot start leaves nothing behind.
//! - A stop that fails leaves the instance running, not stopping; the end of a run always
//!   settles it (see `slot.rs`).

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use mayfly_api::names::{TemplateRef, check_instance_name};
use mayfly_api::{
    CreateInstance, ExitInfo, InstanceInfo, InstanceState, Isolation, Mode, StopRequest,
};
use mayfly_driver::{ExitStatus, IdMap, InitStdio, InstanceSpec, ProcessSpec};
use mayfly_store::{ID_RANGE, InstanceConfig, InstanceRecord, RunRecord};
use tokio::sync::oneshot;

use crate::error::from_driver;
use crate::slot::Slot;
use crate::{Engine, EngineError, lock, process};

/// Default grace period between the stop signal and SIGKILL.
const DEFAULT_STOP_TIMEOUT: u64 = 10;

/// An attached run: the instance's name and how its run will end.
#[derive(Debug)]
pub struct RunHandle {
    /// Instance name.
    pub name: String,
    /// Resolves once the run is settled (the ephemeral instance is gone); `None` if the
    /// status could not be collected.
    pub exit: oneshot::Receiver<Option<ExitStatus>>,
}

pub(crate) fn wrong_state(slot: &Slot, state: InstanceState, action: &'static str) -> EngineError {
    let hint = match state {
        InstanceState::Running => Some(format!("stop it first with `mayfly stop {}`", slot.name)),
        InstanceState::Stopped => Some(format!("start it with `mayfly start {}`", slot.name)),
        _ => Some("wait for it to finish, then retry".to_owned()),
    };
    EngineError::WrongState {
        name: slot.name.clone(),
        state: state.as_str(),
        action,
        hint,
    }
}

/// Whether process `pid` has a handler for signal `sig` (`SigCgt` in /proc/<pid>/status).
/// Unknown (unreadable) counts as yes.
fn catches(pid: i32, sig: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let Some(mask) = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
    else {
        return true;
    };
    (1..=64).contains(&sig) && mask & (1u64 << (sig - 1)) != 0
}

impl Engine {
    // ---- queries -----------------------------------------------------------------------

    fn info_of(&self, rec: &InstanceRecord, writable_bytes: Option<u64>) -> InstanceInfo {
        let (state, pid, version, started_at, error) = match lock(&self.slots).get(&rec.name) {
            Some(slot) => {
                let rt = lock(&slot.rt);
                (
                    rt.state,
                    rt.pid,
                    rt.version,
                    rt.started_at,
                    rt.last_error.clone(),
                )
            }
            None => (InstanceState::Stopped, None, None, None, None),
        };
        InstanceInfo {
            id: rec.id.clone(),
            name: rec.name.clone(),
            template: rec.template.clone(),
            pinned_version: rec.pinned_version,
            running_version: version,
            mode: rec.mode,
            state,
            pid,
            command: rec.config.command.clone(),
            apps: rec.config.apps.clone(),
            env: rec.config.env.clone(),
            created_at: crate::rfc3339(rec.created_at),
            started_at: started_at.map(crate::rfc3339),
            last_exit: rec.last_exit.as_ref().map(|e| ExitInfo {
                code: e.code,
                signal: e.signal,
                at: Some(crate::rfc3339(e.at)),
            }),
            isolation: Isolation {
                user_namespace: rec.id_base.is_some(),
                host_id_base: rec.id_base,
                host_id_count: rec.id_base.map(|_| ID_RANGE),
            },
            writable_bytes,
            error,
        }
    }

    /// Every instance.
    pub async fn list_instances(&self) -> Result<Vec<InstanceInfo>, EngineError> {
        let recs = self.db(|s| s.instances()).await?;
        Ok(recs.iter().map(|r| self.info_of(r, None)).collect())
    }

    /// One instance, with the size of its writable layer.
    pub async fn instance_info(&self, name: &str) -> Result<InstanceInfo, EngineError> {
        let n = name.to_owned();
        let rec = self.db(move |s| s.instance(&n)).await?;
        let upper = self.layout.writable_dir(&rec.id, rec.writable_gen);
        let bytes = self
            .blocking(move || {
                Ok(match mayfly_image::tree_stats(&upper) {
                    Ok(stats) => Some(stats.bytes),
                    Err(_) => None,
                })
            })
            .await?;
        Ok(self.info_of(&rec, bytes))
    }

    // ---- create ------------------------------------------------------------------------

    /// Creates an instance and (unless `start` is false) starts it with its output going to
    /// its console log. A launch that cannot start is undone.
    pub async fn create_instance(
        self: &Arc<Self>,
        req: CreateInstance,
    ) -> Result<InstanceInfo, EngineError> {
        let start = req.start;
        let slot = self.create_record(&req).await?;
        if start {
            let guard = slot.acquire("start").await?;
            let max = self.config.log_max_bytes;
            if let Err(e) = self
                .start_locked(&slot, InitStdio::Log { max_bytes: max }, false)
                .await
            {
                drop(guard);
                self.undo_create(&slot).await;
                return Err(e);
            }
        }
        self.instance_info(&slot.name).await
    }

    /// Creates an instance whose init uses `fds` as its stdio (one terminal when `req.tty`),
    /// starts it, and returns a handle that resolves once the run has ended and is settled
    /// (for an ephemeral instance, the `run --rm` case: once it is gone).
    pub async fn run_attached(
        self: &Arc<Self>,
        req: CreateInstance,
        fds: Vec<OwnedFd>,
    ) -> Result<RunHandle, EngineError> {
        let slot = self.create_record(&req).await?;
        let (tx, rx) = oneshot::channel();
        lock(&slot.rt).watchers.push(tx);
        let guard = slot.acquire("start").await?;
        if let Err(e) = self
            .start_locked(&slot, InitStdio::Passed(fds), req.tty)
            .await
        {
            drop(guard);
            self.undo_create(&slot).await;
            return Err(e);
        }
        Ok(RunHandle {
            name: slot.name.clone(),
            exit: rx,
        })
    }

    async fn undo_create(self: &Arc<Self>, slot: &Arc<Slot>) {
        let name = slot.name.clone();
        if let Ok(rec) = self.db(move |s| s.instance(&name)).await
            && let Err(e) = self.delete_instance(slot, &rec).await
        {
            tracing::error!(instance = %slot.name, "cannot undo a failed launch: {}", mayfly_driver::error_chain(&e));
        }
    }

    async fn create_record(
        self: &Arc<Self>,
        req: &CreateInstance,
    ) -> Result<Arc<Slot>, EngineError> {
        let tref = TemplateRef::parse(&req.template).map_err(|e| {
            EngineError::invalid(e, "use NAME or NAME@VERSION, e.g. `busybox` or `busybox@1`")
        })?;
        process::check_env(&req.env)
            .map_err(|e| EngineError::invalid(e, "e.g. `--env LANG=C.UTF-8`"))?;
        process::check_size(&req.command, &req.env, req.workdir.as_deref())?;
        if let Some(w) = &req.workdir
            && !w.starts_with('/')
        {
            return Err(EngineError::invalid(
                format!("invalid working directory `{w}`: it must be an absolute path"),
                "e.g. `--workdir /srv`",
            ));
        }
        if req.command.iter().any(|a| a.contains('\0')) {
            return Err(EngineError::invalid(
                "the command contains a NUL byte",
                "remove it",
            ));
        }
        let tname = tref.name.clone();
        let template = self.db(move |s| s.template(&tname)).await?;
        let version = match tref.version {
            Some(v) => v,
            None => self.follow_version(&template, &req.apps).await?,
        };
        let Some(vrec) = template.version(version) else {
            return Err(EngineError::invalid(
                format!("template `{}` has no version {version}", tref.name),
                format!("see its versions with `mayfly template info {}`", tref.name),
            ));
        };
        if !req.apps.is_empty() {
            self.check_apps(&tref.name, vrec, &req.apps, req.ordered_apps)
                .await?;
        }
        if req.command.is_empty() && vrec.config.command.is_empty() {
            return Err(EngineError::invalid(
                format!("template `{}` has no default command", tref.name),
                "give the command after `--`, e.g. `mayfly launch TEMPLATE -- /bin/sh -c 'sleep infinity'`",
            ));
        }
        let name = match &req.name {
            Some(n) => {
                check_instance_name(n)
                    .map_err(|e| EngineError::invalid(e, "e.g. `--name web-1`"))?;
                n.clone()
            }
            None => self.generate_name(&tref.name),
        };
        let mut rec = InstanceRecord {
            id: crate::random_hex(8),
            name,
            template: tref.name.clone(),
            pinned_version: tref.version,
            mode: req.mode,
            config: InstanceConfig {
                command: req.command.clone(),
                env: req.env.clone(),
                workdir: req.workdir.clone(),
                apps: req.apps.clone(),
                ordered_apps: req.ordered_apps,
            },
            id_base: None,
            created_at: mayfly_store::now(),
            run: None,
            last_exit: None,
            writable_gen: 1,
            writable_version: None,
            layer_since: None,
            next_run: None,
        };
        let dir = self.layout.instance_dir(&rec.id);
        self.blocking({
            let dir = dir.clone();
            move || {
                std::fs::create_dir(&dir).map_err(|source| EngineError::Io {
                    action: "create",
                    path: dir.clone(),
                    source,
                })
            }
        })
        .await?;
        let want_ids = self.userns_off.is_none();
        let inserted = {
            let mut r = rec.clone();
            let res = self
                .db(move |s| {
                    s.insert_instance(&mut r, want_ids)?;
                    Ok(r)
                })
                .await;
            res.map(|r| rec = r)
        };
        if let Err(e) = inserted {
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
        let slot = Slot::new(&rec.id, &rec.name);
        lock(&self.slots).insert(slot.clone());
        Ok(slot)
    }

    fn generate_name(&self, template: &str) -> String {
        let mut base: String = template
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        if !base.starts_with(|c: char| c.is_ascii_lowercase()) {
            base.insert_str(0, "i-");
        }
        let base = base.trim_end_matches('-').to_owned();
        loop {
            let name = format!("{base}-{}", crate::random_hex(2));
            if lock(&self.slots).get(&name).is_none() {
                return name;
            }
        }
    }

    // ---- start -------------------------------------------------------------------------

    /// Starts a stopped instance.
    pub async fn start_instance(self: &Arc<Self>, name: &str) -> Result<InstanceInfo, EngineError> {
        let slot = self.slot(name)?;
        {
            let _guard = slot.acquire("start").await?;
            self.settle(&slot).await;
            let max = self.config.log_max_bytes;
            self.start_locked(&slot, InitStdio::Log { max_bytes: max }, false)
                .await?;
        }
        self.instance_info(name).await
    }

    /// Starts the instance of `slot`; the caller holds its operation lock.
    pub(crate) async fn start_locked(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        stdio: InitStdio,
        tty: bool,
    ) -> Result<(), EngineError> {
        let state = slot.state();
        if state != InstanceState::Stopped {
            return Err(wrong_state(slot, state, "start"));
        }
        let name = slot.name.clone();
        let rec = self.db(move |s| s.instance(&name)).await?;
        let tname = rec.template.clone();
        let template = self.db(move |s| s.template(&tname)).await?;
        let next = rec.next_run.clone().unwrap_or_default();
        // A follower takes the current version, unless its applications hold it back.
        let version = match next.version.or(rec.pinned_version) {
            Some(v) => v,
            None => self.follow_version(&template, &rec.config.apps).await?,
        };
        let vrec = template.version(version).ok_or_else(|| {
            EngineError::invalid(
                format!(
                    "version {version} of template `{}` no longer exists",
                    rec.template
                ),
                "recreate the instance from an existing version",
            )
        })?;
        let args = if rec.config.command.is_empty() {
            vrec.config.command.clone()
        } else {
            rec.config.command.clone()
        };
        let process = ProcessSpec {
            args,
            env: process::environment(&rec.name, tty, &[&vrec.config.env, &rec.config.env]),
            cwd: rec
                .config
                .workdir
                .clone()
                .or_else(|| Some(vrec.config.workdir.clone()))
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| "/".to_owned()),
            uid: 0,
            gid: 0,
            tty,
        };
        let (mut layers, apps) = self
            .stack_with_apps(
                &rec.template,
                vrec,
                &rec.config.apps,
                rec.config.ordered_apps,
                &self.layout.instance_dir(&rec.id),
            )
            .await?;
        let network = mayfly_driver::NetworkMode::Isolated;
        let files = self
            .etc_files(
                self.layout.instance_dir(&rec.id),
                rec.name.clone(),
                network,
                layers.clone(),
            )
            .await?;
        layers.extend(files.mount_points);
        let spec = InstanceSpec {
            id: rec.id.clone(),
            hostname: rec.name.clone(),
            layers,
            instance_dir: self.layout.instance_dir(&rec.id),
            writable: self.layout.writable_dir(&rec.id, rec.writable_gen),
            new_identity: next.new_identity,
            network,
            binds: files.binds,
            idmap: rec.id_base.map(|host_base| IdMap {
                host_base,
                count: ID_RANGE,
            }),
            process,
        };
        lock(&slot.rt).state = InstanceState::Starting;
        let result = self.start_spec(&rec, spec, stdio, version, apps).await;
        let mut rt = lock(&slot.rt);
        match result {
            Ok(run) => {
                rt.state = InstanceState::Running;
                rt.pid = Some(run.pid);
                rt.version = Some(version);
                rt.started_at = Some(run.started_at);
                rt.last_error = None;
                Ok(())
            }
            Err(e) => {
                rt.state = InstanceState::Stopped;
                Err(e)
            }
        }
    }

    async fn start_spec(
        self: &Arc<Self>,
        rec: &InstanceRecord,
        spec: InstanceSpec,
        stdio: InitStdio,
        version: u32,
        apps: Vec<(String, u32)>,
    ) -> Result<RunRecord, EngineError> {
        let keep = rec.next_run.as_ref().is_some_and(|n| n.keep_writable);
        if rec.mode != Mode::Persistent && !keep {
            self.discard_writable(&rec.id, rec.writable_gen).await?;
        }
        self.prepare_writable(&spec).await?;
        let started = self.driver.start(spec, stdio).await.map_err(from_driver)?;
        let run = RunRecord {
            pid: started.pid,
            start_time: started.start_time,
            boot_id: self.boot_id.clone(),
            version,
            started_at: mayfly_store::now(),
            apps,
        };
        let (id, mode, r) = (rec.id.clone(), rec.mode, run.clone());
        if let Err(e) = self.db(move |s| s.record_start(&id, mode, &r)).await {
            // Without the record a restarted daemon could not find it again: do not leave
            // it running unrecorded.
            let _ = self.driver.kill(&rec.id).await;
            return Err(e);
        }
        Ok(run)
    }

    // ---- stop, restart, reset -----------------------------------------------------------

    /// Stops a running instance (see the module rules).
    pub async fn stop_instance(
        self: &Arc<Self>,
        name: &str,
        req: StopRequest,
    ) -> Result<(), EngineError> {
        let slot = self.slot(name)?;
        let _guard = slot.acquire("stop").await?;
        // A stop asked for now wins over an interrupted restart's wish to run again.
        self.forget_restart(&slot).await;
        self.stop_locked(&slot, &req).await
    }

    pub(crate) async fn stop_locked(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        req: &StopRequest,
    ) -> Result<(), EngineError> {
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
                {
                    let mut rt = lock(&slot.rt);
                    rt.exit_waiter = None;
                    if rt.pending_exit.is_none() && rt.state == InstanceState::Stopping {
                        rt.state = InstanceState::Running;
                    }
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
        let pid = lock(&slot.rt).pid;
        let signal = signal.filter(|sig| pid.is_none_or(|p| catches(p, *sig)));
        let graceful = match signal {
            Some(sig) => match self.driver.signal(&slot.id, sig).await {
                Err(e) if !gone(&e) => return Err(EngineError::Driver(e)),
                _ => {
                    crate::failpoint("stop:signalled");
                    tokio::time::timeout(timeout, &mut ended).await.is_ok()
                }
            },
            None => false,
        };
        if graceful {
            return Ok(());
        }
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
        let slot = self.slot(name)?;
        {
            let _guard = slot.acquire("restart").await?;
            let mut journal = None;
            let stopped = if slot.state() != InstanceState::Stopped {
                journal = Some(self.journal_restart(&slot.id).await?);
                self.stop_locked(&slot, &req).await
            } else {
                Ok(())
            };
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
        }
        self.instance_info(name).await
    }

    fn ensure_not_gone(&self, slot: &Arc<Slot>) -> Result<(), EngineError> {
        if lock(&self.slots).get(&slot.name).is_none() {
            return Err(EngineError::WrongState {
                name: slot.name.clone(),
                state: "gone",
                action: "start",
                hint: Some("an ephemeral instance is removed when it stops".into()),
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
        let slot = self.slot(name)?;
        {
            let _guard = slot.acquire("reset").await?;
            self.settle(&slot).await;
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

    /// Has the driver prepare the writable layer and scratch space of `spec` (the old
    /// scratch space goes to the trash, which is woken to empty it).
    pub(crate) async fn prepare_writable(
        self: &Arc<Self>,
        spec: &InstanceSpec,
    ) -> Result<(), EngineError> {
        let engine = self.clone();
        let spec = spec.clone();
        let prepared = self
            .blocking(move || {
                engine
                    .driver
                    .prepare_writable(&spec, engine.trash.dir())
                    .map_err(EngineError::Driver)
            })
            .await;
        self.trash.wake();
        prepared
    }

    /// Moves generation `generation` of instance `id`'s writable layer to the trash.
    pub(crate) async fn discard_writable(
        &self,
        id: &str,
        generation: u64,
    ) -> Result<(), EngineError> {
        self.trash
            .discard(&self.layout.writable_dir(id, generation))
    }

    // ---- remove ------------------------------------------------------------------------

    /// Deletes an instance; a running one only with `force` (it is killed first), one with
    /// snapshots only with `with_snapshots` (they go too).
    pub async fn remove_instance(
        self: &Arc<Self>,
        name: &str,
        force: bool,
        with_snapshots: bool,
    ) -> Result<(), EngineError> {
        let slot = self.slot(name)?;
        let _guard = slot.acquire("remove").await?;
        self.forget_restart(&slot).await;
        self.settle(&slot).await;
        if lock(&self.slots).get(name).is_none() {
            return Ok(()); // an ephemeral instance removed itself meanwhile
        }
        if !with_snapshots {
            let id = slot.id.clone();
            let snapshots = self.db(move |s| s.snapshots(&id)).await?;
            if !snapshots.is_empty() {
                return Err(EngineError::HasSnapshots {
                    name: name.to_owned(),
                    snapshots: snapshots.into_iter().map(|s| s.name).collect(),
                });
            }
        }
        let state = slot.state();
        if state != InstanceState::Stopped {
            if !force {
                return Err(EngineError::WrongState {
                    name: name.to_owned(),
                    state: state.as_str(),
                    action: "remove",
                    hint: Some(format!("stop it first, or use `mayfly rm --force {name}`")),
                });
            }
            self.stop_locked(
                &slot,
                &StopRequest {
                    timeout: Some(0),
                    force: true,
                },
            )
            .await?;
            if lock(&self.slots).get(name).is_none() {
                return Ok(());
            }
        }
        let n = name.to_owned();
        let rec = self.db(move |s| s.instance(&n)).await?;
        self.delete_instance(&slot, &rec).await
    }
}
