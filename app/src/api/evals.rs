//! The evals API: test sets, eval runs, comparison, few-shot selection (docs/evals-api.md).

use std::collections::BTreeMap;

use api_types::evals::{
    CreateEval, EvalComparison, EvalList, EvalRun, EvalRunDetail, FlippedRow, RowOutcome, Selection, TestList,
    TestsImported,
};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::Value;

use crate::api::auth::{caller, Caller};
use crate::api::cpu;
use crate::api::error::ApiError;
use crate::api::json::{parse, ApiJson};
use crate::evals::{self, EvalPlan, FileFormat, RowCheck, TestRow};
use crate::store::ImportMode;
use crate::store::{Store, VersionRef};
use crate::templates::{FieldError, VersionSpec};
use crate::AppState;

// ---------------------------------------------------------------------- test sets

pub async fn list_tests(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<TestList>, ApiError> {
    let rows = state.store.list_tests(&name).await?;
    Ok(Json(TestList { template: name, count: rows.len(), rows }))
}

#[derive(Debug, Deserialize, Default)]
pub struct ImportQuery {
    pub format: Option<String>,
    pub mode: Option<String>,
}

pub async fn import_tests(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ImportQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TestsImported>, ApiError> {
    let mode = ImportMode::parse(q.mode.as_deref().unwrap_or("replace"))?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_lowercase();
    let format = match q.format.as_deref() {
        Some(f) => Some(FileFormat::parse(f)?),
        None if content_type.starts_with("text/csv") => Some(FileFormat::Csv),
        None if content_type.contains("ndjson") || content_type.contains("jsonl") => Some(FileFormat::Jsonl),
        None if content_type.starts_with("application/json") => None,
        None => {
            return Err(FieldError::new(
                "format",
                "say the file's format: ?format=csv|jsonl, or content-type text/csv / application/x-ndjson",
            )
            .into())
        }
    };
    // The columns a row may have: the variables of any version of the template.
    let mut variables: Vec<String> = Vec::new();
    for v in state.store.list_versions(&name).await? {
        for var in v.spec.variables() {
            if !variables.contains(&var) {
                variables.push(var);
            }
        }
    }
    // Test-set errors say where they are (row, line, column) in the message itself.
    let clean = |fe: FieldError| ApiError::unprocessable(&fe.field, fe.message);
    let template = name.clone();
    // Parsing and checking up to 2 MiB of CSV or JSON is CPU work: off the tokio workers.
    let rows = match format {
        Some(f) => {
            let bytes = body.map_err(|e| ApiError::invalid("body", e.body_text()))?;
            cpu::run(move || -> Result<_, ApiError> {
                let rows = evals::parse(f, evals::utf8(&bytes).map_err(clean)?).map_err(clean)?;
                evals::check_columns(&rows, &template, &variables).map_err(clean)?;
                Ok(rows)
            })
            .await??
        }
        None => {
            let bytes = body.map_err(|r| ApiError::status(r.status(), r.body_text()))?;
            cpu::run(move || -> Result<_, ApiError> {
                let r: evals::StrictImport = parse(&bytes)?;
                if r.rows.is_empty() {
                    return Err(FieldError::new("rows", "no rows").into());
                }
                let rows: Vec<TestRow> = r.rows.into_iter().map(TestRow::from).collect();
                for (i, row) in rows.iter().enumerate() {
                    row.validate(i + 1).map_err(clean)?;
                }
                evals::check_columns(&rows, &template, &variables).map_err(clean)?;
                Ok(rows)
            })
            .await??
        }
    };
    let count = state.store.import_tests(&name, &rows, mode).await?;
    Ok(Json(TestsImported { template: name, imported: rows.len(), count }))
}

#[derive(Debug, Deserialize, Default)]
pub struct ExportQuery {
    pub format: Option<String>,
}

pub async fn export_tests(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let format = FileFormat::parse(q.format.as_deref().unwrap_or("csv"))?;
    let rows: Vec<TestRow> = state.store.list_tests(&name).await?.into_iter().map(|c| c.row).collect();
    let ext = if format == FileFormat::Csv { "csv" } else { "jsonl" };
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}-tests.{ext}\"")),
        ],
        evals::export(format, &rows),
    )
        .into_response())
}

