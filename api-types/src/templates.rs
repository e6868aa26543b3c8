//! `/api/templates/...` and `/api/render`: templates, their immutable versions, labels,
//! diffs, rendering, run history and import. The row types are what the store returns and
//! the API sends as they are.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::template::{Example, TemplateMeta, VersionSpec};

/// A template: metadata, where it came from, its labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateInfo {
    pub name: String,
    pub title: String,
    pub description: String,
    pub tags: Vec<String>,
    pub language: String,
    /// `library` (from prompts/) or `user`.
    pub source: String,
    pub latest_version: i64,
    pub labels: BTreeMap<String, i64>,
    /// `production` moves only to a version that evals at least as well (see the eval gate).
    pub eval_gate: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl TemplateInfo {
    pub fn meta(&self) -> TemplateMeta {
        TemplateMeta {
            name: self.name.clone(),
            title: self.title.clone(),
            description: self.description.clone(),
            tags: self.tags.clone(),
            language: self.language.clone(),
        }
    }

    /// The title, or the name when the template has none.
    pub fn display_title(&self) -> &str {
        if self.title.is_empty() {
            &self.name
        } else {
            &self.title
        }
    }

    /// The labels that point at `version`.
    pub fn labels_of(&self, version: i64) -> Vec<String> {
        self.labels.iter().filter(|(_, &v)| v == version).map(|(l, _)| l.clone()).collect()
    }
}

/// One immutable version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: i64,
    pub spec: VersionSpec,
    pub content_hash: String,
    pub note: String,
    pub author: String,
    pub created_at: i64,
}

/// One move of a label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelEvent {
    pub label: String,
    pub from_version: Option<i64>,
    pub to_version: i64,
    pub actor: String,
    pub at: i64,
}

/// One playground / template-endpoint run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Run {
    pub id: i64,
    pub template: Option<String>,
    pub version: Option<i64>,
    pub variables: BTreeMap<String, String>,
    pub prompt: String,
    /// The sampling parameters the run used.
    pub parameters: Value,
    pub output: String,
    pub finish_reason: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    /// `api` (template endpoint) or `studio`.
    pub source: String,
    pub created_at: i64,
}

/// What importing a template file did (`POST /api/templates/import`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportOutcome {
    pub name: String,
    pub version: i64,
    pub created_template: bool,
    /// The file's content equals the latest version: nothing was written.
    pub unchanged: bool,
}

/// A template for the library view: metadata, labels and a summary of its latest version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateSummary {
    pub template: TemplateInfo,
    pub variables: Vec<String>,
    pub example_count: usize,
    /// The first example, if any.
    pub example: Option<Example>,
    pub instruction: String,
    pub latest_note: String,
}

/// `GET /api/templates`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateList {
    pub templates: Vec<TemplateSummary>,
    pub count: usize,
}

/// `POST /api/templates`. `S` is the spec as sent: [`VersionSpec`] (what the server reads),
/// or a client's own form of it that serializes the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "S: Deserialize<'de> + Default"))]
pub struct CreateTemplate<S = VersionSpec> {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub language: String,
    #[serde(default)]
    pub spec: S,
    #[serde(default)]
    pub note: String,
}

/// A new template and its first version (`201` of `POST /api/templates`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedTemplate {
    pub template: TemplateInfo,
    pub version: VersionInfo,
}

/// `GET /api/templates/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateDetail {
    pub template: TemplateInfo,
    pub latest: VersionInfo,
    pub variables: Vec<String>,
}

/// `GET /api/templates/{name}/footprint` and the answer of `DELETE /api/templates/{name}`:
/// everything that belongs to a template, which deleting it removes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateFootprint {
    pub name: String,
    pub versions: i64,
    pub test_cases: i64,
    pub eval_runs: i64,
    /// Calls logged from the API and the playground.
    pub runs: i64,
    /// Shipped in the template library (`prompts/`): once deleted, it is not imported again
    /// at the next start unless the server starts with `--restore-library`.
    pub shipped: bool,
}

/// `PATCH /api/templates/{name}`: the fields given change, the others stay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The production eval gate (see docs/evals-api.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_gate: Option<bool>,
}

/// The template after `PATCH /api/templates/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdatedTemplate {
    pub template: TemplateInfo,
}

/// `GET /api/templates/{name}/versions`, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionList {
    pub template: TemplateInfo,
    pub versions: Vec<VersionInfo>,
}

