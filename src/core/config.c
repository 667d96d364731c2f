/* config.c — the configuration registry.
 *
 * Core's own variables are the first table below; every other module
 * declares its table beside its code (keel_db_config in src/store/db.c,
 * keel_rate_limit_config in src/mw/rate_limit.c, the app's in src/app ...)
 * and hands it to keel_config_load_modules, which fills one struct per
 * module. The same tables drive loading, the one-line errors,
 * --print-config (secrets redacted) and docs/configuration.md, so a service
 * lists exactly the variables of the modules it uses.
 *
 * Module structs live in a small set hanging off keel_config. A module
 * asked for with keel_config_get that was not loaded (a test, a tool that
 * only needs defaults) gets its defaults, made once under the set's lock. */
#include "keel/config.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "keel/log.h"
#include "keel/net.h"

/* ---------------------------------------------------------------- core table */

#define AT(f) KEEL_CONFIG_AT(keel_config, f)
#define U64MAX UINT64_MAX

static int core_validate(void *opts, const keel_config *cfg, FILE *err);

static int check_log_levels(const char *v)
{
    return keel_log_apply_levels(v, 0);
}

static const keel_config_var core_vars[] = {
    {.name = "KEEL_ENV", .type = KEEL_CONFIG_ENUM, .def = "development", AT(env),
     .values = KEEL_CONFIG_VALUES("development", "production", "test"),
     .flags = KEEL_CONFIG_ENUM_NAME,
     .help = "development, production or test; production refuses unsafe settings"},
    {.name = "SERVICE_NAME", .type = KEEL_CONFIG_STR, .def = "keel", AT(service_name),
     .help = "service name in logs, traces and /distributed/info"},
    {.name = "HOST", .type = KEEL_CONFIG_STR, .def = "0.0.0.0", AT(host),
     .help = "address to listen on"},
    {.name = "PORT", .type = KEEL_CONFIG_PORT, .def = "8080", AT(port),
     .help = "TCP port to listen on"},
    {.name = "WORKERS", .type = KEEL_CONFIG_UINT, .def = "0", AT(workers), .max = 256,
     .help = "worker threads, each with its own loop and listener; 0 = number of cores"},
    {.name = "SERVER_HEADER", .type = KEEL_CONFIG_STR, .def = "keel", AT(server_header),
     .help = "value of the Server response header; empty to send none"},
    {.name = "BODY_LIMIT", .type = KEEL_CONFIG_SIZE, .def = "1mb", AT(body_limit),
     .max = 1ull << 32, .help = "largest request body accepted (413 beyond)"},
    {.name = "MAX_REQUEST_LINE", .type = KEEL_CONFIG_SIZE, .def = "8kb", AT(max_request_line),
     .min = 64, .max = 1 << 20, .help = "longest request line (414 beyond)"},
    {.name = "MAX_HEADER_SIZE", .type = KEEL_CONFIG_SIZE, .def = "8kb", AT(max_header_size),
     .min = 64, .max = 1 << 20, .help = "longest header field line (431 beyond)"},
    {.name = "MAX_HEADERS", .type = KEEL_CONFIG_UINT, .def = "100", AT(max_headers), .min = 1,
     .max = 1000, .help = "most header fields in a request (431 beyond)"},
    {.name = "MAX_HEAD_SIZE", .type = KEEL_CONFIG_SIZE, .def = "64kb", AT(max_head_size),
     .min = 256, .max = 1 << 24,
     .help = "largest request head, request line and fields together (431 beyond)"},
    {.name = "HEADER_TIMEOUT", .type = KEEL_CONFIG_DURATION, .def = "10s",
     AT(header_timeout_ms), .min = 100,
     .help = "time to receive a whole request head (408 beyond)"},
    {.name = "BODY_TIMEOUT", .type = KEEL_CONFIG_DURATION, .def = "30s", AT(body_timeout_ms),
     .min = 100, .help = "longest pause while receiving a request body (408 beyond)"},
    {.name = "KEEPALIVE_TIMEOUT", .type = KEEL_CONFIG_DURATION, .def = "5s",
     AT(keepalive_timeout_ms), .min = 100,
     .help = "idle keep-alive connections are closed after this"},
    {.name = "WRITE_TIMEOUT", .type = KEEL_CONFIG_DURATION, .def = "30s", AT(write_timeout_ms),
     .min = 100,
     .help = "longest a response may wait for a slow reader before the connection is closed"},
    {.name = "HANDLER_TIMEOUT", .type = KEEL_CONFIG_DURATION, .def = "30s",
     AT(handler_timeout_ms), .min = 10,
     .help = "handler deadline (503 beyond); a route may set its own"},
    {.name = "SHUTDOWN_GRACE", .type = KEEL_CONFIG_DURATION, .def = "30s",
     AT(shutdown_grace_ms),
     .help = "on SIGTERM, how long in-flight requests may take to finish"},
    {.name = "PID_FILE", .type = KEEL_CONFIG_STR, .def = "", AT(pid_file),
     .help = "file keel writes its process id to once it serves (removed at exit); "
             "`serve --upgrade` reads it to take over from the process named there"},
    {.name = "SHUTDOWN_DELAY", .type = KEEL_CONFIG_DURATION, .def = "0s",
     AT(shutdown_delay_ms), .max = 600000,
     .help = "on SIGTERM, /health/ready answers 503 but keel keeps serving for this long "
             "before it stops accepting: set it above a proxy's health-check interval x "
             "fall count, so the proxy stops sending first"},
    {.name = "MAX_CONNECTIONS", .type = KEEL_CONFIG_UINT, .def = "10000", AT(max_connections),
     .min = 1, .max = 1000000,
     .help = "open connections per worker (503 and close beyond)"},
    {.name = "OUTPUT_BUFFER_MAX", .type = KEEL_CONFIG_SIZE, .def = "4mb",
     AT(output_buffer_max), .min = 4096, .max = 1ull << 32,
     .help = "unsent response bytes per connection before keel stops reading from it"},
    {.name = "MAX_REQUESTS_PER_CONNECTION", .type = KEEL_CONFIG_UINT, .def = "0",
     AT(max_requests_per_conn),
     .help = "requests on one keep-alive connection before it is closed; 0 = no cap"},
    {.name = "JSON_BODY_LIMIT", .type = KEEL_CONFIG_SIZE, .def = "1mb", AT(json_body_limit),
     .min = 2, .max = 1ull << 32,
     .help = "largest JSON request body parsed (413 beyond; BODY_LIMIT still applies)"},
    {.name = "JSON_MAX_DEPTH", .type = KEEL_CONFIG_UINT, .def = "64", AT(json_max_depth),
     .min = 1, .max = 1000,
     .help = "deepest nesting of arrays and objects in a JSON request body (400 beyond)"},
    {.name = "API_DOCS", .type = KEEL_CONFIG_BOOL, .def = "true", AT(api_docs),
     .help = "serve the OpenAPI document at /openapi.json and its viewer at /docs"},
    {.name = "WORK_POOL_SIZE", .type = KEEL_CONFIG_UINT, .def = "4", AT(work_threads),
     .min = 1, .max = 1024, .help = "threads for blocking work (SQL, password hashing)"},
    {.name = "PASSWORD_HASH_PROCESS", .type = KEEL_CONFIG_BOOL, .def = "true",
     AT(password_process),
     .help = "hash and check passwords (argon2id) in a child process: its 64 MiB map and "
             "unmap per hash then never stall the event loops (keel serve)"},
    {.name = "MALLOC_ARENAS", .type = KEEL_CONFIG_UINT, .def = "0", AT(malloc_arenas),
     .max = 1024,
     .help = "glibc malloc arenas (keel serve); 0 = the event loops' count + 1. glibc's "
             "default (8 per core) gives every pool thread its own, each keeping what it "
             "freed: ~2.5 MiB more RSS during an upload. MALLOC_ARENA_MAX in the "
             "environment wins"},
    {.name = "WORK_POOL_NICE", .type = KEEL_CONFIG_UINT, .def = "10", AT(work_nice),
     .min = 0, .max = 19,
     .help = "how much lower the work pool threads' CPU priority is than the event loops' "
             "(Linux nice steps; 0 = the same): a CPU-bound job such as argon2 never delays "
             "a loop's next request"},
    {.name = "WORK_QUEUE_MAX", .type = KEEL_CONFIG_UINT, .def = "1024", AT(work_queue_max),
     .min = 1, .max = 10000000,
     .help = "queued blocking jobs before new ones get 503 with Retry-After"},
    {.name = "LOG_LEVEL", .type = KEEL_CONFIG_ENUM, .def = "info", AT(log_level),
     .values = KEEL_CONFIG_VALUES("trace", "debug", "info", "warn", "error", "fatal"),
     .help = "trace, debug, info, warn, error or fatal"},
    {.name = "LOG_LEVELS", .type = KEEL_CONFIG_STR, .def = "", AT(log_levels),
     .check = check_log_levels, .accepts = "module=level pairs, e.g. store.redis=debug, mw=warn",
     .help = "levels of single modules (dotted names from the source path, a prefix covers "
             "its children), e.g. \"store.redis=debug, mw.access_log=warn\"; changed at run "
             "time with PUT /api/v1/admin/loggers"},
    {.name = "LOG_FORMAT", .type = KEEL_CONFIG_ENUM, .def = "json", AT(log_pretty),
     .values = KEEL_CONFIG_VALUES("json", "pretty"),
     .help = "json (one object per line) or pretty (for humans)"},
    {.name = "LOG_FILE", .type = KEEL_CONFIG_STR, .def = "", AT(log_file),
     .help = "also append logs to this file, rotated by size; empty = stdout only"},
    {.name = "LOG_FILE_MAX_SIZE", .type = KEEL_CONFIG_SIZE, .def = "100mb",
     AT(log_file_max_bytes), .min = 4096, .help = "rotate LOG_FILE when it passes this size"},
    {.name = "LOG_FILE_KEEP", .type = KEEL_CONFIG_UINT, .def = "5", AT(log_file_keep),
     .max = 100, .help = "rotated log files kept (FILE.1 .. FILE.N)"},
    {.name = "ACCESS_LOG", .type = KEEL_CONFIG_BOOL, .def = "true", AT(access_log),
     .help = "one log line per request"},
    {.name = "SLOW_REQUEST_THRESHOLD", .type = KEEL_CONFIG_DURATION, .def = "1000",
     AT(slow_request_ms), .help = "requests slower than this (ms) are logged at warn"},
    {.name = "TRUST_PROXY", .type = KEEL_CONFIG_STR, .def = "", AT(trust_proxy),
     .help = "comma-separated IPv4/IPv6 addresses or CIDR blocks of proxies whose "
             "X-Forwarded-For/Forwarded and X-Forwarded-Proto are believed; empty = none"},
    {.name = "TRUST_PROXY_ANY", .type = KEEL_CONFIG_BOOL, .def = "false", AT(trust_proxy_any),
     .help = "allow TRUST_PROXY to trust every address (0.0.0.0/0, ::/0); anyone could "
             "then pick the client address their limits are counted against"},
    {.name = "TRUST_PROXY_HEADER", .type = KEEL_CONFIG_ENUM, .def = "x-forwarded-for",
     AT(trust_proxy_header), .values = KEEL_CONFIG_VALUES("x-forwarded-for", "forwarded"),
     .help = "where trusted proxies put the client chain: x-forwarded-for or forwarded "
             "(RFC 7239)"},
    {.name = "MAX_CONNECTIONS_PER_IP", .type = KEEL_CONFIG_UINT, .def = "256",
     AT(max_conns_per_ip), .max = 1000000,
     .help = "open connections per client address across workers (503 beyond; trusted "
             "proxies exempt); 0 = no cap"},
    {.name = "CLIENT_IPV6_PREFIX", .type = KEEL_CONFIG_UINT, .def = "64",
     AT(client_ipv6_prefix), .min = 1, .max = 128,
     .help = "IPv6 clients are counted by their /N network for connection caps and rate "
             "limits"},
};

