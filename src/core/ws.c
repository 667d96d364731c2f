/* ws.c — WebSocket sessions on keel connections: the handshake
 * (keel_ws_accept), the session's life after the 101, sending (single
 * messages and shared frames), the close handshake, pings, limits and
 * the shutdown close.
 *
 * A session belongs to its connection (c->ws) and its loop. The
 * connection switches to CONN_WS when the request that queued the 101
 * completes (keel__conn_request_done -> keel__ws_start); from then on
 * conn.c hands every byte read to keel__ws_input and never to the HTTP
 * parser. Output shares the connection's buffers: a frame is written with
 * uv_try_write straight from its bytes when nothing is queued (a shared
 * broadcast frame is never copied then), else appended to c->out, which
 * the connection flushes as it does responses. The queue is c->out plus
 * the write in flight; past WS_MAX_OUTBOUND the consumer is too slow and
 * is closed with 1013.
 *
 * Closing: keel sends a close frame once (close_sent), then
 *   - after a protocol error or a missing pong it ends the TCP connection
 *     as soon as the frame is written (the linger of conn.c);
 *   - otherwise it waits for the peer's close up to WS_CLOSE_TIMEOUT.
 * A close from the peer is answered with the same code, then the TCP
 * connection ends. on_close runs once, when the handshake completes or
 * the TCP connection goes, whichever is first. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/server_internal.h"
#include "core/ws_internal.h"
#include "keel/log.h"

struct keel_ws {
    keel_conn *c;          /* NULL once the connection is gone */
    keel_worker *w;
    const keel_route *route;
    const keel_ws_handler *h;
    void *user;
    uint64_t id;
    keel_ws_parser p;
    int opened;
    int close_sent;
    int close_received;
    int finished;          /* on_close ran */
    int code;              /* the first close code sent or received */
    uint64_t close_deadline;
    uint64_t last_rx;      /* loop ms of the last read */
    uint64_t last_tx;      /* loop ms of the last message sent */
    int ping_outstanding;
    uint64_t pong_deadline;
    double tokens;         /* WS_MESSAGE_RATE bucket */
    uint64_t tokens_at;
    int ip_counted;
    keel_addr ipkey;
    char client[64];
    /* The droppable frames waiting whole in c->out, oldest first: what a
     * full queue sheds (see shed_droppable). Only c->out, never c->wbuf:
     * a frame the socket has begun to take is never touched. Emptied
     * when conn.c hands c->out to the socket (keel__ws_out_taken). */
    struct ws_drop {
        size_t off, len;
    } *drops;
    unsigned ndrops, capdrops;
};

static uint64_t next_id = 1;

/* ---------------------------------------------------------------- config */

#define AT(f) KEEL_CONFIG_AT(keel_ws_options, f)
static const keel_config_var ws_vars[] = {
    {.name = "WS_MAX_MESSAGE", .type = KEEL_CONFIG_SIZE, .def = "1mb", AT(max_message),
     .min = 125, .help = "largest WebSocket message accepted (reassembled); close 1009 beyond"},
    {.name = "WS_MAX_FRAME", .type = KEEL_CONFIG_SIZE, .def = "1mb", AT(max_frame), .min = 125,
     .help = "largest WebSocket frame payload accepted; close 1009 beyond"},
    {.name = "WS_MAX_OUTBOUND", .type = KEEL_CONFIG_SIZE, .def = "1mb", AT(max_outbound),
     .min = 1024,
     .help = "bytes queued for one WebSocket client before it is closed as a slow consumer (1013)"},
    {.name = "WS_MESSAGE_RATE", .type = KEEL_CONFIG_UINT, .def = "100", AT(message_rate),
     .help = "inbound messages per second per WebSocket connection; close 1008 beyond; 0 = no cap"},
    {.name = "WS_MESSAGE_BURST", .type = KEEL_CONFIG_UINT, .def = "200", AT(message_burst),
     .min = 1, .help = "inbound messages a WebSocket connection may send at once above the rate"},
    {.name = "WS_PING_INTERVAL", .type = KEEL_CONFIG_DURATION, .def = "30s",
     AT(ping_interval_ms),
     .help = "ping a WebSocket client silent for this long; 0 = never"},
    {.name = "WS_PONG_TIMEOUT", .type = KEEL_CONFIG_DURATION, .def = "10s", AT(pong_timeout_ms),
     .min = 100, .help = "close (1001) a WebSocket client that does not answer a ping in time"},
    {.name = "WS_CLOSE_TIMEOUT", .type = KEEL_CONFIG_DURATION, .def = "5s", AT(close_timeout_ms),
     .min = 100,
     .help = "end the TCP connection when the WebSocket close handshake is not answered in time"},
    {.name = "WS_MAX_PER_IP", .type = KEEL_CONFIG_UINT, .def = "256", AT(max_per_ip),
     .help = "open WebSocket connections per client address (429 beyond); 0 = no cap"},
};
#undef AT

