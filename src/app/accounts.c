/* accounts.c — account mails on top of the mail queue (docs/api.md,
 * docs/mail.md):
 *
 *   POST /api/v1/auth/password/forgot   {email}            always 202
 *   POST /api/v1/auth/password/reset    {token, password}  204; ends every session
 *   POST /api/v1/auth/verify            {token}            200 with the user
 *   POST /api/v1/auth/verify/resend     {email}            always 202
 *
 * Same answer, same work, whether the address has an account: forgot and
 * resend only enqueue a job (kind "account.password_reset" /
 * "account.verify_email", unique per address while unfinished, so a burst
 * of requests for one address makes one mail) and answer 202; the job
 * looks the address up off the request path and, when there is an active
 * account, creates a token and enqueues the "mail.send" job in one
 * transaction. A token is 32 random bytes (base64url) given only in the
 * mail; the table keeps its SHA-256. Single use: redeeming it is one
 * compare-and-set (used_at IS NULL AND not expired), so of two concurrent
 * uses one wins. A password reset also uses up the user's other reset
 * tokens, moves tokens_valid_after and revokes every refresh token (every
 * session ends), and marks the address verified (the mail reached it).
 *
 * Registration creates a verification token and enqueues its mail in the
 * registering transaction (auth.c calls app_account_verify_mail).
 * AUTH_REQUIRE_VERIFIED_EMAIL decides whether an unverified user may log
 * in (auth.c: 403 when not). */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"

static app_accounts_options O = {
    .mail_max_attempts = 10, .service_name = (char *)"keel", .reset_ttl_ms = 30 * 60000,
    .verify_ttl_ms = 48 * 3600000ull, .resend_interval_ms = 60000,
    .reset_url = (char *)"http://localhost:8080/reset-password",
    .verify_url = (char *)"http://localhost:8080/verify-email",
}; /* the defaults until app_accounts_setup */
static keel_db *DB;

const app_accounts_options *app_accounts_options_get(void)
{
    return &O;
}

/* ---------------------------------------------------------------- config */

static int url_check(const char *v)
{
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '"' || *p == '<' || *p == '>')
            return KEEL_EINVAL;
    return 0;
}

static const char *const HTTP_URL[] = {"http://", "https://", NULL};

#define AT(f) KEEL_CONFIG_AT(app_accounts_options, f)
static const keel_config_var accounts_vars[] = {
    {.name = "MAIL_JOB_MAX_ATTEMPTS", .type = KEEL_CONFIG_UINT, .def = "10",
     AT(mail_max_attempts), .min = 1, .max = 1000,
     .help = "attempts of a mail enqueued by the service (4xx replies and an unreachable "
             "server retry with the queue's backoff); then the job is dead"},
    {.name = "AUTH_MAIL_SERVICE_NAME", .type = KEEL_CONFIG_STR, .def = "keel",
     AT(service_name), .help = "the service's name in account mails ({{service}})"},
    {.name = "AUTH_PASSWORD_RESET_TTL", .type = KEEL_CONFIG_DURATION, .def = "30m",
     AT(reset_ttl_ms), .min = 60000, .max = 86400000,
     .help = "a password reset link expires after this (whole minutes in the mail)"},
    {.name = "AUTH_PASSWORD_RESET_URL", .type = KEEL_CONFIG_URL, .def =
     "http://localhost:8080/reset-password", AT(reset_url), .values = HTTP_URL,
     .flags = KEEL_CONFIG_REQUIRED, .check = url_check,
     .help = "the page of the reset mail's link; ?token=... (or &token=...) is appended"},
    {.name = "AUTH_VERIFY_EMAIL_TTL", .type = KEEL_CONFIG_DURATION, .def = "48h",
     AT(verify_ttl_ms), .min = 3600000, .max = 86400000ull * 30,
     .help = "an e-mail verification link expires after this (whole hours in the mail)"},
    {.name = "AUTH_VERIFY_EMAIL_URL", .type = KEEL_CONFIG_URL, .def =
     "http://localhost:8080/verify-email", AT(verify_url), .values = HTTP_URL,
     .flags = KEEL_CONFIG_REQUIRED, .check = url_check,
     .help = "the page of the verification mail's link; ?token=... is appended"},
    {.name = "AUTH_REQUIRE_VERIFIED_EMAIL", .type = KEEL_CONFIG_BOOL, .def = "false",
     AT(require_verified),
     .help = "refuse login and refresh (403) to users whose address is not verified; "
             "registration then answers without tokens"},
    {.name = "AUTH_VERIFY_RESEND_INTERVAL", .type = KEEL_CONFIG_DURATION, .def = "60s",
     AT(resend_interval_ms), .max = 86400000,
     .help = "at most one verification mail per account this often (resend asks within it "
             "are answered 202 and send nothing)"},
};
#undef AT

