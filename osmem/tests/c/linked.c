// SPDX-License-Identifier: MIT
/*
 * A C program linked with -losmem, built the way the seed's own tests are
 * (osmem.h, block_meta.h, no stdio, nothing else allocating): the header
 * right before each payload, calloc's zeroes, realloc keeping the data, the
 * mapping threshold. Exit status 0 when every check holds, else the number
 * of the first failed check.
 */
#include <string.h>

#include "block_meta.h"
#include "osmem.h"

#define CHECK(n, cond)                  \
	do {                            \
		if (!(cond))            \
			return (n);     \
	} while (0)

static struct block_meta *meta(void *payload)
{
	return (struct block_meta *)payload - 1;
}

static int all(const unsigned char *p, size_t len, unsigned char value)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != value)
			return 0;
	return 1;
}

int main(void)
{
	unsigned char *a, *b, *big;

	CHECK(1, sizeof(struct block_meta) == 32);
	CHECK(2, os_malloc(0) == NULL && os_calloc(0, 8) == NULL);

	a = os_malloc(100);
	CHECK(3, a != NULL && ((size_t)a & 7) == 0);
	CHECK(4, meta(a)->size == 104 && meta(a)->status == STATUS_ALLOC);
	CHECK(5, meta(a)->prev == NULL && meta(a)->next != NULL);
	memset(a, 0x5a, 100);

	b = os_calloc(10, 10);
	CHECK(6, b != NULL && all(b, 100, 0));
	memset(b, 0x33, 100);

	a = os_realloc(a, 3000);
	CHECK(7, a != NULL && all(a, 100, 0x5a) && all(b, 100, 0x33));

	big = os_malloc(200 * 1024);
	CHECK(8, big != NULL && meta(big)->status == STATUS_MAPPED);
	CHECK(9, meta(big)->prev == NULL && meta(big)->next == NULL);
	memset(big, 0x77, 200 * 1024);
	big = os_realloc(big, 100);
	CHECK(10, big != NULL && meta(big)->status == STATUS_ALLOC && all(big, 100, 0x77));

	os_free(b);
	CHECK(11, meta(b)->status == STATUS_FREE);
	CHECK(12, os_realloc(b, 10) == NULL && meta(b)->status == STATUS_FREE);
	CHECK(13, os_realloc(a, 0) == NULL);
	os_free(big);
	os_free(NULL);
	return 0;
}
