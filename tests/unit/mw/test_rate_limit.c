/* test_rate_limit.c — GCRA arithmetic, rate and tier parsing, the
 * in-process store (exact under threads, bounded under a million keys)
 * and the route check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include <cmocka.h>

#include "keel/ratelimit.h"

#include "table_check.h"

#define MS 1000ull /* µs */

static void test_gcra_burst_then_steady(void **state)
{
    (void)state;
    keel_rl_rate rate = {10, 1000}; /* 10 per second: one per 100 ms */
    uint64_t tat = 0, now = 1000000 * MS;
    keel_rl_result res;
    for (int i = 0; i < 10; i++) {
        keel_gcra(&tat, now, &rate, &res);
        assert_true(res.allowed);
        assert_int_equal(res.limit, 10);
        assert_int_equal(res.remaining, (uint64_t)(9 - i));
        assert_int_equal(res.reset_ms, (uint64_t)(i + 1) * 100);
    }
    uint64_t before = tat;
    keel_gcra(&tat, now, &rate, &res);
    assert_false(res.allowed);
    assert_int_equal(tat, before); /* a refusal does not count */
    assert_int_equal(res.remaining, 0);
    assert_int_equal(res.retry_after_ms, 100);
    assert_int_equal(res.reset_ms, 1000);
    /* 99 ms later: still no; 100 ms later: exactly one */
    keel_gcra(&tat, now + 99 * MS, &rate, &res);
    assert_false(res.allowed);
    assert_int_equal(res.retry_after_ms, 1);
    keel_gcra(&tat, now + 100 * MS, &rate, &res);
    assert_true(res.allowed);
    assert_int_equal(res.remaining, 0);
    keel_gcra(&tat, now + 100 * MS, &rate, &res);
    assert_false(res.allowed);
    /* after a whole window of silence: the whole quota again */
    keel_gcra(&tat, now + 5000 * MS, &rate, &res);
    assert_true(res.allowed);
    assert_int_equal(res.remaining, 9);
}

static void test_gcra_long_window_exact(void **state)
{
    (void)state;
    /* 100 per 15 minutes: no more than 100 in any 15 minutes */
    keel_rl_rate rate = {100, 15 * 60 * 1000};
    uint64_t tat = 0, now = 5 * MS;
    keel_rl_result res;
    int allowed = 0;
    for (int s = 0; s < 900; s++) /* 4 requests a second for 15 minutes */
        for (int k = 0; k < 4; k++) {
            keel_gcra(&tat, now + (uint64_t)s * 1000 * MS, &rate, &res);
            allowed += res.allowed;
        }
    /* 100 at once, then one per 9 s refilled: 100 + 899/9 */
    assert_int_equal(allowed, 100 + 99);
}

static void test_gcra_zero_limit_is_off(void **state)
{
    (void)state;
    keel_rl_rate rate = {0, 1000};
    uint64_t tat = 0;
    keel_rl_result res;
    for (int i = 0; i < 1000; i++) {
        keel_gcra(&tat, 1, &rate, &res);
        assert_true(res.allowed);
    }
    assert_int_equal(tat, 0);
}

typedef struct rate_case {
    const char *in;
    int rc;
    uint64_t limit, window_ms;
} rate_case;

static const rate_case rate_cases[] = {
    {"20/15m", 0, 20, 900000},
    {"10/1s", 0, 10, 1000},
    {"300/1m", 0, 300, 60000},
    {"5/250ms", 0, 5, 250},
    {"7/3600000", 0, 7, 3600000},
    {"", 0, 0, 0},
    {"0", 0, 0, 0},
    {"abc", KEEL_EINVAL, 0, 0},
    {"10", KEEL_EINVAL, 0, 0},
    {"10/", KEEL_EINVAL, 0, 0},
    {"/1s", KEEL_EINVAL, 0, 0},
    {"-1/1s", KEEL_EINVAL, 0, 0},
    {"1/0s", KEEL_EINVAL, 0, 0},
    {"1/1fortnight", KEEL_EINVAL, 0, 0},
    {"99999999999999999999/1s", KEEL_EINVAL, 0, 0},
};

static void test_parse_rate_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rate_cases) / sizeof(rate_cases[0]); i++) {
        const rate_case *c = &rate_cases[i];
        keel_rl_rate r;
        int rc = keel_rl_parse_rate(c->in, &r);
        if (rc != c->rc || (rc == 0 && (r.limit != c->limit || r.window_ms != c->window_ms)))
            case_fail(c->in, "rc %d limit %llu window %llu", rc, (unsigned long long)r.limit,
                      (unsigned long long)r.window_ms);
    }
    assert_int_equal(failures, 0);
}

