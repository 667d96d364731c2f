/* test_log.c — the logger: JSON lines, levels, redaction of secret-looking
 * fields at any depth, escaping of hostile text, the pretty format. */
#include <fcntl.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "keel/log.h"

/* Runs fn with stdout redirected to a temp file; returns what it wrote. */
static char *capture(void (*fn)(void))
{
    char path[] = "/tmp/keel-log-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    dup2(fd, STDOUT_FILENO);
    fn();
    keel_log_flush();
    dup2(saved, STDOUT_FILENO);
    close(saved);
    off_t n = lseek(fd, 0, SEEK_END);
    char *out = calloc(1, (size_t)n + 1);
    assert_int_equal(pread(fd, out, (size_t)n, 0), n);
    close(fd);
    unlink(path);
    return out;
}

static void log_secrets(void)
{
    keel_log(KEEL_LOG_INFO, "login", "{s:s,s:s,s:{s:s,s:[{s:s}]},s:s,s:s}", "user", "ada",
             "password", "hunter2", "nested", "api_key", "k-123", "list", "refresh_token",
             "t-456", "Authorization", "Bearer abc", "set-cookie", "sid=1");
}

static void test_redaction(void **state)
{
    (void)state;
    char *out = capture(log_secrets);
    json_error_t e;
    json_t *o = json_loads(out, 0, &e);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "msg")), "login");
    assert_string_equal(json_string_value(json_object_get(o, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(o, "user")), "ada");
    assert_null(strstr(out, "hunter2"));
    assert_null(strstr(out, "k-123"));
    assert_null(strstr(out, "t-456"));
    assert_null(strstr(out, "Bearer abc"));
    assert_null(strstr(out, "sid=1"));
    assert_string_equal(json_string_value(json_object_get(o, "password")), "[REDACTED]");
    json_decref(o);
    free(out);
}

static void log_hostile(void)
{
    keel_buf *b = keel_log_begin(KEEL_LOG_WARN, "quote\" newline\n nul-free \x01 bad utf8 \xff end");
    assert_non_null(b);
    keel_log_end(b);
}

static void test_escaping(void **state)
{
    (void)state;
    char *out = capture(log_hostile);
    assert_non_null(strchr(out, '\n'));
    assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1); /* one line */
    json_error_t e;
    json_t *o = json_loads(out, 0, &e);
    assert_non_null(o);
    const char *msg = json_string_value(json_object_get(o, "msg"));
    assert_non_null(strstr(msg, "quote\" newline\n"));
    assert_non_null(strstr(msg, "\xef\xbf\xbd")); /* U+FFFD for the bad byte */
    json_decref(o);
    free(out);
}

static void log_levels(void)
{
    keel_log(KEEL_LOG_DEBUG, "hidden", NULL);
    keel_log(KEEL_LOG_ERROR, "shown", NULL);
}

static void test_levels(void **state)
{
    (void)state;
    keel_config cfg;
    keel_config_defaults(&cfg);
    cfg.log_level = KEEL_LOG_WARN;
    keel_log_init(&cfg);
    char *out = capture(log_levels);
    assert_null(strstr(out, "hidden"));
    assert_non_null(strstr(out, "\"level\":\"error\",\"msg\":\"shown\""));
    free(out);
    cfg.log_level = KEEL_LOG_INFO;
    cfg.log_pretty = 1;
    keel_log_init(&cfg);
    out = capture(log_secrets);
    assert_int_not_equal(out[0], '{');
    assert_non_null(strstr(out, "login"));
    assert_non_null(strstr(out, "password=[REDACTED]"));
    assert_null(strstr(out, "hunter2"));
    free(out);
    keel_log_close();
    keel_config_close(&cfg);
}

static void test_secret_keys(void **state)
{
    (void)state;
    const char *secret[] = {"password", "new_password", "Authorization", "cookie",
                            "Set-Cookie", "access_token", "client_secret", "X-API-Key"};
    const char *plain[] = {"user", "email", "route", "status", "passage"};
    for (size_t i = 0; i < sizeof(secret) / sizeof(*secret); i++)
        assert_true(keel_log_is_secret_key(secret[i]));
    for (size_t i = 0; i < sizeof(plain) / sizeof(*plain); i++)
        assert_false(keel_log_is_secret_key(plain[i]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redaction),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_secret_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
