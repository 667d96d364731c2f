/* test_alerts.c — the alert engine (src/obs/alerts.c): the state machine
 * (for, hysteresis, keep_firing_for, cooldown, repeat, acknowledge, a
 * pending alert that clears, no data), rules from JSON and their
 * refusals, and windows over a real metrics registry (increase, rate,
 * error rate with a minimum request count, a histogram quantile). */
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "keel/alerts.h"
#include "keel/metrics.h"

static keel_alert_rule rule_gt(double trigger, double clear, uint64_t for_ms)
{
    keel_alert_rule r;
    memset(&r, 0, sizeof(r));
    snprintf(r.id, sizeof(r.id), "t");
    r.kind = KEEL_ALERT_CUSTOM;
    r.cmp = KEEL_ALERT_GT;
    r.trigger = trigger;
    r.clear = clear;
    r.for_ms = for_ms;
    r.window_ms = 10000;
    r.enabled = 1;
    return r;
}

/* Steps through (t, value) and records what was told. */
typedef struct step_case {
    int64_t t;
    double v;
    keel_alert_state want_state;
    keel_alert_notify want_notify;
} step_case;

static void run_steps(const keel_alert_rule *r, keel_alert_status *st, const step_case *c,
                      size_t n, int64_t *rule_last)
{
    for (size_t i = 0; i < n; i++) {
        keel_alert_notify got = keel_alert_step(r, st, c[i].t, 1, c[i].v, *rule_last, 1, NULL);
        if (got != KEEL_ALERT_NOTIFY_NONE)
            *rule_last = c[i].t;
        if (st->state != c[i].want_state || got != c[i].want_notify)
            fail_msg("step %zu (t=%lld v=%g): state %s notify %d, want %s notify %d", i,
                     (long long)c[i].t, c[i].v, keel_alert_state_name(st->state), got,
                     keel_alert_state_name(c[i].want_state), c[i].want_notify);
    }
}

static void test_for_then_fire_then_resolve(void **state)
{
    (void)state;
    keel_alert_rule r = rule_gt(10, 5, 2000);
    keel_alert_status st = {0};
    int64_t last = 0;
    const step_case c[] = {
        {1000, 3, KEEL_ALERT_INACTIVE, KEEL_ALERT_NOTIFY_NONE},
        {2000, 11, KEEL_ALERT_PENDING, KEEL_ALERT_NOTIFY_NONE},
        {3000, 12, KEEL_ALERT_PENDING, KEEL_ALERT_NOTIFY_NONE},
        {4000, 12, KEEL_ALERT_FIRING, KEEL_ALERT_NOTIFY_FIRING}, /* for elapsed */
        {5000, 12, KEEL_ALERT_FIRING, KEEL_ALERT_NOTIFY_NONE},
        {6000, 4, KEEL_ALERT_RESOLVED, KEEL_ALERT_NOTIFY_RESOLVED},
        {7000, 4, KEEL_ALERT_RESOLVED, KEEL_ALERT_NOTIFY_NONE},
    };
    run_steps(&r, &st, c, sizeof(c) / sizeof(c[0]), &last);
    assert_int_equal(st.started_at, 2000);
    assert_int_equal(st.fired_at, 4000);
    assert_int_equal(st.resolved_at, 6000);
}

static void test_pending_that_clears_tells_nobody(void **state)
{
    (void)state;
    keel_alert_rule r = rule_gt(10, 5, 5000);
    keel_alert_status st = {0};
    int64_t last = 0;
    const step_case c[] = {
        {1000, 20, KEEL_ALERT_PENDING, KEEL_ALERT_NOTIFY_NONE},
        {2000, 20, KEEL_ALERT_PENDING, KEEL_ALERT_NOTIFY_NONE},
        {3000, 1, KEEL_ALERT_INACTIVE, KEEL_ALERT_NOTIFY_NONE},
        {9000, 1, KEEL_ALERT_INACTIVE, KEEL_ALERT_NOTIFY_NONE},
    };
    run_steps(&r, &st, c, sizeof(c) / sizeof(c[0]), &last);
    assert_int_equal(last, 0);
}

