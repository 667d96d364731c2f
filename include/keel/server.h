/* keel/server.h — the HTTP server: workers, routes, middleware, requests
 * and responses, the work pool.
 *
 * A server runs N worker threads, each with its own libuv loop and its own
 * SO_REUSEPORT listener. A request lives on the worker that accepted it:
 * middleware and handlers run on that loop and must never block it. Slow
 * work goes to the work pool with keel_req_submit(); its completion runs
 * back on the request's own loop.
 */
#ifndef KEEL_SERVER_H
#define KEEL_SERVER_H

#include <stdio.h>

#include "arena.h"
#include "common.h"
#include "config.h"
#include "http.h"
#include "net.h"
#include "router.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_server keel_server;
typedef struct keel_req keel_req;
typedef struct keel_worker keel_worker;

/* A route handler: produce a response (KEEL_DONE) or suspend
 * (KEEL_SUSPEND) and respond later from the loop. */
typedef keel_flow (*keel_handler_fn)(keel_req *req);

/* A route, declared once: the router, the metrics labels, `keel routes`,
 * the RBAC check, the validator and the OpenAPI document all read it. */
typedef struct keel_route {
    const char *name;       /* operation name, e.g. "users.get" */
    const char *method;     /* "GET", "POST", ... */
    const char *path;       /* pattern: "/users/:id" or a trailing wildcard "*rest" */
    keel_handler_fn handler;
    const char *summary;    /* one line for docs */
    const char *auth;       /* NULL/"none", "user", "apikey", "any" */
    const char *permission; /* e.g. "users:read"; NULL for none */
    const char *request_schema;  /* JSON Schema text; NULL for none */
    const char *response_schema; /* JSON Schema text; NULL for none */
    /* JSON Schema text (an object schema) for the query and the path
     * parameters; values are strings coerced to the declared type
     * (keel_req_query_json, keel_req_params_json). NULL for none. */
    const char *query_schema;
    const char *params_schema;
    const char *rate_limit;      /* tier name; NULL for the default */
    uint32_t timeout_ms;    /* handler deadline; 0 = HANDLER_TIMEOUT */
    unsigned flags;         /* KEEL_ROUTE_* */
    void *data;             /* the handler's own pointer */
    /* A WebSocket route (method "GET"): its callbacks (keel/ws.h). The
     * handler may then be NULL (it upgrades at once: keel_ws_accept(r,
     * NULL)) or a handler of the route's own that ends in keel_ws_accept
     * (after checks of its own; it may suspend first). */
    const struct keel_ws_handler *websocket;
} keel_route;

enum {
    KEEL_ROUTE_NO_LOG = 1u << 0,    /* no access-log line (health probes) */
    KEEL_ROUTE_INTERNAL = 1u << 1,  /* exempt from load shedding */
    KEEL_ROUTE_SECRET = 1u << 2,    /* response carries secrets */
    /* The body is not read before the chain runs: the handler receives it
     * in chunks as it arrives (keel_req_body_stream). BODY_LIMIT does not
     * apply; the handler's own max does. */
    KEEL_ROUTE_STREAM_BODY = 1u << 3
};

/* The route's `auth` when it asks for credentials; NULL for none (unset
 * or "none"). */
const char *keel_route_auth(const keel_route *rt);

/* A response about to be written, as seen by keel_middleware.on_response.
 * For a complete response (keel_respond and the helpers built on it) a
 * hook may replace body/len and content_type; the new body must stay valid
 * until the hook's caller returns (allocate it in keel_req_arena). For a
 * stream (keel_res_stream_begin) body is NULL, len 0 and `streaming` 1:
 * the body is not known, only headers can change. The status is read-only. */
typedef struct keel_response {
    int status;
    const char *content_type; /* NULL: none */
    const void *body;
    size_t len;
    int streaming;
} keel_response;

