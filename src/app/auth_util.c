/* auth_util.c — what the account resources share: ids, random tokens,
 * hashes, e-mail normalisation, user rows as JSON, tokens for a user. */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "app/app.h"

int64_t app_now(void)
{
    return (int64_t)time(NULL);
}

void app_uuid(char out[37])
{
    uint8_t b[16];
    randombytes_buf(b, sizeof(b));
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
             b[13], b[14], b[15]);
}

void app_random_token(char *out, size_t cap, size_t nbytes)
{
    uint8_t b[64];
    if (nbytes > sizeof(b))
        nbytes = sizeof(b);
    randombytes_buf(b, nbytes);
    sodium_bin2base64(out, cap, b, nbytes, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(b, sizeof(b));
}

void app_sha256_hex(const char *s, size_t n, char out[65])
{
    uint8_t h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const uint8_t *)s, n);
    sodium_bin2hex(out, 65, h, sizeof(h));
}

int app_normalize_email(const char *in, size_t n, char *out, size_t cap)
{
    while (n && (*in == ' ' || *in == '\t')) {
        in++;
        n--;
    }
    while (n && (in[n - 1] == ' ' || in[n - 1] == '\t'))
        n--;
    if (n < 3 || n > 254 || n >= cap)
        return -1;
    size_t at = 0, ats = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c <= ' ' || c == 0x7f || c == '"' || c == '(' || c == ')' || c == ',' || c == ':' ||
            c == ';' || c == '<' || c == '>' || c == '[' || c == ']' || c == '\\')
            return -1;
        if (c == '@') {
            at = i;
            ats++;
        }
        out[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    out[n] = '\0';
    if (ats != 1 || at == 0 || at == n - 1 || !memchr(out + at, '.', n - at) ||
        out[n - 1] == '.' || out[at + 1] == '.')
        return -1;
    return 0;
}

static json_t *iso_time(int64_t t, int null_when_zero)
{
    if (null_when_zero && t == 0)
        return json_null();
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    char buf[32];
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(buf);
}

/* Columns of APP_USER_COLUMNS, in order. */
json_t *app_user_json(const keel_db_rows *rows, size_t first)
{
    size_t c = first;
    keel_str id = keel_db_get_text(rows, c++), email = keel_db_get_text(rows, c++),
             name = keel_db_get_text(rows, c++), role = keel_db_get_text(rows, c++),
             status = keel_db_get_text(rows, c++);
    int verified = keel_db_get_bool(rows, c++);
    int64_t created = keel_db_get_int(rows, c++), updated = keel_db_get_int(rows, c++),
            last = keel_db_get_int(rows, c++), deleted = keel_db_get_int(rows, c++);
    json_t *o = json_object();
    json_object_set_new(o, "id", json_stringn(id.ptr ? id.ptr : "", id.len));
    json_object_set_new(o, "email", json_stringn(email.ptr ? email.ptr : "", email.len));
    json_object_set_new(o, "name", json_stringn(name.ptr ? name.ptr : "", name.len));
    json_object_set_new(o, "role", json_stringn(role.ptr ? role.ptr : "", role.len));
    json_object_set_new(o, "status", json_stringn(status.ptr ? status.ptr : "", status.len));
    json_object_set_new(o, "email_verified", json_boolean(verified));
    json_object_set_new(o, "created_at", iso_time(created, 0));
    json_object_set_new(o, "updated_at", iso_time(updated, 0));
    json_object_set_new(o, "last_login_at", iso_time(last, 1));
    if (deleted)
        json_object_set_new(o, "deleted_at", iso_time(deleted, 0));
    /* the avatar (src/app/files.c), when one was uploaded */
    if (!keel_db_is_null(rows, c++)) {
        char url[120];
        snprintf(url, sizeof(url), "/api/v1/users/%.*s/avatar", (int)id.len, id.ptr ? id.ptr : "");
        json_object_set_new(o, "avatar_url", json_string(url));
    } else {
        json_object_set_new(o, "avatar_url", json_null());
    }
    return o;
}

/* Issues an access token and a new refresh token (family `family`, or a
 * new one when NULL) for the user, storing the refresh token's hash.
 * Runs on a database pool thread. */
