//! Batch-native generation over a [`ShardedModel`].
//!
//! [`Engine::step`] is one scheduler iteration: it admits waiting sequences, then spends a
//! per-step token budget (`EngineConfig::max_batch_tokens`) on one batched forward pass
//! over sequences of different lengths: a decode row for every running sequence and a
//! chunk of each prompt still prefilling. A long prompt so prefills over several steps,
//! between which other sequences decode and cancellation takes effect (chunked prefill).
//! A server's continuous batching loop calls `add`/`cancel` between steps and forwards
//! the events.
//!
//! Scheduling policy, per step:
//! 1. [`Priority::Api`] sequences first: their decode rows, then their prefill chunks,
//!    shortest remaining prompt first (a short request is not queued behind a long one).
//! 2. [`Priority::Batch`] sequences (evals, example selection) fill what is left: decode
//!    rows least recently advanced first, then prefill chunks. While any `Api` sequence is
//!    waiting or running, batch work gets at most `EngineConfig::batch_tokens_with_api`
//!    tokens a step; the rest of it is paused with its KV kept, and resumes at full speed
//!    when the API traffic is gone. (Pausing costs nothing; recomputing a preempted
//!    sequence's KV would cost its whole prefill again.)
//!
//! Identical prompts added while the first of them is still waiting or prefilling (the
//! `n` samples of one prompt, or repeated prompts) are prefilled once: the others follow
//! it and fork its KV and last logits when its prefill completes.
//!
//! A soft prompt ([`GenerateRequest::soft_prompt`]) puts `k` virtual tokens in a
//! sequence's prompt: they stand in its token list as [`VIRTUAL_TOKEN`], and the chunks
//! that cover them carry the soft prompt's rows as [`crate::nn::InputEmbeddings`], which
//! the model writes over the looked-up embeddings. Prefix reuse and following a twin
//! need the same soft prompt as well as the same tokens.

mod prefix_cache;
pub mod request;
pub mod stream;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::prefix_cache::PrefixCache;
use self::stream::{IncrementalDecoder, StopMatcher};
use crate::constraint::{ConstraintError, Constraints, Guide};
use crate::error::{EngineError, Result};
use crate::model::ShardedModel;
use crate::nn::{Chunk, InputEmbeddings, SeqId};
use crate::sampling::{SampledToken, Sampler};
use crate::tokenizer::Tokenizer;

use self::request::same_soft_prompt;
pub use self::request::{
    EngineConfig, Event, FinishReason, GenerateRequest, Generation, NamedSoftPrompt, Priority, VIRTUAL_TOKEN,
};

#[cfg(test)]
mod tests;

/// Where a sequence's soft prompt sits: its virtual tokens are the positions
/// `start..start + k` of the prompt.
struct VirtualTokens {
    soft_prompt: Arc<NamedSoftPrompt>,
    start: usize,
}

impl VirtualTokens {
    /// The rows for a chunk covering positions `range`, if it covers any virtual token.
    fn embeddings_for(&self, range: std::ops::Range<usize>) -> Option<InputEmbeddings> {
        let sp = &self.soft_prompt.soft_prompt;
        let lo = range.start.max(self.start);
        let hi = range.end.min(self.start + sp.virtual_tokens());
        (lo < hi).then(|| InputEmbeddings {
            first: lo - range.start,
            values: sp.embeddings[(lo - self.start) * sp.hidden_size..(hi - self.start) * sp.hidden_size].to_vec(),
        })
    }
}

struct Sequence {
    /// Prompt (with [`VIRTUAL_TOKEN`] at its virtual tokens), forced and generated tokens.
    tokens: Vec<u32>,
    /// Prompt positions, virtual tokens included.
    prompt_len: usize,
    virtual_tokens: Option<VirtualTokens>,
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
    priority: Priority,
    /// A sequence with the same prompt, still prefilling: this one forks its KV when it
    /// is done instead of prefilling the prompt again.
    leader: Option<SeqId>,
    /// The step that last advanced it (paused batch work resumes oldest first).
    last_run: u64,
    /// Its output constraint's state: masks each draw, follows each token.
    guide: Option<Guide>,
}

