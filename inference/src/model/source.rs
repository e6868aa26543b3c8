//! Where weights come from: a GGUF file (quantized) or a Hugging Face directory of
//! safetensors. Model files ask for tensors by name and get [`Weight`]s.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::quantized::gguf_file;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::Device;

use crate::error::{EngineError, Result};
use crate::weight::Weight;

pub enum WeightSource {
    Gguf { path: PathBuf, content: gguf_file::Content, reader: Mutex<BufReader<File>> },
    Safetensors { dir: PathBuf, tensors: MmapedSafetensors },
}

impl std::fmt::Debug for WeightSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WeightSource::Gguf { path, .. } => write!(f, "Gguf({})", path.display()),
            WeightSource::Safetensors { dir, .. } => write!(f, "Safetensors({})", dir.display()),
        }
    }
}

impl WeightSource {
    pub fn open_gguf(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
        let mut reader = BufReader::new(file);
        let content = gguf_file::Content::read(&mut reader).map_err(|e| EngineError::BadModel {
            path: path.to_path_buf(),
            reason: format!("not a readable GGUF file: {e}"),
        })?;
        Ok(Self::Gguf { path: path.to_path_buf(), content, reader: Mutex::new(reader) })
    }

    pub fn open_safetensors_dir(dir: &Path) -> Result<Self> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| EngineError::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(EngineError::BadModel { path: dir.to_path_buf(), reason: "no *.safetensors file".into() });
        }
        // SAFETY: a mapping is sound while nobody changes the file under it: these are
        // mapped read-only, the engine never writes them, and model files are not rewritten
        // while a model is loaded from them (as for any memory-mapped weights).
        let tensors = unsafe { MmapedSafetensors::multi(&files) }.map_err(|e| EngineError::BadModel {
            path: dir.to_path_buf(),
            reason: format!("unreadable safetensors: {e}"),
        })?;
        Ok(Self::Safetensors { dir: dir.to_path_buf(), tensors })
    }

    pub fn gguf_metadata(&self) -> Option<&HashMap<String, gguf_file::Value>> {
        match self {
            WeightSource::Gguf { content, .. } => Some(&content.metadata),
            WeightSource::Safetensors { .. } => None,
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            WeightSource::Gguf { path, .. } => path,
            WeightSource::Safetensors { dir, .. } => dir,
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        match self {
            WeightSource::Gguf { content, .. } => content.tensor_infos.contains_key(name),
            WeightSource::Safetensors { tensors, .. } => tensors.get(name).is_ok(),
        }
    }

    pub fn get(&self, name: &str, device: &Device) -> Result<Weight> {
        let bad = |reason: String| EngineError::BadModel { path: self.path().to_path_buf(), reason };
        match self {
            WeightSource::Gguf { content, reader, .. } => {
                let mut reader = reader.lock().expect("weight reader poisoned");
                let q = content.tensor(&mut *reader, name, device).map_err(|e| bad(format!("tensor {name}: {e}")))?;
                Ok(Weight::Quant(std::sync::Arc::new(q)))
            }
            WeightSource::Safetensors { tensors, .. } => {
                let t = tensors
                    .load(name, device)
                    .map_err(|e| bad(format!("tensor {name}: {e}")))?
                    .to_dtype(candle_core::DType::F32)
                    .map_err(|e| bad(format!("tensor {name}: {e}")))?;
                Ok(Weight::Dense(t))
            }
        }
    }
}

/// Typed access to GGUF metadata with errors that name the missing key.
pub struct Metadata<'a> {
    pub md: &'a HashMap<String, gguf_file::Value>,
    pub path: &'a Path,
}

impl Metadata<'_> {
    fn bad(&self, reason: String) -> EngineError {
        EngineError::BadModel { path: self.path.to_path_buf(), reason }
    }
    pub fn get(&self, key: &str) -> Option<&gguf_file::Value> {
        self.md.get(key)
    }
    pub fn u32(&self, key: &str) -> Result<u32> {
        let v = self.md.get(key).ok_or_else(|| self.bad(format!("metadata key {key} missing")))?;
        v.to_u32()
            .or_else(|_| v.to_i32().map(|x| x as u32))
            .or_else(|_| v.to_u64().map(|x| x as u32))
            .map_err(|e| self.bad(format!("metadata key {key}: {e}")))
    }
    pub fn f32(&self, key: &str) -> Result<f32> {
        let v = self.md.get(key).ok_or_else(|| self.bad(format!("metadata key {key} missing")))?;
        v.to_f32().map_err(|e| self.bad(format!("metadata key {key}: {e}")))
    }
    pub fn u32_or(&self, key: &str, default: u32) -> Result<u32> {
        if self.md.contains_key(key) {
            self.u32(key)
        } else {
            Ok(default)
        }
    }
    pub fn f32_or(&self, key: &str, default: f32) -> Result<f32> {
        if self.md.contains_key(key) {
            self.f32(key)
        } else {
            Ok(default)
        }
    }
    pub fn string(&self, key: &str) -> Option<String> {
        self.md.get(key).and_then(|v| v.to_string().ok().cloned())
    }
}
