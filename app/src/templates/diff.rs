//! Field-level diff of two versions.

use std::collections::{BTreeMap, BTreeSet};

use super::spec::VersionSpec;
use serde_json::{json, Value};

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
