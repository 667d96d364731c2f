/* fuzz_ws_frame.c — libFuzzer driver for the WebSocket frame parser
 * (src/core/ws_frame.c): arbitrary bytes as a stream of client frames,
 * through fragment reassembly and the UTF-8 state across fragments.
 *
 * The first input byte picks the options (require_mask, small or large
 * limits, and how the stream is cut into reads); the rest is the stream.
 * It is parsed the way the connection does: whole frames from a heap copy
 * of exactly the bytes available, a partial frame waiting for more. The
 * same stream is then parsed again in one piece and must give the same
 * events and the same verdict. Checks: no crash or overread; a result is
 * 0, a frame size within what was given, or -1002/-1007/-1009; a message
 * is never larger than the limits; text messages are valid UTF-8; close
 * codes are 1005 or allowed ones; control payloads at most 125 bytes.
 *
 *   make build/fuzz/fuzz_ws_frame
 *   build/fuzz/fuzz_ws_frame -dict=tests/fuzz/fuzz_ws_frame.dict tests/fuzz/corpus/fuzz_ws_frame
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ws_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_ws_frame: check failed: %s (line %d)\n",     \
                    #cond, __LINE__);                                          \
            abort();                                                           \
        }                                                                      \
    } while (0)

/* A digest of the events, to compare the two parses. */
typedef struct trace {
    uint64_t hash;
    size_t events;
    long verdict;
} trace;

static void mix(trace *t, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        t->hash = (t->hash ^ b[i]) * 1099511628211ull;
}

static void check_event(const keel_ws_parser *p, const keel_ws_event *ev, trace *t)
{
    t->events++;
    mix(t, &ev->kind, sizeof(ev->kind));
    mix(t, &ev->len, sizeof(ev->len));
    if (ev->len)
        mix(t, ev->data, ev->len);
    switch (ev->kind) {
    case KEEL__WS_EV_MESSAGE: {
        CHECK(ev->op == KEEL_WS_TEXT || ev->op == KEEL_WS_BINARY);
        CHECK(ev->len <= p->max_message);
        if (ev->op == KEEL_WS_TEXT) {
            uint32_t st = 0;
            CHECK(keel__utf8_step(&st, ev->data, ev->len) == 0 && st == 0);
        }
        break;
    }
    case KEEL__WS_EV_PING:
    case KEEL__WS_EV_PONG:
        CHECK(ev->len <= 125);
        break;
    case KEEL__WS_EV_CLOSE:
        CHECK(ev->code == KEEL_WS_NO_STATUS || keel__ws_close_code_ok(ev->code));
        CHECK(ev->reason_len <= 123);
        mix(t, &ev->code, sizeof(ev->code));
        break;
    case KEEL__WS_EV_NONE:
        CHECK(p->in_message);
        break;
    default:
        CHECK(0);
    }
}

/* Parses the stream as reads of `step` bytes (0: all at once). */
static void parse_stream(const uint8_t *in, size_t n, int mask, uint64_t maxf, uint64_t maxm,
                         size_t step, trace *t)
{
    keel_ws_parser p;
    keel__ws_parser_init(&p, maxf, maxm, mask);
    uint8_t *buf = malloc(n ? n : 1);
    memcpy(buf, in, n);
    size_t off = 0, avail = step ? (step < n ? step : n) : n;
    memset(t, 0, sizeof(*t));
    t->hash = 14695981039346656037ull;
    for (;;) {
        /* exactly the bytes available, in a heap block of that size */
        size_t have = avail - off;
        uint8_t *view = malloc(have ? have : 1);
        memcpy(view, buf + off, have);
        keel_ws_event ev;
        long rc = keel__ws_parse(&p, view, have, &ev);
        if (rc < 0) {
            CHECK(rc == -1002 || rc == -1007 || rc == -1009);
            t->verdict = rc;
            free(view);
            break;
        }
        if (rc == 0) {
            free(view);
            if (avail == n)
                break; /* a partial frame at the end */
            avail = avail + step < n ? avail + step : n;
            continue;
        }
        CHECK((size_t)rc <= have);
        check_event(&p, &ev, t);
        free(view);
        off += (size_t)rc;
        keel__ws_parser_trim(&p);
    }
    free(buf);
    keel__ws_parser_close(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t opt = data[0];
    int mask = opt & 1;
    uint64_t maxf = (opt & 2) ? 64 : 1 << 20;
    uint64_t maxm = (opt & 4) ? (maxf < 200 ? 200 : maxf) : 1 << 20;
    size_t step = (size_t)(opt >> 3) + 1; /* 1 .. 32 bytes per read */
    trace a, b;
    parse_stream(data + 1, size - 1, mask, maxf, maxm, step, &a);
    parse_stream(data + 1, size - 1, mask, maxf, maxm, 0, &b);
    CHECK(a.verdict == b.verdict);
    CHECK(a.events == b.events);
    CHECK(a.hash == b.hash);
    return 0;
}
