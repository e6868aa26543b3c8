//! Batch jobs in OpenAI's shape: a JSONL file of requests in, a JSONL file of responses
//! out. This module checks an input file up front (every line names its fault) and turns
//! it into the rows replicas claim; `store/batches.rs` keeps them, and the API's batch
//! worker runs claimed lines through the same handlers as HTTP calls, at batch priority.

pub mod dataset;

use std::collections::{BTreeMap, HashSet};

use api_types::batches::{Batch, BatchInputLine};
use sha2::{Digest, Sha256};

use crate::store::{BatchInput, Store, StoreError};

/// Largest uploaded file (400 beyond).
pub const MAX_FILE_BYTES: usize = 32 * 1024 * 1024;
/// Most request lines in one batch (OpenAI's limit).
pub const MAX_LINES: usize = 50_000;
/// Largest line: one request body, as over HTTP.
pub const MAX_LINE_BYTES: usize = 2 * 1024 * 1024;
/// Longest `custom_id`.
pub const MAX_CUSTOM_ID_CHARS: usize = 512;
/// Metadata: at most 16 pairs, keys up to 64 characters, values up to 512 (OpenAI's).
pub const MAX_METADATA_PAIRS: usize = 16;
pub const MAX_METADATA_KEY_CHARS: usize = 64;
pub const MAX_METADATA_VALUE_CHARS: usize = 512;
/// The only completion window (as OpenAI).
pub const COMPLETION_WINDOW: &str = "24h";
pub const COMPLETION_WINDOW_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// A field of the request, or a line of the input file, is wrong.
    #[error("{message}")]
    Invalid { param: String, message: String },
    /// A dataset's columns are not the template version's variables (422).
    #[error("{message}")]
    Columns { param: String, message: String },
    #[error("{0}")]
    NotFound(String),
    /// The batch is in a state that does not allow this (cancel a finished batch).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl BatchError {
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        BatchError::Invalid { param: param.to_string(), message: message.into() }
    }
}

/// The endpoints a batch may target: `/v1/completions`, `/v1/chat/completions` and the
/// template endpoints `/v1/templates/{name}[@ref]/completions`.
pub fn check_endpoint(endpoint: &str) -> Result<(), BatchError> {
    if endpoint == "/v1/completions" || endpoint == "/v1/chat/completions" || template_spec(endpoint).is_some() {
        Ok(())
    } else {
        Err(BatchError::invalid(
            "endpoint",
            format!(
                "endpoint {endpoint:?} is not supported: use /v1/completions, /v1/chat/completions or \
                 /v1/templates/{{name}}/completions"
            ),
        ))
    }
}

/// The `{name}[@ref]` of a template endpoint (`/v1/templates/{name}[@ref]/completions`).
pub fn template_spec(endpoint: &str) -> Option<&str> {
    endpoint
        .strip_prefix("/v1/templates/")
        .and_then(|rest| rest.strip_suffix("/completions"))
        .filter(|spec| !spec.is_empty() && !spec.contains('/'))
}

/// One request of a batch, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewLine {
    pub line_no: i64,
    pub custom_id: String,
    /// Lines with the same key share a prompt prefix (or template): claimed together so
    /// the prefix cache serves them.
    pub group_key: String,
    /// The request body, as JSON text.
    pub body: String,
}

/// Reads a batch input file: JSON lines `{custom_id, method, url, body}`, every `url` the
/// batch's endpoint, `method` POST, `custom_id`s unique. Blank lines are skipped; the
/// first fault is named by its line number (from 1) and field. Bodies are checked for
/// their fields when the line runs, exactly as the endpoint checks a call.
pub fn parse_input(content: &str, endpoint: &str) -> Result<Vec<NewLine>, BatchError> {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    let mut seen = HashSet::new();
    let mut lines = Vec::new();
    for (i, text) in content.lines().enumerate() {
        let n = i + 1;
        if text.trim().is_empty() {
            continue;
        }
        if lines.len() == MAX_LINES {
            return Err(BatchError::invalid(
                "input_file_id",
                format!("the file has more than {MAX_LINES} requests (line {n})"),
            ));
        }
        if text.len() > MAX_LINE_BYTES {
            return Err(BatchError::invalid(
                "input_file_id",
                format!("line {n}: {} bytes, over the limit of {MAX_LINE_BYTES} bytes a request", text.len()),
            ));
        }
        let de = &mut serde_json::Deserializer::from_str(text);
        let line: BatchInputLine = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let at = if path == "." { String::new() } else { format!(" at '{path}'") };
            BatchError::invalid("input_file_id", format!("line {n}: not a valid request line{at}: {}", e.inner()))
        })?;
        if line.method != "POST" {
            return Err(BatchError::invalid(
                "input_file_id",
                format!("line {n}: method must be \"POST\", got {:?}", line.method),
            ));
        }
        if line.url != endpoint {
            return Err(BatchError::invalid(
                "input_file_id",
                format!("line {n}: url {:?} differs from the batch's endpoint {endpoint:?}", line.url),
            ));
        }
        if line.custom_id.is_empty() || line.custom_id.chars().count() > MAX_CUSTOM_ID_CHARS {
            return Err(BatchError::invalid(
                "input_file_id",
                format!("line {n}: custom_id must be 1 to {MAX_CUSTOM_ID_CHARS} characters"),
            ));
        }
        if !seen.insert(line.custom_id.clone()) {
            return Err(BatchError::invalid(
                "input_file_id",
                format!("line {n}: custom_id {:?} is used by an earlier line; each must be unique", line.custom_id),
            ));
        }
        if line.body.get("stream").and_then(|v| v.as_bool()) == Some(true) {
            return Err(BatchError::invalid(
                "input_file_id",
                format!("line {n}: body.stream is not allowed in a batch"),
            ));
        }
        let group_key = group_key(&line.body);
        lines.push(NewLine {
            line_no: n as i64,
            custom_id: line.custom_id,
            group_key,
            body: serde_json::Value::Object(line.body).to_string(),
        });
    }
    if lines.is_empty() {
        return Err(BatchError::invalid("input_file_id", "the file holds no request lines"));
    }
    Ok(lines)
}