const keel_config_module keel_core_config =
    KEEL_CONFIG_MODULE("core",
                       "The server, HTTP limits, the work pool, logs, and the clients and proxies "
                       "the listener trusts (src/core/config.c).",
                       keel_config, core_vars, core_validate);

static int core_validate(void *opts, const keel_config *cfg, FILE *err)
{
    (void)opts;
    keel_cidr proxies[64];
    int n = keel_cidr_parse_list(cfg->trust_proxy, proxies, 64);
    if (n < 0) {
        fprintf(err, "keel: TRUST_PROXY: invalid value \"%s\": expected up to 64 "
                     "comma-separated IPv4/IPv6 addresses or CIDR blocks\n",
                cfg->trust_proxy);
        return KEEL_ECONFIG;
    }
    if (keel_cidr_any(proxies, (size_t)n) && !cfg->trust_proxy_any) {
        fprintf(err, "keel: TRUST_PROXY: \"%s\" trusts every address, so any client "
                     "could set its own address (and escape its rate limit) with "
                     "X-Forwarded-For; list your proxies' addresses, or set "
                     "TRUST_PROXY_ANY=true if every peer really is a proxy\n",
                cfg->trust_proxy);
        return KEEL_ECONFIG;
    }
    return 0;
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

/* ---------------------------------------------------------------- fields */

static int is_string(const keel_config_var *v)
{
    return v->type == KEEL_CONFIG_STR || v->type == KEEL_CONFIG_URL;
}

static uint64_t get_uint(const void *field, size_t size)
{
    if (size == sizeof(uint64_t))
        return *(const uint64_t *)field;
    return *(const unsigned *)field;
}

static void put_uint(void *field, size_t size, uint64_t u)
{
    if (size == sizeof(uint64_t))
        *(uint64_t *)field = u;
    else
        *(unsigned *)field = (unsigned)u;
}

/* "a, b or c" */
static void join_values(char *buf, size_t cap, const char *const *values)
{
    size_t n = 0, len = 0;
    while (values[n])
        n++;
    buf[0] = '\0';
    for (size_t i = 0; i < n && len < cap; i++) {
        int w = snprintf(buf + len, cap - len, "%s%s", i == 0 ? "" : i + 1 == n ? " or " : ", ",
                         values[i]);
        if (w < 0)
            break;
        len += (size_t)w;
    }
}

/* A bound as the variable's unit reads best: 100ms, 1m, 7d; 4kb, 1gb. */
static void fmt_amount(const keel_config_var *v, uint64_t x, char *buf, size_t cap)
{
    static const struct {
        uint64_t mult;
        const char *unit;
    } dur[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}, {1, "ms"}},
      size[] = {{1073741824, "gb"}, {1048576, "mb"}, {1024, "kb"}, {1, ""}};
    if (v->type == KEEL_CONFIG_DURATION || v->type == KEEL_CONFIG_SIZE) {
        const int d = v->type == KEEL_CONFIG_DURATION;
        size_t n = d ? sizeof(dur) / sizeof(dur[0]) : sizeof(size) / sizeof(size[0]);
        for (size_t i = 0; i < n; i++) {
            uint64_t m = d ? dur[i].mult : size[i].mult;
            if (x && x % m == 0) {
                snprintf(buf, cap, "%llu%s", (unsigned long long)(x / m),
                         d ? dur[i].unit : size[i].unit);
                return;
            }
        }
    }
    snprintf(buf, cap, "%llu%s", (unsigned long long)x, v->type == KEEL_CONFIG_DURATION ? "ms" : "");
}

