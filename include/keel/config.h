/* keel/config.h — configuration from the environment (12-factor) and an
 * optional .env file, through a registry of per-module options.
 *
 * Each module owns its options struct and declares its variables in a
 * table of keel_config_var (name, type, default, range or allowed values,
 * secret flag, one help line); the table, the struct size and an optional
 * cross-variable check make a keel_config_module. keel_config_load reads
 * core's own variables (the fields of keel_config below) and those of the
 * modules it is given, each into its own struct; a module reads its struct
 * back with keel_config_get. `keel config`, `serve --print-config`,
 * validation at start-up and docs/configuration.md all come from the
 * modules a service registers, so a service lists only what it uses.
 *
 * An invalid value stops start-up with one line naming the variable and
 * what it accepts ("keel: PORT: invalid value ...: expected ...").
 *
 *     typedef struct { uint64_t ttl_ms; char *endpoint; } my_options;
 *     static const keel_config_var my_vars[] = {
 *         {.name = "MY_TTL", .type = KEEL_CONFIG_DURATION, .def = "30s",
 *          KEEL_CONFIG_AT(my_options, ttl_ms), .min = 1000,
 *          .help = "how long my things live"},
 *         {.name = "MY_ENDPOINT", .type = KEEL_CONFIG_URL, .def = "",
 *          KEEL_CONFIG_AT(my_options, endpoint), .values = KEEL_CONFIG_VALUES("https://"),
 *          .flags = KEEL_CONFIG_SECRET, .help = "where my things go; empty = nowhere"},
 *     };
 *     const keel_config_module my_config =
 *         KEEL_CONFIG_MODULE("my", "What my module does.", my_options, my_vars, NULL);
 *     ...
 *     const my_options *o = keel_config_get(cfg, &my_config);
 */
#ifndef KEEL_CONFIG_H
#define KEEL_CONFIG_H

#include <stddef.h>
#include <stdio.h>
#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

struct keel_config_set;

/* Core's own options: the server, HTTP limits, the work pool, logs, and
 * the connection-level edge settings the listener itself applies. Other
 * modules' options are in their own structs (keel_config_get). */
typedef struct keel_config {
    /* service */
    const char *env;        /* KEEL_ENV: "development" | "production" | "test" */
    int production;         /* derived: env == production */
    char *service_name;     /* SERVICE_NAME */
    char *host;             /* HOST */
    unsigned port;          /* PORT */
    unsigned workers;       /* WORKERS (0 = number of cores) */
    char *server_header;    /* SERVER_HEADER ("" = none) */

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
    uint64_t shutdown_delay_ms; /* SHUTDOWN_DELAY */
    char *pid_file;         /* PID_FILE: written once serving, "" = none */
    uint64_t max_connections;   /* MAX_CONNECTIONS, per worker */
    uint64_t output_buffer_max; /* OUTPUT_BUFFER_MAX, bytes per connection */
    uint64_t max_requests_per_conn; /* MAX_REQUESTS_PER_CONNECTION, 0 = no cap */
    uint64_t json_body_limit;   /* JSON_BODY_LIMIT, bytes (413 beyond) */
    uint64_t json_max_depth;    /* JSON_MAX_DEPTH (400 beyond) */
    int api_docs;               /* API_DOCS: GET /openapi.json and /docs */

    /* work pool */
    unsigned work_threads;   /* WORK_POOL_SIZE */
    unsigned work_nice;      /* WORK_POOL_NICE */
    int password_process;    /* PASSWORD_HASH_PROCESS */
    unsigned malloc_arenas;  /* MALLOC_ARENAS (0 = workers + 1) */
    uint64_t work_queue_max; /* WORK_QUEUE_MAX */

    /* logs */
    int log_level;          /* LOG_LEVEL: trace debug info warn error fatal */
    char *log_levels;       /* LOG_LEVELS: "module=level, ..." (keel/log.h) */
    int log_pretty;         /* LOG_FORMAT: json | pretty */
    char *log_file;         /* LOG_FILE ("" = stdout only) */
    uint64_t log_file_max_bytes; /* LOG_FILE_MAX_SIZE */
    unsigned log_file_keep; /* LOG_FILE_KEEP */
    int access_log;         /* ACCESS_LOG */
    uint64_t slow_request_ms; /* SLOW_REQUEST_THRESHOLD */

    /* clients and proxies, applied by the listener (src/core/conn.c) */
    char *trust_proxy;      /* TRUST_PROXY: CIDR list of trusted proxies */
    int trust_proxy_any;    /* TRUST_PROXY_ANY: allow 0.0.0.0/0, ::/0 */
    int trust_proxy_header; /* TRUST_PROXY_HEADER: 0 x-forwarded-for, 1 forwarded */
    uint64_t max_conns_per_ip; /* MAX_CONNECTIONS_PER_IP, 0 = no cap */
    unsigned client_ipv6_prefix; /* CLIENT_IPV6_PREFIX: IPv6 clients grouped by */

    /* the other modules' options (private: use keel_config_get) */
    struct keel_config_set *set;
} keel_config;

