/* analytics.c — POST /api/v1/analytics/events: ingestion that never waits
 * for the database.
 *
 * Design. A batch is validated whole on the loop (the schema step, then
 * the time window and sizes here) and is accepted or refused as a whole:
 * one bad event and the answer is 422 listing every bad one by index,
 * nothing kept (docs/analytics.md says why). Accepted events get their id
 * here and go to their worker's buffer — a pointer array under a mutex the
 * loop only holds for the append — and the answer is 202 at once.
 *
 *   worker loop:  append (count + bytes bounded per worker: a full buffer
 *                 answers 503 + Retry-After, the batch not taken)
 *   flusher:      one thread with its own database connection; every
 *                 ANALYTICS_FLUSH_MS, or when a buffer passes
 *                 ANALYTICS_FLUSH_ROWS, takes every worker's pending
 *                 events and writes them: on PostgreSQL with COPY ...
 *                 FROM STDIN of up to ANALYTICS_COPY_ROWS rows (one
 *                 statement: all or nothing), on SQLite with multi-row
 *                 INSERTs of ANALYTICS_FLUSH_ROWS rows, ON CONFLICT (id)
 *                 DO NOTHING. A COPY retried after a lost connection (its
 *                 commit unknown) fails on the duplicate ids and its rows
 *                 go through those INSERTs: never an event twice.
 *
 * An event counts against its worker's bound until its row is written, so
 * memory is bounded by ANALYTICS_BUFFER_MAX / _BYTES per worker whatever
 * the database does. A database that is down: the flusher keeps the
 * events and retries with backoff (the buffers fill, clients get 503). A
 * row the database refuses (not a transient error) is written alone, and
 * dropped only if it fails alone (counted, logged): one poison row never
 * blocks the rest. SIGTERM: the server drains (no request left, so no
 * append), then teardown wakes the flusher, which writes everything before
 * it exits (up to ANALYTICS_SHUTDOWN_TIMEOUT while the database is down). */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/analytics.h"

/* ---------------------------------------------------------------- config */

static int check_keys(const char *v)
{
    char buf[1024];
    const char *keys[APP_ANALYTICS_ROLLUP_KEYS_MAX];
    return app_analytics_split_keys(v, buf, sizeof(buf), keys, APP_ANALYTICS_ROLLUP_KEYS_MAX) < 0
               ? KEEL_EINVAL
               : 0;
}

/* A batch must be able to fit in an empty buffer, or it would get 503
 * for ever. (An event takes at most its properties plus about 1 KiB:
 * name, session id, ids and bookkeeping.) */
static int analytics_validate(void *opts, const keel_config *cfg, FILE *err)
{
    (void)cfg;
    const app_analytics_options *o = opts;
    if (o->buffer_max < o->max_batch) {
        fprintf(err, "keel: ANALYTICS_BUFFER_MAX: %llu is less than ANALYTICS_MAX_BATCH (%llu): "
                     "a whole batch must fit in the buffer\n",
                (unsigned long long)o->buffer_max, (unsigned long long)o->max_batch);
        return KEEL_ECONFIG;
    }
    uint64_t need = o->max_batch * (o->props_bytes + 1024);
    if (o->buffer_bytes < need) {
        fprintf(err, "keel: ANALYTICS_BUFFER_BYTES: %llu is less than the largest batch "
                     "(ANALYTICS_MAX_BATCH x (ANALYTICS_MAX_PROPERTIES_BYTES + 1kb) = %llu)\n",
                (unsigned long long)o->buffer_bytes, (unsigned long long)need);
        return KEEL_ECONFIG;
    }
    return 0;
}

