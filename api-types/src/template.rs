//! A template version's content (`VersionSpec`) and metadata, their limits and
//! validation, and rendering into the exact prompt the model reads. Tokenizing the
//! rendered prompt needs the model, so that part lives with the server.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

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
/// Most labels of a choice constraint, and the longest label in characters.
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_CHARS: usize = 200;
/// Most fields of a JSON-fields constraint; longest field name; most allowed values per
/// field (each at most [`MAX_LABEL_CHARS`]).
pub const MAX_JSON_FIELDS: usize = 32;
pub const MAX_FIELD_NAME_CHARS: usize = 64;
pub const MAX_ALLOWED_VALUES: usize = 64;
/// Longest JSON schema of a constraint, serialized, in bytes.
pub const MAX_SCHEMA_BYTES: usize = 16 * 1024;
/// Longest regex of a constraint, in bytes.
pub const MAX_REGEX_BYTES: usize = 1024;

/// A field that failed validation: the path (`parameters.temperature`, `examples[2].output`)
/// and a message that names the limit.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

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

/// How a version becomes the model's prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptMode {
    /// Plain text: the instruction, the examples laid out by [`Format`], then the input.
    #[default]
    Completion,
    /// Messages rendered with the model's own chat template: the instruction as the system
    /// prompt, each example as a user turn and an assistant turn, then the input as the
    /// next user message. [`Format`] is not used.
    Chat,
}

impl PromptMode {
    pub fn is_completion(&self) -> bool {
        *self == PromptMode::Completion
    }
}

/// A chat version's messages for one call: the fixed part (system prompt and example
/// turns, the same on every call unless the system prompt has variables) and the input.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatTurns {
    pub fixed: Vec<crate::ChatMessage>,
    pub input: crate::ChatMessage,
}

impl ChatTurns {
    pub fn all(&self) -> Vec<crate::ChatMessage> {
        let mut all = self.fixed.clone();
        all.push(self.input.clone());
        all
    }
}

/// The content of one immutable version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionSpec {
    /// Completion or chat. Left out when completion, so versions saved before chat mode
    /// existed keep their content hash.
    #[serde(default, skip_serializing_if = "PromptMode::is_completion")]
    pub mode: PromptMode,
    /// The instruction (completion mode) or the system prompt (chat mode).
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
    /// What the output must be (enforced by constrained decoding). Left out when unset, so
    /// versions saved before it existed keep their content hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputConstraint>,
}

/// A version's output constraint: the generated text (after the output prefix) is one of
/// the labels, JSON of a schema, or a match of a regex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputConstraint {
    /// Exactly one of these labels.
    Choice { labels: Vec<String> },
    /// JSON valid against this schema (for people who write JSON Schema).
    JsonSchema { schema: serde_json::Value },
    /// A JSON object of these fields, all required and no others (the studio's editor).
    JsonFields { fields: Vec<JsonField> },
    /// Text matching this regex, whole.
    Regex { pattern: String },
}

/// One field of a [`OutputConstraint::JsonFields`] object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonField {
    pub name: String,
    #[serde(default)]
    pub kind: FieldKind,
    /// The values it may take (an enum); empty: any value of its kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    #[default]
    String,
    Number,
    Integer,
    Boolean,
}

impl FieldKind {
    pub const ALL: [FieldKind; 4] = [FieldKind::String, FieldKind::Number, FieldKind::Integer, FieldKind::Boolean];

    pub fn as_str(self) -> &'static str {
        match self {
            FieldKind::String => "string",
            FieldKind::Number => "number",
            FieldKind::Integer => "integer",
            FieldKind::Boolean => "boolean",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// An allowed value as JSON of this kind, or why it is not one.
    fn value(self, text: &str) -> Result<serde_json::Value, String> {
        let t = text.trim();
        let bad = || format!("{t:?} is not of type {}", self.as_str());
        match self {
            FieldKind::String => Ok(serde_json::Value::String(text.to_string())),
            FieldKind::Number => t
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(|n| match t.parse::<i64>() {
                    Ok(i) => serde_json::Value::from(i),
                    Err(_) => serde_json::Value::Number(n),
                })
                .ok_or_else(bad),
            FieldKind::Integer => t.parse::<i64>().map(serde_json::Value::from).map_err(|_| bad()),
            FieldKind::Boolean => t.parse::<bool>().map(serde_json::Value::Bool).map_err(|_| bad()),
        }
    }
}

impl OutputConstraint {
    pub fn kind(&self) -> &'static str {
        match self {
            OutputConstraint::Choice { .. } => "choice",
            OutputConstraint::JsonSchema { .. } => "json_schema",
            OutputConstraint::JsonFields { .. } => "json_fields",
            OutputConstraint::Regex { .. } => "regex",
        }
    }

