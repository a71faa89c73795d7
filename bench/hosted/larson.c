/* Larson-style server simulation (after Larson and Krishnan, "Memory
 * allocation for long-running server applications", 1998).
 *
 * Each of T chains owns an array of S slots holding blocks of random sizes
 * in [min, max]. A chain repeatedly frees a random slot and refills it.
 * After G*S operations the chain's thread starts a fresh thread, hands it
 * the array and exits, so blocks are freed by threads other than the one
 * that allocated them and threads come and go as in a server. The main
 * thread allocates the initial blocks. After `seconds` the chains stop and
 * the figure is the throughput in millions of operations (free + malloc)
 * per second.
 *
 * usage: larson THREADS MILLISECONDS MIN MAX SLOTS GENERATION SEED */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

typedef struct {
    char **slots;
    size_t nslots;
    size_t min, max, generation;
    rng_t rng;
    uint64_t ops, sum;
} __attribute__((aligned(128))) chain_t;

static atomic_bool stop;
static atomic_int live_chains;

static void fill_block(char *p, size_t size)
{
    p[0] = (char)size;
    p[size - 1] = (char)(size >> 8);
}

static void *run_chain(void *arg);

/* Hands the chain to a new detached thread; returns 0 on success. */
static int spawn(chain_t *c)
{
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int err = pthread_create(&t, &attr, run_chain, c);
    pthread_attr_destroy(&attr);
    return err;
}

static void *run_chain(void *arg)
{
    chain_t *c = arg;
    size_t todo = c->generation * c->nslots, done = 0;
    uint64_t sum = 0;
    rng_t rng = c->rng;
    for (; done < todo; done++) {
        if ((done & 63) == 0 && atomic_load_explicit(&stop, memory_order_relaxed))
            break;
        size_t victim = (size_t)(rng_next(&rng) % c->nslots);
        size_t size = rng_range(&rng, c->min, c->max);
        sum += (uint64_t)(unsigned char)c->slots[victim][0];
        free(c->slots[victim]);
        c->slots[victim] = check_alloc(malloc(size), size);
        fill_block(c->slots[victim], size);
    }
    c->rng = rng;
    c->ops += done;
    c->sum += sum;
    if (atomic_load(&stop) || spawn(c) != 0)
        atomic_fetch_sub(&live_chains, 1);
    return NULL;
}

int main(int argc, char **argv)
{
    size_t threads = arg_or(argc, argv, 1, 2);
    unsigned long millis = arg_or(argc, argv, 2, 5000);
    size_t min = arg_or(argc, argv, 3, 8), max = arg_or(argc, argv, 4, 1000);
    size_t nslots = arg_or(argc, argv, 5, 5000);
    size_t generation = arg_or(argc, argv, 6, 100);
    uint64_t seed = arg_or(argc, argv, 7, 4141);

    chain_t *chains = check_alloc(aligned_alloc(128, threads * sizeof *chains), threads);
    for (size_t t = 0; t < threads; t++) {
        chain_t *c = &chains[t];
        *c = (chain_t){.nslots = nslots, .min = min, .max = max, .generation = generation};
        rng_seed(&c->rng, seed + t);
        c->slots = check_alloc(malloc(nslots * sizeof *c->slots), nslots);
        for (size_t i = 0; i < nslots; i++) {
            size_t size = rng_range(&c->rng, min, max);
            c->slots[i] = check_alloc(malloc(size), size);
            fill_block(c->slots[i], size);
        }
    }
    atomic_store(&live_chains, (int)threads);
    double start = now_seconds();
    for (size_t t = 0; t < threads; t++)
        if (spawn(&chains[t]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    usleep((useconds_t)(millis * 1000));
    atomic_store(&stop, 1);
    while (atomic_load(&live_chains) > 0)
        usleep(1000);
    double elapsed = now_seconds() - start;

    uint64_t ops = 0;
    for (size_t t = 0; t < threads; t++) {
        ops += chains[t].ops;
        bench_sink += chains[t].sum;
        for (size_t i = 0; i < nslots; i++)
            free(chains[t].slots[i]);
        free(chains[t].slots);
    }
    free(chains);
    printf("%.2f\n", (double)ops / elapsed / 1e6);
    return 0;
}
