//! Prompt tuning: training a soft prompt (p-tuning, as in HyperCLOVA) on a frozen model.
//!
//! A soft prompt is `k` virtual token embeddings placed in the prompt ([`splice_point`]:
//! after a leading BOS); only they are trained, the model's weights stay as they are.
//! Training runs on the CPU through candle's autograd: each family has a differentiable
//! f32 forward ([`gemma3`], [`llama`]) written like the engine's, on weights dequantized
//! once ([`TrainableModel`]); the loss is the cross-entropy of the expected tokens only,
//! teacher-forced, with the head computed only at the rows that predict them. The loop
//! ([`train`]) runs AdamW with warm-up, clipping, seeded shuffles and early stopping on a
//! caller-scored held-out split, and is deterministic in its seed.
//!
//! Cost (`examples/tune_timing.rs`, debug profile, this 2-core machine while another
//! build ran): one example of 86 tokens (20 virtual + 64 prompt + 2 expected) takes about
//! 1.9 s on SmolLM2-135M and 2.8 s on Gemma-3-270M, 278 tokens about 6.9 s and 7.4 s, with
//! `RAYON_NUM_THREADS=1`. With candle's default threads (one per core) the same Gemma step
//! took 4.3 s: its elementwise ops wait on a barrier pool whose workers are descheduled
//! on a busy machine. The dequantized weights take about 1.1 GB for Gemma-3-270M (most of
//! it the 262k-row tied embedding), 0.5 GB for SmolLM2-135M.
//!
//! - [`soft_prompt`]: the soft prompt, its bytes and base64, and where it goes;
//! - [`model`]: the frozen model, its inputs and loss;
//! - [`gemma3`], [`llama`]: the differentiable forwards;
//! - [`layers`]: the ops they are made of (a frozen linear map without a weight gradient,
//!   norms, rotary embeddings, masked attention, cross-entropy);
//! - [`optim`]: AdamW, warm-up and gradient clipping; [`rng`]: the seeded generator;
//! - [`trainer`]: settings, bounds, callbacks and the loop.

pub mod gemma3;
pub mod layers;
pub mod llama;
pub mod model;
pub mod optim;
pub mod rng;
pub mod soft_prompt;
pub mod trainer;

pub use model::{FrozenWeights, TrainableModel};
pub use soft_prompt::{splice_point, SoftPrompt, SoftPromptError};
pub use trainer::{
    train, validate_examples, EpochProgress, EpochVerdict, Example, Progress, StepProgress, StopReason, TrainConfig,
    TrainError, TrainReport, MAX_BATCH_SIZE, MAX_EPOCHS, MAX_EXAMPLES, MAX_LEARNING_RATE, MAX_SEQUENCE_TOKENS,
    MAX_VIRTUAL_TOKENS,
};

#[cfg(test)]
pub(crate) mod tests;
