/* jobs.c — the job runner: fetch, run, record the result, heartbeats,
 * rescue, pruning, metrics, graceful stop.
 *
 * Threads of one runner:
 *   - the loop thread: a libuv loop of the runner's own (not an HTTP
 *     worker's). It owns one database connection and does everything that
 *     is not a handler: fetching (it may block on the database for one
 *     statement: nothing else runs on this loop but async handlers),
 *     heartbeats, timeouts, rescue, pruning, queue-depth metrics, and the
 *     results of async handlers. It is woken by an uv_async (an enqueue in
 *     this process, a NOTIFY, a slot freed, an async result) and by a timer
 *     (JOBS_POLL_INTERVAL, sooner when a retry of ours is due).
 *   - per queue, `concurrency` runner threads, each with its own database
 *     connection, running synchronous handlers and writing their results.
 *   - on PostgreSQL, a listener thread: LISTEN keel_jobs on a connection
 *     of its own; a notification for one of our queues wakes the loop.
 *
 * A fetched job counts against its queue's concurrency (`inflight`) from
 * the fetch until its result is written, so a queue never holds more jobs
 * than it has slots. Every result is a compare-and-set on (id, running,
 * attempt, locked_by) — see keel/jobs.h.
 */
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <sodium.h>

#include "keel/log.h"
#include "store/db_internal.h"
#include "store/db_pg_internal.h"
#include "store/jobs_internal.h"

enum { MAX_HANDLERS = 128 };
/* Due times of our own retries and snoozes the poll timer is armed for.
 * When full, a later one is left to JOBS_POLL_INTERVAL's poll. */
enum { NDUE = 64 };

/* The results counted in jobs_completed_total{queue,result}. */
static const char *const RESULTS[] = {"completed", "retryable", "snoozed", "cancelled",
                                      "dead",      "timeout",   "discarded"};
enum { R_COMPLETED, R_RETRYABLE, R_SNOOZED, R_CANCELLED, R_DEAD, R_TIMEOUT, R_DISCARDED, NRESULTS };
static const char *const DEPTH_STATES[] = {"available", "scheduled", "running", "retryable", "dead"};
enum { NDEPTH = 5 };

typedef struct jq {
    char name[65];
    unsigned concurrency;
    unsigned inflight;      /* fetched and not yet recorded (mu) */
    unsigned rate_n;        /* 0 = no rate limit */
    uint64_t rate_window_ms;
    uint64_t win_start;     /* monotonic ms of the current window */
    unsigned win_count;     /* started in it */
    keel_job *ready, *ready_tail; /* fetched sync jobs waiting for a thread (mu) */
    int backlog;            /* the last fetch filled every slot asked for */
    pthread_t *threads;
    unsigned nthreads;
} jq;

struct keel_job {
    keel_jobs *j;
    jq *q;
    const keel_job_handler *h;
    int64_t id;
    char kind[KEEL_JOB_NAME_MAX + 1];
    unsigned attempt, max_attempts;
    uint64_t timeout_ms;
    json_t *args;
    int64_t run_at;
    uint64_t started_ms;    /* monotonic */
    uint64_t deadline_ms;   /* monotonic; 0 = none */
    keel_job_outcome outcome;
    char *error;
    uint64_t snooze_ms;
    keel_db_conn *conn;     /* the runner thread's (sync) */
    int running;            /* handler started (mu) */
    int timed_out;          /* the loop recorded a timeout (mu) */
    int expiring;           /* the loop is recording it now (mu) */
    int async_done;         /* the handler finished / keel_job_done called (mu) */
    keel_job *next;         /* ready list, or the async done list */
    keel_job *prev_all, *next_all; /* j->all: every job in flight */
};

struct keel_jobs {
    keel_config cfg;
    keel_jobs_options o;    /* strings borrowed from cfg */
    char *url;
    char id[96];
    int pg;
    keel_job_handler handlers[MAX_HANDLERS];
    size_t nhandlers;
    char *kinds_json;       /* the registered kinds as a JSON array (fetch filter) */
    jq queues[KEEL__JOBS_MAX_QUEUES];
    size_t nq;

    pthread_mutex_t mu;
    pthread_cond_t cond;       /* runner threads: work or stop */
    pthread_cond_t idle_cond;  /* keel_jobs_stop: inflight reached 0 */
    keel_job *all;             /* every fetched job not yet recorded (mu) */
    keel_job *done_head;       /* async results to record (mu) */
    int stopping;              /* no more fetching (mu) */
    int quit;                  /* the loop closes its handles (mu) */
    int threads_exit;          /* runner threads leave when idle (mu) */
    int loop_up;               /* wake may be sent (mu) */
    int started, abandoned;
    int64_t due[NDUE];         /* wall ms when retries/snoozes of ours come due (mu) */
    unsigned ndue;             /* entries in due, unordered (mu) */
    int64_t *ok_ids;           /* completed jobs not written yet: id, attempt pairs (mu) */
    size_t ok_n, ok_cap;       /* pairs */
    int ok_flushing;           /* a queue thread is writing them (mu) */

    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t poll_timer, maint_timer;
    uv_thread_t loop_thread;
    keel_db_conn *dconn;
    uint64_t last_heartbeat, last_rescue, last_prune, last_depth;

    pthread_t listener;
    int listener_up;
    atomic_int listener_stop;

    keel__sched_set sched;     /* schedules (jobs_cron.c) */

    keel_metrics *m;
    unsigned shard;
    keel_metric *enqueued, *completed, *running, *depth, *duration, *wait;
};

/* ---------------------------------------------------------------- the process's runners */

static pthread_mutex_t g_local_mu = PTHREAD_MUTEX_INITIALIZER;
static keel_jobs *g_local[16];
static size_t g_nlocal;

void keel__jobs_local_add(keel_jobs *j)
{
    pthread_mutex_lock(&g_local_mu);
    if (g_nlocal < sizeof(g_local) / sizeof(g_local[0]))
        g_local[g_nlocal++] = j;
    pthread_mutex_unlock(&g_local_mu);
}

void keel__jobs_local_remove(keel_jobs *j)
{
    pthread_mutex_lock(&g_local_mu);
    for (size_t i = 0; i < g_nlocal; i++) {
        if (g_local[i] == j) {
            g_local[i] = g_local[--g_nlocal];
            break;
        }
    }
    pthread_mutex_unlock(&g_local_mu);
}

static jq *find_queue(const keel_jobs *j, const char *name)
{
    for (size_t i = 0; i < j->nq; i++)
        if (!strcmp(j->queues[i].name, name))
            return (jq *)&j->queues[i];
    return NULL;
}

int keel__jobs_serves(const keel_jobs *j, const char *queue)
{
    return find_queue(j, queue) != NULL;
}

void keel__jobs_wake_local(const char *queue, int enqueued)
{
    int counted = !enqueued;
    pthread_mutex_lock(&g_local_mu);
    for (size_t i = 0; i < g_nlocal; i++) {
        keel_jobs *j = g_local[i];
        if (!counted && j->enqueued) {
            const char *lv[] = {find_queue(j, queue) ? queue : "other"};
            keel_metric_add(j->enqueued, j->shard, lv, 1);
            counted = 1;
        }
        if (keel__jobs_serves(j, queue))
            keel_jobs_wake(j);
    }
    pthread_mutex_unlock(&g_local_mu);
}

