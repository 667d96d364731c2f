/* req.c — the request's life: dispatch through the middleware chain,
 * suspend and resume, the response API, completion and release.
 *
 * Lifetime rules (the ones that keep late answers safe):
 *   busy      user code is on the stack (chain, work completion);
 *   holds     pending work items and keel_req_hold() calls;
 *   finished  a response was produced, or the client went away;
 *   completed the on_complete hooks ran and the connection moved on.
 * A request is released (arena freed, object recycled) only when it is
 * completed, not busy and not held. A response after `finished` is
 * refused with KEEL_EALREADY and goes nowhere.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/server_internal.h"
#include "core/swar.h"
#include "core/ws_internal.h"
#include "keel/json.h"
#include "keel/log.h"

/* ---------------------------------------------------------------- objects */

keel_req *keel__req_new(keel_worker *w, keel_conn *c)
{
    keel_req *r = w->free_reqs;
    if (r) {
        w->free_reqs = r->next_free;
        STAT_SET(w, requests_pooled, --w->nfree_reqs);
    } else {
        r = keel_malloc(sizeof(*r));
        memset(r, 0, offsetof(keel_req, inline_mem));
        r->headers = keel_malloc(w->srv->limits.max_headers * sizeof(keel_http_header));
    }
    keel_http_header *hdrs = r->headers;
    keel_buf rh = r->res_headers;
    memset(r, 0, offsetof(keel_req, inline_mem));
    r->headers = hdrs;
    r->head.headers = hdrs;
    r->res_headers = rh;
    r->res_headers.len = 0;
    r->w = w;
    r->c = c;
    r->status = 200;
    r->start_ns = keel_now_ns();
    keel_arena_init(&r->arena, r->inline_mem, sizeof(r->inline_mem));
    return r;
}

void keel__req_release(keel_req *r)
{
    keel_worker *w = r->w;
    if (r->ws) { /* a 101 whose connection went first */
        keel__ws_free(r->ws);
        r->ws = NULL;
    }
    keel_buf_free(&r->cbuf);
    if (r->sf_open) {
        close(r->sf_fd);
        r->sf_open = 0;
    }
    keel_arena_reset(&r->arena);
    keel_buf_free(&r->owned_in);
    if (r->res_headers.cap > 16384)
        keel_buf_free(&r->res_headers);
    r->next_free = w->free_reqs;
    w->free_reqs = r;
    STAT_SET(w, requests_pooled, ++w->nfree_reqs);
}

void keel__req_pool_trim(keel_worker *w)
{
    if (w->nfree_reqs <= KEEL_REQ_POOL_KEEP)
        return;
    for (uint64_t n = (w->nfree_reqs - KEEL_REQ_POOL_KEEP + 1) / 2; n > 0; n--) {
        keel_req *r = w->free_reqs;
        w->free_reqs = r->next_free;
        w->nfree_reqs--;
        keel_free(r->headers);
        keel_buf_free(&r->res_headers);
        keel_free(r);
    }
    STAT_SET(w, requests_pooled, w->nfree_reqs);
}

static void maybe_release(keel_req *r)
{
    if (r->completed && r->busy == 0 && r->holds == 0)
        keel__req_release(r);
}

/* Runs the on_complete hooks and lets the connection move on. */
static void complete(keel_req *r)
{
    if (r->completed)
        return;
    r->completed = 1;
    if (!r->dispatched) {
        /* never reached the chain (the client left mid-head or mid-body):
         * nothing to log or count */
        if (r->c)
            keel__conn_request_done(r->c, r);
        return;
    }
    keel_server *s = r->w->srv;
    for (size_t i = s->ncomplete; i-- > 0;) {
        keel_middleware *mw = &s->mws[s->complete_at[i]];
        mw->on_complete(r, mw->data);
    }
    STAT_SUB(r->w, requests_in_flight, 1);
    STAT_ADD(r->w, requests_total, 1);
    if (r->c)
        keel__conn_request_done(r->c, r);
}

/* The request whose code is on this thread's stack (innermost). */
static __thread keel_req *tl_current;

keel_req *keel_req_current(void)
{
    return tl_current;
}

static void set_current(keel_req *r)
{
    tl_current = r;
    keel_log_set_context(r ? r->request_id : NULL, r ? r->trace_id : NULL);
}

void keel__req_enter(keel_req *r)
{
    if (r->busy++ == 0) {
        r->outer = tl_current;
        set_current(r);
    }
}

void keel__req_leave(keel_req *r)
{
    if (--r->busy > 0)
        return;
    if (tl_current == r)
        set_current(r->outer);
    r->outer = NULL;
    if (r->finished && !r->completed)
        complete(r);
    maybe_release(r);
}

void keel__req_unhold(keel_req *r)
{
    r->holds--;
    maybe_release(r);
}

/* The connection is going away while r is alive: keep its input buffer
 * (views into it may be read by pending work) and finish the request. */
static void resolve_client(keel_req *r);

