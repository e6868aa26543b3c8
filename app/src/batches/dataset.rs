//! A template over a dataset: a CSV (with a header) or JSONL file of template variables
//! becomes the request lines of a batch against one version's endpoint,
//! `/v1/templates/{name}@{version}/completions`, one line per row (`custom_id` `row-N`,
//! body `{"variables": {...}}`); and a finished batch's answers become a results CSV.
//! The CSV is read by the test-set reader (strict RFC 4180 quoting, one BOM at most).

use std::collections::BTreeMap;

use api_types::batches::{BatchOutputLine, DatasetCheck};
use api_types::completions::{Completion, FinishReason};
use api_types::error::ErrorBody;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{group_key_of, BatchError, NewLine, MAX_FILE_BYTES, MAX_LINES};
use crate::evals::{self, CsvTable, FileFormat};
use crate::templates::{MAX_VARIABLES, MAX_VARIABLE_VALUE_CHARS};

/// Largest dataset (as an uploaded batch file).
pub const MAX_DATASET_BYTES: usize = MAX_FILE_BYTES;
/// Most rows in a dataset: one batch line each.
pub const MAX_DATASET_ROWS: usize = MAX_LINES;
/// Longest dataset file name kept in a batch's metadata.
pub const MAX_FILENAME_CHARS: usize = 255;

/// The request field a dataset arrives in (what errors name).
const DATA: &str = "data";

/// A dataset read whole: its columns in the file's order, and each row's values in the
/// same order with the line the row starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub line: u64,
    pub values: Vec<String>,
}

fn invalid(message: impl Into<String>) -> BatchError {
    BatchError::invalid(DATA, message)
}

/// Reads a dataset. The first fault is named by its line (and column); an empty dataset
/// (no columns, or no rows) is refused.
pub fn parse(format: FileFormat, data: &str) -> Result<Dataset, BatchError> {
    if data.len() > MAX_DATASET_BYTES {
        return Err(invalid(format!("{} bytes, over the limit of {MAX_DATASET_BYTES} bytes", data.len())));
    }
    let text = evals::utf8(data.as_bytes()).map_err(|e| invalid(e.message))?;
    let ds = match format {
        FileFormat::Csv => parse_csv(text)?,
        FileFormat::Jsonl => parse_jsonl(text)?,
    };
    if ds.columns.is_empty() {
        return Err(invalid("the dataset has no columns: the first line names them"));
    }
    if ds.rows.is_empty() {
        return Err(invalid("the dataset has no rows: nothing to run"));
    }
    for r in &ds.rows {
        for (c, v) in ds.columns.iter().zip(&r.values) {
            let n = v.chars().count();
            if n > MAX_VARIABLE_VALUE_CHARS {
                return Err(invalid(format!(
                    "line {}, column '{c}': at most {MAX_VARIABLE_VALUE_CHARS} characters, got {n}",
                    r.line
                )));
            }
        }
    }
    Ok(ds)
}

fn parse_csv(text: &str) -> Result<Dataset, BatchError> {
    let CsvTable { headers, records } = evals::read_csv(text, MAX_DATASET_ROWS).map_err(|e| invalid(e.message))?;
    let rows = records.into_iter().map(|(line, values)| Row { line, values }).collect();
    Ok(Dataset { columns: headers, rows })
}

