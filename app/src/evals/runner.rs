//! Eval runs over the scheduler at batch priority: one row, a whole run, likelihood labelling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use inference::{FinishReason, GenerateRequest, Grammar, SamplingParams};

use super::assertions::{Assertion, AssertionCheck, AssertionResult, LabelScores};
use super::testset::TestCase;
use super::{EvalError, MAX_SAMPLES};
use crate::serving::{Priority, Scheduler, SeqEvent, ServeError};
use crate::store::Store;
use crate::templates::{FieldError, TokenIds, VersionSpec, MAX_MAX_TOKENS};

pub use api_types::evals::{EvalPlan, EvalRun, EvalSettings, EvalStatus, EvalSummary, RowResult};

/// Most outputs that agree (by trimmed text), first seen wins ties; and its share.
pub fn majority(samples: &[String]) -> (String, f64) {
    if samples.is_empty() {
        return (String::new(), 0.0);
    }
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for s in samples {
        let t = s.trim();
        match counts.iter_mut().find(|(x, _)| *x == t) {
            Some(c) => c.1 += 1,
            None => counts.push((t, 1)),
        }
    }
    let mut best = 0;
    for (i, c) in counts.iter().enumerate() {
        if c.1 > counts[best].1 {
            best = i;
        }
    }
    let share = counts[best].1 as f64 / samples.len() as f64;
    let text = samples.iter().find(|s| s.trim() == counts[best].0).cloned().unwrap_or_default();
    (text, share)
}

/// The text a label is scored as: the output prefix's trailing whitespace (trimmed off the
/// prompt by `render`) and the label, exactly as an example's output appears in the prompt.
pub fn continuation(spec: &VersionSpec, label: &str) -> String {
    format!("{}{label}", crate::templates::output::prefix_tail(spec))
}

/// What one finished sequence gave back.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    pub text: String,
    pub logprob_sum: f64,
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    pub generated_tokens: usize,
}

