/* notifications.c — notifications of the reference service
 * (docs/notifications.md):
 *
 *   app_notify(conn, user, type, data, key)   the C API: the in-app row and
 *       one delivery job per enabled channel, inside the caller's transaction
 *   GET  /api/v1/notifications                 the caller's inbox (cursor pages,
 *                                              ?unread=true, ?archived=true)
 *   GET  /api/v1/notifications/unread-count
 *   POST /api/v1/notifications/:id/read | /:id/archive | /read-all
 *   POST /api/v1/admin/notifications           an operator's send (app_notify)
 *
 * Preferences and push tokens are in notify_prefs.c, push delivery in
 * notify_push.c.
 *
 * Design. A notification is one row of `notifications`; it is written in
 * the caller's transaction with its delivery jobs (keel_job_enqueue), so
 * they exist if and only if it was committed. Idempotency has two layers:
 * the row is unique on (user_id, idempotency_key) — INSERT ... ON CONFLICT
 * DO NOTHING, so a second call with the key (a retried request, a job run
 * twice) finds the first row and enqueues nothing — and every delivery job
 * has the unique key "notification:<id>:<channel>" kept for as long as the
 * job row (unique_forever), so a job is never enqueued twice for one
 * notification.
 *
 * The unread count is never stored: it is COUNT(*) over the caller's
 * unread rows (a partial index), so concurrent marks cannot make it drift.
 * Marks are single UPDATE statements scoped by user_id: another user's id
 * matches nothing and is 404, as an unknown one. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "app/notify_internal.h"

keel_db *app_nt_db;
int app_nt_is_pg;
static keel_metric *M_CREATED; /* notifications_created_total{channel} */
static unsigned M_SHARD;       /* the shard of threads other than workers */
static app_notify_live_fn LIVE;
static void *LIVE_ARG;

/* ---------------------------------------------------------------- config */

const char *const app_nt_channels[APP_NT_NCHANNELS] = {"in_app", "email", "push"};

int app_nt_channel_index(const char *s, size_t n)
{
    for (int i = 0; i < APP_NT_NCHANNELS; i++)
        if (strlen(app_nt_channels[i]) == n && !memcmp(app_nt_channels[i], s, n))
            return i;
    return -1;
}

static int notify_validate(void *opts, const keel_config *cfg, FILE *err)
{
    (void)cfg;
    notify_options *o = opts;
    o->default_mask = 0;
    const char *p = o->default_channels;
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        while (n && *p == ' ')
            p++, n--;
        while (n && p[n - 1] == ' ')
            n--;
        int i = n ? app_nt_channel_index(p, n) : -1;
        if (i < 0) {
            fprintf(err,
                    "keel: NOTIFY_DEFAULT_CHANNELS: invalid value \"%s\": expected a "
                    "comma-separated list of in_app, email, push (or empty)\n",
                    o->default_channels);
            return KEEL_ECONFIG;
        }
        o->default_mask |= 1u << i;
        p = comma ? comma + 1 : p + n;
    }
    if (!*o->queue || strlen(o->queue) > KEEL_JOB_NAME_MAX) {
        fprintf(err, "keel: NOTIFY_QUEUE: expected a queue name of 1..%d bytes\n",
                KEEL_JOB_NAME_MAX);
        return KEEL_ECONFIG;
    }
    return 0;
}

