//! `studio serve`: the studio and its API on one port; 503 until the model has loaded.

use anyhow::{Context, Result};

use super::database_url;
use clap::Args;
use inference::EngineConfig;

#[derive(Args)]
pub struct ServeArgs {
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
    /// The per-step token budget: prompt and decode tokens in one forward pass. Long
    /// prompts prefill in chunks of at most this many tokens, so it also bounds how long
    /// a newly arrived request waits for the step in progress.
    #[arg(long, default_value_t = EngineConfig::default().max_batch_tokens)]
    step_tokens: usize,
    /// Most eval/batch tokens in a step while API requests are live (the rest of that
    /// work pauses, KV kept).
    #[arg(long, default_value_t = EngineConfig::default().batch_tokens_with_api)]
    batch_tokens_with_api: usize,
    /// Database: sqlite://PATH or postgres://... (default: $DATABASE_URL, else sqlite://data/studio.db).
    #[arg(long)]
    database_url: Option<String>,
    /// The template library imported at start (default: $STUDIO_PROMPTS_DIR, else ./prompts).
    #[arg(long)]
    prompts: Option<std::path::PathBuf>,
    /// Import again the shipped templates that users deleted in the studio (otherwise a
    /// deleted template stays deleted).
    #[arg(long)]
    restore_library: bool,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let ServeArgs {
        model,
        host,
        port,
        tp,
        queue,
        max_running,
        step_tokens,
        batch_tokens_with_api,
        database_url: db,
        prompts,
        restore_library,
    } = args;
    if step_tokens == 0 {
        anyhow::bail!("--step-tokens must be at least 1");
    }
    let cfg =
        EngineConfig { max_running, max_batch_tokens: step_tokens, batch_tokens_with_api, ..EngineConfig::default() };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let url = database_url(db);
        let store = crate::store::Store::connect(&url).await.with_context(|| format!("opening {url}"))?;
        eprintln!("studio: database {} (replica {})", redact(&url), store.replica());
        let interrupted = store.interrupt_stale_evals().await?;
        if interrupted > 0 {
            eprintln!("studio: {interrupted} eval run(s) left running by the last server marked interrupted");
        }
        if let Ok(key) = std::env::var("STUDIO_API_KEY") {
            if !key.trim().is_empty() && store.verify_key(key.trim()).await?.is_none() {
                store.add_key("STUDIO_API_KEY", key.trim()).await?;
            }
        }
        if restore_library {
            let n = store.restore_library().await?;
            eprintln!("studio: {n} deleted shipped template(s) will be imported again");
        }
        let dir = prompts.unwrap_or_else(crate::templates::library::prompts_dir);
        let mut imported = (0, 0, 0);
        for (path, result) in store.import_library(&dir).await {
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
        tokio::task::spawn_blocking(move || match crate::start(&name, tp, queue, cfg) {
            Ok(scheduler) => {
                let state = crate::AppState { scheduler, store };
                // This replica's share of batch work, and its leases on runs it owns.
                crate::api::batches::spawn_worker(state.clone());
                let _ = loaded.set(crate::app(state));
                eprintln!("studio: serving {name} (tp={tp}) on http://{addr}");
            }
            Err(e) => {
                eprintln!("studio: loading model {name} failed: {e:#}");
                std::process::exit(1);
            }
        });
        eprintln!("studio: loading {model}; listening on http://{addr}");
        crate::api::serve(listener, crate::loading_gate(slot), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
        anyhow::Ok(())
    })?;
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