static int ws_validate(void *opts, const keel_config *cfg, FILE *err)
{
    keel_ws_options *o = opts;
    (void)cfg;
    if (o->max_frame > o->max_message) {
        fprintf(err, "keel: WS_MAX_FRAME: must not exceed WS_MAX_MESSAGE\n");
        return KEEL_ECONFIG;
    }
    return 0;
}

const keel_config_module keel_ws_config =
    KEEL_CONFIG_MODULE("ws", "WebSocket transport (RFC 6455): limits and timers of every "
                             "WebSocket route (docs/realtime.md).",
                       keel_ws_options, ws_vars, ws_validate);

void keel_server_set_ws_observer(keel_server *s, const keel_ws_observer *o)
{
    s->ws_obs = *o;
}

/* ---------------------------------------------------------------- accessors */

void *keel_ws_user(const keel_ws *ws) { return ws->user; }
void keel_ws_set_user(keel_ws *ws, void *user) { ws->user = user; }
void *keel_ws_handler_data(const keel_ws *ws) { return ws->h ? ws->h->data : NULL; }
keel_worker *keel_ws_worker(const keel_ws *ws) { return ws->w; }
const char *keel_ws_client_addr(const keel_ws *ws) { return ws->client; }
uint64_t keel_ws_id(const keel_ws *ws) { return ws->id; }

size_t keel_ws_outbound_bytes(const keel_ws *ws)
{
    return ws->c ? ws->c->out.len + ws->c->wbuf.len : 0;
}

uint64_t keel_ws_worker_connections(const keel_worker *w)
{
    return __atomic_load_n(&w->stats.ws_open, __ATOMIC_RELAXED);
}

uint64_t keel_ws_connections(const keel_server *s)
{
    uint64_t n = 0;
    for (unsigned i = 0; s->workers && i < s->nworkers; i++)
        if (s->workers[i])
            n += keel_ws_worker_connections(s->workers[i]);
    return n;
}

void keel_ws_foreach(keel_worker *w, void (*fn)(keel_ws *ws, void *arg), void *arg)
{
    keel_conn *next;
    for (keel_conn *c = w->conns; c; c = next) {
        next = c->next;
        if (c->ws && c->state == CONN_WS && !c->ws->finished)
            fn(c->ws, arg);
    }
}

/* ---------------------------------------------------------------- frames */

struct keel_ws_frame {
    int refs;
    size_t payload_len;
    size_t len;
    uint8_t bytes[];
};

keel_ws_frame *keel_ws_frame_new(keel_ws_opcode op, const void *data, size_t len)
{
    if ((op != KEEL_WS_TEXT && op != KEEL_WS_BINARY) || len > (1ull << 62))
        return NULL;
    uint8_t hdr[10];
    size_t hl = keel__ws_header(hdr, op, len);
    keel_ws_frame *f = keel_malloc(sizeof(*f) + hl + len);
    f->refs = 1;
    f->payload_len = len;
    f->len = hl + len;
    memcpy(f->bytes, hdr, hl);
    if (len)
        memcpy(f->bytes + hl, data, len);
    return f;
}

keel_ws_frame *keel_ws_frame_ref(keel_ws_frame *f)
{
    __atomic_add_fetch(&f->refs, 1, __ATOMIC_RELAXED);
    return f;
}

void keel_ws_frame_unref(keel_ws_frame *f)
{
    if (f && __atomic_sub_fetch(&f->refs, 1, __ATOMIC_ACQ_REL) == 0)
        keel_free(f);
}

