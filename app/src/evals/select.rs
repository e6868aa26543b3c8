//! Automatic few-shot selection: greedy forward selection of k examples (and their order)
//! from the template's examples and test rows, scored on held-out test rows by likelihood
//! labelling, through the scheduler at batch priority and the prefix cache.

use std::collections::BTreeMap;

use crate::evals::{score_labels, EvalError, TestCase, MAX_LABELS};
use crate::serving::Scheduler;
use crate::templates::{Example, FieldError, TokenIds, VersionSpec};
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

pub const MAX_K: usize = 8;
pub const MAX_POOL: usize = 64;
pub const MAX_HOLDOUT_ROWS: usize = 64;
pub const MAX_RANDOM_SETS: usize = 10;
/// Label scorings one selection may ask for (k × pool × held-out rows × labels).
pub const MAX_SCORINGS: usize = 40_000;

pub use api_types::evals::{Candidate, HeldOut, RandomBaseline, SelectReport, SelectRequest, Tried};

/// A set scores better on accuracy, then on the mean likelihood of the expected labels.
fn better_than(a: &Tried, b: &Tried) -> bool {
    (a.accuracy, a.mean_logprob) > (b.accuracy, b.mean_logprob)
}

struct Plan {
    k: usize,
    labels: Vec<String>,
    holdout: Vec<(BTreeMap<String, String>, String, HeldOut)>,
    pool: Vec<Candidate>,
    random_sets: usize,
    seed: u64,
}

fn plan(spec: &VersionSpec, tests: &[TestCase], r: &SelectRequest) -> Result<Plan, FieldError> {
    let k = r.k.unwrap_or(4);
    if k == 0 || k > MAX_K {
        return Err(FieldError::new("k", format!("must be between 1 and {MAX_K}, got {k}")));
    }
    let share = r.holdout.unwrap_or(0.5);
    if !(share > 0.0 && share <= 1.0) {
        return Err(FieldError::new("holdout", format!("a share in (0, 1], got {share}")));
    }
    let max_pool = r.max_pool.unwrap_or(24);
    if max_pool == 0 || max_pool > MAX_POOL {
        return Err(FieldError::new("max_pool", format!("must be between 1 and {MAX_POOL}, got {max_pool}")));
    }
    let random_sets = r.random_sets.unwrap_or(3);
    if random_sets > MAX_RANDOM_SETS {
        return Err(FieldError::new("random_sets", format!("at most {MAX_RANDOM_SETS}, got {random_sets}")));
    }
    let seed = r.seed.unwrap_or(0);
    let mut labelled: Vec<&TestCase> = tests.iter().filter(|t| t.row.expected.is_some()).collect();
    if labelled.is_empty() {
        return Err(FieldError::new("tests", "selection needs test rows with an expected output; none has one"));
    }
    labelled.shuffle(&mut StdRng::seed_from_u64(seed));
    let n_hold = ((labelled.len() as f64 * share).round() as usize).clamp(1, MAX_HOLDOUT_ROWS.min(labelled.len()));
    let (held, rest) = labelled.split_at(n_hold);
    let mut pool: Vec<Candidate> = spec
        .examples
        .iter()
        .map(|e| (None, e.input.clone(), e.output.clone()))
        .chain(
            rest.iter()
                .map(|t| (Some(t.id), spec.input_text(&t.row.variables), t.row.expected.clone().unwrap_or_default())),
        )
        .take(max_pool)
        .enumerate()
        .map(|(id, (test_id, input, output))| Candidate {
            id,
            source: if test_id.is_some() { "test" } else { "example" }.to_string(),
            test_id,
            input,
            output,
        })
        .collect();
    pool.retain(|c| !c.input.trim().is_empty() && !c.output.trim().is_empty());
    for (i, c) in pool.iter_mut().enumerate() {
        c.id = i;
    }
    if pool.len() < k {
        return Err(FieldError::new(
            "k",
            format!("the pool has {} candidates (examples + non-held-out test rows), fewer than k = {k}", pool.len()),
        ));
    }
    let labels = match &r.labels {
        Some(l) => l.clone(),
        None => {
            let mut l: Vec<String> = Vec::new();
            for o in held.iter().filter_map(|t| t.row.expected.clone()).chain(pool.iter().map(|c| c.output.clone())) {
                if !l.contains(&o) {
                    l.push(o);
                }
            }
            l
        }
    };
    if labels.len() < 2 || labels.len() > MAX_LABELS {
        return Err(FieldError::new(
            "labels",
            format!(
                "likelihood selection needs a classification template: 2 to {MAX_LABELS} labels, got {}",
                labels.len()
            ),
        ));
    }
    let holdout: Vec<_> = held
        .iter()
        .map(|t| {
            let e = t.row.expected.clone().unwrap_or_default();
            (t.row.variables.clone(), e.clone(), HeldOut { index: t.index, test_id: t.id, expected: e })
        })
        .collect();
    if let Some((_, e, h)) = holdout.iter().find(|(_, e, _)| !labels.contains(e)) {
        return Err(FieldError::new(
            "labels",
            format!("held-out row {} expects {e:?}, not one of {labels:?}", h.index),
        ));
    }
    let scorings = k * pool.len() * holdout.len() * labels.len();
    if scorings > MAX_SCORINGS {
        return Err(FieldError::new(
            "k",
            format!(
                "k × pool × held-out rows × labels = {scorings} label scorings, at most {MAX_SCORINGS}; lower k, max_pool or holdout"
            ),
        ));
    }
    Ok(Plan { k, labels, holdout, pool, random_sets, seed })
}

