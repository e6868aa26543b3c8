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

// SAFETY: the chunk is plain memory; each `Block` owns a disjoint range of it.
unsafe impl Send for Chunk {}
unsafe impl Sync for Chunk {}

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: allocated in `Chunk::new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

impl Chunk {
    fn new(bytes: usize) -> Option<Arc<Chunk>> {
        let layout = Layout::from_size_align(bytes.div_ceil(PAGE) * PAGE, PAGE).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            return None;
        }
        #[cfg(target_os = "linux")]
        // SAFETY: `ptr` is page aligned and the range is ours. A refusal changes nothing.
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
        // SAFETY: `offset + len` is within the chunk.
        unsafe { self.chunk.ptr.add(self.offset) }
    }
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        // SAFETY: as above; no other block covers this range.
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
    // SAFETY: the block holds `len >= bytes.len()` bytes; the padding is zeroed.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), block.as_mut_ptr(), bytes.len());
        std::ptr::write_bytes(block.as_mut_ptr().add(bytes.len()), 0, len - bytes.len());
    }
    Some(block)
}
