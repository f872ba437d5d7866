//! Instance actions: create, start, remove and attached runs (`stop`, `restart` and
//! `reset` are in `stop.rs`, `exec` in `exec.rs`, what `list` and `info` show in
//! `instance_view.rs`).
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
//! - Launch and start check the instance's effective limits against the host and admit its
//!   memory reservation (`resources/`); a paused instance is still `running` here (shown as
//!   `paused`), and what each action does with it is in `resources/pause.rs`.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use mayfly_api::names::{TemplateRef, check_instance_name};
use mayfly_api::{CreateInstance, InstanceInfo, InstanceState, Mode, StopRequest};
use mayfly_driver::{ExitStatus, IdMap, InitStdio, InstanceSpec, ProcessSpec};
use mayfly_store::{ID_RANGE, InstanceConfig, InstanceRecord, RunRecord};
use tokio::sync::oneshot;

use crate::error::from_driver;
use crate::slot::Slot;
use crate::{Engine, EngineError, lock, process};

/// An attached run: the instance's name and id, and how its run will end.
#[derive(Debug)]
pub struct RunHandle {
    /// Instance name.
    pub name: String,
    /// Instance id: what to follow (a later instance may take the name).
    pub id: String,
    /// Resolves once the run is settled (the ephemeral instance is gone); `None` if the
    /// status could not be collected.
    pub exit: oneshot::Receiver<Option<ExitStatus>>,
}

/// The refusal of `action` on an instance in `state`, with a hint that fits both: what to do
/// first so that this action can work.
pub(crate) fn wrong_state(slot: &Slot, state: InstanceState, action: &'static str) -> EngineError {
    let name = &slot.name;
    let hint = match (state, action) {
        (InstanceState::Stopped, _) => {
            format!("start it first (`mayfly start {name}`), then {action} again")
        }
        (InstanceState::Running, _) => {
            format!("stop it first (`mayfly stop {name}`), then {action} again")
        }
        (InstanceState::Paused, _) => {
            format!("it is paused: resume it first (`mayfly resume {name}`), then {action} again")
        }
        (InstanceState::Starting, _) => {
            format!("it is starting: retry once `mayfly info {name}` says running")
        }
        (InstanceState::Stopping, "start") => {
            format!("it is stopping: retry once `mayfly info {name}` says stopped")
        }
        (InstanceState::Stopping, _) => format!(
            "it is stopping: start it again (`mayfly start {name}`) once `mayfly info {name}` says stopped"
        ),
    };
    EngineError::WrongState {
        name: name.clone(),
        state: state.as_str(),
        action,
        hint: Some(hint),
    }
}

/// The note of a `start` that found nothing to do (a `stop`'s are in `stop.rs`).
const ALREADY_RUNNING: &str = "already running";

impl Engine {
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
            id: slot.id.clone(),
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
        let words: Vec<String> = req
            .entrypoint
            .iter()
            .flatten()
            .chain(&req.command)
            .cloned()
            .collect();
        process::check_size(&words, &req.env, req.workdir.as_deref())?;
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
        let user_data = crate::user_data::check_request(req)?;
        crate::restart_policy::check_policy(req.mode, req.restart)?;
        crate::schedules::check_mode(req.mode, req.reset_at.is_some())?;
        let reset_cron = req
            .reset_at
            .as_deref()
            .map(crate::schedules::daily_at)
            .transpose()?;
        let volumes = self.check_volume_mounts(&req.volumes).await?;
        let mut config = InstanceConfig {
            command: req.command.clone(),
            entrypoint: req.entrypoint.clone(),
            user: req.user.clone(),
            env: req.env.clone(),
            workdir: req.workdir.clone(),
            apps: req.apps.clone(),
            ordered_apps: req.ordered_apps,
            init: req.init,
            networks: Vec::new(),
            publish: req.publish.clone(),
            flavor: None,
            limits: mayfly_api::Limits::default(),
            volumes,
            meta: req.meta.clone(),
            user_data: user_data.as_ref().map(|(summary, _)| summary.clone()),
            restart: req.restart,
        };
        process::check_overrides(&config)?;
        // Checked before anything is looked up, made (the default network) last.
        let wanted = crate::network::resolve_networks(req.networks.as_deref())?;
        crate::network::check_publish(&req.publish, &wanted, &[])?;
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
        let (init_args, _) = process::init_process(&tref.name, &vrec.config, &config)?;
        self.check_user_data_for(vrec, user_data.as_ref(), &init_args)?;
        // Limits: the flavor (the request's, else the template's), own limits over it; all
        // checked against this host before anything is made.
        let (flavor, own) =
            crate::resources::launch_settings(req.flavor.as_deref(), &req.limits, &vrec.config);
        // Held until the record names the flavor (a removal waits for it).
        let _flavor_gate = self.flavor_gate.read().await;
        let flavor_limits = match &flavor {
            Some(f) => Some(self.flavor_limits(f)?),
            None => None,
        };
        self.check_limits_here(&crate::resources::resolve(flavor_limits.as_ref(), &own))?;
        config.flavor = flavor;
        config.limits = own;
        config.networks = self.networks_for_instance(req.networks.as_deref()).await?;
        if req.limits.net_rate.is_some() && config.networks.is_empty() {
            return Err(EngineError::invalid(
                "--net-rate limits network interfaces, and this instance has none (--network none)",
                "leave --net-rate out, or give the instance a network (`--network NAME`)",
            ));
        }
        self.check_instance_publish(&req.publish, &config.networks)
            .await?;
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
            config,
            id_base: None,
            created_at: mayfly_store::now(),
            run: None,
            last_exit: None,
            writable_gen: 1,
            writable_version: None,
            layer_since: None,
            next_run: None,
            paused: false,
            restart_state: None,
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
        // A reset schedule begins at the scheduler's "now" (a test clock too).
        let sched_now = self.clock.now();
        let scheduled = reset_cron.is_some();
        let inserted = {
            let mut r = rec.clone();
            let data = user_data.map(|(_, bytes)| bytes);
            let res = self
                .db(move |s| {
                    s.insert_instance(&mut r, want_ids)?;
                    if let Some(data) = &data {
                        s.set_user_data(&r.id, Some(data))?;
                    }
                    if let Some(cron) = &reset_cron {
                        let reset = mayfly_api::ScheduleAction::Reset;
                        s.add_schedule_at(&r.id, reset, cron, None, sched_now)?;
                    }
                    Ok(r)
                })
                .await;
            res.map(|r| rec = r)
        };
        if inserted.is_ok() && scheduled {
            self.scheduler.wake.notify_one();
        }
        if let Err(e) = inserted {
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
        let slot = Slot::new(&rec.id, &rec.name);
        lock(&self.slots).insert(slot.clone());
        self.emit(
            crate::events::Ev::new("instance.create")
                .on("instance", &rec.name)
                .details(serde_json::json!({
                    "id": rec.id,
                    "template": rec.template,
                    "pinned_version": rec.pinned_version,
                    "mode": rec.mode,
                })),
        );
        Ok(slot)
    }

