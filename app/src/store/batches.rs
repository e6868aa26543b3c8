//! Persistence of files and batch jobs. A batch's request lines are rows that replicas
//! claim in small groups under a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite
//! has one writer at a time, so the same statement without it is already exclusive). A
//! result is written only by the replica that holds the line's claim, so each line is
//! answered exactly once even when a replica dies and another takes its lines.

use std::collections::BTreeMap;

use api_types::batches::{Batch, BatchOutputLine, FileObject, RequestCounts};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{finish, now_ms, Backend, Result, Store, StoreError};
use crate::batches::dataset::LineResult;
use crate::batches::{new_id, NewLine, COMPLETION_WINDOW_MS};

/// Where a new batch's input file comes from.
#[derive(Debug, Clone, Copy)]
pub enum BatchInput<'a> {
    /// An uploaded file (`input_file_id`).
    File(&'a str),
    /// A file written with the batch, in the same transaction (a dataset's requests).
    New { filename: &'a str, content: &'a str },
}

/// Why a line that never ran has no answer: OpenAI's error `code` and a message.
pub fn not_run(status: &str) -> (&'static str, &'static str) {
    match status {
        "cancelled" => ("batch_cancelled", "the batch was cancelled before this request ran"),
        "expired" => ("batch_expired", "the batch's completion window ended before this request ran"),
        _ => ("request_abandoned", "the replicas running this request stopped repeatedly"),
    }
}

/// A line this replica claimed.
#[derive(Debug, Clone)]
pub struct ClaimedLine {
    pub id: i64,
    pub batch_id: String,
    pub line_no: i64,
    pub custom_id: String,
    pub body: String,
}

/// What the endpoint answered a line (any HTTP status): 2xx goes to the output file,
/// the rest to the error file.
#[derive(Debug, Clone)]
pub struct LineAnswer {
    pub status_code: u16,
    pub request_id: String,
    pub body: serde_json::Value,
}

/// A line whose claim expired this many times is failed instead of claimed again (it
/// may be what brings replicas down).
pub const MAX_LINE_ATTEMPTS: i64 = 3;

/// Rows per INSERT when a batch's lines are written.
const INSERT_CHUNK: usize = 500;

fn file_from_row(r: &AnyRow) -> Result<FileObject> {
    Ok(FileObject {
        id: r.try_get("id")?,
        object: "file".into(),
        bytes: r.try_get("bytes")?,
        created_at: r.try_get::<i64, _>("created_at")? / 1000,
        filename: r.try_get("filename")?,
        purpose: r.try_get("purpose")?,
        status: "processed".into(),
        expires_at: None,
        status_details: None,
    })
}

fn secs(r: &AnyRow, col: &str) -> Result<Option<i64>> {
    Ok(r.try_get::<Option<i64>, _>(col)?.map(|ms| ms / 1000))
}

