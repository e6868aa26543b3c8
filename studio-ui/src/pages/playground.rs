//! The playground: design a few-shot prompt, see exactly what the model will read, run it
//! (streamed, stoppable), inspect token confidence, save it as a template or a version.

use std::collections::BTreeMap;
use std::time::Duration;

use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_params_map, use_query_map};
use serde_json::json;

use crate::api::{self, enc, Abort, ApiError};
use crate::code::{CodeTarget, Lang};
use crate::draft::{self, escape, unescape, Draft, Example};
use crate::pages::{field_error, ErrorNote, VariableField};
use crate::tokens::{Piece, PieceBuilder, TokenView};

/// Where the last values typed into a template's variables are kept in this browser.
fn vars_key(template: Option<&str>) -> String {
    format!("studio.vars.{}", template.unwrap_or(""))
}

/// What the server rendered for the current draft.
#[derive(Debug, Clone, Default, PartialEq)]
struct Preview {
    prompt: String,
    prompt_tokens: usize,
    prefix_tokens: usize,
    context_length: usize,
    variables: Vec<String>,
}

/// Figures of the last run.
#[derive(Debug, Clone, Default, PartialEq)]
struct RunStats {
    ttft_ms: Option<f64>,
    tokens: usize,
    tokens_per_s: Option<f64>,
    prompt_tokens: Option<u64>,
    cached_tokens: Option<u64>,
    finish: Option<String>,
}

