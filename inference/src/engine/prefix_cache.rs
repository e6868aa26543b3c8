//! The prefix cache: prompts seen recently, whose KV is kept (under a sequence id of its
//! own on every rank) so that a new prompt starts from a copy of the longest token prefix
//! it shares with one of them. Least recently used prompts are evicted first under a KV
//! byte budget.
//!
//! The key is a prompt's soft prompt (or none) and its tokens (with the virtual tokens'
//! placeholders in them): KV computed under one soft prompt is only ever reused under the
//! same soft prompt (same id, same rows), so a tuned template's fixed part is prefilled
//! once and never leaks into another soft prompt's sequences, or into plain ones.

use std::sync::Arc;

use super::request::{same_soft_prompt, NamedSoftPrompt};
use crate::nn::SeqId;

/// Shortest shared prefix worth reusing.
const MIN_PREFIX_REUSE: usize = 8;
/// A prompt that adds fewer new tokens than this (and under an eighth of its length) to a
/// kept one is not kept itself.
const NEAR_COPY_TOKENS: usize = 64;

/// A prompt whose KV is kept (under its own sequence id on every rank) for reuse.
struct PrefixEntry {
    cache_seq: SeqId,
    soft_prompt: Option<Arc<NamedSoftPrompt>>,
    tokens: Vec<u32>,
    last_used: u64,
}

/// The kept prompts; the engine copies and frees their KV on the model as told.
#[derive(Default)]
pub(super) struct PrefixCache {
    entries: Vec<PrefixEntry>,
    clock: u64,
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PrefixEntry {
    /// Positions it shares with a prompt under `soft_prompt`: none under another one.
    fn shared(&self, soft_prompt: Option<&Arc<NamedSoftPrompt>>, prompt: &[u32]) -> usize {
        if same_soft_prompt(self.soft_prompt.as_ref(), soft_prompt) {
            common_prefix(&self.tokens, prompt)
        } else {
            0
        }
    }
}

impl PrefixCache {
    /// Forgets every kept prompt; returns their cache sequences, to free.
    pub(super) fn clear(&mut self) -> Vec<SeqId> {
        self.entries.drain(..).map(|e| e.cache_seq).collect()
    }

    /// The kept prompt sharing the longest prefix with `prompt`, as `(its cache sequence,
    /// shared tokens)`, if it shares enough to be worth a copy; it counts as used. At least
    /// the last prompt token is always computed: its logits start generation (or score the
    /// first forced token).
    pub(super) fn lookup(
        &mut self,
        soft_prompt: Option<&Arc<NamedSoftPrompt>>,
        prompt: &[u32],
    ) -> Option<(SeqId, usize)> {
        let best = self
            .entries
            .iter_mut()
            .map(|e| (e.shared(soft_prompt, prompt).min(prompt.len() - 1), e))
            .max_by_key(|(n, _)| *n);
        if let Some((n, entry)) = best {
            if n >= MIN_PREFIX_REUSE {
                self.clock += 1;
                entry.last_used = self.clock;
                return Some((entry.cache_seq, n));
            }
        }
        None
    }

    /// Whether a freshly prefilled `prompt` is to be kept, given `per_token` KV bytes per
    /// position and a `budget` of bytes: `Some(time of use)` to [`Self::insert`] it with.
    /// Already kept (or a longer prompt that contains it): the entry is just refreshed.
    /// Nearly kept too: a few-shot template run again with a new last line shares all but
    /// a few tokens with the entry it started from. Keeping it as well would copy the
    /// whole prompt's KV before the first token and fill the budget with near-copies of
    /// one template; a later run gains at most those few tokens from it.
    pub(super) fn admit(
        &mut self,
        soft_prompt: Option<&Arc<NamedSoftPrompt>>,
        prompt: &[u32],
        per_token: usize,
        budget: usize,
    ) -> Option<u64> {
        if budget == 0 || prompt.len() < MIN_PREFIX_REUSE || prompt.len() * per_token > budget {
            return None;
        }
        self.clock += 1;
        let clock = self.clock;
        let best = self.entries.iter_mut().rev().map(|e| (e.shared(soft_prompt, prompt), e)).max_by_key(|(n, _)| *n);
        if let Some((shared, e)) = best {
            let new = prompt.len() - shared;
            if new < NEAR_COPY_TOKENS && new * 8 < prompt.len() {
                e.last_used = clock;
                return None;
            }
        }
        Some(clock)
    }

    /// Keeps `prompt` under `soft_prompt` (admitted at `clock`), whose KV is now in
    /// `cache_seq`; returns the cache sequences to free: kept prompts it extends under the
    /// same soft prompt (superseded by it), then the least recently used ones while the
    /// kept KV is over `budget`.
    pub(super) fn insert(
        &mut self,
        cache_seq: SeqId,
        soft_prompt: Option<Arc<NamedSoftPrompt>>,
        prompt: Vec<u32>,
        clock: u64,
        per_token: usize,
        budget: usize,
    ) -> Vec<SeqId> {
        let (superseded, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|e| e.shared(soft_prompt.as_ref(), &prompt) == e.tokens.len());
        self.entries = kept;
        self.entries.push(PrefixEntry { cache_seq, soft_prompt, tokens: prompt, last_used: clock });
        let mut freed: Vec<SeqId> = superseded.into_iter().map(|e| e.cache_seq).collect();
        while self.tokens() * per_token > budget {
            let (i, _) = self.entries.iter().enumerate().min_by_key(|(_, e)| e.last_used).expect("non-empty");
            freed.push(self.entries.swap_remove(i).cache_seq);
        }
        freed
    }

    /// Prompt positions kept.
    pub(super) fn tokens(&self) -> usize {
        self.entries.iter().map(|e| e.tokens.len()).sum()
    }
}
