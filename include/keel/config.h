/* keel/config.h — configuration from the environment (12-factor) and an
 * optional .env file.
 *
 * Every setting has a name, a type, a default that works on a laptop and a
 * line of help; docs/configuration.md lists them all. An invalid value
 * stops start-up with one line naming the variable and what it accepts.
 */
#ifndef KEEL_CONFIG_H
#define KEEL_CONFIG_H

#include <stdio.h>
#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_config {
    /* service */
    char *env;              /* KEEL_ENV: development | production | test */
    int production;         /* derived: env == production */
    char *service_name;     /* SERVICE_NAME */
    char *host;             /* HOST */
    unsigned port;          /* PORT */
    unsigned workers;       /* WORKERS (0 = number of cores) */
    char *server_header;    /* SERVER_HEADER ("" = none) */
    int demo_routes;        /* ENABLE_DEMO_ROUTES */

    /* HTTP limits */
    uint64_t body_limit;        /* BODY_LIMIT, bytes */
    uint64_t max_request_line;  /* MAX_REQUEST_LINE */
    uint64_t max_header_size;   /* MAX_HEADER_SIZE (one field line) */
    uint64_t max_headers;       /* MAX_HEADERS */
    uint64_t max_head_size;     /* MAX_HEAD_SIZE (whole head) */
    uint64_t header_timeout_ms; /* HEADER_TIMEOUT */
    uint64_t body_timeout_ms;   /* BODY_TIMEOUT */
    uint64_t keepalive_timeout_ms; /* KEEPALIVE_TIMEOUT */
    uint64_t write_timeout_ms;  /* WRITE_TIMEOUT */
    uint64_t handler_timeout_ms; /* HANDLER_TIMEOUT */
    uint64_t shutdown_grace_ms; /* SHUTDOWN_GRACE */
    uint64_t max_connections;   /* MAX_CONNECTIONS, per worker */
    uint64_t output_buffer_max; /* OUTPUT_BUFFER_MAX, bytes per connection */
    uint64_t max_requests_per_conn; /* MAX_REQUESTS_PER_CONNECTION, 0 = no cap */
    uint64_t json_body_limit;   /* JSON_BODY_LIMIT, bytes (413 beyond) */
    uint64_t json_max_depth;    /* JSON_MAX_DEPTH (400 beyond) */
    int api_docs;               /* API_DOCS: GET /openapi.json and /docs */

    /* work pool */
    unsigned work_threads;   /* WORK_POOL_SIZE */
    uint64_t work_queue_max; /* WORK_QUEUE_MAX */

    /* logs */
    int log_level;          /* LOG_LEVEL: trace debug info warn error fatal */
    int log_pretty;         /* LOG_FORMAT: json | pretty */
    char *log_file;         /* LOG_FILE ("" = stdout only) */
    uint64_t log_file_max_bytes; /* LOG_FILE_MAX_SIZE */
    unsigned log_file_keep; /* LOG_FILE_KEEP */
    int access_log;         /* ACCESS_LOG */
    uint64_t slow_request_ms; /* SLOW_REQUEST_THRESHOLD */

    /* dependencies (used by later modules; validated here) */
    char *database_url;     /* DATABASE_URL */
    unsigned db_pool_max;   /* DATABASE_POOL_MAX */
    unsigned db_pool_min;   /* DATABASE_POOL_MIN */
    uint64_t db_idle_timeout_ms; /* DATABASE_IDLE_TIMEOUT */
    uint64_t db_connect_timeout_ms; /* DATABASE_TIMEOUT */
    uint64_t db_statement_timeout_ms; /* DATABASE_STATEMENT_TIMEOUT (0 = none) */
    uint64_t db_queue_max;  /* DATABASE_QUEUE_MAX */
    int query_logging;      /* ENABLE_QUERY_LOGGING */
    uint64_t slow_query_ms; /* SLOW_QUERY_THRESHOLD */
    int migrate_on_start;   /* MIGRATE_ON_START */
    char *migrations_dir;   /* MIGRATIONS_DIR ("" = the compiled-in set) */
    char *redis_url;        /* REDIS_URL */
    uint64_t redis_timeout_ms;  /* REDIS_COMMAND_TIMEOUT */
    uint64_t redis_connect_timeout_ms; /* REDIS_CONNECT_TIMEOUT */
    uint64_t redis_reconnect_max_ms;   /* REDIS_RECONNECT_MAX: backoff cap */
    char *redis_key_prefix; /* REDIS_KEY_PREFIX */
    uint64_t cache_max_entries; /* CACHE_MAX_ENTRIES (in-process cache) */
    uint64_t cache_max_bytes;   /* CACHE_MAX_BYTES */
    uint64_t cache_default_ttl_ms; /* CACHE_DEFAULT_TTL */
    uint64_t user_cache_ttl_ms; /* USER_CACHE_TTL (0 = not cached) */
    uint64_t breaker_failures;  /* BREAKER_FAILURE_THRESHOLD */
    uint64_t breaker_window_ms; /* BREAKER_WINDOW */
    uint64_t breaker_recovery_ms; /* BREAKER_RECOVERY_TIMEOUT */
    uint64_t breaker_probes;    /* BREAKER_HALF_OPEN_PROBES */
    char *instance_id;      /* INSTANCE_ID ("" = hostname-pid) */
    char *region;           /* REGION */
    char *zone;             /* ZONE */
    char *jwt_secret;       /* JWT_SECRET (secret) */
    char *cors_origin;      /* CORS_ORIGIN */
    char *otel_endpoint;    /* OTEL_EXPORTER_OTLP_ENDPOINT */
    char *otel_service_name; /* OTEL_SERVICE_NAME */

    /* edge protection (src/mw/security_headers.c, cors.c, compress.c);
     * an empty header value sends no such header */
    int security_headers;   /* SECURITY_HEADERS */
    char *csp;              /* CSP: Content-Security-Policy */
    char *frame_options;    /* FRAME_OPTIONS: X-Frame-Options */
    char *referrer_policy;  /* REFERRER_POLICY */
    char *coop;             /* CROSS_ORIGIN_OPENER_POLICY */
    char *corp;             /* CROSS_ORIGIN_RESOURCE_POLICY */
    int nosniff;            /* CONTENT_TYPE_NOSNIFF: X-Content-Type-Options */
    uint64_t hsts_max_age;  /* HSTS_MAX_AGE, seconds; 0 = no HSTS */
    char *trust_proxy;      /* TRUST_PROXY: CIDR list of trusted proxies */
    int trust_proxy_any;    /* TRUST_PROXY_ANY: allow 0.0.0.0/0, ::/0 */
    char *trust_proxy_header; /* TRUST_PROXY_HEADER: x-forwarded-for | forwarded */
    uint64_t max_conns_per_ip; /* MAX_CONNECTIONS_PER_IP, 0 = no cap */
    unsigned client_ipv6_prefix; /* CLIENT_IPV6_PREFIX: IPv6 clients grouped by */
    int cors_credentials;   /* CORS_CREDENTIALS */
    uint64_t cors_max_age;  /* CORS_MAX_AGE, seconds */
    char *cors_methods;     /* CORS_METHODS */
    char *cors_headers;     /* CORS_HEADERS */
    int compression;        /* COMPRESSION */
    uint64_t compression_min_bytes; /* COMPRESSION_MIN_BYTES */

    /* accounts and tokens (src/mw/jwt.c, src/app/auth.c) */
    uint64_t jwt_ttl_ms;        /* JWT_EXPIRES_IN */
    char *jwt_issuer;           /* JWT_ISSUER */
    char *jwt_audience;         /* JWT_AUDIENCE */
    uint64_t refresh_ttl_ms;    /* REFRESH_TOKEN_EXPIRY */
    uint64_t password_min;      /* PASSWORD_MIN_LENGTH */
    uint64_t password_ops;      /* PASSWORD_HASH_OPS */
    uint64_t password_mem;      /* PASSWORD_HASH_MEMORY, bytes */
    uint64_t login_max_attempts; /* LOGIN_MAX_ATTEMPTS */
    uint64_t login_lock_ms;     /* LOGIN_LOCK_TIME (first lock; doubles) */
    uint64_t login_lock_max_ms; /* LOGIN_LOCK_MAX */

    /* rate limiting (src/mw/rate_limit.c) */
    int rate_limit;             /* RATE_LIMIT_ENABLED */
    uint64_t rate_limit_max;    /* RATE_LIMIT_MAX (general tier) */
    uint64_t rate_limit_window_ms; /* RATE_LIMIT_WINDOW */
    char *rate_limit_strict;    /* RATE_LIMIT_STRICT: "N/window" */
    char *rate_limit_auth;      /* RATE_LIMIT_AUTH */
    char *rate_limit_public;    /* RATE_LIMIT_PUBLIC */
    char *rate_limit_burst;     /* RATE_LIMIT_BURST */
    char *rate_limit_tiers;     /* RATE_LIMIT_TIERS: "name=N/window,..." */
    uint64_t rate_limit_max_keys; /* RATE_LIMIT_MAX_KEYS */
    int rate_limit_fail_open;   /* RATE_LIMIT_FAIL_OPEN */

    /* load shedding (src/mw/shed.c); 0 = that signal is off */
    uint64_t shed_loop_lag_ms;  /* SHED_LOOP_LAG */
    uint64_t shed_in_flight;    /* SHED_IN_FLIGHT, per worker */
    uint64_t shed_rss_bytes;    /* SHED_RSS */
} keel_config;

