/* framer.c — keel's WebSocket frame parser against wslay's (Debian
 * libwslay-dev), on the same bytes: a stream of masked client frames is
 * fed in 64 KiB reads (a copy into the reader's buffer, as a socket read
 * would be) and parsed into whole messages, payload unmasked, text
 * checked as UTF-8 by keel (wslay does not check UTF-8: keel does more
 * work). Prints messages per second and MiB/s for each.
 *
 *   bench/ws/run_framer.sh        (builds it against build/libkeel.a)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wslay/wslay.h>

#include "core/ws_internal.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint8_t *stream;
static size_t stream_len, pos;
static uint64_t messages;

/* n masked frames of `size` bytes, opcode op */
static void build(int op, size_t size, size_t n)
{
    size_t hl = size < 126 ? 6 : 8;
    stream_len = n * (hl + size);
    stream = malloc(stream_len);
    uint8_t *p = stream;
    for (size_t i = 0; i < n; i++) {
        p[0] = (uint8_t)(0x80 | op);
        if (size < 126) {
            p[1] = (uint8_t)(0x80 | size);
        } else {
            p[1] = 0x80 | 126;
            p[2] = (uint8_t)(size >> 8);
            p[3] = (uint8_t)size;
        }
        uint8_t key[4] = {0x12, 0x34, 0x56, (uint8_t)i};
        memcpy(p + hl - 4, key, 4);
        for (size_t j = 0; j < size; j++)
            p[hl + j] = (uint8_t)('a' + j % 26) ^ key[j & 3];
        p += hl + size;
    }
}

static double run_keel(void)
{
    keel_ws_parser ps;
    keel__ws_parser_init(&ps, 1 << 20, 1 << 20, 1);
    static uint8_t buf[1 << 17];
    size_t have = 0;
    messages = 0;
    double t0 = now_s();
    for (pos = 0; pos < stream_len || have;) {
        size_t take = stream_len - pos < 65536 ? stream_len - pos : 65536;
        memcpy(buf + have, stream + pos, take); /* the read */
        pos += take;
        have += take;
        size_t off = 0;
        for (;;) {
            keel_ws_event ev;
            long rc = keel__ws_parse(&ps, buf + off, have - off, &ev);
            if (rc < 0) {
                fprintf(stderr, "keel: error %ld\n", rc);
                exit(1);
            }
            if (rc == 0)
                break;
            off += (size_t)rc;
            if (ev.kind == KEEL__WS_EV_MESSAGE)
                messages++;
        }
        memmove(buf, buf + off, have - off);
        have -= off;
        if (take == 0)
            break;
    }
    double t = now_s() - t0;
    keel__ws_parser_close(&ps);
    return t;
}

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                       void *user)
{
    (void)flags;
    (void)user;
    if (pos == stream_len) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t take = stream_len - pos < len ? stream_len - pos : len;
    if (take > 65536)
        take = 65536;
    memcpy(buf, stream + pos, take);
    pos += take;
    return (ssize_t)take;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    (void)ctx, (void)data, (void)flags, (void)user;
    return (ssize_t)len;
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *user)
{
    (void)ctx, (void)arg, (void)user;
    messages++;
}

static double run_wslay(void)
{
    struct wslay_event_callbacks cb = {recv_cb, send_cb, NULL, NULL, NULL, NULL, on_msg};
    wslay_event_context_ptr ctx;
    wslay_event_context_server_init(&ctx, &cb, NULL);
    wslay_event_config_set_max_recv_msg_length(ctx, 1 << 20);
    pos = 0;
    messages = 0;
    double t0 = now_s();
    while (pos < stream_len)
        if (wslay_event_recv(ctx) != 0) {
            fprintf(stderr, "wslay: error\n");
            exit(1);
        }
    double t = now_s() - t0;
    wslay_event_context_free(ctx);
    return t;
}

static void bench(const char *name, int op, size_t size, size_t n)
{
    build(op, size, n);
    double bk = 1e9, bw = 1e9;
    uint64_t mk = 0, mw = 0;
    for (int r = 0; r < 5; r++) { /* best of 5: the machine is shared */
        double t = run_keel();
        mk = messages;
        if (t < bk)
            bk = t;
        t = run_wslay();
        mw = messages;
        if (t < bw)
            bw = t;
    }
    if (mk != n || mw != n) {
        fprintf(stderr, "%s: counted %llu / %llu of %zu\n", name, (unsigned long long)mk,
                (unsigned long long)mw, n);
        exit(1);
    }
    printf("| %s | %.1f M msg/s, %.0f MiB/s | %.1f M msg/s, %.0f MiB/s | %.2f |\n", name,
           (double)n / bk / 1e6, (double)stream_len / bk / 1048576.0, (double)n / bw / 1e6,
           (double)stream_len / bw / 1048576.0, bw / bk);
    free(stream);
}

int main(void)
{
    printf("| frames | keel | wslay | keel / wslay |\n|---|---|---|---|\n");
    bench("binary, 64 B", 2, 64, 2000000);
    bench("text, 64 B", 1, 64, 2000000);
    bench("binary, 1 KiB", 2, 1024, 200000);
    bench("text, 16 KiB", 1, 16384, 10000);
    return 0;
}
