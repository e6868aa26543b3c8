//! `/v1/models`, `/v1/tokenize`, `/v1/detokenize`.

use api_types::completions::{Model, ModelList};
use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::cpu;
use crate::api::error::ApiError;
use crate::api::json::ApiJson;
use crate::serving::validate::{check_model, check_token_ids};
use crate::serving::ServeError;
use crate::AppState;

fn model_object(state: &AppState) -> Model {
    Model {
        id: state.scheduler.model_name.clone(),
        object: "model".into(),
        created: 0,
        owned_by: "studio".into(),
        context_length: state.scheduler.context_length,
        chat_template: state.scheduler.tokenizer.chat_template().is_some(),
    }
}

pub async fn models(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList { object: "list".into(), data: vec![model_object(&state)] })
}

/// `GET /v1/models/{id}`: the served model, or 404 `model_not_found`.
pub async fn model(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Model>, ApiError> {
    check_model(&state.scheduler, &Some(id))?;
    Ok(Json(model_object(&state)))
}

#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    pub model: Option<String>,
    pub prompt: String,
    #[serde(default = "yes")]
    pub add_special_tokens: bool,
}

fn yes() -> bool {
    true
}

pub async fn tokenize(
    State(state): State<AppState>,
    ApiJson(r): ApiJson<TokenizeRequest>,
) -> Result<Json<Value>, ApiError> {
    check_model(&state.scheduler, &r.model)?;
    let tok = state.scheduler.tokenizer.clone();
    // Tokenizing up to a 2 MiB body is CPU work: off the tokio workers.
    let (ids, pieces) = cpu::run(move || -> Result<_, ServeError> {
        let ids = tok.encode(&r.prompt, r.add_special_tokens).map_err(ServeError::internal)?;
        let pieces: Vec<String> = ids.iter().map(|&i| tok.id_to_token(i).unwrap_or_default()).collect();
        Ok((ids, pieces))
    })
    .await??;
    Ok(Json(
        json!({ "tokens": ids, "token_strs": pieces, "count": ids.len(), "max_model_len": state.scheduler.context_length }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    pub model: Option<String>,
    pub tokens: Vec<u32>,
}

pub async fn detokenize(
    State(state): State<AppState>,
    ApiJson(r): ApiJson<DetokenizeRequest>,
) -> Result<Json<Value>, ApiError> {
    check_model(&state.scheduler, &r.model)?;
    let tok = &state.scheduler.tokenizer;
    check_token_ids("tokens", &r.tokens, tok)?;
    Ok(Json(json!({ "prompt": tok.decode(&r.tokens, false).map_err(ServeError::internal)? })))
}
