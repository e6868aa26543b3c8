//! Constrained decoding: a per-sequence grammar (JSON schema, regex, a choice of strings,
//! a Lark grammar) that masks the tokens it cannot continue with before each draw.
//!
//! Built on `llguidance`, the library behind llama.cpp's and vLLM's guidance backends: it
//! compiles JSON schemas, regexes and Lark-like grammars to a lexer plus an Earley parser
//! and computes a token mask by walking a trie of the vocabulary's bytes, so a mask costs
//! one pass over the tokens the grammar can reach rather than one check per token.
//!
//! - [`Constraints`] is built once per loaded model: the vocabulary as bytes (each token id
//!   → its exact bytes, special tokens marked) in a `TokEnv`, llguidance's parser factory,
//!   and a cache of compiled grammars by (kind, source), least recently used out first,
//!   at most [`GRAMMAR_CACHE`] entries.
//! - [`Constraints::compile`] compiles (or finds) a [`Grammar`]; it is CPU work to run off
//!   the engine's thread (the server runs it while validating a request).
//! - [`Grammar::start`] gives a sequence its own [`Guide`], which masks a logits row and
//!   follows the sampled tokens.
//!
//! Regexes and choices go through [`crate::constraint_dfa`] when they build as a DFA: one
//! mask per DFA state, computed once and shared by every sequence (llguidance would compute
//! one per sequence and step). JSON and Lark grammars, and regexes the DFA builder refuses,
//! go through llguidance.
//!
//! Limits, so that no grammar stalls a step: llguidance's [`ParserLimits`] as set in
//! [`limits`] (lexer fuel at compile time and per mask, Earley items per mask, lexer
//! states, grammar size). A mask that runs out of fuel is an error for that sequence only.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::{Matcher, ParserFactory, TokenParser};
use toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

use crate::constraint_dfa::DfaGrammar;
use crate::tokenizer::Tokenizer;

/// Most compiled grammars kept per model (least recently used out first). A compiled JSON
/// schema takes from a few kB to a few MB, so this stays well under 100 MB.
pub const GRAMMAR_CACHE: usize = 64;

/// llguidance's limits for every grammar: compile work, per-mask work, memory.
pub fn limits() -> ParserLimits {
    ParserLimits {
        // Regex derivatives built while compiling (llguidance: ~50k/ms): ~20 ms at most,
        // which is what stops a catastrophic regex at compile time.
        initial_lexer_fuel: 1_000_000,
        // Lexer work for one token mask (~14k/ms): ~15 ms at most per sequence and step.
        step_lexer_fuel: 200_000,
        // Earley items for one mask (~20k/ms): ~2.5 ms.
        step_max_items: 50_000,
        // Lexer states (1-2 kB each): at most ~100 MB per grammar.
        max_lexer_states: 50_000,
        // Symbols in the grammar's productions: a large schema of a few hundred kB.
        max_grammar_size: 200_000,
        verbose_errors: false,
        ..ParserLimits::default()
    }
}

/// What output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum ConstraintSpec {
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// JSON valid against this JSON Schema.
    JsonSchema(serde_json::Value),
    /// Text matching this regex, whole.
    Regex(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
    /// A Lark-like grammar (llguidance's dialect; `start` is the top rule).
    Grammar(String),
}

impl ConstraintSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::JsonObject => "json_object",
            Self::JsonSchema(_) => "json",
            Self::Regex(_) => "regex",
            Self::Choice(_) => "choice",
            Self::Grammar(_) => "grammar",
        }
    }

    /// The cache key's source text.
    fn source(&self) -> String {
        match self {
            Self::JsonObject => String::new(),
            Self::JsonSchema(v) => v.to_string(),
            Self::Regex(r) | Self::Grammar(r) => r.clone(),
            Self::Choice(c) => serde_json::to_string(c).unwrap_or_default(),
        }
    }

    /// The regex a DFA can take: the pattern itself, or the choices as an alternation.
    fn dfa_pattern(&self) -> Option<String> {
        match self {
            Self::Regex(r) => Some(r.clone()),
            Self::Choice(c) => Some(format!("(?:{})", c.iter().map(|s| regex_escape(s)).collect::<Vec<_>>().join("|"))),
            _ => None,
        }
    }

    fn top_level(&self) -> TopLevelGrammar {
        match self {
            Self::JsonObject => TopLevelGrammar::from_json_schema(compact_json(serde_json::json!({"type": "object"}))),
            Self::JsonSchema(v) => TopLevelGrammar::from_json_schema(compact_json(v.clone())),
            Self::Regex(r) => TopLevelGrammar::from_regex(r),
            Self::Choice(c) => {
                let alts: Vec<String> = c.iter().map(|s| regex_escape(s)).collect();
                TopLevelGrammar::from_regex(&format!("({})", alts.join("|")))
            }
            Self::Grammar(g) => TopLevelGrammar::from_lark(g.clone()),
        }
    }
}

