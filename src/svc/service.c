/* service.c — keel_main: the CLI and the assembly of a standard service
 * (config, logs, middleware, health, metrics, drain). */
#include "keel/auth.h"
#include "keel/service.h"

#include <jansson.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "keel/keel.h"
#include "svc/svc_internal.h"

struct keel_service {
    const keel_app *app;
    keel_config cfg;
    keel_server *server;
    keel_metrics *metrics;
    keel_health *health;
    keel_runtime *runtime; /* loop lag per worker, pool figures */
    keel_db *db; /* when the app uses a database */
    keel_rate_limiter *limiter; /* owned by its middleware; NULL when off */
    keel_breakers *breakers;
    keel_redis *redis; /* REDIS_URL set; NULL: in-process fallbacks */
    keel_cache *cache; /* on redis, or in process */
    int redis_failed;  /* REDIS_URL could not be used (reported) */
    keel_locks *locks;   /* on Redis, or the in-process table */
    keel_events *events; /* on Redis, or in-process */
    keel_ws_metrics *ws_metrics;
    keel_jobs *jobs;     /* an app with use_jobs */
    keel_tracer *tracer; /* NULL: OTEL_SDK_DISABLED */
    keel_http_client *otlp_client; /* the exporter's; NULL: no endpoint */
    keel_route metric_routes[2];
    keel_validator *validator; /* the routes' schemas, compiled after setup */
    keel__svc_doc doc;         /* /openapi.json, built after setup */
    keel_route doc_routes[4];
};

keel_server *keel_service_server(keel_service *svc) { return svc->server; }
const keel_config *keel_service_config(keel_service *svc) { return &svc->cfg; }
keel_metrics *keel_service_metrics(keel_service *svc) { return svc->metrics; }
keel_health *keel_service_health(keel_service *svc) { return svc->health; }
keel_runtime *keel_service_runtime(keel_service *svc) { return svc->runtime; }
keel_db *keel_service_db(keel_service *svc) { return svc->db; }
keel_redis *keel_service_redis(keel_service *svc) { return svc->redis; }
keel_breakers *keel_service_breakers(keel_service *svc) { return svc->breakers; }
keel_cache *keel_service_cache(keel_service *svc) { return svc->cache; }
keel_locks *keel_service_locks(keel_service *svc) { return svc->locks; }
keel_events *keel_service_events(keel_service *svc) { return svc->events; }
keel_jobs *keel_service_jobs(keel_service *svc) { return svc->jobs; }

/* A worker has drained (SIGTERM): the runner fetches nothing more. */
static void jobs_worker_stop(keel_worker *w, void *arg)
{
    (void)w;
    keel_jobs_stop_fetching(arg);
}
keel_tracer *keel_service_tracer(keel_service *svc) { return svc->tracer; }

int keel_service_add_routes(keel_service *svc, const keel_route *routes, size_t n)
{
    return keel_server_add_routes(svc->server, routes, n);
}

int keel_service_use(keel_service *svc, const keel_middleware *mw)
{
    return keel_server_use(svc->server, mw);
}

int keel_service_use_auth(keel_service *svc, const keel_middleware *authn)
{
    int rc = keel_server_use(svc->server, authn);
    keel_middleware authz = keel_mw_authz();
    return rc < 0 ? rc : keel_server_use(svc->server, &authz);
}

int keel_service_add_format(keel_service *svc, const keel_schema_format *f)
{
    return keel_validator_add_format(svc->validator, f);
}

/* ---------------------------------------------------------------- metrics */

static keel_flow h_metrics(keel_req *r)
{
    keel_service *svc = keel_req_route(r)->data;
    keel_buf b = {0};
    keel_metrics_render(svc->metrics, &b);
    keel_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
    keel_buf_free(&b);
    return KEEL_DONE;
}

static keel_flow h_metrics_json(keel_req *r)
{
    keel_service *svc = keel_req_route(r)->data;
    keel_respond_json(r, 200, keel_metrics_json(svc->metrics));
    return KEEL_DONE;
}

#define STAT_FN(fname, field, scale)                                           \
    static double fname(void *arg)                                             \
    {                                                                          \
        keel_server_stats st;                                                  \
        keel_server_stats_get(arg, &st);                                       \
        return (double)st.field * (scale);                                     \
    }
