/* One misuse per run (argv[1]); prints the faulty address on stdout first
 * (before any free, so that printf's own buffer cannot take the freed
 * block's place). region-heap must report it on stderr with that address
 * and abort. */
#include <pthread.h>
#include <unistd.h>

#include "common.h"

enum { SHELVED = 10000 };
static char *shelved[SHELVED];

static void *free_shelved(void *arg) {
    (void)arg;
    for (int i = 0; i < SHELVED; i++)
        free(shelved[i]);
    return NULL;
}

/* Frees the first block, says so, and stays alive (a thread that exits
 * gives its cache back to the heaps): the process ends in the main
 * thread's abort. */
static pthread_barrier_t freed;

static void *free_first(void *arg) {
    (void)arg;
    free(malloc(16)); /* a thread that allocates too: its cache is on */
    free(shelved[0]);
    pthread_barrier_wait(&freed);
    for (;;)
        pause();
    return NULL;
}

static void announce(void *p) {
    printf("%p\n", p);
    fflush(stdout);
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    if (!strcmp(what, "double-small")) { /* caught in the thread cache */
        char *p = malloc(32);
        announce(p);
        free(p);
        free(p);
    } else if (!strcmp(what, "double-heap")) { /* back in its heap */
        char *p = malloc(40000); /* above the thread cache's 32 KiB */
        announce(p);
        free(p);
        free(p);
    } else if (!strcmp(what, "double-large")) { /* a cached mapping */
        char *p = malloc(1 << 20);
        announce(p);
        free(p);
        free(p);
    } else if (!strcmp(what, "interior")) {
        char *p = calloc(1, 256);
        announce(p + 64);
        free(p + 64);
    } else if (!strcmp(what, "misaligned")) {
        char *p = malloc(256);
        announce(p + 3);
        free(p + 3);
    } else if (!strcmp(what, "stack")) {
        long frame[16] = {0};
        announce(&frame[8]);
        free(&frame[8]);
    } else if (!strcmp(what, "realloc-freed")) { /* back in its heap */
        char *p = malloc(40000);
        announce(p);
        free(p);
        p = realloc(p, 50000);
    } else if (!strcmp(what, "realloc-cached") || !strcmp(what, "realloc-cached-small")) {
        /* A block in the thread cache is still used in its heap: realloc
         * (shrinking it in place, or keeping it) must see the free. */
        char *p = malloc(what[14] ? 32 : 5000);
        announce(p);
        free(p);
        p = realloc(p, what[14] ? 30 : 100);
    } else if (!strcmp(what, "uaf-link-small") || !strcmp(what, "uaf-zero-small")) {
        /* A write after free into a block in the thread cache: a crafted
         * link (an address the program chose) or zeros. The next malloc
         * of that size must report the block, never return the address. */
        static char target[64];
        char *p = malloc(32);
        char *q = malloc(32);
        char *volatile freed = q; /* hides the write after free from gcc */
        announce(q);
        free(p);
        free(q);
        if (what[4] == 'l')
            *(char **)freed = target;
        else
            memset(freed, 0, 16);
        p = malloc(32);
        printf("malloc returned %p (target %p)\n", (void *)p, (void *)target);
    } else if (!strcmp(what, "size-word-small")) {
        /* The word before a freed block's data (where glibc keeps the
         * size) overwritten, then a malloc of that size. */
        char *p = malloc(32);
        char *volatile freed = p;
        announce(p);
        free(p);
        ((size_t *)freed)[-1] = 0x41;
        p = malloc(32);
        printf("malloc returned %p\n", (void *)p);
    } else if (!strcmp(what, "underrun-large")) {
        /* An underrun over a large block's header (the words before its
         * data): free must refuse to trust it, never unmap what it says. */
        char *p = malloc(1 << 20);
        announce(p);
        memset(p - 24, 0, 16);
        free(p);
    } else if (!strcmp(what, "uaf-large")) {
        /* A write after free into a large block kept for reuse: the next
         * malloc that would reuse it says so. */
        char *p = malloc(1 << 20);
        char *volatile freed = p;
        announce(p);
        free(p);
        memset(freed - 24, 0x41, 16);
        p = malloc(1 << 20);
        printf("malloc returned %p\n", (void *)p);
    } else if (!strcmp(what, "double-shelved") || !strcmp(what, "uaf-shelved")) {
        /* A second thread frees 10,000 blocks of one size that this thread
         * allocated: they overflow its bin (4,096 blocks at most) more than
         * once, and with two threads at work its full bins go to the
         * depot's shelf, the first freed block with them. A second free of
         * that block, or a write after free into it and the mallocs that
         * reach it, must be reported. */
        for (int i = 0; i < SHELVED; i++)
            shelved[i] = malloc(32);
        char *volatile first = shelved[0];
        announce(first);
        pthread_t consumer;
        if (pthread_create(&consumer, NULL, free_shelved, NULL) != 0 ||
            pthread_join(consumer, NULL) != 0)
            return 2;
        if (what[0] == 'd') {
            free(first);
        } else {
            memset(first, 0, 16);
            for (int i = 0; i < 2 * SHELVED; i++)
                (void)malloc(32);
        }
    } else if (!strcmp(what, "double-other-thread")) {
        /* A block freed by another thread, which keeps it in its own
         * cache, then freed again by this thread: the seal says it is
         * cached, though not here (glibc's tcache, which walks only the
         * caller's own cache, misses this one). */
        shelved[0] = malloc(32);
        announce(shelved[0]);
        pthread_t other;
        pthread_barrier_init(&freed, NULL, 2);
        if (pthread_create(&other, NULL, free_first, NULL) != 0)
            return 2;
        pthread_barrier_wait(&freed);
        free(shelved[0]);
    } else {
        fprintf(stderr, "usage: misuse double-small|double-heap|double-large|"
                        "interior|misaligned|stack|realloc-freed|realloc-cached|"
                        "realloc-cached-small|"
                        "uaf-link-small|uaf-zero-small|size-word-small|"
                        "underrun-large|uaf-large|double-shelved|uaf-shelved|"
                        "double-other-thread\n");
        return 2;
    }
    fprintf(stderr, "misuse %s was not caught\n", what);
    return 1;
}
