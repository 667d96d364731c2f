/* test_http_client.c — the outbound HTTP client against a real keel
 * server on loopback (the target), from the loop of a second keel server
 * (the caller): methods, bodies and headers, connection reuse, connect
 * and total timeouts, the body cap, retries, the breaker, traceparent,
 * metrics, a request that ends before the answer and calls still running
 * when the worker stops. Every test ends with both loops closed. */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "keel/keel.h"
#include "loopback.h"
#include "testsrv.h"

/* ---------------------------------------------------------------- fixture */

static struct {
    keel_config cfg;
    keel_server *target, *caller;
    keel_http_client *hc;
    keel_metrics *m;
    keel_breakers *br;
    unsigned tport, cport;
} F;

static int hits;       /* requests the target saw (atomic) */
static int flaky_fail; /* /flaky answers 503 while hits <= this */

static keel_flow h_echo(keel_req *r)
{
    __atomic_fetch_add(&hits, 1, __ATOMIC_SEQ_CST);
    keel_str x = keel_req_header(r, "x-test"), tp = keel_req_header(r, "traceparent");
    keel_str body = keel_req_body(r), m = keel_req_head(r)->method_str;
    keel_buf b = {0};
    keel_buf_printf(&b, "%.*s|%.*s|%.*s|%.*s", (int)m.len, m.ptr, (int)x.len,
                    x.ptr ? x.ptr : "", (int)tp.len, tp.ptr ? tp.ptr : "", (int)body.len,
                    body.ptr ? body.ptr : "");
    keel_res_header(r, "X-Echo", "yes");
    keel_respond(r, 200, "text/plain", b.data, b.len);
    keel_buf_free(&b);
    return KEEL_DONE;
}

static keel_flow h_big(keel_req *r)
{
    static char big[65536];
    memset(big, 'x', sizeof(big));
    keel_respond(r, 200, "text/plain", big, sizeof(big));
    return KEEL_DONE;
}

static keel_flow h_bigstream(keel_req *r)
{
    char chunk[4096];
    memset(chunk, 'y', sizeof(chunk));
    keel_res_stream_begin(r, 200, "text/plain");
    for (int i = 0; i < 4; i++)
        keel_res_write(r, chunk, sizeof(chunk));
    keel_res_stream_end(r);
    return KEEL_DONE;
}

static keel_flow h_flaky(keel_req *r)
{
    int n = __atomic_add_fetch(&hits, 1, __ATOMIC_SEQ_CST);
    if (n <= __atomic_load_n(&flaky_fail, __ATOMIC_SEQ_CST))
        keel_respond_text(r, 503, "busy");
    else
        keel_respond_text(r, 200, "ok");
    return KEEL_DONE;
}

static keel_flow h_fail(keel_req *r)
{
    __atomic_fetch_add(&hits, 1, __ATOMIC_SEQ_CST);
    keel_respond_text(r, 500, "broken");
    return KEEL_DONE;
}

/* Never answers: the route's deadline does, long after the client gave up. */
static keel_flow h_slow(keel_req *r)
{
    (void)r;
    __atomic_fetch_add(&hits, 1, __ATOMIC_SEQ_CST);
    return KEEL_SUSPEND;
}

static const keel_route target_routes[] = {
    {.name = "echo.get", .method = "GET", .path = "/echo", .handler = h_echo},
    {.name = "echo.post", .method = "POST", .path = "/echo", .handler = h_echo},
    {.name = "echo.put", .method = "PUT", .path = "/echo", .handler = h_echo},
    {.name = "big", .method = "GET", .path = "/big", .handler = h_big},
    {.name = "bigstream", .method = "GET", .path = "/bigstream", .handler = h_bigstream},
    {.name = "flaky.get", .method = "GET", .path = "/flaky", .handler = h_flaky},
    {.name = "flaky.post", .method = "POST", .path = "/flaky", .handler = h_flaky},
    {.name = "fail", .method = "GET", .path = "/fail", .handler = h_fail},
    {.name = "slow", .method = "GET", .path = "/slow", .handler = h_slow, .timeout_ms = 1500},
};

