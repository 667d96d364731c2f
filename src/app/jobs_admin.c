/* jobs_admin.c — the job queue's admin API (admin:access, like
 * /api/v1/admin/users): list (filters, keyset pages), one job, retry,
 * cancel, delete, and the queues with pause/resume. Every operation is one
 * keel/jobs.h call on a pool connection; a job that does not exist is 404,
 * one whose state refuses the operation 409 (retry/delete of a running
 * job, cancel of a finished one). docs/jobs.md. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"

static keel_db *DB;
static keel_jobs *JOBS; /* NULL: no runner (JOBS_ENABLED=false keeps its schedules) */

typedef enum op {
    OP_LIST, OP_GET, OP_RETRY, OP_CANCEL, OP_DELETE, OP_QUEUES, OP_PAUSE, OP_RESUME, OP_SCHEDULES,
    OP_ENQUEUE
} op;

typedef struct admin_job {
    op op;
    int64_t id;
    char queue[KEEL_JOB_NAME_MAX + 1], state[16], kind[KEEL_JOB_NAME_MAX + 1];
    int has_queue, has_state, has_kind;
    keel_job_filter f;
    json_t *out;
    json_t *batch; /* OP_ENQUEUE: the jobs to enqueue (checked), borrowed from the body */
    json_t *one;   /* the batch made for a one-job body (owned) */
} admin_job;

static void admin_cleanup(void *job)
{
    admin_job *j = job;
    json_decref(j->one);
    json_decref(j->out);
}

/* ---------------------------------------------------------------- enqueue
 *
 * POST /api/v1/admin/jobs: one job, or {"jobs": [...]} (up to
 * JOBS_ENQUEUE_MAX), in one transaction — all or none. Only kinds a
 * handler is registered for on this service (a job nothing can run would
 * wait forever). The reference service registers "system.noop" (it does
 * nothing: for smoke tests and capacity runs). */
#define ENQUEUE_MAX 1000

static int db_enqueue(keel_db_conn *c, admin_job *j)
{
    json_decref(j->out); /* a retry: the last try's answer */
    j->out = NULL;
    json_t *ids = json_array();
    size_t i, dups = 0;
    json_t *it;
    json_array_foreach(j->batch, i, it) {
        const json_t *args = json_object_get(it, "args");
        char *text = args ? json_dumps(args, JSON_COMPACT) : NULL;
        json_t *tags = json_object_get(it, "tags");
        const char *tagv[KEEL_JOB_TAGS_MAX];
        size_t nt = 0, k;
        json_t *tv;
        json_array_foreach(tags, k, tv)
            if (nt < KEEL_JOB_TAGS_MAX)
                tagv[nt++] = json_string_value(tv);
        json_t *delay = json_object_get(it, "delay_ms");
        keel_job_spec spec = {
            .kind = json_string_value(json_object_get(it, "kind")),
            .queue = json_string_value(json_object_get(it, "queue")),
            .args = text,
            .priority = (int)json_integer_value(json_object_get(it, "priority")),
            .delay_ms = delay ? (uint64_t)json_integer_value(delay) : 0,
            .max_attempts = (unsigned)json_integer_value(json_object_get(it, "max_attempts")),
            .unique_key = json_string_value(json_object_get(it, "unique_key")),
            .tags = nt ? tagv : NULL,
            .ntags = nt};
        keel_job_enqueued out;
        int rc = keel_job_enqueue(c, &spec, &out);
        free(text);
        if (rc < 0) {
            json_decref(ids);
            return rc;
        }
        dups += out.duplicate != 0;
        json_array_append_new(ids, json_integer(out.id));
    }
    j->out = json_pack("{s:o,s:I}", "ids", ids, "duplicates", (json_int_t)dups);
    return 0;
}

static keel_job_outcome run_noop(keel_job *job, void *arg)
{
    (void)job;
    (void)arg;
    return KEEL_JOB_OK;
}

/* The runner's schedules, each with the last tick any instance enqueued
 * (the keel_job_schedules row) rather than this process's view. */
