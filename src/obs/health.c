/* health.c — health routes, the check registry and its cache.
 *
 * A probe that finds the cache fresh (younger than HEALTH_CACHE_TTL) is
 * answered from it at once. Otherwise it starts a run — unless one is
 * already running (started by a probe on any worker), in which case it
 * gets the stale results, so at most one run is in flight. A run submits
 * every pool check to the work pool with a timer bounding them; when all
 * answered (or the longest timeout passed) the inline checks run on the
 * loop, the results replace the cache and the probe that started the run
 * is answered from it. The server state (starting/serving/draining) is
 * read at each answer, never cached.
 */
#include "obs/health_internal.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <uv.h>

#define MAX_CHECKS 32
#define DETAIL_CAP 256

typedef struct check {
    char *name;
    int critical;
    uint32_t timeout_ms;
    keel_health_check_fn fn;
    keel_health_data_fn data_fn;
    void *arg;
    unsigned flags;
} check;

enum { CK_PENDING = 0, CK_PASS, CK_WARN, CK_FAIL };

/* One check's outcome, as cached. */
typedef struct result {
    int status;
    double latency_ms;
    char detail[DETAIL_CAP];
    json_t *data;
} result;

struct keel_health {
    check checks[MAX_CHECKS];
    size_t n;
    keel_route routes[5];
    uint64_t started_ms;
    uint64_t ttl_ms;
    pthread_mutex_t mu;  /* the cache, shared by every worker */
    result cache[MAX_CHECKS];
    int have_cache;
    uint64_t cached_at_ms;
    uint64_t cached_wall_ms;
    int running;
    uint64_t runs;       /* atomic */
    keel_pool *pool;     /* the checks' own threads (NULL: the default pool) */
    struct owned {
        void *p;
        void (*fn)(void *p);
    } owned[4];
    size_t nowned;
};

typedef struct run run;
typedef struct item {
    run *run;
    size_t index;
    int result;
    uint64_t start_ns, latency_ns;
    char detail[DETAIL_CAP];
    json_t *data;
} item;

struct run {
    keel_health *h;
    keel_req *req;
    int detailed;
    size_t npool, done;
    int finished;
    int refs; /* pending jobs + the timer */
    uv_timer_t timer;
    item items[MAX_CHECKS];
};

static const char *const status_names[] = {"timeout", "pass", "warn", "fail"};

static int result_of(int rc)
{
    return rc == KEEL_HEALTH_PASS ? CK_PASS : rc == KEEL_HEALTH_WARN ? CK_WARN : CK_FAIL;
}

static void run_unref(run *r)
{
    if (--r->refs > 0)
        return;
    for (size_t i = 0; i < r->h->n; i++)
        json_decref(r->items[i].data);
    keel_free(r);
}

static void on_timer_closed(uv_handle_t *h)
{
    run_unref(h->data);
}

static void call_check(check *c, item *it)
{
    it->start_ns = keel_now_ns();
    int rc = c->data_fn ? c->data_fn(c->arg, it->detail, sizeof(it->detail), &it->data)
                        : c->fn(c->arg, it->detail, sizeof(it->detail));
    it->latency_ns = keel_now_ns() - it->start_ns;
    it->result = result_of(rc);
}

