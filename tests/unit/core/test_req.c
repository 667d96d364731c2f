/* test_req.c — the request lifetime of src/core/req.c (busy, holds,
 * finished, completed) through a real server on loopback: a handler that
 * suspends and answers from a timer; keel_req_hold keeping a finished
 * request (and its arena) alive, even while its connection serves the
 * next request; a late answer after the handler deadline refused with
 * KEEL_EALREADY while the client saw one 503; keel_req_submit's `after`
 * exactly once with KEEL_ECANCELED when the client left first, and a
 * queued job whose client left never started. The sanitizer build turns
 * a request recycled too early into a use-after-free and a lost one into
 * a leak. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <cmocka.h>

#include "loopback.h"
#include "testsrv.h"

#include "keel/keel.h"

#define JOBS 4
#define BIG 20000 /* past the request's inline arena block: a heap chunk */

static struct {
    int started;          /* handlers entered */
    int completes;        /* on_complete hooks */
    char statuses[64];    /* every completed status, in order */
    int timer_fired;      /* timers that ran their answer */
    int timer_rc;         /* keel_respond's answer from the timer */
    int timer_finished;   /* keel_req_is_finished when the timer ran */
    int timer_arena_ok;   /* the arena string was intact */
    int defers_at_timer;  /* arena cleanups run before the unhold */
    int defers;           /* arena cleanups run in all */
    int work_started[JOBS], work_runs[JOBS];
    int after_calls[JOBS], after_status[JOBS], after_rc[JOBS];
    int release_work;
} S;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

