//! Free lists: intrusive linear doubly linked lists of free blocks.
//!
//! Each size class of a region's free index keeps its free blocks on one of
//! these lists. A node ([`FreeLink`]) sits in the free block's data, right
//! after its header: two absolute pointers, `None` at the ends. The list
//! head (the first node) lives in the region's control structure.
//!
//! The lists are linear rather than circular so that an insert at the front
//! writes only into the current first node, which the head names, and
//! which the heap alone wrote there: an insert needs no proof. An unlink
//! reads the node's own links, which a program can overwrite after free:
//! `region::nav` proves them first (each neighbour links back to the node;
//! a node without `prev` is the list's first), and only then is
//! [`List::remove`] called.
//!
//! Invariants: for every node `n` on a list, `n.next.prev == n` and
//! `n.prev.next == n` where they exist; the first node has no `prev`, the
//! last no `next`; the head names the first node.

use core::ptr::NonNull;

/// A free block's list node: its neighbours on its class's list.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FreeLink {
    next: Option<NonNull<FreeLink>>,
    prev: Option<NonNull<FreeLink>>,
}

impl FreeLink {
    /// The node stored at `node`, as it is (its words are only addresses
    /// until `region::nav` proves them).
    ///
    /// # Safety
    /// `node` is readable, aligned memory of a chunk.
    #[inline]
    pub(crate) unsafe fn read(node: NonNull<FreeLink>) -> FreeLink {
        // SAFETY: readable and aligned (caller); any bit pattern is a valid
        // pair of optional pointers.
        unsafe { node.as_ptr().read() }
    }

    /// The address of the next node (0: none).
    #[inline]
    pub(crate) fn next_addr(self) -> usize {
        self.next.map_or(0, |n| n.as_ptr().addr())
    }

    /// The address of the previous node (0: none).
    #[inline]
    pub(crate) fn prev_addr(self) -> usize {
        self.prev.map_or(0, |p| p.as_ptr().addr())
    }
}

/// A free list: its first node, or none.
pub(crate) struct List {
    first: Option<NonNull<FreeLink>>,
}

impl List {
    /// An empty list.
    pub(crate) const fn new() -> Self {
        List { first: None }
    }

    /// The first node.
    #[inline]
    pub(crate) fn first(&self) -> Option<NonNull<FreeLink>> {
        self.first
    }

    /// Whether the list is empty.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// Puts `node` first.
    ///
    /// # Safety
    /// `node` is writable link memory on no list; the first node, if any,
    /// is a node of this list (the head names it).
    #[inline]
    pub(crate) unsafe fn push_front(&mut self, node: NonNull<FreeLink>) {
        // SAFETY: `node` is writable and the first node is a node of this
        // list (caller): only its `prev` is written.
        unsafe {
            node.as_ptr().write(FreeLink {
                next: self.first,
                prev: None,
            });
            if let Some(first) = self.first {
                (*first.as_ptr()).prev = Some(node);
            }
        }
        self.first = Some(node);
    }

    /// Takes `node` off the list.
    ///
    /// # Safety
    /// `node` is on this list and its links were proven: its neighbours
    /// are nodes of this list that link back to it, and it has no `prev`
    /// only if it is the first node.
    #[inline]
    pub(crate) unsafe fn remove(&mut self, node: NonNull<FreeLink>) {
        // SAFETY: proven links (caller).
        unsafe { self.remove_linked(node.as_ptr().read()) }
    }

    /// Takes the node whose links are `links` off the list, without reading
    /// the node again.
    ///
    /// # Safety
    /// `links` are the current links of a node on this list, proven as for
    /// [`List::remove`].
    #[inline]
    pub(crate) unsafe fn remove_linked(&mut self, links: FreeLink) {
        let FreeLink { next, prev } = links;
        // SAFETY: proven links (caller).
        unsafe {
            match prev {
                Some(prev) => (*prev.as_ptr()).next = next,
                None => self.first = next,
            }
            if let Some(next) = next {
                (*next.as_ptr()).prev = prev;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::MaybeUninit;
    use std::vec::Vec;

    fn nodes(n: usize) -> (Vec<MaybeUninit<FreeLink>>, Vec<NonNull<FreeLink>>) {
        let mut store = Vec::with_capacity(n);
        store.resize_with(n, MaybeUninit::uninit);
        let base = store.as_mut_ptr().cast::<FreeLink>();
        let ptrs = (0..n)
            .map(|i| NonNull::new(base.wrapping_add(i)).unwrap())
            .collect();
        (store, ptrs)
    }

    fn collect(list: &List) -> Vec<NonNull<FreeLink>> {
        let mut out = Vec::new();
        let mut at = list.first();
        while let Some(node) = at {
            out.push(node);
            // SAFETY: the test's nodes are linked and live in the store.
            at = unsafe { (*node.as_ptr()).next };
        }
        out
    }

    #[test]
    fn push_and_remove_keep_both_directions() {
        let (_store, n) = nodes(4);
        let mut list = List::new();
        assert!(list.is_empty());
        // SAFETY: fresh nodes, each pushed once and removed once.
        unsafe {
            for &node in &n {
                list.push_front(node);
            }
            assert_eq!(collect(&list), [n[3], n[2], n[1], n[0]]);
            list.remove(n[2]); // middle
            assert_eq!(collect(&list), [n[3], n[1], n[0]]);
            assert_eq!((*n[1].as_ptr()).prev, Some(n[3]));
            list.remove(n[3]); // first
            assert_eq!((*n[1].as_ptr()).prev, None);
            list.remove(n[0]); // last
            assert_eq!((*n[1].as_ptr()).next, None);
            list.remove(n[1]);
        }
        assert!(list.is_empty());
    }
}
