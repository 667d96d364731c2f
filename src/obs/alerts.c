/* alerts.c — alert rules, their windows and their state machine
 * (keel/alerts.h).
 *
 * A window is a ring of small samples, one per evaluation: the cumulative
 * figures a rule needs (two counters, or a histogram's cumulative bucket
 * counts) taken from a metrics snapshot. Rates and increases are the
 * difference between the newest sample and the oldest one still inside
 * the window (a counter that went down was reset: the newest value is the
 * increase); averages and maxima run over the samples in the window.
 */
#include "keel/alerts.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/common.h"

/* ---------------------------------------------------------------- names */

static const char *const KIND_NAMES[] = {"error_rate", "latency",  "db_errors",       "redis_down",
                                         "ws_surge",   "memory",   "pool_saturation", "custom"};
static const char *const SEV_NAMES[] = {"info", "warning", "error", "critical"};
static const char *const CMP_NAMES[] = {">", ">=", "<", "<="};
static const char *const AGG_NAMES[] = {"rate", "increase", "avg", "max", "percentile"};
static const char *const STATE_NAMES[] = {"inactive", "pending", "firing", "resolved"};

const char *keel_alert_kind_name(keel_alert_kind k)
{
    return (unsigned)k < KEEL_ALERT__NKINDS ? KIND_NAMES[k] : "?";
}
const char *keel_alert_severity_name(keel_alert_severity s)
{
    return (unsigned)s <= KEEL_ALERT_CRITICAL ? SEV_NAMES[s] : "?";
}
const char *keel_alert_cmp_name(keel_alert_cmp c)
{
    return (unsigned)c <= KEEL_ALERT_LE ? CMP_NAMES[c] : "?";
}
const char *keel_alert_agg_name(keel_alert_agg a)
{
    return (unsigned)a < KEEL_ALERT__NAGGS ? AGG_NAMES[a] : "?";
}
const char *keel_alert_state_name(keel_alert_state s)
{
    return (unsigned)s <= KEEL_ALERT_RESOLVED ? STATE_NAMES[s] : "?";
}
int keel_alert_state_parse(const char *s)
{
    for (int i = 0; s && i < 4; i++)
        if (!strcmp(s, STATE_NAMES[i]))
            return i;
    return -1;
}

static int find_name(const char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; s && i < n; i++)
        if (!strcmp(names[i], s))
            return (int)i;
    return -1;
}

/* ---------------------------------------------------------------- built-in rules */

