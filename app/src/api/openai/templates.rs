//! Templates as endpoints (`/v1/templates/{name}@{label-or-version}/completions`) and the
//! studio's run of an unsaved draft: rendered, then answered like `/v1/completions`.

use std::time::Instant;

use api_types::{GenerationParams, PromptInput, StopInput, TemplateCall};
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::api::cpu;
use crate::api::error::ApiError;
use crate::api::json::{from_value, split, ApiJson, WithParams};
use crate::api::openai::{respond, ResponseExtras, RunRecorder};
use crate::serving::{RequestOptions, ServeError, ValidRequest};
use crate::store::{Run, Store, TemplateInfo, VersionInfo, VersionRef};
use crate::templates::{TokenIds, VersionSpec};
use crate::AppState;

/// `name@ref`; without `@ref`, `production` when that label exists, else the latest version.
async fn resolve_endpoint(store: &Store, spec: &str) -> Result<(TemplateInfo, VersionInfo), ApiError> {
    let (name, reference) = match spec.rsplit_once('@') {
        Some((n, r)) => (n, VersionRef::parse(r)),
        None => (spec, VersionRef::ProductionOrLatest),
    };
    Ok(store.resolve(name, &reference).await?)
}

pub async fn template_completions(
    State(state): State<AppState>,
    Path(spec): Path<String>,
    WithParams(call, params): WithParams<TemplateCall>,
) -> Result<Response, ApiError> {
    let (t, v) = resolve_endpoint(&state.store, &spec).await?;
    complete_spec(state, &v.spec.clone(), call, params, Some((t, v))).await
}

/// Runs an unsaved draft exactly as its template endpoint would once saved (the studio's
/// Run button). Not recorded in any template's run history.
pub async fn draft_completions(
    State(state): State<AppState>,
    ApiJson(mut body): ApiJson<Map<String, Value>>,
) -> Result<Response, ApiError> {
    // `{spec, ...the template endpoint's fields}`: the spec is taken out first so both
    // parts keep their strict field checks and errors keep naming the field.
    let spec = body.remove("spec").ok_or_else(|| ApiError::invalid("spec", "spec: the draft to run is required"))?;
    let spec: VersionSpec = from_value(spec, "spec")?;
    spec.validate()?;
    let WithParams(call, params) = split::<TemplateCall>(body, "")?;
    complete_spec(state, &spec, call, params, None).await
}

async fn complete_spec(
    state: AppState,
    spec: &VersionSpec,
    mut call: TemplateCall,
    params: GenerationParams,
    saved: Option<(TemplateInfo, VersionInfo)>,
) -> Result<Response, ApiError> {
    if call.prompt.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(ApiError::invalid(
            "prompt",
            "a template supplies its own prompt: send `variables` (and leave `prompt` empty or out)",
        ));
    }
    // The call's parameters over the version's saved ones.
    let p = &spec.parameters;
    let params = GenerationParams {
        max_tokens: Some(params.max_tokens.unwrap_or(p.max_tokens)),
        temperature: Some(params.temperature.unwrap_or(p.temperature)),
        top_p: Some(params.top_p.unwrap_or(p.top_p)),
        top_k: Some(params.top_k.unwrap_or(p.top_k)),
        seed: params.seed.or(p.seed),
        stop: Some(params.stop.unwrap_or(StopInput::Many(p.stop.clone()))),
        repetition_penalty: Some(params.repetition_penalty.unwrap_or(p.repetition_penalty)),
        ..params
    };
    let recorded = json!({
        "temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k, "max_tokens": params.max_tokens,
        "repetition_penalty": params.repetition_penalty, "seed": params.seed,
        "stop": params.stop.clone().map(StopInput::into_vec).unwrap_or_default(),
    });
    let output = call.take_output();
    // The version's constraint applies unless the call brings its own (see `with_output_or`).
    let fallback =
        crate::templates::output::constraint_spec(spec).map_err(|fe| ApiError::invalid(&fe.field, fe.to_string()))?;
    let opts = RequestOptions {
        model: call.model,
        logprobs: call.logprobs,
        echo: call.echo.unwrap_or(false),
        stream: call.stream.unwrap_or(false),
    };
    let include_usage = call.stream_options.is_some_and(|o| o.include_usage);
    // Rendering and tokenizing are CPU work: off the tokio workers.
    let (sched, owned, variables) = (state.scheduler.clone(), spec.clone(), call.variables.clone());
    let (rendered, valid) = cpu::run(move || -> Result<_, ApiError> {
        let rendered = owned.render(&variables)?;
        let (ids, _) = rendered.token_ids(&sched.tokenizer).map_err(ServeError::internal)?;
        let valid = ValidRequest::new(&sched, PromptInput::Tokens(ids), params, opts)?
            .with_output_or(&sched, output, fallback)?;
        Ok((rendered, valid))
    })
    .await??;
    let Some((t, v)) = saved else {
        return respond(state, valid, ResponseExtras { include_usage, ..Default::default() }).await;
    };
    let run = Run {
        template: Some(t.name.clone()),
        version: Some(v.version),
        variables: call.variables.clone(),
        prompt: rendered.text(),
        parameters: recorded,
        source: "api".into(),
        ..Run::default()
    };
    let extras = ResponseExtras {
        chat: false,
        template: Some(json!({ "name": t.name, "version": v.version })),
        record: Some(RunRecorder { store: state.store.clone(), run, started: Instant::now() }),
        include_usage,
    };
    respond(state, valid, extras).await
}
