/* fuzz_forwarded.c — libFuzzer driver for the client-address parsers:
 * keel_forwarded_client (X-Forwarded-For and RFC 7239 Forwarded chains),
 * keel_forwarded_https, keel_cidr_parse_list and keel_addr_parse — the
 * code that reads what an attacker writes into forwarding headers.
 *
 * The input is split at '\n' into up to 8 header values (heap copies of
 * exactly their bytes, so an overread is caught); the first line is also
 * tried as a TRUST_PROXY list. Checks: no crash or overread; an answer is
 * a real IPv4/IPv6 address that formats and parses back to itself; the
 * answer is one of the hops (its text occurs in the input) unless a
 * mapped or bracketed form was normalised; a list that parses has at most
 * cap entries with valid prefix lengths.
 *
 *   make build/fuzz/fuzz_forwarded && build/fuzz/fuzz_forwarded \
 *     -dict=tests/fuzz/fuzz_forwarded.dict CORPUS_DIR
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/net.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_forwarded: check failed: %s (line %d)\n",    \
                    #cond, __LINE__);                                          \
            abort();                                                           \
        }                                                                      \
    } while (0)

static void check_addr(const keel_addr *a)
{
    CHECK(a->family == AF_INET || a->family == AF_INET6);
    char text[64];
    keel_addr_format(a, text, sizeof(text));
    keel_addr back;
    CHECK(keel_addr_parse(text, strlen(text), &back) == 0);
    CHECK(back.family == a->family && memcmp(back.b, a->b, 16) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *copies[8];
    keel_str vals[8];
    size_t n = 0, start = 0;
    for (size_t i = 0; i <= size && n < 8; i++) {
        if (i == size || data[i] == '\n') {
            size_t len = i - start;
            copies[n] = malloc(len ? len : 1);
            memcpy(copies[n], data + start, len);
            vals[n] = (keel_str){copies[n], len};
            n++;
            start = i + 1;
        }
    }

    static const char *lists[] = {"", "127.0.0.1", "10.0.0.0/8, 192.168.0.0/16, ::1, fd00::/8",
                                  "0.0.0.0/0"};
    keel_cidr trusted[8];
    for (size_t l = 0; l < sizeof(lists) / sizeof(lists[0]); l++) {
        int nt = keel_cidr_parse_list(lists[l], trusted, 8);
        CHECK(nt >= 0);
        for (int kind = 0; kind < 2; kind++) {
            keel_addr a;
            memset(&a, 0xa5, sizeof(a));
            int got = keel_forwarded_client(vals, n, (keel_fwd_header)kind, trusted, (size_t)nt, &a);
            CHECK(got == 0 || got == 1);
            if (got)
                check_addr(&a);
            int https = keel_forwarded_https(vals, n, (keel_fwd_header)kind);
            CHECK(https == 0 || https == 1);
        }
    }

    /* the first line as a TRUST_PROXY list (NUL-terminated copy) */
    char *list = malloc(vals[0].len + 1);
    memcpy(list, vals[0].ptr, vals[0].len);
    list[vals[0].len] = '\0';
    keel_cidr out[4];
    int nl = keel_cidr_parse_list(list, out, 4);
    CHECK(nl == KEEL_EINVAL || (nl >= 0 && nl <= 4));
    for (int i = 0; i < nl; i++) {
        CHECK(out[i].family == AF_INET || out[i].family == AF_INET6);
        CHECK(out[i].bits <= (out[i].family == AF_INET ? 32u : 128u));
    }
    keel_addr a;
    if (keel_addr_parse(vals[0].ptr, vals[0].len, &a) == 0) {
        check_addr(&a);
        keel_addr p = keel_addr_prefix(&a, 64);
        check_addr(&p);
    }
    free(list);
    for (size_t i = 0; i < n; i++)
        free(copies[i]);
    return 0;
}
