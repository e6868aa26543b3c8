//! 64-byte aligned storage for weight panels: on the heap while a weight is built, in
//! 2 MB pages ([`pages`]) once it is final.

use super::pages;

/// 64-byte aligned storage: a panel's vector loads never straddle two cache lines. On the
/// heap while a weight is built, in 2 MB pages once it is final ([`pages`]).
#[derive(Debug)]
pub(super) enum Aligned {
    Heap(Vec<Line>),
    Pages(pages::Block),
}

impl Default for Aligned {
    fn default() -> Self {
        Aligned::Heap(Vec::new())
    }
}

impl Clone for Aligned {
    /// A copy on the heap.
    fn clone(&self) -> Self {
        match self {
            Aligned::Heap(v) => Aligned::Heap(v.clone()),
            Aligned::Pages(_) => {
                let mut a = Aligned::zeroed_bytes(self.bytes().len());
                a.bytes_mut().copy_from_slice(self.bytes());
                a
            }
        }
    }
}

impl Aligned {
    pub(super) fn zeroed_bytes(len: usize) -> Self {
        Aligned::zeros(len.div_ceil(4))
    }
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            // SAFETY: a `Line` is a `repr(C)` `[f32; 16]`, 64 initialized bytes without
            // padding, so the vector's lines are `len * 64` readable bytes, borrowed with `self`.
            Aligned::Heap(v) => unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 64) },
            // SAFETY: the block owns `len` bytes at `as_ptr()`, every one initialized
            // (`pages::copy_of` copies or zeroes them), alive as long as the block.
            Aligned::Pages(b) => unsafe { std::slice::from_raw_parts(b.as_ptr(), b.len()) },
        }
    }
    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            // SAFETY: as in `bytes`; the `&mut self` borrow makes this slice the only access.
            Aligned::Heap(v) => unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, v.len() * 64) },
            // SAFETY: as in `bytes`; no other block covers this range, and the `&mut self`
            // borrow makes this slice the only access to it.
            Aligned::Pages(b) => unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr(), b.len()) },
        }
    }
    /// The same bytes in 2 MB pages (unchanged if none could be had).
    pub(super) fn into_pages(self) -> Self {
        match pages::copy_of(self.bytes()) {
            Some(b) => Aligned::Pages(b),
            None => self,
        }
    }
}

#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct Line([f32; 16]);

impl Aligned {
    pub(super) fn zeros(len: usize) -> Self {
        Aligned::Heap(vec![Line([0.0; 16]); len.div_ceil(16)])
    }
    pub(super) fn as_slice(&self) -> &[f32] {
        let b = self.bytes();
        // SAFETY: both forms start 64-byte aligned (a `Line` is `align(64)`; a block starts
        // at a multiple of 64 in a 2 MB-aligned chunk) and hold whole 64-byte lines: `len / 4`
        // f32s, for which any bits are valid.
        unsafe { std::slice::from_raw_parts(b.as_ptr() as *const f32, b.len() / 4) }
    }
    pub(super) fn as_mut_slice(&mut self) -> &mut [f32] {
        let b = self.bytes_mut();
        // SAFETY: as in `as_slice`, through the unique borrow `bytes_mut` returned.
        unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr() as *mut f32, b.len() / 4) }
    }
}
