/* keel/rl_store.h — the contract between the rate limiter (keel/ratelimit.h,
 * src/mw) and the stores that keep its state: the in-process store (src/mw)
 * and the Redis store (keel/redis.h, src/store). Types only, no code.
 *
 * It sits in core, below both sides, like keel_middleware: the limiter and
 * the Redis store each depend down on it and never on each other (mw and
 * store are sibling layers, docs/architecture.md).
 */
#ifndef KEEL_RL_STORE_H
#define KEEL_RL_STORE_H

#include "server.h"

#ifdef __cplusplus
extern "C" {
#endif

/* L requests per window. limit 0 = no limit. */
typedef struct keel_rl_rate {
    uint64_t limit;
    uint64_t window_ms;
} keel_rl_rate;

typedef struct keel_rl_result {
    int allowed;
    uint64_t limit;
    uint64_t remaining;      /* requests that would still be allowed now */
    uint64_t reset_ms;       /* until the whole quota is available again */
    uint64_t retry_after_ms; /* refused: until one more request fits */
} keel_rl_result;

/* status 0 with res set, or a negative error (store unreachable). */
typedef void (*keel_rl_done_fn)(void *arg, int status, const keel_rl_result *res);

/* One check of a chain: a key and its rate. */
typedef struct keel_rl_check {
    const char *key;
    size_t keylen;
    const keel_rl_rate *rate;
} keel_rl_check;

#define KEEL_RL_CHAIN_MAX 4

/* status 0: res is the result of checks[idx], the first check that refused
 * or, when every check allowed, the last one; or a negative error (idx 0,
 * res NULL). */
typedef void (*keel_rl_chain_done_fn)(void *arg, int status, size_t idx,
                                      const keel_rl_result *res);

/* A store applies keel_gcra (keel/ratelimit.h) to one key atomically. hit() calls done
 * exactly once: before returning (the in-process store) or later on the
 * loop of worker w (a networked store); it runs on w's loop, never
 * blocking it.
 *
 * hit_chain() (optional: NULL, and the limiter calls hit() once per check,
 * in turn) does what those hit() calls would, in one operation: the
 * checks (1..KEEL_RL_CHAIN_MAX) in order, stopping at the first refusal.
 * The checks before a refusal stay charged; the refusing one and those
 * after it are not. The keys are copied before it returns; done is called
 * exactly once, as for hit(). A networked store makes it one round trip. */
typedef struct keel_rl_store {
    const char *name;
    void (*hit)(void *self, keel_worker *w, const char *key, size_t keylen,
                const keel_rl_rate *rate, keel_rl_done_fn done, void *arg);
    void (*hit_chain)(void *self, keel_worker *w, const keel_rl_check *checks, size_t n,
                      keel_rl_chain_done_fn done, void *arg);
    void (*free)(void *self);
    void *self;
} keel_rl_store;

#ifdef __cplusplus
}
#endif
#endif