const void *keel_ws_frame_bytes(const keel_ws_frame *f, size_t *len)
{
    *len = f->len;
    return f->bytes;
}

size_t keel_ws_frame_payload_len(const keel_ws_frame *f)
{
    return f->payload_len;
}

/* ---------------------------------------------------------------- broadcast */

typedef struct bcast {
    keel_ws_frame *f;
    const keel_ws_handler *h;
    keel_worker *w;
} bcast;

static void bcast_run(void *arg)
{
    bcast *b = arg;
    keel_conn *next;
    for (keel_conn *c = b->w->conns; c; c = next) {
        next = c->next; /* a send may close c (a slow consumer) */
        keel_ws *ws = c->ws;
        if (ws && c->state == CONN_WS && !ws->finished && (!b->h || ws->h == b->h))
            keel_ws_send_frame(ws, b->f);
    }
    keel_ws_frame_unref(b->f);
    keel_free(b);
}

unsigned keel_ws_broadcast(keel_server *s, const keel_ws_handler *h, keel_ws_frame *f)
{
    unsigned n = 0;
    for (unsigned i = 0; s->workers && i < s->nworkers; i++) {
        keel_worker *w = s->workers[i];
        if (!w)
            continue;
        bcast *b = keel_malloc(sizeof(*b));
        *b = (bcast){keel_ws_frame_ref(f), h, w};
        if (keel_worker_post(w, bcast_run, b) < 0) {
            keel_ws_frame_unref(b->f);
            keel_free(b);
            continue;
        }
        n++;
    }
    return n;
}

/* ---------------------------------------------------------------- output */

static void note_droppable(keel_ws *ws, size_t off, size_t len)
{
    if (ws->ndrops == ws->capdrops) {
        ws->capdrops = ws->capdrops ? ws->capdrops * 2 : 8;
        ws->drops = keel_realloc(ws->drops, ws->capdrops * sizeof(*ws->drops));
    }
    ws->drops[ws->ndrops++] = (struct ws_drop){off, len};
}

void keel__ws_out_taken(keel_ws *ws)
{
    if (ws)
        ws->ndrops = 0;
}

/* Queues or writes hdr + payload on the connection. A frame queued whole
 * in c->out for a droppable message (drop_ws set) is remembered there,
 * so that a full queue can shed it later. */
static void put_frame(keel_conn *c, keel_ws *drop_ws, const void *hdr, size_t hl,
                      const void *payload, size_t n)
{
    if (c->processing || c->writing || c->out.len) {
        size_t off = c->out.len;
        keel_buf_append(&c->out, hdr, hl);
        if (n)
            keel_buf_append(&c->out, payload, n);
        if (drop_ws)
            note_droppable(drop_ws, off, hl + n);
        if (!c->processing)
            keel__conn_flush(c);
        return;
    }
    uv_buf_t b[2] = {uv_buf_init((char *)hdr, (unsigned)hl),
                     uv_buf_init((char *)payload, (unsigned)n)};
    int w = uv_try_write((uv_stream_t *)&c->tcp, b, n ? 2 : 1);
    size_t done = w > 0 ? (size_t)w : 0;
    if (w < 0 && w != UV_EAGAIN) {
        keel__conn_close(c);
        return;
    }
    STAT_ADD(c->w, bytes_out, done);
    if (done >= hl + n)
        return;
    if (done < hl) {
        keel_buf_append(&c->out, (const char *)hdr + done, hl - done);
        if (n)
            keel_buf_append(&c->out, payload, n);
    } else {
        keel_buf_append(&c->out, (const char *)payload + (done - hl), n - (done - hl));
    }
    keel__conn_flush(c);
}

static void put(keel_conn *c, const void *hdr, size_t hl, const void *payload, size_t n)
{
    put_frame(c, NULL, hdr, hl, payload, n);
}

/* Drops the oldest droppable frames queued in c->out until at least
 * `excess` bytes are freed, closing the gaps in one pass; nothing when
 * all of them together would not free that much. Returns the bytes
 * freed. */
