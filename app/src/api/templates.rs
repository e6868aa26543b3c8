//! The template API (`/api/templates/...`): CRUD, versions, labels, diff, render, runs, import and export.

use std::collections::BTreeMap;

use api_types::templates::{
    CreateTemplate, CreateVersion, CreatedTemplate, CreatedVersion, LabelMoved, Labels, RenderDraft, RenderRequest,
    RenderedPrompt, RunList, SetLabel, TemplateDetail, TemplateFootprint, TemplateList, TemplateSummary, UpdateMeta,
    UpdatedTemplate, VersionDetail, VersionDiff, VersionList, VersionStamp,
};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use crate::api::auth::{caller, Caller};
use crate::api::cpu;
use crate::api::error::ApiError;
use crate::api::json::ApiJson;
use crate::store::{TemplateInfo, VersionInfo, VersionRef};
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
fn summary(template: TemplateInfo, latest: VersionInfo) -> TemplateSummary {
    let spec = latest.spec;
    TemplateSummary {
        template,
        variables: spec.variables(),
        example_count: spec.examples.len(),
        example: spec.examples.into_iter().next(),
        instruction: spec.instruction,
        latest_note: latest.note,
    }
}

pub async fn list(State(state): State<AppState>, Query(q): Query<ListQuery>) -> Result<Json<TemplateList>, ApiError> {
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
        out.push(summary(t, latest));
    }
    Ok(Json(TemplateList { count: out.len(), templates: out }))
}

pub async fn create(
    State(state): State<AppState>,
    who: Option<Extension<Caller>>,
    ApiJson(r): ApiJson<CreateTemplate>,
) -> Result<Response, ApiError> {
    let meta =
        TemplateMeta { name: r.name, title: r.title, description: r.description, tags: r.tags, language: r.language };
    check_output(&state, &r.spec).await?;
    let (t, v) = state.store.create_template(&meta, &r.spec, &r.note, &caller(who), "user").await?;
    Ok((StatusCode::CREATED, Json(CreatedTemplate { template: t, version: v })).into_response())
}

pub async fn get(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<TemplateDetail>, ApiError> {
    let t = state.store.get_template(&name).await?;
    let latest = state.store.get_version(&name, t.latest_version).await?;
    Ok(Json(TemplateDetail { template: t, variables: latest.spec.variables(), latest }))
}

pub async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(r): ApiJson<UpdateMeta>,
) -> Result<Json<UpdatedTemplate>, ApiError> {
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
    Ok(Json(UpdatedTemplate { template: state.store.update_meta(&name, &meta).await? }))
}

/// Deletes the template and everything it owns; answers what was removed.
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<TemplateFootprint>, ApiError> {
    Ok(Json(state.store.delete_template(&name).await?))
}

/// What deleting the template would remove (the studio asks before deleting).
pub async fn footprint(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<TemplateFootprint>, ApiError> {
    Ok(Json(state.store.template_footprint(&name).await?))
}

pub async fn versions(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<VersionList>, ApiError> {
    let t = state.store.get_template(&name).await?;
    let versions = state.store.list_versions(&name).await?;
    Ok(Json(VersionList { template: t, versions }))
}

pub async fn create_version(
    State(state): State<AppState>,
    who: Option<Extension<Caller>>,
    Path(name): Path<String>,
    ApiJson(r): ApiJson<CreateVersion>,
) -> Result<Response, ApiError> {
    check_output(&state, &r.spec).await?;
    let v = state.store.create_version(&name, &r.spec, &r.note, &caller(who)).await?;
    Ok((StatusCode::CREATED, Json(CreatedVersion { version: v })).into_response())
}

pub async fn get_version(
    State(state): State<AppState>,
    Path((name, reference)): Path<(String, String)>,
) -> Result<Json<VersionDetail>, ApiError> {
    let (t, v) = state.store.resolve(&name, &VersionRef::parse(&reference)).await?;
    Ok(Json(VersionDetail {
        labels: t.labels_of(v.version),
        template: t.name,
        variables: v.spec.variables(),
        version: v,
    }))
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
) -> Result<Json<VersionDiff>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid("from", format!("from and to are required: {e}")))?;
    let (_, a) = state.store.resolve(&name, &VersionRef::parse(&q.from)).await?;
    let (_, b) = state.store.resolve(&name, &VersionRef::parse(&q.to)).await?;
    let stamp = |v: &VersionInfo| VersionStamp { version: v.version, note: v.note.clone(), created_at: v.created_at };
    let (from, to) = (stamp(&a), stamp(&b));
    // A diff of fields up to 20k characters is CPU work (bounded in `diff` itself).
    let d = cpu::run(move || crate::templates::diff(&a.spec, &b.spec)).await?;
    Ok(Json(VersionDiff { from: Some(from), to: Some(to), ..d }))
}

