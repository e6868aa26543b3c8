//! The shipped template library: every `prompts/*.toml` is imported at start. Idempotent:
//! an unchanged file writes nothing; a changed file becomes the template's next version.
//! A broken file is reported and skipped; it never stops the server.

use std::path::{Path, PathBuf};

use crate::store::{ImportOutcome, Store};
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

/// Imports every file of `dir`; one result per file.
pub async fn load(store: &Store, dir: &Path) -> Vec<(PathBuf, Result<ImportOutcome, String>)> {
    let mut out = Vec::new();
    for path in files(dir) {
        let result = match read(&path) {
            Ok(file) => {
                store.import_file(&file, "prompts/", "library").await.map_err(|e| format!("{}: {e}", path.display()))
            }
            Err(e) => Err(e),
        };
        out.push((path, result));
    }
    out
}