/// `POST /api/templates/{name}/versions` (`S` as in [`CreateTemplate`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVersion<S = VersionSpec> {
    pub spec: S,
    #[serde(default)]
    pub note: String,
}

/// The saved version (`201` of `POST /api/templates/{name}/versions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedVersion {
    pub version: VersionInfo,
}

/// `GET /api/templates/{name}/versions/{ref}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionDetail {
    pub template: String,
    pub version: VersionInfo,
    /// The labels pointing at this version.
    pub labels: Vec<String>,
    pub variables: Vec<String>,
}

/// `GET /api/templates/{name}/diff?from=&to=`: a field-level diff of two versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionDiff {
    /// Character-level diffs of the instruction and the input pattern.
    pub text: Vec<TextChange>,
    pub examples: Vec<ExampleChange>,
    /// Old → new of the format, the parameters and the model.
    pub values: Vec<ValueChange>,
    pub unchanged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<VersionStamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<VersionStamp>,
}

/// Which version a side of a diff is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionStamp {
    pub version: i64,
    pub note: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Text,
}

/// A text field that changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextChange {
    pub field: String,
    pub kind: ChangeKind,
    pub old: String,
    pub new: String,
    pub ops: Vec<TextOp>,
    /// How finely `ops` split the text; absent means `char`.
    #[serde(default, skip_serializing_if = "DiffGranularity::is_char")]
    pub granularity: DiffGranularity,
}

/// How finely a text diff's ops split the text. `word`: words of spaced scripts (Korean,
/// Latin) and grapheme clusters of scripts without spaces (Japanese, Chinese), which is what
/// the server sends for short fields. `char`: character runs (what an absent field meant
/// before word diffs). `line`: whole lines, for texts too long to diff word by word (the
/// server's bound: over 8,000 characters old + new in one field; see `templates::diff`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffGranularity {
    #[default]
    Char,
    Word,
    Line,
}

impl DiffGranularity {
    pub fn is_char(&self) -> bool {
        *self == Self::Char
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Equal,
    Delete,
    Insert,
}

/// A run of characters kept, deleted or inserted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextOp {
    pub op: Op,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExampleChangeKind {
    Modified,
    Removed,
    Added,
}

/// An example added, removed or changed, by position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExampleChange {
    pub index: usize,
    pub change: ExampleChangeKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<Example>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<Example>,
    /// The changed fields of a modified example.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<FieldOps>>,
}

/// The text diff of one field of an example (`input` or `output`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldOps {
    pub field: String,
    pub ops: Vec<TextOp>,
    /// How finely `ops` split the text; absent means `char`.
    #[serde(default, skip_serializing_if = "DiffGranularity::is_char")]
    pub granularity: DiffGranularity,
}

/// A format field, parameter or the model, old → new (`null` where unset).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueChange {
    pub field: String,
    pub old: Value,
    pub new: Value,
}

/// `GET /api/templates/{name}/labels`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Labels {
    pub labels: BTreeMap<String, i64>,
    /// Oldest first.
    pub history: Vec<LabelEvent>,
}

/// `PUT /api/templates/{name}/labels/{label}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetLabel {
    pub version: i64,
}

/// What `PUT /api/templates/{name}/labels/{label}` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelMoved {
    pub template: String,
    pub label: String,
    pub from_version: Option<i64>,
    pub to_version: i64,
}

/// `POST /api/templates/{name}/render`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderRequest {
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// A version number, label or `latest` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// `POST /api/render`: an unsaved draft (the playground's live preview and token count;
/// `S` as in [`CreateTemplate`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderDraft<S = VersionSpec> {
    pub spec: S,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// While typing: variables not filled in yet stay as `{{name}}` and extra ones are
    /// ignored, so the preview and token count never stop on a half-written input.
    #[serde(default)]
    pub partial: bool,
}

/// The exact prompt the model reads, and its size in tokens.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RenderedPrompt {
    pub prompt: String,
    pub prefix: String,
    pub suffix: String,
    pub prompt_tokens: usize,
    pub prefix_tokens: usize,
    pub context_length: usize,
    pub variables: Vec<String>,
    /// The version rendered (`/api/templates/{name}/render` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// The variables not filled in yet (a partial draft render only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<Vec<String>>,
}

/// `GET /api/templates/{name}/runs`, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunList {
    pub runs: Vec<Run>,
}