void keel__req_detach(keel_req *r)
{
    keel_conn *c = r->c;
    __atomic_store_n(&r->canceled, 1, __ATOMIC_RELEASE);
    if (c && r->dispatched)
        resolve_client(r); /* the access log still wants it */
    if (c) {
        if (r->holds > 0 || r->busy > 0) {
            r->owned_in = c->in;
            memset(&c->in, 0, sizeof(c->in));
        }
        r->c = NULL;
    }
    if (!r->finished) {
        r->finished = 1;
        if (!r->status || r->status == 200)
            r->status = 499; /* client closed request (nginx's code) */
    }
    /* A stream waiting for the output to drain hears that it never will
     * (its writes now fail), so it can release what it holds. */
    r->busy++; /* r must outlive the callback */
    keel__conn_body_end(NULL, r, KEEL_ECANCELED); /* a streamed body never ends */
    keel__req_drained(r);
    r->busy--;
    if (r->busy == 0) {
        complete(r);
        maybe_release(r);
    }
}

/* ---------------------------------------------------------------- chain */

static keel_flow builtin_handler(keel_req *r)
{
    if (r->reject_status)
        keel_respond_problem(r, r->reject_status, r->reject_detail);
    else if (r->match.status == 404)
        keel_respond_problem(r, 404, "no route matches this path");
    else if (r->match.status == 400)
        keel_respond_problem(r, 400, "invalid percent-encoding in the path");
    else
        keel_respond_problem(r, 405, "method not allowed on this resource");
    return KEEL_DONE;
}

static void append_allow(keel_buf *b, unsigned allowed)
{
    int first = 1;
    for (int m = 1; m < KEEL_METHOD__COUNT; m++) {
        if (!(allowed & (1u << m)))
            continue;
        if (!first)
            keel_buf_append(b, ", ", 2);
        keel_buf_append_str(b, keel_method_name((keel_method)m));
        first = 0;
    }
}

static keel_flow options_handler(keel_req *r)
{
    keel_buf allow = {0};
    unsigned mask = r->head.asterisk ? 0xfeu : (r->match.allowed | (1u << KEEL_METHOD_OPTIONS));
    append_allow(&allow, mask);
    keel_buf_append(&allow, "", 1);
    keel_res_header(r, "Allow", allow.data);
    keel_buf_free(&allow);
    keel_respond(r, 204, NULL, NULL, 0);
    return KEEL_DONE;
}

/* A request the connection layer refused (bad framing, a limit, a
 * timeout: r->reject_status) is answered with that status, whatever the
 * middleware would have said about a well-formed one: there is no
 * well-formed request to rate-limit, authenticate or validate. So only
 * EDGE middleware runs for it (request id, trace context: the refusal
 * still gets its id), and while it runs responding is refused
 * (KEEL_EALREADY), its KEEL_DONE counts as KEEL_NEXT; then the built-in
 * handler answers the refusal. on_response and on_complete hooks run for
 * it like for any response (security headers, access log, metrics). */
static void run_chain(keel_req *r)
{
    keel_server *s = r->w->srv;
    while (r->mw_index < s->nrequest && !r->finished) {
        keel_middleware *mw = &s->mws[s->request_at[r->mw_index++]];
        if (r->reject_status && mw->phase != KEEL_PHASE_EDGE)
            continue;
        r->refusing = r->reject_status != 0;
        keel_flow f = mw->on_request(r, mw->data);
        r->refusing = 0;
        if (f == KEEL_NEXT || (r->reject_status && f == KEEL_DONE))
            continue;
        if (f == KEEL_SUSPEND) {
            r->suspended = 1;
            return;
        }
        if (!r->finished)
            keel_respond_problem(r, 500, "middleware ended the request without a response");
        return;
    }
    if (r->finished)
        return;
    r->mw_index = s->nrequest + 1;
    keel_flow f;
    if (r->entry && !r->entry->route->handler) {
        f = keel_ws_accept(r, NULL); /* a WebSocket route without a handler */
    } else if (r->entry) {
        f = r->entry->route->handler(r);
    } else if (!r->reject_status && r->head.method == KEEL_METHOD_OPTIONS &&
               (r->match.status == 405 || r->head.asterisk)) {
        f = options_handler(r);
    } else {
        f = builtin_handler(r);
    }
    if (f == KEEL_SUSPEND) {
        r->suspended = 1;
        return;
    }
    if (!r->finished)
        keel_respond_problem(r, 500, "handler returned without a response");
}

int keel__req_match(keel_req *r)
{
    if (!r->matched) {
        r->matched = 1;
        keel_router_match(r->w->srv->router, r->head.method, r->head.path, &r->arena,
                          &r->match);
        if (r->match.status == 0)
            r->entry = r->match.data;
    }
    return r->entry != NULL;
}

void keel__req_dispatch(keel_req *r)
{
    keel_server *s = r->w->srv;
    STAT_ADD(r->w, requests_in_flight, 1);
    r->dispatched = 1;
    r->head_only = r->head.method == KEEL_METHOD_HEAD;
    if (!r->reject_status) {
        if (r->head.asterisk)
            r->match.status = 405;
        else
            keel__req_match(r);
    } else {
        r->match.status = 404;
        r->entry = NULL; /* matched before the body was refused */
    }
    uint64_t tmo = r->entry ? r->entry->timeout_ms : s->cfg.handler_timeout_ms;
    r->deadline = uv_now(&r->w->loop) + tmo;
    keel__req_enter(r);
    run_chain(r);
    keel__req_leave(r);
}