/* What the error line says a variable accepts. */
static const char *accepts(const keel_config_var *v, char *buf, size_t cap)
{
    if (v->accepts)
        return v->accepts;
    const char *what = "a string";
    switch (v->type) {
    case KEEL_CONFIG_BOOL: return "true or false";
    case KEEL_CONFIG_PORT: return "a port number from 0 to 65535";
    case KEEL_CONFIG_UINT: what = "a whole number"; break;
    case KEEL_CONFIG_DURATION:
        what = "a duration such as 500ms, 30s, 5m or a number of milliseconds";
        break;
    case KEEL_CONFIG_SIZE: what = "a size such as 512, 64kb, 1mb"; break;
    case KEEL_CONFIG_ENUM: join_values(buf, cap, v->values); return buf;
    case KEEL_CONFIG_URL:
        if (!v->values)
            return v->flags & KEEL_CONFIG_REQUIRED ? "a URL" : "a URL or empty";
        {
            char list[256];
            join_values(list, sizeof(list), v->values);
            snprintf(buf, cap, "a URL starting with %s%s", list,
                     v->flags & KEEL_CONFIG_REQUIRED ? "" : ", or empty");
        }
        return buf;
    case KEEL_CONFIG_STR:
        return v->flags & KEEL_CONFIG_REQUIRED ? "a non-empty string" : "a string";
    }
    char lo[32], hi[32];
    fmt_amount(v, v->min, lo, sizeof(lo));
    fmt_amount(v, v->max, hi, sizeof(hi));
    const char *sep = v->type == KEEL_CONFIG_UINT ? " " : ", ";
    if (v->max)
        snprintf(buf, cap, "%s%sfrom %s to %s", what, sep, lo, hi);
    else if (v->min)
        snprintf(buf, cap, "%s%sat least %s", what, sep, lo);
    else
        snprintf(buf, cap, "%s", what);
    return buf;
}

