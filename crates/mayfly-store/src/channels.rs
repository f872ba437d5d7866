//! Channels: a directory shared by a server instance (read-write) and a client (read-only).

use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError, sql};

/// A channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    /// Its name.
    pub name: String,
    /// The server instance's id.
    pub server: String,
    /// The client instance's id.
    pub client: String,
    /// Unix seconds.
    pub created_at: i64,
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChannelRecord> {
    Ok(ChannelRecord {
        name: r.get(0)?,
        server: r.get(1)?,
        client: r.get(2)?,
        created_at: r.get(3)?,
    })
}

impl Store {
    /// Catalogues channel `rec`, refusing a taken name.
    pub fn create_channel(&mut self, rec: &ChannelRecord) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(sql("begin"))?;
        let exists = tx
            .query_row(
                "SELECT 1 FROM channels WHERE name = ?1",
                [&rec.name],
                |_| Ok(()),
            )
            .optional()
            .map_err(sql("look up channel"))?
            .is_some();
        if exists {
            return Err(StoreError::AlreadyExists {
                kind: "channel",
                name: rec.name.clone(),
            });
        }
        tx.execute(
            "INSERT INTO channels (name, server, client, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![rec.name, rec.server, rec.client, rec.created_at],
        )
        .map_err(sql("insert channel"))?;
        tx.commit().map_err(sql("commit"))
    }

    /// Every channel, by name.
    pub fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, server, client, created_at FROM channels ORDER BY name")
            .map_err(sql("list channels"))?;
        stmt.query_map([], from_row)
            .map_err(sql("list channels"))?
            .collect::<Result<_, _>>()
            .map_err(sql("list channels"))
    }

    /// The channels instance `id` serves or uses.
    pub fn channels_of(&self, id: &str) -> Result<Vec<ChannelRecord>, StoreError> {
        Ok(self
            .channels()?
            .into_iter()
            .filter(|c| c.server == id || c.client == id)
            .collect())
    }

    /// Deletes channel `name` (its directory is the caller's).
    pub fn delete_channel(&mut self, name: &str) -> Result<ChannelRecord, StoreError> {
        let rec = self
            .conn
            .query_row(
                "SELECT name, server, client, created_at FROM channels WHERE name = ?1",
                [name],
                from_row,
            )
            .optional()
            .map_err(sql("look up channel"))?
            .ok_or_else(|| StoreError::NotFound {
                kind: "channel",
                name: name.to_owned(),
            })?;
        self.conn
            .execute("DELETE FROM channels WHERE name = ?1", [name])
            .map_err(sql("delete channel"))?;
        Ok(rec)
    }
}