void keel_jobs_wake(keel_jobs *j)
{
    pthread_mutex_lock(&j->mu);
    if (j->loop_up)
        uv_async_send(&j->wake);
    pthread_mutex_unlock(&j->mu);
}

const char *keel_jobs_id(const keel_jobs *j)
{
    return j->id;
}

/* ---------------------------------------------------------------- accessors */

keel__sched_set *keel__jobs_sched_set(keel_jobs *j) { return &j->sched; }
int keel__jobs_started(const keel_jobs *j) { return j->started; }

int64_t keel_job_id(const keel_job *job) { return job->id; }
const char *keel_job_kind(const keel_job *job) { return job->kind; }
const char *keel_job_queue(const keel_job *job) { return job->q->name; }
json_t *keel_job_args(const keel_job *job) { return job->args; }
unsigned keel_job_attempt(const keel_job *job) { return job->attempt; }
unsigned keel_job_max_attempts(const keel_job *job) { return job->max_attempts; }
uv_loop_t *keel_job_loop(keel_job *job) { return &job->j->loop; }

int keel_job_expired(const keel_job *job)
{
    return job->deadline_ms && keel_now_ms() >= job->deadline_ms;
}

keel_db_conn *keel_job_db(keel_job *job)
{
    return job->conn;
}

static void set_error(keel_job *job, const char *error)
{
    keel_free(job->error);
    job->error = keel_strdup(error ? error : "");
}

keel_job_outcome keel_job_retry(keel_job *job, const char *error)
{
    set_error(job, error);
    return KEEL_JOB_RETRY;
}

keel_job_outcome keel_job_fail(keel_job *job, const char *error)
{
    set_error(job, error);
    return KEEL_JOB_FAIL;
}

keel_job_outcome keel_job_snooze(keel_job *job, uint64_t delay_ms)
{
    job->snooze_ms = delay_ms;
    return KEEL_JOB_SNOOZE;
}

/* ---------------------------------------------------------------- results */

static void count_result(keel_jobs *j, jq *q, int r)
{
    if (j->completed)
        keel_metric_add(j->completed, j->shard, (const char *[]){q->name, RESULTS[r]}, 1);
}

static void job_free(keel_job *job)
{
    json_decref(job->args);
    keel_free(job->error);
    keel_free(job);
}

/* Why the job did not end as its handler said: logged at warn. */
static void log_dropped(keel_job *job, const char *why)
{
    keel_log(KEEL_LOG_WARN, "job result dropped", "{s:I,s:s,s:i,s:s}", "job_id",
             (json_int_t)job->id, "kind", job->kind, "attempt", (int)job->attempt, "reason", why);
}

typedef struct finish_ctx {
    keel_job *job;
    keel_job_outcome outcome;
    const char *error;
    int64_t run_at; /* for retry / snooze */
    int result;     /* RESULTS index written */
    int64_t affected;
} finish_ctx;

/* One transaction: read the job's errors (if an error is recorded), then
 * the compare-and-set update. Safe to run again (keel_db_tx retries). */
static int finish_tx(keel_db_conn *c, void *arg)
{
    finish_ctx *f = arg;
    keel_job *job = f->job;
    keel_jobs *j = job->j;
    int64_t now = keel__jobs_now();
    f->affected = 0;
    char *errors = NULL;
    if (f->error) {
        keel_db_rows *rows = NULL;
        keel_db_param p[] = {KEEL_DB_P_INT(job->id), KEEL_DB_P_INT(job->attempt),
                             KEEL_DB_P_TEXT(j->id)};
        int rc = keel_db_query(c,
                               "SELECT errors FROM keel_jobs WHERE id = $1 AND state = 'running' "
                               "AND attempt = $2 AND locked_by = $3",
                               p, 3, &rows);
        if (rc < 0)
            return rc;
        rc = keel_db_rows_next(rows);
        if (rc == 1) {
            keel_str e = keel_db_get_text(rows, 0);
            errors = keel__jobs_errors_append(e.ptr, e.len, now, job->attempt, f->error);
        }
        keel_db_rows_free(rows);
        if (rc <= 0)
            return rc; /* not ours any more: affected stays 0 */
    }
    const char *state;
    int64_t run_at = 0, attempt = job->attempt;
    int finished = 0;
    switch (f->outcome) {
    case KEEL_JOB_OK:
        state = "completed", finished = 1, f->result = R_COMPLETED;
        break;
    case KEEL_JOB_SNOOZE:
        state = "scheduled", run_at = f->run_at, attempt--, f->result = R_SNOOZED;
        break;
    case KEEL_JOB_CANCEL:
        state = "cancelled", finished = 1, f->result = R_CANCELLED;
        break;
    case KEEL_JOB_RETRY:
        if (job->attempt >= job->max_attempts) {
            state = "dead", finished = 1, f->result = R_DEAD;
        } else {
            state = "retryable", run_at = f->run_at, f->result = R_RETRYABLE;
        }
        break;
    case KEEL_JOB_FAIL:
    default:
        state = "dead", finished = 1, f->result = R_DEAD;
        break;
    }
    keel_db_param p[] = {
        KEEL_DB_P_INT(job->id),
        KEEL_DB_P_INT(job->attempt),
        KEEL_DB_P_TEXT(j->id),
        KEEL_DB_P_TEXT(state),
        finished ? KEEL_DB_P_INT(now) : KEEL_DB_P_NULL(),
        KEEL_DB_P_INT(run_at),
        KEEL_DB_P_INT(attempt),
        errors ? KEEL_DB_P_TEXT(errors) : KEEL_DB_P_NULL(),
    };
    int rc = keel_db_exec(c,
                          "UPDATE keel_jobs SET state = $4, finished_at = $5, "
                          "run_at = CASE WHEN $6 > 0 THEN $6 ELSE run_at END, attempt = $7, "
                          "errors = COALESCE($8, errors), locked_by = NULL, heartbeat_at = NULL "
                          "WHERE id = $1 AND state = 'running' AND attempt = $2 AND locked_by = $3",
                          p, sizeof(p) / sizeof(p[0]), &f->affected);
    free(errors);
    return rc;
}

/* The due times (mu held). A single "earliest" value is not enough: the
 * poll that takes one retry must still know when the next comes due. */
static void due_add(keel_jobs *j, int64_t t)
{
    if (j->ndue < NDUE) {
        j->due[j->ndue++] = t;
        return;
    }
    unsigned latest = 0;
    for (unsigned i = 1; i < j->ndue; i++)
        if (j->due[i] > j->due[latest])
            latest = i;
    if (t < j->due[latest])
        j->due[latest] = t;
}

static int64_t due_min(const keel_jobs *j)
{
    int64_t m = 0;
    for (unsigned i = 0; i < j->ndue; i++)
        if (!m || j->due[i] < m)
            m = j->due[i];
    return m;
}

static void due_drop_past(keel_jobs *j, int64_t now)
{
    for (unsigned i = 0; i < j->ndue;)
        if (j->due[i] <= now)
            j->due[i] = j->due[--j->ndue];
        else
            i++;
}

