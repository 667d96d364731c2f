/* fuzz_schema.c — the JSON Schema subset of src/schema/schema.c on arbitrary
 * bytes. An input is "SCHEMA\n--\nVALUE": the schema text is compiled (it
 * may be refused, never crash), the value is validated against it — or,
 * when the schema is refused, against a fixed schema using every keyword
 * and format — and:
 *   - the error count is within the cap and matches what was appended;
 *   - every pointer is RFC 6901 (empty or "/"-led, "~" only as ~0 or ~1);
 *   - validating again gives the same errors (no hidden state);
 *   - strings in the value go through coercion and the format checks.
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
    free(stext);

    keel_json_error je;
    json_t *v = keel_json_parse(vtext, vlen, KEEL_JSON_MAX_DEPTH, &je);
    if (v) {
        validate(s ? s : fixed, v);
        if (s)
            validate(fixed, v);
        json_decref(v);
    }
    keel_schema_free(s);
    return 0;
}
