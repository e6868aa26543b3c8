//! Batch-native generation over a [`ShardedModel`].
//!
//! [`Engine::step`] is one scheduler iteration: it admits waiting sequences (prefilling
//! their prompts) and decodes one token for every running sequence, all in a single
//! batched forward pass over sequences of different lengths. A server's continuous
//! batching loop calls `add`/`cancel` between steps and forwards the events.

mod prefix_cache;
pub mod request;
pub mod stream;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::prefix_cache::PrefixCache;
use self::stream::{IncrementalDecoder, StopMatcher};
use crate::error::{EngineError, Result};
use crate::model::ShardedModel;
use crate::nn::{Chunk, SeqId};
use crate::sampling::{SampledToken, Sampler};
use crate::tokenizer::Tokenizer;

pub use self::request::{EngineConfig, Event, FinishReason, GenerateRequest, Generation};

struct Sequence {
    tokens: Vec<u32>,
    prompt_len: usize,
    max_tokens: usize,
    ignore_eos: bool,
    sampler: Sampler,
    decoder: IncrementalDecoder,
    stops: StopMatcher,
    /// Positions already in the KV cache.
    cached: usize,
    /// Prompt positions that came from the prefix cache.
    reused: usize,
    /// Trailing forced tokens (scored, not generated); 0 for a normal sequence.
    forced: usize,
}

impl Sequence {
    fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }
}

/// Timing of the last step, for benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepStats {
    pub prefill_tokens: usize,
    pub decode_tokens: usize,
    pub elapsed: Duration,
}

pub struct Engine {
    model: ShardedModel,
    tokenizer: Arc<Tokenizer>,
    cfg: EngineConfig,
    next_id: SeqId,
    waiting: VecDeque<SeqId>,
    running: Vec<SeqId>,
    seqs: HashMap<SeqId, Sequence>,
    prefix: PrefixCache,
    pub last_step: StepStats,
}

impl Engine {
    pub fn new(model: ShardedModel, tokenizer: Tokenizer, cfg: EngineConfig) -> Self {
        Self {
            model,
            tokenizer: Arc::new(tokenizer),
            cfg,
            next_id: 1,
            waiting: VecDeque::new(),
            running: Vec::new(),
            seqs: HashMap::new(),
            prefix: PrefixCache::default(),
            last_step: StepStats::default(),
        }
    }

