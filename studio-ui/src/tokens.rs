//! The token-confidence view: each generated piece of text shaded by the probability the
//! model gave it; hovering or tapping shows the alternatives it considered.

use std::collections::BTreeMap;

use api_types::completions::Choice;
use leptos::prelude::*;

/// One visible piece of output: whole characters only. Tokens that end in the middle of a
/// character (common for Korean/Japanese byte-level tokens) are merged with the next.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub text: String,
    /// Probability of the least likely token in this piece.
    pub prob: f64,
    /// The model's top alternatives at the piece's first token: (text, probability).
    pub alternatives: Vec<(String, f64)>,
    pub tokens: usize,
}

/// Accumulates streamed completion chunks into pieces.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PieceBuilder {
    pub pieces: Vec<Piece>,
    pending: Option<Piece>,
}

impl PieceBuilder {
    /// One streamed chunk's choice (`text` plus OpenAI `logprobs` for one token).
    pub fn push_choice(&mut self, choice: &Choice) {
        let text = choice.text.as_str();
        let lp = choice.logprobs.as_ref();
        let logprob = lp.and_then(|l| l.token_logprobs.first().copied().flatten()).map(f64::from);
        // The final chunk carries only text that was held back: it belongs to the last piece.
        if logprob.is_none() && self.pending.is_none() {
            match self.pieces.last_mut() {
                _ if text.is_empty() => return,
                Some(last) => {
                    last.text.push_str(text);
                    return;
                }
                None => {}
            }
        }
        let mut piece = self.pending.take().unwrap_or(Piece {
            text: String::new(),
            prob: 1.0,
            alternatives: lp
                .and_then(|l| l.top_logprobs.first())
                .and_then(Option::as_ref)
                .map(alternatives)
                .unwrap_or_default(),
            tokens: 0,
        });
        if let Some(l) = logprob {
            piece.prob = piece.prob.min(l.exp());
            piece.tokens += 1;
        }
        piece.text.push_str(text);
        if piece.text.is_empty() {
            if piece.tokens > 0 {
                self.pending = Some(piece);
            }
            return;
        }
        self.pieces.push(piece);
    }

    pub fn text(&self) -> String {
        self.pieces.iter().map(|p| p.text.as_str()).collect()
    }
}

fn alternatives(top: &BTreeMap<String, f32>) -> Vec<(String, f64)> {
    let mut alts: Vec<(String, f64)> = top.iter().map(|(k, &v)| (k.clone(), f64::from(v).exp())).collect();
    alts.sort_by(|a, b| b.1.total_cmp(&a.1));
    alts
}

/// How a token's text is shown: whitespace made visible, a partial character named.
pub fn show_token(t: &str) -> String {
    if t.contains('\u{FFFD}') {
        return "‹part of a character›".into();
    }
    let s = t.replace('\n', "⏎").replace(' ', "␣");
    if s.is_empty() {
        "‹end›".into()
    } else {
        s
    }
}

fn shade(prob: f64) -> String {
    // Red (unsure) through amber to green (sure), light enough to read text on.
    let hue = (prob.clamp(0.0, 1.0) * 120.0).round();
    format!("background: hsl({hue} 75% 88%)")
}

