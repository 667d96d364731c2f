/* admin_ops.c — operations endpoints (Spring Boot Actuator's loggers, env,
 * info, mappings and a per-worker view), admin only (an admin user or an
 * API key with admin:access):
 *
 *   GET /api/v1/admin/loggers   root and per-module log levels
 *   PUT /api/v1/admin/loggers   {"module": "store.redis", "level": "debug"}
 *                               (level "inherit" drops a module's own level;
 *                               no module, or "root": LOG_LEVEL at run time)
 *   GET /api/v1/admin/config    the effective configuration by module,
 *                               secrets redacted, with where each value came from
 *   GET /api/v1/admin/info      build (version, git revision, compiler, time)
 *                               and every linked library's version
 *   GET /api/v1/admin/routes    the route table: method, path, auth,
 *                               permission, rate-limit tier, timeout
 *   GET /api/v1/admin/workers   per worker: loop lag, connections,
 *                               in-flight and served requests; the pools
 */
#include <curl/curl.h>
#include <dlfcn.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include <zlib.h>

#include "app/app.h"
#include "app/build_info.h"

static struct {
    keel_service *svc;
} O;

/* ---------------------------------------------------------------- loggers */

static keel_flow loggers_get(keel_req *r)
{
    json_t *o = keel_log_levels_json();
    json_object_set_new(o, "levels", json_pack("[s,s,s,s,s,s]", "trace", "debug", "info",
                                               "warn", "error", "fatal"));
    keel_res_set_header(r, "Cache-Control", "no-store");
    keel_respond_json(r, 200, o);
    return KEEL_DONE;
}

static keel_flow loggers_put(keel_req *r)
{
    json_t *body = keel_req_json(r);
    const char *module = json_string_value(json_object_get(body, "module"));
    const char *lv = json_string_value(json_object_get(body, "level"));
    int root = !module || !*module || !strcmp(module, "root");
    int level = lv && !strcmp(lv, "inherit") ? -1 : keel_log_level_parse(lv);
    if (level == -1 && !(lv && !strcmp(lv, "inherit"))) {
        app_invalid(r, "/level", "must be one of trace, debug, info, warn, error, fatal "
                                 "(or inherit, for a module)");
        return KEEL_DONE;
    }
    if (root && level < 0) {
        app_invalid(r, "/level", "the root level cannot inherit");
        return KEEL_DONE;
    }
    int rc = keel_log_set_level(root ? NULL : module, level);
    if (rc == KEEL_EINVAL) {
        app_invalid(r, "/module", "must be a dotted module name: a-z 0-9 _ . - (at most 63)");
        return KEEL_DONE;
    }
    if (rc == KEEL_EBUSY) {
        keel_respond_problem(r, 409, "too many module levels are set; reset one to inherit");
        return KEEL_DONE;
    }
    keel_log(KEEL_LOG_WARN, "log level changed", "{s:s,s:s}", "module",
             root ? "root" : module, "level", level < 0 ? "inherit" : keel_log_level_name(level));
    return loggers_get(r);
}

/* ---------------------------------------------------------------- config */

typedef struct cfg_walk {
    json_t *modules; /* array */
    json_t *values;  /* NAME -> printed value */
    const keel_config_module *cur;
    json_t *cur_vars;
} cfg_walk;

static void each_var(const keel_config_module *m, const keel_config_var *v, void *arg)
{
    cfg_walk *w = arg;
    if (m != w->cur) {
        w->cur = m;
        w->cur_vars = json_array();
        json_array_append_new(w->modules, json_pack("{s:s,s:s,s:o}", "name", m->name, "doc",
                                                    m->doc ? m->doc : "", "variables",
                                                    w->cur_vars));
    }
    json_t *val = json_object_get(w->values, v->name);
    int secret = (v->flags & KEEL_CONFIG_SECRET) != 0;
    json_array_append_new(
        w->cur_vars,
        json_pack("{s:s,s:O,s:s,s:b,s:s,s:s}", "name", v->name, "value",
                  val ? val : json_null(), "default",
                  secret && v->def && *v->def ? "[REDACTED]" : v->def ? v->def : "", "secret",
                  secret, "source", getenv(v->name) ? "environment" : "default", "help",
                  v->help ? v->help : ""));
}

