/* reviews.c — the content review queue and the admin home page's numbers.
 *
 * A user reports a resource they can see (POST /api/v1/files/:id/report):
 * the resource gets one review item (unique per type and id) that counts
 * its reports, one per reporter. Admins and moderators (reviews:manage)
 * list the queue and decide: approve, or reject — a rejected resource is
 * hidden from everyone but them (for files: files.hidden_at, which every
 * user-facing query of src/app/files.c filters on). Each decision is one
 * transaction with its record in the audit log (src/app/audit.c): the
 * item's change, the resource's, and who did it commit together or not
 * at all. A new report on an approved item puts it back in the queue; a
 * rejected one stays rejected until a reviewer approves it.
 *
 * Other resources opt in with a row in `kinds` below: how to find one a
 * reporter can see, and how to hide or show it. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/analytics.h"

static keel_db *DB;

/* ---------------------------------------------------------------- resource kinds */

typedef struct review_kind {
    const char *type;
    /* 0 and the owner's id when `reporter` can see resource `id`, else
     * KEEL_EDB_NOROW (hidden ones included: nothing to report). */
    int (*visible)(keel_db_conn *c, const char *id, const char *reporter, char owner[64]);
    /* Hides (1) or shows (0) the resource. */
    int (*set_hidden)(keel_db_conn *c, const char *id, int hidden, int64_t now);
    /* The resource as JSON for the reviewer (new reference), or NULL. */
    json_t *(*describe)(keel_db_conn *c, const char *id);
} review_kind;

/* A file: one's own, or anyone's avatar (shown with their profile). */
static int file_visible(keel_db_conn *c, const char *id, const char *reporter, char owner[64])
{
    keel_db_param p[] = {KEEL_DB_P_TEXT(id), KEEL_DB_P_TEXT(reporter)};
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           "SELECT f.owner_id FROM files f WHERE f.id = $1 AND f.hidden_at IS NULL "
                           "AND (f.owner_id = $2 OR (f.kind = 'avatar' AND EXISTS (SELECT 1 FROM "
                           "users u WHERE u.avatar_file_id = f.id AND u.deleted_at IS NULL)))",
                           p, 2, &rows);
    if (rc < 0)
        return rc;
    rc = keel_db_rows_next(rows);
    if (rc == 1) {
        keel_str o = keel_db_get_text(rows, 0);
        snprintf(owner, 64, "%.*s", (int)o.len, o.ptr);
    }
    keel_db_rows_free(rows);
    return rc == 1 ? 0 : rc < 0 ? rc : KEEL_EDB_NOROW;
}

static int file_set_hidden(keel_db_conn *c, const char *id, int hidden, int64_t now)
{
    keel_db_param p[] = {KEEL_DB_P_TEXT(id), hidden ? KEEL_DB_P_INT(now) : KEEL_DB_P_NULL()};
    return keel_db_exec(c, "UPDATE files SET hidden_at = $2 WHERE id = $1", p, 2, NULL);
}

static json_t *file_describe(keel_db_conn *c, const char *id)
{
    keel_db_param p[] = {KEEL_DB_P_TEXT(id)};
    keel_db_rows *rows;
    if (keel_db_query(c,
                      "SELECT id, owner_id, kind, name, content_type, size, sha256, created_at, "
                      "hidden_at FROM files WHERE id = $1",
                      p, 1, &rows) < 0)
        return NULL;
    json_t *out = keel_db_rows_next(rows) == 1 ? keel_db_row_json(rows) : NULL;
    keel_db_rows_free(rows);
    return out;
}

static const review_kind kinds[] = {
    {"file", file_visible, file_set_hidden, file_describe},
};

static const review_kind *kind_of(const char *type, size_t n)
{
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (strlen(kinds[i].type) == n && !memcmp(kinds[i].type, type, n))
            return &kinds[i];
    return NULL;
}

/* ---------------------------------------------------------------- jobs */

typedef struct rv_job {
    char id[64], reason[1024], user[64], decision[16];
    const review_kind *kind;
    app_actor who;
    json_t *out;
    /* list */
    char status[16], type[32];
    int64_t cur_at;
    char cur_id[40];
    int has_cursor;
    size_t limit;
    char next[80];
} rv_job;

