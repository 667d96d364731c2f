/* test_schema.c — the JSON Schema subset of src/schema/schema.c: every
 * keyword, every format, all errors collected at once with RFC 6901
 * pointers, code-point lengths, coercion of query strings, schemas
 * refused at compile time, and the options: closed objects (request
 * bodies) and formats of the caller's own. Cases are rows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>
#include <jansson.h>

#include "keel/schema.h"

#include "table_check.h"

/* A schema, a value and the pointers of the errors expected, in order,
 * comma-separated: "" = valid, "-" = the root pointer (""). */
typedef struct vcase {
    const char *name;
    const char *schema;
    const char *value;
    const char *want;
} vcase;

static const vcase vcases[] = {
    /* type */
    {"type string ok", "{\"type\":\"string\"}", "\"x\"", ""},
    {"type string bad", "{\"type\":\"string\"}", "1", "-"},
    {"type integer 1", "{\"type\":\"integer\"}", "1", ""},
    {"type integer 1.0", "{\"type\":\"integer\"}", "1.0", ""},
    {"type integer 1.5", "{\"type\":\"integer\"}", "1.5", "-"},
    {"type number int", "{\"type\":\"number\"}", "7", ""},
    {"type number str", "{\"type\":\"number\"}", "\"7\"", "-"},
    {"type boolean", "{\"type\":\"boolean\"}", "false", ""},
    {"type boolean bad", "{\"type\":\"boolean\"}", "0", "-"},
    {"type null", "{\"type\":\"null\"}", "null", ""},
    {"type object", "{\"type\":\"object\"}", "{}", ""},
    {"type object bad", "{\"type\":\"object\"}", "[]", "-"},
    {"type array", "{\"type\":\"array\"}", "[]", ""},
    {"type list ok", "{\"type\":[\"string\",\"null\"]}", "null", ""},
    {"type list bad", "{\"type\":[\"string\",\"null\"]}", "true", "-"},
    {"no type: anything", "{}", "[1,{\"a\":null}]", ""},
    {"true schema", "true", "42", ""},
    {"false schema", "false", "42", "-"},
    /* objects */
    {"required ok", "{\"required\":[\"a\"]}", "{\"a\":1}", ""},
    {"required missing", "{\"required\":[\"a\",\"b\"]}", "{\"b\":1}", "/a"},
    {"required ignores non-objects", "{\"required\":[\"a\"]}", "3", ""},
    {"properties", "{\"properties\":{\"a\":{\"type\":\"string\"}}}", "{\"a\":1}", "/a"},
    {"additional false", "{\"properties\":{\"a\":{}},\"additionalProperties\":false}",
     "{\"a\":1,\"b\":2,\"c\":3}", "/b,/c"},
    {"additional schema",
     "{\"properties\":{\"a\":{}},\"additionalProperties\":{\"type\":\"integer\"}}",
     "{\"a\":\"x\",\"b\":2,\"c\":\"3\"}", "/c"},
    {"pointer escaping ~ and /", "{\"additionalProperties\":false}",
     "{\"a/b\":1,\"m~n\":2,\"~/\":3}", "/a~1b,/m~0n,/~0~1"},
    {"required escaped", "{\"required\":[\"x/y\"]}", "{}", "/x~1y"},
    {"empty key", "{\"additionalProperties\":false}", "{\"\":1}", "/"},
    /* enum, const */
    {"enum ok", "{\"enum\":[\"a\",1,null]}", "null", ""},
    {"enum bad", "{\"enum\":[\"a\",1,null]}", "\"b\"", "-"},
    {"enum 1 == 1.0", "{\"enum\":[1]}", "1.0", ""},
    {"enum object", "{\"enum\":[{\"a\":[1]}]}", "{\"a\":[1.0]}", ""},
    {"const", "{\"const\":\"x\"}", "\"y\"", "-"},
    /* strings */
    {"minLength ok", "{\"minLength\":2}", "\"ab\"", ""},
    {"minLength bad", "{\"minLength\":2}", "\"a\"", "-"},
    {"maxLength bad", "{\"maxLength\":2}", "\"abc\"", "-"},
    {"maxLength code points", "{\"maxLength\":3}", "\"\xc3\xa9t\xc3\xa9\"", ""},
    {"maxLength 4-byte chars", "{\"maxLength\":2}", "\"\xf0\x9f\x98\x80\xf0\x9f\x98\x80\"",
     ""},
    {"minLength code points", "{\"minLength\":3}", "\"\xc3\xa9\xc3\xa9\"", "-"},
    {"length ignores numbers", "{\"maxLength\":1}", "12345", ""},
    {"pattern ok", "{\"pattern\":\"^[a-z]+$\"}", "\"abc\"", ""},
    {"pattern bad", "{\"pattern\":\"^[a-z]+$\"}", "\"abC\"", "-"},
    {"pattern searches", "{\"pattern\":\"b\"}", "\"abc\"", ""},
    {"pattern class", "{\"pattern\":\"^[[:digit:]]{3}$\"}", "\"123\"", ""},
    {"pattern \\w", "{\"pattern\":\"^\\\\w+$\"}", "\"a_1\"", ""},
    {"pattern with NUL in value", "{\"pattern\":\"^a$\"}", "\"a\\u0000\"", "-"},
    /* formats */
    {"email ok", "{\"format\":\"email\"}", "\"a.b+c@example.org\"", ""},
    {"email bad", "{\"format\":\"email\"}", "\"a@b\"", "-"},
    {"uuid ok", "{\"format\":\"uuid\"}", "\"123e4567-e89b-12d3-a456-426614174000\"", ""},
    {"uuid bad", "{\"format\":\"uuid\"}", "\"123e4567e89b12d3a456426614174000\"", "-"},
    {"date-time ok", "{\"format\":\"date-time\"}", "\"2024-02-29T12:00:00Z\"", ""},
    {"date-time bad", "{\"format\":\"date-time\"}", "\"2023-02-29T12:00:00Z\"", "-"},
    {"uri ok", "{\"format\":\"uri\"}", "\"https://example.org/a?b=c#d\"", ""},
    {"uri relative", "{\"format\":\"uri\"}", "\"/a/b\"", "-"},
    {"format ignores non-strings", "{\"format\":\"email\"}", "5", ""},
    /* numbers */
    {"minimum ok", "{\"minimum\":1}", "1", ""},
    {"minimum bad", "{\"minimum\":1}", "0.5", "-"},
    {"maximum bad", "{\"maximum\":1.5}", "2", "-"},
    {"exclusiveMinimum", "{\"exclusiveMinimum\":1}", "1", "-"},
    {"exclusiveMaximum", "{\"exclusiveMaximum\":1}", "1", "-"},
    {"big integers exact", "{\"maximum\":9007199254740993}", "9007199254740994", "-"},
    /* arrays */
    {"minItems bad", "{\"minItems\":2}", "[1]", "-"},
    {"maxItems bad", "{\"maxItems\":1}", "[1,2]", "-"},
    {"items", "{\"items\":{\"type\":\"integer\"}}", "[1,\"2\",3,null]", "/1,/3"},
    {"items false", "{\"items\":false}", "[1]", "/0"},
    /* everything at once */
    {"all errors",
     "{\"type\":\"object\",\"required\":[\"name\",\"email\",\"age\"],"
     "\"additionalProperties\":false,\"properties\":{"
     "\"name\":{\"type\":\"string\",\"minLength\":1},"
     "\"email\":{\"type\":\"string\",\"format\":\"email\"},"
     "\"age\":{\"type\":\"integer\",\"minimum\":0},"
     "\"tags\":{\"type\":\"array\",\"maxItems\":2,\"items\":{\"enum\":[\"a\",\"b\"]}}}}",
     "{\"name\":\"\",\"age\":-1,\"tags\":[\"a\",\"c\",\"b\"],\"x\":1}",
     "/email,/name,/age,/tags,/tags/1,/x"},
    {"nested pointers",
     "{\"properties\":{\"a\":{\"properties\":{\"b\":{\"items\":{\"required\":[\"c\"]}}}}}}",
     "{\"a\":{\"b\":[{},{\"c\":1},{}]}}", "/a/b/0/c,/a/b/2/c"},
    {"open by default", "{\"properties\":{\"a\":{}}}", "{\"a\":1,\"isAdmin\":true}", ""},
};

