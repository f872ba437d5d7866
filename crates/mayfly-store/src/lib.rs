//! mayfly's state: the SQLite catalogue of layers, templates and instances, the layout of the
//! state directory, and the operation journal. The only crate that sees SQL.
//!
//! Crash safety by construction (containerd's pattern): file trees are built under `tmp/`,
//! flushed, renamed into place, and only then committed in one SQLite transaction; at start-up
//! whatever the catalogue does not reference (in `tmp/`, `layers/`, `instances/`, `trash/`)
//! is swept. The journal records multi-step operations in flight with the temporary paths
//! they own, so that start-up can roll them back and say what it did.
//!
//! The database runs in WAL mode with `synchronous=FULL`; ephemeral instances, which cannot
//! outlive a host crash anyway, are written with `synchronous=NORMAL` to keep one-shot runs
//! off the fsync path.
//!
//! One file per table group: `layers.rs`, `templates.rs` (templates and their versions),
//! `instances.rs`, `flavors.rs`, `snapshots.rs`, `networks.rs` (networks and the interfaces allocated on
//! them), `channels.rs`, `meta.rs` (daemon facts), `journal.rs`, `events.rs` (the event log); the records and
//! the helpers they share are here, the schema and its migrations in `schema.rs`.
#![forbid(unsafe_code)]

mod channels;
mod events;
mod flavors;
mod instances;
mod journal;
mod layers;
mod layout;
mod meta;
mod networks;
mod schedules;
mod schema;
mod snapshots;
mod templates;
mod tokens;
mod volumes;

use std::path::PathBuf;

use mayfly_api::{Mode, TemplateConfig};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

pub use channels::ChannelRecord;
pub use events::{EVENTS_KEPT, EventFilter, EventRecord, NewEvent};
pub use flavors::FlavorRecord;
pub use layout::Layout;
pub use networks::{InterfaceRecord, NetworkRecord};
pub use schedules::ScheduleRecord;
pub use tokens::TokenRecord;
pub use volumes::VolumeRecord;

/// A catalogue operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("state database: {context}")]
    Sqlite {
        /// What was being done.
        context: &'static str,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The named object does not exist.
    #[error("{kind} `{name}` does not exist")]
    NotFound {
        /// `template`, `instance`, …
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// An object with that name exists already.
    #[error("{kind} `{name}` already exists")]
    AlreadyExists {
        /// `template`, `instance`, …
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The template is used by instances.
    #[error("template `{template}` is used by {}", users.join(", "))]
    InUse {
        /// The template.
        template: String,
        /// Instances that use it.
        users: Vec<String>,
    },
    /// No user-namespace id range is free.
    #[error("every host id range for user namespaces is taken")]
    IdRangesExhausted,
    /// A file operation on the state directory failed.
    #[error("state directory: cannot {action} `{path}`")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A network has no free address left for a new interface.
    #[error("no free address in {subnet} ({in_use} in use) on network `{network}`")]
    SubnetExhausted {
        /// The network.
        network: String,
        /// Its subnet.
        subnet: String,
        /// Addresses handed out (all it has).
        in_use: u32,
    },
    /// A new network's subnet overlaps an existing network's.
    #[error("subnet {subnet} overlaps network `{other}` ({other_subnet})")]
    SubnetOverlaps {
        /// The subnet asked for.
        subnet: String,
        /// The network it overlaps.
        other: String,
        /// That network's subnet.
        other_subnet: String,
    },
    /// A network is used by instances (or builds).
    #[error("network `{network}` is used by {}", users.join(", "))]
    NetworkInUse {
        /// The network.
        network: String,
        /// Instance names (`build <id>` for running builds).
        users: Vec<String>,
    },
    /// A flavor is used by instances.
    #[error("flavor `{flavor}` is used by {}", users.join(", "))]
    FlavorInUse {
        /// The flavor.
        flavor: String,
        /// Instance names.
        users: Vec<String>,
    },
    /// A volume is attached to another instance (one holder at a time).
    #[error("volume `{volume}` is attached to instance `{holder}`")]
    VolumeAttached {
        /// The volume.
        volume: String,
        /// The instance holding it.
        holder: String,
    },
    /// A stored value could not be decoded.
    #[error("state database holds an unreadable {what}: {detail}")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// Why.
        detail: String,
    },
}

fn sql(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { context, source }
}

/// A layer as the catalogue knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRecord {
    /// `blake3:<hex>`.
    pub digest: String,
    /// Bytes of file content.
    pub size: u64,
    /// Entries.
    pub entries: u64,
}

