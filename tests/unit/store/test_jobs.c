/* test_jobs.c — the job queue (src/store/jobs*.c): transactional and
 * unique enqueue (50 concurrent enqueues of one key), the runner (wake-up
 * latency, retries with backoff, dead, snooze, cancel, fail, timeout,
 * async handlers, pause, rate limit, graceful stop), the rescue's
 * compare-and-set, pruning and the admin operations.
 *
 * Runs on SQLite (a temporary file) and, when KEEL_TEST_PG_URL is set
 * (`make unit-db`), again on PostgreSQL. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include <cmocka.h>
#include <jansson.h>

#include "testsrv.h"
#include "testdb.h"

#include "keel/keel.h"
#include "store/jobs_internal.h"

/* ---------------------------------------------------------------- helpers */

static keel_db_conn *conn(void)
{
    keel_db_conn *c = NULL;
    char err[512];
    if (keel_db_connect(g_url, NULL, &c, err, sizeof(err)) < 0)
        fail_msg("connect %s: %s", g_url, err);
    return c;
}

static void ok(keel_db_conn *c, const char *sql)
{
    int rc = keel_db_exec(c, sql, NULL, 0, NULL);
    if (rc < 0)
        fail_msg("%s: %s (%s)", sql, keel_db_strerror(rc), keel_db_errmsg(c));
}

static int64_t scalar(keel_db_conn *c, const char *sql, int64_t id)
{
    keel_db_rows *rows = NULL;
    keel_db_param p[] = {KEEL_DB_P_INT(id)};
    int rc = keel_db_query(c, sql, p, strstr(sql, "$1") ? 1 : 0, &rows);
    if (rc < 0)
        fail_msg("%s: %s (%s)", sql, keel_db_strerror(rc), keel_db_errmsg(c));
    assert_int_equal(keel_db_rows_next(rows), 1);
    int64_t v = keel_db_get_int(rows, 0);
    keel_db_rows_free(rows);
    return v;
}

static void state_of(keel_db_conn *c, int64_t id, char *out, size_t n)
{
    keel_db_rows *rows = NULL;
    keel_db_param p[] = {KEEL_DB_P_INT(id)};
    assert_int_equal(keel_db_query(c, "SELECT state FROM keel_jobs WHERE id = $1", p, 1, &rows), 0);
    if (keel_db_rows_next(rows) == 1) {
        keel_str s = keel_db_get_text(rows, 0);
        snprintf(out, n, "%.*s", (int)s.len, s.ptr);
    } else {
        snprintf(out, n, "(none)");
    }
    keel_db_rows_free(rows);
}

/* Waits up to ms for job id to reach state; returns 1 when it did. */
static int wait_state(keel_db_conn *c, int64_t id, const char *state, unsigned ms)
{
    char st[32];
    for (unsigned waited = 0; waited <= ms; waited += 5) {
        state_of(c, id, st, sizeof(st));
        if (!strcmp(st, state))
            return 1;
        usleep(5000);
    }
    fprintf(stderr, "job %lld: state %s, wanted %s\n", (long long)id, st, state);
    return 0;
}

/* A fresh table: every test starts from no jobs. */
static keel_db_conn *fresh(void)
{
    keel_db_conn *c = conn();
    assert_int_equal(keel_jobs_install(c), 0);
    ok(c, "DELETE FROM keel_jobs");
    ok(c, "DELETE FROM keel_job_queues");
    return c;
}

static int64_t enqueue(keel_db_conn *c, const keel_job_spec *s)
{
    keel_job_enqueued e;
    int rc = keel_job_enqueue(c, s, &e);
    if (rc < 0)
        fail_msg("enqueue: %s (%s)", keel_db_strerror(rc), keel_db_errmsg(c));
    return e.id;
}

static keel_jobs *g_live[4]; /* runners of the running test */

/* A runner on g_url with options set by the test. */
typedef struct runner_opts {
    const char *queues;
    uint64_t poll_ms, rescue_ms, timeout_ms, base_ms, max_ms, retention_ms;
    const char *rates;
} runner_opts;

static keel_jobs *runner(const runner_opts *ro, keel_metrics *m)
{
    keel_config cfg;
    keel_config_defaults(&cfg);
    keel_jobs_options *o = keel_config_edit(&cfg, &keel_jobs_config);
    keel_free(o->queues);
    o->queues = keel_strdup(ro->queues ? ro->queues : "default=2");
    o->poll_interval_ms = ro->poll_ms ? ro->poll_ms : 10000; /* wake-ups, not polling */
    o->rescue_after_ms = ro->rescue_ms ? ro->rescue_ms : 60000;
    o->timeout_ms = ro->timeout_ms;
    o->backoff_base_ms = ro->base_ms ? ro->base_ms : 20;
    o->backoff_max_ms = ro->max_ms ? ro->max_ms : 80;
    if (ro->retention_ms)
        o->retention_ms = ro->retention_ms;
    if (ro->rates) {
        keel_free(o->rate_limits);
        o->rate_limits = keel_strdup(ro->rates);
    }
    keel_jobs *j = NULL;
    assert_int_equal(keel_jobs_new(&j, g_url, &cfg, m), 0);
    keel_config_close(&cfg);
    for (size_t i = 0; i < sizeof(g_live) / sizeof(g_live[0]); i++) {
        if (!g_live[i]) {
            g_live[i] = j;
            break;
        }
    }
    return j;
}

