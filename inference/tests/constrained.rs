//! Constrained decoding on the real models: outputs match their regex, choice or schema at
//! temperature 1, batched together; an unreachable end finishes as `length`; bad
//! constraints are refused with a reason, in bounded time.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use inference::{ConstraintError, ConstraintSpec, Engine, Event, FinishReason, GenerateRequest, SamplingParams, SeqId};

/// Runs `specs` (one sequence each, seeds 1, 2, ...) together to the end: (text, reason).
fn run(
    e: &mut Engine,
    prompt: &str,
    spec: &ConstraintSpec,
    seeds: u64,
    max_tokens: usize,
) -> Vec<(String, FinishReason)> {
    let grammar = e.constraints().compile(spec).expect("compiles");
    let ids = e.tokenizer().encode(prompt, true).unwrap();
    let seqs: Vec<SeqId> = (1..=seeds)
        .map(|seed| {
            let req = GenerateRequest {
                sampling: SamplingParams { temperature: 1.0, seed: Some(seed), ..Default::default() },
                constraint: Some(grammar.clone()),
                ..GenerateRequest::greedy(ids.clone(), max_tokens)
            };
            e.add(req).unwrap()
        })
        .collect();
    let mut text: HashMap<SeqId, String> = HashMap::new();
    let mut reason: HashMap<SeqId, FinishReason> = HashMap::new();
    while e.has_work() {
        for ev in e.step().unwrap() {
            match ev {
                Event::Token { seq, text: t, .. } => text.entry(seq).or_default().push_str(&t),
                Event::Finished { seq, reason: r, text: t, .. } => {
                    text.entry(seq).or_default().push_str(&t);
                    reason.insert(seq, r);
                }
                Event::Prefill { .. } => {}
            }
        }
    }
    seqs.iter().map(|s| (text.remove(s).unwrap_or_default(), reason[s])).collect()
}

fn is_phone(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 8 && b[3] == b'-' && b.iter().enumerate().all(|(i, c)| i == 3 || c.is_ascii_digit())
}

#[test]
fn regex_and_choice_hold_at_temperature_one() {
    let mut smol = common::engine(common::SMOL, 1);
    let phone = ConstraintSpec::Regex("[0-9]{3}-[0-9]{4}".into());
    for (text, reason) in run(&mut smol, "My phone number is", &phone, 4, 16) {
        assert!(is_phone(&text), "{text:?}");
        assert_eq!(reason, FinishReason::Stop);
    }

    // Gemma's SentencePiece vocabulary (byte fallback) with Korean labels.
    let mut gemma = common::engine(common::GEMMA, 1);
    let labels = ConstraintSpec::Choice(vec!["긍정".into(), "부정".into()]);
    let prompt = "<start_of_turn>user\n이 리뷰는 긍정인가 부정인가? \"정말 최고의 영화였다\"<end_of_turn>\n<start_of_turn>model\n";
    for (text, reason) in run(&mut gemma, prompt, &labels, 4, 16) {
        assert!(text == "긍정" || text == "부정", "{text:?}");
        assert_eq!(reason, FinishReason::Stop);
    }
    for (text, reason) in run(&mut gemma, "Call 555-0199 or", &phone, 3, 16) {
        assert!(is_phone(&text), "{text:?}");
        assert_eq!(reason, FinishReason::Stop);
    }
}

#[test]
fn json_schema_output_parses_and_a_short_budget_ends_as_length() {
    let mut smol = common::engine(common::SMOL, 1);
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "mood": {"enum": ["happy", "sad"]}
        },
        "required": ["name", "age", "mood"],
        "additionalProperties": false
    });
    let spec = ConstraintSpec::JsonSchema(schema);
    for (text, reason) in run(&mut smol, "A person as JSON:", &spec, 3, 64) {
        assert_eq!(reason, FinishReason::Stop, "{text:?}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert!(v["name"].is_string() && v["age"].is_u64(), "{v}");
        assert!(v["mood"] == "happy" || v["mood"] == "sad", "{v}");
    }
    // 40 letters cannot fit in 3 tokens: `length`, and what came is a valid prefix.
    let long = ConstraintSpec::Regex("[a-z]{40}".into());
    for (text, reason) in run(&mut smol, "Letters:", &long, 2, 3) {
        assert_eq!(reason, FinishReason::Length);
        assert!(!text.is_empty() && text.bytes().all(|b| b.is_ascii_lowercase()), "{text:?}");
    }
    // Compiled once: the same spec again is a cache hit.
    let before = smol.constraints().cached();
    smol.constraints().compile(&long).unwrap();
    assert_eq!(smol.constraints().cached(), before);
}

#[test]
fn bad_constraints_are_refused_with_reasons_in_bounded_time() {
    let (_, tok) = common::inspect(common::SMOL);
    let c = inference::Constraints::new(std::sync::Arc::new(tok));
    let invalid = |spec: ConstraintSpec| {
        let started = Instant::now();
        let err = c.compile(&spec).expect_err("refused");
        assert!(started.elapsed() < Duration::from_secs(5), "{spec:?} took {:?}", started.elapsed());
        err
    };
    assert!(matches!(invalid(ConstraintSpec::Regex("[0-9".into())), ConstraintError::Invalid { kind: "regex", .. }));
    let e = invalid(ConstraintSpec::JsonSchema(serde_json::json!({"type": "nonsense"})));
    assert!(matches!(e, ConstraintError::Invalid { kind: "json", .. }), "{e}");
    // A grammar that matches nothing (an empty intersection). (One whose rule never ends
    // compiles: its output runs to `max_tokens` and finishes as `length`.)
    let e = invalid(ConstraintSpec::Grammar("start: A\nA: /[a-z]+/ & /[0-9]+/".into()));
    assert!(matches!(e, ConstraintError::Empty { kind: "grammar" }), "{e}");
    assert!(matches!(invalid(ConstraintSpec::Grammar("start: (".into())), ConstraintError::Invalid { .. }));
    assert!(matches!(invalid(ConstraintSpec::Choice(vec![])), ConstraintError::Invalid { kind: "choice", .. }));
    // A regex whose automaton explodes runs out of lexer fuel instead of stalling.
    let started = Instant::now();
    let _ = c.compile(&ConstraintSpec::Regex("(a|b)*a(a|b){30}".into()));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}
