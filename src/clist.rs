//! CLIST: intrusive circular doubly linked lists, the one list type of the heap.
//!
//! As in MutekH, every list of region-heap is a ring of nodes that embed their
//! own link: the block list of a chunk (address order), the free list of each
//! size class, and the chunk list of a region (address order). A ring with one
//! node links to itself, so a linked node always has a `next` and a `prev`.
//!
//! Two link encodings share the ring algorithms through the [`Link`] trait:
//! - `PtrLink`, two absolute pointers: free lists and chunk lists;
//! - `block::RelLink`, two signed 32-bit offsets counted in granules: the
//!   block list, which keeps a block header at 16 bytes on 64-bit targets.
//!
//! Invariant of every linked node `n`: `next(prev(n)) == n` and
//! `prev(next(n)) == n`. [`is_consistent`] checks it for one node.
//!
//! The trait and the four ring algorithms ([`make_ring`], [`insert_after`],
//! [`unlink`], [`is_consistent`]) are public so that other heaps built from
//! region-heap's parts reuse them with their own header layout: the
//! `osmem` compatibility library implements [`Link`] for the seed's
//! `block_meta` header (absolute pointers, NULL standing for its list
//! head). The list heads (`Clist`) and `PtrLink` stay internal.

use core::ptr::NonNull;

/// A link of an intrusive circular doubly linked list.
pub trait Link: Sized {
    /// The node after `this` on its ring.
    ///
    /// # Safety
    /// `this` points to an initialised link that the caller may read.
    unsafe fn next(this: NonNull<Self>) -> NonNull<Self>;

    /// The node before `this` on its ring.
    ///
    /// # Safety
    /// `this` points to an initialised link that the caller may read.
    unsafe fn prev(this: NonNull<Self>) -> NonNull<Self>;

    /// Points `this` forward to `next`.
    ///
    /// # Safety
    /// `this` points to link memory that the caller may write; `next` is a
    /// node the encoding can reach from `this`.
    unsafe fn set_next(this: NonNull<Self>, next: NonNull<Self>);

    /// Points `this` back to `prev`.
    ///
    /// # Safety
    /// As for [`Link::set_next`].
    unsafe fn set_prev(this: NonNull<Self>, prev: NonNull<Self>);
}

/// Makes `node` a ring of one.
///
/// # Safety
/// `node` points to link memory that the caller may write.
pub unsafe fn make_ring<L: Link>(node: NonNull<L>) {
    // SAFETY: the caller guarantees `node` is writable link memory.
    unsafe {
        L::set_next(node, node);
        L::set_prev(node, node);
    }
}

/// Inserts `node` right after `at`, on `at`'s ring.
///
/// # Safety
/// `at` is linked on a consistent ring; `node` is writable link memory and is
/// not linked on any ring.
pub unsafe fn insert_after<L: Link>(at: NonNull<L>, node: NonNull<L>) {
    // SAFETY: `at` and its successor are valid linked nodes (caller), and
    // `node` is writable: the four writes keep the ring consistent.
    unsafe {
        let next = L::next(at);
        L::set_next(node, next);
        L::set_prev(node, at);
        L::set_prev(next, node);
        L::set_next(at, node);
    }
}

/// Takes `node` off its ring; its own link is left stale.
///
/// # Safety
/// `node` is linked on a consistent ring.
pub unsafe fn unlink<L: Link>(node: NonNull<L>) {
    // SAFETY: on a consistent ring both neighbours are valid linked nodes.
    unsafe {
        let next = L::next(node);
        let prev = L::prev(node);
        L::set_next(prev, next);
        L::set_prev(next, prev);
    }
}

/// Whether both neighbours of `node` link back to it.
///
/// # Safety
/// `node` and both of its neighbours point to readable links.
pub unsafe fn is_consistent<L: Link>(node: NonNull<L>) -> bool {
    // SAFETY: readability of `node` and its neighbours is the caller's promise.
    unsafe { L::prev(L::next(node)) == node && L::next(L::prev(node)) == node }
}

/// A link made of two absolute pointers.
#[repr(C)]
pub(crate) struct PtrLink {
    next: NonNull<PtrLink>,
    prev: NonNull<PtrLink>,
}

impl Link for PtrLink {
    unsafe fn next(this: NonNull<Self>) -> NonNull<Self> {
        // SAFETY: `this` is an initialised, readable link (caller).
        unsafe { (*this.as_ptr()).next }
    }

    unsafe fn prev(this: NonNull<Self>) -> NonNull<Self> {
        // SAFETY: `this` is an initialised, readable link (caller).
        unsafe { (*this.as_ptr()).prev }
    }

