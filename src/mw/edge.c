/* edge.c — the options of edge protection (security_headers.c, cors.c,
 * compress.c, shed.c): one table in the configuration registry. The
 * listener's own edge settings (TRUST_PROXY*, MAX_CONNECTIONS_PER_IP,
 * CLIENT_IPV6_PREFIX) are core's: src/core/conn.c applies them. */
#include <stdio.h>
#include <string.h>

#include "keel/mw.h"

static int edge_validate(void *opts, const keel_config *cfg, FILE *err)
{
    (void)cfg;
    const keel_edge_options *o = opts;
    if (o->cors_credentials && o->cors_origin && strchr(o->cors_origin, '*')) {
        fprintf(err, "keel: CORS_CREDENTIALS: cannot be combined with CORS_ORIGIN=* "
                     "(browsers refuse it); list the allowed origins instead\n");
        return KEEL_ECONFIG;
    }
    return 0;
}

#define AT(f) KEEL_CONFIG_AT(keel_edge_options, f)
static const keel_config_var edge_vars[] = {
    {.name = "SECURITY_HEADERS", .type = KEEL_CONFIG_BOOL, .def = "true", AT(security_headers),
     .help = "add the security headers below to every response; false = none of them"},
    {.name = "CSP", .type = KEEL_CONFIG_STR, .def = "default-src 'none'; frame-ancestors 'none'",
     AT(csp),
     .help = "Content-Security-Policy for responses whose handler set none; empty = none"},
    {.name = "FRAME_OPTIONS", .type = KEEL_CONFIG_STR, .def = "DENY", AT(frame_options),
     .help = "X-Frame-Options; empty = none"},
    {.name = "REFERRER_POLICY", .type = KEEL_CONFIG_STR, .def = "no-referrer",
     AT(referrer_policy), .help = "Referrer-Policy; empty = none"},
    {.name = "CROSS_ORIGIN_OPENER_POLICY", .type = KEEL_CONFIG_STR, .def = "same-origin",
     AT(coop), .help = "Cross-Origin-Opener-Policy; empty = none"},
    {.name = "CROSS_ORIGIN_RESOURCE_POLICY", .type = KEEL_CONFIG_STR, .def = "same-origin",
     AT(corp), .help = "Cross-Origin-Resource-Policy; empty = none"},
    {.name = "CONTENT_TYPE_NOSNIFF", .type = KEEL_CONFIG_BOOL, .def = "true", AT(nosniff),
     .help = "X-Content-Type-Options: nosniff"},
    {.name = "HSTS_MAX_AGE", .type = KEEL_CONFIG_UINT, .def = "15552000", AT(hsts_max_age),
     .help = "Strict-Transport-Security max-age (s, with includeSubDomains) on HTTPS requests "
             "(X-Forwarded-Proto: https from a TRUST_PROXY peer); 0 = none"},
    {.name = "CORS_ORIGIN", .type = KEEL_CONFIG_STR, .def = "", AT(cors_origin),
     .help = "comma-separated allowed origins for CORS; empty = none"},
    {.name = "CORS_CREDENTIALS", .type = KEEL_CONFIG_BOOL, .def = "false", AT(cors_credentials),
     .help = "Access-Control-Allow-Credentials: true for allowed origins; refused with "
             "CORS_ORIGIN=*"},
    {.name = "CORS_MAX_AGE", .type = KEEL_CONFIG_UINT, .def = "600", AT(cors_max_age),
     .max = 86400, .help = "Access-Control-Max-Age (s) of preflight answers"},
    {.name = "CORS_METHODS", .type = KEEL_CONFIG_STR, .def = "GET, HEAD, POST, PUT, PATCH, DELETE",
     AT(cors_methods), .help = "methods allowed cross-origin (Access-Control-Allow-Methods)"},
    {.name = "CORS_HEADERS", .type = KEEL_CONFIG_STR,
     .def = "Content-Type, Authorization, X-Request-Id", AT(cors_headers),
     .help = "request headers allowed cross-origin (Access-Control-Allow-Headers)"},
    {.name = "COMPRESSION", .type = KEEL_CONFIG_BOOL, .def = "true", AT(compression),
     .help = "gzip responses when the client accepts it (never secret routes or streams)"},
    {.name = "COMPRESSION_MIN_BYTES", .type = KEEL_CONFIG_SIZE, .def = "1024",
     AT(compression_min_bytes), .max = 1ull << 32,
     .help = "smallest response body worth compressing"},
    {.name = "SHED_LOOP_LAG", .type = KEEL_CONFIG_DURATION, .def = "2s", AT(shed_loop_lag_ms),
     .help = "shed load (503) while a worker's event loop lags more than this; 0 = off"},
    {.name = "SHED_IN_FLIGHT", .type = KEEL_CONFIG_UINT, .def = "10000", AT(shed_in_flight),
     .help = "shed load while a worker has more requests in flight than this; 0 = off"},
    {.name = "SHED_RSS", .type = KEEL_CONFIG_SIZE, .def = "0", AT(shed_rss_bytes),
     .help = "shed load while the process's resident memory is above this (e.g. 1gb); 0 = off"},
};
#undef AT

const keel_config_module keel_edge_config = KEEL_CONFIG_MODULE(
    "edge", "Edge protection: security headers, CORS, compression, load shedding (src/mw/edge.c).",
    keel_edge_options, edge_vars, edge_validate);