#define AT(f) KEEL_CONFIG_AT(app_analytics_options, f)
static const keel_config_var analytics_vars[] = {
    {.name = "ANALYTICS_MAX_BATCH", .type = KEEL_CONFIG_UINT, .def = "100", AT(max_batch),
     .min = 1, .max = 1000, .help = "most events in one POST /api/v1/analytics/events"},
    {.name = "ANALYTICS_BUFFER_MAX", .type = KEEL_CONFIG_UINT, .def = "20000", AT(buffer_max),
     .min = 1, .max = 10000000,
     .help = "events buffered per worker until written; a batch that does not fit gets 503 "
             "+ Retry-After"},
    {.name = "ANALYTICS_BUFFER_BYTES", .type = KEEL_CONFIG_SIZE, .def = "32mb",
     AT(buffer_bytes), .min = 65536,
     .help = "bytes of events buffered per worker (the other bound of the same buffer)"},
    {.name = "ANALYTICS_FLUSH_MS", .type = KEEL_CONFIG_UINT, .def = "1000", AT(flush_ms),
     .min = 10, .max = 600000,
     .help = "buffered events are written at least this often (ms); sooner when a buffer "
             "holds ANALYTICS_FLUSH_ROWS"},
    {.name = "ANALYTICS_FLUSH_ROWS", .type = KEEL_CONFIG_UINT, .def = "500", AT(flush_rows),
     .min = 1, .max = 1000, .help = "rows per multi-row INSERT of the flusher (SQLite, and the "
                                    "fallback of a failed COPY)"},
    {.name = "ANALYTICS_COPY_ROWS", .type = KEEL_CONFIG_UINT, .def = "5000", AT(copy_rows),
     .min = 1, .max = 1000000,
     .help = "rows per COPY ... FROM STDIN of the flusher on PostgreSQL"},
    {.name = "ANALYTICS_SYNC_COMMIT", .type = KEEL_CONFIG_BOOL, .def = "false", AT(sync_commit),
     .help = "the flusher's commits wait for PostgreSQL's WAL flush (synchronous_commit); "
             "off by default: a PostgreSQL crash may lose its last fraction of a second of "
             "events, keel's own stop and restarts lose nothing"},
    {.name = "ANALYTICS_MAX_AGE", .type = KEEL_CONFIG_DURATION, .def = "7d", AT(past_ms),
     .min = 1000, .help = "an event's ts may be at most this far in the past (422)"},
    {.name = "ANALYTICS_MAX_SKEW", .type = KEEL_CONFIG_DURATION, .def = "5m", AT(future_ms),
     .help = "an event's ts may be at most this far in the future (422)"},
    {.name = "ANALYTICS_MAX_PROPERTIES_BYTES", .type = KEEL_CONFIG_SIZE, .def = "4kb",
     AT(props_bytes), .min = 2, .max = 1048576,
     .help = "largest properties object of one event, as compact JSON (422)"},
    {.name = "ANALYTICS_SHUTDOWN_TIMEOUT", .type = KEEL_CONFIG_DURATION, .def = "30s",
     AT(shutdown_ms),
     .help = "at exit, how long the flusher keeps retrying a database that refuses the "
             "buffered events before it gives up on them (logged)"},
    {.name = "ANALYTICS_ROLLUP_PROPERTIES", .type = KEEL_CONFIG_STR, .def = "",
     AT(rollup_props), .check = check_keys,
     .accepts = "a comma-separated list of at most 16 property keys, each [A-Za-z0-9_]{1,64}",
     .help = "property keys the rollups count by value (besides the totals per name)"},
    {.name = "ANALYTICS_ROLLUP_LOOKBACK", .type = KEEL_CONFIG_DURATION, .def = "48h",
     AT(rollup_lookback_ms), .min = 3600000, .max = 86400000ull * 366,
     .help = "what an analytics.rollup job without from/to recomputes: the days touching "
             "the last this-long"},
    {.name = "ANALYTICS_RETENTION", .type = KEEL_CONFIG_DURATION, .def = "90d",
     AT(retention_ms),
     .help = "raw events older than this are deleted by the analytics.purge job (rollups "
             "are kept); 0 = kept for ever"},
    {.name = "ANALYTICS_RETENTION_BATCH", .type = KEEL_CONFIG_UINT, .def = "10000",
     AT(retention_batch), .min = 1, .max = 1000000,
     .help = "rows one DELETE of the purge removes (it repeats until done)"},
    {.name = "ANALYTICS_PAGE_MAX", .type = KEEL_CONFIG_UINT, .def = "500", AT(page_max),
     .min = 1, .max = 10000, .help = "largest ?limit of GET /api/v1/admin/analytics/events"},
    {.name = "ANALYTICS_TOP_EVENTS", .type = KEEL_CONFIG_UINT, .def = "10", AT(top_events),
     .min = 1, .max = 1000, .help = "event names in the metrics' top_events"},
};
#undef AT

const keel_config_module app_analytics_config = KEEL_CONFIG_MODULE(
    "analytics",
    "Event ingestion, rollups and retention (src/app/analytics.c, docs/analytics.md).",
    app_analytics_options, analytics_vars, analytics_validate);

