/* test_breaker.c — the circuit breaker's state machine (time driven by
 * the test), the registry's health check and metric, the backoff
 * arithmetic and the retry helper on a real loop. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <uv.h>

#include <cmocka.h>

#include "keel/resil.h"

static const keel_breaker_opts OPTS = {.failures = 3, .window_ms = 1000,
                                       .recovery_ms = 500, .probes = 2};

static void fail_n(keel_breaker *b, int n, uint64_t now)
{
    for (int i = 0; i < n; i++) {
        uint64_t t = keel_breaker_allow(b, now);
        assert_true(t != 0);
        keel_breaker_record(b, t, 0, now);
    }
}

static void test_opens_after_threshold_within_window(void **state)
{
    (void)state;
    keel_breaker *b = keel_breaker_new(NULL, "t", &OPTS);
    fail_n(b, 2, 1000);
    assert_int_equal(keel_breaker_get_state(b, 1000), KEEL_BREAKER_CLOSED);
    fail_n(b, 1, 1999); /* third failure, 999 ms after the first */
    assert_int_equal(keel_breaker_get_state(b, 1999), KEEL_BREAKER_OPEN);
    assert_int_equal(keel_breaker_allow(b, 2000), 0); /* refused while open */
    keel_breaker_free(b);
}

static void test_failures_outside_window_do_not_open(void **state)
{
    (void)state;
    keel_breaker *b = keel_breaker_new(NULL, "t", &OPTS);
    fail_n(b, 2, 1000);
    fail_n(b, 1, 2000); /* the first is 1000 ms old: out of the window */
    assert_int_equal(keel_breaker_get_state(b, 2000), KEEL_BREAKER_CLOSED);
    fail_n(b, 1, 2500); /* 1000@1000 gone; 1000, 2000, 2500 -> 2000..2500 + one at 1000 */
    /* ring: 1000(2nd), 2000, 2500: oldest 1500 ms old -> still closed */
    assert_int_equal(keel_breaker_get_state(b, 2500), KEEL_BREAKER_CLOSED);
    fail_n(b, 1, 2600); /* 2000, 2500, 2600 within 1000 ms */
    assert_int_equal(keel_breaker_get_state(b, 2600), KEEL_BREAKER_OPEN);
    keel_breaker_free(b);
}

static void test_successes_do_not_count_as_failures(void **state)
{
    (void)state;
    keel_breaker *b = keel_breaker_new(NULL, "t", &OPTS);
    for (int i = 0; i < 100; i++) {
        uint64_t t = keel_breaker_allow(b, 1000);
        keel_breaker_record(b, t, 1, 1000);
    }
    fail_n(b, 2, 1000);
    assert_int_equal(keel_breaker_get_state(b, 1000), KEEL_BREAKER_CLOSED);
    keel_breaker_free(b);
}

static void test_half_open_limits_probes_and_closes(void **state)
{
    (void)state;
    keel_breaker *b = keel_breaker_new(NULL, "t", &OPTS);
    fail_n(b, 3, 1000);
    assert_int_equal(keel_breaker_allow(b, 1499), 0);
    assert_int_equal(keel_breaker_get_state(b, 1500), KEEL_BREAKER_HALF_OPEN);
    uint64_t p1 = keel_breaker_allow(b, 1500);
    uint64_t p2 = keel_breaker_allow(b, 1500);
    assert_true(p1 && p2);
    assert_int_equal(keel_breaker_allow(b, 1500), 0); /* only two probes */
    keel_breaker_record(b, p1, 1, 1510);
    assert_int_equal(keel_breaker_get_state(b, 1510), KEEL_BREAKER_HALF_OPEN);
    keel_breaker_record(b, p2, 1, 1520);
    assert_int_equal(keel_breaker_get_state(b, 1520), KEEL_BREAKER_CLOSED);
    /* closed again with a clean slate: two failures do not open it */
    fail_n(b, 2, 1600);
    assert_int_equal(keel_breaker_get_state(b, 1600), KEEL_BREAKER_CLOSED);
    keel_breaker_free(b);
}