/// `s` as a regex that matches exactly `s`.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~/\"".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConstraintError {
    /// The schema, regex or grammar does not compile (llguidance's reason).
    #[error("{kind} does not compile: {reason}")]
    Invalid { kind: &'static str, reason: String },
    /// It compiles, but no text matches it.
    #[error("{kind} matches no text")]
    Empty { kind: &'static str },
    /// The vocabulary could not be turned into a token trie.
    #[error("constrained decoding is unavailable for this tokenizer: {0}")]
    Unavailable(String),
    /// A sequence's mask or step failed (a limit hit mid-generation).
    #[error("constraint failed: {0}")]
    Step(String),
}

/// The vocabulary in llguidance's terms; tokenizes with the model's own tokenizer.
struct Vocab {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl TokenizerEnv for Vocab {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        match std::str::from_utf8(s) {
            Ok(text) => self.tokenizer.encode(text, false).unwrap_or_else(|_| self.trie.greedy_tokenize(s)),
            Err(_) => self.trie.greedy_tokenize(s),
        }
    }
}

/// One loaded model's constrained decoding: its vocabulary, parser factory and grammar cache.
pub struct Constraints {
    tokenizer: Arc<Tokenizer>,
    factory: OnceLock<Result<Arc<ParserFactory>, ConstraintError>>,
    cache: Mutex<VecDeque<(&'static str, String, Arc<Grammar>)>>,
}

impl std::fmt::Debug for Constraints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraints").field("ready", &self.factory.get().is_some()).finish_non_exhaustive()
    }
}

impl Constraints {
    /// Cheap: the token trie is built on first use.
    pub fn new(tokenizer: Arc<Tokenizer>) -> Self {
        Self { tokenizer, factory: OnceLock::new(), cache: Mutex::new(VecDeque::new()) }
    }

    /// Builds the token trie now (else the first compile does): its time.
    pub fn prepare(&self) -> Result<Duration, ConstraintError> {
        let started = Instant::now();
        self.factory()?;
        Ok(started.elapsed())
    }

    fn factory(&self) -> Result<&Arc<ParserFactory>, ConstraintError> {
        self.factory.get_or_init(|| build_factory(&self.tokenizer)).as_ref().map_err(Clone::clone)
    }