const keel_config_module app_accounts_config = KEEL_CONFIG_MODULE(
    "accounts",
    "Account mails: the mail queue, password reset and e-mail verification "
    "(src/app/mail_queue.c, src/app/accounts.c).",
    app_accounts_options, accounts_vars, NULL);

/* ---------------------------------------------------------------- tokens */

enum { TOKEN_BYTES = 32, TOKEN_TEXT = 64 };

static void link_of(const char *base, const char *token, char *out, size_t cap)
{
    snprintf(out, cap, "%s%stoken=%s", base, strchr(base, '?') ? "&" : "?", token);
}

/* A display name the mail header accepts (no control characters), else
 * none: the name is user-given and a CR/LF would make the mail invalid. */
static const char *header_name(const char *name)
{
    if (!name || !*name || strlen(name) > 200)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return NULL;
    return name;
}

/* Inserts a token row for (user, purpose) and enqueues its mail on c,
 * inside the caller's transaction. */
static int token_mail(keel_db_conn *c, const char *purpose, const char *user_id,
                      const char *email, const char *name, uint64_t ttl_ms, const char *url)
{
    if (!keel_mail_address_ok(email)) {
        /* accepted as an account's address (e.g. non-ASCII: SMTPUTF8), but
         * not one keel sends to: no token, no mail; the account stands */
        keel_log(KEEL_LOG_WARN, "account mail not sent: the address is not one keel sends to",
                 "{s:s,s:s}", "user_id", user_id, "purpose", purpose);
        return 0;
    }
    char token[TOKEN_TEXT], hash[65];
    int64_t now = app_now();
    /* tokens a day past their expiry go (account_tokens_expires) */
    keel_db_param d[] = {KEEL_DB_P_INT(now - 86400)};
    int rc = keel_db_exec(c, "DELETE FROM account_tokens WHERE expires_at < $1", d, 1, NULL);
    if (rc < 0)
        return rc;
    app_random_token(token, sizeof(token), TOKEN_BYTES);
    app_sha256_hex(token, strlen(token), hash);
    keel_db_param p[] = {KEEL_DB_P_TEXT(hash), KEEL_DB_P_TEXT(user_id), KEEL_DB_P_TEXT(purpose),
                         KEEL_DB_P_TEXT(email), KEEL_DB_P_INT(now + (int64_t)(ttl_ms / 1000)),
                         KEEL_DB_P_INT(now)};
    rc = keel_db_exec(c,
                      "INSERT INTO account_tokens (token_hash, user_id, purpose, email, "
                      "expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                      p, 6, NULL);
    if (rc < 0)
        goto done;
    char link[1200];
    link_of(url, token, link, sizeof(link));
    json_t *vars = json_pack("{s:s, s:s, s:s}", "name", name && *name ? name : email, "email",
                             email, "service", O.service_name);
    /* the link holds the token: sealed, never readable in the job's args */
    json_t *secret = json_pack("{s:s}", "link", link);
    if (!strcmp(purpose, "password_reset"))
        json_object_set_new(vars, "expires_minutes", json_integer((json_int_t)(ttl_ms / 60000)));
    else
        json_object_set_new(vars, "expires_hours", json_integer((json_int_t)(ttl_ms / 3600000)));
    /* the Message-ID key: one per token, never the token itself */
    char key[96];
    snprintf(key, sizeof(key), "%s:%.32s", purpose, hash);
    rc = app_mail_enqueue_sealed(c, email, header_name(name), purpose, vars, secret, key,
                                 "account");
    json_decref(vars);
    json_decref(secret);
    sodium_memzero(link, sizeof(link));
done:
    sodium_memzero(token, sizeof(token));
    return rc;
}

int app_account_verify_mail(keel_db_conn *c, const char *user_id, const char *email,
                            const char *name)
{
    return token_mail(c, "verify_email", user_id, email, name, O.verify_ttl_ms, O.verify_url);
}

/* ---------------------------------------------------------------- the lookup jobs */

typedef struct lookup {
    const char *email;
    int reset; /* 1 password reset, 0 verification */
    const char *outcome;
} lookup;

static int lookup_tx(keel_db_conn *c, void *arg)
{
    lookup *l = arg;
    keel_db_param p[] = {KEEL_DB_P_TEXT(l->email)};
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           "SELECT id, name, status, email_verified FROM users "
                           "WHERE email = $1 AND deleted_at IS NULL",
                           p, 1, &rows);
    if (rc < 0)
        return rc;
    char id[64] = "", name[256] = "";
    int active = 0, verified = 0;
    if ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str v = keel_db_get_text(rows, 0);
        snprintf(id, sizeof(id), "%.*s", (int)v.len, v.ptr);
        v = keel_db_get_text(rows, 1);
        snprintf(name, sizeof(name), "%.*s", (int)v.len, v.ptr);
        active = keel_str_eq(keel_db_get_text(rows, 2), keel_str_c("active"));
        verified = keel_db_get_bool(rows, 3);
    }
    keel_db_rows_free(rows);
    if (rc < 0)
        return rc;
    if (!*id || !active) {
        l->outcome = !*id ? "no such account" : "account disabled";
        return 0;
    }
    if (l->reset) {
        l->outcome = "mail enqueued";
        return token_mail(c, "password_reset", id, l->email, name, O.reset_ttl_ms, O.reset_url);
    }
    if (verified) {
        l->outcome = "already verified";
        return 0;
    }
    keel_db_param q[] = {KEEL_DB_P_TEXT(id),
                         KEEL_DB_P_INT(app_now() - (int64_t)(O.resend_interval_ms / 1000))};
    rc = keel_db_query(c,
                       "SELECT COUNT(*) FROM account_tokens WHERE user_id = $1 AND "
                       "purpose = 'verify_email' AND created_at > $2",
                       q, 2, &rows);
    if (rc < 0)
        return rc;
    int64_t recent = keel_db_rows_next(rows) == 1 ? keel_db_get_int(rows, 0) : 0;
    keel_db_rows_free(rows);
    if (recent > 0 && O.resend_interval_ms) {
        l->outcome = "throttled (AUTH_VERIFY_RESEND_INTERVAL)";
        return 0;
    }
    l->outcome = "mail enqueued";
    return app_account_verify_mail(c, id, l->email, name);
}

