/* conn.c — one TCP connection: read, parse, frame bodies, hand requests to
 * the chain one at a time, write responses in order, enforce every
 * timeout and buffer cap, and close cleanly.
 *
 * Pipelining falls out of the design: requests are taken from the input
 * buffer one at a time and the next is parsed only once the previous one
 * has produced its response, so responses leave in request order; all the
 * responses produced during one read are written with one write call.
 *
 * Views into the input buffer (the request head, the body) must stay
 * valid while a request is alive: the buffer only grows (realloc) while a
 * body is being read, and then the head's views are rebased; while a
 * request is with its handler the buffer never moves. A request that
 * outlives its connection (pending work, a deadline) takes the buffer
 * with it.
 *
 * A refused request (framing error, limit, timeout) gets exactly one
 * response, then the connection stops parsing, half-closes after the write
 * and discards input for a short linger before closing, so the response is
 * not lost to a reset.
 */
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include "core/server_internal.h"
#include "core/ws_internal.h"
#include "keel/log.h"

#define IN_INITIAL 4096
#define IN_SHRINK_ABOVE (64 * 1024)
#define LINGER_MS 2000
#define STREAM_READ (64 * 1024)

static void process_input(keel_conn *c);

static uint64_t now_ms(keel_conn *c)
{
    return uv_now(&c->w->loop);
}

/* ---------------------------------------------------------------- close */

static void unqueue_drain(keel_conn *c)
{
    keel_worker *w = c->w;
    for (keel_conn **p = &w->drain_head; *p; p = &(*p)->drain_next)
        if (*p == c) {
            *p = c->drain_next;
            break;
        }
    c->drain_queued = 0;
}

static void on_drain_idle(uv_idle_t *h)
{
    keel_worker *w = h->data;
    keel_conn *list = w->drain_head;
    w->drain_head = NULL;
    uv_idle_stop(h);
    while (list) {
        keel_conn *c = list;
        list = c->drain_next;
        c->drain_queued = 0;
        if (!c->closed && !c->writing && c->req)
            keel__req_drained(c->req);
    }
}

void keel__conn_want_drain(keel_conn *c)
{
    keel_worker *w = c->w;
    if (c->writing || c->drain_queued || c->closed)
        return; /* on_write will run it */
    c->drain_queued = 1;
    c->drain_next = w->drain_head;
    w->drain_head = c;
    if (!uv_is_active((uv_handle_t *)&w->drain_idle)) {
        w->drain_idle.data = w;
        uv_idle_start(&w->drain_idle, on_drain_idle);
    }
}

static void on_close(uv_handle_t *h)
{
    keel_conn *c = (keel_conn *)h;
    keel_worker *w = c->w;
    keel__ws_free(c->ws);
    keel_buf_free(&c->in);
    keel_buf_free(&c->out);
    keel_buf_free(&c->wbuf);
    keel_free(c->sbuf);
    keel_free(c);
    if (w->draining && w->nconns == 0)
        uv_async_send(&w->async); /* let the worker notice it is done */
}

/* The close callback of a connection whose uv_accept failed: it was never
 * linked, counted or given buffers, so only the object goes. */
static void on_close_unaccepted(uv_handle_t *h)
{
    keel_free((keel_conn *)h);
}

