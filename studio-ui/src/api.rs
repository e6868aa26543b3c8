//! Calls from the browser to the studio's own `/api` and `/v1` endpoints. The UI keeps no
//! business logic: rendering, validation, diffs and generation all happen on the server.
//! On the server (SSR) these calls are never made: pages fetch after hydration.

use api_types::completions::{Completion, PrefillProgress};
use api_types::error::ErrorBody;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// An error the API answered (or a network failure), ready to show next to a control.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// The request field at fault (`parameters.temperature`, `variables.리뷰`), if named.
    pub param: Option<String>,
    pub code: Option<String>,
}

impl ApiError {
    pub fn network(message: impl Into<String>) -> Self {
        Self { status: 0, message: message.into(), param: None, code: None }
    }

    /// An error from an HTTP status and the body the server sent (OpenAI's error shape).
    pub fn from_body(status: u16, body: &str) -> Self {
        match serde_json::from_str::<ErrorBody>(body) {
            Ok(ErrorBody { error: e }) => Self { status, message: e.message, param: e.param, code: e.code },
            Err(_) => {
                let message = if body.trim().is_empty() {
                    format!("the server answered HTTP {status}")
                } else {
                    body.chars().take(300).collect()
                };
                Self { status, message, param: None, code: None }
            }
        }
    }

    /// A problem found in the browser before sending, shown at its field like the server's.
    pub fn field(e: api_types::template::FieldError) -> Self {
        Self { status: 0, message: e.message, param: Some(e.field), code: Some("invalid_field".into()) }
    }

    /// Whether the playground shows this error beside a control (then nowhere else).
    pub fn shown_at_field(&self) -> bool {
        const FIELDS: [&str; 8] =
            ["parameters", "variables", "instruction", "input_pattern", "examples", "format", "name", "output"];
        FIELDS.iter().any(|f| self.is_about(f))
    }

    /// Whether this error is about `field` (or one of its sub-fields).
    pub fn is_about(&self, field: &str) -> bool {
        self.param
            .as_deref()
            .is_some_and(|p| p == field || p.starts_with(&format!("{field}.")) || p.starts_with(&format!("{field}[")))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.status == 401 {
            return write!(
                f,
                "This server needs an API key: set it under \"API key\" at the top right. ({})",
                self.message
            );
        }
        write!(f, "{}", self.message)
    }
}

pub const API_KEY_STORAGE: &str = "studio.apiKey";

#[cfg(feature = "hydrate")]
mod browser {
    use super::*;
    use wasm_bindgen::{JsCast, JsValue};
    use wasm_bindgen_futures::JsFuture;

    fn js_err(e: JsValue) -> ApiError {
        let msg = e
            .dyn_ref::<js_sys::Error>()
            .map(|e| String::from(e.message()))
            .or_else(|| e.as_string())
            .unwrap_or_else(|| "network error".into());
        if msg.contains("abort") || msg.contains("Abort") {
            return ApiError { status: 0, message: "stopped".into(), param: None, code: Some("aborted".into()) };
        }
        ApiError::network(format!("could not reach the studio server: {msg}"))
    }

    async fn fetch<B: Serialize + ?Sized>(
        method: &str,
        path: &str,
        body: Option<&B>,
        signal: Option<&web_sys::AbortSignal>,
    ) -> Result<web_sys::Response, ApiError> {
        let raw = match body {
            Some(b) => Some((
                "application/json",
                serde_json::to_string(b).map_err(|e| ApiError::network(format!("unsendable request: {e}")))?,
            )),
            None => None,
        };
        fetch_raw(method, path, raw, signal).await
    }

    async fn fetch_raw(
        method: &str,
        path: &str,
        body: Option<(&str, String)>,
        signal: Option<&web_sys::AbortSignal>,
    ) -> Result<web_sys::Response, ApiError> {
        let init = web_sys::RequestInit::new();
        init.set_method(method);
        let headers = web_sys::Headers::new().map_err(js_err)?;
        if let Some((content_type, body)) = body {
            headers.set("Content-Type", content_type).map_err(js_err)?;
            init.set_body(&JsValue::from_str(&body));
        }
        if let Some(key) = crate::draft::storage_get(API_KEY_STORAGE).filter(|k| !k.trim().is_empty()) {
            headers.set("Authorization", &format!("Bearer {}", key.trim())).map_err(js_err)?;
        }
        init.set_headers(&headers);
        if let Some(signal) = signal {
            init.set_signal(Some(signal));
        }
        let window = web_sys::window().ok_or_else(|| ApiError::network("no window"))?;
        let resp = JsFuture::from(window.fetch_with_str_and_init(path, &init)).await.map_err(js_err)?;
        Ok(resp.unchecked_into())
    }

