//! Field-level diff of two versions.
//!
//! Texts are diffed by word ([`diff_tokens`]): a changed Korean word shows as the old word
//! and the new word, never as interleaved syllables ("긍부정"). Scripts written without
//! spaces (Japanese, Chinese, Thai) are split into grapheme clusters instead.
//!
//! Bounded: a field whose old and new texts together exceed [`CHAR_DIFF_MAX_CHARS`]
//! characters is diffed line by line (its ops marked `granularity: line`, which the studio
//! shows as "too long to diff word by word"), and the whole diff searches for at
//! most [`DIFF_TIME_LIMIT`]: past it, each remaining field still gets a correct diff (its
//! ops rebuild both texts) but not necessarily the smallest one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use api_types::templates::{
    ChangeKind, DiffGranularity, ExampleChange, ExampleChangeKind, FieldOps, Op, TextChange, TextOp, ValueChange,
    VersionDiff,
};
use serde_json::Value;

use super::spec::VersionSpec;

/// Most characters (old + new) of one field diffed word by word; longer fields are diffed
/// by line.
pub const CHAR_DIFF_MAX_CHARS: usize = 8_000;
/// Longest the whole diff searches for a minimal edit script before settling for a coarser one.
pub const DIFF_TIME_LIMIT: Duration = Duration::from_millis(200);

/// Whether a character belongs to a script written without spaces between words, where a
/// "word" run would be a whole sentence: those are diffed grapheme by grapheme.
fn unspaced_script(c: char) -> bool {
    matches!(c as u32,
        0x0E00..=0x0EFF      // Thai, Lao
        | 0x1000..=0x109F    // Myanmar
        | 0x1780..=0x17FF    // Khmer
        | 0x3040..=0x30FF    // Hiragana, Katakana
        | 0x31F0..=0x31FF    // Katakana phonetic extensions
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0xFF66..=0xFF9F    // halfwidth Katakana
        | 0x20000..=0x3FFFF) // CJK extensions B and later
}

#[derive(Clone, Copy, PartialEq)]
enum TokenKind {
    Space,
    Word,
    Single,
}

/// Splits a text into diff tokens that concatenate back to it: runs of whitespace, runs of
/// letters and digits of spaced scripts (Latin, Hangul, Cyrillic…: one word), and single
/// grapheme clusters for everything else (punctuation, emoji, and scripts without spaces).
pub fn diff_tokens(text: &str) -> Vec<&str> {
    use unicode_segmentation::UnicodeSegmentation;
    let mut tokens: Vec<&str> = Vec::new();
    let (mut start, mut kind) = (0usize, None::<TokenKind>);
    for (at, g) in text.grapheme_indices(true) {
        let first = g.chars().next().unwrap_or(' ');
        let k = if g.chars().all(char::is_whitespace) {
            TokenKind::Space
        } else if (first.is_alphanumeric() || first == '_') && !unspaced_script(first) {
            TokenKind::Word
        } else {
            TokenKind::Single
        };
        if kind.is_some() && (kind != Some(k) || k == TokenKind::Single) {
            tokens.push(&text[start..at]);
            start = at;
        }
        kind = Some(k);
    }
    if start < text.len() {
        tokens.push(&text[start..]);
    }
    tokens
}

/// Diff of two texts, runs of the same kind merged: by word when the field is short enough,
/// else by line; searching until `deadline`.
fn text_ops(old: &str, new: &str, deadline: Instant) -> (Vec<TextOp>, DiffGranularity) {
    use similar::{ChangeTag, TextDiff};
    let granularity = if old.chars().count() + new.chars().count() <= CHAR_DIFF_MAX_CHARS {
        DiffGranularity::Word
    } else {
        DiffGranularity::Line
    };
    let mut config = TextDiff::configure();
    config.algorithm(similar::Algorithm::Patience).deadline(deadline);
    let (old_tokens, new_tokens);
    let diff = match granularity {
        DiffGranularity::Line => config.diff_lines(old, new),
        DiffGranularity::Word | DiffGranularity::Char => {
            (old_tokens, new_tokens) = (diff_tokens(old), diff_tokens(new));
            config.diff_slices(&old_tokens, &new_tokens)
        }
    };
    let mut ops: Vec<TextOp> = Vec::new();
    for change in diff.iter_all_changes() {
        let op = match change.tag() {
            ChangeTag::Equal => Op::Equal,
            ChangeTag::Delete => Op::Delete,
            ChangeTag::Insert => Op::Insert,
        };
        match ops.last_mut() {
            Some(last) if last.op == op => last.text.push_str(change.value()),
            _ => ops.push(TextOp { op, text: change.value().to_string() }),
        }
    }
    (ops, granularity)
}

/// Field-level diff of two versions: text diffs (character level, merged runs) for the
/// instruction, the input pattern and each example; old → new for format and parameters.
pub fn diff(old: &VersionSpec, new: &VersionSpec) -> VersionDiff {
    diff_within(old, new, DIFF_TIME_LIMIT)
}

/// [`diff`] with a given search time.
pub fn diff_within(old: &VersionSpec, new: &VersionSpec, limit: Duration) -> VersionDiff {
    let deadline = Instant::now() + limit;
    let mut changes: Vec<TextChange> = Vec::new();
    let mut text = |field: &str, a: &str, b: &str| {
        if a != b {
            let (ops, granularity) = text_ops(a, b, deadline);
            changes.push(TextChange {
                field: field.to_string(),
                kind: ChangeKind::Text,
                old: a.to_string(),
                new: b.to_string(),
                ops,
                granularity,
            });
        }
    };
    text("instruction", &old.instruction, &new.instruction);
    text("input_pattern", &old.input_pattern, &new.input_pattern);
    let n = old.examples.len().max(new.examples.len());
    let mut example_changes = Vec::new();
    for i in 0..n {
        let (a, b) = (old.examples.get(i), new.examples.get(i));
        let change = match (a, b) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(_), Some(_)) => ExampleChangeKind::Modified,
            (Some(_), None) => ExampleChangeKind::Removed,
            (None, Some(_)) => ExampleChangeKind::Added,
            (None, None) => continue,
        };
        let fields = match (a, b) {
            (Some(a), Some(b)) => {
                let mut fields = Vec::new();
                for (field, x, y) in [("input", &a.input, &b.input), ("output", &a.output, &b.output)] {
                    if x != y {
                        let (ops, granularity) = text_ops(x, y, deadline);
                        fields.push(FieldOps { field: field.to_string(), ops, granularity });
                    }
                }
                Some(fields)
            }
            _ => None,
        };
        example_changes.push(ExampleChange { index: i, change, old: a.cloned(), new: b.cloned(), fields });
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
                values.push(ValueChange { field: format!("{group}.{k}"), old: va, new: vb });
            }
        }
    }
    if old.mode != new.mode {
        let json = |m: &super::spec::PromptMode| serde_json::to_value(m).unwrap_or_default();
        values.push(ValueChange { field: "mode".into(), old: json(&old.mode), new: json(&new.mode) });
    }
    if old.model != new.model {
        values.push(ValueChange {
            field: "model".into(),
            old: old.model.clone().into(),
            new: new.model.clone().into(),
        });
    }
    if old.output != new.output {
        let json = |o: &Option<super::spec::OutputConstraint>| serde_json::to_value(o).unwrap_or_default();
        values.push(ValueChange { field: "output".into(), old: json(&old.output), new: json(&new.output) });
    }
    let unchanged = changes.is_empty() && example_changes.is_empty() && values.is_empty();
    VersionDiff { text: changes, examples: example_changes, values, unchanged, from: None, to: None }
}
