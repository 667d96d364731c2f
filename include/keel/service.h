/* keel/service.h — a whole service in one call: CLI, configuration, logs,
 * the standard middleware, health and metrics routes, graceful drain.
 *
 *     static int setup(keel_service *svc, void *arg) {
 *         return keel_service_add_routes(svc, routes, NROUTES);
 *     }
 *     int main(int argc, char **argv) {
 *         keel_app app = {.name = "hello", .version = "1.0", .setup = setup};
 *         return keel_main(argc, argv, &app);
 *     }
 *
 * gives `hello serve [--print-config] [--port N]`, `hello routes`,
 * `hello version` and `hello --help`, with keel's config, JSON logs,
 * request ids, access log, /metrics, /health/... and SIGTERM drain. With
 * .use_database and .migrations it also gives `hello migrate ...` and
 * applies migrations on start (docs/migrations.md).
 */
#ifndef KEEL_SERVICE_H
#define KEEL_SERVICE_H

#include "health.h"
#include "metrics.h"
#include "migrate.h"
#include "server.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_service keel_service;

typedef struct keel_app {
    const char *name;    /* program name in usage and logs */
    const char *version;
    /* Adds the application's routes and middleware. 0, or a negative
     * error to stop start-up (exit 1). */
    int (*setup)(keel_service *svc, void *arg);
    /* Extra CLI commands: return an exit status, or -1 when `cmd` is not
     * one of the app's (keel then reports an unknown command). */
    int (*command)(keel_service *svc, const char *cmd, int argc, char **argv,
                   void *arg);
    /* Extra lines for --help (may be NULL). */
    const char *usage;
    /* Called after the server stopped, to release what setup made. */
    void (*teardown)(keel_service *svc, void *arg);
    void *arg;
    /* The service has a database (DATABASE_URL): `migrate up|down [N]|
     * status|create NAME` become commands, and `serve` applies pending
     * migrations before it listens unless MIGRATE_ON_START=false (a
     * failure stops start-up with exit status 1). */
    int use_database;
    /* The migrations compiled into the binary (both drivers; see
     * scripts/embed_migrations.sh); MIGRATIONS_DIR replaces them. */
    const keel_migration *migrations;
    size_t nmigrations;
    /* The application's own configuration modules (keel/config.h), loaded
     * with keel's: they appear in `config`, --print-config and start-up
     * validation; read them with keel_config_get(keel_service_config(svc),
     * module). See docs/extending.md. */
    const keel_config_module *const *config_modules;
    size_t nconfig_modules;
    /* With use_database: the service has a job queue (keel/jobs.h). The
     * JOBS_* variables join the configuration, `jobs list|retry|cancel|
     * pause|resume` becomes a command, keel_service_jobs() is the runner
     * (register handlers in setup), and `serve` starts it after setup
     * (installing the keel_jobs table if missing, so no migration of the
     * app's own is needed) unless JOBS_ENABLED=false; SIGTERM stops its
     * fetching and waits JOBS_SHUTDOWN_GRACE for running jobs. */
    int use_jobs;
} keel_app;

/* Runs the CLI; returns the process exit status. */
int keel_main(int argc, char **argv, const keel_app *app);

keel_server *keel_service_server(keel_service *svc);
const keel_config *keel_service_config(keel_service *svc);
keel_metrics *keel_service_metrics(keel_service *svc);
keel_health *keel_service_health(keel_service *svc);
/* Loop lag per worker and work-pool figures (keel/runtime.h). */
struct keel_runtime;
struct keel_runtime *keel_service_runtime(keel_service *svc);
/* The database pool (DATABASE_URL) of an app with .use_database, opened
 * before setup runs; NULL otherwise (and for `routes`). */
struct keel_db;
struct keel_db *keel_service_db(keel_service *svc);
/* The job runner of an app with .use_jobs (keel/jobs.h), made before
 * setup runs (register handlers there); NULL otherwise. Enqueue with
 * keel_job_enqueue on any connection of keel_service_db's. */
struct keel_jobs;
struct keel_jobs *keel_service_jobs(keel_service *svc);
/* The Redis client when REDIS_URL is set (keel/redis.h), else NULL: use
 * the in-process fallbacks. */
struct keel_redis;
struct keel_redis *keel_service_redis(keel_service *svc);
/* The service's cache (keel/cache.h): on Redis when REDIS_URL is set,
 * else in process; shared by every worker. */
struct keel_cache;
struct keel_cache *keel_service_cache(keel_service *svc);
/* Locks (keel/lock.h) and the event bus (keel/events.h): on Redis when
 * REDIS_URL is set, else in-process. Subscribe in setup. */
struct keel_locks;
struct keel_locks *keel_service_locks(keel_service *svc);
struct keel_events;
struct keel_events *keel_service_events(keel_service *svc);
/* The service's circuit breakers (keel/resil.h): add your own to it. */
struct keel_breakers;
struct keel_breakers *keel_service_breakers(keel_service *svc);
/* The tracer (keel/trace.h; NULL when OTEL_SDK_DISABLED): spans, the
 * recent traces of /api/v1/admin/traces. */
struct keel_tracer *keel_service_tracer(keel_service *svc);

/* keel_server_add_routes / keel_server_use on the service's server: a
 * middleware runs in its declared phase (an application's own default to
 * KEEL_PHASE_APP: after keel's standard ones, right before the handler).
 * Routes fail closed: a route declaring auth, permission, a schema or a
 * rate-limit tier that no installed middleware enforces stops start-up
 * (exit 2, one line naming the route). */
int keel_service_add_routes(keel_service *svc, const keel_route *routes, size_t n);
int keel_service_use(keel_service *svc, const keel_middleware *mw);
/* Installs an authentication middleware (keel_mw_auth, phase AUTHN) and
 * keel's authorization (keel_mw_authz, phase AUTHZ) that enforces the
 * routes' `permission`. */
int keel_service_use_auth(keel_service *svc, const keel_middleware *authn);

/* Adds a string format of the application's own to the schemas of every
 * route (keel/schema.h; keel_password_format in keel/mw.h): call it in
 * setup — the routes' schemas are compiled after setup returns. Returns
 * keel_validator_add_format's answer. */
struct keel_schema_format;
int keel_service_add_format(keel_service *svc, const struct keel_schema_format *f);

/* Prints the route table as `keel routes` does. */
void keel_service_print_routes(keel_service *svc, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
