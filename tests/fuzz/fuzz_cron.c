/* fuzz_cron.c — libFuzzer driver for keel_cron_parse, keel_cron_next,
 * keel_cron_due and keel_cron_jobs_parse.
 *
 * Each input is taken as an expression (a NUL-terminated heap copy) and
 * as a CRON_JOBS list. Checks: no crash or overread; a refusal leaves a
 * message; an accepted expression has a next fire time strictly after
 * `after` that is a whole minute (cron) or a multiple of the interval
 * (@every), keel_cron_next is monotonic over two calls, and keel_cron_due
 * yields either nothing or one time in (last, now] that is a fire time.
 *
 *   make build/fuzz/fuzz_cron
 *   build/fuzz/fuzz_cron -dict=tests/fuzz/fuzz_cron.dict tests/fuzz/corpus/fuzz_cron
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/common.h"
#include "keel/cron.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "fuzz_cron: check failed: %s (line %d)\n", #cond, __LINE__);   \
            abort();                                                                        \
        }                                                                                   \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    keel_cron c;
    char err[200];
    err[0] = 'x';
    if (keel_cron_parse(s, &c, err, sizeof(err)) == 0) {
        /* a time derived from the input, within a few centuries of now */
        int64_t after = 1700000000 + (int64_t)(size * 7919 % 2000000000);
        int64_t n = keel_cron_next(&c, after);
        CHECK(n > after);
        if (c.every_s)
            CHECK((n + c.offset_s) % (int64_t)c.every_s == 0);
        else
            CHECK((n + c.offset_s) % 60 == 0);
        int64_t n2 = keel_cron_next(&c, n);
        CHECK(n2 > n);
        int64_t now = n2 + (int64_t)(size % 5) * 86400 * 40;
        int64_t d = keel_cron_due(&c, after, now);
        CHECK(d >= n && d <= now);
        CHECK(keel_cron_next(&c, d - 1) == d);
        int64_t nd = keel_cron_next(&c, d);
        CHECK(nd > now || nd < 0);
        CHECK(keel_cron_due(&c, d, d) == -1);
    } else {
        CHECK(err[0] != '\0' && err[0] != 'x');
    }
    keel_cron_entry *v = NULL;
    size_t n = 0;
    if (keel_cron_jobs_parse(s, &v, &n, err, sizeof(err)) == 0) {
        for (size_t i = 0; i < n; i++) {
            CHECK(v[i].name[0] && v[i].kind[0]);
            keel_cron again;
            CHECK(keel_cron_parse(v[i].expr, &again, NULL, 0) == 0);
        }
        keel_free(v);
    } else {
        CHECK(v == NULL && err[0]);
    }
    free(s);
    return 0;
}
