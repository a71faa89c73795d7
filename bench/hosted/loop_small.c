/* The smallest malloc/free round trip: malloc(4), write it, free it, N
 * times (default 100 M). The figure is the harness's wall time.
 *
 * usage: loop_small N */
#include "common.h"

int main(int argc, char **argv)
{
    size_t n = arg_or(argc, argv, 1, 100000000);
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char *p = check_alloc(malloc(4), 4);
        p[0] = (unsigned char)i;
        sum += p[0];
        free(p);
    }
    bench_sink = sum;
    printf("%lu\n", (unsigned long)sum);
    return 0;
}