/* The same, compiled closed (keel_schema_options.closed, as request bodies
 * are): members the properties do not name are refused, one error each,
 * at their pointers. */
static const vcase closed_cases[] = {
    {"closed: unknown members named",
     "{\"type\":\"object\",\"properties\":{\"email\":{},\"password\":{}}}",
     "{\"email\":\"e\",\"password\":\"p\",\"isAdmin\":true,\"role\":\"admin\"}",
     "/isAdmin,/role"},
    {"closed: known members pass", "{\"properties\":{\"a\":{},\"b\":{}}}", "{\"a\":1}", ""},
    {"closed: nested objects too",
     "{\"properties\":{\"a\":{\"properties\":{\"b\":{}}},\"l\":{\"items\":"
     "{\"properties\":{\"c\":{}}}}}}",
     "{\"a\":{\"b\":1,\"x\":2},\"l\":[{\"c\":1},{\"y\":1}],\"z\":0}", "/a/x,/l/1/y,/z"},
    {"closed: additionalProperties true stays open",
     "{\"properties\":{\"a\":{}},\"additionalProperties\":true}", "{\"b\":1}", ""},
    {"closed: additionalProperties schema applies",
     "{\"properties\":{\"a\":{}},\"additionalProperties\":{\"type\":\"integer\"}}",
     "{\"b\":1,\"c\":\"x\"}", "/c"},
    {"closed: no properties, no closing", "{\"type\":\"object\"}", "{\"any\":1}", ""},
    {"closed: the empty schema is any value", "{}", "{\"any\":[1]}", ""},
    {"closed: required without properties stays open",
     "{\"required\":[\"a\"]}", "{\"a\":1,\"b\":2}", ""},
    {"closed: unknown and invalid at once",
     "{\"required\":[\"email\"],\"properties\":{\"email\":{\"format\":\"email\"},"
     "\"password\":{\"minLength\":8}}}",
     "{\"email\":\"x\",\"password\":\"p\",\"role\":\"admin\"}",
     "/email,/password,/role"},
};

