/* jobs_sql.c — the job queue's table: configuration, schema install,
 * enqueue (transactional, unique), and the admin operations. The runner
 * (fetch, results, rescue) is jobs.c.
 *
 * Times are wall-clock Unix milliseconds written by keel (not the
 * database's clock), the same SQL on both drivers. Instances sharing a
 * PostgreSQL therefore need clocks in step (NTP): a skew shifts run_at and
 * the rescue cut-off by that much.
 */
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/log.h"
#include "store/db_internal.h"
#include "store/jobs_internal.h"
#include "store/migrate_internal.h"

/* ---------------------------------------------------------------- config */

int keel__jobs_parse_queues(const char *s, int rate, keel__jobs_qspec *out, size_t *count,
                            char *err, size_t errlen)
{
    *count = 0;
    const char *p = s ? s : "";
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        const char *eq = strchr(p, '=');
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        if (!eq || eq > end || eq == p || eq - p > 64) {
            snprintf(err, errlen, "expected name=%s, got \"%.*s\"", rate ? "N/window" : "N",
                     (int)(end - p), p);
            return KEEL_EINVAL;
        }
        if (*count >= KEEL__JOBS_MAX_QUEUES) {
            snprintf(err, errlen, "at most %d queues", KEEL__JOBS_MAX_QUEUES);
            return KEEL_EINVAL;
        }
        keel__jobs_qspec *q = &out[*count];
        memset(q, 0, sizeof(*q));
        for (const char *c = p; c < eq; c++) {
            if (!isalnum((unsigned char)*c) && *c != '_' && *c != '-' && *c != '.') {
                snprintf(err, errlen, "queue name \"%.*s\": letters, digits, _ - . only",
                         (int)(eq - p), p);
                return KEEL_EINVAL;
            }
        }
        memcpy(q->name, p, (size_t)(eq - p));
        char num[64];
        size_t nl = (size_t)(end - eq - 1);
        if (nl == 0 || nl >= sizeof(num)) {
            snprintf(err, errlen, "%s: missing value", q->name);
            return KEEL_EINVAL;
        }
        memcpy(num, eq + 1, nl);
        num[nl] = 0;
        char *slash = strchr(num, '/');
        if (rate != !!slash) {
            snprintf(err, errlen, "%s: expected %s", q->name, rate ? "N/window (10/1s)" : "N");
            return KEEL_EINVAL;
        }
        if (slash) {
            *slash = 0;
            if (keel_parse_duration_ms(slash + 1, &q->window_ms) < 0 || q->window_ms == 0) {
                snprintf(err, errlen, "%s: bad window \"%s\"", q->name, slash + 1);
                return KEEL_EINVAL;
            }
        }
        char *e = NULL;
        unsigned long v = strtoul(num, &e, 10);
        if (!*num || *e || v < 1 || v > (rate ? 1000000ul : 256ul)) {
            snprintf(err, errlen, "%s: \"%s\" is not a number in 1..%s", q->name, num,
                     rate ? "1000000" : "256");
            return KEEL_EINVAL;
        }
        q->n = (unsigned)v;
        for (size_t i = 0; i < *count; i++) {
            if (!strcmp(out[i].name, q->name)) {
                snprintf(err, errlen, "queue %s given twice", q->name);
                return KEEL_EINVAL;
            }
        }
        (*count)++;
        p = end;
    }
    return 0;
}

static int jobs_validate(void *opts, const keel_config *cfg, FILE *err)
{
    (void)cfg;
    keel_jobs_options *o = opts;
    keel__jobs_qspec q[KEEL__JOBS_MAX_QUEUES];
    size_t n;
    char why[200];
    if (keel__jobs_parse_queues(o->queues, 0, q, &n, why, sizeof(why)) < 0 || n == 0) {
        fprintf(err, "keel: JOBS_QUEUES: %s (e.g. \"default=4,email=2\")\n",
                n == 0 ? "at least one queue" : why);
        return KEEL_ECONFIG;
    }
    if (keel__jobs_parse_queues(o->rate_limits, 1, q, &n, why, sizeof(why)) < 0) {
        fprintf(err, "keel: JOBS_RATE_LIMITS: %s (e.g. \"email=10/1s\")\n", why);
        return KEEL_ECONFIG;
    }
    if (o->backoff_max_ms < o->backoff_base_ms) {
        fprintf(err, "keel: JOBS_BACKOFF_MAX: must be at least JOBS_BACKOFF_BASE\n");
        return KEEL_ECONFIG;
    }
    return 0;
}

