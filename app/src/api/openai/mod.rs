//! OpenAI-compatible endpoints (`/v1/*`) and templates as endpoints.

pub mod chat;
pub mod completions;
pub mod templates;
pub mod tokenize;

pub use chat::chat_completions;
pub use completions::{completions, respond, ResponseExtras, RunRecorder, REQUEST_DEADLINE};
pub use tokenize::{detokenize, model, models, tokenize};
