/* openapi.c — the OpenAPI 3.1 document generated from the route table,
 * and the built-in routes that serve it (/openapi.json) and its viewer
 * (/docs and its script and style sheet, compiled in from web/docs by
 * scripts/embed_web.sh).
 *
 * Everything comes from the route declarations: name -> operationId (and
 * its prefix before the first '.' -> tag), summary, method, the path with
 * `:param` and `*wildcard` as `{param}`, path and query parameters from
 * params_schema and query_schema, the body from request_schema, the 200
 * response from response_schema, security from `auth`, and the problem
 * responses the route can produce from what it declares. The document is
 * built once, after the application's setup, and served as bytes.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "keel/keel.h"
#include "svc/svc_internal.h"

/* The problem responses, by status, in components.responses. */
static const struct {
    const char *code, *name, *description;
    int retry_after;
} problems[] = {
    {"400", "BadRequest", "Malformed request: JSON syntax (with the byte offset), query "
                          "string or path encoding", 0},
    {"401", "Unauthorized", "Missing or invalid credentials", 0},
    {"403", "Forbidden", "The credentials do not grant this operation", 0},
    {"413", "ContentTooLarge", "Body larger than BODY_LIMIT or JSON_BODY_LIMIT", 0},
    {"415", "UnsupportedMediaType", "The body is not JSON (Content-Type: application/json "
                                    "or a +json type)", 0},
    {"422", "UnprocessableContent", "Schema validation failed: `errors` lists every invalid "
                                    "field", 0},
    {"429", "TooManyRequests", "Rate limit exceeded", 1},
    {"500", "InternalServerError", "Unexpected error", 0},
    {"503", "ServiceUnavailable", "Overloaded, draining, a dependency down or the handler "
                                  "deadline passed", 1},
};
#define NPROBLEMS (sizeof(problems) / sizeof(problems[0]))

static json_t *ref(const char *kind, const char *name)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "#/components/%s/%s", kind, name);
    return json_pack("{s:s}", "$ref", buf);
}

static json_t *components(void)
{
    json_t *responses = json_object();
    for (size_t i = 0; i < NPROBLEMS; i++) {
        json_t *r = json_pack("{s:s,s:{s:{s:o}}}", "description", problems[i].description,
                              "content", "application/problem+json", "schema",
                              ref("schemas", "Problem"));
        if (problems[i].retry_after)
            json_object_set_new(r, "headers",
                                json_pack("{s:{s:s,s:{s:s}}}", "Retry-After", "description",
                                          "Seconds to wait before retrying", "schema", "type",
                                          "integer"));
        json_object_set_new(responses, problems[i].name, r);
    }
    json_t *problem = json_pack(
        "{s:s,s:s,s:[sss],s:{s:{s:s},s:{s:s},s:{s:s},s:{s:s},s:{s:s},s:{s:s},"
        "s:{s:s,s:s},s:{s:s,s:o}}}",
        "type", "object", "description", "RFC 9457 problem details", "required", "type",
        "title", "status", "properties", "type", "type", "string", "title", "type", "string",
        "status", "type", "integer", "detail", "type", "string", "instance", "type", "string",
        "request_id", "type", "string", "offset", "type", "integer", "description",
        "byte offset of a JSON syntax error (400)", "errors", "type", "array", "items",
        ref("schemas", "ValidationError"));
    json_t *verr = json_pack(
        "{s:s,s:[sss],s:{s:{s:s,s:[sss]},s:{s:s,s:s},s:{s:s}}}", "type", "object", "required",
        "in", "pointer", "message", "properties", "in", "type", "string", "enum", "body",
        "query", "path", "pointer", "type", "string", "description",
        "RFC 6901 JSON pointer into the body, the query object or the path object",
        "message", "type", "string");
    json_t *schemes = json_pack(
        "{s:{s:s,s:s,s:s,s:s},s:{s:s,s:s,s:s,s:s}}", "bearerAuth", "type", "http", "scheme",
        "bearer", "bearerFormat", "JWT", "description", "An access token: Authorization: "
        "Bearer <JWT>", "apiKey", "type", "apiKey", "in", "header", "name", "X-API-Key",
        "description", "An API key");
    return json_pack("{s:{s:o,s:o},s:o,s:o}", "schemas", "Problem", problem, "ValidationError",
                     verr, "responses", responses, "securitySchemes", schemes);
}

/* ":param" and "*wildcard" segments become "{param}": "/users/:id" -> "/users/{id}" */
static void openapi_path(const char *pattern, keel_buf *out)
{
    out->len = 0;
    for (const char *p = pattern; *p;) {
        if ((*p == ':' || *p == '*') && p > pattern && p[-1] == '/') {
            const char *e = strchr(p, '/');
            size_t n = e ? (size_t)(e - p - 1) : strlen(p + 1);
            keel_buf_printf(out, "{%.*s}", (int)n, p + 1);
            p += n + 1;
        } else {
            keel_buf_append(out, p++, 1);
        }
    }
    keel_buf_append(out, "", 1);
}

