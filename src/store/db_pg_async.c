/* db_pg_async.c — keel_db_query_async on PostgreSQL: statements run on the
 * request's own loop, with no pool thread in between.
 *
 * Design. Each worker loop gets an engine on its first statement: a few
 * libpq connections (DATABASE_POOL_MAX shared out among the workers, at
 * least one each) in non-blocking pipeline mode, a queue of statements
 * not sent yet, a uv_poll on each connection's socket, and a uv_check
 * that sends, once per loop iteration, every statement that became ready
 * in it (the requests read in that iteration), to the connections with
 * the fewest statements in flight, up to PIPELINE_DEPTH each. Every
 * statement is followed by its own Sync, so it is its own implicit
 * transaction and an error in one never touches its neighbours. Results
 * come back in order; each statement's callback runs on the loop as soon
 * as its results are read.
 *
 * Statements are prepared once per connection and cached by SQL text and
 * parameter types (the driver's cache; the Prepare goes down the pipeline
 * just ahead of the first execution). A statement the server forgot
 * (26000) or whose plan went stale (0A000) is prepared and sent again,
 * once. An evicted statement is DEALLOCATEd down the pipeline.
 *
 * Connections open on the default work pool (libpq's connect blocks, and
 * the pool's code sets the statement timeout and shares its backoff):
 * during an outage a statement fails at once with KEEL_EDB_UNAVAILABLE
 * instead of waiting. A connection that fails — a read or write error, the
 * server gone (also noticed while idle: the socket is always polled) —
 * fails everything in flight on it with KEEL_EDB_UNAVAILABLE and is closed;
 * the next statement opens a new one.
 *
 * Lifetime. The engine holds a reference on the keel_db. An idle engine
 * keeps the loop alive with nothing (its handles are unreferenced while no
 * statement is in flight); when the server drains and the engine is idle,
 * its check closes the connections and its handles, and the last close
 * callback frees it — before the worker's loop ends, so the loop closes
 * clean. A statement whose request ended first (deadline, client gone)
 * still runs if it was sent; its result is dropped (KEEL_ECANCELED).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <uv.h>

#include "keel/log.h"
#include "store/db_pg_internal.h"

#define PIPELINE_DEPTH 16      /* statements in flight per connection */
#define CONNECT_RETRY_MS 100   /* a slot whose connect failed waits this long */

enum { PH_PREPARE = 0, PH_EXEC, PH_SYNC };
enum { AC_NONE = 0, AC_CONNECTING, AC_READY, AC_CLOSING };

typedef struct engine engine;

typedef struct aconn {
    engine *e;
    unsigned index;
    int state;
    pg_conn *pc;               /* AC_READY */
    uv_poll_t poll;            /* initialised in AC_READY and AC_CLOSING */
    int events;                /* polled events */
    int busy;                  /* counted in_use; poll handle referenced */
    int want_write;            /* output libpq could not send yet */
    int dirty;                 /* sent to this round: flush */
    keel__db_aq *head, *tail;  /* in flight, in order */
    unsigned nflight;
    uint64_t retry_ms;         /* no connect before (loop time) */
} aconn;

struct engine {
    keel_db *db;
    uv_loop_t *loop;
    unsigned id;
    uv_check_t check;          /* sends; closes everything when draining */
    uv_idle_t idle;            /* no sleeping while statements wait */
    unsigned handles;          /* uv handles not closed yet */
    int closing;
    keel__db_aq *wait_head, *wait_tail;
    unsigned nconns;
    aconn conns[];
};

static void conn_lost(aconn *ac);

/* Only there to keep the loop from sleeping in its poll phase while
 * statements wait: the check right after sends them (and stops it). */
static void on_idle(uv_idle_t *h)
{
    (void)h;
}

/* ---------------------------------------------------------------- small helpers */

