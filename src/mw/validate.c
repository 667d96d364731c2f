/* validate.c — declarative request validation: the schemas a route
 * declares (request_schema, query_schema, params_schema) are compiled once
 * at start-up by keel_validator_add_routes and enforced here before the
 * handler runs.
 *
 * For a route with schemas, in this order:
 *   1. request_schema: the body must be JSON (415), within JSON_BODY_LIMIT
 *      (413) and well-formed within JSON_MAX_DEPTH (400 with the byte
 *      offset) — keel_req_json, which keeps the parsed value on the
 *      request so the handler's own keel_req_json does not parse again;
 *   2. the path parameters and the query string become JSON objects of
 *      strings, each coerced to the type its property declares (integer,
 *      number, boolean; a repeated query key becomes an array when the
 *      property is an array) — a malformed query string is 400;
 *   3. everything is validated and every failure is reported in one 422
 *      problem with `errors: [{in, pointer, message}, ...]` — members of
 *      a body that its schema does not name among them (bodies are
 *      compiled closed), and policies the application declared as
 *      formats ("format": "password", keel_password_format).
 * The coerced objects are left on the request for the handler
 * (keel_req_query_json, keel_req_params_json).
 *
 * The route table is an open-addressing hash on the route's address,
 * filled before the server starts and only read afterwards, so workers
 * share it without a lock.
 */
#include <jansson.h>
#include <stdio.h>

#include "keel/json.h"
#include "keel/log.h"
#include "keel/mw.h"

#define QUERY_LOCAL "keel.query"
#define PARAMS_LOCAL "keel.params"

typedef struct vslot {
    const keel_route *route;
    keel_route_schemas s;
} vslot;

struct keel_validator {
    vslot *slots;
    size_t cap, n;
    /* the application's formats: a fixed array, as compiled schemas point
     * into it */
    keel_schema_format formats[KEEL_VALIDATOR_MAX_FORMATS];
    size_t nformats;
};

static size_t hash_ptr(const void *p, size_t cap)
{
    uint64_t h = (uint64_t)(uintptr_t)p;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return (size_t)h & (cap - 1);
}

keel_validator *keel_validator_new(void)
{
    return keel_calloc(1, sizeof(keel_validator));
}

static void schemas_free(keel_route_schemas *s)
{
    keel_schema_free(s->request);
    keel_schema_free(s->response);
    keel_schema_free(s->query);
    keel_schema_free(s->params);
}

void keel_validator_free(keel_validator *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->cap; i++)
        if (v->slots[i].route)
            schemas_free(&v->slots[i].s);
    keel_free(v->slots);
    keel_free(v);
}

static vslot *find(const keel_validator *v, const keel_route *rt)
{
    if (!v->cap)
        return NULL;
    for (size_t i = hash_ptr(rt, v->cap);; i = (i + 1) & (v->cap - 1)) {
        if (v->slots[i].route == rt || !v->slots[i].route)
            return &v->slots[i];
    }
}

const keel_route_schemas *keel_validator_lookup(const keel_validator *v, const keel_route *rt)
{
    vslot *s = v && rt ? find(v, rt) : NULL;
    return s && s->route ? &s->s : NULL;
}

static void grow(keel_validator *v)
{
    size_t old_cap = v->cap;
    vslot *old = v->slots;
    v->cap = v->cap ? v->cap * 2 : 16;
    v->slots = keel_calloc(v->cap, sizeof(vslot));
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].route)
            *find(v, old[i].route) = old[i];
    keel_free(old);
}

/* A path pattern's parameter names, checked against params_schema: a
 * property that is not a parameter of the path is a mistake. */
static int path_has_param(const char *pattern, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = pattern; (p = strchr(p, '/')) != NULL;) {
        p++;
        if (*p == ':' || *p == '*') {
            const char *e = strchr(p, '/');
            size_t len = e ? (size_t)(e - p - 1) : strlen(p + 1);
            if (len == n && !memcmp(p + 1, name, n))
                return 1;
        }
    }
    return 0;
}

