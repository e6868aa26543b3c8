//! The training loop: validated settings, AdamW with warm-up and clipping over seeded
//! shuffles of the examples, a callback per step and per epoch (where the caller scores
//! a held-out split and may stop), early stopping, and a cancel flag checked every step.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{Device, Var};

use super::model::TrainableModel;
use super::optim::{clip_global_norm, warmup_lr, AdamW};
use super::rng::SplitMix64;
use super::soft_prompt::{SoftPrompt, SoftPromptError};

pub const MAX_VIRTUAL_TOKENS: usize = 100;
pub const MAX_EPOCHS: usize = 50;
pub const MAX_EXAMPLES: usize = 5000;
pub const MAX_BATCH_SIZE: usize = 64;
pub const MAX_LEARNING_RATE: f64 = 1.0;
/// Tokens in one training sequence (soft prompt, prompt and expected), whatever the
/// model's context: the backward keeps every layer's `[heads, len, len]` scores.
pub const MAX_SEQUENCE_TOKENS: usize = 2048;

/// One training example: the rendered prompt's token ids and the expected answer's.
pub type Example = (Vec<u32>, Vec<u32>);

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting outside its bounds; `field` is the setting's name as callers spell it.
    #[error("{field} is {value}; it must be {allowed}")]
    OutOfRange { field: &'static str, value: String, allowed: String },
    #[error("example {example}: {reason}")]
    BadExample { example: usize, reason: String },
    #[error("example {example} is {tokens} tokens with the soft prompt; the limit is {limit}")]
    SequenceTooLong { example: usize, tokens: usize, limit: usize },
    #[error("training cancelled before step {step}")]
    Cancelled { step: usize },
    #[error("the loss is not finite at step {step}")]
    NotFinite { step: usize },
    #[error(transparent)]
    SoftPrompt(#[from] SoftPromptError),
    #[error("tensor op: {0}")]
    Candle(#[from] candle_core::Error),
}

impl TrainError {
    fn range(field: &'static str, value: impl std::fmt::Display, allowed: impl Into<String>) -> Self {
        TrainError::OutOfRange { field, value: value.to_string(), allowed: allowed.into() }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Rows of the soft prompt (`k`).
    pub virtual_tokens: usize,
    pub epochs: usize,
    pub learning_rate: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// The share of all steps over which the learning rate rises linearly from 0.
    pub warmup_ratio: f64,
    /// Examples per step (their gradients summed, weighted by expected tokens).
    pub batch_size: usize,
    /// Global-norm clipping of the gradient.
    pub max_grad_norm: f64,
    /// Stop when the held-out score has not improved for this many epochs (`None`: never).
    pub patience: Option<usize>,
    pub seed: u64,
    /// Token ids the soft prompt starts from (the instruction); empty: sampled from the
    /// vocabulary with `seed`.
    pub init_ids: Vec<u32>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            virtual_tokens: 20,
            epochs: 10,
            learning_rate: 0.01,
            weight_decay: 0.01,
            warmup_ratio: 0.1,
            batch_size: 4,
            max_grad_norm: 1.0,
            patience: Some(3),
            seed: 0,
            init_ids: Vec::new(),
        }
    }
}

impl TrainConfig {
    /// Checks every bound, naming the first setting out of it.
    pub fn validate(&self) -> Result<(), TrainError> {
        let int = |field: &'static str, v: usize, min: usize, max: usize| {
            if v < min || v > max {
                Err(TrainError::range(field, v, format!("between {min} and {max}")))
            } else {
                Ok(())
            }
        };
        int("virtual_tokens", self.virtual_tokens, 1, MAX_VIRTUAL_TOKENS)?;
        int("epochs", self.epochs, 1, MAX_EPOCHS)?;
        int("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)?;
        if let Some(p) = self.patience {
            int("patience", p, 1, MAX_EPOCHS)?;
        }
        let float = |field: &'static str, v: f64, ok: bool, allowed: &str| {
            if v.is_finite() && ok {
                Ok(())
            } else {
                Err(TrainError::range(field, v, allowed))
            }
        };
        let lr = self.learning_rate;
        float("learning_rate", lr, lr > 0.0 && lr <= MAX_LEARNING_RATE, "above 0 and at most 1")?;
        let wd = self.weight_decay;
        float("weight_decay", wd, (0.0..=1.0).contains(&wd), "between 0 and 1")?;
        let w = self.warmup_ratio;
        float("warmup_ratio", w, (0.0..1.0).contains(&w), "at least 0 and below 1")?;
        let g = self.max_grad_norm;
        float("max_grad_norm", g, g > 0.0, "above 0")?;
        Ok(())
    }
}

