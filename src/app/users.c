/* users.c — /api/v1/users and /api/v1/admin/users.
 *
 * Authorization, on top of the route's permission: a user reads and
 * changes their own record (name, e-mail) without any permission; another
 * user's record needs users:read / users:write / users:delete (no IDOR).
 * Role and status change only through the admin route, and never on one's
 * own record (nobody raises their own role, or locks themselves out).
 *
 * GET /users/:id (and GET /auth/me) is served through the cache
 * (namespace "users", USER_CACHE_TTL), after the authorization check, with
 * single-flight per id; every write to a user's record drops the cached
 * copy and the user's auth state (namespace "auth", src/app/auth.c) before
 * the write is answered (app_user_invalidate), so the next read or
 * authenticated request — on any instance sharing the Redis — sees it. */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"

static app_auth *A;
static keel_cache *C;
static uint64_t user_ttl_ms; /* USER_CACHE_TTL; 0 = not cached */

/* ---------------------------------------------------------------- jobs */

/* What every flow here answers with (done_json): `out` with `status` (0:
 * 200), or 204 without a body. Each flow's job starts with one and lives
 * in the request's arena (keel_req_job_new): released with the request,
 * `out` decref'd then (reply_cleanup), never freed by hand. */
typedef struct reply {
    json_t *out;
    int status;
    char id[64];     /* the user acted on */
    int invalidated; /* its cached copy is gone (done_write) */
} reply;

static void reply_cleanup(void *job)
{
    json_decref(((reply *)job)->out);
}

/* The caller's own user id, or "" (an API key). */
static void self_id(keel_req *r, char out[64])
{
    const keel_principal *p = keel_req_principal(r);
    snprintf(out, 64, "%s", p && !strcmp(p->kind, "user") ? p->id : "");
}

static void done_json(keel_req *r, void *arg, int status)
{
    reply *j = arg;
    if (status < 0) {
        if (status == KEEL_EDB_CONSTRAINT)
            keel_respond_problem(r, 409, "an account with this e-mail address already exists");
        else
            keel_db_respond_error(r, status);
    } else if (j->out) {
        keel_res_set_header(r, "Cache-Control", "no-store");
        keel_respond_json(r, j->status ? j->status : 200, json_incref(j->out));
    } else {
        keel_respond(r, 204, NULL, NULL, 0);
    }
}

/* ---------------------------------------------------------------- cache */

typedef struct inval {
    keel_req *r;
    keel_db_done_cb then;
    void *arg;
    int status;
    int step; /* 0: "users" deleted next, 1: "auth", 2: done */
    char id[64];
} inval;

/* The two cached copies of a user, one after the other: the record
 * ("users") and its auth state ("auth", src/app/auth.c). */
static void invalidated(void *arg, int status)
{
    inval *iv = arg;
    (void)status; /* Redis could not delete: the TTL bounds the staleness */
    static const char *const ns[] = {"users", "auth"};
    while (iv->step < 2) {
        const char *n = ns[iv->step++];
        if (keel_cache_del(C, keel_req_worker(iv->r), n, iv->id, invalidated, iv) == 0)
            return; /* called again when this delete is answered */
    }
    iv->then(iv->r, iv->arg, iv->status);
    keel_req_unhold(iv->r);
    keel_free(iv);
}

void app_user_invalidate(keel_req *r, const char *user_id, keel_db_done_cb then, void *arg,
                         int status)
{
    if (!C || !user_id || !*user_id) {
        then(r, arg, status);
        return;
    }
    inval *iv = keel_calloc(1, sizeof(*iv));
    *iv = (inval){.r = r, .then = then, .arg = arg, .status = status};
    snprintf(iv->id, sizeof(iv->id), "%s", user_id);
    keel_req_hold(r);
    invalidated(iv, 0);
}

/* A write's answer, once the cached copy of the user is gone. */
static void done_write(keel_req *r, void *arg, int status)
{
    reply *j = arg;
    if (status >= 0 && !j->invalidated) {
        j->invalidated = 1;
        app_user_invalidate(r, j->id, done_write, j, status);
        return;
    }
    done_json(r, arg, status);
}

