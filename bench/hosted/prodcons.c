/* Cross-thread frees, in the style of xmalloc-test (as run by
 * mimalloc-bench): PAIRS producer threads allocate blocks (sizes 8..SIZE
 * bytes, uniform), write a pattern over each and hand them in batches of
 * 100 to a consumer thread through a bounded queue (mutex and condition
 * variables, 64 batches deep); the consumer checks every block and frees
 * it. So every free is of a block another thread allocated. Each producer
 * makes BLOCKS blocks; the figure is the harness's wall time.
 *
 * usage: prodcons PAIRS BLOCKS_PER_PRODUCER SIZE */
#include <pthread.h>
#include <string.h>

#include "common.h"

#define BATCH 100
#define DEPTH 64

typedef struct {
    unsigned char *block[BATCH];
    size_t len[BATCH];
} batch_t;

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    batch_t *ring[DEPTH];
    size_t head, count;
    size_t blocks, max_size;
    uint64_t seed, sum;
    int corrupted;
} __attribute__((aligned(128))) pair_t;

static void put(pair_t *q, batch_t *b)
{
    pthread_mutex_lock(&q->lock);
    while (q->count == DEPTH)
        pthread_cond_wait(&q->not_full, &q->lock);
    q->ring[(q->head + q->count) % DEPTH] = b;
    q->count++;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->lock);
}

static batch_t *take(pair_t *q)
{
    pthread_mutex_lock(&q->lock);
    while (q->count == 0)
        pthread_cond_wait(&q->not_empty, &q->lock);
    batch_t *b = q->ring[q->head];
    q->head = (q->head + 1) % DEPTH;
    q->count--;
    pthread_cond_signal(&q->not_full);
    pthread_mutex_unlock(&q->lock);
    return b;
}

static void *produce(void *arg)
{
    pair_t *q = arg;
    rng_t rng;
    rng_seed(&rng, q->seed);
    for (size_t made = 0; made < q->blocks;) {
        batch_t *b = check_alloc(malloc(sizeof *b), sizeof *b);
        size_t n = 0;
        for (; n < BATCH && made < q->blocks; n++, made++) {
            size_t len = rng_range(&rng, 8, q->max_size);
            unsigned char *p = check_alloc(malloc(len), len);
            memset(p, (int)(len & 0xff), len);
            b->block[n] = p;
            b->len[n] = len;
        }
        for (; n < BATCH; n++)
            b->block[n] = NULL;
        put(q, b);
    }
    put(q, NULL);
    return NULL;
}

static void *consume(void *arg)
{
    pair_t *q = arg;
    uint64_t sum = 0;
    for (batch_t *b; (b = take(q)) != NULL;) {
        for (size_t i = 0; i < BATCH && b->block[i] != NULL; i++) {
            unsigned char *p = b->block[i];
            size_t len = b->len[i];
            if (p[0] != (unsigned char)len || p[len - 1] != (unsigned char)len)
                q->corrupted = 1;
            sum += len;
            free(p);
        }
        free(b);
    }
    q->sum = sum;
    return NULL;
}

int main(int argc, char **argv)
{
    size_t pairs = arg_or(argc, argv, 1, 1);
    size_t blocks = arg_or(argc, argv, 2, 20000000);
    size_t max_size = arg_or(argc, argv, 3, 256);
    pair_t *q = check_alloc(aligned_alloc(128, pairs * sizeof *q), pairs);
    pthread_t *ids = check_alloc(malloc(2 * pairs * sizeof *ids), 2 * pairs);
    for (size_t i = 0; i < pairs; i++) {
        memset(&q[i], 0, sizeof q[i]);
        pthread_mutex_init(&q[i].lock, NULL);
        pthread_cond_init(&q[i].not_empty, NULL);
        pthread_cond_init(&q[i].not_full, NULL);
        q[i].blocks = blocks;
        q[i].max_size = max_size;
        q[i].seed = 4242 + i;
        if (pthread_create(&ids[2 * i], NULL, produce, &q[i]) != 0 ||
            pthread_create(&ids[2 * i + 1], NULL, consume, &q[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    }
    uint64_t sum = 0;
    for (size_t i = 0; i < 2 * pairs; i++)
        pthread_join(ids[i], NULL);
    for (size_t i = 0; i < pairs; i++) {
        if (q[i].corrupted) {
            fprintf(stderr, "pair %zu: a block lost its contents\n", i);
            return 1;
        }
        sum += q[i].sum;
    }
    free(ids);
    free(q);
    printf("%lu\n", (unsigned long)sum);
    return 0;
}
