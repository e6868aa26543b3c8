//! Evaluate and tune: a template's test set (CSV / JSONL import and export), assertions,
//! eval runs over the scheduler at batch priority, likelihood labelling, the production
//! eval gate. Few-shot selection is in [`crate::select`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use inference::{FinishReason, GenerateRequest, SamplingParams};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::scheduler::{Priority, Scheduler, SeqEvent};
use crate::store::{Store, StoreError};
use crate::template::{FieldError, VersionSpec, MAX_MAX_TOKENS, MAX_VARIABLE_VALUE_CHARS};

pub const MAX_TEST_ROWS: usize = 10_000;
pub const MAX_ASSERTIONS: usize = 16;
pub const MAX_LABELS: usize = 32;
pub const MAX_SAMPLES: usize = 16;
/// Reserved test-set columns; every other column is a template variable.
pub const EXPECTED: &str = "expected";
pub const ASSERTIONS: &str = "assertions";

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A malformed file, request field or test row: 422 naming it.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The eval gate refused to move `production`: 409 with both scores.
    #[error("{message}")]
    Gate { message: String, candidate: Value, production: Value },
    /// The scheduler refused (queue full, batcher gone) or the model failed.
    #[error(transparent)]
    Model(#[from] ApiError),
}

// ---------------------------------------------------------------------- assertions

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

    /// `field` names the assertion (`rows[3].assertions[0]`); `expected` is the row's.
    pub fn validate(&self, field: &str, expected: Option<&str>) -> Result<(), FieldError> {
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

    /// Checks `output` (trimmed here). `likelihood` holds the label scores when this is a
    /// likelihood assertion.
    pub fn check(&self, output: &str, expected: Option<&str>, likelihood: Option<&LabelScores>) -> AssertionResult {
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

// ---------------------------------------------------------------------- test sets

/// One row of a test set: variable values, optional expected output, assertions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
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

    /// `row` is 1-based, as error messages count.
    pub fn validate(&self, row: usize) -> Result<(), FieldError> {
        for (k, v) in &self.variables {
            if k.trim().is_empty() {
                return Err(FieldError::new(format!("rows[{row}]"), format!("row {row}: a column name is empty")));
            }
            let n = v.chars().count();
            if n > MAX_VARIABLE_VALUE_CHARS {
                return Err(FieldError::new(
                    format!("rows[{row}].{k}"),
                    format!("row {row}, column '{k}': at most {MAX_VARIABLE_VALUE_CHARS} characters, got {n}"),
                ));
            }
        }
        if self.assertions.len() > MAX_ASSERTIONS {
            return Err(FieldError::new(
                format!("rows[{row}].{ASSERTIONS}"),
                format!(
                    "row {row}, column '{ASSERTIONS}': at most {MAX_ASSERTIONS} assertions, got {}",
                    self.assertions.len()
                ),
            ));
        }
        for (i, a) in self.assertions.iter().enumerate() {
            a.validate(&format!("rows[{row}].{ASSERTIONS}[{i}]"), self.expected.as_deref()).map_err(|e| {
                FieldError::new(e.field, format!("row {row}, column '{ASSERTIONS}', assertion {i}: {}", e.message))
            })?;
        }
        Ok(())
    }
}

/// A stored row: its id and position in the set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestCase {
    pub id: i64,
    pub index: i64,
    #[serde(flatten)]
    pub row: TestRow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    Jsonl,
}

impl FileFormat {
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        match s.to_ascii_lowercase().as_str() {
            "csv" => Ok(FileFormat::Csv),
            "jsonl" | "ndjson" => Ok(FileFormat::Jsonl),
            other => Err(FieldError::new("format", format!("must be 'csv' or 'jsonl', got {other:?}"))),
        }
    }
    pub fn content_type(self) -> &'static str {
        match self {
            FileFormat::Csv => "text/csv; charset=utf-8",
            FileFormat::Jsonl => "application/x-ndjson",
        }
    }
}

