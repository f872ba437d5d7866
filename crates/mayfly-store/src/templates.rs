//! Templates and their versions: the name, its pointer to the current version, and each
//! version's layers, defaults and meta.

use rusqlite::{OptionalExtension, params};

use crate::{
    LayerRecord, NewVersion, Store, StoreError, TemplateRecord, VersionRecord, from_json, i64_of,
    now, sql, to_json, to_u32, to_u64,
};

/// Whether application reference `reference` (`NAME` or `NAME@N`) names template `name`:
/// `Some(None)` when it follows the name, `Some(Some(n))` when pinned to version n.
fn app_version(reference: &str, name: &str) -> Option<Option<u32>> {
    match reference.split_once('@') {
        None => (reference == name).then_some(None),
        Some((n, v)) => (n == name).then(|| v.parse().ok()).flatten().map(Some),
    }
}

impl Store {
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
            "UPDATE templates SET previous_version = current_version, current_version = ?2 WHERE name = ?1",
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
                "SELECT current_version, builtin, created_at, previous_version FROM templates WHERE name = ?1",
                [name],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, bool>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(sql("look up template"))?;
        let Some((current, builtin, created_at, previous)) = row else {
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
            previous_version: previous
                .map(|v| to_u32(v, "template version"))
                .transpose()?
                .filter(|v| versions.iter().any(|r| r.version == *v)),
            builtin,
            created_at,
            versions,
        })
    }

    /// Points template `name` at its existing version `version`, remembering where it pointed
    /// before (unless it already points there).
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
                "UPDATE templates SET previous_version =
                     CASE WHEN ?2 > current_version THEN current_version ELSE NULL END,
                     current_version = ?2
                 WHERE name = ?1 AND current_version != ?2",
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
        // Its number may be given again to a later version, which was never current.
        tx.execute(
            "UPDATE templates SET previous_version = NULL WHERE name = ?1 AND previous_version = ?2",
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
}