/* Middleware phases. Every middleware declares one; the chain runs in
 * phase order whatever is installed, and in the order added within a
 * phase. On the way in: EDGE (request id, trace context, client address,
 * shedding, CORS preflight) -> AUTHN (who is asking: JWT, API key) ->
 * LIMIT (rate limits, keyed by the authenticated subject when there is
 * one, else by client address) -> AUTHZ (what they may do: RBAC) ->
 * VALIDATE (body, query, path) -> APP (the application's own, the
 * default) -> the handler. RESPOND is for middleware that only works on
 * the way out (compression): it may not have on_request. on_response
 * hooks run in the reverse of the chain's order (RESPOND first, EDGE
 * last); on_complete likewise.
 *
 * A request the connection layer refuses (bad framing, a limit, a
 * timeout: keel_req_refused) gets its refusal status whatever a later
 * phase would have said: only EDGE on_request runs for it (so it still
 * gets a request id), responding from there is refused with KEEL_EALREADY
 * and KEEL_DONE counts as KEEL_NEXT; every on_response and on_complete
 * hook sees it (security headers, access log, metrics).
 *
 * Authentication runs before the limiter so that limits follow the user
 * or API key rather than the address (docs/architecture.md). */
typedef enum keel_phase {
    KEEL_PHASE_APP = 0, /* the default: after validation, before the handler */
    KEEL_PHASE_EDGE,
    KEEL_PHASE_AUTHN,
    KEEL_PHASE_LIMIT,
    KEEL_PHASE_AUTHZ,
    KEEL_PHASE_VALIDATE,
    KEEL_PHASE_RESPOND
} keel_phase;

/* The phase's name ("edge", "authn", ...). */
const char *keel_phase_name(keel_phase p);

/* Middleware: a table of function pointers.
 * on_request returns KEEL_NEXT to continue, KEEL_DONE after responding, or
 * KEEL_SUSPEND (then keel_req_resume() continues the chain later).
 * on_request may be NULL (a middleware that only observes completions).
 * on_response (optional) runs just before the head of every response is
 * written — whoever produced it (a handler, another middleware, 404/405,
 * a refusal from the connection layer) and whether or not this
 * middleware's on_request ran — in reverse chain order (see keel_phase).
 * It may add headers (keel_res_header, keel_res_has_header) and
 * transform the body (see keel_response); responding from it is refused
 * with KEEL_EALREADY. When no middleware sets it, keel does no work for it.
 * on_complete (optional) runs once the response has been handed to the
 * connection (or the client went away), with the final status.
 *
 * Route fields. `reads` names the keel_route fields the middleware
 * enforces ("auth", "permission", "request_schema", "response_schema",
 * "query_schema", "params_schema", "rate_limit"), NULL-terminated.
 * keel_server_check_routes refuses a route that sets a field no installed
 * middleware reads (a declaration nothing enforces), and asks each
 * middleware that reads a field of the route whether its values are
 * allowed (check_route: 0, or -1 with the reason in why[0..cap)). A
 * middleware that is switched off by configuration may still be
 * installed with on_request NULL so that its fields stay declared and
 * checked. */
typedef struct keel_middleware {
    const char *name;
    keel_phase phase;
    keel_flow (*on_request)(keel_req *req, void *data);
    void (*on_response)(keel_req *req, keel_response *res, void *data);
    void (*on_complete)(keel_req *req, void *data);
    void (*dispose)(void *data);
    void *data;
    const char *const *reads;
    int (*check_route)(const keel_route *rt, void *data, char *why, size_t cap);
    /* SIGHUP (keel_server_reload): take what may change at run time from
     * the new configuration (copy it: next goes away after the call), so
     * that requests from now on see it, while requests running on other
     * threads may still use the old values. Runs on the main thread.
     * 0, or a negative error: the middleware keeps its old settings and
     * the reason is logged. NULL: nothing to reload. */
    int (*reload)(void *data, const keel_config *next);
} keel_middleware;

