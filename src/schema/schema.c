/* schema.c — the JSON Schema subset of keel/schema.h: a compiler that
 * turns schema text into a tree of nodes once, at start-up, and a
 * validator that walks a value against that tree collecting every
 * failure.
 *
 * Design notes:
 *   - Compilation is strict: an unknown keyword, a keyword of the wrong
 *     shape or a contradiction (minLength > maxLength, a required member
 *     that additionalProperties: false forbids) fails with the schema
 *     pointer of the culprit. A typo in a schema must stop start-up, not
 *     silently let bodies through.
 *   - Nodes borrow their JSON (enum, const, names) from the document, which
 *     the root holds one reference to.
 *   - The validator recurses only where the schema does (properties,
 *     additionalProperties, items), so its depth is the schema's depth,
 *     whatever the value's.
 *   - When a value has the wrong type, its other keywords are not checked
 *     (they would only repeat the same mistake).
 *   - Options (keel_schema_options) change what a schema means — objects
 *     closed unless they say otherwise, formats of the caller's own — so
 *     the compiler writes their effect into its copy of the document:
 *     keel_schema_json, and the OpenAPI document built from it, show what
 *     is enforced, not only what was written.
 */
#include "keel/schema.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "keel/json.h"

#define SCHEMA_MAX_DEPTH 32

enum fmt { FMT_NONE, FMT_EMAIL, FMT_UUID, FMT_DATE_TIME, FMT_URI, FMT_CALLER };

typedef struct prop {
    const char *name;
    keel_schema *s;
} prop;

struct keel_schema {
    json_t *doc;             /* the root only: the document, owned */
    json_t *self;            /* this node's JSON (borrowed) */
    int never;               /* the `false` schema */
    unsigned types;          /* KEEL_SCHEMA_*; KEEL_SCHEMA_ANY when absent */
    json_t *enum_;           /* borrowed */
    json_t *const_;          /* borrowed */
    /* objects */
    prop *props;
    size_t nprops;
    const char **required;
    size_t nrequired;
    int additional;          /* 1 allowed (default), 0 forbidden */
    int closed_by_default;   /* additional is 0 by keel_schema_options.closed */
    keel_schema *additional_schema;
    /* strings */
    int64_t min_len, max_len; /* -1: none */
    regex_t *re;
    const char *pattern;
    enum fmt format;
    const keel_schema_format *caller_format; /* FMT_CALLER: the options' */
    /* numbers (borrowed values, compared exactly) */
    json_t *minimum, *maximum, *xminimum, *xmaximum;
    /* arrays */
    keel_schema *items;
    int64_t min_items, max_items;
};

static const struct {
    const char *name;
    unsigned bit;
} type_names[] = {
    /* in the order messages list them */
    {"string", KEEL_SCHEMA_STRING},   {"number", KEEL_SCHEMA_NUMBER},
    {"integer", KEEL_SCHEMA_INTEGER}, {"boolean", KEEL_SCHEMA_BOOLEAN},
    {"object", KEEL_SCHEMA_OBJECT},   {"array", KEEL_SCHEMA_ARRAY},
    {"null", KEEL_SCHEMA_NULL},
};

static const char *const annotations[] = {"title", "description", "default", "examples",
                                          "deprecated", "readOnly", "writeOnly",
                                          "$comment", "$schema"};

/* ---------------------------------------------------------------- helpers */

size_t keel_utf8_length(const char *s, size_t n)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            count++;
    return count;
}

/* Appends one RFC 6901 reference token ("/" + name, ~ as ~0, / as ~1). */
static void ptr_push(keel_buf *p, const char *name, size_t n)
{
    keel_buf_append(p, "/", 1);
    for (size_t i = 0; i < n; i++) {
        if (name[i] == '~')
            keel_buf_append(p, "~0", 2);
        else if (name[i] == '/')
            keel_buf_append(p, "~1", 2);
        else
            keel_buf_append(p, &name[i], 1);
    }
}

static int is_integral(const json_t *v)
{
    if (json_is_integer(v))
        return 1;
    if (!json_is_real(v))
        return 0;
    double d = json_real_value(v);
    return isfinite(d) && d == floor(d);
}

/* a <=> b for two JSON numbers: exact for two integers, else as doubles. */
static int num_cmp(const json_t *a, const json_t *b)
{
    if (json_is_integer(a) && json_is_integer(b)) {
        json_int_t x = json_integer_value(a), y = json_integer_value(b);
        return x < y ? -1 : x > y;
    }
    double x = json_number_value(a), y = json_number_value(b);
    return x < y ? -1 : x > y;
}

/* JSON equality where 1 and 1.0 are equal (json_equal says they differ). */
static int value_eq(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b))
        return num_cmp(a, b) == 0;
    if (json_typeof(a) != json_typeof(b))
        return 0;
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b))
            return 0;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!value_eq(json_array_get(a, i), json_array_get(b, i)))
                return 0;
        return 1;
    }
    if (json_is_object(a)) {
        if (json_object_size(a) != json_object_size(b))
            return 0;
        const char *k;
        json_t *va;
        json_object_foreach((json_t *)a, k, va) {
            json_t *vb = json_object_get(b, k);
            if (!vb || !value_eq(va, vb))
                return 0;
        }
        return 1;
    }
    return json_equal((json_t *)a, (json_t *)b);
}

