/* test_cron.c — cron expressions: a table of (expression, after, next)
 * cases — month ends, leap years, 29 February, the day-of-month /
 * day-of-week OR rule, steps, ranges with steps, names, macros, fixed
 * intervals, fixed offsets —, a table of refused expressions with the
 * field their message must name, the missed-tick policy, and CRON_JOBS. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "keel/common.h"
#include "keel/cron.h"

static int64_t at(const char *iso) /* "2024-02-28 23:59:30" UTC */
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (sscanf(iso, "%d-%d-%d %d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec) != 6)
        fail_msg("bad time %s", iso);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm);
}

static void fmt(int64_t t, char *out, size_t cap)
{
    if (t < 0) {
        snprintf(out, cap, "none");
        return;
    }
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, cap, "%Y-%m-%d %H:%M:%S", &tm);
}

typedef struct ncase {
    const char *expr, *after, *next;
} ncase;

static const ncase next_cases[] = {
    /* every minute, strictly after */
    {"* * * * *", "2024-01-01 00:00:00", "2024-01-01 00:01:00"},
    {"* * * * *", "2024-01-01 00:00:59", "2024-01-01 00:01:00"},
    {"* * * * *", "2023-12-31 23:59:30", "2024-01-01 00:00:00"},
    /* steps */
    {"*/15 * * * *", "2024-01-01 00:00:00", "2024-01-01 00:15:00"},
    {"*/15 * * * *", "2024-01-01 00:44:59", "2024-01-01 00:45:00"},
    {"*/15 * * * *", "2024-01-01 23:45:00", "2024-01-02 00:00:00"},
    {"1-30/7 * * * *", "2024-01-01 00:00:00", "2024-01-01 00:01:00"},
    {"1-30/7 * * * *", "2024-01-01 00:01:00", "2024-01-01 00:08:00"},
    {"1-30/7 * * * *", "2024-01-01 00:22:00", "2024-01-01 00:29:00"},
    {"1-30/7 * * * *", "2024-01-01 00:29:00", "2024-01-01 01:01:00"},
    {"5/20 * * * *", "2024-01-01 00:06:00", "2024-01-01 00:25:00"},
    {"0 */6 * * *", "2024-01-01 06:00:00", "2024-01-01 12:00:00"},
    /* lists and ranges */
    {"0,30 9-17 * * *", "2024-01-01 17:30:00", "2024-01-02 09:00:00"},
    {"0,30 9-17 * * *", "2024-01-01 08:59:59", "2024-01-01 09:00:00"},
    {"15,45 1,13 * * *", "2024-01-01 13:45:00", "2024-01-02 01:15:00"},
    /* month ends */
    {"0 0 31 * *", "2024-01-31 00:00:00", "2024-03-31 00:00:00"},
    {"0 0 31 * *", "2024-04-01 00:00:00", "2024-05-31 00:00:00"},
    {"0 0 30 * *", "2024-01-30 00:00:00", "2024-03-30 00:00:00"},
    {"59 23 31 12 *", "2024-01-01 00:00:00", "2024-12-31 23:59:00"},
    {"59 23 31 12 *", "2024-12-31 23:59:00", "2025-12-31 23:59:00"},
    /* leap years and 29 February */
    {"0 0 29 2 *", "2023-03-01 00:00:00", "2024-02-29 00:00:00"},
    {"0 0 29 2 *", "2024-02-29 00:00:00", "2028-02-29 00:00:00"},
    {"0 0 29 2 *", "2096-03-01 00:00:00", "2104-02-29 00:00:00"}, /* 2100 is no leap year */
    {"0 0 29 2 *", "1999-01-01 00:00:00", "2000-02-29 00:00:00"}, /* 2000 is */
    {"0 12 28-29 2 *", "2023-02-28 12:00:00", "2024-02-28 12:00:00"},
    {"0 12 28-29 2 *", "2024-02-28 12:00:00", "2024-02-29 12:00:00"},
    {"0 0 1 3 *", "2024-02-29 23:59:00", "2024-03-01 00:00:00"},
    /* day-of-month OR day-of-week when both are restricted */
    {"0 0 13 * FRI", "2024-09-01 00:00:00", "2024-09-06 00:00:00"}, /* a Friday */
    {"0 0 13 * FRI", "2024-09-12 00:00:00", "2024-09-13 00:00:00"}, /* the 13th */
    {"0 0 1,15 * 1", "2024-01-01 00:00:00", "2024-01-08 00:00:00"}, /* a Monday */
    {"0 0 1,15 * 1", "2024-01-29 00:00:00", "2024-02-01 00:00:00"}, /* the 1st */
    /* ... and AND when one of them starts with '*' */
    {"0 0 * * FRI", "2024-09-06 00:00:00", "2024-09-13 00:00:00"},
    {"0 0 13 * *", "2024-09-06 00:00:00", "2024-09-13 00:00:00"},
    {"0 0 */10 * MON", "2024-01-01 00:00:00", "2024-03-11 00:00:00"}, /* dom starts with *: 1,11,21,31 AND Monday */
    {"0 0 1-7 * */7", "2024-01-01 00:00:00", "2024-01-07 00:00:00"},  /* first Sunday */
    /* names, 7 as Sunday, case-insensitive */
    {"0 9 * JAN-MAR mon-fri", "2024-03-29 09:00:00", "2025-01-01 09:00:00"},
    {"0 0 * * 7", "2024-01-01 00:00:00", "2024-01-07 00:00:00"},
    /* 7/n: from Sunday (as 7) to the end of the week: Sunday alone (fuzz_cron) */
    {"50 * * 2 7/3", "2024-01-01 00:00:00", "2024-02-04 00:50:00"},
    {"0 0 * * 5-7", "2024-01-01 00:00:00", "2024-01-05 00:00:00"},
    {"0 0 * * SAT-SUN", "2024-01-06 00:00:00", "2024-01-07 00:00:00"},
    {"0 0 1 jun,Dec *", "2024-06-01 00:00:00", "2024-12-01 00:00:00"},
    /* macros */
    {"@hourly", "2024-01-01 10:30:00", "2024-01-01 11:00:00"},
    {"@daily", "2024-01-01 10:30:00", "2024-01-02 00:00:00"},
    {"@midnight", "2024-01-01 00:00:00", "2024-01-02 00:00:00"},
    {"@weekly", "2024-01-01 10:30:00", "2024-01-07 00:00:00"},
    {"@monthly", "2024-01-31 10:30:00", "2024-02-01 00:00:00"},
    {"@yearly", "2024-01-01 00:00:00", "2025-01-01 00:00:00"},
    {"@annually", "2023-06-01 00:00:00", "2024-01-01 00:00:00"},
    /* fixed intervals, aligned to the epoch */
    {"@every 30s", "2024-01-01 00:00:00", "2024-01-01 00:00:30"},
    {"@every 30s", "2024-01-01 00:00:29", "2024-01-01 00:00:30"},
    {"@every 5m", "2024-01-01 00:03:00", "2024-01-01 00:05:00"},
    {"@every 1h30m", "2024-01-01 00:00:00", "2024-01-01 01:30:00"},
    {"@every 1d", "2024-01-01 00:00:00", "2024-01-02 00:00:00"},
    /* fixed offsets: the fields are local time at that offset */
    {"CRON_TZ=+02:00 0 9 * * *", "2024-01-01 00:00:00", "2024-01-01 07:00:00"},
    {"CRON_TZ=-05:00 0 0 1 * *", "2024-01-01 00:00:00", "2024-01-01 05:00:00"},
    {"CRON_TZ=+05:30 30 0 * * *", "2024-01-01 00:00:00", "2024-01-01 19:00:00"},
    {"CRON_TZ=UTC 0 0 * * *", "2024-01-01 00:00:00", "2024-01-02 00:00:00"},
    {"CRON_TZ=+14 0 0 29 2 *", "2024-01-01 00:00:00", "2024-02-28 10:00:00"},
    /* spaces and tabs */
    {"  0\t0  *  *  *  ", "2024-01-01 00:00:00", "2024-01-02 00:00:00"},
};