#define AT(f) KEEL_CONFIG_AT(keel_jobs_options, f)
static const keel_config_var jobs_vars[] = {
    {.name = "JOBS_ENABLED", .type = KEEL_CONFIG_BOOL, .def = "true", AT(enabled),
     .help = "run the job runner in `serve` (enqueueing works either way)"},
    {.name = "JOBS_QUEUES", .type = KEEL_CONFIG_STR, .def = "default=4,email=2", AT(queues),
     .help = "queues this instance works on, name=concurrency (1..256), comma-separated"},
    {.name = "JOBS_POLL_INTERVAL", .type = KEEL_CONFIG_DURATION, .def = "1s",
     AT(poll_interval_ms), .min = 10, .max = 3600000,
     .help = "fetch at least this often (the fallback to LISTEN/NOTIFY and local wake-ups)"},
    {.name = "JOBS_RESCUE_AFTER", .type = KEEL_CONFIG_DURATION, .def = "60s",
     AT(rescue_after_ms), .min = 1000,
     .help = "a running job without a heartbeat this long is rescued (heartbeats every 1/4 of it)"},
    {.name = "JOBS_RETENTION", .type = KEEL_CONFIG_DURATION, .def = "24h", AT(retention_ms),
     .min = 1000, .help = "completed and cancelled jobs are deleted after this"},
    {.name = "JOBS_DEAD_RETENTION", .type = KEEL_CONFIG_DURATION, .def = "7d",
     AT(dead_retention_ms), .min = 1000, .help = "dead jobs are kept this long for inspection"},
    {.name = "JOBS_TIMEOUT", .type = KEEL_CONFIG_DURATION, .def = "5m", AT(timeout_ms),
     .help = "a job's run time limit when neither it nor its kind gives one; 0 = none"},
    {.name = "JOBS_BACKOFF_BASE", .type = KEEL_CONFIG_DURATION, .def = "1s",
     AT(backoff_base_ms), .min = 1,
     .help = "retry n waits a uniform random time in [0, min(max, base * 2^(n-1))]"},
    {.name = "JOBS_BACKOFF_MAX", .type = KEEL_CONFIG_DURATION, .def = "1h", AT(backoff_max_ms),
     .min = 1, .help = "the longest wait before a retry"},
    {.name = "JOBS_RATE_LIMITS", .type = KEEL_CONFIG_STR, .def = "", AT(rate_limits),
     .help = "per queue and instance: name=N/window (e.g. email=10/1s): at most N jobs "
             "started per window"},
    {.name = "JOBS_SHUTDOWN_GRACE", .type = KEEL_CONFIG_DURATION, .def = "10s",
     AT(shutdown_grace_ms),
     .help = "on SIGTERM, wait this long for running jobs (the rest are rescued later)"},
};
#undef AT

const keel_config_module keel_jobs_config =
    KEEL_CONFIG_MODULE("jobs", "The durable job queue (src/store/jobs*.c, docs/jobs.md).",
                       keel_jobs_options, jobs_vars, jobs_validate);

/* ---------------------------------------------------------------- helpers */

int keel__jobs_is_pg(const keel_db_conn *c)
{
    return c && c->drv == &keel__db_pg_driver;
}

int64_t keel__jobs_now(void)
{
    return (int64_t)keel_wall_ms();
}

int keel_job_state_valid(const char *s)
{
    static const char *const states[] = {"available", "scheduled", "running", "retryable",
                                         "completed", "cancelled", "dead"};
    for (size_t i = 0; s && i < sizeof(states) / sizeof(states[0]); i++)
        if (!strcmp(s, states[i]))
            return 1;
    return 0;
}

uint64_t keel_jobs_backoff_cap(uint64_t base_ms, uint64_t max_ms, unsigned attempt)
{
    uint64_t d = base_ms ? base_ms : 1;
    for (unsigned i = 1; i < attempt && d < max_ms; i++)
        d = d > UINT64_MAX / 2 ? UINT64_MAX : d * 2;
    return d < max_ms ? d : max_ms;
}

char *keel__jobs_errors_append(const char *errors, size_t len, int64_t at, unsigned attempt,
                               const char *msg)
{
    json_t *a = errors ? json_loadb(errors, len, 0, NULL) : NULL;
    if (!json_is_array(a)) {
        json_decref(a);
        a = json_array();
    }
    while (json_array_size(a) >= 10)
        json_array_remove(a, 0);
    json_array_append_new(a, json_pack("{s:I,s:i,s:s}", "at", (json_int_t)at, "attempt",
                                       (int)attempt, "error", msg ? msg : ""));
    char *s = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return s;
}