static void wait_push(engine *e, keel__db_aq *q, int front)
{
    __atomic_add_fetch(&e->db->async_waiting, 1, __ATOMIC_RELAXED);
    if (front) {
        q->next = e->wait_head;
        e->wait_head = q;
        if (!e->wait_tail)
            e->wait_tail = q;
    } else {
        q->next = NULL;
        if (e->wait_tail)
            e->wait_tail->next = q;
        else
            e->wait_head = q;
        e->wait_tail = q;
    }
    uv_idle_start(&e->idle, on_idle);
}

static keel__db_aq *wait_pop(engine *e)
{
    keel__db_aq *q = e->wait_head;
    if (!q)
        return NULL;
    e->wait_head = q->next;
    if (!e->wait_head)
        e->wait_tail = NULL;
    q->next = NULL;
    __atomic_sub_fetch(&e->db->async_waiting, 1, __ATOMIC_RELAXED);
    return q;
}

/* Fails every statement not sent yet (no connection to be had). */
static void fail_waiting(engine *e, int rc)
{
    keel__db_aq *q;
    while ((q = wait_pop(e)) != NULL)
        keel__db_aq_complete(q, rc, NULL);
}

/* Polls for the answers (and for the server going away while idle);
 * references the loop only while something is in flight. */
static void update_poll(aconn *ac);

static void on_poll(uv_poll_t *h, int status, int events);

static void update_poll(aconn *ac)
{
    int events = UV_READABLE | (ac->want_write ? UV_WRITABLE : 0);
    if (events != ac->events) {
        uv_poll_start(&ac->poll, events, on_poll);
        ac->events = events;
    }
    int busy = ac->nflight > 0 || ac->want_write;
    if (busy != ac->busy) {
        ac->busy = busy;
        if (busy) {
            uv_ref((uv_handle_t *)&ac->poll);
            __atomic_add_fetch(&ac->e->db->in_use, 1, __ATOMIC_RELAXED);
        } else {
            uv_unref((uv_handle_t *)&ac->poll);
            __atomic_sub_fetch(&ac->e->db->in_use, 1, __ATOMIC_RELAXED);
        }
    }
}

static void handle_gone(engine *e)
{
    if (--e->handles == 0 && e->closing) {
        keel__db_unref(e->db);
        keel_free(e);
    }
}

static void on_engine_handle_closed(uv_handle_t *h)
{
    handle_gone(h->data);
}

static void on_conn_closed(uv_handle_t *h)
{
    aconn *ac = h->data;
    ac->state = AC_NONE;
    handle_gone(ac->e);
}

/* Closes the connection (its statements are done with). */
static void conn_close(aconn *ac)
{
    if (ac->busy) {
        ac->busy = 0;
        __atomic_sub_fetch(&ac->e->db->in_use, 1, __ATOMIC_RELAXED);
    }
    ac->want_write = 0;
    ac->dirty = 0;
    /* the handle first: its file descriptor is closed by PQfinish */
    uv_close((uv_handle_t *)&ac->poll, on_conn_closed);
    ac->state = AC_CLOSING;
    pg_conn *pc = ac->pc;
    ac->pc = NULL;
    keel__db_release_conn(ac->e->db, &pc->base);
}

/* ---------------------------------------------------------------- the statement cache */

static void statement_unbusy(pg_conn *pc, keel__db_aq *q)
{
    keel__db_cache_entry *ce = q->entry;
    q->entry = NULL;
    /* The entry may have been dropped (and its slot reused) meanwhile. */
    if (ce && ce->key && ce->busy > 0 && !strcmp(ce->stmt, q->stmt))
        ce->busy--;
    (void)pc;
}

static void send_internal(aconn *ac, const char *sql);

/* An evicted statement: DEALLOCATE it down the pipeline (never a blocking
 * round trip on the loop). */
static void release_async(void *ctx, void *stmt, int live)
{
    aconn *ac = ctx;
    if (live && ac->state == AC_READY && ac->pc) {
        char sql[64];
        snprintf(sql, sizeof(sql), "DEALLOCATE %s", (const char *)stmt);
        send_internal(ac, sql);
    }
    keel_free(stmt);
}

