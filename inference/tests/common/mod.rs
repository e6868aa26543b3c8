#![allow(dead_code)]
//! Shared helpers for the engine's integration tests: they run the real bundled models.

use std::path::PathBuf;

use inference::{EngineConfig, ModelFiles, ShardedModel, Tokenizer};

pub const GEMMA: &str = "gemma3-270m";
pub const SMOL: &str = "smollm2-135m";

pub fn models_dir() -> PathBuf {
    std::env::var_os("STUDIO_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models"))
}

/// The model's directory; fails (never skips) when the model is not installed.
pub fn model_path(name: &str) -> PathBuf {
    let p = models_dir().join(name);
    assert!(p.is_dir(), "model {name} missing at {}: run scripts/fetch-models.sh", p.display());
    p
}

pub fn inspect(name: &str) -> (ModelFiles, Tokenizer) {
    ModelFiles::inspect(&model_path(name)).expect("model inspects")
}

pub fn load(name: &str, tp: usize) -> (ShardedModel, Tokenizer) {
    let (files, tok) = inspect(name);
    (ShardedModel::load_cpu(files, tp).expect("model loads"), tok)
}

pub fn engine(name: &str, tp: usize) -> inference::Engine {
    let (m, t) = load(name, tp);
    inference::Engine::new(m, t, EngineConfig::default())
}

pub fn gguf_file(name: &str) -> PathBuf {
    std::fs::read_dir(model_path(name))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "gguf"))
        .expect("a gguf file")
}