/* Writes job's result on c (any thread). Returns the RESULTS index. */
static int record(keel_db_conn *c, keel_job *job, keel_job_outcome outcome, const char *error)
{
    keel_jobs *j = job->j;
    finish_ctx f = {.job = job, .outcome = outcome, .error = error};
    if (outcome == KEEL_JOB_RETRY && !f.error)
        f.error = "retry requested";
    if (outcome == KEEL_JOB_RETRY) {
        uint64_t cap = keel_jobs_backoff_cap(j->o.backoff_base_ms, j->o.backoff_max_ms,
                                             job->attempt);
        uint64_t d = cap ? (uint64_t)randombytes_uniform((uint32_t)(cap > UINT32_MAX - 1
                                                                        ? UINT32_MAX - 1
                                                                        : cap) + 1)
                         : 0;
        f.run_at = keel__jobs_now() + (int64_t)d;
        if (f.run_at <= 0)
            f.run_at = 1;
    } else if (outcome == KEEL_JOB_SNOOZE) {
        f.run_at = keel__jobs_now() + (int64_t)job->snooze_ms;
    }
    /* Without an error to append, the result is one compare-and-set
     * statement (its own transaction); with one, read + update in one. */
    int rc = !c         ? KEEL_EDB_UNAVAILABLE
             : f.error ? keel_db_tx(c, finish_tx, &f)
                       : finish_tx(c, &f);
    if (rc < 0) {
        /* the row stays running: the rescue gives it back after JOBS_RESCUE_AFTER */
        keel_log(KEEL_LOG_ERROR, "job result not recorded", "{s:I,s:s,s:s}", "job_id",
                 (json_int_t)job->id, "kind", job->kind, "error", keel_db_strerror(rc));
        return R_DISCARDED;
    }
    if (f.affected == 0) {
        log_dropped(job, "no longer running on this attempt (rescued, cancelled or timed out)");
        return R_DISCARDED;
    }
    if (f.run_at > 0 && (outcome == KEEL_JOB_RETRY || outcome == KEEL_JOB_SNOOZE) &&
        f.result != R_DEAD) {
        pthread_mutex_lock(&j->mu);
        due_add(j, f.run_at);
        pthread_mutex_unlock(&j->mu);
    }
    if (f.result == R_DEAD || f.result == R_RETRYABLE)
        keel_log(f.result == R_DEAD ? KEEL_LOG_ERROR : KEEL_LOG_WARN,
                 f.result == R_DEAD ? "job dead" : "job failed, will retry",
                 "{s:I,s:s,s:i,s:s}", "job_id", (json_int_t)job->id, "kind", job->kind,
                 "attempt", (int)job->attempt, "error", f.error ? f.error : "");
    return f.result;
}

/* The job's slot is free: unlink, count, wake the loop for the next fetch. */
static void release_slot(keel_job *job, int result, int free_it)
{
    keel_jobs *j = job->j;
    jq *q = job->q;
    if (j->duration && job->started_ms)
        keel_metric_observe(j->duration, j->shard, (const char *[]){q->name},
                            (double)(keel_now_ms() - job->started_ms) / 1000.0);
    if (result >= 0)
        count_result(j, q, result);
    pthread_mutex_lock(&j->mu);
    if (job->prev_all)
        job->prev_all->next_all = job->next_all;
    else if (j->all == job)
        j->all = job->next_all;
    if (job->next_all)
        job->next_all->prev_all = job->prev_all;
    job->prev_all = job->next_all = NULL;
    q->inflight--;
    if (j->running)
        keel_metric_set(j->running, j->shard, (const char *[]){q->name}, q->inflight);
    if (j->loop_up)
        uv_async_send(&j->wake);
    pthread_cond_broadcast(&j->idle_cond);
    pthread_mutex_unlock(&j->mu);
    if (free_it)
        job_free(job);
}

/* ---------------------------------------------------------------- group completion
 *
 * A completed job's row is written by one UPDATE for every job completed
 * meanwhile (group commit): the thread that finds no write in progress
 * writes everything pending — its own job at once when the runner is
 * quiet — while the others only append theirs. Under load one commit (one
 * fsync) then covers many jobs. Each row is still a compare-and-set on
 * (id, attempt, running, locked_by). Until the write, the row stays
 * running under our heartbeat; a crash in between reruns the job
 * (at-least-once, like any crash before the result is written). */

enum { OK_BATCH_MAX = 500 };

static int complete_ok(keel_jobs *j, keel_db_conn *c, keel_job *job)
{
    pthread_mutex_lock(&j->mu);
    if (j->ok_n == j->ok_cap) {
        j->ok_cap = j->ok_cap ? j->ok_cap * 2 : 64;
        j->ok_ids = keel_realloc(j->ok_ids, j->ok_cap * 2 * sizeof(int64_t));
    }
    j->ok_ids[2 * j->ok_n] = job->id;
    j->ok_ids[2 * j->ok_n + 1] = job->attempt;
    j->ok_n++;
    if (j->ok_flushing) {
        pthread_mutex_unlock(&j->mu);
        return R_COMPLETED; /* the writer in progress takes it next */
    }
    j->ok_flushing = 1;
    while (j->ok_n > 0) {
        size_t n = j->ok_n < OK_BATCH_MAX ? j->ok_n : OK_BATCH_MAX;
        keel_db_param *p = keel_malloc((2 * n + 2) * sizeof(*p));
        p[0] = KEEL_DB_P_INT(keel__jobs_now());
        p[1] = KEEL_DB_P_TEXT(j->id);
        for (size_t i = 0; i < 2 * n; i++)
            p[2 + i] = KEEL_DB_P_INT(j->ok_ids[i]);
        memmove(j->ok_ids, j->ok_ids + 2 * n, (j->ok_n - n) * 2 * sizeof(int64_t));
        j->ok_n -= n;
        pthread_mutex_unlock(&j->mu);

        keel_buf sql = {0};
        keel_buf_append_str(&sql, "UPDATE keel_jobs SET state = 'completed', finished_at = $1, "
                                  "locked_by = NULL, heartbeat_at = NULL WHERE state = 'running' "
                                  "AND locked_by = $2 AND (id, attempt) IN (VALUES ");
        for (size_t i = 0; i < n; i++)
            keel_buf_printf(&sql, "%s($%zu, $%zu)", i ? ", " : "", 3 + 2 * i, 4 + 2 * i);
        keel_buf_append(&sql, ")", 2); /* with the NUL */
        int64_t affected = 0;
        int rc = keel_db_exec(c, sql.data, p, 2 * n + 2, &affected);
        keel_free(sql.data);
        keel_free(p);
        if (rc < 0)
            keel_log(KEEL_LOG_ERROR, "job results not recorded (rescued later)", "{s:i,s:s}",
                     "jobs", (int)n, "error", keel_db_strerror(rc));
        else if ((size_t)affected < n)
            keel_log(KEEL_LOG_WARN, "job results dropped", "{s:i,s:s}", "jobs",
                     (int)(n - (size_t)affected),
                     "reason", "no longer running on this attempt (rescued, cancelled or timed out)");
        pthread_mutex_lock(&j->mu);
    }
    j->ok_flushing = 0;
    pthread_mutex_unlock(&j->mu);
    return R_COMPLETED;
}

/* ---------------------------------------------------------------- runner threads */

typedef struct thread_arg {
    keel_jobs *j;
    jq *q;
} thread_arg;