static keel_job_outcome run_lookup(keel_job *job, void *arg)
{
    lookup l = {.reset = arg != NULL};
    l.email = json_string_value(json_object_get(keel_job_args(job), "email"));
    if (!l.email)
        return keel_job_fail(job, "invalid args: email (a string) is required");
    keel_db_conn *c = keel_job_db(job);
    if (!c)
        return keel_job_retry(job, "no database connection");
    int rc = keel_db_tx(c, lookup_tx, &l);
    if (rc < 0)
        return keel_job_retry(job, keel_db_strerror(rc));
    /* the address is not logged: whether it has an account is the secret */
    keel_log(KEEL_LOG_INFO, l.reset ? "password reset asked" : "verification mail asked",
             "{s:I,s:s}", "job_id", (json_int_t)keel_job_id(job), "outcome", l.outcome);
    return KEEL_JOB_OK;
}

/* ---------------------------------------------------------------- request helpers */

static const char *body_string(keel_req *r, const char *key, size_t *len)
{
    json_t *body = app_json_body(r);
    if (!body)
        return NULL;
    json_t *v = json_object_get(body, key);
    if (!json_is_string(v)) {
        char ptr[32], msg[64];
        snprintf(ptr, sizeof(ptr), "/%s", key);
        snprintf(msg, sizeof(msg), v ? "%s must be a string" : "%s is required", key);
        app_invalid(r, ptr, msg);
        return NULL;
    }
    *len = json_string_length(v);
    return json_string_value(v);
}

/* Reads {"token"} into its SHA-256; -1 after answering. */
static int read_token(keel_req *r, char hash[65])
{
    size_t n = 0;
    const char *t = body_string(r, "token", &n);
    if (!t)
        return -1;
    app_sha256_hex(t, n, hash);
    return 0;
}

static void bad_token(keel_req *r, const char *what)
{
    char msg[128];
    snprintf(msg, sizeof(msg), "the %s token is invalid, used or expired", what);
    keel_res_set_header(r, "Cache-Control", "no-store");
    keel_respond_problem(r, 400, msg);
}

/* ---------------------------------------------------------------- forgot, resend */

typedef struct ask_job {
    char email[256];
    int reset;
} ask_job;