static unsigned value_type(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_NULL: return KEEL_SCHEMA_NULL;
    case JSON_TRUE:
    case JSON_FALSE: return KEEL_SCHEMA_BOOLEAN;
    case JSON_OBJECT: return KEEL_SCHEMA_OBJECT;
    case JSON_ARRAY: return KEEL_SCHEMA_ARRAY;
    case JSON_STRING: return KEEL_SCHEMA_STRING;
    case JSON_INTEGER:
    case JSON_REAL: return KEEL_SCHEMA_NUMBER | (is_integral(v) ? KEEL_SCHEMA_INTEGER : 0);
    }
    return 0;
}

/* ---------------------------------------------------------------- formats */

static int is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_digit(char c) { return c >= '0' && c <= '9'; }

int keel_format_email(const char *s, size_t n)
{
    static const char atext[] = "!#$%&'*+/=?^_`{|}~-";
    const char *at = memchr(s, '@', n);
    if (!at || n > 254)
        return 0;
    size_t ll = (size_t)(at - s), dl = n - ll - 1;
    if (ll == 0 || ll > 64 || s[0] == '.' || s[ll - 1] == '.')
        return 0;
    for (size_t i = 0; i < ll; i++) {
        char c = s[i];
        if (c == '.') {
            if (s[i + 1] == '.')
                return 0;
        } else if (!is_alpha(c) && !is_digit(c) && (c == '\0' || !strchr(atext, c))) {
            return 0;
        }
    }
    /* the domain: two or more DNS labels, a non-numeric top label */
    const char *d = at + 1;
    size_t labels = 0, i = 0;
    while (i < dl) {
        size_t start = i;
        while (i < dl && d[i] != '.') {
            if (!is_alpha(d[i]) && !is_digit(d[i]) && d[i] != '-')
                return 0;
            i++;
        }
        size_t len = i - start;
        if (len == 0 || len > 63 || d[start] == '-' || d[i - 1] == '-')
            return 0;
        labels++;
        if (i == dl) {
            int numeric = 1;
            for (size_t k = start; k < i; k++)
                numeric &= is_digit(d[k]);
            if (numeric)
                return 0;
            break;
        }
        i++; /* the dot; a trailing dot makes an empty label above */
        if (i == dl)
            return 0;
    }
    return labels >= 2;
}

int keel_format_uuid(const char *s, size_t n)
{
    if (n != 36)
        return 0;
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return 0;
        } else if (keel_hex_digit((unsigned char)s[i]) < 0) {
            return 0;
        }
    }
    return 1;
}

/* n decimal digits at s as a number, or -1. */
static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* RFC 3339 §5.6 date-time: 2024-02-29T23:59:60.5+01:00. T and Z may be
 * lower case (§5.6 note); a leap second only where it is 23:59 UTC. */
int keel_format_date_time(const char *s, size_t n)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (n < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
        s[13] != ':' || s[16] != ':')
        return 0;
    int y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2);
    int h = digits(s + 11, 2), mi = digits(s + 14, 2), sec = digits(s + 17, 2);
    if (y < 0 || mo < 1 || mo > 12 || d < 1 || h < 0 || h > 23 || mi < 0 || mi > 59 ||
        sec < 0 || sec > 60)
        return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap))
        return 0;
    size_t i = 19;
    if (i < n && s[i] == '.') {
        size_t f = ++i;
        while (i < n && is_digit(s[i]))
            i++;
        if (i == f)
            return 0;
    }
    int off = 0;
    if (i < n && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i < n && (s[i] == '+' || s[i] == '-')) {
        if (n - i != 6 || s[i + 3] != ':')
            return 0;
        int oh = digits(s + i + 1, 2), om = digits(s + i + 4, 2);
        if (oh < 0 || oh > 23 || om < 0 || om > 59)
            return 0;
        off = (s[i] == '+' ? 1 : -1) * (oh * 60 + om);
        i += 6;
    } else {
        return 0;
    }
    if (i != n)
        return 0;
    if (sec == 60 && (((h * 60 + mi - off) % 1440 + 1440) % 1440) != 23 * 60 + 59)
        return 0;
    return 1;
}

/* An absolute URI (RFC 3986 §4.3 plus a fragment): a scheme, ':', then
 * only URI characters with well-formed percent escapes. */
int keel_format_uri(const char *s, size_t n)
{
    static const char allowed[] = "-._~:/?#[]@!$&'()*+,;=";
    if (n == 0 || !is_alpha(s[0]))
        return 0;
    size_t i = 1;
    while (i < n && (is_alpha(s[i]) || is_digit(s[i]) || s[i] == '+' || s[i] == '-' ||
                     s[i] == '.'))
        i++;
    if (i == n || s[i] != ':')
        return 0;
    for (i++; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n || keel_hex_digit((unsigned char)s[i + 1]) < 0 ||
                keel_hex_digit((unsigned char)s[i + 2]) < 0)
                return 0;
            i += 2;
        } else if (!is_alpha(c) && !is_digit(c) && (c == '\0' || !strchr(allowed, c))) {
            return 0;
        }
    }
    return 1;
}

