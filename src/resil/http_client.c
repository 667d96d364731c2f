/* http_client.c — the outbound HTTP client (see keel/http_client.h).
 *
 * Each worker has its own curl multi handle, made on the worker's first
 * call, whose sockets and timer are libuv handles on that worker's loop:
 * CURLMOPT_SOCKETFUNCTION opens, changes and closes a uv_poll per socket,
 * CURLMOPT_TIMERFUNCTION arms one uv_timer, and both hand the event back
 * with curl_multi_socket_action. The multi handle's connection cache is
 * what reuses connections, so every attempt is a fresh easy handle.
 *
 * A call (hc_call) lives from keel_http_request to its callback. Its
 * attempts are run by keel_retry: an attempt takes a breaker ticket (the
 * first one synchronously, so an open breaker refuses the call before it
 * starts), adds an easy handle, and when curl says it is done reports to
 * the breaker, counts metrics and tells keel_retry what happened; a
 * retryable HTTP status travels through keel_retry as RETRY_STATUS so the
 * last answer can still be delivered as an answer. When the worker stops,
 * running attempts are aborted and waiting calls canceled, each ending
 * with KEEL_ECANCELED, then the multi handle, the polls and the timer are
 * closed so the loop can end.
 */
#include "keel/http_client.h"
#include "keel/trace.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "keel/log.h"

#define RETRY_STATUS (-EAGAIN) /* an answer worth retrying (429, 502-504) */
#define MAX_HEAD_BYTES (64 * 1024)

typedef struct hc_call hc_call;
typedef struct hc_worker hc_worker;
typedef struct hc_sock hc_sock;
typedef struct hc_target hc_target;

struct hc_target {
    hc_target *next;
    char *name;
    keel_breaker *breaker;
};

struct hc_sock {
    hc_sock *prev, *next; /* in hw->socks */
    uv_poll_t poll;
    curl_socket_t fd;
    hc_worker *hw;
};

struct hc_worker {
    keel_http_client *c;
    keel_worker *w;
    CURLM *multi;      /* NULL until the first call */
    uv_timer_t timer;  /* curl's timeout */
    int stopping;
    hc_call *calls;    /* every live call on this worker */
    hc_sock *socks;
};

struct keel_http_client {
    keel_http_client_options o;
    keel_breaker_opts bo;
    keel_breakers *breakers; /* NULL: standalone breakers, ours */
    uv_mutex_t mu;           /* targets */
    hc_target *targets;
    unsigned ntargets;
    hc_worker *workers;
    unsigned nworkers;
    keel_metric *m_requests, *m_duration;
};

struct hc_call {
    hc_call *prev, *next; /* in hw->calls */
    hc_worker *hw;
    hc_target *tg;
    /* the request, copied */
    char *method, *url;
    struct curl_slist *hdrs;
    char *body;
    int body_owned; /* 0: the caller's (KEEL_HTTP_BODY_BORROWED) */
    size_t body_len;
    int has_body;
    uint64_t timeout_ms, connect_timeout_ms, max_body;
    int retry_ok;
    /* the attempt */
    keel_retry *rt;
    CURL *easy;
    uint64_t ticket;
    uint64_t start_ns;
    int err;          /* set by a callback that aborted the transfer */
    char errbuf[CURL_ERROR_SIZE];
    /* the answer so far */
    int status;
    keel_buf head;    /* "name\0value\0" pairs */
    size_t nheaders;
    keel_buf body_in;
    /* the caller */
    keel_http_cb cb;
    keel_http_req_cb rcb;
    keel_req *req;
    void *arg;
    keel_span_ref span; /* the client span of a traced request's call */
};

/* ---------------------------------------------------------------- options */

