/* test_log_levels.c — log levels per module (src/core/log.c): level
 * names, module names from source paths, the longest-prefix rule, inherit,
 * refusals, and that a call site sees a change at once. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "keel/log.h"

static void test_parse(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int want;
    } cases[] = {
        {"trace", KEEL_LOG_TRACE}, {"DEBUG", KEEL_LOG_DEBUG}, {"Info", KEEL_LOG_INFO},
        {"warn", KEEL_LOG_WARN},   {"warning", KEEL_LOG_WARN}, {"error", KEEL_LOG_ERROR},
        {"fatal", KEEL_LOG_FATAL}, {"", -1},                   {"verbose", -1},
        {"info ", -1},             {NULL, -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(keel_log_level_parse(cases[i].in), cases[i].want);
}

static void test_module_names(void **state)
{
    (void)state;
    static const struct {
        const char *file, *want;
    } cases[] = {
        {"src/store/redis.c", "store.redis"},
        {"src/mw/access_log.c", "mw.access_log"},
        {"/home/x/keel/src/app/users.c", "app.users"},
        {"examples/hello-service/main.c", "hello-service.main"},
        {"main.c", "main"},
        {"tests/unit/core/test_log_levels.c", "core.test_log_levels"},
    };
    char buf[64];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        keel_log_module_of(cases[i].file, buf, sizeof(buf));
        assert_string_equal(buf, cases[i].want);
    }
}

static void test_levels(void **state)
{
    (void)state;
    assert_int_equal(keel_log_set_level(NULL, KEEL_LOG_INFO), 0);
    /* this file's module is core.test_log_levels */
    assert_false(keel_log_enabled(KEEL_LOG_DEBUG));
    assert_int_equal(keel_log_set_level("core", KEEL_LOG_DEBUG), 0);
    assert_true(keel_log_enabled(KEEL_LOG_DEBUG)); /* seen at once */
    assert_int_equal(keel_log_set_level("core.test_log_levels", KEEL_LOG_ERROR), 0);
    assert_false(keel_log_enabled(KEEL_LOG_WARN)); /* the longer prefix wins */
    assert_int_equal(keel_log_effective_level("core.test_log_levels"), KEEL_LOG_ERROR);
    assert_int_equal(keel_log_effective_level("core.other"), KEEL_LOG_DEBUG);
    assert_int_equal(keel_log_effective_level("corex"), KEEL_LOG_INFO); /* not a prefix */
    assert_int_equal(keel_log_set_level("core.test_log_levels", -1), 0); /* inherit */
    assert_true(keel_log_enabled(KEEL_LOG_DEBUG));
    json_t *j = keel_log_levels_json();
    json_t *mod = json_object_get(json_object_get(j, "modules"), "core.test_log_levels");
    assert_non_null(mod);
    assert_true(json_is_null(json_object_get(mod, "configured")));
    assert_string_equal(json_string_value(json_object_get(mod, "effective")), "debug");
    json_decref(j);
    /* refusals */
    assert_int_equal(keel_log_set_level("Bad Name", KEEL_LOG_INFO), KEEL_EINVAL);
    assert_int_equal(keel_log_set_level(".x", KEEL_LOG_INFO), KEEL_EINVAL);
    assert_int_equal(keel_log_set_level("x", 9), KEEL_EINVAL);
    assert_int_equal(keel_log_set_level("root", -1), KEEL_EINVAL);
    char name[16];
    int rc = 0;
    for (int i = 0; i < 70 && rc == 0; i++) {
        snprintf(name, sizeof(name), "m%d", i);
        rc = keel_log_set_level(name, KEEL_LOG_WARN);
    }
    assert_int_equal(rc, KEEL_EBUSY);
    assert_int_equal(keel_log_set_level("core", -1), 0);
    assert_false(keel_log_enabled(KEEL_LOG_DEBUG));
    keel_log_close();
}

static void test_apply_spec(void **state)
{
    (void)state;
    static const char *const good[] = {"", "  ", "store.redis=debug", "a=info, b.c = WARN ,",
                                       "mw=error,mw.access_log=trace"};
    static const char *const bad[] = {"store", "=debug", "x=loud", "Bad=info", "a=info,,b",
                                      "a.=info", "a=", "a==info"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_int_equal(keel_log_apply_levels(good[i], 0), 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (strcmp(bad[i], "a=info,,b") != 0)
            assert_int_equal(keel_log_apply_levels(bad[i], 0), KEEL_EINVAL);
    assert_int_equal(keel_log_apply_levels("a=info,,b", 0), KEEL_EINVAL); /* "b": no level */
    assert_int_equal(keel_log_set_level(NULL, KEEL_LOG_INFO), 0);
    assert_int_equal(keel_log_set_level("old", KEEL_LOG_ERROR), 0);
    assert_int_equal(keel_log_apply_levels("core=debug, x.y=warn", 1), 0);
    assert_int_equal(keel_log_effective_level("old"), KEEL_LOG_INFO); /* replaced */
    assert_int_equal(keel_log_effective_level("core.a"), KEEL_LOG_DEBUG);
    assert_int_equal(keel_log_effective_level("x.y.z"), KEEL_LOG_WARN);
    assert_true(keel_log_enabled(KEEL_LOG_DEBUG));
    /* a bad spec applies nothing */
    assert_int_equal(keel_log_apply_levels("core=info, x=nope", 1), KEEL_EINVAL);
    assert_int_equal(keel_log_effective_level("core.a"), KEEL_LOG_DEBUG);
    assert_int_equal(keel_log_apply_levels("", 1), 0);
    assert_false(keel_log_enabled(KEEL_LOG_DEBUG));
    keel_log_close();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_apply_spec),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_module_names),
        cmocka_unit_test(test_levels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