/// A template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRecord {
    /// Name.
    pub name: String,
    /// The version `NAME` means.
    pub current_version: u32,
    /// The version the name pointed at before its last move (a patch, a build or publish of a
    /// new version, a rollback), if that version still exists: where a failed rollout of the
    /// current version points the name back.
    pub previous_version: Option<u32>,
    /// Provided by the daemon.
    pub builtin: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Versions, oldest first.
    pub versions: Vec<VersionRecord>,
}

impl TemplateRecord {
    /// The record of version `v`.
    pub fn version(&self, v: u32) -> Option<&VersionRecord> {
        self.versions.iter().find(|r| r.version == v)
    }
}

/// What a template version is, beyond its layers and defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct VersionMeta {
    /// Installed packages (`name version`), when the version has a package database.
    #[serde(default)]
    pub packages: Vec<String>,
    /// The template version an application template was built on (`name@N`).
    #[serde(default)]
    pub base: Option<String>,
    /// Whether it is an application template: its own layers sit on `base`'s and it can be
    /// stacked with others with `--app`.
    #[serde(default)]
    pub app: bool,
}

/// One template version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRecord {
    /// Version number.
    pub version: u32,
    /// Layers, lowest first.
    pub layers: Vec<LayerRecord>,
    /// Instance defaults.
    pub config: TemplateConfig,
    /// History message.
    pub message: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Kind and packages.
    pub meta: VersionMeta,
}

/// Per-instance settings chosen at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct InstanceConfig {
    /// Init command, or the arguments of the entrypoint (empty: the template's `cmd`).
    #[serde(default)]
    pub command: Vec<String>,
    /// The instance's own entrypoint, replacing the template's (`Some([])` clears it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// The instance's own user (`USER[:GROUP]`), replacing the template's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory of the init.
    #[serde(default)]
    pub workdir: Option<String>,
    /// Application templates stacked over the template, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<String>,
    /// Whether overlapping applications are allowed (the later wins).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ordered_apps: bool,
    /// Whether mayfly's init runs as PID 1 in front of the command (`--init`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// The networks it has an interface on, in interface order (`eth0` first); empty: only
    /// `lo` (`--network none`, and instances made before networks existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// Published ports (forwarded while it runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<mayfly_api::PublishPort>,
    /// The flavor its limits come from (its own `limits` go over the flavor's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<String>,
    /// Its own limits (the template's defaults with the launch's over them, then `set`).
    #[serde(default, skip_serializing_if = "mayfly_api::Limits::is_empty")]
    pub limits: mayfly_api::Limits,
    /// Volumes mounted into it. Kept in step with the `volumes` table (which holds who holds
    /// each volume) by the volume functions of the store, in one transaction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<mayfly_api::VolumeMount>,
    /// `--meta` pairs.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub meta: std::collections::BTreeMap<String, String>,
    /// What its user data is, when it has some (the bytes are in their own column:
    /// [`Store::user_data`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<UserDataSummary>,
    /// Restart policy.
    #[serde(default, skip_serializing_if = "mayfly_api::RestartPolicy::is_no")]
    pub restart: mayfly_api::RestartPolicy,
}

/// What an instance's user data is (its bytes are read only when a start needs them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDataSummary {
    /// Script or cloud-config.
    pub kind: mayfly_api::UserDataKind,
    /// Size in bytes.
    pub bytes: u64,
}

/// Where an instance's restart policy stands (kept across daemon restarts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RestartState {
    /// Restarts in a row by the policy.
    pub restarts: u32,
    /// When the next attempt is due (Unix seconds), while it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<i64>,
    /// Why the policy gave up, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gave_up: Option<String>,
    /// mayfly was asked to stop the current run (recorded before its stop signal): its end
    /// is not the policy's to restart, even if the daemon dies before it settles it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop_requested: bool,
}

/// What the catalogue remembers of a running init, to find it again after a daemon restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Host pid.
    pub pid: i32,
    /// Its start time (clock ticks since boot).
    pub start_time: u64,
    /// `/proc/sys/kernel/random/boot_id` when it started: another boot means it is gone.
    pub boot_id: String,
    /// Template version in use.
    pub version: u32,
    /// Unix seconds.
    pub started_at: i64,
    /// The versions of the application templates it runs (name, version).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<(String, u32)>,
}

/// What the next start of an instance must do differently (set by restore and clone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NextRun {
    /// Run this template version (the one the writable layer was made on).
    #[serde(default)]
    pub version: Option<u32>,
    /// Keep the writable layer for this run even if the mode discards it at start (a
    /// transient instance restored from a snapshot).
    #[serde(default)]
    pub keep_writable: bool,
    /// Give the instance a new machine identity (a clone's first start).
    #[serde(default)]
    pub new_identity: bool,
}