#define AT(f) KEEL_CONFIG_AT(keel_http_client_options, f)
static const keel_config_var hc_vars[] = {
    {.name = "HTTP_CLIENT_TIMEOUT", .type = KEEL_CONFIG_DURATION, .def = "10s", AT(timeout_ms),
     .min = 1, .help = "an outbound HTTP attempt not answered in full within this fails"},
    {.name = "HTTP_CLIENT_CONNECT_TIMEOUT", .type = KEEL_CONFIG_DURATION, .def = "2s",
     AT(connect_timeout_ms), .min = 1,
     .help = "time to establish an outbound HTTP connection (TCP and TLS)"},
    {.name = "HTTP_CLIENT_MAX_BODY", .type = KEEL_CONFIG_SIZE, .def = "1mb", AT(max_body),
     .min = 1, .help = "largest outbound HTTP response body accepted; a larger one fails"},
    {.name = "HTTP_CLIENT_MAX_ATTEMPTS", .type = KEEL_CONFIG_UINT, .def = "3", AT(max_attempts),
     .min = 1, .max = 20,
     .help = "attempts of a retryable outbound HTTP call (idempotent method), the first included"},
};
#undef AT

const keel_config_module keel_http_client_config = KEEL_CONFIG_MODULE(
    "http_client", "The outbound HTTP client (src/resil/http_client.c).",
    keel_http_client_options, hc_vars, NULL);

/* ---------------------------------------------------------------- targets */

static const char *const failure_labels[] = {"timeout", "refused", "error", "too_big",
                                             "unavailable", "canceled", NULL};

static hc_target *target_get(keel_http_client *c, const char *name)
{
    uv_mutex_lock(&c->mu);
    hc_target *t = c->targets;
    while (t && strcmp(t->name, name) != 0)
        t = t->next;
    if (!t && c->ntargets >= KEEL_HTTP_CLIENT_MAX_TARGETS) {
        name = "other"; /* bounded: metrics labels and breakers */
        for (t = c->targets; t && strcmp(t->name, name) != 0;)
            t = t->next;
    }
    if (!t) {
        c->ntargets++;
        t = keel_calloc(1, sizeof(*t));
        t->name = keel_strdup(name);
        char bname[160];
        snprintf(bname, sizeof(bname), "http:%s", name);
        t->breaker = keel_breaker_new(c->breakers, bname, &c->bo);
        t->next = c->targets;
        c->targets = t;
    }
    uv_mutex_unlock(&c->mu);
    return t;
}

/* ---------------------------------------------------------------- metrics */

static void count(hc_call *k, const char *status, int observe)
{
    keel_http_client *c = k->hw->c;
    unsigned shard = keel_worker_id(k->hw->w);
    const char *lv[] = {k->tg->name, status};
    keel_metric_add(c->m_requests, shard, lv, 1);
    if (observe)
        keel_metric_observe(c->m_duration, shard, lv,
                            (double)(keel_now_ns() - k->start_ns) / 1e9);
}

static const char *error_label(int err)
{
    switch (err) {
    case KEEL_ETIMEDOUT: return "timeout";
    case -ECONNREFUSED: return "refused";
    case KEEL_ETOOBIG: return "too_big";
    case KEEL_EUNAVAIL: return "unavailable";
    case KEEL_ECANCELED: return "canceled";
    default: return "error";
    }
}

/* ---------------------------------------------------------------- the loop side */

static void check_done(hc_worker *hw);

static void on_sock_closed(uv_handle_t *h)
{
    keel_free(h->data);
}

