/* config.c — the configuration table: every variable keel reads, with its
 * default, its parser and its help line. One table drives loading,
 * --print-config and docs/configuration.md. */
#include "keel/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

enum kind { K_STR, K_BOOL, K_PORT, K_UINT, K_DURATION, K_SIZE, K_LEVEL,
            K_FORMAT, K_ENV, K_URL_DB, K_URL_REDIS };

typedef struct var {
    const char *name;
    const char *def;
    enum kind kind;
    size_t off;
    uint64_t min, max; /* for K_UINT / K_DURATION / K_SIZE */
    int secret;
    const char *help;
} var;

#define OFF(f) offsetof(keel_config, f)
#define U64MAX UINT64_MAX

static const var vars[] = {
    {"KEEL_ENV", "development", K_ENV, OFF(env), 0, 0, 0,
     "development, production or test; production refuses unsafe settings"},
    {"SERVICE_NAME", "keel", K_STR, OFF(service_name), 0, 0, 0,
     "service name in logs, traces and /distributed/info"},
    {"HOST", "0.0.0.0", K_STR, OFF(host), 0, 0, 0, "address to listen on"},
    {"PORT", "8080", K_PORT, OFF(port), 0, 0, 0, "TCP port to listen on"},
    {"WORKERS", "0", K_UINT, OFF(workers), 0, 256, 0,
     "worker threads, each with its own loop and listener; 0 = number of cores"},
    {"SERVER_HEADER", "keel", K_STR, OFF(server_header), 0, 0, 0,
     "value of the Server response header; empty to send none"},
    {"ENABLE_DEMO_ROUTES", "", K_BOOL, OFF(demo_routes), 0, 0, 0,
     "serve /hello, /json, /echo (benchmark routes); default true, false in production"},
    {"BODY_LIMIT", "1mb", K_SIZE, OFF(body_limit), 0, 1ull << 32, 0,
     "largest request body accepted (413 beyond)"},
    {"MAX_REQUEST_LINE", "8kb", K_SIZE, OFF(max_request_line), 64, 1 << 20, 0,
     "longest request line (414 beyond)"},
    {"MAX_HEADER_SIZE", "8kb", K_SIZE, OFF(max_header_size), 64, 1 << 20, 0,
     "longest header field line (431 beyond)"},
    {"MAX_HEADERS", "100", K_UINT, OFF(max_headers), 1, 1000, 0,
     "most header fields in a request (431 beyond)"},
    {"MAX_HEAD_SIZE", "64kb", K_SIZE, OFF(max_head_size), 256, 1 << 24, 0,
     "largest request head, request line and fields together (431 beyond)"},
    {"HEADER_TIMEOUT", "10s", K_DURATION, OFF(header_timeout_ms), 100, U64MAX, 0,
     "time to receive a whole request head (408 beyond)"},
    {"BODY_TIMEOUT", "30s", K_DURATION, OFF(body_timeout_ms), 100, U64MAX, 0,
     "longest pause while receiving a request body (408 beyond)"},
    {"KEEPALIVE_TIMEOUT", "5s", K_DURATION, OFF(keepalive_timeout_ms), 100, U64MAX, 0,
     "idle keep-alive connections are closed after this"},
    {"WRITE_TIMEOUT", "30s", K_DURATION, OFF(write_timeout_ms), 100, U64MAX, 0,
     "longest a response may wait for a slow reader before the connection is closed"},
    {"HANDLER_TIMEOUT", "30s", K_DURATION, OFF(handler_timeout_ms), 10, U64MAX, 0,
     "handler deadline (503 beyond); a route may set its own"},
    {"SHUTDOWN_GRACE", "30s", K_DURATION, OFF(shutdown_grace_ms), 0, U64MAX, 0,
     "on SIGTERM, how long in-flight requests may take to finish"},
    {"MAX_CONNECTIONS", "10000", K_UINT, OFF(max_connections), 1, 1000000, 0,
     "open connections per worker (503 and close beyond)"},
    {"OUTPUT_BUFFER_MAX", "4mb", K_SIZE, OFF(output_buffer_max), 4096, 1ull << 32, 0,
     "unsent response bytes per connection before keel stops reading from it"},
    {"MAX_REQUESTS_PER_CONNECTION", "0", K_UINT, OFF(max_requests_per_conn), 0, U64MAX, 0,
     "requests on one keep-alive connection before it is closed; 0 = no cap"},
    {"JSON_BODY_LIMIT", "1mb", K_SIZE, OFF(json_body_limit), 2, 1ull << 32, 0,
     "largest JSON request body parsed (413 beyond; BODY_LIMIT still applies)"},
    {"JSON_MAX_DEPTH", "64", K_UINT, OFF(json_max_depth), 1, 1000, 0,
     "deepest nesting of arrays and objects in a JSON request body (400 beyond)"},
    {"API_DOCS", "true", K_BOOL, OFF(api_docs), 0, 0, 0,
     "serve the OpenAPI document at /openapi.json and its viewer at /docs"},
    {"WORK_POOL_SIZE", "4", K_UINT, OFF(work_threads), 1, 1024, 0,
     "threads for blocking work (SQL, password hashing)"},
    {"WORK_QUEUE_MAX", "1024", K_UINT, OFF(work_queue_max), 1, 10000000, 0,
     "queued blocking jobs before new ones get 503 with Retry-After"},
    {"LOG_LEVEL", "info", K_LEVEL, OFF(log_level), 0, 0, 0,
     "trace, debug, info, warn, error or fatal"},
    {"LOG_FORMAT", "json", K_FORMAT, OFF(log_pretty), 0, 0, 0,
     "json (one object per line) or pretty (for humans)"},
    {"LOG_FILE", "", K_STR, OFF(log_file), 0, 0, 0,
     "also append logs to this file, rotated by size; empty = stdout only"},
    {"LOG_FILE_MAX_SIZE", "100mb", K_SIZE, OFF(log_file_max_bytes), 4096, U64MAX, 0,
     "rotate LOG_FILE when it passes this size"},
    {"LOG_FILE_KEEP", "5", K_UINT, OFF(log_file_keep), 0, 100, 0,
     "rotated log files kept (FILE.1 .. FILE.N)"},
    {"ACCESS_LOG", "true", K_BOOL, OFF(access_log), 0, 0, 0,
     "one log line per request"},
    {"SLOW_REQUEST_THRESHOLD", "1000", K_DURATION, OFF(slow_request_ms), 0, U64MAX, 0,
     "requests slower than this (ms) are logged at warn"},
    {"DATABASE_URL", "sqlite:./data/keel.db", K_URL_DB, OFF(database_url), 0, 0, 1,
     "sqlite:PATH or postgres://user:pass@host:port/db"},
    {"DATABASE_POOL_MAX", "4", K_UINT, OFF(db_pool_max), 1, 256, 0,
     "database connections (one per database pool thread)"},
    {"DATABASE_POOL_MIN", "1", K_UINT, OFF(db_pool_min), 0, 256, 0,
     "connections kept open even when idle"},
    {"DATABASE_IDLE_TIMEOUT", "30s", K_DURATION, OFF(db_idle_timeout_ms), 0, U64MAX, 0,
     "idle connections above DATABASE_POOL_MIN are closed after this"},
    {"DATABASE_TIMEOUT", "5s", K_DURATION, OFF(db_connect_timeout_ms), 100, U64MAX, 0,
     "connect timeout"},
    {"DATABASE_STATEMENT_TIMEOUT", "10s", K_DURATION, OFF(db_statement_timeout_ms), 0, U64MAX, 0,
     "longest a statement may run (503 beyond); 0 = no limit"},
    {"DATABASE_QUEUE_MAX", "1024", K_UINT, OFF(db_queue_max), 1, 10000000, 0,
     "queries waiting for a connection before new ones get 503 with Retry-After"},
    {"ENABLE_QUERY_LOGGING", "false", K_BOOL, OFF(query_logging), 0, 0, 0,
     "log every query (SQL text and duration, never parameter values) at info"},
    {"SLOW_QUERY_THRESHOLD", "200", K_DURATION, OFF(slow_query_ms), 0, U64MAX, 0,
     "queries slower than this (ms) are logged at warn"},
    {"MIGRATE_ON_START", "true", K_BOOL, OFF(migrate_on_start), 0, 0, 0,
     "keel serve applies pending migrations before listening"},
    {"MIGRATIONS_DIR", "", K_STR, OFF(migrations_dir), 0, 0, 0,
     "read migrations from this directory instead of the compiled-in set"},
    {"REDIS_URL", "", K_URL_REDIS, OFF(redis_url), 0, 0, 1,
     "redis://[:password@]host:port/db; empty = in-process fallbacks"},
    {"REDIS_COMMAND_TIMEOUT", "500ms", K_DURATION, OFF(redis_timeout_ms), 10, U64MAX, 0,
     "a Redis command not answered within this fails, and the connection is reset"},
    {"REDIS_CONNECT_TIMEOUT", "2s", K_DURATION, OFF(redis_connect_timeout_ms), 10, U64MAX, 0,
     "time to establish a Redis connection"},
    {"REDIS_RECONNECT_MAX", "5s", K_DURATION, OFF(redis_reconnect_max_ms), 10, U64MAX, 0,
     "longest wait between reconnection attempts (exponential backoff with jitter)"},
    {"REDIS_KEY_PREFIX", "keel:", K_STR, OFF(redis_key_prefix), 0, 0, 0,
     "namespace in front of every Redis key and channel keel uses"},
    {"CACHE_MAX_ENTRIES", "10000", K_UINT, OFF(cache_max_entries), 1, 100000000, 0,
     "entries of the in-process cache (used without REDIS_URL); least recently used evicted"},
    {"CACHE_MAX_BYTES", "64mb", K_SIZE, OFF(cache_max_bytes), 4096, 1ull << 40, 0,
     "bytes of the in-process cache (keys, values and overhead)"},
    {"CACHE_DEFAULT_TTL", "5m", K_DURATION, OFF(cache_default_ttl_ms), 1, U64MAX, 0,
     "lifetime of a cached value stored without its own TTL"},
    {"USER_CACHE_TTL", "60s", K_DURATION, OFF(user_cache_ttl_ms), 0, U64MAX, 0,
     "GET /api/v1/users/:id is cached this long (invalidated on every write); 0 = not cached"},
    {"BREAKER_FAILURE_THRESHOLD", "5", K_UINT, OFF(breaker_failures), 1, 1000, 0,
     "failures within BREAKER_WINDOW that open a circuit breaker"},
    {"BREAKER_WINDOW", "10s", K_DURATION, OFF(breaker_window_ms), 1, U64MAX, 0,
     "window in which a circuit breaker counts failures"},
    {"BREAKER_RECOVERY_TIMEOUT", "5s", K_DURATION, OFF(breaker_recovery_ms), 1, U64MAX, 0,
     "time an open circuit breaker waits before letting probes through (half-open)"},
    {"BREAKER_HALF_OPEN_PROBES", "1", K_UINT, OFF(breaker_probes), 1, 1000, 0,
     "calls a half-open breaker lets through; all must succeed to close it"},
    {"INSTANCE_ID", "", K_STR, OFF(instance_id), 0, 0, 0,
     "this instance's id in events and /distributed/info; empty = hostname-pid"},
    {"REGION", "", K_STR, OFF(region), 0, 0, 0, "region shown in /distributed/info"},
    {"ZONE", "", K_STR, OFF(zone), 0, 0, 0, "zone shown in /distributed/info"},
    {"JWT_SECRET", "", K_STR, OFF(jwt_secret), 0, 0, 1,
     "HMAC key for access tokens; at least 32 bytes in production"},
    {"CORS_ORIGIN", "", K_STR, OFF(cors_origin), 0, 0, 0,
     "comma-separated allowed origins for CORS; empty = none"},
    {"OTEL_EXPORTER_OTLP_ENDPOINT", "", K_STR, OFF(otel_endpoint), 0, 0, 0,
     "OTLP/HTTP endpoint for traces; empty = no export"},
    {"OTEL_SERVICE_NAME", "", K_STR, OFF(otel_service_name), 0, 0, 0,
     "service name in traces (default SERVICE_NAME)"},
    {"SECURITY_HEADERS", "true", K_BOOL, OFF(security_headers), 0, 0, 0,
     "add the security headers below to every response; false = none of them"},
    {"CSP", "default-src 'none'; frame-ancestors 'none'", K_STR, OFF(csp), 0, 0, 0,
     "Content-Security-Policy for responses whose handler set none; empty = none"},
    {"FRAME_OPTIONS", "DENY", K_STR, OFF(frame_options), 0, 0, 0,
     "X-Frame-Options; empty = none"},
    {"REFERRER_POLICY", "no-referrer", K_STR, OFF(referrer_policy), 0, 0, 0,
     "Referrer-Policy; empty = none"},
    {"CROSS_ORIGIN_OPENER_POLICY", "same-origin", K_STR, OFF(coop), 0, 0, 0,
     "Cross-Origin-Opener-Policy; empty = none"},
    {"CROSS_ORIGIN_RESOURCE_POLICY", "same-origin", K_STR, OFF(corp), 0, 0, 0,
     "Cross-Origin-Resource-Policy; empty = none"},
    {"CONTENT_TYPE_NOSNIFF", "true", K_BOOL, OFF(nosniff), 0, 0, 0,
     "X-Content-Type-Options: nosniff"},
    {"HSTS_MAX_AGE", "15552000", K_UINT, OFF(hsts_max_age), 0, U64MAX, 0,
     "Strict-Transport-Security max-age (s, with includeSubDomains) on HTTPS requests "
     "(X-Forwarded-Proto: https from a TRUST_PROXY peer); 0 = none"},
    {"TRUST_PROXY", "", K_STR, OFF(trust_proxy), 0, 0, 0,
     "comma-separated IPv4/IPv6 addresses or CIDR blocks of proxies whose "
     "X-Forwarded-For/Forwarded and X-Forwarded-Proto are believed; empty = none"},
    {"TRUST_PROXY_ANY", "false", K_BOOL, OFF(trust_proxy_any), 0, 0, 0,
     "allow TRUST_PROXY to trust every address (0.0.0.0/0, ::/0); anyone could "
     "then pick the client address their limits are counted against"},
    {"TRUST_PROXY_HEADER", "x-forwarded-for", K_STR, OFF(trust_proxy_header), 0, 0, 0,
     "where trusted proxies put the client chain: x-forwarded-for or forwarded (RFC 7239)"},
    {"MAX_CONNECTIONS_PER_IP", "256", K_UINT, OFF(max_conns_per_ip), 0, 1000000, 0,
     "open connections per client address across workers (503 beyond; trusted "
     "proxies exempt); 0 = no cap"},
    {"CLIENT_IPV6_PREFIX", "64", K_UINT, OFF(client_ipv6_prefix), 1, 128, 0,
     "IPv6 clients are counted by their /N network for connection caps and rate limits"},
    {"CORS_CREDENTIALS", "false", K_BOOL, OFF(cors_credentials), 0, 0, 0,
     "Access-Control-Allow-Credentials: true for allowed origins; refused with CORS_ORIGIN=*"},
    {"CORS_MAX_AGE", "600", K_UINT, OFF(cors_max_age), 0, 86400, 0,
     "Access-Control-Max-Age (s) of preflight answers"},
    {"CORS_METHODS", "GET, HEAD, POST, PUT, PATCH, DELETE", K_STR, OFF(cors_methods), 0, 0, 0,
     "methods allowed cross-origin (Access-Control-Allow-Methods)"},
    {"CORS_HEADERS", "Content-Type, Authorization, X-Request-Id", K_STR, OFF(cors_headers),
     0, 0, 0, "request headers allowed cross-origin (Access-Control-Allow-Headers)"},
    {"COMPRESSION", "true", K_BOOL, OFF(compression), 0, 0, 0,
     "gzip responses when the client accepts it (never secret routes or streams)"},
    {"COMPRESSION_MIN_BYTES", "1024", K_SIZE, OFF(compression_min_bytes), 0, 1ull << 32, 0,
     "smallest response body worth compressing"},
    {"JWT_EXPIRES_IN", "15m", K_DURATION, OFF(jwt_ttl_ms), 1000, 86400000ull * 7, 0,
     "access token lifetime"},
    {"JWT_ISSUER", "keel", K_STR, OFF(jwt_issuer), 0, 0, 0, "iss of access tokens (checked)"},
    {"JWT_AUDIENCE", "keel-api", K_STR, OFF(jwt_audience), 0, 0, 0,
     "aud of access tokens (checked)"},
    {"REFRESH_TOKEN_EXPIRY", "7d", K_DURATION, OFF(refresh_ttl_ms), 60000, 86400000ull * 365, 0,
     "refresh token lifetime (each use rotates it)"},
    {"PASSWORD_MIN_LENGTH", "8", K_UINT, OFF(password_min), 8, 1024, 0,
     "shortest password accepted (bytes; at most 1024)"},
    {"PASSWORD_HASH_OPS", "2", K_UINT, OFF(password_ops), 1, 10, 0,
     "argon2id passes (libsodium opslimit)"},
    {"PASSWORD_HASH_MEMORY", "64mb", K_SIZE, OFF(password_mem), 8192, 1ull << 32, 0,
     "argon2id memory per hash (libsodium memlimit); hashes run on the work pool"},
    {"LOGIN_MAX_ATTEMPTS", "5", K_UINT, OFF(login_max_attempts), 1, 1000, 0,
     "failed logins before an account is locked"},
    {"LOGIN_LOCK_TIME", "1m", K_DURATION, OFF(login_lock_ms), 1000, U64MAX, 0,
     "first lock; each further failure doubles it"},
    {"LOGIN_LOCK_MAX", "1h", K_DURATION, OFF(login_lock_max_ms), 1000, U64MAX, 0,
     "longest lock"},
    {"RATE_LIMIT_ENABLED", "true", K_BOOL, OFF(rate_limit), 0, 0, 0,
     "per-client rate limits (GCRA; tiers per route, see docs/rate-limiting.md)"},
    {"RATE_LIMIT_MAX", "100", K_UINT, OFF(rate_limit_max), 1, U64MAX, 0,
     "general tier: requests per RATE_LIMIT_WINDOW per client"},
    {"RATE_LIMIT_WINDOW", "15m", K_DURATION, OFF(rate_limit_window_ms), 1, U64MAX, 0,
     "general tier window"},
    {"RATE_LIMIT_STRICT", "20/15m", K_STR, OFF(rate_limit_strict), 0, 0, 0,
     "strict tier, N/window (sensitive routes)"},
    {"RATE_LIMIT_AUTH", "5/15m", K_STR, OFF(rate_limit_auth), 0, 0, 0,
     "auth tier, N/window: login, register, refresh and password attempts"},
    {"RATE_LIMIT_PUBLIC", "300/1m", K_STR, OFF(rate_limit_public), 0, 0, 0,
     "public tier, N/window (cheap unauthenticated reads)"},
    {"RATE_LIMIT_BURST", "10/1s", K_STR, OFF(rate_limit_burst), 0, 0, 0,
     "burst protection on every limited route, N/window; 0 = off"},
    {"RATE_LIMIT_TIERS", "", K_STR, OFF(rate_limit_tiers), 0, 0, 0,
     "custom tiers for routes to name: \"reports=10/1m, upload=5/1h\""},
    {"RATE_LIMIT_MAX_KEYS", "100000", K_UINT, OFF(rate_limit_max_keys), 64, 100000000, 0,
     "most client keys the in-process store keeps (least recently used evicted beyond)"},
    {"RATE_LIMIT_FAIL_OPEN", "true", K_BOOL, OFF(rate_limit_fail_open), 0, 0, 0,
     "when the limiter's store is unreachable: serve (true) or answer 503 (false)"},
    {"SHED_LOOP_LAG", "2s", K_DURATION, OFF(shed_loop_lag_ms), 0, U64MAX, 0,
     "shed load (503) while a worker's event loop lags more than this; 0 = off"},
    {"SHED_IN_FLIGHT", "10000", K_UINT, OFF(shed_in_flight), 0, U64MAX, 0,
     "shed load while a worker has more requests in flight than this; 0 = off"},
    {"SHED_RSS", "0", K_SIZE, OFF(shed_rss_bytes), 0, U64MAX, 0,
     "shed load while the process's resident memory is above this (e.g. 1gb); 0 = off"},
};

