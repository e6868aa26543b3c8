//! The template API (`/api/templates/...`): CRUD, versions, labels, diff, render, runs, import and export.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::auth::{caller, Caller};
use crate::api::error::ApiError;
use crate::api::json::ApiJson;
use crate::store::{VersionInfo, VersionRef};
use crate::templates::{TemplateFile, TemplateMeta, TokenIds, VersionSpec};
use crate::AppState;

#[derive(Debug, Deserialize, Default)]
pub struct ListQuery {
    /// Words that must all appear in the name, title, description or tags.
    pub q: Option<String>,
    pub tag: Option<String>,
    pub language: Option<String>,
    pub source: Option<String>,
}

/// A template for the library view: metadata, labels and a summary of its latest version.
fn summary(t: &crate::store::TemplateInfo, latest: &VersionInfo) -> Value {
    let spec = &latest.spec;
    json!({
        "template": t,
        "variables": spec.variables(),
        "example_count": spec.examples.len(),
        "example": spec.examples.first(),
        "instruction": spec.instruction,
        "latest_note": latest.note,
    })
}

pub async fn list(State(state): State<AppState>, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let words: Vec<String> = q.q.as_deref().unwrap_or("").split_whitespace().map(|w| w.to_lowercase()).collect();
    let mut out = Vec::new();
    for (t, latest) in state.store.list_templates_with_latest().await? {
        let haystack = format!("{} {} {} {}", t.name, t.title, t.description, t.tags.join(" ")).to_lowercase();
        if !words.iter().all(|w| haystack.contains(w.as_str())) {
            continue;
        }
        if q.tag.as_ref().is_some_and(|tag| !t.tags.iter().any(|x| x == tag)) {
            continue;
        }
        if q.language.as_ref().is_some_and(|l| &t.language != l) {
            continue;
        }
        if q.source.as_ref().is_some_and(|s| &t.source != s) {
            continue;
        }
        out.push(summary(&t, &latest));
    }
    Ok(Json(json!({ "templates": out, "count": out.len() })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplate {
    pub name: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub language: String,
    #[serde(default)]
    pub spec: VersionSpec,
    #[serde(default)]
    pub note: String,
}

pub async fn create(
    State(state): State<AppState>,
    who: Option<Extension<Caller>>,
    ApiJson(r): ApiJson<CreateTemplate>,
) -> Result<Response, ApiError> {
    let meta =
        TemplateMeta { name: r.name, title: r.title, description: r.description, tags: r.tags, language: r.language };
    let (t, v) = state.store.create_template(&meta, &r.spec, &r.note, &caller(who), "user").await?;
    Ok((StatusCode::CREATED, Json(json!({ "template": t, "version": v })).into_response()).into_response())
}

pub async fn get(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let t = state.store.get_template(&name).await?;
    let latest = state.store.get_version(&name, t.latest_version).await?;
    Ok(Json(json!({ "template": t, "latest": latest, "variables": latest.spec.variables() })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeta {
    pub title: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
    pub language: Option<String>,
    /// The production eval gate (see docs/evals-api.md).
    pub eval_gate: Option<bool>,
}

pub async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(r): ApiJson<UpdateMeta>,
) -> Result<Json<Value>, ApiError> {
    let mut meta = state.store.get_template(&name).await?.meta();
    if let Some(v) = r.title {
        meta.title = v;
    }
    if let Some(v) = r.description {
        meta.description = v;
    }
    if let Some(v) = r.tags {
        meta.tags = v;
    }
    if let Some(v) = r.language {
        meta.language = v;
    }
    if let Some(on) = r.eval_gate {
        state.store.set_eval_gate(&name, on).await?;
    }
    Ok(Json(json!({ "template": state.store.update_meta(&name, &meta).await? })))
}

pub async fn delete(State(state): State<AppState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    state.store.delete_template(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn versions(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let t = state.store.get_template(&name).await?;
    let versions = state.store.list_versions(&name).await?;
    Ok(Json(json!({ "template": t, "versions": versions })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVersion {
    pub spec: VersionSpec,
    #[serde(default)]
    pub note: String,
}

pub async fn create_version(
    State(state): State<AppState>,
    who: Option<Extension<Caller>>,
    Path(name): Path<String>,
    ApiJson(r): ApiJson<CreateVersion>,
) -> Result<Response, ApiError> {
    let v = state.store.create_version(&name, &r.spec, &r.note, &caller(who)).await?;
    Ok((StatusCode::CREATED, Json(json!({ "version": v }))).into_response())
}

pub async fn get_version(
    State(state): State<AppState>,
    Path((name, reference)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (t, v) = state.store.resolve(&name, &VersionRef::parse(&reference)).await?;
    let labels: Vec<&String> = t.labels.iter().filter(|(_, &n)| n == v.version).map(|(l, _)| l).collect();
    Ok(Json(json!({ "template": t.name, "version": v, "labels": labels, "variables": v.spec.variables() })))
}

/// Versions are immutable: any attempt to change one is refused.
pub async fn version_immutable(Path((name, reference)): Path<(String, String)>) -> ApiError {
    ApiError::status(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "version {reference} of '{name}' is immutable; save a new version with POST /api/templates/{name}/versions"
        ),
    )
    .with_code("version_immutable")
}

#[derive(Debug, Deserialize)]
pub struct DiffQuery {
    pub from: String,
    pub to: String,
}

pub async fn diff(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<DiffQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid("from", format!("from and to are required: {e}")))?;
    let (_, a) = state.store.resolve(&name, &VersionRef::parse(&q.from)).await?;
    let (_, b) = state.store.resolve(&name, &VersionRef::parse(&q.to)).await?;
    let mut d = crate::templates::diff(&a.spec, &b.spec);
    d["from"] = json!({ "version": a.version, "note": a.note, "created_at": a.created_at });
    d["to"] = json!({ "version": b.version, "note": b.note, "created_at": b.created_at });
    Ok(Json(d))
}

pub async fn labels(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let t = state.store.get_template(&name).await?;
    let history = state.store.label_history(&name).await?;
    Ok(Json(json!({ "labels": t.labels, "history": history })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetLabel {
    pub version: i64,
}

pub async fn set_label(
    State(state): State<AppState>,
    who: Option<Extension<Caller>>,
    Path((name, label)): Path<(String, String)>,
    ApiJson(r): ApiJson<SetLabel>,
) -> Result<Json<Value>, ApiError> {
    crate::evals::check_gate(&state.store, &name, &label, r.version).await?;
    let from = state.store.set_label(&name, &label, r.version, &caller(who)).await?;
    Ok(Json(json!({ "template": name, "label": label, "from_version": from, "to_version": r.version })))
}

pub async fn delete_label(
    State(state): State<AppState>,
    who: Option<Extension<Caller>>,
    Path((name, label)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_label(&name, &label, &caller(who)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderRequest {
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// A version number, label or `latest` (default).
    pub version: Option<String>,
}

fn rendered_json(state: &AppState, spec: &VersionSpec, vars: &BTreeMap<String, String>) -> Result<Value, ApiError> {
    let r = spec.render(vars)?;
    let (ids, prefix_tokens) =
        r.token_ids(&state.scheduler.tokenizer).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(json!({
        "prompt": r.text(), "prefix": r.prefix, "suffix": r.suffix,
        "prompt_tokens": ids.len(), "prefix_tokens": prefix_tokens,
        "context_length": state.scheduler.context_length, "variables": spec.variables(),
    }))
}

pub async fn render(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(r): ApiJson<RenderRequest>,
) -> Result<Json<Value>, ApiError> {
    let reference = VersionRef::parse(r.version.as_deref().unwrap_or("latest"));
    let (_, v) = state.store.resolve(&name, &reference).await?;
    let mut out = rendered_json(&state, &v.spec, &r.variables)?;
    out["version"] = json!(v.version);
    Ok(Json(out))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderDraft {
    pub spec: VersionSpec,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// While typing: variables not filled in yet stay as `{{name}}` and extra ones are
    /// ignored, so the preview and token count never stop on a half-written input.
    #[serde(default)]
    pub partial: bool,
}

/// Renders an unsaved draft (the playground's live preview and token count).
pub async fn render_draft(
    State(state): State<AppState>,
    ApiJson(r): ApiJson<RenderDraft>,
) -> Result<Json<Value>, ApiError> {
    r.spec.validate()?;
    if !r.partial {
        return Ok(Json(rendered_json(&state, &r.spec, &r.variables)?));
    }
    let needed = r.spec.variables();
    let missing: Vec<&String> = needed.iter().filter(|n| r.variables.get(*n).is_none_or(|v| v.is_empty())).collect();
    let vars: BTreeMap<String, String> = needed
        .iter()
        .map(|n| match r.variables.get(n).filter(|v| !v.is_empty()) {
            Some(v) => (n.clone(), v.clone()),
            None => (n.clone(), format!("{{{{{n}}}}}")),
        })
        .collect();
    let mut out = rendered_json(&state, &r.spec, &vars)?;
    out["missing"] = json!(missing);
    Ok(Json(out))
}

#[derive(Debug, Deserialize)]
pub struct RunsQuery {
    pub limit: Option<i64>,
}

pub async fn runs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<RunsQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    Ok(Json(json!({ "runs": state.store.list_runs(&name, limit).await? })))
}

#[derive(Debug, Deserialize)]
pub struct ExportQuery {
    pub version: Option<String>,
}

pub async fn export(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let (t, v) = state.store.resolve(&name, &VersionRef::parse(q.version.as_deref().unwrap_or("latest"))).await?;
    let text = TemplateFile::from_parts(&t.meta(), &v.spec, &v.note).to_toml();
    Ok((
        [
            (header::CONTENT_TYPE, "application/toml; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}.toml\"")),
        ],
        text,
    )
        .into_response())
}

/// Imports one file in the `prompts/` format (the body is the TOML text).
pub async fn import(
    State(state): State<AppState>,
    who: Option<Extension<Caller>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| ApiError::status(r.status(), r.body_text()))?;
    let text = std::str::from_utf8(&body).map_err(|e| {
        ApiError::invalid("body", format!("the file is not UTF-8 (invalid byte at offset {})", e.valid_up_to()))
    })?;
    let file = TemplateFile::parse(text).map_err(|e| {
        ApiError::unprocessable(e.field.as_deref().unwrap_or("file"), e.to_string()).with_code("invalid_template_file")
    })?;
    let outcome = state.store.import_file(&file, &caller(who), "user").await?;
    let status = if outcome.created_template { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!(outcome))).into_response())
}
