//! Fit policies: how a region picks a free block for a request.
//!
//! Both policies are O(1) on the way to success:
//! - [`GoodFit`] (TLSF "good fit"): the first block of the smallest size
//!   class whose every block is large enough. Fastest; a request may be
//!   served from a class one step larger than needed, which costs some
//!   fragmentation on mixed sizes.
//! - [`BestFit`]: first looks among up to 8 blocks of the request's own
//!   class for the smallest that fits, then falls back to good fit. A few
//!   nanoseconds more per allocation, tighter packing.
//!
//! Under both, a request that good fit cannot serve scans the smaller
//! classes for a block that still fits before reporting out of memory, so a
//! fitting block is never refused; that scan is O(free blocks) and happens
//! only on the way to failure.

mod sealed {
    pub trait Sealed {}
}

/// A block-selection policy, chosen as the type parameter of [`crate::Heap`].
pub trait FitPolicy: sealed::Sealed {
    /// Whether to look for the best block within the request's class first.
    const BEST_FIT: bool;
}

/// TLSF good fit: O(1), the default.
#[derive(Clone, Copy, Debug, Default)]
pub struct GoodFit;

/// The old name of [`GoodFit`]: the policy never was first fit (it takes
/// the head of the first class whose blocks all fit, TLSF's good fit).
#[deprecated(since = "0.1.0", note = "renamed `GoodFit` (TLSF good fit)")]
pub type FirstFit = GoodFit;

/// Bounded best fit within the request's class, then good fit.
#[derive(Clone, Copy, Debug, Default)]
pub struct BestFit;

impl sealed::Sealed for GoodFit {}
impl sealed::Sealed for BestFit {}

impl FitPolicy for GoodFit {
    const BEST_FIT: bool = false;
}

impl FitPolicy for BestFit {
    const BEST_FIT: bool = true;
}

#[cfg(test)]
mod tests {
    #[test]
    #[allow(deprecated)]
    fn first_fit_is_the_old_name_of_good_fit() {
        let heap: crate::Heap<super::FirstFit> = crate::Heap::<super::GoodFit>::new();
        assert_eq!(heap.region_count(), 0);
        assert_eq!(
            core::any::TypeId::of::<super::FirstFit>(),
            core::any::TypeId::of::<super::GoodFit>()
        );
    }
}
