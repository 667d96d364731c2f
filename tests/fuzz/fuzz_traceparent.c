/* fuzz_traceparent.c — libFuzzer driver for the W3C trace-context
 * parsers: keel_traceparent_parse, keel_tracestate_valid and the k=v
 * lists of OTEL_RESOURCE_ATTRIBUTES / OTEL_EXPORTER_OTLP_HEADERS
 * (keel_trace_kv_parse) — what any client can put in a header.
 *
 * The input is one value (a heap copy of exactly its bytes, so an
 * overread is caught). Checks: no crash or overread; an accepted
 * traceparent has non-zero ids, version "00" form when formatted back,
 * and its version-00 form is exactly the input's first 55 bytes with the
 * version replaced (lowercase hex only); a valid tracestate is at most 512
 * printable bytes (or tabs, optional white space) with a member; a k=v list never hands out an empty key.
 *
 *   make build/fuzz/fuzz_traceparent && build/fuzz/fuzz_traceparent \
 *     -dict=tests/fuzz/fuzz_traceparent.dict CORPUS_DIR
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_traceparent: check failed: %s (line %d)\n",  \
                    #cond, __LINE__);                                          \
            abort();                                                           \
        }                                                                      \
    } while (0)

static int nonzero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 1;
    return 0;
}

static void kv(const char *k, const char *v, void *arg)
{
    (void)arg;
    CHECK(k && *k && v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *v = malloc(size ? size : 1);
    if (size)
        memcpy(v, data, size);
    keel_trace_ctx c;
    if (keel_traceparent_parse(v, size, &c) == 0) {
        CHECK(size >= 55);
        CHECK(nonzero(c.trace_id, 16) && nonzero(c.span_id, 8));
        CHECK(!(v[0] == 'f' && v[1] == 'f'));
        CHECK(size == 55 || (v[0] != '0' || v[1] != '0'));
        char out[56];
        keel_traceparent_format(&c, out);
        CHECK(strlen(out) == 55);
        CHECK(memcmp(out + 2, v + 2, 53) == 0); /* the same ids and flags, lowercase */
        keel_trace_ctx back;
        CHECK(keel_traceparent_parse(out, 55, &back) == 0);
        CHECK(memcmp(&back, &c, sizeof(c)) == 0);
    }
    if (keel_tracestate_valid(v, size)) {
        CHECK(size > 0 && size <= 512);
        for (size_t i = 0; i < size; i++)
            CHECK(((unsigned char)v[i] >= 0x20 && (unsigned char)v[i] <= 0x7e) || v[i] == '\t');
    }
    /* a NUL-terminated copy for the k=v lists */
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    keel_trace_kv_parse(s, kv, NULL);
    free(s);
    free(v);
    return 0;
}
