/* Large blocks reused: a table of SLOTS blocks of 5..25 MiB; each step
 * frees a random slot, allocates a new block of a random size in its place
 * and writes one byte per 4 KiB page of it, then checks the bytes of the
 * block it is about to free. An allocator that gives such blocks back to
 * the kernel on free pays a page fault per page on every step; one that
 * keeps and reuses them does not. The figure is the harness's wall time
 * and peak RSS.
 *
 * usage: large SLOTS STEPS */
#include <string.h>

#include "common.h"

#define MIB ((size_t)1 << 20)
#define PAGE 4096

static void touch(unsigned char *p, size_t size, unsigned char tag)
{
    for (size_t off = 0; off < size; off += PAGE)
        p[off] = tag;
    p[size - 1] = tag;
}

static int intact(const unsigned char *p, size_t size, unsigned char tag)
{
    for (size_t off = 0; off < size; off += PAGE)
        if (p[off] != tag)
            return 0;
    return p[size - 1] == tag;
}

int main(int argc, char **argv)
{
    size_t nslots = arg_or(argc, argv, 1, 24);
    size_t steps = arg_or(argc, argv, 2, 1500);
    unsigned char **slots = check_alloc(calloc(nslots, sizeof *slots), nslots);
    size_t *lengths = check_alloc(calloc(nslots, sizeof *lengths), nslots);
    rng_t rng;
    rng_seed(&rng, 2024);
    for (size_t step = 0; step < steps; step++) {
        size_t slot = (size_t)(rng_next(&rng) % nslots);
        if (slots[slot] != NULL) {
            if (!intact(slots[slot], lengths[slot], (unsigned char)slot)) {
                fprintf(stderr, "step %zu: block in slot %zu lost its contents\n", step, slot);
                return 1;
            }
            free(slots[slot]);
        }
        size_t size = rng_range(&rng, 5 * MIB, 25 * MIB);
        slots[slot] = check_alloc(malloc(size), size);
        lengths[slot] = size;
        touch(slots[slot], size, (unsigned char)slot);
    }
    for (size_t s = 0; s < nslots; s++)
        free(slots[s]);
    free(slots);
    free(lengths);
    printf("%zu\n", steps);
    return 0;
}
