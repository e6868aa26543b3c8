//! The evaluate page's parts: the test set (rows, a new row, import), an eval run with its
//! progress, the rows × versions results (with latency, and a confusion matrix for label
//! tasks) and the pass rate over time, run-vs-run flips,
//! few-shot selection, and the production eval gate.

mod flips;
pub mod labels;
mod results;
mod run;
mod selection;
mod state;
mod tests;

pub use flips::FlipsCard;
pub use results::ResultsCard;
pub use run::RunEvalCard;
pub use selection::SelectionCard;
pub use state::{EvalGateToggle, Evaluate, MatrixColumn};
pub use tests::TestSetCard;
