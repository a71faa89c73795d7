//! Test memory and witness blocks shared by the integration tests.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

use region_heap::Heap;

/// A zeroed, 4 KiB-aligned arena owned by a test, freed on drop.
///
/// Zeroed so that Miri never sees a read of uninitialised memory when a
/// test hands the heap a bogus pointer whose would-be header is checked.
pub struct Arena {
    pub ptr: *mut u8,
    layout: Layout,
}

// SAFETY: an arena owns its memory exclusively, as a `Box` would.
unsafe impl Send for Arena {}

impl Arena {
    pub fn new(size: usize) -> Arena {
        let layout = Layout::from_size_align(size, 4096).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Arena { ptr, layout }
    }

    #[allow(dead_code)] // not every test file uses it
    pub fn len(&self) -> usize {
        self.layout.size()
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// Bytes of each witness block.
const WITNESS_SIZE: usize = 200;

/// A heap over `arena` with three live witness blocks, each filled with
/// its own byte: the blocks a misuse or a corruption must leave intact.
#[allow(dead_code)] // not every test file uses it
pub fn witnessed_heap(arena: &Arena) -> (Heap, Vec<(NonNull<u8>, u8)>) {
    let mut heap = Heap::new();
    // SAFETY: the arena outlives the heap.
    unsafe { heap.add_region(arena.ptr, arena.len()) }.unwrap();
    let layout = Layout::from_size_align(WITNESS_SIZE, 8).unwrap();
    let witnesses = (1..=3u8)
        .map(|fill| {
            let p = heap.allocate(layout).unwrap();
            // SAFETY: a fresh block of `WITNESS_SIZE` writable bytes.
            unsafe { p.as_ptr().write_bytes(fill, WITNESS_SIZE) };
            (p, fill)
        })
        .collect();
    (heap, witnesses)
}

/// Asserts that every witness still holds its fill byte, then frees it.
#[allow(dead_code)] // not every test file uses it
pub fn free_witnesses(heap: &mut Heap, witnesses: Vec<(NonNull<u8>, u8)>) {
    for (p, fill) in witnesses {
        // SAFETY: live witness blocks of `WITNESS_SIZE` bytes.
        unsafe {
            assert!(std::slice::from_raw_parts(p.as_ptr(), WITNESS_SIZE)
                .iter()
                .all(|&b| b == fill));
            heap.free(p).unwrap();
        }
    }
}