static keel_flow config_get(keel_req *r)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        keel_respond_problem(r, 500, "out of memory");
        return KEEL_DONE;
    }
    /* the registry's own printing: secrets and URL passwords redacted */
    keel_config_print(keel_service_config(O.svc), f);
    fclose(f);
    cfg_walk w = {.modules = json_array(), .values = json_object()};
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        json_object_set_new(w.values, line, json_string(eq + 1));
    }
    free(text);
    keel_config_each(keel_service_config(O.svc), each_var, &w);
    json_decref(w.values);
    keel_res_set_header(r, "Cache-Control", "no-store");
    keel_respond_json(r, 200, json_pack("{s:o}", "modules", w.modules));
    return KEEL_DONE;
}

/* ---------------------------------------------------------------- info */

/* A library keel loads at run time (libpq, libjwt): its version when it is
 * loaded in this process, without loading it. */
static json_t *loaded_lib(const char *soname, const char *version_fn)
{
    void *h = dlopen(soname, RTLD_NOW | RTLD_NOLOAD);
    if (!h)
        return json_pack("{s:s,s:b}", "library", soname, "loaded", 0);
    json_t *o = json_pack("{s:s,s:b}", "library", soname, "loaded", 1);
    if (version_fn) {
        int (*fn)(void) = (int (*)(void))dlsym(h, version_fn);
        if (fn) {
            int v = fn(); /* PQlibVersion: 150005 -> 15.5 */
            char buf[32];
            snprintf(buf, sizeof(buf), "%d.%d", v / 10000, v % 10000);
            json_object_set_new(o, "version", json_string(buf));
        }
    }
    dlclose(h);
    return o;
}

static keel_flow info_get(keel_req *r)
{
    const curl_version_info_data *cv = curl_version_info(CURLVERSION_NOW);
    char hiredis[32];
    snprintf(hiredis, sizeof(hiredis), "%d.%d.%d", HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
    json_t *libs = json_pack(
        "{s:s,s:s,s:s,s:s,s:s,s:s,s:{s:s,s:s},s:o,s:o}", "libuv", uv_version_string(),
        "jansson", jansson_version_str(), "sqlite", sqlite3_libversion(), "zlib", zlibVersion(),
        "libsodium", sodium_version_string(), "hiredis", hiredis, "libcurl", "version",
        cv->version, "ssl", cv->ssl_version ? cv->ssl_version : "none", "libpq",
        loaded_lib("libpq.so.5", "PQlibVersion"), "libjwt", loaded_lib("libjwt.so.0", NULL));
    const keel_config *cfg = keel_service_config(O.svc);
    json_t *o = json_pack("{s:{s:s,s:s,s:s,s:b,s:s,s:s},s:{s:s,s:s,s:i},s:o}", "build",
                          "version", KEEL_VERSION, "git_revision", app_build_git_revision,
                          "git_branch", app_build_git_branch, "git_dirty", app_build_git_dirty,
                          "time", app_build_time, "compiler", __VERSION__, "service", "name",
                          cfg->service_name ? cfg->service_name : "keel", "env", cfg->env,
                          "workers", (int)keel_server_workers(keel_service_server(O.svc)),
                          "libraries", libs);
    keel_respond_json(r, 200, o);
    return KEEL_DONE;
}

/* ---------------------------------------------------------------- routes */

static keel_flow routes_get(keel_req *r)
{
    const keel_route *const *routes;
    size_t n = keel_server_routes(keel_service_server(O.svc), &routes);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        const keel_route *rt = routes[i];
        const char *auth = keel_route_auth(rt);
        json_t *o = json_pack(
            "{s:s,s:s,s:s,s:s,s:s,s:s,s:b}", "method", rt->method, "path", rt->path, "name",
            rt->name ? rt->name : "", "summary", rt->summary ? rt->summary : "", "auth",
            auth ? auth : "none", "tier",
            (rt->flags & KEEL_ROUTE_INTERNAL) ? "exempt"
            : rt->rate_limit                  ? rt->rate_limit
                                              : "general",
            "internal", (rt->flags & KEEL_ROUTE_INTERNAL) != 0);
        json_object_set_new(o, "permission",
                            rt->permission ? json_string(rt->permission) : json_null());
        json_object_set_new(o, "timeout_ms", rt->timeout_ms ? json_integer(rt->timeout_ms)
                                                            : json_null());
        json_object_set_new(o, "validates",
                            json_pack("{s:b,s:b,s:b}", "body", rt->request_schema != NULL,
                                      "query", rt->query_schema != NULL, "params",
                                      rt->params_schema != NULL));
        json_array_append_new(a, o);
    }
    keel_respond_json(r, 200, json_pack("{s:I,s:o}", "count", (json_int_t)n, "routes", a));
    return KEEL_DONE;
}

