//! Scoring forced continuation tokens (likelihood labelling) on the real SmolLM2 model:
//! the scores agree with greedy decoding, survive the prefix cache and batching.

mod common;

use inference::{Engine, Event, FinishReason, GenerateRequest, SamplingParams};

/// Runs requests together (one batch) to completion; per request: (token logprobs, cached tokens).
fn run_all(e: &mut Engine, reqs: Vec<GenerateRequest>) -> Vec<(Vec<(u32, f32)>, usize)> {
    let ids: Vec<u64> = reqs.into_iter().map(|r| e.add(r).unwrap()).collect();
    let mut out = vec![(Vec::new(), usize::MAX); ids.len()];
    while e.has_work() {
        for ev in e.step().unwrap() {
            match ev {
                Event::Token { seq, token, .. } => {
                    let i = ids.iter().position(|&s| s == seq).unwrap();
                    out[i].0.push((token.id, token.logprob));
                }
                Event::Finished { seq, cached_tokens, reason, .. } => {
                    let i = ids.iter().position(|&s| s == seq).unwrap();
                    assert_ne!(reason, FinishReason::Cancelled);
                    out[i].1 = cached_tokens;
                }
                Event::Prefill { .. } => {}
            }
        }
    }
    out
}

fn sum(lps: &[(u32, f32)]) -> f32 {
    lps.iter().map(|(_, lp)| lp).sum()
}

#[test]
fn forced_tokens_score_like_greedy_decoding() {
    let mut e = common::engine(common::SMOL, 1);
    let tok = e.tokenizer().clone();
    let prompt = tok.encode("The capital of France is Paris. The capital of Germany is", true).unwrap();
    let mut greedy = GenerateRequest::greedy(prompt.clone(), 4);
    greedy.ignore_eos = true;
    let gen = e.generate(greedy, |_| {}).unwrap();
    let gen_ids = gen.token_ids();

    // Forcing exactly what greedy decoding produced reports the same logprobs, token by token.
    let scored = e.generate(GenerateRequest::score(prompt.clone(), gen_ids.clone()), |_| {}).unwrap();
    assert_eq!(scored.finish_reason, Some(FinishReason::Stop));
    assert_eq!(scored.token_ids(), gen_ids, "forced tokens are reported, never replaced");
    for (g, s) in gen.tokens.iter().zip(&scored.tokens) {
        assert!((g.logprob - s.logprob).abs() < 1e-3, "greedy {g:?} vs scored {s:?}");
    }

    // Clear case: the label greedy decoding writes scores best among the candidates.
    let labels = [" Berlin", " London", " Paris", " Madrid"];
    let reqs: Vec<_> =
        labels.iter().map(|l| GenerateRequest::score(prompt.clone(), tok.encode(l, false).unwrap())).collect();
    let scores: Vec<f32> = run_all(&mut e, reqs).iter().map(|(lps, _)| sum(lps)).collect();
    let best = (0..labels.len()).max_by(|&a, &b| scores[a].total_cmp(&scores[b])).unwrap();
    let greedy_text = tok.decode(&gen_ids, true).unwrap();
    assert!(greedy_text.starts_with(labels[best]), "greedy {greedy_text:?}, scores {scores:?} for {labels:?}");
    assert_eq!(labels[best], " Berlin", "{scores:?}");
    assert!(scores.iter().all(|s| s.is_finite() && *s <= 0.0), "{scores:?}");
}

#[test]
fn scores_are_the_same_through_the_prefix_cache_and_in_a_batch() {
    let shared = "Review: I loved it.\nSentiment: positive\n\nReview: Awful, boring film.\nSentiment: negative\n\nReview: What a great cast!\nSentiment:";
    let mut cached = common::engine(common::SMOL, 1);
    let (m, t) = common::load(common::SMOL, 1);
    let mut plain = Engine::new(m, t, inference::EngineConfig { prefix_cache_bytes: 0, ..Default::default() });
    let tok = cached.tokenizer().clone();
    let prompt = tok.encode(shared, true).unwrap();
    let label = |l: &str| tok.encode(l, false).unwrap();

    // First request fills the prefix cache; the next ones reuse the prompt's KV.
    let first = run_all(&mut cached, vec![GenerateRequest::score(prompt.clone(), label(" positive"))]);
    assert_eq!(first[0].1, 0);
    // Two scorings and an ordinary generation in one batch.
    let mut gen = GenerateRequest::greedy(prompt.clone(), 3);
    gen.sampling = SamplingParams { temperature: 0.0, ..Default::default() };
    let batch = run_all(
        &mut cached,
        vec![
            GenerateRequest::score(prompt.clone(), label(" positive")),
            GenerateRequest::score(prompt.clone(), label(" negative")),
            gen,
        ],
    );
    assert!(batch[0].1 >= prompt.len() - 1 && batch[1].1 >= prompt.len() - 1, "prefix reused: {batch:?}");
    assert_eq!(batch[2].0.len(), 3, "the generating sequence is unaffected");

    let reference = run_all(
        &mut plain,
        vec![
            GenerateRequest::score(prompt.clone(), label(" positive")),
            GenerateRequest::score(prompt.clone(), label(" negative")),
        ],
    );
    assert_eq!(reference[0].1, 0, "no prefix cache, nothing reused");
    for (a, b) in [(&first[0], &reference[0]), (&batch[0], &reference[0]), (&batch[1], &reference[1])] {
        assert_eq!(a.0.len(), b.0.len());
        for ((ia, la), (ib, lb)) in a.0.iter().zip(&b.0) {
            assert_eq!(ia, ib);
            assert!((la - lb).abs() < 2e-3, "{la} vs {lb}");
        }
    }
    // Greedy decoding takes the most likely token: no forced first token scores above it.
    let greedy_first = batch[2].0[0].1;
    for r in &reference {
        assert!(r.0[0].1 <= greedy_first + 1e-3, "forced {:?} above greedy {greedy_first}", r.0[0]);
    }
}

#[test]
fn a_scored_sequence_over_the_context_is_refused() {
    let mut e = common::engine(common::SMOL, 1);
    let ctx = e.context_length();
    let err = e.add(GenerateRequest::score(vec![1; ctx - 2], vec![2, 3, 4])).unwrap_err();
    assert!(matches!(err, inference::EngineError::PromptTooLong { .. }), "{err}");
}
