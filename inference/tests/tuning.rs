//! Prompt tuning on the real bundled models: the differentiable training forward agrees
//! with the engine's, a short tuning run on SmolLM2 lowers the loss, and a soft prompt
//! served on Gemma is TP invariant and hits the prefix cache.

mod common;

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use inference::engine::NamedSoftPrompt;
use inference::train::{train, Example, SoftPrompt, StepProgress, TrainConfig, TrainableModel};
use inference::{Chunk, Event, GenerateRequest, ShardedModel, Tokenizer};

fn engine_logits(model: &ShardedModel, tokens: &[u32]) -> Tensor {
    let chunk = Chunk {
        seq: 1,
        tokens: tokens.to_vec(),
        start_pos: 0,
        all_logits: true,
        tail_logits: 0,
        no_logits: false,
        embeddings: None,
    };
    let logits = model.forward(vec![chunk]).unwrap().remove(0);
    model.free(vec![1]);
    logits
}

/// The largest logit difference of `a` and `b` over all rows, relative to the largest
/// logit, and the mean NLL of `tokens` under each.
fn compare(a: &[Vec<f32>], b: &[Vec<f32>], tokens: &[u32]) -> (f32, f32, f32) {
    let lse = |r: &[f32]| {
        let m = r.iter().fold(f32::MIN, |a, b| a.max(*b));
        m + r.iter().map(|v| (v - m).exp()).sum::<f32>().ln()
    };
    let nll = |rows: &[Vec<f32>]| {
        let n = tokens.len() - 1;
        (0..n).map(|i| lse(&rows[i]) - rows[i][tokens[i + 1] as usize]).sum::<f32>() / n as f32
    };
    let mut worst: f32 = 0.0;
    for (x, y) in a.iter().zip(b) {
        let scale = y.iter().fold(0f32, |m, v| m.max(v.abs()));
        worst = worst.max(x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs())) / scale);
    }
    (worst, nll(a), nll(b))
}

/// The engine's int8 kernels quantize activations, so its logits move by a few percent
/// from an exact forward, and they move as much between its own two kernel paths
/// (invariant numerics on and off). The training forward (dense f32) is held to that
/// spread; the exact agreement on dense weights is `train::tests`'.
fn check_against_engine(name: &str) {
    let (files, tok) = common::inspect(name);
    let started = Instant::now();
    let trainable = TrainableModel::load(&files, tok.bos_id()).unwrap();
    eprintln!("{name}: training model loaded (dequantized) in {:.2?}", started.elapsed());
    let tokens = tok.encode("The capital of France is Paris, and the capital of Italy is", true).unwrap();
    let engine = ShardedModel::load_cpu(files.clone(), 1).unwrap();
    let want = engine_logits(&engine, &tokens).to_vec2::<f32>().unwrap();
    drop(engine);
    inference::tp::set_invariant_numerics(false);
    let plain = ShardedModel::load_cpu(files, 1);
    inference::tp::set_invariant_numerics(true);
    let plain = engine_logits(&plain.unwrap(), &tokens).to_vec2::<f32>().unwrap();
    let empty = Tensor::zeros((0, trainable.hidden_size()), DType::F32, &Device::Cpu).unwrap();
    let got = trainable.logits(&empty, &tokens).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(got.len(), want.len());

    let (ours, nll_ours, nll_engine) = compare(&got, &want, &tokens);
    let (spread, _, _) = compare(&plain, &want, &tokens);
    eprintln!(
        "{name}: largest logit difference / largest logit: training forward {ours:.2e}, engine's two kernel \
         paths {spread:.2e}; mean NLL {nll_ours:.4} (training) vs {nll_engine:.4} (engine)"
    );
    assert!(ours < 3.0 * spread, "{name}: the training forward differs from the engine's by {ours:e}");
    assert!((nll_ours - nll_engine).abs() < 0.05 * nll_engine, "{name}: NLL {nll_ours} vs {nll_engine}");
    let argmax = |r: &[f32]| r.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    assert_eq!(argmax(got.last().unwrap()), argmax(want.last().unwrap()), "{name}: next token differs");
}

#[test]
fn training_forward_matches_the_engine_on_smollm2() {
    check_against_engine(common::SMOL);
}

#[test]
fn training_forward_matches_the_engine_on_gemma3() {
    check_against_engine(common::GEMMA);
}

fn sentiment_examples(tok: &Tokenizer) -> Vec<Example> {
    [("A wonderful, moving film.", "positive"), ("Dull and far too long.", "negative")]
        .iter()
        .chain(&[("I loved every minute.", "positive"), ("A waste of two hours.", "negative")])
        .map(|(review, label)| {
            let prompt = tok.encode(&format!("Review: {review}\nSentiment:"), true).unwrap();
            (prompt, tok.encode(&format!(" {label}"), false).unwrap())
        })
        .collect()
}

