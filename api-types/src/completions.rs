//! What the completion endpoints answer (`/v1/completions`, `/v1/templates/{name}@{ref}/completions`,
//! `/api/draft/completions`): one body, or with `stream` a server-sent event per chunk in
//! the same shape; and `/v1/models`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A completion, or one streamed chunk of it (`usage` only on the last chunk).
/// How far a long prompt has been read (prefilled), sent while it takes more than one
/// engine step: on a stream, the SSE comment `: prefill {"index":0,"done":2048,"total":10014}`
/// (a comment, so OpenAI's clients skip it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefillProgress {
    /// The choice it is for.
    pub index: usize,
    /// Prompt tokens in the cache so far.
    pub done: usize,
    /// Prompt tokens in all.
    pub total: usize,
}

impl PrefillProgress {
    /// The SSE comment text (after `: `) that carries it.
    pub fn comment(&self) -> String {
        format!("prefill {}", serde_json::to_string(self).expect("plain struct"))
    }

    /// Reads an SSE comment's text back (`None` for any other comment).
    pub fn from_comment(text: &str) -> Option<Self> {
        serde_json::from_str(text.strip_prefix("prefill ")?).ok()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: Option<Usage>,
    /// The template and version a template endpoint answered with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub text: String,
    pub index: usize,
    pub logprobs: Option<Logprobs>,
    /// Set on a choice's last chunk.
    pub finish_reason: Option<FinishReason>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Length,
    Stop,
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Length => "length",
            FinishReason::Stop => "stop",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// OpenAI's (legacy) `logprobs` of a completion choice: per token, its text, logprob, the
/// most likely alternatives (text → logprob) and its offset in the choice's text, in
/// characters. A token that is only part of a character (a byte of Korean or an emoji) is
/// written `bytes:\xec`, as OpenAI does, so alternatives never share a key. With `echo`
/// the prompt's tokens come first; the first of them has no logprob (`null`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Logprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<Option<f32>>,
    pub top_logprobs: Vec<Option<BTreeMap<String, f32>>>,
    pub text_offset: Vec<usize>,
}

/// A chat choice's `logprobs`, in OpenAI's chat shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatLogprobs {
    pub content: Vec<ChatTokenLogprob>,
}

/// One generated token of a chat choice: its text, logprob, its real bytes (a token may
/// be part of a character; the bytes of all tokens join to the text's) and the most likely
/// alternatives.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatTokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

impl Usage {
    pub fn new(prompt: usize, completion: usize, cached: usize) -> Self {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: PromptTokensDetails { cached_tokens: cached },
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens served from the prefix cache (not prefilled again).
    pub cached_tokens: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateRef {
    pub name: String,
    pub version: i64,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<Model>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
    pub context_length: usize,
    /// Whether the model has a chat template: chat mode and `/v1/chat/completions` need
    /// one. (Not in OpenAI's object; its clients ignore it.)
    #[serde(default)]
    pub chat_template: bool,
}