static json_t *prop_schema(const keel_schema *s, const char *name)
{
    const keel_schema *p = keel_schema_property(s, name);
    json_t *j = p ? keel_schema_json(p) : NULL;
    return j && json_is_object(j) ? json_deep_copy(j) : json_pack("{s:s}", "type", "string");
}

static int in_required(const keel_schema *s, const char *name)
{
    json_t *req = json_object_get(keel_schema_json(s), "required");
    size_t i;
    json_t *v;
    json_array_foreach(req, i, v) {
        if (json_is_string(v) && !strcmp(json_string_value(v), name))
            return 1;
    }
    return 0;
}

static json_t *parameters(const keel_route *rt, const keel_route_schemas *rs)
{
    json_t *params = json_array();
    for (const char *p = rt->path; (p = strchr(p, '/')) != NULL;) {
        p++;
        if (*p != ':' && *p != '*')
            continue;
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p - 1) : strlen(p + 1);
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)(n < 127 ? n : 127), p + 1);
        json_t *par = json_pack("{s:s,s:s,s:b,s:o}", "name", name, "in", "path", "required", 1,
                                "schema", prop_schema(rs ? rs->params : NULL, name));
        if (*p == '*')
            json_object_set_new(par, "description",
                                json_string("the rest of the path; may contain '/'"));
        json_array_append_new(params, par);
    }
    json_t *props = rs && rs->query
                        ? json_object_get(keel_schema_json(rs->query), "properties")
                        : NULL;
    const char *k;
    json_t *v;
    json_object_foreach(props, k, v) {
        json_t *par = json_pack("{s:s,s:s,s:b,s:o}", "name", k, "in", "query", "required",
                                in_required(rs->query, k), "schema", prop_schema(rs->query, k));
        json_t *d = json_object_get(v, "description");
        if (json_is_string(d))
            json_object_set(par, "description", d);
        json_array_append_new(params, par);
    }
    return params;
}

static void add_problem(json_t *responses, const char *code)
{
    for (size_t i = 0; i < NPROBLEMS; i++)
        if (!strcmp(problems[i].code, code))
            json_object_set_new(responses, code, ref("responses", problems[i].name));
}

static json_t *operation(const keel_server *s, const keel_route *rt, const keel_route_schemas *rs,
                         const char *opid)
{
    json_t *op = json_object();
    json_object_set_new(op, "operationId", json_string(opid));
    if (rt->summary)
        json_object_set_new(op, "summary", json_string(rt->summary));
    const char *dot = rt->name ? strchr(rt->name, '.') : NULL;
    json_object_set_new(op, "tags",
                        json_pack("[s#]", rt->name ? rt->name : "default",
                                  dot ? (int)(dot - rt->name)
                                      : (int)strlen(rt->name ? rt->name : "default")));
    json_t *params = parameters(rt, rs);
    if (json_array_size(params))
        json_object_set_new(op, "parameters", params);
    else
        json_decref(params);
    if (rt->flags & KEEL_ROUTE_STREAM_BODY)
        /* a streamed body: the handler reads it (uploads: multipart/form-data) */
        json_object_set_new(op, "requestBody",
                            json_pack("{s:b,s:{s:{s:{s:s}}}}", "required", 1, "content",
                                      "multipart/form-data", "schema", "type", "object"));
    else if (rs && rs->request)
        json_object_set_new(op, "requestBody",
                            json_pack("{s:b,s:{s:{s:O}}}", "required", 1, "content",
                                      "application/json", "schema",
                                      keel_schema_json(rs->request)));
    json_t *responses = json_object();
    json_t *ok = json_pack("{s:s}", "description", "OK");
    if (rs && rs->response)
        json_object_set_new(ok, "content", json_pack("{s:{s:O}}", "application/json", "schema",
                                                     keel_schema_json(rs->response)));
    int validated = rs && (rs->request || rs->query || rs->params);
    if (rt->websocket) {
        /* the handshake (keel/ws.h): 101, or a refusal */
        json_object_set_new(ok, "description",
                            json_string("Switching Protocols: the connection speaks WebSocket "
                                        "(RFC 6455) from here on"));
        json_object_set_new(responses, "101", ok);
        json_object_set_new(responses, "426",
                            json_pack("{s:s}", "description",
                                      "Upgrade Required: not a WebSocket upgrade, or a "
                                      "Sec-WebSocket-Version other than 13"));
        validated = 1; /* a bad handshake is a 400 */
    } else {
        json_object_set_new(responses, "200", ok);
    }
    if (validated)
        add_problem(responses, "400");
    /* what the document promises is what the installed middleware enforces */
    int auth = keel_route_auth(rt) && keel_server_enforces(s, "auth");
    const char *permission = keel_server_enforces(s, "permission") ? rt->permission : NULL;
    const char *tier = keel_server_enforces(s, "rate_limit") ? rt->rate_limit : NULL;
    if (auth)
        add_problem(responses, "401");
    if (auth && permission)
        add_problem(responses, "403");
    if (rs && rs->request) {
        add_problem(responses, "413");
        add_problem(responses, "415");
    }
    if (validated)
        add_problem(responses, "422");
    if (tier)
        add_problem(responses, "429");
    add_problem(responses, "500");
    add_problem(responses, "503");
    json_object_set_new(op, "responses", responses);
    if (auth) {
        /* OpenAPI 3.1: non-OAuth requirements may list role names */
        json_t *roles = permission ? json_pack("[s]", permission) : json_array();
        json_t *sec = json_array();
        if (!strcmp(rt->auth, "user") || !strcmp(rt->auth, "any"))
            json_array_append_new(sec, json_pack("{s:O}", "bearerAuth", roles));
        if (!strcmp(rt->auth, "apikey") || !strcmp(rt->auth, "any"))
            json_array_append_new(sec, json_pack("{s:O}", "apiKey", roles));
        json_decref(roles);
        json_object_set_new(op, "security", sec);
    } else {
        json_object_set_new(op, "security", json_array()); /* explicitly public */
    }
    if (permission)
        json_object_set_new(op, "x-keel-permission", json_string(permission));
    if (tier)
        json_object_set_new(op, "x-keel-rate-limit", json_string(tier));
    return op;
}

