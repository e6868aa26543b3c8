//! Gemma 3 (text), differentiable, on dequantized frozen weights: the same forward as
//! [`crate::model::gemma3`] (pre- and post-norms around attention and MLP, RMS-normed
//! queries and keys, local sliding-window layers with their own RoPE base between global
//! layers, GELU-tanh, tied head), one sequence at a time from position 0, no KV cache.

use candle_core::{DType, Result, Tensor};

use super::layers::{attention, causal_mask, rms_norm, to_heads, FrozenLinear, Rotary};
use super::model::FrozenWeights;
use crate::model::gemma3::{Activation, Config};

#[derive(Debug)]
struct Attention {
    q_proj: FrozenLinear,
    k_proj: FrozenLinear,
    v_proj: FrozenLinear,
    o_proj: FrozenLinear,
    q_norm: Tensor,
    k_norm: Tensor,
    sliding: bool,
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
    pre_feedforward_layernorm: Tensor,
    mlp: Mlp,
    post_feedforward_layernorm: Tensor,
}

#[derive(Debug)]
pub struct Model {
    pub cfg: Config,
    /// `[vocab, hidden]`, unscaled (as stored); also the tied head.
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: Tensor,
    lm_head: FrozenLinear,
}

impl Model {
    /// Loads the weights by their GGUF names (dense, in the dtype to run in).
    pub fn load(cfg: &Config, weights: &dyn FrozenWeights) -> crate::error::Result<Self> {
        let get = |n: &str| weights.tensor(n);
        let lin = |n: &str| -> crate::error::Result<FrozenLinear> { Ok(FrozenLinear::new(get(n)?)?) };
        let vec = |n: &str| -> crate::error::Result<Tensor> { Ok(get(n)?.flatten_all()?) };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = |n: &str| format!("blk.{i}.{n}.weight");
            layers.push(DecoderLayer {
                input_layernorm: vec(&p("attn_norm"))?,
                self_attn: Attention {
                    q_proj: lin(&p("attn_q"))?,
                    k_proj: lin(&p("attn_k"))?,
                    v_proj: lin(&p("attn_v"))?,
                    o_proj: lin(&p("attn_output"))?,
                    q_norm: vec(&p("attn_q_norm"))?,
                    k_norm: vec(&p("attn_k_norm"))?,
                    sliding: cfg.is_sliding(i),
                },
                post_attention_layernorm: vec(&p("post_attention_norm"))?,
                pre_feedforward_layernorm: vec(&p("ffn_norm"))?,
                mlp: Mlp {
                    gate_proj: lin(&p("ffn_gate"))?,
                    up_proj: lin(&p("ffn_up"))?,
                    down_proj: lin(&p("ffn_down"))?,
                },
                post_feedforward_layernorm: vec(&p("post_ffw_norm"))?,
            });
        }
        let embed_tokens = get("token_embd.weight")?;
        // Tied unless the file has its own head (the same tensor, not a copy).
        let head = if weights.contains("output.weight") { get("output.weight")? } else { embed_tokens.clone() };
        let lm_head = FrozenLinear::new(head)?;
        Ok(Self { cfg: cfg.clone(), embed_tokens, layers, norm: vec("output_norm.weight")?, lm_head })
    }

    pub fn dtype(&self) -> DType {
        self.embed_tokens.dtype()
    }

    /// Token embeddings `[len, hidden]`, scaled by `sqrt(hidden)` as Gemma's forward does:
    /// this is the space a soft prompt's rows live in.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        let ids = Tensor::new(ids, self.embed_tokens.device())?;
        self.embed_tokens.index_select(&ids, 0)? * (self.cfg.hidden_size as f64).sqrt()
    }

    /// `x: [len, hidden]` (embedded, from position 0) to the final-normed hidden states.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (len, dev) = (x.dim(0)?, x.device());
        let (dtype, eps) = (x.dtype(), cfg.rms_norm_eps);
        let rope_global = Rotary::new(cfg.head_dim, cfg.rope_theta, len, false, dtype, dev)?;
        let rope_local = Rotary::new(cfg.head_dim, cfg.rope_local_base_freq, len, false, dtype, dev)?;
        let mask_global = causal_mask(len, None, dtype, dev)?;
        let mask_local = causal_mask(len, Some(cfg.sliding_window), dtype, dev)?;
        let mut x = x.clone();
        for layer in &self.layers {
            let (rope, mask) =
                if layer.self_attn.sliding { (&rope_local, &mask_local) } else { (&rope_global, &mask_global) };
            let h = rms_norm(&x, &layer.input_layernorm, eps)?;
            let h = layer.self_attn.forward(&h, cfg, rope, mask)?;
            x = (rms_norm(&h, &layer.post_attention_layernorm, eps)? + x)?;
            let h = rms_norm(&x, &layer.pre_feedforward_layernorm, eps)?;
            let h = layer.mlp.forward(&h, cfg.hidden_activation)?;
            x = (rms_norm(&h, &layer.post_feedforward_layernorm, eps)? + x)?;
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
        let (d, nq, nkv) = (cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads);
        let eps = cfg.rms_norm_eps;
        let q = rms_norm(&to_heads(&self.q_proj.forward(x)?, nq, d)?, &self.q_norm, eps)?;
        let k = rms_norm(&to_heads(&self.k_proj.forward(x)?, nkv, d)?, &self.k_norm, eps)?;
        let v = to_heads(&self.v_proj.forward(x)?, nkv, d)?;
        let (q, k) = (rope.apply(&q)?, rope.apply(&k)?);
        let y = attention(&q, &k, &v, mask, 1.0 / cfg.query_pre_attn_scalar.sqrt())?;
        self.o_proj.forward(&y)
    }
}

