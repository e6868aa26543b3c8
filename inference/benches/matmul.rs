//! The batched CPU matmul on one SmolLM2-135M layer's shapes (random Q4_1 weights, the
//! Q8_0 output head) at 1, 4 and 16 rows: time per layer, GFLOP/s, and how much 16 rows
//! cost next to one (the serving bar needs 16 rows at no more than 2.67x one row).
//!
//! `cargo bench -p inference --bench matmul`

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use inference::batched::BatchedWeight;
use inference::tp::Weight;

fn weight(n: usize, k: usize, dt: GgmlDType) -> BatchedWeight {
    let t = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
    BatchedWeight::new(&Weight::Quant(std::sync::Arc::new(QTensor::quantize(&t, dt).unwrap()))).unwrap()
}

fn main() {
    let (hidden, ff, heads, kv_dim) = (576, 1536, 9, 192);
    let q4 = GgmlDType::Q4_1;
    let layer = [
        ("qkv", weight(hidden + 2 * kv_dim, hidden, q4)),
        (
            "o (9 parts)",
            weight(hidden, hidden, q4)
                .with_parts(&(0..heads).map(|h| h * 64..(h + 1) * 64).collect::<Vec<_>>())
                .unwrap(),
        ),
        ("gate+up", weight(2 * ff, hidden, q4)),
        ("down (4 parts)", weight(hidden, ff, q4).with_parts(&[0..384, 384..768, 768..1152, 1152..1536]).unwrap()),
    ];
    let head = weight(49152, hidden, GgmlDType::Q8_0);
    println!("machine: {}", inference::bench::machine());
    println!("{:<16} {:>4} {:>10} {:>9}", "weight", "rows", "ms/call", "GFLOP/s");
    let mut per_rows = Vec::new();
    for m in [1usize, 4, 16] {
        let mut total = 0.0;
        for (name, w) in layer.iter().chain([("output head", head.clone())].iter()) {
            let (n, k) = w.dims();
            let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap();
            let _ = w.forward_parts(&x).unwrap();
            let reps = (2e9 / (2.0 * (m * n * k) as f64)).clamp(3.0, 400.0) as usize;
            let t = Instant::now();
            for _ in 0..reps {
                std::hint::black_box(w.forward_parts(&x).unwrap());
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            // A model has 30 layers and one head.
            total += if *name == "output head" { s } else { 30.0 * s };
            println!("{name:<16} {m:>4} {:>10.3} {:>9.1}", s * 1e3, 2.0 * (m * n * k) as f64 / s / 1e9);
        }
        println!("{:<16} {m:>4} {:>10.2}   (30 layers + head)", "model", total * 1e3);
        per_rows.push((m, total));
    }
    let one = per_rows[0].1;
    for (m, t) in &per_rows[1..] {
        println!("{m} rows cost {:.2}x one row ({:.2}x the tokens per second)", t / one, *m as f64 * one / t);
    }
}