/* Stops and frees a test's runner: the test's own end, or the teardown
 * after a failed assertion (so one failure does not leave a runner
 * taking the next tests' jobs). */
static int finish_runner(keel_jobs *j, uint64_t grace_ms)
{
    for (size_t i = 0; i < sizeof(g_live) / sizeof(g_live[0]); i++)
        if (g_live[i] == j)
            g_live[i] = NULL;
    int rc = keel_jobs_stop(j, grace_ms);
    keel_jobs_free(j);
    return rc;
}

static int teardown_runners(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(g_live) / sizeof(g_live[0]); i++)
        if (g_live[i])
            finish_runner(g_live[i], 5000);
    return 0;
}

/* ---------------------------------------------------------------- handler state */

static atomic_int g_runs, g_ok;
static atomic_llong g_first_start_ms;
static atomic_int g_mode; /* what the generic handler does */
enum { M_OK, M_RETRY, M_SNOOZE_ONCE, M_CANCEL, M_FAIL, M_SLOW, M_TIMEOUT_ONCE };
static atomic_uint g_attempts_seen[8];

static keel_job_outcome h_generic(keel_job *job, void *arg)
{
    (void)arg;
    int n = atomic_fetch_add(&g_runs, 1);
    if (n < 8)
        atomic_store(&g_attempts_seen[n], keel_job_attempt(job));
    long long zero = 0;
    atomic_compare_exchange_strong(&g_first_start_ms, &zero, (long long)keel_wall_ms());
    switch (atomic_load(&g_mode)) {
    case M_RETRY:
        return keel_job_retry(job, "boom");
    case M_SNOOZE_ONCE:
        if (n == 0)
            return keel_job_snooze(job, 150);
        break;
    case M_CANCEL:
        return KEEL_JOB_CANCEL;
    case M_FAIL:
        return keel_job_fail(job, "permanent");
    case M_SLOW:
        usleep(300 * 1000);
        break;
    case M_TIMEOUT_ONCE:
        if (n == 0) {
            while (!keel_job_expired(job))
                usleep(5000);
            usleep(n == 0 ? 200 * 1000 : 0);
            return KEEL_JOB_OK; /* too late: dropped */
        }
        break;
    default:
        break;
    }
    atomic_fetch_add(&g_ok, 1);
    return KEEL_JOB_OK;
}

static void reset_handler(int mode)
{
    atomic_store(&g_runs, 0);
    atomic_store(&g_ok, 0);
    atomic_store(&g_first_start_ms, 0);
    atomic_store(&g_mode, mode);
    for (int i = 0; i < 8; i++)
        atomic_store(&g_attempts_seen[i], 0);
}

static keel_jobs *generic_runner(const runner_opts *ro, keel_metrics *m)
{
    keel_jobs *j = runner(ro, m);
    keel_job_handler h = {.kind = "generic", .run = h_generic};
    assert_int_equal(keel_jobs_register(j, &h), 0);
    assert_int_equal(keel_jobs_register(j, &h), KEEL_EEXISTS);
    assert_int_equal(keel_jobs_start(j), 0);
    return j;
}

/* ---------------------------------------------------------------- pure */

