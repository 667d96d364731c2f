/* test_server.c — the server in-process: routes, middleware order and
 * completion hooks, suspension on the work pool, a late answer after the
 * client left, pipelining, and a drain that ends with every loop closed. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "loopback.h"
#include "testsrv.h"

#include "keel/keel.h"

typedef struct counters {
    int requests;
    int completes;
    int work_done;
    int work_canceled;
    int last_status;
    char order[64];
} counters;

static counters C;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static keel_flow mw_a(keel_req *r, void *data)
{
    (void)data;
    pthread_mutex_lock(&mu);
    strcat(C.order, "a");
    C.requests++;
    pthread_mutex_unlock(&mu);
    keel_res_header(r, "X-A", "1");
    return KEEL_NEXT;
}

static keel_flow mw_b(keel_req *r, void *data)
{
    (void)data;
    (void)r;
    pthread_mutex_lock(&mu);
    strcat(C.order, "b");
    pthread_mutex_unlock(&mu);
    return KEEL_NEXT;
}

static void mw_complete(keel_req *r, void *data)
{
    (void)data;
    pthread_mutex_lock(&mu);
    C.completes++;
    C.last_status = keel_res_get_status(r);
    pthread_mutex_unlock(&mu);
}

static keel_flow h_hello(keel_req *r)
{
    keel_str who = keel_req_param(r, "who");
    char body[64];
    int n = snprintf(body, sizeof(body), "hi %.*s", (int)who.len, who.ptr);
    keel_respond(r, 200, "text/plain", body, (size_t)n);
    return KEEL_DONE;
}

static void sleep_work(void *arg)
{
    usleep((useconds_t)(uintptr_t)arg * 1000);
}

static void after_work(keel_req *r, void *arg, int status)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    if (status == 0)
        C.work_done++;
    else
        C.work_canceled++;
    pthread_mutex_unlock(&mu);
    if (status == 0)
        keel_respond_text(r, 200, "worked");
    else
        assert_int_equal(keel_respond_text(r, 200, "late"), KEEL_EALREADY);
}

static keel_flow h_work(keel_req *r)
{
    keel_str ms = keel_req_query_param(r, "ms");
    uintptr_t v = ms.ptr ? (uintptr_t)atoi(ms.ptr) : 10;
    assert_int_equal(keel_req_submit(r, sleep_work, after_work, (void *)v), 0);
    return KEEL_SUSPEND;
}

/* Response header names and values keel_res_header accepts (rc 0) or
 * refuses; keel_res_header_set_add answers the same. */
typedef struct hdr_case {
    const char *name, *value;
    int rc;
} hdr_case;

static const hdr_case hdr_cases[] = {
    {"X-Ok", "v", 0},
    {"X-Tab", "a\tb", 0},
    {"X-Utf8", "caf\xc3\xa9", 0},
    {"X-Del", "a\x7f", 0},
    {"X-Empty", "", 0},
    {"Dates", "same prefix as date", 0},
    /* long enough for the eight-bytes-at-a-time checks, the bad byte in
     * a whole word or in the tail */
    {"X-Long-Header-Name-Ok", "0123456789\tabcdef caf\xc3\xa9 \x7f end", 0},
    {"X-Long-Header-Name:Colon", "v", KEEL_EINVAL},
    {"X-Long-Header-Name\x7f", "v", KEEL_EINVAL},
    {"X-Long-Header-Name\xc3\xa9x", "v", KEEL_EINVAL},
    {"X-Long-Header Name", "v", KEEL_EINVAL},
    {"X-Long-CR", "0123456789abcdef\r", KEEL_EINVAL},
    {"X-Long-LF", "01234567\n9abcdef0123", KEEL_EINVAL},
    {"X-Long-Ctl", "0123456789abcde\x1f", KEEL_EINVAL},
    {"X-Long-Nul-Free", "abcdefgh\x01" "abcdefgh", KEEL_EINVAL},
    {"", "v", KEEL_EINVAL},
    {"X Sp", "v", KEEL_EINVAL},
    {"X:C", "v", KEEL_EINVAL},
    {"X-\xc3\xa9", "v", KEEL_EINVAL},
    {"X-Del\x7f", "v", KEEL_EINVAL},
    {"X-CR", "a\rb", KEEL_EINVAL},
    {"X-LF", "a\nb", KEEL_EINVAL},
    {"X-Ctl", "a\x01", KEEL_EINVAL},
    {"Content-Length", "1", KEEL_EINVAL},
    {"date", "x", KEEL_EINVAL},
    {"CONNECTION", "x", KEEL_EINVAL},
    {"Transfer-Encoding", "x", KEEL_EINVAL},
};
#define NHDR (sizeof(hdr_cases) / sizeof(hdr_cases[0]))