/// After each optimiser step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepProgress {
    /// 1-based.
    pub epoch: usize,
    /// 1-based, over the whole run.
    pub step: usize,
    pub total_steps: usize,
    /// Mean cross-entropy per expected token of the step's examples, before the update.
    pub loss: f64,
    /// Before clipping.
    pub grad_norm: f64,
    pub learning_rate: f64,
}

/// After each epoch.
#[derive(Debug)]
pub struct EpochProgress<'a> {
    /// 1-based.
    pub epoch: usize,
    pub epochs: usize,
    /// Mean cross-entropy per expected token over the epoch's steps.
    pub train_loss: f64,
    /// The soft prompt as it stands, to score.
    pub soft_prompt: &'a SoftPrompt,
}

/// What the caller makes of an epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EpochVerdict {
    /// The held-out score of this epoch's soft prompt (higher is better), if scored.
    pub held_out: Option<f64>,
    /// Stop now (the result is the best-scoring soft prompt so far).
    pub stop: bool,
}

/// Callbacks of a training run; both do nothing by default.
pub trait Progress {
    fn step(&mut self, _p: &StepProgress) {}
    fn epoch(&mut self, _p: &EpochProgress) -> EpochVerdict {
        EpochVerdict::default()
    }
}

impl Progress for () {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// All epochs ran.
    Finished,
    /// The held-out score did not improve for `patience` epochs.
    EarlyStopped,
    /// The epoch callback asked to stop.
    Stopped,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    pub steps: usize,
    pub epochs_run: usize,
    /// One per step.
    pub step_losses: Vec<f64>,
    /// One per epoch.
    pub epoch_losses: Vec<f64>,
    /// One per epoch, as the callback gave it.
    pub held_out: Vec<Option<f64>>,
    /// The epoch whose soft prompt is returned (the best held-out score; else the last).
    pub best_epoch: usize,
    pub stop: StopReason,
    pub seconds: f64,
}

/// Checks the examples against the settings and the model.
pub fn validate_examples(model: &TrainableModel, examples: &[Example], cfg: &TrainConfig) -> Result<(), TrainError> {
    if examples.is_empty() || examples.len() > MAX_EXAMPLES {
        return Err(TrainError::range("examples", examples.len(), format!("between 1 and {MAX_EXAMPLES}")));
    }
    let limit = model.context_length().min(MAX_SEQUENCE_TOKENS);
    let vocab = model.vocab_size();
    for (i, (prompt, expected)) in examples.iter().enumerate() {
        let bad = |reason: String| TrainError::BadExample { example: i, reason };
        if prompt.is_empty() {
            return Err(bad("the prompt has no tokens".into()));
        }
        if expected.is_empty() {
            return Err(bad("the expected answer has no tokens".into()));
        }
        if let Some(t) = prompt.iter().chain(expected).find(|&&t| t as usize >= vocab) {
            return Err(bad(format!("token {t} is outside the vocabulary of {vocab}")));
        }
        let tokens = cfg.virtual_tokens + prompt.len() + expected.len();
        if tokens > limit {
            return Err(TrainError::SequenceTooLong { example: i, tokens, limit });
        }
    }
    if let Some(t) = cfg.init_ids.iter().find(|&&t| t as usize >= vocab) {
        return Err(TrainError::range("init_ids", t, format!("token ids below {vocab}")));
    }
    Ok(())
}

