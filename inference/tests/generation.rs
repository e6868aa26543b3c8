//! Generation behaviour on the real default model: UTF-8-safe streaming of Korean and
//! Japanese, seeded sampling, stop sequences, logprobs.

mod common;

use inference::{FinishReason, GenerateRequest, SamplingParams};

#[test]
fn korean_and_japanese_streams_concatenate_to_the_full_decode() {
    let mut e = common::engine(common::GEMMA, 1);
    for prompt in ["한국어 문장을 하나 써 주세요: 오늘은", "日本語で短い物語を書いてください。昔々、"]
    {
        let ids = e.tokenizer().encode(prompt, true).unwrap();
        let mut req = GenerateRequest::greedy(ids, 48);
        req.ignore_eos = true;
        let mut pieces = Vec::new();
        let out = e.generate(req, |t| pieces.push(t.to_string())).unwrap();
        let streamed: String = pieces.concat();
        let full = e.tokenizer().decode(&out.token_ids(), true).unwrap();
        assert_eq!(streamed, full, "{prompt}");
        assert!(!streamed.contains('\u{FFFD}'), "no replacement characters: {streamed:?}");
        // The model really wrote CJK text, some of it from multi-token characters.
        assert!(
            streamed.chars().any(|c| ('\u{AC00}'..='\u{D7A3}').contains(&c)
                || ('\u{3040}'..='\u{30FF}').contains(&c)
                || ('\u{4E00}'..='\u{9FFF}').contains(&c)),
            "{streamed:?}"
        );
    }
}

