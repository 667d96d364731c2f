/* events_internal.h — what the files of the events resource share
 * (src/app/events.c, event_assignments.c): the job every flow starts
 * with, loading an event with the caller's relationship to it, and the
 * refusal path. Not for other resources: they call the events' own
 * functions in app.h. */
#ifndef KEEL_APP_EVENTS_INTERNAL_H
#define KEEL_APP_EVENTS_INTERNAL_H

#include <jansson.h>

#include "app/app.h"

#define EV_REFUSED (-29001) /* a job's refusal: status and detail in the job */

/* The columns app_ev_json reads, in its order. */
#define EV_COLUMNS                                                                               \
    "id, title, description, type, state, starts_at, ends_at, location, owner_id, parent_id, "  \
    "depth, path, tags, custom, classification, risk_level, risk_score, risk_notes, "            \
    "budget_amount, budget_currency, version, legal_hold, legal_hold_reason, legal_hold_by, "   \
    "legal_hold_at, created_at, updated_at, recurrence, template_id"

/* What the caller is to one event. */
typedef enum app_ev_rel {
    APP_EV_NONE = 0,
    APP_EV_VIEWER,
    APP_EV_REVIEWER,
    APP_EV_ASSIGNEE,
    APP_EV_OWNER
} app_ev_rel;

/* Every flow's job starts with this (in the request's arena, released
 * with it). */
typedef struct app_ev_job {
    app_actor who;
    char id[64];      /* the event acted on */
    json_t *out;      /* the answer's body */
    int status;       /* 0: 200 */
    int64_t if_match; /* -1: "*" */
    /* set by app_ev_load() */
    json_t *before;
    char path[2400];
    app_ev_rel rel;
    int held;
    /* a refusal (EV_REFUSED) */
    int err_status;
    char err_detail[300];
    json_t *err_extra;
} app_ev_job;

extern keel_db *app_ev_db;

/* A sweep run as a scheduled job (event_retention.c): registers `kind`
 * on the service's job runner, calling sweep(conn, now, &report) on a
 * runner thread, and schedules it at expr (empty: registered, never
 * scheduled). No runner (a service without jobs): nothing. 0 or -1. */
typedef int (*app_ev_sweep_fn)(keel_db_conn *c, int64_t now, json_t **report);
int app_ev_schedule_sweep(keel_service *svc, const char *kind, const char *expr,
                          app_ev_sweep_fn sweep);

/* A job of `size` bytes (starting with app_ev_job) on the path's :id. */
void *app_ev_job_new(keel_req *r, size_t size);
/* Answers a job: a refusal, a database error, j->out (with ETag for an
 * event) or 204. */
void app_ev_done(keel_req *r, void *arg, int status);
/* Keeps a refusal in j; returns EV_REFUSED (return it to roll back). */
__attribute__((format(printf, 3, 4))) int app_ev_refuse(app_ev_job *j, int status,
                                                        const char *fmt, ...);
/* Loads j->id into j->before with the caller's relation and the hold;
 * refuses 404 for an event the caller may not see. */
int app_ev_load(keel_db_conn *c, app_ev_job *j);
/* The caller's relationship to an event (owner, or its active
 * assignments: event_assignments.c). */
int app_ev_relation(keel_db_conn *c, const app_actor *a, const char *event_id,
                    const char *owner_id, app_ev_rel *out);
int app_ev_is_user(const app_actor *a);
/* Appends to `where` (an SQL condition over `events e`) what keeps the
 * events `who` may not see out — restricted ones unless owner or a live
 * assignee; nothing for an admin — with its parameters at p[n...];
 * returns the new parameter count (at most n + 2). Lists, counts and
 * calendars use it, so visibility is in the SQL, never a filter after. */
size_t app_ev_visible_sql(const app_actor *who, int64_t now, keel_db_param *p, size_t n,
                          char *where, size_t cap);
/* A column as JSON: text or null; Unix seconds as RFC 3339 or null. */
json_t *app_ev_text(const keel_db_rows *rows, size_t col);
json_t *app_ev_time(const keel_db_rows *rows, size_t col);
/* Reads every row of rows (and frees it) into a new array, row_json
 * making each element; 0 with *out set, or the read's error (*out NULL). */
int app_ev_rows_array(keel_db_rows *rows, json_t *(*row_json)(const keel_db_rows *),
                      json_t **out);

/* The checks of a change on a loaded event: may write (403), not held
 * (423), and with need_version the If-Match version (412). */
int app_ev_check_change(app_ev_job *j, int need_version);

/* Whether the event at path (materialised "/root/.../id/"), or an
 * ancestor, is under legal hold. */
int app_ev_hold_on(keel_db_conn *c, const char *path, int *held);

/* An EV_COLUMNS row as the API's JSON (new reference); its materialised
 * path ("/root/.../id/") to path when not NULL. */
json_t *app_ev_json(const keel_db_rows *rows, char path[2400]);

int app_event_list_setup(keel_service *svc, int64_t page_max);
int app_event_assignments_setup(keel_service *svc);
int app_event_types_setup(keel_service *svc);
/* The type's custom_schema and cross-field rules against the event (its
 * API form), every failure appended to errs as {pointer, message, rule}
 * (event_rules.c). 0 or a database error. */
int app_ev_rules_check(keel_db_conn *c, const json_t *ev, json_t *errs);
/* Whether a type's schema compiles and its rules are well formed. */
int app_ev_rules_valid(const json_t *schema, const json_t *rules, char *err, size_t cap);
/* Refuses (409) a move to scheduled of an event whose type requires
 * approval and has no approved request (event_approvals.c). */
int app_ev_approval_gate(keel_db_conn *c, app_ev_job *j);
int app_event_approvals_setup(keel_service *svc);
int app_event_costs_setup(keel_service *svc, double alert_ratio);
int app_event_retention_setup(keel_service *svc);

/* ---------------------------------------------------------------- templates (event_templates.c) */

/* The fields of template id as an object (*out, new reference): 0 or
 * KEEL_EDB_NOROW. */
int app_ev_template_fields(keel_db_conn *c, const char *id, json_t **out);
int app_event_templates_setup(keel_service *svc);

/* ---------------------------------------------------------------- recurrence (event_recurrence.c) */

/* The JSON Schema of a rule (an RFC 5545 RRULE subset). */
#define APP_EV_S_RRULE                                                                           \
    "{\"type\":[\"object\",\"null\"],\"additionalProperties\":false,\"required\":[\"freq\"],"   \
    "\"properties\":{\"freq\":{\"type\":\"string\",\"enum\":[\"daily\",\"weekly\","           \
    "\"monthly\"]},\"interval\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000},"         \
    "\"by_weekday\":{\"type\":\"array\",\"minItems\":1,\"maxItems\":7,\"items\":{\"type\":"    \
    "\"string\",\"enum\":[\"MO\",\"TU\",\"WE\",\"TH\",\"FR\",\"SA\",\"SU\"]}},"             \
    "\"count\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":100000},"                      \
    "\"until\":{\"type\":\"string\",\"format\":\"date-time\"}}}"

/* The rules the schema cannot say (count with until; by_weekday only
 * weekly), each as {pointer, message} added to errs. */
void app_ev_rrule_check(const json_t *rule, json_t *errs);
int app_event_recurrence_setup(keel_service *svc, size_t instances_max);

#endif
