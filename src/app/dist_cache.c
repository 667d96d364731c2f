/* dist_cache.c — /distributed/cache/:key: the service's cache
 * (keel/cache.h) read and written directly, in the namespace "dist", for
 * administrators and service API keys with admin:access.
 *
 * GET answers {"key", "value"} or 404; PUT stores {"value": <any JSON>,
 * "ttl_seconds": N?} and answers 204; DELETE answers 204 or 404. With
 * REDIS_URL set and Redis unavailable (breaker open, connection down, a
 * timeout) every one answers 503 with Retry-After: this API is the
 * shared cache itself, so there is nothing to fall back to. */
#include <jansson.h>
#include <string.h>

#include "app/app.h"

#define NS "dist"
#define KEY_MAX 128
#define TTL_MAX_S (30 * 24 * 3600)

static keel_cache *C;

/* The path's key: 1..128 bytes of [A-Za-z0-9._:-] (the params schema says
 * so too; checked again here). NULL after answering 400. */
static const char *key_of(keel_req *r)
{
    keel_str k = keel_req_param(r, "key");
    int ok = k.ptr && k.len >= 1 && k.len <= KEY_MAX;
    for (size_t i = 0; ok && i < k.len; i++) {
        char ch = k.ptr[i];
        ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
             ch == '.' || ch == '_' || ch == ':' || ch == '-';
    }
    if (!ok) {
        keel_respond_problem(r, 400, "the key must be 1 to 128 characters of A-Z a-z 0-9 . _ : -");
        return NULL;
    }
    return keel_arena_printf(keel_req_arena(r), "%.*s", (int)k.len, k.ptr);
}

typedef struct call {
    keel_req *r;
    const char *key;
} call;

static call *call_new(keel_req *r, const char *key)
{
    call *c = keel_malloc(sizeof(*c));
    c->r = r;
    c->key = key;
    keel_req_hold(r);
    return c;
}

static void call_end(call *c)
{
    keel_req_unhold(c->r);
    keel_free(c);
}

static void unavailable(keel_req *r)
{
    keel_respond_unavailable(r, 1, "the shared cache (Redis) is unavailable");
}

static keel_flow started(keel_req *r, call *c, int rc)
{
    if (rc == 0)
        return keel_req_is_finished(r) ? KEEL_DONE : KEEL_SUSPEND;
    call_end(c);
    if (rc == KEEL_EINVAL)
        keel_respond_problem(r, 400, "invalid key");
    else if (rc == KEEL_ETOOBIG)
        keel_respond_problem(r, 413, "the value is too large");
    else
        unavailable(r);
    return KEEL_DONE;
}

/* ---------------------------------------------------------------- GET */

static void got(void *arg, int status, json_t *value)
{
    call *c = arg;
    if (value)
        keel_respond_json(c->r, 200, json_pack("{s:s,s:O}", "key", c->key, "value", value));
    else if (status < 0)
        unavailable(c->r);
    else
        keel_respond_problem(c->r, 404, "no cached value for this key");
    call_end(c);
}

static keel_flow h_get(keel_req *r)
{
    const char *key = key_of(r);
    if (!key)
        return KEEL_DONE;
    call *c = call_new(r, key);
    return started(r, c, keel_cache_get(C, keel_req_worker(r), NS, key, got, c));
}

/* ---------------------------------------------------------------- PUT */

static void stored(void *arg, int status)
{
    call *c = arg;
    if (status < 0)
        unavailable(c->r);
    else
        keel_respond(c->r, 204, NULL, NULL, 0);
    call_end(c);
}

static keel_flow h_put(keel_req *r)
{
    const char *key = key_of(r);
    if (!key)
        return KEEL_DONE;
    json_t *body = app_json_body(r);
    if (!body)
        return KEEL_DONE;
    json_t *value = json_object_get(body, "value"), *ttl = json_object_get(body, "ttl_seconds");
    if (!json_is_object(body) || !value) {
        keel_respond_problem_ex(r, 422, NULL, "the request body is not valid",
                                json_pack("{s:[{s:s,s:s}]}", "errors", "pointer", "/value",
                                          "message", "value is required"));
        return KEEL_DONE;
    }
    json_int_t ttl_s = 0;
    if (ttl) {
        ttl_s = json_is_integer(ttl) ? json_integer_value(ttl) : -1;
        if (ttl_s < 1 || ttl_s > TTL_MAX_S) {
            keel_respond_problem_ex(r, 422, NULL, "the request body is not valid",
                                    json_pack("{s:[{s:s,s:s}]}", "errors", "pointer",
                                              "/ttl_seconds", "message",
                                              "must be an integer from 1 to 2592000"));
            return KEEL_DONE;
        }
    }
    call *c = call_new(r, key);
    return started(r, c, keel_cache_set(C, keel_req_worker(r), NS, key, value,
                                        (uint64_t)ttl_s * 1000, stored, c));
}

/* ---------------------------------------------------------------- DELETE */

static void deleted(void *arg, int status)
{
    call *c = arg;
    if (status == KEEL_ENOTFOUND)
        keel_respond_problem(c->r, 404, "no cached value for this key");
    else if (status < 0)
        unavailable(c->r);
    else
        keel_respond(c->r, 204, NULL, NULL, 0);
    call_end(c);
}

static keel_flow h_delete(keel_req *r)
{
    const char *key = key_of(r);
    if (!key)
        return KEEL_DONE;
    call *c = call_new(r, key);
    return started(r, c, keel_cache_del(C, keel_req_worker(r), NS, key, deleted, c));
}

/* ---------------------------------------------------------------- routes */

#define S_KEY                                                                                     \
    "{\"type\":\"object\",\"properties\":{\"key\":{\"type\":\"string\",\"minLength\":1,"          \
    "\"maxLength\":128,\"pattern\":\"^[A-Za-z0-9._:-]+$\"}}}"

static const keel_route cache_routes[] = {
    {.name = "distributed.cache.get", .method = "GET", .path = "/distributed/cache/:key",
     .handler = h_get, .summary = "Read a value of the shared cache (404 when absent)",
     .auth = "any", .permission = "admin:access", .params_schema = S_KEY},
    {.name = "distributed.cache.put", .method = "PUT", .path = "/distributed/cache/:key",
     .handler = h_put, .summary = "Store a JSON value in the shared cache, with a TTL",
     .auth = "any", .permission = "admin:access", .params_schema = S_KEY,
     .request_schema = "{\"type\":\"object\",\"required\":[\"value\"],\"additionalProperties\":"
                       "false,\"properties\":{\"value\":{},\"ttl_seconds\":{\"type\":\"integer\","
                       "\"minimum\":1,\"maximum\":2592000}}}"},
    {.name = "distributed.cache.delete", .method = "DELETE", .path = "/distributed/cache/:key",
     .handler = h_delete, .summary = "Delete a value of the shared cache (404 when absent)",
     .auth = "any", .permission = "admin:access", .params_schema = S_KEY},
};

int app_dist_cache_setup(keel_service *svc)
{
    C = keel_service_cache(svc);
    return keel_service_add_routes(svc, cache_routes, sizeof(cache_routes) / sizeof(cache_routes[0]));
}
