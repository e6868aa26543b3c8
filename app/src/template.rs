//! Prompt templates: what a version holds, how it is validated, rendered into the exact
//! prompt the model sees, diffed against another version, and read from / written to the
//! `prompts/` TOML file format.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const MAX_NAME_CHARS: usize = 64;
pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 4000;
pub const MAX_TAGS: usize = 16;
pub const MAX_TAG_CHARS: usize = 32;
pub const MAX_INSTRUCTION_CHARS: usize = 20_000;
pub const MAX_EXAMPLES: usize = 64;
pub const MAX_EXAMPLE_CHARS: usize = 8_000;
pub const MAX_PATTERN_CHARS: usize = 8_000;
pub const MAX_PREFIX_CHARS: usize = 200;
pub const MAX_NOTE_CHARS: usize = 2_000;
pub const MAX_STOPS: usize = 4;
pub const MAX_STOP_CHARS: usize = 64;
pub const MAX_VARIABLES: usize = 32;
pub const MAX_VARIABLE_VALUE_CHARS: usize = 20_000;
pub const MAX_MAX_TOKENS: usize = 4096;

/// A field that failed validation: the path (`parameters.temperature`, `examples[2].output`)
/// and a message that names the limit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// Sampling parameters saved with a version (the template's defaults; a call may override).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Parameters {
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
    pub max_tokens: usize,
    pub repetition_penalty: f32,
    pub stop: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl Default for Parameters {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            max_tokens: 64,
            repetition_penalty: 1.0,
            stop: vec!["\n".into()],
            seed: None,
        }
    }
}

/// How examples and the input are laid out in the prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Format {
    /// Between the instruction and each example, and before the input.
    pub example_separator: String,
    /// Before each example's input and before the final input, e.g. `Q: ` or `문장: `.
    pub input_prefix: String,
    /// Between an input and its output.
    pub io_separator: String,
    /// Before each example's output; the prompt ends with it (trailing spaces trimmed, so the
    /// model writes the space itself, as it saw in the examples).
    pub output_prefix: String,
}

impl Default for Format {
    fn default() -> Self {
        Self {
            example_separator: "\n\n".into(),
            input_prefix: "Input: ".into(),
            io_separator: "\n".into(),
            output_prefix: "Output: ".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    pub input: String,
    pub output: String,
}

/// The content of one immutable version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionSpec {
    #[serde(default)]
    pub instruction: String,
    #[serde(default)]
    pub examples: Vec<Example>,
    /// The final input, with `{{variables}}`.
    #[serde(default = "default_pattern")]
    pub input_pattern: String,
    #[serde(default)]
    pub format: Format,
    /// The model the version was written for; empty means "whatever is served".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default)]
    pub parameters: Parameters,
}

fn default_pattern() -> String {
    "{{input}}".into()
}

impl Default for VersionSpec {
    fn default() -> Self {
        Self {
            instruction: String::new(),
            examples: Vec::new(),
            input_pattern: default_pattern(),
            format: Format::default(),
            model: None,
            parameters: Parameters::default(),
        }
    }
}

/// Template metadata (not versioned: a title fix does not make a new version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TemplateMeta {
    pub name: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// BCP-47-ish language code of the template's text (`ko`, `ja`, `en`, ...).
    #[serde(default)]
    pub language: String,
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

fn limit(field: &str, s: &str, max: usize) -> Result<(), FieldError> {
    let n = chars(s);
    if n > max {
        return Err(FieldError::new(field, format!("at most {max} characters, got {n}")));
    }
    Ok(())
}

/// A template name is a slug: it appears in URLs (`/v1/templates/{name}@production/...`).
pub fn validate_name(name: &str) -> Result<(), FieldError> {
    let ok_start = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_chars = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if name.is_empty() || name.len() > MAX_NAME_CHARS || !ok_start || !ok_chars {
        return Err(FieldError::new(
            "name",
            format!(
                "must be 1 to {MAX_NAME_CHARS} characters of a-z, 0-9, '-' or '_', starting with a letter or digit; got {name:?}"
            ),
        ));
    }
    Ok(())
}

impl TemplateMeta {
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_name(&self.name)?;
        limit("title", &self.title, MAX_TITLE_CHARS)?;
        limit("description", &self.description, MAX_DESCRIPTION_CHARS)?;
        limit("language", &self.language, 16)?;
        if self.tags.len() > MAX_TAGS {
            return Err(FieldError::new("tags", format!("at most {MAX_TAGS} tags, got {}", self.tags.len())));
        }
        for (i, t) in self.tags.iter().enumerate() {
            if t.trim().is_empty() {
                return Err(FieldError::new(format!("tags[{i}]"), "must not be empty"));
            }
            limit(&format!("tags[{i}]"), t, MAX_TAG_CHARS)?;
        }
        Ok(())
    }
}