/* The path id when it is the caller's own, or the caller holds perm;
 * else answers 403 and returns 0. */
static int allowed_on(keel_req *r, reply *j, const char *perm)
{
    keel_str id = keel_req_param(r, "id");
    snprintf(j->id, sizeof(j->id), "%.*s", (int)(id.len < 63 ? id.len : 63), id.ptr);
    char self[64];
    self_id(r, self);
    if ((*self && !strcmp(self, j->id)) || keel_principal_can(keel_req_principal(r), perm))
        return 1;
    keel_respond_problem(r, 403, "you may only act on your own account");
    return 0;
}

/* The user j->id into j->out (replacing what a previous attempt left). */
static int fetch_one(keel_db_conn *c, reply *j, int include_deleted)
{
    json_decref(j->out);
    j->out = NULL;
    return app_fetch_user(c, j->id, include_deleted, &j->out);
}

/* ---------------------------------------------------------------- list */

typedef struct list_job {
    reply rep;
    int64_t page, limit;
    char role[32], status[16], q[256], order[64];
    int include_deleted;
} list_job;

static int db_list(keel_db_conn *c, void *arg)
{
    list_job *j = arg;
    char where[512] = "WHERE 1 = 1";
    keel_db_param p[6];
    size_t n = 0;
    char like[600];
    if (!j->include_deleted)
        strcat(where, " AND deleted_at IS NULL");
    if (*j->role) {
        p[n++] = KEEL_DB_P_TEXT(j->role);
        snprintf(where + strlen(where), sizeof(where) - strlen(where), " AND role = $%zu", n);
    }
    if (*j->status) {
        p[n++] = KEEL_DB_P_TEXT(j->status);
        snprintf(where + strlen(where), sizeof(where) - strlen(where), " AND status = $%zu", n);
    }
    if (*j->q) {
        /* an e-mail prefix: escape LIKE's own characters */
        size_t k = 0;
        for (const char *s = j->q; *s && k + 3 < sizeof(like); s++) {
            if (*s == '%' || *s == '_' || *s == '\\')
                like[k++] = '\\';
            like[k++] = *s;
        }
        like[k++] = '%';
        like[k] = '\0';
        p[n++] = KEEL_DB_P_TEXT(like);
        snprintf(where + strlen(where), sizeof(where) - strlen(where),
                 " AND email LIKE $%zu ESCAPE '\\'", n);
    }
    char sql[1200];
    snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM users %s", where);
    keel_db_rows *rows;
    int rc = keel_db_query(c, sql, p, n, &rows);
    if (rc < 0)
        return rc;
    int64_t total = keel_db_rows_next(rows) == 1 ? keel_db_get_int(rows, 0) : 0;
    keel_db_rows_free(rows);
    p[n++] = KEEL_DB_P_INT(j->limit);
    p[n++] = KEEL_DB_P_INT((j->page - 1) * j->limit);
    snprintf(sql, sizeof(sql),
             "SELECT " APP_USER_COLUMNS " FROM users %s ORDER BY %s, id LIMIT $%zu OFFSET $%zu",
             where, j->order, n - 1, n);
    rc = keel_db_query(c, sql, p, n, &rows);
    if (rc < 0)
        return rc;
    json_t *data = json_array();
    while ((rc = keel_db_rows_next(rows)) == 1)
        json_array_append_new(data, app_user_json(rows, 0));
    keel_db_rows_free(rows);
    if (rc < 0) {
        json_decref(data);
        return rc;
    }
    j->rep.out = json_pack("{s:o,s:I,s:I,s:I,s:I}", "data", data, "page", (json_int_t)j->page,
                       "limit", (json_int_t)j->limit, "total", (json_int_t)total, "pages",
                       (json_int_t)((total + j->limit - 1) / j->limit));
    return 0;
}