static void *queue_thread(void *arg)
{
    thread_arg *ta = arg;
    keel_jobs *j = ta->j;
    jq *q = ta->q;
    keel_free(ta);
    keel_db_conn *c = NULL;
    for (;;) {
        pthread_mutex_lock(&j->mu);
        while (!q->ready && !j->threads_exit)
            pthread_cond_wait(&j->cond, &j->mu);
        keel_job *job = q->ready;
        if (!job) {
            pthread_mutex_unlock(&j->mu);
            break;
        }
        q->ready = job->next;
        if (!q->ready)
            q->ready_tail = NULL;
        job->next = NULL;
        job->running = 1;
        job->started_ms = keel_now_ms();
        job->deadline_ms = job->timeout_ms ? job->started_ms + job->timeout_ms : 0;
        pthread_mutex_unlock(&j->mu);

        if (c && c->broken) {
            keel_db_disconnect(c);
            c = NULL;
        }
        if (!c) {
            char err[256];
            if (keel_db_connect(j->url, &j->cfg, &c, err, sizeof(err)) < 0) {
                keel_log(KEEL_LOG_ERROR, "jobs: cannot connect", "{s:s}", "error", err);
                c = NULL;
            }
        }
        job->conn = c;
        keel_job_outcome out = job->h->run(job, job->h->arg);
        job->conn = NULL;
        pthread_mutex_lock(&j->mu);
        int timed_out = job->timed_out;
        job->async_done = 1; /* finished: expire() leaves it alone now */
        while (job->expiring) /* the loop still writes the timeout */
            pthread_cond_wait(&j->idle_cond, &j->mu);
        pthread_mutex_unlock(&j->mu);
        int result;
        if (timed_out) {
            log_dropped(job, "timed out");
            result = -1; /* counted as timeout by the loop */
        } else if (job->deadline_ms && keel_now_ms() >= job->deadline_ms) {
            /* returned after its deadline, before the loop noticed: the
             * same timeout, whatever the handler said */
            char why[64];
            snprintf(why, sizeof(why), "timeout after %llu ms",
                     (unsigned long long)(job->deadline_ms - job->started_ms));
            result = record(c, job, KEEL_JOB_RETRY, why);
            count_result(j, q, R_TIMEOUT);
        } else {
            result = out == KEEL_JOB_OK && c ? complete_ok(j, c, job)
                                             : record(c, job, out, job->error);
        }
        release_slot(job, result, 1);
    }
    keel_db_disconnect(c);
    keel_log_thread_close();
    return NULL;
}

/* ---------------------------------------------------------------- async handlers */

void keel_job_done(keel_job *job, keel_job_outcome outcome)
{
    keel_jobs *j = job->j;
    pthread_mutex_lock(&j->mu);
    job->outcome = outcome;
    job->async_done = 1;
    job->next = j->done_head;
    j->done_head = job;
    if (j->loop_up)
        uv_async_send(&j->wake);
    pthread_mutex_unlock(&j->mu);
}

/* On the loop: the results of async handlers. */
static void drain_done(keel_jobs *j)
{
    pthread_mutex_lock(&j->mu);
    keel_job *list = j->done_head;
    j->done_head = NULL;
    pthread_mutex_unlock(&j->mu);
    while (list) {
        keel_job *job = list;
        list = job->next;
        job->next = NULL;
        if (job->timed_out) { /* slot released at the timeout */
            log_dropped(job, "timed out");
            job_free(job);
            continue;
        }
        int result = record(j->dconn, job, job->outcome, job->error);
        release_slot(job, result, 1);
    }
}

/* ---------------------------------------------------------------- fetch */

static const keel_job_handler *find_handler(const keel_jobs *j, const char *kind)
{
    for (size_t i = 0; i < j->nhandlers; i++)
        if (!strcmp(j->handlers[i].kind, kind))
            return &j->handlers[i];
    return NULL;
}

/* The loop's connection, (re)opened on demand; NULL when the database is down. */
int keel__jobs_has_handler(const keel_jobs *j, const char *kind)
{
    return find_handler(j, kind) != NULL;
}

int keel_jobs_has_kind(const keel_jobs *j, const char *kind)
{
    return j && kind && find_handler(j, kind) != NULL;
}

static keel_db_conn *loop_conn(keel_jobs *j)
{
    if (j->dconn && j->dconn->broken) {
        keel_db_disconnect(j->dconn);
        j->dconn = NULL;
    }
    if (!j->dconn) {
        char err[256];
        if (keel_db_connect(j->url, &j->cfg, &j->dconn, err, sizeof(err)) < 0) {
            keel_log(KEEL_LOG_ERROR, "jobs: cannot connect", "{s:s}", "error", err);
            j->dconn = NULL;
        }
    }
    return j->dconn;
}

typedef struct fetch_ctx {
    keel_jobs *j;
    jq *q;
    unsigned want;
    keel_job *got; /* fetched jobs (reset when the tx reruns) */
    unsigned n;
} fetch_ctx;

static void fetch_reset(fetch_ctx *f)
{
    while (f->got) {
        keel_job *job = f->got;
        f->got = job->next;
        job_free(job);
    }
    f->n = 0;
}

static int fetch_tx(keel_db_conn *c, void *arg)
{
    fetch_ctx *f = arg;
    keel_jobs *j = f->j;
    fetch_reset(f);
    int64_t now = keel__jobs_now();
    keel_db_param p[] = {KEEL_DB_P_INT(now), KEEL_DB_P_TEXT(j->id), KEEL_DB_P_TEXT(f->q->name),
                         KEEL_DB_P_INT(f->want), KEEL_DB_P_TEXT(j->kinds_json)};
    static const char *const pg_sql =
        "WITH c AS (SELECT id FROM keel_jobs WHERE queue = $3 AND state IN " KEEL__JOBS_FETCHABLE
        " AND run_at <= $1 AND kind IN (SELECT jsonb_array_elements_text($5::jsonb)) AND "
        "NOT EXISTS (SELECT 1 FROM keel_job_queues WHERE queue = $3 AND "
        "paused <> 0) ORDER BY priority, run_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) "
        "UPDATE keel_jobs AS k SET state = 'running', attempt = k.attempt + 1, attempted_at = $1, "
        "heartbeat_at = $1, locked_by = $2 FROM c WHERE k.id = c.id "
        "RETURNING k.id, k.kind, k.args, k.attempt, k.max_attempts, k.timeout_ms, k.run_at";
    static const char *const sqlite_sql =
        "UPDATE keel_jobs SET state = 'running', attempt = attempt + 1, attempted_at = $1, "
        "heartbeat_at = $1, locked_by = $2 WHERE id IN (SELECT id FROM keel_jobs WHERE "
        "queue = $3 AND state IN " KEEL__JOBS_FETCHABLE " AND run_at <= $1 AND kind IN "
        "(SELECT value FROM json_each($5)) AND NOT EXISTS "
        "(SELECT 1 FROM keel_job_queues WHERE queue = $3 AND paused <> 0) ORDER BY priority, "
        "run_at, id LIMIT $4) "
        "RETURNING id, kind, args, attempt, max_attempts, timeout_ms, run_at";
    keel_db_rows *rows = NULL;
    int rc = keel_db_query(c, j->pg ? pg_sql : sqlite_sql, p, 5, &rows);
    if (rc < 0)
        return rc;
    while ((rc = keel_db_rows_next(rows)) == 1) {
        keel_job *job = keel_calloc(1, sizeof(*job));
        job->j = j;
        job->q = f->q;
        job->id = keel_db_get_int(rows, 0);
        keel_str k = keel_db_get_text(rows, 1);
        snprintf(job->kind, sizeof(job->kind), "%.*s", (int)k.len, k.ptr ? k.ptr : "");
        keel_str a = keel_db_get_text(rows, 2);
        job->args = a.ptr ? json_loadb(a.ptr, a.len, 0, NULL) : NULL;
        if (!job->args)
            job->args = json_object();
        job->attempt = (unsigned)keel_db_get_int(rows, 3);
        job->max_attempts = (unsigned)keel_db_get_int(rows, 4);
        job->timeout_ms = (uint64_t)keel_db_get_int(rows, 5);
        job->run_at = keel_db_get_int(rows, 6);
        job->next = f->got;
        f->got = job;
        f->n++;
    }
    keel_db_rows_free(rows);
    return rc;
}