/* ---------------------------------------------------------------- server */

/* A server for the given configuration (copied). Never NULL. */
keel_server *keel_server_new(const keel_config *cfg);

/* Adds routes (the array must outlive the server). Returns 0, or
 * KEEL_EEXISTS / KEEL_EINVAL naming the route on stderr. */
int keel_server_add_routes(keel_server *s, const keel_route *routes, size_t n);

/* Installs a middleware (copied) in its phase, after those of the same
 * phase added before it. Before keel_server_start. Returns 0, or
 * KEEL_EINVAL (logged, naming it) for an unknown phase or a RESPOND
 * middleware with on_request; it is then disposed of and not installed. */
int keel_server_use(keel_server *s, const keel_middleware *mw);

/* Whether an installed middleware enforces the route field: reads it and
 * has on_request (one installed switched off only declares it). */
int keel_server_enforces(const keel_server *s, const char *field);

/* Checks every route against the installed middleware (see
 * keel_middleware.reads): a field that nothing enforces, or a value its
 * middleware does not allow, is an error. Writes one line per bad route
 * to err (may be NULL) — "route users.get (GET /users/:id): auth = \"user\"
 * but no installed middleware enforces auth" — and returns the number of
 * bad routes (0 = all good). keel_server_start runs it too and refuses to
 * start (KEEL_EINVAL) when any route is bad. */
int keel_server_check_routes(keel_server *s, FILE *err);

/* Binds the listeners and starts the workers; returns at once.
 * 0, or a negative error (e.g. -EADDRINUSE) with a log line. */
int keel_server_start(keel_server *s);

/* Starts draining: readiness false, listeners closed, idle connections
 * closed, in-flight requests finish. Thread-safe; returns at once. */
void keel_server_drain(keel_server *s);

/* Waits until every worker has finished (after a drain) or grace_ms passed.
 * Returns 0 when all finished, KEEL_ETIMEDOUT otherwise. */
int keel_server_wait(keel_server *s, uint64_t grace_ms);

/* keel_server_start, then waits for SIGTERM/SIGINT, drains (up to
 * SHUTDOWN_GRACE) and returns the exit status. A second signal exits. */
int keel_server_run(keel_server *s);

void keel_server_free(keel_server *s);

/* Zero-downtime binary upgrade on one host (docs/deploy.md): call before
 * keel_server_start. The server then listens beside the process old_pid
 * on the same port (SO_REUSEPORT; the port-in-use check is skipped), and
 * once it serves it sends old_pid SIGTERM, so the old process drains and
 * exits while the kernel gives new connections to this one. */
void keel_server_take_over(keel_server *s, long old_pid);

/* What SIGHUP does (keel_server_run): fn loads the configuration anew and
 * calls keel_server_reload with it (keel_main sets this up: the env file
 * is read again). Without it SIGHUP is logged and ignored. */
void keel_server_on_hup(keel_server *s, void (*fn)(keel_server *s, void *arg), void *arg);

/* Applies what can change without a restart from next: every installed
 * middleware's reload (CORS, rate-limit tiers, ...), then LOG_LEVEL and
 * LOG_LEVELS (the "reload done" line is written before the level changes). Connections
 * stay open. Returns the number of middlewares that refused (each
 * logged); 0 = all applied. */
int keel_server_reload(keel_server *s, const keel_config *next);

/* The bound port (useful with PORT=0); 0 before start. */
unsigned keel_server_port(const keel_server *s);

const keel_config *keel_server_config(const keel_server *s);

/* Lifecycle, for readiness: starting, serving, draining. */
typedef enum keel_server_state {
    KEEL_STATE_STARTING = 0,
    KEEL_STATE_SERVING,
    KEEL_STATE_DRAINING
} keel_server_state;
keel_server_state keel_server_get_state(const keel_server *s);

