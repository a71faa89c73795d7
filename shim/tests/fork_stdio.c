/* fork() while other threads use stdio (the pattern of glibc bug 19431,
 * which glibc's tst-malloc-fork-deadlock checks): getline threads hold
 * their FILE lock while they realloc and free, a thread in fflush(NULL)
 * holds stdio's list lock while it waits for a FILE lock, and fork takes
 * the list lock. An allocator that takes its own locks before fork (in a
 * pthread_atfork prepare handler) closes the cycle and hangs; the
 * watchdog turns a hang into a failure. The children allocate before they
 * exit: the heaps the readers were inside at the fork must not hang them. */
#include "common.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { READERS = 4, FORKERS = 2, LINE = 50000, SECONDS = 2 };

static volatile int stop;
static FILE *files[READERS];
static long reads[READERS], flushes, forks[FORKERS];

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "fork_stdio: hung (watchdog)\n";
    if (write(2, msg, sizeof msg - 1) < 0) {
    }
    _exit(3);
}

static void *reader(void *arg) {
    uintptr_t i = (uintptr_t)arg;
    while (!stop) {
        char *line = NULL;
        size_t cap = 0;
        rewind(files[i]);
        ssize_t n = getline(&line, &cap, files[i]);
        if (n != LINE + 1) {
            fprintf(stderr, "reader %u: getline returned %zd\n", (unsigned)i, n);
            _exit(4);
        }
        free(line);
        reads[i]++;
    }
    return NULL;
}

static void *flusher(void *arg) {
    (void)arg;
    while (!stop) {
        fflush(NULL);
        flushes++;
    }
    return NULL;
}

/* In the child: allocations of mixed sizes, one large, kept and checked. */
static int child_work(void) {
    unsigned char *blocks[64];
    int bad = 0;
    for (unsigned i = 0; i < 64; i++) {
        size_t n = (i * 211) % 3000 + 1 + (i == 7 ? 300000 : 0);
        blocks[i] = malloc(n);
        if (!blocks[i])
            return 1;
        fill(blocks[i], n, i);
        unsigned char *grown = realloc(blocks[i], n + 5000);
        if (!grown)
            return 1;
        blocks[i] = grown;
        bad |= !holds(blocks[i], n, i);
    }
    for (unsigned i = 0; i < 64; i++)
        free(blocks[i]);
    return bad;
}

static void *forker(void *arg) {
    uintptr_t i = (uintptr_t)arg;
    while (!stop) {
        pid_t pid = fork();
        if (pid == 0)
            _exit(child_work());
        if (pid < 0) {
            perror("fork");
            _exit(5);
        }
        int status = 0;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "forker %u: child failed\n", (unsigned)i);
            _exit(6);
        }
        forks[i]++;
    }
    return NULL;
}

int main(void) {
    signal(SIGALRM, on_alarm);
    alarm(20);
    char *text = malloc(LINE + 2);
    CHECK(text != NULL);
    memset(text, 'x', LINE);
    text[LINE] = '\n';
    text[LINE + 1] = 0;
    for (int i = 0; i < READERS; i++) {
        files[i] = tmpfile();
        CHECK(files[i] != NULL);
        CHECK(fputs(text, files[i]) >= 0);
        CHECK(fflush(files[i]) == 0);
    }
    free(text);
    if (failures)
        return 1;

    pthread_t r[READERS], f, k[FORKERS];
    for (uintptr_t i = 0; i < READERS; i++)
        CHECK(pthread_create(&r[i], NULL, reader, (void *)i) == 0);
    CHECK(pthread_create(&f, NULL, flusher, NULL) == 0);
    for (uintptr_t i = 0; i < FORKERS; i++)
        CHECK(pthread_create(&k[i], NULL, forker, (void *)i) == 0);
    struct timespec pause = {SECONDS, 0};
    while (nanosleep(&pause, &pause) != 0) {
    }
    stop = 1;
    for (int i = 0; i < READERS; i++)
        pthread_join(r[i], NULL);
    pthread_join(f, NULL);
    for (int i = 0; i < FORKERS; i++)
        pthread_join(k[i], NULL);
    long total_reads = 0, total_forks = 0;
    for (int i = 0; i < READERS; i++) {
        total_reads += reads[i];
        fclose(files[i]);
    }
    for (int i = 0; i < FORKERS; i++)
        total_forks += forks[i];
    CHECK(total_reads > 0 && total_forks > 0 && flushes > 0);
    printf("fork_stdio: %ld forks, %ld getlines, %ld flushes\n", total_forks, total_reads,
           flushes);
    return failures != 0;
}