/// Submits at batch priority (waiting while the queue is full) and awaits the sequence.
pub async fn run_one(sched: &Scheduler, req: GenerateRequest) -> Result<Collected, ServeError> {
    let mut rx = loop {
        match sched.submit(req.clone(), Priority::Batch, None) {
            Ok(rx) => break rx,
            Err(ServeError::QueueFull { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => return Err(e),
        }
    };
    let mut out = Collected::default();
    while let Some(ev) = rx.recv().await {
        match ev {
            SeqEvent::Token { token, text } => {
                out.text.push_str(&text);
                out.logprob_sum += f64::from(token.logprob);
            }
            SeqEvent::Finished { reason, text, prompt_tokens, cached_tokens, generated_tokens } => {
                if reason == FinishReason::Cancelled {
                    return Err(ServeError::internal("the sequence was cancelled"));
                }
                out.text.push_str(&text);
                out.prompt_tokens = prompt_tokens;
                out.cached_tokens = cached_tokens;
                out.generated_tokens = generated_tokens;
                return Ok(out);
            }
            SeqEvent::Failed(e) => return Err(e),
            SeqEvent::Prefill { .. } => {}
        }
    }
    Err(ServeError::Stopped)
}

/// Scores each label as the continuation of `prompt` (summed logprob), concurrently.
pub async fn score_labels(
    sched: &Scheduler,
    spec: &VersionSpec,
    prompt: &[u32],
    labels: &[String],
) -> Result<Vec<f64>, ServeError> {
    let mut reqs = Vec::with_capacity(labels.len());
    for l in labels {
        let forced = sched.tokenizer.encode(&continuation(spec, l), false).map_err(ServeError::internal)?;
        reqs.push(GenerateRequest::score(prompt.to_vec(), forced));
    }
    // The first label alone puts the whole prompt in the prefix cache; the others then
    // prefill only their label tokens.
    let mut reqs = reqs.into_iter();
    let Some(first) = reqs.next() else { return Ok(Vec::new()) };
    let mut out = vec![run_one(sched, first).await?.logprob_sum];
    for r in futures_util::future::join_all(reqs.map(|r| run_one(sched, r))).await {
        out.push(r?.logprob_sum);
    }
    Ok(out)
}

fn sampling(spec: &VersionSpec, s: &EvalSettings, sample: usize) -> SamplingParams {
    let p = &spec.parameters;
    SamplingParams {
        temperature: s.temperature,
        top_p: p.top_p,
        top_k: p.top_k,
        repetition_penalty: p.repetition_penalty,
        seed: Some(s.seed.wrapping_add(sample as u64)),
        ..Default::default()
    }
}

/// The version's output constraint compiled for the served model (None without one); a
/// constraint the decoder refuses is an error naming its field. CPU work, off the workers.
pub async fn compile_output(sched: &Scheduler, spec: &VersionSpec) -> Result<Option<Arc<Grammar>>, EvalError> {
    let Some((param, constraint)) = crate::templates::output::constraint_spec(spec)? else { return Ok(None) };
    let sched = sched.clone();
    let compiled = tokio::task::spawn_blocking(move || crate::serving::compile_constraint(&sched, param, &constraint))
        .await
        .map_err(ServeError::internal)??;
    Ok(Some(compiled))
}

/// Renders, generates `n` samples under the version's output constraint (and scores
/// likelihood labels), checks the assertions and whether the samples met the constraint.
pub async fn eval_row(
    sched: &Scheduler,
    spec: &VersionSpec,
    constraint: Option<&Arc<Grammar>>,
    s: &EvalSettings,
    case: &TestCase,
) -> RowResult {
    let started = Instant::now();
    let row = &case.row;
    let mut out = RowResult {
        index: case.index,
        test_id: Some(case.id),
        variables: row.variables.clone(),
        expected: row.expected.clone(),
        ..Default::default()
    };
    // Rendering and tokenizing are CPU work: on the blocking pool, not a tokio worker (at
    // most `window` rows of a run at once).
    let (owned, vars, tok, model) =
        (spec.clone(), row.variables.clone(), sched.tokenizer.clone(), sched.model_name.clone());
    let rendered = tokio::task::spawn_blocking(move || -> Result<Vec<u32>, String> {
        let r = crate::serving::chat::render_version(&tok, &model, &owned, &vars).map_err(|e| e.to_string())?;
        r.token_ids(&tok).map(|(ids, _)| ids).map_err(|e| e.to_string())
    })
    .await;
    let prompt = match rendered {
        Ok(Ok(ids)) => ids,
        Ok(Err(e)) => {
            out.error = Some(e);
            return out;
        }
        Err(e) => {
            out.error = Some(format!("rendering failed: {e}"));
            return out;
        }
    };
    let samples = (0..s.n).map(|j| {
        let req = GenerateRequest {
            prompt_tokens: prompt.clone(),
            max_tokens: s.max_tokens,
            sampling: sampling(spec, s, j),
            stop: spec.parameters.stop.clone(),
            ignore_eos: false,
            forced: Vec::new(),
            constraint: constraint.cloned(),
            soft_prompt: None,
        };
        run_one(sched, req)
    });
    let assertions = row.effective_assertions();
    let labelled = assertions.iter().map(|a| async {
        match a {
            Assertion::Likelihood { labels } => {
                score_labels(sched, spec, &prompt, labels).await.map(|sc| Some(LabelScores::new(labels, &sc)))
            }
            _ => Ok(None),
        }
    });
    let (gens, scores) =
        futures_util::future::join(futures_util::future::join_all(samples), futures_util::future::join_all(labelled))
            .await;
    for g in gens {
        match g {
            Ok(c) => {
                out.prompt_tokens += c.prompt_tokens as i64;
                out.completion_tokens += c.generated_tokens as i64;
                out.cached_tokens += c.cached_tokens as i64;
                out.samples.push(c.text);
            }
            Err(e) => {
                out.error = Some(e.to_string());
                out.latency_ms = started.elapsed().as_millis() as i64;
                return out;
            }
        }
    }
    let (output, stability) = majority(&out.samples);
    out.output = output;
    out.stability = stability;
    out.constraint_met = spec
        .output
        .as_ref()
        .map(|_| out.samples.iter().all(|t| crate::templates::output::meets(spec, t).unwrap_or(true)));
    for (a, sc) in assertions.iter().zip(scores) {
        match sc {
            Ok(sc) => out.assertions.push(a.check(&out.output, row.expected.as_deref(), sc.as_ref())),
            Err(e) => {
                out.error = Some(e.to_string());
                out.assertions.push(AssertionResult {
                    kind: a.kind().into(),
                    passed: false,
                    detail: "scoring failed".into(),
                    chosen: None,
                    scores: None,
                });
            }
        }
    }
    out.passed = out.error.is_none() && out.assertions.iter().all(|a| a.passed);
    out.latency_ms = started.elapsed().as_millis() as i64;
    out
}

/// Rows evaluated at once: enough to fill the batch, few enough to leave the queue to the API.
pub fn window(sched: &Scheduler) -> usize {
    (sched.capacity / 4).clamp(1, 16)
}

/// The background task of one run: awaits only scheduler events and the database. Stops
/// (dropping its sequences, which the batcher then cancels) as soon as the run is no longer
/// `running` in the database: cancelled, or marked interrupted by a restarted server.
pub async fn execute(
    sched: Scheduler,
    store: Store,
    run_id: i64,
    spec: VersionSpec,
    constraint: Option<Arc<Grammar>>,
    settings: EvalSettings,
    cases: Vec<TestCase>,
) {
    let result = execute_inner(&sched, &store, run_id, &spec, constraint.as_ref(), &settings, &cases).await;
    if let Err(e) = result {
        tracing::error!("eval {run_id}: {e}");
        let _ = store.finish_eval_run(run_id, EvalStatus::Failed, Some(&e.to_string())).await;
    }
}

async fn execute_inner(
    sched: &Scheduler,
    store: &Store,
    run_id: i64,
    spec: &VersionSpec,
    constraint: Option<&Arc<Grammar>>,
    settings: &EvalSettings,
    cases: &[TestCase],
) -> Result<(), EvalError> {
    if !store.start_eval_run(run_id).await? {
        return Ok(());
    }
    // The first row alone fills the prefix cache with the shared instruction and examples;
    // the rest then reuse it.
    let Some((first, rest)) = cases.split_first() else {
        store.finish_eval_run(run_id, EvalStatus::Completed, None).await?;
        return Ok(());
    };
    let first = eval_row(sched, spec, constraint, settings, first).await;
    if !store.record_eval_result(run_id, &first).await? {
        return Ok(());
    }
    let rows = futures_util::stream::iter(0..rest.len())
        .map(|i| eval_row(sched, spec, constraint, settings, &rest[i]))
        .buffer_unordered(window(sched));
    let mut rows = std::pin::pin!(rows);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            next = rows.next() => match next {
                Some(result) => {
                    if !store.record_eval_result(run_id, &result).await? {
                        return Ok(());
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if store.eval_status(run_id).await? != EvalStatus::Running {
                    return Ok(());
                }
            }
        }
    }
    store.finish_eval_run(run_id, EvalStatus::Completed, None).await?;
    Ok(())
}

/// Starts a run in the background; returns it as queued.
pub async fn start(sched: &Scheduler, store: &Store, plan: EvalPlan, actor: &str) -> Result<EvalRun, EvalError> {
    let cases = store.list_tests(&plan.template).await?;
    if cases.is_empty() {
        return Err(FieldError::new(
            "template",
            format!("template '{}' has no test rows; import a CSV or JSONL test set first", plan.template),
        )
        .into());
    }
    // Compiled before the run is created: a constraint the decoder refuses fails the
    // request, not every row.
    let constraint = compile_output(sched, &plan.spec).await?;
    let id = store.create_eval_run(&plan, cases.len(), actor).await?;
    let rows: Vec<api_types::evals::TestRow> = cases.iter().map(|c| c.row.clone()).collect();
    store.set_eval_tests_hash(id, &api_types::evals::test_set_hash(&rows)).await?;
    // Read back before the task starts, so the caller gets the run as created (`queued`),
    // not whatever state the task has already reached.
    let run = store.eval_run(id).await?;
    tokio::spawn(execute(sched.clone(), store.clone(), id, plan.spec, constraint, plan.settings, cases));
    Ok(run)
}

/// Checks the request's sampling overrides against their limits.
pub fn settings(
    sched: &Scheduler,
    spec: &VersionSpec,
    n: Option<usize>,
    temperature: Option<f32>,
    seed: Option<u64>,
    max_tokens: Option<usize>,
) -> Result<EvalSettings, FieldError> {
    let n = n.unwrap_or(1);
    if n == 0 || n > MAX_SAMPLES {
        return Err(FieldError::new("n", format!("must be between 1 and {MAX_SAMPLES}, got {n}")));
    }
    let temperature = temperature.unwrap_or(spec.parameters.temperature);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(FieldError::new("temperature", format!("must be between 0 and 2, got {temperature}")));
    }
    let max_tokens = max_tokens.unwrap_or(spec.parameters.max_tokens);
    if max_tokens == 0 || max_tokens > MAX_MAX_TOKENS {
        return Err(FieldError::new("max_tokens", format!("must be between 1 and {MAX_MAX_TOKENS}, got {max_tokens}")));
    }
    Ok(EvalSettings {
        n,
        temperature,
        seed: seed.unwrap_or(0),
        max_tokens,
        model: sched.model_name.clone(),
        tp: sched.tp,
    })
}