STAT_FN(st_inflight, requests_in_flight, 1)
STAT_FN(st_conns, connections_open, 1)
STAT_FN(st_conns_total, connections_total, 1)
STAT_FN(st_bytes_in, bytes_in, 1)
STAT_FN(st_bytes_out, bytes_out, 1)
STAT_FN(st_queued, work_queued, 1)
STAT_FN(st_rejected, work_rejected, 1)
STAT_FN(st_lag, loop_lag_ms, 0.001)

static void register_server_metrics(keel_metrics *m, keel_server *s)
{
    keel_metrics_callback(m, "http_requests_in_flight", "Requests being processed",
                          KEEL_GAUGE, st_inflight, s);
    keel_metrics_callback(m, "http_connections_open", "Open client connections",
                          KEEL_GAUGE, st_conns, s);
    keel_metrics_callback(m, "http_connections_total", "Client connections accepted",
                          KEEL_COUNTER, st_conns_total, s);
    keel_metrics_callback(m, "http_bytes_received_total", "Bytes read from clients",
                          KEEL_COUNTER, st_bytes_in, s);
    keel_metrics_callback(m, "http_bytes_sent_total", "Bytes written to clients",
                          KEEL_COUNTER, st_bytes_out, s);
    keel_metrics_callback(m, "work_pool_queued", "Blocking jobs waiting for a pool thread",
                          KEEL_GAUGE, st_queued, s);
    keel_metrics_callback(m, "work_pool_rejected_total",
                          "Blocking jobs refused because the queue was full", KEEL_COUNTER,
                          st_rejected, s);
    keel_metrics_callback(m, "event_loop_lag_seconds",
                          "Largest recent event-loop lag across workers", KEEL_GAUGE, st_lag, s);
}

/* ---------------------------------------------------------------- checks */

/* Where the service keeps its data, for the disk check: the SQLite
 * database's directory, else the working directory. */
static const char *data_directory(const keel_app *app, const keel_config *cfg, char *buf,
                                  size_t cap)
{
    snprintf(buf, cap, ".");
    if (!app->use_database)
        return buf;
    const keel_db_options *o = keel_config_get(cfg, &keel_db_config);
    const char *u = o->database_url;
    if (!u || strncmp(u, "sqlite:", 7) != 0)
        return buf;
    u += 7;
    if (!strncmp(u, "//", 2))
        u += 2;
    const char *slash = strrchr(u, '/');
    if (slash && slash > u)
        snprintf(buf, cap, "%.*s", (int)(slash - u), u);
    else if (slash)
        snprintf(buf, cap, "/");
    return buf;
}

static int check_event_loop(void *arg, char *detail, size_t cap)
{
    keel_server_stats st;
    keel_server_stats_get(arg, &st);
    snprintf(detail, cap, "lag %llums", (unsigned long long)st.loop_lag_ms);
    return st.loop_lag_ms > 1000;
}

static int check_websocket(void *arg, char *detail, size_t cap)
{
    snprintf(detail, cap, "%llu connections", (unsigned long long)keel_ws_connections(arg));
    return 0;
}

static int check_load(void *arg, char *detail, size_t cap)
{
    return keel_shed_active(arg, detail, cap);
}

/* ---------------------------------------------------------------- API docs */

static const keel__asset *asset(const char *name)
{
    for (size_t i = 0; i < keel__web_assets_count; i++)
        if (!strcmp(keel__web_assets[i].name, name))
            return &keel__web_assets[i];
    return NULL;
}

