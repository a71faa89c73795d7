/* region-heap's malloc shim (libregionheap.so): the statistics interface.
 *
 * The library exports the standard allocation functions (malloc, free,
 * calloc, realloc, reallocarray, posix_memalign, aligned_alloc, memalign,
 * valloc, pvalloc, malloc_usable_size) with glibc's semantics, plus
 * get_stat(). Set REGIONHEAP_STATS=1 to have the counters printed on
 * stderr at exit (REGIONHEAP_STATS=2 adds one line per heap), and
 * REGIONHEAP_BRK=0 to keep the heaps off the program break (mmap only).
 */
#ifndef REGIONHEAP_H
#define REGIONHEAP_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Counts since the process started (all threads, live or exited). */
struct regionheap_stat {
    uint64_t malloc;   /* malloc calls, aligned allocations included */
    uint64_t free;     /* free calls with a non-null pointer */
    uint64_t realloc;  /* realloc and reallocarray calls */
    uint64_t calloc;   /* calloc calls */
    uint64_t recycled; /* allocations served from a cache of freed blocks */
    uint64_t mmap;     /* mmap system calls */
    uint64_t munmap;   /* munmap system calls */
    uint64_t brk;      /* brk system calls, queries included */
    uint64_t mremap;   /* mremap system calls */
};

struct regionheap_stat get_stat(void);

#ifdef __cplusplus
}
#endif

#endif
