//! Assertions: the checks of a row's output.

use std::collections::BTreeMap;

use serde_json::Value;

use super::MAX_LABELS;
use crate::templates::FieldError;

pub use api_types::evals::{Assertion, AssertionResult};

/// Validating and checking an [`Assertion`] (the type is shared with the studio; these
/// need the regex engine and the label scores).
pub trait AssertionCheck {
    /// `field` names the assertion (`rows[3].assertions[0]`); `expected` is the row's.
    fn validate(&self, field: &str, expected: Option<&str>) -> Result<(), FieldError>;

    /// Checks `output` (trimmed here). `likelihood` holds the label scores when this is a
    /// likelihood assertion.
    fn check(&self, output: &str, expected: Option<&str>, likelihood: Option<&LabelScores>) -> AssertionResult;
}

impl AssertionCheck for Assertion {
    fn validate(&self, field: &str, expected: Option<&str>) -> Result<(), FieldError> {
        let labels = |values: &Vec<String>, name: &str| {
            if values.is_empty() || values.len() > MAX_LABELS {
                return Err(FieldError::new(
                    format!("{field}.{name}"),
                    format!("needs 1 to {MAX_LABELS} labels, got {}", values.len()),
                ));
            }
            if let Some(i) = values.iter().position(|v| v.trim().is_empty()) {
                return Err(FieldError::new(format!("{field}.{name}[{i}]"), "a label must not be empty"));
            }
            Ok(())
        };
        match self {
            Assertion::Exact { value: None } if expected.is_none() => {
                Err(FieldError::new(field, "'exact' without a value compares with the row's expected, which is empty"))
            }
            Assertion::Regex { pattern } => regex::Regex::new(pattern)
                .map(|_| ())
                .map_err(|e| FieldError::new(format!("{field}.pattern"), format!("not a valid regex: {e}"))),
            Assertion::OneOf { values } => labels(values, "values"),
            Assertion::Likelihood { labels: l } => {
                labels(l, "labels")?;
                match expected {
                    None => Err(FieldError::new(field, "'likelihood' needs the row's expected label")),
                    Some(e) if !l.iter().any(|x| x == e) => Err(FieldError::new(
                        format!("{field}.labels"),
                        format!("the row's expected {e:?} is not one of the labels {l:?}"),
                    )),
                    Some(_) => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    fn check(&self, output: &str, expected: Option<&str>, likelihood: Option<&LabelScores>) -> AssertionResult {
        let out = output.trim();
        let (passed, detail) = match self {
            Assertion::Exact { value } => {
                let want = value.as_deref().or(expected).unwrap_or("");
                (out == want, format!("expected exactly {want:?}"))
            }
            Assertion::Contains { value } => (out.contains(value.as_str()), format!("must contain {value:?}")),
            Assertion::NotContains { value } => (!out.contains(value.as_str()), format!("must not contain {value:?}")),
            Assertion::Regex { pattern } => match regex::Regex::new(pattern) {
                Ok(re) => (re.is_match(out), format!("must match /{pattern}/")),
                Err(e) => (false, format!("invalid regex: {e}")),
            },
            Assertion::StartsWith { value } => (out.starts_with(value.as_str()), format!("must start with {value:?}")),
            Assertion::OneOf { values } => (values.iter().any(|v| v == out), format!("must be one of {values:?}")),
            Assertion::Json => match serde_json::from_str::<Value>(out) {
                Ok(_) => (true, "valid JSON".to_string()),
                Err(e) => (false, format!("not valid JSON: {e}")),
            },
            Assertion::MaxLength { chars } => {
                let n = out.chars().count();
                (n <= *chars, format!("{n} characters, at most {chars}"))
            }
            Assertion::Likelihood { .. } => match likelihood {
                Some(s) => {
                    let want = expected.unwrap_or("");
                    (s.best == want, format!("most likely label {:?}, expected {want:?}", s.best))
                }
                None => (false, "no label scores".to_string()),
            },
        };
        let (chosen, scores) = match (self, likelihood) {
            (Assertion::Likelihood { .. }, Some(s)) => (Some(s.best.clone()), Some(s.scores.clone())),
            _ => (None, None),
        };
        AssertionResult { kind: self.kind().to_string(), passed, detail, chosen, scores }
    }
}

/// Summed logprob of each label as the continuation, and the best one.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelScores {
    pub best: String,
    pub scores: BTreeMap<String, f64>,
}

impl LabelScores {
    /// `scores` in label order; ties go to the first label.
    pub fn new(labels: &[String], scores: &[f64]) -> Self {
        let mut best = 0;
        for (i, s) in scores.iter().enumerate() {
            if *s > scores[best] {
                best = i;
            }
        }
        Self { best: labels[best].clone(), scores: labels.iter().cloned().zip(scores.iter().copied()).collect() }
    }
}
