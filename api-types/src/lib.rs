//! The studio's HTTP contract, defined once: the server (`app`) serializes these types and
//! the browser studio (`studio-ui`, compiled to wasm) deserializes the same ones, so a
//! renamed field fails to compile on both sides. Plain data and serde only: no HTTP, no
//! engine, nothing that does not build for `wasm32-unknown-unknown`.
//!
//! By area: [`template`] (a version's content, validated and rendered), [`templates`]
//! (`/api/templates`, `/api/render`), [`evals`] (test sets, eval runs, few-shot selection),
//! [`completions`] (what the completion endpoints answer), [`openai`] (what the OpenAI-compatible
//! and template endpoints take), [`generation`] (the parameters a call may set), [`error`]
//! (the error body).

pub mod batches;
pub mod completions;
pub mod error;
pub mod evals;
pub mod generation;
pub mod openai;
pub mod template;
pub mod templates;

pub use generation::{GenerationParams, StopInput};
pub use openai::{ChatFields, ChatMessage, CompletionFields, PromptInput, TemplateCall, TemplateCompletionRequest};
