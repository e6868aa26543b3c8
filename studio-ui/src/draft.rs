//! The playground's editable state: a template version as typed (numbers as text), kept
//! in the browser's local storage so nothing typed is lost on a reload or an error, and
//! converted to and from the API's [`VersionSpec`] here, in one place.

use std::collections::BTreeMap;
use std::str::FromStr;

use api_types::template::{
    Example, FieldError, FieldKind, Format, JsonField, OutputConstraint, Parameters, PromptMode, VersionSpec,
    MAX_MAX_TOKENS, MAX_NAME_CHARS,
};
use api_types::templates::VersionInfo;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{json, Value};

/// Parameters as typed in the form (strings), turned into numbers only when sent; the
/// server names the field if one is out of range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ParamText {
    pub temperature: String,
    pub top_p: String,
    pub top_k: String,
    pub max_tokens: String,
    pub repetition_penalty: String,
    /// One stop sequence per line, `\n` written as backslash-n.
    pub stop: String,
    pub seed: String,
}

impl Default for ParamText {
    fn default() -> Self {
        Self {
            temperature: "0".into(),
            top_p: "1".into(),
            top_k: "0".into(),
            max_tokens: "64".into(),
            repetition_penalty: "1".into(),
            stop: "\\n".into(),
            seed: String::new(),
        }
    }
}

/// A number as the API writes it (`0.0`, `64`), for the form.
fn number_text(n: impl Serialize) -> String {
    serde_json::to_string(&n).unwrap_or_default()
}

/// A number field as typed: empty means "not set"; anything unparsable is sent as the
/// string itself so the server's error names the field.
fn num(s: &str) -> Value {
    let t = s.trim();
    if t.is_empty() {
        return Value::Null;
    }
    if let Ok(i) = t.parse::<i64>() {
        return json!(i);
    }
    if let Ok(f) = t.parse::<f64>() {
        return json!(f);
    }
    json!(t)
}

/// The number types of the parameters.
trait Number: FromStr {
    fn finite(&self) -> bool {
        true
    }
}

impl Number for usize {}
impl Number for u64 {}
impl Number for f32 {
    fn finite(&self) -> bool {
        self.is_finite()
    }
}

impl ParamText {
    pub fn from_parameters(p: &Parameters) -> Self {
        Self {
            temperature: number_text(p.temperature),
            top_p: number_text(p.top_p),
            top_k: number_text(p.top_k),
            max_tokens: number_text(p.max_tokens),
            repetition_penalty: number_text(p.repetition_penalty),
            stop: p.stop.iter().map(|s| escape(s)).collect::<Vec<_>>().join("\n"),
            seed: p.seed.map(number_text).unwrap_or_default(),
        }
    }

    /// The number fields: name and text.
    fn numbers(&self) -> [(&'static str, &str); 6] {
        [
            ("temperature", &self.temperature),
            ("top_p", &self.top_p),
            ("top_k", &self.top_k),
            ("max_tokens", &self.max_tokens),
            ("repetition_penalty", &self.repetition_penalty),
            ("seed", &self.seed),
        ]
    }

    /// The parameters, and the number fields whose text is no number of the field's type
    /// (each as [`num`] writes it): those keep the default here and are sent as written.
    fn parse(&self) -> (Parameters, Vec<(&'static str, Value)>) {
        let mut unparsed = Vec::new();
        let d = Parameters::default();
        let p = Parameters {
            temperature: typed_or(&mut unparsed, "temperature", &self.temperature).unwrap_or(d.temperature),
            top_p: typed_or(&mut unparsed, "top_p", &self.top_p).unwrap_or(d.top_p),
            top_k: typed_or(&mut unparsed, "top_k", &self.top_k).unwrap_or(d.top_k),
            max_tokens: typed_or(&mut unparsed, "max_tokens", &self.max_tokens).unwrap_or(d.max_tokens),
            repetition_penalty: typed_or(&mut unparsed, "repetition_penalty", &self.repetition_penalty)
                .unwrap_or(d.repetition_penalty),
            stop: stops(&self.stop),
            seed: typed_or(&mut unparsed, "seed", &self.seed),
        };
        (p, unparsed)
    }

    /// The parameters as the person wrote them (numbers as written, empty fields left
    /// out): what the code snippets show.
    pub fn as_written(&self) -> Value {
        let mut m: serde_json::Map<String, Value> =
            self.numbers().into_iter().map(|(k, t)| (k.to_string(), num(t))).filter(|(_, v)| !v.is_null()).collect();
        m.insert("stop".into(), json!(stops(&self.stop)));
        Value::Object(m)
    }
}

/// A number setting of the form: its field, its range (for the input's `min`/`max`/`step`
/// and its hint), and whether it takes whole numbers only.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NumberField {
    pub field: &'static str,
    pub min: &'static str,
    pub max: Option<&'static str>,
    pub step: &'static str,
    pub whole: bool,
}

impl NumberField {
    pub const fn new(field: &'static str, min: &'static str, max: Option<&'static str>, step: &'static str) -> Self {
        Self { field, min, max, step, whole: false }
    }

