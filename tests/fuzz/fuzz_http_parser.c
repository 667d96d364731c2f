/* fuzz_http_parser.c — libFuzzer driver for keel_http_parse_request and
 * keel_http_chunked_decode.
 *
 * The input is raw bytes as a client would send them. For two sets of
 * limits (the defaults, and small ones that reach 414/431 quickly) it
 * checks that:
 *   - parsing is deterministic and a positive result is at most the length;
 *   - parsing incrementally (a prefix cut at a point derived from the data,
 *     then the whole) agrees with parsing the whole at once: a prefix
 *     answers 0, or exactly what the whole answers;
 *   - every view the parser returns points into the buffer;
 *   - keel_http_parse_request_resume, fed three growing prefixes in a
 *     buffer that moves (and whose old copy is freed) at every call,
 *     answers at each what one call on those bytes answers, with the same
 *     views and error text;
 *   - when the head says chunked, the rest decodes the same in one piece,
 *     in two pieces and byte by byte.
 * Buffers are heap copies of exactly the bytes given, so ASan sees any
 * read past them.
 *
 *   clang-14 -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *     -Iinclude -Isrc tests/fuzz/fuzz_http_parser.c src/core/http_parser.c \
 *     src/core/arena.c src/core/router.c -o fuzz_http_parser
 *   ./fuzz_http_parser -dict=tests/fuzz/fuzz_http_parser.dict CORPUS_DIR
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_http_parser: check failed: %s (line %d)\n",  \
                    #cond, __LINE__);                                          \
            abort();                                                           \
        }                                                                      \
    } while (0)

static const keel_http_limits limits[] = {
    {8192, 8192, 100, 65536},
    {64, 48, 6, 200},
};

#define MAX_BODY (1u << 20)
#define MAX_TRAILER 256

static char *copy_of(const uint8_t *data, size_t n)
{
    char *c = malloc(n ? n : 1);
    if (!c)
        abort();
    if (n)
        memcpy(c, data, n);
    return c;
}

/* A split point in [0, size], derived from the bytes (FNV-1a). */
static size_t split_point(const uint8_t *data, size_t size)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 16777619u;
    return size ? h % (size + 1) : 0;
}

static int parse(const uint8_t *data, size_t n, keel_http_request_head *h,
                 const keel_http_limits *lim)
{
    char *buf = copy_of(data, n);
    int rc = keel_http_parse_request(buf, n, h, lim);
    if (rc > 0) {
        /* every view lies inside the buffer (the absolute-form path may
         * be the static "/") */
        const char *end = buf + n;
#define INSIDE(s) ((s).len == 0 || ((s).ptr >= buf && (s).ptr + (s).len <= end))
        CHECK(INSIDE(h->method_str) && h->method_str.len > 0);
        CHECK(INSIDE(h->target) && h->target.len > 0);
        CHECK(INSIDE(h->query));
        CHECK(INSIDE(h->host));
        CHECK(INSIDE(h->path) || (h->path.len == 1 && h->path.ptr[0] == '/'));
        CHECK(h->path.len > 0);
        CHECK(h->num_headers <= lim->max_headers);
        for (size_t i = 0; i < h->num_headers; i++) {
            CHECK(INSIDE(h->headers[i].name) && h->headers[i].name.len > 0);
            CHECK(INSIDE(h->headers[i].value));
        }
#undef INSIDE
        CHECK(h->version_minor == 0 || h->version_minor == 1);
        CHECK(!(h->chunked && h->content_length >= 0));
        CHECK(h->error == NULL);
    } else if (rc < 0) {
        CHECK(h->error != NULL);
        CHECK(rc == -400 || rc == -414 || rc == -417 || rc == -431 || rc == -501 ||
              rc == -505);
    }
    free(buf);
    return rc;
}

#define SAME_STR(x, y) ((x).len == (y).len && (x).ptr == (y).ptr)

static void check_resume(const uint8_t *data, size_t size, size_t a,
                         const keel_http_limits *lim)
{
    keel_http_header h1[100], h2[100];
    size_t cuts[3] = {a, a + (size - a) / 2, size};
    keel_http_parse_state st;
    memset(&st, 0, sizeof(st));
    keel_http_request_head rh = {.headers = h1};
    char *prev = NULL;
    for (int i = 0; i < 3; i++) {
        char *buf = copy_of(data, cuts[i]);
        free(prev); /* the old bytes are gone: views must have moved */
        prev = buf;
        int rc = keel_http_parse_request_resume(buf, cuts[i], &rh, lim, &st);
        keel_http_request_head oh = {.headers = h2};
        int one = keel_http_parse_request(buf, cuts[i], &oh, lim);
        CHECK(rc == one);
        if (rc < 0)
            CHECK(strcmp(rh.error, oh.error) == 0);
        if (rc > 0) {
            CHECK(SAME_STR(rh.method_str, oh.method_str) && rh.method == oh.method);
            CHECK(SAME_STR(rh.target, oh.target) && SAME_STR(rh.query, oh.query));
            CHECK(SAME_STR(rh.host, oh.host));
            CHECK(rh.path.len == oh.path.len &&
                  memcmp(rh.path.ptr, oh.path.ptr, rh.path.len) == 0);
            CHECK(rh.num_headers == oh.num_headers);
            for (size_t k = 0; k < rh.num_headers; k++)
                CHECK(SAME_STR(rh.headers[k].name, oh.headers[k].name) &&
                      SAME_STR(rh.headers[k].value, oh.headers[k].value));
            CHECK(rh.version_minor == oh.version_minor &&
                  rh.content_length == oh.content_length && rh.chunked == oh.chunked &&
                  rh.keep_alive == oh.keep_alive &&
                  rh.expect_continue == oh.expect_continue && rh.upgrade == oh.upgrade &&
                  rh.asterisk == oh.asterisk);
        }
        if (rc != 0)
            break;
    }
    free(prev);
}

