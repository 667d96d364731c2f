/* admin_stream.c — GET /api/v1/admin/stream: the dashboard's live figures
 * as Server-Sent Events (docs/observability.md, "Dashboard").
 *
 * One snapshot is computed from the metrics registry at most once per
 * ADMIN_STREAM_INTERVAL, whichever worker's stream asks first, and shared
 * by every stream (a mutex around the sampler; the registry's own JSON
 * view is safe from any worker): request rate and the 5xx share over the
 * last interval, latency p50/p95/p99 from the histogram's bucket deltas
 * (the way Prometheus' histogram_quantile interpolates), connections, the
 * database pool, the cache hit ratio, WebSocket sessions and the Redis
 * state. The browser never parses /metrics.
 *
 * Each stream is a request kept open (keel_res_stream_begin) with a timer
 * on its worker's loop. A snapshot is the latest state, so nothing is
 * queued for a slow reader: while the connection's output is over
 * OUTPUT_BUFFER_MAX (keel_res_write says KEEL_EBUSY) the snapshots due are
 * skipped and counted (admin_stream_skipped_total), and a reader that
 * stops for WRITE_TIMEOUT is closed by the server. A stream ends when the
 * client goes, when the server drains (an `event: shutdown` first), and
 * after ADMIN_STREAM_MAX_DURATION (the client reconnects with a token that
 * is still valid). At most ADMIN_STREAM_MAX streams at once (503 beyond).
 *
 * Messages of the event bus on channels matching ADMIN_STREAM_BUS_PATTERN
 * ("alerts*": what the alert engine publishes) are forwarded as they come
 * as `event: bus` with the bus envelope, so the page refreshes its alerts
 * at once; each worker hands them to its own streams (the lists are
 * per worker and touched only on that worker's loop).
 */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "app/app.h"

#define STREAM_PATH "/api/v1/admin/stream"
#define TICK_MAX_MS 250
#define NB_MAX 32 /* latency buckets kept (keel_latency_nbuckets + 1 fits) */

/* ---------------------------------------------------------------- sampler */

typedef struct sample {
    int valid;
    uint64_t t_ms;
    double requests, errors; /* all, 5xx */
    double cum[NB_MAX];      /* latency buckets (cumulative), [nb] = +Inf */
    double hits, misses;
} sample;

static struct {
    pthread_mutex_t mu;
    keel_metrics *metrics;
    int redis_configured;
    const app_dashboard_options *o;
    sample prev;
    char *text; /* the last snapshot's JSON, keel_malloc'd */
    uint64_t text_ms;
    uint64_t seq;
    int streams; /* open streams, all workers (atomic) */
    keel_metric *m_skipped, *m_rejected;
    unsigned nworkers;
    struct dstream **lists; /* [worker]: its open streams */
} S = {.mu = PTHREAD_MUTEX_INITIALIZER};

static json_t *series_of(json_t *root, const char *family)
{
    return json_object_get(json_object_get(root, family), "series");
}

/* The sum of a family's values (counters, gauges); -1 when absent. */
static double family_sum(json_t *root, const char *family)
{
    json_t *arr = series_of(root, family), *s;
    size_t i;
    if (!arr)
        return -1;
    double sum = 0;
    json_array_foreach(arr, i, s) sum += json_number_value(json_object_get(s, "value"));
    return sum;
}

/* The value of the series whose label `name` is `value`; -1 when absent. */
static double series_value(json_t *root, const char *family, const char *name,
                           const char *value)
{
    json_t *arr = series_of(root, family), *s;
    size_t i;
    json_array_foreach(arr, i, s)
    {
        const char *v = json_string_value(json_object_get(json_object_get(s, "labels"), name));
        if (v && !strcmp(v, value))
            return json_number_value(json_object_get(s, "value"));
    }
    return -1;
}

static size_t bucket_index(const char *le)
{
    if (!strcmp(le, "+Inf"))
        return keel_latency_nbuckets;
    double v = strtod(le, NULL);
    for (size_t i = 0; i < keel_latency_nbuckets; i++)
        if (fabs(keel_latency_buckets[i] - v) <= keel_latency_buckets[i] * 1e-6)
            return i;
    return NB_MAX; /* not one of the default buckets */
}

