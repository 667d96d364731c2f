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
    char *events_retention_schedule;  /* EVENTS_RETENTION_SCHEDULE: cron; "" = off */
    char *events_escalation_schedule; /* EVENTS_ESCALATION_SCHEDULE: cron; "" = off */
    char *events_recurrence_schedule; /* EVENTS_RECURRENCE_SCHEDULE: cron; "" = off */
    uint64_t events_recurrence_horizon_ms; /* EVENTS_RECURRENCE_HORIZON */
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
/* The operations dashboard (src/app/dashboard.c): GET /dashboard and its
 * assets (web/dashboard, compiled in), and GET /api/v1/admin/stream
 * (src/app/admin_stream.c). Options: app_dashboard_config. */
typedef struct app_dashboard_options {
    int enabled;          /* DASHBOARD */
    int csp;              /* DASHBOARD_CSP */
    uint64_t stream_max;  /* ADMIN_STREAM_MAX */
    uint64_t interval_ms; /* ADMIN_STREAM_INTERVAL */
    uint64_t heartbeat_ms; /* ADMIN_STREAM_HEARTBEAT */
    uint64_t max_age_ms;  /* ADMIN_STREAM_MAX_DURATION */
    char *bus_pattern;    /* ADMIN_STREAM_BUS_PATTERN */
} app_dashboard_options;
extern const keel_config_module app_dashboard_config;
const app_dashboard_options *app_dashboard_options_of(keel_service *svc);
int app_dashboard_setup(keel_service *svc);
int app_admin_stream_setup(keel_service *svc);
void app_admin_stream_teardown(void);
/* The q-quantile in ms of histogram bucket counts d[0..nb] (cumulative,
 * d[nb] the +Inf bucket) with upper bounds in seconds; -1 when d[nb] is
 * 0. Linear within a bucket; past the last bound, that bound. */
double app_stream_quantile(const double *d, size_t nb, const double *bounds, double q);
/* A file of web/dashboard or web/chat compiled into the binary
 * (build/gen/dashboard_assets.c, chat_assets.c; scripts/embed_web.sh). */
typedef struct app_asset {
    const char *name; /* "index.html", "dashboard.js", ... */
    const char *content_type;
    const char *data;
    size_t len;
} app_asset;
extern const app_asset app_dashboard_assets[];
extern const size_t app_dashboard_assets_count;
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

/* ---------------------------------------------------------------- the mail queue
 *
 * Every mail goes through the job queue (src/app/mail_queue.c,
 * docs/mail.md): a job of kind "mail.send" on queue "email" with args
 *   {"to": addr, "to_name"?: str, "template": name, "vars": {...},
 *    "message_key": str, "class": str, "sealed_vars"?: str}
 * and the caller's idempotency key as its unique key. message_key makes
 * the Message-ID stable per (notification, recipient); class is the
 * suppression class ("account", "notification", ...): a 5xx bounce
 * suppresses the address for that class. Other modules may enqueue such
 * jobs directly with keel_job_enqueue; app code calls app_mail_enqueue. */
#define APP_MAIL_KIND "mail.send"
#define APP_MAIL_QUEUE "email"

/* Enqueues one templated mail on c (inside the caller's keel_db_tx: the
 * mail exists if and only if the transaction commits). message_key (1..128
 * bytes, no control characters) is the job's unique key too: enqueueing
 * it again while the first is unfinished adds nothing. klass: 1..64 of
 * [a-z0-9_.-]. vars may be NULL ({}). 0; KEEL_EINVAL (a bad address, name,
 * key or class: logged); or a KEEL_EDB_* error. */
int app_mail_enqueue(keel_db_conn *c, const char *to, const char *template_name,
                     const struct json_t *vars, const char *message_key, const char *klass);
/* The same with the recipient's display name (NULL: none). */
int app_mail_enqueue_named(keel_db_conn *c, const char *to, const char *to_name,
                           const char *template_name, const struct json_t *vars,
                           const char *message_key, const char *klass);
/* The same with sealed_vars (may be NULL): values merged over vars at
 * send time but stored encrypted in the job's args (secretbox under a key
 * derived from JWT_SECRET), for credentials such as a reset link. */
int app_mail_enqueue_sealed(keel_db_conn *c, const char *to, const char *to_name,
                            const char *template_name, const struct json_t *vars,
                            const struct json_t *sealed_vars, const char *message_key,
                            const char *klass);
/* Registers the "mail.send" handler on the service's job runner, sending
 * with m (src/app/mail.c calls it from app_mail_setup). */
int app_mail_queue_setup(keel_service *svc, keel_mailer *m);
/* The number of mail.send deliveries running now (app_mail_teardown
 * keeps the mailer while any is). */
int app_mail_queue_busy(void);
/* 1 when addr is suppressed for klass (c on its owner's thread), 0 when
 * not, or a KEEL_EDB_* error. */
int app_mail_suppressed(keel_db_conn *c, const char *addr, const char *klass);

/* ---------------------------------------------------------------- account mails
 *
 * Password reset and e-mail verification (src/app/accounts.c): the
 * "accounts" config module, the routes under /api/v1/auth/password and
 * /api/v1/auth/verify, and the hooks auth.c calls. */