/* Parses s into the field of v at base; KEEL_EINVAL leaves it unchanged. */
static int set_var(char *base, const keel_config_var *v, const char *s)
{
    void *field = base + v->off;
    uint64_t u = 0;
    int b;
    switch (v->type) {
    case KEEL_CONFIG_URL:
        if (*s && v->values) {
            size_t i = 0;
            while (v->values[i] && strncasecmp(s, v->values[i], strlen(v->values[i])) != 0)
                i++;
            if (!v->values[i])
                return KEEL_EINVAL;
        }
        /* fall through */
    case KEEL_CONFIG_STR:
        if ((v->flags & KEEL_CONFIG_REQUIRED) && *s == '\0')
            return KEEL_EINVAL;
        if (v->check && v->check(s) < 0)
            return KEEL_EINVAL;
        keel_free(*(char **)field);
        *(char **)field = keel_strdup(s);
        return 0;
    case KEEL_CONFIG_BOOL:
        if (*s == '\0') {
            /* empty = the default; an empty default is decided by validate */
            if (*v->def == '\0') {
                *(int *)field = -1;
                return 0;
            }
            s = v->def;
        }
        if (keel_parse_bool(s, &b))
            return KEEL_EINVAL;
        *(int *)field = b;
        return 0;
    case KEEL_CONFIG_PORT: {
        char *end;
        errno = 0;
        unsigned long p = strtoul(s, &end, 10);
        if (!isdigit((unsigned char)*s) || *end || errno || p > 65535)
            return KEEL_EINVAL;
        put_uint(field, v->size, p);
        return 0;
    }
    case KEEL_CONFIG_UINT:
    case KEEL_CONFIG_DURATION:
    case KEEL_CONFIG_SIZE: {
        int rc = v->type == KEEL_CONFIG_SIZE       ? keel_parse_size(s, &u)
                 : v->type == KEEL_CONFIG_DURATION ? keel_parse_duration_ms(s, &u)
                                                   : parse_scaled(s, NULL, (uint64_t[]){1}, 0, &u);
        uint64_t cap = v->max ? v->max : v->size == sizeof(uint64_t) ? UINT64_MAX : UINT32_MAX;
        if (rc || u < v->min || u > cap)
            return KEEL_EINVAL;
        put_uint(field, v->size, u);
        return 0;
    }
    case KEEL_CONFIG_ENUM:
        for (int i = 0; v->values[i]; i++)
            if (lower_eq(s, v->values[i])) {
                if (v->flags & KEEL_CONFIG_ENUM_NAME)
                    *(const char **)field = v->values[i];
                else
                    *(int *)field = i;
                return 0;
            }
        return KEEL_EINVAL;
    }
    return KEEL_EINVAL;
}