static void test_next_cases(void **state)
{
    (void)state;
    int bad = 0;
    for (size_t i = 0; i < sizeof(next_cases) / sizeof(next_cases[0]); i++) {
        const ncase *k = &next_cases[i];
        keel_cron c;
        char err[200];
        if (keel_cron_parse(k->expr, &c, err, sizeof(err)) < 0) {
            fprintf(stderr, "case %zu \"%s\": refused: %s\n", i, k->expr, err);
            bad++;
            continue;
        }
        int64_t got = keel_cron_next(&c, at(k->after));
        if (got != at(k->next)) {
            char g[40];
            fmt(got, g, sizeof(g));
            fprintf(stderr, "case %zu \"%s\" after %s: got %s, want %s\n", i, k->expr, k->after,
                    g, k->next);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

/* A brute-force oracle: for random expressions built from pieces, the
 * next fire time equals the first minute after `after` whose broken-down
 * time matches the fields (checked with gmtime, minute by minute). */
static int oracle_match(const keel_cron *c, int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    int dom = (c->mdays >> tm.tm_mday) & 1, dow = (c->wdays >> tm.tm_wday) & 1;
    int day = (!c->dom_star && !c->dow_star) ? (dom || dow) : (dom && dow);
    return ((c->minutes >> tm.tm_min) & 1) && ((c->hours >> tm.tm_hour) & 1) && day &&
           ((c->months >> (tm.tm_mon + 1)) & 1);
}

static void test_next_oracle(void **state)
{
    (void)state;
    static const char *const mins[] = {"*", "0", "*/7", "5-50/13", "1,2,59"};
    static const char *const hours[] = {"*", "0", "23", "*/5", "8-17"};
    static const char *const doms[] = {"*", "1", "31", "15-20", "*/9", "29"};
    static const char *const mons[] = {"*", "2", "FEB,AUG", "*/4", "11-12"};
    static const char *const dows[] = {"*", "0", "MON-FRI", "6,7", "*/3"};
    srand(7);
    int checked = 0;
    for (int i = 0; i < 300; i++) {
        char e[128];
        snprintf(e, sizeof(e), "%s %s %s %s %s", mins[rand() % 5], hours[rand() % 5],
                 doms[rand() % 6], mons[rand() % 5], dows[rand() % 5]);
        keel_cron c;
        if (keel_cron_parse(e, &c, NULL, 0) < 0)
            continue; /* e.g. 31 February */
        int64_t after = at("2023-01-01 00:00:00") + (int64_t)(rand() % (3 * 365)) * 86400 +
                        rand() % 86400;
        int64_t got = keel_cron_next(&c, after);
        assert_true(got > after);
        assert_int_equal(got % 60, 0);
        assert_true(oracle_match(&c, got));
        /* no match in between: step days when the day cannot match */
        int64_t stop = got < after + 60 * 86400 ? got : after + 60 * 86400;
        for (int64_t t = (after / 60 + 1) * 60; t < stop; t += 60)
            if (oracle_match(&c, t))
                fail_msg("%s after %lld: missed %lld (got %lld)", e, (long long)after,
                         (long long)t, (long long)got);
        checked++;
    }
    assert_true(checked > 100);
}

typedef struct bcase {
    const char *expr, *needle;
} bcase;

static const bcase bad_cases[] = {
    {"", "expected 5 fields"},
    {"* * * *", "got 4"},
    {"* * * * * *", "got more"},
    {"60 * * * *", "minute: 60 is out of range 0-59"},
    {"* 24 * * *", "hour: 24 is out of range 0-23"},
    {"* * 0 * *", "day-of-month: 0 is out of range 1-31"},
    {"* * 32 * *", "day-of-month: 32"},
    {"* * * 13 *", "month: 13 is out of range 1-12"},
    {"* * * 0 *", "month: 0"},
    {"* * * * 8", "day-of-week: 8 is out of range 0-7"},
    {"* * * FOO *", "month: unknown name \"FOO\""},
    {"* * * * FUNDAY", "day-of-week: unknown name"},
    {"MON * * * *", "minute: names are not allowed"},
    {"*/0 * * * *", "minute: a step of 0"},
    {"*/ * * * *", "minute: a step needs a number"},
    {"*/61 * * * *", "minute: step 61"},
    {"30-10 * * * *", "minute: range 30-10 runs backwards"},
    {"* * * * FRI-MON", "day-of-week: range 5-1 runs backwards"},
    {"1,,2 * * * *", "minute: empty list item"},
    {"1, * * * *", "minute: empty list item"},
    {",1 * * * *", "minute: empty list item"},
    {"1-2-3 * * * *", "minute: unexpected character '-'"},
    {"? * * * *", "minute: unexpected character '?'"},
    {"* * L * *", "day-of-month: names are not allowed"},
    {"99999999999 * * * *", "minute: number too large"},
    {"0 0 30 2 *", "never fire"},
    {"0 0 31 4,6,9,11 *", "never fire"},
    {"@often", "unknown macro"},
    {"@daily 5", "takes no fields"},
    {"@every", "an interval is missing"},
    {"@every 0s", "at least 1s"},
    {"@every 10", "needs a unit"},
    {"@every 1w", "needs a unit"},
    {"@every 400d", "longer than 366 days"},
    {"@every -5s", "expected a number"},
    {"CRON_TZ=Europe/Paris 0 0 * * *", "CRON_TZ: expected UTC or a fixed offset"},
    {"CRON_TZ=+15:00 0 0 * * *", "CRON_TZ: offset out of range"},
    {"CRON_TZ=+02:60 0 0 * * *", "CRON_TZ: offset out of range"},
    {"0 0 * * *\n", "control character"},
};

static void test_refused(void **state)
{
    (void)state;
    int bad = 0;
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        keel_cron c;
        char err[200] = "";
        int rc = keel_cron_parse(bad_cases[i].expr, &c, err, sizeof(err));
        if (rc != KEEL_EINVAL || !strstr(err, bad_cases[i].needle)) {
            fprintf(stderr, "case \"%s\": rc %d, message \"%s\", want \"%s\"\n",
                    bad_cases[i].expr, rc, err, bad_cases[i].needle);
            bad++;
        }
    }
    char big[400];
    memset(big, '1', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    char err[200];
    keel_cron c;
    assert_int_equal(keel_cron_parse(big, &c, err, sizeof(err)), KEEL_EINVAL);
    assert_non_null(strstr(err, "longer than"));
    assert_int_equal(keel_cron_parse(NULL, &c, NULL, 0), KEEL_EINVAL);
    assert_int_equal(bad, 0);
}

/* After downtime a missed tick runs once: due() yields the latest slot,
 * never one per slot, and nothing when no slot passed. */
static void test_due(void **state)
{
    (void)state;
    keel_cron c;
    assert_int_equal(keel_cron_parse("*/15 * * * *", &c, NULL, 0), 0);
    int64_t last = at("2024-01-01 10:00:00");
    /* nothing due before the next slot */
    assert_int_equal(keel_cron_due(&c, last, at("2024-01-01 10:14:59")), -1);
    assert_int_equal(keel_cron_due(&c, last, last), -1);
    assert_int_equal(keel_cron_due(&c, last, last - 100), -1);
    /* exactly at the slot */
    assert_int_equal(keel_cron_due(&c, last, at("2024-01-01 10:15:00")), at("2024-01-01 10:15:00"));
    /* down three days: one tick, the latest slot */
    int64_t now = at("2024-01-04 07:52:10");
    int64_t t = keel_cron_due(&c, last, now);
    assert_int_equal(t, at("2024-01-04 07:45:00"));
    /* once it ran, nothing more is due until the next slot */
    assert_int_equal(keel_cron_due(&c, t, now), -1);
    assert_int_equal(keel_cron_next(&c, now), at("2024-01-04 08:00:00"));

    /* a yearly schedule missed for years */
    assert_int_equal(keel_cron_parse("0 0 29 2 *", &c, NULL, 0), 0);
    assert_int_equal(keel_cron_due(&c, at("2001-01-01 00:00:00"), at("2025-06-01 00:00:00")),
                     at("2024-02-29 00:00:00"));
    assert_int_equal(keel_cron_due(&c, at("2024-02-29 00:00:00"), at("2025-06-01 00:00:00")), -1);

    /* fixed intervals */
    assert_int_equal(keel_cron_parse("@every 30s", &c, NULL, 0), 0);
    assert_int_equal(keel_cron_due(&c, at("2024-01-01 00:00:00"), at("2024-01-01 01:00:10")),
                     at("2024-01-01 01:00:00"));
    assert_int_equal(keel_cron_due(&c, at("2024-01-01 00:00:00"), at("2024-01-01 00:00:29")), -1);

    /* with an offset */
    assert_int_equal(keel_cron_parse("CRON_TZ=+02:00 0 9 * * *", &c, NULL, 0), 0);
    assert_int_equal(keel_cron_due(&c, at("2024-01-01 00:00:00"), at("2024-01-05 06:00:00")),
                     at("2024-01-04 07:00:00"));

    /* OR rule over a long gap */
    assert_int_equal(keel_cron_parse("0 0 13 * FRI", &c, NULL, 0), 0);
    assert_int_equal(keel_cron_due(&c, at("2024-01-01 00:00:00"), at("2024-09-13 12:00:00")),
                     at("2024-09-13 00:00:00"));
}

static void test_jobs(void **state)
{
    (void)state;
    keel_cron_entry *v;
    size_t n;
    char err[300];
    assert_int_equal(keel_cron_jobs_parse(" cleanup = 0 3 * * * => sessions.prune ;"
                                          "digest=@every 15m=>mail.digest;\n"
                                          "tz = CRON_TZ=+01:00 0 9 * * MON-FRI => report:daily;",
                                          &v, &n, err, sizeof(err)),
                     0);
    assert_int_equal(n, 3);
    assert_string_equal(v[0].name, "cleanup");
    assert_string_equal(v[0].expr, "0 3 * * *");
    assert_string_equal(v[0].kind, "sessions.prune");
    assert_string_equal(v[1].name, "digest");
    assert_int_equal(v[1].cron.every_s, 900);
    assert_string_equal(v[2].kind, "report:daily");
    assert_int_equal(v[2].cron.offset_s, 3600);
    keel_free(v);

    assert_int_equal(keel_cron_jobs_parse("", &v, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 0);
    assert_null(v);
    assert_int_equal(keel_cron_jobs_parse(NULL, &v, &n, err, sizeof(err)), 0);
    assert_int_equal(keel_cron_jobs_parse(" ; ;", &v, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 0);

    static const bcase bad[] = {
        {"a=* * * * *", "entry 1: expected name = expression => kind"},
        {"a=>b", "entry 1: expected"},
        {"ok=@daily=>k; bad=61 * * * *=>k", "entry 2 (bad): minute: 61 is out of range"},
        {"a b=@daily=>k", "entry 1: the name"},
        {"=@daily=>k", "entry 1: the name"},
        {"a=@daily=>", "entry 1 (a): the kind"},
        {"a=@daily=>k k", "the kind"},
        {"a=@daily=>k;a=@hourly=>k", "entry 2: the name a is used twice"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        int rc = keel_cron_jobs_parse(bad[i].expr, &v, &n, err, sizeof(err));
        if (rc != KEEL_EINVAL || !strstr(err, bad[i].needle))
            fail_msg("\"%s\": rc %d \"%s\", want \"%s\"", bad[i].expr, rc, err, bad[i].needle);
        assert_null(v);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_next_cases), cmocka_unit_test(test_next_oracle),
        cmocka_unit_test(test_refused),    cmocka_unit_test(test_due),
        cmocka_unit_test(test_jobs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
