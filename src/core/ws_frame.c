/* ws_frame.c — RFC 6455 framing: the frame parser (whole frames in the
 * caller's buffer, unmasked in place), fragment reassembly, the UTF-8
 * check across fragments, close-frame rules, and server frame headers.
 *
 * Why our own and not wslay: the connection already owns an input buffer
 * that holds a whole frame (WS_MAX_FRAME bounds it), so a frame is a view
 * into it: no callback per chunk, no copy for a one-frame message, no
 * allocation per frame. The rules below are the whole of section 5 that a
 * server enforces; each violation maps to the close code the RFC gives. */
#include <string.h>

#include "core/ws_internal.h"

void keel__ws_parser_init(keel_ws_parser *p, uint64_t max_frame, uint64_t max_message,
                          int require_mask)
{
    memset(p, 0, sizeof(*p));
    p->max_frame = max_frame;
    p->max_message = max_message;
    p->require_mask = require_mask;
}

void keel__ws_parser_close(keel_ws_parser *p)
{
    keel_buf_free(&p->msg);
}

void keel__ws_parser_trim(keel_ws_parser *p)
{
    if (!p->in_message && p->msg.cap > 65536)
        keel_buf_free(&p->msg);
}

/* The state packs the continuation bytes still expected (bits 0-7) and
 * the range the next one must be in (lo: bits 8-15, hi: 16-23): the
 * second byte of E0, ED, F0 and F4 sequences is narrower (no overlongs,
 * no surrogates, nothing above U+10FFFF). */
int keel__utf8_step(uint32_t *state, const uint8_t *s, size_t n)
{
    unsigned need = *state & 0xff, lo = (*state >> 8) & 0xff, hi = (*state >> 16) & 0xff;
    size_t i = 0;
    while (i < n) {
        if (need == 0) {
            /* ASCII runs eight bytes at a time */
            while (i + 8 <= n) {
                uint64_t v;
                memcpy(&v, s + i, 8);
                if (v & 0x8080808080808080ull)
                    break;
                i += 8;
            }
            if (i >= n)
                break;
            uint8_t c = s[i++];
            if (c < 0x80)
                continue;
            if (c < 0xC2 || c > 0xF4)
                return -1;
            if (c < 0xE0) {
                need = 1, lo = 0x80, hi = 0xBF;
            } else if (c < 0xF0) {
                need = 2;
                lo = c == 0xE0 ? 0xA0 : 0x80;
                hi = c == 0xED ? 0x9F : 0xBF;
            } else {
                need = 3;
                lo = c == 0xF0 ? 0x90 : 0x80;
                hi = c == 0xF4 ? 0x8F : 0xBF;
            }
            continue;
        }
        uint8_t c = s[i++];
        if (c < lo || c > hi)
            return -1;
        need--;
        lo = 0x80, hi = 0xBF;
    }
    *state = need | (lo << 8) | (hi << 16);
    if (need == 0)
        *state = 0;
    return 0;
}

