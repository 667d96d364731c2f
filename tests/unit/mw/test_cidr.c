/* test_cidr.c — keel_cidr_parse_list and keel_cidr_match (TRUST_PROXY):
 * lists that parse or not, and addresses in or out of them. Cases are rows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "keel/mw.h"

#include "table_check.h"

typedef struct parse_case {
    const char *name;
    const char *list;
    int want; /* entries, or KEEL_EINVAL */
} parse_case;

static const parse_case parse_cases[] = {
    {"empty", "", 0},
    {"blanks", " , ,", 0},
    {"one v4 host", "127.0.0.1", 1},
    {"v4 block", "10.0.0.0/8", 1},
    {"v4 /0", "0.0.0.0/0", 1},
    {"v4 /32", "192.168.1.5/32", 1},
    {"list with spaces", "10.0.0.0/8, 172.16.0.0/12 ,192.168.0.0/16", 3},
    {"v6 host", "::1", 1},
    {"v6 block", "fd00::/8", 1},
    {"v6 /128", "2001:db8::1/128", 1},
    {"mixed", "127.0.0.1/8,::1", 2},
    {"v4 prefix too long", "10.0.0.0/33", KEEL_EINVAL},
    {"v6 prefix too long", "::/129", KEEL_EINVAL},
    {"empty prefix", "10.0.0.0/", KEEL_EINVAL},
    {"prefix not a number", "10.0.0.0/x", KEEL_EINVAL},
    {"negative prefix", "10.0.0.0/-1", KEEL_EINVAL},
    {"short v4", "10.0.0", KEEL_EINVAL},
    {"octet too big", "10.0.0.256", KEEL_EINVAL},
    {"hostname", "localhost", KEEL_EINVAL},
    {"mapped block refused", "::ffff:10.0.0.0/104", KEEL_EINVAL},
    {"one bad of two", "10.0.0.0/8,nope", KEEL_EINVAL},
    {"too long", "1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa:bbbb", KEEL_EINVAL},
};

static void test_parse_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
        const parse_case *c = &parse_cases[i];
        keel_cidr out[8];
        int got = keel_cidr_parse_list(c->list, out, 8);
        if (got != c->want)
            case_fail(c->name, "\"%s\": got %d, want %d", c->list, got, c->want);
    }
    assert_int_equal(failures, 0);
}

static void test_parse_cap(void **state)
{
    (void)state;
    keel_cidr out[2];
    assert_int_equal(keel_cidr_parse_list("1.1.1.1,2.2.2.2", out, 2), 2);
    assert_int_equal(keel_cidr_parse_list("1.1.1.1,2.2.2.2,3.3.3.3", out, 2), KEEL_EINVAL);
    assert_int_equal(keel_cidr_parse_list(NULL, out, 2), 0);
}

typedef struct match_case {
    const char *name;
    const char *list;
    const char *addr;
    int want;
} match_case;

static const match_case match_cases[] = {
    {"v4 host in", "127.0.0.1", "127.0.0.1", 1},
    {"v4 host out", "127.0.0.1", "127.0.0.2", 0},
    {"v4 /8 in", "10.0.0.0/8", "10.255.3.4", 1},
    {"v4 /8 out", "10.0.0.0/8", "11.0.0.1", 0},
    {"v4 /12 edge in", "172.16.0.0/12", "172.31.255.255", 1},
    {"v4 /12 edge out", "172.16.0.0/12", "172.32.0.0", 0},
    {"v4 /0 any", "0.0.0.0/0", "8.8.8.8", 1},
    {"v4 /0 not v6", "0.0.0.0/0", "::1", 0},
    {"v4 /31", "192.168.1.4/31", "192.168.1.5", 1},
    {"v4 /31 out", "192.168.1.4/31", "192.168.1.6", 0},
    {"block bits ignored", "10.1.2.3/8", "10.9.9.9", 1},
    {"v6 host in", "::1", "::1", 1},
    {"v6 host out", "::1", "::2", 0},
    {"v6 /8 in", "fd00::/8", "fdab:1::5", 1},
    {"v6 /8 out", "fd00::/8", "fe80::1", 0},
    {"v6 /33 in", "2001:db8::/33", "2001:db8:7fff::1", 1},
    {"v6 /33 out", "2001:db8::/33", "2001:db8:8000::1", 0},
    {"v6 not v4", "::/0", "127.0.0.1", 0},
    {"mapped peer vs v4", "127.0.0.0/8", "::ffff:127.0.0.1", 1},
    {"mapped peer out", "10.0.0.0/8", "::ffff:127.0.0.1", 0},
    {"second entry", "10.0.0.0/8, 127.0.0.1", "127.0.0.1", 1},
    {"empty list", "", "127.0.0.1", 0},
    {"bad peer", "0.0.0.0/0", "-", 0},
    {"null peer", "0.0.0.0/0", NULL, 0},
};

static void test_match_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(match_cases) / sizeof(match_cases[0]); i++) {
        const match_case *c = &match_cases[i];
        keel_cidr list[8];
        int n = keel_cidr_parse_list(c->list, list, 8);
        if (n < 0) {
            case_fail(c->name, "list \"%s\" did not parse", c->list);
            continue;
        }
        int got = keel_cidr_match(list, (size_t)n, c->addr);
        if (got != c->want)
            case_fail(c->name, "%s in \"%s\": got %d, want %d", c->addr ? c->addr : "(null)",
                      c->list, got, c->want);
    }
    assert_int_equal(failures, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_parse_cap),
        cmocka_unit_test(test_match_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
