/* alerts_api.c — the alerts admin API (admin: an admin user or an API key
 * with admin:access) and GET /metrics/alerts (as open as /metrics):
 *
 *   GET    /api/v1/admin/alerts/rules        every rule (built-in ones first)
 *   POST   /api/v1/admin/alerts/rules        a new rule (201; 409 when the id is taken or
 *                                            500 rules exist)
 *   GET    /api/v1/admin/alerts/rules/:id
 *   PUT    /api/v1/admin/alerts/rules/:id    replaces a rule (a built-in one keeps its kind)
 *   DELETE /api/v1/admin/alerts/rules/:id    204; a built-in rule cannot go (409: disable it);
 *                                            its open alerts are resolved
 *   GET    /api/v1/admin/alerts              {active, recent, next_cursor}: ?limit, ?cursor
 *   POST   /api/v1/admin/alerts/:id/ack      acknowledges an active alert (no repeats)
 *   POST   /api/v1/admin/alerts/:id/resolve  resolves it by hand (resolved notification)
 *   GET    /metrics/alerts                   {"alerts": [active...]}
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "app/alerts_internal.h"

/* Rules in all, built-in ones included: each costs its window's samples
 * (keel/alerts.h: at most 512) and a few queries per evaluation. */
#define ALERT_RULES_MAX 500

typedef struct api_job {
    json_t *body;  /* borrowed (the request's) */
    json_t *out;   /* the answer */
    json_t *rule;  /* resolve: the rule, for the notification */
    int status;    /* the answer's status (or a problem's) */
    const char *problem;
    keel_alert_rule r;
    char id[KEEL_ALERT_ID_MAX];
    char actor[96];
    char cursor[96];
    int64_t limit;
} api_job;

static void job_cleanup(void *p)
{
    api_job *j = p;
    json_decref(j->out);
    json_decref(j->rule);
}

static api_job *job_new(keel_req *r)
{
    return KEEL_REQ_JOB(r, api_job, job_cleanup);
}

static void done(keel_req *r, void *arg, int status)
{
    api_job *j = arg;
    if (status == KEEL_ECANCELED)
        return;
    if (status < 0) {
        keel_db_respond_error(r, status);
        return;
    }
    if (j->problem) {
        keel_respond_problem(r, j->status, j->problem);
        return;
    }
    if (j->status == 204) {
        keel_respond(r, 204, NULL, NULL, 0);
        return;
    }
    keel_res_set_header(r, "Cache-Control", "no-store");
    keel_respond_json(r, j->status ? j->status : 200, json_incref(j->out));
}

static void copy_param(keel_req *r, const char *name, char *out, size_t cap)
{
    keel_str v = keel_req_param(r, name);
    snprintf(out, cap, "%.*s", (int)v.len, v.ptr);
}

/* ---------------------------------------------------------------- rules */

static json_t *rule_row_json(const keel_db_rows *rows)
{
    keel_str spec = keel_db_get_text(rows, 0);
    json_t *j = json_loadb(spec.ptr, spec.len, 0, NULL);
    keel_alert_rule r;
    char err[160];
    const char *ptr;
    if (!j || keel_alert_rule_from_json(j, &r, err, sizeof(err), &ptr) < 0) {
        json_decref(j);
        return NULL;
    }
    json_decref(j);
    r.builtin = keel_db_get_bool(rows, 1);
    return keel_alert_rule_to_json(&r);
}

static int fetch_rule(keel_db_conn *c, const char *id, json_t **out)
{
    *out = NULL;
    keel_db_param p[] = {KEEL_DB_P_TEXT(id)};
    keel_db_rows *rows;
    int rc = keel_db_query(c, "SELECT spec, builtin FROM alert_rules WHERE id = $1", p, 1, &rows);
    if (rc < 0)
        return rc;
    if ((rc = keel_db_rows_next(rows)) == 1)
        *out = rule_row_json(rows);
    keel_db_rows_free(rows);
    return rc < 0 ? rc : 0;
}

