/* keel/cache.h — a JSON cache shared by every worker (and, with Redis,
 * every instance): get/set/delete with a TTL, namespaced keys, and a
 * cache-aside helper with single-flight per key.
 *
 * Storage. With a keel_redis the values live in Redis as JSON text under
 * REDIS_KEY_PREFIX + "cache:<ns>:<key>", with a PX expiry; commands run on
 * the calling worker's own connection, never blocking a loop. Without one
 * they live in an in-process LRU shared by all workers of the process:
 * sharded, locked, bounded in entries (CACHE_MAX_ENTRIES) and bytes
 * (CACHE_MAX_BYTES), with expiry.
 *
 * Redis set but unavailable (breaker open, connection down, timeout): a
 * read is a miss — never a stale local copy, because other instances may
 * have changed or invalidated the value meanwhile — and a write or a
 * delete fails. Callers of keel_cache_fetch just load from the source.
 *
 * Metrics: cache_hits_total{ns}, cache_misses_total{ns} (a failed read
 * counts as a miss too), cache_errors_total (reads and writes that Redis
 * could not answer), cache_loads_total{ns} (loader runs of
 * keel_cache_fetch: with single-flight, one per key and miss per process).
 *
 * Namespaces: 1..32 bytes of [a-z0-9_.-] from a bounded set (they are a
 * metric label). Keys: 1..KEEL_CACHE_KEY_MAX bytes, no control bytes and
 * no space. */
#ifndef KEEL_CACHE_H
#define KEEL_CACHE_H

#include "config.h"
#include "metrics.h"
#include "server.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_cache keel_cache;
struct keel_redis;
struct json_t;

/* The cache's options (keel/config.h): CACHE_*. keel_config_get(cfg,
 * &keel_cache_config). */
typedef struct keel_cache_options {
    uint64_t cache_max_entries; /* CACHE_MAX_ENTRIES (in-process cache) */
    uint64_t cache_max_bytes;   /* CACHE_MAX_BYTES */
    uint64_t cache_default_ttl_ms; /* CACHE_DEFAULT_TTL */
} keel_cache_options;

extern const keel_config_module keel_cache_config;

#define KEEL_CACHE_KEY_MAX 512
#define KEEL_CACHE_NS_MAX 32
/* Largest value, as JSON text (KEEL_ETOOBIG beyond). */
#define KEEL_CACHE_VALUE_MAX (1u << 20)

/* A cache on redis (NULL: the in-process LRU sized by CACHE_MAX_ENTRIES
 * and CACHE_MAX_BYTES), with CACHE_DEFAULT_TTL for a TTL of 0
 * and its metrics on m (may be NULL). Free after the workers stopped. */
keel_cache *keel_cache_new(const keel_config *cfg, struct keel_redis *redis, keel_metrics *m);
void keel_cache_free(keel_cache *c);

/* 1 when the values live in Redis, 0 for the in-process store. */
int keel_cache_is_shared(const keel_cache *c);

/* A read's answer: status 0 with value (a hit; borrowed for the call:
 * json_incref to keep it), status 0 with NULL (a miss), or a negative
 * error with NULL (KEEL_ETIMEDOUT, KEEL_ECLOSED, KEEL_EPROTO: not JSON). */
typedef void (*keel_cache_get_cb)(void *arg, int status, struct json_t *value);
/* A write's or a delete's answer: 0, KEEL_ENOTFOUND (delete: no such key)
 * or a negative error. */
typedef void (*keel_cache_done_cb)(void *arg, int status);

/* All three run on worker w's loop (w's Redis connection; w may be NULL
 * only without Redis). They return 0, and cb runs exactly once — later on
 * w's loop with Redis, before the call returns with the in-process store —
 * or a negative error and cb is not called: KEEL_EINVAL (bad namespace or
 * key), KEEL_ETOOBIG (value), KEEL_EUNAVAIL (Redis breaker open or
 * connection down). */
int keel_cache_get(keel_cache *c, keel_worker *w, const char *ns, const char *key,
                   keel_cache_get_cb cb, void *arg);
/* Stores value (serialized now: the caller keeps it) for ttl_ms (0: the
 * default TTL). cb may be NULL. */
int keel_cache_set(keel_cache *c, keel_worker *w, const char *ns, const char *key,
                   const struct json_t *value, uint64_t ttl_ms, keel_cache_done_cb cb,
                   void *arg);
/* Deletes the key (invalidation on write). A load of the same key running
 * in this process (keel_cache_fetch) will not store its result: it may
 * have read the source before the write. cb may be NULL. */
int keel_cache_del(keel_cache *c, keel_worker *w, const char *ns, const char *key,
                   keel_cache_done_cb cb, void *arg);

/* ---------------------------------------------------------------- cache-aside */

/* One load in progress for a key, shared by every request waiting for it. */
typedef struct keel_cache_flight keel_cache_flight;

/* Loads the value from the source for request r (e.g. a keel_db_run) and
 * then calls keel_cache_loaded(f, ...) exactly once, on r's loop. */
typedef void (*keel_cache_load_fn)(keel_req *r, void *arg, keel_cache_flight *f);

/* The answer of keel_cache_fetch, on r's loop: status 0 with value
 * (borrowed for the call, read-only: json_incref to keep it), the
 * loader's own negative error (e.g. a "not found" of the source: errors
 * are never cached), or KEEL_ECANCELED when r ended while waiting
 * (deadline, disconnect): then only free arg. */
typedef void (*keel_cache_fetch_cb)(keel_req *r, void *arg, int status, struct json_t *value);

/* Cache-aside with single-flight: the value of ns/key from the cache, or
 * on a miss from load(r, arg, f), which is then stored for ttl_ms (0: the
 * default). Concurrent fetches of one key in this process share one
 * cache read and one load, whichever worker they run on: exactly one
 * loader runs per key at a time, and every waiter gets its result. When
 * the loading request ends first, the next waiter's loader takes over.
 * r is held (keel_req_hold) until done has run, so a request that ends
 * while waiting is safe. Returns 0 (done runs exactly once; it may run
 * before the call returns, so check keel_req_is_finished(r) before
 * returning KEEL_SUSPEND), or KEEL_EINVAL (nothing is called). */
int keel_cache_fetch(keel_cache *c, keel_req *r, const char *ns, const char *key,
                     uint64_t ttl_ms, keel_cache_load_fn load, keel_cache_fetch_cb done,
                     void *arg);

/* The loader's result: status 0 with value (borrowed: copied or
 * referenced as needed), or a negative error (passed to every waiter, not
 * cached; KEEL_ECANCELED hands the load to the next waiter). */
void keel_cache_loaded(keel_cache_flight *f, int status, const struct json_t *value);

#ifdef __cplusplus
}
#endif
#endif
