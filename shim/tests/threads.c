/* Many short-lived threads that exit with blocks in their caches, some
 * freeing blocks other threads allocated. Counts must add up afterwards. */
#include "common.h"

#include <pthread.h>

enum { ROUNDS = 20, THREADS = 8, BLOCKS = 500 };

static unsigned char *handoff[THREADS][BLOCKS];

static void *worker(void *arg) {
    unsigned id = (unsigned)(uintptr_t)arg;
    unsigned char *mine[BLOCKS];
    for (unsigned i = 0; i < BLOCKS; i++) {
        size_t n = (i * 53 + id) % 1500 + 1;
        mine[i] = malloc(n);
        fill(mine[i], n, id + i);
        handoff[id][i] = malloc(n);
        fill(handoff[id][i], n, id ^ i);
    }
    int bad = 0;
    for (unsigned i = 0; i < BLOCKS; i++) {
        size_t n = (i * 53 + id) % 1500 + 1;
        bad |= !holds(mine[i], n, id + i);
        free(mine[i]); /* into this thread's cache, flushed at exit */
    }
    return (void *)(uintptr_t)bad;
}

static void *collector(void *arg) {
    unsigned id = (unsigned)(uintptr_t)arg;
    int bad = 0;
    for (unsigned i = 0; i < BLOCKS; i++) {
        size_t n = (i * 53 + id) % 1500 + 1;
        bad |= !holds(handoff[id][i], n, id ^ i);
        free(handoff[id][i]); /* a block of an exited thread */
    }
    return (void *)(uintptr_t)bad;
}

int main(void) {
    struct regionheap_stat before = stats();
    for (int r = 0; r < ROUNDS; r++) {
        pthread_t t[THREADS];
        for (uintptr_t i = 0; i < THREADS; i++)
            pthread_create(&t[i], NULL, worker, (void *)i);
        for (int i = 0; i < THREADS; i++) {
            void *ret;
            pthread_join(t[i], &ret);
            CHECK(ret == NULL);
        }
        for (uintptr_t i = 0; i < THREADS; i++)
            pthread_create(&t[i], NULL, collector, (void *)i);
        for (int i = 0; i < THREADS; i++) {
            void *ret;
            pthread_join(t[i], &ret);
            CHECK(ret == NULL);
        }
    }
    struct regionheap_stat after = stats();
    unsigned long made = (unsigned long)ROUNDS * THREADS * BLOCKS * 2;
    CHECK(after.malloc - before.malloc >= made);
    CHECK(after.free - before.free >= made);
    printf("threads: %lu blocks through %d threads\n", made, ROUNDS * THREADS * 2);
    return failures != 0;
}