/* ---------------------------------------------------------------- registry */

typedef enum keel_config_type {
    KEEL_CONFIG_STR,      /* char *, owned by the config */
    KEEL_CONFIG_BOOL,     /* int 0/1: true/false, 1/0, yes/no, on/off; an
                           * empty default leaves -1 for validate to decide */
    KEEL_CONFIG_UINT,     /* unsigned or uint64_t (by the field's size), min..max */
    KEEL_CONFIG_DURATION, /* milliseconds, same field sizes: "250ms", "30s", "5m" */
    KEEL_CONFIG_SIZE,     /* bytes, same field sizes: "512", "64kb", "1mb" */
    KEEL_CONFIG_PORT,     /* unsigned, 0..65535 */
    KEEL_CONFIG_ENUM,     /* one of .values, case-insensitive: an int index
                           * (or, with KEEL_CONFIG_ENUM_NAME, the value) */
    KEEL_CONFIG_URL,      /* char *: empty, or starting with one of .values
                           * (NULL: any); a password in it is redacted */
} keel_config_type;

enum {
    KEEL_CONFIG_SECRET = 1,   /* never printed nor echoed in an error */
    KEEL_CONFIG_REQUIRED = 2, /* STR/URL: the empty string is refused */
    KEEL_CONFIG_ENUM_NAME = 4, /* ENUM: the field is a `const char *` set to the
                                * canonical value, not an int index */
};

typedef struct keel_config_var {
    const char *name;            /* the environment variable */
    keel_config_type type;
    const char *def;             /* default, parsed like a value ("" allowed) */
    size_t off, size;            /* KEEL_CONFIG_AT(struct, field) */
    uint64_t min, max;           /* UINT, DURATION, SIZE; max 0 = no upper bound */
    const char *const *values;   /* ENUM: allowed values; URL: accepted prefixes
                                  * (KEEL_CONFIG_VALUES(...), NULL-terminated) */
    unsigned flags;              /* KEEL_CONFIG_SECRET | KEEL_CONFIG_REQUIRED */
    const char *help;            /* one line for docs/configuration.md */
    const char *accepts;         /* what the error says is expected; NULL: from the type */
    /* STR/URL: a further check of the raw value; 0 or KEEL_EINVAL. */
    int (*check)(const char *value);
} keel_config_var;

#define KEEL_CONFIG_AT(type, field) \
    .off = offsetof(type, field), .size = sizeof(((type *)0)->field)
#define KEEL_CONFIG_VALUES(...) ((const char *const[]){__VA_ARGS__, NULL})

typedef struct keel_config_module {
    const char *name;            /* "db", "redis", "app" ... (a docs heading) */
    const char *doc;             /* one line under the heading, or NULL */
    const keel_config_var *vars;
    size_t nvars;
    size_t size;                 /* sizeof the options struct */
    /* Checks across variables once all are read (core's and every
     * module's). 0, or KEEL_ECONFIG after writing one line
     * "keel: NAME: ..." to err. May also settle derived fields. */
    int (*validate)(void *opts, const keel_config *cfg, FILE *err);
} keel_config_module;

