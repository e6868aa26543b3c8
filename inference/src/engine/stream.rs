//! Streaming text out of a growing token sequence: UTF-8-safe incremental
//! detokenization and stop-sequence matching, independent of the tokenizer.

use crate::tokenizer::Tokenizer;

/// Anything that can turn token ids into text (the engine's [`Tokenizer`], a test's fake).
pub trait Detokenize {
    fn decode_ids(&self, ids: &[u32]) -> String;
}

impl Detokenize for Tokenizer {
    fn decode_ids(&self, ids: &[u32]) -> String {
        self.decode(ids, true).unwrap_or_default()
    }
}

/// How many trailing prompt ids give the first generated token its context.
/// A handful is enough for leading-space rules; the rest of the prompt never matters.
const PROMPT_CONTEXT: usize = 5;

const REPLACEMENT: char = '\u{FFFD}';

/// Emits text for a growing list of token ids without ever emitting half a UTF-8 character
/// (byte-fallback tokens split multi-byte characters across tokens) and with correct spaces
/// for SentencePiece/byte-level tokenizers: keep a prefix offset and a read offset (the approach
/// of HF text-generation-inference): decode ids[prefix..read] and ids[prefix..], if the new text is
/// longer and does not end in U+FFFD, emit the suffix and advance the offsets; otherwise hold back.
#[derive(Clone, Debug, Default)]
pub struct IncrementalDecoder {
    /// Only the ids from `prefix` on are kept; older ones can no longer affect the output.
    ids: Vec<u32>,
    /// Start of the context window, relative to `ids`.
    prefix: usize,
    /// End of what has been emitted, relative to `ids`.
    read: usize,
}

impl IncrementalDecoder {
    /// `prompt_ids` is the prompt (may be empty); only its last few ids are kept as
    /// context so that the first generated token's leading space decodes right.
    pub fn new(prompt_ids: &[u32]) -> Self {
        let tail = &prompt_ids[prompt_ids.len().saturating_sub(PROMPT_CONTEXT)..];
        Self { ids: tail.to_vec(), prefix: 0, read: tail.len() }
    }

    /// Adds one generated id and returns the text that became final (possibly empty).
    pub fn push(&mut self, d: &impl Detokenize, id: u32) -> String {
        self.ids.push(id);
        self.advance(d, false)
    }

    /// Flushes whatever is held back. A character the model did not finish (generation
    /// stopped between its bytes, e.g. at `max_tokens`) is dropped rather than shown as
    /// U+FFFD; invalid bytes before the end still come out as U+FFFD.
    pub fn finish(&mut self, d: &impl Detokenize) -> String {
        let text = self.advance(d, true);
        text.trim_end_matches(REPLACEMENT).to_string()
    }

    fn advance(&mut self, d: &impl Detokenize, flush: bool) -> String {
        if self.read == self.ids.len() {
            return String::new();
        }
        let before = d.decode_ids(&self.ids[self.prefix..self.read]);
        let after = d.decode_ids(&self.ids[self.prefix..]);
        // A trailing U+FFFD is most likely a character whose remaining bytes are
        // still to come; a text that did not grow (e.g. a token decoding to nothing yet)
        // may still change with the next token.
        let pending = after.len() <= before.len() || after.ends_with(REPLACEMENT);
        if pending && !flush {
            return String::new();
        }
        let new_text = suffix_after(&after, &before).to_owned();
        // The emitted window becomes the next context; drop what lies before it.
        self.ids.drain(..self.read);
        self.prefix = 0;
        self.read = self.ids.len();
        new_text
    }
}

/// The part of `after` that extends `before`. Normally `after` starts with `before`;
/// if the decoder rewrote the shared part (e.g. a U+FFFD completed into a real
/// character), cut at the first char boundary past `before`'s length instead.
fn suffix_after<'a>(after: &'a str, before: &str) -> &'a str {
    if let Some(rest) = after.strip_prefix(before) {
        return rest;
    }
    if before.len() >= after.len() {
        return "";
    }
    &after[after.ceil_char_boundary(before.len())..]
}

/// Holds back text that could still become a stop sequence; never emits the stop text itself.
#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    /// Non-empty stops with their index in the list given to [`StopMatcher::new`].
    stops: Vec<(usize, String)>,
    /// Text not yet emitted: the longest tail that is a proper prefix of some stop.
    held: String,
    /// A stop matched; everything afterwards is dropped.
    stopped: bool,
}

