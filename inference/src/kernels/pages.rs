//! Weight panels in 2 MB pages. A decode step streams every weight once; in 4 KB pages the
//! hardware prefetchers stop at each page boundary and every page costs a TLB walk. A
//! loaded model's panels are copied here once ([`super::BatchedWeight::in_huge_pages`]):
//! shared chunks, 2 MB aligned, that Linux is asked to back with huge pages
//! (`MADV_HUGEPAGE`; only a hint: where it is refused, they are ordinary memory).
//!
//! Allocations are carved from the current chunk in order and never reused; a chunk is
//! freed when the last allocation in it is dropped (the current one also stays held for
//! the next allocation).

use std::alloc::Layout;
use std::sync::{Arc, Mutex};

const PAGE: usize = 2 << 20;
/// Bytes per shared chunk; a request over half of it gets a chunk of its own.
const CHUNK: usize = 16 * PAGE;

struct Chunk {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: a chunk is plain memory that it owns (freed once, by its last `Arc`); each
// `Block` reads and writes only its own disjoint range of it.
unsafe impl Send for Chunk {}
// SAFETY: as for `Send`: through a shared chunk, each block touches only its own range.
unsafe impl Sync for Chunk {}

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: `ptr` was allocated in `Chunk::new` with this layout, and this is the one
        // drop of the chunk (the last `Arc` going away).
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

impl Chunk {
    fn new(bytes: usize) -> Option<Arc<Chunk>> {
        let layout = Layout::from_size_align(bytes.div_ceil(PAGE) * PAGE, PAGE).ok()?;
        // SAFETY: the layout's size is a positive multiple of `PAGE` (`bytes > 0`: callers
        // never ask for an empty chunk), as `alloc` requires.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            return None;
        }
        #[cfg(target_os = "linux")]
        // SAFETY: `ptr..ptr + size` is memory we just allocated, page aligned; `madvise`
        // only takes a hint about it (a refusal changes nothing), not the memory itself.
        unsafe {
            libc::madvise(ptr as *mut libc::c_void, layout.size(), libc::MADV_HUGEPAGE);
        }
        Some(Arc::new(Chunk { ptr, layout }))
    }
}

/// `len` bytes, 64-byte aligned, of a chunk.
pub(super) struct Block {
    chunk: Arc<Chunk>,
    offset: usize,
    len: usize,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Block({} bytes in 2 MB pages)", self.len)
    }
}

impl Block {
    pub fn as_ptr(&self) -> *const u8 {
        // SAFETY: `offset + len` is within the chunk's allocation (`copy_of` carves blocks
        // inside it), so the offset pointer stays in bounds.
        unsafe { self.chunk.ptr.add(self.offset) }
    }
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        // SAFETY: as in `as_ptr`; no other block covers this range, and `&mut self` makes
        // this the only pointer handed out for it meanwhile.
        unsafe { self.chunk.ptr.add(self.offset) }
    }
    pub fn len(&self) -> usize {
        self.len
    }
}

static CURRENT: Mutex<Option<(Arc<Chunk>, usize)>> = Mutex::new(None);

/// A copy of `bytes` in huge-page memory (`None` if the memory could not be had).
pub(super) fn copy_of(bytes: &[u8]) -> Option<Block> {
    let len = bytes.len().div_ceil(64) * 64;
    if len == 0 {
        return None;
    }
    let mut block = if len > CHUNK / 2 {
        Block { chunk: Chunk::new(len)?, offset: 0, len }
    } else {
        let mut current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
        let fits = matches!(&*current, Some((c, used)) if used + len <= c.layout.size());
        if !fits {
            *current = Some((Chunk::new(CHUNK)?, 0));
        }
        let (chunk, used) = current.as_mut().expect("a current chunk");
        let block = Block { chunk: chunk.clone(), offset: *used, len };
        *used += len;
        block
    };
    // SAFETY: the block owns `len >= bytes.len()` bytes (its own range of the chunk), so
    // the copy and the zeroing of the padding `bytes.len()..len` stay inside it, and
    // `bytes` (the caller's memory) does not overlap a block just carved out.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), block.as_mut_ptr(), bytes.len());
        std::ptr::write_bytes(block.as_mut_ptr().add(bytes.len()), 0, len - bytes.len());
    }
    Some(block)
}
