/* keel/ws.h — WebSocket transport (RFC 6455) in the server core.
 *
 * A route becomes a WebSocket route by pointing keel_route.websocket at a
 * keel_ws_handler (method "GET"). The handshake request runs through the
 * middleware chain like any request (request id, CORS, authentication,
 * rate limits, RBAC); then the route's handler runs — or, when the route
 * has none, keel_ws_accept(r, NULL) — and keel_ws_accept checks the
 * handshake and answers 101 (or 400/426, see docs/realtime.md). After the
 * 101 the connection leaves the HTTP parser for good: every byte after it
 * is a WebSocket frame.
 *
 * A connection (keel_ws) lives on the worker loop that accepted it; every
 * function here is for that loop only. Its callbacks run there too. The
 * keel_ws object is valid from on_open until on_close returns; after that
 * the pointer must not be used (keep an id in your own table, removed in
 * on_close). Other loops (another worker, a work-pool thread, the event
 * bus) hand a message over with keel_worker_post(keel_ws_worker(ws), ...)
 * carrying a keel_ws_frame reference and the connection's id, and look the
 * connection up on its own loop (see docs/realtime.md).
 *
 * Limits (the `ws` config module): WS_MAX_MESSAGE (close 1009),
 * WS_MAX_FRAME (1009), invalid UTF-8 (1007), protocol errors (1002),
 * WS_MESSAGE_RATE (1008), WS_MAX_OUTBOUND (a slow consumer: 1013),
 * WS_PING_INTERVAL / WS_PONG_TIMEOUT (1001 "no pong"), WS_CLOSE_TIMEOUT,
 * WS_MAX_PER_IP (429 before the upgrade). permessage-deflate is never
 * negotiated.
 */
#ifndef KEEL_WS_H
#define KEEL_WS_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_ws keel_ws;
struct keel_req;
struct keel_server;
struct keel_worker;

typedef enum keel_ws_opcode {
    KEEL_WS_CONT = 0x0,
    KEEL_WS_TEXT = 0x1,
    KEEL_WS_BINARY = 0x2,
    KEEL_WS_CLOSE = 0x8,
    KEEL_WS_PING = 0x9,
    KEEL_WS_PONG = 0xA
} keel_ws_opcode;

/* Close codes keel sends (RFC 6455 section 7.4.1). */
enum {
    KEEL_WS_NORMAL = 1000,
    KEEL_WS_GOING_AWAY = 1001,       /* shutdown, no pong */
    KEEL_WS_PROTOCOL_ERROR = 1002,
    KEEL_WS_UNSUPPORTED = 1003,
    KEEL_WS_NO_STATUS = 1005,        /* received only: a close without a code */
    KEEL_WS_ABNORMAL = 1006,         /* received only: no close frame */
    KEEL_WS_INVALID_DATA = 1007,     /* invalid UTF-8 */
    KEEL_WS_POLICY = 1008,           /* message rate */
    KEEL_WS_TOO_BIG = 1009,          /* WS_MAX_MESSAGE, WS_MAX_FRAME */
    KEEL_WS_INTERNAL = 1011,
    KEEL_WS_TRY_AGAIN = 1013         /* slow consumer: outbound queue full */
};

/* What a WebSocket route does with its connections. Set as
 * keel_route.websocket; must outlive the server. Every callback is
 * optional and runs on the connection's loop.
 *   on_open     the 101 is queued; sending is allowed.
 *   on_message  one whole message (fragments reassembled, text checked
 *               as UTF-8). `data` is valid during the call only.
 *   on_close    once, when the connection ends for any reason: `code` is
 *               the one received from the peer (1005 when its close had
 *               none), or the one keel sent (protocol error, limit,
 *               shutdown), or 1006 when the TCP connection just ended.
 *               keel_ws_user() still works; sending does not. */
typedef struct keel_ws_handler {
    void (*on_open)(keel_ws *ws);
    void (*on_message)(keel_ws *ws, keel_ws_opcode op, const void *data, size_t len);
    void (*on_close)(keel_ws *ws, int code, const char *reason, size_t reason_len);
    void *data; /* keel_ws_handler_data() */
} keel_ws_handler;

