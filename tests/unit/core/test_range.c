/* test_range.c — Range parsing, entity-tag comparison, HTTP dates and
 * preconditions (keel/range.h). Cases are data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "keel/range.h"

typedef struct rcase {
    const char *value;
    uint64_t size;
    int want;
    const char *ranges; /* "first-last,..." when want > 0 */
} rcase;

static const rcase rcases[] = {
    {"bytes=0-0", 10, 1, "0-0"},
    {"bytes=0-4", 10, 1, "0-4"},
    {"bytes=5-", 10, 1, "5-9"},
    {"bytes=-3", 10, 1, "7-9"},
    {"bytes=-30", 10, 1, "0-9"},
    {"bytes=0-99", 10, 1, "0-9"},
    {"bytes=0-1,4-5", 10, 2, "0-1,4-5"},
    {"bytes=4-5, 0-1", 10, 2, "4-5,0-1"},
    {"bytes=0-1,2-3", 10, 2, "0-1,2-3"},            /* adjacent: not overlapping */
    {"BYTES=0-1", 10, 1, "0-1"},                      /* the unit is case-insensitive */
    {"bytes=0-1, ,3-4", 10, 2, "0-1,3-4"},            /* empty list elements */
    {"bytes=0-1,20-30", 10, 1, "0-1"},                /* unsatisfiable one dropped */
    {"bytes=99999999999999999999999-", 10, KEEL_RANGE_UNSATISFIABLE, NULL},
    {"bytes=0-99999999999999999999999", 10, 1, "0-9"},
    {"bytes=10-", 10, KEEL_RANGE_UNSATISFIABLE, NULL},
    {"bytes=10-20", 10, KEEL_RANGE_UNSATISFIABLE, NULL},
    {"bytes=-0", 10, KEEL_RANGE_UNSATISFIABLE, NULL},
    {"bytes=0-0", 0, KEEL_RANGE_UNSATISFIABLE, NULL},
    {"bytes=-5", 0, KEEL_RANGE_UNSATISFIABLE, NULL},
    {"bytes=0-4,2-6", 10, KEEL_RANGE_REFUSED, NULL},  /* overlapping */
    {"bytes=0-4,-6", 10, KEEL_RANGE_REFUSED, NULL},   /* overlapping once resolved */
    {"bytes=0-1,0-1", 10, KEEL_RANGE_REFUSED, NULL},
    {"bytes=0-0,1-1,2-2,3-3,4-4", 10, KEEL_RANGE_REFUSED, NULL}, /* over the cap of 4 */
    {"bytes=0-0,1-1,2-2,3-3", 10, 4, "0-0,1-1,2-2,3-3"},
    /* ignored: the full 200 */
    {"bytes=5-4", 10, KEEL_RANGE_IGNORE, NULL},
    {"bytes=", 10, KEEL_RANGE_IGNORE, NULL},
    {"bytes=a-b", 10, KEEL_RANGE_IGNORE, NULL},
    {"bytes=1", 10, KEEL_RANGE_IGNORE, NULL},
    {"bytes=-", 10, KEEL_RANGE_IGNORE, NULL},
    {"bytes=0-1;x", 10, KEEL_RANGE_IGNORE, NULL},
    {"bytes 0-1", 10, KEEL_RANGE_IGNORE, NULL},
    {"items=0-1", 10, KEEL_RANGE_IGNORE, NULL},
    {"", 10, KEEL_RANGE_IGNORE, NULL},
};

static void test_range_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rcases) / sizeof(rcases[0]); i++) {
        const rcase *c = &rcases[i];
        keel_byte_range out[4];
        int n = keel_range_parse(keel_str_c(c->value), c->size, out, 4);
        if (n != c->want) {
            fprintf(stderr, "range \"%s\" (size %llu): %d, want %d\n", c->value,
                    (unsigned long long)c->size, n, c->want);
            fail();
        }
        if (n > 0) {
            char got[128] = "";
            size_t gl = 0;
            for (int k = 0; k < n; k++)
                gl += (size_t)snprintf(got + gl, sizeof(got) - gl, "%s%llu-%llu", k ? "," : "",
                                       (unsigned long long)out[k].first,
                                       (unsigned long long)out[k].last);
            if (strcmp(got, c->ranges) != 0) {
                fprintf(stderr, "range \"%s\": %s, want %s\n", c->value, got, c->ranges);
                fail();
            }
        }
    }
    assert_int_equal(keel_range_parse(KEEL_STR_NULL, 10, NULL, 0), KEEL_RANGE_IGNORE);
}

