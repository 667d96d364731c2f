/* auth.c — /api/v1/auth: register, login, refresh, logout, logout-all,
 * me; the credential store behind the auth middleware; `keel user` and
 * `keel apikey`. docs/api.md describes the contract.
 *
 * Work placement: argon2id runs on the work pool (it takes ~50 ms and
 * 64 MB), SQL on the database pool; a login is three hops: fetch the user
 * (db), verify (work), record the outcome and issue tokens (db). */
#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/app.h"

static app_auth A;

app_auth *app_auth_get(void)
{
    return &A;
}

/* A hash of nothing anyone knows: verified against when the e-mail is
 * unknown, so both answers take the same time. Made on the first such
 * login, on a pool thread: an argon2id hash (64 MB) at every start-up,
 * CLI commands included, was work most processes never need. */
static char dummy_hash[KEEL_PW_HASH_MAX];
static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;

static void make_dummy_hash(void)
{
    if (keel_password_hash("keel-dummy-password", 19, A.pw_ops, A.pw_mem, dummy_hash) < 0)
        dummy_hash[0] = '\0';
}

/* ---------------------------------------------------------------- schemas */

/* An address to store, checked in the schema step so that one 422 reports
 * it beside every other field: the "account-email" format (below) accepts
 * what app_normalize_email does — surrounding spaces are trimmed and the
 * address lower-cased before it is stored, so " Ann@Example.org" is fine
 * where keel's strict "email" would refuse it. */
#define S_EMAIL "{\"type\":\"string\",\"format\":\"account-email\",\"maxLength\":300}"
/* A password to check against a stored hash: any string (old passwords
 * predate the policy). */
#define S_PASSWORD "{\"type\":\"string\",\"minLength\":1,\"maxLength\":1024}"
/* A password to store: the policy (PASSWORD_MIN_LENGTH, at most 1024
 * bytes, not a common password) is the "password" format, added to the
 * schemas in app_auth_setup (keel_password_format). */
#define S_NEW_PASSWORD "{\"type\":\"string\",\"format\":\"password\"}"
#define S_TOKENS                                                                                  \
    "{\"type\":\"object\",\"properties\":{\"access_token\":{\"type\":\"string\"},"                \
    "\"refresh_token\":{\"type\":\"string\"},\"token_type\":{\"type\":\"string\"},"              \
    "\"expires_in\":{\"type\":\"integer\"}}}"
#define S_USER                                                                                    \
    "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\",\"format\":\"uuid\"},"      \
    "\"email\":{\"type\":\"string\"},\"name\":{\"type\":\"string\"},\"role\":{\"type\":"         \
    "\"string\",\"enum\":[\"user\",\"moderator\",\"admin\"]},\"status\":{\"type\":\"string\"},"   \
    "\"email_verified\":{\"type\":\"boolean\"},\"created_at\":{\"type\":\"string\"},"            \
    "\"updated_at\":{\"type\":\"string\"}}}"

static const char *account_email_check(const char *s, size_t n, void *data)
{
    (void)data;
    char out[256];
    return app_normalize_email(s, n, out, sizeof(out)) < 0 ? "must be an e-mail address" : NULL;
}

static json_t *account_email_describe(void *data)
{
    (void)data;
    return json_pack("{s:s}", "x-keel-format",
                     "an e-mail address; surrounding spaces are trimmed and letters "
                     "lower-cased before it is used");
}

/* ---------------------------------------------------------------- jobs */

/* Each flow keeps its state in a job of its own in the request's arena
 * (keel_req_job_new): released with the request — however it ended —
 * after its cleanup ran and its bytes were wiped; passwords are copied
 * with app_secret_dup (wiped at the same time, and as soon as they are
 * used). No flow frees anything on its error paths. */

static void respond_secret_json(keel_req *r, int status, json_t *o)
{
    keel_res_set_header(r, "Cache-Control", "no-store");
    keel_respond_json(r, status, o);
}

/* A string member of the body, or NULL; 422 named field when mistyped. */
static const char *body_str(keel_req *r, json_t *body, const char *key, size_t *len, int required)
{
    json_t *v = json_object_get(body, key);
    if (v && json_is_string(v)) {
        *len = json_string_length(v);
        return json_string_value(v);
    }
    if (v || required) {
        char ptr[64], msg[96];
        snprintf(ptr, sizeof(ptr), "/%s", key);
        snprintf(msg, sizeof(msg), v ? "%s must be a string" : "%s is required", key);
        app_invalid(r, ptr, msg);
    }
    return NULL;
}

/* A password read from the body: an arena copy, wiped with the request. */
typedef struct secret {
    char *p;
    size_t n;
} secret;

static void secret_set(keel_req *r, secret *s, const char *v, size_t n)
{
    s->p = app_secret_dup(r, v, n);
    s->n = n;
}

/* Wiped once used (the arena wipes it again at the end). */
static void secret_wipe(secret *s)
{
    if (s->p)
        sodium_memzero(s->p, s->n);
    s->n = 0;
}

/* A write to user_id is answered only after its cached copy is gone:
 * 1 when `done` will run again later (app_user_invalidate), 0 to go on
 * answering now. */
static int invalidate_first(keel_req *r, int *invalidated, const char *user_id,
                            keel_db_done_cb done, void *job, int status)
{
    if (status < 0 || *invalidated || !*user_id)
        return 0;
    *invalidated = 1;
    app_user_invalidate(r, user_id, done, job, status);
    return 1;
}

/* Reads email + password (+ name with the policy) and checks them; -1
 * after answering. */
typedef struct creds {
    char email[256];
    char name[256];
    secret pw;
} creds;

