//! `studio bench-serve`: a load generator against a studio server it starts in-process on
//! loopback (or an already running one, with `--url`). Prints aggregate tokens/s by
//! concurrency, time to first token of a ~400-token few-shot prompt with and without a
//! prefix-cache hit, and short-completion requests per minute.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use inference::EngineConfig;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Sends one POST; returns (time to the first body line that starts with `data:` or the
/// whole body, full body).
async fn post(addr: &str, path: &str, body: &Value) -> Result<(Duration, String)> {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.context("connect")?;
    let payload = body.to_string();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut reader = BufReader::new(s);
    let mut first = None;
    let mut text = String::new();
    let mut line = String::new();
    while reader.read_line(&mut line).await? > 0 {
        if first.is_none() && (line.starts_with("data: {") || line.starts_with('{')) {
            first = Some(started.elapsed());
        }
        text.push_str(&line);
        line.clear();
    }
    if !text.starts_with("HTTP/1.1 200") {
        bail!("{path}: {}", text.lines().next().unwrap_or(""));
    }
    Ok((first.unwrap_or_else(|| started.elapsed()), text))
}

fn completion_tokens(body: &str) -> u64 {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: ").or(Some(l)))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["usage"]["completion_tokens"].as_u64())
        .next_back()
        .unwrap_or(0)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

pub async fn run(addr: String, label: &str) -> Result<()> {
    println!("server {label} at {addr}; machine: {}", inference::bench::machine());

    // 1. Aggregate generated tokens/s at concurrency 1, 4, 16 (greedy streams, 48 tokens
    // each, timed from the first request sent to the last token received): the median of
    // three rounds per level, after one warm-up stream.
    let round = |c: usize, r: usize| {
        let addr = addr.clone();
        async move {
            let t0 = Instant::now();
            let tasks: Vec<_> = (0..c)
                .map(|i| {
                    let addr = addr.clone();
                    tokio::spawn(async move {
                        let body = json!({"prompt": format!("Story {r}.{i}: Once upon a time in a faraway kingdom,"),
                            "max_tokens": 48, "temperature": 0, "stream": true});
                        post(&addr, "/v1/completions", &body).await.map(|(_, b)| completion_tokens(&b))
                    })
                })
                .collect();
            let mut tokens = 0;
            for t in tasks {
                tokens += t.await??;
            }
            anyhow::Ok((tokens, tokens as f64 / t0.elapsed().as_secs_f64()))
        }
    };
    round(1, 99).await?;
    let mut base = 0.0;
    for c in [1usize, 4, 16] {
        let mut rounds = Vec::new();
        for r in 0..3 {
            rounds.push(round(c, r).await?);
        }
        let tokens = rounds[0].0;
        let mut tps: Vec<f64> = rounds.iter().map(|r| r.1).collect();
        let median = percentile(&mut tps, 0.5);
        if c == 1 {
            base = median;
        }
        println!(
            "concurrency {c:>2}: {tokens:>4} tokens/round, {median:>7.1} tok/s aggregate ({:.2}x one stream; rounds {})",
            median / base,
            tps.iter().map(|t| format!("{t:.1}")).collect::<Vec<_>>().join(" ")
        );
    }

    // 2. TTFT of a ~400-token few-shot prompt: a new prefix each time vs the same prefix.
    let shots: String = (0..24)
        .map(|i| {
            format!(
                "Review: The film number {i} was {}.\nSentiment: {}\n\n",
                ["wonderful", "dull"][i % 2],
                ["positive", "negative"][i % 2]
            )
        })
        .collect();
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for i in 0..8 {
        let fresh = json!({"prompt": format!("Batch {i} of reviews.\n{shots}Review: A fine film.\nSentiment:"), "max_tokens": 1, "temperature": 0, "stream": true});
        cold.push(post(&addr, "/v1/completions", &fresh).await?.0.as_secs_f64() * 1000.0);
        let again = json!({"prompt": format!("Batch shared of reviews.\n{shots}Review: Input {i} was fine.\nSentiment:"), "max_tokens": 1, "temperature": 0, "stream": true});
        let t = post(&addr, "/v1/completions", &again).await?.0.as_secs_f64() * 1000.0;
        if i > 0 {
            warm.push(t); // the first one fills the cache
        }
    }
    let (c50, c99) = (percentile(&mut cold, 0.5), percentile(&mut cold, 0.99));
    let (w50, w99) = (percentile(&mut warm, 0.5), percentile(&mut warm, 0.99));
    println!("few-shot TTFT uncached: p50 {c50:.0} ms, p99 {c99:.0} ms");
    println!("few-shot TTFT cached:   p50 {w50:.0} ms, p99 {w99:.0} ms ({:.1}x lower at p50)", c50 / w50);

    // 3. Short completions (8 tokens) from 32 clients for 20 seconds.
    let deadline = Instant::now() + Duration::from_secs(20);
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let addr = addr.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                let mut k = 0;
                while Instant::now() < deadline {
                    let body = json!({"prompt": format!("Client {i} question {k}: what is"), "max_tokens": 8, "temperature": 0});
                    if post(&addr, "/v1/completions", &body).await.is_ok() {
                        done += 1;
                    }
                    k += 1;
                }
                done
            })
        })
        .collect();
    let mut done = 0;
    for t in tasks {
        done += t.await?;
    }
    println!(
        "short completions: {done} in {:.1}s = {:.0} requests/min",
        t0.elapsed().as_secs_f64(),
        done as f64 * 60.0 / t0.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct BenchServeArgs {
    /// Model for the in-process server (ignored with --url).
    #[arg(long, default_value = "smollm2-135m")]
    model: String,
    /// Address of a running server (host:port) instead of starting one.
    #[arg(long)]
    url: Option<String>,
    #[arg(long, default_value_t = 1)]
    tp: usize,
}

/// `studio bench-serve`: against `--url`, or an in-process server on `--model`.
pub fn run_cmd(args: BenchServeArgs) -> Result<()> {
    let BenchServeArgs { model, url, tp } = args;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let (addr, label) = match url {
            Some(u) => (u.clone(), u),
            None => {
                let scheduler =
                    crate::start(&model, tp, 1024, EngineConfig { max_running: 32, ..EngineConfig::default() })?;
                let store = crate::store::Store::connect("sqlite::memory:").await?;
                let state = crate::AppState { scheduler, store };
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?.to_string();
                tokio::spawn(crate::api::serve(listener, crate::app(state), std::future::pending()));
                (addr, format!("{model} tp={tp} (in-process)"))
            }
        };
        run(addr, &label).await
    })?;

    Ok(())
}
