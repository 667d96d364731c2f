/* test_config.c — value parsers, the registry (core's table and a module
 * of the test's own, "t", with every type and flag), loading from the
 * environment and a .env file, validate hooks (a production rule), and
 * redaction in keel_config_print. The real modules' tables are checked in
 * tests/unit/svc/test_svc_config.c.
 *
 * Each test starts from a clean slate: every variable keel knows is unset
 * and the working directory is a fresh empty temporary directory (so a
 * stray .env never leaks in). Values and their expected outcomes are rows
 * in tables.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "keel/config.h"

#include "config_env.h"
#include "table_check.h"

/* ---------------------------------------------------------------- fixture */

/* ---------------------------------------------------------------- module t */

typedef struct t_options {
    char *secret;   /* T_SECRET: a secret string */
    char *url;      /* T_URL: redis:// or empty, secret */
    char *db_url;   /* T_DB_URL: required, checked, secret */
    int mode;       /* T_MODE: a, b or c */
    unsigned small; /* T_SMALL: 1..10, an unsigned field */
    uint64_t ttl_ms; /* T_TTL: at least 1s */
    uint64_t bytes; /* T_BYTES: at most 1mb */
    int flag;       /* T_FLAG: default decided by validate (not in production) */
    char *name;     /* T_NAME */
} t_options;

static int no_postgresx(const char *s)
{
    return strncmp(s, "postgresx", 9) == 0 ? KEEL_EINVAL : 0;
}

static int t_validate(void *opts, const keel_config *cfg, FILE *err)
{
    t_options *o = opts;
    if (o->flag < 0)
        o->flag = !cfg->production;
    if (cfg->production) {
        size_t n = o->secret ? strlen(o->secret) : 0;
        if (n < 32 || strstr(o->secret, "change") || strstr(o->secret, "secret") == o->secret) {
            fprintf(err, "keel: T_SECRET: production mode needs a random secret of at least "
                         "32 bytes (not a default)\n");
            return KEEL_ECONFIG;
        }
    }
    return 0;
}

#define AT(f) KEEL_CONFIG_AT(t_options, f)
static const keel_config_var t_vars[] = {
    {.name = "T_SECRET", .type = KEEL_CONFIG_STR, .def = "", AT(secret),
     .flags = KEEL_CONFIG_SECRET, .help = "a secret"},
    {.name = "T_URL", .type = KEEL_CONFIG_URL, .def = "", AT(url),
     .values = KEEL_CONFIG_VALUES("redis://"), .flags = KEEL_CONFIG_SECRET, .help = "a URL"},
    {.name = "T_DB_URL", .type = KEEL_CONFIG_URL, .def = "sqlite:./t.db", AT(db_url),
     .flags = KEEL_CONFIG_SECRET | KEEL_CONFIG_REQUIRED, .check = no_postgresx,
     .accepts = "sqlite:PATH or postgres://...", .help = "a database"},
    {.name = "T_MODE", .type = KEEL_CONFIG_ENUM, .def = "b", AT(mode),
     .values = KEEL_CONFIG_VALUES("a", "b", "c"), .help = "a mode"},
    {.name = "T_SMALL", .type = KEEL_CONFIG_UINT, .def = "3", AT(small), .min = 1, .max = 10,
     .help = "a small number"},
    {.name = "T_TTL", .type = KEEL_CONFIG_DURATION, .def = "1m", AT(ttl_ms), .min = 1000,
     .help = "a lifetime"},
    {.name = "T_BYTES", .type = KEEL_CONFIG_SIZE, .def = "64kb", AT(bytes), .max = 1 << 20,
     .help = "a size"},
    {.name = "T_FLAG", .type = KEEL_CONFIG_BOOL, .def = "", AT(flag),
     .help = "on by default, off in production"},
    {.name = "T_NAME", .type = KEEL_CONFIG_STR, .def = "tee", AT(name), .help = "a name"},
};
#undef AT

static const keel_config_module t_config =
    KEEL_CONFIG_MODULE("t", "A test module.", t_options, t_vars, t_validate);
static const keel_config_module *const t_mods[] = {&t_config};

static const t_options *T(const keel_config *cfg)
{
    return keel_config_get(cfg, &t_config);
}

/* ---------------------------------------------------------------- fixture */

static void unset_all(void)
{
    unset_core();
    for (size_t i = 0; i < t_config.nvars; i++)
        unsetenv(t_config.vars[i].name);
}

static int setup(void **state)
{
    tmp_cwd *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    tmp_cwd_enter(f, "/tmp/keel-test-config-XXXXXX");
    unset_all();
    failures = 0;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    tmp_cwd *f = *state;
    unset_all();
    unlink(".env");
    unlink("named.env");
    tmp_cwd_leave(f);
    free(f);
    return 0;
}

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

/* Loads module t into cfg with err captured; returns the rc, *err_text to free. */
static int load(keel_config *cfg, const char *env_file, char **err_text)
{
    return load_captured(cfg, t_mods, 1, env_file, err_text);
}

/* ---------------------------------------------------------------- parsers */

typedef struct u64_case {
    const char *in;
    int rc;
    uint64_t want;
} u64_case;