static int compile_slot(const keel_validator *v, const keel_route *rt, const char *slot,
                        const char *text, keel_schema **out, char *err, size_t cap)
{
    *out = NULL;
    if (!text)
        return 0;
    char why[256];
    /* Bodies are closed by default: a member the schema does not name is
     * refused, not silently ignored ({"role": "admin"} in a registration).
     * Queries stay open (caches and proxies add parameters of their own). */
    keel_schema_options opts = {.formats = v->formats, .nformats = v->nformats,
                                .closed = !strcmp(slot, "request_schema")};
    *out = keel_schema_compile_with(text, &opts, why, sizeof(why));
    if (*out && (!strcmp(slot, "query_schema") || !strcmp(slot, "params_schema"))) {
        /* values come from strings by name: the schema must describe an object */
        json_t *j = keel_schema_json(*out);
        const char *k;
        json_t *p;
        if (!(keel_schema_types(*out) & KEEL_SCHEMA_OBJECT)) {
            snprintf(why, sizeof(why), "must be an object schema");
            goto bad;
        }
        json_object_foreach(json_object_get(j, "properties"), k, p) {
            if (!strcmp(slot, "params_schema") && !path_has_param(rt->path, k)) {
                snprintf(why, sizeof(why), "\"%s\" is not a parameter of the path", k);
                goto bad;
            }
        }
    }
    if (*out)
        return 0;
bad:
    keel_schema_free(*out);
    *out = NULL;
    snprintf(err, cap, "route %s (%s %s): %s: %s", rt->name ? rt->name : "?", rt->method,
             rt->path, slot, why);
    keel_log(KEEL_LOG_ERROR, "invalid route schema", "{s:s,s:s,s:s,s:s,s:s}", "name",
             rt->name ? rt->name : "?", "method", rt->method, "path", rt->path, "slot", slot,
             "error", why);
    return KEEL_EINVAL;
}

int keel_validator_add_routes(keel_validator *v, const keel_route *const *routes, size_t n,
                              char *err, size_t cap)
{
    char scratch[8];
    if (!err || !cap) {
        err = scratch;
        cap = sizeof(scratch);
    }
    err[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        const keel_route *rt = routes[i];
        if (!rt->request_schema && !rt->response_schema && !rt->query_schema &&
            !rt->params_schema)
            continue;
        if (keel_validator_lookup(v, rt))
            continue;
        keel_route_schemas s = {0};
        if (compile_slot(v, rt, "request_schema", rt->request_schema, &s.request, err, cap) < 0 ||
            compile_slot(v, rt, "response_schema", rt->response_schema, &s.response, err, cap) <
                0 ||
            compile_slot(v, rt, "query_schema", rt->query_schema, &s.query, err, cap) < 0 ||
            compile_slot(v, rt, "params_schema", rt->params_schema, &s.params, err, cap) < 0) {
            schemas_free(&s);
            return KEEL_EINVAL;
        }
        if ((v->n + 1) * 2 > v->cap)
            grow(v);
        vslot *slot = find(v, rt);
        slot->route = rt;
        slot->s = s;
        v->n++;
    }
    return 0;
}

int keel_validator_add_format(keel_validator *v, const keel_schema_format *f)
{
    static const char *const own[] = {"email", "uuid", "date-time", "uri"};
    if (!f || !f->name || !*f->name || !f->check || v->nformats == KEEL_VALIDATOR_MAX_FORMATS)
        return KEEL_EINVAL;
    for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
        if (!strcmp(f->name, own[i]))
            return KEEL_EEXISTS;
    for (size_t i = 0; i < v->nformats; i++)
        if (!strcmp(f->name, v->formats[i].name))
            return KEEL_EEXISTS;
    v->formats[v->nformats++] = *f;
    return 0;
}

/* ---------------------------------------------------------------- password format */

static const char *password_check(const char *s, size_t n, void *data)
{
    const uint64_t *min = data;
    return keel_password_weakness(s, n, (size_t)*min);
}

