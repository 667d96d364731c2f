/* event_costs.c — /api/v1/events/:id/costs: cost entries against an
 * event's budget, with totals per category and the over-budget flag.
 *
 * Entries are added and removed by those who may change the event (not
 * under legal hold), each in a transaction with its audit record. When an
 * entry takes the spending past EVENTS_BUDGET_ALERT_PERCENT of the budget,
 * or past the budget itself, a budget alert is raised once per crossing:
 * a warning log line and an `event.budget_alert` audit record (the alert
 * rules and notifications pick those up when they exist). Amounts are in
 * the budget's currency. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "app/app.h"
#include "app/events_internal.h"

static double alert_ratio;

/* The entries and totals of the loaded event j into j->out. */
static int summary(keel_db_conn *c, app_ev_job *j, double *total_out)
{
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->id)};
    keel_db_rows *rows;
    int rc = keel_db_query(c, "SELECT id, category, amount, note, created_by, created_at FROM "
                              "event_costs WHERE event_id = $1 ORDER BY created_at, id LIMIT "
                              "10000",
                           p, 1, &rows);
    if (rc < 0)
        return rc;
    json_t *data = json_array(), *cats = json_object();
    double total = 0;
    while ((rc = keel_db_rows_next(rows)) == 1) {
        double amount = keel_db_get_double(rows, 2);
        keel_str cat = keel_db_get_text(rows, 1);
        json_t *entry = json_pack("{s:o,s:o,s:f,s:o,s:o,s:o}", "id", app_ev_text(rows, 0),
                                  "category", app_ev_text(rows, 1), "amount", amount, "note",
                                  app_ev_text(rows, 3), "created_by", app_ev_text(rows, 4),
                                  "created_at", app_ev_time(rows, 5));
        json_array_append_new(data, entry);
        char key[80];
        snprintf(key, sizeof(key), "%.*s", (int)cat.len, cat.ptr ? cat.ptr : "");
        json_object_set_new(cats, key,
                            json_real(json_real_value(json_object_get(cats, key)) + amount));
        total += amount;
    }
    keel_db_rows_free(rows);
    if (rc < 0) {
        json_decref(data);
        json_decref(cats);
        return rc;
    }
    json_t *budget = json_object_get(j->before, "budget");
    json_t *amount = json_object_get(budget, "amount");
    json_decref(j->out);
    j->out = json_pack("{s:o,s:f,s:o,s:O,s:b}", "data", data, "total", total, "by_category", cats,
                       "budget", budget ? budget : json_null(), "over_budget",
                       json_is_number(amount) && total > json_number_value(amount));
    if (total_out)
        *total_out = total;
    return 0;
}

static int db_list(keel_db_conn *c, void *arg)
{
    app_ev_job *j = arg;
    int rc = app_ev_load(c, j);
    return rc < 0 ? rc : summary(c, j, NULL);
}

static keel_flow h_list(keel_req *r)
{
    app_ev_job *j = app_ev_job_new(r, sizeof(app_ev_job));
    return keel_db_job_run(r, app_ev_db, db_list, app_ev_done, j);
}

typedef struct cost_job {
    app_ev_job e;
    char category[64], note[512], cid[64];
    double amount;
} cost_job;

/* A crossing of the alert level or the budget by this change: logged and
 * audited once. */
static int budget_alert(keel_db_conn *c, cost_job *j, double before, double after)
{
    json_t *amount = json_object_get(json_object_get(j->e.before, "budget"), "amount");
    if (!json_is_number(amount))
        return 0;
    double budget = json_number_value(amount), level = budget * alert_ratio;
    const char *what = before <= budget && after > budget  ? "over_budget"
                       : before < level && after >= level ? "threshold"
                                                           : NULL;
    if (!what)
        return 0;
    keel_log(KEEL_LOG_WARN, "budget alert", "{s:s,s:s,s:f,s:f}", "event_id", j->e.id, "alert",
             what, "spent", after, "budget", budget);
    json_t *diff = json_pack("{s:{s:s},s:{s:f,s:f},s:{s:f}}", "alert", "to", what, "spent",
                             "from", before, "to", after, "budget", "to", budget);
    int rc = app_audit_append(c, &j->e.who, "event.budget_alert", "event", j->e.id, diff);
    json_decref(diff);
    return rc;
}

