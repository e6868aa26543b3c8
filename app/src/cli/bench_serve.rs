//! `studio bench-serve`: a load generator against a studio server it starts in-process on
//! loopback (or an already running one, with `--url`). `--scenario` picks what to run:
//!
//! - `throughput` (the default): aggregate tokens/s by concurrency, time to first token of
//!   a ~400-token few-shot prompt with and without a prefix-cache hit, and short-completion
//!   requests per minute.
//! - `head-of-line`: an 8k-token streamed prompt (max_tokens 1), then 1 s later an 8-token
//!   request: the short one's time to first token and total, the long one's time.
//! - `disconnect`: a ~10k-token stream dropped 1 s into its prefill: how long until the
//!   server has cancelled it (`studio_cancelled_sequences_total` up, `studio_running_sequences 0`)
//!   and the next short request's latency.
//! - `fairness`: a 200-row eval (`/api/evals`, batch priority) while 8-token API requests
//!   arrive one at a time: API p50/p90 idle and during the eval, and the eval's wall time
//!   alone and with the API traffic.
//! - `n16`: n=16 on a ~2.7k-token prompt: wall time, prompt tokens prefilled
//!   (`studio_prompt_tokens_total` delta) and the server's idle RSS before and after.
//! - `batch-api` (also `--batch-api`): the same short completions (8 tokens) sent as
//!   concurrent HTTP requests (16 clients) and as one job through `/v1/files` +
//!   `/v1/batches`, each alone: lines/min of each. Then a second job while 8-token API
//!   requests arrive one at a time: its lines/min, and the requests' p50 against idle.
//! - `all`: each of the above in turn.
//!
//! Prompts are built to their token count with `/v1/tokenize` and sent as token ids, each
//! with its own first words so that no prefix-cache hit helps it; sizes are clamped to the
//! model's context (SmolLM2-135M has 8k; Gemma 3 270M has 32k). `--quick` shrinks every
//! size for a smoke run. Only endpoints today's server has are used (`/ready` is not needed).

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
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// One request; (status, response body). Any status: callers decide what they accept.
async fn request(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await.context("connect")?;
    let payload = body.map(Value::to_string).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut s, &mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

async fn request_json(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
    let (status, text) = request(addr, method, path, body).await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// A counter or gauge from `/metrics`.
async fn metric(addr: &str, name: &str) -> Result<f64> {
    let (_, text) = request(addr, "GET", "/metrics", None).await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("/metrics has no {name}"))
}

/// The served model's id and context length (`/v1/models`).
async fn model_info(addr: &str) -> Result<(String, usize)> {
    let (_, v) = request_json(addr, "GET", "/v1/models", None).await?;
    let m = &v["data"][0];
    Ok((m["id"].as_str().unwrap_or("?").to_string(), m["context_length"].as_u64().unwrap_or(8192) as usize))
}

const WORDS: [&str; 16] = [
    "harbour", "violet", "engine", "orchard", "lantern", "granite", "meadow", "copper", "falcon", "river", "canvas",
    "summit", "ember", "willow", "signal", "marble",
];

/// Exactly `tokens` token ids (BOS included) of varied text that starts with `tag`, so no
/// two prompts share a cached prefix.
async fn prompt_ids(addr: &str, tokens: usize, tag: &str) -> Result<Vec<u32>> {
    let mut text = format!("Document {tag}.\n");
    let mut i = 0usize;
    loop {
        // ~12 tokens a sentence; overshoot, then cut.
        while text.len() < tokens * 6 + 64 {
            let w = |k: usize| WORDS[(i * 7 + k * 5) % WORDS.len()];
            text.push_str(&format!(
                "Entry {i}: the {} near the {} held {} {} and {} notes. ",
                w(0),
                w(1),
                (i * 37) % 1000,
                w(2),
                w(3)
            ));
            i += 1;
        }
        let (status, v) = request_json(addr, "POST", "/v1/tokenize", Some(&json!({"prompt": text}))).await?;
        if status != 200 {
            bail!("/v1/tokenize: {status} {v}");
        }
        let ids: Vec<u32> =
            v["tokens"].as_array().context("tokens")?.iter().filter_map(|t| t.as_u64().map(|t| t as u32)).collect();
        if ids.len() >= tokens {
            return Ok(ids[..tokens].to_vec());
        }
        text.push_str(&text.clone());
    }
}

/// A unique tag for this run's prompts.
fn tag(what: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{what}-{:x}", nanos % (1 << 40))
}

/// A prompt size for this model: `want`, at most the context minus room to generate.
fn fit(want: usize, ctx: usize, room: usize, model: &str) -> usize {
    if want + room < ctx {
        return want;
    }
    let got = ctx.saturating_sub(room + 1);
    println!("  (note: {model}'s context is {ctx} tokens: a {want}-token prompt is cut to {got}; serve a longer-context model for the full size)");
    got
}

/// Sizes of the scenarios (`--quick` for a smoke run).
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub long_prompt: usize,
    pub disconnect_prompt: usize,
    pub eval_rows: usize,
    pub api_requests: usize,
    pub n16_prompt: usize,
    pub batch_lines: usize,
}

