/* events.c — /api/v1/events: the reference resource, written as the model
 * for a service's own resources (docs/events.md).
 *
 * Shape of every write: the handler reads and checks the request on its
 * loop (the route's schema has already checked types and formats), copies
 * what it needs into a job in the request's arena, and runs one function
 * in one transaction on the database pool (keel_db_job_run_tx). That
 * function loads the event, decides (visibility, permission, legal hold,
 * version), writes, reloads, and appends the audit record last — so the
 * event, its history and its audit record commit together or not at all.
 * A refusal decided inside the transaction returns EV_REFUSED (rolling it
 * back) with the status and detail in the job; `app_ev_done` answers.
 *
 * Who may do what (on top of the route's permission, events:read /
 * events:write): admins (admin:access) everything; the owner and active
 * assignees read and write; reviewers and viewers read; anyone else reads
 * public, internal and confidential events and nothing restricted — a
 * restricted event is absent for them (404, never in lists, counts, trees
 * or search). API keys without admin:access act on non-restricted events
 * as an assignee would. Delegations are assignments made by an assignee,
 * with an expiry (event_assignments.delegated_from).
 *
 * Concurrency: every write bumps `version` with
 * `UPDATE ... WHERE id = $ AND version = $expected`, so of two writers
 * holding one version exactly one wins and the other gets 412 — on
 * PostgreSQL the second UPDATE waits for the first's row lock and then
 * sees the new version. Moves and child creation take the tree lock row
 * first, so cycle and depth checks never read a tree another move is
 * changing. */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "app/events_internal.h"

keel_db *app_ev_db;
static int64_t max_depth;   /* EVENTS_MAX_DEPTH */
static int parent_waits;    /* EVENTS_PARENT_WAITS_FOR_CHILDREN */
static int64_t page_max;    /* EVENTS_PAGE_MAX */


/* ---------------------------------------------------------------- lifecycle */

static const char *const states[] = {"draft",     "scheduled", "active",
                                     "completed", "cancelled", "archived"};

/* The states `from` may move to (NULL-terminated). */
static const char *const *next_states(const char *from)
{
    static const char *const draft[] = {"scheduled", "cancelled", NULL};
    static const char *const scheduled[] = {"active", "cancelled", NULL};
    static const char *const active[] = {"completed", "cancelled", NULL};
    static const char *const completed[] = {"archived", NULL};
    static const char *const cancelled[] = {"archived", NULL};
    static const char *const none[] = {NULL};
    return !strcmp(from, "draft")       ? draft
           : !strcmp(from, "scheduled") ? scheduled
           : !strcmp(from, "active")    ? active
           : !strcmp(from, "completed") ? completed
           : !strcmp(from, "cancelled") ? cancelled
                                        : none;
}

static int may_move(const char *from, const char *to)
{
    for (const char *const *s = next_states(from); *s; s++)
        if (!strcmp(*s, to))
            return 1;
    return 0;
}

/* ---------------------------------------------------------------- rows */

int app_ev_rows_array(keel_db_rows *rows, json_t *(*row_json)(const keel_db_rows *),
                      json_t **out)
{
    json_t *data = json_array();
    int rc;
    while ((rc = keel_db_rows_next(rows)) == 1)
        json_array_append_new(data, row_json(rows));
    keel_db_rows_free(rows);
    if (rc < 0) {
        json_decref(data);
        data = NULL;
    }
    *out = data;
    return rc < 0 ? rc : 0;
}

json_t *app_ev_text(const keel_db_rows *rows, size_t col)
{
    if (keel_db_is_null(rows, col))
        return json_null();
    keel_str s = keel_db_get_text(rows, col);
    return json_stringn(s.ptr ? s.ptr : "", s.len);
}

json_t *app_ev_time(const keel_db_rows *rows, size_t col)
{
    if (keel_db_is_null(rows, col))
        return json_null();
    char t[32];
    app_format_time(keel_db_get_int(rows, col), t);
    return json_string(t);
}

/* An EV_COLUMNS row as the API's JSON (new reference); its path, the
 * materialised "/root/.../id/", to path (may be NULL). */
json_t *app_ev_json(const keel_db_rows *rows, char path[2400])
{
    json_t *o = json_object();
    static const struct {
        const char *name;
        size_t col;
    } texts[] = {{"id", 0},       {"title", 1},    {"description", 2}, {"type", 3},
                 {"state", 4},    {"location", 7}, {"owner_id", 8},    {"parent_id", 9},
                 {"classification", 14}};
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        json_object_set_new(o, texts[i].name, app_ev_text(rows, texts[i].col));
    json_object_set_new(o, "starts_at", app_ev_time(rows, 5));
    json_object_set_new(o, "ends_at", app_ev_time(rows, 6));
    json_object_set_new(o, "depth", json_integer(keel_db_get_int(rows, 10)));
    if (path) {
        keel_str p = keel_db_get_text(rows, 11);
        snprintf(path, 2400, "%.*s", (int)p.len, p.ptr ? p.ptr : "");
    }
    /* tags are stored ",a,b," (a tag filter is one LIKE) */
    json_t *tags = json_array();
    keel_str t = keel_db_get_text(rows, 12);
    for (size_t i = 0; t.ptr && i < t.len;) {
        size_t e = i;
        while (e < t.len && t.ptr[e] != ',')
            e++;
        if (e > i)
            json_array_append_new(tags, json_stringn(t.ptr + i, e - i));
        i = e + 1;
    }
    json_object_set_new(o, "tags", tags);
    keel_str cu = keel_db_get_text(rows, 13);
    json_t *custom = cu.ptr ? json_loadb(cu.ptr, cu.len, 0, NULL) : NULL;
    json_object_set_new(o, "custom", custom ? custom : json_object());
    if (keel_db_is_null(rows, 15))
        json_object_set_new(o, "risk", json_null());
    else
        json_object_set_new(o, "risk",
                            json_pack("{s:o,s:o,s:o}", "level", app_ev_text(rows, 15), "score",
                                      keel_db_is_null(rows, 16)
                                          ? json_null()
                                          : json_integer(keel_db_get_int(rows, 16)),
                                      "notes", app_ev_text(rows, 17)));
    if (keel_db_is_null(rows, 18))
        json_object_set_new(o, "budget", json_null());
    else
        json_object_set_new(o, "budget",
                            json_pack("{s:f,s:o}", "amount", keel_db_get_double(rows, 18),
                                      "currency", app_ev_text(rows, 19)));
    json_object_set_new(o, "version", json_integer(keel_db_get_int(rows, 20)));
    if (keel_db_get_bool(rows, 21))
        json_object_set_new(o, "legal_hold",
                            json_pack("{s:o,s:o,s:o}", "reason", app_ev_text(rows, 22), "by",
                                      app_ev_text(rows, 23), "at", app_ev_time(rows, 24)));
    else
        json_object_set_new(o, "legal_hold", json_null());
    json_object_set_new(o, "created_at", app_ev_time(rows, 25));
    json_object_set_new(o, "updated_at", app_ev_time(rows, 26));
    keel_str rr = keel_db_get_text(rows, 27);
    json_t *rule = rr.ptr ? json_loadb(rr.ptr, rr.len, 0, NULL) : NULL;
    json_object_set_new(o, "recurrence", rule ? rule : json_null());
    json_object_set_new(o, "template_id", app_ev_text(rows, 28));
    return o;
}

