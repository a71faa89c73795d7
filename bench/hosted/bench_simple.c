/* In the style of glibc's benchtests/bench-malloc-simple, as mimalloc-bench
 * runs it: allocate N blocks of one size and fill them, then free them in
 * allocation order, TOTAL/N times, for every N in {25, 100, 400, 1600}
 * and size in {16, 32, 64} (glibc's t-cache and fastbin sizes). For each
 * size the set runs four times: a warm-up and a run on the main thread
 * before any other thread exists, a run on a second thread (glibc serves
 * it from another arena), and a run on the main thread once the process
 * is multi-threaded. The figure is the harness's wall time.
 *
 * usage: bench_simple TOTAL   (blocks per combination, default 2000000) */
#include <pthread.h>

#include "common.h"

static const size_t counts[] = {25, 100, 400, 1600};
static const size_t sizes[] = {16, 32, 64};
#define LEN(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_COUNT 1600

static size_t total_blocks, block_size;
static unsigned **blocks;

/* Every count once, for the current block size. */
static void *run_counts(void *unused)
{
    (void)unused;
    size_t words = block_size / sizeof(unsigned);
    uint64_t sum = 0;
    for (size_t c = 0; c < LEN(counts); c++) {
        size_t n = counts[c];
        for (size_t iter = 0; iter < total_blocks / n; iter++) {
            for (size_t i = 0; i < n; i++) {
                blocks[i] = check_alloc(malloc(block_size), block_size);
                for (size_t w = 0; w < words; w++)
                    blocks[i][w] = (unsigned)w;
            }
            for (size_t i = 0; i < n; i++) {
                sum += blocks[i][words - 1];
                free(blocks[i]);
            }
        }
    }
    bench_sink += sum;
    return NULL;
}

int main(int argc, char **argv)
{
    total_blocks = arg_or(argc, argv, 1, 2000000);
    blocks = check_alloc(malloc(MAX_COUNT * sizeof *blocks), MAX_COUNT);
    for (size_t s = 0; s < LEN(sizes); s++) {
        block_size = sizes[s];
        run_counts(NULL); /* warm-up */
        run_counts(NULL);
        pthread_t t;
        if (pthread_create(&t, NULL, run_counts, NULL) != 0 || pthread_join(t, NULL) != 0) {
            fprintf(stderr, "thread failed\n");
            return 1;
        }
        run_counts(NULL);
    }
    free(blocks);
    printf("%lu\n", (unsigned long)bench_sink);
    return 0;
}