int app_analytics_split_keys(const char *list, char *buf, size_t cap, const char **keys,
                             size_t max)
{
    size_t n = 0, len = list ? strlen(list) : 0;
    if (len >= cap)
        return -1;
    memcpy(buf, list ? list : "", len + 1);
    for (char *p = buf; *p;) {
        while (*p == ',' || *p == ' ')
            p++;
        if (!*p)
            break;
        char *e = p;
        while (*e && *e != ',' && *e != ' ')
            e++;
        size_t kl = (size_t)(e - p);
        if (kl == 0 || kl > 64 || n >= max)
            return -1;
        for (size_t i = 0; i < kl; i++) {
            char ch = p[i];
            if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '_'))
                return -1;
        }
        for (size_t i = 0; i < n; i++)
            if (!strncmp(keys[i], p, kl) && keys[i][kl] == '\0')
                return -1; /* repeated */
        char *next = *e ? e + 1 : e;
        *e = '\0';
        keys[n++] = p;
        p = next;
    }
    return (int)n;
}

/* ---------------------------------------------------------------- buffers */

typedef struct an_event {
    unsigned worker;
    size_t bytes;
    int64_t ts, received;
    char id[37];
    const char *name, *session, *user, *key, *props;
    char data[]; /* the strings above */
} an_event;

typedef struct an_buf {
    pthread_mutex_t mu;
    an_event **pending; /* cap buffer_max */
    size_t npending;
    size_t used;       /* pending + taken by the flusher, not yet written */
    size_t used_bytes;
} an_buf;

static struct {
    const app_analytics_options *o;
    keel_db *db;
    char *url;
    const keel_config *cfg;
    unsigned nworkers;
    an_buf *bufs;
    /* the flusher */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int started, stop, kick;
    an_event **carry; /* taken, not yet written: cap nworkers * buffer_max */
    size_t ncarry;
    int no_copy; /* the database has no COPY (SQLite) */
    keel_metric *m_received, *m_written, *m_dropped, *m_flush_errors, *m_copy_fallbacks;
} A;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double m_buffered(void *arg)
{
    (void)arg;
    size_t n = 0;
    for (unsigned i = 0; A.bufs && i < A.nworkers; i++) {
        pthread_mutex_lock(&A.bufs[i].mu);
        n += A.bufs[i].used;
        pthread_mutex_unlock(&A.bufs[i].mu);
    }
    return (double)n;
}

static void kick_flusher(void)
{
    pthread_mutex_lock(&A.mu);
    A.kick = 1;
    pthread_cond_signal(&A.cv);
    pthread_mutex_unlock(&A.mu);
}

/* Marks written events free in their worker's bound and frees them. */
static void release(an_event **ev, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        an_buf *b = &A.bufs[ev[i]->worker];
        pthread_mutex_lock(&b->mu);
        b->used--;
        b->used_bytes -= ev[i]->bytes;
        pthread_mutex_unlock(&b->mu);
        keel_free(ev[i]);
    }
}

#define COLS 8
static const char insert_head[] =
    "INSERT INTO analytics_events (id, name, ts, received_at, user_id, api_key_id, "
    "session_id, properties) VALUES ";

static void bind_event(const an_event *e, keel_db_param *p)
{
#define TEXT_OR_NULL(s) ((s) ? KEEL_DB_P_TEXT(s) : KEEL_DB_P_NULL())
    p[0] = KEEL_DB_P_TEXT(e->id);
    p[1] = KEEL_DB_P_TEXT(e->name);
    p[2] = KEEL_DB_P_INT(e->ts);
    p[3] = KEEL_DB_P_INT(e->received);
    p[4] = TEXT_OR_NULL(e->user);
    p[5] = TEXT_OR_NULL(e->key);
    p[6] = TEXT_OR_NULL(e->session);
    p[7] = KEEL_DB_P_TEXT(e->props);
#undef TEXT_OR_NULL
}

/* One multi-row INSERT of ev[0..n). */
static int insert_rows(keel_db_conn *c, an_event **ev, size_t n, keel_buf *sql,
                       keel_db_param *params)
{
    sql->len = 0;
    keel_buf_append(sql, insert_head, sizeof(insert_head) - 1);
    for (size_t i = 0; i < n; i++) {
        char row[96];
        size_t b = i * COLS + 1;
        int len = snprintf(row, sizeof(row), "%s($%zu, $%zu, $%zu, $%zu, $%zu, $%zu, $%zu, $%zu)",
                           i ? ", " : "", b, b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7);
        keel_buf_append(sql, row, (size_t)len);
        bind_event(ev[i], params + i * COLS);
    }
    static const char tail[] = " ON CONFLICT (id) DO NOTHING";
    keel_buf_append(sql, tail, sizeof(tail)); /* with the NUL */
    return keel_db_exec(c, sql->data, params, n * COLS, NULL);
}

