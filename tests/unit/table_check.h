/* table_check.h — shared by the table-driven unit tests: a case that fails
 * is reported with its name and counted, so one run shows every failing
 * row instead of stopping at the first. Include after <cmocka.h>. */
#ifndef KEEL_TEST_TABLE_CHECK_H
#define KEEL_TEST_TABLE_CHECK_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "keel/common.h"

static int failures;

static void case_fail(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3), unused));

static void case_fail(const char *name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    print_error("[%s] %s\n", name, msg);
    failures++;
}

static __attribute__((unused)) int str_is(keel_str s, const char *want)
{
    return keel_str_eq(s, keel_str_c(want));
}

#endif