/* ?page, ?limit (max 100), ?role, ?status, ?q (e-mail prefix), ?sort. */
static int read_list_query(keel_req *r, list_job *j)
{
    j->page = 1;
    j->limit = 20;
    snprintf(j->order, sizeof(j->order), "created_at DESC");
    keel_str v = keel_req_query_param(r, "page");
    char buf[300];
    if (v.ptr) {
        snprintf(buf, sizeof(buf), "%.*s", (int)(v.len < 20 ? v.len : 20), v.ptr);
        char *end;
        long long x = strtoll(buf, &end, 10);
        if (!*buf || *end || x < 1 || x > 1000000) {
            app_invalid(r, "/query/page", "must be an integer from 1");
            return -1;
        }
        j->page = x;
    }
    v = keel_req_query_param(r, "limit");
    if (v.ptr) {
        snprintf(buf, sizeof(buf), "%.*s", (int)(v.len < 20 ? v.len : 20), v.ptr);
        char *end;
        long long x = strtoll(buf, &end, 10);
        if (!*buf || *end || x < 1 || x > 100) {
            app_invalid(r, "/query/limit", "must be an integer from 1 to 100");
            return -1;
        }
        j->limit = x;
    }
    v = keel_req_query_param(r, "role");
    if (v.ptr) {
        snprintf(j->role, sizeof(j->role), "%.*s", (int)(v.len < 31 ? v.len : 31), v.ptr);
        if (!keel_role_valid(j->role)) {
            app_invalid(r, "/query/role", "must be one of user, moderator, admin");
            return -1;
        }
    }
    v = keel_req_query_param(r, "status");
    if (v.ptr) {
        snprintf(j->status, sizeof(j->status), "%.*s", (int)(v.len < 15 ? v.len : 15), v.ptr);
        if (strcmp(j->status, "active") && strcmp(j->status, "disabled")) {
            app_invalid(r, "/query/status", "must be active or disabled");
            return -1;
        }
    }
    v = keel_req_query_param(r, "q");
    if (v.ptr) {
        if (v.len > 254) {
            app_invalid(r, "/query/q", "must be at most 254 bytes");
            return -1;
        }
        size_t k = 0;
        for (size_t i = 0; i < v.len; i++)
            j->q[k++] = (char)(v.ptr[i] >= 'A' && v.ptr[i] <= 'Z' ? v.ptr[i] + 32 : v.ptr[i]);
        j->q[k] = '\0';
    }
    v = keel_req_query_param(r, "sort");
    if (v.ptr) {
        static const struct {
            const char *key, *order;
        } sorts[] = {{"created_at", "created_at ASC"}, {"-created_at", "created_at DESC"},
                     {"email", "email ASC"},           {"-email", "email DESC"},
                     {"name", "name ASC"},             {"-name", "name DESC"}};
        size_t i = 0;
        for (; i < sizeof(sorts) / sizeof(sorts[0]); i++)
            if (keel_str_eq(v, keel_str_c(sorts[i].key)))
                break;
        if (i == sizeof(sorts) / sizeof(sorts[0])) {
            app_invalid(r, "/query/sort", "must be one of created_at, email, name, optionally with -");
            return -1;
        }
        snprintf(j->order, sizeof(j->order), "%s", sorts[i].order);
    }
    v = keel_req_query_param(r, "include_deleted");
    j->include_deleted = v.ptr && keel_str_eq(v, keel_str_c("true"));
    return 0;
}

static keel_flow h_list(keel_req *r)
{
    list_job *j = KEEL_REQ_JOB(r, list_job, reply_cleanup);
    if (read_list_query(r, j) < 0)
        return KEEL_DONE;
    j->include_deleted = 0; /* the admin list shows them */
    return keel_db_job_run(r, A->db, db_list, done_json, j);
}

static keel_flow h_admin_list(keel_req *r)
{
    list_job *j = KEEL_REQ_JOB(r, list_job, reply_cleanup);
    if (read_list_query(r, j) < 0)
        return KEEL_DONE;
    return keel_db_job_run(r, A->db, db_list, done_json, j);
}

/* ---------------------------------------------------------------- one */

typedef struct get_job {
    reply rep;
    keel_cache_flight *flight;
} get_job;