static void test_parse_queues(void **state)
{
    (void)state;
    keel__jobs_qspec q[KEEL__JOBS_MAX_QUEUES];
    size_t n;
    char err[200];
    assert_int_equal(keel__jobs_parse_queues("default=4,email=2", 0, q, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 2);
    assert_string_equal(q[1].name, "email");
    assert_int_equal(q[1].n, 2);
    assert_int_equal(keel__jobs_parse_queues("email=10/1s", 1, q, &n, err, sizeof(err)), 0);
    assert_int_equal(q[0].n, 10);
    assert_int_equal(q[0].window_ms, 1000);
    static const char *const bad[] = {"default", "=4", "a=0", "a=257", "a=x", "a b=1", "a=1,a=2",
                                      "a=4/1s"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(keel__jobs_parse_queues(bad[i], 0, q, &n, err, sizeof(err)), KEEL_EINVAL);
    static const char *const badr[] = {"a=10", "a=10/", "a=10/0", "a=0/1s", "a=10/xs"};
    for (size_t i = 0; i < sizeof(badr) / sizeof(badr[0]); i++)
        assert_int_equal(keel__jobs_parse_queues(badr[i], 1, q, &n, err, sizeof(err)), KEEL_EINVAL);
    assert_int_equal(keel__jobs_parse_queues("", 1, q, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 0);
}

static void test_backoff_cap(void **state)
{
    (void)state;
    assert_int_equal(keel_jobs_backoff_cap(1000, 3600000, 1), 1000);
    assert_int_equal(keel_jobs_backoff_cap(1000, 3600000, 2), 2000);
    assert_int_equal(keel_jobs_backoff_cap(1000, 3600000, 5), 16000);
    assert_int_equal(keel_jobs_backoff_cap(1000, 3600000, 40), 3600000);
    assert_int_equal(keel_jobs_backoff_cap(1000, 3600000, 1000), 3600000);
}

/* ---------------------------------------------------------------- enqueue */

typedef struct tx_arg {
    int fail;
    int64_t id;
} tx_arg;

static int tx_enqueue(keel_db_conn *c, void *arg)
{
    tx_arg *a = arg;
    keel_job_spec s = {.kind = "generic", .args = "{\"n\":1}"};
    keel_job_enqueued e;
    int rc = keel_job_enqueue(c, &s, &e);
    if (rc < 0)
        return rc;
    a->id = e.id;
    return a->fail ? KEEL_EINVAL : 0;
}

static void test_enqueue_in_tx(void **state)
{
    (void)state;
    keel_db_conn *c = fresh();
    tx_arg a = {.fail = 1};
    assert_int_equal(keel_db_tx(c, tx_enqueue, &a), KEEL_EINVAL);
    assert_int_equal(scalar(c, "SELECT count(*) FROM keel_jobs", 0), 0); /* rolled back: no job */
    a.fail = 0;
    assert_int_equal(keel_db_tx(c, tx_enqueue, &a), 0);
    assert_int_equal(scalar(c, "SELECT count(*) FROM keel_jobs WHERE id = $1", a.id), 1);
    /* outside a transaction too */
    keel_job_spec s = {.kind = "generic", .queue = "email", .priority = 5, .max_attempts = 3,
                       .delay_ms = 60000, .tags = (const char *[]){"a", "b"}, .ntags = 2};
    keel_job_enqueued e;
    assert_int_equal(keel_job_enqueue(c, &s, &e), 0);
    assert_string_equal(e.state, "scheduled");
    json_t *o = NULL;
    assert_int_equal(keel_job_get(c, e.id, &o), 0);
    assert_string_equal(json_string_value(json_object_get(o, "queue")), "email");
    assert_int_equal(json_integer_value(json_object_get(o, "max_attempts")), 3);
    assert_int_equal(json_array_size(json_object_get(o, "tags")), 2);
    assert_true(json_is_object(json_object_get(o, "args")));
    json_decref(o);
    keel_db_disconnect(c);
}

static void test_enqueue_invalid(void **state)
{
    (void)state;
    keel_db_conn *c = fresh();
    char longname[KEEL_JOB_NAME_MAX + 2];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = 0;
    const keel_job_spec bad[] = {
        {.kind = NULL},
        {.kind = ""},
        {.kind = longname},
        {.kind = "k\n"},
        {.kind = "k", .queue = "q\r"},
        {.kind = "k", .args = "[1]"},
        {.kind = "k", .args = "{bad"},
        {.kind = "k", .args = "{\"a\":1,\"a\":2}"},
        {.kind = "k", .priority = 1001},
        {.kind = "k", .unique_key = ""},
        {.kind = "k", .tags = (const char *[]){"x\x01"}, .ntags = 1},
        {.kind = "k", .ntags = 1},
        {.kind = "\xff\xfe"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(keel_job_enqueue(c, &bad[i], NULL), KEEL_EINVAL);
    assert_int_equal(scalar(c, "SELECT count(*) FROM keel_jobs", 0), 0);
    keel_db_disconnect(c);
}

typedef struct uniq_arg {
    pthread_barrier_t *bar;
    int64_t id;
    int duplicate;
    int rc;
} uniq_arg;

static void *uniq_thread(void *arg)
{
    uniq_arg *a = arg;
    keel_db_conn *c = NULL;
    char err[256];
    a->rc = keel_db_connect(g_url, NULL, &c, err, sizeof(err));
    pthread_barrier_wait(a->bar);
    if (a->rc == 0) {
        keel_job_spec s = {.kind = "generic", .unique_key = "tick@2026-12-03T18:00Z",
                           .unique_forever = 1};
        keel_job_enqueued e;
        a->rc = keel_job_enqueue(c, &s, &e);
        a->id = e.id;
        a->duplicate = e.duplicate;
    }
    keel_db_disconnect(c);
    keel_log_thread_close();
    return NULL;
}

static void test_unique_concurrent(void **state)
{
    (void)state;
    keel_db_conn *c = fresh();
    enum { N = 50 };
    pthread_t t[N];
    uniq_arg a[N];
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, N);
    for (int i = 0; i < N; i++) {
        a[i] = (uniq_arg){.bar = &bar};
        assert_int_equal(pthread_create(&t[i], NULL, uniq_thread, &a[i]), 0);
    }
    int fresh_ones = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        if (a[i].rc < 0)
            fail_msg("enqueue %d: %s", i, keel_db_strerror(a[i].rc));
        assert_int_equal(a[i].id, a[0].id);
        fresh_ones += !a[i].duplicate;
    }
    pthread_barrier_destroy(&bar);
    assert_int_equal(fresh_ones, 1);
    assert_int_equal(scalar(c, "SELECT count(*) FROM keel_jobs", 0), 1);

    /* unique among unfinished jobs only (the default scope) */
    keel_job_spec s = {.kind = "generic", .unique_key = "user:7"};
    keel_job_enqueued e1, e2, e3;
    assert_int_equal(keel_job_enqueue(c, &s, &e1), 0);
    assert_int_equal(keel_job_enqueue(c, &s, &e2), 0);
    assert_int_equal(e2.id, e1.id);
    assert_true(e2.duplicate);
    assert_int_equal(keel_job_cancel(c, e1.id), 0);
    assert_int_equal(keel_job_enqueue(c, &s, &e3), 0);
    assert_false(e3.duplicate);
    assert_true(e3.id != e1.id);
    /* a forever key stays taken after the job finished */
    assert_int_equal(keel_job_cancel(c, a[0].id), 0);
    keel_job_spec f = {.kind = "generic", .unique_key = "tick@2026-12-03T18:00Z",
                       .unique_forever = 1};
    assert_int_equal(keel_job_enqueue(c, &f, &e1), 0);
    assert_true(e1.duplicate);
    assert_int_equal(e1.id, a[0].id);
    /* another queue is another key space */
    f.queue = "other";
    assert_int_equal(keel_job_enqueue(c, &f, &e1), 0);
    assert_false(e1.duplicate);
    keel_db_disconnect(c);
}

/* ---------------------------------------------------------------- runner */

static void test_runs_soon_after_enqueue(void **state)
{
    (void)state;
    keel_db_conn *c = fresh();
    reset_handler(M_OK);
    keel_metrics *m = keel_metrics_new(1);
    keel_jobs *j = generic_runner(&(runner_opts){0}, m);
    usleep(100 * 1000); /* idle: the first poll has passed, the next is 10 s away */
    /* several rounds: each must start on the wake-up, not the poll */
    uint64_t worst = 0;
    for (int round = 0; round < 5; round++) {
        atomic_store(&g_first_start_ms, 0);
        int64_t t0 = (int64_t)keel_wall_ms();
        int64_t id = enqueue(c, &(keel_job_spec){.kind = "generic"});
        assert_true(wait_state(c, id, "completed", 10000));
        uint64_t lat = (uint64_t)(atomic_load(&g_first_start_ms) - t0);
        if (lat > worst)
            worst = lat;
    }
    assert_true(worst < 500); /* typically a few ms; generous for a loaded machine */
    assert_int_equal(atomic_load(&g_ok), 5);
    assert_int_equal(finish_runner(j, 1000), 0);
    keel_buf b = {0};
    keel_metrics_render(m, &b);
    keel_buf_append(&b, "", 1);
    assert_non_null(strstr(b.data, "jobs_completed_total{queue=\"default\",result=\"completed\"} 5"));
    assert_non_null(strstr(b.data, "jobs_enqueued_total{queue=\"default\"} 5"));
    assert_non_null(strstr(b.data, "jobs_completed_total{queue=\"default\",result=\"dead\"} 0"));
    assert_non_null(strstr(b.data, "job_wait_seconds_count{queue=\"default\"} 5"));
    keel_free(b.data);
    keel_metrics_free(m);
    keel_db_disconnect(c);
}

static void test_retries_then_dead(void **state)
{
    (void)state;
    keel_db_conn *c = fresh();
    reset_handler(M_RETRY);
    /* backoff caps 20, 40 ms; polling covers nothing: our own retries re-arm the timer */
    keel_jobs *j = generic_runner(&(runner_opts){.base_ms = 20, .max_ms = 40}, NULL);
    int64_t t0 = (int64_t)keel_wall_ms();
    int64_t id = enqueue(c, &(keel_job_spec){.kind = "generic", .max_attempts = 3});
    assert_true(wait_state(c, id, "dead", 10000));
    int64_t took = (int64_t)keel_wall_ms() - t0;
    assert_true(took < 8000); // ~60 ms of backoff; generous for a loaded machine
    assert_int_equal(atomic_load(&g_runs), 3);
    for (unsigned i = 0; i < 3; i++)
        assert_int_equal(atomic_load(&g_attempts_seen[i]), i + 1);
    json_t *o = NULL;
    assert_int_equal(keel_job_get(c, id, &o), 0);
    json_t *errs = json_object_get(o, "errors");
    assert_int_equal(json_array_size(errs), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(errs, 0), "error")), "boom");
    assert_int_equal(json_integer_value(json_object_get(o, "attempt")), 3);
    assert_false(json_is_null(json_object_get(o, "finished_at")));
    json_decref(o);
    /* the dead job is kept; an admin retry runs it once more */
    reset_handler(M_OK);
    assert_int_equal(keel_job_retry_now(c, id), 0);
    assert_true(wait_state(c, id, "completed", 10000));
    assert_int_equal(scalar(c, "SELECT attempt FROM keel_jobs WHERE id = $1", id), 4);
    assert_int_equal(finish_runner(j, 1000), 0);
    keel_db_disconnect(c);
}

/* Several jobs retrying at different times: the poll that takes the first
 * retry must still be armed for the others (not JOBS_POLL_INTERVAL, 10 s
 * here). One "earliest due" value lost them. */
static void test_many_retries_wait_no_poll(void **state)
{
    (void)state;
    keel_db_conn *c = fresh();
    reset_handler(M_RETRY);
    keel_jobs *j = generic_runner(
        &(runner_opts){.queues = "default=4", .base_ms = 30, .max_ms = 300}, NULL);
    int64_t t0 = (int64_t)keel_wall_ms();
    int64_t ids[6];
    for (int i = 0; i < 6; i++)
        ids[i] = enqueue(c, &(keel_job_spec){.kind = "generic", .max_attempts = 4});
    for (int i = 0; i < 6; i++)
        assert_true(wait_state(c, ids[i], "dead", 15000));
    int64_t took = (int64_t)keel_wall_ms() - t0;
    assert_true(took < 5000); /* ~1 s of backoff at most; a missed one waits 10 s */
    assert_int_equal(atomic_load(&g_runs), 24);
    assert_int_equal(finish_runner(j, 1000), 0);
    keel_db_disconnect(c);
}

static void test_backoff_timing(void **state)
{
    (void)state;
    keel_db_conn *c = fresh();
    reset_handler(M_RETRY);
    /* no runner: the retry is written by a runner below that we stop at once */
    keel_jobs *j = generic_runner(&(runner_opts){.base_ms = 400, .max_ms = 400}, NULL);
    int64_t id = enqueue(c, &(keel_job_spec){.kind = "generic", .max_attempts = 2});
    assert_true(wait_state(c, id, "retryable", 2000) || wait_state(c, id, "dead", 10));
    int64_t att = scalar(c, "SELECT attempted_at FROM keel_jobs WHERE id = $1", id);
    int64_t run_at = scalar(c, "SELECT run_at FROM keel_jobs WHERE id = $1", id);
    /* full jitter: uniform in [0, 400] ms after the failure */
    assert_true(run_at >= att);
    assert_true(run_at <= att + 400 + 200);
    assert_true(wait_state(c, id, "dead", 10000));
    assert_int_equal(atomic_load(&g_runs), 2);
    assert_int_equal(finish_runner(j, 1000), 0);
    keel_db_disconnect(c);
}

static void test_snooze_spends_no_attempt(void **state)
{
    (void)state;
    keel_db_conn *c = fresh();
    reset_handler(M_SNOOZE_ONCE);
    keel_jobs *j = generic_runner(&(runner_opts){0}, NULL);
    int64_t t0 = (int64_t)keel_wall_ms();
    int64_t id = enqueue(c, &(keel_job_spec){.kind = "generic", .max_attempts = 1});
    assert_true(wait_state(c, id, "completed", 10000));
    assert_true((int64_t)keel_wall_ms() - t0 >= 150);
    assert_int_equal(atomic_load(&g_runs), 2);
    assert_int_equal(atomic_load(&g_attempts_seen[0]), 1);
    assert_int_equal(atomic_load(&g_attempts_seen[1]), 1); /* no attempt spent */
    assert_int_equal(scalar(c, "SELECT attempt FROM keel_jobs WHERE id = $1", id), 1);
    assert_int_equal(finish_runner(j, 1000), 0);
    keel_db_disconnect(c);
}

static void test_cancel_and_fail(void **state)
{
    (void)state;
    keel_db_conn *c = fresh();
    reset_handler(M_CANCEL);
    keel_jobs *j = generic_runner(&(runner_opts){0}, NULL);
    int64_t id = enqueue(c, &(keel_job_spec){.kind = "generic", .max_attempts = 5});
    assert_true(wait_state(c, id, "cancelled", 10000));
    assert_int_equal(atomic_load(&g_runs), 1);
    reset_handler(M_FAIL);
    id = enqueue(c, &(keel_job_spec){.kind = "generic", .max_attempts = 5});
    assert_true(wait_state(c, id, "dead", 10000));
    assert_int_equal(atomic_load(&g_runs), 1);
    assert_int_equal(scalar(c, "SELECT attempt FROM keel_jobs WHERE id = $1", id), 1);
    /* a job of a kind this runner has no handler for is not fetched: it
     * waits for a runner that has one (another instance, a newer version) */
    id = enqueue(c, &(keel_job_spec){.kind = "nobody", .max_attempts = 1});
    int64_t other = enqueue(c, &(keel_job_spec){.kind = "generic", .max_attempts = 1});
    assert_true(wait_state(c, other, "dead", 10000)); /* fetched after "nobody" */
    usleep(100 * 1000);
    char st[32];
    state_of(c, id, st, sizeof(st));
    assert_string_equal(st, "available");
    assert_int_equal(scalar(c, "SELECT attempt FROM keel_jobs WHERE id = $1", id), 0);
    assert_int_equal(finish_runner(j, 1000), 0);
    keel_db_disconnect(c);
}

static void test_timeout(void **state)
{
    (void)state;
    keel_db_conn *c = fresh();
    reset_handler(M_TIMEOUT_ONCE);
    keel_jobs *j = generic_runner(&(runner_opts){.rescue_ms = 1000}, NULL);
    int64_t id = enqueue(c, &(keel_job_spec){.kind = "generic", .timeout_ms = 300});
    assert_true(wait_state(c, id, "completed", 10000));
    /* the first run's late OK was dropped: it ran again (a later run may
     * time out too on a badly loaded machine: then one more) */
    int runs = atomic_load(&g_runs);
    assert_true(runs >= 2);
    assert_int_equal(scalar(c, "SELECT attempt FROM keel_jobs WHERE id = $1", id), runs);
    json_t *o = NULL;
    assert_int_equal(keel_job_get(c, id, &o), 0);
    assert_string_equal(json_string_value(json_object_get(json_array_get(
                            json_object_get(o, "errors"), 0), "error")),
                        "timeout after 300 ms");
    json_decref(o);
    assert_int_equal(finish_runner(j, 2000), 0);
    keel_db_disconnect(c);
}

/* async: completes from a timer on the runner's loop */
static atomic_int g_async_done;
static void async_fire(uv_timer_t *t)
{
    keel_job *job = t->data;
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
    atomic_fetch_add(&g_async_done, 1);
    keel_job_done(job, json_integer_value(json_object_get(keel_job_args(job), "fail"))
                           ? keel_job_fail(job, "async failure")
                           : KEEL_JOB_OK);
}

static void h_async(keel_job *job, void *arg)
{
    (void)arg;
    uv_timer_t *t = malloc(sizeof(*t));
    uv_timer_init(keel_job_loop(job), t);
    t->data = job;
    uv_timer_start(t, async_fire, 20, 0);
}

static void test_async_handler(void **state)
{
    (void)state;
    keel_db_conn *c = fresh();
    atomic_store(&g_async_done, 0);
    keel_jobs *j = runner(&(runner_opts){.queues = "default=3"}, NULL);
    keel_job_handler h = {.kind = "async", .start = h_async};
    assert_int_equal(keel_jobs_register(j, &h), 0);
    keel_job_handler bad = {.kind = "both", .start = h_async, .run = h_generic};
    assert_int_equal(keel_jobs_register(j, &bad), KEEL_EINVAL);
    assert_int_equal(keel_jobs_start(j), 0);
    int64_t ids[6];
    for (int i = 0; i < 6; i++)
        ids[i] = enqueue(c, &(keel_job_spec){.kind = "async",
                                              .args = i == 5 ? "{\"fail\":1}" : "{}"});
    for (int i = 0; i < 5; i++)
        assert_true(wait_state(c, ids[i], "completed", 10000));
    assert_true(wait_state(c, ids[5], "dead", 10000));
    assert_int_equal(atomic_load(&g_async_done), 6);
    assert_int_equal(finish_runner(j, 1000), 0);
    keel_db_disconnect(c);
}

static void test_pause_and_rate_limit(void **state)
{
    (void)state;
    keel_db_conn *c = fresh();
    reset_handler(M_OK);
    assert_int_equal(keel_jobs_queue_pause(c, "default", 1), 0);
    keel_jobs *j = generic_runner(&(runner_opts){.queues = "default=4", .rates = "default=3/1s",
                                                 .poll_ms = 50},
                                  NULL);
    for (int i = 0; i < 7; i++)
        enqueue(c, &(keel_job_spec){.kind = "generic"});
    usleep(200 * 1000);
    assert_int_equal(atomic_load(&g_runs), 0); /* paused */
    json_t *qs = NULL;
    assert_int_equal(keel_jobs_queues(c, &qs), 0);
    assert_true(json_is_true(json_object_get(json_array_get(json_object_get(qs, "queues"), 0),
                                             "paused")));
    json_decref(qs);
    uint64_t t0 = keel_now_ms();
    assert_int_equal(keel_jobs_queue_pause(c, "default", 0), 0);
    while (atomic_load(&g_ok) < 3 && keel_now_ms() - t0 < 2000)
        usleep(5000);
    usleep(300 * 1000);
    if (keel_now_ms() - t0 < 900)
        assert_int_equal(atomic_load(&g_runs), 3); /* 3 per second */
    while (atomic_load(&g_ok) < 7 && keel_now_ms() - t0 < 5000)
        usleep(10000);
    assert_int_equal(atomic_load(&g_ok), 7);
    /* 3 + 3 + 1: the seventh starts in a third window, at least 1 s after the second began */
    assert_true(keel_now_ms() - t0 >= 1000);
    assert_int_equal(finish_runner(j, 1000), 0);
    keel_db_disconnect(c);
}

/* A dead worker's job: running, locked by a runner that is gone, its
 * heartbeat old. The rescue gives it back once; the ghost's late result is
 * dropped; a finished job with an old heartbeat is never touched. */
static void test_rescue_compare_and_set(void **state)
{
    (void)state;
    keel_db_conn *c = fresh();
    reset_handler(M_OK);
    int64_t id = enqueue(c, &(keel_job_spec){.kind = "generic", .max_attempts = 5});
    int64_t done = enqueue(c, &(keel_job_spec){.kind = "generic"});
    int64_t old = keel__jobs_now() - 10000;
    keel_db_param p[] = {KEEL_DB_P_INT(id), KEEL_DB_P_INT(old)};
    assert_int_equal(keel_db_exec(c,
                                  "UPDATE keel_jobs SET state = 'running', attempt = 1, "
                                  "locked_by = 'ghost', heartbeat_at = $2, attempted_at = $2 "
                                  "WHERE id = $1",
                                  p, 2, NULL),
                     0);
    keel_db_param p2[] = {KEEL_DB_P_INT(done), KEEL_DB_P_INT(old)};
    assert_int_equal(keel_db_exec(c,
                                  "UPDATE keel_jobs SET state = 'completed', attempt = 1, "
                                  "heartbeat_at = $2, finished_at = $2 WHERE id = $1",
                                  p2, 2, NULL),
                     0);
    /* two runners rescue at once: the job is still rescued (and run) once */
    keel_jobs *a = generic_runner(&(runner_opts){.rescue_ms = 1000}, NULL);
    keel_jobs *b = generic_runner(&(runner_opts){.rescue_ms = 1000}, NULL);
    assert_true(wait_state(c, id, "completed", 10000));
    assert_int_equal(atomic_load(&g_runs), 1);
    assert_int_equal(atomic_load(&g_attempts_seen[0]), 2);
    char st[32];
    state_of(c, done, st, sizeof(st));
    assert_string_equal(st, "completed");
    /* the ghost comes back with attempt 1's result: nothing matches */
    int64_t n = -1;
    keel_db_param g[] = {KEEL_DB_P_INT(id)};
    assert_int_equal(keel_db_exec(c,
                                  "UPDATE keel_jobs SET state = 'dead' WHERE id = $1 AND "
                                  "state = 'running' AND attempt = 1 AND locked_by = 'ghost'",
                                  g, 1, &n),
                     0);
    assert_int_equal(n, 0);
    assert_int_equal(finish_runner(a, 1000), 0);
    assert_int_equal(finish_runner(b, 1000), 0);
    keel_db_disconnect(c);
}

static void test_prune(void **state)
{
    (void)state;
    keel_db_conn *c = fresh();
    int64_t keep = enqueue(c, &(keel_job_spec){.kind = "generic", .delay_ms = 3600000});
    int64_t gone = enqueue(c, &(keel_job_spec){.kind = "generic", .delay_ms = 3600000});
    int64_t dead = enqueue(c, &(keel_job_spec){.kind = "generic", .delay_ms = 3600000});
    int64_t old = keel__jobs_now() - 5000;
    keel_db_param p[] = {KEEL_DB_P_INT(gone), KEEL_DB_P_INT(old)};
    ok(c, "SELECT 1");
    assert_int_equal(keel_db_exec(c, "UPDATE keel_jobs SET state = 'completed', finished_at = $2 "
                                     "WHERE id = $1", p, 2, NULL), 0);
    keel_db_param d[] = {KEEL_DB_P_INT(dead), KEEL_DB_P_INT(old)};
    assert_int_equal(keel_db_exec(c, "UPDATE keel_jobs SET state = 'dead', finished_at = $2 "
                                     "WHERE id = $1", d, 2, NULL), 0);
    keel_jobs *j = generic_runner(&(runner_opts){.retention_ms = 1000}, NULL);
    for (int i = 0; i < 400 && scalar(c, "SELECT count(*) FROM keel_jobs WHERE id = $1", gone); i++)
        usleep(10000);
    assert_int_equal(scalar(c, "SELECT count(*) FROM keel_jobs WHERE id = $1", gone), 0);
    assert_int_equal(scalar(c, "SELECT count(*) FROM keel_jobs WHERE id = $1", keep), 1);
    assert_int_equal(scalar(c, "SELECT count(*) FROM keel_jobs WHERE id = $1", dead), 1); /* 7d */
    assert_int_equal(finish_runner(j, 1000), 0);
    keel_db_disconnect(c);
}

static void test_admin_ops(void **state)
{
    (void)state;
    keel_db_conn *c = fresh();
    int64_t a = enqueue(c, &(keel_job_spec){.kind = "k1", .queue = "q1", .delay_ms = 60000});
    int64_t b = enqueue(c, &(keel_job_spec){.kind = "k2", .queue = "q1", .delay_ms = 60000});
    int64_t r = enqueue(c, &(keel_job_spec){.kind = "k2", .queue = "q2", .delay_ms = 60000});
    keel_db_param p[] = {KEEL_DB_P_INT(r)};
    assert_int_equal(keel_db_exec(c, "UPDATE keel_jobs SET state = 'running' WHERE id = $1", p, 1,
                                  NULL), 0);
    json_t *l = NULL;
    assert_int_equal(keel_jobs_list(c, &(keel_job_filter){.queue = "q1", .limit = 1}, &l), 0);
    assert_int_equal(json_array_size(json_object_get(l, "jobs")), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(l, "jobs"), 0),
                                                        "id")), b);
    int64_t next = json_integer_value(json_object_get(l, "next_before"));
    json_decref(l);
    assert_int_equal(keel_jobs_list(c, &(keel_job_filter){.queue = "q1", .before_id = next}, &l), 0);
    assert_int_equal(json_array_size(json_object_get(l, "jobs")), 1);
    assert_true(json_is_null(json_object_get(l, "next_before")));
    json_decref(l);
    assert_int_equal(keel_jobs_list(c, &(keel_job_filter){.kind = "k2", .state = "running"}, &l), 0);
    assert_int_equal(json_array_size(json_object_get(l, "jobs")), 1);
    json_decref(l);
    assert_int_equal(keel_job_cancel(c, a), 0);
    assert_int_equal(keel_job_cancel(c, a), KEEL_EALREADY);
    assert_int_equal(keel_job_cancel(c, 999999), KEEL_EDB_NOROW);
    assert_int_equal(keel_job_delete(c, r), KEEL_EALREADY); /* running */
    assert_int_equal(keel_job_retry_now(c, r), KEEL_EALREADY);
    assert_int_equal(keel_job_delete(c, a), 0);
    assert_int_equal(keel_job_delete(c, a), KEEL_EDB_NOROW);
    assert_int_equal(keel_job_retry_now(c, b), 0);
    char st[32];
    state_of(c, b, st, sizeof(st));
    assert_string_equal(st, "available");
    json_t *o = NULL;
    assert_int_equal(keel_job_get(c, 999999, &o), KEEL_EDB_NOROW);
    assert_int_equal(keel_jobs_queue_pause(c, "bad\nname", 1), KEEL_EINVAL);
    assert_true(keel_job_state_valid("dead"));
    assert_false(keel_job_state_valid("zombie"));
    keel_db_disconnect(c);
}