/* ---------------------------------------------------------------- sending */

static void flight_push(aconn *ac, keel__db_aq *q)
{
    q->next = NULL;
    if (ac->tail)
        ac->tail->next = q;
    else
        ac->head = q;
    ac->tail = q;
    ac->nflight++;
    ac->dirty = 1;
}

static void send_internal(aconn *ac, const char *sql)
{
    size_t n = strlen(sql) + 1;
    keel__db_aq *q = keel_calloc(1, sizeof(*q) + n);
    memcpy(q + 1, sql, n);
    q->sql = (const char *)(q + 1);
    q->db = ac->e->db;
    if (!pq.PQsendQueryParams(ac->pc->pg, q->sql, 0, NULL, NULL, NULL, NULL, 0) ||
        !pq.PQpipelineSync(ac->pc->pg)) {
        keel_free(q); /* the connection failed: the next send finds out */
        return;
    }
    q->phase = PH_EXEC;
    q->sent_ns = keel_now_ns();
    flight_push(ac, q);
}

/* Fails q before it reached the server (bad parameters). */
static void fail_unsent(aconn *ac, keel__db_aq *q, int rc)
{
    keel_db_conn *c = &ac->pc->base;
    c->request_id = q->request_id;
    keel__db_observe(c, q->op, q->sql, 0, rc, 0);
    c->request_id = NULL;
    keel__db_aq_complete(q, rc, NULL);
}

/* Queues q's Prepare (first use on this connection), Bind/Execute and Sync
 * in libpq's output buffer. */
static void send_one(aconn *ac, keel__db_aq *q)
{
    pg_conn *pc = ac->pc;
    pg_params pp;
    char kbuf[512], *key = kbuf, fresh[24];
    int rc = keel__db_check_params(&pc->base, q->params, q->nparams);
    if (rc == 0)
        rc = keel__pg_params_build(pc, q->params, q->nparams, &pp);
    else
        memset(&pp, 0, sizeof(pp));
    if (rc < 0) {
        keel__pg_params_free(&pp);
        fail_unsent(ac, q, rc);
        return;
    }
    /* The parameter types are fixed at Prepare: part of the key. */
    size_t sl = strlen(q->sql), n = q->nparams;
    if (sl + n + 2 > sizeof(kbuf))
        key = keel_malloc(sl + n + 2);
    memcpy(key, q->sql, sl);
    key[sl] = '\x1f';
    memcpy(key + sl + 1, pp.sig, n);
    key[sl + 1 + n] = '\0';

    keel__db_cache_entry *ce = keel__db_cache_get(&pc->cache, key);
    const char *name;
    q->prepared = 0;
    if (!ce) {
        snprintf(fresh, sizeof(fresh), "keel_%llu", (unsigned long long)++pc->seq);
        char *stmt = keel_strdup(fresh);
        ce = keel__db_cache_put(&pc->cache, key, stmt); /* may DEALLOCATE another */
        if (!ce)
            keel_free(stmt); /* every entry in flight: the unnamed statement */
        name = ce ? ce->stmt : "";
        q->prepared = 1;
        if (!pq.PQsendPrepare(pc->pg, name, q->sql, (int)n, pp.types))
            goto failed;
    } else {
        name = ce->stmt;
    }
    if (!pq.PQsendQueryPrepared(pc->pg, name, (int)n, pp.values, pp.lengths, pp.formats, 0) ||
        !pq.PQpipelineSync(pc->pg))
        goto failed;
    if (ce) {
        ce->busy++;
        q->entry = ce;
        snprintf(q->stmt, sizeof(q->stmt), "%s", name);
    }
    q->phase = q->prepared ? PH_PREPARE : PH_EXEC;
    q->sent_ns = keel_now_ns();
    flight_push(ac, q);
    goto cleanup;
failed:
    /* libpq refused to queue it: the connection is unusable. */
    keel__pg_fail(pc, NULL);
    pc->base.broken = 1;
    fail_unsent(ac, q, KEEL_EDB_UNAVAILABLE);
    conn_lost(ac);
cleanup:
    if (key != kbuf)
        keel_free(key);
    keel__pg_params_free(&pp);
}

