//! A version's content, metadata, limits, validation and rendering: the types are shared
//! with the studio ([`api_types::template`]); tokenizing the rendered prompt, which needs
//! the model's tokenizer, is here.

pub use api_types::template::*;

/// Token ids of a rendered prompt.
pub trait TokenIds {
    /// The prefix (with BOS) and the suffix encoded apart, then joined; and the prefix's
    /// length in tokens.
    fn token_ids(&self, tok: &inference::Tokenizer) -> Result<(Vec<u32>, usize), inference::tokenizer::TokenizerError>;
}

impl TokenIds for Rendered {
    fn token_ids(&self, tok: &inference::Tokenizer) -> Result<(Vec<u32>, usize), inference::tokenizer::TokenizerError> {
        // A chat template writes any BOS itself.
        let bos = !self.chat;
        if self.prefix.is_empty() {
            return Ok((tok.encode(&self.suffix, bos)?, 0));
        }
        let mut ids = tok.encode(&self.prefix, bos)?;
        let prefix_len = ids.len();
        ids.extend(tok.encode(&self.suffix, false)?);
        Ok((ids, prefix_len))
    }
}
