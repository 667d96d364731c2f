/* shed.c — load shedding: while the worker a request arrived on is over
 * one of its limits — event-loop lag (SHED_LOOP_LAG), requests in flight
 * (SHED_IN_FLIGHT) or process RSS (SHED_RSS) — new requests are answered
 * 503 with Retry-After before any work is done for them. Routes flagged
 * KEEL_ROUTE_INTERNAL (health, metrics) are never shed, so probes and
 * scrapes still see the server; readiness reports the shedding (see
 * keel_shed_active) so a load balancer moves traffic away.
 *
 * The signals are cheap to read: lag and in-flight are the worker's own
 * counters; RSS is read from /proc/self/statm at most every 100 ms. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "keel/log.h"
#include "keel/mw.h"

#define RSS_EVERY_NS (100ull * 1000 * 1000)
#define ACTIVE_NS (1000ull * 1000 * 1000) /* "shedding" for 1 s after the last refusal */

struct keel_shed {
    uint64_t max_lag_ms, max_in_flight, max_rss;
    uint64_t rss;          /* atomic: last reading */
    uint64_t rss_read_ns;  /* atomic */
    uint64_t last_shed_ns; /* atomic */
    int reason;            /* atomic: index into reasons[] of the last refusal */
    keel_metric *shed_total;
};

static const char *const reasons[] = {"loop_lag", "in_flight", "memory"};

static uint64_t read_rss(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, res = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%llu %llu", &size, &res) != 2)
        res = 0;
    fclose(f);
    return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

static uint64_t current_rss(keel_shed *s, uint64_t now)
{
    uint64_t at = __atomic_load_n(&s->rss_read_ns, __ATOMIC_RELAXED);
    if (now - at >= RSS_EVERY_NS &&
        __atomic_compare_exchange_n(&s->rss_read_ns, &at, now, 0, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED))
        __atomic_store_n(&s->rss, read_rss(), __ATOMIC_RELAXED);
    return __atomic_load_n(&s->rss, __ATOMIC_RELAXED);
}

static keel_flow on_request(keel_req *r, void *data)
{
    keel_shed *s = data;
    const keel_route *rt = keel_req_route(r);
    if ((rt && (rt->flags & KEEL_ROUTE_INTERNAL)) || keel_req_refused(r))
        return KEEL_NEXT; /* a refusal is answered as it is, and costs nothing */
    keel_server_stats st;
    keel_worker_stats_get(keel_req_worker(r), &st);
    const char *why = NULL;
    int reason = 0;
    uint64_t now = 0; /* the clock is read only when needed */
    if (s->max_lag_ms && st.loop_lag_ms > s->max_lag_ms) {
        why = "the server is overloaded (event-loop lag)";
        reason = 0;
    } else if (s->max_in_flight && st.requests_in_flight > s->max_in_flight) {
        why = "the server is overloaded (too many requests in flight)";
        reason = 1;
    } else if (s->max_rss && current_rss(s, now = keel_now_ns()) > s->max_rss) {
        why = "the server is overloaded (memory)";
        reason = 2;
    }
    if (!why)
        return KEEL_NEXT;
    if (!now)
        now = keel_now_ns();
    __atomic_store_n(&s->last_shed_ns, now, __ATOMIC_RELAXED);
    __atomic_store_n(&s->reason, reason, __ATOMIC_RELAXED);
    if (s->shed_total) {
        const char *lv[] = {reasons[reason]};
        keel_metric_add(s->shed_total, keel_req_worker_id(r), lv, 1);
    }
    keel_respond_unavailable(r, 1, why);
    return KEEL_DONE;
}

keel_shed *keel_shed_new(const keel_config *config, keel_metrics *m)
{
    const keel_edge_options *cfg = keel_config_get(config, &keel_edge_config);
    keel_shed *s = keel_calloc(1, sizeof(*s));
    s->max_lag_ms = cfg->shed_loop_lag_ms;
    s->max_in_flight = cfg->shed_in_flight;
    s->max_rss = cfg->shed_rss_bytes;
    if (m) {
        static const char *const reason_label[] = {"reason", NULL};
        s->shed_total = keel_metrics_counter(m, "load_shed_total",
                                             "Requests refused with 503 by load shedding",
                                             reason_label);
        for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
            keel_metric_declare(s->shed_total, &reasons[i]);
    }
    return s;
}

int keel_shed_active(keel_shed *s, char *detail, size_t cap)
{
    uint64_t now = keel_now_ns();
    uint64_t last = __atomic_load_n(&s->last_shed_ns, __ATOMIC_RELAXED);
    int reason = __atomic_load_n(&s->reason, __ATOMIC_RELAXED);
    int active = last && now - last < ACTIVE_NS;
    if (!active && s->max_rss && current_rss(s, now) > s->max_rss) {
        active = 1;
        reason = 2;
    }
    if (active)
        snprintf(detail, cap, "shedding load (%s)", reasons[reason]);
    else
        snprintf(detail, cap, "not shedding");
    return active;
}

keel_middleware keel_mw_shed(keel_shed *s)
{
    keel_middleware m = {.name = "shed", .phase = KEEL_PHASE_EDGE, .on_request = on_request, .dispose = keel_free,
                         .data = s};
    return m;
}