static const u64_case duration_cases[] = {
    {"250ms", 0, 250},
    {"30s", 0, 30000},
    {"5m", 0, 300000},
    {"2h", 0, 7200000},
    {"7d", 0, 604800000},
    {"1500", 0, 1500},
    {"0", 0, 0},
    {"0s", 0, 0},
    {"5S", 0, 5000},
    {"5MS", 0, 5},
    {"10 s", 0, 10000},
    {"18446744073709551615", 0, UINT64_MAX},
    {"", KEEL_EINVAL, 0},
    {"s", KEEL_EINVAL, 0},
    {"ms", KEEL_EINVAL, 0},
    {"-5s", KEEL_EINVAL, 0},
    {"+5s", KEEL_EINVAL, 0},
    {" 5s", KEEL_EINVAL, 0},
    {"1.5s", KEEL_EINVAL, 0},
    {"5x", KEEL_EINVAL, 0},
    {"5sec", KEEL_EINVAL, 0},
    {"5ms5", KEEL_EINVAL, 0},
    {"5w", KEEL_EINVAL, 0},
    {"0x10", KEEL_EINVAL, 0},
    {"18446744073709551616", KEEL_EINVAL, 0}, /* 2^64 */
    {"99999999999999999999", KEEL_EINVAL, 0},
    {"18446744073709551615s", KEEL_EINVAL, 0},
    {"213503982335d", KEEL_EINVAL, 0}, /* just over 2^64 ms */
};

static const u64_case size_cases[] = {
    {"512", 0, 512},
    {"512b", 0, 512},
    {"64kb", 0, 65536},
    {"64KB", 0, 65536},
    {"1mb", 0, 1048576},
    {"1gb", 0, 1073741824},
    {"1k", 0, 1024},
    {"2m", 0, 2097152},
    {"3g", 0, 3221225472ull},
    {"0", 0, 0},
    {"8 kb", 0, 8192},
    {"", KEEL_EINVAL, 0},
    {"kb", KEEL_EINVAL, 0},
    {"1tb", KEEL_EINVAL, 0},
    {"-1", KEEL_EINVAL, 0},
    {"1.5mb", KEEL_EINVAL, 0},
    {"1 mb x", KEEL_EINVAL, 0},
    {"1mib", KEEL_EINVAL, 0},
    {"20000000000gb", KEEL_EINVAL, 0},
    {"99999999999999999999", KEEL_EINVAL, 0},
};

static void run_u64_cases(const char *what, const u64_case *cases, size_t n,
                          int (*fn)(const char *, uint64_t *))
{
    for (size_t i = 0; i < n; i++) {
        uint64_t v = 12345;
        int rc = fn(cases[i].in, &v);
        if (rc != cases[i].rc)
            case_fail(cases[i].in, "%s returned %d, want %d", what, rc, cases[i].rc);
        else if (rc == 0 && v != cases[i].want)
            case_fail(cases[i].in, "%s gave %llu, want %llu", what, (unsigned long long)v,
                      (unsigned long long)cases[i].want);
        else if (rc != 0 && v != 12345)
            case_fail(cases[i].in, "%s wrote its output on failure", what);
    }
}

static void test_parse_duration(void **state)
{
    (void)state;
    run_u64_cases("duration", duration_cases, sizeof(duration_cases) / sizeof(duration_cases[0]),
                  keel_parse_duration_ms);
    uint64_t v;
    assert_int_equal(keel_parse_duration_ms(NULL, &v), KEEL_EINVAL);
    assert_int_equal(failures, 0);
}

static void test_parse_size(void **state)
{
    (void)state;
    run_u64_cases("size", size_cases, sizeof(size_cases) / sizeof(size_cases[0]),
                  keel_parse_size);
    uint64_t v;
    assert_int_equal(keel_parse_size(NULL, &v), KEEL_EINVAL);
    assert_int_equal(failures, 0);
}

static void test_parse_bool(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int rc, want;
    } cases[] = {
        {"true", 0, 1},  {"TRUE", 0, 1},  {"1", 0, 1},   {"yes", 0, 1},   {"On", 0, 1},
        {"false", 0, 0}, {"False", 0, 0}, {"0", 0, 0},   {"no", 0, 0},    {"OFF", 0, 0},
        {"", KEEL_EINVAL, 0},    {"2", KEEL_EINVAL, 0},       {"y", KEEL_EINVAL, 0},
        {"tru", KEEL_EINVAL, 0}, {"enabled", KEEL_EINVAL, 0}, {" true", KEEL_EINVAL, 0},
        {"true ", KEEL_EINVAL, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int v = 7;
        int rc = keel_parse_bool(cases[i].in, &v);
        if (rc != cases[i].rc)
            case_fail(cases[i].in, "returned %d, want %d", rc, cases[i].rc);
        else if (rc == 0 && v != cases[i].want)
            case_fail(cases[i].in, "gave %d, want %d", v, cases[i].want);
        else if (rc != 0 && v != 7)
            case_fail(cases[i].in, "wrote its output on failure");
    }
    assert_int_equal(failures, 0);
}

/* ---------------------------------------------------------------- load */

