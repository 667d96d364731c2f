/* keel/jobs.h — a durable job queue in the service's own database.
 *
 * A job is a row of the table keel_jobs (SQLite or PostgreSQL: the same
 * database as DATABASE_URL). keel_job_enqueue() inserts it on a
 * connection the caller holds — inside the caller's keel_db_tx, so the job
 * exists if and only if the data that caused it was committed, or outside
 * one. A runner (keel_jobs_new / keel_jobs_start) fetches jobs of its
 * queues (JOBS_QUEUES="default=4,email=2": queue=concurrency) and runs the
 * handler registered in C for the job's kind:
 *   - `run`: on a runner thread of the job's queue (one per unit of
 *     concurrency, each with its own database connection: keel_job_db);
 *     may block; returns the outcome;
 *   - `start` (async): on the runner's own libuv loop (keel_job_loop); it
 *     returns at once and calls keel_job_done() exactly once, later, from
 *     any thread.
 * Outcomes: KEEL_JOB_OK (completed), KEEL_JOB_RETRY (keel_job_retry: the
 * error is recorded and the job runs again after an exponential backoff
 * with full jitter, JOBS_BACKOFF_BASE .. JOBS_BACKOFF_MAX, or is `dead`
 * once max_attempts are spent), KEEL_JOB_SNOOZE (keel_job_snooze: again
 * after a delay, no attempt spent), KEEL_JOB_CANCEL, KEEL_JOB_FAIL (dead at
 * once). Dead jobs are kept for inspection (JOBS_DEAD_RETENTION).
 *
 * States: available (due now), scheduled (run_at in the future; snoozed),
 * running, retryable (waiting for its backoff), completed, cancelled, dead.
 * The first four are "unfinished".
 *
 * Several instances share one PostgreSQL queue: fetching is one
 * `UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)`, so no job
 * goes to two workers; an enqueue NOTIFYs the runners (LISTEN keel_jobs,
 * with JOBS_POLL_INTERVAL polling as the fallback). On SQLite the single
 * writer fetches under BEGIN IMMEDIATE and an enqueue wakes the runners of
 * the process directly.
 *
 * A running job's row carries the runner's id (locked_by) and a heartbeat
 * renewed every JOBS_RESCUE_AFTER / 4; a job whose heartbeat is older than
 * JOBS_RESCUE_AFTER (its worker died) is rescued: retryable again (or dead
 * when its attempts are spent). Every write of a job's result is a
 * compare-and-set on (id, state running, attempt, locked_by), so a rescue
 * never overwrites a finished job and a late result of a rescued attempt
 * is dropped (logged), never applied over the next attempt.
 *
 * Schema: the jobs module ships its migrations (keel_jobs_migrations: the
 * files migrations/sqlite|postgres/0003_jobs.sql and 0012_job_schedules.sql
 * compiled into libkeel);
 * keel_jobs_install() applies it idempotently, and keel_jobs_start() calls
 * it, so a service on libkeel needs no migration of its own. docs/jobs.md.
 */
#ifndef KEEL_JOBS_H
#define KEEL_JOBS_H

#include <stdint.h>

#include "config.h"
#include "db.h"
#include "metrics.h"
#include "migrate.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_jobs keel_jobs; /* a runner: fetches and runs jobs */
typedef struct keel_job keel_job;   /* one job being run (handlers only) */

/* ---------------------------------------------------------------- options */

typedef struct keel_jobs_options {
    int enabled;                  /* JOBS_ENABLED */
    char *queues;                 /* JOBS_QUEUES: "default=4,email=2" */
    uint64_t poll_interval_ms;    /* JOBS_POLL_INTERVAL */
    uint64_t rescue_after_ms;     /* JOBS_RESCUE_AFTER */
    uint64_t retention_ms;        /* JOBS_RETENTION (completed, cancelled) */
    uint64_t dead_retention_ms;   /* JOBS_DEAD_RETENTION */
    uint64_t timeout_ms;          /* JOBS_TIMEOUT: per job, 0 = none */
    uint64_t backoff_base_ms;     /* JOBS_BACKOFF_BASE */
    uint64_t backoff_max_ms;      /* JOBS_BACKOFF_MAX */
    char *rate_limits;            /* JOBS_RATE_LIMITS: "email=10/1s,..." */
    uint64_t shutdown_grace_ms;   /* JOBS_SHUTDOWN_GRACE */
} keel_jobs_options;