typedef struct app_accounts_options {
    uint64_t mail_max_attempts;  /* MAIL_JOB_MAX_ATTEMPTS */
    char *service_name;          /* AUTH_MAIL_SERVICE_NAME */
    uint64_t reset_ttl_ms;       /* AUTH_PASSWORD_RESET_TTL */
    char *reset_url;             /* AUTH_PASSWORD_RESET_URL */
    uint64_t verify_ttl_ms;      /* AUTH_VERIFY_EMAIL_TTL */
    char *verify_url;            /* AUTH_VERIFY_EMAIL_URL */
    int require_verified;        /* AUTH_REQUIRE_VERIFIED_EMAIL */
    uint64_t resend_interval_ms; /* AUTH_VERIFY_RESEND_INTERVAL */
} app_accounts_options;

extern const keel_config_module app_accounts_config;
/* The options (after app_accounts_setup; defaults before). */
const app_accounts_options *app_accounts_options_get(void);
int app_accounts_setup(keel_service *svc);
/* Creates a verification token for user_id's address and enqueues the
 * "verify_email" mail, on c inside the caller's transaction (register). */
int app_account_verify_mail(keel_db_conn *c, const char *user_id, const char *email,
                            const char *name);
/* ---------------------------------------------------------------- notifications */

/* Notifications (src/app/notifications.c, docs/notifications.md). */
enum { APP_NOTIFY_IN_APP = 1u << 0, APP_NOTIFY_EMAIL = 1u << 1, APP_NOTIFY_PUSH = 1u << 2 };
typedef struct app_notify_result {
    char id[37];       /* the notification's id (the first one's, for a duplicate) */
    int duplicate;     /* 1: idempotency_key was used already: nothing new was sent */
    unsigned channels; /* APP_NOTIFY_* it went to */
} app_notify_result;

/* Notifies user_id: writes the in-app row and enqueues one delivery job
 * per channel enabled for (user, type) — e-mail as a "mail.send" job on
 * queue "email" (template "notification"), push as "notify.push" — each
 * with the unique key "notification:<id>:<channel>". Runs on c in a
 * transaction of its own (keel_db_tx: a savepoint inside the caller's
 * keel_db_tx, where the row and its jobs commit or roll back with the
 * caller's data), so the row and its jobs are written together or not at
 * all. type: 1..64 bytes of
 * [a-z0-9._-]; data: an object (borrowed, NULL = {}), its title and body
 * members used for e-mail and push; idempotency_key (NULL: none): a
 * second call with the key for the user returns the first notification
 * (out->duplicate = 1) and sends nothing. 0; KEEL_EINVAL (bad arguments),
 * KEEL_ETOOBIG (data over NOTIFY_DATA_MAX_BYTES), KEEL_EDB_NOROW (no such
 * user), or a database error. A pool thread or a job runner thread. */
int app_notify(keel_db_conn *c, const char *user_id, const char *type, const struct json_t *data,
               const char *idempotency_key);
int app_notify_ex(keel_db_conn *c, const char *user_id, const char *type,
                  const struct json_t *data, const char *idempotency_key, app_notify_result *out);
/* Retention: deletes at most `batch` notifications created before
 * `before` (Unix seconds), oldest first, and at most `batch` push
 * outcomes recorded before it; *deleted gets the rows deleted (both
 * kinds). What the "notify.prune" job runs (NOTIFY_RETENTION) until a pass
 * deletes fewer than a batch. 0 or a database error. */
int app_notify_prune(keel_db_conn *c, int64_t before, size_t batch, int64_t *deleted);
/* 1 when s is a valid notification type. */
int app_notify_type_valid(const char *s);

/* Live in-app delivery: the one hook for the realtime module. While a
 * function is set, app_notify also enqueues a "notify.live" job for each
 * in-app notification, and that job — which runs only once the
 * notification's transaction committed — calls app_notify_live(user_id,
 * notification JSON as GET /api/v1/notifications shows it). Unset (the
 * default), app_notify_live is a no-op and no live job is enqueued. The
 * function runs on a job runner thread (not a worker's loop): hand the
 * message over thread-safely (e.g. keel_events_publish). Set it in setup,
 * before the server starts. */
typedef void (*app_notify_live_fn)(const char *user_id, const struct json_t *notification,
                                   void *arg);
void app_notify_set_live(app_notify_live_fn fn, void *arg);
void app_notify_live(const char *user_id, const struct json_t *notification);
int app_notify_live_enabled(void);

extern const keel_config_module app_notify_config;
int app_notifications_setup(keel_service *svc);
void app_notifications_teardown(void);
/* Alerts (src/app/alerts.c, src/app/alerts_api.c): the rules, the
 * evaluator (one instance at a time), webhook delivery, the admin API
 * /api/v1/admin/alerts... and GET /metrics/alerts; ALERT_* options. */
extern const keel_config_module app_alerts_config;
int app_alerts_setup(keel_service *svc);
void app_alerts_teardown(void);
/* Live push: fn(w, payload, arg) runs on worker w's loop (the evaluating
 * worker's, or a manual resolve's) with every notification payload
 * (borrowed: the webhook's JSON); the reference service's realtime module
 * pushes it to the admins' GET /ws connections. Set it in setup; NULL
 * turns it off. The payloads also go to the event bus channel "alerts". */
typedef void (*app_alerts_listener_fn)(keel_worker *w, const struct json_t *payload, void *arg);
void app_alerts_set_listener(app_alerts_listener_fn fn, void *arg);
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
/* Writes every recurring event's instances from now to
 * EVENTS_RECURRENCE_HORIZON ahead into event_instances (the job
 * events.recurrence); report: {series, instances}. */
int app_events_run_recurrence(keel_db_conn *c, int64_t now, struct json_t **report);
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
