/* event_approvals.c — approval before `scheduled`, for the event types
 * that require it (event_types.requires_approval, approval_steps).
 *
 *   POST /api/v1/events/:id/approval          submit (owner, assignee, admin;
 *                                             the event in draft)
 *   POST /api/v1/events/:id/approval/decision {decision: approve|reject,
 *                                             reason} by an approver of
 *                                             the current step
 *   GET  /api/v1/events/:id/approval          the latest request, its steps
 *                                             and decisions
 *
 * A step is {role: moderator|admin, users: [ids], mode: any|all}: its
 * approvers are the users of that role or above, and the named users.
 * `any`: one approval passes the step; `all`: every named user must
 * approve (a role-only step passes on one approval). One rejection, with
 * its reason, rejects the request. When the last step passes the request
 * is approved, and only then may the event move from draft to scheduled
 * (app_ev_approval_gate, called by the transition in its transaction).
 * A type without steps but requiring approval has one step: any admin.
 * Submitting, approving and rejecting are audited; the submitter learns
 * the outcome from GET, a log line, and a notification (type
 * event.approval: in-app, and e-mail / push per their preferences).
 * A step may carry a deadline ("deadline": "2h"): the escalation sweep
 * (app_events_run_escalation: the job "events.escalation", scheduled by
 * EVENTS_ESCALATION_SCHEDULE, or POST /api/v1/admin/events/escalation and
 * `keel events escalate` by hand) hands a
 * step pending past it to the admins (role admin, its named users kept),
 * once, audited as event.escalate. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "app/events_internal.h"

#define AP_COLUMNS "id, state, step, steps, submitted_by, reason, created_at, decided_at"

/* The type's approval rule: *required, and *steps (new reference). */
static int type_rule(keel_db_conn *c, const char *type, int *required, json_t **steps)
{
    *required = 0;
    *steps = NULL;
    keel_db_param p[] = {KEEL_DB_P_TEXT(type)};
    keel_db_rows *rows;
    int rc = keel_db_query(c, "SELECT requires_approval, approval_steps FROM event_types WHERE "
                              "name = $1",
                           p, 1, &rows);
    if (rc < 0)
        return rc;
    if ((rc = keel_db_rows_next(rows)) == 1) {
        *required = keel_db_get_bool(rows, 0);
        keel_str s = keel_db_get_text(rows, 1);
        *steps = s.ptr ? json_loadb(s.ptr, s.len, 0, NULL) : NULL;
    }
    keel_db_rows_free(rows);
    if (!json_array_size(*steps)) {
        json_decref(*steps);
        *steps = json_pack("[{s:s,s:s}]", "role", "admin", "mode", "any");
    }
    return rc < 0 ? rc : 0;
}

/* The latest request of the event (*out, new reference, or NULL). */
static int latest(keel_db_conn *c, const char *event_id, json_t **out)
{
    *out = NULL;
    keel_db_param p[] = {KEEL_DB_P_TEXT(event_id)};
    keel_db_rows *rows;
    int rc = keel_db_query(c, "SELECT " AP_COLUMNS " FROM event_approvals WHERE event_id = $1 "
                              "ORDER BY created_at DESC, id DESC LIMIT 1",
                           p, 1, &rows);
    if (rc < 0)
        return rc;
    if ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str st = keel_db_get_text(rows, 3);
        json_t *steps = json_loadb(st.ptr ? st.ptr : "[]", st.len, 0, NULL);
        *out = json_pack("{s:o,s:o,s:I,s:o,s:o,s:o,s:o,s:o}", "id", app_ev_text(rows, 0),
                         "state", app_ev_text(rows, 1), "step",
                         (json_int_t)keel_db_get_int(rows, 2), "steps",
                         steps ? steps : json_array(), "submitted_by", app_ev_text(rows, 4),
                         "reason", app_ev_text(rows, 5), "created_at", app_ev_time(rows, 6),
                         "decided_at", app_ev_time(rows, 7));
    }
    keel_db_rows_free(rows);
    if (rc < 0 || !*out)
        return rc < 0 ? rc : 0;
    /* its decisions */
    keel_db_param q[] = {KEEL_DB_P_TEXT(json_string_value(json_object_get(*out, "id")))};
    if ((rc = keel_db_query(c, "SELECT step, user_id, decision, reason, created_at FROM "
                               "event_approval_decisions WHERE approval_id = $1 ORDER BY "
                               "created_at, step, user_id",
                            q, 1, &rows)) < 0)
        return rc;
    json_t *ds = json_array();
    while ((rc = keel_db_rows_next(rows)) == 1)
        json_array_append_new(ds, json_pack("{s:I,s:o,s:o,s:o,s:o}", "step",
                                            (json_int_t)keel_db_get_int(rows, 0), "user_id",
                                            app_ev_text(rows, 1), "decision",
                                            app_ev_text(rows, 2), "reason", app_ev_text(rows, 3),
                                            "at", app_ev_time(rows, 4)));
    keel_db_rows_free(rows);
    json_object_set_new(*out, "decisions", ds);
    return rc < 0 ? rc : 0;
}