#[component]
pub fn PlaygroundPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let navigate = StoredValue::new_local(use_navigate());

    let draft = RwSignal::new(Draft::default());
    // The version as loaded or saved: a draft equal to it is not "unsaved".
    let original = RwSignal::new(None::<Draft>);
    let loaded = RwSignal::new(false);
    let restored = RwSignal::new(false);
    let load_error = RwSignal::new(None::<ApiError>);

    let preview = RwSignal::new(Preview::default());
    let preview_error = RwSignal::new(None::<ApiError>);
    let run_error = RwSignal::new(None::<ApiError>);
    let save_error = RwSignal::new(None::<ApiError>);

    let pieces = RwSignal::new(Vec::<Piece>::new());
    let stats = RwSignal::new(RunStats::default());
    let running = RwSignal::new(false);
    let abort = StoredValue::new_local(None::<Abort>);

    let save_open = RwSignal::new(false);
    let save_note = RwSignal::new(String::new());
    let new_name = RwSignal::new(String::new());
    let saved_msg = RwSignal::new(None::<String>);
    let code_open = RwSignal::new(false);
    let code_lang = RwSignal::new(Lang::Curl);

    let name = Memo::new(move |_| params.with(|p| p.get("name")));
    let model = RwSignal::new(String::from("default"));
    Effect::new(move |_| {
        api::spawn(async move {
            if let Ok(m) = api::get("/v1/models").await {
                if let Some(id) = m["data"][0]["id"].as_str() {
                    model.set(id.to_string());
                }
            }
        });
    });

    // Load: a draft kept in this browser wins (nothing typed is lost); else the version.
    Effect::new(move |_| {
        let name = name.get();
        let version = query.with(|q| q.get("v"));
        loaded.set(false);
        restored.set(false);
        load_error.set(None);
        pieces.set(Vec::new());
        stats.set(RunStats::default());
        let key = Draft::storage_key(name.as_deref());
        let kept = draft::storage_get(&key).and_then(|s| serde_json::from_str::<Draft>(&s).ok());
        match name {
            None => {
                original.set(None);
                if let Some(d) = kept {
                    draft.set(d);
                    restored.set(true);
                } else {
                    draft.set(Draft::default());
                }
                loaded.set(true);
            }
            Some(name) => api::spawn(async move {
                let path = match &version {
                    Some(v) => format!("/api/templates/{}/versions/{}", enc(&name), enc(v)),
                    None => format!("/api/templates/{}/versions/latest", enc(&name)),
                };
                let meta = api::get(&format!("/api/templates/{}", enc(&name))).await;
                match (meta, api::get(&path).await) {
                    (Ok(meta), Ok(v)) => {
                        let title = meta["template"]["title"].as_str().unwrap_or_default();
                        let mut d = Draft::from_version(&name, title, &v["version"]);
                        // The last input typed for this template, kept apart from any version.
                        if let Some(vars) =
                            draft::storage_get(&vars_key(Some(&name))).and_then(|s| serde_json::from_str(&s).ok())
                        {
                            d.variables = vars;
                        }
                        original.set(Some(d.clone()));
                        match kept.filter(|k| version.is_none() && k.base_version == d.base_version) {
                            Some(k) if !k.same_content(&d) => {
                                draft.set(k);
                                restored.set(true);
                            }
                            _ => draft.set(d),
                        }
                    }
                    (Err(e), _) | (_, Err(e)) => load_error.set(Some(e)),
                }
                loaded.set(true);
            }),
        }
    });

    // Keep unsaved work in local storage.
    Effect::new(move |_| {
        let d = draft.get();
        if !loaded.get() {
            return;
        }
        let key = Draft::storage_key(name.get_untracked().as_deref());
        if let Ok(v) = serde_json::to_string(&d.variables) {
            draft::storage_set(&vars_key(name.get_untracked().as_deref()), &v);
        }
        let same_as_saved = original.with(|o| o.as_ref().is_some_and(|o| o.same_content(&d)));
        if same_as_saved || Draft::default().same_content(&d) {
            draft::storage_remove(&key);
        } else if let Ok(s) = serde_json::to_string(&d) {
            draft::storage_set(&key, &s);
        }
    });

    // Live preview and token count, debounced while typing.
    let preview_seq = StoredValue::new(0u64);
    Effect::new(move |_| {
        let body = json!({ "spec": draft.with(|d| d.spec()), "variables": draft.with(|d| d.variables.clone()), "partial": true });
        if !loaded.get() {
            return;
        }
        preview_seq.update_value(|n| *n += 1);
        let mine = preview_seq.get_value();
        set_timeout(
            move || {
                if preview_seq.get_value() != mine {
                    return;
                }
                api::spawn(async move {
                    let r = api::post("/api/render", &body).await;
                    if preview_seq.get_value() != mine {
                        return;
                    }
                    match r {
                        Ok(v) => {
                            preview.set(Preview {
                                prompt: v["prompt"].as_str().unwrap_or_default().to_string(),
                                prompt_tokens: v["prompt_tokens"].as_u64().unwrap_or(0) as usize,
                                prefix_tokens: v["prefix_tokens"].as_u64().unwrap_or(0) as usize,
                                context_length: v["context_length"].as_u64().unwrap_or(0) as usize,
                                variables: v["variables"]
                                    .as_array()
                                    .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
                                    .unwrap_or_default(),
                            });
                            preview_error.set(None);
                        }
                        Err(e) => preview_error.set(Some(e)),
                    }
                });
            },
            Duration::from_millis(250),
        );
    });

    let variables_for_run = move || -> BTreeMap<String, String> {
        let names = preview.with(|p| p.variables.clone());
        draft.with(|d| names.iter().map(|n| (n.clone(), d.variables.get(n).cloned().unwrap_or_default())).collect())
    };

    let run = move || {
        if running.get_untracked() {
            return;
        }
        let body = json!({
            "spec": draft.with_untracked(|d| d.spec()),
            "variables": variables_for_run(),
            "stream": true,
            "logprobs": 5,
        });
        running.set(true);
        run_error.set(None);
        pieces.set(Vec::new());
        stats.set(RunStats::default());
        let handle = Abort::new();
        abort.set_value(Some(handle.clone()));
        api::spawn(async move {
            let start = api::now_ms();
            let mut first: Option<f64> = None;
            let mut builder = PieceBuilder::default();
            let mut tokens = 0usize;
            let result = {
                api::stream("/api/draft/completions", &body, &handle, |ev| {
                    let choice = &ev["choices"][0];
                    if choice["logprobs"]["token_logprobs"].as_array().is_some_and(|a| !a.is_empty()) {
                        tokens += 1;
                        if first.is_none() {
                            first = Some(api::now_ms());
                        }
                    }
                    builder.push_choice(choice);
                    pieces.set(builder.pieces.clone());
                    let now = api::now_ms();
                    stats.update(|s| {
                        s.tokens = tokens;
                        s.ttft_ms = first.map(|f| f - start);
                        if let Some(f) = first {
                            if tokens > 1 && now > f {
                                s.tokens_per_s = Some((tokens - 1) as f64 / ((now - f) / 1000.0));
                            }
                        }
                        if let Some(reason) = choice["finish_reason"].as_str() {
                            s.finish = Some(reason.to_string());
                        }
                        let usage = &ev["usage"];
                        if usage.is_object() {
                            s.prompt_tokens = usage["prompt_tokens"].as_u64();
                            s.cached_tokens = usage["prompt_tokens_details"]["cached_tokens"].as_u64().or(Some(0));
                        }
                    });
                })
                .await
            };
            match result {
                Err(e) if e.code.as_deref() == Some("aborted") => stats.update(|s| s.finish = Some("stopped".into())),
                Err(e) => run_error.set(Some(e)),
                Ok(()) => {}
            }
            running.set(false);
        });
    };
    let stop = move || {
        abort.with_value(|a| {
            if let Some(a) = a {
                a.abort();
            }
        });
    };

    let save = move |as_new: bool| {
        save_error.set(None);
        saved_msg.set(None);
        let d = draft.get_untracked();
        let note = save_note.get_untracked();
        let target = if as_new { None } else { d.template.clone() };
        api::spawn(async move {
            let result = match &target {
                Some(name) => api::post(
                    &format!("/api/templates/{}/versions", enc(name)),
                    &json!({ "spec": d.spec(), "note": note }),
                )
                .await
                .map(|v| (name.clone(), v["version"].clone())),
                None => {
                    let name = new_name.get_untracked().trim().to_string();
                    api::post(
                        "/api/templates",
                        &json!({ "name": name, "title": d.title, "spec": d.spec(), "note": note }),
                    )
                    .await
                    .map(|v| (name.clone(), v["version"].clone()))
                }
            };
            match result {
                Ok((name, version)) => {
                    let saved = Draft::from_version(&name, &d.title, &version);
                    let mut kept = saved.clone();
                    kept.variables = d.variables.clone();
                    original.set(Some(kept.clone()));
                    draft.set(kept);
                    draft::storage_remove(&Draft::storage_key(Some(&name)));
                    if target.is_none() {
                        draft::storage_remove(&Draft::storage_key(None));
                    }
                    save_open.set(false);
                    save_note.set(String::new());
                    saved_msg.set(Some(format!("Saved {name} version {}", version["version"])));
                    navigate.with_value(|n| n(&format!("/t/{name}"), Default::default()));
                }
                Err(e) => save_error.set(Some(e)),
            }
        });
    };

    let discard = move |_| {
        if let Some(o) = original.get_untracked() {
            draft.set(o);
        } else {
            draft.set(Draft::default());
        }
        restored.set(false);
    };

    let perr: Signal<Option<ApiError>> = preview_error.into();
    let rerr: Signal<Option<ApiError>> = run_error.into();
    // A field error from either the live preview or the run is shown beside its control.
    let any_err: Signal<Option<ApiError>> = Signal::derive(move || run_error.get().or_else(|| preview_error.get()));

    let text_field = move |label: &'static str,
                           placeholder: &'static str,
                           get: fn(&Draft) -> String,
                           set: fn(&mut Draft, String),
                           field: &'static str,
                           testid: &'static str| {
        view! {
            <label class="label">{label}</label>
            <textarea
                class="grow"
                data-testid=testid
                placeholder=placeholder
                prop:value=move || draft.with(get)
                on:input=move |ev| {
                    let v = event_target_value(&ev);
                    draft.update(|d| set(d, v));
                }
            ></textarea>
            {field_error(any_err, field)}
        }
    };

    let escaped_input =
        move |label: &'static str, get: fn(&Draft) -> String, set: fn(&mut Draft, String), field: &'static str| {
            view! {
                <div class="fmt-field">
                    <label class="label small">{label}</label>
                    <input
                        class="mono"
                        prop:value=move || escape(&draft.with(get))
                        on:input=move |ev| {
                            let v = unescape(&event_target_value(&ev));
                            draft.update(|d| set(d, v));
                        }
                    />
                    {field_error(any_err, field)}
                </div>
            }
        };

    let param = move |label: &'static str,
                      hint: &'static str,
                      get: fn(&Draft) -> String,
                      set: fn(&mut Draft, String),
                      field: &'static str| {
        view! {
            <div class="param">
                <div class="param-head">
                    <label class="label small">{label}</label>
                    <input
                        class="num-input"
                        data-testid=field
                        prop:value=move || draft.with(get)
                        on:input=move |ev| {
                            let v = event_target_value(&ev);
                            draft.update(|d| set(d, v));
                        }
                    />
                </div>
                <p class="hint">{hint}</p>
                {field_error(any_err, field)}
            </div>
        }
    };

    let code_target = move || {
        let d = draft.get();
        let spec = d.spec();
        let origin = {
            #[cfg(feature = "hydrate")]
            {
                web_sys::window().and_then(|w| w.location().origin().ok()).unwrap_or_default()
            }
            #[cfg(not(feature = "hydrate"))]
            {
                "http://127.0.0.1:8080".to_string()
            }
        };
        CodeTarget {
            origin,
            template: d.template.clone().map(|t| (t, d.base_version)),
            variables: variables_for_run(),
            prompt: preview.with(|p| p.prompt.clone()),
            parameters: spec["parameters"].clone(),
            model: model.get(),
        }
    };

    let design = view! {
            <section class="col design">
                <div class="title-row">
                    <input
                        class="title-input"
                        data-testid="title"
                        placeholder="Untitled prompt"
                        prop:value=move || draft.with(|d| d.title.clone())
                        on:input=move |ev| {
                            let v = event_target_value(&ev);
                            draft.update(|d| d.title = v);
                        }
                    />
                    <span class="badge" data-testid="version-badge">
                        {move || match (draft.with(|d| d.template.clone()), draft.with(|d| d.base_version)) {
                            (Some(t), Some(v)) => format!("{t} · version {v}"),
                            _ => "not saved".to_string(),
                        }}
                    </span>
                </div>
                <ErrorNote error=load_error.into()/>
                <Show when=move || restored.get()>
                    <div class="notice">
                        "Your unsaved changes were restored from this browser. "
                        <button class="link" on:click=discard>"Discard them"</button>
                    </div>
                </Show>

                <div class="card">
                    {text_field(
                        "Instruction",
                        "Tell the model what to do, e.g. \"Classify the sentiment of each movie review as 긍정 or 부정.\"",
                        |d| d.instruction.clone(),
                        |d, v| d.instruction = v,
                        "instruction",
                        "instruction",
                    )}
                </div>

                <div class="card">
                    <div class="card-head">
                        <h3>"Examples"</h3>
                        <span class="muted">{move || format!("{} shown to the model before your input", draft.with(|d| d.examples.len()))}</span>
                    </div>
                    <div class="examples" data-testid="examples">
                        <div class="ex-row ex-header">
                            <span>"#"</span>
                            <span>"Input"</span>
                            <span>"Output"</span>
                            <span></span>
                        </div>
                        <For
                            each=move || 0..draft.with(|d| d.examples.len())
                            key=|i| *i
                            children=move |i| {
                                let field = format!("examples[{i}]");
                                let err = move || {
                                    let field = field.clone();
                                    any_err.get().filter(|e| e.is_about(&field)).map(|e| view! { <div class="field-error">{e.message.clone()}</div> })
                                };
                                view! {
                                    <div class="ex-row" data-testid="example-row">
                                        <span class="ex-num">{i + 1}</span>
                                        <textarea
                                            class="grow"
                                            data-testid="example-input"
                                            placeholder="Example input"
                                            prop:value=move || draft.with(|d| d.examples.get(i).map(|e| e.input.clone()).unwrap_or_default())
                                            on:input=move |ev| {
                                                let v = event_target_value(&ev);
                                                draft.update(|d| if let Some(e) = d.examples.get_mut(i) { e.input = v });
                                            }
                                        ></textarea>
                                        <textarea
                                            class="grow"
                                            data-testid="example-output"
                                            placeholder="Expected output"
                                            prop:value=move || draft.with(|d| d.examples.get(i).map(|e| e.output.clone()).unwrap_or_default())
                                            on:input=move |ev| {
                                                let v = event_target_value(&ev);
                                                draft.update(|d| if let Some(e) = d.examples.get_mut(i) { e.output = v });
                                            }
                                        ></textarea>
                                        <div class="ex-tools">
                                            <button class="icon" title="Move up" on:click=move |_| draft.update(|d| if i > 0 && i < d.examples.len() { d.examples.swap(i - 1, i) })>"↑"</button>
                                            <button class="icon" title="Move down" on:click=move |_| draft.update(|d| if i + 1 < d.examples.len() { d.examples.swap(i, i + 1) })>"↓"</button>
                                            <button class="icon" title="Duplicate this example" on:click=move |_| draft.update(|d| if let Some(e) = d.examples.get(i).cloned() { d.examples.insert(i + 1, e) })>"Copy"</button>
                                            <button class="icon danger" title="Delete" data-testid="example-delete" on:click=move |_| draft.update(|d| if i < d.examples.len() { d.examples.remove(i); })>"✕"</button>
                                        </div>
                                        {err}
                                    </div>
                                }
                            }
                        />
                    </div>
                    <button
                        class="secondary"
                        data-testid="add-example"
                        on:click=move |_| draft.update(|d| d.examples.push(Example { input: String::new(), output: String::new() }))
                    >
                        "+ Add example"
                    </button>
                </div>

                <div class="card">
                    {text_field(
                        "Input",
                        "The text to run on. Use {{name}} for parts that change per call, e.g. {{review}}.",
                        |d| d.input_pattern.clone(),
                        |d, v| d.input_pattern = v,
                        "input_pattern",
                        "input-pattern",
                    )}
                    <div class="variables" data-testid="variables">
                        <For
                            each=move || preview.with(|p| p.variables.clone())
                            key=|n| n.clone()
                            children=move |n| {
                                let (n2, n3) = (n.clone(), n.clone());
                                view! {
                                    <VariableField
                                        name=n
                                        value=Signal::derive(move || draft.with(|d| d.variables.get(&n2).cloned().unwrap_or_default()))
                                        on_input=Callback::new(move |v| draft.update(|d| { d.variables.insert(n3.clone(), v); }))
                                        testid="variable"
                                        error=any_err
                                    />
                                }
                            }
                        />
                    </div>
                </div>

                <details class="card">
                    <summary>"Format: separators and prefixes"</summary>
                    <div class="fmt-grid">
                        {escaped_input("Between examples", |d| d.format.example_separator.clone(), |d, v| d.format.example_separator = v, "format.example_separator")}
                        {escaped_input("Input prefix", |d| d.format.input_prefix.clone(), |d, v| d.format.input_prefix = v, "format.input_prefix")}
                        {escaped_input("Between input and output", |d| d.format.io_separator.clone(), |d, v| d.format.io_separator = v, "format.io_separator")}
                        {escaped_input("Output prefix", |d| d.format.output_prefix.clone(), |d, v| d.format.output_prefix = v, "format.output_prefix")}
                    </div>
                    <p class="hint">"\\n is a line break. The prompt ends with the output prefix, so the model writes the answer next."</p>
                </details>

                <div class="card preview">
                    <div class="card-head">
                        <h3>"Exactly what the model reads"</h3>
                        <span class="token-count" data-testid="token-count">
                            {move || preview.with(|p| if p.context_length > 0 {
                                format!("{} / {} tokens", p.prompt_tokens, p.context_length)
                            } else {
                                "… tokens".to_string()
                            })}
                        </span>
                    </div>
                    <div class="meter">
                        <span style=move || preview.with(|p| format!("width: {:.1}%", if p.context_length > 0 { 100.0 * p.prompt_tokens as f64 / p.context_length as f64 } else { 0.0 }))></span>
                    </div>
                    <pre class="prompt" data-testid="prompt-preview">{move || preview.with(|p| p.prompt.clone())}</pre>
                    <ErrorNote error=perr/>
                </div>
            </section>
    }
    .into_any();
    let side = view! {
            <section class="col side">
                <div class="card run-card">
                    <div class="run-buttons">
                        <Show
                            when=move || running.get()
                            fallback=move || view! { <button class="primary big" data-testid="run" on:click=move |_| run()>"▶ Run"</button> }
                        >
                            <button class="danger big" data-testid="stop" on:click=move |_| stop()>"■ Stop"</button>
                        </Show>
                        <button class="secondary" data-testid="save-open" on:click=move |_| save_open.update(|o| *o = !*o)>"Save…"</button>
                        <button class="ghost" data-testid="code-open" on:click=move |_| code_open.update(|o| *o = !*o)>"</> View code"</button>
                        {move || draft.with(|d| d.template.clone()).map(|t| view! {
                            <a class="ghost button" href=format!("/templates/{t}")>"History"</a>
                            <a class="ghost button" href=format!("/compare?template={t}")>"Compare"</a>
                            <a class="ghost button" href=format!("/evaluate/{t}")>"Evaluate"</a>
                        })}
                    </div>
                    <Show when=move || save_open.get()>
                        <div class="save-panel" data-testid="save-panel">
                            <Show when=move || draft.with(|d| d.template.is_none())>
                                <label class="label small">"Template name (letters, digits, dashes)"</label>
                                <input data-testid="save-name" placeholder="my-prompt" prop:value=move || new_name.get() on:input=move |ev| new_name.set(event_target_value(&ev))/>
                                {field_error(save_error.into(), "name")}
                            </Show>
                            <label class="label small">"What changed (optional)"</label>
                            <input data-testid="save-note" placeholder="e.g. two more negative examples" prop:value=move || save_note.get() on:input=move |ev| save_note.set(event_target_value(&ev))/>
                            <div class="row">
                                {move || if draft.with(|d| d.template.is_some()) {
                                    view! { <button class="primary" data-testid="save-version" on:click=move |_| save(false)>"Save as new version"</button> }.into_any()
                                } else {
                                    view! { <button class="primary" data-testid="save-new" on:click=move |_| save(true)>"Save template"</button> }.into_any()
                                }}
                            </div>
                            <ErrorNote error=save_error.into()/>
                        </div>
                    </Show>
                    {move || saved_msg.get().map(|m| view! { <div class="ok" data-testid="saved">{m}</div> })}
                </div>

                <div class="card output-card">
                    <div class="card-head">
                        <h3>"Output"</h3>
                        <span class="muted">{move || if running.get() { "generating…".to_string() } else { stats.with(|s| s.finish.clone().map(|f| format!("finished: {f}")).unwrap_or_default()) }}</span>
                    </div>
                    <div class="output" data-testid="output">
                        {move || if pieces.with(|p| p.is_empty()) && !running.get() {
                            view! { <p class="placeholder">"Run the prompt to see the model's answer here, token by token."</p> }.into_any()
                        } else {
                            view! { <TokenView pieces=pieces.into()/> }.into_any()
                        }}
                    </div>
                    <ErrorNote error=rerr/>
                    <div class="stats" data-testid="stats">
                        <div><span class="k">"First token"</span><span class="v">{move || stats.with(|s| s.ttft_ms.map(|t| format!("{t:.0} ms")).unwrap_or("–".into()))}</span></div>
                        <div><span class="k">"Speed"</span><span class="v">{move || stats.with(|s| s.tokens_per_s.map(|t| format!("{t:.1} tok/s")).unwrap_or("–".into()))}</span></div>
                        <div><span class="k">"Generated"</span><span class="v">{move || stats.with(|s| format!("{} tokens", s.tokens))}</span></div>
                        <div>
                            <span class="k">"Prompt"</span>
                            <span class="v" data-testid="prefill-stats">{move || stats.with(|s| match (s.prompt_tokens, s.cached_tokens) {
                                (Some(p), Some(c)) => format!("{} prefilled · {} from cache", p.saturating_sub(c), c),
                                _ => "–".into(),
                            })}</span>
                        </div>
                    </div>
                    <p class="hint">"Each piece is shaded by how sure the model was (green = sure, red = unsure). Hover or tap one to see the alternatives."</p>
                </div>

                <Show when=move || code_open.get()>
                    <div class="card code-card" data-testid="code-panel">
                        <div class="tabs">
                            {[(Lang::Curl, "curl"), (Lang::Python, "Python"), (Lang::JavaScript, "JavaScript")]
                                .into_iter()
                                .map(|(l, label)| view! {
                                    <button class="tab" class:active=move || code_lang.get() == l on:click=move |_| code_lang.set(l)>{label}</button>
                                })
                                .collect_view()}
                        </div>
                        <pre class="code" data-testid="code">{move || code_target().snippet(code_lang.get())}</pre>
                        <button class="ghost small" on:click=move |_| {
                            #[cfg(feature = "hydrate")]
                            if let Some(w) = web_sys::window() {
                                let _ = w.navigator().clipboard().write_text(&code_target().snippet(code_lang.get_untracked()));
                            }
                        }>"Copy"</button>
                    </div>
                </Show>

                <div class="card params">
                    <h3>"Parameters"</h3>
                    {param("Temperature", "0 = always the most likely words, same answer every time; higher = more varied.", |d| d.params.temperature.clone(), |d, v| d.params.temperature = v, "parameters.temperature")}
                    {param("Top-p", "Pick only among the likeliest words that together make up this share (1 = all).", |d| d.params.top_p.clone(), |d, v| d.params.top_p = v, "parameters.top_p")}
                    {param("Top-k", "Pick only among the k likeliest words (0 = no limit).", |d| d.params.top_k.clone(), |d, v| d.params.top_k = v, "parameters.top_k")}
                    {param("Max tokens", "The longest answer, in tokens (a Korean syllable is often 1–2 tokens).", |d| d.params.max_tokens.clone(), |d, v| d.params.max_tokens = v, "parameters.max_tokens")}
                    {param("Repetition penalty", "Above 1 makes the model avoid repeating itself.", |d| d.params.repetition_penalty.clone(), |d, v| d.params.repetition_penalty = v, "parameters.repetition_penalty")}
                    <div class="param">
                        <label class="label small">"Stop sequences"</label>
                        <textarea
                            class="mono"
                            rows="2"
                            prop:value=move || draft.with(|d| d.params.stop.clone())
                            on:input=move |ev| {
                                let v = event_target_value(&ev);
                                draft.update(|d| d.params.stop = v);
                            }
                        ></textarea>
                        <p class="hint">"The answer ends where one of these appears. One per line; \\n is a line break."</p>
                        {field_error(any_err, "parameters.stop")}
                    </div>
                    {param("Seed", "Same seed and settings give the same answer even when sampling. Empty = random.", |d| d.params.seed.clone(), |d, v| d.params.seed = v, "parameters.seed")}
                </div>
            </section>
    }
    .into_any();
    view! {
        <div class="playground">
            {design}
            {side}
        </div>
    }
}
