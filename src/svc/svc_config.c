/* svc_config.c — which configuration modules a service registers: keel's
 * own for what keel_main sets up (edge middleware, rate limits, Redis,
 * cache, breakers, instance identity; the database only for an app with
 * .use_database), then the app's. `config`, --print-config and start-up
 * validation list exactly these, so a service on libkeel shows only the
 * variables of the modules it uses. */
#include "svc/svc_internal.h"

#include "keel/keel.h"

size_t keel__svc_config_modules(const keel_app *app, const keel_config_module **out)
{
    size_t n = 0;
    out[n++] = &keel_edge_config;
    out[n++] = &keel_rate_limit_config;
    if (app->use_database)
        out[n++] = &keel_db_config;
    if (app->use_database && app->use_jobs) {
        out[n++] = &keel_jobs_config;
        out[n++] = &keel_cron_config; /* CRON_JOBS: the runner's schedules */
    }
    out[n++] = &keel_redis_config;
    out[n++] = &keel_cache_config;
    out[n++] = &keel_breaker_config;
    out[n++] = &keel_instance_config;
    out[n++] = &keel_ws_config;
    out[n++] = &keel_health_config;
    out[n++] = &keel_trace_config;
    for (size_t i = 0; i < app->nconfig_modules && n < KEEL__SVC_MAX_CONFIG_MODULES; i++)
        out[n++] = app->config_modules[i];
    return n;
}