static json_t *password_describe(void *data)
{
    const uint64_t *min = data;
    return json_pack("{s:{s:I,s:I,s:b}}", "x-keel-password", "minBytes", (json_int_t)*min,
                     "maxBytes", (json_int_t)KEEL_PASSWORD_MAX, "refusesCommon", 1);
}

keel_schema_format keel_password_format(const uint64_t *min_bytes)
{
    keel_schema_format f = {.name = "password", .check = password_check,
                            .describe = password_describe, .data = (void *)min_bytes};
    return f;
}

/* ---------------------------------------------------------------- request side */

json_t *keel_req_query_json(const keel_req *r)
{
    return keel_req_get_local(r, QUERY_LOCAL);
}

json_t *keel_req_params_json(const keel_req *r)
{
    return keel_req_get_local(r, PARAMS_LOCAL);
}

static void release_json(void *v)
{
    json_decref(v);
}

static void keep(keel_req *r, const char *key, json_t *v)
{
    keel_req_set_local(r, key, v);
    keel_arena_defer(keel_req_arena(r), release_json, v);
}

/* The path parameters named in the pattern, coerced. NULL when a value is
 * not UTF-8 (jansson holds only UTF-8). */
static json_t *params_object(keel_req *r, const keel_route *rt, const keel_schema *s)
{
    json_t *obj = json_object();
    for (const char *p = rt->path; (p = strchr(p, '/')) != NULL;) {
        p++;
        if (*p != ':' && *p != '*')
            continue;
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p - 1) : strlen(p + 1);
        char name[128];
        if (len >= sizeof(name))
            continue;
        memcpy(name, p + 1, len);
        name[len] = '\0';
        keel_str val = keel_req_param(r, name);
        if (!val.ptr)
            continue;
        json_t *jv = keel_schema_coerce(keel_schema_property(s, name), val.ptr, val.len);
        if (!jv) {
            json_decref(obj);
            return NULL;
        }
        json_object_set_new(obj, name, jv);
    }
    return obj;
}

/* {in: query, pointer: "/key" (RFC 6901), message}. */
static json_t *query_error(const char *key, size_t klen, const char *msg)
{
    keel_buf p = {0};
    keel_buf_append(&p, "/", 1);
    for (size_t c = 0; c < klen; c++) {
        if (key[c] == '~')
            keel_buf_append(&p, "~0", 2);
        else if (key[c] == '/')
            keel_buf_append(&p, "~1", 2);
        else
            keel_buf_append(&p, &key[c], 1);
    }
    json_t *e = json_pack("{s:s,s:s%,s:s}", "in", "query", "pointer", p.data, p.len, "message",
                          msg);
    keel_buf_free(&p);
    return e;
}

/* The query string as an object; NULL (after answering 400) when it is
 * malformed. Repeated keys of array properties make arrays; of others,
 * an error in `errors`. */
static json_t *query_object(keel_req *r, const keel_schema *s, json_t *errors)
{
    keel_str q = keel_req_query(r);
    json_t *obj = json_object();
    keel_arena *a = keel_req_arena(r);
    size_t i = 0;
    while (i < q.len) {
        size_t start = i;
        while (i < q.len && q.ptr[i] != '&')
            i++;
        keel_str pair = {q.ptr + start, i - start};
        i++;
        if (!pair.len)
            continue;
        const char *eq = memchr(pair.ptr, '=', pair.len);
        keel_str ks = {pair.ptr, eq ? (size_t)(eq - pair.ptr) : pair.len};
        keel_str vs = eq ? (keel_str){eq + 1, pair.len - ks.len - 1} : KEEL_STR("");
        size_t klen, vlen;
        char *k = keel_url_decode(a, ks, 1, &klen);
        char *val = keel_url_decode(a, vs, 1, &vlen);
        json_t *key = k && val ? json_stringn(k, klen) : NULL; /* NULL: not UTF-8 */
        const keel_schema *ps = key ? keel_schema_property(s, k) : NULL;
        int is_array = ps && (keel_schema_types(ps) & KEEL_SCHEMA_ARRAY) &&
                       keel_schema_types(ps) != KEEL_SCHEMA_ANY;
        json_t *jv = key ? keel_schema_coerce(is_array ? keel_schema_items(ps) : ps, val, vlen)
                         : NULL;
        json_decref(key);
        if (!jv) {
            json_decref(obj);
            keel_respond_problem(r, 400,
                                 "malformed query string (bad percent-encoding or not UTF-8)");
            return NULL;
        }
        json_t *cur = json_object_get(obj, k);
        if (is_array) {
            if (!cur) {
                cur = json_array();
                json_object_set_new(obj, k, cur);
            }
            json_array_append_new(cur, jv);
        } else if (cur) {
            json_decref(jv);
            if (json_array_size(errors) < KEEL_SCHEMA_MAX_ERRORS)
                json_array_append_new(errors, query_error(k, klen, "must not be repeated"));
        } else {
            json_object_set_new(obj, k, jv);
        }
    }
    return obj;
}

