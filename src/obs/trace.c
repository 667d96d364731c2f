/* trace.c — spans per request, sampling, OTLP/HTTP JSON batches per
 * worker, the in-memory ring of recent traces.
 *
 * Design. Everything a request records lives in a trace record taken from
 * its worker's pool (no malloc per span once the pool is warm): an array
 * of spans grown on demand up to TRACE_MAX_SPANS, and one growing text
 * buffer where names, attribute keys and values and events are kept raw
 * (escaped and encoded only with their span). A keel_span_ref is (record, generation, index): the
 * generation is bumped as soon as its request completed, so a late
 * callback (a Redis reply after a deadline) finds a stale ref and does
 * nothing instead of writing into a finished or another request's trace.
 *
 * When the request completes, the record itself goes into the worker's
 * ring of recent traces (the record it replaces goes back to the pool):
 * it is encoded as OTLP JSON only when an admin route reads it. With an
 * exporter, its spans are also encoded once, straight into the worker's
 * export queue (bounded; full = dropped and counted): a ring of batch
 * buffers, each a whole OTLP request body, handed to the HTTP client
 * without a copy when it leaves. A batch
 * leaves when the queue holds OTEL_BSP_MAX_EXPORT_BATCH_SIZE spans or on
 * the worker's OTEL_BSP_SCHEDULE_DELAY timer; one batch per worker is in
 * flight at a time, retried on 429/502/503/504 after Retry-After (bounded
 * by OTEL_BSP_EXPORT_TIMEOUT). Nothing here takes a lock shared between
 * workers: the ring's mutex is the worker's own, shared only with the
 * admin routes; the leftovers list is touched only when a worker stops.
 */
#include "keel/trace.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

#include "keel/log.h"
#include "core/swar.h"
#include "obs/trace_internal.h"

/* ---------------------------------------------------------------- ids */

/* n (8 or 16) random bytes, not all zero (an all-zero id is invalid:
 * drawn again, never in practice). */
static void random_id(uint8_t *out, size_t n)
{
    uint64_t v[2], any;
    do {
        v[0] = keel_random64();
        v[1] = n > 8 ? keel_random64() : 0;
        any = v[0] | v[1];
    } while (!any);
    memcpy(out, v, n);
}

static const char hexd[] = "0123456789abcdef";

/* ---------------------------------------------------------------- text */

/* ---------------------------------------------------------------- records */

typedef struct kspan {
    uint8_t id[8];
    int32_t parent; /* index of the parent; -1: the remote parent (or none) */
    uint64_t start, end; /* monotonic ns; end 0: open */
    uint32_t name_off, name_len, msg_off, msg_len;
    uint8_t kind, status; /* status: 0 unset, 1 ok, 2 error */
} kspan;

/* An attribute or an event of span `span`, kept raw (encoded only when
 * the span is: at export, or when an admin route reads the ring). */
enum { KA_STR, KA_INT, KA_EVENT };
typedef struct kattr {
    int32_t span;
    uint8_t kind;
    uint32_t key_off, key_len; /* the key (KA_STR, KA_INT), in text */
    uint32_t off, len;         /* the string value, or the event's name */
    union {
        int64_t i;             /* KA_INT */
        uint64_t t;            /* KA_EVENT: when */
    } v;
} kattr;

typedef struct tworker tworker;

typedef struct kbatch {
    keel_buf b;
    unsigned n; /* spans in b */
} kbatch;

typedef struct ktrace {
    uint32_t gen;
    int live;
    keel_trace_ctx ctx;        /* trace id, flags; span_id: the remote parent */
    char hex[48];              /* the trace id's and the server span's id in hex */
    int has_parent;
    int32_t current;
    unsigned n, dropped;
    kspan *spans;              /* spans_cap of them, grown up to TRACE_MAX_SPANS */
    unsigned spans_cap;
    kattr *attrs;
    unsigned nattrs, attrs_cap;
    uint32_t ts_off, ts_len;   /* tracestate, in text */
    keel_buf text;
    keel_req *req;             /* NULL once the request completed */
    /* the server span's own attributes, encoded with it: copied into text
     * when the request completes (the record outlives it in the ring);
     * route is the route table's own path (lives as long as the server) */
    uint32_t method_off, method_len, path_off, path_len, client_off, client_len;
    uint32_t route_off, route_len; /* a copy of route, in text after the client */
    int fields_clean;          /* none of the four needs escaping: copied as they are */
    const char *route;
    int http_status;
    int64_t offset;            /* wall clock - monotonic when it completed, ns */
    tworker *tw;
    struct ktrace *next_free, *next_all;
} ktrace;

struct tworker {
    keel_tracer *t;
    keel_worker *w;
    unsigned id;
    ktrace *free_list, *all;
    /* the export queue: batches, each a whole OTLP request body being
     * written (the envelope's prefix, then spans comma-separated; the
     * suffix goes on when it leaves), in a ring of nbatches buffers
     * reused for good: qhead is the oldest queued, qcount are queued (all
     * full but the last), fly the one in flight (-1: none). Spans are
     * encoded straight into the last: a batch is sent without a copy. */
    kbatch *batches;
    unsigned nbatches, qhead, qcount;
    int fly;
    unsigned nq;        /* spans queued (not counting the batch in flight) */
    unsigned inflight;  /* spans of the batch in flight */
    unsigned attempt;
    uint64_t first_ms;
    int timers;
    uv_timer_t tick, retry;
    int stopping;
    int64_t offset;      /* wall clock - monotonic, ns */
    uint64_t offset_at;  /* loop time it was read at (ms); 0: never */
    /* recent traces: the finished records themselves, encoded only when
     * an admin route reads them */
    uv_mutex_t mu;
    ktrace **ring;
    unsigned ring_next;
};

struct keel_tracer {
    keel_trace_options o;
    keel_server *srv;
    unsigned nworkers;
    tworker *workers;
    keel_trace_exporter exp;
    int has_exp;
    char *prefix, *suffix;
    size_t prefix_len, suffix_len;
    keel_metric *m_exported, *m_dropped, *m_failures, *m_rejected;
    uv_mutex_t left_mu;
    keel_buf left; /* spans left when the workers stopped, comma-separated */
    unsigned nleft;
};

const keel_trace_options *keel_tracer_options(const keel_tracer *t) { return &t->o; }
const char *keel_tracer_payload_prefix(const keel_tracer *t) { return t->prefix; }

static ktrace *trace_get(tworker *tw)
{
    ktrace *k = tw->free_list;
    if (k) {
        tw->free_list = k->next_free;
    } else {
        k = keel_calloc(1, sizeof(*k));
        k->tw = tw;
        k->next_all = tw->all;
        tw->all = k;
    }
    k->live = 1;
    k->n = k->dropped = k->nattrs = 0;
    k->text.len = 0;
    k->current = -1;
    k->ts_len = 0;
    k->req = NULL;
    k->route = NULL;
    k->http_status = 0;
    return k;
}

