//! The parameters panel: sampling and length settings saved with the version.

use leptos::prelude::*;

use crate::components::field_error;
use crate::components::playground::Playground;
use crate::draft::Draft;

/// One number setting: its name, the text box, what it does, and its error.
#[component]
fn ParamField(
    label: &'static str,
    hint: &'static str,
    get: fn(&Draft) -> String,
    set: fn(&mut Draft, String),
    field: &'static str,
) -> impl IntoView {
    let pg = Playground::get();
    let (value, write) = pg.bind(get, set);
    view! {
        <div class="param">
            <div class="param-head">
                <label class="label small">{label}</label>
                <input class="num-input" data-testid=field prop:value=value on:input=move |ev| write(event_target_value(&ev))/>
            </div>
            <p class="hint">{hint}</p>
            {field_error(pg.any_err(), field)}
        </div>
    }
}

#[component]
pub fn ParametersPanel() -> impl IntoView {
    let pg = Playground::get();
    let (stop, write_stop) = pg.bind(|d| d.params.stop.clone(), |d, v| d.params.stop = v);
    view! {
        <div class="card params">
            <h3>"Parameters"</h3>
            <ParamField label="Temperature" hint="0 = always the most likely words, same answer every time; higher = more varied." get=|d| d.params.temperature.clone() set=|d, v| d.params.temperature = v field="parameters.temperature"/>
            <ParamField label="Top-p" hint="Pick only among the likeliest words that together make up this share (1 = all)." get=|d| d.params.top_p.clone() set=|d, v| d.params.top_p = v field="parameters.top_p"/>
            <ParamField label="Top-k" hint="Pick only among the k likeliest words (0 = no limit)." get=|d| d.params.top_k.clone() set=|d, v| d.params.top_k = v field="parameters.top_k"/>
            <ParamField label="Max tokens" hint="The longest answer, in tokens (a Korean syllable is often 1–2 tokens)." get=|d| d.params.max_tokens.clone() set=|d, v| d.params.max_tokens = v field="parameters.max_tokens"/>
            <ParamField label="Repetition penalty" hint="Above 1 makes the model avoid repeating itself." get=|d| d.params.repetition_penalty.clone() set=|d, v| d.params.repetition_penalty = v field="parameters.repetition_penalty"/>
            <div class="param">
                <label class="label small">"Stop sequences"</label>
                <textarea class="mono" rows="2" prop:value=stop on:input=move |ev| write_stop(event_target_value(&ev))></textarea>
                <p class="hint">"The answer ends where one of these appears. One per line; \\n is a line break."</p>
                {field_error(pg.any_err(), "parameters.stop")}
            </div>
            <ParamField label="Seed" hint="Same seed and settings give the same answer even when sampling. Empty = random." get=|d| d.params.seed.clone() set=|d, v| d.params.seed = v field="parameters.seed"/>
        </div>
    }
}
