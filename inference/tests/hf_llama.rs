//! A user's own Hugging Face llama checkpoint (config.json + safetensors + tokenizer.json):
//! a tiny random-weight model written here, loaded by our engine and checked against
//! candle-transformers' llama on the same files, at TP=1 and TP=2.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use inference::{Chunk, ModelFiles, ShardedModel};

const VOCAB: usize = 49_152; // the SmolLM2 tokenizer is reused as the checkpoint's tokenizer.json
const HIDDEN: usize = 64;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const FF: usize = 128;

fn write_checkpoint(dir: &Path, tie: bool) {
    let dev = Device::Cpu;
    let cfg = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": FF,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 256,
        "tie_word_embeddings": tie, "bos_token_id": 1, "eos_token_id": 2
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let d = HIDDEN / HEADS;
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let rnd = |shape: (usize, usize), scale: f64| (Tensor::randn(0f32, 1.0, shape, &dev).unwrap() * scale).unwrap();
    t.insert("model.embed_tokens.weight".into(), rnd((VOCAB, HIDDEN), 1.0));
    if !tie {
        t.insert("lm_head.weight".into(), rnd((VOCAB, HIDDEN), 0.2));
    }
    t.insert("model.norm.weight".into(), Tensor::ones(HIDDEN, DType::F32, &dev).unwrap());
    for i in 0..LAYERS {
        let p = format!("model.layers.{i}");
        t.insert(format!("{p}.self_attn.q_proj.weight"), rnd((HEADS * d, HIDDEN), 0.2));
        t.insert(format!("{p}.self_attn.k_proj.weight"), rnd((KV_HEADS * d, HIDDEN), 0.2));
        t.insert(format!("{p}.self_attn.v_proj.weight"), rnd((KV_HEADS * d, HIDDEN), 0.2));
        t.insert(format!("{p}.self_attn.o_proj.weight"), rnd((HIDDEN, HEADS * d), 0.2));
        t.insert(format!("{p}.mlp.gate_proj.weight"), rnd((FF, HIDDEN), 0.2));
        t.insert(format!("{p}.mlp.up_proj.weight"), rnd((FF, HIDDEN), 0.2));
        t.insert(format!("{p}.mlp.down_proj.weight"), rnd((HIDDEN, FF), 0.2));
        t.insert(
            format!("{p}.input_layernorm.weight"),
            (Tensor::ones(HIDDEN, DType::F32, &dev).unwrap() + rnd((1, HIDDEN), 0.1).squeeze(0).unwrap()).unwrap(),
        );
        t.insert(format!("{p}.post_attention_layernorm.weight"), Tensor::ones(HIDDEN, DType::F32, &dev).unwrap());
    }
    // Store as bf16 like most published checkpoints; both loaders upcast to f32.
    let t: HashMap<String, Tensor> = t.into_iter().map(|(k, v)| (k, v.to_dtype(DType::BF16).unwrap())).collect();
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
    let (_, smol_tok) = common::inspect(common::SMOL);
    smol_tok.inner().save(dir.join("tokenizer.json"), false).unwrap();
}

fn reference_logits(dir: &Path, tokens: &[u32]) -> Vec<f32> {
    use candle_transformers::models::llama as reference;
    let cfg: reference::LlamaConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let cfg = cfg.into_config(false);
    // SAFETY: the mapped file is this test's own checkpoint (`write_checkpoint` wrote it into
    // a temporary directory), and nothing changes it while the reference model reads it.
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, &Device::Cpu)
            .unwrap()
    };
    let model = reference::Llama::load(vb, &cfg).unwrap();
    let mut cache = reference::Cache::new(true, DType::F32, &cfg, &Device::Cpu).unwrap();
    let x = Tensor::new(tokens, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    model.forward(&x, 0, &mut cache).unwrap().squeeze(0).unwrap().to_vec1().unwrap()
}

#[test]
fn hf_checkpoint_loads_and_matches_candle_llama() {
    for tie in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        write_checkpoint(dir.path(), tie);
        let (files, tok) = ModelFiles::inspect(dir.path()).unwrap();
        assert_eq!(files.config.architecture(), "llama");
        let tokens = tok.encode("Bring your own checkpoint", true).unwrap();
        assert_eq!(tok.encode("Hello", false).unwrap(), vec![19556], "tokenizer.json is used");
        let want = reference_logits(dir.path(), &tokens);
        for tp in [1, 2] {
            let model = ShardedModel::load_cpu(files.clone(), tp).unwrap();
            let got = model
                .forward(vec![Chunk {
                    seq: 1,
                    tokens: tokens.clone(),
                    start_pos: 0,
                    all_logits: false,
                    tail_logits: 0,
                    no_logits: false,
                    embeddings: None,
                }])
                .unwrap();
            let got: Vec<f32> = got[0].squeeze(0).unwrap().to_vec1().unwrap();
            let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-3, "tie={tie} tp={tp}: logits differ from candle's llama by {diff}");
        }
    }
}

#[test]
fn broken_checkpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": 64}").unwrap();
    let err = ModelFiles::inspect(dir.path()).unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");
    let file = dir.path().join("bad.gguf");
    std::fs::write(&file, b"definitely not gguf").unwrap();
    let err = ModelFiles::inspect(&file).unwrap_err().to_string();
    assert!(err.contains("GGUF"), "{err}");
}