    /// The grammar for `spec`, compiled or from the cache. CPU work: a few ms for a
    /// typical schema, bounded by [`limits`].
    pub fn compile(&self, spec: &ConstraintSpec) -> Result<Arc<Grammar>, ConstraintError> {
        let (kind, source) = (spec.kind(), spec.source());
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(pos) = cache.iter().position(|(k, s, _)| *k == kind && *s == source) {
                let hit = cache.remove(pos).expect("position is in range");
                let grammar = hit.2.clone();
                cache.push_back(hit);
                return Ok(grammar);
            }
        }
        let grammar = Arc::new(self.compile_uncached(spec, true)?);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= GRAMMAR_CACHE {
            cache.pop_front();
        }
        cache.push_back((kind, source, grammar.clone()));
        Ok(grammar)
    }

    /// Grammars in the cache.
    pub fn cached(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// `allow_dfa`: regexes and choices may take the DFA path (the tests turn it off to
    /// compare both paths' masks).
    fn compile_uncached(&self, spec: &ConstraintSpec, allow_dfa: bool) -> Result<Grammar, ConstraintError> {
        let kind = spec.kind();
        if let ConstraintSpec::Choice(c) = spec {
            if c.is_empty() || c.iter().any(String::is_empty) {
                return Err(ConstraintError::Invalid { kind, reason: "choices must be non-empty strings".into() });
            }
        }
        let factory = self.factory()?;
        let started = Instant::now();
        let dfa = spec
            .dfa_pattern()
            .filter(|_| allow_dfa)
            .and_then(|p| DfaGrammar::build(&p, factory.tok_env().clone()).ok());
        let parser = match dfa {
            Some(_) => None,
            None => Some(
                llguidance::panic_utils::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    factory.create_parser(spec.top_level())
                }))
                .map_err(|e| ConstraintError::Invalid { kind, reason: first_line(&e.to_string()) })?,
            ),
        };
        let grammar = Grammar {
            parser,
            dfa: dfa.map(Arc::new),
            kind,
            eos_ids: self.tokenizer.eos_ids().to_vec(),
            vocab: factory.tok_env().tok_trie().vocab_size(),
            compile_time: started.elapsed(),
        };
        if let Some(d) = &grammar.dfa {
            // The first mask: a DFA that takes no token and cannot end matches no text.
            let first = d.mask(d.start());
            if first.tokens.is_zero() && !first.accepting {
                return Err(ConstraintError::Empty { kind });
            }
            return Ok(grammar);
        }
        // The first mask: a grammar that allows nothing at the start matches no text.
        let mut matcher = Matcher::new(Ok(grammar.parser.clone().expect("a grammar without a DFA has a parser")));
        let mask = matcher.compute_mask().map_err(|e| {
            let reason = first_line(&e.to_string());
            // llguidance's word for a state no byte can extend.
            if reason.contains("NoExtensionBias") {
                ConstraintError::Empty { kind }
            } else {
                ConstraintError::Invalid { kind, reason }
            }
        })?;
        if mask.is_zero() && !matcher.is_accepting().unwrap_or(false) {
            return Err(ConstraintError::Empty { kind });
        }
        Ok(grammar)
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).chars().take(500).collect()
}

fn build_factory(tokenizer: &Arc<Tokenizer>) -> Result<Arc<ParserFactory>, ConstraintError> {
    let words: Vec<Vec<u8>> = tokenizer
        .token_bytes()
        .into_iter()
        .map(|(bytes, special)| {
            if special {
                // llguidance's marker for special tokens: never matched as text.
                let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                w.extend(bytes);
                w
            } else {
                bytes
            }
        })
        .collect();
    let eos =
        tokenizer.eos_ids().first().copied().ok_or_else(|| ConstraintError::Unavailable("no EOS token".into()))?;
    let mut info = TokRxInfo::new(words.len() as u32, eos);
    info.tok_bos = tokenizer.bos_id();
    info.tok_end_of_turn = tokenizer.eos_ids().get(1).copied();
    let trie = TokTrie::from(&info, &words);
    let env: TokEnv = Arc::new(Vocab { trie, tokenizer: tokenizer.clone() });
    let mut factory = ParserFactory::new_simple(&env).map_err(|e| ConstraintError::Unavailable(e.to_string()))?;
    factory.quiet();
    *factory.limits_mut() = limits();
    Ok(Arc::new(factory))
}

/// A compiled constraint, shared by every sequence that uses it.
pub struct Grammar {
    /// llguidance's parser (JSON, Lark, and regexes no DFA takes).
    parser: Option<TokenParser>,
    /// Regexes and choices that build as a DFA.
    dfa: Option<Arc<DfaGrammar>>,
    kind: &'static str,
    eos_ids: Vec<u32>,
    vocab: usize,
    compile_time: Duration,
}

impl std::fmt::Debug for Grammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammar").field("kind", &self.kind).field("compile_time", &self.compile_time).finish()
    }
}

impl Grammar {
    /// A fresh matcher for one sequence. Matchers of one grammar share its lexer's lazily
    /// built automaton (behind llguidance's lock), so later sequences find it warm.
    pub fn start(&self) -> Guide {
        let state = match (&self.dfa, &self.parser) {
            (Some(d), _) => GuideState::Dfa { grammar: d.clone(), state: d.start() },
            (None, Some(p)) => GuideState::Parser(Box::new(Matcher::new(Ok(p.clone())))),
            (None, None) => unreachable!("a grammar has a DFA or a parser"),
        };
        Guide { state, eos_ids: self.eos_ids.clone(), vocab: self.vocab }
    }