/* the caller's request-scoped routes */
static int proxied_status = 1; /* the callback's status; 1: not run yet */
static int proxied_late;       /* an answer found its request finished (atomic) */

static void proxied(keel_req *r, void *arg, int status, const keel_http_response *res)
{
    (void)arg;
    __atomic_store_n(&proxied_status, status, __ATOMIC_SEQ_CST);
    if (status == KEEL_ECANCELED)
        return; /* r has its answer already; it is still valid here */
    if (keel_req_is_finished(r)) /* checked on the test's thread */
        __atomic_store_n(&proxied_late, 1, __ATOMIC_SEQ_CST);
    if (status < 0)
        keel_respond_problem(r, 502, res->error);
    else
        keel_respond(r, 200, "text/plain", res->body, res->body_len);
}

static keel_flow proxy_to(keel_req *r, const char *path, uint64_t timeout_ms)
{
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", F.tport, path);
    keel_http_call call = {.url = url, .target = "echo", .timeout_ms = timeout_ms,
                           .retry = {.max_attempts = 1}};
    int rc = keel_http_request_for(F.hc, r, &call, proxied, NULL);
    if (rc < 0) {
        keel_respond_problem(r, 502, keel_strerror(rc));
        return KEEL_DONE;
    }
    return KEEL_SUSPEND;
}

static keel_flow h_proxy(keel_req *r)
{
    return proxy_to(r, "/echo", 0);
}

static keel_flow h_proxy_slow(keel_req *r)
{
    return proxy_to(r, "/slow", 600);
}

static const keel_route caller_routes[] = {
    {.name = "proxy", .method = "GET", .path = "/proxy", .handler = h_proxy},
    {.name = "proxy.slow", .method = "GET", .path = "/proxy-slow", .handler = h_proxy_slow,
     .timeout_ms = 150},
};

static void fx_start(void)
{
    memset(&F, 0, sizeof(F));
    __atomic_store_n(&hits, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&flaky_fail, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&proxied_status, 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&proxied_late, 0, __ATOMIC_SEQ_CST);
    testsrv_config(&F.cfg);
    F.cfg.log_level = KEEL_LOG_ERROR;
    keel_breaker_opts *bo = keel_config_edit(&F.cfg, &keel_breaker_config);
    bo->failures = 3;
    bo->window_ms = 60000;
    bo->recovery_ms = 60000;
    F.target = testsrv_new(&F.cfg);
    assert_int_equal(keel_server_add_routes(F.target, target_routes,
                                            sizeof(target_routes) / sizeof(target_routes[0])),
                     0);
    assert_int_equal(keel_server_start(F.target), 0);
    F.tport = keel_server_port(F.target);

    F.caller = keel_server_new(&F.cfg);
    keel_middleware rid = keel_mw_request_id();
    keel_server_use(F.caller, &rid);
    assert_int_equal(keel_server_add_routes(F.caller, caller_routes,
                                            sizeof(caller_routes) / sizeof(caller_routes[0])),
                     0);
    F.m = keel_metrics_new(1);
    F.br = keel_breakers_new(F.m);
    assert_int_equal(keel_http_client_new(&F.hc, F.caller, &F.cfg, F.m, F.br), 0);
    assert_int_equal(keel_server_start(F.caller), 0);
    F.cport = keel_server_port(F.caller);
}

/* Both servers drained with every loop closed, then freed. */
static void fx_stop(void)
{
    testsrv_drain(F.caller);
    testsrv_drain(F.target);
    assert_int_equal(__atomic_load_n(&proxied_late, __ATOMIC_SEQ_CST), 0);
    keel_server_free(F.caller);
    keel_http_client_free(F.hc);
    keel_server_free(F.target);
    keel_breakers_free(F.br);
    keel_metrics_free(F.m);
    keel_config_close(&F.cfg);
    keel_log_close();
}

/* ---------------------------------------------------------------- calls from the caller's loop */

