/* Helpers shared by the shim's C tests. */
#ifndef SHIM_TEST_COMMON_H
#define SHIM_TEST_COMMON_H

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "regionheap.h"

static int failures __attribute__((unused));

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,         \
                    __LINE__, #cond);                                      \
            failures++;                                                    \
        }                                                                  \
    } while (0)

/* get_stat() of the library in the process, whether it was linked or
 * preloaded; exits if region-heap is not the process's allocator. */
__attribute__((unused)) static struct regionheap_stat stats(void) {
    struct regionheap_stat (*get)(void) =
        (struct regionheap_stat(*)(void))dlsym(RTLD_DEFAULT, "get_stat");
    if (!get) {
        fprintf(stderr, "get_stat not found: region-heap is not loaded\n");
        exit(2);
    }
    return get();
}

__attribute__((unused)) static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(seed + i * 7 + (i >> 8));
}

__attribute__((unused)) static int holds(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed + i * 7 + (i >> 8)))
            return 0;
    return 1;
}

/* Values the compiler cannot see through, so that impossible requests
 * reach the allocator instead of a compile-time warning. */
__attribute__((unused)) static size_t opaque(size_t x) {
    __asm__ volatile("" : "+r"(x));
    return x;
}

__attribute__((unused)) static void *hide(void *p) {
    __asm__ volatile("" : "+r"(p));
    return p;
}

#endif