/* The request is over: refs made during it become stale (a late callback
 * finds a bumped generation and does nothing). The record itself may live
 * on in the ring. */
static void trace_retire(ktrace *k)
{
    k->live = 0;
    k->gen++;
    k->req = NULL;
}

/* Back to the worker's pool (a retired record). */
static void trace_put(ktrace *k)
{
    if (k->text.cap > 65536)
        keel_buf_free(&k->text);
    if (k->spans_cap > 16) { /* a request with many spans: not kept for all */
        keel_free(k->spans);
        k->spans = NULL;
        k->spans_cap = 0;
    }
    k->next_free = k->tw->free_list;
    k->tw->free_list = k;
}

static ktrace *ref_trace(keel_span_ref r)
{
    ktrace *k = r.trace;
    if (!k || k->gen != r.gen || !k->live || r.idx < 0 || (unsigned)r.idx >= k->n)
        return NULL;
    return k;
}

int keel_span_ok(keel_span_ref ref)
{
    return ref_trace(ref) != NULL;
}

static uint32_t text_add(ktrace *k, const char *s, size_t n)
{
    uint32_t off = (uint32_t)k->text.len;
    keel_buf_append(&k->text, s, n);
    return off;
}

static kattr *attr_push(ktrace *k, int32_t span, int kind)
{
    if (k->nattrs == k->attrs_cap) {
        k->attrs_cap = k->attrs_cap ? k->attrs_cap * 2 : 16;
        k->attrs = keel_realloc(k->attrs, k->attrs_cap * sizeof(kattr));
    }
    kattr *a = &k->attrs[k->nattrs++];
    *a = (kattr){.span = span, .kind = (uint8_t)kind}; /* an event has no key */
    return a;
}

/* key, then value (may be NULL), copied into text in one reservation. */
static kattr *attr_add(ktrace *k, int32_t span, int kind, const char *key, const char *value,
                       size_t n)
{
    size_t kl = strlen(key), off = k->text.len;
    char *w = keel_buf_reserve(&k->text, kl + n);
    memcpy(w, key, kl);
    if (n)
        memcpy(w + kl, value, n);
    k->text.len += kl + n;
    kattr *a = attr_push(k, span, kind);
    a->key_off = (uint32_t)off;
    a->key_len = (uint32_t)kl;
    a->off = (uint32_t)(off + kl);
    a->len = (uint32_t)n;
    return a;
}

static keel_span_ref span_new(ktrace *k, int32_t parent, const char *name, size_t nlen,
                              int kind, uint64_t start)
{
    keel_span_ref none = {0};
    if (k->n >= k->tw->t->o.max_spans) {
        k->dropped++;
        return none;
    }
    if (k->n == k->spans_cap) {
        /* grown on demand: a record in the ring keeps only what it used */
        unsigned cap = k->spans_cap ? k->spans_cap * 2 : 4, max = k->tw->t->o.max_spans;
        k->spans_cap = cap < max ? cap : max;
        k->spans = keel_realloc(k->spans, k->spans_cap * sizeof(kspan));
    }
    kspan *s = &k->spans[k->n];
    memset(s, 0, sizeof(*s));
    random_id(s->id, 8);
    s->parent = parent;
    s->start = start ? start : keel_now_ns();
    s->kind = (uint8_t)kind;
    s->name_len = (uint32_t)nlen;
    s->name_off = text_add(k, name, nlen);
    keel_span_ref r = {.trace = k, .gen = k->gen, .idx = (int32_t)k->n++};
    return r;
}

keel_span_ref keel_span_begin(keel_span_ref parent, const char *name, int kind,
                              uint64_t start_ns)
{
    keel_span_ref none = {0};
    ktrace *k = ref_trace(parent);
    if (!k || !name)
        return none;
    return span_new(k, parent.idx, name, strlen(name), kind, start_ns);
}

void keel_span_finish(keel_span_ref s, uint64_t end_ns)
{
    ktrace *k = ref_trace(s);
    if (!k || k->spans[s.idx].end)
        return;
    k->spans[s.idx].end = end_ns ? end_ns : keel_now_ns();
}

void keel_span_set_strn(keel_span_ref s, const char *key, const char *value, size_t n)
{
    ktrace *k = ref_trace(s);
    if (!k || !key || !value)
        return;
    attr_add(k, s.idx, KA_STR, key, value, n);
}

void keel_span_set_str(keel_span_ref s, const char *key, const char *value)
{
    if (value)
        keel_span_set_strn(s, key, value, strlen(value));
}

void keel_span_set_int(keel_span_ref s, const char *key, int64_t value)
{
    ktrace *k = ref_trace(s);
    if (!k || !key)
        return;
    attr_add(k, s.idx, KA_INT, key, NULL, 0)->v.i = value;
}

void keel_span_add_event(keel_span_ref s, const char *name)
{
    ktrace *k = ref_trace(s);
    if (!k || !name)
        return;
    size_t n = strlen(name);
    uint32_t off = text_add(k, name, n);
    kattr *a = attr_push(k, s.idx, KA_EVENT);
    a->off = off;
    a->len = (uint32_t)n;
    a->v.t = keel_now_ns();
}

void keel_span_set_error(keel_span_ref s, const char *message)
{
    ktrace *k = ref_trace(s);
    if (!k)
        return;
    kspan *sp = &k->spans[s.idx];
    sp->status = 2;
    if (message) {
        sp->msg_len = (uint32_t)strlen(message);
        sp->msg_off = text_add(k, message, sp->msg_len);
    }
}

int keel_span_traceparent(keel_span_ref s, char out[56])
{
    ktrace *k = ref_trace(s);
    if (!k)
        return KEEL_EINVAL;
    keel_trace_ctx c = k->ctx;
    memcpy(c.span_id, k->spans[s.idx].id, 8);
    c.flags = 1;
    keel_traceparent_format(&c, out);
    return 0;
}

int keel_trace_propagate(keel_req *r, char out[56])
{
    const char *trace = keel_req_trace_id(r), *span = keel_req_span_id(r);
    if (!trace || !span || strlen(trace) != 32 || strlen(span) != 16)
        return KEEL_EINVAL;
    ktrace *k = keel_req_obs(r);
    snprintf(out, 56, "00-%s-%s-%s", trace, span, k && k->live ? "01" : "00");
    return 0;
}

const char *keel_trace_tracestate(keel_req *r)
{
    return keel_req_get_local(r, "keel.tracestate");
}

keel_span_ref keel_trace_ref(keel_req *r)
{
    keel_span_ref none = {0};
    ktrace *k = r ? keel_req_obs(r) : NULL;
    if (!k || !k->live || k->req != r || k->current < 0)
        return none;
    keel_span_ref ref = {.trace = k, .gen = k->gen, .idx = k->current};
    return ref;
}

keel_span_ref keel_trace_current(void)
{
    return keel_trace_ref(keel_req_current());
}

keel_span_ref keel_span_start(keel_req *r, const char *name)
{
    keel_span_ref s = keel_span_begin(keel_trace_ref(r), name, KEEL_SPAN_INTERNAL, 0);
    ktrace *k = ref_trace(s);
    if (k)
        k->current = s.idx;
    return s;
}

