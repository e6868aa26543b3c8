//! The playground's run history: the last runs of each draft or template, kept in this
//! browser, each with everything needed to restore it (the whole draft, values included)
//! and to turn it into a test case (its output).

use serde::{Deserialize, Serialize};

use crate::draft::Draft;

/// Runs kept per template (and for the unsaved draft); the oldest go first.
pub const MAX_HISTORY: usize = 20;
/// Characters of output kept per run (a longer answer is kept cut, and says so).
pub const MAX_OUTPUT_CHARS: usize = 4_000;

/// One finished (or stopped) run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Unix milliseconds when it started.
    pub at_ms: f64,
    /// The draft as it ran: restoring it gives back this exact prompt and these values.
    pub draft: Draft,
    pub output: String,
    #[serde(default)]
    pub output_cut: bool,
    pub finish: Option<String>,
    pub ttft_ms: Option<f64>,
    pub tokens: usize,
    pub tokens_per_s: Option<f64>,
}

impl HistoryEntry {
    pub fn new(at_ms: f64, draft: Draft, output: &str) -> Self {
        let cut = output.chars().count() > MAX_OUTPUT_CHARS;
        let output = if cut { output.chars().take(MAX_OUTPUT_CHARS).collect() } else { output.to_string() };
        Self { at_ms, draft, output, output_cut: cut, finish: None, ttft_ms: None, tokens: 0, tokens_per_s: None }
    }
}

/// The local-storage key of a template's history (`None`: the unsaved draft's).
pub fn history_key(template: Option<&str>) -> String {
    format!("studio.history.{}", template.unwrap_or(""))
}

/// Adds a run at the front; keeps the newest [`MAX_HISTORY`].
pub fn push(list: &mut Vec<HistoryEntry>, entry: HistoryEntry) {
    list.insert(0, entry);
    list.truncate(MAX_HISTORY);
}

/// The history kept under `key` (empty when there is none or it cannot be read).
pub fn load(key: &str) -> Vec<HistoryEntry> {
    let mut list: Vec<HistoryEntry> =
        crate::draft::storage_get(key).and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
    list.truncate(MAX_HISTORY);
    list
}

pub fn store(key: &str, list: &[HistoryEntry]) {
    if let Ok(s) = serde_json::to_string(list) {
        crate::draft::storage_set(key, &s);
    }
}

/// The draft a restored run gives: the run's content and values, on the template and
/// version being edited now (restoring never moves the draft to another template).
pub fn restored(entry: &HistoryEntry, current: &Draft) -> Draft {
    Draft { template: current.template.clone(), base_version: current.base_version, ..entry.draft.clone() }
}

/// The expected output a run suggests for a test case: its text without the leading space
/// the model writes after the output prefix, and without a trailing newline.
pub fn suggested_expected(entry: &HistoryEntry) -> String {
    entry.output.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_bounded_newest_first_and_round_trips_korean() {
        let mut list = Vec::new();
        for i in 0..(MAX_HISTORY + 5) {
            let mut d = Draft::default();
            d.variables.insert("리뷰".into(), format!("리뷰 {i}"));
            push(&mut list, HistoryEntry::new(i as f64, d, &format!(" 긍정 {i}\n")));
        }
        assert_eq!(list.len(), MAX_HISTORY);
        assert_eq!(list[0].at_ms, (MAX_HISTORY + 4) as f64, "newest first");
        assert_eq!(list.last().unwrap().at_ms, 5.0, "the oldest went");
        let text = serde_json::to_string(&list).unwrap();
        let back: Vec<HistoryEntry> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, list);
        assert_eq!(suggested_expected(&list[0]), format!("긍정 {}", MAX_HISTORY + 4));
    }

    #[test]
    fn long_outputs_are_cut_on_a_character_and_restoring_keeps_the_template() {
        let e = HistoryEntry::new(0.0, Draft::default(), &"가".repeat(MAX_OUTPUT_CHARS + 10));
        assert!(e.output_cut);
        assert_eq!(e.output.chars().count(), MAX_OUTPUT_CHARS);
        let mut ran = Draft { instruction: "예전 지시".into(), template: Some("old".into()), ..Draft::default() };
        ran.variables.insert("x".into(), "값".into());
        let entry = HistoryEntry::new(0.0, ran.clone(), "out");
        let now = Draft { template: Some("movie".into()), base_version: Some(3), ..Draft::default() };
        let d = restored(&entry, &now);
        assert_eq!((d.template.as_deref(), d.base_version), (Some("movie"), Some(3)));
        assert_eq!((d.instruction.as_str(), d.variables["x"].as_str()), ("예전 지시", "값"));
    }
}
