//! Engine benchmark: load time, prefill and decode throughput at several batch sizes and
//! TP degrees, on the machine it runs on. Used by `studio bench`.

use std::time::Instant;

use serde::Serialize;

use crate::engine::{Engine, EngineConfig, GenerateRequest};
use crate::error::Result;
use crate::model::{resolve_model, ModelFiles, ShardedModel};

#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub model: String,
    pub tp: usize,
    pub batch: usize,
    pub prompt_tokens: usize,
    pub load_s: f64,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    /// Time to first token of the batch: the prefill step.
    pub ttft_ms: f64,
}

/// The CPU's model name and how many threads compute.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{cpu}, {threads} threads")
}

/// Prefills `batch` prompts of `prompt_tokens` tokens in one step, then decodes
/// `decode_steps` tokens for all of them.
pub fn run(
    model: &str,
    tp: usize,
    batches: &[usize],
    prompt_tokens: usize,
    decode_steps: usize,
) -> Result<Vec<BenchRow>> {
    let path = resolve_model(model)?;
    let (files, tok) = ModelFiles::inspect(&path)?;
    let started = Instant::now();
    let sharded = ShardedModel::load_cpu(files, tp)?;
    let load_s = started.elapsed().as_secs_f64();
    run_loaded(model, sharded, tok, load_s, batches, prompt_tokens, decode_steps)
}

/// [`run`] on a model already loaded (on any device), `load_s` its load time.
pub fn run_loaded(
    model: &str,
    sharded: ShardedModel,
    tok: crate::tokenizer::Tokenizer,
    load_s: f64,
    batches: &[usize],
    prompt_tokens: usize,
    decode_steps: usize,
) -> Result<Vec<BenchRow>> {
    let tp = sharded.tp;
    let base = "The history of natural language processing generally started in the 1950s, although work can be \
                found from earlier periods. In 1950, Alan Turing published an article titled Computing Machinery \
                and Intelligence which proposed what is now called the Turing test as a criterion of intelligence. ";
    let mut text = String::new();
    while tok.encode(&text, true)?.len() < prompt_tokens {
        text.push_str(base);
    }
    let mut engine = Engine::new(
        sharded,
        tok,
        EngineConfig {
            max_batch_tokens: usize::MAX,
            max_running: 1024,
            prefix_cache_bytes: 0,
            kv_budget_bytes: 0,
            ..Default::default()
        },
    );
    let mut rows = Vec::new();
    for &batch in batches {
        for b in 0..batch {
            // Distinct prompts of equal length: vary the first token after BOS.
            let mut ids = engine.tokenizer().encode(&text, true)?;
            ids.truncate(prompt_tokens);
            ids[1] = ids[1].wrapping_add(b as u32) % engine.model().config().vocab_size() as u32;
            let mut req = GenerateRequest::greedy(ids, decode_steps + 1);
            req.ignore_eos = true;
            engine.add(req)?;
        }
        let t0 = Instant::now();
        engine.step()?;
        let prefill = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let mut decoded = 0;
        while engine.has_work() {
            engine.step()?;
            decoded += engine.last_step.decode_tokens;
        }
        let decode = t1.elapsed().as_secs_f64();
        rows.push(BenchRow {
            model: model.to_string(),
            tp,
            batch,
            prompt_tokens,
            load_s,
            prefill_tok_s: (batch * prompt_tokens) as f64 / prefill,
            decode_tok_s: decoded as f64 / decode,
            ttft_ms: prefill * 1000.0,
        });
    }
    Ok(rows)
}

/// The time of one forward pass of a given shape: what the step budget is chosen from.
#[derive(Debug, Clone, Serialize)]
pub struct StepCost {
    /// Prompt tokens in the pass (one chunk), and where in the sequence it starts.
    pub chunk: usize,
    pub start: usize,
    /// Decode rows beside it (sequences of `start + chunk` positions).
    pub decode_rows: usize,
    pub ms: f64,
}

