//! Soft prompts through the engine, on tiny random models of both families: batch and TP
//! invariance, agreement with the training forward, the prefix cache's key, validation
//! against the loaded model.
//!
//! Invariance is the engine's on its batched kernels, which take the quant types of real
//! models (here Q8_0, so the tiny models are 64 wide); f32 GGUF matrices go through
//! candle's matmul instead, which is exact enough to compare with the training forward
//! but not batch invariant.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use super::*;
use crate::model::{FamilyConfig, ModelFiles};
use crate::train::rng::SplitMix64;
use crate::train::tests::{tiny_gguf, tiny_weights};
use crate::train::{SoftPrompt, TrainableModel};

const BOS: u32 = 1;
/// The tiny models' name: the soft prompts here are trained "on" it.
const MODEL: &str = "tiny";
const FAMILIES: [&str; 2] = ["gemma3", "llama"];

struct Tiny {
    _dir: tempfile::TempDir,
    files: ModelFiles,
    trainable: TrainableModel,
}

/// The training tests' tiny model, dense f32 (16 wide).
fn tiny(family: &str) -> Tiny {
    let (cfg, weights) = tiny_weights(family, DType::F32);
    let trainable = TrainableModel::from_weights(MODEL, &cfg, &weights, Some(BOS)).unwrap();
    let (dir, files) = tiny_gguf(MODEL, cfg, &weights, None);
    Tiny { _dir: dir, files, trainable }
}

/// A tiny model in Q8_0, 64 wide with heads of 32, so that every matrix and every
/// tensor-parallel part is whole quant blocks and takes the engine's batched kernels.
fn tiny_q8(family: &str) -> Tiny {
    use crate::train::{gemma3, llama};
    let (cfg, weights) = match family {
        "gemma3" => {
            let c = crate::model::gemma3::Config {
                hidden_size: 64,
                intermediate_size: 128,
                head_dim: 32,
                query_pre_attn_scalar: 32.0,
                ..gemma3::tiny_config()
            };
            let w = gemma3::tiny_random(&c, 21, DType::F32);
            (FamilyConfig::Gemma3(c), w)
        }
        _ => {
            let c = crate::model::llama::Config {
                hidden_size: 64,
                intermediate_size: 128,
                num_attention_heads: 2,
                num_key_value_heads: Some(1),
                ..llama::tiny_config()
            };
            let w = llama::tiny_random(&c, 22, DType::F32);
            (FamilyConfig::Llama(c), w)
        }
    };
    // Smaller weights than the 16-wide model's, so that its logits at 64 wide do not
    // saturate the softmax (logprobs of exactly 0 would compare nothing).
    let weights: HashMap<String, Tensor> =
        weights.into_iter().map(|(n, w)| if n.contains("norm") { (n, w) } else { (n, (w * 0.4).unwrap()) }).collect();
    let trainable = TrainableModel::from_weights(MODEL, &cfg, &weights, Some(BOS)).unwrap();
    let (dir, files) = tiny_gguf(MODEL, cfg, &weights, Some(candle_core::quantized::GgmlDType::Q8_0));
    Tiny { _dir: dir, files, trainable }
}

fn engine(t: &Tiny, tp: usize, cfg: EngineConfig) -> Engine {
    let model = ShardedModel::load_cpu(t.files.clone(), tp).unwrap();
    let vocab = t.files.config.vocab_size();
    Engine::new(model, Tokenizer::word_level_for_tests(vocab, BOS), cfg)
}

fn no_prefix_cache() -> EngineConfig {
    EngineConfig { prefix_cache_bytes: 0, ..EngineConfig::default() }
}

/// `k` random rows for the tiny model, under `id`.
fn soft(t: &Tiny, id: &str, k: usize, seed: u64) -> Arc<NamedSoftPrompt> {
    let hidden = t.trainable.hidden_size();
    let mut rng = SplitMix64::new(seed);
    let rows = (0..k * hidden).map(|_| rng.normal() as f32).collect();
    NamedSoftPrompt::new(id, SoftPrompt::new(MODEL, hidden, rows).unwrap())
}

