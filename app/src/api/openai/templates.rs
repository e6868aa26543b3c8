//! Templates as endpoints (`/v1/templates/{name}@{label-or-version}/completions`) and the
//! studio's run of an unsaved draft: rendered, then answered like `/v1/completions`.

use std::collections::BTreeMap;
use std::time::Instant;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use crate::api::error::ApiError;
use crate::api::openai::{parse_json, CompletionRequest, PromptInput, StopInput, ValidCompletion};
use crate::store::{Run, Store, VersionInfo, VersionRef};
use crate::templates::{self, TemplateFile, TemplateMeta, VersionSpec};
use crate::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateCompletionRequest {
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Accepted only empty: the template supplies the prompt. (OpenAI clients always send
    /// one, so a client pointed at the template's URL works unchanged.)
    pub prompt: Option<String>,
    pub model: Option<String>,
    pub max_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub n: Option<usize>,
    pub seed: Option<u64>,
    pub stop: Option<StopInput>,
    pub logprobs: Option<usize>,
    pub echo: Option<bool>,
    pub stream: Option<bool>,
    pub user: Option<String>,
    pub repetition_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
}

/// `name@ref`; without `@ref`, `production` when that label exists, else the latest version.
async fn resolve_endpoint(store: &Store, spec: &str) -> Result<(crate::store::TemplateInfo, VersionInfo), ApiError> {
    let (name, reference) = match spec.rsplit_once('@') {
        Some((n, r)) => (n, VersionRef::parse(r)),
        None => (spec, VersionRef::ProductionOrLatest),
    };
    Ok(store.resolve(name, &reference).await?)
}

pub async fn template_completions(
    State(state): State<AppState>,
    Path(spec): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let r: TemplateCompletionRequest = parse_json(body)?;
    let (t, v) = resolve_endpoint(&state.store, &spec).await?;
    complete_spec(state, &v.spec.clone(), r, Some((t, v))).await
}

/// Runs an unsaved draft exactly as its template endpoint would once saved (the studio's
/// Run button). Not recorded in any template's run history.
pub async fn draft_completions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // `{spec, ...the template endpoint's fields}`: the spec is taken out first so both
    // parts keep their strict field checks and errors keep naming the field.
    let mut body: serde_json::Map<String, Value> = parse_json(body)?;
    let spec = body.remove("spec").ok_or_else(|| ApiError::invalid("spec", "spec: the draft to run is required"))?;
    let spec: VersionSpec = serde_path_to_error::deserialize(spec).map_err(|e| {
        let param = format!("spec.{}", e.path());
        ApiError::invalid(&param, format!("{param}: {}", e.inner()))
    })?;
    spec.validate()?;
    let request: TemplateCompletionRequest = parse_json(Ok(Bytes::from(Value::Object(body).to_string())))?;
    complete_spec(state, &spec, request, None).await
}

async fn complete_spec(
    state: AppState,
    spec: &VersionSpec,
    r: TemplateCompletionRequest,
    saved: Option<(crate::store::TemplateInfo, VersionInfo)>,
) -> Result<Response, ApiError> {
    if r.prompt.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(ApiError::invalid(
            "prompt",
            "a template supplies its own prompt: send `variables` (and leave `prompt` empty or out)",
        ));
    }
    let rendered = spec.render(&r.variables)?;
    let (ids, _) = rendered.token_ids(&state.scheduler.tokenizer).map_err(|e| ApiError::internal(e.to_string()))?;
    let p = &spec.parameters;
    let stop = r.stop.unwrap_or(StopInput::Many(p.stop.clone()));
    let req = CompletionRequest {
        model: r.model,
        prompt: PromptInput::Tokens(ids),
        max_tokens: Some(r.max_tokens.unwrap_or(p.max_tokens)),
        temperature: Some(r.temperature.unwrap_or(p.temperature)),
        top_p: Some(r.top_p.unwrap_or(p.top_p)),
        top_k: Some(r.top_k.unwrap_or(p.top_k)),
        n: r.n,
        seed: r.seed.or(p.seed),
        stop: Some(stop),
        logprobs: r.logprobs,
        echo: r.echo,
        stream: r.stream,
        user: r.user,
        repetition_penalty: Some(r.repetition_penalty.unwrap_or(p.repetition_penalty)),
        presence_penalty: r.presence_penalty,
        frequency_penalty: r.frequency_penalty,
    };
    let parameters = json!({
        "temperature": req.temperature, "top_p": req.top_p, "top_k": req.top_k, "max_tokens": req.max_tokens,
        "repetition_penalty": req.repetition_penalty, "seed": req.seed,
        "stop": match &req.stop { Some(StopInput::One(s)) => vec![s.clone()], Some(StopInput::Many(v)) => v.clone(), None => vec![] },
    });
    let mut valid = ValidCompletion::new(&state, req)?;
    let Some((t, v)) = saved else {
        return crate::api::openai::respond(state, valid).await;
    };
    valid.template = Some(json!({ "name": t.name, "version": v.version }));
    let run = Run {
        template: Some(t.name.clone()),
        version: Some(v.version),
        variables: json!(r.variables),
        prompt: rendered.text(),
        parameters,
        source: "api".into(),
        ..Run::default()
    };
    valid.record = Some(crate::api::openai::RunRecorder { store: state.store.clone(), run, started: Instant::now() });
    crate::api::openai::respond(state, valid).await
}