fn with_examples(base: &VersionSpec, pool: &[Candidate], set: &[usize]) -> VersionSpec {
    let mut spec = base.clone();
    spec.examples =
        set.iter().map(|&i| Example { input: pool[i].input.clone(), output: pool[i].output.clone() }).collect();
    spec
}

/// (correct, logprob of the expected label) for one held-out row under `spec`.
async fn score_row(
    sched: &Scheduler,
    spec: &VersionSpec,
    vars: &BTreeMap<String, String>,
    expected: &str,
    labels: &[String],
) -> Result<(bool, f64), EvalError> {
    // Rendering (a chat template, for chat versions) and tokenizing are CPU work: on the
    // blocking pool, not a tokio worker.
    let (tok, model, owned, vars) = (sched.tokenizer.clone(), sched.model_name.clone(), spec.clone(), vars.clone());
    let ids = tokio::task::spawn_blocking(move || -> Result<Vec<u32>, crate::serving::ServeError> {
        let rendered = crate::serving::chat::render_version(&tok, &model, &owned, &vars)?;
        Ok(rendered.token_ids(&tok).map_err(crate::serving::ServeError::internal)?.0)
    })
    .await
    .map_err(crate::serving::ServeError::internal)??;
    let scores = score_labels(sched, spec, &ids, labels).await?;
    let best = crate::evals::LabelScores::new(labels, &scores).best;
    let i = labels.iter().position(|l| l == expected).expect("held-out labels are checked");
    Ok((best == expected, scores[i]))
}

/// Scores one example set: the first row alone (it fills the prefix cache with the
/// examples), then the rest together.
async fn score_set(
    sched: &Scheduler,
    base: &VersionSpec,
    p: &Plan,
    set: &[usize],
    round: usize,
) -> Result<Tried, EvalError> {
    let spec = with_examples(base, &p.pool, set);
    let (first, rest) = p.holdout.split_first().expect("at least one held-out row");
    let head = score_row(sched, &spec, &first.0, &first.1, &p.labels).await?;
    let spec = &spec;
    let tail: Vec<Result<(bool, f64), EvalError>> = futures_util::stream::iter(0..rest.len())
        .map(|i| score_row(sched, spec, &rest[i].0, &rest[i].1, &p.labels))
        .buffer_unordered(8)
        .collect()
        .await;
    let mut results = vec![head];
    for r in tail {
        results.push(r?);
    }
    let n = results.len() as f64;
    Ok(Tried {
        round,
        examples: set.to_vec(),
        accuracy: results.iter().filter(|r| r.0).count() as f64 / n,
        mean_logprob: results.iter().map(|r| r.1).sum::<f64>() / n,
    })
}

async fn score_sets(
    sched: &Scheduler,
    base: &VersionSpec,
    p: &Plan,
    sets: Vec<Vec<usize>>,
    round: usize,
) -> Result<Vec<Tried>, EvalError> {
    let scored: Vec<Result<Tried, EvalError>> = futures_util::stream::iter(sets)
        .map(|s| async move { score_set(sched, base, p, &s, round).await })
        .buffered(4)
        .collect()
        .await;
    scored.into_iter().collect()
}