static int db_ask(keel_db_conn *c, void *arg)
{
    ask_job *j = arg;
    char hash[65], key[96];
    app_sha256_hex(j->email, strlen(j->email), hash);
    snprintf(key, sizeof(key), "%s:%s", j->reset ? "password_reset" : "verify_email", hash);
    json_t *a = json_pack("{s:s}", "email", j->email);
    char *args = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    if (!args)
        return KEEL_ENOMEM;
    keel_job_spec s = {.kind = j->reset ? "account.password_reset" : "account.verify_email",
                       .queue = APP_MAIL_QUEUE, .args = args, .max_attempts = 5,
                       .unique_key = key};
    int rc = keel_job_enqueue(c, &s, NULL);
    free(args);
    return rc;
}

static void asked(keel_req *r, void *arg, int status)
{
    ask_job *j = arg;
    if (status < 0) {
        keel_db_respond_error(r, status);
        return;
    }
    keel_res_set_header(r, "Cache-Control", "no-store");
    keel_respond_json(r, 202,
                      json_pack("{s:s}", "detail",
                                j->reset ? "if an account has this address, a mail with a "
                                           "reset link is on its way"
                                         : "if an unverified account has this address, a "
                                           "verification mail is on its way"));
}

static keel_flow ask(keel_req *r, int reset)
{
    size_t n = 0;
    const char *e = body_string(r, "email", &n);
    if (!e)
        return KEEL_DONE;
    ask_job *j = KEEL_REQ_JOB(r, ask_job, NULL);
    j->reset = reset;
    if (app_normalize_email(e, n, j->email, sizeof(j->email)) < 0) {
        app_invalid(r, "/email", "must be an e-mail address");
        return KEEL_DONE;
    }
    return keel_db_job_run(r, DB, db_ask, asked, j);
}

static keel_flow h_forgot(keel_req *r)
{
    return ask(r, 1);
}

static keel_flow h_resend(keel_req *r)
{
    return ask(r, 0);
}

/* ---------------------------------------------------------------- reset */

typedef struct reset_job {
    char token_hash[65];
    char *pw;
    size_t pwlen;
    int found, hashed;
    char hash[KEEL_PW_HASH_MAX];
    char user_id[64];
    int invalidated;
} reset_job;

static int db_reset_check(keel_db_conn *c, void *arg)
{
    reset_job *j = arg;
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->token_hash), KEEL_DB_P_INT(app_now())};
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           "SELECT 1 FROM account_tokens WHERE token_hash = $1 AND "
                           "purpose = 'password_reset' AND used_at IS NULL AND expires_at > $2",
                           p, 2, &rows);
    if (rc < 0)
        return rc;
    rc = keel_db_rows_next(rows);
    keel_db_rows_free(rows);
    j->found = rc == 1;
    return rc < 0 ? rc : 0;
}

static void work_reset_hash(void *arg)
{
    reset_job *j = arg;
    const app_auth *a = app_auth_get();
    j->hashed = keel_password_hash(j->pw, j->pwlen, a->pw_ops, a->pw_mem, j->hash) == 0;
    sodium_memzero(j->pw, j->pwlen);
}

/* Claims a token of `purpose` by its hash: of concurrent uses of one
 * token, one updates it (used_at). 1 with its user and address copied,
 * 0 when unknown, used or expired, or a KEEL_EDB_* error. */
static int claim_token(keel_db_conn *c, const char *purpose, const char *token_hash,
                       int64_t now, char *user_id, size_t user_cap, char email[256])
{
    keel_db_param p[] = {KEEL_DB_P_INT(now), KEEL_DB_P_TEXT(token_hash), KEEL_DB_P_TEXT(purpose)};
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           "UPDATE account_tokens SET used_at = $1 WHERE token_hash = $2 AND "
                           "purpose = $3 AND used_at IS NULL AND expires_at > $1 "
                           "RETURNING user_id, email",
                           p, 3, &rows);
    if (rc < 0)
        return rc;
    if ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str v = keel_db_get_text(rows, 0);
        snprintf(user_id, user_cap, "%.*s", (int)v.len, v.ptr);
        v = keel_db_get_text(rows, 1);
        snprintf(email, 256, "%.*s", (int)v.len, v.ptr);
    }
    keel_db_rows_free(rows);
    return rc;
}

