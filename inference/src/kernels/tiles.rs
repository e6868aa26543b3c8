//! How a kernel cuts the rows of `x` into register tiles.

use std::ops::Range;

/// `(first row, rows)` of tiles of at most `max` rows: as few as possible, as even as
/// possible.
pub(super) fn even_tiles(rows: Range<usize>, max: usize) -> Vec<(usize, usize)> {
    even_split(rows, max).collect()
}

/// [`even_tiles`] without the allocation (for a kernel's own split of a tile).
pub(super) fn even_split(rows: Range<usize>, max: usize) -> impl Iterator<Item = (usize, usize)> {
    let m = rows.len();
    let t = m.div_ceil(max);
    let mut i = rows.start;
    (0..t).map(move |j| {
        let r = m / t + usize::from(j < m % t);
        i += r;
        (i - r, r)
    })
}
