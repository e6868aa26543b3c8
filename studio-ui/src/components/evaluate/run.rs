//! Running an eval: which version, samples per row, temperature; its progress, polled
//! until it ends, and cancel.

use api_types::evals::{CreateEval, EvalRun, EvalRunDetail};
use leptos::prelude::*;

use crate::api::{self, ApiError, NoFields};
use crate::components::evaluate::Evaluate;
use crate::components::{pct, ErrorNote};
use crate::draft::Entered;

#[component]
pub fn RunEvalCard() -> impl IntoView {
    let ev = Evaluate::get();
    let run_version = RwSignal::new("latest".to_string());
    let run_n = RwSignal::new("1".to_string());
    let run_temperature = RwSignal::new(String::new());
    let current = RwSignal::new(None::<EvalRun>);
    let run_error = RwSignal::new(None::<ApiError>);

    let start_eval = move |_| {
        let body = CreateEval::<Entered<u64>> {
            template: ev.name.get_untracked(),
            version: Some(run_version.get_untracked().into()),
            spec: None,
            n: Some(Entered::parse(&run_n.get_untracked())),
            temperature: run_temperature.get_untracked().trim().parse::<f32>().ok(),
            seed: None,
            max_tokens: None,
        };
        run_error.set(None);
        api::spawn(async move {
            let run = match api::post::<EvalRun, _>("/api/evals", &body).await {
                Ok(r) => r,
                Err(e) => {
                    run_error.set(Some(e));
                    return;
                }
            };
            let id = run.id;
            current.set(Some(run));
            // Poll until the run ends; the progress bar follows `done / total`.
            loop {
                api::sleep_ms(400).await;
                match api::get::<EvalRunDetail>(&format!("/api/evals/{id}?results=false")).await {
                    Ok(r) => {
                        let over = r.run.status.is_over();
                        current.set(Some(r.run));
                        if over {
                            break;
                        }
                    }
                    Err(e) => {
                        run_error.set(Some(e));
                        break;
                    }
                }
            }
            ev.reload();
        });
    };
    let cancel_eval = move |_| {
        let Some(id) = current.with_untracked(|c| c.as_ref().map(|c| c.id)) else { return };
        api::spawn(async move {
            if let Err(e) = api::post::<EvalRun, _>(&format!("/api/evals/{id}/cancel"), &NoFields {}).await {
                run_error.set(Some(e));
            }
        });
    };

    view! {
        <section class="card">
            <h3>"Run an eval"</h3>
            <div class="row">
                <select data-testid="eval-version" on:change=move |e| run_version.set(event_target_value(&e))>
                    <option value="latest">"latest version"</option>
                    {move || ev.template.with(|t| t.as_ref().map(|t| t.labels.clone())).unwrap_or_default().into_iter().map(|(l, v)| view! { <option value=l.clone()>{format!("{l} (v{v})")}</option> }).collect_view()}
                    {move || { let mut v = ev.versions.get(); v.reverse(); v }.into_iter().map(|v| view! { <option value=v.to_string()>{format!("version {v}")}</option> }).collect_view()}
                </select>
                <label class="small">"Samples per row "<input class="num-input" prop:value=move || run_n.get() on:input=move |e| run_n.set(event_target_value(&e))/></label>
                <label class="small">"Temperature "<input class="num-input" placeholder="version's" prop:value=move || run_temperature.get() on:input=move |e| run_temperature.set(event_target_value(&e))/></label>
                <button class="primary" data-testid="run-eval" on:click=start_eval disabled=move || current.with(|c| c.as_ref().is_some_and(|c| !c.status.is_over()))>"▶ Run eval"</button>
            </div>
            <p class="hint">"Evals run at low priority, so API callers are served first. Several samples at a temperature above 0 measure how stable the answers are."</p>
            <ErrorNote error=run_error/>
            {move || current.get().map(|c| {
                let (done, total) = (c.done, c.total);
                let share = if total > 0 { 100.0 * done as f64 / total as f64 } else { 0.0 };
                let status = c.status.as_str();
                let active = !c.status.is_over();
                view! {
                    <div class="eval-progress" data-testid="eval-progress" data-status=status>
                        <div class="progress"><span style=format!("width: {share:.1}%")></span></div>
                        <div class="row small">
                            <span data-testid="eval-progress-text">{format!("{done} / {total} rows · {share:.0}%")}</span>
                            <span class="badge">{status}</span>
                            <span>{format!("pass rate {}", pct(c.pass_rate))}</span>
                            {c.constraint_met.map(|m| view! { <span class="badge" data-testid="eval-constraint-met">{format!("met constraint {m} / {done}")}</span> })}
                            {c.stability.filter(|_| c.n > 1).map(|s| view! { <span>{format!("stability {}", pct(Some(s)))}</span> })}
                            {c.tests_hash.clone().map(|h| view! {
                                <span class="muted" data-testid="eval-tests-hash" title=format!("The test set this run scored: {h}")>
                                    {format!("test set {}", &h[..h.len().min(8)])}
                                </span>
                            })}
                            <Show when=move || active>
                                <button class="ghost small" data-testid="cancel-eval" on:click=cancel_eval>"Cancel"</button>
                            </Show>
                        </div>
                    </div>
                }
            })}
        </section>
    }
}
