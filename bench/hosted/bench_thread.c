/* In the style of glibc's benchtests/bench-malloc-thread: each thread keeps
 * a working set of 1024 slots and, until the time is up, frees a random
 * slot and refills it with a block whose size follows an inverse-square
 * distribution over [4, 32768] bytes (small blocks dominate, large ones
 * still occur). Sizes and slot indices come from tables drawn once with a
 * fixed seed. The figure is the total number of iterations of all threads,
 * in millions.
 *
 * usage: bench_thread THREADS MILLISECONDS */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/time.h>

#include "common.h"

#define WORKING_SET 1024
#define NUM_SIZES 8000
#define NUM_OFFSETS (WORKING_SET * 4)
#define MIN_SIZE 4.0
#define MAX_SIZE 32768.0

static unsigned sizes[NUM_SIZES];
static unsigned offsets[NUM_OFFSETS];
static atomic_bool timeout;

/* Inverse transform sampling of p(x) ~ x^-2 on [MIN_SIZE, MAX_SIZE]. */
static unsigned inverse_square_size(double u)
{
    double lo = 1.0 / MIN_SIZE, hi = 1.0 / MAX_SIZE;
    return (unsigned)(1.0 / (lo + (hi - lo) * u));
}

static void fill_tables(void)
{
    rng_t rng;
    rng_seed(&rng, 88172645463325252ull);
    for (size_t i = 0; i < NUM_SIZES; i++)
        sizes[i] = inverse_square_size((double)(rng_next(&rng) >> 11) / (double)(1ull << 53));
    for (size_t i = 0; i < NUM_OFFSETS; i++)
        offsets[i] = (unsigned)(rng_next(&rng) % WORKING_SET);
}

typedef struct {
    uint64_t seed, iterations;
} __attribute__((aligned(128))) worker_t;

static void *run_worker(void *arg)
{
    worker_t *w = arg;
    void *slots[WORKING_SET] = {0};
    rng_t rng;
    rng_seed(&rng, w->seed);
    uint64_t iterations = 0;
    while (!atomic_load_explicit(&timeout, memory_order_relaxed)) {
        uint64_t r = rng_next(&rng);
        unsigned slot = offsets[(r >> 32) % NUM_OFFSETS];
        unsigned size = sizes[(uint32_t)r % NUM_SIZES];
        free(slots[slot]);
        slots[slot] = check_alloc(malloc(size), size);
        iterations++;
    }
    for (size_t i = 0; i < WORKING_SET; i++)
        free(slots[i]);
    w->iterations = iterations;
    return NULL;
}

static void on_alarm(int sig)
{
    (void)sig;
    atomic_store(&timeout, 1);
}

int main(int argc, char **argv)
{
    size_t threads = arg_or(argc, argv, 1, 2);
    unsigned long millis = arg_or(argc, argv, 2, 2000);
    fill_tables();
    worker_t *workers = check_alloc(aligned_alloc(128, threads * sizeof *workers), threads);
    pthread_t *ids = check_alloc(malloc(threads * sizeof *ids), threads);
    signal(SIGALRM, on_alarm);
    struct itimerval timer = {
        .it_value = {.tv_sec = (time_t)(millis / 1000), .tv_usec = (suseconds_t)(millis % 1000 * 1000)}};
    setitimer(ITIMER_REAL, &timer, NULL);
    for (size_t t = 0; t < threads; t++) {
        workers[t] = (worker_t){.seed = 1000 + t};
        if (pthread_create(&ids[t], NULL, run_worker, &workers[t]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    }
    uint64_t total = 0;
    for (size_t t = 0; t < threads; t++) {
        pthread_join(ids[t], NULL);
        total += workers[t].iterations;
    }
    free(ids);
    free(workers);
    printf("%.1f\n", (double)total / 1e6);
    return 0;
}
