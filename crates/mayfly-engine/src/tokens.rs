//! API tokens: secrets shown once at creation, kept only as their SHA-256 (so a copy of the
//! state database gives no access), checked on every authenticated request. Revoking deletes
//! the hash: the next request with that secret is refused, and so is every web session made
//! from it (sessions are checked against the token's hash on each use).

use mayfly_api::{CreatedToken, TokenInfo};
use sha2::{Digest, Sha256};

use crate::{Engine, EngineError};

/// Secrets start with this, so that leaked ones are easy to recognise (and grep for).
const SECRET_PREFIX: &str = "mayfly_";

/// A token's `last_used` is written at most this often (seconds): a busy client must not
/// turn every request into a database write.
const TOUCH_EVERY: i64 = 60;

/// The lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn check_token_name(name: &str) -> Result<(), EngineError> {
    mayfly_api::names::check_instance_name(name).map_err(|e| {
        EngineError::invalid(
            e.replace("instance name", "token name"),
            "e.g. `mayfly token create ci`",
        )
    })
}

fn new_secret() -> Result<String, EngineError> {
    let mut bytes = [0u8; 32];
    rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty())
        .map_err(|e| EngineError::Internal(format!("cannot read random bytes: {e}")))?;
    let mut s = String::from(SECRET_PREFIX);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    Ok(s)
}

fn info(rec: &mayfly_store::TokenRecord) -> TokenInfo {
    TokenInfo {
        name: rec.name.clone(),
        created_at: crate::rfc3339(rec.created_at),
        last_used: rec.last_used.map(crate::rfc3339),
    }
}

impl Engine {
    /// Makes token `name`; its secret is in the answer and nowhere else.
    pub async fn create_token(&self, name: &str) -> Result<CreatedToken, EngineError> {
        check_token_name(name)?;
        let secret = new_secret()?;
        let hash = sha256_hex(secret.as_bytes());
        let n = name.to_owned();
        self.db(move |s| s.add_token(&n, &hash)).await?;
        tracing::info!(token = name, "API token created");
        Ok(CreatedToken {
            name: name.to_owned(),
            secret,
            fingerprint: None,
        })
    }

    /// Every token (never a secret).
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, EngineError> {
        let rows = self.db(|s| s.tokens()).await?;
        Ok(rows.iter().map(info).collect())
    }

    /// Revokes token `name`: its secret stops working at once.
    pub async fn revoke_token(&self, name: &str) -> Result<(), EngineError> {
        let n = name.to_owned();
        self.db(move |s| s.remove_token(&n)).await?;
        tracing::info!(token = name, "API token revoked");
        Ok(())
    }

    /// The name of the token whose secret is `secret`, if one is; records its use.
    pub async fn authenticate_token(&self, secret: &str) -> Result<Option<String>, EngineError> {
        self.token_by_hash(sha256_hex(secret.as_bytes())).await
    }

    /// The name of the token whose secret hashes to `hash`, if one is; records its use.
    pub async fn token_by_hash(&self, hash: String) -> Result<Option<String>, EngineError> {
        let now = mayfly_store::now();
        self.db(move |s| {
            let Some(rec) = s.token_by_hash(&hash)? else {
                return Ok(None);
            };
            if rec.last_used.is_none_or(|t| now - t >= TOUCH_EVERY) {
                s.touch_token(&rec.name, now)?;
            }
            Ok(Some(rec.name))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashes_are_hex_sha256() {
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let s = super::new_secret().unwrap();
        assert!(s.starts_with(super::SECRET_PREFIX) && s.len() == super::SECRET_PREFIX.len() + 64);
    }
}