    pub const fn whole(self) -> Self {
        Self { whole: true, ..self }
    }

    /// "0 to 2", "1 to 4096", "0 or more".
    pub fn range_text(&self) -> String {
        match self.max {
            Some(max) => format!("{} to {max}", self.min),
            None => format!("{} or more", self.min),
        }
    }
}

/// The parameters' number fields, with the ranges `Parameters::validate` enforces.
pub const NUMBER_FIELDS: [NumberField; 6] = [
    NumberField::new("parameters.temperature", "0", Some("2"), "0.1"),
    NumberField::new("parameters.top_p", "0", Some("1"), "0.05"),
    NumberField::new("parameters.top_k", "0", None, "1").whole(),
    NumberField::new("parameters.max_tokens", "1", Some(MAX_TOKENS_TEXT), "1").whole(),
    NumberField::new("parameters.repetition_penalty", "0", Some("10"), "0.05"),
    NumberField::new("parameters.seed", "0", None, "1").whole(),
];

/// [`MAX_MAX_TOKENS`] as the form shows it.
const MAX_TOKENS_TEXT: &str = "4096";
const _: () = assert!(MAX_MAX_TOKENS == 4096, "update MAX_TOKENS_TEXT");

impl ParamText {
    /// The first parameter that cannot be sent, named by its field, in plain words:
    /// text that is no number, then a number out of range (`Parameters::validate`).
    pub fn problem(&self) -> Option<FieldError> {
        for ((_, text), f) in self.numbers().into_iter().zip(NUMBER_FIELDS) {
            let t = text.trim();
            if t.is_empty() {
                continue;
            }
            let ok = if f.whole { t.parse::<u64>().is_ok() } else { t.parse::<f32>().is_ok_and(|v| v.is_finite()) };
            if !ok {
                let what = if f.whole { "a whole number" } else { "a number" };
                let range = match f.max {
                    Some(max) => format!("from {} to {max}", f.min),
                    None => format!("({} or more)", f.min),
                };
                return Some(FieldError::new(f.field, format!("Enter {what} {range}.")));
            }
        }
        let (p, _) = self.parse();
        let e = p.validate().err()?;
        let message = match NUMBER_FIELDS.iter().find(|f| f.field == e.field) {
            Some(f) => {
                let text = self.numbers().into_iter().zip(NUMBER_FIELDS).find(|(_, g)| g.field == f.field);
                let entered = text.map(|((_, t), _)| t.trim().to_string()).unwrap_or_default();
                let bounds = match f.field {
                    "parameters.top_p" => "above 0, up to 1".to_string(),
                    "parameters.repetition_penalty" => "above 0, up to 10".to_string(),
                    _ => format!("from {}", f.range_text()),
                };
                format!("Use a value {bounds} (you entered {entered}).")
            }
            None if e.field.starts_with("parameters.stop[") => {
                "A stop sequence cannot be empty or longer than 64 characters.".into()
            }
            None => e.message.clone(),
        };
        Some(FieldError::new(e.field, message))
    }
}

/// A number field's value when its text is a number of its type; None when empty or not
/// (then the text goes to `unparsed` as written, unless it is empty).
fn typed_or<T: Number>(unparsed: &mut Vec<(&'static str, Value)>, name: &'static str, text: &str) -> Option<T> {
    if let Some(v) = text.trim().parse::<T>().ok().filter(Number::finite) {
        return Some(v);
    }
    let raw = num(text);
    if !raw.is_null() {
        unparsed.push((name, raw));
    }
    None
}

/// A number a person typed into a request field: sent as the number when it is one, else
/// as the text itself, so the server's error names the field.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Entered<T> {
    Number(T),
    Text(String),
}

impl<T: FromStr> Entered<T> {
    pub fn parse(text: &str) -> Self {
        text.trim().parse().map(Entered::Number).unwrap_or_else(|_| Entered::Text(text.to_string()))
    }
}

/// The spec a draft sends: a [`VersionSpec`], except that parameter fields whose text is
/// no number of their type are sent as written, so the server's error names the field.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DraftSpec {
    pub spec: VersionSpec,
    pub unparsed: Vec<(&'static str, Value)>,
}

impl Serialize for DraftSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Through the text, not `to_value`: an `f32` stays as short as it is written (`0.7`).
        let text = serde_json::to_string(&self.spec).map_err(serde::ser::Error::custom)?;
        let mut v: Value = serde_json::from_str(&text).map_err(serde::ser::Error::custom)?;
        if let Some(p) = v.get_mut("parameters").and_then(Value::as_object_mut) {
            for (name, raw) in &self.unparsed {
                p.insert(name.to_string(), raw.clone());
            }
        }
        v.serialize(serializer)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Draft {
    /// The saved template this draft edits (None: not saved yet).
    pub template: Option<String>,
    /// The version it started from.
    pub base_version: Option<i64>,
    pub title: String,
    /// Completion or chat (the instruction is then the system prompt, examples are turns).
    pub mode: PromptMode,
    pub instruction: String,
    pub examples: Vec<Example>,
    pub input_pattern: String,
    pub format: Format,
    pub params: ParamText,
    pub variables: BTreeMap<String, String>,
    /// The output constraint as edited (every kind's entries kept while switching).
    pub output: OutputDraft,
}

/// Which output constraint the draft has: the segmented control's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputMode {
    #[default]
    None,
    Labels,
    Fields,
    Regex,
    /// A JSON schema written outside the studio (an imported file, the API): kept as is.
    Schema,
}