static int db_rules_list(keel_db_conn *c, void *arg)
{
    api_job *j = arg;
    int rc = alerts_seed(c);
    if (rc < 0)
        return rc;
    keel_db_rows *rows;
    rc = keel_db_query(c, "SELECT spec, builtin FROM alert_rules ORDER BY builtin DESC, id "
                          "LIMIT 1000",
                       NULL, 0, &rows);
    if (rc < 0)
        return rc;
    json_t *data = json_array();
    while ((rc = keel_db_rows_next(rows)) == 1) {
        json_t *o = rule_row_json(rows);
        if (o)
            json_array_append_new(data, o);
    }
    keel_db_rows_free(rows);
    j->out = json_pack("{s:o}", "rules", data);
    return rc < 0 ? rc : 0;
}

static keel_flow h_rules_list(keel_req *r)
{
    return keel_db_job_run(r, alerts_db(), db_rules_list, done, job_new(r));
}

/* The built-in rules seeded, then rule j->id read into *out: 1 when it
 * exists, 0 (and a 404 in j) when not, < 0 on a database error. */
static int load_rule(keel_db_conn *c, api_job *j, json_t **out)
{
    int rc = alerts_seed(c);
    if (rc < 0 || (rc = fetch_rule(c, j->id, out)) < 0)
        return rc;
    if (!*out) {
        j->status = 404;
        j->problem = "no such alert rule";
        return 0;
    }
    return 1;
}

static int db_rule_get(keel_db_conn *c, void *arg)
{
    api_job *j = arg;
    int rc = load_rule(c, j, &j->out);
    return rc < 0 ? rc : 0;
}

static keel_flow h_rule_get(keel_req *r)
{
    api_job *j = job_new(r);
    copy_param(r, "id", j->id, sizeof(j->id));
    return keel_db_job_run(r, alerts_db(), db_rule_get, done, j);
}

static char *spec_text(const keel_alert_rule *r)
{
    json_t *o = keel_alert_rule_to_json(r);
    json_object_del(o, "builtin");
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return s;
}

/* Reads the body into j->r; answers 422 and returns -1 when it is not a rule. */
static int read_rule(keel_req *r, api_job *j, const char *path_id)
{
    json_t *body = app_json_body(r);
    if (!body)
        return -1;
    char err[200];
    const char *ptr = "";
    if (keel_alert_rule_from_json(body, &j->r, err, sizeof(err), &ptr) < 0) {
        app_invalid(r, ptr, err);
        return -1;
    }
    if (path_id) {
        if (j->r.id[0] && strcmp(j->r.id, path_id)) {
            app_invalid(r, "/id", "must be the id in the path (or left out)");
            return -1;
        }
        snprintf(j->r.id, sizeof(j->r.id), "%s", path_id);
    } else if (!j->r.id[0]) {
        char u[37];
        app_uuid(u);
        snprintf(j->r.id, sizeof(j->r.id), "%s", u);
    }
    return 0;
}

static int db_rule_create(keel_db_conn *c, void *arg)
{
    api_job *j = arg;
    int rc = alerts_seed(c);
    if (rc < 0)
        return rc;
    keel_db_rows *rows;
    if ((rc = keel_db_query(c, "SELECT COUNT(*) FROM alert_rules", NULL, 0, &rows)) < 0)
        return rc;
    int64_t count = keel_db_rows_next(rows) == 1 ? keel_db_get_int(rows, 0) : 0;
    keel_db_rows_free(rows);
    if (count >= ALERT_RULES_MAX) {
        j->status = 409;
        j->problem = "too many alert rules (at most 500): delete or reuse one";
        return 0;
    }
    char *spec = spec_text(&j->r);
    int64_t now = alerts_now_ms();
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->r.id), KEEL_DB_P_TEXT(j->r.name), KEEL_DB_P_TEXT(spec),
                         KEEL_DB_P_INT(now)};
    int64_t n = 0;
    rc = keel_db_exec(c,
                      "INSERT INTO alert_rules (id, name, spec, builtin, created_at, updated_at) "
                      "VALUES ($1, $2, $3, FALSE, $4, $4) ON CONFLICT (id) DO NOTHING",
                      p, 4, &n);
    free(spec);
    if (rc < 0)
        return rc;
    if (!n) {
        j->status = 409;
        j->problem = "an alert rule with this id exists";
        return 0;
    }
    j->out = keel_alert_rule_to_json(&j->r);
    j->status = 201;
    return 0;
}

static keel_flow h_rule_create(keel_req *r)
{
    api_job *j = job_new(r);
    if (read_rule(r, j, NULL) < 0)
        return KEEL_DONE;
    return keel_db_job_run_tx(r, alerts_db(), db_rule_create, done, j);
}

