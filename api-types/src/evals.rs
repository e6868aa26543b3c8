//! Test sets, eval runs and their results, run-vs-run comparison and few-shot selection
//! (`/api/templates/{name}/tests`, `/api/evals/...`, `/api/templates/{name}/evals`,
//! `/api/templates/{name}/select-examples`; docs/evals-api.md).

use std::collections::BTreeMap;
use std::ops::Deref;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::template::VersionSpec;

// ---------------------------------------------------------------------- test sets

/// One check of a row's output, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Assertion {
    /// The trimmed output equals `value`, or the row's `expected` when there is no value.
    Exact {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
    },
    Contains {
        value: String,
    },
    NotContains {
        value: String,
    },
    Regex {
        pattern: String,
    },
    StartsWith {
        value: String,
    },
    /// The trimmed output is one of the labels (classification).
    OneOf {
        values: Vec<String>,
    },
    /// The output parses as JSON.
    Json,
    /// At most `chars` characters (Unicode scalar values) of trimmed output.
    MaxLength {
        chars: usize,
    },
    /// Label by likelihood: every label is scored as the forced continuation of the
    /// prompt (summed logprob, no sampling); passes when the best equals `expected`.
    Likelihood {
        labels: Vec<String>,
    },
}

impl Assertion {
    pub fn kind(&self) -> &'static str {
        match self {
            Assertion::Exact { .. } => "exact",
            Assertion::Contains { .. } => "contains",
            Assertion::NotContains { .. } => "not_contains",
            Assertion::Regex { .. } => "regex",
            Assertion::StartsWith { .. } => "starts_with",
            Assertion::OneOf { .. } => "one_of",
            Assertion::Json => "json",
            Assertion::MaxLength { .. } => "max_length",
            Assertion::Likelihood { .. } => "likelihood",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssertionResult {
    #[serde(rename = "type")]
    pub kind: String,
    pub passed: bool,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<BTreeMap<String, f64>>,
}

/// One row of a test set: variable values, optional expected output, assertions.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TestRow {
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub expected: Option<String>,
    #[serde(default)]
    pub assertions: Vec<Assertion>,
}

impl TestRow {
    /// The assertions that apply: the row's, or `exact` against `expected` when it has none.
    pub fn effective_assertions(&self) -> Vec<Assertion> {
        if self.assertions.is_empty() && self.expected.is_some() {
            vec![Assertion::Exact { value: None }]
        } else {
            self.assertions.clone()
        }
    }
}

/// A stored row: its id and position in the set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestCase {
    pub id: i64,
    pub index: i64,
    #[serde(flatten)]
    pub row: TestRow,
}

/// `GET /api/templates/{name}/tests`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestList {
    pub template: String,
    pub count: usize,
    pub rows: Vec<TestCase>,
}

/// `POST /api/templates/{name}/tests` with a JSON body (CSV and JSONL go as text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRows {
    pub rows: Vec<TestRow>,
}

/// What an import did: rows read, and the size of the test set after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestsImported {
    pub template: String,
    pub imported: usize,
    pub count: i64,
}

// ---------------------------------------------------------------------- eval runs

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalStatus {
    Queued,
    Running,
    Completed,
    Cancelled,
    Interrupted,
    Failed,
}

impl EvalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EvalStatus::Queued => "queued",
            EvalStatus::Running => "running",
            EvalStatus::Completed => "completed",
            EvalStatus::Cancelled => "cancelled",
            EvalStatus::Interrupted => "interrupted",
            EvalStatus::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Queued, Self::Running, Self::Completed, Self::Cancelled, Self::Interrupted, Self::Failed]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
    pub fn is_over(self) -> bool {
        !matches!(self, EvalStatus::Queued | EvalStatus::Running)
    }
}

/// An eval run as listed (`GET /api/templates/{name}/evals`, run comparisons): progress,
/// score and sampling settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    pub id: i64,
    pub template: String,
    /// None for a run of an unsaved draft.
    pub version: Option<i64>,
    pub status: EvalStatus,
    pub done: i64,
    pub total: i64,
    pub passed: i64,
    pub pass_rate: Option<f64>,
    pub n: usize,
    pub temperature: f32,
    pub seed: u64,
    pub model: String,
    pub tp: usize,
    /// Mean share of samples agreeing with the row's majority output.
    pub stability: Option<f64>,
    /// Rows whose outputs all met the version's output constraint; None when the version
    /// has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint_met: Option<i64>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The content hash of the test set the run scored ([`test_set_hash`]); None for runs
    /// recorded before runs kept it. Runs over different test sets are not compared.
    #[serde(default)]
    pub tests_hash: Option<String>,
}

/// A hash of a test set's rows, in order: two runs with the same hash scored the same rows.
pub fn test_set_hash(rows: &[TestRow]) -> String {
    use sha2::{Digest, Sha256};
    let canonical = serde_json::to_string(rows).expect("rows serialize");
    crate::template::hex(&Sha256::digest(canonical.as_bytes()))
}

/// An eval run and its progress: the summary's fields and the rest, side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRun {
    #[serde(flatten)]
    pub summary: EvalSummary,
    pub max_tokens: usize,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub error: Option<String>,
    pub created_by: String,
    pub spec: VersionSpec,
}