static void test_defaults(void **state)
{
    (void)state;
    keel_config cfg;
    char *err;
    assert_int_equal(load(&cfg, NULL, &err), 0); /* no .env here: fine */
    assert_string_equal(err, "");
    free(err);
    assert_string_equal(cfg.env, "development");
    assert_int_equal(cfg.production, 0);
    assert_int_equal(cfg.port, 8080);
    assert_string_equal(cfg.host, "0.0.0.0");
    assert_int_equal(T(&cfg)->flag, 1);
    assert_int_equal(cfg.body_limit, 1048576);
    assert_int_equal(cfg.max_request_line, 8192);
    assert_int_equal(cfg.max_header_size, 8192);
    assert_int_equal(cfg.max_headers, 100);
    assert_int_equal(cfg.max_head_size, 65536);
    assert_int_equal(cfg.header_timeout_ms, 10000);
    assert_int_equal(cfg.keepalive_timeout_ms, 5000);
    assert_int_equal(cfg.access_log, 1);
    assert_string_equal(T(&cfg)->secret, "");
    assert_int_equal(T(&cfg)->mode, 1);
    assert_int_equal(T(&cfg)->small, 3);
    assert_int_equal(T(&cfg)->ttl_ms, 60000);
    assert_string_equal(T(&cfg)->name, "tee");

    /* loading from an empty environment gives the defaults (an empty-default
     * boolean settled by validate) */
    keel_config d;
    assert_int_equal(keel_config_load_modules(&d, t_mods, 1, NULL, stderr), 0);
    char *a = print_to_string(&cfg), *b = print_to_string(&d);
    assert_string_equal(a, b);
    free(a);
    free(b);
    keel_config_close(&d);
    keel_config_close(&cfg);
    keel_config_close(&cfg); /* closing twice is harmless */
}

/* A variable set in the environment and the NAME=value line that
 * keel_config_print must then show. */
typedef struct env_case {
    const char *var;
    const char *value;
    const char *printed; /* NULL: refused with KEEL_ECONFIG */
} env_case;