void keel_req_resume(keel_req *r, keel_flow flow)
{
    keel__req_enter(r);
    r->suspended = 0;
    if ((flow == KEEL_NEXT || r->reject_status) && !r->finished)
        run_chain(r); /* a refusal is answered whatever the flow */
    else if (!r->finished)
        keel_respond_problem(r, 500, "request resumed without a response");
    keel__req_leave(r);
}

void keel_req_hold(keel_req *r)
{
    r->holds++;
}

void keel_req_unhold(keel_req *r)
{
    keel__req_unhold(r);
}

/* ---------------------------------------------------------------- accessors */

const keel_http_request_head *keel_req_head(const keel_req *r) { return &r->head; }
keel_method keel_req_method(const keel_req *r) { return r->head.method; }
keel_str keel_req_path(const keel_req *r) { return r->head.path; }
keel_str keel_req_query(const keel_req *r) { return r->head.query; }
keel_str keel_req_body(const keel_req *r) { return r->body; }
keel_arena *keel_req_arena(keel_req *r) { return &r->arena; }
keel_server *keel_req_server(const keel_req *r) { return r->w->srv; }
unsigned keel_req_worker_id(const keel_req *r) { return r->w->id; }
keel_worker *keel_req_worker(const keel_req *r) { return r->w; }
uv_loop_t *keel_worker_loop(keel_worker *w) { return &w->loop; }
uint64_t keel_req_start_ns(const keel_req *r) { return r->start_ns; }

uint64_t keel_req_elapsed_ns(keel_req *r)
{
    if (r->end_ns)
        return r->end_ns - r->start_ns;
    uint64_t now = keel_now_ns();
    if (r->completed)
        r->end_ns = now; /* one reading for every on_complete hook */
    return now - r->start_ns;
}
int keel_res_get_status(const keel_req *r) { return r->status; }
uint64_t keel_res_bytes(const keel_req *r) { return r->bytes_out; }
int keel_req_is_finished(const keel_req *r) { return r->finished; }
int keel_req_refused(const keel_req *r) { return r->reject_status; }

const char *keel_req_remote_addr(const keel_req *r)
{
    return r->c ? r->c->remote : "-";
}

/* Every value of header `name`, in order, into out (at most cap). */
static size_t header_values(const keel_req *r, const char *name, keel_str *out, size_t cap)
{
    size_t n = 0, nl = strlen(name);
    for (size_t i = 0; i < r->head.num_headers && n < cap; i++) {
        const keel_http_header *h = &r->head.headers[i];
        if (h->name.len == nl && strncasecmp(h->name.ptr, name, nl) == 0)
            out[n++] = h->value;
    }
    return n;
}

static void resolve_client(keel_req *r)
{
    if (r->client_done)
        return;
    r->client_done = 1;
    keel_conn *c = r->c;
    if (!c)
        return; /* detached: the client is gone; "-" */
    r->client = c->peer;
    if (!c->peer_trusted)
        return;
    keel_server *s = r->w->srv;
    keel_str v[16];
    size_t n = header_values(r, s->fwd == KEEL_FWD_FORWARDED ? "forwarded" : "x-forwarded-for",
                             v, 16);
    keel_addr a;
    if (n && keel_forwarded_client(v, n, s->fwd, s->proxies, s->nproxies, &a))
        r->client = a;
    if (s->fwd == KEEL_FWD_XFF)
        n = header_values(r, "x-forwarded-proto", v, 16);
    r->https = n && keel_forwarded_https(v, n, s->fwd);
}

const keel_addr *keel_req_client(keel_req *r)
{
    resolve_client(r);
    return &r->client;
}

const char *keel_req_client_addr(keel_req *r)
{
    resolve_client(r);
    if (!r->client_text) {
        char buf[64];
        keel_addr_format(&r->client, buf, sizeof(buf));
        r->client_text = keel_arena_strndup(&r->arena, buf, strlen(buf));
    }
    return r->client_text;
}

int keel_req_is_https(keel_req *r)
{
    resolve_client(r);
    return r->https;
}

keel_str keel_req_header(const keel_req *r, const char *name)
{
    const keel_http_header *h = keel_http_find_header(&r->head, name);
    return h ? h->value : KEEL_STR_NULL;
}

keel_str keel_req_param(const keel_req *r, const char *name)
{
    for (size_t i = 0; i < r->match.num_params; i++)
        if (keel_str_eq(r->match.names[i], keel_str_c(name)))
            return r->match.values[i];
    return KEEL_STR_NULL;
}

keel_str keel_req_query_param(keel_req *r, const char *name)
{
    keel_str q = r->head.query;
    size_t nl = strlen(name), i = 0;
    while (i < q.len) {
        size_t start = i;
        while (i < q.len && q.ptr[i] != '&')
            i++;
        keel_str pair = {q.ptr + start, i - start};
        i++;
        const char *eq = memchr(pair.ptr, '=', pair.len);
        size_t kl = eq ? (size_t)(eq - pair.ptr) : pair.len;
        size_t dl;
        char *k = keel_url_decode(&r->arena, (keel_str){pair.ptr, kl}, 1, &dl);
        if (!k || dl != nl || memcmp(k, name, nl) != 0)
            continue;
        keel_str raw = eq ? (keel_str){eq + 1, pair.len - kl - 1} : (keel_str){"", 0};
        char *v = keel_url_decode(&r->arena, raw, 1, &dl);
        if (!v)
            return KEEL_STR_NULL;
        return (keel_str){v, dl};
    }
    return KEEL_STR_NULL;
}

