//! The API's bearer tokens: a name, the SHA-256 of the secret (never the secret), when it was
//! made and when it was last used. Revoking deletes the row: a revoked secret matches nothing.

use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError, sql};

/// A token as the catalogue holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Its name (unique).
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last successful use.
    pub last_used: Option<i64>,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        name: r.get(0)?,
        created_at: r.get(1)?,
        last_used: r.get(2)?,
    })
}

impl Store {
    /// Adds token `name` whose secret hashes to `hash`.
    pub fn add_token(&mut self, name: &str, hash: &str) -> Result<TokenRecord, StoreError> {
        let now = crate::now();
        let exists: Option<String> = self
            .conn
            .query_row("SELECT name FROM tokens WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql("look up token"))?;
        if exists.is_some() {
            return Err(StoreError::AlreadyExists {
                kind: "token",
                name: name.to_owned(),
            });
        }
        self.conn
            .execute(
                "INSERT INTO tokens (name, hash, created_at) VALUES (?1, ?2, ?3)",
                params![name, hash, now],
            )
            .map_err(sql("add token"))?;
        Ok(TokenRecord {
            name: name.to_owned(),
            created_at: now,
            last_used: None,
        })
    }

    /// Every token, by name.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, created_at, last_used FROM tokens ORDER BY name")
            .map_err(sql("list tokens"))?;
        let rows = stmt
            .query_map([], row)
            .map_err(sql("list tokens"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("list tokens"))?;
        Ok(rows)
    }

    /// The token whose secret hashes to `hash`, if any.
    pub fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.conn
            .query_row(
                "SELECT name, created_at, last_used FROM tokens WHERE hash = ?1",
                [hash],
                row,
            )
            .optional()
            .map_err(sql("look up token"))
    }

    /// Records that token `name` was used at `at` (Unix seconds).
    pub fn touch_token(&mut self, name: &str, at: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE tokens SET last_used = ?2 WHERE name = ?1",
                params![name, at],
            )
            .map_err(sql("update token"))?;
        Ok(())
    }

    /// Deletes token `name`.
    pub fn remove_token(&mut self, name: &str) -> Result<(), StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM tokens WHERE name = ?1", [name])
            .map_err(sql("remove token"))?;
        if n == 0 {
            return Err(StoreError::NotFound {
                kind: "token",
                name: name.to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_found_by_hash_and_gone_once_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = crate::Store::open(dir.path()).unwrap();
        store.add_token("ci", "h1").unwrap();
        assert!(matches!(
            store.add_token("ci", "h2"),
            Err(crate::StoreError::AlreadyExists { .. })
        ));
        assert_eq!(store.token_by_hash("h1").unwrap().unwrap().name, "ci");
        store.touch_token("ci", 42).unwrap();
        assert_eq!(store.tokens().unwrap()[0].last_used, Some(42));
        store.remove_token("ci").unwrap();
        assert!(store.token_by_hash("h1").unwrap().is_none());
        assert!(store.remove_token("ci").is_err());
    }
}
