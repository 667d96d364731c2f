/* cors.c — CORS for browsers calling the API from other origins.
 *
 * CORS_ORIGIN is a comma-separated list of exact origins, or `*`.
 *   - A preflight (OPTIONS with Origin and Access-Control-Request-Method)
 *     from an allowed origin is answered here with 204 and the
 *     Access-Control-Allow-* headers; from any other origin with 403
 *     problem+json and no CORS headers (the browser then blocks the call).
 *   - Any other request from an allowed origin gets
 *     Access-Control-Allow-Origin (+ -Credentials) on whatever response it
 *     gets, errors included; from another origin it gets none.
 *   - A WebSocket handshake (a route with .websocket) from another origin
 *     is refused with 403 before the upgrade: browsers do not apply CORS
 *     to WebSocket, so the server must (docs/realtime.md).
 * `*` answers `*` (no credentials: `*` with CORS_CREDENTIALS is refused at
 * start-up); a list answers the request's own origin and Vary: Origin.
 * SIGHUP replaces the settings (a new cors_cfg swapped in atomically; the
 * old ones are kept until the middleware is disposed of, since a request
 * on another thread may still be reading them). Switching CORS on or off
 * takes a restart: the middleware is installed only when CORS_ORIGIN is set.
 */
#include <stdio.h>
#include <strings.h>

#include "keel/log.h"
#include "keel/mw.h"

typedef struct cors_cfg {
    int any;            /* `*` */
    int credentials;
    char **origins;
    size_t norigins;
    char *methods;
    char *headers;
    char max_age[24];
    struct cors_cfg *retired; /* older settings, freed with the middleware */
} cors_cfg;

typedef struct cors_mw {
    cors_cfg *active; /* atomic */
} cors_mw;

static int origin_allowed(const cors_cfg *c, keel_str o)
{
    if (c->any)
        return 1;
    for (size_t i = 0; i < c->norigins; i++)
        if (keel_str_eq(o, keel_str_c(c->origins[i])))
            return 1;
    return 0;
}

/* Whether the comma-separated list `list` holds the token t
 * (case-insensitive). */
static int list_has(const char *list, const char *t, size_t tl)
{
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *s = p;
        while (*p && *p != ',')
            p++;
        const char *e = p;
        while (e > s && e[-1] == ' ')
            e--;
        if ((size_t)(e - s) == tl && strncasecmp(s, t, tl) == 0)
            return 1;
    }
    return 0;
}

/* Every header named in Access-Control-Request-Headers is allowed. */
static int headers_allowed(const cors_cfg *c, keel_str req)
{
    size_t i = 0;
    while (i < req.len) {
        while (i < req.len && (req.ptr[i] == ' ' || req.ptr[i] == ','))
            i++;
        size_t s = i;
        while (i < req.len && req.ptr[i] != ',')
            i++;
        size_t e = i;
        while (e > s && req.ptr[e - 1] == ' ')
            e--;
        if (e > s && !list_has(c->headers, req.ptr + s, e - s))
            return 0;
    }
    return 1;
}

static void allow_origin(keel_req *r, const cors_cfg *c, keel_str origin)
{
    if (c->any && !c->credentials) {
        keel_res_header(r, "Access-Control-Allow-Origin", "*");
        return;
    }
    char *o = keel_arena_strndup(keel_req_arena(r), origin.ptr, origin.len);
    keel_res_header(r, "Access-Control-Allow-Origin", o);
    if (c->credentials)
        keel_res_header(r, "Access-Control-Allow-Credentials", "true");
}