static void lower(const char *in, char *out, size_t cap)
{
    size_t i = 0;
    for (; in[i] && i + 1 < cap; i++)
        out[i] = (char)(in[i] >= 'A' && in[i] <= 'Z' ? in[i] + 32 : in[i]);
    out[i] = '\0';
}

char *keel__svc_openapi_build(const keel_app *app, keel_server *s, const keel_validator *v,
                              size_t *len)
{
    const keel_route *const *routes;
    size_t n = keel_server_routes(s, &routes);
    json_t *paths = json_object();
    json_t *opids = json_object(); /* operationIds must be unique */
    keel_buf path = {0};
    for (size_t i = 0; i < n; i++) {
        const keel_route *rt = routes[i];
        char method[16];
        lower(rt->method, method, sizeof(method));
        openapi_path(rt->path, &path);
        json_t *item = json_object_get(paths, path.data);
        if (!item) {
            item = json_object();
            json_object_set_new(paths, path.data, item);
        }
        char opid[160];
        snprintf(opid, sizeof(opid), "%s", rt->name ? rt->name : "");
        if (!*opid || json_object_get(opids, opid))
            snprintf(opid, sizeof(opid), "%s %s", rt->method, rt->path);
        json_object_set_new(opids, opid, json_true());
        json_object_set_new(item, method, operation(s, rt, keel_validator_lookup(v, rt), opid));
    }
    keel_buf_free(&path);
    json_decref(opids);
    json_t *doc = json_pack(
        "{s:s,s:{s:s,s:s,s:s},s:o,s:o}", "openapi", "3.1.0", "info", "title",
        app && app->name ? app->name : "keel", "version",
        app && app->version ? app->version : KEEL_VERSION, "description",
        "Generated from the route table. Every error is an RFC 9457 problem document "
        "(application/problem+json).", "paths", paths, "components", components());
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    *len = strlen(text);
    char *out = keel_strndup(text, *len);
    free(text);
    return out;
}

/* ---------------------------------------------------------------- handlers */

keel_flow keel__svc_h_openapi(keel_req *r)
{
    const keel__svc_doc *d = keel_req_route(r)->data;
    keel_respond(r, 200, "application/json", d->json, d->len);
    return KEEL_DONE;
}

/* The viewer loads its script and style sheet from /docs/ (same origin)
 * and fetches /openapi.json: nothing inline, nothing from another host. */
#define DOCS_CSP                                                                   \
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " \
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

keel_flow keel__svc_h_asset(keel_req *r)
{
    const keel__asset *a = keel_req_route(r)->data;
    if (!strncmp(a->content_type, "text/html", 9))
        keel_res_header(r, "Content-Security-Policy", DOCS_CSP);
    keel_res_header(r, "Cache-Control", "no-cache");
    keel_respond(r, 200, a->content_type, a->data, a->len);
    return KEEL_DONE;
}
