/* Every entry point on random sizes: per iteration, with sizes from
 * rand() % 2048 (srand(1), glibc's generator, as in the classic loop):
 *   p = malloc(a); write; free(p);
 *   q = calloc(1, b); check it is zeroed; q = realloc(q, c); free(q);
 * N times (default 20 M). The figure is the harness's wall time.
 *
 * usage: loop_mixed N */
#include "common.h"

int main(int argc, char **argv)
{
    size_t n = arg_or(argc, argv, 1, 20000000);
    uint64_t sum = 0;
    srand(1);
    for (size_t i = 0; i < n; i++) {
        size_t a = (size_t)(rand() % 2048);
        unsigned char *p = check_alloc(malloc(a), a);
        if (a > 0)
            p[a - 1] = (unsigned char)i;
        free(p);

        size_t b = (size_t)(rand() % 2048);
        unsigned char *q = check_alloc(calloc(1, b), b);
        if (b > 0 && (q[0] != 0 || q[b - 1] != 0)) {
            fprintf(stderr, "iteration %zu: calloc(1, %zu) is not zeroed\n", i, b);
            return 1;
        }
        size_t c = (size_t)(rand() % 2048);
        if (b > 0)
            q[0] = (unsigned char)i;
        unsigned char *r = realloc(q, c);
        if (r == NULL && c != 0) {
            fprintf(stderr, "realloc to %zu bytes failed\n", c);
            return 1;
        }
        if (r != NULL && b > 0 && c > 0) {
            if (r[0] != (unsigned char)i) {
                fprintf(stderr, "iteration %zu: realloc lost the contents\n", i);
                return 1;
            }
            sum += r[0];
        }
        free(r);
    }
    bench_sink = sum;
    printf("%lu\n", (unsigned long)sum);
    return 0;
}
