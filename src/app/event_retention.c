/* event_retention.c — retention of events: a pass that expires finished
 * events past their type's retention (purge = soft delete, or anonymise)
 * and deletes soft-deleted ones for good after EVENTS_PURGE_GRACE.
 *
 * app_events_run_retention is a plain function on a connection: the
 * job "events.retention" (scheduled by EVENTS_RETENTION_SCHEDULE) calls
 * it, and `keel events retention` and POST /api/v1/admin/events/retention
 * run one pass by hand. Each change is its own transaction, re-checked inside it,
 * with its audit record; events under legal hold, or below one, are
 * skipped (and counted). Leaves go first (depth descending), and an event
 * with live children waits for them, so a subtree is never cut. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "app/events_internal.h"

static uint64_t grace_ms, batch_max;

static const app_actor retention_actor = {.kind = "system", .id = "retention"};

typedef struct item {
    char id[64], path[2400], action[16];
    int64_t now, cutoff;
    int done, held;
} item;

/* in one transaction: expire one event (re-checked) */
static int tx_expire(keel_db_conn *c, void *arg)
{
    item *it = arg;
    it->done = it->held = 0;
    int rc = app_ev_hold_on(c, it->path, &it->held);
    if (rc < 0 || it->held)
        return rc;
    keel_db_param p[] = {KEEL_DB_P_TEXT(it->id), KEEL_DB_P_INT(it->now)};
    int64_t n = 0;
    int purge = !strcmp(it->action, "purge");
    rc = keel_db_exec(c,
                      purge ? "UPDATE events SET deleted_at = $2, updated_at = $2, version = "
                              "version + 1 WHERE id = $1 AND deleted_at IS NULL AND NOT EXISTS "
                              "(SELECT 1 FROM events k WHERE k.parent_id = events.id AND "
                              "k.deleted_at IS NULL)"
                            : "UPDATE events SET title = '[anonymised]', description = '', "
                              "location = '', custom = '{}', tags = ',', risk_notes = NULL, "
                              "anonymised_at = $2, updated_at = $2, version = version + 1 "
                              "WHERE id = $1 AND deleted_at IS NULL AND anonymised_at IS NULL",
                      p, 2, &n);
    if (rc < 0 || n == 0)
        return rc;
    it->done = 1;
    json_t *diff = purge ? json_pack("{s:{s:I}}", "deleted_at", "to", (json_int_t)it->now)
                         : json_pack("{s:{s:s},s:{s:I}}", "title", "to", "[anonymised]",
                                     "anonymised_at", "to", (json_int_t)it->now);
    rc = app_audit_append(c, &retention_actor, purge ? "event.purge" : "event.anonymise",
                          "event", it->id, diff);
    json_decref(diff);
    return rc;
}

/* in one transaction: delete one soft-deleted event for good */
static int tx_hard_delete(keel_db_conn *c, void *arg)
{
    item *it = arg;
    it->done = 0;
    keel_db_param p[] = {KEEL_DB_P_TEXT(it->id), KEEL_DB_P_INT(it->cutoff)};
    static const char *const children[] = {
        "DELETE FROM event_exceptions WHERE event_id = $1",
        "DELETE FROM event_transitions WHERE event_id = $1",
        "DELETE FROM event_assignments WHERE event_id = $1",
        "DELETE FROM event_approvals WHERE event_id = $1",
        "DELETE FROM event_costs WHERE event_id = $1"};
    int rc;
    int64_t n = 0;
    if ((rc = keel_db_exec(c,
                           "SELECT 1 FROM events WHERE id = $1 AND deleted_at IS NOT NULL AND "
                           "deleted_at <= $2 AND NOT legal_hold AND NOT EXISTS (SELECT 1 FROM "
                           "events k WHERE k.parent_id = events.id)",
                           p, 2, &n)) < 0 ||
        n == 0)
        return rc;
    for (size_t i = 0; i < sizeof(children) / sizeof(children[0]); i++)
        if ((rc = keel_db_exec(c, children[i], p, 1, NULL)) < 0)
            return rc;
    if ((rc = keel_db_exec(c, "DELETE FROM events WHERE id = $1", p, 1, NULL)) < 0)
        return rc;
    it->done = 1;
    json_t *diff = json_pack("{s:{s:s}}", "event", "from", "deleted for good");
    rc = app_audit_append(c, &retention_actor, "event.hard_delete", "event", it->id, diff);
    json_decref(diff);
    return rc;
}

