/* security_headers.c — the browser-facing defaults every API response
 * carries (CSP, nosniff, frame, referrer and cross-origin policies, HSTS
 * over HTTPS, no-store on secret routes).
 *
 * They are added from on_response, so they land on every response that
 * keel writes — handlers, 404/405, refusals from the connection layer
 * (400, 408, 413, ...), deadline 503s — and only when the handler did not
 * set the header itself: an HTML route's own Content-Security-Policy wins.
 * (The one response without them is the raw 503 keel writes when it
 * refuses a connection before any request exists.)
 */
#include <stdio.h>

#include "keel/mw.h"

typedef struct sec_cfg {
    keel_res_header_set *set; /* the six, validated and rendered once */
    char *hsts;               /* the HSTS value, NULL = none */
} sec_cfg;

static void on_response(keel_req *r, keel_response *res, void *data)
{
    (void)res;
    const sec_cfg *c = data;
    keel_res_add_header_set(r, c->set);
    if (c->hsts && keel_req_is_https(r) && !keel_res_has_header(r, "Strict-Transport-Security"))
        keel_res_header(r, "Strict-Transport-Security", c->hsts);
    const keel_route *rt = keel_req_route(r);
    if (rt && (rt->flags & KEEL_ROUTE_SECRET))
        keel_res_set_header(r, "Cache-Control", "no-store");
}

static void dispose(void *data)
{
    sec_cfg *c = data;
    keel_res_header_set_free(c->set);
    keel_free(c->hsts);
    keel_free(c);
}

static void add(sec_cfg *c, const char *name, const char *value)
{
    if (value && *value)
        keel_res_header_set_add(c->set, name, value);
}

keel_middleware keel_mw_security_headers(const keel_config *config)
{
    const keel_edge_options *cfg = keel_config_get(config, &keel_edge_config);
    sec_cfg *c = keel_calloc(1, sizeof(*c));
    c->set = keel_res_header_set_new();
    add(c, "Content-Security-Policy", cfg->csp);
    add(c, "X-Content-Type-Options", cfg->nosniff ? "nosniff" : NULL);
    add(c, "X-Frame-Options", cfg->frame_options);
    add(c, "Referrer-Policy", cfg->referrer_policy);
    add(c, "Cross-Origin-Opener-Policy", cfg->coop);
    add(c, "Cross-Origin-Resource-Policy", cfg->corp);
    if (cfg->hsts_max_age) {
        char v[64];
        snprintf(v, sizeof(v), "max-age=%llu; includeSubDomains",
                 (unsigned long long)cfg->hsts_max_age);
        c->hsts = keel_strdup(v);
    }
    keel_middleware m = {.name = "security_headers", .phase = KEEL_PHASE_RESPOND,
                         .on_response = on_response,
                         .dispose = dispose, .data = c};
    return m;
}