/* ---------------------------------------------------------------- workers */

static keel_flow workers_get(keel_req *r)
{
    keel_runtime *rt = keel_service_runtime(O.svc);
    keel_server_stats st;
    keel_server_stats_get(keel_service_server(O.svc), &st);
    json_t *o = json_pack("{s:o,s:o,s:{s:I,s:I,s:I,s:I}}", "workers",
                          keel_runtime_workers_json(rt), "pools", keel_runtime_pools_json(rt),
                          "total", "connections_open", (json_int_t)st.connections_open,
                          "requests_in_flight", (json_int_t)st.requests_in_flight,
                          "requests_total", (json_int_t)st.requests_total, "loop_lag_ms",
                          (json_int_t)st.loop_lag_ms);
    keel_res_set_header(r, "Cache-Control", "no-store");
    keel_respond_json(r, 200, o);
    return KEEL_DONE;
}

/* ---------------------------------------------------------------- routes */

static const char loggers_schema[] =
    "{\"type\": \"object\", \"required\": [\"level\"], \"additionalProperties\": false,"
    " \"properties\": {"
    "   \"module\": {\"type\": \"string\", \"maxLength\": 63},"
    "   \"level\": {\"type\": \"string\", \"maxLength\": 16}}}";

#define OPS .auth = "any", .permission = "admin:access"

static const keel_route ops_routes[] = {
    {.name = "admin.loggers", .method = "GET", .path = "/api/v1/admin/loggers",
     .handler = loggers_get, .summary = "Root and per-module log levels", OPS},
    {.name = "admin.loggers_set", .method = "PUT", .path = "/api/v1/admin/loggers",
     .handler = loggers_put, .summary = "Sets a module's (or the root) log level at run time",
     .request_schema = loggers_schema, OPS},
    {.name = "admin.config", .method = "GET", .path = "/api/v1/admin/config",
     .handler = config_get, .summary = "The effective configuration, secrets redacted", OPS,
     .flags = KEEL_ROUTE_SECRET},
    {.name = "admin.info", .method = "GET", .path = "/api/v1/admin/info", .handler = info_get,
     .summary = "Build, git revision and the versions of every linked library", OPS},
    {.name = "admin.routes", .method = "GET", .path = "/api/v1/admin/routes",
     .handler = routes_get, .summary = "The route table", OPS},
    {.name = "admin.workers", .method = "GET", .path = "/api/v1/admin/workers",
     .handler = workers_get,
     .summary = "Per worker: loop lag, connections, requests in flight and served", OPS},
};

int app_admin_ops_setup(keel_service *svc)
{
    O.svc = svc;
    return keel_service_add_routes(svc, ops_routes, sizeof(ops_routes) / sizeof(ops_routes[0]));
}