static size_t shed_droppable(keel_ws *ws, keel_conn *c, size_t excess)
{
    size_t sum = 0;
    unsigned k = 0;
    while (k < ws->ndrops && sum < excess)
        sum += ws->drops[k++].len;
    if (k == 0 || sum < excess)
        return 0;
    char *d = c->out.data;
    size_t at = ws->drops[0].off;
    for (unsigned i = 0; i < k; i++) {
        size_t from = ws->drops[i].off + ws->drops[i].len;
        size_t to = i + 1 < k ? ws->drops[i + 1].off : c->out.len;
        memmove(d + at, d + from, to - from);
        at += to - from;
    }
    c->out.len = at;
    for (unsigned i = k; i < ws->ndrops; i++) {
        ws->drops[i - k] = ws->drops[i];
        ws->drops[i - k].off -= sum;
    }
    ws->ndrops -= k;
    keel_server *s = ws->w->srv;
    for (unsigned i = 0; s->ws_obs.on_drop && i < k; i++)
        s->ws_obs.on_drop(s->ws_obs.arg, ws->w->id, "droppable_oldest");
    return sum;
}

static void finish(keel_ws *ws, int code, const char *reason, size_t rlen)
{
    if (ws->finished)
        return;
    ws->finished = 1;
    keel_worker *w = ws->w;
    keel_server *s = w->srv;
    if (ws->ip_counted) {
        keel__ipcap_release(s->ws_ipcap, &ws->ipkey);
        ws->ip_counted = 0;
    }
    if (!ws->opened)
        return;
    STAT_SUB(w, ws_open, 1);
    if (s->ws_obs.on_close)
        s->ws_obs.on_close(s->ws_obs.arg, w->id, code);
    if (ws->h && ws->h->on_close)
        ws->h->on_close(ws, code, reason ? reason : "", rlen);
}

static void send_close(keel_ws *ws, int code, const char *reason)
{
    keel_conn *c = ws->c;
    uint8_t frame[2 + 125];
    size_t rl = reason ? strlen(reason) : 0;
    if (rl > 123)
        rl = 123;
    size_t n = 0;
    if (code != KEEL_WS_NO_STATUS) {
        frame[2] = (uint8_t)(code >> 8);
        frame[3] = (uint8_t)code;
        if (rl)
            memcpy(frame + 4, reason, rl);
        n = 2 + rl;
    }
    frame[0] = 0x80 | KEEL_WS_CLOSE;
    frame[1] = (uint8_t)n;
    ws->close_sent = 1;
    if (!ws->code)
        ws->code = code;
    ws->close_deadline = uv_now(&ws->w->loop) + ws->w->srv->ws->close_timeout_ms;
    if (c && !c->closed)
        put(c, frame, 2 + n, NULL, 0);
}

/* Ends the TCP connection once everything queued (the close frame last)
 * is written: conn.c's linger half-closes and waits for the peer's FIN. */
static void end_tcp(keel_ws *ws)
{
    keel_conn *c = ws->c;
    if (!c || c->closed)
        return;
    c->state = CONN_CLOSING;
    c->close_after_write = 1;
    if (!c->processing)
        keel__conn_flush(c);
}

/* A violation: the close code, then the end of the connection. */
static void fail(keel_ws *ws, int code, const char *reason)
{
    if (!ws->close_sent)
        send_close(ws, code, reason);
    finish(ws, code, reason, reason ? strlen(reason) : 0);
    end_tcp(ws);
}

int keel_ws_close(keel_ws *ws, int code, const char *reason)
{
    if (ws->close_sent || ws->finished || !ws->c)
        return KEEL_ECLOSED;
    if (code < 1000 || code > 4999 || code == 1004 || code == 1005 || code == 1006 ||
        code == 1015)
        return KEEL_EINVAL;
    send_close(ws, code, reason);
    if (ws->close_received)
        end_tcp(ws);
    return 0;
}

