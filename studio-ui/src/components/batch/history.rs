//! The template's earlier batches (newest first): when, which version and file, how far
//! they got, and their results.

use api_types::batches::{META_DATASET, META_VERSION};
use leptos::prelude::*;

use crate::components::batch::run::download_link;
use crate::components::batch::BatchPage;
use crate::fmt_time;

#[component]
pub fn HistoryCard() -> impl IntoView {
    let p = BatchPage::get();
    view! {
        <section class="card">
            <h3>"Earlier batches"</h3>
            {move || {
                let list = p.history.get();
                if list.is_empty() {
                    return view! { <p class="muted">"No batch of this template yet."</p> }.into_any();
                }
                view! {
                    <div class="table-wrap">
                        <table class="tests" data-testid="batch-history">
                            <thead><tr><th>"Started"</th><th>"Version"</th><th>"Dataset"</th><th>"Status"</th><th>"Rows"</th><th></th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|b| {
                                    let c = b.request_counts;
                                    let version = b.meta(META_VERSION).map(|v| format!("v{v}")).unwrap_or_else(|| b.endpoint.clone());
                                    let dataset = b.meta(META_DATASET).unwrap_or("—").to_string();
                                    view! {
                                        <tr data-testid="batch-history-row" data-status=b.status.clone()>
                                            <td class="small">{fmt_time(b.created_at * 1000)}</td>
                                            <td>{version}</td>
                                            <td class="clip">{dataset}</td>
                                            <td><span class="badge">{b.status.clone()}</span></td>
                                            <td class="small">{format!("{} / {} · {} failed", c.completed + c.failed, c.total, c.failed)}</td>
                                            <td>{b.is_over().then(|| download_link(&b, "batch-history-download"))}</td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    </div>
                }.into_any()
            }}
        </section>
    }
}