/// One row of the JSON fields editor: allowed values as typed, comma separated.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FieldRow {
    pub name: String,
    pub kind: FieldKind,
    pub allowed: String,
}

/// The output constraint being edited. Every kind keeps its entries, so switching the
/// control back and forth loses nothing; only the chosen kind is sent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OutputDraft {
    pub mode: OutputMode,
    pub labels: Vec<String>,
    pub fields: Vec<FieldRow>,
    pub pattern: String,
    pub schema: Option<Value>,
}

impl OutputDraft {
    pub fn from_constraint(c: Option<&OutputConstraint>) -> Self {
        let mut d = OutputDraft::default();
        match c {
            None => {}
            Some(OutputConstraint::Choice { labels }) => {
                d.mode = OutputMode::Labels;
                d.labels = labels.clone();
            }
            Some(OutputConstraint::JsonFields { fields }) => {
                d.mode = OutputMode::Fields;
                d.fields = fields
                    .iter()
                    .map(|f| FieldRow { name: f.name.clone(), kind: f.kind, allowed: f.allowed.join(", ") })
                    .collect();
            }
            Some(OutputConstraint::Regex { pattern }) => {
                d.mode = OutputMode::Regex;
                d.pattern = pattern.clone();
            }
            Some(OutputConstraint::JsonSchema { schema }) => {
                d.mode = OutputMode::Schema;
                d.schema = Some(schema.clone());
            }
        }
        d
    }

    /// The constraint of the chosen kind, as the server takes it.
    pub fn constraint(&self) -> Option<OutputConstraint> {
        match self.mode {
            OutputMode::None => None,
            OutputMode::Labels => Some(OutputConstraint::Choice { labels: self.labels.clone() }),
            OutputMode::Fields => Some(OutputConstraint::JsonFields {
                fields: self
                    .fields
                    .iter()
                    .map(|r| JsonField {
                        name: r.name.trim().to_string(),
                        kind: r.kind,
                        allowed: split_values(&r.allowed),
                    })
                    .collect(),
            }),
            OutputMode::Regex => Some(OutputConstraint::Regex { pattern: self.pattern.clone() }),
            OutputMode::Schema => self.schema.clone().map(|schema| OutputConstraint::JsonSchema { schema }),
        }
    }

