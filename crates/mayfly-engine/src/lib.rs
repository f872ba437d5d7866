//! The engine: every action on templates and instances, and the instance life cycle.
//!
//! The API (and through it the CLI, later the web page) only parses requests and calls the
//! engine; lifecycle rules live here, in one place. Each instance has a slot with an operation
//! lock (one state-changing action at a time; a second one waits briefly, then gets a
//! `busy` error) and its runtime state. A driver event ("the init ended") marks the slot as
//! having a pending exit; whoever holds the operation lock next (the `stop` that waited for
//! it, or a small task) settles it: the driver forgets the instance, a transient instance's
//! writable layer goes to the trash, an ephemeral instance is deleted, and the catalogue
//! records how the run ended.
//!
//! Start-up recovers first: interrupted operations from the journal are rolled back, what the
//! catalogue does not reference is swept, the forker (which kept running) is asked what it
//! tracks, and every instance is reconciled with it.
#![forbid(unsafe_code)]

mod apps;
mod boot;
mod build;
mod console;
mod error;
mod etc_files;
pub mod events;
mod exec;
mod freeze;
mod hygiene;
mod instance;
mod instance_view;
mod layer;
mod logs;
mod network;
mod power;
mod process;
mod recorded;
mod recovery;
mod resources;
mod restart_policy;
mod rollout;
mod schedules;
mod slot;
mod snapshot;
mod stop;
mod template;
pub mod tokens;
mod trash;
mod user_data;
mod versions;
mod volumes;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use mayfly_api::DaemonInfo;
use mayfly_driver::container::ContainerDriver;
use mayfly_driver::{Driver, DriverEvent, ExitStatus};
use mayfly_store::{Layout, Store};
use tokio::sync::{mpsc, oneshot};

pub use build::BuildLog;
pub use error::EngineError;
pub use exec::ExecHandle;
pub use instance::RunHandle;
pub use logs::{LogFiles, LogFollower};
pub use rollout::{RolloutLog, rollout_error};
pub use template::{ChannelReader, ImportOptions, OnAccepted};
pub use versions::MAX_LAYERS;

use slot::Slots;
use trash::Trash;

/// Driver events (an init or exec'd process ended) waiting for the engine.
const DRIVER_EVENTS: usize = 4096;

/// How the daemon runs the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The state directory.
    pub state_dir: PathBuf,
    /// The mayfly executable, started as the forker helper.
    pub exe: PathBuf,
    /// The host's busybox binary, for the built-in template (`None`: no built-in template).
    pub busybox: Option<PathBuf>,
    /// Size at which an instance's console log is rotated.
    pub log_max_bytes: u64,
    /// Where downloaded packages are kept between builds (debootstrap, apt); shared by
    /// daemons that point at the same directory.
    pub cache_dir: PathBuf,
    /// Which cgroup hierarchies to drive (`Auto`: what the host has).
    pub cgroup_layout: mayfly_driver::cgroup::CgroupLayout,
    /// Whether instances get user namespaces (`Auto`: when the probe says they work).
    pub user_namespaces: UserNamespaces,
    /// What one template import (an archive, an image and its layers) may cost the host.
    pub import_limits: mayfly_image::ImportLimits,
    /// How far memory reservations of running instances may go past the host's memory
    /// (`1.0`: their sum stays within it).
    pub memory_overcommit: f64,
}

/// Whether new instances get a user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserNamespaces {
    /// When the start-up probe finds that idmapped layers work.
    #[default]
    Auto,
    /// Never: instances run as the host's root (with reduced capabilities, seccomp and device
    /// rules); for hosts where the probe passes but user namespaces misbehave, and for tests.
    Off,
}

impl std::str::FromStr for UserNamespaces {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(UserNamespaces::Auto),
            "off" => Ok(UserNamespaces::Off),
            other => Err(format!("unknown value `{other}`: use auto or off")),
        }
    }
}

