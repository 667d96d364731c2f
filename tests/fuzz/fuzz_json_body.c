/* fuzz_json_body.c — keel_json_parse on arbitrary bytes: never crashes,
 * never recurses past the depth limit, and what it accepts round-trips
 * through jansson's encoder to an equal value; keel's own encoder
 * (keel_json_dump, every JSON response) gives jansson's bytes exactly. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keel/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    keel_json_error err;
    json_t *v = keel_json_parse((const char *)data, size, KEEL_JSON_MAX_DEPTH, &err);
    if (!v) {
        if (err.status != 400 || err.offset > size)
            abort();
        return 0;
    }
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s)
        abort();
    keel_buf b = {0};
    if (keel_json_dump(&b, v, 0) < 0 || b.len != strlen(s) || memcmp(b.data, s, b.len) != 0)
        abort();
    keel_buf_free(&b);
    char *s10 = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(10));
    if (!s10 || keel_json_dump(&b, v, 10) < 0 || b.len != strlen(s10) ||
        memcmp(b.data, s10, b.len) != 0)
        abort();
    keel_buf_free(&b);
    free(s10);
    keel_json_error err2;
    json_t *w = keel_json_parse(s, strlen(s), KEEL_JSON_MAX_DEPTH + 1, &err2);
    if (!w || !json_equal(v, w))
        abort();
    json_decref(w);
    free(s);
    json_decref(v);
    return 0;
}