int app_issue_tokens(keel_db_conn *c, const app_auth *a, const char *user_id, const char *role,
                     const char *family, app_tokens *out)
{
    memset(out, 0, sizeof(*out));
    int64_t now = app_now();
    keel_jwt_claims claims;
    int rc = keel_jwt_sign(&a->jwt, user_id, role, now, &out->access, &claims);
    if (rc < 0)
        return rc;
    char id[37], fam[37], hash[65];
    app_uuid(id);
    if (family)
        snprintf(fam, sizeof(fam), "%s", family);
    else
        app_uuid(fam);
    app_random_token(out->refresh, sizeof(out->refresh), 32);
    app_sha256_hex(out->refresh, strlen(out->refresh), hash);
    keel_db_param p[] = {KEEL_DB_P_TEXT(id), KEEL_DB_P_TEXT(user_id), KEEL_DB_P_TEXT(fam),
                         KEEL_DB_P_TEXT(hash),
                         KEEL_DB_P_INT(now + (int64_t)a->refresh_ttl_s), KEEL_DB_P_INT(now)};
    rc = keel_db_exec(c,
                      "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, "
                      "expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                      p, 6, NULL);
    if (rc < 0) {
        keel_free(out->access);
        out->access = NULL;
        return rc;
    }
    out->expires_in = (int64_t)a->jwt.ttl_s;
    return 0;
}

int app_fetch_user(keel_db_conn *c, const char *id, int include_deleted, json_t **out)
{
    *out = NULL;
    keel_db_param p[] = {KEEL_DB_P_TEXT(id)};
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           include_deleted
                               ? "SELECT " APP_USER_COLUMNS " FROM users WHERE id = $1"
                               : "SELECT " APP_USER_COLUMNS
                                 " FROM users WHERE id = $1 AND deleted_at IS NULL",
                           p, 1, &rows);
    if (rc < 0)
        return rc;
    if ((rc = keel_db_rows_next(rows)) == 1)
        *out = app_user_json(rows, 0);
    keel_db_rows_free(rows);
    if (rc < 0)
        return rc;
    return *out ? 0 : KEEL_EDB_NOROW;
}

int app_insert_user(keel_db_conn *c, char id[37], const char *email, const char *hash,
                    const char *name, const char *role, int verified)
{
    app_uuid(id);
    int64_t now = app_now();
    keel_db_param p[] = {KEEL_DB_P_TEXT(id),   KEEL_DB_P_TEXT(email), KEEL_DB_P_TEXT(hash),
                         KEEL_DB_P_TEXT(name), KEEL_DB_P_TEXT(role),  KEEL_DB_P_BOOL(verified),
                         KEEL_DB_P_INT(now)};
    return keel_db_exec(c,
                        "INSERT INTO users (id, email, password_hash, name, role, email_verified, "
                        "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                        p, 7, NULL);
}

int app_end_sessions(keel_db_conn *c, const char *user_id, int64_t now)
{
    keel_db_param p[] = {KEEL_DB_P_INT(now), KEEL_DB_P_TEXT(user_id)};
    return keel_db_exec(c,
                        "UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND "
                        "revoked_at IS NULL",
                        p, 2, NULL);
}

json_t *app_tokens_json(app_tokens *t)
{
    json_t *o = json_pack("{s:s,s:s,s:s,s:I}", "access_token", t->access, "refresh_token",
                          t->refresh, "token_type", "Bearer", "expires_in",
                          (json_int_t)t->expires_in);
    app_tokens_clear(t);
    return o;
}

void app_tokens_clear(app_tokens *t)
{
    if (t->access) {
        sodium_memzero(t->access, strlen(t->access));
        keel_free(t->access);
        t->access = NULL;
    }
    sodium_memzero(t->refresh, sizeof(t->refresh));
}

typedef struct secret {
    size_t n;
    char p[];
} secret;

static void wipe_secret(void *arg)
{
    secret *s = arg;
    sodium_memzero(s->p, s->n + 1);
}

char *app_secret_dup(keel_req *r, const char *s, size_t n)
{
    secret *c = keel_arena_alloc(keel_req_arena(r), sizeof(*c) + n + 1);
    c->n = n;
    memcpy(c->p, s, n);
    c->p[n] = '\0';
    keel_arena_defer(keel_req_arena(r), wipe_secret, c);
    return c->p;
}
