/* keel/mw.h — keel's standard middleware. Each constructor returns a
 * middleware table to pass to keel_server_use(); each declares its phase
 * (keel/server.h, docs/extending.md), which decides where it runs. */
#ifndef KEEL_MW_H
#define KEEL_MW_H

#include "auth.h"
#include "metrics.h"
#include "net.h"
#include "schema.h"
#include "server.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Request id and W3C trace context: accepts a well-formed X-Request-Id or
 * X-Correlation-Id (1..128 of [A-Za-z0-9._:-]) or generates one, echoes it
 * as X-Request-Id; parses `traceparent` (continuing its trace) or starts a
 * new trace. */
keel_middleware keel_mw_request_id(void);
/* The same with tracing (keel/trace.h): the trace context is decided by
 * the tracer (sampling, a server span per sampled request, ended when the
 * request completes, X-Trace-Id on every response); t NULL is
 * keel_mw_request_id(). */
struct keel_tracer;
keel_middleware keel_mw_request_id_traced(struct keel_tracer *t);

/* Whether an incoming request id is acceptable as-is. */
int keel_request_id_valid(keel_str id);

/* One JSON log line per request when `all` is set (ACCESS_LOG); requests
 * slower than slow_ms are logged at warn either way. Routes flagged
 * KEEL_ROUTE_NO_LOG are skipped unless slow or failing (5xx). */
keel_middleware keel_mw_access_log(int all, uint64_t slow_ms);

/* http_requests_total{method,route,status} and
 * http_request_duration_seconds{method,route}, declared in m. */
keel_middleware keel_mw_http_metrics(keel_metrics *m);
/* Declares at 0 (keel_metric_declare) http_responses_total{method,route,
 * class} for every class (1xx .. 5xx) of every route of the table, so an
 * error-rate alert has its series before the first error. Call once the
 * routes are added (keel_main does). Cardinality: routes x 5, plus the
 * "unmatched" route label. */
void keel_mw_http_metrics_declare_routes(keel_metrics *m, const keel_route *const *routes,
                                         size_t n);

/* Edge protection's options (keel/config.h; src/mw/edge.c): security
 * headers, CORS, compression, load shedding. keel_config_get(cfg,
 * &keel_edge_config). An empty header value sends no such header. */
typedef struct keel_edge_options {
    int security_headers;   /* SECURITY_HEADERS */
    char *csp;              /* CSP: Content-Security-Policy */
    char *frame_options;    /* FRAME_OPTIONS: X-Frame-Options */
    char *referrer_policy;  /* REFERRER_POLICY */
    char *coop;             /* CROSS_ORIGIN_OPENER_POLICY */
    char *corp;             /* CROSS_ORIGIN_RESOURCE_POLICY */
    int nosniff;            /* CONTENT_TYPE_NOSNIFF: X-Content-Type-Options */
    uint64_t hsts_max_age;  /* HSTS_MAX_AGE, seconds; 0 = no HSTS */
    char *cors_origin;      /* CORS_ORIGIN */
    int cors_credentials;   /* CORS_CREDENTIALS */
    uint64_t cors_max_age;  /* CORS_MAX_AGE, seconds */
    char *cors_methods;     /* CORS_METHODS */
    char *cors_headers;     /* CORS_HEADERS */
    int compression;        /* COMPRESSION */
    uint64_t compression_min_bytes; /* COMPRESSION_MIN_BYTES */
    uint64_t shed_loop_lag_ms;  /* SHED_LOOP_LAG; 0 = off */
    uint64_t shed_in_flight;    /* SHED_IN_FLIGHT, per worker; 0 = off */
    uint64_t shed_rss_bytes;    /* SHED_RSS; 0 = off */
} keel_edge_options;

extern const keel_config_module keel_edge_config;

