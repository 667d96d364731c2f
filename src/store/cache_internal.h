/* cache_internal.h — the in-process store behind keel/cache.h, shared
 * with its tests. Never installed. */
#ifndef KEEL_CACHE_INTERNAL_H
#define KEEL_CACHE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* A sharded LRU of text values with expiry. Each shard has its own lock,
 * hash table and LRU list, and an equal share of the bounds: max_entries
 * entries and max_bytes bytes (key + value + per-entry overhead) in all.
 * Thread-safe. Times are monotonic ms, passed in (tests drive the clock). */
typedef struct keel__cache_mem keel__cache_mem;

keel__cache_mem *keel__cache_mem_new(unsigned nshards, uint64_t max_entries,
                                     uint64_t max_bytes);
void keel__cache_mem_free(keel__cache_mem *m);

/* A copy of the value (keel_malloc'd, NUL-terminated; *len its length),
 * or NULL on a miss (absent or expired: an expired entry is removed). A
 * hit makes the entry the most recently used. */
char *keel__cache_mem_get(keel__cache_mem *m, const char *key, size_t klen, uint64_t now_ms,
                          size_t *len);
/* Stores a copy, replacing any value; expires_ms 0 = never. Evicts the
 * least recently used entries of the shard past its bounds. 0, or
 * KEEL_ETOOBIG when the entry alone is over the shard's byte share. */
int keel__cache_mem_set(keel__cache_mem *m, const char *key, size_t klen, const char *val,
                        size_t vlen, uint64_t expires_ms);
/* 1 when the key was there (and not expired), 0 otherwise. */
int keel__cache_mem_del(keel__cache_mem *m, const char *key, size_t klen, uint64_t now_ms);

/* Entries and bytes held now, and evictions so far, over all shards. */
uint64_t keel__cache_mem_count(keel__cache_mem *m);
uint64_t keel__cache_mem_bytes(keel__cache_mem *m);
uint64_t keel__cache_mem_evictions(keel__cache_mem *m);
/* The bytes one entry accounts for. */
size_t keel__cache_mem_entry_size(size_t klen, size_t vlen);

#endif
