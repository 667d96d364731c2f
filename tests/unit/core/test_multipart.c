/* test_multipart.c — the streaming multipart/form-data parser.
 *
 * Cases are data: each body in cases[] is parsed whole, then split in two
 * at every byte position, then fed one byte at a time; every way must give
 * the same result and the same transcript of parts (names, filenames,
 * data), so a delimiter or header split across reads is never missed or
 * mistaken for data.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "keel/multipart.h"

/* ---------------------------------------------------------------- transcript */

typedef struct rec {
    char log[4096];
    size_t len;
    int stop_at_data; /* a callback error after this many data calls (0: never) */
    int data_calls;
} rec;

static void put(rec *r, const char *s, size_t n)
{
    if (r->len + n < sizeof(r->log)) {
        memcpy(r->log + r->len, s, n);
        r->len += n;
        r->log[r->len] = 0;
    }
}

static int on_begin(void *arg, const keel_multipart_part *p)
{
    rec *r = arg;
    put(r, "[", 1);
    put(r, p->name.ptr, p->name.len);
    if (p->is_file) {
        put(r, "|", 1);
        put(r, p->filename.ptr, p->filename.len);
    }
    if (p->content_type.len) {
        put(r, "|", 1);
        put(r, p->content_type.ptr, p->content_type.len);
    }
    put(r, "]", 1);
    return 0;
}

static int on_data(void *arg, const char *d, size_t n)
{
    rec *r = arg;
    assert_true(n > 0);
    if (r->stop_at_data && ++r->data_calls >= r->stop_at_data)
        return -499;
    put(r, d, n);
    return 0;
}

static int on_end(void *arg)
{
    put(arg, "$", 1);
    return 0;
}

static const keel_multipart_cb CB = {on_begin, on_data, on_end};

typedef struct mp_case {
    const char *name;
    const char *body;
    size_t len; /* 0: strlen(body) */
    int want;   /* 1 complete, -400, -413 */
    const char *transcript; /* when complete */
    keel_multipart_limit limit; /* when -413 */
} mp_case;

#define B "XyZ"
#define CRLF "\r\n"
#define CD "Content-Disposition: form-data; "

static const keel_multipart_limits LIM = {
    .max_body = 4096,
    .max_file_size = 16,
    .max_files = 3,
    .max_fields = 3,
    .max_parts = 5,
    .max_name = 8,
    .max_field_value = 10,
    .max_headers = 3,
    .max_header_bytes = 160,
};