/* ---------------------------------------------------------------- jobs */

static void ev_cleanup(void *p)
{
    app_ev_job *j = p;
    json_decref(j->out);
    json_decref(j->before);
    json_decref(j->err_extra);
}

static void ev_reset(app_ev_job *j)
{
    json_decref(j->out);
    json_decref(j->before);
    json_decref(j->err_extra);
    j->out = j->before = j->err_extra = NULL;
    j->err_status = 0;
}

int app_ev_refuse(app_ev_job *j, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->err_detail, sizeof(j->err_detail), fmt, ap);
    va_end(ap);
    j->err_status = status;
    return EV_REFUSED;
}

static void set_etag(keel_req *r, const json_t *ev)
{
    char tag[40];
    snprintf(tag, sizeof(tag), "\"%lld\"",
             (long long)json_integer_value(json_object_get(ev, "version")));
    keel_res_set_header(r, "ETag", tag);
}

void app_ev_done(keel_req *r, void *arg, int status)
{
    app_ev_job *j = arg;
    if (status == EV_REFUSED) {
        keel_respond_problem_ex(r, j->err_status, NULL, j->err_detail,
                                j->err_extra ? json_incref(j->err_extra) : NULL);
        return;
    }
    if (status < 0) {
        keel_db_respond_error(r, status);
        return;
    }
    keel_res_set_header(r, "Cache-Control", "no-store");
    if (!j->out) {
        keel_respond(r, 204, NULL, NULL, 0);
        return;
    }
    if (json_object_get(j->out, "version") && json_object_get(j->out, "state"))
        set_etag(r, j->out);
    if (j->status == 201) {
        char loc[128];
        snprintf(loc, sizeof(loc), "/api/v1/events/%s",
                 json_string_value(json_object_get(j->out, "id")));
        keel_res_set_header(r, "Location", loc);
    }
    keel_respond_json(r, j->status ? j->status : 200, json_incref(j->out));
}

/* Starts a job on the event of the path. */
void *app_ev_job_new(keel_req *r, size_t size)
{
    app_ev_job *j = keel_req_job_new(r, size, ev_cleanup);
    app_actor_of(r, &j->who);
    keel_str id = keel_req_param(r, "id");
    if (id.ptr)
        snprintf(j->id, sizeof(j->id), "%.*s", (int)(id.len < 63 ? id.len : 63), id.ptr);
    return j;
}

/* If-Match: the version it names (-1 for "*"); answers 428 without one
 * and 412 when it is not a strong tag of ours. */
static int read_if_match(keel_req *r, app_ev_job *j)
{
    keel_str v = keel_req_header(r, "If-Match");
    if (!v.ptr) {
        keel_respond_problem(r, 428, "this change needs If-Match with the event's ETag "
                                     "(read it from GET /api/v1/events/:id)");
        return -1;
    }
    while (v.len && (v.ptr[0] == ' ' || v.ptr[0] == '\t'))
        v.ptr++, v.len--;
    while (v.len && (v.ptr[v.len - 1] == ' ' || v.ptr[v.len - 1] == '\t'))
        v.len--;
    if (v.len == 1 && v.ptr[0] == '*') {
        j->if_match = -1;
        return 0;
    }
    char buf[32];
    if (v.len < 3 || v.len > 22 || v.ptr[0] != '"' || v.ptr[v.len - 1] != '"') {
        keel_respond_problem(r, 412, "If-Match does not name the event's current version");
        return -1;
    }
    snprintf(buf, sizeof(buf), "%.*s", (int)(v.len - 2), v.ptr + 1);
    char *end;
    long long x = strtoll(buf, &end, 10);
    if (*end || x < 1) {
        keel_respond_problem(r, 412, "If-Match does not name the event's current version");
        return -1;
    }
    j->if_match = x;
    return 0;
}

/* ---------------------------------------------------------------- loading and deciding */

int app_ev_is_user(const app_actor *a)
{
    return !strcmp(a->kind, "user");
}

static int can_read(const app_ev_job *j, const json_t *ev)
{
    if (j->who.admin || j->rel != APP_EV_NONE)
        return 1;
    return strcmp(json_string_value(json_object_get(ev, "classification")), "restricted") != 0;
}

static int can_write(const app_ev_job *j, const json_t *ev)
{
    if (j->who.admin || j->rel >= APP_EV_ASSIGNEE)
        return 1;
    /* a service key (events:write checked by the route) on what it can see */
    return !app_ev_is_user(&j->who) && can_read(j, ev);
}

/* Whether the event at path, or an ancestor, is under legal hold: the
 * ancestors' ids are the path's segments. */