static void rv_cleanup(void *p)
{
    json_decref(((rv_job *)p)->out);
}

#define ITEM_COLS                                                                              \
    "id, resource_type, resource_id, owner_id, status, reports, last_reason, created_at, "    \
    "updated_at, decided_by, decided_at, decision_reason"

static int load_item(keel_db_conn *c, const char *id, json_t **out)
{
    keel_db_param p[] = {KEEL_DB_P_TEXT(id)};
    keel_db_rows *rows;
    int rc = keel_db_query(c, "SELECT " ITEM_COLS " FROM review_items WHERE id = $1", p, 1, &rows);
    if (rc < 0)
        return rc;
    rc = keel_db_rows_next(rows);
    if (rc == 1) {
        json_decref(*out);
        *out = keel_db_row_json(rows);
    }
    keel_db_rows_free(rows);
    return rc == 1 ? 0 : rc < 0 ? rc : KEEL_EDB_NOROW;
}

static void answer(keel_req *r, rv_job *j, int status, int code)
{
    if (status == KEEL_ECANCELED)
        return;
    if (status == KEEL_EDB_NOROW) {
        keel_respond_problem(r, 404, "no such resource");
        return;
    }
    if (status == KEEL_EEXISTS) {
        keel_respond_problem(r, 409, "you reported this already");
        return;
    }
    if (status < 0) {
        keel_db_respond_error(r, status);
        return;
    }
    keel_respond_json(r, code, json_incref(j->out));
}

/* ---------------------------------------------------------------- report */

static int db_report(keel_db_conn *c, void *arg)
{
    rv_job *j = arg;
    char owner[64] = "", rid[37];
    int rc = j->kind->visible(c, j->id, j->user, owner);
    if (rc < 0)
        return rc;
    int64_t now = app_now();
    app_uuid(rid);
    keel_db_param ins[] = {KEEL_DB_P_TEXT(rid), KEEL_DB_P_TEXT(j->kind->type),
                           KEEL_DB_P_TEXT(j->id), KEEL_DB_P_TEXT(owner), KEEL_DB_P_INT(now)};
    if ((rc = keel_db_exec(c,
                           "INSERT INTO review_items (id, resource_type, resource_id, owner_id, "
                           "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5) "
                           "ON CONFLICT (resource_type, resource_id) DO NOTHING",
                           ins, 5, NULL)) < 0)
        return rc;
    keel_db_param q[] = {KEEL_DB_P_TEXT(j->kind->type), KEEL_DB_P_TEXT(j->id)};
    keel_db_rows *rows;
    if ((rc = keel_db_query(c, "SELECT id FROM review_items WHERE resource_type = $1 AND "
                               "resource_id = $2",
                            q, 2, &rows)) < 0)
        return rc;
    rc = keel_db_rows_next(rows);
    if (rc == 1) {
        keel_str v = keel_db_get_text(rows, 0);
        snprintf(rid, sizeof(rid), "%.*s", (int)v.len, v.ptr);
    }
    keel_db_rows_free(rows);
    if (rc != 1)
        return rc < 0 ? rc : KEEL_EDB_NOROW;
    keel_db_param rep[] = {KEEL_DB_P_TEXT(rid), KEEL_DB_P_TEXT(j->user), KEEL_DB_P_TEXT(j->reason),
                           KEEL_DB_P_INT(now)};
    rc = keel_db_exec(c,
                      "INSERT INTO review_reports (review_id, reporter_id, reason, created_at) "
                      "VALUES ($1, $2, $3, $4)",
                      rep, 4, NULL);
    if (rc == KEEL_EDB_CONSTRAINT)
        return KEEL_EEXISTS;
    if (rc < 0)
        return rc;
    keel_db_param up[] = {KEEL_DB_P_TEXT(rid), KEEL_DB_P_TEXT(j->reason), KEEL_DB_P_INT(now)};
    if ((rc = keel_db_exec(c,
                           "UPDATE review_items SET reports = reports + 1, last_reason = $2, "
                           "updated_at = $3, status = CASE WHEN status = 'approved' THEN "
                           "'pending' ELSE status END WHERE id = $1",
                           up, 3, NULL)) < 0)
        return rc;
    if ((rc = load_item(c, rid, &j->out)) < 0)
        return rc;
    /* the reporter sees the item's id and state, not other reports */
    json_t *slim = json_pack("{s:O,s:O,s:O,s:O}", "id", json_object_get(j->out, "id"),
                             "resource_type", json_object_get(j->out, "resource_type"),
                             "resource_id", json_object_get(j->out, "resource_id"), "status",
                             json_object_get(j->out, "status"));
    json_decref(j->out);
    j->out = slim;
    return 0;
}