static int read_credentials(keel_req *r, int with_policy, creds *cr)
{
    json_t *body = app_json_body(r);
    if (!body)
        return -1;
    size_t el = 0, pl = 0, nl = 0;
    const char *email = body_str(r, body, "email", &el, 1);
    if (!email)
        return -1;
    const char *pw = body_str(r, body, "password", &pl, 1);
    if (!pw)
        return -1;
    if (app_normalize_email(email, el, cr->email, sizeof(cr->email)) < 0) {
        app_invalid(r, "/email", "must be an e-mail address");
        return -1;
    }
    if (with_policy) {
        /* the password policy was the schema's ("format": "password") */
        json_t *nv = json_object_get(body, "name");
        if (nv) {
            const char *name = json_string_value(nv);
            nl = json_string_length(nv);
            if (!name || nl > 200) {
                app_invalid(r, "/name", "must be a string of at most 200 bytes");
                return -1;
            }
            memcpy(cr->name, name, nl);
            cr->name[nl] = '\0';
        }
    } else if (pl > 1024) {
        pl = 1024; /* verified against: cannot match, costs no more */
    }
    secret_set(r, &cr->pw, pw, pl);
    return 0;
}

/* ---------------------------------------------------------------- register */

typedef struct reg_job {
    creds cr;
    char hash[KEEL_PW_HASH_MAX];
    int ok;
    char user_id[64];
    char role[32];
    app_tokens tokens;
    json_t *user;
} reg_job;

static void reg_cleanup(void *arg)
{
    reg_job *j = arg;
    app_tokens_clear(&j->tokens);
    json_decref(j->user);
}

static void work_reg_hash(void *arg)
{
    reg_job *j = arg;
    j->ok = keel_password_hash(j->cr.pw.p, j->cr.pw.n, A.pw_ops, A.pw_mem, j->hash) == 0;
}

/* in one transaction (keel_db_run_tx): may run again on a conflict */
static int db_register(keel_db_conn *c, void *arg)
{
    reg_job *j = arg;
    app_tokens_clear(&j->tokens);
    json_decref(j->user);
    j->user = NULL;
    snprintf(j->role, sizeof(j->role), "user");
    int rc = app_insert_user(c, j->user_id, j->cr.email, j->hash, j->cr.name, j->role, 0);
    if (rc < 0)
        return rc;
    /* the verification mail commits with the account, or neither does */
    rc = app_account_verify_mail(c, j->user_id, j->cr.email, j->cr.name);
    if (rc < 0)
        return rc;
    if (!app_accounts_options_get()->require_verified)
        rc = app_issue_tokens(c, &A, j->user_id, j->role, NULL, &j->tokens);
    return rc < 0 ? rc : app_fetch_user(c, j->user_id, 0, &j->user);
}

static void register_done(keel_req *r, void *arg, int status)
{
    reg_job *j = arg;
    if (status == KEEL_EDB_CONSTRAINT) {
        keel_respond_problem(r, 409, "an account with this e-mail address already exists");
    } else if (status < 0) {
        keel_db_respond_error(r, status);
    } else {
        /* AUTH_REQUIRE_VERIFIED_EMAIL: no tokens before the address is verified */
        json_t *o = j->tokens.access ? app_tokens_json(&j->tokens)
                                     : json_pack("{s:b}", "verification_required", 1);
        json_object_set(o, "user", j->user ? j->user : json_null());
        keel_log(KEEL_LOG_INFO, "user registered", "{s:s}", "user_id", j->user_id);
        respond_secret_json(r, 201, o);
    }
}

static void register_hashed(keel_req *r, void *arg, int status)
{
    reg_job *j = arg;
    if (status < 0)
        return;
    secret_wipe(&j->cr.pw);
    if (!j->ok) {
        keel_respond_problem(r, 500, "the password could not be hashed");
        return;
    }
    keel_db_job_run_tx(r, A.db, db_register, register_done, j);
}

static keel_flow h_register(keel_req *r)
{
    reg_job *j = KEEL_REQ_JOB(r, reg_job, reg_cleanup);
    if (read_credentials(r, 1, &j->cr) < 0)
        return KEEL_DONE;
    return keel_req_job_submit(r, NULL, work_reg_hash, register_hashed, j);
}

/* ---------------------------------------------------------------- login */

typedef struct login_job {
    creds cr;
    int found, ok, rehash, verified;
    char user_id[64];
    char role[32];
    char status[16];
    char hash[KEEL_PW_HASH_MAX];
    char new_hash[KEEL_PW_HASH_MAX];
    int64_t locked_until;
    int64_t failed;
    int invalidated;
    app_tokens tokens;
} login_job;

static void login_cleanup(void *arg)
{
    app_tokens_clear(&((login_job *)arg)->tokens);
}

static int db_login_fetch(keel_db_conn *c, void *arg)
{
    login_job *j = arg;
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->cr.email)};
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           "SELECT id, password_hash, role, status, locked_until, failed_logins, "
                           "email_verified FROM users WHERE email = $1 AND deleted_at IS NULL",
                           p, 1, &rows);
    if (rc < 0)
        return rc;
    if (keel_db_rows_next(rows) == 1) {
        j->found = 1;
        keel_str v = keel_db_get_text(rows, 0);
        snprintf(j->user_id, sizeof(j->user_id), "%.*s", (int)v.len, v.ptr);
        v = keel_db_get_text(rows, 1);
        snprintf(j->hash, sizeof(j->hash), "%.*s", (int)v.len, v.ptr);
        v = keel_db_get_text(rows, 2);
        snprintf(j->role, sizeof(j->role), "%.*s", (int)v.len, v.ptr);
        v = keel_db_get_text(rows, 3);
        snprintf(j->status, sizeof(j->status), "%.*s", (int)v.len, v.ptr);
        j->locked_until = keel_db_get_int(rows, 4);
        j->failed = keel_db_get_int(rows, 5);
        j->verified = keel_db_get_bool(rows, 6);
    }
    keel_db_rows_free(rows);
    return 0;
}