int app_events_run_retention(keel_db_conn *c, int64_t now, int64_t grace_s, size_t batch,
                             json_t **report)
{
    int64_t expired = 0, anonymised = 0, purged = 0, held = 0;
    keel_db_param p[] = {KEEL_DB_P_INT(now), KEEL_DB_P_INT((int64_t)batch)};
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           "SELECT e.id, e.path, t.retention_action FROM events e JOIN "
                           "event_types t ON t.name = e.type WHERE e.deleted_at IS NULL AND "
                           "e.anonymised_at IS NULL AND t.retention_days IS NOT NULL AND e.state "
                           "IN ('completed', 'cancelled', 'archived') AND e.updated_at + "
                           "t.retention_days * 86400 <= $1 ORDER BY e.depth DESC, e.id LIMIT $2",
                           p, 2, &rows);
    if (rc < 0)
        return rc;
    size_t n = 0, cap = 16;
    item *items = keel_malloc(cap * sizeof(*items));
    while ((rc = keel_db_rows_next(rows)) == 1) {
        if (n == cap)
            items = keel_realloc(items, (cap *= 2) * sizeof(*items));
        item *it = &items[n++];
        memset(it, 0, sizeof(*it));
        keel_str id = keel_db_get_text(rows, 0), path = keel_db_get_text(rows, 1),
                 act = keel_db_get_text(rows, 2);
        snprintf(it->id, sizeof(it->id), "%.*s", (int)id.len, id.ptr);
        snprintf(it->path, sizeof(it->path), "%.*s", (int)path.len, path.ptr);
        snprintf(it->action, sizeof(it->action), "%.*s", (int)act.len, act.ptr);
        it->now = now;
    }
    keel_db_rows_free(rows);
    for (size_t i = 0; rc >= 0 && i < n; i++) {
        if ((rc = keel_db_tx(c, tx_expire, &items[i])) < 0)
            break;
        expired += items[i].done;
        anonymised += items[i].done && strcmp(items[i].action, "purge");
        held += items[i].held;
    }
    /* for good: deepest first, so children go before their parents */
    keel_db_param q[] = {KEEL_DB_P_INT(now - grace_s), KEEL_DB_P_INT((int64_t)batch)};
    if (rc >= 0)
        rc = keel_db_query(c,
                           "SELECT id FROM events WHERE deleted_at IS NOT NULL AND deleted_at <= "
                           "$1 AND NOT legal_hold ORDER BY depth DESC, id LIMIT $2",
                           q, 2, &rows);
    if (rc >= 0) {
        n = 0;
        while ((rc = keel_db_rows_next(rows)) == 1) {
            if (n == cap)
                items = keel_realloc(items, (cap *= 2) * sizeof(*items));
            item *it = &items[n++];
            memset(it, 0, sizeof(*it));
            keel_str id = keel_db_get_text(rows, 0);
            snprintf(it->id, sizeof(it->id), "%.*s", (int)id.len, id.ptr);
            it->cutoff = now - grace_s;
        }
        keel_db_rows_free(rows);
        for (size_t i = 0; rc >= 0 && i < n; i++) {
            if ((rc = keel_db_tx(c, tx_hard_delete, &items[i])) < 0)
                break;
            purged += items[i].done;
        }
    }
    keel_free(items);
    if (rc < 0)
        return rc;
    *report = json_pack("{s:I,s:I,s:I,s:I}", "expired", (json_int_t)expired, "anonymised",
                        (json_int_t)anonymised, "purged", (json_int_t)purged, "held_skipped",
                        (json_int_t)held);
    return 0;
}

/* ---------------------------------------------------------------- the scheduled jobs */

/* One sweep per tick, on a runner thread with its own connection. A
 * database error retries the job (backoff); the next tick runs anyway. */
static keel_job_outcome run_sweep(keel_job *job, void *arg)
{
    app_ev_sweep_fn sweep = (app_ev_sweep_fn)arg;
    keel_db_conn *c = keel_job_db(job);
    if (!c)
        return keel_job_retry(job, "no database connection");
    json_t *report = NULL;
    int rc = sweep(c, app_now(), &report);
    if (rc < 0) {
        json_decref(report);
        return keel_job_retry(job, keel_db_strerror(rc));
    }
    char *text = report ? json_dumps(report, JSON_COMPACT) : NULL;
    keel_log(KEEL_LOG_INFO, "events sweep done", "{s:s,s:I,s:s}", "kind", keel_job_kind(job),
             "job_id", (json_int_t)keel_job_id(job), "report", text ? text : "{}");
    free(text);
    json_decref(report);
    return KEEL_JOB_OK;
}

