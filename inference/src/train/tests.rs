//! The training module on tiny random models of both families: gradients against finite
//! differences (f64), determinism, a loss that falls, bounds, early stopping, cancel.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, Tensor, Var};

use super::*;
use crate::model::FamilyConfig;

const BOS: u32 = 1;

fn tiny(family: &str, dtype: DType) -> TrainableModel {
    let (cfg, weights) = tiny_weights(family, dtype);
    TrainableModel::from_weights(&format!("tiny-{family}"), &cfg, &weights, Some(BOS)).unwrap()
}

fn loss_of(model: &TrainableModel, soft: &Tensor, prompt: &[u32], expected: &[u32]) -> f64 {
    model.loss_sum(soft, prompt, expected).unwrap().to_scalar::<f64>().unwrap()
}

/// The soft prompt's gradient of the loss against central differences, every element, in
/// f64. The sequence (1 + 3 soft + 6 prompt + 2 fed expected) is longer than the tiny
/// Gemma's sliding window (4), so local and global layers differ.
#[test]
fn soft_prompt_gradient_matches_finite_differences() {
    for family in ["gemma3", "llama"] {
        let model = tiny(family, DType::F64);
        let (prompt, expected) = (vec![BOS, 5, 9, 17, 30, 2, 44], vec![7, 3, 12]);
        let soft = Tensor::randn(0f64, 1.0, (3, model.hidden_size()), &Device::Cpu).unwrap();
        let var = Var::from_tensor(&soft).unwrap();
        let grads = model.loss_sum(var.as_tensor(), &prompt, &expected).unwrap().backward().unwrap();
        let analytic = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let base = soft.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let h = 1e-5;
        let mut worst: f64 = 0.0;
        for i in 0..base.len() {
            let at = |d: f64| {
                let mut v = base.clone();
                v[i] += d;
                let t = Tensor::from_vec(v, soft.shape(), &Device::Cpu).unwrap();
                loss_of(&model, &t, &prompt, &expected)
            };
            let numeric = (at(h) - at(-h)) / (2.0 * h);
            let err = (numeric - analytic[i]).abs() / (1e-6 + numeric.abs().max(analytic[i].abs()));
            worst = worst.max(err);
        }
        assert!(worst < 1e-5, "{family}: worst relative gradient error {worst:e}");
        assert!(analytic.iter().any(|g| g.abs() > 1e-4), "{family}: the gradient is all but zero");
    }
}

fn examples() -> Vec<Example> {
    // A learnable rule: the answer is the prompt's last token shifted by a constant.
    (0..6u32).map(|i| (vec![BOS, 10 + i, 20 + i], vec![30 + i, 2])).collect()
}

fn quick(seed: u64) -> TrainConfig {
    TrainConfig {
        virtual_tokens: 4,
        epochs: 6,
        learning_rate: 0.05,
        batch_size: 2,
        patience: None,
        seed,
        ..TrainConfig::default()
    }
}

#[test]
fn same_seed_gives_the_same_bits_and_another_seed_does_not() {
    let model = tiny("gemma3", DType::F32);
    let run = |seed| train(&model, &examples(), &quick(seed), &mut (), &AtomicBool::new(false)).unwrap();
    let bits = |sp: &SoftPrompt| sp.embeddings.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let (a, ra) = run(7);
    let (b, rb) = run(7);
    let (c, _) = run(8);
    assert_eq!(bits(&a), bits(&b));
    assert_eq!(ra.step_losses, rb.step_losses);
    assert_ne!(bits(&a), bits(&c));
    assert_eq!(a.model, "tiny-gemma3");
    assert_eq!(a.virtual_tokens(), 4);
}

#[test]
fn training_lowers_the_loss_on_both_families() {
    for family in ["gemma3", "llama"] {
        let model = tiny(family, DType::F32);
        let cfg = TrainConfig { epochs: 15, learning_rate: 0.1, init_ids: vec![5, 6], ..quick(3) };
        let mut steps = Vec::new();
        struct Log<'a>(&'a mut Vec<StepProgress>);
        impl Progress for Log<'_> {
            fn step(&mut self, p: &StepProgress) {
                self.0.push(p.clone());
            }
        }
        let (_, report) = train(&model, &examples(), &cfg, &mut Log(&mut steps), &AtomicBool::new(false)).unwrap();
        assert_eq!(steps.len(), 15 * 3);
        assert_eq!(report.stop, StopReason::Finished);
        let (first, last) = (report.epoch_losses[0], *report.epoch_losses.last().unwrap());
        assert!(last < 0.7 * first, "{family}: epoch losses {:?}", report.epoch_losses);
        // Warm-up: the first step's learning rate is a fraction of the peak.
        assert!(steps[0].learning_rate < cfg.learning_rate && steps[20].learning_rate == cfg.learning_rate);
    }
}

