/* cli.c — `keel user create` (the first admin of a fresh install) and
 * `keel apikey create|list|revoke` (service-to-service credentials).
 * They talk to DATABASE_URL directly; run `keel migrate up` first (or
 * start `keel serve` once). */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "app/app.h"

static const char *opt(int argc, char **argv, const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], name) && i + 1 < argc)
            return argv[i + 1];
        if (!strncmp(argv[i], name, n) && argv[i][n] == '=')
            return argv[i] + n + 1;
    }
    return NULL;
}

static keel_db_conn *connect_db(keel_service *svc)
{
    const keel_config *cfg = keel_service_config(svc);
    keel_db_conn *c = NULL;
    char err[256] = "";
    const keel_db_options *db = keel_config_get(cfg, &keel_db_config);
    if (keel_db_connect(db->database_url, cfg, &c, err, sizeof(err)) < 0) {
        fprintf(stderr, "keel: cannot open the database: %s\n", err);
        return NULL;
    }
    return c;
}

static int no_table(int rc)
{
    if (rc == KEEL_EDB_SQL)
        fprintf(stderr, "keel: the tables are missing: run `keel migrate up` first\n");
    return 1;
}

/* The password from KEEL_ADMIN_PASSWORD, else the first line of stdin. */
static int read_password(char *out, size_t cap)
{
    const char *env = getenv("KEEL_ADMIN_PASSWORD");
    if (env) {
        snprintf(out, cap, "%s", env);
        return 0;
    }
    if (isatty(STDIN_FILENO))
        fprintf(stderr, "password: ");
    if (!fgets(out, (int)cap, stdin))
        return -1;
    out[strcspn(out, "\r\n")] = '\0';
    return 0;
}

static int user_create(keel_service *svc, int argc, char **argv)
{
    app_auth *a = app_auth_get();
    const char *email = opt(argc, argv, "--email"), *role = opt(argc, argv, "--role"),
               *name = opt(argc, argv, "--name");
    if (!role)
        role = "user";
    char norm[256];
    if (!email || app_normalize_email(email, strlen(email), norm, sizeof(norm)) < 0) {
        fprintf(stderr, "usage: keel user create --email ADDRESS [--role user|moderator|admin] "
                        "[--name NAME]  (password: KEEL_ADMIN_PASSWORD or stdin)\n");
        return 2;
    }
    if (!keel_role_valid(role)) {
        fprintf(stderr, "keel: --role: expected user, moderator or admin\n");
        return 2;
    }
    char pw[1100];
    if (read_password(pw, sizeof(pw)) < 0) {
        fprintf(stderr, "keel: no password given (KEEL_ADMIN_PASSWORD or stdin)\n");
        return 2;
    }
    const char *weak = keel_password_weakness(pw, strlen(pw), a->pw_min);
    if (weak) {
        fprintf(stderr, "keel: %s\n", weak);
        sodium_memzero(pw, sizeof(pw));
        return 2;
    }
    char hash[KEEL_PW_HASH_MAX];
    int rc = keel_password_hash(pw, strlen(pw), a->pw_ops, a->pw_mem, hash);
    sodium_memzero(pw, sizeof(pw));
    if (rc < 0) {
        fprintf(stderr, "keel: the password could not be hashed\n");
        return 1;
    }
    keel_db_conn *c = connect_db(svc);
    if (!c)
        return 1;
    char id[37];
    rc = app_insert_user(c, id, norm, hash, name ? name : "", role, 1);
    keel_db_disconnect(c);
    if (rc == KEEL_EDB_CONSTRAINT) {
        fprintf(stderr, "keel: a user with the e-mail %s already exists\n", norm);
        return 1;
    }
    if (rc < 0) {
        fprintf(stderr, "keel: could not create the user: %s\n", keel_db_strerror(rc));
        return no_table(rc);
    }
    printf("created user %s <%s> with role %s\n", id, norm, role);
    return 0;
}

