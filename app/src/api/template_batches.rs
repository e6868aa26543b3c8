//! A template over a dataset, the studio's no-code face of `/v1/batches`: check a CSV or
//! JSONL of variables against a version, start it as a batch (the same creation path and
//! worker as the Batch API), list the template's batches, and download a finished one's
//! results as CSV.

use std::collections::BTreeMap;

use api_types::batches::{
    Batch, BatchList, CreateTemplateBatch, DatasetCheck, META_DATASET, META_TEMPLATE, META_VERSION,
};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use crate::api::auth::{caller, Caller};
use crate::api::batches::{limit, ListQuery};
use crate::api::cpu;
use crate::api::error::ApiError;
use crate::api::evals::resolve_spec;
use crate::api::json::ApiJson;
use crate::batches::dataset::{self, Dataset, MAX_DATASET_BYTES, MAX_FILENAME_CHARS};
use crate::batches::{self, BatchError};
use crate::evals::FileFormat;
use crate::store::BatchInput;
use crate::AppState;

/// Largest request body of the dataset routes: the dataset's text, JSON-escaped (at most
/// twice as long: a quote or a newline takes two bytes), and the other fields.
pub const MAX_DATASET_REQUEST_BYTES: usize = 2 * MAX_DATASET_BYTES + 64 * 1024;

/// A dataset read and set beside the version it would run.
struct Prepared {
    version: i64,
    filename: String,
    dataset: Dataset,
    check: DatasetCheck,
}

async fn prepare(state: &AppState, name: &str, req: CreateTemplateBatch) -> Result<Prepared, ApiError> {
    let format = FileFormat::parse(&req.format).map_err(|e| ApiError::invalid("format", e.message))?;
    let filename = match req.filename {
        Some(f) if f.trim().is_empty() => return Err(ApiError::invalid("filename", "filename must not be empty")),
        Some(f) if f.chars().count() > MAX_FILENAME_CHARS => {
            return Err(ApiError::invalid("filename", format!("filename: at most {MAX_FILENAME_CHARS} characters")))
        }
        Some(f) => f,
        None => format!("dataset.{}", if format == FileFormat::Csv { "csv" } else { "jsonl" }),
    };
    if req.data.len() > MAX_DATASET_BYTES {
        return Err(ApiError::invalid(
            "data",
            format!("{} bytes, over the limit of {MAX_DATASET_BYTES} bytes", req.data.len()),
        ));
    }
    // A template that does not exist is a plain 404; a version that does not, names the field.
    state.store.get_template(name).await?;
    let (version, spec) = resolve_spec(&state.store, name, req.version.as_ref(), None).await.map_err(|mut e| {
        if e.status == StatusCode::NOT_FOUND {
            e.param = Some("version".into());
        }
        e
    })?;
    let version = version.ok_or_else(|| ApiError::internal("a saved version resolved to no number"))?;
    let (template, variables, data) = (name.to_string(), spec.variables(), req.data);
    // Reading up to 32 MiB of CSV or JSON is CPU work: off the tokio workers.
    let (dataset, check) = cpu::run(move || -> Result<_, BatchError> {
        let ds = dataset::parse(format, &data)?;
        let check = dataset::check(&template, version, &variables, &ds);
        Ok((ds, check))
    })
    .await??;
    Ok(Prepared { version, filename, dataset, check })
}

/// `POST /api/templates/{name}/batches/check`: the dataset's columns beside the version's
/// variables, before anything runs. A file that cannot be read is a 400 naming the line.
pub async fn check(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<CreateTemplateBatch>,
) -> Result<Json<DatasetCheck>, ApiError> {
    Ok(Json(prepare(&state, &name, req).await?.check))
}

/// `POST /api/templates/{name}/batches`: one batch line per row, against the version's
/// endpoint pinned by number; 202 with the batch. The batch's metadata names the
/// template, the version and the file.
pub async fn create(
    State(state): State<AppState>,
    Path(name): Path<String>,
    who: Option<Extension<Caller>>,
    ApiJson(req): ApiJson<CreateTemplateBatch>,
) -> Result<Response, ApiError> {
    let Prepared { version, filename, dataset: ds, check } = prepare(&state, &name, req).await?;
    dataset::require_match(&check)?;
    let endpoint = dataset::endpoint(&name, version);
    let ep = endpoint.clone();
    let (lines, content) = cpu::run(move || {
        let lines = dataset::lines(&ds, &ep);
        let content = dataset::input_file(&lines, &ep);
        (lines, content)
    })
    .await?;
    let metadata = BTreeMap::from([
        (META_TEMPLATE.to_string(), name.clone()),
        (META_VERSION.to_string(), version.to_string()),
        (META_DATASET.to_string(), filename),
    ]);
    let input_name = format!("{name}-v{version}-requests.jsonl");
    let batch = batches::start_batch(
        &state.store,
        &endpoint,
        BatchInput::New { filename: &input_name, content: &content },
        Some(&metadata),
        &lines,
        &caller(who),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(batch)).into_response())
}

/// `GET /api/templates/{name}/batches`: the batches that call this template (any
/// version), newest first; `limit` (1 to 100, default 20) and `after` page through.
pub async fn list(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<BatchList>, ApiError> {
    state.store.get_template(&name).await?;
    let (data, has_more) = state.store.list_batches(q.after.as_deref(), limit(&q)?, Some(&name)).await?;
    Ok(Json(BatchList {
        object: "list".into(),
        first_id: data.first().map(|b| b.id.clone()),
        last_id: data.last().map(|b| b.id.clone()),
        data,
        has_more,
    }))
}

/// The download's file name: the template endpoint's `name@ref` and the batch, in
/// characters any header and file system take.
fn results_filename(batch: &Batch, spec: &str) -> String {
    let safe: String = spec
        .replace('@', "-v")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .collect();
    format!("{safe}-{}-results.csv", batch.id)
}

/// `GET /api/batches/{id}/results.csv`: a finished template batch's rows, in input order:
/// the variables, `output`, `finish_reason`, `error` (UTF-8 with a BOM). 409 while the
/// batch runs (its results are not final), or when it does not call a template.
pub async fn results_csv(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let batch = state.store.batch(&id).await?;
    let Some(spec) = batches::template_spec(&batch.endpoint) else {
        return Err(BatchError::Conflict(format!(
            "batch {id} calls {}, not a template: its results are in its output file ({})",
            batch.endpoint,
            batch.output_file_id.as_deref().unwrap_or("none yet")
        ))
        .into());
    };
    if !batch.is_over() {
        let c = batch.request_counts;
        return Err(BatchError::Conflict(format!(
            "batch {id} is {} ({} of {} requests done): its results can be downloaded once it has finished",
            batch.status,
            c.completed + c.failed,
            c.total
        ))
        .into());
    }
    let filename = results_filename(&batch, spec);
    let lines = state.store.batch_results(&id).await?;
    let csv = cpu::run(move || dataset::results_csv(&lines)).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
        ],
        csv,
    )
        .into_response())
}