const keel_route *keel_req_route(const keel_req *r)
{
    return r->entry ? r->entry->route : NULL;
}

const char *keel_req_route_label(const keel_req *r)
{
    return r->entry ? r->entry->route->path : "unmatched";
}

void keel_req_set_id(keel_req *r, const char *id)
{
    r->request_id = id;
    if (tl_current == r)
        set_current(r);
}
const char *keel_req_id(const keel_req *r) { return r->request_id; }
void keel_req_set_trace(keel_req *r, const char *trace_id, const char *span_id)
{
    r->trace_id = trace_id;
    r->span_id = span_id;
    if (tl_current == r)
        set_current(r);
}
void keel_req_set_obs(keel_req *r, void *ctx) { r->obs = ctx; }
void *keel_req_obs(const keel_req *r) { return r->obs; }
const char *keel_req_trace_id(const keel_req *r) { return r->trace_id; }
const char *keel_req_span_id(const keel_req *r) { return r->span_id; }

void keel_req_set_local(keel_req *r, const char *key, void *value)
{
    for (req_local *l = r->locals; l; l = l->next)
        if (strcmp(l->key, key) == 0) {
            l->value = value;
            return;
        }
    req_local *l = keel_arena_alloc(&r->arena, sizeof(*l));
    l->key = keel_arena_strndup(&r->arena, key, strlen(key));
    l->value = value;
    l->next = r->locals;
    r->locals = l;
}

void *keel_req_get_local(const keel_req *r, const char *key)
{
    for (req_local *l = r->locals; l; l = l->next)
        if (strcmp(l->key, key) == 0)
            return l->value;
    return NULL;
}

/* ---------------------------------------------------------------- response */

void keel_res_status(keel_req *r, int status)
{
    r->status = status;
}

/* keel's own headers, refused from users (name of length nl). */
static int reserved_header(const char *name, size_t nl)
{
    char c0 = (char)(name[0] | 0x20);
    if (c0 != 'd' && c0 != 'c' && c0 != 't')
        return 0;
    switch (nl) {
    case 4:
        return !strncasecmp(name, "date", 4);
    case 10:
        return !strncasecmp(name, "connection", 10);
    case 14:
        return !strncasecmp(name, "content-length", 14);
    case 17:
        return !strncasecmp(name, "transfer-encoding", 17);
    }
    return 0;
}

/* Bytes allowed in a response header line: a name is visible ASCII other
 * than ':'; a value is anything but a control character other than HTAB
 * (so never CR or LF). One table lookup per byte. */
#define HC_NAME 1
#define HC_VALUE 2
static const unsigned char hclass[256] = {
    ['\t'] = HC_VALUE,
    [' '] = HC_VALUE,
    ['!' ... '9'] = HC_NAME | HC_VALUE,
    [':'] = HC_VALUE,
    [';' ... '~'] = HC_NAME | HC_VALUE,
    [0x7f ... 0xff] = HC_VALUE,
};

/* Eight bytes at a time first (a word with a byte that might be refused
 * is left to the table): these are the X-Request-Id / X-Trace-Id values
 * of every response (core/swar.h). */

/* The length of a valid header name; 0 when it is empty or invalid. */
static size_t valid_name_len(const char *name)
{
    const unsigned char *p = (const unsigned char *)name;
    size_t n = strlen(name), i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, p + i, 8);
        /* visible ASCII (0x21-0x7e) other than ':' */
        if (keel__swar_below(x, 0x21) | (x & KEEL_SWAR_HIGHS) | keel__swar_byte(x, 0x7f) |
            keel__swar_byte(x, ':'))
            break;
    }
    for (; i < n; i++)
        if (!(hclass[p[i]] & HC_NAME))
            return 0;
    return n;
}

/* The length of a valid header value; SIZE_MAX when it is invalid. */
static size_t valid_value_len(const char *value)
{
    const unsigned char *p = (const unsigned char *)value;
    size_t n = strlen(value), i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, p + i, 8);
        if (keel__swar_below(x, 0x20)) /* a control byte (or a tab: the table decides) */
            break;
    }
    for (; i < n; i++)
        if (!(hclass[p[i]] & HC_VALUE))
            return SIZE_MAX;
    return n;
}

/* 0 with the lengths of a header keel_res_header accepts, else KEEL_EINVAL. */
static int check_header(const char *name, const char *value, size_t *nl, size_t *vl)
{
    *nl = valid_name_len(name);
    if (!*nl || reserved_header(name, *nl))
        return KEEL_EINVAL;
    *vl = valid_value_len(value);
    return *vl == SIZE_MAX ? KEEL_EINVAL : 0;
}

/* Appends "name: value\r\n" (checked) with one reservation. */
static void append_header_line(keel_buf *b, const char *name, size_t nl, const char *value,
                               size_t vl)
{
    char *w = keel_buf_reserve(b, nl + vl + 4);
    memcpy(w, name, nl);
    w[nl] = ':';
    w[nl + 1] = ' ';
    memcpy(w + nl + 2, value, vl);
    w[nl + 2 + vl] = '\r';
    w[nl + 3 + vl] = '\n';
    b->len += nl + vl + 4;
}