fn greedy(prompt: &[u32], soft_prompt: Option<&Arc<NamedSoftPrompt>>) -> GenerateRequest {
    GenerateRequest {
        ignore_eos: true,
        soft_prompt: soft_prompt.cloned(),
        ..GenerateRequest::greedy(prompt.to_vec(), 6)
    }
}

/// What one sequence produced: its tokens as `(id, logprob bits)`, and its `Finished`
/// event's `(prompt_tokens, cached_tokens)`.
#[derive(Debug, Clone, PartialEq, Default)]
struct Outcome {
    tokens: Vec<(u32, u32)>,
    logprobs: Vec<f32>,
    usage: (usize, usize),
}

/// Adds every request at once and steps until all are done.
fn run(e: &mut Engine, reqs: Vec<GenerateRequest>) -> Vec<Outcome> {
    let ids: Vec<SeqId> = reqs.into_iter().map(|r| e.add(r).unwrap()).collect();
    let mut out: HashMap<SeqId, Outcome> = HashMap::new();
    while e.has_work() {
        for ev in e.step().unwrap() {
            match ev {
                Event::Token { seq, token, .. } => {
                    assert_ne!(token.id, VIRTUAL_TOKEN, "a virtual token was reported");
                    let o = out.entry(seq).or_default();
                    o.tokens.push((token.id, token.logprob.to_bits()));
                    o.logprobs.push(token.logprob);
                }
                Event::Finished { seq, prompt_tokens, cached_tokens, .. } => {
                    out.entry(seq).or_default().usage = (prompt_tokens, cached_tokens);
                }
                Event::Prefill { .. } => {}
            }
        }
    }
    ids.iter().map(|id| out.remove(id).expect("finished")).collect()
}

fn alone(e: &mut Engine, req: GenerateRequest) -> Outcome {
    run(e, vec![req]).remove(0)
}

/// Prompts of the invariance tests: long enough to cross the tiny Gemma's sliding window
/// (4) on both sides of the virtual tokens; one without BOS (virtual tokens first).
fn prompts() -> Vec<Vec<u32>> {
    vec![vec![BOS, 5, 9, 17, 30, 2, 44, 8], vec![BOS, 12, 13, 14], vec![20, 21, 22, 23, 24], vec![BOS]]
}

#[test]
fn a_soft_prompted_sequence_says_the_same_batched_as_alone() {
    for family in FAMILIES {
        let t = tiny_q8(family);
        let (a, b) = (soft(&t, "a", 3, 1), soft(&t, "b", 5, 2));
        let mut reqs = Vec::new();
        for p in prompts() {
            reqs.extend([greedy(&p, Some(&a)), greedy(&p, Some(&b)), greedy(&p, None)]);
        }
        // A twin of the first: it follows its prefill and forks its KV.
        reqs.push(greedy(&prompts()[0], Some(&a)));
        let mut e = engine(&t, 1, no_prefix_cache());
        let want: Vec<Outcome> = reqs.iter().map(|r| alone(&mut e, r.clone())).collect();
        eprintln!("{family}: logprobs with soft prompt a {:?}, without {:?}", want[0].logprobs, want[2].logprobs);
        assert_ne!(want[0].logprobs, want[2].logprobs, "{family}: the soft prompt changes nothing");
        assert_ne!(want[0].logprobs, want[1].logprobs, "{family}: two soft prompts say the same");
        // All together, under a large budget and under one that cuts the prompts (and the
        // soft prompts) into pieces of 2 positions.
        for max_batch_tokens in [64, 2] {
            let mut e = engine(&t, 1, EngineConfig { max_batch_tokens, ..no_prefix_cache() });
            let got = run(&mut e, reqs.clone());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.tokens, w.tokens, "{family}: request {i} batched (budget {max_batch_tokens})");
                assert_eq!(g.usage, w.usage, "{family}: request {i}");
            }
        }
    }
}

