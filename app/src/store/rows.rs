//! Row mapping: database rows into the store's types, in one place.

use sqlx::any::AnyRow;
use sqlx::Row;

use api_types::evals::RowResult;

use super::{Result, Run, StoreError, VersionInfo};

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

/// A `runs` row of the template `template`.
pub(super) fn run_from_row(r: &AnyRow, template: &str) -> Result<Run> {
    Ok(Run {
        id: r.try_get("id")?,
        template: Some(template.to_string()),
        version: r.try_get("version")?,
        variables: json_col(r, "variables")?,
        prompt: r.try_get("prompt")?,
        parameters: json_col(r, "parameters")?,
        output: r.try_get("output")?,
        finish_reason: r.try_get("finish_reason")?,
        prompt_tokens: r.try_get("prompt_tokens")?,
        completion_tokens: r.try_get("completion_tokens")?,
        cached_tokens: r.try_get("cached_tokens")?,
        latency_ms: r.try_get("latency_ms")?,
        ttft_ms: r.try_get("ttft_ms")?,
        source: r.try_get("source")?,
        created_at: r.try_get("created_at")?,
    })
}

/// An `eval_results` row.
pub(super) fn row_result_from_row(r: &AnyRow) -> Result<RowResult> {
    Ok(RowResult {
        index: r.try_get("idx")?,
        test_id: r.try_get("test_id")?,
        variables: json_col(r, "variables")?,
        expected: r.try_get("expected")?,
        output: r.try_get("output")?,
        samples: json_col(r, "samples")?,
        stability: r.try_get("stability")?,
        passed: r.try_get::<i64, _>("passed")? != 0,
        assertions: json_col(r, "assertions")?,
        prompt_tokens: r.try_get("prompt_tokens")?,
        completion_tokens: r.try_get("completion_tokens")?,
        cached_tokens: r.try_get("cached_tokens")?,
        latency_ms: r.try_get("latency_ms")?,
        error: r.try_get("error")?,
        constraint_met: r.try_get::<Option<i64>, _>("constraint_met")?.map(|m| m != 0),
    })
}
