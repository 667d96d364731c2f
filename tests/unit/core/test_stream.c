/* test_stream.c — streamed request bodies (KEEL_ROUTE_STREAM_BODY,
 * keel_req_body_stream with pause/resume) and keel_res_sendfile, on a real
 * loopback server: Content-Length and chunked bodies delivered whole
 * through pauses, the next request on the same connection after a
 * streamed body, the maximum (413 both ways), and a sendfile body of own
 * bytes and file ranges, large enough to fill the socket, plus HEAD. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loopback.h"
#include "testsrv.h"

#define MAX_BODY (1u << 20)

typedef struct up {
    uint64_t n;
    uint32_t sum;
    int pauses;
} up;

static void noop(void *arg)
{
    (void)arg;
}

static void resumed(keel_req *r, void *arg, int status)
{
    (void)arg;
    if (status == 0)
        keel_req_body_resume(r);
}

static int on_data(keel_req *r, const char *p, size_t n, void *arg)
{
    up *u = arg;
    for (size_t i = 0; i < n; i++)
        u->sum = u->sum * 31 + (unsigned char)p[i];
    u->n += n;
    /* every other chunk: pause until a trip through the work pool */
    if (u->pauses++ % 2 == 0 && keel_req_submit(r, noop, resumed, u) == 0)
        keel_req_body_pause(r);
    return 0;
}

static void on_end(keel_req *r, int status, void *arg)
{
    up *u = arg;
    if (status < 0)
        return; /* keel answers */
    char out[64];
    snprintf(out, sizeof(out), "n=%llu sum=%u", (unsigned long long)u->n, u->sum);
    keel_respond_text(r, 200, out);
}

static keel_flow h_up(keel_req *r)
{
    up *u = KEEL_REQ_JOB(r, up, NULL);
    int rc = keel_req_body_stream(r, MAX_BODY, on_data, on_end, u);
    if (rc == KEEL_ETOOBIG) {
        keel_respond_problem(r, 413, "too big");
        return KEEL_DONE;
    }
    assert_int_equal(rc, 0);
    return keel_req_is_finished(r) ? KEEL_DONE : KEEL_SUSPEND;
}

static char file_path[64];
#define FILE_SIZE (8u << 20)

static keel_flow h_file(keel_req *r)
{
    int fd = open(file_path, O_RDONLY);
    assert_true(fd >= 0);
    keel_sendfile_seg segs[] = {
        {"<", 0, 1}, {NULL, 2, 4}, {"|", 0, 1}, {NULL, 0, FILE_SIZE}, {">", 0, 1}};
    keel_res_sendfile(r, 200, "application/octet-stream", fd, segs, 5);
    return KEEL_DONE;
}

static keel_flow h_plain(keel_req *r)
{
    keel_str b = keel_req_body(r);
    char out[64];
    snprintf(out, sizeof(out), "plain %zu", b.len);
    keel_respond_text(r, 200, out);
    return KEEL_DONE;
}

static const keel_route routes[] = {
    {.name = "up", .method = "POST", .path = "/up", .handler = h_up,
     .flags = KEEL_ROUTE_STREAM_BODY},
    {.name = "file", .method = "GET", .path = "/file", .handler = h_file},
    {.name = "plain", .method = "POST", .path = "/plain", .handler = h_plain},
};

static keel_server *start(void)
{
    keel_config cfg;
    testsrv_config(&cfg);
    cfg.log_level = KEEL_LOG_ERROR;
    keel_server *s = testsrv_new(&cfg);
    keel_config_close(&cfg);
    assert_int_equal(keel_server_add_routes(s, routes, 3), 0);
    assert_int_equal(keel_server_start(s), 0);
    return s;
}

static uint32_t checksum(const char *p, size_t n)
{
    uint32_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum = sum * 31 + (unsigned char)p[i];
    return sum;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        assert_true(w > 0);
        p += w;
        n -= (size_t)w;
    }
}

static void test_content_length_body_then_next_request(void **state)
{
    (void)state;
    keel_server *s = start();
    size_t n = 300000;
    char *body = malloc(n);
    for (size_t i = 0; i < n; i++)
        body[i] = (char)(i * 7 + (i >> 9));
    char head[128];
    int hl = snprintf(head, sizeof(head), "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n",
                      n);
    int fd = connect_to(keel_server_port(s), 5);
    write_all(fd, head, (size_t)hl);
    write_all(fd, body, n);
    /* the next request right behind the body, on the same connection */
    const char *next = "POST /plain HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                       "Connection: close\r\n\r\nabc";
    write_all(fd, next, strlen(next));
    char out[4096];
    loopback_read_all(fd, out, sizeof(out));
    close(fd);
    char want[64];
    snprintf(want, sizeof(want), "n=%zu sum=%u", n, checksum(body, n));
    assert_non_null(strstr(out, want));
    assert_non_null(strstr(out, "plain 3"));
    assert_int_equal(loopback_count(out, "HTTP/1.1 200"), 2);
    free(body);
    testsrv_stop(s);
}

