pub mod batched;
mod int8;
mod pages;
pub mod pool;
