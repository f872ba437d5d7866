//! Snapshots of instances' writable layers.

use std::collections::HashSet;

use rusqlite::{OptionalExtension, params};

use crate::{SnapshotRecord, Store, StoreError, from_json, i64_of, sql, to_json, to_u32, to_u64};

impl Store {
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
}
