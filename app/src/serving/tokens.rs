//! A token's real bytes, and the name OpenAI's logprobs give it: its text when the bytes
//! are whole characters, else `bytes:\xec\x95` (a token that is part of a character, as
//! byte-level BPE and SentencePiece byte fallback make them for Korean or emoji).

use inference::Tokenizer;

/// The bytes token `id` stands for: `<0xEC>` byte-fallback pieces are that byte, `▁` is a
/// space (SentencePiece), and a byte-level BPE entry (`Ġ`, `ì`) maps back through GPT-2's
/// byte-to-character table. Control tokens are their written form.
pub fn token_bytes(tok: &Tokenizer, id: u32) -> Vec<u8> {
    let Some(raw) = tok.id_to_token(id) else { return Vec::new() };
    if let Some(b) = byte_fallback(&raw) {
        return vec![b];
    }
    if tok.token_to_id("<0x0A>").is_none() && tok.token_to_id("Ċ").is_some() {
        // Byte-level BPE: every character of an entry is one byte; a character outside
        // the table (an added token) is itself.
        let mut out = Vec::with_capacity(raw.len());
        for c in raw.chars() {
            match unicode_to_byte(c) {
                Some(b) => out.push(b),
                None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        return out;
    }
    raw.replace('▁', " ").into_bytes()
}

/// `<0xEC>` → 0xEC.
fn byte_fallback(raw: &str) -> Option<u8> {
    let hex = raw.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// The inverse of GPT-2's `bytes_to_unicode`: printable Latin-1 bytes are themselves, the
/// other 68 bytes are U+0100.. in byte order.
fn unicode_to_byte(c: char) -> Option<u8> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let code = c as u32;
    if code < 256 {
        return printable(code).then_some(code as u8);
    }
    let n = code.checked_sub(256)? as usize;
    (0u32..256).filter(|&b| !printable(b)).nth(n).map(|b| b as u8)
}

/// The text of a token's bytes, or `bytes:\xec\x95` when they are not whole UTF-8.
pub fn token_label(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => {
            let mut s = String::from("bytes:");
            for b in bytes {
                s.push_str(&format!("\\x{b:02x}"));
            }
            s
        }
    }
}

/// Character offsets of consecutive tokens in the text their bytes join to (OpenAI's
/// `text_offset`): a token that starts inside a character gets that character's offset.
#[derive(Debug, Default, Clone)]
pub struct CharOffsets {
    chars: usize,
}

impl CharOffsets {
    pub fn starting_at(chars: usize) -> Self {
        Self { chars }
    }

    /// The offset of a token with these bytes, then moves past it.
    pub fn next(&mut self, bytes: &[u8]) -> usize {
        let continues = bytes.first().is_some_and(|&b| is_continuation(b));
        let at = if continues { self.chars.saturating_sub(1) } else { self.chars };
        self.chars += bytes.iter().filter(|&&b| !is_continuation(b)).count();
        at
    }
}

fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_round_trips() {
        assert_eq!(unicode_to_byte('Ġ'), Some(b' '));
        assert_eq!(unicode_to_byte('Ċ'), Some(b'\n'));
        assert_eq!(unicode_to_byte('A'), Some(b'A'));
        let all: Vec<u8> = (0u32..512).filter_map(|c| char::from_u32(c).and_then(unicode_to_byte)).collect();
        let mut sorted = all.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 256, "every byte has exactly one character");
        assert_eq!(byte_fallback("<0xEC>"), Some(0xEC));
        assert_eq!(byte_fallback("<0xECC>"), None);
    }

    #[test]
    fn labels_and_offsets_of_partial_characters() {
        let han = "안".as_bytes();
        assert_eq!(token_label(&han[..2]), "bytes:\\xec\\x95");
        assert_eq!(token_label(han), "안");
        let mut o = CharOffsets::starting_at(3);
        assert_eq!(o.next(b"ab"), 3);
        assert_eq!(o.next(&han[..2]), 5);
        assert_eq!(o.next(&han[2..]), 5);
        assert_eq!(o.next(b"!"), 6);
    }
}
