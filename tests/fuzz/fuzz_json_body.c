/* fuzz_json_body.c — keel_json_parse on arbitrary bytes: never crashes,
 * never recurses past the depth limit, and what it accepts round-trips
 * through jansson's encoder to an equal value. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

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
    keel_json_error err2;
    json_t *w = keel_json_parse(s, strlen(s), KEEL_JSON_MAX_DEPTH + 1, &err2);
    if (!w || !json_equal(v, w))
        abort();
    json_decref(w);
    free(s);
    json_decref(v);
    return 0;
}