impl StopMatcher {
    /// Empty strings are ignored (they would match everywhere); indices reported by
    /// [`StopMatcher::push`] still refer to positions in `stops`.
    pub fn new(stops: Vec<String>) -> Self {
        let stops = stops.into_iter().enumerate().filter(|(_, s)| !s.is_empty()).collect();
        Self { stops, held: String::new(), stopped: false }
    }

    /// Feed newly decoded text; returns (text safe to emit now, Some(index of the stop matched)
    /// if a stop sequence completed). After a match the caller finishes the sequence; text after
    /// the stop is dropped.
    pub fn push(&mut self, text: &str) -> (String, Option<usize>) {
        if self.stopped {
            return (String::new(), None);
        }
        let mut buf = std::mem::take(&mut self.held);
        buf.push_str(text);

        // The stop that completes first is the one a token-by-token stream would hit
        // first; among those ending together the longer one (earlier start) wins, so the
        // result does not depend on how the text was split into pushes.
        let first = self
            .stops
            .iter()
            .filter_map(|(idx, stop)| buf.find(stop.as_str()).map(|at| (at + stop.len(), at, *idx)))
            .min();
        if let Some((_, start, idx)) = first {
            self.stopped = true;
            buf.truncate(start);
            return (buf, Some(idx));
        }

        let keep = self.held_tail_start(&buf);
        self.held = buf.split_off(keep);
        (buf, None)
    }

