/* dist_lock.c — the admin endpoints of the distributed locks and the event
 * bus (admin users or service API keys with admin:access):
 *
 *   POST   /distributed/lock/:key          {ttl_ms, wait_ms} -> 201 grant | 409 held
 *   DELETE /distributed/lock/:key          token (body or X-Lock-Token) -> 204 | 404 | 409
 *   POST   /distributed/events/:channel    JSON payload -> 202 {id}
 *   GET    /distributed/events/:channel/stream   Server-Sent Events of that channel
 *
 * With REDIS_URL set and Redis unreachable, locks and publishing answer
 * 503 (a lock never falls back to the in-process table: that would make a
 * second holder); a stream stays open and resumes when the subscriber
 * reconnects.
 *
 * A stream lives on the worker that accepted it: the bus runs on_event on
 * every worker, and each worker writes to its own streams. Each stream has
 * a bounded queue; a reader that falls SSE_QUEUE_MAX messages behind loses
 * the newest (events_dropped_total{reason="slow_reader"}). A timer per
 * stream notices a client that went away or a server that drains, and
 * keeps idle connections alive with a comment line.
 */
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "app/app.h"

#define SSE_QUEUE_MAX 256
#define SSE_TICK_MS 250
#define SSE_PING_MS 15000
#define TTL_DEFAULT_MS 30000
#define NAME_MAX_LEN 128

typedef struct sse sse;
struct sse {
    sse *prev, *next;
    keel_req *r;
    unsigned wid;
    int linked, waiting, closing;
    uv_timer_t tick;
    uint64_t last_write_ms;
    size_t qhead, qn;
    char *q[SSE_QUEUE_MAX];
    char channel[NAME_MAX_LEN + 1];
};

typedef struct dist_ctx {
    keel_locks *locks;
    keel_events *bus;
    sse **streams; /* per worker, touched only by that worker */
    unsigned nworkers;
} dist_ctx;

static dist_ctx D;

/* ---------------------------------------------------------------- helpers */

static void name_copy(keel_req *r, const char *param, char out[NAME_MAX_LEN + 1])
{
    keel_str v = keel_req_param(r, param); /* checked by params_schema */
    size_t n = v.len > NAME_MAX_LEN ? NAME_MAX_LEN : v.len;
    memcpy(out, v.ptr, n);
    out[n] = '\0';
}

static void respond_error(keel_req *r, int status)
{
    if (status == KEEL_EUNAVAIL || status == KEEL_ETIMEDOUT || status == KEEL_ECLOSED)
        keel_respond_unavailable(r, 1, "Redis is unavailable; try again shortly");
    else
        keel_respond_problem(r, 500, keel_strerror(status));
}

/* ---------------------------------------------------------------- locks */

typedef struct lock_call {
    keel_req *r;
    char key[NAME_MAX_LEN + 1];
} lock_call;

static void released_quietly(void *arg, int status, const keel_lock_grant *g)
{
    (void)arg, (void)status, (void)g;
}

static void acquired(void *arg, int status, const keel_lock_grant *g)
{
    lock_call *c = arg;
    keel_req *r = c->r;
    if (keel_req_is_finished(r)) {
        /* the client is gone (or the deadline passed): nobody will release it */
        if (status == 0)
            keel_lock_release(D.locks, keel_req_worker(r), c->key, g->token, released_quietly,
                              NULL);
    } else if (status == 0) {
        keel_respond_json(r, 201,
                          json_pack("{s:s,s:s,s:I,s:I,s:s}", "key", c->key, "token", g->token,
                                    "fencing", (json_int_t)g->fencing, "expires_at",
                                    (json_int_t)g->expires_at_ms, "backend",
                                    keel_locks_backend(D.locks)));
    } else if (status == KEEL_EBUSY) {
        keel_respond_problem(r, 409, "the lock is held");
    } else {
        respond_error(r, status);
    }
    keel_req_unhold(r);
}

