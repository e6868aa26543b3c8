//! Models: finding and reading a model's files, the families we run (each in one file
//! that reads like its reference: serde `Config`, `load`, `forward`), and the group of
//! rank threads that holds one loaded model.

pub mod family;
pub mod files;
pub mod gemma3;
pub mod llama;
pub mod sharded;
pub mod source;

pub use family::{Family, FamilyConfig};
pub use files::{installed_models, models_dir, resolve_model, ModelFiles};
#[cfg(any(test, feature = "fault-injection"))]
pub use sharded::Fault;
pub use sharded::ShardedModel;
pub use source::{Metadata, WeightSource};