static void defaults_into(char *base, const keel_config_module *m)
{
    for (size_t i = 0; i < m->nvars; i++) {
        int rc = set_var(base, &m->vars[i], m->vars[i].def);
        (void)rc; /* the defaults are tested to parse (tests/unit/core/test_config.c) */
    }
}

static void strings_free(char *base, const keel_config_module *m)
{
    for (size_t i = 0; i < m->nvars; i++)
        if (is_string(&m->vars[i])) {
            char **p = (char **)(base + m->vars[i].off);
            keel_free(*p);
            *p = NULL;
        }
}

static void strings_dup(char *base, const keel_config_module *m)
{
    for (size_t i = 0; i < m->nvars; i++)
        if (is_string(&m->vars[i])) {
            char **p = (char **)(base + m->vars[i].off);
            *p = keel_strdup(*p);
        }
}

/* ---------------------------------------------------------------- module set */

typedef struct inst {
    const keel_config_module *m;
    void *opts;
    int loaded; /* read from the environment; not made on demand */
} inst;

struct keel_config_set {
    pthread_mutex_t lock;
    inst *v;
    size_t n, cap;
};

static struct keel_config_set *set_new(void)
{
    struct keel_config_set *set = keel_calloc(1, sizeof(*set));
    pthread_mutex_init(&set->lock, NULL);
    return set;
}

/* The caller holds the lock (or owns the set alone). */
static inst *set_find(struct keel_config_set *set, const keel_config_module *m)
{
    for (size_t i = 0; i < set->n; i++)
        if (set->v[i].m == m)
            return &set->v[i];
    return NULL;
}

static const char *bad_declaration(const keel_config_module *m, const keel_config_var *v);

static inst *set_add(struct keel_config_set *set, const keel_config_module *m, int loaded)
{
    for (size_t i = 0; i < m->nvars; i++) {
        const char *why = bad_declaration(m, &m->vars[i]);
        if (why) { /* a programming error (keel_config_load_modules reports it) */
            fprintf(stderr, "keel: %s: bad declaration in module %s: %s\n", m->vars[i].name,
                    m->name, why);
            abort();
        }
    }
    if (set->n == set->cap) {
        set->cap = set->cap ? set->cap * 2 : 8;
        set->v = keel_realloc(set->v, set->cap * sizeof(*set->v));
    }
    inst *it = &set->v[set->n++];
    it->m = m;
    it->opts = keel_calloc(1, m->size ? m->size : 1);
    it->loaded = loaded;
    defaults_into(it->opts, m);
    return it;
}

static void set_free(struct keel_config_set *set)
{
    if (!set)
        return;
    for (size_t i = 0; i < set->n; i++) {
        strings_free(set->v[i].opts, set->v[i].m);
        keel_free(set->v[i].opts);
    }
    keel_free(set->v);
    pthread_mutex_destroy(&set->lock);
    keel_free(set);
}