/* Hands one fetched job to its runner thread or async handler. */
static void dispatch(keel_jobs *j, keel_job *job)
{
    jq *q = job->q;
    job->h = find_handler(j, job->kind);
    int64_t now = keel__jobs_now();
    if (j->wait)
        keel_metric_observe(j->wait, j->shard, (const char *[]){q->name},
                            now > job->run_at ? (double)(now - job->run_at) / 1000.0 : 0.0);
    uint64_t tmo = job->timeout_ms ? job->timeout_ms
                   : job->h && job->h->timeout_ms ? job->h->timeout_ms
                                                  : j->o.timeout_ms;
    pthread_mutex_lock(&j->mu);
    job->next_all = j->all;
    if (j->all)
        j->all->prev_all = job;
    j->all = job;
    if (j->running)
        keel_metric_set(j->running, j->shard, (const char *[]){q->name}, q->inflight);
    pthread_mutex_unlock(&j->mu);
    if (!job->h) {
        char why[KEEL_JOB_NAME_MAX + sizeof(j->id) + 64];
        snprintf(why, sizeof(why), "no handler for kind \"%s\" on runner %s", job->kind, j->id);
        job->started_ms = keel_now_ms();
        int result = record(j->dconn, job, KEEL_JOB_RETRY, why);
        release_slot(job, result, 1);
        return;
    }
    job->timeout_ms = tmo; /* the effective one; the deadline counts from the start */
    if (job->h->start) {
        job->deadline_ms = tmo ? keel_now_ms() + tmo : 0;
        job->started_ms = keel_now_ms();
        pthread_mutex_lock(&j->mu);
        job->running = 1;
        pthread_mutex_unlock(&j->mu);
        job->h->start(job, job->h->arg);
        return;
    }
    pthread_mutex_lock(&j->mu);
    if (q->ready_tail)
        q->ready_tail->next = job;
    else
        q->ready = job;
    q->ready_tail = job;
    pthread_cond_broadcast(&j->cond);
    pthread_mutex_unlock(&j->mu);
}

static void on_poll(uv_timer_t *t);

static int fetch_queue(keel_jobs *j, jq *q)
{
    for (int rounds = 0; rounds < 64; rounds++) {
        pthread_mutex_lock(&j->mu);
        unsigned free_slots = j->stopping ? 0 : q->concurrency - q->inflight;
        pthread_mutex_unlock(&j->mu);
        if (free_slots == 0)
            return 0;
        /* With a backlog, wait for a quarter of the slots before fetching
         * again: one statement for several jobs instead of one per job. An
         * idle queue (no backlog) fetches at once. */
        if (q->backlog && free_slots < (q->concurrency + 3) / 4)
            return 0;
        if (q->rate_n) {
            uint64_t now = keel_now_ms();
            if (now - q->win_start >= q->rate_window_ms) {
                q->win_start = now;
                q->win_count = 0;
            }
            unsigned left = q->rate_n - q->win_count;
            if (left == 0) {
                uint64_t wait = q->rate_window_ms - (now - q->win_start);
                if (!uv_is_active((uv_handle_t *)&j->poll_timer) ||
                    uv_timer_get_due_in(&j->poll_timer) > wait)
                    uv_timer_start(&j->poll_timer, on_poll, wait + 1, 0);
                return 0;
            }
            if (free_slots > left)
                free_slots = left;
        }
        keel_db_conn *c = loop_conn(j);
        if (!c)
            return -1;
        fetch_ctx f = {.j = j, .q = q, .want = free_slots};
        int rc = j->pg ? fetch_tx(c, &f) : keel_db_tx(c, fetch_tx, &f);
        if (rc < 0) {
            fetch_reset(&f);
            keel_log(KEEL_LOG_ERROR, "jobs: fetch failed", "{s:s,s:s,s:s}", "queue", q->name,
                     "error", keel_db_strerror(rc), "detail", keel_db_errmsg(c));
            return -1;
        }
        unsigned n = f.n;
        pthread_mutex_lock(&j->mu);
        q->inflight += n;
        pthread_mutex_unlock(&j->mu);
        q->win_count += n;
        while (f.got) {
            keel_job *job = f.got;
            f.got = job->next;
            job->next = NULL;
            dispatch(j, job);
        }
        q->backlog = n == free_slots;
        if (n < free_slots)
            return 0;
    }
    return 0;
}

/* Fetches for every queue. A failed fetch (database down, busy) is
 * tried again soon rather than at the next poll: a retry of ours that
 * came due must not wait JOBS_POLL_INTERVAL because of it. */
static void fetch_all(keel_jobs *j)
{
    if (j->nhandlers == 0)
        return; /* no kind to run: the jobs wait for a runner that has one */
    int failed = 0;
    for (size_t i = 0; i < j->nq; i++)
        failed |= fetch_queue(j, &j->queues[i]) < 0;
    if (failed) {
        pthread_mutex_lock(&j->mu);
        due_add(j, keel__jobs_now() + 200);
        pthread_mutex_unlock(&j->mu);
    }
}

/* ---------------------------------------------------------------- maintenance */

/* Jobs past their timeout: recorded as a retry ("timeout") now, so the
 * job can run again elsewhere; a sync handler keeps its slot until it
 * returns (a thread cannot be stopped), an async one frees it now. */
static void expire(keel_jobs *j)
{
    uint64_t now = keel_now_ms();
    for (;;) {
        keel_job *hit = NULL;
        pthread_mutex_lock(&j->mu);
        for (keel_job *job = j->all; job; job = job->next_all) {
            if (job->running && !job->timed_out && !job->async_done && job->deadline_ms &&
                now >= job->deadline_ms) {
                hit = job;
                hit->timed_out = hit->expiring = 1; /* ours until expiring is 0 */
                break;
            }
        }
        pthread_mutex_unlock(&j->mu);
        if (!hit)
            return;
        char why[64];
        snprintf(why, sizeof(why), "timeout after %llu ms",
                 (unsigned long long)(hit->deadline_ms - hit->started_ms));
        int result = record(loop_conn(j), hit, KEEL_JOB_RETRY, why);
        count_result(j, hit->q, R_TIMEOUT);
        (void)result;
        pthread_mutex_lock(&j->mu);
        hit->expiring = 0;
        int async = hit->h && hit->h->start;
        pthread_cond_broadcast(&j->idle_cond);
        pthread_mutex_unlock(&j->mu);
        if (async)
            release_slot(hit, -1, 0); /* freed when keel_job_done comes */
    }
}

