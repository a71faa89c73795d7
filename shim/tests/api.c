/* Every allocation function of the shim, with glibc's results and errno.
 * Prints the number of calls it made; exits non-zero on any failure. */
#include "common.h"

#include <malloc.h>
#include <unistd.h>

static unsigned long n_malloc, n_free, n_calloc, n_realloc;

/* Called through pointers: GCC's use-after-free analysis does not know
 * that a failed realloc leaves the block alone. */
static void *(*volatile realloc_fn)(void *, size_t) = realloc;
static void *(*volatile reallocarray_fn)(void *, size_t, size_t) = reallocarray;

static void *m(size_t n) { n_malloc++; return malloc(n); }
static void f(void *p) { if (p) n_free++; free(p); }

static void test_malloc_zero_and_huge(void) {
    void *a = m(0), *b = m(0);
    CHECK(a && b && a != b);
    CHECK(((uintptr_t)a & 15) == 0);
    f(a);
    f(b);
    size_t huge[] = {SIZE_MAX, SIZE_MAX - 4096, (size_t)PTRDIFF_MAX + 1,
                     (size_t)1 << 50};
    for (unsigned i = 0; i < sizeof huge / sizeof *huge; i++) {
        errno = 0;
        CHECK(m(opaque(huge[i])) == NULL);
        CHECK(errno == ENOMEM);
    }
    errno = 1234;
    void *p = m(100);
    CHECK(p && errno == 1234); /* success leaves errno alone */
    f(p);
    free(NULL);
}

static void test_calloc(void) {
    errno = 0;
    n_calloc++;
    CHECK(calloc(opaque(SIZE_MAX / 2), 3) == NULL && errno == ENOMEM);
    errno = 0;
    n_calloc++;
    CHECK(calloc(opaque((size_t)1 << 33), (size_t)1 << 33) == NULL && errno == ENOMEM);
    size_t sizes[] = {1, 24, 100, 1000, 2048, 5000, 100000, 300000, 3 << 20};
    for (unsigned i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        unsigned char *dirty = m(n);
        memset(dirty, 0xa5, n);
        f(dirty);
        n_calloc++;
        unsigned char *z = calloc(n, 1);
        CHECK(z != NULL);
        int zero = 1;
        for (size_t j = 0; j < n; j++)
            zero &= z[j] == 0;
        CHECK(zero);
        f(z);
    }
}

static void test_realloc(void) {
    size_t sizes[] = {16,      100,      5000,  70000, 300000, 20 << 20,
                      9 << 20, 150000, 1000,  2000,  8};
    n_realloc++;
    unsigned char *p = realloc(NULL, 10);
    CHECK(p != NULL);
    fill(p, 10, 1);
    size_t valid = 10;
    for (unsigned i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        n_realloc++;
        unsigned char *q = realloc(p, n);
        CHECK(q != NULL);
        CHECK(holds(q, valid < n ? valid : n, 1));
        CHECK(malloc_usable_size(q) >= n);
        fill(q, n, 1);
        valid = n;
        p = q;
    }
    errno = 0;
    n_realloc++;
    CHECK(realloc_fn(p, opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
    CHECK(holds(p, valid, 1));
    errno = 0;
    n_realloc++;
    CHECK(reallocarray_fn(p, opaque(SIZE_MAX / 2), 3) == NULL && errno == ENOMEM);
    CHECK(holds(p, valid, 1));
    n_realloc++;
    p = reallocarray(p, 100, 40);
    CHECK(p && holds(p, valid, 1));
    struct regionheap_stat before = stats();
    n_realloc++;
    n_free++;
    CHECK(realloc(p, 0) == NULL); /* frees, as glibc does */
    CHECK(stats().free == before.free + 1);
}

static void test_alignment(void) {
    void *out = (void *)0x1234;
    size_t bad[] = {0, 3, 4, 12, 24, 100};
    for (unsigned i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK(posix_memalign(&out, bad[i], 10) == EINVAL);
        CHECK(out == (void *)0x1234);
    }
    CHECK(posix_memalign(&out, 64, opaque(SIZE_MAX - 8)) == ENOMEM);
    for (size_t align = 8; align <= ((size_t)4 << 20); align <<= 1) {
        size_t sizes[] = {0, 1, 100, 5000, 300000};
        for (unsigned i = 0; i < sizeof sizes / sizeof *sizes; i++) {
            n_malloc += 2;
            CHECK(posix_memalign(&out, align, sizes[i]) == 0);
            CHECK(((uintptr_t)out & (align - 1)) == 0);
            fill(out, sizes[i], 3);
            void *b = aligned_alloc(align, sizes[i]);
            CHECK(b && ((uintptr_t)b & (align - 1)) == 0);
            fill(b, sizes[i], 4);
            CHECK(holds(out, sizes[i], 3));
            CHECK(malloc_usable_size(out) >= sizes[i]);
            f(out);
            f(b);
        }
    }
    errno = 0;
    n_malloc++;
    CHECK(aligned_alloc(24, 48) == NULL && errno == EINVAL);
    errno = 0;
    n_malloc++;
    CHECK(memalign(opaque(SIZE_MAX / 2 + 2), 48) == NULL && errno == EINVAL);
    long page = sysconf(_SC_PAGESIZE);
    n_malloc += 3;
    void *ma = memalign(48, 10), *v = valloc(10), *pv = pvalloc(10);
    CHECK(((uintptr_t)ma & 63) == 0); /* rounded up to 64 */
    CHECK(((uintptr_t)v & (page - 1)) == 0);
    CHECK(((uintptr_t)pv & (page - 1)) == 0);
    CHECK(malloc_usable_size(pv) >= (size_t)page);
    f(ma);
    f(v);
    f(pv);
    errno = 0;
    n_malloc++;
    CHECK(pvalloc(opaque(SIZE_MAX - 10)) == NULL && errno == ENOMEM);
}

static void test_usable_and_neighbours(void) {
    enum { N = 800 };
    static unsigned char *live[N];
    static size_t len[N];
    CHECK(malloc_usable_size(NULL) == 0);
    for (unsigned i = 0; i < N; i++) {
        len[i] = (i * 37) % 6000 + (i % 50 == 0 ? 400000 : 0);
        live[i] = m(len[i]);
        CHECK(live[i] != NULL);
        CHECK(malloc_usable_size(live[i]) >= len[i]);
        fill(live[i], len[i], i);
    }
    for (unsigned i = 0; i < N; i += 2) {
        CHECK(holds(live[i], len[i], i));
        f(live[i]);
    }
    for (unsigned i = 1; i < N; i += 2) {
        CHECK(holds(live[i], len[i], i)); /* survived the frees around it */
        f(live[i]);
    }
}

int main(void) {
    struct regionheap_stat start = stats();
    test_malloc_zero_and_huge();
    test_calloc();
    test_realloc();
    test_alignment();
    test_usable_and_neighbours();
    struct regionheap_stat end = stats();
    CHECK(end.malloc - start.malloc >= n_malloc);
    CHECK(end.free - start.free >= n_free);
    CHECK(end.calloc - start.calloc >= n_calloc);
    CHECK(end.realloc - start.realloc >= n_realloc);
    printf("calls: malloc=%lu free=%lu calloc=%lu realloc=%lu\n", n_malloc,
           n_free, n_calloc, n_realloc);
    if (failures)
        fprintf(stderr, "api: %d failures\n", failures);
    return failures != 0;
}