static int transient(int rc)
{
    return rc == KEEL_EDB_UNAVAILABLE || rc == KEEL_EDB_TIMEOUT || rc == KEEL_EDB_RETRY ||
           rc == KEEL_EBUSY || rc == KEEL_ENOMEM;
}

/* Writes A.carry[*done..end) with multi-row INSERTs; what is written
 * leaves the carry (*done moves on). 0 when all went, else the transient
 * error that stopped it. */
static int write_inserts(keel_db_conn *c, size_t *pdone, size_t end, keel_buf *sql,
                         keel_db_param *params)
{
    size_t chunk = (size_t)A.o->flush_rows, done = *pdone;
    int rc = 0;
    unsigned shard = A.nworkers; /* not a worker's: the flusher's own shard */
    while (done < end) {
        /* full chunks, then the rest in powers of two: at most 1 + log2
         * (ANALYTICS_FLUSH_ROWS) distinct statements, each prepared once
         * per connection and then found in its statement cache (SQLite's
         * prepare of ?NNN parameters is quadratic in their number) */
        size_t n = end - done;
        if (n >= chunk) {
            n = chunk;
        } else {
            size_t p2 = 1;
            while (p2 * 2 <= n)
                p2 *= 2;
            n = p2;
        }
        rc = insert_rows(c, A.carry + done, n, sql, params);
        if (rc < 0 && !transient(rc)) {
            /* a row the database refuses: each alone, the failing ones dropped */
            for (size_t i = 0; i < n; i++) {
                int r1 = insert_rows(c, A.carry + done + i, 1, sql, params);
                if (r1 < 0 && transient(r1)) {
                    rc = r1;
                    break;
                }
                if (r1 < 0) {
                    keel_log(KEEL_LOG_ERROR, "analytics: an event the database refuses was dropped",
                             "{s:s,s:s,s:s}", "id", A.carry[done + i]->id, "name",
                             A.carry[done + i]->name, "error", keel_db_errmsg(c));
                    keel_metric_add(A.m_dropped, shard, NULL, 1);
                } else {
                    keel_metric_add(A.m_written, shard, NULL, 1);
                }
                release(A.carry + done + i, 1);
                A.carry[done + i] = NULL;
            }
            size_t moved = 0;
            while (moved < n && !A.carry[done + moved])
                moved++;
            done += moved;
            if (moved < n)
                break; /* a transient error in the middle */
            rc = 0;
            continue;
        }
        if (rc < 0)
            break;
        keel_metric_add(A.m_written, shard, NULL, (double)n);
        release(A.carry + done, n);
        done += n;
    }
    *pdone = done;
    return rc < 0 ? rc : 0;
}

/* One COPY of ev[0..n) (PostgreSQL): the rows in COPY's text format. */
static const char copy_sql[] =
    "COPY analytics_events (id, name, ts, received_at, user_id, api_key_id, session_id, "
    "properties) FROM STDIN";

static int copy_rows(keel_db_conn *c, an_event **ev, size_t n, keel_buf *data)
{
    data->len = 0;
    for (size_t i = 0; i < n; i++) {
        const an_event *e = ev[i];
#define FIELD(s) keel_db_copy_field(data, (s), (s) ? strlen(s) : 0)
        FIELD(e->id);
        keel_buf_append(data, "\t", 1);
        FIELD(e->name);
        keel_buf_append(data, "\t", 1);
        keel_db_copy_int(data, e->ts);
        keel_buf_append(data, "\t", 1);
        keel_db_copy_int(data, e->received);
        keel_buf_append(data, "\t", 1);
        FIELD(e->user);
        keel_buf_append(data, "\t", 1);
        FIELD(e->key);
        keel_buf_append(data, "\t", 1);
        FIELD(e->session);
        keel_buf_append(data, "\t", 1);
        FIELD(e->props); /* the compact JSON, as text: jsonb parses it */
        keel_buf_append(data, "\n", 1);
#undef FIELD
    }
    return keel_db_copy_in(c, copy_sql, data->data, data->len, NULL);
}

/* Writes A.carry; what is written leaves the carry. 0 when all went, else
 * the transient error that stopped it (the rest kept).
 *
 * On PostgreSQL, COPY ... FROM STDIN of up to ANALYTICS_COPY_ROWS rows at a
 * time: one statement, all its rows or none. COPY has no ON CONFLICT, so
 * a COPY that fails for any other reason than a transient one — a
 * duplicate id because a flush whose commit was unknown is retried, a row
 * the database refuses — writes those rows again with the INSERT path,
 * whose ON CONFLICT (id) DO NOTHING skips what is already there and whose
 * row-by-row fallback drops only a poison row. On SQLite (no COPY:
 * KEEL_EDB_UNSUPPORTED) every flush uses the INSERTs. */
