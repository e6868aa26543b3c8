//! What an eval says about a label task: the confusion matrix (expected × predicted), each
//! label's probability in a row scored by likelihood, and latency over the rows.
//!
//! A column is a label task when its version's output is a choice of labels, or its test
//! rows check `likelihood` or `one_of`, or every row expects one of a few short labels that
//! repeat (an exact-match classifier). The prediction is the likelihood check's chosen
//! label when there is one, else the output itself.

use std::collections::BTreeMap;

use api_types::evals::{Assertion, RowResult, TestCase};
use api_types::template::OutputConstraint;

/// Most labels a confusion matrix shows (more is not a label task a table can show).
pub const MAX_LABELS: usize = 12;
/// Longest expected value read as a label when no check names the labels.
pub const MAX_LABEL_CHARS: usize = 24;

/// The labels of a column, if it is a label task: the choice constraint's, else those the
/// test rows' `likelihood` or `one_of` checks name, else the rows' expected values when
/// each row has one, each is short and some repeat; in first-seen order.
pub fn label_set(output: Option<&OutputConstraint>, rows: &[TestCase]) -> Option<Vec<String>> {
    let mut labels: Vec<String> = Vec::new();
    fn add(labels: &mut Vec<String>, l: &str) {
        let l = l.trim();
        if !l.is_empty() && !labels.iter().any(|x| x == l) {
            labels.push(l.to_string());
        }
    }
    if let Some(OutputConstraint::Choice { labels: choice }) = output {
        choice.iter().for_each(|l| add(&mut labels, l));
    } else {
        for r in rows {
            for a in &r.row.assertions {
                match a {
                    Assertion::Likelihood { labels: names } => names.iter().for_each(|l| add(&mut labels, l)),
                    Assertion::OneOf { values } => values.iter().for_each(|l| add(&mut labels, l)),
                    _ => {}
                }
            }
        }
        if labels.is_empty() {
            let expected: Vec<&str> = rows.iter().filter_map(|r| r.row.expected.as_deref()).collect();
            let short = expected.iter().all(|e| !e.trim().is_empty() && e.trim().chars().count() <= MAX_LABEL_CHARS);
            if expected.len() == rows.len() && short {
                expected.iter().for_each(|e| add(&mut labels, e));
                if labels.len() == rows.len() {
                    // No label repeats: free-form answers, not classes.
                    labels.clear();
                }
            }
        }
    }
    (labels.len() >= 2 && labels.len() <= MAX_LABELS).then_some(labels)
}

/// The label a row's answer stands for: the likelihood check's choice, else the output.
pub fn predicted(r: &RowResult) -> String {
    r.assertions.iter().find_map(|a| a.chosen.clone()).unwrap_or_else(|| r.output.trim().to_string())
}

/// Rows counted by expected label (rows of the table) and predicted label (columns).
#[derive(Debug, Clone, PartialEq)]
pub struct Confusion {
    pub labels: Vec<String>,
    /// `counts[e][p]`: rows expecting `labels[e]` answered `labels[p]`.
    pub counts: Vec<Vec<usize>>,
    /// Rows expecting `labels[e]` whose answer is none of the labels.
    pub other: Vec<usize>,
    /// Rows whose expected value is none of the labels (left out of the table).
    pub unlabelled: usize,
}

impl Confusion {
    pub fn new<'a>(labels: &[String], results: impl IntoIterator<Item = &'a RowResult>) -> Self {
        let n = labels.len();
        let mut c =
            Confusion { labels: labels.to_vec(), counts: vec![vec![0; n]; n], other: vec![0; n], unlabelled: 0 };
        let index = |s: &str| labels.iter().position(|l| l == s.trim());
        for r in results {
            let Some(e) = r.expected.as_deref().and_then(index) else {
                c.unlabelled += 1;
                continue;
            };
            match index(&predicted(r)) {
                Some(p) => c.counts[e][p] += 1,
                None => c.other[e] += 1,
            }
        }
        c
    }

    /// Rows in the table.
    pub fn total(&self) -> usize {
        self.counts.iter().flatten().sum::<usize>() + self.other.iter().sum::<usize>()
    }

    /// Whether any answer fell outside the labels (the table then shows an "other" column).
    pub fn has_other(&self) -> bool {
        self.other.iter().any(|&n| n > 0)
    }
}

/// Each label's probability among the labels (a softmax of their log-likelihoods), most
/// likely first.
pub fn label_probabilities(scores: &BTreeMap<String, f64>) -> Vec<(String, f64)> {
    let max = scores.values().copied().filter(|s| s.is_finite()).fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return scores.keys().map(|k| (k.clone(), 0.0)).collect();
    }
    let exp: Vec<(String, f64)> = scores.iter().map(|(k, s)| (k.clone(), (s - max).exp())).collect();
    let sum: f64 = exp.iter().map(|(_, e)| e).sum();
    let mut out: Vec<(String, f64)> = exp.into_iter().map(|(k, e)| (k, e / sum)).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

