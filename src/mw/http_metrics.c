/* http_metrics.c — request counters and latency histograms by route
 * template (bounded cardinality: unmatched paths share one label). */
#include <stdio.h>

#include "keel/mw.h"

typedef struct http_metrics {
    keel_metric *requests;
    keel_metric *duration;
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

static void on_complete(keel_req *r, void *data)
{
    http_metrics *hm = data;
    const char *method = keel_method_name(keel_req_method(r));
    if (!method)
        method = "OTHER";
    const char *route = keel_req_route_label(r);
    char st[4];
    const char *labels[3] = {method, route, status_str(keel_res_get_status(r), st)};
    unsigned shard = keel_req_worker_id(r);
    keel_metric_add(hm->requests, shard, labels, 1);
    double secs = (double)keel_req_elapsed_ns(r) / 1e9;
    keel_metric_observe(hm->duration, shard, labels, secs);
}

keel_middleware keel_mw_http_metrics(keel_metrics *m)
{
    http_metrics *hm = keel_calloc(1, sizeof(*hm));
    static const char *const l3[] = {"method", "route", "status", NULL};
    static const char *const l2[] = {"method", "route", NULL};
    hm->requests = keel_metrics_counter(m, "http_requests_total",
                                        "HTTP requests by method, route template and status", l3);
    hm->duration = keel_metrics_histogram(m, "http_request_duration_seconds",
                                          "HTTP request latency by method and route template",
                                          l2, keel_latency_buckets, keel_latency_nbuckets);
    keel_middleware mw = {.name = "http_metrics", .phase = KEEL_PHASE_EDGE, .on_request = NULL,
                          .on_complete = on_complete, .dispose = keel_free, .data = hm};
    return mw;
}
