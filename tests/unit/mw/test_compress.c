/* test_compress.c — keel_accept_gzip, the Accept-Encoding negotiation of
 * src/mw/compress.c (RFC 9110 §12.5.3): q-values, `*`, case, malformed
 * input. Cases are rows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "keel/mw.h"

#include "table_check.h"

typedef struct ae_case {
    const char *name;
    const char *value; /* NULL: no header */
    int want;
} ae_case;

static const ae_case cases[] = {
    {"no header", NULL, 0},
    {"empty", "", 0},
    {"gzip", "gzip", 1},
    {"GZIP case", "GZip", 1},
    {"x-gzip", "x-gzip", 1},
    {"browser list", "gzip, deflate, br, zstd", 1},
    {"br only", "br", 0},
    {"deflate only", "deflate", 0},
    {"identity", "identity", 0},
    {"gzip q=0", "gzip;q=0", 0},
    {"gzip q=0.000", "gzip; q=0.000", 0},
    {"gzip Q=0", "gzip;Q=0", 0},
    {"gzip q=0.001", "gzip;q=0.001", 1},
    {"gzip q=1", "gzip;q=1", 1},
    {"gzip q=1.000", "gzip;q=1.000", 1},
    {"gzip q=0.5 spaces", "br;q=1.0, gzip ; q=0.5", 1},
    {"identity q=0 alone", "identity;q=0", 0},
    {"identity q=0 with gzip", "gzip, identity;q=0", 1},
    {"star", "*", 1},
    {"star q=0", "*;q=0", 0},
    {"star q=0.1", "*;q=0.1", 1},
    {"gzip q=0 beats star", "gzip;q=0, *", 0},
    {"star q=0 but gzip named", "*;q=0, gzip", 1},
    {"malformed q", "gzip;q=abc", 0},
    {"q above 1", "gzip;q=1.5", 0},
    {"q too many digits", "gzip;q=0.5555", 0},
    {"other params", "gzip;level=9", 1},
    {"gzip prefix not gzip", "gzipper", 0},
    {"leading commas", ", ,gzip", 1},
    {"tab ows", "br,\tgzip", 1},
};

static void test_accept_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const ae_case *c = &cases[i];
        keel_str v = c->value ? keel_str_c(c->value) : KEEL_STR_NULL;
        int got = keel_accept_gzip(v);
        if (got != c->want)
            case_fail(c->name, "\"%s\": got %d, want %d", c->value ? c->value : "(none)", got,
                      c->want);
    }
    assert_int_equal(failures, 0);
}

/* A view that is not NUL-terminated: the parser must stop at len. */
static void test_not_terminated(void **state)
{
    (void)state;
    const char buf[] = "gzip;q=0.5XXXX";
    assert_int_equal(keel_accept_gzip((keel_str){buf, 10}), 1);
    assert_int_equal(keel_accept_gzip((keel_str){buf, 7}), 0); /* "gzip;q=" */
    assert_int_equal(keel_accept_gzip((keel_str){buf, 4}), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_table),
        cmocka_unit_test(test_not_terminated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
