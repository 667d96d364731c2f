/* test_json_dump.c — keel_json_dump (src/core/json.c), the encoder of
 * every JSON response: byte for byte what jansson's json_dumps gives with
 * the flags keel used (JSON_COMPACT | JSON_ENCODE_ANY |
 * JSON_REAL_PRECISION), over a table of values that covers each escape,
 * multi-byte UTF-8, keys with NUL bytes, integer extremes, reals, empty
 * and nested containers in insertion order; and the refusals (invalid
 * UTF-8 made with json_stringn_nocheck, a cycle) leave the buffer as it
 * was. fuzz_json_body compares the two encoders on arbitrary input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "keel/json.h"

static void same_as_jansson(json_t *v, int prec)
{
    char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(prec));
    assert_non_null(want);
    keel_buf b = {0};
    keel_buf_append(&b, "prefix", 6);
    assert_int_equal(keel_json_dump(&b, v, prec), 0);
    assert_int_equal(b.len, 6 + strlen(want));
    if (memcmp(b.data + 6, want, b.len - 6) != 0)
        fail_msg("got %.*s, jansson %s", (int)(b.len - 6), b.data + 6, want);
    keel_buf_free(&b);
    free(want);
}

static void test_table(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "{}", "[]", "null", "true", "false", "0", "-1", "9223372036854775807",
        "-9223372036854775808", "1.5", "0.1", "-2.5e-300", "1e300", "123456789.125",
        "\"\"", "\"plain ascii with spaces and / slash\"",
        "\"quote \\\" backslash \\\\ controls \\b\\f\\n\\r\\t \\u0001 \\u001f \\u007f\"",
        "\"caf\\u00e9 \\u20ac \\ud83d\\ude00 \\u0000 inside\"",
        "{\"z\":1,\"a\":[1,2,{\"k\":null}],\"m\":{\"\":\"\"},\"e\\u00e9\":\"x\"}",
        "[[[[[]]]],{},[{}],\"s\",1,-0,true,false,null]",
        ("{\"id\":\"0f8a\",\"email\":\"a@b.c\",\"role\":\"user\",\"created_at\":1700000000,"
         "\"tags\":[\"x\",\"y\"],\"score\":9.5,\"active\":true}"),
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        json_error_t e;
        json_t *v = json_loads(texts[i], JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
        if (!v)
            fail_msg("%s: %s", texts[i], e.text);
        same_as_jansson(v, 0);
        same_as_jansson(v, 10);
        same_as_jansson(v, 6);
        json_decref(v);
    }
    /* a key with a NUL byte, and every byte value 1..127 in a string */
    json_t *o = json_object();
    json_object_setn_new(o, "a\0b", 3, json_integer(1));
    char all[128];
    for (int c = 1; c < 128; c++)
        all[c - 1] = (char)c;
    json_object_set_new(o, "all", json_stringn(all, 127));
    same_as_jansson(o, 0);
    json_decref(o);
}

static void test_refusals(void **state)
{
    (void)state;
    keel_buf b = {0};
    keel_buf_append(&b, "kept", 4);
    static const char *const bad[] = {"\xff", "\xc0\x80", "\xed\xa0\x80", "a\xe2\x82",
                                      "\xf4\x90\x80\x80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *s = json_stringn_nocheck(bad[i], strlen(bad[i]));
        json_t *a = json_pack("[s,o]", "ok", s);
        assert_null(json_dumps(a, JSON_COMPACT | JSON_ENCODE_ANY)); /* jansson refuses too */
        assert_int_equal(keel_json_dump(&b, a, 0), -1);
        assert_int_equal(b.len, 4);
        json_decref(a);
    }
    json_t *cyc = json_array(), *inner = json_object();
    assert_int_equal(json_array_append(cyc, inner), 0);
    assert_int_equal(json_object_set(inner, "up", cyc), 0); /* a cycle: refused, not a crash */
    assert_int_equal(keel_json_dump(&b, cyc, 0), -1);
    assert_int_equal(b.len, 4);
    json_object_clear(inner);
    json_decref(inner);
    json_decref(cyc);
    assert_int_equal(keel_json_dump(&b, NULL, 0), -1);
    keel_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