int keel__ws_close_code_ok(int code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

size_t keel__ws_header(uint8_t out[10], keel_ws_opcode op, uint64_t len)
{
    out[0] = (uint8_t)(0x80 | op);
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

static void unmask(uint8_t *p, size_t n, const uint8_t key[4])
{
    uint32_t k32;
    memcpy(&k32, key, 4);
    uint64_t k64 = ((uint64_t)k32 << 32) | k32;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        v ^= k64;
        memcpy(p + i, &v, 8);
    }
    for (; i < n; i++)
        p[i] ^= key[i & 3];
}

long keel__ws_parse(keel_ws_parser *p, uint8_t *buf, size_t len, keel_ws_event *ev)
{
    if (len < 2)
        return 0;
    int fin = buf[0] & 0x80;
    unsigned op = buf[0] & 0x0f;
    if (buf[0] & 0x70)
        return -1002; /* RSV bits: no extension was negotiated */
    if ((op > 2 && op < 8) || op > 10)
        return -1002; /* reserved opcode */
    int masked = buf[1] & 0x80;
    if (p->require_mask && !masked)
        return -1002; /* a client frame must be masked (5.1) */
    uint64_t plen = buf[1] & 0x7f;
    int control = op >= 8;
    if (control && (!fin || plen > 125))
        return -1002; /* control frames: never fragmented, at most 125 bytes */
    size_t hl = 2;
    if (plen == 126) {
        if (len < 4)
            return 0;
        plen = ((uint64_t)buf[2] << 8) | buf[3];
        hl = 4;
    } else if (plen == 127) {
        if (len < 10)
            return 0;
        if (buf[2] & 0x80)
            return -1002; /* the most significant bit must be 0 (5.2) */
        plen = 0;
        for (int i = 0; i < 8; i++)
            plen = (plen << 8) | buf[2 + i];
        hl = 10;
    }
    if (!control) {
        if (op == KEEL_WS_CONT && !p->in_message)
            return -1002; /* continuation without a start */
        if (op != KEEL_WS_CONT && p->in_message)
            return -1002; /* a new message inside a fragmented one */
        if (plen > p->max_frame)
            return -1009;
        uint64_t so_far = op == KEEL_WS_CONT ? p->msg.len : 0;
        if (plen > p->max_message - so_far || so_far > p->max_message)
            return -1009;
    }
    if (masked)
        hl += 4;
    if (len < hl || len - hl < plen)
        return 0;
    uint8_t *payload = buf + hl;
    if (masked)
        unmask(payload, (size_t)plen, buf + hl - 4);
    memset(ev, 0, sizeof(*ev));
    size_t n = (size_t)plen;
    long used = (long)(hl + n);
    switch (op) {
    case KEEL_WS_PING:
        ev->kind = KEEL__WS_EV_PING;
        ev->data = payload;
        ev->len = n;
        return used;
    case KEEL_WS_PONG:
        ev->kind = KEEL__WS_EV_PONG;
        ev->data = payload;
        ev->len = n;
        return used;
    case KEEL_WS_CLOSE:
        ev->kind = KEEL__WS_EV_CLOSE;
        if (n == 0) {
            ev->code = KEEL_WS_NO_STATUS;
            return used;
        }
        if (n == 1)
            return -1002; /* a code is two bytes */
        ev->code = (payload[0] << 8) | payload[1];
        if (!keel__ws_close_code_ok(ev->code))
            return -1002;
        {
            uint32_t st = 0;
            if (keel__utf8_step(&st, payload + 2, n - 2) < 0 || st != 0)
                return -1007;
        }
        ev->reason = (const char *)payload + 2;
        ev->reason_len = n - 2;
        return used;
    default:
        break;
    }
    /* data frames */
    if (op != KEEL_WS_CONT) {
        p->msg_op = (uint8_t)op;
        p->utf8 = 0;
        if (fin) {
            /* one frame, one message: straight from the input buffer */
            if (op == KEEL_WS_TEXT &&
                (keel__utf8_step(&p->utf8, payload, n) < 0 || p->utf8 != 0))
                return -1007;
            ev->kind = KEEL__WS_EV_MESSAGE;
            ev->op = (keel_ws_opcode)op;
            ev->data = payload;
            ev->len = n;
            return used;
        }
        p->in_message = 1;
        p->msg.len = 0;
    }
    if (p->msg_op == KEEL_WS_TEXT && keel__utf8_step(&p->utf8, payload, n) < 0)
        return -1007; /* fail fast: invalid in this fragment already */
    if (n)
        keel_buf_append(&p->msg, payload, n);
    if (!fin)
        return used;
    if (p->msg_op == KEEL_WS_TEXT && p->utf8 != 0)
        return -1007; /* the message ends inside a sequence */
    p->in_message = 0;
    ev->kind = KEEL__WS_EV_MESSAGE;
    ev->op = (keel_ws_opcode)p->msg_op;
    ev->data = (const uint8_t *)p->msg.data;
    ev->len = p->msg.len;
    return used;
}
