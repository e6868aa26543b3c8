//! The batch page's parts: a dataset (chosen or pasted) checked against a version, its
//! run with a progress bar, cancel and the results download, and the template's earlier
//! batches.

mod history;
mod run;
mod state;

pub use history::HistoryCard;
pub use run::{DatasetCard, ProgressCard};
pub use state::{BatchPage, HISTORY_LIMIT};
