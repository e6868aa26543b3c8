//! The batch page's state (a struct of signals, shared through a context): the template,
//! the dataset being prepared, the batch that runs, and the earlier batches.

use api_types::batches::{Batch, BatchList, DatasetCheck};
use api_types::templates::{TemplateDetail, TemplateInfo, VersionList};
use leptos::prelude::*;

use crate::api::{self, enc, ApiError};

/// Earlier batches listed on the page (the API's page size bound is 100).
pub const HISTORY_LIMIT: usize = 20;

#[derive(Clone, Copy)]
pub struct BatchPage {
    pub name: Memo<String>,
    pub template: RwSignal<Option<TemplateInfo>>,
    /// The variables of the version served by default (until a dataset is checked).
    pub variables: RwSignal<Vec<String>>,
    pub versions: RwSignal<Vec<i64>>,
    /// The version chosen: empty for the default (production, else latest).
    pub version: RwSignal<String>,
    pub format: RwSignal<String>,
    pub data: RwSignal<String>,
    pub filename: RwSignal<Option<String>>,
    /// The server's reading of the dataset against the version.
    pub check: RwSignal<Option<DatasetCheck>>,
    /// Why the dataset cannot run (names its field: `data`, `version`, `format`).
    pub check_error: RwSignal<Option<ApiError>>,
    /// Bumped on every change of the dataset: a check answers only if still current.
    pub edits: RwSignal<u32>,
    pub current: RwSignal<Option<Batch>>,
    pub run_error: RwSignal<Option<ApiError>>,
    pub history: RwSignal<Vec<Batch>>,
    pub error: RwSignal<Option<ApiError>>,
    pub reload: RwSignal<u32>,
}

impl BatchPage {
    pub fn new(name: Memo<String>) -> Self {
        Self {
            name,
            template: RwSignal::new(None),
            variables: RwSignal::new(Vec::new()),
            versions: RwSignal::new(Vec::new()),
            version: RwSignal::new(String::new()),
            format: RwSignal::new("csv".into()),
            data: RwSignal::new(String::new()),
            filename: RwSignal::new(None),
            check: RwSignal::new(None),
            check_error: RwSignal::new(None),
            edits: RwSignal::new(0),
            current: RwSignal::new(None),
            run_error: RwSignal::new(None),
            history: RwSignal::new(Vec::new()),
            error: RwSignal::new(None),
            reload: RwSignal::new(0),
        }
    }

    /// The batch page of the page this part is on.
    pub fn get() -> Self {
        expect_context::<BatchPage>()
    }

    pub fn reload(self) {
        self.reload.update(|r| *r += 1);
    }

    /// What the default version choice means, e.g. `production (v2)`.
    pub fn default_version(self) -> String {
        self.template
            .with(|t| {
                t.as_ref().map(|t| match t.labels.get("production") {
                    Some(v) => format!("production (v{v})"),
                    None => format!("latest (v{})", t.latest_version),
                })
            })
            .unwrap_or_else(|| "production, else latest".into())
    }

    /// Loads the template, its versions and its batches.
    pub async fn load(self, n: String) {
        let base = format!("/api/templates/{}", enc(&n));
        match api::get::<TemplateDetail>(&base).await {
            Ok(t) => {
                self.variables.set(t.variables);
                self.template.set(Some(t.template));
            }
            Err(e) => {
                self.error.set(Some(e));
                return;
            }
        }
        if let Ok(v) = api::get::<VersionList>(&format!("{base}/versions")).await {
            self.versions.set(v.versions.iter().map(|v| v.version).collect());
        }
        match api::get::<BatchList>(&format!("{base}/batches?limit={HISTORY_LIMIT}")).await {
            Ok(l) => self.history.set(l.data),
            Err(e) => self.error.set(Some(e)),
        }
    }
}
