//! The building blocks both model families are made of, on one rank: the ragged batch,
//! rotary embeddings, norms, the MLP's activation, causal attention and the KV caches it
//! reads and appends to.

pub mod attention;
pub mod batch;
pub mod kv_cache;
pub mod mlp;
pub mod norm;
pub mod rope;

pub use attention::{causal_attention, host_attention, host_attention_for, to_heads, HeadSplit, Scores};
pub use batch::{
    chunk_rows, logits_for, overwrite_input_rows, per_chunk, rows_for_logits, split_logits, Chunk, InputEmbeddings,
    SeqId,
};
pub use kv_cache::{HostKv, LayerKv, SeqCache};
pub use mlp::silu_mul;
pub use norm::RmsNorm;
pub use rope::Rope;