#define NVARS (sizeof(vars) / sizeof(vars[0]))

static const char *const level_names[] = {"trace", "debug", "info",
                                          "warn", "error", "fatal"};

/* Fields declared `unsigned` (the others of K_UINT/K_DURATION/K_SIZE are
 * uint64_t). */
static int is_unsigned_field(size_t off)
{
    return off == OFF(workers) || off == OFF(work_threads) || off == OFF(log_file_keep) ||
           off == OFF(db_pool_max) || off == OFF(db_pool_min) ||
           off == OFF(client_ipv6_prefix);
}

/* ---------------------------------------------------------------- parsers */

static int lower_eq(const char *a, const char *b)
{
    return strcasecmp(a, b) == 0;
}

int keel_parse_bool(const char *s, int *out)
{
    if (lower_eq(s, "true") || lower_eq(s, "1") || lower_eq(s, "yes") ||
        lower_eq(s, "on")) {
        *out = 1;
        return 0;
    }
    if (lower_eq(s, "false") || lower_eq(s, "0") || lower_eq(s, "no") ||
        lower_eq(s, "off")) {
        *out = 0;
        return 0;
    }
    return KEEL_EINVAL;
}

/* A number followed by an optional unit from `units`. */
static int parse_scaled(const char *s, const char *const *units,
                        const uint64_t *mult, size_t nunits, uint64_t *out)
{
    if (!s || !isdigit((unsigned char)*s))
        return KEEL_EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return KEEL_EINVAL;
    while (*end == ' ')
        end++;
    if (*end == '\0') {
        *out = v * mult[0];
        return 0;
    }
    for (size_t i = 0; i < nunits; i++) {
        if (units[i] && lower_eq(end, units[i])) {
            if (v && mult[i] > UINT64_MAX / v)
                return KEEL_EINVAL;
            *out = v * mult[i];
            return 0;
        }
    }
    return KEEL_EINVAL;
}