static void work_verify(void *arg)
{
    login_job *j = arg;
    const secret *pw = &j->cr.pw;
    if (j->found) {
        j->ok = keel_password_verify(j->hash, pw->p, pw->n);
        j->rehash = j->ok && keel_password_needs_rehash(j->hash, A.pw_ops, A.pw_mem);
        if (j->rehash && keel_password_hash(pw->p, pw->n, A.pw_ops, A.pw_mem, j->new_hash) < 0)
            j->rehash = 0;
    } else {
        pthread_once(&dummy_once, make_dummy_hash);
        if (dummy_hash[0]) {
            keel_password_verify(dummy_hash, pw->p, pw->n);
        } else { /* no dummy (out of memory): spend the same time anyway */
            char scratch[KEEL_PW_HASH_MAX];
            keel_password_hash(pw->p, pw->n, A.pw_ops, A.pw_mem, scratch);
        }
        j->ok = 0;
    }
}

/* in one transaction (keel_db_run_tx): may run again on a conflict */
static int db_login_record(keel_db_conn *c, void *arg)
{
    login_job *j = arg;
    int64_t now = app_now();
    if (!j->ok) {
        /* count the failure; lock for LOGIN_LOCK_TIME doubling from the
         * LOGIN_MAX_ATTEMPTS-th one, up to LOGIN_LOCK_MAX */
        int64_t failed = j->failed + 1, lock = 0;
        if ((uint64_t)failed >= A.max_attempts) {
            uint64_t n = (uint64_t)failed - A.max_attempts, t = A.lock_base_s;
            while (n-- && t < A.lock_max_s)
                t *= 2;
            lock = now + (int64_t)(t < A.lock_max_s ? t : A.lock_max_s);
        }
        keel_db_param p[] = {KEEL_DB_P_INT(lock), KEEL_DB_P_INT(now), KEEL_DB_P_TEXT(j->user_id)};
        return keel_db_exec(c,
                            "UPDATE users SET failed_logins = failed_logins + 1, "
                            "locked_until = $1, updated_at = $2 WHERE id = $3",
                            p, 3, NULL);
    }
    app_tokens_clear(&j->tokens);
    keel_db_param p[] = {KEEL_DB_P_INT(now), KEEL_DB_P_TEXT(j->user_id),
                         KEEL_DB_P_TEXT(j->rehash ? j->new_hash : j->hash)};
    int rc = keel_db_exec(c,
                          "UPDATE users SET failed_logins = 0, locked_until = 0, "
                          "last_login_at = $1, password_hash = $3 WHERE id = $2",
                          p, 3, NULL);
    if (rc < 0)
        return rc;
    return app_issue_tokens(c, &A, j->user_id, j->role, NULL, &j->tokens);
}

/* AUTH_REQUIRE_VERIFIED_EMAIL: login and refresh of an unverified user */
#define UNVERIFIED                                                                                \
    "this account's e-mail address is not verified yet: open the link of the verification "      \
    "mail, or ask for a new one (POST /api/v1/auth/verify/resend)"

static void bad_credentials(keel_req *r)
{
    keel_res_set_header(r, "WWW-Authenticate", "Bearer realm=\"keel\"");
    keel_res_set_header(r, "Cache-Control", "no-store");
    keel_respond_problem(r, 401, "invalid e-mail address or password");
}

static void login_recorded(keel_req *r, void *arg, int status)
{
    login_job *j = arg;
    /* last_login_at, updated_at */
    if (invalidate_first(r, &j->invalidated, j->user_id, login_recorded, j, status))
        return;
    if (status < 0) {
        keel_db_respond_error(r, status);
    } else if (!j->ok) {
        keel_log(KEEL_LOG_WARN, "login failed", "{s:s,s:I}", "user_id", j->user_id, "failures",
                 (json_int_t)(j->failed + 1));
        bad_credentials(r);
    } else {
        keel_log(KEEL_LOG_INFO, "login", "{s:s}", "user_id", j->user_id);
        respond_secret_json(r, 200, app_tokens_json(&j->tokens));
    }
}

static void login_verified(keel_req *r, void *arg, int status)
{
    login_job *j = arg;
    if (status < 0)
        return;
    secret_wipe(&j->cr.pw);
    if (!j->found) {
        bad_credentials(r);
        return;
    }
    if (j->ok && strcmp(j->status, "active") != 0) {
        keel_res_set_header(r, "Cache-Control", "no-store");
        keel_respond_problem(r, 403, "this account is disabled");
        return;
    }
    if (j->ok && !j->verified && app_accounts_options_get()->require_verified) {
        keel_res_set_header(r, "Cache-Control", "no-store");
        keel_respond_problem(r, 403, UNVERIFIED);
        return;
    }
    keel_db_job_run_tx(r, A.db, db_login_record, login_recorded, j);
}

static void login_fetched(keel_req *r, void *arg, int status)
{
    login_job *j = arg;
    if (status < 0) {
        keel_db_respond_error(r, status);
        return;
    }
    int64_t now = app_now();
    if (j->found && j->locked_until > now) {
        char retry[24];
        snprintf(retry, sizeof(retry), "%lld", (long long)(j->locked_until - now));
        keel_res_set_header(r, "Retry-After", retry);
        keel_res_set_header(r, "Cache-Control", "no-store");
        keel_respond_problem(r, 429, "too many failed logins: this account is locked for a while");
        return;
    }
    keel_req_job_submit(r, NULL, work_verify, login_verified, j);
}

static keel_flow h_login(keel_req *r)
{
    login_job *j = KEEL_REQ_JOB(r, login_job, login_cleanup);
    if (read_credentials(r, 0, &j->cr) < 0)
        return KEEL_DONE;
    return keel_db_job_run(r, A.db, db_login_fetch, login_fetched, j);
}

/* ---------------------------------------------------------------- refresh */

/* Reads {"refresh_token": "..."} into its SHA-256 (hex; "" when absent
 * and not required); -1 after answering. */