static int write_carry(keel_db_conn *c)
{
    size_t done = 0;
    keel_buf sql = {0}, data = {0};
    keel_db_param *params = keel_malloc(sizeof(*params) * COLS * A.o->flush_rows);
    int rc = 0;
    unsigned shard = A.nworkers;
    while (done < A.ncarry) {
        if (!A.no_copy) {
            size_t n = A.ncarry - done;
            if (n > A.o->copy_rows)
                n = (size_t)A.o->copy_rows;
            rc = copy_rows(c, A.carry + done, n, &data);
            if (rc == 0) {
                keel_metric_add(A.m_written, shard, NULL, (double)n);
                release(A.carry + done, n);
                done += n;
                continue;
            }
            if (rc == KEEL_EDB_UNSUPPORTED) {
                A.no_copy = 1; /* SQLite: the INSERTs from now on */
            } else if (transient(rc)) {
                break;
            } else {
                keel_metric_add(A.m_copy_fallbacks, shard, NULL, 1);
                rc = write_inserts(c, &done, done + n, &sql, params);
                if (rc < 0)
                    break;
                continue;
            }
        }
        rc = write_inserts(c, &done, A.ncarry, &sql, params);
        break;
    }
    memmove(A.carry, A.carry + done, (A.ncarry - done) * sizeof(*A.carry));
    A.ncarry -= done;
    keel_free(params);
    keel_buf_free(&sql);
    keel_buf_free(&data);
    return A.ncarry ? (rc < 0 ? rc : KEEL_EDB_UNAVAILABLE) : 0;
}

/* Takes every worker's pending events into the carry. */
static void collect(void)
{
    for (unsigned i = 0; i < A.nworkers; i++) {
        an_buf *b = &A.bufs[i];
        pthread_mutex_lock(&b->mu);
        memcpy(A.carry + A.ncarry, b->pending, b->npending * sizeof(*b->pending));
        A.ncarry += b->npending;
        b->npending = 0;
        pthread_mutex_unlock(&b->mu);
    }
}