static const env_case env_cases[] = {
    {"PORT", "9090", "PORT=9090"},
    {"PORT", "0", "PORT=0"},
    {"PORT", "65535", "PORT=65535"},
    {"HOST", "127.0.0.1", "HOST=127.0.0.1"},
    {"SERVICE_NAME", "orders", "SERVICE_NAME=orders"},
    {"WORKERS", "8", "WORKERS=8"},
    {"WORKERS", "256", "WORKERS=256"},
    {"SERVER_HEADER", "", "SERVER_HEADER="},
    {"BODY_LIMIT", "2mb", "BODY_LIMIT=2097152"},
    {"BODY_LIMIT", "0", "BODY_LIMIT=0"},
    {"MAX_REQUEST_LINE", "64", "MAX_REQUEST_LINE=64"},
    {"MAX_HEADER_SIZE", "16kb", "MAX_HEADER_SIZE=16384"},
    {"MAX_HEADERS", "50", "MAX_HEADERS=50"},
    {"MAX_HEAD_SIZE", "256", "MAX_HEAD_SIZE=256"},
    {"HEADER_TIMEOUT", "15s", "HEADER_TIMEOUT=15000ms"},
    {"BODY_TIMEOUT", "1m", "BODY_TIMEOUT=60000ms"},
    {"KEEPALIVE_TIMEOUT", "100", "KEEPALIVE_TIMEOUT=100ms"},
    {"SHUTDOWN_GRACE", "0", "SHUTDOWN_GRACE=0ms"},
    {"MAX_CONNECTIONS", "1000000", "MAX_CONNECTIONS=1000000"},
    {"MAX_REQUESTS_PER_CONNECTION", "1000", "MAX_REQUESTS_PER_CONNECTION=1000"},
    {"WORK_POOL_SIZE", "16", "WORK_POOL_SIZE=16"},
    {"LOG_LEVEL", "debug", "LOG_LEVEL=debug"},
    {"LOG_LEVEL", "WARN", "LOG_LEVEL=warn"},
    {"LOG_FORMAT", "pretty", "LOG_FORMAT=pretty"},
    {"LOG_FILE_KEEP", "0", "LOG_FILE_KEEP=0"},
    {"ACCESS_LOG", "false", "ACCESS_LOG=false"},
    {"ACCESS_LOG", "yes", "ACCESS_LOG=true"},
    {"T_FLAG", "off", "T_FLAG=false"},
    {"T_FLAG", "", "T_FLAG=true"},
    {"T_MODE", "C", "T_MODE=c"},
    {"T_SMALL", "10", "T_SMALL=10"},
    {"T_TTL", "1s", "T_TTL=1000ms"},
    {"T_BYTES", "1mb", "T_BYTES=1048576"},
    {"TRUST_PROXY_HEADER", "Forwarded", "TRUST_PROXY_HEADER=forwarded"},
    {"TRUST_PROXY", "10.0.0.0/8, ::1", "TRUST_PROXY=10.0.0.0/8, ::1"},
    {"KEEL_ENV", "test", "KEEL_ENV=test"},
    {"KEEL_ENV", "TEST", "KEEL_ENV=test"},
    {"SLOW_REQUEST_THRESHOLD", "250ms", "SLOW_REQUEST_THRESHOLD=250ms"},
    {"T_DB_URL", "sqlite:/var/lib/keel.db", "T_DB_URL=sqlite:/var/lib/keel.db"},
    {"T_DB_URL", "postgres://app@db/app", "T_DB_URL=postgres://app@db/app"},
    {"T_URL", "redis://localhost:6379/0", "T_URL=redis://localhost:6379/0"},
    {"T_URL", "REDIS://localhost", "T_URL=REDIS://localhost"},
    {"T_URL", "", "T_URL="},
    {"T_NAME", "https://a.example,https://b.example", "T_NAME=https://a.example,https://b.example"},

    {"PORT", "abc", NULL},
    {"PORT", "65536", NULL},
    {"PORT", "-1", NULL},
    {"PORT", "80x", NULL},
    {"PORT", "", NULL},
    {"PORT", " 80", NULL},
    {"WORKERS", "257", NULL},
    {"WORKERS", "4k", NULL},
    {"WORKERS", "two", NULL},
    {"BODY_LIMIT", "1tb", NULL},
    {"BODY_LIMIT", "5gb", NULL},
    {"MAX_REQUEST_LINE", "32", NULL},
    {"MAX_REQUEST_LINE", "2mb", NULL},
    {"MAX_HEADERS", "0", NULL},
    {"MAX_HEADERS", "1001", NULL},
    {"MAX_HEAD_SIZE", "100", NULL},
    {"HEADER_TIMEOUT", "50ms", NULL},
    {"HEADER_TIMEOUT", "soon", NULL},
    {"KEEPALIVE_TIMEOUT", "1.5s", NULL},
    {"HANDLER_TIMEOUT", "-1", NULL},
    {"MAX_CONNECTIONS", "0", NULL},
    {"OUTPUT_BUFFER_MAX", "1kb", NULL},
    {"WORK_POOL_SIZE", "0", NULL},
    {"WORK_QUEUE_MAX", "", NULL},
    {"LOG_LEVEL", "verbose", NULL},
    {"LOG_FORMAT", "xml", NULL},
    {"LOG_FILE_MAX_SIZE", "1kb", NULL},
    {"LOG_FILE_KEEP", "101", NULL},
    {"ACCESS_LOG", "maybe", NULL},
    {"T_FLAG", "2", NULL},
    {"KEEL_ENV", "staging", NULL},
    {"T_DB_URL", "", NULL},
    {"T_DB_URL", "postgresx://x", NULL},
    {"T_URL", "http://localhost:6379", NULL},
    {"T_MODE", "d", NULL},
    {"T_MODE", "", NULL},
    {"T_SMALL", "0", NULL},
    {"T_SMALL", "11", NULL},
    {"T_SMALL", "4294967297", NULL},
    {"T_TTL", "999", NULL},
    {"T_BYTES", "2mb", NULL},
    {"TRUST_PROXY_HEADER", "x-real-ip", NULL},
    {"TRUST_PROXY", "10.0.0.0/33", NULL},
    {"CLIENT_IPV6_PREFIX", "0", NULL},
};

static void test_env_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(env_cases) / sizeof(env_cases[0]); i++) {
        const env_case *c = &env_cases[i];
        char name[128];
        snprintf(name, sizeof(name), "%s=\"%s\"", c->var, c->value);
        unset_all();
        assert_int_equal(setenv(c->var, c->value, 1), 0);
        keel_config cfg;
        char *err;
        int rc = load(&cfg, NULL, &err);
        if (c->printed) {
            if (rc != 0) {
                case_fail(name, "returned %d: %s", rc, err);
            } else {
                char *out = print_to_string(&cfg);
                if (!has_line(out, c->printed))
                    case_fail(name, "no line \"%s\" in:\n%s", c->printed, out);
                free(out);
            }
            if (*err)
                case_fail(name, "wrote to err: %s", err);
        } else {
            char prefix[128];
            snprintf(prefix, sizeof(prefix), "keel: %s: ", c->var);
            if (rc != KEEL_ECONFIG)
                case_fail(name, "returned %d, want KEEL_ECONFIG", rc);
            else if (strncmp(err, prefix, strlen(prefix)) != 0)
                case_fail(name, "error line \"%s\" does not start with \"%s\"", err, prefix);
            else if (count_lines(err) != 1 || err[strlen(err) - 1] != '\n')
                case_fail(name, "error is not one line: \"%s\"", err);
            else if (!strstr(err, "expected"))
                case_fail(name, "error line does not say what is expected: %s", err);
        }
        free(err);
        keel_config_close(&cfg);
    }
    assert_int_equal(failures, 0);
}

