/* keel/json.h — JSON request bodies: strict parsing with a depth limit, and
 * the content-type check, so hostile bodies get a clear 4xx and never a
 * deep recursion. */
#ifndef KEEL_JSON_H
#define KEEL_JSON_H

#include "server.h"

#ifdef __cplusplus
extern "C" {
#endif

struct json_t;

#define KEEL_JSON_MAX_DEPTH 64

typedef struct keel_json_error {
    int status;      /* 400 or 415 */
    size_t offset;   /* byte offset of the error (400) */
    char text[160];  /* what is wrong */
} keel_json_error;

/* Parses buf[0..len) as one JSON value: duplicate object keys are refused,
 * nesting deeper than max_depth is refused before jansson sees it. Returns
 * a new reference, or NULL with err filled (status 400). */
struct json_t *keel_json_parse(const char *buf, size_t len, size_t max_depth,
                               keel_json_error *err);

/* Appends the compact JSON text of v to b: the same bytes as jansson's
 * json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY |
 * JSON_REAL_PRECISION(real_precision)) (0: jansson's default, 17), in a
 * fraction of the instructions (jansson checks every object and array for
 * a cycle through a table keyed by a printf'd address, and prints every
 * integer with printf: ~20,000 instructions for a user record; this is the
 * response path of every JSON route). Keys in insertion order, strings
 * escaped as jansson does; reals are left to jansson. 0, or -1 when v
 * cannot be encoded (a string that is not valid UTF-8, nesting deeper than
 * 2048 — a cycle): b is then as it was. */
int keel_json_dump(keel_buf *b, const struct json_t *v, int real_precision);

/* 1 when a Content-Type value is JSON (application/json, or a +json
 * type), parameters ignored. */
int keel_json_content_type(keel_str content_type);

/* The request body as JSON, or NULL after answering 415 (not JSON), 413
 * (larger than JSON_BODY_LIMIT) or 400 (malformed or nested deeper than
 * JSON_MAX_DEPTH: the detail and an "offset" member give the byte
 * offset). The body is parsed once per request: later calls (the
 * validation middleware's, then the handler's) return the same value.
 *
 * Ownership, the same for every keel_req_*_json function (this one,
 * keel_req_query_json and keel_req_params_json in keel/mw.h): the value
 * is BORROWED — the request owns it and releases it when the request
 * ends. Never json_decref it; do not modify it in place (it is shared);
 * json_incref it to keep it past the request or to hand it to a function
 * that steals a reference (keel_respond_json, json_pack's "o": use "O"). */
struct json_t *keel_req_json(keel_req *r);

/* The request-local key under which keel_req_json keeps the parsed body
 * (a borrowed json_t *, released with the request's arena). */
#define KEEL_JSON_LOCAL "keel.json"

#ifdef __cplusplus
}
#endif
#endif