static int db_get(keel_db_conn *c, void *arg)
{
    return fetch_one(c, arg, 0);
}

static void user_loaded(keel_req *r, void *arg, int status)
{
    get_job *j = arg;
    (void)r;
    keel_cache_loaded(j->flight, status, j->rep.out); /* then got_user */
}

/* The loader of the cache-aside read: one per id and miss per process. */
static void load_user(keel_req *r, void *arg, keel_cache_flight *f)
{
    get_job *j = arg;
    j->flight = f;
    int rc = keel_db_run(r, A->db, db_get, user_loaded, j);
    if (rc < 0)
        keel_cache_loaded(f, rc, NULL);
}

static void got_user(keel_req *r, void *arg, int status, json_t *value)
{
    (void)arg; /* the get_job: released with the request */
    if (status < 0) {
        keel_db_respond_error(r, status); /* a no-op when r has ended */
    } else {
        keel_res_set_header(r, "Cache-Control", "no-store");
        keel_respond_json(r, 200, json_incref(value));
    }
}

static keel_flow serve_user(keel_req *r, get_job *j)
{
    if (!C || !user_ttl_ms ||
        keel_cache_fetch(C, r, "users", j->rep.id, user_ttl_ms, load_user, got_user, j) < 0)
        return keel_db_job_run(r, A->db, db_get, done_json, j);
    return keel_req_is_finished(r) ? KEEL_DONE : KEEL_SUSPEND;
}

static keel_flow h_get(keel_req *r)
{
    get_job *j = KEEL_REQ_JOB(r, get_job, reply_cleanup);
    if (!allowed_on(r, &j->rep, "users:read")) /* before the cache: no IDOR through it */
        return KEEL_DONE;
    return serve_user(r, j);
}

keel_flow app_user_serve(keel_req *r, const char *user_id)
{
    get_job *j = KEEL_REQ_JOB(r, get_job, reply_cleanup);
    keel_strlcpy(j->rep.id, user_id, sizeof(j->rep.id));
    return serve_user(r, j);
}

typedef struct change_job {
    reply rep;
    char name[256], email[256], new_role[32], new_status[16];
    int has_name, has_email, has_role, has_status;
} change_job;

/* in one transaction (keel_db_run_tx): may run again on a conflict */
static int db_patch(keel_db_conn *c, void *arg)
{
    change_job *j = arg;
    const char *id = j->rep.id;
    int64_t now = app_now();
    int rc;
    if ((rc = fetch_one(c, &j->rep, 0)) < 0)
        return rc;
    json_decref(j->rep.out);
    j->rep.out = NULL;
    if (j->has_name) {
        keel_db_param p[] = {KEEL_DB_P_TEXT(j->name), KEEL_DB_P_INT(now), KEEL_DB_P_TEXT(id)};
        if ((rc = keel_db_exec(c, "UPDATE users SET name = $1, updated_at = $2 WHERE id = $3", p,
                               3, NULL)) < 0)
            return rc;
    }
    if (j->has_email) {
        keel_db_param p[] = {KEEL_DB_P_TEXT(j->email), KEEL_DB_P_INT(now), KEEL_DB_P_TEXT(id)};
        int64_t changed = 0;
        if ((rc = keel_db_exec(c,
                               "UPDATE users SET email = $1, email_verified = FALSE, "
                               "updated_at = $2 WHERE id = $3 AND email <> $1",
                               p, 3, &changed)) < 0)
            return rc;
        /* a new address is unverified: its verification mail commits with it */
        if (changed > 0 &&
            (rc = app_account_verify_mail(c, id, j->email, j->has_name ? j->name : "")) < 0)
            return rc;
    }
    if (j->has_role || j->has_status) {
        keel_db_param p[] = {KEEL_DB_P_TEXT(j->has_role ? j->new_role : ""),
                             KEEL_DB_P_TEXT(j->has_status ? j->new_status : ""),
                             KEEL_DB_P_INT(now), KEEL_DB_P_TEXT(id)};
        if ((rc = keel_db_exec(c,
                               "UPDATE users SET role = CASE WHEN $1 = '' THEN role ELSE $1 END, "
                               "status = CASE WHEN $2 = '' THEN status ELSE $2 END, "
                               "updated_at = $3 WHERE id = $4",
                               p, 4, NULL)) < 0)
            return rc;
        if (j->has_status && !strcmp(j->new_status, "disabled") &&
            (rc = app_end_sessions(c, id, now)) < 0)
            return rc;
    }
    return fetch_one(c, &j->rep, 0);
}

