/* db_pool.c — the database pool: keel_db_open / keel_db_run / keel_db_close,
 * reconnection with backoff, idle connections, the `database` health check
 * and the pool gauges.
 *
 * Design. The pool is a keel_pool (server.h) of DATABASE_POOL_MAX threads
 * with a bounded queue (DATABASE_QUEUE_MAX; full -> KEEL_EBUSY -> 503).
 * Each thread owns one slot, found through a thread-local pointer set when
 * the thread starts; a slot holds at most one connection, so a job never
 * waits for a connection: it waits in the queue for a thread. The first
 * DATABASE_POOL_MIN slots connect as their thread starts and stay open;
 * the others connect on their first job and a janitor thread closes them
 * after DATABASE_IDLE_TIMEOUT without a job (pool threads block in the
 * pool's queue and cannot time out themselves).
 *
 * Losing the database never needs a restart: a connection the driver found
 * broken is closed after its job, and the next job opens a new one; the
 * other slots' connections are checked with a round trip before their
 * next job (an epoch counter says a loss was seen since they opened). Failed
 * attempts back off exponentially (100 ms doubling to 5 s), shared by all
 * slots so an outage costs one attempt per interval, not one per job;
 * meanwhile jobs fail at once with KEEL_EDB_UNAVAILABLE (503) instead of
 * each waiting out a connect timeout.
 *
 * Lifetime. The keel_db is shared by its owner and by every pool thread
 * (which calls thread_stop when the server frees the pool, possibly after
 * keel_db_close): a reference count frees it when the last one lets go.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "keel/health.h"
#include "keel/log.h"
#include "store/db_internal.h"

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 5000
#define HEALTH_TIMEOUT_MS 2000

struct db_slot {
    keel_db *db;
    unsigned index;
    pthread_mutex_t mu;   /* the pool thread during a job; the janitor */
    keel_db_conn *conn;
    unsigned conn_epoch;  /* db->epoch when conn was opened */
    uint64_t last_used_ms;
};

static __thread db_slot *tls_slot;

/* ---------------------------------------------------------------- lifetime */

static void db_free(keel_db *db)
{
    for (unsigned i = 0; i < db->nslots; i++) {
        keel__db_conn_close(db->slots[i].conn);
        pthread_mutex_destroy(&db->slots[i].mu);
    }
    keel_free(db->slots);
    keel__db_conn_close(db->health_conn);
    pthread_mutex_destroy(&db->health_mu);
    pthread_mutex_destroy(&db->backoff_mu);
    pthread_mutex_destroy(&db->jmu);
    pthread_cond_destroy(&db->jcond);
    keel_free(db->engines);
    keel_free(db->target);
    keel_free(db->safe_target);
    keel_free(db);
}

void keel__db_ref(keel_db *db)
{
    __atomic_add_fetch(&db->refs, 1, __ATOMIC_ACQ_REL);
}

void keel__db_unref(keel_db *db)
{
    if (__atomic_sub_fetch(&db->refs, 1, __ATOMIC_ACQ_REL) == 0)
        db_free(db);
}

/* For log lines: postgres://user:secret@host/db?password=x ->
 * postgres://user:***@host/db?... (the query may hold a password too). */
static char *mask_password(const char *url)
{
    const char *scheme = strstr(url, "://");
    const char *at = scheme ? strchr(scheme + 3, '@') : NULL;
    const char *colon = scheme ? strchr(scheme + 3, ':') : NULL;
    char *out;
    if (!at || !colon || colon > at) {
        out = keel_strdup(url);
    } else {
        size_t head = (size_t)(colon - url) + 1;
        size_t n = head + 3 + strlen(at) + 1;
        out = keel_malloc(n);
        snprintf(out, n, "%.*s***%s", (int)head, url, at);
    }
    char *q = scheme ? strchr(out, '?') : NULL;
    if (q && strlen(q) >= 4)
        memcpy(q, "?...", 5);
    return out;
}

/* ---------------------------------------------------------------- connections */

