/* test_ws_frame.c — the WebSocket frame parser (src/core/ws_frame.c):
 * a table of byte sequences -> verdicts (the event of the last frame, or
 * the close code the connection fails with), each fed whole and split at
 * every byte; the UTF-8 check; server frame headers; SHA-1 vectors and
 * the RFC 6455 accept key.
 *
 * Frames are written in hex; "{N*HH}" is N bytes HH. Cases without a
 * mask bit run with require_mask off unless `mask` says otherwise. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/ws_internal.h"
#include "table_check.h"

/* the table leaves trailing fields out: they default to 0 */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

typedef struct ws_case {
    const char *name;
    const char *hex;
    int verdict;          /* 0: every frame taken; else the close code */
    int kind;             /* last event when verdict is 0 */
    const char *payload;  /* hex of the last event's payload (NULL: skip) */
    int code;             /* CLOSE: the code */
    int mask;             /* require_mask */
    uint64_t max_frame, max_message; /* 0: 4096 */
} ws_case;

#define MSG KEEL__WS_EV_MESSAGE
#define PING KEEL__WS_EV_PING
#define PONG KEEL__WS_EV_PONG
#define CLOSE KEEL__WS_EV_CLOSE
#define NONE KEEL__WS_EV_NONE

static const ws_case cases[] = {
    {"text", "81 05 68656c6c6f", 0, MSG, "68656c6c6f"},
    {"binary", "82 03 000102", 0, MSG, "000102"},
    {"empty text", "81 00", 0, MSG, ""},
    {"rfc masked Hello", "81 85 37fa213d 7f9f4d5158", 0, MSG, "48656c6c6f", 0, 1},
    {"masked long payload", "82 8a 01020304 {10*00}", 0, MSG, "01020304010203040102", 0, 1},
    {"unmasked client frame", "81 05 68656c6c6f", 1002, 0, NULL, 0, 1},
    {"rsv1", "c1 00", 1002},
    {"rsv2", "a1 00", 1002},
    {"rsv3", "91 00", 1002},
    {"reserved opcode 3", "83 00", 1002},
    {"reserved opcode 7", "87 00", 1002},
    {"reserved opcode b", "8b 00", 1002},
    {"reserved opcode f", "8f 00", 1002},
    {"fragmented ping", "09 00", 1002},
    {"fragmented close", "08 02 03e8", 1002},
    {"ping of 126 bytes", "89 7e 007e {126*61}", 1002},
    {"ping of 125 bytes", "89 7d {125*61}", 0, PING, NULL},
    {"pong", "8a 02 6869", 0, PONG, "6869"},
    {"continuation without start", "80 00", 1002},
    {"continuation without start, not final", "00 01 61", 1002},
    {"new message inside a fragmented one", "01 01 61 81 01 62", 1002},
    {"new binary inside a fragmented text", "01 01 61 02 01 62", 1002},
    {"fragmented text", "01 03 68656c 00 00 80 02 6c6f", 0, MSG, "68656c6c6f"},
    {"first fragment only", "01 03 68656c", 0, NONE, NULL},
    {"ping inside a fragmented message", "01 02 6865 89 01 78", 0, PING, "78"},
    {"ping inside, then the end", "01 02 6865 89 01 78 80 03 6c6c6f", 0, MSG, "68656c6c6f"},
    {"close inside a fragmented message", "01 01 61 88 02 03e8", 0, CLOSE, NULL, 1000},
    {"fragmented binary", "02 01 ff 80 01 fe", 0, MSG, "fffe"},
    {"invalid utf-8", "81 02 c328", 1007},
    {"overlong", "81 02 c080", 1007},
    {"surrogate", "81 03 eda080", 1007},
    {"above U+10FFFF", "81 04 f4908080", 1007},
    {"byte ff", "81 01 ff", 1007},
    {"4-byte emoji", "81 04 f09f9880", 0, MSG, "f09f9880"},
    {"text ends inside a sequence", "81 01 e2", 1007},
    {"utf-8 split across fragments", "01 01 e2 80 02 82ac", 0, MSG, "e282ac"},
    {"utf-8 split, 3 fragments", "01 01 f0 00 02 9f98 80 01 80", 0, MSG, "f09f9880"},
    {"invalid utf-8 split across fragments", "01 01 e2 80 02 28a1", 1007},
    {"invalid in the first fragment", "01 01 ff", 1007},
    {"message ends inside a sequence", "01 01 e2 80 00", 1007},
    {"binary is not checked", "82 02 c328", 0, MSG, "c328"},
    {"16-bit length", "82 7e 007e {126*61}", 0, MSG, NULL},
    {"64-bit length", "82 7f 0000000000000080 {128*62}", 0, MSG, NULL},
    {"64-bit length top bit", "82 7f 8000000000000000", 1002},
    {"64-bit length top bit, rest 0", "82 7f 8000000000000005 0102030405", 1002},
    {"frame over WS_MAX_FRAME", "82 7f 0000000000100000", 1009},
    {"frame over WS_MAX_FRAME, 16-bit", "82 7e 0080", 1009, 0, NULL, 0, 0, 100, 150},
    {"message over WS_MAX_MESSAGE", "02 64 {100*00} 80 64 {100*00}", 1009, 0, NULL, 0, 0, 100, 150},
    {"message at WS_MAX_MESSAGE", "02 64 {100*00} 80 32 {50*00}", 0, MSG, NULL, 0, 0, 100, 150},
    {"close without payload", "88 00", 0, CLOSE, NULL, 1005},
    {"close of 1 byte", "88 01 03", 1002},
    {"close 1000", "88 02 03e8", 0, CLOSE, NULL, 1000},
    {"close 1000 with reason", "88 04 03e8 6f6b", 0, CLOSE, NULL, 1000},
    {"close reason not utf-8", "88 03 03e8 ff", 1007},
    {"close 1001", "88 02 03e9", 0, CLOSE, NULL, 1001},
    {"close 1002", "88 02 03ea", 0, CLOSE, NULL, 1002},
    {"close 1003", "88 02 03eb", 0, CLOSE, NULL, 1003},
    {"close 1007", "88 02 03ef", 0, CLOSE, NULL, 1007},
    {"close 1008", "88 02 03f0", 0, CLOSE, NULL, 1008},
    {"close 1009", "88 02 03f1", 0, CLOSE, NULL, 1009},
    {"close 1010", "88 02 03f2", 0, CLOSE, NULL, 1010},
    {"close 1011", "88 02 03f3", 0, CLOSE, NULL, 1011},
    {"close 1013", "88 02 03f5", 0, CLOSE, NULL, 1013},
    {"close 3000", "88 02 0bb8", 0, CLOSE, NULL, 3000},
    {"close 4999", "88 02 1387", 0, CLOSE, NULL, 4999},
    {"close 0", "88 02 0000", 1002},
    {"close 999", "88 02 03e7", 1002},
    {"close 1004", "88 02 03ec", 1002},
    {"close 1005", "88 02 03ed", 1002},
    {"close 1006", "88 02 03ee", 1002},
    {"close 1015", "88 02 03f7", 1002},
    {"close 1016", "88 02 03f8", 1002},
    {"close 2999", "88 02 0bb7", 1002},
    {"close 5000", "88 02 1388", 1002},
    {"close 65535", "88 02 ffff", 1002},
};

