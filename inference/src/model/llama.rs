//! Llama-family decoder (SmolLM2, and Hugging Face llama checkpoints): pre-norm
//! attention with GQA and RoPE, SwiGLU MLP, optionally tied output head.

use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};

use super::source::{Metadata, WeightSource};
use crate::error::EngineError;
use crate::nn::{
    causal_attention, host_attention, host_attention_for, logits_for, per_chunk, silu_mul, to_heads, Chunk, HeadSplit,
    RmsNorm, Rope, Scores, SeqCache,
};
use crate::parallel::{
    block_parts, head_parts, RowParallelLinear, Shard, StackedColumnLinear, VocabParallelEmbedding, VocabParallelHead,
    MLP_PARTS,
};

/// Field names follow Hugging Face's `config.json`, so a checkpoint's config deserializes
/// directly; GGUF metadata is mapped onto the same struct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f32,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Which tensor names and RoPE layout the weights use (not in HF configs).
    #[serde(default)]
    pub layout: Layout,
}

fn default_rope_theta() -> f32 {
    10_000.0
}
fn default_max_pos() -> usize {
    2048
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Layout {
    /// llama.cpp names (`blk.N.attn_q`), Q/K permuted for interleaved RoPE.
    Gguf,
    /// Hugging Face names (`model.layers.N.self_attn.q_proj`), half-split RoPE.
    #[default]
    HuggingFace,
}

impl Config {
    pub fn from_gguf(md: &Metadata) -> crate::error::Result<Self> {
        let a = md.string("general.architecture").unwrap_or_else(|| "llama".into());
        let k = |s: &str| format!("{a}.{s}");
        let n_heads = md.u32(&k("attention.head_count"))? as usize;
        let hidden = md.u32(&k("embedding_length"))? as usize;
        let vocab_size = match md.get("tokenizer.ggml.tokens") {
            Some(candle_core::quantized::gguf_file::Value::Array(v)) => v.len(),
            _ => md.u32(&k("vocab_size"))? as usize,
        };
        Ok(Self {
            vocab_size,
            hidden_size: hidden,
            intermediate_size: md.u32(&k("feed_forward_length"))? as usize,
            num_hidden_layers: md.u32(&k("block_count"))? as usize,
            num_attention_heads: n_heads,
            num_key_value_heads: Some(md.u32_or(&k("attention.head_count_kv"), n_heads as u32)? as usize),
            head_dim: Some(md.u32_or(&k("rope.dimension_count"), (hidden / n_heads) as u32)? as usize),
            rms_norm_eps: md.f32_or(&k("attention.layer_norm_rms_epsilon"), 1e-5)? as f64,
            rope_theta: md.f32_or(&k("rope.freq_base"), 10_000.0)?,
            max_position_embeddings: md.u32_or(&k("context_length"), 2048)? as usize,
            tie_word_embeddings: false,
            layout: Layout::Gguf,
        })
    }

    pub fn from_config_json(path: &Path) -> crate::error::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| EngineError::BadModel { path: path.to_path_buf(), reason: format!("config.json: {e}") })
    }

    pub fn n_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    pub(crate) fn name(&self, layer: Option<usize>, what: &str) -> String {
        match (self.layout, layer) {
            (Layout::Gguf, Some(i)) => format!("blk.{i}.{what}.weight"),
            (Layout::Gguf, None) => format!("{what}.weight"),
            (Layout::HuggingFace, Some(i)) => {
                let hf = match what {
                    "attn_q" => "self_attn.q_proj",
                    "attn_k" => "self_attn.k_proj",
                    "attn_v" => "self_attn.v_proj",
                    "attn_output" => "self_attn.o_proj",
                    "attn_norm" => "input_layernorm",
                    "ffn_norm" => "post_attention_layernorm",
                    "ffn_gate" => "mlp.gate_proj",
                    "ffn_up" => "mlp.up_proj",
                    "ffn_down" => "mlp.down_proj",
                    other => other,
                };
                format!("model.layers.{i}.{hf}.weight")
            }
            (Layout::HuggingFace, None) => match what {
                "token_embd" => "model.embed_tokens.weight".into(),
                "output_norm" => "model.norm.weight".into(),
                "output" => "lm_head.weight".into(),
                other => format!("{other}.weight"),
            },
        }
    }
}

#[derive(Debug)]
struct Attention {
    /// q, k and v projections side by side.
    qkv_proj: StackedColumnLinear,
    o_proj: RowParallelLinear,
    heads: HeadSplit,
    rope: Arc<Rope>,
}

