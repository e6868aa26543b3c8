//! The GPU path, checked on a CUDA machine (`scripts/gpu-check.sh`): greedy tokens on
//! CUDA against the CPU's, decode tokens/s at 1 and 16 rows against the HBM-bandwidth
//! bound (bytes of weights read per step ÷ bandwidth), and with two or more GPUs TP=2
//! over NCCL against TP=1.
//!
//! `gpu_check MODEL... [--bandwidth-gbs 4800] [--gpus N]`; exits non-zero when tokens differ.

use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use inference::parallel::{Communicator, Local};
use inference::{resolve_model, Engine, EngineConfig, GenerateRequest, ModelFiles, ShardedModel};

const PROMPT: &str = "The capital of France is Paris. The capital of Japan is";
const STEPS: usize = 32;

fn greedy(model: ShardedModel, tok: inference::Tokenizer) -> anyhow::Result<Vec<u32>> {
    let mut engine = Engine::new(model, tok, EngineConfig::default());
    let ids = engine.tokenizer().encode(PROMPT, true)?;
    let mut req = GenerateRequest::greedy(ids, STEPS);
    req.ignore_eos = true;
    Ok(engine.generate(req, |_| {})?.token_ids())
}

fn cuda(files: ModelFiles) -> anyhow::Result<ShardedModel> {
    let comms: Vec<Arc<dyn Communicator>> = vec![Arc::new(Local)];
    Ok(ShardedModel::load_with(files, comms, vec![Device::new_cuda(0)?])?)
}

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut take = |flag: &str, default: f64| -> anyhow::Result<f64> {
        match args.iter().position(|a| a == flag) {
            Some(i) if i + 1 < args.len() => {
                let v = args.remove(i + 1).parse()?;
                args.remove(i);
                Ok(v)
            }
            Some(_) => anyhow::bail!("{flag} needs a value"),
            None => Ok(default),
        }
    };
    let bandwidth = take("--bandwidth-gbs", 4800.0)? * 1e9;
    let gpus = take("--gpus", 1.0)? as usize;
    let mut failed = false;
    for name in &args {
        let path = resolve_model(name)?;
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) as f64;
        let (files, tok) = ModelFiles::inspect(&path)?;

        let cpu = greedy(ShardedModel::load_cpu(files.clone(), 1)?, tok.clone())?;
        let gpu = greedy(cuda(files.clone())?, tok.clone())?;
        let same = cpu.iter().zip(&gpu).take_while(|(a, b)| a == b).count();
        println!("{name}: CUDA greedy tokens equal the CPU's for {same} of {STEPS}");
        failed |= same < STEPS;

        let started = Instant::now();
        let model = cuda(files.clone())?;
        let load_s = started.elapsed().as_secs_f64();
        for r in inference::bench::run_loaded(name, model, tok.clone(), load_s, &[1, 16], 128, 64)? {
            // Every step reads every weight once (the file's bytes): the bound for `rows` rows.
            let bound = if bytes > 0.0 { r.batch as f64 * bandwidth / bytes } else { f64::NAN };
            println!(
                "{name}: {} rows: decode {:.1} tok/s, HBM bound {:.0} tok/s ({:.0}%), prefill {:.0} tok/s",
                r.batch,
                r.decode_tok_s,
                bound,
                100.0 * r.decode_tok_s / bound,
                r.prefill_tok_s
            );
        }

        if gpus >= 2 {
            let tp2 = greedy(ShardedModel::load_nccl(files.clone(), 2)?, tok.clone())?;
            let same = gpu.iter().zip(&tp2).take_while(|(a, b)| a == b).count();
            println!("{name}: TP=2 over NCCL equals TP=1 for {same} of {STEPS} tokens");
            failed |= same < STEPS;
        } else {
            println!("{name}: one GPU, TP=2 over NCCL not checked");
        }
    }
    if failed {
        anyhow::bail!("tokens differ (see above)");
    }
    Ok(())
}