    /// Why the constraint cannot be sent yet, at its field (the same checks the server
    /// makes; whether a regex compiles only the server says).
    pub fn problem(&self) -> Option<FieldError> {
        self.constraint()?.validate().err()
    }

    /// The schema the JSON fields make, pretty-printed, or why they make none.
    pub fn schema_preview(&self) -> Result<String, FieldError> {
        let c = OutputDraft { mode: OutputMode::Fields, ..self.clone() }.constraint();
        let schema = c.map(|c| c.json_schema()).transpose()?.flatten().unwrap_or(Value::Null);
        Ok(serde_json::to_string_pretty(&schema).unwrap_or_default())
    }

    /// Adds a label (trimmed); false when it is empty or already there.
    pub fn add_label(&mut self, label: &str) -> bool {
        let l = label.trim();
        if l.is_empty() || self.labels.iter().any(|x| x == l) {
            return false;
        }
        self.labels.push(l.to_string());
        true
    }
}

/// Allowed values as typed: comma separated, trimmed, empty ones left out.
pub fn split_values(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|v| !v.is_empty()).map(str::to_string).collect()
}

impl Default for Draft {
    fn default() -> Self {
        let spec = VersionSpec::default();
        Self {
            template: None,
            base_version: None,
            title: String::new(),
            mode: spec.mode,
            instruction: spec.instruction,
            examples: spec.examples,
            input_pattern: spec.input_pattern,
            format: spec.format,
            params: ParamText::default(),
            variables: BTreeMap::new(),
            output: OutputDraft::default(),
        }
    }
}

impl Draft {
    /// The version spec the server expects.
    pub fn spec(&self) -> DraftSpec {
        let (parameters, unparsed) = self.params.parse();
        let spec = VersionSpec {
            mode: self.mode,
            instruction: self.instruction.clone(),
            examples: self.examples.clone(),
            input_pattern: self.input_pattern.clone(),
            format: self.format.clone(),
            model: None,
            parameters,
            output: self.output.constraint(),
        };
        DraftSpec { spec, unparsed }
    }

    /// Switches between completion and chat mode. Chat answers may run over several lines,
    /// so the completion default of stopping at a line break goes (the chat template's end
    /// of turn stops them); and it comes back when switching back with no stop left.
    pub fn set_mode(&mut self, mode: PromptMode) {
        if self.mode == mode {
            return;
        }
        let default_stop = ParamText::default().stop;
        match mode {
            PromptMode::Chat if self.params.stop.trim() == default_stop => self.params.stop.clear(),
            PromptMode::Completion if self.params.stop.trim().is_empty() => self.params.stop = default_stop,
            _ => {}
        }
        self.mode = mode;
    }

    /// A draft of a saved version.
    pub fn from_version(template: &str, title: &str, version: &VersionInfo) -> Self {
        Self::from_spec(Some(template), title, Some(version.version), &version.spec)
    }

    /// A draft of `spec`, based on `version` of `template` when given.
    pub fn from_spec(template: Option<&str>, title: &str, version: Option<i64>, spec: &VersionSpec) -> Self {
        Self {
            template: template.map(str::to_string),
            base_version: version,
            title: title.to_string(),
            mode: spec.mode,
            instruction: spec.instruction.clone(),
            examples: spec.examples.clone(),
            input_pattern: spec.input_pattern.clone(),
            format: spec.format.clone(),
            params: ParamText::from_parameters(&spec.parameters),
            variables: BTreeMap::new(),
            output: OutputDraft::from_constraint(spec.output.as_ref()),
        }
    }

    /// Equal as a prompt: the values typed into the variables (the input of one run) do not
    /// make a draft "unsaved".
    pub fn same_content(&self, other: &Draft) -> bool {
        // Entries of a constraint kind not chosen are not content either.
        let strip = |d: &Draft| Draft {
            variables: BTreeMap::new(),
            output: OutputDraft::from_constraint(d.output.constraint().as_ref()),
            ..d.clone()
        };
        strip(self) == strip(other)
    }

    /// The spec the live preview renders: the draft's text, with default parameters
    /// (they do not change the prompt, and a half-typed one must not stop the preview),
    /// and its output constraint once it passes the browser's checks (the server then
    /// says whether a regex or schema compiles, beside its control).
    pub fn preview_spec(&self) -> VersionSpec {
        let output = self.output.constraint().filter(|_| self.output.problem().is_none());
        VersionSpec { parameters: Parameters::default(), output, ..self.spec().spec }
    }

