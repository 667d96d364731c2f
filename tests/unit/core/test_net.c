/* test_net.c — keel_cidr_parse_list and keel_cidr_match (TRUST_PROXY):
 * lists that parse or not, and addresses in or out of them; the client
 * address from X-Forwarded-For / Forwarded chains; IPv6 prefixes. Cases
 * are rows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>

#include "keel/net.h"

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

typedef struct fwd_case {
    const char *name;
    keel_fwd_header kind;
    const char *trusted;
    const char *values[3]; /* header lines, NULL-terminated */
    const char *want;      /* the client, or NULL: the peer */
} fwd_case;

static const fwd_case fwd_cases[] = {
    {"one hop", KEEL_FWD_XFF, "127.0.0.1", {"203.0.113.9"}, "203.0.113.9"},
    {"rightmost untrusted", KEEL_FWD_XFF, "10.0.0.0/8", {"1.1.1.1, 2.2.2.2, 10.0.0.5"}, "2.2.2.2"},
    {"spoofed left ignored", KEEL_FWD_XFF, "10.0.0.0/8", {"6.6.6.6, 2.2.2.2"}, "2.2.2.2"},
    {"all trusted: leftmost", KEEL_FWD_XFF, "10.0.0.0/8", {"10.0.0.1, 10.0.0.2"}, "10.0.0.1"},
    {"two lines one list", KEEL_FWD_XFF, "10.0.0.0/8", {"9.9.9.9", "3.3.3.3, 10.1.1.1"}, "3.3.3.3"},
    {"empty items skipped", KEEL_FWD_XFF, "", {" , 4.4.4.4 ,, "}, "4.4.4.4"},
    {"v4 with port", KEEL_FWD_XFF, "", {"5.5.5.5:8080"}, "5.5.5.5"},
    {"v6", KEEL_FWD_XFF, "", {"2001:db8::1"}, "2001:db8::1"},
    {"v6 bracketed port", KEEL_FWD_XFF, "", {"[2001:db8::2]:443"}, "2001:db8::2"},
    {"mapped v6 is v4", KEEL_FWD_XFF, "", {"::ffff:7.7.7.7"}, "7.7.7.7"},
    {"garbage rightmost", KEEL_FWD_XFF, "", {"1.1.1.1, junk"}, NULL},
    {"garbage mid", KEEL_FWD_XFF, "10.0.0.0/8", {"1.1.1.1, junk, 10.0.0.3"}, "10.0.0.3"},
    {"unclosed bracket", KEEL_FWD_XFF, "", {"[::1"}, NULL},
    {"empty", KEEL_FWD_XFF, "", {""}, NULL},
    {"only commas", KEEL_FWD_XFF, "", {",,,"}, NULL},
    {"port on v6 unbracketed is v6", KEEL_FWD_XFF, "", {"2001:db8::3:80"}, "2001:db8::3:80"},
    {"forwarded simple", KEEL_FWD_FORWARDED, "", {"for=192.0.2.60;proto=http"}, "192.0.2.60"},
    {"forwarded quoted v6", KEEL_FWD_FORWARDED, "", {"for=\"[2001:db8:cafe::17]:4711\""},
     "2001:db8:cafe::17"},
    {"forwarded case", KEEL_FWD_FORWARDED, "", {"For=192.0.2.61"}, "192.0.2.61"},
    {"forwarded chain", KEEL_FWD_FORWARDED, "10.0.0.0/8",
     {"for=6.6.6.6, for=198.51.100.1;by=10.0.0.1, for=10.0.0.2"}, "198.51.100.1"},
    {"forwarded unknown", KEEL_FWD_FORWARDED, "", {"for=unknown"}, NULL},
    {"forwarded obfuscated", KEEL_FWD_FORWARDED, "", {"for=_hidden"}, NULL},
    {"forwarded no for", KEEL_FWD_FORWARDED, "", {"proto=https"}, NULL},
    {"forwarded spaces between pairs", KEEL_FWD_FORWARDED, "", {" for=192.0.2.62 ; proto=https "},
     "192.0.2.62"},
    {"forwarded spaces around = (RFC 7239 has none)", KEEL_FWD_FORWARDED, "",
     {"for = 192.0.2.63"}, NULL},
};