/* A queue, kind, key or tag: 1..KEEL_JOB_NAME_MAX bytes of valid UTF-8, no control bytes. */
static int name_ok(const char *s)
{
    if (!s)
        return 0;
    size_t n = strlen(s);
    if (n == 0 || n > KEEL_JOB_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    json_t *probe = json_stringn(s, n); /* NULL for invalid UTF-8 */
    int ok = probe != NULL;
    json_decref(probe);
    return ok;
}

/* ---------------------------------------------------------------- schema */

int keel_jobs_install(keel_db_conn *c)
{
    int pg = keel__jobs_is_pg(c);
    const char *drv = pg ? "postgres" : "sqlite";
    int applied = 0;
    for (size_t i = 0; i < keel_jobs_migrations_count; i++) { /* in version order */
        const keel_migration *m = &keel_jobs_migrations[i];
        if (strcmp(m->driver, drv) != 0)
            continue;
        keel__mig_file f;
        memset(&f, 0, sizeof(f));
        f.text = (char *)m->text;
        f.len = strlen(m->text);
        char err[256];
        if (keel__mig_parse(&f, pg, err, sizeof(err)) < 0) {
            keel_log(KEEL_LOG_ERROR, "jobs schema unreadable", "{s:s,s:s}", "migration",
                     m->name, "error", err);
            return KEEL_EDB_SQL;
        }
        char *up = keel_strndup(f.text + f.up_off, f.up_len);
        int rc = keel_db_exec(c, up, NULL, 0, NULL);
        keel_free(up);
        if (rc < 0) {
            keel_log(KEEL_LOG_ERROR, "jobs schema install failed", "{s:s,s:s,s:s}", "migration",
                     m->name, "error", keel_db_strerror(rc), "detail", keel_db_errmsg(c));
            return rc;
        }
        applied++;
    }
    return applied ? 0 : KEEL_EDB_SQL;
}

/* ---------------------------------------------------------------- enqueue */

static int read_id_state(keel_db_rows *rows, keel_job_enqueued *out)
{
    int rc = keel_db_rows_next(rows);
    if (rc == 1) {
        out->id = keel_db_get_int(rows, 0);
        keel_str st = keel_db_get_text(rows, 1);
        snprintf(out->state, sizeof(out->state), "%.*s", (int)st.len, st.ptr ? st.ptr : "");
    }
    keel_db_rows_free(rows);
    return rc;
}

int keel_job_enqueue(keel_db_conn *c, const keel_job_spec *spec, keel_job_enqueued *out)
{
    keel_job_enqueued local;
    if (!out)
        out = &local;
    memset(out, 0, sizeof(*out));
    if (!c || !spec || !name_ok(spec->kind))
        return KEEL_EINVAL;
    const char *queue = spec->queue ? spec->queue : "default";
    if (!name_ok(queue) || (spec->unique_key && !name_ok(spec->unique_key)) ||
        spec->priority < -1000 || spec->priority > 1000 || spec->ntags > KEEL_JOB_TAGS_MAX ||
        (spec->ntags && !spec->tags) || spec->max_attempts > 1000 ||
        spec->delay_ms > 100ull * 365 * 86400000)
        return KEEL_EINVAL;
    const char *args_text = spec->args ? spec->args : "{}";
    if (strlen(args_text) > KEEL_JOB_ARGS_MAX)
        return KEEL_EINVAL;
    json_t *args = json_loads(args_text, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(args)) {
        json_decref(args);
        return KEEL_EINVAL;
    }
    json_t *tags = json_array();
    for (size_t i = 0; i < spec->ntags; i++) {
        if (!name_ok(spec->tags[i])) {
            json_decref(args);
            json_decref(tags);
            return KEEL_EINVAL;
        }
        json_array_append_new(tags, json_string(spec->tags[i]));
    }
    char *args_s = json_dumps(args, JSON_COMPACT);
    char *tags_s = json_dumps(tags, JSON_COMPACT);
    json_decref(args);
    json_decref(tags);

    int64_t now = keel__jobs_now();
    int64_t run_at = spec->run_at_ms > 0 ? spec->run_at_ms : now;
    run_at += (int64_t)spec->delay_ms;
    const char *state = run_at > now ? "scheduled" : "available";
    unsigned max_attempts = spec->max_attempts ? spec->max_attempts : KEEL_JOB_MAX_ATTEMPTS_DEFAULT;
    keel_db_param p[] = {
        KEEL_DB_P_TEXT(queue),
        KEEL_DB_P_TEXT(spec->kind),
        KEEL_DB_P_TEXT(args_s),
        KEEL_DB_P_INT(spec->priority),
        KEEL_DB_P_TEXT(state),
        KEEL_DB_P_INT(max_attempts),
        KEEL_DB_P_INT((int64_t)spec->timeout_ms),
        spec->unique_key ? KEEL_DB_P_TEXT(spec->unique_key) : KEEL_DB_P_NULL(),
        KEEL_DB_P_INT(spec->unique_forever ? 1 : 0),
        KEEL_DB_P_TEXT(tags_s),
        KEEL_DB_P_INT(run_at),
        KEEL_DB_P_INT(now),
    };
    int rc = 0;
    /* A unique job's holder may finish between our conflict and our read:
     * then the insert is tried again (a few rounds at most). */
    for (int round = 0; round < 5; round++) {
        keel_db_rows *rows = NULL;
        rc = keel_db_query(c,
                           "INSERT INTO keel_jobs (queue, kind, args, priority, state, "
                           "max_attempts, timeout_ms, unique_key, unique_forever, tags, run_at, "
                           "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, "
                           "$12) ON CONFLICT DO NOTHING RETURNING id, state",
                           p, sizeof(p) / sizeof(p[0]), &rows);
        if (rc < 0)
            break;
        rc = read_id_state(rows, out);
        if (rc < 0)
            break;
        if (rc == 1) {
            rc = 0;
            break;
        }
        if (!spec->unique_key) { /* nothing else conflicts */
            rc = KEEL_EDB_SQL;
            break;
        }
        keel_db_param q[] = {KEEL_DB_P_TEXT(queue), KEEL_DB_P_TEXT(spec->unique_key)};
        rc = keel_db_query(c,
                           "SELECT id, state FROM keel_jobs WHERE queue = $1 AND unique_key = $2 "
                           "AND (unique_forever <> 0 OR state IN " KEEL__JOBS_UNFINISHED
                           ") ORDER BY id DESC LIMIT 1",
                           q, 2, &rows);
        if (rc < 0)
            break;
        rc = read_id_state(rows, out);
        if (rc < 0)
            break;
        if (rc == 1) {
            out->duplicate = 1;
            rc = 0;
            break;
        }
        rc = KEEL_EDB_RETRY;
    }
    keel_free(args_s);
    free(tags_s);
    if (rc < 0 || out->duplicate)
        return rc;
    if (strcmp(out->state, "available") != 0) { /* scheduled: found by polling */
        keel__jobs_wake_local(queue, 1);
        return 0;
    }
    /* Wake the runners. PostgreSQL: NOTIFY is delivered at commit (never
     * for a rolled-back job). SQLite: this process's runners; inside a
     * transaction their fetch waits for our commit (BEGIN IMMEDIATE). */
    if (keel__jobs_is_pg(c)) {
        keel_db_param n[] = {KEEL_DB_P_TEXT(queue)};
        int nrc = keel_db_exec(c, "SELECT pg_notify('keel_jobs', $1)", n, 1, NULL);
        if (nrc < 0)
            return nrc; /* the transaction is aborted anyway */
        keel__jobs_wake_local(queue, 1);
    } else {
        keel__jobs_wake_local(queue, 1);
    }
    return 0;
}

/* ---------------------------------------------------------------- admin */

/* After an UPDATE/DELETE that changed nothing: KEEL_EDB_NOROW when the
 * job does not exist, else KEEL_EALREADY. */
static int why_not(keel_db_conn *c, int64_t id)
{
    keel_db_rows *rows = NULL;
    keel_db_param p[] = {KEEL_DB_P_INT(id)};
    int rc = keel_db_query(c, "SELECT state FROM keel_jobs WHERE id = $1", p, 1, &rows);
    if (rc < 0)
        return rc;
    rc = keel_db_rows_next(rows);
    keel_db_rows_free(rows);
    return rc < 0 ? rc : rc == 1 ? KEEL_EALREADY : KEEL_EDB_NOROW;
}

static int update_one(keel_db_conn *c, const char *sql, int64_t id)
{
    keel_db_param p[] = {KEEL_DB_P_INT(id), KEEL_DB_P_INT(keel__jobs_now())};
    int64_t n = 0;
    int rc = keel_db_exec(c, sql, p, strstr(sql, "$2") ? 2 : 1, &n);
    if (rc < 0)
        return rc;
    return n > 0 ? 0 : why_not(c, id);
}

int keel_job_retry_now(keel_db_conn *c, int64_t id)
{
    int rc = update_one(c,
                        "UPDATE keel_jobs SET state = 'available', run_at = $2, finished_at = NULL, "
                        "locked_by = NULL, heartbeat_at = NULL, max_attempts = CASE WHEN "
                        "attempt >= max_attempts THEN attempt + 1 ELSE max_attempts END "
                        "WHERE id = $1 AND state <> 'running'",
                        id);
    if (rc == 0) {
        keel_db_rows *rows = NULL;
        keel_db_param p[] = {KEEL_DB_P_INT(id)};
        if (keel_db_query(c, "SELECT queue FROM keel_jobs WHERE id = $1", p, 1, &rows) == 0) {
            if (keel_db_rows_next(rows) == 1) {
                keel_str q = keel_db_get_text(rows, 0);
                char qb[KEEL_JOB_NAME_MAX + 1];
                snprintf(qb, sizeof(qb), "%.*s", (int)q.len, q.ptr ? q.ptr : "");
                if (keel__jobs_is_pg(c)) {
                    keel_db_param n[] = {KEEL_DB_P_TEXT(qb)};
                    keel_db_exec(c, "SELECT pg_notify('keel_jobs', $1)", n, 1, NULL);
                }
                keel__jobs_wake_local(qb, 0);
            }
            keel_db_rows_free(rows);
        }
    }
    return rc;
}

int keel_job_cancel(keel_db_conn *c, int64_t id)
{
    return update_one(c,
                      "UPDATE keel_jobs SET state = 'cancelled', finished_at = $2, "
                      "locked_by = NULL WHERE id = $1 AND state IN " KEEL__JOBS_UNFINISHED,
                      id);
}

int keel_job_delete(keel_db_conn *c, int64_t id)
{
    return update_one(c, "DELETE FROM keel_jobs WHERE id = $1 AND state <> 'running'", id);
}

int keel_jobs_queue_pause(keel_db_conn *c, const char *queue, int paused)
{
    if (!name_ok(queue))
        return KEEL_EINVAL;
    keel_db_param p[] = {KEEL_DB_P_TEXT(queue), KEEL_DB_P_INT(paused ? 1 : 0),
                         KEEL_DB_P_INT(keel__jobs_now())};
    int rc = keel_db_exec(c,
                          "INSERT INTO keel_job_queues (queue, paused, updated_at) VALUES ($1, $2, "
                          "$3) ON CONFLICT (queue) DO UPDATE SET paused = excluded.paused, "
                          "updated_at = excluded.updated_at",
                          p, 3, NULL);
    if (rc == 0 && !paused) {
        if (keel__jobs_is_pg(c))
            keel_db_exec(c, "SELECT pg_notify('keel_jobs', $1)", p, 1, NULL);
        keel__jobs_wake_local(queue, 0);
    }
    return rc;
}

/* A job row as JSON; SQLite's text columns of JSON become JSON. */
static json_t *job_json(keel_db_rows *rows)
{
    json_t *o = keel_db_row_json(rows);
    static const char *const js[] = {"args", "tags", "errors"};
    for (size_t i = 0; i < 3; i++) {
        json_t *v = json_object_get(o, js[i]);
        if (json_is_string(v)) {
            json_t *parsed = json_loads(json_string_value(v), 0, NULL);
            if (parsed)
                json_object_set_new(o, js[i], parsed);
        }
    }
    return o;
}

int keel_job_get(keel_db_conn *c, int64_t id, json_t **out)
{
    *out = NULL;
    keel_db_rows *rows = NULL;
    keel_db_param p[] = {KEEL_DB_P_INT(id)};
    int rc = keel_db_query(c, "SELECT " KEEL__JOBS_COLS " FROM keel_jobs WHERE id = $1", p, 1,
                           &rows);
    if (rc < 0)
        return rc;
    rc = keel_db_rows_next(rows);
    if (rc == 1)
        *out = job_json(rows);
    keel_db_rows_free(rows);
    return rc < 0 ? rc : rc == 1 ? 0 : KEEL_EDB_NOROW;
}

int keel_jobs_list(keel_db_conn *c, const keel_job_filter *f, json_t **out)
{
    *out = NULL;
    char sql[512];
    keel_db_param p[5];
    size_t n = 0;
    int len = snprintf(sql, sizeof(sql), "SELECT " KEEL__JOBS_COLS " FROM keel_jobs WHERE 1 = 1");
    if (f->queue) {
        p[n++] = KEEL_DB_P_TEXT(f->queue);
        len += snprintf(sql + len, sizeof(sql) - (size_t)len, " AND queue = $%zu", n);
    }
    if (f->state) {
        p[n++] = KEEL_DB_P_TEXT(f->state);
        len += snprintf(sql + len, sizeof(sql) - (size_t)len, " AND state = $%zu", n);
    }
    if (f->kind) {
        p[n++] = KEEL_DB_P_TEXT(f->kind);
        len += snprintf(sql + len, sizeof(sql) - (size_t)len, " AND kind = $%zu", n);
    }
    if (f->before_id > 0) {
        p[n++] = KEEL_DB_P_INT(f->before_id);
        len += snprintf(sql + len, sizeof(sql) - (size_t)len, " AND id < $%zu", n);
    }
    unsigned limit = f->limit < 1 ? 50 : f->limit > 500 ? 500 : f->limit;
    p[n++] = KEEL_DB_P_INT((int64_t)limit + 1);
    snprintf(sql + len, sizeof(sql) - (size_t)len, " ORDER BY id DESC LIMIT $%zu", n);
    keel_db_rows *rows = NULL;
    int rc = keel_db_query(c, sql, p, n, &rows);
    if (rc < 0)
        return rc;
    json_t *jobs = json_array();
    int64_t last = 0;
    int more = 0;
    while ((rc = keel_db_rows_next(rows)) == 1) {
        if (json_array_size(jobs) == limit) {
            more = 1;
            break;
        }
        last = keel_db_get_int(rows, 0);
        json_array_append_new(jobs, job_json(rows));
    }
    keel_db_rows_free(rows);
    if (rc < 0) {
        json_decref(jobs);
        return rc;
    }
    *out = json_pack("{s:o,s:o}", "jobs", jobs, "next_before",
                     more ? json_integer(last) : json_null());
    return 0;
}

int keel_jobs_queues(keel_db_conn *c, json_t **out)
{
    *out = NULL;
    json_t *byq = json_object();
    keel_db_rows *rows = NULL;
    int rc = keel_db_query(c, "SELECT queue, state, count(*) FROM keel_jobs GROUP BY queue, state",
                           NULL, 0, &rows);
    if (rc < 0)
        goto fail;
    while ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str q = keel_db_get_text(rows, 0), st = keel_db_get_text(rows, 1);
        char qb[KEEL_JOB_NAME_MAX + 1], sb[32];
        snprintf(qb, sizeof(qb), "%.*s", (int)q.len, q.ptr ? q.ptr : "");
        snprintf(sb, sizeof(sb), "%.*s", (int)st.len, st.ptr ? st.ptr : "");
        json_t *o = json_object_get(byq, qb);
        if (!o) {
            o = json_pack("{s:s,s:b}", "queue", qb, "paused", 0);
            json_object_set_new(byq, qb, o);
        }
        json_object_set_new(o, sb, json_integer(keel_db_get_int(rows, 2)));
    }
    keel_db_rows_free(rows);
    if (rc < 0)
        goto fail;
    rc = keel_db_query(c, "SELECT queue, paused FROM keel_job_queues", NULL, 0, &rows);
    if (rc < 0)
        goto fail;
    while ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str q = keel_db_get_text(rows, 0);
        char qb[KEEL_JOB_NAME_MAX + 1];
        snprintf(qb, sizeof(qb), "%.*s", (int)q.len, q.ptr ? q.ptr : "");
        json_t *o = json_object_get(byq, qb);
        if (!o) {
            o = json_pack("{s:s}", "queue", qb);
            json_object_set_new(byq, qb, o);
        }
        json_object_set_new(o, "paused", json_boolean(keel_db_get_int(rows, 1) != 0));
    }
    keel_db_rows_free(rows);
    if (rc < 0)
        goto fail;
    json_t *list = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(byq, k, v) json_array_append(list, v);
    json_decref(byq);
    *out = json_pack("{s:o}", "queues", list);
    return 0;
fail:
    json_decref(byq);
    return rc;
}