const void *keel_config_get(const keel_config *cfg, const keel_config_module *m)
{
    if (m == &keel_core_config)
        return cfg;
    struct keel_config_set *set = cfg->set;
    pthread_mutex_lock(&set->lock);
    inst *it = set_find(set, m);
    if (!it)
        it = set_add(set, m, 0);
    void *opts = it->opts;
    pthread_mutex_unlock(&set->lock);
    return opts;
}

void *keel_config_edit(keel_config *cfg, const keel_config_module *m)
{
    return (void *)keel_config_get(cfg, m);
}

/* ---------------------------------------------------------------- loading */

void keel_config_defaults(keel_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    defaults_into((char *)cfg, &keel_core_config);
    cfg->set = set_new();
}

/* .env: KEY=VALUE lines, '#' comments, optional "export ", optional single
 * or double quotes; each pair goes to put(key, value, ctx). */
static int parse_env_file(const char *path, int must_exist, FILE *err,
                          void (*put)(const char *key, const char *val, void *ctx), void *ctx)
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
        put(key, val, ctx);
    }
    fclose(f);
    return rc;
}

/* The variables the env file put into the environment at start (the
 * environment's own ones win): on a reload the file decides them again. */
static struct {
    char **keys;
    size_t n;
} file_owned;

static int is_file_owned(const char *key)
{
    for (size_t i = 0; i < file_owned.n; i++)
        if (!strcmp(file_owned.keys[i], key))
            return 1;
    return 0;
}

static void put_env(const char *key, const char *val, void *ctx)
{
    (void)ctx;
    if (getenv(key) && !is_file_owned(key))
        return; /* the environment wins */
    if (!is_file_owned(key)) {
        file_owned.keys = keel_realloc(file_owned.keys, (file_owned.n + 1) * sizeof(char *));
        file_owned.keys[file_owned.n++] = keel_strdup(key);
    }
    setenv(key, val, 1);
}

static int load_env_file(const char *path, int must_exist, FILE *err)
{
    return parse_env_file(path, must_exist, err, put_env, NULL);
}

/* A reload reads the file into this map instead of the environment (the
 * workers may read the environment meanwhile: setenv is not safe then). */
typedef struct env_map {
    char **kv; /* key, value, key, value ... */
    size_t n;
} env_map;

static const env_map *reload_map; /* set only while keel_config_reload runs */

static void put_map(const char *key, const char *val, void *ctx)
{
    env_map *m = ctx;
    m->kv = keel_realloc(m->kv, (m->n + 2) * sizeof(char *));
    m->kv[m->n++] = keel_strdup(key);
    m->kv[m->n++] = keel_strdup(val);
}

static const char *lookup_var(const char *name)
{
    if (reload_map) {
        const char *in_file = NULL;
        for (size_t i = 0; i + 1 < reload_map->n; i += 2)
            if (!strcmp(reload_map->kv[i], name))
                in_file = reload_map->kv[i + 1]; /* the last one wins */
        if (is_file_owned(name))
            return in_file; /* NULL: gone from the file, back to the default */
        const char *env = getenv(name);
        return env ? env : in_file;
    }
    return getenv(name);
}

static int read_env(char *base, const keel_config_module *m, FILE *err)
{
    for (size_t i = 0; i < m->nvars; i++) {
        const keel_config_var *v = &m->vars[i];
        const char *s = lookup_var(v->name);
        if (!s)
            continue;
        if (set_var(base, v, s) < 0) {
            char buf[320];
            fprintf(err, "keel: %s: invalid value \"%s\": expected %s\n", v->name,
                    v->flags & KEEL_CONFIG_SECRET ? "[REDACTED]" : s,
                    accepts(v, buf, sizeof(buf)));
            return KEEL_ECONFIG;
        }
    }
    return 0;
}

/* A declaration the loader cannot honour: a field of the wrong size for its
 * type, outside the struct, an enum without values. NULL when fine. */
static const char *bad_declaration(const keel_config_module *m, const keel_config_var *v)
{
    size_t want = 0;
    switch (v->type) {
    case KEEL_CONFIG_STR:
    case KEEL_CONFIG_URL: want = sizeof(char *); break;
    case KEEL_CONFIG_BOOL: want = sizeof(int); break;
    case KEEL_CONFIG_ENUM:
        if (!v->values || !v->values[0])
            return "an ENUM needs .values";
        want = v->flags & KEEL_CONFIG_ENUM_NAME ? sizeof(const char *) : sizeof(int);
        break;
    case KEEL_CONFIG_PORT:
    case KEEL_CONFIG_UINT:
    case KEEL_CONFIG_DURATION:
    case KEEL_CONFIG_SIZE:
        if (v->size != sizeof(unsigned) && v->size != sizeof(uint64_t))
            return "a number needs an unsigned or uint64_t field";
        want = v->size;
        break;
    }
    if (v->size != want)
        return "the field's size does not fit the type";
    if (v->off + v->size > m->size)
        return "the field lies outside the module's struct";
    if (!v->def || !v->help)
        return "a default and a help line are required";
    return NULL;
}