static int db_add(keel_db_conn *c, void *arg)
{
    cost_job *j = arg;
    double before = 0, after = 0;
    int rc = app_ev_load(c, &j->e);
    if (rc < 0 || (rc = app_ev_check_change(&j->e, 0)) < 0 ||
        (rc = summary(c, &j->e, &before)) < 0)
        return rc;
    char id[37];
    app_uuid(id);
    keel_db_param p[] = {KEEL_DB_P_TEXT(id),        KEEL_DB_P_TEXT(j->e.id),
                         KEEL_DB_P_TEXT(j->category), KEEL_DB_P_DOUBLE(j->amount),
                         KEEL_DB_P_TEXT(j->note),   KEEL_DB_P_TEXT(j->e.who.id),
                         KEEL_DB_P_INT(app_now())};
    if ((rc = keel_db_exec(c,
                           "INSERT INTO event_costs (id, event_id, category, amount, note, "
                           "created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                           p, 7, NULL)) < 0 ||
        (rc = summary(c, &j->e, &after)) < 0)
        return rc;
    json_t *diff = json_pack("{s:{s:{s:s,s:s,s:f}}}", "cost", "to", "id", id, "category",
                             j->category, "amount", j->amount);
    rc = app_audit_append(c, &j->e.who, "event.cost", "event", j->e.id, diff);
    json_decref(diff);
    if (rc == 0)
        rc = budget_alert(c, j, before, after);
    j->e.status = 201;
    return rc;
}

static keel_flow h_add(keel_req *r)
{
    json_t *body = app_json_body(r);
    if (!body)
        return KEEL_DONE;
    cost_job *j = app_ev_job_new(r, sizeof(cost_job));
    snprintf(j->category, sizeof(j->category), "%s",
             json_string_value(json_object_get(body, "category")));
    const char *note = json_string_value(json_object_get(body, "note"));
    snprintf(j->note, sizeof(j->note), "%s", note ? note : "");
    j->amount = json_number_value(json_object_get(body, "amount"));
    return keel_db_job_run_tx(r, app_ev_db, db_add, app_ev_done, j);
}

static int db_remove(keel_db_conn *c, void *arg)
{
    cost_job *j = arg;
    int rc = app_ev_load(c, &j->e);
    if (rc < 0 || (rc = app_ev_check_change(&j->e, 0)) < 0)
        return rc;
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->cid), KEEL_DB_P_TEXT(j->e.id)};
    int64_t n = 0;
    if ((rc = keel_db_exec(c, "DELETE FROM event_costs WHERE id = $1 AND event_id = $2", p, 2,
                           &n)) < 0)
        return rc;
    if (n == 0)
        return app_ev_refuse(&j->e, 404, "no cost entry with this id on this event");
    json_t *diff = json_pack("{s:{s:s}}", "cost", "from", j->cid);
    rc = app_audit_append(c, &j->e.who, "event.cost_removed", "event", j->e.id, diff);
    json_decref(diff);
    json_decref(j->e.out);
    j->e.out = NULL;
    return rc;
}

static keel_flow h_remove(keel_req *r)
{
    cost_job *j = app_ev_job_new(r, sizeof(cost_job));
    keel_str cid = keel_req_param(r, "cid");
    snprintf(j->cid, sizeof(j->cid), "%.*s", (int)(cid.len < 63 ? cid.len : 63), cid.ptr);
    return keel_db_job_run_tx(r, app_ev_db, db_remove, app_ev_done, j);
}

static const keel_route cost_routes[] = {
    {.name = "events.costs", .method = "GET", .path = "/api/v1/events/:id/costs",
     .handler = h_list,
     .summary = "Cost entries with totals per category, the budget and over_budget",
     .auth = "any", .permission = "events:read"},
    {.name = "events.costs.add", .method = "POST", .path = "/api/v1/events/:id/costs",
     .handler = h_add, .summary = "Add a cost entry (may raise a budget alert)", .auth = "any",
     .permission = "events:write",
     .request_schema = "{\"type\":\"object\",\"additionalProperties\":false,\"required\":"
                       "[\"category\",\"amount\"],\"properties\":{\"category\":{\"type\":"
                       "\"string\",\"pattern\":\"^[a-z0-9][a-z0-9_-]{0,39}$\"},\"amount\":{"
                       "\"type\":\"number\",\"minimum\":0,\"maximum\":1e15},\"note\":{\"type\":"
                       "\"string\",\"maxLength\":500}}}"},
    {.name = "events.costs.remove", .method = "DELETE", .path = "/api/v1/events/:id/costs/:cid",
     .handler = h_remove, .summary = "Remove a cost entry", .auth = "any",
     .permission = "events:write"},
};

int app_event_costs_setup(keel_service *svc, double ratio)
{
    alert_ratio = ratio;
    return keel_service_add_routes(svc, cost_routes, sizeof(cost_routes) / sizeof(cost_routes[0]));
}
