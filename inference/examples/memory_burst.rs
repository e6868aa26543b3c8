//! RSS before, during and after a burst of long prompts (issue 16, item 6):
//! `cargo run --release -p inference --example memory_burst -- [model] [seqs] [prompt_tokens] [tp]`.

use inference::{bench, load_engine, EngineConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args.first().map_or("smollm2-135m", String::as_str);
    let seqs: usize = args.get(1).map_or(Ok(8), |s| s.parse())?;
    let prompt_tokens: usize = args.get(2).map_or(Ok(1500), |s| s.parse())?;
    let tp: usize = args.get(3).map_or(Ok(1), |s| s.parse())?;
    // No prefix cache: what it keeps on purpose is not a leak.
    let cfg = EngineConfig { prefix_cache_bytes: 0, ..EngineConfig::default() };
    let mut engine = load_engine(model, tp, cfg)?;
    let started = std::time::Instant::now();
    let m = bench::memory_burst(&mut engine, seqs, prompt_tokens)?;
    let mb = |b: usize| b as f64 / (1 << 20) as f64;
    println!("machine: {}", bench::machine());
    println!("{model} tp={tp}: {seqs} x {prompt_tokens}-token prompts in {:.1?}", started.elapsed());
    println!(
        "RSS MiB: before {:.0}, peak {:.0}, freed (engine busy) {:.0}, idle (after release) {:.0}",
        mb(m.before),
        mb(m.peak),
        mb(m.freed_busy),
        mb(m.idle)
    );
    Ok(())
}