/* stop: the running job finishes within the grace; jobs fetched but not
 * started go back (available, attempt not spent). */
static void test_graceful_stop(void **state)
{
    (void)state;
    keel_db_conn *c = fresh();
    reset_handler(M_SLOW);
    keel_jobs *j = generic_runner(&(runner_opts){.queues = "default=1"}, NULL);
    int64_t id = enqueue(c, &(keel_job_spec){.kind = "generic"});
    assert_true(wait_state(c, id, "running", 10000));
    int64_t second = enqueue(c, &(keel_job_spec){.kind = "generic"});
    assert_int_equal(finish_runner(j, 3000), 0);
    char st[32];
    state_of(c, id, st, sizeof(st));
    assert_string_equal(st, "completed");
    /* never left running: done before the stop began, or not started (attempt unspent) */
    state_of(c, second, st, sizeof(st));
    if (strcmp(st, "completed") != 0) {
        assert_string_equal(st, "available");
        assert_int_equal(scalar(c, "SELECT attempt FROM keel_jobs WHERE id = $1", second), 0);
    }
    keel_db_disconnect(c);
}

/* ---------------------------------------------------------------- main */

static int setup_sqlite(void **state)
{
    (void)state;
    return testdb_setup("/tmp/keel-test-jobs.XXXXXX", "jobs.db", 0);
}