static void read_sample(json_t *root, sample *s)
{
    json_t *arr = series_of(root, "http_requests_total"), *x;
    size_t i;
    json_array_foreach(arr, i, x)
    {
        double v = json_number_value(json_object_get(x, "value"));
        const char *st = json_string_value(json_object_get(json_object_get(x, "labels"),
                                                           "status"));
        s->requests += v;
        if (st && st[0] == '5')
            s->errors += v;
    }
    arr = series_of(root, "http_request_duration_seconds");
    json_array_foreach(arr, i, x)
    {
        const char *route = json_string_value(json_object_get(json_object_get(x, "labels"),
                                                              "route"));
        if (route && !strcmp(route, STREAM_PATH))
            continue; /* a stream lasts minutes: not a latency */
        const char *le;
        json_t *n;
        json_object_foreach(json_object_get(x, "buckets"), le, n)
        {
            size_t b = bucket_index(le);
            if (b <= keel_latency_nbuckets && b < NB_MAX)
                s->cum[b] += (double)json_integer_value(n);
        }
    }
    s->hits = family_sum(root, "cache_hits_total");
    s->misses = family_sum(root, "cache_misses_total");
    s->valid = 1;
}

/* The q-quantile (ms) of the observations between two samples, or -1 when
 * there were none: linear within the bucket it falls in; past the last
 * finite bound, that bound. */
double app_stream_quantile(const double *d, size_t nb, const double *bounds, double q)
{
    double total = d[nb];
    if (total <= 0)
        return -1;
    double rank = q * total;
    for (size_t i = 0; i < nb; i++) {
        if (d[i] >= rank) {
            double lo = i ? bounds[i - 1] : 0, below = i ? d[i - 1] : 0;
            double span = d[i] - below;
            double at = span > 0 ? (rank - below) / span : 1;
            return (lo + (bounds[i] - lo) * at) * 1000.0;
        }
    }
    return bounds[nb - 1] * 1000.0;
}

/* A figure: an integer when it is one, else rounded to 4 decimals; null
 * for "unknown" (negative). */
static json_t *num_or_null(double v)
{
    if (v < 0 || !isfinite(v))
        return json_null();
    if (v < 9007199254740992.0 && v == floor(v))
        return json_integer((json_int_t)v);
    return json_real(round(v * 1e4) / 1e4);
}

static json_t *redis_state(json_t *root)
{
    if (!S.redis_configured)
        return json_pack("{s:s}", "state", "not_configured");
    double ready = family_sum(root, "redis_connections_ready");
    double br = series_value(root, "circuit_breaker_state", "name", "redis");
    static const char *const bstates[] = {"closed", "open", "half_open"};
    const char *breaker = br >= 0 && br < 3 ? bstates[(int)br] : "unknown";
    const char *state = ready > 0 && (br <= 0) ? "up" : ready > 0 ? "degraded" : "down";
    return json_pack("{s:s,s:o,s:s}", "state", state, "connections_ready", num_or_null(ready),
                     "breaker", breaker);
}