static void flush_conn(aconn *ac)
{
    ac->dirty = 0;
    int r = pq.PQflush(ac->pc->pg);
    if (r < 0) {
        keel__pg_fail(ac->pc, NULL);
        conn_lost(ac);
        return;
    }
    ac->want_write = r == 1;
    update_poll(ac);
}

/* ---------------------------------------------------------------- connecting */

typedef struct connect_job {
    aconn *ac;
    keel_db *db;
    keel_db_conn *c;
    int rc;
} connect_job;

static void connect_work(void *arg)
{
    connect_job *j = arg;
    j->rc = keel__db_acquire_conn(j->db, "loop", (int)j->ac->index, &j->c);
}

static int conn_setup(aconn *ac, pg_conn *pc)
{
    engine *e = ac->e;
    if (pq.PQsetnonblocking(pc->pg, 1) != 0 || pq.PQenterPipelineMode(pc->pg) != 1) {
        keel__pg_fail(pc, NULL);
        return KEEL_EDB_UNAVAILABLE;
    }
    if (uv_poll_init(e->loop, &ac->poll, pq.PQsocket(pc->pg)) < 0) {
        keel__db_set_error(&pc->base, "cannot poll the connection's socket");
        return KEEL_EDB_UNAVAILABLE;
    }
    ac->poll.data = ac;
    e->handles++;
    ac->events = 0;
    ac->busy = 0;
    uv_unref((uv_handle_t *)&ac->poll);
    pc->cache.release = release_async;
    pc->cache.ctx = ac;
    ac->pc = pc;
    ac->state = AC_READY;
    update_poll(ac);
    return 0;
}

static void connect_after(void *arg, int status)
{
    (void)status;
    connect_job *j = arg;
    aconn *ac = j->ac;
    engine *e = ac->e;
    int rc = j->rc;
    if (rc == 0 && (rc = conn_setup(ac, (pg_conn *)j->c)) < 0) {
        keel_log(KEEL_LOG_WARN, "database connection unusable", "{s:s}", "error",
                 keel_db_errmsg(j->c));
        keel__db_release_conn(e->db, j->c);
    }
    keel_free(j);
    if (rc == 0) {
        if (e->wait_head)
            uv_idle_start(&e->idle, on_idle);
        return;
    }
    ac->state = AC_NONE;
    ac->retry_ms = uv_now(e->loop) + CONNECT_RETRY_MS;
    /* Nothing else can take what waits: fail it now (503), as the pool
     * does while the database is unreachable. */
    for (unsigned i = 0; i < e->nconns; i++)
        if (e->conns[i].state == AC_READY || e->conns[i].state == AC_CONNECTING)
            return;
    fail_waiting(e, KEEL_EDB_UNAVAILABLE);
}

static int connect_start(aconn *ac, keel_worker *w)
{
    connect_job *j = keel_calloc(1, sizeof(*j));
    j->ac = ac;
    j->db = ac->e->db;
    if (keel_worker_submit(w, connect_work, connect_after, j) < 0) {
        keel_free(j);
        return KEEL_EBUSY;
    }
    ac->state = AC_CONNECTING;
    return 0;
}

/* ---------------------------------------------------------------- results */

