//! The `prompts/` file format (TOML): one template's metadata and one version.

use super::spec::{
    default_pattern, limit, Example, Format, OutputConstraint, Parameters, PromptMode, TemplateMeta, VersionSpec,
    MAX_NOTE_CHARS,
};
use serde::{Deserialize, Serialize};

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
    /// `"chat"`: the instruction is the system prompt and the examples are turns, rendered
    /// with the model's chat template. Left out for completion.
    #[serde(default, skip_serializing_if = "PromptMode::is_completion")]
    pub mode: PromptMode,
    #[serde(default)]
    pub instruction: String,
    #[serde(default = "default_pattern")]
    pub input_pattern: String,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub parameters: Parameters,
    /// The `[output]` table: `type = "choice"` with `labels`, `"json_schema"` with a
    /// `schema` table, `"json_fields"` with `[[output.fields]]`, or `"regex"` with `pattern`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputConstraint>,
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
            mode: self.mode,
            instruction: self.instruction.clone(),
            examples: self.examples.clone(),
            input_pattern: self.input_pattern.clone(),
            format: self.format.clone(),
            model: self.model.clone(),
            parameters: self.parameters.clone(),
            output: self.output.clone(),
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
            mode: spec.mode,
            instruction: spec.instruction.clone(),
            input_pattern: spec.input_pattern.clone(),
            format: spec.format.clone(),
            parameters: spec.parameters.clone(),
            output: spec.output.clone(),
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
    use crate::templates::{FieldKind, JsonField};

    const HEAD: &str =
        "name = \"gamjeong\"\ninput_pattern = \"{{리뷰}}\"\n\n[[examples]]\ninput = \"최고\"\noutput = \"긍정\"\n";

    fn round_trip(file: &TemplateFile) -> TemplateFile {
        let text = file.to_toml();
        TemplateFile::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn output_constraints_round_trip_through_the_output_table() {
        let text = format!("{HEAD}\n[output]\ntype = \"choice\"\nlabels = [\"긍정\", \"부정\"]\n");
        let file = TemplateFile::parse(&text).unwrap();
        let labels = OutputConstraint::Choice { labels: vec!["긍정".into(), "부정".into()] };
        assert_eq!(file.spec().output, Some(labels));
        assert_eq!(round_trip(&file), file);
        assert!(file.to_toml().contains("[output]"), "{}", file.to_toml());

        let fields = OutputConstraint::JsonFields {
            fields: vec![
                JsonField { name: "label".into(), kind: FieldKind::String, allowed: vec!["긍정".into()] },
                JsonField { name: "score".into(), kind: FieldKind::Number, allowed: vec![] },
            ],
        };
        let schema = OutputConstraint::JsonSchema {
            schema: serde_json::json!({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}),
        };
        let regex = OutputConstraint::Regex { pattern: "[0-9]{3}-[0-9]{4}".into() };
        for output in [fields, schema, regex] {
            let mut file = file.clone();
            file.output = Some(output.clone());
            let back = round_trip(&file);
            assert_eq!(back.spec().output, Some(output));
            assert_eq!(back.spec().content_hash(), file.spec().content_hash());
        }

        // No table, no constraint, and nothing written for it.
        let plain = TemplateFile::parse(HEAD).unwrap();
        assert_eq!(plain.output, None);
        assert!(!plain.to_toml().contains("output]"));
    }

    #[test]
    fn a_bad_constraint_in_a_file_names_its_line_and_field() {
        let text = format!("{HEAD}\n[output]\ntype = \"choice\"\nlabels = [\"긍정\", \" \"]\n");
        let e = TemplateFile::parse(&text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("output.labels[1]"));
        assert_eq!(e.line, Some(10));
        let e = TemplateFile::parse(&format!("{HEAD}\n[output]\ntype = \"grammar\"\n")).unwrap_err();
        assert!(e.message.contains("grammar"), "{e}");
    }
}