    /// The `{{variables}}` the draft needs, in order of first appearance.
    pub fn variable_names(&self) -> Vec<String> {
        self.preview_spec().variables()
    }

    /// Why the draft cannot run yet, at the field to fix: a parameter, an empty prompt, or
    /// a variable with no value (the model would read a literal `{{name}}`).
    pub fn run_problem(&self) -> Option<FieldError> {
        if let Some(e) = self.params.problem() {
            return Some(e);
        }
        if let Some(e) = self.output.problem() {
            return Some(e);
        }
        if self.instruction.trim().is_empty() && self.examples.is_empty() && self.input_pattern.trim().is_empty() {
            return Some(FieldError::new(
                "instruction",
                "The prompt is empty: write an instruction or an input first.",
            ));
        }
        missing_variable(&self.variable_names(), &self.variables)
    }

    /// The local-storage key of this draft.
    pub fn storage_key(template: Option<&str>) -> String {
        match template {
            Some(t) => format!("studio.draft.{t}"),
            None => "studio.draft.new".into(),
        }
    }
}

/// The first of `names` with no value in `values`, as the error shown at its field.
pub fn missing_variable(names: &[String], values: &BTreeMap<String, String>) -> Option<FieldError> {
    let name = names.iter().find(|n| values.get(*n).is_none_or(|v| v.trim().is_empty()))?;
    Some(FieldError::new(
        format!("variables.{name}"),
        format!("Type a value for {{{{{name}}}}} first; without one the model would read the literal {{{{{name}}}}}."),
    ))
}

/// A template name suggested from its title: an ASCII slug (`Movie review: v2` →
/// `movie-review-v2`), or None for a title in Korean or Japanese (or with no letters),
/// where the caller numbers one (`template-3`).
pub fn suggest_name(title: &str) -> Option<String> {
    let cjk = title.chars().any(|c| {
        matches!(c as u32, 0x1100..=0x11FF | 0x3040..=0x30FF | 0x3130..=0x318F | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xFF66..=0xFF9F)
    });
    if cjk {
        return None;
    }
    let mut slug = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug: String = slug.chars().take(MAX_NAME_CHARS).collect();
    let slug = slug.trim_end_matches('-').to_string();
    Some(slug).filter(|s| !s.is_empty())
}

/// The language code of `text` by its script: `ko` for Hangul, `ja` for kana, `en` for
/// Latin letters only, else empty (mixed or other).
pub fn guess_language(text: &str) -> &'static str {
    let has = |lo: u32, hi: u32| text.chars().any(|c| (lo..=hi).contains(&(c as u32)));
    if has(0xAC00, 0xD7AF) || has(0x1100, 0x11FF) {
        "ko"
    } else if has(0x3040, 0x30FF) {
        "ja"
    } else if text.chars().any(|c| c.is_ascii_alphabetic()) && text.is_ascii() {
        "en"
    } else {
        ""
    }
}

/// Why `name` cannot name a template, in plain words (None: it can).
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("Give the template a name, e.g. movie-review.".into());
    }
    if api_types::template::validate_name(name).is_err() {
        return Some(format!(
            "Use only a-z, 0-9, '-' and '_', starting with a letter or digit, at most {MAX_NAME_CHARS} characters."
        ));
    }
    None
}

/// Stop sequences from the text box: one per line, with `\n`/`\t`/`\\` escapes.
pub fn stops(text: &str) -> Vec<String> {
    text.lines().filter(|l| !l.is_empty()).map(unescape).collect()
}

/// Shows invisible characters of separators and stops as escapes.
pub fn escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

pub fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

pub fn storage_get(key: &str) -> Option<String> {
    #[cfg(feature = "hydrate")]
    {
        web_sys::window()?.local_storage().ok()??.get_item(key).ok()?
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = key;
        None
    }
}