typedef struct call_ctx {
    keel_http_call call;
    char url[128];
    int rc;             /* keel_http_request's return */
    int done;           /* atomic: the callback ran, or the start failed */
    int ncb;            /* callbacks run */
    int status;
    int http_status;
    unsigned attempts;
    char body[512];
    size_t body_len;
    char echo_header[16];
    char error[256];
    uint64_t t0, ms;
} call_ctx;

static void on_done(void *arg, int status, const keel_http_response *res)
{
    call_ctx *x = arg;
    x->ncb++;
    x->status = status;
    x->http_status = res->status;
    x->attempts = res->attempts;
    x->body_len = res->body_len;
    snprintf(x->body, sizeof(x->body), "%.*s", (int)res->body_len, res->body);
    keel_str h = keel_http_response_header(res, "x-echo");
    snprintf(x->echo_header, sizeof(x->echo_header), "%.*s", (int)h.len, h.ptr ? h.ptr : "");
    snprintf(x->error, sizeof(x->error), "%s", res->error);
    x->ms = keel_now_ms() - x->t0;
    __atomic_store_n(&x->done, 1, __ATOMIC_SEQ_CST);
}

static void start_call(void *arg)
{
    call_ctx *x = arg;
    x->t0 = keel_now_ms();
    x->rc = keel_http_request(F.hc, keel_server_worker(F.caller, 0), &x->call, on_done, x);
    if (x->rc < 0)
        __atomic_store_n(&x->done, 1, __ATOMIC_SEQ_CST);
}

static void ctx_init(call_ctx *x, const char *method, const char *path)
{
    memset(x, 0, sizeof(*x));
    snprintf(x->url, sizeof(x->url), "http://127.0.0.1:%u%s", F.tport, path);
    x->call.url = x->url;
    x->call.method = method;
    x->call.target = "echo";
    x->call.retry = (keel_retry_opts){.max_attempts = 1};
}

/* Runs x's call on the caller's loop and waits (10 s at most) for its end. */
static void run_call(call_ctx *x)
{
    assert_int_equal(keel_worker_post(keel_server_worker(F.caller, 0), start_call, x), 0);
    uint64_t t0 = keel_now_ms();
    while (!__atomic_load_n(&x->done, __ATOMIC_SEQ_CST) && keel_now_ms() - t0 < 10000)
        usleep(2000);
    assert_true(__atomic_load_n(&x->done, __ATOMIC_SEQ_CST));
}

static char *metrics_text(void)
{
    keel_buf b = {0};
    keel_metrics_render(F.m, &b);
    keel_buf_append(&b, "", 1);
    return b.data;
}

/* ---------------------------------------------------------------- tests */

static void test_get_and_post_with_headers_and_body(void **state)
{
    (void)state;
    fx_start();
    call_ctx x;
    ctx_init(&x, NULL, "/echo");
    keel_http_header h[] = {{KEEL_STR("X-Test"), KEEL_STR("one")}};
    x.call.headers = h;
    x.call.nheaders = 1;
    run_call(&x);
    assert_int_equal(x.rc, 0);
    assert_int_equal(x.status, 0);
    assert_int_equal(x.http_status, 200);
    assert_string_equal(x.body, "GET|one||");
    assert_string_equal(x.echo_header, "yes");
    assert_int_equal(x.ncb, 1);

    static const char json[] = "{\"a\": 1}";
    keel_http_header ph[] = {{KEEL_STR("X-Test"), KEEL_STR("two")},
                             {KEEL_STR("Content-Type"), KEEL_STR("application/json")}};
    const char *methods[] = {"POST", "PUT"};
    for (int i = 0; i < 2; i++) {
        ctx_init(&x, methods[i], "/echo");
        x.call.headers = ph;
        x.call.nheaders = 2;
        x.call.body = json;
        x.call.body_len = strlen(json);
        run_call(&x);
        assert_int_equal(x.status, 0);
        assert_int_equal(x.http_status, 200);
        char want[64];
        snprintf(want, sizeof(want), "%s|two||%s", methods[i], json);
        assert_string_equal(x.body, want);
    }
    fx_stop();
}