int keel_res_header(keel_req *r, const char *name, const char *value)
{
    if (r->finished)
        return KEEL_EALREADY;
    size_t nl, vl;
    if (check_header(name, value, &nl, &vl) < 0)
        return KEEL_EINVAL;
    append_header_line(&r->res_headers, name, nl, value, vl);
    r->res_header_lens |= 1ull << (nl & 63);
    return 0;
}

/* The end (one past its "\r\n") of the header line starting at i. Values
 * never hold a bare LF (valid_value_len), so the next LF ends the line; memchr
 * is several times faster than memmem for this. */
static size_t line_end(const keel_buf *b, size_t i)
{
    const char *lf = memchr(b->data + i, '\n', b->len - i);
    return lf ? (size_t)(lf - b->data) + 1 : b->len;
}

/* Removes every "name: ...\r\n" line from the pending headers. */
static void remove_header(keel_req *r, const char *name)
{
    keel_buf *b = &r->res_headers;
    size_t nl = strlen(name), i = 0;
    while (i < b->len) {
        size_t end = line_end(b, i);
        if (end - i > nl && b->data[i + nl] == ':' &&
            strncasecmp(b->data + i, name, nl) == 0) {
            memmove(b->data + i, b->data + end, b->len - end);
            b->len -= end - i;
        } else {
            i = end;
        }
    }
}

int keel_res_has_header(const keel_req *r, const char *name)
{
    const keel_buf *b = &r->res_headers;
    size_t nl = strlen(name), i = 0;
    while (i < b->len) {
        size_t end = line_end(b, i);
        if (end - i > nl && b->data[i + nl] == ':' && strncasecmp(b->data + i, name, nl) == 0)
            return 1;
        i = end;
    }
    return 0;
}

/* ---------------------------------------------------------------- header sets */

#define HSET_MAX 32

struct keel_res_header_set {
    size_t n;
    uint64_t lens;        /* bit (name length & 63) of every member */
    struct {
        size_t off, len;  /* the line "name: value\r\n" in block */
        size_t name_len;
    } h[HSET_MAX];
    keel_buf block;       /* every line, in order */
};

keel_res_header_set *keel_res_header_set_new(void)
{
    return keel_calloc(1, sizeof(keel_res_header_set));
}

void keel_res_header_set_free(keel_res_header_set *s)
{
    if (!s)
        return;
    keel_buf_free(&s->block);
    keel_free(s);
}

int keel_res_header_set_add(keel_res_header_set *s, const char *name, const char *value)
{
    size_t nl, vl;
    if (s->n == HSET_MAX || check_header(name, value, &nl, &vl) < 0)
        return KEEL_EINVAL;
    for (size_t i = 0; i < s->n; i++)
        if (s->h[i].name_len == nl && strncasecmp(s->block.data + s->h[i].off, name, nl) == 0)
            return KEEL_EINVAL;
    size_t off = s->block.len;
    append_header_line(&s->block, name, nl, value, vl);
    s->h[s->n].off = off;
    s->h[s->n].len = s->block.len - off;
    s->h[s->n].name_len = nl;
    s->lens |= 1ull << (nl & 63);
    s->n++;
    return 0;
}

int keel_res_add_header_set(keel_req *r, const keel_res_header_set *s)
{
    if (r->finished)
        return KEEL_EALREADY;
    keel_buf *b = &r->res_headers;
    uint32_t present = 0;
    /* no line set so far has the length of a member's name: none can
     * be one of them, no scan */
    if (!(s->lens & r->res_header_lens)) {
        keel_buf_append(b, s->block.data, s->block.len);
        r->res_header_lens |= s->lens;
        return 0;
    }
    /* one pass over the lines set so far (usually one or two) */
    for (size_t i = 0; i < b->len;) {
        size_t end = line_end(b, i);
        for (size_t k = 0; k < s->n; k++) {
            size_t nl = s->h[k].name_len;
            if (end - i > nl && b->data[i + nl] == ':' &&
                strncasecmp(b->data + i, s->block.data + s->h[k].off, nl) == 0)
                present |= 1u << k;
        }
        i = end;
    }
    r->res_header_lens |= s->lens;
    if (!present) {
        keel_buf_append(b, s->block.data, s->block.len);
        return 0;
    }
    for (size_t k = 0; k < s->n; k++)
        if (!(present & (1u << k)))
            keel_buf_append(b, s->block.data + s->h[k].off, s->h[k].len);
    return 0;
}

/* Runs the on_response hooks, last added first. Responding from a hook is
 * refused (r->responding), so the hooks see exactly one response. */
static void run_response_hooks(keel_req *r, keel_response *res)
{
    keel_server *s = r->w->srv;
    r->responding = 1;
    for (size_t i = s->nresponse_hooks; i-- > 0;) {
        keel_middleware *mw = &s->mws[s->response_at[i]];
        mw->on_response(r, res, mw->data);
    }
    r->responding = 0;
}

int keel_res_set_header(keel_req *r, const char *name, const char *value)
{
    if (r->finished)
        return KEEL_EALREADY;
    size_t nl, vl;
    if (check_header(name, value, &nl, &vl) < 0)
        return KEEL_EINVAL;
    remove_header(r, name);
    append_header_line(&r->res_headers, name, nl, value, vl);
    r->res_header_lens |= 1ull << (nl & 63);
    return 0;
}