static void reported(keel_req *r, void *arg, int status)
{
    answer(r, arg, status, 201);
}

static keel_flow h_report_file(keel_req *r)
{
    rv_job *j = KEEL_REQ_JOB(r, rv_job, rv_cleanup);
    j->kind = kind_of("file", 4);
    keel_str id = keel_req_param(r, "id");
    snprintf(j->id, sizeof(j->id), "%.*s", (int)(id.len < 63 ? id.len : 63), id.ptr);
    const keel_principal *p = keel_req_principal(r);
    snprintf(j->user, sizeof(j->user), "%s", p ? p->id : "");
    snprintf(j->reason, sizeof(j->reason), "%s",
             json_string_value(json_object_get(keel_req_json(r), "reason")));
    return keel_db_job_run_tx(r, DB, db_report, reported, j);
}

/* ---------------------------------------------------------------- the queue */

static int db_list(keel_db_conn *c, void *arg)
{
    rv_job *j = arg;
    keel_buf sql = {0};
    keel_db_param p[6];
    size_t n = 0;
    keel_buf_append_str(&sql, "SELECT " ITEM_COLS " FROM review_items WHERE 1 = 1");
    if (j->status[0]) {
        p[n++] = KEEL_DB_P_TEXT(j->status);
        keel_buf_printf(&sql, " AND status = $%zu", n);
    }
    if (j->type[0]) {
        p[n++] = KEEL_DB_P_TEXT(j->type);
        keel_buf_printf(&sql, " AND resource_type = $%zu", n);
    }
    if (j->has_cursor) {
        p[n++] = KEEL_DB_P_INT(j->cur_at);
        p[n++] = KEEL_DB_P_TEXT(j->cur_id);
        keel_buf_printf(&sql, " AND (updated_at < $%zu OR (updated_at = $%zu AND id < $%zu))",
                        n - 1, n - 1, n);
    }
    p[n++] = KEEL_DB_P_INT((int64_t)j->limit + 1);
    keel_buf_printf(&sql, " ORDER BY updated_at DESC, id DESC LIMIT $%zu", n);
    keel_buf_append(&sql, "", 1);
    keel_db_rows *rows;
    int rc = keel_db_query(c, sql.data, p, n, &rows);
    keel_buf_free(&sql);
    if (rc < 0)
        return rc;
    json_t *data = json_array();
    json_decref(j->out);
    j->out = json_pack("{s:o}", "data", data);
    j->next[0] = '\0';
    size_t k = 0;
    int64_t last_at = 0;
    while ((rc = keel_db_rows_next(rows)) == 1) {
        if (k++ == j->limit) {
            json_t *lastv = json_array_get(data, j->limit - 1);
            snprintf(j->next, sizeof(j->next), "%" PRId64 "_%s", last_at,
                     json_string_value(json_object_get(lastv, "id")));
            break;
        }
        json_array_append_new(data, keel_db_row_json(rows));
        last_at = keel_db_get_int(rows, 8);
    }
    keel_db_rows_free(rows);
    return rc < 0 ? rc : 0;
}

static void listed(keel_req *r, void *arg, int status)
{
    rv_job *j = arg;
    if (status == 0) {
        json_object_set_new(j->out, "next_cursor", j->next[0] ? json_string(j->next) : json_null());
        if (j->next[0])
            app_link_next(r, "cursor", j->next);
    }
    answer(r, j, status, 200);
}