/// Locks a std mutex, ignoring poisoning (a panicked holder leaves consistent data here:
/// every critical section only swaps plain values).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The engine (one per daemon).
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    layout: Layout,
    store: Arc<Mutex<Store>>,
    driver: Arc<dyn Driver>,
    slots: Mutex<Slots>,
    execs: Mutex<HashMap<u64, oneshot::Sender<ExitStatus>>>,
    /// Conflicting paths between two application layers (by digest), once computed.
    conflicts: Mutex<HashMap<(String, String), Vec<String>>>,
    /// Build containers waiting for their init to end, by id.
    build_waiters: Mutex<HashMap<String, oneshot::Sender<Option<ExitStatus>>>>,
    next_exec: AtomicU64,
    trash: Trash,
    /// Serialises moving layers into place with deleting them.
    layers_lock: tokio::sync::Mutex<()>,
    /// Networking's run-time state (the firewall's lock, the instances whose network is up).
    net: network::NetState,
    /// The stored flavors (immutable, so kept here too).
    flavors: resources::FlavorCache,
    /// Held shared by a launch or `set` from resolving a flavor until the instance's record
    /// names it, and exclusively by a flavor's removal: no instance can come to name a
    /// flavor that is being removed.
    flavor_gate: tokio::sync::RwLock<()>,
    /// Serialises admission checks with the starts they admit.
    admission: resources::AdmissionLock,
    /// Why instances run without a user namespace; `None` when they get one.
    userns_off: Option<String>,
    cgroup_mode: &'static str,
    boot_id: String,
    /// Where the scheduler's "now" comes from (real, or a test clock).
    clock: schedules::Clock,
    /// The scheduler's run-time state.
    scheduler: schedules::Scheduler,
    /// Pending restarts of restart policies.
    restart_timers: restart_policy::RestartTimers,
    /// The event bus (the event log and live subscribers).
    events: events::EventBus,
    /// How many times the forker helper was lost (and a new one started).
    forker_restarts: AtomicU64,
}