#define AT(f) KEEL_CONFIG_AT(notify_options, f)
static const keel_config_var notify_vars[] = {
    {.name = "NOTIFY_DEFAULT_CHANNELS",
     .type = KEEL_CONFIG_STR,
     .def = "in_app,email,push",
     AT(default_channels),
     .help = "channels a notification goes to when the user has no preference for it "
             "(comma-separated: in_app, email, push)"},
    {.name = "NOTIFY_EMAIL_ENABLED",
     .type = KEEL_CONFIG_BOOL,
     .def = "true",
     AT(email),
     .help = "false: no notification is e-mailed, whatever the preferences (no mail.send jobs)"},
    {.name = "NOTIFY_QUEUE",
     .type = KEEL_CONFIG_STR,
     .def = "default",
     AT(queue),
     .help = "job queue of push (notify.push) and live (notify.live) deliveries; it must be in "
             "JOBS_QUEUES of some instance (e-mails go to the queue email)"},
    {.name = "NOTIFY_PAGE_MAX",
     .type = KEEL_CONFIG_UINT,
     .def = "100",
     AT(page_max),
     .min = 1,
     .max = 1000,
     .help = "largest ?limit of GET /api/v1/notifications"},
    {.name = "NOTIFY_DATA_MAX_BYTES",
     .type = KEEL_CONFIG_SIZE,
     .def = "16kb",
     AT(data_max),
     .min = 64,
     .max = 200 * 1024,
     .help = "largest data object of one notification (JSON bytes)"},
    {.name = "NOTIFY_RETENTION",
     .type = KEEL_CONFIG_DURATION,
     .def = "90d",
     AT(retention_ms),
     .max = 86400000ull * 3650,
     .help = "the notify.prune job deletes notifications (and their push outcomes) older than "
             "this; 0 = kept for ever"},
    {.name = "NOTIFY_PREFERENCE_TYPES_MAX",
     .type = KEEL_CONFIG_UINT,
     .def = "100",
     AT(pref_types_max),
     .min = 1,
     .max = 10000,
     .help = "notification types one user may hold preferences for (422 beyond)"},
    {.name = "NOTIFY_PUSH_TOKENS_MAX",
     .type = KEEL_CONFIG_UINT,
     .def = "10",
     AT(push_tokens_max),
     .min = 1,
     .max = 1000,
     .help = "push tokens (devices) per user; registering one more is 409"},
    {.name = "NOTIFY_PUSH_TOKEN_MAX_BYTES",
     .type = KEEL_CONFIG_UINT,
     .def = "512",
     AT(push_token_max_bytes),
     .min = 32,
     .max = 4096,
     .help = "longest push token accepted (422 beyond)"},
    {.name = "NOTIFY_PUSH_MAX_ATTEMPTS",
     .type = KEEL_CONFIG_UINT,
     .def = "10",
     AT(push_max_attempts),
     .min = 1,
     .max = 1000,
     .help = "attempts of one push delivery job (each with the queue's backoff) before it is "
             "dead"},
    {.name = "PUSH_GATEWAY_URL",
     .type = KEEL_CONFIG_URL,
     .def = "",
     AT(push_url),
     .values = KEEL_CONFIG_VALUES("http://", "https://"),
     .help = "the HTTP push gateway notifications are POSTed to (docs/notifications.md); empty: "
             "the push channel is off"},
    {.name = "PUSH_GATEWAY_TOKEN",
     .type = KEEL_CONFIG_STR,
     .def = "",
     AT(push_token),
     .flags = KEEL_CONFIG_SECRET,
     .help = "sent as Authorization: Bearer to the push gateway; empty: no Authorization"},
    {.name = "PUSH_GATEWAY_TIMEOUT",
     .type = KEEL_CONFIG_DURATION,
     .def = "10s",
     AT(push_timeout_ms),
     .min = 100,
     .max = 300000,
     .help = "one push request, connection to last byte; no answer in time is retried"},
};
#undef AT

const keel_config_module app_notify_config = KEEL_CONFIG_MODULE(
    "notifications",
    "Notifications: channels, inbox pages, preferences, push tokens and the push gateway "
    "(src/app/notifications.c).",
    notify_options, notify_vars, notify_validate);

static const notify_options *O;
static notify_options O_DEFAULTS; /* before setup: the defaults */

const notify_options *app_notify_opts(void)
{
    if (O)
        return O;
    if (!O_DEFAULTS.queue) {
        O_DEFAULTS.default_channels = "in_app,email,push";
        O_DEFAULTS.email = 1;
        O_DEFAULTS.queue = "default";
        O_DEFAULTS.page_max = 100;
        O_DEFAULTS.data_max = 16 * 1024;
        O_DEFAULTS.pref_types_max = 100;
        O_DEFAULTS.push_tokens_max = 10;
        O_DEFAULTS.push_token_max_bytes = 512;
        O_DEFAULTS.push_max_attempts = 10;
        O_DEFAULTS.push_url = "";
        O_DEFAULTS.push_token = "";
        O_DEFAULTS.push_timeout_ms = 10000;
        O_DEFAULTS.retention_ms = 90 * 86400000ull;
        O_DEFAULTS.default_mask = APP_NOTIFY_IN_APP | APP_NOTIFY_EMAIL | APP_NOTIFY_PUSH;
    }
    return &O_DEFAULTS;
}

/* ---------------------------------------------------------------- live hook */

void app_notify_set_live(app_notify_live_fn fn, void *arg)
{
    LIVE_ARG = arg;
    LIVE = fn;
}

int app_notify_live_enabled(void)
{
    return LIVE != NULL;
}

void app_notify_live(const char *user_id, const json_t *notification)
{
    if (LIVE)
        LIVE(user_id, notification, LIVE_ARG);
}

/* ---------------------------------------------------------------- helpers */

/* Notification types: what the preferences are keyed by. */
int app_notify_type_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              (i && (ch == '.' || ch == '_' || ch == '-'))))
            return 0;
    }
    return 1;
}

static void channels_text(unsigned mask, char out[32])
{
    size_t k = 0;
    out[0] = '\0';
    for (int i = 0; i < APP_NT_NCHANNELS; i++)
        if (mask & (1u << i))
            k += (size_t)snprintf(out + k, 32 - k, "%s%s", k ? "," : "", app_nt_channels[i]);
}

