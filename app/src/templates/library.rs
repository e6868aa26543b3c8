//! The shipped template library: the `prompts/*.toml` files, read and validated. Importing
//! them into the store is `Store::import_library`.

use std::path::{Path, PathBuf};

use crate::templates::TemplateFile;

/// Where the library is: `STUDIO_PROMPTS_DIR`, else `./prompts`.
pub fn prompts_dir() -> PathBuf {
    std::env::var_os("STUDIO_PROMPTS_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("prompts"))
}

/// The library's files, sorted by name.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// Reads and validates one file; the error names the file, line and field.
pub fn read(path: &Path) -> Result<TemplateFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    TemplateFile::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}