impl Attention {
    fn forward(&self, x: &Tensor, chunks: &[Chunk], caches: &mut [&mut SeqCache], layer: usize) -> Result<Tensor> {
        let (d, nq, nkv) = (self.heads.head_dim, self.heads.n_q(), self.heads.n_kv());
        let qkv = self.qkv_proj.forward(x)?;
        let scores = Scores { window: None, scale: 1.0 / (d as f64).sqrt() };
        if host_attention_for(x.device()) {
            let y = host_attention(&qkv, chunks, caches, layer, &self.heads, &self.rope, scores)?;
            return self.o_proj.forward(&y);
        }
        let y = per_chunk(&qkv, chunks, |i, rows| {
            let pos = chunks[i].start_pos;
            let q = self.rope.apply(&to_heads(&rows.narrow(1, 0, nq * d)?, nq, d)?, pos)?;
            let k = self.rope.apply(&to_heads(&rows.narrow(1, nq * d, nkv * d)?, nkv, d)?, pos)?;
            let v = to_heads(&rows.narrow(1, (nq + nkv) * d, nkv * d)?, nkv, d)?;
            causal_attention(&q, &k, &v, &mut caches[i].layers[layer], &self.heads, pos, scores)
        })?;
        self.o_proj.forward(&y)
    }
}

#[derive(Debug)]
struct Mlp {
    /// gate and up projections side by side, `ff` columns each.
    gate_up_proj: StackedColumnLinear,
    ff: usize,
    down_proj: RowParallelLinear,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate_up = self.gate_up_proj.forward(x)?;
        if host_attention_for(x.device()) {
            // Invariant numerics on the CPU: one pass on the pool.
            return self.down_proj.forward(&silu_mul(&gate_up, self.ff)?);
        }
        let gate = candle_nn::ops::silu(&gate_up.narrow(1, 0, self.ff)?)?;
        self.down_proj.forward(&(gate * gate_up.narrow(1, self.ff, self.ff)?)?)
    }
}

#[derive(Debug)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
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
    pub fn load(vb: &WeightSource, cfg: &Config, shard: &Shard, device: &Device) -> crate::error::Result<Self> {
        let get = |layer: Option<usize>, n: &str| vb.get(&cfg.name(layer, n), device);
        let norm = |layer: Option<usize>, n: &str| -> crate::error::Result<RmsNorm> {
            Ok(RmsNorm::new(&get(layer, n)?, cfg.rms_norm_eps, device)?)
        };
        let interleaved = cfg.layout == Layout::Gguf;
        let rope =
            Arc::new(Rope::new(cfg.head_dim(), cfg.rope_theta, cfg.max_position_embeddings, interleaved, device)?);
        let embed = get(None, "token_embd")?;
        let ff = cfg.intermediate_size;
        let attn_parts = head_parts(cfg.num_attention_heads, cfg.head_dim());
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = Some(i);
            let heads = HeadSplit::new(cfg.num_attention_heads, cfg.n_kv_heads(), cfg.head_dim(), shard, device)?;
            let down = get(l, "ffn_down")?;
            let mlp_parts = block_parts(ff, down.block_size(), MLP_PARTS);
            let ff_range = RowParallelLinear::local_range(&mlp_parts, shard);
            layers.push(DecoderLayer {
                input_layernorm: norm(l, "attn_norm")?,
                self_attn: Attention {
                    qkv_proj: StackedColumnLinear::new(&[
                        (&get(l, "attn_q")?, heads.q_range()),
                        (&get(l, "attn_k")?, heads.kv_range()),
                        (&get(l, "attn_v")?, heads.kv_range()),
                    ])?,
                    o_proj: RowParallelLinear::new(
                        &cfg.name(l, "attn_output"),
                        &get(l, "attn_output")?,
                        &attn_parts,
                        shard,
                        device,
                    )?,
                    heads,
                    rope: rope.clone(),
                },
                post_attention_layernorm: norm(l, "ffn_norm")?,
                mlp: Mlp {
                    gate_up_proj: StackedColumnLinear::new(&[
                        (&get(l, "ffn_gate")?, ff_range.clone()),
                        (&get(l, "ffn_up")?, ff_range.clone()),
                    ])?,
                    ff: ff_range.len(),
                    down_proj: RowParallelLinear::new(&cfg.name(l, "ffn_down"), &down, &mlp_parts, shard, device)?,
                },
            });
        }
        let head_name = cfg.name(None, "output");
        let head =
            if !cfg.tie_word_embeddings && vb.contains(&head_name) { get(None, "output")? } else { embed.clone() };
        Ok(Self {
            cfg: cfg.clone(),
            embed_tokens: VocabParallelEmbedding::new(&embed, shard)?,
            layers,
            norm: norm(None, "output_norm")?,
            lm_head: VocabParallelHead::new(&head, shard)?,
            device: device.clone(),
        })
    }

    pub fn forward(&self, chunks: &[Chunk], caches: &mut [&mut SeqCache]) -> Result<Vec<Tensor>> {
        let mut x = self.embed_tokens.forward_chunks(chunks, None, &self.device)?;
        // Each residual add is done with the norm that follows it.
        let mut h = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let (x1, normed) = layer.input_layernorm.add_forward(&x, h.as_ref())?;
            let a = layer.self_attn.forward(&normed, chunks, caches, i)?;
            let (x2, normed) = layer.post_attention_layernorm.add_forward(&x1, Some(&a))?;
            h = Some(layer.mlp.forward(&normed)?);
            x = x2;
        }
        let (_, normed) = self.norm.add_forward(&x, h.as_ref())?;
        logits_for(&normed, chunks, |rows| self.lm_head.forward(rows))
    }
}