static void conn_closed(keel_db *db)
{
    __atomic_sub_fetch(&db->open_conns, 1, __ATOMIC_RELAXED);
}

int keel__db_acquire_conn(keel_db *db, const char *who, int index, keel_db_conn **out)
{
    *out = NULL;
    uint64_t now = keel_now_ms();
    pthread_mutex_lock(&db->backoff_mu);
    int wait = now < db->retry_at_ms;
    pthread_mutex_unlock(&db->backoff_mu);
    if (wait)
        return KEEL_EDB_UNAVAILABLE;
    char err[512] = "";
    int rc = keel__db_conn_open(db->drv, db->target, &db->settings, &db->obs, out, err,
                                sizeof(err));
    pthread_mutex_lock(&db->backoff_mu);
    if (rc == 0) {
        int recovered = db->backoff_ms != 0;
        db->backoff_ms = 0;
        db->retry_at_ms = 0;
        pthread_mutex_unlock(&db->backoff_mu);
        __atomic_add_fetch(&db->open_conns, 1, __ATOMIC_RELAXED);
        keel_log(recovered ? KEEL_LOG_INFO : KEEL_LOG_DEBUG, "database connected",
                 "{s:s,s:s,s:s,s:i}", "driver", db->drv->name, "database", db->safe_target,
                 "for", who, "slot", index);
        return 0;
    }
    /* The database is unreachable: connections open elsewhere in the pool
     * are suspect too. */
    __atomic_add_fetch(&db->epoch, 1, __ATOMIC_ACQ_REL);
    db->backoff_ms = db->backoff_ms ? db->backoff_ms * 2 : BACKOFF_FIRST_MS;
    if (db->backoff_ms > BACKOFF_MAX_MS)
        db->backoff_ms = BACKOFF_MAX_MS;
    db->retry_at_ms = keel_now_ms() + db->backoff_ms;
    uint64_t next = db->backoff_ms;
    pthread_mutex_unlock(&db->backoff_mu);
    if (db->obs.errors)
        keel_metric_add(db->obs.errors, db->obs.shard, (const char *[]){"unavailable"}, 1);
    keel_log(KEEL_LOG_WARN, "database connection failed", "{s:s,s:s,s:s,s:i}", "driver",
             db->drv->name, "database", db->safe_target, "error", err, "retry_in_ms",
             (int)next);
    return KEEL_EDB_UNAVAILABLE;
}

void keel__db_release_conn(keel_db *db, keel_db_conn *c)
{
    if (!c)
        return;
    keel__db_conn_close(c);
    conn_closed(db);
}

void keel__db_conn_lost(keel_db *db, keel_db_conn *c)
{
    keel_log(KEEL_LOG_WARN, "database connection lost; reconnecting on next use",
             "{s:s,s:s}", "driver", db->drv->name, "error", keel_db_errmsg(c));
    __atomic_add_fetch(&db->epoch, 1, __ATOMIC_ACQ_REL);
}

/* Opens the slot's connection, unless a recent failure says to wait. */
static int slot_connect(db_slot *s)
{
    unsigned epoch = __atomic_load_n(&s->db->epoch, __ATOMIC_ACQUIRE);
    int rc = keel__db_acquire_conn(s->db, "pool", (int)s->index, &s->conn);
    if (rc == 0)
        s->conn_epoch = epoch;
    return rc;
}

static void slot_drop(db_slot *s)
{
    if (!s->conn)
        return;
    keel__db_release_conn(s->db, s->conn);
    s->conn = NULL;
}

static void thread_start(void *arg)
{
    keel_db *db = arg;
    unsigned i = __atomic_fetch_add(&db->next_slot, 1, __ATOMIC_RELAXED);
    db_slot *s = &db->slots[i];
    tls_slot = s;
    if (i < db->pool_min) {
        /* DATABASE_POOL_MIN connections are opened now; if the database is
         * down, the first job retries (with backoff) instead. */
        pthread_mutex_lock(&s->mu);
        if (slot_connect(s) == 0)
            s->last_used_ms = keel_now_ms();
        pthread_mutex_unlock(&s->mu);
    }
}

