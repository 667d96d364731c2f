/* notify_prefs.c — the notification preferences and push tokens of the
 * caller (docs/notifications.md):
 *
 *   GET|PUT /api/v1/notifications/preferences   per type and channel, with
 *                                               the user's defaults
 *   GET|POST /api/v1/notifications/push-tokens  a device's token, capped per
 *   DELETE /api/v1/notifications/push-tokens/:token   user (409 beyond)
 *
 * Preferences are rows (user, type, channel, enabled); type "*" holds the
 * user's defaults. app_notify reads them (notifications.c: the configured
 * default, then "*", then the type's own). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "app/notify_internal.h"

/* ---------------------------------------------------------------- preferences */

static int prefs_doc(keel_db_conn *c, nt_job *j)
{
    const notify_options *o = app_notify_opts();
    json_t *defaults = json_object(), *types = json_object(), *avail = json_object();
    for (int i = 0; i < APP_NT_NCHANNELS; i++)
        json_object_set_new(defaults, app_nt_channels[i],
                            json_boolean(o->default_mask & (1u << i)));
    json_object_set_new(avail, "in_app", json_true());
    json_object_set_new(avail, "email", json_boolean(o->email));
    json_object_set_new(avail, "push", json_boolean(app_notify_push_enabled()));
    json_decref(j->out);
    j->out = json_pack("{s:o, s:o, s:o}", "defaults", defaults, "types", types, "available", avail);
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->user)};
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           "SELECT type, channel, enabled FROM notification_preferences "
                           "WHERE user_id = $1 ORDER BY type",
                           p, 1, &rows);
    if (rc < 0)
        return rc;
    while ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str t = keel_db_get_text(rows, 0), ch = keel_db_get_text(rows, 1);
        int i = ch.ptr ? app_nt_channel_index(ch.ptr, ch.len) : -1;
        if (i < 0 || !t.ptr)
            continue;
        json_t *on = json_boolean(keel_db_get_bool(rows, 2));
        if (t.len == 1 && t.ptr[0] == '*') {
            json_object_set_new(defaults, app_nt_channels[i], on);
            continue;
        }
        char name[80];
        snprintf(name, sizeof(name), "%.*s", (int)t.len, t.ptr);
        json_t *ty = json_object_get(types, name);
        if (!ty) {
            ty = json_object();
            json_object_set_new(types, name, ty);
        }
        json_object_set_new(ty, app_nt_channels[i], on);
    }
    keel_db_rows_free(rows);
    if (rc < 0)
        return rc;
    /* every type's channels in full: its own value, else the user's default */
    const char *k;
    json_t *ty;
    json_object_foreach(types, k, ty)
    {
        for (int i = 0; i < APP_NT_NCHANNELS; i++)
            if (!json_object_get(ty, app_nt_channels[i]))
                json_object_set(ty, app_nt_channels[i],
                                json_object_get(defaults, app_nt_channels[i]));
    }
    return 0;
}

static int db_prefs_get(keel_db_conn *c, void *arg)
{
    return prefs_doc(c, arg);
}

static keel_flow h_prefs_get(keel_req *r)
{
    return keel_db_job_run(r, app_nt_db, db_prefs_get, app_nt_done, app_nt_new(r));
}

/* One type's channels: {"email": false, "push": null} (null: no preference
 * of its own). */
static int put_channels(keel_db_conn *c, nt_job *j, const char *type, json_t *chans)
{
    const char *ch;
    json_t *v;
    int64_t now = app_now();
    json_object_foreach(chans, ch, v)
    {
        keel_db_param p[] = {KEEL_DB_P_TEXT(j->user), KEEL_DB_P_TEXT(type), KEEL_DB_P_TEXT(ch),
                             KEEL_DB_P_BOOL(json_is_true(v)), KEEL_DB_P_INT(now)};
        int rc = json_is_null(v)
                     ? keel_db_exec(c,
                                    "DELETE FROM notification_preferences WHERE user_id = $1 "
                                    "AND type = $2 AND channel = $3",
                                    p, 3, NULL)
                     : keel_db_exec(c,
                                    "INSERT INTO notification_preferences (user_id, type, "
                                    "channel, enabled, updated_at) VALUES ($1, $2, $3, $4, $5) "
                                    "ON CONFLICT (user_id, type, channel) DO UPDATE SET "
                                    "enabled = excluded.enabled, updated_at = excluded.updated_at",
                                    p, 5, NULL);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* A count over the caller's rows: sql takes the user id as $1 and answers
 * one number (none read as 0). */
static int count_mine(keel_db_conn *c, nt_job *j, const char *sql, int64_t *n)
{
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->user)};
    keel_db_rows *rows;
    int rc = keel_db_query(c, sql, p, 1, &rows);
    if (rc < 0)
        return rc;
    rc = keel_db_rows_next(rows);
    *n = rc == 1 ? keel_db_get_int(rows, 0) : 0;
    keel_db_rows_free(rows);
    return rc < 0 ? rc : 0;
}