static keel_flow h_list(keel_req *r)
{
    rv_job *j = KEEL_REQ_JOB(r, rv_job, rv_cleanup);
    json_t *q = keel_req_query_json(r);
    const char *v;
    if ((v = json_string_value(json_object_get(q, "status"))))
        snprintf(j->status, sizeof(j->status), "%s", v);
    if ((v = json_string_value(json_object_get(q, "resource_type"))))
        snprintf(j->type, sizeof(j->type), "%s", v);
    json_int_t lim = json_integer_value(json_object_get(q, "limit"));
    j->limit = lim > 0 ? (size_t)lim : 50;
    if ((v = json_string_value(json_object_get(q, "cursor")))) {
        char *end;
        long long at = strtoll(v, &end, 10);
        if (end == v || *end != '_' || !end[1] || strlen(end + 1) >= sizeof(j->cur_id)) {
            app_invalid(r, "/cursor", "is not a cursor this list gave");
            return KEEL_DONE;
        }
        j->cur_at = at;
        snprintf(j->cur_id, sizeof(j->cur_id), "%s", end + 1);
        j->has_cursor = 1;
    }
    return keel_db_job_run(r, DB, db_list, listed, j);
}

static int db_get(keel_db_conn *c, void *arg)
{
    rv_job *j = arg;
    int rc = load_item(c, j->id, &j->out);
    if (rc < 0)
        return rc;
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->id)};
    keel_db_rows *rows;
    if ((rc = keel_db_query(c,
                            "SELECT reporter_id, reason, created_at FROM review_reports WHERE "
                            "review_id = $1 ORDER BY created_at, reporter_id LIMIT 100",
                            p, 1, &rows)) < 0)
        return rc;
    json_t *reps = json_array();
    while ((rc = keel_db_rows_next(rows)) == 1)
        json_array_append_new(reps, keel_db_row_json(rows));
    keel_db_rows_free(rows);
    json_object_set_new(j->out, "report_list", reps);
    if (rc < 0)
        return rc;
    const char *type = json_string_value(json_object_get(j->out, "resource_type"));
    const review_kind *k = type ? kind_of(type, strlen(type)) : NULL;
    json_t *res = k ? k->describe(c, json_string_value(json_object_get(j->out, "resource_id")))
                    : NULL;
    json_object_set_new(j->out, "resource", res ? res : json_null());
    return 0;
}

static void got(keel_req *r, void *arg, int status)
{
    answer(r, arg, status, 200);
}

static rv_job *by_id(keel_req *r)
{
    rv_job *j = KEEL_REQ_JOB(r, rv_job, rv_cleanup);
    keel_str id = keel_req_param(r, "id");
    snprintf(j->id, sizeof(j->id), "%.*s", (int)(id.len < 63 ? id.len : 63), id.ptr);
    return j;
}

static keel_flow h_get(keel_req *r)
{
    return keel_db_job_run(r, DB, db_get, got, by_id(r));
}

/* ---------------------------------------------------------------- decisions */

static int db_decide(keel_db_conn *c, void *arg)
{
    rv_job *j = arg;
    json_t *before = NULL;
    int rc = load_item(c, j->id, &before);
    if (rc < 0)
        return rc;
    const char *to = !strcmp(j->decision, "approve") ? "approved" : "rejected";
    const char *type = json_string_value(json_object_get(before, "resource_type"));
    const char *rid = json_string_value(json_object_get(before, "resource_id"));
    const review_kind *k = type ? kind_of(type, strlen(type)) : NULL;
    int64_t now = app_now();
    char who[96];
    snprintf(who, sizeof(who), "%s:%s", j->who.kind, j->who.id);
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->id), KEEL_DB_P_TEXT(to), KEEL_DB_P_TEXT(who),
                         KEEL_DB_P_INT(now), KEEL_DB_P_TEXT(j->reason)};
    if ((rc = keel_db_exec(c,
                           "UPDATE review_items SET status = $2, decided_by = $3, decided_at = $4, "
                           "updated_at = $4, decision_reason = $5 WHERE id = $1",
                           p, 5, NULL)) < 0)
        goto out;
    if (k && (rc = k->set_hidden(c, rid, to[0] == 'r', now)) < 0)
        goto out;
    if ((rc = load_item(c, j->id, &j->out)) < 0)
        goto out;
    json_t *diff = json_pack("{s:{s:O,s:s},s:{s:s},s:{s:s,s:s}}", "status", "from",
                             json_object_get(before, "status"), "to", to, "reason", "to",
                             j->reason, "resource", "type", type ? type : "", "id",
                             rid ? rid : "");
    rc = app_audit_append(c, &j->who, to[0] == 'r' ? "review.reject" : "review.approve",
                          "review", j->id, diff);
    json_decref(diff);
