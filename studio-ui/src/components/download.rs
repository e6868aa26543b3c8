//! A download link that also works when the server wants an API key: a plain link sends no
//! `Authorization` header, so with a key stored the click fetches the file with it instead.

use leptos::prelude::*;

use crate::api::{self, ApiError};
use crate::components::ErrorNote;

#[component]
pub fn DownloadLink(
    #[prop(into)] href: Signal<String>,
    /// The file's name when the server gives none.
    #[prop(into)]
    fallback: String,
    #[prop(into)] label: String,
    #[prop(into, default = "button ghost small".to_string())] class: String,
    #[prop(optional)] testid: Option<&'static str>,
) -> impl IntoView {
    let error = RwSignal::new(None::<ApiError>);
    let fallback = StoredValue::new(fallback);
    let click = move |ev: leptos::ev::MouseEvent| {
        if !api::has_api_key() {
            return;
        }
        ev.prevent_default();
        error.set(None);
        let path = href.get_untracked();
        let name = fallback.get_value();
        api::spawn(async move {
            if let Err(e) = api::download(&path, &name).await {
                error.set(Some(e));
            }
        });
    };
    view! {
        <a class=class data-testid=testid href=move || href.get() download="" on:click=click>{label}</a>
        <ErrorNote error=error />
    }
}
