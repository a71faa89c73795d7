//! CLIST: intrusive circular doubly linked lists, the block rings of the heap.
//!
//! As in MutekH, the blocks of a chunk sit on a ring of nodes that embed
//! their own link, in address order. A ring with one node links to itself,
//! so a linked node always has a `next` and a `prev`. (The free lists are
//! linear lists of their own, `freelist`: an insert there writes only into
//! the list's first node, which needs no proof.)
//!
//! Link encodings share the ring algorithms through the [`Link`] trait:
//! `block::RelLink`, two signed 32-bit offsets counted in granules (the
//! block list, which keeps a block header at 16 bytes on 64-bit targets),
//! and the `osmem` library's own header.
//!
//! Invariant of every linked node `n`: `next(prev(n)) == n` and
//! `prev(next(n)) == n`. [`is_consistent`] checks it for one node.
//!
//! The trait and the four ring algorithms ([`make_ring`], [`insert_after`],
//! [`unlink`], [`is_consistent`]) are public so that other heaps built from
//! region-heap's parts reuse them with their own header layout: the
//! `osmem` compatibility library implements [`Link`] for the seed's
//! `block_meta` header (absolute pointers, NULL standing for its list
//! head).

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

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::MaybeUninit;
    use std::vec::Vec;

    /// A test link of two absolute pointers.
    struct TestLink {
        next: NonNull<TestLink>,
        prev: NonNull<TestLink>,
    }

    impl Link for TestLink {
        /// # Safety
        /// As the `Link` trait requires: `this` points to an initialised,
        /// readable link of a ring.
        unsafe fn next(this: NonNull<Self>) -> NonNull<Self> {
            // SAFETY: an initialised test node (caller).
            unsafe { (*this.as_ptr()).next }
        }
        /// # Safety
        /// As the `Link` trait requires: `this` points to an initialised,
        /// readable link of a ring.
        unsafe fn prev(this: NonNull<Self>) -> NonNull<Self> {
            // SAFETY: as above.
            unsafe { (*this.as_ptr()).prev }
        }
        /// # Safety
        /// As the `Link` trait requires: `this` points to writable link memory,
        /// and the new neighbour to a link of the same ring.
        unsafe fn set_next(this: NonNull<Self>, next: NonNull<Self>) {
            // SAFETY: writable test node (caller).
            unsafe { (*this.as_ptr()).next = next }
        }
        /// # Safety
        /// As the `Link` trait requires: `this` points to writable link memory,
        /// and the new neighbour to a link of the same ring.
        unsafe fn set_prev(this: NonNull<Self>, prev: NonNull<Self>) {
            // SAFETY: as above.
            unsafe { (*this.as_ptr()).prev = prev }
        }
    }

    /// `n` nodes in storage owned by the returned vector.
    fn nodes(n: usize) -> (Vec<MaybeUninit<TestLink>>, Vec<NonNull<TestLink>>) {
        let mut store = Vec::with_capacity(n);
        store.resize_with(n, MaybeUninit::uninit);
        let base = store.as_mut_ptr().cast::<TestLink>();
        let ptrs = (0..n)
            .map(|i| NonNull::new(base.wrapping_add(i)).unwrap())
            .collect();
        (store, ptrs)
    }

    #[test]
    fn insert_and_unlink_keep_the_ring_consistent() {
        let (_store, n) = nodes(4);
        // SAFETY: fresh nodes in `_store`, linked once each.
        unsafe {
            make_ring(n[0]);
            insert_after(n[0], n[1]);
            insert_after(n[1], n[2]);
            insert_after(n[0], n[3]);
            assert_eq!(TestLink::next(n[0]), n[3]);
            assert_eq!(TestLink::next(n[3]), n[1]);
            assert_eq!(TestLink::next(n[2]), n[0]);
            for &node in &n {
                assert!(is_consistent(node));
            }
            unlink(n[3]);
            assert_eq!(TestLink::next(n[0]), n[1]);
            assert!(is_consistent(n[0]) && is_consistent(n[1]));
        }
    }

    #[test]
    fn ring_of_one_links_to_itself() {
        let (_store, n) = nodes(1);
        // SAFETY: a fresh node.
        unsafe {
            make_ring(n[0]);
            assert_eq!(TestLink::next(n[0]), n[0]);
            assert_eq!(TestLink::prev(n[0]), n[0]);
            assert!(is_consistent(n[0]));
        }
    }
}
