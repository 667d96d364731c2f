/* otlp_sink.c — the OTLP/HTTP receiver of bench/trace.sh: answers every
 * POST with 200 {} and counts requests, spans (occurrences of "spanId" in
 * the raw body: no JSON parsing) and body bytes; prints
 * "requests spans bytes" on SIGTERM/SIGINT, like tests/e2e/otlp_receiver.py's
 * counting mode, at a small fraction of its CPU (the benchmark shares two
 * cores with keel and wrk: a receiver that cannot keep up makes keel drop
 * spans, and the "tracing on" rounds then do less export work).
 *
 *   build/bench/otlp_sink PORT
 *
 * One thread, epoll, keep-alive, HTTP/1.1 with Content-Length (what libcurl
 * sends for a body it is given whole); anything else is answered 400 and
 * the connection closed. Loopback only. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_HEAD 16384
#define MAX_BODY (64u << 20)

typedef struct conn {
    int fd;
    char *buf;       /* the head, then the body */
    size_t len, cap;
    size_t head_len; /* 0: the head is not complete yet */
    size_t body_len;
} conn;

static volatile sig_atomic_t stop;
static unsigned long long n_requests, n_spans, n_bytes;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void conn_close(conn *c)
{
    close(c->fd);
    free(c->buf);
    free(c);
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* the answer is tiny: the socket buffer has room in practice */
            usleep(100);
            continue;
        }
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static unsigned long long count_spans(const char *p, size_t n)
{
    static const char key[] = "\"spanId\"";
    unsigned long long k = 0;
    const char *end = p + n;
    while ((p = memmem(p, (size_t)(end - p), key, sizeof(key) - 1))) {
        k++;
        p += sizeof(key) - 1;
    }
    return k;
}

/* The head is buf[0, head_len): the body's length, -1 when none is given
 * or the request is one this sink does not take. */
static long long content_length(const char *h, size_t n)
{
    if (n < 5 || strncmp(h, "POST ", 5))
        return -1;
    long long len = -1;
    const char *p = memchr(h, '\n', n), *end = h + n;
    while (p && p + 1 < end) {
        p++;
        if (!strncasecmp(p, "content-length:", 15))
            len = strtoll(p + 15, NULL, 10);
        else if (!strncasecmp(p, "transfer-encoding:", 18))
            return -1;
        p = memchr(p, '\n', (size_t)(end - p));
    }
    return len;
}

/* 0: keep the connection, -1: close it. */
static int on_data(conn *c)
{
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             "Content-Length: 2\r\n\r\n{}";
    static const char bad[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                              "Connection: close\r\n\r\n";
    for (;;) {
        if (!c->head_len) {
            char *e = c->len >= 4 ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
            if (!e)
                return c->len > MAX_HEAD ? (send_all(c->fd, bad, sizeof(bad) - 1), -1) : 0;
            c->head_len = (size_t)(e - c->buf) + 4;
            long long cl = content_length(c->buf, c->head_len);
            if (cl < 0 || (unsigned long long)cl > MAX_BODY) {
                send_all(c->fd, bad, sizeof(bad) - 1);
                return -1;
            }
            c->body_len = (size_t)cl;
        }
        size_t whole = c->head_len + c->body_len;
        if (c->len < whole)
            return 0;
        n_requests++;
        n_bytes += c->body_len;
        n_spans += count_spans(c->buf + c->head_len, c->body_len);
        if (send_all(c->fd, ok, sizeof(ok) - 1) < 0)
            return -1;
        memmove(c->buf, c->buf + whole, c->len - whole); /* a pipelined next one */
        c->len -= whole;
        c->head_len = 0;
    }
}

static int on_readable(conn *c)
{
    for (;;) {
        if (c->cap - c->len < 65536) {
            size_t want = c->head_len ? c->head_len + c->body_len : 0;
            size_t cap = c->cap ? c->cap * 2 : 131072;
            while (cap < want || cap - c->len < 65536)
                cap *= 2;
            char *nb = realloc(c->buf, cap);
            if (!nb)
                return -1;
            c->buf = nb;
            c->cap = cap;
        }
        ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (r <= 0)
            return -1;
        c->len += (size_t)r;
        if (on_data(c) < 0)
            return -1;
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: epoll_wait returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(ls, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(ls, 128) < 0) {
        perror("otlp_sink: bind/listen");
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event evs[64];
    while (!stop) {
        int n = epoll_wait(ep, evs, 64, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("otlp_sink: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    conn *nc = calloc(1, sizeof(*nc));
                    if (!nc) {
                        close(fd);
                        continue;
                    }
                    nc->fd = fd;
                    struct epoll_event ce = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ce);
                }
                continue;
            }
            if (on_readable(c) < 0) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                conn_close(c);
            }
        }
    }
    printf("%llu %llu %llu\n", n_requests, n_spans, n_bytes);
    fflush(stdout);
    return 0;
}
