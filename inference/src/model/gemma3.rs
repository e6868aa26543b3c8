//! Gemma 3 (text), written to read like the reference: pre- and post-norms around
//! attention and MLP, RMS-normed queries and keys, local sliding-window layers with
//! their own RoPE base interleaved with global layers, and a tied, vocab-parallel head.

use std::sync::Arc;

use candle_core::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};

use super::source::{Metadata, WeightSource};
use crate::nn::{
    causal_attention, host_attention, host_attention_for, logits_for, per_chunk, to_heads, Chunk, HeadSplit, RmsNorm,
    Rope, Scores, SeqCache,
};
use crate::parallel::{
    block_parts, head_parts, ColumnParallelLinear, RowParallelLinear, Shard, StackedColumnLinear,
    VocabParallelEmbedding, VocabParallelHead, MLP_PARTS,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// Gemma's `gelu_pytorch_tanh`.
    GeluTanh,
    /// Only for cross-checking against candle-transformers' quantized_gemma3, which uses
    /// SiLU in the MLP (llama.cpp and Hugging Face use GELU for Gemma).
    Silu,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f32,
    pub rope_local_base_freq: f32,
    pub sliding_window: usize,
    /// Every `sliding_window_pattern`-th layer is global; the others are local.
    pub sliding_window_pattern: usize,
    pub max_position_embeddings: usize,
    pub query_pre_attn_scalar: f64,
    pub hidden_activation: Activation,
}

impl Config {
    pub fn from_gguf(md: &Metadata) -> crate::error::Result<Self> {
        let a = md.string("general.architecture").unwrap_or_else(|| "gemma3".into());
        let k = |s: &str| format!("{a}.{s}");
        let head_dim = md.u32(&k("attention.key_length"))? as usize;
        let vocab_size = match md.get("tokenizer.ggml.tokens") {
            Some(candle_core::quantized::gguf_file::Value::Array(v)) => v.len(),
            _ => 262_144,
        };
        Ok(Self {
            vocab_size,
            hidden_size: md.u32(&k("embedding_length"))? as usize,
            intermediate_size: md.u32(&k("feed_forward_length"))? as usize,
            num_hidden_layers: md.u32(&k("block_count"))? as usize,
            num_attention_heads: md.u32(&k("attention.head_count"))? as usize,
            num_key_value_heads: md.u32(&k("attention.head_count_kv"))? as usize,
            head_dim,
            rms_norm_eps: md.f32(&k("attention.layer_norm_rms_epsilon"))? as f64,
            rope_theta: md.f32_or(&k("rope.freq_base"), 1_000_000.0)?,
            rope_local_base_freq: md.f32_or(&k("rope.local_freq_base"), 10_000.0)?,
            sliding_window: md.u32(&k("attention.sliding_window"))? as usize,
            sliding_window_pattern: md.u32_or(&k("attention.sliding_window_type"), 6)? as usize,
            max_position_embeddings: md.u32_or(&k("context_length"), 32_768)? as usize,
            query_pre_attn_scalar: head_dim as f64,
            hidden_activation: Activation::GeluTanh,
        })
    }

    pub fn is_sliding(&self, layer: usize) -> bool {
        !(layer + 1).is_multiple_of(self.sliding_window_pattern)
    }
}

#[derive(Debug)]
struct Attention {
    /// q, k and v projections side by side.
    qkv_proj: StackedColumnLinear,
    o_proj: RowParallelLinear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    heads: HeadSplit,
    rope: Arc<Rope>,
    scores: Scores,
}

impl Attention {
    fn forward(&self, x: &Tensor, chunks: &[Chunk], caches: &mut [&mut SeqCache], layer: usize) -> Result<Tensor> {
        let (d, nq, nkv) = (self.heads.head_dim, self.heads.n_q(), self.heads.n_kv());
        // The projections for the whole ragged batch...
        let qkv = self.qkv_proj.forward(x)?;
        let q = qkv.narrow(1, 0, nq * d)?;
        let k = qkv.narrow(1, nq * d, nkv * d)?;
        let v = qkv.narrow(1, (nq + nkv) * d, nkv * d)?;
        if host_attention_for(x.device()) {
            // Norms over each head's `d` values, for all tokens at once.
            let tokens = x.dim(0)?;
            let q = self.q_norm.forward(&q.reshape((tokens * nq, d))?)?.reshape((tokens, nq * d))?;
            let k = self.k_norm.forward(&k.reshape((tokens * nkv, d))?)?.reshape((tokens, nkv * d))?;
            let qkv = Tensor::cat(&[&q, &k, &v], 1)?;
            let y = host_attention(&qkv, chunks, caches, layer, &self.heads, &self.rope, self.scores)?;
            return self.o_proj.forward(&y);
        }
        // ...then attention sequence by sequence, each against its own cache.
        let y = per_chunk(&qkv, chunks, |i, rows| {
            let q = to_heads(&rows.narrow(1, 0, nq * d)?, nq, d)?;
            let k = to_heads(&rows.narrow(1, nq * d, nkv * d)?, nkv, d)?;
            let v = to_heads(&rows.narrow(1, (nq + nkv) * d, nkv * d)?, nkv, d)?;
            let q = self.rope.apply(&self.q_norm.forward(&q)?, chunks[i].start_pos)?;
            let k = self.rope.apply(&self.k_norm.forward(&k)?, chunks[i].start_pos)?;
            let cache = &mut caches[i].layers[layer];
            causal_attention(&q, &k, &v, cache, &self.heads, chunks[i].start_pos, self.scores)
        })?;
        self.o_proj.forward(&y)
    }
}