static void test_hysteresis_band_neither_fires_nor_resolves(void **state)
{
    (void)state;
    keel_alert_rule r = rule_gt(10, 5, 0);
    keel_alert_status st = {0};
    int64_t last = 0;
    const step_case c[] = {
        /* inside the band while inactive: never armed */
        {1000, 9, KEEL_ALERT_INACTIVE, KEEL_ALERT_NOTIFY_NONE},
        {2000, 6, KEEL_ALERT_INACTIVE, KEEL_ALERT_NOTIFY_NONE},
        {3000, 10, KEEL_ALERT_INACTIVE, KEEL_ALERT_NOTIFY_NONE}, /* > is strict */
        {4000, 11, KEEL_ALERT_FIRING, KEEL_ALERT_NOTIFY_FIRING}, /* for 0: at once */
        /* flapping inside the band while firing: stays firing, silent */
        {5000, 6, KEEL_ALERT_FIRING, KEEL_ALERT_NOTIFY_NONE},
        {6000, 11, KEEL_ALERT_FIRING, KEEL_ALERT_NOTIFY_NONE},
        {7000, 5.5, KEEL_ALERT_FIRING, KEEL_ALERT_NOTIFY_NONE},
        {8000, 5, KEEL_ALERT_RESOLVED, KEEL_ALERT_NOTIFY_RESOLVED}, /* <= clear */
    };
    run_steps(&r, &st, c, sizeof(c) / sizeof(c[0]), &last);
}

static void test_less_than_rules(void **state)
{
    (void)state;
    keel_alert_rule r = rule_gt(1, 1, 0);
    r.cmp = KEEL_ALERT_LT; /* e.g. Redis: fewer than 1 worker connected */
    keel_alert_status st = {0};
    int64_t last = 0;
    const step_case c[] = {
        {1000, 2, KEEL_ALERT_INACTIVE, KEEL_ALERT_NOTIFY_NONE},
        {2000, 0, KEEL_ALERT_FIRING, KEEL_ALERT_NOTIFY_FIRING},
        {3000, 1, KEEL_ALERT_RESOLVED, KEEL_ALERT_NOTIFY_RESOLVED},
    };
    run_steps(&r, &st, c, sizeof(c) / sizeof(c[0]), &last);
}

static void test_keep_firing_for(void **state)
{
    (void)state;
    keel_alert_rule r = rule_gt(10, 10, 0);
    r.keep_firing_for_ms = 3000;
    keel_alert_status st = {0};
    int64_t last = 0;
    const step_case c[] = {
        {1000, 20, KEEL_ALERT_FIRING, KEEL_ALERT_NOTIFY_FIRING},
        {2000, 1, KEEL_ALERT_FIRING, KEEL_ALERT_NOTIFY_NONE},
        {3500, 1, KEEL_ALERT_FIRING, KEEL_ALERT_NOTIFY_NONE},
        {4000, 1, KEEL_ALERT_RESOLVED, KEEL_ALERT_NOTIFY_RESOLVED}, /* 3 s after it held */
    };
    run_steps(&r, &st, c, sizeof(c) / sizeof(c[0]), &last);
}