#[component]
pub fn TokenView(pieces: Signal<Vec<Piece>>) -> impl IntoView {
    let selected = RwSignal::new(None::<usize>);
    // Roving focus: one piece is in the tab order (Tab reaches the output once, arrows move
    // between pieces, Enter or Space opens a piece's alternatives).
    let focused = RwSignal::new(0usize);
    let toggle = move |i: usize| selected.update(|s| *s = if *s == Some(i) { None } else { Some(i) });
    let keydown = move |i: usize, ev: leptos::ev::KeyboardEvent| {
        use leptos::wasm_bindgen::JsCast;
        let key = ev.key();
        match key.as_str() {
            "Enter" | " " if !ev.ctrl_key() && !ev.meta_key() => {
                ev.prevent_default();
                toggle(i);
            }
            "ArrowRight" | "ArrowLeft" | "Home" | "End" => {
                ev.prevent_default();
                let el = event_target::<leptos::web_sys::HtmlElement>(&ev);
                let target = match key.as_str() {
                    "ArrowRight" => el.next_element_sibling(),
                    "ArrowLeft" => el.previous_element_sibling(),
                    "Home" => el.parent_element().and_then(|p| p.first_element_child()),
                    _ => el.parent_element().and_then(|p| p.last_element_child()),
                };
                if let Some(t) = target.and_then(|t| t.dyn_into::<leptos::web_sys::HtmlElement>().ok()) {
                    let _ = t.focus();
                }
            }
            _ => {}
        }
    };
    let in_tab_order = move |i: usize| {
        let n = pieces.with(Vec::len);
        i == focused.get().min(n.saturating_sub(1))
    };
    view! {
        <div class="tokens" data-testid="token-view" role="group" aria-label="Output pieces: arrows move, Enter shows alternatives">
            <For
                each={move || pieces.get().into_iter().enumerate().collect::<Vec<_>>()}
                key={|item: &(usize, Piece)| (item.0, item.1.text.clone())}
                children={move |item: (usize, Piece)| {
                    let (i, p) = item;
                    let title = p
                        .alternatives
                        .iter()
                        .map(|(t, pr)| format!("{} {:.0}%", show_token(t), pr * 100.0))
                        .collect::<Vec<_>>()
                        .join("  ·  ");
                    let title = format!("p = {:.0}%  |  {}", p.prob * 100.0, title);
                    let label = format!("{}, {:.0}%", show_token(&p.text), p.prob * 100.0);
                    view! {
                        <span
                            class="tok"
                            class:selected=move || selected.get() == Some(i)
                            style=shade(p.prob)
                            title=title
                            role="button"
                            aria-label=label
                            aria-pressed=move || (selected.get() == Some(i)).to_string()
                            tabindex=move || if in_tab_order(i) { "0" } else { "-1" }
                            on:focus=move |_| focused.set(i)
                            on:keydown=move |ev| keydown(i, ev)
                            on:click=move |_| toggle(i)
                        >
                            {p.text.clone()}
                        </span>
                    }
                }}
            />
        </div>
        {move || {
            let i = selected.get()?;
            let p = pieces.with(|ps| ps.get(i).cloned())?;
            Some(view! {
                <div class="alts" role="region" aria-live="polite" aria-label="Alternatives">
                    <div class="alts-head">
                        <b>{show_token(&p.text)}</b>
                        " chosen with probability "
                        <b>{format!("{:.1}%", p.prob * 100.0)}</b>
                        {if p.tokens > 1 { format!(" ({} tokens merged into whole characters)", p.tokens) } else { String::new() }}
                    </div>
                    <table>
                        <tbody>
                            {p.alternatives
                                .iter()
                                .map(|(t, pr)| {
                                    let w = format!("width: {:.0}%", pr * 100.0);
                                    view! {
                                        <tr>
                                            <td class="mono">{show_token(t)}</td>
                                            <td class="bar"><span style=w></span></td>
                                            <td class="num">{format!("{:.1}%", pr * 100.0)}</td>
                                        </tr>
                                    }
                                })
                                .collect_view()}
                        </tbody>
                    </table>
                </div>
            })
        }}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chunk(text: &str, lp: f64) -> Choice {
        serde_json::from_value(json!({ "text": text, "index": 0, "finish_reason": null, "logprobs": { "tokens": ["x"],
            "token_logprobs": [lp], "top_logprobs": [{ "a": -0.1, "b": -2.0 }], "text_offset": [0] } }))
        .unwrap()
    }

    #[test]
    fn tokens_ending_inside_a_character_merge_into_the_next_piece() {
        let mut b = PieceBuilder::default();
        b.push_choice(&chunk("", (0.5f64).ln()));
        b.push_choice(&chunk("긍", (0.9f64).ln()));
        b.push_choice(&chunk("정", (0.8f64).ln()));
        assert_eq!(b.pieces.len(), 2);
        assert_eq!(b.pieces[0].text, "긍");
        assert_eq!(b.pieces[0].tokens, 2);
        assert!((b.pieces[0].prob - 0.5).abs() < 1e-6);
        assert_eq!(b.text(), "긍정");
        assert_eq!(b.pieces[0].alternatives[0].0, "a");
    }

    #[test]
    fn partial_characters_are_never_shown_as_broken_bytes() {
        assert_eq!(show_token("\u{FFFD}"), "‹part of a character›");
        assert_eq!(show_token(" a\n"), "␣a⏎");
    }
}
