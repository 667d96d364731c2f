/* runtime.c — loop lag per worker and work-pool figures (keel/runtime.h).
 *
 * Loop lag: each worker runs a repeating timer every
 * KEEL_LOOP_LAG_INTERVAL_MS; when it fires, how much later than due it
 * fires is the time the loop spent on something else (a callback that
 * blocked, a long batch of I/O). It is observed into a histogram on the
 * worker's own shard, and kept per worker for /api/v1/admin/workers.
 */
#include "keel/runtime.h"

#include <jansson.h>
#include <stdio.h>
#include <uv.h>

#define MAX_POOLS 16

typedef struct lag_timer {
    keel_runtime *rt;
    unsigned id;
    uv_timer_t timer;
    uint64_t expected_ns;
    uint64_t lag_us;     /* atomic */
    uint64_t lag_max_us; /* atomic */
} lag_timer;

struct keel_runtime {
    keel_server *s;
    unsigned nworkers;
    lag_timer *timers;
    keel_metric *m_delay, *m_lag;
    keel_metric *m_depth, *m_busy, *m_threads, *m_wait;
};

static const double delay_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                       0.25,  0.5,    1,     2.5,  5,    10};

static void on_lag_timer(uv_timer_t *t)
{
    lag_timer *lt = t->data;
    uint64_t now = keel_now_ns();
    uint64_t lag = now > lt->expected_ns ? now - lt->expected_ns : 0;
    lt->expected_ns = now + (uint64_t)KEEL_LOOP_LAG_INTERVAL_MS * 1000000u;
    uint64_t us = lag / 1000;
    __atomic_store_n(&lt->lag_us, us, __ATOMIC_RELAXED);
    if (us > __atomic_load_n(&lt->lag_max_us, __ATOMIC_RELAXED))
        __atomic_store_n(&lt->lag_max_us, us, __ATOMIC_RELAXED);
    char w[16];
    snprintf(w, sizeof(w), "%u", lt->id);
    const char *lv[] = {w};
    keel_metric_observe(lt->rt->m_delay, lt->id, lv, (double)lag / 1e9);
    keel_metric_set(lt->rt->m_lag, lt->id, lv, (double)lag / 1e9);
}

static void on_worker_start(keel_worker *w, void *arg)
{
    keel_runtime *rt = arg;
    unsigned id = keel_worker_id(w);
    if (id >= rt->nworkers)
        return;
    lag_timer *lt = &rt->timers[id];
    uv_timer_init(keel_worker_loop(w), &lt->timer);
    lt->timer.data = lt;
    lt->expected_ns = keel_now_ns() + (uint64_t)KEEL_LOOP_LAG_INTERVAL_MS * 1000000u;
    uv_timer_start(&lt->timer, on_lag_timer, KEEL_LOOP_LAG_INTERVAL_MS,
                   KEEL_LOOP_LAG_INTERVAL_MS);
    uv_unref((uv_handle_t *)&lt->timer); /* never keeps a loop alive */
}

static void on_worker_stop(keel_worker *w, void *arg)
{
    keel_runtime *rt = arg;
    unsigned id = keel_worker_id(w);
    if (id < rt->nworkers && rt->timers[id].timer.data)
        uv_close((uv_handle_t *)&rt->timers[id].timer, NULL);
}

static void on_wait(void *arg, const keel_pool *p, uint64_t wait_ns)
{
    keel_runtime *rt = arg;
    const char *lv[] = {keel_pool_name(p)};
    keel_metric_observe(rt->m_wait, UINT32_MAX, lv, (double)wait_ns / 1e9);
}

/* At scrape time: the pools' gauges. */
static void collect(void *arg)
{
    keel_runtime *rt = arg;
    keel_pool *pools[MAX_POOLS];
    size_t n = keel_server_pools(rt->s, pools, MAX_POOLS);
    for (size_t i = 0; i < n; i++) {
        const char *lv[] = {keel_pool_name(pools[i])};
        keel_metric_set(rt->m_depth, UINT32_MAX, lv, (double)keel_pool_queued(pools[i]));
        keel_metric_set(rt->m_busy, UINT32_MAX, lv, (double)keel_pool_busy(pools[i]));
        keel_metric_set(rt->m_threads, UINT32_MAX, lv, (double)keel_pool_threads(pools[i]));
        keel_metric_declare(rt->m_wait, lv);
    }
}