    /// The examples' distinct outputs, trimmed, in order: the labels a classifier's
    /// examples already use (the studio's "Use the examples' outputs").
    pub fn labels_from_examples(examples: &[Example]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for e in examples {
            let t = e.output.trim();
            if !t.is_empty() && !out.iter().any(|l| l == t) && out.len() < MAX_LABELS {
                out.push(t.to_string());
            }
        }
        out
    }

    /// The field of the constraint that an error about its content names.
    pub fn field(&self) -> &'static str {
        match self {
            OutputConstraint::Choice { .. } => "output.labels",
            OutputConstraint::JsonSchema { .. } => "output.schema",
            OutputConstraint::JsonFields { .. } => "output.fields",
            OutputConstraint::Regex { .. } => "output.pattern",
        }
    }

    /// The JSON schema of a JSON constraint (fields become an object with every field
    /// required and no others); None for labels and regexes.
    pub fn json_schema(&self) -> Result<Option<serde_json::Value>, FieldError> {
        match self {
            OutputConstraint::JsonSchema { schema } => Ok(Some(schema.clone())),
            OutputConstraint::JsonFields { fields } => fields_schema(fields).map(Some),
            _ => Ok(None),
        }
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        match self {
            OutputConstraint::Choice { labels } => {
                if labels.is_empty() || labels.len() > MAX_LABELS {
                    return Err(FieldError::new(
                        "output.labels",
                        format!("between 1 and {MAX_LABELS} labels, got {}", labels.len()),
                    ));
                }
                for (i, l) in labels.iter().enumerate() {
                    let f = format!("output.labels[{i}]");
                    if l.trim().is_empty() {
                        return Err(FieldError::new(f, "must not be empty"));
                    }
                    limit(&f, l, MAX_LABEL_CHARS)?;
                    if labels[..i].contains(l) {
                        return Err(FieldError::new(f, format!("{l:?} is listed twice")));
                    }
                }
                Ok(())
            }
            OutputConstraint::JsonSchema { schema } => {
                if !schema.is_object() {
                    return Err(FieldError::new("output.schema", "must be a JSON object (a JSON Schema)"));
                }
                let size = schema.to_string().len();
                if size > MAX_SCHEMA_BYTES {
                    return Err(FieldError::new(
                        "output.schema",
                        format!("at most {MAX_SCHEMA_BYTES} bytes of schema, got {size}"),
                    ));
                }
                Ok(())
            }
            OutputConstraint::JsonFields { .. } => self.json_schema().map(|_| ()),
            OutputConstraint::Regex { pattern } => {
                if pattern.is_empty() {
                    return Err(FieldError::new("output.pattern", "must not be empty"));
                }
                if pattern.len() > MAX_REGEX_BYTES {
                    return Err(FieldError::new(
                        "output.pattern",
                        format!("at most {MAX_REGEX_BYTES} bytes, got {}", pattern.len()),
                    ));
                }
                Ok(())
            }
        }
    }
}

/// The schema of a fields constraint, checking each field as it goes.
fn fields_schema(fields: &[JsonField]) -> Result<serde_json::Value, FieldError> {
    if fields.is_empty() || fields.len() > MAX_JSON_FIELDS {
        return Err(FieldError::new(
            "output.fields",
            format!("between 1 and {MAX_JSON_FIELDS} fields, got {}", fields.len()),
        ));
    }
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        let at = |x: &str| format!("output.fields[{i}].{x}");
        if f.name.trim().is_empty() {
            return Err(FieldError::new(at("name"), "must not be empty"));
        }
        limit(&at("name"), &f.name, MAX_FIELD_NAME_CHARS)?;
        if properties.contains_key(&f.name) {
            return Err(FieldError::new(at("name"), format!("{:?} is used by another field", f.name)));
        }
        if f.allowed.len() > MAX_ALLOWED_VALUES {
            return Err(FieldError::new(
                at("allowed"),
                format!("at most {MAX_ALLOWED_VALUES} values, got {}", f.allowed.len()),
            ));
        }
        let mut prop = serde_json::json!({ "type": f.kind.as_str() });
        if !f.allowed.is_empty() {
            let mut values = Vec::with_capacity(f.allowed.len());
            for (j, a) in f.allowed.iter().enumerate() {
                let fj = format!("output.fields[{i}].allowed[{j}]");
                limit(&fj, a, MAX_LABEL_CHARS)?;
                values.push(f.kind.value(a).map_err(|m| FieldError::new(fj, m))?);
            }
            prop["enum"] = serde_json::Value::Array(values);
        }
        properties.insert(f.name.clone(), prop);
        required.push(serde_json::Value::String(f.name.clone()));
    }
    Ok(serde_json::json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    }))
}