static int db_prefs_put(keel_db_conn *c, void *arg)
{
    nt_job *j = arg;
    json_t *defaults = json_object_get(j->body, "defaults"),
           *types = json_object_get(j->body, "types");
    int rc;
    if (defaults && (rc = put_channels(c, j, "*", defaults)) < 0)
        return rc;
    const char *t;
    json_t *v;
    json_object_foreach(types, t, v)
    {
        if (json_is_null(v)) {
            keel_db_param p[] = {KEEL_DB_P_TEXT(j->user), KEEL_DB_P_TEXT(t)};
            rc = keel_db_exec(c,
                              "DELETE FROM notification_preferences WHERE user_id = $1 AND "
                              "type = $2",
                              p, 2, NULL);
        } else {
            rc = put_channels(c, j, t, v);
        }
        if (rc < 0)
            return rc;
    }
    int64_t n;
    if ((rc = count_mine(c, j,
                         "SELECT COUNT(DISTINCT type) FROM notification_preferences "
                         "WHERE user_id = $1 AND type <> '*'",
                         &n)) < 0)
        return rc;
    uint64_t max = app_notify_opts()->pref_types_max;
    if ((uint64_t)n > max) {
        j->err_extra = json_pack("{s:[{s:s, s:s}]}", "errors", "pointer", "/types", "message",
                                 "too many types with preferences");
        return app_nt_refuse(j, 422,
                             "at most %llu types may have preferences "
                             "(NOTIFY_PREFERENCE_TYPES_MAX); remove some with null",
                             (unsigned long long)max);
    }
    return prefs_doc(c, j);
}

/* The body is checked here, not by a schema: type names are keys. */
static int prefs_body_ok(keel_req *r, json_t *b)
{
    json_t *types = json_object_get(b, "types");
    const char *t;
    json_t *v;
    char ptr[120];
    json_object_foreach(types, t, v)
    {
        snprintf(ptr, sizeof(ptr), "/types/%.64s", t);
        if (!app_notify_type_valid(t)) {
            app_invalid(r, ptr, "a type is 1..64 bytes of a-z, 0-9 and . _ - (not first)");
            return 0;
        }
        if (!json_is_object(v) && !json_is_null(v)) {
            app_invalid(r, ptr,
                        "an object of channels, or null to remove the type's "
                        "preferences");
            return 0;
        }
        const char *ch;
        json_t *on;
        json_object_foreach(v, ch, on)
        {
            snprintf(ptr, sizeof(ptr), "/types/%.64s/%.20s", t, ch);
            if (app_nt_channel_index(ch, strlen(ch)) < 0) {
                app_invalid(r, ptr, "a channel is in_app, email or push");
                return 0;
            }
            if (!json_is_boolean(on) && !json_is_null(on)) {
                app_invalid(r, ptr, "true, false, or null (the default)");
                return 0;
            }
        }
    }
    return 1;
}

static keel_flow h_prefs_put(keel_req *r)
{
    json_t *b = keel_req_json(r);
    if (!prefs_body_ok(r, b))
        return KEEL_DONE;
    nt_job *j = app_nt_new(r);
    j->body = b;
    return keel_db_job_run_tx(r, app_nt_db, db_prefs_put, app_nt_done, j);
}

/* ---------------------------------------------------------------- push tokens */

static json_t *token_json(const keel_db_rows *rows)
{
    keel_str t = keel_db_get_text(rows, 0), pl = keel_db_get_text(rows, 1);
    char c1[32], c2[32];
    app_format_time(keel_db_get_int(rows, 2), c1);
    app_format_time(keel_db_get_int(rows, 3), c2);
    return json_pack("{s:s%, s:s%, s:s, s:s}", "token", t.ptr ? t.ptr : "", t.len, "platform",
                     pl.ptr ? pl.ptr : "", pl.len, "created_at", c1, "last_seen_at", c2);
}

