//! The run history of the playground and template endpoints.

use sqlx::Row;

use super::rows::run_from_row;
use super::{now_ms, Result, Run, Store};

impl Store {
    // ------------------------------------------------------------------ runs

    pub async fn record_run(&self, run: &Run) -> Result<i64> {
        let template_id = match &run.template {
            Some(name) => Some(self.template_id(name).await?),
            None => None,
        };
        let row = sqlx::query(
            "INSERT INTO runs (template_id, version, variables, prompt, parameters, output, finish_reason, prompt_tokens, \
             completion_tokens, cached_tokens, latency_ms, ttft_ms, source, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
        )
        .bind(template_id)
        .bind(run.version)
        .bind(serde_json::to_string(&run.variables).expect("variables serialize"))
        .bind(&run.prompt)
        .bind(run.parameters.to_string())
        .bind(&run.output)
        .bind(&run.finish_reason)
        .bind(run.prompt_tokens)
        .bind(run.completion_tokens)
        .bind(run.cached_tokens)
        .bind(run.latency_ms)
        .bind(run.ttft_ms)
        .bind(&run.source)
        .bind(if run.created_at > 0 { run.created_at } else { now_ms() })
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("id")?)
    }

    /// The latest runs of a template, newest first.
    pub async fn list_runs(&self, name: &str, limit: i64) -> Result<Vec<Run>> {
        let id = self.template_id(name).await?;
        let rows = sqlx::query("SELECT * FROM runs WHERE template_id = $1 ORDER BY id DESC LIMIT $2")
            .bind(id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| run_from_row(r, name)).collect()
    }
}