/// The body as UTF-8 (a leading BOM dropped), or an error naming the line.
pub fn utf8(bytes: &[u8]) -> Result<&str, FieldError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
        FieldError::new("file", format!("line {line}: not valid UTF-8 (byte {})", e.valid_up_to()))
    })?;
    Ok(text.strip_prefix('\u{FEFF}').unwrap_or(text))
}

pub fn parse(format: FileFormat, text: &str) -> Result<Vec<TestRow>, FieldError> {
    let rows = match format {
        FileFormat::Csv => parse_csv(text)?,
        FileFormat::Jsonl => parse_jsonl(text)?,
    };
    if rows.is_empty() {
        return Err(FieldError::new("file", "no rows: the file holds no test rows"));
    }
    if rows.len() > MAX_TEST_ROWS {
        return Err(FieldError::new("file", format!("at most {MAX_TEST_ROWS} rows, got {}", rows.len())));
    }
    Ok(rows)
}

fn row_err(row: usize, line: u64, column: &str, message: impl std::fmt::Display) -> FieldError {
    FieldError::new(format!("rows[{row}].{column}"), format!("row {row} (line {line}), column '{column}': {message}"))
}

/// CSV with a header: variable columns plus the reserved `expected` and `assertions`.
pub fn parse_csv(text: &str) -> Result<Vec<TestRow>, FieldError> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| FieldError::new("header", format!("line 1: unreadable header: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    for (i, h) in headers.iter().enumerate() {
        if h.trim().is_empty() {
            return Err(FieldError::new("header", format!("line 1, column {}: the column name is empty", i + 1)));
        }
        if headers[..i].contains(h) {
            return Err(FieldError::new("header", format!("line 1, column {}: '{h}' appears twice", i + 1)));
        }
    }
    if !headers.iter().any(|h| h != EXPECTED && h != ASSERTIONS) {
        return Err(FieldError::new("header", "line 1: needs at least one variable column"));
    }
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let row = i + 1;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(row as u64 + 1);
                return Err(match e.kind() {
                    csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                        let (len, expected_len) = (*len as usize, *expected_len as usize);
                        let column = headers.get(len.min(expected_len)).cloned().unwrap_or_else(|| format!("{}", len));
                        row_err(row, line, &column, format!("has {len} fields but the header has {expected_len}"))
                    }
                    _ => FieldError::new(format!("rows[{row}]"), format!("row {row} (line {line}): {e}")),
                });
            }
        };
        let line = record.position().map(|p| p.line()).unwrap_or(row as u64 + 1);
        let mut out = TestRow::default();
        for (h, cell) in headers.iter().zip(record.iter()) {
            match h.as_str() {
                EXPECTED => out.expected = (!cell.is_empty()).then(|| cell.to_string()),
                ASSERTIONS if cell.trim().is_empty() => {}
                ASSERTIONS => {
                    out.assertions = serde_json::from_str(cell)
                        .map_err(|e| row_err(row, line, ASSERTIONS, format!("not a JSON array of assertions: {e}")))?
                }
                name => {
                    out.variables.insert(name.to_string(), cell.to_string());
                }
            }
        }
        out.validate(row).map_err(|e| {
            FieldError::new(e.field, e.message.replacen(&format!("row {row}"), &format!("row {row} (line {line})"), 1))
        })?;
        rows.push(out);
    }
    Ok(rows)
}

/// One flat JSON object per line: variable keys plus `expected` and `assertions`.
pub fn parse_jsonl(text: &str) -> Result<Vec<TestRow>, FieldError> {
    let mut rows = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let line = i as u64 + 1;
        if l.trim().is_empty() {
            continue;
        }
        let row = rows.len() + 1;
        let obj: serde_json::Map<String, Value> = serde_json::from_str(l).map_err(|e| {
            FieldError::new(
                format!("rows[{row}]"),
                format!("row {row} (line {line}), column {}: not a JSON object: {e}", e.column()),
            )
        })?;
        let mut out = TestRow::default();
        for (k, v) in obj {
            match k.as_str() {
                EXPECTED => match v {
                    Value::Null => {}
                    Value::String(s) => out.expected = (!s.is_empty()).then_some(s),
                    other => {
                        return Err(row_err(row, line, EXPECTED, format!("must be a string or null, got {other}")))
                    }
                },
                ASSERTIONS => {
                    out.assertions = serde_json::from_value(v)
                        .map_err(|e| row_err(row, line, ASSERTIONS, format!("not a JSON array of assertions: {e}")))?
                }
                _ => match v {
                    Value::String(s) => {
                        out.variables.insert(k, s);
                    }
                    other => return Err(row_err(row, line, &k, format!("a variable must be a string, got {other}"))),
                },
            }
        }
        if out.variables.is_empty() {
            return Err(FieldError::new(format!("rows[{row}]"), format!("row {row} (line {line}): no variables")));
        }
        out.validate(row).map_err(|e| {
            FieldError::new(e.field, e.message.replacen(&format!("row {row}"), &format!("row {row} (line {line})"), 1))
        })?;
        rows.push(out);
    }
    Ok(rows)
}