int app_ev_schedule_sweep(keel_service *svc, const char *kind, const char *expr,
                          app_ev_sweep_fn sweep)
{
    keel_jobs *jobs = keel_service_jobs(svc);
    if (!jobs)
        return 0;
    keel_job_handler h = {.kind = kind, .run = run_sweep, .arg = (void *)sweep,
                          .timeout_ms = 10 * 60 * 1000};
    char why[300] = "";
    int rc = keel_jobs_register(jobs, &h);
    if (rc == 0 && expr && *expr) {
        keel_job_schedule s = {.name = kind, .expr = expr, .kind = kind, .max_attempts = 3};
        rc = keel_jobs_schedule(jobs, &s, why, sizeof(why));
    }
    if (rc < 0)
        keel_log(KEEL_LOG_ERROR, "events: the sweep cannot be scheduled", "{s:s,s:s,s:s}", "kind",
                 kind, "error", keel_strerror(rc), "detail", why);
    return rc < 0 ? -1 : 0;
}

static int retention_sweep(keel_db_conn *c, int64_t now, json_t **report)
{
    return app_events_run_retention(c, now, (int64_t)(grace_ms / 1000), (size_t)batch_max,
                                    report);
}

/* ---------------------------------------------------------------- the admin route */

typedef struct run_job {
    app_ev_job e;
    int64_t now;
} run_job;

static int db_run(keel_db_conn *c, void *arg)
{
    run_job *j = arg;
    json_decref(j->e.out);
    j->e.out = NULL;
    return app_events_run_retention(c, j->now, (int64_t)(grace_ms / 1000), (size_t)batch_max,
                                    &j->e.out);
}

static keel_flow h_run(keel_req *r)
{
    run_job *j = app_ev_job_new(r, sizeof(run_job));
    j->now = app_now();
    json_t *body = keel_req_body(r).len ? app_json_body(r) : NULL;
    if (keel_req_body(r).len && !body)
        return KEEL_DONE;
    json_t *at = json_object_get(body, "now");
    if (at && app_parse_time(json_string_value(at), json_string_length(at), &j->now) < 0) {
        app_invalid(r, "/now", "must be an RFC 3339 date-time");
        return KEEL_DONE;
    }
    return keel_db_job_run(r, app_ev_db, db_run, app_ev_done, j);
}

static const keel_route retention_routes[] = {
    {.name = "admin.events.retention", .method = "POST", .path = "/api/v1/admin/events/retention",
     .handler = h_run,
     .summary = "Run one retention pass now ({now} to evaluate it at another time)",
     .auth = "any", .permission = "admin:access",
     .request_schema = "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
                       "\"now\":{\"type\":\"string\",\"format\":\"date-time\"}}}"},
};

int app_event_retention_setup(keel_service *svc)
{
    const app_options *o = app_options_of(svc);
    grace_ms = o->events_purge_grace_ms;
    batch_max = o->events_retention_batch;
    if (app_ev_schedule_sweep(svc, "events.retention", o->events_retention_schedule,
                              retention_sweep) < 0)
        return -1;
    return keel_service_add_routes(svc, retention_routes,
                                   sizeof(retention_routes) / sizeof(retention_routes[0]));
}

/* ---------------------------------------------------------------- CLI */

int app_events_command(keel_service *svc, int argc, char **argv)
{
    if (argc < 1 || (strcmp(argv[0], "retention") && strcmp(argv[0], "escalate"))) {
        fprintf(stderr, "usage: keel events retention | escalate [--now RFC3339]\n");
        return 2;
    }
    int64_t now = app_now();
    for (int i = 1; i < argc; i++) {
        const char *v = !strcmp(argv[i], "--now") && i + 1 < argc ? argv[++i]
                        : !strncmp(argv[i], "--now=", 6)          ? argv[i] + 6
                                                                  : NULL;
        if (!v || app_parse_time(v, strlen(v), &now) < 0) {
            fprintf(stderr, "keel: --now: expected an RFC 3339 date-time\n");
            return 2;
        }
    }
    const keel_config *cfg = keel_service_config(svc);
    const app_options *o = app_options_of(svc);
    const keel_db_options *db = keel_config_get(cfg, &keel_db_config);
    keel_db_conn *c = NULL;
    char err[256] = "";
    if (keel_db_connect(db->database_url, cfg, &c, err, sizeof(err)) < 0) {
        fprintf(stderr, "keel: cannot open the database: %s\n", err);
        return 1;
    }
    json_t *rep = NULL;
    int rc = !strcmp(argv[0], "escalate")
                 ? app_events_run_escalation(c, now, &rep)
                 : app_events_run_retention(c, now, (int64_t)(o->events_purge_grace_ms / 1000),
                                            (size_t)o->events_retention_batch, &rep);
    keel_db_disconnect(c);
    if (rc < 0) {
        fprintf(stderr, "keel: events %s failed: %s\n", argv[0], keel_db_strerror(rc));
        return 1;
    }
    char *s = json_dumps(rep, JSON_COMPACT);
    printf("%s\n", s);
    free(s);
    json_decref(rep);
    return 0;
}