/* KEEL_HTTP_BODY_BORROWED: the caller's bytes are sent as they are (not
 * copied, not freed by the client: ASan would see a free of a buffer it
 * does not own), small and large (libcurl reads a large one in pieces). */
static void test_borrowed_body(void **state)
{
    (void)state;
    fx_start();
    size_t sizes[] = {200, 300000};
    for (int k = 0; k < 2; k++) {
        char *body = keel_malloc(sizes[k]);
        for (size_t i = 0; i < sizes[k]; i++)
            body[i] = (char)('a' + i % 26);
        call_ctx x;
        ctx_init(&x, "POST", "/echo");
        x.call.body = body;
        x.call.body_len = sizes[k];
        x.call.flags = KEEL_HTTP_BODY_BORROWED;
        run_call(&x);
        assert_int_equal(x.status, 0);
        assert_int_equal(x.http_status, 200);
        assert_int_equal(x.body_len, strlen("POST|||") + sizes[k]);
        assert_memory_equal(x.body, "POST|||abcdefghij", 17);
        keel_free(body); /* still the caller's */
    }
    fx_stop();
}

static void test_refuses_bad_calls_without_calling_back(void **state)
{
    (void)state;
    fx_start();
    static const struct {
        const char *method, *url, *hname, *hvalue;
    } bad[] = {
        {NULL, NULL, NULL, NULL},              /* no URL */
        {NULL, "ftp://127.0.0.1/x", NULL, NULL},
        {NULL, "not a url", NULL, NULL},
        {"get me", "http://127.0.0.1/", NULL, NULL},
        {NULL, "http://127.0.0.1/", "X-A", "a\r\nX-Injected: 1"},
        {NULL, "http://127.0.0.1/", "X-A:", "a"},
        {NULL, "http://127.0.0.1/", "", "a"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        call_ctx x;
        memset(&x, 0, sizeof(x));
        x.call.method = bad[i].method;
        x.call.url = bad[i].url;
        keel_http_header h = {keel_str_c(bad[i].hname), keel_str_c(bad[i].hvalue)};
        if (bad[i].hname) {
            x.call.headers = &h;
            x.call.nheaders = 1;
        }
        run_call(&x);
        assert_int_equal(x.rc, KEEL_EINVAL);
        assert_int_equal(x.ncb, 0);
    }
    /* a NUL inside a header value would cut the field line short */
    call_ctx x;
    ctx_init(&x, NULL, "/echo");
    keel_http_header nul = {KEEL_STR("X-A"), {"a\0b", 3}};
    x.call.headers = &nul;
    x.call.nheaders = 1;
    run_call(&x);
    assert_int_equal(x.rc, KEEL_EINVAL);
    assert_int_equal(__atomic_load_n(&hits, __ATOMIC_SEQ_CST), 0);
    fx_stop();
}

static void test_connections_are_reused(void **state)
{
    (void)state;
    fx_start();
    for (int i = 0; i < 5; i++) {
        call_ctx x;
        ctx_init(&x, NULL, "/echo");
        run_call(&x);
        assert_int_equal(x.http_status, 200);
    }
    keel_server_stats st;
    keel_server_stats_get(F.target, &st);
    assert_int_equal(st.connections_total, 1);
    assert_int_equal(__atomic_load_n(&hits, __ATOMIC_SEQ_CST), 5);
    fx_stop();
}

static void test_refused_connection_fails(void **state)
{
    (void)state;
    fx_start();
    /* a port nothing listens on: bound, then closed */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    getsockname(fd, (struct sockaddr *)&a, &al);
    close(fd);
    call_ctx x;
    ctx_init(&x, NULL, "/");
    snprintf(x.url, sizeof(x.url), "http://127.0.0.1:%u/", ntohs(a.sin_port));
    x.call.target = "nobody";
    run_call(&x);
    assert_int_equal(x.status, -ECONNREFUSED);
    assert_int_equal(x.http_status, 0);
    assert_true(x.error[0] != '\0');
    fx_stop();
}

static void test_connect_timeout(void **state)
{
    (void)state;
    fx_start();
    /* A listener that never accepts, its backlog full: SYNs go unanswered. */
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof(a);
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(l, 0), 0);
    getsockname(l, (struct sockaddr *)&a, &al);
    int fill[4];
    for (int i = 0; i < 4; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fill[i], (struct sockaddr *)&a, sizeof(a));
    }
    usleep(50 * 1000);
    call_ctx x;
    ctx_init(&x, NULL, "/");
    snprintf(x.url, sizeof(x.url), "http://127.0.0.1:%u/", ntohs(a.sin_port));
    x.call.target = "blackhole";
    x.call.connect_timeout_ms = 200;
    x.call.timeout_ms = 5000;
    run_call(&x);
    assert_int_equal(x.status, KEEL_ETIMEDOUT);
    assert_true(x.ms < 2000); /* the connect timeout, not the total one */
    for (int i = 0; i < 4; i++)
        close(fill[i]);
    close(l);
    fx_stop();
}