/// A JSON object's members in the order they are written (the dataset's column order).
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut out: Vec<(String, Value)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    // Bounded, so the duplicate check stays cheap: columns are variables.
                    if out.len() == MAX_VARIABLES {
                        return Err(serde::de::Error::custom(format!(
                            "more than {MAX_VARIABLES} keys (a template has at most {MAX_VARIABLES} variables)"
                        )));
                    }
                    if out.iter().any(|(seen, _)| *seen == k) {
                        return Err(serde::de::Error::custom(format!("the key '{k}' appears twice")));
                    }
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// One object per line, its keys the columns; the first line's keys (in order) are the
/// dataset's, and every other line has exactly the same keys. Blank lines are skipped.
fn parse_jsonl(text: &str) -> Result<Dataset, BatchError> {
    let mut columns: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let line = i as u64 + 1;
        if l.trim().is_empty() {
            continue;
        }
        if rows.len() == MAX_DATASET_ROWS {
            return Err(invalid(format!("at most {MAX_DATASET_ROWS} rows; line {line} is one more")));
        }
        let Ordered(members) = serde_json::from_str(l).map_err(|e| {
            // serde's text ends "at line 1 column N": the line of this one line, not the file's.
            let text = e.to_string();
            let what = text.rsplit_once(" at line ").map_or(text.as_str(), |(m, _)| m);
            invalid(format!("line {line}, column {}: not a JSON object of strings: {what}", e.column().max(1)))
        })?;
        let mut cells = Vec::with_capacity(members.len());
        for (k, v) in members {
            match v {
                Value::String(s) => cells.push((k, s)),
                other => {
                    return Err(invalid(format!(
                        "line {line}, column '{k}': a variable's value must be a string, got {other}"
                    )))
                }
            }
        }
        let cols = columns.get_or_insert_with(|| cells.iter().map(|(k, _)| k.clone()).collect());
        if let Some((k, _)) = cells.iter().find(|(k, _)| !cols.contains(k)) {
            return Err(invalid(format!(
                "line {line}: column '{k}' is not among the first line's columns ({})",
                cols.join(", ")
            )));
        }
        let mut by_name: BTreeMap<String, String> = cells.into_iter().collect();
        let mut values = Vec::with_capacity(cols.len());
        for c in cols.iter() {
            let v = by_name.remove(c).ok_or_else(|| {
                invalid(format!("line {line}: no value for column '{c}' (the first line has one; every row needs it)"))
            })?;
            values.push(v);
        }
        rows.push(Row { line, values });
    }
    Ok(Dataset { columns: columns.unwrap_or_default(), rows })
}

/// The dataset's columns beside the version's variables: those that are not variables,
/// and the variables no column gives.
pub fn check(template: &str, version: i64, variables: &[String], ds: &Dataset) -> DatasetCheck {
    DatasetCheck {
        template: template.to_string(),
        version,
        rows: ds.rows.len(),
        columns: ds.columns.clone(),
        variables: variables.to_vec(),
        unknown: ds.columns.iter().filter(|c| !variables.contains(c)).cloned().collect(),
        missing: variables.iter().filter(|v| !ds.columns.contains(v)).cloned().collect(),
    }
}

/// Every column must be a variable of the version, and every variable must have a
/// column: otherwise every line would fail the same way. 422 naming the column.
pub fn require_match(c: &DatasetCheck) -> Result<(), BatchError> {
    let listed = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
    if let Some(col) = c.unknown.first() {
        return Err(BatchError::Columns {
            param: format!("{DATA}.{col}"),
            message: format!(
                "line 1: column '{col}' is not a variable of template '{}' version {}; its variables: {}",
                c.template,
                c.version,
                listed(&c.variables)
            ),
        });
    }
    if let Some(var) = c.missing.first() {
        return Err(BatchError::Columns {
            param: format!("{DATA}.{var}"),
            message: format!(
                "line 1: no column for variable '{var}' of template '{}' version {} (it needs: {}; the file has: {})",
                c.template,
                c.version,
                listed(&c.variables),
                listed(&c.columns)
            ),
        });
    }
    Ok(())
}

/// The endpoint a dataset batch calls: the version pinned by number, so moving a label
/// while it runs changes nothing.
pub fn endpoint(template: &str, version: i64) -> String {
    format!("/v1/templates/{template}@{version}/completions")
}

/// A row's request body, `{"variables": {...}}`, its members in the dataset's column
/// order (written by hand: a `serde_json::Map` would sort them), so the results list
/// the columns as the file did.
fn body(columns: &[String], values: &[String]) -> String {
    let mut out = String::from("{\"variables\":{");
    for (i, (c, v)) in columns.iter().zip(values).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(c.clone()).to_string());
        out.push(':');
        out.push_str(&Value::String(v.clone()).to_string());
    }
    out.push_str("}}");
    out
}

