/* keel/alerts.h — alert rules over keel's own metrics: what a rule is,
 * how a window of metric snapshots becomes a value, and the state machine
 * of one alert (inactive -> pending -> firing -> resolved).
 *
 * This module is pure: it reads a metrics snapshot (keel_metrics_json)
 * and a rule's state, and says what changed and whom to tell. Where the
 * state is kept (a database), who evaluates (one instance, under a lock)
 * and how notifications travel (a webhook, a live push) is the caller's
 * business — the reference service does it in src/app/alerts.c.
 *
 *     keel_alert_rule rule;  keel_alert_rule_from_json(json, &rule, err, sizeof(err), &ptr);
 *     keel_alert_ring *ring = keel_alert_ring_new(&rule, interval_ms);
 *     every interval:
 *         json_t *snap = keel_metrics_json(m);
 *         keel_alert_ring_push(ring, &rule, snap, &env, now_ms);
 *         double v; int have = keel_alert_value(ring, &rule, now_ms, &v);
 *         keel_alert_notify n = keel_alert_step(&rule, &status, now_ms, have, v,
 *                                               rule_last_notified_ms, send_resolved);
 *
 * Thresholds have hysteresis: an alert becomes pending when the value
 * passes `trigger` and only clears once it is back past `clear` (for ">":
 * value <= clear, clear <= trigger). Without data (a window not filled
 * yet, a metric not exported) nothing changes: a restart neither resets a
 * `for` timer nor resolves a firing alert.
 */
#ifndef KEEL_ALERTS_H
#define KEEL_ALERTS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct json_t;

typedef enum keel_alert_kind {
    KEEL_ALERT_ERROR_RATE = 0, /* % of responses that are 5xx, over window_s, >= min_requests */
    KEEL_ALERT_LATENCY,        /* quantile of http_request_duration_seconds (s), >= min_requests */
    KEEL_ALERT_DB_ERRORS,      /* increase of db_errors_total over window_s */
    KEEL_ALERT_REDIS_DOWN,     /* redis_connections_ready (workers whose Redis is up) */
    KEEL_ALERT_WS_SURGE,       /* ws_connections (open WebSocket connections) */
    KEEL_ALERT_MEMORY,         /* RSS as % of MEMORY_LIMIT */
    KEEL_ALERT_POOL_SATURATION, /* busiest pool's % of threads busy, averaged over window_s */
    KEEL_ALERT_CUSTOM,         /* metric + labels + aggregation over window_s */
    KEEL_ALERT__NKINDS
} keel_alert_kind;

typedef enum keel_alert_agg {
    KEEL_ALERT_AGG_RATE = 0, /* per second increase of a counter (sum of matching series) */
    KEEL_ALERT_AGG_INCREASE, /* increase over the window */
    KEEL_ALERT_AGG_AVG,      /* mean of the samples in the window */
    KEEL_ALERT_AGG_MAX,      /* largest sample in the window */
    KEEL_ALERT_AGG_PERCENTILE, /* quantile of a histogram's observations in the window */
    KEEL_ALERT__NAGGS
} keel_alert_agg;

typedef enum keel_alert_cmp {
    KEEL_ALERT_GT = 0,
    KEEL_ALERT_GE,
    KEEL_ALERT_LT,
    KEEL_ALERT_LE
} keel_alert_cmp;

typedef enum keel_alert_severity {
    KEEL_ALERT_INFO = 0,
    KEEL_ALERT_WARNING,
    KEEL_ALERT_ERROR,
    KEEL_ALERT_CRITICAL
} keel_alert_severity;

#define KEEL_ALERT_ID_MAX 64
#define KEEL_ALERT_NAME_MAX 128
#define KEEL_ALERT_METRIC_MAX 128
#define KEEL_ALERT_LABELS_MAX 8

typedef struct keel_alert_label {
    char name[64];
    char value[128];
} keel_alert_label;

/* One rule. Times in milliseconds. */
typedef struct keel_alert_rule {
    char id[KEEL_ALERT_ID_MAX];
    char name[KEEL_ALERT_NAME_MAX];
    keel_alert_kind kind;
    keel_alert_severity severity;
    uint64_t for_ms;           /* pending this long before firing (0: at once) */
    double trigger, clear;     /* hysteresis: fire past trigger, clear past clear */
    keel_alert_cmp cmp;
    uint64_t window_ms;        /* the window of rates, increases, averages */
    uint64_t min_requests;     /* error rate / latency: fewer in the window is no data */
    double quantile;           /* latency / percentile: 0 < q < 1 (default 0.95) */
    char metric[KEEL_ALERT_METRIC_MAX]; /* custom */
    keel_alert_label labels[KEEL_ALERT_LABELS_MAX]; /* custom: series must carry these */
    size_t nlabels;
    keel_alert_agg agg;        /* custom */
    uint64_t keep_firing_for_ms; /* stay firing this long after the condition cleared */
    uint64_t cooldown_ms;      /* between two notifications of the rule */
    uint64_t repeat_ms;        /* re-notify a firing, unacknowledged alert (0: never) */
    int enabled, builtin;
} keel_alert_rule;

const char *keel_alert_kind_name(keel_alert_kind k);
const char *keel_alert_severity_name(keel_alert_severity s);
const char *keel_alert_cmp_name(keel_alert_cmp c);
const char *keel_alert_agg_name(keel_alert_agg a);

