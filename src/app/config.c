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
    const struct {
        const char *name, *expr;
    } sched[] = {{"EVENTS_RETENTION_SCHEDULE", o->events_retention_schedule},
                 {"EVENTS_ESCALATION_SCHEDULE", o->events_escalation_schedule},
                 {"EVENTS_RECURRENCE_SCHEDULE", o->events_recurrence_schedule}};
    for (size_t i = 0; i < sizeof(sched) / sizeof(sched[0]); i++) {
        keel_cron c;
        char why[200];
        if (sched[i].expr && *sched[i].expr && keel_cron_parse(sched[i].expr, &c, why, sizeof(why)) < 0) {
            fprintf(err, "keel: %s: %s\n", sched[i].name, why);
            return KEEL_ECONFIG;
        }
    }
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
    {.name = "EVENTS_MAX_DEPTH", .type = KEEL_CONFIG_UINT, .def = "8", AT(events_max_depth),
     .min = 0, .max = 64,
     .help = "deepest level of the event tree (a root is level 0); a deeper create or move "
             "is refused (409)"},
    {.name = "EVENTS_PARENT_WAITS_FOR_CHILDREN", .type = KEEL_CONFIG_BOOL, .def = "true",
     AT(events_parent_waits),
     .help = "an event cannot move to completed while an event of its subtree is still draft, "
             "scheduled or active (409)"},
    {.name = "EVENTS_PAGE_MAX", .type = KEEL_CONFIG_UINT, .def = "100", AT(events_page_max),
     .min = 1, .max = 1000, .help = "largest ?limit of GET /api/v1/events"},
    {.name = "EVENTS_INSTANCES_MAX", .type = KEEL_CONFIG_UINT, .def = "500",
     AT(events_instances_max), .min = 1, .max = 100000,
     .help = "most instances of a recurring event one GET /api/v1/events/:id/instances "
             "returns (the rest: truncated, ask for a later range)"},
    {.name = "EVENTS_PURGE_GRACE", .type = KEEL_CONFIG_DURATION, .def = "30d",
     AT(events_purge_grace_ms), .min = 0, .max = 86400000ull * 3650,
     .help = "how long a soft-deleted event is kept before retention deletes it for good"},
    {.name = "EVENTS_RETENTION_BATCH", .type = KEEL_CONFIG_UINT, .def = "500",
     AT(events_retention_batch), .min = 1, .max = 100000,
     .help = "most events one retention pass expires and most it deletes for good"},
    {.name = "EVENTS_RETENTION_SCHEDULE", .type = KEEL_CONFIG_STR, .def = "@every 1h",
     AT(events_retention_schedule),
     .help = "when the retention pass runs as a job (a cron expression or @every, "
             "docs/scheduler.md); empty = never (POST /api/v1/admin/events/retention still does)"},
    {.name = "EVENTS_ESCALATION_SCHEDULE", .type = KEEL_CONFIG_STR, .def = "@every 1m",
     AT(events_escalation_schedule),
     .help = "when overdue approval steps are escalated, as a job (a cron expression or @every); "
             "empty = never"},
    {.name = "EVENTS_RECURRENCE_SCHEDULE", .type = KEEL_CONFIG_STR, .def = "@every 1h",
     AT(events_recurrence_schedule),
     .help = "when recurring events' instances are materialised for GET "
             "/api/v1/event-instances, as a job (a cron expression or @every); empty = never"},
    {.name = "EVENTS_RECURRENCE_HORIZON", .type = KEEL_CONFIG_DURATION, .def = "30d",
     AT(events_recurrence_horizon_ms), .min = 60000, .max = 86400000ull * 730,
     .help = "how far ahead the instances of recurring events are materialised"},
    {.name = "EVENTS_BUDGET_ALERT_PERCENT", .type = KEEL_CONFIG_UINT, .def = "80",
     AT(events_budget_alert_pct), .min = 1, .max = 1000,
     .help = "a cost entry that takes an event's spending past this percentage of its budget "
             "raises a budget alert (logged and audited)"},
    {.name = "AUDIT_EXPORT_MAX", .type = KEEL_CONFIG_UINT, .def = "10000", AT(audit_export_max),
     .min = 1, .max = 1000000,
     .help = "audit records per GET /api/v1/admin/audit/export response (a Link header "
             "points to the rest)"},
};
#undef AT

const keel_config_module app_config = KEEL_CONFIG_MODULE(
    "app",
    "The reference service: accounts, tokens, the user cache, demo routes, events and the "
    "audit log (src/app/config.c).",
    app_options, app_vars, app_validate);

const app_options *app_options_of(keel_service *svc)
{
    return keel_config_get(keel_service_config(svc), &app_config);
}