void keel__conn_close(keel_conn *c)
{
    if (c->closed)
        return;
    c->closed = 1;
    c->state = CONN_CLOSING;
    keel_worker *w = c->w;
    if (c->drain_queued)
        unqueue_drain(c);
    if (c->req) {
        keel_req *r = c->req;
        c->req = NULL;
        keel__req_detach(r);
    }
    if (c->ws)
        keel__ws_conn_closed(c); /* on_close, before the memory goes */
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nconns--;
    STAT_SUB(w, connections_open, 1);
    if (c->ip_counted) {
        keel_addr key = keel_addr_prefix(&c->peer, w->srv->cfg.client_ipv6_prefix);
        keel__ipcap_release(w->srv->ipcap, &key);
        c->ip_counted = 0;
    }
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void start_linger(keel_conn *c);
static void start_reading(keel_conn *c);
static void stream_input(keel_conn *c, keel_req *r, const char *p, size_t n);

static void maybe_finish(keel_conn *c)
{
    if (c->closed || c->state != CONN_CLOSING || c->writing || c->out.len ||
        c->req || c->lingering)
        return;
    start_linger(c);
}

/* ---------------------------------------------------------------- write */

static void on_write(uv_write_t *wr, int status)
{
    keel_conn *c = wr->data;
    c->writing = 0;
    if (status < 0) {
        keel__conn_close(c);
        return;
    }
    STAT_ADD(c->w, bytes_out, c->wbuf.len);
    c->wbuf.len = 0;
    if (c->wbuf.cap > (1u << 20))
        keel_buf_free(&c->wbuf); /* a big response passed: give it back */
    if (c->closed)
        return;
    /* writes what accumulated meanwhile, or resumes a stream waiting for
     * the output to drain */
    keel__conn_flush(c);
    if (c->closed || c->writing)
        return;
    if (c->state == CONN_HEAD && !c->processing)
        process_input(c); /* output had passed its cap: continue */
}

void keel__conn_flush(keel_conn *c)
{
    if (c->closed)
        return;
    if (c->writing) {
        maybe_finish(c);
        return;
    }
    if (c->out.len == 0) {
        if (c->req && c->req->drain_cb)
            keel__conn_want_drain(c); /* nothing in flight: resume the stream */
        maybe_finish(c);
        return;
    }
    keel__ws_out_taken(c->ws); /* from here on c->out is the socket's */
    uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n > 0) {
        STAT_ADD(c->w, bytes_out, (uint64_t)n);
        keel_buf_consume(&c->out, (size_t)n);
    } else if (n < 0 && n != UV_EAGAIN) {
        keel__conn_close(c);
        return;
    }
    if (c->out.len) {
        keel_buf t = c->wbuf;
        c->wbuf = c->out;
        c->out = t;
        c->out.len = 0;
        b = uv_buf_init(c->wbuf.data, (unsigned)c->wbuf.len);
        c->wreq.data = c;
        if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
            keel__conn_close(c);
            return;
        }
        c->writing = 1;
        c->write_started = now_ms(c);
        return;
    }
    if (c->req && c->req->drain_cb)
        keel__conn_want_drain(c);
    maybe_finish(c);
}

void keel__conn_send(keel_conn *c, const void *p, size_t n)
{
    keel_buf_append(&c->out, p, n);
    if (!c->processing)
        keel__conn_flush(c);
}

/* ---------------------------------------------------------------- linger */

static void on_shutdown(uv_shutdown_t *sr, int status)
{
    keel_conn *c = sr->data;
    (void)status;
    if (c->closed)
        return;
    if (status < 0)
        keel__conn_close(c);
}

static void start_linger(keel_conn *c)
{
    c->lingering = 1;
    c->deadline = now_ms(c) + LINGER_MS;
    c->sreq.data = c;
    if (c->eof || uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        keel__conn_close(c);
        return;
    }
    /* Read (and discard) until the client's FIN, so the slot is freed as
     * soon as the client is done, not when the linger expires. */
    start_reading(c);
}

