/* event_assignments.c — /api/v1/events/:id/assignments: who works on an
 * event (owner, assignee, reviewer, viewer), delegation with an expiry,
 * revocation; and the relationship every event check starts from
 * (app_ev_relation). See docs/events.md.
 *
 * The owner and admins assign; an assignee delegates (an assignment with
 * delegated_from and a required expiry); the owner, admins, the delegator
 * and the assignee end one, and ending it ends the delegations made from
 * it. Every change is audited in its transaction. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "app/app.h"
#include "app/events_internal.h"

/* The caller's relationship to the event (owner or an active assignment). */
int app_ev_relation(keel_db_conn *c, const app_actor *a, const char *event_id,
                    const char *owner_id, app_ev_rel *out)
{
    *out = APP_EV_NONE;
    if (!app_ev_is_user(a))
        return 0;
    if (owner_id && !strcmp(owner_id, a->id)) {
        *out = APP_EV_OWNER;
        return 0;
    }
    keel_db_param p[] = {KEEL_DB_P_TEXT(event_id), KEEL_DB_P_TEXT(a->id),
                         KEEL_DB_P_INT(app_now())};
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           "SELECT role FROM event_assignments WHERE event_id = $1 AND "
                           "user_id = $2 AND revoked_at IS NULL AND (expires_at IS NULL OR "
                           "expires_at > $3)",
                           p, 3, &rows);
    if (rc < 0)
        return rc;
    while ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str role = keel_db_get_text(rows, 0);
        app_ev_rel r = keel_str_eq(role, keel_str_c("owner"))      ? APP_EV_OWNER
                     : keel_str_eq(role, keel_str_c("assignee")) ? APP_EV_ASSIGNEE
                     : keel_str_eq(role, keel_str_c("reviewer")) ? APP_EV_REVIEWER
                                                                 : APP_EV_VIEWER;
        if (r > *out)
            *out = r;
    }
    keel_db_rows_free(rows);
    return rc < 0 ? rc : 0;
}

/* ---------------------------------------------------------------- assignments */

typedef struct assign_job {
    app_ev_job e;
    char user_id[64], role[16], aid[64];
    int64_t expires_at;
    int has_expiry;
} assign_job;

static json_t *assignment_json(const keel_db_rows *rows)
{
    return json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "id", app_ev_text(rows, 0), "user_id",
                     app_ev_text(rows, 1), "role", app_ev_text(rows, 2), "delegated_from",
                     app_ev_text(rows, 3), "expires_at", app_ev_time(rows, 4), "revoked_at",
                     app_ev_time(rows, 5), "created_by", app_ev_text(rows, 6), "created_at",
                     app_ev_time(rows, 7));
}

#define AS_COLUMNS                                                                               \
    "id, user_id, role, delegated_from, expires_at, revoked_at, created_by, created_at"

static int db_assignments(keel_db_conn *c, void *arg)
{
    app_ev_job *j = arg;
    int rc = app_ev_load(c, j);
    if (rc < 0)
        return rc;
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->id)};
    keel_db_rows *rows;
    if ((rc = keel_db_query(c, "SELECT " AS_COLUMNS " FROM event_assignments WHERE event_id = $1 "
                               "ORDER BY created_at, id",
                            p, 1, &rows)) < 0)
        return rc;
    json_t *data;
    if ((rc = app_ev_rows_array(rows, assignment_json, &data)) < 0)
        return rc;
    j->out = json_pack("{s:o}", "data", data);
    return 0;
}

static keel_flow h_assignments(keel_req *r)
{
    app_ev_job *j = app_ev_job_new(r, sizeof(app_ev_job));
    return keel_db_job_run(r, app_ev_db, db_assignments, app_ev_done, j);
}

