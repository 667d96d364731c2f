/* test_rl_redis.c — the Redis GCRA script against keel_gcra: the same
 * sequence of (rate, time) steps through both must give the same answers
 * and the same TAT. Runs against KEEL_TEST_REDIS_URL (make unit starts one
 * with tests/support/with_redis.sh); skipped without it. The script takes
 * its time from its last ARGV here, so both sides see the same clock. The
 * two-key chain (burst tier, then the route's, in one round trip) is
 * checked against keel_gcra applied to the two keys in turn. */
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
    /* a batch of one chain of one check, at a fixed clock */
    redisReply *rep = redisCommand(ctx, "EVAL %s 1 %s 1 %llu 1 %llu %llu", keel__rl_gcra_lua, key,
                                   (unsigned long long)now, (unsigned long long)rate->limit,
                                   (unsigned long long)rate->window_ms);
    assert_non_null(rep);
    if (rep->type == REDIS_REPLY_ERROR)
        fail_msg("script error: %s", rep->str);
    size_t idx = 9;
    assert_int_equal(keel__rl_parse_reply(rep, &rate->limit, 1, &idx, res), 0);
    assert_int_equal(idx, 0);
    freeReplyObject(rep);
}

/* The two-key chain (the limiter's burst tier, then the route's) in one
 * EVAL; *idx is the check that decided. */
