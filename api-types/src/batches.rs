//! Files and batch jobs in OpenAI's shape (`/v1/files`, `/v1/batches`), so the official
//! SDK's `files` and `batches` clients work unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An uploaded or generated file (`object: "file"`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileObject {
    pub id: String,
    pub object: String,
    pub bytes: i64,
    pub created_at: i64,
    pub filename: String,
    /// `batch` for uploads; `batch_output` for the files a batch writes.
    pub purpose: String,
    /// Always `processed`: a file is validated when a batch uses it.
    pub status: String,
    pub expires_at: Option<i64>,
    pub status_details: Option<String>,
}

/// `GET /v1/files`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileList {
    pub object: String,
    pub data: Vec<FileObject>,
    pub has_more: bool,
}

/// `DELETE /v1/files/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeletedFile {
    pub id: String,
    pub object: String,
    pub deleted: bool,
}

/// `POST /v1/batches`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CreateBatch {
    pub input_file_id: String,
    /// `/v1/completions`, `/v1/chat/completions` or `/v1/templates/{name}[@ref]/completions`.
    pub endpoint: String,
    /// Only `24h`, as OpenAI.
    pub completion_window: String,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// How many of a batch's requests finished, and how.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestCounts {
    pub total: i64,
    pub completed: i64,
    pub failed: i64,
}

/// A batch (`object: "batch"`). Status: `validating`, `in_progress`, `finalizing`,
/// `completed`, `failed`, `expired`, `cancelling`, `cancelled`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Batch {
    pub id: String,
    pub object: String,
    pub endpoint: String,
    pub errors: Option<BatchErrors>,
    pub input_file_id: String,
    pub completion_window: String,
    pub status: String,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    pub created_at: i64,
    pub in_progress_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub finalizing_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub expired_at: Option<i64>,
    pub cancelling_at: Option<i64>,
    pub cancelled_at: Option<i64>,
    pub request_counts: RequestCounts,
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Why a batch failed as a whole (OpenAI's `errors` list object).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BatchErrors {
    pub object: String,
    pub data: Vec<BatchError>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BatchError {
    pub code: String,
    pub message: String,
    pub param: Option<String>,
    pub line: Option<i64>,
}

/// `GET /v1/batches`: newest first, `after` and `limit` page through.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BatchList {
    pub object: String,
    pub data: Vec<Batch>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

/// One line of a batch input file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BatchInputLine {
    pub custom_id: String,
    pub method: String,
    pub url: String,
    pub body: serde_json::Map<String, serde_json::Value>,
}

/// One line of a batch's output or error file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BatchOutputLine {
    pub id: String,
    pub custom_id: String,
    pub response: Option<BatchResponse>,
    pub error: Option<BatchLineError>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BatchResponse {
    pub status_code: u16,
    pub request_id: String,
    pub body: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BatchLineError {
    pub code: String,
    pub message: String,
}

// ------------------------------------------------------------ a template over a dataset

/// The metadata keys of a batch the studio started over a dataset: which template,
/// which version (its number) and which file, so the template's batches can be listed.
pub const META_TEMPLATE: &str = "template";
pub const META_VERSION: &str = "template_version";
pub const META_DATASET: &str = "dataset";

/// `POST /api/templates/{name}/batches` (and `.../batches/check`): run one version of the
/// template once per row of a dataset, CSV with a header or JSONL of objects, whose
/// columns are exactly the version's variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplateBatch {
    /// A number, `latest` or a label (number or string); by default `production`, else
    /// the latest version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<serde_json::Value>,
    /// `csv` or `jsonl`.
    pub format: String,
    /// The file's text (one BOM at most), at most as large as an uploaded batch file
    /// (32 MiB) and as many rows as a batch has lines (50,000).
    pub data: String,
    /// The file's name, kept in the batch's metadata (`dataset.csv` when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// `POST /api/templates/{name}/batches/check`: what a dataset would run, before it runs:
/// its columns beside the version's variables. A file that cannot be read is refused
/// (naming the line); columns that do not match are listed here, and refused by the
/// create call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetCheck {
    pub template: String,
    pub version: i64,
    pub rows: usize,
    /// In the file's order.
    pub columns: Vec<String>,
    /// The version's, in the order they appear in it.
    pub variables: Vec<String>,
    /// Columns that are not variables of the version.
    pub unknown: Vec<String>,
    /// Variables that no column gives.
    pub missing: Vec<String>,
}

impl DatasetCheck {
    /// Whether the dataset can run as it is.
    pub fn matches(&self) -> bool {
        self.unknown.is_empty() && self.missing.is_empty()
    }
}

impl Batch {
    /// Whether the batch has ended (its files, and its results, are final).
    pub fn is_over(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "expired" | "cancelled")
    }

    /// A metadata value, if set.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref().and_then(|m| m.get(key)).map(String::as_str)
    }
}
