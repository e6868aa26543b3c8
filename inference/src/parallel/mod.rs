pub mod comm;
pub mod linear;