/* ---------------------------------------------------------------- compiling */

typedef struct compiler {
    keel_buf ptr; /* the schema pointer of the node being compiled */
    char *err;
    size_t cap;
    const keel_schema_options *opts; /* never NULL */
} compiler;

__attribute__((format(printf, 2, 3))) static void fail(compiler *c, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->cap)
        snprintf(c->err, c->cap, "at %.*s: %s", c->ptr.len ? (int)c->ptr.len : 1,
                 c->ptr.len ? c->ptr.data : "/", msg);
}

static void node_free(keel_schema *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nprops; i++)
        node_free(s->props[i].s);
    keel_free(s->props);
    keel_free(s->required);
    node_free(s->additional_schema);
    node_free(s->items);
    if (s->re) {
        regfree(s->re);
        keel_free(s->re);
    }
    json_decref(s->doc);
    keel_free(s);
}

void keel_schema_free(keel_schema *s)
{
    node_free(s);
}

/* A count keyword: a non-negative integer (1.0 is one). -1 on error. */
static int64_t count_value(compiler *c, const char *kw, const json_t *v)
{
    if (!is_integral(v) || json_number_value(v) < 0 || json_number_value(v) > 1e15) {
        fail(c, "%s must be a non-negative integer", kw);
        return -1;
    }
    return (int64_t)json_number_value(v);
}

static int parse_type(compiler *c, const json_t *v, unsigned *out)
{
    *out = 0;
    size_t n = json_is_array(v) ? json_array_size(v) : 1;
    if (!json_is_string(v) && !(json_is_array(v) && n > 0)) {
        fail(c, "type must be a type name or a non-empty array of them");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *t = json_is_array(v) ? json_array_get(v, i) : v;
        const char *name = json_string_value(t);
        unsigned bit = 0;
        for (size_t k = 0; name && k < sizeof(type_names) / sizeof(type_names[0]); k++)
            if (!strcmp(name, type_names[k].name))
                bit = type_names[k].bit;
        if (!bit) {
            fail(c, "unknown type \"%s\"", name ? name : "(not a string)");
            return -1;
        }
        if (*out & bit) {
            fail(c, "type \"%s\" listed twice", name);
            return -1;
        }
        *out |= bit;
    }
    return 0;
}

/* How big an automaton regcomp will build, roughly, so a pattern cannot
 * make start-up take gigabytes: glibc copies a repeated atom once per
 * repetition ({m,n} n times, + twice) and nested repetitions multiply.
 * A quantifier on a quantifier (a**, a+{2}) is refused outright, as
 * ECMA-262 does. */
typedef struct pscan {
    const char *p;
    size_t i, n;
    int stacked, deep;
} pscan;

static double est_alt(pscan *s, int depth);

/* A {m}, {m,} or {m,n} bound at s->i: its copy factor, or 0 when the
 * brace does not start a bound (then it is a literal). */
static double est_bound(pscan *s)
{
    size_t i = s->i + 1;
    double m = 0, n = -1;
    /* glibc also reads {,n} as {0,n} */
    if (i >= s->n || !(is_digit(s->p[i]) || s->p[i] == ','))
        return 0;
    while (i < s->n && is_digit(s->p[i]))
        m = m * 10 + (s->p[i++] - '0');
    if (i < s->n && s->p[i] == ',') {
        i++;
        if (i < s->n && is_digit(s->p[i])) {
            n = 0;
            while (i < s->n && is_digit(s->p[i]))
                n = n * 10 + (s->p[i++] - '0');
        } else {
            n = m + 1;
        }
    }
    if (i >= s->n || s->p[i] != '}')
        return 0;
    s->i = i + 1;
    double f = n >= 0 ? n : m;
    return f < 1 ? 1 : f;
}

static double est_atom(pscan *s, int depth)
{
    char c = s->p[s->i];
    if (c == '(') {
        s->i++;
        double a = est_alt(s, depth + 1);
        if (s->i < s->n && s->p[s->i] == ')')
            s->i++;
        return a + 1;
    }
    if (c == '[') {
        size_t i = s->i + 1;
        if (i < s->n && s->p[i] == '^')
            i++;
        if (i < s->n && s->p[i] == ']')
            i++;
        while (i < s->n && s->p[i] != ']') {
            if (s->p[i] == '[' && i + 1 < s->n && strchr(":.=", s->p[i + 1])) {
                char close = s->p[i + 1];
                i += 2;
                while (i + 1 < s->n && !(s->p[i] == close && s->p[i + 1] == ']'))
                    i++;
                i += 2;
                continue;
            }
            i++;
        }
        s->i = i < s->n ? i + 1 : s->n;
        return 1;
    }
    s->i += c == '\\' && s->i + 1 < s->n ? 2 : 1;
    return 1;
}

static double est_piece(pscan *s, int depth)
{
    double a = est_atom(s, depth);
    int quantifiers = 0;
    while (s->i < s->n) {
        char c = s->p[s->i];
        double f;
        if (c == '*' || c == '?') {
            f = 1;
            s->i++;
        } else if (c == '+') {
            f = 2;
            s->i++;
        } else if (c == '{' && (f = est_bound(s)) > 0) {
            /* est_bound moved past the bound */
        } else {
            break;
        }
        if (++quantifiers > 1)
            s->stacked = 1;
        a *= f;
    }
    return a;
}

