//! The run's output: the answer in the token-confidence view, and the run's figures.

use leptos::prelude::*;

use crate::components::playground::Playground;
use crate::components::{ErrorNote, Stat};
use crate::tokens::TokenView;

#[component]
pub fn RunOutput() -> impl IntoView {
    let pg = Playground::get();
    let (pieces, stats, running, prefill) = (pg.pieces, pg.stats, pg.running, pg.prefill);
    view! {
        <div class="card output-card">
            <div class="card-head">
                <h3>"Output"</h3>
                <span class="muted">{move || if running.get() { "generating…".to_string() } else { stats.with(|s| s.finish.clone().map(|f| format!("finished: {f}")).unwrap_or_default()) }}</span>
            </div>
            <div class="output" data-testid="output">
                {move || prefill.get().filter(|_| pieces.with(Vec::is_empty)).map(|p| view! {
                    <p class="muted" data-testid="prefill-progress">{reading_text(p.done, p.total)}</p>
                })}
                {move || if pieces.with(|p| p.is_empty()) && !running.get() {
                    view! { <p class="placeholder">"Run the prompt to see the model's answer here, token by token."</p> }.into_any()
                } else {
                    view! { <TokenView pieces=pieces.into()/> }.into_any()
                }}
            </div>
            <ErrorNote error=pg.run_error beside_fields=true/>
            <div class="stats" data-testid="stats">
                <Stat label="First token" value=Signal::derive(move || stats.with(|s| s.ttft_text()))/>
                <Stat label="Speed" value=Signal::derive(move || stats.with(|s| s.speed_text()))/>
                <Stat label="Generated" value=Signal::derive(move || stats.with(|s| format!("{} tokens", s.tokens)))/>
                <Stat label="Prompt" testid="prefill-stats" value=Signal::derive(move || stats.with(|s| match (s.prompt_tokens, s.cached_tokens) {
                    (Some(p), Some(c)) => format!("{} prefilled · {} from cache", p.saturating_sub(c), c),
                    _ => "–".into(),
                }))/>
            </div>
            <p class="hint">"Each piece is shaded by how sure the model was (green = sure, red = unsure). Hover or tap one to see the alternatives."</p>
        </div>
    }
}

/// "Reading the prompt: 2,048 / 10,014 tokens".
fn reading_text(done: usize, total: usize) -> String {
    format!("Reading the prompt: {} / {} tokens", grouped(done), grouped(total))
}

/// 10014 → "10,014".
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefill_progress_reads_with_thousands_separators() {
        assert_eq!(super::reading_text(2048, 10_014), "Reading the prompt: 2,048 / 10,014 tokens");
        assert_eq!(super::reading_text(0, 999), "Reading the prompt: 0 / 999 tokens");
        assert_eq!(super::grouped(1_000_000), "1,000,000");
    }
}