int app_ev_hold_on(keel_db_conn *c, const char *path, int *held)
{
    keel_db_param p[65];
    size_t n = 0;
    char ids[65][37];
    for (const char *s = path; *s && n < 65;) {
        while (*s == '/')
            s++;
        const char *e = strchr(s, '/');
        if (!e || e == s)
            break;
        snprintf(ids[n], sizeof(ids[n]), "%.*s", (int)(e - s < 36 ? e - s : 36), s);
        p[n] = KEEL_DB_P_TEXT(ids[n]);
        n++;
        s = e;
    }
    *held = 0;
    if (!n)
        return 0;
    char sql[1024];
    int len = snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM events WHERE legal_hold AND id IN (");
    for (size_t i = 0; i < n; i++)
        len += snprintf(sql + len, sizeof(sql) - (size_t)len, "%s$%zu", i ? ", " : "", i + 1);
    snprintf(sql + len, sizeof(sql) - (size_t)len, ")");
    keel_db_rows *rows;
    int rc = keel_db_query(c, sql, p, n, &rows);
    if (rc < 0)
        return rc;
    if ((rc = keel_db_rows_next(rows)) == 1)
        *held = keel_db_get_int(rows, 0) > 0;
    keel_db_rows_free(rows);
    return rc < 0 ? rc : 0;
}

/* Reads one event by id (not deleted) into *out and its path: 0 or
 * KEEL_EDB_NOROW. */
static int fetch_event(keel_db_conn *c, const char *id, json_t **out, char path[2400])
{
    *out = NULL;
    keel_db_param p[] = {KEEL_DB_P_TEXT(id)};
    keel_db_rows *rows;
    int rc = keel_db_query(c, "SELECT " EV_COLUMNS " FROM events WHERE id = $1 AND "
                              "deleted_at IS NULL",
                           p, 1, &rows);
    if (rc < 0)
        return rc;
    if ((rc = keel_db_rows_next(rows)) == 1)
        *out = app_ev_json(rows, path);
    keel_db_rows_free(rows);
    if (rc < 0)
        return rc;
    return *out ? 0 : KEEL_EDB_NOROW;
}

/* Loads j->id into j->before with the caller's relation and the hold;
 * an event the caller may not see is "not found" (no existence leak). */
int app_ev_load(keel_db_conn *c, app_ev_job *j)
{
    ev_reset(j);
    int rc = fetch_event(c, j->id, &j->before, j->path);
    if (rc == KEEL_EDB_NOROW)
        return app_ev_refuse(j, 404, "no event with this id");
    if (rc < 0)
        return rc;
    if ((rc = app_ev_relation(c, &j->who, j->id,
                       json_string_value(json_object_get(j->before, "owner_id")), &j->rel)) < 0)
        return rc;
    if (!can_read(j, j->before))
        return app_ev_refuse(j, 404, "no event with this id");
    return app_ev_hold_on(c, j->path, &j->held);
}

/* The checks of a change: may write, not held, the version named. */
int app_ev_check_change(app_ev_job *j, int need_version)
{
    if (!can_write(j, j->before))
        return app_ev_refuse(j, 403, "only the event's owner, its assignees or an administrator may "
                              "change it");
    if (j->held)
        return app_ev_refuse(j, 423, "the event or one of its parents is under legal hold");
    int64_t v = json_integer_value(json_object_get(j->before, "version"));
    if (need_version && j->if_match != -1 && j->if_match != v) {
        j->err_extra = json_pack("{s:I}", "current_version", (json_int_t)v);
        return app_ev_refuse(j, 412, "the event changed since that version (If-Match): read it again");
    }
    return 0;
}

static int tree_lock(keel_db_conn *c)
{
    return keel_db_exec(c, "UPDATE event_tree_lock SET moves = moves + 1 WHERE id = 1", NULL, 0,
                        NULL);
}

/* ---------------------------------------------------------------- the body */

/* The writable fields of an event, from a create body merged over
 * defaults or a PATCH merged over the stored event. */
typedef struct fields {
    json_t *ev;        /* merged API form (borrowed from the job) */
    int64_t starts_at, ends_at;
    int has_ends;
    char tags[1200];
    char *custom;      /* json_dumps: free */
    char *recurrence;  /* json_dumps or NULL: free */
    int parent_given;  /* the body names parent_id (create or move) */
} fields;

/* Checks the merged event's cross-field rules and flattens it for SQL;
 * adds {pointer, message} to errs. */
static void flatten(fields *f, json_t *errs)
{
    json_t *ev = f->ev;
    const char *sa = json_string_value(json_object_get(ev, "starts_at"));
    json_t *ea = json_object_get(ev, "ends_at");
    if (!sa || app_parse_time(sa, strlen(sa), &f->starts_at) < 0)
        json_array_append_new(errs, json_pack("{s:s,s:s}", "pointer", "/starts_at", "message",
                                              "must be an RFC 3339 date-time"));
    f->has_ends = json_is_string(ea);
    if (f->has_ends &&
        app_parse_time(json_string_value(ea), json_string_length(ea), &f->ends_at) < 0)
        json_array_append_new(errs, json_pack("{s:s,s:s}", "pointer", "/ends_at", "message",
                                              "must be an RFC 3339 date-time"));
    else if (f->has_ends && sa && f->ends_at <= f->starts_at)
        json_array_append_new(errs, json_pack("{s:s,s:s}", "pointer", "/ends_at", "message",
                                              "must be after starts_at"));
    const char *title = json_string_value(json_object_get(ev, "title"));
    if (!title || !*title)
        json_array_append_new(errs, json_pack("{s:s,s:s}", "pointer", "/title", "message",
                                              "must not be empty"));
    size_t k = 0;
    f->tags[k++] = ',';
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(ev, "tags"), i, t) {
        const char *s = json_string_value(t);
        size_t n = s ? strlen(s) : 0;
        if (!n || k + n + 2 >= sizeof(f->tags))
            continue;
        memcpy(f->tags + k, s, n);
        k += n;
        f->tags[k++] = ',';
    }
    f->tags[k] = '\0';
    json_t *risk = json_object_get(ev, "risk"), *budget = json_object_get(ev, "budget");
    if (json_is_object(risk) && !json_is_string(json_object_get(risk, "level")))
        json_array_append_new(errs, json_pack("{s:s,s:s}", "pointer", "/risk/level", "message",
                                              "is required with a risk"));
    if (json_is_object(budget) && (!json_is_number(json_object_get(budget, "amount")) ||
                                   !json_is_string(json_object_get(budget, "currency"))))
        json_array_append_new(errs, json_pack("{s:s,s:s}", "pointer", "/budget", "message",
                                              "needs an amount and a currency"));
    f->custom = json_dumps(json_object_get(ev, "custom"), JSON_COMPACT | JSON_SORT_KEYS);
    json_t *rule = json_object_get(ev, "recurrence");
    if (json_is_object(rule)) {
        app_ev_rrule_check(rule, errs);
        f->recurrence = json_dumps(rule, JSON_COMPACT | JSON_SORT_KEYS);
    }
}

/* The parameters $1.. of the writable columns, in this order:
 * title, description, type, starts_at, ends_at, location, owner_id,
 * tags, custom, classification, risk_level, risk_score, risk_notes,
 * budget_amount, budget_currency (15). */
#define EV_WRITE_COLS                                                                            \
    "title, description, type, starts_at, ends_at, location, owner_id, tags, custom, "          \
    "classification, risk_level, risk_score, risk_notes, budget_amount, budget_currency"

static keel_db_param str_or_null(json_t *v)
{
    return json_is_string(v) ? KEEL_DB_P_TEXT(json_string_value(v)) : KEEL_DB_P_NULL();
}

static void write_params(const fields *f, keel_db_param p[15])
{
    json_t *ev = f->ev, *risk = json_object_get(ev, "risk"),
           *budget = json_object_get(ev, "budget");
    json_t *score = json_object_get(risk, "score");
    p[0] = KEEL_DB_P_TEXT(json_string_value(json_object_get(ev, "title")));
    p[1] = KEEL_DB_P_TEXT(json_string_value(json_object_get(ev, "description")));
    p[2] = KEEL_DB_P_TEXT(json_string_value(json_object_get(ev, "type")));
    p[3] = KEEL_DB_P_INT(f->starts_at);
    p[4] = f->has_ends ? KEEL_DB_P_INT(f->ends_at) : KEEL_DB_P_NULL();
    p[5] = KEEL_DB_P_TEXT(json_string_value(json_object_get(ev, "location")));
    p[6] = KEEL_DB_P_TEXT(json_string_value(json_object_get(ev, "owner_id")));
    p[7] = KEEL_DB_P_TEXT(f->tags);
    p[8] = KEEL_DB_P_TEXT(f->custom ? f->custom : "{}");
    p[9] = KEEL_DB_P_TEXT(json_string_value(json_object_get(ev, "classification")));
    p[10] = str_or_null(json_object_get(risk, "level"));
    p[11] = json_is_integer(score) ? KEEL_DB_P_INT(json_integer_value(score)) : KEEL_DB_P_NULL();
    p[12] = str_or_null(json_object_get(risk, "notes"));
    p[13] = json_is_number(json_object_get(budget, "amount"))
                ? KEEL_DB_P_DOUBLE(json_number_value(json_object_get(budget, "amount")))
                : KEEL_DB_P_NULL();
    p[14] = str_or_null(json_object_get(budget, "currency"));
}