/// Writes rows in `format`: CSV columns are the variables sorted by name, then `expected`
/// and `assertions` (compact JSON, empty when none).
pub fn export(format: FileFormat, rows: &[TestRow]) -> String {
    match format {
        FileFormat::Csv => {
            let mut names: Vec<&String> = rows.iter().flat_map(|r| r.variables.keys()).collect();
            names.sort();
            names.dedup();
            let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
            let mut header: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
            header.extend([EXPECTED, ASSERTIONS]);
            w.write_record(&header).expect("write to memory");
            for r in rows {
                let mut rec: Vec<String> =
                    names.iter().map(|n| r.variables.get(*n).cloned().unwrap_or_default()).collect();
                rec.push(r.expected.clone().unwrap_or_default());
                rec.push(if r.assertions.is_empty() {
                    String::new()
                } else {
                    serde_json::to_string(&r.assertions).expect("assertions serialize")
                });
                w.write_record(&rec).expect("write to memory");
            }
            String::from_utf8(w.into_inner().expect("flush to memory")).expect("UTF-8 in, UTF-8 out")
        }
        FileFormat::Jsonl => {
            let mut out = String::new();
            for r in rows {
                let mut obj: serde_json::Map<String, Value> =
                    r.variables.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
                if let Some(e) = &r.expected {
                    obj.insert(EXPECTED.into(), Value::String(e.clone()));
                }
                if !r.assertions.is_empty() {
                    obj.insert(ASSERTIONS.into(), serde_json::to_value(&r.assertions).expect("assertions serialize"));
                }
                out.push_str(&Value::Object(obj).to_string());
                out.push('\n');
            }
            out
        }
    }
}

// ---------------------------------------------------------------------- runs

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

/// An eval run and its progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalRun {
    pub id: i64,
    pub template: String,
    pub version: Option<i64>,
    pub status: EvalStatus,
    pub done: i64,
    pub total: i64,
    pub passed: i64,
    pub pass_rate: Option<f64>,
    pub n: usize,
    pub temperature: f32,
    pub seed: u64,
    pub max_tokens: usize,
    pub model: String,
    pub tp: usize,
    /// Mean share of samples agreeing with the row's majority output.
    pub stability: Option<f64>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub error: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub spec: VersionSpec,
}

impl EvalRun {
    pub fn summary(&self) -> Value {
        json!({
            "id": self.id, "template": self.template, "version": self.version, "status": self.status,
            "done": self.done, "total": self.total, "passed": self.passed, "pass_rate": self.pass_rate,
            "n": self.n, "temperature": self.temperature, "seed": self.seed, "model": self.model, "tp": self.tp,
            "stability": self.stability, "created_at": self.created_at, "started_at": self.started_at,
            "finished_at": self.finished_at,
        })
    }
}

/// One row's outcome in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
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
}