    /// A free name for an instance of `template`: its name and six random hex digits (16
    /// million of them, so that a name a script saw is practically never given to a later
    /// instance; clients follow an instance by id all the same).
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
            let name = format!("{base}-{}", crate::random_hex(3));
            if lock(&self.slots).get(&name).is_none() {
                return name;
            }
        }
    }

    // ---- start -------------------------------------------------------------------------

    /// Starts a stopped instance; a running one is left alone, and the answer's `note` says
    /// it was already running.
    pub async fn start_instance(self: &Arc<Self>, name: &str) -> Result<InstanceInfo, EngineError> {
        let slot = self.slot(name)?;
        let note = {
            let _guard = slot.acquire("start").await?;
            self.settle(&slot).await;
            // An explicit start ends a restart policy's row (and its pending restart).
            self.cancel_restart(&slot).await;
            if slot.state() == InstanceState::Running {
                Some(ALREADY_RUNNING)
            } else {
                let max = self.config.log_max_bytes;
                self.start_locked(&slot, InitStdio::Log { max_bytes: max }, false)
                    .await?;
                None
            }
        };
        let mut info = self.instance_info(name).await?;
        info.note = note.map(str::to_owned);
        Ok(info)
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
        let (args, user) = process::init_process(&rec.template, &vrec.config, &rec.config)?;
        // The host may have changed since the launch (or the daemon's flags): checked again.
        if let Some(f) = &rec.config.flavor {
            // Its limits must be known (a flavor cannot be removed while used; never run
            // without them).
            self.flavor_limits(f)?;
        }
        let limits = self.effective_limits(&rec);
        self.check_limits_here(&limits)?;
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
            user,
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
        let interfaces = self.interfaces_of(&rec.id).await?;
        let extras = self
            .user_data_start(crate::user_data::StartContext {
                rec: &rec,
                version,
                boots_init: mayfly_driver::boots_init(&process.args),
                layers: &layers,
                limits: &limits,
                interfaces: &interfaces,
            })
            .await?;
        let files = self
            .etc_files(
                self.layout.instance_dir(&rec.id),
                extras.hostname.clone().unwrap_or_else(|| rec.name.clone()),
                network,
                layers.clone(),
                crate::etc_files::EtcNet::of(&interfaces),
                // Where its volumes and the NoCloud seed are mounted: made in the mount-point
                // layer when the template lacks them, never in the writable layer.
                rec.config
                    .volumes
                    .iter()
                    .map(|v| v.path.clone())
                    .chain(extras.mount_dirs())
                    .collect(),
            )
            .await?;
        let id = rec.id.clone();
        let channels = self.db(move |s| s.channels_of(&id)).await?;
        let mut binds = files.binds;
        binds.extend(crate::network::channel_binds(
            &self.layout,
            &rec.id,
            &channels,
        ));
        binds.extend(self.volume_binds(&rec).await?);
        layers.extend(files.mount_points);
        let channel_layer = {
            let dir = self.layout.instance_dir(&rec.id);
            let stack = layers.clone();
            let names: Vec<String> = channels.iter().map(|c| c.name.clone()).collect();
            self.blocking(move || crate::network::channel_layer(&dir, &stack, &names))
                .await?
        };
        layers.extend(channel_layer);
        // systemd's Container Interface: the container's UUID beside `container=mayfly`, for
        // the init (exec'd processes do not need it).
        let mut process = process;
        if !process.env.iter().any(|e| e.starts_with("container_uuid=")) {
            process.env.push(format!(
                "container_uuid={}",
                crate::etc_files::as_uuid(&files.machine_id)
            ));
        }
        let mut spec = InstanceSpec {
            id: rec.id.clone(),
            hostname: rec.name.clone(),
            layers,
            instance_dir: self.layout.instance_dir(&rec.id),
            writable: self.layout.writable_dir(&rec.id, rec.writable_gen),
            new_identity: next.new_identity,
            network,
            binds,
            idmap: rec.id_base.map(|host_base| IdMap {
                host_base,
                count: ID_RANGE,
            }),
            process,
            init: rec.config.init,
            interfaces,
            limits: limits.clone(),
            user_data: None,
        };
        extras.apply(&mut spec);
        {
            // Admitted and `starting` under one lock: from then on its reservation counts.
            let _admission = self.admission.lock().await;
            self.admit(slot, limits.memory_reserve).await?;
            lock(&slot.rt).state = InstanceState::Starting;
        }
        // The firewall knows the instance's interfaces and forwards before the driver
        // creates them; a start that fails takes them out again.
        let result = match self.instance_net_up(&rec).await {
            Ok(_) => {
                let r = match crate::inject("start:networked") {
                    Ok(()) => self.start_spec(&rec, spec, stdio, version, apps).await,
                    Err(e) => Err(e),
                };
                match &r {
                    Ok(_) => {
                        if let Err(e) = self.instance_net_started(&rec.id).await {
                            tracing::error!(instance = %rec.name, "cannot publish its name: {e}");
                        }
                    }
                    Err(_) => self.instance_net_down(&rec.id).await,
                }
                r
            }
            Err(e) => Err(e),
        };
        let mut rt = lock(&slot.rt);
        match result {
            Ok(run) => {
                rt.state = InstanceState::Running;
                rt.pid = Some(run.pid);
                rt.version = Some(version);
                rt.started_at = Some(run.started_at);
                rt.last_error = None;
                drop(rt);
                self.emit(
                    crate::events::Ev::new("instance.start")
                        .on("instance", &slot.name)
                        .details(serde_json::json!({ "version": version, "pid": run.pid })),
                );
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
        if let Some(bytes) = spec.limits.disk {
            self.apply_disk_quota(&rec.id, bytes).await?;
        } else {
            // A limit dropped while it ran may still hold: a disk image is copied out only
            // while the instance is stopped. A no-op where there is none.
            self.lift_disk_quota(&rec.id).await;
        }
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
            self.note_signal(&rec.id, None);
            let _ = self.driver.kill(&rec.id).await;
            return Err(e);
        }
        // A stop request was for the run before (a restart or reset stops and starts).
        if rec.restart_state.as_ref().is_some_and(|s| s.stop_requested) {
            self.clear_stop_requested(&rec.id).await;
        }
        Ok(run)
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
        self.cancel_restart(&slot).await;
        self.settle(&slot).await;
        if lock(&self.slots).get(name).is_none() {
            return Ok(()); // an ephemeral instance removed itself meanwhile
        }
        // The settle may have judged an unasked end and armed a restart: the rm wins.
        self.cancel_restart(&slot).await;
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
                    signal: None,
                },
            )
            .await?;
            if lock(&self.slots).get(name).is_none() {
                return Ok(());
            }
            self.cancel_restart(&slot).await;
        }
        let n = name.to_owned();
        let rec = self.db(move |s| s.instance(&n)).await?;
        self.delete_instance(&slot, &rec).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_hints_what_to_do_first_for_that_action() {
        let slot = Slot::new("0123456789abcdef", "web");
        let hint = |state, action| match wrong_state(&slot, state, action) {
            EngineError::WrongState { hint, .. } => hint.unwrap_or_default(),
            other => panic!("not a state refusal: {other}"),
        };
        // Stopped: start it first, never "stop it".
        let h = hint(InstanceState::Stopped, "exec");
        assert!(h.contains("mayfly start web") && h.contains("exec"), "{h}");
        assert!(!h.contains("mayfly stop"), "{h}");
        // Running: stop it first, never "start it".
        let h = hint(InstanceState::Running, "publish");
        assert!(
            h.contains("mayfly stop web") && !h.contains("mayfly start"),
            "{h}"
        );
        // In between: wait for the state the action needs.
        let h = hint(InstanceState::Starting, "exec");
        assert!(h.contains("says running"), "{h}");
        let h = hint(InstanceState::Stopping, "start");
        assert!(
            h.contains("says stopped") && !h.contains("mayfly start"),
            "{h}"
        );
        let h = hint(InstanceState::Stopping, "exec");
        assert!(
            h.contains("says stopped") && h.contains("mayfly start web"),
            "{h}"
        );
    }
}