static void heartbeat(keel_jobs *j, keel_db_conn *c)
{
    keel_db_param p[] = {KEEL_DB_P_INT(keel__jobs_now()), KEEL_DB_P_TEXT(j->id)};
    int rc = keel_db_exec(c,
                          "UPDATE keel_jobs SET heartbeat_at = $1 WHERE state = 'running' AND "
                          "locked_by = $2",
                          p, 2, NULL);
    if (rc < 0)
        keel_log(KEEL_LOG_ERROR, "jobs: heartbeat failed", "{s:s}", "error", keel_db_strerror(rc));
}

/* Running jobs without a heartbeat for JOBS_RESCUE_AFTER: one set-based
 * compare-and-set (state running, heartbeat old), so two instances
 * rescuing at once rescue each job once, and a job that finished in the
 * meantime (no longer running) is left alone. */
static void rescue(keel_jobs *j, keel_db_conn *c)
{
    int64_t now = keel__jobs_now();
    keel_db_param p[] = {KEEL_DB_P_INT(now), KEEL_DB_P_INT(now - (int64_t)j->o.rescue_after_ms)};
    keel_db_rows *rows = NULL;
    int rc = keel_db_query(c,
                           "UPDATE keel_jobs SET state = CASE WHEN attempt >= max_attempts THEN "
                           "'dead' ELSE 'retryable' END, finished_at = CASE WHEN attempt >= "
                           "max_attempts THEN $1 ELSE NULL END, run_at = $1, locked_by = NULL, "
                           "heartbeat_at = NULL WHERE state = 'running' AND heartbeat_at < $2 "
                           "RETURNING id, kind, attempt, state",
                           p, 2, &rows);
    if (rc < 0) {
        keel_log(KEEL_LOG_ERROR, "jobs: rescue failed", "{s:s}", "error", keel_db_strerror(rc));
        return;
    }
    int any = 0;
    while (keel_db_rows_next(rows) == 1) {
        keel_str k = keel_db_get_text(rows, 1), st = keel_db_get_text(rows, 3);
        keel_log(KEEL_LOG_WARN, "job rescued", "{s:I,s:s%,s:I,s:s%}", "job_id",
                 (json_int_t)keel_db_get_int(rows, 0), "kind", k.ptr ? k.ptr : "", k.len,
                 "attempt", (json_int_t)keel_db_get_int(rows, 2), "state", st.ptr ? st.ptr : "",
                 st.len);
        any = 1;
    }
    keel_db_rows_free(rows);
    if (any)
        fetch_all(j);
}

static void prune(keel_jobs *j, keel_db_conn *c)
{
    int64_t now = keel__jobs_now();
    keel_db_param p[] = {KEEL_DB_P_INT(now - (int64_t)j->o.retention_ms),
                         KEEL_DB_P_INT(now - (int64_t)j->o.dead_retention_ms)};
    int64_t n = 0;
    int rc = keel_db_exec(c,
                          "DELETE FROM keel_jobs WHERE id IN (SELECT id FROM keel_jobs WHERE "
                          "(state IN ('completed', 'cancelled') AND finished_at < $1) OR "
                          "(state = 'dead' AND finished_at < $2) LIMIT 1000)",
                          p, 2, &n);
    if (rc < 0)
        keel_log(KEEL_LOG_ERROR, "jobs: prune failed", "{s:s}", "error", keel_db_strerror(rc));
    else if (n > 0)
        keel_log(KEEL_LOG_DEBUG, "jobs pruned", "{s:I}", "count", (json_int_t)n);
}

static void depth(keel_jobs *j, keel_db_conn *c)
{
    if (!j->depth)
        return;
    double v[KEEL__JOBS_MAX_QUEUES][NDEPTH];
    memset(v, 0, sizeof(v));
    keel_db_rows *rows = NULL;
    int rc = keel_db_query(c,
                           "SELECT queue, state, count(*) FROM keel_jobs WHERE state IN "
                           "('available', 'scheduled', 'running', 'retryable', 'dead') "
                           "GROUP BY queue, state",
                           NULL, 0, &rows);
    if (rc < 0)
        return;
    while (keel_db_rows_next(rows) == 1) {
        keel_str q = keel_db_get_text(rows, 0), st = keel_db_get_text(rows, 1);
        for (size_t i = 0; i < j->nq; i++) {
            if (q.len != strlen(j->queues[i].name) || memcmp(q.ptr, j->queues[i].name, q.len))
                continue;
            for (size_t s = 0; s < NDEPTH; s++)
                if (st.len == strlen(DEPTH_STATES[s]) && !memcmp(st.ptr, DEPTH_STATES[s], st.len))
                    v[i][s] = (double)keel_db_get_int(rows, 2);
        }
    }
    keel_db_rows_free(rows);
    for (size_t i = 0; i < j->nq; i++)
        for (size_t s = 0; s < NDEPTH; s++)
            keel_metric_set(j->depth, j->shard, (const char *[]){j->queues[i].name, DEPTH_STATES[s]},
                            v[i][s]);
}

/* Arms the poll timer: JOBS_POLL_INTERVAL, or sooner for a retry of ours. */
static void arm_poll(keel_jobs *j)
{
    uint64_t wait = j->o.poll_interval_ms;
    pthread_mutex_lock(&j->mu);
    int64_t due = due_min(j);
    pthread_mutex_unlock(&j->mu);
    if (due) {
        int64_t now = keel__jobs_now();
        uint64_t d = due > now ? (uint64_t)(due - now) + 1 : 0;
        if (d < wait)
            wait = d;
    }
    if (uv_is_active((uv_handle_t *)&j->poll_timer) && uv_timer_get_due_in(&j->poll_timer) <= wait)
        return;
    uv_timer_start(&j->poll_timer, on_poll, wait, 0);
}

/* Gives back jobs fetched but not started (stop): available again, the
 * attempt not spent. */
static void give_back(keel_jobs *j)
{
    for (size_t i = 0; i < j->nq; i++) {
        jq *q = &j->queues[i];
        pthread_mutex_lock(&j->mu);
        keel_job *list = q->ready;
        q->ready = q->ready_tail = NULL;
        pthread_mutex_unlock(&j->mu);
        while (list) {
            keel_job *job = list;
            list = job->next;
            keel_db_conn *c = loop_conn(j);
            if (c) {
                keel_db_param p[] = {KEEL_DB_P_INT(job->id), KEEL_DB_P_INT(job->attempt),
                                     KEEL_DB_P_TEXT(j->id)};
                keel_db_exec(c,
                             "UPDATE keel_jobs SET state = 'available', attempt = attempt - 1, "
                             "locked_by = NULL, heartbeat_at = NULL WHERE id = $1 AND "
                             "state = 'running' AND attempt = $2 AND locked_by = $3",
                             p, 3, NULL);
            }
            release_slot(job, -1, 1);
        }
    }
}

static void on_poll(uv_timer_t *t)
{
    keel_jobs *j = t->data;
    pthread_mutex_lock(&j->mu);
    due_drop_past(j, keel__jobs_now()); /* the fetch below takes what came due */
    int stopping = j->stopping;
    pthread_mutex_unlock(&j->mu);
    if (!stopping)
        fetch_all(j);
    arm_poll(j);
}

