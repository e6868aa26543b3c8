//! What a caller hands the engine (a [`GenerateRequest`], an [`EngineConfig`]) and what
//! comes back (each step's [`Event`]s, or a whole [`Generation`]).

use std::sync::Arc;

use serde::Serialize;

use crate::constraint::Grammar;
use crate::nn::SeqId;
use crate::sampling::{SampledToken, SamplingParams};
use crate::train::SoftPrompt;

/// The token id that stands for a soft prompt's virtual token in a sequence's tokens
/// inside the engine (never a real id: no vocabulary has `u32::MAX` entries). The engine
/// keeps these positions in its token lists so that positions, the KV cache and the
/// prefix cache's keys line up; the embedding lookup ignores them (their rows are
/// overwritten with the soft prompt's), and they are never sampled, detokenized, used
/// by the repetition penalty or reported as a token.
pub const VIRTUAL_TOKEN: u32 = u32::MAX;

/// A soft prompt as the engine serves it: the rows and the id the prefix cache knows
/// them by. Sequences whose soft prompts have the same id and the same rows share cached
/// prompt KV; any other difference (another id, other rows, none) never does.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedSoftPrompt {
    pub id: String,
    pub soft_prompt: SoftPrompt,
}

impl NamedSoftPrompt {
    pub fn new(id: impl Into<String>, soft_prompt: SoftPrompt) -> Arc<Self> {
        Arc::new(Self { id: id.into(), soft_prompt })
    }

    /// The same soft prompt: the same id and bit for bit the same rows.
    pub fn same_as(&self, other: &Self) -> bool {
        let (a, b) = (&self.soft_prompt, &other.soft_prompt);
        std::ptr::eq(self, other)
            || (self.id == other.id
                && a.hidden_size == b.hidden_size
                && a.embeddings.len() == b.embeddings.len()
                && a.embeddings.iter().zip(&b.embeddings).all(|(x, y)| x.to_bits() == y.to_bits()))
    }
}

/// Whether two sequences' soft prompts (or the lack of one) are the same.
pub(crate) fn same_soft_prompt(a: Option<&Arc<NamedSoftPrompt>>, b: Option<&Arc<NamedSoftPrompt>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.same_as(b),
        _ => false,
    }
}

/// What to generate for one sequence.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt_tokens: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// Keep going past end-of-sequence tokens (benchmarks).
    pub ignore_eos: bool,
    /// Tokens to score instead of generating: when not empty the sequence is prefilled with
    /// the prompt and these tokens in one pass (prefix cache and batching as usual), one
    /// `Token` event per forced token reports its logprob after the prompt and the tokens
    /// before it, then it finishes (`Stop`) without generating; `max_tokens`, `stop` and the
    /// sampling draw are not used.
    pub forced: Vec<u32>,
    /// Output constraint (JSON schema, regex, choice, grammar), compiled beforehand with
    /// [`crate::Constraints::compile`]: each step masks the tokens it cannot take, at any
    /// temperature. The sequence finishes with `Stop` once the output is complete and only
    /// an end-of-sequence token may follow, and with `Length` if `max_tokens` (or a limit
    /// of the grammar) comes first; `stop` sequences are not applied, as they could cut a
    /// valid output short.
    pub constraint: Option<Arc<Grammar>>,
    /// A soft prompt (prompt tuning) to put in the prompt: its `k` virtual tokens go where
    /// [`crate::train::splice_point`] says (right after a leading BOS, else first), as in
    /// training, with its rows as their input embeddings. It must have been trained on the
    /// loaded model (else [`crate::EngineError::SoftPrompt`]) and be as wide as its hidden
    /// size. The virtual tokens are real positions: they take KV cache entries and RoPE
    /// positions, count towards the context and the KV budget, and are counted in
    /// `Event::Finished::prompt_tokens` (and `cached_tokens` when they came from the prefix
    /// cache); they are never reported as tokens.
    pub soft_prompt: Option<Arc<NamedSoftPrompt>>,
}

