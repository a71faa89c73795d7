//! Test memory shared by the integration tests.

use std::alloc::{alloc_zeroed, dealloc, Layout};

/// A zeroed, 4 KiB-aligned arena owned by a test, freed on drop.
///
/// Zeroed so that Miri never sees a read of uninitialised memory when a
/// test hands the heap a bogus pointer whose would-be header is checked.
pub struct Arena {
    pub ptr: *mut u8,
    layout: Layout,
}

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
