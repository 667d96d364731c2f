/* test_db_job.c — keel_db_run_tx and the submit path of request-scoped
 * jobs on the database pool (src/store/db_pool.c): a function committed as
 * one transaction, rolled back when it fails (its own error or a
 * statement's), 503 + Retry-After when the pool queue is full, and a
 * request that ends first: `done` once with KEEL_ECANCELED, the job's
 * cleanup once, the transaction finishing on its own.
 *
 * Runs on SQLite (a temporary file) and, when KEEL_TEST_PG_URL is set
 * (`make unit-db`), again on PostgreSQL. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "loopback.h"
#include "testsrv.h"
#include "testdb.h"

#include "keel/keel.h"

static keel_db *g_db;

typedef struct counters {
    int cleanups;
    int done_ok;
    int done_err;
    int done_canceled;
    int fn_runs;
} counters;

static counters C;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int in_fn; /* functions running on the pool (atomic) */

#define COUNT(field) testsrv_count(&mu, &C.field)

/* ---------------------------------------------------------------- direct connection */

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

static int64_t rows_where(const char *cond)
{
    keel_db_conn *c = conn();
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM t_job WHERE %s", cond);
    keel_db_rows *rows = NULL;
    int rc = keel_db_query(c, sql, NULL, 0, &rows);
    if (rc < 0)
        fail_msg("%s: %s", sql, keel_db_strerror(rc));
    assert_int_equal(keel_db_rows_next(rows), 1);
    int64_t n = keel_db_get_int(rows, 0);
    keel_db_rows_free(rows);
    keel_db_disconnect(c);
    return n;
}

/* ---------------------------------------------------------------- the job */

typedef struct tx_job {
    int64_t v;       /* the value to insert */
    unsigned ms;     /* sleep inside the transaction, after the insert */
    int64_t seen;    /* rows with v, as the transaction saw them */
    char *heap;      /* freed by the cleanup (ASan: a leak if it does not run) */
} tx_job;

static void tx_cleanup(void *arg)
{
    tx_job *j = arg;
    COUNT(cleanups);
    keel_free(j->heap);
}

/* Inside the transaction: insert v, read it back, then
 *   v >= 0: commit (return 0);
 *   v == -1: roll back (return KEEL_EDB_NOROW, as a job says "not found");
 *   v == -2: a statement fails after the insert (a unique key: 409). */
static int tx_insert(keel_db_conn *c, void *arg)
{
    tx_job *j = arg;
    __atomic_add_fetch(&in_fn, 1, __ATOMIC_SEQ_CST);
    COUNT(fn_runs);
    keel_db_param p[] = {KEEL_DB_P_INT(j->v)};
    int rc = keel_db_exec(c, "INSERT INTO t_job (v) VALUES ($1)", p, 1, NULL);
    if (rc == 0) {
        keel_db_rows *rows = NULL;
        rc = keel_db_query(c, "SELECT count(*) FROM t_job WHERE v = $1", p, 1, &rows);
        if (rc == 0) {
            if (keel_db_rows_next(rows) == 1)
                j->seen = keel_db_get_int(rows, 0);
            keel_db_rows_free(rows);
        }
    }
    if (rc == 0 && j->ms)
        usleep(j->ms * 1000);
    if (rc == 0 && j->v == -1)
        rc = KEEL_EDB_NOROW;
    if (rc == 0 && j->v == -2)
        rc = keel_db_exec(c, "INSERT INTO t_job (v, u) VALUES (5, 'x'), (6, 'x')", NULL, 0, NULL);
    __atomic_sub_fetch(&in_fn, 1, __ATOMIC_SEQ_CST);
    return rc;
}

static void tx_done(keel_req *r, void *arg, int status)
{
    tx_job *j = arg;
    if (status == KEEL_ECANCELED) {
        COUNT(done_canceled);
        return; /* nothing to free */
    }
    if (status < 0) {
        COUNT(done_err);
        keel_db_respond_error(r, status);
        return;
    }
    COUNT(done_ok);
    char body[64];
    int n = snprintf(body, sizeof(body), "seen=%lld", (long long)j->seen);
    keel_respond(r, 200, "text/plain", body, (size_t)n);
}

static keel_flow h_tx(keel_req *r)
{
    tx_job *j = KEEL_REQ_JOB(r, tx_job, tx_cleanup);
    j->heap = keel_strdup("owned");
    keel_str v = keel_req_query_param(r, "v"), ms = keel_req_query_param(r, "ms");
    j->v = v.ptr ? atoll(v.ptr) : 1;
    j->ms = ms.ptr ? (unsigned)atoi(ms.ptr) : 0;
    return keel_db_job_run_tx(r, g_db, tx_insert, tx_done, j);
}

static const keel_route routes[] = {
    {.name = "tx", .method = "GET", .path = "/tx", .handler = h_tx},
    /* the same with a deadline the transaction outlives */
    {.name = "slow", .method = "GET", .path = "/slow", .handler = h_tx, .timeout_ms = 100},
};

/* ---------------------------------------------------------------- server */