static keel_flow lock_acquire(keel_req *r)
{
    json_t *body = app_json_body(r); /* checked by request_schema */
    json_t *ttl = json_object_get(body, "ttl_ms"), *wait = json_object_get(body, "wait_ms");
    uint64_t ttl_ms = ttl ? (uint64_t)json_integer_value(ttl) : TTL_DEFAULT_MS;
    uint64_t wait_ms = wait ? (uint64_t)json_integer_value(wait) : 0;
    /* while held, try every 50 ms (+ jitter) until wait_ms has passed */
    keel_lock_opts o = {.attempts = wait_ms ? UINT_MAX : 1, .retry_delay_ms = 50,
                        .max_wait_ms = wait_ms};
    lock_call *c = keel_arena_alloc(keel_req_arena(r), sizeof(*c));
    c->r = r;
    name_copy(r, "key", c->key);
    keel_req_hold(r);
    int rc = keel_lock_acquire(D.locks, keel_req_worker(r), c->key, ttl_ms, &o, acquired, c);
    if (rc < 0) {
        keel_req_unhold(r);
        respond_error(r, rc);
        return KEEL_DONE;
    }
    return KEEL_SUSPEND;
}

static void released(void *arg, int status, const keel_lock_grant *g)
{
    lock_call *c = arg;
    (void)g;
    if (!keel_req_is_finished(c->r)) {
        if (status == 0)
            keel_respond(c->r, 204, NULL, NULL, 0);
        else if (status == KEEL_ENOTFOUND)
            keel_respond_problem(c->r, 404, "the lock is not held (released or expired)");
        else if (status == KEEL_EACCES)
            keel_respond_problem(c->r, 409, "the lock is held with another token");
        else
            respond_error(c->r, status);
    }
    keel_req_unhold(c->r);
}

static int is_token(const char *p, size_t n)
{
    if (n != KEEL_LOCK_TOKEN_LEN)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return 0;
    return 1;
}

static keel_flow lock_release(keel_req *r)
{
    char token[KEEL_LOCK_TOKEN_LEN + 1] = "";
    keel_str h = keel_req_header(r, "X-Lock-Token");
    const char *tp = h.ptr;
    size_t tn = h.len;
    if (!tp && keel_req_body(r).len) {
        json_t *body = app_json_body(r);
        if (!body)
            return KEEL_DONE; /* 415 or 400 sent */
        json_t *t = json_object_get(body, "token");
        tp = json_string_value(t);
        tn = tp ? json_string_length(t) : 0;
    }
    if (!tp) {
        keel_respond_problem(r, 422, "the lock's token is required (X-Lock-Token or "
                                     "{\"token\": ...})");
        return KEEL_DONE;
    }
    if (!is_token(tp, tn)) {
        keel_respond_problem(r, 422, "a lock token is 32 lower-case hex digits");
        return KEEL_DONE;
    }
    memcpy(token, tp, tn);
    token[tn] = '\0';
    lock_call *c = keel_arena_alloc(keel_req_arena(r), sizeof(*c));
    c->r = r;
    name_copy(r, "key", c->key);
    keel_req_hold(r);
    int rc = keel_lock_release(D.locks, keel_req_worker(r), c->key, token, released, c);
    if (rc < 0) {
        keel_req_unhold(r);
        respond_error(r, rc);
        return KEEL_DONE;
    }
    return KEEL_SUSPEND;
}

/* ---------------------------------------------------------------- publish */

typedef struct pub_call {
    keel_req *r;
    char id[KEEL_EVENTS_ID_LEN + 1];
    char channel[NAME_MAX_LEN + 1];
} pub_call;

static void published(void *arg, int status)
{
    pub_call *c = arg;
    if (!keel_req_is_finished(c->r)) {
        if (status == 0)
            keel_respond_json(c->r, 202, json_pack("{s:s,s:s,s:s}", "id", c->id, "channel",
                                                   c->channel, "backend",
                                                   keel_events_backend(D.bus)));
        else
            respond_error(c->r, status);
    }
    keel_req_unhold(c->r);
}