/// Times forward passes over a prompt chunk of each size in `chunks` at each start position
/// in `starts`, and decode passes of each row count in `rows`, on one model (the median of
/// `repeats` passes each).
pub fn step_costs(
    model: &str,
    tp: usize,
    chunks: &[usize],
    starts: &[usize],
    rows: &[usize],
    repeats: usize,
) -> Result<Vec<StepCost>> {
    use crate::nn::Chunk;
    let path = resolve_model(model)?;
    let (files, tok) = ModelFiles::inspect(&path)?;
    let m = ShardedModel::load_cpu(files, tp)?;
    let vocab = m.config().vocab_size() as u32;
    // Varied ids well inside the vocabulary (content does not change the cost).
    let ids = |n: usize, salt: usize| -> Vec<u32> {
        (0..n).map(|i| ((i * 7919 + salt * 104_729) as u32 % (vocab - 1000)) + 500).collect()
    };
    let _ = tok;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut out = Vec::new();
    let longest = starts.iter().max().copied().unwrap_or(0);
    let chunk = |seq, tokens: Vec<u32>, start_pos| Chunk {
        seq,
        tokens,
        start_pos,
        all_logits: false,
        tail_logits: 0,
        no_logits: false,
        embeddings: None,
    };
    // One long context to start chunks from (sequence 1), filled in pieces of 512.
    let mut filled = 0;
    while filled < longest {
        let n = (longest - filled).min(512);
        m.forward(vec![chunk(1, ids(n, filled), filled)])?;
        filled += n;
    }
    for &start in starts {
        for &c in chunks {
            let mut times = Vec::new();
            for r in 0..repeats.max(1) {
                m.copy_prefix(1, 2, start)?;
                let t = Instant::now();
                m.forward(vec![chunk(2, ids(c, r + 1), start)])?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
                m.free(vec![2]);
            }
            out.push(StepCost { chunk: c, start, decode_rows: 0, ms: median(times) });
        }
    }
    // Decode rows at a short context (256 positions each).
    let short = 256;
    for &n in rows {
        for s in 0..n as u64 {
            m.forward(vec![chunk(100 + s, ids(short, s as usize), 0)])?;
        }
        let mut times = Vec::new();
        for r in 0..repeats.max(1) {
            let batch: Vec<Chunk> = (0..n as u64).map(|s| chunk(100 + s, ids(1, r + 3), short + r)).collect();
            let t = Instant::now();
            m.forward(batch)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        m.free((0..n as u64).map(|s| 100 + s).collect());
        out.push(StepCost { chunk: 0, start: short, decode_rows: n, ms: median(times) });
    }
    Ok(out)
}

/// Resident memory around a burst of long prompts (see [`memory_burst`]), in bytes.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MemoryBurst {
    /// Idle, after one short warm-up request.
    pub before: usize,
    /// With the burst's caches still held (after its last prefill).
    pub peak: usize,
    /// The burst finished and freed, one short sequence still running: what the allocator
    /// keeps while the engine is busy.
    pub freed_busy: usize,
    /// Everything finished: the engine went idle and gave free memory back.
    pub idle: usize,
}

/// Runs `seqs` prompts of `prompt_tokens` tokens (generating 2 tokens each) alongside one
/// short sequence that outlives them, and reads the RSS at each stage. The engine should
/// have its prefix cache off, or the figures include what it keeps.
pub fn memory_burst(engine: &mut Engine, seqs: usize, prompt_tokens: usize) -> Result<MemoryBurst> {
    let rss = || crate::memory::rss_bytes().unwrap_or(0);
    let vocab = engine.model().config().vocab_size() as u32;
    let base = engine.tokenizer().encode("Memory comes back after a burst of long prompts, or it should. ", false)?;
    let prompt = |salt: u32| -> Vec<u32> {
        let mut ids: Vec<u32> = base.iter().copied().cycle().take(prompt_tokens).collect();
        ids[0] = (ids[0] + salt) % vocab;
        ids
    };
    engine.generate(GenerateRequest::greedy(prompt(0)[..32].to_vec(), 2), |_| {})?;
    let before = rss();

    // The short sequence keeps the engine busy until the burst has been freed.
    let mut keep = GenerateRequest::greedy(prompt(1)[..16].to_vec(), 1024);
    keep.ignore_eos = true;
    let keep = engine.add(keep)?;
    for i in 0..seqs {
        let mut req = GenerateRequest::greedy(prompt(2 + i as u32), 2);
        req.ignore_eos = true;
        engine.add(req)?;
    }
    let mut peak = 0;
    while engine.num_running() > 1 || engine.num_waiting() > 0 {
        engine.step()?;
        peak = peak.max(rss());
    }
    let freed_busy = rss();
    engine.cancel(keep);
    let idle = rss();
    Ok(MemoryBurst { before, peak, freed_busy, idle })
}

/// A typical response schema (a person with an address and tags): what `studio bench
/// --constraint json` compiles and decodes with.
pub fn typical_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 40},
            "age": {"type": "integer", "minimum": 0, "maximum": 130},
            "email": {"type": "string", "pattern": "^[a-z0-9.]+@[a-z0-9]+\\.[a-z]{2,4}$"},
            "role": {"enum": ["admin", "editor", "viewer"]},
            "address": {
                "type": "object",
                "properties": {
                    "street": {"type": "string"},
                    "city": {"type": "string"},
                    "zip": {"type": "string", "pattern": "^[0-9]{5}$"}
                },
                "required": ["street", "city", "zip"],
                "additionalProperties": false
            },
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 8}
        },
        "required": ["name", "age", "email", "role", "address", "tags"],
        "additionalProperties": false
    })
}

/// What `studio bench --constraint <kind>` decodes with: `json` (the [`typical_schema`]),
/// `regex` (a sentence) or `choice` (twenty labels).
pub fn bench_constraint(kind: &str) -> Option<crate::ConstraintSpec> {
    use crate::ConstraintSpec as C;
    Some(match kind {
        "json" => C::JsonSchema(typical_schema()),
        "regex" => C::Regex("[A-Z][a-z]+( [a-z]+){8,40}\\.".into()),
        "choice" => C::Choice((0..20).map(|i| format!("label number {i}")).collect()),
        _ => return None,
    })
}

