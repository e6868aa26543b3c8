//! CPU compute kernels: the batched matmul (f32 and integer tiles over weights repacked
//! in panels), the memory those panels live in, and the thread pool that runs them.
//!
//! Everything here is batch invariant by construction: an output is computed the same
//! way whatever the tiling, the thread or the number of rows.

mod aligned;
pub mod batched;
mod dense;
mod int8;
mod pages;
pub mod pool;
mod repack;
mod tiles;

pub use batched::BatchedWeight;
