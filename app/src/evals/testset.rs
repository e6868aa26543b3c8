//! Test sets: rows of variables, expected output and assertions; CSV and JSONL import/export.

use serde_json::Value;

use super::assertions::AssertionCheck;
use super::{ASSERTIONS, EXPECTED, MAX_ASSERTIONS, MAX_TEST_ROWS};
use crate::templates::{FieldError, MAX_VARIABLES, MAX_VARIABLE_VALUE_CHARS};

pub use api_types::evals::{TestCase, TestRow};

/// Validating a [`TestRow`] (shared with the studio) against the limits and its assertions.
pub trait RowCheck {
    /// `row` is 1-based, as error messages count.
    fn validate(&self, row: usize) -> Result<(), FieldError>;
}

impl RowCheck for TestRow {
    fn validate(&self, row: usize) -> Result<(), FieldError> {
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

/// The body as UTF-8 (one leading BOM dropped; a second is refused), or an error naming
/// the line.
pub fn utf8(bytes: &[u8]) -> Result<&str, FieldError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
        FieldError::new("file", format!("line {line}: not valid UTF-8 (byte {})", e.valid_up_to()))
    })?;
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    if text.starts_with('\u{FEFF}') {
        return Err(FieldError::new(
            "file",
            "line 1: the file starts with two byte-order marks (U+FEFF); save it with at most one",
        ));
    }
    Ok(text)
}

/// The JSON import body (`{"rows": [...]}`): strict, unlike the shared [`TestRow`] (which
/// a stored [`TestCase`] flattens), so a misspelt key is refused, not dropped.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrictImport {
    pub rows: Vec<StrictRow>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrictRow {
    pub variables: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub expected: Option<String>,
    #[serde(default)]
    pub assertions: Vec<super::Assertion>,
}

impl From<StrictRow> for TestRow {
    fn from(r: StrictRow) -> Self {
        TestRow { variables: r.variables, expected: r.expected, assertions: r.assertions }
    }
}

/// Every column of a test set must be one of the template's `variables` (or a reserved
/// column, `expected` / `assertions`, which never reach [`TestRow::variables`]); otherwise
/// every eval row would fail with a missing variable. The error names the column and
/// lists the variables.
pub fn check_columns(rows: &[TestRow], template: &str, variables: &[String]) -> Result<(), FieldError> {
    for (i, r) in rows.iter().enumerate() {
        if let Some(k) = r.variables.keys().find(|k| !variables.contains(k)) {
            let row = i + 1;
            let known = if variables.is_empty() { "none".to_string() } else { variables.join(", ") };
            return Err(FieldError::new(
                format!("rows[{row}].{k}"),
                format!(
                    "row {row}: column '{k}' is not a variable of template '{template}'. \
                     Expected columns: its variables ({known}) and optionally {EXPECTED}, {ASSERTIONS}"
                ),
            ));
        }
    }
    Ok(())
}