    unsafe fn set_next(this: NonNull<Self>, next: NonNull<Self>) {
        // SAFETY: `this` is writable link memory (caller); a raw field write
        // does not read the possibly uninitialised old value.
        unsafe { (*this.as_ptr()).next = next }
    }

    unsafe fn set_prev(this: NonNull<Self>, prev: NonNull<Self>) {
        // SAFETY: as in `set_next`.
        unsafe { (*this.as_ptr()).prev = prev }
    }
}

/// The head of a CLIST of [`PtrLink`] nodes: the first node, or none.
///
/// The head is not a node: a list whose last node is removed becomes empty.
pub(crate) struct Clist {
    first: Option<NonNull<PtrLink>>,
}

impl Clist {
    /// An empty list.
    pub(crate) const fn new() -> Self {
        Clist { first: None }
    }

    /// The first node, if any.
    #[inline]
    pub(crate) fn first(&self) -> Option<NonNull<PtrLink>> {
        self.first
    }

    /// Whether the list has no node.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// Inserts `node` first (LIFO order).
    ///
    /// # Safety
    /// `node` is writable link memory not linked anywhere; the list's nodes
    /// are valid.
    #[inline]
    pub(crate) unsafe fn push_front(&mut self, node: NonNull<PtrLink>) {
        // SAFETY: `node` is free writable link memory and the current first
        // node, if any, is on a consistent ring (caller): `node` goes
        // between the last node and the first.
        unsafe {
            match self.first {
                None => make_ring(node),
                Some(first) => {
                    let last = PtrLink::prev(first);
                    PtrLink::set_next(node, first);
                    PtrLink::set_prev(node, last);
                    PtrLink::set_prev(first, node);
                    PtrLink::set_next(last, node);
                }
            }
        }
        self.first = Some(node);
    }

    /// Removes `node`, a node of this list.
    ///
    /// # Safety
    /// `node` is linked on this list.
    #[inline]
    pub(crate) unsafe fn remove(&mut self, node: NonNull<PtrLink>) {
        // SAFETY: `node` is on this consistent ring (caller), so are both
        // of its neighbours.
        unsafe {
            let next = PtrLink::next(node);
            let prev = PtrLink::prev(node);
            if self.first == Some(node) {
                self.first = if next == node { None } else { Some(next) };
            }
            PtrLink::set_next(prev, next);
            PtrLink::set_prev(next, prev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::MaybeUninit;
    use std::vec::Vec;

    /// `n` nodes in storage owned by the returned vector (a `Vec` is not
    /// retagged when moved, so the node pointers stay valid under Miri).
    fn nodes(n: usize) -> (Vec<MaybeUninit<PtrLink>>, Vec<NonNull<PtrLink>>) {
        let mut store = Vec::with_capacity(n);
        store.resize_with(n, MaybeUninit::uninit);
        let base = store.as_mut_ptr().cast::<PtrLink>();
        let ptrs = (0..n)
            .map(|i| NonNull::new(base.wrapping_add(i)).unwrap())
            .collect();
        (store, ptrs)
    }

    fn collect(list: &Clist) -> Vec<NonNull<PtrLink>> {
        let mut nodes = Vec::new();
        let mut at = list.first();
        while let Some(node) = at {
            nodes.push(node);
            // SAFETY: the test's nodes live in `_store` and are linked.
            let next = unsafe { PtrLink::next(node) };
            at = (Some(next) != list.first()).then_some(next);
        }
        nodes
    }

    #[test]
    fn push_remove_keeps_ring_consistent() {
        let (_store, n) = nodes(4);
        let mut list = Clist::new();
        assert!(list.is_empty());
        // SAFETY: fresh nodes, linked once each.
        unsafe {
            list.push_front(n[2]);
            list.push_front(n[0]);
            list.push_front(n[1]);
            list.push_front(n[3]);
        }
        assert_eq!(collect(&list), [n[3], n[1], n[0], n[2]]);
        for &node in &n {
            // SAFETY: every node is linked on the list.
            assert!(unsafe { is_consistent(node) });
        }
        // SAFETY: each removed node is on the list.
        unsafe {
            list.remove(n[3]);
            assert_eq!(collect(&list), [n[1], n[0], n[2]]);
            list.remove(n[0]);
            assert_eq!(collect(&list), [n[1], n[2]]);
            list.remove(n[2]);
            list.remove(n[1]);
        }
        assert!(list.is_empty());
        assert_eq!(collect(&list), []);
    }

    #[test]
    fn ring_of_one_links_to_itself() {
        let (_store, n) = nodes(1);
        // SAFETY: a fresh node.
        unsafe {
            make_ring(n[0]);
            assert_eq!(PtrLink::next(n[0]), n[0]);
            assert_eq!(PtrLink::prev(n[0]), n[0]);
            assert!(is_consistent(n[0]));
        }
    }
}