extern const keel_config_module keel_jobs_config;

/* The jobs migrations for both drivers ("sqlite" and "postgres"; versions
 * 3 "jobs" and 12 "job_schedules"), compiled from migrations/<driver>/. */
extern const keel_migration keel_jobs_migrations[];
extern const size_t keel_jobs_migrations_count;

/* Creates the jobs tables and indexes on c when they are missing
 * (CREATE ... IF NOT EXISTS: safe when the migration ran already). 0 or a
 * KEEL_EDB_* error. */
int keel_jobs_install(keel_db_conn *c);

/* ---------------------------------------------------------------- enqueue */

enum {
    KEEL_JOB_ARGS_MAX = 256 * 1024, /* bytes of args JSON */
    KEEL_JOB_NAME_MAX = 128,        /* bytes of queue, kind, unique key, one tag */
    KEEL_JOB_TAGS_MAX = 16,
    KEEL_JOB_MAX_ATTEMPTS_DEFAULT = 20, /* a spec's max_attempts 0 */
};

typedef struct keel_job_spec {
    const char *kind;        /* required: the handler's kind */
    const char *queue;       /* NULL = "default" */
    const char *args;        /* a JSON object as text; NULL = "{}" */
    int priority;            /* lower runs first; 0 default; -1000..1000 */
    int64_t run_at_ms;       /* wall-clock ms; 0 = now */
    uint64_t delay_ms;       /* added to run_at (or now) */
    unsigned max_attempts;   /* 0 = KEEL_JOB_MAX_ATTEMPTS_DEFAULT (20); at most 1000 */
    uint64_t timeout_ms;     /* 0 = the handler's, else JOBS_TIMEOUT */
    const char *unique_key;  /* NULL: not unique */
    /* 0: unique among unfinished jobs of the queue (a new one may be
     * enqueued once the last finished); 1: unique for as long as the row
     * is kept (e.g. a cron tick "schedule@fire-time": exactly once). */
    int unique_forever;
    const char *const *tags; /* ntags names, each 1..KEEL_JOB_NAME_MAX bytes */
    size_t ntags;
} keel_job_spec;

typedef struct keel_job_enqueued {
    int64_t id;
    int duplicate; /* 1: a job with the unique key existed; id is that job */
    char state[16];
} keel_job_enqueued;

/* Inserts a job on c (the caller's thread owns c). Inside a keel_db_tx on
 * c it is part of that transaction (rolled back with it; on PostgreSQL the
 * runners are notified when it commits). With a unique key, an existing
 * job holding it is returned instead (out->duplicate = 1), race-free:
 * INSERT ... ON CONFLICT DO NOTHING, then the holder is read. 0;
 * KEEL_EINVAL (missing kind, names too long or with control bytes, args
 * not a JSON object, priority out of range); or a KEEL_EDB_* error. out
 * may be NULL. */
int keel_job_enqueue(keel_db_conn *c, const keel_job_spec *spec, keel_job_enqueued *out);

/* ---------------------------------------------------------------- admin (any connection) */

/* Makes a job available now again: from dead, cancelled, completed,
 * retryable or scheduled (a spent max_attempts is raised by one). 0;
 * KEEL_EDB_NOROW (no such job); KEEL_EALREADY (running); KEEL_EDB_CONSTRAINT
 * (an unfinished job holds its unique key). */
int keel_job_retry_now(keel_db_conn *c, int64_t id);
/* Cancels an unfinished job; a running one is marked cancelled and its
 * handler's result is dropped. 0; KEEL_EDB_NOROW; KEEL_EALREADY (finished). */
int keel_job_cancel(keel_db_conn *c, int64_t id);
/* Deletes a job that is not running. 0; KEEL_EDB_NOROW; KEEL_EALREADY
 * (running: cancel it first). */
