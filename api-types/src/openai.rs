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
    pub user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
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
