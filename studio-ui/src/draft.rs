//! The playground's editable state: the JSON shape of a template version (`VersionSpec` on
//! the server, which validates and renders it), kept in the browser's local storage so
//! nothing typed is lost on a reload or an error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub input: String,
    pub output: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Format {
    pub example_separator: String,
    pub input_prefix: String,
    pub io_separator: String,
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
        Self {
            template: None,
            base_version: None,
            title: String::new(),
            instruction: String::new(),
            examples: Vec::new(),
            input_pattern: "{{input}}".into(),
            format: Format::default(),
            params: ParamText::default(),
            variables: BTreeMap::new(),
        }
    }
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

impl Draft {
    /// The version spec the server expects (`VersionSpec`).
    pub fn spec(&self) -> Value {
        let p = &self.params;
        let mut parameters = json!({
            "temperature": num(&p.temperature),
            "top_p": num(&p.top_p),
            "top_k": num(&p.top_k),
            "max_tokens": num(&p.max_tokens),
            "repetition_penalty": num(&p.repetition_penalty),
            "stop": stops(&p.stop),
        });
        if let Value::Object(m) = &mut parameters {
            m.retain(|_, v| !v.is_null());
            let seed = num(&p.seed);
            if !seed.is_null() {
                m.insert("seed".into(), seed);
            }
        }
        json!({
            "instruction": self.instruction,
            "examples": self.examples,
            "input_pattern": self.input_pattern,
            "format": self.format,
            "parameters": parameters,
        })
    }

    /// A draft from a saved version (`VersionInfo` JSON).
    pub fn from_version(template: &str, title: &str, version: &Value) -> Self {
        let spec = &version["spec"];
        let p = &spec["parameters"];
        let numtext = |v: &Value| match v {
            Value::Null => String::new(),
            Value::Number(n) => n.to_string(),
            other => other.as_str().unwrap_or_default().to_string(),
        };
        let stop = p["stop"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str()).map(escape).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        Self {
            template: Some(template.to_string()),
            base_version: version["version"].as_i64(),
            title: title.to_string(),
            instruction: spec["instruction"].as_str().unwrap_or_default().to_string(),
            examples: serde_json::from_value(spec["examples"].clone()).unwrap_or_default(),
            input_pattern: spec["input_pattern"].as_str().unwrap_or_default().to_string(),
            format: serde_json::from_value(spec["format"].clone()).unwrap_or_default(),
            params: ParamText {
                temperature: numtext(&p["temperature"]),
                top_p: numtext(&p["top_p"]),
                top_k: numtext(&p["top_k"]),
                max_tokens: numtext(&p["max_tokens"]),
                repetition_penalty: numtext(&p["repetition_penalty"]),
                stop,
                seed: numtext(&p["seed"]),
            },
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
        d.params.seed = "42".into();
        let s = d.spec();
        assert_eq!(s["parameters"]["temperature"], json!(0.7));
        assert_eq!(s["parameters"]["top_k"], json!("abc"));
        assert_eq!(s["parameters"]["seed"], json!(42));
        assert_eq!(s["parameters"]["stop"], json!(["\n"]));
    }

    #[test]
    fn a_saved_version_becomes_the_same_spec_again() {
        let version = json!({ "version": 3, "spec": {
            "instruction": "영화 리뷰의 감정을 분류하세요.",
            "examples": [{ "input": "최고의 영화", "output": "긍정" }],
            "input_pattern": "{{리뷰}}",
            "format": { "example_separator": "\n\n", "input_prefix": "리뷰: ", "io_separator": "\n", "output_prefix": "감정: " },
            "parameters": { "temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_tokens": 4, "repetition_penalty": 1.0, "stop": ["\n"] }
        }});
        let d = Draft::from_version("movie", "Movie", &version);
        assert_eq!(d.base_version, Some(3));
        let spec = d.spec();
        assert_eq!(spec["examples"], version["spec"]["examples"]);
        assert_eq!(spec["format"], version["spec"]["format"]);
        assert_eq!(spec["parameters"]["stop"], json!(["\n"]));
        assert_eq!(spec["parameters"]["max_tokens"], json!(4));
    }
}
