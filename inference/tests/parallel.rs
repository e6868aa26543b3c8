//! Tensor parallelism and batching must not change what the model says:
//! TP=2 and TP=4 over in-process CPU ranks give TP=1's greedy tokens for 64 steps, and 8
//! different prompts decoded together give each one's greedy tokens alone.

mod common;

use inference::{EngineConfig, Event, GenerateRequest};

const PROMPTS: [&str; 8] = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "한국의 수도는",
    "日本で一番高い山は",
    "Water boils at a temperature of",
    "My favourite recipe for pancakes starts with",
    "The three primary colours are",
];

fn greedy(name: &str, tp: usize, prompt: &str, steps: usize) -> Vec<u32> {
    let mut e = common::engine(name, tp);
    let ids = e.tokenizer().encode(prompt, true).unwrap();
    let mut req = GenerateRequest::greedy(ids, steps);
    req.ignore_eos = true;
    e.generate(req, |_| {}).unwrap().token_ids()
}

fn tp_matches_tp1(name: &str) {
    let prompt = "Tensor parallel inference splits every layer across devices, so that";
    let base = greedy(name, 1, prompt, 64);
    assert_eq!(base.len(), 64);
    for tp in [2, 4] {
        let got = greedy(name, tp, prompt, 64);
        assert_eq!(got, base, "{name}: TP={tp} greedy tokens differ from TP=1");
    }
}

#[test]
fn gemma3_tp2_tp4_equal_tp1() {
    tp_matches_tp1(common::GEMMA);
}

#[test]
fn llama_tp2_tp4_equal_tp1() {
    tp_matches_tp1(common::SMOL);
}

fn batch_matches_alone(name: &str, tp: usize) {
    let steps = 24;
    let mut e = common::engine(name, tp);
    let mut alone = Vec::new();
    for p in PROMPTS {
        let ids = e.tokenizer().encode(p, true).unwrap();
        let mut req = GenerateRequest::greedy(ids, steps);
        req.ignore_eos = true;
        alone.push(e.generate(req, |_| {}).unwrap().token_ids());
    }
    // All eight together: prefilled in one step, then decoded side by side.
    let mut ids = Vec::new();
    for p in PROMPTS {
        let toks = e.tokenizer().encode(p, true).unwrap();
        let mut req = GenerateRequest::greedy(toks, steps);
        req.ignore_eos = true;
        ids.push(e.add(req).unwrap());
    }
    let mut together = vec![Vec::new(); PROMPTS.len()];
    let mut max_batch = 0;
    while e.has_work() {
        let events = e.step().unwrap();
        max_batch = max_batch.max(e.last_step.decode_tokens);
        for ev in events {
            if let Event::Token { seq, token, .. } = ev {
                let i = ids.iter().position(|&s| s == seq).unwrap();
                together[i].push(token.id);
            }
        }
    }
    assert_eq!(max_batch, PROMPTS.len(), "all sequences decoded in one batch");
    for (i, p) in PROMPTS.iter().enumerate() {
        assert_eq!(together[i], alone[i], "{name}: batched output differs for {p:?}");
    }
}

#[test]
fn gemma3_eight_prompts_batched_equal_alone() {
    batch_matches_alone(common::GEMMA, 1);
}

#[test]
fn llama_eight_prompts_batched_equal_alone() {
    batch_matches_alone(common::SMOL, 1);
}

#[test]
fn staggered_arrivals_join_a_running_batch() {
    // Continuous batching: a sequence admitted while others are mid-decode still gets
    // exactly its solo tokens.
    let mut e = common::engine(common::SMOL, 2);
    let enc = |e: &inference::Engine, p: &str| e.tokenizer().encode(p, true).unwrap();
    let solo = {
        let mut r = GenerateRequest::greedy(enc(&e, PROMPTS[1]), 16);
        r.ignore_eos = true;
        e.generate(r, |_| {}).unwrap().token_ids()
    };
    let mut first = GenerateRequest::greedy(enc(&e, PROMPTS[0]), 40);
    first.ignore_eos = true;
    e.add(first).unwrap();
    for _ in 0..5 {
        e.step().unwrap();
    }
    let mut late = GenerateRequest::greedy(enc(&e, PROMPTS[1]), 16);
    late.ignore_eos = true;
    let late_id = e.add(late).unwrap();
    let mut got = Vec::new();
    while e.has_work() {
        for ev in e.step().unwrap() {
            if let Event::Token { seq, token, .. } = ev {
                if seq == late_id {
                    got.push(token.id);
                }
            }
        }
    }
    assert_eq!(got, solo);
    let _ = EngineConfig::default();
}
