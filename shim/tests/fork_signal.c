/* fork() from a signal handler while the only thread is inside malloc,
 * free or realloc (glibc's tst-mallocfork2). The handler is
 * async-signal-unsafe only in the way glibc supports: fork, then _exit in
 * the child and waitpid in the parent. An allocator whose fork handler
 * waits for its own locks spins on the lock the interrupted call holds;
 * the watchdog turns a hang into a failure. */
#include "common.h"

#include <signal.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { SLOTS = 256, SECONDS = 2 };

static volatile sig_atomic_t forks, failed;

static void on_timer(int sig) {
    (void)sig;
    int saved = errno;
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
    if (pid < 0) {
        failed = 1;
    } else {
        int status = 0;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed = 1;
        forks++;
    }
    errno = saved;
}

static void on_watchdog(int sig) {
    (void)sig;
    static const char msg[] = "fork_signal: hung (watchdog)\n";
    if (write(2, msg, sizeof msg - 1) < 0) {
    }
    _exit(3);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(void) {
    /* The watchdog counts the process's CPU time (a hung allocator spins),
     * on a timer of its own: SIGALRM is the forking timer's. */
    signal(SIGPROF, on_watchdog);
    struct itimerval watchdog = {{0, 0}, {10, 0}};
    CHECK(setitimer(ITIMER_PROF, &watchdog, NULL) == 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_timer;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGALRM, &sa, NULL) == 0);
    struct itimerval every = {{0, 1000}, {0, 1000}};
    CHECK(setitimer(ITIMER_REAL, &every, NULL) == 0);

    unsigned char *slot[SLOTS] = {0};
    size_t len[SLOTS] = {0};
    unsigned seed = 1;
    long ops = 0;
    double end = now() + SECONDS;
    while (now() < end) {
        for (int k = 0; k < 1000; k++, ops++) {
            seed = seed * 1103515245 + 12345;
            unsigned i = (seed >> 8) % SLOTS;
            size_t n = (seed >> 12) % 4 == 0 ? (seed >> 4) % 20000 : (seed >> 4) % 300;
            if (n % 97 == 0)
                n += 300000; /* a large block now and then */
            if (slot[i] && (seed & 1)) {
                unsigned char *p = realloc(slot[i], n + 1);
                CHECK(p != NULL);
                if (p) {
                    CHECK(p[0] == (unsigned char)i);
                    slot[i] = p;
                    len[i] = n + 1;
                }
            } else {
                free(slot[i]);
                slot[i] = malloc(n + 1);
                CHECK(slot[i] != NULL);
                len[i] = n + 1;
            }
            if (slot[i])
                memset(slot[i], (int)i, len[i] < 32 ? len[i] : 32);
        }
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    for (int i = 0; i < SLOTS; i++)
        free(slot[i]);
    CHECK(!failed);
    CHECK(forks > 0);
    printf("fork_signal: %d forks during %ld allocator calls\n", (int)forks, ops);
    return failures != 0;
}