static void sock_close(hc_sock *s)
{
    hc_worker *hw = s->hw;
    if (s->prev)
        s->prev->next = s->next;
    else
        hw->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    hc_sock *s = p->data;
    hc_worker *hw = s->hw;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    int running;
    curl_multi_socket_action(hw->multi, s->fd, flags, &running);
    check_done(hw);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *sockp)
{
    hc_worker *hw = userp;
    hc_sock *s = sockp;
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            curl_multi_assign(hw->multi, fd, NULL);
            sock_close(s);
        }
        return 0;
    }
    if (!s) {
        s = keel_calloc(1, sizeof(*s));
        s->fd = fd;
        s->hw = hw;
        if (uv_poll_init_socket(keel_worker_loop(hw->w), &s->poll, fd) != 0) {
            keel_free(s);
            return -1;
        }
        s->poll.data = s;
        s->next = hw->socks;
        if (hw->socks)
            hw->socks->prev = s;
        hw->socks = s;
        curl_multi_assign(hw->multi, fd, s);
    }
    int ev = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        ev |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        ev |= UV_WRITABLE;
    uv_poll_start(&s->poll, ev, on_poll);
    return 0;
}

static void on_timer(uv_timer_t *t)
{
    hc_worker *hw = t->data;
    int running;
    curl_multi_socket_action(hw->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(hw);
}

static int on_timer_set(CURLM *multi, long timeout_ms, void *userp)
{
    hc_worker *hw = userp;
    (void)multi;
    if (timeout_ms < 0)
        uv_timer_stop(&hw->timer);
    else /* 0 too goes through the loop: curl must not be re-entered from here */
        uv_timer_start(&hw->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

static int worker_multi(hc_worker *hw)
{
    if (hw->multi)
        return 0;
    hw->multi = curl_multi_init();
    if (!hw->multi)
        return KEEL_EIO;
    uv_timer_init(keel_worker_loop(hw->w), &hw->timer);
    hw->timer.data = hw;
    curl_multi_setopt(hw->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(hw->multi, CURLMOPT_SOCKETDATA, hw);
    curl_multi_setopt(hw->multi, CURLMOPT_TIMERFUNCTION, on_timer_set);
    curl_multi_setopt(hw->multi, CURLMOPT_TIMERDATA, hw);
    return 0;
}

/* ---------------------------------------------------------------- one attempt */

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    hc_call *k = arg;
    size_t len = size * n;
    if (k->body_in.len + len > k->max_body) {
        k->err = KEEL_ETOOBIG;
        return 0; /* curl aborts the transfer (CURLE_WRITE_ERROR) */
    }
    keel_buf_append(&k->body_in, p, len);
    return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    hc_call *k = arg;
    size_t len = size * n;
    if (len >= 5 && !memcmp(p, "HTTP/", 5)) {
        /* a status line: a new head (after a 100 Continue, say) */
        k->head.len = 0;
        k->nheaders = 0;
        return len;
    }
    while (len > 0 && (p[len - 1] == '\n' || p[len - 1] == '\r'))
        len--;
    if (len == 0)
        return size * n;
    if (k->head.len + len + 2 > MAX_HEAD_BYTES) {
        k->err = KEEL_ETOOBIG;
        return 0;
    }
    const char *colon = memchr(p, ':', len);
    if (!colon)
        return size * n; /* not a field line: ignored */
    const char *v = colon + 1, *end = p + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    keel_buf_append(&k->head, p, (size_t)(colon - p));
    keel_buf_append(&k->head, "", 1);
    keel_buf_append(&k->head, v, (size_t)(end - v));
    keel_buf_append(&k->head, "", 1);
    k->nheaders++;
    return size * n;
}

static int map_error(CURLcode rc)
{
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT: return KEEL_ETIMEDOUT;
    case CURLE_COULDNT_CONNECT: return -ECONNREFUSED;
    case CURLE_COULDNT_RESOLVE_HOST: return KEEL_ENOTFOUND;
    case CURLE_FILESIZE_EXCEEDED: return KEEL_ETOOBIG;
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE: return KEEL_ECLOSED;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_UNSUPPORTED_PROTOCOL: return KEEL_EPROTO;
    default: return KEEL_EIO;
    }
}

static void attempt_start(hc_call *k)
{
    CURL *e = curl_easy_init();
    if (!e) {
        k->err = KEEL_ENOMEM;
        snprintf(k->errbuf, sizeof(k->errbuf), "out of memory");
        keel_breaker_record(k->tg->breaker, k->ticket, 1, keel_now_ms());
        keel_retry_done(k->rt, KEEL_ENOMEM);
        return;
    }
    k->easy = e;
    k->err = 0;
    k->errbuf[0] = '\0';
    k->status = 0;
    k->head.len = 0;
    k->nheaders = 0;
    k->body_in.len = 0;
    k->start_ns = keel_now_ns();
    curl_easy_setopt(e, CURLOPT_URL, k->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PRIVATE, k);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, k->errbuf);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)k->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)k->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)k->max_body);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, k);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, k);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, k->hdrs);
    if (!strcmp(k->method, "HEAD")) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (k->has_body || !strcmp(k->method, "POST")) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)k->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, k->body ? k->body : "");
        if (strcmp(k->method, "POST"))
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, k->method);
    } else if (strcmp(k->method, "GET")) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, k->method);
    }
    curl_multi_add_handle(k->hw->multi, e);
}

