/* A mixed small-object program, in the style of the symbolic workloads of
 * the allocator benchmark suites (cfrac, espresso, a compiler's front
 * end): each round tokenises a generated text of WORDS words into a
 * chained hash table (a 40-byte node and a copy of the word, 2..24 bytes,
 * per distinct word), collects each word's positions in an array grown by
 * realloc (doubling from 2 entries), builds a 3-gram list of joined
 * strings (sizes 8..80), sorts it, then frees everything but one third of
 * the table, which the next round inherits. Prints a checksum of every
 * round's counts (independent of the allocator). The figure is the
 * harness's wall time.
 *
 * usage: mixed_small WORDS ROUNDS */
#include <string.h>

#include "common.h"

#define BUCKETS 65536

typedef struct word {
    struct word *next;
    char *text;
    size_t *where; /* positions, grown by realloc */
    size_t count, cap;
} word_t;

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static char *copy(const char *s, size_t len)
{
    char *c = check_alloc(malloc(len + 1), len + 1);
    memcpy(c, s, len);
    c[len] = 0;
    return c;
}

static word_t *intern(word_t **table, const char *text, size_t len)
{
    word_t **slot = &table[hash(text) % BUCKETS];
    for (word_t *w = *slot; w != NULL; w = w->next)
        if (strcmp(w->text, text) == 0)
            return w;
    word_t *w = check_alloc(malloc(sizeof *w), sizeof *w);
    w->text = copy(text, len);
    w->where = NULL, w->count = 0, w->cap = 0;
    w->next = *slot;
    *slot = w;
    return w;
}

static void note(word_t *w, size_t pos)
{
    if (w->count == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 2;
        w->where = check_alloc(realloc(w->where, w->cap * sizeof *w->where), w->cap);
    }
    w->where[w->count++] = pos;
}

static void drop(word_t *w)
{
    free(w->text);
    free(w->where);
    free(w);
}

static int by_text(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    size_t words = arg_or(argc, argv, 1, 300000);
    size_t rounds = arg_or(argc, argv, 2, 20);
    word_t **table = check_alloc(calloc(BUCKETS, sizeof *table), BUCKETS);
    rng_t rng;
    rng_seed(&rng, 2718);
    uint64_t sum = 0;
    for (size_t r = 0; r < rounds; r++) {
        word_t **text = check_alloc(malloc(words * sizeof *text), words);
        for (size_t i = 0; i < words; i++) {
            char buf[32];
            /* A Zipf-like vocabulary: short words are frequent. */
            size_t len = 2 + (size_t)(rng_next(&rng) % (1 + rng_next(&rng) % 23));
            uint64_t pick = rng_next(&rng) % (1 + rng_next(&rng) % 50000);
            for (size_t k = 0; k < len; k++)
                buf[k] = (char)('a' + (pick >> (k % 12)) % 26);
            buf[len] = 0;
            text[i] = intern(table, buf, len);
            note(text[i], i);
        }
        size_t grams = words / 3;
        char **list = check_alloc(malloc(grams * sizeof *list), grams);
        for (size_t g = 0; g < grams; g++) {
            const word_t *a = text[3 * g], *b = text[3 * g + 1], *c = text[3 * g + 2];
            size_t la = strlen(a->text), lb = strlen(b->text), lc = strlen(c->text);
            char *s = check_alloc(malloc(la + lb + lc + 3), la + lb + lc + 3);
            memcpy(s, a->text, la);
            s[la] = ' ';
            memcpy(s + la + 1, b->text, lb);
            s[la + 1 + lb] = ' ';
            memcpy(s + la + lb + 2, c->text, lc + 1);
            list[g] = s;
        }
        qsort(list, grams, sizeof *list, by_text);
        for (size_t g = 0; g < grams; g++) {
            sum = sum * 31 + (unsigned char)list[g][0] + (g + 1 < grams && strcmp(list[g], list[g + 1]) == 0);
            free(list[g]);
        }
        free(list);
        free(text);
        /* Keep one bucket in three (positions reset), free the rest. */
        for (size_t b = 0; b < BUCKETS; b++) {
            for (word_t **slot = &table[b]; *slot != NULL;) {
                word_t *w = *slot;
                sum += w->count;
                if ((b + r) % 3 == 0) {
                    w->count = 0;
                    slot = &w->next;
                } else {
                    *slot = w->next;
                    drop(w);
                }
            }
        }
    }
    for (size_t b = 0; b < BUCKETS; b++)
        while (table[b] != NULL) {
            word_t *w = table[b];
            table[b] = w->next;
            drop(w);
        }
    free(table);
    printf("%lu\n", (unsigned long)sum);
    return 0;
}
