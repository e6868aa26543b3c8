//! A streamed run's figures (time to first token, speed, tokens, prefix cache), counted
//! as the chunks arrive, and how one is shown.

use api_types::completions::Completion;
use leptos::prelude::*;

use crate::api;

/// Figures of a run so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunStats {
    pub ttft_ms: Option<f64>,
    pub tokens: usize,
    pub tokens_per_s: Option<f64>,
    pub prompt_tokens: Option<usize>,
    pub cached_tokens: Option<usize>,
    pub finish: Option<String>,
}

impl RunStats {
    pub fn ttft_text(&self) -> String {
        self.ttft_ms.map(|t| format!("{t:.0} ms")).unwrap_or("–".into())
    }

    pub fn speed_text(&self) -> String {
        self.tokens_per_s.map(|t| format!("{t:.1} tok/s")).unwrap_or("–".into())
    }
}

/// Counts a run's chunks against the clock from when it started.
#[derive(Debug, Clone)]
pub struct RunClock {
    start: f64,
    first: Option<f64>,
    pub stats: RunStats,
}

impl RunClock {
    pub fn start() -> Self {
        Self { start: api::now_ms(), first: None, stats: RunStats::default() }
    }

    /// One chunk arrived; `token`: it carries a generated token.
    pub fn chunk(&mut self, chunk: &Completion, token: bool) {
        let now = api::now_ms();
        let s = &mut self.stats;
        if token {
            s.tokens += 1;
            self.first.get_or_insert(now);
        }
        s.ttft_ms = self.first.map(|f| f - self.start);
        if let Some(f) = self.first.filter(|f| s.tokens > 1 && now > *f) {
            s.tokens_per_s = Some((s.tokens - 1) as f64 / ((now - f) / 1000.0));
        }
        if let Some(reason) = chunk.choices.first().and_then(|c| c.finish_reason) {
            s.finish = Some(reason.as_str().to_string());
        }
        if let Some(u) = &chunk.usage {
            s.prompt_tokens = Some(u.prompt_tokens);
            s.cached_tokens = Some(u.prompt_tokens_details.cached_tokens);
        }
    }
}

/// One figure: its name and value.
#[component]
pub fn Stat(
    label: &'static str,
    #[prop(into)] value: Signal<String>,
    #[prop(optional)] testid: Option<&'static str>,
) -> impl IntoView {
    view! { <div><span class="k">{label}</span><span class="v" data-testid=testid>{value}</span></div> }
}
