/* test_health_system.c — the pure parts of the deep health checks
 * (src/obs/health_system.c): disk and memory verdicts at and around their
 * thresholds, the memory limit from MEMORY_LIMIT, and metric series
 * declared at 0 (src/obs/metrics.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "keel/health.h"
#include "keel/metrics.h"

#define MB (1024ull * 1024ull)

static void test_disk_verdict(void **state)
{
    (void)state;
    static const struct {
        uint64_t free_b, min;
        int want;
    } cases[] = {
        {0, 0, KEEL_HEALTH_PASS},             /* not checked */
        {100 * MB, 100 * MB, KEEL_HEALTH_PASS}, /* exactly at the floor */
        {100 * MB - 1, 100 * MB, KEEL_HEALTH_WARN},
        {0, 1, KEEL_HEALTH_WARN},
        {UINT64_MAX, 100 * MB, KEEL_HEALTH_PASS},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(keel_health_disk_verdict(cases[i].free_b, cases[i].min),
                         cases[i].want);
}

static void test_memory_verdict(void **state)
{
    (void)state;
    static const struct {
        uint64_t rss, limit;
        int want;
    } cases[] = {
        {1000 * MB, 0, KEEL_HEALTH_PASS},      /* no limit known */
        {800, 1000, KEEL_HEALTH_PASS},         /* 80 %: not above */
        {801, 1000, KEEL_HEALTH_WARN},
        {950, 1000, KEEL_HEALTH_WARN},         /* 95 %: not above */
        {951, 1000, KEEL_HEALTH_FAIL},
        {5000, 1000, KEEL_HEALTH_FAIL},
        {UINT64_MAX / 2, UINT64_MAX, KEEL_HEALTH_PASS}, /* no overflow */
        {UINT64_MAX, UINT64_MAX - 1, KEEL_HEALTH_FAIL}, /* just over 100 % */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(keel_health_memory_verdict(cases[i].rss, cases[i].limit, 80, 95),
                         cases[i].want);
    /* thresholds are the caller's */
    assert_int_equal(keel_health_memory_verdict(600, 1000, 50, 70), KEEL_HEALTH_WARN);
    assert_int_equal(keel_health_memory_verdict(710, 1000, 50, 70), KEEL_HEALTH_FAIL);
}

static void test_memory_limit(void **state)
{
    (void)state;
    assert_int_equal(keel_health_memory_limit(512 * MB), 512 * MB); /* set: as is */
    (void)keel_health_memory_limit(0); /* the cgroup's or 0: any value, no crash */
    assert_true(keel_process_rss() > 0);
}

static char *render(keel_metrics *m)
{
    keel_buf b = {0};
    keel_metrics_render(m, &b);
    keel_buf_append(&b, "", 1);
    return b.data;
}

static int collected;
static void on_collect(void *arg)
{
    collected++;
    keel_metric_set(arg, 99, (const char *const[]){"work"}, 7);
}

static void test_declared_series(void **state)
{
    (void)state;
    keel_metrics *m = keel_metrics_new(2);
    keel_metric *plain = keel_metrics_counter(m, "plain_total", "no labels", NULL);
    keel_metric *kinds = keel_metrics_counter(m, "errs_total", "by kind",
                                              (const char *const[]){"svc", "kind", NULL});
    keel_metric *h = keel_metrics_histogram(m, "wait_seconds", "w",
                                            (const char *const[]){"pool", NULL},
                                            (const double[]){0.1, 1}, 2);
    keel_metric *g = keel_metrics_gauge(m, "depth", "d", (const char *const[]){"pool", NULL});
    keel_metric_declare_each(kinds, (const char *const[]){"db", NULL}, 1,
                             (const char *const[]){"timeout", "sql", NULL});
    keel_metric_declare(h, (const char *const[]){"work"});
    keel_metric_declare(NULL, NULL); /* no-op */
    keel_metrics_on_collect(m, on_collect, g);
    assert_ptr_equal(keel_metrics_find(m, "errs_total"), kinds);
    assert_null(keel_metrics_find(m, "nope"));
    char *t = render(m);
    assert_non_null(strstr(t, "\nplain_total 0\n"));
    assert_non_null(strstr(t, "errs_total{svc=\"db\",kind=\"timeout\"} 0\n"));
    assert_non_null(strstr(t, "errs_total{svc=\"db\",kind=\"sql\"} 0\n"));
    assert_non_null(strstr(t, "wait_seconds_bucket{pool=\"work\",le=\"+Inf\"} 0\n"));
    assert_non_null(strstr(t, "wait_seconds_count{pool=\"work\"} 0\n"));
    assert_non_null(strstr(t, "depth{pool=\"work\"} 7\n"));
    assert_int_equal(collected, 1);
    keel_free(t);
    /* a declared series counts like any other, and declaring again keeps it */
    keel_metric_add(kinds, 0, (const char *const[]){"db", "sql"}, 2);
    keel_metric_add(plain, 1, NULL, 1);
    keel_metric_declare_each(kinds, (const char *const[]){"db", NULL}, 1,
                             (const char *const[]){"sql", NULL});
    t = render(m);
    assert_non_null(strstr(t, "errs_total{svc=\"db\",kind=\"sql\"} 2\n"));
    assert_non_null(strstr(t, "\nplain_total 1\n"));
    keel_free(t);
    keel_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_disk_verdict),
        cmocka_unit_test(test_memory_verdict),
        cmocka_unit_test(test_memory_limit),
        cmocka_unit_test(test_declared_series),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