impl GenerateRequest {
    pub fn greedy(prompt_tokens: Vec<u32>, max_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            max_tokens,
            sampling: SamplingParams { temperature: 0.0, ..Default::default() },
            stop: Vec::new(),
            ignore_eos: false,
            forced: Vec::new(),
            constraint: None,
            soft_prompt: None,
        }
    }

    /// Scores `forced` as the continuation of `prompt` (likelihood labelling).
    pub fn score(prompt_tokens: Vec<u32>, forced: Vec<u32>) -> Self {
        Self { forced, ..Self::greedy(prompt_tokens, 0) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// `max_tokens` reached, or the context is full.
    Length,
    /// A stop sequence or an end-of-sequence token.
    Stop,
    Cancelled,
}

/// Who a sequence serves, which decides its share of each step (module docs of
/// [`crate::engine`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    /// Interactive and API traffic: first in every step.
    #[default]
    Api = 0,
    /// Sweeps (evals, example selection, batch jobs): what API traffic leaves.
    Batch = 1,
}

#[derive(Debug, Clone, Serialize)]
pub enum Event {
    /// A chunk of the prompt was prefilled: `done` of `total` prompt positions are in the
    /// cache (only sent while a prompt takes more than one step).
    Prefill { seq: SeqId, done: usize, total: usize },
    /// One generated token and the text it completes (possibly empty: text that may still
    /// be half a character or the start of a stop sequence is held back).
    Token { seq: SeqId, token: SampledToken, text: String },
    /// The sequence is done; `text` is whatever was still held back.
    Finished {
        seq: SeqId,
        reason: FinishReason,
        text: String,
        /// Prompt positions: the prompt's tokens plus the soft prompt's virtual tokens, if
        /// any (an OpenAI-style `usage.prompt_tokens` counts them too: the model attended
        /// to them like to any prompt token).
        prompt_tokens: usize,
        /// Prompt positions (virtual tokens included) whose KV came from the prefix cache instead of being prefilled.
        cached_tokens: usize,
        generated_tokens: usize,
    },
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The per-step token budget: most prompt + decode tokens in one forward pass. A longer
    /// prompt prefills in chunks over several steps, so this also bounds how long any one
    /// step (and so a newly arrived request's wait, or a cancellation) takes.
    pub max_batch_tokens: usize,
    /// Most batch-priority tokens in a step while API work is waiting or running (the rest
    /// of the batch work pauses, KV kept).
    pub batch_tokens_with_api: usize,
    /// Most sequences decoding together.
    pub max_running: usize,
    /// KV bytes the prefix cache may keep (0 = off).
    pub prefix_cache_bytes: usize,
    /// KV bytes running sequences may use; a sequence is admitted only when its prompt
    /// plus `max_tokens` fits beside the reservations of those running (0 = unlimited).
    pub kv_budget_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            // Measured on a 2-core box (`studio bench --step-costs`): gemma3-270m prefills
            // ~9 ms/token at the start of a prompt and ~21 ms/token 8k tokens in, so a
            // 32-token step stays under ~0.7 s even deep into a long prompt (a request that
            // arrives meanwhile waits at most that), and small chunks cost it no prefill
            // throughput at short context (its kernels gain nothing from more rows).
            max_batch_tokens: 32,
            // Each batch row costs an API step ~10 ms on that box; two keep API latency
            // within ~2x while an eval runs, and the eval still moves.
            batch_tokens_with_api: 2,
            max_running: 64,
            prefix_cache_bytes: 512 << 20,
            kv_budget_bytes: 4 << 30,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Generation {
    pub tokens: Vec<SampledToken>,
    pub text: String,
    pub finish_reason: Option<FinishReason>,
}

impl Generation {
    pub fn token_ids(&self) -> Vec<u32> {
        self.tokens.iter().map(|t| t.id).collect()
    }
}