static int db_schedules(keel_db_conn *c, admin_job *j)
{
    json_t *items = keel_jobs_schedules_json(JOBS);
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
        keel_db_param p[] = {KEEL_DB_P_TEXT(json_string_value(json_object_get(it, "name")))};
        keel_db_rows *rows = NULL;
        int rc = keel_db_query(c, "SELECT last_fire_at FROM keel_job_schedules WHERE name = $1",
                               p, 1, &rows);
        if (rc == 0 && (rc = keel_db_rows_next(rows)) == 1)
            json_object_set_new(it, "last_fire_at", json_integer(keel_db_get_int(rows, 0)));
        keel_db_rows_free(rows);
        if (rc < 0) {
            json_decref(items);
            return rc;
        }
    }
    j->out = json_pack("{s:o}", "items", items);
    return 0;
}

static int db_admin(keel_db_conn *c, void *arg)
{
    admin_job *j = arg;
    int rc;
    switch (j->op) {
    case OP_LIST:
        return keel_jobs_list(c, &j->f, &j->out);
    case OP_GET:
        return keel_job_get(c, j->id, &j->out);
    case OP_QUEUES:
        return keel_jobs_queues(c, &j->out);
    case OP_SCHEDULES:
        return db_schedules(c, j);
    case OP_ENQUEUE:
        return db_enqueue(c, j);
    case OP_PAUSE:
    case OP_RESUME:
        rc = keel_jobs_queue_pause(c, j->queue, j->op == OP_PAUSE);
        if (rc == 0)
            j->out = json_pack("{s:s,s:b}", "queue", j->queue, "paused", j->op == OP_PAUSE);
        return rc;
    case OP_RETRY:
        rc = keel_job_retry_now(c, j->id);
        break;
    case OP_CANCEL:
        rc = keel_job_cancel(c, j->id);
        break;
    case OP_DELETE:
    default:
        return keel_job_delete(c, j->id);
    }
    return rc < 0 ? rc : keel_job_get(c, j->id, &j->out);
}

static void admin_done(keel_req *r, void *arg, int status)
{
    admin_job *j = arg;
    if (status == KEEL_EALREADY) {
        keel_respond_problem(r, 409,
                             j->op == OP_CANCEL ? "the job has finished already"
                                                : "the job is running (cancel it first)");
    } else if (status == KEEL_EDB_CONSTRAINT) {
        keel_respond_problem(r, 409, "an unfinished job holds the same unique key");
    } else if (status == KEEL_EDB_NOROW) {
        keel_respond_problem(r, 404, "no such job");
    } else if (status < 0) {
        keel_db_respond_error(r, status);
    } else if (j->out) {
        keel_res_set_header(r, "Cache-Control", "no-store");
        keel_respond_json(r, 200, json_incref(j->out));
    } else {
        keel_respond(r, 204, NULL, NULL, 0);
    }
}

static void enqueued(keel_req *r, void *arg, int status)
{
    admin_job *j = arg;
    if (status == KEEL_EINVAL) {
        keel_respond_problem(r, 422, "a job could not be enqueued: names must be 1-128 bytes "
                                     "without control bytes, args a JSON object");
        return;
    }
    if (status == 0 && j->out) {
        keel_respond_json(r, 201, json_incref(j->out));
        return;
    }
    admin_done(r, arg, status);
}

/* A query parameter copied into buf: 1 when present, 0 when absent. */
static int query_copy(keel_req *r, const char *name, char *buf, size_t cap)
{
    keel_str v = keel_req_query_param(r, name);
    if (!v.ptr)
        return 0;
    size_t n = v.len < cap - 1 ? v.len : cap - 1;
    memcpy(buf, v.ptr, n);
    buf[n] = 0;
    return 1;
}

