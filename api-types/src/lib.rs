//! The studio's HTTP contract, defined once: the server (`app`) serializes these types and
//! the browser studio (`studio-ui`, compiled to wasm) deserializes the same ones, so a
//! renamed field fails to compile on both sides. Plain data and serde only: no HTTP, no
//! engine, nothing that does not build for `wasm32-unknown-unknown`.

pub mod generation;
pub mod openai;

pub use generation::{GenerationParams, StopInput};
pub use openai::{ChatFields, ChatMessage, CompletionFields, PromptInput, TemplateCall, TemplateCompletionRequest};
