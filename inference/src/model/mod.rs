pub mod gemma3;
pub mod llama;
pub mod sharded;
pub mod source;