static void test_forwarded_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(fwd_cases) / sizeof(fwd_cases[0]); i++) {
        const fwd_case *c = &fwd_cases[i];
        keel_cidr list[8];
        int n = keel_cidr_parse_list(c->trusted, list, 8);
        keel_str v[3];
        size_t nv = 0;
        while (nv < 3 && c->values[nv]) {
            v[nv] = keel_str_c(c->values[nv]);
            nv++;
        }
        keel_addr a;
        int got = keel_forwarded_client(v, nv, c->kind, list, (size_t)n, &a);
        char text[64] = "(peer)";
        if (got)
            keel_addr_format(&a, text, sizeof(text));
        if (c->want ? (!got || strcmp(text, c->want) != 0) : got)
            case_fail(c->name, "got %s, want %s", text, c->want ? c->want : "(peer)");
    }
    assert_int_equal(failures, 0);
}

static void test_forwarded_https(void **state)
{
    (void)state;
    keel_str v[2] = {keel_str_c("https, http"), keel_str_c("http")};
    assert_int_equal(keel_forwarded_https(v, 2, KEEL_FWD_XFF), 1);
    v[0] = keel_str_c(" HTTPS ");
    assert_int_equal(keel_forwarded_https(v, 1, KEEL_FWD_XFF), 1);
    v[0] = keel_str_c("http, https");
    assert_int_equal(keel_forwarded_https(v, 1, KEEL_FWD_XFF), 0);
    v[0] = keel_str_c("httpsx");
    assert_int_equal(keel_forwarded_https(v, 1, KEEL_FWD_XFF), 0);
    v[0] = keel_str_c("for=1.2.3.4, for=10.0.0.1;proto=https");
    assert_int_equal(keel_forwarded_https(v, 1, KEEL_FWD_FORWARDED), 1);
    v[0] = keel_str_c("for=1.2.3.4;proto=http, for=10.0.0.1;proto=https");
    assert_int_equal(keel_forwarded_https(v, 1, KEEL_FWD_FORWARDED), 0);
    assert_int_equal(keel_forwarded_https(v, 0, KEEL_FWD_XFF), 0);
}

static void test_prefix_and_any(void **state)
{
    (void)state;
    keel_addr a, b;
    char text[64];
    assert_int_equal(keel_addr_parse("2001:db8:1:2:3:4:5:6", 20, &a), 0);
    b = keel_addr_prefix(&a, 64);
    keel_addr_format(&b, text, sizeof(text));
    assert_string_equal(text, "2001:db8:1:2::");
    b = keel_addr_prefix(&a, 56);
    keel_addr_format(&b, text, sizeof(text));
    assert_string_equal(text, "2001:db8:1::");
    b = keel_addr_prefix(&a, 61);
    assert_int_equal(b.b[7], 0);
    assert_int_equal(keel_addr_parse("10.1.2.3", 8, &a), 0);
    b = keel_addr_prefix(&a, 8); /* IPv4 untouched */
    keel_addr_format(&b, text, sizeof(text));
    assert_string_equal(text, "10.1.2.3");
    assert_int_equal(keel_addr_parse("10.1.2.3x", 9, &a), KEEL_EINVAL);
    assert_int_equal(a.family, 0);
    keel_cidr l[4];
    assert_int_equal(keel_cidr_any(l, (size_t)keel_cidr_parse_list("10.0.0.0/8", l, 4)), 0);
    assert_int_equal(keel_cidr_any(l, (size_t)keel_cidr_parse_list("1.1.1.1, ::/0", l, 4)), 1);
    assert_int_equal(keel_cidr_any(l, (size_t)keel_cidr_parse_list("0.0.0.0/0", l, 4)), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_parse_cap),
        cmocka_unit_test(test_match_table),
        cmocka_unit_test(test_forwarded_table),
        cmocka_unit_test(test_forwarded_https),
        cmocka_unit_test(test_prefix_and_any),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