/* Hex with spaces and {N*HH} runs into out; returns the length. */
static size_t unhex(const char *s, uint8_t *out)
{
    size_t n = 0;
    while (*s) {
        if (*s == ' ') {
            s++;
        } else if (*s == '{') {
            char *e;
            unsigned long cnt = strtoul(s + 1, &e, 10);
            unsigned v;
            sscanf(e + 1, "%2x", &v);
            for (unsigned long i = 0; i < cnt; i++)
                out[n++] = (uint8_t)v;
            s = strchr(s, '}') + 1;
        } else {
            unsigned v;
            sscanf(s, "%2x", &v);
            out[n++] = (uint8_t)v;
            s += 2;
        }
    }
    return n;
}

/* Feeds buf in pieces of growing size (split = 1: every prefix; else
 * all at once). Returns 0 or the close code; *last is the last event. */
static int run(const ws_case *c, uint8_t *buf, size_t len, int split, keel_ws_event *last,
               uint8_t *payload_copy, size_t *plen)
{
    keel_ws_parser p;
    keel__ws_parser_init(&p, c->max_frame ? c->max_frame : 4096,
                         c->max_message ? c->max_message : 4096, c->mask);
    size_t off = 0, end = split ? off + 1 : len;
    int verdict = 0;
    memset(last, 0, sizeof(*last));
    while (off < len) {
        keel_ws_event ev;
        long rc = keel__ws_parse(&p, buf + off, end - off, &ev);
        if (rc < 0) {
            verdict = (int)-rc;
            break;
        }
        if (rc == 0) {
            if (end == len) {
                verdict = -1; /* incomplete at the end */
                break;
            }
            end++;
            continue;
        }
        off += (size_t)rc;
        if (end < off)
            end = off;
        if (split && end == off && off < len)
            end++;
        *last = ev;
        *plen = ev.len;
        if (ev.len)
            memcpy(payload_copy, ev.data, ev.len);
    }
    keel__ws_parser_close(&p);
    return verdict;
}

