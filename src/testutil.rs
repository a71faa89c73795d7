//! Test memory: zeroed, page-aligned arenas freed on drop.

use std::alloc::{alloc_zeroed, dealloc, Layout};

/// A zeroed, 4 KiB-aligned arena owned by a test.
pub(crate) struct Arena {
    ptr: *mut u8,
    layout: Layout,
}

impl Arena {
    pub(crate) fn new(size: usize) -> Self {
        let layout = Layout::from_size_align(size, 4096).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Arena { ptr, layout }
    }

    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub(crate) fn at(&self, offset: usize) -> *mut u8 {
        self.ptr.wrapping_add(offset)
    }

    pub(crate) fn len(&self) -> usize {
        self.layout.size()
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}