out:
    json_decref(before);
    return rc;
}

static keel_flow h_decide(keel_req *r)
{
    rv_job *j = by_id(r);
    json_t *b = keel_req_json(r);
    snprintf(j->decision, sizeof(j->decision), "%s",
             json_string_value(json_object_get(b, "decision")));
    snprintf(j->reason, sizeof(j->reason), "%s", json_string_value(json_object_get(b, "reason")));
    app_actor_of(r, &j->who);
    return keel_db_job_run_tx(r, DB, db_decide, got, j);
}

/* ---------------------------------------------------------------- stats */

static int count_into(keel_db_conn *c, const char *sql, const keel_db_param *p, size_t np,
                      json_t *obj)
{
    keel_db_rows *rows;
    int rc = keel_db_query(c, sql, p, np, &rows);
    if (rc < 0)
        return rc;
    while ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str k = keel_db_get_text(rows, 0);
        char key[64];
        snprintf(key, sizeof(key), "%.*s", (int)k.len, k.ptr ? k.ptr : "");
        json_object_set_new(obj, key, json_integer(keel_db_get_int(rows, 1)));
    }
    keel_db_rows_free(rows);
    return rc < 0 ? rc : 0;
}

static int db_stats(keel_db_conn *c, void *arg)
{
    rv_job *j = arg;
    json_t *by_status = json_object(), *by_role = json_object(), *files = json_object(),
           *reviews = json_object(), *jobs = json_object(), *per_day = json_array();
    json_decref(j->out);
    j->out = json_pack("{s:{s:o,s:o},s:o,s:{s:o,s:o},s:o}", "users", "by_status", by_status,
                       "by_role", by_role, "files", files, "queues", "reviews", reviews, "jobs",
                       jobs, "analytics_events_per_day", per_day);
    int rc;
    if ((rc = count_into(c,
                         "SELECT CASE WHEN deleted_at IS NOT NULL THEN 'deleted' ELSE status END "
                         "AS s, COUNT(*) FROM users GROUP BY s",
                         NULL, 0, by_status)) < 0 ||
        (rc = count_into(c, "SELECT role, COUNT(*) FROM users WHERE deleted_at IS NULL GROUP BY "
                            "role",
                         NULL, 0, by_role)) < 0 ||
        (rc = count_into(c, "SELECT status, COUNT(*) FROM review_items GROUP BY status", NULL, 0,
                         reviews)) < 0 ||
        (rc = count_into(c, "SELECT state, COUNT(*) FROM keel_jobs GROUP BY state", NULL, 0,
                         jobs)) < 0)
        return rc;
    keel_db_rows *rows;
    if ((rc = keel_db_query(c,
                            "SELECT COUNT(*), COALESCE(SUM(size), 0), COUNT(hidden_at) FROM files",
                            NULL, 0, &rows)) < 0)
        return rc;
    if (keel_db_rows_next(rows) == 1) {
        json_object_set_new(files, "count", json_integer(keel_db_get_int(rows, 0)));
        json_object_set_new(files, "bytes", json_integer(keel_db_get_int(rows, 1)));
        json_object_set_new(files, "hidden", json_integer(keel_db_get_int(rows, 2)));
    }
    keel_db_rows_free(rows);
    /* what the storage holds: each content once (files are stored by hash) */
    if ((rc = keel_db_query(c,
                            "SELECT COUNT(*), COALESCE(SUM(s), 0) FROM (SELECT MAX(size) AS s "
                            "FROM files GROUP BY sha256) t",
                            NULL, 0, &rows)) < 0)
        return rc;
    if (keel_db_rows_next(rows) == 1) {
        json_object_set_new(files, "stored_objects", json_integer(keel_db_get_int(rows, 0)));
        json_object_set_new(files, "stored_bytes", json_integer(keel_db_get_int(rows, 1)));
    }
    keel_db_rows_free(rows);
    int64_t day0 = (app_now() / 86400 - 13) * 86400;
    keel_db_param p[] = {KEEL_DB_P_INT(day0 * 1000)};
    if ((rc = keel_db_query(c,
                            "SELECT ts / 86400000 AS d, COUNT(*) FROM analytics_events WHERE "
                            "ts >= $1 GROUP BY d ORDER BY d",
                            p, 1, &rows)) < 0)
        return rc;
    int64_t counts[14] = {0};
    while ((rc = keel_db_rows_next(rows)) == 1) {
        int64_t d = keel_db_get_int(rows, 0) * 86400 - day0;
        if (d >= 0 && d / 86400 < 14)
            counts[d / 86400] = keel_db_get_int(rows, 1);
    }
    keel_db_rows_free(rows);
    if (rc < 0)
        return rc;
    for (int i = 0; i < 14; i++) {
        char t[32];
        app_format_time(day0 + (int64_t)i * 86400, t);
        t[10] = '\0';
        json_array_append_new(per_day, json_pack("{s:s,s:I}", "day", t, "events",
                                                 (json_int_t)counts[i]));
    }
    return 0;
}