int keel_parse_duration_ms(const char *s, uint64_t *out)
{
    static const char *const u[] = {"ms", "ms", "s", "m", "h", "d"};
    static const uint64_t m[] = {1, 1, 1000, 60000, 3600000, 86400000};
    return parse_scaled(s, u, m, 6, out);
}

int keel_parse_size(const char *s, uint64_t *out)
{
    static const char *const u[] = {"b", "b", "kb", "mb", "gb", "k", "m", "g"};
    static const uint64_t m[] = {1, 1, 1024, 1048576, 1073741824,
                                 1024, 1048576, 1073741824};
    return parse_scaled(s, u, m, 8, out);
}

static const char *accepts(const var *v)
{
    switch (v->kind) {
    case K_BOOL: return "true or false";
    case K_PORT: return "a port number from 0 to 65535";
    case K_UINT: return "a whole number";
    case K_DURATION: return "a duration such as 500ms, 30s, 5m or a number of milliseconds";
    case K_SIZE: return "a size such as 512, 64kb, 1mb";
    case K_LEVEL: return "trace, debug, info, warn, error or fatal";
    case K_FORMAT: return "json or pretty";
    case K_ENV: return "development, production or test";
    case K_URL_DB: return "sqlite:PATH, a file path, or postgres://user:pass@host:port/db";
    case K_URL_REDIS: return "redis://[:password@]host:port[/db] or empty";
    default: return "a string";
    }
}