/* Routes added so far, in the order added. */
size_t keel_server_routes(const keel_server *s, const keel_route *const **out);

/* Counters of one worker, summed over workers by keel_server_stats. */
typedef struct keel_server_stats {
    uint64_t connections_open;
    uint64_t connections_total;
    uint64_t requests_in_flight;
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t work_queued;      /* waiting in the work pool */
    uint64_t work_rejected;    /* refused: queue full */
    uint64_t loop_lag_ms;      /* largest recent event-loop lag */
    uint64_t requests_pooled;  /* idle request objects kept for reuse */
    uint64_t requests_total;   /* requests completed (served) */
} keel_server_stats;
void keel_server_stats_get(const keel_server *s, keel_server_stats *out);
/* The same for one worker (work_* are the default pool's). */
void keel_worker_stats_get(const keel_worker *w, keel_server_stats *out);
unsigned keel_server_workers(const keel_server *s);

/* ---------------------------------------------------------------- request */

const keel_http_request_head *keel_req_head(const keel_req *r);
keel_method keel_req_method(const keel_req *r);
keel_str keel_req_path(const keel_req *r);
keel_str keel_req_query(const keel_req *r);
/* The first header with that name (case-insensitive), or a NULL view. */
keel_str keel_req_header(const keel_req *r, const char *name);
/* A path parameter, decoded; NULL view when absent. */
keel_str keel_req_param(const keel_req *r, const char *name);
/* A query parameter, decoded into the arena; NULL view when absent. */
keel_str keel_req_query_param(keel_req *r, const char *name);
/* The whole request body (de-chunked). Empty when none. */
keel_str keel_req_body(const keel_req *r);
/* The matched route, or NULL (404/405 and built-in answers). */
const keel_route *keel_req_route(const keel_req *r);
/* The route template for labels: the pattern, or "unmatched". */
const char *keel_req_route_label(const keel_req *r);
keel_arena *keel_req_arena(keel_req *r);
keel_server *keel_req_server(const keel_req *r);
unsigned keel_req_worker_id(const keel_req *r);
/* The peer address as text ("127.0.0.1"): the other end of the TCP
 * connection, which may be a proxy. */
const char *keel_req_remote_addr(const keel_req *r);
/* The client's address: the peer's, or — when the peer is a TRUST_PROXY
 * proxy — the one its X-Forwarded-For / Forwarded chain names (rightmost
 * untrusted hop, keel/net.h). Text in the request's arena ("-" when
 * unknown); keel_req_client the same parsed (family 0 when unknown). */
const char *keel_req_client_addr(keel_req *r);
const keel_addr *keel_req_client(keel_req *r);
/* 1 when the client used HTTPS as a trusted proxy reports it
 * (X-Forwarded-Proto or Forwarded proto=), else 0. */
int keel_req_is_https(keel_req *r);
/* Start of the request, monotonic ns. */
uint64_t keel_req_start_ns(const keel_req *r);
/* Nanoseconds from the start to now; once the request is completed (in
 * on_complete hooks and after), to the first call made then, so every
 * on_complete hook sees one duration and the clock is read once. */
uint64_t keel_req_elapsed_ns(keel_req *r);

/* Per-request slots middleware can use to pass values along. */
void keel_req_set_id(keel_req *r, const char *request_id);
const char *keel_req_id(const keel_req *r);
void keel_req_set_trace(keel_req *r, const char *trace_id, const char *span_id);
const char *keel_req_trace_id(const keel_req *r);
const char *keel_req_span_id(const keel_req *r);
/* The tracing slot (keel/trace.h keeps the request's spans there): one
 * pointer, NULL until set, not freed by the request. */
void keel_req_set_obs(keel_req *r, void *ctx);
void *keel_req_obs(const keel_req *r);
/* The request whose middleware, handler or work completion is running on
 * the calling thread now (the innermost), or NULL: what a client with no
 * request parameter (Redis) reads to find the caller's trace. Its ids are
 * also the log context of the thread (keel_log_set_context). */
