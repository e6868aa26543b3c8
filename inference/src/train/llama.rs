//! The llama family (SmolLM2, Hugging Face llama checkpoints), differentiable, on
//! dequantized frozen weights: the same forward as [`crate::model::llama`] (pre-norm
//! attention with GQA and RoPE, SwiGLU MLP, optionally tied head), one sequence at a time
//! from position 0, no KV cache.

use candle_core::{DType, Result, Tensor};

use super::gemma3::silu;
use super::layers::{attention, causal_mask, rms_norm, to_heads, FrozenLinear, Rotary};
use super::model::FrozenWeights;
use crate::model::llama::{Config, Layout};

#[derive(Debug)]
struct Attention {
    q_proj: FrozenLinear,
    k_proj: FrozenLinear,
    v_proj: FrozenLinear,
    o_proj: FrozenLinear,
}

#[derive(Debug)]
struct Mlp {
    gate_proj: FrozenLinear,
    up_proj: FrozenLinear,
    down_proj: FrozenLinear,
}

#[derive(Debug)]
struct DecoderLayer {
    input_layernorm: Tensor,
    self_attn: Attention,
    post_attention_layernorm: Tensor,
    mlp: Mlp,
}

#[derive(Debug)]
pub struct Model {
    pub cfg: Config,
    /// `[vocab, hidden]`.
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: Tensor,
    lm_head: FrozenLinear,
}

impl Model {
    /// Loads the weights by their names in the config's layout (dense, in the dtype to
    /// run in).
    pub fn load(cfg: &Config, weights: &dyn FrozenWeights) -> crate::error::Result<Self> {
        let get = |n: &str| weights.tensor(n);
        let lin = |l: Option<usize>, n: &str| -> crate::error::Result<FrozenLinear> {
            Ok(FrozenLinear::new(get(&cfg.name(l, n))?)?)
        };
        let vec =
            |l: Option<usize>, n: &str| -> crate::error::Result<Tensor> { Ok(get(&cfg.name(l, n))?.flatten_all()?) };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = Some(i);
            layers.push(DecoderLayer {
                input_layernorm: vec(l, "attn_norm")?,
                self_attn: Attention {
                    q_proj: lin(l, "attn_q")?,
                    k_proj: lin(l, "attn_k")?,
                    v_proj: lin(l, "attn_v")?,
                    o_proj: lin(l, "attn_output")?,
                },
                post_attention_layernorm: vec(l, "ffn_norm")?,
                mlp: Mlp { gate_proj: lin(l, "ffn_gate")?, up_proj: lin(l, "ffn_up")?, down_proj: lin(l, "ffn_down")? },
            });
        }
        let embed_tokens = get(&cfg.name(None, "token_embd"))?;
        // Tied (the same tensor, not a copy) unless the model has its own head.
        let head_name = cfg.name(None, "output");
        let head = if !cfg.tie_word_embeddings && weights.contains(&head_name) {
            get(&head_name)?
        } else {
            embed_tokens.clone()
        };
        let lm_head = FrozenLinear::new(head)?;
        Ok(Self { cfg: cfg.clone(), embed_tokens, layers, norm: vec(None, "output_norm")?, lm_head })
    }

    pub fn dtype(&self) -> DType {
        self.embed_tokens.dtype()
    }

    /// Token embeddings `[len, hidden]`: the space a soft prompt's rows live in.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        self.embed_tokens.index_select(&Tensor::new(ids, self.embed_tokens.device())?, 0)
    }

    /// `x: [len, hidden]` (embedded, from position 0) to the final-normed hidden states.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (len, dev, dtype) = (x.dim(0)?, x.device(), x.dtype());
        let interleaved = cfg.layout == Layout::Gguf;
        let rope = Rotary::new(cfg.head_dim(), cfg.rope_theta, len, interleaved, dtype, dev)?;
        let mask = causal_mask(len, None, dtype, dev)?;
        let eps = cfg.rms_norm_eps;
        let mut x = x.clone();
        for layer in &self.layers {
            let h = layer.self_attn.forward(&rms_norm(&x, &layer.input_layernorm, eps)?, cfg, &rope, &mask)?;
            x = (x + h)?;
            let h = layer.mlp.forward(&rms_norm(&x, &layer.post_attention_layernorm, eps)?)?;
            x = (x + h)?;
        }
        rms_norm(&x, &self.norm, eps)
    }

    /// Logits `[rows, vocab]` of final-normed hidden rows.
    pub fn lm_head(&self, h: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(h)
    }
}