static int send_data(keel_ws *ws, const void *hdr, size_t hl, const void *payload, size_t n,
                     int droppable)
{
    keel_conn *c = ws->c;
    keel_server *s = ws->w->srv;
    if (!c || c->closed || ws->close_sent || ws->finished) {
        if (s->ws_obs.on_drop)
            s->ws_obs.on_drop(s->ws_obs.arg, ws->w->id, "closing");
        return KEEL_ECLOSED;
    }
    size_t queued = c->out.len + c->wbuf.len;
    /* droppable messages may fill half of the queue, the others all of
     * it; past that the oldest droppable frames still waiting whole make
     * room (the newest state wins), and when they are not enough a
     * droppable message is dropped itself, another closes the slow
     * consumer */
    size_t limit = droppable ? s->ws->max_outbound / 2 : s->ws->max_outbound;
    /* the index of droppable frames is bounded too (an eighth of the
     * cap: tiny frames must not grow it past the queue it describes) */
    if (droppable && (ws->ndrops + 1) * sizeof(*ws->drops) > s->ws->max_outbound / 8)
        queued -= shed_droppable(ws, c, 1);
    if (queued && queued + hl + n > limit)
        queued -= shed_droppable(ws, c, queued + hl + n - limit);
    if (droppable && queued && queued + hl + n > limit) {
        /* a message that may be lost: dropped, the connection stays */
        if (s->ws_obs.on_drop)
            s->ws_obs.on_drop(s->ws_obs.arg, ws->w->id, "droppable");
        return KEEL_EBUSY;
    }
    if (queued && queued + hl + n > s->ws->max_outbound) {
        if (s->ws_obs.on_drop)
            s->ws_obs.on_drop(s->ws_obs.arg, ws->w->id, "slow_consumer");
        keel_log(KEEL_LOG_INFO, "websocket slow consumer closed", "{s:s,s:I}", "remote",
                 ws->client, "queued", (json_int_t)queued);
        keel_ws_close(ws, KEEL_WS_TRY_AGAIN, "slow consumer");
        return KEEL_ECLOSED;
    }
    put_frame(c, droppable ? ws : NULL, hdr, hl, payload, n);
    ws->last_tx = ws->w->now_ms;
    if (s->ws_obs.on_message)
        s->ws_obs.on_message(s->ws_obs.arg, ws->w->id, KEEL_WS_OUT, n,
                             c->closed ? 0 : c->out.len + c->wbuf.len);
    return 0;
}

int keel_ws_send(keel_ws *ws, keel_ws_opcode op, const void *data, size_t len)
{
    if (op != KEEL_WS_TEXT && op != KEEL_WS_BINARY)
        return KEEL_EINVAL;
    uint8_t hdr[10];
    size_t hl = keel__ws_header(hdr, op, len);
    return send_data(ws, hdr, hl, data, len, 0);
}

int keel_ws_send_text(keel_ws *ws, const char *text, size_t len)
{
    uint32_t st = 0;
    if (keel__utf8_step(&st, (const uint8_t *)text, len) < 0 || st != 0)
        return KEEL_EINVAL;
    return keel_ws_send(ws, KEEL_WS_TEXT, text, len);
}

int keel_ws_send_binary(keel_ws *ws, const void *data, size_t len)
{
    return keel_ws_send(ws, KEEL_WS_BINARY, data, len);
}

int keel_ws_send_frame(keel_ws *ws, const keel_ws_frame *f)
{
    /* the whole frame as "header": one buffer, never copied when the
     * socket takes it at once */
    return send_data(ws, f->bytes, f->len, NULL, 0, 0);
}

int keel_ws_send_frame_droppable(keel_ws *ws, const keel_ws_frame *f)
{
    return send_data(ws, f->bytes, f->len, NULL, 0, 1);
}

static void send_control(keel_ws *ws, keel_ws_opcode op, const void *data, size_t n)
{
    uint8_t hdr[10];
    size_t hl = keel__ws_header(hdr, op, n);
    if (ws->c && !ws->c->closed)
        put(ws->c, hdr, hl, data, n);
}

/* ---------------------------------------------------------------- handshake */

/* Whether the comma-separated header value lists `token` (case-insensitive). */
static int has_token(keel_str v, const char *token)
{
    size_t tl = strlen(token);
    size_t i = 0;
    while (i < v.len) {
        while (i < v.len && (v.ptr[i] == ' ' || v.ptr[i] == '\t' || v.ptr[i] == ','))
            i++;
        size_t st = i;
        while (i < v.len && v.ptr[i] != ',')
            i++;
        size_t e = i;
        while (e > st && (v.ptr[e - 1] == ' ' || v.ptr[e - 1] == '\t'))
            e--;
        if (e - st == tl && strncasecmp(v.ptr + st, token, tl) == 0)
            return 1;
    }
    return 0;
}