void keel_span_end(keel_req *r, keel_span_ref s)
{
    ktrace *k = ref_trace(s);
    if (!k)
        return;
    keel_span_finish(s, 0);
    if (k->req == r && k->current == s.idx)
        k->current = k->spans[s.idx].parent >= 0 ? k->spans[s.idx].parent : 0;
}

/* ---------------------------------------------------------------- encoding */

/* Encoding writes into room reserved once per span (an upper bound),
 * through a pointer: a span is some thirty pieces, and a call per piece
 * was most of the cost of a traced request. */
#define W_LIT(w, s) (memcpy((w), (s), sizeof(s) - 1), (w) += sizeof(s) - 1)

static char *w_hex(char *w, const uint8_t *p, size_t n)
{
    keel__trace_hex_encode(w, p, n);
    return w + 2 * n;
}

/* "00" "01" ... "99": decimal digits two at a time */
static const char dec2[201] = "0001020304050607080910111213141516171819"
                              "2021222324252627282930313233343536373839"
                              "4041424344454647484950515253545556575859"
                              "6061626364656667686970717273747576777879"
                              "8081828384858687888990919293949596979899";

/* x (below 10^4) as exactly 4 digits. */
static inline void w_4digits(char *w, uint32_t x)
{
    uint32_t a = x / 100, b = x - a * 100;
    memcpy(w, dec2 + 2 * a, 2);
    memcpy(w + 2, dec2 + 2 * b, 2);
}

/* x (below 10^8) as exactly 8 digits. */
static inline void w_8digits(char *w, uint32_t x)
{
    uint32_t hi = x / 10000;
    w_4digits(w, hi);
    w_4digits(w + 4, x - hi * 10000);
}

/* v (below 10^8) in decimal. */
static char *w_small(char *w, uint32_t v)
{
    if (v < 100) {
        if (v < 10) {
            *w++ = (char)('0' + v);
            return w;
        }
        memcpy(w, dec2 + 2 * v, 2);
        return w + 2;
    }
    char t[16] = {0}; /* 8 digits, then room for the fixed 8-byte move below */
    w_8digits(t, v);
    unsigned z = v < 1000 ? 5 : v < 10000 ? 4 : v < 100000 ? 3 : v < 1000000 ? 2 : v < 10000000 ? 1 : 0;
    memcpy(w, t + z, 8); /* the writers reserve room past what they write */
    return w + 8 - z;
}

/* v in decimal: in pieces of 8 digits, two divisions in 64 bits at most. */
static char *w_u64(char *w, uint64_t v)
{
    if (v < 100000000u)
        return w_small(w, (uint32_t)v);
    uint32_t lo = (uint32_t)(v % 100000000u);
    v /= 100000000u;
    if (v < 100000000u) {
        w = w_small(w, (uint32_t)v);
    } else {
        w = w_small(w, (uint32_t)(v / 100000000u)); /* at most 1844 */
        w_8digits(w, (uint32_t)(v % 100000000u));
        w += 8;
    }
    w_8digits(w, lo);
    return w + 8;
}

/* A time in ns since the epoch: the seconds' digits change once a second,
 * so the thread keeps the last ones written (the admin routes encode on
 * other threads than the workers); then the nine digits of the ns. */
static __thread uint64_t ts_sec = UINT64_MAX;
static __thread char ts_digits[24];
static __thread size_t ts_len;

static char *w_unix_ns(char *w, uint64_t ns)
{
    uint64_t sec = ns / 1000000000u;
    if (!sec)
        return w_u64(w, ns);
    uint32_t frac = (uint32_t)(ns - sec * 1000000000u);
    if (sec != ts_sec) {
        ts_len = (size_t)(w_u64(ts_digits, sec) - ts_digits);
        ts_sec = sec;
    }
    memcpy(w, ts_digits, 16); /* ts_len: 10 or 11 digits until the year 5138 */
    w += ts_len;
    *w++ = (char)('0' + frac / 100000000u);
    w_8digits(w, frac % 100000000u);
    return w + 8;
}

/* Eight bytes at a time (the common case: nothing to escape in a word),
 * with core/swar.h. */

/* 1: the byte is not copied as it is into a JSON string (a control byte,
 * DEL, '"', '\\', a byte of a multi-byte sequence). */
static const uint8_t jesc[256] = {
    [0 ... 0x1f] = 1, ['"'] = 1, ['\\'] = 1, [0x7f ... 0xff] = 1,
};

/* The length of the well-formed UTF-8 sequence at s (lead byte from
 * 0x80; n bytes available), 0 if none: no overlong forms, no surrogates,
 * nothing past U+10FFFF (what a strict JSON parser accepts). */