keel_req *keel_req_current(void);
/* A generic key/value store on the request (values in the arena). */
void keel_req_set_local(keel_req *r, const char *key, void *value);
void *keel_req_get_local(const keel_req *r, const char *key);

/* ---------------------------------------------------------------- response */

/* Sets the status (default 200). */
void keel_res_status(keel_req *r, int status);
/* Adds a response header (copied). Content-Length, Date, Connection and
 * Transfer-Encoding are keel's own and refused with KEEL_EINVAL. */
int keel_res_header(keel_req *r, const char *name, const char *value);
/* Replaces a header set earlier, or adds it. */
int keel_res_set_header(keel_req *r, const char *name, const char *value);
/* Whether a response header with that name (case-insensitive) has been
 * set so far: 1 or 0. Lets a middleware add a default only when the
 * handler did not set its own (e.g. Content-Security-Policy). */
int keel_res_has_header(const keel_req *r, const char *name);

/* A fixed set of default response headers (e.g. the security headers),
 * checked once when built and added to each response with one scan of
 * the headers set so far and one copy: the per-request work of
 * keel_res_has_header + keel_res_header for every member, without
 * validating or formatting the same lines again. Built at start-up and
 * owned by the caller; keel_res_header_set_free(NULL) is a no-op. */
typedef struct keel_res_header_set keel_res_header_set;
keel_res_header_set *keel_res_header_set_new(void);
void keel_res_header_set_free(keel_res_header_set *s);
/* Adds "name: value" (copied): 0, or KEEL_EINVAL for what keel_res_header
 * refuses, a name already in the set, or more than 32 members. */
int keel_res_header_set_add(keel_res_header_set *s, const char *name, const char *value);
/* Adds, in the set's order, each member whose name (case-insensitive) the
 * response does not carry yet. 0, or KEEL_EALREADY after the response. */
int keel_res_add_header_set(keel_req *r, const keel_res_header_set *s);

/* Sends the response with this body (copied) and finishes the request.
 * Returns KEEL_EALREADY when the request already has its response (late
 * answers after a deadline or a disconnect are dropped safely). */
int keel_respond(keel_req *r, int status, const char *content_type,
                 const void *body, size_t len);
int keel_respond_text(keel_req *r, int status, const char *text);
/* JSON from a jansson value (the reference is stolen). */
struct json_t;
int keel_respond_json(keel_req *r, int status, struct json_t *json);
/* RFC 9457 problem+json: {type,title,status,detail,instance,request_id}. */
int keel_respond_problem(keel_req *r, int status, const char *detail);
/* The same with extra members (a JSON object, stolen; may be NULL). */
int keel_respond_problem_ex(keel_req *r, int status, const char *type,
                            const char *detail, struct json_t *extra);

/* Streaming: headers now, body in chunks (chunked coding on HTTP/1.1, a
 * close-delimited body on 1.0). keel_res_write returns KEEL_EBUSY while
 * the connection's unsent output is over OUTPUT_BUFFER_MAX: register a
 * drain callback with keel_res_on_drain and write again from it. A client
 * that stops reading is closed after WRITE_TIMEOUT: the request then ends
 * and a pending drain callback runs once more, where every write fails
 * (KEEL_EALREADY), so the handler can release what it holds. */
int keel_res_stream_begin(keel_req *r, int status, const char *content_type);
int keel_res_write(keel_req *r, const void *data, size_t len);
int keel_res_stream_end(keel_req *r);
/* Calls cb(r, arg) once, from the loop, when everything written so far
 * has been handed to the kernel. One callback at a time. */
int keel_res_on_drain(keel_req *r, void (*cb)(keel_req *r, void *arg), void *arg);