#[test]
fn soft_prompt_starts_from_the_instruction_or_seeded_vocabulary_rows() {
    let model = tiny("llama", DType::F32);
    let sp = model.init_soft_prompt(5, &[7, 8], 0).unwrap();
    let rows = model.embed(&[7, 8, 7, 8, 7]).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(sp.embeddings, rows);
    let drawn = |seed| model.init_soft_prompt(5, &[], seed).unwrap().embeddings;
    assert_eq!(drawn(1), drawn(1));
    assert_ne!(drawn(1), drawn(2));
}

#[test]
fn early_stopping_returns_the_best_epochs_soft_prompt() {
    let model = tiny("llama", DType::F32);
    // Scores peak at epoch 2, then fall: with patience 2 training stops after epoch 4.
    struct Scores(Vec<f64>, Vec<SoftPrompt>);
    impl Progress for Scores {
        fn epoch(&mut self, p: &EpochProgress) -> EpochVerdict {
            self.1.push(p.soft_prompt.clone());
            EpochVerdict { held_out: Some(self.0[p.epoch - 1]), stop: false }
        }
    }
    let mut scores = Scores(vec![0.5, 0.8, 0.7, 0.6, 0.9, 0.9], Vec::new());
    let cfg = TrainConfig { patience: Some(2), ..quick(1) };
    let (sp, report) = train(&model, &examples(), &cfg, &mut scores, &AtomicBool::new(false)).unwrap();
    assert_eq!(report.stop, StopReason::EarlyStopped);
    assert_eq!((report.epochs_run, report.best_epoch), (4, 2));
    assert_eq!(sp, scores.1[1]);
    assert_eq!(report.held_out, vec![Some(0.5), Some(0.8), Some(0.7), Some(0.6)]);
}