/// The cost of constrained decoding at `rows` rows, against the same rows unconstrained.
#[derive(Debug, Clone, Serialize)]
pub struct ConstraintCost {
    pub model: String,
    pub kind: String,
    pub rows: usize,
    /// Steps measured in each mode (only steps with exactly `rows` one-token rows).
    pub steps: usize,
    /// Mean decode step, unconstrained and constrained.
    pub plain_step_ms: f64,
    pub constrained_step_ms: f64,
    /// Mean time drawing tokens per step, unconstrained and constrained: their difference
    /// is the masks' cost (computed in parallel on the matmul pool, with the draws).
    pub plain_sampling_ms: f64,
    pub constrained_sampling_ms: f64,
    /// Building the vocabulary's token trie (once per loaded model).
    pub trie_ms: f64,
    /// Compiling the constraint (its first mask included), uncached.
    pub compile_ms: f64,
    /// Compiling the [`typical_schema`], uncached.
    pub schema_compile_ms: f64,
}

impl ConstraintCost {
    /// The masks' cost per step relative to the unconstrained step, in percent.
    pub fn mask_overhead_pct(&self) -> f64 {
        (self.constrained_sampling_ms - self.plain_sampling_ms) / self.plain_step_ms * 100.0
    }
    /// The whole step's growth, in percent (noisier: it includes the forward pass's jitter).
    pub fn step_overhead_pct(&self) -> f64 {
        (self.constrained_step_ms / self.plain_step_ms - 1.0) * 100.0
    }
}

/// Decodes `rows` sequences for `steps` steps unconstrained, then constrained by `kind`
/// (sequences that finish are replaced, so every measured step has `rows` rows).
pub fn constraint_cost(model: &str, tp: usize, kind: &str, rows: usize, steps: usize) -> Result<ConstraintCost> {
    use std::sync::Arc;
    let spec = bench_constraint(kind).ok_or_else(|| crate::ConstraintError::Invalid {
        kind: "constraint",
        reason: format!("{kind:?} is not one of json, regex, choice"),
    })?;
    let path = resolve_model(model)?;
    let (files, tok) = ModelFiles::inspect(&path)?;
    let sharded = ShardedModel::load_cpu(files, tp)?;
    let mut engine = Engine::new(
        sharded,
        tok,
        EngineConfig { max_batch_tokens: 4096, max_running: rows.max(1), kv_budget_bytes: 0, ..Default::default() },
    );
    let trie_ms = engine.constraints().prepare()?.as_secs_f64() * 1e3;
    let fresh = || crate::Constraints::new(engine.tokenizer().clone());
    let timed = |spec: &crate::ConstraintSpec| -> Result<f64> {
        let c = fresh();
        c.prepare()?;
        let t = Instant::now();
        c.compile(spec)?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    let schema_compile_ms = timed(&crate::ConstraintSpec::JsonSchema(typical_schema()))?;
    let compile_ms = timed(&spec)?;
    let grammar = engine.constraints().compile(&spec)?;
    let prompt = engine.tokenizer().encode(
        match kind {
            "json" => "Here is a user record as JSON:",
            "regex" => "Write one long sentence about the sea:",
            _ => "Pick a label:",
        },
        true,
    )?;

    let mut measure = |constraint: Option<Arc<crate::Grammar>>| -> Result<(f64, f64, usize)> {
        let mut seed = 0u64;
        let mut add = |e: &mut Engine| -> Result<()> {
            seed += 1;
            let req = GenerateRequest {
                sampling: crate::SamplingParams { temperature: 1.0, seed: Some(seed), ..Default::default() },
                ignore_eos: true,
                constraint: constraint.clone(),
                ..GenerateRequest::greedy(prompt.clone(), steps * 4 + 8)
            };
            e.add(req).map(|_| ())
        };
        for _ in 0..rows {
            add(&mut engine)?;
        }
        let (mut step_ms, mut sampling_ms, mut counted) = (0.0, 0.0, 0);
        for _ in 0..steps * 4 {
            let events = engine.step()?;
            let st = engine.last_step;
            if st.prefill_tokens == 0 && st.decode_tokens == rows {
                step_ms += st.elapsed.as_secs_f64() * 1e3;
                sampling_ms += st.sampling.as_secs_f64() * 1e3;
                counted += 1;
                if counted == steps {
                    break;
                }
            }
            for ev in events {
                if let crate::Event::Finished { .. } = ev {
                    add(&mut engine)?;
                }
            }
        }
        engine.reset();
        let n = counted.max(1) as f64;
        Ok((step_ms / n, sampling_ms / n, counted))
    };
    let (plain_step_ms, plain_sampling_ms, plain_steps) = measure(None)?;
    let (constrained_step_ms, constrained_sampling_ms, constrained_steps) = measure(Some(grammar))?;
    Ok(ConstraintCost {
        model: model.to_string(),
        kind: kind.to_string(),
        rows,
        steps: plain_steps.min(constrained_steps),
        plain_step_ms,
        constrained_step_ms,
        plain_sampling_ms,
        constrained_sampling_ms,
        trie_ms,
        compile_ms,
        schema_compile_ms,
    })
}