/// What `POST /api/evals` asks for, resolved.
#[derive(Debug, Clone)]
pub struct EvalPlan {
    pub template: String,
    pub version: Option<i64>,
    pub spec: VersionSpec,
    pub settings: EvalSettings,
}

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
    let p = &spec.format.output_prefix;
    format!("{}{label}", &p[p.trim_end().len()..])
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
pub async fn run_one(sched: &Scheduler, req: GenerateRequest) -> Result<Collected, ApiError> {
    let mut rx = loop {
        match sched.submit(req.clone(), Priority::Batch, None) {
            Ok(rx) => break rx,
            Err(e) if e.code == Some("queue_full") => tokio::time::sleep(Duration::from_millis(20)).await,
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
                    return Err(ApiError::internal("the sequence was cancelled"));
                }
                out.text.push_str(&text);
                out.prompt_tokens = prompt_tokens;
                out.cached_tokens = cached_tokens;
                out.generated_tokens = generated_tokens;
                return Ok(out);
            }
            SeqEvent::Failed(e) => return Err(e),
        }
    }
    Err(ApiError::internal("the batcher stopped"))
}

/// Scores each label as the continuation of `prompt` (summed logprob), concurrently.
pub async fn score_labels(
    sched: &Scheduler,
    spec: &VersionSpec,
    prompt: &[u32],
    labels: &[String],
) -> Result<Vec<f64>, ApiError> {
    let mut reqs = Vec::with_capacity(labels.len());
    for l in labels {
        let forced =
            sched.tokenizer.encode(&continuation(spec, l), false).map_err(|e| ApiError::internal(e.to_string()))?;
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

/// Renders, generates `n` samples (and scores likelihood labels), checks the assertions.
pub async fn eval_row(sched: &Scheduler, spec: &VersionSpec, s: &EvalSettings, case: &TestCase) -> RowResult {
    let started = Instant::now();
    let row = &case.row;
    let mut out = RowResult {
        index: case.index,
        test_id: Some(case.id),
        variables: row.variables.clone(),
        expected: row.expected.clone(),
        ..Default::default()
    };
    let prompt = match spec.render(&row.variables) {
        Ok(r) => match r.token_ids(&sched.tokenizer) {
            Ok((ids, _)) => ids,
            Err(e) => {
                out.error = Some(e.to_string());
                return out;
            }
        },
        Err(e) => {
            out.error = Some(e.to_string());
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
                out.error = Some(e.message);
                out.latency_ms = started.elapsed().as_millis() as i64;
                return out;
            }
        }
    }
    let (output, stability) = majority(&out.samples);
    out.output = output;
    out.stability = stability;
    for (a, sc) in assertions.iter().zip(scores) {
        match sc {
            Ok(sc) => out.assertions.push(a.check(&out.output, row.expected.as_deref(), sc.as_ref())),
            Err(e) => {
                out.error = Some(e.message);
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
    settings: EvalSettings,
    cases: Vec<TestCase>,
) {
    let result = execute_inner(&sched, &store, run_id, &spec, &settings, &cases).await;
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
    let first = eval_row(sched, spec, settings, first).await;
    if !store.record_eval_result(run_id, &first).await? {
        return Ok(());
    }
    let rows = futures_util::stream::iter(0..rest.len())
        .map(|i| eval_row(sched, spec, settings, &rest[i]))
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
    let id = store.create_eval_run(&plan, cases.len(), actor).await?;
    // Read back before the task starts, so the caller gets the run as created (`queued`),
    // not whatever state the task has already reached.
    let run = store.eval_run(id).await?;
    tokio::spawn(execute(sched.clone(), store.clone(), id, plan.spec, plan.settings, cases));
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

// ---------------------------------------------------------------------- gate

/// With the template's eval gate on, `production` only moves to a version whose latest
/// completed eval passes at least as often as the current production version's.
pub async fn check_gate(store: &Store, name: &str, label: &str, version: i64) -> Result<(), EvalError> {
    if label != "production" {
        return Ok(());
    }
    let t = store.get_template(name).await?;
    if !t.eval_gate {
        return Ok(());
    }
    let score =
        |v: i64, e: Option<(i64, f64)>| json!({"version": v, "eval_id": e.map(|x| x.0), "pass_rate": e.map(|x| x.1)});
    let candidate = store.latest_completed_eval(name, version).await?;
    let current = match t.labels.get("production") {
        Some(&v) => Some((v, store.latest_completed_eval(name, v).await?)),
        None => None,
    };
    let production = current.map(|(v, e)| score(v, e)).unwrap_or(Value::Null);
    let Some((cid, cand_rate)) = candidate else {
        return Err(EvalError::Gate {
            message: format!(
                "eval gate: version {version} of '{name}' has no completed eval; run one (POST /api/evals) before moving production"
            ),
            candidate: score(version, None),
            production,
        });
    };
    if let Some((pv, Some((pid, prate)))) = current {
        if cand_rate < prate {
            return Err(EvalError::Gate {
                message: format!(
                    "eval gate: version {version} passes {:.1}% (eval {cid}), production version {pv} passes {:.1}% (eval {pid}); it must pass at least as often",
                    cand_rate * 100.0,
                    prate * 100.0
                ),
                candidate: score(version, candidate),
                production,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(a: Assertion, out: &str, expected: Option<&str>) -> bool {
        a.check(out, expected, None).passed
    }

    #[test]
    fn every_assertion_type_passes_and_fails() {
        let v = |s: &str| s.to_string();
        assert!(check(Assertion::Exact { value: None }, " 긍정\n", Some("긍정")));
        assert!(!check(Assertion::Exact { value: None }, "긍정적", Some("긍정")));
        assert!(check(Assertion::Exact { value: Some(v("ok")) }, "ok", Some("no")));
        assert!(check(Assertion::Contains { value: v("東京") }, "首都は東京です", None));
        assert!(!check(Assertion::Contains { value: v("大阪") }, "首都は東京です", None));
        assert!(check(Assertion::NotContains { value: v("sorry") }, "Here you go", None));
        assert!(!check(Assertion::NotContains { value: v("sorry") }, "I am sorry", None));
        assert!(check(Assertion::Regex { pattern: v(r"^\d{3}-\d{4}$") }, "123-4567", None));
        assert!(!check(Assertion::Regex { pattern: v(r"^\d{3}-\d{4}$") }, "12-4567", None));
        assert!(!check(Assertion::Regex { pattern: v("(") }, "(", None), "an invalid regex never passes");
        assert!(check(Assertion::StartsWith { value: v("제목:") }, "제목: 봄 축제", None));
        assert!(!check(Assertion::StartsWith { value: v("제목:") }, "봄 축제", None));
        assert!(check(Assertion::OneOf { values: vec![v("긍정"), v("부정")] }, "부정", None));
        assert!(!check(Assertion::OneOf { values: vec![v("긍정"), v("부정")] }, "중립", None));
        assert!(check(Assertion::Json, r#"{"a": [1, 2]}"#, None));
        assert!(!check(Assertion::Json, r#"{"a": [1, 2}"#, None));
        assert!(check(Assertion::MaxLength { chars: 3 }, "가나다", None), "characters, not bytes");
        assert!(!check(Assertion::MaxLength { chars: 2 }, "가나다", None));
        let labels = vec![v("긍정"), v("부정")];
        let sc = LabelScores::new(&labels, &[-0.2, -3.0]);
        let a = Assertion::Likelihood { labels: labels.clone() };
        let r = a.check("whatever was generated", Some("긍정"), Some(&sc));
        assert!(r.passed);
        assert_eq!(r.chosen.as_deref(), Some("긍정"));
        assert!(!a.check("긍정", Some("부정"), Some(&sc)).passed, "likelihood ignores the generated text");
        assert!(!a.check("긍정", Some("긍정"), None).passed);
    }

    #[test]
    fn assertions_parse_tagged_by_type_and_validate() {
        let a: Vec<Assertion> = serde_json::from_str(
            r#"[{"type":"exact"},{"type":"one_of","values":["a","b"]},{"type":"json"},{"type":"max_length","chars":5},
                {"type":"likelihood","labels":["a","b"]},{"type":"not_contains","value":"x"}]"#,
        )
        .unwrap();
        assert_eq!(a[1], Assertion::OneOf { values: vec!["a".into(), "b".into()] });
        assert_eq!(serde_json::to_string(&a[0]).unwrap(), r#"{"type":"exact"}"#);
        assert!(serde_json::from_str::<Assertion>(r#"{"type":"fuzzy"}"#).is_err());
        let e = a[0].validate("rows[1].assertions[0]", None).unwrap_err();
        assert_eq!(e.field, "rows[1].assertions[0]");
        let e = Assertion::Regex { pattern: "(".into() }.validate("x", None).unwrap_err();
        assert_eq!(e.field, "x.pattern");
        let e = a[4].validate("x", Some("c")).unwrap_err();
        assert!(e.message.contains("not one of the labels"), "{e}");
        assert!(a[4].validate("x", Some("a")).is_ok());
    }

    #[test]
    fn csv_and_jsonl_round_trip_korean_and_japanese() {
        let csv_text = "\u{FEFF}review,note,expected,assertions\n\
            \"배우들 연기가 정말 좋았어요, 최고!\",映画は\"最高\"でした,긍정,\"[{\"\"type\"\":\"\"one_of\"\",\"\"values\"\":[\"\"긍정\"\",\"\"부정\"\"]}]\"\n\
            \"두 줄\n리뷰\",,부정,\n\
            つまらない映画,ja,,\"[{\"\"type\"\":\"\"max_length\"\",\"\"chars\"\":4}]\"\n";
        let rows = parse(FileFormat::Csv, utf8(csv_text.as_bytes()).unwrap()).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].variables["review"], "배우들 연기가 정말 좋았어요, 최고!");
        assert_eq!(rows[0].variables["note"], "映画は\"最高\"でした");
        assert_eq!(rows[1].variables["review"], "두 줄\n리뷰");
        assert_eq!(rows[1].variables["note"], "");
        assert_eq!(rows[2].expected, None);
        assert_eq!(rows[2].assertions, vec![Assertion::MaxLength { chars: 4 }]);
        for f in [FileFormat::Csv, FileFormat::Jsonl] {
            let text = export(f, &rows);
            let back = parse(f, &text).unwrap();
            assert_eq!(back, rows, "{f:?}");
            assert_eq!(export(f, &back), text, "{f:?}: export is a fixed point");
        }
    }

    #[test]
    fn malformed_files_name_row_and_column() {
        let e = parse(FileFormat::Csv, "review,expected\nok,긍정\nbad\n").unwrap_err();
        assert_eq!(e.field, "rows[2].expected", "{e}");
        assert!(e.message.contains("row 2 (line 3)"), "{e}");
        let e =
            parse(FileFormat::Csv, "review,assertions\nok,[]\nfine,\"[{\"\"type\"\":\"\"nope\"\"}]\"\n").unwrap_err();
        assert_eq!(e.field, "rows[2].assertions", "{e}");
        let e = parse(FileFormat::Csv, "review,review\na,b\n").unwrap_err();
        assert_eq!(e.field, "header");
        let e = parse(FileFormat::Jsonl, "{\"review\":\"좋아\"}\n\n{\"review\": 3}\n").unwrap_err();
        assert_eq!(e.field, "rows[2].review", "{e}");
        assert!(e.message.contains("line 3"), "{e}");
        let e = parse(
            FileFormat::Jsonl,
            "{\"review\":\"a\", \"expected\": \"x\", \"assertions\": [{\"type\":\"likelihood\",\"labels\":[\"y\"]}]}\n",
        )
        .unwrap_err();
        assert_eq!(e.field, "rows[1].assertions[0].labels", "{e}");
        let e = utf8(b"review\n\xff\xfe\n").unwrap_err();
        assert!(e.message.contains("line 2"), "{e}");
        assert!(parse(FileFormat::Csv, "review\n").is_err(), "no rows");
    }

    #[test]
    fn majority_and_stability() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(majority(&s(&["a", " b", "b ", "c"])), (" b".to_string(), 0.5));
        assert_eq!(majority(&s(&["x"])), ("x".to_string(), 1.0));
    }

    #[test]
    fn continuation_restores_the_trimmed_output_prefix() {
        let mut spec = VersionSpec::default();
        spec.format.output_prefix = "감정: ".into();
        assert_eq!(continuation(&spec, "긍정"), " 긍정");
        spec.format.output_prefix = "Label:".into();
        assert_eq!(continuation(&spec, "x"), "x");
    }
}