static keel_flow events_publish(keel_req *r)
{
    json_t *payload = app_json_body(r); /* checked by request_schema */
    pub_call *c = keel_arena_alloc(keel_req_arena(r), sizeof(*c));
    c->r = r;
    name_copy(r, "channel", c->channel);
    keel_req_hold(r);
    int rc = keel_events_publish(D.bus, keel_req_worker(r), c->channel, payload, c->id,
                                 published, c);
    if (rc < 0) {
        keel_req_unhold(r);
        respond_error(r, rc);
        return KEEL_DONE;
    }
    return KEEL_SUSPEND;
}

/* ---------------------------------------------------------------- SSE */

static void sse_flush(sse *s);

static void sse_closed(uv_handle_t *h)
{
    keel_free(h->data);
}

static void sse_unlink(sse *s)
{
    if (!s->linked)
        return;
    s->linked = 0;
    if (s->prev)
        s->prev->next = s->next;
    else
        D.streams[s->wid] = s->next;
    if (s->next)
        s->next->prev = s->prev;
}

/* The end: only when no drain callback is pending. */
static void sse_finish(sse *s)
{
    sse_unlink(s);
    while (s->qn) {
        keel_free(s->q[s->qhead]);
        s->qhead = (s->qhead + 1) % SSE_QUEUE_MAX;
        s->qn--;
    }
    if (!keel_req_is_finished(s->r))
        keel_res_stream_end(s->r);
    keel_req_unhold(s->r);
    uv_timer_stop(&s->tick);
    uv_close((uv_handle_t *)&s->tick, sse_closed);
}

static void sse_close(sse *s)
{
    if (s->closing)
        return;
    s->closing = 1;
    sse_unlink(s);
    if (!s->waiting)
        sse_finish(s); /* else the pending drain callback finishes */
}

static void sse_drained(keel_req *r, void *arg)
{
    sse *s = arg;
    s->waiting = 0;
    if (s->closing || keel_req_is_finished(r)) {
        s->closing = 1;
        sse_finish(s);
        return;
    }
    sse_flush(s);
}

/* Writes one frame: 0, 1 when the connection is full (retry on drain),
 * -1 when the stream is over. */
static int sse_write(sse *s, const char *frame)
{
    int rc = keel_res_write(s->r, frame, strlen(frame));
    if (rc == KEEL_EBUSY) {
        if (keel_res_on_drain(s->r, sse_drained, s) < 0)
            return -1;
        s->waiting = 1;
        return 1;
    }
    if (rc < 0)
        return -1;
    s->last_write_ms = keel_now_ms();
    return 0;
}

static void sse_flush(sse *s)
{
    while (s->qn && !s->waiting && !s->closing) {
        int rc = sse_write(s, s->q[s->qhead]);
        if (rc > 0)
            return;
        if (rc < 0) {
            sse_close(s);
            return;
        }
        keel_free(s->q[s->qhead]);
        s->qhead = (s->qhead + 1) % SSE_QUEUE_MAX;
        s->qn--;
    }
}

static void sse_tick(uv_timer_t *t)
{
    sse *s = t->data;
    if (s->closing)
        return;
    if (keel_req_is_finished(s->r) ||
        keel_server_get_state(keel_req_server(s->r)) == KEEL_STATE_DRAINING) {
        sse_close(s);
        return;
    }
    if (!s->waiting && !s->qn && keel_now_ms() - s->last_write_ms >= SSE_PING_MS &&
        sse_write(s, ": ping\n\n") < 0)
        sse_close(s);
}

/* The bus, on every worker: hand the envelope to this worker's streams. */
static void on_event(void *arg, keel_worker *w, const char *channel, const char *envelope,
                     size_t len)
{
    (void)arg;
    unsigned wid = keel_worker_id(w);
    if (wid >= D.nworkers)
        return;
    sse *s = D.streams[wid], *next;
    for (; s; s = next) {
        next = s->next; /* a flush may unlink s */
        if (strcmp(s->channel, channel))
            continue;
        if (s->qn == SSE_QUEUE_MAX) {
            keel_events_count_dropped(D.bus, wid, "slow_reader", 1);
            continue;
        }
        char *frame = keel_malloc(len + 9);
        memcpy(frame, "data: ", 6);
        memcpy(frame + 6, envelope, len);
        memcpy(frame + 6 + len, "\n\n", 3);
        s->q[(s->qhead + s->qn) % SSE_QUEUE_MAX] = frame;
        s->qn++;
        sse_flush(s);
    }
}