#[test]
fn same_seed_same_tokens_different_seed_different_tokens() {
    let mut e = common::engine(common::SMOL, 1);
    let ids = e.tokenizer().encode("Write a short poem about the sea:", true).unwrap();
    let run = |e: &mut inference::Engine, seed: u64| {
        let mut req = GenerateRequest::greedy(ids.clone(), 32);
        req.sampling = SamplingParams { temperature: 1.0, top_p: 0.95, seed: Some(seed), ..Default::default() };
        req.ignore_eos = true;
        e.generate(req, |_| {}).unwrap().token_ids()
    };
    let a = run(&mut e, 42);
    let b = run(&mut e, 42);
    let c = run(&mut e, 43);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn stop_sequence_ends_generation_and_is_not_emitted() {
    let mut e = common::engine(common::SMOL, 1);
    let prompt = "Count: 1, 2, 3, 4, 5, 6,";
    let ids = e.tokenizer().encode(prompt, true).unwrap();
    let free = e.generate(GenerateRequest::greedy(ids.clone(), 24), |_| {}).unwrap();
    assert!(free.text.contains("9"), "the model counts on: {:?}", free.text);
    let mut req = GenerateRequest::greedy(ids, 24);
    req.stop = vec!["9".into()];
    let mut streamed = String::new();
    let out = e.generate(req, |t| streamed.push_str(t)).unwrap();
    assert_eq!(out.finish_reason, Some(FinishReason::Stop));
    assert!(!out.text.contains('9'), "{:?}", out.text);
    assert_eq!(streamed, out.text);
    assert!(free.text.starts_with(&out.text), "same tokens up to the stop: {:?} vs {:?}", out.text, free.text);
}

#[test]
fn logprobs_report_the_chosen_token_and_alternatives() {
    let mut e = common::engine(common::SMOL, 1);
    let ids = e.tokenizer().encode("The capital of France is", true).unwrap();
    let mut req = GenerateRequest::greedy(ids, 4);
    req.sampling.logprobs = Some(5);
    let out = e.generate(req, |_| {}).unwrap();
    for t in &out.tokens {
        assert_eq!(t.top.len(), 5);
        assert_eq!(t.top[0].0, t.id, "greedy picks the most likely token");
        assert!((t.top[0].1 - t.logprob).abs() < 1e-6);
        assert!(t.top.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(t.logprob <= 0.0);
    }
    assert_eq!(out.finish_reason, Some(FinishReason::Length));
}

#[test]
fn cancel_frees_the_sequence_and_bad_requests_are_refused() {
    let mut e = common::engine(common::SMOL, 1);
    let ids = e.tokenizer().encode("Hello there", true).unwrap();
    let id = e.add(GenerateRequest::greedy(ids.clone(), 100)).unwrap();
    e.step().unwrap();
    assert_eq!(e.num_running(), 1);
    assert!(e.cancel(id));
    assert_eq!(e.num_running(), 0);
    assert!(!e.has_work());
    assert!(matches!(e.add(GenerateRequest::greedy(vec![], 4)), Err(inference::EngineError::EmptyPrompt)));
    let too_long = vec![1u32; e.context_length()];
    let err = e.add(GenerateRequest::greedy(too_long, 4)).unwrap_err().to_string();
    assert!(err.contains(&e.context_length().to_string()), "{err}");
    let mut bad = GenerateRequest::greedy(ids, 4);
    bad.sampling.temperature = 5.0;
    let err = e.add(bad).unwrap_err().to_string();
    assert!(err.contains("temperature"), "{err}");
}

#[test]
fn prefix_cache_keeps_a_template_once_not_every_run_of_it() {
    let (m, t) = common::load(common::SMOL, 1);
    let mut e = inference::Engine::new(m, t, inference::EngineConfig::default());
    let shots: String = (0..12)
        .map(|i| {
            format!(
                "Review: Film number {i} was {}.\nSentiment: {}\n\n",
                ["fine", "dull"][i % 2],
                ["positive", "negative"][i % 2]
            )
        })
        .collect();
    let mut run = |prompt: &str| {
        let ids = e.tokenizer().encode(prompt, true).unwrap();
        let id = e.add(GenerateRequest::greedy(ids.clone(), 2)).unwrap();
        let mut cached = None;
        while e.has_work() {
            for ev in e.step().unwrap() {
                if let inference::Event::Finished { seq, cached_tokens, .. } = ev {
                    if seq == id {
                        cached = Some(cached_tokens);
                    }
                }
            }
        }
        (ids.len(), cached.unwrap(), e.prefix_cache_tokens())
    };
    let (first, cached, kept) = run(&format!("{shots}Review: An odd one.\nSentiment:"));
    assert!(first > 150, "{first} tokens");
    assert_eq!((cached, kept), (0, first));
    // The same template with another input: reuses the kept prompt, adds no near-copy.
    let (_, cached, kept) = run(&format!("{shots}Review: Great fun for all.\nSentiment:"));
    assert!(cached > first - 12, "{cached} of {first} cached");
    assert_eq!(kept, first);
    // A different prompt is kept beside it.
    let (other, cached, kept) = run(&"Une histoire de chats et de chiens, longue et belle. ".repeat(6));
    assert_eq!((cached, kept), (0, first + other));
}

#[test]
fn prefix_cache_reuses_a_few_shot_prefix_and_changes_nothing() {
    let shots = "Review: The acting was wonderful.\nSentiment: positive\n\nReview: A boring, endless film.\nSentiment: negative\n\nReview: I loved every minute of it.\nSentiment: positive\n\n";
    let run = |cache: bool| {
        let (m, t) = common::load(common::GEMMA, 1);
        let cfg =
            inference::EngineConfig { prefix_cache_bytes: if cache { 256 << 20 } else { 0 }, ..Default::default() };
        let mut e = inference::Engine::new(m, t, cfg);
        let mut outs = Vec::new();
        for input in ["The plot made no sense at all.", "What a beautiful, moving story."] {
            let ids = e.tokenizer().encode(&format!("{shots}Review: {input}\nSentiment:"), true).unwrap();
            let id = e.add(GenerateRequest::greedy(ids, 6)).unwrap();
            let mut toks = Vec::new();
            let mut cached = None;
            while e.has_work() {
                for ev in e.step().unwrap() {
                    match ev {
                        inference::Event::Token { seq, token, .. } if seq == id => toks.push(token.id),
                        inference::Event::Finished { seq, cached_tokens, .. } if seq == id => {
                            cached = Some(cached_tokens)
                        }
                        _ => {}
                    }
                }
            }
            outs.push((toks, cached.unwrap()));
        }
        outs
    };
    let with = run(true);
    let without = run(false);
    assert_eq!(with[0].1, 0, "first run has nothing to reuse");
    assert!(with[1].1 > 30, "second run reuses the few-shot prefix: {} tokens", with[1].1);
    assert_eq!(without[1].1, 0);
    assert_eq!(with[0].0, without[0].0);
    assert_eq!(with[1].0, without[1].0, "the cached prefix gives the same greedy output");
}

#[test]
fn a_prompt_computed_in_pieces_gives_the_logits_of_one_piece() {
    // Prefix-cache hits compute the last prompt positions alone; a position's logits must
    // not depend on how many positions were computed with it.
    for name in [common::SMOL, common::GEMMA] {
        let (m, tok) = common::load(name, 1);
        let ids = tok.encode("<|im_start|>user\nSay hello to everyone in the room.<|im_end|>\n", true).unwrap();
        let whole = m
            .forward(vec![inference::Chunk {
                seq: 1,
                tokens: ids.clone(),
                start_pos: 0,
                all_logits: false,
                tail_logits: 0,
                no_logits: false,
                embeddings: None,
            }])
            .unwrap();
        let n = ids.len();
        for split in [n - 1, n - 3, n / 2] {
            m.forward(vec![inference::Chunk {
                seq: 2,
                tokens: ids[..split].to_vec(),
                start_pos: 0,
                all_logits: false,
                tail_logits: 0,
                no_logits: false,
                embeddings: None,
            }])
            .unwrap();
            let rest = m
                .forward(vec![inference::Chunk {
                    seq: 2,
                    tokens: ids[split..].to_vec(),
                    start_pos: split,
                    all_logits: false,
                    tail_logits: 0,
                    no_logits: false,
                    embeddings: None,
                }])
                .unwrap();
            let (a, b): (Vec<f32>, Vec<f32>) =
                (whole[0].squeeze(0).unwrap().to_vec1().unwrap(), rest[0].squeeze(0).unwrap().to_vec1().unwrap());
            assert!(a == b, "{name}: split at {split} of {n} changes the logits");
            m.free(vec![2]);
        }
    }
}

#[test]
fn kv_budget_limits_admission_and_refuses_what_can_never_fit() {
    let (m, t) = common::load(common::SMOL, 1);
    let per_token = m.config().kv_bytes_per_token();
    // Room for 80 positions: two sequences of 10 prompt + 30 generated, not three.
    let cfg = inference::EngineConfig { kv_budget_bytes: 80 * per_token, prefix_cache_bytes: 0, ..Default::default() };
    let mut e = inference::Engine::new(m, t, cfg);
    let ids: Vec<u32> =
        e.tokenizer().encode("one two three four five six seven eight nine ten eleven twelve", true).unwrap();
    let ids = ids[..10].to_vec();
    for _ in 0..3 {
        let mut r = GenerateRequest::greedy(ids.clone(), 30);
        r.ignore_eos = true;
        e.add(r).unwrap();
    }
    let mut most = 0;
    while e.has_work() {
        e.step().unwrap();
        most = most.max(e.num_running());
    }
    assert_eq!(most, 2, "the third sequence waits for room");
    let err = e.add(GenerateRequest::greedy(ids, 100)).unwrap_err().to_string();
    assert!(err.contains("80"), "{err}");
}
