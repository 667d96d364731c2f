/* fuzz_schema.c — the JSON Schema subset of src/schema/schema.c on arbitrary
 * bytes. An input is "SCHEMA\n--\nVALUE": the schema text is compiled (it
 * may be refused, never crash), the value is validated against it — or,
 * when the schema is refused, against a fixed schema using every keyword
 * and format — and:
 *   - the error count is within the cap and matches what was appended;
 *   - every pointer is RFC 6901 (empty or "/"-led, "~" only as ~0 or ~1);
 *   - validating again gives the same errors (no hidden state);
 *   - strings in the value go through coercion and the format checks.
 * The schema is also compiled with options (closed objects, as request
 * bodies are, and a format of the caller's own that describes itself): it
 * compiles exactly when it does without them, unless the closing makes a
 * required member a contradiction; its effective document compiles again
 * with the same options; and a value valid against it is valid against
 * the schema as written (closing only refuses more).
 * Without a separator the whole input is tried as both. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keel/json.h"
#include "keel/schema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char fixed_schema[] =
    "{\"type\":\"object\",\"required\":[\"name\",\"a/b\",\"m~n\"],"
    "\"additionalProperties\":{\"type\":[\"integer\",\"null\"],\"maximum\":100},"
    "\"properties\":{"
    "\"name\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":8,\"pattern\":\"^[a-z]+(-[a-z]+)*$\"},"
    "\"email\":{\"format\":\"email\"},\"id\":{\"format\":\"uuid\"},"
    "\"at\":{\"format\":\"date-time\"},\"url\":{\"format\":\"uri\"},"
    "\"n\":{\"type\":\"number\",\"minimum\":-1.5,\"exclusiveMaximum\":10},"
    "\"e\":{\"enum\":[1,\"x\",null,[1],{\"k\":true}]},\"c\":{\"const\":{\"a\":[1.0]}},"
    "\"a/b\":{\"type\":\"array\",\"minItems\":1,\"maxItems\":3,"
    "\"items\":{\"type\":\"object\",\"additionalProperties\":false,"
    "\"properties\":{\"k\":{\"type\":\"boolean\"}}}},"
    "\"m~n\":true,\"no\":false}}";

static void check_pointer(const char *p)
{
    if (!p || (*p && *p != '/'))
        abort();
    for (; *p; p++)
        if (*p == '~' && p[1] != '0' && p[1] != '1')
            abort();
}

static void formats(const json_t *v, const keel_schema *s, int depth)
{
    if (depth > 8)
        return;
    if (json_is_string(v)) {
        const char *str = json_string_value(v);
        size_t n = json_string_length(v);
        keel_format_email(str, n);
        keel_format_uuid(str, n);
        keel_format_date_time(str, n);
        keel_format_uri(str, n);
        if (keel_utf8_length(str, n) > n)
            abort();
        json_t *c = keel_schema_coerce(s, str, n);
        if (!c)
            abort(); /* jansson strings are UTF-8: coercion cannot fail */
        json_decref(c);
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v) && i < 64; i++)
            formats(json_array_get(v, i), keel_schema_items(s), depth + 1);
    } else if (json_is_object(v)) {
        const char *k;
        json_t *m;
        json_object_foreach((json_t *)v, k, m) formats(m, keel_schema_property(s, k), depth + 1);
    }
}

static void validate(const keel_schema *s, const json_t *v)
{
    json_t *e1 = json_array(), *e2 = json_array();
    size_t n1 = keel_schema_validate(s, v, e1, 16);
    size_t n2 = keel_schema_validate(s, v, e2, 16);
    if (n1 > 17 || json_array_size(e1) != (n1 > 16 ? 16 : n1) || n1 != n2 ||
        !json_equal(e1, e2))
        abort();
    size_t i;
    json_t *e;
    json_array_foreach(e1, i, e) {
        check_pointer(json_string_value(json_object_get(e, "pointer")));
        const char *m = json_string_value(json_object_get(e, "message"));
        if (!m || !*m)
            abort();
    }
    if (keel_schema_validate(s, v, NULL, 0) > 1 || (keel_schema_validate(s, v, NULL, 0) == 0) != (n1 == 0))
        abort();
    formats(v, s, 0);
    json_decref(e1);
    json_decref(e2);
}

static const char *odd_length(const char *str, size_t n, void *data)
{
    (void)str;
    (void)data;
    return n % 2 ? "must have an even length" : NULL;
}

static json_t *describe_even(void *data)
{
    (void)data;
    return json_pack("{s:b}", "x-even", 1);
}

static const keel_schema_format even = {"even", odd_length, describe_even, NULL};
static const keel_schema_options closed = {.formats = &even, .nformats = 1, .closed = 1};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static keel_schema *fixed;
    if (!fixed && !(fixed = keel_schema_compile(fixed_schema, NULL, 0)))
        abort();
    const char *in = (const char *)data;
    const char *sep = size >= 4 ? memmem(in, size, "\n--\n", 4) : NULL;
    size_t slen = sep ? (size_t)(sep - in) : size;
    const char *vtext = sep ? sep + 4 : in;
    size_t vlen = sep ? size - slen - 4 : size;

    char *stext = malloc(slen + 1);
    memcpy(stext, in, slen);
    stext[slen] = '\0';
    char err[256];
    keel_schema *s = keel_schema_compile(stext, err, sizeof(err));
    if (!s && !err[0])
        abort(); /* a refusal always says why */
    keel_schema *sc = keel_schema_compile_with(stext, &closed, err, sizeof(err));
    if (!sc && !err[0])
        abort();
    if (sc && !s && !strstr(stext, "even"))
        abort(); /* options only add the caller's format */
    if (s && !sc && !strstr(err, "is required but") && !strstr(err, "even"))
        abort(); /* closing refuses only a required member it forbids */
    if (sc) {
        /* the effective document means the same again */
        keel_schema *again = keel_schema_compile_json_with(keel_schema_json(sc), &closed, err,
                                                           sizeof(err));
        if (!again)
            abort();
        keel_schema_free(again);
    }
    free(stext);

    keel_json_error je;
    json_t *v = keel_json_parse(vtext, vlen, KEEL_JSON_MAX_DEPTH, &je);
    if (v) {
        validate(s ? s : fixed, v);
        if (s)
            validate(fixed, v);
        if (sc) {
            validate(sc, v);
            if (s && keel_schema_validate(sc, v, NULL, 0) == 0 &&
                keel_schema_validate(s, v, NULL, 0) != 0)
                abort(); /* closed accepts only what open accepts */
        }
        json_decref(v);
    }
    keel_schema_free(sc);
    keel_schema_free(s);
    return 0;
}