static void test_half_open_failure_reopens(void **state)
{
    (void)state;
    keel_breaker *b = keel_breaker_new(NULL, "t", &OPTS);
    fail_n(b, 3, 1000);
    uint64_t p = keel_breaker_allow(b, 1600);
    assert_true(p != 0);
    keel_breaker_record(b, p, 0, 1610);
    assert_int_equal(keel_breaker_get_state(b, 1610), KEEL_BREAKER_OPEN);
    assert_int_equal(keel_breaker_allow(b, 2000), 0);      /* recovery restarts */
    assert_true(keel_breaker_allow(b, 2110) != 0);         /* 500 ms after reopening */
    keel_breaker_free(b);
}

static void test_stale_reports_are_ignored(void **state)
{
    (void)state;
    keel_breaker *b = keel_breaker_new(NULL, "t", &OPTS);
    uint64_t slow = keel_breaker_allow(b, 1000); /* issued while closed */
    fail_n(b, 3, 1000);
    uint64_t p = keel_breaker_allow(b, 1500);    /* half-open probe */
    keel_breaker_record(b, slow, 0, 1501);       /* late failure: ignored */
    assert_int_equal(keel_breaker_get_state(b, 1501), KEEL_BREAKER_HALF_OPEN);
    keel_breaker_record(b, slow, 1, 1502);       /* late success: ignored too */
    keel_breaker_record(b, p, 1, 1503);
    assert_int_equal(keel_breaker_get_state(b, 1503), KEEL_BREAKER_HALF_OPEN); /* 1 of 2 */
    keel_breaker_free(b);
}

static void test_registry_health_and_metric(void **state)
{
    (void)state;
    keel_metrics *m = keel_metrics_new(1);
    keel_breakers *reg = keel_breakers_new(m);
    keel_breaker *b = keel_breaker_new(reg, "redis", &OPTS);
    keel_breaker_new(reg, "other", &OPTS);
    fail_n(b, 3, keel_now_ms());
    keel_buf out = {0};
    keel_metrics_render(m, &out);
    keel_buf_append(&out, "", 1);
    assert_non_null(strstr((char *)out.data, "circuit_breaker_state{name=\"redis\"} 1"));
    assert_non_null(strstr((char *)out.data, "circuit_breaker_state{name=\"other\"} 0"));
    keel_buf_free(&out);
    json_t *j = keel_breakers_json(reg);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "redis"),
                                                           "state")), "open");
    json_decref(j);
    keel_breakers_free(reg);
    keel_metrics_free(m);
}

static void test_backoff_full_jitter(void **state)
{
    (void)state;
    keel_retry_opts o = {.max_attempts = 10, .base_ms = 100, .max_delay_ms = 1000};
    assert_int_equal(keel_retry_backoff_ms(&o, 1, UINT64_MAX - 1), (UINT64_MAX - 1) % 101);
    for (uint64_t r = 0; r < 5000; r += 7) {
        assert_true(keel_retry_backoff_ms(&o, 1, r) <= 100);
        assert_true(keel_retry_backoff_ms(&o, 3, r) <= 400);
        assert_true(keel_retry_backoff_ms(&o, 30, r) <= 1000); /* capped, no overflow */
    }
    assert_int_equal(keel_retry_backoff_ms(&o, 3, 400), 400); /* the cap itself is reachable */
}

typedef struct retry_case {
    int fail_until;   /* attempts before this one fail */
    int nonretryable; /* failures are not retryable */
    int status;
    unsigned attempts, done_calls;
} retry_case;

static void op(keel_retry *rt, unsigned attempt, void *arg)
{
    retry_case *c = arg;
    keel_retry_done(rt, (int)attempt < c->fail_until ? KEEL_ETIMEDOUT : 0);
}

static int retryable(int status, void *arg)
{
    retry_case *c = arg;
    return status == KEEL_ETIMEDOUT && !c->nonretryable;
}

static void done(int status, unsigned attempts, void *arg)
{
    retry_case *c = arg;
    c->status = status;
    c->attempts = attempts;
    c->done_calls++;
}

static void run_retry(retry_case *c, const keel_retry_opts *o)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    assert_int_equal(keel_retry_start(&loop, o, op, retryable, done, c), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(c->done_calls, 1);
}