static void pointers_of(json_t *errors, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < json_array_size(errors); i++) {
        const char *p = json_string_value(json_object_get(json_array_get(errors, i), "pointer"));
        len += (size_t)snprintf(out + len, cap - len, "%s%s", i ? "," : "",
                                !p ? "?" : *p ? p : "-");
        if (len >= cap)
            break;
    }
}

static void run_table(const vcase *cases, size_t ncases, int closed)
{
    for (size_t i = 0; i < ncases; i++) {
        const vcase *c = &cases[i];
        char err[256];
        keel_schema_options opts = {.closed = closed};
        keel_schema *s = keel_schema_compile_with(c->schema, &opts, err, sizeof(err));
        if (!s) {
            case_fail(c->name, "schema refused: %s", err);
            continue;
        }
        json_error_t je;
        json_t *v = json_loads(c->value, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        if (!v) {
            case_fail(c->name, "bad test value: %s", je.text);
            keel_schema_free(s);
            continue;
        }
        json_t *errors = json_array();
        size_t n = keel_schema_validate(s, v, errors, KEEL_SCHEMA_MAX_ERRORS);
        char got[512];
        pointers_of(errors, got, sizeof(got));
        const char *want = c->want;
        size_t want_n = *want ? 1 : 0;
        for (const char *p = want; *p; p++)
            want_n += *p == ',';
        if (n != want_n || json_array_size(errors) != n || strcmp(got, want) != 0)
            case_fail(c->name, "got %zu errors [%s], want %zu [%s]", n, got, want_n, want);
        for (size_t k = 0; k < json_array_size(errors); k++) {
            const char *m = json_string_value(json_object_get(json_array_get(errors, k), "message"));
            if (!m || !*m)
                case_fail(c->name, "error %zu has no message", k);
        }
        json_decref(errors);
        json_decref(v);
        keel_schema_free(s);
    }
}

static void test_validate_table(void **state)
{
    (void)state;
    run_table(vcases, sizeof(vcases) / sizeof(vcases[0]), 0);
    run_table(closed_cases, sizeof(closed_cases) / sizeof(closed_cases[0]), 1);
    assert_int_equal(failures, 0);
}

/* Messages say what is expected. */
static void expect_message(const char *schema, const char *value, const char *want)
{
    char err[256];
    keel_schema *s = keel_schema_compile(schema, err, sizeof(err));
    assert_non_null(s);
    json_t *v = json_loads(value, JSON_DECODE_ANY, NULL);
    assert_non_null(v);
    json_t *errors = json_array();
    assert_int_equal(keel_schema_validate(s, v, errors, 10), 1);
    const char *m = json_string_value(json_object_get(json_array_get(errors, 0), "message"));
    if (!m || !strstr(m, want))
        fail_msg("%s on %s: message \"%s\", want it to contain \"%s\"", schema, value,
                 m ? m : "(none)", want);
    json_decref(errors);
    json_decref(v);
    keel_schema_free(s);
}

static void test_messages(void **state)
{
    (void)state;
    expect_message("{\"type\":\"integer\"}", "1.5", "must be an integer");
    expect_message("{\"type\":[\"string\",\"null\"]}", "1", "must be a string or null");
    expect_message("{\"type\":[\"integer\",\"number\"]}", "\"x\"", "must be a number");
    expect_message("{\"required\":[\"a\"]}", "{}", "is required");
    expect_message("{\"additionalProperties\":false}", "{\"a\":1}",
                   "is not allowed: unknown field");
    expect_message("{\"enum\":[\"x\",\"y\"]}", "\"z\"", "must be one of [\"x\",\"y\"]");
    expect_message("{\"minLength\":3}", "\"ab\"", "at least 3 characters");
    expect_message("{\"maxLength\":1}", "\"ab\"", "at most 1 character long");
    expect_message("{\"pattern\":\"^a+$\"}", "\"b\"", "must match the pattern ^a+$");
    expect_message("{\"format\":\"email\"}", "\"x\"", "email");
    expect_message("{\"format\":\"uuid\"}", "\"x\"", "UUID");
    expect_message("{\"format\":\"date-time\"}", "\"x\"", "date-time");
    expect_message("{\"format\":\"uri\"}", "\"x\"", "URI");
    expect_message("{\"minimum\":2}", "1", "greater than or equal to 2");
    expect_message("{\"maximum\":2.5}", "3", "less than or equal to 2.5");
    expect_message("{\"minItems\":2}", "[]", "at least 2 items");
    expect_message("{\"maxItems\":0}", "[1]", "at most 0 items");
}

/* Schemas that must not compile, and the text that says why. */
typedef struct bad_schema {
    const char *schema;
    const char *want; /* a substring of the message */
} bad_schema;

static const bad_schema bad_schemas[] = {
    {"", "not JSON"},
    {"{", "not JSON"},
    {"{\"type\":\"string\",\"type\":\"integer\"}", "not JSON"}, /* duplicate key */
    {"[]", "must be an object or a boolean"},
    {"{\"type\":\"text\"}", "unknown type \"text\""},
    {"{\"type\":[]}", "type must be"},
    {"{\"type\":[\"string\",\"string\"]}", "listed twice"},
    {"{\"oneOf\":[]}", "unsupported keyword \"oneOf\""},
    {"{\"$ref\":\"#/x\"}", "unsupported keyword \"$ref\""},
    {"{\"nullable\":true}", "nullable"},
    {"{\"properties\":{\"a\":{\"type\":\"strin\"}}}", "at /properties/a: unknown type"},
    {"{\"format\":\"password\"}", "unsupported format \"password\""}, /* no such format added */
    {"{\"x\":1}", "unsupported keyword \"x\""},
    {"{\"X-a\":1}", "unsupported keyword \"X-a\""},
    {"{\"properties\":{\"a/b\":{\"minLength\":-1}}}", "at /properties/a~1b: minLength"},
    {"{\"items\":{\"items\":{\"foo\":1}}}", "at /items/items: unsupported keyword \"foo\""},
    {"{\"additionalProperties\":{\"enum\":[]}}", "at /additionalProperties: enum"},
    {"{\"items\":[{}]}", "tuple"},
    {"{\"required\":\"a\"}", "required must be an array"},
    {"{\"required\":[\"a\",\"a\"]}", "twice"},
    {"{\"required\":[\"b\"],\"properties\":{\"a\":{}},\"additionalProperties\":false}",
     "\"b\" is required but"},
    {"{\"properties\":[]}", "properties must be an object"},
    {"{\"minLength\":1.5}", "non-negative integer"},
    {"{\"maxItems\":\"3\"}", "non-negative integer"},
    {"{\"minimum\":\"0\"}", "minimum must be a number"},
    {"{\"minLength\":3,\"maxLength\":2}", "greater than maxLength"},
    {"{\"minItems\":3,\"maxItems\":2}", "greater than maxItems"},
    {"{\"minimum\":3,\"maximum\":2}", "greater than maximum"},
    {"{\"format\":\"ipv4\"}", "unsupported format \"ipv4\""},
    {"{\"format\":1}", "unsupported format"},
    {"{\"pattern\":1}", "pattern must be a string"},
    {"{\"pattern\":\"(a\"}", "does not compile"},
    {"{\"pattern\":\"^\\\\d+$\"}", "\\d is not POSIX"},
    {"{\"pattern\":\"(a)\\\\1\"}", "backreferences"},
    {"{\"pattern\":\"(?=a)\"}", "lookaround"},
    {"{\"pattern\":\"a+?\"}", "lazy"},
    {"{\"pattern\":\"[\\\\w.-]+\"}", "inside [...]"},
    {"{\"pattern\":\"a\\\\\"}", "not POSIX"},
    {"{\"enum\":\"a\"}", "enum must be a non-empty array"},
    {"{\"pattern\":\"a**\"}", "may not follow another"},
    {"{\"pattern\":\"a+{2}\"}", "may not follow another"},
    {"{\"pattern\":\"(a{50}){50}\"}", "too complex"},
    {"{\"pattern\":\"^.{0,5000}$\"}", "too complex"},
    {"{\"pattern\":\"^.{,5000}$\"}", "too complex"},
    {"{\"pattern\":\"((((((((((((a+)+)+)+)+)+)+)+)+)+)+)+)+\"}", "too complex"},
};

static void test_bad_schemas(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_schemas) / sizeof(bad_schemas[0]); i++) {
        const bad_schema *c = &bad_schemas[i];
        char err[256] = "";
        keel_schema *s = keel_schema_compile(c->schema, err, sizeof(err));
        if (s) {
            case_fail(c->schema, "compiled; want refused (%s)", c->want);
            keel_schema_free(s);
        } else if (!strstr(err, c->want)) {
            case_fail(c->schema, "message \"%s\", want it to contain \"%s\"", err, c->want);
        }
    }
    /* a deep schema is refused, not recursed into without bound */
    char deep[2048] = "";
    for (int i = 0; i < 40; i++)
        strcat(deep, "{\"items\":");
    strcat(deep, "{}");
    for (int i = 0; i < 40; i++)
        strcat(deep, "}");
    char err[256];
    assert_null(keel_schema_compile(deep, err, sizeof(err)));
    assert_non_null(strstr(err, "deeper"));
    /* a long pattern */
    char longp[KEEL_SCHEMA_PATTERN_MAX + 64];
    int n = snprintf(longp, sizeof(longp), "{\"pattern\":\"");
    memset(longp + n, 'a', KEEL_SCHEMA_PATTERN_MAX + 1);
    strcpy(longp + n + KEEL_SCHEMA_PATTERN_MAX + 1, "\"}");
    assert_null(keel_schema_compile(longp, err, sizeof(err)));
    assert_int_equal(failures, 0);
}