static void test_cooldown_defers_and_repeat_stops_on_ack(void **state)
{
    (void)state;
    keel_alert_rule r = rule_gt(10, 10, 0);
    r.cooldown_ms = 10000;
    r.repeat_ms = 4000;
    keel_alert_status st = {0};
    int64_t last = 0;
    const step_case c[] = {
        {1000, 20, KEEL_ALERT_FIRING, KEEL_ALERT_NOTIFY_FIRING},
        {2000, 1, KEEL_ALERT_RESOLVED, KEEL_ALERT_NOTIFY_RESOLVED},
        /* fires again 1 s after the last word: held back by the cooldown */
        {3000, 20, KEEL_ALERT_FIRING, KEEL_ALERT_NOTIFY_NONE},
        {11000, 20, KEEL_ALERT_FIRING, KEEL_ALERT_NOTIFY_NONE},
        {12000, 20, KEEL_ALERT_FIRING, KEEL_ALERT_NOTIFY_FIRING}, /* cooled */
        {15000, 20, KEEL_ALERT_FIRING, KEEL_ALERT_NOTIFY_NONE},
        {16000, 20, KEEL_ALERT_FIRING, KEEL_ALERT_NOTIFY_REPEAT},
    };
    run_steps(&r, &st, c, sizeof(c) / sizeof(c[0]), &last);
    st.acknowledged_at = 16500;
    const step_case d[] = {{30000, 20, KEEL_ALERT_FIRING, KEEL_ALERT_NOTIFY_NONE}};
    run_steps(&r, &st, d, 1, &last);
    /* an episode never told firing is not told resolved either */
    keel_alert_status quiet = {0};
    int64_t recent = 29000;
    assert_int_equal(keel_alert_step(&r, &quiet, 30000, 1, 20, recent, 1, NULL),
                     KEEL_ALERT_NOTIFY_NONE);
    assert_int_equal(quiet.state, KEEL_ALERT_FIRING);
    assert_int_equal(keel_alert_step(&r, &quiet, 31000, 1, 1, recent, 1, NULL),
                     KEEL_ALERT_NOTIFY_NONE);
    assert_int_equal(quiet.state, KEEL_ALERT_RESOLVED);
}

static void test_no_data_changes_nothing(void **state)
{
    (void)state;
    /* what a restart looks like: the state is read back, the window is
     * empty; the for timer runs from started_at, nothing fires again */
    keel_alert_rule r = rule_gt(10, 5, 5000);
    keel_alert_status st = {.state = KEEL_ALERT_PENDING, .value = 20, .started_at = 1000,
                            .last_active_at = 3000};
    int changed = 1;
    assert_int_equal(keel_alert_step(&r, &st, 4000, 0, 0, 0, 1, &changed),
                     KEEL_ALERT_NOTIFY_NONE);
    assert_int_equal(changed, 0);
    assert_int_equal(st.state, KEEL_ALERT_PENDING);
    assert_int_equal(keel_alert_step(&r, &st, 6000, 1, 20, 0, 1, &changed),
                     KEEL_ALERT_NOTIFY_FIRING); /* 5 s after started_at, not after restart */
    keel_alert_status firing = {.state = KEEL_ALERT_FIRING, .value = 20, .started_at = 1000,
                                .fired_at = 6000, .last_active_at = 6000,
                                .last_notified_at = 6000};
    assert_int_equal(keel_alert_step(&r, &firing, 7000, 1, 20, 6000, 1, NULL),
                     KEEL_ALERT_NOTIFY_NONE);
    assert_int_equal(firing.state, KEEL_ALERT_FIRING);
}

/* ---------------------------------------------------------------- JSON */

