//! A version's output constraint as the engine enforces it ([`constraint_spec`]) and as an
//! eval checks an output against it ([`meets`]).
//!
//! The prompt ends with the output prefix trimmed (`감정:`), so the model writes the
//! trimmed whitespace itself, as in the examples (`감정: 긍정`). The constraint covers the
//! generated text only, and that text starts with the trimmed part: a label or regex is
//! enforced after it. A JSON schema needs nothing added: llguidance's JSON grammar takes
//! whitespace before the value.

use inference::ConstraintSpec;
use serde_json::Value;

use super::spec::{OutputConstraint, VersionSpec};

/// What the output prefix loses when the prompt is rendered: the text the model writes
/// before the answer.
pub fn prefix_tail(spec: &VersionSpec) -> &str {
    if spec.mode == super::spec::PromptMode::Chat {
        // The assistant's turn starts right after the chat template's generation prompt.
        return "";
    }
    let p = &spec.format.output_prefix;
    &p[p.trim_end().len()..]
}

/// The engine's constraint for `spec`'s output, and the field an error about it names.
/// None when the version has no constraint.
pub fn constraint_spec(spec: &VersionSpec) -> Result<Option<(&'static str, ConstraintSpec)>, super::FieldError> {
    let Some(output) = &spec.output else { return Ok(None) };
    output.validate()?;
    let tail = prefix_tail(spec);
    let engine = match output {
        OutputConstraint::Choice { labels } => {
            ConstraintSpec::Choice(labels.iter().map(|l| format!("{tail}{l}")).collect())
        }
        OutputConstraint::Regex { pattern } => ConstraintSpec::Regex(format!("{}(?:{pattern})", regex::escape(tail))),
        OutputConstraint::JsonSchema { .. } | OutputConstraint::JsonFields { .. } => {
            ConstraintSpec::JsonSchema(output.json_schema()?.expect("a JSON constraint has a schema"))
        }
    };
    Ok(Some((output.field(), engine)))
}

/// Whether `text` (one generated output) meets `spec`'s constraint; None without one.
/// Labels: the trimmed output is one of them. Regex: the output after the prefix's
/// whitespace matches whole. JSON: it parses and fits the schema (see [`fits`]).
pub fn meets(spec: &VersionSpec, text: &str) -> Option<bool> {
    let output = spec.output.as_ref()?;
    Some(match output {
        OutputConstraint::Choice { labels } => labels.iter().any(|l| l.trim() == text.trim()),
        OutputConstraint::Regex { pattern } => {
            let body = text.strip_prefix(prefix_tail(spec)).unwrap_or(text);
            regex::Regex::new(&format!("^(?:{pattern})$")).is_ok_and(|r| r.is_match(body))
        }
        OutputConstraint::JsonSchema { .. } | OutputConstraint::JsonFields { .. } => {
            match (output.json_schema(), serde_json::from_str::<Value>(text.trim())) {
                (Ok(Some(schema)), Ok(value)) => fits(&schema, &value),
                _ => false,
            }
        }
    })
}

/// Most nesting [`fits`] follows; deeper values do not fit (a bound on a user-fed walk).
pub const MAX_SCHEMA_DEPTH: usize = 32;

/// Whether `value` fits `schema`, for the keywords a template's schema uses: `type`,
/// `enum`, `const`, `properties`, `required`, `additionalProperties`, `items`,
/// `minItems`/`maxItems`, `minLength`/`maxLength`, `minimum`/`maximum`, `anyOf`, `oneOf`
/// (as any of), `allOf`. Other keywords are not checked (the decoder enforced them).
pub fn fits(schema: &Value, value: &Value) -> bool {
    fits_at(schema, value, 0)
}

