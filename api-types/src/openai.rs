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
    /// Structured output and token controls (see [`OutputControls`]).
    pub response_format: Option<ResponseFormat>,
    pub structured_outputs: Option<StructuredOutputs>,
    pub guided_json: Option<serde_json::Value>,
    pub guided_regex: Option<String>,
    pub guided_choice: Option<Vec<String>>,
    pub guided_grammar: Option<String>,
    pub logit_bias: Option<BTreeMap<String, f32>>,
    pub tools: Option<Vec<serde_json::Value>>,
    pub tool_choice: Option<serde_json::Value>,
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
    /// Structured output and token controls (see [`OutputControls`]).
    pub response_format: Option<ResponseFormat>,
    pub structured_outputs: Option<StructuredOutputs>,
    pub guided_json: Option<serde_json::Value>,
    pub guided_regex: Option<String>,
    pub guided_choice: Option<Vec<String>>,
    pub guided_grammar: Option<String>,
    pub logit_bias: Option<BTreeMap<String, f32>>,
    pub tools: Option<Vec<serde_json::Value>>,
    pub tool_choice: Option<serde_json::Value>,
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
    /// The output controls `/v1/completions` takes (see [`OutputControls`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structured_outputs: Option<StructuredOutputs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guided_json: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guided_regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guided_choice: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guided_grammar: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<BTreeMap<String, f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<serde_json::Value>,
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

/// OpenAI's `response_format`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// No constraint.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON valid against `json_schema.schema`.
    JsonSchema { json_schema: JsonSchemaFormat },
}

/// `response_format.json_schema`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonSchemaFormat {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
    /// Accepted for OpenAI compatibility; the schema is always enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// vLLM's `structured_outputs` (vLLM 0.10 and later); its other keys are accepted and
/// ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StructuredOutputs {
    /// A JSON schema (an object, or a string holding one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice: Option<Vec<String>>,
    /// A Lark grammar (llguidance's dialect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grammar: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_object: Option<bool>,
}

/// What `/v1/completions` and `/v1/chat/completions` take beyond sampling to shape the
/// output: OpenAI's `response_format`, `logit_bias`, `tools`/`tool_choice`, and vLLM's
/// `structured_outputs` and its older `guided_*` fields. At most one constraint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputControls {
    pub response_format: Option<ResponseFormat>,
    pub structured_outputs: Option<StructuredOutputs>,
    pub guided_json: Option<serde_json::Value>,
    pub guided_regex: Option<String>,
    pub guided_choice: Option<Vec<String>>,
    pub guided_grammar: Option<String>,
    /// Token id (as a string, as OpenAI sends it) → bias in [-100, 100].
    pub logit_bias: Option<BTreeMap<String, f32>>,
    pub tools: Option<Vec<serde_json::Value>>,
    pub tool_choice: Option<serde_json::Value>,
}

macro_rules! output_controls {
    ($t:ty) => {
        impl $t {
            /// Moves the output controls out of the request.
            pub fn take_output(&mut self) -> OutputControls {
                OutputControls {
                    response_format: self.response_format.take(),
                    structured_outputs: self.structured_outputs.take(),
                    guided_json: self.guided_json.take(),
                    guided_regex: self.guided_regex.take(),
                    guided_choice: self.guided_choice.take(),
                    guided_grammar: self.guided_grammar.take(),
                    logit_bias: self.logit_bias.take(),
                    tools: self.tools.take(),
                    tool_choice: self.tool_choice.take(),
                }
            }
        }
    };
}
output_controls!(CompletionFields);
output_controls!(ChatFields);
output_controls!(TemplateCall);

#[cfg(test)]
mod output_tests {
    use super::*;

    #[test]
    fn response_formats_and_vllm_fields_parse() {
        let body = serde_json::json!({
            "messages": [],
            "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object"}, "strict": true}},
            "structured_outputs": {"regex": "[0-9]+", "whitespace_pattern": null},
            "guided_choice": ["a", "b"],
            "logit_bias": {"15": -100},
        });
        let mut chat: ChatFields = serde_json::from_value(body).unwrap();
        let out = chat.take_output();
        assert!(matches!(out.response_format, Some(ResponseFormat::JsonSchema { .. })));
        assert_eq!(out.structured_outputs.unwrap().regex.as_deref(), Some("[0-9]+"));
        assert_eq!(out.guided_choice.unwrap(), vec!["a", "b"]);
        assert_eq!(out.logit_bias.unwrap()["15"], -100.0);
        assert!(chat.response_format.is_none());
        let text: ResponseFormat = serde_json::from_str(r#"{"type":"text"}"#).unwrap();
        assert_eq!(text, ResponseFormat::Text);
    }

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
            response_format: Some(ResponseFormat::JsonObject),
            structured_outputs: Some(StructuredOutputs { regex: Some("a+".into()), ..Default::default() }),
            guided_json: Some(serde_json::json!({"type": "object"})),
            guided_regex: Some("b+".into()),
            guided_choice: Some(vec!["x".into()]),
            guided_grammar: Some("start: \"a\"".into()),
            logit_bias: Some([("1".to_string(), 5.0)].into()),
            tools: Some(vec![serde_json::json!({"type": "function"})]),
            tool_choice: Some(serde_json::json!("auto")),
        };
        let v = serde_json::to_value(&all).unwrap();
        let call: TemplateCall = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(call.stream_options, all.stream_options);
        assert_eq!(call.guided_choice, all.guided_choice);
        assert_eq!(v.as_object().unwrap().len(), 16, "a new completion field must be added to TemplateCall too");
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
