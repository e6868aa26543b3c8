//! A rank that fails inside a step (an error or a panic) must fail that step on every
//! rank, promptly, and leave the engine serving: the step's sequences are reported and
//! freed, queued ones survive, and later requests give a fresh engine's greedy tokens.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use inference::{Engine, EngineConfig, EngineError, Event, Fault, GenerateRequest, SeqId};

/// Runs `f` on its own thread and fails the test if it takes longer than `secs` (a hang
/// in a collective would otherwise hang the test run).
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs)).expect("engine hung (or panicked) after an injected fault")
}

fn request(e: &Engine, prompt: &str, steps: usize) -> GenerateRequest {
    let ids = e.tokenizer().encode(prompt, true).unwrap();
    let mut req = GenerateRequest::greedy(ids, steps);
    req.ignore_eos = true;
    req
}

/// Steps until `id` finishes; its token ids.
fn run_to_end(e: &mut Engine, id: SeqId) -> Vec<u32> {
    let mut out = Vec::new();
    let mut done = false;
    while !done {
        for ev in e.step().unwrap() {
            match ev {
                Event::Token { seq, token, .. } if seq == id => out.push(token.id),
                Event::Finished { seq, .. } if seq == id => done = true,
                _ => {}
            }
        }
    }
    out
}

const PROMPT: &str = "The quick brown fox jumps over the lazy dog because";
const QUEUED: &str = "def fibonacci(n):";

fn engine(tp: usize) -> Engine {
    let (m, t) = common::load(common::SMOL, tp);
    // Two running at most, so a third request waits outside the failing step.
    Engine::new(m, t, EngineConfig { max_running: 2, ..EngineConfig::default() })
}

fn fault_heals(tp: usize, rank: usize, kind: Fault) {
    within(300, move || {
        let steps = 12;
        let mut fresh = engine(tp);
        let r = request(&fresh, PROMPT, steps);
        let want = fresh.generate(r.clone(), |_| {}).unwrap().token_ids();
        let r = request(&fresh, QUEUED, steps);
        let want_queued = fresh.generate(r, |_| {}).unwrap().token_ids();
        drop(fresh);

        let mut e = engine(tp);
        // One sequence mid-decode, one joining in the failing step, one queued behind them.
        let a = e.add(request(&e, "Once upon a time, in a small village,", steps)).unwrap();
        e.step().unwrap();
        e.step().unwrap();
        let b = e.add(request(&e, "Water boils at a temperature of", steps)).unwrap();
        let c = e.add(request(&e, QUEUED, steps)).unwrap();
        e.inject_fault(rank, kind);
        let err = e.step().expect_err("the injected fault fails the step");
        let mut failed = err.failed.clone();
        failed.sort();
        assert_eq!(failed, vec![a, b], "the step's sequences are reported");
        match &err.source {
            EngineError::StepFailed { rank: r, reason } => {
                assert_eq!(*r, rank, "the failing rank is named, not one it aborted: {reason}");
                assert!(reason.contains("injected"), "{reason}");
            }
            other => panic!("unexpected error {other}"),
        }
        assert_eq!(e.num_running(), 0);
        assert_eq!(e.num_waiting(), 1, "the queued sequence was not part of the step");
        assert!(!e.cancel(a) && !e.cancel(b), "failed sequences are already gone");

        // The queued request and a new one run to the tokens a fresh engine gives.
        assert_eq!(run_to_end(&mut e, c), want_queued, "queued request after the fault");
        let got = e.generate(request(&e, PROMPT, steps), |_| {}).unwrap().token_ids();
        assert_eq!(got, want, "new request after the fault");
        assert_eq!(e.cached_tokens(), 0);
    });
}

#[test]
fn rank1_error_fails_the_step_and_the_engine_heals() {
    fault_heals(2, 1, Fault::Error);
}

#[test]
fn rank1_panic_fails_the_step_and_the_engine_heals() {
    fault_heals(2, 1, Fault::Panic);
}

#[test]
fn rank0_panic_fails_the_step_and_the_engine_heals() {
    fault_heals(2, 0, Fault::Panic);
}
