/* health.c — health routes and the check registry. */
#include "keel/health.h"

#include <jansson.h>
#include <stdio.h>
#include <uv.h>

#define MAX_CHECKS 32
#define DETAIL_CAP 256

typedef struct check {
    char *name;
    int critical;
    uint32_t timeout_ms;
    keel_health_check_fn fn;
    void *arg;
} check;

struct keel_health {
    check checks[MAX_CHECKS];
    size_t n;
    keel_route routes[5];
    uint64_t started_ms;
};

enum { CK_PENDING = 0, CK_PASS, CK_FAIL };

typedef struct run run;
typedef struct item {
    run *run;
    size_t index;
    int result;
    uint64_t start_ns, latency_ns;
    char detail[DETAIL_CAP];
} item;

struct run {
    keel_health *h;
    keel_req *req;
    int detailed;
    size_t n, done;
    int responded;
    int refs; /* pending jobs + the timer */
    uv_timer_t timer;
    item items[MAX_CHECKS];
};

static void run_unref(run *r)
{
    if (--r->refs == 0)
        keel_free(r);
}

static void on_timer_closed(uv_handle_t *h)
{
    run_unref(h->data);
}

static void respond(run *ru)
{
    if (ru->responded)
        return;
    ru->responded = 1;
    uv_timer_stop(&ru->timer);
    uv_close((uv_handle_t *)&ru->timer, on_timer_closed);

    keel_req *r = ru->req;
    keel_server *s = keel_req_server(r);
    int serving = keel_server_get_state(s) == KEEL_STATE_SERVING;
    int critical_fail = 0, other_fail = 0;
    json_t *checks = json_object();
    for (size_t i = 0; i < ru->n; i++) {
        item *it = &ru->items[i];
        check *c = &ru->h->checks[i];
        int ok = it->result == CK_PASS;
        if (!ok) {
            if (c->critical)
                critical_fail = 1;
            else
                other_fail = 1;
        }
        json_t *o = json_pack("{s:s,s:b,s:f}", "status",
                              ok ? "pass" : it->result == CK_PENDING ? "timeout" : "fail",
                              "critical", c->critical, "latency_ms",
                              it->result == CK_PENDING
                                  ? (double)c->timeout_ms
                                  : (double)it->latency_ns / 1e6);
        if (it->detail[0])
            json_object_set_new(o, "detail", json_string(it->detail));
        json_object_set_new(checks, c->name, o);
    }
    const char *state = keel_server_get_state(s) == KEEL_STATE_STARTING ? "starting"
                        : serving                                        ? "serving"
                                                                         : "draining";
    if (!ru->detailed) {
        int ready = serving && !critical_fail;
        json_t *body = json_pack("{s:s,s:s,s:o}", "status", ready ? "ready" : "not_ready",
                                 "state", state, "checks", checks);
        keel_res_set_header(r, "Cache-Control", "no-store");
        keel_respond_json(r, ready ? 200 : 503, body);
    } else {
        const char *overall = critical_fail ? "unhealthy" : other_fail ? "degraded" : "healthy";
        keel_server_stats st;
        keel_server_stats_get(s, &st);
        json_t *body = json_pack(
            "{s:s,s:s,s:f,s:o,s:{s:I,s:I,s:I,s:I,s:I}}", "status", overall, "state", state,
            "uptime_s", (double)(keel_now_ms() - ru->h->started_ms) / 1000.0, "checks", checks,
            "server", "connections_open", (json_int_t)st.connections_open,
            "requests_in_flight", (json_int_t)st.requests_in_flight, "work_queued",
            (json_int_t)st.work_queued, "work_rejected", (json_int_t)st.work_rejected,
            "loop_lag_ms", (json_int_t)st.loop_lag_ms);
        keel_res_set_header(r, "Cache-Control", "no-store");
        keel_respond_json(r, critical_fail ? 503 : 200, body);
    }
    keel_req_unhold(r);
}

static void on_timeout(uv_timer_t *t)
{
    respond(t->data);
}

static void job(void *arg)
{
    item *it = arg;
    check *c = &it->run->h->checks[it->index];
    it->start_ns = keel_now_ns();
    int rc = c->fn(c->arg, it->detail, sizeof(it->detail));
    it->latency_ns = keel_now_ns() - it->start_ns;
    it->result = rc == 0 ? CK_PASS : CK_FAIL;
}

static void job_done(void *arg, int status)
{
    item *it = arg;
    run *ru = it->run;
    if (status != 0 && it->result == CK_PENDING) {
        it->result = CK_FAIL;
        snprintf(it->detail, sizeof(it->detail), "%s", keel_strerror(status));
    }
    if (++ru->done == ru->n)
        respond(ru);
    run_unref(ru);
}

static keel_flow run_checks(keel_req *r, int detailed)
{
    keel_health *h = keel_req_route(r)->data;
    run *ru = keel_calloc(1, sizeof(*ru));
    ru->h = h;
    ru->req = r;
    ru->detailed = detailed;
    ru->n = h->n;
    ru->refs = 1; /* the timer */
    uint32_t tmo = 0;
    for (size_t i = 0; i < h->n; i++)
        if (h->checks[i].timeout_ms > tmo)
            tmo = h->checks[i].timeout_ms;
    keel_worker *w = keel_req_worker(r);
    keel_req_hold(r);
    uv_timer_init(keel_worker_loop(w), &ru->timer);
    ru->timer.data = ru;
    for (size_t i = 0; i < h->n; i++) {
        item *it = &ru->items[i];
        it->run = ru;
        it->index = i;
        ru->refs++;
        int rc = keel_worker_submit(w, job, job_done, it);
        if (rc < 0) {
            ru->refs--;
            it->result = CK_FAIL;
            snprintf(it->detail, sizeof(it->detail), "work queue full");
            ru->done++;
        }
    }
    if (ru->done == ru->n) {
        respond(ru);
    } else {
        uv_timer_start(&ru->timer, on_timeout, tmo, 0);
    }
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
                                .summary = "Every health check with its latency",
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
    for (size_t i = 0; i < h->n; i++)
        keel_free(h->checks[i].name);
    keel_free(h);
}

void keel_health_register(keel_health *h, const char *name, int critical,
                          uint32_t timeout_ms, keel_health_check_fn fn, void *arg)
{
    if (h->n == MAX_CHECKS)
        return;
    check *c = &h->checks[h->n++];
    c->name = keel_strdup(name);
    c->critical = critical;
    c->timeout_ms = timeout_ms ? timeout_ms : 2000;
    c->fn = fn;
    c->arg = arg;
}

size_t keel_health_routes(keel_health *h, const keel_route **out)
{
    *out = h->routes;
    return sizeof(h->routes) / sizeof(h->routes[0]);
}