static int type_known(keel_db_conn *c, const char *type, int *known)
{
    keel_db_param p[] = {KEEL_DB_P_TEXT(type)};
    keel_db_rows *rows;
    int rc = keel_db_query(c, "SELECT 1 FROM event_types WHERE name = $1", p, 1, &rows);
    if (rc < 0)
        return rc;
    rc = keel_db_rows_next(rows);
    keel_db_rows_free(rows);
    *known = rc == 1;
    return rc < 0 ? rc : 0;
}

/* Refuses (422) with every broken rule of errs. */
static int invalid(app_ev_job *j, json_t *errs)
{
    j->err_extra = json_pack("{s:O}", "errors", errs);
    return app_ev_refuse(j, 422, "the event is not valid: %zu rule%s broken", json_array_size(errs),
                  json_array_size(errs) == 1 ? "" : "s");
}

/* A new parent for the event (create: self_path NULL; move: the event's
 * own path and subtree height): loads it, checks visibility, permission,
 * hold, cycle and depth. Writes the parent's path and depth. */
static int check_parent(keel_db_conn *c, app_ev_job *j, const char *parent_id, const char *self_path,
                        int64_t height, char ppath[2400], int64_t *pdepth)
{
    json_t *parent = NULL;
    int rc = fetch_event(c, parent_id, &parent, ppath);
    if (rc == KEEL_EDB_NOROW) {
        json_t *errs = json_pack("[{s:s,s:s}]", "pointer", "/parent_id", "message",
                                 "no event with this id");
        rc = invalid(j, errs);
        json_decref(errs);
        return rc;
    }
    if (rc < 0)
        return rc;
    app_ev_job pj = {.who = j->who};
    int held = 0;
    if ((rc = app_ev_relation(c, &j->who, parent_id,
                       json_string_value(json_object_get(parent, "owner_id")), &pj.rel)) < 0 ||
        (rc = app_ev_hold_on(c, ppath, &held)) < 0) {
        json_decref(parent);
        return rc;
    }
    *pdepth = json_integer_value(json_object_get(parent, "depth"));
    int readable = can_read(&pj, parent), writable = can_write(&pj, parent);
    json_decref(parent);
    if (!readable) {
        json_t *errs = json_pack("[{s:s,s:s}]", "pointer", "/parent_id", "message",
                                 "no event with this id");
        rc = invalid(j, errs);
        json_decref(errs);
        return rc;
    }
    if (!writable)
        return app_ev_refuse(j, 403, "only the parent's owner, its assignees or an administrator may "
                              "add events under it");
    if (held)
        return app_ev_refuse(j, 423, "the parent event is under legal hold");
    if (self_path && !strncmp(ppath, self_path, strlen(self_path)))
        return app_ev_refuse(j, 409, "an event cannot move under itself or one of its descendants");
    if (*pdepth + 1 + height > max_depth)
        return app_ev_refuse(j, 409, "the tree would be %lld levels deep; EVENTS_MAX_DEPTH is %lld",
                      (long long)(*pdepth + 1 + height), (long long)max_depth);
    return 0;
}

/* ---------------------------------------------------------------- create */

typedef struct create_job {
    app_ev_job e;
    json_t *body;   /* borrowed: the request's */
    char parent_id[64];
} create_job;

static int db_create(keel_db_conn *c, void *arg)
{
    create_job *j = arg;
    ev_reset(&j->e);
    json_t *ev = json_object();
    const char *tid = json_string_value(json_object_get(j->body, "template_id"));
    if (tid) {
        json_t *tf = NULL;
        int trc = app_ev_template_fields(c, tid, &tf);
        if (trc == KEEL_EDB_NOROW) {
            json_decref(ev);
            json_t *errs = json_pack("[{s:s,s:s}]", "pointer", "/template_id", "message",
                                     "no template with this id");
            trc = invalid(&j->e, errs);
            json_decref(errs);
            return trc;
        }
        if (trc < 0) {
            json_decref(ev);
            return trc;
        }
        json_object_update(ev, tf);
        json_decref(tf);
    }
    json_object_update(ev, j->body); /* the body overrides the template */
    json_object_del(ev, "template_id");
    json_object_del(ev, "parent_id");
    static const char *const defaults[][2] = {{"description", ""}, {"type", "general"},
                                              {"location", ""}, {"classification", "internal"}};
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
        if (!json_object_get(ev, defaults[i][0]))
            json_object_set_new(ev, defaults[i][0], json_string(defaults[i][1]));
    if (!json_object_get(ev, "tags"))
        json_object_set_new(ev, "tags", json_array());
    if (!json_object_get(ev, "custom"))
        json_object_set_new(ev, "custom", json_object());
    /* a user owns what they create (an admin may name another owner); a
     * service key names the owner */
    if (app_ev_is_user(&j->e.who) && (!json_object_get(ev, "owner_id") || !j->e.who.admin))
        json_object_set_new(ev, "owner_id", json_string(j->e.who.id));
    if (!json_object_get(ev, "owner_id"))
        json_object_set_new(ev, "owner_id", json_string(""));
    j->e.before = ev; /* released with the job */
    fields f = {.ev = ev};
    json_t *errs = json_array();
    flatten(&f, errs);
    int known = 0, rc = type_known(c, json_string_value(json_object_get(ev, "type")), &known);
    if (rc == 0 && !known)
        json_array_append_new(errs, json_pack("{s:s,s:s}", "pointer", "/type", "message",
                                              "is not an event type"));
    else if (rc == 0)
        rc = app_ev_rules_check(c, ev, errs);
    const char *owner = json_string_value(json_object_get(ev, "owner_id"));
    if (rc == 0 && !*owner) {
        json_array_append_new(errs, json_pack("{s:s,s:s}", "pointer", "/owner_id", "message",
                                              "is required when an API key creates an event"));
    } else if (rc == 0 && strcmp(owner, j->e.who.id)) {
        json_t *user = NULL;
        rc = app_fetch_user(c, owner, 0, &user);
        json_decref(user);
        if (rc == KEEL_EDB_NOROW) {
            rc = 0;
            json_array_append_new(errs, json_pack("{s:s,s:s}", "pointer", "/owner_id", "message",
                                                  "no user with this id"));
        }
    }
    if (rc == 0 && json_array_size(errs))
        rc = invalid(&j->e, errs);
    json_decref(errs);
    char id[37], path[2400] = "", ppath[2400] = "";
    int64_t depth = 0;
    app_uuid(id);
    if (rc == 0 && *j->parent_id) {
        if ((rc = tree_lock(c)) == 0 &&
            (rc = check_parent(c, &j->e, j->parent_id, NULL, 0, ppath, &depth)) == 0)
            depth++;
    }
    if (rc == 0) {
        snprintf(path, sizeof(path), "%s%s%s/", *ppath ? ppath : "/", *ppath ? "" : "", id);
        int64_t now = app_now();
        keel_db_param p[23];
        write_params(&f, p);
        p[15] = KEEL_DB_P_TEXT(id);
        p[16] = *j->parent_id ? KEEL_DB_P_TEXT(j->parent_id) : KEEL_DB_P_NULL();
        p[17] = KEEL_DB_P_INT(depth);
        p[18] = KEEL_DB_P_TEXT(path);
        p[19] = KEEL_DB_P_INT(now);
        p[20] = KEEL_DB_P_INT(now);
        p[21] = f.recurrence ? KEEL_DB_P_TEXT(f.recurrence) : KEEL_DB_P_NULL();
        p[22] = tid ? KEEL_DB_P_TEXT(tid) : KEEL_DB_P_NULL();
        rc = keel_db_exec(c,
                          "INSERT INTO events (" EV_WRITE_COLS ", id, parent_id, depth, path, "
                          "created_at, updated_at, recurrence, template_id) VALUES ($1, $2, $3, "
                          "$4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, "
                          "$19, $20, $21, $22, $23)",
                          p, 23, NULL);
    }
    free(f.custom);
    free(f.recurrence);
    if (rc < 0)
        return rc;
    if ((rc = fetch_event(c, id, &j->e.out, NULL)) < 0)
        return rc;
    json_t *diff = app_audit_diff(NULL, j->e.out);
    rc = app_audit_append(c, &j->e.who, "event.create", "event", id, diff);
    json_decref(diff);
    j->e.status = 201;
    return rc;
}

