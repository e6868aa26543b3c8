//! The engine's step scheduling, on the real SmolLM2: chunked prefill, priorities, one
//! prefill for identical prompts, cancellation in the middle of a prompt.

mod common;

use std::collections::HashMap;

use inference::{Engine, EngineConfig, Event, GenerateRequest, Priority, SamplingParams, SeqId};

fn engine(cfg: EngineConfig) -> Engine {
    let (m, t) = common::load(common::SMOL, 1);
    Engine::new(m, t, cfg)
}

fn long_prompt(e: &Engine, tokens: usize) -> Vec<u32> {
    let text = "The quick brown fox jumps over the lazy dog, and then it runs far away into the woods. ";
    let mut ids = e.tokenizer().encode(&text.repeat(tokens / 10 + 2), true).unwrap();
    ids.truncate(tokens);
    ids
}

/// Runs until idle; every sequence's (token id, logprob bits) and the steps taken.
fn drain(e: &mut Engine) -> (HashMap<SeqId, Vec<(u32, u32)>>, usize) {
    let mut out: HashMap<SeqId, Vec<(u32, u32)>> = HashMap::new();
    let mut steps = 0;
    while e.has_work() {
        steps += 1;
        for ev in e.step().unwrap() {
            if let Event::Token { seq, token, .. } = ev {
                out.entry(seq).or_default().push((token.id, token.logprob.to_bits()));
            }
        }
    }
    (out, steps)
}

fn no_cache(max_batch_tokens: usize) -> EngineConfig {
    EngineConfig { max_batch_tokens, prefix_cache_bytes: 0, ..Default::default() }
}

#[test]
fn chunked_prefill_gives_the_tokens_and_logprobs_of_one_piece() {
    let mut whole = engine(no_cache(4096));
    let ids = long_prompt(&whole, 300);
    let a = whole.add(GenerateRequest::greedy(ids.clone(), 8)).unwrap();
    let (one, steps_one) = drain(&mut whole);

    let mut chunked = engine(no_cache(64));
    let b = chunked.add(GenerateRequest::greedy(ids.clone(), 8)).unwrap();
    let mut progress = Vec::new();
    let mut out = Vec::new();
    let mut steps = 0;
    while chunked.has_work() {
        steps += 1;
        for ev in chunked.step().unwrap() {
            match ev {
                Event::Prefill { seq, done, total } if seq == b => progress.push((done, total)),
                Event::Token { token, .. } => out.push((token.id, token.logprob.to_bits())),
                _ => {}
            }
            assert!(chunked.last_step.prefill_tokens + chunked.last_step.decode_tokens <= 64);
        }
    }
    assert_eq!(out, one[&a], "chunked prefill changes nothing, to the bit");
    // 300 prompt tokens at 64 a step: 4 partial chunks reported, then the 5th completes.
    assert_eq!(progress, vec![(64, 300), (128, 300), (192, 300), (256, 300)]);
    assert_eq!(steps, steps_one + 4);
}

#[test]
fn a_short_request_is_not_queued_behind_a_long_prefill() {
    let mut e = engine(no_cache(64));
    let long = long_prompt(&e, 600);
    let l = e.add(GenerateRequest::greedy(long, 4)).unwrap();
    e.step().unwrap(); // the long prompt has started
    let short = e.tokenizer().encode("Hello, my name is", true).unwrap();
    let s = e.add(GenerateRequest::greedy(short, 2)).unwrap();
    let mut first_token = HashMap::new();
    let mut step = 0;
    while e.has_work() {
        step += 1;
        for ev in e.step().unwrap() {
            if let Event::Token { seq, .. } = ev {
                first_token.entry(seq).or_insert(step);
            }
        }
    }
    assert_eq!(first_token[&s], 1, "the short prompt prefills in the very next step");
    assert!(first_token[&l] >= 9, "the long one still takes its chunks: step {}", first_token[&l]);
}

#[test]
fn cancel_in_the_middle_of_a_prompt_frees_its_kv() {
    let mut e = engine(no_cache(64));
    let long = long_prompt(&e, 400);
    let id = e.add(GenerateRequest::greedy(long, 4)).unwrap();
    e.step().unwrap();
    e.step().unwrap();
    assert_eq!(e.cached_tokens(), 128, "two chunks in the cache");
    assert!(e.cancel(id));
    assert_eq!(e.cached_tokens(), 0);
    assert!(!e.has_work(), "nothing left to prefill");
    // The engine goes on: the next request runs as on a fresh engine.
    let ids = e.tokenizer().encode("Once upon a time", true).unwrap();
    let a = e.add(GenerateRequest::greedy(ids.clone(), 6)).unwrap();
    let (got, _) = drain(&mut e);
    let mut fresh = engine(no_cache(64));
    let b = fresh.add(GenerateRequest::greedy(ids, 6)).unwrap();
    assert_eq!(got[&a], drain(&mut fresh).0[&b]);
}