static int retryable_status(int s)
{
    return s == 429 || s == 502 || s == 503 || s == 504;
}

/* The easy handle of k is done with rc: report the attempt and let
 * keel_retry decide what comes next. */
static void attempt_end(hc_call *k, CURLcode rc)
{
    hc_worker *hw = k->hw;
    long code = 0;
    curl_easy_getinfo(k->easy, CURLINFO_RESPONSE_CODE, &code);
    curl_multi_remove_handle(hw->multi, k->easy);
    curl_easy_cleanup(k->easy);
    k->easy = NULL;
    int st;
    if (rc == CURLE_OK) {
        k->status = (int)code;
        st = retryable_status(k->status) ? RETRY_STATUS : 0;
    } else {
        st = k->err ? k->err : map_error(rc);
        k->status = 0;
        if (st == KEEL_ETOOBIG)
            snprintf(k->errbuf, sizeof(k->errbuf),
                     "response body over %llu bytes (HTTP_CLIENT_MAX_BODY)",
                     (unsigned long long)k->max_body);
        else if (!k->errbuf[0])
            snprintf(k->errbuf, sizeof(k->errbuf), "%s", curl_easy_strerror(rc));
    }
    k->err = st == RETRY_STATUS ? 0 : st;
    /* Only what says the target is sick counts against it: silence, a
     * refusal, a 5xx. A 4xx or an oversized body is the target answering. */
    int ok = st == 0 || st == RETRY_STATUS ? k->status < 500
                                           : st == KEEL_ETOOBIG;
    keel_breaker_record(k->tg->breaker, k->ticket, ok, keel_now_ms());
    k->ticket = 0;
    if (st < 0 && st != RETRY_STATUS) {
        count(k, error_label(st), 1);
    } else {
        char s[16];
        snprintf(s, sizeof(s), "%d", k->status);
        count(k, s, 1);
    }
    keel_retry_done(k->rt, st);
}

static void check_done(hc_worker *hw)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(hw->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        hc_call *k = NULL;
        CURLcode rc = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&k);
        attempt_end(k, rc);
    }
}

/* ---------------------------------------------------------------- a call */

static void call_free(hc_call *k)
{
    keel_free(k->method);
    keel_free(k->url);
    curl_slist_free_all(k->hdrs);
    if (k->body_owned)
        keel_free(k->body);
    keel_buf_free(&k->head);
    keel_buf_free(&k->body_in);
    keel_free(k);
}