#define MIN5 (300 * 1000ull)
static const keel_alert_rule BUILTIN[] = {
    {.id = "error_rate", .name = "High error rate (5xx)", .kind = KEEL_ALERT_ERROR_RATE,
     .severity = KEEL_ALERT_ERROR, .for_ms = 60000, .trigger = 1, .clear = 0.5,
     .cmp = KEEL_ALERT_GT, .window_ms = MIN5, .min_requests = 100, .quantile = 0.95,
     .cooldown_ms = MIN5, .repeat_ms = 4 * 3600 * 1000ull, .enabled = 1, .builtin = 1},
    {.id = "latency_p95", .name = "High p95 latency", .kind = KEEL_ALERT_LATENCY,
     .severity = KEEL_ALERT_WARNING, .for_ms = 60000, .trigger = 0.5, .clear = 0.4,
     .cmp = KEEL_ALERT_GT, .window_ms = MIN5, .min_requests = 100, .quantile = 0.95,
     .cooldown_ms = MIN5, .repeat_ms = 4 * 3600 * 1000ull, .enabled = 1, .builtin = 1},
    {.id = "db_errors", .name = "Database errors", .kind = KEEL_ALERT_DB_ERRORS,
     .severity = KEEL_ALERT_ERROR, .for_ms = 0, .trigger = 10, .clear = 10,
     .cmp = KEEL_ALERT_GT, .window_ms = MIN5, .quantile = 0.95, .cooldown_ms = MIN5,
     .repeat_ms = 4 * 3600 * 1000ull, .enabled = 1, .builtin = 1},
    {.id = "redis_down", .name = "Redis down", .kind = KEEL_ALERT_REDIS_DOWN,
     .severity = KEEL_ALERT_CRITICAL, .for_ms = 30000, .trigger = 1, .clear = 1,
     .cmp = KEEL_ALERT_LT, .window_ms = 60000, .quantile = 0.95, .cooldown_ms = MIN5,
     .repeat_ms = 3600 * 1000ull, .enabled = 1, .builtin = 1},
    {.id = "ws_surge", .name = "WebSocket connection surge", .kind = KEEL_ALERT_WS_SURGE,
     .severity = KEEL_ALERT_WARNING, .for_ms = 60000, .trigger = 1000, .clear = 900,
     .cmp = KEEL_ALERT_GT, .window_ms = 60000, .quantile = 0.95, .cooldown_ms = MIN5,
     .repeat_ms = 4 * 3600 * 1000ull, .enabled = 1, .builtin = 1},
    {.id = "memory", .name = "Memory (RSS) near MEMORY_LIMIT", .kind = KEEL_ALERT_MEMORY,
     .severity = KEEL_ALERT_CRITICAL, .for_ms = 60000, .trigger = 80, .clear = 75,
     .cmp = KEEL_ALERT_GT, .window_ms = 60000, .quantile = 0.95, .cooldown_ms = MIN5,
     .repeat_ms = 3600 * 1000ull, .enabled = 1, .builtin = 1},
    {.id = "pool_saturation", .name = "Work pool saturated",
     .kind = KEEL_ALERT_POOL_SATURATION, .severity = KEEL_ALERT_WARNING, .for_ms = 60000,
     .trigger = 90, .clear = 70, .cmp = KEEL_ALERT_GT, .window_ms = MIN5, .quantile = 0.95,
     .cooldown_ms = MIN5, .repeat_ms = 4 * 3600 * 1000ull, .enabled = 1, .builtin = 1},
};

size_t keel_alert_builtin_rules(const keel_alert_rule **out)
{
    *out = BUILTIN;
    return sizeof(BUILTIN) / sizeof(BUILTIN[0]);
}

/* ---------------------------------------------------------------- JSON */

static int bad(char *err, size_t cap, const char **pointer, const char *ptr, const char *msg)
{
    snprintf(err, cap, "%s", msg);
    *pointer = ptr;
    return KEEL_EINVAL;
}

/* A non-negative number of seconds (integer or real) into ms. */
static int get_secs(const json_t *j, const char *key, uint64_t *out, double max_s)
{
    json_t *v = json_object_get(j, key);
    if (!v)
        return 0;
    if (!json_is_number(v))
        return -1;
    double d = json_number_value(v);
    if (!(d >= 0) || d > max_s)
        return -1;
    *out = (uint64_t)(d * 1000.0 + 0.5);
    return 0;
}

static int get_str(const json_t *j, const char *key, char *out, size_t cap, int required)
{
    json_t *v = json_object_get(j, key);
    if (!v)
        return required ? -1 : 0;
    const char *s = json_string_value(v);
    if (!s || !*s || strlen(s) >= cap)
        return -1;
    memcpy(out, s, strlen(s) + 1);
    return 0;
}

static int metric_name_ok(const char *s)
{
    if (!*s)
        return 0;
    for (const char *p = s; *p; p++) {
        int alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' || *p == ':';
        if (!alpha && !(p > s && *p >= '0' && *p <= '9'))
            return 0;
    }
    return 1;
}