static json_t *channels_json(const char *text, size_t n)
{
    json_t *a = json_array();
    const char *p = text, *end = text + n;
    while (p && p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        if (e > p)
            json_array_append_new(a, json_stringn(p, (size_t)(e - p)));
        p = comma ? comma + 1 : end;
    }
    return a;
}

static json_t *time_or_null(const keel_db_rows *rows, size_t col)
{
    if (keel_db_is_null(rows, col))
        return json_null();
    char t[32];
    app_format_time(keel_db_get_int(rows, col), t);
    return json_string(t);
}

json_t *app_notify_row_json(const keel_db_rows *rows)
{
    keel_str id = keel_db_get_text(rows, 0), type = keel_db_get_text(rows, 1),
             data = keel_db_get_text(rows, 2), ch = keel_db_get_text(rows, 6);
    json_t *d = data.ptr ? json_loadb(data.ptr, data.len, 0, NULL) : NULL;
    char created[32];
    app_format_time(keel_db_get_int(rows, 3), created);
    return json_pack(
        "{s:s%, s:s%, s:o, s:s, s:b, s:o, s:o, s:o}", "id", id.ptr ? id.ptr : "", id.len, "type",
        type.ptr ? type.ptr : "", type.len, "data", d ? d : json_object(), "created_at", created,
        "read", !keel_db_is_null(rows, 4), "read_at", time_or_null(rows, 4), "archived_at",
        time_or_null(rows, 5), "channels", channels_json(ch.ptr ? ch.ptr : "", ch.len));
}

int app_notify_load(keel_db_conn *c, const char *id, json_t **out)
{
    *out = NULL;
    keel_db_param p[] = {KEEL_DB_P_TEXT(id)};
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           "SELECT " NOTIFY_COLUMNS ", user_id FROM notifications "
                           "WHERE id = $1",
                           p, 1, &rows);
    if (rc < 0)
        return rc;
    if ((rc = keel_db_rows_next(rows)) == 1) {
        *out = app_notify_row_json(rows);
        keel_str u = keel_db_get_text(rows, 7);
        json_object_set_new(*out, "user_id", json_stringn(u.ptr ? u.ptr : "", u.len));
    }
    keel_db_rows_free(rows);
    if (rc < 0)
        return rc;
    return *out ? 0 : KEEL_EDB_NOROW;
}

/* A title for e-mail subjects and push: data.title, else the type, cut to
 * cap - 1 bytes at a character boundary (it stays UTF-8); control bytes
 * become spaces (a subject is one header line). */
void app_notify_title(const json_t *data, const char *type, char *out, size_t cap)
{
    const char *t = json_string_value(json_object_get(data, "title"));
    if (!t || !*t)
        t = type ? type : "";
    size_t n = strlen(t);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)t[n] & 0xC0) == 0x80) /* t[n] continues a character */
            n--;
    }
    memcpy(out, t, n);
    out[n] = '\0';
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
}

/* ---------------------------------------------------------------- app_notify */

/* v into out (cap bytes with the NUL), cut at a character boundary. */
static void copy_utf8(char *out, size_t cap, keel_str v)
{
    size_t n = v.ptr ? v.len : 0;
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)v.ptr[n] & 0xC0) == 0x80)
            n--;
    }
    if (n)
        memcpy(out, v.ptr, n);
    out[n] = '\0';
}

/* The channels (type, user) goes to: the configured default, then the
 * user's "*" preferences, then the type's own. */
static int channels_for(keel_db_conn *c, const char *user_id, const char *type, unsigned *mask)
{
    *mask = app_notify_opts()->default_mask;
    keel_db_param p[] = {KEEL_DB_P_TEXT(user_id), KEEL_DB_P_TEXT(type)};
    keel_db_rows *rows;
    /* '*' sorts before every type name, so the type's rows come last */
    int rc = keel_db_query(c,
                           "SELECT type, channel, enabled FROM notification_preferences "
                           "WHERE user_id = $1 AND type IN ('*', $2) ORDER BY type",
                           p, 2, &rows);
    if (rc < 0)
        return rc;
    while ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str ch = keel_db_get_text(rows, 1);
        int i = ch.ptr ? app_nt_channel_index(ch.ptr, ch.len) : -1;
        if (i < 0)
            continue;
        if (keel_db_get_bool(rows, 2))
            *mask |= 1u << i;
        else
            *mask &= ~(1u << i);
    }
    keel_db_rows_free(rows);
    return rc < 0 ? rc : 0;
}