static void op_attempt(keel_retry *rt, unsigned attempt, void *arg)
{
    hc_call *k = arg;
    k->rt = rt;
    if (k->hw->stopping) {
        if (k->ticket)
            keel_breaker_record(k->tg->breaker, k->ticket, 0, keel_now_ms());
        k->ticket = 0;
        keel_retry_done(rt, KEEL_ECANCELED);
        return;
    }
    if (attempt > 1) {
        k->ticket = keel_breaker_allow(k->tg->breaker, keel_now_ms());
        if (!k->ticket) {
            k->start_ns = keel_now_ns();
            count(k, "unavailable", 0);
            k->status = 0;
            k->err = KEEL_EUNAVAIL;
            snprintf(k->errbuf, sizeof(k->errbuf), "circuit breaker http:%s is open",
                     k->tg->name);
            keel_retry_done(rt, KEEL_EUNAVAIL);
            return;
        }
    }
    attempt_start(k);
}

static int op_retryable(int status, void *arg)
{
    hc_call *k = arg;
    if (!k->retry_ok || k->hw->stopping)
        return 0;
    return status == RETRY_STATUS || status == KEEL_ETIMEDOUT || status == KEEL_ECLOSED ||
           status == -ECONNREFUSED;
}

static void op_done(int status, unsigned attempts, void *arg)
{
    hc_call *k = arg;
    hc_worker *hw = k->hw;
    if (k->prev)
        k->prev->next = k->next;
    else
        hw->calls = k->next;
    if (k->next)
        k->next->prev = k->prev;
    if (status == RETRY_STATUS)
        status = 0;
    if (status == KEEL_ECANCELED && !k->errbuf[0])
        snprintf(k->errbuf, sizeof(k->errbuf), "canceled: the worker is stopping");

    size_t nh = status == 0 ? k->nheaders : 0;
    keel_http_header *hs = nh ? keel_malloc(nh * sizeof(*hs)) : NULL;
    const char *p = k->head.data;
    for (size_t i = 0; i < nh; i++) {
        size_t nl = strlen(p);
        hs[i].name = (keel_str){p, nl};
        p += nl + 1;
        size_t vl = strlen(p);
        hs[i].value = (keel_str){p, vl};
        p += vl + 1;
    }
    keel_buf_reserve(&k->body_in, 1);
    k->body_in.data[k->body_in.len] = '\0';
    keel_http_response res = {
        .status = status == 0 ? k->status : 0,
        .headers = hs,
        .nheaders = nh,
        .body = status == 0 ? k->body_in.data : "",
        .body_len = status == 0 ? k->body_in.len : 0,
        .attempts = attempts ? attempts : 1,
        .error = status == 0 ? "" : k->errbuf,
    };
    if (keel_span_ok(k->span)) {
        if (status == 0)
            keel_span_set_int(k->span, "http.response.status_code", k->status);
        if (status < 0 || k->status >= 500) {
            char code[16];
            snprintf(code, sizeof(code), "%d", k->status);
            keel_span_set_str(k->span, "error.type", status < 0 ? keel_strerror(status) : code);
            keel_span_set_error(k->span, status < 0 ? k->errbuf : NULL);
        }
        if (attempts > 1)
            keel_span_set_int(k->span, "http.request.resend_count", (int64_t)attempts - 1);
        keel_span_finish(k->span, 0);
    }
    if (k->req) {
        keel_req *r = k->req;
        if (keel_req_is_finished(r)) {
            /* the request has its answer: this one goes nowhere */
            status = KEEL_ECANCELED;
            res = (keel_http_response){.body = "", .attempts = res.attempts,
                                       .error = "canceled: the request ended first"};
        }
        k->rcb(r, k->arg, status, &res);
        keel_req_unhold(r);
    } else {
        k->cb(k->arg, status, &res);
    }
    keel_free(hs);
    call_free(k);
}

static int idempotent(const char *m)
{
    static const char *const ok[] = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE", NULL};
    for (int i = 0; ok[i]; i++)
        if (!strcmp(ok[i], m))
            return 1;
    return 0;
}

/* CR, LF or NUL in a header would end or split the field line. */
static int has_crlf(keel_str s)
{
    return s.ptr && (memchr(s.ptr, '\r', s.len) || memchr(s.ptr, '\n', s.len) ||
                     memchr(s.ptr, '\0', s.len));
}