/// `PUT /api/templates/{name}/tests/{id}`: one row edited in place, checked as an import is.
pub async fn update_test(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, i64)>,
    ApiJson(row): ApiJson<TestRow>,
) -> Result<StatusCode, ApiError> {
    let clean = |fe: FieldError| ApiError::unprocessable(&fe.field, fe.message);
    let mut variables: Vec<String> = Vec::new();
    for v in state.store.list_versions(&name).await? {
        for var in v.spec.variables() {
            if !variables.contains(&var) {
                variables.push(var);
            }
        }
    }
    row.validate(1).map_err(clean)?;
    evals::check_columns(std::slice::from_ref(&row), &name, &variables).map_err(clean)?;
    state.store.update_test(&name, id, &row).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/templates/{name}/tests/{id}`.
pub async fn delete_test(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, i64)>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_test(&name, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn delete_tests(State(state): State<AppState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    state.store.delete_tests(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------- runs

/// The version a request names (`version` as number or string), or the draft `spec`.
pub async fn resolve_spec(
    store: &Store,
    name: &str,
    version: Option<&Value>,
    spec: Option<VersionSpec>,
) -> Result<(Option<i64>, VersionSpec), ApiError> {
    match (version, spec) {
        (Some(_), Some(_)) => Err(ApiError::invalid("spec", "give either a version or a draft spec, not both")),
        (None, Some(spec)) => {
            spec.validate()?;
            store.get_template(name).await?;
            Ok((None, spec))
        }
        (v, None) => {
            let reference = match v {
                None => VersionRef::ProductionOrLatest,
                Some(Value::Number(n)) => VersionRef::Number(n.as_i64().unwrap_or(-1)),
                Some(Value::String(s)) => VersionRef::parse(s),
                Some(other) => {
                    return Err(ApiError::invalid("version", format!("a number, 'latest' or a label, got {other}")))
                }
            };
            let (_, v) = store.resolve(name, &reference).await?;
            Ok((Some(v.version), v.spec))
        }
    }
}

pub async fn create_eval(
    State(state): State<AppState>,
    who: Option<Extension<Caller>>,
    ApiJson(r): ApiJson<CreateEval>,
) -> Result<Response, ApiError> {
    let (version, spec) = resolve_spec(&state.store, &r.template, r.version.as_ref(), r.spec).await?;
    let settings = evals::settings(&state.scheduler, &spec, r.n, r.temperature, r.seed, r.max_tokens)?;
    let plan = EvalPlan { template: r.template, version, spec, settings };
    let run = evals::start(&state.scheduler, &state.store, plan, &caller(who)).await?;
    Ok((StatusCode::ACCEPTED, Json(run)).into_response())
}

#[derive(Debug, Deserialize, Default)]
pub struct GetQuery {
    pub results: Option<bool>,
}

pub async fn get_eval(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<GetQuery>,
) -> Result<Json<EvalRunDetail>, ApiError> {
    let run = state.store.eval_run(id).await?;
    let results = if q.results.unwrap_or(true) { Some(state.store.eval_results(id).await?) } else { None };
    Ok(Json(EvalRunDetail { run, results }))
}

pub async fn cancel_eval(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Json<EvalRun>, ApiError> {
    Ok(Json(state.store.cancel_eval_run(id).await?))
}

pub async fn template_evals(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<EvalList>, ApiError> {
    let runs = state.store.list_eval_runs(&name, 200).await?;
    Ok(Json(EvalList { template: name, evals: runs.iter().map(EvalRun::summary).collect() }))
}

pub async fn compare(
    State(state): State<AppState>,
    Path((a, b)): Path<(i64, i64)>,
) -> Result<Json<EvalComparison>, ApiError> {
    let (ra, rb) = (state.store.eval_run(a).await?, state.store.eval_run(b).await?);
    if let Some(why) = evals::different_test_sets(&ra, &rb) {
        return Err(evals::EvalError::DifferentTestSets(why).into());
    }
    let key = |r: &evals::RowResult| {
        format!("{}\u{0}{:?}", serde_json::to_string(&r.variables).expect("variables serialize"), r.expected)
    };
    let a_rows = state.store.eval_results(a).await?;
    let mut b_rows: BTreeMap<String, evals::RowResult> =
        state.store.eval_results(b).await?.into_iter().map(|r| (key(&r), r)).collect();
    let (mut fixed, mut broken, mut unchanged, mut unmatched) = (Vec::new(), Vec::new(), 0, 0);
    for x in a_rows {
        let Some(y) = b_rows.remove(&key(&x)) else {
            unmatched += 1;
            continue;
        };
        let row = FlippedRow {
            index: y.index,
            variables: y.variables.clone(),
            expected: y.expected.clone(),
            a: RowOutcome::from(&x),
            b: RowOutcome::from(&y),
        };
        match (x.passed, y.passed) {
            (false, true) => fixed.push(row),
            (true, false) => broken.push(row),
            _ => unchanged += 1,
        }
    }
    unmatched += b_rows.len();
    Ok(Json(EvalComparison { a: ra.summary(), b: rb.summary(), fixed, broken, unchanged, unmatched }))
}

// ---------------------------------------------------------------------- few-shot selection

pub async fn select_examples(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(r): ApiJson<crate::evals::select::SelectRequest>,
) -> Result<Json<Selection>, ApiError> {
    let (_, spec) = resolve_spec(&state.store, &name, r.version.as_ref(), r.spec.clone()).await?;
    let tests = state.store.list_tests(&name).await?;
    let report = crate::evals::select::select(&state.scheduler, &spec, &tests, &r).await?;
    Ok(Json(Selection { template: name, report }))
}
