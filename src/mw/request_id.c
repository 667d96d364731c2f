/* request_id.c — request ids and W3C trace context (traceparent). */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "keel/mw.h"

/* A fast per-thread generator (xoshiro256**), seeded from the kernel.
 * Ids need to be unique, not secret. */
static __thread uint64_t rng[4];
static __thread int rng_seeded;

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t next64(void)
{
    if (!rng_seeded) {
        if (getrandom(rng, sizeof(rng), 0) != (ssize_t)sizeof(rng)) {
            uint64_t t = keel_now_ns();
            for (int i = 0; i < 4; i++)
                rng[i] = t * 0x9e3779b97f4a7c15ull + (uint64_t)i + (uint64_t)(uintptr_t)&rng;
        }
        rng_seeded = 1;
    }
    uint64_t r = rotl(rng[1] * 5, 7) * 9, t = rng[1] << 17;
    rng[2] ^= rng[0];
    rng[3] ^= rng[1];
    rng[1] ^= rng[2];
    rng[0] ^= rng[3];
    rng[2] ^= t;
    rng[3] = rotl(rng[3], 45);
    return r;
}

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
/* The 8 nibbles of x, most significant first, one per byte of a word
 * whose lowest byte comes first in memory. */
static uint64_t spread_nibbles(uint32_t x)
{
    uint64_t v = x;
    v = ((v & 0xffff0000u) >> 16) | ((v & 0x0000ffffu) << 32);
    v = ((v & 0x0000ff000000ff00ull) >> 8) | ((v & 0x000000ff000000ffull) << 16);
    v = ((v & 0x00f000f000f000f0ull) >> 4) | ((v & 0x000f000f000f000full) << 8);
    return v;
}

/* v as 16 lowercase hex digits, eight at a time: '0' + nibble, plus
 * 'a' - '0' - 10 where the nibble is above 9. */
static void hex16(char *out, uint64_t v)
{
    for (int half = 0; half < 2; half++) {
        uint64_t n = spread_nibbles((uint32_t)(half ? v : v >> 32));
        uint64_t above9 = ((n + 0x0606060606060606ull) >> 4) & 0x0101010101010101ull;
        uint64_t text = n + 0x3030303030303030ull + above9 * ('a' - '0' - 10);
        memcpy(out + 8 * half, &text, 8);
    }
}
#else
static void hex16(char *out, uint64_t v)
{
    static const char h[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--) {
        out[i] = h[v & 15];
        v >>= 4;
    }
}
#endif

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

static int lowhex(const char *p, size_t n)
{
    int nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return -1;
        if (c != '0')
            nonzero = 1;
    }
    return nonzero;
}

/* traceparent = "00-" 32HEXDIG "-" 16HEXDIG "-" 2HEXDIG, ids not all zero. */
static int parse_traceparent(keel_str v, const char **trace)
{
    if (v.len != 55 || v.ptr[0] != '0' || v.ptr[1] != '0' || v.ptr[2] != '-' ||
        v.ptr[35] != '-' || v.ptr[52] != '-')
        return 0;
    if (lowhex(v.ptr + 3, 32) != 1 || lowhex(v.ptr + 36, 16) != 1 ||
        lowhex(v.ptr + 53, 2) < 0)
        return 0;
    *trace = v.ptr + 3;
    return 1;
}

static keel_flow on_request(keel_req *r, void *data)
{
    (void)data;
    keel_arena *a = keel_req_arena(r);
    /* one pass over the request's headers for the three this reads */
    keel_str rid = KEEL_STR_NULL, cid = KEEL_STR_NULL, tp = KEEL_STR_NULL;
    const keel_http_request_head *h = keel_req_head(r);
    for (size_t i = 0; i < h->num_headers; i++) {
        keel_str n = h->headers[i].name;
        if (n.len == 12 && !rid.ptr && strncasecmp(n.ptr, "x-request-id", 12) == 0)
            rid = h->headers[i].value;
        else if (n.len == 16 && !cid.ptr && strncasecmp(n.ptr, "x-correlation-id", 16) == 0)
            cid = h->headers[i].value;
        else if (n.len == 11 && !tp.ptr && strncasecmp(n.ptr, "traceparent", 11) == 0)
            tp = h->headers[i].value;
    }
    keel_str in = rid.ptr ? rid : cid;
    /* one arena block: the generated id (33), trace id (33), span id (17) */
    char *mem = keel_arena_alloc(a, 33 + 33 + 17);
    char *g = mem, *trace = mem + 33, *span = mem + 66;
    const char *id;
    if (in.ptr && keel_request_id_valid(in)) {
        id = keel_arena_strndup(a, in.ptr, in.len);
    } else {
        hex16(g, next64());
        hex16(g + 16, next64());
        g[32] = '\0';
        id = g;
    }
    keel_req_set_id(r, id);
    keel_res_header(r, "X-Request-Id", id);

    const char *parent;
    if (tp.ptr && parse_traceparent(tp, &parent)) {
        memcpy(trace, parent, 32);
    } else {
        hex16(trace, next64());
        hex16(trace + 16, next64());
    }
    trace[32] = '\0';
    hex16(span, next64() | 1);
    span[16] = '\0';
    keel_req_set_trace(r, trace, span);
    return KEEL_NEXT;
}

keel_middleware keel_mw_request_id(void)
{
    keel_middleware m = {.name = "request_id", .phase = KEEL_PHASE_EDGE, .on_request = on_request};
    return m;
}