/// The batch lines of a dataset (checked with [`require_match`]): `row-N` from 1, in
/// the file's order. All share one group: they share the template's prompt prefix.
pub fn lines(ds: &Dataset, endpoint: &str) -> Vec<NewLine> {
    let group = group_key_of(endpoint);
    ds.rows
        .iter()
        .enumerate()
        .map(|(i, r)| NewLine {
            line_no: i as i64 + 1,
            custom_id: format!("row-{}", i + 1),
            group_key: group.clone(),
            body: body(&ds.columns, &r.values),
        })
        .collect()
}

/// The batch input file of `lines` (OpenAI's JSONL: `custom_id`, `method`, `url`,
/// `body`), kept as the batch's `input_file_id` like an uploaded one.
pub fn input_file(lines: &[NewLine], endpoint: &str) -> String {
    let url = Value::String(endpoint.to_string()).to_string();
    let mut out = String::new();
    for l in lines {
        let id = Value::String(l.custom_id.clone()).to_string();
        out.push_str(&format!("{{\"custom_id\":{id},\"method\":\"POST\",\"url\":{url},\"body\":{}}}\n", l.body));
    }
    out
}

/// A finished line, as the store keeps it.
#[derive(Debug, Clone)]
pub struct LineResult {
    /// The request body (its `variables` become the row's cells).
    pub body: String,
    /// `done`, `failed`, `cancelled`, `expired`.
    pub status: String,
    /// The output line written for it, if it ran.
    pub response: Option<String>,
    /// Why it has no answer when it did not run (cancelled, expired, abandoned).
    pub not_run: Option<String>,
}

/// The variables of a request body, in its order (no `variables`: none).
#[derive(Deserialize)]
struct VariablesOf {
    #[serde(default)]
    variables: Option<Ordered>,
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn finish_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Length => "length",
        FinishReason::Stop => "stop",
        FinishReason::Cancelled => "cancelled",
    }
}

/// What a line produced: `(output, finish_reason, error)`.
fn outcome(l: &LineResult) -> (String, String, String) {
    let out: Option<BatchOutputLine> = l.response.as_deref().and_then(|r| serde_json::from_str(r).ok());
    let Some(resp) = out.and_then(|o| o.response) else {
        let why = l.not_run.clone().unwrap_or_else(|| format!("the request did not run ({})", l.status));
        return (String::new(), String::new(), why);
    };
    if (200..300).contains(&resp.status_code) {
        match serde_json::from_value::<Completion>(resp.body) {
            Ok(c) => {
                let choice = c.choices.into_iter().next();
                let reason = choice.as_ref().and_then(|c| c.finish_reason).map(finish_reason).unwrap_or_default();
                (choice.map(|c| c.text).unwrap_or_default(), reason.to_string(), String::new())
            }
            Err(e) => (String::new(), String::new(), format!("an unreadable answer: {e}")),
        }
    } else {
        let message = match serde_json::from_value::<ErrorBody>(resp.body.clone()) {
            Ok(b) => b.error.message,
            Err(_) => resp.body.to_string(),
        };
        (String::new(), String::new(), format!("HTTP {}: {message}", resp.status_code))
    }
}

