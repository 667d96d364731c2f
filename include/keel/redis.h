/* keel/redis.h — a Redis client for keel's workers: hiredis async, one
 * connection per worker on the worker's own loop (never a blocking call
 * on a loop), reconnection with exponential backoff and jitter, a command
 * timeout, and a circuit breaker ("redis") in front of every command.
 *
 * REDIS_URL is redis://[:password@]host:port[/db]. The host is resolved
 * once, at keel_redis_new on the main thread, so no loop ever waits on DNS.
 *
 * Metrics: redis_commands_total{command}, redis_command_duration_seconds
 * {command}, redis_errors_total{kind} (kind: timeout, connection, reply,
 * unavailable). Health: a non-critical "redis" check (PING latency over a
 * short-lived connection of the health thread: degraded, not unhealthy).
 */
#ifndef KEEL_REDIS_H
#define KEEL_REDIS_H

#include <stdarg.h>

#include "health.h"
#include "metrics.h"
#include "resil.h"
#include "server.h"
#include "trace.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_redis keel_redis;
struct redisReply;

/* Redis's options (keel/config.h): REDIS_*. keel_config_get(cfg,
 * &keel_redis_config). */
typedef struct keel_redis_options {
    char *redis_url;        /* REDIS_URL ("" = in-process fallbacks) */
    uint64_t redis_timeout_ms;  /* REDIS_COMMAND_TIMEOUT */
    uint64_t redis_connect_timeout_ms; /* REDIS_CONNECT_TIMEOUT */
    uint64_t redis_reconnect_max_ms;   /* REDIS_RECONNECT_MAX: backoff cap */
    char *redis_key_prefix; /* REDIS_KEY_PREFIX */
} keel_redis_options;

extern const keel_config_module keel_redis_config;

/* A client for REDIS_URL (keel_redis_options; must be set) on every worker of s:
 * registers worker hooks (connect on start, close on stop), metrics on m
 * and a health check on h (both may be NULL), and its breaker in br (may
 * be NULL: a standalone breaker). Call before keel_server_start; free
 * after the server's workers have stopped. 0, or KEEL_ECONFIG (bad URL,
 * unresolvable host) with a line on stderr. */
int keel_redis_new(keel_redis **out, keel_server *s, const keel_config *cfg,
                   keel_metrics *m, keel_health *h, keel_breakers *br);
void keel_redis_free(keel_redis *r);

/* status 0 with the reply (which may be an error reply,
 * REDIS_REPLY_ERROR: Redis answered), or a negative error: KEEL_ETIMEDOUT
 * (no answer within REDIS_COMMAND_TIMEOUT), KEEL_ECLOSED (the connection
 * was lost or the worker stopped). The reply is valid during the call. */
typedef void (*keel_redis_cb)(void *arg, int status, struct redisReply *reply);

/* Sends a command on worker w's connection (call on w's loop). cb runs
 * exactly once, later, on that loop. Returns 0, or KEEL_EUNAVAIL when the
 * breaker is open or the connection is down (cb is not called). */
int keel_redis_command(keel_redis *r, keel_worker *w, keel_redis_cb cb, void *arg,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
int keel_redis_commandargv(keel_redis *r, keel_worker *w, keel_redis_cb cb, void *arg,
                           int argc, const char **argv, const size_t *argvlen);

/* A Lua script, registered before the server starts (the text must
 * outlive r). keel_redis_eval runs it with EVALSHA and, when Redis
 * answers NOSCRIPT (a flushed or restarted server), once more with EVAL. */
typedef struct keel_redis_script keel_redis_script;
keel_redis_script *keel_redis_script_new(keel_redis *r, const char *lua);
int keel_redis_eval(keel_redis *r, keel_worker *w, keel_redis_script *s, int nkeys,
                    int argc, const char **argv, const size_t *argvlen, keel_redis_cb cb,
                    void *arg);

/* A client span for a command sent for the request whose code runs now
 * (keel_trace_current), named and attributed as keel_redis_command's own;
 * for a caller that sends one command for several requests later (the
 * rate-limit store batches a loop iteration's checks), each request's
 * span. Not ok (keel_span_ok) when that request is not traced. Finish
 * it with keel_span_finish. Loop thread. */
keel_span_ref keel_redis_span_begin(keel_redis *r, const char *command, size_t len);

/* The key prefix (REDIS_KEY_PREFIX). */
const char *keel_redis_prefix(const keel_redis *r);
keel_breaker *keel_redis_breaker(keel_redis *r);

/* {"url": redacted, "breaker": ..., "workers": [{"worker":0,"state":
 * "ready","reconnects":N,"pending":N}, ...]}; new ref. Any thread. */
struct json_t;
struct json_t *keel_redis_status_json(keel_redis *r);

/* Blocking: a short-lived connection (connect timeout, AUTH, SELECT) for
 * threads that may block — health checks, CLI, tests. Never on a loop.
 * NULL on failure with a reason in err. Free with redisFree. */
struct redisContext;
struct redisContext *keel_redis_connect_blocking(const keel_redis *r, char *err, size_t cap);

/* The rate-limit store on Redis (the keel/rl_store.h contract of the
 * limiter in keel/ratelimit.h): keel_gcra as one atomic Lua script
 * (EVALSHA, EVAL on NOSCRIPT), keys under the prefix, so limits hold
 * across every instance sharing the Redis. A check Redis cannot answer
 * (breaker open, connection down, timeout) is a store error:
 * RATE_LIMIT_FAIL_OPEN decides. Register before the server starts. */
#include "rl_store.h"
keel_rl_store keel_rl_redis_store(keel_redis *r);

#ifdef __cplusplus
}
#endif
#endif
