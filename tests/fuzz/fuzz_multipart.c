/* fuzz_multipart.c — libFuzzer driver for the streaming multipart/form-data
 * parser (keel/multipart.h) and keel_multipart_boundary.
 *
 * Input: the first byte picks a split stride (1..256); the first line (up
 * to '\n') is tried as a Content-Type value and, when it gives no
 * boundary, the boundary "XyZ" is used; the rest is the body, fed in
 * chunks of the stride (heap copies of exactly their bytes, so an
 * overread is caught). The same body is then parsed whole. Checks: no
 * crash, hang or overread; both feedings give the same result and the
 * same data, byte for byte, in the same parts; an error has a reason, a 413 names a limit;
 * every part has a non-empty name within max_name; data never exceeds the
 * body's length; a limit is never passed.
 *
 *   make build/fuzz/fuzz_multipart && build/fuzz/fuzz_multipart \
 *     -dict=tests/fuzz/fuzz_multipart.dict CORPUS_DIR
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/multipart.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_multipart: check failed: %s (line %d)\n",    \
                    #cond, __LINE__);                                          \
            abort();                                                           \
        }                                                                      \
    } while (0)

static const keel_multipart_limits LIM = {
    .max_body = 1 << 20,
    .max_file_size = 4096,
    .max_files = 8,
    .max_fields = 8,
    .max_parts = 12,
    .max_name = 64,
    .max_field_value = 256,
    .max_headers = 8,
    .max_header_bytes = 512,
};

typedef struct st {
    uint64_t bytes, part_bytes, parts, ends;
    uint64_t hash; /* FNV-1a over every part's data, a part's start marked */
    int in_part, is_file;
} st;

static int on_begin(void *arg, const keel_multipart_part *p)
{
    st *s = arg;
    CHECK(!s->in_part);
    CHECK(p->name.len > 0 && p->name.len <= LIM.max_name);
    CHECK(!p->is_file || p->filename.ptr);
    s->in_part = 1;
    s->is_file = p->is_file;
    s->part_bytes = 0;
    s->parts++;
    s->hash = (s->hash ^ 0x100) * 0x100000001b3ull;
    return 0;
}

static int on_data(void *arg, const char *d, size_t n)
{
    st *s = arg;
    CHECK(s->in_part && n > 0 && d);
    volatile char sink = d[0];
    sink = d[n - 1];
    (void)sink;
    s->bytes += n;
    s->part_bytes += n;
    for (size_t i = 0; i < n; i++)
        s->hash = (s->hash ^ (unsigned char)d[i]) * 0x100000001b3ull;
    CHECK(s->part_bytes <= (s->is_file ? LIM.max_file_size : LIM.max_field_value));
    return 0;
}

static int on_end(void *arg)
{
    st *s = arg;
    CHECK(s->in_part);
    s->in_part = 0;
    s->ends++;
    return 0;
}

static int parse(keel_str boundary, const uint8_t *body, size_t len, size_t stride, st *s)
{
    static const keel_multipart_cb cb = {on_begin, on_data, on_end};
    keel_multipart m;
    memset(s, 0, sizeof(*s));
    CHECK(keel_multipart_init(&m, boundary, &LIM, &cb, s) == 0);
    int rc = 0;
    for (size_t off = 0; off < len && rc == 0; off += stride) {
        size_t n = len - off < stride ? len - off : stride;
        char *chunk = malloc(n);
        memcpy(chunk, body + off, n);
        rc = keel_multipart_feed(&m, chunk, n);
        free(chunk);
    }
    if (rc == 0)
        rc = keel_multipart_finish(&m);
    CHECK(rc == 1 || rc == -400 || rc == -413);
    if (rc < 0)
        CHECK(m.error != NULL);
    if (rc == -413)
        CHECK(m.limit != KEEL_MP_LIMIT_NONE);
    if (rc == 1)
        CHECK(!s->in_part && s->parts == s->ends);
    CHECK(s->bytes <= len);
    CHECK(s->parts <= LIM.max_parts);
    keel_multipart_free(&m);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t stride = (size_t)data[0] + 1;
    data++;
    size--;
    const uint8_t *nl = memchr(data, '\n', size);
    size_t hl = nl ? (size_t)(nl - data) : size;
    char *ct = malloc(hl + 1);
    memcpy(ct, data, hl);
    keel_str boundary;
    const char *why = NULL;
    int brc = keel_multipart_boundary((keel_str){ct, hl}, &boundary, &why);
    CHECK(brc == 0 || brc == -400 || brc == -415);
    if (brc == 0)
        CHECK(boundary.len >= 1 && boundary.len <= 70 && boundary.ptr >= ct &&
              boundary.ptr + boundary.len <= ct + hl);
    else
        CHECK(why != NULL);
    if (brc != 0)
        boundary = KEEL_STR("XyZ");
    const uint8_t *body = nl ? nl + 1 : data + size;
    size_t blen = nl ? size - hl - 1 : 0;
    st a, b;
    int r1 = parse(boundary, body, blen, stride, &a);
    int r2 = parse(boundary, body, blen, blen ? blen : 1, &b);
    CHECK(r1 == r2);
    if (r1 == 1)
        CHECK(a.bytes == b.bytes && a.parts == b.parts && a.hash == b.hash);
    free(ct);
    return 0;
}