impl Parameters {
    pub fn validate(&self) -> Result<(), FieldError> {
        let p = |f: &str| format!("parameters.{f}");
        if !(0.0..=2.0).contains(&self.temperature) {
            return Err(FieldError::new(
                p("temperature"),
                format!("must be between 0 and 2, got {}", self.temperature),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(FieldError::new(p("top_p"), format!("must be in (0, 1], got {}", self.top_p)));
        }
        if self.max_tokens == 0 || self.max_tokens > MAX_MAX_TOKENS {
            return Err(FieldError::new(
                p("max_tokens"),
                format!("must be between 1 and {MAX_MAX_TOKENS}, got {}", self.max_tokens),
            ));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty <= 10.0) {
            return Err(FieldError::new(
                p("repetition_penalty"),
                format!("must be in (0, 10], got {}", self.repetition_penalty),
            ));
        }
        if self.stop.len() > MAX_STOPS {
            return Err(FieldError::new(p("stop"), format!("at most {MAX_STOPS} sequences, got {}", self.stop.len())));
        }
        for (i, s) in self.stop.iter().enumerate() {
            if s.is_empty() {
                return Err(FieldError::new(format!("parameters.stop[{i}]"), "must not be empty"));
            }
            limit(&format!("parameters.stop[{i}]"), s, MAX_STOP_CHARS)?;
        }
        Ok(())
    }
}

impl VersionSpec {
    pub fn validate(&self) -> Result<(), FieldError> {
        limit("instruction", &self.instruction, MAX_INSTRUCTION_CHARS)?;
        limit("input_pattern", &self.input_pattern, MAX_PATTERN_CHARS)?;
        if self.examples.len() > MAX_EXAMPLES {
            return Err(FieldError::new(
                "examples",
                format!("at most {MAX_EXAMPLES} examples, got {}", self.examples.len()),
            ));
        }
        for (i, e) in self.examples.iter().enumerate() {
            if e.input.trim().is_empty() {
                return Err(FieldError::new(format!("examples[{i}].input"), "must not be empty"));
            }
            if e.output.trim().is_empty() {
                return Err(FieldError::new(format!("examples[{i}].output"), "must not be empty"));
            }
            limit(&format!("examples[{i}].input"), &e.input, MAX_EXAMPLE_CHARS)?;
            limit(&format!("examples[{i}].output"), &e.output, MAX_EXAMPLE_CHARS)?;
        }
        let f = &self.format;
        limit("format.example_separator", &f.example_separator, MAX_PREFIX_CHARS)?;
        limit("format.input_prefix", &f.input_prefix, MAX_PREFIX_CHARS)?;
        limit("format.io_separator", &f.io_separator, MAX_PREFIX_CHARS)?;
        limit("format.output_prefix", &f.output_prefix, MAX_PREFIX_CHARS)?;
        if let Some(m) = &self.model {
            limit("model", m, 200)?;
        }
        for (field, text) in [("instruction", &self.instruction), ("input_pattern", &self.input_pattern)] {
            let vars = variables(text).map_err(|m| FieldError::new(field, m))?;
            if vars.len() > MAX_VARIABLES {
                return Err(FieldError::new(field, format!("at most {MAX_VARIABLES} variables, got {}", vars.len())));
            }
        }
        self.parameters.validate()
    }

    /// Every `{{variable}}` the version needs, in order of first appearance.
    pub fn variables(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for text in [&self.instruction, &self.input_pattern] {
            for v in variables(text).unwrap_or_default() {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
        out
    }

    /// The prompt in two parts: `prefix` (instruction and examples, the same text on every
    /// call unless the instruction has variables) and `suffix` (the input and the output
    /// prefix). They are tokenized apart so the prefix is the same token sequence every time
    /// and the prefix cache can serve it.
    pub fn render(&self, vars: &BTreeMap<String, String>) -> Result<Rendered, FieldError> {
        let needed = self.variables();
        for name in &needed {
            if !vars.contains_key(name) {
                return Err(FieldError::new(
                    format!("variables.{name}"),
                    format!("missing variable '{name}'; this template needs: {}", needed.join(", ")),
                ));
            }
        }
        for (name, value) in vars {
            if !needed.contains(name) {
                let expected = if needed.is_empty() { "none".to_string() } else { needed.join(", ") };
                return Err(FieldError::new(
                    format!("variables.{name}"),
                    format!("unknown variable '{name}'; this template takes: {expected}"),
                ));
            }
            limit(&format!("variables.{name}"), value, MAX_VARIABLE_VALUE_CHARS)?;
        }
        let f = &self.format;
        let mut prefix = substitute(&self.instruction, vars);
        if !prefix.is_empty() {
            prefix.push_str(&f.example_separator);
        }
        for e in &self.examples {
            prefix.push_str(&f.input_prefix);
            prefix.push_str(&e.input);
            prefix.push_str(&f.io_separator);
            prefix.push_str(&f.output_prefix);
            prefix.push_str(&e.output);
            prefix.push_str(&f.example_separator);
        }
        let mut suffix = f.input_prefix.clone();
        suffix.push_str(&substitute(&self.input_pattern, vars));
        suffix.push_str(&f.io_separator);
        suffix.push_str(f.output_prefix.trim_end());
        Ok(Rendered { prefix, suffix })
    }

    /// The input pattern with `vars` filled in: what an example's `input` holds when a test
    /// row becomes a few-shot example.
    pub fn input_text(&self, vars: &BTreeMap<String, String>) -> String {
        substitute(&self.input_pattern, vars)
    }

    /// A stable hash of the content: two specs with the same hash are the same version.
    pub fn content_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let canonical = serde_json::to_string(self).expect("spec serializes");
        hex(&Sha256::digest(canonical.as_bytes()))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rendered {
    pub prefix: String,
    pub suffix: String,
}

impl Rendered {
    pub fn text(&self) -> String {
        format!("{}{}", self.prefix, self.suffix)
    }

    /// Token ids: the prefix (with BOS) and the suffix encoded apart, then joined.
    pub fn token_ids(
        &self,
        tok: &inference::Tokenizer,
    ) -> Result<(Vec<u32>, usize), inference::tokenizer::TokenizerError> {
        if self.prefix.is_empty() {
            return Ok((tok.encode(&self.suffix, true)?, 0));
        }
        let mut ids = tok.encode(&self.prefix, true)?;
        let prefix_len = ids.len();
        ids.extend(tok.encode(&self.suffix, false)?);
        Ok((ids, prefix_len))
    }
}

/// The `{{name}}` variables of `text`, in order of first appearance. A name is letters,
/// digits, `_` or `-` (any script: `{{리뷰}}` is fine); spaces inside the braces are allowed.
pub fn variables(text: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err("a '{{' has no closing '}}'".into());
        };
        let name = after[..end].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-') {
            return Err(format!(
                "'{{{{{}}}}}' is not a valid variable name (letters, digits, '_' or '-')",
                &after[..end]
            ));
        }
        if !out.iter().any(|v| v == name) {
            out.push(name.to_string());
        }
        rest = &after[end + 2..];
    }
    Ok(out)
}

fn substitute(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let name = after[..end].trim();
                match vars.get(name) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&rest[start..start + 2 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------
// Diff

fn text_ops(old: &str, new: &str) -> Vec<Value> {
    use similar::{ChangeTag, TextDiff};
    let diff = TextDiff::configure().algorithm(similar::Algorithm::Patience).diff_chars(old, new);
    let mut ops: Vec<Value> = Vec::new();
    let mut last: Option<(&'static str, String)> = None;
    for change in diff.iter_all_changes() {
        let op = match change.tag() {
            ChangeTag::Equal => "equal",
            ChangeTag::Delete => "delete",
            ChangeTag::Insert => "insert",
        };
        match &mut last {
            Some((o, text)) if *o == op => text.push_str(change.value()),
            _ => {
                if let Some((o, text)) = last.take() {
                    ops.push(json!({ "op": o, "text": text }));
                }
                last = Some((op, change.value().to_string()));
            }
        }
    }
    if let Some((o, text)) = last {
        ops.push(json!({ "op": o, "text": text }));
    }
    ops
}

/// Field-level diff of two versions: text diffs (character level, merged runs) for the
/// instruction, the input pattern and each example; old → new for format and parameters.
pub fn diff(old: &VersionSpec, new: &VersionSpec) -> Value {
    let mut changes: Vec<Value> = Vec::new();
    let mut text = |field: String, a: &str, b: &str| {
        if a != b {
            changes.push(json!({ "field": field, "kind": "text", "old": a, "new": b, "ops": text_ops(a, b) }));
        }
    };
    text("instruction".into(), &old.instruction, &new.instruction);
    text("input_pattern".into(), &old.input_pattern, &new.input_pattern);
    let n = old.examples.len().max(new.examples.len());
    let mut example_changes = Vec::new();
    for i in 0..n {
        match (old.examples.get(i), new.examples.get(i)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => {
                let mut fields = Vec::new();
                if a.input != b.input {
                    fields.push(json!({ "field": "input", "ops": text_ops(&a.input, &b.input) }));
                }
                if a.output != b.output {
                    fields.push(json!({ "field": "output", "ops": text_ops(&a.output, &b.output) }));
                }
                example_changes.push(json!({ "index": i, "change": "modified", "old": a, "new": b, "fields": fields }));
            }
            (Some(a), None) => example_changes.push(json!({ "index": i, "change": "removed", "old": a })),
            (None, Some(b)) => example_changes.push(json!({ "index": i, "change": "added", "new": b })),
            (None, None) => {}
        }
    }
    let mut values = Vec::new();
    let to_map = |v: Value| -> BTreeMap<String, Value> {
        v.as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
    };
    for (group, a, b) in [
        ("format", serde_json::to_value(&old.format), serde_json::to_value(&new.format)),
        ("parameters", serde_json::to_value(&old.parameters), serde_json::to_value(&new.parameters)),
    ] {
        let (a, b) = (to_map(a.unwrap_or_default()), to_map(b.unwrap_or_default()));
        let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for k in keys {
            let (va, vb) = (a.get(k).cloned().unwrap_or(Value::Null), b.get(k).cloned().unwrap_or(Value::Null));
            if va != vb {
                values.push(json!({ "field": format!("{group}.{k}"), "old": va, "new": vb }));
            }
        }
    }
    if old.model != new.model {
        values.push(json!({ "field": "model", "old": old.model, "new": new.model }));
    }
    json!({ "text": changes, "examples": example_changes, "values": values,
            "unchanged": changes.is_empty() && example_changes.is_empty() && values.is_empty() })
}

// ---------------------------------------------------------------------------------------
// The prompts/ file format (TOML)

/// One file of the shipped library (`prompts/*.toml`) and of export/import: the template's
/// metadata plus the content of one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateFile {
    pub name: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub language: String,
    /// The change note of this version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default)]
    pub instruction: String,
    #[serde(default = "default_pattern")]
    pub input_pattern: String,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub parameters: Parameters,
    #[serde(default)]
    pub examples: Vec<Example>,
}

impl TemplateFile {
    pub fn meta(&self) -> TemplateMeta {
        TemplateMeta {
            name: self.name.clone(),
            title: self.title.clone(),
            description: self.description.clone(),
            tags: self.tags.clone(),
            language: self.language.clone(),
        }
    }
    pub fn spec(&self) -> VersionSpec {
        VersionSpec {
            instruction: self.instruction.clone(),
            examples: self.examples.clone(),
            input_pattern: self.input_pattern.clone(),
            format: self.format.clone(),
            model: self.model.clone(),
            parameters: self.parameters.clone(),
        }
    }
    pub fn from_parts(meta: &TemplateMeta, spec: &VersionSpec, note: &str) -> Self {
        Self {
            name: meta.name.clone(),
            title: meta.title.clone(),
            description: meta.description.clone(),
            tags: meta.tags.clone(),
            language: meta.language.clone(),
            note: note.to_string(),
            model: spec.model.clone(),
            instruction: spec.instruction.clone(),
            input_pattern: spec.input_pattern.clone(),
            format: spec.format.clone(),
            parameters: spec.parameters.clone(),
            examples: spec.examples.clone(),
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("template file serializes")
    }

    /// Parses and validates a file. The error names the line and the field at fault.
    pub fn parse(text: &str) -> Result<Self, FileError> {
        let file: TemplateFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            let message = e.message().to_string();
            FileError { line, field: field_from_message(&message), message }
        })?;
        let check = file.meta().validate().and_then(|_| file.spec().validate()).and_then(|_| {
            limit("note", &file.note, MAX_NOTE_CHARS)?;
            Ok(())
        });
        if let Err(fe) = check {
            return Err(FileError {
                line: find_field_line(text, &fe.field),
                field: Some(fe.field),
                message: fe.message,
            });
        }
        Ok(file)
    }
}

/// What is wrong with a template file: the 1-based line (when known) and the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct FileError {
    pub line: Option<usize>,
    pub field: Option<String>,
    pub message: String,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, &self.field) {
            (Some(l), Some(field)) => write!(f, "line {l}, field {field}: {}", self.message),
            (Some(l), None) => write!(f, "line {l}: {}", self.message),
            (None, Some(field)) => write!(f, "field {field}: {}", self.message),
            (None, None) => write!(f, "{}", self.message),
        }
    }
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte.min(text.len())].matches('\n').count() + 1
}

