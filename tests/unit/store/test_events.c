/* test_events.c — channel patterns match the way Redis PSUBSCRIBE does
 * (stringmatchlen): a table of cases, each also checked against a real
 * Redis when KEEL_TEST_REDIS_URL is set (make unit runs one). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "keel/events.h"

typedef struct mcase {
    const char *pattern, *channel;
    int match;
} mcase;

static const mcase cases[] = {
    {"*", "anything", 1},
    {"*", "", 0}, /* as Redis: nothing matches an empty name */
    {"orders", "orders", 1},
    {"orders", "orders2", 0},
    {"orders.*", "orders.created", 1},
    {"orders.*", "orders.", 1},
    {"orders.*", "orders", 0},
    {"*.created", "users.created", 1},
    {"*.created", "users.deleted", 0},
    {"a*b*c", "axxbyyc", 1},
    {"a*b*c", "axxbyy", 0},
    {"a**c", "abc", 1},
    {"h?llo", "hello", 1},
    {"h?llo", "hllo", 0},
    {"h[ae]llo", "hallo", 1},
    {"h[ae]llo", "hillo", 0},
    {"h[^e]llo", "hallo", 1},
    {"h[^e]llo", "hello", 0},
    {"h[a-b]llo", "hbllo", 1},
    {"h[b-a]llo", "hallo", 1},
    {"h[a-b]llo", "hcllo", 0},
    {"h\\*llo", "h*llo", 1},
    {"h\\*llo", "hello", 0},
    {"h[\\]]llo", "h]llo", 1},
    {"x[", "x[", 0},
    {"x[ab", "xa", 1},
    {"trailing\\", "trailing\\", 1},
    {"", "", 1},
    {"", "a", 0},
    {"a*", "a", 1},
    {"*a", "a", 1},
    {"?", "", 0},
};

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const mcase *c = &cases[i];
        int got = keel_events_match(c->pattern, strlen(c->pattern), c->channel,
                                    strlen(c->channel));
        if (got != c->match)
            fail_msg("pattern \"%s\" channel \"%s\": got %d, want %d", c->pattern, c->channel,
                     got, c->match);
    }
}

/* The same table against Redis itself: PSUBSCRIBE the pattern, PUBLISH on
 * the channel, and count the receivers. */
static void test_parity_with_redis(void **state)
{
    (void)state;
    const char *url = getenv("KEEL_TEST_REDIS_URL");
    if (!url || strncmp(url, "redis://", 8))
        skip();
    char host[128] = "127.0.0.1";
    int port = 6379;
    sscanf(url + 8, "%127[^:/]:%d", host, &port);
    redisContext *sub = redisConnect(host, port), *pub = redisConnect(host, port);
    assert_non_null(sub);
    assert_non_null(pub);
    assert_int_equal(sub->err, 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const mcase *c = &cases[i];
        if (!*c->channel)
            continue; /* PUBLISH needs a channel name */
        redisReply *r = redisCommand(sub, "PSUBSCRIBE %s", c->pattern);
        assert_non_null(r);
        freeReplyObject(r);
        r = redisCommand(pub, "PUBLISH %s x", c->channel);
        assert_non_null(r);
        assert_int_equal(r->type, REDIS_REPLY_INTEGER);
        long long got = r->integer;
        freeReplyObject(r);
        if (got) {
            assert_int_equal(redisGetReply(sub, (void **)&r), REDIS_OK);
            freeReplyObject(r);
        }
        if ((got > 0) != c->match)
            fail_msg("Redis: pattern \"%s\" channel \"%s\": got %lld", c->pattern, c->channel,
                     got);
        r = redisCommand(sub, "PUNSUBSCRIBE %s", c->pattern);
        assert_non_null(r);
        freeReplyObject(r);
    }
    redisFree(sub);
    redisFree(pub);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_parity_with_redis),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