static int db_tokens(keel_db_conn *c, void *arg)
{
    nt_job *j = arg;
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->user)};
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           "SELECT token, platform, created_at, last_seen_at FROM "
                           "notification_push_tokens WHERE user_id = $1 ORDER BY created_at, "
                           "token",
                           p, 1, &rows);
    if (rc < 0)
        return rc;
    json_t *data = json_array();
    while ((rc = keel_db_rows_next(rows)) == 1)
        json_array_append_new(data, token_json(rows));
    keel_db_rows_free(rows);
    json_decref(j->out);
    j->out = json_pack("{s:o, s:I}", "data", data, "max",
                       (json_int_t)app_notify_opts()->push_tokens_max);
    return rc < 0 ? rc : 0;
}

static keel_flow h_tokens(keel_req *r)
{
    return keel_db_job_run(r, app_nt_db, db_tokens, app_nt_done, app_nt_new(r));
}

static int db_token_add(keel_db_conn *c, void *arg)
{
    nt_job *j = arg;
    const char *token = json_string_value(json_object_get(j->body, "token")),
               *platform = json_string_value(json_object_get(j->body, "platform"));
    keel_db_param pu[] = {KEEL_DB_P_TEXT(j->user)};
    keel_db_rows *rows;
    int rc;
    /* one registration of a user at a time: the cap is checked and kept
     * (SQLite: the transaction is the single writer already) */
    if (app_nt_is_pg &&
        (rc = keel_db_exec(c, "SELECT 1 FROM users WHERE id = $1 FOR UPDATE", pu, 1, NULL)) < 0)
        return rc;
    keel_db_param pt[] = {KEEL_DB_P_TEXT(token)};
    if ((rc = keel_db_query(c, "SELECT user_id FROM notification_push_tokens WHERE token = $1", pt,
                            1, &rows)) < 0)
        return rc;
    int mine = 0, exists = 0;
    if ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str u = keel_db_get_text(rows, 0);
        exists = 1;
        mine = u.len == strlen(j->user) && !memcmp(u.ptr, j->user, u.len);
    }
    keel_db_rows_free(rows);
    if (rc < 0)
        return rc;
    int64_t now = app_now();
    keel_db_param p[] = {KEEL_DB_P_TEXT(token), KEEL_DB_P_TEXT(j->user), KEEL_DB_P_TEXT(platform),
                         KEEL_DB_P_INT(now)};
    if (mine) { /* registered again: seen now */
        rc = keel_db_exec(c,
                          "UPDATE notification_push_tokens SET platform = $3, last_seen_at = $4 "
                          "WHERE token = $1 AND user_id = $2",
                          p, 4, NULL);
        j->status = 200;
    } else {
        int64_t n;
        if ((rc = count_mine(c, j, "SELECT COUNT(*) FROM notification_push_tokens WHERE "
                                   "user_id = $1",
                             &n)) < 0)
            return rc;
        uint64_t max = app_notify_opts()->push_tokens_max;
        if ((uint64_t)n >= max) {
            j->err_extra = json_pack("{s:I}", "max", (json_int_t)max);
            return app_nt_refuse(j, 409,
                                 "this account has %llu push tokens already, the most it may "
                                 "have (NOTIFY_PUSH_TOKENS_MAX): delete one first",
                                 (unsigned long long)max);
        }
        /* a device that changes hands (another account logs in on it)
         * moves to the new account */
        rc = exists ? keel_db_exec(c,
                                   "UPDATE notification_push_tokens SET user_id = $2, "
                                   "platform = $3, created_at = $4, last_seen_at = $4 "
                                   "WHERE token = $1",
                                   p, 4, NULL)
                    : keel_db_exec(c,
                                   "INSERT INTO notification_push_tokens (token, user_id, "
                                   "platform, created_at, last_seen_at) VALUES "
                                   "($1, $2, $3, $4, $4)",
                                   p, 4, NULL);
        j->status = 201;
    }
    if (rc < 0)
        return rc;
    if ((rc = keel_db_query(c,
                            "SELECT token, platform, created_at, last_seen_at FROM "
                            "notification_push_tokens WHERE token = $1",
                            pt, 1, &rows)) < 0)
        return rc;
    json_decref(j->out);
    j->out = NULL;
    if ((rc = keel_db_rows_next(rows)) == 1)
        j->out = token_json(rows);
    keel_db_rows_free(rows);
    return rc < 0 ? rc : 0;
}

