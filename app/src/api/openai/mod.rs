//! OpenAI-compatible endpoints (`/v1/*`) and templates as endpoints.

mod completions;
pub mod templates;

pub use completions::*;