static void test_env_fields(void **state)
{
    (void)state;
    setenv("PORT", "9091", 1);
    setenv("WORKERS", "3", 1);
    setenv("WORK_POOL_SIZE", "7", 1);
    setenv("LOG_FILE_KEEP", "9", 1);
    setenv("LOG_LEVEL", "error", 1);
    setenv("LOG_FORMAT", "PRETTY", 1);
    setenv("BODY_LIMIT", "4gb", 1);
    setenv("HANDLER_TIMEOUT", "2h", 1);
    setenv("ACCESS_LOG", "0", 1);
    setenv("T_NAME", "svc", 1);
    keel_config cfg;
    char *err;
    assert_int_equal(load(&cfg, NULL, &err), 0);
    free(err);
    assert_int_equal(cfg.port, 9091);
    assert_int_equal(cfg.workers, 3);
    assert_int_equal(cfg.work_threads, 7);
    assert_int_equal(cfg.log_file_keep, 9);
    assert_int_equal(cfg.log_level, 4);
    assert_int_equal(cfg.log_pretty, 1);
    assert_int_equal(cfg.body_limit, 4294967296ull);
    assert_int_equal(cfg.handler_timeout_ms, 7200000);
    assert_int_equal(cfg.access_log, 0);
    assert_string_equal(T(&cfg)->name, "svc");

    /* a deep copy, module options included, outlives the original */
    keel_config copy;
    keel_config_copy(&copy, &cfg);
    assert_ptr_not_equal(copy.host, cfg.host);
    assert_ptr_not_equal(T(&copy), T(&cfg));
    assert_ptr_not_equal(T(&copy)->name, T(&cfg)->name);
    keel_config_close(&cfg);
    assert_string_equal(T(&copy)->name, "svc");
    assert_string_equal(copy.host, "0.0.0.0");
    keel_config_close(&copy);
}

static void test_secret_not_in_error(void **state)
{
    (void)state;
    setenv("T_DB_URL", "postgresx://app:hunter2@db/app", 1);
    keel_config cfg;
    char *err;
    assert_int_equal(load(&cfg, NULL, &err), KEEL_ECONFIG);
    assert_non_null(strstr(err, "keel: T_DB_URL: "));
    assert_non_null(strstr(err, "expected sqlite:PATH or postgres://...\n"));
    assert_null(strstr(err, "hunter2"));
    free(err);
    keel_config_close(&cfg);
}

/* ---------------------------------------------------------------- .env */

static void test_env_file(void **state)
{
    (void)state;
    write_file("named.env",
               "# a comment line\n"
               "\n"
               "   # an indented comment\n"
               "export PORT=9090\n"
               "SERVICE_NAME=\"my service\"\n"
               "HOST='127.0.0.1'\n"
               "LOG_LEVEL=debug # trailing comment\n"
               "T_NAME=https://a.example#not-a-comment\n"
               "  WORKERS = 3  \n"
               "SERVER_HEADER=\"keel # kept\"\n"
               "LOG_FORMAT=pretty\r\n"
               "MAX_HEADERS=60\n");
    setenv("WORKERS", "5", 1);  /* the environment wins */
    setenv("MAX_HEADERS", "70", 1);
    keel_config cfg;
    char *err;
    assert_int_equal(load(&cfg, "named.env", &err), 0);
    assert_string_equal(err, "");
    free(err);
    assert_int_equal(cfg.port, 9090);
    assert_string_equal(cfg.service_name, "my service");
    assert_string_equal(cfg.host, "127.0.0.1");
    assert_int_equal(cfg.log_level, 1);
    assert_string_equal(T(&cfg)->name, "https://a.example#not-a-comment");
    assert_int_equal(cfg.workers, 5);
    assert_string_equal(cfg.server_header, "keel # kept");
    assert_int_equal(cfg.log_pretty, 1);
    assert_int_equal(cfg.max_headers, 70);
    /* loaded into the environment, existing values untouched */
    assert_string_equal(getenv("PORT"), "9090");
    assert_string_equal(getenv("WORKERS"), "5");
    keel_config_close(&cfg);
}

static void test_env_file_default_name(void **state)
{
    (void)state;
    write_file(".env", "PORT=7070\n");
    keel_config cfg;
    char *err;
    assert_int_equal(load(&cfg, NULL, &err), 0);
    free(err);
    assert_int_equal(cfg.port, 7070);
    keel_config_close(&cfg);
}

static void test_env_file_errors(void **state)
{
    (void)state;
    keel_config cfg;
    char *err;

    /* a named file must exist */
    assert_int_equal(load(&cfg, "missing.env", &err), KEEL_ECONFIG);
    assert_non_null(strstr(err, "missing.env"));
    assert_int_equal(count_lines(err), 1);
    free(err);
    keel_config_close(&cfg);

    /* a line that is not KEY=VALUE names the file and the line */
    write_file("named.env", "PORT=1\n# fine\nNOT A PAIR\n");
    assert_int_equal(load(&cfg, "named.env", &err), KEEL_ECONFIG);
    assert_non_null(strstr(err, "named.env:3"));
    free(err);
    keel_config_close(&cfg);
    unset_all();

    /* an empty key */
    write_file("named.env", "=value\n");
    assert_int_equal(load(&cfg, "named.env", &err), KEEL_ECONFIG);
    assert_non_null(strstr(err, "named.env:1"));
    free(err);
    keel_config_close(&cfg);
    unset_all();

    /* an invalid value from the file names the variable */
    write_file("named.env", "LOG_LEVEL=loud\n");
    assert_int_equal(load(&cfg, "named.env", &err), KEEL_ECONFIG);
    assert_non_null(strstr(err, "keel: LOG_LEVEL: "));
    free(err);
    keel_config_close(&cfg);
}