static void test_tiers_from_config(void **state)
{
    (void)state;
    keel_config cfg;
    keel_config_defaults(&cfg);
    keel_rate_limit_options *rlo = keel_config_edit(&cfg, &keel_rate_limit_config);
    keel_rl_tier t[KEEL_RL_MAX_TIERS];
    int n = keel_rl_tiers_from_config(&cfg, t, KEEL_RL_MAX_TIERS, stderr);
    assert_int_equal(n, 6);
    assert_string_equal(t[0].name, "general");
    assert_int_equal(t[0].rate.limit, 100);
    assert_int_equal(t[0].rate.window_ms, 900000);
    assert_string_equal(t[2].name, "auth");
    assert_int_equal(t[2].rate.limit, 5);
    assert_string_equal(t[4].name, "burst");
    assert_int_equal(t[4].rate.window_ms, 1000);
    assert_string_equal(t[5].name, "analytics");
    assert_int_equal(t[5].rate.limit, 120);
    assert_int_equal(t[5].rate.window_ms, 60000);

    keel_free(rlo->rate_limit_tiers);
    rlo->rate_limit_tiers = keel_strdup(" reports=10/1m , upload_v2=5/1h");
    n = keel_rl_tiers_from_config(&cfg, t, KEEL_RL_MAX_TIERS, stderr);
    assert_int_equal(n, 8);
    assert_string_equal(t[6].name, "reports");
    assert_int_equal(t[7].rate.window_ms, 3600000);

    FILE *null = fopen("/dev/null", "w");
    const char *bad[] = {"reports", "reports=", "=1/1m", "Reports=1/1m", "general=1/1m",
                         "none=1/1m", "a=0/1m", "a=1/1m,a=2/1m",
                         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=1/1m"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        keel_free(rlo->rate_limit_tiers);
        rlo->rate_limit_tiers = keel_strdup(bad[i]);
        if (keel_rl_tiers_from_config(&cfg, t, KEEL_RL_MAX_TIERS, null) != KEEL_ECONFIG)
            case_fail(bad[i], "accepted");
    }
    fclose(null);
    assert_int_equal(failures, 0);
    keel_config_close(&cfg);
}

/* ---------------------------------------------------------------- store */

typedef struct hit_out {
    int calls, status;
    keel_rl_result res;
} hit_out;

static void record(void *arg, int status, const keel_rl_result *res)
{
    hit_out *o = arg;
    o->calls++;
    o->status = status;
    if (res)
        o->res = *res;
}

static int hit(keel_rl_store *st, const char *key, const keel_rl_rate *rate)
{
    hit_out o = {0};
    st->hit(st->self, NULL, key, strlen(key), rate, record, &o);
    assert_int_equal(o.calls, 1); /* synchronous, exactly once */
    assert_int_equal(o.status, 0);
    return o.res.allowed;
}

static void test_store_keys_are_separate(void **state)
{
    (void)state;
    keel_rl_store st = keel_rl_memory_store(1000);
    keel_rl_rate rate = {2, 3600 * 1000};
    assert_true(hit(&st, "rl:general:ip:1.1.1.1", &rate));
    assert_true(hit(&st, "rl:general:ip:1.1.1.1", &rate));
    assert_false(hit(&st, "rl:general:ip:1.1.1.1", &rate));
    assert_true(hit(&st, "rl:general:ip:1.1.1.2", &rate));
    assert_true(hit(&st, "rl:strict:ip:1.1.1.1", &rate));
    /* keys longer than the inline size are digested, still distinct */
    char a[300], b[300];
    memset(a, 'x', 299);
    a[299] = '\0';
    memcpy(b, a, sizeof(a));
    b[298] = 'y';
    assert_true(hit(&st, a, &rate));
    assert_true(hit(&st, a, &rate));
    assert_false(hit(&st, a, &rate));
    assert_true(hit(&st, b, &rate));
    keel_rl_memory_stats s;
    keel_rl_memory_stats_get(&st, &s);
    assert_int_equal(s.keys, 5);
    st.free(st.self);
}

typedef struct thread_arg {
    keel_rl_store *st;
    int allowed;
} thread_arg;

static void hammer(void *arg)
{
    thread_arg *t = arg;
    keel_rl_rate rate = {1000, 3600 * 1000};
    for (int i = 0; i < 5000; i++) {
        hit_out o = {0};
        t->st->hit(t->st->self, NULL, "rl:general:ip:9.9.9.9", 21, &rate, record, &o);
        t->allowed += o.res.allowed;
    }
}

static void test_store_exact_under_threads(void **state)
{
    (void)state;
    keel_rl_store st = keel_rl_memory_store(1000);
    uv_thread_t th[4];
    thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thread_arg){&st, 0};
        uv_thread_create(&th[i], hammer, &args[i]);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        uv_thread_join(&th[i]);
        total += args[i].allowed;
    }
    assert_int_equal(total, 1000);
    st.free(st.self);
}