static keel_flow h_create(keel_req *r)
{
    json_t *body = app_json_body(r);
    if (!body)
        return KEEL_DONE;
    create_job *j = app_ev_job_new(r, sizeof(create_job));
    j->body = body;
    const char *parent = json_string_value(json_object_get(body, "parent_id"));
    if (parent)
        snprintf(j->parent_id, sizeof(j->parent_id), "%s", parent);
    return keel_db_job_run_tx(r, app_ev_db, db_create, app_ev_done, j);
}

/* ---------------------------------------------------------------- read */

static int db_get(keel_db_conn *c, void *arg)
{
    app_ev_job *j = arg;
    int rc = app_ev_load(c, j);
    if (rc < 0)
        return rc;
    j->out = json_incref(j->before);
    return 0;
}

static keel_flow h_get(keel_req *r)
{
    app_ev_job *j = app_ev_job_new(r, sizeof(app_ev_job));
    return keel_db_job_run(r, app_ev_db, db_get, app_ev_done, j);
}

/* ---------------------------------------------------------------- update and move */

typedef struct patch_job {
    app_ev_job e;
    json_t *body; /* borrowed: the request's */
} patch_job;

/* Moves j's subtree under new_parent (NULL: makes it a root). */
static int move(keel_db_conn *c, app_ev_job *j, const char *new_parent)
{
    const char *cur = json_string_value(json_object_get(j->before, "parent_id"));
    if ((!cur && !new_parent) || (cur && new_parent && !strcmp(cur, new_parent)))
        return 0;
    int rc = tree_lock(c);
    if (rc < 0)
        return rc;
    /* the subtree's height below the event */
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->path)};
    keel_db_rows *rows;
    if ((rc = keel_db_query(c, "SELECT MAX(depth) FROM events WHERE substr(path, 1, length($1)) "
                               "= $1",
                            p, 1, &rows)) < 0)
        return rc;
    int64_t depth = json_integer_value(json_object_get(j->before, "depth")), height = 0;
    if (keel_db_rows_next(rows) == 1)
        height = keel_db_get_int(rows, 0) - depth;
    keel_db_rows_free(rows);
    char ppath[2400] = "", npath[2400];
    int64_t pdepth = -1;
    if (new_parent && (rc = check_parent(c, j, new_parent, j->path, height, ppath, &pdepth)) < 0)
        return rc;
    snprintf(npath, sizeof(npath), "%s%s/", new_parent ? ppath : "/", j->id);
    keel_db_param q[] = {KEEL_DB_P_TEXT(npath), KEEL_DB_P_TEXT(j->path),
                         KEEL_DB_P_INT(pdepth + 1 - depth)};
    if ((rc = keel_db_exec(c,
                           "UPDATE events SET path = $1 || substr(path, length($2) + 1), "
                           "depth = depth + $3 WHERE substr(path, 1, length($2)) = $2",
                           q, 3, NULL)) < 0)
        return rc;
    keel_db_param r2[] = {new_parent ? KEEL_DB_P_TEXT(new_parent) : KEEL_DB_P_NULL(),
                          KEEL_DB_P_TEXT(j->id)};
    return keel_db_exec(c, "UPDATE events SET parent_id = $1 WHERE id = $2", r2, 2, NULL);
}

static int db_patch(keel_db_conn *c, void *arg)
{
    patch_job *j = arg;
    int rc = app_ev_load(c, &j->e);
    if (rc < 0 || (rc = app_ev_check_change(&j->e, 1)) < 0)
        return rc;
    json_t *ev = json_deep_copy(j->e.before);
    const char *k;
    json_t *v;
    json_object_foreach(j->body, k, v) {
        if (!strcmp(k, "parent_id"))
            continue;
        /* risk and budget merge field by field (RFC 7396), null clears */
        json_t *old = json_object_get(ev, k);
        if (json_is_object(v) && json_is_object(old) && strcmp(k, "custom")) {
            json_t *m = json_deep_copy(old);
            const char *k2;
            json_t *v2;
            json_object_foreach(v, k2, v2)
                json_object_set(m, k2, v2);
            json_object_set_new(ev, k, m);
        } else {
            json_object_set(ev, k, v);
        }
    }
    if (json_object_get(j->body, "owner_id") && !j->e.who.admin &&
        j->e.rel != APP_EV_OWNER) {
        json_decref(ev);
        return app_ev_refuse(&j->e, 403, "only the owner or an administrator may hand an event over");
    }
    fields f = {.ev = ev};
    json_t *errs = json_array();
    flatten(&f, errs);
    int known = 0;
    rc = type_known(c, json_string_value(json_object_get(ev, "type")), &known);
    if (rc == 0 && !known)
        json_array_append_new(errs, json_pack("{s:s,s:s}", "pointer", "/type", "message",
                                              "is not an event type"));
    else if (rc == 0)
        rc = app_ev_rules_check(c, ev, errs);
    if (rc == 0 && json_array_size(errs))
        rc = invalid(&j->e, errs);
    json_decref(errs);
    json_t *np = json_object_get(j->body, "parent_id");
    if (rc == 0 && np)
        rc = move(c, &j->e, json_string_value(np));
    if (rc == 0) {
        keel_db_param p[19];
        write_params(&f, p);
        p[15] = KEEL_DB_P_INT(app_now());
        p[16] = KEEL_DB_P_TEXT(j->e.id);
        p[17] = KEEL_DB_P_INT(json_integer_value(json_object_get(j->e.before, "version")));
        p[18] = f.recurrence ? KEEL_DB_P_TEXT(f.recurrence) : KEEL_DB_P_NULL();
        int64_t n = 0;
        rc = keel_db_exec(c,
                          "UPDATE events SET title = $1, description = $2, type = $3, "
                          "starts_at = $4, ends_at = $5, location = $6, owner_id = $7, "
                          "tags = $8, custom = $9, classification = $10, risk_level = $11, "
                          "risk_score = $12, risk_notes = $13, budget_amount = $14, "
                          "budget_currency = $15, updated_at = $16, recurrence = $19, "
                          "version = version + 1 "
                          "WHERE id = $17 AND version = $18 AND deleted_at IS NULL",
                          p, 19, &n);
        if (rc == 0 && n == 0)
            rc = app_ev_refuse(&j->e, 412, "the event changed since that version (If-Match): read it "
                                    "again");
    }
    free(f.custom);
    free(f.recurrence);
    json_decref(ev);
    if (rc < 0)
        return rc;
    if ((rc = fetch_event(c, j->e.id, &j->e.out, NULL)) < 0)
        return rc;
    json_t *diff = app_audit_diff(j->e.before, j->e.out);
    json_object_del(diff, "version");
    json_object_del(diff, "updated_at");
    rc = app_audit_append(c, &j->e.who, np ? "event.move" : "event.update", "event", j->e.id,
                          diff);
    json_decref(diff);
    return rc;
}

