/* keel/schema.h — a JSON Schema subset, compiled once and checked against
 * jansson values, every failure reported at once as an RFC 6901 pointer
 * and a message.
 *
 * Keywords: type (a name or a list; "integer" accepts 1.0), required,
 * properties, additionalProperties (a boolean or a schema), enum, const,
 * minLength/maxLength (Unicode code points), pattern (POSIX ERE, see
 * below), format (email, uuid, date-time, uri, and the caller's own:
 * keel_schema_format), minimum/maximum,
 * exclusiveMinimum/exclusiveMaximum (numbers, as in 2020-12), items (one
 * schema), minItems/maxItems; the boolean schemas true and false; and the
 * annotations title, description, default, examples, deprecated,
 * readOnly, writeOnly, $comment, $schema and any keyword starting with
 * "x-" (OpenAPI's extensions). Anything else — $ref, oneOf,
 * nullable, an unknown format, a malformed value — makes compilation fail
 * with a message naming the place in the schema: a schema is never half
 * understood.
 *
 * `pattern` is a POSIX extended regular expression (regcomp REG_EXTENDED),
 * not ECMA-262: it searches (anchor with ^...$), matches bytes of UTF-8
 * text, and has no \d (use [0-9]), no lazy quantifiers, no lookaround, no
 * backreferences and no escapes inside brackets — each of those is refused
 * at compile time rather than silently meaning something else. \w \W \s
 * \S \b \B are accepted (GNU). So that a pattern cannot make start-up
 * or matching expensive, a quantifier may not follow another (a**) and
 * repetitions may expand to at most KEEL_SCHEMA_PATTERN_MAX_SIZE atoms
 * ({m,n} copies its atom n times, nested ones multiply: (a{50}){50} is
 * refused; bound lengths with minLength/maxLength). Strings longer than
 * KEEL_SCHEMA_PATTERN_MAX_INPUT bytes fail a pattern without being
 * matched: bound them with maxLength.
 */
#ifndef KEEL_SCHEMA_H
#define KEEL_SCHEMA_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

struct json_t;
typedef struct keel_schema keel_schema;

/* Type bits, as declared by `type` (keel_schema_types). */
enum {
    KEEL_SCHEMA_NULL = 1u << 0,
    KEEL_SCHEMA_BOOLEAN = 1u << 1,
    KEEL_SCHEMA_OBJECT = 1u << 2,
    KEEL_SCHEMA_ARRAY = 1u << 3,
    KEEL_SCHEMA_NUMBER = 1u << 4,
    KEEL_SCHEMA_STRING = 1u << 5,
    KEEL_SCHEMA_INTEGER = 1u << 6,
    KEEL_SCHEMA_ANY = 0x7fu
};

#define KEEL_SCHEMA_MAX_ERRORS 100         /* reported per validation */
#define KEEL_SCHEMA_PATTERN_MAX 1024       /* bytes of a pattern */
#define KEEL_SCHEMA_PATTERN_MAX_SIZE 2048  /* atoms after expanding repetitions */
#define KEEL_SCHEMA_PATTERN_MAX_INPUT 8192 /* bytes matched against one */

/* Compiles schema text (one JSON object or boolean). Returns the schema,
 * or NULL with a one-line reason in err[0..cap) ("at /properties/age:
 * minimum must be a number"). Free with keel_schema_free. */
keel_schema *keel_schema_compile(const char *text, char *err, size_t cap);

/* The same from a parsed value (a reference of its own is taken). */
keel_schema *keel_schema_compile_json(struct json_t *schema, char *err, size_t cap);

/* A string format of the caller's own, for policies that live above this
 * layer (keel_password_format in keel/mw.h: the password policy, with the
 * application's minimum length). A schema compiled with it
 * (keel_schema_options) accepts {"format": name} and checks strings with
 * check; keel's own formats (email, uuid, date-time, uri) win over a
 * format of the same name. */
typedef struct keel_schema_format {
    const char *name;
    /* NULL when the string s[0..n) is valid, else the message to report
     * (static, or owned by data; it must not quote the value). Called
     * from any worker at once. */
    const char *(*check)(const char *s, size_t n, void *data);
    /* Optional: what the format means, for API documents — a new JSON
     * object whose members (each named "x-...") are added to every schema
     * node using the format in the effective document (keel_schema_json),
     * e.g. {"x-keel-password": {"minBytes": 8}}. Called when compiling. */
    struct json_t *(*describe)(void *data);
    void *data;
} keel_schema_format;

/* How to compile (a zeroed struct, or NULL: as keel_schema_compile). */
typedef struct keel_schema_options {
    const keel_schema_format *formats; /* borrowed: must outlive the schemas */
    size_t nformats;
    /* Closed objects: an object schema that lists `properties` and says
     * nothing of additionalProperties forbids other members — each is an
     * error "is not allowed: unknown field" at its pointer — and its
     * effective document says "additionalProperties": false. keel
     * compiles request bodies so (docs/api.md). A schema without
     * `properties` ({} or {"type": "object"}) stays open. */
    int closed;
} keel_schema_options;

/* keel_schema_compile / keel_schema_compile_json with options. The
 * compiled document is a copy of the schema, completed by the options
 * (closed objects' additionalProperties, the formats' descriptions). */
keel_schema *keel_schema_compile_with(const char *text, const keel_schema_options *opts,
                                      char *err, size_t cap);
keel_schema *keel_schema_compile_json_with(struct json_t *schema,
                                           const keel_schema_options *opts, char *err,
                                           size_t cap);

/* NULL is a no-op. */
void keel_schema_free(keel_schema *s);

/* The effective schema document — as written, completed by the options it
 * was compiled with (borrowed; lives as long as s). */
struct json_t *keel_schema_json(const keel_schema *s);

/* Checks v. Appends up to max_errors objects {"pointer", "message"} to
 * `errors` (a JSON array; may be NULL to only count). Returns the number
 * of failures found: 0 when v is valid; max_errors + 1 means there were
 * more than max_errors (the walk stopped there). Messages never quote the
 * value. */
size_t keel_schema_validate(const keel_schema *s, const struct json_t *v,
                            struct json_t *errors, size_t max_errors);

/* The declared type bits (KEEL_SCHEMA_ANY when `type` is absent). */
unsigned keel_schema_types(const keel_schema *s);

/* The subschema of a property: from `properties`, else the
 * additionalProperties schema; NULL when none applies. */
const keel_schema *keel_schema_property(const keel_schema *s, const char *name);

/* The subschema of array items, or NULL. */
const keel_schema *keel_schema_items(const keel_schema *s);

/* A string from a query or path as the value s declares: an integer,
 * number or boolean when s allows that type and the text is exactly one
 * (decimal digits with an optional '-'; a JSON-style number; true or
 * false), else the string itself — validation then says what is wrong.
 * Returns a new reference. */
struct json_t *keel_schema_coerce(const keel_schema *s, const char *str, size_t len);

/* The formats, exposed for tests and handlers: 1 when valid. */
int keel_format_email(const char *s, size_t n);
int keel_format_uuid(const char *s, size_t n);
int keel_format_date_time(const char *s, size_t n);
int keel_format_uri(const char *s, size_t n);

/* Unicode code points in valid UTF-8 (bytes that start a character). */
size_t keel_utf8_length(const char *s, size_t n);

#ifdef __cplusplus
}
#endif
#endif
