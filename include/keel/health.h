/* keel/health.h — liveness, readiness and a registry of named checks.
 *
 * Routes: GET /health and /health/live (liveness: no dependencies),
 * /health/ready (503 while starting or draining, or when a critical check
 * fails), /health/detailed (every check with its latency; overall
 * healthy / degraded / unhealthy), and GET /ping -> "pong".
 *
 * Checks run on the work pool (they may block: a database round trip),
 * all at once, each bounded by its timeout.
 */
#ifndef KEEL_HEALTH_H
#define KEEL_HEALTH_H

#include "server.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_health keel_health;

/* A check: 0 when healthy, non-zero when not; may write a short reason
 * into detail (NUL-terminated, at most cap bytes). Runs on a pool thread. */
typedef int (*keel_health_check_fn)(void *arg, char *detail, size_t cap);

keel_health *keel_health_new(void);
void keel_health_free(keel_health *h);

/* Registers a check before the server starts. A failing critical check
 * makes the service unhealthy and not ready; a non-critical one makes it
 * degraded. timeout_ms 0 = 2000. */
void keel_health_register(keel_health *h, const char *name, int critical,
                          uint32_t timeout_ms, keel_health_check_fn fn, void *arg);

/* The health routes, bound to h; add them with keel_server_add_routes. */
size_t keel_health_routes(keel_health *h, const keel_route **out);

#ifdef __cplusplus
}
#endif
#endif
