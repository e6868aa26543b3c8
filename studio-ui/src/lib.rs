//! The studio's web app (Leptos, server-rendered by `studio serve` and hydrated in the
//! browser): playground, library, template page (versions, labels, diff, runs), compare,
//! evaluate, and a template run over a dataset as a batch.
//! Every page talks to the server's own `/api` and `/v1` endpoints; no business logic here.
#![recursion_limit = "256"]

pub mod api;
#[cfg(feature = "ssr")]
pub mod bundle;
pub mod code;
pub mod components;
pub mod draft;
pub mod history;
pub mod nav;
pub mod pages;
pub mod tokens;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Title};
use leptos_router::components::{Route, Router, Routes, A};
use leptos_router::path;

use crate::pages::{
    batch::BatchRunPage, compare::ComparePage, evaluate::EvaluatePage, library::LibraryPage,
    playground::PlaygroundPage, template::TemplatePage,
};

/// The whole stylesheet, inlined into every page (one binary, no asset pipeline).
pub const CSS: &str = include_str!("../style/studio.css");

/// The HTML document around the app, rendered on the server.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                // Inline, so the browser's automatic /favicon.ico request never 404s.
                <link rel="icon" href="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E%3Cpath d='M8 0l8 8-8 8-8-8z' fill='%234f46e5'/%3E%3C/svg%3E"/>
                <style>{CSS}</style>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Title text="Studio"/>
        <Router>
            <Header/>
            <main class="page">
                <Routes fallback=|| view! {
                    <section class="card not-found" data-testid="not-found">
                        <h1>"Page not found"</h1>
                        <p>"There is no such page in the studio."</p>
                        <div class="row">
                            <A href="/library" attr:class="button primary">"Browse the library"</A>
                            <A href="/" attr:class="button ghost">"Open the playground"</A>
                        </div>
                    </section>
                }>
                    <Route path=path!("/") view=PlaygroundPage/>
                    <Route path=path!("/t/:name") view=PlaygroundPage/>
                    <Route path=path!("/t/:name/batch") view=BatchRunPage/>
                    <Route path=path!("/library") view=LibraryPage/>
                    <Route path=path!("/templates/:name") view=TemplatePage/>
                    <Route path=path!("/compare") view=ComparePage/>
                    <Route path=path!("/evaluate/:name") view=EvaluatePage/>
                </Routes>
            </main>
        </Router>
    }
}

/// The top bar: product name, the pages, and the API key (kept in this browser only).
#[component]
fn Header() -> impl IntoView {
    let key_open = RwSignal::new(false);
    let key = RwSignal::new(String::new());
    let hydrated = RwSignal::new(false);
    Effect::new(move |_| {
        key.set(draft::storage_get(api::API_KEY_STORAGE).unwrap_or_default());
        hydrated.set(true);
    });
    view! {
        <header class="topbar">
            <a class="brand" href="/">"◆ Studio"</a>
            <nav>
                <A href="/" exact=true>"Playground"</A>
                <A href="/library">"Library"</A>
                <A href="/compare">"Compare"</A>
            </nav>
            <div class="spacer"></div>
            <span class="hydration" data-ready=move || hydrated.get().to_string()></span>
            <components::ShortcutsHelp/>
            <button class="ghost small" on:click=move |_| key_open.update(|o| *o = !*o)>
                {move || if key.get().is_empty() { "API key" } else { "API key ✓" }}
            </button>
            <Show when=move || key_open.get()>
                <div class="popover">
                    <label>"API key for this server"</label>
                    <input
                        type="password"
                        placeholder="sk-studio-…"
                        prop:value=move || key.get()
                        on:input=move |ev| key.set(event_target_value(&ev))
                    />
                    <p class="hint">"Needed only when the server was started with keys. Kept in this browser."</p>
                    <button
                        class="primary small"
                        on:click=move |_| {
                            draft::storage_set(api::API_KEY_STORAGE, &key.get_untracked());
                            key_open.set(false);
                        }
                    >
                        "Save"
                    </button>
                </div>
            </Show>
        </header>
    }
}

/// A readable date from Unix milliseconds (UTC, so server and browser render the same).
pub fn fmt_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant), valid for any date we will see.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, (rem % 3600) / 60)
}

#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(App);
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_render_in_utc() {
        assert_eq!(super::fmt_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(super::fmt_time(1_795_000_000_000), "2026-11-18 11:06 UTC");
    }
}