/* Sending a file without copying it through user space (sendfile(2) on
 * the connection's socket, from the loop; a socket that is full waits for
 * writability). The body is a list of segments: bytes of keel's own (copied
 * at the call: e.g. the part headers of a multipart/byteranges body) and
 * ranges of `fd`. Content-Length is the sum of the segments' lengths; the
 * response hooks see a stream (headers only). fd is keel's from the call
 * on, on every path: closed when the response ends or the client goes
 * away. A file that turns out shorter than promised closes the connection
 * (the framing cannot be kept). Returns 0, or KEEL_EALREADY (fd closed)
 * when the request already has its response. */
typedef struct keel_sendfile_seg {
    const void *data; /* non-NULL: these bytes */
    uint64_t offset;  /* else: this range of fd */
    uint64_t len;
} keel_sendfile_seg;
int keel_res_sendfile(keel_req *r, int status, const char *content_type, int fd,
                      const keel_sendfile_seg *segs, size_t nsegs);

int keel_res_get_status(const keel_req *r);
uint64_t keel_res_bytes(const keel_req *r);
int keel_req_is_finished(const keel_req *r);
/* The status the connection layer refused r with (400 bad framing, 408,
 * 413, 414, 417, 431, 501, 505), or 0 for a request read whole. A refused
 * request is answered with that status: only EDGE middleware runs for it,
 * and responding from there is refused (see keel_phase). */
int keel_req_refused(const keel_req *r);

/* ---------------------------------------------------------------- streamed bodies
 *
 * On a KEEL_ROUTE_STREAM_BODY route the chain and the handler run as soon
 * as the head is read; keel_req_body() is empty. The handler asks for the
 * body with keel_req_body_stream: the bytes already read are delivered at
 * once, then each read as it arrives (de-chunked), never more than one
 * read (64 KiB) at a time, in constant memory. A `100 Continue` is sent
 * only then, so a request refused before (401, 403, 429) never makes the
 * client send its body. Backpressure: keel_req_body_pause stops reading
 * the socket (TCP flow control holds the client) until
 * keel_req_body_resume — e.g. while a disk write of the last chunks is on
 * the work pool. A response given while body bytes remain unread closes
 * the connection after it is written (the rest is discarded).
 *
 * on_data returns 0 to go on; non-zero stops the stream (nothing more is
 * delivered, on_end is not called: the handler answers). on_end runs once
 * with 0 (the whole body was delivered), KEEL_ECANCELED (the client went
 * away: responding is a no-op; release what you hold), KEEL_ETIMEDOUT (no
 * byte for BODY_TIMEOUT while reading), KEEL_ETOOBIG (over max) or
 * KEEL_EPROTO (bad chunked framing); after an error on_end returns
 * without a response, keel answers 408 / 413 / 400. */
typedef int (*keel_body_data_cb)(keel_req *r, const char *data, size_t len, void *arg);
typedef void (*keel_body_end_cb)(keel_req *r, int status, void *arg);

/* Starts streaming r's body to the callbacks; max is the most bytes
 * accepted (0: BODY_LIMIT). Returns 0; KEEL_ETOOBIG (nothing called)
 * when the Content-Length is over max; KEEL_EINVAL when the route does
 * not stream its body or a stream was already started; KEEL_EALREADY when
 * the request has ended. A request without a body gets on_end(0) at
 * once. Loop thread only. */
int keel_req_body_stream(keel_req *r, uint64_t max, keel_body_data_cb on_data,
                         keel_body_end_cb on_end, void *arg);
void keel_req_body_pause(keel_req *r);
void keel_req_body_resume(keel_req *r);
/* Body bytes delivered so far. */
uint64_t keel_req_body_received(const keel_req *r);

/* ---------------------------------------------------------------- flow */

/* Continues a suspended request: runs the next middleware (flow KEEL_NEXT)
 * or just finishes (KEEL_DONE, after the caller responded). Must be called
 * on the request's own loop. */
void keel_req_resume(keel_req *r, keel_flow flow);