static void deadline_in(struct timespec *ts, uint64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *flusher_main(void *arg)
{
    (void)arg;
    keel_db_conn *c = NULL;
    uint64_t backoff = 0;
    int64_t stop_at = 0;
    for (;;) {
        pthread_mutex_lock(&A.mu);
        if (!A.stop && !A.kick) {
            struct timespec ts;
            deadline_in(&ts, backoff ? backoff : A.o->flush_ms);
            pthread_cond_timedwait(&A.cv, &A.mu, &ts);
        }
        int stopping = A.stop;
        A.kick = 0;
        pthread_mutex_unlock(&A.mu);
        if (stopping && !stop_at)
            stop_at = mono_ms() + (int64_t)A.o->shutdown_ms;
        collect();
        if (A.ncarry == 0) {
            if (stopping)
                break;
            continue;
        }
        int rc = KEEL_EDB_UNAVAILABLE;
        if (!c) {
            char err[256];
            if (keel_db_connect(A.url, A.cfg, &c, err, sizeof(err)) < 0) {
                c = NULL;
                keel_log(KEEL_LOG_WARN, "analytics: the flusher cannot connect", "{s:s}", "error",
                         err);
            } else if (!A.o->sync_commit && !strncmp(A.url, "postgres", 8)) {
                /* the flusher waits for no WAL flush: a commit per ~5,000
                 * rows was the one thing it waited on (docs/analytics.md) */
                (void)keel_db_exec(c, "SET synchronous_commit = off", NULL, 0, NULL);
            }
        }
        if (c)
            rc = write_carry(c);
        if (rc == 0) {
            backoff = 0;
            continue;
        }
        keel_metric_add(A.m_flush_errors, A.nworkers, NULL, 1);
        keel_log(KEEL_LOG_WARN, "analytics: flush failed; the events are kept and retried",
                 "{s:s,s:I}", "error", keel_db_strerror(rc), "pending", (json_int_t)A.ncarry);
        if (c && rc == KEEL_EDB_UNAVAILABLE) {
            keel_db_disconnect(c); /* a lost connection is not replaced: a new one */
            c = NULL;
        }
        backoff = backoff ? backoff * 2 : 100;
        if (backoff > 5000)
            backoff = 5000;
        if (stopping && mono_ms() >= stop_at) {
            keel_log(KEEL_LOG_ERROR, "analytics: events lost at exit: the database refused them "
                                     "for ANALYTICS_SHUTDOWN_TIMEOUT",
                     "{s:I}", "lost", (json_int_t)A.ncarry);
            keel_metric_add(A.m_dropped, A.nworkers, NULL, (double)A.ncarry);
            release(A.carry, A.ncarry);
            A.ncarry = 0;
            break;
        }
        if (stopping)
            backoff = backoff > 500 ? 500 : backoff;
    }
    if (c)
        keel_db_disconnect(c);
    keel_log_thread_close(); /* the thread's log buffer (slow-query lines) */
    return NULL;
}

/* The first worker to start starts the flusher (not `keel routes`). */
static void on_worker_start(keel_worker *w, void *arg)
{
    (void)w;
    (void)arg;
    pthread_mutex_lock(&A.mu);
    if (!A.started && A.bufs) {
        if (pthread_create(&A.thread, NULL, flusher_main, NULL) == 0)
            A.started = 1;
        else
            keel_log(KEEL_LOG_FATAL, "analytics: the flusher thread could not start", NULL);
    }
    pthread_mutex_unlock(&A.mu);
}

void app_analytics_teardown(void)
{
    if (!A.bufs)
        return; /* setup never ran */
    pthread_mutex_lock(&A.mu);
    int started = A.started;
    A.stop = 1;
    pthread_cond_signal(&A.cv);
    pthread_mutex_unlock(&A.mu);
    if (started)
        pthread_join(A.thread, NULL);
    A.started = 0;
    for (unsigned i = 0; A.bufs && i < A.nworkers; i++) {
        an_buf *b = &A.bufs[i];
        for (size_t k = 0; k < b->npending; k++)
            keel_free(b->pending[k]);
        keel_free(b->pending);
        pthread_mutex_destroy(&b->mu);
    }
    for (size_t k = 0; k < A.ncarry; k++)
        keel_free(A.carry[k]);
    keel_free(A.bufs);
    keel_free(A.carry);
    keel_free(A.url);
    A.bufs = NULL;
    A.carry = NULL;
    A.url = NULL;
    A.ncarry = 0;
}

/* ---------------------------------------------------------------- the route */

/* An event's id: a version-4 UUID from the worker's keel_random64 (ids
 * need to be unique, not secret; no system call per event). */
static void event_id(char out[37])
{
    uint64_t a = keel_random64(), b = keel_random64();
    a = (a & ~0xf000ull) | 0x4000ull;                         /* version 4 */
    b = (b & 0x3fffffffffffffffull) | 0x8000000000000000ull; /* variant 10 */
    snprintf(out, 37, "%08x-%04x-%04x-%04x-%012llx", (unsigned)(a >> 32),
             (unsigned)((a >> 16) & 0xffff), (unsigned)(a & 0xffff), (unsigned)(b >> 48),
             (unsigned long long)(b & 0xffffffffffffull));
}

/* RFC 3339 (already checked by the schema) to Unix milliseconds. */
static int parse_ts_ms(const char *s, size_t n, int64_t *out)
{
    int64_t sec;
    if (app_parse_time(s, n, &sec) < 0)
        return -1;
    int64_t ms = 0;
    if (n > 20 && s[19] == '.') {
        int digits = 0;
        for (size_t i = 20; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            if (digits < 3) {
                ms = ms * 10 + (s[i] - '0');
                digits++;
            }
        while (digits++ < 3)
            ms *= 10;
    }
    *out = sec * 1000 + ms;
    return 0;
}

static void add_error(json_t *errors, size_t i, const char *field, const char *message)
{
    char ptr[64];
    snprintf(ptr, sizeof(ptr), "/events/%zu%s%s", i, field ? "/" : "", field ? field : "");
    json_array_append_new(errors,
                          json_pack("{s:s,s:s,s:s}", "in", "body", "pointer", ptr, "message",
                                    message));
}

/* 1 when s (a JSON string) holds a NUL byte. */
static int has_nul(const json_t *s)
{
    return s && strlen(json_string_value(s)) != json_string_length(s);
}

static keel_flow h_ingest(keel_req *r)
{
    const app_analytics_options *o = A.o;
    json_t *events = json_object_get(keel_req_json(r), "events");
    size_t n = json_array_size(events);
    const keel_principal *p = keel_req_principal(r);
    int is_key = p && !strcmp(p->kind, "apikey");
    const char *who = p ? p->id : NULL;
    size_t wholen = who ? strlen(who) + 1 : 0;
    int64_t now = now_ms();
    json_t *errors = json_array();
    an_event **ev = keel_arena_alloc(keel_req_arena(r), n * sizeof(*ev));
    size_t total = 0;
    unsigned worker = keel_req_worker_id(r);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(events, i);
        json_t *jn = json_object_get(e, "name"), *jts = json_object_get(e, "ts"),
               *js = json_object_get(e, "session_id"), *jp = json_object_get(e, "properties");
        ev[i] = NULL;
        int64_t ts;
        if (parse_ts_ms(json_string_value(jts), json_string_length(jts), &ts) < 0) {
            add_error(errors, i, "ts", "is not an RFC 3339 date-time");
            continue;
        }
        if (ts < now - (int64_t)o->past_ms || ts > now + (int64_t)o->future_ms) {
            add_error(errors, i, "ts", "is outside the accepted window (ANALYTICS_MAX_AGE in the "
                                       "past, ANALYTICS_MAX_SKEW in the future)");
            continue;
        }
        if (has_nul(jn) || has_nul(js)) {
            add_error(errors, i, has_nul(jn) ? "name" : "session_id", "must not hold a NUL byte");
            continue;
        }
        char *props = jp ? json_dumps(jp, JSON_COMPACT | JSON_SORT_KEYS) : strdup("{}");
        if (!props) {
            add_error(errors, i, "properties", "cannot be encoded");
            continue;
        }
        size_t plen = strlen(props);
        if (plen > o->props_bytes) {
            add_error(errors, i, "properties", "is larger than ANALYTICS_MAX_PROPERTIES_BYTES");
            free(props);
            continue;
        }
        if (strstr(props, "\\u0000")) { /* PostgreSQL's jsonb refuses it */
            add_error(errors, i, "properties", "must not hold a NUL character");
            free(props);
            continue;
        }
        size_t nl = json_string_length(jn) + 1, sl = js ? json_string_length(js) + 1 : 0;
        size_t bytes = sizeof(an_event) + nl + sl + wholen + plen + 1;
        an_event *x = keel_malloc(bytes);
        memset(x, 0, sizeof(*x));
        x->worker = worker;
        x->bytes = bytes;
        x->ts = ts;
        x->received = now;
        event_id(x->id);
        char *d = x->data;
        memcpy(d, json_string_value(jn), nl);
        x->name = d;
        d += nl;
        if (js) {
            memcpy(d, json_string_value(js), sl);
            x->session = d;
            d += sl;
        }
        if (who) {
            memcpy(d, who, wholen);
            if (is_key)
                x->key = d;
            else
                x->user = d;
            d += wholen;
        }
        memcpy(d, props, plen + 1);
        x->props = d;
        free(props);
        ev[i] = x;
        total += bytes;
    }
    const char *lv[1];
    if (json_array_size(errors)) {
        for (size_t i = 0; i < n; i++)
            keel_free(ev[i]);
        lv[0] = "invalid";
        keel_metric_add(A.m_received, worker, lv, (double)n);
        keel_respond_problem_ex(r, 422, NULL,
                                "the batch is refused as a whole: the events listed are not valid",
                                json_pack("{s:o}", "errors", errors));
        return KEEL_DONE;
    }
    json_decref(errors);
    an_buf *b = &A.bufs[worker];
    int full, flush_now = 0;
    pthread_mutex_lock(&b->mu);
    full = b->used + n > o->buffer_max || b->used_bytes + total > o->buffer_bytes;
    if (!full) {
        memcpy(b->pending + b->npending, ev, n * sizeof(*ev));
        b->npending += n;
        b->used += n;
        b->used_bytes += total;
        flush_now = b->npending >= o->flush_rows;
    }
    pthread_mutex_unlock(&b->mu);
    if (full) {
        for (size_t i = 0; i < n; i++)
            keel_free(ev[i]);
        lv[0] = "buffer_full";
        keel_metric_add(A.m_received, worker, lv, (double)n);
        kick_flusher();
        keel_res_set_header(r, "Retry-After", "1");
        keel_respond_problem(r, 503, "the analytics buffer is full: retry the batch later");
        return KEEL_DONE;
    }
    if (flush_now)
        kick_flusher();
    lv[0] = "accepted";
    keel_metric_add(A.m_received, worker, lv, (double)n);
    keel_respond_json(r, 202, json_pack("{s:I}", "accepted", (json_int_t)n));
    return KEEL_DONE;
}

#define EVENT_SCHEMA                                                                            \
    "{\"type\":\"object\",\"required\":[\"name\",\"ts\"],\"additionalProperties\":false,"       \
    "\"properties\":{"                                                                          \
    "\"name\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":128,"                          \
    "\"pattern\":\"^[A-Za-z0-9_.:/-]+$\"},"                                                     \
    "\"ts\":{\"type\":\"string\",\"format\":\"date-time\"},"                                    \
    "\"session_id\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":128},"                   \
    "\"properties\":{\"type\":\"object\"}}}"

