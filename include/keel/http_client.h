/* keel/http_client.h — the outbound HTTP client: libcurl's multi socket
 * API driven by the calling worker's own libuv loop (never a blocking
 * call on a loop), one connection cache per worker, connect and total
 * timeouts, a cap on the response body, retries with backoff on a loop
 * timer (keel_retry_start), a circuit breaker per target, W3C trace
 * context for calls made for a request, and metrics.
 *
 *     keel_http_header h[] = {{KEEL_STR("Content-Type"), KEEL_STR("application/json")}};
 *     keel_http_call call = {.method = "POST", .url = "http://billing:8080/charges",
 *                            .headers = h, .nheaders = 1, .body = json, .body_len = n,
 *                            .target = "billing"};
 *     int rc = keel_http_request_for(client, r, &call, charged, job);
 *     if (rc < 0) {                // KEEL_EUNAVAIL: billing's breaker is open
 *         keel_respond_problem(r, 503, "billing is unavailable");
 *         return KEEL_DONE;
 *     }
 *     return KEEL_SUSPEND;
 *
 *     static void charged(keel_req *r, void *arg, int status, const keel_http_response *res)
 *     {
 *         if (status == KEEL_ECANCELED)  // r already has its answer (deadline, client gone)
 *             return;
 *         if (status < 0)               // no answer: res->error says why
 *             keel_respond_problem(r, 502, res->error);
 *         else                          // an answer, any status: res->status, res->body
 *             keel_respond(r, 201, "application/json", res->body, res->body_len);
 *     }
 *
 * Threading. A client is shared by every worker of a server; each call
 * runs on one worker's loop, and keel_http_request / keel_http_request_for
 * must be called on that loop's thread (a handler, a timer or a
 * keel_worker_post callback of that worker). The callback runs later on
 * the same loop, never from inside the call that started it.
 *
 * Failures. A call that cannot start (bad arguments or URL, the target's
 * breaker open, the worker stopping) returns a negative error and the
 * callback is never called. A call that starts gets its callback exactly
 * once: status 0 when the target answered — whatever the HTTP status:
 * res->status, 4xx and 5xx included — or a negative error with res->error
 * saying why in words:
 *   KEEL_ETIMEDOUT   no connection within the connect timeout, or no
 *                    whole answer within the total timeout;
 *   -ECONNREFUSED    nothing listens there;
 *   KEEL_ENOTFOUND   the host does not resolve;
 *   KEEL_ECLOSED     the connection was lost (reset, closed early);
 *   KEEL_ETOOBIG     the body is over max_body (the transfer is aborted);
 *   KEEL_EUNAVAIL    a retry found the breaker open;
 *   KEEL_ECANCELED   the worker stopped first, or (keel_http_request_for)
 *                    the request ended first — late answers are dropped;
 *   KEEL_EPROTO, KEEL_EIO   a TLS or protocol failure, anything else.
 *
 * Retries. A failed attempt is tried again (up to max_attempts, with full
 * jitter backoff on a loop timer) when the method is idempotent (GET,
 * HEAD, PUT, DELETE, OPTIONS, TRACE) or the call sets
 * KEEL_HTTP_RETRY_UNSAFE, and the attempt failed with a timeout, a lost or
 * refused connection, or an answer of 429, 502, 503 or 504. After the last
 * attempt the callback gets what that attempt got (an answer of 503 is
 * status 0 with res->status 503).
 *
 * Breakers. Each target has a breaker (named "http:<target>", in the
 * registry given to keel_http_client_new, BREAKER_* options). Every
 * attempt is a call of the breaker; a lost connection, a timeout, a
 * refusal or a 5xx answer counts as a failure (a 4xx answer, a body over
 * the cap do not). While it is open, calls fail at once with KEEL_EUNAVAIL
 * without touching the network.
 *
 * Metrics (per attempt): http_client_requests_total{target,status} where
 * status is the HTTP status ("200", "503") or what went wrong ("timeout",
 * "refused", "error", "too_big", "unavailable", "canceled"), and
 * http_client_request_duration_seconds{target}.
 *
 * Redirects are not followed. DNS is resolved by libcurl's threaded
 * resolver, off the loop.
 */
#ifndef KEEL_HTTP_CLIENT_H
#define KEEL_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "http.h"
#include "metrics.h"
#include "resil.h"
#include "server.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_http_client keel_http_client;

/* The client's options (keel/config.h): HTTP_CLIENT_*. An app that
 * creates a client lists keel_http_client_config among its
 * keel_app.config_modules; keel_config_get(cfg, &keel_http_client_config). */
typedef struct keel_http_client_options {
    uint64_t timeout_ms;         /* HTTP_CLIENT_TIMEOUT: one attempt, start to last byte */
    uint64_t connect_timeout_ms; /* HTTP_CLIENT_CONNECT_TIMEOUT */
    uint64_t max_body;           /* HTTP_CLIENT_MAX_BODY: bytes of a response body */
    unsigned max_attempts;       /* HTTP_CLIENT_MAX_ATTEMPTS: of a retryable call */
} keel_http_client_options;

extern const keel_config_module keel_http_client_config;

enum {
    /* Retry this call even though its method is not idempotent (POST,
     * PATCH): the caller knows the target dedupes (an idempotency key). */
    KEEL_HTTP_RETRY_UNSAFE = 1u << 0,
    /* The body is not copied: the caller keeps it, unchanged, until the
     * callback has run (the OTLP exporter's batch buffers). */
    KEEL_HTTP_BODY_BORROWED = 1u << 1,
};