static void test_etag_lists(void **state)
{
    (void)state;
    const char *e = "\"abc\"";
    assert_int_equal(keel_etag_list_match(KEEL_STR("\"abc\""), e, 1), 1);
    assert_int_equal(keel_etag_list_match(KEEL_STR("\"x\", \"abc\""), e, 1), 1);
    assert_int_equal(keel_etag_list_match(KEEL_STR("W/\"abc\""), e, 1), 0);
    assert_int_equal(keel_etag_list_match(KEEL_STR("W/\"abc\""), e, 0), 1);
    assert_int_equal(keel_etag_list_match(KEEL_STR("*"), e, 1), 1);
    assert_int_equal(keel_etag_list_match(KEEL_STR(" * "), e, 0), 1);
    assert_int_equal(keel_etag_list_match(KEEL_STR("\"abcd\""), e, 0), 0);
    assert_int_equal(keel_etag_list_match(KEEL_STR("abc"), e, 0), 0);
    assert_int_equal(keel_etag_list_match(KEEL_STR("\"ab"), e, 0), 0);
    assert_int_equal(keel_etag_list_match(KEEL_STR("\"x\" \"abc\""), e, 0), 0);
    assert_int_equal(keel_etag_list_match(KEEL_STR(""), e, 0), 0);
}

static void test_dates(void **state)
{
    (void)state;
    time_t t;
    assert_int_equal(keel_http_date_parse(KEEL_STR("Sun, 06 Nov 1994 08:49:37 GMT"), &t), 0);
    assert_int_equal((long long)t, 784111777LL);
    assert_int_equal(keel_http_date_parse(KEEL_STR("Sunday, 06-Nov-94 08:49:37 GMT"), &t), 0);
    assert_int_equal((long long)t, 784111777LL);
    assert_int_equal(keel_http_date_parse(KEEL_STR("Sun Nov  6 08:49:37 1994"), &t), 0);
    assert_int_equal((long long)t, 784111777LL);
    assert_int_equal(keel_http_date_parse(KEEL_STR("Sun, 06 Foo 1994 08:49:37 GMT"), &t), -1);
    assert_int_equal(keel_http_date_parse(KEEL_STR("Sun, 32 Nov 1994 08:49:37 GMT"), &t), -1);
    assert_int_equal(keel_http_date_parse(KEEL_STR("Sun, 06 Nov 1994 08:49:37 UTC"), &t), -1);
    assert_int_equal(keel_http_date_parse(KEEL_STR("yesterday"), &t), -1);
    char buf[30];
    keel_http_date_format(784111777, buf);
    assert_string_equal(buf, "Sun, 06 Nov 1994 08:49:37 GMT");
}

static void test_preconditions(void **state)
{
    (void)state;
    const char *e = "\"v1\"";
    time_t mt = 784111777;
    keel_str N = KEEL_STR_NULL;
    keel_str date = KEEL_STR("Sun, 06 Nov 1994 08:49:37 GMT");
    keel_str before = KEEL_STR("Sun, 06 Nov 1994 08:49:36 GMT");
    assert_int_equal(keel_http_preconditions(N, N, N, N, e, mt), 0);
    assert_int_equal(keel_http_preconditions(KEEL_STR("\"v1\""), N, N, N, e, mt), 0);
    assert_int_equal(keel_http_preconditions(KEEL_STR("\"v0\""), N, N, N, e, mt), 412);
    assert_int_equal(keel_http_preconditions(KEEL_STR("W/\"v1\""), N, N, N, e, mt), 412);
    assert_int_equal(keel_http_preconditions(N, KEEL_STR("\"v1\""), N, N, e, mt), 304);
    assert_int_equal(keel_http_preconditions(N, KEEL_STR("W/\"v1\""), N, N, e, mt), 304);
    assert_int_equal(keel_http_preconditions(N, KEEL_STR("\"v0\""), N, N, e, mt), 0);
    assert_int_equal(keel_http_preconditions(N, N, date, N, e, mt), 304);
    assert_int_equal(keel_http_preconditions(N, N, before, N, e, mt), 0);
    /* If-None-Match wins over If-Modified-Since */
    assert_int_equal(keel_http_preconditions(N, KEEL_STR("\"v0\""), date, N, e, mt), 0);
    assert_int_equal(keel_http_preconditions(N, N, N, before, e, mt), 412);
    assert_int_equal(keel_http_preconditions(N, N, N, date, e, mt), 0);
    /* If-Range: strong tags and exact dates only */
    assert_int_equal(keel_if_range_ok(N, e, mt), 1);
    assert_int_equal(keel_if_range_ok(KEEL_STR("\"v1\""), e, mt), 1);
    assert_int_equal(keel_if_range_ok(KEEL_STR("W/\"v1\""), e, mt), 0);
    assert_int_equal(keel_if_range_ok(KEEL_STR("\"v0\""), e, mt), 0);
    assert_int_equal(keel_if_range_ok(date, e, mt), 1);
    assert_int_equal(keel_if_range_ok(before, e, mt), 0);
    assert_int_equal(keel_if_range_ok(KEEL_STR("garbage"), e, mt), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_range_table),
        cmocka_unit_test(test_etag_lists),
        cmocka_unit_test(test_dates),
        cmocka_unit_test(test_preconditions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
