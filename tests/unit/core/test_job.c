/* test_job.c — request-scoped jobs (src/core/job.c): a job's state in the
 * request arena across hops, its cleanup run exactly once whatever way the
 * request ended, the one submit path answering 503 with Retry-After when
 * the work queue is full, and `after` getting KEEL_ECANCELED when the
 * request ended first (deadline, disconnect). Every test ends with the
 * server drained and its loops closed, so every request has been released
 * and the counters are final; under ASan a job whose cleanup did not run
 * leaks its heap block. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "loopback.h"
#include "testsrv.h"

#include "keel/keel.h"

#define SECRET "correct horse battery staple"

typedef struct counters {
    int cleanups;       /* job cleanups run */
    int cleanup_intact; /* ... that saw the job as the handler left it */
    int works;          /* work functions run */
    int after_ok;
    int after_canceled;
    int late_refused;   /* a response from a canceled `after`: KEEL_EALREADY */
} counters;

static counters C;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int running; /* work functions in progress (atomic) */

#define COUNT(field) testsrv_count(&mu, &C.field)

/* A job of two hops: sleep ms then set value; optionally double it on a
 * second hop. `heap` must be freed by the cleanup (ASan: a leak if not). */
typedef struct tjob {
    char secret[64];
    unsigned ms;
    int hops;
    int value;
    char *heap;
} tjob;

static void tjob_cleanup(void *arg)
{
    tjob *j = arg;
    pthread_mutex_lock(&mu);
    C.cleanups++;
    if (!strcmp(j->secret, SECRET) && j->heap && !strcmp(j->heap, "owned"))
        C.cleanup_intact++;
    pthread_mutex_unlock(&mu);
    keel_free(j->heap);
}

static void work_step(void *arg)
{
    tjob *j = arg;
    __atomic_add_fetch(&running, 1, __ATOMIC_SEQ_CST);
    usleep(j->ms * 1000);
    j->value = j->value ? j->value * 2 : 21;
    COUNT(works);
    __atomic_sub_fetch(&running, 1, __ATOMIC_SEQ_CST);
}

static void job_after(keel_req *r, void *arg, int status)
{
    tjob *j = arg;
    if (status < 0) {
        assert_int_equal(status, KEEL_ECANCELED);
        COUNT(after_canceled);
        if (keel_respond_text(r, 200, "late") == KEEL_EALREADY)
            COUNT(late_refused);
        return; /* nothing to free: the job goes with the request */
    }
    COUNT(after_ok);
    if (--j->hops > 0) { /* the same job, on to the next hop */
        keel_req_job_submit(r, NULL, work_step, job_after, j);
        return;
    }
    char body[64];
    int n = snprintf(body, sizeof(body), "value=%d", j->value);
    keel_respond(r, 200, "text/plain", body, (size_t)n);
}

static keel_flow h_job(keel_req *r)
{
    tjob *j = KEEL_REQ_JOB(r, tjob, tjob_cleanup);
    assert_non_null(j);
    assert_int_equal(j->value, 0); /* zeroed */
    assert_int_equal((uintptr_t)j % _Alignof(max_align_t), 0);
    snprintf(j->secret, sizeof(j->secret), "%s", SECRET);
    j->heap = keel_strdup("owned");
    keel_str ms = keel_req_query_param(r, "ms"), hops = keel_req_query_param(r, "hops");
    j->ms = ms.ptr ? (unsigned)atoi(ms.ptr) : 5;
    j->hops = hops.ptr ? atoi(hops.ptr) : 1;
    return keel_req_job_submit(r, NULL, work_step, job_after, j);
}

/* A job without a cleanup, answered at once: released all the same. */
static keel_flow h_plain(keel_req *r)
{
    int *n = keel_req_job_new(r, sizeof(int) * 100, NULL);
    for (int i = 0; i < 100; i++)
        assert_int_equal(n[i], 0);
    keel_respond_text(r, 200, "plain");
    return KEEL_DONE;
}

static const keel_route routes[] = {
    {.name = "job", .method = "GET", .path = "/job", .handler = h_job},
    {.name = "plain", .method = "GET", .path = "/plain", .handler = h_plain},
    /* the same, with a deadline the job outlives */
    {.name = "slow", .method = "GET", .path = "/slow", .handler = h_job, .timeout_ms = 100},
};

static keel_server *start(unsigned threads, uint64_t queue_max)
{
    memset(&C, 0, sizeof(C));
    keel_config cfg;
    testsrv_config(&cfg);
    cfg.work_threads = threads;
    cfg.work_queue_max = queue_max;
    cfg.log_level = KEEL_LOG_FATAL; /* the deadline test logs a warning */
    keel_server *s = testsrv_new(&cfg);
    keel_config_close(&cfg);
    assert_int_equal(keel_server_add_routes(s, routes, sizeof(routes) / sizeof(routes[0])), 0);
    assert_int_equal(keel_server_start(s), 0);
    return s;
}