static int header_has_token(const keel_req *r, const char *name, const char *token)
{
    for (size_t i = 0; i < r->head.num_headers; i++) {
        const keel_http_header *h = &r->head.headers[i];
        if (keel_str_ieq_c(h->name, name) && has_token(h->value, token))
            return 1;
    }
    return 0;
}

/* A Sec-WebSocket-Key is the base64 of 16 bytes: 22 characters and "==". */
static int key_ok(keel_str k)
{
    if (k.len != 24 || k.ptr[22] != '=' || k.ptr[23] != '=')
        return 0;
    for (size_t i = 0; i < 22; i++) {
        char ch = k.ptr[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
              (ch >= '0' && ch <= '9') || ch == '+' || ch == '/'))
            return 0;
    }
    /* the last character carries 2 bits: the others must be zero */
    return strchr("AQgw", k.ptr[21]) != NULL;
}

keel_flow keel_ws_accept(keel_req *r, void *user)
{
    return keel_ws_accept_protocol(r, user, NULL);
}

keel_flow keel_ws_accept_protocol(keel_req *r, void *user, const char *protocol)
{
    keel_server *s = r->w->srv;
    const keel_route *rt = r->entry ? r->entry->route : NULL;
    if (r->finished || r->ws)
        return KEEL_DONE; /* answered already (a second call, a deadline) */
    if (!rt || !rt->websocket) {
        keel_respond_problem(r, 500, "not a WebSocket route");
        return KEEL_DONE;
    }
    if (!header_has_token(r, "upgrade", "websocket")) {
        keel_res_header(r, "Upgrade", "websocket");
        keel_respond_problem(r, 426, "this resource speaks WebSocket: send an upgrade request");
        return KEEL_DONE;
    }
    if (r->head.version_minor == 0) {
        keel_respond_problem(r, 400, "a WebSocket upgrade needs HTTP/1.1");
        return KEEL_DONE;
    }
    if (r->head.method != KEEL_METHOD_GET) {
        keel_respond_problem(r, 400, "a WebSocket upgrade is a GET request");
        return KEEL_DONE;
    }
    if (!header_has_token(r, "connection", "upgrade")) {
        keel_respond_problem(r, 400, "a WebSocket upgrade needs \"Connection: upgrade\"");
        return KEEL_DONE;
    }
    keel_str ver = keel_req_header(r, "sec-websocket-version");
    if (!(ver.len == 2 && ver.ptr[0] == '1' && ver.ptr[1] == '3')) {
        keel_res_header(r, "Sec-WebSocket-Version", "13");
        keel_respond_problem(r, 426, "unsupported Sec-WebSocket-Version: keel speaks 13");
        return KEEL_DONE;
    }
    keel_str key = keel_req_header(r, "sec-websocket-key");
    if (!key.ptr || !key_ok(key)) {
        keel_respond_problem(r, 400, "missing or invalid Sec-WebSocket-Key");
        return KEEL_DONE;
    }
    if (r->w->draining || !r->c) {
        keel_respond_unavailable(r, 1, "the server is shutting down");
        return KEEL_DONE;
    }
    keel_ws *ws = keel_calloc(1, sizeof(*ws));
    ws->w = r->w;
    ws->route = rt;
    ws->h = rt->websocket;
    ws->user = user;
    ws->id = __atomic_fetch_add(&next_id, 1, __ATOMIC_RELAXED);
    snprintf(ws->client, sizeof(ws->client), "%s", keel_req_client_addr(r));
    const keel_addr *ca = keel_req_client(r);
    if (s->ws->max_per_ip && ca->family) {
        ws->ipkey = keel_addr_prefix(ca, s->cfg.client_ipv6_prefix);
        if (keel__ipcap_acquire(s->ws_ipcap, &ws->ipkey, s->ws->max_per_ip) < 0) {
            keel_free(ws);
            keel_res_header(r, "Retry-After", "10");
            keel_respond_problem(r, 429, "too many WebSocket connections from your address");
            return KEEL_DONE;
        }
        ws->ip_counted = 1;
    }
    char accept[29];
    keel_ws_accept_key(key.ptr, key.len, accept);
    keel_res_header(r, "Upgrade", "websocket");
    keel_res_header(r, "Sec-WebSocket-Accept", accept);
    if (protocol && header_has_token(r, "sec-websocket-protocol", protocol))
        keel_res_header(r, "Sec-WebSocket-Protocol", protocol);
    r->ws = ws;
    keel_respond(r, 101, NULL, NULL, 0);
    return KEEL_DONE;
}

