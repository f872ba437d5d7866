//! The catalogue's schema and its migrations, keyed by `PRAGMA user_version`.
//!
//! Each migration runs in one transaction with the version bump, so a daemon killed during an
//! upgrade finds either the old schema or the new one.

use rusqlite::Connection;

use crate::{StoreError, sql};

/// Migrations in order; entry `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: layers, templates with versions, instances, daemon facts, journal.
    "CREATE TABLE layers (
        digest TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        entries INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE templates (
        name TEXT PRIMARY KEY,
        current_version INTEGER NOT NULL,
        builtin INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE template_versions (
        template TEXT NOT NULL REFERENCES templates(name),
        version INTEGER NOT NULL,
        config TEXT NOT NULL,
        message TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (template, version)
    );
    CREATE TABLE version_layers (
        template TEXT NOT NULL,
        version INTEGER NOT NULL,
        position INTEGER NOT NULL,
        digest TEXT NOT NULL REFERENCES layers(digest),
        PRIMARY KEY (template, version, position),
        FOREIGN KEY (template, version) REFERENCES template_versions(template, version)
    );
    CREATE INDEX version_layers_digest ON version_layers(digest);
    CREATE TABLE instances (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        template TEXT NOT NULL REFERENCES templates(name),
        pinned_version INTEGER,
        mode TEXT NOT NULL,
        config TEXT NOT NULL,
        id_base INTEGER UNIQUE,
        created_at INTEGER NOT NULL,
        run TEXT,
        last_exit TEXT
    );
    CREATE INDEX instances_template ON instances(template);
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE journal (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        paths TEXT NOT NULL,
        started_at INTEGER NOT NULL
    );",
    // 2: snapshots; writable-layer generations and what the next start must do.
    "CREATE TABLE snapshots (
        id TEXT PRIMARY KEY,
        instance_id TEXT NOT NULL REFERENCES instances(id),
        name TEXT NOT NULL,
        template TEXT NOT NULL,
        template_version INTEGER NOT NULL,
        config TEXT NOT NULL,
        id_base INTEGER,
        size INTEGER NOT NULL,
        entries INTEGER NOT NULL,
        frozen_ms INTEGER,
        created_at INTEGER NOT NULL,
        UNIQUE (instance_id, name),
        FOREIGN KEY (template, template_version) REFERENCES template_versions(template, version)
    );
    ALTER TABLE instances ADD COLUMN writable_gen INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE instances ADD COLUMN writable_version INTEGER;
    ALTER TABLE instances ADD COLUMN next_run TEXT;",
    // 3: what a template version is (OS build, application, patch…) and its package list.
    "ALTER TABLE template_versions ADD COLUMN meta TEXT NOT NULL DEFAULT '{}';",
    // 4: the version a persistent writable layer's changes began on (shadowing reports).
    "ALTER TABLE instances ADD COLUMN layer_since INTEGER;
    UPDATE instances SET layer_since = writable_version;",
    // 5: where the name pointed before its last move, so that a failed rollout can point it
    // back there. Existing templates get the newest version below the current one (what a
    // rollback without `--to` would choose), the best guess without the history.
    "ALTER TABLE templates ADD COLUMN previous_version INTEGER;
    UPDATE templates SET previous_version = (
        SELECT MAX(v.version) FROM template_versions v
        WHERE v.template = templates.name AND v.version < templates.current_version
    );",
    // 6: networks, the interfaces of instances (and of running builds) with their addresses
    // and MACs, and channels between instances.
    "CREATE TABLE networks (
        name TEXT PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        bridge TEXT NOT NULL UNIQUE,
        subnet TEXT NOT NULL,
        isolated INTEGER NOT NULL,
        nat INTEGER NOT NULL,
        upstream TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        subnet6 TEXT
    );
    CREATE TABLE interfaces (
        owner TEXT NOT NULL,
        idx INTEGER NOT NULL,
        network TEXT NOT NULL REFERENCES networks(name),
        ipv4 TEXT NOT NULL,
        mac TEXT NOT NULL,
        build INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (owner, idx),
        UNIQUE (network, ipv4),
        UNIQUE (mac)
    );
    CREATE TABLE channels (
        name TEXT PRIMARY KEY,
        server TEXT NOT NULL REFERENCES instances(id),
        client TEXT NOT NULL REFERENCES instances(id),
        created_at INTEGER NOT NULL
    );",
    // 7: flavors (named presets of limits; the built-in ones are not stored), and whether an
    // instance is paused by its user (kept across daemon restarts).
    "CREATE TABLE flavors (
        name TEXT PRIMARY KEY,
        description TEXT NOT NULL,
        limits TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    ALTER TABLE instances ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;",
    // 8: per-instance state: volumes (attached to at most one instance: the row holds the
    // holder), schedules, user data (a column of its own, read only when needed), and where a
    // restart policy stands.
    "CREATE TABLE volumes (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        size INTEGER,
        created_at INTEGER NOT NULL,
        instance_id TEXT REFERENCES instances(id),
        path TEXT,
        readonly INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX volumes_instance ON volumes(instance_id);
    CREATE TABLE schedules (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        instance_id TEXT NOT NULL REFERENCES instances(id),
        action TEXT NOT NULL,
        cron TEXT NOT NULL,
        keep INTEGER,
        created_at INTEGER NOT NULL,
        last_run INTEGER,
        last_error TEXT
    );
    CREATE INDEX schedules_instance ON schedules(instance_id);
    ALTER TABLE instances ADD COLUMN user_data BLOB;
    ALTER TABLE instances ADD COLUMN restart_state TEXT;",
    // 9: the management interface: the event log (bounded: the oldest rows are deleted past
    // a cap, `seq` is never reused) and the API's tokens (only a hash of each secret).
    "CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        time INTEGER NOT NULL,
        kind TEXT NOT NULL,
        subject_kind TEXT,
        subject_name TEXT,
        actor TEXT NOT NULL,
        outcome TEXT NOT NULL,
        details TEXT
    );
    CREATE TABLE tokens (
        name TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        last_used INTEGER
    );",
];

/// SQL that takes a database of the newest schema back to schema 7 (tests that open an older
/// catalogue rewind a new one step by step).
#[cfg(test)]
pub(crate) const BACK_TO_7: &str = "DROP TABLE events; DROP TABLE tokens; \
     DROP TABLE volumes; DROP TABLE schedules; \
     ALTER TABLE instances DROP COLUMN user_data; \
     ALTER TABLE instances DROP COLUMN restart_state;";

/// Brings the database to the newest schema. Refuses a database newer than this binary.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql("read schema version"))?;
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if current > known {
        return Err(StoreError::Corrupt {
            what: "schema version",
            detail: format!(
                "the state database has schema {current}, this mayfly knows up to {known}: run a newer mayfly"
            ),
        });
    }
    for (i, step) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        let tx = conn.transaction().map_err(sql("begin migration"))?;
        tx.execute_batch(step).map_err(sql("migrate schema"))?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .map_err(sql("migrate schema"))?;
        tx.commit().map_err(sql("commit migration"))?;
    }
    Ok(())
}
