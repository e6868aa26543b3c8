//! `studio`: the prompt-engineering studio's command line.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use inference::{EngineConfig, GenerateRequest, SamplingParams};

#[derive(Parser)]
#[command(name = "studio", version, about = "Self-hosted prompt-engineering studio on a tensor-parallel GPT engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Multiply with candle's quantized kernels (one dot product per row) instead of the
    /// batched kernel that shares dequantized weights across a batch.
    #[arg(long, global = true)]
    candle_matmul: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streamed to stdout.
    Generate {
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
    },
    /// Serve the OpenAI-compatible API.
    Serve {
        #[arg(long, default_value = "gemma3-270m")]
        model: String,
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long, default_value_t = 8080)]
        port: u16,
        #[arg(long, default_value_t = 1)]
        tp: usize,
        /// Requests that may wait for admission before new ones get 429.
        #[arg(long, default_value_t = 256)]
        queue: usize,
        /// Sequences decoding together.
        #[arg(long, default_value_t = 32)]
        max_running: usize,
    },
    /// Load-test a server: tokens/s by concurrency, few-shot TTFT with and without the
    /// prefix cache, short-completion requests/min.
    BenchServe {
        /// Model for the in-process server (ignored with --url).
        #[arg(long, default_value = "smollm2-135m")]
        model: String,
        /// Address of a running server (host:port) instead of starting one.
        #[arg(long)]
        url: Option<String>,
        #[arg(long, default_value_t = 1)]
        tp: usize,
    },
    /// List installed models.
    Models,
    /// Benchmark load time, prefill and decode throughput.
    Bench {
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
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    inference::tp::set_batched_matmul(!cli.candle_matmul);
    match cli.command {
        Command::Generate {
            model,
            prompt,
            max_tokens,
            temperature,
            top_p,
            top_k,
            repetition_penalty,
            seed,
            stop,
            tp,
        } => {
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
        }
        Command::Serve { model, host, port, tp, queue, max_running } => {
            let cfg = EngineConfig { max_running, ..EngineConfig::default() };
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(async move {
                // Listen at once: requests get 503 while the model loads.
                let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await?;
                let addr = listener.local_addr()?;
                let slot = std::sync::Arc::new(std::sync::OnceLock::new());
                let loaded = slot.clone();
                let name = model.clone();
                tokio::task::spawn_blocking(move || match app::start(&name, tp, queue, cfg) {
                    Ok(state) => {
                        let _ = loaded.set(app::app(state));
                        eprintln!("studio: serving {name} (tp={tp}) on http://{addr}");
                    }
                    Err(e) => {
                        eprintln!("studio: loading model {name} failed: {e:#}");
                        std::process::exit(1);
                    }
                });
                eprintln!("studio: loading {model}; listening on http://{addr}");
                axum::serve(listener, app::loading_gate(slot))
                    .with_graceful_shutdown(async {
                        let _ = tokio::signal::ctrl_c().await;
                    })
                    .await?;
                anyhow::Ok(())
            })?;
        }
        Command::BenchServe { model, url, tp } => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(async move {
                let (addr, label) = match url {
                    Some(u) => (u.clone(), u),
                    None => {
                        let state =
                            app::start(&model, tp, 1024, EngineConfig { max_running: 32, ..EngineConfig::default() })?;
                        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                        let addr = listener.local_addr()?.to_string();
                        tokio::spawn(async move { axum::serve(listener, app::app(state)).await });
                        (addr, format!("{model} tp={tp} (in-process)"))
                    }
                };
                app::bench_serve::run(addr, &label).await
            })?;
        }
        Command::Models => {
            let dir = inference::models_dir();
            let models = inference::installed_models(&dir);
            if models.is_empty() {
                println!("no models in {}: run scripts/fetch-models.sh", dir.display());
            }
            for (name, path) in models {
                match inference::ModelFiles::inspect(&path) {
                    Ok((files, tok)) => println!(
                        "{name:<16} {:<7} {:>2} layers  vocab {:>7}  context {:>6}  {}",
                        files.config.architecture(),
                        files.config.num_layers(),
                        tok.vocab_size(),
                        files.config.context_length(),
                        path.display()
                    ),
                    Err(e) => println!("{name:<16} unreadable: {e}"),
                }
            }
        }
        Command::Bench { model, tp, batch, prompt_tokens, decode_steps } => {
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
                            r.model,
                            r.tp,
                            r.batch,
                            r.prompt_tokens,
                            r.load_s,
                            r.prefill_tok_s,
                            r.decode_tok_s,
                            r.ttft_ms
                        );
                    }
                }
            }
        }
    }
    Ok(())
}
