/* Shared helpers of the hosted workloads: a seeded generator, a clock,
 * argument parsing and a data touch the compiler cannot drop.
 *
 * Every workload takes its sizes from argv (run.sh passes the full or the
 * QUICK values) and uses fixed seeds, so that each allocator sees the same
 * sequence of requests. */
#ifndef REGION_HEAP_BENCH_COMMON_H
#define REGION_HEAP_BENCH_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* xorshift64*: small, fast, and the same on every libc. */
typedef struct {
    uint64_t s;
} rng_t;

static inline void rng_seed(rng_t *r, uint64_t seed)
{
    r->s = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
    if (r->s == 0)
        r->s = 1;
}

static inline uint64_t rng_next(rng_t *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [lo, hi]. */
static inline size_t rng_range(rng_t *r, size_t lo, size_t hi)
{
    return lo + (size_t)(rng_next(r) % (uint64_t)(hi - lo + 1));
}

static inline double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* argv[i] as an unsigned number, or `fallback` when absent. */
static inline unsigned long arg_or(int argc, char **argv, int i, unsigned long fallback)
{
    return i < argc ? strtoul(argv[i], NULL, 0) : fallback;
}

/* Exits with a message when an allocation fails: a workload never
 * continues on a null pointer. */
static inline void *check_alloc(void *p, size_t size)
{
    if (p == NULL && size != 0) {
        fprintf(stderr, "allocation of %zu bytes failed\n", size);
        exit(1);
    }
    return p;
}

/* A sink the optimiser must keep: workloads fold data they read into it. */
static volatile uint64_t bench_sink;

#endif