/* Security headers (Content-Security-Policy, X-Content-Type-Options,
 * X-Frame-Options, Referrer-Policy, Cross-Origin-Opener/Resource-Policy;
 * Strict-Transport-Security when X-Forwarded-Proto: https comes from a
 * TRUST_PROXY peer; Cache-Control: no-store on KEEL_ROUTE_SECRET routes)
 * on every response, each only when the handler did not set it. Values
 * from cfg's keel_edge_options (copied); an empty value sends no such
 * header. TRUST_PROXY must have been checked with keel_cidr_parse_list (an invalid list here
 * trusts no one). */
keel_middleware keel_mw_security_headers(const keel_config *cfg);

/* CORS from cfg's keel_edge_options (CORS_ORIGIN, CORS_CREDENTIALS, CORS_MAX_AGE,
 * CORS_METHODS, CORS_HEADERS; copied): answers preflights from allowed
 * origins with 204 and from others with 403 problem+json; other requests
 * from allowed origins get Access-Control-Allow-Origin. See src/mw/cors.c. */
keel_middleware keel_mw_cors(const keel_config *cfg);

/* gzip for complete responses of at least min_bytes whose client accepts
 * it (never streams, secret routes or already-compressed types). */
keel_middleware keel_mw_compress(uint64_t min_bytes);

/* Whether an Accept-Encoding value allows gzip: gzip (or x-gzip) named
 * with q > 0, or not named and `*` with q > 0. A missing header (NULL
 * view) or a malformed qvalue means no. */
int keel_accept_gzip(keel_str accept_encoding);

/* ---------------------------------------------------------------- authentication */

/* Loads what the token alone cannot tell: whether the user still exists
 * and is active, its current role, and whether the token was revoked
 * (logout) or issued before a logout-all. Runs asynchronously (a database
 * query): call done(r, arg, status, role) exactly once on r's loop;
 * status 0 = valid (role: the current role, copied), KEEL_EACCES =
 * revoked/disabled/unknown, other negative = could not check (503). */
typedef void (*keel_auth_done_fn)(keel_req *r, void *arg, int status, const char *role);
typedef struct keel_auth_store {
    void (*check_user)(void *self, keel_req *r, const keel_jwt_claims *claims,
                       keel_auth_done_fn done, void *arg);
    /* API keys: verify the presented key; done's role carries the scopes
     * and the key id is written to id_out (64 bytes) before done. */
    void (*check_apikey)(void *self, keel_req *r, const char *key, size_t len,
                         char *id_out, keel_auth_done_fn done, void *arg);
    void *self;
} keel_auth_store;

/* Authentication (phase AUTHN; reads the route field `auth`): for routes
 * with `auth` "user" (a Bearer access token), "apikey" (X-API-Key) or
 * "any" (either): 401 problem+json with WWW-Authenticate for missing or
 * bad credentials; sets KEEL_PRINCIPAL and the rate limiter's
 * KEEL_RL_SUBJECT ("user:<id>" / "apikey:<id>"). Routes without auth pass
 * through untouched. Authorization headers over KEEL_JWT_MAX_LEN are
 * refused before any parsing. Any other `auth` value stops start-up
 * (keel_auth_check_route). cfg is copied; store must outlive it. */
keel_middleware keel_mw_auth(const keel_jwt_cfg *cfg, keel_auth_store store);
int keel_auth_check_route(const keel_route *rt, void *data, char *why, size_t cap);

/* Authorization (phase AUTHZ; reads the route field `permission`): 403
 * problem+json when the authenticated principal does not hold the route's
 * permission (401 if, somehow, no one was authenticated). At start-up a
 * route with a permission but no `auth`, or with a permission no role
 * grants (keel_permission_known), is refused. keel_service_use_auth
 * installs it with keel_mw_auth. */
keel_middleware keel_mw_authz(void);

/* ---------------------------------------------------------------- validation */

/* The compiled schemas of one route (NULL where it declares none). */
typedef struct keel_route_schemas {
    keel_schema *request;
    keel_schema *response;
    keel_schema *query;
    keel_schema *params;
} keel_route_schemas;

/* The schemas of a route table, compiled once, before the server starts;
 * afterwards only read (by any worker). */
typedef struct keel_validator keel_validator;

keel_validator *keel_validator_new(void);
/* NULL is a no-op. After the server that uses it is freed. */
void keel_validator_free(keel_validator *v);

