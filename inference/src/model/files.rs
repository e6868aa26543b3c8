//! Finding models: what a model's files hold before any weight is read, and the
//! installed-model registry.

use std::path::{Path, PathBuf};

use super::family::FamilyConfig;
use super::source::{Metadata, WeightSource};
use super::{gemma3, llama};
use crate::error::{EngineError, Result};
use crate::tokenizer::Tokenizer;

/// Where a model's files are and what they hold, before any weight is read.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub name: String,
    pub path: PathBuf,
    pub config: FamilyConfig,
}

impl ModelFiles {
    /// A `.gguf` file, or a directory with `config.json` + `*.safetensors` + `tokenizer.json`
    /// (llama family), or a directory holding one `.gguf`.
    pub fn inspect(path: &Path) -> Result<(Self, Tokenizer)> {
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if path.is_dir() {
            if path.join("config.json").exists() {
                let cfg = llama::Config::from_config_json(&path.join("config.json"))?;
                let tok = Tokenizer::from_tokenizer_json(&path.join("tokenizer.json"))?;
                let files = Self { name, path: path.to_path_buf(), config: FamilyConfig::Llama(cfg) };
                return Ok((files, tok));
            }
            let gguf = find_gguf(path)?.ok_or_else(|| EngineError::BadModel {
                path: path.to_path_buf(),
                reason: "no .gguf file and no config.json".into(),
            })?;
            let (mut files, tok) = Self::inspect(&gguf)?;
            files.name = name;
            return Ok((files, tok));
        }
        let src = WeightSource::open_gguf(path)?;
        let md = Metadata { md: src.gguf_metadata().expect("gguf"), path };
        let arch = md.string("general.architecture").unwrap_or_default();
        let config = match arch.as_str() {
            "gemma3" => FamilyConfig::Gemma3(gemma3::Config::from_gguf(&md)?),
            "llama" => FamilyConfig::Llama(llama::Config::from_gguf(&md)?),
            other => return Err(EngineError::UnsupportedArchitecture(other.to_string())),
        };
        let tok = Tokenizer::from_gguf(md.md)?;
        Ok((Self { name, path: path.to_path_buf(), config }, tok))
    }

    /// The weights, opened for loading.
    pub(crate) fn open(&self) -> Result<WeightSource> {
        if self.path.is_dir() {
            if self.path.join("config.json").exists() {
                return WeightSource::open_safetensors_dir(&self.path);
            }
            let gguf = find_gguf(&self.path)?.expect("inspected before");
            return WeightSource::open_gguf(&gguf);
        }
        WeightSource::open_gguf(&self.path)
    }
}

fn find_gguf(dir: &Path) -> Result<Option<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| EngineError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    found.sort();
    Ok(found.into_iter().next())
}

/// The models directory: `$STUDIO_MODELS_DIR`, else `./models`.
pub fn models_dir() -> PathBuf {
    std::env::var_os("STUDIO_MODELS_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("models"))
}

/// Installed models: each subdirectory of the models directory holding a `.gguf` or a
/// Hugging Face checkpoint, by directory name.
pub fn installed_models(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<(String, PathBuf)> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && (p.join("config.json").exists() || matches!(find_gguf(p), Ok(Some(_)))))
        .map(|p| (p.file_name().unwrap_or_default().to_string_lossy().into_owned(), p))
        .collect();
    out.sort();
    out
}

/// A model name (`gemma3-270m`), or a path to a `.gguf` file or checkpoint directory.
pub fn resolve_model(name_or_path: &str) -> Result<PathBuf> {
    let p = PathBuf::from(name_or_path);
    if p.exists() {
        return Ok(p);
    }
    let candidate = models_dir().join(name_or_path);
    if candidate.exists() {
        return Ok(candidate);
    }
    Err(EngineError::UnknownModel(name_or_path.to_string()))
}
