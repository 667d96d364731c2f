/* keel/health.h — liveness, readiness and a registry of named checks.
 *
 * Routes: GET /health and /health/live (liveness: no dependencies),
 * /health/ready (503 while starting or draining, or when a critical check
 * fails), /health/detailed (every check with its status, latency, detail
 * and data; overall healthy / degraded / unhealthy, 503 when unhealthy),
 * and GET /ping -> "pong".
 *
 * A check answers pass, warn or fail. Overall: any critical check failing
 * -> unhealthy; else any check failing or warning -> degraded; else
 * healthy. A warning never makes the service unhealthy nor not ready.
 *
 * Checks run on the work pool (they may block: a database round trip),
 * all at once, each bounded by its timeout; checks flagged
 * KEEL_HEALTH_INLINE (cheap reads of counters that never block) run on the
 * loop once the others are done, so they see what the others did (a
 * dependency's check closing its breaker, say). Results are cached for
 * HEALTH_CACHE_TTL: probes within it are answered from the cache, and a
 * probe that finds it stale while a refresh runs gets the stale answer —
 * a storm of probes runs the checks about once per TTL.
 *
 * Any module registers its own checks (keel_health_add): the WebSocket
 * transport its connection count, the alert engine its active alerts.
 */
#ifndef KEEL_HEALTH_H
#define KEEL_HEALTH_H

#include "config.h"
#include "server.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_health keel_health;

/* What a check returns. Any other non-zero value counts as FAIL. */
enum {
    KEEL_HEALTH_PASS = 0,
    KEEL_HEALTH_FAIL = 1,
    KEEL_HEALTH_WARN = 2 /* degraded, whatever the check's criticality */
};

/* A check: KEEL_HEALTH_PASS / _WARN / _FAIL; may write a short reason
 * into detail (NUL-terminated, at most cap bytes). Runs on a pool thread
 * (or the loop, KEEL_HEALTH_INLINE). */
typedef int (*keel_health_check_fn)(void *arg, char *detail, size_t cap);
/* The same with figures: *data may be set to a JSON object (a new
 * reference, taken over), shown as the check's "data". */
struct json_t;
typedef int (*keel_health_data_fn)(void *arg, char *detail, size_t cap,
                                   struct json_t **data);

enum {
    KEEL_HEALTH_INLINE = 1u << 0 /* never blocks: runs on the loop, after the others */
};

typedef struct keel_health_check {
    const char *name;        /* copied; shown as the key in "checks" */
    int critical;            /* failing makes the service unhealthy and not ready */
    uint32_t timeout_ms;     /* 0 = 2000 (pool checks only) */
    keel_health_check_fn fn; /* one of fn / data_fn */
    keel_health_data_fn data_fn;
    void *arg;
    unsigned flags;          /* KEEL_HEALTH_INLINE */
} keel_health_check;

/* The health options (keel/config.h): HEALTH_* and MEMORY_LIMIT.
 * keel_config_get(cfg, &keel_health_config). */
typedef struct keel_health_options {
    uint64_t cache_ttl_ms;     /* HEALTH_CACHE_TTL (0 = every probe runs the checks) */
    char *disk_path;           /* HEALTH_DISK_PATH ("" = the data directory) */
    uint64_t disk_min_free;    /* HEALTH_DISK_MIN_FREE, bytes (0 = not checked) */
    uint64_t memory_limit;     /* MEMORY_LIMIT, bytes (0 = the cgroup's limit, if any) */
    unsigned memory_warn_pct;  /* HEALTH_MEMORY_WARN */
    unsigned memory_fail_pct;  /* HEALTH_MEMORY_FAIL */
    unsigned pool_warn_pct;    /* HEALTH_POOL_SATURATION */
} keel_health_options;

extern const keel_config_module keel_health_config;

keel_health *keel_health_new(void);
void keel_health_free(keel_health *h);

/* Runs the pool checks on a pool of their own ("health", 2 threads) of
 * s, so probes never wait behind the requests' blocking work (a
 * saturated work pool is reported by the work_pool check, not by every
 * other check timing out). Without it they run on the default pool.
 * keel_health_register_system calls it. Before the server starts. */
void keel_health_use_pool(keel_health *h, keel_server *s);

/* How long results are reused (HEALTH_CACHE_TTL); before the server starts. */
void keel_health_set_cache_ttl(keel_health *h, uint64_t ms);

/* Registers a check before the server starts (at most 32): 0, or
 * KEEL_EINVAL (no name or function), KEEL_EBUSY (full). */
int keel_health_add(keel_health *h, const keel_health_check *c);

/* keel_health_add of {name, critical, timeout_ms, fn, arg}. */
void keel_health_register(keel_health *h, const char *name, int critical,
                          uint32_t timeout_ms, keel_health_check_fn fn, void *arg);

/* The system checks, with o's thresholds: "disk" (free space of data_dir
 * — o->disk_path when set — warn below disk_min_free), "memory" (RSS
 * against memory_limit: warn above memory_warn_pct, fail (critical) above
 * memory_fail_pct; passes with no limit known) and "work_pool" (warn when
 * a pool's queue is more than pool_warn_pct full; inline). */
void keel_health_register_system(keel_health *h, keel_server *s,
                                 const keel_health_options *o, const char *data_dir);

/* How many times the checks have run (for tests and the cache's proof). */
uint64_t keel_health_runs(const keel_health *h);

/* The health routes, bound to h; add them with keel_server_add_routes. */
size_t keel_health_routes(keel_health *h, const keel_route **out);

/* Pure verdicts of the system checks (exposed for tests):
 * disk: WARN when free < min_free (min_free 0: PASS);
 * memory: PASS without a limit, WARN above warn_pct % of limit, FAIL
 * above fail_pct %. */
int keel_health_disk_verdict(uint64_t free_bytes, uint64_t min_free);
int keel_health_memory_verdict(uint64_t rss, uint64_t limit, unsigned warn_pct,
                               unsigned fail_pct);
/* The process's memory limit: limit when non-zero, else the cgroup's
 * (v2 memory.max, v1 memory.limit_in_bytes), else 0 (none). */
uint64_t keel_health_memory_limit(uint64_t limit);
/* Resident memory of the process, bytes (0 when unknown). */
uint64_t keel_process_rss(void);

#ifdef __cplusplus
}
#endif
#endif