static keel_flow h_stats(keel_req *r)
{
    rv_job *j = KEEL_REQ_JOB(r, rv_job, rv_cleanup);
    return keel_db_job_run(r, DB, db_stats, got, j);
}

/* ---------------------------------------------------------------- routes */

#define S_REASON "{\"type\":\"string\",\"minLength\":1,\"maxLength\":1000}"

static const keel_route review_routes[] = {
    {.name = "files.report", .method = "POST", .path = "/api/v1/files/:id/report",
     .handler = h_report_file, .auth = "user", .rate_limit = "strict",
     .summary = "Report a file (one's own, or an avatar) for review",
     .request_schema = "{\"type\":\"object\",\"required\":[\"reason\"],\"properties\":{"
                       "\"reason\":" S_REASON "}}"},
    {.name = "admin.reviews.list", .method = "GET", .path = "/api/v1/admin/reviews",
     .handler = h_list, .auth = "any", .permission = "reviews:manage",
     .summary = "The review queue, most recently reported first, cursor-paged",
     .query_schema = "{\"type\":\"object\",\"properties\":{\"status\":{\"enum\":[\"pending\","
                     "\"approved\",\"rejected\"]},\"resource_type\":{\"type\":\"string\","
                     "\"maxLength\":31},\"limit\":{\"type\":\"integer\",\"minimum\":1,"
                     "\"maximum\":200},\"cursor\":{\"type\":\"string\",\"maxLength\":80}}}"},
    {.name = "admin.reviews.get", .method = "GET", .path = "/api/v1/admin/reviews/:id",
     .handler = h_get, .auth = "any", .permission = "reviews:manage",
     .summary = "One review item with its reports and the resource"},
    {.name = "admin.reviews.decide", .method = "POST", .path = "/api/v1/admin/reviews/:id/decision",
     .handler = h_decide, .auth = "any", .permission = "reviews:manage",
     .summary = "Approve or reject (hides the resource from all but reviewers); audited",
     .request_schema = "{\"type\":\"object\",\"required\":[\"decision\",\"reason\"],"
                       "\"properties\":{\"decision\":{\"enum\":[\"approve\",\"reject\"]},"
                       "\"reason\":" S_REASON "}}"},
    {.name = "admin.stats", .method = "GET", .path = "/api/v1/admin/stats", .handler = h_stats,
     .auth = "any", .permission = "admin:access",
     .summary = "Users by status and role, files and bytes, queue sizes, events per day"},
};

int app_reviews_setup(keel_service *svc)
{
    DB = keel_service_db(svc);
    return keel_service_add_routes(svc, review_routes,
                                   sizeof(review_routes) / sizeof(review_routes[0]));
}
