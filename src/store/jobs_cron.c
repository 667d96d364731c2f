/* jobs_cron.c — the runner's schedules: cron expressions and fixed
 * intervals whose ticks become jobs (keel/jobs.h, docs/scheduler.md).
 *
 * Each runner looks at its schedules on its loop about once a second
 * (on_maint) and touches the database only when one is due: at start,
 * then at the fire times keel_cron_next gives. The tick due now is
 * enqueued in one transaction:
 *
 *   INSERT the schedule's row (last_fire_at = now) when it is new: a new
 *   schedule does not fire for the past;
 *   read last_fire_at; t = keel_cron_due(cron, last, now): the latest
 *   fire time in (last, now], or none — after downtime one tick, not one
 *   per missed slot;
 *   UPDATE ... SET last_fire_at = t WHERE name = ? AND last_fire_at < t:
 *   a compare-and-set; on PostgreSQL a second instance's update waits for
 *   the first's row lock and then matches nothing;
 *   only when it changed a row: enqueue the job with unique key
 *   "<name>@<t>" and unique_forever, a second guard.
 *
 * So with N instances each tick is enqueued, and run, exactly once, and a
 * tick is enqueued if and only if the schedule's row moved past it. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "keel/log.h"
#include "store/jobs_internal.h"

static int fail(char *err, size_t errlen, const char *fmt, const char *a, const char *b)
{
    if (err && errlen)
        snprintf(err, errlen, fmt, a, b);
    return KEEL_EINVAL;
}

static int name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

int keel_jobs_schedule(keel_jobs *j, const keel_job_schedule *s, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!j || !s)
        return KEEL_EINVAL;
    if (keel__jobs_started(j))
        return fail(err, errlen, "schedule %s: the runner has started%s", s->name ? s->name : "",
                    "");
    if (!name_ok(s->name))
        return fail(err, errlen, "schedule name %s%s: expected 1-63 of A-Z a-z 0-9 _ . -",
                    s->name ? s->name : "(none)", "");
    const char *queue = s->queue ? s->queue : "default";
    if (!s->kind || !*s->kind || strlen(s->kind) > KEEL_JOB_NAME_MAX ||
        strlen(queue) > KEEL_JOB_NAME_MAX || !*queue)
        return fail(err, errlen, "schedule %s: %s", s->name, "a kind and a queue of 1-128 bytes");
    if (s->max_attempts > 1000)
        return fail(err, errlen, "schedule %s: %s", s->name, "max_attempts is at most 1000");
    keel__sched n;
    memset(&n, 0, sizeof(n));
    char why[200];
    if (!s->expr || strlen(s->expr) >= sizeof(n.expr) ||
        keel_cron_parse(s->expr, &n.cron, why, sizeof(why)) < 0)
        return fail(err, errlen, "schedule %s: %s", s->name,
                    s->expr && strlen(s->expr) < sizeof(n.expr) ? why : "expression too long");
    json_t *args = s->args ? json_loads(s->args, JSON_REJECT_DUPLICATES, NULL) : json_object();
    if (!json_is_object(args)) {
        json_decref(args);
        return fail(err, errlen, "schedule %s: %s", s->name, "args must be a JSON object");
    }
    keel__sched_set *set = keel__jobs_sched_set(j);
    for (size_t i = 0; i < set->n; i++)
        if (!strcmp(set->v[i].name, s->name)) {
            json_decref(args);
            if (err && errlen)
                snprintf(err, errlen, "schedule %s: the name is used twice", s->name);
            return KEEL_EEXISTS;
        }
    snprintf(n.name, sizeof(n.name), "%s", s->name);
    snprintf(n.kind, sizeof(n.kind), "%s", s->kind);
    snprintf(n.queue, sizeof(n.queue), "%s", queue);
    snprintf(n.expr, sizeof(n.expr), "%s", s->expr);
    char *text = json_dumps(args, JSON_COMPACT);
    json_decref(args);
    n.args = keel_strdup(text ? text : "{}");
    free(text);
    n.max_attempts = s->max_attempts;
    n.last_fire = -1;
    pthread_mutex_lock(&set->mu);
    if (set->n == set->cap) {
        set->cap = set->cap ? set->cap * 2 : 8;
        set->v = keel_realloc(set->v, set->cap * sizeof(*set->v));
    }
    set->v[set->n++] = n;
    pthread_mutex_unlock(&set->mu);
    return 0;
}

int keel_jobs_schedule_spec(keel_jobs *j, const char *cron_jobs, char *err, size_t errlen)
{
    keel_cron_entry *v = NULL;
    size_t n = 0;
    int rc = keel_cron_jobs_parse(cron_jobs, &v, &n, err, errlen);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        keel_job_schedule s = {.name = v[i].name, .expr = v[i].expr, .kind = v[i].kind};
        rc = keel_jobs_schedule(j, &s, err, errlen);
    }
    keel_free(v);
    return rc;
}

int keel__jobs_sched_validate(keel_jobs *j)
{
    keel__sched_set *set = keel__jobs_sched_set(j);
    for (size_t i = 0; i < set->n; i++) {
        const keel__sched *s = &set->v[i];
        const char *why = !keel__jobs_has_handler(j, s->kind)
                              ? "no handler is registered for its kind"
                          : !keel__jobs_serves(j, s->queue)
                              ? "its queue is not in JOBS_QUEUES"
                              : NULL;
        if (why) {
            keel_log(KEEL_LOG_ERROR, "jobs: a schedule cannot run", "{s:s,s:s,s:s,s:s}",
                     "schedule", s->name, "kind", s->kind, "queue", s->queue, "error", why);
            return KEEL_EINVAL;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- the tick */