#[test]
fn a_soft_prompted_sequence_says_the_same_at_tp2_as_at_tp1() {
    for family in FAMILIES {
        let t = tiny_q8(family);
        let a = soft(&t, "a", 3, 3);
        let reqs: Vec<GenerateRequest> = prompts().iter().map(|p| greedy(p, Some(&a))).collect();
        let want = run(&mut engine(&t, 1, no_prefix_cache()), reqs.clone());
        let got = run(&mut engine(&t, 2, no_prefix_cache()), reqs);
        assert_eq!(got, want, "{family}: TP=2 differs from TP=1");
    }
}

/// `log_softmax(row)[id]` in f64.
fn logprob(row: &[f32], id: u32) -> f64 {
    let m = row.iter().fold(f32::MIN, |a, b| a.max(*b)) as f64;
    let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
    row[id as usize] as f64 - lse
}

#[test]
fn the_engine_agrees_with_the_training_forward_on_a_soft_prompt() {
    for family in FAMILIES {
        let t = tiny(family);
        let sp = soft(&t, "a", 3, 4);
        let rows = sp.soft_prompt.to_tensor(DType::F32, &Device::Cpu).unwrap();
        let (prompt, forced) = (vec![BOS, 5, 9, 17, 30, 2, 44], vec![8u32, 3, 7]);

        // Every position's logits, in one chunk: the model with the rows spliced in.
        let model = ShardedModel::load_cpu(t.files.clone(), 1).unwrap();
        let tokens: Vec<u32> = [&[BOS][..], &[VIRTUAL_TOKEN; 3], &prompt[1..]].concat();
        let chunk = Chunk {
            seq: 1,
            tokens,
            start_pos: 0,
            all_logits: true,
            tail_logits: 0,
            no_logits: false,
            embeddings: Some(InputEmbeddings { first: 1, values: sp.soft_prompt.embeddings.clone() }),
        };
        let engine_logits = model.forward(vec![chunk]).unwrap().remove(0);
        drop(model);
        let training = t.trainable.logits(&rows, &prompt).unwrap();
        let diff = (&training - &engine_logits).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let scale = engine_logits.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        eprintln!("{family}: soft-prompted logits differ by {diff:e} (largest {scale})");
        assert!(diff <= 1e-5 * scale, "{family}: logits differ by {diff} (largest {scale})");

        // The engine's own splice (after the BOS) and chunking (3 positions a step, so the
        // soft prompt is cut), scoring the forced tokens.
        let mut e = engine(&t, 1, EngineConfig { max_batch_tokens: 3, ..no_prefix_cache() });
        let req =
            GenerateRequest { soft_prompt: Some(sp.clone()), ..GenerateRequest::score(prompt.clone(), forced.clone()) };
        let scored = alone(&mut e, req);
        assert_eq!(scored.tokens.iter().map(|t| t.0).collect::<Vec<_>>(), forced);
        assert_eq!(scored.usage, (3 + prompt.len(), 0));
        let input: Vec<u32> = prompt.iter().chain(&forced[..2]).copied().collect();
        let rows_out = t.trainable.logits(&rows, &input).unwrap().to_vec2::<f32>().unwrap();
        let first = 3 + prompt.len() - 1;
        for (j, &tok) in forced.iter().enumerate() {
            let want = logprob(&rows_out[first + j], tok);
            let got = scored.logprobs[j] as f64;
            assert!((got - want).abs() < 1e-4, "{family}: forced token {j}: logprob {got} vs training {want}");
        }
    }
}