    /// Whether masks come from the DFA path (one per state, shared).
    pub fn is_dfa(&self) -> bool {
        self.dfa.is_some()
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// How long compiling it took (not counting the first mask).
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }
}

/// One sequence's place in its grammar.
pub struct Guide {
    state: GuideState,
    eos_ids: Vec<u32>,
    vocab: usize,
}

enum GuideState {
    Parser(Box<Matcher>),
    Dfa { grammar: Arc<DfaGrammar>, state: regex_automata::util::primitives::StateID },
}

impl std::fmt::Debug for Guide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guide").field("stopped", &self.finished()).finish_non_exhaustive()
    }
}

impl Guide {
    /// Sets every token the grammar cannot take next to -inf in `row` (ids past the
    /// vocabulary too). End-of-sequence ids stay only where the grammar may end. Fails
    /// when the grammar hit a limit or allows no token at all.
    pub fn mask(&mut self, row: &mut [f32]) -> Result<(), ConstraintError> {
        let shared;
        let owned;
        let (mask, may_end): (&SimpleVob, bool) = match &mut self.state {
            GuideState::Parser(m) => {
                owned = m.compute_mask_or_eos().map_err(|e| ConstraintError::Step(first_line(&e.to_string())))?;
                let may_end = self.eos_ids.first().is_some_and(|&e| owned.is_allowed(e));
                (&owned, may_end)
            }
            GuideState::Dfa { grammar, state } => {
                shared = grammar.mask(*state);
                (&shared.tokens, shared.accepting)
            }
        };
        let kept: Vec<(usize, f32)> = if may_end {
            self.eos_ids.iter().filter_map(|&e| row.get(e as usize).map(|&v| (e as usize, v))).collect()
        } else {
            Vec::new()
        };
        apply(mask, row, self.vocab);
        for (i, v) in kept {
            row[i] = v;
        }
        if row.iter().all(|&v| v == f32::NEG_INFINITY || v.is_nan()) {
            return Err(ConstraintError::Step("no token can continue the output".into()));
        }
        Ok(())
    }

    /// Follows the sampled token (end-of-sequence ids end the output and are not fed).
    pub fn advance(&mut self, token: u32) -> Result<(), ConstraintError> {
        if self.eos_ids.contains(&token) {
            return Ok(());
        }
        match &mut self.state {
            GuideState::Parser(m) => {
                m.consume_token(token).map_err(|e| ConstraintError::Step(first_line(&e.to_string())))
            }
            GuideState::Dfa { grammar, state } => match grammar.advance(*state, token) {
                Some(next) => {
                    *state = next;
                    Ok(())
                }
                None => Err(ConstraintError::Step(format!("token {token} does not continue the output"))),
            },
        }
    }

    /// The output so far is complete and nothing but end-of-sequence may follow.
    pub fn finished(&self) -> bool {
        match &self.state {
            GuideState::Parser(m) => m.is_stopped() && !m.is_error(),
            GuideState::Dfa { grammar, state } => grammar.mask(*state).finished,
        }
    }

    /// The output so far is a complete match (more may still follow).
    pub fn accepting(&mut self) -> bool {
        match &mut self.state {
            GuideState::Parser(m) => m.is_accepting().unwrap_or(false),
            GuideState::Dfa { grammar, state } => grammar.mask(*state).accepting,
        }
    }
}

/// `row[i] = -inf` wherever `mask` does not allow `i`, 32 ids per mask word.
fn apply(mask: &SimpleVob, row: &mut [f32], vocab: usize) {
    let words = mask.as_slice();
    let (inside, outside) = row.split_at_mut(vocab.min(row.len()));
    for (w, chunk) in inside.chunks_mut(32).enumerate() {
        let bits = words.get(w).copied().unwrap_or(0);
        if bits == u32::MAX {
            continue;
        }
        for (b, v) in chunk.iter_mut().enumerate() {
            if bits & (1 << b) == 0 {
                *v = f32::NEG_INFINITY;
            }
        }
    }
    outside.fill(f32::NEG_INFINITY);
}

