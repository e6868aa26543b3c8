//! Tensor parallelism: the communicators between ranks and the layer types that split a
//! model over them.
//!
//! Parallelism lives here, in the types, not in flags inside the models:
//! - [`ColumnParallelLinear`] keeps a slice of the output rows and never communicates;
//! - [`RowParallelLinear`] keeps a slice of the input columns and all-reduces its output;
//! - [`VocabParallelEmbedding`] / [`VocabParallelHead`] split the vocabulary.
//!
//! At world size 1 ([`comm::Local`]) every collective is a no-op, so TP=1 and TP=N run the
//! same model code.

pub mod comm;
pub mod linear;
pub mod shard;
pub mod vocab;

#[cfg(feature = "nccl")]
pub use comm::Nccl;
pub use comm::{Communicator, Local, Threads};
pub use linear::{ColumnParallelLinear, Linear, RowParallelLinear, StackedColumnLinear};
pub use shard::{block_parts, head_parts, split_range, Shard, MLP_PARTS};
pub use vocab::{VocabParallelEmbedding, VocabParallelHead};