/* Loads `env_file` (NULL: ".env" when present; a missing file is fine
 * unless named explicitly) into the environment without overriding what is
 * already set, then reads every variable into cfg. On an invalid value it
 * writes one line to `err` ("keel: PORT: expected ...") and returns
 * KEEL_ECONFIG. Free with keel_config_close. */
int keel_config_load(keel_config *cfg, const char *env_file, FILE *err);

/* The defaults only, no environment. */
void keel_config_defaults(keel_config *cfg);

/* A deep copy. */
void keel_config_copy(keel_config *dst, const keel_config *src);

void keel_config_close(keel_config *cfg);

/* Writes NAME=value lines, secrets redacted, in table order. */
void keel_config_print(const keel_config *cfg, FILE *out);

/* Calls fn for each known variable: name, default, help, secret flag. */
void keel_config_each(void (*fn)(const char *name, const char *def,
                                 const char *help, int secret, void *arg),
                      void *arg);

/* Parsers, exposed for modules with their own variables. Each returns 0 or
 * KEEL_EINVAL. Durations accept "250ms", "30s", "5m", "2h", "7d" or a bare
 * number of milliseconds; sizes accept "512", "64kb", "1mb", "1gb". */
int keel_parse_duration_ms(const char *s, uint64_t *out);
int keel_parse_size(const char *s, uint64_t *out);
int keel_parse_bool(const char *s, int *out);

#ifdef __cplusplus
}
#endif
#endif