impl Store {
    pub async fn create_file(&self, purpose: &str, filename: &str, content: &str) -> Result<FileObject> {
        let id = new_id("file-");
        sqlx::query(
            "INSERT INTO files (id, purpose, filename, bytes, content, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(purpose)
        .bind(filename)
        .bind(content.len() as i64)
        .bind(content)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        self.file(&id).await
    }

    pub async fn file(&self, id: &str) -> Result<FileObject> {
        let row = sqlx::query("SELECT id, purpose, filename, bytes, created_at FROM files WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no file with id '{id}'")))?;
        file_from_row(&row)
    }

    pub async fn file_content(&self, id: &str) -> Result<String> {
        let row = sqlx::query("SELECT content FROM files WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no file with id '{id}'")))?;
        Ok(row.try_get("content")?)
    }

    /// Newest first, at most `limit`.
    pub async fn list_files(&self, purpose: Option<&str>, limit: i64) -> Result<Vec<FileObject>> {
        let rows = sqlx::query(
            "SELECT id, purpose, filename, bytes, created_at FROM files WHERE ($1 IS NULL OR purpose = $1) \
             ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(purpose)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(file_from_row).collect()
    }

    pub async fn delete_file(&self, id: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM files WHERE id = $1").bind(id).execute(self.pool()).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no file with id '{id}'")));
        }
        Ok(())
    }

    /// Creates a batch and all its lines (and its input file, when new) in one
    /// transaction: nothing is half-created.
    pub async fn create_batch(
        &self,
        endpoint: &str,
        input: BatchInput<'_>,
        metadata: Option<&BTreeMap<String, String>>,
        lines: &[NewLine],
        actor: &str,
    ) -> Result<Batch> {
        let id = new_id("batch_");
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        let result = async {
            let input_file_id = match input {
                BatchInput::File(fid) => fid.to_string(),
                BatchInput::New { filename, content } => {
                    let fid = new_id("file-");
                    sqlx::query(
                        "INSERT INTO files (id, purpose, filename, bytes, content, created_at) \
                         VALUES ($1, 'batch', $2, $3, $4, $5)",
                    )
                    .bind(&fid)
                    .bind(filename)
                    .bind(content.len() as i64)
                    .bind(content)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    fid
                }
            };
            sqlx::query(
                "INSERT INTO batches (id, endpoint, input_file_id, completion_window, status, metadata, total, \
                 created_by, created_at, in_progress_at, expires_at) \
                 VALUES ($1, $2, $3, '24h', 'in_progress', $4, $5, $6, $7, $7, $8)",
            )
            .bind(&id)
            .bind(endpoint)
            .bind(&input_file_id)
            .bind(metadata.map(|m| serde_json::to_string(m).expect("a string map serializes")))
            .bind(lines.len() as i64)
            .bind(actor)
            .bind(now)
            .bind(now + COMPLETION_WINDOW_MS)
            .execute(&mut *tx)
            .await?;
            for chunk in lines.chunks(INSERT_CHUNK) {
                let mut sql = String::from(
                    "INSERT INTO batch_lines (batch_id, line_no, custom_id, group_key, body, status) VALUES ",
                );
                for i in 0..chunk.len() {
                    let p = i * 5;
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&format!("(${}, ${}, ${}, ${}, ${}, 'pending')", p + 1, p + 2, p + 3, p + 4, p + 5));
                }
                // Only placeholders are formatted in: the values are bound.
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for l in chunk {
                    q = q.bind(&id).bind(l.line_no).bind(&l.custom_id).bind(&l.group_key).bind(&l.body);
                }
                q.execute(&mut *tx).await?;
            }
            self.fault("batch-lines")?;
            Ok(())
        }
        .await;
        finish(tx, result).await?;
        self.batch_created.notify_one();
        self.batch(&id).await
    }

    async fn counts(&self, id: &str, total: i64) -> Result<RequestCounts> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN status = 'done' THEN 1 ELSE 0 END), 0) AS completed, \
             COALESCE(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0) AS failed \
             FROM batch_lines WHERE batch_id = $1",
        )
        .bind(id)
        .fetch_one(self.pool())
        .await?;
        Ok(RequestCounts { total, completed: row.try_get("completed")?, failed: row.try_get("failed")? })
    }

    async fn batch_from_row(&self, r: &AnyRow) -> Result<Batch> {
        let id: String = r.try_get("id")?;
        let total: i64 = r.try_get("total")?;
        let metadata: Option<String> = r.try_get("metadata")?;
        let metadata = match metadata {
            Some(m) => Some(serde_json::from_str(&m).map_err(|e| StoreError::Corrupt(format!("batch metadata: {e}")))?),
            None => None,
        };
        Ok(Batch {
            request_counts: self.counts(&id, total).await?,
            id,
            object: "batch".into(),
            endpoint: r.try_get("endpoint")?,
            errors: None,
            input_file_id: r.try_get("input_file_id")?,
            completion_window: r.try_get("completion_window")?,
            // `expiring` is the sweep's step between in_progress and expired.
            status: match r.try_get::<String, _>("status")? {
                s if s == "expiring" => "finalizing".to_string(),
                s => s,
            },
            output_file_id: r.try_get("output_file_id")?,
            error_file_id: r.try_get("error_file_id")?,
            created_at: r.try_get::<i64, _>("created_at")? / 1000,
            in_progress_at: secs(r, "in_progress_at")?,
            expires_at: secs(r, "expires_at")?,
            finalizing_at: secs(r, "finalizing_at")?,
            completed_at: secs(r, "completed_at")?,
            failed_at: secs(r, "failed_at")?,
            expired_at: secs(r, "expired_at")?,
            cancelling_at: secs(r, "cancelling_at")?,
            cancelled_at: secs(r, "cancelled_at")?,
            metadata,
        })
    }

    pub async fn batch(&self, id: &str) -> Result<Batch> {
        let row = sqlx::query("SELECT * FROM batches WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no batch with id '{id}'")))?;
        self.batch_from_row(&row).await
    }

    /// Newest first; `after` is the id of the last batch of the previous page; with
    /// `template`, only the batches that call that template's endpoint (any version).
    pub async fn list_batches(
        &self,
        after: Option<&str>,
        limit: i64,
        template: Option<&str>,
    ) -> Result<(Vec<Batch>, bool)> {
        let after_at = match after {
            Some(a) => {
                let row = sqlx::query("SELECT created_at FROM batches WHERE id = $1")
                    .bind(a)
                    .fetch_optional(self.pool())
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("no batch with id '{a}' (after)")))?;
                Some((row.try_get::<i64, _>("created_at")?, a.to_string()))
            }
            None => None,
        };
        // `/v1/templates/{name}/completions` or `/v1/templates/{name}@{ref}/completions`,
        // compared by prefix with substr (a LIKE pattern would read `_` in a name as a
        // wildcard).
        let exact = template.map(|t| format!("/v1/templates/{t}/completions"));
        let prefix = template.map(|t| format!("/v1/templates/{t}@"));
        let rows = sqlx::query(
            "SELECT * FROM batches WHERE ($1 IS NULL OR created_at < $1 OR (created_at = $1 AND id < $2)) \
             AND ($4 IS NULL OR endpoint = $4 OR substr(endpoint, 1, length($5)) = $5) \
             ORDER BY created_at DESC, id DESC LIMIT $3",
        )
        .bind(after_at.as_ref().map(|a| a.0))
        .bind(after_at.as_ref().map(|a| a.1.clone()).unwrap_or_default())
        .bind(limit + 1)
        .bind(exact)
        .bind(prefix)
        .fetch_all(self.pool())
        .await?;
        let has_more = rows.len() as i64 > limit;
        let mut out = Vec::new();
        for r in rows.iter().take(limit as usize) {
            out.push(self.batch_from_row(r).await?);
        }
        Ok((out, has_more))
    }

    /// Every line of a batch, in input order, with what it produced (a batch has at most
    /// `MAX_LINES` lines).
    pub async fn batch_results(&self, id: &str) -> Result<Vec<LineResult>> {
        let rows = sqlx::query("SELECT status, body, response FROM batch_lines WHERE batch_id = $1 ORDER BY line_no")
            .bind(id)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get("status")?;
                let response: Option<String> = r.try_get("response")?;
                let not_run = response.is_none().then(|| not_run(&status).1.to_string());
                Ok(LineResult { body: r.try_get("body")?, status, response, not_run })
            })
            .collect()
    }

    /// The endpoint a batch's lines call.
    pub async fn batch_endpoint(&self, id: &str) -> Result<String> {
        let row = sqlx::query("SELECT endpoint FROM batches WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no batch with id '{id}'")))?;
        Ok(row.try_get("endpoint")?)
    }

    /// Cancels a batch: lines not yet claimed are not run; claimed ones finish, then the
    /// batch is `cancelled` with the answers so far in its output file.
    pub async fn cancel_batch(&self, id: &str) -> Result<Batch> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE batches SET status = 'cancelling', cancelling_at = $1 WHERE id = $2 AND status = 'in_progress'",
        )
        .bind(now)
        .bind(id)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            let b = self.batch(id).await?;
            if b.status != "cancelling" {
                return Err(StoreError::Conflict(format!(
                    "batch {id} is already {}; only an in-progress batch can be cancelled",
                    b.status
                )));
            }
        }
        sqlx::query(
            "UPDATE batch_lines SET status = 'cancelled', finished_at = $1 WHERE batch_id = $2 AND status = 'pending'",
        )
        .bind(now)
        .bind(id)
        .execute(self.pool())
        .await?;
        self.finalize_if_done(id).await?;
        self.batch(id).await
    }

    /// Claims up to `max` open lines of in-progress batches (oldest batch first, lines
    /// sharing a prefix together), including lines whose claim by another replica expired.
    pub async fn claim_lines(&self, max: usize) -> Result<Vec<ClaimedLine>> {
        let now = now_ms();
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE OF l SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE batch_lines SET status = 'claimed', owner = $1, lease_until = $2, attempts = attempts + 1 \
             WHERE id IN (SELECT l.id FROM batch_lines l JOIN batches b ON b.id = l.batch_id \
             WHERE b.status = 'in_progress' AND (l.status = 'pending' OR (l.status = 'claimed' AND l.lease_until < $3)) \
             AND l.attempts < $4 ORDER BY b.created_at, b.id, l.group_key, l.line_no LIMIT $5{lock}) \
             RETURNING id, batch_id, line_no, custom_id, body"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(self.replica())
            .bind(now + self.lease_ms())
            .bind(now)
            .bind(MAX_LINE_ATTEMPTS)
            .bind(max as i64)
            .fetch_all(self.pool())
            .await?;
        let mut lines = rows
            .iter()
            .map(|r| {
                Ok(ClaimedLine {
                    id: r.try_get("id")?,
                    batch_id: r.try_get("batch_id")?,
                    line_no: r.try_get("line_no")?,
                    custom_id: r.try_get("custom_id")?,
                    body: r.try_get("body")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // RETURNING gives no order: keep the claim order (prefix groups together).
        lines.sort_by(|a, b| (&a.batch_id, a.line_no).cmp(&(&b.batch_id, b.line_no)));
        Ok(lines)
    }

    /// Records a line's answer if this replica still holds its claim; `false` when the
    /// claim was lost (it expired and another replica took the line), and the answer is
    /// dropped. So each line is written once.
    pub async fn finish_line(&self, line: &ClaimedLine, answer: &LineAnswer) -> Result<bool> {
        Ok(self.finish_lines(&[(line, answer)]).await?[0])
    }

    /// [`Self::finish_line`] for several lines in one transaction (one commit, so one
    /// sync of the database file, for however many lines finished together): for each,
    /// whether its answer was recorded.
    pub async fn finish_lines(&self, answers: &[(&ClaimedLine, &LineAnswer)]) -> Result<Vec<bool>> {
        let mut tx = self.pool().begin().await?;
        let result = async {
            let now = now_ms();
            let mut recorded = Vec::with_capacity(answers.len());
            for (line, LineAnswer { status_code, request_id, body }) in answers {
                let ok = (200..300).contains(status_code);
                let out = BatchOutputLine {
                    id: format!("batch_req_{}_{}", line.batch_id.trim_start_matches("batch_"), line.line_no),
                    custom_id: line.custom_id.clone(),
                    response: Some(api_types::batches::BatchResponse {
                        status_code: *status_code,
                        request_id: request_id.clone(),
                        body: body.clone(),
                    }),
                    error: None,
                };
                let done = sqlx::query(
                    "UPDATE batch_lines SET status = $1, status_code = $2, response = $3, finished_at = $4, lease_until = NULL \
                     WHERE id = $5 AND owner = $6 AND status = 'claimed'",
                )
                .bind(if ok { "done" } else { "failed" })
                .bind(i64::from(*status_code))
                .bind(serde_json::to_string(&out).expect("an output line serializes"))
                .bind(now)
                .bind(line.id)
                .bind(self.replica())
                .execute(&mut *tx)
                .await?;
                recorded.push(done.rows_affected() == 1);
            }
            Ok(recorded)
        }
        .await;
        finish(tx, result).await
    }

    /// Extends this replica's claims on its lines.
    pub async fn renew_line_leases(&self) -> Result<u64> {
        let done = sqlx::query("UPDATE batch_lines SET lease_until = $1 WHERE owner = $2 AND status = 'claimed'")
            .bind(now_ms() + self.lease_ms())
            .bind(self.replica())
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// Housekeeping any replica may do: lines abandoned [`MAX_LINE_ATTEMPTS`] times fail;
    /// batches past their window expire; batches with no open line are finalized.
    /// Returns the batches finalized.
    pub async fn sweep_batches(&self) -> Result<usize> {
        let now = now_ms();
        sqlx::query(
            "UPDATE batch_lines SET status = 'failed', finished_at = $1 \
             WHERE status IN ('pending', 'claimed') AND attempts >= $2 AND (lease_until IS NULL OR lease_until < $1)",
        )
        .bind(now)
        .bind(MAX_LINE_ATTEMPTS)
        .execute(self.pool())
        .await?;
        let expired = sqlx::query(
            "UPDATE batches SET status = 'expiring' WHERE status IN ('in_progress', 'cancelling') AND expires_at < $1 \
             RETURNING id",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        for r in &expired {
            let id: String = r.try_get("id")?;
            sqlx::query(
                "UPDATE batch_lines SET status = 'expired', finished_at = $1 WHERE batch_id = $2 \
                 AND status IN ('pending', 'claimed')",
            )
            .bind(now)
            .bind(&id)
            .execute(self.pool())
            .await?;
        }
        let open = sqlx::query(
            "SELECT id FROM batches b WHERE status IN ('in_progress', 'cancelling', 'expiring') AND NOT EXISTS \
             (SELECT 1 FROM batch_lines l WHERE l.batch_id = b.id AND l.status IN ('pending', 'claimed'))",
        )
        .fetch_all(self.pool())
        .await?;
        let mut n = 0;
        for r in &open {
            let id: String = r.try_get("id")?;
            if self.finalize_if_done(&id).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// When no line of the batch is open, writes its output and error files and moves it
    /// to its final status, in one transaction (a replica dying here leaves the batch for
    /// the next sweep). `true` if this call finalized it.
    pub async fn finalize_if_done(&self, id: &str) -> Result<bool> {
        let mut tx = self.pool().begin().await?;
        let result = async {
            let now = now_ms();
            let open: i64 = sqlx::query(
                "SELECT COUNT(*) AS n FROM batch_lines WHERE batch_id = $1 AND status IN ('pending', 'claimed')",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
            if open > 0 {
                return Ok(false);
            }
            // The status change is the claim on finalizing: one replica wins it.
            let row = sqlx::query(
                "UPDATE batches SET finalizing_at = $1 WHERE id = $2 \
                 AND status IN ('in_progress', 'cancelling', 'expiring') RETURNING status",
            )
            .bind(now)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { return Ok(false) };
            let from: String = row.try_get("status")?;
            let lines = sqlx::query(
                "SELECT line_no, custom_id, status, response FROM batch_lines WHERE batch_id = $1 ORDER BY line_no",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            let (mut output, mut errors) = (String::new(), String::new());
            for l in &lines {
                let status: String = l.try_get("status")?;
                let response: Option<String> = l.try_get("response")?;
                let line_no: i64 = l.try_get("line_no")?;
                let text = match (status.as_str(), response) {
                    (_, Some(r)) => r,
                    (other, None) => {
                        let (code, message) = not_run(other);
                        let out = BatchOutputLine {
                            id: format!("batch_req_{}_{line_no}", id.trim_start_matches("batch_")),
                            custom_id: l.try_get("custom_id")?,
                            response: None,
                            error: Some(api_types::batches::BatchLineError {
                                code: code.into(),
                                message: message.into(),
                            }),
                        };
                        serde_json::to_string(&out).expect("an output line serializes")
                    }
                };
                let target = if status == "done" { &mut output } else { &mut errors };
                target.push_str(&text);
                target.push('\n');
            }
            let mut file_ids = [None, None];
            for (i, (content, suffix)) in [(&output, "output"), (&errors, "error")].into_iter().enumerate() {
                if content.is_empty() {
                    continue;
                }
                let fid = new_id("file-");
                sqlx::query(
                    "INSERT INTO files (id, purpose, filename, bytes, content, created_at) \
                     VALUES ($1, 'batch_output', $2, $3, $4, $5)",
                )
                .bind(&fid)
                .bind(format!("{id}_{suffix}.jsonl"))
                .bind(content.len() as i64)
                .bind(content.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                file_ids[i] = Some(fid);
            }
            self.fault("batch-finalize")?;
            let (status, at) = match from.as_str() {
                "cancelling" => ("cancelled", "cancelled_at"),
                "expiring" => ("expired", "expired_at"),
                _ => ("completed", "completed_at"),
            };
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE batches SET status = $1, {at} = $2, output_file_id = $3, error_file_id = $4 WHERE id = $5"
            )))
            .bind(status)
            .bind(now)
            .bind(file_ids[0].clone())
            .bind(file_ids[1].clone())
            .bind(id)
            .execute(&mut *tx)
            .await?;
            Ok(true)
        }
        .await;
        finish(tx, result).await
    }
}