#[test]
fn a_short_tuning_run_on_smollm2_lowers_the_loss() {
    let (files, tok) = common::inspect(common::SMOL);
    let model = TrainableModel::load(&files, tok.bos_id()).unwrap();
    let examples = sentiment_examples(&tok);
    let cfg = TrainConfig {
        virtual_tokens: 8,
        epochs: 3,
        batch_size: 4,
        learning_rate: 0.02,
        warmup_ratio: 0.0,
        patience: None,
        init_ids: tok.encode("Classify the sentiment.", false).unwrap(),
        ..TrainConfig::default()
    };
    struct Log(Vec<StepProgress>, Instant);
    impl inference::train::Progress for Log {
        fn step(&mut self, p: &StepProgress) {
            eprintln!("step {}: loss {:.4}, grad norm {:.3}, {:.2?}", p.step, p.loss, p.grad_norm, self.1.elapsed());
            self.0.push(p.clone());
        }
    }
    // Deterministic: the same gradient twice, bit for bit (candle's CPU matmul splits work
    // over output tiles, never over the sum).
    let gradient = || {
        let var = candle_core::Var::from_tensor(
            &model.init_soft_prompt(8, &cfg.init_ids, 0).unwrap().to_tensor(DType::F32, &Device::Cpu).unwrap(),
        )
        .unwrap();
        let (p, e) = &examples[0];
        let grads = model.loss_sum(var.as_tensor(), p, e).unwrap().backward().unwrap();
        let g = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        g.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    assert_eq!(gradient(), gradient());
    let mut log = Log(Vec::new(), Instant::now());
    let (soft, report) = train(&model, &examples, &cfg, &mut log, &AtomicBool::new(false)).unwrap();
    let per_example = report.seconds / (report.steps * examples.len()) as f64;
    eprintln!("smollm2: {} steps in {:.2} s ({per_example:.3} s per example)", report.steps, report.seconds);
    assert_eq!(soft.model, "smollm2-135m");
    // The loss of the trained soft prompt, against the one it started from.
    let loss = |soft: &inference::train::SoftPrompt| {
        let t = soft.to_tensor(DType::F32, &Device::Cpu).unwrap();
        let sum: f32 =
            examples.iter().map(|(p, e)| model.loss_sum(&t, p, e).unwrap().to_scalar::<f32>().unwrap()).sum();
        sum / examples.iter().map(|(_, e)| e.len()).sum::<usize>() as f32
    };
    let start = model.init_soft_prompt(8, &cfg.init_ids, cfg.seed).unwrap();
    let (before, after) = (loss(&start), loss(&soft));
    eprintln!("smollm2: loss {before:.4} before, {after:.4} after");
    assert!(after < 0.8 * before, "loss {before} before, {after} after; steps {:?}", report.step_losses);
}

/// A soft-prompted request on the engine: its greedy tokens and `cached_tokens`.
fn serve(e: &mut inference::Engine, prompt: &[u32], sp: &std::sync::Arc<NamedSoftPrompt>) -> (Vec<u32>, usize) {
    let req = GenerateRequest {
        ignore_eos: true,
        soft_prompt: Some(sp.clone()),
        ..GenerateRequest::greedy(prompt.to_vec(), 8)
    };
    let id = e.add(req).unwrap();
    let (mut tokens, mut cached) = (Vec::new(), None);
    while e.has_work() {
        for ev in e.step().unwrap() {
            match ev {
                Event::Token { seq, token, .. } if seq == id => tokens.push(token.id),
                Event::Finished { seq, cached_tokens, .. } if seq == id => cached = Some(cached_tokens),
                _ => {}
            }
        }
    }
    (tokens, cached.expect("finished"))
}

/// Served on Gemma-3-270M, a soft prompt gives the same tokens at TP=2 as at TP=1, and a
/// template's fixed part is prefilled once: the second call (and one with a new last
/// line) starts from the prefix cache.
#[test]
fn a_soft_prompt_on_gemma3_serves_the_same_at_tp2_and_its_fixed_part_is_cached() {
    let template = "Review: A wonderful, moving film.\nSentiment: positive\nReview: Dull and far too long.\nSentiment:";
    let other = "Review: A wonderful, moving film.\nSentiment: positive\nReview: I loved every minute.\nSentiment:";
    let mut runs = Vec::new();
    for tp in [1, 2] {
        let mut e = common::engine(common::GEMMA, tp);
        let hidden = e.model().config().hidden_size();
        let mut rng = inference::train::rng::SplitMix64::new(5);
        let rows = (0..8 * hidden).map(|_| rng.normal() as f32).collect();
        let sp = NamedSoftPrompt::new("tuned-1", SoftPrompt::new(&e.model().files.name, hidden, rows).unwrap());
        let (fixed, line) = (e.tokenizer().encode(template, true).unwrap(), e.tokenizer().encode(other, true).unwrap());
        let first = serve(&mut e, &fixed, &sp);
        let second = serve(&mut e, &fixed, &sp);
        let third = serve(&mut e, &line, &sp);
        eprintln!("TP={tp}: cached tokens {}, {}, {}", first.1, second.1, third.1);
        assert_eq!(first.1, 0);
        assert_eq!(second, (first.0.clone(), fixed.len() + 8 - 1), "TP={tp}: the second call is all but cached");
        assert!(third.1 > 8, "TP={tp}: the shared part (and the virtual tokens) come from the cache");
        runs.push((first.0, third.0));
    }
    assert_eq!(runs[1], runs[0], "TP=2 tokens differ from TP=1");
}