static keel_flow on_request(keel_req *r, void *data)
{
    const cors_cfg *c = __atomic_load_n(&((cors_mw *)data)->active, __ATOMIC_ACQUIRE);
    keel_str origin = keel_req_header(r, "origin");
    if (!origin.ptr)
        return KEEL_NEXT;
    int allowed = origin_allowed(c, origin);
    int vary = !(c->any && !c->credentials);
    keel_str acrm = keel_req_header(r, "access-control-request-method");
    /* a refused request is no preflight: it gets its refusal (with the
     * CORS headers below, so a browser can read it) */
    if (keel_req_method(r) == KEEL_METHOD_OPTIONS && acrm.ptr && !keel_req_refused(r)) {
        if (vary)
            keel_res_header(r, "Vary", "Origin");
        if (!allowed) {
            keel_respond_problem(r, 403, "origin not allowed by the CORS policy");
            return KEEL_DONE;
        }
        allow_origin(r, c, origin);
        keel_res_header(r, "Access-Control-Allow-Methods", c->methods);
        keel_str acrh = keel_req_header(r, "access-control-request-headers");
        if (acrh.ptr && acrh.len && headers_allowed(c, acrh))
            keel_res_header(r, "Access-Control-Allow-Headers",
                            keel_arena_strndup(keel_req_arena(r), acrh.ptr, acrh.len));
        else
            keel_res_header(r, "Access-Control-Allow-Headers", c->headers);
        keel_res_header(r, "Access-Control-Max-Age", c->max_age);
        keel_respond(r, 204, NULL, NULL, 0);
        return KEEL_DONE;
    }
    if (vary)
        keel_res_header(r, "Vary", "Origin");
    const keel_route *rt = keel_req_route(r);
    if (!allowed && rt && rt->websocket && !keel_req_refused(r)) {
        /* Browsers apply no CORS to WebSocket: a page of any origin may
         * open one with the user's cookies. The server refuses a handshake
         * from an origin the policy does not allow (cross-site WebSocket
         * hijacking), before the upgrade. */
        keel_respond_problem(r, 403, "origin not allowed to open a WebSocket");
        return KEEL_DONE;
    }
    if (allowed)
        allow_origin(r, c, origin);
    return KEEL_NEXT;
}

static void cfg_free(cors_cfg *c)
{
    while (c) {
        cors_cfg *older = c->retired;
        for (size_t i = 0; i < c->norigins; i++)
            keel_free(c->origins[i]);
        keel_free(c->origins);
        keel_free(c->methods);
        keel_free(c->headers);
        keel_free(c);
        c = older;
    }
}

static void dispose(void *data)
{
    cors_mw *m = data;
    cfg_free(m->active);
    keel_free(m);
}

static cors_cfg *cfg_new(const keel_config *config)
{
    const keel_edge_options *cfg = keel_config_get(config, &keel_edge_config);
    cors_cfg *c = keel_calloc(1, sizeof(*c));
    c->credentials = cfg->cors_credentials;
    c->methods = keel_strdup(cfg->cors_methods ? cfg->cors_methods : "");
    c->headers = keel_strdup(cfg->cors_headers ? cfg->cors_headers : "");
    snprintf(c->max_age, sizeof(c->max_age), "%llu", (unsigned long long)cfg->cors_max_age);
    const char *p = cfg->cors_origin ? cfg->cors_origin : "";
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *s = p;
        while (*p && *p != ',' && *p != ' ')
            p++;
        size_t n = (size_t)(p - s);
        if (n == 1 && *s == '*') {
            c->any = 1;
        } else if (n) {
            c->origins = keel_realloc(c->origins, (c->norigins + 1) * sizeof(char *));
            c->origins[c->norigins++] = keel_strndup(s, n);
        }
    }
    return c;
}

static int reload(void *data, const keel_config *next)
{
    cors_mw *m = data;
    const keel_edge_options *o = keel_config_get(next, &keel_edge_config);
    if (!o->cors_origin || !*o->cors_origin) {
        keel_log(KEEL_LOG_WARN, "reload: CORS_ORIGIN is now empty; switching CORS off takes a "
                                "restart, the origins stay as they were", NULL);
        return 0;
    }
    cors_cfg *c = cfg_new(next);
    c->retired = m->active; /* only this thread swaps */
    __atomic_store_n(&m->active, c, __ATOMIC_RELEASE);
    keel_log(KEEL_LOG_INFO, "reload: CORS settings applied", "{s:s}", "origins", o->cors_origin);
    return 0;
}

keel_middleware keel_mw_cors(const keel_config *config)
{
    cors_mw *m = keel_calloc(1, sizeof(*m));
    m->active = cfg_new(config);
    keel_middleware mw = {.name = "cors", .phase = KEEL_PHASE_EDGE, .on_request = on_request,
                          .dispose = dispose, .reload = reload, .data = m};
    return mw;
}