/* Schemas with annotations and the edge of the bracket grammar compile. */
static void test_good_schemas(void **state)
{
    (void)state;
    static const char *const good[] = {
        "{\"title\":\"t\",\"description\":\"d\",\"default\":1,\"examples\":[1],"
        "\"deprecated\":false,\"readOnly\":true,\"writeOnly\":false,\"$comment\":\"c\","
        "\"$schema\":\"https://json-schema.org/draft/2020-12/schema\"}",
        "{\"pattern\":\"^[]a]+$\"}",
        "{\"pattern\":\"^[^]a]+$\"}",
        "{\"pattern\":\"^[[:alpha:]_-]+$\"}",
        "{\"pattern\":\"^a\\\\.b\\\\/c$\"}",
        "{\"pattern\":\"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$\"}",
        "{\"pattern\":\"^\\\\w{1,64}@\\\\w{1,255}(\\\\.\\\\w{2,63})+$\"}",
        "{\"pattern\":\"^(a|b){2,}x{3}y{,}$\"}",
        "{\"minLength\":2.0}",
        "{\"type\":[\"integer\",\"null\"],\"minimum\":0}",
        "{\"required\":[\"a\"],\"additionalProperties\":{}}",
        /* OpenAPI-style extensions are annotations */
        "{\"type\":\"string\",\"x-keel-password\":{\"minBytes\":8},\"x-\":null}",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char err[256];
        keel_schema *s = keel_schema_compile(good[i], err, sizeof(err));
        if (!s)
            case_fail(good[i], "refused: %s", err);
        keel_schema_free(s);
    }
    assert_int_equal(failures, 0);
}