static keel_flow h_patch(keel_req *r)
{
    json_t *body = app_json_body(r);
    if (!body)
        return KEEL_DONE;
    if (json_is_object(body) && json_object_size(body) == 0) {
        app_invalid(r, "", "must change at least one field");
        return KEEL_DONE;
    }
    patch_job *j = app_ev_job_new(r, sizeof(patch_job));
    j->body = body;
    if (read_if_match(r, &j->e) < 0)
        return KEEL_DONE;
    return keel_db_job_run_tx(r, app_ev_db, db_patch, app_ev_done, j);
}

/* ---------------------------------------------------------------- delete */

static int db_delete(keel_db_conn *c, void *arg)
{
    app_ev_job *j = arg;
    int rc = app_ev_load(c, j);
    if (rc < 0 || (rc = app_ev_check_change(j, 1)) < 0)
        return rc;
    if (!j->who.admin && j->rel != APP_EV_OWNER)
        return app_ev_refuse(j, 403, "only the owner or an administrator may delete an event");
    /* no move into the subtree while it goes */
    if ((rc = tree_lock(c)) < 0)
        return rc;
    /* the subtree goes with it; a held descendant keeps it all */
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->path), KEEL_DB_P_INT(app_now())};
    keel_db_rows *rows;
    if ((rc = keel_db_query(c, "SELECT COUNT(*) FROM events WHERE legal_hold AND "
                               "deleted_at IS NULL AND substr(path, 1, length($1)) = $1",
                            p, 1, &rows)) < 0)
        return rc;
    int64_t held = keel_db_rows_next(rows) == 1 ? keel_db_get_int(rows, 0) : 0;
    keel_db_rows_free(rows);
    if (held)
        return app_ev_refuse(j, 423, "an event of this subtree is under legal hold");
    int64_t n = 0;
    if ((rc = keel_db_exec(c,
                           "UPDATE events SET deleted_at = $2, updated_at = $2, "
                           "version = version + 1 WHERE substr(path, 1, length($1)) = $1 "
                           "AND deleted_at IS NULL",
                           p, 2, &n)) < 0)
        return rc;
    json_t *diff = json_pack("{s:{s:n,s:I},s:{s:I}}", "deleted_at", "from", "to",
                             (json_int_t)app_now(), "subtree_events", "to", (json_int_t)n);
    rc = app_audit_append(c, &j->who, "event.delete", "event", j->id, diff);
    json_decref(diff);
    json_decref(j->before);
    j->before = NULL;
    return rc;
}

static keel_flow h_delete(keel_req *r)
{
    app_ev_job *j = app_ev_job_new(r, sizeof(app_ev_job));
    j->if_match = -1;
    if (keel_req_header(r, "If-Match").ptr && read_if_match(r, j) < 0)
        return KEEL_DONE;
    return keel_db_job_run_tx(r, app_ev_db, db_delete, app_ev_done, j);
}

/* ---------------------------------------------------------------- transitions */

typedef struct transition_job {
    app_ev_job e;
    char to[16];
    char reason[1024];
} transition_job;

static int db_transition(keel_db_conn *c, void *arg)
{
    transition_job *j = arg;
    int rc = app_ev_load(c, &j->e);
    if (rc < 0 || (rc = app_ev_check_change(&j->e, 1)) < 0)
        return rc;
    const char *from = json_string_value(json_object_get(j->e.before, "state"));
    if (!may_move(from, j->to)) {
        json_t *allowed = json_array();
        for (const char *const *s = next_states(from); *s; s++)
            json_array_append_new(allowed, json_string(*s));
        j->e.err_extra = json_pack("{s:s,s:s,s:o}", "from", from, "to", j->to, "allowed", allowed);
        char list[80] = "";
        for (const char *const *s = next_states(from); *s; s++)
            snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
                     *list ? ", " : "", *s);
        return app_ev_refuse(&j->e, 409, "an event in state %s cannot move to %s; allowed: %s", from,
                      j->to, *list ? list : "none");
    }
    if (!strcmp(j->to, "scheduled") && (rc = app_ev_approval_gate(c, &j->e)) < 0)
        return rc;
    if (!strcmp(j->to, "completed") && parent_waits) {
        keel_db_param p[] = {KEEL_DB_P_TEXT(j->e.path), KEEL_DB_P_TEXT(j->e.id)};
        keel_db_rows *rows;
        if ((rc = keel_db_query(c, "SELECT COUNT(*) FROM events WHERE deleted_at IS NULL AND "
                                   "id <> $2 AND substr(path, 1, length($1)) = $1 AND state IN "
                                   "('draft', 'scheduled', 'active')",
                                p, 2, &rows)) < 0)
            return rc;
        int64_t open = keel_db_rows_next(rows) == 1 ? keel_db_get_int(rows, 0) : 0;
        keel_db_rows_free(rows);
        if (open)
            return app_ev_refuse(&j->e, 409,
                          "%lld event%s below this one %s not finished (completed, cancelled "
                          "or archived); EVENTS_PARENT_WAITS_FOR_CHILDREN",
                          (long long)open, open == 1 ? "" : "s", open == 1 ? "is" : "are");
    }
    int64_t now = app_now(), n = 0;
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->to), KEEL_DB_P_INT(now), KEEL_DB_P_TEXT(j->e.id),
                         KEEL_DB_P_INT(json_integer_value(json_object_get(j->e.before,
                                                                          "version")))};
    if ((rc = keel_db_exec(c,
                           "UPDATE events SET state = $1, updated_at = $2, version = version + 1 "
                           "WHERE id = $3 AND version = $4",
                           p, 4, &n)) < 0)
        return rc;
    if (n == 0)
        return app_ev_refuse(&j->e, 412, "the event changed since that version (If-Match): read it "
                                  "again");
    char tid[37];
    app_uuid(tid);
    keel_db_param t[] = {KEEL_DB_P_TEXT(tid),         KEEL_DB_P_TEXT(j->e.id),
                         KEEL_DB_P_TEXT(from),        KEEL_DB_P_TEXT(j->to),
                         KEEL_DB_P_TEXT(j->e.who.kind), KEEL_DB_P_TEXT(j->e.who.id),
                         KEEL_DB_P_TEXT(j->reason),   KEEL_DB_P_INT(now),
                         KEEL_DB_P_INT(json_integer_value(json_object_get(j->e.before,
                                                                          "version")) + 1)};
    if ((rc = keel_db_exec(c,
                           "INSERT INTO event_transitions (id, event_id, from_state, to_state, "
                           "actor_kind, actor_id, reason, created_at, version) VALUES ($1, $2, "
                           "$3, $4, $5, $6, $7, $8, $9)",
                           t, 9, NULL)) < 0)
        return rc;
    if ((rc = fetch_event(c, j->e.id, &j->e.out, NULL)) < 0)
        return rc;
    json_t *diff = json_pack("{s:{s:s,s:s},s:{s:s}}", "state", "from", from, "to", j->to,
                             "reason", "to", j->reason);
    rc = app_audit_append(c, &j->e.who, "event.transition", "event", j->e.id, diff);
    json_decref(diff);
    return rc;
}