fn fits_at(schema: &Value, value: &Value, depth: usize) -> bool {
    if depth > MAX_SCHEMA_DEPTH {
        return false;
    }
    let Some(s) = schema.as_object() else { return schema.as_bool().unwrap_or(true) };
    let type_ok = |t: &str| match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.as_f64().is_some_and(|f| f.fract() == 0.0),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => true,
    };
    match s.get("type") {
        Some(Value::String(t)) if !type_ok(t) => return false,
        Some(Value::Array(ts)) if !ts.iter().filter_map(Value::as_str).any(type_ok) => return false,
        _ => {}
    }
    if s.get("enum").and_then(Value::as_array).is_some_and(|e| !e.contains(value)) {
        return false;
    }
    if s.get("const").is_some_and(|c| c != value) {
        return false;
    }
    let sub = |k: &str| s.get(k).and_then(Value::as_array);
    if sub("allOf").is_some_and(|all| !all.iter().all(|x| fits_at(x, value, depth + 1))) {
        return false;
    }
    for k in ["anyOf", "oneOf"] {
        if sub(k).is_some_and(|any| !any.iter().any(|x| fits_at(x, value, depth + 1))) {
            return false;
        }
    }
    let num = |k: &str| s.get(k).and_then(Value::as_f64);
    if let Some(x) = value.as_f64() {
        if num("minimum").is_some_and(|m| x < m) || num("maximum").is_some_and(|m| x > m) {
            return false;
        }
    }
    if let Some(text) = value.as_str() {
        let n = text.chars().count() as f64;
        if num("minLength").is_some_and(|m| n < m) || num("maxLength").is_some_and(|m| n > m) {
            return false;
        }
    }
    if let Some(items) = value.as_array() {
        let n = items.len() as f64;
        if num("minItems").is_some_and(|m| n < m) || num("maxItems").is_some_and(|m| n > m) {
            return false;
        }
        if let Some(item) = s.get("items") {
            if !items.iter().all(|v| fits_at(item, v, depth + 1)) {
                return false;
            }
        }
    }
    if let Some(obj) = value.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        if sub("required").is_some_and(|r| r.iter().filter_map(Value::as_str).any(|k| !obj.contains_key(k))) {
            return false;
        }
        for (k, v) in obj {
            let ok = match props.and_then(|p| p.get(k)) {
                Some(p) => fits_at(p, v, depth + 1),
                None => match s.get("additionalProperties") {
                    Some(extra) => fits_at(extra, v, depth + 1),
                    None => true,
                },
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::{Format, JsonField};
    use serde_json::json;

    fn spec(output: OutputConstraint) -> VersionSpec {
        VersionSpec {
            format: Format { output_prefix: "감정: ".into(), ..Format::default() },
            output: Some(output),
            ..VersionSpec::default()
        }
    }

    #[test]
    fn labels_and_regexes_start_after_the_prefix_whitespace() {
        let s = spec(OutputConstraint::Choice { labels: vec!["긍정".into(), "부정".into()] });
        let (field, c) = constraint_spec(&s).unwrap().unwrap();
        assert_eq!(field, "output.labels");
        assert_eq!(c, ConstraintSpec::Choice(vec![" 긍정".into(), " 부정".into()]));
        let s = spec(OutputConstraint::Regex { pattern: "[0-9]+|n/a".into() });
        assert_eq!(constraint_spec(&s).unwrap().unwrap().1, ConstraintSpec::Regex(" (?:[0-9]+|n/a)".into()));
        let no_space = VersionSpec { format: Format { output_prefix: "A:".into(), ..Format::default() }, ..s };
        assert_eq!(constraint_spec(&no_space).unwrap().unwrap().1, ConstraintSpec::Regex("(?:[0-9]+|n/a)".into()));
        assert!(constraint_spec(&VersionSpec::default()).unwrap().is_none());
        let bad = spec(OutputConstraint::Choice { labels: vec![] });
        assert_eq!(constraint_spec(&bad).unwrap_err().field, "output.labels");
    }

    #[test]
    fn outputs_are_checked_against_the_constraint() {
        let labels = spec(OutputConstraint::Choice { labels: vec!["긍정".into(), "부정".into()] });
        assert_eq!(meets(&labels, " 긍정"), Some(true));
        assert_eq!(meets(&labels, " 긍정적"), Some(false));
        let regex = spec(OutputConstraint::Regex { pattern: "[0-9]{3}".into() });
        assert_eq!(meets(&regex, " 123"), Some(true));
        assert_eq!(meets(&regex, " 1234"), Some(false));
        let fields = spec(OutputConstraint::JsonFields {
            fields: vec![
                JsonField {
                    name: "label".into(),
                    kind: crate::templates::FieldKind::String,
                    allowed: vec!["긍정".into()],
                },
                JsonField { name: "stars".into(), kind: crate::templates::FieldKind::Integer, allowed: vec![] },
            ],
        });
        assert_eq!(meets(&fields, r#" {"label": "긍정", "stars": 4}"#), Some(true));
        assert_eq!(meets(&fields, r#"{"label": "부정", "stars": 4}"#), Some(false), "not an allowed value");
        assert_eq!(meets(&fields, r#"{"label": "긍정"}"#), Some(false), "a required field is missing");
        assert_eq!(meets(&fields, r#"{"label": "긍정", "stars": 4.5}"#), Some(false), "not an integer");
        assert_eq!(meets(&fields, r#"{"label": "긍정", "stars": 4, "x": 1}"#), Some(false), "no other fields");
        assert_eq!(meets(&fields, r#"{"label": "긍정", "#), Some(false), "cut off");
        assert_eq!(meets(&VersionSpec::default(), "anything"), None);
    }

    #[test]
    fn schemas_check_nested_values() {
        let schema = json!({
            "type": "object",
            "properties": {
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2},
                "n": {"anyOf": [{"type": "null"}, {"type": "number", "minimum": 0}]},
            },
        });
        assert!(fits(&schema, &json!({"tags": ["a", "bcd"], "n": null})));
        assert!(fits(&schema, &json!({"n": 3, "extra": true})));
        assert!(!fits(&schema, &json!({"tags": ["abcd"]})));
        assert!(!fits(&schema, &json!({"tags": ["a", "b", "c"]})));
        assert!(!fits(&schema, &json!({"n": -1})));
        assert!(!fits(&schema, &json!([1])));
        let mut deep = json!({"type": "string"});
        let mut value = json!("x");
        for _ in 0..=MAX_SCHEMA_DEPTH {
            deep = json!({"type": "array", "items": deep});
            value = json!([value]);
        }
        assert!(!fits(&deep, &value), "past the depth bound nothing fits");
    }
}