impl EvalRun {
    pub fn summary(&self) -> EvalSummary {
        self.summary.clone()
    }
}

/// A run reads as its summary (`run.status`, `run.pass_rate`).
impl Deref for EvalRun {
    type Target = EvalSummary;
    fn deref(&self) -> &EvalSummary {
        &self.summary
    }
}

/// One row's outcome in a run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RowResult {
    pub index: i64,
    pub test_id: Option<i64>,
    pub variables: BTreeMap<String, String>,
    pub expected: Option<String>,
    /// The majority output over the samples (the only one when n = 1).
    pub output: String,
    pub samples: Vec<String>,
    pub stability: f64,
    pub passed: bool,
    pub assertions: Vec<AssertionResult>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub latency_ms: i64,
    pub error: Option<String>,
    /// Whether every sample met the version's output constraint (labels: one of them;
    /// JSON: parses and fits the schema; regex: matches whole); None without a constraint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint_met: Option<bool>,
}

/// `POST /api/evals`. `N` is the number type of `n`: `usize` where it is read; a client
/// that forwards what a person typed may send the text instead, which the server refuses
/// naming the field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEval<N = usize> {
    pub template: String,
    /// A number, `latest` or a label (number or string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Value>,
    /// An unsaved draft instead of a saved version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<VersionSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<N>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
}

/// `GET /api/evals/{id}`: the run, and its row results unless `?results=false`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRunDetail {
    #[serde(flatten)]
    pub run: EvalRun,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<RowResult>>,
}

/// `GET /api/templates/{name}/evals`, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalList {
    pub template: String,
    pub evals: Vec<EvalSummary>,
}

/// `GET /api/evals/{a}/compare/{b}`: the rows (matched by variables and expected output)
/// that passed in one run and failed in the other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalComparison {
    pub a: EvalSummary,
    pub b: EvalSummary,
    /// Failed in `a`, passed in `b`.
    pub fixed: Vec<FlippedRow>,
    /// Passed in `a`, failed in `b`.
    pub broken: Vec<FlippedRow>,
    pub unchanged: usize,
    /// Rows of either run without a match in the other.
    pub unmatched: usize,
}

/// A row whose outcome differs between the two runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlippedRow {
    pub index: i64,
    pub variables: BTreeMap<String, String>,
    pub expected: Option<String>,
    pub a: RowOutcome,
    pub b: RowOutcome,
}

/// One run's side of a flipped row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowOutcome {
    pub index: i64,
    pub output: String,
    pub passed: bool,
}

impl From<&RowResult> for RowOutcome {
    fn from(r: &RowResult) -> Self {
        RowOutcome { index: r.index, output: r.output.clone(), passed: r.passed }
    }
}

// ---------------------------------------------------------------------- few-shot selection

/// `POST /api/templates/{name}/select-examples` (`N`, the number type of `k`, as in
/// [`CreateEval`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectRequest<N = usize> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<VersionSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<N>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pool: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_sets: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl<N> Default for SelectRequest<N> {
    fn default() -> Self {
        Self {
            version: None,
            spec: None,
            k: None,
            holdout: None,
            labels: None,
            max_pool: None,
            random_sets: None,
            seed: None,
        }
    }
}

/// An example that selection may pick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub id: usize,
    /// `example` (the version's own) or `test` (a test row with an expected output).
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_id: Option<i64>,
    pub input: String,
    pub output: String,
}

/// One candidate set and its score on the held-out rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tried {
    pub round: usize,
    /// Pool ids, in prompt order.
    pub examples: Vec<usize>,
    /// Share of held-out rows whose most likely label is the expected one.
    pub accuracy: f64,
    /// Mean summed logprob of the expected label.
    pub mean_logprob: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RandomBaseline {
    pub sets: Vec<Tried>,
    pub mean_accuracy: Option<f64>,
}

/// A test row the sets are scored on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldOut {
    pub index: i64,
    pub test_id: i64,
    pub expected: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectReport {
    pub k: usize,
    pub labels: Vec<String>,
    pub holdout: Vec<HeldOut>,
    pub pool: Vec<Candidate>,
    pub tried: Vec<Tried>,
    pub best: Tried,
    pub random: RandomBaseline,
    /// The version's own examples, scored the same way (null when it has none).
    pub current: Option<Tried>,
    /// The base spec with the best examples: a draft, not saved.
    pub spec: VersionSpec,
}

/// What `POST /api/templates/{name}/select-examples` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    pub template: String,
    #[serde(flatten)]
    pub report: SelectReport,
}

/// Most rows in one test set.
pub const MAX_TEST_ROWS: usize = 10_000;

/// How a run samples: recorded with it so it can be replayed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalSettings {
    pub n: usize,
    pub temperature: f32,
    pub seed: u64,
    pub max_tokens: usize,
    pub model: String,
    pub tp: usize,
}

/// What `POST /api/evals` asks for, resolved.
#[derive(Debug, Clone)]
pub struct EvalPlan {
    pub template: String,
    pub version: Option<i64>,
    pub spec: VersionSpec,
    pub settings: EvalSettings,
}