static keel_flow events_stream(keel_req *r)
{
    unsigned wid = keel_req_worker_id(r);
    sse *s = keel_calloc(1, sizeof(*s));
    s->r = r;
    s->wid = wid;
    name_copy(r, "channel", s->channel);
    keel_req_hold(r);
    keel_res_header(r, "Cache-Control", "no-cache");
    keel_res_header(r, "X-Accel-Buffering", "no");
    keel_res_stream_begin(r, 200, "text/event-stream");
    uv_timer_init(keel_worker_loop(keel_req_worker(r)), &s->tick);
    s->tick.data = s;
    uv_timer_start(&s->tick, sse_tick, SSE_TICK_MS, SSE_TICK_MS);
    s->next = D.streams[wid];
    if (s->next)
        s->next->prev = s;
    D.streams[wid] = s;
    s->linked = 1;
    /* the subscription is in place once this line arrives */
    if (sse_write(s, "retry: 1000\n: subscribed\n\n") < 0)
        sse_close(s);
    return KEEL_SUSPEND;
}

/* ---------------------------------------------------------------- routes */

#define NAME_PARAM(p)                                                                    \
    "{\"type\":\"object\",\"required\":[\"" p "\"],\"properties\":{\"" p "\":"           \
    "{\"type\":\"string\",\"minLength\":1,\"maxLength\":128,"                            \
    "\"pattern\":\"^[A-Za-z0-9._:-]+$\"}}}"

static const char lock_body_schema[] =
    "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
    "\"ttl_ms\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":86400000},"
    "\"wait_ms\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":60000}}}";

static const keel_route lock_routes[] = {
    {.name = "distributed.lock_acquire", .method = "POST", .path = "/distributed/lock/:key",
     .handler = lock_acquire, .auth = "any", .permission = "admin:access",
     .summary = "Takes a distributed lock: 201 with its token and fencing number, 409 when "
                "held (after waiting up to wait_ms)",
     .request_schema = lock_body_schema, .params_schema = NAME_PARAM("key"),
     .timeout_ms = 65000},
    {.name = "distributed.lock_release", .method = "DELETE", .path = "/distributed/lock/:key",
     .handler = lock_release, .auth = "any", .permission = "admin:access",
     .summary = "Releases a lock held with the token (X-Lock-Token or {\"token\"}): 204, 404 "
                "not held, 409 another token",
     .params_schema = NAME_PARAM("key")},
    {.name = "distributed.events_publish", .method = "POST",
     .path = "/distributed/events/:channel", .handler = events_publish, .auth = "any",
     .permission = "admin:access",
     .summary = "Publishes the JSON body on the channel of the event bus: 202 with the "
                "envelope's id",
     .request_schema = "{}", .params_schema = NAME_PARAM("channel")},
    {.name = "distributed.events_stream", .method = "GET",
     .path = "/distributed/events/:channel/stream", .handler = events_stream, .auth = "any",
     .permission = "admin:access",
     .summary = "Server-Sent Events: every envelope published on the channel from now on",
     .params_schema = NAME_PARAM("channel")},
};

int app_dist_lock_setup(keel_service *svc)
{
    D.locks = keel_service_locks(svc);
    D.bus = keel_service_events(svc);
    D.nworkers = keel_server_workers(keel_service_server(svc));
    if (!D.streams)
        D.streams = keel_calloc(D.nworkers ? D.nworkers : 1, sizeof(sse *));
    int rc = keel_events_subscribe(D.bus, "*", on_event, NULL);
    if (rc < 0)
        return rc;
    return keel_service_add_routes(svc, lock_routes, sizeof(lock_routes) / sizeof(lock_routes[0]));
}