static int enqueue(keel_db_conn *c, const char *kind, const char *queue, const char *id,
                   const char *channel, json_t *args, unsigned max_attempts)
{
    char key[96];
    snprintf(key, sizeof(key), "notification:%s:%s", id, channel);
    char *text = json_dumps(args, JSON_COMPACT);
    json_decref(args);
    if (!text)
        return KEEL_ENOMEM;
    const char *tags[] = {"notification"};
    keel_job_spec s = {.kind = kind,
                       .queue = queue,
                       .args = text,
                       .unique_key = key,
                       .unique_forever = 1,
                       .max_attempts = max_attempts,
                       .tags = tags,
                       .ntags = 1};
    int rc = keel_job_enqueue(c, &s, NULL);
    free(text);
    return rc;
}

typedef struct notify_ctx {
    const char *user_id, *type, *key, *data_text;
    const json_t *data;
    app_notify_result *out;
} notify_ctx;

/* The work of app_notify, in a transaction of its own (a savepoint inside
 * the caller's): the row and its jobs are written together or not at all. */
static int notify_tx(keel_db_conn *c, void *arg)
{
    notify_ctx *x = arg;
    const notify_options *o = app_notify_opts();
    const char *user_id = x->user_id, *type = x->type, *idempotency_key = x->key;
    const json_t *data = x->data;
    app_notify_result *out = x->out;
    memset(out, 0, sizeof(*out));
    char email[320] = "", name[1024] = "", title[200], channels[32];
    int active = 0, rc;
    keel_db_param pu[] = {KEEL_DB_P_TEXT(user_id)};
    keel_db_rows *rows;
    if ((rc = keel_db_query(c,
                            "SELECT email, name, status FROM users WHERE id = $1 AND "
                            "deleted_at IS NULL",
                            pu, 1, &rows)) < 0)
        return rc;
    if ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str e = keel_db_get_text(rows, 0), n = keel_db_get_text(rows, 1),
                 st = keel_db_get_text(rows, 2);
        copy_utf8(email, sizeof(email), e);
        copy_utf8(name, sizeof(name), n);
        active = st.len == 6 && !memcmp(st.ptr, "active", 6);
    }
    keel_db_rows_free(rows);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return KEEL_EDB_NOROW;
    unsigned mask;
    if ((rc = channels_for(c, user_id, type, &mask)) < 0)
        return rc;
    if (!o->email || !active || !*email)
        mask &= ~(unsigned)APP_NOTIFY_EMAIL;
    if (!app_notify_push_enabled() || !active)
        mask &= ~(unsigned)APP_NOTIFY_PUSH;
    if (mask & APP_NOTIFY_PUSH) { /* no device, no job */
        if ((rc = keel_db_query(c,
                                "SELECT 1 FROM notification_push_tokens WHERE user_id = $1 "
                                "LIMIT 1",
                                pu, 1, &rows)) < 0)
            return rc;
        rc = keel_db_rows_next(rows);
        keel_db_rows_free(rows);
        if (rc < 0)
            return rc;
        if (rc == 0)
            mask &= ~(unsigned)APP_NOTIFY_PUSH;
    }
    channels_text(mask, channels);
    app_uuid(out->id);
    int64_t affected = 0;
    keel_db_param pi[] = {KEEL_DB_P_TEXT(out->id),
                          KEEL_DB_P_TEXT(user_id),
                          KEEL_DB_P_TEXT(type),
                          KEEL_DB_P_TEXT(x->data_text),
                          idempotency_key ? KEEL_DB_P_TEXT(idempotency_key) : KEEL_DB_P_NULL(),
                          KEEL_DB_P_BOOL(mask & APP_NOTIFY_IN_APP),
                          KEEL_DB_P_TEXT(channels),
                          KEEL_DB_P_INT(app_now())};
    if ((rc = keel_db_exec(c,
                           "INSERT INTO notifications (id, user_id, type, data, idempotency_key, "
                           "in_app, channels, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
                           "ON CONFLICT (user_id, idempotency_key) DO NOTHING",
                           pi, 8, &affected)) < 0)
        return rc;
    if (affected == 0) { /* the key was used: that notification, nothing sent again */
        keel_db_param pk[] = {KEEL_DB_P_TEXT(user_id), KEEL_DB_P_TEXT(idempotency_key)};
        if ((rc = keel_db_query(c,
                                "SELECT id, channels FROM notifications WHERE user_id = $1 "
                                "AND idempotency_key = $2",
                                pk, 2, &rows)) < 0)
            return rc;
        if ((rc = keel_db_rows_next(rows)) == 1) {
            keel_str id = keel_db_get_text(rows, 0), ch = keel_db_get_text(rows, 1);
            snprintf(out->id, sizeof(out->id), "%.*s", (int)id.len, id.ptr ? id.ptr : "");
            out->channels = 0;
            for (int i = 0; i < APP_NT_NCHANNELS; i++) {
                const char *f = ch.ptr ? strstr(ch.ptr, app_nt_channels[i]) : NULL;
                if (f && f < ch.ptr + ch.len)
                    out->channels |= 1u << i;
            }
        }
        keel_db_rows_free(rows);
        out->duplicate = 1;
        return rc < 0 ? rc : 0;
    }
    out->channels = mask;
    app_notify_title(data, type, title, sizeof(title));
    char message_key[64];
    snprintf(message_key, sizeof(message_key), "notification:%s", out->id);
    const char *body = json_string_value(json_object_get(data, "body"));
    if (mask & APP_NOTIFY_EMAIL) {
        json_t *args =
            json_pack("{s:s, s:s, s:{s:s, s:s, s:s, s:s, s:s}, s:s, s:s}", "to", email, "template",
                      "notification", "vars", "name", *name ? name : email, "title", title, "body",
                      body ? body : "", "type", type, "notification_id", out->id, "message_key",
                      message_key, "class", "notification");
        if (!args)
            return KEEL_EINVAL; /* a stored name or address that is not UTF-8 */
        if (*name)
            json_object_set_new(args, "to_name", json_string(name));
        if ((rc = enqueue(c, "mail.send", "email", out->id, "email", args, 0)) < 0)
            return rc;
    }
    if ((mask & APP_NOTIFY_PUSH) && (rc = enqueue(c, "notify.push", o->queue, out->id, "push",
                                                  json_pack("{s:s}", "notification_id", out->id),
                                                  (unsigned)o->push_max_attempts)) < 0)
        return rc;
    if ((mask & APP_NOTIFY_IN_APP) && LIVE &&
        (rc = enqueue(c, "notify.live", o->queue, out->id, "live",
                      json_pack("{s:s}", "notification_id", out->id), 3)) < 0)
        return rc;
    return 0;
}