static int setup_pg(void **state)
{
    (void)state;
    return testdb_setup("/tmp/keel-test-jobs.XXXXXX", NULL, 1);
}

int main(void)
{
    keel_config cfg;
    keel_config_defaults(&cfg);
    cfg.log_level = KEEL_LOG_FATAL;
    keel_log_init(&cfg);
    keel_config_close(&cfg);

    const struct CMUnitTest pure[] = {
        cmocka_unit_test_teardown(test_parse_queues, teardown_runners),
        cmocka_unit_test_teardown(test_backoff_cap, teardown_runners),
    };
    const struct CMUnitTest dialect[] = {
        cmocka_unit_test_teardown(test_enqueue_in_tx, teardown_runners),
        cmocka_unit_test_teardown(test_enqueue_invalid, teardown_runners),
        cmocka_unit_test_teardown(test_unique_concurrent, teardown_runners),
        cmocka_unit_test_teardown(test_runs_soon_after_enqueue, teardown_runners),
        cmocka_unit_test_teardown(test_retries_then_dead, teardown_runners),
        cmocka_unit_test_teardown(test_many_retries_wait_no_poll, teardown_runners),
        cmocka_unit_test_teardown(test_backoff_timing, teardown_runners),
        cmocka_unit_test_teardown(test_snooze_spends_no_attempt, teardown_runners),
        cmocka_unit_test_teardown(test_cancel_and_fail, teardown_runners),
        cmocka_unit_test_teardown(test_timeout, teardown_runners),
        cmocka_unit_test_teardown(test_async_handler, teardown_runners),
        cmocka_unit_test_teardown(test_pause_and_rate_limit, teardown_runners),
        cmocka_unit_test_teardown(test_rescue_compare_and_set, teardown_runners),
        cmocka_unit_test_teardown(test_prune, teardown_runners),
        cmocka_unit_test_teardown(test_admin_ops, teardown_runners),
        cmocka_unit_test_teardown(test_graceful_stop, teardown_runners),
    };
    int failed = cmocka_run_group_tests_name("jobs (no database)", pure, NULL, NULL);
    failed += cmocka_run_group_tests_name("jobs on SQLite", dialect, setup_sqlite, testdb_teardown);
    if (testdb_have_pg("jobs"))
        failed += cmocka_run_group_tests_name("jobs on PostgreSQL", dialect, setup_pg,
                                              testdb_teardown);
    keel_log_close();
    return failed;
}
