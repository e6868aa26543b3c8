//! Text <-> token-id conversion.
//!
//! A [`Tokenizer`] is built either from the `tokenizer.ggml.*` metadata of a GGUF file or from a
//! Hugging Face `tokenizer.json` (plus the config files usually stored beside it). Both paths end
//! in a [`tokenizers::Tokenizer`]; this type adds what the engine needs on top of it: the BOS
//! policy, the set of ids that end generation, and the chat template.
//!
//! Two GGUF tokenizer kinds are supported (`tokenizer.ggml.model`):
//!
//! * `gpt2`: byte-level BPE with explicit merges (SmolLM2, Llama 3, Qwen 2, ...).
//! * `llama`: SentencePiece BPE (Llama 2, Gemma, ...). The file carries pieces, scores and token
//!   types but no merges, so the merges are derived from the vocabulary: every piece that can be
//!   split into two other pieces yields a merge, ranked by the score of the merged piece.
//!
//! Control and user-defined tokens are registered as added tokens matched on the raw input text,
//! so chat markers such as `<start_of_turn>` or `<|im_start|>` encode to their single ids.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, NormalizerWrapper, SplitDelimiterBehavior};

/// GGUF token types (`tokenizer.ggml.token_type`), the same numbering as SentencePiece's.
mod token_type {
    pub const NORMAL: i64 = 1;
    pub const UNKNOWN: i64 = 2;
    pub const CONTROL: i64 = 3;
    pub const USER_DEFINED: i64 = 4;
    pub const BYTE: i64 = 6;
}

/// SentencePiece's whitespace marker (U+2581).
const SPM_SPACE: &str = "\u{2581}";

/// Tokens that end a turn in common chat formats. Whichever of them exist in a vocabulary are
/// added to [`Tokenizer::eos_ids`] after the model's own EOS id.
const END_OF_TURN_TOKENS: &[&str] = &[
    "<end_of_turn>", // Gemma
    "<|im_end|>",    // ChatML (SmolLM, Qwen, ...)
    "<|eot_id|>",    // Llama 3
    "<|eom_id|>",    // Llama 3.1 tool calls
    "<|end|>",       // Phi 3
    "<|endoftext|>", // GPT-2 style document end
    "<|end_of_text|>",
];