static int set_var(keel_config *cfg, const var *v, const char *s)
{
    char *base = (char *)cfg + v->off;
    uint64_t u = 0;
    int b;
    switch (v->kind) {
    case K_STR:
        keel_free(*(char **)base);
        *(char **)base = keel_strdup(s);
        return 0;
    case K_BOOL:
        if (*s == '\0') {
            /* empty = the default; an empty default is decided later */
            if (*v->def == '\0') {
                *(int *)base = -1;
                return 0;
            }
            s = v->def;
        }
        if (keel_parse_bool(s, &b))
            return KEEL_EINVAL;
        *(int *)base = b;
        return 0;
    case K_PORT: {
        char *end;
        errno = 0;
        unsigned long p = strtoul(s, &end, 10);
        if (!isdigit((unsigned char)*s) || *end || errno || p > 65535)
            return KEEL_EINVAL;
        *(unsigned *)base = (unsigned)p;
        return 0;
    }
    case K_UINT:
    case K_DURATION:
    case K_SIZE: {
        int rc = v->kind == K_SIZE       ? keel_parse_size(s, &u)
                 : v->kind == K_DURATION ? keel_parse_duration_ms(s, &u)
                                         : parse_scaled(s, NULL, (uint64_t[]){1}, 0, &u);
        if (rc || u < v->min || (v->max && u > v->max))
            return KEEL_EINVAL;
        if (is_unsigned_field(v->off))
            *(unsigned *)base = (unsigned)u;
        else
            *(uint64_t *)base = u;
        return 0;
    }
    case K_LEVEL:
        for (int i = 0; i < 6; i++)
            if (lower_eq(s, level_names[i])) {
                *(int *)base = i;
                return 0;
            }
        return KEEL_EINVAL;
    case K_FORMAT:
        if (lower_eq(s, "json") || lower_eq(s, "pretty")) {
            *(int *)base = lower_eq(s, "pretty");
            return 0;
        }
        return KEEL_EINVAL;
    case K_ENV:
        if (!lower_eq(s, "development") && !lower_eq(s, "production") &&
            !lower_eq(s, "test"))
            return KEEL_EINVAL;
        keel_free(*(char **)base);
        *(char **)base = keel_strdup(s);
        for (char *p = *(char **)base; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        return 0;
    case K_URL_DB:
        if (*s == '\0' || (strncmp(s, "postgres", 8) == 0 &&
                           strncmp(s, "postgres://", 11) != 0 &&
                           strncmp(s, "postgresql://", 13) != 0))
            return KEEL_EINVAL;
        keel_free(*(char **)base);
        *(char **)base = keel_strdup(s);
        return 0;
    case K_URL_REDIS:
        if (*s && strncmp(s, "redis://", 8) != 0)
            return KEEL_EINVAL;
        keel_free(*(char **)base);
        *(char **)base = keel_strdup(s);
        return 0;
    }
    return KEEL_EINVAL;
}

void keel_config_defaults(keel_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < NVARS; i++) {
        int rc = set_var(cfg, &vars[i], vars[i].def);
        (void)rc;
    }
    cfg->production = 0;
    if (cfg->demo_routes < 0)
        cfg->demo_routes = 1;
}

