/* keel/runtime.h — the server's own vital signs as metrics: event-loop lag
 * per worker (a libuv timer on each loop that measures how late it fires),
 * work-pool queue depth, busy threads and queue wait time per pool.
 *
 * Metrics (cardinality: workers x 1 and pools x 1, both fixed at start):
 *   event_loop_delay_seconds{worker}        histogram of timer lateness
 *   event_loop_worker_lag_seconds{worker}   gauge, the last measurement
 *   work_pool_queue_depth{pool}             gauge, jobs waiting
 *   work_pool_busy_threads{pool}            gauge, threads running a job
 *   work_pool_threads{pool}                 gauge, threads of the pool
 *   work_pool_wait_seconds{pool}            histogram, time in the queue
 */
#ifndef KEEL_RUNTIME_H
#define KEEL_RUNTIME_H

#include "metrics.h"
#include "server.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How often each worker's lag timer fires. */
#define KEEL_LOOP_LAG_INTERVAL_MS 100

typedef struct keel_runtime keel_runtime;

/* Registers the metrics above in m (may be NULL: measurements only), a
 * worker hook that starts the lag timer on every loop and the work-pool
 * observer of s. Call before keel_server_start; free after the server. */
keel_runtime *keel_runtime_new(keel_server *s, keel_metrics *m);
void keel_runtime_free(keel_runtime *rt);

/* Worker i's last measured loop lag and the largest since start, in
 * microseconds; 0 for an unknown worker. Any thread. */
uint64_t keel_runtime_loop_lag_us(const keel_runtime *rt, unsigned worker);
uint64_t keel_runtime_loop_lag_max_us(const keel_runtime *rt, unsigned worker);

/* [{"worker":0,"loop_lag_ms":..,"loop_lag_max_ms":..,"connections_open":..,
 *   "connections_total":..,"requests_in_flight":..,"requests_total":..}, ...];
 * new ref. Any thread. */
struct json_t;
struct json_t *keel_runtime_workers_json(const keel_runtime *rt);
/* [{"pool":"work","threads":..,"busy":..,"queued":..,"queue_max":..,
 *   "rejected":..,"saturation":0..1}, ...]; new ref. */
struct json_t *keel_runtime_pools_json(const keel_runtime *rt);

#ifdef __cplusplus
}
#endif
#endif
