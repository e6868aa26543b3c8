//! The parameters panel: sampling and length settings saved with the version. Number
//! boxes carry their range; a wrong value is named once, beside its box, as it is typed.

use leptos::prelude::*;

use crate::components::playground::Playground;
use crate::components::{field_error, number_input_is_bad};
use crate::draft::{Draft, NUMBER_FIELDS};

/// One number setting: its name and range, the number box, what it does, and its error.
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
    let spec = NUMBER_FIELDS.iter().copied().find(|f| f.field == field);
    let (min, max, step) = (spec.map(|f| f.min), spec.and_then(|f| f.max), spec.map(|f| f.step));
    let range = spec.map(|f| f.range_text()).unwrap_or_default();
    let on_input = move |ev: leptos::ev::Event| {
        let bad = number_input_is_bad(&ev);
        pg.bad_numbers.update(|b| {
            b.retain(|f| *f != field);
            if bad {
                b.push(field);
            }
        });
        if !bad {
            write(event_target_value(&ev));
        }
    };
    let error = Signal::derive(move || pg.param_error().get().or_else(|| pg.any_err().get()));
    view! {
        <div class="param">
            <div class="param-head">
                <label class="label small" for=field>{label}<span class="range">{range}</span></label>
                <input class="num-input" type="number" inputmode="decimal" id=field data-testid=field min=min max=max step=step prop:value=value on:input=on_input/>
            </div>
            <p class="hint">{hint}</p>
            {field_error(error, field)}
        </div>
    }
}

#[component]
pub fn ParametersPanel() -> impl IntoView {
    let pg = Playground::get();
    let (stop, write_stop) = pg.bind(|d| d.params.stop.clone(), |d, v| d.params.stop = v);
    let error = Signal::derive(move || pg.param_error().get().or_else(|| pg.any_err().get()));
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
                <textarea class="mono" rows="2" data-testid="parameters.stop" aria-label="Stop sequences" prop:value=stop on:input=move |ev| write_stop(event_target_value(&ev))></textarea>
                <p class="hint">"The answer ends where one of these appears. One per line; \\n is a line break."</p>
                {field_error(error, "parameters.stop")}
            </div>
            <ParamField label="Seed" hint="Same seed and settings give the same answer even when sampling. Empty = random." get=|d| d.params.seed.clone() set=|d, v| d.params.seed = v field="parameters.seed"/>
        </div>
    }
}