keel_runtime *keel_runtime_new(keel_server *s, keel_metrics *m)
{
    keel_runtime *rt = keel_calloc(1, sizeof(*rt));
    rt->s = s;
    rt->nworkers = keel_server_workers(s);
    rt->timers = keel_calloc(rt->nworkers ? rt->nworkers : 1, sizeof(lag_timer));
    for (unsigned i = 0; i < rt->nworkers; i++) {
        rt->timers[i].rt = rt;
        rt->timers[i].id = i;
    }
    if (m) {
        static const char *const wl[] = {"worker", NULL};
        static const char *const pl[] = {"pool", NULL};
        rt->m_delay = keel_metrics_histogram(m, "event_loop_delay_seconds",
                                             "How late each worker's loop ran a timer due "
                                             "every 100 ms (event-loop lag)",
                                             wl, delay_buckets,
                                             sizeof(delay_buckets) / sizeof(double));
        rt->m_lag = keel_metrics_gauge(m, "event_loop_worker_lag_seconds",
                                       "The last event-loop lag measured on each worker", wl);
        for (unsigned i = 0; i < rt->nworkers; i++) {
            char w[16];
            snprintf(w, sizeof(w), "%u", i);
            const char *lv[] = {w};
            keel_metric_declare(rt->m_delay, lv);
            keel_metric_declare(rt->m_lag, lv);
        }
        rt->m_depth = keel_metrics_gauge(m, "work_pool_queue_depth",
                                         "Jobs waiting for a thread, by pool", pl);
        rt->m_busy = keel_metrics_gauge(m, "work_pool_busy_threads",
                                        "Pool threads running a job, by pool", pl);
        rt->m_threads = keel_metrics_gauge(m, "work_pool_threads", "Threads of each pool", pl);
        rt->m_wait = keel_metrics_histogram(m, "work_pool_wait_seconds",
                                            "Time jobs waited in a pool's queue", pl,
                                            keel_latency_buckets, keel_latency_nbuckets);
        keel_metrics_on_collect(m, collect, rt);
        keel_server_set_work_observer(s, on_wait, rt);
    }
    keel_worker_hooks hooks = {.on_start = on_worker_start, .on_stop = on_worker_stop,
                               .arg = rt};
    keel_server_add_worker_hooks(s, &hooks);
    return rt;
}

void keel_runtime_free(keel_runtime *rt)
{
    if (!rt)
        return;
    keel_free(rt->timers);
    keel_free(rt);
}

uint64_t keel_runtime_loop_lag_us(const keel_runtime *rt, unsigned worker)
{
    return worker < rt->nworkers ? __atomic_load_n(&rt->timers[worker].lag_us, __ATOMIC_RELAXED)
                                 : 0;
}

uint64_t keel_runtime_loop_lag_max_us(const keel_runtime *rt, unsigned worker)
{
    return worker < rt->nworkers
               ? __atomic_load_n(&rt->timers[worker].lag_max_us, __ATOMIC_RELAXED)
               : 0;
}

json_t *keel_runtime_workers_json(const keel_runtime *rt)
{
    json_t *a = json_array();
    for (unsigned i = 0; i < rt->nworkers; i++) {
        keel_worker *w = keel_server_worker(rt->s, i);
        keel_server_stats st = {0};
        if (w)
            keel_worker_stats_get(w, &st);
        json_array_append_new(
            a, json_pack("{s:i,s:f,s:f,s:I,s:I,s:I,s:I}", "worker", (int)i, "loop_lag_ms",
                         (double)keel_runtime_loop_lag_us(rt, i) / 1000.0, "loop_lag_max_ms",
                         (double)keel_runtime_loop_lag_max_us(rt, i) / 1000.0,
                         "connections_open", (json_int_t)st.connections_open,
                         "connections_total", (json_int_t)st.connections_total,
                         "requests_in_flight", (json_int_t)st.requests_in_flight,
                         "requests_total", (json_int_t)st.requests_total));
    }
    return a;
}

json_t *keel_runtime_pools_json(const keel_runtime *rt)
{
    keel_pool *pools[MAX_POOLS];
    size_t n = keel_server_pools(rt->s, pools, MAX_POOLS);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        uint64_t q = keel_pool_queued(pools[i]), max = keel_pool_queue_max(pools[i]);
        json_array_append_new(
            a, json_pack("{s:s,s:i,s:I,s:I,s:I,s:I,s:f}", "pool", keel_pool_name(pools[i]),
                         "threads", (int)keel_pool_threads(pools[i]), "busy",
                         (json_int_t)keel_pool_busy(pools[i]), "queued", (json_int_t)q,
                         "queue_max", (json_int_t)max, "rejected",
                         (json_int_t)keel_pool_rejected(pools[i]), "saturation",
                         max ? (double)q / (double)max : 0.0));
    }
    return a;
}
