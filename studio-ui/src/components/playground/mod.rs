//! The playground's parts: the prompt editor (title, instruction, examples, input,
//! format, output constraint, preview), the run card (run, save, code), the output and the parameters.

mod constraint;
mod editor;
mod examples;
mod history;
mod output;
mod params;
mod run;
mod state;

pub use constraint::OutputConstraintCard;
pub use editor::{DraftHeader, DraftText, FormatPanel, InputCard, ModeCard, PromptPreview};
pub use examples::ExamplesEditor;
pub use history::RunHistory;
pub use output::RunOutput;
pub use params::ParametersPanel;
pub use run::{CodePanel, RunCard};
pub use state::{vars_key, DraftRun, Playground, SAVED_MESSAGE_KEY};
