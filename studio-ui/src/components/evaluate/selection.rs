//! Few-shot selection: the best k examples by held-out likelihood, against random sets and
//! the current examples; the best set opens in the playground as a draft.

use api_types::evals::{SelectRequest, Selection};
use leptos::prelude::*;

use crate::api::{self, enc, ApiError};
use crate::components::evaluate::Evaluate;
use crate::components::{pct, ErrorNote};
use crate::draft::{self, Draft, Entered};

#[component]
pub fn SelectionCard() -> impl IntoView {
    let ev = Evaluate::get();
    let navigate = crate::nav::Navigator::new();
    let sel_k = RwSignal::new("4".to_string());
    let selecting = RwSignal::new(false);
    let selection = RwSignal::new(None::<Selection>);
    let sel_error = RwSignal::new(None::<ApiError>);

    let select = move |_| {
        let n = ev.name.get_untracked();
        let body = SelectRequest::<Entered<u64>> {
            version: Some("latest".into()),
            k: Some(Entered::parse(&sel_k.get_untracked())),
            ..Default::default()
        };
        selecting.set(true);
        sel_error.set(None);
        api::spawn(async move {
            match api::post::<Selection, _>(&format!("/api/templates/{}/select-examples", enc(&n)), &body).await {
                Ok(s) => selection.set(Some(s)),
                Err(e) => sel_error.set(Some(e)),
            }
            selecting.set(false);
        });
    };
    let open_selection = move |_| {
        let n = ev.name.get_untracked();
        let Some(spec) = selection.with_untracked(|s| s.as_ref().map(|s| s.report.spec.clone())) else { return };
        let latest = ev.versions.with_untracked(|v| v.iter().copied().max());
        let title = ev.template.with_untracked(|t| t.as_ref().map(|t| t.title.clone())).unwrap_or_default();
        let d = Draft::from_spec(Some(&n), &title, latest, &spec);
        if let Ok(s) = serde_json::to_string(&d) {
            draft::storage_set(&Draft::storage_key(Some(&n)), &s);
        }
        navigate.go(&format!("/t/{}", enc(&n)));
    };

    view! {
        <section class="card">
            <h3>"Find the best examples"</h3>
            <p class="hint">"Tries sets of k examples drawn from the template's examples and the test rows with an expected output, scoring each on held-out rows by the likelihood of the right label. The best set becomes a draft you can save."</p>
            <div class="row">
                <label class="small">"k "<input class="num-input" prop:value=move || sel_k.get() on:input=move |e| sel_k.set(event_target_value(&e))/></label>
                <button class="secondary" data-testid="select-examples" on:click=select disabled=move || selecting.get()>{move || if selecting.get() { "Scoring candidate sets…" } else { "Find best examples" }}</button>
            </div>
            <Show when=move || selecting.get()><div class="progress indeterminate"><span></span></div></Show>
            <ErrorNote error=sel_error/>
            {move || selection.get().map(|s| {
                let s = s.report;
                view! {
                    <div class="selection" data-testid="selection">
                        <div class="scores">
                            <div><span class="k">"Best set"</span><b>{pct(Some(s.best.accuracy))}</b></div>
                            <div><span class="k">"Random sets (mean)"</span><b>{pct(s.random.mean_accuracy)}</b></div>
                            <div><span class="k">"Current examples"</span><b>{pct(s.current.map(|c| c.accuracy))}</b></div>
                        </div>
                        <button class="primary small" on:click=open_selection>"Open the best set in the playground"</button>
                        <details>
                            <summary>{format!("{} candidate sets tried", s.tried.len())}</summary>
                            <table class="small">
                                <thead><tr><th>"Round"</th><th>"Examples (pool ids)"</th><th>"Accuracy"</th><th>"Mean log-prob"</th></tr></thead>
                                <tbody>
                                    {s.tried.into_iter().map(|t| view! {
                                        <tr><td>{t.round.to_string()}</td><td class="mono">{serde_json::to_string(&t.examples).unwrap_or_default()}</td><td>{pct(Some(t.accuracy))}</td><td>{format!("{:.3}", t.mean_logprob)}</td></tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                        </details>
                    </div>
                }
            })}
        </section>
    }
}
