//! Run against run: which rows one eval passed and the other failed.

use api_types::evals::{EvalComparison, FlippedRow};
use leptos::prelude::*;

use crate::api::{self, enc, ApiError};
use crate::components::evaluate::Evaluate;
use crate::components::{pct, vars_text, version_label, ErrorNote};
use crate::fmt_time;

#[component]
pub fn FlipsCard() -> impl IntoView {
    let ev = Evaluate::get();
    let cmp_a = RwSignal::new(String::new());
    let cmp_b = RwSignal::new(String::new());
    let cmp = RwSignal::new(None::<EvalComparison>);
    let cmp_error = RwSignal::new(None::<ApiError>);

    let compare_runs = move |_| {
        let (a, b) = (cmp_a.get_untracked(), cmp_b.get_untracked());
        if a.is_empty() || b.is_empty() {
            return;
        }
        api::spawn(async move {
            match api::get::<EvalComparison>(&format!("/api/evals/{}/compare/{}", enc(&a), enc(&b))).await {
                Ok(c) => {
                    cmp.set(Some(c));
                    cmp_error.set(None);
                }
                Err(e) => cmp_error.set(Some(e)),
            }
        });
    };

    view! {
        <section class="card">
            <h3>"Which rows flipped?"</h3>
            <div class="row">
                {move || {
                    let runs = ev.completed();
                    let opts = move |sel: RwSignal<String>| runs.iter().map(|e| {
                        let id = e.id.to_string();
                        let id2 = id.clone();
                        let label = format!("eval {} · {} · {} · {}", id, version_label(e.version), pct(e.pass_rate), fmt_time(e.created_at));
                        view! { <option value=id selected=move || sel.get() == id2>{label}</option> }
                    }).collect_view();
                    view! {
                        <select data-testid="cmp-a" on:change=move |e| cmp_a.set(event_target_value(&e))><option value="">"run A…"</option>{opts(cmp_a)}</select>
                        <select data-testid="cmp-b" on:change=move |e| cmp_b.set(event_target_value(&e))><option value="">"run B…"</option>{opts(cmp_b)}</select>
                    }
                }}
                <button class="secondary small" on:click=compare_runs>"Compare"</button>
            </div>
            <ErrorNote error=cmp_error/>
            {move || cmp.get().map(|c| {
                let list = |rows: Vec<FlippedRow>, class: &'static str| rows.into_iter().map(move |f| view! {
                    <li class=class>{format!("{} — expected {}: {} → {}", vars_text(&f.variables), f.expected.as_deref().unwrap_or("—"), f.a.output, f.b.output)}</li>
                }).collect_view();
                view! {
                    <div class="flips">
                        <p>{format!("{} fixed · {} broken · {} unchanged", c.fixed.len(), c.broken.len(), c.unchanged)}</p>
                        <ul>{list(c.fixed, "pass")}{list(c.broken, "fail")}</ul>
                    </div>
                }
            })}
        </section>
    }
}
