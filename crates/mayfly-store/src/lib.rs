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
#![forbid(unsafe_code)]

mod layout;
mod schema;

use std::collections::HashSet;
use std::path::PathBuf;

use mayfly_api::{Mode, TemplateConfig};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

pub use layout::Layout;

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
    /// Init command (empty: the template's).
    #[serde(default)]
    pub command: Vec<String>,
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

/// An instance row as SQLite returns it, before decoding.
struct RawInstance {
    id: String,
    name: String,
    template: String,
    pinned: Option<i64>,
    mode: String,
    config: String,
    id_base: Option<i64>,
    created_at: i64,
    run: Option<String>,
    last_exit: Option<String>,
    writable_gen: i64,
    writable_version: Option<i64>,
    next_run: Option<String>,
    layer_since: Option<i64>,
}

/// Whether application reference `reference` (`NAME` or `NAME@N`) names template `name`:
/// `Some(None)` when it follows the name, `Some(Some(n))` when pinned to version n.
fn app_version(reference: &str, name: &str) -> Option<Option<u32>> {
    match reference.split_once('@') {
        None => (reference == name).then_some(None),
        Some((n, v)) => (n == name).then(|| v.parse().ok()).flatten().map(Some),
    }
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

    // ---- layers -------------------------------------------------------------------------

    /// Whether the catalogue has layer `digest`.
    pub fn has_layer(&self, digest: &str) -> Result<bool, StoreError> {
        self.conn
            .query_row("SELECT 1 FROM layers WHERE digest = ?1", [digest], |_| {
                Ok(())
            })
            .optional()
            .map(|r| r.is_some())
            .map_err(sql("look up layer"))
    }

    /// Digests of all catalogued layers.
    pub fn layer_digests(&self) -> Result<HashSet<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT digest FROM layers")
            .map_err(sql("list layers"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(sql("list layers"))?;
        rows.collect::<Result<_, _>>().map_err(sql("list layers"))
    }

    /// Layers that no template version references.
    pub fn unreferenced_layers(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT digest FROM layers WHERE digest NOT IN (SELECT digest FROM version_layers)",
            )
            .map_err(sql("find unused layers"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(sql("find unused layers"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql("find unused layers"))
    }

    /// Removes layer rows that no template version references; returns their digests (the
    /// caller then removes the trees).
    pub fn drop_unreferenced_layers(&mut self) -> Result<Vec<String>, StoreError> {
        let tx = self.conn.transaction().map_err(sql("begin"))?;
        let gone: Vec<String> = {
            let mut stmt = tx
                .prepare("DELETE FROM layers WHERE digest NOT IN (SELECT digest FROM version_layers) RETURNING digest")
                .map_err(sql("drop unused layers"))?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(sql("drop unused layers"))?;
            rows.collect::<Result<_, _>>()
                .map_err(sql("drop unused layers"))?
        };
        tx.commit().map_err(sql("commit"))?;
        Ok(gone)
    }

    // ---- templates ----------------------------------------------------------------------

    /// Creates template `name` with version 1 made of `layers` (lowest first; new layers are
    /// catalogued, known ones shared). `journal` (if any) is closed in the same transaction.
    pub fn create_template(
        &mut self,
        name: &str,
        builtin: bool,
        version: &NewVersion<'_>,
        journal: Option<i64>,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(sql("begin"))?;
        let exists = tx
            .query_row(
                "SELECT 1 FROM templates WHERE name = ?1",
                [name],
                |_| Ok(()),
            )
            .optional()
            .map_err(sql("look up template"))?
            .is_some();
        if exists {
            return Err(StoreError::AlreadyExists {
                kind: "template",
                name: name.to_owned(),
            });
        }
        let now = now();
        tx.execute(
            "INSERT INTO templates (name, current_version, builtin, created_at) VALUES (?1, 1, ?2, ?3)",
            params![name, builtin, now],
        )
        .map_err(sql("insert template"))?;
        Self::insert_version(&tx, name, 1, version, now)?;
        if let Some(j) = journal {
            tx.execute("DELETE FROM journal WHERE id = ?1", [j])
                .map_err(sql("close journal"))?;
        }
        tx.commit().map_err(sql("commit"))
    }

    /// Adds version N+1 of template `name` made of `layers` and makes it current; returns N+1.
    /// `journal` (if any) is closed in the same transaction.
    pub fn add_template_version(
        &mut self,
        name: &str,
        new: &NewVersion<'_>,
        journal: Option<i64>,
    ) -> Result<u32, StoreError> {
        let tx = self.conn.transaction().map_err(sql("begin"))?;
        let last: Option<i64> = tx
            .query_row(
                "SELECT MAX(version) FROM template_versions WHERE template = ?1",
                [name],
                |r| r.get(0),
            )
            .map_err(sql("look up template"))?;
        let Some(last) = last else {
            return Err(StoreError::NotFound {
                kind: "template",
                name: name.to_owned(),
            });
        };
        let version = to_u32(last, "template version")? + 1;
        Self::insert_version(&tx, name, version, new, now())?;
        tx.execute(
            "UPDATE templates SET current_version = ?2 WHERE name = ?1",
            params![name, version],
        )
        .map_err(sql("set current version"))?;
        if let Some(j) = journal {
            tx.execute("DELETE FROM journal WHERE id = ?1", [j])
                .map_err(sql("close journal"))?;
        }
        tx.commit().map_err(sql("commit"))?;
        Ok(version)
    }

    fn insert_version(
        tx: &rusqlite::Transaction<'_>,
        name: &str,
        version: u32,
        new: &NewVersion<'_>,
        now: i64,
    ) -> Result<(), StoreError> {
        let NewVersion {
            layers,
            config,
            message,
            meta,
        } = *new;
        tx.execute(
            "INSERT INTO template_versions (template, version, config, message, created_at, meta) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![name, version, to_json(config), message, now, to_json(meta)],
        )
        .map_err(sql("insert template version"))?;
        for (pos, layer) in layers.iter().enumerate() {
            tx.execute(
                "INSERT OR IGNORE INTO layers (digest, size, entries, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![layer.digest, i64_of(layer.size), i64_of(layer.entries), now],
            )
            .map_err(sql("insert layer"))?;
            tx.execute(
                "INSERT INTO version_layers (template, version, position, digest) VALUES (?1, ?2, ?3, ?4)",
                params![name, version, i64::try_from(pos).unwrap_or(i64::MAX), layer.digest],
            )
            .map_err(sql("insert template layer"))?;
        }
        Ok(())
    }

    /// Every template, by name.
    pub fn templates(&self) -> Result<Vec<TemplateRecord>, StoreError> {
        let names: Vec<String> = {
            let mut stmt = self
                .conn
                .prepare("SELECT name FROM templates ORDER BY name")
                .map_err(sql("list templates"))?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(sql("list templates"))?;
            rows.collect::<Result<_, _>>()
                .map_err(sql("list templates"))?
        };
        names.iter().map(|n| self.template(n)).collect()
    }

    /// Template `name`.
    pub fn template(&self, name: &str) -> Result<TemplateRecord, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT current_version, builtin, created_at FROM templates WHERE name = ?1",
                [name],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, bool>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(sql("look up template"))?;
        let Some((current, builtin, created_at)) = row else {
            return Err(StoreError::NotFound {
                kind: "template",
                name: name.to_owned(),
            });
        };
        let mut versions = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT version, config, message, created_at, meta FROM template_versions WHERE template = ?1 ORDER BY version",
                )
                .map_err(sql("list versions"))?;
            let rows = stmt
                .query_map([name], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })
                .map_err(sql("list versions"))?;
            for row in rows {
                let (v, config, message, at, meta) = row.map_err(sql("list versions"))?;
                versions.push(VersionRecord {
                    version: to_u32(v, "template version")?,
                    layers: Vec::new(),
                    config: from_json(&config, "template config")?,
                    message,
                    created_at: at,
                    meta: from_json(&meta, "template version meta")?,
                });
            }
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT vl.version, l.digest, l.size, l.entries FROM version_layers vl JOIN layers l ON l.digest = vl.digest
                 WHERE vl.template = ?1 ORDER BY vl.version, vl.position",
            )
            .map_err(sql("list template layers"))?;
        let rows = stmt
            .query_map([name], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(sql("list template layers"))?;
        for row in rows {
            let (v, digest, size, entries) = row.map_err(sql("list template layers"))?;
            let v = to_u32(v, "template version")?;
            if let Some(rec) = versions.iter_mut().find(|r| r.version == v) {
                rec.layers.push(LayerRecord {
                    digest,
                    size: to_u64(size, "layer size")?,
                    entries: to_u64(entries, "layer entries")?,
                });
            }
        }
        Ok(TemplateRecord {
            name: name.to_owned(),
            current_version: to_u32(current, "template version")?,
            builtin,
            created_at,
            versions,
        })
    }

    /// Points template `name` at its existing version `version`.
    pub fn set_current_version(&mut self, name: &str, version: u32) -> Result<(), StoreError> {
        let known = self
            .conn
            .query_row(
                "SELECT 1 FROM template_versions WHERE template = ?1 AND version = ?2",
                params![name, version],
                |_| Ok(()),
            )
            .optional()
            .map_err(sql("look up version"))?
            .is_some();
        if !known {
            return Err(StoreError::NotFound {
                kind: "template version",
                name: format!("{name}@{version}"),
            });
        }
        self.conn
            .execute(
                "UPDATE templates SET current_version = ?2 WHERE name = ?1",
                params![name, version],
            )
            .map(|_| ())
            .map_err(sql("set current version"))
    }

    /// Who holds version `version` of template `name`: instances pinned to it or whose
    /// writable layer was made on it, and snapshots taken on it (`instance/snapshot`).
    pub fn version_users(&self, name: &str, version: u32) -> Result<Vec<String>, StoreError> {
        let mut users = Vec::new();
        for rec in self.instances()? {
            // As an application: pinned to this version, or running it.
            let refs: Vec<Option<u32>> = rec
                .config
                .apps
                .iter()
                .filter_map(|a| app_version(a, name))
                .collect();
            if !refs.is_empty() {
                let runs_it = rec
                    .run
                    .as_ref()
                    .is_some_and(|r| r.apps.iter().any(|(n, v)| n == name && *v == version));
                // A run recorded by an older mayfly did not say which versions it runs.
                let unknown = rec.run.as_ref().is_some_and(|r| r.apps.is_empty());
                if runs_it || refs.contains(&Some(version)) || (unknown && refs.contains(&None)) {
                    users.push(rec.name.clone());
                }
                continue;
            }
            if rec.template != name {
                continue;
            }
            let next = rec.next_run.as_ref().and_then(|n| n.version);
            let running = rec.run.as_ref().map(|r| r.version);
            if [rec.pinned_version, rec.writable_version, next, running].contains(&Some(version)) {
                users.push(rec.name.clone());
            }
            for snap in self.snapshots(&rec.id)? {
                if snap.template_version == version {
                    users.push(format!("{}/{}", rec.name, snap.name));
                }
            }
        }
        Ok(users)
    }

    /// Deletes version `version` of template `name` (not the current one, not one in use).
    pub fn delete_version(&mut self, name: &str, version: u32) -> Result<(), StoreError> {
        let template = self.template(name)?;
        if template.version(version).is_none() {
            return Err(StoreError::NotFound {
                kind: "template version",
                name: format!("{name}@{version}"),
            });
        }
        if template.current_version == version {
            return Err(StoreError::InUse {
                template: format!("{name}@{version}"),
                users: vec![format!("the name `{name}` (it is the current version)")],
            });
        }
        let users = self.version_users(name, version)?;
        if !users.is_empty() {
            return Err(StoreError::InUse {
                template: format!("{name}@{version}"),
                users,
            });
        }
        let tx = self.conn.transaction().map_err(sql("begin"))?;
        tx.execute(
            "DELETE FROM version_layers WHERE template = ?1 AND version = ?2",
            params![name, version],
        )
        .map_err(sql("delete version"))?;
        tx.execute(
            "DELETE FROM template_versions WHERE template = ?1 AND version = ?2",
            params![name, version],
        )
        .map_err(sql("delete version"))?;
        tx.commit().map_err(sql("commit"))
    }

    /// Names of the instances that use template `name` (pinned or following, as their
    /// template or as one of their applications).
    pub fn template_users(&self, name: &str) -> Result<Vec<String>, StoreError> {
        let mut users: Vec<String> = self
            .instances()?
            .into_iter()
            .filter(|rec| {
                rec.template == name
                    || rec
                        .config
                        .apps
                        .iter()
                        .any(|a| app_version(a, name).is_some())
            })
            .map(|rec| rec.name)
            .collect();
        users.sort();
        Ok(users)
    }

    /// Deletes template `name` and all its versions, refusing while instances use it.
    pub fn delete_template(&mut self, name: &str) -> Result<(), StoreError> {
        let users = self.template_users(name)?;
        if !users.is_empty() {
            return Err(StoreError::InUse {
                template: name.to_owned(),
                users,
            });
        }
        let tx = self.conn.transaction().map_err(sql("begin"))?;
        tx.execute("DELETE FROM version_layers WHERE template = ?1", [name])
            .map_err(sql("delete template"))?;
        tx.execute("DELETE FROM template_versions WHERE template = ?1", [name])
            .map_err(sql("delete template"))?;
        let n = tx
            .execute("DELETE FROM templates WHERE name = ?1", [name])
            .map_err(sql("delete template"))?;
        if n == 0 {
            return Err(StoreError::NotFound {
                kind: "template",
                name: name.to_owned(),
            });
        }
        tx.commit().map_err(sql("commit"))
    }

    // ---- instances ----------------------------------------------------------------------

    /// Inserts `rec`, allocating it a free user-namespace id range when `want_ids` is set.
    /// Ephemeral instances are written without waiting for the disk (`durable = false`).
    pub fn insert_instance(
        &mut self,
        rec: &mut InstanceRecord,
        want_ids: bool,
    ) -> Result<(), StoreError> {
        self.durable(rec.mode != Mode::Ephemeral)?;
        let result = (|| {
            let tx = self.conn.transaction().map_err(sql("begin"))?;
            let exists = tx
                .query_row(
                    "SELECT 1 FROM instances WHERE name = ?1",
                    [&rec.name],
                    |_| Ok(()),
                )
                .optional()
                .map_err(sql("look up instance"))?
                .is_some();
            if exists {
                return Err(StoreError::AlreadyExists {
                    kind: "instance",
                    name: rec.name.clone(),
                });
            }
            if want_ids {
                rec.id_base = Some(Self::free_id_base(&tx)?);
            }
            tx.execute(
                "INSERT INTO instances (id, name, template, pinned_version, mode, config, id_base, created_at, run, last_exit, writable_gen, writable_version, next_run, layer_since)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![
                    rec.id,
                    rec.name,
                    rec.template,
                    rec.pinned_version,
                    rec.mode.as_str(),
                    to_json(&rec.config),
                    rec.id_base,
                    rec.created_at,
                    rec.run.as_ref().map(to_json),
                    rec.last_exit.as_ref().map(to_json),
                    i64_of(rec.writable_gen),
                    rec.writable_version,
                    rec.next_run.as_ref().map(to_json),
                    rec.layer_since,
                ],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                    StoreError::NotFound {
                        kind: "template",
                        name: rec.template.clone(),
                    }
                }
                e => StoreError::Sqlite {
                    context: "insert instance",
                    source: e,
                },
            })?;
            tx.commit().map_err(sql("commit"))
        })();
        self.durable(true)?;
        result
    }

    fn free_id_base(tx: &rusqlite::Transaction<'_>) -> Result<u32, StoreError> {
        let mut stmt = tx
            .prepare("SELECT id_base FROM instances WHERE id_base IS NOT NULL ORDER BY id_base")
            .map_err(sql("allocate ids"))?;
        let used: Vec<i64> = stmt
            .query_map([], |r| r.get(0))
            .map_err(sql("allocate ids"))?
            .collect::<Result<_, _>>()
            .map_err(sql("allocate ids"))?;
        let mut candidate = i64::from(ID_BASE_START);
        for base in used {
            if base == candidate {
                candidate += i64::from(ID_RANGE);
            } else if base > candidate {
                break;
            }
        }
        let last_allowed = i64::from(u32::MAX) - i64::from(ID_RANGE);
        if candidate > last_allowed {
            return Err(StoreError::IdRangesExhausted);
        }
        u32::try_from(candidate).map_err(|_| StoreError::IdRangesExhausted)
    }

    fn instance_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawInstance> {
        Ok(RawInstance {
            id: r.get(0)?,
            name: r.get(1)?,
            template: r.get(2)?,
            pinned: r.get(3)?,
            mode: r.get(4)?,
            config: r.get(5)?,
            id_base: r.get(6)?,
            created_at: r.get(7)?,
            run: r.get(8)?,
            last_exit: r.get(9)?,
            writable_gen: r.get(10)?,
            writable_version: r.get(11)?,
            next_run: r.get(12)?,
            layer_since: r.get(13)?,
        })
    }

    fn decode_instance(raw: RawInstance) -> Result<InstanceRecord, StoreError> {
        Ok(InstanceRecord {
            pinned_version: raw
                .pinned
                .map(|v| to_u32(v, "pinned version"))
                .transpose()?,
            mode: raw.mode.parse().map_err(|e: String| StoreError::Corrupt {
                what: "instance mode",
                detail: e,
            })?,
            config: from_json(&raw.config, "instance config")?,
            id_base: raw.id_base.map(|v| to_u32(v, "id base")).transpose()?,
            run: raw.run.map(|s| from_json(&s, "run record")).transpose()?,
            last_exit: raw
                .last_exit
                .map(|s| from_json(&s, "exit record"))
                .transpose()?,
            writable_gen: to_u64(raw.writable_gen, "writable generation")?,
            writable_version: raw
                .writable_version
                .map(|v| to_u32(v, "writable version"))
                .transpose()?,
            next_run: raw
                .next_run
                .map(|s| from_json(&s, "next run"))
                .transpose()?,
            layer_since: raw
                .layer_since
                .map(|v| to_u32(v, "layer version"))
                .transpose()?,
            id: raw.id,
            name: raw.name,
            template: raw.template,
            created_at: raw.created_at,
        })
    }

    const INSTANCE_COLUMNS: &'static str = "id, name, template, pinned_version, mode, config, id_base, created_at, run, last_exit, writable_gen, writable_version, next_run, layer_since";

    /// Every instance, by name.
    pub fn instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {} FROM instances ORDER BY name",
                Self::INSTANCE_COLUMNS
            ))
            .map_err(sql("list instances"))?;
        let rows = stmt
            .query_map([], Self::instance_from_row)
            .map_err(sql("list instances"))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(Self::decode_instance(row.map_err(sql("list instances"))?)?);
        }
        Ok(out)
    }

    /// Instance `name`.
    pub fn instance(&self, name: &str) -> Result<InstanceRecord, StoreError> {
        let cols = self
            .conn
            .query_row(
                &format!(
                    "SELECT {} FROM instances WHERE name = ?1",
                    Self::INSTANCE_COLUMNS
                ),
                [name],
                Self::instance_from_row,
            )
            .optional()
            .map_err(sql("look up instance"))?;
        match cols {
            Some(cols) => Self::decode_instance(cols),
            None => Err(StoreError::NotFound {
                kind: "instance",
                name: name.to_owned(),
            }),
        }
    }

    /// Records that instance `id` runs (`Some`) or stopped (`None`, with how it ended).
    pub fn set_run(
        &mut self,
        id: &str,
        mode: Mode,
        run: Option<&RunRecord>,
        last_exit: Option<&ExitRecord>,
    ) -> Result<(), StoreError> {
        self.durable(mode != Mode::Ephemeral)?;
        let result = match last_exit {
            Some(exit) => self.conn.execute(
                "UPDATE instances SET run = ?2, last_exit = ?3 WHERE id = ?1",
                params![id, run.map(to_json), to_json(exit)],
            ),
            None => self.conn.execute(
                "UPDATE instances SET run = ?2 WHERE id = ?1",
                params![id, run.map(to_json)],
            ),
        };
        self.durable(true)?;
        result.map(|_| ()).map_err(sql("record instance state"))
    }

    /// Records that instance `id` started with `run`: the writable layer is now of `run`'s
    /// template version, and the one-run settings are used up.
    pub fn record_start(
        &mut self,
        id: &str,
        mode: Mode,
        run: &RunRecord,
    ) -> Result<(), StoreError> {
        self.durable(mode != Mode::Ephemeral)?;
        // A persistent layer that already holds changes keeps the version they began on.
        let kept = mode == Mode::Persistent;
        let result = self.conn.execute(
            "UPDATE instances SET run = ?2, writable_version = ?3, next_run = NULL,
                 layer_since = CASE WHEN ?4 AND layer_since IS NOT NULL THEN layer_since ELSE ?3 END
             WHERE id = ?1",
            params![id, to_json(run), run.version, kept],
        );
        self.durable(true)?;
        result.map(|_| ()).map_err(sql("record instance start"))
    }

    /// Switches instance `id` to writable-layer generation `generation` (already in place on
    /// disk), made on template version `version`, with `next_run` for its next start — the one
    /// commit point of a restore. Closes `journal` in the same transaction.
    pub fn set_writable(
        &mut self,
        id: &str,
        generation: u64,
        version: Option<u32>,
        next_run: Option<&NextRun>,
        journal: Option<i64>,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(sql("begin"))?;
        tx.execute(
            "UPDATE instances SET writable_gen = ?2, writable_version = ?3, next_run = ?4, layer_since = ?3 WHERE id = ?1",
            params![id, i64_of(generation), version, next_run.map(to_json)],
        )
        .map_err(sql("switch writable layer"))?;
        if let Some(j) = journal {
            tx.execute("DELETE FROM journal WHERE id = ?1", [j])
                .map_err(sql("close journal"))?;
        }
        tx.commit().map_err(sql("commit"))
    }

    /// Deletes instance `id`'s row and its snapshots' rows (their trees are the caller's).
    pub fn delete_instance(&mut self, id: &str, mode: Mode) -> Result<(), StoreError> {
        self.durable(mode != Mode::Ephemeral)?;
        let result = (|| {
            let tx = self.conn.transaction().map_err(sql("begin"))?;
            tx.execute("DELETE FROM snapshots WHERE instance_id = ?1", [id])
                .map_err(sql("delete snapshots"))?;
            tx.execute("DELETE FROM instances WHERE id = ?1", [id])
                .map_err(sql("delete instance"))?;
            tx.commit().map_err(sql("commit"))
        })();
        self.durable(true)?;
        result
    }

    /// Deletes an instance row inserted by an operation that is being rolled back (and its
    /// snapshots' rows), if it exists.
    pub fn forget_instance(&mut self, id: &str) -> Result<(), StoreError> {
        self.delete_instance(id, Mode::Transient)
    }

    // ---- snapshots ----------------------------------------------------------------------

    /// Catalogues snapshot `rec` (its tree is in place), closing `journal` in the same
    /// transaction.
    pub fn insert_snapshot(
        &mut self,
        rec: &SnapshotRecord,
        journal: Option<i64>,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(sql("begin"))?;
        let exists = tx
            .query_row(
                "SELECT 1 FROM snapshots WHERE instance_id = ?1 AND name = ?2",
                params![rec.instance_id, rec.name],
                |_| Ok(()),
            )
            .optional()
            .map_err(sql("look up snapshot"))?
            .is_some();
        if exists {
            return Err(StoreError::AlreadyExists {
                kind: "snapshot",
                name: rec.name.clone(),
            });
        }
        tx.execute(
            "INSERT INTO snapshots (id, instance_id, name, template, template_version, config, id_base, size, entries, frozen_ms, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                rec.id,
                rec.instance_id,
                rec.name,
                rec.template,
                rec.template_version,
                to_json(&rec.config),
                rec.id_base,
                i64_of(rec.size),
                i64_of(rec.entries),
                rec.frozen_ms.map(i64_of),
                rec.created_at,
            ],
        )
        .map_err(sql("insert snapshot"))?;
        if let Some(j) = journal {
            tx.execute("DELETE FROM journal WHERE id = ?1", [j])
                .map_err(sql("close journal"))?;
        }
        tx.commit().map_err(sql("commit"))
    }

    /// Snapshots of instance `instance_id`, oldest first.
    pub fn snapshots(&self, instance_id: &str) -> Result<Vec<SnapshotRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, instance_id, name, template, template_version, config, id_base, size, entries, frozen_ms, created_at
                 FROM snapshots WHERE instance_id = ?1 ORDER BY created_at, rowid",
            )
            .map_err(sql("list snapshots"))?;
        let rows = stmt
            .query_map([instance_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    (r.get::<_, i64>(7)?, r.get::<_, i64>(8)?),
                    r.get::<_, Option<i64>>(9)?,
                    r.get::<_, i64>(10)?,
                ))
            })
            .map_err(sql("list snapshots"))?;
        let mut out = Vec::new();
        for row in rows {
            let (
                id,
                instance_id,
                name,
                template,
                version,
                config,
                id_base,
                (size, entries),
                frozen,
                at,
            ) = row.map_err(sql("list snapshots"))?;
            out.push(SnapshotRecord {
                id,
                instance_id,
                name,
                template,
                template_version: to_u32(version, "snapshot version")?,
                config: from_json(&config, "snapshot config")?,
                id_base: id_base.map(|v| to_u32(v, "snapshot id base")).transpose()?,
                size: to_u64(size, "snapshot size")?,
                entries: to_u64(entries, "snapshot entries")?,
                frozen_ms: frozen.map(|v| to_u64(v, "frozen time")).transpose()?,
                created_at: at,
            });
        }
        Ok(out)
    }

    /// Snapshot `name` of instance `instance_id`.
    pub fn snapshot(&self, instance_id: &str, name: &str) -> Result<SnapshotRecord, StoreError> {
        self.snapshots(instance_id)?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| StoreError::NotFound {
                kind: "snapshot",
                name: name.to_owned(),
            })
    }

    /// Ids of every snapshot (for the start-up sweep).
    pub fn snapshot_ids(&self) -> Result<HashSet<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM snapshots")
            .map_err(sql("list snapshots"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(sql("list snapshots"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql("list snapshots"))
    }

    /// Deletes snapshot `id`'s row.
    pub fn delete_snapshot(&mut self, id: &str) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM snapshots WHERE id = ?1", [id])
            .map(|_| ())
            .map_err(sql("delete snapshot"))
    }

    // ---- daemon facts -------------------------------------------------------------------

    /// A fact the daemon keeps about itself (e.g. that it created the built-in template once).
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(sql("read meta"))
    }

    /// Records a fact.
    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(|_| ())
            .map_err(sql("write meta"))
    }

    // ---- journal ------------------------------------------------------------------------

    /// Records the start of an operation that owns `paths` until it ends.
    pub fn journal_begin(
        &mut self,
        kind: &str,
        subject: &str,
        paths: &[PathBuf],
    ) -> Result<i64, StoreError> {
        self.conn
            .execute(
                "INSERT INTO journal (kind, subject, paths, started_at) VALUES (?1, ?2, ?3, ?4)",
                params![kind, subject, to_json(&paths), now()],
            )
            .map_err(sql("journal"))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Closes journal entry `id` (the operation finished or was rolled back).
    pub fn journal_end(&mut self, id: i64) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM journal WHERE id = ?1", [id])
            .map(|_| ())
            .map_err(sql("journal"))
    }

    /// Operations that were in flight when the daemon last stopped.
    pub fn journal_pending(&self) -> Result<Vec<JournalEntry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, kind, subject, paths, started_at FROM journal ORDER BY id")
            .map_err(sql("read journal"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(sql("read journal"))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, kind, subject, paths, started_at) = row.map_err(sql("read journal"))?;
            out.push(JournalEntry {
                id,
                kind,
                subject,
                paths: from_json(&paths, "journal paths")?,
                started_at,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
