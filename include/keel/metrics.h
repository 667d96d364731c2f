/* keel/metrics.h — a Prometheus metrics registry with per-worker shards.
 *
 * Each metric family has one shard per worker: a worker only touches its
 * own shard (an uncontended lock), and a scrape merges the shards. Label
 * values must come from bounded sets (route templates, not raw paths).
 */
#ifndef KEEL_METRICS_H
#define KEEL_METRICS_H

#include "arena.h"
#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_metrics keel_metrics;
typedef struct keel_metric keel_metric;

typedef enum keel_metric_type {
    KEEL_COUNTER = 0,
    KEEL_GAUGE,
    KEEL_HISTOGRAM
} keel_metric_type;

/* A registry with `shards` shards (one per worker, plus one for other
 * threads: shard index `shards` is always valid and locked). */
keel_metrics *keel_metrics_new(unsigned shards);
void keel_metrics_free(keel_metrics *m);

/* Declares a family. label_names is NULL-terminated (or NULL for none);
 * buckets (histograms only) ascending, nbuckets > 0. Names are copied.
 * Returns NULL, declaring nothing, when the name is already declared or
 * is not a Prometheus name ([a-zA-Z_:][a-zA-Z0-9_:]*), or a label name is
 * invalid ([a-zA-Z_][a-zA-Z0-9_]*), reserved ("__..."; "le" in a
 * histogram) or repeated; the update functions ignore a NULL family.
 * keel_metrics_callback declares nothing in the same cases. */
keel_metric *keel_metrics_counter(keel_metrics *m, const char *name,
                                  const char *help, const char *const *label_names);
keel_metric *keel_metrics_gauge(keel_metrics *m, const char *name,
                                const char *help, const char *const *label_names);
keel_metric *keel_metrics_histogram(keel_metrics *m, const char *name,
                                    const char *help, const char *const *label_names,
                                    const double *buckets, size_t nbuckets);

/* The family declared under `name`, or NULL (callbacks included). */
keel_metric *keel_metrics_find(keel_metrics *m, const char *name);

/* A gauge or counter whose value is computed at scrape time. */
typedef double (*keel_metric_value_fn)(void *arg);
void keel_metrics_callback(keel_metrics *m, const char *name, const char *help,
                           keel_metric_type type, keel_metric_value_fn fn,
                           void *arg);

/* Updates one series; label_values has as many entries as label_names.
 * `shard` is the calling worker's id (keel_req_worker_id), or any value
 * >= the shard count from other threads. */
void keel_metric_add(keel_metric *mt, unsigned shard,
                     const char *const *label_values, double v);
void keel_metric_set(keel_metric *mt, unsigned shard,
                     const char *const *label_values, double v);
void keel_metric_observe(keel_metric *mt, unsigned shard,
                         const char *const *label_values, double v);

/* Creates the series of label_values at 0 (a histogram with empty
 * buckets) if it does not exist yet, so a scrape shows it before anything
 * is counted: an absent series makes rate() and alerts over it silently
 * empty. Declare every series whose label values are known at start-up
 * (a tier, an error kind, a breaker's states). A family without labels
 * has its one series from its declaration on. No-op for NULL. */
void keel_metric_declare(keel_metric *mt, const char *const *label_values);
/* keel_metric_declare for each value of the NULL-terminated `each` in
 * label position `at`, the other labels taken from label_values, which
 * has one entry per label of the family (the one at `at` is ignored), or
 * is NULL when the family has one label. */
void keel_metric_declare_each(keel_metric *mt, const char *const *label_values, size_t at,
                              const char *const *each);

/* Runs fn(arg) at the start of every keel_metrics_render and
 * keel_metrics_json, on the scraping thread: for labelled gauges whose
 * values are read at scrape time (keel_metric_set on any shard >= the
 * shard count). Add before the server starts. */
void keel_metrics_on_collect(keel_metrics *m, void (*fn)(void *arg), void *arg);

/* One series of a metric in one shard, looked up once (e.g. per route and
 * status, by a worker that keeps it) and then updated without building
 * and hashing its key: keel_metric_series_add / _observe do what
 * keel_metric_add / _observe do for the same shard and label values. The
 * series is created if needed (with value 0: get it after a first
 * keel_metric_add so a scrape never sees it empty). Owned by the metric
 * and valid for its lifetime; NULL when mt is NULL or a callback, and the
 * updates ignore NULL. */
typedef struct keel_metric_series keel_metric_series;
keel_metric_series *keel_metric_series_get(keel_metric *mt, unsigned shard,
                                           const char *const *label_values);
void keel_metric_series_add(keel_metric_series *s, double v);
void keel_metric_series_observe(keel_metric_series *s, double v);
/* The number of shards: the worker count given to keel_metrics_new, plus
 * one shared by every other thread. */
unsigned keel_metrics_shards(const keel_metrics *m);

/* Renders the text exposition format (version 0.0.4). */
void keel_metrics_render(keel_metrics *m, keel_buf *out);

/* The same as JSON ({"name": {"type":..., "series":[...]}}); new ref. */
struct json_t;
struct json_t *keel_metrics_json(keel_metrics *m);

/* Standard process metrics: process_cpu_seconds_total,
 * process_resident_memory_bytes, process_open_fds,
 * process_start_time_seconds, keel_build_info{version}. */
void keel_metrics_register_process(keel_metrics *m, const char *version);

/* The WebSocket transport's metrics (keel/ws.h), installed as the
 * server's observer: ws_connections, ws_messages_total{direction},
 * ws_bytes_total{direction}, ws_closes_total{code} (known codes at 0
 * from the start), ws_dropped_total{reason}, ws_outbound_queue_bytes.
 * Before keel_server_start; free after the server. */
struct keel_server;
typedef struct keel_ws_metrics keel_ws_metrics;
keel_ws_metrics *keel_ws_metrics_new(keel_metrics *m, struct keel_server *s);
void keel_ws_metrics_free(keel_ws_metrics *wm);

/* Default latency buckets in seconds (0.0005 .. 10). */
extern const double keel_latency_buckets[];
extern const size_t keel_latency_nbuckets;

#ifdef __cplusplus
}
#endif
#endif