/* Everything in flight on ac fails: the connection is gone. */
static void conn_lost(aconn *ac)
{
    engine *e = ac->e;
    pg_conn *pc = ac->pc;
    keel_db_conn *c = &pc->base; /* its message says why (set by the caller) */
    c->broken = 1;
    keel__db_conn_lost(e->db, c);
    keel__db_aq *q = ac->head;
    ac->head = ac->tail = NULL;
    ac->nflight = 0;
    uint64_t now = keel_now_ns();
    /* The statements are observed while c is still open (its message is
     * in their log lines); their callbacks run after it is closed. */
    for (keel__db_aq *p = q; p; p = p->next) {
        pq.PQclear(p->res);
        pq.PQclear(p->err_res);
        p->res = p->err_res = NULL;
        p->entry = NULL;
        if (p->done) {
            c->request_id = p->request_id;
            keel__db_observe(c, p->op, p->sql, now - p->sent_ns, KEEL_EDB_UNAVAILABLE, 0);
        }
    }
    c->request_id = NULL;
    conn_close(ac);
    (void)e;
    while (q) {
        keel__db_aq *next = q->next;
        if (q->done)
            keel__db_aq_complete(q, KEEL_EDB_UNAVAILABLE, NULL);
        else
            keel_free(q);
        q = next;
    }
}

static int stale_statement(const PGresult *res)
{
    const char *s = pq.PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (!s)
        return 0;
    if (!strcmp(s, "26000")) /* prepared statement does not exist */
        return 1;
    return !strcmp(s, "0A000") && strstr(pq.PQresultErrorMessage(res), "cached plan") ? 2 : 0;
}

/* q's results are all in: run its callback. */
static void finish(aconn *ac, keel__db_aq *q)
{
    pg_conn *pc = ac->pc;
    keel_db_conn *c = &pc->base;
    uint64_t ns = keel_now_ns() - q->sent_ns;
    keel__db_cache_entry *ce = q->entry;
    statement_unbusy(pc, q);
    if (!q->done) { /* internal (DEALLOCATE) */
        pq.PQclear(q->res);
        pq.PQclear(q->err_res);
        keel_free(q);
        return;
    }
    if (q->err_res) {
        PGresult *err = q->err_res;
        int stale = stale_statement(err);
        int ours = ce && ce->key && !strcmp(ce->stmt, q->stmt);
        if (q->prepared && q->err_phase == PH_PREPARE && ours)
            keel__db_cache_drop(&pc->cache, ce, 0); /* our Prepare failed: nothing to keep */
        if (stale && !q->prepared && !q->retried) {
            /* The server forgot the statement (DISCARD ALL, a pooler; or
             * another request's Prepare of it failed) or its plan went
             * stale (a table changed shape): prepare it again and resend,
             * once. */
            if (stale == 1)
                keel__db_cache_clear(&pc->cache, 0);
            else if (ours)
                keel__db_cache_drop(&pc->cache, ce, 1);
            pq.PQclear(err);
            pq.PQclear(q->res);
            q->err_res = q->res = NULL;
            q->retried = 1;
            wait_push(ac->e, q, 1);
            return;
        }
        int rc = keel__pg_fail(pc, err);
        pq.PQclear(err);
        pq.PQclear(q->res);
        q->err_res = q->res = NULL;
        c->request_id = q->request_id;
        keel__db_observe(c, q->op, q->sql, ns, rc, 0);
        c->request_id = NULL;
        keel__db_aq_complete(q, rc, NULL);
        if (c->broken) /* lost (57P01, 08xxx): the others in flight fail too */
            conn_lost(ac);
        return;
    }
    PGresult *res = q->res;
    q->res = NULL;
    if (!res) {
        keel__db_set_error(c, "no result from the server");
        c->request_id = q->request_id;
        keel__db_observe(c, q->op, q->sql, ns, KEEL_EDB_SQL, 0);
        c->request_id = NULL;
        keel__db_aq_complete(q, KEEL_EDB_SQL, NULL);
        return;
    }
    uint64_t nrows;
    if (pq.PQnfields(res) > 0) {
        nrows = (uint64_t)pq.PQntuples(res);
    } else {
        const char *t = pq.PQcmdTuples(res);
        nrows = t && *t ? strtoull(t, NULL, 10) : 0;
    }
    c->request_id = q->request_id;
    keel__db_observe(c, q->op, q->sql, ns, 0, nrows);
    c->request_id = NULL;
    keel_db_rows *rows = keel__pg_rows_new(res);
    keel__db_rows_adopt(c, rows, q->sql, q->op, ns, nrows);
    keel__db_aq_complete(q, 0, rows);
}

