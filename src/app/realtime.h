/* realtime.h — the realtime service's internals (src/app/realtime*.c). The
 * push API for other handlers and jobs is in app.h (app_push_*). */
#ifndef KEEL_APP_REALTIME_H
#define KEEL_APP_REALTIME_H

#include <stddef.h>

#include "keel/keel.h"

struct json_t;

/* Client message types (docs/realtime.md, "Protocol"). */
typedef enum rt_msg_type {
    RT_MSG__INVALID = -1,
    RT_MSG_PING = 0,
    RT_MSG_ROOM_JOIN,
    RT_MSG_ROOM_LEAVE,
    RT_MSG_MESSAGE_SEND,
    RT_MSG_DM_SEND,
    RT_MSG_RESUME,
    RT_MSG_TYPING_START,
    RT_MSG_TYPING_STOP,
    RT_MSG_PRESENCE_SET,
    RT_MSG__COUNT
} rt_msg_type;

extern const char *const rt_msg_names[RT_MSG__COUNT];

/* The compiled schemas, one per type. */
typedef struct rt_proto rt_proto;
/* body_max: the largest message body in characters (WS_MESSAGE_BODY_MAX).
 * NULL with a reason in err when a schema does not compile. */
rt_proto *rt_proto_new(size_t body_max, char *err, size_t cap);
void rt_proto_free(rt_proto *p);
const keel_schema *rt_proto_schema(const rt_proto *p, rt_msg_type t);

/* One parsed client message. */
typedef struct rt_parsed {
    rt_msg_type type;      /* RT_MSG__INVALID on failure */
    struct json_t *msg;    /* the whole message, valid for its type (owned) */
    struct json_t *id;     /* the client's id (owned), or NULL */
    const char *code;      /* on failure: invalid_json, invalid_message, unknown_type */
    char message[240];     /* on failure: what is wrong (never quotes the value) */
} rt_parsed;

/* Parses and validates data[0..len): 0 with out->type and out->msg, or -1
 * with out->code and out->message (and out->id when the message had a
 * valid one). Free with rt_parsed_clear either way. Pure. */
int rt_proto_parse(const rt_proto *p, const char *data, size_t len, rt_parsed *out);
void rt_parsed_clear(rt_parsed *m);

#endif