static int token_ok(const char *m)
{
    if (!*m)
        return 0;
    for (; *m; m++)
        if (!((*m >= 'A' && *m <= 'Z') || *m == '-' || *m == '_'))
            return 0;
    return 1;
}

/* The URL's host (into out), checking it is an http(s) URL curl parses. */
static int url_host(const char *url, char *out, size_t cap)
{
    if (strncasecmp(url, "http://", 7) && strncasecmp(url, "https://", 8))
        return KEEL_EINVAL;
    CURLU *u = curl_url();
    char *host = NULL;
    int rc = KEEL_EINVAL;
    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host && *host) {
        snprintf(out, cap, "%s", host);
        rc = 0;
    }
    curl_free(host);
    curl_url_cleanup(u);
    return rc;
}

static int call_start(keel_http_client *c, keel_worker *w, const keel_http_call *call,
                      const char *traceparent, const char *tracestate, hc_call **out)
{
    *out = NULL;
    if (!c || !w || !call || !call->url)
        return KEEL_EINVAL;
    unsigned id = keel_worker_id(w);
    if (id >= c->nworkers)
        return KEEL_EINVAL;
    hc_worker *hw = &c->workers[id];
    if (hw->w != w)
        return KEEL_EINVAL;
    if (hw->stopping)
        return KEEL_ECLOSED;
    const char *method = call->method ? call->method : "GET";
    char host[128];
    if (!token_ok(method) || url_host(call->url, host, sizeof(host)) < 0)
        return KEEL_EINVAL;
    for (size_t i = 0; i < call->nheaders; i++)
        if (!call->headers[i].name.len || has_crlf(call->headers[i].name) ||
            has_crlf(call->headers[i].value) || memchr(call->headers[i].name.ptr, ':',
                                                        call->headers[i].name.len))
            return KEEL_EINVAL;
    if (call->target && !*call->target)
        return KEEL_EINVAL;
    int rc = worker_multi(hw);
    if (rc < 0)
        return rc;
    hc_target *tg = target_get(c, call->target ? call->target : host);
    uint64_t ticket = keel_breaker_allow(tg->breaker, keel_now_ms());
    if (!ticket) {
        const char *lv[] = {tg->name, "unavailable"};
        keel_metric_add(c->m_requests, id, lv, 1);
        return KEEL_EUNAVAIL;
    }

    hc_call *k = keel_calloc(1, sizeof(*k));
    k->hw = hw;
    k->tg = tg;
    k->ticket = ticket;
    k->method = keel_strdup(method);
    k->url = keel_strdup(call->url);
    int have_tp = 0, have_ts = 0;
    keel_buf line = {0};
    for (size_t i = 0; i < call->nheaders; i++) {
        const keel_http_header *h = &call->headers[i];
        line.len = 0;
        keel_buf_append(&line, h->name.ptr, h->name.len);
        /* "Name;" is curl's way of sending a header with an empty value */
        if (h->value.len) {
            keel_buf_append(&line, ": ", 2);
            keel_buf_append(&line, h->value.ptr, h->value.len);
        } else {
            keel_buf_append(&line, ";", 1);
        }
        keel_buf_append(&line, "", 1);
        k->hdrs = curl_slist_append(k->hdrs, line.data);
        have_tp |= keel_str_ieq_c(h->name, "traceparent");
        have_ts |= keel_str_ieq_c(h->name, "tracestate");
    }
    keel_buf_free(&line);
    if (traceparent && !have_tp) {
        char tp[80];
        snprintf(tp, sizeof(tp), "traceparent: %s", traceparent);
        k->hdrs = curl_slist_append(k->hdrs, tp);
        if (tracestate && !have_ts) {
            line.len = 0;
            keel_buf_printf(&line, "tracestate: %s", tracestate);
            keel_buf_append(&line, "", 1);
            k->hdrs = curl_slist_append(k->hdrs, line.data);
            keel_buf_free(&line);
        }
    }
    /* no "Expect: 100-continue" round trip before a large body */
    k->hdrs = curl_slist_append(k->hdrs, "Expect:");
    if (call->body && call->body_len && (call->flags & KEEL_HTTP_BODY_BORROWED)) {
        k->body = (char *)call->body;
    } else if (call->body && call->body_len) {
        k->body = keel_malloc(call->body_len);
        memcpy(k->body, call->body, call->body_len);
        k->body_owned = 1;
    }
    k->body_len = call->body ? call->body_len : 0;
    k->has_body = call->body != NULL;
    k->timeout_ms = call->timeout_ms ? call->timeout_ms : c->o.timeout_ms;
    k->connect_timeout_ms = call->connect_timeout_ms ? call->connect_timeout_ms
                                                     : c->o.connect_timeout_ms;
    k->max_body = call->max_body ? call->max_body : c->o.max_body;
    k->retry_ok = idempotent(method) || (call->flags & KEEL_HTTP_RETRY_UNSAFE);

    keel_retry_opts ro = call->retry;
    if (!ro.max_attempts)
        ro.max_attempts = c->o.max_attempts ? c->o.max_attempts : 1;
    if (!ro.base_ms)
        ro.base_ms = 100;
    if (!ro.max_delay_ms)
        ro.max_delay_ms = 2000;
    if (!k->retry_ok)
        ro.max_attempts = 1;
    k->next = hw->calls;
    if (hw->calls)
        hw->calls->prev = k;
    hw->calls = k;
    /* the first attempt runs from the loop, on keel_retry's timer */
    rc = keel_retry_start(keel_worker_loop(w), &ro, op_attempt, op_retryable, op_done, k);
    if (rc < 0) {
        hw->calls = k->next;
        if (k->next)
            k->next->prev = NULL;
        keel_breaker_record(tg->breaker, ticket, 1, keel_now_ms());
        call_free(k);
        return rc;
    }
    *out = k;
    return 0;
}

