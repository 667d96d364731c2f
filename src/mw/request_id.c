/* request_id.c — request ids and W3C trace context (traceparent). */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "keel/mw.h"
#include "keel/trace.h"

/* "000102...ff": the two hex digits of every byte value. (Under
 * callgrind this beats computing eight digits at a time in a 64-bit
 * word: the masks alone are a dozen 64-bit immediates per half.) */
static const char hex_pairs[513] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

/* v as 16 lowercase hex digits, two per table lookup. */
static void hex16(char *out, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        memcpy(out + 2 * i, hex_pairs + 2 * (v & 0xff), 2);
        v >>= 8;
    }
}

int keel_request_id_valid(keel_str id)
{
    if (id.len == 0 || id.len > 128)
        return 0;
    for (size_t i = 0; i < id.len; i++) {
        char c = id.ptr[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

static keel_flow on_request(keel_req *r, void *data)
{
    keel_tracer *tracer = data;
    keel_arena *a = keel_req_arena(r);
    /* one pass over the request's headers for the three this reads */
    keel_str rid = KEEL_STR_NULL, cid = KEEL_STR_NULL, tp = KEEL_STR_NULL, ts = KEEL_STR_NULL;
    const keel_http_request_head *h = keel_req_head(r);
    for (size_t i = 0; i < h->num_headers; i++) {
        keel_str n = h->headers[i].name;
        if (n.len == 12 && !rid.ptr && strncasecmp(n.ptr, "x-request-id", 12) == 0)
            rid = h->headers[i].value;
        else if (n.len == 16 && !cid.ptr && strncasecmp(n.ptr, "x-correlation-id", 16) == 0)
            cid = h->headers[i].value;
        else if (n.len == 11 && !tp.ptr && strncasecmp(n.ptr, "traceparent", 11) == 0)
            tp = h->headers[i].value;
        else if (n.len == 10 && !ts.ptr && strncasecmp(n.ptr, "tracestate", 10) == 0)
            ts = h->headers[i].value;
    }
    keel_str in = rid.ptr ? rid : cid;
    /* one arena block: the generated id (33), trace id (33), span id (17) */
    char *mem = keel_arena_alloc(a, 33 + 33 + 17);
    char *g = mem, *trace = mem + 33, *span = mem + 66;
    const char *id;
    if (in.ptr && keel_request_id_valid(in)) {
        id = keel_arena_strndup(a, in.ptr, in.len);
    } else {
        hex16(g, keel_random64());
        hex16(g + 16, keel_random64());
        g[32] = '\0';
        id = g;
    }
    keel_req_set_id(r, id);
    keel_res_header(r, "X-Request-Id", id);
    if (tracer) {
        /* sampling, the server span, ids and X-Trace-Id: keel/trace.h */
        keel_trace_request_begin(tracer, r, tp, ts);
        return KEEL_NEXT;
    }

    keel_trace_ctx parent;
    if (tp.ptr && keel_traceparent_parse(tp.ptr, tp.len, &parent) == 0) {
        memcpy(trace, tp.ptr + 3, 32); /* strict: lowercase hex, as sent */
    } else {
        hex16(trace, keel_random64());
        hex16(trace + 16, keel_random64());
    }
    trace[32] = '\0';
    hex16(span, keel_random64() | 1);
    span[16] = '\0';
    keel_req_set_trace(r, trace, span);
    keel_res_header(r, "X-Trace-Id", trace);
    return KEEL_NEXT;
}

keel_middleware keel_mw_request_id(void)
{
    keel_middleware m = {.name = "request_id", .phase = KEEL_PHASE_EDGE, .on_request = on_request};
    return m;
}

static void on_complete(keel_req *r, void *data)
{
    keel_trace_request_end(data, r);
}

keel_middleware keel_mw_request_id_traced(keel_tracer *t)
{
    if (!t)
        return keel_mw_request_id();
    keel_middleware m = {.name = "request_id", .phase = KEEL_PHASE_EDGE, .on_request = on_request,
                         .on_complete = on_complete, .data = t};
    return m;
}