static void lua_chain(const char *k1, const char *k2, const keel_rl_rate *r1,
                      const keel_rl_rate *r2, uint64_t now, size_t *idx, keel_rl_result *res)
{
    redisReply *rep = redisCommand(ctx, "EVAL %s 2 %s %s 1 %llu 2 %llu %llu %llu %llu",
                                   keel__rl_gcra_lua, k1, k2, (unsigned long long)now,
                                   (unsigned long long)r1->limit,
                                   (unsigned long long)r1->window_ms,
                                   (unsigned long long)r2->limit,
                                   (unsigned long long)r2->window_ms);
    assert_non_null(rep);
    if (rep->type == REDIS_REPLY_ERROR)
        fail_msg("script error: %s", rep->str);
    uint64_t limits[2] = {r1->limit, r2->limit};
    assert_int_equal(keel__rl_parse_reply(rep, limits, 2, idx, res), 0);
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

static void del_key(const char *key)
{
    redisReply *del = redisCommand(ctx, "DEL %s", key);
    freeReplyObject(del);
}

/* The chain against keel_gcra applied in turn, as the limiter does with a
 * store without hit_chain: the first check, then (only if it allowed) the
 * second. The same deciding check, the same answer, the same two TATs —
 * so a request the second tier refuses stays charged to the first, and
 * one the first refuses is never counted against the second. */
static void test_chain_parity_with_keel_gcra_in_turn(void **state)
{
    (void)state;
    if (!ctx) {
        print_message("KEEL_TEST_REDIS_URL unset: skipped (make unit sets it)\n");
        skip();
    }
    static const struct {
        keel_rl_rate burst, route;
    } pairs[] = {
        {{10, 1000}, {3, 60000}},   /* the route's tier refuses first */
        {{2, 1000}, {100, 900000}}, /* the burst tier refuses first */
        {{5, 333}, {7, 1}},
        {{1000, 1000}, {1, 1000}},
        {{10, 1000}, {0, 1000}},    /* a tier without limit */
        {{3, 1000}, {5, 2000}},
    };
    uint64_t base = 1790000000ull * 1000000ull;
    int refused_by[2] = {0, 0};
    for (size_t pi = 0; pi < sizeof(pairs) / sizeof(pairs[0]); pi++) {
        const keel_rl_rate *r1 = &pairs[pi].burst, *r2 = &pairs[pi].route;
        char k1[64], k2[64];
        snprintf(k1, sizeof(k1), "keel-test:chain:%zu:burst", pi);
        snprintf(k2, sizeof(k2), "keel-test:chain:%zu:route", pi);
        del_key(k1);
        del_key(k2);
        uint64_t tat1 = 0, tat2 = 0, now = base + pi * 11;
        uint64_t step = r1->window_ms * 1000 / (r1->limit ? r1->limit : 1);
        for (int i = 0; i < 400; i++) {
            uint64_t r = next_rand() % 10;
            if (r < 4)
                now += 0;
            else if (r < 8)
                now += next_rand() % (step + 2);
            else
                now += next_rand() % (r2->window_ms * 1000 + 1);
            keel_rl_result want, got;
            size_t want_idx = 0, got_idx = 9;
            keel_gcra(&tat1, now, r1, &want);
            if (want.allowed) {
                want_idx = 1;
                keel_gcra(&tat2, now, r2, &want);
            }
            if (!want.allowed)
                refused_by[want_idx]++;
            lua_chain(k1, k2, r1, r2, now, &got_idx, &got);
            if (got_idx != want_idx || memcmp(&want, &got, sizeof(want)) != 0)
                fail_msg("pair %zu step %d at %llu: C check %zu allowed=%d rem=%llu reset=%llu "
                         "retry=%llu, Lua check %zu allowed=%d rem=%llu reset=%llu retry=%llu",
                         pi, i, (unsigned long long)now, want_idx, want.allowed,
                         (unsigned long long)want.remaining, (unsigned long long)want.reset_ms,
                         (unsigned long long)want.retry_after_ms, got_idx, got.allowed,
                         (unsigned long long)got.remaining, (unsigned long long)got.reset_ms,
                         (unsigned long long)got.retry_after_ms);
            if (tat1 > now)
                assert_int_equal(lua_tat(k1), tat1);
            if (tat2 > now)
                assert_int_equal(lua_tat(k2), tat2);
        }
        del_key(k1);
        del_key(k2);
    }
    /* the schedule exercised both ways of being refused */
    assert_true(refused_by[0] > 10);
    assert_true(refused_by[1] > 10);
}

/* The semantics spelled out on one client: the route's tier refusing
 * leaves the burst tier charged; the burst tier refusing leaves the
 * route's tier as it was. */
static void test_chain_charges_up_to_the_refusal(void **state)
{
    (void)state;
    if (!ctx) {
        print_message("KEEL_TEST_REDIS_URL unset: skipped (make unit sets it)\n");
        skip();
    }
    const char *kb = "keel-test:chain-sem:burst", *kr = "keel-test:chain-sem:route";
    del_key(kb);
    del_key(kr);
    keel_rl_rate burst = {3, 1000}, route = {1, 60000};
    uint64_t now = 1790000000ull * 1000000ull;
    keel_rl_result res;
    size_t idx;
    lua_chain(kb, kr, &burst, &route, now, &idx, &res);
    assert_int_equal(idx, 1);
    assert_true(res.allowed);
    assert_int_equal(res.limit, 1);
    uint64_t b1 = lua_tat(kb), r1 = lua_tat(kr);
    lua_chain(kb, kr, &burst, &route, now, &idx, &res); /* the route's tier refuses */
    assert_int_equal(idx, 1);
    assert_false(res.allowed);
    assert_int_equal(res.limit, 1);
    assert_true(lua_tat(kb) > b1); /* ... and the burst tier was charged */
    assert_int_equal(lua_tat(kr), r1);
    lua_chain(kb, kr, &burst, &route, now, &idx, &res); /* burst: its third */
    lua_chain(kb, kr, &burst, &route, now, &idx, &res); /* burst refuses */
    assert_int_equal(idx, 0);
    assert_false(res.allowed);
    assert_int_equal(res.limit, 3);
    assert_int_equal(lua_tat(kr), r1); /* never reached */
    del_key(kb);
    del_key(kr);
}

/* A batch (what one loop iteration sends): m chains of one or two checks
 * over a few keys, so a key comes back within the batch, all at one
 * clock. The answer is keel_gcra applied chain after chain, in turn. */
static void test_batch_is_the_chains_in_turn(void **state)
{
    (void)state;
    if (!ctx) {
        print_message("KEEL_TEST_REDIS_URL unset: skipped (make unit sets it)\n");
        skip();
    }
    static const keel_rl_rate rates[] = {{4, 1000}, {2, 60000}, {0, 1000}, {9, 500}};
    enum { NK = 4, M = 40 };
    char keys[NK][48];
    uint64_t tats[NK] = {0};
    for (int k = 0; k < NK; k++) {
        snprintf(keys[k], sizeof(keys[k]), "keel-test:batch:%d", k);
        del_key(keys[k]);
    }
    uint64_t now = 1790000000ull * 1000000ull;
    int refused = 0;
    for (int round = 0; round < 30; round++) {
        now += next_rand() % 400000;
        const char *argv[3 + 2 * M + M * 5];
        size_t lens[sizeof(argv) / sizeof(argv[0])];
        char nums[M * 5 + 2][24];
        int chain_n[M], chain_k[M][2], chain_r[M][2];
        int nk = 0, na = 0, nn = 0;
        const char *args[M * 5 + 2];
        snprintf(nums[nn], sizeof(nums[0]), "%d", M);
        args[na++] = nums[nn++];
        snprintf(nums[nn], sizeof(nums[0]), "%llu", (unsigned long long)now);
        args[na++] = nums[nn++];
        const char *kv[2 * M];
        for (int c = 0; c < M; c++) {
            chain_n[c] = 1 + (int)(next_rand() % 2);
            snprintf(nums[nn], sizeof(nums[0]), "%d", chain_n[c]);
            args[na++] = nums[nn++];
            for (int i = 0; i < chain_n[c]; i++) {
                chain_k[c][i] = (int)(next_rand() % NK);
                chain_r[c][i] = chain_k[c][i]; /* a key keeps its rate */
                kv[nk++] = keys[chain_k[c][i]];
                const keel_rl_rate *rt = &rates[chain_r[c][i]];
                snprintf(nums[nn], sizeof(nums[0]), "%llu", (unsigned long long)rt->limit);
                args[na++] = nums[nn++];
                snprintf(nums[nn], sizeof(nums[0]), "%llu", (unsigned long long)rt->window_ms);
                args[na++] = nums[nn++];
            }
        }
        char nkeys[16];
        snprintf(nkeys, sizeof(nkeys), "%d", nk);
        int argc = 0;
        argv[argc++] = "EVAL";
        argv[argc++] = keel__rl_gcra_lua;
        argv[argc++] = nkeys;
        for (int i = 0; i < nk; i++)
            argv[argc++] = kv[i];
        for (int i = 0; i < na; i++)
            argv[argc++] = args[i];
        for (int i = 0; i < argc; i++)
            lens[i] = strlen(argv[i]);
        redisReply *rep = redisCommandArgv(ctx, argc, argv, lens);
        assert_non_null(rep);
        if (rep->type == REDIS_REPLY_ERROR)
            fail_msg("script error: %s", rep->str);
        assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
        assert_int_equal(rep->elements, 5 * M);
        for (int c = 0; c < M; c++) {
            keel_rl_result want;
            size_t want_idx = 0;
            uint64_t limits[2];
            for (int i = 0; i < chain_n[c]; i++) {
                const keel_rl_rate *rt = &rates[chain_r[c][i]];
                limits[i] = rt->limit;
                want_idx = (size_t)i;
                keel_gcra(&tats[chain_k[c][i]], now, rt, &want);
                if (!want.allowed)
                    break;
            }
            refused += !want.allowed;
            redisReply group = {.type = REDIS_REPLY_ARRAY, .elements = 5,
                                .element = rep->element + 5 * c};
            keel_rl_result got;
            size_t got_idx = 9;
            assert_int_equal(keel__rl_parse_reply(&group, limits, (size_t)chain_n[c], &got_idx,
                                                  &got), 0);
            if (got_idx != want_idx || memcmp(&want, &got, sizeof(want)) != 0)
                fail_msg("round %d chain %d: C check %zu allowed=%d rem=%llu, Lua check %zu "
                         "allowed=%d rem=%llu", round, c, want_idx, want.allowed,
                         (unsigned long long)want.remaining, got_idx, got.allowed,
                         (unsigned long long)got.remaining);
        }
        freeReplyObject(rep);
    }
    assert_true(refused > 20); /* the batches did refuse, and the parity held */
    for (int k = 0; k < NK; k++)
        del_key(keys[k]);
}

static void test_reply_parsing_refuses_odd_shapes(void **state)
{
    (void)state;
    keel_rl_result res;
    uint64_t limits[2] = {5, 7};
    size_t idx;
    assert_int_equal(keel__rl_parse_reply(NULL, limits, 2, &idx, &res), KEEL_EPROTO);
    redisReply r = {.type = REDIS_REPLY_INTEGER};
    assert_int_equal(keel__rl_parse_reply(&r, limits, 2, &idx, &res), KEEL_EPROTO);
    /* {index, allowed, remaining, reset, retry}: the index must name a check */
    redisReply e[5], *el[5];
    for (int i = 0; i < 5; i++) {
        e[i] = (redisReply){.type = REDIS_REPLY_INTEGER, .integer = 1};
        el[i] = &e[i];
    }
    redisReply arr = {.type = REDIS_REPLY_ARRAY, .elements = 5, .element = el};
    e[0].integer = 2;
    assert_int_equal(keel__rl_parse_reply(&arr, limits, 2, &idx, &res), 0);
    assert_int_equal(idx, 1);
    assert_int_equal(res.limit, 7);
    assert_true(res.allowed);
    e[0].integer = 3;
    assert_int_equal(keel__rl_parse_reply(&arr, limits, 2, &idx, &res), KEEL_EPROTO);
    e[0].integer = 0;
    assert_int_equal(keel__rl_parse_reply(&arr, limits, 2, &idx, &res), KEEL_EPROTO);
    e[0].integer = 1;
    e[3].integer = -1;
    assert_int_equal(keel__rl_parse_reply(&arr, limits, 2, &idx, &res), KEEL_EPROTO);
    e[3].integer = 1;
    arr.elements = 4; /* the old single-key shape */
    assert_int_equal(keel__rl_parse_reply(&arr, limits, 2, &idx, &res), KEEL_EPROTO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parity_with_keel_gcra),
        cmocka_unit_test(test_chain_parity_with_keel_gcra_in_turn),
        cmocka_unit_test(test_chain_charges_up_to_the_refusal),
        cmocka_unit_test(test_batch_is_the_chains_in_turn),
        cmocka_unit_test(test_reply_parsing_refuses_odd_shapes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
