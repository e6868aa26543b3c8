//! Evaluate: a template's test set (add rows, import/export CSV or JSONL), eval runs with a
//! progress bar and cancel, the rows × versions results matrix, pass rate per version over
//! time, run-vs-run flips, the production eval gate, and automatic few-shot selection.
//! The page loads the template's data; its parts (`components::evaluate`) share it through
//! a context.

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::api::{self, enc};
use crate::components::evaluate::{
    EvalGateToggle, Evaluate, FlipsCard, ResultsCard, RunEvalCard, SelectionCard, TestSetCard,
};
use crate::components::{ErrorNote, TemplateNotFound};

#[component]
pub fn EvaluatePage() -> impl IntoView {
    let params = use_params_map();
    let ev = Evaluate::new(Memo::new(move |_| params.with(|p| p.get("name")).unwrap_or_default()));
    provide_context(ev);
    let name = ev.name;

    Effect::new(move |_| {
        let n = name.get();
        ev.reload.track();
        if n.is_empty() {
            return;
        }
        api::spawn(ev.load(n));
    });

    view! {
        <Show when=move || ev.missing.get()>
            <TemplateNotFound name=name/>
        </Show>
        <div class="evaluate" hidden=move || ev.missing.get()>
            <div class="page-head">
                <h1>{move || ev.template.with(|t| t.as_ref().map(|t| t.display_title().to_string())).unwrap_or_else(|| name.get())}</h1>
                <p class="muted">"A change is only better if it scores better on cases that matter. Build a test set, run it against versions, compare."</p>
                <div class="row">
                    <a class="button ghost small" href=move || format!("/t/{}", enc(&name.get()))>"Playground"</a>
                    <a class="button ghost small" href=move || format!("/templates/{}", enc(&name.get()))>"Versions & history"</a>
                    <a class="button ghost small" data-testid="open-batch" href=move || format!("/t/{}/batch", enc(&name.get()))>"Run over a dataset"</a>
                    <EvalGateToggle/>
                </div>
            </div>
            <ErrorNote error=ev.error/>

            <TestSetCard/>

            <RunEvalCard/>

            <ResultsCard/>

            <FlipsCard/>

            <SelectionCard/>
        </div>
    }
}