impl Engine {
    /// Opens the state directory, recovers from whatever happened last time, connects the
    /// drivers and reconciles running instances.
    pub async fn start(config: EngineConfig) -> Result<Arc<Engine>, EngineError> {
        let state_dir = config.state_dir.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&state_dir))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??;
        let layout = store.layout().clone();
        let store = Arc::new(Mutex::new(store));
        let events = events::EventBus::start(store.clone(), events::kept());
        events.make_current();
        let recovered = {
            let store = store.clone();
            let layout = layout.clone();
            tokio::task::spawn_blocking(move || recovery::recover(&mut lock(&store), &layout))
                .await
                .map_err(|e| EngineError::Internal(e.to_string()))??
        };
        let flavors = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || lock(&store).flavors())
                .await
                .map_err(|e| EngineError::Internal(e.to_string()))??
        };
        let trash = Trash::start(layout.trash());
        let cgroup_mode = mayfly_driver::cgroup::Cgroups::detect_as(config.cgroup_layout)
            .map(|c| c.mode().as_str())
            .map_err(|e| EngineError::Unavailable(mayfly_driver::error_chain(&e)))?;
        if config.cgroup_layout == mayfly_driver::cgroup::CgroupLayout::V2
            && mayfly_driver::cgroup::Cgroups::detect()
                .is_ok_and(|c| c.mode() == mayfly_driver::cgroup::CgroupMode::Hybrid)
        {
            tracing::warn!(
                "--cgroup-layout v2 on a hybrid host: the unified hierarchy holds no controllers here, so instances stay in the forker's v1 groups (no limits, shared accounting); use it for testing"
            );
        }
        // Bounded: when the engine falls behind, the driver stops reading its helper, whose
        // own queue is bounded too.
        let (events_tx, events_rx) = mpsc::channel(DRIVER_EVENTS);
        let driver: Arc<dyn Driver> = Arc::new(ContainerDriver::new(
            &config.state_dir,
            &config.exe,
            &cgroup_parent(&config.state_dir),
            config.cgroup_layout,
            events_tx,
        ));
        let userns_off = match config.user_namespaces {
            UserNamespaces::Off => Some("disabled by --user-namespaces off".to_owned()),
            UserNamespaces::Auto => driver
                .probe_user_namespaces(&layout.layers())
                .await
                .map_err(EngineError::Driver)?,
        };
        if let Some(why) = &userns_off {
            tracing::warn!("instances will run without user namespaces: {why}");
        }
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let engine = Arc::new(Engine {
            config,
            layout,
            store,
            driver,
            slots: Mutex::new(Slots::default()),
            execs: Mutex::new(HashMap::new()),
            build_waiters: Mutex::new(HashMap::new()),
            conflicts: Mutex::new(HashMap::new()),
            next_exec: AtomicU64::new(1),
            trash,
            layers_lock: tokio::sync::Mutex::new(()),
            net: network::NetState::default(),
            flavors: resources::FlavorCache::load(flavors),
            flavor_gate: tokio::sync::RwLock::new(()),
            admission: resources::AdmissionLock::default(),
            userns_off,
            cgroup_mode,
            boot_id,
            clock: schedules::Clock::from_env(),
            scheduler: schedules::Scheduler::default(),
            restart_timers: restart_policy::RestartTimers::default(),
            events,
            forker_restarts: AtomicU64::new(0),
        });
        if let Err(e) = engine.ensure_builtin_template().await {
            tracing::error!(
                "cannot create the built-in busybox template: {}",
                mayfly_driver::error_chain(&e)
            );
        }
        engine.reconcile(true).await?;
        if let Err(e) = engine.recover_networks().await {
            tracing::error!("cannot reconcile networks: {e}");
        }
        engine.thaw_interrupted(recovered.thaw).await;
        // In the background (resets and starts can take a while; the daemon serves the others
        // meanwhile), and in this order: interrupted rollouts are put back first, so that an
        // instance a rollout was resetting starts again on the version the name is put back
        // to, not on the rejected one.
        tokio::spawn({
            let e = engine.clone();
            async move {
                for (journal, subject) in recovered.rollouts {
                    if e.revert_interrupted(&subject).await {
                        e.journal_end(journal).await;
                    }
                }
                e.restart_interrupted(recovered.restart).await;
                // Last: a restart policy or a schedule must not start an instance on a
                // version an interrupted rollout is putting back, nor race those starts.
                e.start_timers();
            }
        });
        tokio::spawn(engine.clone().event_loop(events_rx));
        Ok(engine)
    }

    /// Runs `f` on the catalogue off the async runtime.
    pub(crate) async fn db<T, F>(&self, f: F) -> Result<T, EngineError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, mayfly_store::StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&store)))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?
            .map_err(EngineError::Store)
    }

    /// Records in the journal that an operation of `kind` on `subject` owns `path` (removed
    /// if the operation is interrupted); returns the entry to close.
    pub(crate) async fn journal(
        &self,
        kind: &'static str,
        subject: &str,
        path: &std::path::Path,
    ) -> Result<i64, EngineError> {
        let (subject, path) = (subject.to_owned(), path.to_owned());
        self.db(move |s| s.journal_begin(kind, &subject, &[path]))
            .await
    }

    /// Records that running instance `id` is being stopped to be started again, so that an
    /// interruption before the start does not leave it stopped; returns the entry to close
    /// once it runs again (or could not be started).
    pub(crate) async fn journal_restart(&self, id: &str) -> Result<i64, EngineError> {
        let id = id.to_owned();
        self.db(move |s| s.journal_begin(recovery::kind::RESTART, &id, &[]))
            .await
    }

    /// Starts again the instances (ids) that an interrupted restart, reset or restore left
    /// stopped.
    async fn restart_interrupted(self: &Arc<Self>, entries: Vec<(i64, String)>) {
        if entries.is_empty() {
            return;
        }
        let Ok(instances) = self.db(|s| s.instances()).await else {
            return;
        };
        for (journal, id) in entries {
            let Some(slot) = instances
                .iter()
                .find(|r| r.id == id)
                .and_then(|rec| self.slot(&rec.name).ok())
            else {
                // The instance is gone: nothing to start.
                self.journal_end(journal).await;
                continue;
            };
            let guard = slot.acquire_wait("start again").await;
            self.settle(&slot).await;
            if slot.state() != mayfly_api::InstanceState::Stopped {
                // The stop may have been asked already (a signal on its way, a grace period
                // running): whenever this run ends, the next one starts (and the entry goes).
                lock(&slot.rt).restart_on_exit = Some(journal);
                continue;
            }
            let max = self.config.log_max_bytes;
            let started = self
                .start_locked(
                    &slot,
                    mayfly_driver::InitStdio::Log { max_bytes: max },
                    false,
                )
                .await;
            drop(guard);
            match started {
                Ok(()) => tracing::warn!(
                    "started instance `{}` again: a restart, reset or restore of it was interrupted",
                    slot.name
                ),
                Err(e) => tracing::error!(
                    "cannot start instance `{}` again after an interrupted restart, reset or restore: {e}",
                    slot.name
                ),
            }
            self.journal_end(journal).await;
        }
    }

    /// Closes journal entry `id` (best effort: an entry left open only costs a sweep).
    pub(crate) async fn journal_end(&self, id: i64) {
        let _ = self.db(move |s| s.journal_end(id)).await;
    }

    /// Runs blocking file work off the async runtime.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T, EngineError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, EngineError> + Send + 'static,
    {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?
    }

    async fn event_loop(self: Arc<Self>, mut events: mpsc::Receiver<DriverEvent>) {
        while let Some(event) = events.recv().await {
            match event {
                DriverEvent::Exited { id, status } => self.on_exit(&id, status),
                DriverEvent::ExecExited { exec_id, status } => {
                    if let Some(tx) = lock(&self.execs).remove(&exec_id) {
                        let _ = tx.send(status);
                    }
                }
                DriverEvent::HelperLost => {
                    tracing::warn!(
                        "the forker helper went away; starting a new one and reconciling"
                    );
                    // Exec sessions die with the helper's connection.
                    lock(&self.execs).clear();
                    let n = self
                        .forker_restarts
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.emit(
                        events::Ev::new("forker.restart")
                            .by(events::DAEMON_ACTOR)
                            .details(serde_json::json!({ "restarts": n + 1 })),
                    );
                    let mut delay = std::time::Duration::from_millis(50);
                    while let Err(e) = self.reconcile(false).await {
                        tracing::error!(
                            "reconcile after losing the forker: {}",
                            mayfly_driver::error_chain(&e)
                        );
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(std::time::Duration::from_secs(5));
                    }
                }
            }
        }
    }

    /// How many times the forker helper was lost (and a new one started).
    pub fn forker_restarts(&self) -> u64 {
        self.forker_restarts
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the forker helper runs (its pid, when it does).
    pub fn forker_pid(&self) -> Option<i32> {
        self.driver.helper_pid()
    }

    /// Facts about the daemon and its host.
    pub async fn info(&self) -> Result<DaemonInfo, EngineError> {
        let templates = self.db(|s| s.templates()).await?.len();
        let (instances, running) = {
            let slots = lock(&self.slots);
            let running = slots
                .all()
                .filter(|s| s.state() == mayfly_api::InstanceState::Running)
                .count();
            (slots.len(), running)
        };
        Ok(DaemonInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            state_dir: self.config.state_dir.display().to_string(),
            cgroup_mode: self.cgroup_mode.to_owned(),
            user_namespaces: self.userns_off.is_none(),
            user_namespaces_off_reason: self.userns_off.clone(),
            forker_pid: self.driver.helper_pid(),
            instances: u32::try_from(instances).unwrap_or(u32::MAX),
            running: u32::try_from(running).unwrap_or(u32::MAX),
            templates: u32::try_from(templates).unwrap_or(u32::MAX),
            tls_fingerprint: None,
        })
    }
}