/* Reads a rule from its JSON (the admin API's shape: {id, name, kind,
 * severity, for_s, trigger, clear, window_s, min_requests, quantile,
 * metric, labels, aggregation, comparison, keep_firing_for_s, cooldown_s,
 * repeat_s, enabled}); missing fields take the kind's defaults, `clear`
 * defaults to `trigger`. 0, or KEEL_EINVAL with a message in err and the
 * JSON pointer of the faulty field in *pointer (static). `builtin` is
 * not read (the caller decides). */
int keel_alert_rule_from_json(const struct json_t *j, keel_alert_rule *out, char *err,
                              size_t cap, const char **pointer);
/* The rule as JSON (new reference), the shape above with builtin. */
struct json_t *keel_alert_rule_to_json(const keel_alert_rule *r);

/* The built-in rules (error rate > 1 % with >= 100 requests over 5 min;
 * p95 > 500 ms with >= 100 requests over 5 min; > 10 database errors in
 * 5 min; Redis down; > 1000 WebSocket connections; RSS > 80 % of
 * MEMORY_LIMIT; work pools > 90 % busy over 5 min). Returns how many;
 * *out points to a static table. */
size_t keel_alert_builtin_rules(const keel_alert_rule **out);

/* ---------------------------------------------------------------- windows */

/* What a sample needs besides the metrics: MEMORY_LIMIT in bytes (0:
 * unknown, the memory rule has no data). */
typedef struct keel_alert_env {
    uint64_t memory_limit;
} keel_alert_env;

/* The snapshots one rule keeps to evaluate its window: enough for
 * window_ms at interval_ms, at most 512 (a longer window keeps one sample
 * per window/509 and refreshes the newest in place between them).
 * keel_alert_ring_free(NULL) is a no-op. */
typedef struct keel_alert_ring keel_alert_ring;
keel_alert_ring *keel_alert_ring_new(const keel_alert_rule *r, uint64_t interval_ms);
void keel_alert_ring_free(keel_alert_ring *ring);
/* Takes the rule's figures from a keel_metrics_json snapshot at now_ms
 * and keeps them (the oldest falls out). A metric missing from the
 * snapshot is a gap: no value from it. */
void keel_alert_ring_push(keel_alert_ring *ring, const keel_alert_rule *r,
                          const struct json_t *snapshot, const keel_alert_env *env,
                          int64_t now_ms);
/* The rule's value over its window ending at now_ms: 1 with *value, or
 * 0 when there is no data (too few samples, fewer than min_requests, a
 * missing metric). */
int keel_alert_value(const keel_alert_ring *ring, const keel_alert_rule *r, int64_t now_ms,
                     double *value);

/* The q-quantile (0..1) of observations counted per bucket: bounds[i]
 * ascending upper bounds (the last may be +Inf), counts[i] cumulative.
 * Linear inside a bucket, as Prometheus's histogram_quantile. 0 with
 * *out, or -1 when there is no observation. */
int keel_alert_quantile(double q, const double *bounds, const double *counts, size_t n,
                        double *out);

/* ---------------------------------------------------------------- state */

typedef enum keel_alert_state {
    KEEL_ALERT_INACTIVE = 0,
    KEEL_ALERT_PENDING,
    KEEL_ALERT_FIRING,
    KEEL_ALERT_RESOLVED
} keel_alert_state;
const char *keel_alert_state_name(keel_alert_state s);
/* "pending" -> KEEL_ALERT_PENDING...; -1 when unknown. */
int keel_alert_state_parse(const char *s);

/* The state of a rule's current episode (what is persisted). Times in
 * Unix ms, 0 for never. */
typedef struct keel_alert_status {
    keel_alert_state state;
    double value;
    int64_t started_at;       /* became pending */
    int64_t fired_at;
    int64_t resolved_at;
    int64_t last_active_at;   /* the condition last held */
    int64_t last_notified_at; /* the episode's last firing/repeat notification */
    int64_t acknowledged_at;
} keel_alert_status;

typedef enum keel_alert_notify {
    KEEL_ALERT_NOTIFY_NONE = 0,
    KEEL_ALERT_NOTIFY_FIRING,
    KEEL_ALERT_NOTIFY_REPEAT,
    KEEL_ALERT_NOTIFY_RESOLVED
} keel_alert_notify;

/* Whether value passes the trigger (armed: the alert is inactive or
 * resolved) or has not yet come back past clear (not armed). */
int keel_alert_condition(const keel_alert_rule *r, int armed, double value);

/* One evaluation at now_ms: moves st along (inactive/resolved ->
 * pending -> firing -> resolved; a pending alert that clears goes back to
 * inactive without a word) and says whom to tell. rule_last_notified is
 * the rule's last notification of any episode (the cooldown); a firing
 * notification held back by the cooldown is sent once it has passed.
 * RESOLVED is only told when the episode's firing was (and send_resolved).
 * *changed (may be NULL) is set when st changed in a way worth
 * persisting. have_value 0: nothing changes. */
keel_alert_notify keel_alert_step(const keel_alert_rule *r, keel_alert_status *st,
                                  int64_t now_ms, int have_value, double value,
                                  int64_t rule_last_notified, int send_resolved, int *changed);

#ifdef __cplusplus
}
#endif
#endif