int keel_alert_rule_from_json(const json_t *j, keel_alert_rule *out, char *err, size_t cap,
                              const char **pointer)
{
    if (!json_is_object(j))
        return bad(err, cap, pointer, "", "a rule is a JSON object");
    keel_alert_rule r;
    memset(&r, 0, sizeof(r));
    const char *kind = json_string_value(json_object_get(j, "kind"));
    int k = find_name(KIND_NAMES, KEEL_ALERT__NKINDS, kind);
    if (k < 0)
        return bad(err, cap, pointer, "/kind",
                   "must be one of error_rate, latency, db_errors, redis_down, ws_surge, "
                   "memory, pool_saturation, custom");
    /* a kind's defaults: its built-in rule's (custom: > 0 over 5 min) */
    const keel_alert_rule *b = NULL;
    for (size_t i = 0; i < sizeof(BUILTIN) / sizeof(BUILTIN[0]); i++)
        if ((int)BUILTIN[i].kind == k)
            b = &BUILTIN[i];
    if (b)
        r = *b;
    else {
        r.severity = KEEL_ALERT_WARNING;
        r.window_ms = MIN5;
        r.quantile = 0.95;
        r.cooldown_ms = MIN5;
        r.cmp = KEEL_ALERT_GT;
    }
    r.kind = (keel_alert_kind)k;
    r.builtin = 0;
    r.enabled = 1;
    r.id[0] = 0;
    const char *given_id = json_string_value(json_object_get(j, "id"));
    if (given_id && !*given_id)
        ; /* "" is no id: the caller picks one */
    else if (get_str(j, "id", r.id, sizeof(r.id), 0) < 0)
        return bad(err, cap, pointer, "/id", "must be a non-empty string of at most 63 bytes");
    for (const char *p = r.id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '.'))
            return bad(err, cap, pointer, "/id", "only letters, digits, '_', '-' and '.'");
    if (get_str(j, "name", r.name, sizeof(r.name), 1) < 0)
        return bad(err, cap, pointer, "/name", "required: a non-empty string of at most 127 "
                                                "bytes");
    json_t *v;
    if ((v = json_object_get(j, "severity"))) {
        int s = find_name(SEV_NAMES, 4, json_string_value(v));
        if (s < 0)
            return bad(err, cap, pointer, "/severity",
                       "must be one of info, warning, error, critical");
        r.severity = (keel_alert_severity)s;
    }
    if ((v = json_object_get(j, "comparison"))) {
        int c = find_name(CMP_NAMES, 4, json_string_value(v));
        if (c < 0)
            return bad(err, cap, pointer, "/comparison", "must be one of >, >=, <, <=");
        r.cmp = (keel_alert_cmp)c;
    }
    const double day = 86400.0 * 7;
    if (get_secs(j, "for_s", &r.for_ms, day) < 0)
        return bad(err, cap, pointer, "/for_s", "a number of seconds, 0 .. 604800");
    if (get_secs(j, "window_s", &r.window_ms, day) < 0 || r.window_ms < 100)
        return bad(err, cap, pointer, "/window_s", "a number of seconds, 0.1 .. 604800");
    if (get_secs(j, "keep_firing_for_s", &r.keep_firing_for_ms, day) < 0)
        return bad(err, cap, pointer, "/keep_firing_for_s", "a number of seconds, 0 .. 604800");
    if (get_secs(j, "cooldown_s", &r.cooldown_ms, day) < 0)
        return bad(err, cap, pointer, "/cooldown_s", "a number of seconds, 0 .. 604800");
    if (get_secs(j, "repeat_s", &r.repeat_ms, day) < 0)
        return bad(err, cap, pointer, "/repeat_s", "a number of seconds, 0 .. 604800");
    int has_trigger = 0;
    if ((v = json_object_get(j, "trigger"))) {
        if (!json_is_number(v) || !isfinite(json_number_value(v)))
            return bad(err, cap, pointer, "/trigger", "must be a number");
        r.trigger = json_number_value(v);
        has_trigger = 1;
    } else if (!b) {
        return bad(err, cap, pointer, "/trigger", "required for a custom rule");
    }
    if ((v = json_object_get(j, "clear"))) {
        if (!json_is_number(v) || !isfinite(json_number_value(v)))
            return bad(err, cap, pointer, "/clear", "must be a number");
        r.clear = json_number_value(v);
    } else if (has_trigger) {
        r.clear = r.trigger;
    }
    int up = r.cmp == KEEL_ALERT_GT || r.cmp == KEEL_ALERT_GE;
    if (up ? r.clear > r.trigger : r.clear < r.trigger)
        return bad(err, cap, pointer, "/clear",
                   up ? "must be at most trigger (hysteresis: clear below the trigger)"
                      : "must be at least trigger (hysteresis: clear above the trigger)");
    if ((v = json_object_get(j, "min_requests"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > 1000000000)
            return bad(err, cap, pointer, "/min_requests", "an integer, 0 .. 1000000000");
        r.min_requests = (uint64_t)json_integer_value(v);
    }
    if ((v = json_object_get(j, "quantile"))) {
        double q = json_number_value(v);
        if (!json_is_number(v) || !(q > 0 && q < 1))
            return bad(err, cap, pointer, "/quantile", "a number between 0 and 1 (exclusive)");
        r.quantile = q;
    }
    if ((v = json_object_get(j, "enabled"))) {
        if (!json_is_boolean(v))
            return bad(err, cap, pointer, "/enabled", "must be true or false");
        r.enabled = json_is_true(v);
    }
    if (r.kind == KEEL_ALERT_CUSTOM) {
        if (get_str(j, "metric", r.metric, sizeof(r.metric), 1) < 0 || !metric_name_ok(r.metric))
            return bad(err, cap, pointer, "/metric",
                       "required for a custom rule: a metric family name");
        const char *agg = json_string_value(json_object_get(j, "aggregation"));
        int a = find_name(AGG_NAMES, KEEL_ALERT__NAGGS, agg);
        if (a < 0)
            return bad(err, cap, pointer, "/aggregation",
                       "required for a custom rule: rate, increase, avg, max or percentile");
        r.agg = (keel_alert_agg)a;
        json_t *labels = json_object_get(j, "labels");
        if (labels && !json_is_null(labels)) {
            if (!json_is_object(labels) || json_object_size(labels) > KEEL_ALERT_LABELS_MAX)
                return bad(err, cap, pointer, "/labels",
                           "an object of at most 8 label: value strings");
            const char *ln;
            json_t *lv;
            json_object_foreach(labels, ln, lv) {
                const char *s = json_string_value(lv);
                if (!s || strlen(ln) >= sizeof(r.labels[0].name) || !metric_name_ok(ln) ||
                    strlen(s) >= sizeof(r.labels[0].value))
                    return bad(err, cap, pointer, "/labels",
                               "label names are metric label names, values strings "
                               "of at most 127 bytes");
                snprintf(r.labels[r.nlabels].name, sizeof(r.labels[0].name), "%s", ln);
                snprintf(r.labels[r.nlabels].value, sizeof(r.labels[0].value), "%s", s);
                r.nlabels++;
            }
        }
    } else if (json_object_get(j, "metric") && !json_is_null(json_object_get(j, "metric"))) {
        return bad(err, cap, pointer, "/metric", "only a custom rule names a metric");
    }
    *out = r;
    return 0;
}