/// Trains a soft prompt for `model` on `examples`.
///
/// Each epoch visits the examples in a fresh order drawn from `cfg.seed`, `batch_size` at a
/// time; a step sums the examples' gradients (each example's summed token loss over the
/// batch's expected tokens), clips them and takes one AdamW step. Everything runs in a
/// fixed order on the host or in candle's CPU ops, so the same model, data and settings give
/// the same soft prompt bit for bit. `cancel` is read before every step.
pub fn train(
    model: &TrainableModel,
    examples: &[Example],
    cfg: &TrainConfig,
    progress: &mut dyn Progress,
    cancel: &AtomicBool,
) -> Result<(SoftPrompt, TrainReport), TrainError> {
    cfg.validate()?;
    validate_examples(model, examples, cfg)?;
    let started = Instant::now();
    let mut soft = model.init_soft_prompt(cfg.virtual_tokens, &cfg.init_ids, cfg.seed)?;
    let mut opt = AdamW::new(soft.embeddings.len(), cfg.weight_decay);
    let steps_per_epoch = examples.len().div_ceil(cfg.batch_size);
    let total_steps = steps_per_epoch * cfg.epochs;
    let warmup = (cfg.warmup_ratio * total_steps as f64).round() as usize;
    // The shuffles draw from their own stream, apart from the initialisation's.
    let mut rng = SplitMix64::new(cfg.seed ^ 0x5348_5546_464C_4521);
    let mut order: Vec<usize> = (0..examples.len()).collect();

    let mut report = TrainReport {
        steps: 0,
        epochs_run: 0,
        step_losses: Vec::with_capacity(total_steps),
        epoch_losses: Vec::new(),
        held_out: Vec::new(),
        best_epoch: 0,
        stop: StopReason::Finished,
        seconds: 0.0,
    };
    let mut best: Option<(f64, usize, SoftPrompt)> = None;
    for epoch in 1..=cfg.epochs {
        rng.shuffle(&mut order);
        let (mut epoch_loss, mut epoch_tokens) = (0.0, 0usize);
        for batch in order.chunks(cfg.batch_size) {
            let step = report.steps + 1;
            if cancel.load(Ordering::Relaxed) {
                return Err(TrainError::Cancelled { step });
            }
            let tokens: usize = batch.iter().map(|&i| examples[i].1.len()).sum();
            let (loss, mut grads) = batch_gradient(model, &soft, examples, batch, tokens)?;
            if !loss.is_finite() {
                return Err(TrainError::NotFinite { step });
            }
            let grad_norm = clip_global_norm(&mut grads, cfg.max_grad_norm);
            let lr = warmup_lr(cfg.learning_rate, step, warmup);
            opt.step(&mut soft.embeddings, &grads, lr);
            report.steps = step;
            report.step_losses.push(loss);
            epoch_loss += loss * tokens as f64;
            epoch_tokens += tokens;
            progress.step(&StepProgress { epoch, step, total_steps, loss, grad_norm, learning_rate: lr });
        }
        let train_loss = epoch_loss / epoch_tokens as f64;
        report.epochs_run = epoch;
        report.epoch_losses.push(train_loss);
        let verdict = progress.epoch(&EpochProgress { epoch, epochs: cfg.epochs, train_loss, soft_prompt: &soft });
        report.held_out.push(verdict.held_out);
        if let Some(score) = verdict.held_out {
            if best.as_ref().is_none_or(|(b, _, _)| score > *b) {
                best = Some((score, epoch, soft.clone()));
            }
        }
        if verdict.stop {
            report.stop = StopReason::Stopped;
            break;
        }
        if let (Some(patience), Some((_, best_epoch, _))) = (cfg.patience, &best) {
            if epoch - best_epoch >= patience && epoch < cfg.epochs {
                report.stop = StopReason::EarlyStopped;
                break;
            }
        }
    }
    report.best_epoch = report.epochs_run;
    if let Some((_, epoch, best)) = best {
        report.best_epoch = epoch;
        soft = best;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok((soft, report))
}

/// The batch's mean loss per expected token and its gradient with respect to the soft
/// prompt (host order, `k * hidden`), example by example so only one graph is alive.
fn batch_gradient(
    model: &TrainableModel,
    soft: &SoftPrompt,
    examples: &[Example],
    batch: &[usize],
    tokens: usize,
) -> Result<(f64, Vec<f32>), TrainError> {
    let var = Var::from_tensor(&soft.to_tensor(model.dtype(), &Device::Cpu)?)?;
    let mut grads = vec![0f32; soft.embeddings.len()];
    let mut loss = 0.0;
    for &i in batch {
        let (prompt, expected) = &examples[i];
        let l = (model.loss_sum(var.as_tensor(), prompt, expected)? / tokens as f64)?;
        loss += l.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        let g = l.backward()?;
        let g = g.get(var.as_tensor()).map(|g| g.to_dtype(candle_core::DType::F32)).transpose()?;
        if let Some(g) = g {
            for (a, b) in grads.iter_mut().zip(g.flatten_all()?.to_vec1::<f32>()?) {
                *a += b;
            }
        }
    }
    Ok((loss, grads))
}