/// The median and 95th percentile of the rows' latency, in ms (nearest rank).
pub fn latency_percentiles<'a>(results: impl IntoIterator<Item = &'a RowResult>) -> Option<(i64, i64)> {
    let mut ms: Vec<i64> = results.into_iter().filter(|r| r.error.is_none()).map(|r| r.latency_ms).collect();
    if ms.is_empty() {
        return None;
    }
    ms.sort_unstable();
    let rank = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    Some((rank(0.5), rank(0.95)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use api_types::evals::{AssertionResult, TestRow};

    fn row(expected: &str, output: &str, chosen: Option<&str>, latency_ms: i64) -> RowResult {
        RowResult {
            index: 0,
            test_id: Some(1),
            variables: BTreeMap::new(),
            expected: Some(expected.into()),
            output: output.into(),
            samples: vec![],
            stability: 1.0,
            passed: false,
            assertions: chosen
                .map(|c| AssertionResult {
                    kind: "likelihood".into(),
                    passed: c == expected,
                    detail: String::new(),
                    chosen: Some(c.into()),
                    scores: None,
                })
                .into_iter()
                .collect(),
            prompt_tokens: 10,
            completion_tokens: 2,
            cached_tokens: 0,
            latency_ms,
            error: None,
            constraint_met: None,
        }
    }

    fn case(assertions: Vec<Assertion>) -> TestCase {
        TestCase { id: 1, index: 0, row: TestRow { variables: BTreeMap::new(), expected: None, assertions } }
    }

    #[test]
    fn labels_come_from_the_choice_else_the_checks() {
        let choice = OutputConstraint::Choice { labels: vec!["긍정".into(), "부정".into()] };
        assert_eq!(label_set(Some(&choice), &[]), Some(vec!["긍정".into(), "부정".into()]));
        let rows = [
            case(vec![Assertion::Likelihood { labels: vec!["pos".into(), "neg".into()] }]),
            case(vec![Assertion::OneOf { values: vec!["neg".into(), "mixed".into()] }]),
        ];
        assert_eq!(label_set(None, &rows), Some(vec!["pos".into(), "neg".into(), "mixed".into()]));
        assert_eq!(label_set(None, &[case(vec![Assertion::Json])]), None);
        let expecting = |e: &str| TestCase {
            id: 1,
            index: 0,
            row: TestRow { variables: BTreeMap::new(), expected: Some(e.into()), assertions: vec![] },
        };
        let classes = [expecting("긍정"), expecting("부정"), expecting("긍정 ")];
        assert_eq!(label_set(None, &classes), Some(vec!["긍정".into(), "부정".into()]));
        let free = [expecting("Paris"), expecting("Rome")];
        assert_eq!(label_set(None, &free), None, "no label repeats");
        let long = [expecting("a long answer that is not a label"), expecting("a long answer that is not a label")];
        assert_eq!(label_set(None, &long), None);
        let many: Vec<String> = (0..=MAX_LABELS).map(|i| format!("l{i}")).collect();
        assert_eq!(label_set(Some(&OutputConstraint::Choice { labels: many }), &[]), None);
    }

    #[test]
    fn confusion_counts_expected_against_predicted() {
        let labels = vec!["긍정".to_string(), "부정".to_string()];
        let rows = [
            row("긍정", "긍정", None, 100),
            row("긍정", " 부정\n", None, 200),
            row("부정", "whatever", Some("부정"), 300),
            row("부정", "모름", None, 400),
            row("중립", "긍정", None, 500),
        ];
        let c = Confusion::new(&labels, &rows);
        assert_eq!(c.counts, vec![vec![1, 1], vec![0, 1]]);
        assert_eq!(c.other, vec![0, 1]);
        assert!(c.has_other());
        assert_eq!(c.unlabelled, 1);
        assert_eq!(c.total(), 4);
    }

    #[test]
    fn label_probabilities_are_a_softmax_over_the_labels() {
        let scores: BTreeMap<String, f64> = [("a".to_string(), (0.2f64).ln()), ("b".to_string(), (0.6f64).ln())].into();
        let p = label_probabilities(&scores);
        assert_eq!(p[0].0, "b");
        assert!((p[0].1 - 0.75).abs() < 1e-9 && (p[1].1 - 0.25).abs() < 1e-9);
        let none: BTreeMap<String, f64> = [("a".to_string(), f64::NEG_INFINITY)].into();
        assert_eq!(label_probabilities(&none), vec![("a".to_string(), 0.0)]);
    }

    #[test]
    fn latency_percentiles_by_nearest_rank() {
        let rows: Vec<RowResult> = (1..=20).map(|i| row("a", "a", None, i * 10)).collect();
        assert_eq!(latency_percentiles(&rows), Some((100, 190)));
        assert_eq!(latency_percentiles(&rows[..1]), Some((10, 10)));
        assert_eq!(latency_percentiles(&[]), None);
    }
}