    pub fn model(&self) -> &ShardedModel {
        &self.model
    }
    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }
    pub fn context_length(&self) -> usize {
        self.model.config().context_length()
    }

    /// Queues a sequence; it is prefilled by the next `step`.
    pub fn add(&mut self, req: GenerateRequest) -> Result<SeqId> {
        req.sampling.validate()?;
        let limit = self.context_length();
        if req.prompt_tokens.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if req.prompt_tokens.len() + req.forced.len() >= limit {
            return Err(EngineError::PromptTooLong { got: req.prompt_tokens.len() + req.forced.len(), limit });
        }
        let forced = req.forced.len();
        let max_tokens = if forced > 0 { forced } else { req.max_tokens };
        let reserve = req.prompt_tokens.len() + max_tokens;
        if let Some(limit) = self.kv_budget_tokens() {
            if reserve > limit {
                return Err(EngineError::KvBudget { tokens: reserve, limit });
            }
        }
        let id = self.next_seq_id();
        let seq = Sequence {
            sampler: Sampler::new(req.sampling.clone(), &req.prompt_tokens),
            decoder: IncrementalDecoder::new(&req.prompt_tokens),
            stops: StopMatcher::new(req.stop.clone()),
            prompt_len: req.prompt_tokens.len(),
            tokens: req.prompt_tokens.into_iter().chain(req.forced).collect(),
            max_tokens,
            ignore_eos: req.ignore_eos,
            cached: 0,
            reused: 0,
            forced,
        };
        self.seqs.insert(id, seq);
        self.reuse_prefix(id)?;
        self.waiting.push_back(id);
        Ok(id)
    }

    /// The KV budget in positions (per sequence, prompt + generated), if there is one.
    pub fn kv_budget_tokens(&self) -> Option<usize> {
        let per_token = self.model.config().kv_bytes_per_token().max(1);
        (self.cfg.kv_budget_bytes > 0).then(|| self.cfg.kv_budget_bytes / per_token)
    }

    fn next_seq_id(&mut self) -> SeqId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Starts `id` from the cached KV of the longest prefix it shares with a kept prompt.
    fn reuse_prefix(&mut self, id: SeqId) -> Result<()> {
        if self.cfg.prefix_cache_bytes == 0 {
            return Ok(());
        }
        let s = &self.seqs[&id];
        if let Some((src, n)) = self.prefix.lookup(&s.tokens[..s.prompt_len]) {
            self.model.copy_prefix(src, id, n)?;
            let s = self.seqs.get_mut(&id).expect("just added");
            s.cached = n;
            s.reused = n;
        }
        Ok(())
    }

    /// Draws the next token of every generating (not scored) sequence in `order`, on the
    /// matmul pool: a full-vocabulary softmax per sequence is the largest cost left
    /// outside the forward pass. Each sampler only sees its own row, so the result does
    /// not depend on the threads.
    fn sample_all(&mut self, order: &[SeqId], logits: &[candle_core::Tensor]) -> Result<HashMap<SeqId, SampledToken>> {
        let wanted: HashMap<SeqId, usize> = order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let mut jobs = Vec::new();
        for (id, s) in self.seqs.iter_mut() {
            if let Some(&i) = wanted.get(id) {
                if s.forced == 0 {
                    let row: Vec<f32> = logits[i].squeeze(0)?.to_vec1()?;
                    jobs.push(std::sync::Mutex::new((*id, &mut s.sampler, row, None)));
                }
            }
        }
        crate::kernels::pool::pool().run(jobs.len(), 1, &|range: std::ops::Range<usize>| {
            for j in range {
                let mut job = jobs[j].lock().expect("sampling job");
                let (_, sampler, row, out) = &mut *job;
                *out = Some(sampler.sample(row));
            }
        });
        Ok(jobs
            .into_iter()
            .filter_map(|j| {
                let (id, _, _, tok) = j.into_inner().expect("sampling job");
                tok.map(|t| (id, t))
            })
            .collect())
    }

    /// Keeps a copy of a freshly prefilled prompt's KV for later requests.
    fn remember_prefix(&mut self, id: SeqId) -> Result<()> {
        let budget = self.cfg.prefix_cache_bytes;
        let per_token = self.model.config().kv_bytes_per_token().max(1);
        let prompt: Vec<u32> = {
            let s = &self.seqs[&id];
            s.tokens[..s.prompt_len].to_vec()
        };
        let Some(clock) = self.prefix.admit(&prompt, per_token, budget) else {
            return Ok(());
        };
        let cache_seq = self.next_seq_id();
        self.model.copy_prefix(id, cache_seq, prompt.len())?;
        let freed = self.prefix.insert(cache_seq, prompt, clock, per_token, budget);
        if !freed.is_empty() {
            self.model.free(freed);
        }
        Ok(())
    }

    /// Prompt positions kept by the prefix cache.
    pub fn prefix_cache_tokens(&self) -> usize {
        self.prefix.tokens()
    }

    /// Stops a sequence and frees its cache; returns false if it was not there.
    pub fn cancel(&mut self, id: SeqId) -> bool {
        let known = self.seqs.remove(&id).is_some();
        self.waiting.retain(|&s| s != id);
        self.running.retain(|&s| s != id);
        if known {
            self.model.free(vec![id]);
        }
        known
    }

    pub fn max_running(&self) -> usize {
        self.cfg.max_running
    }
    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }
    pub fn num_running(&self) -> usize {
        self.running.len()
    }
    /// Positions held in KV caches across all sequences (all ranks together hold one copy
    /// per rank of their own heads).
    pub fn cached_tokens(&self) -> usize {
        self.seqs.values().map(|s| s.cached).sum()
    }

    /// One iteration: prefill newly admitted sequences and decode one token for every
    /// running one, in one forward pass. Returns the events of this step.
    pub fn step(&mut self) -> Result<Vec<Event>> {
        let started = Instant::now();
        let mut chunks = Vec::new();
        let mut budget = self.cfg.max_batch_tokens;
        for &id in &self.running {
            let s = &self.seqs[&id];
            chunks.push(Chunk {
                seq: id,
                tokens: s.tokens[s.cached..].to_vec(),
                start_pos: s.cached,
                all_logits: false,
                tail_logits: 0,
            });
            budget = budget.saturating_sub(1);
        }
        let decode_tokens = chunks.len();
        let mut admitted = Vec::new();
        // Positions reserved by running sequences: what they hold plus what they may still generate.
        let mut reserved: usize =
            self.running.iter().map(|id| &self.seqs[id]).map(|s| s.prompt_len + s.max_tokens).sum();
        let kv_limit = self.kv_budget_tokens();
        while let Some(&id) = self.waiting.front() {
            let need = self.seqs[&id].tokens.len();
            let reserve = self.seqs[&id].prompt_len + self.seqs[&id].max_tokens;
            let first = chunks.is_empty();
            if self.running.len() + admitted.len() >= self.cfg.max_running
                || (!first && need > budget)
                || kv_limit.is_some_and(|limit| reserved + reserve > limit)
            {
                break;
            }
            reserved += reserve;
            self.waiting.pop_front();
            let s = &self.seqs[&id];
            // A scored sequence needs no pass over its last forced token: only the logits
            // before each forced token.
            let end = s.tokens.len() - usize::from(s.forced > 0);
            chunks.push(Chunk {
                seq: id,
                tokens: s.tokens[s.cached..end].to_vec(),
                start_pos: s.cached,
                all_logits: false,
                tail_logits: s.forced,
            });
            budget = budget.saturating_sub(need);
            admitted.push(id);
        }
        if chunks.is_empty() {
            return Ok(Vec::new());
        }
        let prefill_tokens: usize = chunks[decode_tokens..].iter().map(|c| c.tokens.len()).sum();
        let order: Vec<SeqId> = chunks.iter().map(|c| c.seq).collect();
        let logits = self.model.forward(chunks)?;
        for &id in &admitted {
            self.remember_prefix(id)?;
        }
        self.running.extend(admitted);

        let mut sampled = self.sample_all(&order, &logits)?;
        let mut events = Vec::with_capacity(order.len());
        let mut finished = Vec::new();
        let ctx = self.context_length();
        for (id, logits) in order.into_iter().zip(logits) {
            let s = self.seqs.get_mut(&id).expect("running sequence");
            if s.forced > 0 {
                let rows: Vec<Vec<f32>> = logits.to_vec2()?;
                let first = s.tokens.len() - s.forced;
                for (row, &tok) in rows.iter().zip(&s.tokens[first..]) {
                    let token = s.sampler.score(row, tok);
                    let text = s.decoder.push(&*self.tokenizer, tok);
                    events.push(Event::Token { seq: id, token, text });
                }
                let tail = s.decoder.finish(&*self.tokenizer);
                s.cached = s.tokens.len() - 1;
                events.push(Event::Finished {
                    seq: id,
                    reason: FinishReason::Stop,
                    text: tail,
                    prompt_tokens: s.prompt_len,
                    cached_tokens: s.reused,
                    generated_tokens: 0,
                });
                finished.push(id);
                continue;
            }
            s.cached = s.tokens.len();
            let tok = sampled.remove(&id).expect("sampled with the others");
            s.tokens.push(tok.id);
            let is_eos = !s.ignore_eos && self.tokenizer.eos_ids().contains(&tok.id);
            let mut reason = None;
            let mut text = String::new();
            if is_eos {
                reason = Some(FinishReason::Stop);
            } else {
                let piece = s.decoder.push(&*self.tokenizer, tok.id);
                let (emit, stop) = s.stops.push(&piece);
                text = emit;
                if stop.is_some() {
                    reason = Some(FinishReason::Stop);
                }
            }
            if reason.is_none() && (s.generated() >= s.max_tokens || s.tokens.len() >= ctx) {
                reason = Some(FinishReason::Length);
            }
            events.push(Event::Token { seq: id, token: tok, text });
            if let Some(reason) = reason {
                let tail = if reason == FinishReason::Length || is_eos {
                    let rest = s.decoder.finish(&*self.tokenizer);
                    let (emit, _) = s.stops.push(&rest);
                    emit + &s.stops.flush()
                } else {
                    String::new()
                };
                events.push(Event::Finished {
                    seq: id,
                    reason,
                    text: tail,
                    prompt_tokens: s.prompt_len,
                    cached_tokens: s.reused,
                    generated_tokens: s.generated(),
                });
                finished.push(id);
            }
        }
        if !finished.is_empty() {
            self.running.retain(|id| !finished.contains(id));
            for id in &finished {
                self.seqs.remove(id);
            }
            self.model.free(finished);
        }
        self.last_step = StepStats { prefill_tokens, decode_tokens, elapsed: started.elapsed() };
        Ok(events)
    }

    /// Runs one request to completion alone (CLI, tests). `on_text` sees each piece.
    pub fn generate(&mut self, req: GenerateRequest, mut on_text: impl FnMut(&str)) -> Result<Generation> {
        let id = self.add(req)?;
        let mut out = Generation::default();
        while self.seqs.contains_key(&id) {
            for ev in self.step()? {
                match ev {
                    Event::Token { seq, token, text } if seq == id => {
                        out.tokens.push(token);
                        on_text(&text);
                        out.text.push_str(&text);
                    }
                    Event::Finished { seq, reason, text, .. } if seq == id => {
                        on_text(&text);
                        out.text.push_str(&text);
                        out.finish_reason = Some(reason);
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }
}