#[derive(Debug)]
struct Mlp {
    gate_proj: ColumnParallelLinear,
    up_proj: ColumnParallelLinear,
    down_proj: RowParallelLinear,
    act: Activation,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = self.gate_proj.forward(x)?;
        let gate = match self.act {
            Activation::GeluTanh => gate.gelu()?,
            Activation::Silu => candle_nn::ops::silu(&gate)?,
        };
        self.down_proj.forward(&(gate * self.up_proj.forward(x)?)?)
    }
}

#[derive(Debug)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    pre_feedforward_layernorm: RmsNorm,
    mlp: Mlp,
    post_feedforward_layernorm: RmsNorm,
}

#[derive(Debug)]
pub struct Model {
    pub cfg: Config,
    embed_tokens: VocabParallelEmbedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: VocabParallelHead,
    device: Device,
}

impl Model {
    /// Loads this rank's shard of the weights (GGUF tensor names).
    pub fn load(vb: &WeightSource, cfg: &Config, shard: &Shard, device: &Device) -> crate::error::Result<Self> {
        let get = |n: &str| vb.get(n, device);
        let norm = |n: &str| -> crate::error::Result<RmsNorm> { Ok(RmsNorm::new(&get(n)?, cfg.rms_norm_eps, device)?) };
        let max_pos = cfg.max_position_embeddings;
        let rope_global = Arc::new(Rope::new(cfg.head_dim, cfg.rope_theta, max_pos, false, device)?);
        let rope_local = Arc::new(Rope::new(cfg.head_dim, cfg.rope_local_base_freq, max_pos, false, device)?);
        let embed = get("token_embd.weight")?;
        let ff = cfg.intermediate_size;
        let attn_parts = head_parts(cfg.num_attention_heads, cfg.head_dim);

        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = |n: &str| format!("blk.{i}.{n}.weight");
            let heads = HeadSplit::new(cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, shard, device)?;
            let sliding = cfg.is_sliding(i);
            let down = get(&p("ffn_down"))?;
            // MLP columns are split in whole quant blocks of the down projection.
            let mlp_parts = block_parts(ff, down.block_size(), MLP_PARTS);
            let ff_range = RowParallelLinear::local_range(&mlp_parts, shard);
            layers.push(DecoderLayer {
                input_layernorm: norm(&p("attn_norm"))?,
                self_attn: Attention {
                    qkv_proj: StackedColumnLinear::new(&[
                        (&get(&p("attn_q"))?, heads.q_range()),
                        (&get(&p("attn_k"))?, heads.kv_range()),
                        (&get(&p("attn_v"))?, heads.kv_range()),
                    ])?,
                    o_proj: RowParallelLinear::new(
                        &p("attn_output"),
                        &get(&p("attn_output"))?,
                        &attn_parts,
                        shard,
                        device,
                    )?,
                    q_norm: norm(&p("attn_q_norm"))?,
                    k_norm: norm(&p("attn_k_norm"))?,
                    rope: if sliding { rope_local.clone() } else { rope_global.clone() },
                    scores: Scores {
                        window: sliding.then_some(cfg.sliding_window),
                        scale: 1.0 / cfg.query_pre_attn_scalar.sqrt(),
                    },
                    heads,
                },
                post_attention_layernorm: norm(&p("post_attention_norm"))?,
                pre_feedforward_layernorm: norm(&p("ffn_norm"))?,
                mlp: Mlp {
                    gate_proj: ColumnParallelLinear::new(&get(&p("ffn_gate"))?, ff_range.clone())?,
                    up_proj: ColumnParallelLinear::new(&get(&p("ffn_up"))?, ff_range.clone())?,
                    down_proj: RowParallelLinear::new(&p("ffn_down"), &down, &mlp_parts, shard, device)?,
                    act: cfg.hidden_activation,
                },
                post_feedforward_layernorm: norm(&p("post_ffw_norm"))?,
            });
        }
        let head = if vb.contains("output.weight") { get("output.weight")? } else { embed.clone() };
        Ok(Self {
            cfg: cfg.clone(),
            embed_tokens: VocabParallelEmbedding::new(&embed, shard)?,
            layers,
            norm: norm("output_norm.weight")?,
            lm_head: VocabParallelHead::new(&head, shard)?,
            device: device.clone(),
        })
    }

    /// One batched step over `chunks` (each appended to its cache); logits per chunk,
    /// `[1 or chunk len, vocab]`.
    pub fn forward(&self, chunks: &[Chunk], caches: &mut [&mut SeqCache]) -> Result<Vec<Tensor>> {
        // A soft prompt's rows are already scaled: they are written after the scale.
        let scale = (self.cfg.hidden_size as f64).sqrt();
        let mut x = self.embed_tokens.forward_chunks(chunks, Some(scale), &self.device)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let h = layer.input_layernorm.forward(&x)?;
            let h = layer.self_attn.forward(&h, chunks, caches, i)?;
            x = (layer.post_attention_layernorm.forward(&h)? + x)?;
            let h = layer.pre_feedforward_layernorm.forward(&x)?;
            let h = layer.mlp.forward(&h)?;
            x = (layer.post_feedforward_layernorm.forward(&h)? + x)?;
        }
        logits_for(&x, chunks, |rows| self.lm_head.forward(&self.norm.forward(rows)?))
    }
}