static int db_rule_put(keel_db_conn *c, void *arg)
{
    api_job *j = arg;
    json_decref(j->out);
    j->out = NULL;
    j->problem = NULL;
    json_t *before = NULL;
    int rc = load_rule(c, j, &before);
    if (rc <= 0)
        return rc;
    int builtin = json_is_true(json_object_get(before, "builtin"));
    if (builtin && strcmp(json_string_value(json_object_get(before, "kind")),
                          keel_alert_kind_name(j->r.kind))) {
        json_decref(before);
        j->status = 409;
        j->problem = "a built-in rule keeps its kind (disable it and add a rule of your own)";
        return 0;
    }
    json_decref(before);
    j->r.builtin = builtin;
    char *spec = spec_text(&j->r);
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->id), KEEL_DB_P_TEXT(j->r.name), KEEL_DB_P_TEXT(spec),
                         KEEL_DB_P_INT(alerts_now_ms())};
    rc = keel_db_exec(c, "UPDATE alert_rules SET name = $2, spec = $3, updated_at = $4 "
                         "WHERE id = $1",
                      p, 4, NULL);
    free(spec);
    if (rc < 0)
        return rc;
    j->out = keel_alert_rule_to_json(&j->r);
    j->status = 200;
    return 0;
}

static keel_flow h_rule_put(keel_req *r)
{
    api_job *j = job_new(r);
    copy_param(r, "id", j->id, sizeof(j->id));
    if (read_rule(r, j, j->id) < 0)
        return KEEL_DONE;
    return keel_db_job_run_tx(r, alerts_db(), db_rule_put, done, j);
}

static int db_rule_delete(keel_db_conn *c, void *arg)
{
    api_job *j = arg;
    j->problem = NULL;
    json_t *before = NULL;
    int rc = load_rule(c, j, &before);
    if (rc <= 0)
        return rc;
    int builtin = json_is_true(json_object_get(before, "builtin"));
    json_decref(before);
    if (builtin) {
        j->status = 409;
        j->problem = "a built-in rule cannot be deleted: set enabled to false";
        return 0;
    }
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->id), KEEL_DB_P_INT(alerts_now_ms())};
    if ((rc = keel_db_exec(c, "UPDATE alerts SET state = 'resolved', resolved_at = $2 "
                              "WHERE rule_id = $1 AND state IN ('pending', 'firing')",
                           p, 2, NULL)) < 0)
        return rc;
    if ((rc = keel_db_exec(c, "DELETE FROM alert_rules WHERE id = $1", p, 1, NULL)) < 0)
        return rc;
    j->status = 204;
    return 0;
}

static keel_flow h_rule_delete(keel_req *r)
{
    api_job *j = job_new(r);
    copy_param(r, "id", j->id, sizeof(j->id));
    return keel_db_job_run_tx(r, alerts_db(), db_rule_delete, done, j);
}

/* ---------------------------------------------------------------- alerts */

static int db_alerts_list(keel_db_conn *c, void *arg)
{
    api_job *j = arg;
    json_decref(j->out);
    j->out = NULL;
    json_t *active;
    int rc = alerts_load_active(c, &active);
    if (rc < 0)
        return rc;
    /* recent: resolved episodes, newest first, keyset pages on (started_at, id) */
    int64_t cs = INT64_MAX;
    char cid[64] = "~";
    if (j->cursor[0]) {
        char *colon = strchr(j->cursor, ':');
        cs = strtoll(j->cursor, NULL, 10);
        if (colon)
            snprintf(cid, sizeof(cid), "%s", colon + 1);
    }
    keel_db_param p[] = {KEEL_DB_P_INT(cs), KEEL_DB_P_TEXT(cid), KEEL_DB_P_INT(j->limit + 1)};
    keel_db_rows *rows;
    rc = keel_db_query(c,
                       "SELECT " ALERT_COLUMNS " FROM alerts WHERE state = 'resolved' AND "
                       "(started_at < $1 OR (started_at = $1 AND id < $2)) "
                       "ORDER BY started_at DESC, id DESC LIMIT $3",
                       p, 3, &rows);
    if (rc < 0) {
        json_decref(active);
        return rc;
    }
    json_t *recent = json_array();
    char next[96] = "";
    int64_t n = 0, last_started = 0;
    char last_id[64] = "";
    while ((rc = keel_db_rows_next(rows)) == 1) {
        if (++n > j->limit) {
            snprintf(next, sizeof(next), "%lld:%s", (long long)last_started, last_id);
            break;
        }
        last_started = keel_db_get_int(rows, 6);
        keel_str id = keel_db_get_text(rows, 0);
        snprintf(last_id, sizeof(last_id), "%.*s", (int)id.len, id.ptr);
        json_array_append_new(recent, alerts_row_json(rows));
    }
    keel_db_rows_free(rows);
    j->out = json_pack("{s:o,s:o,s:o}", "active", active, "recent", recent, "next_cursor",
                       next[0] ? json_string(next) : json_null());
    return rc < 0 ? rc : 0;
}