static keel_flow h_transition(keel_req *r)
{
    json_t *body = app_json_body(r);
    if (!body)
        return KEEL_DONE;
    transition_job *j = app_ev_job_new(r, sizeof(transition_job));
    snprintf(j->to, sizeof(j->to), "%s", json_string_value(json_object_get(body, "to")));
    const char *reason = json_string_value(json_object_get(body, "reason"));
    snprintf(j->reason, sizeof(j->reason), "%s", reason ? reason : "");
    if (read_if_match(r, &j->e) < 0)
        return KEEL_DONE;
    return keel_db_job_run_tx(r, app_ev_db, db_transition, app_ev_done, j);
}

static json_t *transition_json(const keel_db_rows *rows)
{
    return json_pack("{s:o,s:o,s:{s:o,s:o},s:o,s:o}", "from", app_ev_text(rows, 0), "to",
                     app_ev_text(rows, 1), "actor", "kind", app_ev_text(rows, 2), "id",
                     app_ev_text(rows, 3), "reason", app_ev_text(rows, 4), "at",
                     app_ev_time(rows, 5));
}

static int db_transitions(keel_db_conn *c, void *arg)
{
    app_ev_job *j = arg;
    int rc = app_ev_load(c, j);
    if (rc < 0)
        return rc;
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->id)};
    keel_db_rows *rows;
    if ((rc = keel_db_query(c, "SELECT from_state, to_state, actor_kind, actor_id, reason, "
                               "created_at FROM event_transitions WHERE event_id = $1 ORDER BY "
                               "version",
                            p, 1, &rows)) < 0)
        return rc;
    json_t *data;
    if ((rc = app_ev_rows_array(rows, transition_json, &data)) < 0)
        return rc;
    j->out = json_pack("{s:o}", "data", data);
    return 0;
}

static keel_flow h_transitions(keel_req *r)
{
    app_ev_job *j = app_ev_job_new(r, sizeof(app_ev_job));
    return keel_db_job_run(r, app_ev_db, db_transitions, app_ev_done, j);
}

/* ---------------------------------------------------------------- legal hold */

typedef struct hold_job {
    app_ev_job e;
    int set;
    char reason[1024];
} hold_job;

static int db_hold(keel_db_conn *c, void *arg)
{
    hold_job *j = arg;
    int rc = app_ev_load(c, &j->e);
    if (rc < 0)
        return rc;
    int on = json_object_get(j->e.before, "legal_hold") != json_null();
    if (on == j->set)
        return app_ev_refuse(&j->e, 409, j->set ? "the event is already under legal hold"
                                         : "the event is not under legal hold");
    int64_t now = app_now();
    keel_db_param p[] = {KEEL_DB_P_BOOL(j->set),
                         j->set ? KEEL_DB_P_TEXT(j->reason) : KEEL_DB_P_NULL(),
                         j->set ? KEEL_DB_P_TEXT(j->e.who.id) : KEEL_DB_P_NULL(),
                         j->set ? KEEL_DB_P_INT(now) : KEEL_DB_P_NULL(), KEEL_DB_P_INT(now),
                         KEEL_DB_P_TEXT(j->e.id)};
    if ((rc = keel_db_exec(c,
                           "UPDATE events SET legal_hold = $1, legal_hold_reason = $2, "
                           "legal_hold_by = $3, legal_hold_at = $4, updated_at = $5, "
                           "version = version + 1 WHERE id = $6",
                           p, 6, NULL)) < 0)
        return rc;
    if ((rc = fetch_event(c, j->e.id, &j->e.out, NULL)) < 0)
        return rc;
    json_t *diff = json_pack("{s:{s:b,s:b},s:{s:s}}", "legal_hold", "from", on, "to", j->set,
                             "reason", "to", j->reason);
    rc = app_audit_append(c, &j->e.who, j->set ? "event.hold" : "event.release", "event",
                          j->e.id, diff);
    json_decref(diff);
    return rc;
}

static keel_flow h_hold(keel_req *r)
{
    json_t *body = app_json_body(r);
    if (!body)
        return KEEL_DONE;
    hold_job *j = app_ev_job_new(r, sizeof(hold_job));
    j->set = 1;
    snprintf(j->reason, sizeof(j->reason), "%s",
             json_string_value(json_object_get(body, "reason")));
    return keel_db_job_run_tx(r, app_ev_db, db_hold, app_ev_done, j);
}

static keel_flow h_release(keel_req *r)
{
    hold_job *j = app_ev_job_new(r, sizeof(hold_job));
    keel_str reason = keel_req_query_param(r, "reason");
    snprintf(j->reason, sizeof(j->reason), "%.*s", (int)(reason.len < 1000 ? reason.len : 1000),
             reason.ptr ? reason.ptr : "");
    return keel_db_job_run_tx(r, app_ev_db, db_hold, app_ev_done, j);
}

/* ---------------------------------------------------------------- tree */

static int db_tree(keel_db_conn *c, void *arg)
{
    app_ev_job *j = arg;
    int rc = app_ev_load(c, j);
    if (rc < 0)
        return rc;
    /* the events of the subtree the caller may see; a hidden event hides
     * its descendants too */
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->path), KEEL_DB_P_TEXT(j->who.id),
                         KEEL_DB_P_INT(app_now()), KEEL_DB_P_BOOL(j->who.admin)};
    keel_db_rows *rows;
    if ((rc = keel_db_query(c,
                            "SELECT " EV_COLUMNS " FROM events e WHERE deleted_at IS NULL AND "
                            "substr(path, 1, length($1)) = $1 AND ($4 OR classification <> "
                            "'restricted' OR owner_id = $2 OR EXISTS (SELECT 1 FROM "
                            "event_assignments a WHERE a.event_id = e.id AND a.user_id = $2 AND "
                            "a.revoked_at IS NULL AND (a.expires_at IS NULL OR a.expires_at > "
                            "$3))) ORDER BY depth, created_at, id LIMIT 5000",
                            p, 4, &rows)) < 0)
        return rc;
    json_t *byid = json_object();
    while ((rc = keel_db_rows_next(rows)) == 1) {
        json_t *node = app_ev_json(rows, NULL);
        json_object_set_new(node, "children", json_array());
        const char *id = json_string_value(json_object_get(node, "id"));
        json_t *parent = json_object_get(byid, json_string_value(json_object_get(node,
                                                                                 "parent_id")));
        if (!strcmp(id, j->id) || parent) {
            if (parent)
                json_array_append(json_object_get(parent, "children"), node);
            json_object_set(byid, id, node);
        }
        json_decref(node);
    }
    keel_db_rows_free(rows);
    if (rc >= 0) {
        j->out = json_incref(json_object_get(byid, j->id));
        rc = j->out ? 0 : KEEL_EDB_NOROW;
    }
    json_decref(byid);
    return rc < 0 ? rc : 0;
}