json_t *keel_alert_rule_to_json(const keel_alert_rule *r)
{
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:f,s:f,s:f,s:f,s:I,s:f,s:s,s:f,s:f,s:f,s:b,s:b}",
                          "id", r->id, "name", r->name, "kind", keel_alert_kind_name(r->kind),
                          "severity", keel_alert_severity_name(r->severity), "for_s",
                          (double)r->for_ms / 1000.0, "trigger", r->trigger, "clear", r->clear,
                          "window_s", (double)r->window_ms / 1000.0, "min_requests",
                          (json_int_t)r->min_requests, "quantile", r->quantile, "comparison",
                          keel_alert_cmp_name(r->cmp), "keep_firing_for_s",
                          (double)r->keep_firing_for_ms / 1000.0, "cooldown_s",
                          (double)r->cooldown_ms / 1000.0, "repeat_s",
                          (double)r->repeat_ms / 1000.0, "enabled", r->enabled, "builtin",
                          r->builtin);
    if (r->kind == KEEL_ALERT_CUSTOM) {
        json_t *l = json_object();
        for (size_t i = 0; i < r->nlabels; i++)
            json_object_set_new(l, r->labels[i].name, json_string(r->labels[i].value));
        json_object_set_new(o, "metric", json_string(r->metric));
        json_object_set_new(o, "labels", l);
        json_object_set_new(o, "aggregation", json_string(keel_alert_agg_name(r->agg)));
    } else {
        json_object_set_new(o, "metric", json_null());
        json_object_set_new(o, "labels", json_null());
        json_object_set_new(o, "aggregation", json_null());
    }
    return o;
}