static keel_flow h_alerts_list(keel_req *r)
{
    api_job *j = job_new(r);
    json_t *q = keel_req_query_json(r);
    j->limit = json_integer_value(json_object_get(q, "limit"));
    if (j->limit <= 0)
        j->limit = 50;
    const char *cur = json_string_value(json_object_get(q, "cursor"));
    if (cur)
        snprintf(j->cursor, sizeof(j->cursor), "%s", cur);
    return keel_db_job_run(r, alerts_db(), db_alerts_list, done, j);
}

static int db_metrics_alerts(keel_db_conn *c, void *arg)
{
    api_job *j = arg;
    json_t *active;
    int rc = alerts_load_active(c, &active);
    if (rc < 0)
        return rc;
    j->out = json_pack("{s:o}", "alerts", active);
    return 0;
}

static keel_flow h_metrics_alerts(keel_req *r)
{
    return keel_db_job_run(r, alerts_db(), db_metrics_alerts, done, job_new(r));
}

/* ack (status 0) or resolve (status 1), in j->status on the way in */
static int db_alert_change(keel_db_conn *c, void *arg)
{
    api_job *j = arg;
    int resolve = j->r.enabled; /* set by the handler */
    json_decref(j->out);
    json_decref(j->rule);
    j->out = j->rule = NULL;
    j->problem = NULL;
    int64_t now = alerts_now_ms(), affected = 0;
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->id), KEEL_DB_P_INT(now), KEEL_DB_P_TEXT(j->actor)};
    int rc = resolve ? keel_db_exec(c,
                                    "UPDATE alerts SET state = 'resolved', resolved_at = $2 "
                                    "WHERE id = $1 AND state IN ('pending', 'firing')",
                                    p, 2, &affected)
                     : keel_db_exec(c,
                                    "UPDATE alerts SET acknowledged_at = $2, acknowledged_by = $3 "
                                    "WHERE id = $1 AND state IN ('pending', 'firing') AND "
                                    "acknowledged_at IS NULL",
                                    p, 3, &affected);
    if (rc < 0)
        return rc;
    keel_db_rows *rows;
    if ((rc = keel_db_query(c, "SELECT " ALERT_COLUMNS " FROM alerts WHERE id = $1", p, 1,
                            &rows)) < 0)
        return rc;
    if ((rc = keel_db_rows_next(rows)) == 1)
        j->out = alerts_row_json(rows);
    keel_db_rows_free(rows);
    if (rc < 0)
        return rc;
    if (!j->out) {
        j->status = 404;
        j->problem = "no such alert";
        return 0;
    }
    if (!affected) {
        const char *state = json_string_value(json_object_get(j->out, "state"));
        if (!strcmp(state, "resolved")) {
            j->status = 409;
            j->problem = "the alert is resolved already";
            return 0;
        }
        /* acknowledged before: the same answer again (idempotent) */
    }
    j->status = 200;
    if (resolve && affected) {
        const char *rid = json_string_value(json_object_get(j->out, "rule_id"));
        if ((rc = fetch_rule(c, rid, &j->rule)) < 0)
            return rc;
    }
    return 0;
}

static void changed(keel_req *r, void *arg, int status)
{
    api_job *j = arg;
    if (status == 0 && !j->problem && j->rule)
        alerts_notify_manual_resolve(keel_req_worker(r), j->out, j->rule);
    done(r, arg, status);
}