static int db_assign(keel_db_conn *c, void *arg)
{
    assign_job *j = arg;
    int rc = app_ev_load(c, &j->e);
    if (rc < 0)
        return rc;
    if (j->e.held)
        return app_ev_refuse(&j->e, 423, "the event or one of its parents is under legal hold");
    /* the owner and admins assign; an assignee delegates (with an expiry) */
    int delegation = !j->e.who.admin && j->e.rel != APP_EV_OWNER;
    if (delegation && j->e.rel != APP_EV_ASSIGNEE)
        return app_ev_refuse(&j->e, 403, "only the owner or an administrator assigns; an assignee may "
                                  "delegate");
    if (delegation && !j->has_expiry)
        return app_ev_refuse(&j->e, 422, "a delegation needs expires_at");
    if (j->has_expiry && j->expires_at <= app_now())
        return app_ev_refuse(&j->e, 422, "expires_at must be in the future");
    json_t *user = NULL;
    rc = app_fetch_user(c, j->user_id, 0, &user);
    json_decref(user);
    if (rc == KEEL_EDB_NOROW)
        return app_ev_refuse(&j->e, 422, "no user with this id");
    if (rc < 0)
        return rc;
    char id[37];
    app_uuid(id);
    int64_t now = app_now();
    keel_db_param p[] = {KEEL_DB_P_TEXT(id),
                         KEEL_DB_P_TEXT(j->e.id),
                         KEEL_DB_P_TEXT(j->user_id),
                         KEEL_DB_P_TEXT(j->role),
                         delegation ? KEEL_DB_P_TEXT(j->e.who.id) : KEEL_DB_P_NULL(),
                         j->has_expiry ? KEEL_DB_P_INT(j->expires_at) : KEEL_DB_P_NULL(),
                         KEEL_DB_P_TEXT(j->e.who.id),
                         KEEL_DB_P_INT(now)};
    if ((rc = keel_db_exec(c,
                           "INSERT INTO event_assignments (id, event_id, user_id, role, "
                           "delegated_from, expires_at, created_by, created_at) VALUES ($1, $2, "
                           "$3, $4, $5, $6, $7, $8)",
                           p, 8, NULL)) < 0)
        return rc;
    keel_db_param q[] = {KEEL_DB_P_TEXT(id)};
    keel_db_rows *rows;
    if ((rc = keel_db_query(c, "SELECT " AS_COLUMNS " FROM event_assignments WHERE id = $1", q, 1,
                            &rows)) < 0)
        return rc;
    if (keel_db_rows_next(rows) == 1)
        j->e.out = assignment_json(rows);
    keel_db_rows_free(rows);
    json_t *diff = json_pack("{s:{s:O}}", "assignment", "to", j->e.out);
    rc = app_audit_append(c, &j->e.who, delegation ? "event.delegate" : "event.assign", "event",
                          j->e.id, diff);
    json_decref(diff);
    j->e.status = 201;
    return rc;
}

static keel_flow h_assign(keel_req *r)
{
    json_t *body = app_json_body(r);
    if (!body)
        return KEEL_DONE;
    assign_job *j = app_ev_job_new(r, sizeof(assign_job));
    snprintf(j->user_id, sizeof(j->user_id), "%s",
             json_string_value(json_object_get(body, "user_id")));
    const char *role = json_string_value(json_object_get(body, "role"));
    snprintf(j->role, sizeof(j->role), "%s", role ? role : "assignee");
    json_t *exp = json_object_get(body, "expires_at");
    if (exp) {
        if (app_parse_time(json_string_value(exp), json_string_length(exp), &j->expires_at) < 0) {
            app_invalid(r, "/expires_at", "must be an RFC 3339 date-time");
            return KEEL_DONE;
        }
        j->has_expiry = 1;
    }
    return keel_db_job_run_tx(r, app_ev_db, db_assign, app_ev_done, j);
}

