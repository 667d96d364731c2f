/* admin_traces.c — /api/v1/admin/traces: the recent traces the tracer
 * keeps in memory (keel/trace.h, TRACE_BUFFER_SIZE per worker), as a list
 * and one by one with every span and its parent, for a waterfall. */
#include <jansson.h>
#include <stdlib.h>

#include "app/app.h"

static keel_tracer *T;

static keel_flow h_list(keel_req *r)
{
    json_t *q = keel_req_query_json(r);
    json_int_t limit = json_integer_value(json_object_get(q, "limit"));
    if (limit <= 0)
        limit = 50;
    json_t *traces = T ? keel_tracer_recent(T, (size_t)limit) : json_array();
    keel_respond_json(r, 200, json_pack("{s:o,s:b}", "traces", traces, "enabled", T != NULL));
    return KEEL_DONE;
}

static keel_flow h_get(keel_req *r)
{
    keel_str id = keel_req_param(r, "id"); /* checked by params_schema */
    char hex[33];
    snprintf(hex, sizeof(hex), "%.*s", (int)id.len, id.ptr);
    json_t *t = T ? keel_tracer_get(T, hex) : NULL;
    if (!t) {
        keel_respond_problem(r, 404, T ? "no such trace in memory (only the last "
                                         "TRACE_BUFFER_SIZE per worker are kept)"
                                       : "tracing is disabled (OTEL_SDK_DISABLED)");
        return KEEL_DONE;
    }
    keel_respond_json(r, 200, t);
    return KEEL_DONE;
}

static const keel_route trace_routes[] = {
    {.name = "admin.traces.list", .method = "GET", .path = "/api/v1/admin/traces",
     .handler = h_list,
     .summary = "The recent traces kept in memory, newest first (id, root span, start, "
                "duration, status, span count)",
     .auth = "user", .permission = "admin:access",
     .query_schema = "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
                     "\"limit\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000}}}"},
    {.name = "admin.traces.get", .method = "GET", .path = "/api/v1/admin/traces/:id",
     .handler = h_get, .summary = "One recent trace: every span (OTLP JSON) with its parent",
     .auth = "user", .permission = "admin:access",
     .params_schema = "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\","
                      "\"pattern\":\"^[0-9a-f]{32}$\"}}}"},
};

int app_admin_traces_setup(keel_service *svc)
{
    T = keel_service_tracer(svc);
    return keel_service_add_routes(svc, trace_routes,
                                   sizeof(trace_routes) / sizeof(trace_routes[0]));
}