static int read_refresh(keel_req *r, int required, char hash[65])
{
    json_t *body = app_json_body(r);
    if (!body)
        return -1;
    size_t n = 0;
    const char *t = body_str(r, body, "refresh_token", &n, required);
    if (!t && keel_req_is_finished(r))
        return -1;
    if (t) {
        if (n == 0 || n > 128) {
            app_invalid(r, "/refresh_token", "must be a refresh token");
            return -1;
        }
        app_sha256_hex(t, n, hash);
    }
    return 0;
}

typedef struct refresh_job {
    char refresh_hash[65];
    int found;
    int reused; /* a rotated token used again: its family was revoked */
    int unverified; /* AUTH_REQUIRE_VERIFIED_EMAIL and the address is not */
    char user_id[64];
    char role[32];
    app_tokens tokens;
} refresh_job;

static void refresh_cleanup(void *arg)
{
    app_tokens_clear(&((refresh_job *)arg)->tokens);
}

/* in one transaction (keel_db_run_tx): may run again on a conflict */
static int db_refresh(keel_db_conn *c, void *arg)
{
    refresh_job *j = arg;
    j->found = j->reused = j->unverified = 0;
    app_tokens_clear(&j->tokens);
    int64_t now = app_now();
    keel_db_param p[] = {KEEL_DB_P_INT(now), KEEL_DB_P_TEXT(j->refresh_hash)};
    keel_db_rows *rows;
    /* the atomic claim: of any number of concurrent uses, one updates */
    int rc = keel_db_query(c,
                           "UPDATE refresh_tokens SET revoked_at = $1 WHERE token_hash = $2 "
                           "AND revoked_at IS NULL AND expires_at > $1 "
                           "RETURNING user_id, family_id",
                           p, 2, &rows);
    if (rc < 0)
        return rc;
    char family[64] = "";
    if (keel_db_rows_next(rows) == 1) {
        j->found = 1;
        keel_str v = keel_db_get_text(rows, 0);
        snprintf(j->user_id, sizeof(j->user_id), "%.*s", (int)v.len, v.ptr);
        v = keel_db_get_text(rows, 1);
        snprintf(family, sizeof(family), "%.*s", (int)v.len, v.ptr);
    }
    keel_db_rows_free(rows);
    if (!j->found) {
        /* a rotated (revoked) token used again: theft; end the family */
        rc = keel_db_query(c,
                           "SELECT family_id, user_id FROM refresh_tokens WHERE token_hash = $2 "
                           "AND revoked_at IS NOT NULL AND $1 = $1",
                           p, 2, &rows);
        if (rc < 0)
            return rc;
        if (keel_db_rows_next(rows) == 1) {
            keel_str v = keel_db_get_text(rows, 0);
            snprintf(family, sizeof(family), "%.*s", (int)v.len, v.ptr);
            v = keel_db_get_text(rows, 1);
            snprintf(j->user_id, sizeof(j->user_id), "%.*s", (int)v.len, v.ptr);
        }
        keel_db_rows_free(rows);
        if (*family) {
            j->reused = 1;
            keel_db_param q[] = {KEEL_DB_P_INT(now), KEEL_DB_P_TEXT(family)};
            return keel_db_exec(c,
                                "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 "
                                "AND revoked_at IS NULL",
                                q, 2, NULL);
        }
        return 0;
    }
    keel_db_param u[] = {KEEL_DB_P_TEXT(j->user_id)};
    rc = keel_db_query(c,
                       "SELECT role, status, email_verified FROM users WHERE id = $1 AND "
                       "deleted_at IS NULL",
                       u, 1, &rows);
    if (rc < 0)
        return rc;
    int active = 0;
    if (keel_db_rows_next(rows) == 1) {
        keel_str v = keel_db_get_text(rows, 0);
        snprintf(j->role, sizeof(j->role), "%.*s", (int)v.len, v.ptr);
        active = keel_str_eq(keel_db_get_text(rows, 1), keel_str_c("active"));
        j->unverified = !keel_db_get_bool(rows, 2) && app_accounts_options_get()->require_verified;
    }
    keel_db_rows_free(rows);
    if (!active || j->unverified) {
        j->found = 0;
        return 0;
    }
    return app_issue_tokens(c, &A, j->user_id, j->role, family, &j->tokens);
}

static void refresh_done(keel_req *r, void *arg, int status)
{
    refresh_job *j = arg;
    if (status < 0) {
        keel_db_respond_error(r, status);
    } else if (j->unverified) {
        keel_res_set_header(r, "Cache-Control", "no-store");
        keel_respond_problem(r, 403, UNVERIFIED);
    } else if (!j->found) {
        if (j->reused)
            keel_log(KEEL_LOG_WARN, "refresh token reused: its family is revoked", "{s:s}",
                     "user_id", j->user_id);
        keel_res_set_header(r, "Cache-Control", "no-store");
        keel_respond_problem(r, 401, "the refresh token is not valid");
    } else {
        respond_secret_json(r, 200, app_tokens_json(&j->tokens));
    }
}

static keel_flow h_refresh(keel_req *r)
{
    refresh_job *j = KEEL_REQ_JOB(r, refresh_job, refresh_cleanup);
    if (read_refresh(r, 1, j->refresh_hash) < 0)
        return KEEL_DONE;
    return keel_db_job_run_tx(r, A.db, db_refresh, refresh_done, j);
}

/* ---------------------------------------------------------------- logout */

typedef struct logout_job {
    char sub[64];         /* the principal */
    char jti[40];         /* the access token to deny */
    int64_t token_exp;    /* its exp */
    char refresh_hash[65]; /* the refresh token given, if any */
    int all;
    char user_id[64];     /* the user whose cached copies go */
    int invalidated;
} logout_job;