/// JSON output with fixed separators (`, ` and `: `) and no free whitespace, unless the
/// schema asks otherwise through llguidance's `x-guidance` options: with free whitespace a
/// small model can spend its whole `max_tokens` on newlines inside an object.
fn compact_json(mut schema: serde_json::Value) -> serde_json::Value {
    if let Some(map) = schema.as_object_mut() {
        map.entry("x-guidance").or_insert_with(|| serde_json::json!({"whitespace_flexible": false}));
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_are_escaped_whole() {
        assert_eq!(regex_escape("a.b(c)"), r"a\.b\(c\)");
        assert_eq!(regex_escape("긍정"), "긍정");
    }

    #[test]
    fn apply_masks_by_bit_and_past_the_vocabulary() {
        let mut mask = SimpleVob::alloc(40);
        mask.allow_token(3);
        mask.allow_token(35);
        let mut row = vec![1.0f32; 45];
        apply(&mask, &mut row, 40);
        let kept: Vec<usize> = (0..45).filter(|&i| row[i] > f32::NEG_INFINITY).collect();
        assert_eq!(kept, vec![3, 35]);
    }

    /// The DFA path allows exactly the tokens llguidance allows, step by step, on the real
    /// SmolLM2 vocabulary (byte-level BPE), and ends where it ends.
    #[test]
    fn dfa_masks_equal_llguidance_masks_on_a_real_vocabulary() {
        let dir = std::env::var_os("STUDIO_MODELS_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models"));
        let path = dir.join("smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf");
        let mut reader = std::io::BufReader::new(std::fs::File::open(&path).expect("run scripts/fetch-models.sh"));
        let md = candle_core::quantized::gguf_file::Content::read(&mut reader).unwrap().metadata;
        let tok = Arc::new(Tokenizer::from_gguf(&md).unwrap());
        let c = Constraints::new(tok.clone());
        let cases = [
            (ConstraintSpec::Regex("[A-Z][a-z]+( [a-z]+){2,5}\\.".into()), "Hello calm blue sea."),
            (ConstraintSpec::Regex("[0-9]{3}-[0-9]{4}".into()), "555-0123"),
            (ConstraintSpec::Choice(vec!["positive".into(), "negative".into(), "긍정".into()]), "긍정"),
        ];
        for (spec, text) in cases {
            let dfa = c.compile_uncached(&spec, true).unwrap();
            let llg = c.compile_uncached(&spec, false).unwrap();
            assert!(dfa.is_dfa() && !llg.is_dfa(), "{spec:?}");
            let (mut a, mut b) = (dfa.start(), llg.start());
            let allowed = |g: &mut Guide| {
                let mut row = vec![0.0f32; tok.vocab_size()];
                g.mask(&mut row).unwrap();
                row.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, _)| i).collect::<Vec<_>>()
            };
            for t in tok.encode(text, false).unwrap() {
                let (x, y) = (allowed(&mut a), allowed(&mut b));
                assert_eq!(x.len(), y.len(), "{spec:?} before token {t}");
                assert_eq!(x, y, "{spec:?} before token {t}");
                assert!(x.contains(&(t as usize)), "{spec:?}: {t} is refused");
                a.advance(t).unwrap();
                b.advance(t).unwrap();
                assert_eq!(a.accepting(), b.accepting(), "{spec:?} after {t}");
            }
            assert!(a.accepting(), "{spec:?}: {text:?} is a whole match");
            assert_eq!(a.finished(), b.finished(), "{spec:?}");
        }
        // Nothing matches: refused as empty on the DFA path too.
        let none = ConstraintSpec::Regex("[^\\s\\S]".into());
        assert!(matches!(c.compile_uncached(&none, true), Err(ConstraintError::Empty { .. })));
    }

    #[test]
    fn json_is_compact_unless_the_schema_says_otherwise() {
        let plain = compact_json(serde_json::json!({"type": "object"}));
        assert_eq!(plain["x-guidance"]["whitespace_flexible"], false);
        let own = compact_json(serde_json::json!({"x-guidance": {"whitespace_flexible": true}}));
        assert_eq!(own["x-guidance"]["whitespace_flexible"], true);
    }
}