int app_notify_ex(keel_db_conn *c, const char *user_id, const char *type, const json_t *data,
                  const char *idempotency_key, app_notify_result *out)
{
    app_notify_result local;
    if (!out)
        out = &local;
    memset(out, 0, sizeof(*out));
    if (!c || !user_id || !*user_id || strlen(user_id) > 64 || !app_notify_type_valid(type) ||
        (data && !json_is_object(data)) ||
        (idempotency_key && (!*idempotency_key || strlen(idempotency_key) > 200)))
        return KEEL_EINVAL;
    json_t *empty = data ? NULL : json_object();
    char *data_text = json_dumps(data ? data : empty, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(empty);
    if (!data_text)
        return KEEL_EINVAL; /* invalid UTF-8 in a string */
    int rc = KEEL_ETOOBIG;
    if (strlen(data_text) <= app_notify_opts()->data_max) {
        notify_ctx x = {.user_id = user_id,
                        .type = type,
                        .key = idempotency_key,
                        .data_text = data_text,
                        .data = data,
                        .out = out};
        rc = keel_db_tx(c, notify_tx, &x);
    }
    free(data_text);
    if (rc == 0 && !out->duplicate && M_CREATED)
        for (int i = 0; i < APP_NT_NCHANNELS; i++)
            if (out->channels & (1u << i))
                keel_metric_add(M_CREATED, M_SHARD, (const char *[]){app_nt_channels[i]}, 1);
    return rc;
}

int app_notify(keel_db_conn *c, const char *user_id, const char *type, const json_t *data,
               const char *idempotency_key)
{
    return app_notify_ex(c, user_id, type, data, idempotency_key, NULL);
}

/* ---------------------------------------------------------------- retention */

int app_notify_prune(keel_db_conn *c, int64_t before, size_t batch, int64_t *deleted)
{
    *deleted = 0;
    if (!batch)
        return KEEL_EINVAL;
    keel_db_param p[] = {KEEL_DB_P_INT(before), KEEL_DB_P_INT((int64_t)batch)};
    int64_t sent = 0, notes = 0;
    int rc = keel_db_exec(c,
                          "DELETE FROM notification_push_sent WHERE (notification_id, token) IN "
                          "(SELECT notification_id, token FROM notification_push_sent WHERE "
                          "at < $1 LIMIT $2)",
                          p, 2, &sent);
    if (rc >= 0)
        rc = keel_db_exec(c,
                          "DELETE FROM notifications WHERE seq IN (SELECT seq FROM notifications "
                          "WHERE created_at < $1 ORDER BY seq LIMIT $2)",
                          p, 2, &notes);
    *deleted = sent + notes;
    return rc < 0 ? rc : 0;
}

/* ---------------------------------------------------------------- request jobs */

static void nt_cleanup(void *arg)
{
    nt_job *j = arg;
    json_decref(j->out);
    json_decref(j->err_extra);
}

int app_nt_refuse(nt_job *j, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->err, sizeof(j->err), fmt, ap);
    va_end(ap);
    j->err_status = status;
    return NT_REFUSED;
}