/* A pattern is not run on inputs past the cap. */
static void test_pattern_input_cap(void **state)
{
    (void)state;
    keel_schema *s = keel_schema_compile("{\"pattern\":\"a\"}", NULL, 0);
    assert_non_null(s);
    size_t n = KEEL_SCHEMA_PATTERN_MAX_INPUT + 1;
    char *big = malloc(n);
    memset(big, 'a', n);
    json_t *v = json_stringn(big, n);
    json_t *errors = json_array();
    assert_int_equal(keel_schema_validate(s, v, errors, 10), 1);
    assert_non_null(strstr(json_string_value(json_object_get(json_array_get(errors, 0), "message")),
                           "too long"));
    json_decref(v);
    v = json_stringn(big, n - 1);
    assert_int_equal(keel_schema_validate(s, v, NULL, 10), 0);
    json_decref(v);
    json_decref(errors);
    free(big);
    keel_schema_free(s);
}

/* max_errors caps the report and says there were more. */
static void test_error_cap(void **state)
{
    (void)state;
    keel_schema *s = keel_schema_compile("{\"items\":{\"type\":\"string\"}}", NULL, 0);
    json_t *v = json_array();
    for (int i = 0; i < 500; i++)
        json_array_append_new(v, json_integer(i));
    json_t *errors = json_array();
    assert_int_equal(keel_schema_validate(s, v, errors, 100), 101);
    assert_int_equal(json_array_size(errors), 100);
    assert_string_equal(json_string_value(json_object_get(json_array_get(errors, 99), "pointer")),
                        "/99");
    assert_int_equal(keel_schema_validate(s, v, NULL, 3), 4);
    json_decref(errors);
    json_decref(v);
    keel_schema_free(s);
}

