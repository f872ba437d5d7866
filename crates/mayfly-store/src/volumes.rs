//! Volumes: data that lives outside any instance, attached to at most one at a time.
//!
//! The `volumes.instance_id` column is the lock: an attach is one
//! `UPDATE … WHERE instance_id IS NULL` inside the transaction that also writes the instance's
//! `InstanceConfig.volumes` (or inserts the instance), so of two concurrent attaches of one
//! volume exactly one changes the row and the other is refused naming the holder.

use rusqlite::{OptionalExtension, Transaction, params};

use crate::{Store, StoreError, from_json, i64_of, sql, to_json, to_u64};

/// A volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRecord {
    /// Random id (names its directory).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Size limit in bytes.
    pub size: Option<u64>,
    /// Unix seconds.
    pub created_at: i64,
    /// The instance holding it (`None`: free).
    pub instance_id: Option<String>,
    /// Its path inside that instance.
    pub path: Option<String>,
    /// Mounted read-only there.
    pub readonly: bool,
}

const COLUMNS: &str = "id, name, size, created_at, instance_id, path, readonly";

type Raw = (
    String,
    String,
    Option<i64>,
    i64,
    Option<String>,
    Option<String>,
    bool,
);

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Raw> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn decode(raw: Raw) -> Result<VolumeRecord, StoreError> {
    let (id, name, size, created_at, instance_id, path, readonly) = raw;
    Ok(VolumeRecord {
        size: size.map(|s| to_u64(s, "volume size")).transpose()?,
        id,
        name,
        created_at,
        instance_id,
        path,
        readonly,
    })
}

fn not_found(name: &str) -> StoreError {
    StoreError::NotFound {
        kind: "volume",
        name: name.to_owned(),
    }
}

/// The name of instance `id` (its id when it has no row: never expected).
fn instance_name(tx: &Transaction<'_>, id: &str) -> Result<String, StoreError> {
    Ok(tx
        .query_row("SELECT name FROM instances WHERE id = ?1", [id], |r| {
            r.get::<_, String>(0)
        })
        .optional()
        .map_err(sql("look up instance"))?
        .unwrap_or_else(|| id.to_owned()))
}

/// Takes volume `m.volume` for instance `id` inside `tx`: refused (naming the holder) when
/// another instance holds it, or when it does not exist.
fn take(tx: &Transaction<'_>, id: &str, m: &mayfly_api::VolumeMount) -> Result<(), StoreError> {
    let n = tx
        .execute(
            "UPDATE volumes SET instance_id = ?2, path = ?3, readonly = ?4
             WHERE name = ?1 AND instance_id IS NULL",
            params![m.volume, id, m.path, m.readonly],
        )
        .map_err(sql("attach volume"))?;
    if n == 1 {
        return Ok(());
    }
    let holder: Option<Option<String>> = tx
        .query_row(
            "SELECT instance_id FROM volumes WHERE name = ?1",
            [&m.volume],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql("look up volume"))?;
    match holder {
        None => Err(not_found(&m.volume)),
        Some(Some(holder)) => Err(StoreError::VolumeAttached {
            volume: m.volume.clone(),
            holder: instance_name(tx, &holder)?,
        }),
        // Freed between the two statements: cannot happen inside one transaction.
        Some(None) => Err(StoreError::Corrupt {
            what: "volume",
            detail: format!("volume `{}` could not be attached", m.volume),
        }),
    }
}

/// Attaches every volume of `mounts` to instance `id` inside `tx` (the instance's insert),
/// refusing one that another instance holds.
pub(crate) fn attach_all(
    tx: &Transaction<'_>,
    id: &str,
    mounts: &[mayfly_api::VolumeMount],
) -> Result<(), StoreError> {
    for m in mounts {
        take(tx, id, m)?;
    }
    Ok(())
}