pub fn storage_set(key: &str, value: &str) {
    #[cfg(feature = "hydrate")]
    if let Some(s) = web_sys::window().and_then(|w| w.local_storage().ok().flatten()) {
        let _ = s.set_item(key, value);
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (key, value);
}

pub fn storage_remove(key: &str) {
    #[cfg(feature = "hydrate")]
    if let Some(s) = web_sys::window().and_then(|w| w.local_storage().ok().flatten()) {
        let _ = s.remove_item(key);
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = key;
}

/// Longest share parameter (characters of the `?draft=` value). Browsers and proxies
/// accept URLs of about 64 KB at most and often less; past this, "Share" says so instead of
/// making a link that may be cut.
pub const MAX_SHARE_CHARS: usize = 16_000;
/// Where the draft that a shared link replaced is kept, so opening a link loses nothing.
pub const BEFORE_SHARE_KEY: &str = "studio.draft.before-share";

/// The `?draft=` value of a share link: the draft's content (not which template it was
/// saved as, so it opens as a new draft) as URL-safe base64 of its JSON. Korean and
/// Japanese text cost 4 characters per syllable this way, against 9 percent-encoded.
pub fn share_param(d: &Draft) -> Result<String, String> {
    use base64::Engine as _;
    let shared = Draft { template: None, base_version: None, ..d.clone() };
    let json = serde_json::to_string(&shared).map_err(|e| e.to_string())?;
    let param = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.as_bytes());
    if param.len() > MAX_SHARE_CHARS {
        return Err(format!(
            "This draft is too long for a link ({} characters; a link holds {MAX_SHARE_CHARS}). Save it as a template and share its page instead.",
            param.len()
        ));
    }
    Ok(param)
}

/// The draft a share parameter holds; `None` for anything that is not one (a cut or
/// edited link opens the normal playground).
pub fn from_share_param(param: &str) -> Option<Draft> {
    use base64::Engine as _;
    if param.len() > MAX_SHARE_CHARS {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(param.trim()).ok()?;
    let d: Draft = serde_json::from_slice(&bytes).ok()?;
    Some(Draft { template: None, base_version: None, ..d })
}

/// Keeps `value` for the next page of this tab (session storage).
pub fn session_set(key: &str, value: &str) {
    #[cfg(feature = "hydrate")]
    if let Some(s) = web_sys::window().and_then(|w| w.session_storage().ok().flatten()) {
        let _ = s.set_item(key, value);
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (key, value);
}

/// What [`session_set`] kept under `key`, removed as it is read.
pub fn session_take(key: &str) -> Option<String> {
    #[cfg(feature = "hydrate")]
    {
        let s = web_sys::window()?.session_storage().ok()??;
        let v = s.get_item(key).ok()?;
        let _ = s.remove_item(key);
        v
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = key;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_mode_drops_the_line_break_stop_and_completion_brings_it_back() {
        let mut d = Draft::default();
        d.set_mode(PromptMode::Chat);
        assert_eq!(d.mode, PromptMode::Chat);
        assert_eq!(d.params.stop, "");
        assert_eq!(d.spec().spec.mode, PromptMode::Chat);
        assert!(d.spec().spec.parameters.stop.is_empty());
        d.set_mode(PromptMode::Completion);
        assert_eq!(d.params.stop, "\\n");
        d.params.stop = "END".into();
        d.set_mode(PromptMode::Chat);
        assert_eq!(d.params.stop, "END", "a stop the user chose is kept");
        let saved = Draft::from_spec(Some("t"), "T", Some(1), &d.spec().spec);
        assert_eq!(saved.mode, PromptMode::Chat);
    }

    #[test]
    fn escapes_round_trip_separators_and_cjk() {
        for s in ["\n\n", "문장: ", "a\\nb", "\t→", "入力：\n"] {
            assert_eq!(unescape(&escape(s)), s);
        }
        assert_eq!(stops("\\n\n###\n"), vec!["\n".to_string(), "###".to_string()]);
    }

    #[test]
    fn spec_sends_numbers_and_leaves_bad_text_for_the_server_to_name() {
        let mut d = Draft::default();
        d.params.temperature = "0.7".into();
        d.params.top_k = "abc".into();
        d.params.max_tokens = "1.5".into();
        d.params.seed = "42".into();
        d.params.top_p = "inf".into();
        let text = serde_json::to_string(&d.spec()).unwrap();
        assert!(text.contains(r#""temperature":0.7"#), "{text}");
        let s: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(s["parameters"]["temperature"], json!(0.7));
        assert_eq!(s["parameters"]["top_k"], json!("abc"));
        assert_eq!(s["parameters"]["max_tokens"], json!(1.5), "a number of the wrong type goes as written");
        assert_eq!(s["parameters"]["top_p"], json!(1.0), "no number at all: the default, as when empty");
        assert_eq!(s["parameters"]["seed"], json!(42));
        assert_eq!(s["parameters"]["stop"], json!(["\n"]));
        assert_eq!(s["input_pattern"], json!("{{input}}"));
        assert!(s.get("model").is_none());
        let w = d.params.as_written();
        assert_eq!(w["top_k"], json!("abc"));
        assert_eq!(w["temperature"], json!(0.7));
        assert_eq!(Draft::default().params.as_written()["temperature"], json!(0), "as written: an integer");
    }

    #[test]
    fn parameter_problems_are_named_once_in_plain_words() {
        let mut p = ParamText::default();
        assert_eq!(p.problem(), None);
        p.max_tokens = "100000".into();
        let e = p.problem().unwrap();
        assert_eq!(e.field, "parameters.max_tokens");
        assert_eq!(e.message, "Use a value from 1 to 4096 (you entered 100000).");
        p.max_tokens = "64".into();
        p.temperature = "abc".into();
        let e = p.problem().unwrap();
        assert_eq!((e.field.as_str(), e.message.as_str()), ("parameters.temperature", "Enter a number from 0 to 2."));
        p.temperature = "0.7".into();
        p.top_k = "1.5".into();
        assert_eq!(p.problem().unwrap().message, "Enter a whole number (0 or more).");
        p.top_k = "".into();
        assert_eq!(p.problem(), None, "empty means the default");
    }

    #[test]
    fn a_run_needs_every_variable_and_some_prompt() {
        let mut d = Draft::default();
        assert_eq!(d.run_problem().unwrap().field, "variables.input");
        d.input_pattern = "{{리뷰}} / {{stars}}".into();
        d.variables.insert("리뷰".into(), "좋았다".into());
        let e = d.run_problem().unwrap();
        assert_eq!(e.field, "variables.stars");
        assert!(e.message.contains("literal {{stars}}"), "{}", e.message);
        d.variables.insert("stars".into(), "5".into());
        assert_eq!(d.run_problem(), None);
        d.input_pattern = " ".into();
        assert_eq!(d.run_problem().unwrap().field, "instruction");
        d.params.max_tokens = "100000".into();
        assert_eq!(d.preview_spec().parameters, Parameters::default(), "the preview renders regardless");
        assert_eq!(d.run_problem().unwrap().field, "parameters.max_tokens");
    }

    #[test]
    fn names_are_suggested_from_titles() {
        assert_eq!(suggest_name("Movie review: v2 (beta)").as_deref(), Some("movie-review-v2-beta"));
        assert_eq!(suggest_name("영화 리뷰 감정 (e2e)"), None);
        assert_eq!(suggest_name("映画レビュー"), None);
        assert_eq!(suggest_name("!!!"), None);
        assert!(name_problem("").unwrap().starts_with("Give"));
        assert!(name_problem("영화").unwrap().contains("a-z, 0-9"));
        assert!(!name_problem("영화").unwrap().contains("got"));
        assert_eq!(name_problem("movie_review-2"), None);
        assert_eq!(guess_language("영화 리뷰 감정 (e2e)"), "ko");
        assert_eq!(guess_language("映画のレビュー"), "ja");
        assert_eq!(guess_language("Movie reviews"), "en");
    }

    #[test]
    fn a_saved_version_becomes_the_same_spec_again() {
        let version: VersionInfo = serde_json::from_value(json!({ "version": 3, "content_hash": "h", "note": "",
            "author": "local", "created_at": 0, "spec": {
            "instruction": "영화 리뷰의 감정을 분류하세요.",
            "examples": [{ "input": "최고의 영화", "output": "긍정" }],
            "input_pattern": "{{리뷰}}",
            "format": { "example_separator": "\n\n", "input_prefix": "리뷰: ", "io_separator": "\n", "output_prefix": "감정: " },
            "parameters": { "temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_tokens": 4, "repetition_penalty": 1.0, "stop": ["\n"] }
        }}))
        .unwrap();
        let d = Draft::from_version("movie", "Movie", &version);
        assert_eq!(d.base_version, Some(3));
        assert_eq!((d.params.temperature.as_str(), d.params.max_tokens.as_str()), ("0.0", "4"));
        let spec = d.spec();
        assert!(spec.unparsed.is_empty());
        assert_eq!(spec.spec, version.spec);
        assert_eq!(Draft::from_spec(Some("movie"), "Movie", Some(3), &spec.spec), d);
    }

    #[test]
    fn share_links_round_trip_korean_and_refuse_what_they_cannot_hold() {
        let mut d = Draft { template: Some("movie".into()), base_version: Some(3), ..Draft::default() };
        d.title = "영화 리뷰 감정".into();
        d.instruction = "리뷰의 감정을 긍정 또는 부정으로 판정하세요. 日本語も。".into();
        d.examples.push(Example { input: "연기가 훌륭했다".into(), output: "긍정".into() });
        d.variables.insert("input".into(), "지루했다 😴".into());
        let param = share_param(&d).unwrap();
        assert!(param.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{param}");
        let back = from_share_param(&param).unwrap();
        assert_eq!(back, Draft { template: None, base_version: None, ..d.clone() });
        assert!(from_share_param("not a draft!").is_none());
        assert!(from_share_param(&param[..param.len() / 2]).is_none(), "a cut link opens nothing");
        d.instruction = "가".repeat(MAX_SHARE_CHARS);
        let err = share_param(&d).unwrap_err();
        assert!(err.contains("too long") && err.contains(&MAX_SHARE_CHARS.to_string()), "{err}");
    }

    #[test]
    fn the_output_constraint_round_trips_and_keeps_other_kinds_entries() {
        let mut d = Draft {
            examples: vec![
                Example { input: "최고".into(), output: "긍정".into() },
                Example { input: "별로".into(), output: "부정 ".into() },
                Example { input: "좋다".into(), output: "긍정".into() },
            ],
            ..Draft::default()
        };
        assert_eq!(d.spec().spec.output, None);
        d.output.mode = OutputMode::Labels;
        assert_eq!(d.run_problem().unwrap().field, "output.labels", "no labels yet");
        assert_eq!(d.preview_spec().output, None, "the preview renders without it meanwhile");
        d.output.labels = OutputConstraint::labels_from_examples(&d.examples);
        assert!(!d.output.add_label(" 긍정 "));
        assert!(d.output.add_label("중립"));
        let labels = OutputConstraint::Choice { labels: vec!["긍정".into(), "부정".into(), "중립".into()] };
        assert_eq!(d.spec().spec.output.as_ref(), Some(&labels));
        assert_eq!(d.preview_spec().output.as_ref(), Some(&labels));

        d.output.mode = OutputMode::Fields;
        d.output.fields = vec![
            FieldRow { name: "label".into(), kind: FieldKind::String, allowed: "긍정, 부정,".into() },
            FieldRow { name: "stars".into(), kind: FieldKind::Integer, allowed: String::new() },
        ];
        let preview = d.output.schema_preview().unwrap();
        assert!(preview.contains("\"enum\": [\n") && preview.contains("\"additionalProperties\": false"), "{preview}");
        d.output.fields[1].allowed = "x".into();
        assert_eq!(d.output.schema_preview().unwrap_err().field, "output.fields[1].allowed[0]");
        assert_eq!(d.run_problem().unwrap().field, "output.fields[1].allowed[0]");

        d.output.mode = OutputMode::Regex;
        d.output.pattern = "[0-9]+".into();
        let spec = d.spec().spec;
        assert_eq!(spec.output, Some(OutputConstraint::Regex { pattern: "[0-9]+".into() }));
        let back = Draft::from_spec(None, "", None, &spec);
        assert_eq!(back.output.mode, OutputMode::Regex);
        assert_eq!(back.spec().spec, spec);
        let mut other = back.clone();
        other.output.labels = vec!["x".into()];
        assert!(other.same_content(&back), "entries of a kind not chosen are not content");
        d.output.mode = OutputMode::Labels;
        assert_eq!(d.output.labels.len(), 3, "switching back finds the labels");

        // A draft kept before constraints existed still loads.
        let old: Draft = serde_json::from_str(r#"{"title": "x", "instruction": "i"}"#).unwrap();
        assert_eq!(old.output, OutputDraft::default());
    }
}