static void thread_stop(void *arg)
{
    keel_db *db = arg;
    db_slot *s = tls_slot;
    if (s) {
        pthread_mutex_lock(&s->mu);
        slot_drop(s);
        pthread_mutex_unlock(&s->mu);
        tls_slot = NULL;
    }
    keel__db_unref(db);
}

/* Closes connections idle past DATABASE_IDLE_TIMEOUT, above POOL_MIN. */
static void *janitor_main(void *arg)
{
    keel_db *db = arg;
    uint64_t step = db->idle_timeout_ms / 4;
    if (step < 50)
        step = 50;
    if (step > 1000)
        step = 1000;
    pthread_mutex_lock(&db->jmu);
    while (!db->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + step * 1000000u;
        ts.tv_sec += (time_t)(ns / 1000000000u);
        ts.tv_nsec = (long)(ns % 1000000000u);
        pthread_cond_timedwait(&db->jcond, &db->jmu, &ts);
        if (db->stopping)
            break;
        uint64_t now = keel_now_ms();
        for (unsigned i = db->pool_min; i < db->nslots; i++) {
            db_slot *s = &db->slots[i];
            if (pthread_mutex_trylock(&s->mu) != 0)
                continue; /* running a job: not idle */
            if (s->conn && now - s->last_used_ms >= db->idle_timeout_ms) {
                keel_log(KEEL_LOG_DEBUG, "database connection idle: closed", "{s:i}", "slot",
                         (int)i);
                slot_drop(s);
            }
            pthread_mutex_unlock(&s->mu);
        }
    }
    pthread_mutex_unlock(&db->jmu);
    keel_log_thread_close();
    return NULL;
}

/* ---------------------------------------------------------------- jobs */

typedef struct db_job {
    keel_db *db;
    keel_db_fn fn;
    keel_db_done_cb done;
    void *arg;
    const char *request_id;
    keel__db_spans *spans; /* NULL: not traced */
    int tx; /* keel_db_run_tx: fn inside keel_db_tx */
    int rc;
} db_job;

/* A connection opened before another one was found lost may be dead too
 * (the server restarted): one round trip tells, so the request does not
 * pay for it with a 503. */
static void slot_revalidate(db_slot *s)
{
    keel_db *db = s->db;
    if (!s->conn || s->conn_epoch == __atomic_load_n(&db->epoch, __ATOMIC_ACQUIRE))
        return;
    if (db->drv->ping(s->conn) == 0) {
        s->conn_epoch = __atomic_load_n(&db->epoch, __ATOMIC_ACQUIRE);
        return;
    }
    slot_drop(s);
}

static void job_work(void *arg)
{
    db_job *j = arg;
    db_slot *s = tls_slot;
    pthread_mutex_lock(&s->mu);
    slot_revalidate(s);
    j->rc = s->conn ? 0 : slot_connect(s);
    if (j->rc == 0) {
        keel_db_conn *c = s->conn;
        __atomic_add_fetch(&j->db->in_use, 1, __ATOMIC_RELAXED);
        c->request_id = j->request_id;
        c->spans = j->spans;
        j->rc = j->tx ? keel_db_tx(c, j->fn, j->arg) : j->fn(c, j->arg);
        c->spans = NULL;
        keel__db_conn_reset(c);
        __atomic_sub_fetch(&j->db->in_use, 1, __ATOMIC_RELAXED);
        s->last_used_ms = keel_now_ms();
        if (c->broken) {
            /* Lost: the next job connects again (at once; backoff only
             * after a failed attempt). */
            keel__db_conn_lost(j->db, c);
            slot_drop(s);
        }
    }
    pthread_mutex_unlock(&s->mu);
}

static void job_after(keel_req *r, void *arg, int status)
{
    db_job *j = arg;
    if (status == 0)
        keel__db_spans_emit(j->spans); /* before done: it may end the request */
    j->done(r, j->arg, status == 0 ? j->rc : status);
    keel_free(j);
}