static keel_flow run_op(keel_req *r, op o)
{
    admin_job *j = KEEL_REQ_JOB(r, admin_job, admin_cleanup);
    j->op = o;
    if (o == OP_GET || o == OP_RETRY || o == OP_CANCEL || o == OP_DELETE) {
        keel_str id = keel_req_param(r, "id");
        char buf[24];
        if (!id.ptr || id.len == 0 || id.len >= sizeof(buf)) {
            keel_respond_problem(r, 404, "no such job");
            return KEEL_DONE;
        }
        memcpy(buf, id.ptr, id.len);
        buf[id.len] = 0;
        char *end;
        long long v = strtoll(buf, &end, 10);
        if (*end || v <= 0 || buf[0] == '+' || buf[0] == '-') {
            keel_respond_problem(r, 404, "no such job");
            return KEEL_DONE;
        }
        j->id = v;
    } else if (o == OP_PAUSE || o == OP_RESUME) {
        keel_str q = keel_req_param(r, "queue");
        if (!q.ptr || q.len == 0 || q.len > KEEL_JOB_NAME_MAX) {
            app_invalid(r, "/path/queue", "a queue name of 1..128 bytes");
            return KEEL_DONE;
        }
        memcpy(j->queue, q.ptr, q.len);
        j->queue[q.len] = 0;
        for (size_t i = 0; i < q.len; i++) {
            if ((unsigned char)j->queue[i] < 0x20) {
                app_invalid(r, "/path/queue", "no control characters");
                return KEEL_DONE;
            }
        }
    } else if (o == OP_LIST) {
        if (query_copy(r, "queue", j->queue, sizeof(j->queue)))
            j->f.queue = j->queue;
        if (query_copy(r, "state", j->state, sizeof(j->state)))
            j->f.state = j->state;
        if (query_copy(r, "kind", j->kind, sizeof(j->kind)))
            j->f.kind = j->kind;
        char num[24];
        j->f.limit = 50;
        if (query_copy(r, "limit", num, sizeof(num)))
            j->f.limit = (unsigned)strtoul(num, NULL, 10); /* 1..500 by the schema */
        if (query_copy(r, "before", num, sizeof(num)))
            j->f.before_id = strtoll(num, NULL, 10);
    }
    return keel_db_job_run(r, DB, db_admin, admin_done, j);
}

static keel_flow h_list(keel_req *r) { return run_op(r, OP_LIST); }
static keel_flow h_get(keel_req *r) { return run_op(r, OP_GET); }
static keel_flow h_retry(keel_req *r) { return run_op(r, OP_RETRY); }
static keel_flow h_cancel(keel_req *r) { return run_op(r, OP_CANCEL); }
static keel_flow h_delete(keel_req *r) { return run_op(r, OP_DELETE); }
static keel_flow h_queues(keel_req *r) { return run_op(r, OP_QUEUES); }
static keel_flow h_schedules(keel_req *r) { return run_op(r, OP_SCHEDULES); }

static keel_flow h_enqueue(keel_req *r)
{
    json_t *body = app_json_body(r); /* borrowed: the request's, schema-checked */
    if (!body)
        return KEEL_DONE;
    admin_job *j = KEEL_REQ_JOB(r, admin_job, admin_cleanup);
    json_t *batch = json_object_get(body, "jobs");
    if (batch && json_object_size(body) > 1) {
        app_invalid(r, "/jobs", "either one job or {\"jobs\": [...]}, not both");
        return KEEL_DONE;
    }
    if (!batch) {
        if (!json_object_get(body, "kind")) {
            app_invalid(r, "/kind", "a job needs a kind (or give {\"jobs\": [...]})");
            return KEEL_DONE;
        }
        batch = j->one = json_pack("[O]", body); /* released with the job (admin_cleanup) */
    }
    size_t i;
    json_t *it;
    json_array_foreach(batch, i, it) {
        const char *kind = json_string_value(json_object_get(it, "kind"));
        if (!keel_jobs_has_kind(JOBS, kind)) {
            char ptr[48];
            snprintf(ptr, sizeof(ptr), json_object_get(body, "jobs") ? "/jobs/%zu/kind" : "/kind",
                     i);
            app_invalid(r, ptr, "no handler is registered for this kind");
            return KEEL_DONE;
        }
    }
    j->op = OP_ENQUEUE;
    j->batch = batch;
    return keel_db_job_run_tx(r, DB, db_admin, enqueued, j);
}
static keel_flow h_pause(keel_req *r) { return run_op(r, OP_PAUSE); }
static keel_flow h_resume(keel_req *r) { return run_op(r, OP_RESUME); }

#define S_JOBS_QUERY                                                                              \
    "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"                       \
    "\"queue\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":128},"                          \
    "\"kind\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":128},"                           \
    "\"state\":{\"type\":\"string\",\"enum\":[\"available\",\"scheduled\",\"running\","           \
    "\"retryable\",\"completed\",\"cancelled\",\"dead\"]},"                                       \
    "\"limit\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":500},"                             \
    "\"before\":{\"type\":\"integer\",\"minimum\":1}}}"

