/* realtime_proto.c — the parse and validate step of the realtime
 * protocol (GET /ws, docs/realtime.md "Protocol"): one client text
 * message in, its type and validated JSON out, or the error to send back.
 * A pure function over compiled schemas (no database, no connection):
 * tests/fuzz/fuzz_ws_dispatch.c drives it directly.
 *
 * Every message is a JSON object {type, id?, ...}. The envelope is
 * checked first (so that an error can still name the client's id), then
 * the message against its type's schema — one schema per type, compiled
 * once with keel's validator (keel/schema.h, closed objects like request
 * bodies). */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "app/realtime.h"
#include "keel/json.h"

#define ID_SCHEMA "{\"type\": [\"string\", \"integer\"], \"maxLength\": 64}"
#define ROOM_SCHEMA "{\"type\": \"string\", \"minLength\": 1, \"maxLength\": 64}"
#define SEQ_SCHEMA "{\"type\": \"integer\", \"minimum\": 0}"
#define SEQ_MAP "{\"type\": \"object\", \"additionalProperties\": " SEQ_SCHEMA \
                "}"

const char *const rt_msg_names[RT_MSG__COUNT] = {
    [RT_MSG_PING] = "ping",
    [RT_MSG_ROOM_JOIN] = "room:join",
    [RT_MSG_ROOM_LEAVE] = "room:leave",
    [RT_MSG_MESSAGE_SEND] = "message:send",
    [RT_MSG_DM_SEND] = "dm:send",
    [RT_MSG_RESUME] = "resume",
    [RT_MSG_TYPING_START] = "typing:start",
    [RT_MSG_TYPING_STOP] = "typing:stop",
    [RT_MSG_PRESENCE_SET] = "presence:set",
};