impl Sizes {
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                long_prompt: 1024,
                disconnect_prompt: 1536,
                eval_rows: 20,
                api_requests: 6,
                n16_prompt: 600,
                batch_lines: 100,
            }
        } else {
            Self {
                long_prompt: 8192,
                disconnect_prompt: 10_000,
                eval_rows: 200,
                api_requests: 20,
                n16_prompt: 2700,
                batch_lines: 1000,
            }
        }
    }
}

/// Streams `body` to completion: (time to the first data line, total).
async fn timed(addr: &str, body: &Value) -> Result<(Duration, Duration)> {
    let t0 = Instant::now();
    let (first, _) = post(addr, "/v1/completions", body).await?;
    Ok((first, t0.elapsed()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// An 8k-token prompt streams (max_tokens 1); 1 s later an 8-token request arrives.
pub async fn head_of_line(addr: &str, sizes: Sizes) -> Result<()> {
    let (model, ctx) = model_info(addr).await?;
    println!("head-of-line ({model}):");
    let long_n = fit(sizes.long_prompt, ctx, 2, &model);
    let long = prompt_ids(addr, long_n, &tag("hol-long")).await?;
    let short = |t: String| async move { prompt_ids(addr, 8, &t).await };
    let short_body = |ids: Vec<u32>| json!({"prompt": ids, "max_tokens": 8, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}});
    let (idle_first, idle_total) = timed(addr, &short_body(short(tag("hol-idle")).await?)).await?;
    let long_body = json!({"prompt": long, "max_tokens": 1, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}});
    let a = addr.to_string();
    let long_task = tokio::spawn(async move { timed(&a, &long_body).await });
    let short_ids = short(tag("hol-short")).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (first, total) = timed(addr, &short_body(short_ids)).await?;
    let (_, long_total) = long_task.await??;
    println!(
        "  short request (8 prompt tokens, 8 generated) idle:           TTFT {:>7.0} ms, total {:>7.0} ms",
        ms(idle_first),
        ms(idle_total)
    );
    println!(
        "  short request 1 s after a {long_n}-token prompt:  TTFT {:>7.0} ms, total {:>7.0} ms",
        ms(first),
        ms(total)
    );
    println!("  the {long_n}-token prompt (max_tokens 1):        total {:>7.0} ms", ms(long_total));
    Ok(())
}

/// A ~10k-token stream dropped 1 s into its prefill: time until the server has let it go,
/// and the next short request's latency.
pub async fn disconnect(addr: &str, sizes: Sizes) -> Result<()> {
    let (model, ctx) = model_info(addr).await?;
    println!("disconnect ({model}):");
    let n = fit(sizes.disconnect_prompt, ctx, 16, &model);
    let ids = prompt_ids(addr, n, &tag("drop")).await?;
    let short = json!({"prompt": prompt_ids(addr, 8, &tag("drop-idle")).await?, "max_tokens": 8, "temperature": 0});
    let t = Instant::now();
    post(addr, "/v1/completions", &short).await?;
    let idle = t.elapsed();
    let cancelled_before = metric(addr, "studio_cancelled_sequences_total").await?;
    let body = json!({"prompt": ids, "max_tokens": 16, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}}).to_string();
    let mut s = TcpStream::connect(addr).await.context("connect")?;
    let req = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(s);
    let dropped = Instant::now();
    loop {
        let cancelled = metric(addr, "studio_cancelled_sequences_total").await?;
        let running = metric(addr, "studio_running_sequences").await?;
        if cancelled > cancelled_before && running == 0.0 {
            break;
        }
        if dropped.elapsed() > Duration::from_secs(600) {
            bail!("the dropped stream was still not cancelled after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let freed = dropped.elapsed();
    let short = json!({"prompt": prompt_ids(addr, 8, &tag("drop-next")).await?, "max_tokens": 8, "temperature": 0});
    let t = Instant::now();
    post(addr, "/v1/completions", &short).await?;
    let next = t.elapsed();
    println!("  {n}-token stream dropped 1 s after it was sent: cancelled and running 0 after {:>7.0} ms", ms(freed));
    println!("  next short request (8 + 8 tokens): {:>7.0} ms (idle before: {:>5.0} ms)", ms(next), ms(idle));
    Ok(())
}

/// Creates a template with `rows` test rows; its instruction starts with `tag`.
async fn eval_template(addr: &str, name: &str, rows: usize) -> Result<()> {
    let spec = json!({
        "instruction": format!("Task {name}: say whether the review is positive or negative."),
        "examples": [{"input": "A wonderful, moving film.", "output": "positive"},
                     {"input": "Dull and far too long.", "output": "negative"}],
        "input_pattern": "{{review}}",
    });
    let (status, v) = request_json(addr, "POST", "/api/templates", Some(&json!({"name": name, "spec": spec}))).await?;
    if status != 201 {
        bail!("creating template {name}: {status} {v}");
    }
    let rows: Vec<Value> = (0..rows)
        .map(|i| {
            let good = i % 2 == 0;
            let w = |k: usize| WORDS[(i * 3 + k) % WORDS.len()];
            let review = format!(
                "Review {i}: the {} scenes by the {} were {}.",
                w(0),
                w(1),
                if good { "a delight" } else { "a chore" }
            );
            json!({"variables": {"review": review}, "expected": if good { "positive" } else { "negative" }})
        })
        .collect();
    let path = format!("/api/templates/{name}/tests");
    let (status, v) = request_json(addr, "POST", &path, Some(&json!({"rows": rows}))).await?;
    if status != 200 {
        bail!("importing tests of {name}: {status} {v}");
    }
    Ok(())
}

/// Starts an eval of `name`; returns its id.
async fn start_eval(addr: &str, name: &str) -> Result<i64> {
    let body = json!({"template": name, "max_tokens": 8, "temperature": 0});
    let (status, v) = request_json(addr, "POST", "/api/evals", Some(&body)).await?;
    if status != 202 {
        bail!("starting the eval of {name}: {status} {v}");
    }
    v["id"].as_i64().context("eval id")
}

async fn eval_over(addr: &str, id: i64) -> Result<bool> {
    let (_, v) = request_json(addr, "GET", &format!("/api/evals/{id}?results=false"), None).await?;
    match v["status"].as_str() {
        Some("queued" | "running") => Ok(false),
        Some("completed") => Ok(true),
        other => bail!("eval {id} ended {other:?}: {v}"),
    }
}

/// One 8-token API request; its latency in ms.
async fn api_request(addr: &str, k: usize) -> Result<f64> {
    let body = json!({"prompt": format!("Visitor {k} at {}: what is", tag("api")), "max_tokens": 8, "temperature": 0});
    let t = Instant::now();
    post(addr, "/v1/completions", &body).await?;
    Ok(ms(t.elapsed()))
}

/// A 200-row eval at batch priority while 8-token API requests arrive one at a time.
pub async fn fairness(addr: &str, sizes: Sizes) -> Result<()> {
    let (model, _) = model_info(addr).await?;
    println!("fairness ({model}, {}-row eval, 8-token API requests one at a time):", sizes.eval_rows);
    let (a, b) = (tag("fair-a"), tag("fair-b"));
    eval_template(addr, &a, sizes.eval_rows).await?;
    eval_template(addr, &b, sizes.eval_rows).await?;
    api_request(addr, 0).await?; // warm-up
    let mut idle = Vec::new();
    for k in 0..sizes.api_requests {
        idle.push(api_request(addr, k).await?);
    }
    let t = Instant::now();
    let id = start_eval(addr, &a).await?;
    while !eval_over(addr, id).await? {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alone = t.elapsed();
    let t = Instant::now();
    let id = start_eval(addr, &b).await?;
    let mut during = Vec::new();
    let mut k = 0;
    loop {
        if eval_over(addr, id).await? {
            break;
        }
        // Only requests sent while the eval still runs count.
        during.push(api_request(addr, 1000 + k).await?);
        k += 1;
    }
    let with_api = t.elapsed();
    let (i50, i90) = (percentile(&mut idle, 0.5), percentile(&mut idle, 0.9));
    let (d50, d90) = (percentile(&mut during, 0.5), percentile(&mut during, 0.9));
    println!("  API idle:        p50 {i50:>7.0} ms, p90 {i90:>7.0} ms ({} requests)", idle.len());
    println!(
        "  API during eval: p50 {d50:>7.0} ms, p90 {d90:>7.0} ms ({} requests); {:.2}x / {:.2}x idle",
        during.len(),
        d50 / i50,
        d90 / i90
    );
    println!(
        "  eval wall time: alone {:.1} s, with API traffic {:.1} s ({:.2}x)",
        alone.as_secs_f64(),
        with_api.as_secs_f64(),
        with_api.as_secs_f64() / alone.as_secs_f64()
    );
    Ok(())
}

/// This process's resident set (the in-process server's), in MiB.
fn own_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024.0)
}

/// n=16 on a ~2.7k-token prompt: wall time, prompt tokens prefilled, idle RSS.
pub async fn n16(addr: &str, sizes: Sizes, in_process: bool) -> Result<()> {
    let (model, ctx) = model_info(addr).await?;
    println!("n16 ({model}):");
    let n = fit(sizes.n16_prompt, ctx, 16, &model);
    let ids = prompt_ids(addr, n, &tag("n16")).await?;
    let rss = || if in_process { own_rss_mib() } else { None };
    let before_rss = rss();
    let before = metric(addr, "studio_prompt_tokens_total").await?;
    let body = json!({"prompt": ids, "n": 16, "max_tokens": 16, "temperature": 1, "seed": 1});
    let t = Instant::now();
    let (status, v) = request_json(addr, "POST", "/v1/completions", Some(&body)).await?;
    let wall = t.elapsed();
    if status != 200 {
        println!("  refused: {status} {v}");
        return Ok(());
    }
    let prefilled = metric(addr, "studio_prompt_tokens_total").await? - before;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_rss = rss();
    println!(
        "  n=16 on a {n}-token prompt, 16 tokens each: {:.1} s wall, {} choices; prompt tokens prefilled {prefilled:.0} ({:.1}x the prompt)",
        wall.as_secs_f64(),
        v["choices"].as_array().map_or(0, Vec::len),
        prefilled / n as f64
    );
    match (before_rss, after_rss) {
        (Some(b), Some(a)) => println!("  server idle RSS: before {b:.0} MiB, after {a:.0} MiB"),
        _ => println!("  server idle RSS: not measured (--url: read VmRSS in /proc/<pid>/status of the server)"),
    }
    Ok(())
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
                            "max_tokens": 48, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}});
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
        let fresh = json!({"prompt": format!("Batch {i} of reviews.\n{shots}Review: A fine film.\nSentiment:"), "max_tokens": 1, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}});
        cold.push(post(&addr, "/v1/completions", &fresh).await?.0.as_secs_f64() * 1000.0);
        let again = json!({"prompt": format!("Batch shared of reviews.\n{shots}Review: Input {i} was fine.\nSentiment:"), "max_tokens": 1, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}});
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

