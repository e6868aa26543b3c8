pub mod batch;
pub mod compare;
pub mod evaluate;
pub mod library;
pub mod playground;
pub mod template;