/* GET /openapi.json and the viewer: /docs, /docs/docs.js, /docs/docs.css. */
static void add_doc_routes(keel_service *svc)
{
    unsigned internal = KEEL_ROUTE_INTERNAL;
    size_t n = 0;
    svc->doc_routes[n++] = (keel_route){.name = "docs.openapi", .method = "GET",
                                        .path = "/openapi.json", .handler = keel__svc_h_openapi,
                                        .summary = "This API as an OpenAPI 3.1 document",
                                        .flags = internal, .data = &svc->doc};
    static const struct {
        const char *name, *path, *file, *summary;
    } pages[] = {
        {"docs.page", "/docs", "index.html", "API documentation (renders /openapi.json)"},
        {"docs.script", "/docs/docs.js", "docs.js", "The documentation page's script"},
        {"docs.style", "/docs/docs.css", "docs.css", "The documentation page's style sheet"},
    };
    for (size_t i = 0; i < 3; i++) {
        const keel__asset *a = asset(pages[i].file);
        if (a)
            svc->doc_routes[n++] = (keel_route){.name = pages[i].name, .method = "GET",
                                                .path = pages[i].path,
                                                .handler = keel__svc_h_asset,
                                                .summary = pages[i].summary,
                                                .flags = internal, .data = (void *)a};
    }
    keel_server_add_routes(svc->server, svc->doc_routes, n);
}

/* Once every route is added: compiles their schemas (a bad one stops
 * start-up, naming the route) and builds the OpenAPI document. */
static int service_finish_routes(keel_service *svc, FILE *err)
{
    const keel_route *const *routes;
    size_t n = keel_server_routes(svc->server, &routes);
    char why[512];
    if (keel_validator_add_routes(svc->validator, routes, n, why, sizeof(why)) < 0) {
        fprintf(err, "%s: invalid schema: %s\n", svc->app->name ? svc->app->name : "keel",
                why);
        return KEEL_EINVAL;
    }
    /* every class of every route at 0 from the first scrape */
    keel_mw_http_metrics_declare_routes(svc->metrics, routes, n);
    keel_free(svc->doc.json);
    svc->doc.json = keel__svc_openapi_build(svc->app, svc->server, svc->validator,
                                            &svc->doc.len);
    return 0;
}

/* ---------------------------------------------------------------- build */