static void test_rule_json(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        const char *pointer; /* NULL: accepted */
    } cases[] = {
        {"{\"name\":\"e\",\"kind\":\"error_rate\"}", NULL},
        {"{\"name\":\"c\",\"kind\":\"custom\",\"metric\":\"x_total\",\"aggregation\":\"rate\","
         "\"trigger\":1}",
         NULL},
        {"{\"name\":\"c\",\"kind\":\"custom\",\"metric\":\"x_total\",\"aggregation\":\"rate\"}",
         "/trigger"},
        {"{\"name\":\"c\",\"kind\":\"custom\",\"metric\":\"9x\",\"aggregation\":\"rate\","
         "\"trigger\":1}",
         "/metric"},
        {"{\"name\":\"c\",\"kind\":\"custom\",\"metric\":\"x\",\"aggregation\":\"median\","
         "\"trigger\":1}",
         "/aggregation"},
        {"{\"name\":\"e\",\"kind\":\"nope\"}", "/kind"},
        {"{\"kind\":\"error_rate\"}", "/name"},
        {"{\"name\":\"e\",\"kind\":\"error_rate\",\"trigger\":5,\"clear\":6}", "/clear"},
        {"{\"name\":\"e\",\"kind\":\"redis_down\",\"comparison\":\"<\",\"trigger\":1,"
         "\"clear\":0}",
         "/clear"},
        {"{\"name\":\"e\",\"kind\":\"error_rate\",\"severity\":\"loud\"}", "/severity"},
        {"{\"name\":\"e\",\"kind\":\"error_rate\",\"for_s\":-1}", "/for_s"},
        {"{\"name\":\"e\",\"kind\":\"error_rate\",\"window_s\":0}", "/window_s"},
        {"{\"name\":\"e\",\"kind\":\"latency\",\"quantile\":1}", "/quantile"},
        {"{\"name\":\"e\",\"kind\":\"error_rate\",\"id\":\"a b\"}", "/id"},
        {"{\"name\":\"e\",\"kind\":\"error_rate\",\"metric\":\"x\"}", "/metric"},
        {"{\"name\":\"e\",\"kind\":\"error_rate\",\"enabled\":1}", "/enabled"},
        {"[]", ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *j = json_loads(cases[i].json, 0, NULL);
        assert_non_null(j);
        keel_alert_rule r;
        char err[200];
        const char *ptr = NULL;
        int rc = keel_alert_rule_from_json(j, &r, err, sizeof(err), &ptr);
        if (!cases[i].pointer && rc != 0)
            fail_msg("case %zu refused: %s %s", i, ptr, err);
        if (cases[i].pointer && (rc == 0 || strcmp(ptr, cases[i].pointer)))
            fail_msg("case %zu: rc %d pointer %s, want %s", i, rc, rc ? ptr : "-",
                     cases[i].pointer);
        if (rc == 0) { /* round trip */
            json_t *back = keel_alert_rule_to_json(&r);
            keel_alert_rule r2;
            assert_int_equal(keel_alert_rule_from_json(back, &r2, err, sizeof(err), &ptr), 0);
            assert_int_equal(r2.kind, r.kind);
            assert_true(r2.trigger == r.trigger && r2.clear == r.clear);
            assert_int_equal(r2.window_ms, r.window_ms);
            json_decref(back);
        }
        json_decref(j);
    }
    /* the built-in defaults, as the issue lists them */
    const keel_alert_rule *b;
    size_t n = keel_alert_builtin_rules(&b);
    assert_true(n >= 5);
    for (size_t i = 0; i < n; i++) {
        if (b[i].kind == KEEL_ALERT_ERROR_RATE)
            assert_true(b[i].trigger == 1 && b[i].min_requests == 100);
        if (b[i].kind == KEEL_ALERT_LATENCY)
            assert_true(b[i].trigger == 0.5 && b[i].quantile == 0.95 && b[i].min_requests == 100);
        if (b[i].kind == KEEL_ALERT_DB_ERRORS)
            assert_true(b[i].trigger == 10 && b[i].window_ms == 300000);
        if (b[i].kind == KEEL_ALERT_WS_SURGE)
            assert_true(b[i].trigger == 1000);
        if (b[i].kind == KEEL_ALERT_MEMORY)
            assert_true(b[i].trigger == 80);
    }
}

/* ---------------------------------------------------------------- windows */

