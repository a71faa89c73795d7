/* fork() while other threads hammer the allocator: the child must be able
 * to allocate (no lock inherited in a held state) and so must the parent. */
#include "common.h"

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int stop;

static void *hammer(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    void *keep[64] = {0};
    while (!stop) {
        seed = seed * 1103515245 + 12345;
        unsigned i = (seed >> 8) % 64;
        size_t n = (seed >> 16) % 100 == 0 ? (size_t)(seed % (2 << 20)) + 300000
                                            : (seed >> 4) % 3000;
        free(keep[i]);
        keep[i] = malloc(n);
        if (keep[i])
            memset(keep[i], (int)i, n < 64 ? n : 64);
    }
    for (int i = 0; i < 64; i++)
        free(keep[i]);
    return NULL;
}

static int child_work(void) {
    int bad = 0;
    unsigned char *blocks[200];
    for (unsigned i = 0; i < 200; i++) {
        size_t n = (i * 131) % 5000 + (i % 40 == 0 ? 1 << 20 : 0);
        blocks[i] = malloc(n);
        if (!blocks[i])
            return 1;
        fill(blocks[i], n, i);
        blocks[i] = realloc(blocks[i], n + 100);
        bad |= !holds(blocks[i], n, i);
    }
    for (unsigned i = 0; i < 200; i++)
        free(blocks[i]);
    return bad;
}

static void *child_thread(void *arg) {
    (void)arg;
    return (void *)(uintptr_t)child_work();
}

int main(void) {
    enum { THREADS = 3, FORKS = 40 };
    pthread_t t[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, hammer, (void *)(i + 1));
    for (int k = 0; k < FORKS; k++) {
        pid_t pid = fork();
        if (pid == 0) {
            pthread_t ct;
            void *ret = (void *)1;
            int bad = child_work();
            if (pthread_create(&ct, NULL, child_thread, NULL) == 0)
                pthread_join(ct, &ret);
            _exit(bad || ret != NULL);
        }
        CHECK(pid > 0);
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        CHECK(child_work() == 0);
    }
    stop = 1;
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    printf("fork: %d forks\n", FORKS);
    return failures != 0;
}