static testdb_srv start(unsigned pool_max, uint64_t queue_max)
{
    memset(&C, 0, sizeof(C));
    keel_db_conn *c = conn();
    ok(c, g_pg ? "DROP TABLE IF EXISTS t_job CASCADE" : "DROP TABLE IF EXISTS t_job");
    ok(c, "CREATE TABLE t_job (v BIGINT NOT NULL, u TEXT UNIQUE)");
    keel_db_disconnect(c);

    keel_config cfg;
    testsrv_config(&cfg);
    cfg.work_threads = 1;
    cfg.log_level = KEEL_LOG_FATAL; /* expected failures would log errors */
    testdb_options(&cfg, g_url, pool_max, 1, queue_max);
    testdb_srv v = testdb_open(&cfg, &g_db);
    keel_config_close(&cfg);
    assert_int_equal(keel_server_add_routes(v.s, routes, sizeof(routes) / sizeof(routes[0])), 0);
    assert_int_equal(keel_server_start(v.s), 0);
    return v;
}

static void stop(testdb_srv v)
{
    testdb_close(v, &g_db, 0);
    keel_log_close();
}

static int get(testdb_srv v, const char *path, char *out, size_t cap)
{
    return loopback_get(keel_server_port(v.s), path, out, cap);
}

static void wait_in_fn(int want)
{
    uint64_t t0 = keel_now_ms();
    while (__atomic_load_n(&in_fn, __ATOMIC_SEQ_CST) != want && keel_now_ms() - t0 < 5000)
        usleep(5 * 1000);
    assert_int_equal(__atomic_load_n(&in_fn, __ATOMIC_SEQ_CST), want);
}

/* ---------------------------------------------------------------- tests */

static void test_tx_commit_rollback(void **state)
{
    (void)state;
    testdb_srv v = start(2, 16);
    static char buf[8192];
    /* committed: the row seen inside the transaction, and after it */
    assert_int_equal(get(v, "/tx?v=1", buf, sizeof(buf)), 200);
    assert_non_null(strstr(buf, "seen=1"));
    assert_int_equal(rows_where("v = 1"), 1);
    /* fn fails: rolled back, its error answered (KEEL_EDB_NOROW: 404) */
    assert_int_equal(get(v, "/tx?v=-1", buf, sizeof(buf)), 404);
    assert_int_equal(rows_where("v = -1"), 0);
    /* a statement fails after the insert: 409, the insert undone too */
    assert_int_equal(get(v, "/tx?v=-2", buf, sizeof(buf)), 409);
    assert_int_equal(rows_where("v = -2 OR u IS NOT NULL"), 0);
    assert_int_equal(rows_where("1 = 1"), 1);
    stop(v);
    assert_int_equal(C.fn_runs, 3);
    assert_int_equal(C.done_ok, 1);
    assert_int_equal(C.done_err, 2);
    assert_int_equal(C.cleanups, 3);
}

static void test_queue_full(void **state)
{
    (void)state;
    testdb_srv v = start(1, 1);
    static char buf[8192];
    int a = connect_to(keel_server_port(v.s), 10);
    loopback_send_get(a, "/tx?v=10&ms=300"); /* on the one pool thread */
    wait_in_fn(1);
    int b = connect_to(keel_server_port(v.s), 10);
    loopback_send_get(b, "/tx?v=11"); /* queued */
    testdb_wait_gauge(v, "db_pool_waiting", 1);
    /* refused: 503 problem+json with Retry-After, done never called */
    assert_int_equal(get(v, "/tx?v=12", buf, sizeof(buf)), 503);
    assert_non_null(strstr(buf, "Retry-After: 1\r\n"));
    assert_non_null(strstr(buf, "application/problem+json"));
    assert_int_equal(loopback_read_status(a, buf, sizeof(buf)), 200);
    assert_int_equal(loopback_read_status(b, buf, sizeof(buf)), 200);
    assert_int_equal(rows_where("v = 12"), 0);
    stop(v);
    assert_int_equal(C.fn_runs, 2);
    assert_int_equal(C.done_ok, 2);
    assert_int_equal(C.cleanups, 3); /* the refused request's job too */
}

static void test_request_ends_first(void **state)
{
    (void)state;
    testdb_srv v = start(2, 16);
    static char buf[8192];
    /* the handler deadline (100 ms) passes inside a 700 ms transaction */
    assert_int_equal(get(v, "/slow?v=20&ms=700", buf, sizeof(buf)), 503);
    testsrv_wait_nonzero(&C.done_canceled);
    stop(v);
    assert_int_equal(C.fn_runs, 1);
    assert_int_equal(C.done_canceled, 1); /* exactly once */
    assert_int_equal(C.done_ok + C.done_err, 0);
    assert_int_equal(C.cleanups, 1);      /* exactly once, after done */
    /* the pool thread finished the transaction on its own: committed */
    assert_int_equal(rows_where("v = 20"), 1);
}

/* ---------------------------------------------------------------- groups */

static int setup_sqlite(void **state)
{
    (void)state;
    return testdb_setup("/tmp/keel-test-dbjob.XXXXXX", "test.db", 0);
}

static int setup_pg(void **state)
{
    (void)state;
    return testdb_setup("/tmp/keel-test-dbjob.XXXXXX", NULL, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tx_commit_rollback),
        cmocka_unit_test(test_queue_full),
        cmocka_unit_test(test_request_ends_first),
    };
    int failed =
        cmocka_run_group_tests_name("db jobs on SQLite", tests, setup_sqlite, testdb_teardown);
    if (testdb_have_pg("db jobs"))
        failed +=
            cmocka_run_group_tests_name("db jobs on PostgreSQL", tests, setup_pg, testdb_teardown);
    return failed;
}
