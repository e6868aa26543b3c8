pub mod attention;
pub mod kv_cache;