/* .env: KEY=VALUE lines, '#' comments, optional "export ", optional single
 * or double quotes. Existing environment variables win. */
static int load_env_file(const char *path, int must_exist, FILE *err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        if (!must_exist && errno == ENOENT)
            return 0;
        fprintf(err, "keel: cannot read env file %s: %s\n", path, strerror(errno));
        return KEEL_ECONFIG;
    }
    char line[8192];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char *p = line;
        size_t n = strlen(p);
        while (n && (p[n - 1] == '\n' || p[n - 1] == '\r'))
            p[--n] = '\0';
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == '#')
            continue;
        if (strncmp(p, "export ", 7) == 0)
            p += 7;
        char *eq = strchr(p, '=');
        if (!eq || eq == p) {
            fprintf(err, "keel: %s:%d: expected KEY=VALUE\n", path, lineno);
            rc = KEEL_ECONFIG;
            break;
        }
        *eq = '\0';
        char *key = p, *val = eq + 1;
        size_t kl = strlen(key);
        while (kl && (key[kl - 1] == ' ' || key[kl - 1] == '\t'))
            key[--kl] = '\0';
        while (*val == ' ' || *val == '\t')
            val++;
        size_t vl = strlen(val);
        if (vl >= 2 && (val[0] == '"' || val[0] == '\'') && val[vl - 1] == val[0]) {
            val[vl - 1] = '\0';
            val++;
        } else {
            char *hash = strstr(val, " #");
            if (hash)
                *hash = '\0';
            vl = strlen(val);
            while (vl && (val[vl - 1] == ' ' || val[vl - 1] == '\t'))
                val[--vl] = '\0';
        }
        setenv(key, val, 0);
    }
    fclose(f);
    return rc;
}