/* ---------------------------------------------------------------- read */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    keel_conn *c = (keel_conn *)h;
    static __thread char discard[16384];
    (void)suggested;
    if (c->lingering || c->state == CONN_CLOSING) {
        *buf = uv_buf_init(discard, sizeof(discard));
        return;
    }
    if (c->state == CONN_STREAM) {
        /* a streamed body: into the stream buffer, never past the body's
         * end when its length is known (what follows is the next request) */
        keel_req *r = c->req;
        if (!c->sbuf)
            c->sbuf = keel_malloc(STREAM_READ);
        size_t want = STREAM_READ;
        if (r && !r->head.chunked) {
            uint64_t left = (uint64_t)r->head.content_length - r->body_seen;
            if (left < want)
                want = left ? (size_t)left : 1;
        }
        *buf = uv_buf_init(c->sbuf, (unsigned)want);
        return;
    }
    if (c->state == CONN_HANDLING) {
        /* The buffer must not move now: offer only the spare room. */
        size_t spare = c->in.cap - c->in.len;
        *buf = uv_buf_init(spare ? c->in.data + c->in.len : NULL, (unsigned)spare);
        return;
    }
    size_t want = IN_INITIAL;
    if (c->state == CONN_BODY && c->req && !c->req->head.chunked) {
        keel_req *r = c->req;
        size_t have = c->in.len - c->parsed - r->head_len;
        size_t left = (size_t)r->head.content_length - have;
        want = left < 65536 ? (left ? left : 1) : 65536;
    } else if (c->in.cap - c->in.len >= 1024) {
        want = c->in.cap - c->in.len;
    }
    uintptr_t old = (uintptr_t)c->in.data;
    keel_buf_reserve(&c->in, want);
    if ((uintptr_t)c->in.data != old && old && c->req && c->state == CONN_BODY)
        keel_http_head_rebase(&c->req->head, old, c->in.len, c->in.data);
    size_t spare = c->in.cap - c->in.len;
    if (spare > 1u << 30)
        spare = 1u << 30;
    *buf = uv_buf_init(c->in.data + c->in.len, (unsigned)spare);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    keel_conn *c = (keel_conn *)s;
    (void)buf;
    if (c->closed)
        return;
    if (nread > 0) {
        STAT_ADD(c->w, bytes_in, (uint64_t)nread);
        if (c->lingering || c->state == CONN_CLOSING)
            return; /* discarded */
        if (c->state == CONN_STREAM) {
            c->deadline = now_ms(c) + c->w->srv->cfg.body_timeout_ms;
            stream_input(c, c->req, c->sbuf, (size_t)nread);
            return;
        }
        c->in.len += (size_t)nread;
        uint64_t now = now_ms(c);
        if (c->state == CONN_BODY) {
            c->deadline = now + c->w->srv->cfg.body_timeout_ms;
        } else if (c->state == CONN_HEAD && c->head_started == 0) {
            c->head_started = now;
            c->deadline = now + c->w->srv->cfg.header_timeout_ms;
        }
        process_input(c);
        return;
    }
    if (nread == 0)
        return;
    if (nread == UV_ENOBUFS) {
        uv_read_stop(s);
        c->reading = 0;
        return;
    }
    /* EOF or error. A client that goes away mid-request cancels it. */
    c->eof = 1;
    uv_read_stop(s);
    c->reading = 0;
    if (c->lingering || c->state != CONN_CLOSING || (!c->writing && !c->out.len))
        keel__conn_close(c);
}

static void start_reading(keel_conn *c)
{
    if (c->reading || c->closed || c->eof)
        return;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->reading = 1;
}

static void stop_reading(keel_conn *c)
{
    if (!c->reading)
        return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
}

/* ---------------------------------------------------------------- requests */

/* Refuses the current request with `status`: one response through the
 * middleware chain (logs, metrics, headers), then the connection closes. */
static void reject(keel_conn *c, int status, const char *detail)
{
    keel_req *r = c->req ? c->req : (c->req = keel__req_new(c->w, c));
    r->reject_status = status;
    r->reject_detail = detail;
    r->keep_alive = 0;
    c->close_after_write = 1;
    c->state = CONN_HANDLING;
    stop_reading(c);
    keel__req_dispatch(r);
}

static void dispatch(keel_conn *c, keel_req *r)
{
    keel_server *s = c->w->srv;
    r->keep_alive = r->head.keep_alive && !c->close_after_write && !c->w->draining &&
                    !(s->cfg.max_requests_per_conn &&
                      c->requests + 1 >= s->cfg.max_requests_per_conn);
    c->state = r->body_pending ? CONN_STREAM : CONN_HANDLING;
    c->deadline = 0;
    keel__req_dispatch(r);
}

/* ---------------------------------------------------------------- streamed bodies */

void keel__conn_body_end(keel_conn *c, keel_req *r, int status)
{
    if (!r->body_pending)
        return;
    r->body_pending = 0;
    keel_buf_free(&r->cbuf);
    if (c && !c->closed && c->req == r) {
        if (c->state == CONN_STREAM) {
            c->state = CONN_HANDLING;
            c->deadline = 0;
            r->deadline = now_ms(c) + (r->entry ? r->entry->timeout_ms
                                                : c->w->srv->cfg.handler_timeout_ms);
        }
        if (status != 0) {
            r->keep_alive = 0;
            c->close_after_write = 1;
            stop_reading(c);
        }
    }
    if (!r->on_body_end)
        return;
    keel__req_enter(r);
    r->on_body_end(r, status, r->body_arg);
    if (status < 0 && !r->finished) {
        if (status == KEEL_ETIMEDOUT)
            keel_respond_problem(r, 408, "request body stalled");
        else if (status == KEEL_ETOOBIG)
            keel_respond_problem(r, 413, "request body too large");
        else
            keel_respond_problem(r, 400, "malformed request body");
    }
    keel__req_leave(r);
}