/* in one transaction (keel_db_run_tx): may run again on a conflict */
static int db_reset_store(keel_db_conn *c, void *arg)
{
    reset_job *j = arg;
    int64_t now = app_now();
    char email[256] = "";
    int rc = claim_token(c, "password_reset", j->token_hash, now, j->user_id,
                         sizeof(j->user_id), email);
    j->found = rc == 1;
    if (rc <= 0)
        return rc;
    keel_db_param u[] = {KEEL_DB_P_TEXT(j->hash), KEEL_DB_P_INT(now), KEEL_DB_P_TEXT(j->user_id),
                         KEEL_DB_P_TEXT(email)};
    int64_t changed = 0;
    rc = keel_db_exec(c,
                      "UPDATE users SET password_hash = $1, updated_at = $2, "
                      "tokens_valid_after = $2, failed_logins = 0, locked_until = 0, "
                      "email_verified = CASE WHEN email = $4 THEN TRUE ELSE email_verified END "
                      "WHERE id = $3 AND deleted_at IS NULL",
                      u, 4, &changed);
    if (rc < 0)
        return rc;
    if (changed == 0) { /* deleted since: the token is used up all the same */
        j->found = 0;
        return 0;
    }
    keel_db_param t[] = {KEEL_DB_P_INT(now), KEEL_DB_P_TEXT(j->user_id)};
    rc = keel_db_exec(c,
                      "UPDATE account_tokens SET used_at = $1 WHERE user_id = $2 AND "
                      "purpose = 'password_reset' AND used_at IS NULL",
                      t, 2, NULL);
    return rc < 0 ? rc : app_end_sessions(c, j->user_id, now);
}

static void reset_stored(keel_req *r, void *arg, int status)
{
    reset_job *j = arg;
    /* password, tokens_valid_after, email_verified: the cached copies go first */
    if (status >= 0 && j->found && !j->invalidated) {
        j->invalidated = 1;
        app_user_invalidate(r, j->user_id, reset_stored, j, status);
        return;
    }
    if (status < 0) {
        keel_db_respond_error(r, status);
    } else if (!j->found) {
        bad_token(r, "reset");
    } else {
        keel_log(KEEL_LOG_INFO, "password reset: every session ended", "{s:s}", "user_id",
                 j->user_id);
        keel_respond(r, 204, NULL, NULL, 0);
    }
}

static void reset_hashed(keel_req *r, void *arg, int status)
{
    reset_job *j = arg;
    if (status < 0)
        return;
    if (!j->hashed) {
        keel_respond_problem(r, 500, "the password could not be hashed");
        return;
    }
    keel_db_job_run_tx(r, DB, db_reset_store, reset_stored, j);
}

static void reset_checked(keel_req *r, void *arg, int status)
{
    reset_job *j = arg;
    if (status < 0) {
        keel_db_respond_error(r, status);
    } else if (!j->found) { /* no hash spent on a bad token */
        bad_token(r, "reset");
    } else {
        keel_req_job_submit(r, NULL, work_reset_hash, reset_hashed, j);
    }
}

static keel_flow h_reset(keel_req *r)
{
    reset_job *j = KEEL_REQ_JOB(r, reset_job, NULL);
    if (read_token(r, j->token_hash) < 0)
        return KEEL_DONE;
    size_t n = 0;
    const char *pw = body_string(r, "password", &n);
    if (!pw) /* the policy was the schema's ("format": "password") */
        return KEEL_DONE;
    j->pw = app_secret_dup(r, pw, n);
    j->pwlen = n;
    return keel_db_job_run(r, DB, db_reset_check, reset_checked, j);
}

/* ---------------------------------------------------------------- verify */

typedef struct verify_job {
    char token_hash[65];
    int found; /* 1 verified, 2 the account's address changed since */
    char user_id[64];
    json_t *user;
    int invalidated;
} verify_job;

static void verify_cleanup(void *arg)
{
    json_decref(((verify_job *)arg)->user);
}

/* in one transaction (keel_db_run_tx) */
static int db_verify(keel_db_conn *c, void *arg)
{
    verify_job *j = arg;
    json_decref(j->user);
    j->user = NULL;
    int64_t now = app_now();
    char email[256] = "";
    int rc = claim_token(c, "verify_email", j->token_hash, now, j->user_id, sizeof(j->user_id),
                         email);
    j->found = rc == 1;
    if (rc <= 0)
        return rc;
    keel_db_param u[] = {KEEL_DB_P_INT(now), KEEL_DB_P_TEXT(j->user_id), KEEL_DB_P_TEXT(email)};
    int64_t changed = 0;
    rc = keel_db_exec(c,
                      "UPDATE users SET email_verified = TRUE, updated_at = $1 "
                      "WHERE id = $2 AND email = $3 AND deleted_at IS NULL",
                      u, 3, &changed);
    if (rc < 0)
        return rc;
    if (changed == 0) {
        j->found = 2;
        return 0;
    }
    return app_fetch_user(c, j->user_id, 0, &j->user);
}

