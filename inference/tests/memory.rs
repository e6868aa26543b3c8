//! Memory comes back: after a burst of long prompts, an idle engine's RSS returns to
//! near what it was before (the allocator would otherwise keep the freed KV caches and
//! scratch tensors). One test in this file, so no other test shares the process's RSS.

mod common;

use inference::{bench, Engine, EngineConfig};

#[test]
fn idle_rss_returns_after_a_burst_of_long_prompts() {
    let (m, t) = common::load(common::SMOL, 2);
    let mut e = Engine::new(m, t, EngineConfig { prefix_cache_bytes: 0, ..EngineConfig::default() });
    let kv = e.model().config().kv_bytes_per_token();
    let (seqs, prompt) = (4, 1000);
    let r = bench::memory_burst(&mut e, seqs, prompt).unwrap();
    let mb = |b: usize| b / (1 << 20);
    eprintln!(
        "RSS MiB: before {}, peak {}, freed while busy {}, idle {}",
        mb(r.before),
        mb(r.peak),
        mb(r.freed_busy),
        mb(r.idle)
    );
    // The burst really grew the process: at least half its KV caches were resident.
    assert!(r.peak > r.before + seqs * prompt * kv / 2, "{r:?}");
    // Most of what the burst took comes back (without the release, about half of it stays;
    // what remains is the allocator's per-thread bookkeeping and fragmented pages).
    let grew = r.peak - r.before;
    assert!(r.idle.saturating_sub(r.before) * 5 <= grew, "idle RSS stayed high: {r:?}");
    assert!(r.idle * 2 <= r.before * 3, "idle RSS stayed high: {r:?}");
}