/// Llama 3's split (`tokenizer.ggml.pre` = `llama-bpe`): numbers in groups of up to three.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's split: like Llama 3's but one digit per piece.
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("gguf metadata key {0} missing")]
    MissingKey(String),
    #[error("gguf metadata key {key} has an unexpected value: expected {expected}, found {found}")]
    WrongType { key: String, expected: &'static str, found: String },
    #[error("gguf metadata key {key} has {found} entries, expected {expected} (one per token)")]
    LengthMismatch { key: String, expected: usize, found: usize },
    #[error("unsupported tokenizer model {0:?} in tokenizer.ggml.model (supported: gpt2, llama)")]
    UnsupportedModel(String),
    #[error("merge {index} in tokenizer.ggml.merges is malformed: {merge:?}")]
    BadMerge { index: usize, merge: String },
    #[error("token id {id} from {key} is outside the vocabulary ({vocab_size} tokens)")]
    TokenIdOutOfRange { key: String, id: u64, vocab_size: usize },
    #[error("failed to build the tokenizer: {0}")]
    Build(#[source] tokenizers::Error),
    #[error("failed to read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to load tokenizer file {path}: {source}")]
    TokenizerFile {
        path: PathBuf,
        #[source]
        source: tokenizers::Error,
    },
    #[error("failed to parse {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("encoding failed: {0}")]
    Encode(#[source] tokenizers::Error),
    #[error("decoding failed: {0}")]
    Decode(#[source] tokenizers::Error),
}

/// A model's tokenizer plus the special-token policy the engine needs.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    vocab_size: usize,
    bos_id: Option<u32>,
    eos_ids: Vec<u32>,
    add_bos: bool,
    chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos_id", &self.bos_id)
            .field("eos_ids", &self.eos_ids)
            .field("add_bos", &self.add_bos)
            .field("has_chat_template", &self.chat_template.is_some())
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(md: &HashMap<String, Value>) -> Result<Self, TokenizerError> {
        let started = Instant::now();
        let model = md_str(md, "tokenizer.ggml.model")?.ok_or_else(|| missing("tokenizer.ggml.model"))?;
        let tokens = md_string_array(md, "tokenizer.ggml.tokens")?.ok_or_else(|| missing("tokenizer.ggml.tokens"))?;
        let n = tokens.len();
        let types = match md_int_array(md, "tokenizer.ggml.token_type")? {
            Some(t) => {
                check_len("tokenizer.ggml.token_type", n, t.len())?;
                t
            }
            None => vec![token_type::NORMAL; n],
        };
        let architecture = md_str(md, "general.architecture")?.unwrap_or("");
        let is_gemma = architecture.starts_with("gemma");

        let (inner, default_add_bos) = match model {
            "gpt2" => (build_gpt2(md, &tokens, &types)?, false),
            "llama" => (build_spm(md, &tokens, &types, is_gemma)?, true),
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };

        let token_id = |key: &str| -> Result<Option<u32>, TokenizerError> {
            match md_u64(md, key)? {
                None => Ok(None),
                Some(id) if (id as usize) < n => Ok(Some(id as u32)),
                Some(id) => Err(TokenizerError::TokenIdOutOfRange { key: key.to_string(), id, vocab_size: n }),
            }
        };
        let bos_id = token_id("tokenizer.ggml.bos_token_id")?;
        let mut eos_ids = Vec::new();
        for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            if let Some(id) = token_id(key)? {
                push_unique(&mut eos_ids, id);
            }
        }
        let add_bos = md_bool(md, "tokenizer.ggml.add_bos_token")?.unwrap_or(default_add_bos);
        let chat_template = md_str(md, "tokenizer.chat_template")?.map(str::to_string);

        let tokenizer = Self::assemble(inner, bos_id, eos_ids, add_bos, chat_template);
        tracing::debug!(
            model,
            vocab_size = tokenizer.vocab_size,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "built tokenizer from gguf metadata"
        );
        Ok(tokenizer)
    }

    /// Loads a Hugging Face `tokenizer.json`. `tokenizer_config.json`, `config.json`,
    /// `generation_config.json` and `chat_template.jinja` in the same folder, when present,
    /// supply the BOS/EOS ids, the BOS policy and the chat template.
    pub fn from_tokenizer_json(path: &Path) -> Result<Self, TokenizerError> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|source| TokenizerError::TokenizerFile { path: path.to_path_buf(), source })?;
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        let tok_config = read_json_if_present(&dir.join("tokenizer_config.json"))?;
        let model_config = read_json_if_present(&dir.join("config.json"))?;
        let gen_config = read_json_if_present(&dir.join("generation_config.json"))?;
        let configs = [&gen_config, &model_config];

        let token_named = |v: Option<&serde_json::Value>| -> Option<u32> {
            let name = match v? {
                serde_json::Value::String(s) => s.as_str(),
                serde_json::Value::Object(o) => o.get("content")?.as_str()?,
                _ => return None,
            };
            inner.token_to_id(name)
        };
        let tc_get = |key: &str| tok_config.as_ref().and_then(|c| c.get(key));
        let template_bos = template_leading_special(&inner);

        let bos_id = configs
            .iter()
            .find_map(|c| c.as_ref().and_then(|c| c.get("bos_token_id")).and_then(json_ids))
            .and_then(|ids| ids.first().copied())
            .or_else(|| token_named(tc_get("bos_token")))
            .or(template_bos);

        let mut eos_ids = Vec::new();
        for config in configs {
            if let Some(ids) = config.as_ref().and_then(|c| c.get("eos_token_id")).and_then(json_ids) {
                ids.into_iter().for_each(|id| push_unique(&mut eos_ids, id));
            }
        }
        if let Some(id) = token_named(tc_get("eos_token")) {
            push_unique(&mut eos_ids, id);
        }

        let add_bos = tc_get("add_bos_token").and_then(serde_json::Value::as_bool).unwrap_or(template_bos.is_some());

        let chat_template = match tc_get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            // A list of named templates: take the default one, else the first.
            Some(serde_json::Value::Array(list)) => {
                let named = |want: Option<&str>| {
                    list.iter().find_map(|entry| {
                        let name = entry.get("name").and_then(|n| n.as_str());
                        if want.is_none() || name == want {
                            entry.get("template").and_then(|t| t.as_str())
                        } else {
                            None
                        }
                    })
                };
                named(Some("default")).or_else(|| named(None)).map(str::to_string)
            }
            _ => None,
        };
        let chat_template = match chat_template {
            Some(t) => Some(t),
            None => read_text_if_present(&dir.join("chat_template.jinja"))?,
        };

        Ok(Self::assemble(inner, bos_id, eos_ids, add_bos, chat_template))
    }

    fn assemble(
        inner: tokenizers::Tokenizer,
        bos_id: Option<u32>,
        mut eos_ids: Vec<u32>,
        add_bos: bool,
        chat_template: Option<String>,
    ) -> Self {
        for name in END_OF_TURN_TOKENS {
            if let Some(id) = inner.token_to_id(name) {
                push_unique(&mut eos_ids, id);
            }
        }
        let max_added = inner.get_added_tokens_decoder().keys().max().map_or(0, |&id| id as usize + 1);
        let vocab_size = inner.get_vocab_size(true).max(max_added);
        Self { inner, vocab_size, bos_id, eos_ids, add_bos, chat_template }
    }

    /// A word-level tokenizer of `vocab_size` tokens `t0`, `t1`, ... (words split on
    /// whitespace), with `t{bos}` as BOS and no end-of-sequence token: for engine tests on
    /// tiny random models.
    #[cfg(test)]
    pub(crate) fn word_level_for_tests(vocab_size: usize, bos: u32) -> Self {
        let vocab: serde_json::Map<String, serde_json::Value> =
            (0..vocab_size).map(|i| (format!("t{i}"), serde_json::Value::from(i))).collect();
        let json = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [],
            "normalizer": null,
            "pre_tokenizer": { "type": "WhitespaceSplit" },
            "post_processor": null,
            "decoder": null,
            "model": { "type": "WordLevel", "vocab": vocab, "unk_token": "t0" },
        });
        let inner: tokenizers::Tokenizer = json.to_string().parse().expect("a word-level tokenizer");
        Self::assemble(inner, Some(bos), Vec::new(), true, None)
    }

    /// Encodes `text`. Control tokens written in the text (`<start_of_turn>`, `<|im_start|>`, ...)
    /// become their single ids. BOS is prepended only when `add_bos` is asked for *and* the model
    /// wants one ([`Tokenizer::add_bos`]); EOS is never added.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self.inner.encode_fast(text, false).map_err(TokenizerError::Encode)?;
        let ids = encoding.get_ids();
        match self.bos_id {
            Some(bos) if add_bos && self.add_bos => {
                let mut out = Vec::with_capacity(ids.len() + 1);
                out.push(bos);
                out.extend_from_slice(ids);
                Ok(out)
            }
            _ => Ok(ids.to_vec()),
        }
    }

    /// Decodes ids to text. With `skip_special`, control tokens (BOS, EOS, turn markers) are left
    /// out; user-defined tokens such as Gemma's newline and whitespace-run tokens are kept.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.inner.decode(ids, skip_special).map_err(TokenizerError::Decode)
    }

    /// Number of token ids (one more than the largest id).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// Ids that end generation: the model's EOS id first, then any end-of-turn tokens the
    /// vocabulary has (`<end_of_turn>`, `<|im_end|>`, `<|eot_id|>`, ...).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// Whether the model expects a BOS token at the start of a prompt.
    pub fn add_bos(&self) -> bool {
        self.add_bos && self.bos_id.is_some()
    }

    /// The Jinja chat template shipped with the model, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The vocabulary entry for `id`, as stored (e.g. `▁Hello` or `ĠHello`).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn token_to_id(&self, tok: &str) -> Option<u32> {
        self.inner.token_to_id(tok)
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Every token id's exact bytes, as the text it decodes to inside a longer text, and
    /// whether it is special (a control token such as `<eos>` or `<|im_start|>`, which
    /// stands for no text). Byte-level BPE maps its characters back through GPT-2's
    /// byte↔unicode table; SentencePiece turns `▁` into a space and `<0xNN>` into the
    /// byte NN; added tokens are their raw content. Ids with no entry get no bytes.
    pub fn token_bytes(&self) -> Vec<(Vec<u8>, bool)> {
        let added = self.inner.get_added_tokens_decoder();
        let byte_level = is_byte_level(self.inner.get_decoder());
        let unicode_to_byte: HashMap<char, u8> = gpt2_bytes_to_unicode().into_iter().map(|(b, c)| (c, b)).collect();
        (0..self.vocab_size as u32)
            .map(|id| {
                if let Some(t) = added.get(&id) {
                    return (t.content.as_bytes().to_vec(), t.special);
                }
                let Some(piece) = self.inner.id_to_token(id) else { return (Vec::new(), false) };
                if byte_level {
                    let mapped: Option<Vec<u8>> = piece.chars().map(|c| unicode_to_byte.get(&c).copied()).collect();
                    return (mapped.unwrap_or_else(|| piece.into_bytes()), false);
                }
                if let Some(b) = spm_byte(&piece) {
                    return (vec![b], false);
                }
                (piece.replace(SPM_SPACE, " ").into_bytes(), false)
            })
            .collect()
    }
}

