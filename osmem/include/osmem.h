/* SPDX-License-Identifier: MIT */
/*
 * libosmem.so: the os_malloc family of seed 004 (region-heap's osmem crate).
 *
 * Link with -losmem (and -L<dir of libosmem.so>), or dlopen("libosmem.so").
 * Blocks are 8-byte aligned; each payload is preceded by a struct block_meta
 * (see block_meta.h), 32 bytes on 64-bit targets.
 */
#pragma once

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* size bytes, uninitialised; NULL for 0. Blocks of 128 KiB and more (header
 * included) are mapped with mmap, smaller ones come from the brk heap. */
void *os_malloc(size_t size);

/* nmemb * size zeroed bytes; NULL if either is 0. Mapped from one page
 * (header included) up. */
void *os_calloc(size_t nmemb, size_t size);

/* Resizes ptr in place when possible, else moves it. NULL ptr: os_malloc;
 * size 0: os_free and NULL; a block already freed: NULL. */
void *os_realloc(void *ptr, size_t size);

/* Frees ptr (NULL is ignored): heap blocks are kept for reuse, mapped
 * blocks are unmapped. */
void os_free(void *ptr);

#ifdef __cplusplus
}
#endif