static void test_retry_until_success_then_gives_up(void **state)
{
    (void)state;
    keel_retry_opts o = {.max_attempts = 4, .base_ms = 2, .max_delay_ms = 5};
    retry_case ok = {.fail_until = 3};
    run_retry(&ok, &o);
    assert_int_equal(ok.status, 0);
    assert_int_equal(ok.attempts, 3);
    retry_case never = {.fail_until = 100};
    run_retry(&never, &o);
    assert_int_equal(never.status, KEEL_ETIMEDOUT);
    assert_int_equal(never.attempts, 4);
    retry_case stop = {.fail_until = 100, .nonretryable = 1};
    run_retry(&stop, &o);
    assert_int_equal(stop.attempts, 1);
    /* a deadline shorter than any backoff: one attempt only */
    keel_retry_opts d = {.max_attempts = 50, .base_ms = 1000, .max_delay_ms = 1000,
                         .deadline_ms = 1};
    retry_case late = {.fail_until = 100};
    run_retry(&late, &d);
    assert_true(late.attempts < 50);
    assert_int_equal(keel_retry_start(NULL, &o, op, NULL, done, &late), KEEL_EINVAL);
}

/* keel_retry_cancel: while waiting for the next attempt (done now, with the
 * cancel status), and while an attempt runs (that attempt is the last). */
typedef struct cancel_case {
    keel_retry *rt;
    int hold;          /* the op does not answer at once */
    int status;
    unsigned attempts, done_calls;
    uv_timer_t t;
} cancel_case;

static void cancel_op(keel_retry *rt, unsigned attempt, void *arg)
{
    cancel_case *c = arg;
    (void)attempt;
    c->rt = rt;
    if (!c->hold)
        keel_retry_done(rt, KEEL_ETIMEDOUT); /* retryable: waits ~10 s */
}

static void cancel_done(int status, unsigned attempts, void *arg)
{
    cancel_case *c = arg;
    c->status = status;
    c->attempts = attempts;
    c->done_calls++;
}

static void cancel_fire(uv_timer_t *t)
{
    cancel_case *c = t->data;
    keel_retry_cancel(c->rt, KEEL_ECANCELED);
    if (c->hold) {
        assert_int_equal(c->done_calls, 0); /* the running attempt ends it */
        keel_retry_done(c->rt, KEEL_ETIMEDOUT);
    }
    uv_close((uv_handle_t *)t, NULL);
}

static void test_retry_cancel(void **state)
{
    (void)state;
    keel_retry_opts o = {.max_attempts = 5, .base_ms = 10000, .max_delay_ms = 10000};
    for (int hold = 0; hold < 2; hold++) {
        cancel_case c = {.hold = hold};
        uv_loop_t loop;
        uv_loop_init(&loop);
        assert_int_equal(keel_retry_start(&loop, &o, cancel_op, NULL, cancel_done, &c), 0);
        uv_timer_init(&loop, &c.t);
        c.t.data = &c;
        uv_timer_start(&c.t, cancel_fire, 20, 0);
        uint64_t t0 = keel_now_ms();
        uv_run(&loop, UV_RUN_DEFAULT);
        assert_true(keel_now_ms() - t0 < 2000); /* no 10 s backoff waited out */
        assert_int_equal(uv_loop_close(&loop), 0);
        assert_int_equal(c.done_calls, 1);
        assert_int_equal(c.attempts, 1);
        assert_int_equal(c.status, hold ? KEEL_ETIMEDOUT : KEEL_ECANCELED);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opens_after_threshold_within_window),
        cmocka_unit_test(test_failures_outside_window_do_not_open),
        cmocka_unit_test(test_successes_do_not_count_as_failures),
        cmocka_unit_test(test_half_open_limits_probes_and_closes),
        cmocka_unit_test(test_half_open_failure_reopens),
        cmocka_unit_test(test_stale_reports_are_ignored),
        cmocka_unit_test(test_registry_health_and_metric),
        cmocka_unit_test(test_backoff_full_jitter),
        cmocka_unit_test(test_retry_until_success_then_gives_up),
        cmocka_unit_test(test_retry_cancel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