static int apikey_create(keel_service *svc, int argc, char **argv)
{
    const char *name = opt(argc, argv, "--name"), *scopes = opt(argc, argv, "--scopes"),
               *expires = opt(argc, argv, "--expires");
    if (!name || !*name || !scopes) {
        fprintf(stderr, "usage: keel apikey create --name NAME --scopes perm1,perm2 "
                        "[--expires 90d]\n");
        return 2;
    }
    uint64_t ttl = 0;
    if (expires && (keel_parse_duration_ms(expires, &ttl) < 0 || ttl < 1000)) {
        fprintf(stderr, "keel: --expires: expected a duration such as 90d\n");
        return 2;
    }
    uint8_t pb[4];
    randombytes_buf(pb, sizeof(pb));
    char prefix[9], secret[64], key[96], hash[65], id[37];
    sodium_bin2hex(prefix, sizeof(prefix), pb, sizeof(pb));
    app_random_token(secret, sizeof(secret), 32);
    snprintf(key, sizeof(key), "keel_%s_%s", prefix, secret);
    app_sha256_hex(key, strlen(key), hash);
    app_uuid(id);
    int64_t now = app_now();
    keel_db_conn *c = connect_db(svc);
    if (!c)
        return 1;
    keel_db_param p[] = {KEEL_DB_P_TEXT(id), KEEL_DB_P_TEXT(name), KEEL_DB_P_TEXT(prefix),
                         KEEL_DB_P_TEXT(hash), KEEL_DB_P_TEXT(scopes),
                         ttl ? KEEL_DB_P_INT(now + (int64_t)(ttl / 1000)) : KEEL_DB_P_NULL(),
                         KEEL_DB_P_INT(now)};
    int rc = keel_db_exec(c,
                          "INSERT INTO api_keys (id, name, prefix, key_hash, scopes, expires_at, "
                          "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                          p, 7, NULL);
    keel_db_disconnect(c);
    if (rc < 0) {
        fprintf(stderr, "keel: could not create the key: %s\n", keel_db_strerror(rc));
        return no_table(rc);
    }
    printf("%s\n", key);
    fprintf(stderr, "created API key %s (%s, scopes %s); the key above is shown only once\n", id,
            name, scopes);
    sodium_memzero(key, sizeof(key));
    sodium_memzero(secret, sizeof(secret));
    return 0;
}

static int apikey_list(keel_service *svc)
{
    keel_db_conn *c = connect_db(svc);
    if (!c)
        return 1;
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           "SELECT id, name, prefix, scopes, expires_at, revoked_at, created_at, "
                           "last_used_at FROM api_keys ORDER BY created_at",
                           NULL, 0, &rows);
    if (rc < 0) {
        keel_db_disconnect(c);
        fprintf(stderr, "keel: %s\n", keel_db_strerror(rc));
        return no_table(rc);
    }
    printf("%-36s %-20s %-13s %-10s %s\n", "ID", "NAME", "KEY", "STATE", "SCOPES");
    int64_t now = app_now();
    while (keel_db_rows_next(rows) == 1) {
        keel_str id = keel_db_get_text(rows, 0), name = keel_db_get_text(rows, 1),
                 prefix = keel_db_get_text(rows, 2), scopes = keel_db_get_text(rows, 3);
        const char *state = !keel_db_is_null(rows, 5)                                   ? "revoked"
                            : !keel_db_is_null(rows, 4) && keel_db_get_int(rows, 4) <= now ? "expired"
                                                                                           : "active";
        printf("%-36.*s %-20.*s keel_%.*s_… %-10s %.*s\n", (int)id.len, id.ptr, (int)name.len,
               name.ptr, (int)prefix.len, prefix.ptr, state, (int)scopes.len, scopes.ptr);
    }
    keel_db_rows_free(rows);
    keel_db_disconnect(c);
    return 0;
}

static int apikey_revoke(keel_service *svc, const char *id)
{
    keel_db_conn *c = connect_db(svc);
    if (!c)
        return 1;
    keel_db_param p[] = {KEEL_DB_P_INT(app_now()), KEEL_DB_P_TEXT(id)};
    int64_t n = 0;
    int rc = keel_db_exec(c,
                          "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                          p, 2, &n);
    keel_db_disconnect(c);
    if (rc < 0) {
        fprintf(stderr, "keel: %s\n", keel_db_strerror(rc));
        return no_table(rc);
    }
    if (n == 0) {
        fprintf(stderr, "keel: no active API key with id %s\n", id);
        return 1;
    }
    printf("revoked API key %s\n", id);
    return 0;
}

int app_auth_command(keel_service *svc, const char *cmd, int argc, char **argv)
{
    const char *sub = argc > 0 ? argv[0] : "";
    if (!strcmp(cmd, "user")) {
        if (!strcmp(sub, "create"))
            return user_create(svc, argc - 1, argv + 1);
        fprintf(stderr, "usage: keel user create --email ADDRESS [--role ROLE] [--name NAME]\n");
        return 2;
    }
    if (!strcmp(cmd, "apikey")) {
        if (!strcmp(sub, "create"))
            return apikey_create(svc, argc - 1, argv + 1);
        if (!strcmp(sub, "list"))
            return apikey_list(svc);
        if (!strcmp(sub, "revoke") && argc > 1)
            return apikey_revoke(svc, argv[1]);
        fprintf(stderr, "usage: keel apikey create --name NAME --scopes a,b [--expires 90d]\n"
                        "       keel apikey list\n       keel apikey revoke ID\n");
        return 2;
    }
    return -1;
}