/* Reads what arrived and finishes every statement whose results are in. */
static void read_results(aconn *ac)
{
    PGconn *pg = ac->pc->pg;
    if (!pq.PQconsumeInput(pg)) {
        keel__pg_fail(ac->pc, NULL);
        conn_lost(ac);
        return;
    }
    while (ac->head) {
        if (pq.PQstatus(pg) == CONNECTION_BAD) {
            keel__pg_fail(ac->pc, NULL);
            conn_lost(ac);
            return;
        }
        if (pq.PQisBusy(pg))
            break;
        PGresult *res = pq.PQgetResult(pg);
        keel__db_aq *q = ac->head;
        if (q->phase == PH_SYNC) {
            ExecStatusType st = res ? pq.PQresultStatus(res) : PGRES_FATAL_ERROR;
            if (st != PGRES_PIPELINE_SYNC) {
                /* out of step with the server: only a broken connection */
                if (res && !q->err_res)
                    q->err_res = res;
                else
                    pq.PQclear(res);
                keel__pg_fail(ac->pc, q->err_res);
                conn_lost(ac);
                return;
            }
            pq.PQclear(res);
            ac->head = q->next;
            if (!ac->head)
                ac->tail = NULL;
            ac->nflight--;
            /* counted idle before the caller hears back: whoever it
             * answers may look at the pool's gauges at once */
            update_poll(ac);
            finish(ac, q);
            if (ac->state != AC_READY)
                return; /* lost meanwhile */
            pg = ac->pc->pg;
            continue;
        }
        if (!res) { /* the end of this step's results */
            q->phase++;
            continue;
        }
        if (!keel__pg_ok_status(pq.PQresultStatus(res))) {
            if (!q->err_res) { /* the first error; PIPELINE_ABORTED after it */
                q->err_res = res;
                q->err_phase = q->phase;
            } else
                pq.PQclear(res);
        } else if (q->phase == PH_EXEC && !q->res) {
            q->res = res;
        } else {
            pq.PQclear(res);
        }
    }
    if (!ac->head && pq.PQstatus(pg) == CONNECTION_BAD) {
        keel__pg_fail(ac->pc, NULL);
        conn_lost(ac);
        return;
    }
    update_poll(ac);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    aconn *ac = h->data;
    if (ac->state != AC_READY)
        return;
    if (status < 0) {
        keel__db_set_error(&ac->pc->base, "polling the connection failed: %s",
                           uv_strerror(status));
        conn_lost(ac);
        return;
    }
    if (events & UV_WRITABLE) {
        flush_conn(ac);
        if (ac->state != AC_READY)
            return;
    }
    if (events & UV_READABLE)
        read_results(ac);
    if (ac->state == AC_READY && ac->e->wait_head)
        uv_idle_start(&ac->e->idle, on_idle);
}

/* ---------------------------------------------------------------- the loop side */

/* The ready connection with the most room, or NULL. */
static aconn *pick(engine *e)
{
    aconn *best = NULL;
    for (unsigned i = 0; i < e->nconns; i++) {
        aconn *ac = &e->conns[i];
        if (ac->state == AC_READY && ac->nflight < PIPELINE_DEPTH &&
            (!best || ac->nflight < best->nflight))
            best = ac;
    }
    return best;
}

static void pump(engine *e)
{
    keel_worker *w = NULL;
    while (e->wait_head) {
        aconn *ac = pick(e);
        if (!ac)
            break;
        keel__db_aq *q = wait_pop(e);
        if (!w)
            w = keel_req_worker(q->req);
        if (keel_req_is_finished(q->req)) { /* ended while waiting: never sent */
            keel__db_aq_complete(q, KEEL_ECANCELED, NULL);
            continue;
        }
        send_one(ac, q);
    }
    for (unsigned i = 0; i < e->nconns; i++)
        if (e->conns[i].state == AC_READY && e->conns[i].dirty)
            flush_conn(&e->conns[i]);
    if (!e->wait_head)
        return;
    /* More waits than the open connections take: open the others. */
    if (!w)
        w = keel_req_worker(e->wait_head->req);
    uint64_t now = uv_now(e->loop);
    int usable = 0;
    for (unsigned i = 0; i < e->nconns; i++) {
        aconn *ac = &e->conns[i];
        if (ac->state == AC_NONE && now >= ac->retry_ms)
            connect_start(ac, w);
        if (ac->state == AC_READY || ac->state == AC_CONNECTING)
            usable = 1;
    }
    if (!usable) /* no connection coming (work queue full, or retrying too soon) */
        fail_waiting(e, KEEL_EDB_UNAVAILABLE);
}

