//! Which part of the model one rank holds: its place in the group, even splits of heads
//! and features, and the canonical partitions that row-parallel layers add in a fixed
//! order.

use std::ops::Range;
use std::sync::Arc;

use super::comm::{Communicator, Local};

/// Which part of the model one rank holds.
#[derive(Clone, Debug)]
pub struct Shard {
    pub comm: Arc<dyn Communicator>,
}

impl Shard {
    pub fn new(comm: Arc<dyn Communicator>) -> Self {
        Self { comm }
    }
    pub fn local() -> Self {
        Self::new(Arc::new(Local))
    }
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }
    pub fn world(&self) -> usize {
        self.comm.world_size()
    }
    /// This rank's part of `n` units split as evenly as possible (the first ranks take the
    /// remainder), so that 9 heads over 4 ranks become 3, 2, 2, 2.
    pub fn split(&self, n: usize) -> Range<usize> {
        split_range(n, self.world(), self.rank())
    }
}

pub fn split_range(n: usize, world: usize, rank: usize) -> Range<usize> {
    let base = n / world;
    let extra = n % world;
    let start = rank * base + rank.min(extra);
    let len = base + usize::from(rank < extra);
    start..start + len
}

/// How many canonical parts an MLP's down projection is cut into: the most ranks it
/// can be split over.
pub const MLP_PARTS: usize = 4;

/// Splits `0..n` into at most `max_parts` equal parts on multiples of `block`.
pub fn block_parts(n: usize, block: usize, max_parts: usize) -> Vec<Range<usize>> {
    let blocks = n / block;
    let parts = max_parts.min(blocks).max(1);
    (0..parts)
        .map(|p| {
            let r = split_range(blocks, parts, p);
            r.start * block..r.end * block
        })
        .collect()
}

/// One part per attention head.
pub fn head_parts(n_heads: usize, head_dim: usize) -> Vec<Range<usize>> {
    (0..n_heads).map(|h| h * head_dim..(h + 1) * head_dim).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_range_covers_everything_unevenly() {
        let parts: Vec<_> = (0..4).map(|r| split_range(9, 4, r)).collect();
        assert_eq!(parts, vec![0..3, 3..5, 5..7, 7..9]);
        assert_eq!(split_range(4, 1, 0), 0..4);
    }
}