    /// At the end (max tokens / eos): the held-back tail is emitted.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Start of the longest suffix of `buf` that is a proper prefix of some stop
    /// (`buf.len()` if none). Only char boundaries are tried, so nothing splits a char.
    fn held_tail_start(&self, buf: &str) -> usize {
        let longest = self.stops.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
        // A proper prefix is at most one byte shorter than the longest stop.
        let from = buf.len().saturating_sub(longest.saturating_sub(1));
        let from = buf.ceil_char_boundary(from);
        buf[from..]
            .char_indices()
            .map(|(i, _)| from + i)
            .find(|&i| self.stops.iter().any(|(_, s)| s.starts_with(&buf[i..])))
            .unwrap_or(buf.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte-level fake: ids 0..=255 are raw bytes.
    struct Bytes;
    impl Detokenize for Bytes {
        fn decode_ids(&self, ids: &[u32]) -> String {
            let bytes: Vec<u8> = ids.iter().map(|&i| i as u8).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }

    fn byte_ids(s: &str) -> Vec<u32> {
        s.bytes().map(u32::from).collect()
    }

    /// SentencePiece-like fake: "▁word" pieces decode to " word", except that the
    /// leading space of the whole decoded string is stripped (as SentencePiece does).
    struct Pieces(Vec<&'static str>);
    impl Detokenize for Pieces {
        fn decode_ids(&self, ids: &[u32]) -> String {
            let joined: String = ids.iter().map(|&i| self.0[i as usize]).collect();
            let text = joined.replace('▁', " ");
            text.strip_prefix(' ').map(str::to_owned).unwrap_or(text)
        }
    }

    fn stream_all(d: &impl Detokenize, prompt: &[u32], ids: &[u32]) -> Vec<String> {
        let mut dec = IncrementalDecoder::new(prompt);
        let mut chunks: Vec<String> = ids.iter().map(|&id| dec.push(d, id)).collect();
        chunks.push(dec.finish(d));
        chunks
    }

    #[test]
    fn byte_level_multibyte_text_streams_whole_chars() {
        for text in
            ["안녕하세요, 세계! 끝.", "日本語のテキスト。\n改行も。", "emoji 👩‍👩‍👧 and 🦀 mixed with ascii", "ascii only"]
        {
            let chunks = stream_all(&Bytes, &[], &byte_ids(text));
            assert_eq!(chunks.concat(), text);
            for c in &chunks {
                // A `String` cannot hold half a char; U+FFFD would mean one was lost.
                assert!(!c.contains(REPLACEMENT), "chunk {c:?} of {text:?}");
            }
            // Every non-empty chunk ends exactly where a char of the original ends.
            let mut at = 0;
            for c in chunks.iter().filter(|c| !c.is_empty()) {
                at += c.len();
                assert!(text.is_char_boundary(at));
            }
        }
    }

    #[test]
    fn byte_level_emits_char_as_soon_as_complete() {
        let mut dec = IncrementalDecoder::new(&[]);
        let ids = byte_ids("가a");
        assert_eq!(dec.push(&Bytes, ids[0]), "");
        assert_eq!(dec.push(&Bytes, ids[1]), "");
        assert_eq!(dec.push(&Bytes, ids[2]), "가");
        assert_eq!(dec.push(&Bytes, ids[3]), "a");
        assert_eq!(dec.finish(&Bytes), "");
    }

    #[test]
    fn byte_level_with_prompt_context() {
        let prompt = byte_ids("프롬프트: ");
        let out = "답변입니다 ✓";
        let chunks = stream_all(&Bytes, &prompt, &byte_ids(out));
        assert_eq!(chunks.concat(), out);
    }

    #[test]
    fn an_unfinished_character_is_dropped_on_finish() {
        let mut dec = IncrementalDecoder::new(&[]);
        assert_eq!(dec.push(&Bytes, u32::from(b'o')), "o");
        assert_eq!(dec.push(&Bytes, 0xE3), "");
        assert_eq!(dec.finish(&Bytes), "");
        // Invalid bytes inside the text are shown, not hidden.
        let mut dec = IncrementalDecoder::new(&[]);
        assert_eq!(dec.push(&Bytes, 0xFF), "");
        assert_eq!(dec.push(&Bytes, u32::from(b'k')), "\u{FFFD}k");
        assert_eq!(dec.finish(&Bytes), "");
    }

    #[test]
    fn sentencepiece_spaces_survive() {
        let vocab = Pieces(vec!["▁Hello", "▁world", "!", "▁how", "▁are", "▁you"]);
        let ids = [0, 1, 2, 3, 4, 5];
        let chunks = stream_all(&vocab, &[], &ids);
        assert_eq!(chunks.concat(), "Hello world! how are you");
        assert_eq!(chunks[1], " world");
    }

    #[test]
    fn sentencepiece_first_generated_token_keeps_space_after_prompt() {
        let vocab = Pieces(vec!["▁The", "▁answer", "▁is", "▁42"]);
        // Decoded alone, "▁is" would lose its space; the prompt context keeps it.
        let chunks = stream_all(&vocab, &[0, 1], &[2, 3]);
        assert_eq!(chunks.concat(), " is 42");
        // Without a prompt the text starts at the beginning of the string.
        assert_eq!(stream_all(&vocab, &[], &[2, 3]).concat(), "is 42");
    }

    #[test]
    fn long_stream_keeps_buffer_small() {
        let mut dec = IncrementalDecoder::new(&[]);
        for &id in &byte_ids(&"abc가".repeat(100)) {
            dec.push(&Bytes, id);
        }
        assert!(dec.ids.len() < 8, "buffer grew to {}", dec.ids.len());
    }

    fn matcher(stops: &[&str]) -> StopMatcher {
        StopMatcher::new(stops.iter().map(|s| s.to_string()).collect())
    }

    /// Pushes every piece; returns emitted text and the first stop matched.
    fn run(m: &mut StopMatcher, pieces: &[&str]) -> (String, Option<usize>) {
        let mut out = String::new();
        for p in pieces {
            let (text, hit) = m.push(p);
            out.push_str(&text);
            if hit.is_some() {
                return (out, hit);
            }
        }
        out.push_str(&m.flush());
        (out, None)
    }

    /// Splits a string into single chars.
    fn chars(s: &str) -> Vec<String> {
        s.chars().map(String::from).collect()
    }

    #[test]
    fn stop_split_across_many_pushes() {
        let mut m = matcher(&["<|end|>"]);
        assert_eq!(m.push("Hello <"), ("Hello ".into(), None));
        assert_eq!(m.push("|en"), (String::new(), None));
        assert_eq!(m.push("d|"), (String::new(), None));
        assert_eq!(m.push(">tail"), (String::new(), Some(0)));
        // After the stop nothing more comes out.
        assert_eq!(m.push("more"), (String::new(), None));
        assert_eq!(m.flush(), "");
    }

    #[test]
    fn false_start_is_released() {
        let mut m = matcher(&["<|end|>"]);
        assert_eq!(m.push("a <|e"), ("a ".into(), None));
        assert_eq!(m.push("x"), ("<|ex".into(), None));
        assert_eq!(m.flush(), "");
    }

    #[test]
    fn stop_in_middle_of_one_push() {
        let mut m = matcher(&["STOP"]);
        assert_eq!(m.push("before STOP after"), ("before ".into(), Some(0)));
    }

    #[test]
    fn overlapping_candidates() {
        // "ab" completes before "bc" does, whether fed at once or char by char.
        let mut m = matcher(&["bc", "ab"]);
        assert_eq!(m.push("xabc"), ("x".into(), Some(1)));
        let mut m = matcher(&["bc", "ab"]);
        let pieces = chars("xabc");
        let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
        assert_eq!(run(&mut m, &pieces), ("x".into(), Some(1)));
    }

    #[test]
    fn stops_ending_together_prefer_longer() {
        let mut m = matcher(&["bc", "abc"]);
        assert_eq!(m.push("xabc"), ("x".into(), Some(1)));
    }

    #[test]
    fn only_longest_possible_prefix_is_held() {
        let mut m = matcher(&["abcd", "cx"]);
        // "abc" could still become "abcd"; held whole.
        assert_eq!(m.push("zzabc"), ("zz".into(), None));
        // "abcy" rules out both; only text that could still start a stop is held.
        assert_eq!(m.push("y"), ("abcy".into(), None));
        assert_eq!(m.push("qc"), ("q".into(), None));
        assert_eq!(m.flush(), "c");
    }

    #[test]
    fn multibyte_stops() {
        let mut m = matcher(&["끝", "。\n"]);
        let (out, hit) = run(&mut m, &["이야기의 ", "끝", "입니다"]);
        assert_eq!((out.as_str(), hit), ("이야기의 ", Some(0)));

        let mut m = matcher(&["끝", "。\n"]);
        assert_eq!(m.push("です。"), ("です".into(), None));
        assert_eq!(m.push("\n次"), (String::new(), Some(1)));

        // "。" not followed by a newline is released.
        let mut m = matcher(&["。\n"]);
        assert_eq!(m.push("一。"), ("一".into(), None));
        assert_eq!(m.push("二"), ("。二".into(), None));
    }

    #[test]
    fn never_splits_chars_even_when_stop_shares_leading_bytes() {
        // "가" (EA B0 80) and "각" (EA B0 81) share two bytes; a byte-wise
        // prefix test would wrongly hold half of "가".
        let mut m = matcher(&["각"]);
        assert_eq!(m.push("가"), ("가".into(), None));
    }

    #[test]
    fn empty_stops_ignored_and_indices_kept() {
        let mut m = matcher(&["", "end"]);
        assert_eq!(m.push("the end"), ("the ".into(), Some(1)));
        let mut m = matcher(&[""]);
        assert_eq!(m.push("anything"), ("anything".into(), None));
    }

    #[test]
    fn emitted_text_is_text_before_first_stop() {
        let text = "Some text. 안녕 끝 and then 。\n more END and END again";
        let stops = ["END", "끝", "。\n", "again"];
        let first_stop = stops.iter().filter_map(|s| text.find(s)).min().unwrap();
        let expected = &text[..first_stop];
        // Every split into pieces gives the same output.
        for size in 1..=7 {
            let pieces: Vec<String> =
                text.chars().collect::<Vec<_>>().chunks(size).map(|c| c.iter().collect()).collect();
            let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let mut m = matcher(&stops);
            let (out, hit) = run(&mut m, &pieces);
            assert_eq!(out, expected, "piece size {size}");
            assert_eq!(hit, Some(1));
        }
    }

    #[test]
    fn decoder_and_matcher_together() {
        let text = "결과: 42。\n추가 텍스트";
        let mut dec = IncrementalDecoder::new(&[]);
        let mut m = matcher(&["。\n"]);
        let mut out = String::new();
        let mut hit = None;
        for id in byte_ids(text) {
            let (t, h) = m.push(&dec.push(&Bytes, id));
            out.push_str(&t);
            if h.is_some() {
                hit = h;
                break;
            }
        }
        assert_eq!(hit, Some(0));
        assert_eq!(out, "결과: 42");
    }
}