/* Reads the fields of a PATCH: `admin` allows role/status and only those. */
static int read_changes(keel_req *r, change_job *j, int admin)
{
    json_t *body = app_json_body(r);
    if (!body)
        return -1;
    if (!json_is_object(body)) {
        app_invalid(r, "", "must be an object");
        return -1;
    }
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v) {
        if (!admin && (!strcmp(key, "role") || !strcmp(key, "status"))) {
            keel_respond_problem(r, 403, "role and status are changed by an administrator "
                                         "(PATCH /api/v1/admin/users/:id)");
            return -1;
        }
        if (!admin && !strcmp(key, "name")) {
            if (!json_is_string(v) || json_string_length(v) > 200) {
                app_invalid(r, "/name", "must be a string of at most 200 bytes");
                return -1;
            }
            snprintf(j->name, sizeof(j->name), "%s", json_string_value(v));
            j->has_name = 1;
        } else if (!admin && !strcmp(key, "email")) {
            if (!json_is_string(v) ||
                app_normalize_email(json_string_value(v), json_string_length(v), j->email,
                                    sizeof(j->email)) < 0) {
                app_invalid(r, "/email", "must be an e-mail address");
                return -1;
            }
            j->has_email = 1;
        } else if (admin && !strcmp(key, "role")) {
            if (!json_is_string(v) || !keel_role_valid(json_string_value(v))) {
                app_invalid(r, "/role", "must be one of user, moderator, admin");
                return -1;
            }
            snprintf(j->new_role, sizeof(j->new_role), "%s", json_string_value(v));
            j->has_role = 1;
        } else if (admin && !strcmp(key, "status")) {
            const char *s = json_string_value(v);
            if (!s || (strcmp(s, "active") && strcmp(s, "disabled"))) {
                app_invalid(r, "/status", "must be active or disabled");
                return -1;
            }
            snprintf(j->new_status, sizeof(j->new_status), "%s", s);
            j->has_status = 1;
        } else {
            char ptr[300];
            snprintf(ptr, sizeof(ptr), "/%s", key);
            app_invalid(r, ptr, "is not a field that can be changed here");
            return -1;
        }
    }
    return 0;
}

static keel_flow h_patch(keel_req *r)
{
    change_job *j = KEEL_REQ_JOB(r, change_job, reply_cleanup);
    if (!allowed_on(r, &j->rep, "users:write") || read_changes(r, j, 0) < 0)
        return KEEL_DONE;
    return keel_db_job_run_tx(r, A->db, db_patch, done_write, j);
}

/* PATCH /api/v1/auth/me: the same change on the caller's own record. */
keel_flow app_user_patch_self(keel_req *r)
{
    change_job *j = KEEL_REQ_JOB(r, change_job, reply_cleanup);
    self_id(r, j->rep.id);
    if (read_changes(r, j, 0) < 0)
        return KEEL_DONE;
    return keel_db_job_run_tx(r, A->db, db_patch, done_write, j);
}

static keel_flow h_admin_patch(keel_req *r)
{
    change_job *j = KEEL_REQ_JOB(r, change_job, reply_cleanup);
    char self[64];
    self_id(r, self);
    keel_str id = keel_req_param(r, "id");
    snprintf(j->rep.id, sizeof(j->rep.id), "%.*s", (int)(id.len < 63 ? id.len : 63), id.ptr);
    if (*self && !strcmp(self, j->rep.id)) {
        keel_respond_problem(r, 403, "an administrator cannot change their own role or status");
        return KEEL_DONE;
    }
    if (read_changes(r, j, 1) < 0)
        return KEEL_DONE;
    keel_log(KEEL_LOG_INFO, "admin changed a user", "{s:s,s:s,s:s,s:s}", "by", self, "user_id",
             j->rep.id, "role", j->has_role ? j->new_role : "-", "status",
             j->has_status ? j->new_status : "-");
    return keel_db_job_run_tx(r, A->db, db_patch, done_write, j);
}