/// Detaches every volume instance `id` holds, inside `tx` (the instance's delete).
pub(crate) fn detach_all(tx: &Transaction<'_>, id: &str) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE volumes SET instance_id = NULL, path = NULL, readonly = 0 WHERE instance_id = ?1",
        [id],
    )
    .map_err(sql("detach volumes"))?;
    Ok(())
}

/// Instance `id`'s configuration, read inside `tx`.
fn config_of(tx: &Transaction<'_>, id: &str) -> Result<crate::InstanceConfig, StoreError> {
    let raw: String = tx
        .query_row("SELECT config FROM instances WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()
        .map_err(sql("look up instance"))?
        .ok_or_else(|| StoreError::NotFound {
            kind: "instance",
            name: id.to_owned(),
        })?;
    from_json(&raw, "instance config")
}

fn set_config(
    tx: &Transaction<'_>,
    id: &str,
    config: &crate::InstanceConfig,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE instances SET config = ?2 WHERE id = ?1",
        params![id, to_json(config)],
    )
    .map_err(sql("update instance settings"))?;
    Ok(())
}

impl Store {
    /// Catalogues volume `rec` (its directory is in place), refusing a taken name.
    pub fn insert_volume(&mut self, rec: &VolumeRecord) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO volumes (id, name, size, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![rec.id, rec.name, rec.size.map(i64_of), rec.created_at],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    StoreError::AlreadyExists {
                        kind: "volume",
                        name: rec.name.clone(),
                    }
                }
                e => sql("insert volume")(e),
            })?;
        Ok(())
    }

    /// Every volume, by name.
    pub fn volumes(&self) -> Result<Vec<VolumeRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM volumes ORDER BY name"))
            .map_err(sql("list volumes"))?;
        let rows = stmt.query_map([], from_row).map_err(sql("list volumes"))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(decode(row.map_err(sql("list volumes"))?)?);
        }
        Ok(out)
    }

    /// Volume `name`.
    pub fn volume(&self, name: &str) -> Result<VolumeRecord, StoreError> {
        let raw = self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM volumes WHERE name = ?1"),
                [name],
                from_row,
            )
            .optional()
            .map_err(sql("look up volume"))?
            .ok_or_else(|| not_found(name))?;
        decode(raw)
    }

    /// Removes volume `name`'s row (its directory goes after), refused while it is attached.
    pub fn delete_volume(&mut self, name: &str) -> Result<VolumeRecord, StoreError> {
        let tx = self.conn.transaction().map_err(sql("begin"))?;
        let rec = tx
            .query_row(
                &format!("SELECT {COLUMNS} FROM volumes WHERE name = ?1"),
                [name],
                from_row,
            )
            .optional()
            .map_err(sql("look up volume"))?
            .ok_or_else(|| not_found(name))
            .and_then(decode)?;
        if let Some(holder) = &rec.instance_id {
            return Err(StoreError::VolumeAttached {
                volume: name.to_owned(),
                holder: instance_name(&tx, holder)?,
            });
        }
        tx.execute(
            "DELETE FROM volumes WHERE name = ?1 AND instance_id IS NULL",
            [name],
        )
        .map_err(sql("delete volume"))?;
        tx.commit().map_err(sql("commit"))?;
        Ok(rec)
    }

    /// Attaches volume `m.volume` to instance `id` and adds it to the instance's
    /// configuration, in one transaction (refused naming the holder when it is attached).
    pub fn attach_volume(
        &mut self,
        id: &str,
        m: &mayfly_api::VolumeMount,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(sql("begin"))?;
        let mut config = config_of(&tx, id)?;
        take(&tx, id, m)?;
        config.volumes.push(m.clone());
        set_config(&tx, id, &config)?;
        tx.commit().map_err(sql("commit"))
    }

    /// Detaches volume `name` from instance `id` and drops it from the instance's
    /// configuration, in one transaction. Returns false when `id` did not hold it.
    pub fn detach_volume(&mut self, id: &str, name: &str) -> Result<bool, StoreError> {
        let tx = self.conn.transaction().map_err(sql("begin"))?;
        let mut config = config_of(&tx, id)?;
        let n = tx
            .execute(
                "UPDATE volumes SET instance_id = NULL, path = NULL, readonly = 0
                 WHERE name = ?1 AND instance_id = ?2",
                params![name, id],
            )
            .map_err(sql("detach volume"))?;
        if n == 0 {
            return Ok(false);
        }
        config.volumes.retain(|m| m.volume != name);
        set_config(&tx, id, &config)?;
        tx.commit().map_err(sql("commit"))?;
        Ok(true)
    }

    /// The name of the instance with id `id`, if it exists.
    pub fn instance_name_of(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT name FROM instances WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql("look up instance"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{instance, open, with_template};
    use mayfly_api::{Mode, VolumeMount};

    fn vol(name: &str) -> VolumeRecord {
        VolumeRecord {
            id: format!("id-{name}"),
            name: name.into(),
            size: Some(1 << 20),
            created_at: 1,
            instance_id: None,
            path: None,
            readonly: false,
        }
    }

    fn mount(name: &str) -> VolumeMount {
        VolumeMount {
            volume: name.into(),
            path: "/srv/data".into(),
            readonly: false,
        }
    }

    #[test]
    fn volumes_are_created_once_listed_and_removed_only_when_free() {
        let (_d, mut s) = open();
        s.insert_volume(&vol("data")).unwrap();
        assert!(matches!(
            s.insert_volume(&vol("data")),
            Err(StoreError::AlreadyExists { .. })
        ));
        assert_eq!(s.volume("data").unwrap().size, Some(1 << 20));
        assert_eq!(s.volumes().unwrap().len(), 1);
        assert!(matches!(
            s.volume("nope"),
            Err(StoreError::NotFound { kind: "volume", .. })
        ));
        s.delete_volume("data").unwrap();
        assert!(s.volumes().unwrap().is_empty());
    }

    #[test]
    fn a_volume_has_one_holder_and_is_freed_by_its_holders_delete() {
        let (_d, mut s) = open();
        with_template(&mut s);
        s.insert_volume(&vol("data")).unwrap();
        let mut a = instance("a", "t", Mode::Persistent);
        a.config.volumes = vec![mount("data")];
        s.insert_instance(&mut a, false).unwrap();
        // A second instance naming it is refused as a whole: no row.
        let mut b = instance("b", "t", Mode::Persistent);
        b.config.volumes = vec![mount("data")];
        match s.insert_instance(&mut b, false) {
            Err(StoreError::VolumeAttached { volume, holder }) => {
                assert_eq!((volume.as_str(), holder.as_str()), ("data", "a"));
            }
            other => panic!("{other:?}"),
        }
        assert!(s.instance("b").is_err());
        assert!(matches!(
            s.delete_volume("data"),
            Err(StoreError::VolumeAttached { .. })
        ));
        let mut c = instance("c", "t", Mode::Persistent);
        s.insert_instance(&mut c, false).unwrap();
        assert!(matches!(
            s.attach_volume("id-c", &mount("data")),
            Err(StoreError::VolumeAttached { .. })
        ));
        assert!(s.instance("c").unwrap().config.volumes.is_empty());
        // Detach by the wrong instance changes nothing; by the holder it frees it.
        assert!(!s.detach_volume("id-c", "data").unwrap());
        assert!(s.detach_volume("id-a", "data").unwrap());
        assert!(s.instance("a").unwrap().config.volumes.is_empty());
        s.attach_volume("id-c", &mount("data")).unwrap();
        assert_eq!(s.instance("c").unwrap().config.volumes, vec![mount("data")]);
        let held = s.volume("data").unwrap();
        assert_eq!(held.instance_id.as_deref(), Some("id-c"));
        assert_eq!(held.path.as_deref(), Some("/srv/data"));
        s.delete_instance("id-c", Mode::Persistent).unwrap();
        assert_eq!(s.volume("data").unwrap().instance_id, None);
        s.delete_volume("data").unwrap();
    }
}