static int get(keel_server *s, const char *path, char *out, size_t cap)
{
    return loopback_get(keel_server_port(s), path, out, cap);
}

static void wait_until(int (*cond)(keel_server *), keel_server *s)
{
    uint64_t t0 = keel_now_ms();
    while (!cond(s) && keel_now_ms() - t0 < 5000)
        usleep(5 * 1000);
    assert_true(cond(s));
}

static int one_running(keel_server *s)
{
    (void)s;
    return __atomic_load_n(&running, __ATOMIC_SEQ_CST) == 1;
}

static int one_queued(keel_server *s)
{
    keel_server_stats st;
    keel_server_stats_get(s, &st);
    return st.work_queued == 1;
}

static void test_job_success(void **state)
{
    (void)state;
    keel_server *s = start(2, 16);
    static char buf[8192];
    assert_int_equal(get(s, "/job", buf, sizeof(buf)), 200);
    assert_non_null(strstr(buf, "value=21"));
    /* two hops on one job: its state carries over */
    assert_int_equal(get(s, "/job?hops=2", buf, sizeof(buf)), 200);
    assert_non_null(strstr(buf, "value=42"));
    assert_int_equal(get(s, "/plain", buf, sizeof(buf)), 200);
    testsrv_stop(s);
    assert_int_equal(C.works, 3);
    assert_int_equal(C.after_ok, 3);
    assert_int_equal(C.after_canceled, 0);
    assert_int_equal(C.cleanups, 2); /* once per job with a cleanup, never more */
    assert_int_equal(C.cleanup_intact, 2);
}

static void test_queue_full(void **state)
{
    (void)state;
    keel_server *s = start(1, 1);
    static char buf[8192];
    int a = connect_to(keel_server_port(s), 10);
    loopback_send_get(a, "/job?ms=300"); /* runs */
    wait_until(one_running, s);
    int b = connect_to(keel_server_port(s), 10);
    loopback_send_get(b, "/job?ms=10"); /* waits in the queue */
    wait_until(one_queued, s);
    /* refused: 503 problem+json with Retry-After, after never called */
    assert_int_equal(get(s, "/job", buf, sizeof(buf)), 503);
    assert_non_null(strstr(buf, "Retry-After: 1\r\n"));
    assert_non_null(strstr(buf, "application/problem+json"));
    assert_int_equal(loopback_read_status(a, buf, sizeof(buf)), 200);
    assert_int_equal(loopback_read_status(b, buf, sizeof(buf)), 200);
    keel_server_stats st;
    keel_server_stats_get(s, &st);
    assert_int_equal(st.work_rejected, 1);
    testsrv_stop(s);
    assert_int_equal(C.works, 2);
    assert_int_equal(C.after_ok, 2);
    assert_int_equal(C.cleanups, 3); /* the refused request's job too */
    assert_int_equal(C.cleanup_intact, 3);
}

static void test_deadline_cancels(void **state)
{
    (void)state;
    keel_server *s = start(2, 16);
    static char buf[8192];
    /* the handler deadline (100 ms) passes while the job sleeps 700 ms */
    assert_int_equal(get(s, "/slow?ms=700", buf, sizeof(buf)), 503);
    /* the job is still running: the request is held, its job alive */
    testsrv_wait_nonzero(&C.after_canceled);
    testsrv_stop(s);
    assert_int_equal(C.works, 1);
    assert_int_equal(C.after_ok, 0);
    assert_int_equal(C.after_canceled, 1); /* exactly once */
    assert_int_equal(C.late_refused, 1);
    assert_int_equal(C.cleanups, 1); /* after `after`, exactly once */
    assert_int_equal(C.cleanup_intact, 1);
}

static void test_client_gone_cancels(void **state)
{
    (void)state;
    keel_server *s = start(2, 16);
    int fd = connect_to(keel_server_port(s), 5);
    loopback_send_get(fd, "/job?ms=300&hops=2");
    wait_until(one_running, s);
    close(fd); /* leaves during the first hop */
    testsrv_wait_nonzero(&C.after_canceled);
    testsrv_stop(s);
    assert_int_equal(C.works, 1); /* no second hop */
    assert_int_equal(C.after_canceled, 1);
    assert_int_equal(C.after_ok, 0);
    assert_int_equal(C.cleanups, 1);
    assert_int_equal(C.cleanup_intact, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_job_success),
        cmocka_unit_test(test_queue_full),
        cmocka_unit_test(test_deadline_cancels),
        cmocka_unit_test(test_client_gone_cancels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
