//! The evaluate page's state (a struct of signals, shared through a context), loaded from
//! the template, its test set and its evals.

use std::collections::BTreeMap;

use api_types::evals::{EvalList, EvalRunDetail, EvalStatus, EvalSummary, RowResult, TestCase, TestList};
use api_types::templates::{TemplateDetail, TemplateInfo, UpdateMeta, UpdatedTemplate, VersionList};
use leptos::prelude::*;

use crate::api::{self, enc, ApiError};
use crate::components::version_label;

/// One column of the matrix: a version's latest completed eval and its results by row.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixColumn {
    pub label: String,
    pub eval_id: i64,
    pub version: Option<i64>,
    pub pass_rate: Option<f64>,
    /// Rows that met the version's output constraint, of `done` (None: it has none).
    pub constraint_met: Option<i64>,
    pub done: i64,
    /// The labels, when the column is a label task ([`super::labels::label_set`]).
    pub labels: Option<Vec<String>>,
    /// By test row id.
    pub results: BTreeMap<i64, RowResult>,
}

#[derive(Clone, Copy)]
pub struct Evaluate {
    pub name: Memo<String>,
    pub template: RwSignal<Option<TemplateInfo>>,
    pub variables: RwSignal<Vec<String>>,
    pub versions: RwSignal<Vec<i64>>,
    pub rows: RwSignal<Vec<TestCase>>,
    /// Newest first.
    pub evals: RwSignal<Vec<EvalSummary>>,
    pub matrix: RwSignal<Vec<MatrixColumn>>,
    pub error: RwSignal<Option<ApiError>>,
    /// The template does not exist (its page shows "not found" instead of its controls).
    pub missing: RwSignal<bool>,
    /// Bumped to load everything again.
    pub reload: RwSignal<u32>,
}

impl Evaluate {
    pub fn new(name: Memo<String>) -> Self {
        Self {
            name,
            template: RwSignal::new(None),
            variables: RwSignal::new(Vec::new()),
            versions: RwSignal::new(Vec::new()),
            rows: RwSignal::new(Vec::new()),
            evals: RwSignal::new(Vec::new()),
            matrix: RwSignal::new(Vec::new()),
            error: RwSignal::new(None),
            missing: RwSignal::new(false),
            reload: RwSignal::new(0),
        }
    }

    /// The evaluate page of the page this part is on.
    pub fn get() -> Self {
        expect_context::<Evaluate>()
    }

    pub fn reload(self) {
        self.reload.update(|r| *r += 1);
    }

    /// The completed evals, newest first.
    pub fn completed(self) -> Vec<EvalSummary> {
        self.evals.get().into_iter().filter(|e| e.status == EvalStatus::Completed).collect()
    }

    /// Loads the template, its versions, test set and evals, and the matrix.
    pub async fn load(self, n: String) {
        let base = format!("/api/templates/{}", enc(&n));
        match api::get::<TemplateDetail>(&base).await {
            Ok(t) => {
                self.variables.set(t.variables);
                self.template.set(Some(t.template));
            }
            Err(e) => {
                self.missing.set(e.status == 404);
                self.error.set(Some(e));
                return;
            }
        }
        if let Ok(v) = api::get::<VersionList>(&format!("{base}/versions")).await {
            self.versions.set(v.versions.iter().map(|v| v.version).collect());
        }
        match api::get::<TestList>(&format!("{base}/tests")).await {
            Ok(t) => self.rows.set(t.rows),
            Err(e) => self.error.set(Some(e)),
        }
        let list = match api::get::<EvalList>(&format!("{base}/evals")).await {
            Ok(e) => e.evals,
            Err(e) => {
                self.error.set(Some(e));
                Vec::new()
            }
        };
        self.evals.set(list.clone());
        // The matrix: the latest completed eval of each version (and of drafts), oldest first.
        let mut latest: BTreeMap<Option<i64>, EvalSummary> = BTreeMap::new();
        for e in list.into_iter().filter(|e| e.status == EvalStatus::Completed) {
            latest.entry(e.version).or_insert(e);
        }
        let mut cols = Vec::new();
        for (version, e) in latest {
            if let Ok(full) = api::get::<EvalRunDetail>(&format!("/api/evals/{}", e.id)).await {
                let results =
                    full.results.unwrap_or_default().into_iter().filter_map(|r| Some((r.test_id?, r))).collect();
                let labels =
                    self.rows.with_untracked(|rows| super::labels::label_set(full.run.spec.output.as_ref(), rows));
                cols.push(MatrixColumn {
                    label: version_label(version),
                    eval_id: e.id,
                    version,
                    pass_rate: e.pass_rate,
                    constraint_met: e.constraint_met,
                    done: e.done,
                    labels,
                    results,
                });
            }
        }
        self.matrix.set(cols);
    }
}

/// The production eval gate, on or off.
#[component]
pub fn EvalGateToggle() -> impl IntoView {
    let ev = Evaluate::get();
    let toggle = move |e: leptos::ev::Event| {
        let on = event_target_checked(&e);
        let n = ev.name.get_untracked();
        api::spawn(async move {
            let body = UpdateMeta { eval_gate: Some(on), ..Default::default() };
            match api::patch::<UpdatedTemplate, _>(&format!("/api/templates/{}", enc(&n)), &body).await {
                Ok(t) => ev.template.set(Some(t.template)),
                Err(e) => ev.error.set(Some(e)),
            }
        });
    };
    view! {
        <label class="toggle">
            <input type="checkbox" data-testid="eval-gate" prop:checked=move || ev.template.with(|t| t.as_ref().is_some_and(|t| t.eval_gate)) on:change=toggle/>
            " Eval gate: production only moves to a version that scores at least as well"
        </label>
    }
}
