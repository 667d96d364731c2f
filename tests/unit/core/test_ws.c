/* test_ws.c — WebSocket sessions on an in-process server: the callbacks
 * and the per-connection pointer, on_close with the peer's code, sending
 * after the close refused, the connection counts, and keel_ws_broadcast
 * from another thread (one shared frame through every worker's mailbox to
 * every connection of the route). Ends with every loop closed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "keel/keel.h"
#include "loopback.h"
#include "testsrv.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int opened, closed_count, last_code, send_after_close_rc, user_seen;
static int tag = 42;

static void *open_user;
static int tag2 = 7;

static void on_open(keel_ws *ws)
{
    __atomic_store_n(&open_user, keel_ws_user(ws), __ATOMIC_SEQ_CST);
    keel_ws_set_user(ws, &tag);
    assert_ptr_equal(keel_ws_handler_data(ws), &mu);
    keel_ws_send_text(ws, "welcome", 7);
    testsrv_count(&mu, &opened);
}

#define FLOOD 2048
static int dropped, flood_other_rc, after_rc = 1;

static void on_message(keel_ws *ws, keel_ws_opcode op, const void *data, size_t len)
{
    if (keel_ws_user(ws) == &tag)
        __atomic_store_n(&user_seen, 1, __ATOMIC_SEQ_CST);
    if (len == 5 && memcmp(data, "flood", 5) == 0) {
        /* 16 MiB of droppable "typing" frames (numbered) to a client that
         * is not reading, with a non-droppable one every 256: past half
         * of WS_MAX_OUTBOUND the oldest droppable frames still queued
         * make room for the newest, the others are never dropped, the
         * connection stays, and an ordinary message still goes */
        static char big[8192];
        for (int i = 0; i < FLOOD; i++) {
            memcpy(big, &i, sizeof(i));
            int rc;
            if (i % 256 == 100) {
                rc = keel_ws_send_binary(ws, big, sizeof(big));
            } else {
                keel_ws_frame *f = keel_ws_frame_new(KEEL_WS_BINARY, big, sizeof(big));
                rc = keel_ws_send_frame_droppable(ws, f);
                keel_ws_frame_unref(f);
            }
            if (rc == KEEL_EBUSY)
                dropped++;
            else if (rc != 0)
                flood_other_rc = rc;
        }
        __atomic_store_n(&after_rc, keel_ws_send_text(ws, "after", 5), __ATOMIC_SEQ_CST);
        return;
    }
    keel_ws_send(ws, op, data, len);
}

static void on_close(keel_ws *ws, int code, const char *reason, size_t rlen)
{
    (void)reason;
    (void)rlen;
    __atomic_store_n(&send_after_close_rc, keel_ws_send_text(ws, "late", 4), __ATOMIC_SEQ_CST);
    __atomic_store_n(&last_code, code, __ATOMIC_SEQ_CST);
    testsrv_count(&mu, &closed_count);
}

static const keel_ws_handler handler = {on_open, on_message, on_close, &mu};

/* a route with a handler of its own: it accepts with a pointer */
static keel_flow accept_with_user(keel_req *r)
{
    return keel_ws_accept_protocol(r, &tag2, "keel.v1");
}

static const keel_route routes[] = {
    {.name = "ws", .method = "GET", .path = "/ws", .websocket = &handler},
    {.name = "ws2", .method = "GET", .path = "/ws2", .handler = accept_with_user,
     .websocket = &handler},
};

/* An AUTHN middleware: the handshake is a request like any other, so it
 * is refused before any upgrade without the token. */
static keel_flow need_token(keel_req *r, void *data)
{
    (void)data;
    keel_str t = keel_req_header(r, "x-token");
    if (t.ptr && t.len == 2 && memcmp(t.ptr, "ok", 2) == 0)
        return KEEL_NEXT;
    keel_respond_problem(r, 401, "no token");
    return KEEL_DONE;
}

static int ws_open(unsigned port, const char *path, const char *extra, char *head, size_t cap)
{
    int fd = connect_to(port, 5);
    char req[512];
    snprintf(req, sizeof(req),
             "GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n%s"
             "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             "Sec-WebSocket-Version: 13\r\n\r\n",
             path, extra);
    assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    size_t n = 0;
    while (n < cap - 1) {
        ssize_t r = read(fd, head + n, 1);
        if (r != 1)
            break;
        n++;
        if (n >= 4 && memcmp(head + n - 4, "\r\n\r\n", 4) == 0)
            break;
    }
    head[n] = 0;
    return fd;
}