/* Builds the snapshot from a fresh reading against S.prev. */
static char *snapshot_build(uint64_t now)
{
    json_t *root = keel_metrics_json(S.metrics);
    sample cur = {0};
    cur.t_ms = now;
    read_sample(root, &cur);
    size_t nb = keel_latency_nbuckets < NB_MAX - 1 ? keel_latency_nbuckets : NB_MAX - 2;
    /* rates over the last interval only: after a pause with no stream
     * open, the first snapshot has none (not an average over the pause) */
    int fresh = S.prev.valid && now > S.prev.t_ms && now - S.prev.t_ms <= 5 * S.o->interval_ms;
    double secs = fresh ? (double)(now - S.prev.t_ms) / 1000.0 : 0;
    double rate = -1, err_rate = -1, p50 = -1, p95 = -1, p99 = -1, hit_iv = -1;
    if (secs > 0) {
        double dreq = cur.requests - S.prev.requests, derr = cur.errors - S.prev.errors;
        rate = dreq / secs;
        err_rate = dreq > 0 ? derr / dreq : 0;
        double d[NB_MAX];
        for (size_t i = 0; i <= nb; i++)
            d[i] = cur.cum[i] - S.prev.cum[i];
        p50 = app_stream_quantile(d, nb, keel_latency_buckets, 0.50);
        p95 = app_stream_quantile(d, nb, keel_latency_buckets, 0.95);
        p99 = app_stream_quantile(d, nb, keel_latency_buckets, 0.99);
        double dh = cur.hits - S.prev.hits, dm = cur.misses - S.prev.misses;
        if (cur.hits >= 0 && cur.misses >= 0 && dh + dm > 0)
            hit_iv = dh / (dh + dm);
    }
    double hits = cur.hits < 0 ? 0 : cur.hits, misses = cur.misses < 0 ? 0 : cur.misses;
    double pool_open = family_sum(root, "db_pool_connections_open");
    json_t *pool = pool_open < 0
                       ? json_null()
                       : json_pack("{s:o,s:o,s:o,s:o}", "open", num_or_null(pool_open),
                                   "in_use",
                                   num_or_null(family_sum(root, "db_pool_connections_in_use")),
                                   "idle",
                                   num_or_null(family_sum(root, "db_pool_connections_idle")),
                                   "waiting",
                                   num_or_null(family_sum(root, "db_pool_waiting")));
    json_t *snap = json_pack(
        "{s:I,s:I,s:o,s:o,s:o,s:o,s:o,s:{s:o,s:o,s:o},s:o,s:o,s:o,s:{s:o,s:o,s:o,s:o},"
        "s:o,s:o,s:o,s:i}",
        "seq", (json_int_t)++S.seq, "ts", (json_int_t)keel_wall_ms(), "interval_s",
        num_or_null(secs), "requests_total", num_or_null(cur.requests), "errors_total",
        num_or_null(cur.errors),
        "request_rate", num_or_null(rate), "error_rate", num_or_null(err_rate), "latency_ms",
        "p50", num_or_null(p50), "p95", num_or_null(p95), "p99", num_or_null(p99),
        "in_flight", num_or_null(family_sum(root, "http_requests_in_flight")), "connections",
        num_or_null(family_sum(root, "http_connections_open")), "db_pool", pool, "cache",
        "hits", num_or_null(hits), "misses", num_or_null(misses), "hit_ratio",
        num_or_null(hits + misses > 0 ? hits / (hits + misses) : -1), "hit_ratio_interval",
        num_or_null(hit_iv), "websockets", num_or_null(family_sum(root, "ws_connections")),
        "redis", redis_state(root), "memory_rss_bytes",
        num_or_null(family_sum(root, "process_resident_memory_bytes")), "streams",
        __atomic_load_n(&S.streams, __ATOMIC_RELAXED));
    json_decref(root);
    S.prev = cur;
    char *text = json_dumps(snap, JSON_COMPACT | JSON_REAL_PRECISION(12));
    json_decref(snap);
    char *out = keel_strdup(text);
    free(text);
    return out;
}

/* The current snapshot (keel_malloc'd copy): the cached one when it is
 * younger than 90 % of the interval, else a new one. */
static char *snapshot_get(void)
{
    uint64_t now = keel_now_ms();
    pthread_mutex_lock(&S.mu);
    if (!S.text || now - S.text_ms >= S.o->interval_ms * 9 / 10) {
        keel_free(S.text);
        S.text = snapshot_build(now);
        S.text_ms = now;
    }
    char *out = keel_strdup(S.text);
    pthread_mutex_unlock(&S.mu);
    return out;
}

/* ---------------------------------------------------------------- streams */

typedef struct dstream {
    struct dstream *prev, *next; /* the worker's list */
    int linked;
    keel_req *r;
    uv_timer_t tick;
    uint64_t started_ms, snap_ms, beat_ms;
    unsigned wid;
    int waiting; /* a drain callback is pending */
    int closing;
} dstream;

static void stream_closed(uv_handle_t *h)
{
    keel_free(h->data);
}

static void stream_unlink(dstream *s)
{
    if (!s->linked)
        return;
    s->linked = 0;
    if (s->prev)
        s->prev->next = s->next;
    else
        S.lists[s->wid] = s->next;
    if (s->next)
        s->next->prev = s->prev;
}

/* The end: only when no drain callback is pending. */
static void stream_finish(dstream *s)
{
    stream_unlink(s);
    if (!keel_req_is_finished(s->r))
        keel_res_stream_end(s->r);
    keel_req_unhold(s->r);
    __atomic_sub_fetch(&S.streams, 1, __ATOMIC_RELAXED);
    uv_timer_stop(&s->tick);
    uv_close((uv_handle_t *)&s->tick, stream_closed);
}