static void test_frame_table(void **state)
{
    (void)state;
    static uint8_t buf[8192], copy[8192], orig[8192], want[8192];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const ws_case *c = &cases[i];
        size_t len = unhex(c->hex, orig);
        for (int split = 0; split < 2; split++) {
            memcpy(buf, orig, len);
            keel_ws_event ev;
            size_t plen = 0;
            int v = run(c, buf, len, split, &ev, copy, &plen);
            if (v != c->verdict) {
                case_fail(c->name, "split %d: verdict %d, want %d", split, v, c->verdict);
                continue;
            }
            if (v)
                continue;
            if (ev.kind != c->kind)
                case_fail(c->name, "split %d: event %d, want %d", split, ev.kind, c->kind);
            if (c->kind == CLOSE && ev.code != c->code)
                case_fail(c->name, "close code %d, want %d", ev.code, c->code);
            if (c->payload) {
                size_t wl = unhex(c->payload, want);
                if (wl != plen || memcmp(want, copy, wl) != 0)
                    case_fail(c->name, "split %d: payload differs (%zu bytes, want %zu)", split,
                              plen, wl);
            }
        }
    }
    assert_int_equal(failures, 0);
}

static void test_utf8_every_split(void **state)
{
    (void)state;
    const char *s = "aé€😀z";
    size_t n = strlen(s);
    for (size_t cut = 0; cut <= n; cut++) {
        uint32_t st = 0;
        assert_int_equal(keel__utf8_step(&st, (const uint8_t *)s, cut), 0);
        assert_int_equal(keel__utf8_step(&st, (const uint8_t *)s + cut, n - cut), 0);
        assert_int_equal(st, 0);
    }
    uint32_t st = 0;
    /* 20 ASCII bytes then an invalid byte: the 8-byte fast path stops */
    assert_int_equal(keel__utf8_step(&st, (const uint8_t *)"abcdefghijklmnopqrst\xff", 21), -1);
}

