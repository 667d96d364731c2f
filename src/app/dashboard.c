/* dashboard.c — GET /dashboard: the operations dashboard (web/dashboard,
 * compiled into the binary by scripts/embed_web.sh like /docs), and the
 * options of the page and of its live stream (admin_stream.c).
 *
 * The page itself is public (it holds no data); everything it shows comes
 * from admin-only API routes after the admin logs in: the live figures
 * from GET /api/v1/admin/stream, the alerts and rules from
 * /api/v1/admin/alerts*, the traces from /api/v1/admin/traces. Its
 * responses carry a strict Content-Security-Policy of their own: scripts,
 * styles and connections from this origin only, nothing inline.
 */
#include <string.h>

#include "app/app.h"

#define DASHBOARD_CSP                                                                   \
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "     \
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "    \
    "frame-ancestors 'none'"

#define AT(f) KEEL_CONFIG_AT(app_dashboard_options, f)
static const keel_config_var dashboard_vars[] = {
    {.name = "DASHBOARD", .type = KEEL_CONFIG_BOOL, .def = "true", AT(enabled),
     .help = "serve the operations dashboard at GET /dashboard (the data behind it is "
             "admin-only); false = 404"},
    {.name = "DASHBOARD_CSP", .type = KEEL_CONFIG_BOOL, .def = "true", AT(csp),
     .help = "the dashboard's responses carry their strict Content-Security-Policy "
             "(default-src 'self', nothing inline); false = the global CSP rules"},
    {.name = "ADMIN_STREAM_MAX", .type = KEEL_CONFIG_UINT, .def = "16", AT(stream_max),
     .min = 1, .max = 10000,
     .help = "most GET /api/v1/admin/stream connections open at once (503 beyond)"},
    {.name = "ADMIN_STREAM_INTERVAL", .type = KEEL_CONFIG_DURATION, .def = "1s",
     AT(interval_ms), .min = 100, .max = 60000,
     .help = "how often the admin stream sends a snapshot (computed once for every stream)"},
    {.name = "ADMIN_STREAM_HEARTBEAT", .type = KEEL_CONFIG_DURATION, .def = "15s",
     AT(heartbeat_ms), .min = 100, .max = 300000,
     .help = "a comment line on the admin stream this often, so proxies keep it open"},
    {.name = "ADMIN_STREAM_MAX_DURATION", .type = KEEL_CONFIG_DURATION, .def = "15m",
     AT(max_age_ms), .min = 1000, .max = 86400000,
     .help = "an admin stream ends after this long (the client reconnects with a token "
             "that is still valid)"},
    {.name = "ADMIN_STREAM_BUS_PATTERN", .type = KEEL_CONFIG_STR, .def = "alerts*",
     AT(bus_pattern),
     .help = "event-bus channels (a Redis glob) whose messages the admin stream forwards as "
             "`event: bus` (the alert engine's); empty = none"},
};
#undef AT

const keel_config_module app_dashboard_config = KEEL_CONFIG_MODULE(
    "dashboard",
    "The operations dashboard (GET /dashboard) and its live stream, GET /api/v1/admin/stream "
    "(src/app/dashboard.c, src/app/admin_stream.c).",
    app_dashboard_options, dashboard_vars, NULL);

const app_dashboard_options *app_dashboard_options_of(keel_service *svc)
{
    return keel_config_get(keel_service_config(svc), &app_dashboard_config);
}

static int csp_on;

static keel_flow h_asset(keel_req *r)
{
    const app_asset *a = keel_req_route(r)->data;
    if (csp_on)
        keel_res_set_header(r, "Content-Security-Policy", DASHBOARD_CSP);
    keel_res_header(r, "Cache-Control", "no-cache");
    keel_respond(r, 200, a->content_type, a->data, a->len);
    return KEEL_DONE;
}

static const app_asset *asset(const char *name)
{
    for (size_t i = 0; i < app_dashboard_assets_count; i++)
        if (!strcmp(app_dashboard_assets[i].name, name))
            return &app_dashboard_assets[i];
    return NULL;
}

static keel_route page_routes[3];

int app_dashboard_setup(keel_service *svc)
{
    const app_dashboard_options *o = app_dashboard_options_of(svc);
    int rc = app_admin_stream_setup(svc);
    if (rc < 0 || !o->enabled)
        return rc;
    csp_on = o->csp;
    static const struct {
        const char *name, *path, *file, *summary;
    } pages[] = {
        {"dashboard.page", "/dashboard", "index.html",
         "The operations dashboard (log in as an admin)"},
        {"dashboard.script", "/dashboard/dashboard.js", "dashboard.js",
         "The dashboard's script (an ES module)"},
        {"dashboard.style", "/dashboard/dashboard.css", "dashboard.css",
         "The dashboard's style sheet"},
    };
    size_t n = 0;
    for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
        const app_asset *a = asset(pages[i].file);
        if (!a)
            continue;
        page_routes[n++] = (keel_route){.name = pages[i].name, .method = "GET",
                                        .path = pages[i].path, .handler = h_asset,
                                        .summary = pages[i].summary,
                                        .flags = KEEL_ROUTE_INTERNAL, .data = (void *)a};
    }
    return keel_service_add_routes(svc, page_routes, n);
}