static const mp_case cases[] = {
    {"one field", "--" B CRLF CD "name=\"a\"" CRLF CRLF "hello" CRLF "--" B "--" CRLF, 0, 1,
     "[a]hello$", 0},
    {"file and field",
     "--" B CRLF CD "name=\"f\"; filename=\"x.txt\"" CRLF "Content-Type: text/plain" CRLF CRLF
     "line1\r\nline2" CRLF "--" B CRLF CD "name=t" CRLF CRLF "v" CRLF "--" B "--",
     0, 1, "[f|x.txt|text/plain]line1\r\nline2$[t]v$", 0},
    {"empty file", "--" B CRLF CD "name=\"f\"; filename=\"\"" CRLF CRLF CRLF "--" B "--", 0, 1,
     "[f|]$", 0},
    {"preamble and epilogue",
     "ignored preamble" CRLF "--" B CRLF CD "name=a" CRLF CRLF "1" CRLF "--" B "--" CRLF
     "epilogue --" B CRLF,
     0, 1, "[a]1$", 0},
    {"leading CRLF", CRLF "--" B CRLF CD "name=a" CRLF CRLF "1" CRLF "--" B "--", 0, 1, "[a]1$",
     0},
    {"near-delimiters in data",
     "--" B CRLF CD "name=\"f\"; filename=\"d\"" CRLF CRLF "\r\n--X\r\r\n-" CRLF "--" B "--", 0,
     1, "[f|d]\r\n--X\r\r\n-$", 0},
    {"transport padding", "--" B " \t" CRLF CD "name=a" CRLF CRLF "1" CRLF "--" B "--", 0, 1,
     "[a]1$", 0},
    {"backslash kept", "--" B CRLF CD "name=\"a\\b\"; filename=\"C:\\dir\\x\"" CRLF CRLF CRLF
     "--" B "--", 0, 1, "[a\\b|C:\\dir\\x]$", 0},
    {"no parts", "--" B "--" CRLF, 0, 1, "", 0},
    {"data with NUL", "--" B CRLF CD "name=\"f\"; filename=\"n\"" CRLF CRLF "a\0b" CRLF "--" B "--",
     sizeof("--" B CRLF CD "name=\"f\"; filename=\"n\"" CRLF CRLF "a\0b" CRLF "--" B "--") - 1, 1,
     "[f|n]a", 0},
    /* malformed */
    {"empty body", "", 0, -400, NULL, 0},
    {"unterminated part", "--" B CRLF CD "name=a" CRLF CRLF "abc", 0, -400, NULL, 0},
    {"unterminated headers", "--" B CRLF CD "name=a" CRLF, 0, -400, NULL, 0},
    {"no closing delimiter", "--" B CRLF CD "name=a" CRLF CRLF "abc" CRLF "--" B CRLF, 0, -400,
     NULL, 0},
    {"no delimiter at all", "just text", 0, -400, NULL, 0},
    {"junk after delimiter", "--" B "x" CRLF CD "name=a" CRLF CRLF "1" CRLF "--" B "--", 0, -400,
     NULL, 0},
    {"bare LF header", "--" B CRLF CD "name=a\n" CRLF "1" CRLF "--" B "--", 0, -400, NULL, 0},
    {"bare CR header", "--" B CRLF CD "name=a\rx" CRLF CRLF "1" CRLF "--" B "--", 0, -400, NULL,
     0},
    {"header without colon", "--" B CRLF "Bogus" CRLF CD "name=a" CRLF CRLF "1" CRLF "--" B "--",
     0, -400, NULL, 0},
    {"obs-fold", "--" B CRLF CD CRLF " name=a" CRLF CRLF "1" CRLF "--" B "--", 0, -400, NULL, 0},
    {"no disposition", "--" B CRLF "Content-Type: text/plain" CRLF CRLF "1" CRLF "--" B "--", 0,
     -400, NULL, 0},
    {"no name", "--" B CRLF "Content-Disposition: form-data; filename=\"a\"" CRLF CRLF "1" CRLF
     "--" B "--",
     0, -400, NULL, 0},
    {"empty name", "--" B CRLF CD "name=\"\"" CRLF CRLF "1" CRLF "--" B "--", 0, -400, NULL, 0},
    {"not form-data", "--" B CRLF "Content-Disposition: attachment; name=a" CRLF CRLF "1" CRLF
     "--" B "--",
     0, -400, NULL, 0},
    {"unterminated quote", "--" B CRLF CD "name=\"a" CRLF CRLF "1" CRLF "--" B "--", 0, -400,
     NULL, 0},
    {"two names", "--" B CRLF CD "name=a; name=b" CRLF CRLF "1" CRLF "--" B "--", 0, -400, NULL,
     0},
    {"two dispositions", "--" B CRLF CD "name=a" CRLF CD "name=b" CRLF CRLF "1" CRLF "--" B "--",
     0, -400, NULL, 0},
    {"nested multipart",
     "--" B CRLF CD "name=a" CRLF "Content-Type: multipart/mixed; boundary=q" CRLF CRLF
     "--q--" CRLF "--" B "--",
     0, -400, NULL, 0},
    {"control byte in header", "--" B CRLF CD "name=a\x01" CRLF CRLF "1" CRLF "--" B "--", 0, -400,
     NULL, 0},
    /* limits */
    {"file size exactly", "--" B CRLF CD "name=f; filename=a" CRLF CRLF "0123456789abcdef" CRLF
     "--" B "--",
     0, 1, "[f|a]0123456789abcdef$", 0},
    {"file size over", "--" B CRLF CD "name=f; filename=a" CRLF CRLF "0123456789abcdefg" CRLF
     "--" B "--",
     0, -413, NULL, KEEL_MP_LIMIT_FILE_SIZE},
    {"field value over", "--" B CRLF CD "name=a" CRLF CRLF "0123456789X" CRLF "--" B "--", 0, -413,
     NULL, KEEL_MP_LIMIT_FIELD_VALUE},
    {"name over", "--" B CRLF CD "name=abcdefghi" CRLF CRLF "1" CRLF "--" B "--", 0, -413, NULL,
     KEEL_MP_LIMIT_NAME},
    {"too many headers",
     "--" B CRLF CD "name=a" CRLF "X-A: 1" CRLF "X-B: 1" CRLF "X-C: 1" CRLF CRLF "1" CRLF
     "--" B "--",
     0, -413, NULL, KEEL_MP_LIMIT_HEADERS},
    {"header block over",
     "--" B CRLF CD "name=a" CRLF "X-A: "
     "0123456789012345678901234567890123456789012345678901234567890123456789"
     "0123456789012345678901234567890123456789012345678901234567890123456789" CRLF CRLF "1" CRLF
     "--" B "--",
     0, -413, NULL, KEEL_MP_LIMIT_HEADER_BYTES},
    {"too many files",
     "--" B CRLF CD "name=a; filename=1" CRLF CRLF CRLF "--" B CRLF CD "name=a; filename=2" CRLF
     CRLF CRLF "--" B CRLF CD "name=a; filename=3" CRLF CRLF CRLF "--" B CRLF CD
     "name=a; filename=4" CRLF CRLF CRLF "--" B "--",
     0, -413, NULL, KEEL_MP_LIMIT_FILES},
    {"too many fields",
     "--" B CRLF CD "name=a" CRLF CRLF CRLF "--" B CRLF CD "name=b" CRLF CRLF CRLF "--" B CRLF CD
     "name=c" CRLF CRLF CRLF "--" B CRLF CD "name=d" CRLF CRLF CRLF "--" B "--",
     0, -413, NULL, KEEL_MP_LIMIT_FIELDS},
    {"too many parts",
     "--" B CRLF CD "name=a" CRLF CRLF CRLF "--" B CRLF CD "name=b" CRLF CRLF CRLF "--" B CRLF CD
     "name=c" CRLF CRLF CRLF "--" B CRLF CD "name=d; filename=x" CRLF CRLF CRLF "--" B CRLF CD
     "name=e; filename=y" CRLF CRLF CRLF "--" B CRLF CD "name=f; filename=z" CRLF CRLF CRLF
     "--" B "--",
     0, -413, NULL, KEEL_MP_LIMIT_PARTS},
};

