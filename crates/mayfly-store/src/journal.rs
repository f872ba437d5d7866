//! The journal of multi-step operations in flight, with the temporary paths they own.

use std::path::PathBuf;

use rusqlite::params;

use crate::{JournalEntry, Store, StoreError, from_json, now, sql, to_json};

impl Store {
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