int keel_http_request(keel_http_client *c, keel_worker *w, const keel_http_call *call,
                      keel_http_cb cb, void *arg)
{
    if (!cb)
        return KEEL_EINVAL;
    hc_call *k;
    int rc = call_start(c, w, call, NULL, NULL, &k);
    if (rc < 0)
        return rc;
    k->cb = cb;
    k->arg = arg;
    return 0;
}

int keel_http_request_for(keel_http_client *c, keel_req *r, const keel_http_call *call,
                          keel_http_req_cb cb, void *arg)
{
    if (!cb || !r)
        return KEEL_EINVAL;
    /* A client span, child of r's current span, and the traceparent that
     * makes it the callee's parent; r not sampled: r's own ids, flag 00. */
    const char *method = call->method ? call->method : "GET";
    keel_span_ref span = keel_span_begin(keel_trace_ref(r), method, KEEL_SPAN_CLIENT, 0);
    char tp[56];
    int with_tp = keel_span_traceparent(span, tp) == 0 || keel_trace_propagate(r, tp) == 0;
    hc_call *k;
    int rc = call_start(c, keel_req_worker(r), call, with_tp ? tp : NULL,
                        keel_trace_tracestate(r), &k);
    if (rc < 0) {
        keel_span_set_error(span, keel_strerror(rc));
        keel_span_finish(span, 0);
        return rc;
    }
    k->span = span;
    keel_span_set_str(span, "http.request.method", method);
    keel_span_set_str(span, "url.full", call->url);
    keel_span_set_str(span, "server.address", k->tg->name);
    k->rcb = cb;
    k->req = r;
    k->arg = arg;
    keel_req_hold(r);
    return 0;
}

keel_str keel_http_response_header(const keel_http_response *res, const char *name)
{
    for (size_t i = 0; i < res->nheaders; i++)
        if (keel_str_ieq_c(res->headers[i].name, name))
            return res->headers[i].value;
    return KEEL_STR_NULL;
}