void app_nt_done(keel_req *r, void *arg, int status)
{
    nt_job *j = arg;
    if (status == NT_REFUSED) {
        keel_respond_problem_ex(r, j->err_status, NULL, j->err,
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
    keel_respond_json(r, j->status ? j->status : 200, json_incref(j->out));
}

nt_job *app_nt_new(keel_req *r)
{
    nt_job *j = KEEL_REQ_JOB(r, nt_job, nt_cleanup);
    const keel_principal *p = keel_req_principal(r);
    snprintf(j->user, sizeof(j->user), "%s", p && p->id ? p->id : "");
    keel_str id = keel_req_param(r, "id");
    if (!id.ptr)
        id = keel_req_param(r, "token");
    if (id.ptr && id.len < sizeof(j->id))
        snprintf(j->id, sizeof(j->id), "%.*s", (int)id.len, id.ptr);
    else if (id.ptr)
        j->id[0] = '\x01'; /* too long: matches nothing */
    return j;
}

/* ---------------------------------------------------------------- inbox */

static int db_list(keel_db_conn *c, void *arg)
{
    nt_job *j = arg;
    json_decref(j->out);
    j->out = NULL;
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT " NOTIFY_COLUMNS ", seq FROM notifications WHERE user_id = $1 AND in_app "
             "AND archived_at IS %s NULL%s AND seq < $2 ORDER BY seq DESC LIMIT $3",
             j->archived ? "NOT" : "", j->unread ? " AND read_at IS NULL" : "");
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->user), KEEL_DB_P_INT(j->cursor),
                         KEEL_DB_P_INT(j->limit + 1)};
    keel_db_rows *rows;
    int rc = keel_db_query(c, sql, p, 3, &rows);
    if (rc < 0)
        return rc;
    json_t *data = json_array();
    int64_t last = 0, more = 0;
    while ((rc = keel_db_rows_next(rows)) == 1) {
        if ((int64_t)json_array_size(data) == j->limit) {
            more = 1;
            break;
        }
        json_array_append_new(data, app_notify_row_json(rows));
        last = keel_db_get_int(rows, 7);
    }
    keel_db_rows_free(rows);
    if (rc < 0) {
        json_decref(data);
        return rc;
    }
    char next[24];
    snprintf(next, sizeof(next), "%lld", (long long)last);
    j->out = json_pack("{s:o, s:o}", "data", data, "next_cursor",
                       more ? json_string(next) : json_null());
    return 0;
}

static void list_done(keel_req *r, void *arg, int status)
{
    nt_job *j = arg;
    const char *next =
        status == 0 ? json_string_value(json_object_get(j->out, "next_cursor")) : NULL;
    if (next)
        app_link_next(r, "cursor", next);
    app_nt_done(r, arg, status);
}

static keel_flow h_list(keel_req *r)
{
    nt_job *j = app_nt_new(r);
    json_t *q = keel_req_query_json(r);
    json_int_t limit = json_integer_value(json_object_get(q, "limit"));
    if ((uint64_t)limit > app_notify_opts()->page_max) {
        char msg[80];
        snprintf(msg, sizeof(msg), "at most %llu (NOTIFY_PAGE_MAX)",
                 (unsigned long long)app_notify_opts()->page_max);
        app_invalid(r, "/query/limit", msg);
        return KEEL_DONE;
    }
    j->limit = limit > 0 ? limit : 20;
    const char *cur = json_string_value(json_object_get(q, "cursor"));
    j->cursor = cur ? strtoll(cur, NULL, 10) : INT64_MAX;
    j->unread = json_is_true(json_object_get(q, "unread"));
    j->archived = json_is_true(json_object_get(q, "archived"));
    return keel_db_job_run(r, app_nt_db, db_list, list_done, j);
}

static int db_unread(keel_db_conn *c, void *arg)
{
    nt_job *j = arg;
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->user)};
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           "SELECT COUNT(*) FROM notifications WHERE user_id = $1 AND in_app "
                           "AND read_at IS NULL AND archived_at IS NULL",
                           p, 1, &rows);
    if (rc < 0)
        return rc;
    rc = keel_db_rows_next(rows);
    int64_t n = rc == 1 ? keel_db_get_int(rows, 0) : 0;
    keel_db_rows_free(rows);
    if (rc < 0)
        return rc;
    json_decref(j->out);
    j->out = json_pack("{s:I}", "unread", (json_int_t)n);
    return 0;
}

static keel_flow h_unread(keel_req *r)
{
    return keel_db_job_run(r, app_nt_db, db_unread, app_nt_done, app_nt_new(r));
}

static int fetch_own(keel_db_conn *c, nt_job *j)
{
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->id), KEEL_DB_P_TEXT(j->user)};
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           "SELECT " NOTIFY_COLUMNS " FROM notifications WHERE id = $1 AND "
                           "user_id = $2 AND in_app",
                           p, 2, &rows);
    if (rc < 0)
        return rc;
    json_decref(j->out);
    j->out = NULL;
    if ((rc = keel_db_rows_next(rows)) == 1)
        j->out = app_notify_row_json(rows);
    keel_db_rows_free(rows);
    if (rc < 0)
        return rc;
    return j->out ? 0 : app_nt_refuse(j, 404, "no notification with this id");
}