/* Compiles every schema slot of routes[0..n) (e.g. keel_server_routes'
 * table; routes already added are skipped) with the formats added so far.
 * A request_schema is compiled closed (keel_schema_options.closed): an
 * object that lists properties and says nothing of additionalProperties
 * refuses other members. query_schema and
 * params_schema must describe objects, and params_schema may only name
 * parameters of the path. Returns 0, or KEEL_EINVAL for the first bad
 * schema: one line in err[0..cap) and an error log naming the route, the
 * slot and the reason ("route demo.validate (POST /validate):
 * request_schema: at /properties/age: unknown type \"int\""). */
int keel_validator_add_routes(keel_validator *v, const keel_route *const *routes, size_t n,
                              char *err, size_t cap);

/* The compiled schemas of a route, or NULL when it declares none. */
const keel_route_schemas *keel_validator_lookup(const keel_validator *v,
                                                const keel_route *route);

/* Adds a string format of the application's own (f is copied; its name
 * and data are borrowed and must outlive v) to the schemas compiled
 * after it: add formats before keel_validator_add_routes. Returns 0;
 * KEEL_EEXISTS for a name keel or an earlier format has; KEEL_EINVAL
 * without a name or a check, or past KEEL_VALIDATOR_MAX_FORMATS. */
#define KEEL_VALIDATOR_MAX_FORMATS 16
int keel_validator_add_format(keel_validator *v, const keel_schema_format *f);

/* The "password" format: keel's password policy (keel_password_weakness:
 * at least *min_bytes bytes, at most KEEL_PASSWORD_MAX, not one of the
 * most common passwords) as a schema format, so that a route declares
 * {"type": "string", "format": "password"} and one 422 reports a weak
 * password beside every other invalid field. *min_bytes is the
 * application's (PASSWORD_MIN_LENGTH), read when a value is checked and
 * when the route's schema is compiled (the effective schema carries
 * "x-keel-password": {"minBytes", "maxBytes", "refusesCommon"} for API
 * documents); it must outlive the validator. */
keel_schema_format keel_password_format(const uint64_t *min_bytes);

/* Enforces the request_schema, query_schema and params_schema of the
 * matched route (v is borrowed: it must outlive the server): 415 for a
 * body that is not JSON, 413 past JSON_BODY_LIMIT, 400 for malformed JSON
 * (the byte offset in detail and `offset`) or a malformed query string,
 * 422 with `errors: [{in, pointer, message}]` listing every invalid field
 * (in: "body", "query" or "path"; at most KEEL_SCHEMA_MAX_ERRORS). Routes
 * without schemas pass through untouched. See docs/api.md. */
keel_middleware keel_mw_validate(keel_validator *v);

/* After keel_mw_validate let the request through: the query string (path
 * parameters) of a route with a query_schema (params_schema) as a JSON
 * object, values coerced to the declared types — {"ms": 250} for
 * ?ms=250 with "type": "integer". Borrowed, like every keel_req_*_json
 * (see keel_req_json in keel/json.h): owned by the request, released when
 * it ends, never decref'd by the caller. NULL when the route declares no
 * such schema. */
struct json_t *keel_req_query_json(const keel_req *r);
struct json_t *keel_req_params_json(const keel_req *r);

/* ---------------------------------------------------------------- load */

/* Load shedding (SHED_LOOP_LAG, SHED_IN_FLIGHT, SHED_RSS, keel_edge_options):
 * 503 + Retry-After for new requests while the worker is over a limit;
 * KEEL_ROUTE_INTERNAL routes exempt; load_shed_total{reason} in m. The
 * middleware owns s. keel_shed_active answers 1 while shedding (a
 * refusal in the last second, or RSS over its limit) with a line in
 * detail — a critical readiness check. Thread-safe. */
typedef struct keel_shed keel_shed;
keel_shed *keel_shed_new(const keel_config *cfg, keel_metrics *m);
keel_middleware keel_mw_shed(keel_shed *s);
int keel_shed_active(keel_shed *s, char *detail, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