/* Waits (5 s at most) until cond, read under the lock, holds. */
#define WAIT_FOR(cond_)                                                                  \
    do {                                                                                 \
        uint64_t end_ = keel_now_ms() + 5000;                                            \
        for (;;) {                                                                       \
            pthread_mutex_lock(&mu);                                                     \
            int ok_ = (cond_);                                                           \
            pthread_mutex_unlock(&mu);                                                   \
            if (ok_)                                                                     \
                break;                                                                   \
            if (keel_now_ms() > end_)                                                    \
                fail_msg("timed out waiting for %s", #cond_);                            \
            usleep(2000);                                                                \
        }                                                                                \
    } while (0)

static void on_complete(keel_req *r, void *data)
{
    (void)data;
    pthread_mutex_lock(&mu);
    S.completes++;
    snprintf(S.statuses + strlen(S.statuses), sizeof(S.statuses) - strlen(S.statuses), "%s%d",
             S.statuses[0] ? "," : "", keel_res_get_status(r));
    pthread_mutex_unlock(&mu);
}

static void count_defer(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    S.defers++;
    pthread_mutex_unlock(&mu);
}

/* ---------------------------------------------------------------- timers */

typedef struct later {
    uv_timer_t t;
    keel_req *r;
    char *big; /* in r's arena */
} later;

static void free_later(uv_handle_t *h)
{
    keel_free(h->data);
}

static void on_later(uv_timer_t *t)
{
    later *l = t->data;
    keel_req *r = l->r;
    int finished = keel_req_is_finished(r);
    int arena_ok = !l->big || (l->big[0] == 'h' && l->big[BIG - 2] == 'h' && l->big[BIG - 1] == 0);
    pthread_mutex_lock(&mu);
    int defers = S.defers;
    pthread_mutex_unlock(&mu);
    int rc = keel_respond_text(r, 200, finished ? "too late" : "later");
    keel_req_unhold(r); /* may release r: not touched after this */
    pthread_mutex_lock(&mu);
    S.timer_fired++;
    S.timer_rc = rc;
    S.timer_finished = finished;
    S.timer_arena_ok = arena_ok;
    S.defers_at_timer = defers;
    pthread_mutex_unlock(&mu);
    uv_close((uv_handle_t *)t, free_later);
}

/* Holds r and answers (or tries to) from a timer in ms. */
static later *answer_later(keel_req *r, uint64_t ms)
{
    later *l = keel_calloc(1, sizeof(*l));
    l->r = r;
    uv_timer_init(keel_worker_loop(keel_req_worker(r)), &l->t);
    l->t.data = l;
    keel_req_hold(r);
    uv_timer_start(&l->t, on_later, ms, 0);
    return l;
}

static void note_start(void)
{
    pthread_mutex_lock(&mu);
    S.started++;
    pthread_mutex_unlock(&mu);
}

/* ---------------------------------------------------------------- handlers */

static keel_flow h_hello(keel_req *r)
{
    keel_respond_text(r, 200, "hello");
    return KEEL_DONE;
}

/* Suspends; a timer answers after ?ms= (default 30). */
static keel_flow h_later(keel_req *r)
{
    note_start();
    keel_str ms = keel_req_query_param(r, "ms");
    answer_later(r, ms.ptr ? (uint64_t)atoi(ms.ptr) : 30);
    return KEEL_SUSPEND;
}

/* Answers at once but holds the request: a timer looks at it later. */
static keel_flow h_held(keel_req *r)
{
    note_start();
    later *l = answer_later(r, 100);
    l->big = keel_arena_alloc(keel_req_arena(r), BIG);
    memset(l->big, 'h', BIG - 1);
    l->big[BIG - 1] = 0;
    keel_arena_defer(keel_req_arena(r), count_defer, NULL);
    keel_respond_text(r, 200, "done");
    return KEEL_DONE;
}

/* Past its deadline before the timer answers. */
static keel_flow h_slow(keel_req *r)
{
    note_start();
    answer_later(r, 700);
    return KEEL_SUSPEND;
}

static void blocking_work(void *arg)
{
    int id = (int)(uintptr_t)arg;
    pthread_mutex_lock(&mu);
    S.work_started[id]++;
    uint64_t end = keel_now_ms() + 5000;
    while (!S.release_work && keel_now_ms() < end) {
        pthread_mutex_unlock(&mu);
        usleep(1000);
        pthread_mutex_lock(&mu);
    }
    S.work_runs[id]++;
    pthread_mutex_unlock(&mu);
}

static void after_work(keel_req *r, void *arg, int status)
{
    int id = (int)(uintptr_t)arg;
    int rc = keel_respond_text(r, 200, "worked");
    pthread_mutex_lock(&mu);
    S.after_calls[id]++;
    S.after_status[id] = status;
    S.after_rc[id] = rc;
    pthread_mutex_unlock(&mu);
}

static keel_flow h_work(keel_req *r)
{
    note_start();
    keel_str id = keel_req_query_param(r, "id");
    assert_non_null(id.ptr);
    assert_int_equal(keel_req_submit(r, blocking_work, after_work, (void *)(uintptr_t)atoi(id.ptr)),
                     0);
    return KEEL_SUSPEND;
}

/* A middleware that suspends requests to /gated and resumes the chain
 * from a timer: the handler then runs from the timer callback. */
typedef struct gate {
    uv_timer_t t;
    keel_req *r;
} gate;

static void on_gate(uv_timer_t *t)
{
    gate *g = t->data;
    keel_req *r = g->r;
    keel_req_resume(r, KEEL_NEXT); /* runs the handler */
    pthread_mutex_lock(&mu);
    S.timer_finished = keel_req_is_finished(r);
    S.timer_fired++;
    pthread_mutex_unlock(&mu);
    keel_req_unhold(r);
    uv_close((uv_handle_t *)t, free_later);
}

static keel_flow mw_gate(keel_req *r, void *data)
{
    (void)data;
    keel_str path = keel_req_path(r);
    if (!keel_str_eq(path, keel_str_c("/gated")))
        return KEEL_NEXT;
    gate *g = keel_calloc(1, sizeof(*g));
    g->r = r;
    uv_timer_init(keel_worker_loop(keel_req_worker(r)), &g->t);
    g->t.data = g;
    keel_req_hold(r);
    uv_timer_start(&g->t, on_gate, 30, 0);
    return KEEL_SUSPEND;
}

static keel_flow h_gated(keel_req *r)
{
    note_start();
    keel_respond_text(r, 200, "through the gate");
    return KEEL_DONE;
}

static const keel_route routes[] = {
    {.name = "gated", .method = "GET", .path = "/gated", .handler = h_gated},
    {.name = "hello", .method = "GET", .path = "/hello", .handler = h_hello},
    {.name = "later", .method = "GET", .path = "/later", .handler = h_later},
    {.name = "held", .method = "GET", .path = "/held", .handler = h_held},
    {.name = "slow", .method = "GET", .path = "/slow", .handler = h_slow, .timeout_ms = 100},
    {.name = "slow_default", .method = "GET", .path = "/slow-default", .handler = h_slow},
    {.name = "work", .method = "GET", .path = "/work", .handler = h_work},
};

/* ---------------------------------------------------------------- server */

static keel_server *start(uint64_t handler_timeout_ms)
{
    memset(&S, 0, sizeof(S));
    keel_config cfg;
    testsrv_config(&cfg);
    cfg.work_threads = 2;
    cfg.handler_timeout_ms = handler_timeout_ms;
    cfg.log_level = KEEL_LOG_ERROR;
    keel_server *s = testsrv_new(&cfg);
    keel_config_close(&cfg);
    keel_middleware m = {.name = "observe", .on_complete = on_complete};
    keel_middleware g = {.name = "gate", .on_request = mw_gate};
    keel_server_use(s, &m);
    keel_server_use(s, &g);
    assert_int_equal(keel_server_add_routes(s, routes, sizeof(routes) / sizeof(routes[0])), 0);
    assert_int_equal(keel_server_start(s), 0);
    return s;
}

static void send_all(int fd, const char *req)
{
    assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
}

/* Reads one response with a Content-Length body. */
static size_t read_response(int fd, char *out, size_t cap)
{
    size_t n = 0;
    for (;;) {
        out[n] = '\0';
        char *end = strstr(out, "\r\n\r\n");
        if (end) {
            char *cl = strstr(out, "Content-Length: ");
            size_t want = (size_t)(end + 4 - out) + (cl && cl < end ? (size_t)atol(cl + 16) : 0);
            if (n >= want)
                return n;
        }
        assert_true(n + 1 < cap);
        ssize_t k = read(fd, out + n, cap - n - 1);
        if (k <= 0)
            fail_msg("connection ended before a whole response (%zu bytes)", n);
        n += (size_t)k;
    }
}

/* ---------------------------------------------------------------- tests */

static void test_suspend_answer_later(void **state)
{
    (void)state;
    keel_server *s = start(30000);
    int fd = connect_to(keel_server_port(s), 5);
    send_all(fd, "GET /later?ms=50 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    char buf[4096];
    loopback_read_all(fd, buf, sizeof(buf));
    close(fd);
    assert_int_equal(loopback_count(buf, "HTTP/1.1 "), 1);
    assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(buf, "\r\n\r\nlater"));
    testsrv_stop(s);
    assert_int_equal(S.timer_fired, 1);
    assert_int_equal(S.timer_rc, 0);
    assert_int_equal(S.completes, 1);
    assert_string_equal(S.statuses, "200");
}

static void test_middleware_suspends_then_resumes(void **state)
{
    (void)state;
    keel_server *s = start(30000);
    int fd = connect_to(keel_server_port(s), 5);
    send_all(fd, "GET /gated HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    char buf[4096];
    loopback_read_all(fd, buf, sizeof(buf));
    close(fd);
    assert_int_equal(loopback_count(buf, "HTTP/1.1 "), 1);
    assert_non_null(strstr(buf, "\r\n\r\nthrough the gate"));
    WAIT_FOR(S.timer_fired == 1);
    testsrv_stop(s);
    assert_int_equal(S.started, 1);        /* the handler ran once, after the resume */
    assert_int_equal(S.timer_finished, 1); /* and answered inside keel_req_resume */
    assert_int_equal(S.completes, 1);
    assert_string_equal(S.statuses, "200");
}

static void test_hold_outlives_response(void **state)
{
    (void)state;
    keel_server *s = start(30000);
    int fd = connect_to(keel_server_port(s), 5);
    /* the held request's connection goes on to the next request while
     * the first is still held: the two must not share a request object */
    send_all(fd, "GET /held HTTP/1.1\r\nHost: t\r\n\r\n"
                 "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    char buf[4096];
    loopback_read_all(fd, buf, sizeof(buf));
    close(fd);
    assert_non_null(strstr(buf, "\r\n\r\ndone"));
    assert_non_null(strstr(buf, "\r\n\r\nhello"));
    assert_int_equal(loopback_count(buf, "HTTP/1.1 200 OK\r\n"), 2);
    WAIT_FOR(S.timer_fired == 1);
    testsrv_stop(s);
    assert_int_equal(S.completes, 2);
    assert_string_equal(S.statuses, "200,200");
    assert_int_equal(S.timer_finished, 1);
    assert_int_equal(S.timer_rc, KEEL_EALREADY);
    assert_true(S.timer_arena_ok);    /* the arena outlived the response */
    assert_int_equal(S.defers_at_timer, 0); /* not released while held */
    assert_int_equal(S.defers, 1);    /* released once, at the unhold */
}

static void test_hold_across_disconnect(void **state)
{
    (void)state;
    keel_server *s = start(30000);
    int fd = connect_to(keel_server_port(s), 5);
    send_all(fd, "GET /later?ms=800 HTTP/1.1\r\nHost: t\r\n\r\n");
    WAIT_FOR(S.started == 1);
    close(fd); /* leaves before the answer */
    WAIT_FOR(S.completes == 1);
    pthread_mutex_lock(&mu);
    int fired = S.timer_fired;
    pthread_mutex_unlock(&mu);
    assert_int_equal(fired, 0); /* ended by the disconnect, not the timer */
    WAIT_FOR(S.timer_fired == 1);
    testsrv_stop(s);
    assert_string_equal(S.statuses, "499");
    assert_int_equal(S.timer_finished, 1);
    assert_int_equal(S.timer_rc, KEEL_EALREADY);
    assert_int_equal(S.completes, 1);
}

/* The handler's timer answers at 700 ms, past a 100 ms deadline: the
 * client gets one 503 and the same connection then serves the next
 * request; the late answer goes nowhere. */
static void late_after_deadline(const char *path, uint64_t handler_timeout_ms)
{
    keel_server *s = start(handler_timeout_ms);
    int fd = connect_to(keel_server_port(s), 5);
    char req[128], buf[8192];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    uint64_t t0 = keel_now_ms();
    send_all(fd, req);
    size_t n = read_response(fd, buf, sizeof(buf));
    uint64_t took = keel_now_ms() - t0;
    assert_non_null(strstr(buf, "HTTP/1.1 503 "));
    assert_non_null(strstr(buf, "took too long"));
    assert_true(took >= 100 && took < 700);
    pthread_mutex_lock(&mu);
    int fired = S.timer_fired;
    pthread_mutex_unlock(&mu);
    assert_int_equal(fired, 0); /* the 503 came from the deadline */
    WAIT_FOR(S.timer_fired == 1);
    send_all(fd, "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    loopback_read_all(fd, buf + n, sizeof(buf) - n);
    close(fd);
    testsrv_stop(s);
    assert_int_equal(loopback_count(buf, "HTTP/1.1 503 "), 1);
    assert_int_equal(loopback_count(buf, "HTTP/1.1 "), 2);
    assert_non_null(strstr(buf, "\r\n\r\nhello"));
    assert_null(strstr(buf, "too late"));
    assert_int_equal(S.timer_finished, 1);
    assert_int_equal(S.timer_rc, KEEL_EALREADY);
    assert_int_equal(S.completes, 2);
    assert_string_equal(S.statuses, "503,200");
}

static void test_late_after_route_timeout(void **state)
{
    (void)state;
    late_after_deadline("/slow", 30000); /* the route's timeout_ms = 100 */
}

static void test_late_after_handler_timeout(void **state)
{
    (void)state;
    late_after_deadline("/slow-default", 100); /* HANDLER_TIMEOUT */
}

static void test_after_runs_once_canceled(void **state)
{
    (void)state;
    keel_server *s = start(30000);
    unsigned port = keel_server_port(s);
    /* jobs 0 and 1 take both pool threads; job 2 waits in the queue */
    int fd0 = connect_to(port, 5), fd1 = connect_to(port, 5), fd2 = connect_to(port, 5);
    send_all(fd0, "GET /work?id=0 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    send_all(fd1, "GET /work?id=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    WAIT_FOR(S.work_started[0] == 1 && S.work_started[1] == 1);
    send_all(fd2, "GET /work?id=2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    WAIT_FOR(S.started == 3);
    /* the clients of job 1 (running) and job 2 (queued) leave */
    close(fd1);
    close(fd2);
    WAIT_FOR(S.completes == 2);
    assert_string_equal(S.statuses, "499,499");
    pthread_mutex_lock(&mu);
    int early = S.after_calls[1] + S.after_calls[2];
    S.release_work = 1;
    pthread_mutex_unlock(&mu);
    assert_int_equal(early, 0); /* not before the work ends */
    char buf[4096];
    loopback_read_all(fd0, buf, sizeof(buf));
    close(fd0);
    assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(buf, "\r\n\r\nworked"));
    WAIT_FOR(S.after_calls[1] == 1 && S.after_calls[2] == 1);
    testsrv_stop(s); /* waits for every job: a second `after` would show below */
    /* the job whose client stayed */
    assert_int_equal(S.after_calls[0], 1);
    assert_int_equal(S.after_status[0], 0);
    assert_int_equal(S.after_rc[0], 0);
    /* the running job: ran to its end, then `after` once, canceled */
    assert_int_equal(S.work_runs[1], 1);
    assert_int_equal(S.after_calls[1], 1);
    assert_int_equal(S.after_status[1], KEEL_ECANCELED);
    assert_int_equal(S.after_rc[1], KEEL_EALREADY);
    /* the queued job: never started, `after` once, canceled */
    assert_int_equal(S.work_started[2], 0);
    assert_int_equal(S.work_runs[2], 0);
    assert_int_equal(S.after_calls[2], 1);
    assert_int_equal(S.after_status[2], KEEL_ECANCELED);
    assert_int_equal(S.after_rc[2], KEEL_EALREADY);
    assert_int_equal(S.completes, 3);
    assert_string_equal(S.statuses, "499,499,200");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_suspend_answer_later),
        cmocka_unit_test(test_middleware_suspends_then_resumes),
        cmocka_unit_test(test_hold_outlives_response),
        cmocka_unit_test(test_hold_across_disconnect),
        cmocka_unit_test(test_late_after_route_timeout),
        cmocka_unit_test(test_late_after_handler_timeout),
        cmocka_unit_test(test_after_runs_once_canceled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
