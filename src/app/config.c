/* config.c — the reference service's own variables: accounts and tokens,
 * the user cache and the demo routes (with the benchmark's token key).
 * keel_main loads them with keel's
 * (main.c names this module in keel_app.config_modules), so `keel config`,
 * --print-config and the start-up checks include them; a service built on
 * libkeel without src/app never sees them. */
#include <string.h>

#include "app/app.h"

/* Production refuses a missing, short or placeholder JWT_SECRET, and turns
 * the demo routes off unless asked for. */
static int app_validate(void *opts, const keel_config *cfg, FILE *err)
{
    app_options *o = opts;
    if (o->demo_routes < 0)
        o->demo_routes = !cfg->production;
    if (cfg->production) {
        size_t n = o->jwt_secret ? strlen(o->jwt_secret) : 0;
        if (n < 32 || strstr(o->jwt_secret, "change") ||
            strstr(o->jwt_secret, "secret") == o->jwt_secret) {
            fprintf(err, "keel: JWT_SECRET: production mode needs a random secret "
                         "of at least 32 bytes (not a default)\n");
            return KEEL_ECONFIG;
        }
    }
    return 0;
}

#define AT(f) KEEL_CONFIG_AT(app_options, f)
static const keel_config_var app_vars[] = {
    {.name = "JWT_SECRET", .type = KEEL_CONFIG_STR, .def = "", AT(jwt_secret),
     .flags = KEEL_CONFIG_SECRET,
     .help = "HMAC key for access tokens; at least 32 bytes in production"},
    {.name = "JWT_EXPIRES_IN", .type = KEEL_CONFIG_DURATION, .def = "15m", AT(jwt_ttl_ms),
     .min = 1000, .max = 86400000ull * 7, .help = "access token lifetime"},
    {.name = "JWT_ISSUER", .type = KEEL_CONFIG_STR, .def = "keel", AT(jwt_issuer),
     .help = "iss of access tokens (checked)"},
    {.name = "JWT_AUDIENCE", .type = KEEL_CONFIG_STR, .def = "keel-api", AT(jwt_audience),
     .help = "aud of access tokens (checked)"},
    {.name = "REFRESH_TOKEN_EXPIRY", .type = KEEL_CONFIG_DURATION, .def = "7d",
     AT(refresh_ttl_ms), .min = 60000, .max = 86400000ull * 365,
     .help = "refresh token lifetime (each use rotates it)"},
    {.name = "PASSWORD_MIN_LENGTH", .type = KEEL_CONFIG_UINT, .def = "8", AT(password_min),
     .min = 8, .max = 1024, .help = "shortest password accepted (bytes; at most 1024)"},
    {.name = "PASSWORD_HASH_OPS", .type = KEEL_CONFIG_UINT, .def = "2", AT(password_ops),
     .min = 1, .max = 10, .help = "argon2id passes (libsodium opslimit)"},
    {.name = "PASSWORD_HASH_MEMORY", .type = KEEL_CONFIG_SIZE, .def = "64mb", AT(password_mem),
     .min = 8192, .max = 1ull << 32,
     .help = "argon2id memory per hash (libsodium memlimit); hashes run on the work pool"},
    {.name = "LOGIN_MAX_ATTEMPTS", .type = KEEL_CONFIG_UINT, .def = "5", AT(login_max_attempts),
     .min = 1, .max = 1000, .help = "failed logins before an account is locked"},
    {.name = "LOGIN_LOCK_TIME", .type = KEEL_CONFIG_DURATION, .def = "1m", AT(login_lock_ms),
     .min = 1000, .help = "first lock; each further failure doubles it"},
    {.name = "LOGIN_LOCK_MAX", .type = KEEL_CONFIG_DURATION, .def = "1h", AT(login_lock_max_ms),
     .min = 1000, .help = "longest lock"},
    {.name = "USER_CACHE_TTL", .type = KEEL_CONFIG_DURATION, .def = "60s",
     AT(user_cache_ttl_ms),
     .help = "GET /api/v1/users/:id is cached this long (invalidated on every write); "
             "0 = not cached"},
    {.name = "AUTH_STATE_CACHE_TTL", .type = KEEL_CONFIG_DURATION, .def = "60s",
     AT(auth_state_ttl_ms),
     .help = "what an authenticated request checks (status, role, tokens_valid_after, revoked "
             "token ids) is cached per user this long, invalidated on every write; 0 = a "
             "database query per request"},
    {.name = "ENABLE_DEMO_ROUTES", .type = KEEL_CONFIG_BOOL, .def = "", AT(demo_routes),
     .help = "serve /hello, /json, /echo, /auth/me (benchmark routes); default true, false "
             "in production"},
    {.name = "BENCH_JWT_SECRET", .type = KEEL_CONFIG_STR, .def = "keel-bench-secret",
     AT(bench_jwt_secret), .flags = KEEL_CONFIG_SECRET,
     .help = "HMAC key of the benchmark's tokens, checked by the demo route GET /auth/me "
             "(../shared/bench); not an access-token key"},
};
#undef AT

const keel_config_module app_config = KEEL_CONFIG_MODULE(
    "app",
    "The reference service: accounts, tokens, the user cache, demo routes (src/app/config.c).",
    app_options, app_vars, app_validate);

const app_options *app_options_of(keel_service *svc)
{
    return keel_config_get(keel_service_config(svc), &app_config);
}