/* in one transaction (keel_db_run_tx) */
static int db_delete(keel_db_conn *c, void *arg)
{
    reply *j = arg;
    int64_t now = app_now();
    keel_db_param p[] = {KEEL_DB_P_INT(now), KEEL_DB_P_TEXT(j->id)};
    int64_t n = 0;
    int rc = keel_db_exec(c,
                          "UPDATE users SET deleted_at = $1, status = 'disabled', updated_at = $1, "
                          "tokens_valid_after = $1 WHERE id = $2 AND deleted_at IS NULL",
                          p, 2, &n);
    if (rc < 0)
        return rc;
    if (n == 0)
        return KEEL_EDB_NOROW;
    return app_end_sessions(c, j->id, now);
}

static keel_flow h_delete(keel_req *r)
{
    reply *j = KEEL_REQ_JOB(r, reply, reply_cleanup);
    if (!allowed_on(r, j, "users:delete"))
        return KEEL_DONE;
    return keel_db_job_run_tx(r, A->db, db_delete, done_write, j);
}

/* ---------------------------------------------------------------- create */

typedef struct create_job {
    reply rep;
    char email[256], name[256], role[32];
    char *password; /* app_secret_dup: wiped with the request */
    size_t password_len;
    char hash[KEEL_PW_HASH_MAX];
    int hashed;
} create_job;

static int db_create(keel_db_conn *c, void *arg)
{
    create_job *j = arg;
    int rc = app_insert_user(c, j->rep.id, j->email, j->hash, j->name, j->role, 0);
    if (rc < 0)
        return rc;
    j->rep.status = 201;
    return fetch_one(c, &j->rep, 0);
}

static void work_hash(void *arg)
{
    create_job *j = arg;
    j->hashed =
        keel_password_hash(j->password, j->password_len, A->pw_ops, A->pw_mem, j->hash) == 0;
}

static void create_hashed(keel_req *r, void *arg, int status)
{
    create_job *j = arg;
    if (status < 0)
        return;
    sodium_memzero(j->password, j->password_len);
    if (!j->hashed) {
        keel_respond_problem(r, 500, "the password could not be hashed");
        return;
    }
    keel_db_job_run(r, A->db, db_create, done_json, j);
}

static keel_flow h_create(keel_req *r)
{
    json_t *body = app_json_body(r);
    if (!body)
        return KEEL_DONE;
    create_job *j = KEEL_REQ_JOB(r, create_job, reply_cleanup);
    json_t *e = json_object_get(body, "email"), *pw = json_object_get(body, "password"),
           *name = json_object_get(body, "name"), *role = json_object_get(body, "role");
    /* the schema checked the types, the e-mail format and the password
     * policy ("format": "password"), all in one 422 */
    if (!json_is_string(e) || app_normalize_email(json_string_value(e), json_string_length(e),
                                                  j->email, sizeof(j->email)) < 0) {
        app_invalid(r, "/email", "must be an e-mail address");
    } else if (!json_is_string(pw)) {
        app_invalid(r, "/password", "is required");
    } else if (name && (!json_is_string(name) || json_string_length(name) > 200)) {
        app_invalid(r, "/name", "must be a string of at most 200 bytes");
    } else if (role && (!json_is_string(role) || !keel_role_valid(json_string_value(role)))) {
        app_invalid(r, "/role", "must be one of user, moderator, admin");
    } else {
        snprintf(j->name, sizeof(j->name), "%s", name ? json_string_value(name) : "");
        snprintf(j->role, sizeof(j->role), "%s", role ? json_string_value(role) : "user");
        j->password_len = json_string_length(pw);
        j->password = app_secret_dup(r, json_string_value(pw), j->password_len);
        return keel_req_job_submit(r, NULL, work_hash, create_hashed, j);
    }
    return KEEL_DONE;
}

