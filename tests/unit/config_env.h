/* config_env.h — shared by the configuration tests (core's registry and
 * the service's modules): a clean environment, a fresh empty working
 * directory (so a stray .env never leaks in), loading with the errors
 * captured, and keel_config_print's output as text. Include after
 * <cmocka.h>. */
#ifndef KEEL_TEST_CONFIG_ENV_H
#define KEEL_TEST_CONFIG_ENV_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keel/config.h"

/* keel_config_each callback: unsets the variable. */
static __attribute__((unused)) void unset_one(const keel_config_module *m, const keel_config_var *v,
                                              void *arg)
{
    (void)m;
    (void)arg;
    unsetenv(v->name);
}

/* Unsets every variable the defaults list (core's). */
static __attribute__((unused)) void unset_core(void)
{
    keel_config cfg;
    keel_config_defaults(&cfg);
    keel_config_each(&cfg, unset_one, NULL);
    keel_config_close(&cfg);
}

/* A test's temporary working directory and the one to return to. */
typedef struct tmp_cwd {
    char dir[64];
    char old_cwd[4096];
} tmp_cwd;

/* Makes a new empty directory from tmpl (ending in XXXXXX) and changes into it. */
static __attribute__((unused)) void tmp_cwd_enter(tmp_cwd *t, const char *tmpl)
{
    assert_non_null(getcwd(t->old_cwd, sizeof(t->old_cwd)));
    snprintf(t->dir, sizeof(t->dir), "%s", tmpl);
    assert_non_null(mkdtemp(t->dir));
    assert_int_equal(chdir(t->dir), 0);
}

/* Changes back and removes the directory (empty by then). */
static __attribute__((unused)) void tmp_cwd_leave(tmp_cwd *t)
{
    assert_int_equal(chdir(t->old_cwd), 0);
    rmdir(t->dir);
}

/* Loads mods into cfg with err captured; returns the rc, *err_text to free. */
static __attribute__((unused)) int load_captured(keel_config *cfg,
                                                 const keel_config_module *const *mods, size_t n,
                                                 const char *env_file, char **err_text)
{
    size_t len;
    FILE *err = open_memstream(err_text, &len);
    assert_non_null(err);
    int rc = keel_config_load_modules(cfg, mods, n, env_file, err);
    fclose(err);
    return rc;
}

/* keel_config_print's output, to free. */
static __attribute__((unused)) char *print_to_string(const keel_config *cfg)
{
    char *text;
    size_t n;
    FILE *out = open_memstream(&text, &n);
    assert_non_null(out);
    keel_config_print(cfg, out);
    fclose(out);
    return text;
}

/* 1 when text has the whole line `line`. */
static __attribute__((unused)) int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            return 1;
    return 0;
}

/* How many lines text has (newlines). */
static __attribute__((unused)) size_t count_lines(const char *text)
{
    size_t n = 0;
    for (const char *p = text; *p; p++)
        n += *p == '\n';
    return n;
}

#endif
