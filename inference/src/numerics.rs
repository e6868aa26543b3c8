//! The numerics switches, read when a model is loaded: invariant numerics (batch and TP
//! invariance) and the batched matmul.

use std::sync::atomic::{AtomicBool, Ordering};

static INVARIANT: AtomicBool = AtomicBool::new(true);

/// Invariant numerics (on by default; read when a model is loaded):
/// - batch invariance: a sequence's logits do not depend on what else is in its batch.
///   candle's CPU kernels are row-independent except Q6_K, which uses a tiled kernel for
///   several rows and a GEMV for one; a single Q6_K row goes through the tiled kernel too;
/// - TP invariance: row-parallel layers add canonical parts in a fixed order (see
///   [`crate::parallel::RowParallelLinear`]), so TP=1 and TP=N give bit-identical logits.
///
/// Off, each rank does one matmul per layer and a plain all-reduce: what candle's own
/// models do, which the reference tests compare against.
pub fn set_invariant_numerics(on: bool) {
    INVARIANT.store(on, Ordering::Relaxed);
}

pub(crate) fn invariant() -> bool {
    INVARIANT.load(Ordering::Relaxed)
}

static BATCHED: AtomicBool = AtomicBool::new(true);

/// With invariant numerics on the CPU, multiply the weights [`crate::kernels::BatchedWeight`] supports
/// (dense, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K) with it (on by default; read when a model is loaded): each weight
/// is read once per call and shared by every row of a batch (quantized weights with
/// integer kernels), so 16 sequences cost far less than 16 times one. Other weights, and
/// all of them when this is off, go through candle's quantized matmul (one integer dot
/// product per row and output, the weight read again for every row).
pub fn set_batched_matmul(on: bool) {
    BATCHED.store(on, Ordering::Relaxed);
}

pub fn batched_matmul() -> bool {
    BATCHED.load(Ordering::Relaxed)
}