static keel_res_header_set *defaults; /* built by the test before start */

/* Answers each case's keel_res_header and keel_res_header_set_add codes
 * in the body (asserted by the test thread), then sets its own x-def-b
 * and adds the defaults: theirs for A and C, not B. */
static keel_flow h_headers(keel_req *r)
{
    char body[1024];
    size_t n = 0;
    for (size_t i = 0; i < NHDR; i++) {
        keel_res_header_set *t = keel_res_header_set_new();
        int a = keel_res_header(r, hdr_cases[i].name, hdr_cases[i].value);
        int b = keel_res_header_set_add(t, hdr_cases[i].name, hdr_cases[i].value);
        keel_res_header_set_free(t);
        n += (size_t)snprintf(body + n, sizeof(body) - n, "%s%d", a == hdr_cases[i].rc &&
                              b == hdr_cases[i].rc ? "" : "FAIL", (int)i);
    }
    keel_res_set_header(r, "x-def-b", "mine");
    keel_res_add_header_set(r, defaults);
    keel_respond(r, 200, "text/plain", body, n);
    return KEEL_DONE;
}

/* The defaults after headers set another way: /headers/none (no line
 * before: appended at once), /headers/other (a line whose name has a
 * member's length but is none of them), /headers/plain (keel_res_header
 * of member C, in another case). */
static keel_flow h_headers_mode(keel_req *r)
{
    keel_str mode = keel_req_param(r, "mode");
    if (keel_str_eq(mode, keel_str_c("other")))
        keel_res_header(r, "X-Def-Z", "z");
    else if (keel_str_eq(mode, keel_str_c("plain")))
        keel_res_header(r, "X-DEF-C", "mine");
    keel_res_add_header_set(r, defaults);
    keel_respond(r, 200, "text/plain", "ok", 2);
    return KEEL_DONE;
}

static const keel_route routes[] = {
    {.name = "hello", .method = "GET", .path = "/hello/:who", .handler = h_hello},
    {.name = "work", .method = "GET", .path = "/work", .handler = h_work},
    {.name = "headers", .method = "GET", .path = "/headers", .handler = h_headers},
    {.name = "headers_mode", .method = "GET", .path = "/headers/:mode", .handler = h_headers_mode},
};

static keel_server *start(void)
{
    memset(&C, 0, sizeof(C));
    keel_config cfg;
    testsrv_config(&cfg);
    cfg.work_threads = 2;
    cfg.log_level = KEEL_LOG_WARN;
    keel_server *s = testsrv_new(&cfg);
    keel_config_close(&cfg);
    keel_middleware a = {.name = "a", .on_request = mw_a, .on_complete = mw_complete};
    keel_middleware b = {.name = "b", .on_request = mw_b};
    keel_server_use(s, &a);
    keel_server_use(s, &b);
    assert_int_equal(keel_server_add_routes(s, routes, sizeof(routes) / sizeof(routes[0])), 0);
    assert_int_equal(keel_server_start(s), 0);
    assert_true(keel_server_port(s) > 0);
    assert_int_equal(keel_server_get_state(s), KEEL_STATE_SERVING);
    return s;
}

static void stop(keel_server *s)
{
    keel_server_drain(s);
    assert_int_equal(keel_server_get_state(s), KEEL_STATE_DRAINING);
    /* every worker loop ran out of handles and closed */
    assert_int_equal(keel_server_wait(s, 5000), 0);
    testsrv_free(s);
}