/// `<0xNN>`, SentencePiece's byte-fallback piece, as the byte NN.
fn spm_byte(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Whether the decoder (or one step of a decoder sequence) is byte-level BPE's.
fn is_byte_level(decoder: Option<&DecoderWrapper>) -> bool {
    match decoder {
        Some(DecoderWrapper::ByteLevel(_)) => true,
        Some(DecoderWrapper::Sequence(seq)) => {
            serde_json::to_value(seq).is_ok_and(|v| v.to_string().contains("\"ByteLevel\""))
        }
        _ => false,
    }
}

/// GPT-2's table from bytes to the printable characters byte-level BPE writes them as.
fn gpt2_bytes_to_unicode() -> Vec<(u8, char)> {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    let mut next = 256u32;
    (0..=255u8)
        .map(|b| {
            if printable(b) {
                (b, char::from(b))
            } else {
                let c = char::from_u32(next).expect("below the surrogates");
                next += 1;
                (b, c)
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// GGUF: byte-level BPE ("gpt2")

fn build_gpt2(
    md: &HashMap<String, Value>,
    tokens: &[&str],
    types: &[i64],
) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let vocab = vocab_map(tokens);
    let merge_strings =
        md_string_array(md, "tokenizer.ggml.merges")?.ok_or_else(|| missing("tokenizer.ggml.merges"))?;
    let merges: Merges = merge_strings
        .iter()
        .enumerate()
        .map(|(index, m)| match m.split_once(' ') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_string(), b.to_string())),
            _ => Err(TokenizerError::BadMerge { index, merge: m.to_string() }),
        })
        .collect::<Result<_, _>>()?;

    let pre = md_str(md, "tokenizer.ggml.pre")?.unwrap_or("default");
    let byte_level_regex = ByteLevel::new(false, false, true);
    let byte_level_plain = ByteLevel::new(false, false, false);
    let regex_split = |pattern: &str| -> Result<PreTokenizerWrapper, TokenizerError> {
        let split = Split::new(SplitPattern::Regex(pattern.to_string()), SplitDelimiterBehavior::Isolated, false)
            .map_err(TokenizerError::Build)?;
        Ok(PreTokenizerWrapper::Sequence(PreTokenizerSequence::new(vec![split.into(), byte_level_plain.into()])))
    };
    let (pre_tokenizer, ignore_merges) = match pre {
        // llama.cpp's "smollm": every digit on its own, then the GPT-2 split.
        "smollm" => (
            PreTokenizerWrapper::Sequence(PreTokenizerSequence::new(vec![
                Digits::new(true).into(),
                byte_level_regex.into(),
            ])),
            false,
        ),
        "llama-bpe" | "llama3" => (regex_split(LLAMA3_SPLIT)?, true),
        "qwen2" => (regex_split(QWEN2_SPLIT)?, false),
        "default" | "gpt-2" | "gpt2" => (byte_level_regex.into(), false),
        other => {
            tracing::warn!(pre = other, "unknown tokenizer.ggml.pre; using the GPT-2 split");
            (byte_level_regex.into(), false)
        }
    };

    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(TokenizerError::Build)?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(pre_tokenizer));
    tok.with_decoder(Some(ByteLevel::new(false, false, true)));
    add_gguf_special_tokens(&mut tok, tokens, types)?;
    Ok(tok)
}

