/* test_rl_redis.c — the Redis GCRA script against keel_gcra: the same
 * sequence of (rate, time) steps through both must give the same answers
 * and the same TAT. Runs against KEEL_TEST_REDIS_URL (make unit starts one
 * with tests/support/with_redis.sh); skipped without it. The script takes
 * its time from ARGV[3] here, so both sides see the same clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "keel/ratelimit.h"
#include "store/rl_redis.h"

static redisContext *ctx;

static int setup(void **state)
{
    (void)state;
    const char *url = getenv("KEEL_TEST_REDIS_URL");
    if (!url || !*url)
        return 0;
    char host[64] = "127.0.0.1";
    int port = 6379;
    sscanf(url, "redis://%63[^:]:%d", host, &port);
    ctx = redisConnect(host, port);
    assert_non_null(ctx);
    assert_int_equal(ctx->err, 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (ctx)
        redisFree(ctx);
    return 0;
}

static void lua_step(const char *key, const keel_rl_rate *rate, uint64_t now,
                     keel_rl_result *res)
{
    redisReply *rep = redisCommand(ctx, "EVAL %s 1 %s %llu %llu %llu", keel__rl_gcra_lua, key,
                                   (unsigned long long)rate->limit,
                                   (unsigned long long)rate->window_ms,
                                   (unsigned long long)now);
    assert_non_null(rep);
    if (rep->type == REDIS_REPLY_ERROR)
        fail_msg("script error: %s", rep->str);
    assert_int_equal(keel__rl_parse_reply(rep, rate->limit, res), 0);
    freeReplyObject(rep);
}

static uint64_t lua_tat(const char *key)
{
    redisReply *rep = redisCommand(ctx, "GET %s", key);
    assert_non_null(rep);
    uint64_t v = rep->type == REDIS_REPLY_STRING ? strtoull(rep->str, NULL, 10) : 0;
    freeReplyObject(rep);
    return v;
}

/* xorshift: a reproducible schedule */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void test_parity_with_keel_gcra(void **state)
{
    (void)state;
    if (!ctx) {
        print_message("KEEL_TEST_REDIS_URL unset: skipped (make unit sets it)\n");
        skip();
    }
    static const keel_rl_rate rates[] = {
        {10, 1000}, {3, 60000}, {100, 900000}, {7, 1}, {1, 1000}, {1000, 1000}, {5, 333},
    };
    /* µs since 1970, as Redis TIME gives: exercises the double precision */
    uint64_t base = 1790000000ull * 1000000ull;
    for (size_t ri = 0; ri < sizeof(rates) / sizeof(rates[0]); ri++) {
        const keel_rl_rate *rate = &rates[ri];
        char key[64];
        snprintf(key, sizeof(key), "keel-test:parity:%zu", ri);
        redisReply *del = redisCommand(ctx, "DEL %s", key);
        freeReplyObject(del);
        uint64_t tat = 0, now = base + ri * 7;
        uint64_t step = rate->window_ms * 1000 / (rate->limit ? rate->limit : 1);
        for (int i = 0; i < 400; i++) {
            /* bursts (same µs), steady steps near the emission interval, gaps */
            uint64_t r = next_rand() % 10;
            if (r < 4)
                now += 0;
            else if (r < 8)
                now += next_rand() % (step + 2);
            else
                now += next_rand() % (rate->window_ms * 1000 + 1);
            keel_rl_result want, got;
            keel_gcra(&tat, now, rate, &want);
            lua_step(key, rate, now, &got);
            if (memcmp(&want, &got, sizeof(want)) != 0)
                fail_msg("rate %llu/%llums step %d at %llu: C allowed=%d rem=%llu reset=%llu "
                         "retry=%llu, Lua allowed=%d rem=%llu reset=%llu retry=%llu",
                         (unsigned long long)rate->limit, (unsigned long long)rate->window_ms,
                         i, (unsigned long long)now, want.allowed,
                         (unsigned long long)want.remaining, (unsigned long long)want.reset_ms,
                         (unsigned long long)want.retry_after_ms, got.allowed,
                         (unsigned long long)got.remaining, (unsigned long long)got.reset_ms,
                         (unsigned long long)got.retry_after_ms);
            /* the stored TAT is the C one (a key whose TAT passed may be gone) */
            uint64_t lt = lua_tat(key);
            if (tat > now)
                assert_int_equal(lt, tat);
        }
        del = redisCommand(ctx, "DEL %s", key);
        freeReplyObject(del);
    }
}

static void test_reply_parsing_refuses_odd_shapes(void **state)
{
    (void)state;
    keel_rl_result res;
    assert_int_equal(keel__rl_parse_reply(NULL, 1, &res), KEEL_EPROTO);
    redisReply r = {.type = REDIS_REPLY_INTEGER};
    assert_int_equal(keel__rl_parse_reply(&r, 1, &res), KEEL_EPROTO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parity_with_keel_gcra),
        cmocka_unit_test(test_reply_parsing_refuses_odd_shapes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
