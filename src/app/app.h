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

/* RFC 3339 date-time (s, n bytes) to Unix seconds: 0, or -1 when it is
 * not one. */
int app_parse_time(const char *s, size_t n, int64_t *out);
/* Unix seconds as RFC 3339 UTC ("2026-01-31T09:00:00Z"). */
void app_format_time(int64_t t, char out[32]);
/* Adds `Link: <path?...&param=value>; rel="next"`: the request's own path
 * and query with param replaced (value must be URL-safe). */
int app_link_next(keel_req *r, const char *param, const char *value);

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
    uint64_t events_max_depth;  /* EVENTS_MAX_DEPTH: levels below a root event */
    int events_parent_waits;    /* EVENTS_PARENT_WAITS_FOR_CHILDREN */
    uint64_t events_page_max;   /* EVENTS_PAGE_MAX: largest ?limit of the event list */
    uint64_t audit_export_max;  /* AUDIT_EXPORT_MAX: records per export response */
    uint64_t events_instances_max; /* EVENTS_INSTANCES_MAX: instances per request */
    uint64_t events_purge_grace_ms; /* EVENTS_PURGE_GRACE: soft delete -> hard delete */
    uint64_t events_retention_batch; /* EVENTS_RETENTION_BATCH: events per pass */
    uint64_t events_budget_alert_pct; /* EVENTS_BUDGET_ALERT_PERCENT */
} app_options;

extern const keel_config_module app_config;
const app_options *app_options_of(keel_service *svc);

int app_demo_setup(keel_service *svc);
/* /api/v1/admin/{loggers,config,info,routes,workers} (src/app/admin_ops.c). */
int app_admin_ops_setup(keel_service *svc);
/* /api/v1/admin/traces (src/app/admin_traces.c). */
int app_admin_traces_setup(keel_service *svc);
int app_distributed_setup(keel_service *svc);
/* INSTANCE_ID, or hostname-pid. */
const char *app_instance_id(void);
/* /distributed/cache/:key (src/app/dist_cache.c). */
int app_dist_cache_setup(keel_service *svc);
int app_dist_lock_setup(keel_service *svc);
/* /api/v1/admin/jobs and /api/v1/admin/job-queues (src/app/jobs_admin.c). */
int app_jobs_setup(keel_service *svc);

/* Mail (src/app/mail.c): the admin outbox and test-send routes, the
 * `keel mail` command, and the service's one mailer (NULL before setup). */
int app_mail_setup(keel_service *svc);
void app_mail_teardown(void);
int app_mail_command(keel_service *svc, const char *cmd, int argc, char **argv);
keel_mailer *app_mailer(void);

/* ---------------------------------------------------------------- realtime */

/* GET /ws, tickets, rooms, presence (src/app/realtime*.c,
 * docs/realtime.md). Needs the database and the event bus. */
int app_realtime_setup(keel_service *svc);
extern const keel_config_module app_realtime_config;

/* The push API, for any handler or job: sends {"type": type, ...data}
 * (data: an object, borrowed, may be NULL) to every GET /ws connection of
 * a user, of the followers of a room, of everyone, or of the users of a
 * role — on every instance, through the event bus. The message is
 * serialised once per worker and the same frame written to each socket.
 * Call on a worker's loop: w is that worker (keel_req_worker(r)), or NULL
 * from elsewhere at start-up only (worker 0 is used: not thread-safe from
 * a pool thread — post to a worker first). 0, or KEEL_EINVAL (bad
 * arguments, an unknown role), KEEL_EUNAVAIL (Redis unavailable). Not
 * stored: a disconnected client does not get it on resume. */
int app_push_user(keel_worker *w, const char *user_id, const char *type,
                  const struct json_t *data);
int app_push_room(keel_worker *w, const char *room_id, const char *type,
                  const struct json_t *data);
int app_push_all(keel_worker *w, const char *type, const struct json_t *data);
int app_push_role(keel_worker *w, const char *role, const char *type,
                  const struct json_t *data);

/* ---------------------------------------------------------------- audit */

/* Who acted, copied from the request on its loop (a job's field):
 * kind "user", "apikey" (or "system" for the CLI), the principal's id,
 * the request id, and whether it holds admin:access. */
typedef struct app_actor {
    char kind[16];
    char id[64];
    char role[16]; /* users: their role */
    char request_id[80];
    int admin;
} app_actor;
void app_actor_of(keel_req *r, app_actor *out);

/* The audit log (src/app/audit.c). Appends one record inside the
 * caller's transaction (keel_db_tx / keel_db_run_tx) — call it last, after
 * the rows it describes: it takes the chain's head lock until commit.
 * diff (borrowed, may be NULL) is an object {field: {from, to}}; fields
 * whose names look like secrets are dropped. 0 or a KEEL_EDB_* error. */
int app_audit_append(keel_db_conn *c, const app_actor *a, const char *action,
                     const char *entity_type, const char *entity_id,
                     const struct json_t *diff);
/* The changed fields of two objects as {field: {"from", "to"}} (new
 * reference); before NULL: a creation ({"to"} only), after NULL: a
 * removal ({"from"} only). Secret-looking names left out. */
struct json_t *app_audit_diff(const struct json_t *before, const struct json_t *after);
/* Walks the chain: *report = {ok, records, head_seq, first_broken:
 * null | {seq, reason}} (new reference). 0 or a database error. */
int app_audit_verify(keel_db_conn *c, struct json_t **report);
int app_audit_setup(keel_service *svc);
/* `keel audit verify` (exit 3 when broken) | `keel audit export`. */
int app_audit_command(keel_service *svc, int argc, char **argv);

/* /api/v1/events (src/app/events.c). */
int app_events_setup(keel_service *svc);
/* One retention pass (src/app/event_retention.c), what the scheduled job
 * will call: events of a type with retention_days, finished (completed,
 * cancelled, archived) and unchanged for that long, are soft-deleted
 * (purge) or anonymised, as their type says; soft-deleted events older
 * than grace_s are deleted for good. Events under legal hold (or below
 * one) are skipped; each change is its own transaction with its audit
 * record (actor "system"/"retention"). At most `batch` events per step.
 * *report = {expired, anonymised, purged, held_skipped} (new reference).
 * On a database pool thread or the CLI. */
int app_events_run_retention(keel_db_conn *c, int64_t now, int64_t grace_s, size_t batch,
                             struct json_t **report);
/* One escalation sweep (src/app/event_approvals.c), what the scheduled
 * job will call: approval steps pending past their deadline go to the
 * admins, each in its transaction, audited. *report = {escalated}. */
int app_events_run_escalation(keel_db_conn *c, int64_t now, struct json_t **report);
int app_events_command(keel_service *svc, int argc, char **argv);

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
    "last_login_at, deleted_at, avatar_file_id"

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
