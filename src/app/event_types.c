/* event_types.c — /api/v1/event-types: the kinds of event, with what
 * applies to each: retention (days, purge or anonymise). Everyone with
 * events:read lists them; admins create and change them
 * (PUT /api/v1/admin/event-types/:name, audited). See docs/events.md. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "app/events_internal.h"

#define TYPE_COLUMNS                                                                             \
    "name, description, requires_approval, retention_days, retention_action, created_at, "      \
    "approval_steps, custom_schema, rules"

static json_t *type_json(const keel_db_rows *rows)
{
    keel_str st = keel_db_get_text(rows, 6);
    json_t *steps = st.ptr ? json_loadb(st.ptr, st.len, 0, NULL) : NULL;
    keel_str cs = keel_db_get_text(rows, 7), ru = keel_db_get_text(rows, 8);
    json_t *schema = cs.ptr ? json_loadb(cs.ptr, cs.len, 0, NULL) : NULL;
    json_t *rules = ru.ptr ? json_loadb(ru.ptr, ru.len, 0, NULL) : NULL;
    return json_pack("{s:o,s:o,s:o,s:o,s:o,s:b,s:o,s:o}", "custom_schema",
                     schema ? schema : json_null(), "rules", rules ? rules : json_array(),
                     "approval_steps", steps ? steps : json_array(), "name", app_ev_text(rows, 0), "description",
                     app_ev_text(rows, 1), "requires_approval", keel_db_get_bool(rows, 2),
                     "retention_days",
                     keel_db_is_null(rows, 3) ? json_null()
                                              : json_integer(keel_db_get_int(rows, 3)),
                     "retention_action", app_ev_text(rows, 4));
}

static int fetch_type(keel_db_conn *c, const char *name, json_t **out)
{
    *out = NULL;
    keel_db_param p[] = {KEEL_DB_P_TEXT(name)};
    keel_db_rows *rows;
    int rc = keel_db_query(c, "SELECT " TYPE_COLUMNS " FROM event_types WHERE name = $1", p, 1,
                           &rows);
    if (rc < 0)
        return rc;
    if ((rc = keel_db_rows_next(rows)) == 1)
        *out = type_json(rows);
    keel_db_rows_free(rows);
    return rc < 0 ? rc : 0;
}

static int db_list(keel_db_conn *c, void *arg)
{
    app_ev_job *j = arg;
    json_decref(j->out);
    keel_db_rows *rows;
    int rc = keel_db_query(c, "SELECT " TYPE_COLUMNS " FROM event_types ORDER BY name LIMIT 1000",
                           NULL, 0, &rows);
    if (rc < 0)
        return rc;
    json_t *data = json_array();
    while ((rc = keel_db_rows_next(rows)) == 1)
        json_array_append_new(data, type_json(rows));
    keel_db_rows_free(rows);
    j->out = json_pack("{s:o}", "data", data);
    return rc < 0 ? rc : 0;
}

static keel_flow h_list(keel_req *r)
{
    app_ev_job *j = app_ev_job_new(r, sizeof(app_ev_job));
    return keel_db_job_run(r, app_ev_db, db_list, app_ev_done, j);
}

typedef struct put_job {
    app_ev_job e;
    char name[64];
    json_t *body; /* borrowed: the request's */
} put_job;

static int db_put(keel_db_conn *c, void *arg)
{
    put_job *j = arg;
    json_decref(j->e.out);
    json_decref(j->e.before);
    j->e.out = j->e.before = NULL;
    int rc = fetch_type(c, j->name, &j->e.before);
    if (rc < 0)
        return rc;
    json_t *b = j->body, *days = json_object_get(b, "retention_days");
    const char *desc = json_string_value(json_object_get(b, "description")),
               *action = json_string_value(json_object_get(b, "retention_action"));
    json_t *steps = json_object_get(b, "approval_steps"),
           *schema = json_object_get(b, "custom_schema"), *rules = json_object_get(b, "rules");
    char err[256];
    if (app_ev_rules_valid(schema, rules, err, sizeof(err)) < 0) {
        j->e.err_extra = json_pack("{s:[{s:s,s:s}]}", "errors", "pointer",
                                   schema && !strstr(err, "rule") ? "/custom_schema" : "/rules",
                                   "message", err);
        return app_ev_refuse(&j->e, 422, "the type's rules are not valid");
    }
    char *steps_text = steps ? json_dumps(steps, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    char *schema_text = json_is_object(schema) ? json_dumps(schema, JSON_COMPACT) : NULL;
    char *rules_text = rules ? json_dumps(rules, JSON_COMPACT) : NULL;
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->name), KEEL_DB_P_TEXT(desc ? desc : ""),
                         KEEL_DB_P_BOOL(json_is_true(json_object_get(b, "requires_approval"))),
                         json_is_integer(days) ? KEEL_DB_P_INT(json_integer_value(days))
                                               : KEEL_DB_P_NULL(),
                         KEEL_DB_P_TEXT(action ? action : "purge"),
                         KEEL_DB_P_TEXT(steps_text ? steps_text : "[]"),
                         schema_text ? KEEL_DB_P_TEXT(schema_text) : KEEL_DB_P_NULL(),
                         KEEL_DB_P_TEXT(rules_text ? rules_text : "[]"), KEEL_DB_P_INT(app_now())};
    rc = j->e.before
             ? keel_db_exec(c,
                            "UPDATE event_types SET description = $2, requires_approval = $3, "
                            "retention_days = $4, retention_action = $5, approval_steps = $6, "
                            "custom_schema = $7, rules = $8 WHERE name = $1",
                            p, 8, NULL)
             : keel_db_exec(c,
                            "INSERT INTO event_types (name, description, requires_approval, "
                            "retention_days, retention_action, approval_steps, custom_schema, "
                            "rules, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                            p, 9, NULL);
    free(steps_text);
    free(schema_text);
    free(rules_text);
    if (rc < 0 || (rc = fetch_type(c, j->name, &j->e.out)) < 0)
        return rc;
    json_t *diff = app_audit_diff(j->e.before, j->e.out);
    rc = app_audit_append(c, &j->e.who, j->e.before ? "event_type.update" : "event_type.create",
                          "event_type", j->name, diff);
    json_decref(diff);
    j->e.status = j->e.before ? 200 : 201;
    return rc;
}