/* Parses body split at the given points; returns the result and fills r. */
static int run(const mp_case *c, const size_t *cuts, size_t ncuts, rec *r,
               keel_multipart_limit *limit)
{
    keel_multipart m;
    memset(r, 0, sizeof(*r));
    assert_int_equal(keel_multipart_init(&m, KEEL_STR(B), &LIM, &CB, r), 0);
    size_t len = c->len ? c->len : strlen(c->body), prev = 0;
    int rc = 0;
    for (size_t k = 0; k <= ncuts && rc == 0; k++) {
        size_t at = k < ncuts ? cuts[k] : len;
        /* a heap copy of exactly this chunk: an overread is caught by ASan */
        char *chunk = malloc(at - prev + 1);
        memcpy(chunk, c->body + prev, at - prev);
        rc = keel_multipart_feed(&m, chunk, at - prev);
        free(chunk);
        prev = at;
    }
    if (rc == 0)
        rc = keel_multipart_finish(&m);
    *limit = m.limit;
    if (rc < 0)
        assert_non_null(m.error);
    keel_multipart_free(&m);
    return rc;
}

static void check_one(const mp_case *c, const size_t *cuts, size_t ncuts)
{
    rec r;
    keel_multipart_limit l;
    int rc = run(c, cuts, ncuts, &r, &l);
    if (rc != c->want) {
        fprintf(stderr, "case \"%s\" (%zu cuts at %zu): got %d, want %d\n", c->name, ncuts,
                ncuts ? cuts[0] : 0, rc, c->want);
        fail();
    }
    if (rc == 1 && strcmp(r.log, c->transcript) != 0) {
        fprintf(stderr, "case \"%s\": transcript \"%s\", want \"%s\"\n", c->name, r.log,
                c->transcript);
        fail();
    }
    if (rc == -413 && l != c->limit) {
        fprintf(stderr, "case \"%s\": limit %s, want %s\n", c->name, keel_multipart_limit_name(l),
                keel_multipart_limit_name(c->limit));
        fail();
    }
}

static void test_cases_every_split(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const mp_case *c = &cases[i];
        size_t len = c->len ? c->len : strlen(c->body);
        check_one(c, NULL, 0);
        for (size_t at = 0; at <= len; at++)
            check_one(c, &at, 1);
        /* one byte at a time */
        size_t *cuts = malloc((len + 1) * sizeof(size_t));
        for (size_t k = 0; k < len; k++)
            cuts[k] = k + 1;
        check_one(c, cuts, len ? len - 1 : 0);
        free(cuts);
    }
}

static void test_callback_stops(void **state)
{
    (void)state;
    const char *body = "--" B CRLF CD "name=a" CRLF CRLF "0123456789" CRLF "--" B "--";
    keel_multipart m;
    rec r = {.stop_at_data = 1};
    assert_int_equal(keel_multipart_init(&m, KEEL_STR(B), &LIM, &CB, &r), 0);
    assert_int_equal(keel_multipart_feed(&m, body, strlen(body)), -499);
    /* sticky */
    assert_int_equal(keel_multipart_feed(&m, "x", 1), -499);
    assert_int_equal(keel_multipart_finish(&m), -499);
    keel_multipart_free(&m);
}