static int run(keel_req *r, keel_db *db, int tx, keel_db_fn fn, keel_db_done_cb done, void *arg)
{
    if (!r || !db || !fn || !done)
        return KEEL_EINVAL;
    db_job *j = keel_calloc(1, sizeof(*j));
    j->db = db;
    j->fn = fn;
    j->done = done;
    j->arg = arg;
    j->tx = tx;
    /* The request is held until `done` runs, so its id outlives the job. */
    j->request_id = keel_req_id(r);
    j->spans = keel__db_spans_new(r, db->drv->name);
    int rc = keel_req_submit_pool(r, db->pool, job_work, job_after, j);
    if (rc < 0)
        keel_free(j);
    return rc;
}

int keel_db_run(keel_req *r, keel_db *db, keel_db_fn fn, keel_db_done_cb done, void *arg)
{
    return run(r, db, 0, fn, done, arg);
}

int keel_db_run_tx(keel_req *r, keel_db *db, keel_db_fn fn, keel_db_done_cb done, void *arg)
{
    return run(r, db, 1, fn, done, arg);
}

/* Work not tied to a request: done(arg, status) on w's loop. */
typedef struct db_wjob {
    db_job j;
    keel_db_worker_cb wdone;
} db_wjob;

static void wjob_after(void *arg, int status)
{
    db_wjob *wj = arg;
    wj->wdone(wj->j.arg, status == 0 ? wj->j.rc : status);
    keel_free(wj);
}

int keel_db_run_worker(keel_worker *w, keel_db *db, int tx, keel_db_fn fn,
                       keel_db_worker_cb done, void *arg)
{
    if (!w || !db || !fn || !done)
        return KEEL_EINVAL;
    db_wjob *wj = keel_calloc(1, sizeof(*wj));
    wj->j.db = db;
    wj->j.fn = fn;
    wj->j.arg = arg;
    wj->j.tx = tx;
    wj->wdone = done;
    /* job_work reads only db, fn, arg, tx, request_id and spans (NULL) */
    int rc = keel_worker_submit_pool(w, db->pool, job_work, wjob_after, wj);
    if (rc < 0)
        keel_free(wj);
    return rc;
}

/* A job's submit path: on failure the answer is the caller's no more. */
static keel_flow job_run(keel_req *r, keel_db *db, int tx, keel_db_fn fn, keel_db_done_cb done,
                         void *job)
{
    int rc = run(r, db, tx, fn, done, job);
    if (rc == 0)
        return KEEL_SUSPEND;
    keel_db_respond_error(r, rc); /* KEEL_EBUSY: 503 + Retry-After: 1 */
    return KEEL_DONE;
}

keel_flow keel_db_job_run(keel_req *r, keel_db *db, keel_db_fn fn, keel_db_done_cb done, void *job)
{
    return job_run(r, db, 0, fn, done, job);
}

keel_flow keel_db_job_run_tx(keel_req *r, keel_db *db, keel_db_fn fn, keel_db_done_cb done,
                             void *job)
{
    return job_run(r, db, 1, fn, done, job);
}

/* ---------------------------------------------------------------- health */

/* Jobs queued for a pool thread and statements of keel_db_query_async
 * not sent yet. */
static uint64_t waiting(keel_db *db)
{
    return keel_pool_queued(db->pool) +
           __atomic_load_n(&db->async_waiting, __ATOMIC_RELAXED);
}

static void pool_counts(keel_db *db, int *open, int *busy)
{
    *open = __atomic_load_n(&db->open_conns, __ATOMIC_RELAXED);
    *busy = __atomic_load_n(&db->in_use, __ATOMIC_RELAXED);
    if (*busy > *open)
        *busy = *open;
}

/* Runs on a default work-pool thread, on a connection of its own (a pool
 * connection belongs to its pool thread): a round trip, reconnecting once
 * when the kept connection went stale, so the check turns healthy again by
 * itself as soon as the database is back. */
