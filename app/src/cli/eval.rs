//! `studio eval ...`: eval runs and few-shot selection in-process (no server), on a template
//! file and a CSV / JSONL test set; also the eval benchmark (rows/s, prefix cache on/off).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::evals::{self, EvalPlan, FileFormat};
use crate::serving::Scheduler;
use crate::store::ImportMode;
use crate::store::Store;
use crate::templates::TemplateFile;

#[derive(Subcommand)]
pub enum EvalAction {
    /// Run a template file over a test set and report pass rate, wall time and rows/s.
    Run {
        #[command(flatten)]
        common: Common,
        /// Samples per row (stability at temperature > 0).
        #[arg(long, default_value_t = 1)]
        n: usize,
        /// Override the template's temperature.
        #[arg(long)]
        temperature: Option<f32>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Override the template's max_tokens.
        #[arg(long)]
        max_tokens: Option<usize>,
        /// Print every row's result, not just failures.
        #[arg(long)]
        verbose: bool,
    },
    /// Pick k few-shot examples by greedy forward selection on held-out test rows.
    Select {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 4)]
        k: usize,
        /// Share of the labelled test rows held out for scoring.
        #[arg(long, default_value_t = 0.5)]
        holdout: f64,
        #[arg(long, default_value_t = 24)]
        max_pool: usize,
        #[arg(long, default_value_t = 3)]
        random_sets: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Write the best spec as a template file here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct Common {
    /// Template file (the prompts/ TOML format).
    #[arg(long)]
    template: PathBuf,
    /// Test set: .csv or .jsonl (see docs/evals-api.md for the columns).
    #[arg(long)]
    tests: PathBuf,
    #[arg(long, default_value = "gemma3-270m")]
    model: String,
    #[arg(long, default_value_t = 1)]
    tp: usize,
    /// Sequences decoding together.
    #[arg(long, default_value_t = 32)]
    max_running: usize,
    /// Turn the prefix cache off (benchmarks).
    #[arg(long)]
    no_prefix_cache: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

struct Loaded {
    sched: Scheduler,
    store: Store,
    file: TemplateFile,
    load: Duration,
}

async fn load(c: &Common) -> Result<Loaded> {
    let file = crate::templates::library::read(&c.template).map_err(|e| anyhow!(e))?;
    let bytes = std::fs::read(&c.tests).with_context(|| format!("reading {}", c.tests.display()))?;
    let format = match c.tests.extension().and_then(|e| e.to_str()) {
        Some("jsonl") | Some("ndjson") => FileFormat::Jsonl,
        _ => FileFormat::Csv,
    };
    let rows = evals::parse(format, evals::utf8(&bytes)?).map_err(|e| anyhow!("{}: {e}", c.tests.display()))?;
    let store = Store::connect("sqlite::memory:").await?;
    store.import_file(&file, "cli", "user").await?;
    store.import_tests(&file.name, &rows, ImportMode::Replace).await?;
    let mut cfg = inference::EngineConfig { max_running: c.max_running, ..Default::default() };
    if c.no_prefix_cache {
        cfg.prefix_cache_bytes = 0;
    }
    let t0 = Instant::now();
    let (model, tp) = (c.model.clone(), c.tp);
    let sched = tokio::task::spawn_blocking(move || crate::start(&model, tp, 1024, cfg)).await??;
    Ok(Loaded { sched, store, file, load: t0.elapsed() })
}

fn cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

pub fn run(action: EvalAction) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        match action {
            EvalAction::Run { common, n, temperature, seed, max_tokens, verbose } => {
                let l = load(&common).await?;
                let spec = l.file.spec();
                let settings = evals::settings(&l.sched, &spec, Some(n), temperature, Some(seed), max_tokens)?;
                let plan = EvalPlan { template: l.file.name.clone(), version: Some(1), spec, settings };
                let t0 = Instant::now();
                let run = evals::start(&l.sched, &l.store, plan, "cli").await?;
                let mut last = -1;
                let run = loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let r = l.store.eval_run(run.id).await?;
                    if !common.json && r.done / 20 != last / 20 {
                        eprint!("\r{}/{} rows", r.done, r.total);
                        last = r.done;
                    }
                    if r.status.is_over() {
                        break r;
                    }
                };
                let wall = t0.elapsed().as_secs_f64();
                let results = l.store.eval_results(run.id).await?;
                let summary = json!({
                    "template": run.template, "model": run.model, "tp": run.tp, "cpu": cpu(),
                    "prefix_cache": !common.no_prefix_cache, "status": run.status, "rows": run.done, "total": run.total,
                    "passed": run.passed, "pass_rate": run.pass_rate, "stability": run.stability,
                    "n": run.n, "temperature": run.temperature, "seed": run.seed,
                    "wall_s": wall, "rows_per_s": run.done as f64 / wall, "load_s": l.load.as_secs_f64(),
                    "prompt_tokens": run.prompt_tokens, "cached_tokens": run.cached_tokens,
                    "completion_tokens": run.completion_tokens,
                });
                if common.json {
                    println!("{summary}");
                } else {
                    eprintln!();
                    for r in results.iter().filter(|r| verbose || !r.passed) {
                        println!(
                            "{} row {}: {:?} -> {:?} (expected {:?}){}",
                            if r.passed { "PASS" } else { "FAIL" },
                            r.index + 1,
                            r.variables.values().next().map(String::as_str).unwrap_or(""),
                            r.output.trim(),
                            r.expected.as_deref().unwrap_or("-"),
                            r.error.as_ref().map(|e| format!(" error: {e}")).unwrap_or_default()
                        );
                    }
                    println!(
                        "{}: {}/{} passed ({:.1}%), {} on {} tp={} ({}), prefix cache {}: {:.2} s, {:.2} rows/s, {} prompt tokens ({} cached), {} generated",
                        run.template,
                        run.passed,
                        run.done,
                        run.pass_rate.unwrap_or(0.0) * 100.0,
                        run.status.as_str(),
                        run.model,
                        run.tp,
                        cpu(),
                        if common.no_prefix_cache { "off" } else { "on" },
                        wall,
                        run.done as f64 / wall,
                        run.prompt_tokens,
                        run.cached_tokens,
                        run.completion_tokens
                    );
                }
            }
            EvalAction::Select { common, k, holdout, max_pool, random_sets, seed, out } => {
                let l = load(&common).await?;
                let spec = l.file.spec();
                let cases = l.store.list_tests(&l.file.name).await?;
                let req = crate::evals::select::SelectRequest {
                    k: Some(k),
                    holdout: Some(holdout),
                    max_pool: Some(max_pool),
                    random_sets: Some(random_sets),
                    seed: Some(seed),
                    ..Default::default()
                };
                let t0 = Instant::now();
                let rep = crate::evals::select::select(&l.sched, &spec, &cases, &req).await?;
                let wall = t0.elapsed().as_secs_f64();
                if common.json {
                    println!("{}", json!({ "report": rep, "wall_s": wall, "model": l.sched.model_name, "cpu": cpu() }));
                } else {
                    let show = |t: &crate::evals::select::Tried| {
                        format!("accuracy {:.1}% mean logprob {:.3} examples {:?}", t.accuracy * 100.0, t.mean_logprob, t.examples)
                    };
                    println!("{} on {} ({}): pool {}, held out {}, labels {:?}, {} sets tried in {:.1} s", l.file.name, l.sched.model_name, cpu(), rep.pool.len(), rep.holdout.len(), rep.labels, rep.tried.len(), wall);
                    println!("best:    {}", show(&rep.best));
                    for t in &rep.random.sets {
                        println!("random:  {}", show(t));
                    }
                    if let Some(m) = rep.random.mean_accuracy {
                        println!("random mean accuracy {:.1}%", m * 100.0);
                    }
                    if let Some(c) = &rep.current {
                        println!("current: {}", show(c));
                    }
                    for &i in &rep.best.examples {
                        let c = &rep.pool[i];
                        println!("  [{}] {} -> {}", c.source, c.input, c.output);
                    }
                }
                if let Some(path) = out {
                    let meta = l.store.get_template(&l.file.name).await?.meta();
                    let file = TemplateFile::from_parts(&meta, &rep.spec, "few-shot examples chosen by studio eval select");
                    std::fs::write(&path, file.to_toml()).with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {}", Path::new(&path).display());
                }
            }
        }
        anyhow::Ok(())
    })
}