/* in one transaction (keel_db_run_tx) */
static int db_logout(keel_db_conn *c, void *arg)
{
    logout_job *j = arg;
    int64_t now = app_now();
    keel_db_param d[] = {KEEL_DB_P_INT(now)};
    int rc = keel_db_exec(c, "DELETE FROM revoked_tokens WHERE expires_at < $1", d, 1, NULL);
    if (rc < 0)
        return rc;
    keel_db_param q[] = {KEEL_DB_P_TEXT(j->jti), KEEL_DB_P_INT(j->token_exp),
                         KEEL_DB_P_TEXT(j->sub)};
    rc = keel_db_exec(c,
                      "INSERT INTO revoked_tokens (jti, expires_at, user_id) VALUES ($1, $2, $3)",
                      q, 3, NULL);
    if (rc < 0 && rc != KEEL_EDB_CONSTRAINT)
        return rc;
    if (j->all) {
        keel_db_param u[] = {KEEL_DB_P_INT(now), KEEL_DB_P_TEXT(j->sub)};
        rc = keel_db_exec(c, "UPDATE users SET tokens_valid_after = $1 WHERE id = $2", u, 2, NULL);
        return rc < 0 ? rc : app_end_sessions(c, j->sub, now);
    }
    if (*j->refresh_hash) {
        keel_db_param t[] = {KEEL_DB_P_INT(now), KEEL_DB_P_TEXT(j->refresh_hash),
                             KEEL_DB_P_TEXT(j->sub)};
        rc = keel_db_exec(c,
                          "UPDATE refresh_tokens SET revoked_at = $1 WHERE token_hash = $2 "
                          "AND user_id = $3 AND revoked_at IS NULL",
                          t, 3, NULL);
    }
    return rc < 0 ? rc : 0;
}

static void logout_done(keel_req *r, void *arg, int status)
{
    logout_job *j = arg;
    /* the revoked jti (the user's auth state); logout-all: tokens_valid_after */
    if (invalidate_first(r, &j->invalidated, j->user_id, logout_done, j, status))
        return;
    if (status < 0)
        keel_db_respond_error(r, status);
    else
        keel_respond(r, 204, NULL, NULL, 0);
}

static keel_flow logout(keel_req *r, int all)
{
    logout_job *j = KEEL_REQ_JOB(r, logout_job, NULL);
    if (keel_req_body(r).len && read_refresh(r, 0, j->refresh_hash) < 0)
        return KEEL_DONE;
    const keel_principal *p = keel_req_principal(r);
    snprintf(j->sub, sizeof(j->sub), "%s", p->id);
    snprintf(j->jti, sizeof(j->jti), "%s", p->jti);
    j->token_exp = p->token_exp;
    j->all = all;
    snprintf(j->user_id, sizeof(j->user_id), "%s", p->id);
    return keel_db_job_run_tx(r, A.db, db_logout, logout_done, j);
}

static keel_flow h_logout(keel_req *r)
{
    return logout(r, 0);
}

static keel_flow h_logout_all(keel_req *r)
{
    return logout(r, 1);
}

/* ---------------------------------------------------------------- me */

/* The caller's record, through the user cache (app_user_serve): with the
 * auth state from the cache too, a request that needs no database. */
static keel_flow h_me(keel_req *r)
{
    return app_user_serve(r, keel_req_principal(r)->id);
}

/* ---------------------------------------------------------------- password */

typedef struct pw_job {
    char user_id[64];
    secret cur, nw;
    int found;
    int ok; /* 1 changed, 0 wrong current password, -1 could not hash */
    char hash[KEEL_PW_HASH_MAX];
    char new_hash[KEEL_PW_HASH_MAX];
    int invalidated;
} pw_job;

static int db_pw_fetch(keel_db_conn *c, void *arg)
{
    pw_job *j = arg;
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->user_id)};
    keel_db_rows *rows;
    int rc = keel_db_query(c, "SELECT password_hash FROM users WHERE id = $1", p, 1, &rows);
    if (rc < 0)
        return rc;
    if (keel_db_rows_next(rows) == 1) {
        keel_str v = keel_db_get_text(rows, 0);
        snprintf(j->hash, sizeof(j->hash), "%.*s", (int)v.len, v.ptr);
        j->found = 1;
    }
    keel_db_rows_free(rows);
    return 0;
}

/* verify the current password, then hash the new one */
static void work_change(void *arg)
{
    pw_job *j = arg;
    j->ok = j->found && keel_password_verify(j->hash, j->cur.p, j->cur.n);
    if (j->ok && keel_password_hash(j->nw.p, j->nw.n, A.pw_ops, A.pw_mem, j->new_hash) < 0)
        j->ok = -1;
}

/* in one transaction (keel_db_run_tx) */
static int db_pw_store(keel_db_conn *c, void *arg)
{
    pw_job *j = arg;
    int64_t now = app_now();
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->new_hash), KEEL_DB_P_INT(now),
                         KEEL_DB_P_TEXT(j->user_id)};
    int rc = keel_db_exec(c,
                          "UPDATE users SET password_hash = $1, updated_at = $2, "
                          "tokens_valid_after = $2 WHERE id = $3",
                          p, 3, NULL);
    return rc < 0 ? rc : app_end_sessions(c, j->user_id, now);
}

static void pw_stored(keel_req *r, void *arg, int status)
{
    pw_job *j = arg;
    /* updated_at */
    if (invalidate_first(r, &j->invalidated, j->user_id, pw_stored, j, status))
        return;
    if (status < 0)
        keel_db_respond_error(r, status);
    else
        keel_respond(r, 204, NULL, NULL, 0);
}

static void pw_checked(keel_req *r, void *arg, int status)
{
    pw_job *j = arg;
    if (status < 0)
        return;
    secret_wipe(&j->cur);
    secret_wipe(&j->nw);
    if (j->ok == 0) {
        keel_respond_problem(r, 403, "the current password is wrong");
        return;
    }
    if (j->ok < 0) {
        keel_respond_problem(r, 500, "the password could not be hashed");
        return;
    }
    keel_db_job_run_tx(r, A.db, db_pw_store, pw_stored, j);
}