// ---------------------------------------------------------------------------------------------
// GGUF: SentencePiece BPE ("llama")

fn build_spm(
    md: &HashMap<String, Value>,
    tokens: &[&str],
    types: &[i64],
    is_gemma: bool,
) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let n = tokens.len();
    let scores = match md_f32_array(md, "tokenizer.ggml.scores")? {
        Some(s) => {
            check_len("tokenizer.ggml.scores", n, s.len())?;
            s
        }
        // Without scores, fall back to vocabulary order (earlier pieces merge first).
        None => (0..n).map(|i| -(i as f32)).collect(),
    };
    // SentencePiece prepends "▁" to the input unless its model says otherwise; Gemma does not.
    let add_space_prefix = md_bool(md, "tokenizer.ggml.add_space_prefix")?.unwrap_or(!is_gemma);

    let merges = spm_merges(tokens, types, &scores);
    let unk = types
        .iter()
        .position(|&t| t == token_type::UNKNOWN)
        .map(|i| tokens[i])
        .or_else(|| tokens.iter().copied().find(|&t| t == "<unk>"));
    let mut builder = BPE::builder().vocab_and_merges(vocab_map(tokens), merges).byte_fallback(true).fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk.to_string());
    }
    let bpe = builder.build().map_err(TokenizerError::Build)?;

    let mut tok = tokenizers::Tokenizer::new(bpe);
    let replace_space: NormalizerWrapper = Replace::new(" ", SPM_SPACE).map_err(TokenizerError::Build)?.into();
    let normalizer = if add_space_prefix {
        NormalizerWrapper::Sequence(NormalizerSequence::new(vec![
            Prepend::new(SPM_SPACE.to_string()).into(),
            replace_space,
        ]))
    } else {
        replace_space
    };
    tok.with_normalizer(Some(normalizer)).map_err(TokenizerError::Build)?;

    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new(SPM_SPACE, " ").map_err(TokenizerError::Build)?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tok.with_decoder(Some(DecoderSequence::new(decoders)));
    add_gguf_special_tokens(&mut tok, tokens, types)?;
    Ok(tok)
}

/// Derives BPE merges from a SentencePiece vocabulary: each piece that splits into two pieces
/// yields the merge (left, right) for every such split. Merges are ranked by the merged piece's
/// score (higher first), then by its id, then by the ids of the left and right parts.
///
/// Control, unknown and byte pieces neither take part in merges nor result from them, as in
/// SentencePiece itself.
fn spm_merges(tokens: &[&str], types: &[i64], scores: &[f32]) -> Merges {
    let mergeable = |i: usize| !matches!(types[i], token_type::CONTROL | token_type::UNKNOWN | token_type::BYTE);
    let index: HashMap<&str, u32> =
        tokens.iter().enumerate().filter(|&(i, _)| mergeable(i)).map(|(i, &t)| (t, i as u32)).collect();

    // (merged id, left id, right id)
    let mut found: Vec<(u32, u32, u32)> = Vec::with_capacity(tokens.len() * 2);
    for (i, piece) in tokens.iter().enumerate() {
        if !mergeable(i) {
            continue;
        }
        for (split, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(split);
            if let Some(&l) = index.get(left) {
                if let Some(&r) = index.get(right) {
                    found.push((i as u32, l, r));
                }
            }
        }
    }
    found.sort_unstable_by(|a, b| scores[b.0 as usize].total_cmp(&scores[a.0 as usize]).then_with(|| a.cmp(b)));
    found.into_iter().map(|(_, l, r)| (tokens[l as usize].to_string(), tokens[r as usize].to_string())).collect()
}