/* Completes the handshake of request r on a WebSocket route: checks it
 * (see docs/realtime.md: 400 for a bad or missing Sec-WebSocket-Key, HTTP/1.0
 * or no "Connection: upgrade"; 426 for a request without "Upgrade: websocket"
 * and for a Sec-WebSocket-Version other than 13, with
 * "Sec-WebSocket-Version: 13"; 429 over WS_MAX_PER_IP; 503 while draining),
 * answers the refusal itself, or queues the 101 and attaches `user` to the
 * connection; on_open then runs once the response is out of the request's
 * hands. Returns KEEL_DONE either way (the handler's flow). May be called
 * from a handler that suspended first (after an asynchronous ticket
 * check, say). */
keel_flow keel_ws_accept(struct keel_req *r, void *user);
/* The same, selecting `protocol` (Sec-WebSocket-Protocol) when the client
 * offered it; when it did not, the 101 names none and the client decides
 * (RFC 6455 section 4.2.2). The offer is keel_req_header(r,
 * "sec-websocket-protocol"). */
keel_flow keel_ws_accept_protocol(struct keel_req *r, void *user, const char *protocol);

/* The per-connection pointer given to keel_ws_accept, and a setter. */
void *keel_ws_user(const keel_ws *ws);
void keel_ws_set_user(keel_ws *ws, void *user);
/* The route's keel_ws_handler.data. */
void *keel_ws_handler_data(const keel_ws *ws);
/* The worker whose loop owns the connection (for keel_worker_post). */
struct keel_worker *keel_ws_worker(const keel_ws *ws);
/* The client's address as resolved for the handshake (TRUST_PROXY aware). */
const char *keel_ws_client_addr(const keel_ws *ws);
/* A connection id, unique within the process. */
uint64_t keel_ws_id(const keel_ws *ws);
/* Bytes queued for this connection and not yet taken by the kernel. */
size_t keel_ws_outbound_bytes(const keel_ws *ws);

/* Sends one message (a single frame). 0; KEEL_ECLOSED after a close was
 * sent or received, and when the message would push a non-empty outbound
 * queue past WS_MAX_OUTBOUND: the message is dropped and the connection
 * closed with 1013 (a slow consumer); KEEL_EINVAL for an opcode other
 * than TEXT/BINARY or, for keel_ws_send_text, text that is not UTF-8
 * (keel_ws_send does not check: the caller vouches). Written with
 * uv_try_write at once when nothing is queued. */
int keel_ws_send(keel_ws *ws, keel_ws_opcode op, const void *data, size_t len);
int keel_ws_send_text(keel_ws *ws, const char *text, size_t len);
int keel_ws_send_binary(keel_ws *ws, const void *data, size_t len);

/* Starts the close handshake with `code` (1000..4999, not 1004-1006 or
 * 1015) and an optional reason (at most 123 bytes, truncated). Data
 * messages are no longer delivered; the TCP connection ends when the peer
 * answers or after WS_CLOSE_TIMEOUT. 0, KEEL_ECLOSED when already closing,
 * KEEL_EINVAL for a bad code. */
int keel_ws_close(keel_ws *ws, int code, const char *reason);

/* ---------------------------------------------------------------- broadcast
 *
 * A frame serialised once (header + payload, server frames are unmasked)
 * and written as the same bytes to any number of connections, on any
 * loop: the reference count is atomic, so one frame can be handed to
 * every worker's mailbox and released by each when it is done. */
typedef struct keel_ws_frame keel_ws_frame;

/* A TEXT or BINARY frame of `len` bytes (copied), with reference count 1.
 * NULL for another opcode or a size over 2^62. */
keel_ws_frame *keel_ws_frame_new(keel_ws_opcode op, const void *data, size_t len);
keel_ws_frame *keel_ws_frame_ref(keel_ws_frame *f);
/* Drops a reference; the last one frees it. NULL is a no-op. */
void keel_ws_frame_unref(keel_ws_frame *f);
/* The wire bytes and the payload size. */
const void *keel_ws_frame_bytes(const keel_ws_frame *f, size_t *len);
size_t keel_ws_frame_payload_len(const keel_ws_frame *f);
/* Writes the frame to ws: like keel_ws_send (same results), without
 * building the frame again. The caller keeps its reference. */