/* Keeps r alive across an asynchronous wait of the caller's own (a timer,
 * a client callback): the request is not recycled until a matching
 * keel_req_unhold(), even if it ends first (deadline, disconnect). Check
 * keel_req_is_finished() before responding late. Loop thread only. */
void keel_req_hold(keel_req *r);
void keel_req_unhold(keel_req *r);

/* Work pool. `work` runs on a pool thread and may block; `after` runs on
 * the request's own loop, always exactly once, with status 0, or
 * KEEL_ECANCELED when the request ended first (deadline, disconnect):
 * then `after` must only free its own data; responding is a no-op.
 * Returns 0, or KEEL_EBUSY when the queue is full (nothing is called). */
typedef void (*keel_work_fn)(void *arg);
typedef void (*keel_after_work_cb)(keel_req *r, void *arg, int status);
int keel_req_submit(keel_req *r, keel_work_fn work, keel_after_work_cb after,
                    void *arg);

/* Answers 503 problem+json with Retry-After (queue full, overload). */
int keel_respond_unavailable(keel_req *r, unsigned retry_after_s,
                             const char *detail);

/* Extra pools: a set of threads with a bounded queue, for work that must
 * not wait behind (or hold up) the default pool — e.g. database queries on
 * threads that each own a connection. Created before keel_server_start;
 * owned and freed by the server. thread_start/thread_stop (optional) run
 * on each pool thread when it starts and before it exits. */
typedef struct keel_pool keel_pool;
typedef struct keel_pool_opts {
    const char *name;
    unsigned threads;
    uint64_t queue_max;
    void (*thread_start)(void *arg);
    void (*thread_stop)(void *arg);
    void *arg;
    unsigned nice;      /* the threads' priority below the process's (0 = the
                           same; Linux per-thread nice, capped at 19) */
} keel_pool_opts;
keel_pool *keel_server_pool_new(keel_server *s, const keel_pool_opts *opts);
/* Like keel_req_submit, on pool p (NULL = the default pool). */
int keel_req_submit_pool(keel_req *r, keel_pool *p, keel_work_fn work,
                         keel_after_work_cb after, void *arg);
/* Jobs waiting, and jobs refused since start, on p. */
uint64_t keel_pool_queued(const keel_pool *p);
uint64_t keel_pool_rejected(const keel_pool *p);
/* Threads of p running a job now; its thread count, queue bound and name
 * ("work" for the default pool, keel_pool_opts.name for others; copied). */
uint64_t keel_pool_busy(const keel_pool *p);
unsigned keel_pool_threads(const keel_pool *p);
uint64_t keel_pool_queue_max(const keel_pool *p);
const char *keel_pool_name(const keel_pool *p);
/* The server's pools, the default first (it exists once the server has
 * started): fills out[0..cap) and returns how many. */
size_t keel_server_pools(const keel_server *s, keel_pool **out, size_t cap);
/* Calls fn on the pool thread that takes each job off a queue, with the
 * time the job waited there (for a wait-time histogram). Set before
 * keel_server_start; fn must be thread-safe and quick. */
void keel_server_set_work_observer(keel_server *s,
                                   void (*fn)(void *arg, const keel_pool *p, uint64_t wait_ns),
                                   void *arg);

/* ---------------------------------------------------------------- request-scoped jobs
 *
 * An asynchronous handler keeps its state across hops (loop -> pool ->
 * loop -> database -> ...) in a job: a zeroed block in the request's
 * arena. The request owns it: it is released with the request, once the
 * response is done AND every pending `after` has run (pending work holds
 * the request), so the handler never frees it — not on success, not on an
 * error answer, not when the request ended first. A typical handler:
 *
 *     typedef struct hash_job { char pw[1025]; size_t n; char out[128]; int rc; } hash_job;
 *     hash_job *j = KEEL_REQ_JOB(r, hash_job, NULL);   // wiped at the end
 *     ...
 *     return keel_req_job_submit(r, NULL, work_hash, hashed, j);
 *
 *     static void hashed(keel_req *r, void *arg, int status)
 *     {
 *         hash_job *j = arg;
 *         if (status < 0)   // KEEL_ECANCELED: the request is gone
 *             return;       // nothing to free
 *         keel_respond_json(r, 201, ...);
 *     }
 */

