use std::path::{Path, PathBuf};

/// Errors of the inference engine. Each names the thing at fault.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("model {path}: {reason}")]
    BadModel { path: PathBuf, reason: String },
    #[error("unknown model '{0}': see `studio models`")]
    UnknownModel(String),
    #[error("unsupported architecture '{0}' (supported: gemma3, llama)")]
    UnsupportedArchitecture(String),
    #[error("tensor parallel degree {tp}: {reason}")]
    BadTp { tp: usize, reason: String },
    #[error("prompt is {got} tokens; the model's context is {limit} tokens")]
    PromptTooLong { got: usize, limit: usize },
    #[error("prompt plus max_tokens is {tokens} tokens; the KV cache budget allows {limit} per sequence")]
    KvBudget { tokens: usize, limit: usize },
    #[error("prompt is empty: at least one token is needed")]
    EmptyPrompt,
    /// A soft prompt trained on another model (the message names both).
    #[error("soft prompt {id}: {source}")]
    SoftPrompt { id: String, source: crate::train::SoftPromptError },
    #[error("soft prompt {id} has rows of {got} values; {model} has a hidden size of {want}")]
    SoftPromptWidth { id: String, got: usize, want: usize, model: String },
    #[error("soft prompt {id}: row {row} holds a value that is not finite")]
    SoftPromptNotFinite { id: String, row: usize },
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error("sampling: {0}")]
    Sampling(#[from] crate::sampling::SamplingError),
    #[error("constraint: {0}")]
    Constraint(#[from] crate::constraint::ConstraintError),
    #[error("tensor op: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("engine rank thread stopped: {0}")]
    RankGone(String),
    /// A rank failed (or panicked in) its part of a step; the model is still usable.
    #[error("tensor-parallel rank {rank} failed: {reason}")]
    StepFailed { rank: usize, reason: String },
}

impl EngineError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        EngineError::Io { path: path.to_path_buf(), source }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