int keel_config_load(keel_config *cfg, const char *env_file, FILE *err)
{
    if (!err)
        err = stderr;
    keel_config_defaults(cfg);
    cfg->demo_routes = -1; /* decided once KEEL_ENV is known */
    int rc = load_env_file(env_file ? env_file : ".env", env_file != NULL, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < NVARS; i++) {
        const char *s = getenv(vars[i].name);
        if (!s)
            continue;
        if (set_var(cfg, &vars[i], s) < 0) {
            fprintf(err, "keel: %s: invalid value \"%s\": expected %s\n",
                    vars[i].name, vars[i].secret ? "[REDACTED]" : s,
                    accepts(&vars[i]));
            return KEEL_ECONFIG;
        }
    }
    cfg->production = strcmp(cfg->env, "production") == 0;
    if (cfg->demo_routes < 0)
        cfg->demo_routes = !cfg->production;
    if (cfg->cors_credentials && cfg->cors_origin && strchr(cfg->cors_origin, '*')) {
        fprintf(err, "keel: CORS_CREDENTIALS: cannot be combined with CORS_ORIGIN=* "
                     "(browsers refuse it); list the allowed origins instead\n");
        return KEEL_ECONFIG;
    }
    if (strcasecmp(cfg->trust_proxy_header, "x-forwarded-for") != 0 &&
        strcasecmp(cfg->trust_proxy_header, "forwarded") != 0) {
        fprintf(err, "keel: TRUST_PROXY_HEADER: invalid value \"%s\": expected "
                     "x-forwarded-for or forwarded\n", cfg->trust_proxy_header);
        return KEEL_ECONFIG;
    }
    if (cfg->production) {
        size_t n = cfg->jwt_secret ? strlen(cfg->jwt_secret) : 0;
        if (n < 32 || strstr(cfg->jwt_secret, "change") ||
            strstr(cfg->jwt_secret, "secret") == cfg->jwt_secret) {
            fprintf(err, "keel: JWT_SECRET: production mode needs a random secret "
                         "of at least 32 bytes (not a default)\n");
            return KEEL_ECONFIG;
        }
    }
    return 0;
}