/// Strict CSV quoting (RFC 4180), checked before reading: a field is either unquoted and
/// holds no `"`, or wholly quoted with inner quotes doubled and nothing after the closing
/// quote but a comma or the line's end. (The CSV reader would otherwise keep a stray quote
/// as text, or glue `"ab"c` into `abc`.)
fn check_quoting(text: &str) -> Result<(), FieldError> {
    let bytes = text.as_bytes();
    let (mut line, mut column, mut i) = (1usize, 1usize, 0usize);
    let err = |line: usize, column: usize, what: &str| {
        FieldError::new(
            "file",
            format!(
                "line {line}, field {column}: {what} (CSV quoting: wrap the field in \"...\" and double any \" inside)"
            ),
        )
    };
    while i < bytes.len() {
        // At the start of a field.
        if bytes[i] == b'"' {
            let start_line = line;
            i += 1;
            loop {
                match bytes.get(i) {
                    None => return Err(err(start_line, column, "a quoted field is never closed")),
                    Some(b'"') if bytes.get(i + 1) == Some(&b'"') => i += 2,
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\n') => {
                        line += 1;
                        i += 1;
                    }
                    Some(_) => i += 1,
                }
            }
            match bytes.get(i) {
                None | Some(b',') | Some(b'\n') | Some(b'\r') => {}
                Some(_) => return Err(err(line, column, "text after a closing quote")),
            }
        } else {
            while let Some(&b) = bytes.get(i) {
                match b {
                    b',' | b'\n' | b'\r' => break,
                    b'"' => return Err(err(line, column, "a quote inside an unquoted field")),
                    _ => i += 1,
                }
            }
        }
        match bytes.get(i) {
            Some(b',') => column += 1,
            Some(b'\r') if bytes.get(i + 1) == Some(&b'\n') => {
                i += 1;
                line += 1;
                column = 1;
            }
            Some(b'\n') | Some(b'\r') => {
                line += 1;
                column = 1;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
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

/// A CSV file read strictly: its header (no name empty, none twice) and each record's
/// cells with the line the record starts on. Shared by test sets and batch datasets.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvTable {
    pub headers: Vec<String>,
    /// `(line, cells)`, one cell per header.
    pub records: Vec<(u64, Vec<String>)>,
}

/// Most columns a CSV file may have: room for the variables of several versions and the
/// two reserved columns; it bounds the header checks, which compare every name with the
/// ones before it.
pub const MAX_CSV_COLUMNS: usize = 8 * MAX_VARIABLES;

/// Reads `text` (UTF-8, BOM already dropped by [`utf8`]) as CSV with a header: RFC 4180
/// quoting checked first, every record as long as the header, at most `max_rows` records.
/// Errors name the line (and the row and column where there is one).
pub fn read_csv(text: &str, max_rows: usize) -> Result<CsvTable, FieldError> {
    check_quoting(text)?;
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| FieldError::new("header", format!("line 1: unreadable header: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    if headers.len() > MAX_CSV_COLUMNS {
        return Err(FieldError::new(
            "header",
            format!("line 1: at most {MAX_CSV_COLUMNS} columns, got {}", headers.len()),
        ));
    }
    for (i, h) in headers.iter().enumerate() {
        if h.trim().is_empty() {
            return Err(FieldError::new("header", format!("line 1, column {}: the column name is empty", i + 1)));
        }
        if headers[..i].contains(h) {
            return Err(FieldError::new("header", format!("line 1, column {}: '{h}' appears twice", i + 1)));
        }
    }
    // The line a record starts on, from its byte offset: the reader's own line count is
    // one short after a CRLF (it counts the `\n` once the next record has begun). Counted
    // on from the previous record, so the whole file is scanned once.
    let bytes = text.as_bytes();
    let (mut seen, mut seen_line) = (0usize, 1u64);
    let mut line_at = |pos: Option<&csv::Position>, fallback: u64| -> u64 {
        let Some(pos) = pos else { return fallback };
        let mut at = (pos.byte() as usize).min(bytes.len());
        while matches!(bytes.get(at), Some(b'\r' | b'\n')) {
            at += 1;
        }
        if at < seen {
            return fallback;
        }
        seen_line += bytes[seen..at].iter().filter(|&&b| b == b'\n').count() as u64;
        seen = at;
        seen_line
    };
    let mut records = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let row = i + 1;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = line_at(e.position(), row as u64 + 1);
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
        let line = line_at(record.position(), row as u64 + 1);
        if row > max_rows {
            return Err(FieldError::new("file", format!("at most {max_rows} rows; row {row} is on line {line}")));
        }
        records.push((line, record.iter().map(str::to_string).collect()));
    }
    Ok(CsvTable { headers, records })
}

/// CSV with a header: variable columns plus the reserved `expected` and `assertions`.
pub fn parse_csv(text: &str) -> Result<Vec<TestRow>, FieldError> {
    let CsvTable { headers, records } = read_csv(text, MAX_TEST_ROWS)?;
    if !headers.iter().any(|h| h != EXPECTED && h != ASSERTIONS) {
        return Err(FieldError::new("header", "line 1: needs at least one variable column"));
    }
    let mut rows = Vec::new();
    for (i, (line, record)) in records.into_iter().enumerate() {
        let row = i + 1;
        let mut out = TestRow::default();
        for (h, cell) in headers.iter().zip(record) {
            match h.as_str() {
                EXPECTED => out.expected = (!cell.is_empty()).then_some(cell),
                ASSERTIONS if cell.trim().is_empty() => {}
                ASSERTIONS => {
                    out.assertions = serde_json::from_str(&cell)
                        .map_err(|e| row_err(row, line, ASSERTIONS, format!("not a JSON array of assertions: {e}")))?
                }
                name => {
                    out.variables.insert(name.to_string(), cell);
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