impl Attention {
    fn forward(&self, x: &Tensor, cfg: &Config, rope: &Rotary, mask: &Tensor) -> Result<Tensor> {
        let (d, nq, nkv) = (cfg.head_dim(), cfg.num_attention_heads, cfg.n_kv_heads());
        let q = rope.apply(&to_heads(&self.q_proj.forward(x)?, nq, d)?)?;
        let k = rope.apply(&to_heads(&self.k_proj.forward(x)?, nkv, d)?)?;
        let v = to_heads(&self.v_proj.forward(x)?, nkv, d)?;
        let y = attention(&q, &k, &v, mask, 1.0 / (d as f64).sqrt())?;
        self.o_proj.forward(&y)
    }
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = silu(&self.gate_proj.forward(x)?)?;
        self.down_proj.forward(&(gate * self.up_proj.forward(x)?)?)
    }
}

#[cfg(test)]
pub(crate) fn tiny_config() -> Config {
    Config {
        vocab_size: 48,
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        head_dim: None,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 512,
        tie_word_embeddings: false,
        layout: Layout::Gguf,
    }
}

/// A random llama of the given shape (GGUF names), for tests, in `dtype`.
#[cfg(test)]
pub(crate) fn tiny_random(cfg: &Config, seed: u64, dtype: DType) -> std::collections::HashMap<String, Tensor> {
    let mut rng = super::rng::SplitMix64::new(seed);
    let dev = candle_core::Device::Cpu;
    let mut rnd = |shape: (usize, usize), scale: f64, offset: f64| {
        let v: Vec<f64> = (0..shape.0 * shape.1).map(|_| offset + scale * rng.normal()).collect();
        Tensor::from_vec(v, shape, &dev).unwrap().to_dtype(dtype).unwrap()
    };
    let (h, d, ff) = (cfg.hidden_size, cfg.head_dim(), cfg.intermediate_size);
    let (nq, nkv) = (cfg.num_attention_heads, cfg.n_kv_heads());
    let mut w = std::collections::HashMap::new();
    w.insert(cfg.name(None, "token_embd"), rnd((cfg.vocab_size, h), 0.5, 0.0));
    w.insert(cfg.name(None, "output"), rnd((cfg.vocab_size, h), 0.5, 0.0));
    w.insert(cfg.name(None, "output_norm"), rnd((1, h), 0.1, 1.0));
    for i in 0..cfg.num_hidden_layers {
        let l = Some(i);
        w.insert(cfg.name(l, "attn_q"), rnd((nq * d, h), 0.3, 0.0));
        w.insert(cfg.name(l, "attn_k"), rnd((nkv * d, h), 0.3, 0.0));
        w.insert(cfg.name(l, "attn_v"), rnd((nkv * d, h), 0.3, 0.0));
        w.insert(cfg.name(l, "attn_output"), rnd((h, nq * d), 0.3, 0.0));
        w.insert(cfg.name(l, "ffn_gate"), rnd((ff, h), 0.3, 0.0));
        w.insert(cfg.name(l, "ffn_up"), rnd((ff, h), 0.3, 0.0));
        w.insert(cfg.name(l, "ffn_down"), rnd((h, ff), 0.3, 0.0));
        w.insert(cfg.name(l, "attn_norm"), rnd((1, h), 0.1, 1.0));
        w.insert(cfg.name(l, "ffn_norm"), rnd((1, h), 0.1, 1.0));
    }
    w
}