/* ---------------------------------------------------------------- samples */

#define MAX_BUCKETS 64

typedef struct sample {
    int64_t t;
    int ok;  /* the metric was there */
    double a, b;
    size_t nb;
    double bounds[MAX_BUCKETS];
    double counts[MAX_BUCKETS]; /* cumulative */
} sample;

/* At most this many samples per rule: a long window at a short interval
 * keeps one sample per window/RING_MAX instead (the newest is still
 * refreshed every push). */
#define RING_MAX 512

struct keel_alert_ring {
    sample *s;
    size_t cap, n, head; /* head: where the next sample goes */
    uint64_t gap_ms;     /* least time between two kept samples */
};

static const sample *nth(const keel_alert_ring *ring, size_t i);

keel_alert_ring *keel_alert_ring_new(const keel_alert_rule *r, uint64_t interval_ms)
{
    if (!interval_ms)
        interval_ms = 1000;
    uint64_t cap = r->window_ms / interval_ms + 3;
    keel_alert_ring *ring = keel_calloc(1, sizeof(*ring));
    if (cap > RING_MAX) {
        cap = RING_MAX;
        ring->gap_ms = r->window_ms / (RING_MAX - 3);
    }
    ring->cap = (size_t)cap;
    ring->s = keel_calloc(ring->cap, sizeof(sample));
    return ring;
}

void keel_alert_ring_free(keel_alert_ring *ring)
{
    if (!ring)
        return;
    keel_free(ring->s);
    keel_free(ring);
}

static const json_t *series_of(const json_t *snap, const char *name)
{
    return json_object_get(json_object_get(snap, name), "series");
}

static int labels_match(const json_t *labels, const keel_alert_rule *r)
{
    for (size_t i = 0; i < r->nlabels; i++) {
        const char *v = json_string_value(json_object_get(labels, r->labels[i].name));
        if (!v || strcmp(v, r->labels[i].value))
            return 0;
    }
    return 1;
}

/* Sum of the series' values (or a histogram's counts when field is
 * "count"); label/value (may be NULL) selects; 0 when the family is
 * missing. */
