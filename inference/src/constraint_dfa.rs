//! Regex and choice constraints as a dense DFA (regex-automata), with one token mask per
//! DFA state computed once and shared by every sequence and step of the grammar.
//!
//! llguidance computes a mask for every sequence at every step, caching only the last one
//! of each sequence; for a regex the mask depends on nothing but the DFA state, and a
//! handful of states recur across rows and steps, so here each state's mask is computed
//! once (a walk of the vocabulary's byte trie, pruned where the DFA dies) and then looked
//! up. Masks are exact sets of token ids: the same bits whatever the batch or thread.
//!
//! A regex the DFA builder refuses (a size limit, a Unicode word boundary) is left to
//! llguidance. The syntax is Rust's `regex`, which is what an eval checks outputs with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::Anchored;
use toktrie::{Recognizer, SimpleVob, TokEnv, TokTrie};

/// Bytes the DFA builder may use (each of the transition table and determinization): a
/// regex that needs more goes to llguidance, whose fuel limits then apply.
pub const DFA_SIZE_LIMIT: usize = 8 << 20;
/// Most DFA states whose masks are kept (each a bit per token: 32 KB for a 262k
/// vocabulary, so at most 32 MB a grammar); past it, masks are computed and not kept.
pub const MAX_CACHED_STATES: usize = 1024;

/// What a DFA state allows next.
#[derive(Debug)]
pub struct StateMask {
    /// Tokens whose bytes keep the DFA alive (special tokens never).
    pub tokens: SimpleVob,
    /// The text so far matches the whole regex: the output may end here.
    pub accepting: bool,
    /// Accepting, and no byte can follow: nothing but the end may come.
    pub finished: bool,
}

/// A compiled regex over one vocabulary.
pub struct DfaGrammar {
    dfa: dense::DFA<Vec<u32>>,
    start: StateID,
    env: TokEnv,
    masks: Mutex<HashMap<StateID, Arc<StateMask>>>,
}

impl std::fmt::Debug for DfaGrammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DfaGrammar").field("bytes", &self.dfa.memory_usage()).finish_non_exhaustive()
    }
}

impl DfaGrammar {
    /// Builds the DFA of `pattern` matched whole: anchored at the start and, through `$`,
    /// at the end, so that a byte past a complete match kills the DFA rather than being
    /// read as the end of a shorter match (a DFA reports a match one byte late); every
    /// thread is kept (`MatchKind::All`), so no alternative is dropped early.
    /// `Err` with the builder's reason when it cannot (too large, unsupported).
    pub fn build(pattern: &str, env: TokEnv) -> Result<Self, String> {
        let dfa = dense::Builder::new()
            .configure(
                dense::DFA::config()
                    .start_kind(StartKind::Anchored)
                    .match_kind(regex_automata::MatchKind::All)
                    .dfa_size_limit(Some(DFA_SIZE_LIMIT))
                    .determinize_size_limit(Some(DFA_SIZE_LIMIT)),
            )
            .build(&format!("(?:{pattern})$"))
            .map_err(|e| e.to_string())?;
        let start = dfa.start_state(&start::Config::new().anchored(Anchored::Yes)).map_err(|e| e.to_string())?;
        Ok(Self { dfa, start, env, masks: Mutex::new(HashMap::new()) })
    }

    pub fn start(&self) -> StateID {
        self.start
    }

    fn trie(&self) -> &TokTrie {
        self.env.tok_trie()
    }

    /// The state after `bytes` from `state`, or None where the DFA dies.
    pub fn walk(&self, mut state: StateID, bytes: &[u8]) -> Option<StateID> {
        for &b in bytes {
            state = self.dfa.next_state(state, b);
            if self.dfa.is_dead_state(state) || self.dfa.is_quit_state(state) {
                return None;
            }
        }
        Some(state)
    }

    /// The state after `token`, or None when the token cannot continue the output.
    pub fn advance(&self, state: StateID, token: u32) -> Option<StateID> {
        if token as usize >= self.trie().vocab_size() || self.trie().is_special_token(token) {
            return None;
        }
        self.walk(state, self.trie().token(token))
    }

    fn accepting(&self, state: StateID) -> bool {
        self.dfa.is_match_state(self.dfa.next_eoi_state(state))
    }

    /// The mask of `state`: from the cache, or computed (and kept while there is room).
    pub fn mask(&self, state: StateID) -> Arc<StateMask> {
        if let Some(m) = self.masks.lock().unwrap_or_else(|p| p.into_inner()).get(&state) {
            return m.clone();
        }
        let computed = Arc::new(self.compute(state));
        let mut masks = self.masks.lock().unwrap_or_else(|p| p.into_inner());
        if masks.len() < MAX_CACHED_STATES {
            masks.insert(state, computed.clone());
        }
        computed
    }

    fn compute(&self, state: StateID) -> StateMask {
        let trie = self.trie();
        let mut tokens = trie.alloc_token_set();
        let mut walker = Walker { dfa: &self.dfa, stack: vec![state] };
        trie.add_bias(&mut walker, &mut tokens, &[]);
        // Special tokens are marked by a byte no UTF-8 regex takes; make sure of it.
        for t in 0..trie.vocab_size() as u32 {
            if tokens.is_allowed(t) && trie.is_special_token(t) {
                tokens.disallow_token(t);
            }
        }
        let accepting = self.accepting(state);
        let finished = accepting && (0..=255u8).all(|b| self.walk(state, &[b]).is_none());
        StateMask { tokens, accepting, finished }
    }

    /// Masks kept so far.
    pub fn cached(&self) -> usize {
        self.masks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Walks the token trie with a stack of DFA states (toktrie's recognizer protocol).
struct Walker<'a> {
    dfa: &'a dense::DFA<Vec<u32>>,
    stack: Vec<StateID>,
}

impl Recognizer for Walker<'_> {
    fn pop_bytes(&mut self, num: usize) {
        let keep = self.stack.len().saturating_sub(num).max(1);
        self.stack.truncate(keep);
    }

    fn collapse(&mut self) {
        let top = *self.stack.last().expect("the walk's stack holds its start");
        self.stack.clear();
        self.stack.push(top);
    }

    fn trie_finished(&mut self) {
        self.stack.truncate(1);
    }

    fn try_push_byte(&mut self, byte: u8) -> bool {
        let top = *self.stack.last().expect("the walk's stack holds its start");
        let next = self.dfa.next_state(top, byte);
        if self.dfa.is_dead_state(next) || self.dfa.is_quit_state(next) {
            return false;
        }
        self.stack.push(next);
        true
    }
}