int keel_ws_send_frame(keel_ws *ws, const keel_ws_frame *f);
/* The same for a message that may be lost (typing indicators, presence
 * diffs): droppable frames may fill half of WS_MAX_OUTBOUND. Past that
 * the oldest droppable frames still waiting whole in the queue are
 * dropped to make room (ws_dropped_total{reason="droppable_oldest"}):
 * the newest state wins and 0 is returned. Only when they are not enough
 * is this one dropped (reason="droppable") with KEEL_EBUSY. A frame the
 * socket has begun to take is never dropped, nor a non-droppable one;
 * a non-droppable send that would pass the whole cap sheds the oldest
 * droppable frames too before closing the slow consumer (1013). The
 * connection stays open. */
int keel_ws_send_frame_droppable(keel_ws *ws, const keel_ws_frame *f);

/* Sends f to every open connection of every worker whose route has
 * handler h (NULL: every WebSocket connection), from any thread: a
 * reference to f goes to each worker's mailbox (keel_worker_post), and
 * each worker writes the same bytes to its own connections on its own
 * loop. The caller keeps its reference. Returns the number of workers
 * the frame was handed to; a slow consumer among the receivers is closed
 * (1013) as with keel_ws_send_frame, without holding up the others. */
unsigned keel_ws_broadcast(struct keel_server *s, const keel_ws_handler *h, keel_ws_frame *f);

/* ---------------------------------------------------------------- counts */

/* Open WebSocket connections of the server (all workers) and of one
 * worker. For caps per user, count in on_open/on_close and refuse with
 * keel_ws_close(ws, KEEL_WS_POLICY, ...) or before keel_ws_accept. */
uint64_t keel_ws_connections(const struct keel_server *s);
uint64_t keel_ws_worker_connections(const struct keel_worker *w);
/* Calls fn for every open WebSocket connection of w (its loop only). */
void keel_ws_foreach(struct keel_worker *w, void (*fn)(keel_ws *ws, void *arg), void *arg);

/* ---------------------------------------------------------------- observer
 *
 * How metrics see the transport without core knowing metrics: the
 * service installs one observer (keel_metrics_register_ws does). Each
 * hook runs on the worker's loop, `shard` being its id. */
typedef enum keel_ws_dir { KEEL_WS_IN = 0, KEEL_WS_OUT = 1 } keel_ws_dir;
typedef struct keel_ws_observer {
    /* a message in or out (bytes: payload); out also gives the queue
     * bytes left behind after it was handed to the socket */
    void (*on_message)(void *arg, unsigned shard, keel_ws_dir dir, size_t bytes,
                       size_t queued);
    /* a connection ended with `code` (sent or received) */
    void (*on_close)(void *arg, unsigned shard, int code);
    /* a message refused: "slow_consumer", "closing" */
    void (*on_drop)(void *arg, unsigned shard, const char *reason);
    void *arg;
} keel_ws_observer;
/* Installs o (copied), before keel_server_start. */
void keel_server_set_ws_observer(struct keel_server *s, const keel_ws_observer *o);

/* ---------------------------------------------------------------- config */

typedef struct keel_ws_options {
    uint64_t max_message;      /* WS_MAX_MESSAGE */
    uint64_t max_frame;        /* WS_MAX_FRAME */
    uint64_t max_outbound;     /* WS_MAX_OUTBOUND */
    unsigned message_rate;     /* WS_MESSAGE_RATE, per second; 0 = no cap */
    unsigned message_burst;    /* WS_MESSAGE_BURST */
    uint64_t ping_interval_ms; /* WS_PING_INTERVAL; 0 = no pings */
    uint64_t pong_timeout_ms;  /* WS_PONG_TIMEOUT */
    uint64_t close_timeout_ms; /* WS_CLOSE_TIMEOUT */
    uint64_t max_per_ip;       /* WS_MAX_PER_IP; 0 = no cap */
} keel_ws_options;

extern const keel_config_module keel_ws_config;

/* ---------------------------------------------------------------- tools */

/* Sec-WebSocket-Accept for a key: base64(SHA-1(key + GUID)), 28 chars
 * plus NUL into out. */
void keel_ws_accept_key(const char *key, size_t len, char out[29]);
/* SHA-1 (FIPS 180-4), for the handshake only: not for security. */
void keel_sha1(const void *data, size_t len, uint8_t out[20]);

#ifdef __cplusplus
}
#endif
#endif