impl Sequence {
    fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }
    /// End of what the next forward passes must cover: everything, except a scored
    /// sequence's last forced token (only the logits before each forced token are needed).
    fn end(&self) -> usize {
        self.tokens.len() - usize::from(self.forced > 0)
    }
    /// Positions still to compute before its next logits.
    fn remaining(&self) -> usize {
        self.end() - self.cached
    }
    fn decoding(&self) -> bool {
        self.cached >= self.prompt_len && self.forced == 0
    }
    fn soft_prompt(&self) -> Option<&Arc<NamedSoftPrompt>> {
        self.virtual_tokens.as_ref().map(|v| &v.soft_prompt)
    }
}

/// A step that failed. Its sequences (those it prefilled or decoded) are gone from the
/// engine and their KV caches freed, so the caller fails exactly those; sequences still
/// waiting were not part of it and stay queued. The engine is usable afterwards.
#[derive(Debug, thiserror::Error)]
#[error("engine step failed: {source}")]
pub struct StepError {
    /// The step's sequences, which will produce no more events.
    pub failed: Vec<SeqId>,
    pub source: EngineError,
}

impl From<StepError> for EngineError {
    fn from(e: StepError) -> Self {
        e.source
    }
}

/// Timing of the last step, for benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepStats {
    pub prefill_tokens: usize,
    pub decode_tokens: usize,
    /// Batch-priority tokens in this step (the rest were API traffic).
    pub batch_tokens: usize,
    pub elapsed: Duration,
    /// Of `elapsed`, the time drawing tokens (with the constrained sequences' masks).
    pub sampling: Duration,
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
    steps: u64,
    /// The vocabulary's token trie and compiled grammars (built on first use).
    constraints: Arc<Constraints>,
    pub last_step: StepStats,
}

impl Engine {
    pub fn new(model: ShardedModel, tokenizer: Tokenizer, cfg: EngineConfig) -> Self {
        let tokenizer = Arc::new(tokenizer);
        Self {
            model,
            constraints: Arc::new(Constraints::new(tokenizer.clone())),
            tokenizer,
            cfg,
            next_id: 1,
            waiting: VecDeque::new(),
            running: Vec::new(),
            seqs: HashMap::new(),
            prefix: PrefixCache::default(),
            steps: 0,
            last_step: StepStats::default(),
        }
    }