/* Decodes body[0..n) with the byte boundaries given by cuts (the last is
 * n), writing each byte into the buffer only once it has "arrived". */
static int decode(const uint8_t *body, size_t n, const size_t *cuts, size_t ncuts,
                  keel_http_chunked *d, char **out)
{
    char *buf = malloc(n ? n : 1);
    if (!buf)
        abort();
    memset(buf, 0xee, n);
    memset(d, 0, sizeof(*d));
    size_t have = 0;
    int rc = 0;
    for (size_t i = 0; i < ncuts; i++) {
        memcpy(buf + have, body + have, cuts[i] - have);
        have = cuts[i];
        const char *err = NULL;
        rc = keel_http_chunked_decode(d, buf, have, MAX_BODY, MAX_TRAILER, &err);
        CHECK(d->in <= have);
        CHECK(d->out <= d->in);
        CHECK(d->out <= MAX_BODY);
        if (rc < 0) {
            CHECK(err != NULL);
            CHECK(rc == -400 || rc == -413 || rc == -431);
            break;
        }
        CHECK(rc == 0 || rc == 1);
        if (rc == 1)
            break;
        CHECK(d->in == have); /* 0 means everything given was taken */
    }
    *out = buf;
    return rc;
}

static void check_chunked(const uint8_t *body, size_t n, size_t split)
{
    keel_http_chunked d1, d2, d3;
    char *o1, *o2, *o3;
    int r1 = decode(body, n, &n, 1, &d1, &o1);

    size_t *cuts = malloc((n ? n : 1) * sizeof(size_t));
    if (!cuts)
        abort();
    for (size_t i = 0; i < n; i++)
        cuts[i] = i + 1;
    int r2 = n ? decode(body, n, cuts, n, &d2, &o2) : decode(body, n, &n, 1, &d2, &o2);
    free(cuts);

    size_t two[2] = {split < n ? split : n, n};
    int r3 = decode(body, n, two, 2, &d3, &o3);

    /* the same answer, found at the same byte, with the same data */
    CHECK(r1 == r2 && r1 == r3);
    CHECK(d1.out == d2.out && d1.out == d3.out);
    CHECK(d1.in == d2.in && d1.in == d3.in);
    CHECK(memcmp(o1, o2, d1.out) == 0 && memcmp(o1, o3, d1.out) == 0);
    if (r1 == 1) {
        /* bytes after the body are left as they came */
        CHECK(memcmp(o1 + d1.in, body + d1.in, n - d1.in) == 0);
        /* and a further call still answers done */
        CHECK(keel_http_chunked_decode(&d1, o1, n, MAX_BODY, MAX_TRAILER, NULL) == 1);
    }
    free(o1);
    free(o2);
    free(o3);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t split = split_point(data, size);
    keel_http_header hdrs[100];

    for (size_t l = 0; l < sizeof(limits) / sizeof(limits[0]); l++) {
        const keel_http_limits *lim = &limits[l];
        keel_http_request_head h;
        memset(&h, 0, sizeof(h));
        h.headers = hdrs;
        int full = parse(data, size, &h, lim);
        CHECK(full <= (int)size);
        check_resume(data, size, split, lim);
        keel_http_request_head again = {.headers = hdrs};
        CHECK(parse(data, size, &again, lim) == full);

        keel_http_request_head ph = {.headers = hdrs};
        int part = parse(data, split, &ph, lim);
        if (full > 0 && (size_t)full <= split)
            CHECK(part == full);
        else if (full > 0)
            CHECK(part == 0);
        else if (full == 0)
            CHECK(part == 0);
        else
            CHECK(part == 0 || part == full);

        if (full > 0) {
            /* the head alone parses to the same length */
            keel_http_request_head hh = {.headers = hdrs};
            CHECK(parse(data, (size_t)full, &hh, lim) == full);
            /* parse again to refill h (hh shares the header array) */
            CHECK(parse(data, size, &h, lim) == full);
            if (h.chunked && l == 0) {
                size_t n = size - (size_t)full;
                check_chunked(data + full, n, split > (size_t)full ? split - (size_t)full : 0);
            }
        }
    }

    /* The body decoder on its own, on the raw input. */
    check_chunked(data, size, split);
    return 0;
}
