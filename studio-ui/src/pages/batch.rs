//! A template over a dataset: pick a version and a CSV / JSONL of variables, see its
//! columns beside the version's variables, run it as a batch with a progress bar, and
//! download the results; below, the template's earlier batches. The page loads the
//! template's data; its parts (`components::batch`) share it through a context.

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::api::{self, enc};
use crate::components::batch::{BatchPage, DatasetCard, HistoryCard, ProgressCard};
use crate::components::ErrorNote;

#[component]
pub fn BatchRunPage() -> impl IntoView {
    let params = use_params_map();
    let p = BatchPage::new(Memo::new(move |_| params.with(|m| m.get("name")).unwrap_or_default()));
    provide_context(p);
    let name = p.name;

    Effect::new(move |_| {
        let n = name.get();
        p.reload.track();
        if n.is_empty() {
            return;
        }
        api::spawn(p.load(n));
    });

    view! {
        <div class="evaluate batch">
            <div class="page-head">
                <h1>{move || p.template.with(|t| t.as_ref().map(|t| t.display_title().to_string())).unwrap_or_else(|| name.get())}" · batch"</h1>
                <p class="muted">"Run the template once per row of a dataset, then download every answer beside its row."</p>
                <div class="row">
                    <a class="button ghost small" href=move || format!("/t/{}", enc(&name.get()))>"Playground"</a>
                    <a class="button ghost small" href=move || format!("/templates/{}", enc(&name.get()))>"Versions & history"</a>
                    <a class="button ghost small" href=move || format!("/evaluate/{}", enc(&name.get()))>"Evaluate"</a>
                </div>
            </div>
            <ErrorNote error=p.error/>
            <DatasetCard/>
            <ProgressCard/>
            <HistoryCard/>
        </div>
    }
}