static double est_alt(pscan *s, int depth)
{
    if (depth > 32) {
        s->deep = 1;
        return 0;
    }
    double total = 0;
    for (;;) {
        while (s->i < s->n && s->p[s->i] != '|' && s->p[s->i] != ')')
            total += est_piece(s, depth);
        if (s->i < s->n && s->p[s->i] == '|') {
            s->i++;
            continue;
        }
        if (s->i < s->n && s->p[s->i] == ')' && depth == 0) {
            s->i++; /* unbalanced: regcomp reports it */
            continue;
        }
        return total;
    }
}

/* Refuses what POSIX ERE would read differently from ECMA-262 (the
 * dialect JSON Schema authors write), then compiles. */
static int compile_pattern(compiler *c, keel_schema *s, const json_t *v)
{
    const char *p = json_string_value(v);
    if (!p) {
        fail(c, "pattern must be a string");
        return -1;
    }
    size_t n = json_string_length(v);
    if (n > KEEL_SCHEMA_PATTERN_MAX || strlen(p) != n) {
        fail(c, "pattern longer than %d bytes or holding a NUL", KEEL_SCHEMA_PATTERN_MAX);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '\\') {
            char e = i + 1 < n ? p[i + 1] : '\0';
            if (is_digit(e)) {
                fail(c, "pattern: backreferences are not supported");
                return -1;
            }
            if ((is_alpha(e) && !strchr("wWsSbB", e)) || e == '\0') {
                fail(c, "pattern: \\%c is not POSIX ERE (use [0-9] for \\d, a bracket "
                        "expression or the character itself)", e ? e : ' ');
                return -1;
            }
            i++;
        } else if (ch == '(' && i + 1 < n && p[i + 1] == '?') {
            fail(c, "pattern: (?...) groups and lookaround are not POSIX ERE");
            return -1;
        } else if ((ch == '*' || ch == '+' || ch == '?' || ch == '}') && i + 1 < n &&
                   p[i + 1] == '?') {
            fail(c, "pattern: lazy quantifiers are not POSIX ERE");
            return -1;
        } else if (ch == '[') {
            i++;
            if (i < n && p[i] == '^')
                i++;
            if (i < n && p[i] == ']')
                i++;
            while (i < n && p[i] != ']') {
                if (p[i] == '\\') {
                    fail(c, "pattern: a backslash inside [...] is a literal in POSIX ERE "
                            "(write [0-9], [[:space:]], ... instead of escapes)");
                    return -1;
                }
                if (p[i] == '[' && i + 1 < n && strchr(":.=", p[i + 1])) {
                    char close = p[i + 1];
                    i += 2;
                    while (i + 1 < n && !(p[i] == close && p[i + 1] == ']'))
                        i++;
                    i += 2;
                    continue;
                }
                i++;
            }
            if (i >= n)
                break; /* unbalanced: regcomp says so */
        }
    }
    pscan ps = {.p = p, .n = n};
    double size = est_alt(&ps, 0);
    if (ps.stacked) {
        fail(c, "pattern: a quantifier may not follow another (a**, a+?, a{2}*)");
        return -1;
    }
    if (ps.deep || size > KEEL_SCHEMA_PATTERN_MAX_SIZE) {
        fail(c, "pattern too complex: repetitions expand to more than %d atoms (bound the "
                "length with minLength/maxLength instead)", KEEL_SCHEMA_PATTERN_MAX_SIZE);
        return -1;
    }
    s->re = keel_malloc(sizeof(regex_t));
    int rc = regcomp(s->re, p, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char msg[128];
        regerror(rc, s->re, msg, sizeof(msg));
        keel_free(s->re);
        s->re = NULL;
        fail(c, "pattern does not compile as POSIX ERE: %s", msg);
        return -1;
    }
    s->pattern = p;
    return 0;
}

static keel_schema *compile_node(compiler *c, json_t *j, int depth);

/* Compiles j[kw] as a subschema at pointer + "/" + kw (+ "/" + name). */
static keel_schema *compile_sub(compiler *c, json_t *j, const char *kw, const char *name,
                                int depth)
{
    size_t mark = c->ptr.len;
    ptr_push(&c->ptr, kw, strlen(kw));
    if (name)
        ptr_push(&c->ptr, name, strlen(name));
    keel_schema *s = compile_node(c, j, depth + 1);
    if (s)
        c->ptr.len = mark; /* on failure the pointer stays for the message */
    return s;
}

static int is_annotation(const char *k)
{
    for (size_t i = 0; i < sizeof(annotations) / sizeof(annotations[0]); i++)
        if (!strcmp(k, annotations[i]))
            return 1;
    return 0;
}