static keel_flow h_put(keel_req *r)
{
    json_t *body = app_json_body(r);
    if (!body)
        return KEEL_DONE;
    put_job *j = app_ev_job_new(r, sizeof(put_job));
    j->body = body;
    keel_str name = keel_req_param(r, "name");
    if (name.len < 1 || name.len > 63) {
        app_invalid(r, "/path/name", "must be 1 to 63 bytes");
        return KEEL_DONE;
    }
    for (size_t i = 0; i < name.len; i++) {
        char ch = name.ptr[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-')) {
            app_invalid(r, "/path/name", "must be lower-case letters, digits, _ and -");
            return KEEL_DONE;
        }
    }
    snprintf(j->name, sizeof(j->name), "%.*s", (int)name.len, name.ptr);
    return keel_db_job_run_tx(r, app_ev_db, db_put, app_ev_done, j);
}

#define S_COND                                                                                   \
    "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"field\",\"op\"],"    \
    "\"properties\":{\"field\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":100},"      \
    "\"op\":{\"type\":\"string\",\"enum\":[\"=\",\"!=\",\"<\",\"<=\",\">\",\">=\",\"in\","   \
    "\"present\",\"absent\"]},\"value\":true}}"
#define S_RULE                                                                                   \
    "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"id\",\"field\","      \
    "\"op\"],\"properties\":{\"id\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":63},"  \
    "\"field\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":100},\"op\":{\"type\":"     \
    "\"string\",\"enum\":[\"=\",\"!=\",\"<\",\"<=\",\">\",\">=\",\"in\",\"present\","      \
    "\"absent\"]},\"value\":true,\"message\":{\"type\":\"string\",\"maxLength\":300},"        \
    "\"when\":" S_COND ",\"unless\":" S_COND "}}"

static const keel_route type_routes[] = {
    {.name = "event_types.list", .method = "GET", .path = "/api/v1/event-types",
     .handler = h_list, .summary = "Event types and their retention", .auth = "any",
     .permission = "events:read"},
    {.name = "admin.event_types.put", .method = "PUT", .path = "/api/v1/admin/event-types/:name",
     .handler = h_put, .summary = "Create or change an event type (retention)", .auth = "any",
     .permission = "admin:access",
     .request_schema = "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
                       "\"description\":{\"type\":\"string\",\"maxLength\":500},"
                       "\"requires_approval\":{\"type\":\"boolean\"},"
                       "\"retention_days\":{\"type\":[\"integer\",\"null\"],\"minimum\":0,"
                       "\"maximum\":36500},\"retention_action\":{\"type\":\"string\",\"enum\":"
                       "[\"purge\",\"anonymise\"]},\"approval_steps\":{\"type\":\"array\","
                       "\"maxItems\":5,\"items\":{\"type\":\"object\",\"additionalProperties\":"
                       "false,\"properties\":{\"role\":{\"type\":\"string\",\"enum\":["
                       "\"moderator\",\"admin\"]},\"users\":{\"type\":\"array\",\"maxItems\":"
                       "20,\"items\":{\"type\":\"string\",\"maxLength\":63}},\"mode\":{"
                       "\"type\":\"string\",\"enum\":[\"any\",\"all\"]},\"deadline\":{\"type\":"
                       "\"string\",\"pattern\":\"^[0-9]+(ms|s|m|h|d)$\"}}}},"
                       "\"custom_schema\":{\"type\":[\"object\",\"null\"]},"
                       "\"rules\":{\"type\":\"array\",\"maxItems\":50,\"items\":" S_RULE "}}}"},
};

int app_event_types_setup(keel_service *svc)
{
    return keel_service_add_routes(svc, type_routes, sizeof(type_routes) / sizeof(type_routes[0]));
}