/* Push tokens are opaque strings from the platforms (FCM, APNs hex, Expo's
 * ExponentPushToken[...]): printable ASCII of a safe set, 16 bytes at
 * least, NOTIFY_PUSH_TOKEN_MAX_BYTES at most. */
static const char *token_problem(const char *t)
{
    size_t n = strlen(t);
    if (n < 16)
        return "a push token has 16 bytes at least";
    if (n > app_notify_opts()->push_token_max_bytes)
        return "longer than NOTIFY_PUSH_TOKEN_MAX_BYTES";
    for (size_t i = 0; i < n; i++) {
        char ch = t[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              strchr(":_-.[]", ch)))
            return "a push token is made of letters, digits and : _ - . [ ]";
    }
    return NULL;
}

static keel_flow h_token_add(keel_req *r)
{
    json_t *b = keel_req_json(r);
    const char *why = token_problem(json_string_value(json_object_get(b, "token")));
    if (why) {
        app_invalid(r, "/token", why);
        return KEEL_DONE;
    }
    nt_job *j = app_nt_new(r);
    j->body = b;
    return keel_db_job_run_tx(r, app_nt_db, db_token_add, app_nt_done, j);
}

static int db_token_delete(keel_db_conn *c, void *arg)
{
    nt_job *j = arg;
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->id), KEEL_DB_P_TEXT(j->user)};
    int64_t n = 0;
    int rc = keel_db_exec(c,
                          "DELETE FROM notification_push_tokens WHERE token = $1 AND "
                          "user_id = $2",
                          p, 2, &n);
    if (rc < 0)
        return rc;
    return n ? 0 : app_nt_refuse(j, 404, "no push token of yours is this one");
}

static keel_flow h_token_delete(keel_req *r)
{
    return keel_db_job_run(r, app_nt_db, db_token_delete, app_nt_done, app_nt_new(r));
}

/* ---------------------------------------------------------------- routes */

#define S_CHANNELS                                                                                 \
    "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"                         \
    "\"in_app\":{\"type\":[\"boolean\",\"null\"]},\"email\":{\"type\":[\"boolean\",\"null\"]},"    \
    "\"push\":{\"type\":[\"boolean\",\"null\"]}}}"

static const keel_route prefs_routes[] = {
    {.name = "notifications.preferences.get",
     .method = "GET",
     .path = "/api/v1/notifications/preferences",
     .handler = h_prefs_get,
     .auth = "user",
     .summary = "The caller's channels per notification type, with the defaults"},
    {.name = "notifications.preferences.put",
     .method = "PUT",
     .path = "/api/v1/notifications/preferences",
     .handler = h_prefs_put,
     .auth = "user",
     .summary = "Sets channels: defaults for every type, and per type (null: back to the "
                "default)",
     .request_schema = "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
                       "\"defaults\":" S_CHANNELS ",\"types\":{\"type\":\"object\","
                       "\"additionalProperties\":true}}}"},
    {.name = "notifications.push_tokens.list",
     .method = "GET",
     .path = "/api/v1/notifications/push-tokens",
     .handler = h_tokens,
     .auth = "user",
     .summary = "The caller's registered push tokens",
     .flags = KEEL_ROUTE_SECRET},
    {.name = "notifications.push_tokens.add",
     .method = "POST",
     .path = "/api/v1/notifications/push-tokens",
     .handler = h_token_add,
     .auth = "user",
     .summary = "Registers a device's push token (201; 200 when it was the caller's already; "
                "409 over NOTIFY_PUSH_TOKENS_MAX)",
     .flags = KEEL_ROUTE_SECRET,
     .request_schema = "{\"type\":\"object\",\"required\":[\"token\",\"platform\"],"
                       "\"additionalProperties\":false,\"properties\":{"
                       "\"token\":{\"type\":\"string\",\"maxLength\":4096},"
                       "\"platform\":{\"type\":\"string\",\"enum\":[\"ios\",\"android\","
                       "\"web\"]}}}"},
    {.name = "notifications.push_tokens.delete",
     .method = "DELETE",
     .path = "/api/v1/notifications/push-tokens/:token",
     .handler = h_token_delete,
     .auth = "user",
     .summary = "Forgets one of the caller's push tokens"},
};

int app_notify_prefs_setup(keel_service *svc)
{
    return keel_service_add_routes(svc, prefs_routes,
                                   sizeof(prefs_routes) / sizeof(prefs_routes[0]));
}
