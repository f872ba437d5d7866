//! Flavors people created (named presets of limits). The built-in ones are the API crate's
//! and never stored; the engine keeps their names out of this table.

use mayfly_api::Limits;
use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError, from_json, sql, to_json};

/// A flavor as the catalogue keeps it. Flavors are immutable: created, then only removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlavorRecord {
    /// Unique name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Its limits.
    pub limits: Limits,
    /// Unix seconds.
    pub created_at: i64,
}

fn flavor_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn decode(
    (name, description, limits, created_at): (String, String, String, i64),
) -> Result<FlavorRecord, StoreError> {
    Ok(FlavorRecord {
        limits: from_json(&limits, "flavor limits")?,
        name,
        description,
        created_at,
    })
}

impl Store {
    /// Every stored flavor, by name.
    pub fn flavors(&self) -> Result<Vec<FlavorRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, description, limits, created_at FROM flavors ORDER BY name")
            .map_err(sql("list flavors"))?;
        let rows = stmt
            .query_map([], flavor_from_row)
            .map_err(sql("list flavors"))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(decode(row.map_err(sql("list flavors"))?)?);
        }
        Ok(out)
    }

    /// Stored flavor `name`.
    pub fn flavor(&self, name: &str) -> Result<FlavorRecord, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT name, description, limits, created_at FROM flavors WHERE name = ?1",
                [name],
                flavor_from_row,
            )
            .optional()
            .map_err(sql("look up flavor"))?;
        match row {
            Some(row) => decode(row),
            None => Err(StoreError::NotFound {
                kind: "flavor",
                name: name.to_owned(),
            }),
        }
    }

    /// Stores a new flavor, refusing a taken name.
    pub fn insert_flavor(&mut self, flavor: &FlavorRecord) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(sql("begin"))?;
        let exists = tx
            .query_row(
                "SELECT 1 FROM flavors WHERE name = ?1",
                [&flavor.name],
                |_| Ok(()),
            )
            .optional()
            .map_err(sql("look up flavor"))?
            .is_some();
        if exists {
            return Err(StoreError::AlreadyExists {
                kind: "flavor",
                name: flavor.name.clone(),
            });
        }
        tx.execute(
            "INSERT INTO flavors (name, description, limits, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![
                flavor.name,
                flavor.description,
                to_json(&flavor.limits),
                flavor.created_at
            ],
        )
        .map_err(sql("insert flavor"))?;
        tx.commit().map_err(sql("commit"))
    }

    /// The names of the instances whose limits come from flavor `name`, by name.
    pub fn flavor_users(&self, name: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .instances()?
            .into_iter()
            .filter(|r| r.config.flavor.as_deref() == Some(name))
            .map(|r| r.name)
            .collect())
    }

    /// Removes flavor `name`, refusing while instances or template versions (published with
    /// their limits) use it, naming them. The check and
    /// the removal are one transaction: no launch can slip in between.
    pub fn delete_flavor(&mut self, name: &str) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(sql("begin"))?;
        let users = {
            let mut stmt = tx
                .prepare("SELECT name, config FROM instances ORDER BY name")
                .map_err(sql("list instances"))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(sql("list instances"))?;
            let mut users = Vec::new();
            for row in rows {
                let (instance, config) = row.map_err(sql("list instances"))?;
                let config: crate::InstanceConfig = from_json(&config, "instance config")?;
                if config.flavor.as_deref() == Some(name) {
                    users.push(instance);
                }
            }
            // Template versions published with `--limits` name it too: their instances
            // would get it at launch.
            let mut stmt = tx
                .prepare("SELECT template, version, config FROM template_versions ORDER BY template, version")
                .map_err(sql("list template versions"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, u32>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(sql("list template versions"))?;
            for row in rows {
                let (template, version, config) = row.map_err(sql("list template versions"))?;
                let config: mayfly_api::TemplateConfig = from_json(&config, "template config")?;
                if config.flavor.as_deref() == Some(name) {
                    users.push(format!("template {template} version {version}"));
                }
            }
            users
        };
        if !users.is_empty() {
            return Err(StoreError::FlavorInUse {
                flavor: name.to_owned(),
                users,
            });
        }
        let n = tx
            .execute("DELETE FROM flavors WHERE name = ?1", [name])
            .map_err(sql("delete flavor"))?;
        if n == 0 {
            return Err(StoreError::NotFound {
                kind: "flavor",
                name: name.to_owned(),
            });
        }
        tx.commit().map_err(sql("commit"))
    }
}

#[cfg(test)]
mod tests {
    use mayfly_api::{Limits, Mode};

    use super::FlavorRecord;
    use crate::StoreError;
    use crate::tests::{instance, open, with_template};

    fn flavor(name: &str, memory: u64) -> FlavorRecord {
        FlavorRecord {
            name: name.into(),
            description: format!("{name} things"),
            limits: Limits {
                pids: Some(100),
                memory: Some(memory),
                ..Limits::default()
            },
            created_at: 7,
        }
    }