#[test]
fn cancel_stops_before_the_next_step() {
    let model = tiny("llama", DType::F32);
    struct CancelAt<'a>(&'a AtomicBool);
    impl Progress for CancelAt<'_> {
        fn step(&mut self, p: &StepProgress) {
            if p.step == 2 {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
    let cancel = AtomicBool::new(false);
    let err = train(&model, &examples(), &quick(1), &mut CancelAt(&cancel), &cancel).unwrap_err();
    assert!(matches!(err, TrainError::Cancelled { step: 3 }), "{err}");
}

#[test]
fn bad_settings_and_examples_name_the_field_and_the_limit() {
    let model = tiny("llama", DType::F32);
    let field = |cfg: TrainConfig| match train(&model, &examples(), &cfg, &mut (), &AtomicBool::new(false)) {
        Err(TrainError::OutOfRange { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let d = TrainConfig::default;
    assert_eq!(field(TrainConfig { virtual_tokens: 101, ..d() }), "virtual_tokens");
    assert_eq!(field(TrainConfig { virtual_tokens: 0, ..d() }), "virtual_tokens");
    assert_eq!(field(TrainConfig { epochs: 51, ..d() }), "epochs");
    assert_eq!(field(TrainConfig { learning_rate: 0.0, ..d() }), "learning_rate");
    assert_eq!(field(TrainConfig { learning_rate: f64::NAN, ..d() }), "learning_rate");
    assert_eq!(field(TrainConfig { weight_decay: -0.1, ..d() }), "weight_decay");
    assert_eq!(field(TrainConfig { warmup_ratio: 1.0, ..d() }), "warmup_ratio");
    assert_eq!(field(TrainConfig { batch_size: 65, ..d() }), "batch_size");
    assert_eq!(field(TrainConfig { max_grad_norm: 0.0, ..d() }), "max_grad_norm");
    assert_eq!(field(TrainConfig { patience: Some(0), ..d() }), "patience");
    assert_eq!(field(TrainConfig { init_ids: vec![48], ..d() }), "init_ids");
    let msg = TrainConfig { epochs: 51, ..d() }.validate().unwrap_err().to_string();
    assert_eq!(msg, "epochs is 51; it must be between 1 and 50");

    let run = |ex: Vec<Example>| train(&model, &ex, &d(), &mut (), &AtomicBool::new(false)).unwrap_err();
    assert!(matches!(run(vec![]), TrainError::OutOfRange { field: "examples", .. }));
    assert!(matches!(run(vec![(vec![1], vec![2]); 5001]), TrainError::OutOfRange { field: "examples", .. }));
    assert!(matches!(run(vec![(vec![1], vec![])]), TrainError::BadExample { example: 0, .. }));
    assert!(matches!(run(vec![(vec![1], vec![2]), (vec![], vec![2])]), TrainError::BadExample { example: 1, .. }));
    assert!(matches!(run(vec![(vec![1, 48], vec![2])]), TrainError::BadExample { example: 0, .. }));
    // The tiny models' context is 512 positions.
    match run(vec![(vec![1; 490], vec![2; 3])]) {
        TrainError::SequenceTooLong { example: 0, tokens: 513, limit: 512 } => {}
        other => panic!("{other:?}"),
    }
}

/// A tiny random model of `family` (`"gemma3"` or `"llama"`), dense, in `dtype`: its
/// config and weights (GGUF names).
pub(crate) fn tiny_weights(family: &str, dtype: DType) -> (FamilyConfig, HashMap<String, Tensor>) {
    match family {
        "gemma3" => {
            let c = gemma3::tiny_config();
            let w = gemma3::tiny_random(&c, 11, dtype);
            (FamilyConfig::Gemma3(c), w)
        }
        _ => {
            let c = llama::tiny_config();
            let w = llama::tiny_random(&c, 12, dtype);
            (FamilyConfig::Llama(c), w)
        }
    }
}

/// `weights` written as a GGUF in a temporary folder (kept while the `TempDir` lives), as
/// the files of a model named `name`: f32, or with the matrices (not the norms) in
/// `quant` where their rows are whole blocks of it.
pub(crate) fn tiny_gguf(
    name: &str,
    model_cfg: FamilyConfig,
    weights: &HashMap<String, Tensor>,
    quant: Option<candle_core::quantized::GgmlDType>,
) -> (tempfile::TempDir, crate::ModelFiles) {
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    let dtype_of = |name: &str, t: &Tensor| match quant {
        Some(q) if !name.contains("norm") && t.dims().last().is_some_and(|k| k % q.block_size() == 0) => q,
        _ => GgmlDType::F32,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let q: Vec<(String, QTensor)> = {
        let mut names: Vec<&String> = weights.keys().collect();
        names.sort();
        names
            .into_iter()
            .map(|n| (n.clone(), QTensor::quantize(&weights[n], dtype_of(n, &weights[n])).unwrap()))
            .collect()
    };
    let tensors: Vec<(&str, &QTensor)> = q.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut file = std::fs::File::create(&path).unwrap();
    gguf_file::write(&mut file, &[], &tensors).unwrap();
    drop(file);
    (dir, crate::ModelFiles { name: name.into(), path, config: model_cfg })
}

/// The engine on the same tiny weights, written as an f32 GGUF: with dense weights it does
/// no integer arithmetic, so its logits and the training forward's must agree closely.
fn engine_on(model_cfg: FamilyConfig, weights: &HashMap<String, Tensor>) -> (tempfile::TempDir, crate::ShardedModel) {
    let (dir, files) = tiny_gguf("tiny", model_cfg, weights, None);
    (dir, crate::ShardedModel::load_cpu(files, 1).unwrap())
}

#[test]
fn training_forward_matches_the_engine_on_dense_weights() {
    for family in ["gemma3", "llama"] {
        let (cfg, weights) = tiny_weights(family, DType::F32);
        let model = TrainableModel::from_weights("tiny", &cfg, &weights, Some(BOS)).unwrap();
        let (_dir, engine) = engine_on(cfg, &weights);
        // Longer than the tiny Gemma's sliding window of 4.
        let tokens = vec![BOS, 5, 9, 17, 30, 2, 44, 8, 3];
        let chunk = crate::Chunk {
            seq: 1,
            tokens: tokens.clone(),
            start_pos: 0,
            all_logits: true,
            tail_logits: 0,
            no_logits: false,
            embeddings: None,
        };
        let want = engine.forward(vec![chunk]).unwrap().remove(0);
        let empty = Tensor::zeros((0, model.hidden_size()), DType::F32, &Device::Cpu).unwrap();
        let got = model.logits(&empty, &tokens).unwrap();
        let diff = (&got - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let scale = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        eprintln!("{family}: dense logits differ by {diff:e} (largest {scale})");
        assert!(diff < 1e-5 * scale, "{family}: logits differ by {diff} (largest {scale})");
    }
}