/* KEEL_CONFIG_MODULE("orders", "One line for the docs.", orders_options,
 *                    orders_vars, orders_validate_or_NULL) */
#define KEEL_CONFIG_MODULE(name_, doc_, type, vars_, validate_)                \
    {.name = (name_), .doc = (doc_), .vars = (vars_),                          \
     .nvars = sizeof(vars_) / sizeof((vars_)[0]), .size = sizeof(type),        \
     .validate = (validate_)}

/* Core's own variables (the fields of keel_config): always loaded first. */
extern const keel_config_module keel_core_config;

/* Loads `env_file` (NULL: ".env" when present; a missing file is fine
 * unless named explicitly) into the environment without overriding what is
 * already set, then reads core's variables into cfg and each module's into
 * a struct of its own, then runs every validate hook. On an invalid value
 * it writes one line to `err` ("keel: PORT: expected ...") and returns
 * KEEL_ECONFIG; so it does for a variable two modules both declare, or a
 * declaration it cannot honour (a field of the wrong size for its type).
 * cfg need not be initialised (it is overwritten); free it with
 * keel_config_close, also after a failure. */
int keel_config_load_modules(keel_config *cfg, const keel_config_module *const *mods,
                             size_t nmods, const char *env_file, FILE *err);

/* For a reload (SIGHUP): loads the configuration again as
 * keel_config_load_modules did, reading the env file anew — a variable
 * the file set at start takes the file's new value (or its default when
 * the file no longer sets it); the process environment still wins over
 * the file for the rest. The environment itself is not modified (workers
 * may read it meanwhile). Call from one thread at a time. */
int keel_config_reload_modules(keel_config *cfg, const keel_config_module *const *mods,
                               size_t nmods, const char *env_file, FILE *err);

/* keel_config_load_modules with core's variables only. */
int keel_config_load(keel_config *cfg, const char *env_file, FILE *err);

/* The defaults only, no environment, no module registered. */
void keel_config_defaults(keel_config *cfg);

/* The options struct of module m: the loaded one, or, for a module that
 * was not loaded, its defaults (made on first use, owned by cfg). Never
 * NULL; valid until keel_config_close. Takes a lock: call it when setting
 * up and keep the pointer, not once per request. */
const void *keel_config_get(const keel_config *cfg, const keel_config_module *m);

/* The same, writable: for whoever owns cfg to adjust a module's options
 * before handing cfg on (a tool, a test). A string field is owned by cfg:
 * keel_free the old value and store a keel_strdup'd one. */
void *keel_config_edit(keel_config *cfg, const keel_config_module *m);

/* A deep copy, module options included. */
void keel_config_copy(keel_config *dst, const keel_config *src);

void keel_config_close(keel_config *cfg);

/* Writes NAME=value lines, secrets redacted: core's, then each loaded
 * module's, in table order. */
void keel_config_print(const keel_config *cfg, FILE *out);

/* Writes the markdown reference of core and mods: per module a "### name"
 * heading and a | variable | default | meaning | table (what `keel config`
 * prints and docs/configuration.md holds). */
void keel_config_doc(const keel_config_module *const *mods, size_t nmods, FILE *out);

/* Calls fn for each variable of core and of the modules cfg loaded. */
void keel_config_each(const keel_config *cfg,
                      void (*fn)(const keel_config_module *m, const keel_config_var *v,
                                 void *arg),
                      void *arg);

/* Parsers, exposed for modules with their own checks. Each returns 0 or
 * KEEL_EINVAL. Durations accept "250ms", "30s", "5m", "2h", "7d" or a bare
 * number of milliseconds; sizes accept "512", "64kb", "1mb", "1gb". */
int keel_parse_duration_ms(const char *s, uint64_t *out);
int keel_parse_size(const char *s, uint64_t *out);
int keel_parse_bool(const char *s, int *out);

#ifdef __cplusplus
}
#endif
#endif