static void test_pipelined_in_order(void **state)
{
    (void)state;
    keel_server *s = start();
    char buf[8192];
    loopback_exchange(keel_server_port(s),
                      "GET /hello/one HTTP/1.1\r\nHost: t\r\n\r\n"
                      "GET /hello/t%C3%A9 HTTP/1.1\r\nHost: t\r\n\r\n"
                      "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n"
                      "GET /hello/three HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                      buf, sizeof(buf));
    char *one = strstr(buf, "hi one"), *two = strstr(buf, "hi t\xc3\xa9"),
         *nf = strstr(buf, "404 Not Found"), *three = strstr(buf, "hi three");
    assert_non_null(one);
    assert_non_null(two);
    assert_non_null(nf);
    assert_non_null(three);
    assert_true(one < two && two < nf && nf < three);
    assert_int_equal(loopback_count(buf, "X-A: 1\r\n"), 4);
    assert_int_equal(loopback_count(buf, "Connection: close\r\n"), 1);
    stop(s);
    assert_int_equal(C.requests, 4);
    assert_int_equal(C.completes, 4);
    assert_string_equal(C.order, "abababab");
}

static void test_work_pool_resumes(void **state)
{
    (void)state;
    keel_server *s = start();
    char buf[4096];
    loopback_exchange(keel_server_port(s),
                      "GET /work?ms=20 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", buf,
                      sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 200 OK"));
    assert_non_null(strstr(buf, "worked"));
    stop(s);
    assert_int_equal(C.work_done, 1);
}

static void test_client_gone_cancels(void **state)
{
    (void)state;
    keel_server *s = start();
    int fd = connect_to(keel_server_port(s), 5);
    const char *req = "GET /work?ms=300 HTTP/1.1\r\nHost: t\r\n\r\n";
    assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    usleep(100 * 1000);
    close(fd); /* leaves while the job runs */
    usleep(500 * 1000);
    stop(s);
    assert_int_equal(C.work_canceled, 1);
    assert_int_equal(C.completes, 1);
    assert_int_equal(C.last_status, 499);
}

static void test_response_headers(void **state)
{
    (void)state;
    defaults = keel_res_header_set_new();
    assert_int_equal(keel_res_header_set_add(defaults, "X-Def-A", "1"), 0);
    assert_int_equal(keel_res_header_set_add(defaults, "X-Def-B", "2"), 0);
    assert_int_equal(keel_res_header_set_add(defaults, "X-Def-C", "3"), 0);
    assert_int_equal(keel_res_header_set_add(defaults, "x-def-a", "again"), KEEL_EINVAL);
    keel_res_header_set_free(NULL);
    keel_server *s = start();
    char buf[8192];
    loopback_exchange(keel_server_port(s),
                      "GET /headers HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", buf,
                      sizeof(buf));
    char none[2048], other[2048], plain[2048];
    loopback_exchange(keel_server_port(s),
                      "GET /headers/none HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                      none, sizeof(none));
    loopback_exchange(keel_server_port(s),
                      "GET /headers/other HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                      other, sizeof(other));
    loopback_exchange(keel_server_port(s),
                      "GET /headers/plain HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                      plain, sizeof(plain));
    stop(s);
    assert_non_null(strstr(none, "\r\nX-Def-A: 1\r\nX-Def-B: 2\r\nX-Def-C: 3\r\n"));
    assert_non_null(
        strstr(other, "\r\nX-Def-Z: z\r\nX-Def-A: 1\r\nX-Def-B: 2\r\nX-Def-C: 3\r\n"));
    assert_non_null(strstr(plain, "\r\nX-DEF-C: mine\r\nX-Def-A: 1\r\nX-Def-B: 2\r\n"));
    assert_null(strstr(plain, "X-Def-C"));
    keel_res_header_set_free(defaults);
    defaults = NULL;
    assert_null(strstr(buf, "FAIL"));
    assert_non_null(strstr(buf, "\r\nX-Ok: v\r\nX-Tab: a\tb\r\nX-Utf8: caf\xc3\xa9\r\n"
                                "X-Del: a\x7f\r\nX-Empty: \r\nDates: same prefix as date\r\n"
                                "X-Long-Header-Name-Ok: 0123456789\tabcdef caf\xc3\xa9 \x7f end\r\n"
                                "x-def-b: mine\r\nX-Def-A: 1\r\nX-Def-C: 3\r\n"));
    assert_null(strstr(buf, "X-Def-B"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipelined_in_order),
        cmocka_unit_test(test_work_pool_resumes),
        cmocka_unit_test(test_client_gone_cancels),
        cmocka_unit_test(test_response_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
