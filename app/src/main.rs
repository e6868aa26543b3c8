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
    /// Multiply with candle's quantized kernels (the weights read again for every row)
    /// instead of the batched kernel that reads them once for the whole batch.
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
        /// Database: sqlite://PATH or postgres://... (default: $DATABASE_URL, else sqlite://data/studio.db).
        #[arg(long)]
        database_url: Option<String>,
        /// The template library imported at start (default: $STUDIO_PROMPTS_DIR, else ./prompts).
        #[arg(long)]
        prompts: Option<std::path::PathBuf>,
    },
    /// Manage API keys (once one exists, /v1 and /api require `Authorization: Bearer`).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        #[arg(long, global = true)]
        database_url: Option<String>,
    },
    /// Work with template files (the prompts/ format) without a server.
    Template {
        #[command(subcommand)]
        action: TemplateAction,
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
    /// Evaluate a template file over a test set, or pick its few-shot examples.
    Eval {
        #[command(subcommand)]
        action: app::eval_cli::EvalAction,
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

#[derive(Subcommand)]
enum KeysAction {
    /// Create a key and print it (only once: just its hash is stored).
    Create {
        #[arg(long)]
        name: String,
    },
    /// List keys (name, first characters, dates).
    List,
    /// Revoke a key by name.
    Revoke {
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum TemplateAction {
    /// Check template files: parse and validate, report line and field of any error.
    Check { files: Vec<std::path::PathBuf> },
    /// Print the exact prompt a template file renders to.
    Render {
        file: std::path::PathBuf,
        /// A variable, as name=value (repeatable).
        #[arg(long = "var")]
        vars: Vec<String>,
    },
    /// Render a template file and run it on a model with the file's parameters.
    Run {
        file: std::path::PathBuf,
        #[arg(long = "var")]
        vars: Vec<String>,
        #[arg(long, default_value = "gemma3-270m")]
        model: String,
        /// Also run every example as a test: its input in place of the first variable,
        /// the other examples as the few shots; prints expected vs got.
        #[arg(long)]
        examples: bool,
    },
}

fn parse_vars(vars: &[String]) -> Result<std::collections::BTreeMap<String, String>> {
    vars.iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow::anyhow!("--var expects name=value, got {kv:?}"))
        })
        .collect()
}

fn database_url(arg: Option<String>) -> String {
    arg.unwrap_or_else(app::store::database_url_from_env)
}

/// Generates greedily (or with the file's parameters) for one rendered prompt.
fn run_rendered(
    engine: &mut inference::Engine,
    spec: &app::template::VersionSpec,
    rendered: &app::template::Rendered,
) -> Result<String> {
    let (ids, _) = rendered.token_ids(engine.tokenizer())?;
    let p = &spec.parameters;
    let req = GenerateRequest {
        prompt_tokens: ids,
        max_tokens: p.max_tokens,
        sampling: SamplingParams {
            temperature: p.temperature,
            top_p: p.top_p,
            top_k: p.top_k,
            repetition_penalty: p.repetition_penalty,
            seed: p.seed,
            ..Default::default()
        },
        stop: p.stop.clone(),
        ignore_eos: false,
        forced: Vec::new(),
    };
    let out = engine.generate(req, |_| {})?;
    Ok(out.text)
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
                forced: Vec::new(),
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
        Command::Serve { model, host, port, tp, queue, max_running, database_url: db, prompts } => {
            let cfg = EngineConfig { max_running, ..EngineConfig::default() };
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(async move {
                let url = database_url(db);
                let store = app::store::Store::connect(&url).await.with_context(|| format!("opening {url}"))?;
                eprintln!("studio: database {}", redact(&url));
                let interrupted = store.interrupt_stale_evals().await?;
                if interrupted > 0 {
                    eprintln!("studio: {interrupted} eval run(s) left running by the last server marked interrupted");
                }
                if let Ok(key) = std::env::var("STUDIO_API_KEY") {
                    if !key.trim().is_empty() && store.verify_key(key.trim()).await?.is_none() {
                        store.add_key("STUDIO_API_KEY", key.trim()).await?;
                    }
                }
                let dir = prompts.unwrap_or_else(app::library::prompts_dir);
                let mut imported = (0, 0, 0);
                for (path, result) in app::library::load(&store, &dir).await {
                    match result {
                        Ok(o) if o.created_template => imported.0 += 1,
                        Ok(o) if !o.unchanged => imported.1 += 1,
                        Ok(_) => imported.2 += 1,
                        Err(e) => eprintln!("studio: skipped {}: {e}", path.display()),
                    }
                }
                eprintln!(
                    "studio: template library {}: {} new, {} updated, {} unchanged",
                    dir.display(),
                    imported.0,
                    imported.1,
                    imported.2
                );
                let keys = store.active_key_count().await?;
                let loopback = matches!(host.as_str(), "127.0.0.1" | "localhost" | "::1");
                let host = if keys == 0 && !loopback {
                    eprintln!(
                        "studio: no API keys exist, so the server listens on 127.0.0.1 only (not {host}); \
                         create one with `studio keys create --name NAME` (or set STUDIO_API_KEY) to serve other machines"
                    );
                    "127.0.0.1".to_string()
                } else {
                    if keys == 0 {
                        eprintln!("studio: no API keys exist: loopback only, no authentication");
                    } else {
                        eprintln!("studio: {keys} API key(s): /v1 and /api require Authorization: Bearer");
                    }
                    host
                };
                // Listen at once: requests get 503 while the model loads.
                let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await?;
                let addr = listener.local_addr()?;
                let slot = std::sync::Arc::new(std::sync::OnceLock::new());
                let loaded = slot.clone();
                let name = model.clone();
                tokio::task::spawn_blocking(move || match app::start(&name, tp, queue, cfg) {
                    Ok(scheduler) => {
                        let _ = loaded.set(app::app(app::AppState { scheduler, store }));
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
        Command::Eval { action } => app::eval_cli::run(action)?,
        Command::BenchServe { model, url, tp } => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(async move {
                let (addr, label) = match url {
                    Some(u) => (u.clone(), u),
                    None => {
                        let scheduler =
                            app::start(&model, tp, 1024, EngineConfig { max_running: 32, ..EngineConfig::default() })?;
                        let store = app::store::Store::connect("sqlite::memory:").await?;
                        let state = app::AppState { scheduler, store };
                        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                        let addr = listener.local_addr()?.to_string();
                        tokio::spawn(async move { axum::serve(listener, app::app(state)).await });
                        (addr, format!("{model} tp={tp} (in-process)"))
                    }
                };
                app::bench_serve::run(addr, &label).await
            })?;
        }
        Command::Keys { action, database_url: db } => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let store = app::store::Store::connect(&database_url(db)).await?;
                match action {
                    KeysAction::Create { name } => {
                        let key = store.create_key(&name).await?;
                        println!("{key}");
                        eprintln!(
                            "key '{name}' created; it is shown only now. Send it as 'Authorization: Bearer <key>'."
                        );
                    }
                    KeysAction::List => {
                        for k in store.list_keys().await? {
                            let state = if k.revoked_at.is_some() { "revoked" } else { "active" };
                            println!("{:<24} {}…  {state}", k.name, k.prefix);
                        }
                    }
                    KeysAction::Revoke { name } => {
                        store.revoke_key(&name).await?;
                        eprintln!("key '{name}' revoked");
                    }
                }
                anyhow::Ok(())
            })?;
        }
        Command::Template { action } => match action {
            TemplateAction::Check { files } => {
                let mut bad = 0;
                for f in &files {
                    match app::library::read(f) {
                        Ok(t) => println!("ok   {} ({}, {} examples)", f.display(), t.name, t.examples.len()),
                        Err(e) => {
                            bad += 1;
                            println!("FAIL {e}");
                        }
                    }
                }
                if bad > 0 {
                    anyhow::bail!("{bad} of {} files failed", files.len());
                }
            }
            TemplateAction::Render { file, vars } => {
                let t = app::library::read(&file).map_err(anyhow::Error::msg)?;
                print!("{}", t.spec().render(&parse_vars(&vars)?)?.text());
            }
            TemplateAction::Run { file, vars, model, examples } => {
                let t = app::library::read(&file).map_err(anyhow::Error::msg)?;
                let spec = t.spec();
                let mut engine = inference::load_engine(&model, 1, EngineConfig::default())?;
                if !vars.is_empty() {
                    let rendered = spec.render(&parse_vars(&vars)?)?;
                    println!("{}", run_rendered(&mut engine, &spec, &rendered)?);
                }
                if examples {
                    // Leave-one-out: each example is the input, the others are the shots.
                    let var = spec.variables().first().cloned().ok_or_else(|| anyhow::anyhow!("no variable"))?;
                    let mut right = 0;
                    for i in 0..spec.examples.len() {
                        let mut shots = spec.clone();
                        let held = shots.examples.remove(i);
                        let vars = std::collections::BTreeMap::from([(var.clone(), held.input.clone())]);
                        let got = run_rendered(&mut engine, &shots, &shots.render(&vars)?)?;
                        let ok = got.trim() == held.output.trim();
                        right += ok as usize;
                        println!("{} expected {:?} got {:?}", if ok { "=" } else { "x" }, held.output, got.trim());
                    }
                    println!("{right}/{} examples reproduced (leave-one-out)", spec.examples.len());
                }
            }
        },
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

/// A database URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
