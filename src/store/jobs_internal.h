/* jobs_internal.h — what the job queue's files share (jobs_sql.c: schema,
 * enqueue, admin; jobs.c: the runner). Never installed. */
#ifndef KEEL_JOBS_INTERNAL_H
#define KEEL_JOBS_INTERNAL_H

#include "keel/jobs.h"

/* The states no longer worked on, and those still to be run. */
#define KEEL__JOBS_UNFINISHED "('available', 'scheduled', 'running', 'retryable')"
#define KEEL__JOBS_FETCHABLE "('available', 'scheduled', 'retryable')"

/* The columns a job is read with (keel_job_get / keel_jobs_list). */
#define KEEL__JOBS_COLS                                                                 \
    "id, queue, kind, args, priority, state, attempt, max_attempts, timeout_ms, "     \
    "unique_key, tags, errors, run_at, created_at, attempted_at, finished_at, "       \
    "heartbeat_at, locked_by"

/* 1 when c is a PostgreSQL connection. */
int keel__jobs_is_pg(const keel_db_conn *c);

/* Wall-clock milliseconds as stored in the table. */
int64_t keel__jobs_now(void);

/* Every runner of the process whose queues include `queue` is woken (the
 * SQLite path of an enqueue; cheap when there is none); `enqueued` also
 * counts one in jobs_enqueued_total. */
void keel__jobs_wake_local(const char *queue, int enqueued);
/* Runners register for local wake-ups while started. */
void keel__jobs_local_add(keel_jobs *j);
void keel__jobs_local_remove(keel_jobs *j);
/* 1 when j serves queue. */
int keel__jobs_serves(const keel_jobs *j, const char *queue);

/* A parsed "name=N,name=N" (JOBS_QUEUES) or "name=N/window" list
 * (JOBS_RATE_LIMITS, window_ms set). */
typedef struct keel__jobs_qspec {
    char name[65];
    unsigned n;
    uint64_t window_ms;
} keel__jobs_qspec;
enum { KEEL__JOBS_MAX_QUEUES = 32 };
/* 0 and *count, or KEEL_EINVAL with the reason in err. rate: the
 * "N/window" form. */
int keel__jobs_parse_queues(const char *s, int rate, keel__jobs_qspec *out, size_t *count,
                            char *err, size_t errlen);

/* Appends {"at": ms, "attempt": n, "error": msg} to a JSON array text
 * (keeps the last 10); returns a heap string. */
char *keel__jobs_errors_append(const char *errors, size_t len, int64_t at, unsigned attempt,
                               const char *msg);

/* ---------------------------------------------------------------- schedules (jobs_cron.c) */
#include <pthread.h>
#include "keel/cron.h"

typedef struct keel__sched {
    char name[64];
    char kind[KEEL_JOB_NAME_MAX + 1];
    char queue[KEEL_JOB_NAME_MAX + 1];
    char expr[KEEL_CRON_MAX_EXPR];
    char *args;            /* the JSON object text each tick's job gets (with the
                            * schedule's name and fire time added) */
    unsigned max_attempts;
    keel_cron cron;
    int64_t next_check;    /* Unix s when the row is looked at next; 0 = at once */
    int64_t last_fire;     /* the last fire time seen enqueued; -1 = none yet */
} keel__sched;

typedef struct keel__sched_set {
    keel__sched *v;
    size_t n, cap;
    pthread_mutex_t mu;    /* next_check / last_fire: the loop writes, admin reads */
} keel__sched_set;

/* The runner's set (jobs.c owns it). */
keel__sched_set *keel__jobs_sched_set(keel_jobs *j);
int keel__jobs_has_handler(const keel_jobs *j, const char *kind);
int keel__jobs_started(const keel_jobs *j);
/* At start: every schedule's kind has a handler and its queue is served;
 * KEEL_EINVAL (logged, naming the schedule) otherwise. */
int keel__jobs_sched_validate(keel_jobs *j);
/* On the runner's loop, about once a second: enqueues the ticks due. */
void keel__jobs_sched_tick(keel_jobs *j, keel_db_conn *c);
void keel__jobs_sched_free(keel__sched_set *s);

#endif