/* The handler stopped the stream (on_data answered non-zero): nothing more
 * is read; the connection closes after the response. */
static void stream_stopped(keel_conn *c, keel_req *r)
{
    r->body_pending = 0;
    keel_buf_free(&r->cbuf);
    if (c->closed || c->req != r)
        return;
    r->keep_alive = 0;
    c->close_after_write = 1;
    stop_reading(c);
    if (c->state == CONN_STREAM) {
        c->state = CONN_HANDLING;
        r->deadline = now_ms(c) + (r->entry ? r->entry->timeout_ms
                                            : c->w->srv->cfg.handler_timeout_ms);
    }
}

/* Delivers body bytes p[0..n) (raw: still chunked if the body is). */
static void stream_input(keel_conn *c, keel_req *r, const char *p, size_t n)
{
    if (!r || !r->body_pending || !r->on_body)
        return;
    keel__req_enter(r);
    if (!r->head.chunked) {
        uint64_t left = (uint64_t)r->head.content_length - r->body_seen;
        if (n > left)
            n = (size_t)left;
        r->body_seen += n;
        if (n && r->on_body(r, p, n, r->body_arg) != 0)
            stream_stopped(c, r);
        else if (r->body_seen == (uint64_t)r->head.content_length)
            keel__conn_body_end(c, r, 0);
        keel__req_leave(r);
        return;
    }
    keel_buf_append(&r->cbuf, p, n);
    const char *err = NULL;
    int rc = keel_http_chunked_decode(&r->chunked, r->cbuf.data, r->cbuf.len, UINT64_MAX,
                                      c->w->srv->cfg.max_head_size, &err);
    size_t out = r->chunked.out;
    int stopped = 0;
    if (out) {
        r->body_seen += out;
        if (r->body_seen > r->body_max) {
            keel__conn_body_end(c, r, KEEL_ETOOBIG);
            keel__req_leave(r);
            return;
        }
        stopped = r->on_body(r, r->cbuf.data, out, r->body_arg) != 0;
    }
    if (stopped) {
        stream_stopped(c, r);
    } else if (rc < 0) {
        keel__conn_body_end(c, r, rc == -413 ? KEEL_ETOOBIG : KEEL_EPROTO);
    } else if (rc == 1) {
        if (r->chunked.in < r->cbuf.len) {
            /* bytes after the body were read with it: not kept */
            r->keep_alive = 0;
            c->close_after_write = 1;
        }
        keel__conn_body_end(c, r, 0);
    } else {
        /* keep only what is not decoded yet (a partial size line) */
        size_t used = r->chunked.in;
        memmove(r->cbuf.data, r->cbuf.data + used, r->cbuf.len - used);
        r->cbuf.len -= used;
        r->chunked.in = r->chunked.out = 0;
    }
    keel__req_leave(r);
}