static int db_unassign(keel_db_conn *c, void *arg)
{
    assign_job *j = arg;
    int rc = app_ev_load(c, &j->e);
    if (rc < 0)
        return rc;
    if (j->e.held)
        return app_ev_refuse(&j->e, 423, "the event or one of its parents is under legal hold");
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->aid), KEEL_DB_P_TEXT(j->e.id)};
    keel_db_rows *rows;
    if ((rc = keel_db_query(c, "SELECT " AS_COLUMNS " FROM event_assignments WHERE id = $1 AND "
                               "event_id = $2 AND revoked_at IS NULL",
                            p, 2, &rows)) < 0)
        return rc;
    json_t *before = keel_db_rows_next(rows) == 1 ? assignment_json(rows) : NULL;
    keel_db_rows_free(rows);
    if (!before)
        return app_ev_refuse(&j->e, 404, "no active assignment with this id on this event");
    const char *user = json_string_value(json_object_get(before, "user_id")),
               *from = json_string_value(json_object_get(before, "delegated_from"));
    /* the owner and admins revoke any; a delegator their delegations; anyone their own */
    if (!j->e.who.admin && j->e.rel != APP_EV_OWNER && strcmp(user, j->e.who.id) &&
        !(from && !strcmp(from, j->e.who.id))) {
        json_decref(before);
        return app_ev_refuse(&j->e, 403, "only the owner, an administrator, the delegator or the "
                                  "assignee may end an assignment");
    }
    /* it ends, with the delegations made from it */
    keel_db_param q[] = {KEEL_DB_P_INT(app_now()), KEEL_DB_P_TEXT(j->aid),
                         KEEL_DB_P_TEXT(j->e.id), KEEL_DB_P_TEXT(user)};
    rc = keel_db_exec(c,
                      "UPDATE event_assignments SET revoked_at = $1 WHERE revoked_at IS NULL AND "
                      "(id = $2 OR (event_id = $3 AND delegated_from = $4))",
                      q, 4, NULL);
    json_t *diff = json_pack("{s:{s:o}}", "assignment", "from", before);
    if (rc == 0)
        rc = app_audit_append(c, &j->e.who, "event.unassign", "event", j->e.id, diff);
    json_decref(diff);
    return rc;
}

static keel_flow h_unassign(keel_req *r)
{
    assign_job *j = app_ev_job_new(r, sizeof(assign_job));
    keel_str aid = keel_req_param(r, "aid");
    snprintf(j->aid, sizeof(j->aid), "%.*s", (int)(aid.len < 63 ? aid.len : 63), aid.ptr);
    return keel_db_job_run_tx(r, app_ev_db, db_unassign, app_ev_done, j);
}

/* ---------------------------------------------------------------- routes */

#define S_TIME "{\"type\":\"string\",\"format\":\"date-time\"}"
#define S_ID "{\"type\":\"string\",\"maxLength\":63}"

static const keel_route assignment_routes[] = {
    {.name = "events.assignments", .method = "GET", .path = "/api/v1/events/:id/assignments",
     .handler = h_assignments, .summary = "Assignments and delegations of an event",
     .auth = "any", .permission = "events:read"},
    {.name = "events.assign", .method = "POST", .path = "/api/v1/events/:id/assignments",
     .handler = h_assign,
     .summary = "Assign a user (owner, admin) or delegate with an expiry (an assignee)",
     .auth = "any", .permission = "events:write",
     .request_schema = "{\"type\":\"object\",\"additionalProperties\":false,\"required\":"
                       "[\"user_id\"],\"properties\":{\"user_id\":" S_ID ",\"role\":{\"type\":"
                       "\"string\",\"enum\":[\"assignee\",\"reviewer\",\"viewer\"]},"
                       "\"expires_at\":" S_TIME "}}"},
    {.name = "events.unassign", .method = "DELETE",
     .path = "/api/v1/events/:id/assignments/:aid", .handler = h_unassign,
     .summary = "End an assignment or a delegation (and the delegations made from it)",
     .auth = "any", .permission = "events:write"},
};

int app_event_assignments_setup(keel_service *svc)
{
    return keel_service_add_routes(svc, assignment_routes,
                                   sizeof(assignment_routes) / sizeof(assignment_routes[0]));
}