static int compile_keyword(compiler *c, keel_schema *s, json_t *j, const char *k, json_t *v,
                           int depth)
{
    if (!strcmp(k, "type"))
        return parse_type(c, v, &s->types);
    if (!strcmp(k, "enum")) {
        if (!json_is_array(v) || json_array_size(v) == 0) {
            fail(c, "enum must be a non-empty array");
            return -1;
        }
        s->enum_ = v;
        return 0;
    }
    if (!strcmp(k, "const")) {
        s->const_ = v;
        return 0;
    }
    if (!strcmp(k, "required")) {
        if (!json_is_array(v)) {
            fail(c, "required must be an array of member names");
            return -1;
        }
        s->nrequired = json_array_size(v);
        s->required = keel_calloc(s->nrequired ? s->nrequired : 1, sizeof(char *));
        for (size_t i = 0; i < s->nrequired; i++) {
            s->required[i] = json_string_value(json_array_get(v, i));
            if (!s->required[i]) {
                fail(c, "required must be an array of member names");
                return -1;
            }
            for (size_t k2 = 0; k2 < i; k2++)
                if (!strcmp(s->required[k2], s->required[i])) {
                    fail(c, "required lists \"%s\" twice", s->required[i]);
                    return -1;
                }
        }
        return 0;
    }
    if (!strcmp(k, "properties")) {
        if (!json_is_object(v)) {
            fail(c, "properties must be an object of schemas");
            return -1;
        }
        s->props = keel_calloc(json_object_size(v) + 1, sizeof(prop));
        const char *name;
        json_t *sub;
        json_object_foreach(v, name, sub) {
            keel_schema *ps = compile_sub(c, sub, "properties", name, depth);
            if (!ps)
                return -1;
            s->props[s->nprops++] = (prop){name, ps};
        }
        return 0;
    }
    if (!strcmp(k, "additionalProperties")) {
        if (json_is_boolean(v)) {
            s->additional = json_is_true(v);
            return 0;
        }
        s->additional_schema = compile_sub(c, v, "additionalProperties", NULL, depth);
        return s->additional_schema ? 0 : -1;
    }
    if (!strcmp(k, "items")) {
        if (json_is_array(v)) {
            fail(c, "items must be one schema (tuple forms are not supported)");
            return -1;
        }
        s->items = compile_sub(c, v, "items", NULL, depth);
        return s->items ? 0 : -1;
    }
    if (!strcmp(k, "minLength") || !strcmp(k, "maxLength") || !strcmp(k, "minItems") ||
        !strcmp(k, "maxItems")) {
        int64_t n = count_value(c, k, v);
        if (n < 0)
            return -1;
        if (!strcmp(k, "minLength"))
            s->min_len = n;
        else if (!strcmp(k, "maxLength"))
            s->max_len = n;
        else if (!strcmp(k, "minItems"))
            s->min_items = n;
        else
            s->max_items = n;
        return 0;
    }
    if (!strcmp(k, "minimum") || !strcmp(k, "maximum") || !strcmp(k, "exclusiveMinimum") ||
        !strcmp(k, "exclusiveMaximum")) {
        if (!json_is_number(v)) {
            fail(c, "%s must be a number", k);
            return -1;
        }
        if (!strcmp(k, "minimum"))
            s->minimum = v;
        else if (!strcmp(k, "maximum"))
            s->maximum = v;
        else if (!strcmp(k, "exclusiveMinimum"))
            s->xminimum = v;
        else
            s->xmaximum = v;
        return 0;
    }
    if (!strcmp(k, "pattern"))
        return compile_pattern(c, s, v);
    if (!strcmp(k, "format")) {
        const char *f = json_string_value(v);
        s->format = !f                        ? FMT_NONE
                    : !strcmp(f, "email")     ? FMT_EMAIL
                    : !strcmp(f, "uuid")      ? FMT_UUID
                    : !strcmp(f, "date-time") ? FMT_DATE_TIME
                    : !strcmp(f, "uri")       ? FMT_URI
                                              : FMT_NONE;
        for (size_t i = 0; f && s->format == FMT_NONE && i < c->opts->nformats; i++)
            if (c->opts->formats[i].name && !strcmp(f, c->opts->formats[i].name)) {
                s->format = FMT_CALLER;
                s->caller_format = &c->opts->formats[i];
            }
        if (s->format == FMT_NONE) {
            fail(c, "unsupported format \"%s\" (email, uuid, date-time, uri%s)",
                 f ? f : "(not a string)",
                 c->opts->nformats ? " or one the application added" : "");
            return -1;
        }
        return 0;
    }
    /* annotations, and OpenAPI-style extensions: documentation only */
    if (is_annotation(k) || !strncmp(k, "x-", 2))
        return 0;
    (void)j;
    if (!strcmp(k, "nullable"))
        fail(c, "unsupported keyword \"nullable\" (OpenAPI 3.0): use \"type\": [\"...\", "
                "\"null\"]");
    else
        fail(c, "unsupported keyword \"%s\"", k);
    return -1;
}

/* Contradictions that would make a schema refuse everything it names. */
static int check_node(compiler *c, const keel_schema *s)
{
    if (s->min_len >= 0 && s->max_len >= 0 && s->min_len > s->max_len) {
        fail(c, "minLength is greater than maxLength");
        return -1;
    }
    if (s->min_items >= 0 && s->max_items >= 0 && s->min_items > s->max_items) {
        fail(c, "minItems is greater than maxItems");
        return -1;
    }
    if (s->minimum && s->maximum && num_cmp(s->minimum, s->maximum) > 0) {
        fail(c, "minimum is greater than maximum");
        return -1;
    }
    if (!s->additional && !s->additional_schema)
        for (size_t i = 0; i < s->nrequired; i++) {
            size_t k = 0;
            while (k < s->nprops && strcmp(s->props[k].name, s->required[i]))
                k++;
            if (k == s->nprops) {
                fail(c, "\"%s\" is required but additionalProperties: false forbids it%s",
                     s->required[i],
                     s->closed_by_default ? " (objects with properties are closed unless "
                                            "the schema sets additionalProperties)"
                                          : "");
                return -1;
            }
        }
    return 0;
}