/// A snapshot of an instance's writable layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// Random id (names its tree).
    pub id: String,
    /// The instance.
    pub instance_id: String,
    /// Name, unique per instance.
    pub name: String,
    /// Template of the instance when taken.
    pub template: String,
    /// The template version the writable layer was made on.
    pub template_version: u32,
    /// The instance's settings when taken.
    pub config: InstanceConfig,
    /// The id range the tree's owners are in.
    pub id_base: Option<u32>,
    /// Bytes of file content.
    pub size: u64,
    /// Entries.
    pub entries: u64,
    /// How long a running instance was frozen for it.
    pub frozen_ms: Option<u64>,
    /// Unix seconds.
    pub created_at: i64,
}

/// How the last run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Shell-style code.
    pub code: i32,
    /// Terminating signal.
    pub signal: Option<i32>,
    /// Unix seconds.
    pub at: i64,
    /// How the run ended, as the engine read it (absent in records written before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ending: Option<mayfly_api::Ending>,
    /// Processes the kernel's OOM killer ended during that run.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub oom_kills: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A template version to create.
#[derive(Debug, Clone, Copy)]
pub struct NewVersion<'a> {
    /// Layers, lowest first (new ones are catalogued, known ones shared).
    pub layers: &'a [LayerRecord],
    /// Instance defaults.
    pub config: &'a TemplateConfig,
    /// History message.
    pub message: &'a str,
    /// Kind and packages.
    pub meta: &'a VersionMeta,
}

/// An instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    /// Random id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Template name.
    pub template: String,
    /// Pinned version.
    pub pinned_version: Option<u32>,
    /// Mode.
    pub mode: Mode,
    /// Settings.
    pub config: InstanceConfig,
    /// First host id of its user-namespace range.
    pub id_base: Option<u32>,
    /// Unix seconds.
    pub created_at: i64,
    /// Set while it runs.
    pub run: Option<RunRecord>,
    /// How the last run ended.
    pub last_exit: Option<ExitRecord>,
    /// Generation of the writable layer (its directory is `upper-<gen>`).
    pub writable_gen: u64,
    /// The template version the writable layer was last run on.
    pub writable_version: Option<u32>,
    /// The template version the writable layer's changes began on (set at its first start,
    /// or by a restore or clone, kept while a persistent instance restarts on newer versions,
    /// cleared by a reset): newer layers whose paths it also changes are hidden by it.
    pub layer_since: Option<u32>,
    /// What the next start must do differently.
    pub next_run: Option<NextRun>,
    /// Paused by its user (`mayfly pause`): frozen again after a daemon restart, cleared by
    /// the end of the run.
    pub paused: bool,
    /// Where its restart policy stands (`None`: nothing to remember).
    pub restart_state: Option<RestartState>,
}

/// A journalled operation in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// Row id.
    pub id: i64,
    /// `import`, `snapshot`, …
    pub kind: String,
    /// What it works on.
    pub subject: String,
    /// Temporary paths it owns (removed when it is rolled back).
    pub paths: Vec<PathBuf>,
    /// Unix seconds.
    pub started_at: i64,
}

/// Size of each instance's user-namespace id range.
pub const ID_RANGE: u32 = 65536;
/// First host id handed to instances (aligned to [`ID_RANGE`], far above ordinary users).
pub const ID_BASE_START: u32 = 1 << 30;

/// The catalogue.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    layout: Layout,
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn to_u32(v: i64, what: &'static str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt {
        what,
        detail: format!("{v} is out of range"),
    })
}

fn to_u64(v: i64, what: &'static str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt {
        what,
        detail: format!("{v} is out of range"),
    })
}

fn from_json<T: for<'de> Deserialize<'de>>(s: &str, what: &'static str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens (creating if needed) the state directory `root` and its database.
    pub fn open(root: &std::path::Path) -> Result<Store, StoreError> {
        let layout = Layout::new(root);
        layout.create()?;
        let conn = Connection::open(layout.db()).map_err(sql("open"))?;
        // The write-ahead log is cut back to 1 MiB after each checkpoint: without a limit it
        // keeps the size of the busiest burst (4 MiB and more) for good.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; \
             PRAGMA busy_timeout=5000; PRAGMA journal_size_limit=1048576;",
        )
        .map_err(sql("configure"))?;
        let mut store = Store { conn, layout };
        schema::migrate(&mut store.conn)?;
        Ok(store)
    }

    /// The state directory layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn durable(&self, durable: bool) -> Result<(), StoreError> {
        let mode = if durable { "FULL" } else { "NORMAL" };
        self.conn
            .execute_batch(&format!("PRAGMA synchronous={mode}"))
            .map_err(sql("set durability"))
    }
}

#[cfg(test)]
mod tests;