/* NULL when REDIS_URL is invalid (the reason is on stderr). */
static keel_service *service_new(const keel_app *app, const keel_config *cfg)
{
    keel_service *svc = keel_calloc(1, sizeof(*svc));
    svc->app = app;
    keel_config_copy(&svc->cfg, cfg);
    svc->server = keel_server_new(cfg);
    svc->metrics = keel_metrics_new(keel_server_workers(svc->server));
    svc->health = keel_health_new();
    keel_metrics_register_process(svc->metrics, app->version ? app->version : KEEL_VERSION);
    register_server_metrics(svc->metrics, svc->server);
    svc->ws_metrics = keel_ws_metrics_new(svc->metrics, svc->server);
    keel_health_check loop_check = {.name = "event_loop", .timeout_ms = 1000,
                                    .fn = check_event_loop, .arg = svc->server,
                                    .flags = KEEL_HEALTH_INLINE};
    keel_health_add(svc->health, &loop_check);
    svc->runtime = keel_runtime_new(svc->server, svc->metrics);
    char data_dir[512];
    keel_health_register_system(svc->health, svc->server,
                                keel_config_get(cfg, &keel_health_config),
                                data_directory(app, cfg, data_dir, sizeof(data_dir)));
    keel_health_register(svc->health, "websocket", 0, 1000, check_websocket, svc->server);
    svc->breakers = keel_breakers_new(svc->metrics);
    keel_breakers_register_health(svc->breakers, svc->health);
    const keel_redis_options *redis = keel_config_get(cfg, &keel_redis_config);
    const keel_edge_options *edge = keel_config_get(cfg, &keel_edge_config);
    const keel_rate_limit_options *rlo = keel_config_get(cfg, &keel_rate_limit_config);
    if (redis->redis_url && *redis->redis_url &&
        keel_redis_new(&svc->redis, svc->server, cfg, svc->metrics, svc->health,
                       svc->breakers) < 0)
        svc->redis_failed = 1;
    svc->cache = keel_cache_new(cfg, svc->redis, svc->metrics);
    svc->locks = keel_locks_new(svc->redis, svc->metrics);
    svc->events = keel_events_new(svc->server, svc->redis, cfg, svc->metrics);

    /* The tracer's worker hooks before its HTTP client's: a stopping
     * worker hands its last spans over before the client cancels calls. */
    svc->tracer = keel_tracer_new(svc->server, cfg, svc->metrics);
    if (svc->tracer && *keel_trace_export_url(keel_tracer_options(svc->tracer))) {
        keel_trace_exporter exp;
        /* own breaker (not in the registry): a collector down must not
         * make the service look degraded */
        if (keel_http_client_new(&svc->otlp_client, svc->server, cfg, svc->metrics, NULL) == 0 &&
            keel_otlp_exporter(&exp, svc->otlp_client, svc->tracer) == 0)
            keel_tracer_set_exporter(svc->tracer, &exp);
    }
    keel_middleware mw = keel_mw_request_id_traced(svc->tracer);
    keel_server_use(svc->server, &mw);
    if (cfg->access_log || cfg->slow_request_ms) {
        mw = keel_mw_access_log(cfg->access_log, cfg->slow_request_ms);
        keel_server_use(svc->server, &mw);
    }
    mw = keel_mw_http_metrics(svc->metrics);
    keel_server_use(svc->server, &mw);
    if (edge->security_headers) {
        mw = keel_mw_security_headers(cfg);
        keel_server_use(svc->server, &mw);
    }
    keel_shed *shed = keel_shed_new(cfg, svc->metrics);
    keel_health_register(svc->health, "load", 1, 1000, check_load, shed);
    mw = keel_mw_shed(shed);
    keel_server_use(svc->server, &mw);
    if (edge->cors_origin && *edge->cors_origin) {
        mw = keel_mw_cors(cfg);
        keel_server_use(svc->server, &mw);
    }
    /* Switched off, the limiter stays installed without enforcing, so the
     * routes' tiers are still declared and checked at start-up. */
    if (rlo->rate_limit) {
        /* with Redis, limits hold across every instance sharing it */
        keel_rl_store store = svc->redis ? keel_rl_redis_store(svc->redis)
                                         : keel_rl_memory_store(rlo->rate_limit_max_keys);
        svc->limiter = keel_rate_limiter_new(cfg, store, svc->metrics);
        mw = keel_mw_rate_limit(svc->limiter);
    } else {
        svc->limiter = keel_rate_limiter_new(cfg, keel_rl_memory_store(1), NULL);
        mw = keel_mw_rate_limit_off(svc->limiter);
    }
    keel_server_use(svc->server, &mw);
    if (edge->compression) {
        mw = keel_mw_compress(edge->compression_min_bytes);
        keel_server_use(svc->server, &mw);
    }
    /* Each middleware runs in its declared phase (keel/server.h), whatever
     * else is installed: validation after authentication, the limiter and
     * RBAC (a request that will be refused anyway is not parsed). Its
     * schemas are compiled once setup has added the routes. */
    svc->validator = keel_validator_new();
    mw = keel_mw_validate(svc->validator);
    keel_server_use(svc->server, &mw);

    const keel_route *hr;
    size_t nh = keel_health_routes(svc->health, &hr);
    keel_server_add_routes(svc->server, hr, nh);
    unsigned internal = KEEL_ROUTE_INTERNAL;
    svc->metric_routes[0] = (keel_route){.name = "metrics", .method = "GET",
                                         .path = "/metrics", .handler = h_metrics,
                                         .summary = "Prometheus metrics",
                                         .flags = internal, .data = svc};
    svc->metric_routes[1] = (keel_route){.name = "metrics.json", .method = "GET",
                                         .path = "/metrics/json", .handler = h_metrics_json,
                                         .summary = "Metrics as JSON",
                                         .flags = internal, .data = svc};
    keel_server_add_routes(svc->server, svc->metric_routes, 2);
    if (cfg->api_docs)
        add_doc_routes(svc);
    return svc;
}

