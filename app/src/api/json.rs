//! Typed JSON bodies. Every error names the field at fault (`temperature: invalid type
//! ...`), and a body is read once: no re-serializing to parse a part again.

use api_types::GenerationParams;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::api::error::ApiError;

/// A JSON body of type `T` (the body extractor of every handler that takes one).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let body = body_bytes(req, state).await?;
        parse(&body).map(ApiJson)
    }
}

/// An endpoint's own fields `T` and the shared [`GenerationParams`], from one flat body.
/// The keys of `GenerationParams` go to it and the rest to `T`, so `T` keeps its own
/// strictness (`deny_unknown_fields` or not) and each error names its field.
pub struct WithParams<T>(pub T, pub GenerationParams);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for WithParams<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let body = body_bytes(req, state).await?;
        let object: Map<String, Value> = parse(&body)?;
        split(object, "")
    }
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|r| ApiError::status(r.status(), r.body_text()))
}

fn path_error<E: std::fmt::Display>(prefix: &str, e: serde_path_to_error::Error<E>) -> ApiError {
    let path = e.path().to_string();
    let param = match (prefix.is_empty(), path == ".") {
        (true, true) => "body".to_string(),
        (true, false) => path,
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}.{path}"),
    };
    ApiError::invalid(&param, format!("{param}: {}", e.inner()))
}

/// Parses JSON text into `T`.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| path_error("", e))
}

/// Reads an already parsed JSON value as `T`; errors name `prefix.path` (`spec.examples[0]`).
pub fn from_value<T: DeserializeOwned>(value: Value, prefix: &str) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| path_error(prefix, e))
}

/// Splits a flat object into the endpoint's fields `T` and the generation parameters.
pub fn split<T: DeserializeOwned>(mut object: Map<String, Value>, prefix: &str) -> Result<WithParams<T>, ApiError> {
    let mut params = Map::new();
    for key in GenerationParams::FIELDS {
        if let Some(v) = object.remove(*key) {
            params.insert(key.to_string(), v);
        }
    }
    let fields = from_value(Value::Object(object), prefix)?;
    let params = from_value(Value::Object(params), prefix)?;
    Ok(WithParams(fields, params))
}