    async fn text(resp: &web_sys::Response) -> Result<String, ApiError> {
        let t = JsFuture::from(resp.text().map_err(js_err)?).await.map_err(js_err)?;
        Ok(t.as_string().unwrap_or_default())
    }

    /// The body of a successful answer, or the error it carries.
    async fn answer(resp: web_sys::Response) -> Result<String, ApiError> {
        let status = resp.status();
        let body = text(&resp).await?;
        if !(200..300).contains(&status) {
            return Err(ApiError::from_body(status, &body));
        }
        Ok(body)
    }

    /// An answer's JSON as `T` (an empty body reads as `null`).
    fn parse<T: DeserializeOwned>(body: &str) -> Result<T, ApiError> {
        let body = if body.trim().is_empty() { "null" } else { body };
        serde_json::from_str(body).map_err(|e| ApiError::network(format!("unreadable answer: {e}")))
    }

    pub async fn request<T: DeserializeOwned, B: Serialize + ?Sized>(
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ApiError> {
        parse(&answer(fetch(method, path, body, None).await?).await?)
    }

    /// Sends a file's text (CSV, JSONL) as the body.
    pub async fn send_text<T: DeserializeOwned>(
        method: &str,
        path: &str,
        content_type: &str,
        body: String,
    ) -> Result<T, ApiError> {
        parse(&answer(fetch_raw(method, path, Some((content_type, body)), None).await?).await?)
    }

    pub async fn request_text(path: &str) -> Result<String, ApiError> {
        answer(fetch::<()>("GET", path, None, None).await?).await
    }

    /// Downloads `path` as a file, with the stored API key (a plain link cannot send one):
    /// fetched, kept as a blob, saved under the name the server gives (`Content-Disposition`)
    /// or `fallback`.
    pub async fn download(path: &str, fallback: &str) -> Result<(), ApiError> {
        let resp = fetch::<()>("GET", path, None, None).await?;
        let status = resp.status();
        if !(200..300).contains(&status) {
            let body = text(&resp).await?;
            return Err(ApiError::from_body(status, &body));
        }
        let name = resp
            .headers()
            .get("Content-Disposition")
            .ok()
            .flatten()
            .and_then(|d| crate::api::disposition_filename(&d))
            .unwrap_or_else(|| fallback.to_string());
        let blob: web_sys::Blob = JsFuture::from(resp.blob().map_err(js_err)?).await.map_err(js_err)?.unchecked_into();
        let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(js_err)?;
        let document = web_sys::window().and_then(|w| w.document()).ok_or_else(|| ApiError::network("no document"))?;
        let a: web_sys::HtmlAnchorElement = document.create_element("a").map_err(js_err)?.unchecked_into();
        a.set_href(&url);
        a.set_download(&name);
        a.click();
        let _ = web_sys::Url::revoke_object_url(&url);
        Ok(())
    }

    /// POSTs `body` and calls `on_event` with each server-sent completion chunk, in order.
    /// Events are split on whole lines of bytes first, so a character split across network
    /// chunks is never decoded in halves.
    pub async fn stream<B: Serialize + ?Sized>(
        path: &str,
        body: &B,
        abort: &Abort,
        on_event: impl FnMut(Completion),
    ) -> Result<(), ApiError> {
        stream_with_progress(path, body, abort, on_event, |_| {}).await
    }

    /// [`stream`], also calling `on_progress` with each prefill progress comment.
    pub async fn stream_with_progress<B: Serialize + ?Sized>(
        path: &str,
        body: &B,
        abort: &Abort,
        mut on_event: impl FnMut(Completion),
        mut on_progress: impl FnMut(PrefillProgress),
    ) -> Result<(), ApiError> {
        let signal = abort.0.as_ref().map(|c| c.signal());
        let resp = fetch("POST", path, Some(body), signal.as_ref()).await?;
        let status = resp.status();
        if !(200..300).contains(&status) {
            let body = text(&resp).await?;
            return Err(ApiError::from_body(status, &body));
        }
        let Some(stream) = resp.body() else { return Ok(()) };
        let reader: web_sys::ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let chunk = JsFuture::from(reader.read()).await.map_err(js_err)?;
            let done = js_sys::Reflect::get(&chunk, &"done".into()).map_err(js_err)?.as_bool().unwrap_or(true);
            if done {
                break;
            }
            let value = js_sys::Reflect::get(&chunk, &"value".into()).map_err(js_err)?;
            buf.extend(js_sys::Uint8Array::new(&value).to_vec());
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line);
                if let Some(p) = line.trim_end().strip_prefix(": ").and_then(PrefillProgress::from_comment) {
                    on_progress(p);
                    continue;
                }
                let Some(data) = line.trim_end().strip_prefix("data:") else { continue };
                let data = data.trim();
                if data == "[DONE]" {
                    return Ok(());
                }
                match serde_json::from_str::<Completion>(data) {
                    Ok(chunk) => on_event(chunk),
                    Err(_) if serde_json::from_str::<ErrorBody>(data).is_ok() => {
                        return Err(ApiError::from_body(500, data));
                    }
                    Err(_) => {}
                }
            }
        }
        Ok(())
    }
}

