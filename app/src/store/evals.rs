//! Persistence of test sets, eval runs and their per-row results, and the eval gate flag
//! (the same queries on SQLite and PostgreSQL, like [`crate::store`]).

use sqlx::any::AnyRow;
use sqlx::Row;

use super::rows::{json_col, row_result_from_row};
use super::{finish, now_ms, Result, Store, StoreError};
use crate::templates::FieldError;
use api_types::evals::{EvalPlan, EvalRun, EvalStatus, EvalSummary, RowResult, TestCase, TestRow, MAX_TEST_ROWS};

/// Import mode of a test set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportMode {
    Replace,
    Append,
}

impl ImportMode {
    pub fn parse(s: &str) -> std::result::Result<Self, FieldError> {
        match s {
            "replace" => Ok(ImportMode::Replace),
            "append" => Ok(ImportMode::Append),
            other => Err(FieldError::new("mode", format!("must be 'replace' or 'append', got {other:?}"))),
        }
    }
}

fn not_found(name: &str) -> StoreError {
    StoreError::NotFound(format!("no template named '{name}'"))
}

const RUN_COLUMNS: &str = "r.*, t.name AS template_name";

impl Store {
    async fn eval_template_id(&self, name: &str) -> Result<i64> {
        sqlx::query("SELECT id FROM templates WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .map(|r| r.try_get::<i64, _>("id"))
            .transpose()?
            .ok_or_else(|| not_found(name))
    }

    /// Turns the production eval gate on or off.
    pub async fn set_eval_gate(&self, name: &str, on: bool) -> Result<()> {
        let done = sqlx::query("UPDATE templates SET eval_gate = $1, updated_at = $2 WHERE name = $3")
            .bind(i64::from(on))
            .bind(now_ms())
            .bind(name)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found(name));
        }
        Ok(())
    }

    // -------------------------------------------------------------- test sets

    /// Writes a test set in one transaction: all rows or none. Returns the set's size.
    pub async fn import_tests(&self, name: &str, rows: &[TestRow], mode: ImportMode) -> Result<i64> {
        let id = self.eval_template_id(name).await?;
        let mut tx = self.pool().begin().await?;
        let result = async {
            // Imports into one template run one at a time, on both backends: this write takes
            // the template row's lock (PostgreSQL) or the database's write lock (SQLite) before
            // anything is read, until commit, so the next import reads `MAX(position)` after
            // this one's rows are in.
            sqlx::query("UPDATE templates SET version_count = version_count WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            if mode == ImportMode::Replace {
                sqlx::query("DELETE FROM test_cases WHERE template_id = $1").bind(id).execute(&mut *tx).await?;
            }
            let start: i64 =
                sqlx::query("SELECT COALESCE(MAX(position) + 1, 0) AS p FROM test_cases WHERE template_id = $1")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("p")?;
            if start as usize + rows.len() > MAX_TEST_ROWS {
                return Err(StoreError::Invalid(FieldError::new(
                    "file",
                    format!(
                        "a test set holds at most {} rows; this would make {}",
                        MAX_TEST_ROWS,
                        start as usize + rows.len()
                    ),
                )));
            }
            let now = now_ms();
            for (i, r) in rows.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO test_cases (template_id, position, variables, expected, assertions, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(id)
                .bind(start + i as i64)
                .bind(serde_json::to_string(&r.variables).expect("variables serialize"))
                .bind(r.expected.clone())
                .bind(serde_json::to_string(&r.assertions).expect("assertions serialize"))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            Ok(start + rows.len() as i64)
        }
        .await;
        finish(tx, result).await
    }

    pub async fn list_tests(&self, name: &str) -> Result<Vec<TestCase>> {
        let id = self.eval_template_id(name).await?;
        let rows = sqlx::query("SELECT * FROM test_cases WHERE template_id = $1 ORDER BY position")
            .bind(id)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .enumerate()
            .map(|(i, r)| {
                Ok(TestCase {
                    id: r.try_get("id")?,
                    index: i as i64,
                    row: TestRow {
                        variables: json_col(r, "variables")?,
                        expected: r.try_get("expected")?,
                        assertions: json_col(r, "assertions")?,
                    },
                })
            })
            .collect()
    }

    /// Replaces one test case of the template in place (same position).
    pub async fn update_test(&self, name: &str, test_id: i64, row: &TestRow) -> Result<()> {
        let id = self.eval_template_id(name).await?;
        let done = sqlx::query(
            "UPDATE test_cases SET variables = $1, expected = $2, assertions = $3 WHERE id = $4 AND template_id = $5",
        )
        .bind(serde_json::to_string(&row.variables).expect("variables serialize"))
        .bind(row.expected.clone())
        .bind(serde_json::to_string(&row.assertions).expect("assertions serialize"))
        .bind(test_id)
        .bind(id)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("template '{name}' has no test case {test_id}")));
        }
        Ok(())
    }

    /// Deletes one test case of the template; the others keep their order.
    pub async fn delete_test(&self, name: &str, test_id: i64) -> Result<()> {
        let id = self.eval_template_id(name).await?;
        let done = sqlx::query("DELETE FROM test_cases WHERE id = $1 AND template_id = $2")
            .bind(test_id)
            .bind(id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("template '{name}' has no test case {test_id}")));
        }
        Ok(())
    }

    pub async fn delete_tests(&self, name: &str) -> Result<()> {
        let id = self.eval_template_id(name).await?;
        sqlx::query("DELETE FROM test_cases WHERE template_id = $1").bind(id).execute(self.pool()).await?;
        Ok(())
    }

    // -------------------------------------------------------------- runs

    pub async fn create_eval_run(&self, plan: &EvalPlan, total: usize, actor: &str) -> Result<i64> {
        let id = self.eval_template_id(&plan.template).await?;
        let s = &plan.settings;
        let row = sqlx::query(
            "INSERT INTO eval_runs (template_id, version, spec, status, total, n, temperature, seed, max_tokens, model, tp, \
             created_by, created_at, owner, lease_until, constraint_met) \
             VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING id",
        )
        .bind(id)
        .bind(plan.version)
        .bind(serde_json::to_string(&plan.spec).expect("spec serializes"))
        .bind(total as i64)
        .bind(s.n as i64)
        .bind(f64::from(s.temperature))
        .bind(s.seed as i64)
        .bind(s.max_tokens as i64)
        .bind(&s.model)
        .bind(s.tp as i64)
        .bind(actor)
        .bind(now_ms())
        .bind(self.replica())
        .bind(now_ms() + self.lease_ms())
        // Counted from 0 when the version has a constraint; NULL (and NULL + 1 stays NULL)
        // when it has none.
        .bind(plan.spec.output.is_some().then_some(0i64))
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Records which test set a run scores (right after it is created, before it starts).
    pub async fn set_eval_tests_hash(&self, id: i64, hash: &str) -> Result<()> {
        sqlx::query("UPDATE eval_runs SET tests_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    fn run_from_row(r: &AnyRow) -> Result<EvalRun> {
        let status: String = r.try_get("status")?;
        let done: i64 = r.try_get("done")?;
        let passed: i64 = r.try_get("passed")?;
        let stability_sum: f64 = r.try_get("stability_sum")?;
        let temperature: f64 = r.try_get("temperature")?;
        let summary = EvalSummary {
            id: r.try_get("id")?,
            template: r.try_get("template_name")?,
            version: r.try_get("version")?,
            status: EvalStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("eval status {status:?}")))?,
            done,
            total: r.try_get("total")?,
            passed,
            pass_rate: (done > 0).then(|| passed as f64 / done as f64),
            n: r.try_get::<i64, _>("n")? as usize,
            temperature: temperature as f32,
            seed: r.try_get::<i64, _>("seed")? as u64,
            model: r.try_get("model")?,
            tp: r.try_get::<i64, _>("tp")? as usize,
            stability: (done > 0).then(|| stability_sum / done as f64),
            constraint_met: r.try_get("constraint_met")?,
            created_at: r.try_get("created_at")?,
            started_at: r.try_get("started_at")?,
            finished_at: r.try_get("finished_at")?,
            tests_hash: r.try_get("tests_hash")?,
        };
        Ok(EvalRun {
            summary,
            max_tokens: r.try_get::<i64, _>("max_tokens")? as usize,
            prompt_tokens: r.try_get("prompt_tokens")?,
            completion_tokens: r.try_get("completion_tokens")?,
            cached_tokens: r.try_get("cached_tokens")?,
            error: r.try_get("error")?,
            created_by: r.try_get("created_by")?,
            spec: json_col(r, "spec")?,
        })
    }

    pub async fn eval_run(&self, id: i64) -> Result<EvalRun> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM eval_runs r JOIN templates t ON t.id = r.template_id WHERE r.id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no eval run {id}")))?;
        Self::run_from_row(&row)
    }

    pub async fn eval_status(&self, id: i64) -> Result<EvalStatus> {
        Ok(self.eval_run(id).await?.status)
    }

    /// A template's runs, newest first.
    pub async fn list_eval_runs(&self, name: &str, limit: i64) -> Result<Vec<EvalRun>> {
        let id = self.eval_template_id(name).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM eval_runs r JOIN templates t ON t.id = r.template_id \
             WHERE r.template_id = $1 ORDER BY r.id DESC LIMIT $2"
        )))
        .bind(id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(Self::run_from_row).collect()
    }

    /// `queued` → `running`; false when the run is no longer queued (cancelled meanwhile).
    pub async fn start_eval_run(&self, id: i64) -> Result<bool> {
        let done =
            sqlx::query("UPDATE eval_runs SET status = 'running', started_at = $1 WHERE id = $2 AND status = 'queued'")
                .bind(now_ms())
                .bind(id)
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stores one row's result and counts it, in one transaction, only while the run is
    /// `running`; false (nothing written) when it is not any more.
    pub async fn record_eval_result(&self, id: i64, r: &RowResult) -> Result<bool> {
        let mut tx = self.pool().begin().await?;
        let result = async {
            let counted = sqlx::query(
                "UPDATE eval_runs SET done = done + 1, passed = passed + $1, stability_sum = stability_sum + $2, \
                 prompt_tokens = prompt_tokens + $3, completion_tokens = completion_tokens + $4, \
                 cached_tokens = cached_tokens + $5, constraint_met = constraint_met + $7 \
                 WHERE id = $6 AND status = 'running'",
            )
            .bind(i64::from(r.passed))
            .bind(r.stability)
            .bind(r.prompt_tokens)
            .bind(r.completion_tokens)
            .bind(r.cached_tokens)
            .bind(id)
            .bind(i64::from(r.constraint_met == Some(true)))
            .execute(&mut *tx)
            .await?;
            if counted.rows_affected() == 0 {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO eval_results (run_id, idx, test_id, variables, expected, output, samples, stability, passed, \
                 assertions, prompt_tokens, completion_tokens, cached_tokens, latency_ms, error, constraint_met) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            )
            .bind(id)
            .bind(r.index)
            .bind(r.test_id)
            .bind(serde_json::to_string(&r.variables).expect("variables serialize"))
            .bind(r.expected.clone())
            .bind(&r.output)
            .bind(serde_json::to_string(&r.samples).expect("samples serialize"))
            .bind(r.stability)
            .bind(i64::from(r.passed))
            .bind(serde_json::to_string(&r.assertions).expect("assertions serialize"))
            .bind(r.prompt_tokens)
            .bind(r.completion_tokens)
            .bind(r.cached_tokens)
            .bind(r.latency_ms)
            .bind(r.error.clone())
            .bind(r.constraint_met.map(i64::from))
            .execute(&mut *tx)
            .await?;
            Ok(true)
        }
        .await;
        finish(tx, result).await
    }

    /// Ends a run that is still queued or running; false when it had already ended.
    pub async fn finish_eval_run(&self, id: i64, status: EvalStatus, error: Option<&str>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE eval_runs SET status = $1, error = $2, finished_at = $3 WHERE id = $4 AND status IN ('queued', 'running')",
        )
        .bind(status.as_str())
        .bind(error.map(str::to_string))
        .bind(now_ms())
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Cancels a queued or running run (its task stops within a row or a quarter second).
    pub async fn cancel_eval_run(&self, id: i64) -> Result<EvalRun> {
        if !self.finish_eval_run(id, EvalStatus::Cancelled, None).await? {
            let run = self.eval_run(id).await?;
            return Err(StoreError::Conflict(format!(
                "eval run {id} is already {}; only a queued or running run can be cancelled",
                run.status.as_str()
            )));
        }
        self.eval_run(id).await
    }

    /// At start: marks `interrupted` every run left `queued` or `running` by this replica
    /// (an earlier process with the same replica id), by no replica (rows from before
    /// ownership), or by a replica whose lease has expired. Live runs of other replicas
    /// sharing the database are left alone.
    pub async fn interrupt_stale_evals(&self) -> Result<u64> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE eval_runs SET status = 'interrupted', finished_at = $1, \
             error = 'the server stopped before the run finished' WHERE status IN ('queued', 'running') \
             AND (owner IS NULL OR owner = $2 OR lease_until IS NULL OR lease_until < $1)",
        )
        .bind(now)
        .bind(self.replica())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// While running: marks `interrupted` the runs of other replicas whose lease expired
    /// (the replica died: its runs cannot resume elsewhere).
    pub async fn interrupt_abandoned_evals(&self) -> Result<u64> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE eval_runs SET status = 'interrupted', finished_at = $1, \
             error = 'the replica running it stopped before the run finished' \
             WHERE status IN ('queued', 'running') AND owner <> $2 AND lease_until < $1",
        )
        .bind(now)
        .bind(self.replica())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Extends this replica's lease on its queued and running eval runs.
    pub async fn renew_eval_leases(&self) -> Result<u64> {
        let done =
            sqlx::query("UPDATE eval_runs SET lease_until = $1 WHERE owner = $2 AND status IN ('queued', 'running')")
                .bind(now_ms() + self.lease_ms())
                .bind(self.replica())
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected())
    }

    pub async fn eval_results(&self, id: i64) -> Result<Vec<RowResult>> {
        let rows = sqlx::query("SELECT * FROM eval_results WHERE run_id = $1 ORDER BY idx")
            .bind(id)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(row_result_from_row).collect()
    }

    /// The newest completed eval of a saved version: (run id, pass rate).
    pub async fn latest_completed_eval(&self, name: &str, version: i64) -> Result<Option<(i64, f64)>> {
        let id = self.eval_template_id(name).await?;
        let row = sqlx::query(
            "SELECT id, done, passed FROM eval_runs WHERE template_id = $1 AND version = $2 AND status = 'completed' \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(id)
        .bind(version)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            let (done, passed): (i64, i64) = (r.try_get("done")?, r.try_get("passed")?);
            Ok((r.try_get("id")?, if done > 0 { passed as f64 / done as f64 } else { 0.0 }))
        })
        .transpose()
    }
}