/// The results of a finished batch as CSV (RFC 4180: CRLF, quoted where needed), UTF-8
/// with a BOM so spreadsheet programs read Korean right: the dataset's columns, then
/// `output`, `finish_reason`, `error`; one row per line, in input order.
pub fn results_csv(lines: &[LineResult]) -> String {
    let vars: Vec<Vec<(String, Value)>> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<VariablesOf>(&l.body).ok().and_then(|b| b.variables).map(|o| o.0).unwrap_or_default()
        })
        .collect();
    // The columns in first-seen order (a dataset batch has the same ones on every line).
    let mut columns: Vec<&str> = Vec::new();
    for (k, _) in vars.iter().flatten() {
        if !columns.contains(&k.as_str()) {
            columns.push(k);
        }
    }
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    let mut header: Vec<&str> = columns.clone();
    header.extend(["output", "finish_reason", "error"]);
    w.write_record(&header).expect("write to memory");
    for (l, v) in lines.iter().zip(&vars) {
        let mut rec: Vec<String> = columns
            .iter()
            .map(|c| v.iter().find(|(k, _)| k.as_str() == *c).map(|(_, x)| cell(x)).unwrap_or_default())
            .collect();
        let (output, reason, error) = outcome(l);
        rec.extend([output, reason, error]);
        w.write_record(&rec).expect("write to memory");
    }
    let body = String::from_utf8(w.into_inner().expect("flush to memory")).expect("UTF-8 in, UTF-8 out");
    format!("\u{feff}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn err(format: FileFormat, text: &str) -> String {
        parse(format, text).unwrap_err().to_string()
    }

    #[test]
    fn csv_rows_keep_the_file_order_korean_and_quoting() {
        let text = "\u{feff}리뷰,제목\r\n\"배우도 좋고, \"\"음악\"\"도 좋았다\nㅎㅎ\",첫 영화\n지루했다,둘\n";
        let ds = parse(FileFormat::Csv, text).unwrap();
        assert_eq!(ds.columns, vars(&["리뷰", "제목"]));
        assert_eq!(ds.rows.len(), 2);
        assert_eq!(ds.rows[0].values, vars(&["배우도 좋고, \"음악\"도 좋았다\nㅎㅎ", "첫 영화"]));
        assert_eq!((ds.rows[0].line, ds.rows[1].line), (2, 4), "a row starts on its own line");
        let c = check("movie", 3, &vars(&["제목", "리뷰"]), &ds);
        assert!(c.matches() && c.rows == 2, "{c:?}");
        require_match(&c).unwrap();

        let endpoint = endpoint("movie", 3);
        let lines = lines(&ds, &endpoint);
        assert_eq!(lines.iter().map(|l| l.custom_id.as_str()).collect::<Vec<_>>(), ["row-1", "row-2"]);
        assert_eq!(lines[0].group_key, lines[1].group_key, "one template, one prefix group");
        let body: Value = serde_json::from_str(&lines[0].body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"variables": {"리뷰": "배우도 좋고, \"음악\"도 좋았다\nㅎㅎ", "제목": "첫 영화"}})
        );
        assert!(lines[0].body.find("리뷰") < lines[0].body.find("제목"), "the file's column order: {}", lines[0].body);
        // The input file is a batch file that the /v1/batches reader takes as it is.
        let again = super::super::parse_input(&input_file(&lines, &endpoint), &endpoint).unwrap();
        assert_eq!(
            again.iter().map(|l| (&l.custom_id, &l.body)).collect::<Vec<_>>(),
            lines.iter().map(|l| (&l.custom_id, &l.body)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn jsonl_rows_take_the_first_lines_columns() {
        let text = "{\"review\":\"좋다\",\"title\":\"a\"}\n\n{\"title\":\"b\",\"review\":\"싫다\"}\n";
        let ds = parse(FileFormat::Jsonl, text).unwrap();
        assert_eq!(ds.columns, vars(&["review", "title"]));
        assert_eq!(ds.rows[1], Row { line: 3, values: vars(&["싫다", "b"]) });

        for (text, want) in [
            ("{\"review\":\"a\"}\n{\"review\":\"b\",\"x\":\"c\"}", "line 2: column 'x' is not among"),
            ("{\"review\":\"a\",\"x\":\"b\"}\n{\"review\":\"b\"}", "line 2: no value for column 'x'"),
            ("{\"review\":\"a\"}\n{\"review\":3}", "line 2, column 'review': a variable's value must be a string"),
            ("{\"review\":\"a\"}\n[1]", "line 2, column 1: not a JSON object"),
            ("{\"review\":\"a\",\"review\":\"b\"}", "line 1, column"),
            ("\n\n", "no columns"),
        ] {
            let e = err(FileFormat::Jsonl, text);
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
    }

    #[test]
    fn csv_faults_name_their_line() {
        for (text, want) in [
            ("review\n\"open\n", "line 2, field 1: a quoted field is never closed"),
            ("review\nab\"c\n", "line 2, field 1: a quote inside an unquoted field"),
            ("review,title\na,b\nc\n", "line 3"),
            ("review,title\r\na,b\r\nc\r\n", "row 2 (line 3)"),
            ("review,review\na,b\n", "line 1, column 2: 'review' appears twice"),
            ("\u{feff}\u{feff}review\na\n", "two byte-order marks"),
            ("review\n", "no rows"),
            ("", "no columns"),
        ] {
            let e = err(FileFormat::Csv, text);
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
        let long = format!("review\n{}\n", "가".repeat(MAX_VARIABLE_VALUE_CHARS + 1));
        assert!(err(FileFormat::Csv, &long)
            .contains(&format!("line 2, column 'review': at most {MAX_VARIABLE_VALUE_CHARS}")));
        let many = format!("review\n{}", "x\n".repeat(MAX_DATASET_ROWS + 1));
        assert!(err(FileFormat::Csv, &many).contains(&format!("at most {MAX_DATASET_ROWS} rows")));
    }

    #[test]
    fn columns_must_be_exactly_the_variables() {
        let ds = parse(FileFormat::Csv, "review,stars\na,5\n").unwrap();
        let c = check("movie", 2, &vars(&["review"]), &ds);
        assert_eq!((c.unknown.clone(), c.missing.clone()), (vars(&["stars"]), vec![]));
        let BatchError::Columns { param, message } = require_match(&c).unwrap_err() else { panic!() };
        assert_eq!(param, "data.stars");
        assert!(
            message.contains("column 'stars' is not a variable of template 'movie' version 2; its variables: review"),
            "{message}"
        );

        let ds = parse(FileFormat::Csv, "review\na\n").unwrap();
        let c = check("movie", 2, &vars(&["review", "title"]), &ds);
        let BatchError::Columns { param, message } = require_match(&c).unwrap_err() else { panic!() };
        assert_eq!(param, "data.title");
        assert!(
            message.contains("no column for variable 'title'") && message.contains("the file has: review"),
            "{message}"
        );
    }

    fn done(body: &str, answer: Value, status_code: u16) -> LineResult {
        let out = BatchOutputLine {
            id: "batch_req_x_1".into(),
            custom_id: "row-1".into(),
            response: Some(api_types::batches::BatchResponse { status_code, request_id: "req_1".into(), body: answer }),
            error: None,
        };
        LineResult {
            body: body.into(),
            status: if status_code == 200 { "done" } else { "failed" }.into(),
            response: Some(serde_json::to_string(&out).unwrap()),
            not_run: None,
        }
    }

    #[test]
    fn results_are_a_bom_csv_in_input_order() {
        let completion = |text: &str| {
            serde_json::json!({"id": "c", "object": "text_completion", "created": 1, "model": "m", "usage": null,
                "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": "stop"}]})
        };
        let lines = [
            done(r#"{"variables":{"리뷰":"좋다, \"정말\"\n최고","제목":"가"}}"#, completion("긍정"), 200),
            done(
                r#"{"variables":{"리뷰":"b","제목":"나"}}"#,
                serde_json::json!({"error": {"message": "missing variable", "type": "invalid_request_error", "param": null, "code": null}}),
                422,
            ),
            LineResult {
                body: r#"{"variables":{"리뷰":"c","제목":"다"}}"#.into(),
                status: "cancelled".into(),
                response: None,
                not_run: Some("the batch was cancelled before this request ran".into()),
            },
        ];
        let csv = results_csv(&lines);
        assert!(csv.starts_with('\u{feff}'));
        assert_eq!(
            csv.trim_start_matches('\u{feff}'),
            "리뷰,제목,output,finish_reason,error\r\n\"좋다, \"\"정말\"\"\n최고\",가,긍정,stop,\r\n\
             b,나,,,HTTP 422: missing variable\r\nc,다,,,the batch was cancelled before this request ran\r\n"
        );
    }
}