static void engine_close(engine *e)
{
    e->closing = 1;
    e->db->engines[e->id] = NULL;
    for (unsigned i = 0; i < e->nconns; i++)
        if (e->conns[i].state == AC_READY)
            conn_close(&e->conns[i]);
    uv_close((uv_handle_t *)&e->check, on_engine_handle_closed);
    uv_close((uv_handle_t *)&e->idle, on_engine_handle_closed);
}

static void on_check(uv_check_t *h)
{
    engine *e = h->data;
    if (e->wait_head)
        pump(e);
    if (!e->wait_head)
        uv_idle_stop(&e->idle);
    for (unsigned i = 0; i < e->nconns; i++) /* e.g. a DEALLOCATE queued */
        if (e->conns[i].state == AC_READY && e->conns[i].dirty)
            flush_conn(&e->conns[i]);
    /* Draining and idle: close now, before the worker's loop ends. */
    if (keel_server_get_state(e->db->server) != KEEL_STATE_DRAINING || e->wait_head)
        return;
    for (unsigned i = 0; i < e->nconns; i++)
        if (e->conns[i].state == AC_CONNECTING || e->conns[i].nflight)
            return;
    engine_close(e);
}

static engine *engine_get(keel_db *db, keel_req *r)
{
    unsigned id = keel_req_worker_id(r);
    if (id >= db->nworkers)
        return NULL;
    engine *e = db->engines[id];
    if (e)
        return e;
    /* DATABASE_POOL_MAX connections shared out among the workers */
    unsigned n = db->nslots / db->nworkers + (id < db->nslots % db->nworkers);
    if (n == 0)
        n = 1;
    e = keel_calloc(1, sizeof(*e) + n * sizeof(aconn));
    e->db = db;
    e->loop = keel_worker_loop(keel_req_worker(r));
    e->id = id;
    e->nconns = n;
    for (unsigned i = 0; i < n; i++) {
        e->conns[i].e = e;
        e->conns[i].index = i;
    }
    uv_check_init(e->loop, &e->check);
    e->check.data = e;
    uv_check_start(&e->check, on_check);
    uv_unref((uv_handle_t *)&e->check);
    uv_idle_init(e->loop, &e->idle);
    e->idle.data = e;
    e->handles = 2;
    keel__db_ref(db);
    db->engines[id] = e;
    return e;
}

int keel__db_pg_async_submit(keel_db *db, keel__db_aq *q)
{
    if (!keel__pq_async_ok)
        return -ENOTSUP;
    engine *e = engine_get(db, q->req);
    if (!e)
        return -ENOTSUP;
    /* What this iteration's check will send at once is not waiting: only
     * statements beyond the room left in the pipelines count against
     * DATABASE_QUEUE_MAX. */
    uint64_t room = 0;
    for (unsigned i = 0; i < e->nconns; i++)
        if (e->conns[i].state == AC_READY)
            room += PIPELINE_DEPTH - e->conns[i].nflight;
    uint64_t waiting = __atomic_load_n(&db->async_waiting, __ATOMIC_RELAXED);
    if (waiting >= room + db->queue_max) {
        __atomic_add_fetch(&db->async_rejected, 1, __ATOMIC_RELAXED);
        return KEEL_EBUSY;
    }
    wait_push(e, q, 0);
    return 0;
}