static void service_free(keel_service *svc)
{
    if (!svc)
        return;
    if (svc->app->teardown)
        svc->app->teardown(svc, svc->app->arg);
    keel_jobs_free(svc->jobs); /* stopped already; before the database */
    keel_events_free(svc->events); /* joins its subscriber: before the workers go */
    keel_server_free(svc->server);
    keel_ws_metrics_free(svc->ws_metrics); /* after the workers */
    keel_tracer_free(svc->tracer);         /* after the workers are gone */
    keel_http_client_free(svc->otlp_client);
    keel_locks_free(svc->locks);
    keel_validator_free(svc->validator); /* after the workers are gone */
    keel_free(svc->doc.json);
    keel_db_close(svc->db); /* after the pool threads are gone */
    keel_cache_free(svc->cache); /* after the workers: no fetch in flight */
    keel_redis_free(svc->redis); /* after the workers closed their connections */
    keel_breakers_free(svc->breakers);
    keel_runtime_free(svc->runtime); /* after the workers: their timers are closed */
    keel_health_free(svc->health);
    keel_metrics_free(svc->metrics);
    keel_config_close(&svc->cfg);
    keel_free(svc);
}

void keel_service_print_routes(keel_service *svc, FILE *out)
{
    const keel_route *const *routes;
    size_t n = keel_server_routes(svc->server, &routes);
    fprintf(out, "%-8s %-28s %-20s %-10s %-14s %-10s %-8s %s\n", "METHOD", "PATH", "NAME",
            "AUTH", "PERMISSION", "TIER", "TIMEOUT", "KIND");
    for (size_t i = 0; i < n; i++) {
        const keel_route *r = routes[i];
        char tmo[32];
        if (r->timeout_ms)
            snprintf(tmo, sizeof(tmo), "%ums", r->timeout_ms);
        else
            snprintf(tmo, sizeof(tmo), "default");
        fprintf(out, "%-8s %-28s %-20s %-10s %-14s %-10s %-8s %s\n", r->method, r->path,
                r->name ? r->name : "-", r->auth ? r->auth : "none",
                r->permission ? r->permission : "-",
                (r->flags & KEEL_ROUTE_INTERNAL) ? "exempt"
                : r->rate_limit                  ? r->rate_limit
                                                 : "general",
                tmo, r->websocket ? "websocket" : "http");
    }
}

/* ---------------------------------------------------------------- CLI */

static void usage(const keel_app *app, FILE *out)
{
    const char *n = app->name ? app->name : "keel";
    fprintf(out,
            "Usage: %s <command> [options]\n\n"
            "Commands:\n"
            "  serve [--port N] [--env-file F] [--print-config] [--upgrade]\n"
            "                 start the service (configuration from the environment\n"
            "                 and .env; see docs/configuration.md); --upgrade takes\n"
            "                 over the port from the process in PID_FILE, which drains\n"
            "  routes         print the route table\n"
            "  openapi        print the OpenAPI 3.1 document of the routes\n"
            "  version        print the version\n"
            "  config         print every configuration variable as markdown tables\n"
            "  healthcheck [PATH]\n"
            "                 GET PATH (default /health/live) of the service on HOST:PORT;\n"
            "                 exit 0 on 2xx (container HEALTHCHECKs without curl)\n",
            n);
    if (app->use_database)
        keel__svc_migrate_usage(out);
    if (app->use_database && app->use_jobs)
        keel__svc_jobs_usage(out);
    fprintf(out, "%s  help           this text\n", app->usage ? app->usage : "");
}

/* SIGHUP: the configuration again (the env file read anew), then what
 * may change at run time applied; an invalid one changes nothing. */
typedef struct hup_ctx {
    const keel_config_module *const *mods;
    size_t nmods;
    const char *env_file;
} hup_ctx;

static void on_hup(keel_server *s, void *arg)
{
    const hup_ctx *h = arg;
    keel_config next;
    char *why = NULL;
    size_t why_len = 0;
    FILE *err = open_memstream(&why, &why_len);
    int rc = keel_config_reload_modules(&next, h->mods, h->nmods, h->env_file, err);
    if (err)
        fclose(err);
    if (rc < 0) {
        size_t n = why ? strlen(why) : 0;
        while (n && why[n - 1] == '\n')
            why[--n] = '\0';
        keel_log(KEEL_LOG_ERROR, "reload refused: the configuration is invalid; nothing changed",
                 "{s:s}", "error", why ? why : "");
    } else {
        keel_server_reload(s, &next); /* logs "reload done" */
    }
    free(why);
    keel_config_close(&next);
}

