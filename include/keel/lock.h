/* keel/lock.h — distributed locks with a TTL, a random token and a
 * fencing counter.
 *
 * With Redis (keel_locks_new with a client) a lock is the key
 * REDIS_KEY_PREFIX "lock:" NAME, taken with SET NX PX inside one Lua
 * script that also INCRs the lock's fencing counter (REDIS_KEY_PREFIX
 * "fence:" NAME, never expires), so the grant and its fencing number are
 * one atomic step; extend and release are compare-and-set /
 * compare-and-delete scripts on the token. Without Redis (NULL) the same
 * semantics hold inside the process: one table shared by every worker.
 *
 * A lock never falls back to the in-process table when Redis cannot
 * answer — that would hand out a second holder — it fails with
 * KEEL_EUNAVAIL (breaker open, connection down) or KEEL_ETIMEDOUT /
 * KEEL_ECLOSED (the answer was lost: the lock may have been taken, and
 * expires with its TTL).
 *
 * Every call runs on worker w's loop and never blocks it: retries wait
 * on libuv timers. A call that returns an error never calls cb; on
 * success cb runs exactly once, later, on w's loop.
 */
#ifndef KEEL_LOCK_H
#define KEEL_LOCK_H

#include "metrics.h"
#include "server.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_locks keel_locks;
struct keel_redis;

#define KEEL_LOCK_NAME_MAX 200
#define KEEL_LOCK_TOKEN_LEN 32

/* A granted (or extended) lock. */
typedef struct keel_lock_grant {
    char token[KEEL_LOCK_TOKEN_LEN + 1]; /* 32 hex digits, libsodium randomness */
    uint64_t fencing;       /* strictly greater than every earlier grant of the name */
    uint64_t expires_at_ms; /* Unix ms (this host's clock; conservative) */
} keel_lock_grant;

typedef struct keel_lock_opts {
    unsigned attempts;       /* tries in all while the lock is held; 0 = 1 */
    uint64_t retry_delay_ms; /* between tries (with up to +50% jitter); 0 = 50 */
    uint64_t max_wait_ms;    /* no try later than this after the call; 0 = no bound */
} keel_lock_opts;

/* status 0 with the grant; or KEEL_EBUSY (held by someone else after
 * every attempt), KEEL_ENOTFOUND (extend/release: not held, or expired),
 * KEEL_EACCES (extend/release: held with another token), or a Redis
 * failure (KEEL_EUNAVAIL, KEEL_ETIMEDOUT, KEEL_ECLOSED). grant is NULL
 * unless status is 0, and valid during the call. */
typedef void (*keel_lock_cb)(void *arg, int status, const keel_lock_grant *grant);

/* Locks on r (NULL: the in-process table). Metrics on m (may be NULL):
 * locks_acquired_total, locks_contended_total (attempts that found the
 * lock held), locks_errors_total. Before keel_server_start; free after
 * the workers stopped. */
keel_locks *keel_locks_new(struct keel_redis *r, keel_metrics *m);
void keel_locks_free(keel_locks *l);
/* "redis" or "memory". */
const char *keel_locks_backend(const keel_locks *l);

/* Takes the lock `name` (1..KEEL_LOCK_NAME_MAX bytes) for ttl_ms
 * (1 ms .. 24 h). 0 or KEEL_EINVAL / KEEL_EUNAVAIL (cb not called). */
int keel_lock_acquire(keel_locks *l, keel_worker *w, const char *name, uint64_t ttl_ms,
                      const keel_lock_opts *opts, keel_lock_cb cb, void *arg);
/* Sets the TTL of a lock held with token to ttl_ms from now. */
int keel_lock_extend(keel_locks *l, keel_worker *w, const char *name, const char *token,
                     uint64_t ttl_ms, keel_lock_cb cb, void *arg);
/* Releases a lock held with token (compare-and-delete). The grant passed
 * to cb carries the released lock's fencing number. */
int keel_lock_release(keel_locks *l, keel_worker *w, const char *name, const char *token,
                      keel_lock_cb cb, void *arg);

#ifdef __cplusplus
}
#endif
#endif