static void stream_close(dstream *s)
{
    if (s->closing)
        return;
    s->closing = 1;
    stream_unlink(s);
    if (!s->waiting)
        stream_finish(s); /* else the pending drain callback finishes */
}

static void stream_drained(keel_req *r, void *arg)
{
    dstream *s = arg;
    s->waiting = 0;
    if (s->closing || keel_req_is_finished(r)) {
        s->closing = 1;
        stream_finish(s);
    }
}

/* 0 written, 1 the connection is full (skipped; retried after the drain),
 * -1 the stream is over. */
static int stream_write(dstream *s, const char *text, size_t len)
{
    if (s->waiting)
        return 1;
    int rc = keel_res_write(s->r, text, len);
    if (rc == KEEL_EBUSY) {
        if (keel_res_on_drain(s->r, stream_drained, s) < 0)
            return -1;
        s->waiting = 1;
        return 1;
    }
    return rc < 0 ? -1 : 0;
}

static int send_snapshot(dstream *s)
{
    if (s->waiting) { /* the reader is behind: this one is skipped */
        keel_metric_add(S.m_skipped, s->wid, NULL, 1);
        return 1;
    }
    char *snap = snapshot_get();
    keel_buf b = {0};
    keel_buf_printf(&b, "event: snapshot\ndata: %s\n\n", snap);
    keel_free(snap);
    int rc = stream_write(s, b.data, b.len);
    keel_buf_free(&b);
    if (rc == 1)
        keel_metric_add(S.m_skipped, s->wid, NULL, 1);
    return rc;
}

static void stream_tick(uv_timer_t *t)
{
    dstream *s = t->data;
    if (s->closing)
        return;
    uint64_t now = keel_now_ms();
    if (keel_req_is_finished(s->r)) {
        stream_close(s);
        return;
    }
    if (keel_server_get_state(keel_req_server(s->r)) == KEEL_STATE_DRAINING) {
        static const char bye[] = "event: shutdown\ndata: {\"reason\":\"draining\"}\n\n";
        stream_write(s, bye, sizeof(bye) - 1);
        stream_close(s);
        return;
    }
    if (now - s->started_ms >= S.o->max_age_ms) {
        static const char bye[] = "event: shutdown\ndata: {\"reason\":\"max_duration\"}\n\n";
        stream_write(s, bye, sizeof(bye) - 1);
        stream_close(s);
        return;
    }
    int rc = 0;
    if (now - s->snap_ms >= S.o->interval_ms) {
        s->snap_ms = now;
        rc = send_snapshot(s);
    }
    if (rc >= 0 && now - s->beat_ms >= S.o->heartbeat_ms) {
        s->beat_ms = now;
        rc = stream_write(s, ": heartbeat\n\n", sizeof(": heartbeat\n\n") - 1);
    }
    if (rc < 0)
        stream_close(s);
}

/* The bus, on every worker: the message to this worker's streams. */
static void on_bus(void *arg, keel_worker *w, const char *channel, const char *envelope,
                   size_t len)
{
    (void)arg;
    (void)channel;
    unsigned wid = keel_worker_id(w);
    if (wid >= S.nworkers || !S.lists[wid] || memchr(envelope, '\n', len))
        return; /* the envelope is compact JSON: one data line */
    keel_buf b = {0};
    keel_buf_append(&b, "event: bus\ndata: ", 17);
    keel_buf_append(&b, envelope, len);
    keel_buf_append(&b, "\n\n", 2);
    dstream *s = S.lists[wid], *next;
    for (; s; s = next) {
        next = s->next; /* a close unlinks s */
        int rc = stream_write(s, b.data, b.len);
        if (rc == 1)
            keel_metric_add(S.m_skipped, wid, NULL, 1);
        else if (rc < 0)
            stream_close(s);
    }
    keel_buf_free(&b);
}