static keel_flow alert_change(keel_req *r, int resolve)
{
    api_job *j = job_new(r);
    copy_param(r, "id", j->id, sizeof(j->id));
    j->r.enabled = resolve;
    app_actor a;
    app_actor_of(r, &a);
    snprintf(j->actor, sizeof(j->actor), "%s:%s", a.kind, a.id);
    return keel_db_job_run_tx(r, alerts_db(), db_alert_change, changed, j);
}

static keel_flow h_ack(keel_req *r)
{
    return alert_change(r, 0);
}

static keel_flow h_resolve(keel_req *r)
{
    return alert_change(r, 1);
}

/* ---------------------------------------------------------------- routes */

#define RULE_ID_SCHEMA                                                                     \
    "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\",\"minLength\":1,"  \
    "\"maxLength\":63,\"pattern\":\"^[A-Za-z0-9_.-]+$\"}}}"
#define ALERT_ID_SCHEMA                                                                    \
    "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\",\"pattern\":"      \
    "\"^[0-9a-f-]{36}$\"}}}"

static const keel_route alert_routes[] = {
    {.name = "admin.alerts.rules.list", .method = "GET", .path = "/api/v1/admin/alerts/rules",
     .handler = h_rules_list, .summary = "Every alert rule, the built-in ones first",
     .auth = "any", .permission = "admin:access"},
    {.name = "admin.alerts.rules.create", .method = "POST",
     .path = "/api/v1/admin/alerts/rules", .handler = h_rule_create,
     .summary = "Adds an alert rule (201; 409 when the id is taken; 422 names the faulty field)",
     .auth = "any", .permission = "admin:access"},
    {.name = "admin.alerts.rules.get", .method = "GET", .path = "/api/v1/admin/alerts/rules/:id",
     .handler = h_rule_get, .summary = "One alert rule", .auth = "any",
     .permission = "admin:access", .params_schema = RULE_ID_SCHEMA},
    {.name = "admin.alerts.rules.put", .method = "PUT", .path = "/api/v1/admin/alerts/rules/:id",
     .handler = h_rule_put,
     .summary = "Replaces an alert rule (a built-in rule keeps its kind; its window restarts)",
     .auth = "any", .permission = "admin:access", .params_schema = RULE_ID_SCHEMA},
    {.name = "admin.alerts.rules.delete", .method = "DELETE",
     .path = "/api/v1/admin/alerts/rules/:id", .handler = h_rule_delete,
     .summary = "Deletes an alert rule and resolves its open alerts (built-in: 409, disable it)",
     .auth = "any", .permission = "admin:access", .params_schema = RULE_ID_SCHEMA},
    {.name = "admin.alerts.list", .method = "GET", .path = "/api/v1/admin/alerts",
     .handler = h_alerts_list,
     .summary = "Active alerts, and resolved ones newest first in pages (next_cursor)",
     .auth = "any", .permission = "admin:access",
     .query_schema = "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
                     "\"limit\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":200},"
                     "\"cursor\":{\"type\":\"string\",\"maxLength\":90,"
                     "\"pattern\":\"^[0-9]+:[0-9a-f-]{36}$\"}}}"},
    {.name = "admin.alerts.ack", .method = "POST", .path = "/api/v1/admin/alerts/:id/ack",
     .handler = h_ack,
     .summary = "Acknowledges an active alert (no more repeat notifications)", .auth = "any",
     .permission = "admin:access", .params_schema = ALERT_ID_SCHEMA},
    {.name = "admin.alerts.resolve", .method = "POST",
     .path = "/api/v1/admin/alerts/:id/resolve", .handler = h_resolve,
     .summary = "Resolves an active alert by hand (409 when resolved already)", .auth = "any",
     .permission = "admin:access", .params_schema = ALERT_ID_SCHEMA},
    {.name = "metrics.alerts", .method = "GET", .path = "/metrics/alerts",
     .handler = h_metrics_alerts, .summary = "Active alerts as JSON",
     .flags = KEEL_ROUTE_INTERNAL},
};

/* Added whether or not the database is open yet: `keel routes` and
 * `keel openapi` list them without one (serving always has it). */
int alerts_api_setup(keel_service *svc)
{
    return keel_service_add_routes(svc, alert_routes,
                                   sizeof(alert_routes) / sizeof(alert_routes[0]));
}