/* Every declaration usable, and no variable declared twice (by two
 * modules, or twice in one table), which would make one silently win. */
static int check_tables(const keel_config_module *const *mods, size_t nmods, FILE *err)
{
    size_t n = nmods + 1;
    for (size_t a = 0; a < n; a++) {
        const keel_config_module *ma = a ? mods[a - 1] : &keel_core_config;
        int repeated = ma == &keel_core_config && a > 0;
        for (size_t k = 0; k + 1 < a && !repeated; k++)
            repeated = mods[k] == ma;
        if (repeated)
            continue; /* the same module named twice is loaded once */
        for (size_t i = 0; i < ma->nvars; i++) {
            const char *why = bad_declaration(ma, &ma->vars[i]);
            if (why) {
                fprintf(err, "keel: %s: bad declaration in module %s: %s\n", ma->vars[i].name,
                        ma->name, why);
                return KEEL_ECONFIG;
            }
            for (size_t b = a; b < n; b++) {
                const keel_config_module *mb = b ? mods[b - 1] : &keel_core_config;
                if (b != a && mb == ma)
                    continue;
                for (size_t j = b == a ? i + 1 : 0; j < mb->nvars; j++)
                    if (!strcmp(ma->vars[i].name, mb->vars[j].name)) {
                        fprintf(err, "keel: %s: declared twice, by modules %s and %s\n",
                                ma->vars[i].name, ma->name, mb->name);
                        return KEEL_ECONFIG;
                    }
            }
        }
    }
    return 0;
}

static int read_all(keel_config *cfg, FILE *err);

int keel_config_load_modules(keel_config *cfg, const keel_config_module *const *mods,
                             size_t nmods, const char *env_file, FILE *err)
{
    if (!err)
        err = stderr;
    keel_config_defaults(cfg);
    if (check_tables(mods, nmods, err) < 0)
        return KEEL_ECONFIG;
    for (size_t i = 0; i < nmods; i++)
        if (mods[i] != &keel_core_config && !set_find(cfg->set, mods[i]))
            set_add(cfg->set, mods[i], 1);
    int rc = load_env_file(env_file ? env_file : ".env", env_file != NULL, err);
    if (rc)
        return rc;
    return read_all(cfg, err);
}

static int load_modules_noenv(keel_config *cfg, const keel_config_module *const *mods,
                                          size_t nmods, FILE *err)
{
    if (!err)
        err = stderr;
    keel_config_defaults(cfg);
    if (check_tables(mods, nmods, err) < 0)
        return KEEL_ECONFIG;
    for (size_t i = 0; i < nmods; i++)
        if (mods[i] != &keel_core_config && !set_find(cfg->set, mods[i]))
            set_add(cfg->set, mods[i], 1);
    return read_all(cfg, err);
}

/* Every module's variables from the environment (or a reload's file),
 * then every module's validation. */
static int read_all(keel_config *cfg, FILE *err)
{
    int rc;
    if ((rc = read_env((char *)cfg, &keel_core_config, err)) < 0)
        return rc;
    for (size_t i = 0; i < cfg->set->n; i++)
        if ((rc = read_env(cfg->set->v[i].opts, cfg->set->v[i].m, err)) < 0)
            return rc;
    cfg->production = strcmp(cfg->env, "production") == 0;
    if ((rc = core_validate(cfg, cfg, err)) < 0)
        return rc;
    for (size_t i = 0; i < cfg->set->n; i++) {
        const keel_config_module *m = cfg->set->v[i].m;
        if (m->validate && (rc = m->validate(cfg->set->v[i].opts, cfg, err)) < 0)
            return KEEL_ECONFIG;
    }
    return 0;
}

static int load_modules_noenv(keel_config *cfg, const keel_config_module *const *mods,
                              size_t nmods, FILE *err);

int keel_config_reload_modules(keel_config *cfg, const keel_config_module *const *mods,
                               size_t nmods, const char *env_file, FILE *err)
{
    env_map m = {0};
    int rc = parse_env_file(env_file ? env_file : ".env", env_file != NULL, err ? err : stderr,
                            put_map, &m);
    if (rc == 0) {
        reload_map = &m;
        /* the file is not put into the environment again (see above) */
        rc = load_modules_noenv(cfg, mods, nmods, err);
        reload_map = NULL;
    } else {
        keel_config_defaults(cfg);
    }
    for (size_t i = 0; i < m.n; i++)
        keel_free(m.kv[i]);
    keel_free(m.kv);
    return rc;
}