/// `bytes` random bytes as lowercase hex: instance, snapshot and build ids.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    let _ = rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty());
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Unix seconds as an RFC 3339 time, as the API shows times.
pub(crate) fn rfc3339(secs: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Crashes the daemon at a named step when the environment variable `MAYFLY_CRASH_AT` names
/// it: how the tests prove that an operation interrupted at that step leaves, after a
/// restart, either its complete result or nothing.
pub(crate) fn failpoint(name: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if AT
        .get_or_init(|| std::env::var("MAYFLY_CRASH_AT").ok())
        .as_deref()
        == Some(name)
    {
        eprintln!("mayfly: crashing at {name} (MAYFLY_CRASH_AT)");
        std::process::abort();
    }
}

/// Fails the step named `name` with an injected error when the environment variable
/// `MAYFLY_FAIL_AT` (a comma-separated list) names it: how the tests prove that a step that
/// fails (a catalogue read, a discard) still leaves a settled state and wakes every waiter.
pub(crate) fn inject(name: &str) -> Result<(), EngineError> {
    static AT: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let names = AT.get_or_init(|| {
        std::env::var("MAYFLY_FAIL_AT")
            .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
            .unwrap_or_default()
    });
    if names.iter().any(|n| n == name) {
        return Err(EngineError::Internal(format!(
            "injected failure at {name} (MAYFLY_FAIL_AT)"
        )));
    }
    Ok(())
}

/// The cgroup under which this state directory's instances live: `mayfly` for the default
/// state directory, `mayfly-<hash>` for others, so that daemons side by side (tests) never
/// share one.
fn cgroup_parent(state_dir: &std::path::Path) -> String {
    if state_dir == std::path::Path::new("/var/lib/mayfly") {
        return "mayfly".to_owned();
    }
    // FNV-1a: stable across runs and builds, which std's hasher is not.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in state_dir.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("mayfly-{:08x}", h >> 32)
}
