/* event_templates.c — /api/v1/event-templates: named sets of event fields
 * to start from. `POST /api/v1/events {"template_id": ..., ...}` takes
 * the template's fields and lets the body override any of them (the
 * result is validated as any new event is). Templates are shared by
 * everyone with events:read; creating one takes events:write and is
 * audited. See docs/events.md. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "app/events_internal.h"

#define T_COLUMNS "id, name, fields, created_by, created_at"

static json_t *template_json(const keel_db_rows *rows)
{
    keel_str f = keel_db_get_text(rows, 2);
    json_t *fields = f.ptr ? json_loadb(f.ptr, f.len, 0, NULL) : NULL;
    return json_pack("{s:o,s:o,s:o,s:o,s:o}", "id", app_ev_text(rows, 0), "name",
                     app_ev_text(rows, 1), "fields", fields ? fields : json_object(),
                     "created_by", app_ev_text(rows, 3), "created_at", app_ev_time(rows, 4));
}

int app_ev_template_fields(keel_db_conn *c, const char *id, json_t **out)
{
    *out = NULL;
    keel_db_param p[] = {KEEL_DB_P_TEXT(id)};
    keel_db_rows *rows;
    int rc = keel_db_query(c, "SELECT fields FROM event_templates WHERE id = $1", p, 1, &rows);
    if (rc < 0)
        return rc;
    if ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str f = keel_db_get_text(rows, 0);
        *out = json_loadb(f.ptr ? f.ptr : "{}", f.len, 0, NULL);
    }
    keel_db_rows_free(rows);
    if (rc < 0)
        return rc;
    return *out ? 0 : KEEL_EDB_NOROW;
}

typedef struct template_job {
    app_ev_job e;
    json_t *body; /* borrowed: the request's */
} template_job;

static int db_create(keel_db_conn *c, void *arg)
{
    template_job *j = arg;
    json_decref(j->e.out);
    j->e.out = NULL;
    char id[37];
    app_uuid(id);
    char *fields = json_dumps(json_object_get(j->body, "fields"), JSON_COMPACT | JSON_SORT_KEYS);
    keel_db_param p[] = {KEEL_DB_P_TEXT(id),
                         KEEL_DB_P_TEXT(json_string_value(json_object_get(j->body, "name"))),
                         KEEL_DB_P_TEXT(fields ? fields : "{}"), KEEL_DB_P_TEXT(j->e.who.id),
                         KEEL_DB_P_INT(app_now())};
    int rc = keel_db_exec(c,
                          "INSERT INTO event_templates (" T_COLUMNS ") VALUES ($1, $2, $3, $4, "
                          "$5)",
                          p, 5, NULL);
    free(fields);
    if (rc == KEEL_EDB_CONSTRAINT)
        return app_ev_refuse(&j->e, 409, "a template with this name already exists");
    if (rc < 0)
        return rc;
    keel_db_rows *rows;
    if ((rc = keel_db_query(c, "SELECT " T_COLUMNS " FROM event_templates WHERE id = $1", p, 1,
                            &rows)) < 0)
        return rc;
    if (keel_db_rows_next(rows) == 1)
        j->e.out = template_json(rows);
    keel_db_rows_free(rows);
    json_t *diff = app_audit_diff(NULL, j->e.out);
    rc = app_audit_append(c, &j->e.who, "template.create", "event_template", id, diff);
    json_decref(diff);
    j->e.status = 201;
    return rc;
}

static keel_flow h_create(keel_req *r)
{
    json_t *body = app_json_body(r);
    if (!body)
        return KEEL_DONE;
    template_job *j = app_ev_job_new(r, sizeof(template_job));
    j->body = body;
    return keel_db_job_run_tx(r, app_ev_db, db_create, app_ev_done, j);
}

static int db_list(keel_db_conn *c, void *arg)
{
    app_ev_job *j = arg;
    json_decref(j->out);
    j->out = NULL;
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->id)};
    keel_db_rows *rows;
    int rc = *j->id ? keel_db_query(c, "SELECT " T_COLUMNS " FROM event_templates WHERE id = $1",
                                    p, 1, &rows)
                    : keel_db_query(c, "SELECT " T_COLUMNS " FROM event_templates ORDER BY name "
                                       "LIMIT 1000",
                                    NULL, 0, &rows);
    if (rc < 0)
        return rc;
    json_t *data;
    if ((rc = app_ev_rows_array(rows, template_json, &data)) < 0)
        return rc;
    if (*j->id) {
        j->out = json_incref(json_array_get(data, 0));
        json_decref(data);
        return j->out ? 0 : app_ev_refuse(j, 404, "no template with this id");
    }
    j->out = json_pack("{s:o}", "data", data);
    return 0;
}

static keel_flow h_list(keel_req *r)
{
    app_ev_job *j = app_ev_job_new(r, sizeof(app_ev_job));
    return keel_db_job_run(r, app_ev_db, db_list, app_ev_done, j);
}

/* The fields a template may hold: an event's, without its place in a
 * tree or its owner. */
#define S_TEMPLATE_FIELDS                                                                        \
    "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"                      \
    "\"title\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":200},"                         \
    "\"description\":{\"type\":\"string\",\"maxLength\":10000},"                                 \
    "\"type\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":63},"                           \
    "\"starts_at\":{\"type\":\"string\",\"format\":\"date-time\"},"                              \
    "\"ends_at\":{\"type\":[\"string\",\"null\"],\"format\":\"date-time\"},"                     \
    "\"location\":{\"type\":\"string\",\"maxLength\":500},"                                      \
    "\"tags\":{\"type\":\"array\",\"maxItems\":20,\"items\":{\"type\":\"string\","               \
    "\"pattern\":\"^[a-z0-9][a-z0-9_-]{0,39}$\"}},"                                              \
    "\"custom\":{\"type\":\"object\"},"                                                          \
    "\"classification\":{\"type\":\"string\",\"enum\":[\"public\",\"internal\","                 \
    "\"confidential\",\"restricted\"]},"                                                         \
    "\"risk\":{\"type\":[\"object\",\"null\"]},\"budget\":{\"type\":[\"object\",\"null\"]},"     \
    "\"recurrence\":" APP_EV_S_RRULE "}}"

static const keel_route template_routes[] = {
    {.name = "event_templates.list", .method = "GET", .path = "/api/v1/event-templates",
     .handler = h_list, .summary = "Event templates", .auth = "any",
     .permission = "events:read"},
    {.name = "event_templates.get", .method = "GET", .path = "/api/v1/event-templates/:id",
     .handler = h_list, .summary = "One event template", .auth = "any",
     .permission = "events:read"},
    {.name = "event_templates.create", .method = "POST", .path = "/api/v1/event-templates",
     .handler = h_create,
     .summary = "Create a template: {name, fields}; POST /api/v1/events {template_id, ...} "
                "starts from it",
     .auth = "any", .permission = "events:write",
     .request_schema = "{\"type\":\"object\",\"additionalProperties\":false,\"required\":"
                       "[\"name\",\"fields\"],\"properties\":{\"name\":{\"type\":\"string\","
                       "\"minLength\":1,\"maxLength\":100},\"fields\":" S_TEMPLATE_FIELDS "}}"},
};

int app_event_templates_setup(keel_service *svc)
{
    return keel_service_add_routes(svc, template_routes,
                                   sizeof(template_routes) / sizeof(template_routes[0]));
}