/// Uploads `text` as a batch input file (multipart, as the OpenAI SDK sends it); its id.
async fn upload_batch_file(addr: &str, text: &str) -> Result<String> {
    let boundary = "studio-bench-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{boundary}\r\n\
         Content-Disposition: form-data; name=\"file\"; filename=\"bench.jsonl\"\r\n\
         Content-Type: application/jsonl\r\n\r\n{text}\r\n--{boundary}--\r\n"
    );
    let mut s = TcpStream::connect(addr).await.context("connect")?;
    let req = format!(
        "POST /v1/files HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut s, &mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let json = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    let v: Value = serde_json::from_str(json).with_context(|| format!("upload: {text}"))?;
    v["id"].as_str().map(str::to_string).with_context(|| format!("upload: {v}"))
}

/// The same short completions as concurrent HTTP requests and as one batch job.
pub async fn batch_api(addr: &str, sizes: Sizes) -> Result<()> {
    let (model, _) = model_info(addr).await?;
    let lines = sizes.batch_lines;
    println!("batch API ({model}, {lines} short completions of 8 tokens):");
    let body = |run: &str, i: usize| json!({"prompt": format!("{} note {i} of the {run} run: the weather is", tag(run)), "max_tokens": 8, "temperature": 0});
    let mut idle = Vec::new();
    for k in 0..8 {
        idle.push(api_request(addr, k).await?);
    }

    // Concurrent HTTP: 16 clients share the lines.
    let t0 = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (addr, next) = (addr.to_string(), next.clone());
            let bodies: Vec<Value> = (0..lines).map(|i| body("http", i)).collect();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= bodies.len() {
                        return anyhow::Ok(());
                    }
                    post(&addr, "/v1/completions", &bodies[i]).await?;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let http = t0.elapsed().as_secs_f64();

    // The batch alone (as the HTTP run was), then a second one with API requests meanwhile.
    let (batch, _) = run_batch(addr, lines, |i| body("batch", i), false).await?;
    let (busy_batch, mut during) = run_batch(addr, lines, |i| body("batch-api", i), true).await?;
    let (i50, d50) = (percentile(&mut idle, 0.5), percentile(&mut during, 0.5));
    let rate = |secs: f64| lines as f64 * 60.0 / secs;
    println!("  concurrent HTTP (16 clients): {http:.1} s = {:.0} lines/min", rate(http));
    println!(
        "  batch API:                    {batch:.1} s = {:.0} lines/min ({:.2}x the HTTP rate)",
        rate(batch),
        http / batch
    );
    println!(
        "  batch API with API requests:  {busy_batch:.1} s = {:.0} lines/min (API traffic goes first)",
        rate(busy_batch)
    );
    println!(
        "  8-token API requests: p50 idle {i50:.0} ms, during the batch {d50:.0} ms ({:.2}x, {} requests)",
        d50 / i50,
        during.len()
    );
    Ok(())
}