impl Mlp {
    fn forward(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        let gate = self.gate_proj.forward(x)?;
        let gate = match act {
            Activation::GeluTanh => gelu_tanh(&gate)?,
            Activation::Silu => silu(&gate)?,
        };
        self.down_proj.forward(&(gate * self.up_proj.forward(x)?)?)
    }
}

/// `gelu_pytorch_tanh`: `x/2 (1 + tanh(sqrt(2/π) (x + 0.044715 x³)))`, written out: the
/// forward is candle's `gelu`, but its backward rounds the constants to six digits, which
/// the finite-difference check sees.
fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    let cube = (x.sqr()? * x)?;
    let inner = ((x + (cube * 0.044715)?)? * (2.0 / std::f64::consts::PI).sqrt())?;
    (x * 0.5)? * (inner.tanh()? + 1.0)?
}

/// `x * sigmoid(x)`, written out (candle-nn's sigmoid is a custom op).
pub(super) fn silu(x: &Tensor) -> Result<Tensor> {
    x / (x.neg()?.exp()? + 1.0)?
}

/// A random Gemma 3 of the given shape, for tests: weights by GGUF name, in `dtype`.
#[cfg(test)]
pub(crate) fn tiny_random(cfg: &Config, seed: u64, dtype: DType) -> std::collections::HashMap<String, Tensor> {
    let mut rng = super::rng::SplitMix64::new(seed);
    let dev = candle_core::Device::Cpu;
    let mut rnd = |shape: (usize, usize), scale: f64, offset: f64| {
        let v: Vec<f64> = (0..shape.0 * shape.1).map(|_| offset + scale * rng.normal()).collect();
        Tensor::from_vec(v, shape, &dev).unwrap().to_dtype(dtype).unwrap()
    };
    let (h, d, ff) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
    let (nq, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
    let mut w = std::collections::HashMap::new();
    w.insert("token_embd.weight".to_string(), rnd((cfg.vocab_size, h), 0.5, 0.0));
    w.insert("output_norm.weight".to_string(), rnd((1, h), 0.1, 1.0));
    for i in 0..cfg.num_hidden_layers {
        let p = |n: &str| format!("blk.{i}.{n}.weight");
        w.insert(p("attn_q"), rnd((nq * d, h), 0.3, 0.0));
        w.insert(p("attn_k"), rnd((nkv * d, h), 0.3, 0.0));
        w.insert(p("attn_v"), rnd((nkv * d, h), 0.3, 0.0));
        w.insert(p("attn_output"), rnd((h, nq * d), 0.3, 0.0));
        w.insert(p("ffn_gate"), rnd((ff, h), 0.3, 0.0));
        w.insert(p("ffn_up"), rnd((ff, h), 0.3, 0.0));
        w.insert(p("ffn_down"), rnd((h, ff), 0.3, 0.0));
        for n in ["attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"] {
            w.insert(p(n), rnd((1, h), 0.1, 1.0));
        }
        for n in ["attn_q_norm", "attn_k_norm"] {
            w.insert(p(n), rnd((1, d), 0.1, 1.0));
        }
    }
    w
}

#[cfg(test)]
pub(crate) fn tiny_config() -> Config {
    Config {
        vocab_size: 48,
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        head_dim: 8,
        rms_norm_eps: 1e-6,
        rope_theta: 1_000_000.0,
        rope_local_base_freq: 10_000.0,
        // Short enough that the local layer's window cuts the test sequences.
        sliding_window: 4,
        sliding_window_pattern: 2,
        max_position_embeddings: 512,
        query_pre_attn_scalar: 8.0,
        hidden_activation: Activation::GeluTanh,
    }
}