/// Registers control (and unknown) tokens as special added tokens and user-defined tokens as
/// ordinary added tokens. All are matched on the raw text: GGUF stores them in raw form (Gemma's
/// whitespace-run tokens hold real spaces, not "▁").
fn add_gguf_special_tokens(
    tok: &mut tokenizers::Tokenizer,
    tokens: &[&str],
    types: &[i64],
) -> Result<(), TokenizerError> {
    let added: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .filter_map(|(&content, &ty)| {
            let special = match ty {
                token_type::CONTROL | token_type::UNKNOWN => true,
                token_type::USER_DEFINED => false,
                _ => return None,
            };
            if content.is_empty() {
                return None;
            }
            Some(AddedToken::from(content, special).normalized(false))
        })
        .collect();
    if !added.is_empty() {
        tok.add_tokens(added).map_err(TokenizerError::Build)?;
    }
    Ok(())
}

fn vocab_map(tokens: &[&str]) -> Vocab {
    // Duplicate strings cannot both live in a string-keyed vocabulary; keep the first id.
    let mut vocab = Vocab::with_capacity(tokens.len());
    for (i, &t) in tokens.iter().enumerate() {
        vocab.entry(t.to_string()).or_insert(i as u32);
    }
    vocab
}

// ---------------------------------------------------------------------------------------------
// GGUF metadata access

fn missing(key: &str) -> TokenizerError {
    TokenizerError::MissingKey(key.to_string())
}

fn wrong_type(key: &str, expected: &'static str, found: &Value) -> TokenizerError {
    TokenizerError::WrongType { key: key.to_string(), expected, found: format!("{:?}", found.value_type()) }
}

fn check_len(key: &str, expected: usize, found: usize) -> Result<(), TokenizerError> {
    if expected == found {
        Ok(())
    } else {
        Err(TokenizerError::LengthMismatch { key: key.to_string(), expected, found })
    }
}

fn value_int(v: &Value) -> Option<i64> {
    Some(match *v {
        Value::U8(x) => x as i64,
        Value::I8(x) => x as i64,
        Value::U16(x) => x as i64,
        Value::I16(x) => x as i64,
        Value::U32(x) => x as i64,
        Value::I32(x) => x as i64,
        Value::U64(x) => i64::try_from(x).ok()?,
        Value::I64(x) => x,
        _ => return None,
    })
}

fn md_str<'a>(md: &'a HashMap<String, Value>, key: &str) -> Result<Option<&'a str>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(v) => Err(wrong_type(key, "a string", v)),
    }
}

fn md_u64(md: &HashMap<String, Value>, key: &str) -> Result<Option<u64>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(v) => match value_int(v) {
            Some(x) if x >= 0 => Ok(Some(x as u64)),
            _ => Err(wrong_type(key, "a non-negative integer", v)),
        },
    }
}

fn md_bool(md: &HashMap<String, Value>, key: &str) -> Result<Option<bool>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => match value_int(v) {
            Some(x) => Ok(Some(x != 0)),
            None => Err(wrong_type(key, "a bool", v)),
        },
    }
}

fn md_array<'a>(md: &'a HashMap<String, Value>, key: &str) -> Result<Option<&'a [Value]>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a.as_slice())),
        Some(v) => Err(wrong_type(key, "an array", v)),
    }
}

