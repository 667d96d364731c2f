/* ws_internal.h — the WebSocket frame parser (ws_frame.c) and the hooks
 * the connection layer calls (ws.c). Never installed.
 *
 * The parser works on whole frames in the caller's buffer: it allocates
 * nothing per frame, unmasks the payload in place and hands back a view.
 * Fragments of a message are appended to one reassembly buffer per
 * connection (reused from message to message); a message of one frame —
 * the common case — is delivered straight from the input buffer. */
#ifndef KEEL_WS_INTERNAL_H
#define KEEL_WS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "keel/arena.h"
#include "keel/ws.h"

typedef struct keel_ws_parser {
    uint64_t max_frame;   /* payload bytes of one frame (1009 beyond) */
    uint64_t max_message; /* payload bytes of one message (1009 beyond) */
    int require_mask;     /* a server: client frames must be masked (1002) */
    int in_message;       /* a fragmented message is open */
    uint8_t msg_op;       /* its opcode (TEXT or BINARY) */
    uint32_t utf8;        /* UTF-8 validator state across its fragments */
    keel_buf msg;         /* its payload so far */
} keel_ws_parser;

enum {
    KEEL__WS_EV_NONE = 0, /* a frame was consumed, nothing to deliver (a fragment) */
    KEEL__WS_EV_MESSAGE,  /* a whole TEXT/BINARY message: op, data, len */
    KEEL__WS_EV_PING,     /* data, len: the payload to echo in the pong */
    KEEL__WS_EV_PONG,
    KEEL__WS_EV_CLOSE     /* code (1005 when none), reason, reason_len */
};

typedef struct keel_ws_event {
    int kind;
    keel_ws_opcode op;
    const uint8_t *data;
    size_t len;
    int code;
    const char *reason;
    size_t reason_len;
} keel_ws_event;

void keel__ws_parser_init(keel_ws_parser *p, uint64_t max_frame, uint64_t max_message,
                          int require_mask);
/* Frees the reassembly buffer. */
void keel__ws_parser_close(keel_ws_parser *p);
/* Gives back a large reassembly buffer between messages. */
void keel__ws_parser_trim(keel_ws_parser *p);

/* Parses one frame at buf[0..len). Returns the bytes it took (> 0) with
 * *ev filled; 0 when the frame is not complete yet (nothing changed); or
 * -code: the close code to fail the connection with (1002 protocol
 * error, 1007 invalid UTF-8, 1009 too big). The frame's payload is
 * unmasked in place; ev's views point into buf or into the reassembly
 * buffer and stay valid until the next call. */
long keel__ws_parse(keel_ws_parser *p, uint8_t *buf, size_t len, keel_ws_event *ev);

/* Incremental UTF-8 check: state 0 to start; 0 or -1 (invalid). A
 * message is complete and valid when the state is back to 0. */
int keel__utf8_step(uint32_t *state, const uint8_t *s, size_t n);
/* Whether a close code may be received (1000-1003, 1007-1014, 3000-4999). */
int keel__ws_close_code_ok(int code);
/* Writes a server frame header (FIN, no mask): 2, 4 or 10 bytes. */
size_t keel__ws_header(uint8_t out[10], keel_ws_opcode op, uint64_t len);

/* ws.c, for conn.c and req.c */
struct keel_conn;
struct keel_req;
void keel__ws_start(struct keel_conn *c);     /* after the 101: on_open */
void keel__ws_input(struct keel_conn *c);     /* parse what was read */
void keel__ws_sweep(struct keel_conn *c, uint64_t now);
void keel__ws_drain(struct keel_conn *c);     /* SIGTERM: close 1001 */
void keel__ws_conn_closed(struct keel_conn *c); /* TCP going: on_close */
void keel__ws_free(keel_ws *ws);              /* memory, from the close cb */
/* conn.c hands c->out to the socket (written or moved to the write in
 * flight): the droppable frames noted in it are no longer droppable. */
void keel__ws_out_taken(keel_ws *ws);
#endif