#define S_JOB_PROPS                                                                               \
    "\"kind\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":128},"                             \
    "\"queue\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":128},"                            \
    "\"args\":{\"type\":\"object\"},"                                                                \
    "\"priority\":{\"type\":\"integer\",\"minimum\":-1000,\"maximum\":1000},"                        \
    "\"delay_ms\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":3153600000000},"                   \
    "\"max_attempts\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000},"                        \
    "\"unique_key\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":128},"                       \
    "\"tags\":{\"type\":\"array\",\"maxItems\":16,\"items\":{\"type\":\"string\",\"minLength\":1,"    \
    "\"maxLength\":128}}"
/* one job, or {"jobs": [job...]}: the handler refuses a mix */
#define S_ENQUEUE                                                                                 \
    "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{" S_JOB_PROPS ","       \
    "\"jobs\":{\"type\":\"array\",\"minItems\":1,\"maxItems\":1000,\"items\":{\"type\":\"object\","  \
    "\"additionalProperties\":false,\"required\":[\"kind\"],\"properties\":{" S_JOB_PROPS "}}}}}"

#define ADMIN .auth = "user", .permission = "admin:access", .flags = KEEL_ROUTE_SECRET
static const keel_route job_routes[] = {
    {.name = "admin.jobs.enqueue", .method = "POST", .path = "/api/v1/admin/jobs",
     .handler = h_enqueue,
     .summary = "Enqueue a job of a registered kind, or {jobs: [...]} (up to 1000) in one "
                "transaction",
     .request_schema = S_ENQUEUE, ADMIN},
    {.name = "admin.jobs.list", .method = "GET", .path = "/api/v1/admin/jobs", .handler = h_list,
     .summary = "Jobs, newest first (filters queue, state, kind; limit; before=id pages)",
     .query_schema = S_JOBS_QUERY, ADMIN},
    {.name = "admin.jobs.get", .method = "GET", .path = "/api/v1/admin/jobs/:id",
     .handler = h_get, .summary = "One job with its errors", ADMIN},
    {.name = "admin.jobs.retry", .method = "POST", .path = "/api/v1/admin/jobs/:id/retry",
     .handler = h_retry, .summary = "Run a job again now (dead, cancelled, completed, waiting)",
     ADMIN},
    {.name = "admin.jobs.cancel", .method = "POST", .path = "/api/v1/admin/jobs/:id/cancel",
     .handler = h_cancel, .summary = "Cancel an unfinished job", ADMIN},
    {.name = "admin.jobs.delete", .method = "DELETE", .path = "/api/v1/admin/jobs/:id",
     .handler = h_delete, .summary = "Delete a job that is not running", ADMIN},
    {.name = "admin.jobs.queues", .method = "GET", .path = "/api/v1/admin/job-queues",
     .handler = h_queues, .summary = "Queues: jobs by state, paused or not", ADMIN},
    {.name = "admin.jobs.schedules", .method = "GET", .path = "/api/v1/admin/job-schedules",
     .handler = h_schedules,
     .summary = "Schedules (CRON_JOBS and the service's own): next and last fire times", ADMIN},
    {.name = "admin.jobs.pause", .method = "POST", .path = "/api/v1/admin/job-queues/:queue/pause",
     .handler = h_pause, .summary = "Pause a queue on every instance", ADMIN},
    {.name = "admin.jobs.resume", .method = "POST",
     .path = "/api/v1/admin/job-queues/:queue/resume", .handler = h_resume,
     .summary = "Resume a paused queue", ADMIN},
};
#undef ADMIN

int app_jobs_setup(keel_service *svc)
{
    DB = keel_service_db(svc);
    JOBS = keel_service_jobs(svc);
    keel_job_handler noop = {.kind = "system.noop", .run = run_noop};
    if (JOBS && keel_jobs_register(JOBS, &noop) < 0)
        return -1;
    return keel_service_add_routes(svc, job_routes, sizeof(job_routes) / sizeof(job_routes[0]));
}