int keel_job_delete(keel_db_conn *c, int64_t id);
/* Pauses (1) or resumes (0) a queue for every runner on the database:
 * a paused queue's jobs are not fetched (running ones finish). */
int keel_jobs_queue_pause(keel_db_conn *c, const char *queue, int paused);
/* A job as a JSON object (new reference) in *out, or KEEL_EDB_NOROW. */
struct json_t;
int keel_job_get(keel_db_conn *c, int64_t id, struct json_t **out);
/* A page of jobs, newest first: filters may be NULL; before_id 0 = from
 * the newest; limit 1..500. *out = {"jobs": [...], "next_before": id|null}. */
typedef struct keel_job_filter {
    const char *queue, *state, *kind;
    int64_t before_id;
    unsigned limit;
} keel_job_filter;
int keel_jobs_list(keel_db_conn *c, const keel_job_filter *f, struct json_t **out);
/* {"queues": [{"queue", "paused", "<state>": count...}]} for every queue
 * that has jobs or a pause record. */
int keel_jobs_queues(keel_db_conn *c, struct json_t **out);
/* 1 when s is a job state name. */
int keel_job_state_valid(const char *s);

/* ---------------------------------------------------------------- handlers */

typedef enum keel_job_outcome {
    KEEL_JOB_OK = 0,
    KEEL_JOB_RETRY,  /* keel_job_retry(): backoff, or dead after max_attempts */
    KEEL_JOB_SNOOZE, /* keel_job_snooze(): later, no attempt spent */
    KEEL_JOB_CANCEL, /* cancelled, not retried */
    KEEL_JOB_FAIL,   /* dead at once (keel_job_fail() records why) */
} keel_job_outcome;

typedef struct keel_job_handler {
    const char *kind;
    /* Synchronous: on a runner thread; may block. */
    keel_job_outcome (*run)(keel_job *job, void *arg);
    /* Asynchronous (set instead of run): on the runner's loop; must call
     * keel_job_done exactly once, from any thread, even after a timeout. */
    void (*start)(keel_job *job, void *arg);
    void *arg;
    uint64_t timeout_ms; /* for jobs of this kind without their own; 0 = JOBS_TIMEOUT */
} keel_job_handler;

/* Accessors, valid while the handler runs (until keel_job_done for async). */
int64_t keel_job_id(const keel_job *job);
const char *keel_job_kind(const keel_job *job);
const char *keel_job_queue(const keel_job *job);
/* The args object (borrowed). */
struct json_t *keel_job_args(const keel_job *job);
unsigned keel_job_attempt(const keel_job *job);     /* 1 for the first run */
unsigned keel_job_max_attempts(const keel_job *job);
/* 1 once the job's timeout has passed: a synchronous handler that loops
 * should check it and return (its result is dropped after a timeout). */
int keel_job_expired(const keel_job *job);
/* The runner thread's own database connection (sync handlers only; NULL
 * when it cannot connect): a handler may write with it, in its own
 * transaction. */
keel_db_conn *keel_job_db(keel_job *job);
/* The runner's loop (async handlers: timers, async clients on it). */
struct uv_loop_s *keel_job_loop(keel_job *job);

/* Outcome helpers: record the detail and return the outcome. */
keel_job_outcome keel_job_retry(keel_job *job, const char *error);
keel_job_outcome keel_job_fail(keel_job *job, const char *error);
keel_job_outcome keel_job_snooze(keel_job *job, uint64_t delay_ms);
/* Ends an async job (any thread, exactly once). */
void keel_job_done(keel_job *job, keel_job_outcome outcome);

/* ---------------------------------------------------------------- runner */

/* A runner for the database at url with cfg's keel_jobs_options (queues,
 * intervals, backoff; cfg's database timeouts). m (may be NULL) gets the
 * jobs_* metrics. 0, or KEEL_ECONFIG (a bad JOBS_QUEUES / JOBS_RATE_LIMITS,
 * logged). Nothing runs before keel_jobs_start. */