static void pw_fetched(keel_req *r, void *arg, int status)
{
    if (status < 0) {
        keel_db_respond_error(r, status);
        return;
    }
    keel_req_job_submit(r, NULL, work_change, pw_checked, arg);
}

static keel_flow h_password(keel_req *r)
{
    json_t *body = app_json_body(r);
    if (!body)
        return KEEL_DONE;
    size_t cl = 0, nl = 0;
    const char *cur = body_str(r, body, "current_password", &cl, 1);
    if (!cur)
        return KEEL_DONE;
    const char *nw = body_str(r, body, "new_password", &nl, 1);
    if (!nw)
        return KEEL_DONE;
    /* the password policy was the schema's ("format": "password") */
    pw_job *j = KEEL_REQ_JOB(r, pw_job, NULL);
    snprintf(j->user_id, sizeof(j->user_id), "%s", keel_req_principal(r)->id);
    secret_set(r, &j->cur, cur, cl > 1024 ? 1024 : cl);
    secret_set(r, &j->nw, nw, nl);
    return keel_db_job_run(r, A.db, db_pw_fetch, pw_fetched, j);
}

/* ---------------------------------------------------------------- credential store */

typedef struct check {
    keel_jwt_claims claims;
    char key[260];
    size_t keylen;
    char *id_out;
    keel_auth_done_fn done;
    void *arg;
    int status;
    char role[256];
    json_t *state;            /* the auth state loaded (load_state) */
    keel_cache_flight *flight;
} check;

static void check_cleanup(void *arg)
{
    json_decref(((check *)arg)->state);
}

static int db_check_user(keel_db_conn *c, void *arg)
{
    check *k = arg;
    keel_db_param p[] = {KEEL_DB_P_TEXT(k->claims.sub), KEEL_DB_P_TEXT(k->claims.jti)};
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           "SELECT role, status, tokens_valid_after, "
                           "(SELECT COUNT(*) FROM revoked_tokens WHERE jti = $2) "
                           "FROM users WHERE id = $1 AND deleted_at IS NULL",
                           p, 2, &rows);
    if (rc < 0)
        return rc;
    k->status = KEEL_EACCES;
    if (keel_db_rows_next(rows) == 1) {
        keel_str role = keel_db_get_text(rows, 0);
        int active = keel_str_eq(keel_db_get_text(rows, 1), keel_str_c("active"));
        int64_t after = keel_db_get_int(rows, 2);
        int revoked = keel_db_get_int(rows, 3) > 0;
        if (active && !revoked && k->claims.iat >= after) {
            k->status = 0;
            snprintf(k->role, sizeof(k->role), "%.*s", (int)role.len, role.ptr);
        }
    }
    keel_db_rows_free(rows);
    return 0;
}

static void checked(keel_req *r, void *arg, int status)
{
    check *k = arg;
    if (status == KEEL_ECANCELED) {
        k->done(r, k->arg, status, NULL);
    } else {
        if (status < 0)
            k->status = status;
        k->done(r, k->arg, k->status, k->status == 0 ? k->role : NULL);
    }
}

/* ---------------------------------------------------------------- auth state
 *
 * What db_check_user asks the database on every authenticated request —
 * the user's status, role and tokens_valid_after, and whether the token's
 * jti was revoked — kept per user in the cache (namespace "auth", key the
 * user id, AUTH_STATE_CACHE_TTL; in process, or in Redis with REDIS_URL):
 *
 *   {"active": true, "role": "user", "after": 1700000000, "revoked": [jti, ...]}
 *   {"gone": true}                           no such user, or soft-deleted
 *
 * "revoked" holds the user's revoked access tokens not yet expired (and
 * rows revoked before migration 0003, which have no user). Loaded on a
 * miss by one query pair, with single-flight per user (keel_cache_fetch).
 * Every write that changes any of it — disable, role change, delete,
 * password change, logout, logout-all — drops the entry before the write
 * is answered (app_user_invalidate), so the next request, on any instance
 * sharing the Redis, loads the new state. An evicted or expired entry is
 * just reloaded: the database stays the source of truth, and a revocation
 * is never lost with a cache entry. Left open across instances: a load
 * another instance began before a write and stores after its delete
 * keeps the old state until the TTL (keel/cache.h) — hence a short
 * default (60 s). */
static keel_cache *AC;
static uint64_t auth_ttl_ms; /* 0: a query per request (db_check_user) */

static int db_auth_state(keel_db_conn *c, void *arg)
{
    check *k = arg;
    json_decref(k->state); /* a retry */
    k->state = NULL;
    keel_db_param p[] = {KEEL_DB_P_TEXT(k->claims.sub)};
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           "SELECT role, status, tokens_valid_after FROM users "
                           "WHERE id = $1 AND deleted_at IS NULL",
                           p, 1, &rows);
    if (rc < 0)
        return rc;
    json_t *st = NULL;
    if ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str role = keel_db_get_text(rows, 0);
        st = json_object();
        json_object_set_new(st, "active",
                            json_boolean(keel_str_eq(keel_db_get_text(rows, 1),
                                                     keel_str_c("active"))));
        json_object_set_new(st, "role", json_stringn(role.ptr, role.len));
        json_object_set_new(st, "after", json_integer(keel_db_get_int(rows, 2)));
    }
    keel_db_rows_free(rows);
    if (rc < 0) {
        json_decref(st);
        return rc;
    }
    if (!st) {
        k->state = json_pack("{s:b}", "gone", 1);
        return 0;
    }
    keel_db_param q[] = {KEEL_DB_P_TEXT(k->claims.sub), KEEL_DB_P_INT(app_now())};
    rc = keel_db_query(c,
                       "SELECT jti FROM revoked_tokens WHERE (user_id = $1 OR user_id IS NULL) "
                       "AND expires_at >= $2",
                       q, 2, &rows);
    if (rc < 0) {
        json_decref(st);
        return rc;
    }
    json_t *revoked = json_array();
    while ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str jti = keel_db_get_text(rows, 0);
        json_array_append_new(revoked, json_stringn(jti.ptr, jti.len));
    }
    keel_db_rows_free(rows);
    json_object_set_new(st, "revoked", revoked);
    if (rc < 0) {
        json_decref(st);
        return rc;
    }
    k->state = st;
    return 0;
}