int keel_req_body_stream(keel_req *r, uint64_t max, keel_body_data_cb on_data,
                         keel_body_end_cb on_end, void *arg)
{
    if (r->finished)
        return KEEL_EALREADY;
    if (!r->entry || !(r->entry->route->flags & KEEL_ROUTE_STREAM_BODY) || r->on_body ||
        !on_data || !on_end)
        return KEEL_EINVAL;
    keel_conn *c = r->c;
    if (!c || c->req != r)
        return KEEL_EALREADY;
    keel_server *s = c->w->srv;
    if (!max)
        max = s->cfg.body_limit;
    if (!r->head.chunked && r->head.content_length > 0 &&
        (uint64_t)r->head.content_length > max)
        return KEEL_ETOOBIG;
    r->on_body = on_data;
    r->on_body_end = on_end;
    r->body_arg = arg;
    r->body_max = max;
    if (!r->body_pending) {
        on_end(r, 0, arg); /* no body */
        return 0;
    }
    keel__req_enter(r);
    size_t start = c->parsed + r->head_len;
    size_t avail = c->in.len - start;
    if (r->head.expect_continue && avail == 0) {
        keel_buf_append(&c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        if (!c->processing)
            keel__conn_flush(c);
    }
    if (avail) {
        if (!r->head.chunked) {
            size_t n0 = avail < (size_t)r->head.content_length ? avail
                                                                : (size_t)r->head.content_length;
            r->raw_len = r->head_len + n0;
            stream_input(c, r, c->in.data + start, n0);
        } else {
            r->raw_len = c->in.len - c->parsed; /* all of it: decoded from cbuf */
            stream_input(c, r, c->in.data + start, avail);
        }
    }
    if (r->body_pending && r->c == c && !c->closed && !r->body_paused) {
        c->deadline = now_ms(c) + s->cfg.body_timeout_ms;
        start_reading(c);
    }
    keel__req_leave(r);
    return 0;
}

void keel_req_body_pause(keel_req *r)
{
    r->body_paused = 1;
    keel_conn *c = r->c;
    if (c && c->req == r && c->state == CONN_STREAM)
        stop_reading(c);
}

void keel_req_body_resume(keel_req *r)
{
    r->body_paused = 0;
    keel_conn *c = r->c;
    if (c && !c->closed && c->req == r && c->state == CONN_STREAM && r->body_pending &&
        r->on_body) {
        c->deadline = now_ms(c) + c->w->srv->cfg.body_timeout_ms;
        start_reading(c);
    }
}

uint64_t keel_req_body_received(const keel_req *r)
{
    return r->body_seen;
}

void keel__conn_request_done(keel_conn *c, keel_req *r)
{
    keel_server *s = c->w->srv;
    c->req = NULL;
    if (r->holds > 0) {
        /* Pending work may still read the request's views: the request
         * keeps this buffer; the connection goes on with a copy of what
         * follows. */
        size_t used = c->parsed + r->raw_len;
        keel_buf rest = {0};
        if (c->in.len > used)
            keel_buf_append(&rest, c->in.data + used, c->in.len - used);
        r->owned_in = c->in;
        c->in = rest;
        c->parsed = 0;
    } else {
        c->parsed += r->raw_len;
    }
    r->c = NULL;
    c->requests++;
    if (c->closed)
        return;
    if (r->ws && r->status == 101) {
        /* upgraded: the HTTP parser never sees this connection again */
        c->ws = r->ws;
        r->ws = NULL;
        keel__ws_start(c);
        if (!c->closed) {
            start_reading(c);
            if (!c->processing)
                process_input(c);
        }
        return;
    }
    if (c->close_after_write || !r->keep_alive) {
        c->close_after_write = 1;
        c->state = CONN_CLOSING;
        stop_reading(c);
    } else {
        c->state = CONN_HEAD;
        c->head_started = 0;
        c->deadline = now_ms(c) + s->cfg.keepalive_timeout_ms;
        start_reading(c);
    }
    if (!c->processing)
        process_input(c);
}

/* Starts the body phase, or dispatches a request without a body. */
static void begin_body(keel_conn *c, keel_req *r)
{
    keel_server *s = c->w->srv;
    if (r->head.method == KEEL_METHOD_OTHER) {
        reject(c, 501, "method not implemented");
        return;
    }
    int has_body = r->head.chunked || r->head.content_length > 0;
    if (has_body && !r->head.asterisk && keel__req_match(r) &&
        (r->entry->route->flags & KEEL_ROUTE_STREAM_BODY)) {
        /* the handler reads the body as it arrives (keel_req_body_stream):
         * nothing is read until it asks */
        r->raw_len = r->head_len;
        r->body = (keel_str){c->in.data + c->parsed + r->head_len, 0};
        r->body_pending = 1;
        memset(&r->chunked, 0, sizeof(r->chunked));
        stop_reading(c);
        dispatch(c, r);
        return;
    }
    if (r->head.content_length > 0 &&
        (uint64_t)r->head.content_length > s->cfg.body_limit) {
        reject(c, 413, "request body too large");
        return;
    }
    if (!r->head.chunked && r->head.content_length <= 0) {
        r->raw_len = r->head_len;
        r->body = (keel_str){c->in.data + c->parsed + r->head_len, 0};
        dispatch(c, r);
        return;
    }
    c->state = CONN_BODY;
    c->deadline = now_ms(c) + s->cfg.body_timeout_ms;
    memset(&r->chunked, 0, sizeof(r->chunked));
    if (r->head.expect_continue && c->in.len == c->parsed + r->head_len)
        keel_buf_append(&c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
}

static void read_body(keel_conn *c, keel_req *r)
{
    keel_server *s = c->w->srv;
    size_t start = c->parsed + r->head_len;
    char *body = c->in.data + start;
    size_t have = c->in.len - start;
    if (!r->head.chunked) {
        size_t need = (size_t)r->head.content_length;
        if (have < need)
            return;
        r->body = (keel_str){body, need};
        r->raw_len = r->head_len + need;
        dispatch(c, r);
        return;
    }
    const char *err = NULL;
    int rc = keel_http_chunked_decode(&r->chunked, body, have, s->cfg.body_limit,
                                      s->cfg.max_head_size, &err);
    if (rc < 0) {
        reject(c, -rc, err);
        return;
    }
    if (rc == 0) {
        /* Keep the buffer near the decoded size: move the undecoded tail
         * down over the framing bytes already consumed. */
        size_t gap = r->chunked.in - r->chunked.out;
        if (gap > 4096) {
            memmove(body + r->chunked.out, body + r->chunked.in, have - r->chunked.in);
            c->in.len -= gap;
            r->chunked.in = r->chunked.out;
        }
        return;
    }
    r->body = (keel_str){body, r->chunked.out};
    r->raw_len = r->head_len + r->chunked.in;
    dispatch(c, r);
}

static void process_input(keel_conn *c)
{
    if (c->processing || c->closed)
        return;
    keel_server *s = c->w->srv;
    c->processing = 1;
    while (!c->closed) {
        if (c->state == CONN_HANDLING || c->state == CONN_STREAM || c->state == CONN_CLOSING)
            break;
        if (c->state == CONN_WS) {
            keel__ws_input(c);
            break;
        }
        if (c->out.len + c->wbuf.len > s->cfg.output_buffer_max) {
            stop_reading(c); /* a slow reader: stop taking requests */
            break;
        }
        if (c->state == CONN_HEAD) {
            size_t avail = c->in.len - c->parsed;
            if (avail == 0) {
                c->in.len = c->parsed = 0;
                if (c->in.cap > IN_SHRINK_ABOVE)
                    keel_buf_free(&c->in);
                break;
            }
            if (c->parsed && (c->parsed > c->in.cap / 2 || c->in.len == c->in.cap)) {
                memmove(c->in.data, c->in.data + c->parsed, avail);
                c->in.len = avail;
                c->parsed = 0;
            }
            if (c->head_started == 0) {
                c->head_started = now_ms(c);
                c->deadline = c->head_started + s->cfg.header_timeout_ms;
            }
            keel_req *r = c->req ? c->req : (c->req = keel__req_new(c->w, c));
            /* resumes where the last read's call stopped (r->hp) */
            int rc = keel_http_parse_request_resume(c->in.data + c->parsed, avail, &r->head,
                                                    &s->limits, &r->hp);
            if (rc == 0)
                break;
            if (rc < 0) {
                reject(c, -rc, r->head.error);
                break;
            }
            r->head_len = (size_t)rc;
            begin_body(c, r);
            continue;
        }
        if (c->state == CONN_BODY) {
            keel_req *r = c->req;
            read_body(c, r);
            if (c->state == CONN_BODY)
                break;
        }
    }
    c->processing = 0;
    if (!c->closed && (((c->state == CONN_HEAD || c->state == CONN_BODY) &&
                        c->out.len + c->wbuf.len <= s->cfg.output_buffer_max) ||
                       c->state == CONN_WS))
        start_reading(c);
    keel__conn_flush(c);
}

/* ---------------------------------------------------------------- accept */

int keel__respond_problem_raw(keel_conn *c, int status, const char *detail)
{
    keel_worker *w = c->w;
    keel_server *s = w->srv;
    char body[256];
    int bl = snprintf(body, sizeof(body),
                      "{\"type\":\"about:blank\",\"title\":\"%s\",\"status\":%d,"
                      "\"detail\":\"%s\"}",
                      keel_http_reason(status), status, detail);
    keel__worker_update_date(w);
    keel_buf *o = &c->out;
    keel_buf_printf(o, "HTTP/1.1 %d %s\r\n", status, keel_http_reason(status));
    if (s->cfg.server_header && *s->cfg.server_header)
        keel_buf_printf(o, "Server: %s\r\n", s->cfg.server_header);
    keel_buf_append(o, w->date, w->date_len);
    keel_buf_printf(o, "Content-Type: application/problem+json\r\n"
                       "Content-Length: %d\r\n%s"
                       "Connection: close\r\n\r\n%s",
                    bl, status == 503 ? "Retry-After: 1\r\n" : "", body);
    c->close_after_write = 1;
    c->state = CONN_CLOSING;
    keel__conn_flush(c);
    return 0;
}

void keel__conn_accept(keel_worker *w)
{
    keel_conn *c = keel_calloc(1, sizeof(*c));
    c->w = w;
    uv_tcp_init(&w->loop, &c->tcp);
    if (uv_accept((uv_stream_t *)&w->listener, (uv_stream_t *)&c->tcp) < 0) {
        uv_close((uv_handle_t *)&c->tcp, on_close_unaccepted);
        return;
    }
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    STAT_ADD(w, connections_open, 1);
    STAT_ADD(w, connections_total, 1);
    uv_tcp_nodelay(&c->tcp, 1);

    struct sockaddr_storage ss;
    int len = sizeof(ss);
    strcpy(c->remote, "-");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)&ss, c->remote, sizeof(c->remote));
        else if (ss.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->remote, sizeof(c->remote));
        if (keel_addr_parse(c->remote, strlen(c->remote), &c->peer) < 0)
            c->peer.family = 0;
    }
    keel_server *s = w->srv;
    c->peer_trusted = keel_cidr_contains(s->proxies, s->nproxies, &c->peer);
    if (w->nconns > s->cfg.max_connections || w->draining) {
        keel__respond_problem_raw(c, 503, w->draining
                                              ? "the server is shutting down"
                                              : "too many open connections");
        return;
    }
    /* Per client address (IPv6 by its /CLIENT_IPV6_PREFIX network), not
     * for trusted proxies, which carry many clients. */
    if (s->cfg.max_conns_per_ip && c->peer.family && !c->peer_trusted) {
        keel_addr key = keel_addr_prefix(&c->peer, s->cfg.client_ipv6_prefix);
        if (keel__ipcap_acquire(s->ipcap, &key, s->cfg.max_conns_per_ip) < 0) {
            keel__respond_problem_raw(c, 503, "too many open connections from your address");
            return;
        }
        c->ip_counted = 1;
    }
    c->state = CONN_HEAD;
    c->deadline = now_ms(c) + w->srv->cfg.header_timeout_ms;
    start_reading(c);
}

