//! Row mapping: database rows into the store's types, in one place.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Result, StoreError, VersionInfo};

/// A JSON TEXT column, decoded; bad JSON is reported as corrupt data naming the column.
pub(super) fn json_col<T: serde::de::DeserializeOwned>(r: &sqlx::any::AnyRow, col: &str) -> Result<T> {
    let s: String = r.try_get(col)?;
    serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

/// `created_col` names the version's creation time (aliased when joined with templates).
pub(super) fn version_from_row(row: &AnyRow, created_col: &str) -> Result<VersionInfo> {
    let spec: String = row.try_get("spec")?;
    Ok(VersionInfo {
        version: row.try_get("version")?,
        spec: serde_json::from_str(&spec).map_err(|e| StoreError::Corrupt(format!("version spec: {e}")))?,
        content_hash: row.try_get("content_hash")?,
        note: row.try_get("note")?,
        author: row.try_get("author")?,
        created_at: row.try_get(created_col)?,
    })
}
