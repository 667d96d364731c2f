/* svc_internal.h — what keel_main (service.c) calls in the other files of
 * src/svc. Never installed. */
#ifndef KEEL_SVC_INTERNAL_H
#define KEEL_SVC_INTERNAL_H

#include <stdio.h>

#include "keel/mw.h"
#include "keel/service.h"

/* The configuration modules of app's service (svc_config.c): core's are
 * implied; then the edge middleware, rate limits, Redis, cache, breakers,
 * instance, the database when app->use_database, and app->config_modules.
 * Fills out (KEEL__SVC_MAX_CONFIG_MODULES entries) and returns the count. */
#define KEEL__SVC_MAX_CONFIG_MODULES 64
size_t keel__svc_config_modules(const keel_app *app, const keel_config_module **out);

/* `PROG migrate ...` (argv[1] is "migrate"): loads the configuration
 * itself (--env-file F is accepted) and returns the exit status: 0, 1 when
 * a migration failed or was refused (one log line says why), 2 for usage
 * or configuration errors. */
int keel__svc_migrate_main(const keel_app *app, int argc, char **argv);
/* `jobs list|retry|cancel|pause|resume` (src/svc/jobs_cmd.c). */
int keel__svc_jobs_main(const keel_app *app, int argc, char **argv);
void keel__svc_jobs_usage(FILE *out);

/* Applies the app's pending migrations before `serve` listens. 0 or a
 * negative error, already logged. */
int keel__svc_migrate_on_start(const keel_app *app, const keel_config *cfg);

/* `PROG healthcheck [PATH]` (healthcheck.c): GET PATH (default
 * /health/live) of the service on this host's HOST/PORT; 0 on 2xx, 1
 * otherwise (one line on out says what was seen), 2 for a bad PATH. */
int keel__svc_healthcheck(const keel_config *cfg, const char *path, FILE *out);

/* `serve --upgrade`: the process id in PID_FILE, when that process is
 * alive; else one line on err and -1. */
long keel__svc_upgrade_from(const keel_config *cfg, FILE *err);

/* The migrate lines of --help. */
void keel__svc_migrate_usage(FILE *out);

/* The OpenAPI 3.1 document of every route of s (see openapi.c) as
 * compact JSON text, NUL-terminated, keel_malloc'd; *len its length. */
char *keel__svc_openapi_build(const keel_app *app, keel_server *s, const keel_validator *v,
                              size_t *len);

/* The document as served: route data of GET /openapi.json. */
typedef struct keel__svc_doc {
    char *json;
    size_t len;
} keel__svc_doc;
keel_flow keel__svc_h_openapi(keel_req *r);

/* A file of web/ compiled into the binary (build/gen/web_assets.c, from
 * scripts/embed_web.sh): route data of the /docs routes, served by
 * keel__svc_h_asset (an HTML page gets the viewer's own CSP). */
typedef struct keel__asset {
    const char *name;         /* "index.html", "docs.js", ... */
    const char *content_type;
    const char *data;
    size_t len;
} keel__asset;
extern const keel__asset keel__web_assets[];
extern const size_t keel__web_assets_count;
keel_flow keel__svc_h_asset(keel_req *r);

#endif