static void test_store_bounded_under_key_spraying(void **state)
{
    (void)state;
    const uint64_t max = 10000;
    keel_rl_store st = keel_rl_memory_store(max);
    keel_rl_rate rate = {100, 3600 * 1000};
    char key[64];
    keel_rl_memory_stats s;
    uint64_t peak_bytes = 0;
    for (uint32_t i = 0; i < 1000000; i++) {
        int n = snprintf(key, sizeof(key), "rl:general:ip:%u.%u.%u.%u", i >> 24, (i >> 16) & 255,
                         (i >> 8) & 255, i & 255);
        hit_out o = {0};
        st.hit(st.self, NULL, key, (size_t)n, &rate, record, &o);
        assert_true(o.res.allowed);
        if (i % 100000 == 99999) {
            keel_rl_memory_stats_get(&st, &s);
            assert_true(s.keys <= max);
            if (s.bytes > peak_bytes)
                peak_bytes = s.bytes;
        }
    }
    keel_rl_memory_stats_get(&st, &s);
    assert_true(s.keys <= max);
    assert_true(s.keys >= max - 64); /* full, not emptied */
    assert_true(s.evictions >= 1000000 - max);
    /* about 128 bytes a key plus the tables: a few MB, not a million keys' worth */
    assert_true(peak_bytes < max * 256 + (1u << 20));
    /* a recently seen client is still counted after the spray */
    keel_rl_rate one = {1, 3600 * 1000};
    assert_true(hit(&st, "rl:auth:ip:8.8.8.8", &one));
    assert_false(hit(&st, "rl:auth:ip:8.8.8.8", &one));
    st.free(st.self);
}

static void test_store_drops_expired_keys(void **state)
{
    (void)state;
    keel_rl_store st = keel_rl_memory_store(6400);
    keel_rl_rate rate = {10, 1}; /* one per 100 µs: expired almost at once */
    char key[32];
    for (int i = 0; i < 2000; i++) {
        int n = snprintf(key, sizeof(key), "k%d", i);
        hit_out o = {0};
        st.hit(st.self, NULL, key, (size_t)n, &rate, record, &o);
    }
    uv_sleep(5);
    /* new keys clean two expired ones from the cold end each */
    for (int i = 0; i < 2000; i++) {
        int n = snprintf(key, sizeof(key), "n%d", i);
        hit_out o = {0};
        st.hit(st.self, NULL, key, (size_t)n, &rate, record, &o);
    }
    keel_rl_memory_stats s;
    keel_rl_memory_stats_get(&st, &s);
    assert_true(s.keys < 4000);
    assert_int_equal(s.evictions, 0);
    st.free(st.self);
}

static keel_flow noop(keel_req *r)
{
    (void)r;
    return KEEL_DONE;
}

static void test_check_routes(void **state)
{
    (void)state;
    keel_config cfg;
    keel_config_defaults(&cfg);
    keel_rate_limit_options *rlo = keel_config_edit(&cfg, &keel_rate_limit_config);
    keel_free(rlo->rate_limit_tiers);
    rlo->rate_limit_tiers = keel_strdup("reports=1/1m");
    keel_rate_limiter *rl = keel_rate_limiter_new(&cfg, keel_rl_memory_store(100), NULL);
    keel_route routes[] = {
        {.method = "GET", .path = "/a", .handler = noop},
        {.method = "GET", .path = "/b", .handler = noop, .rate_limit = "strict"},
        {.method = "GET", .path = "/c", .handler = noop, .rate_limit = "reports"},
        {.method = "GET", .path = "/d", .handler = noop, .rate_limit = "none"},
        {.method = "GET", .path = "/e", .handler = noop, .rate_limit = "nope"},
    };
    const keel_route *ptrs[5];
    for (int i = 0; i < 5; i++)
        ptrs[i] = &routes[i];
    FILE *null = fopen("/dev/null", "w");
    assert_int_equal(keel_rate_limiter_check_routes(rl, ptrs, 4, null), 0);
    assert_int_equal(keel_rate_limiter_check_routes(rl, ptrs, 5, null), KEEL_EINVAL);
    fclose(null);
    keel_middleware m = keel_mw_rate_limit(rl);
    m.dispose(m.data);
    keel_config_close(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gcra_burst_then_steady),
        cmocka_unit_test(test_gcra_long_window_exact),
        cmocka_unit_test(test_gcra_zero_limit_is_off),
        cmocka_unit_test(test_parse_rate_table),
        cmocka_unit_test(test_tiers_from_config),
        cmocka_unit_test(test_store_keys_are_separate),
        cmocka_unit_test(test_store_exact_under_threads),
        cmocka_unit_test(test_store_bounded_under_key_spraying),
        cmocka_unit_test(test_store_drops_expired_keys),
        cmocka_unit_test(test_check_routes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
