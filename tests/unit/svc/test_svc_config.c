/* test_svc_config.c — the configuration modules keel_main registers
 * (svc_config.c) and the real tables behind them: every default parses,
 * no variable is declared twice, a service without a database does not
 * list the database's variables, and the modules' own rules (DATABASE_URL,
 * REDIS_URL, CORS, rate-limit tiers) hold. The registry itself is tested
 * in tests/unit/core/test_config.c.
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

#include "keel/keel.h"
#include "svc/svc_internal.h"

#include "config_env.h"
#include "table_check.h"

static const keel_app with_db = {.name = "t", .use_database = 1};
static const keel_app without_db = {.name = "t"};

static const keel_config_module *mods[KEEL__SVC_MAX_CONFIG_MODULES];
static size_t nmods;
static tmp_cwd cwd;

static void unset_all(void)
{
    unset_core();
    for (size_t i = 0; i < nmods; i++)
        for (size_t j = 0; j < mods[i]->nvars; j++)
            unsetenv(mods[i]->vars[j].name);
}

static int setup(void **state)
{
    (void)state;
    nmods = keel__svc_config_modules(&with_db, mods);
    unset_all();
    failures = 0;
    /* no stray .env */
    tmp_cwd_enter(&cwd, "/tmp/keel-test-svc-config-XXXXXX");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unset_all();
    tmp_cwd_leave(&cwd);
    return 0;
}

/* Loads mods (the service's) into cfg with err captured; returns the rc, *err_text to free. */
static int load(keel_config *cfg, char **err_text)
{
    return load_captured(cfg, mods, nmods, NULL, err_text);
}

/* Setting every variable to its own default changes nothing: each default
 * parses, and the loaded defaults are what keel_config_get gives. */
static void test_defaults_parse(void **state)
{
    (void)state;
    keel_config plain;
    char *err;
    assert_int_equal(load(&plain, &err), 0);
    assert_string_equal(err, "");
    free(err);
    char *want = print_to_string(&plain);
    keel_config_close(&plain);

    size_t nvars = keel_core_config.nvars;
    for (size_t i = 0; i < keel_core_config.nvars; i++)
        setenv(keel_core_config.vars[i].name, keel_core_config.vars[i].def, 1);
    for (size_t i = 0; i < nmods; i++) {
        nvars += mods[i]->nvars;
        for (size_t j = 0; j < mods[i]->nvars; j++)
            setenv(mods[i]->vars[j].name, mods[i]->vars[j].def, 1);
    }
    keel_config cfg;
    assert_int_equal(load(&cfg, &err), 0);
    assert_string_equal(err, "");
    free(err);
    char *got = print_to_string(&cfg);
    assert_string_equal(got, want);
    assert_int_equal(count_lines(got), nvars);
    free(got);
    free(want);
    keel_config_close(&cfg);
}

static void count_var(const keel_config_module *m, const keel_config_var *v, void *arg)
{
    (void)m;
    (void)v;
    (*(size_t *)arg)++;
}

/* No variable is declared by two modules, every one has a help line. */
static void test_names_unique_and_documented(void **state)
{
    (void)state;
    size_t total = keel_core_config.nvars;
    for (size_t i = 0; i < nmods; i++)
        total += mods[i]->nvars;
    const keel_config_var **all = calloc(total, sizeof(*all));
    size_t n = 0;
    for (size_t i = 0; i < keel_core_config.nvars; i++)
        all[n++] = &keel_core_config.vars[i];
    for (size_t i = 0; i < nmods; i++)
        for (size_t j = 0; j < mods[i]->nvars; j++)
            all[n++] = &mods[i]->vars[j];
    for (size_t i = 0; i < n; i++) {
        if (!all[i]->help || !*all[i]->help)
            case_fail(all[i]->name, "no help line");
        for (size_t j = i + 1; j < n; j++)
            if (!strcmp(all[i]->name, all[j]->name))
                case_fail(all[i]->name, "declared twice");
    }
    free(all);
    assert_int_equal(failures, 0);

    /* the loader refuses a duplicate too */
    static const keel_config_var dup_vars[] = {
        {.name = "PORT", .type = KEEL_CONFIG_STR, .def = "", .off = 0, .size = sizeof(char *),
         .help = "again"},
    };
    static const keel_config_module dup = KEEL_CONFIG_MODULE("dup", NULL, char *, dup_vars, NULL);
    const keel_config_module *one[] = {&dup};
    keel_config cfg;
    FILE *null = fopen("/dev/null", "w");
    assert_int_equal(keel_config_load_modules(&cfg, one, 1, NULL, null), KEEL_ECONFIG);
    fclose(null);
    keel_config_close(&cfg);

    /* each lists what was loaded */
    assert_int_equal(keel_config_load_modules(&cfg, mods, nmods, NULL, stderr), 0);
    size_t seen = 0;
    keel_config_each(&cfg, count_var, &seen);
    assert_int_equal(seen, total);
    keel_config_close(&cfg);
}