/* A 101 that never took effect (the client left first). */
void keel__ws_free(keel_ws *ws)
{
    if (!ws)
        return;
    finish(ws, KEEL_WS_ABNORMAL, NULL, 0);
    keel__ws_parser_close(&ws->p);
    keel_free(ws->drops);
    keel_free(ws);
}

/* ---------------------------------------------------------------- session */

void keel__ws_start(keel_conn *c)
{
    keel_ws *ws = c->ws;
    keel_worker *w = c->w;
    const keel_ws_options *o = w->srv->ws;
    ws->c = c;
    c->state = CONN_WS;
    c->deadline = 0;
    c->close_after_write = 0;
    keel__ws_parser_init(&ws->p, o->max_frame, o->max_message, 1);
    uint64_t now = uv_now(&w->loop);
    ws->last_rx = now;
    ws->tokens = o->message_burst;
    ws->tokens_at = now;
    ws->opened = 1;
    STAT_ADD(w, ws_open, 1);
    c->processing++; /* what on_open sends leaves with the 101, in one write */
    if (ws->h && ws->h->on_open)
        ws->h->on_open(ws);
    c->processing--;
    if (!c->closed && !ws->close_sent && w->draining)
        keel_ws_close(ws, KEEL_WS_GOING_AWAY, "server shutting down");
}

static int rate_ok(keel_ws *ws, uint64_t now)
{
    const keel_ws_options *o = ws->w->srv->ws;
    if (!o->message_rate)
        return 1;
    ws->tokens += (double)(now - ws->tokens_at) * o->message_rate / 1000.0;
    ws->tokens_at = now;
    if (ws->tokens > o->message_burst)
        ws->tokens = o->message_burst;
    if (ws->tokens < 1)
        return 0;
    ws->tokens -= 1;
    return 1;
}

/* One parsed frame. */
static void on_event(keel_ws *ws, const keel_ws_event *ev)
{
    keel_conn *c = ws->c;
    keel_server *s = ws->w->srv;
    switch (ev->kind) {
    case KEEL__WS_EV_MESSAGE:
        if (ws->close_sent)
            return; /* closing: data is no longer delivered */
        if (!rate_ok(ws, uv_now(&ws->w->loop))) {
            fail(ws, KEEL_WS_POLICY, "message rate exceeded");
            return;
        }
        if (s->ws_obs.on_message)
            s->ws_obs.on_message(s->ws_obs.arg, ws->w->id, KEEL_WS_IN, ev->len, 0);
        if (ws->h && ws->h->on_message)
            ws->h->on_message(ws, ev->op, ev->data, ev->len);
        keel__ws_parser_trim(&ws->p);
        return;
    case KEEL__WS_EV_PING:
        if (!ws->close_sent)
            send_control(ws, KEEL_WS_PONG, ev->data, ev->len);
        return;
    case KEEL__WS_EV_PONG:
        ws->ping_outstanding = 0;
        return;
    case KEEL__WS_EV_CLOSE: {
        ws->close_received = 1;
        if (!ws->close_sent) {
            /* echo the code (none for none), then end */
            uint8_t frame[4];
            frame[0] = 0x80 | KEEL_WS_CLOSE;
            size_t n = 2;
            if (ev->code != KEEL_WS_NO_STATUS) {
                frame[1] = 2;
                frame[2] = (uint8_t)(ev->code >> 8);
                frame[3] = (uint8_t)ev->code;
                n = 4;
            } else {
                frame[1] = 0;
            }
            ws->close_sent = 1;
            ws->code = ev->code;
            put(c, frame, n, NULL, 0);
        }
        finish(ws, ev->code, ev->reason, ev->reason_len);
        end_tcp(ws);
        return;
    }
    default:
        return;
    }
}

