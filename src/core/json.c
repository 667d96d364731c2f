/* json.c — JSON bodies: depth-limited strict parsing over jansson. */
#include "keel/json.h"

#include <jansson.h>
#include <stdio.h>

/* Nesting depth measured on the raw text without recursion (strings are
 * skipped, escapes honoured), so jansson's recursive parser never sees a
 * body deeper than the limit. Returns the offset of the first bracket past
 * the limit, or -1. */
static long depth_exceeded(const char *s, size_t n, size_t max)
{
    size_t depth = 0;
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > max)
                return (long)i;
        } else if ((c == '}' || c == ']') && depth > 0) {
            depth--;
        }
    }
    return -1;
}

json_t *keel_json_parse(const char *buf, size_t len, size_t max_depth, keel_json_error *err)
{
    memset(err, 0, sizeof(*err));
    long at = depth_exceeded(buf ? buf : "", len, max_depth);
    if (at >= 0) {
        err->status = 400;
        err->offset = (size_t)at;
        snprintf(err->text, sizeof(err->text), "nesting deeper than %zu levels", max_depth);
        return NULL;
    }
    json_error_t e;
    json_t *v = json_loadb(buf ? buf : "", len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e);
    if (!v) {
        err->status = 400;
        err->offset = e.position > 0 ? (size_t)e.position : 0;
        snprintf(err->text, sizeof(err->text), "%s", e.text);
    }
    return v;
}

int keel_json_content_type(keel_str ct)
{
    if (!ct.ptr)
        return 0;
    size_t n = 0;
    while (n < ct.len && ct.ptr[n] != ';' && ct.ptr[n] != ' ' && ct.ptr[n] != '\t')
        n++;
    keel_str mt = {ct.ptr, n};
    if (keel_str_ieq_c(mt, "application/json"))
        return 1;
    const char *slash = memchr(ct.ptr, '/', n);
    return slash && n > 5 && (size_t)(slash - ct.ptr) < n - 5 &&
           keel_str_ieq_c((keel_str){ct.ptr + n - 5, 5}, "+json");
}

static void release_json(void *v)
{
    json_decref(v);
}

json_t *keel_req_json(keel_req *r)
{
    json_t *cached = keel_req_get_local(r, KEEL_JSON_LOCAL);
    if (cached)
        return cached;
    if (!keel_json_content_type(keel_req_header(r, "content-type"))) {
        keel_respond_problem(r, 415, "expected a JSON body (Content-Type: application/json)");
        return NULL;
    }
    const keel_config *cfg = keel_server_config(keel_req_server(r));
    keel_str b = keel_req_body(r);
    if (cfg->json_body_limit && b.len > cfg->json_body_limit) {
        char detail[128];
        snprintf(detail, sizeof(detail), "JSON body larger than %llu bytes",
                 (unsigned long long)cfg->json_body_limit);
        keel_respond_problem(r, 413, detail);
        return NULL;
    }
    keel_json_error err;
    json_t *v = keel_json_parse(b.ptr, b.len,
                                cfg->json_max_depth ? cfg->json_max_depth : KEEL_JSON_MAX_DEPTH,
                                &err);
    if (!v) {
        char detail[256];
        snprintf(detail, sizeof(detail), "malformed JSON at byte %zu: %s", err.offset, err.text);
        keel_respond_problem_ex(r, 400, NULL, detail,
                                json_pack("{s:I}", "offset", (json_int_t)err.offset));
        return NULL;
    }
    keel_req_set_local(r, KEEL_JSON_LOCAL, v);
    keel_arena_defer(keel_req_arena(r), release_json, v);
    return v;
}