typedef struct fcase {
    const char *value;
    int want;
} fcase;

static void format_table(const char *fmt, int (*fn)(const char *, size_t), const fcase *c,
                         size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fn(c[i].value, strlen(c[i].value)) != c[i].want)
            case_fail(fmt, "\"%s\": got %d, want %d", c[i].value, !c[i].want, c[i].want);
}

static void test_formats(void **state)
{
    (void)state;
    static const fcase email[] = {
        {"a@example.org", 1}, {"first.last+tag@sub.example.co.uk", 1},
        {"o'brien@example.ie", 1}, {"x@a-b.io", 1}, {"UPPER@EXAMPLE.COM", 1},
        {"", 0}, {"a", 0}, {"@example.org", 0}, {"a@", 0}, {"a@b", 0},
        {"a@@example.org", 0}, {"a b@example.org", 0}, {".a@example.org", 0},
        {"a.@example.org", 0}, {"a..b@example.org", 0}, {"a@-example.org", 0},
        {"a@example-.org", 0}, {"a@example..org", 0}, {"a@example.org.", 0},
        {"a@.example.org", 0}, {"a@exa_mple.org", 0}, {"a@1.2.3.4", 0},
        {"\"quoted\"@example.org", 0}, {"a(b)@example.org", 0}, {"\xc3\xa9@example.org", 0},
    };
    static const fcase uuid[] = {
        {"123e4567-e89b-12d3-a456-426614174000", 1}, {"00000000-0000-0000-0000-000000000000", 1},
        {"ABCDEF01-2345-6789-ABCD-EF0123456789", 1}, {"123e4567-e89b-12d3-a456-42661417400", 0},
        {"123e4567-e89b-12d3-a456-4266141740000", 0}, {"123e4567-e89b-12d3-a456_426614174000", 0},
        {"g23e4567-e89b-12d3-a456-426614174000", 0}, {"{123e4567-e89b-12d3-a456-426614174000}", 0},
        {"", 0},
    };
    static const fcase dt[] = {
        {"2024-01-31T23:59:59Z", 1}, {"2024-01-31t23:59:59z", 1},
        {"2024-02-29T00:00:00+01:00", 1}, {"2000-02-29T00:00:00Z", 1},
        {"2024-06-30T12:00:00.123456-07:30", 1}, {"1998-12-31T23:59:60Z", 1},
        {"1998-12-31T15:59:60-08:00", 1},
        {"1998-12-31T23:58:60Z", 0}, {"2023-02-29T00:00:00Z", 0}, {"1900-02-29T00:00:00Z", 0},
        {"2024-04-31T00:00:00Z", 0}, {"2024-13-01T00:00:00Z", 0}, {"2024-00-01T00:00:00Z", 0},
        {"2024-01-00T00:00:00Z", 0}, {"2024-01-01T24:00:00Z", 0}, {"2024-01-01T00:60:00Z", 0},
        {"2024-01-01T00:00:61Z", 0}, {"2024-01-01T00:00:00", 0}, {"2024-01-01 00:00:00Z", 0},
        {"2024-01-01T00:00:00.Z", 0}, {"2024-01-01T00:00:00+0100", 0},
        {"2024-01-01T00:00:00+24:00", 0}, {"2024-01-01T00:00:00+01:60", 0},
        {"2024-01-01", 0}, {"24-01-01T00:00:00Z", 0}, {"2024-1-01T00:00:00Z", 0},
        {"2024-01-01T00:00:00Zjunk", 0}, {"", 0},
    };
    static const fcase uri[] = {
        {"https://example.org", 1}, {"http://a.b/c?d=e&f#g", 1}, {"urn:isbn:0451450523", 1},
        {"mailto:a@example.org", 1}, {"file:///etc/hosts", 1}, {"x+y.z-1:rest", 1},
        {"http://[::1]:8080/", 1}, {"http://a/%20b", 1},
        {"", 0}, {"/relative/path", 0}, {"//host/path", 0}, {"1http://a", 0},
        {"http//a", 0}, {"http://a b", 0}, {"http://a/%2", 0}, {"http://a/%zz", 0},
        {"http://a/<b>", 0}, {"http://\xc3\xa9.org", 0}, {":nope", 0},
    };
    format_table("email", keel_format_email, email, sizeof(email) / sizeof(email[0]));
    format_table("uuid", keel_format_uuid, uuid, sizeof(uuid) / sizeof(uuid[0]));
    format_table("date-time", keel_format_date_time, dt, sizeof(dt) / sizeof(dt[0]));
    format_table("uri", keel_format_uri, uri, sizeof(uri) / sizeof(uri[0]));
    assert_int_equal(failures, 0);
}