int keel_main(int argc, char **argv, const keel_app *app)
{
    keel_library_init();
    const char *cmd = argc > 1 ? argv[1] : "help";
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(app, stdout);
        return 0;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("%s %s (keel %s)\n", app->name ? app->name : "keel",
               app->version ? app->version : KEEL_VERSION, KEEL_VERSION);
        return 0;
    }
    const keel_config_module *mods[KEEL__SVC_MAX_CONFIG_MODULES];
    size_t nmods = keel__svc_config_modules(app, mods);
    if (!strcmp(cmd, "config")) {
        keel_config_doc(mods, nmods, stdout);
        return 0;
    }
    if (!strcmp(cmd, "migrate") && app->use_database)
        return keel__svc_migrate_main(app, argc, argv);
    if (!strcmp(cmd, "jobs") && app->use_database && app->use_jobs)
        return keel__svc_jobs_main(app, argc, argv);
    const char *env_file = NULL, *port = NULL;
    int print_config = 0, upgrade = 0;
    int is_serve = !strcmp(cmd, "serve") || !strcmp(cmd, "routes") || !strcmp(cmd, "openapi");
    for (int i = 2; is_serve && i < argc; i++) {
        if (!strcmp(argv[i], "--print-config")) {
            print_config = 1;
        } else if (!strcmp(argv[i], "--upgrade") && !strcmp(cmd, "serve")) {
            upgrade = 1;
        } else if (!strcmp(argv[i], "--port") && i + 1 < argc) {
            port = argv[++i];
        } else if (!strncmp(argv[i], "--port=", 7)) {
            port = argv[i] + 7;
        } else if (!strcmp(argv[i], "--env-file") && i + 1 < argc) {
            env_file = argv[++i];
        } else {
            fprintf(stderr, "%s: unknown option %s\n", app->name ? app->name : "keel", argv[i]);
            usage(app, stderr);
            return 2;
        }
    }
    if (port)
        setenv("PORT", port, 1);
    keel_config cfg;
    /* every variable, then every module's checks (TRUST_PROXY, tiers ...) */
    if (keel_config_load_modules(&cfg, mods, nmods, env_file, stderr) < 0) {
        keel_config_close(&cfg);
        return 2;
    }
    if (print_config) {
        keel_config_print(&cfg, stdout);
        keel_config_close(&cfg);
        return 0;
    }
    if (!strcmp(cmd, "healthcheck")) {
        int rc = argc > 3 ? 2 : keel__svc_healthcheck(&cfg, argc > 2 ? argv[2] : NULL, stdout);
        if (argc > 3)
            fprintf(stderr, "usage: %s healthcheck [PATH]\n", app->name ? app->name : "keel");
        keel_config_close(&cfg);
        return rc;
    }
    if (strcmp(cmd, "serve") != 0)
        keel_log_set_fd(STDERR_FILENO); /* a command's stdout is its output */
    if (keel_log_init(&cfg) < 0) {
        keel_config_close(&cfg);
        return 2;
    }
    /* Fewer malloc arenas than glibc's 8 per core, set before any thread
     * exists: the work pools' jobs hop between threads, and an arena per
     * thread keeps what each freed (docs/configuration.md). */
    if (!strcmp(cmd, "serve") && !getenv("MALLOC_ARENA_MAX")) {
        unsigned n = cfg.malloc_arenas;
        if (!n)
            n = (cfg.workers ? cfg.workers : uv_available_parallelism()) + 1;
        mallopt(M_ARENA_MAX, (int)n);
    }
    /* Password hashing in its own process (keel/auth.h): forked here,
     * while this process has one thread. */
    if (!strcmp(cmd, "serve") && cfg.password_process) {
        int prc = keel_password_isolate(cfg.work_threads, cfg.work_nice);
        if (prc < 0)
            keel_log(KEEL_LOG_WARN, "passwords are hashed in process", "{s:s}", "reason",
                     keel_strerror(prc));
    }
    /* The schema first: nothing listens before it is what the code expects. */
    if (!strcmp(cmd, "serve") && app->use_database &&
        ((const keel_db_options *)keel_config_get(&cfg, &keel_db_config))->migrate_on_start &&
        keel__svc_migrate_on_start(app, &cfg) < 0) {
        keel_log_close();
        keel_config_close(&cfg);
        return 1;
    }
    keel_service *svc = service_new(app, &cfg);
    int status = 0;
    int listing = !strcmp(cmd, "routes") || !strcmp(cmd, "openapi");
    if (svc->redis_failed) {
        status = 2;
        goto done;
    }
    if (app->use_database && !listing &&
        keel_db_open(&svc->db, svc->server, &cfg, svc->metrics, svc->health) < 0) {
        status = 2; /* the reason is logged */
        goto done;
    }
    if (app->use_database && app->use_jobs) { /* also for `routes`: setup registers handlers */
        const keel_db_options *dbo = keel_config_get(&cfg, &keel_db_config);
        if (keel_jobs_new(&svc->jobs, dbo->database_url, &cfg, svc->metrics) < 0) {
            status = 2; /* the reason is logged */
            goto done;
        }
    }
    if (app->setup && app->setup(svc, app->arg) < 0) {
        keel_log(KEEL_LOG_FATAL, "service setup failed", NULL);
        status = 1;
        goto done;
    }
    if (svc->jobs) { /* after setup: the handlers the schedules name are registered */
        const keel_cron_options *co = keel_config_get(&cfg, &keel_cron_config);
        char why[300];
        if (co->jobs && *co->jobs &&
            keel_jobs_schedule_spec(svc->jobs, co->jobs, why, sizeof(why)) < 0) {
            fprintf(stderr, "keel: CRON_JOBS: %s\n", why);
            status = 2;
            goto done;
        }
    }
    /* Routes fail closed: a declaration nothing enforces stops start-up. */
    if (keel_server_check_routes(svc->server, stderr) > 0) {
        status = 2;
        goto done;
    }
    if ((!strcmp(cmd, "serve") || listing) && service_finish_routes(svc, stderr) < 0) {
        status = 1;
        goto done;
    }
    if (!strcmp(cmd, "routes")) {
        keel_service_print_routes(svc, stdout);
    } else if (!strcmp(cmd, "openapi")) {
        printf("%s\n", svc->doc.json);
    } else if (!strcmp(cmd, "serve")) {
        hup_ctx hup = {.mods = mods, .nmods = nmods, .env_file = env_file};
        keel_server_on_hup(svc->server, on_hup, &hup);
        if (upgrade) {
            long old = keel__svc_upgrade_from(&cfg, stderr);
            if (old <= 0) {
                status = 2;
                goto done;
            }
            keel_server_take_over(svc->server, old);
        }
        keel_log(KEEL_LOG_INFO, "starting", "{s:s,s:s}", "version",
                 app->version ? app->version : KEEL_VERSION, "env", cfg.env);
        const keel_jobs_options *jo =
            svc->jobs ? keel_config_get(&cfg, &keel_jobs_config) : NULL;
        if (jo && jo->enabled) {
            if (keel_jobs_start(svc->jobs) < 0) {
                keel_log(KEEL_LOG_FATAL, "the job runner could not start", NULL);
                status = 1;
                goto done;
            }
            keel_worker_hooks hooks = {.on_stop = jobs_worker_stop, .arg = svc->jobs};
            keel_server_add_worker_hooks(svc->server, &hooks);
        }
        status = keel_server_run(svc->server);
        if (jo && jo->enabled)
            keel_jobs_stop(svc->jobs, jo->shutdown_grace_ms);
        if (status == 0)
            keel_tracer_shutdown(svc->tracer); /* the last spans, bounded */
        if (status != 0 && keel_server_get_state(svc->server) == KEEL_STATE_DRAINING) {
            /* grace expired: worker threads may still be running and use
             * the service, so it is not freed; the process exits next */
            keel_log_flush();
            keel_config_close(&cfg);
            return status;
        }
    } else {
        int rc = app->command ? app->command(svc, cmd, argc, argv, app->arg) : -1;
        if (rc < 0) {
            fprintf(stderr, "%s: unknown command \"%s\"\n", app->name ? app->name : "keel", cmd);
            usage(app, stderr);
            status = 2;
        } else {
            status = rc;
        }
    }
done:
    service_free(svc);
    keel_log_close();
    keel_config_close(&cfg);
    return status;
}
