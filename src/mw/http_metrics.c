/* http_metrics.c — request counters and latency histograms by route
 * template (bounded cardinality: unmatched paths share one label). */
#include <stdio.h>

#include "keel/mw.h"

/* A worker's series for one (method, route, status), looked up once:
 * after the first request of a kind, counting it takes no key building
 * or hashing. Direct-mapped; a collision just looks the series up again. */
typedef struct hm_slot {
    const char *route; /* the route label's pointer (its template or "unmatched") */
    int method, status;
    keel_metric_series *requests, *duration, *responses;
} hm_slot;

#define HM_SLOTS 64

typedef struct http_metrics {
    keel_metric *requests;
    keel_metric *duration;
    keel_metric *responses; /* by class: declared at 0 for every route */
    unsigned ncache;             /* worker shards with a cache */
    hm_slot (*cache)[HM_SLOTS];  /* [shard]: touched only by that worker's loop */
} http_metrics;

static const char *status_str(int status, char *buf)
{
    if (status < 100 || status > 999)
        status = 0;
    buf[0] = (char)('0' + status / 100);
    buf[1] = (char)('0' + status / 10 % 10);
    buf[2] = (char)('0' + status % 10);
    buf[3] = '\0';
    return buf;
}

static const char *const classes[] = {"1xx", "2xx", "3xx", "4xx", "5xx", NULL};

static const char *class_of(int status)
{
    return status >= 100 && status < 600 ? classes[status / 100 - 1] : "5xx";
}

static void on_complete(keel_req *r, void *data)
{
    http_metrics *hm = data;
    int m = (int)keel_req_method(r);
    const char *route = keel_req_route_label(r);
    int status = keel_res_get_status(r);
    unsigned shard = keel_req_worker_id(r);
    double secs = (double)keel_req_elapsed_ns(r) / 1e9;
    hm_slot *slot = NULL;
    if (shard < hm->ncache) {
        size_t h = ((uintptr_t)route >> 4) ^ ((size_t)m * 31u) ^ ((size_t)status * 7u);
        slot = &hm->cache[shard][h % HM_SLOTS];
        if (slot->requests && slot->route == route && slot->method == m &&
            slot->status == status) {
            keel_metric_series_add(slot->requests, 1);
            keel_metric_series_observe(slot->duration, secs);
            keel_metric_series_add(slot->responses, 1);
            return;
        }
    }
    const char *method = keel_method_name((keel_method)m);
    if (!method)
        method = "OTHER";
    char st[4];
    const char *labels[3] = {method, route, status_str(status, st)};
    const char *clabels[3] = {method, route, class_of(status)};
    keel_metric_add(hm->requests, shard, labels, 1);
    keel_metric_observe(hm->duration, shard, labels, secs);
    keel_metric_add(hm->responses, shard, clabels, 1);
    if (slot) {
        slot->route = route;
        slot->method = m;
        slot->status = status;
        slot->requests = keel_metric_series_get(hm->requests, shard, labels);
        slot->duration = keel_metric_series_get(hm->duration, shard, labels);
        slot->responses = keel_metric_series_get(hm->responses, shard, clabels);
    }
}

static void dispose(void *data)
{
    http_metrics *hm = data;
    keel_free(hm->cache);
    keel_free(hm);
}

keel_middleware keel_mw_http_metrics(keel_metrics *m)
{
    http_metrics *hm = keel_calloc(1, sizeof(*hm));
    static const char *const l3[] = {"method", "route", "status", NULL};
    static const char *const l2[] = {"method", "route", NULL};
    static const char *const l3c[] = {"method", "route", "class", NULL};
    hm->requests = keel_metrics_counter(m, "http_requests_total",
                                        "HTTP requests by method, route template and status", l3);
    hm->duration = keel_metrics_histogram(m, "http_request_duration_seconds",
                                          "HTTP request latency by method and route template",
                                          l2, keel_latency_buckets, keel_latency_nbuckets);
    hm->responses = keel_metrics_counter(m, "http_responses_total",
                                         "HTTP responses by method, route template and status "
                                         "class (1xx..5xx), every class of every route "
                                         "exported from start",
                                         l3c);
    if (hm->requests && hm->duration && hm->responses) {
        hm->ncache = keel_metrics_shards(m) - 1; /* the last shard is shared */
        hm->cache = keel_calloc(hm->ncache ? hm->ncache : 1, sizeof(*hm->cache));
    }
    keel_middleware mw = {.name = "http_metrics", .phase = KEEL_PHASE_EDGE, .on_request = NULL,
                          .on_complete = on_complete, .dispose = dispose, .data = hm};
    return mw;
}

void keel_mw_http_metrics_declare_routes(keel_metrics *m, const keel_route *const *routes,
                                         size_t n)
{
    keel_metric *mt = keel_metrics_find(m, "http_responses_total");
    if (!mt)
        return;
    for (size_t i = 0; i < n; i++) {
        /* the labels on_complete uses: keel_method_name of the parsed
         * method (the route's own spelling) and the route template */
        const char *lv[3] = {routes[i]->method, routes[i]->path, NULL};
        keel_metric_declare_each(mt, lv, 2, classes);
    }
}