/* 0 (role copied) when the state lets the token through, else
 * KEEL_EACCES. Anything unexpected in the state refuses (fail closed). */
static int state_allows(const json_t *st, const keel_jwt_claims *cl, char *role, size_t cap)
{
    const json_t *after = json_object_get(st, "after");
    const char *rl = json_string_value(json_object_get(st, "role"));
    const json_t *revoked = json_object_get(st, "revoked");
    if (!json_is_true(json_object_get(st, "active")) || !json_is_integer(after) || !rl ||
        !json_is_array(revoked) || cl->iat < (int64_t)json_integer_value(after))
        return KEEL_EACCES;
    size_t i;
    const json_t *v;
    json_array_foreach(revoked, i, v) {
        const char *jti = json_string_value(v);
        if (!jti || !strcmp(jti, cl->jti))
            return KEEL_EACCES;
    }
    keel_strlcpy(role, rl, cap);
    return 0;
}

static void state_loaded(keel_req *r, void *arg, int status)
{
    check *k = arg;
    (void)r;
    keel_cache_loaded(k->flight, status, status < 0 ? NULL : k->state); /* then got_state */
}

/* The loader of the cache-aside read: one per user and miss per process. */
static void load_state(keel_req *r, void *arg, keel_cache_flight *f)
{
    check *k = arg;
    k->flight = f;
    int rc = keel_db_run(r, A.db, db_auth_state, state_loaded, k);
    if (rc < 0)
        keel_cache_loaded(f, rc, NULL);
}

static void got_state(keel_req *r, void *arg, int status, json_t *value)
{
    check *k = arg;
    if (status < 0) /* KEEL_ECANCELED included: the middleware lets go of r */
        k->done(r, k->arg, status, NULL);
    else if (state_allows(value, &k->claims, k->role, sizeof(k->role)) < 0)
        k->done(r, k->arg, KEEL_EACCES, NULL);
    else
        k->done(r, k->arg, 0, k->role);
}

static void store_check_user(void *self, keel_req *r, const keel_jwt_claims *claims,
                             keel_auth_done_fn done, void *arg)
{
    (void)self;
    check *k = KEEL_REQ_JOB(r, check, check_cleanup); /* wiped with the request */
    k->claims = *claims;
    k->done = done;
    k->arg = arg;
    if (AC && auth_ttl_ms &&
        keel_cache_fetch(AC, r, "auth", claims->sub, auth_ttl_ms, load_state, got_state, k) == 0)
        return;
    int rc = keel_db_run(r, A.db, db_check_user, checked, k);
    if (rc < 0)
        done(r, arg, rc, NULL); /* the middleware answers */
}

/* API keys: "keel_<8 hex prefix>_<secret>"; the prefix finds the row,
 * the SHA-256 of the whole key is compared in constant time. */
static int db_check_apikey(keel_db_conn *c, void *arg)
{
    check *k = arg;
    k->status = KEEL_EACCES;
    if (k->keylen < 15 || memcmp(k->key, "keel_", 5) != 0 || k->key[13] != '_')
        return 0;
    char prefix[9];
    memcpy(prefix, k->key + 5, 8);
    prefix[8] = '\0';
    char hash[65];
    app_sha256_hex(k->key, k->keylen, hash);
    keel_db_param p[] = {KEEL_DB_P_TEXT(prefix)};
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           "SELECT id, key_hash, scopes, expires_at, revoked_at FROM api_keys "
                           "WHERE prefix = $1",
                           p, 1, &rows);
    if (rc < 0)
        return rc;
    int64_t now = app_now();
    if (keel_db_rows_next(rows) == 1) {
        keel_str id = keel_db_get_text(rows, 0), h = keel_db_get_text(rows, 1),
                 scopes = keel_db_get_text(rows, 2);
        int expired = !keel_db_is_null(rows, 3) && keel_db_get_int(rows, 3) <= now;
        int revoked = !keel_db_is_null(rows, 4);
        if (h.len == 64 && sodium_memcmp(h.ptr, hash, 64) == 0 && !expired && !revoked) {
            k->status = 0;
            snprintf(k->role, sizeof(k->role), "%.*s", (int)scopes.len, scopes.ptr);
            snprintf(k->id_out, 64, "%.*s", (int)id.len, id.ptr);
        }
    }
    keel_db_rows_free(rows);
    if (k->status == 0) {
        keel_db_param u[] = {KEEL_DB_P_INT(now), KEEL_DB_P_TEXT(k->id_out)};
        keel_db_exec(c,
                     "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND "
                     "(last_used_at IS NULL OR last_used_at < $1 - 60)",
                     u, 2, NULL);
    }
    return 0;
}

static void store_check_apikey(void *self, keel_req *r, const char *key, size_t len, char *id_out,
                               keel_auth_done_fn done, void *arg)
{
    (void)self;
    check *k = KEEL_REQ_JOB(r, check, NULL); /* the key is wiped with the request */
    memcpy(k->key, key, len < sizeof(k->key) ? len : sizeof(k->key) - 1);
    k->keylen = len < sizeof(k->key) ? len : sizeof(k->key) - 1;
    k->id_out = id_out;
    k->done = done;
    k->arg = arg;
    int rc = keel_db_run(r, A.db, db_check_apikey, checked, k);
    if (rc < 0)
        done(r, arg, rc, NULL); /* the middleware answers */
}

