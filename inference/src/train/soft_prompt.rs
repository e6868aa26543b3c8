//! A soft prompt: `k` virtual token embeddings trained for one model, and its byte form.
//!
//! The rows live in the space the model's decoder layers read: for Gemma that is the
//! token embeddings *after* their `sqrt(hidden)` scale, so a soft prompt is never scaled
//! again (initialised from token embeddings, it takes them scaled). The serving path puts
//! the rows where [`splice_point`] says, as the training did.
//!
//! Bytes (little-endian): `b"STSP"`, version `u32` (1), `k: u32`, `hidden: u32`,
//! `name_len: u32`, the model name (UTF-8), then `k * hidden` `f32`s row by row.

use base64::Engine as _;

const MAGIC: &[u8; 4] = b"STSP";
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SoftPromptError {
    #[error("soft prompt has {len} values, not a whole number of rows of {hidden}")]
    Shape { len: usize, hidden: usize },
    #[error("soft prompt bytes: {0}")]
    Bytes(String),
    #[error("soft prompt base64: {0}")]
    Base64(String),
    #[error("soft prompt was trained on {trained_on}; it cannot be used with {used_with}")]
    WrongModel { trained_on: String, used_with: String },
}

/// `k × hidden` virtual token embeddings for the model named `model`.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftPrompt {
    pub model: String,
    pub hidden_size: usize,
    /// Row-major, `virtual_tokens() * hidden_size` values.
    pub embeddings: Vec<f32>,
}

impl SoftPrompt {
    pub fn new(model: impl Into<String>, hidden_size: usize, embeddings: Vec<f32>) -> Result<Self, SoftPromptError> {
        if hidden_size == 0 || !embeddings.len().is_multiple_of(hidden_size) {
            return Err(SoftPromptError::Shape { len: embeddings.len(), hidden: hidden_size });
        }
        Ok(Self { model: model.into(), hidden_size, embeddings })
    }

    pub fn virtual_tokens(&self) -> usize {
        self.embeddings.len() / self.hidden_size
    }

    /// The rows as a `[k, hidden]` tensor.
    pub fn to_tensor(
        &self,
        dtype: candle_core::DType,
        device: &candle_core::Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        candle_core::Tensor::from_slice(&self.embeddings, (self.virtual_tokens(), self.hidden_size), device)?
            .to_dtype(dtype)
    }

    /// Fails naming both models unless this was trained on `model`.
    pub fn check_model(&self, model: &str) -> Result<(), SoftPromptError> {
        if self.model == model {
            Ok(())
        } else {
            Err(SoftPromptError::WrongModel { trained_on: self.model.clone(), used_with: model.to_string() })
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let name = self.model.as_bytes();
        let mut out = Vec::with_capacity(20 + name.len() + 4 * self.embeddings.len());
        out.extend_from_slice(MAGIC);
        for v in [VERSION, self.virtual_tokens() as u32, self.hidden_size as u32, name.len() as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(name);
        for v in &self.embeddings {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SoftPromptError> {
        let bad = |why: &str| SoftPromptError::Bytes(why.to_string());
        if bytes.len() < 20 || &bytes[..4] != MAGIC {
            return Err(bad("not a soft prompt (no STSP header)"));
        }
        let word = |i: usize| u32::from_le_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize;
        let (version, k, hidden, name_len) = (word(0), word(1), word(2), word(3));
        if version != VERSION as usize {
            return Err(SoftPromptError::Bytes(format!("version {version}; this build reads version {VERSION}")));
        }
        let body = &bytes[20..];
        let want = k.checked_mul(hidden).and_then(|n| n.checked_mul(4)).and_then(|n| n.checked_add(name_len));
        if want != Some(body.len()) {
            return Err(SoftPromptError::Bytes(format!(
                "{} bytes after the header; {k} × {hidden} values and a {name_len}-byte name need {}",
                body.len(),
                want.map_or("more".to_string(), |n| n.to_string())
            )));
        }
        let model = std::str::from_utf8(&body[..name_len]).map_err(|_| bad("model name is not UTF-8"))?;
        let embeddings =
            body[name_len..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
        Self::new(model, hidden, embeddings)
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.to_bytes())
    }

    pub fn from_base64(text: &str) -> Result<Self, SoftPromptError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| SoftPromptError::Base64(e.to_string()))?;
        Self::from_bytes(&bytes)
    }
}

/// Where the soft prompt goes in a prompt's tokens: right after a leading BOS (models are
/// trained with BOS first, and Gemma's attention leans on it), else at the front.
pub fn splice_point(prompt: &[u32], bos: Option<u32>) -> usize {
    match (prompt.first(), bos) {
        (Some(first), Some(bos)) if *first == bos => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_base64_round_trip_and_bad_input_is_named() {
        let sp = SoftPrompt::new("gemma3-270m", 3, vec![0.5, -1.25, 3.0, f32::MIN_POSITIVE, 7.0, -0.0]).unwrap();
        assert_eq!(sp.virtual_tokens(), 2);
        let back = SoftPrompt::from_bytes(&sp.to_bytes()).unwrap();
        assert_eq!(back, sp);
        assert_eq!(
            back.embeddings.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            sp.embeddings.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(SoftPrompt::from_base64(&sp.to_base64()).unwrap(), sp);

        let bytes = sp.to_bytes();
        assert!(matches!(SoftPrompt::from_bytes(&bytes[..bytes.len() - 1]), Err(SoftPromptError::Bytes(_))));
        assert!(matches!(SoftPrompt::from_bytes(b"nope"), Err(SoftPromptError::Bytes(_))));
        assert!(matches!(SoftPrompt::from_base64("***"), Err(SoftPromptError::Base64(_))));
        assert_eq!(SoftPrompt::new("m", 4, vec![0.0; 6]), Err(SoftPromptError::Shape { len: 6, hidden: 4 }));
        assert_eq!(
            sp.check_model("smollm2-135m").unwrap_err().to_string(),
            "soft prompt was trained on gemma3-270m; it cannot be used with smollm2-135m"
        );
    }

    #[test]
    fn splice_point_is_after_a_leading_bos() {
        assert_eq!(splice_point(&[2, 5, 6], Some(2)), 1);
        assert_eq!(splice_point(&[5, 6], Some(2)), 0);
        assert_eq!(splice_point(&[2, 5], None), 0);
        assert_eq!(splice_point(&[], Some(2)), 0);
    }
}