/* The answer, from the cache (under h->mu). */
static void respond(keel_health *h, keel_req *r, int detailed, int cached)
{
    keel_server *s = keel_req_server(r);
    keel_server_state st = keel_server_get_state(s);
    int critical_fail = 0, other_bad = 0;
    json_t *checks = json_object();
    pthread_mutex_lock(&h->mu);
    uint64_t age = keel_now_ms() - h->cached_at_ms;
    for (size_t i = 0; i < h->n; i++) {
        const result *res = &h->cache[i];
        const check *c = &h->checks[i];
        if (res->status != CK_PASS) {
            if (c->critical && res->status != CK_WARN)
                critical_fail = 1;
            else
                other_bad = 1;
        }
        json_t *o = json_pack("{s:s,s:b,s:f}", "status", status_names[res->status], "critical",
                              c->critical, "latency_ms", res->latency_ms);
        if (res->detail[0])
            json_object_set_new(o, "detail", json_string(res->detail));
        if (res->data)
            json_object_set_new(o, "data", json_deep_copy(res->data));
        json_object_set_new(checks, c->name, o);
    }
    uint64_t wall = h->cached_wall_ms;
    uint64_t runs = __atomic_load_n(&h->runs, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&h->mu);
    const char *state = st == KEEL_STATE_STARTING ? "starting"
                        : st == KEEL_STATE_SERVING ? "serving"
                                                   : "draining";
    keel_res_set_header(r, "Cache-Control", "no-store");
    if (!detailed) {
        int ready = st == KEEL_STATE_SERVING && !critical_fail;
        json_t *body = json_pack("{s:s,s:s,s:o}", "status", ready ? "ready" : "not_ready",
                                 "state", state, "checks", checks);
        keel_respond_json(r, ready ? 200 : 503, body);
        return;
    }
    const char *overall = critical_fail ? "unhealthy" : other_bad ? "degraded" : "healthy";
    keel_server_stats ss;
    keel_server_stats_get(s, &ss);
    char when[40];
    time_t secs = (time_t)(wall / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_t *body = json_pack(
        "{s:s,s:s,s:f,s:o,s:{s:s,s:I,s:b,s:I},s:{s:I,s:I,s:I,s:I,s:I}}", "status", overall,
        "state", state, "uptime_s", (double)(keel_now_ms() - h->started_ms) / 1000.0, "checks",
        checks, "cache", "checked_at", when, "age_ms", (json_int_t)age, "cached", cached,
        "runs", (json_int_t)runs, "server", "connections_open",
        (json_int_t)ss.connections_open, "requests_in_flight",
        (json_int_t)ss.requests_in_flight, "work_queued", (json_int_t)ss.work_queued,
        "work_rejected", (json_int_t)ss.work_rejected, "loop_lag_ms",
        (json_int_t)ss.loop_lag_ms);
    keel_respond_json(r, critical_fail ? 503 : 200, body);
}

/* Every pool check answered or timed out: the inline checks, then the
 * cache is replaced and the probe answered. */
static void finish(run *ru)
{
    if (ru->finished)
        return;
    ru->finished = 1;
    uv_timer_stop(&ru->timer);
    uv_close((uv_handle_t *)&ru->timer, on_timer_closed);
    keel_health *h = ru->h;
    for (size_t i = 0; i < h->n; i++)
        if (h->checks[i].flags & KEEL_HEALTH_INLINE)
            call_check(&h->checks[i], &ru->items[i]);
    pthread_mutex_lock(&h->mu);
    for (size_t i = 0; i < h->n; i++) {
        item *it = &ru->items[i];
        result *res = &h->cache[i];
        json_decref(res->data);
        res->data = NULL;
        res->status = it->result;
        if (it->result == CK_PENDING) { /* still running: its job owns the item */
            res->latency_ms = (double)h->checks[i].timeout_ms;
            snprintf(res->detail, sizeof(res->detail), "no answer within %ums",
                     (unsigned)h->checks[i].timeout_ms);
        } else {
            res->latency_ms = (double)it->latency_ns / 1e6;
            memcpy(res->detail, it->detail, sizeof(res->detail));
            res->data = it->data;
            it->data = NULL;
        }
    }
    h->have_cache = 1;
    h->cached_at_ms = keel_now_ms();
    h->cached_wall_ms = keel_wall_ms();
    h->running = 0;
    __atomic_fetch_add(&h->runs, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&h->mu);
    respond(h, ru->req, ru->detailed, 0);
    keel_req_unhold(ru->req);
}

static void on_timeout(uv_timer_t *t)
{
    finish(t->data);
}

static void job(void *arg)
{
    item *it = arg;
    call_check(&it->run->h->checks[it->index], it);
}

static void job_done(void *arg, int status)
{
    item *it = arg;
    run *ru = it->run;
    if (status != 0 && it->result == CK_PENDING) {
        it->result = CK_FAIL;
        snprintf(it->detail, sizeof(it->detail), "%s", keel_strerror(status));
    }
    if (++ru->done == ru->npool)
        finish(ru);
    run_unref(ru);
}

static keel_flow run_checks(keel_req *r, int detailed)
{
    keel_health *h = keel_req_route(r)->data;
    pthread_mutex_lock(&h->mu);
    int fresh = h->have_cache && keel_now_ms() - h->cached_at_ms < h->ttl_ms;
    int serve_cache = fresh || (h->have_cache && h->running);
    if (!serve_cache)
        h->running = 1;
    pthread_mutex_unlock(&h->mu);
    if (serve_cache) {
        respond(h, r, detailed, 1);
        return KEEL_DONE;
    }

    run *ru = keel_calloc(1, sizeof(*ru));
    ru->h = h;
    ru->req = r;
    ru->detailed = detailed;
    ru->refs = 1; /* the timer */
    uint32_t tmo = 0;
    for (size_t i = 0; i < h->n; i++) {
        ru->items[i].run = ru;
        ru->items[i].index = i;
        if (!(h->checks[i].flags & KEEL_HEALTH_INLINE)) {
            ru->npool++;
            if (h->checks[i].timeout_ms > tmo)
                tmo = h->checks[i].timeout_ms;
        }
    }
    keel_worker *w = keel_req_worker(r);
    keel_req_hold(r);
    uv_timer_init(keel_worker_loop(w), &ru->timer);
    ru->timer.data = ru;
    for (size_t i = 0; i < h->n; i++) {
        if (h->checks[i].flags & KEEL_HEALTH_INLINE)
            continue;
        item *it = &ru->items[i];
        ru->refs++;
        int rc = keel_worker_submit_pool(w, h->pool, job, job_done, it);
        if (rc < 0) {
            ru->refs--;
            it->result = CK_FAIL;
            snprintf(it->detail, sizeof(it->detail), "work queue full");
            ru->done++;
        }
    }
    if (ru->done == ru->npool)
        finish(ru);
    else
        uv_timer_start(&ru->timer, on_timeout, tmo, 0);
    return KEEL_SUSPEND;
}

static keel_flow h_live(keel_req *r)
{
    keel_health *h = keel_req_route(r)->data;
    json_t *body = json_pack("{s:s,s:f}", "status", "ok", "uptime_s",
                             (double)(keel_now_ms() - h->started_ms) / 1000.0);
    keel_res_set_header(r, "Cache-Control", "no-store");
    keel_respond_json(r, 200, body);
    return KEEL_DONE;
}

static keel_flow h_ready(keel_req *r)
{
    return run_checks(r, 0);
}

static keel_flow h_detailed(keel_req *r)
{
    return run_checks(r, 1);
}

static keel_flow h_ping(keel_req *r)
{
    keel_respond(r, 200, "text/plain; charset=utf-8", "pong", 4);
    return KEEL_DONE;
}

keel_health *keel_health_new(void)
{
    keel_health *h = keel_calloc(1, sizeof(*h));
    h->started_ms = keel_now_ms();
    h->ttl_ms = 1000;
    pthread_mutex_init(&h->mu, NULL);
    unsigned internal = KEEL_ROUTE_INTERNAL;
    h->routes[0] = (keel_route){.name = "health.live", .method = "GET", .path = "/health",
                                .handler = h_live, .summary = "Liveness", .flags = internal,
                                .data = h};
    h->routes[1] = (keel_route){.name = "health.live2", .method = "GET",
                                .path = "/health/live", .handler = h_live,
                                .summary = "Liveness", .flags = internal, .data = h};
    h->routes[2] = (keel_route){.name = "health.ready", .method = "GET",
                                .path = "/health/ready", .handler = h_ready,
                                .summary = "Readiness", .flags = internal, .data = h};
    h->routes[3] = (keel_route){.name = "health.detailed", .method = "GET",
                                .path = "/health/detailed", .handler = h_detailed,
                                .summary = "Every health check with its status, latency and "
                                           "detail (cached for HEALTH_CACHE_TTL)",
                                .flags = KEEL_ROUTE_INTERNAL, .data = h};
    h->routes[4] = (keel_route){.name = "ping", .method = "GET", .path = "/ping",
                                .handler = h_ping, .summary = "pong", .flags = internal,
                                .data = h};
    return h;
}

void keel_health_free(keel_health *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n; i++) {
        keel_free(h->checks[i].name);
        json_decref(h->cache[i].data);
    }
    for (size_t i = 0; i < h->nowned; i++)
        h->owned[i].fn(h->owned[i].p);
    pthread_mutex_destroy(&h->mu);
    keel_free(h);
}