/// The input pattern of a version that sets none.
pub fn default_pattern() -> String {
    "{{input}}".into()
}

impl Default for VersionSpec {
    fn default() -> Self {
        Self {
            mode: PromptMode::Completion,
            instruction: String::new(),
            examples: Vec::new(),
            input_pattern: default_pattern(),
            format: Format::default(),
            model: None,
            parameters: Parameters::default(),
            output: None,
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

/// `s` has at most `max` characters, or the error names `field` and the limit.
pub fn limit(field: &str, s: &str, max: usize) -> Result<(), FieldError> {
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
        self.parameters.validate()?;
        match &self.output {
            Some(o) => o.validate(),
            None => Ok(()),
        }
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
        if self.mode == PromptMode::Chat {
            return Err(FieldError::new("mode", "a chat version is rendered with the model's chat template"));
        }
        self.check_variables(vars)?;
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
        Ok(Rendered { prefix, suffix, chat: false })
    }

    /// Every variable the version needs is given, and no other, each within its limit.
    pub fn check_variables(&self, vars: &BTreeMap<String, String>) -> Result<(), FieldError> {
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
        Ok(())
    }

    /// A chat version's messages for `vars`: the system prompt (when not empty), a user and
    /// an assistant turn per example, then the input pattern as the user's message.
    pub fn chat_turns(&self, vars: &BTreeMap<String, String>) -> Result<ChatTurns, FieldError> {
        self.check_variables(vars)?;
        let msg = |role: &str, content: String| crate::ChatMessage { role: role.to_string(), content };
        let mut fixed = Vec::with_capacity(self.examples.len() * 2 + 1);
        let system = substitute(&self.instruction, vars);
        if !system.trim().is_empty() {
            fixed.push(msg("system", system));
        }
        for e in &self.examples {
            fixed.push(msg("user", e.input.clone()));
            fixed.push(msg("assistant", e.output.clone()));
        }
        Ok(ChatTurns { fixed, input: msg("user", substitute(&self.input_pattern, vars)) })
    }

    /// The input pattern with `vars` filled in: what an example's `input` holds when a test
    /// row becomes a few-shot example.
    pub fn input_text(&self, vars: &BTreeMap<String, String>) -> String {
        substitute(&self.input_pattern, vars)
    }

    /// A stable hash of the content: two specs with the same hash are the same version.
    pub fn content_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        // A schema's keys in sorted order: the same schema read back from a TOML file (which
        // writes tables last) is the same version.
        let canonical = match &self.output {
            Some(OutputConstraint::JsonSchema { schema }) => {
                let output = Some(OutputConstraint::JsonSchema { schema: sorted_keys(schema) });
                serde_json::to_string(&VersionSpec { output, ..self.clone() })
            }
            _ => serde_json::to_string(self),
        }
        .expect("spec serializes");
        hex(&Sha256::digest(canonical.as_bytes()))
    }
}

/// `v` with every object's keys in sorted order.
fn sorted_keys(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            serde_json::Value::Object(keys.into_iter().map(|k| (k.clone(), sorted_keys(&m[k]))).collect())
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sorted_keys).collect()),
        other => other.clone(),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rendered {
    pub prefix: String,
    pub suffix: String,
    /// Rendered by the model's chat template, which writes any BOS itself: tokenized
    /// without adding one.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub chat: bool,
}