static void test_body_limit(void **state)
{
    (void)state;
    keel_multipart_limits lim = LIM;
    lim.max_body = 10;
    keel_multipart m;
    rec r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(keel_multipart_init(&m, KEEL_STR(B), &lim, &CB, &r), 0);
    assert_int_equal(keel_multipart_feed(&m, "--" B CRLF "Con", 10), 0);
    assert_int_equal(keel_multipart_feed(&m, "t", 1), -413);
    assert_int_equal(m.limit, KEEL_MP_LIMIT_BODY);
    assert_string_equal(keel_multipart_limit_name(m.limit), "max_body");
    keel_multipart_free(&m);
}

static void test_large_stream_constant_memory(void **state)
{
    (void)state;
    /* 8 MiB of data in 64 KiB chunks with CR and "--" sprinkled in */
    keel_multipart_limits lim = {0};
    keel_multipart m;
    rec r;
    memset(&r, 0, sizeof(r));
    keel_multipart_cb cb = {on_begin, NULL, on_end};
    assert_int_equal(keel_multipart_init(&m, KEEL_STR(B), &lim, &cb, &r), 0);
    const char *head = "--" B CRLF CD "name=f; filename=big" CRLF CRLF;
    assert_int_equal(keel_multipart_feed(&m, head, strlen(head)), 0);
    char chunk[65536];
    for (size_t i = 0; i < sizeof(chunk); i++)
        chunk[i] = (char)(i % 97 == 0 ? '\r' : i % 89 == 0 ? '-' : 'a' + i % 26);
    for (int k = 0; k < 128; k++)
        assert_int_equal(keel_multipart_feed(&m, chunk, sizeof(chunk)), 0);
    const char *tail = CRLF "--" B "--" CRLF;
    assert_int_equal(keel_multipart_feed(&m, tail, strlen(tail)), 0);
    assert_int_equal(keel_multipart_finish(&m), 1);
    assert_int_equal(m.part_bytes, 128 * sizeof(chunk));
    keel_multipart_free(&m);
}

typedef struct bcase {
    const char *ct;
    int want;
    const char *boundary;
} bcase;

static void test_boundary(void **state)
{
    (void)state;
    static const bcase bc[] = {
        {"multipart/form-data; boundary=abc", 0, "abc"},
        {"Multipart/Form-Data;boundary=\"a b:c\"", 0, "a b:c"},
        {"multipart/form-data; charset=utf-8; boundary=----WebKitFormBoundary7MA4YWxk", 0,
         "----WebKitFormBoundary7MA4YWxk"},
        {"multipart/form-data", -400, NULL},
        {"multipart/form-data; boundary=", -400, NULL},
        {"multipart/form-data; boundary=\"\"", -400, NULL},
        {"multipart/form-data; boundary=\"ab \"", -400, NULL},
        {"multipart/form-data; boundary=\"a\\b\"", -400, NULL},
        {"multipart/form-data; boundary=a; boundary=b", -400, NULL},
        {"multipart/form-data; boundary=a;", -400, NULL},
        {"multipart/form-data; boundary=\"a\x01\"", -400, NULL},
        {"multipart/form-data; boundary="
         "12345678901234567890123456789012345678901234567890123456789012345678901",
         -400, NULL},
        {"multipart/mixed; boundary=a", -415, NULL},
        {"multipart/form-datax; boundary=a", -415, NULL},
        {"application/json", -415, NULL},
        {"", -415, NULL},
    };
    for (size_t i = 0; i < sizeof(bc) / sizeof(bc[0]); i++) {
        keel_str out;
        const char *why = NULL;
        int rc = keel_multipart_boundary(keel_str_c(bc[i].ct), &out, &why);
        if (rc != bc[i].want) {
            fprintf(stderr, "boundary case %zu (%s): %d\n", i, bc[i].ct, rc);
            fail();
        }
        if (rc == 0)
            assert_true(keel_str_eq(out, keel_str_c(bc[i].boundary)));
        else
            assert_non_null(why);
    }
    keel_multipart m;
    assert_int_equal(keel_multipart_init(&m, KEEL_STR(""), NULL, NULL, NULL), KEEL_EINVAL);
    keel_multipart_free(&m);
    keel_multipart_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases_every_split),
        cmocka_unit_test(test_callback_stops),
        cmocka_unit_test(test_body_limit),
        cmocka_unit_test(test_large_stream_constant_memory),
        cmocka_unit_test(test_boundary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