    pub fn model(&self) -> &ShardedModel {
        &self.model
    }
    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }
    /// Compiles output constraints for this model's vocabulary (share it with the threads
    /// that validate requests: compiling is CPU work to keep off the engine's thread).
    pub fn constraints(&self) -> &Arc<Constraints> {
        &self.constraints
    }
    pub fn context_length(&self) -> usize {
        self.model.config().context_length()
    }

    /// Queues an API-priority sequence; it is prefilled by the next steps.
    pub fn add(&mut self, req: GenerateRequest) -> Result<SeqId> {
        self.add_with(req, Priority::Api)
    }

    /// Queues a sequence at `priority` (see the module docs for what that decides).
    pub fn add_with(&mut self, req: GenerateRequest, priority: Priority) -> Result<SeqId> {
        req.sampling.validate()?;
        if let Some(sp) = &req.soft_prompt {
            self.check_soft_prompt(sp)?;
        }
        let virtual_count = req.soft_prompt.as_ref().map_or(0, |sp| sp.soft_prompt.virtual_tokens());
        let prompt_len = req.prompt_tokens.len() + virtual_count;
        let limit = self.context_length();
        if prompt_len == 0 {
            return Err(EngineError::EmptyPrompt);
        }
        if prompt_len + req.forced.len() >= limit {
            return Err(EngineError::PromptTooLong { got: prompt_len + req.forced.len(), limit });
        }
        let forced = req.forced.len();
        let max_tokens = if forced > 0 { forced } else { req.max_tokens };
        let reserve = prompt_len + max_tokens;
        if let Some(limit) = self.kv_budget_tokens() {
            if reserve > limit {
                return Err(EngineError::KvBudget { tokens: reserve, limit });
            }
        }
        let id = self.next_seq_id();
        // The virtual tokens go where training put them (after a leading BOS).
        let start = crate::train::splice_point(&req.prompt_tokens, self.tokenizer.bos_id());
        let virtual_tokens = req.soft_prompt.clone().map(|soft_prompt| VirtualTokens { soft_prompt, start });
        let prompt: Vec<u32> = req.prompt_tokens[..start]
            .iter()
            .copied()
            .chain(std::iter::repeat_n(VIRTUAL_TOKEN, virtual_count))
            .chain(req.prompt_tokens[start..].iter().copied())
            .collect();
        let leader = if req.forced.is_empty() {
            self.prefilling_twin(&prompt, req.soft_prompt.as_ref(), priority)
        } else {
            None
        };
        let seq = Sequence {
            // The sampler's repetition penalty and the decoder's context see real tokens only.
            sampler: Sampler::new(req.sampling.clone(), &req.prompt_tokens),
            decoder: IncrementalDecoder::new(&req.prompt_tokens),
            // A constrained output ends where its grammar does (see `GenerateRequest::constraint`).
            stops: StopMatcher::new(if req.constraint.is_some() { Vec::new() } else { req.stop.clone() }),
            guide: if req.forced.is_empty() { req.constraint.as_ref().map(|g| g.start()) } else { None },
            prompt_len,
            virtual_tokens,
            tokens: prompt.into_iter().chain(req.forced).collect(),
            max_tokens,
            ignore_eos: req.ignore_eos,
            cached: 0,
            reused: 0,
            forced,
            priority,
            leader,
            last_run: 0,
        };
        self.seqs.insert(id, seq);
        if leader.is_none() {
            self.reuse_prefix(id)?;
        }
        self.waiting.push_back(id);
        Ok(id)
    }

    /// A sequence with exactly this prompt and soft prompt that has not finished
    /// prefilling it (and follows nobody itself), at the same priority.
    fn prefilling_twin(
        &self,
        prompt: &[u32],
        soft_prompt: Option<&Arc<NamedSoftPrompt>>,
        priority: Priority,
    ) -> Option<SeqId> {
        self.waiting.iter().chain(&self.running).copied().find(|id| {
            let s = &self.seqs[id];
            s.leader.is_none()
                && s.forced == 0
                && s.priority == priority
                && s.cached < s.prompt_len
                && s.tokens[..s.prompt_len] == *prompt
                && same_soft_prompt(s.soft_prompt(), soft_prompt)
        })
    }

    /// A soft prompt must be for the loaded model, as wide as its hidden size, and finite.
    fn check_soft_prompt(&self, sp: &NamedSoftPrompt) -> Result<()> {
        let model = &self.model.files.name;
        sp.soft_prompt.check_model(model).map_err(|source| EngineError::SoftPrompt { id: sp.id.clone(), source })?;
        let want = self.model.config().hidden_size();
        if sp.soft_prompt.hidden_size != want {
            return Err(EngineError::SoftPromptWidth {
                id: sp.id.clone(),
                got: sp.soft_prompt.hidden_size,
                want,
                model: model.clone(),
            });
        }
        // A NaN would not fail anywhere: it would only make every logit after it NaN.
        if let Some(i) = sp.soft_prompt.embeddings.iter().position(|v| !v.is_finite()) {
            return Err(EngineError::SoftPromptNotFinite { id: sp.id.clone(), row: i / want });
        }
        Ok(())
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
        if let Some((src, n)) = self.prefix.lookup(s.soft_prompt(), &s.tokens[..s.prompt_len]) {
            self.model.copy_prefix(src, id, n)?;
            let s = self.seqs.get_mut(&id).expect("just added");
            s.cached = n;
            s.reused = n;
        }
        Ok(())
    }

    /// Draws the next token of every generating (not scored) sequence in `order`, on the
    /// matmul pool: a full-vocabulary softmax per sequence (and a constrained sequence's
    /// token mask) is the largest cost left outside the forward pass. Each sampler only
    /// sees its own row, so the result does not depend on the threads. A constrained
    /// sequence whose mask failed gets its error instead of a token.
    fn sample_all(
        &mut self,
        order: &[(SeqId, usize)],
        logits: &[candle_core::Tensor],
    ) -> Result<HashMap<SeqId, Result<SampledToken, ConstraintError>>> {
        type Job<'a> =
            (SeqId, &'a mut Sampler, Option<&'a mut Guide>, Vec<f32>, Option<Result<SampledToken, ConstraintError>>);
        let wanted: HashMap<SeqId, usize> = order.iter().copied().collect();
        let mut jobs: Vec<std::sync::Mutex<Job>> = Vec::new();
        for (id, s) in self.seqs.iter_mut() {
            if let Some(&i) = wanted.get(id) {
                if s.forced == 0 {
                    let row: Vec<f32> = logits[i].squeeze(0)?.to_vec1()?;
                    jobs.push(std::sync::Mutex::new((*id, &mut s.sampler, s.guide.as_mut(), row, None)));
                }
            }
        }
        crate::kernels::pool::pool().run(jobs.len(), 1, &|range: std::ops::Range<usize>| {
            for j in range {
                let mut job = jobs[j].lock().expect("sampling job");
                let (_, sampler, guide, row, out) = &mut *job;
                *out = Some(match guide {
                    Some(g) => {
                        let mut scores = row.clone();
                        g.mask(&mut scores).map(|()| sampler.sample_with(row, &scores))
                    }
                    None => Ok(sampler.sample(row)),
                });
            }
        });
        Ok(jobs
            .into_iter()
            .filter_map(|j| {
                let (id, _, _, _, tok) = j.into_inner().expect("sampling job");
                tok.map(|t| (id, t))
            })
            .collect())
    }

    /// Keeps a copy of a freshly prefilled prompt's KV for later requests.
    fn remember_prefix(&mut self, id: SeqId) -> Result<()> {
        let budget = self.cfg.prefix_cache_bytes;
        let per_token = self.model.config().kv_bytes_per_token().max(1);
        let (soft_prompt, prompt): (Option<Arc<NamedSoftPrompt>>, Vec<u32>) = {
            let s = &self.seqs[&id];
            (s.soft_prompt().cloned(), s.tokens[..s.prompt_len].to_vec())
        };
        let Some(clock) = self.prefix.admit(soft_prompt.as_ref(), &prompt, per_token, budget) else {
            return Ok(());
        };
        let cache_seq = self.next_seq_id();
        self.model.copy_prefix(id, cache_seq, prompt.len())?;
        let freed = self.prefix.insert(cache_seq, soft_prompt, prompt, clock, per_token, budget);
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
            // Its followers prefill for themselves now: the first of them leads the rest.
            let mut followers: Vec<SeqId> =
                self.seqs.iter().filter(|(_, s)| s.leader == Some(id)).map(|(&f, _)| f).collect();
            followers.sort_unstable();
            if let Some((&first, rest)) = followers.split_first() {
                self.seqs.get_mut(&first).expect("follower").leader = None;
                for f in rest {
                    self.seqs.get_mut(f).expect("follower").leader = Some(first);
                }
            }
            self.release_if_idle();
        }
        known
    }

    /// Drops every sequence and the prefix cache, freeing their KV on every rank: a fresh
    /// state after a failure left this one in doubt. Returns the sequences that were live.
    pub fn reset(&mut self) -> Vec<SeqId> {
        let live: Vec<SeqId> = self.seqs.drain().map(|(id, _)| id).collect();
        self.waiting.clear();
        self.running.clear();
        let mut free = live.clone();
        free.extend(self.prefix.clear());
        self.model.free(free);
        live
    }

    /// Removes these sequences (wherever they are) and frees their caches; returns those
    /// that were there.
    fn drop_seqs(&mut self, ids: &[SeqId]) -> Vec<SeqId> {
        let gone: Vec<SeqId> = ids.iter().copied().filter(|id| self.seqs.remove(id).is_some()).collect();
        self.waiting.retain(|id| !gone.contains(id));
        self.running.retain(|id| !gone.contains(id));
        if !gone.is_empty() {
            self.model.free(gone.clone());
        }
        gone
    }

    /// Once nothing runs or waits, hands the memory the finished sequences' caches and the
    /// steps' scratch tensors used back to the OS: the allocator would otherwise keep it
    /// (and the server's RSS at its peak) for good.
    fn release_if_idle(&mut self) {
        if !self.has_work() {
            crate::memory::release_free_memory();
        }
    }

    /// Makes rank `rank` fail (with an error or a panic) inside the next forward pass; see
    /// [`ShardedModel::inject_fault`].
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn inject_fault(&self, rank: usize, kind: crate::model::Fault) {
        self.model.inject_fault(rank, kind);
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
    /// Sequences at `priority`, waiting or running.
    pub fn num_live(&self, priority: Priority) -> usize {
        self.seqs.values().filter(|s| s.priority == priority).count()
    }
    /// Positions held in KV caches across all sequences (all ranks together hold one copy
    /// per rank of their own heads).
    pub fn cached_tokens(&self) -> usize {
        self.seqs.values().map(|s| s.cached).sum()
    }

    /// Moves waiting sequences into the running set while there is room: API work first,
    /// each only if its prompt plus `max_tokens` fits beside the KV reservations of those
    /// running. Followers whose leader has moved on fork its KV here.
    fn admit(&mut self) -> Result<()> {
        let kv_limit = self.kv_budget_tokens();
        let reserve = |s: &Sequence| s.prompt_len + s.max_tokens;
        let mut reserved: usize = self.running.iter().map(|id| reserve(&self.seqs[id])).sum();
        for class in [Priority::Api, Priority::Batch] {
            if class == Priority::Api {
                // API work waiting while batch work fills every place: the newest batch
                // sequences step back to the waiting line (KV kept) to make room.
                let api_waiting = self.waiting.iter().filter(|id| self.seqs[id].priority == Priority::Api).count();
                let free = self.cfg.max_running.saturating_sub(self.running.len());
                for _ in free..api_waiting {
                    let Some(pos) = self.running.iter().rposition(|id| self.seqs[id].priority == Priority::Batch)
                    else {
                        break;
                    };
                    let id = self.running.remove(pos);
                    reserved -= reserve(&self.seqs[&id]);
                    self.waiting.push_front(id);
                }
            }
            let mut i = 0;
            while i < self.waiting.len() && self.running.len() < self.cfg.max_running {
                let id = self.waiting[i];
                let s = &self.seqs[&id];
                if s.priority != class {
                    i += 1;
                    continue;
                }
                if kv_limit.is_some_and(|limit| reserved + reserve(s) > limit) {
                    // Keep arrival order within a class: nothing behind it jumps ahead.
                    break;
                }
                reserved += reserve(s);
                self.waiting.remove(i);
                self.running.push(id);
                self.follow_or_fork(id)?;
            }
        }
        Ok(())
    }

    /// A follower whose leader is past its prefill copies the leader's prompt KV but for
    /// the last position (so its own next chunk yields its first logits); one whose leader
    /// is gone prefills for itself, from the prefix cache if it can.
    fn follow_or_fork(&mut self, id: SeqId) -> Result<()> {
        let Some(leader) = self.seqs[&id].leader else { return Ok(()) };
        let prompt_len = self.seqs[&id].prompt_len;
        match self.seqs.get(&leader).map(|l| l.cached) {
            Some(done) if done < prompt_len => Ok(()),
            Some(_) => {
                self.model.copy_prefix(leader, id, prompt_len - 1)?;
                let s = self.seqs.get_mut(&id).expect("admitted");
                s.leader = None;
                s.cached = prompt_len - 1;
                Ok(())
            }
            None => {
                self.seqs.get_mut(&id).expect("admitted").leader = None;
                self.reuse_prefix(id)
            }
        }
    }

    /// This step's work: `(sequence, tokens to compute)`, in the policy's order (module
    /// docs). Followers wait for their leader; paused batch work is left out.
    fn plan(&self) -> Vec<(SeqId, usize)> {
        let mut budget = self.cfg.max_batch_tokens.max(1);
        let api_live = self.seqs.values().any(|s| s.priority == Priority::Api);
        let mut plan = Vec::new();
        for class in [Priority::Api, Priority::Batch] {
            let held = class == Priority::Batch && api_live;
            let mut left = if held { budget.min(self.cfg.batch_tokens_with_api) } else { budget };
            let mut used = 0;
            let mine: Vec<SeqId> = self
                .running
                .iter()
                .copied()
                .filter(|id| self.seqs[id].priority == class && self.seqs[id].leader.is_none())
                .collect();
            let mut decodes: Vec<SeqId> = mine.iter().copied().filter(|id| self.seqs[id].decoding()).collect();
            decodes.sort_by_key(|id| (self.seqs[id].last_run, *id));
            let mut prefills: Vec<SeqId> = mine.iter().copied().filter(|id| !self.seqs[id].decoding()).collect();
            prefills.sort_by_key(|id| (self.seqs[id].remaining(), *id));
            for id in decodes {
                if left == 0 {
                    break;
                }
                plan.push((id, 1));
                left -= 1;
                used += 1;
            }
            if !held {
                // However many rows decode, prompts keep a quarter of the budget: new
                // requests are never starved by running ones.
                left = left.max((self.cfg.max_batch_tokens / 4).max(1));
            }
            for id in prefills {
                if left == 0 {
                    break;
                }
                let s = &self.seqs[&id];
                let remaining = s.remaining();
                let mut take = remaining.min(left);
                if take < remaining && s.forced > 0 {
                    // A scored sequence's last chunk must hold every forced position (their
                    // logits come out of one pass); over budget if it has to, as it is bounded.
                    take = take.min(remaining - s.forced);
                    if take == 0 {
                        take = remaining;
                    }
                }
                plan.push((id, take));
                left = left.saturating_sub(take);
                used += take;
            }
            budget = budget.saturating_sub(used);
        }
        plan
    }

    /// One iteration: admit what fits, then one forward pass over this step's decode rows
    /// and prefill chunks. Returns the events of this step.
    ///
    /// On failure (a rank's error or panic included) the step's sequences are dropped and
    /// freed and named in the [`StepError`]; the rest of the engine is untouched.
    pub fn step(&mut self) -> Result<Vec<Event>, StepError> {
        let mut order = Vec::new();
        match self.try_step(&mut order) {
            Ok(events) => Ok(events),
            Err(source) => {
                let failed = self.drop_seqs(&order);
                self.release_if_idle();
                Err(StepError { failed, source })
            }
        }
    }

    /// The step; `order` gets its sequences before anything can fail.
    fn try_step(&mut self, order: &mut Vec<SeqId>) -> Result<Vec<Event>> {
        let started = Instant::now();
        self.steps += 1;
        self.admit()?;
        let plan = self.plan();
        if plan.is_empty() {
            self.last_step = StepStats::default();
            return Ok(Vec::new());
        }
        let mut chunks = Vec::with_capacity(plan.len());
        let (mut prefill_tokens, mut decode_tokens, mut batch_tokens) = (0, 0, 0);
        for &(id, take) in &plan {
            let s = &self.seqs[&id];
            let completes = s.cached + take == s.end();
            if s.decoding() {
                decode_tokens += take;
            } else {
                prefill_tokens += take;
            }
            if s.priority == Priority::Batch {
                batch_tokens += take;
            }
            let range = s.cached..s.cached + take;
            chunks.push(Chunk {
                seq: id,
                tokens: s.tokens[range.clone()].to_vec(),
                start_pos: s.cached,
                all_logits: false,
                tail_logits: if completes { s.forced } else { 0 },
                // A prompt piece that does not complete the prompt samples nothing.
                no_logits: !completes,
                embeddings: s.virtual_tokens.as_ref().and_then(|v| v.embeddings_for(range)),
            });
        }
        order.extend(plan.iter().map(|&(id, _)| id));
        let logits = self.model.forward(chunks)?;

        // Which sequences have logits to use (a prompt done, or a decode row), at which
        // row of `logits`; prompts still prefilling just advance.
        let mut events = Vec::with_capacity(plan.len());
        let mut ready: Vec<(SeqId, usize)> = Vec::new();
        for (i, &(id, take)) in plan.iter().enumerate() {
            let s = self.seqs.get_mut(&id).expect("planned sequence");
            s.last_run = self.steps;
            let was_prefilling = s.cached < s.prompt_len;
            if s.cached + take < s.end() {
                s.cached += take;
                events.push(Event::Prefill { seq: id, done: s.cached, total: s.prompt_len });
                continue;
            }
            ready.push((id, i));
            if was_prefilling {
                self.remember_prefix(id)?;
                let followers = self.fork_followers(id)?;
                order.extend(&followers);
                ready.extend(followers.into_iter().map(|f| (f, i)));
            }
        }

        let gen: Vec<(SeqId, usize)> = ready.iter().copied().filter(|(id, _)| self.seqs[id].forced == 0).collect();
        let sampling_started = Instant::now();
        let mut sampled = self.sample_all(&gen, &logits)?;
        let sampling = sampling_started.elapsed();
        let mut finished = Vec::new();
        let ctx = self.context_length();
        for (id, i) in ready {
            let s = self.seqs.get_mut(&id).expect("running sequence");
            if s.forced > 0 {
                let rows: Vec<Vec<f32>> = logits[i].to_vec2()?;
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
            let tok = match sampled.remove(&id).expect("sampled with the others") {
                Ok(tok) => tok,
                Err(e) => {
                    // The constraint hit one of its limits or has no way on: the output is
                    // incomplete, so it ends as `length`, never as a complete `stop`.
                    tracing::warn!(seq = id, "constrained sequence ends early: {e}");
                    let rest = s.decoder.finish(&*self.tokenizer);
                    events.push(Event::Finished {
                        seq: id,
                        reason: FinishReason::Length,
                        text: rest,
                        prompt_tokens: s.prompt_len,
                        cached_tokens: s.reused,
                        generated_tokens: s.generated(),
                    });
                    finished.push(id);
                    continue;
                }
            };
            s.tokens.push(tok.id);
            let eos = self.tokenizer.eos_ids().contains(&tok.id);
            // A constrained sequence only draws an end-of-sequence token where its grammar
            // may end, and ends there even with `ignore_eos`.
            let is_eos = eos && (!s.ignore_eos || s.guide.is_some());
            let mut reason = None;
            let mut text = String::new();
            let mut complete = false;
            if let Some(g) = &mut s.guide {
                match g.advance(tok.id) {
                    Ok(()) => complete = !eos && g.finished(),
                    Err(e) => {
                        tracing::warn!(seq = id, "constrained sequence ends early: {e}");
                        reason = Some(FinishReason::Length);
                    }
                }
            }
            if is_eos {
                reason = Some(FinishReason::Stop);
            } else {
                let piece = s.decoder.push(&*self.tokenizer, tok.id);
                let (emit, stop) = s.stops.push(&piece);
                text = emit;
                if stop.is_some() || complete {
                    reason = reason.or(Some(FinishReason::Stop));
                }
            }
            if reason.is_none() && (s.generated() >= s.max_tokens || s.tokens.len() >= ctx) {
                reason = Some(FinishReason::Length);
            }
            events.push(Event::Token { seq: id, token: tok, text });
            if let Some(reason) = reason {
                let tail = if reason == FinishReason::Length || is_eos || complete {
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
            self.release_if_idle();
        }
        self.last_step =
            StepStats { prefill_tokens, decode_tokens, batch_tokens, elapsed: started.elapsed(), sampling };
        Ok(events)
    }

    /// Gives every admitted follower of `leader` (whose prompt just completed) a copy of
    /// its prompt KV; they sample their first token from the leader's logits. Returns them.
    fn fork_followers(&mut self, leader: SeqId) -> Result<Vec<SeqId>> {
        let (prompt_len, reused) = {
            let l = &self.seqs[&leader];
            (l.prompt_len, l.reused)
        };
        let followers: Vec<SeqId> =
            self.running.iter().copied().filter(|id| self.seqs[id].leader == Some(leader)).collect();
        for &f in &followers {
            self.model.copy_prefix(leader, f, prompt_len)?;
            let s = self.seqs.get_mut(&f).expect("follower");
            s.leader = None;
            s.cached = prompt_len;
            s.reused = reused;
            s.last_run = self.steps;
        }
        Ok(followers)
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