/// A short hash of the start of what the model reads first (the prompt, the messages or
/// the template's variables), so lines that share a prefix sort together.
fn group_key(body: &serde_json::Map<String, serde_json::Value>) -> String {
    const PREFIX_CHARS: usize = 256;
    let head = ["prompt", "messages", "variables"].iter().find_map(|k| body.get(*k)).map(|v| v.to_string());
    let head: String = head.unwrap_or_default().chars().take(PREFIX_CHARS).collect();
    group_key_of(&head)
}

/// The group key of lines that share `head` (a prompt's start, or one template version).
pub fn group_key_of(head: &str) -> String {
    let digest = Sha256::digest(head.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Starts a batch: the one creation path of `POST /v1/batches` and of a template run
/// over a dataset. The endpoint, metadata and line count are checked, then the batch,
/// its lines (and a new input file) are written in one transaction and the worker woken.
pub async fn start_batch(
    store: &Store,
    endpoint: &str,
    input: BatchInput<'_>,
    metadata: Option<&BTreeMap<String, String>>,
    lines: &[NewLine],
    actor: &str,
) -> Result<Batch, BatchError> {
    check_endpoint(endpoint)?;
    if let Some(m) = metadata {
        check_metadata(m)?;
    }
    if lines.is_empty() {
        return Err(BatchError::invalid("input_file_id", "the batch holds no request lines"));
    }
    if lines.len() > MAX_LINES {
        return Err(BatchError::invalid(
            "input_file_id",
            format!("at most {MAX_LINES} requests in a batch, got {}", lines.len()),
        ));
    }
    Ok(store.create_batch(endpoint, input, metadata, lines, actor).await?)
}

/// Checks `metadata` against OpenAI's limits.
pub fn check_metadata(metadata: &std::collections::BTreeMap<String, String>) -> Result<(), BatchError> {
    if metadata.len() > MAX_METADATA_PAIRS {
        return Err(BatchError::invalid("metadata", format!("at most {MAX_METADATA_PAIRS} pairs")));
    }
    for (k, v) in metadata {
        if k.chars().count() > MAX_METADATA_KEY_CHARS || v.chars().count() > MAX_METADATA_VALUE_CHARS {
            return Err(BatchError::invalid(
                "metadata",
                format!(
                    "keys are at most {MAX_METADATA_KEY_CHARS} characters and values at most \
                     {MAX_METADATA_VALUE_CHARS} ({k:?})"
                ),
            ));
        }
    }
    Ok(())
}

/// A fresh id: `prefix` and 24 random hex digits.
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    format!("{prefix}{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, url: &str) -> String {
        format!(r#"{{"custom_id":"{id}","method":"POST","url":"{url}","body":{{"prompt":"Hi","max_tokens":2}}}}"#)
    }

    #[test]
    fn a_valid_file_becomes_lines_in_order() {
        let text = format!("\u{feff}{}\n\n{}\n", line("a", "/v1/completions"), line("b", "/v1/completions"));
        let lines = parse_input(&text, "/v1/completions").unwrap();
        assert_eq!(lines.iter().map(|l| (l.line_no, l.custom_id.as_str())).collect::<Vec<_>>(), [(1, "a"), (3, "b")]);
        assert_eq!(lines[0].group_key, lines[1].group_key, "same prompt, same group");
        assert!(lines[0].body.contains("\"max_tokens\":2"));
    }

    #[test]
    fn each_fault_names_its_line() {
        let cases = [
            (format!("{}\n{}", line("a", "/v1/completions"), line("a", "/v1/completions")), "line 2: custom_id \"a\""),
            (format!("{}\n{{not json", line("a", "/v1/completions")), "line 2: not a valid request line"),
            (line("a", "/v1/chat/completions"), "line 1: url \"/v1/chat/completions\" differs"),
            (r#"{"custom_id":"a","method":"GET","url":"/v1/completions","body":{}}"#.to_string(), "line 1: method"),
            (
                r#"{"custom_id":"a","method":"POST","url":"/v1/completions","body":{},"x":1}"#.into(),
                "line 1: not a valid",
            ),
            (r#"{"custom_id":"a","method":"POST","url":"/v1/completions"}"#.into(), "missing field `body`"),
            (
                r#"{"custom_id":"a","method":"POST","url":"/v1/completions","body":{"stream":true}}"#.into(),
                "line 1: body.stream",
            ),
            ("\n \n".into(), "no request lines"),
        ];
        for (text, want) in cases {
            let err = parse_input(&text, "/v1/completions").unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }

    #[test]
    fn line_count_is_bounded() {
        let one = line("x", "/v1/completions");
        let text: String =
            (0..=MAX_LINES).map(|i| one.replacen("\"x\"", &format!("\"{i}\""), 1) + "\n").collect::<String>();
        let err = parse_input(&text, "/v1/completions").unwrap_err().to_string();
        assert!(err.contains(&format!("more than {MAX_LINES}")), "{err}");
    }

    #[test]
    fn endpoints_are_checked() {
        for ok in ["/v1/completions", "/v1/chat/completions", "/v1/templates/movie-sentiment-ko@production/completions"]
        {
            assert!(check_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in ["/v1/embeddings", "/v1/templates//completions", "/v1/templates/a/b/completions", ""] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }
}