impl Rendered {
    pub fn text(&self) -> String {
        format!("{}{}", self.prefix, self.suffix)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn sentiment() -> VersionSpec {
        VersionSpec {
            mode: PromptMode::Completion,
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
            output: None,
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
        assert_eq!(e.to_string(), "parameters.temperature: must be between 0 and 2, got 3");
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
    fn an_unset_constraint_leaves_the_content_hash_alone() {
        let spec = sentiment();
        let json = serde_json::to_string(&spec).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(value.get("output").is_none(), "{json}");
        // A spec saved before constraints existed reads back and hashes the same.
        let back: VersionSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back.content_hash(), spec.content_hash());
        let mut labelled = sentiment();
        labelled.output = Some(OutputConstraint::Choice { labels: vec!["긍정".into(), "부정".into()] });
        assert_ne!(labelled.content_hash(), spec.content_hash());
        let v = serde_json::to_value(&labelled).unwrap();
        assert_eq!(v["output"], serde_json::json!({"type": "choice", "labels": ["긍정", "부정"]}));
    }

    #[test]
    fn labels_come_from_the_examples_outputs_distinct_and_trimmed() {
        let mut spec = sentiment();
        spec.examples.push(Example { input: "또 보고 싶다".into(), output: " 긍정 ".into() });
        spec.examples.push(Example { input: "그저 그랬다".into(), output: "중립".into() });
        assert_eq!(OutputConstraint::labels_from_examples(&spec.examples), vec!["긍정", "부정", "중립"]);
    }

    #[test]
    fn constraint_validation_names_the_field_and_limit() {
        let check = |o: OutputConstraint| {
            let spec = VersionSpec { output: Some(o), ..sentiment() };
            spec.validate().unwrap_err()
        };
        let mut labels: Vec<String> = (0..4).map(|i| format!("l{i}")).collect();
        labels[3] = " ".into();
        assert_eq!(check(OutputConstraint::Choice { labels: labels.clone() }).field, "output.labels[3]");
        labels[3] = "x".repeat(MAX_LABEL_CHARS + 1);
        let e = check(OutputConstraint::Choice { labels: labels.clone() });
        assert_eq!(e.field, "output.labels[3]");
        assert!(e.message.contains("at most 200 characters"), "{e}");
        labels[3] = "l0".into();
        assert!(check(OutputConstraint::Choice { labels }).message.contains("twice"));
        let many = (0..=MAX_LABELS).map(|i| i.to_string()).collect();
        assert!(check(OutputConstraint::Choice { labels: many }).message.contains("between 1 and 64"));
        assert_eq!(check(OutputConstraint::Choice { labels: vec![] }).field, "output.labels");
        let e = check(OutputConstraint::Regex { pattern: "a".repeat(MAX_REGEX_BYTES + 1) });
        assert_eq!((e.field.as_str(), e.message.as_str()), ("output.pattern", "at most 1024 bytes, got 1025"));
        let big = serde_json::json!({"type": "string", "description": "x".repeat(MAX_SCHEMA_BYTES)});
        assert_eq!(check(OutputConstraint::JsonSchema { schema: big }).field, "output.schema");
        assert_eq!(check(OutputConstraint::JsonSchema { schema: serde_json::json!("x") }).field, "output.schema");
        let field = |name: &str, kind, allowed: &[&str]| JsonField {
            name: name.into(),
            kind,
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
        };
        let fields = vec![field("a", FieldKind::String, &[]), field("a", FieldKind::Number, &[])];
        assert_eq!(check(OutputConstraint::JsonFields { fields }).field, "output.fields[1].name");
        let fields = vec![field("n", FieldKind::Integer, &["1", "two"])];
        let e = check(OutputConstraint::JsonFields { fields });
        assert_eq!(e.field, "output.fields[0].allowed[1]");
        assert!(e.message.contains("\"two\" is not of type integer"), "{e}");
        let fields = (0..=MAX_JSON_FIELDS).map(|i| field(&format!("f{i}"), FieldKind::String, &[])).collect();
        assert!(check(OutputConstraint::JsonFields { fields }).message.contains("between 1 and 32 fields"));
    }

    #[test]
    fn json_fields_become_a_closed_schema_with_every_field_required() {
        let o = OutputConstraint::JsonFields {
            fields: vec![
                JsonField {
                    name: "sentiment".into(),
                    kind: FieldKind::String,
                    allowed: vec!["긍정".into(), "부정".into()],
                },
                JsonField { name: "score".into(), kind: FieldKind::Number, allowed: vec![] },
                JsonField { name: "stars".into(), kind: FieldKind::Integer, allowed: vec!["1".into(), " 5".into()] },
                JsonField { name: "spoiler".into(), kind: FieldKind::Boolean, allowed: vec![] },
            ],
        };
        o.validate().unwrap();
        assert_eq!(
            o.json_schema().unwrap().unwrap(),
            serde_json::json!({
                "type": "object",
                "properties": {
                    "sentiment": {"type": "string", "enum": ["긍정", "부정"]},
                    "score": {"type": "number"},
                    "stars": {"type": "integer", "enum": [1, 5]},
                    "spoiler": {"type": "boolean"},
                },
                "required": ["sentiment", "score", "stars", "spoiler"],
                "additionalProperties": false,
            })
        );
        assert_eq!(OutputConstraint::Regex { pattern: "a".into() }.json_schema().unwrap(), None);
        let back: OutputConstraint = serde_json::from_value(serde_json::to_value(&o).unwrap()).unwrap();
        assert_eq!(back, o);
    }
}