int app_ev_approval_gate(keel_db_conn *c, app_ev_job *j)
{
    int required;
    json_t *steps, *req = NULL;
    int rc = type_rule(c, json_string_value(json_object_get(j->before, "type")), &required,
                       &steps);
    json_decref(steps);
    if (rc < 0 || !required)
        return rc;
    if ((rc = latest(c, j->id, &req)) < 0)
        return rc;
    char state[16] = "";
    if (req)
        snprintf(state, sizeof(state), "%s", json_string_value(json_object_get(req, "state")));
    json_decref(req);
    if (!strcmp(state, "approved"))
        return 0;
    return app_ev_refuse(j, 409, "events of type %s need an approved request before scheduled "
                                 "(POST /api/v1/events/:id/approval); this one is %s",
                         json_string_value(json_object_get(j->before, "type")),
                         *state ? state : "not submitted");
}

/* ---------------------------------------------------------------- submit */

static int db_submit(keel_db_conn *c, void *arg)
{
    app_ev_job *j = arg;
    int rc = app_ev_load(c, j);
    if (rc < 0 || (rc = app_ev_check_change(j, 0)) < 0)
        return rc;
    if (strcmp(json_string_value(json_object_get(j->before, "state")), "draft"))
        return app_ev_refuse(j, 409, "only a draft is submitted for approval");
    int required;
    json_t *steps, *prev = NULL;
    if ((rc = type_rule(c, json_string_value(json_object_get(j->before, "type")), &required,
                        &steps)) < 0)
        return rc;
    if (!required) {
        json_decref(steps);
        return app_ev_refuse(j, 409, "events of this type need no approval");
    }
    if ((rc = latest(c, j->id, &prev)) < 0) {
        json_decref(steps);
        return rc;
    }
    char pst[16] = "";
    if (prev)
        snprintf(pst, sizeof(pst), "%s", json_string_value(json_object_get(prev, "state")));
    int busy = !strcmp(pst, "pending") || !strcmp(pst, "approved");
    json_decref(prev);
    if (busy) {
        json_decref(steps);
        return app_ev_refuse(j, 409, "the event already has a %s request", pst);
    }
    char id[37];
    app_uuid(id);
    char *text = json_dumps(steps, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(steps);
    keel_db_param p[] = {KEEL_DB_P_TEXT(id), KEEL_DB_P_TEXT(j->id), KEEL_DB_P_TEXT(text),
                         KEEL_DB_P_TEXT(j->who.id), KEEL_DB_P_INT(app_now())};
    rc = keel_db_exec(c,
                      "INSERT INTO event_approvals (id, event_id, state, step, steps, "
                      "submitted_by, created_at, step_started_at) VALUES ($1, $2, 'pending', 0, "
                      "$3, $4, $5, $5)",
                      p, 5, NULL);
    free(text);
    if (rc < 0 || (rc = latest(c, j->id, &j->out)) < 0)
        return rc;
    json_t *diff = json_pack("{s:{s:s}}", "approval", "to", "pending");
    rc = app_audit_append(c, &j->who, "event.submit", "event", j->id, diff);
    json_decref(diff);
    j->status = 201;
    return rc;
}

static keel_flow h_submit(keel_req *r)
{
    app_ev_job *j = app_ev_job_new(r, sizeof(app_ev_job));
    return keel_db_job_run_tx(r, app_ev_db, db_submit, app_ev_done, j);
}

/* ---------------------------------------------------------------- decide */

typedef struct decide_job {
    app_ev_job e;
    int approve;
    char reason[1024];
} decide_job;

/* Whether the caller approves for this step. */
static int approver(const app_actor *a, const json_t *step)
{
    if (strcmp(a->kind, "user"))
        return 0;
    size_t i;
    json_t *u;
    json_array_foreach(json_object_get(step, "users"), i, u)
        if (!strcmp(json_string_value(u), a->id))
            return 1;
    const char *role = json_string_value(json_object_get(step, "role"));
    return role && keel_role_rank(a->role) >= keel_role_rank(role);
}

/* The submitter hears of the outcome (src/app/notifications.c: in-app,
 * and e-mail / push per their preferences), in the decision's transaction,
 * once per request and outcome. A submitter deleted since is no one to
 * tell. */
static int notify_submitter(keel_db_conn *c, decide_job *j, const char *rid, const char *sub,
                            const char *state)
{
    if (!sub || !*sub || !*rid)
        return 0;
    const char *title = json_string_value(json_object_get(j->e.before, "title"));
    int ok = !strcmp(state, "approved");
    char head[300], body[1400], key[128];
    snprintf(head, sizeof(head), "%s: %s", ok ? "Approved" : "Rejected", title ? title : "event");
    if (ok)
        snprintf(body, sizeof(body), "Your approval request for \"%s\" was approved: it may be "
                 "scheduled now.", title ? title : "the event");
    else
        snprintf(body, sizeof(body), "Your approval request for \"%s\" was rejected: %s",
                 title ? title : "the event", j->reason);
    snprintf(key, sizeof(key), "approval:%s:%s", rid, state);
    json_t *data = json_pack("{s:s,s:s,s:s,s:s,s:s}", "title", head, "body", body, "event_id",
                             j->e.id, "approval_id", rid, "state", state);
    int rc = app_notify(c, sub, "event.approval", data, key);
    json_decref(data);
    return rc == KEEL_EDB_NOROW ? 0 : rc;
}

static int db_decide(keel_db_conn *c, void *arg)
{
    decide_job *j = arg;
    int rc = app_ev_load(c, &j->e);
    if (rc < 0)
        return rc;
    json_t *req = NULL;
    if ((rc = latest(c, j->e.id, &req)) < 0)
        return rc;
    if (!req || strcmp(json_string_value(json_object_get(req, "state")), "pending")) {
        json_decref(req);
        return app_ev_refuse(&j->e, 409, "the event has no pending approval request");
    }
    json_int_t stepno = json_integer_value(json_object_get(req, "step"));
    json_t *steps = json_object_get(req, "steps"), *step = json_array_get(steps, (size_t)stepno);
    char rid[64]; /* copied: req is released before the notification */
    snprintf(rid, sizeof(rid), "%s", json_string_value(json_object_get(req, "id")) ?
                                         json_string_value(json_object_get(req, "id")) : "");
    if (!approver(&j->e.who, step)) {
        json_decref(req);
        return app_ev_refuse(&j->e, 403, "you are not an approver of step %lld",
                             (long long)stepno + 1);
    }
    int64_t now = app_now();
    keel_db_param p[] = {KEEL_DB_P_TEXT(rid), KEEL_DB_P_INT(stepno), KEEL_DB_P_TEXT(j->e.who.id),
                         KEEL_DB_P_TEXT(j->approve ? "approve" : "reject"),
                         KEEL_DB_P_TEXT(j->reason), KEEL_DB_P_INT(now)};
    rc = keel_db_exec(c,
                      "INSERT INTO event_approval_decisions (approval_id, step, user_id, "
                      "decision, reason, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                      p, 6, NULL);
    if (rc == KEEL_EDB_CONSTRAINT) {
        json_decref(req);
        return app_ev_refuse(&j->e, 409, "you already decided this step");
    }
    /* the step passes on one approval, or on every named user's with all */
    int passes = 0;
    const char *state = "pending";
    if (rc == 0 && !j->approve) {
        state = "rejected";
    } else if (rc == 0) {
        json_t *users = json_object_get(step, "users");
        const char *mode = json_string_value(json_object_get(step, "mode"));
        if (!mode || strcmp(mode, "all") || !json_array_size(users)) {
            passes = 1;
        } else {
            keel_db_rows *rows;
            if ((rc = keel_db_query(c, "SELECT user_id FROM event_approval_decisions WHERE "
                                       "approval_id = $1 AND step = $2 AND decision = 'approve'",
                                    p, 2, &rows)) == 0) {
                size_t have = 0, i;
                json_t *u;
                json_t *seen = json_object();
                while (keel_db_rows_next(rows) == 1) {
                    keel_str s = keel_db_get_text(rows, 0);
                    json_object_setn_new(seen, s.ptr, s.len, json_true());
                }
                keel_db_rows_free(rows);
                json_array_foreach(users, i, u)
                    have += json_object_get(seen, json_string_value(u)) != NULL;
                json_decref(seen);
                passes = have == json_array_size(users);
            }
        }
        if (passes && (size_t)stepno + 1 >= json_array_size(steps))
            state = "approved";
    }
    if (rc == 0) {
        keel_db_param u[] = {KEEL_DB_P_TEXT(state), KEEL_DB_P_INT(stepno + passes),
                             strcmp(state, "pending") ? KEEL_DB_P_INT(now) : KEEL_DB_P_NULL(),
                             j->approve ? KEEL_DB_P_NULL() : KEEL_DB_P_TEXT(j->reason),
                             KEEL_DB_P_TEXT(rid), KEEL_DB_P_INT(now)};
        rc = keel_db_exec(c,
                          "UPDATE event_approvals SET state = $1, step = $2, decided_at = $3, "
                          "reason = $4, step_started_at = CASE WHEN step = $2 THEN "
                          "step_started_at ELSE $6 END WHERE id = $5",
                          u, 6, NULL);
    }
    json_decref(req);
    if (rc < 0 || (rc = latest(c, j->e.id, &j->e.out)) < 0)
        return rc;
    const char *sub = json_string_value(json_object_get(j->e.out, "submitted_by"));
    /* the notification before the audit record: the audit append stays
     * last, holding its head row briefly (src/app/audit.c) */
    if (strcmp(state, "pending") && (rc = notify_submitter(c, j, rid, sub, state)) < 0)
        return rc;
    json_t *diff = json_pack("{s:{s:I},s:{s:s},s:{s:s}}", "step", "to", stepno + 1, "decision",
                             "to", j->approve ? "approve" : "reject", "approval", "to", state);
    rc = app_audit_append(c, &j->e.who, j->approve ? "event.approve" : "event.reject", "event",
                          j->e.id, diff);
    json_decref(diff);
    if (rc == 0 && strcmp(state, "pending"))
        keel_log(KEEL_LOG_INFO, "approval decided", "{s:s,s:s,s:s}", "event_id", j->e.id,
                 "state", state, "submitter", sub ? sub : "");
    return rc;
}

static keel_flow h_decide(keel_req *r)
{
    json_t *body = app_json_body(r);
    if (!body)
        return KEEL_DONE;
    decide_job *j = app_ev_job_new(r, sizeof(decide_job));
    j->approve = !strcmp(json_string_value(json_object_get(body, "decision")), "approve");
    const char *reason = json_string_value(json_object_get(body, "reason"));
    snprintf(j->reason, sizeof(j->reason), "%s", reason ? reason : "");
    if (!j->approve && !*j->reason) {
        app_invalid(r, "/reason", "is required to reject");
        return KEEL_DONE;
    }
    return keel_db_job_run_tx(r, app_ev_db, db_decide, app_ev_done, j);
}

static int db_get(keel_db_conn *c, void *arg)
{
    app_ev_job *j = arg;
    int rc = app_ev_load(c, j);
    if (rc < 0 || (rc = latest(c, j->id, &j->out)) < 0)
        return rc;
    return j->out ? 0 : app_ev_refuse(j, 404, "the event has no approval request");
}

static keel_flow h_get(keel_req *r)
{
    app_ev_job *j = app_ev_job_new(r, sizeof(app_ev_job));
    return keel_db_job_run(r, app_ev_db, db_get, app_ev_done, j);
}

/* ---------------------------------------------------------------- escalation */

typedef struct pending {
    char id[64], event_id[64];
    int64_t step;
    json_t *steps;
    int escalated;
} pending;

/* in one transaction: escalate one request's current step, if still due */
static int tx_escalate(keel_db_conn *c, void *arg)
{
    pending *pd = arg;
    json_t *steps = json_deep_copy(pd->steps), *step = json_array_get(steps, (size_t)pd->step);
    json_t *users = json_object_get(step, "users");
    json_t *raised = json_pack("{s:s,s:s,s:b,s:o}", "role", "admin", "mode", "any", "escalated",
                               1, "users", users ? json_incref(users) : json_array());
    json_t *old = json_incref(step);
    json_array_set_new(steps, (size_t)pd->step, raised);
    char *text = json_dumps(steps, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(steps);
    int64_t n = 0, now = app_now();
    keel_db_param p[] = {KEEL_DB_P_TEXT(text), KEEL_DB_P_INT(now), KEEL_DB_P_TEXT(pd->id),
                         KEEL_DB_P_INT(pd->step)};
    int rc = keel_db_exec(c,
                          "UPDATE event_approvals SET steps = $1, step_started_at = $2 WHERE "
                          "id = $3 AND step = $4 AND state = 'pending'",
                          p, 4, &n);
    free(text);
    if (rc == 0 && n == 1) {
        static const app_actor esc = {.kind = "system", .id = "escalation"};
        json_t *diff = json_pack("{s:{s:I},s:{s:o,s:s}}", "step", "to", (json_int_t)pd->step + 1,
                                 "approvers", "from", old, "to", "admins");
        old = NULL;
        rc = app_audit_append(c, &esc, "event.escalate", "event", pd->event_id, diff);
        json_decref(diff);
        keel_log(KEEL_LOG_WARN, "approval step escalated to admins", "{s:s,s:I}", "event_id",
                 pd->event_id, "step", (json_int_t)pd->step + 1);
    }
    json_decref(old);
    pd->escalated = rc == 0 && n == 1;
    return rc;
}

int app_events_run_escalation(keel_db_conn *c, int64_t now, json_t **report)
{
    keel_db_rows *rows;
    int rc = keel_db_query(c, "SELECT id, event_id, step, steps, step_started_at FROM "
                              "event_approvals WHERE state = 'pending' ORDER BY step_started_at "
                              "LIMIT 1000",
                           NULL, 0, &rows);
    if (rc < 0)
        return rc;
    size_t n = 0;
    pending *due = keel_malloc(1000 * sizeof(*due));
    while ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str st = keel_db_get_text(rows, 3);
        json_t *steps = json_loadb(st.ptr ? st.ptr : "[]", st.len, 0, NULL);
        int64_t stepno = keel_db_get_int(rows, 2), started = keel_db_get_int(rows, 4);
        json_t *step = json_array_get(steps, (size_t)stepno);
        const char *deadline = json_string_value(json_object_get(step, "deadline"));
        uint64_t ms;
        if (!deadline || json_is_true(json_object_get(step, "escalated")) ||
            keel_parse_duration_ms(deadline, &ms) < 0 ||
            started + (int64_t)(ms / 1000) > now) {
            json_decref(steps);
            continue;
        }
        pending *pd = &due[n++];
        keel_str id = keel_db_get_text(rows, 0), ev = keel_db_get_text(rows, 1);
        snprintf(pd->id, sizeof(pd->id), "%.*s", (int)id.len, id.ptr);
        snprintf(pd->event_id, sizeof(pd->event_id), "%.*s", (int)ev.len, ev.ptr);
        pd->step = stepno;
        pd->steps = steps;
    }
    keel_db_rows_free(rows);
    int64_t escalated = 0;
    for (size_t i = 0; i < n; i++) {
        if (rc >= 0 && (rc = keel_db_tx(c, tx_escalate, &due[i])) == 0)
            escalated += due[i].escalated;
        json_decref(due[i].steps);
    }
    keel_free(due);
    if (rc < 0)
        return rc;
    *report = json_pack("{s:I}", "escalated", (json_int_t)escalated);
    return 0;
}

typedef struct sweep_job {
    app_ev_job e;
    int64_t now;
} sweep_job;

static int db_sweep(keel_db_conn *c, void *arg)
{
    sweep_job *j = arg;
    json_decref(j->e.out);
    j->e.out = NULL;
    return app_events_run_escalation(c, j->now, &j->e.out);
}

static keel_flow h_sweep(keel_req *r)
{
    sweep_job *j = app_ev_job_new(r, sizeof(sweep_job));
    j->now = app_now();
    json_t *body = keel_req_body(r).len ? app_json_body(r) : NULL;
    if (keel_req_body(r).len && !body)
        return KEEL_DONE;
    json_t *at = json_object_get(body, "now");
    if (at && app_parse_time(json_string_value(at), json_string_length(at), &j->now) < 0) {
        app_invalid(r, "/now", "must be an RFC 3339 date-time");
        return KEEL_DONE;
    }
    return keel_db_job_run(r, app_ev_db, db_sweep, app_ev_done, j);
}

static const keel_route approval_routes[] = {
    {.name = "admin.events.escalation", .method = "POST",
     .path = "/api/v1/admin/events/escalation", .handler = h_sweep,
     .summary = "Escalate approval steps pending past their deadline now ({now} to evaluate "
                "at another time)",
     .auth = "any", .permission = "admin:access",
     .request_schema = "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
                       "\"now\":{\"type\":\"string\",\"format\":\"date-time\"}}}"},
    {.name = "events.approval", .method = "GET", .path = "/api/v1/events/:id/approval",
     .handler = h_get, .summary = "The event's latest approval request and its decisions",
     .auth = "any", .permission = "events:read"},
    {.name = "events.approval.submit", .method = "POST", .path = "/api/v1/events/:id/approval",
     .handler = h_submit, .summary = "Submit a draft for approval (types that require it)",
     .auth = "any", .permission = "events:write"},
    {.name = "events.approval.decide", .method = "POST",
     .path = "/api/v1/events/:id/approval/decision", .handler = h_decide,
     .summary = "Approve or reject the current step (its approvers; a rejection needs a reason)",
     .auth = "any", .permission = "events:read",
     .request_schema = "{\"type\":\"object\",\"additionalProperties\":false,\"required\":"
                       "[\"decision\"],\"properties\":{\"decision\":{\"type\":\"string\","
                       "\"enum\":[\"approve\",\"reject\"]},\"reason\":{\"type\":\"string\","
                       "\"maxLength\":1000}}}"},
};

int app_event_approvals_setup(keel_service *svc)
{
    if (app_ev_schedule_sweep(svc, "events.escalation",
                              app_options_of(svc)->events_escalation_schedule,
                              app_events_run_escalation) < 0)
        return -1;
    return keel_service_add_routes(svc, approval_routes,
                                   sizeof(approval_routes) / sizeof(approval_routes[0]));
}