/* ---------------------------------------------------------------- production */

typedef struct prod_case {
    const char *name;
    const char *secret; /* NULL: unset */
    int rc;
} prod_case;

static const prod_case prod_cases[] = {
    {"no secret", NULL, KEEL_ECONFIG},
    {"empty secret", "", KEEL_ECONFIG},
    {"short secret", "tooshort", KEEL_ECONFIG},
    {"31 bytes", "0123456789abcdef0123456789abcde", KEEL_ECONFIG},
    {"a placeholder", "please-change-me-0123456789abcdefghij", KEEL_ECONFIG},
    {"starts with secret", "secret0123456789abcdef0123456789abcdef", KEEL_ECONFIG},
    {"32 random bytes", "q8F3kZ1xV7mN2bT9rL4wY6pH0sD5jC8a", 0},
    {"64 random bytes", "Jx9Qw2Lr7Tn4Vb1Zs8Kd3Fh6Gm0Pc5Ya9Xe2Ru7Io4Wt1Ny8Bv3Mq6Sl0Dk5Hj", 0},
};

static void test_production(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(prod_cases) / sizeof(prod_cases[0]); i++) {
        const prod_case *c = &prod_cases[i];
        unset_all();
        setenv("KEEL_ENV", "production", 1);
        if (c->secret)
            setenv("T_SECRET", c->secret, 1);
        keel_config cfg;
        char *err;
        int rc = load(&cfg, NULL, &err);
        if (rc != c->rc) {
            case_fail(c->name, "returned %d, want %d (%s)", rc, c->rc, err);
        } else if (rc) {
            if (strncmp(err, "keel: T_SECRET: ", 16) != 0)
                case_fail(c->name, "error does not name T_SECRET: %s", err);
            if (c->secret && *c->secret && strstr(err, c->secret))
                case_fail(c->name, "error shows the secret");
        } else if (!cfg.production) {
            case_fail(c->name, "production not set");
        }
        free(err);
        keel_config_close(&cfg);
    }

    /* the flag can still be asked for */
    unset_all();
    setenv("KEEL_ENV", "Production", 1);
    setenv("T_SECRET", prod_cases[6].secret, 1);
    setenv("T_FLAG", "true", 1);
    keel_config cfg;
    char *err;
    assert_int_equal(load(&cfg, NULL, &err), 0);
    free(err);
    assert_int_equal(cfg.production, 1);
    assert_int_equal(T(&cfg)->flag, 1);
    keel_config_close(&cfg);

    /* outside production a short secret is fine */
    unset_all();
    setenv("T_SECRET", "dev", 1);
    assert_int_equal(load(&cfg, NULL, &err), 0);
    free(err);
    assert_int_equal(cfg.production, 0);
    keel_config_close(&cfg);
    assert_int_equal(failures, 0);
}

/* T_FLAG: "on by default, off in production", settled by validate. */
static void test_production_demo_routes_off_by_default(void **state)
{
    (void)state;
    setenv("KEEL_ENV", "production", 1);
    setenv("T_SECRET", prod_cases[6].secret, 1);
    keel_config cfg;
    char *err;
    assert_int_equal(load(&cfg, NULL, &err), 0);
    free(err);
    assert_int_equal(cfg.production, 1);
    int demo = T(&cfg)->flag;
    keel_config_close(&cfg);
    assert_int_equal(demo, 0);
}

/* ---------------------------------------------------------------- print */

typedef struct redact_case {
    const char *var, *value;
    const char *printed; /* the whole line */
    const char *hidden;  /* must not appear anywhere, or NULL */
} redact_case;

static const redact_case redact_cases[] = {
    {"T_SECRET", "s3cr3t-value-that-must-not-leak", "T_SECRET=[REDACTED]",
     "s3cr3t-value-that-must-not-leak"},
    {"T_SECRET", "", "T_SECRET=", NULL},
    {"T_DB_URL", "postgres://app:hunter2@db:5432/app",
     "T_DB_URL=postgres://app:[REDACTED]@db:5432/app", "hunter2"},
    {"T_DB_URL", "postgresql://app:p%40ss@db/app", "T_DB_URL=postgresql://app:[REDACTED]@db/app",
     "p%40ss"},
    {"T_DB_URL", "postgres://app@db/app", "T_DB_URL=postgres://app@db/app", NULL},
    {"T_DB_URL", "sqlite:./data/keel.db", "T_DB_URL=sqlite:./data/keel.db", NULL},
    {"T_URL", "redis://:topsecret@cache:6379/0", "T_URL=redis://:[REDACTED]@cache:6379/0",
     "topsecret"},
    {"T_URL", "redis://user:pw123@cache:6379", "T_URL=redis://user:[REDACTED]@cache:6379", "pw123"},
};

