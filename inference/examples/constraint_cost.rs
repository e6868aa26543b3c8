//! The cost of constrained decoding on one model, as `studio bench --constraint` prints it:
//! `cargo run -p inference --example constraint_cost -- MODEL KIND ROWS STEPS`
//! (KIND: json, regex or choice).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let (model, kind) = (arg(0, "smollm2-135m"), arg(1, "json"));
    let (rows, steps) = (arg(2, "16").parse()?, arg(3, "16").parse()?);
    println!("machine: {}", inference::bench::machine());
    let c = inference::bench::constraint_cost(&model, 1, &kind, rows, steps)?;
    println!("{c:?}");
    println!("mask_overhead_pct {:.1} step_overhead_pct {:.1}", c.mask_overhead_pct(), c.step_overhead_pct());
    Ok(())
}