static size_t utf8_len(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    unsigned char c = u[0], lo = 0x80, hi = 0xbf;
    size_t len;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    else
        return 0;
    if (n < len || u[1] < lo || u[1] > hi)
        return 0;
    for (size_t k = 2; k < len; k++)
        if ((u[k] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* s as the inside of a JSON string (at most 6 bytes per byte): control
 * bytes and DEL escaped, valid UTF-8 kept, invalid bytes as U+FFFD. */
static char *w_esc(char *w, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        /* the run that needs nothing, copied as it is */
        for (; i + 8 <= n; i += 8) {
            uint64_t x;
            memcpy(&x, s + i, 8);
            if (keel__swar_below(x, 0x20) | (x & KEEL_SWAR_HIGHS) | keel__swar_byte(x, '"') |
                keel__swar_byte(x, '\\') | keel__swar_byte(x, 0x7f))
                break;
            memcpy(w, &x, 8);
            w += 8;
        }
        while (i < n && !jesc[u[i]])
            *w++ = s[i++];
        if (i >= n)
            break;
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *w++ = '\\';
            *w++ = (char)c;
            i++;
        } else if (c < 0x80) {
            if (c == '\n') {
                W_LIT(w, "\\n");
            } else if (c == '\r') {
                W_LIT(w, "\\r");
            } else if (c == '\t') {
                W_LIT(w, "\\t");
            } else {
                W_LIT(w, "\\u00");
                *w++ = hexd[c >> 4];
                *w++ = hexd[c & 15];
            }
            i++;
        } else {
            size_t need = utf8_len(s + i, n - i);
            if (need) {
                need--;
                memcpy(w, s + i, need + 1);
                w += need + 1;
                i += need + 1;
            } else {
                W_LIT(w, "\\ufffd");
                i++;
            }
        }
    }
    return w;
}

static char *w_time(char *w, uint64_t mono, int64_t offset)
{
    *w++ = '"';
    w = w_unix_ns(w, (uint64_t)((int64_t)mono + offset));
    *w++ = '"';
    return w;
}

/* One of the server span's four fields (method, path, client, route),
 * kept in the record's text with 16 readable bytes after them: copied as
 * they are when none needs escaping (one check for the four when the
 * request ended), a short one as a fixed 16-byte move. */
static inline char *w_field(char *w, const char *v, size_t n, int clean)
{
    if (!clean)
        return w_esc(w, v, n);
    if (n <= 16)
        memcpy(w, v, 16);
    else
        memcpy(w, v, n);
    return w + n;
}

/* inlined: the key's length is a constant at each use, its copy a move */
static inline __attribute__((always_inline)) char *w_attr_field(char *w, const char *key,
                                                                size_t klen, const char *v,
                                                                size_t n, int clean)
{
    W_LIT(w, "{\"key\":\"");
    memcpy(w, key, klen);
    w += klen;
    W_LIT(w, "\",\"value\":{\"stringValue\":\"");
    w = w_field(w, v, n, clean);
    W_LIT(w, "\"}},");
    return w;
}
#define W_FIELD(w, key, v, n, c) ((w) = w_attr_field((w), (key), sizeof(key) - 1, (v), (n), (c)))

/* Span i of k as one OTLP JSON object. offset: wall clock - monotonic. */
static void encode_span(keel_buf *b, const ktrace *k, unsigned i, int64_t offset, uint64_t now)
{
    const kspan *s = &k->spans[i];
    const char *text = k->text.data;
    size_t route_len = i == 0 && k->route ? k->route_len : 0;
    size_t cap = 1024 + 6 * ((size_t)s->name_len + s->msg_len);
    if (i == 0)
        cap += 512 + 6 * ((size_t)k->ts_len + 2 * k->method_len + k->path_len +
                          2 * route_len + k->client_len);
    for (unsigned a = 0; a < k->nattrs; a++)
        if (k->attrs[a].span == (int32_t)i)
            cap += 96 + 6 * ((size_t)k->attrs[a].key_len + k->attrs[a].len);
    char *w0 = keel_buf_reserve(b, cap), *w = w0;
    W_LIT(w, "{\"traceId\":\"");
    memcpy(w, k->hex, 32);
    w += 32;
    W_LIT(w, "\",\"spanId\":\"");
    if (i == 0) {
        memcpy(w, k->hex + 32, 16);
        w += 16;
    } else {
        w = w_hex(w, s->id, 8);
    }
    *w++ = '"';
    if (s->parent == 0) {
        W_LIT(w, ",\"parentSpanId\":\"");
        memcpy(w, k->hex + 32, 16);
        w += 16;
        *w++ = '"';
    } else if (s->parent > 0 || k->has_parent) {
        W_LIT(w, ",\"parentSpanId\":\"");
        w = w_hex(w, s->parent >= 0 ? k->spans[s->parent].id : k->ctx.span_id, 8);
        *w++ = '"';
    }
    if (i == 0 && k->ts_len) {
        W_LIT(w, ",\"traceState\":\"");
        w = w_esc(w, text + k->ts_off, k->ts_len);
        *w++ = '"';
    }
    W_LIT(w, ",\"name\":\"");
    if (i == 0) {
        /* the server span: "GET /api/v1/users/:id", or the method alone
         * when no route matched */
        if (k->method_len)
            w = w_field(w, text + k->method_off, k->method_len, k->fields_clean);
        else
            W_LIT(w, "HTTP");
        if (k->route) {
            *w++ = ' ';
            w = w_field(w, text + k->route_off, route_len, k->fields_clean);
        }
    } else {
        w = w_esc(w, text + s->name_off, s->name_len);
    }
    W_LIT(w, "\",\"kind\":");
    *w++ = (char)('0' + s->kind);
    W_LIT(w, ",\"startTimeUnixNano\":");
    w = w_time(w, s->start, offset);
    W_LIT(w, ",\"endTimeUnixNano\":");
    w = w_time(w, s->end ? s->end : now, offset);
    W_LIT(w, ",\"attributes\":[");
    char *attrs0 = w;
    if (i == 0) {
        /* the server span's: HTTP semantic conventions */
        int c = k->fields_clean;
        W_FIELD(w, "http.request.method", text + k->method_off, k->method_len, c);
        W_FIELD(w, "url.path", text + k->path_off, k->path_len, c);
        if (k->client_len)
            W_FIELD(w, "client.address", text + k->client_off, k->client_len, c);
        if (k->route)
            W_FIELD(w, "http.route", text + k->route_off, route_len, c);
        W_LIT(w, "{\"key\":\"http.response.status_code\",\"value\":{\"intValue\":\"");
        w = w_u64(w, (uint64_t)k->http_status);
        W_LIT(w, "\"}},");
        if (k->http_status >= 500) {
            W_LIT(w, "{\"key\":\"error.type\",\"value\":{\"stringValue\":\"");
            w = w_u64(w, (uint64_t)k->http_status);
            W_LIT(w, "\"}},");
        }
    }
    for (unsigned a = 0; a < k->nattrs; a++) {
        const kattr *at = &k->attrs[a];
        if (at->span != (int32_t)i || at->kind == KA_EVENT)
            continue;
        W_LIT(w, "{\"key\":\"");
        w = w_esc(w, text + at->key_off, at->key_len);
        if (at->kind == KA_INT) {
            /* OTLP/JSON: 64-bit integers are decimal strings */
            W_LIT(w, "\",\"value\":{\"intValue\":\"");
            if (at->v.i < 0) {
                *w++ = '-';
                w = w_u64(w, (uint64_t)0 - (uint64_t)at->v.i);
            } else {
                w = w_u64(w, (uint64_t)at->v.i);
            }
        } else {
            W_LIT(w, "\",\"value\":{\"stringValue\":\"");
            w = w_esc(w, text + at->off, at->len);
        }
        W_LIT(w, "\"}},");
    }
    if (w > attrs0)
        w--; /* the last comma */
    *w++ = ']';
    int first = 1;
    for (unsigned a = 0; a < k->nattrs; a++) {
        const kattr *at = &k->attrs[a];
        if (at->span != (int32_t)i || at->kind != KA_EVENT)
            continue;
        if (first)
            W_LIT(w, ",\"events\":[");
        else
            *w++ = ',';
        first = 0;
        W_LIT(w, "{\"timeUnixNano\":");
        w = w_time(w, at->v.t, offset);
        W_LIT(w, ",\"name\":\"");
        w = w_esc(w, text + at->off, at->len);
        W_LIT(w, "\"}");
    }
    if (!first)
        *w++ = ']';
    W_LIT(w, ",\"status\":{");
    if (s->status) {
        W_LIT(w, "\"code\":");
        *w++ = (char)('0' + s->status);
        if (s->msg_len) {
            W_LIT(w, ",\"message\":\"");
            w = w_esc(w, text + s->msg_off, s->msg_len);
            *w++ = '"';
        }
    }
    W_LIT(w, "}}");
    b->len += (size_t)(w - w0);
}

static int64_t clock_offset(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t wall = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    return wall - (int64_t)keel_now_ns();
}

static void kv_attr(const char *k, const char *v, void *arg)
{
    json_t *attrs = arg;
    /* a later value of the same key wins (OTEL_SERVICE_NAME over the list) */
    size_t i;
    json_t *a;
    json_array_foreach(attrs, i, a)
    {
        if (!strcmp(json_string_value(json_object_get(a, "key")), k)) {
            json_array_remove(attrs, i);
            break;
        }
    }
    json_array_append_new(attrs, json_pack("{s:s,s:{s:s}}", "key", k, "value", "stringValue", v));
}

/* {"resourceSpans":[{"resource":{...},"scopeSpans":[{"scope":{...},"spans":[ ... ]}]}]} */
static void build_envelope(keel_tracer *t, const keel_config *cfg)
{
    json_t *attrs = json_array();
    keel_trace_kv_parse(t->o.resource_attributes, kv_attr, attrs);
    const char *svc = t->o.service_name && *t->o.service_name ? t->o.service_name
                                                               : cfg->service_name;
    int have_name = 0;
    size_t i;
    json_t *a;
    json_array_foreach(attrs, i, a)
    {
        if (!strcmp(json_string_value(json_object_get(a, "key")), "service.name"))
            have_name = 1;
    }
    if (!have_name || (t->o.service_name && *t->o.service_name))
        kv_attr("service.name", svc && *svc ? svc : "keel", attrs);
    kv_attr("telemetry.sdk.name", "keel", attrs);
    json_t *res = json_pack("{s:o}", "attributes", attrs);
    char *rs = json_dumps(res, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(res);
    keel_buf b = {0};
    keel_buf_printf(&b, "{\"resourceSpans\":[{\"resource\":%s,\"scopeSpans\":[{\"scope\":"
                        "{\"name\":\"keel\"},\"spans\":[",
                    rs);
    free(rs);
    keel_buf_append(&b, "", 1);
    t->prefix = b.data;
    t->prefix_len = b.len - 1;
    t->suffix = keel_strdup("]}]}]}");
    t->suffix_len = strlen(t->suffix);
}

/* ---------------------------------------------------------------- export */

static void count(keel_metric *m, unsigned shard, const char *reason, double v)
{
    if (!m)
        return;
    const char *lv[] = {reason};
    keel_metric_add(m, shard, reason ? lv : NULL, v);
}

static void export_next(tworker *tw);

/* The oldest queued batch (full, or the partial last one on the timer)
 * becomes the one in flight: the envelope's suffix closes it. */
static void batch_take(tworker *tw)
{
    keel_tracer *t = tw->t;
    kbatch *b = &tw->batches[tw->qhead];
    keel_buf_append(&b->b, t->suffix, t->suffix_len);
    tw->fly = (int)tw->qhead;
    if (++tw->qhead == tw->nbatches)
        tw->qhead = 0;
    tw->qcount--;
    tw->nq -= b->n;
    tw->inflight = b->n;
    tw->attempt = 0;
    tw->first_ms = keel_now_ms();
}

/* The batch in flight is done with: its buffer is free again. */
static void batch_done(tworker *tw)
{
    tw->inflight = 0;
    tw->fly = -1;
}

/* The spans of the batch in flight go to the leftovers (shutdown). */
static void batch_leave(tworker *tw)
{
    keel_tracer *t = tw->t;
    if (!tw->inflight)
        return;
    const keel_buf *p = &tw->batches[tw->fly].b;
    size_t n = p->len - t->prefix_len - t->suffix_len;
    uv_mutex_lock(&t->left_mu);
    if (t->left.len)
        keel_buf_append(&t->left, ",", 1);
    keel_buf_append(&t->left, p->data + t->prefix_len, n);
    t->nleft += tw->inflight;
    uv_mutex_unlock(&t->left_mu);
    batch_done(tw);
}

static void send_batch(tworker *tw);

static void on_retry(uv_timer_t *h)
{
    send_batch(h->data);
}

static int retryable(int status)
{
    return status == 429 || status == 502 || status == 503 || status == 504;
}

static void on_sent(void *arg, int status, uint64_t retry_after_ms, uint64_t rejected)
{
    tworker *tw = arg;
    keel_tracer *t = tw->t;
    if (status == KEEL_ECANCELED && tw->stopping) {
        batch_leave(tw); /* the worker stops: the main thread sends it */
        return;
    }
    if (status >= 200 && status < 300) {
        uint64_t ok = rejected < tw->inflight ? tw->inflight - rejected : 0;
        count(t->m_exported, tw->id, NULL, (double)ok);
        if (rejected) {
            count(t->m_rejected, tw->id, NULL, (double)rejected);
            keel_log(KEEL_LOG_WARN, "trace export: spans rejected by the collector", "{s:I}",
                     "rejected", (json_int_t)rejected);
        }
        batch_done(tw);
        export_next(tw);
        return;
    }
    count(t->m_failures, tw->id, NULL, 1);
    uint64_t now = keel_now_ms();
    if (retryable(status) && !tw->stopping && tw->attempt < 8) {
        /* Retry-After when given (bounded), else exponential backoff from
         * 500 ms; never past OTEL_BSP_EXPORT_TIMEOUT from the first try */
        uint64_t delay = retry_after_ms ? retry_after_ms : 500ull << tw->attempt;
        if (delay > 30000)
            delay = 30000;
        if (now + delay < tw->first_ms + t->o.export_timeout_ms) {
            tw->attempt++;
            uv_timer_start(&tw->retry, on_retry, delay, 0);
            return;
        }
    }
    keel_log(KEEL_LOG_WARN, "trace export failed: spans dropped", "{s:i,s:i}", "status", status,
             "spans", (int)tw->inflight);
    count(t->m_dropped, tw->id, "export_failed", tw->inflight);
    batch_done(tw);
    export_next(tw);
}

static void send_batch(tworker *tw)
{
    keel_tracer *t = tw->t;
    const keel_buf *p = &tw->batches[tw->fly].b;
    int rc = t->exp.send(t->exp.ctx, tw->w, p->data, p->len, on_sent, tw);
    if (rc < 0) {
        /* could not start (the collector's breaker is open, stopping) */
        count(t->m_failures, tw->id, NULL, 1);
        if (tw->stopping) {
            batch_leave(tw);
            return;
        }
        count(t->m_dropped, tw->id, "export_failed", tw->inflight);
        batch_done(tw);
    }
}

/* Sends the next batch when there is one and nothing is in flight. Only
 * a full batch goes at once; a partial one waits for the timer. */
static void export_maybe(tworker *tw, int partial_ok)
{
    keel_tracer *t = tw->t;
    if (!t->has_exp || tw->inflight || tw->stopping || !tw->nq)
        return;
    if (!partial_ok && tw->batches[tw->qhead].n < t->o.max_batch)
        return;
    batch_take(tw);
    send_batch(tw);
}

static void export_next(tworker *tw)
{
    export_maybe(tw, 0);
}

static void on_tick(uv_timer_t *h)
{
    export_maybe(h->data, 1);
}

/* Where the next span is written: the last queued batch, after a comma,
 * or a fresh batch (its buffer reused) started with the envelope's
 * prefix when that one is full. The caller checked the queue's room. */
static keel_buf *queue_slot(tworker *tw)
{
    keel_tracer *t = tw->t;
    unsigned last = tw->qhead + tw->qcount - 1;
    if (last >= tw->nbatches)
        last -= tw->nbatches;
    kbatch *b = &tw->batches[last];
    if (!tw->qcount || b->n == t->o.max_batch) {
        last = tw->qhead + tw->qcount;
        if (last >= tw->nbatches)
            last -= tw->nbatches;
        b = &tw->batches[last];
        tw->qcount++;
        b->n = 0;
        b->b.len = 0;
        keel_buf_append(&b->b, t->prefix, t->prefix_len);
    } else {
        keel_buf_append(&b->b, ",", 1);
    }
    b->n++;
    tw->nq++;
    return &b->b;
}

/* ---------------------------------------------------------------- request */

static const char *ids_to_req(keel_req *r, const uint8_t trace[16], const uint8_t span[8])
{
    char *mem = keel_arena_alloc(keel_req_arena(r), 33 + 17);
    keel__trace_hex_encode(mem, trace, 16);
    mem[32] = '\0';
    keel__trace_hex_encode(mem + 33, span, 8);
    mem[49] = '\0';
    keel_req_set_trace(r, mem, mem + 33);
    keel_res_header(r, "X-Trace-Id", mem);
    return mem;
}

void keel_trace_request_begin(keel_tracer *t, keel_req *r, keel_str tp, keel_str ts)
{
    keel_trace_ctx parent;
    int has_parent = tp.ptr && keel_traceparent_parse(tp.ptr, tp.len, &parent) == 0;
    uint8_t trace_id[16];
    if (has_parent)
        memcpy(trace_id, parent.trace_id, 16);
    else
        random_id(trace_id, 16);
    int sampled = keel_sampler_decide((keel_sampler)t->o.sampler, t->o.ratio, trace_id,
                                      has_parent, has_parent && (parent.flags & 1));
    int ts_ok = has_parent && ts.ptr && keel_tracestate_valid(ts.ptr, ts.len);
    if (!sampled) {
        uint8_t span[8];
        random_id(span, 8);
        ids_to_req(r, trace_id, span);
        if (ts_ok)
            keel_req_set_local(r, "keel.tracestate",
                               keel_arena_strndup(keel_req_arena(r), ts.ptr, ts.len));
        return;
    }
    tworker *tw = &t->workers[keel_req_worker_id(r)];
    ktrace *k = trace_get(tw);
    memcpy(k->ctx.trace_id, trace_id, 16);
    if (has_parent)
        memcpy(k->ctx.span_id, parent.span_id, 8);
    k->ctx.flags = 1;
    k->has_parent = has_parent;
    k->req = r;
    if (ts_ok) {
        k->ts_off = text_add(k, ts.ptr, ts.len);
        k->ts_len = (uint32_t)ts.len;
        keel_req_set_local(r, "keel.tracestate",
                           keel_arena_strndup(keel_req_arena(r), ts.ptr, ts.len));
    }
    keel_span_ref s = span_new(k, -1, "", 0, KEEL_SPAN_SERVER, keel_req_start_ns(r));
    k->current = 0;
    keel_req_set_obs(r, k);
    const char *hex = ids_to_req(r, trace_id, k->spans[0].id);
    memcpy(k->hex, hex, 32); /* written once for every span's encoding */
    memcpy(k->hex + 32, hex + 33, 16);
    (void)s;
}

/* Copies what the server span's attributes need from the request (it
 * ends; the record may stay in the ring): method, path, client address,
 * in one reservation of the record's text. */
static void keep_request_fields(ktrace *k, keel_req *r, int export)
{
    const keel_http_request_head *h = keel_req_head(r);
    /* the peer, unless a forwarding header may name the client (then the
     * TRUST_PROXY resolution, which costs more) */
    int fwd = 0;
    for (size_t i = 0; i < h->num_headers && !fwd; i++) { /* one pass, lengths first */
        keel_str n = h->headers[i].name;
        fwd = (n.len == 15 && !strncasecmp(n.ptr, "x-forwarded-for", 15)) ||
              (n.len == 9 && !strncasecmp(n.ptr, "forwarded", 9));
    }
    const char *client = fwd ? keel_req_client_addr(r) : keel_req_remote_addr(r);
    size_t cl = client ? strlen(client) : 0;
    size_t ml = h->method_str.len, pl = h->path.len;
    size_t rl = k->route ? strlen(k->route) : 0;
    size_t off = k->text.len, total = ml + pl + cl + rl;
    /* 16 bytes of spaces after them (not part of text: nothing is added
     * once the request ended): w_field reads 16 from any of them, and the
     * check below whole words */
    char *w = keel_buf_reserve(&k->text, total + 16);
    if (ml) /* a request refused before its request line was read has none */
        memcpy(w, h->method_str.ptr, ml);
    if (pl)
        memcpy(w + ml, h->path.ptr, pl);
    if (cl)
        memcpy(w + ml + pl, client, cl);
    if (rl)
        memcpy(w + ml + pl + cl, k->route, rl);
    memset(w + total, ' ', 16);
    /* whether they can be copied unescaped matters to the exporter only
     * (without one, a span is encoded when an admin reads it: escaped) */
    uint64_t bad = !export;
    for (size_t i = 0; export && i < total; i += 8) {
        uint64_t x;
        memcpy(&x, w + i, 8);
        bad |= keel__swar_below(x, 0x20) | (x & KEEL_SWAR_HIGHS) | keel__swar_byte(x, '"') |
               keel__swar_byte(x, '\\') | keel__swar_byte(x, 0x7f);
    }
    k->fields_clean = !bad;
    k->text.len += total;
    k->method_off = (uint32_t)off;
    k->method_len = (uint32_t)ml;
    k->path_off = (uint32_t)(off + ml);
    k->path_len = (uint32_t)pl;
    k->client_off = (uint32_t)(off + ml + pl);
    k->client_len = (uint32_t)cl;
    k->route_off = (uint32_t)(off + ml + pl + cl);
    k->route_len = (uint32_t)rl;
}

/* Keeps the finished record in the worker's ring (encoded only when an
 * admin route asks); the one it replaces goes back to the pool. */
static void ring_put(tworker *tw, ktrace *k)
{
    keel_tracer *t = tw->t;
    if (!t->o.buffer_size) {
        trace_put(k);
        return;
    }
    uv_mutex_lock(&tw->mu);
    ktrace *old = tw->ring[tw->ring_next];
    tw->ring[tw->ring_next] = k;
    if (++tw->ring_next == t->o.buffer_size)
        tw->ring_next = 0;
    uv_mutex_unlock(&tw->mu);
    if (old)
        trace_put(old);
}

void keel_trace_request_end(keel_tracer *t, keel_req *r)
{
    ktrace *k = keel_req_obs(r);
    if (!k || !k->live || k->req != r)
        return;
    tworker *tw = k->tw;
    kspan *root = &k->spans[0];
    /* the name ("GET /api/v1/users/:id", or the method alone unmatched) is
     * written from these when the span is encoded */
    const keel_route *rt = keel_req_route(r);
    k->route = rt ? rt->path : NULL;
    keep_request_fields(k, r, t->has_exp);
    int status = keel_res_get_status(r);
    k->http_status = status;
    if (status >= 500 && !root->status)
        root->status = 2;
    root->end = keel_req_start_ns(r) + keel_req_elapsed_ns(r);
    if (k->dropped)
        count(t->m_dropped, tw->id, "span_limit", k->dropped);

    /* the wall clock's offset, read again once a second (loop time) */
    uint64_t lnow = tw->w ? uv_now(keel_worker_loop(tw->w)) : 0;
    if (!tw->offset_at || lnow - tw->offset_at >= 1000 || !tw->w) {
        tw->offset = clock_offset();
        tw->offset_at = lnow ? lnow : 1;
    }
    k->offset = tw->offset;
    keel_req_set_obs(r, NULL);
    trace_retire(k);
    if (t->has_exp) {
        /* encoded once, straight into the export queue; spans still open
         * end with the request */
        unsigned room = t->o.max_queue - tw->nq;
        unsigned take = k->n < room ? k->n : room;
        for (unsigned i = 0; i < take; i++)
            encode_span(queue_slot(tw), k, i, k->offset, root->end);
        if (take < k->n)
            count(t->m_dropped, tw->id, "queue_full", k->n - take);
        export_maybe(tw, 0);
    }
    ring_put(tw, k);
}

/* ---------------------------------------------------------------- life cycle */

static void on_worker_start(keel_worker *w, void *arg)
{
    keel_tracer *t = arg;
    tworker *tw = &t->workers[keel_worker_id(w)];
    tw->w = w;
    if (t->has_exp) {
        uv_timer_init(keel_worker_loop(w), &tw->tick);
        uv_timer_init(keel_worker_loop(w), &tw->retry);
        tw->tick.data = tw->retry.data = tw;
        uv_timer_start(&tw->tick, on_tick, t->o.schedule_delay_ms, t->o.schedule_delay_ms);
        tw->timers = 1;
    }
}

static void on_worker_stop(keel_worker *w, void *arg)
{
    keel_tracer *t = arg;
    tworker *tw = &t->workers[keel_worker_id(w)];
    tw->stopping = 1;
    if (!tw->timers)
        return;
    /* a batch waiting for its retry, and the queue, are left for
     * keel_tracer_shutdown; a batch on the wire ends when the client
     * stops next (KEEL_ECANCELED: on_sent leaves it too) */
    if (uv_is_active((uv_handle_t *)&tw->retry))
        batch_leave(tw);
    uv_mutex_lock(&t->left_mu);
    for (unsigned q = 0; q < tw->qcount; q++) {
        const kbatch *b = &tw->batches[(tw->qhead + q) % tw->nbatches];
        if (t->left.len)
            keel_buf_append(&t->left, ",", 1);
        keel_buf_append(&t->left, b->b.data + t->prefix_len, b->b.len - t->prefix_len);
    }
    t->nleft += tw->nq;
    uv_mutex_unlock(&t->left_mu);
    tw->nq = 0;
    tw->qcount = 0;
    uv_close((uv_handle_t *)&tw->tick, NULL);
    uv_close((uv_handle_t *)&tw->retry, NULL);
    tw->timers = 0;
}

keel_tracer *keel_tracer_new(keel_server *s, const keel_config *cfg, keel_metrics *m)
{
    const keel_trace_options *o = keel_config_get(cfg, &keel_trace_config);
    if (o->disabled)
        return NULL;
    keel_tracer *t = keel_calloc(1, sizeof(*t));
    t->o = *o;
    t->o.sampler_arg = t->o.endpoint = t->o.traces_endpoint = t->o.headers = NULL;
    t->o.service_name = t->o.resource_attributes = NULL;
    t->srv = s;
    /* the strings are the config's: keep copies */
    t->o.endpoint = keel_strdup(o->endpoint ? o->endpoint : "");
    t->o.traces_endpoint = keel_strdup(o->traces_endpoint ? o->traces_endpoint : "");
    t->o.headers = keel_strdup(o->headers ? o->headers : "");
    t->o.service_name = keel_strdup(o->service_name ? o->service_name : "");
    t->o.resource_attributes = keel_strdup(o->resource_attributes ? o->resource_attributes : "");
    t->o.sampler_arg = keel_strdup(o->sampler_arg ? o->sampler_arg : "1.0");
    if (!t->o.ratio && o->sampler_arg && !o->ratio)
        t->o.ratio = strtod(o->sampler_arg, NULL);
    uv_mutex_init(&t->left_mu);
    build_envelope(t, cfg);
    t->nworkers = s ? keel_server_workers(s) : 1;
    t->workers = keel_calloc(t->nworkers, sizeof(tworker));
    for (unsigned i = 0; i < t->nworkers; i++) {
        tworker *tw = &t->workers[i];
        tw->t = t;
        tw->id = i;
        /* the queue's batches (all full but the last) and the one in flight */
        unsigned mb = t->o.max_batch ? t->o.max_batch : 1;
        tw->nbatches = (t->o.max_queue + mb - 1) / mb + 1;
        tw->batches = keel_calloc(tw->nbatches, sizeof(kbatch));
        tw->fly = -1;
        uv_mutex_init(&tw->mu);
        if (t->o.buffer_size)
            tw->ring = keel_calloc(t->o.buffer_size, sizeof(ktrace *));
    }
    if (m) {
        static const char *const reason[] = {"reason", NULL};
        t->m_exported = keel_metrics_counter(m, "otel_spans_exported_total",
                                             "Spans the collector accepted", NULL);
        t->m_dropped = keel_metrics_counter(
            m, "otel_spans_dropped_total",
            "Spans not exported: queue_full, export_failed (after retries), span_limit "
            "(TRACE_MAX_SPANS)",
            reason);
        t->m_failures = keel_metrics_counter(m, "otel_export_failures_total",
                                             "Export requests that failed (each attempt)", NULL);
        t->m_rejected = keel_metrics_counter(
            m, "otel_spans_rejected_total",
            "Spans the collector refused (partialSuccess.rejectedSpans)", NULL);
        keel_metric_add(t->m_exported, 0, NULL, 0);
        keel_metric_add(t->m_failures, 0, NULL, 0);
        keel_metric_add(t->m_rejected, 0, NULL, 0);
        count(t->m_dropped, 0, "queue_full", 0);
        count(t->m_dropped, 0, "export_failed", 0);
        count(t->m_dropped, 0, "span_limit", 0);
    }
    if (s) {
        keel_worker_hooks hooks = {.on_start = on_worker_start, .on_stop = on_worker_stop,
                                   .arg = t};
        keel_server_add_worker_hooks(s, &hooks);
    }
    return t;
}

void keel_tracer_set_exporter(keel_tracer *t, const keel_trace_exporter *exp)
{
    if (!t || !exp)
        return;
    t->exp = *exp;
    t->has_exp = 1;
}

size_t keel_tracer_shutdown(keel_tracer *t)
{
    if (!t || !t->has_exp || !t->exp.send_sync)
        return 0;
    uv_mutex_lock(&t->left_mu);
    unsigned n = t->nleft;
    keel_buf body = {0};
    if (n) {
        keel_buf_append(&body, t->prefix, t->prefix_len);
        keel_buf_append(&body, t->left.data, t->left.len);
        keel_buf_append(&body, t->suffix, t->suffix_len);
    }
    t->nleft = 0;
    t->left.len = 0;
    uv_mutex_unlock(&t->left_mu);
    if (!n)
        return 0;
    uint64_t rejected = 0;
    unsigned shard = t->nworkers;
    int st = t->exp.send_sync(t->exp.ctx, body.data, body.len, t->o.shutdown_timeout_ms,
                              &rejected);
    keel_buf_free(&body);
    if (st >= 200 && st < 300) {
        count(t->m_exported, shard, NULL, (double)(n > rejected ? n - rejected : 0));
        keel_log(KEEL_LOG_INFO, "trace export: last spans sent", "{s:i}", "spans", (int)n);
        return n;
    }
    count(t->m_failures, shard, NULL, 1);
    count(t->m_dropped, shard, "export_failed", n);
    keel_log(KEEL_LOG_WARN, "trace export: last spans lost", "{s:i,s:i}", "spans", (int)n,
             "status", st);
    return 0;
}

void keel_tracer_free(keel_tracer *t)
{
    if (!t)
        return;
    for (unsigned i = 0; i < t->nworkers; i++) {
        tworker *tw = &t->workers[i];
        ktrace *k = tw->all, *next;
        for (; k; k = next) {
            next = k->next_all;
            keel_free(k->spans);
            keel_free(k->attrs);
            keel_buf_free(&k->text);
            keel_free(k);
        }
        keel_free(tw->ring);
        for (unsigned b = 0; b < tw->nbatches; b++)
            keel_buf_free(&tw->batches[b].b);
        keel_free(tw->batches);
        uv_mutex_destroy(&tw->mu);
    }
    if (t->has_exp && t->exp.free)
        t->exp.free(t->exp.ctx);
    keel_free(t->workers);
    keel_buf_free(&t->left);
    uv_mutex_destroy(&t->left_mu);
    keel_free(t->prefix);
    keel_free(t->suffix);
    keel_free(t->o.endpoint);
    keel_free(t->o.traces_endpoint);
    keel_free(t->o.headers);
    keel_free(t->o.service_name);
    keel_free(t->o.resource_attributes);
    keel_free(t->o.sampler_arg);
    keel_free(t);
}

/* ---------------------------------------------------------------- in memory */

static int by_start_desc(const void *a, const void *b)
{
    uint64_t x = json_integer_value(json_object_get(*(json_t *const *)a, "start_unix_nano"));
    uint64_t y = json_integer_value(json_object_get(*(json_t *const *)b, "start_unix_nano"));
    return x < y ? 1 : x > y ? -1 : 0;
}

static const char *status_name(int s)
{
    return s == 2 ? "error" : s == 1 ? "ok" : "unset";
}

/* The server span's name ("GET /route", or the method alone) into out. */
static void root_name(const ktrace *k, char *out, size_t cap)
{
    const char *m = k->method_len ? k->text.data + k->method_off : "HTTP";
    int ml = k->method_len ? (int)k->method_len : 4;
    if (k->route)
        snprintf(out, cap, "%.*s %s", ml, m, k->route);
    else
        snprintf(out, cap, "%.*s", ml, m);
}

json_t *keel_tracer_recent(keel_tracer *t, size_t limit)
{
    json_t *all = json_array();
    for (unsigned i = 0; t && i < t->nworkers; i++) {
        tworker *tw = &t->workers[i];
        uv_mutex_lock(&tw->mu);
        for (unsigned j = 0; j < t->o.buffer_size; j++) {
            const ktrace *k = tw->ring[j];
            if (!k)
                continue;
            const kspan *root = &k->spans[0];
            uint64_t start_ns = (uint64_t)((int64_t)root->start + k->offset);
            uint64_t dur_ns = root->end > root->start ? root->end - root->start : 0;
            char id[33], name[128];
            keel__trace_hex_encode(id, k->ctx.trace_id, 16);
            id[32] = '\0';
            root_name(k, name, sizeof(name));
            time_t sec = (time_t)(start_ns / 1000000000u);
            struct tm tm;
            gmtime_r(&sec, &tm);
            char when[40];
            size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
            snprintf(when + n, sizeof(when) - n, ".%03uZ",
                     (unsigned)(start_ns / 1000000u % 1000u));
            json_array_append_new(
                all, json_pack("{s:s,s:s,s:s,s:I,s:f,s:s,s:i,s:i}", "trace_id", id, "name",
                               name, "start", when, "start_unix_nano", (json_int_t)start_ns,
                               "duration_ms", (double)dur_ns / 1e6, "status",
                               status_name(root->status), "http_status", k->http_status,
                               "span_count", (int)k->n));
        }
        uv_mutex_unlock(&tw->mu);
    }
    size_t n = json_array_size(all);
    json_t **items = keel_malloc((n ? n : 1) * sizeof(json_t *));
    for (size_t i = 0; i < n; i++)
        items[i] = json_incref(json_array_get(all, i));
    qsort(items, n, sizeof(json_t *), by_start_desc);
    json_t *out = json_array();
    for (size_t i = 0; i < n; i++) {
        if (i < limit)
            json_array_append(out, items[i]);
        json_decref(items[i]);
    }
    keel_free(items);
    json_decref(all);
    return out;
}

json_t *keel_tracer_get(keel_tracer *t, const char *trace_id)
{
    if (!t || !trace_id || strlen(trace_id) != 32)
        return NULL;
    json_t *spans = NULL;
    keel_buf b = {0};
    for (unsigned i = 0; i < t->nworkers; i++) {
        tworker *tw = &t->workers[i];
        uv_mutex_lock(&tw->mu);
        for (unsigned j = 0; j < t->o.buffer_size; j++) {
            const ktrace *k = tw->ring[j];
            char id[33];
            if (!k)
                continue;
            keel__trace_hex_encode(id, k->ctx.trace_id, 16);
            id[32] = '\0';
            if (strcmp(id, trace_id))
                continue;
            for (unsigned s = 0; s < k->n; s++) {
                keel_buf_append(&b, b.len ? "," : "[", 1);
                encode_span(&b, k, s, k->offset, k->spans[0].end);
            }
        }
        uv_mutex_unlock(&tw->mu);
    }
    if (b.len) {
        keel_buf_append(&b, "]", 1);
        spans = json_loadb(b.data, b.len, 0, NULL);
    }
    keel_buf_free(&b);
    if (!spans)
        return NULL;
    return json_pack("{s:s,s:o}", "trace_id", trace_id, "spans", spans);
}
