//! Facts the daemon keeps about itself.

use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError, sql};

impl Store {
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
}
