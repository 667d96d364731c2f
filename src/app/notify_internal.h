/* notify_internal.h — what the files of the notifications resource share
 * (src/app/notifications.c: the C API, the inbox and the admin route;
 * src/app/notify_prefs.c: preferences and push tokens; src/app/notify_push.c:
 * push delivery through a provider).
 * Not for other resources: they call app_notify() in app.h. */
#ifndef KEEL_APP_NOTIFY_INTERNAL_H
#define KEEL_APP_NOTIFY_INTERNAL_H

#include <jansson.h>

#include "app/app.h"

/* The module's options (NOTIFY_*, PUSH_GATEWAY_*), app_notify_config. */
typedef struct notify_options {
    char *default_channels;        /* NOTIFY_DEFAULT_CHANNELS */
    int email;                     /* NOTIFY_EMAIL_ENABLED */
    char *queue;                   /* NOTIFY_QUEUE: push and live jobs */
    uint64_t page_max;             /* NOTIFY_PAGE_MAX */
    uint64_t data_max;             /* NOTIFY_DATA_MAX_BYTES */
    uint64_t pref_types_max;       /* NOTIFY_PREFERENCE_TYPES_MAX */
    uint64_t push_tokens_max;      /* NOTIFY_PUSH_TOKENS_MAX */
    uint64_t push_token_max_bytes; /* NOTIFY_PUSH_TOKEN_MAX_BYTES */
    uint64_t push_max_attempts;    /* NOTIFY_PUSH_MAX_ATTEMPTS */
    char *push_url;                /* PUSH_GATEWAY_URL: empty = push off */
    char *push_token;              /* PUSH_GATEWAY_TOKEN (secret) */
    uint64_t push_timeout_ms;      /* PUSH_GATEWAY_TIMEOUT */
    uint64_t retention_ms;         /* NOTIFY_RETENTION: 0 = kept */
    unsigned default_mask;         /* derived from default_channels */
} notify_options;

/* ---------------------------------------------------------------- request jobs */

#define NT_REFUSED (-29101) /* a job's refusal: status and detail in the job */

/* Every route's job (in the request's arena, released with it). */
typedef struct nt_job {
    char user[64];
    char id[4100]; /* a notification id, or a push token (up to 4096 bytes) */
    int64_t cursor, limit;
    int unread, archived;
    json_t *body; /* borrowed: the request's */
    json_t *out;
    int status;
    int err_status;
    char err[300];
    json_t *err_extra;
} nt_job;

/* A job for r: the caller's id, the path's :id or :token. */
nt_job *app_nt_new(keel_req *r);
/* Keeps a refusal in j; returns NT_REFUSED (return it to roll back). */
__attribute__((format(printf, 3, 4))) int app_nt_refuse(nt_job *j, int status, const char *fmt,
                                                        ...);
/* Answers a job: a refusal, a database error, j->out or 204; no-store. */
void app_nt_done(keel_req *r, void *arg, int status);

extern keel_db *app_nt_db; /* the service's database */
extern int app_nt_is_pg;   /* it is PostgreSQL */

/* The channels, in the order of the APP_NOTIFY_* bits. */
#define APP_NT_NCHANNELS 3
extern const char *const app_nt_channels[APP_NT_NCHANNELS];
/* The index of channel (s, n) in app_nt_channels, or -1. */
int app_nt_channel_index(const char *s, size_t n);

/* The preferences and push-token routes (notify_prefs.c). */
int app_notify_prefs_setup(keel_service *svc);

/* The options in force (defaults before setup). */
const notify_options *app_notify_opts(void);

/* ---------------------------------------------------------------- push providers */

typedef struct app_push_message {
    const char *notification_id, *user_id, *type, *title, *body;
    const json_t *data; /* the notification's data object */
    int64_t created_at;
    const char *token, *platform;
} app_push_message;

typedef enum app_push_verdict {
    APP_PUSH_DELIVERED = 0,
    APP_PUSH_RETRY,         /* no answer, 408, 429, 5xx: the job retries */
    APP_PUSH_INVALID_TOKEN, /* the provider says the token is dead: removed */
    APP_PUSH_REJECTED,      /* any other refusal: logged, not retried */
} app_push_verdict;

/* One outbound request a provider builds (owned by the caller; the
 * provider fills it, the bridge sends it with the outbound HTTP client). */
typedef struct app_push_request {
    char url[1024];
    keel_http_header headers[4];
    size_t nheaders;
    char idempotency_key[160];
    char authorization[600];
    keel_buf body;
} app_push_request;

/* A push provider: a table, registered in C (STYLE 7). `build` fills the
 * request for one message to one token (0, or a negative error: the
 * message is rejected); `classify` reads the answer (status 0 and res->status,
 * or a negative error when there was no answer) into a verdict, with why
 * in words. */
typedef struct app_push_provider {
    const char *name;
    int (*build)(void *ctx, const app_push_message *m, app_push_request *out);
    app_push_verdict (*classify)(void *ctx, int status, int http_status, const char *body,
                                 size_t body_len, char *why, size_t cap);
    void *ctx;
} app_push_provider;

/* The HTTP push gateway (PUSH_GATEWAY_URL), docs/notifications.md. */
extern const app_push_provider app_push_gateway;

/* Registers the notify.push and notify.live job handlers, creates the
 * outbound HTTP client when push is configured. */
int app_notify_push_setup(keel_service *svc);
void app_notify_push_teardown(void);
/* Whether push delivery is configured (PUSH_GATEWAY_URL set). */
int app_notify_push_enabled(void);
/* A notification row's JSON (NOTIFY_COLUMNS from column 0). */
#define NOTIFY_COLUMNS "id, type, data, created_at, read_at, archived_at, channels"
json_t *app_notify_row_json(const keel_db_rows *rows);
/* The title e-mail and push show: data.title, else the type; at most
 * cap - 1 bytes, cut at a character boundary, control bytes as spaces. */
void app_notify_title(const json_t *data, const char *type, char *out, size_t cap);
/* Loads one notification by id (any user): *out (new reference) with
 * "user_id" added, or KEEL_EDB_NOROW. */
int app_notify_load(keel_db_conn *c, const char *id, json_t **out);

#endif