/* One outbound call. Everything is copied by the call that takes it (the
 * body too, unless KEEL_HTTP_BODY_BORROWED): the
 * struct and what it points to may go once that call returns. Zero is
 * the default of every field. */
typedef struct keel_http_call {
    const char *method;        /* "GET" (NULL), "POST", "PUT", "DELETE", ... */
    const char *url;           /* http:// or https:// (required) */
    const keel_http_header *headers; /* sent as given (Content-Type, auth...) */
    size_t nheaders;
    const void *body;          /* request body; NULL/0: none */
    size_t body_len;
    uint64_t timeout_ms;       /* per attempt; 0: HTTP_CLIENT_TIMEOUT */
    uint64_t connect_timeout_ms; /* 0: HTTP_CLIENT_CONNECT_TIMEOUT */
    uint64_t max_body;         /* response body cap; 0: HTTP_CLIENT_MAX_BODY */
    /* Retries: max_attempts 0 is HTTP_CLIENT_MAX_ATTEMPTS (1: never
     * retry); base_ms 0 is 100, max_delay_ms 0 is 2000, deadline_ms 0 is
     * none (see keel_retry_opts). */
    keel_retry_opts retry;
    /* The name of the dependency for metrics labels and the breaker
     * (a bounded set: "billing", "webhooks"); NULL: the URL's host. */
    const char *target;
    unsigned flags;            /* KEEL_HTTP_* */
} keel_http_call;

/* What the target answered. Owned by the client and valid only during
 * the callback: copy what you keep. */
typedef struct keel_http_response {
    int status;                /* the HTTP status; 0 when there was no answer */
    const keel_http_header *headers; /* as received, in order (views, not NUL-terminated) */
    size_t nheaders;
    const char *body;          /* NUL-terminated (the NUL is not counted) */
    size_t body_len;
    unsigned attempts;         /* attempts made, >= 1 */
    const char *error;         /* why, when status < 0; "" otherwise */
} keel_http_response;

/* The first header of res with that name (case-insensitive); a NULL view
 * when there is none. */
keel_str keel_http_response_header(const keel_http_response *res, const char *name);

/* A call's completion: status 0 (an answer, res->status) or a negative
 * error (see the top of this header); res is never NULL. */
typedef void (*keel_http_cb)(void *arg, int status, const keel_http_response *res);
/* The same for keel_http_request_for, with the request: status
 * KEEL_ECANCELED when r ended first (then responding is a no-op and only
 * the caller's own memory is to be freed). */
typedef void (*keel_http_req_cb)(keel_req *r, void *arg, int status,
                                 const keel_http_response *res);

/* A client for every worker of s, with the options in cfg
 * (keel_http_client_options and keel_breaker_config, read now), metrics
 * in m and breakers in br (both may be NULL: no metrics, standalone
 * breakers owned by the client). It registers worker hooks: a worker's
 * curl multi handle is made on its first call and closed when the worker
 * stops, and calls still running then end with KEEL_ECANCELED. Call
 * before keel_server_start; free after keel_server_wait. 0, or KEEL_EIO
 * when libcurl cannot be initialised. */
int keel_http_client_new(keel_http_client **out, keel_server *s, const keel_config *cfg,
                         keel_metrics *m, keel_breakers *br);
/* Frees c (NULL: no-op). The server's workers must have stopped. */
void keel_http_client_free(keel_http_client *c);

/* Targets label metrics and name breakers, so their number is bounded:
 * past KEEL_HTTP_CLIENT_MAX_TARGETS distinct names, further targets share
 * the target "other" (its breaker and series). */
#define KEEL_HTTP_CLIENT_MAX_TARGETS 64
/* Declares a target before any call (in setup): its breaker
 * ("http:<name>") and its series — http_client_requests_total{target,
 * status} for every failure status and http_client_request_duration_seconds
 * {target} — exist at 0 from the start, so alerts over them see a series.
 * 0, or KEEL_EINVAL (empty name). */
int keel_http_client_declare_target(keel_http_client *c, const char *name);

/* Starts a call on worker w's loop (call from that loop's thread). 0, and
 * cb runs exactly once later on that loop; or, with cb never called,
 * KEEL_EINVAL (no URL, not http(s), a header with CR/LF, unknown worker),
 * KEEL_EUNAVAIL (the target's breaker is open) or KEEL_ECLOSED (w is
 * stopping). */
int keel_http_request(keel_http_client *c, keel_worker *w, const keel_http_call *call,
                      keel_http_cb cb, void *arg);

/* The same for request r, on r's worker: r is held (keel_req_hold) until
 * cb has run, so cb may always use r; when r has ended before the answer
 * (handler deadline, client gone) cb gets KEEL_ECANCELED and the answer is
 * dropped. When r is traced (keel/trace.h) the call is a client span,
 * child of r's current span, and unless call has its own, `traceparent`
 * names that span as the callee's parent (flags 01) and r's `tracestate`
 * goes along; when r is not sampled, `traceparent` carries r's own ids
 * with flags 00. Returns
 * as keel_http_request (then r is not held and cb is never called). */
int keel_http_request_for(keel_http_client *c, keel_req *r, const keel_http_call *call,
                          keel_http_req_cb cb, void *arg);

#ifdef __cplusplus
}
#endif
#endif