static void test_utf8_length(void **state)
{
    (void)state;
    assert_int_equal(keel_utf8_length("", 0), 0);
    assert_int_equal(keel_utf8_length("abc", 3), 3);
    assert_int_equal(keel_utf8_length("\xc3\xa9", 2), 1);
    assert_int_equal(keel_utf8_length("\xe2\x82\xac", 3), 1);
    assert_int_equal(keel_utf8_length("\xf0\x9f\x98\x80x", 5), 2);
}

/* Query and path strings become the declared type, or stay strings. */
typedef struct ccase {
    const char *type;
    const char *in;
    const char *want; /* the coerced value as compact JSON */
} ccase;

static const ccase ccases[] = {
    {"\"integer\"", "42", "42"},
    {"\"integer\"", "-7", "-7"},
    {"\"integer\"", "2.0", "2"},
    {"\"integer\"", "2.5", "2.5"},
    {"\"integer\"", "007", "\"007\""},
    {"\"integer\"", "0x10", "\"0x10\""},
    {"\"integer\"", " 1", "\" 1\""},
    {"\"integer\"", "1 ", "\"1 \""},
    {"\"integer\"", "", "\"\""},
    {"\"integer\"", "-", "\"-\""},
    {"\"integer\"", "abc", "\"abc\""},
    {"\"number\"", "1.5", "1.5"},
    {"\"number\"", "1e3", "1000.0"},
    {"\"number\"", "3", "3"},
    {"\"number\"", "1.", "\"1.\""},
    {"\"number\"", ".5", "\".5\""},
    {"\"number\"", "inf", "\"inf\""},
    {"\"number\"", "nan", "\"nan\""},
    {"\"number\"", "1e999", "\"1e999\""},
    {"\"boolean\"", "true", "true"},
    {"\"boolean\"", "false", "false"},
    {"\"boolean\"", "True", "\"True\""},
    {"\"boolean\"", "1", "\"1\""},
    {"\"string\"", "42", "\"42\""},
    {"[\"integer\",\"boolean\"]", "true", "true"},
    {"[\"integer\",\"string\"]", "5", "5"},
};

static void test_coerce(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(ccases) / sizeof(ccases[0]); i++) {
        char text[128];
        snprintf(text, sizeof(text), "{\"type\":%s}", ccases[i].type);
        keel_schema *s = keel_schema_compile(text, NULL, 0);
        assert_non_null(s);
        json_t *v = keel_schema_coerce(s, ccases[i].in, strlen(ccases[i].in));
        char *got = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (strcmp(got, ccases[i].want) != 0)
            case_fail(ccases[i].in, "as %s: got %s, want %s", ccases[i].type, got,
                      ccases[i].want);
        free(got);
        json_decref(v);
        keel_schema_free(s);
    }
    /* no schema: the string */
    json_t *v = keel_schema_coerce(NULL, "1", 1);
    assert_true(json_is_string(v));
    json_decref(v);
    assert_int_equal(failures, 0);
}

/* Options: closed objects and formats of the caller's own, and the
 * effective document that shows both. */
static const char *odd_length(const char *s, size_t n, void *data)
{
    (void)s;
    return n % 2 ? (const char *)data : NULL;
}

static json_t *describe_even(void *data)
{
    (void)data;
    return json_pack("{s:b}", "x-even", 1);
}

static json_t *describe_badly(void *data)
{
    (void)data;
    return json_pack("{s:b}", "even", 1);
}

static const keel_schema_format caller_formats[] = {
    {"even", odd_length, describe_even, "must have an even length"},
    {"email", odd_length, NULL, "keel's own email wins"},
    {"undescribed", odd_length, NULL, "must have an even length"},
};