int keel_config_load(keel_config *cfg, const char *env_file, FILE *err)
{
    return keel_config_load_modules(cfg, NULL, 0, env_file, err);
}

void keel_config_copy(keel_config *dst, const keel_config *src)
{
    *dst = *src;
    strings_dup((char *)dst, &keel_core_config);
    dst->set = set_new();
    if (!src->set)
        return;
    pthread_mutex_lock(&src->set->lock);
    for (size_t i = 0; i < src->set->n; i++) {
        const inst *from = &src->set->v[i];
        inst *to = set_add(dst->set, from->m, from->loaded);
        strings_free(to->opts, to->m);
        memcpy(to->opts, from->opts, from->m->size);
        strings_dup(to->opts, to->m);
    }
    pthread_mutex_unlock(&src->set->lock);
}

void keel_config_close(keel_config *cfg)
{
    strings_free((char *)cfg, &keel_core_config);
    set_free(cfg->set);
    cfg->set = NULL;
}

/* ---------------------------------------------------------------- output */

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

static void print_module(const char *base, const keel_config_module *m, FILE *out)
{
    for (size_t i = 0; i < m->nvars; i++) {
        const keel_config_var *v = &m->vars[i];
        const void *field = base + v->off;
        fprintf(out, "%s=", v->name);
        switch (v->type) {
        case KEEL_CONFIG_STR: {
            const char *s = *(char *const *)field ? *(char *const *)field : "";
            fputs(v->flags & KEEL_CONFIG_SECRET && *s ? "[REDACTED]" : s, out);
            break;
        }
        case KEEL_CONFIG_URL:
            print_url_redacted(out, *(char *const *)field ? *(char *const *)field : "");
            break;
        case KEEL_CONFIG_BOOL:
            fputs(*(const int *)field ? "true" : "false", out);
            break;
        case KEEL_CONFIG_ENUM:
            fputs(v->flags & KEEL_CONFIG_ENUM_NAME ? *(const char *const *)field
                                                   : v->values[*(const int *)field],
                  out);
            break;
        case KEEL_CONFIG_PORT:
        case KEEL_CONFIG_UINT:
        case KEEL_CONFIG_DURATION:
        case KEEL_CONFIG_SIZE:
            fprintf(out, "%llu%s", (unsigned long long)get_uint(field, v->size),
                    v->type == KEEL_CONFIG_DURATION && v->size == sizeof(uint64_t) ? "ms" : "");
            break;
        }
        fputc('\n', out);
    }
}

void keel_config_print(const keel_config *cfg, FILE *out)
{
    print_module((const char *)cfg, &keel_core_config, out);
    if (!cfg->set)
        return;
    pthread_mutex_lock(&cfg->set->lock);
    for (size_t i = 0; i < cfg->set->n; i++)
        if (cfg->set->v[i].loaded)
            print_module(cfg->set->v[i].opts, cfg->set->v[i].m, out);
    pthread_mutex_unlock(&cfg->set->lock);
}

void keel_config_each(const keel_config *cfg,
                      void (*fn)(const keel_config_module *m, const keel_config_var *v,
                                 void *arg),
                      void *arg)
{
    for (size_t i = 0; i < keel_core_config.nvars; i++)
        fn(&keel_core_config, &keel_core_config.vars[i], arg);
    if (!cfg || !cfg->set)
        return;
    for (size_t k = 0; k < cfg->set->n; k++)
        if (cfg->set->v[k].loaded)
            for (size_t i = 0; i < cfg->set->v[k].m->nvars; i++)
                fn(cfg->set->v[k].m, &cfg->set->v[k].m->vars[i], arg);
}

static void doc_module(const keel_config_module *m, FILE *out)
{
    fprintf(out, "### %s\n\n", m->name);
    if (m->doc)
        fprintf(out, "%s\n\n", m->doc);
    fputs("| variable | default | meaning |\n|---|---|---|\n", out);
    for (size_t i = 0; i < m->nvars; i++) {
        const keel_config_var *v = &m->vars[i];
        const char *def = v->def;
        fprintf(out, "| `%s` | %s%s%s | %s%s |\n", v->name, *def ? "`" : "",
                *def ? def : "(empty)", *def ? "`" : "", v->help,
                v->flags & KEEL_CONFIG_SECRET ? " (secret: redacted in output)" : "");
    }
}

void keel_config_doc(const keel_config_module *const *mods, size_t nmods, FILE *out)
{
    doc_module(&keel_core_config, out);
    for (size_t i = 0; i < nmods; i++)
        if (mods[i] != &keel_core_config) {
            fputc('\n', out);
            doc_module(mods[i], out);
        }
}
