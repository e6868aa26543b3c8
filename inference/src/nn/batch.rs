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
    /// No logits at all (a piece of a prompt that does not finish it: nothing samples
    /// from it): the lm_head skips the chunk and its entry has no rows.
    pub no_logits: bool,
    /// Rows whose input is given as embeddings instead of looked up from `tokens` (a soft
    /// prompt's virtual tokens); their `tokens` entries are placeholders.
    pub embeddings: Option<InputEmbeddings>,
}

/// Consecutive rows of a chunk given as embeddings: after the token lookup (and Gemma's
/// scale) they overwrite the looked-up rows, identically on every rank.
#[derive(Clone, Debug, PartialEq)]
pub struct InputEmbeddings {
    /// The chunk row (index into its `tokens`) of the first of them.
    pub first: usize,
    /// `rows × hidden` values, row-major, in the space the decoder layers read (Gemma's
    /// scaled embeddings: they are not scaled again).
    pub values: Vec<f32>,
}

/// Writes each chunk's [`InputEmbeddings`] over its rows of the embedded batch
/// `x: [total_tokens, hidden]`; a copy, exact, with nothing else changed.
pub fn overwrite_input_rows(x: &Tensor, chunks: &[Chunk]) -> Result<Tensor> {
    let mut x = x.clone();
    let (_, hidden) = x.dims2()?;
    for (c, rows) in chunks.iter().zip(chunk_rows(chunks)) {
        let Some(e) = &c.embeddings else { continue };
        let n = e.values.len() / hidden.max(1);
        if n == 0 {
            continue;
        }
        if n * hidden != e.values.len() || e.first + n > rows.len() {
            candle_core::bail!(
                "sequence {}: {} embedding values from row {} do not fit a {}-row chunk of width {hidden}",
                c.seq,
                e.values.len(),
                e.first,
                rows.len()
            );
        }
        let src = Tensor::from_slice(&e.values, (n, hidden), x.device())?.to_dtype(x.dtype())?;
        x = x.slice_scatter0(&src, rows.start + e.first)?;
    }
    Ok(x)
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
        if c.no_logits {
            counts.push(0);
        } else if c.all_logits {
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

/// The logits per chunk from the final hidden rows: `head` (the last norm and the
/// lm_head) on the rows [`rows_for_logits`] picks, or not at all when no chunk wants any
/// (every chunk's entry then has no rows).
pub fn logits_for(
    hidden: &Tensor,
    chunks: &[Chunk],
    head: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Vec<Tensor>> {
    if chunks.iter().all(|c| c.no_logits) {
        let none = Tensor::zeros((0, 0), candle_core::DType::F32, hidden.device())?;
        return Ok(vec![none; chunks.len()]);
    }
    let (rows, counts) = rows_for_logits(hidden, chunks)?;
    split_logits(&head(&rows)?, &counts)
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn chunk(seq: SeqId, len: usize, no_logits: bool) -> Chunk {
        Chunk {
            seq,
            tokens: vec![0; len],
            start_pos: 0,
            all_logits: false,
            tail_logits: 0,
            no_logits,
            embeddings: None,
        }
    }

    #[test]
    fn input_embeddings_overwrite_their_rows_and_nothing_else() {
        let x = Tensor::arange(0f32, 12.0, &Device::Cpu).unwrap().reshape((6, 2)).unwrap();
        let mut a = chunk(1, 2, false);
        a.embeddings = Some(InputEmbeddings { first: 1, values: vec![-1.0, -2.0] });
        let mut b = chunk(2, 4, false);
        b.embeddings = Some(InputEmbeddings { first: 0, values: vec![-3.0, -4.0, -5.0, -6.0] });
        let out = overwrite_input_rows(&x, &[a.clone(), b]).unwrap().to_vec2::<f32>().unwrap();
        let want = [[0.0, 1.0], [-1.0, -2.0], [-3.0, -4.0], [-5.0, -6.0], [8.0, 9.0], [10.0, 11.0]];
        assert_eq!(out, want.map(|r| r.to_vec()).to_vec());
        // Rows past the chunk's end are an error, not a write into the next chunk.
        a.embeddings = Some(InputEmbeddings { first: 1, values: vec![0.0; 4] });
        assert!(overwrite_input_rows(&x, &[a, chunk(2, 4, false)]).is_err());
    }

    #[test]
    fn the_head_runs_only_on_rows_whose_logits_are_used() {
        // Rows hold their own index: the head's input says which rows it was given.
        let hidden = Tensor::arange(0f32, 9.0, &Device::Cpu).unwrap().reshape((9, 1)).unwrap();
        let seen = std::cell::RefCell::new(Vec::new());
        let head = |rows: &Tensor| {
            seen.borrow_mut().extend(rows.flatten_all()?.to_vec1::<f32>()?);
            rows.repeat((1, 3))
        };
        let chunks = [chunk(1, 4, true), chunk(2, 1, false), chunk(3, 4, false)];
        let out = logits_for(&hidden, &chunks, head).unwrap();
        assert_eq!(*seen.borrow(), vec![4.0, 8.0], "the last row of each chunk that samples");
        assert_eq!(out.iter().map(|t| t.dims()[0]).collect::<Vec<_>>(), vec![0, 1, 1]);
        // A step of prompt pieces only never runs the head.
        seen.borrow_mut().clear();
        let out = logits_for(&hidden, &[chunk(1, 5, true), chunk(2, 4, true)], head).unwrap();
        assert!(seen.borrow().is_empty());
        assert!(out.iter().all(|t| t.dims()[0] == 0));
    }
}