static void test_print_redacts(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(redact_cases) / sizeof(redact_cases[0]); i++) {
        const redact_case *c = &redact_cases[i];
        unset_all();
        setenv(c->var, c->value, 1);
        keel_config cfg;
        char *err;
        int rc = load(&cfg, NULL, &err);
        free(err);
        if (rc) {
            case_fail(c->printed, "load returned %d", rc);
            keel_config_close(&cfg);
            continue;
        }
        char *out = print_to_string(&cfg);
        if (!has_line(out, c->printed))
            case_fail(c->printed, "line missing from:\n%s", out);
        if (c->hidden && strstr(out, c->hidden))
            case_fail(c->printed, "\"%s\" shown", c->hidden);
        free(out);
        keel_config_close(&cfg);
    }
    assert_int_equal(failures, 0);
}

/* Every known variable is printed once, as NAME=..., in table order. */
typedef struct each_state {
    const char *printed;
    const char *last;
    size_t n;
    int missing;
    int secrets;
} each_state;

static void check_each(const keel_config_module *m, const keel_config_var *v, void *arg)
{
    each_state *s = arg;
    assert_non_null(m->name);
    assert_non_null(v->def);
    assert_non_null(v->help);
    assert_true(*v->help != '\0');
    s->n++;
    s->secrets += (v->flags & KEEL_CONFIG_SECRET) != 0;
    char line[128];
    snprintf(line, sizeof(line), "%s=", v->name);
    const char *p = strstr(s->printed, line);
    while (p && p != s->printed && p[-1] != '\n')
        p = strstr(p + 1, line);
    if (!p || (s->last && p < s->last))
        s->missing++;
    s->last = p;
}

static void test_each_and_print_agree(void **state)
{
    (void)state;
    keel_config cfg;
    char *err;
    assert_int_equal(load(&cfg, NULL, &err), 0);
    free(err);
    char *out = print_to_string(&cfg);
    each_state s = {out, NULL, 0, 0, 0};
    keel_config_each(&cfg, check_each, &s);
    assert_int_equal(s.n, keel_core_config.nvars + t_config.nvars);
    assert_int_equal(s.missing, 0);
    assert_int_equal(count_lines(out), s.n);
    assert_int_equal(s.secrets, 3); /* T_SECRET, T_URL, T_DB_URL */
    free(out);
    keel_config_close(&cfg);
}

/* ---------------------------------------------------------------- registry */

/* A module nobody loaded: keel_config_get gives its defaults (made once,
 * owned by cfg), and print/each leave it out. */
static void test_unloaded_module_defaults(void **state)
{
    (void)state;
    setenv("T_NAME", "from-env", 1); /* not read: the module is not loaded */
    keel_config cfg;
    char *err;
    assert_int_equal(keel_config_load(&cfg, NULL, stderr), 0);
    const t_options *t = T(&cfg);
    assert_non_null(t);
    assert_ptr_equal(T(&cfg), t);
    assert_string_equal(t->name, "tee");
    assert_int_equal(t->ttl_ms, 60000);
    assert_int_equal(t->flag, -1); /* no validate ran: undecided */
    char *out = print_to_string(&cfg);
    assert_null(strstr(out, "T_NAME="));
    free(out);
    t_options *w = keel_config_edit(&cfg, &t_config);
    assert_ptr_equal(w, t);
    keel_free(w->name);
    w->name = keel_strdup("edited");
    assert_string_equal(T(&cfg)->name, "edited");
    keel_config_close(&cfg);

    /* core's own options are the keel_config itself */
    assert_int_equal(load(&cfg, NULL, &err), 0);
    free(err);
    assert_ptr_equal(keel_config_get(&cfg, &keel_core_config), &cfg);
    keel_config_close(&cfg);
}

/* Declarations the loader cannot honour, and names declared twice, stop
 * loading with one line. */
static void test_bad_declarations(void **state)
{
    (void)state;
    typedef struct narrow {
        unsigned short n;
        int e;
        char *s;
    } narrow;
    static const keel_config_var short_field[] = {
        {.name = "N_SHORT", .type = KEEL_CONFIG_UINT, .def = "1", KEEL_CONFIG_AT(narrow, n),
         .help = "too narrow"},
    };
    static const keel_config_var no_values[] = {
        {.name = "N_ENUM", .type = KEEL_CONFIG_ENUM, .def = "a", KEEL_CONFIG_AT(narrow, e),
         .help = "no values"},
    };
    static const keel_config_var bool_on_string[] = {
        {.name = "N_BOOL", .type = KEEL_CONFIG_BOOL, .def = "true", KEEL_CONFIG_AT(narrow, s),
         .help = "wrong field"},
    };
    static const keel_config_var again[] = {
        {.name = "T_NAME", .type = KEEL_CONFIG_STR, .def = "", KEEL_CONFIG_AT(narrow, s),
         .help = "taken"},
    };
    static const keel_config_module bad[] = {
        KEEL_CONFIG_MODULE("short", NULL, narrow, short_field, NULL),
        KEEL_CONFIG_MODULE("enum", NULL, narrow, no_values, NULL),
        KEEL_CONFIG_MODULE("bool", NULL, narrow, bool_on_string, NULL),
        KEEL_CONFIG_MODULE("again", NULL, narrow, again, NULL),
    };
    static const char *const want[] = {
        "keel: N_SHORT: bad declaration in module short: ",
        "keel: N_ENUM: bad declaration in module enum: ",
        "keel: N_BOOL: bad declaration in module bool: ",
        "keel: T_NAME: declared twice, by modules t and again\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const keel_config_module *mods[] = {&t_config, &bad[i]};
        char *text;
        size_t n;
        FILE *err = open_memstream(&text, &n);
        keel_config cfg;
        int rc = keel_config_load_modules(&cfg, mods, 2, NULL, err);
        fclose(err);
        if (rc != KEEL_ECONFIG || strncmp(text, want[i], strlen(want[i])) != 0 ||
            count_lines(text) != 1)
            case_fail(bad[i].name, "rc %d, error \"%s\"", rc, text);
        free(text);
        keel_config_close(&cfg);
    }
    /* the same module named twice is simply loaded once */
    const keel_config_module *twice[] = {&t_config, &keel_core_config, &t_config};
    keel_config cfg;
    assert_int_equal(keel_config_load_modules(&cfg, twice, 3, NULL, stderr), 0);
    keel_config_close(&cfg);
    assert_int_equal(failures, 0);
}