void keel__health_own(keel_health *h, void *p, void (*fn)(void *p))
{
    if (h->nowned < sizeof(h->owned) / sizeof(h->owned[0]))
        h->owned[h->nowned++] = (struct owned){p, fn};
    else
        fn(p);
}

void keel_health_use_pool(keel_health *h, keel_server *s)
{
    if (h->pool)
        return;
    /* two threads: a check stuck on a dead host does not hold up the others
     * for long, and probes never wait behind the requests' blocking work */
    keel_pool_opts o = {.name = "health", .threads = 2, .queue_max = 4 * MAX_CHECKS};
    h->pool = keel_server_pool_new(s, &o);
}

void keel_health_set_cache_ttl(keel_health *h, uint64_t ms)
{
    h->ttl_ms = ms;
}

uint64_t keel_health_runs(const keel_health *h)
{
    return __atomic_load_n(&h->runs, __ATOMIC_RELAXED);
}

int keel_health_add(keel_health *h, const keel_health_check *c)
{
    if (!c || !c->name || !*c->name || (!c->fn && !c->data_fn))
        return KEEL_EINVAL;
    if (h->n == MAX_CHECKS)
        return KEEL_EBUSY;
    check *k = &h->checks[h->n++];
    k->name = keel_strdup(c->name);
    k->critical = c->critical;
    k->timeout_ms = c->timeout_ms ? c->timeout_ms : 2000;
    k->fn = c->fn;
    k->data_fn = c->data_fn;
    k->arg = c->arg;
    k->flags = c->flags;
    return 0;
}

void keel_health_register(keel_health *h, const char *name, int critical,
                          uint32_t timeout_ms, keel_health_check_fn fn, void *arg)
{
    keel_health_check c = {.name = name, .critical = critical, .timeout_ms = timeout_ms,
                           .fn = fn, .arg = arg};
    keel_health_add(h, &c);
}

size_t keel_health_routes(keel_health *h, const keel_route **out)
{
    *out = h->routes;
    return sizeof(h->routes) / sizeof(h->routes[0]);
}