static void on_maint(uv_timer_t *t)
{
    keel_jobs *j = t->data;
    expire(j);
    keel_db_conn *c = loop_conn(j);
    if (!c)
        return;
    uint64_t now = keel_now_ms();
    uint64_t hb = j->o.rescue_after_ms / 4;
    if (now - j->last_heartbeat >= hb) {
        j->last_heartbeat = now;
        heartbeat(j, c);
    }
    if (now - j->last_rescue >= hb) {
        j->last_rescue = now;
        pthread_mutex_lock(&j->mu);
        int stopping = j->stopping;
        pthread_mutex_unlock(&j->mu);
        if (!stopping)
            rescue(j, c);
    }
    uint64_t prune_every = j->o.retention_ms / 2;
    if (prune_every > 60000)
        prune_every = 60000;
    if (prune_every < 500)
        prune_every = 500;
    if (now - j->last_prune >= prune_every) {
        j->last_prune = now;
        prune(j, c);
    }
    if (now - j->last_depth >= 5000) {
        j->last_depth = now;
        depth(j, c);
    }
    pthread_mutex_lock(&j->mu);
    int stopping = j->stopping;
    pthread_mutex_unlock(&j->mu);
    if (!stopping && j->sched.n)
        keel__jobs_sched_tick(j, c);
}

static void close_loop(keel_jobs *j);

static void on_wake(uv_async_t *a)
{
    keel_jobs *j = a->data;
    drain_done(j);
    pthread_mutex_lock(&j->mu);
    int stopping = j->stopping, quit = j->quit;
    pthread_mutex_unlock(&j->mu);
    if (stopping) {
        give_back(j);
        if (quit)
            close_loop(j);
        return;
    }
    fetch_all(j);
    arm_poll(j);
}

static void on_close(uv_handle_t *h)
{
    (void)h;
}

static void loop_main(void *arg)
{
    keel_jobs *j = arg;
    uv_run(&j->loop, UV_RUN_DEFAULT);
    keel_log_thread_close();
}

/* The loop ends: called on the loop (via wake) when stop asks. */
static void close_loop(keel_jobs *j)
{
    uv_close((uv_handle_t *)&j->poll_timer, on_close);
    uv_close((uv_handle_t *)&j->maint_timer, on_close);
    uv_close((uv_handle_t *)&j->wake, on_close);
}

/* ---------------------------------------------------------------- LISTEN (PostgreSQL) */

static void *listener_main(void *arg)
{
    keel_jobs *j = arg;
    keel_db_conn *c = NULL;
    while (!atomic_load(&j->listener_stop)) {
        if (!c || c->broken) {
            keel_db_disconnect(c);
            c = NULL;
            char err[256];
            if (keel_db_connect(j->url, &j->cfg, &c, err, sizeof(err)) < 0 ||
                keel_db_exec(c, "LISTEN keel_jobs", NULL, 0, NULL) < 0) {
                keel_db_disconnect(c);
                c = NULL;
                for (int i = 0; i < 10 && !atomic_load(&j->listener_stop); i++)
                    usleep(100 * 1000);
                continue;
            }
            keel_jobs_wake(j); /* anything enqueued while we were away */
        }
        PGconn *pg = ((pg_conn *)c)->pg;
        struct pollfd pfd = {.fd = pq.PQsocket(pg), .events = POLLIN};
        int r = poll(&pfd, 1, 200);
        if (r < 0 && errno != EINTR)
            c->broken = 1;
        if (r <= 0)
            continue;
        if (!pq.PQconsumeInput(pg)) {
            c->broken = 1;
            continue;
        }
        int wake = 0;
        PGnotify *n;
        while ((n = pq.PQnotifies(pg)) != NULL) {
            if (n->extra && keel__jobs_serves(j, n->extra))
                wake = 1;
            pq.PQfreemem(n);
        }
        if (wake)
            keel_jobs_wake(j);
    }
    keel_db_disconnect(c);
    keel_log_thread_close();
    return NULL;
}

/* ---------------------------------------------------------------- life cycle */

int keel_jobs_new(keel_jobs **out, const char *url, const keel_config *cfg, keel_metrics *m)
{
    *out = NULL;
    if (!url || !*url)
        return KEEL_EINVAL;
    keel_library_init();
    keel_jobs *j = keel_calloc(1, sizeof(*j));
    keel_config_copy(&j->cfg, cfg);
    j->o = *(const keel_jobs_options *)keel_config_get(&j->cfg, &keel_jobs_config);
    j->url = keel_strdup(url);
    j->pg = !strncmp(url, "postgres://", 11) || !strncmp(url, "postgresql://", 13);
    char host[64] = "host";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = 0;
    snprintf(j->id, sizeof(j->id), "%s:%d:%08x", host, (int)getpid(), randombytes_random());
    keel__jobs_qspec qs[KEEL__JOBS_MAX_QUEUES], rs[KEEL__JOBS_MAX_QUEUES];
    size_t nq = 0, nr = 0;
    char why[200];
    if (keel__jobs_parse_queues(j->o.queues, 0, qs, &nq, why, sizeof(why)) < 0 || nq == 0 ||
        keel__jobs_parse_queues(j->o.rate_limits, 1, rs, &nr, why, sizeof(why)) < 0) {
        keel_log(KEEL_LOG_ERROR, "jobs: bad JOBS_QUEUES or JOBS_RATE_LIMITS", "{s:s}", "error",
                 nq == 0 ? "no queue" : why);
        keel_config_close(&j->cfg);
        keel_free(j->url);
        keel_free(j);
        return KEEL_ECONFIG;
    }
    for (size_t i = 0; i < nq; i++) {
        jq *q = &j->queues[j->nq++];
        memcpy(q->name, qs[i].name, sizeof(q->name));
        q->concurrency = qs[i].n;
    }
    for (size_t i = 0; i < nr; i++) {
        jq *q = find_queue(j, rs[i].name);
        if (q) {
            q->rate_n = rs[i].n;
            q->rate_window_ms = rs[i].window_ms;
        }
    }
    pthread_mutex_init(&j->mu, NULL);
    pthread_mutex_init(&j->sched.mu, NULL);
    pthread_cond_init(&j->cond, NULL);
    pthread_cond_init(&j->idle_cond, NULL);
    j->m = m;
    if (m) {
        j->shard = keel_metrics_shards(m);
        static const double dur_b[] = {0.001, 0.005, 0.025, 0.1, 0.5, 1, 5, 30, 120, 600};
        static const double wait_b[] = {0.001, 0.005, 0.025, 0.1, 0.5, 1, 5, 30, 300, 3600};
        j->enqueued = keel_metrics_counter(m, "jobs_enqueued_total",
                                           "Jobs enqueued by this process, by queue "
                                           "(\"other\": a queue this runner does not serve)",
                                           (const char *[]){"queue", NULL});
        j->completed = keel_metrics_counter(m, "jobs_completed_total",
                                            "Job attempts ended, by queue and result",
                                            (const char *[]){"queue", "result", NULL});
        j->running = keel_metrics_gauge(m, "jobs_running", "Jobs running (fetched) now",
                                        (const char *[]){"queue", NULL});
        j->depth = keel_metrics_gauge(m, "jobs_queue_depth",
                                      "Jobs in the table by queue and state (every 5 s)",
                                      (const char *[]){"queue", "state", NULL});
        j->duration = keel_metrics_histogram(m, "job_duration_seconds", "Job run time",
                                             (const char *[]){"queue", NULL}, dur_b, 10);
        j->wait = keel_metrics_histogram(m, "job_wait_seconds",
                                         "From a job's run_at to its start",
                                         (const char *[]){"queue", NULL}, wait_b, 10);
        for (size_t i = 0; i < j->nq; i++) {
            const char *qn = j->queues[i].name;
            keel_metric_add(j->enqueued, j->shard, (const char *[]){qn}, 0);
            keel_metric_set(j->running, j->shard, (const char *[]){qn}, 0);
            for (size_t r = 0; r < NRESULTS; r++)
                keel_metric_add(j->completed, j->shard, (const char *[]){qn, RESULTS[r]}, 0);
            for (size_t s = 0; s < NDEPTH; s++)
                keel_metric_set(j->depth, j->shard, (const char *[]){qn, DEPTH_STATES[s]}, 0);
        }
        keel_metric_add(j->enqueued, j->shard, (const char *[]){"other"}, 0);
    }
    *out = j;
    return 0;
}