/* ---------------------------------------------------------------- life cycle */

static void on_worker_start(keel_worker *w, void *arg)
{
    keel_http_client *c = arg;
    c->workers[keel_worker_id(w)].w = w;
}

static void on_worker_stop(keel_worker *w, void *arg)
{
    keel_http_client *c = arg;
    hc_worker *hw = &c->workers[keel_worker_id(w)];
    hw->stopping = 1;
    /* Every call ends now (callbacks may not start new ones: stopping).
     * A running attempt is aborted and reported; a waiting one canceled. */
    hc_call *k = hw->calls, *next;
    for (; k; k = next) {
        next = k->next;
        if (k->easy) {
            k->err = KEEL_ECANCELED;
            snprintf(k->errbuf, sizeof(k->errbuf), "canceled: the worker is stopping");
            attempt_end(k, CURLE_ABORTED_BY_CALLBACK);
        } else if (k->rt) {
            keel_retry_cancel(k->rt, KEEL_ECANCELED);
        }
        /* else its first attempt is due on keel_retry's timer, which ends
         * it (op_attempt sees `stopping`) */
    }
    if (!hw->multi)
        return;
    curl_multi_cleanup(hw->multi); /* closes the cached connections */
    hw->multi = NULL;
    while (hw->socks)
        sock_close(hw->socks);
    uv_close((uv_handle_t *)&hw->timer, NULL);
}

int keel_http_client_new(keel_http_client **out, keel_server *s, const keel_config *cfg,
                         keel_metrics *m, keel_breakers *br)
{
    *out = NULL;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return KEEL_EIO;
    keel_http_client *c = keel_calloc(1, sizeof(*c));
    c->o = *(const keel_http_client_options *)keel_config_get(cfg, &keel_http_client_config);
    c->bo = *(const keel_breaker_opts *)keel_config_get(cfg, &keel_breaker_config);
    c->breakers = br;
    uv_mutex_init(&c->mu);
    c->nworkers = keel_server_workers(s);
    c->workers = keel_calloc(c->nworkers, sizeof(hc_worker));
    for (unsigned i = 0; i < c->nworkers; i++)
        c->workers[i].c = c;
    if (m) {
        static const char *const labels[] = {"target", "status", NULL};
        static const char *const tlabel[] = {"target", NULL};
        c->m_requests = keel_metrics_counter(m, "http_client_requests_total",
                                             "Outbound HTTP attempts, by target and HTTP "
                                             "status or failure", labels);
        c->m_duration = keel_metrics_histogram(m, "http_client_request_duration_seconds",
                                               "Outbound HTTP attempts, start to last byte",
                                               tlabel, keel_latency_buckets,
                                               keel_latency_nbuckets);
    }
    keel_worker_hooks hooks = {.on_start = on_worker_start, .on_stop = on_worker_stop,
                               .arg = c};
    keel_server_add_worker_hooks(s, &hooks);
    *out = c;
    return 0;
}

int keel_http_client_declare_target(keel_http_client *c, const char *name)
{
    if (!c || !name || !*name)
        return KEEL_EINVAL;
    hc_target *t = target_get(c, name);
    const char *lv[] = {t->name, NULL};
    keel_metric_declare_each(c->m_requests, lv, 1, failure_labels);
    keel_metric_declare(c->m_duration, lv);
    return 0;
}

void keel_http_client_free(keel_http_client *c)
{
    if (!c)
        return;
    hc_target *t = c->targets, *next;
    for (; t; t = next) {
        next = t->next;
        if (!c->breakers)
            keel_breaker_free(t->breaker);
        keel_free(t->name);
        keel_free(t);
    }
    uv_mutex_destroy(&c->mu);
    keel_free(c->workers);
    keel_free(c);
    curl_global_cleanup();
}