/* The schema text of each type; %zu is the largest body in characters. */
static int schema_text(rt_msg_type t, size_t body_max, char *out, size_t cap)
{
    const char *head = "{\"type\": \"object\", \"required\": [\"type\"%s], \"properties\": "
                       "{\"type\": {\"type\": \"string\"}, \"id\": " ID_SCHEMA "%s}}";
    char props[512];
    const char *req = "";
    switch (t) {
    case RT_MSG_PING:
        props[0] = '\0';
        break;
    case RT_MSG_ROOM_JOIN:
        req = ", \"room\"";
        snprintf(props, sizeof(props), ", \"room\": " ROOM_SCHEMA ", \"last_seq\": " SEQ_SCHEMA);
        break;
    case RT_MSG_ROOM_LEAVE:
    case RT_MSG_TYPING_START:
    case RT_MSG_TYPING_STOP:
        req = ", \"room\"";
        snprintf(props, sizeof(props), ", \"room\": " ROOM_SCHEMA);
        break;
    case RT_MSG_MESSAGE_SEND:
        req = ", \"room\", \"body\"";
        snprintf(props, sizeof(props),
                 ", \"room\": " ROOM_SCHEMA
                 ", \"body\": {\"type\": \"string\", \"minLength\": 1, \"maxLength\": %zu}",
                 body_max);
        break;
    case RT_MSG_DM_SEND:
        req = ", \"to\", \"body\"";
        snprintf(props, sizeof(props),
                 ", \"to\": " ROOM_SCHEMA
                 ", \"body\": {\"type\": \"string\", \"minLength\": 1, \"maxLength\": %zu}",
                 body_max);
        break;
    case RT_MSG_RESUME:
        snprintf(props, sizeof(props), ", \"rooms\": " SEQ_MAP ", \"conversations\": " SEQ_MAP);
        break;
    case RT_MSG_PRESENCE_SET:
        req = ", \"status\"";
        snprintf(props, sizeof(props), ", \"status\": {\"enum\": [\"online\", \"away\"]}");
        break;
    default:
        return -1;
    }
    int n = snprintf(out, cap, head, req, props);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

struct rt_proto {
    keel_schema *s[RT_MSG__COUNT];
};

rt_proto *rt_proto_new(size_t body_max, char *err, size_t cap)
{
    rt_proto *p = keel_calloc(1, sizeof(*p));
    keel_schema_options o = {.closed = 1};
    for (int t = 0; t < RT_MSG__COUNT; t++) {
        char text[1024];
        if (schema_text((rt_msg_type)t, body_max, text, sizeof(text)) < 0 ||
            !(p->s[t] = keel_schema_compile_with(text, &o, err, cap))) {
            rt_proto_free(p);
            return NULL;
        }
    }
    return p;
}

void rt_proto_free(rt_proto *p)
{
    if (!p)
        return;
    for (int t = 0; t < RT_MSG__COUNT; t++)
        keel_schema_free(p->s[t]);
    keel_free(p);
}

const keel_schema *rt_proto_schema(const rt_proto *p, rt_msg_type t)
{
    return t >= 0 && t < RT_MSG__COUNT ? p->s[t] : NULL;
}

static void fail(rt_parsed *out, const char *code, const char *fmt, const char *arg)
{
    out->type = RT_MSG__INVALID;
    out->code = code;
    snprintf(out->message, sizeof(out->message), fmt, arg ? arg : "");
    /* the parser's and the validator's words may carry input bytes, and
     * truncation may cut a character: the answer must stay UTF-8 text */
    for (char *c = out->message; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
            *c = '?';
}

int rt_proto_parse(const rt_proto *p, const char *data, size_t len, rt_parsed *out)
{
    memset(out, 0, sizeof(*out));
    out->type = RT_MSG__INVALID;
    keel_json_error je;
    json_t *v = keel_json_parse(data, len, 16, &je);
    if (!v) {
        fail(out, "invalid_json", "the message is not JSON: %s", je.text);
        return -1;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        fail(out, "invalid_message", "a message is a JSON object {type, id?, ...}", NULL);
        return -1;
    }
    /* the id first: an error about anything else can still name it */
    json_t *id = json_object_get(v, "id");
    if (id) {
        if ((json_is_string(id) && json_string_length(id) >= 1 && json_string_length(id) <= 64) ||
            json_is_integer(id)) {
            out->id = json_incref(id);
        } else {
            json_decref(v);
            fail(out, "invalid_message", "id must be a string (1-64 bytes) or an integer", NULL);
            return -1;
        }
    }
    const char *type = json_string_value(json_object_get(v, "type"));
    if (!type) {
        json_decref(v);
        fail(out, "invalid_message", "type is required (a string)", NULL);
        return -1;
    }
    int t = -1;
    for (int i = 0; i < RT_MSG__COUNT; i++)
        if (!strcmp(type, rt_msg_names[i]))
            t = i;
    if (t < 0) {
        char shown[48];
        snprintf(shown, sizeof(shown), "%.40s", type);
        /* never echo bytes that could break the UTF-8 of the answer */
        for (char *c = shown; *c; c++)
            if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
                *c = '?';
        json_decref(v);
        fail(out, "unknown_type", "unknown message type \"%s\"", shown);
        return -1;
    }
    json_t *errors = json_array();
    size_t n = keel_schema_validate(p->s[t], v, errors, 1);
    if (n) {
        json_t *e0 = json_array_get(errors, 0);
        char what[200];
        snprintf(what, sizeof(what), "%s: %s",
                 *json_string_value(json_object_get(e0, "pointer"))
                     ? json_string_value(json_object_get(e0, "pointer"))
                     : "/",
                 json_string_value(json_object_get(e0, "message")));
        json_decref(errors);
        json_decref(v);
        fail(out, "invalid_message", "%s", what);
        return -1;
    }
    json_decref(errors);
    out->type = (rt_msg_type)t;
    out->msg = v;
    return 0;
}

void rt_parsed_clear(rt_parsed *m)
{
    json_decref(m->msg);
    json_decref(m->id);
    m->msg = m->id = NULL;
}
