/* In the style of alloc-test (node-dot-cpp/alloc-test, as run by
 * mimalloc-bench): each thread owns a table of slots and performs a fixed
 * number of random operations; an operation on an empty slot allocates a
 * block and writes its first and last bytes, on a full slot it checks the
 * block and frees it. Two thirds of the sizes are log-uniform in
 * [8, 512] bytes, one third log-uniform in [8, 64 KiB]. The figure is the
 * harness's wall time.
 *
 * Its peak RSS under region-heap depended on how the two workers were
 * scheduled: a worker's heap hint moved to the other heap whenever its
 * own was locked, so both per-CPU heaps grew to the workers' blocks
 * (27-38 MB from run to run on a busy 2-CPU machine, glibc 26.7 MB).
 * Since the hint moves only after 4 calls in a row served elsewhere
 * (`STRAYS_TO_MOVE` in hosted/src/thread.rs), 25.8-26.3 MB in 7 of 9
 * runs with a busy loop on the machine (32 MB in the other two), against
 * 29.3-34.5 MB before. Compare builds over many rounds.
 * (The lone-thread cache never engages here: main's cache is active, so
 * a worker is never alone.)
 *
 * usage: alloc_test THREADS OPS_PER_THREAD SLOTS */
#include <pthread.h>

#include "common.h"

typedef struct {
    size_t ops, nslots;
    uint64_t seed, sum;
    int corrupted;
} __attribute__((aligned(128))) worker_t;

/* Log-uniform in [8, 2^max_exp]: an exponent, then random low bits. */
static size_t skewed_size(rng_t *rng)
{
    uint64_t r = rng_next(rng);
    unsigned max_exp = (r % 3 == 0) ? 16 : 9;
    unsigned exp = 3 + (unsigned)((r >> 8) % (max_exp - 3 + 1));
    size_t base = (size_t)1 << exp;
    return base + (size_t)((r >> 16) & (base - 1)) / 2 + 1;
}

static void *run_worker(void *arg)
{
    worker_t *w = arg;
    unsigned char **slots = check_alloc(calloc(w->nslots, sizeof *slots), w->nslots);
    size_t *lengths = check_alloc(calloc(w->nslots, sizeof *lengths), w->nslots);
    rng_t rng;
    rng_seed(&rng, w->seed);
    uint64_t sum = 0;
    for (size_t i = 0; i < w->ops; i++) {
        size_t slot = (size_t)(rng_next(&rng) % w->nslots);
        unsigned char *p = slots[slot];
        if (p == NULL) {
            size_t size = skewed_size(&rng);
            p = check_alloc(malloc(size), size);
            p[0] = (unsigned char)slot;
            p[size - 1] = (unsigned char)(slot >> 8);
            slots[slot] = p;
            lengths[slot] = size;
        } else {
            size_t size = lengths[slot];
            if (p[0] != (unsigned char)slot || p[size - 1] != (unsigned char)(slot >> 8))
                w->corrupted = 1;
            sum += p[0];
            free(p);
            slots[slot] = NULL;
        }
    }
    for (size_t s = 0; s < w->nslots; s++)
        free(slots[s]);
    free(slots);
    free(lengths);
    w->sum = sum;
    return NULL;
}

int main(int argc, char **argv)
{
    size_t threads = arg_or(argc, argv, 1, 2);
    size_t ops = arg_or(argc, argv, 2, 45000000);
    size_t nslots = arg_or(argc, argv, 3, 4096);
    worker_t *workers = check_alloc(aligned_alloc(128, threads * sizeof *workers), threads);
    pthread_t *ids = check_alloc(malloc(threads * sizeof *ids), threads);
    for (size_t t = 0; t < threads; t++) {
        workers[t] = (worker_t){.ops = ops, .nslots = nslots, .seed = 77 + t};
        if (pthread_create(&ids[t], NULL, run_worker, &workers[t]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    }
    uint64_t sum = 0;
    for (size_t t = 0; t < threads; t++) {
        pthread_join(ids[t], NULL);
        if (workers[t].corrupted) {
            fprintf(stderr, "thread %zu: a block lost its contents\n", t);
            return 1;
        }
        sum += workers[t].sum;
    }
    free(ids);
    free(workers);
    printf("%lu\n", (unsigned long)sum);
    return 0;
}