static int complete_node(compiler *c, keel_schema *s, json_t *j);

static keel_schema *compile_node(compiler *c, json_t *j, int depth)
{
    if (depth > SCHEMA_MAX_DEPTH) {
        fail(c, "schema nested deeper than %d levels", SCHEMA_MAX_DEPTH);
        return NULL;
    }
    if (!json_is_object(j) && !json_is_boolean(j)) {
        fail(c, "a schema must be an object or a boolean");
        return NULL;
    }
    keel_schema *s = keel_calloc(1, sizeof(*s));
    s->self = j;
    s->types = KEEL_SCHEMA_ANY;
    s->additional = 1;
    s->min_len = s->max_len = s->min_items = s->max_items = -1;
    if (json_is_false(j))
        s->never = 1;
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) {
            if (compile_keyword(c, s, j, k, v, depth) < 0) {
                node_free(s);
                return NULL;
            }
        }
        if (complete_node(c, s, j) < 0 || check_node(c, s) < 0) {
            node_free(s);
            return NULL;
        }
    }
    return s;
}

/* The options' part of a node, written into its document (a copy of the
 * caller's, see compile_doc) so that keel_schema_json shows what is
 * enforced: a closed object's "additionalProperties": false, a caller
 * format's description. After the node's keywords: j is not being
 * iterated any more. */
static int complete_node(compiler *c, keel_schema *s, json_t *j)
{
    if (c->opts->closed && s->props && !json_object_get(j, "additionalProperties")) {
        s->additional = 0;
        s->closed_by_default = 1;
        json_object_set_new(j, "additionalProperties", json_false());
    }
    if (s->format == FMT_CALLER && s->caller_format->describe) {
        json_t *d = s->caller_format->describe(s->caller_format->data);
        const char *k;
        json_t *v;
        json_object_foreach(d, k, v) {
            if (strncmp(k, "x-", 2) != 0) {
                fail(c, "format \"%s\" describes itself with \"%s\", not an x- keyword",
                     s->caller_format->name, k);
                json_decref(d);
                return -1;
            }
        }
        if (d)
            json_object_update_missing(j, d);
        json_decref(d);
    }
    return 0;
}

/* Compiles doc, which becomes the schema's own (a reference is taken). */
static keel_schema *compile_doc(json_t *doc, const keel_schema_options *opts, char *err,
                                size_t cap)
{
    static const keel_schema_options none = {0};
    compiler c = {.err = err, .cap = cap, .opts = opts ? opts : &none};
    if (cap)
        err[0] = '\0';
    keel_schema *s = doc ? compile_node(&c, doc, 0) : NULL;
    if (!doc && cap)
        snprintf(err, cap, "no schema");
    keel_buf_free(&c.ptr);
    if (s)
        s->doc = json_incref(doc);
    return s;
}

keel_schema *keel_schema_compile_json(json_t *schema, char *err, size_t cap)
{
    return compile_doc(schema, NULL, err, cap); /* no options: the document is not changed */
}

keel_schema *keel_schema_compile_json_with(json_t *schema, const keel_schema_options *opts,
                                           char *err, size_t cap)
{
    /* the options complete the document: complete a copy of the caller's */
    json_t *doc = schema ? json_deep_copy(schema) : NULL;
    keel_schema *s = compile_doc(doc, opts, err, cap);
    json_decref(doc);
    return s;
}

keel_schema *keel_schema_compile_with(const char *text, const keel_schema_options *opts,
                                      char *err, size_t cap)
{
    keel_json_error je;
    json_t *doc = keel_json_parse(text, text ? strlen(text) : 0, 64, &je);
    if (!doc) {
        if (cap)
            snprintf(err, cap, "schema is not JSON (at byte %zu: %s)", je.offset, je.text);
        return NULL;
    }
    keel_schema *s = compile_doc(doc, opts, err, cap); /* the document is ours to complete */
    json_decref(doc);
    return s;
}

keel_schema *keel_schema_compile(const char *text, char *err, size_t cap)
{
    return keel_schema_compile_with(text, NULL, err, cap);
}

json_t *keel_schema_json(const keel_schema *s)
{
    return s ? s->self : NULL;
}

unsigned keel_schema_types(const keel_schema *s)
{
    return s ? s->types : KEEL_SCHEMA_ANY;
}

const keel_schema *keel_schema_property(const keel_schema *s, const char *name)
{
    if (!s)
        return NULL;
    for (size_t i = 0; i < s->nprops; i++)
        if (!strcmp(s->props[i].name, name))
            return s->props[i].s;
    return s->additional_schema;
}

const keel_schema *keel_schema_items(const keel_schema *s)
{
    return s ? s->items : NULL;
}

