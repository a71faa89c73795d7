/* SPDX-License-Identifier: MIT */
/*
 * The header libosmem.so places right before every payload, as seed 004
 * specifies it: tests read it at (struct block_meta *)ptr - 1.
 */
#pragma once

#include <stddef.h>

struct block_meta {
	size_t size;              /* payload bytes, a multiple of 8 */
	int status;               /* STATUS_FREE, STATUS_ALLOC or STATUS_MAPPED */
	struct block_meta *prev;  /* previous heap block, NULL for the first */
	struct block_meta *next;  /* next heap block, NULL for the last */
};

#define STATUS_FREE   0
#define STATUS_ALLOC  1
#define STATUS_MAPPED 2