static void test_options(void **state)
{
    (void)state;
    keel_schema_options o = {.formats = caller_formats, .nformats = 3, .closed = 1};
    char err[256];
    const char *text = "{\"type\":\"object\",\"required\":[\"p\"],\"properties\":{"
                       "\"p\":{\"type\":\"string\",\"format\":\"even\"},"
                       "\"e\":{\"format\":\"email\"},\"u\":{\"format\":\"undescribed\"},"
                       "\"open\":{\"properties\":{},\"additionalProperties\":true}}}";
    keel_schema *s = keel_schema_compile_with(text, &o, err, sizeof(err));
    if (!s)
        fail_msg("refused: %s", err);
    /* the effective document says what is enforced */
    json_t *doc = keel_schema_json(s);
    assert_true(json_is_false(json_object_get(doc, "additionalProperties")));
    json_t *props = json_object_get(doc, "properties");
    assert_true(json_is_true(json_object_get(json_object_get(props, "p"), "x-even")));
    assert_null(json_object_get(json_object_get(props, "u"), "x-even"));
    assert_true(json_is_true(
        json_object_get(json_object_get(props, "open"), "additionalProperties")));
    /* it compiles again to the same meaning */
    keel_schema *again = keel_schema_compile_json(doc, err, sizeof(err));
    assert_null(again); /* ... with the formats: */
    again = keel_schema_compile_json_with(doc, &o, err, sizeof(err));
    assert_non_null(again);
    keel_schema_free(again);

    json_t *v = json_pack("{s:s,s:s,s:s,s:i}", "p", "abc", "e", "a@example.org", "u", "x",
                          "extra", 1);
    json_t *errors = json_array();
    assert_int_equal(keel_schema_validate(s, v, errors, 10), 3);
    char got[256];
    pointers_of(errors, got, sizeof(got));
    assert_string_equal(got, "/p,/u,/extra");
    assert_string_equal(json_string_value(json_object_get(json_array_get(errors, 0), "message")),
                        "must have an even length");
    assert_string_equal(json_string_value(json_object_get(json_array_get(errors, 2), "message")),
                        "is not allowed: unknown field");
    json_decref(errors);
    json_decref(v);
    v = json_pack("{s:s}", "p", "ab");
    assert_int_equal(keel_schema_validate(s, v, NULL, 10), 0);
    json_decref(v);
    keel_schema_free(s);

    /* the caller's document is not changed: compile_json_with works on a copy */
    json_t *mine = json_pack("{s:{s:{}}}", "properties", "a");
    s = keel_schema_compile_json_with(mine, &o, err, sizeof(err));
    assert_non_null(s);
    assert_null(json_object_get(mine, "additionalProperties"));
    assert_true(json_is_false(json_object_get(keel_schema_json(s), "additionalProperties")));
    keel_schema_free(s);
    json_decref(mine);

    /* a required member the closed properties do not name: refused, saying why */
    assert_null(keel_schema_compile_with("{\"required\":[\"b\"],\"properties\":{\"a\":{}}}",
                                         &o, err, sizeof(err)));
    assert_non_null(strstr(err, "closed unless the schema sets additionalProperties"));
    /* a description must be x- annotations */
    keel_schema_format bad = {"even", odd_length, describe_badly, "odd"};
    keel_schema_options ob = {.formats = &bad, .nformats = 1};
    assert_null(keel_schema_compile_with("{\"format\":\"even\"}", &ob, err, sizeof(err)));
    assert_non_null(strstr(err, "not an x- keyword"));
    /* an unknown format names the options' */
    assert_null(keel_schema_compile_with("{\"format\":\"odd\"}", &o, err, sizeof(err)));
    assert_non_null(strstr(err, "or one the application added"));
    /* NULL options: as keel_schema_compile */
    s = keel_schema_compile_with("{\"properties\":{\"a\":{}}}", NULL, err, sizeof(err));
    assert_non_null(s);
    assert_null(json_object_get(keel_schema_json(s), "additionalProperties"));
    keel_schema_free(s);
}

static void test_lookup(void **state)
{
    (void)state;
    keel_schema *s = keel_schema_compile(
        "{\"properties\":{\"a\":{\"type\":\"integer\"},\"l\":{\"type\":\"array\","
        "\"items\":{\"type\":\"boolean\"}}},\"additionalProperties\":{\"type\":\"number\"}}",
        NULL, 0);
    assert_non_null(s);
    assert_int_equal(keel_schema_types(s), KEEL_SCHEMA_ANY);
    assert_int_equal(keel_schema_types(keel_schema_property(s, "a")), KEEL_SCHEMA_INTEGER);
    assert_int_equal(keel_schema_types(keel_schema_property(s, "zz")), KEEL_SCHEMA_NUMBER);
    assert_int_equal(keel_schema_types(keel_schema_items(keel_schema_property(s, "l"))),
                     KEEL_SCHEMA_BOOLEAN);
    assert_non_null(json_object_get(keel_schema_json(s), "properties"));
    keel_schema_free(s);
    keel_schema_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate_table),
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_bad_schemas),
        cmocka_unit_test(test_good_schemas),
        cmocka_unit_test(test_pattern_input_cap),
        cmocka_unit_test(test_error_cap),
        cmocka_unit_test(test_formats),
        cmocka_unit_test(test_utf8_length),
        cmocka_unit_test(test_coerce),
        cmocka_unit_test(test_lookup),
        cmocka_unit_test(test_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
