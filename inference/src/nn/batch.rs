//! The ragged batch: new tokens of several sequences, each at its own position, as one
//! `[total_tokens, hidden]` tensor, and the rows of it that belong to each.

use std::ops::Range;

use candle_core::{Result, Tensor};

/// Identifies a sequence across the engine, the scheduler and the KV caches.
pub type SeqId = u64;

/// New tokens of one sequence in a batched forward pass. A batch mixes prefills (many
/// tokens) and decodes (one token) of sequences at different positions.
#[derive(Clone, Debug)]
pub struct Chunk {
    pub seq: SeqId,
    pub tokens: Vec<u32>,
    /// Position of `tokens[0]`; equals the number of tokens already in the sequence's cache.
    pub start_pos: usize,
    /// Return logits for every token of the chunk (prompt logprobs), not just the last.
    pub all_logits: bool,
    /// Without `all_logits`: return logits for this many trailing tokens (0 or 1 = the last
    /// only). Scoring forced continuation tokens needs exactly those rows.
    pub tail_logits: usize,
}

/// Rows of the flattened `[total_tokens, hidden]` batch that belong to each chunk.
pub fn chunk_rows(chunks: &[Chunk]) -> Vec<Range<usize>> {
    let mut start = 0;
    chunks
        .iter()
        .map(|c| {
            let r = start..start + c.tokens.len();
            start = r.end;
            r
        })
        .collect()
}

/// Picks, per chunk, the hidden rows whose logits are wanted: the last, or all.
pub fn rows_for_logits(hidden: &Tensor, chunks: &[Chunk]) -> Result<(Tensor, Vec<usize>)> {
    let mut idx = Vec::new();
    let mut counts = Vec::with_capacity(chunks.len());
    for (c, r) in chunks.iter().zip(chunk_rows(chunks)) {
        if c.all_logits {
            idx.extend(r.start as u32..r.end as u32);
            counts.push(r.len());
        } else if c.tail_logits > 1 {
            let n = c.tail_logits.min(r.len());
            idx.extend((r.end - n) as u32..r.end as u32);
            counts.push(n);
        } else {
            idx.push(r.end as u32 - 1);
            counts.push(1);
        }
    }
    let idx = Tensor::new(idx.as_slice(), hidden.device())?;
    Ok((hidden.index_select(&idx, 0)?, counts))
}

/// Splits `[rows, vocab]` logits back into one tensor per chunk.
pub fn split_logits(logits: &Tensor, counts: &[usize]) -> Result<Vec<Tensor>> {
    let mut start = 0;
    counts
        .iter()
        .map(|&n| {
            let t = logits.narrow(0, start, n);
            start += n;
            t
        })
        .collect()
}

/// Applies `f` to each chunk's rows of `x` and stacks the results back in order.
pub fn per_chunk<F>(x: &Tensor, chunks: &[Chunk], mut f: F) -> Result<Tensor>
where
    F: FnMut(usize, &Tensor) -> Result<Tensor>,
{
    let rows = chunk_rows(chunks);
    let outs: Vec<Tensor> =
        rows.into_iter().enumerate().map(|(i, r)| f(i, &x.narrow(0, r.start, r.len())?)).collect::<Result<_>>()?;
    if outs.len() == 1 {
        return Ok(outs.into_iter().next().expect("one"));
    }
    Tensor::cat(&outs, 0)
}