/* ---------------------------------------------------------------- routes */

#define S_LIST_QUERY                                                                              \
    "{\"type\":\"object\",\"properties\":{\"page\":{\"type\":\"integer\",\"minimum\":1},"         \
    "\"limit\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":100},\"role\":{\"type\":"         \
    "\"string\",\"enum\":[\"user\",\"moderator\",\"admin\"]},\"status\":{\"type\":\"string\","   \
    "\"enum\":[\"active\",\"disabled\"]},\"q\":{\"type\":\"string\",\"maxLength\":254},"         \
    "\"sort\":{\"type\":\"string\",\"enum\":[\"created_at\",\"-created_at\",\"email\","          \
    "\"-email\",\"name\",\"-name\"]},\"include_deleted\":{\"type\":\"boolean\"}}}"

static const keel_route user_routes[] = {
    {.name = "users.list", .method = "GET", .path = "/api/v1/users", .handler = h_list,
     .summary = "List users (page/limit, role, status, e-mail prefix q, sort)", .auth = "any",
     .permission = "users:read", .query_schema = S_LIST_QUERY, .flags = KEEL_ROUTE_SECRET},
    {.name = "users.create", .method = "POST", .path = "/api/v1/users", .handler = h_create,
     .summary = "Create a user with a role", .auth = "any", .permission = "users:write",
     .request_schema = "{\"type\":\"object\",\"required\":[\"email\",\"password\"],"
                       "\"properties\":{\"email\":{\"type\":\"string\",\"format\":\"email\"},"
                       "\"password\":{\"type\":\"string\",\"format\":\"password\"},\"name\":{\"type\":"
                       "\"string\",\"maxLength\":200},\"role\":{\"type\":\"string\",\"enum\":["
                       "\"user\",\"moderator\",\"admin\"]}}}",
     .flags = KEEL_ROUTE_SECRET},
    {.name = "users.get", .method = "GET", .path = "/api/v1/users/:id", .handler = h_get,
     .summary = "One user (one's own, or with users:read)", .auth = "any",
     .flags = KEEL_ROUTE_SECRET},
    {.name = "users.update", .method = "PATCH", .path = "/api/v1/users/:id", .handler = h_patch,
     .summary = "Change name or e-mail (one's own, or with users:write)", .auth = "any",
     .flags = KEEL_ROUTE_SECRET},
    {.name = "users.delete", .method = "DELETE", .path = "/api/v1/users/:id", .handler = h_delete,
     .summary = "Soft-delete a user (one's own, or with users:delete)", .auth = "any",
     .flags = KEEL_ROUTE_SECRET},
    {.name = "admin.users.list", .method = "GET", .path = "/api/v1/admin/users",
     .handler = h_admin_list, .summary = "List users, soft-deleted ones with include_deleted=true",
     .auth = "user", .permission = "admin:access", .query_schema = S_LIST_QUERY,
     .flags = KEEL_ROUTE_SECRET},
    {.name = "admin.users.update", .method = "PATCH", .path = "/api/v1/admin/users/:id",
     .handler = h_admin_patch, .summary = "Change a user's role or status", .auth = "user",
     .permission = "admin:access",
     .request_schema = "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
                       "\"role\":{\"type\":\"string\",\"enum\":[\"user\",\"moderator\",\"admin\"]},"
                       "\"status\":{\"type\":\"string\",\"enum\":[\"active\",\"disabled\"]}}}",
     .flags = KEEL_ROUTE_SECRET},
};

int app_users_setup(keel_service *svc, app_auth *a)
{
    A = a;
    C = keel_service_cache(svc);
    user_ttl_ms = app_options_of(svc)->user_cache_ttl_ms;
    return keel_service_add_routes(svc, user_routes, sizeof(user_routes) / sizeof(user_routes[0]));
}