static keel_flow h_tree(keel_req *r)
{
    app_ev_job *j = app_ev_job_new(r, sizeof(app_ev_job));
    return keel_db_job_run(r, app_ev_db, db_tree, app_ev_done, j);
}

/* ---------------------------------------------------------------- routes */

#define S_TIME "{\"type\":\"string\",\"format\":\"date-time\"}"
#define S_ID "{\"type\":\"string\",\"maxLength\":63}"
#define S_EVENT_PROPS                                                                            \
    "\"title\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":200},"                         \
    "\"description\":{\"type\":\"string\",\"maxLength\":10000},"                                 \
    "\"type\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":63},"                           \
    "\"starts_at\":" S_TIME ",\"ends_at\":{\"type\":[\"string\",\"null\"],\"format\":"           \
    "\"date-time\"},"                                                                            \
    "\"location\":{\"type\":\"string\",\"maxLength\":500},"                                      \
    "\"owner_id\":" S_ID ","                                                                     \
    "\"parent_id\":{\"type\":[\"string\",\"null\"],\"maxLength\":63},"                           \
    "\"tags\":{\"type\":\"array\",\"maxItems\":20,\"items\":{\"type\":\"string\","               \
    "\"pattern\":\"^[a-z0-9][a-z0-9_-]{0,39}$\"}},"                                              \
    "\"custom\":{\"type\":\"object\"},"                                                          \
    "\"classification\":{\"type\":\"string\",\"enum\":[\"public\",\"internal\","                 \
    "\"confidential\",\"restricted\"]},"                                                         \
    "\"risk\":{\"type\":[\"object\",\"null\"],\"additionalProperties\":false,\"properties\":{"   \
    "\"level\":{\"type\":\"string\",\"enum\":[\"low\",\"medium\",\"high\",\"critical\"]},"       \
    "\"score\":{\"type\":[\"integer\",\"null\"],\"minimum\":0,\"maximum\":100},"                 \
    "\"notes\":{\"type\":[\"string\",\"null\"],\"maxLength\":2000}}},"                           \
    "\"budget\":{\"type\":[\"object\",\"null\"],\"additionalProperties\":false,\"properties\":{" \
    "\"amount\":{\"type\":\"number\",\"minimum\":0,\"maximum\":1e15},"                           \
    "\"currency\":{\"type\":\"string\",\"pattern\":\"^[A-Z]{3}$\"}}},"                     \
    "\"recurrence\":" APP_EV_S_RRULE

static const keel_route event_routes[] = {
    {.name = "events.create", .method = "POST", .path = "/api/v1/events", .handler = h_create,
     .summary = "Create an event (state draft; owner: the caller)", .auth = "any",
     .permission = "events:write",
     .request_schema = "{\"type\":\"object\",\"additionalProperties\":false,"
                       "\"properties\":{\"template_id\":" S_ID "," S_EVENT_PROPS "}}"},
    {.name = "events.get", .method = "GET", .path = "/api/v1/events/:id", .handler = h_get,
     .summary = "One event, with its ETag", .auth = "any", .permission = "events:read"},
    {.name = "events.update", .method = "PATCH", .path = "/api/v1/events/:id",
     .handler = h_patch,
     .summary = "Change an event (If-Match required); parent_id moves its subtree",
     .auth = "any", .permission = "events:write",
     .request_schema = "{\"type\":\"object\",\"additionalProperties\":false,"
                       "\"properties\":{" S_EVENT_PROPS "}}"},
    {.name = "events.delete", .method = "DELETE", .path = "/api/v1/events/:id",
     .handler = h_delete, .summary = "Soft-delete an event and its subtree (owner or admin)",
     .auth = "any", .permission = "events:write"},
    {.name = "events.transition", .method = "POST", .path = "/api/v1/events/:id/transition",
     .handler = h_transition,
     .summary = "Move an event along its lifecycle (If-Match required)", .auth = "any",
     .permission = "events:write",
     .request_schema = "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"to\"],"
                       "\"properties\":{\"to\":{\"type\":\"string\",\"enum\":[\"draft\","
                       "\"scheduled\",\"active\",\"completed\",\"cancelled\",\"archived\"]},"
                       "\"reason\":{\"type\":\"string\",\"maxLength\":1000}}}"},
    {.name = "events.transitions", .method = "GET", .path = "/api/v1/events/:id/transitions",
     .handler = h_transitions, .summary = "An event's lifecycle history (actor, reason)",
     .auth = "any", .permission = "events:read"},
    {.name = "events.tree", .method = "GET", .path = "/api/v1/events/:id/tree",
     .handler = h_tree, .summary = "An event with its subtree (what the caller may see)",
     .auth = "any", .permission = "events:read"},
    {.name = "events.hold", .method = "POST", .path = "/api/v1/events/:id/hold",
     .handler = h_hold,
     .summary = "Put an event and its subtree under legal hold (admin, with a reason)",
     .auth = "any", .permission = "admin:access",
     .request_schema = "{\"type\":\"object\",\"additionalProperties\":false,\"required\":"
                       "[\"reason\"],\"properties\":{\"reason\":{\"type\":\"string\","
                       "\"minLength\":1,\"maxLength\":1000}}}"},
    {.name = "events.release", .method = "DELETE", .path = "/api/v1/events/:id/hold",
     .handler = h_release, .summary = "Lift a legal hold (admin; ?reason)", .auth = "any",
     .permission = "admin:access"},
};

int app_events_setup(keel_service *svc)
{
    const app_options *o = app_options_of(svc);
    app_ev_db = keel_service_db(svc);
    max_depth = (int64_t)o->events_max_depth;
    parent_waits = o->events_parent_waits;
    page_max = (int64_t)o->events_page_max;
    (void)states;
    if (keel_service_add_routes(svc, event_routes,
                                sizeof(event_routes) / sizeof(event_routes[0])) < 0)
        return -1;
    if (app_event_list_setup(svc, page_max) < 0 || app_event_assignments_setup(svc) < 0 ||
        app_event_templates_setup(svc) < 0 ||
        app_event_types_setup(svc) < 0 || app_event_retention_setup(svc) < 0 ||
        app_event_approvals_setup(svc) < 0 ||
        app_event_costs_setup(svc, (double)o->events_budget_alert_pct / 100.0) < 0)
        return -1;
    return app_event_recurrence_setup(svc, (size_t)o->events_instances_max);
}
