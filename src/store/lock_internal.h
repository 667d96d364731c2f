/* lock_internal.h — the in-process lock table behind keel/lock.h, shared
 * with its unit tests. Never installed. Time is passed in (monotonic ms). */
#ifndef KEEL_LOCK_INTERNAL_H
#define KEEL_LOCK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

typedef struct keel__locktab keel__locktab;

keel__locktab *keel__locktab_new(void);
void keel__locktab_free(keel__locktab *t);

/* 0: granted to token, *fencing set; KEEL_EBUSY: held, *left_ms the TTL
 * that remains. Thread-safe. */
int keel__locktab_acquire(keel__locktab *t, const char *name, const char *token,
                          uint64_t ttl_ms, uint64_t now_ms, uint64_t *fencing,
                          uint64_t *left_ms);
/* 0 (TTL reset to ttl_ms from now), KEEL_ENOTFOUND (not held or
 * expired), KEEL_EACCES (another token). *fencing is the holder's. */
int keel__locktab_extend(keel__locktab *t, const char *name, const char *token,
                         uint64_t ttl_ms, uint64_t now_ms, uint64_t *fencing);
/* 0 (released), KEEL_ENOTFOUND, KEEL_EACCES. */
int keel__locktab_release(keel__locktab *t, const char *name, const char *token,
                          uint64_t now_ms, uint64_t *fencing);
/* Locks held at now_ms (expired ones are removed). */
size_t keel__locktab_count(keel__locktab *t, uint64_t now_ms);

/* The scripts (KEYS[1] lock, KEYS[2] fencing counter). */
extern const char keel__lock_acquire_lua[], keel__lock_extend_lua[], keel__lock_release_lua[];

#endif