#[cfg(feature = "hydrate")]
pub use browser::{download, request, request_text, send_text, stream, stream_with_progress};

/// What the API calls answer on the server, where they are never made.
#[cfg(not(feature = "hydrate"))]
fn browser_only<T>() -> Result<T, ApiError> {
    Err(ApiError::network("the studio calls its API from the browser only"))
}

#[cfg(not(feature = "hydrate"))]
pub async fn send_text<T: DeserializeOwned>(
    _method: &str,
    _path: &str,
    _content_type: &str,
    _body: String,
) -> Result<T, ApiError> {
    browser_only()
}

/// Cancels a streaming request (the Stop button): the server sees the connection close and
/// frees the sequence.
/// Where an [`Abort`] is kept: in the browser it holds a JS object (one thread); on the
/// server it is empty, and a page's values may be dropped on another worker thread than
/// the one that rendered it (a thread-local value would panic there).
#[cfg(feature = "hydrate")]
pub type AbortStorage = leptos::prelude::LocalStorage;
#[cfg(not(feature = "hydrate"))]
pub type AbortStorage = leptos::prelude::SyncStorage;

#[derive(Clone)]
pub struct Abort(#[cfg(feature = "hydrate")] Option<web_sys::AbortController>);

impl Abort {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        #[cfg(feature = "hydrate")]
        {
            Abort(web_sys::AbortController::new().ok())
        }
        #[cfg(not(feature = "hydrate"))]
        {
            Abort()
        }
    }

    pub fn abort(&self) {
        #[cfg(feature = "hydrate")]
        if let Some(c) = &self.0 {
            c.abort();
        }
    }
}

#[cfg(not(feature = "hydrate"))]
pub async fn stream<B: Serialize + ?Sized>(
    _path: &str,
    _body: &B,
    _abort: &Abort,
    _on_event: impl FnMut(Completion),
) -> Result<(), ApiError> {
    browser_only()
}

#[cfg(not(feature = "hydrate"))]
pub async fn stream_with_progress<B: Serialize + ?Sized>(
    _path: &str,
    _body: &B,
    _abort: &Abort,
    _on_event: impl FnMut(Completion),
    _on_progress: impl FnMut(PrefillProgress),
) -> Result<(), ApiError> {
    browser_only()
}

#[cfg(not(feature = "hydrate"))]
pub async fn request<T: DeserializeOwned, B: Serialize + ?Sized>(
    _method: &str,
    _path: &str,
    _body: Option<&B>,
) -> Result<T, ApiError> {
    browser_only()
}

#[cfg(not(feature = "hydrate"))]
pub async fn request_text(_path: &str) -> Result<String, ApiError> {
    browser_only()
}

#[cfg(not(feature = "hydrate"))]
pub async fn download(_path: &str, _fallback: &str) -> Result<(), ApiError> {
    browser_only()
}