/* ---------------------------------------------------------------- timers */

void keel__conn_sweep(keel_worker *w, uint64_t now)
{
    keel_server *s = w->srv;
    keel_conn *next;
    for (keel_conn *c = w->conns; c; c = next) {
        next = c->next;
        if (c->closed)
            continue;
        if (c->writing && now - c->write_started > s->cfg.write_timeout_ms) {
            keel_log(KEEL_LOG_INFO, "closing connection: write timeout",
                     "{s:s}", "remote", c->remote);
            keel__conn_close(c);
            continue;
        }
        if (c->lingering) {
            if (now >= c->deadline)
                keel__conn_close(c);
            continue;
        }
        switch (c->state) {
        case CONN_HEAD:
            if (c->deadline && now >= c->deadline) {
                if (c->in.len == c->parsed)
                    keel__conn_close(c); /* idle: close quietly */
                else
                    reject(c, 408, "request head not received in time");
            }
            break;
        case CONN_BODY:
            if (c->deadline && now >= c->deadline)
                reject(c, 408, "request body stalled");
            break;
        case CONN_STREAM:
            if (c->req && c->req->on_body) {
                /* reading a streamed body: a stall, not the handler deadline
                 * (a paused stream waits on the handler's own work) */
                if (!c->req->body_paused && c->deadline && now >= c->deadline)
                    keel__conn_body_end(c, c->req, KEEL_ETIMEDOUT);
                break;
            }
            /* the chain has not asked for the body yet */
            __attribute__((fallthrough));
        case CONN_HANDLING: {
            keel_req *r = c->req;
            if (r && !r->finished && !r->streaming && now >= r->deadline) {
                __atomic_store_n(&r->canceled, 1, __ATOMIC_RELEASE);
                keel_log(KEEL_LOG_WARN, "handler deadline passed", "{s:s,s:s}",
                         "route", keel_req_route_label(r), "request_id",
                         r->request_id ? r->request_id : "-");
                keel_respond_problem(r, 503, "the request took too long to process");
            }
            break;
        }
        case CONN_WS:
            keel__ws_sweep(c, now);
            break;
        case CONN_CLOSING:
            break;
        }
    }
}