static void test_windows_over_a_registry(void **state)
{
    (void)state;
    keel_metrics *m = keel_metrics_new(1);
    static const char *const lc[] = {"method", "route", "class", NULL};
    keel_metric *resp = keel_metrics_counter(m, "http_responses_total", "r", lc);
    static const char *const l2[] = {"method", "route", NULL};
    keel_metric *dur = keel_metrics_histogram(m, "http_request_duration_seconds", "d", l2,
                                              keel_latency_buckets, keel_latency_nbuckets);
    const char *ok[] = {"GET", "/x", "2xx"}, *err5[] = {"GET", "/x", "5xx"},
               *nf[] = {"GET", "unmatched", "4xx"}, *rt[] = {"GET", "/x"};

    keel_alert_rule er, lat, inc, rate;
    char e[200];
    const char *p;
    json_t *j = json_pack("{s:s,s:s,s:f,s:i}", "name", "er", "kind", "error_rate", "window_s",
                          10.0, "min_requests", 100);
    assert_int_equal(keel_alert_rule_from_json(j, &er, e, sizeof(e), &p), 0);
    json_decref(j);
    j = json_pack("{s:s,s:s,s:f,s:i}", "name", "lat", "kind", "latency", "window_s", 10.0,
                  "min_requests", 10);
    assert_int_equal(keel_alert_rule_from_json(j, &lat, e, sizeof(e), &p), 0);
    json_decref(j);
    j = json_pack("{s:s,s:s,s:s,s:{s:s},s:s,s:f,s:f}", "name", "inc", "kind", "custom", "metric",
                  "http_responses_total", "labels", "class", "4xx", "aggregation", "increase",
                  "window_s", 2.0, "trigger", 20.0);
    assert_int_equal(keel_alert_rule_from_json(j, &inc, e, sizeof(e), &p), 0);
    json_decref(j);
    rate = inc;
    rate.agg = KEEL_ALERT_AGG_RATE;

    keel_alert_ring *rer = keel_alert_ring_new(&er, 1000), *rlat = keel_alert_ring_new(&lat, 1000),
                    *rinc = keel_alert_ring_new(&inc, 1000),
                    *rrate = keel_alert_ring_new(&rate, 1000);
    keel_alert_env env = {0};
    double v = -1;
#define PUSH(t)                                                                                \
    do {                                                                                       \
        json_t *snap = keel_metrics_json(m);                                                   \
        keel_alert_ring_push(rer, &er, snap, &env, (t));                                       \
        keel_alert_ring_push(rlat, &lat, snap, &env, (t));                                     \
        keel_alert_ring_push(rinc, &inc, snap, &env, (t));                                     \
        keel_alert_ring_push(rrate, &rate, snap, &env, (t));                                   \
        json_decref(snap);                                                                     \
    } while (0)
    PUSH(1000);
    assert_int_equal(keel_alert_value(rinc, &inc, 1000, &v), 0); /* one sample: no data */
    keel_metric_add(resp, 0, ok, 95);
    keel_metric_add(resp, 0, err5, 5);
    keel_metric_add(resp, 0, nf, 60);
    for (int i = 0; i < 90; i++)
        keel_metric_observe(dur, 0, rt, 0.002);
    for (int i = 0; i < 10; i++)
        keel_metric_observe(dur, 0, rt, 2.0);
    PUSH(2000);
    assert_int_equal(keel_alert_value(rinc, &inc, 2000, &v), 1);
    assert_true(v == 60);
    assert_int_equal(keel_alert_value(rrate, &rate, 2000, &v), 1);
    assert_true(v == 60);
    /* 5 of 160 responses are 5xx */
    assert_int_equal(keel_alert_value(rer, &er, 2000, &v), 1);
    assert_true(fabs(v - 5 * 100.0 / 160) < 1e-9);
    /* p95 of 100 observations, 10 of them 2 s: in the (1, 2.5] bucket */
    assert_int_equal(keel_alert_value(rlat, &lat, 2000, &v), 1);
    assert_true(v > 1 && v <= 2.5);
    /* the 4xx leave the 2 s window */
    PUSH(3000);
    PUSH(4500);
    assert_int_equal(keel_alert_value(rinc, &inc, 4500, &v), 1);
    assert_true(v == 0);
    /* too few requests in the window: no data */
    lat.min_requests = 1000;
    assert_int_equal(keel_alert_value(rlat, &lat, 2000, &v), 0);
    /* a custom rule over a missing metric has no data */
    keel_alert_rule missing = inc;
    snprintf(missing.metric, sizeof(missing.metric), "nothing_total");
    keel_alert_ring *rm = keel_alert_ring_new(&missing, 1000);
    json_t *snap = keel_metrics_json(m);
    keel_alert_ring_push(rm, &missing, snap, &env, 1000);
    keel_alert_ring_push(rm, &missing, snap, &env, 2000);
    json_decref(snap);
    assert_int_equal(keel_alert_value(rm, &missing, 2000, &v), 0);
    keel_alert_ring_free(rm);
    keel_alert_ring_free(rer);
    keel_alert_ring_free(rlat);
    keel_alert_ring_free(rinc);
    keel_alert_ring_free(rrate);
    keel_alert_ring_free(NULL);
    keel_metrics_free(m);
}

