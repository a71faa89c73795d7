/* Many threads with tiny objects, in the style of mimalloc-bench's
 * mstress and sh8bench: THREADS threads (more than the machine's CPUs)
 * each keep a window of 2,000 objects of 8..64 bytes; every step frees a
 * random object of the window and allocates a new one in its place
 * (writing its first and last bytes); every 64 steps a run of 200
 * consecutive objects is replaced at once (a burst). Each thread makes
 * STEPS steps. The figure is the harness's wall time.
 *
 * usage: tiny_threads THREADS STEPS */
#include <pthread.h>

#include "common.h"

#define WINDOW 2000
#define BURST 200

typedef struct {
    size_t steps;
    uint64_t seed, sum;
    int corrupted;
} __attribute__((aligned(128))) worker_t;

static unsigned char *make(rng_t *rng, size_t *len)
{
    *len = rng_range(rng, 8, 64);
    unsigned char *p = check_alloc(malloc(*len), *len);
    p[0] = (unsigned char)*len;
    p[*len - 1] = (unsigned char)*len;
    return p;
}

static int intact(const unsigned char *p, size_t len)
{
    return p[0] == (unsigned char)len && p[len - 1] == (unsigned char)len;
}

static void *run(void *arg)
{
    worker_t *w = arg;
    static __thread unsigned char *window[WINDOW];
    static __thread size_t lens[WINDOW];
    rng_t rng;
    rng_seed(&rng, w->seed);
    for (size_t i = 0; i < WINDOW; i++)
        window[i] = make(&rng, &lens[i]);
    uint64_t sum = 0;
    for (size_t s = 0; s < w->steps; s++) {
        size_t at = (size_t)(rng_next(&rng) % WINDOW);
        size_t n = (s % 64 == 63) ? BURST : 1;
        for (size_t k = 0; k < n; k++) {
            size_t i = (at + k) % WINDOW;
            if (!intact(window[i], lens[i]))
                w->corrupted = 1;
            sum += lens[i];
            free(window[i]);
            window[i] = make(&rng, &lens[i]);
        }
    }
    for (size_t i = 0; i < WINDOW; i++)
        free(window[i]);
    w->sum = sum;
    return NULL;
}

int main(int argc, char **argv)
{
    size_t threads = arg_or(argc, argv, 1, 16);
    size_t steps = arg_or(argc, argv, 2, 2000000);
    worker_t *workers = check_alloc(aligned_alloc(128, threads * sizeof *workers), threads);
    pthread_t *ids = check_alloc(malloc(threads * sizeof *ids), threads);
    for (size_t t = 0; t < threads; t++) {
        workers[t] = (worker_t){.steps = steps, .seed = 900 + t};
        if (pthread_create(&ids[t], NULL, run, &workers[t]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    }
    uint64_t sum = 0;
    for (size_t t = 0; t < threads; t++) {
        pthread_join(ids[t], NULL);
        if (workers[t].corrupted) {
            fprintf(stderr, "thread %zu: an object lost its contents\n", t);
            return 1;
        }
        sum += workers[t].sum;
    }
    free(ids);
    free(workers);
    printf("%lu\n", (unsigned long)sum);
    return 0;
}