/* Drain: a connection with a request in progress answers it with
 * "Connection: close". An idle keep-alive connection is not cut at once —
 * a busy client may be sending its next request right now, and a close
 * would fail it — but gets DRAIN_IDLE_MS: a request that comes in is
 * answered with "Connection: close", and a connection still idle then is
 * closed by the sweep. */
#define DRAIN_IDLE_MS 250

void keel__conn_drain_idle(keel_worker *w)
{
    keel_conn *next;
    uint64_t until = uv_now(&w->loop) + DRAIN_IDLE_MS;
    for (keel_conn *c = w->conns; c; c = next) {
        next = c->next;
        if (c->closed)
            continue;
        if (c->state == CONN_HEAD && c->in.len == c->parsed && !c->req) {
            if (!c->deadline || c->deadline > until)
                c->deadline = until;
        } else if (c->state == CONN_WS) {
            keel__ws_drain(c); /* close 1001, then the handshake or its timeout */
        } else {
            c->close_after_write = 1;
        }
    }
}

/* ---------------------------------------------------------------- sendfile */

#define SENDFILE_SLICE (4u << 20) /* per loop iteration, so others get a turn */

/* Drives keel_res_sendfile: runs when the connection's output is empty
 * (a drain callback). Our own bytes go through the output buffer; file
 * ranges go by sendfile(2) straight from the page cache to the socket.
 * When the socket is full, the next single byte of the file is written
 * through the output buffer instead: libuv then waits for writability and
 * the write's completion brings us back here. */
