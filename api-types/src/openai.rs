//! Request bodies of the OpenAI-compatible endpoints, apart from [`GenerationParams`]: a
//! body is split into these endpoint fields and the shared parameters, each checked on
//! its own so that errors name the exact field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::generation::GenerationParams;

/// `prompt` as OpenAI takes it: text, texts, token ids or lists of token ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// `/v1/completions` besides the generation parameters. Unknown fields are ignored, as
/// OpenAI clients send extras.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionFields {
    pub model: Option<String>,
    pub prompt: PromptInput,
    pub logprobs: Option<usize>,
    pub echo: Option<bool>,
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    pub user: Option<String>,
}

/// `stream_options` of a streamed call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` and `choices: []` before `[DONE]` (otherwise no
    /// chunk carries usage).
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    /// Text, `null` (read as empty) or OpenAI's content parts
    /// (`[{"type":"text","text":"..."}]`, joined in order; only text parts).
    #[serde(default, deserialize_with = "content_text")]
    pub content: String,
}

/// One of OpenAI's message content parts; only `text` parts exist for a text model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ContentPart {
    Text { text: String },
}

fn content_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Content {
        Text(String),
        Parts(Vec<ContentPart>),
    }
    let content = Option::<serde_json::Value>::deserialize(d)?;
    let Some(value) = content else { return Ok(String::new()) };
    match serde_json::from_value::<Content>(value) {
        Ok(Content::Text(t)) => Ok(t),
        Ok(Content::Parts(parts)) => Ok(parts.into_iter().map(|ContentPart::Text { text }| text).collect()),
        Err(_) => Err(serde::de::Error::custom(
            "expected a string, null, or a list of {\"type\": \"text\", \"text\": ...} parts (only text parts are supported)",
        )),
    }
}

/// `/v1/chat/completions` besides the generation parameters (unknown fields ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatFields {
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    pub max_completion_tokens: Option<usize>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<usize>,
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    pub user: Option<String>,
}

/// A template endpoint's call (`/v1/templates/{name}@{ref}/completions`) besides the
/// generation parameters, which override the version's saved ones. Unknown fields are
/// refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateCall {
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Accepted only empty: the template supplies the prompt. (OpenAI clients always send
    /// one, so a client pointed at the template's URL works unchanged.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// A whole template call as a client sends it (serialized flat: the call's fields and the
/// parameters side by side).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TemplateCompletionRequest {
    #[serde(flatten)]
    pub call: TemplateCall,
    #[serde(flatten)]
    pub params: GenerationParams,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_call_takes_every_completion_field() {
        let all = CompletionFields {
            model: Some("m".into()),
            prompt: PromptInput::Text(String::new()),
            logprobs: Some(2),
            echo: Some(true),
            stream: Some(true),
            stream_options: Some(StreamOptions { include_usage: true }),
            user: Some("u".into()),
        };
        let v = serde_json::to_value(&all).unwrap();
        let call: TemplateCall = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(call.stream_options, all.stream_options);
        assert_eq!(v.as_object().unwrap().len(), 7, "a new completion field must be added to TemplateCall too");
    }

    #[test]
    fn content_is_text_parts_or_null() {
        let m = |c: serde_json::Value| {
            serde_json::from_value::<ChatMessage>(serde_json::json!({"role": "user", "content": c}))
        };
        assert_eq!(m(serde_json::json!("hi")).unwrap().content, "hi");
        assert_eq!(m(serde_json::Value::Null).unwrap().content, "");
        let parts = serde_json::json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]);
        assert_eq!(m(parts).unwrap().content, "ab");
        assert!(m(serde_json::json!([{"type": "image_url", "image_url": {"url": "x"}}])).is_err());
        let no_content: ChatMessage = serde_json::from_value(serde_json::json!({"role": "assistant"})).unwrap();
        assert_eq!(no_content.content, "");
    }
}