static char batch_schema[1024];

static keel_route ingest_routes[] = {
    {.name = "analytics.ingest", .method = "POST", .path = "/api/v1/analytics/events",
     .handler = h_ingest, .auth = "any", .permission = "analytics:write",
     .rate_limit = "analytics", .request_schema = batch_schema,
     .summary = "Record a batch of events (202: buffered, written within ANALYTICS_FLUSH_MS)",
     .response_schema = "{\"type\":\"object\",\"properties\":{\"accepted\":{\"type\":"
                        "\"integer\"}}}"},
};

int app_analytics_setup(keel_service *svc)
{
    const keel_config *cfg = keel_service_config(svc);
    A.o = keel_config_get(cfg, &app_analytics_config);
    A.db = keel_service_db(svc);
    A.cfg = cfg;
    const keel_db_options *dbo = keel_config_get(cfg, &keel_db_config);
    A.url = keel_strdup(dbo->database_url ? dbo->database_url : "");
    keel_server *s = keel_service_server(svc);
    A.nworkers = keel_server_workers(s);
    if (A.nworkers == 0)
        A.nworkers = 1;
    A.bufs = keel_calloc(A.nworkers, sizeof(*A.bufs));
    for (unsigned i = 0; i < A.nworkers; i++) {
        pthread_mutex_init(&A.bufs[i].mu, NULL);
        A.bufs[i].pending = keel_malloc(sizeof(an_event *) * A.o->buffer_max);
    }
    A.carry = keel_malloc(sizeof(an_event *) * A.o->buffer_max * A.nworkers);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&A.mu, NULL);
    pthread_cond_init(&A.cv, &ca);
    pthread_condattr_destroy(&ca);

    keel_metrics *m = keel_service_metrics(svc);
    static const char *const result[] = {"result", NULL};
    A.m_received = keel_metrics_counter(m, "analytics_events_received_total",
                                        "Events of POST /api/v1/analytics/events by outcome "
                                        "(accepted, invalid, buffer_full)",
                                        result);
    keel_metric_declare_each(A.m_received, NULL, 0,
                             (const char *const[]){"accepted", "invalid", "buffer_full", NULL});
    A.m_written = keel_metrics_counter(m, "analytics_events_written_total",
                                       "Events written to analytics_events by the flusher", NULL);
    A.m_dropped = keel_metrics_counter(m, "analytics_events_dropped_total",
                                       "Accepted events never written (refused by the database "
                                       "alone, or still refused at exit)",
                                       NULL);
    A.m_flush_errors = keel_metrics_counter(m, "analytics_flush_errors_total",
                                            "Flushes that failed and were retried", NULL);
    keel_metric_declare(A.m_written, NULL);
    keel_metric_declare(A.m_dropped, NULL);
    A.m_copy_fallbacks =
        keel_metrics_counter(m, "analytics_copy_fallbacks_total",
                             "COPYs of the flusher that failed for a non-transient reason "
                             "(a retried flush's duplicate ids, a refused row): their rows "
                             "went through INSERT ... ON CONFLICT DO NOTHING",
                             NULL);
    keel_metric_declare(A.m_flush_errors, NULL);
    keel_metric_declare(A.m_copy_fallbacks, NULL);
    keel_metrics_callback(m, "analytics_buffered_events",
                          "Events accepted and not yet written (every worker's buffer)",
                          KEEL_GAUGE, m_buffered, NULL);

    snprintf(batch_schema, sizeof(batch_schema),
             "{\"type\":\"object\",\"required\":[\"events\"],\"properties\":{\"events\":{"
             "\"type\":\"array\",\"minItems\":1,\"maxItems\":%llu,\"items\":" EVENT_SCHEMA "}}}",
             (unsigned long long)A.o->max_batch);
    keel_worker_hooks hooks = {.on_start = on_worker_start};
    keel_server_add_worker_hooks(s, &hooks);
    if (keel_service_add_routes(svc, ingest_routes, 1) < 0)
        return -1;
    return app_analytics_admin_setup(svc, A.o);
}
