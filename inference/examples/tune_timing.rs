//! Times soft-prompt training steps on a real model: `cargo run -p inference --example
//! tune_timing -- MODEL [PROMPT_TOKENS] [VIRTUAL_TOKENS] [STEPS]` (MODEL a name under
//! `models/` or a path). Each step is one example of PROMPT_TOKENS prompt tokens and 2
//! expected tokens; prints the load time, the embedding scale and seconds per example.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use inference::train::{train, Progress, StepProgress, TrainConfig, TrainableModel};

struct Timer(Instant, Vec<f64>);

impl Progress for Timer {
    fn step(&mut self, p: &StepProgress) {
        let t = self.0.elapsed().as_secs_f64();
        eprintln!("step {}: loss {:.4}, {:.2} s", p.step, p.loss, t - self.1.iter().sum::<f64>());
        self.1.push(t - self.1.iter().sum::<f64>());
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().map(String::as_str).unwrap_or("smollm2-135m");
    let arg = |i: usize, default: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (prompt_tokens, virtual_tokens, steps) = (arg(1, 64), arg(2, 20), arg(3, 3));
    let (files, tok) = inference::ModelFiles::inspect(&inference::resolve_model(name)?)?;
    let started = Instant::now();
    let model = TrainableModel::load(&files, tok.bos_id())?;
    eprintln!("{name}: loaded and dequantized in {:.2?}", started.elapsed());
    let rows = model.init_soft_prompt(256, &[], 1)?.embeddings;
    let rms = (rows.iter().map(|v| (v * v) as f64).sum::<f64>() / rows.len() as f64).sqrt();
    eprintln!("{name}: embedding RMS {rms:.4} (the decoder's input space)");
    // Ordinary text, repeated to the length asked for.
    let text = tok.encode("The film was slow at first, but the last hour made up for it. ", false)?;
    let mut prompt: Vec<u32> = tok.bos_id().into_iter().collect();
    prompt.extend(text.iter().cycle().take(prompt_tokens.saturating_sub(prompt.len())));
    let examples = vec![(prompt, tok.encode(" positive", false)?); steps];
    let cfg = TrainConfig {
        virtual_tokens,
        epochs: 1,
        batch_size: 1,
        patience: None,
        warmup_ratio: 0.0,
        ..TrainConfig::default()
    };
    let mut timer = Timer(Instant::now(), Vec::new());
    train(&model, &examples, &cfg, &mut timer, &AtomicBool::new(false))?;
    let rest = &timer.1[1.min(timer.1.len() - 1)..];
    println!(
        "{name}: {} tokens per example ({virtual_tokens} virtual + {prompt_tokens} prompt + 2 expected): \
         {:.2} s per example (mean of steps after the first)",
        virtual_tokens + prompt_tokens + 2,
        rest.iter().sum::<f64>() / rest.len() as f64
    );
    Ok(())
}
