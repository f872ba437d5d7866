//! Schedules: actions run on an instance at the times of a cron expression.
//!
//! The catalogue keeps each schedule's expression (as given, already checked by the engine),
//! when it last ran and what went wrong then. The engine's scheduler computes the next due
//! time from `last_run` (or `created_at`), so a run missed while no daemon ran is due once.

use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError, sql};

/// A schedule as the catalogue holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRecord {
    /// Its id (unique on the host, never reused).
    pub id: u64,
    /// The instance's id.
    pub instance_id: String,
    /// The instance's current name.
    pub instance: String,
    /// What it does.
    pub action: mayfly_api::ScheduleAction,
    /// The cron expression, as given.
    pub cron: String,
    /// Snapshots kept (snapshot schedules).
    pub keep: Option<u32>,
    /// Unix seconds.
    pub created_at: i64,
    /// When it last ran (Unix seconds, as the scheduler's clock read).
    pub last_run: Option<i64>,
    /// What went wrong at its last run.
    pub last_error: Option<String>,
}

const COLUMNS: &str =
    "s.id, s.instance_id, i.name, s.action, s.cron, s.keep, s.created_at, s.last_run, s.last_error";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ScheduleRecord> {
    let action: String = r.get(3)?;
    let action = action.parse().map_err(|e: String| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, e.into())
    })?;
    let id: i64 = r.get(0)?;
    Ok(ScheduleRecord {
        id: u64::try_from(id).unwrap_or(0),
        instance_id: r.get(1)?,
        instance: r.get(2)?,
        action,
        cron: r.get(4)?,
        keep: r
            .get::<_, Option<i64>>(5)?
            .map(|k| u32::try_from(k).unwrap_or(u32::MAX)),
        created_at: r.get(6)?,
        last_run: r.get(7)?,
        last_error: r.get(8)?,
    })
}

impl Store {
    /// Adds a schedule to instance `instance_id`, created now; returns its id.
    pub fn add_schedule(
        &mut self,
        instance_id: &str,
        action: mayfly_api::ScheduleAction,
        cron: &str,
        keep: Option<u32>,
    ) -> Result<u64, StoreError> {
        self.add_schedule_at(instance_id, action, cron, keep, crate::now())
    }

    /// Adds a schedule to instance `instance_id`, created at `created_at` (Unix seconds, as
    /// the scheduler's clock reads); returns its id.
    pub fn add_schedule_at(
        &mut self,
        instance_id: &str,
        action: mayfly_api::ScheduleAction,
        cron: &str,
        keep: Option<u32>,
        created_at: i64,
    ) -> Result<u64, StoreError> {
        self.conn
            .execute(
                "INSERT INTO schedules (instance_id, action, cron, keep, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![instance_id, action.as_str(), cron, keep, created_at],
            )
            .map_err(sql("add a schedule"))?;
        Ok(u64::try_from(self.conn.last_insert_rowid()).unwrap_or(0))
    }

    /// Every schedule (of instance `instance_id` only, when given), by id.
    pub fn schedules(&self, instance_id: Option<&str>) -> Result<Vec<ScheduleRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM schedules s JOIN instances i ON i.id = s.instance_id
                 WHERE ?1 IS NULL OR s.instance_id = ?1 ORDER BY s.id"
            ))
            .map_err(sql("list schedules"))?;
        let rows = stmt
            .query_map([instance_id], row)
            .map_err(sql("list schedules"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(sql("read schedules"))
    }

    /// Schedule `id`.
    pub fn schedule(&self, id: u64) -> Result<ScheduleRecord, StoreError> {
        let id_sql = i64::try_from(id).unwrap_or(-1);
        self.conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM schedules s JOIN instances i ON i.id = s.instance_id
                     WHERE s.id = ?1"
                ),
                [id_sql],
                row,
            )
            .optional()
            .map_err(sql("read a schedule"))?
            .ok_or_else(|| StoreError::NotFound {
                kind: "schedule",
                name: id.to_string(),
            })
    }

    /// Removes schedule `id` of instance `instance_id` (not found: no such schedule there).
    pub fn remove_schedule(&mut self, instance_id: &str, id: u64) -> Result<(), StoreError> {
        let id_sql = i64::try_from(id).unwrap_or(-1);
        let n = self
            .conn
            .execute(
                "DELETE FROM schedules WHERE id = ?1 AND instance_id = ?2",
                params![id_sql, instance_id],
            )
            .map_err(sql("remove a schedule"))?;
        if n == 0 {
            return Err(StoreError::NotFound {
                kind: "schedule",
                name: id.to_string(),
            });
        }
        Ok(())
    }

    /// Records what stands in the way of schedule `id` without recording a run (it is
    /// tried again).
    pub fn set_schedule_error(&mut self, id: u64, error: &str) -> Result<(), StoreError> {
        let id_sql = i64::try_from(id).unwrap_or(-1);
        self.conn
            .execute(
                "UPDATE schedules SET last_error = ?2 WHERE id = ?1",
                params![id_sql, error],
            )
            .map_err(sql("record a schedule's error"))?;
        Ok(())
    }

    /// Records a run of schedule `id` at `at` (Unix seconds) and how it went.
    pub fn set_schedule_run(
        &mut self,
        id: u64,
        at: i64,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let id_sql = i64::try_from(id).unwrap_or(-1);
        self.conn
            .execute(
                "UPDATE schedules SET last_run = ?2, last_error = ?3 WHERE id = ?1",
                params![id_sql, at, error],
            )
            .map_err(sql("record a schedule's run"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use mayfly_api::{Mode, ScheduleAction};

    use crate::Store;
    use crate::tests::{instance, open, with_template};

    fn add(s: &mut Store, name: &str) -> String {
        let mut r = instance(name, "t", Mode::Persistent);
        s.insert_instance(&mut r, false).unwrap();
        r.id
    }

    #[test]
    fn schedules_are_added_listed_run_and_removed() {
        let (_dir, mut s) = open();
        with_template(&mut s);
        let a = add(&mut s, "a");
        let b = add(&mut s, "b");
        let one = s
            .add_schedule(&a, ScheduleAction::Reset, "0 3 * * *", None)
            .unwrap();
        let two = s
            .add_schedule(&b, ScheduleAction::Snapshot, "@hourly", Some(3))
            .unwrap();
        assert!(two > one);
        let all = s.schedules(None).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].instance, "b");
        assert_eq!(all[1].keep, Some(3));
        assert_eq!(s.schedules(Some(&a)).unwrap().len(), 1);
        s.set_schedule_run(one, 1234, Some("busy")).unwrap();
        let r = s.schedule(one).unwrap();
        assert_eq!(
            (r.last_run, r.last_error.as_deref()),
            (Some(1234), Some("busy"))
        );
        // Only through its own instance.
        assert!(s.remove_schedule(&a, two).is_err());
        s.remove_schedule(&b, two).unwrap();
        assert!(s.schedule(two).is_err());
        // Deleting the instance deletes its schedules.
        s.delete_instance(&a, Mode::Persistent).unwrap();
        assert!(s.schedule(one).is_err());
        // Ids are never reused.
        let three = s
            .add_schedule(&b, ScheduleAction::Restart, "* * * * *", None)
            .unwrap();
        assert!(three > two);
    }
}