static int ws_connect(unsigned port)
{
    char buf[1024];
    int fd = ws_open(port, "/ws", "X-Token: ok\r\n", buf, sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 101 "));
    assert_non_null(strstr(buf, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    return fd;
}

/* Reads one unmasked server frame; returns its opcode, payload in out. */
static int read_frame(int fd, char *out, size_t cap, size_t *len)
{
    unsigned char h[2];
    size_t got = 0;
    while (got < 2) {
        ssize_t r = read(fd, h + got, 2 - got);
        assert_true(r > 0);
        got += (size_t)r;
    }
    size_t n = h[1] & 0x7f;
    assert_true(n < 126 && n <= cap);
    got = 0;
    while (got < n) {
        ssize_t r = read(fd, out + got, n - got);
        assert_true(r > 0);
        got += (size_t)r;
    }
    *len = n;
    return h[0] & 0x0f;
}

static void send_masked(int fd, int op, const char *p, size_t n)
{
    unsigned char f[2 + 4 + 125];
    f[0] = (unsigned char)(0x80 | op);
    f[1] = (unsigned char)(0x80 | n);
    memcpy(f + 2, "\x01\x02\x03\x04", 4);
    for (size_t i = 0; i < n; i++)
        f[6 + i] = (unsigned char)(p[i] ^ f[2 + (i & 3)]);
    assert_int_equal(write(fd, f, 6 + n), (ssize_t)(6 + n));
}

static void test_sessions_and_broadcast(void **state)
{
    (void)state;
    keel_config cfg;
    testsrv_config(&cfg);
    cfg.workers = 2;
    cfg.log_level = KEEL_LOG_WARN;
    keel_server *s = testsrv_new(&cfg);
    assert_int_equal(keel_server_add_routes(s, routes, 2), 0);
    keel_middleware mw = {.name = "need_token", .phase = KEEL_PHASE_AUTHN,
                          .on_request = need_token};
    assert_int_equal(keel_server_use(s, &mw), 0);
    assert_int_equal(keel_server_start(s), 0);
    unsigned port = keel_server_port(s);
    char buf[1024];
    size_t n;

    /* refused by the middleware: a 401, never a 101 */
    int fd = ws_open(port, "/ws", "", buf, sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 401 "));
    close(fd);
    /* a handler that accepts with its own pointer */
    fd = ws_open(port, "/ws2", "X-Token: ok\r\nSec-WebSocket-Protocol: chat, keel.v1\r\n", buf,
                 sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 101 "));
    assert_non_null(strstr(buf, "Sec-WebSocket-Protocol: keel.v1\r\n"));
    assert_int_equal(read_frame(fd, buf, sizeof(buf), &n), KEEL_WS_TEXT);
    assert_ptr_equal(__atomic_load_n(&open_user, __ATOMIC_SEQ_CST), &tag2);
    close(fd);
    testsrv_wait_nonzero(&closed_count);
    assert_int_equal(__atomic_load_n(&last_code, __ATOMIC_SEQ_CST), KEEL_WS_ABNORMAL);
    __atomic_store_n(&closed_count, 0, __ATOMIC_SEQ_CST);

    /* not offered: none selected */
    fd = ws_open(port, "/ws2", "X-Token: ok\r\n", buf, sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 101 "));
    assert_null(strstr(buf, "Sec-WebSocket-Protocol"));
    close(fd);
    testsrv_wait_nonzero(&closed_count);
    __atomic_store_n(&closed_count, 0, __ATOMIC_SEQ_CST);

    int fds[4];
    for (int i = 0; i < 4; i++) {
        fds[i] = ws_connect(port);
        assert_int_equal(read_frame(fds[i], buf, sizeof(buf), &n), KEEL_WS_TEXT);
        assert_memory_equal(buf, "welcome", 7);
        assert_ptr_equal(__atomic_load_n(&open_user, __ATOMIC_SEQ_CST), NULL);
    }
    uint64_t t0 = keel_now_ms();
    while (keel_ws_connections(s) != 4 && keel_now_ms() - t0 < 5000)
        usleep(10000);
    assert_int_equal(keel_ws_connections(s), 4);

    send_masked(fds[0], KEEL_WS_TEXT, "echo", 4);
    assert_int_equal(read_frame(fds[0], buf, sizeof(buf), &n), KEEL_WS_TEXT);
    assert_memory_equal(buf, "echo", 4);
    assert_int_equal(__atomic_load_n(&user_seen, __ATOMIC_SEQ_CST), 1);

    /* droppable messages to a client that does not read */
    send_masked(fds[2], KEEL_WS_TEXT, "flood", 5);
    t0 = keel_now_ms();
    while (__atomic_load_n(&after_rc, __ATOMIC_SEQ_CST) == 1 && keel_now_ms() - t0 < 5000)
        usleep(10000);
    assert_int_equal(__atomic_load_n(&after_rc, __ATOMIC_SEQ_CST), 0);
    assert_int_equal(flood_other_rc, 0);
    /* nothing refused: an older droppable frame always made room */
    assert_int_equal(dropped, 0);
    int kept[FLOOD];
    size_t frames = 0;
    for (;;) { /* everything that was kept, then "after": no close */
        unsigned char h[4];
        assert_int_equal(read(fds[2], h, 2), 2);
        size_t len = h[1] & 0x7f;
        if (len == 126) {
            assert_int_equal(read(fds[2], h + 2, 2), 2);
            len = (size_t)(h[2] << 8 | h[3]);
        }
        assert_true((h[0] & 0x0f) != KEEL_WS_CLOSE);
        char tmp[8192];
        size_t got = 0;
        while (got < len) {
            ssize_t r = read(fds[2], tmp + got, len - got);
            assert_true(r > 0);
            got += (size_t)r;
        }
        if ((h[0] & 0x0f) == KEEL_WS_TEXT) {
            assert_memory_equal(tmp, "after", 5);
            break;
        }
        assert_int_equal(len, 8192);
        assert_true(frames < FLOOD);
        memcpy(&kept[frames++], tmp, sizeof(int));
    }
    /* in order; the newest kept; the oldest queued ones went: what the
     * socket had taken (a prefix) and then an unbroken run up to the
     * newest, but for the non-droppable ones, all there */
    assert_true(frames < FLOOD);
    assert_int_equal(kept[frames - 1], FLOOD - 1);
    int gaps = 0, next_nd = 100;
    for (size_t i = 0; i < frames; i++) {
        if (i)
            assert_true(kept[i] > kept[i - 1]);
        if (i && kept[i] != kept[i - 1] + 1) {
            /* a gap: only droppable frames are missing from it */
            for (int j = kept[i - 1] + 1; j < kept[i]; j++)
                assert_true(j % 256 != 100);
            gaps++;
        }
        if (kept[i] % 256 == 100) {
            assert_int_equal(kept[i], next_nd);
            next_nd += 256;
        }
    }
    assert_int_equal(next_nd, FLOOD + 100); /* every non-droppable one */
    assert_true(gaps >= 1);
    /* the run before the newest is one of droppable frames filling about
     * half of the 1 MiB cap: at least 40 of 8 KiB */
    size_t run = 1;
    while (run < frames && kept[frames - run - 1] == kept[frames - run] - 1)
        run++;
    assert_true(run >= 40);

    /* from this (non-loop) thread: one frame to every worker's connections */
    keel_ws_frame *f = keel_ws_frame_new(KEEL_WS_TEXT, "to all", 6);
    assert_int_equal(keel_ws_broadcast(s, &handler, f), 2);
    keel_ws_frame_unref(f);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(read_frame(fds[i], buf, sizeof(buf), &n), KEEL_WS_TEXT);
        assert_int_equal(n, 6);
        assert_memory_equal(buf, "to all", 6);
    }
    /* a broadcast to another route's connections reaches none of these */
    static const keel_ws_handler other = {0};
    f = keel_ws_frame_new(KEEL_WS_BINARY, "x", 1);
    keel_ws_broadcast(s, &other, f);
    keel_ws_frame_unref(f);

    /* the client closes with 4001: echoed, on_close sees the code */
    send_masked(fds[1], KEEL_WS_CLOSE, "\x0f\xa1" "bye", 5);
    assert_int_equal(read_frame(fds[1], buf, sizeof(buf), &n), KEEL_WS_CLOSE);
    assert_int_equal(n, 2);
    assert_memory_equal(buf, "\x0f\xa1", 2);
    testsrv_wait_nonzero(&closed_count);
    assert_int_equal(__atomic_load_n(&last_code, __ATOMIC_SEQ_CST), 4001);
    assert_int_equal(__atomic_load_n(&send_after_close_rc, __ATOMIC_SEQ_CST), KEEL_ECLOSED);
    close(fds[1]);

    /* the drain closes the others with 1001; they answer */
    keel_server_drain(s);
    for (int i = 0; i < 4; i++) {
        if (i == 1)
            continue;
        int op = read_frame(fds[i], buf, sizeof(buf), &n);
        assert_int_equal(op, KEEL_WS_CLOSE); /* nothing of the other route's broadcast first */
        assert_memory_equal(buf, "\x03\xe9", 2);
        send_masked(fds[i], KEEL_WS_CLOSE, "\x03\xe9", 2);
        close(fds[i]);
    }
    assert_int_equal(keel_server_wait(s, 5000), 0);
    assert_int_equal(opened, 6);
    assert_int_equal(closed_count, 4);
    assert_int_equal(keel_ws_connections(s), 0);
    testsrv_free(s);
    keel_config_close(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_sessions_and_broadcast)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