/* A zeroed job of `size` bytes in r's arena, aligned for any type (aborts
 * on OOM, as the arena does). When the request is released, cleanup(job)
 * runs exactly once (for what the job points to outside the arena: a
 * json_t to decref, a heap string; NULL when there is nothing), then every
 * byte of the job is wiped with explicit_bzero, so passwords, hashes and
 * tokens kept inline in it do not outlive the request in freed memory.
 * cleanup runs on r's loop, after the last `after` of any job of r, and
 * must not touch r. Loop thread only. */
void *keel_req_job_new(keel_req *r, size_t size, void (*cleanup)(void *job));
#define KEEL_REQ_JOB(r, type, cleanup) ((type *)keel_req_job_new((r), sizeof(type), (cleanup)))

/* The one submit path of a job: keel_req_submit_pool(r, p, work, after,
 * job) (p NULL: the default pool). Returns KEEL_SUSPEND when it was
 * queued: `after` then runs exactly once on r's loop, with 0, or with
 * KEEL_ECANCELED when the request ended first (deadline, disconnect; then
 * responding is a no-op and the job is still released with the request).
 * When the queue is full (or the arguments are invalid) nothing is called
 * and it answers 503 problem+json with Retry-After: 1
 * (keel_respond_unavailable; a no-op when r already has its response) and
 * returns KEEL_DONE. A handler returns the flow as is; an `after` that
 * chains a next hop may ignore it. */
keel_flow keel_req_job_submit(keel_req *r, keel_pool *p, keel_work_fn work,
                              keel_after_work_cb after, void *job);

/* Work not tied to a request (health checks, jobs): `after` runs on the
 * loop of `worker`. */
int keel_worker_submit(keel_worker *w, keel_work_fn work,
                       void (*after)(void *arg, int status), void *arg);
/* The same on pool p (NULL: the default pool). */
int keel_worker_submit_pool(keel_worker *w, keel_pool *p, keel_work_fn work,
                            void (*after)(void *arg, int status), void *arg);
keel_worker *keel_req_worker(const keel_req *r);

/* The worker's libuv loop, for timers and async clients of the handler's
 * own (they must run on this loop only). */
struct uv_loop_s;
struct uv_loop_s *keel_worker_loop(keel_worker *w);

/* The worker's index, 0 .. keel_server_workers() - 1 (its metric shard). */
unsigned keel_worker_id(const keel_worker *w);
/* Worker i of a started server, or NULL. */
keel_worker *keel_server_worker(const keel_server *s, unsigned i);

/* Runs fn(arg) on w's loop, soon. Thread-safe. 0, or KEEL_ECLOSED when
 * the worker has finished (fn is not called; arg stays the caller's). */
int keel_worker_post(keel_worker *w, void (*fn)(void *arg), void *arg);

/* Per-worker life-cycle hooks for clients that live on the workers' loops
 * (e.g. one Redis connection per loop). on_start runs on the worker's
 * thread before it serves; on_stop runs on that thread once the worker
 * has drained (no connections, no pending work), and must close the
 * handles it opened on the loop so the loop can end. Added before
 * keel_server_start; run in the order added. */
typedef struct keel_worker_hooks {
    void (*on_start)(keel_worker *w, void *arg);
    void (*on_stop)(keel_worker *w, void *arg);
    void *arg;
} keel_worker_hooks;
void keel_server_add_worker_hooks(keel_server *s, const keel_worker_hooks *h);

#ifdef __cplusplus
}
#endif
#endif