static int health_check(void *arg, char *detail, size_t cap)
{
    keel_db *db = arg;
    if (pthread_mutex_trylock(&db->health_mu) != 0) {
        snprintf(detail, cap, "previous check still running");
        return 1;
    }
    uint64_t t0 = keel_now_ns();
    char err[512] = "";
    int rc = KEEL_EDB_UNAVAILABLE;
    if (db->health_conn) {
        rc = db->drv->ping(db->health_conn);
        if (rc < 0) {
            snprintf(err, sizeof(err), "%s", keel_db_errmsg(db->health_conn));
            keel__db_conn_close(db->health_conn);
            db->health_conn = NULL;
        }
    }
    if (!db->health_conn) {
        keel__db_settings st = db->settings;
        if (!st.connect_timeout_ms || st.connect_timeout_ms > HEALTH_TIMEOUT_MS)
            st.connect_timeout_ms = HEALTH_TIMEOUT_MS;
        if (!st.statement_timeout_ms || st.statement_timeout_ms > HEALTH_TIMEOUT_MS)
            st.statement_timeout_ms = HEALTH_TIMEOUT_MS;
        t0 = keel_now_ns();
        rc = keel__db_conn_open(db->drv, db->target, &st, NULL, &db->health_conn, err,
                                sizeof(err));
        if (rc == 0) {
            rc = db->drv->ping(db->health_conn);
            if (rc < 0) {
                snprintf(err, sizeof(err), "%s", keel_db_errmsg(db->health_conn));
                keel__db_conn_close(db->health_conn);
                db->health_conn = NULL;
            }
        }
    }
    double ms = (double)(keel_now_ns() - t0) / 1e6;
    pthread_mutex_unlock(&db->health_mu);
    int open, busy;
    pool_counts(db, &open, &busy);
    unsigned long long nwait = (unsigned long long)waiting(db);
    if (rc == 0)
        snprintf(detail, cap, "%s ok, round trip %.2f ms; pool open=%d in_use=%d idle=%d "
                 "waiting=%llu max=%u",
                 db->drv->name, ms, open, busy, open - busy, nwait, db->nslots);
    else
        snprintf(detail, cap, "%s: %.120s; pool open=%d in_use=%d waiting=%llu",
                 db->drv->name, err[0] ? err : keel_db_strerror(rc), open, busy, nwait);
    return rc != 0;
}

/* ---------------------------------------------------------------- metrics */

static double g_open(void *arg)
{
    int open, busy;
    pool_counts(arg, &open, &busy);
    return open;
}

static double g_in_use(void *arg)
{
    int open, busy;
    pool_counts(arg, &open, &busy);
    return busy;
}

static double g_idle(void *arg)
{
    int open, busy;
    pool_counts(arg, &open, &busy);
    return open - busy;
}

static double g_waiting(void *arg)
{
    return (double)waiting(arg);
}

static double g_rejected(void *arg)
{
    keel_db *db = arg;
    return (double)(keel_pool_rejected(db->pool) +
                    __atomic_load_n(&db->async_rejected, __ATOMIC_RELAXED));
}

static void register_metrics(keel_db *db, keel_metrics *m)
{
    db->obs.duration = keel_metrics_histogram(
        m, "db_query_duration_seconds", "Database statement time, by first SQL keyword",
        (const char *[]){"op", NULL}, keel_latency_buckets, keel_latency_nbuckets);
    db->obs.errors = keel_metrics_counter(m, "db_errors_total", "Database errors, by kind",
                                          (const char *[]){"kind", NULL});
    keel_metric_declare_each(db->obs.errors, NULL, 0, keel__db_error_kinds);
    keel_metrics_callback(m, "db_pool_connections_open", "Open database connections",
                          KEEL_GAUGE, g_open, db);
    keel_metrics_callback(m, "db_pool_connections_in_use",
                          "Database connections running a job", KEEL_GAUGE, g_in_use, db);
    keel_metrics_callback(m, "db_pool_connections_idle", "Open database connections idle",
                          KEEL_GAUGE, g_idle, db);
    keel_metrics_callback(m, "db_pool_waiting", "Database jobs waiting for a connection",
                          KEEL_GAUGE, g_waiting, db);
    keel_metrics_callback(m, "db_pool_rejected_total",
                          "Database jobs refused because the queue was full", KEEL_COUNTER,
                          g_rejected, db);
}

