/* keel/resil.h — resilience: circuit breakers (with a registry shown in
 * /health/detailed and circuit_breaker_state{name}) and retry with
 * exponential backoff and full jitter.
 *
 * Breaker: CLOSED lets every call through and counts failures; when
 * `failures` of them fall within `window_ms` it opens. OPEN refuses every
 * call (no network, no wait) until `recovery_ms` have passed, then
 * HALF_OPEN lets `probes` calls through: if they all succeed it closes, a
 * single failure opens it again. Only what says the dependency is sick
 * counts as a failure (the caller decides: for Redis a timeout, a lost or
 * refused connection — not an error reply such as WRONGTYPE).
 *
 * Each call the breaker lets through gets a ticket and must be reported
 * exactly once with keel_breaker_record; a report from before the last
 * state change (a slow call that started while CLOSED, say) is ignored,
 * so stale results never close or re-open the breaker.
 *
 * Thread-safe: a breaker is shared by every worker (one lock, held for a
 * few instructions). Time is passed in (ms, monotonic) so tests drive it.
 */
#ifndef KEEL_RESIL_H
#define KEEL_RESIL_H

#include <stdint.h>

#include "config.h"
#include "health.h"
#include "metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum keel_breaker_state {
    KEEL_BREAKER_CLOSED = 0,
    KEEL_BREAKER_OPEN = 1,
    KEEL_BREAKER_HALF_OPEN = 2
} keel_breaker_state;

typedef struct keel_breaker_opts {
    uint64_t failures;    /* failures within window_ms that open it (>= 1) */
    uint64_t window_ms;
    uint64_t recovery_ms; /* OPEN -> HALF_OPEN */
    uint64_t probes;      /* calls let through while HALF_OPEN (>= 1) */
} keel_breaker_opts;

/* BREAKER_* (keel/config.h): the keel_breaker_opts of keel's own breakers;
 * keel_config_get(cfg, &keel_breaker_config). */
extern const keel_config_module keel_breaker_config;

typedef struct keel_breaker keel_breaker;
typedef struct keel_breakers keel_breakers;

/* A registry of breakers. With m, exports circuit_breaker_state{name}
 * (0 closed, 1 open, 2 half-open) and circuit_breaker_transitions_total
 * {name,to}. keel_breakers_free frees every breaker in it. */
keel_breakers *keel_breakers_new(keel_metrics *m);
void keel_breakers_free(keel_breakers *reg);

/* A breaker named `name` (copied) in reg (reg may be NULL: a standalone
 * breaker, freed with keel_breaker_free). */
keel_breaker *keel_breaker_new(keel_breakers *reg, const char *name,
                               const keel_breaker_opts *opts);
/* Frees a standalone breaker; one in a registry is freed with it. */
void keel_breaker_free(keel_breaker *b);

/* May a call go ahead now? A ticket (> 0) to pass to keel_breaker_record,
 * or 0 when the breaker refuses (OPEN, or HALF_OPEN with every probe out). */
uint64_t keel_breaker_allow(keel_breaker *b, uint64_t now_ms);
/* The outcome of a call let through: ok 1 (success) or 0 (a failure that
 * counts). */
void keel_breaker_record(keel_breaker *b, uint64_t ticket, int ok, uint64_t now_ms);
/* The state now (an OPEN breaker whose recovery time has passed reports
 * HALF_OPEN). */
keel_breaker_state keel_breaker_get_state(keel_breaker *b, uint64_t now_ms);
const char *keel_breaker_state_name(keel_breaker_state s);
/* The dependency answered a health probe of its own (a PING on a fresh
 * connection, say): a breaker that is HALF_OPEN — OPEN past its recovery
 * time — takes the probe as its half-open calls, succeeding, and closes.
 * An OPEN breaker within its recovery time, or a CLOSED one, is left as
 * is. Without it, a breaker opened by an outage stays open while no
 * traffic comes to probe it, and the service looks degraded for good. */
void keel_breaker_probe_ok(keel_breaker *b, uint64_t now_ms);
const char *keel_breaker_name(const keel_breaker *b);

/* {"name": {"state": "closed", "failures": N, "opened": N}, ...}; new ref. */
struct json_t;
struct json_t *keel_breakers_json(keel_breakers *reg);
/* Registers a non-critical, inline health check "circuit_breakers":
 * degraded (warn) while any breaker of reg is not closed, naming them,
 * with keel_breakers_json as its data. */
void keel_breakers_register_health(keel_breakers *reg, keel_health *h);

/* ---------------------------------------------------------------- retry */

typedef struct keel_retry_opts {
    unsigned max_attempts;  /* including the first; >= 1 */
    uint64_t base_ms;       /* first backoff cap */
    uint64_t max_delay_ms;  /* cap of any one backoff */
    uint64_t deadline_ms;   /* overall budget from the first attempt; 0 = none */
} keel_retry_opts;

/* Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"):
 * a uniform delay in [0, min(max_delay, base * 2^(attempt-1))], attempt
 * counting from 1 for the wait after the first failure. `rnd` is a
 * uniform 64-bit random value (passed in for tests). */
uint64_t keel_retry_backoff_ms(const keel_retry_opts *o, unsigned attempt, uint64_t rnd);

/* A retried operation on a loop. `op` starts attempt n (from 1) and must
 * call keel_retry_done(rt, status) once, on the same loop; a failure is
 * retried when `retryable` (NULL: every negative status) says so, attempts
 * remain, and the next attempt would start before the deadline. `done`
 * runs once with the last status. The retry state frees itself after
 * done. Returns 0, or KEEL_EINVAL (nothing is called). */
typedef struct keel_retry keel_retry;
struct uv_loop_s;
int keel_retry_start(struct uv_loop_s *loop, const keel_retry_opts *o,
                     void (*op)(keel_retry *rt, unsigned attempt, void *arg),
                     int (*retryable)(int status, void *arg),
                     void (*done)(int status, unsigned attempts, void *arg), void *arg);
void keel_retry_done(keel_retry *rt, int status);
/* Ends rt early (a client shutting down): when it is waiting for its next
 * attempt (or its first), done runs now with `status`; when an attempt is
 * running, that attempt's keel_retry_done is the last (no retry). Call at
 * most once, before done has run. */
void keel_retry_cancel(keel_retry *rt, int status);

#ifdef __cplusplus
}
#endif
#endif