/* The Date line is rendered once per second per worker and checked
 * against the loop's cached clock (uv_now, no clock read): the wall clock
 * is read only when the loop time reaches the next second boundary. The
 * loop time lags real time by at most the current iteration, so the line
 * is never ahead of the second it names. */
void keel__worker_update_date(keel_worker *w)
{
    uint64_t now_ms = uv_now(&w->loop);
    if (w->date_len && now_ms < w->date_next_ms)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    w->date_next_ms = now_ms + 1000 - (uint64_t)ts.tv_nsec / 1000000u;
    if (ts.tv_sec == w->date_sec)
        return;
    time_t now = ts.tv_sec;
    struct tm tm;
    gmtime_r(&now, &tm);
    w->date_len = strftime(w->date, sizeof(w->date),
                           "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    w->date_sec = now;
    /* the head every 200 starts with; 0 (built per response) when a long
     * Server header does not fit */
    const char *server = w->srv->cfg.server_header;
    int n = snprintf(w->head200, sizeof(w->head200), "HTTP/1.1 200 OK\r\n%s%s%s%.*s",
                     server && *server ? "Server: " : "", server && *server ? server : "",
                     server && *server ? "\r\n" : "", (int)w->date_len, w->date);
    w->head200_len = n > 0 && (size_t)n < sizeof(w->head200) ? (size_t)n : 0;
}

/* The response was produced outside user code (a timer, a completion):
 * complete the request now and send. Inside user code, keel__req_leave
 * does it when the code returns. */
static void finish_now(keel_req *r, keel_conn *c)
{
    if (r->busy)
        return;
    complete(r);
    if (c && !c->processing)
        keel__conn_flush(c);
    maybe_release(r);
}

static int body_allowed(int status)
{
    return !(status < 200 || status == 204 || status == 304);
}

/* Writes the status line and headers into the connection's output. */
static void write_head(keel_req *r, keel_buf *o, int status,
                       const char *content_type, uint64_t clen, int chunked)
{
    keel_server *s = r->w->srv;
    keel_worker *w = r->w;
    keel_conn *c = r->c;
    keel__worker_update_date(w);
    if (status == 200 && w->head200_len) {
        /* status line, Server and Date, rendered with the Date */
        keel_buf_append(o, w->head200, w->head200_len);
    } else {
        if (status == 200)
            keel_buf_append(o, "HTTP/1.1 200 OK\r\n", 17);
        else
            keel_buf_printf(o, "HTTP/1.1 %d %s\r\n", status, keel_http_reason(status));
        if (s->cfg.server_header && *s->cfg.server_header) {
            keel_buf_append(o, "Server: ", 8);
            keel_buf_append_str(o, s->cfg.server_header);
            keel_buf_append(o, "\r\n", 2);
        }
        keel_buf_append(o, w->date, w->date_len);
    }
    int has_ct = content_type && body_allowed(status);
    size_t ctl = has_ct ? strlen(content_type) : 0;
    /* the rest in one reservation: Content-Type, the handler's and
     * middleware's headers, framing, Connection */
    char *p = keel_buf_reserve(o, 16 + ctl + r->res_headers.len + 28 + 38 + 26);
    char *start = p;
    if (has_ct) {
        memcpy(p, "Content-Type: ", 14);
        memcpy(p + 14, content_type, ctl);
        memcpy(p + 14 + ctl, "\r\n", 2);
        p += 16 + ctl;
    }
    if (r->res_headers.len) {
        memcpy(p, r->res_headers.data, r->res_headers.len);
        p += r->res_headers.len;
    }
    if (chunked) {
        memcpy(p, "Transfer-Encoding: chunked\r\n", 28);
        p += 28;
    } else if (clen == UINT64_MAX) {
        /* close-delimited (a stream to an HTTP/1.0 client) */
    } else if (body_allowed(status)) {
        char digits[20], *d = digits + sizeof(digits);
        do {
            *--d = (char)('0' + clen % 10);
            clen /= 10;
        } while (clen);
        size_t dl = (size_t)(digits + sizeof(digits) - d);
        memcpy(p, "Content-Length: ", 16);
        memcpy(p + 16, d, dl);
        memcpy(p + 16 + dl, "\r\n", 2);
        p += 18 + dl;
    }
    /* a response before a streamed body was all read: the rest is not
     * read, so the connection cannot carry another request */
    int keep = r->keep_alive && c && !c->close_after_write && !w->draining && !r->body_pending;
    r->keep_alive = keep;
    if (status == 101) {
        memcpy(p, "Connection: Upgrade\r\n\r\n", 23);
        p += 23;
    } else if (!keep) {
        memcpy(p, "Connection: close\r\n\r\n", 21);
        p += 21;
    } else if (r->head.version_minor == 0) {
        memcpy(p, "Connection: keep-alive\r\n\r\n", 26);
        p += 26;
    } else {
        memcpy(p, "\r\n", 2);
        p += 2;
    }
    o->len += (size_t)(p - start);
}

int keel_respond(keel_req *r, int status, const char *content_type,
                 const void *body, size_t len)
{
    /* a stream or a sendfile body under way is the response already */
    if (r->finished || r->responding || r->refusing || r->streaming)
        return KEEL_EALREADY;
    if ((status < 200 && !(status == 101 && r->ws)) || status > 599)
        status = 500;
    if (r->w->srv->nresponse_hooks) {
        keel_response res = {status, content_type, body, body_allowed(status) ? len : 0, 0};
        run_response_hooks(r, &res);
        content_type = res.content_type;
        body = res.body;
        len = res.len;
    }
    r->status = status;
    r->finished = 1;
    keel_conn *c = r->c;
    if (c) {
        keel_buf *o = &c->out;
        size_t before = o->len;
        if (!body_allowed(status))
            len = 0;
        write_head(r, o, status, content_type, len, 0);
        if (len && !r->head_only)
            keel_buf_append(o, body, len);
        r->bytes_out = o->len - before;
        if (!r->keep_alive && status != 101)
            c->close_after_write = 1;
    }
    finish_now(r, c);
    return 0;
}

int keel_respond_text(keel_req *r, int status, const char *text)
{
    return keel_respond(r, status, "text/plain; charset=utf-8", text, strlen(text));
}

/* The buffer each thread encodes its JSON responses into (keel_respond
 * copies the bytes out): no allocation per response. Released when the
 * thread ends. */
static pthread_key_t json_out_key;
static pthread_once_t json_out_once = PTHREAD_ONCE_INIT;

static void json_out_free(void *p)
{
    keel_buf_free(p);
    keel_free(p);
}

static void json_out_make(void)
{
    (void)pthread_key_create(&json_out_key, json_out_free);
}

static keel_buf *json_out(void)
{
    pthread_once(&json_out_once, json_out_make);
    keel_buf *b = pthread_getspecific(json_out_key);
    if (!b) {
        b = keel_calloc(1, sizeof(*b));
        (void)pthread_setspecific(json_out_key, b);
    }
    return b;
}

int keel_respond_json(keel_req *r, int status, json_t *json)
{
    if (!json)
        return keel_respond_problem(r, 500, "response could not be built");
    keel_buf *out = json_out();
    out->len = 0;
    int bad = keel_json_dump(out, json, 10);
    json_decref(json);
    if (bad)
        return keel_respond_problem(r, 500, "response could not be encoded");
    int rc = keel_respond(r, status, "application/json", out->data, out->len);
    if (out->cap > 64 * 1024)
        keel_buf_free(out); /* one large response does not stay with the thread */
    return rc;
}

int keel_respond_problem_ex(keel_req *r, int status, const char *type,
                            const char *detail, json_t *extra)
{
    if (r->finished) {
        json_decref(extra);
        return KEEL_EALREADY;
    }
    /* Built by hand: this path serves hostile input and must not fail. */
    keel_buf b = {0};
    keel_buf_append_str(&b, "{\"type\":\"");
    keel_buf_append_json_escaped(&b, type ? type : "about:blank",
                                 strlen(type ? type : "about:blank"));
    keel_buf_append_str(&b, "\",\"title\":\"");
    keel_buf_append_str(&b, keel_http_reason(status));
    keel_buf_printf(&b, "\",\"status\":%d", status);
    if (detail) {
        keel_buf_append_str(&b, ",\"detail\":\"");
        keel_buf_append_json_escaped(&b, detail, strlen(detail));
        keel_buf_append(&b, "\"", 1);
    }
    if (r->head.path.len && !r->head.asterisk) {
        keel_buf_append_str(&b, ",\"instance\":\"");
        keel_buf_append_json_escaped(&b, r->head.path.ptr,
                                     r->head.path.len > 512 ? 512 : r->head.path.len);
        keel_buf_append(&b, "\"", 1);
    }
    if (r->request_id) {
        keel_buf_append_str(&b, ",\"request_id\":\"");
        keel_buf_append_json_escaped(&b, r->request_id, strlen(r->request_id));
        keel_buf_append(&b, "\"", 1);
    }
    if (extra && json_is_object(extra)) {
        const char *k;
        json_t *v;
        json_object_foreach(extra, k, v) {
            char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            if (!s)
                continue;
            keel_buf_append(&b, ",\"", 2);
            keel_buf_append_json_escaped(&b, k, strlen(k));
            keel_buf_append(&b, "\":", 2);
            keel_buf_append_str(&b, s);
            free(s);
        }
    }
    json_decref(extra);
    keel_buf_append(&b, "}", 1);
    if (status == 405 && r->match.allowed) {
        keel_buf allow = {0};
        append_allow(&allow, r->match.allowed | (1u << KEEL_METHOD_OPTIONS));
        keel_buf_append(&allow, "", 1);
        keel_res_set_header(r, "Allow", allow.data);
        keel_buf_free(&allow);
    }
    int rc = keel_respond(r, status, "application/problem+json", b.data, b.len);
    keel_buf_free(&b);
    return rc;
}

int keel_respond_problem(keel_req *r, int status, const char *detail)
{
    return keel_respond_problem_ex(r, status, NULL, detail, NULL);
}

int keel_respond_unavailable(keel_req *r, unsigned retry_after_s, const char *detail)
{
    char ra[24];
    snprintf(ra, sizeof(ra), "%u", retry_after_s ? retry_after_s : 1);
    keel_res_set_header(r, "Retry-After", ra);
    return keel_respond_problem(r, 503, detail ? detail : "the service is overloaded; retry later");
}

/* ---------------------------------------------------------------- streaming */

int keel_res_stream_begin(keel_req *r, int status, const char *content_type)
{
    if (r->finished || r->streaming || r->responding || r->refusing)
        return KEEL_EALREADY;
    keel_conn *c = r->c;
    if (!c)
        return KEEL_ECLOSED;
    if (r->w->srv->nresponse_hooks) {
        keel_response res = {status, content_type, NULL, 0, 1};
        run_response_hooks(r, &res);
        content_type = res.content_type;
    }
    r->status = status;
    r->streaming = 1;
    keel_buf *o = &c->out;
    size_t before = o->len;
    if (r->head.version_minor == 0)
        r->keep_alive = 0; /* 1.0: the close ends the body */
    write_head(r, o, status, content_type, r->head.version_minor == 1 ? 0 : UINT64_MAX,
               r->head.version_minor == 1);
    if (!r->keep_alive)
        c->close_after_write = 1;
    r->bytes_out += o->len - before;
    if (!c->processing)
        keel__conn_flush(c);
    return 0;
}

int keel_res_write(keel_req *r, const void *data, size_t len)
{
    if (!r->streaming || r->finished)
        return KEEL_EALREADY;
    keel_conn *c = r->c;
    if (!c)
        return KEEL_ECLOSED;
    if (len == 0 || r->head_only)
        return 0;
    if (c->out.len + c->wbuf.len > r->w->srv->cfg.output_buffer_max)
        return KEEL_EBUSY;
    keel_buf *o = &c->out;
    size_t before = o->len;
    if (r->head.version_minor == 1) {
        keel_buf_printf(o, "%zx\r\n", len);
        keel_buf_append(o, data, len);
        keel_buf_append(o, "\r\n", 2);
    } else {
        keel_buf_append(o, data, len);
    }
    r->bytes_out += o->len - before;
    if (!c->processing)
        keel__conn_flush(c);
    return 0;
}

int keel_res_on_drain(keel_req *r, void (*cb)(keel_req *r, void *arg), void *arg)
{
    if (!r->streaming || r->finished || !r->c)
        return KEEL_EALREADY;
    r->drain_cb = cb;
    r->drain_arg = arg;
    keel__conn_want_drain(r->c);
    return 0;
}

void keel__req_drained(keel_req *r)
{
    void (*cb)(keel_req *, void *) = r->drain_cb;
    if (!cb)
        return;
    r->drain_cb = NULL;
    keel__req_enter(r);
    cb(r, r->drain_arg);
    keel__req_leave(r);
}

int keel_res_stream_end(keel_req *r)
{
    if (!r->streaming || r->finished)
        return KEEL_EALREADY;
    keel_conn *c = r->c;
    if (c && r->head.version_minor == 1 && !r->head_only) {
        keel_buf_append(&c->out, "0\r\n\r\n", 5);
        r->bytes_out += 5;
    }
    r->finished = 1;
    finish_now(r, c);
    return 0;
}

/* ---------------------------------------------------------------- sendfile */

int keel_res_sendfile(keel_req *r, int status, const char *content_type, int fd,
                      const keel_sendfile_seg *segs, size_t nsegs)
{
    keel_conn *c = r->c;
    if (r->finished || r->streaming || r->responding || r->refusing || !c) {
        close(fd);
        return r->finished || r->streaming ? KEEL_EALREADY : KEEL_ECLOSED;
    }
    uint64_t total = 0;
    r->sf_segs = keel_arena_alloc(&r->arena, (nsegs ? nsegs : 1) * sizeof(*segs));
    for (size_t i = 0; i < nsegs; i++) {
        r->sf_segs[i] = segs[i];
        if (segs[i].data) {
            void *copy = keel_arena_alloc(&r->arena, segs[i].len ? segs[i].len : 1);
            memcpy(copy, segs[i].data, segs[i].len);
            r->sf_segs[i].data = copy;
        }
        total += segs[i].len;
    }
    r->sf_nsegs = nsegs;
    r->sf_i = 0;
    r->sf_fd = fd;
    r->sf_open = 1;
    if (r->w->srv->nresponse_hooks) {
        keel_response res = {status, content_type, NULL, 0, 1};
        run_response_hooks(r, &res);
        content_type = res.content_type;
    }
    r->status = status;
    r->streaming = 1;
    keel_buf *o = &c->out;
    size_t before = o->len;
    write_head(r, o, status, content_type, total, 0);
    if (!r->keep_alive)
        c->close_after_write = 1;
    r->bytes_out += o->len - before;
    if (r->head_only || total == 0 || !body_allowed(status)) {
        close(fd);
        r->sf_open = 0;
        r->finished = 1;
        finish_now(r, c);
        return 0;
    }
    r->drain_cb = keel__conn_sendfile_pump;
    r->drain_arg = NULL;
    if (!c->processing)
        keel__conn_flush(c);
    else
        keel__conn_want_drain(c);
    return 0;
}

/* The last segment went out: the response is complete. */
void keel__req_sendfile_done(keel_req *r)
{
    if (r->sf_open) {
        close(r->sf_fd);
        r->sf_open = 0;
    }
    r->finished = 1;
    finish_now(r, r->c);
}
