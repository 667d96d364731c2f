/* fuzz_range.c — libFuzzer driver for the Range and conditional-request
 * parsers (keel/range.h): keel_range_parse, keel_etag_list_match,
 * keel_http_date_parse, keel_http_preconditions, keel_if_range_ok.
 *
 * Input: the first 8 bytes are the representation size (little-endian,
 * reduced to 2^40), the first byte of the rest the range cap (0..15);
 * what follows is split at '\n' into a Range value, an entity-tag list, a
 * date and an If-Range value (heap copies of exactly their bytes, so an
 * overread is caught). Checks: no crash or overread; every range returned
 * lies inside the representation, first <= last, at most cap of them,
 * pairwise disjoint; a date that parses formats and parses back to the
 * same time; preconditions answer 0, 304 or 412.
 *
 *   make build/fuzz/fuzz_range && build/fuzz/fuzz_range \
 *     -dict=tests/fuzz/fuzz_range.dict CORPUS_DIR
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/range.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_range: check failed: %s (line %d)\n",        \
                    #cond, __LINE__);                                          \
            abort();                                                           \
        }                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 9)
        return 0;
    uint64_t rsize = 0;
    for (int i = 0; i < 8; i++)
        rsize |= (uint64_t)data[i] << (8 * i);
    rsize &= (1ull << 40) - 1;
    size_t cap = data[8] & 15;
    data += 9;
    size -= 9;
    char *part[4] = {0};
    size_t plen[4] = {0};
    size_t off = 0;
    for (int k = 0; k < 4; k++) {
        const uint8_t *nl = off < size ? memchr(data + off, '\n', size - off) : NULL;
        size_t end = nl ? (size_t)(nl - data) : size;
        plen[k] = end > off ? end - off : 0;
        part[k] = malloc(plen[k] ? plen[k] : 1);
        if (plen[k])
            memcpy(part[k], data + off, plen[k]);
        off = end + 1;
    }
    keel_byte_range out[16];
    int n = keel_range_parse((keel_str){part[0], plen[0]}, rsize, out, cap);
    CHECK(n >= KEEL_RANGE_REFUSED);
    CHECK(n <= (int)cap);
    for (int i = 0; i < n; i++) {
        CHECK(out[i].first <= out[i].last && out[i].last < rsize);
        for (int j = i + 1; j < n; j++)
            CHECK(out[i].last < out[j].first || out[j].last < out[i].first);
    }
    keel_str list = {part[1], plen[1]};
    int s = keel_etag_list_match(list, "\"abc\"", 1);
    int w = keel_etag_list_match(list, "\"abc\"", 0);
    CHECK(s == 0 || s == 1);
    CHECK(!s || w); /* a strong match is also a weak one */
    time_t t;
    if (keel_http_date_parse((keel_str){part[2], plen[2]}, &t) == 0 && t >= 0 &&
        t < 253402300800) {
        char buf[30], again[30];
        keel_http_date_format(t, buf);
        time_t t2;
        CHECK(keel_http_date_parse(keel_str_c(buf), &t2) == 0 && t2 == t);
        keel_http_date_format(t2, again);
        CHECK(strcmp(buf, again) == 0);
    }
    int p = keel_http_preconditions(list, (keel_str){part[3], plen[3]}, (keel_str){part[2], plen[2]},
                                    (keel_str){part[2], plen[2]}, "\"abc\"", 784111777);
    CHECK(p == 0 || p == 304 || p == 412);
    int ir = keel_if_range_ok((keel_str){part[3], plen[3]}, "\"abc\"", 784111777);
    CHECK(ir == 0 || ir == 1);
    for (int k = 0; k < 4; k++)
        free(part[k]);
    return 0;
}