/* A service without a database lists neither DATABASE_* nor MIGRATE_*. */
static void test_service_without_database(void **state)
{
    (void)state;
    const keel_config_module *m[KEEL__SVC_MAX_CONFIG_MODULES];
    size_t n = keel__svc_config_modules(&without_db, m);
    assert_int_equal(n, nmods - 1);
    for (size_t i = 0; i < n; i++)
        assert_ptr_not_equal(m[i], &keel_db_config);
    char *text;
    size_t len;
    FILE *out = open_memstream(&text, &len);
    keel_config_doc(m, n, out);
    fclose(out);
    assert_null(strstr(text, "DATABASE_URL"));
    assert_null(strstr(text, "MIGRATE_ON_START"));
    assert_non_null(strstr(text, "| `REDIS_URL` |"));
    assert_non_null(strstr(text, "### rate_limit\n"));
    free(text);

    /* the app's own modules come last */
    static const keel_config_var v[] = {
        {.name = "MY_THING", .type = KEEL_CONFIG_STR, .def = "x", .off = 0,
         .size = sizeof(char *), .help = "mine"},
    };
    static const keel_config_module mine = KEEL_CONFIG_MODULE("mine", NULL, char *, v, NULL);
    static const keel_config_module *const list[] = {&mine};
    keel_app app = {.name = "t", .config_modules = list, .nconfig_modules = 1};
    n = keel__svc_config_modules(&app, m);
    assert_ptr_equal(m[n - 1], &mine);
}

typedef struct row {
    const char *var, *value;
    const char *printed; /* NULL: refused, with a line naming `named` */
    const char *named;
} row;

static const row rows[] = {
    {"DATABASE_URL", "sqlite:/var/lib/keel.db", "DATABASE_URL=sqlite:/var/lib/keel.db", NULL},
    {"DATABASE_URL", "postgres://app:pw1@db/app", "DATABASE_URL=postgres://app:[REDACTED]@db/app",
     NULL},
    {"DATABASE_URL", "./plain.db", "DATABASE_URL=./plain.db", NULL},
    {"DATABASE_URL", "", NULL, "keel: DATABASE_URL: "},
    {"DATABASE_URL", "postgresql:/x", NULL, "keel: DATABASE_URL: "},
    {"DATABASE_POOL_MAX", "0", NULL, "keel: DATABASE_POOL_MAX: "},
    {"DATABASE_POOL_MAX", "8", "DATABASE_POOL_MAX=8", NULL},
    {"REDIS_URL", "redis://:pw2@cache:6379/0", "REDIS_URL=redis://:[REDACTED]@cache:6379/0", NULL},
    {"REDIS_URL", "", "REDIS_URL=", NULL},
    {"REDIS_URL", "http://localhost:6379", NULL, "keel: REDIS_URL: "},
    {"CACHE_MAX_BYTES", "1kb", NULL, "keel: CACHE_MAX_BYTES: "},
    {"BREAKER_WINDOW", "1m", "BREAKER_WINDOW=60000ms", NULL},
    {"INSTANCE_ID", "i-1", "INSTANCE_ID=i-1", NULL},
    {"CORS_ORIGIN", "https://a.example", "CORS_ORIGIN=https://a.example", NULL},
    {"CORS_MAX_AGE", "86401", NULL, "keel: CORS_MAX_AGE: "},
    {"SHED_RSS", "1gb", "SHED_RSS=1073741824", NULL},
    {"RATE_LIMIT_STRICT", "abc", NULL, "keel: RATE_LIMIT_STRICT: "},
    {"RATE_LIMIT_TIERS", "reports=10/1m, upload=5/1h",
     "RATE_LIMIT_TIERS=reports=10/1m, upload=5/1h", NULL},
    {"RATE_LIMIT_TIERS", "general=1/1m", NULL, "keel: RATE_LIMIT_TIERS: "},
};

static void test_module_rows(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const row *c = &rows[i];
        unset_all();
        setenv(c->var, c->value, 1);
        keel_config cfg;
        char *err;
        int rc = load(&cfg, &err);
        if (c->printed) {
            char *out = rc == 0 ? print_to_string(&cfg) : NULL;
            if (rc != 0)
                case_fail(c->var, "refused \"%s\": %s", c->value, err);
            else if (!has_line(out, c->printed))
                case_fail(c->var, "no line \"%s\"", c->printed);
            free(out);
        } else if (rc != KEEL_ECONFIG || strncmp(err, c->named, strlen(c->named)) != 0) {
            case_fail(c->var, "\"%s\": rc %d, error \"%s\"", c->value, rc, err);
        }
        if (strstr(err, "pw1") || strstr(err, "pw2"))
            case_fail(c->var, "error shows a password");
        free(err);
        keel_config_close(&cfg);
    }

    /* CORS_CREDENTIALS with CORS_ORIGIN=* (the edge module's check) */
    unset_all();
    setenv("CORS_ORIGIN", "*", 1);
    setenv("CORS_CREDENTIALS", "true", 1);
    keel_config cfg;
    char *err;
    assert_int_equal(load(&cfg, &err), KEEL_ECONFIG);
    assert_non_null(strstr(err, "keel: CORS_CREDENTIALS: "));
    free(err);
    keel_config_close(&cfg);

    /* tiers are only checked when the limiter is on */
    unset_all();
    setenv("RATE_LIMIT_ENABLED", "false", 1);
    setenv("RATE_LIMIT_AUTH", "nonsense", 1);
    assert_int_equal(load(&cfg, &err), 0);
    free(err);
    const keel_rate_limit_options *rl = keel_config_get(&cfg, &keel_rate_limit_config);
    assert_int_equal(rl->rate_limit, 0);
    assert_string_equal(rl->rate_limit_auth, "nonsense");
    keel_config_close(&cfg);
    assert_int_equal(failures, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults_parse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_names_unique_and_documented, setup, teardown),
        cmocka_unit_test_setup_teardown(test_service_without_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_module_rows, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
