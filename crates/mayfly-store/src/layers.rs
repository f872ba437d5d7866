//! The layers table: which content-addressed trees the catalogue knows.

use std::collections::HashSet;

use rusqlite::OptionalExtension;

use crate::{Store, StoreError, sql};

impl Store {
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
}