void keel_config_copy(keel_config *dst, const keel_config *src)
{
    *dst = *src;
    for (size_t i = 0; i < NVARS; i++) {
        enum kind k = vars[i].kind;
        if (k == K_STR || k == K_ENV || k == K_URL_DB || k == K_URL_REDIS) {
            char **p = (char **)((char *)dst + vars[i].off);
            *p = keel_strdup(*p);
        }
    }
}

void keel_config_close(keel_config *cfg)
{
    for (size_t i = 0; i < NVARS; i++) {
        enum kind k = vars[i].kind;
        if (k == K_STR || k == K_ENV || k == K_URL_DB || k == K_URL_REDIS) {
            char **p = (char **)((char *)cfg + vars[i].off);
            keel_free(*p);
            *p = NULL;
        }
    }
}

/* Redacts the password of a URL: scheme://user:pass@host -> user:***@host. */
static void print_url_redacted(FILE *out, const char *s)
{
    const char *scheme = strstr(s, "://");
    const char *at = scheme ? strchr(scheme + 3, '@') : NULL;
    if (!at) {
        fputs(s, out);
        return;
    }
    const char *colon = memchr(scheme + 3, ':', (size_t)(at - scheme - 3));
    if (!colon) {
        fputs(s, out);
        return;
    }
    fwrite(s, 1, (size_t)(colon - s), out);
    fputs(":[REDACTED]", out);
    fputs(at, out);
}

