//! Prometheus metrics, rendered as text at `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
    pub fn observe(&self, seconds: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if seconds <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
    fn render(&self, name: &str, help: &str, out: &mut String) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            out.push_str(&format!("{name}_bucket{{le=\"{b}\"}} {}\n", c.load(Ordering::Relaxed)));
        }
        let n = self.count.load(Ordering::Relaxed);
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {n}\n"));
        out.push_str(&format!("{name}_sum {}\n", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6));
        out.push_str(&format!("{name}_count {n}\n"));
    }
}

const LATENCY_BOUNDS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Debug)]
pub struct Metrics {
    pub queue_depth: AtomicU64,
    pub running: AtomicU64,
    pub kv_cache_tokens: AtomicU64,
    pub prefix_cache_tokens: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub cancelled: AtomicU64,
    pub ttft: Histogram,
    pub token_latency: Histogram,
    requests: Mutex<BTreeMap<u16, u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            queue_depth: AtomicU64::new(0),
            running: AtomicU64::new(0),
            kv_cache_tokens: AtomicU64::new(0),
            prefix_cache_tokens: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            ttft: Histogram::new(LATENCY_BOUNDS),
            token_latency: Histogram::new(LATENCY_BOUNDS),
            requests: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Metrics {
    pub fn count_request(&self, status: u16) {
        *self.requests.lock().expect("metrics lock").entry(status).or_default() += 1;
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let series: [(&str, &str, &AtomicU64, &str); 6] = [
            ("studio_queue_depth", "Requests waiting to be admitted.", &self.queue_depth, "gauge"),
            ("studio_running_sequences", "Sequences in the running batch.", &self.running, "gauge"),
            ("studio_kv_cache_tokens", "Positions held in KV caches.", &self.kv_cache_tokens, "gauge"),
            ("studio_prompt_tokens_total", "Prompt tokens processed.", &self.prompt_tokens, "counter"),
            ("studio_generated_tokens_total", "Tokens generated.", &self.generated_tokens, "counter"),
            (
                "studio_cancelled_sequences_total",
                "Sequences cancelled by disconnect or deadline.",
                &self.cancelled,
                "counter",
            ),
        ];
        for (name, help, value, kind) in series {
            let v = value.load(Ordering::Relaxed);
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"));
        }
        self.ttft.render("studio_time_to_first_token_seconds", "Time from admission request to first token.", &mut out);
        self.token_latency.render("studio_inter_token_latency_seconds", "Time between generated tokens.", &mut out);
        out.push_str("# HELP studio_requests_total Requests by HTTP status.\n# TYPE studio_requests_total counter\n");
        for (status, n) in self.requests.lock().expect("metrics lock").iter() {
            out.push_str(&format!("studio_requests_total{{status=\"{status}\"}} {n}\n"));
        }
        out
    }
}
