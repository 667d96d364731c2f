/* app.h — the reference service's own helpers (src/app only). */
#ifndef KEEL_APP_H
#define KEEL_APP_H

#include "keel/keel.h"

struct json_t;

/* The request body as JSON, borrowed (keel_req_json: the request owns
 * it). On failure answers 415 (not JSON), 413 or 400 (malformed, with the
 * byte offset) and returns NULL. */
struct json_t *app_json_body(keel_req *r);
/* Answers 422 problem+json with one error {pointer, message}. */
void app_invalid(keel_req *r, const char *pointer, const char *message);

/* Responds with text and releases a keel_req_hold() — for timer-driven
 * handlers; a no-op response when the request already ended. */
void keel_req_resume_respond_text(keel_req *r, int status, const char *text);

/* The reference service's own options (src/app/config.c): accounts,
 * tokens, the user cache, the demo routes. keel_config_get(cfg,
 * &app_config), or app_options(svc). */
typedef struct app_options {
    char *jwt_secret;           /* JWT_SECRET (secret) */
    uint64_t jwt_ttl_ms;        /* JWT_EXPIRES_IN */
    char *jwt_issuer;           /* JWT_ISSUER */
    char *jwt_audience;         /* JWT_AUDIENCE */
    uint64_t refresh_ttl_ms;    /* REFRESH_TOKEN_EXPIRY */
    uint64_t password_min;      /* PASSWORD_MIN_LENGTH */
    uint64_t password_ops;      /* PASSWORD_HASH_OPS */
    uint64_t password_mem;      /* PASSWORD_HASH_MEMORY, bytes */
    uint64_t login_max_attempts; /* LOGIN_MAX_ATTEMPTS */
    uint64_t login_lock_ms;     /* LOGIN_LOCK_TIME (first lock; doubles) */
    uint64_t login_lock_max_ms; /* LOGIN_LOCK_MAX */
    uint64_t user_cache_ttl_ms; /* USER_CACHE_TTL (0 = not cached) */
    uint64_t auth_state_ttl_ms; /* AUTH_STATE_CACHE_TTL (0 = a query per request) */
    int demo_routes;            /* ENABLE_DEMO_ROUTES (default: not in production) */
    char *bench_jwt_secret;     /* BENCH_JWT_SECRET (secret): GET /auth/me, a demo route */
} app_options;

extern const keel_config_module app_config;
const app_options *app_options_of(keel_service *svc);

int app_demo_setup(keel_service *svc);
int app_distributed_setup(keel_service *svc);
/* INSTANCE_ID, or hostname-pid. */
const char *app_instance_id(void);
/* /distributed/cache/:key (src/app/dist_cache.c). */
int app_dist_cache_setup(keel_service *svc);
int app_dist_lock_setup(keel_service *svc);

/* ---------------------------------------------------------------- accounts */

/* The account settings and the database (src/app/auth.c). */
typedef struct app_auth {
    keel_db *db;
    keel_jwt_cfg jwt;
    uint8_t secret[256];
    uint64_t refresh_ttl_s;
    uint64_t pw_ops, pw_mem, pw_min;
    uint64_t max_attempts, lock_base_s, lock_max_s;
} app_auth;

typedef struct app_tokens {
    char *access; /* keel_free */
    char refresh[64];
    int64_t expires_in;
} app_tokens;

#define APP_USER_COLUMNS                                                       \
    "id, email, name, role, status, email_verified, created_at, updated_at, "  \
    "last_login_at, deleted_at"

int app_auth_setup(keel_service *svc);
int app_users_setup(keel_service *svc, app_auth *a);
/* PATCH /api/v1/auth/me (src/app/users.c): name and e-mail of one's own
 * record, as PATCH /api/v1/users/:id does it. */
keel_flow app_user_patch_self(keel_req *r);
/* Answers the user user_id (200 with the record, as GET
 * /api/v1/users/:id, through the user cache; 404 when there is none). */
keel_flow app_user_serve(keel_req *r, const char *user_id);
/* Drops the cached copies of a user (GET /api/v1/users/:id, and its auth
 * state: status, role, tokens_valid_after, revoked tokens), then calls
 * then(r, arg, status) — after Redis answered, so a read that follows the
 * write's answer, on any instance, sees the write. Call after every
 * change to a user's record. r is held meanwhile. */
void app_user_invalidate(keel_req *r, const char *user_id, keel_db_done_cb then, void *arg,
                         int status);
int app_auth_command(keel_service *svc, const char *cmd, int argc, char **argv);
app_auth *app_auth_get(void);

int64_t app_now(void);
void app_uuid(char out[37]);
void app_random_token(char *out, size_t cap, size_t nbytes);
void app_sha256_hex(const char *s, size_t n, char out[65]);
/* Trimmed, lower-cased, checked (one @, a dot in the domain, no spaces or
 * specials): 0, or -1 when not an address. */
int app_normalize_email(const char *in, size_t n, char *out, size_t cap);
/* A user row (APP_USER_COLUMNS from column `first`) as JSON. */
struct json_t *app_user_json(const keel_db_rows *rows, size_t first);
int app_issue_tokens(keel_db_conn *c, const app_auth *a, const char *user_id, const char *role,
                     const char *family, app_tokens *out);
/* The user with this id as JSON (*out, a new reference): 0, or
 * KEEL_EDB_NOROW (none, or soft-deleted unless include_deleted). */
int app_fetch_user(keel_db_conn *c, const char *id, int include_deleted, struct json_t **out);
/* Inserts a user with a new id (written to id): 0, or KEEL_EDB_CONSTRAINT
 * when the e-mail is taken. On a database pool thread (or the CLI). */
int app_insert_user(keel_db_conn *c, char id[37], const char *email, const char *hash,
                    const char *name, const char *role, int verified);
/* Revokes every refresh token of the user (logout-all, password change,
 * disable, delete). On a database pool thread. */
int app_end_sessions(keel_db_conn *c, const char *user_id, int64_t now);
/* {access_token, refresh_token, token_type, expires_in}; wipes t. */
struct json_t *app_tokens_json(app_tokens *t);
/* Frees and wipes t (a job's cleanup; app_tokens_json already did). */
void app_tokens_clear(app_tokens *t);
/* A NUL-terminated copy of a secret (a password) in r's arena, wiped
 * with sodium_memzero when the request is released; wiping it earlier,
 * once used, is the caller's choice (sodium_memzero(p, n)). */
char *app_secret_dup(keel_req *r, const char *s, size_t n);

/* The reference service's migrations, compiled from migrations/ into
 * build/gen/migrations.c by scripts/embed_migrations.sh. */
extern const keel_migration app_migrations[];
extern const size_t app_migrations_count;

#endif