/// One batch job of `lines` completions, uploaded, created and polled to `completed`: its
/// wall time, and with `probe` the latencies of 8-token API requests sent one after
/// another while it runs (else it is only polled, every 100 ms).
async fn run_batch(addr: &str, lines: usize, body: impl Fn(usize) -> Value, probe: bool) -> Result<(f64, Vec<f64>)> {
    let text: String = (0..lines)
        .map(|i| {
            json!({"custom_id": format!("l{i}"), "method": "POST", "url": "/v1/completions", "body": body(i)})
                .to_string()
                + "\n"
        })
        .collect();
    let t0 = Instant::now();
    let file = upload_batch_file(addr, &text).await?;
    let create = json!({"input_file_id": file, "endpoint": "/v1/completions", "completion_window": "24h"});
    let (status, b) = request_json(addr, "POST", "/v1/batches", Some(&create)).await?;
    if status != 200 {
        bail!("creating the batch: {status} {b}");
    }
    let id = b["id"].as_str().context("batch id")?.to_string();
    let mut during = Vec::new();
    let mut k = 100;
    let done = loop {
        let (_, b) = request_json(addr, "GET", &format!("/v1/batches/{id}"), None).await?;
        match b["status"].as_str() {
            Some("completed") => break b,
            Some("in_progress" | "finalizing" | "validating") => {}
            other => bail!("batch ended {other:?}: {b}"),
        }
        if probe {
            during.push(api_request(addr, k).await?);
            k += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    let counts = &done["request_counts"];
    if counts["completed"].as_u64() != Some(lines as u64) {
        bail!("batch finished with {counts}");
    }
    Ok((secs, during))
}

/// What `bench-serve` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    All,
    Throughput,
    HeadOfLine,
    Disconnect,
    Fairness,
    N16,
    BatchApi,
}

#[derive(clap::Args)]
pub struct BenchServeArgs {
    /// Which scenario to run (see `studio bench-serve --help`).
    #[arg(long, value_enum, default_value_t = Scenario::Throughput)]
    scenario: Scenario,
    /// Small sizes for a smoke run (1k-token prompts, a 20-row eval).
    #[arg(long)]
    quick: bool,
    /// Model for the in-process server (ignored with --url).
    #[arg(long, default_value = "smollm2-135m")]
    model: String,
    /// Address of a running server (host:port) instead of starting one.
    #[arg(long)]
    url: Option<String>,
    #[arg(long, default_value_t = 1)]
    tp: usize,
    /// Same as `--scenario batch-api`.
    #[arg(long)]
    batch_api: bool,
}

/// `studio bench-serve`: against `--url`, or an in-process server on `--model`.
pub fn run_cmd(args: BenchServeArgs) -> Result<()> {
    let BenchServeArgs { scenario, quick, model, url, tp, batch_api: batch_flag } = args;
    let scenario = if batch_flag { Scenario::BatchApi } else { scenario };
    let in_process = url.is_none();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let (addr, label) = match url {
            Some(u) => (u.clone(), u),
            None => {
                let scheduler =
                    crate::start(&model, tp, 1024, EngineConfig { max_running: 32, ..EngineConfig::default() })?;
                let store = crate::store::Store::connect("sqlite::memory:").await?;
                let state = crate::AppState { scheduler, store };
                crate::api::batches::spawn_worker(state.clone());
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?.to_string();
                tokio::spawn(crate::api::serve(listener, crate::app(state), std::future::pending()));
                (addr, format!("{model} tp={tp} (in-process)"))
            }
        };
        let sizes = Sizes::new(quick);
        if !matches!(scenario, Scenario::Throughput | Scenario::All) {
            println!("server {label} at {addr}; machine: {}", inference::bench::machine());
        }
        let all = scenario == Scenario::All;
        if all || scenario == Scenario::Throughput {
            run(addr.clone(), &label).await?;
        }
        if all || scenario == Scenario::HeadOfLine {
            head_of_line(&addr, sizes).await?;
        }
        if all || scenario == Scenario::Disconnect {
            disconnect(&addr, sizes).await?;
        }
        if all || scenario == Scenario::Fairness {
            fairness(&addr, sizes).await?;
        }
        if all || scenario == Scenario::N16 {
            n16(&addr, sizes, in_process).await?;
        }
        if all || scenario == Scenario::BatchApi {
            batch_api(&addr, sizes).await?;
        }
        anyhow::Ok(())
    })?;

    Ok(())
}
