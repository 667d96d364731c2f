/* jobs_service — a service on libkeel with a job queue and no migrations
 * of its own (the jobs table comes from the jobs module), for
 * tests/e2e/test_jobs.py:
 *
 *   jobs_service serve                 runs the "count" handler
 *   jobs_service enqueue N [SLEEP_MS]  enqueues N "count" jobs in one transaction
 *
 * "count" sleeps args.sleep_ms on its first attempt (so a test can kill
 * the process mid-job),
 * records its start in job_starts(job_id, attempt, runner), then inserts
 * job_runs(job_id UNIQUE, runner) — a second execution of one job would
 * violate the constraint and is recorded in job_dups instead, so the test
 * counts exactly-once directly.
 *
 * "tick" is for schedules (CRON_JOBS="every=@every 1s => tick"): it
 * inserts cron_runs(schedule, fire_time, runner) with (schedule,
 * fire_time) unique — a tick run twice lands in cron_dups. */
#include <jansson.h>
#include <keel/keel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const TABLES[] = {
    "CREATE TABLE IF NOT EXISTS job_runs (job_id BIGINT PRIMARY KEY, runner TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS job_dups (job_id BIGINT NOT NULL, runner TEXT NOT NULL)",
    ("CREATE TABLE IF NOT EXISTS job_starts (job_id BIGINT NOT NULL, attempt INTEGER NOT NULL, "
     "runner TEXT NOT NULL)"),
    ("CREATE TABLE IF NOT EXISTS cron_runs (schedule TEXT NOT NULL, fire_time BIGINT NOT NULL, "
     "runner TEXT NOT NULL, PRIMARY KEY (schedule, fire_time))"),
    ("CREATE TABLE IF NOT EXISTS cron_dups (schedule TEXT NOT NULL, fire_time BIGINT NOT NULL, "
     "runner TEXT NOT NULL)"),
};

static const char *url_of(keel_service *svc)
{
    const keel_db_options *o = keel_config_get(keel_service_config(svc), &keel_db_config);
    return o->database_url;
}

static keel_job_outcome count(keel_job *job, void *arg)
{
    const char *runner = arg;
    keel_db_conn *c = keel_job_db(job);
    if (!c)
        return keel_job_retry(job, "no database connection");
    keel_db_param s[] = {KEEL_DB_P_INT(keel_job_id(job)), KEEL_DB_P_INT(keel_job_attempt(job)),
                         KEEL_DB_P_TEXT(runner)};
    if (keel_db_exec(c, "INSERT INTO job_starts (job_id, attempt, runner) VALUES ($1, $2, $3)", s,
                     3, NULL) < 0)
        return keel_job_retry(job, "job_starts insert failed");
    json_int_t sleep_ms = json_integer_value(json_object_get(keel_job_args(job), "sleep_ms"));
    if (sleep_ms > 0 && keel_job_attempt(job) == 1)
        usleep((useconds_t)sleep_ms * 1000);
    keel_db_param p[] = {KEEL_DB_P_INT(keel_job_id(job)), KEEL_DB_P_TEXT(runner)};
    int rc = keel_db_exec(c, "INSERT INTO job_runs (job_id, runner) VALUES ($1, $2)", p, 2, NULL);
    if (rc == KEEL_EDB_CONSTRAINT) {
        keel_db_exec(c, "INSERT INTO job_dups (job_id, runner) VALUES ($1, $2)", p, 2, NULL);
        return KEEL_JOB_OK;
    }
    return rc < 0 ? keel_job_retry(job, keel_db_strerror(rc)) : KEEL_JOB_OK;
}

static keel_job_outcome tick(keel_job *job, void *arg)
{
    const char *runner = arg;
    keel_db_conn *c = keel_job_db(job);
    if (!c)
        return keel_job_retry(job, "no database connection");
    const json_t *a = keel_job_args(job);
    const char *sched = json_string_value(json_object_get(a, "schedule"));
    keel_db_param p[] = {KEEL_DB_P_TEXT(sched ? sched : "?"),
                         KEEL_DB_P_INT(json_integer_value(json_object_get(a, "fire_time"))),
                         KEEL_DB_P_TEXT(runner)};
    int rc = keel_db_exec(c,
                          "INSERT INTO cron_runs (schedule, fire_time, runner) VALUES ($1, $2, $3)",
                          p, 3, NULL);
    if (rc == KEEL_EDB_CONSTRAINT) {
        keel_db_exec(c, "INSERT INTO cron_dups (schedule, fire_time, runner) VALUES ($1, $2, $3)",
                     p, 3, NULL);
        return KEEL_JOB_OK;
    }
    return rc < 0 ? keel_job_retry(job, keel_db_strerror(rc)) : KEEL_JOB_OK;
}

static char g_runner[128];

static int make_tables(const char *url)
{
    keel_db_conn *c = NULL;
    char err[256];
    if (keel_db_connect(url, NULL, &c, err, sizeof(err)) < 0) {
        fprintf(stderr, "jobs_service: %s\n", err);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < sizeof(TABLES) / sizeof(TABLES[0]) && rc == 0; i++)
        rc = keel_db_exec(c, TABLES[i], NULL, 0, NULL);
    keel_db_disconnect(c);
    return rc;
}

static int setup(keel_service *svc, void *arg)
{
    (void)arg;
    if (make_tables(url_of(svc)) < 0)
        return -1;
    snprintf(g_runner, sizeof(g_runner), "%d", (int)getpid());
    keel_job_handler h = {.kind = "count", .run = count, .arg = g_runner};
    keel_job_handler t = {.kind = "tick", .run = tick, .arg = g_runner};
    if (keel_jobs_register(keel_service_jobs(svc), &h) < 0)
        return -1;
    return keel_jobs_register(keel_service_jobs(svc), &t);
}

typedef struct bulk {
    long n;
    long sleep_ms;
} bulk;

static int enqueue_all(keel_db_conn *c, void *arg)
{
    bulk *b = arg;
    char args[64];
    snprintf(args, sizeof(args), "{\"sleep_ms\":%ld}", b->sleep_ms);
    for (long i = 0; i < b->n; i++) {
        keel_job_spec s = {.kind = "count", .args = args};
        int rc = keel_job_enqueue(c, &s, NULL);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int command(keel_service *svc, const char *cmd, int argc, char **argv, void *arg)
{
    (void)arg;
    if (strcmp(cmd, "enqueue") != 0 || argc < 3)
        return -1;
    bulk b = {.n = atol(argv[2]), .sleep_ms = argc > 3 ? atol(argv[3]) : 0};
    if (make_tables(url_of(svc)) < 0)
        return 1;
    keel_db_conn *c = NULL;
    char err[256];
    if (keel_db_connect(url_of(svc), NULL, &c, err, sizeof(err)) < 0) {
        fprintf(stderr, "jobs_service: %s\n", err);
        return 1;
    }
    int rc = keel_jobs_install(c);
    if (rc == 0)
        rc = keel_db_tx(c, enqueue_all, &b);
    keel_db_disconnect(c);
    if (rc < 0) {
        fprintf(stderr, "jobs_service: enqueue: %s\n", keel_db_strerror(rc));
        return 1;
    }
    printf("enqueued %ld\n", b.n);
    return 0;
}

int main(int argc, char **argv)
{
    keel_app app = {.name = "jobs_service", .version = "1.0", .setup = setup, .command = command,
                    .usage = "  enqueue N [SLEEP_MS]   N count jobs in one transaction\n",
                    .use_database = 1, .use_jobs = 1};
    return keel_main(argc, argv, &app);
}