pub async fn labels(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Labels>, ApiError> {
    let t = state.store.get_template(&name).await?;
    let history = state.store.label_history(&name).await?;
    Ok(Json(Labels { labels: t.labels, history }))
}

pub async fn set_label(
    State(state): State<AppState>,
    who: Option<Extension<Caller>>,
    Path((name, label)): Path<(String, String)>,
    ApiJson(r): ApiJson<SetLabel>,
) -> Result<Json<LabelMoved>, ApiError> {
    crate::evals::check_gate(&state.store, &name, &label, r.version).await?;
    let from = state.store.set_label(&name, &label, r.version, &caller(who)).await?;
    Ok(Json(LabelMoved { template: name, label, from_version: from, to_version: r.version }))
}

pub async fn delete_label(
    State(state): State<AppState>,
    who: Option<Extension<Caller>>,
    Path((name, label)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_label(&name, &label, &caller(who)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Compiles a spec's output constraint for the served model, so that a regex or schema the
/// decoder cannot take is refused where it is typed (the live preview) and saved, with a
/// 400 naming its field (`output.pattern`). A spec that fails its own checks is left to
/// the store, which names the field with the rest of the spec's.
async fn check_output(state: &AppState, spec: &VersionSpec) -> Result<(), ApiError> {
    let Ok(Some((param, constraint))) = crate::templates::output::constraint_spec(spec) else { return Ok(()) };
    let sched = state.scheduler.clone();
    cpu::run(move || crate::serving::compile_constraint(&sched, param, &constraint).map(|_| ())).await??;
    Ok(())
}

/// Renders and tokenizes (CPU work: off the tokio workers).
async fn rendered(
    state: &AppState,
    spec: VersionSpec,
    vars: BTreeMap<String, String>,
) -> Result<RenderedPrompt, ApiError> {
    let sched = state.scheduler.clone();
    cpu::run(move || rendered_sync(&sched, &spec, &vars)).await?
}

fn rendered_sync(
    sched: &crate::serving::Scheduler,
    spec: &VersionSpec,
    vars: &BTreeMap<String, String>,
) -> Result<RenderedPrompt, ApiError> {
    let r = crate::serving::chat::render_version(&sched.tokenizer, &sched.model_name, spec, vars)?;
    let (ids, prefix_tokens) = r.token_ids(&sched.tokenizer).map_err(|e| ApiError::internal(e.to_string()))?;
    let context_length = sched.context_length;
    Ok(RenderedPrompt {
        prompt: r.text(),
        prefix: r.prefix,
        suffix: r.suffix,
        prompt_tokens: ids.len(),
        prefix_tokens,
        context_length,
        variables: spec.variables(),
        version: None,
        missing: None,
    })
}

pub async fn render(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(r): ApiJson<RenderRequest>,
) -> Result<Json<RenderedPrompt>, ApiError> {
    let reference = VersionRef::parse(r.version.as_deref().unwrap_or("latest"));
    let (_, v) = state.store.resolve(&name, &reference).await?;
    Ok(Json(RenderedPrompt { version: Some(v.version), ..rendered(&state, v.spec, r.variables).await? }))
}

/// Renders an unsaved draft (the playground's live preview and token count).
pub async fn render_draft(
    State(state): State<AppState>,
    ApiJson(r): ApiJson<RenderDraft>,
) -> Result<Json<RenderedPrompt>, ApiError> {
    // Whatever the parameters say, the preview renders: they do not change the prompt, and
    // one out of range must not hide the variables (the studio checks them at their fields).
    VersionSpec { parameters: Default::default(), ..r.spec.clone() }.validate()?;
    check_output(&state, &r.spec).await?;
    if !r.partial {
        return Ok(Json(rendered(&state, r.spec, r.variables).await?));
    }
    let needed = r.spec.variables();
    let missing: Vec<String> =
        needed.iter().filter(|n| r.variables.get(*n).is_none_or(|v| v.is_empty())).cloned().collect();
    let vars: BTreeMap<String, String> = needed
        .iter()
        .map(|n| match r.variables.get(n).filter(|v| !v.is_empty()) {
            Some(v) => (n.clone(), v.clone()),
            None => (n.clone(), format!("{{{{{n}}}}}")),
        })
        .collect();
    Ok(Json(RenderedPrompt { missing: Some(missing), ..rendered(&state, r.spec, vars).await? }))
}

#[derive(Debug, Deserialize)]
pub struct RunsQuery {
    pub limit: Option<i64>,
}

pub async fn runs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<RunsQuery>,
) -> Result<Json<RunList>, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    Ok(Json(RunList { runs: state.store.list_runs(&name, limit).await? }))
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
    Ok((status, Json(outcome)).into_response())
}