    #[test]
    fn flavors_round_trip_and_refuse_taken_names() {
        let (_d, mut s) = open();
        s.insert_flavor(&flavor("web", 1 << 30)).unwrap();
        s.insert_flavor(&flavor("db", 2 << 30)).unwrap();
        let e = s.insert_flavor(&flavor("web", 5)).unwrap_err();
        assert!(
            matches!(e, StoreError::AlreadyExists { kind: "flavor", .. }),
            "{e}"
        );
        let names: Vec<_> = s.flavors().unwrap().into_iter().map(|f| f.name).collect();
        assert_eq!(names, ["db", "web"]);
        assert_eq!(s.flavor("web").unwrap(), flavor("web", 1 << 30));
        let e = s.flavor("nope").unwrap_err();
        assert!(
            matches!(e, StoreError::NotFound { kind: "flavor", .. }),
            "{e}"
        );
    }

    #[test]
    fn a_used_flavor_cannot_be_removed_and_the_refusal_names_its_users() {
        let (_d, mut s) = open();
        with_template(&mut s);
        s.insert_flavor(&flavor("web", 1 << 30)).unwrap();
        for name in ["b", "a", "other"] {
            let mut rec = instance(name, "t", Mode::Persistent);
            if name != "other" {
                rec.config.flavor = Some("web".into());
            }
            s.insert_instance(&mut rec, false).unwrap();
        }
        assert_eq!(s.flavor_users("web").unwrap(), ["a", "b"]);
        match s.delete_flavor("web").unwrap_err() {
            StoreError::FlavorInUse { flavor, users } => {
                assert_eq!(flavor, "web");
                assert_eq!(users, ["a", "b"]);
            }
            e => panic!("not an in-use refusal: {e}"),
        }
        assert!(s.flavor("web").is_ok(), "the refusal removed it");
        s.delete_instance("id-a", Mode::Persistent).unwrap();
        s.delete_instance("id-b", Mode::Persistent).unwrap();
        s.delete_flavor("web").unwrap();
        assert!(s.flavors().unwrap().is_empty());
        let e = s.delete_flavor("web").unwrap_err();
        assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
    }

    #[test]
    fn limits_flavor_and_pause_are_kept_and_the_end_of_a_run_clears_the_pause() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state");
        let mut s = crate::Store::open(&root).unwrap();
        with_template(&mut s);
        let mut rec = instance("a", "t", Mode::Persistent);
        rec.config.flavor = Some("small".into());
        rec.config.limits.pids = Some(64);
        s.insert_instance(&mut rec, false).unwrap();
        assert!(!s.instance("a").unwrap().paused);
        let run = crate::RunRecord {
            pid: 42,
            start_time: 7,
            boot_id: "b".into(),
            version: 1,
            started_at: 3,
            apps: Vec::new(),
        };
        s.set_run("id-a", Mode::Persistent, Some(&run), None)
            .unwrap();
        s.set_paused("id-a", true).unwrap();
        // Another record of the running state keeps the pause; a daemon restart too.
        s.set_run("id-a", Mode::Persistent, Some(&run), None)
            .unwrap();
        drop(s);
        let mut s = crate::Store::open(&root).unwrap();
        let got = s.instance("a").unwrap();
        assert!(got.paused);
        assert_eq!(got.config.flavor.as_deref(), Some("small"));
        assert_eq!(got.config.limits.pids, Some(64));
        // A change of settings is kept.
        let mut config = got.config.clone();
        config.limits.memory = Some(1 << 30);
        config.flavor = None;
        s.set_instance_config("id-a", &config).unwrap();
        assert_eq!(s.instance("a").unwrap().config, config);
        // The end of the run clears it.
        s.set_run("id-a", Mode::Persistent, None, None).unwrap();
        assert!(!s.instance("a").unwrap().paused);
        s.set_paused("id-a", true).unwrap();
        s.set_paused("id-a", false).unwrap();
        assert!(!s.instance("a").unwrap().paused);
        let e = s.set_paused("id-nope", true).unwrap_err();
        assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
    }

    #[test]
    fn exit_records_written_before_oom_counts_read_as_none() {
        let old = r#"{"code":0,"signal":null,"at":5}"#;
        let exit: crate::ExitRecord = serde_json::from_str(old).unwrap();
        assert_eq!(exit.oom_kills, 0);
        let config: crate::InstanceConfig = serde_json::from_str(r#"{"command":[]}"#).unwrap();
        assert_eq!((config.flavor, config.limits), (None, Limits::default()));
    }

    #[test]
    fn a_catalogue_of_schema_6_gets_flavors_and_unpaused_instances() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state");
        {
            let mut s = crate::Store::open(&root).unwrap();
            with_template(&mut s);
            s.insert_instance(&mut instance("a", "t", Mode::Persistent), false)
                .unwrap();
        }
        let conn = rusqlite::Connection::open(root.join("mayfly.db")).unwrap();
        conn.execute_batch(crate::schema::BACK_TO_7).unwrap();
        conn.execute_batch(
            "DROP TABLE flavors; ALTER TABLE instances DROP COLUMN paused; PRAGMA user_version = 6;",
        )
        .unwrap();
        drop(conn);
        let mut s = crate::Store::open(&root).unwrap();
        assert!(!s.instance("a").unwrap().paused);
        assert!(s.flavors().unwrap().is_empty());
        s.insert_flavor(&flavor("web", 1 << 30)).unwrap();
    }
}