/* ---------------------------------------------------------------- open / close */

int keel_db_open(keel_db **out, keel_server *s, const keel_config *cfg,
                 struct keel_metrics *m, struct keel_health *h)
{
    if (!out || !s || !cfg)
        return KEEL_EINVAL;
    *out = NULL;
    char err[512] = "";
    const keel__db_driver *drv;
    char *target = NULL;
    const keel_db_options *o = keel_config_get(cfg, &keel_db_config);
    int rc = keel__db_parse_url(o->database_url, &drv, &target, err, sizeof(err));
    if (rc == 0)
        rc = keel__db_prepare_target(drv, target, err, sizeof(err));
    if (rc < 0) {
        keel_log(KEEL_LOG_FATAL, "DATABASE_URL: cannot use the database", "{s:s}", "error",
                 err);
        keel_free(target);
        return KEEL_ECONFIG;
    }
    keel_db *db = keel_calloc(1, sizeof(*db));
    db->drv = drv;
    db->target = target;
    db->safe_target = mask_password(target);
    keel__db_settings_from(&db->settings, &db->obs, cfg);
    db->obs.shard = keel_server_workers(s); /* the shared, locked shard */
    db->server = s;
    db->nworkers = keel_server_workers(s);
    db->engines = keel_calloc(db->nworkers, sizeof(void *));
    db->queue_max = o->db_queue_max ? o->db_queue_max : 1024;
    db->nslots = o->db_pool_max ? o->db_pool_max : 1;
    db->pool_min = o->db_pool_min < db->nslots ? o->db_pool_min : db->nslots;
    db->idle_timeout_ms = o->db_idle_timeout_ms;
    db->slots = keel_calloc(db->nslots, sizeof(db_slot));
    for (unsigned i = 0; i < db->nslots; i++) {
        db->slots[i].db = db;
        db->slots[i].index = i;
        pthread_mutex_init(&db->slots[i].mu, NULL);
    }
    pthread_mutex_init(&db->backoff_mu, NULL);
    pthread_mutex_init(&db->health_mu, NULL);
    pthread_mutex_init(&db->jmu, NULL);
    pthread_cond_init(&db->jcond, NULL);
    db->refs = 1 + (int)db->nslots;
    if (m)
        register_metrics(db, m);
    if (h)
        keel_health_register(h, "database", 1, HEALTH_TIMEOUT_MS, health_check, db);
    keel_log(KEEL_LOG_INFO, "database pool", "{s:s,s:s,s:i,s:i,s:i}", "driver", drv->name,
             "database", db->safe_target, "pool_max", (int)db->nslots, "pool_min",
             (int)db->pool_min, "queue_max", (int)o->db_queue_max);
    if (db->idle_timeout_ms && db->nslots > db->pool_min &&
        pthread_create(&db->janitor, NULL, janitor_main, db) == 0)
        db->has_janitor = 1;
    keel_pool_opts po = {.name = "db",
                         .threads = db->nslots,
                         .queue_max = o->db_queue_max,
                         .thread_start = thread_start,
                         .thread_stop = thread_stop,
                         .arg = db};
    db->pool = keel_server_pool_new(s, &po);
    *out = db;
    return 0;
}

void keel_db_close(keel_db *db)
{
    if (!db)
        return;
    if (db->has_janitor) {
        pthread_mutex_lock(&db->jmu);
        db->stopping = 1;
        pthread_cond_signal(&db->jcond);
        pthread_mutex_unlock(&db->jmu);
        pthread_join(db->janitor, NULL);
        db->has_janitor = 0;
    }
    pthread_mutex_lock(&db->health_mu);
    keel__db_conn_close(db->health_conn);
    db->health_conn = NULL;
    pthread_mutex_unlock(&db->health_mu);
    keel__db_unref(db);
}

const char *keel_db_driver(const keel_db *db)
{
    return db ? db->drv->name : NULL;
}