static void test_chunked_body(void **state)
{
    (void)state;
    keel_server *s = start();
    int fd = connect_to(keel_server_port(s), 5);
    const char *req = "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                      "Connection: close\r\n\r\n";
    write_all(fd, req, strlen(req));
    keel_buf all = {0};
    char chunk[70000];
    for (int k = 0; k < 5; k++) {
        size_t cl = 1000 + (size_t)k * 15000;
        for (size_t i = 0; i < cl; i++)
            chunk[i] = (char)('a' + (i + (size_t)k) % 26);
        keel_buf_append(&all, chunk, cl);
        char sz[32];
        int sl = snprintf(sz, sizeof(sz), "%zx;ext=1\r\n", cl);
        write_all(fd, sz, (size_t)sl);
        write_all(fd, chunk, cl);
        write_all(fd, "\r\n", 2);
    }
    write_all(fd, "0\r\nX-Trailer: 1\r\n\r\n", 20);
    char out[4096];
    loopback_read_all(fd, out, sizeof(out));
    close(fd);
    char want[64];
    snprintf(want, sizeof(want), "n=%zu sum=%u", all.len, checksum(all.data, all.len));
    assert_non_null(strstr(out, want));
    keel_buf_free(&all);
    testsrv_stop(s);
}

static void test_over_the_maximum(void **state)
{
    (void)state;
    keel_server *s = start();
    char out[4096];
    char req[256];
    snprintf(req, sizeof(req), "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %u\r\n"
                               "Connection: close\r\n\r\n",
             MAX_BODY + 1);
    loopback_exchange(keel_server_port(s), req, out, sizeof(out));
    assert_int_equal(loopback_status(out), 413);
    /* chunked: found out while reading */
    int fd = connect_to(keel_server_port(s), 5);
    const char *h = "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    write_all(fd, h, strlen(h));
    char *chunk = malloc(65536 + 16);
    memset(chunk, 'x', 65536 + 16);
    int got = 0;
    for (int k = 0; k < 40 && !got; k++) {
        write_all(fd, "10000\r\n", 7);
        if (write(fd, chunk, 65536) < 0 || write(fd, "\r\n", 2) < 0)
            break; /* the server closed after answering */
    }
    free(chunk);
    loopback_read_all(fd, out, sizeof(out));
    close(fd);
    assert_int_equal(loopback_status(out), 413);
    testsrv_stop(s);
}

static void test_sendfile(void **state)
{
    (void)state;
    snprintf(file_path, sizeof(file_path), "/tmp/keel-test-sendfile-XXXXXX");
    int tf = mkstemp(file_path);
    assert_true(tf >= 0);
    char *data = malloc(FILE_SIZE);
    for (size_t i = 0; i < FILE_SIZE; i++)
        data[i] = (char)(i % 251);
    write_all(tf, data, FILE_SIZE);
    close(tf);
    keel_server *s = start();
    int fd = connect_to(keel_server_port(s), 10);
    loopback_send_get(fd, "/file");
    usleep(200 * 1000); /* let the socket fill: the writability path runs */
    size_t cap = FILE_SIZE + 8192;
    char *out = malloc(cap);
    size_t n = loopback_read_all(fd, out, cap);
    close(fd);
    char *bodyp = strstr(out, "\r\n\r\n");
    assert_non_null(bodyp);
    bodyp += 4;
    size_t bl = n - (size_t)(bodyp - out);
    assert_int_equal(bl, 1 + 4 + 1 + FILE_SIZE + 1);
    char cl[64];
    snprintf(cl, sizeof(cl), "Content-Length: %u\r\n", 1 + 4 + 1 + FILE_SIZE + 1);
    assert_non_null(strstr(out, cl));
    assert_memory_equal(bodyp, "<\x02\x03\x04\x05|", 6);
    assert_memory_equal(bodyp + 6, data, FILE_SIZE);
    assert_int_equal(bodyp[6 + FILE_SIZE], '>');
    /* HEAD: the length, no body */
    char small[4096];
    loopback_exchange(keel_server_port(s), "HEAD /file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                      small, sizeof(small));
    assert_int_equal(loopback_status(small), 200);
    assert_non_null(strstr(small, cl));
    assert_true(strlen(strstr(small, "\r\n\r\n")) == 4);
    free(out);
    free(data);
    unlink(file_path);
    testsrv_stop(s);
}

static void test_stream_route_with_schema_refused(void **state)
{
    (void)state;
    static const keel_route bad[] = {{.name = "bad", .method = "POST", .path = "/bad",
                                      .handler = h_up, .request_schema = "{\"type\":\"object\"}",
                                      .flags = KEEL_ROUTE_STREAM_BODY}};
    keel_config cfg;
    testsrv_config(&cfg);
    keel_server *s = testsrv_new(&cfg);
    keel_config_close(&cfg);
    assert_int_equal(keel_server_add_routes(s, bad, 1), 0);
    char buf[2048] = "";
    FILE *f = fmemopen(buf, sizeof(buf) - 1, "w");
    assert_int_equal(keel_server_check_routes(s, f), 1);
    fclose(f);
    assert_non_null(strstr(buf, "body is streamed"));
    testsrv_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_length_body_then_next_request),
        cmocka_unit_test(test_chunked_body),
        cmocka_unit_test(test_over_the_maximum),
        cmocka_unit_test(test_sendfile),
        cmocka_unit_test(test_stream_route_with_schema_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