static void test_header(void **state)
{
    (void)state;
    uint8_t h[10];
    assert_int_equal(keel__ws_header(h, KEEL_WS_TEXT, 5), 2);
    assert_int_equal(h[0], 0x81);
    assert_int_equal(h[1], 5);
    assert_int_equal(keel__ws_header(h, KEEL_WS_BINARY, 126), 4);
    assert_int_equal(h[1], 126);
    assert_int_equal(h[2] << 8 | h[3], 126);
    assert_int_equal(keel__ws_header(h, KEEL_WS_BINARY, 65535), 4);
    assert_int_equal(keel__ws_header(h, KEEL_WS_BINARY, 65536), 10);
    assert_int_equal(h[1], 127);
    assert_int_equal(h[7], 1);
    assert_int_equal(h[9], 0);
    /* a server frame parses back with require_mask off */
    uint8_t f[2 + 65536 + 8] = {0};
    size_t hl = keel__ws_header(f, KEEL_WS_BINARY, 65536);
    keel_ws_parser p;
    keel__ws_parser_init(&p, 1 << 20, 1 << 20, 0);
    keel_ws_event ev;
    assert_int_equal(keel__ws_parse(&p, f, hl + 65536, &ev), (long)(hl + 65536));
    assert_int_equal(ev.kind, MSG);
    assert_int_equal(ev.len, 65536);
    keel__ws_parser_close(&p);
}

static void test_shared_frame(void **state)
{
    (void)state;
    keel_ws_frame *f = keel_ws_frame_new(KEEL_WS_TEXT, "hi", 2);
    size_t n;
    const uint8_t *b = keel_ws_frame_bytes(f, &n);
    assert_int_equal(n, 4);
    assert_memory_equal(b, "\x81\x02hi", 4);
    assert_int_equal(keel_ws_frame_payload_len(f), 2);
    keel_ws_frame_ref(f);
    keel_ws_frame_unref(f);
    keel_ws_frame_unref(f);
    keel_ws_frame_unref(NULL);
    assert_null(keel_ws_frame_new(KEEL_WS_PING, "", 0));
}

static void hex(const uint8_t *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void test_sha1_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *digest;
    } v[] = {
        {"", "da39a3ee5e6b4b0d3255bfef95601890afd80709"},
        {"abc", "a9993e364706816aba3e25717850c26c9cd0d89d"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "84983e441c3bd26ebaae4aa1f95129e5e54670f1"},
        {"The quick brown fox jumps over the lazy dog",
         "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"},
    };
    uint8_t d[20];
    char h[41];
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        keel_sha1(v[i].in, strlen(v[i].in), d);
        hex(d, 20, h);
        assert_string_equal(h, v[i].digest);
    }
    /* padding boundaries: lengths around one and two blocks */
    static const struct {
        size_t n;
        const char *digest;
    } b[] = {
        {55, "8ae2d46729cfe68ff927af5eec9c7d1b66d65ac2"},
        {56, "636e2ec698dac903498e648bd2f3af641d3c88cb"},
        {63, "6d942da0c4392b123528f2905c713a3ce28364bd"},
        {64, "c6138d514ffa2135bfce0ed0b8fac65669917ec7"},
        {65, "69bd728ad6e13cd76ff19751fde427b00e395746"},
        {119, "41c89d06001bab4ab78736b44efe7ce18ce6ae08"},
        {120, "d3dbd653bd8597b7475321b60a36891278e6a04a"},
    };
    uint8_t in[128];
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (uint8_t)(i % 251);
    for (size_t i = 0; i < sizeof(b) / sizeof(b[0]); i++) {
        keel_sha1(in, b[i].n, d);
        hex(d, 20, h);
        assert_string_equal(h, b[i].digest);
    }
    /* a million 'a' */
    char *m = malloc(1000000);
    memset(m, 'a', 1000000);
    keel_sha1(m, 1000000, d);
    free(m);
    hex(d, 20, h);
    assert_string_equal(h, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
}

static void test_accept_key(void **state)
{
    (void)state;
    char out[29];
    keel_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, out); /* RFC 6455 section 1.3 */
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_table),   cmocka_unit_test(test_utf8_every_split),
        cmocka_unit_test(test_header),        cmocka_unit_test(test_shared_frame),
        cmocka_unit_test(test_sha1_vectors),  cmocka_unit_test(test_accept_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
