//! The playground's editable state: a template version as typed (numbers as text), kept
//! in the browser's local storage so nothing typed is lost on a reload or an error, and
//! converted to and from the API's [`VersionSpec`] here, in one place.

use std::collections::BTreeMap;
use std::str::FromStr;

use api_types::template::{Example, Format, Parameters, VersionSpec};
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
    pub instruction: String,
    pub examples: Vec<Example>,
    pub input_pattern: String,
    pub format: Format,
    pub params: ParamText,
    pub variables: BTreeMap<String, String>,
}

impl Default for Draft {
    fn default() -> Self {
        let spec = VersionSpec::default();
        Self {
            template: None,
            base_version: None,
            title: String::new(),
            instruction: spec.instruction,
            examples: spec.examples,
            input_pattern: spec.input_pattern,
            format: spec.format,
            params: ParamText::default(),
            variables: BTreeMap::new(),
        }
    }
}

impl Draft {
    /// The version spec the server expects.
    pub fn spec(&self) -> DraftSpec {
        let (parameters, unparsed) = self.params.parse();
        let spec = VersionSpec {
            instruction: self.instruction.clone(),
            examples: self.examples.clone(),
            input_pattern: self.input_pattern.clone(),
            format: self.format.clone(),
            model: None,
            parameters,
        };
        DraftSpec { spec, unparsed }
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
            instruction: spec.instruction.clone(),
            examples: spec.examples.clone(),
            input_pattern: spec.input_pattern.clone(),
            format: spec.format.clone(),
            params: ParamText::from_parameters(&spec.parameters),
            variables: BTreeMap::new(),
        }
    }

    /// Equal as a prompt: the values typed into the variables (the input of one run) do not
    /// make a draft "unsaved".
    pub fn same_content(&self, other: &Draft) -> bool {
        let strip = |d: &Draft| Draft { variables: BTreeMap::new(), ..d.clone() };
        strip(self) == strip(other)
    }

    /// The local-storage key of this draft.
    pub fn storage_key(template: Option<&str>) -> String {
        match template {
            Some(t) => format!("studio.draft.{t}"),
            None => "studio.draft.new".into(),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
