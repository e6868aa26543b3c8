//! `/v1/files` and `/v1/batches` in OpenAI's shape, and the batch worker: every replica
//! claims request lines from the shared store and runs each through the same handlers as
//! an HTTP call, at batch priority, so a line's answer is exactly what the endpoint says.

use std::collections::HashMap;
use std::time::Duration;

use api_types::batches::{Batch, BatchList, CreateBatch, DeletedFile, FileList, FileObject};
use axum::body::Body;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::api::auth::{caller, Caller};
use crate::api::cpu;
use crate::api::error::ApiError;
use crate::api::json::ApiJson;
use crate::batches::{self, MAX_FILE_BYTES};
use crate::serving::{with_priority, Priority};
use crate::store::{BatchInput, ClaimedLine, LineAnswer, Store};
use crate::AppState;

/// Most items a list answers (`limit`, default 20, as OpenAI).
pub const MAX_LIST_LIMIT: i64 = 100;

// ---------------------------------------------------------------------- files

/// `POST /v1/files` (multipart: `file`, `purpose`), as the SDK's `files.create` sends it.
pub async fn upload_file(State(state): State<AppState>, mut form: Multipart) -> Result<Json<FileObject>, ApiError> {
    let mut purpose = None;
    let mut file = None;
    while let Some(field) =
        form.next_field().await.map_err(|e| ApiError::invalid("file", format!("not a valid multipart body: {e}")))?
    {
        match field.name() {
            Some("purpose") => {
                purpose = Some(field.text().await.map_err(|e| ApiError::invalid("purpose", e.to_string()))?);
            }
            Some("file") => {
                let name = field.file_name().unwrap_or("upload.jsonl").chars().take(255).collect::<String>();
                let bytes = field.bytes().await.map_err(|e| {
                    ApiError::invalid("file", format!("could not read the file (at most {MAX_FILE_BYTES} bytes): {e}"))
                })?;
                file = Some((name, bytes));
            }
            Some(other) => return Err(ApiError::invalid(other, format!("unknown form field '{other}'"))),
            None => return Err(ApiError::invalid("file", "a form field has no name")),
        }
    }
    let purpose = purpose.ok_or_else(|| ApiError::invalid("purpose", "purpose is required (\"batch\")"))?;
    if purpose != "batch" {
        return Err(ApiError::invalid("purpose", format!("purpose must be \"batch\", got {purpose:?}")));
    }
    let (name, bytes) = file.ok_or_else(|| ApiError::invalid("file", "file is required"))?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(ApiError::invalid("file", format!("{} bytes, over the limit of {MAX_FILE_BYTES}", bytes.len())));
    }
    let text =
        String::from_utf8(bytes.to_vec()).map_err(|_| ApiError::invalid("file", "the file is not UTF-8 text"))?;
    Ok(Json(state.store.create_file(&purpose, &name, &text).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<i64>,
    pub after: Option<String>,
    pub purpose: Option<String>,
    pub order: Option<String>,
}

pub fn limit(q: &ListQuery) -> Result<i64, ApiError> {
    match q.limit {
        None => Ok(20),
        Some(n) if (1..=MAX_LIST_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::invalid("limit", format!("limit must be 1 to {MAX_LIST_LIMIT}, got {n}"))),
    }
}

pub async fn list_files(State(state): State<AppState>, Query(q): Query<ListQuery>) -> Result<Json<FileList>, ApiError> {
    let data = state.store.list_files(q.purpose.as_deref(), limit(&q)?).await?;
    Ok(Json(FileList { object: "list".into(), data, has_more: false }))
}

pub async fn get_file(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<FileObject>, ApiError> {
    Ok(Json(state.store.file(&id).await?))
}

pub async fn file_content(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let content = state.store.file_content(&id).await?;
    Ok(([(header::CONTENT_TYPE, "application/jsonl")], content).into_response())
}

pub async fn delete_file(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<DeletedFile>, ApiError> {
    state.store.delete_file(&id).await?;
    Ok(Json(DeletedFile { id, object: "file".into(), deleted: true }))
}

// ---------------------------------------------------------------------- batches

/// `POST /v1/batches`: the input file is checked whole first; a fault is a 400 naming
/// the line and the field, and nothing is created.
pub async fn create_batch(
    State(state): State<AppState>,
    who: Option<Extension<Caller>>,
    ApiJson(req): ApiJson<CreateBatch>,
) -> Result<Json<Batch>, ApiError> {
    // Checked before the file is read, so a wrong endpoint is named first.
    batches::check_endpoint(&req.endpoint)?;
    if req.completion_window != batches::COMPLETION_WINDOW {
        return Err(ApiError::invalid(
            "completion_window",
            format!("completion_window must be \"{}\", got {:?}", batches::COMPLETION_WINDOW, req.completion_window),
        ));
    }
    if let Some(m) = &req.metadata {
        batches::check_metadata(m)?;
    }
    let file = state.store.file(&req.input_file_id).await.map_err(|e| {
        let mut e = ApiError::from(e);
        e.param = Some("input_file_id".into());
        e
    })?;
    if file.purpose != "batch" {
        return Err(ApiError::invalid(
            "input_file_id",
            format!("file {} has purpose {:?}, not \"batch\"", file.id, file.purpose),
        ));
    }
    let content = state.store.file_content(&file.id).await?;
    let endpoint = req.endpoint.clone();
    // Parsing up to 50,000 lines is CPU work: off the tokio workers.
    let lines = cpu::run(move || batches::parse_input(&content, &endpoint)).await??;
    let batch = batches::start_batch(
        &state.store,
        &req.endpoint,
        BatchInput::File(&file.id),
        req.metadata.as_ref(),
        &lines,
        &caller(who),
    )
    .await?;
    Ok(Json(batch))
}

pub async fn get_batch(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Batch>, ApiError> {
    Ok(Json(state.store.batch(&id).await?))
}

pub async fn list_batches(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<BatchList>, ApiError> {
    let (data, has_more) = state.store.list_batches(q.after.as_deref(), limit(&q)?, None).await?;
    Ok(Json(BatchList {
        object: "list".into(),
        first_id: data.first().map(|b| b.id.clone()),
        last_id: data.last().map(|b| b.id.clone()),
        data,
        has_more,
    }))
}

pub async fn cancel_batch(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Batch>, ApiError> {
    Ok(Json(state.store.cancel_batch(&id).await?))
}

// ---------------------------------------------------------------------- the worker

/// Lines one replica runs at once: the server's default `--max-running`, so batch work
/// can fill the engine's width (the batcher admits lines as room allows; API traffic goes
/// first regardless, pausing batch rows).
pub const LINES_IN_FLIGHT: usize = 32;
/// The worker claims again once this many places are free (or nothing runs): one claim
/// statement for a group of lines, not one per finished line.
const CLAIM_GROUP: usize = 8;
/// How often an idle worker looks for new lines (a batch created on this replica wakes
/// it at once).
const BUSY_PAUSE: Duration = Duration::from_millis(250);
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Largest answer kept for a line (a completion body is far smaller).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// The endpoints a batch line may call, without the API-key layer: the batch's creator
/// was checked when it was created.
fn line_router(state: AppState) -> Router {
    use axum::routing::post;
    Router::new()
        .route("/v1/completions", post(crate::api::openai::completions))
        .route("/v1/chat/completions", post(crate::api::openai::chat_completions))
        .route("/v1/templates/{spec}/completions", post(crate::api::openai::templates::template_completions))
        .with_state(state)
}

/// Runs one line through its endpoint at batch priority. `None`: the server is busy
/// (queue full, model loading) and the line should be tried again later.
async fn run_line(router: &Router, endpoint: &str, line: &ClaimedLine) -> Option<LineAnswer> {
    let req = Request::post(endpoint)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(line.body.clone()))
        .expect("a request from a valid path and JSON text");
    let resp = with_priority(Priority::Batch, router.clone().oneshot(req)).await.into_response();
    let status = resp.status();
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let bytes = axum::body::to_bytes(resp.into_body(), MAX_ANSWER_BYTES).await.unwrap_or_default();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Some(LineAnswer { status_code: status.as_u16(), request_id: batches::new_id("req_"), body })
}

/// Starts this replica's batch worker and its lease keeper on the tokio runtime.
pub fn spawn_worker(state: AppState) {
    tokio::spawn(keep_leases(state.store.clone()));
    tokio::spawn(work(state));
}

/// Renews this replica's claims (batch lines, eval runs) every third of a lease, and
/// does the housekeeping any replica may do: abandoned evals interrupted, batches
/// finalized or expired.
async fn keep_leases(store: Store) {
    let every = Duration::from_millis((store.lease_ms() / 3).max(100) as u64);
    loop {
        tokio::time::sleep(every).await;
        let r = async {
            store.renew_line_leases().await?;
            store.renew_eval_leases().await?;
            let n = store.interrupt_abandoned_evals().await?;
            if n > 0 {
                tracing::warn!("{n} eval run(s) of a replica that stopped marked interrupted");
            }
            store.sweep_batches().await
        }
        .await;
        if let Err(e) = r {
            tracing::warn!("batch leases: {e}");
        }
    }
}

/// Batch endpoints remembered by the worker (cleared when full: one query refills each).
const MAX_CACHED_ENDPOINTS: usize = 1024;

/// A line that ran: the line, its endpoint, and the answer (`None`: busy, run it again).
type Ran = (ClaimedLine, String, Option<LineAnswer>);

/// Runs `line` on a task of `running`, after `pause`.
fn spawn_line(running: &mut JoinSet<Ran>, router: &Router, endpoint: String, line: ClaimedLine, pause: Duration) {
    let router = router.clone();
    running.spawn(async move {
        tokio::time::sleep(pause).await;
        let answer = run_line(&router, &endpoint, &line).await;
        (line, endpoint, answer)
    });
}

async fn work(state: AppState) {
    let router = line_router(state.clone());
    let store = state.store.clone();
    let mut endpoints: HashMap<String, String> = HashMap::new();
    let mut running: JoinSet<Ran> = JoinSet::new();
    loop {
        let room = LINES_IN_FLIGHT - running.len();
        if room >= CLAIM_GROUP || running.is_empty() {
            let claimed = store.claim_lines(room).await.unwrap_or_else(|e| {
                tracing::warn!("claiming batch lines: {e}");
                Vec::new()
            });
            for line in claimed {
                let endpoint = match endpoints.get(&line.batch_id) {
                    Some(e) => e.clone(),
                    None => match store.batch_endpoint(&line.batch_id).await {
                        Ok(e) => {
                            if endpoints.len() >= MAX_CACHED_ENDPOINTS {
                                endpoints.clear();
                            }
                            endpoints.insert(line.batch_id.clone(), e.clone());
                            e
                        }
                        Err(e) => {
                            tracing::warn!("batch {}: {e}", line.batch_id);
                            continue;
                        }
                    },
                };
                spawn_line(&mut running, &router, endpoint, line, Duration::ZERO);
            }
        }
        if running.is_empty() {
            // Nothing to do: wait for a new batch here or the next look at the store.
            let _ = tokio::time::timeout(IDLE_POLL, store.batch_created()).await;
            continue;
        }
        let next = tokio::time::timeout(IDLE_POLL, running.join_next()).await;
        let Ok(Some(first)) = next else { continue };
        // Every line that has finished by now is written in one transaction.
        let mut answered: Vec<(ClaimedLine, LineAnswer)> = Vec::new();
        let mut joined = Some(first);
        while let Some(j) = joined {
            match j {
                Ok((line, _, Some(answer))) => answered.push((line, answer)),
                // Busy (queue full, model loading): the line stays claimed (its lease is
                // renewed) and runs again after a pause.
                Ok((line, endpoint, None)) => spawn_line(&mut running, &router, endpoint, line, BUSY_PAUSE),
                Err(e) => tracing::error!("a batch line's task failed: {e}"),
            }
            joined = running.try_join_next();
        }
        if answered.is_empty() {
            continue;
        }
        let pairs: Vec<(&ClaimedLine, &LineAnswer)> = answered.iter().map(|(l, a)| (l, a)).collect();
        let recorded = match store.finish_lines(&pairs).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("recording {} batch answer(s): {e}", pairs.len());
                continue;
            }
        };
        let mut touched: Vec<&str> = Vec::new();
        for ((line, _), ok) in answered.iter().zip(recorded) {
            if !ok {
                tracing::info!("batch {} line {}: claim lost, answer dropped", line.batch_id, line.line_no);
            } else if !touched.contains(&line.batch_id.as_str()) {
                touched.push(&line.batch_id);
            }
        }
        for id in touched {
            if let Err(e) = store.finalize_if_done(id).await {
                tracing::warn!("finalizing batch {id}: {e}");
            }
        }
    }
}