/// Greedy forward selection: each round appends the candidate that scores best.
pub async fn select(
    sched: &Scheduler,
    base: &VersionSpec,
    tests: &[TestCase],
    r: &SelectRequest,
) -> Result<SelectReport, EvalError> {
    let p = plan(base, tests, r)?;
    let mut chosen: Vec<usize> = Vec::new();
    let mut tried = Vec::new();
    let mut best: Option<Tried> = None;
    for round in 1..=p.k {
        let sets: Vec<Vec<usize>> = (0..p.pool.len())
            .filter(|c| !chosen.contains(c))
            .map(|c| chosen.iter().copied().chain([c]).collect())
            .collect();
        let scored = score_sets(sched, base, &p, sets, round).await?;
        let mut round_best = scored[0].clone();
        for t in &scored[1..] {
            if better_than(t, &round_best) {
                round_best = t.clone();
            }
        }
        chosen = round_best.examples.clone();
        best = Some(round_best);
        tried.extend(scored);
    }
    let best = best.expect("k >= 1");
    let mut rng = StdRng::seed_from_u64(p.seed.wrapping_add(1));
    let random_sets: Vec<Vec<usize>> =
        (0..p.random_sets).map(|_| rand::seq::index::sample(&mut rng, p.pool.len(), p.k).into_vec()).collect();
    let random = score_sets(sched, base, &p, random_sets, 0).await?;
    let mean_accuracy =
        (!random.is_empty()).then(|| random.iter().map(|t| t.accuracy).sum::<f64>() / random.len() as f64);
    let own: Vec<usize> = p.pool.iter().filter(|c| c.source == "example").map(|c| c.id).collect();
    let current = if own.is_empty() { None } else { Some(score_set(sched, base, &p, &own, 0).await?) };
    let spec = with_examples(base, &p.pool, &best.examples);
    Ok(SelectReport {
        k: p.k,
        labels: p.labels.clone(),
        holdout: p.holdout.iter().map(|h| h.2.clone()).collect(),
        pool: p.pool.clone(),
        tried,
        best,
        random: RandomBaseline { sets: random, mean_accuracy },
        current,
        spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evals::TestRow;

    fn case(id: i64, review: &str, expected: Option<&str>) -> TestCase {
        TestCase {
            id,
            index: id,
            row: TestRow {
                variables: [("review".to_string(), review.to_string())].into(),
                expected: expected.map(str::to_string),
                assertions: vec![],
            },
        }
    }

    #[test]
    fn plan_splits_holdout_and_pool_and_checks_limits() {
        let mut spec = VersionSpec { input_pattern: "Review: {{review}}".into(), ..Default::default() };
        spec.examples.push(Example { input: "Review: great".into(), output: "pos".into() });
        let tests: Vec<TestCase> = (0..10)
            .map(|i| case(i, &format!("r{i}"), Some(if i % 2 == 0 { "pos" } else { "neg" })))
            .chain([case(99, "unlabelled", None)])
            .collect();
        let p = plan(&spec, &tests, &SelectRequest { k: Some(2), ..Default::default() }).unwrap();
        assert_eq!(p.holdout.len(), 5);
        assert_eq!(p.pool.len(), 1 + 5, "own example + non-held-out labelled rows");
        assert_eq!(p.pool[0].source, "example");
        assert!(p.pool[1..].iter().all(|c| c.source == "test" && c.input.starts_with("Review: r")));
        let held: Vec<i64> = p.holdout.iter().map(|h| h.2.test_id).collect();
        assert!(p.pool.iter().all(|c| c.test_id.is_none_or(|t| !held.contains(&t))), "held-out rows never in the pool");
        assert_eq!(p.labels.len(), 2);
        let e = plan(&spec, &tests, &SelectRequest { k: Some(9), ..Default::default() }).err().unwrap();
        assert_eq!(e.field, "k");
        let e = plan(&spec, &tests, &SelectRequest { k: Some(7), ..Default::default() }).err().unwrap();
        assert!(e.message.contains("fewer than k"), "{e}");
        let e = plan(&spec, &tests, &SelectRequest { holdout: Some(0.0), ..Default::default() }).err().unwrap();
        assert_eq!(e.field, "holdout");
    }
}