/* Validates v into `errors`, each error tagged with `in`. Returns 1 when
 * the report was cut at KEEL_SCHEMA_MAX_ERRORS. */
static int check_into(const keel_schema *s, const json_t *v, const char *in, json_t *errors)
{
    size_t room = KEEL_SCHEMA_MAX_ERRORS - json_array_size(errors);
    json_t *found = json_array();
    size_t n = keel_schema_validate(s, v, found, room);
    size_t idx;
    json_t *e;
    json_array_foreach(found, idx, e) {
        json_array_append_new(errors, json_pack("{s:s,s:O,s:O}", "in", in, "pointer",
                                                json_object_get(e, "pointer"), "message",
                                                json_object_get(e, "message")));
    }
    json_decref(found);
    return n > room;
}

static keel_flow on_request(keel_req *r, void *data)
{
    const keel_route *rt = keel_req_route(r);
    const keel_route_schemas *s = keel_validator_lookup(data, rt);
    if (!s || (!s->request && !s->query && !s->params))
        return KEEL_NEXT;
    json_t *body = NULL;
    if (s->request && !(body = keel_req_json(r)))
        return KEEL_DONE; /* 415, 413 or 400 sent */
    json_t *errors = json_array();
    int cut = 0;
    if (s->params) {
        json_t *p = params_object(r, rt, s->params);
        if (!p) {
            json_decref(errors);
            keel_respond_problem(r, 400, "malformed path parameter (not UTF-8)");
            return KEEL_DONE;
        }
        keep(r, PARAMS_LOCAL, p);
        cut |= check_into(s->params, p, "path", errors);
    }
    if (s->query) {
        json_t *q = query_object(r, s->query, errors);
        if (!q) {
            json_decref(errors);
            return KEEL_DONE;
        }
        keep(r, QUERY_LOCAL, q);
        if (json_array_size(errors) < KEEL_SCHEMA_MAX_ERRORS)
            cut |= check_into(s->query, q, "query", errors);
    }
    if (body && json_array_size(errors) < KEEL_SCHEMA_MAX_ERRORS)
        cut |= check_into(s->request, body, "body", errors);
    size_t n = json_array_size(errors);
    if (!n) {
        json_decref(errors);
        return KEEL_NEXT;
    }
    char detail[128];
    if (cut)
        snprintf(detail, sizeof(detail), "more than %zu fields are invalid; the first %zu are "
                 "listed in errors", n, n);
    else
        snprintf(detail, sizeof(detail), "%zu field%s invalid (see errors)", n,
                 n == 1 ? " is" : "s are");
    keel_respond_problem_ex(r, 422, NULL, detail, json_pack("{s:o}", "errors", errors));
    return KEEL_DONE;
}

keel_middleware keel_mw_validate(keel_validator *v)
{
    static const char *const reads[] = {"request_schema", "response_schema", "query_schema",
                                        "params_schema", NULL};
    keel_middleware m = {.name = "validate", .phase = KEEL_PHASE_VALIDATE,
                         .on_request = on_request, .data = v, .reads = reads};
    return m;
}