int keel_jobs_register(keel_jobs *j, const keel_job_handler *h)
{
    if (!j || !h || !h->kind || !*h->kind || strlen(h->kind) > KEEL_JOB_NAME_MAX ||
        !h->run == !h->start || j->started)
        return KEEL_EINVAL;
    if (find_handler(j, h->kind))
        return KEEL_EEXISTS;
    if (j->nhandlers >= MAX_HANDLERS)
        return KEEL_EINVAL;
    j->handlers[j->nhandlers++] = *h;
    return 0;
}

int keel_jobs_start(keel_jobs *j)
{
    if (j->started)
        return KEEL_EALREADY;
    json_t *kinds = json_array();
    for (size_t i = 0; i < j->nhandlers; i++)
        json_array_append_new(kinds, json_string(j->handlers[i].kind));
    keel_free(j->kinds_json);
    char *k = json_dumps(kinds, JSON_COMPACT);
    j->kinds_json = keel_strdup(k);
    free(k);
    json_decref(kinds);
    if (keel__jobs_sched_validate(j) < 0)
        return KEEL_EINVAL;
    keel_db_conn *c = loop_conn(j);
    if (!c)
        return KEEL_EDB_UNAVAILABLE;
    int rc = keel_jobs_install(c);
    if (rc < 0)
        return rc;
    if (uv_loop_init(&j->loop) != 0)
        return KEEL_ENOMEM;
    uv_async_init(&j->loop, &j->wake, on_wake);
    j->wake.data = j;
    uv_timer_init(&j->loop, &j->poll_timer);
    j->poll_timer.data = j;
    uv_timer_init(&j->loop, &j->maint_timer);
    j->maint_timer.data = j;
    uint64_t maint = j->o.rescue_after_ms / 8;
    if (maint > 1000)
        maint = 1000;
    if (maint < 50)
        maint = 50;
    uv_timer_start(&j->poll_timer, on_poll, 0, 0);
    uv_timer_start(&j->maint_timer, on_maint, maint, maint);
    j->last_heartbeat = j->last_rescue = keel_now_ms();
    j->last_depth = 0;
    for (size_t i = 0; i < j->nq; i++) {
        jq *q = &j->queues[i];
        q->threads = keel_calloc(q->concurrency, sizeof(pthread_t));
        for (unsigned t = 0; t < q->concurrency; t++) {
            thread_arg *ta = keel_malloc(sizeof(*ta));
            ta->j = j;
            ta->q = q;
            if (pthread_create(&q->threads[t], NULL, queue_thread, ta) != 0) {
                keel_free(ta);
                break;
            }
            q->nthreads++;
        }
    }
    j->started = 1;
    pthread_mutex_lock(&j->mu);
    j->loop_up = 1;
    pthread_mutex_unlock(&j->mu);
    uv_thread_create(&j->loop_thread, loop_main, j);
    if (j->pg) {
        atomic_store(&j->listener_stop, 0);
        /* PQsocket / PQconsumeInput come with libpq's optional set: without
         * them, polling alone finds the jobs */
        j->listener_up = pq.PQsocket && pq.PQconsumeInput &&
                         pthread_create(&j->listener, NULL, listener_main, j) == 0;
    }
    keel__jobs_local_add(j);
    keel_log(KEEL_LOG_INFO, "jobs runner started", "{s:s,s:s}", "runner", j->id, "queues",
             j->o.queues);
    return 0;
}

static unsigned inflight_total(keel_jobs *j)
{
    unsigned n = 0;
    for (size_t i = 0; i < j->nq; i++)
        n += j->queues[i].inflight;
    return n;
}

int keel_jobs_stop(keel_jobs *j, uint64_t grace_ms)
{
    if (!j || !j->started)
        return 0;
    keel__jobs_local_remove(j);
    if (j->listener_up) {
        atomic_store(&j->listener_stop, 1);
        pthread_join(j->listener, NULL);
        j->listener_up = 0;
    }
    pthread_mutex_lock(&j->mu);
    j->stopping = 1;
    if (j->loop_up)
        uv_async_send(&j->wake); /* give back what is not started */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)(grace_ms / 1000);
    until.tv_nsec += (long)(grace_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (inflight_total(j) > 0) {
        if (pthread_cond_timedwait(&j->idle_cond, &j->mu, &until) == ETIMEDOUT)
            break;
    }
    unsigned left = inflight_total(j);
    j->threads_exit = 1;
    pthread_cond_broadcast(&j->cond);
    pthread_mutex_unlock(&j->mu);
    if (left > 0) {
        /* Handlers still run: their rows stay `running` (no more
         * heartbeats once the process exits) and are rescued later. */
        keel_log(KEEL_LOG_WARN, "jobs: shutdown grace expired", "{s:i}", "running", (int)left);
        j->abandoned = 1;
        return KEEL_ETIMEDOUT;
    }
    /* the loop closes its handles and ends */
    pthread_mutex_lock(&j->mu);
    j->quit = 1;
    uv_async_send(&j->wake);
    j->loop_up = 0; /* nobody sends to the closing handle */
    pthread_mutex_unlock(&j->mu);
    uv_thread_join(&j->loop_thread);
    uv_loop_close(&j->loop);
    for (size_t i = 0; i < j->nq; i++) {
        for (unsigned t = 0; t < j->queues[i].nthreads; t++)
            pthread_join(j->queues[i].threads[t], NULL);
        j->queues[i].nthreads = 0;
    }
    j->started = 0;
    keel_log(KEEL_LOG_INFO, "jobs runner stopped", "{s:s}", "runner", j->id);
    return 0;
}

void keel_jobs_stop_fetching(keel_jobs *j)
{
    if (!j)
        return;
    pthread_mutex_lock(&j->mu);
    j->stopping = 1;
    if (j->loop_up)
        uv_async_send(&j->wake);
    pthread_mutex_unlock(&j->mu);
}

void keel_jobs_free(keel_jobs *j)
{
    if (!j)
        return;
    if (j->started && keel_jobs_stop(j, 0) < 0)
        return;
    if (j->abandoned)
        return; /* threads may still use it; the process is exiting */
    for (size_t i = 0; i < j->nq; i++)
        keel_free(j->queues[i].threads);
    keel_db_disconnect(j->dconn);
    keel__jobs_sched_free(&j->sched);
    pthread_mutex_destroy(&j->sched.mu);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cond);
    pthread_cond_destroy(&j->idle_cond);
    keel_config_close(&j->cfg);
    keel_free(j->kinds_json);
    keel_free(j->ok_ids);
    keel_free(j->url);
    keel_free(j);
}
