/* wsload.c — a WebSocket echo load client: C connections to ws://HOST:PORT/PATH,
 * each keeping DEPTH messages of SIZE bytes in flight (a new one sent for
 * every echo received), for SECONDS; prints echoes per second and the
 * bytes moved. One thread, epoll, non-blocking sockets; frames are masked
 * with a zero key (a valid mask that leaves the payload as is, so the
 * client spends no time masking).
 *
 *   cc -O2 -o build/bench/wsload bench/ws/wsload.c
 *   build/bench/wsload 127.0.0.1 8080 /ws/echo 64 64 1 10
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct conn {
    int fd;
    size_t have;        /* bytes of the current server frame read so far */
    unsigned char in[1 << 16];
} conn;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int dial(const char *host, int port, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        perror("connect");
        exit(1);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     path, host, port);
    if (write(fd, req, (size_t)n) != n) {
        perror("write");
        exit(1);
    }
    char buf[4096];
    size_t got = 0;
    while (got < sizeof(buf) - 1) { /* the 101 head, byte by byte: nothing more is read */
        if (read(fd, buf + got, 1) != 1) {
            fprintf(stderr, "handshake failed\n");
            exit(1);
        }
        got++;
        if (got >= 4 && memcmp(buf + got - 4, "\r\n\r\n", 4) == 0)
            break;
    }
    buf[got] = 0;
    if (strncmp(buf, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "not upgraded: %s\n", buf);
        exit(1);
    }
    return fd;
}

int main(int argc, char **argv)
{
    if (argc < 8) {
        fprintf(stderr, "usage: wsload HOST PORT PATH CONNS SIZE DEPTH SECONDS\n");
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    const char *path = argv[3];
    int nconn = atoi(argv[4]);
    size_t size = (size_t)atol(argv[5]);
    int depth = atoi(argv[6]);
    double seconds = atof(argv[7]);
    if (size > 60000 || nconn < 1 || depth < 1) {
        fprintf(stderr, "size at most 60000, conns and depth at least 1\n");
        return 2;
    }
    /* one client frame: FIN|binary, masked, zero key */
    unsigned char frame[8 + 60000];
    size_t hl;
    frame[0] = 0x82;
    if (size < 126) {
        frame[1] = (unsigned char)(0x80 | size);
        hl = 2;
    } else {
        frame[1] = 0x80 | 126;
        frame[2] = (unsigned char)(size >> 8);
        frame[3] = (unsigned char)size;
        hl = 4;
    }
    memset(frame + hl, 0, 4);
    hl += 4;
    memset(frame + hl, 'x', size);
    size_t flen = hl + size;
    size_t server_frame = (size < 126 ? 2 : 4) + size;

    unsigned char *batch = malloc(64 * flen);
    conn *cs = calloc((size_t)nconn, sizeof(conn));
    int ep = epoll_create1(0);
    for (int i = 0; i < nconn; i++) {
        cs[i].fd = dial(host, port, path);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    }
    for (int i = 0; i < nconn; i++)
        for (int d = 0; d < depth; d++)
            if (write(cs[i].fd, frame, flen) != (ssize_t)flen) {
                perror("write");
                return 1;
            }
    uint64_t echoes = 0, warm = 0;
    double t0 = now_s(), start = t0 + 1.0, end = start + seconds;
    int measuring = 0;
    struct epoll_event evs[256];
    for (;;) {
        double t = now_s();
        if (!measuring && t >= start) {
            measuring = 1;
            warm = echoes;
        }
        if (t >= end)
            break;
        int n = epoll_wait(ep, evs, 256, 100);
        for (int k = 0; k < n; k++) {
            conn *c = evs[k].data.ptr;
            ssize_t r = read(c->fd, c->in + c->have, sizeof(c->in) - c->have);
            if (r <= 0) {
                fprintf(stderr, "connection lost (%s)\n", r == 0 ? "EOF" : strerror(errno));
                return 1;
            }
            c->have += (size_t)r;
            size_t off = 0;
            int replies = 0;
            while (c->have - off >= server_frame) {
                off += server_frame;
                replies++;
            }
            memmove(c->in, c->in + off, c->have - off);
            c->have -= off;
            echoes += (uint64_t)replies;
            /* one write for every reply this read completed */
            size_t left = (size_t)replies;
            while (left) {
                size_t k = left < 64 ? left : 64;
                for (size_t j = 0; j < k; j++)
                    memcpy(batch + j * flen, frame, flen);
                if (write(c->fd, batch, k * flen) != (ssize_t)(k * flen)) {
                    perror("write");
                    return 1;
                }
                left -= k;
            }
        }
    }
    double rate = (double)(echoes - warm) / seconds;
    printf("{\"connections\":%d,\"size\":%zu,\"depth\":%d,\"seconds\":%.1f,"
           "\"echoes_per_s\":%.0f,\"mib_per_s\":%.2f}\n",
           nconn, size, depth, seconds, rate, rate * (double)size / 1048576.0);
    for (int i = 0; i < nconn; i++)
        close(cs[i].fd);
    free(cs);
    free(batch);
    return 0;
}