/* The one-line errors say what each type accepts, ranges included. */
static void test_error_texts(void **state)
{
    (void)state;
    static const struct {
        const char *var, *value, *line;
    } cases[] = {
        {"PORT", "abc", "keel: PORT: invalid value \"abc\": expected a port number from 0 to 65535"},
        {"WORKERS", "999", "keel: WORKERS: invalid value \"999\": expected a whole number from 0 to 256"},
        {"LOG_LEVEL", "loud", "keel: LOG_LEVEL: invalid value \"loud\": expected trace, debug, "
                              "info, warn, error or fatal"},
        {"KEEL_ENV", "staging", "keel: KEEL_ENV: invalid value \"staging\": expected development, "
                                "production or test"},
        {"TRUST_PROXY_HEADER", "x", "keel: TRUST_PROXY_HEADER: invalid value \"x\": expected "
                                    "x-forwarded-for or forwarded"},
        {"HEADER_TIMEOUT", "5", "keel: HEADER_TIMEOUT: invalid value \"5\": expected a duration "
                                "such as 500ms, 30s, 5m or a number of milliseconds, at least 100ms"},
        {"BODY_LIMIT", "5gb", "keel: BODY_LIMIT: invalid value \"5gb\": expected a size such as "
                              "512, 64kb, 1mb, from 0 to 4gb"},
        {"ACCESS_LOG", "maybe", "keel: ACCESS_LOG: invalid value \"maybe\": expected true or false"},
        {"T_MODE", "d", "keel: T_MODE: invalid value \"d\": expected a, b or c"},
        {"T_TTL", "1", "keel: T_TTL: invalid value \"1\": expected a duration such as 500ms, 30s, "
                       "5m or a number of milliseconds, at least 1s"},
        {"T_URL", "http://x", "keel: T_URL: invalid value \"[REDACTED]\": expected a URL starting "
                              "with redis://, or empty"},
        {"T_SECRET", "", NULL}, /* fine */
        {"TRUST_PROXY", "0.0.0.0/0", "keel: TRUST_PROXY: \"0.0.0.0/0\" trusts every address"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unset_all();
        setenv(cases[i].var, cases[i].value, 1);
        keel_config cfg;
        char *err;
        int rc = load(&cfg, NULL, &err);
        if (!cases[i].line) {
            if (rc != 0)
                case_fail(cases[i].var, "refused: %s", err);
        } else if (rc != KEEL_ECONFIG || strncmp(err, cases[i].line, strlen(cases[i].line)) != 0) {
            case_fail(cases[i].var, "rc %d, error \"%s\"", rc, err);
        }
        free(err);
        keel_config_close(&cfg);
    }
    assert_int_equal(failures, 0);
}

/* keel_config_doc: a heading and a table per module, core first. */
static void test_doc(void **state)
{
    (void)state;
    char *text;
    size_t n;
    FILE *out = open_memstream(&text, &n);
    assert_non_null(out);
    keel_config_doc(t_mods, 1, out);
    fclose(out);
    const char *core = strstr(text, "### core\n\nThe server, ");
    const char *t = strstr(text, "\n\n### t\n\nA test module.\n\n| variable | default | meaning |\n"
                                 "|---|---|---|\n");
    assert_ptr_equal(core, text);
    assert_non_null(t);
    assert_true(has_line(text, "| `PORT` | `8080` | TCP port to listen on |"));
    assert_true(has_line(text, "| `T_SECRET` | (empty) | a secret (secret: redacted in output) |"));
    assert_true(has_line(text, "| `T_TTL` | `1m` | a lifetime |"));
    assert_int_equal(count_lines(text), 6 + keel_core_config.nvars + 7 + t_config.nvars);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_parse_duration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parse_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parse_bool, setup, teardown),
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_not_in_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_file_default_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_file_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_production, setup, teardown),
        cmocka_unit_test_setup_teardown(test_production_demo_routes_off_by_default, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_print_redacts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_each_and_print_agree, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unloaded_module_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_texts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_declarations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_doc, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
