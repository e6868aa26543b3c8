//! The batched CPU matmul on SmolLM2-135M's shapes: 30 layers of random Q4_1 weights
//! (qkv, o in 9 head parts, gate+up, down in 4 parts) and the Q8_0 output head, at 1, 4
//! and 16 rows. Every weight is distinct (96 MB in all, as in the real model), so one row
//! streams the weights from memory as a decode step does, instead of finding them in
//! cache. Prints ms per step and per weight kind, GFLOP/s (two per multiply-add), and how
//! much 16 rows cost next to one (the serving bar needs 16 rows at no more than 2.67x
//! one row, everything else in a step included). Last, the kernels' rates on weights
//! that stay in cache, and the bound they put on 16 rows next to one.
//!
//! `cargo bench -p inference --bench matmul`

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use inference::batched::BatchedWeight;
use inference::tp::Weight;

const LAYERS: usize = 30;
/// Weight rows of the in-cache measurement: 0.4 MB of Q4_1 (0.6 of Q8_0), which the two
/// threads' L2 caches hold, and enough work per call that the call itself costs little.
const N_IN_CACHE: usize = 1024;

fn weight(n: usize, k: usize, dt: GgmlDType) -> BatchedWeight {
    let t = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
    // In 2 MB pages, as a loaded model's weights are.
    BatchedWeight::new(&Weight::Quant(std::sync::Arc::new(QTensor::quantize(&t, dt).unwrap()))).unwrap().in_huge_pages()
}

fn main() {
    let (hidden, ff, heads, kv_dim) = (576, 1536, 9, 192);
    let q4 = GgmlDType::Q4_1;
    let names = ["qkv", "o (9 parts)", "gate+up", "down (4 parts)", "output head"];
    let mut weights: Vec<(usize, BatchedWeight)> = Vec::new();
    for _ in 0..LAYERS {
        weights.push((0, weight(hidden + 2 * kv_dim, hidden, q4)));
        let o = weight(hidden, hidden, q4).with_parts(&(0..heads).map(|h| h * 64..(h + 1) * 64).collect::<Vec<_>>());
        weights.push((1, o.unwrap()));
        weights.push((2, weight(2 * ff, hidden, q4)));
        let down = weight(hidden, ff, q4).with_parts(&[0..384, 384..768, 768..1152, 1152..1536]);
        weights.push((3, down.unwrap()));
    }
    weights.push((4, weight(49152, hidden, GgmlDType::Q8_0)));
    println!("machine: {}", inference::bench::machine());
    println!("{:<16} {:>4} {:>10} {:>9}", "weight", "rows", "ms/step", "GFLOP/s");
    let mut per_rows = Vec::new();
    for m in [1usize, 4, 16] {
        let xs: Vec<Tensor> =
            [hidden, ff].iter().map(|&k| Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap()).collect();
        let x_for = |w: &BatchedWeight| if w.dims().1 == hidden { &xs[0] } else { &xs[1] };
        let step = |times: &mut [f64; 5]| {
            for (kind, w) in &weights {
                let t = Instant::now();
                // Parts added up as the model does at TP=1 (one part: the plain product).
                std::hint::black_box(w.forward_summed(x_for(w)).unwrap());
                times[*kind] += t.elapsed().as_secs_f64();
            }
        };
        step(&mut [0.0; 5]);
        let reps = if m == 1 { 40 } else { 15 };
        let mut times = [0f64; 5];
        for _ in 0..reps {
            step(&mut times);
        }
        let mut flops = [0f64; 5];
        for (kind, w) in &weights {
            let (n, k) = w.dims();
            flops[*kind] += 2.0 * (m * n * k) as f64;
        }
        for (i, name) in names.iter().enumerate() {
            let s = times[i] / reps as f64;
            println!("{name:<16} {m:>4} {:>10.3} {:>9.1}", s * 1e3, flops[i] / s / 1e9);
        }
        let total = times.iter().sum::<f64>() / reps as f64;
        println!(
            "{:<16} {m:>4} {:>10.2} {:>9.1}   (30 layers + head)",
            "step",
            total * 1e3,
            flops.iter().sum::<f64>() / total / 1e9
        );
        per_rows.push((m, total));
    }
    let one = per_rows[0].1;
    for (m, t) in &per_rows[1..] {
        println!("{m} rows cost {:.2}x one row ({:.2}x the tokens per second)", t / one, *m as f64 * one / t);
    }

    // The ceiling: the same kernels on weights that stay in cache (no memory traffic), at
    // 16 rows. A step of 16 rows cannot take less than its multiply-adds at these rates,
    // and one row cannot take less than streaming the weights once (the 1-row step above
    // comes close), so this bounds what 16 streams can give next to one.
    let in_cache = |k: usize, dt: GgmlDType| {
        let w = weight(N_IN_CACHE, k, dt);
        let x = Tensor::randn(0f32, 1.0, (16, k), &Device::Cpu).unwrap();
        std::hint::black_box(w.forward(&x).unwrap());
        let reps = 100;
        let t = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(w.forward(&x).unwrap());
        }
        (reps * 16 * N_IN_CACHE * k) as f64 / t.elapsed().as_secs_f64() / 1e9
    };
    let (q4_rate, q8_rate) = (in_cache(hidden, q4), in_cache(hidden, GgmlDType::Q8_0));
    let head_macs = 16.0 * 49152.0 * hidden as f64;
    let layer_macs = 16.0 * LAYERS as f64 * (hidden * (hidden + 2 * kv_dim + hidden + 2 * ff) + ff * hidden) as f64;
    let floor = layer_macs / q4_rate / 1e9 + head_macs / q8_rate / 1e9;
    println!(
        "in cache, 16 rows: Q4_1 {q4_rate:.1} GMAC/s, Q8_0 {q8_rate:.1} GMAC/s; a 16-row step needs {:.2} GMAC, \
         at least {:.1} ms at those rates, so with these kernels 16 rows give at most {:.2}x one row's \
         tokens per second here",
        (layer_macs + head_macs) / 1e9,
        floor * 1e3,
        16.0 * one / floor
    );
}