void keel_config_print(const keel_config *cfg, FILE *out)
{
    for (size_t i = 0; i < NVARS; i++) {
        const var *v = &vars[i];
        const char *base = (const char *)cfg + v->off;
        fprintf(out, "%s=", v->name);
        switch (v->kind) {
        case K_STR:
        case K_ENV:
            if (v->secret)
                fputs(*(char *const *)base && **(char *const *)base ? "[REDACTED]" : "",
                      out);
            else
                fputs(*(char *const *)base ? *(char *const *)base : "", out);
            break;
        case K_URL_DB:
        case K_URL_REDIS:
            print_url_redacted(out, *(char *const *)base ? *(char *const *)base : "");
            break;
        case K_BOOL:
            fputs(*(const int *)base ? "true" : "false", out);
            break;
        case K_PORT:
            fprintf(out, "%u", *(const unsigned *)base);
            break;
        case K_LEVEL:
            fputs(level_names[*(const int *)base], out);
            break;
        case K_FORMAT:
            fputs(*(const int *)base ? "pretty" : "json", out);
            break;
        case K_UINT:
        case K_DURATION:
        case K_SIZE:
            if (is_unsigned_field(v->off))
                fprintf(out, "%u", *(const unsigned *)base);
            else
                fprintf(out, "%llu%s", (unsigned long long)*(const uint64_t *)base,
                        v->kind == K_DURATION ? "ms" : "");
            break;
        }
        fputc('\n', out);
    }
}

void keel_config_each(void (*fn)(const char *name, const char *def,
                                 const char *help, int secret, void *arg),
                      void *arg)
{
    for (size_t i = 0; i < NVARS; i++)
        fn(vars[i].name, vars[i].def, vars[i].help, vars[i].secret, arg);
}