static int db_mark(keel_db_conn *c, void *arg, const char *set, size_t nparams)
{
    nt_job *j = arg;
    char sql[300];
    snprintf(sql, sizeof(sql),
             "UPDATE notifications SET %s WHERE id = $1 AND user_id = $2 AND "
             "in_app",
             set);
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->id), KEEL_DB_P_TEXT(j->user), KEEL_DB_P_INT(app_now())};
    int64_t n = 0;
    int rc = keel_db_exec(c, sql, p, nparams, &n);
    if (rc < 0)
        return rc;
    if (n == 0)
        return app_nt_refuse(j, 404, "no notification with this id");
    return fetch_own(c, j);
}

static int db_read(keel_db_conn *c, void *arg)
{
    return db_mark(c, arg, "read_at = COALESCE(read_at, $3)", 3);
}

static int db_unread_one(keel_db_conn *c, void *arg)
{
    return db_mark(c, arg, "read_at = NULL", 2);
}

static int db_archive(keel_db_conn *c, void *arg)
{
    return db_mark(c, arg,
                   "read_at = COALESCE(read_at, $3), archived_at = COALESCE(archived_at, $3)", 3);
}

static keel_flow h_read(keel_req *r)
{
    return keel_db_job_run(r, app_nt_db, db_read, app_nt_done, app_nt_new(r));
}

static keel_flow h_unread_one(keel_req *r)
{
    return keel_db_job_run(r, app_nt_db, db_unread_one, app_nt_done, app_nt_new(r));
}

static keel_flow h_archive(keel_req *r)
{
    return keel_db_job_run(r, app_nt_db, db_archive, app_nt_done, app_nt_new(r));
}

static int db_read_all(keel_db_conn *c, void *arg)
{
    nt_job *j = arg;
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->user), KEEL_DB_P_INT(app_now())};
    int64_t n = 0;
    int rc = keel_db_exec(c,
                          "UPDATE notifications SET read_at = $2 WHERE user_id = $1 AND in_app "
                          "AND read_at IS NULL AND archived_at IS NULL",
                          p, 2, &n);
    if (rc < 0)
        return rc;
    json_decref(j->out);
    j->out = json_pack("{s:I}", "updated", (json_int_t)n);
    return 0;
}

static keel_flow h_read_all(keel_req *r)
{
    return keel_db_job_run(r, app_nt_db, db_read_all, app_nt_done, app_nt_new(r));
}

/* ---------------------------------------------------------------- admin send */

static int db_admin_send(keel_db_conn *c, void *arg)
{
    nt_job *j = arg;
    const char *user = json_string_value(json_object_get(j->body, "user_id")),
               *type = json_string_value(json_object_get(j->body, "type")),
               *key = json_string_value(json_object_get(j->body, "idempotency_key"));
    json_t *data = json_object_get(j->body, "data");
    app_notify_result res;
    int rc = app_notify_ex(c, user, type, data, key, &res);
    if (rc == KEEL_EDB_NOROW)
        return app_nt_refuse(j, 404, "no user with this id");
    if (rc == KEEL_ETOOBIG) {
        j->err_extra = json_pack("{s:[{s:s, s:s}]}", "errors", "pointer", "/data", "message",
                                 "larger than NOTIFY_DATA_MAX_BYTES");
        return app_nt_refuse(j, 422, "the notification's data is too large");
    }
    if (rc == KEEL_EINVAL)
        return app_nt_refuse(j, 422, "the notification is not valid");
    if (rc < 0)
        return rc;
    json_t *n;
    if ((rc = app_notify_load(c, res.id, &n)) < 0)
        return rc;
    json_decref(j->out);
    j->out = json_pack("{s:o, s:b}", "notification", n, "duplicate", res.duplicate);
    j->status = res.duplicate ? 200 : 201;
    return 0;
}

static keel_flow h_admin_send(keel_req *r)
{
    json_t *b = keel_req_json(r);
    if (!app_notify_type_valid(json_string_value(json_object_get(b, "type")))) {
        app_invalid(r, "/type", "a type is 1..64 bytes of a-z, 0-9 and . _ - (not first)");
        return KEEL_DONE;
    }
    nt_job *j = app_nt_new(r);
    j->body = b;
    return keel_db_job_run_tx(r, app_nt_db, db_admin_send, app_nt_done, j);
}

/* ---------------------------------------------------------------- routes */