/* ---------------------------------------------------------------- coercion */

json_t *keel_schema_coerce(const keel_schema *s, const char *str, size_t len)
{
    unsigned t = keel_schema_types(s);
    if (t == KEEL_SCHEMA_ANY || !str || memchr(str, '\0', len))
        return json_stringn(str ? str : "", len);
    char buf[64];
    if (len > 0 && len < sizeof(buf)) {
        memcpy(buf, str, len);
        buf[len] = '\0';
        if (t & (KEEL_SCHEMA_INTEGER | KEEL_SCHEMA_NUMBER)) {
            /* JSON's number grammar, so "0x10", " 1", "1e", "inf" stay strings */
            size_t i = buf[0] == '-';
            int ok = i < len && is_digit(buf[i]) && !(buf[i] == '0' && is_digit(buf[i + 1]));
            while (ok && i < len && is_digit(buf[i]))
                i++;
            int frac = 0;
            if (ok && i < len && buf[i] == '.') {
                frac = 1;
                ok = ++i < len && is_digit(buf[i]);
                while (ok && i < len && is_digit(buf[i]))
                    i++;
            }
            if (ok && i < len && (buf[i] == 'e' || buf[i] == 'E')) {
                frac = 1;
                i++;
                if (i < len && (buf[i] == '+' || buf[i] == '-'))
                    i++;
                ok = i < len && is_digit(buf[i]);
                while (ok && i < len && is_digit(buf[i]))
                    i++;
            }
            ok = ok && i == len;
            if (ok && !frac) {
                errno = 0;
                long long v = strtoll(buf, NULL, 10);
                if (errno == 0)
                    return json_integer((json_int_t)v);
            }
            if (ok) {
                double d = strtod(buf, NULL);
                if (!isfinite(d))
                    return json_stringn(str, len);
                /* "2.0" for an integer-only parameter is the integer 2 */
                if (!(t & KEEL_SCHEMA_NUMBER) && d == floor(d) && fabs(d) < 9.2e18)
                    return json_integer((json_int_t)d);
                return json_real(d);
            }
        }
        if ((t & KEEL_SCHEMA_BOOLEAN) && (!strcmp(buf, "true") || !strcmp(buf, "false")))
            return json_boolean(buf[0] == 't');
    }
    return json_stringn(str, len);
}

/* ---------------------------------------------------------------- validation */

typedef struct vctx {
    keel_buf ptr;
    json_t *errors;
    size_t n, max;
} vctx;

__attribute__((format(printf, 2, 3))) static void report(vctx *v, const char *fmt, ...)
{
    v->n++;
    if (!v->errors || v->n > v->max)
        return;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_array_append_new(v->errors, json_pack("{s:s%,s:s}", "pointer",
                                               v->ptr.len ? v->ptr.data : "", v->ptr.len,
                                               "message", msg));
}

static int full(const vctx *v)
{
    return v->n > v->max;
}

static void type_names_of(unsigned t, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    size_t nt = sizeof(type_names) / sizeof(type_names[0]);
    if ((t & KEEL_SCHEMA_INTEGER) && (t & KEEL_SCHEMA_NUMBER))
        t &= ~(unsigned)KEEL_SCHEMA_INTEGER;
    for (size_t i = 0; i < nt; i++) {
        if (!(t & type_names[i].bit))
            continue;
        t &= ~type_names[i].bit;
        int w = snprintf(out + len, cap - len, "%s%s", len ? (t ? ", " : " or ") : "",
                         type_names[i].name);
        if (w < 0 || (size_t)w >= cap - len)
            return;
        len += (size_t)w;
    }
}

static void num_text(const json_t *n, char *out, size_t cap)
{
    if (json_is_integer(n))
        snprintf(out, cap, "%lld", (long long)json_integer_value(n));
    else
        snprintf(out, cap, "%.17g", json_real_value(n));
}

static void check(vctx *v, const keel_schema *s, const json_t *val);

static void check_object(vctx *v, const keel_schema *s, const json_t *val)
{
    for (size_t i = 0; i < s->nrequired && !full(v); i++) {
        if (json_object_get(val, s->required[i]))
            continue;
        size_t mark = v->ptr.len;
        ptr_push(&v->ptr, s->required[i], strlen(s->required[i]));
        report(v, "is required");
        v->ptr.len = mark;
    }
    const char *k;
    json_t *m;
    size_t klen;
    json_object_keylen_foreach((json_t *)val, k, klen, m) {
        if (full(v))
            return;
        const keel_schema *ps = NULL;
        for (size_t i = 0; i < s->nprops; i++)
            if (strlen(s->props[i].name) == klen && !memcmp(s->props[i].name, k, klen)) {
                ps = s->props[i].s;
                break;
            }
        size_t mark = v->ptr.len;
        ptr_push(&v->ptr, k, klen);
        if (ps)
            check(v, ps, m);
        else if (s->additional_schema)
            check(v, s->additional_schema, m);
        else if (!s->additional)
            report(v, "is not allowed: unknown field");
        v->ptr.len = mark;
    }
}