/* A week's window at a 100 ms interval keeps at most 512 samples, spread
 * over the window, while the newest stays fresh. */
static void test_long_windows_are_downsampled(void **state)
{
    (void)state;
    keel_alert_rule r = rule_gt(10, 5, 0);
    r.kind = KEEL_ALERT_CUSTOM;
    r.agg = KEEL_ALERT_AGG_INCREASE;
    r.window_ms = 7 * 86400000ull;
    snprintf(r.metric, sizeof(r.metric), "c_total");
    keel_alert_ring *ring = keel_alert_ring_new(&r, 100);
    keel_metrics *m = keel_metrics_new(1);
    keel_metric *c = keel_metrics_counter(m, "c_total", "c", NULL);
    keel_alert_env env = {0};
    int64_t t0 = 1000000;
    /* 10 hours of samples every 100 s stand for the 100 ms ticks */
    for (int64_t i = 0; i < 360; i++) {
        keel_metric_add(c, 0, NULL, 1);
        json_t *snap = keel_metrics_json(m);
        keel_alert_ring_push(ring, &r, snap, &env, t0 + i * 100000);
        json_decref(snap);
    }
    double v;
    int64_t now = t0 + 359 * 100000;
    assert_int_equal(keel_alert_value(ring, &r, now, &v), 1);
    /* the first sample (value 1) is still the oldest: the increase is 359 */
    assert_true(v == 359);
    /* a push right after the newest only refreshes it */
    keel_metric_add(c, 0, NULL, 5);
    json_t *snap = keel_metrics_json(m);
    keel_alert_ring_push(ring, &r, snap, &env, now + 100);
    json_decref(snap);
    assert_int_equal(keel_alert_value(ring, &r, now + 100, &v), 1);
    assert_true(v == 364);
    keel_alert_ring_free(ring);
    keel_metrics_free(m);
}

static void test_quantile(void **state)
{
    (void)state;
    const double bounds[] = {0.1, 0.5, 1, INFINITY};
    const double counts[] = {50, 90, 100, 100};
    double v;
    assert_int_equal(keel_alert_quantile(0.5, bounds, counts, 4, &v), 0);
    assert_true(fabs(v - 0.1) < 1e-9);
    assert_int_equal(keel_alert_quantile(0.95, bounds, counts, 4, &v), 0);
    assert_true(fabs(v - 0.75) < 1e-9);
    const double zero[] = {0, 0, 0, 0};
    assert_int_equal(keel_alert_quantile(0.95, bounds, zero, 4, &v), -1);
    const double inf[] = {0, 0, 0, 10};
    assert_int_equal(keel_alert_quantile(0.5, bounds, inf, 4, &v), 0);
    assert_true(v == 1); /* the +Inf bucket: the highest finite bound */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_for_then_fire_then_resolve),
        cmocka_unit_test(test_pending_that_clears_tells_nobody),
        cmocka_unit_test(test_hysteresis_band_neither_fires_nor_resolves),
        cmocka_unit_test(test_less_than_rules),
        cmocka_unit_test(test_keep_firing_for),
        cmocka_unit_test(test_cooldown_defers_and_repeat_stops_on_ack),
        cmocka_unit_test(test_no_data_changes_nothing),
        cmocka_unit_test(test_rule_json),
        cmocka_unit_test(test_windows_over_a_registry),
        cmocka_unit_test(test_long_windows_are_downsampled),
        cmocka_unit_test(test_quantile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