#[test]
fn the_prefix_cache_keys_on_the_soft_prompt() {
    let t = tiny_q8("gemma3");
    let mut e = engine(&t, 1, EngineConfig::default());
    let a = soft(&t, "a", 4, 5);
    let fixed: Vec<u32> = [BOS].into_iter().chain(3..23).collect();
    let first = alone(&mut e, greedy(&fixed, Some(&a)));
    assert_eq!(first.usage, (25, 0), "21 tokens and 4 virtual ones, nothing cached yet");
    let again = alone(&mut e, greedy(&fixed, Some(&a)));
    assert_eq!(again.usage, (25, 24), "all but the last position comes from the cache");
    assert_eq!(again.tokens, first.tokens);
    // The same id and rows in another allocation hit too.
    let copy = NamedSoftPrompt::new("a", a.soft_prompt.clone());
    assert_eq!(alone(&mut e, greedy(&fixed, Some(&copy))).usage, (25, 24));

    // A tuned template's fixed part with a new last line: prefilled once.
    let line: Vec<u32> = fixed.iter().copied().chain([40, 41, 42]).collect();
    let extended = alone(&mut e, greedy(&line, Some(&a)));
    assert_eq!(extended.usage, (28, 25));
    let fresh = alone(&mut engine(&t, 1, no_prefix_cache()), greedy(&line, Some(&a)));
    assert_eq!(extended.tokens, fresh.tokens, "reused KV says what a fresh prefill says");

    // Another soft prompt, the same id with other rows, or none: never a hit.
    let b = soft(&t, "b", 4, 6);
    let impostor = NamedSoftPrompt::new("a", b.soft_prompt.clone());
    for (what, sp) in [("another id", Some(&b)), ("other rows under the same id", Some(&impostor)), ("none", None)] {
        let got = alone(&mut e, greedy(&fixed, sp));
        let want = if sp.is_some() { 25 } else { 21 };
        assert_eq!(got.usage, (want, 0), "{what}: must not reuse the KV of soft prompt a");
    }
    // ...while each of those is now cached under its own key.
    assert_eq!(alone(&mut e, greedy(&fixed, Some(&b))).usage, (25, 24));
}

#[test]
fn a_soft_prompt_must_fit_the_loaded_model() {
    let t = tiny("llama");
    let mut e = engine(&t, 1, no_prefix_cache());
    let hidden = t.trainable.hidden_size();
    let other = NamedSoftPrompt::new("s1", SoftPrompt::new("smollm2-135m", hidden, vec![0.0; 2 * hidden]).unwrap());
    let err = e.add(greedy(&[BOS, 5], Some(&other))).unwrap_err();
    assert!(matches!(err, EngineError::SoftPrompt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("smollm2-135m") && msg.contains(MODEL), "{msg}");

    let narrow = NamedSoftPrompt::new("s2", SoftPrompt::new(MODEL, hidden / 2, vec![0.0; hidden]).unwrap());
    let err = e.add(greedy(&[BOS, 5], Some(&narrow))).unwrap_err();
    assert!(matches!(err, EngineError::SoftPromptWidth { got: 8, want: 16, .. }), "{err:?}");

    let mut rows = vec![0.0; 2 * hidden];
    rows[hidden + 3] = f32::NAN;
    let nan = NamedSoftPrompt::new("s4", SoftPrompt::new(MODEL, hidden, rows).unwrap());
    let err = e.add(greedy(&[BOS, 5], Some(&nan))).unwrap_err();
    assert!(matches!(err, EngineError::SoftPromptNotFinite { row: 1, .. }), "{err:?}");

    // Virtual tokens count towards the context (512 positions).
    let long = soft(&t, "s3", 20, 7);
    let err = e.add(greedy(&[BOS; 492], Some(&long))).unwrap_err();
    assert!(matches!(err, EngineError::PromptTooLong { got: 512, limit: 512 }), "{err:?}");
    // A soft prompt alone is a prompt.
    assert_eq!(alone(&mut e, greedy(&[], Some(&long))).usage, (20, 0));
    assert!(!e.has_work());
}