#define S_BOOL_Q "{\"type\":\"boolean\"}"
/* The answers, for /openapi.json (documentation: not enforced). */
#define S_NOTE                                                                                     \
    "{\"type\":\"object\",\"required\":[\"id\",\"type\",\"data\",\"created_at\","                  \
    "\"read\"],\"properties\":{\"id\":{\"type\":\"string\",\"format\":\"uuid\"},"                  \
    "\"type\":{\"type\":\"string\"},\"data\":{\"type\":\"object\"},"                               \
    "\"created_at\":{\"type\":\"string\",\"format\":\"date-time\"},\"read\":{\"type\":"            \
    "\"boolean\"},\"read_at\":{\"type\":[\"string\",\"null\"]},\"archived_at\":{\"type\":"         \
    "[\"string\",\"null\"]},\"channels\":{\"type\":\"array\",\"items\":{\"type\":"                 \
    "\"string\",\"enum\":[\"in_app\",\"email\",\"push\"]}}}}"
#define S_PAGE                                                                                     \
    "{\"type\":\"object\",\"properties\":{\"data\":{\"type\":\"array\",\"items\":" S_NOTE          \
    "},\"next_cursor\":{\"type\":[\"string\",\"null\"]}}}"

static const keel_route notify_routes[] = {
    {.name = "notifications.list",
     .method = "GET",
     .path = "/api/v1/notifications",
     .handler = h_list,
     .auth = "user",
     .summary = "The caller's notifications, newest first (cursor pages; unread=true: unread "
                "only; archived=true: the archive)",
     .query_schema = "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
                     "\"limit\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000},"
                     "\"cursor\":{\"type\":\"string\",\"pattern\":\"^[0-9]{1,18}$\"},"
                     "\"unread\":" S_BOOL_Q ",\"archived\":" S_BOOL_Q "}}",
     .response_schema = S_PAGE},
    {.name = "notifications.unread_count",
     .method = "GET",
     .path = "/api/v1/notifications/unread-count",
     .handler = h_unread,
     .auth = "user",
     .summary = "How many of the caller's notifications are unread (not archived)",
     .response_schema = "{\"type\":\"object\",\"properties\":{\"unread\":{\"type\":"
                        "\"integer\",\"minimum\":0}}}"},
    {.name = "notifications.read_all",
     .method = "POST",
     .path = "/api/v1/notifications/read-all",
     .handler = h_read_all,
     .auth = "user",
     .summary = "Marks every notification of the caller read"},
    {.name = "notifications.read",
     .method = "POST",
     .path = "/api/v1/notifications/:id/read",
     .handler = h_read,
     .auth = "user",
     .summary = "Marks one notification read",
     .response_schema = S_NOTE},
    {.name = "notifications.unread",
     .method = "POST",
     .path = "/api/v1/notifications/:id/unread",
     .handler = h_unread_one,
     .auth = "user",
     .summary = "Marks one notification unread again",
     .response_schema = S_NOTE},
    {.name = "notifications.archive",
     .method = "POST",
     .path = "/api/v1/notifications/:id/archive",
     .handler = h_archive,
     .auth = "user",
     .summary = "Archives one notification (and marks it read)",
     .response_schema = S_NOTE},
    {.name = "admin.notifications.send",
     .method = "POST",
     .path = "/api/v1/admin/notifications",
     .handler = h_admin_send,
     .auth = "any",
     .permission = "admin:access",
     .summary = "Sends a notification to a user (app_notify: the in-app row and one job per "
                "enabled channel); with idempotency_key a repeat sends nothing",
     .request_schema = "{\"type\":\"object\",\"required\":[\"user_id\",\"type\"],"
                       "\"additionalProperties\":false,\"properties\":{"
                       "\"user_id\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":64},"
                       "\"type\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":64},"
                       "\"data\":{\"type\":\"object\"},"
                       "\"idempotency_key\":{\"type\":\"string\",\"minLength\":1,"
                       "\"maxLength\":200}}}"},
};

int app_notifications_setup(keel_service *svc)
{
    O = keel_config_get(keel_service_config(svc), &app_notify_config);
    app_nt_db = keel_service_db(svc);
    app_nt_is_pg = app_nt_db && !strcmp(keel_db_driver(app_nt_db), "postgres");
    keel_metrics *m = keel_service_metrics(svc);
    M_SHARD = keel_metrics_shards(m);
    M_CREATED = keel_metrics_counter(m, "notifications_created_total",
                                     "Notifications created, by channel they go to",
                                     (const char *[]){"channel", NULL});
    for (int i = 0; i < APP_NT_NCHANNELS; i++)
        keel_metric_declare(M_CREATED, (const char *[]){app_nt_channels[i]});
    int rc = app_notify_push_setup(svc);
    if (rc < 0 || (rc = app_notify_prefs_setup(svc)) < 0)
        return rc;
    return keel_service_add_routes(svc, notify_routes,
                                   sizeof(notify_routes) / sizeof(notify_routes[0]));
}

void app_notifications_teardown(void)
{
    app_notify_push_teardown();
}