static void verified(keel_req *r, void *arg, int status)
{
    verify_job *j = arg;
    if (status >= 0 && j->found == 1 && !j->invalidated) {
        j->invalidated = 1;
        app_user_invalidate(r, j->user_id, verified, j, status);
        return;
    }
    if (status < 0) {
        keel_db_respond_error(r, status);
    } else if (j->found == 2) {
        keel_respond_problem(r, 409, "this link was sent to an address the account no longer "
                                     "has: ask for a new verification mail");
    } else if (!j->found) {
        bad_token(r, "verification");
    } else {
        keel_log(KEEL_LOG_INFO, "e-mail address verified", "{s:s}", "user_id", j->user_id);
        keel_res_set_header(r, "Cache-Control", "no-store");
        keel_respond_json(r, 200, json_incref(j->user));
    }
}

static keel_flow h_verify(keel_req *r)
{
    verify_job *j = KEEL_REQ_JOB(r, verify_job, verify_cleanup);
    if (read_token(r, j->token_hash) < 0)
        return KEEL_DONE;
    return keel_db_job_run_tx(r, DB, db_verify, verified, j);
}

/* ---------------------------------------------------------------- routes */

#define S_TOKEN "{\"type\":\"string\",\"minLength\":1,\"maxLength\":128}"
#define S_ASK                                                                                     \
    "{\"type\":\"object\",\"required\":[\"email\"],\"additionalProperties\":false,"              \
    "\"properties\":{\"email\":{\"type\":\"string\",\"format\":\"account-email\","               \
    "\"maxLength\":300}}}"
#define S_ACCEPTED "{\"type\":\"object\",\"properties\":{\"detail\":{\"type\":\"string\"}}}"

static const keel_route account_routes[] = {
    {.name = "auth.password_forgot", .method = "POST", .path = "/api/v1/auth/password/forgot",
     .handler = h_forgot, .rate_limit = "auth", .flags = KEEL_ROUTE_SECRET,
     .summary = "Ask for a password reset mail; always 202 (whether the address has an "
                "account is not told)",
     .request_schema = S_ASK, .response_schema = S_ACCEPTED},
    {.name = "auth.password_reset", .method = "POST", .path = "/api/v1/auth/password/reset",
     .handler = h_reset, .rate_limit = "auth", .flags = KEEL_ROUTE_SECRET,
     .summary = "Set a new password with the token of a reset mail (single use); ends every "
                "session",
     .request_schema = "{\"type\":\"object\",\"required\":[\"token\",\"password\"],"
                       "\"additionalProperties\":false,\"properties\":{\"token\":" S_TOKEN
                       ",\"password\":{\"type\":\"string\",\"format\":\"password\"}}}"},
    {.name = "auth.verify", .method = "POST", .path = "/api/v1/auth/verify", .handler = h_verify,
     .rate_limit = "auth", .flags = KEEL_ROUTE_SECRET,
     .summary = "Verify one's e-mail address with the token of a verification mail",
     .request_schema = "{\"type\":\"object\",\"required\":[\"token\"],"
                       "\"additionalProperties\":false,\"properties\":{\"token\":" S_TOKEN "}}"},
    {.name = "auth.verify_resend", .method = "POST", .path = "/api/v1/auth/verify/resend",
     .handler = h_resend, .rate_limit = "auth", .flags = KEEL_ROUTE_SECRET,
     .summary = "Ask for a new verification mail; always 202, at most one mail per "
                "AUTH_VERIFY_RESEND_INTERVAL",
     .request_schema = S_ASK, .response_schema = S_ACCEPTED},
};

int app_accounts_setup(keel_service *svc)
{
    O = *(const app_accounts_options *)keel_config_get(keel_service_config(svc),
                                                       &app_accounts_config);
    DB = keel_service_db(svc);
    keel_jobs *jq = keel_service_jobs(svc);
    if (jq) {
        keel_job_handler reset = {.kind = "account.password_reset", .run = run_lookup,
                                  .arg = (void *)"reset"};
        keel_job_handler verify = {.kind = "account.verify_email", .run = run_lookup};
        if (keel_jobs_register(jq, &reset) < 0 || keel_jobs_register(jq, &verify) < 0)
            return -1;
    }
    return keel_service_add_routes(svc, account_routes,
                                   sizeof(account_routes) / sizeof(account_routes[0]));
}