void keel__ws_input(keel_conn *c)
{
    keel_ws *ws = c->ws;
    ws->last_rx = uv_now(&c->w->loop);
    while (!c->closed && c->state == CONN_WS) {
        size_t avail = c->in.len - c->parsed;
        if (avail == 0) {
            c->in.len = c->parsed = 0;
            if (c->in.cap > 65536)
                keel_buf_free(&c->in);
            return;
        }
        keel_ws_event ev;
        long rc = keel__ws_parse(&ws->p, (uint8_t *)c->in.data + c->parsed, avail, &ev);
        if (rc == 0) {
            if (c->parsed) { /* keep the partial frame at the front */
                memmove(c->in.data, c->in.data + c->parsed, avail);
                c->in.len = avail;
                c->parsed = 0;
            }
            return;
        }
        if (rc < 0) {
            int code = (int)-rc;
            fail(ws, code,
                 code == KEEL_WS_TOO_BIG        ? "message too big"
                 : code == KEEL_WS_INVALID_DATA ? "invalid UTF-8"
                                                : "protocol error");
            return;
        }
        c->parsed += (size_t)rc;
        on_event(ws, &ev);
    }
}

/* An idle connection gives its buffers back: what an idle WebSocket
 * costs is its keel_ws and the connection object, not 4 KiB buffers
 * kept for traffic that may never come. Buffers come back (doubling) on
 * the next read or send; at most one release per IDLE_RELEASE_MS. */
#define IDLE_RELEASE_MS 1000

static void release_idle_buffers(keel_conn *c, keel_ws *ws, uint64_t now)
{
    if (c->writing || now - ws->last_rx < IDLE_RELEASE_MS || now - ws->last_tx < IDLE_RELEASE_MS)
        return;
    if (c->in.cap && c->in.len == c->parsed) {
        c->in.len = c->parsed = 0;
        keel_buf_free(&c->in);
    }
    if (c->out.cap && c->out.len == 0)
        keel_buf_free(&c->out);
    if (c->wbuf.cap)
        keel_buf_free(&c->wbuf); /* unused while no write is in flight */
    if (!ws->p.in_message)
        keel_buf_free(&ws->p.msg);
    if (ws->capdrops && !ws->ndrops) {
        keel_free(ws->drops);
        ws->drops = NULL;
        ws->capdrops = 0;
    }
}

void keel__ws_sweep(keel_conn *c, uint64_t now)
{
    keel_ws *ws = c->ws;
    const keel_ws_options *o = c->w->srv->ws;
    release_idle_buffers(c, ws, now);
    if (ws->close_sent) {
        if (now >= ws->close_deadline) {
            finish(ws, ws->code, NULL, 0);
            keel__conn_close(c); /* the peer never answered the close */
        }
        return;
    }
    if (ws->ping_outstanding) {
        if (now >= ws->pong_deadline)
            fail(ws, KEEL_WS_GOING_AWAY, "no pong");
        return;
    }
    if (o->ping_interval_ms && now - ws->last_rx >= o->ping_interval_ms) {
        ws->ping_outstanding = 1;
        ws->pong_deadline = now + o->pong_timeout_ms;
        send_control(ws, KEEL_WS_PING, "keel", 4);
    }
}

void keel__ws_drain(keel_conn *c)
{
    keel_ws *ws = c->ws;
    if (ws->close_sent)
        return;
    keel_ws_close(ws, KEEL_WS_GOING_AWAY, "server shutting down");
    /* the close handshake must end inside the grace, whatever
     * WS_CLOSE_TIMEOUT says: half of it at most */
    uint64_t half = c->w->srv->cfg.shutdown_grace_ms / 2;
    uint64_t now = uv_now(&c->w->loop);
    if (ws->close_deadline > now + half)
        ws->close_deadline = now + half;
}

void keel__ws_conn_closed(keel_conn *c)
{
    keel_ws *ws = c->ws;
    finish(ws, ws->code ? ws->code : KEEL_WS_ABNORMAL, NULL, 0);
    ws->c = NULL;
}