static int sum_series(const json_t *snap, const char *name, const char *label,
                      const char *value, const keel_alert_rule *match, double *out)
{
    const json_t *arr = series_of(snap, name);
    if (!json_is_array(arr))
        return 0;
    double sum = 0;
    size_t i;
    const json_t *s;
    json_array_foreach(arr, i, s) {
        const json_t *labels = json_object_get(s, "labels");
        if (label && (!json_string_value(json_object_get(labels, label)) ||
                      strcmp(json_string_value(json_object_get(labels, label)), value)))
            continue;
        if (match && !labels_match(labels, match))
            continue;
        json_t *v = json_object_get(s, "value");
        if (!v)
            v = json_object_get(s, "count");
        sum += json_number_value(v);
    }
    *out = sum;
    return 1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Merges the buckets of every matching series of a histogram family. */
static int merge_hist(const json_t *snap, const char *name, const keel_alert_rule *match,
                      sample *out)
{
    const json_t *arr = series_of(snap, name);
    if (!json_is_array(arr))
        return 0;
    out->nb = 0; /* a family without series yet: no observation (zero buckets) */
    size_t i;
    const json_t *s;
    json_array_foreach(arr, i, s) {
        if (match && !labels_match(json_object_get(s, "labels"), match))
            continue;
        const json_t *bk = json_object_get(s, "buckets");
        if (!json_is_object(bk))
            continue;
        if (!out->nb) { /* the bounds, from the first series (a family shares them) */
            const char *le;
            json_t *c;
            json_object_foreach((json_t *)bk, le, c) {
                if (out->nb == MAX_BUCKETS)
                    break;
                out->bounds[out->nb++] = strcmp(le, "+Inf") ? strtod(le, NULL) : INFINITY;
            }
            qsort(out->bounds, out->nb, sizeof(double), cmp_double);
            memset(out->counts, 0, sizeof(out->counts));
        }
        for (size_t k = 0; k < out->nb; k++) {
            char le[32];
            if (isinf(out->bounds[k]))
                snprintf(le, sizeof(le), "+Inf");
            else
                snprintf(le, sizeof(le), "%g", out->bounds[k]);
            out->counts[k] += json_number_value(json_object_get(bk, le));
        }
    }
    return 1;
}

void keel_alert_ring_push(keel_alert_ring *ring, const keel_alert_rule *r, const json_t *snap,
                          const keel_alert_env *env, int64_t now_ms)
{
    /* the newest sample is kept once it is gap_ms past the one before it;
     * until then each push refreshes it in place */
    int refresh = ring->gap_ms && ring->n >= 2 && now_ms - nth(ring, 1)->t < (int64_t)ring->gap_ms;
    size_t at = refresh ? (ring->head + ring->cap - 1) % ring->cap : ring->head;
    sample *s = &ring->s[at];
    memset(s, 0, offsetof(sample, bounds));
    s->t = now_ms;
    switch (r->kind) {
    case KEEL_ALERT_ERROR_RATE:
        s->ok = sum_series(snap, "http_responses_total", NULL, NULL, NULL, &s->a) &&
                sum_series(snap, "http_responses_total", "class", "5xx", NULL, &s->b);
        break;
    case KEEL_ALERT_LATENCY:
        s->ok = merge_hist(snap, "http_request_duration_seconds", NULL, s);
        break;
    case KEEL_ALERT_DB_ERRORS:
        s->ok = sum_series(snap, "db_errors_total", NULL, NULL, NULL, &s->a);
        break;
    case KEEL_ALERT_REDIS_DOWN:
        s->ok = sum_series(snap, "redis_connections_ready", NULL, NULL, NULL, &s->a);
        break;
    case KEEL_ALERT_WS_SURGE:
        s->ok = sum_series(snap, "ws_connections", NULL, NULL, NULL, &s->a);
        break;
    case KEEL_ALERT_MEMORY:
        s->ok = env && env->memory_limit &&
                sum_series(snap, "process_resident_memory_bytes", NULL, NULL, NULL, &s->a);
        if (s->ok)
            s->a = s->a * 100.0 / (double)env->memory_limit;
        break;
    case KEEL_ALERT_POOL_SATURATION: {
        const json_t *busy = series_of(snap, "work_pool_busy_threads");
        const json_t *threads = series_of(snap, "work_pool_threads");
        size_t i;
        const json_t *b;
        s->ok = json_is_array(busy) && json_is_array(threads);
        json_array_foreach(s->ok ? busy : NULL, i, b) {
            const char *pool = json_string_value(json_object_get(json_object_get(b, "labels"),
                                                                 "pool"));
            double n = 0;
            if (pool && sum_series(snap, "work_pool_threads", "pool", pool, NULL, &n) && n > 0) {
                double pct = json_number_value(json_object_get(b, "value")) * 100.0 / n;
                if (pct > s->a)
                    s->a = pct;
            }
        }
        break;
    }
    case KEEL_ALERT_CUSTOM:
    default:
        if (r->agg == KEEL_ALERT_AGG_PERCENTILE)
            s->ok = merge_hist(snap, r->metric, r, s);
        else
            s->ok = sum_series(snap, r->metric, NULL, NULL, r, &s->a);
        break;
    }
    if (refresh)
        return;
    ring->head = (ring->head + 1) % ring->cap;
    if (ring->n < ring->cap)
        ring->n++;
}

/* The i-th newest sample (0: the newest). */
static const sample *nth(const keel_alert_ring *ring, size_t i)
{
    return &ring->s[(ring->head + ring->cap - 1 - i) % ring->cap];
}

int keel_alert_quantile(double q, const double *bounds, const double *counts, size_t n,
                        double *out)
{
    if (!n || counts[n - 1] <= 0)
        return -1;
    double rank = q * counts[n - 1];
    size_t i = 0;
    while (i < n - 1 && counts[i] < rank)
        i++;
    double lo = i ? bounds[i - 1] : 0, hi = bounds[i];
    double below = i ? counts[i - 1] : 0, in = counts[i] - below;
    if (isinf(hi)) { /* the +Inf bucket: the highest finite bound, as Prometheus */
        *out = lo;
        return 0;
    }
    *out = in > 0 ? lo + (hi - lo) * (rank - below) / in : hi;
    return 0;
}

static double delta(double newer, double older)
{
    return newer >= older ? newer - older : newer; /* a reset counter starts again */
}

int keel_alert_value(const keel_alert_ring *ring, const keel_alert_rule *r, int64_t now_ms,
                     double *value)
{
    if (!ring || !ring->n)
        return 0;
    const sample *newest = nth(ring, 0);
    if (!newest->ok)
        return 0;
    /* the oldest sample inside the window (and usable), for differences */
    const sample *oldest = NULL;
    double sum = 0, max = -INFINITY;
    size_t count = 0;
    for (size_t i = 0; i < ring->n; i++) {
        const sample *s = nth(ring, i);
        if (s->t < now_ms - (int64_t)r->window_ms)
            break;
        if (!s->ok)
            continue;
        oldest = s;
        sum += s->a;
        if (s->a > max)
            max = s->a;
        count++;
    }
    int is_delta = 0;
    switch (r->kind) {
    case KEEL_ALERT_ERROR_RATE:
    case KEEL_ALERT_LATENCY:
    case KEEL_ALERT_DB_ERRORS:
        is_delta = 1;
        break;
    case KEEL_ALERT_CUSTOM:
        is_delta = r->agg == KEEL_ALERT_AGG_RATE || r->agg == KEEL_ALERT_AGG_INCREASE ||
                   r->agg == KEEL_ALERT_AGG_PERCENTILE;
        break;
    default:
        break;
    }
    if (is_delta && (!oldest || oldest == newest))
        return 0; /* one sample is no difference */
    switch (r->kind) {
    case KEEL_ALERT_ERROR_RATE: {
        double total = delta(newest->a, oldest->a), errors = delta(newest->b, oldest->b);
        if (total < (double)r->min_requests || total <= 0)
            return 0;
        *value = errors * 100.0 / total;
        return 1;
    }
    case KEEL_ALERT_DB_ERRORS:
        *value = delta(newest->a, oldest->a);
        return 1;
    case KEEL_ALERT_REDIS_DOWN:
    case KEEL_ALERT_WS_SURGE:
    case KEEL_ALERT_MEMORY:
        *value = newest->a;
        return 1;
    case KEEL_ALERT_POOL_SATURATION:
        *value = sum / (double)count;
        return 1;
    case KEEL_ALERT_LATENCY:
    case KEEL_ALERT_CUSTOM:
    default:
        break;
    }
    if (r->kind == KEEL_ALERT_LATENCY || r->agg == KEEL_ALERT_AGG_PERCENTILE) {
        if (oldest->nb && newest->nb != oldest->nb)
            return 0;
        double d[MAX_BUCKETS];
        for (size_t k = 0; k < newest->nb; k++) /* oldest without series: all zero */
            d[k] = delta(newest->counts[k], oldest->nb ? oldest->counts[k] : 0);
        if (!newest->nb || d[newest->nb - 1] < (double)r->min_requests)
            return 0;
        return keel_alert_quantile(r->quantile, newest->bounds, d, newest->nb, value) == 0;
    }
    switch (r->agg) {
    case KEEL_ALERT_AGG_RATE: {
        double secs = (double)(newest->t - oldest->t) / 1000.0;
        if (secs <= 0)
            return 0;
        *value = delta(newest->a, oldest->a) / secs;
        return 1;
    }
    case KEEL_ALERT_AGG_INCREASE:
        *value = delta(newest->a, oldest->a);
        return 1;
    case KEEL_ALERT_AGG_AVG:
        *value = sum / (double)count;
        return 1;
    case KEEL_ALERT_AGG_MAX:
    default:
        *value = max;
        return 1;
    }
}

/* ---------------------------------------------------------------- state machine */

static int passes(keel_alert_cmp c, double v, double t)
{
    switch (c) {
    case KEEL_ALERT_GT:
        return v > t;
    case KEEL_ALERT_GE:
        return v >= t;
    case KEEL_ALERT_LT:
        return v < t;
    case KEEL_ALERT_LE:
    default:
        return v <= t;
    }
}

int keel_alert_condition(const keel_alert_rule *r, int armed, double value)
{
    if (armed)
        return passes(r->cmp, value, r->trigger);
    /* active until the value is back past clear: for ">" that is
     * value <= clear, i.e. still active while value > clear */
    return passes(r->cmp, value, r->clear);
}

static int cooled(const keel_alert_rule *r, int64_t now, int64_t last)
{
    return !last || r->cooldown_ms == 0 || now - last >= (int64_t)r->cooldown_ms;
}

keel_alert_notify keel_alert_step(const keel_alert_rule *r, keel_alert_status *st, int64_t now,
                                  int have_value, double value, int64_t rule_last_notified,
                                  int send_resolved, int *changed)
{
    int ch = 0;
    keel_alert_notify n = KEEL_ALERT_NOTIFY_NONE;
    if (!have_value)
        goto done;
    int armed = st->state == KEEL_ALERT_INACTIVE || st->state == KEEL_ALERT_RESOLVED;
    int active = keel_alert_condition(r, armed, value);
    if (st->value != value && st->state != KEEL_ALERT_INACTIVE &&
        st->state != KEEL_ALERT_RESOLVED) {
        st->value = value;
        ch = 1;
    }
    switch (st->state) {
    case KEEL_ALERT_INACTIVE:
    case KEEL_ALERT_RESOLVED:
        if (!active)
            break;
        memset(st, 0, sizeof(*st));
        st->state = KEEL_ALERT_PENDING;
        st->value = value;
        st->started_at = now;
        st->last_active_at = now;
        ch = 1;
        /* fall through: with for 0 it fires at once */
        /* FALLTHROUGH */
    case KEEL_ALERT_PENDING:
        if (!active) { /* cleared before firing: nobody hears of it */
            memset(st, 0, sizeof(*st));
            st->state = KEEL_ALERT_INACTIVE;
            ch = 1;
            break;
        }
        st->last_active_at = now;
        if (now - st->started_at < (int64_t)r->for_ms)
            break;
        st->state = KEEL_ALERT_FIRING;
        st->fired_at = now;
        ch = 1;
        if (cooled(r, now, rule_last_notified)) {
            st->last_notified_at = now;
            n = KEEL_ALERT_NOTIFY_FIRING;
        }
        break;
    case KEEL_ALERT_FIRING:
        if (active) {
            st->last_active_at = now;
        } else if (now - st->last_active_at >= (int64_t)r->keep_firing_for_ms) {
            st->state = KEEL_ALERT_RESOLVED;
            st->resolved_at = now;
            ch = 1;
            if (st->last_notified_at && send_resolved)
                n = KEEL_ALERT_NOTIFY_RESOLVED;
            break;
        }
        if (!st->last_notified_at) { /* held back by the cooldown */
            if (cooled(r, now, rule_last_notified)) {
                st->last_notified_at = now;
                n = KEEL_ALERT_NOTIFY_FIRING;
                ch = 1;
            }
        } else if (r->repeat_ms && !st->acknowledged_at &&
                   now - st->last_notified_at >= (int64_t)r->repeat_ms) {
            st->last_notified_at = now;
            n = KEEL_ALERT_NOTIFY_REPEAT;
            ch = 1;
        }
        break;
    }
done:
    if (changed)
        *changed = ch;
    return n;
}
