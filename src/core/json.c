/* json.c — JSON bodies: depth-limited strict parsing over jansson. */
#include "keel/json.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/swar.h"

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

/* ---------------------------------------------------------------- encoding */

#define DUMP_MAX_DEPTH 2048

/* Length of the UTF-8 sequence at s (n bytes left) as jansson accepts it
 * (no overlong forms, no surrogates, nothing past U+10FFFF), its code
 * point in *cp; 0 when invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t v;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        v = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        v = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        v = c & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && v < 0x800) || (len == 4 && v < 0x10000) || v > 0x10ffff ||
        (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return len;
}

/* 1 for the bytes that leave the plain run: '"', '\\', controls, and the
 * first byte of a multi-byte sequence (checked, then copied as it is). */
static const unsigned char special[256] = {
    [0 ... 0x1f] = 1, ['"'] = 1, ['\\'] = 1, [0x80 ... 0xff] = 1,
};

/* keel_buf_append without the call when there is room (most of the time:
 * the response buffer is kept per thread). */
static inline void put(keel_buf *b, const char *p, size_t n)
{
    if (b->cap - b->len >= n) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
    } else {
        keel_buf_append(b, p, n);
    }
}

static inline void put1(keel_buf *b, char c)
{
    if (b->cap > b->len)
        b->data[b->len++] = c;
    else
        keel_buf_append(b, &c, 1);
}

static int dump_string(keel_buf *b, const char *str, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *s = (const unsigned char *)str;
    size_t need = n * 6 + 2; /* the worst case: all \u00XX */
    char *w = b->cap - b->len >= need ? b->data + b->len : keel_buf_reserve(b, need);
    *w++ = '"';
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        /* 8 bytes at a time while none is special: no byte < 0x20, none
         * >= 0x80, no '"' (0x22) and no '\\' (0x5c) */
        while (run + 8 <= n) {
            uint64_t x;
            memcpy(&x, s + run, 8);
            if (keel__swar_below(x, 0x20) | keel__swar_byte(x, '"') | keel__swar_byte(x, '\\') |
                (x & KEEL_SWAR_HIGHS))
                break;
            run += 8;
        }
        while (run < n && !special[s[run]])
            run++;
        memcpy(w, s + i, run - i);
        w += run - i;
        i = run;
        if (i == n)
            break;
        unsigned char c = s[i];
        if (c >= 0x80) {
            uint32_t cp;
            size_t len = utf8_seq(s + i, n - i, &cp);
            if (!len)
                return -1;
            memcpy(w, s + i, len);
            w += len;
            i += len;
            continue;
        }
        *w++ = '\\';
        switch (c) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '\b': *w++ = 'b'; break;
        case '\f': *w++ = 'f'; break;
        case '\n': *w++ = 'n'; break;
        case '\r': *w++ = 'r'; break;
        case '\t': *w++ = 't'; break;
        default:
            *w++ = 'u';
            *w++ = '0';
            *w++ = '0';
            *w++ = hex[c >> 4];
            *w++ = hex[c & 15];
        }
        i++;
    }
    *w++ = '"';
    b->len = (size_t)(w - b->data);
    return 0;
}

static void dump_integer(keel_buf *b, json_int_t v)
{
    char tmp[24];
    char *e = tmp + sizeof(tmp), *p = e;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    put(b, p, (size_t)(e - p));
}

static int dump_value(keel_buf *b, const json_t *v, int prec, int depth)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        if (depth >= DUMP_MAX_DEPTH)
            return -1;
        put1(b, '{');
        int first = 1;
        for (void *it = json_object_iter((json_t *)v); it;
             it = json_object_iter_next((json_t *)v, it)) {
            if (!first)
                put1(b, ',');
            first = 0;
            if (dump_string(b, json_object_iter_key(it), json_object_iter_key_len(it)) < 0)
                return -1;
            put1(b, ':');
            if (dump_value(b, json_object_iter_value(it), prec, depth + 1) < 0)
                return -1;
        }
        put1(b, '}');
        return 0;
    }
    case JSON_ARRAY: {
        if (depth >= DUMP_MAX_DEPTH)
            return -1;
        put1(b, '[');
        size_t n = json_array_size(v);
        for (size_t i = 0; i < n; i++) {
            if (i)
                put1(b, ',');
            if (dump_value(b, json_array_get(v, i), prec, depth + 1) < 0)
                return -1;
        }
        put1(b, ']');
        return 0;
    }
    case JSON_STRING:
        return dump_string(b, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        dump_integer(b, json_integer_value(v));
        return 0;
    case JSON_REAL: { /* rare in responses: jansson's own formatting, exactly */
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(prec));
        if (!s)
            return -1;
        keel_buf_append_str(b, s);
        free(s);
        return 0;
    }
    case JSON_TRUE:
        put(b, "true", 4);
        return 0;
    case JSON_FALSE:
        put(b, "false", 5);
        return 0;
    case JSON_NULL:
        put(b, "null", 4);
        return 0;
    }
    return -1;
}

int keel_json_dump(keel_buf *b, const json_t *v, int real_precision)
{
    if (!v)
        return -1;
    size_t start = b->len;
    if (dump_value(b, v, real_precision, 0) < 0) {
        b->len = start;
        return -1;
    }
    return 0;
}