static void test_total_timeout(void **state)
{
    (void)state;
    fx_start();
    call_ctx x;
    ctx_init(&x, NULL, "/slow");
    x.call.timeout_ms = 300;
    run_call(&x);
    assert_int_equal(x.status, KEEL_ETIMEDOUT);
    assert_true(x.ms >= 250 && x.ms < 1400);
    assert_int_equal(x.ncb, 1);
    fx_stop();
}

static void test_body_cap(void **state)
{
    (void)state;
    fx_start();
    /* a Content-Length over the cap, and a chunked body that grows past it */
    const char *paths[] = {"/big", "/bigstream"};
    for (int i = 0; i < 2; i++) {
        call_ctx x;
        ctx_init(&x, NULL, paths[i]);
        x.call.max_body = 1000;
        run_call(&x);
        assert_int_equal(x.status, KEEL_ETOOBIG);
        assert_non_null(strstr(x.error, "HTTP_CLIENT_MAX_BODY"));
        assert_int_equal(x.body_len, 0);
    }
    call_ctx ok;
    ctx_init(&ok, NULL, "/big");
    ok.call.max_body = 65536;
    run_call(&ok);
    assert_int_equal(ok.status, 0);
    assert_int_equal(ok.body_len, 65536);
    fx_stop();
}

static void test_retries_503_then_succeeds(void **state)
{
    (void)state;
    fx_start();
    __atomic_store_n(&flaky_fail, 2, __ATOMIC_SEQ_CST);
    call_ctx x;
    ctx_init(&x, NULL, "/flaky");
    x.call.retry = (keel_retry_opts){.max_attempts = 3, .base_ms = 5, .max_delay_ms = 10};
    run_call(&x);
    assert_int_equal(x.status, 0);
    assert_int_equal(x.http_status, 200);
    assert_int_equal(x.attempts, 3);
    assert_int_equal(__atomic_load_n(&hits, __ATOMIC_SEQ_CST), 3);
    assert_int_equal(x.ncb, 1);

    /* out of attempts: the last answer (503) is delivered as an answer */
    __atomic_store_n(&hits, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&flaky_fail, 100, __ATOMIC_SEQ_CST);
    ctx_init(&x, NULL, "/flaky");
    x.call.target = "flaky2"; /* a breaker of its own: "echo" has seen 2 failures */
    x.call.retry = (keel_retry_opts){.max_attempts = 2, .base_ms = 5, .max_delay_ms = 10};
    run_call(&x);
    assert_int_equal(x.status, 0);
    assert_int_equal(x.http_status, 503);
    assert_string_equal(x.body, "busy");
    assert_int_equal(x.attempts, 2);
    fx_stop();
}

