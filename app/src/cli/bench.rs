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
    /// Instead: time single forward passes (a prompt chunk of each size in `--chunks` at
    /// each position in `--starts`; decode passes of each row count in `--batch`), which
    /// is what the serving step budget (`serve --step-tokens`) is chosen from.
    #[arg(long)]
    step_costs: bool,
    #[arg(long, value_delimiter = ',', default_value = "64,128,256,512")]
    chunks: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "0,4096,8192")]
    starts: Vec<usize>,
    /// Instead: the cost of constrained decoding (`json`: a typical schema, `regex`,
    /// `choice`) at the largest `--batch` rows over `--decode-steps` steps, against the same
    /// rows unconstrained, and the compile time of a typical JSON schema.
    #[arg(long, value_parser = ["json", "regex", "choice"])]
    constraint: Option<String>,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let BenchArgs { model, tp, batch, prompt_tokens, decode_steps, step_costs, chunks, starts, constraint } = args;
    let models = if model.is_empty() {
        inference::installed_models(&inference::models_dir()).into_iter().map(|(n, _)| n).collect()
    } else {
        model
    };
    println!("machine: {}", inference::bench::machine());
    if let Some(kind) = constraint {
        let rows = batch.iter().max().copied().unwrap_or(16);
        println!(
            "{:<14} {:>6} {:>4} {:>5} {:>9} {:>9} {:>8} {:>8} {:>7} {:>7} {:>8} {:>10} {:>9}",
            "model",
            "kind",
            "rows",
            "steps",
            "step_ms",
            "c_step_ms",
            "samp_ms",
            "c_samp",
            "mask_%",
            "step_%",
            "trie_ms",
            "compile_ms",
            "schema_ms"
        );
        for m in &models {
            let c = inference::bench::constraint_cost(m, tp.first().copied().unwrap_or(1), &kind, rows, decode_steps)?;
            println!(
                "{:<14} {:>6} {:>4} {:>5} {:>9.1} {:>9.1} {:>8.2} {:>8.2} {:>7.1} {:>7.1} {:>8.0} {:>10.1} {:>9.1}",
                c.model,
                c.kind,
                c.rows,
                c.steps,
                c.plain_step_ms,
                c.constrained_step_ms,
                c.plain_sampling_ms,
                c.constrained_sampling_ms,
                c.mask_overhead_pct(),
                c.step_overhead_pct(),
                c.trie_ms,
                c.compile_ms,
                c.schema_compile_ms
            );
        }
        println!(
            "mask_%: the masks' cost per step relative to the unconstrained step; step_%: the whole step's growth"
        );
        return Ok(());
    }
    if step_costs {
        println!("{:<14} {:>2} {:>6} {:>6} {:>5} {:>9}", "model", "tp", "chunk", "start", "rows", "ms");
        for m in &models {
            for &t in &tp {
                for c in inference::bench::step_costs(m, t, &chunks, &starts, &batch, 3)? {
                    println!("{:<14} {:>2} {:>6} {:>6} {:>5} {:>9.1}", m, t, c.chunk, c.start, c.decode_rows, c.ms);
                }
            }
        }
        return Ok(());
    }
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