static void check_string(vctx *v, const keel_schema *s, const json_t *val)
{
    const char *str = json_string_value(val);
    size_t n = json_string_length(val);
    if (s->min_len >= 0 || s->max_len >= 0) {
        size_t cp = keel_utf8_length(str, n);
        if (s->min_len >= 0 && cp < (size_t)s->min_len)
            report(v, "must be at least %lld character%s long", (long long)s->min_len,
                   s->min_len == 1 ? "" : "s");
        if (s->max_len >= 0 && cp > (size_t)s->max_len)
            report(v, "must be at most %lld character%s long", (long long)s->max_len,
                   s->max_len == 1 ? "" : "s");
    }
    if (s->re) {
        if (n > KEEL_SCHEMA_PATTERN_MAX_INPUT) {
            report(v, "is too long to match against the pattern (over %d bytes)",
                   KEEL_SCHEMA_PATTERN_MAX_INPUT);
        } else {
            regmatch_t m[1] = {{.rm_so = 0, .rm_eo = (regoff_t)n}};
            if (regexec(s->re, str, 1, m, REG_STARTEND) != 0)
                report(v, "must match the pattern %s", s->pattern);
        }
    }
    switch (s->format) {
    case FMT_EMAIL:
        if (!keel_format_email(str, n))
            report(v, "must be an email address");
        break;
    case FMT_UUID:
        if (!keel_format_uuid(str, n))
            report(v, "must be a UUID");
        break;
    case FMT_DATE_TIME:
        if (!keel_format_date_time(str, n))
            report(v, "must be an RFC 3339 date-time");
        break;
    case FMT_URI:
        if (!keel_format_uri(str, n))
            report(v, "must be an absolute URI");
        break;
    case FMT_CALLER: {
        const char *why = s->caller_format->check(str, n, s->caller_format->data);
        if (why)
            report(v, "%s", why);
        break;
    }
    case FMT_NONE:
        break;
    }
}

static void check_number(vctx *v, const keel_schema *s, const json_t *val)
{
    char t[40];
    if (s->minimum && num_cmp(val, s->minimum) < 0) {
        num_text(s->minimum, t, sizeof(t));
        report(v, "must be greater than or equal to %s", t);
    }
    if (s->maximum && num_cmp(val, s->maximum) > 0) {
        num_text(s->maximum, t, sizeof(t));
        report(v, "must be less than or equal to %s", t);
    }
    if (s->xminimum && num_cmp(val, s->xminimum) <= 0) {
        num_text(s->xminimum, t, sizeof(t));
        report(v, "must be greater than %s", t);
    }
    if (s->xmaximum && num_cmp(val, s->xmaximum) >= 0) {
        num_text(s->xmaximum, t, sizeof(t));
        report(v, "must be less than %s", t);
    }
}

static void check_array(vctx *v, const keel_schema *s, const json_t *val)
{
    size_t n = json_array_size(val);
    if (s->min_items >= 0 && n < (size_t)s->min_items)
        report(v, "must have at least %lld item%s", (long long)s->min_items,
               s->min_items == 1 ? "" : "s");
    if (s->max_items >= 0 && n > (size_t)s->max_items)
        report(v, "must have at most %lld item%s", (long long)s->max_items,
               s->max_items == 1 ? "" : "s");
    if (!s->items)
        return;
    for (size_t i = 0; i < n && !full(v); i++) {
        size_t mark = v->ptr.len;
        char idx[24];
        int w = snprintf(idx, sizeof(idx), "%zu", i);
        ptr_push(&v->ptr, idx, (size_t)w);
        check(v, s->items, json_array_get(val, i));
        v->ptr.len = mark;
    }
}

static void check(vctx *v, const keel_schema *s, const json_t *val)
{
    if (full(v))
        return;
    if (s->never) {
        report(v, "is not allowed");
        return;
    }
    unsigned vt = value_type(val);
    if (!(s->types & vt)) {
        char want[96];
        type_names_of(s->types, want, sizeof(want));
        report(v, "must be %s %s", strchr("aeiou", want[0]) ? "an" : "a", want);
        return;
    }
    if (s->enum_) {
        size_t i, n = json_array_size(s->enum_);
        for (i = 0; i < n; i++)
            if (value_eq(json_array_get(s->enum_, i), val))
                break;
        if (i == n) {
            char *list = json_dumps(s->enum_, JSON_COMPACT | JSON_ENCODE_ANY);
            if (list && strlen(list) <= 160)
                report(v, "must be one of %s", list);
            else
                report(v, "must be one of the listed values");
            free(list);
        }
    }
    if (s->const_ && !value_eq(s->const_, val))
        report(v, "must be the constant value");
    if (vt & KEEL_SCHEMA_OBJECT)
        check_object(v, s, val);
    else if (vt & KEEL_SCHEMA_STRING)
        check_string(v, s, val);
    else if (vt & KEEL_SCHEMA_NUMBER)
        check_number(v, s, val);
    else if (vt & KEEL_SCHEMA_ARRAY)
        check_array(v, s, val);
}

size_t keel_schema_validate(const keel_schema *s, const json_t *val, json_t *errors,
                            size_t max_errors)
{
    if (!s || !val)
        return 0;
    vctx v = {.errors = errors, .max = max_errors};
    check(&v, s, val);
    keel_buf_free(&v.ptr);
    return v.n > max_errors ? max_errors + 1 : v.n;
}