#[test]
fn api_work_overtakes_running_batch_work_at_the_step_level() {
    let cfg = EngineConfig { batch_tokens_with_api: 2, ..no_cache(512) };
    let mut e = engine(cfg);
    let mut batch = Vec::new();
    for k in 0..6 {
        let ids = e.tokenizer().encode(&format!("Row {k}: the weather today is"), true).unwrap();
        let mut r = GenerateRequest::greedy(ids, 40);
        r.ignore_eos = true;
        batch.push(e.add_with(r, Priority::Batch).unwrap());
    }
    e.step().unwrap();
    e.step().unwrap();
    assert_eq!(e.last_step.batch_tokens, 6, "alone, batch work runs at full width");
    let ids = e.tokenizer().encode("An API request:", true).unwrap();
    let mut r = GenerateRequest::greedy(ids, 5);
    r.ignore_eos = true;
    let api = e.add(r).unwrap();
    let mut api_tokens = 0;
    let mut steps = 0;
    while api_tokens < 5 {
        steps += 1;
        let evs = e.step().unwrap();
        assert!(e.last_step.batch_tokens <= 2, "batch work is held to its share: {}", e.last_step.batch_tokens);
        api_tokens += evs.iter().filter(|ev| matches!(ev, Event::Token { seq, .. } if *seq == api)).count();
    }
    assert_eq!(steps, 5, "one API token every step");
    e.step().unwrap();
    assert_eq!(e.last_step.batch_tokens, 6, "back to full width once the API request is done");
    // Paused batch rows lost nothing: each still produces exactly what it does alone.
    let (rest, _) = drain(&mut e);
    assert!(batch.iter().all(|id| rest.contains_key(id)));
}

#[test]
fn n_samples_of_one_prompt_share_one_prefill() {
    let req = |ids: &[u32], seed| GenerateRequest {
        sampling: SamplingParams { temperature: 0.9, seed: Some(seed), ..Default::default() },
        ..GenerateRequest::greedy(ids.to_vec(), 6)
    };
    let mut e = engine(no_cache(128));
    let ids = long_prompt(&e, 200);
    let seqs: Vec<SeqId> = (0..4).map(|k| e.add(req(&ids, 7 + k)).unwrap()).collect();
    let mut prefilled = 0;
    let mut out: HashMap<SeqId, Vec<(u32, u32)>> = HashMap::new();
    while e.has_work() {
        for ev in e.step().unwrap() {
            if let Event::Token { seq, token, .. } = ev {
                out.entry(seq).or_default().push((token.id, token.logprob.to_bits()));
            }
        }
        prefilled += e.last_step.prefill_tokens;
    }
    assert_eq!(prefilled, 200, "the prompt is prefilled once for all four");
    let together: Vec<_> = seqs.iter().map(|id| out[id].clone()).collect();
    let alone: Vec<_> = (0..4)
        .map(|k| {
            let mut e = engine(no_cache(128));
            let id = e.add(req(&ids, 7 + k)).unwrap();
            drain(&mut e).0[&id].clone()
        })
        .collect();
    assert_eq!(together, alone, "seeded samples are unchanged by sharing the prefill");
    assert!(together.windows(2).any(|w| w[0] != w[1]), "different seeds, different samples");
}

#[test]
fn a_follower_whose_leader_is_cancelled_prefills_for_itself() {
    let mut e = engine(no_cache(64));
    let ids = long_prompt(&e, 200);
    let a = e.add(GenerateRequest::greedy(ids.clone(), 4)).unwrap();
    let b = e.add(GenerateRequest::greedy(ids.clone(), 4)).unwrap();
    e.step().unwrap();
    assert!(e.cancel(a));
    let (out, _) = drain(&mut e);
    let mut fresh = engine(no_cache(64));
    let c = fresh.add(GenerateRequest::greedy(ids, 4)).unwrap();
    assert_eq!(out[&b], drain(&mut fresh).0[&c]);
}
