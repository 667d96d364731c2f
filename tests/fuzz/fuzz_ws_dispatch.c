/* fuzz_ws_dispatch.c — libFuzzer driver for the parse and validate step
 * of the realtime protocol's dispatcher (src/app/realtime_proto.c, GET /ws
 * in docs/realtime.md): arbitrary bytes as one client text message,
 * through the JSON parser, the envelope checks and the schema of the
 * message's type. The step is pure (no database, no connection), so the
 * harness compiles the file itself.
 *
 * Checks: no crash, leak or overread; a result is either a known type
 * with the whole message (an object whose "type" names it, valid against
 * its schema a second time) or an error with one of the three codes and
 * a non-empty UTF-8 message; an id is kept only when it is a string of 1
 * to 64 bytes or an integer; the error answer serialises.
 *
 *   make build/fuzz/fuzz_ws_dispatch
 *   build/fuzz/fuzz_ws_dispatch -dict=tests/fuzz/fuzz_ws_dispatch.dict \
 *       tests/fuzz/corpus/fuzz_ws_dispatch
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/realtime_proto.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_ws_dispatch: check failed: %s (line %d)\n",  \
                    #cond, __LINE__);                                          \
            abort();                                                           \
        }                                                                      \
    } while (0)

static rt_proto *P;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!P) {
        char err[256];
        P = rt_proto_new(64, err, sizeof(err));
        CHECK(P != NULL);
    }
    rt_parsed m;
    int rc = rt_proto_parse(P, (const char *)data, size, &m);
    if (m.id)
        CHECK((json_is_string(m.id) && json_string_length(m.id) >= 1 &&
               json_string_length(m.id) <= 64) ||
              json_is_integer(m.id));
    if (rc == 0) {
        CHECK(m.type >= 0 && m.type < RT_MSG__COUNT);
        CHECK(json_is_object(m.msg));
        const char *t = json_string_value(json_object_get(m.msg, "type"));
        CHECK(t && !strcmp(t, rt_msg_names[m.type]));
        CHECK(keel_schema_validate(rt_proto_schema(P, m.type), m.msg, NULL, 1) == 0);
        CHECK(m.code == NULL);
        /* every member of a valid message is one its schema names */
        const char *k;
        json_t *v;
        json_object_foreach(m.msg, k, v)
            CHECK(keel_schema_property(rt_proto_schema(P, m.type), k) != NULL);
    } else {
        CHECK(rc == -1 && m.type == RT_MSG__INVALID && m.msg == NULL);
        CHECK(m.code && (!strcmp(m.code, "invalid_json") || !strcmp(m.code, "invalid_message") ||
                         !strcmp(m.code, "unknown_type")));
        size_t n = strlen(m.message);
        CHECK(n > 0 && n < sizeof(m.message));
        json_t *ans = json_pack("{s:s,s:O?,s:s,s:s}", "type", "error", "id", m.id, "code",
                                m.code, "message", m.message);
        CHECK(ans != NULL); /* json_pack refuses a message that is not UTF-8 */
        char *text = json_dumps(ans, JSON_COMPACT);
        CHECK(text != NULL);
        free(text);
        json_decref(ans);
    }
    rt_parsed_clear(&m);
    return 0;
}