fn md_string_array<'a>(md: &'a HashMap<String, Value>, key: &str) -> Result<Option<Vec<&'a str>>, TokenizerError> {
    let Some(items) = md_array(md, key)? else {
        return Ok(None);
    };
    items
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.as_str()),
            v => Err(wrong_type(key, "an array of strings", v)),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn md_int_array(md: &HashMap<String, Value>, key: &str) -> Result<Option<Vec<i64>>, TokenizerError> {
    let Some(items) = md_array(md, key)? else {
        return Ok(None);
    };
    items
        .iter()
        .map(|v| value_int(v).ok_or_else(|| wrong_type(key, "an array of integers", v)))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn md_f32_array(md: &HashMap<String, Value>, key: &str) -> Result<Option<Vec<f32>>, TokenizerError> {
    let Some(items) = md_array(md, key)? else {
        return Ok(None);
    };
    items
        .iter()
        .map(|v| match *v {
            Value::F32(x) => Ok(x),
            Value::F64(x) => Ok(x as f32),
            ref v => Err(wrong_type(key, "an array of floats", v)),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn push_unique(ids: &mut Vec<u32>, id: u32) {
    if !ids.contains(&id) {
        ids.push(id);
    }
}

// ---------------------------------------------------------------------------------------------
// Hugging Face side files

fn read_text_if_present(path: &Path) -> Result<Option<String>, TokenizerError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TokenizerError::Io { path: path.to_path_buf(), source }),
    }
}

fn read_json_if_present(path: &Path) -> Result<Option<serde_json::Value>, TokenizerError> {
    let Some(text) = read_text_if_present(path)? else {
        return Ok(None);
    };
    serde_json::from_str(&text).map(Some).map_err(|source| TokenizerError::Json { path: path.to_path_buf(), source })
}

/// A token id, or a list of them, as config files write `eos_token_id`.
fn json_ids(v: &serde_json::Value) -> Option<Vec<u32>> {
    let one = |v: &serde_json::Value| v.as_u64().and_then(|x| u32::try_from(x).ok());
    match v {
        serde_json::Value::Array(items) => Some(items.iter().filter_map(one).collect()),
        v => one(v).map(|id| vec![id]),
    }
}

/// If the tokenizer's post-processor is a template that starts single sequences with a special
/// token (how `tokenizer.json` files usually add BOS), that token's id.
fn template_leading_special(tok: &tokenizers::Tokenizer) -> Option<u32> {
    fn find(v: &serde_json::Value) -> Option<u32> {
        if v.get("type").and_then(|t| t.as_str()) == Some("TemplateProcessing") {
            let first = v.get("single")?.as_array()?.first()?;
            let name = first.get("SpecialToken")?.get("id")?.as_str()?;
            let ids = v.get("special_tokens")?.get(name)?.get("ids")?.as_array()?;
            return ids.first()?.as_u64().and_then(|x| u32::try_from(x).ok());
        }
        v.get("processors")?.as_array()?.iter().find_map(find)
    }
    let pp = serde_json::to_value(tok.get_post_processor()?).ok()?;
    find(&pp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file;
    use std::sync::OnceLock;

    const GEMMA_GGUF: &str = "gemma3-270m/gemma-3-270m-q4_k_m.gguf";
    const SMOLLM_GGUF: &str = "smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf";

    const ROUND_TRIP: &[&str] = &[
        "Hello world",
        "안녕하세요, 오늘 날씨가 정말 좋네요!",
        "今日はいい天気ですね。東京タワーに行きましょう",
        "我们今天去北京吃烤鸭",
        "👩‍👩‍👧‍👦🚀✨",
        "  a\n\n\tb  ",
        "𓀀𓁐 ꙮ",
        " leading space, trailing space ",
        "line one\r\nline two\n\n\n   indented\ttabbed",
        "Numbers 1234567 and 3.14159, code: fn main() { println!(\"hi\"); }",
        "",
    ];

    fn models_dir() -> PathBuf {
        match std::env::var_os("STUDIO_MODELS_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../models"),
        }
    }

    /// Reads only a GGUF file's header (metadata and tensor infos, not the weights).
    fn gguf_metadata(rel: &str) -> HashMap<String, Value> {
        let path = models_dir().join(rel);
        let file = std::fs::File::open(&path).unwrap_or_else(|e| {
            panic!(
                "model file {} is missing ({e}): run `bash scripts/fetch-models.sh` \
                 (or point STUDIO_MODELS_DIR at a folder holding the models)",
                path.display()
            )
        });
        let mut reader = std::io::BufReader::new(file);
        gguf_file::Content::read(&mut reader)
            .unwrap_or_else(|e| panic!("{} is not a readable GGUF file: {e}", path.display()))
            .metadata
    }

    fn load(rel: &str) -> Tokenizer {
        let md = gguf_metadata(rel);
        let started = Instant::now();
        let tok = Tokenizer::from_gguf(&md).expect("tokenizer from gguf");
        eprintln!("{rel}: tokenizer built in {:?}", started.elapsed());
        tok
    }

    fn gemma() -> &'static Tokenizer {
        static TOK: OnceLock<Tokenizer> = OnceLock::new();
        TOK.get_or_init(|| load(GEMMA_GGUF))
    }

    fn smollm() -> &'static Tokenizer {
        static TOK: OnceLock<Tokenizer> = OnceLock::new();
        TOK.get_or_init(|| load(SMOLLM_GGUF))
    }

    #[test]
    fn token_bytes_join_back_to_the_text() {
        for tok in [gemma(), smollm()] {
            let bytes = tok.token_bytes();
            assert_eq!(bytes.len(), tok.vocab_size());
            for text in ROUND_TRIP {
                let ids = tok.encode(text, false).unwrap();
                let joined: Vec<u8> = ids.iter().flat_map(|&id| bytes[id as usize].0.clone()).collect();
                assert_eq!(String::from_utf8_lossy(&joined), *text, "{tok:?}");
            }
            for &eos in tok.eos_ids() {
                assert!(bytes[eos as usize].1, "eos {eos} is special");
            }
        }
    }

    fn pieces(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
        ids.iter().map(|&id| tok.id_to_token(id).unwrap()).collect()
    }

    #[test]
    fn gemma_hello() {
        let tok = gemma();
        assert_eq!(tok.encode("Hello", true).unwrap(), vec![2, 9259]);
        assert_eq!(tok.encode("Hello", false).unwrap(), vec![9259]);
        assert_eq!(tok.bos_id(), Some(2));
        assert!(tok.add_bos());
        assert_eq!(tok.vocab_size(), 262_144);
        assert_eq!(tok.chat_template(), None);
    }

    #[test]
    fn gemma_sentencepiece_segmentation() {
        let tok = gemma();
        // No dummy prefix for Gemma: a leading space is part of the first piece.
        let ids = tok.encode(" Hello", false).unwrap();
        assert_eq!(pieces(tok, &ids), ["▁Hello"]);
        assert_eq!(ids, [26352]);
        let ids = tok.encode("Hello world", false).unwrap();
        assert_eq!(pieces(tok, &ids), ["Hello", "▁world"]);
        assert_eq!(ids, [9259, 1902]);
        // Whitespace runs and newlines are user-defined tokens; these ids were checked against
        // SentencePiece itself on the same vocabulary.
        assert_eq!(tok.encode("  a\n\n\tb  ", false).unwrap(), [138, 236746, 108, 255968, 236763, 138]);
        // Unknown characters fall back to UTF-8 byte tokens.
        assert_eq!(tok.encode("𓀀𓁐 ꙮ", false).unwrap(), [478, 385, 366, 366, 478, 385, 367, 382, 236743, 472, 391, 412]);
    }

    #[test]
    fn gemma_byte_fallback() {
        let tok = gemma();
        let text = "𓀀𓁐 ꙮ";
        let ids = tok.encode(text, false).unwrap();
        let toks = pieces(tok, &ids);
        assert!(toks.iter().any(|t| t.starts_with("<0x") && t.ends_with('>')), "expected byte tokens in {toks:?}");
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
    }

    #[test]
    fn gemma_special_tokens() {
        let tok = gemma();
        let ids = tok.encode("<start_of_turn>user\nhi<end_of_turn>", false).unwrap();
        assert_eq!(ids.first(), Some(&105));
        assert_eq!(ids.last(), Some(&106));
        assert_eq!(ids.iter().filter(|&&id| id == 105 || id == 106).count(), 2);
        assert_eq!(tok.token_to_id("<start_of_turn>"), Some(105));
        assert_eq!(tok.id_to_token(106).as_deref(), Some("<end_of_turn>"));
        assert!(tok.eos_ids().contains(&1));
        assert!(tok.eos_ids().contains(&106));
        assert_eq!(tok.eos_ids()[0], 1);
        // Control tokens are dropped when asked; the user-defined "\n" is text and stays.
        assert_eq!(tok.decode(&ids, true).unwrap(), "user\nhi");
        assert_eq!(tok.decode(&ids, false).unwrap(), "<start_of_turn>user\nhi<end_of_turn>");
        let with_bos = tok.encode("hi", true).unwrap();
        assert_eq!(tok.decode(&with_bos, true).unwrap(), "hi");
        assert_eq!(tok.decode(&with_bos, false).unwrap(), "<bos>hi");
    }

    #[test]
    fn smollm_hello() {
        let tok = smollm();
        assert_eq!(tok.encode("Hello", true).unwrap(), vec![19556]);
        assert_eq!(tok.encode("Hello", false).unwrap(), vec![19556]);
        assert!(!tok.add_bos());
        assert_eq!(tok.bos_id(), Some(1));
        assert_eq!(tok.vocab_size(), 49_152);
        let ids = tok.encode("Hello world", false).unwrap();
        assert_eq!(pieces(tok, &ids), ["Hello", "Ġworld"]);
        assert!(tok.chat_template().unwrap().contains("<|im_start|>"));
    }

    #[test]
    fn smollm_digits_split_individually() {
        let tok = smollm();
        let ids = tok.encode("year 2024", false).unwrap();
        assert_eq!(pieces(tok, &ids), ["year", "Ġ", "2", "0", "2", "4"]);
    }

    #[test]
    fn smollm_special_tokens() {
        let tok = smollm();
        let im_start = tok.token_to_id("<|im_start|>").unwrap();
        let im_end = tok.token_to_id("<|im_end|>").unwrap();
        let ids = tok.encode("<|im_start|>user", false).unwrap();
        assert_eq!(ids[0], im_start);
        assert_eq!(pieces(tok, &ids[1..]), ["user"]);
        let ids = tok.encode("<|im_start|>user\nhi<|im_end|>\n", false).unwrap();
        assert_eq!(ids.iter().filter(|&&id| id == im_start).count(), 1);
        assert_eq!(ids.iter().filter(|&&id| id == im_end).count(), 1);
        assert_eq!(tok.decode(&ids, true).unwrap(), "user\nhi\n");
        assert_eq!(tok.eos_ids()[0], 2);
        assert!(tok.eos_ids().contains(&im_end));
    }

    #[test]
    fn round_trip_both_models() {
        for (name, tok) in [("gemma", gemma()), ("smollm", smollm())] {
            for &text in ROUND_TRIP {
                let ids = tok.encode(text, false).unwrap();
                let back = tok.decode(&ids, false).unwrap();
                assert_eq!(back, text, "{name}: round trip of {text:?} via {ids:?}");
                // BOS (if any) disappears when decoding with skip_special.
                let ids = tok.encode(text, true).unwrap();
                assert_eq!(tok.decode(&ids, true).unwrap(), text, "{name}: {text:?}");
            }
        }
    }

    #[test]
    fn tokenizer_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Tokenizer>();
    }

    #[test]
    fn missing_keys_are_named() {
        let mut md = HashMap::new();
        let err = Tokenizer::from_gguf(&md).unwrap_err();
        assert!(err.to_string().contains("tokenizer.ggml.model"), "{err}");
        md.insert("tokenizer.ggml.model".to_string(), Value::String("gpt2".into()));
        let err = Tokenizer::from_gguf(&md).unwrap_err();
        assert_eq!(err.to_string(), "gguf metadata key tokenizer.ggml.tokens missing");
        md.insert("tokenizer.ggml.tokens".to_string(), Value::Array(vec![Value::String("a".into())]));
        let err = Tokenizer::from_gguf(&md).unwrap_err();
        assert!(err.to_string().contains("tokenizer.ggml.merges"), "{err}");
        md.insert("tokenizer.ggml.model".to_string(), Value::String("rwkv".into()));
        let err = Tokenizer::from_gguf(&md).unwrap_err();
        assert!(matches!(err, TokenizerError::UnsupportedModel(_)), "{err}");
    }

    /// A tiny SentencePiece-style vocabulary: merges are derived from scores.
    #[test]
    fn spm_merges_follow_scores() {
        let tokens = ["<unk>", "<s>", "</s>", "a", "b", "c", "ab", "bc", "abc", "▁", "▁a"];
        let types: [i64; 11] = [2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1];
        let scores = [0.0, 0.0, 0.0, -1.0, -1.0, -1.0, -3.0, -2.0, -4.0, -1.0, -5.0];
        let merges = spm_merges(&tokens, &types, &scores);
        let m = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(merges, [m("b", "c"), m("a", "b"), m("a", "bc"), m("ab", "c"), m("▁", "a")]);

        let arr = |v: Vec<Value>| Value::Array(v);
        let md: HashMap<String, Value> = [
            ("tokenizer.ggml.model", Value::String("llama".into())),
            ("tokenizer.ggml.tokens", arr(tokens.iter().map(|t| Value::String(t.to_string())).collect())),
            ("tokenizer.ggml.token_type", arr(types.iter().map(|&t| Value::I32(t as i32)).collect())),
            ("tokenizer.ggml.scores", arr(scores.iter().map(|&s| Value::F32(s)).collect())),
            ("tokenizer.ggml.bos_token_id", Value::U32(1)),
            ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let tok = Tokenizer::from_gguf(&md).unwrap();
        // Not gemma and no add_space_prefix key: a "▁" is prepended, like SentencePiece does.
        assert!(tok.add_bos());
        let ids = tok.encode("abc", true).unwrap();
        assert_eq!(pieces(&tok, &ids), ["<s>", "▁", "abc"]);
        assert_eq!(tok.decode(&ids, true).unwrap(), "abc");
        assert_eq!(tok.eos_ids(), [2]);
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn from_tokenizer_json_matches_gguf() {
        let gguf = smollm();
        let dir = tempfile::tempdir().unwrap();
        let json_path = dir.path().join("tokenizer.json");
        write(dir.path(), "tokenizer.json", &gguf.inner().to_string(false).unwrap());
        write(
            dir.path(),
            "tokenizer_config.json",
            r#"{"add_bos_token": false, "bos_token": "<|im_start|>",
                "eos_token": {"content": "<|im_end|>", "special": true},
                "chat_template": "{% for m in messages %}<|im_start|>{{ m.content }}{% endfor %}"}"#,
        );
        write(dir.path(), "config.json", r#"{"bos_token_id": 1, "eos_token_id": 2}"#);
        let tok = Tokenizer::from_tokenizer_json(&json_path).unwrap();
        for &text in ROUND_TRIP.iter().chain(&["<|im_start|>user\nhi<|im_end|>"]) {
            assert_eq!(tok.encode(text, true).unwrap(), gguf.encode(text, true).unwrap(), "{text:?}");
        }
        assert_eq!(tok.bos_id(), Some(1));
        assert!(!tok.add_bos());
        assert_eq!(tok.eos_ids()[0], 2);
        assert!(tok.eos_ids().contains(&0), "<|endoftext|> ends generation too");
        assert_eq!(tok.vocab_size(), gguf.vocab_size());
        assert!(tok.chat_template().unwrap().starts_with("{% for m"));
    }

    /// Without tokenizer_config.json, a post-processor template that starts with a special token
    /// marks the BOS; encode() must still add it exactly once.
    #[test]
    fn from_tokenizer_json_template_bos() {
        let gguf = smollm();
        let mut inner = gguf.inner().clone();
        let template = tokenizers::processors::template::TemplateProcessing::builder()
            .try_single("<|endoftext|> $A")
            .unwrap()
            .special_tokens(vec![("<|endoftext|>", 0)])
            .build()
            .unwrap();
        inner.with_post_processor(Some(template));
        let dir = tempfile::tempdir().unwrap();
        let json_path = dir.path().join("tokenizer.json");
        inner.save(&json_path, false).unwrap();
        write(dir.path(), "generation_config.json", r#"{"eos_token_id": [2, 5]}"#);
        write(dir.path(), "chat_template.jinja", "{{ bos_token }}");

        let tok = Tokenizer::from_tokenizer_json(&json_path).unwrap();
        assert_eq!(tok.bos_id(), Some(0));
        assert!(tok.add_bos());
        assert_eq!(tok.encode("Hello", true).unwrap(), [0, 19556]);
        assert_eq!(tok.encode("Hello", false).unwrap(), [19556]);
        assert_eq!(&tok.eos_ids()[..2], [2, 5]);
        assert_eq!(tok.chat_template(), Some("{{ bos_token }}"));
    }

    #[test]
    fn from_tokenizer_json_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        let err = Tokenizer::from_tokenizer_json(&path).unwrap_err();
        assert!(err.to_string().contains("tokenizer.json"), "{err}");
        write(dir.path(), "tokenizer.json", &smollm().inner().to_string(false).unwrap());
        write(dir.path(), "config.json", "{ not json");
        let err = Tokenizer::from_tokenizer_json(&path).unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
    }
}