static void test_post_is_not_retried_unless_asked(void **state)
{
    (void)state;
    fx_start();
    __atomic_store_n(&flaky_fail, 2, __ATOMIC_SEQ_CST);
    call_ctx x;
    ctx_init(&x, "POST", "/flaky");
    x.call.retry = (keel_retry_opts){.max_attempts = 3, .base_ms = 5, .max_delay_ms = 10};
    run_call(&x);
    assert_int_equal(x.http_status, 503);
    assert_int_equal(x.attempts, 1);
    assert_int_equal(__atomic_load_n(&hits, __ATOMIC_SEQ_CST), 1);

    __atomic_store_n(&hits, 0, __ATOMIC_SEQ_CST);
    ctx_init(&x, "POST", "/flaky");
    x.call.retry = (keel_retry_opts){.max_attempts = 3, .base_ms = 5, .max_delay_ms = 10};
    x.call.flags = KEEL_HTTP_RETRY_UNSAFE;
    x.call.target = "flaky2"; /* a breaker of its own: "echo" has seen a failure */
    run_call(&x);
    assert_int_equal(x.http_status, 200);
    assert_int_equal(x.attempts, 3);
    fx_stop();
}

static void test_breaker_opens_and_fails_fast(void **state)
{
    (void)state;
    fx_start();
    for (int i = 0; i < 3; i++) { /* BREAKER_FAILURE_THRESHOLD 3 (fx_start) */
        call_ctx x;
        ctx_init(&x, NULL, "/fail");
        x.call.target = "fragile";
        run_call(&x);
        assert_int_equal(x.status, 0);
        assert_int_equal(x.http_status, 500);
    }
    call_ctx x;
    ctx_init(&x, NULL, "/fail");
    x.call.target = "fragile";
    run_call(&x);
    assert_int_equal(x.rc, KEEL_EUNAVAIL);
    assert_int_equal(x.ncb, 0);
    assert_int_equal(__atomic_load_n(&hits, __ATOMIC_SEQ_CST), 3); /* no network */
    json_t *j = keel_breakers_json(F.br);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "http:fragile"),
                                                          "state")),
                        "open");
    json_decref(j);
    /* other targets are not affected */
    ctx_init(&x, NULL, "/echo");
    run_call(&x);
    assert_int_equal(x.http_status, 200);
    char *text = metrics_text();
    assert_non_null(strstr(text, "http_client_requests_total{target=\"fragile\",status=\"500\"} 3"));
    assert_non_null(
        strstr(text, "http_client_requests_total{target=\"fragile\",status=\"unavailable\"} 1"));
    keel_free(text);
    fx_stop();
}

static void test_metrics_counted(void **state)
{
    (void)state;
    fx_start();
    for (int i = 0; i < 2; i++) {
        call_ctx x;
        ctx_init(&x, NULL, "/echo");
        run_call(&x);
    }
    call_ctx x;
    ctx_init(&x, NULL, "/slow");
    x.call.timeout_ms = 100;
    run_call(&x);
    char *text = metrics_text();
    assert_non_null(strstr(text, "http_client_requests_total{target=\"echo\",status=\"200\"} 2"));
    assert_non_null(
        strstr(text, "http_client_requests_total{target=\"echo\",status=\"timeout\"} 1"));
    assert_non_null(strstr(text, "http_client_request_duration_seconds_count{target=\"echo\"} 3"));
    keel_free(text);
    fx_stop();
}

static void test_traceparent_from_the_request(void **state)
{
    (void)state;
    fx_start();
    static const char trace[] = "4bf92f3577b34da6a3ce929d0e0e4736";
    char req[256], out[4096];
    snprintf(req, sizeof(req),
             "GET /proxy HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
             "traceparent: 00-%s-00f067aa0ba902b7-01\r\n\r\n",
             trace);
    loopback_exchange(F.cport, req, out, sizeof(out));
    assert_int_equal(loopback_status(out), 200);
    /* the target saw the caller's trace, with the caller's span as parent */
    char *body = strstr(out, "\r\n\r\n");
    assert_non_null(body);
    char want[64];
    snprintf(want, sizeof(want), "GET||00-%s-", trace);
    assert_non_null(strstr(body, want));
    assert_null(strstr(body, "00f067aa0ba902b7")); /* not the incoming parent */
    const char *tp = strstr(body, "|00-");
    assert_int_equal(strcspn(tp + 1, "|"), 55);
    assert_int_equal(__atomic_load_n(&proxied_status, __ATOMIC_SEQ_CST), 0);
    fx_stop();
}

