//! `studio bench`: load time, prefill and decode throughput by model, TP degree and batch.

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct BenchArgs {
    /// Models to run (default: every installed model).
    #[arg(long)]
    model: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    tp: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    batch: Vec<usize>,
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 32)]
    decode_steps: usize,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let BenchArgs { model, tp, batch, prompt_tokens, decode_steps } = args;
    let models = if model.is_empty() {
        inference::installed_models(&inference::models_dir()).into_iter().map(|(n, _)| n).collect()
    } else {
        model
    };
    println!("machine: {}", inference::bench::machine());
    println!(
        "{:<14} {:>2} {:>5} {:>6} {:>7} {:>12} {:>11} {:>9}",
        "model", "tp", "batch", "prompt", "load_s", "prefill_t/s", "decode_t/s", "ttft_ms"
    );
    for m in &models {
        for &t in &tp {
            for r in inference::bench::run(m, t, &batch, prompt_tokens, decode_steps)? {
                println!(
                    "{:<14} {:>2} {:>5} {:>6} {:>7.2} {:>12.1} {:>11.1} {:>9.0}",
                    r.model, r.tp, r.batch, r.prompt_tokens, r.load_s, r.prefill_tok_s, r.decode_tok_s, r.ttft_ms
                );
            }
        }
    }
    Ok(())
}