typedef struct tick {
    keel__sched *s;
    int64_t now;
    int64_t fired;          /* the fire time enqueued, or -1 */
    keel_job_enqueued out;
} tick;

static int tick_tx(keel_db_conn *c, void *arg)
{
    tick *t = arg;
    t->fired = -1;
    keel_db_param ins[] = {KEEL_DB_P_TEXT(t->s->name), KEEL_DB_P_INT(t->now)};
    int rc = keel_db_exec(c,
                          "INSERT INTO keel_job_schedules (name, last_fire_at, updated_at) "
                          "VALUES ($1, $2, $2) ON CONFLICT (name) DO NOTHING",
                          ins, 2, NULL);
    if (rc < 0)
        return rc;
    keel_db_param q[] = {KEEL_DB_P_TEXT(t->s->name)};
    keel_db_rows *rows = NULL;
    rc = keel_db_query(c, "SELECT last_fire_at FROM keel_job_schedules WHERE name = $1", q, 1,
                       &rows);
    if (rc < 0)
        return rc;
    rc = keel_db_rows_next(rows);
    int64_t last = rc == 1 ? keel_db_get_int(rows, 0) : t->now;
    keel_db_rows_free(rows);
    if (rc < 0)
        return rc;
    int64_t due = keel_cron_due(&t->s->cron, last, t->now);
    if (due < 0)
        return 0;
    keel_db_param u[] = {KEEL_DB_P_INT(due), KEEL_DB_P_INT(t->now), KEEL_DB_P_TEXT(t->s->name)};
    int64_t changed = 0;
    rc = keel_db_exec(c,
                      "UPDATE keel_job_schedules SET last_fire_at = $1, updated_at = $2 "
                      "WHERE name = $3 AND last_fire_at < $1",
                      u, 3, &changed);
    if (rc < 0 || changed != 1)
        return rc < 0 ? rc : 0; /* another instance took this tick */
    json_t *args = json_loads(t->s->args, 0, NULL);
    if (!args)
        args = json_object();
    if (!json_object_get(args, "schedule"))
        json_object_set_new(args, "schedule", json_string(t->s->name));
    if (!json_object_get(args, "fire_time"))
        json_object_set_new(args, "fire_time", json_integer(due));
    char *text = json_dumps(args, JSON_COMPACT);
    json_decref(args);
    char key[KEEL_JOB_NAME_MAX + 1];
    snprintf(key, sizeof(key), "%s@%lld", t->s->name, (long long)due);
    keel_job_spec spec = {.kind = t->s->kind,
                          .queue = t->s->queue,
                          .args = text,
                          .max_attempts = t->s->max_attempts,
                          .unique_key = key,
                          .unique_forever = 1};
    rc = keel_job_enqueue(c, &spec, &t->out);
    free(text);
    if (rc == 0)
        t->fired = due;
    return rc;
}

void keel__jobs_sched_tick(keel_jobs *j, keel_db_conn *c)
{
    keel__sched_set *set = keel__jobs_sched_set(j);
    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; i < set->n; i++) {
        keel__sched *s = &set->v[i];
        pthread_mutex_lock(&set->mu);
        int due = s->next_check <= now;
        pthread_mutex_unlock(&set->mu);
        if (!due)
            continue;
        tick t = {.s = s, .now = now, .fired = -1};
        int rc = keel_db_tx(c, tick_tx, &t);
        int64_t next = keel_cron_next(&s->cron, now);
        if (rc < 0) {
            keel_log(KEEL_LOG_ERROR, "jobs: a schedule's tick could not be enqueued",
                     "{s:s,s:s,s:s}", "schedule", s->name, "error", keel_db_strerror(rc),
                     "detail", keel_db_errmsg(c));
            next = now + 5; /* the same tick is still due then (keel_cron_due) */
        } else if (t.fired >= 0) {
            keel_log(t.out.duplicate ? KEEL_LOG_DEBUG : KEEL_LOG_INFO, "cron tick enqueued",
                     "{s:s,s:s,s:I,s:I}", "schedule", s->name, "kind", s->kind, "fire_time",
                     (json_int_t)t.fired, "job_id", (json_int_t)t.out.id);
        }
        pthread_mutex_lock(&set->mu);
        if (t.fired >= 0)
            s->last_fire = t.fired;
        s->next_check = next < 0 ? INT64_MAX : next;
        pthread_mutex_unlock(&set->mu);
    }
}

json_t *keel_jobs_schedules_json(keel_jobs *j)
{
    json_t *a = json_array();
    if (!j)
        return a;
    keel__sched_set *set = keel__jobs_sched_set(j);
    pthread_mutex_lock(&set->mu);
    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; i < set->n; i++) {
        const keel__sched *s = &set->v[i];
        int64_t next = keel_cron_next(&s->cron, now);
        json_array_append_new(
            a, json_pack("{s:s,s:s,s:s,s:s,s:o,s:o}", "name", s->name, "expr", s->expr, "kind",
                         s->kind, "queue", s->queue, "next_fire_at",
                         next < 0 ? json_null() : json_integer(next), "last_fire_at",
                         s->last_fire < 0 ? json_null() : json_integer(s->last_fire)));
    }
    pthread_mutex_unlock(&set->mu);
    return a;
}

void keel__jobs_sched_free(keel__sched_set *set)
{
    for (size_t i = 0; i < set->n; i++)
        keel_free(set->v[i].args);
    keel_free(set->v);
    set->v = NULL;
    set->n = set->cap = 0;
}