/// Whether the studio sends an API key with its calls (one is stored in this browser).
pub fn has_api_key() -> bool {
    crate::draft::storage_get(API_KEY_STORAGE).is_some_and(|k| !k.trim().is_empty())
}

/// The file name in a `Content-Disposition` header (`attachment; filename="a.csv"`).
pub fn disposition_filename(header: &str) -> Option<String> {
    header.split(';').map(str::trim).find_map(|part| {
        let value = part.strip_prefix("filename=")?;
        let name = value.trim_matches('"').trim();
        (!name.is_empty()).then(|| name.to_string())
    })
}

pub async fn get<T: DeserializeOwned>(path: &str) -> Result<T, ApiError> {
    request::<T, ()>("GET", path, None).await
}

pub async fn post<T: DeserializeOwned, B: Serialize + ?Sized>(path: &str, body: &B) -> Result<T, ApiError> {
    request("POST", path, Some(body)).await
}

pub async fn put<T: DeserializeOwned, B: Serialize + ?Sized>(path: &str, body: &B) -> Result<T, ApiError> {
    request("PUT", path, Some(body)).await
}

pub async fn patch<T: DeserializeOwned, B: Serialize + ?Sized>(path: &str, body: &B) -> Result<T, ApiError> {
    request("PATCH", path, Some(body)).await
}

/// An empty JSON object, for a POST that needs no fields.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct NoFields {}

/// Percent-encodes one URL path segment or query value (template names are slugs, but
/// search words and labels may be any text).
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Runs a future on the browser's event loop (nothing on the server).
pub fn spawn(fut: impl std::future::Future<Output = ()> + 'static) {
    #[cfg(feature = "hydrate")]
    wasm_bindgen_futures::spawn_local(fut);
    #[cfg(not(feature = "hydrate"))]
    drop(fut);
}

/// Milliseconds on a monotonic clock (0 on the server).
pub fn now_ms() -> f64 {
    #[cfg(feature = "hydrate")]
    {
        web_sys::window().and_then(|w| w.performance()).map(|p| p.now()).unwrap_or(0.0)
    }
    #[cfg(not(feature = "hydrate"))]
    {
        0.0
    }
}

/// Waits `ms` milliseconds on the browser's clock (returns at once on the server).
pub async fn sleep_ms(ms: i32) {
    #[cfg(feature = "hydrate")]
    {
        let promise = js_sys::Promise::new(&mut |resolve, _| {
            if let Some(w) = web_sys::window() {
                let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
            }
        });
        let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = ms;
}

/// The text of the file chosen in an `<input type=file>` (None when none is chosen).
#[cfg(feature = "hydrate")]
pub async fn chosen_file_text(input: &web_sys::HtmlInputElement) -> Option<(String, String)> {
    let file = input.files()?.get(0)?;
    let text = wasm_bindgen_futures::JsFuture::from(file.text()).await.ok()?.as_string()?;
    Some((file.name(), text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_name_their_field_for_the_control_at_fault() {
        let e = ApiError::from_body(
            422,
            r#"{"error":{"message":"parameters.temperature: must be in 0..=2","type":"invalid_request_error","param":"parameters.temperature","code":null}}"#,
        );
        assert!(e.is_about("parameters.temperature") && e.is_about("parameters"));
        assert!(!e.is_about("parameters.top_p"));
        assert_eq!(e.message, "parameters.temperature: must be in 0..=2");
        let e = ApiError::from_body(502, "");
        assert_eq!(e.message, "the server answered HTTP 502");
        assert!(ApiError::from_body(401, "{}").to_string().contains("API key"));
        assert_eq!(enc("리뷰 a/b"), "%EB%A6%AC%EB%B7%B0%20a%2Fb");
    }

    #[test]
    fn downloads_keep_the_servers_file_name() {
        assert_eq!(
            disposition_filename(r#"attachment; filename="movie-b1-results.csv""#).as_deref(),
            Some("movie-b1-results.csv")
        );
        assert_eq!(disposition_filename("attachment; filename=a.toml").as_deref(), Some("a.toml"));
        assert_eq!(disposition_filename("attachment"), None);
        assert_eq!(disposition_filename(r#"attachment; filename="""#), None);
    }
}