static keel_flow h_stream(keel_req *r)
{
    if (keel_req_method(r) == KEEL_METHOD_HEAD) {
        /* no body would ever be sent: answer the head, hold no slot */
        keel_res_header(r, "Cache-Control", "no-store");
        keel_respond(r, 200, "text/event-stream; charset=utf-8", NULL, 0);
        return KEEL_DONE;
    }
    int n = __atomic_add_fetch(&S.streams, 1, __ATOMIC_RELAXED);
    if ((uint64_t)n > S.o->stream_max) {
        __atomic_sub_fetch(&S.streams, 1, __ATOMIC_RELAXED);
        keel_metric_add(S.m_rejected, keel_req_worker_id(r), NULL, 1);
        keel_respond_unavailable(r, 5, "too many live streams are open (ADMIN_STREAM_MAX)");
        return KEEL_DONE;
    }
    dstream *s = keel_calloc(1, sizeof(*s));
    s->r = r;
    s->wid = keel_req_worker_id(r);
    s->started_ms = s->snap_ms = s->beat_ms = keel_now_ms();
    keel_req_hold(r);
    keel_res_header(r, "Cache-Control", "no-store");
    keel_res_header(r, "X-Accel-Buffering", "no");
    keel_res_stream_begin(r, 200, "text/event-stream; charset=utf-8");
    uv_timer_init(keel_worker_loop(keel_req_worker(r)), &s->tick);
    s->tick.data = s;
    uint64_t tick = S.o->interval_ms < TICK_MAX_MS ? S.o->interval_ms : TICK_MAX_MS;
    if (S.o->heartbeat_ms < tick)
        tick = S.o->heartbeat_ms;
    uv_timer_start(&s->tick, stream_tick, tick, tick);
    if (s->wid < S.nworkers) {
        s->next = S.lists[s->wid];
        if (s->next)
            s->next->prev = s;
        S.lists[s->wid] = s;
        s->linked = 1;
    }
    /* the first snapshot at once: the page has figures before the first tick */
    static const char hello[] = "retry: 2000\n: keel admin stream\n\n";
    if (stream_write(s, hello, sizeof(hello) - 1) < 0 || send_snapshot(s) < 0)
        stream_close(s);
    return KEEL_SUSPEND;
}

static double streams_open(void *arg)
{
    (void)arg;
    return (double)__atomic_load_n(&S.streams, __ATOMIC_RELAXED);
}

static const keel_route stream_routes[] = {
    {.name = "admin.stream", .method = "GET", .path = STREAM_PATH, .handler = h_stream,
     .summary = "Server-Sent Events for the dashboard: a `snapshot` event every "
                "ADMIN_STREAM_INTERVAL (request rate, latency p50/p95/p99, error rate, "
                "connections, DB pool, cache hit ratio, WebSockets, Redis), heartbeat "
                "comments, `shutdown` before the server drains",
     .auth = "any", .permission = "admin:access", .flags = KEEL_ROUTE_INTERNAL},
};

int app_admin_stream_setup(keel_service *svc)
{
    S.o = app_dashboard_options_of(svc);
    S.metrics = keel_service_metrics(svc);
    S.redis_configured = keel_service_redis(svc) != NULL;
    S.m_skipped = keel_metrics_counter(S.metrics, "admin_stream_skipped_total",
                                       "Dashboard snapshots skipped because the reader's "
                                       "connection was full",
                                       NULL);
    S.m_rejected = keel_metrics_counter(S.metrics, "admin_stream_rejected_total",
                                        "Dashboard streams refused over ADMIN_STREAM_MAX", NULL);
    keel_metrics_callback(S.metrics, "admin_streams_open", "Dashboard event streams open",
                          KEEL_GAUGE, streams_open, NULL);
    S.nworkers = keel_server_workers(keel_service_server(svc));
    if (!S.lists)
        S.lists = keel_calloc(S.nworkers ? S.nworkers : 1, sizeof(*S.lists));
    keel_events *bus = keel_service_events(svc);
    if (bus && S.o->bus_pattern && *S.o->bus_pattern) {
        int rc = keel_events_subscribe(bus, S.o->bus_pattern, on_bus, NULL);
        if (rc < 0)
            return rc;
    }
    return keel_service_add_routes(svc, stream_routes, 1);
}

void app_admin_stream_teardown(void)
{
    pthread_mutex_lock(&S.mu);
    keel_free(S.text);
    S.text = NULL;
    S.prev.valid = 0;
    pthread_mutex_unlock(&S.mu);
    keel_free(S.lists);
    S.lists = NULL;
}
