//! `studio generate`: one prompt, streamed to stdout.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use inference::{EngineConfig, GenerateRequest, SamplingParams};

#[derive(Args)]
pub struct GenerateArgs {
    /// Model name (see `studio models`) or path to a .gguf file / HF checkpoint directory.
    #[arg(long, default_value = "gemma3-270m")]
    model: String,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    #[arg(long)]
    seed: Option<u64>,
    /// Stop sequence (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Tensor-parallel degree (in-process CPU ranks).
    #[arg(long, default_value_t = 1)]
    tp: usize,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let GenerateArgs { model, prompt, max_tokens, temperature, top_p, top_k, repetition_penalty, seed, stop, tp } =
        args;
    let started = Instant::now();
    let mut engine = inference::load_engine(&model, tp, EngineConfig::default())
        .with_context(|| format!("loading model {model}"))?;
    let load = started.elapsed();
    let prompt_tokens = engine.tokenizer().encode(&prompt, true)?;
    let n_prompt = prompt_tokens.len();
    let req = GenerateRequest {
        prompt_tokens,
        max_tokens,
        sampling: SamplingParams { temperature, top_p, top_k, repetition_penalty, seed, ..Default::default() },
        stop,
        ignore_eos: false,
        forced: Vec::new(),
        constraint: None,
        soft_prompt: None,
    };
    let t0 = Instant::now();
    let mut stdout = std::io::stdout();
    let out = engine.generate(req, |text| {
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    })?;
    let secs = t0.elapsed().as_secs_f64();
    println!();
    eprintln!(
        "[{model} tp={tp}: loaded in {:.2}s; {n_prompt} prompt tokens, {} generated in {secs:.2}s ({:.1} tok/s); finish: {:?}]",
        load.as_secs_f64(),
        out.tokens.len(),
        out.tokens.len() as f64 / secs,
        out.finish_reason
    );
    Ok(())
}