static void test_request_ends_before_the_answer(void **state)
{
    (void)state;
    fx_start();
    char out[4096];
    /* the caller's deadline (150 ms) answers 503 before the target (never) */
    int st = loopback_get(F.cport, "/proxy-slow", out, sizeof(out));
    assert_int_equal(st, 503);
    uint64_t t0 = keel_now_ms();
    while (__atomic_load_n(&proxied_status, __ATOMIC_SEQ_CST) == 1 && keel_now_ms() - t0 < 5000)
        usleep(5000);
    /* the late outcome (a timeout at 600 ms) reached the handler as a cancel */
    assert_int_equal(__atomic_load_n(&proxied_status, __ATOMIC_SEQ_CST), KEEL_ECANCELED);
    fx_stop();
}

static void test_worker_stop_cancels_calls(void **state)
{
    (void)state;
    fx_start();
    /* one attempt on the wire, one waiting for its retry */
    call_ctx running, waiting;
    ctx_init(&running, NULL, "/slow");
    running.call.timeout_ms = 10000;
    __atomic_store_n(&flaky_fail, 1000, __ATOMIC_SEQ_CST);
    ctx_init(&waiting, NULL, "/flaky");
    waiting.call.retry = (keel_retry_opts){.max_attempts = 5, .base_ms = 20000,
                                           .max_delay_ms = 20000};
    keel_worker *w = keel_server_worker(F.caller, 0);
    assert_int_equal(keel_worker_post(w, start_call, &running), 0);
    assert_int_equal(keel_worker_post(w, start_call, &waiting), 0);
    uint64_t t0 = keel_now_ms();
    while (__atomic_load_n(&hits, __ATOMIC_SEQ_CST) < 2 && keel_now_ms() - t0 < 5000)
        usleep(5000);
    usleep(100 * 1000);
    testsrv_drain(F.caller); /* every loop closed within 5 s */
    assert_int_equal(__atomic_load_n(&running.done, __ATOMIC_SEQ_CST), 1);
    assert_int_equal(__atomic_load_n(&waiting.done, __ATOMIC_SEQ_CST), 1);
    assert_int_equal(running.status, KEEL_ECANCELED);
    assert_int_equal(waiting.status, KEEL_ECANCELED);
    assert_int_equal(running.ncb, 1);
    assert_int_equal(waiting.ncb, 1);
    fx_stop();
}

/* A call whose first attempt has not started yet when the worker stops. */
static void test_call_started_just_before_stop(void **state)
{
    (void)state;
    fx_start();
    call_ctx x;
    ctx_init(&x, NULL, "/echo");
    assert_int_equal(keel_worker_post(keel_server_worker(F.caller, 0), start_call, &x), 0);
    testsrv_drain(F.caller);
    assert_int_equal(__atomic_load_n(&x.done, __ATOMIC_SEQ_CST), 1);
    assert_int_equal(x.ncb + (x.rc < 0), 1); /* called back once, or refused */
    assert_true(x.status == KEEL_ECANCELED || x.status == 0);
    fx_stop();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_and_post_with_headers_and_body),
        cmocka_unit_test(test_borrowed_body),
        cmocka_unit_test(test_refuses_bad_calls_without_calling_back),
        cmocka_unit_test(test_connections_are_reused),
        cmocka_unit_test(test_refused_connection_fails),
        cmocka_unit_test(test_connect_timeout),
        cmocka_unit_test(test_total_timeout),
        cmocka_unit_test(test_body_cap),
        cmocka_unit_test(test_retries_503_then_succeeds),
        cmocka_unit_test(test_post_is_not_retried_unless_asked),
        cmocka_unit_test(test_breaker_opens_and_fails_fast),
        cmocka_unit_test(test_metrics_counted),
        cmocka_unit_test(test_traceparent_from_the_request),
        cmocka_unit_test(test_request_ends_before_the_answer),
        cmocka_unit_test(test_worker_stop_cancels_calls),
        cmocka_unit_test(test_call_started_just_before_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