int keel_jobs_new(keel_jobs **out, const char *url, const keel_config *cfg, keel_metrics *m);
/* Registers a handler (before keel_jobs_start): 0, KEEL_EINVAL (no kind,
 * neither or both of run/start), KEEL_EEXISTS (kind already taken). */
int keel_jobs_register(keel_jobs *j, const keel_job_handler *h);
/* Installs the schema, then starts the loop and the queue threads. 0, or
 * the error of keel_jobs_install / connecting (logged). */
int keel_jobs_start(keel_jobs *j);
/* Graceful stop: fetches nothing more, gives jobs fetched but not started
 * back, waits up to grace_ms for the running ones. 0, or KEEL_ETIMEDOUT
 * when some still run: their rows stay `running` and are rescued after
 * JOBS_RESCUE_AFTER (by another instance or the next start); the runner
 * is then left allocated (keel_jobs_free does not free it). */
int keel_jobs_stop(keel_jobs *j, uint64_t grace_ms);
void keel_jobs_free(keel_jobs *j);
/* Stops fetching at once (thread-safe, idempotent, does not wait): the
 * first step of a drain; keel_jobs_stop then waits. */
void keel_jobs_stop_fetching(keel_jobs *j);
/* 1 when a handler of `kind` is registered on j. */
int keel_jobs_has_kind(const keel_jobs *j, const char *kind);
/* This runner's id, written to locked_by ("host:pid:random"). */
const char *keel_jobs_id(const keel_jobs *j);
/* Wakes the runner as an enqueue would (fetches now). */
void keel_jobs_wake(keel_jobs *j);

/* ---------------------------------------------------------------- schedules
 *
 * Cron expressions and fixed intervals (keel/cron.h) whose ticks the
 * runner enqueues as jobs (docs/scheduler.md). Every runner with the
 * schedule checks it about once a second; the tick due now is enqueued in
 * one transaction with a compare-and-set on the schedule's row in
 * keel_job_schedules (last fire time < this one) and the unique key
 * "<name>@<fire time>" (unique_forever), so N instances enqueue and run
 * each tick exactly once. Missed ticks after downtime: one, the latest
 * (keel_cron_due); a schedule seen for the first time starts from now. */
typedef struct keel_job_schedule {
    const char *name;  /* 1-63 of A-Z a-z 0-9 _ . - ; unique per runner */
    const char *expr;  /* a cron expression, a macro or "@every 5m" */
    const char *kind;  /* the job kind of each tick: a handler must exist at start */
    const char *queue; /* NULL = "default" */
    const char *args;  /* a JSON object as text, NULL = {}; each tick's job gets
                        * it plus "schedule" (the name) and "fire_time" (Unix s) */
    unsigned max_attempts; /* 0 = the default */
} keel_job_schedule;

/* Adds a schedule (before keel_jobs_start; copied). 0, KEEL_EINVAL with
 * the reason in err (a bad name, expression, kind, queue or args),
 * KEEL_EEXISTS (the name is taken). keel_jobs_start refuses to start when
 * a schedule's kind has no handler or its queue is not served. */
int keel_jobs_schedule(keel_jobs *j, const keel_job_schedule *s, char *err, size_t errlen);
/* Adds every entry of a CRON_JOBS value (keel/cron.h) on the default
 * queue; 0 or KEEL_EINVAL / KEEL_EEXISTS with the entry named in err. */
int keel_jobs_schedule_spec(keel_jobs *j, const char *cron_jobs, char *err, size_t errlen);
/* The runner's schedules as a new JSON array of {name, expr, kind, queue,
 * next_fire_at, last_fire_at (the last tick this runner saw enqueued, or
 * null)}; times in Unix seconds. */
struct json_t *keel_jobs_schedules_json(keel_jobs *j);

/* Backoff of attempt n (1-based) before full jitter: min(max, base * 2^(n-1)). */
uint64_t keel_jobs_backoff_cap(uint64_t base_ms, uint64_t max_ms, unsigned attempt);

#ifdef __cplusplus
}
#endif
#endif