/* ---------------------------------------------------------------- routes */

#define ROUTE_AUTH(n, m, p, h, s, body, resp)                                  \
    {.name = n, .method = m, .path = p, .handler = h, .summary = s,            \
     .request_schema = body, .response_schema = resp, .rate_limit = "auth",    \
     .flags = KEEL_ROUTE_SECRET}

static const keel_route auth_routes[] = {
    ROUTE_AUTH("auth.register", "POST", "/api/v1/auth/register", h_register,
               "Create an account; answers with tokens",
               "{\"type\":\"object\",\"required\":[\"email\",\"password\"],\"properties\":{"
               "\"email\":" S_EMAIL ",\"password\":" S_NEW_PASSWORD ",\"name\":{\"type\":"
               "\"string\",\"maxLength\":200}}}",
               S_TOKENS),
    ROUTE_AUTH("auth.login", "POST", "/api/v1/auth/login", h_login,
               "Exchange e-mail and password for tokens",
               "{\"type\":\"object\",\"required\":[\"email\",\"password\"],\"properties\":{"
               "\"email\":{\"type\":\"string\",\"maxLength\":254},\"password\":" S_PASSWORD "}}",
               S_TOKENS),
    ROUTE_AUTH("auth.refresh", "POST", "/api/v1/auth/refresh", h_refresh,
               "Rotate a refresh token: a new pair; reuse of an old one ends the session",
               "{\"type\":\"object\",\"required\":[\"refresh_token\"],\"properties\":{"
               "\"refresh_token\":{\"type\":\"string\",\"maxLength\":128}}}",
               S_TOKENS),
    {.name = "auth.logout", .method = "POST", .path = "/api/v1/auth/logout", .handler = h_logout,
     .summary = "Revoke this access token (and the refresh token given)", .auth = "user",
     .flags = KEEL_ROUTE_SECRET},
    {.name = "auth.logout_all", .method = "POST", .path = "/api/v1/auth/logout-all",
     .handler = h_logout_all, .summary = "Revoke every token of the user", .auth = "user",
     .flags = KEEL_ROUTE_SECRET},
    {.name = "auth.me", .method = "GET", .path = "/api/v1/auth/me", .handler = h_me,
     .summary = "The signed-in user", .auth = "user", .response_schema = S_USER,
     .flags = KEEL_ROUTE_SECRET},
    {.name = "auth.me_update", .method = "PATCH", .path = "/api/v1/auth/me",
     .handler = app_user_patch_self, .summary = "Change one's own name or e-mail", .auth = "user",
     .request_schema = "{\"type\":\"object\",\"properties\":{"
                       "\"name\":{\"type\":\"string\",\"maxLength\":200},\"email\":" S_EMAIL "}}",
     .response_schema = S_USER, .flags = KEEL_ROUTE_SECRET},
    {.name = "auth.password", .method = "POST", .path = "/api/v1/auth/me/password",
     .handler = h_password, .summary = "Change one's password (ends every session)",
     .auth = "user", .rate_limit = "auth",
     .request_schema = "{\"type\":\"object\",\"required\":[\"current_password\","
                       "\"new_password\"],\"properties\":{\"current_password\":" S_PASSWORD
                       ",\"new_password\":" S_NEW_PASSWORD "}}",
     .flags = KEEL_ROUTE_SECRET},
};

int app_auth_setup(keel_service *svc)
{
    const app_options *cfg = app_options_of(svc);
    A.db = keel_service_db(svc);
    size_t n = cfg->jwt_secret ? strlen(cfg->jwt_secret) : 0;
    if (n > sizeof(A.secret))
        n = sizeof(A.secret);
    if (n) {
        memcpy(A.secret, cfg->jwt_secret, n);
    } else {
        /* development only (production refuses an empty JWT_SECRET) */
        n = 32;
        randombytes_buf(A.secret, n);
        keel_log(KEEL_LOG_WARN, "JWT_SECRET is not set: using a random one; tokens end with "
                                "this process and are not shared with other instances",
                 NULL);
    }
    A.jwt = (keel_jwt_cfg){A.secret, n, cfg->jwt_issuer, cfg->jwt_audience,
                           cfg->jwt_ttl_ms / 1000, 30};
    A.refresh_ttl_s = cfg->refresh_ttl_ms / 1000;
    A.pw_ops = cfg->password_ops;
    A.pw_mem = cfg->password_mem;
    A.pw_min = cfg->password_min;
    A.max_attempts = cfg->login_max_attempts;
    A.lock_base_s = cfg->login_lock_ms / 1000 ? cfg->login_lock_ms / 1000 : 1;
    A.lock_max_s = cfg->login_lock_max_ms / 1000 ? cfg->login_lock_max_ms / 1000 : 1;
    AC = keel_service_cache(svc);
    auth_ttl_ms = cfg->auth_state_ttl_ms;
    keel_auth_store store = {.check_user = store_check_user,
                             .check_apikey = store_check_apikey,
                             .self = &A};
    keel_middleware m = keel_mw_auth(&A.jwt, store);
    keel_service_use_auth(svc, &m);
    /* the password policy and the address check, in the schema step with
     * every other field: "format": "password" / "account-email" */
    keel_schema_format pw = keel_password_format(&A.pw_min);
    keel_schema_format email = {.name = "account-email", .check = account_email_check,
                                .describe = account_email_describe};
    if (keel_service_add_format(svc, &pw) < 0 || keel_service_add_format(svc, &email) < 0)
        return -1;
    if (keel_service_add_routes(svc, auth_routes, sizeof(auth_routes) / sizeof(auth_routes[0])) < 0)
        return -1;
    return app_users_setup(svc, &A);
}
