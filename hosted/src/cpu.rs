//! Which CPU a thread runs on, and how many there are.
//!
//! `sched_getcpu` is a vDSO call (no system call on x86_64), but still
//! costs tens of cycles; callers cache its answer per thread and refresh
//! it now and then (see `thread`). Both functions avoid allocating:
//! glibc's `get_nprocs` reads `/sys` into a stack buffer.

extern "C" {
    /// glibc: the number of processors currently online.
    fn get_nprocs() -> libc::c_int;
}

/// Online CPUs, at least 1.
pub fn online_cpus() -> usize {
    // SAFETY: `get_nprocs` takes no arguments and does not allocate.
    let n = unsafe { get_nprocs() };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// The CPU the calling thread runs on now (0 when the kernel cannot say).
#[inline]
pub fn current_cpu() -> usize {
    // SAFETY: `sched_getcpu` takes no arguments and touches no memory of ours.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_cpu_is_one_of_the_online_ones() {
        // SAFETY: `sysconf` reads a constant of the system.
        let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        assert_eq!(online_cpus() as libc::c_long, online);
        // SAFETY: as above.
        let configured = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
        assert!((current_cpu() as libc::c_long) < configured);
    }
}
