//! API keys: only a hash of each key is stored.

use sqlx::Row;

use super::{is_unique_violation, now_ms, ApiKeyInfo, Result, Store, StoreError};
use crate::templates::FieldError;

impl Store {
    // ------------------------------------------------------------------ API keys

    /// Creates a key and returns it; only its hash is stored, so this is the one time it is seen.
    pub async fn create_key(&self, name: &str) -> Result<String> {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes).map_err(|e| StoreError::Corrupt(format!("no randomness: {e}")))?;
        let key = format!("sk-studio-{}", crate::templates::hex(&bytes));
        self.add_key(name, &key).await?;
        Ok(key)
    }

    /// Stores a key chosen elsewhere (e.g. `STUDIO_API_KEY` in a deployment).
    pub async fn add_key(&self, name: &str, key: &str) -> Result<()> {
        if name.trim().is_empty() || name.chars().count() > 64 {
            return Err(FieldError::new("name", "a key name is 1 to 64 characters").into());
        }
        if key.len() < 16 {
            return Err(FieldError::new("key", "an API key is at least 16 characters").into());
        }
        let prefix: String = key.chars().take(14).collect();
        let res = sqlx::query("INSERT INTO api_keys (name, prefix, hash, created_at) VALUES ($1, $2, $3, $4)")
            .bind(name)
            .bind(prefix)
            .bind(key_hash(key))
            .bind(now_ms())
            .execute(&self.pool)
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Conflict(format!("a key named '{name}' (or this very key) already exists")))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list_keys(&self) -> Result<Vec<ApiKeyInfo>> {
        let rows = sqlx::query("SELECT name, prefix, created_at, revoked_at FROM api_keys ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ApiKeyInfo {
                    name: r.try_get("name")?,
                    prefix: r.try_get("prefix")?,
                    created_at: r.try_get("created_at")?,
                    revoked_at: r.try_get("revoked_at")?,
                })
            })
            .collect()
    }

    pub async fn revoke_key(&self, name: &str) -> Result<()> {
        let done = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no active key named '{name}'")));
        }
        Ok(())
    }

    pub async fn active_key_count(&self) -> Result<i64> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM api_keys WHERE revoked_at IS NULL").fetch_one(&self.pool).await?;
        Ok(row.try_get("n")?)
    }

    /// The name of the active key `key` is, if any.
    pub async fn verify_key(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT name FROM api_keys WHERE hash = $1 AND revoked_at IS NULL")
            .bind(key_hash(key))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("name")).transpose()?)
    }
}

pub fn key_hash(key: &str) -> String {
    use sha2::{Digest, Sha256};
    crate::templates::hex(&Sha256::digest(key.as_bytes()))
}