/// serde's messages name an unknown or missing field in backticks.
fn field_from_message(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    Some(message[start..end].to_string())
}

/// The line where a validated field is written: `parameters.temperature` is the
/// `temperature =` line after `[parameters]`; `examples[2].output` the `output =` line in
/// the third `[[examples]]` table.
fn find_field_line(text: &str, field: &str) -> Option<usize> {
    let (table, index, key) = {
        let (head, key) = match field.rsplit_once('.') {
            Some((h, k)) => (Some(h), k),
            None => (None, field),
        };
        let key = key.split('[').next().unwrap_or(key);
        match head {
            Some(h) => match h.split_once('[') {
                Some((t, rest)) => (Some(t.to_string()), rest.trim_end_matches(']').parse::<usize>().ok(), key),
                None => (Some(h.to_string()), None, key),
            },
            None => (None, None, key),
        }
    };
    let mut current: Option<String> = None;
    let mut seen_of_table = 0usize;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
            let name = name.trim().to_string();
            if Some(&name) == table.as_ref() {
                seen_of_table += 1;
            }
            current = Some(name);
            continue;
        }
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            current = Some(name.trim().to_string());
            continue;
        }
        let key_here = t.split('=').next().map(str::trim).filter(|_| t.contains('='));
        if key_here != Some(key) {
            continue;
        }
        let in_table = current == table;
        let right_index = index.is_none_or(|ix| seen_of_table == ix + 1);
        if in_table && right_index {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn sentiment() -> VersionSpec {
        VersionSpec {
            instruction: "영화 리뷰의 감정을 분류하세요.".into(),
            examples: vec![
                Example { input: "정말 재미있었어요".into(), output: "긍정".into() },
                Example { input: "시간 낭비였다".into(), output: "부정".into() },
            ],
            input_pattern: "{{ 리뷰 }}".into(),
            format: Format {
                example_separator: "\n\n".into(),
                input_prefix: "문장: ".into(),
                io_separator: "\n".into(),
                output_prefix: "감정: ".into(),
            },
            model: None,
            parameters: Parameters::default(),
        }
    }

    #[test]
    fn renders_the_exact_prompt_with_a_stable_prefix() {
        let spec = sentiment();
        assert_eq!(spec.variables(), vec!["리뷰"]);
        let r = spec.render(&vars(&[("리뷰", "배우들 연기가 최고")])).unwrap();
        assert_eq!(
            r.text(),
            "영화 리뷰의 감정을 분류하세요.\n\n문장: 정말 재미있었어요\n감정: 긍정\n\n문장: 시간 낭비였다\n감정: 부정\n\n문장: 배우들 연기가 최고\n감정:"
        );
        let r2 = spec.render(&vars(&[("리뷰", "다른 입력")])).unwrap();
        assert_eq!(r.prefix, r2.prefix);
        assert_ne!(r.suffix, r2.suffix);
    }

    #[test]
    fn missing_and_unknown_variables_are_named() {
        let spec = sentiment();
        let e = spec.render(&BTreeMap::new()).unwrap_err();
        assert_eq!(e.field, "variables.리뷰");
        assert!(e.message.contains("missing variable '리뷰'"), "{e}");
        let e = spec.render(&vars(&[("리뷰", "x"), ("extra", "y")])).unwrap_err();
        assert_eq!(e.field, "variables.extra");
    }

    #[test]
    fn variable_syntax_errors_are_reported() {
        assert_eq!(variables("a {{x}} b {{ y }} {{x}}").unwrap(), vec!["x", "y"]);
        assert!(variables("{{ bad name }}").is_err());
        assert!(variables("{{open").is_err());
        let spec = VersionSpec { input_pattern: "{{open".into(), ..VersionSpec::default() };
        assert_eq!(spec.validate().unwrap_err().field, "input_pattern");
    }

    #[test]
    fn validation_names_field_and_limit() {
        let mut spec = sentiment();
        spec.parameters.temperature = 3.0;
        let e = spec.validate().unwrap_err();
        assert_eq!(e.field, "parameters.temperature");
        assert!(e.message.contains("between 0 and 2"));
        let mut spec = sentiment();
        spec.examples[1].output = " ".into();
        assert_eq!(spec.validate().unwrap_err().field, "examples[1].output");
        assert!(validate_name("Movie Reviews").is_err());
        assert!(validate_name("movie-reviews_ko").is_ok());
    }

    #[test]
    fn content_hash_tracks_content() {
        let a = sentiment();
        let mut b = sentiment();
        assert_eq!(a.content_hash(), b.content_hash());
        b.parameters.max_tokens = 3;
        assert_ne!(a.content_hash(), b.content_hash());
    }

    #[test]
    fn diff_reports_text_examples_and_values() {
        let a = sentiment();
        let mut b = sentiment();
        b.instruction = "영화 리뷰의 감정을 긍정 또는 부정으로 분류하세요.".into();
        b.examples[1].output = "중립".into();
        b.examples.push(Example { input: "그냥 그랬다".into(), output: "중립".into() });
        b.parameters.temperature = 0.5;
        let d = diff(&a, &b);
        assert_eq!(d["unchanged"], false);
        assert_eq!(d["text"][0]["field"], "instruction");
        let inserted: String = d["text"][0]["ops"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["op"] == "insert")
            .map(|o| o["text"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(inserted, "긍정 또는 부정으로 ");
        assert_eq!(d["examples"][0]["index"], 1);
        assert_eq!(d["examples"][0]["change"], "modified");
        assert_eq!(d["examples"][1]["change"], "added");
        assert_eq!(d["values"][0]["field"], "parameters.temperature");
        assert_eq!(d["values"][0]["old"], 0.0);
        assert_eq!(d["values"][0]["new"], 0.5);
        assert_eq!(diff(&a, &a)["unchanged"], true);
    }

    #[test]
    fn file_round_trips_and_errors_name_line_and_field() {
        let meta = TemplateMeta {
            name: "movie-sentiment-ko".into(),
            title: "영화 리뷰 감정".into(),
            description: "긍정/부정".into(),
            tags: vec!["classification".into()],
            language: "ko".into(),
        };
        let file = TemplateFile::from_parts(&meta, &sentiment(), "첫 버전");
        let text = file.to_toml();
        let back = TemplateFile::parse(&text).unwrap();
        assert_eq!(back, file);
        assert_eq!(back.spec(), sentiment());

        let bad = text.replace("temperature = 0.0", "temperature = 5.0");
        assert_ne!(bad, text, "fixture must contain the temperature line:\n{text}");
        let e = TemplateFile::parse(&bad).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("parameters.temperature"));
        let line = bad.lines().position(|l| l.starts_with("temperature")).unwrap() + 1;
        assert_eq!(e.line, Some(line), "{e}");

        let e = TemplateFile::parse("name = \"x\"\ntemprature = 1\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert_eq!(e.field.as_deref(), Some("temprature"));

        let e = TemplateFile::parse(
            "name = \"ok\"\n[[examples]]\ninput = \"a\"\noutput = \"b\"\n[[examples]]\ninput = \"c\"\noutput = \"\"\n",
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("examples[1].output"));
        assert_eq!(e.line, Some(7), "{e}");

        let e = TemplateFile::parse("name = \"ok\"\ninstruction = \"unterminated\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
    }
}
