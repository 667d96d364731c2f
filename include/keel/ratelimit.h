/* keel/ratelimit.h — rate limiting: GCRA over a pluggable store, tiers
 * chosen per route, IETF RateLimit-* headers, 429 with Retry-After.
 *
 * Algorithm: GCRA (the generic cell rate algorithm, a leaky bucket kept as
 * one timestamp per key). A rate of L requests per window W lets a client
 * send L requests at once, then one every W/L; a key's whole state is its
 * "theoretical arrival time" (TAT), so a check is one read-modify-write
 * that is exact and atomic under the store's lock (or one Redis script),
 * and a key whose TAT has passed is the same as a key never seen — which
 * is what lets a store expire and evict freely.
 *
 * Keys: "rl:<tier>:<client>" where client is the authenticated subject an
 * auth middleware put in the request local KEEL_RL_SUBJECT ("user:<id>",
 * "apikey:<id>"), else "ip:<client address>" (IPv6 by its
 * /CLIENT_IPV6_PREFIX network). An unverified X-API-Key is never a key:
 * a client could rotate made-up keys for fresh quotas.
 */
#ifndef KEEL_RATELIMIT_H
#define KEEL_RATELIMIT_H

#include <stdio.h>

#include "metrics.h"
#include "rl_store.h"
#include "server.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The request local (keel_req_set_local) naming the authenticated
 * subject, set by auth middleware that runs before the limiter. */
#define KEEL_RL_SUBJECT "auth.subject"
/* The request local holding the route tier's keel_rl_result after the
 * limiter ran (for handlers that show it). */
#define KEEL_RL_RESULT "rate_limit.result"

/* Parses "20/15m", "10/1s", "300/1m" (the window in keel_parse_duration_ms
 * syntax; "100/15min" is not accepted, "100/900000" is 900000 ms).
 * "" and "0" mean off (limit 0). 0 or KEEL_EINVAL. */
int keel_rl_parse_rate(const char *s, keel_rl_rate *out);

/* One GCRA step on a key's state. *tat_us is the theoretical arrival time
 * in µs on the store's clock (0 for a new key); it is advanced only when
 * the request is allowed. */
void keel_gcra(uint64_t *tat_us, uint64_t now_us, const keel_rl_rate *rate,
               keel_rl_result *out);

/* ---------------------------------------------------------------- stores
 * (the contract, keel_rl_store, is in keel/rl_store.h) */

/* The in-process store, shared by every worker of the process: sharded,
 * locked per shard, at most max_keys keys. Keys whose TAT has passed are
 * dropped as they are met; when full, the least recently used key is
 * evicted (that client starts with a whole quota: memory stays bounded
 * under key spraying at the price of forgetting the quietest clients). */
keel_rl_store keel_rl_memory_store(uint64_t max_keys);

typedef struct keel_rl_memory_stats {
    uint64_t keys;
    uint64_t evictions;
    uint64_t bytes; /* memory held by keys and tables */
} keel_rl_memory_stats;
void keel_rl_memory_stats_get(const keel_rl_store *st, keel_rl_memory_stats *out);

/* ---------------------------------------------------------------- tiers */

#define KEEL_RL_TIER_NAME_MAX 32
#define KEEL_RL_MAX_TIERS 32

typedef struct keel_rl_tier {
    char name[KEEL_RL_TIER_NAME_MAX];
    keel_rl_rate rate;
    char policy[48]; /* the RateLimit-Policy value: "100;w=900" */
} keel_rl_tier;

/* The rate limiter's options (keel/config.h): RATE_LIMIT_*.
 * keel_config_get(cfg, &keel_rate_limit_config). */
typedef struct keel_rate_limit_options {
    int rate_limit;             /* RATE_LIMIT_ENABLED */
    uint64_t rate_limit_max;    /* RATE_LIMIT_MAX (general tier) */
    uint64_t rate_limit_window_ms; /* RATE_LIMIT_WINDOW */
    char *rate_limit_strict;    /* RATE_LIMIT_STRICT: "N/window" */
    char *rate_limit_auth;      /* RATE_LIMIT_AUTH */
    char *rate_limit_public;    /* RATE_LIMIT_PUBLIC */
    char *rate_limit_burst;     /* RATE_LIMIT_BURST */
    char *rate_limit_analytics; /* RATE_LIMIT_ANALYTICS (analytics ingestion, per key) */
    char *rate_limit_tiers;     /* RATE_LIMIT_TIERS: "name=N/window,..." */
    uint64_t rate_limit_max_keys; /* RATE_LIMIT_MAX_KEYS */
    int rate_limit_fail_open;   /* RATE_LIMIT_FAIL_OPEN */
} keel_rate_limit_options;

/* Its validate hook checks every tier when RATE_LIMIT_ENABLED. */
extern const keel_config_module keel_rate_limit_config;

/* The tiers configured by cfg: general (RATE_LIMIT_MAX per
 * RATE_LIMIT_WINDOW), strict, auth, public, burst and RATE_LIMIT_TIERS'
 * custom ones ("name=N/window, ..."). On an invalid value writes one line
 * naming the variable to err (when not NULL) and returns KEEL_ECONFIG;
 * else the count. */
int keel_rl_tiers_from_config(const keel_config *cfg, keel_rl_tier *out, size_t cap,
                              FILE *err);

/* ---------------------------------------------------------------- middleware */

typedef struct keel_rate_limiter keel_rate_limiter;

/* A limiter over cfg's tiers (already checked with
 * keel_rl_tiers_from_config, as loading does) and `store` (owned from now on). Metrics:
 * rate_limit_rejections_total{tier}, rate_limit_store_errors_total, and
 * for the in-process store rate_limit_keys / rate_limit_evictions_total. */
keel_rate_limiter *keel_rate_limiter_new(const keel_config *cfg, keel_rl_store store,
                                         keel_metrics *m);

/* Checks that every route names a known tier (NULL = general, "none" =
 * not limited). 0, or KEEL_EINVAL with a line on err per bad route. */
int keel_rate_limiter_check_routes(const keel_rate_limiter *rl,
                                   const keel_route *const *routes, size_t n, FILE *err);

/* The middleware (it owns rl). Each request of a limited route counts
 * once against the burst tier and once against its route's tier (routes
 * flagged KEEL_ROUTE_INTERNAL and tier "none" are exempt; unmatched
 * requests count as general). Allowed responses carry RateLimit-Limit,
 * RateLimit-Remaining, RateLimit-Reset (seconds), RateLimit-Policy and
 * X-RateLimit-Limit/-Remaining/-Reset (Unix time); a refusal is 429
 * problem+json with Retry-After. */
keel_middleware keel_mw_rate_limit(keel_rate_limiter *rl);
/* The same limiter installed but not enforcing (RATE_LIMIT_ENABLED=false):
 * routes' tiers stay declared and are still checked at start-up. */
keel_middleware keel_mw_rate_limit_off(keel_rate_limiter *rl);

#ifdef __cplusplus
}
#endif
#endif