void keel__conn_sendfile_pump(keel_req *r, void *arg)
{
    (void)arg;
    keel_conn *c = r->c;
    if (!c || c->closed || r->finished) {
        if (r->sf_open) {
            close(r->sf_fd);
            r->sf_open = 0;
        }
        return; /* the client went away */
    }
    if (c->out.len || c->writing) {
        r->drain_cb = keel__conn_sendfile_pump;
        keel__conn_flush(c);
        return;
    }
    int sock;
    if (uv_fileno((uv_handle_t *)&c->tcp, &sock) < 0) {
        keel__conn_close(c);
        return;
    }
    uint64_t budget = SENDFILE_SLICE;
    while (r->sf_i < r->sf_nsegs) {
        keel_sendfile_seg *sg = &r->sf_segs[r->sf_i];
        if (sg->data) {
            keel_buf_append(&c->out, sg->data, sg->len);
            r->bytes_out += sg->len;
            r->sf_i++;
            r->drain_cb = keel__conn_sendfile_pump;
            keel__conn_flush(c);
            return;
        }
        if (sg->len == 0) {
            r->sf_i++;
            continue;
        }
        if (budget == 0) {
            r->drain_cb = keel__conn_sendfile_pump;
            keel__conn_want_drain(c);
            return;
        }
        off_t off = (off_t)sg->offset;
        size_t want = sg->len < budget ? (size_t)sg->len : (size_t)budget;
        ssize_t n = sendfile(sock, r->sf_fd, &off, want);
        if (n > 0) {
            sg->offset += (uint64_t)n;
            sg->len -= (uint64_t)n;
            budget -= (uint64_t)n;
            r->bytes_out += (uint64_t)n;
            STAT_ADD(c->w, bytes_out, (uint64_t)n);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            char b;
            if (pread(r->sf_fd, &b, 1, (off_t)sg->offset) != 1) {
                keel__conn_close(c);
                return;
            }
            sg->offset++;
            sg->len--;
            r->bytes_out++;
            keel_buf_append(&c->out, &b, 1);
            r->drain_cb = keel__conn_sendfile_pump;
            keel__conn_flush(c);
            return;
        }
        /* the file is shorter than promised, or the socket failed */
        keel_log(KEEL_LOG_WARN, "sendfile failed", "{s:s}", "error",
                 n == 0 ? "file shorter than its length" : strerror(errno));
        keel__conn_close(c);
        return;
    }
    keel__req_sendfile_done(r);
}
