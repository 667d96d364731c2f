/* wsbench.c — the WebSocket load client of bench/ws/run.sh: one thread,
 * epoll, non-blocking sockets, its own RFC 6455 client framing (every
 * frame masked with a non-zero key, server frames parsed with 7/16/64-bit
 * lengths, pings answered), and the Engine.IO v4 / Socket.IO v5 packet
 * layer on top for the Socket.IO peer. It holds tens of thousands of
 * connections (RLIMIT_NOFILE raised to the hard limit).
 *
 *   wsbench MODE [options]          modes:
 *     idle    open --conns connections, let them settle, print the RSS
 *             growth of --server-pid per connection (VmRSS of
 *             /proc/PID/status before the first and after the last)
 *     echo    --conns connections each keeping --depth messages of
 *             --size bytes in flight for --seconds: echoes per second
 *     fanout  --conns subscribers and one publisher on the broadcast
 *             endpoint; --messages messages sent one at a time: for each
 *             the time from the publisher's write until the last
 *             subscriber has read it (p50/p99/max)
 *     rate    the same with --window messages in flight for --seconds:
 *             messages per second delivered to every subscriber
 *     floor   no server, no WebSocket: the kernel's floor under fanout
 *             (write(2) of one 2+--size byte frame to --conns loopback
 *             sockets per pass, --messages passes; see floor_run)
 *
 *   echo writes every connection's frame prebuilt (masked once with its
 *   key) and answers all the echoes one read brought in one send: by
 *   default one read and one write(v) per connection per wakeup (--io
 *   epoll), or over io_uring (--io uring: one system call per batch of
 *   completions; not the default: no clear gain measured yet).
 *
 *   options: --host H --port P --path /x --proto ws|sio --token JWT
 *            --conns N --size B --depth D --seconds S --messages M
 *            --window W --server-pid PID --settle S
 *            --writer-cpu C --reader-cpu C (floor: pin the two sides)
 *            --io uring|epoll (echo)
 *
 * One JSON line on stdout with the figures; errors on stderr, exit 1. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <signal.h>
#include <linux/io_uring.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { ST_CONNECTING, ST_HANDSHAKE, ST_SIO_OPEN, ST_SIO_CONNECT, ST_OPEN };

typedef struct conn {
    int fd;
    int state;
    int publisher;
    unsigned char *buf; /* bytes of an incomplete frame (or handshake head) */
    size_t have, cap;
    uint32_t key;
    unsigned due; /* echo: frames owed, written once per wakeup */
    /* echo over io_uring: a receive always posted, one send at a time */
    unsigned char *rb, *ob;
    size_t sendlen, sent;
    const unsigned char *sendbuf;
    int sending;
} conn;

static const char *host = "127.0.0.1", *path = "/", *token;
static int port, sio, nconn = 1, depth = 1, nmsg = 20, window = 8, server_pid;
static size_t msize = 64;
static double seconds = 5, settle = 2;
static int ep;
static conn *cs;
static int nopen;
static unsigned char rbuf[1 << 16];
static char mode[16];
enum { M_IDLE, M_ECHO, M_FANOUT, M_RATE, M_FLOOR };
static int mode_id;
/* echo: the frame every connection sends, masked once: the payload is
 * the same for every message, and so is each connection's key (a fixed
 * non-zero key per connection, as before: the server still unmasks) */
static unsigned char *echo_frames; /* nconn frames of echo_len bytes */
static size_t echo_len;

/* fanout / rate bookkeeping */
#define SEQ_MAX (1u << 20)
static double *t_sent;
static uint32_t *got;
static uint32_t next_seq, done_msgs;
static double *lat;
static size_t nlat;
static double measure_from, measure_to;
static uint64_t done_in_window;
static uint64_t echoes;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "wsbench: %s\n", what);
    exit(1);
}

static long rss_kb(int pid)
{
    char p[64], line[256];
    snprintf(p, sizeof(p), "/proc/%d/status", pid);
    FILE *f = fopen(p, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = atol(line + 6);
    fclose(f);
    return kb;
}

/* CPU seconds (user + system, every thread) of process pid so far; of
 * this process when pid is 0. */
static double cpu_s(int pid)
{
    if (!pid) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
               (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    }
    char p[64], line[1024];
    snprintf(p, sizeof(p), "/proc/%d/stat", pid);
    FILE *f = fopen(p, "r");
    if (!f)
        return -1;
    size_t n = fread(line, 1, sizeof(line) - 1, f);
    fclose(f);
    line[n] = 0;
    char *s = strrchr(line, ')'); /* after the command name */
    if (!s)
        return -1;
    unsigned long ut = 0, st = 0;
    /* fields 3.. after ")": state ppid pgrp session tty tpgid flags minflt
     * cminflt majflt cmajflt utime stime */
    if (sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void write_all(conn *c, const void *data, size_t len)
{
    const unsigned char *p = data;
    while (len) {
        ssize_t w = write(c->fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) { /* the kernel's buffer is full: wait for room */
                struct timespec ts = {0, 50000};
                nanosleep(&ts, NULL);
                continue;
            }
            perror("wsbench: write");
            exit(1);
        }
        p += w;
        len -= (size_t)w;
    }
}

/* A masked client frame of payload `data` into out; returns its size. */
static size_t frame(unsigned char *out, int opcode, const void *data, size_t len, uint32_t key)
{
    size_t h = 0;
    out[h++] = (unsigned char)(0x80 | opcode);
    if (len < 126) {
        out[h++] = (unsigned char)(0x80 | len);
    } else if (len < 65536) {
        out[h++] = 0x80 | 126;
        out[h++] = (unsigned char)(len >> 8);
        out[h++] = (unsigned char)len;
    } else {
        out[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[h++] = (unsigned char)((uint64_t)len >> (8 * i));
    }
    unsigned char k[4] = {(unsigned char)(key >> 24), (unsigned char)(key >> 16),
                          (unsigned char)(key >> 8), (unsigned char)key};
    memcpy(out + h, k, 4);
    h += 4;
    const unsigned char *d = data;
    for (size_t i = 0; i < len; i++)
        out[h + i] = d[i] ^ k[i & 3];
    return h + len;
}

static void send_msg(conn *c, int opcode, const void *data, size_t len)
{
    unsigned char stack[8192];
    unsigned char *out = len + 14 <= sizeof(stack) ? stack : malloc(len + 14);
    if (!out)
        die("out of memory");
    write_all(c, out, frame(out, opcode, data, len, c->key));
    if (out != stack)
        free(out);
}

/* The application payload of message `seq`: --size bytes, "seq:NNNNNNNN:" then
 * 'x'. For Socket.IO wrapped as an event packet 42["ev","<payload>"]. */
static size_t payload(char *out, const char *ev, uint32_t seq)
{
    size_t n = 0;
    if (sio)
        n += (size_t)sprintf(out, "42[\"%s\",\"", ev);
    size_t start = n;
    n += (size_t)sprintf(out + n, "seq:%08u:", seq);
    while (n - start < msize)
        out[n++] = 'x';
    if (sio) {
        out[n++] = '"';
        out[n++] = ']';
    }
    return n;
}


static void publish(void)
{
    char p[70000];
    uint32_t seq = next_seq++;
    if (seq >= SEQ_MAX)
        die("too many messages");
    size_t n = payload(p, "b", seq);
    t_sent[seq] = now_s();
    send_msg(&cs[nconn], sio ? 1 : 2, p, n);
}

static void on_fanout(conn *c, const unsigned char *d, size_t len)
{
    if (c->publisher)
        return;
    const unsigned char *s = memmem(d, len, "seq:", 4);
    if (!s || (size_t)(d + len - s) < 12)
        die("a broadcast message without its sequence number");
    uint32_t seq = (uint32_t)strtoul((const char *)s + 4, NULL, 10);
    if (seq >= next_seq)
        die("a sequence number never sent");
    if (++got[seq] == (uint32_t)nconn) {
        double t = now_s();
        done_msgs++;
        if (mode_id == M_FANOUT) {
            lat[nlat++] = t - t_sent[seq];
        } else if (t >= measure_from && t < measure_to) {
            done_in_window++;
        }
        if (mode_id == M_RATE && t < measure_to)
            publish(); /* keep --window messages in flight */
    }
}

static void on_message(conn *c, int opcode, const unsigned char *d, size_t len)
{
    if (sio) {
        if (opcode != 1 || len < 1)
            die("Socket.IO: a non-text frame");
        if (d[0] == '2') { /* Engine.IO ping: pong */
            send_msg(c, 1, "3", 1);
            return;
        }
        if (c->state == ST_SIO_OPEN) {
            if (d[0] != '0')
                die("Socket.IO: no open packet");
            send_msg(c, 1, "40", 2);
            c->state = ST_SIO_CONNECT;
            return;
        }
        if (c->state == ST_SIO_CONNECT) {
            if (len < 2 || d[0] != '4' || d[1] != '0') {
                fprintf(stderr, "wsbench: Socket.IO connect refused: %.*s\n", (int)len, d);
                exit(1);
            }
            c->state = ST_OPEN;
            nopen++;
            return;
        }
        if (len < 2 || d[0] != '4' || d[1] != '2')
            return; /* other packets: nothing to count */
    }
    if (mode_id == M_ECHO) {
        echoes++;
        c->due++; /* answered after the whole read is parsed: one write */
    } else if (mode_id == M_FANOUT || mode_id == M_RATE) {
        on_fanout(c, d, len);
    }
}

/* Parses whole server frames from d; returns the bytes used. */
static size_t parse_frames(conn *c, const unsigned char *d, size_t len)
{
    size_t off = 0;
    while (len - off >= 2) {
        const unsigned char *f = d + off;
        int opcode = f[0] & 0x0f;
        if (!(f[0] & 0x80))
            die("a fragmented server message (not expected from these servers)");
        if (f[1] & 0x80)
            die("a masked server frame");
        uint64_t pl = f[1] & 0x7f;
        size_t h = 2;
        if (pl == 126) {
            if (len - off < 4)
                break;
            pl = (uint64_t)f[2] << 8 | f[3];
            h = 4;
        } else if (pl == 127) {
            if (len - off < 10)
                break;
            pl = 0;
            for (int i = 0; i < 8; i++)
                pl = pl << 8 | f[2 + i];
            h = 10;
        }
        if (pl > (1u << 24))
            die("a server frame over 16 MiB");
        if (len - off < h + pl)
            break;
        const unsigned char *p = f + h;
        off += h + (size_t)pl;
        if (opcode == 0x9) {
            send_msg(c, 0xA, p, (size_t)pl);
        } else if (opcode == 0x8) {
            fprintf(stderr, "wsbench: the server closed a connection (code %d)\n",
                    pl >= 2 ? p[0] << 8 | p[1] : 1005);
            exit(1);
        } else if (opcode == 0x1 || opcode == 0x2) {
            on_message(c, opcode, p, (size_t)pl);
        }
    }
    return off;
}

/* Room for `len` bytes in c->buf, keeping what it holds. */
static void grow(conn *c, size_t len)
{
    if (len <= c->cap)
        return;
    size_t cap = c->cap ? c->cap : 256;
    while (cap < len)
        cap *= 2;
    unsigned char *nb = realloc(c->buf, cap);
    if (!nb)
        die("out of memory");
    c->buf = nb;
    c->cap = cap;
}

/* d (not inside c->buf) becomes the incomplete frame kept. */
static void keep(conn *c, const unsigned char *d, size_t len)
{
    grow(c, len);
    memcpy(c->buf, d, len);
    c->have = len;
}

static void handshake_bytes(conn *c, const unsigned char *d, size_t len);

static void on_bytes(conn *c, const unsigned char *d, size_t len)
{
    if (c->state == ST_HANDSHAKE) {
        handshake_bytes(c, d, len);
        return;
    }
    if (c->have) { /* the rest of a frame: append, parse from the conn's buffer */
        grow(c, c->have + len);
        memcpy(c->buf + c->have, d, len);
        size_t all = c->have + len;
        size_t used = parse_frames(c, c->buf, all);
        memmove(c->buf, c->buf + used, all - used);
        c->have = all - used;
        return;
    }
    size_t used = parse_frames(c, d, len);
    if (used < len)
        keep(c, d + used, len - used);
}

static void handshake_bytes(conn *c, const unsigned char *d, size_t len)
{
    unsigned char *tmp = malloc(c->have + len + 1);
    if (!tmp)
        die("out of memory");
    memcpy(tmp, c->buf, c->have);
    memcpy(tmp + c->have, d, len);
    size_t all = c->have + len;
    tmp[all] = 0;
    c->have = 0;
    unsigned char *end = memmem(tmp, all, "\r\n\r\n", 4);
    if (!end) {
        if (all > 8192)
            die("a handshake answer over 8 KiB");
        keep(c, tmp, all);
        free(tmp);
        return;
    }
    if (strncmp((char *)tmp, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "wsbench: not upgraded: %.*s\n", (int)(end - tmp), tmp);
        exit(1);
    }
    end += 4;
    if (sio) {
        c->state = ST_SIO_OPEN;
    } else {
        c->state = ST_OPEN;
        nopen++;
    }
    size_t rest = all - (size_t)(end - tmp);
    if (rest)
        on_bytes(c, end, rest);
    free(tmp);
}

static void start_connect(conn *c, uint32_t i)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) {
        perror("wsbench: socket");
        exit(1);
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    c->key = 0x9e3779b9u * (i + 1) | 0x01010101u; /* non-zero in every byte */
    c->state = ST_CONNECTING;
    if (connect(c->fd, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS) {
        perror("wsbench: connect");
        exit(1);
    }
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl");
}

static void send_upgrade(conn *c)
{
    int err = 0;
    socklen_t el = sizeof(err);
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) {
        fprintf(stderr, "wsbench: connect: %s\n", strerror(err));
        exit(1);
    }
    char req[2048];
    char auth[1200] = "";
    if (token)
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", token);
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s\r\n",
                     path, host, port, auth);
    write_all(c, req, (size_t)n);
    c->state = ST_HANDSHAKE;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* The echoes owed to c in one write: its prebuilt frame repeated (a
 * gather of the same bytes, nothing copied). */
static void flush_echoes(conn *c)
{
    const unsigned char *f = echo_frames + (size_t)(c - cs) * echo_len;
    struct iovec iov[64];
    for (unsigned i = 0; i < 64 && i < c->due; i++)
        iov[i] = (struct iovec){(void *)f, echo_len};
    while (c->due) {
        unsigned k = c->due < 64 ? c->due : 64;
        size_t want = (size_t)k * echo_len;
        ssize_t w = k == 1 ? write(c->fd, f, echo_len) : writev(c->fd, iov, (int)k);
        if (w == (ssize_t)want) {
            c->due -= k;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            perror("wsbench: write");
            exit(1);
        }
        if (w < 0 && errno == EAGAIN) { /* the kernel's buffer is full: wait for room */
            struct timespec ts = {0, 50000};
            nanosleep(&ts, NULL);
            continue;
        }
        /* a short write (rare: the kernel's buffer is full): the rest of
         * the frame it cut, then whole frames again */
        size_t done = w > 0 ? (size_t)w : 0;
        c->due -= (unsigned)(done / echo_len);
        size_t part = done % echo_len;
        if (part) {
            write_all(c, f + part, echo_len - part);
            c->due--;
        }
    }
}

static void on_event(conn *c, uint32_t events)
{
    if (c->state == ST_CONNECTING) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            send_upgrade(c);
        return;
    }
    for (;;) {
        ssize_t r = read(c->fd, rbuf, sizeof(rbuf));
        if (r < 0 && errno == EAGAIN)
            return;
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            fprintf(stderr, "wsbench: connection %ld lost (%s)\n", (long)(c - cs),
                    r == 0 ? "EOF" : strerror(errno));
            exit(1);
        }
        on_bytes(c, rbuf, (size_t)r);
        if ((size_t)r < sizeof(rbuf))
            break;
    }
    if (c->due)
        flush_echoes(c);
}

static void poll_once(int timeout_ms)
{
    static struct epoll_event evs[1024];
    int n = epoll_wait(ep, evs, 1024, timeout_ms);
    for (int k = 0; k < n; k++)
        on_event(evs[k].data.ptr, evs[k].events);
}

/* Opens connections [0, total) with at most 200 handshakes at a time. */
static void open_all(int total)
{
    int started = 0;
    double t0 = now_s();
    while (nopen < total) {
        while (started < total && started - nopen < 200) {
            start_connect(&cs[started], (uint32_t)started);
            started++;
        }
        poll_once(10);
        if (now_s() - t0 > 120)
            die("connections not open after 120 s");
    }
}

static void pump(double until)
{
    for (double t = now_s(); t < until; t = now_s()) {
        int ms = (int)((until - t) * 1000) + 1;
        poll_once(ms > 100 ? 100 : ms);
    }
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, size_t n, double p)
{
    size_t i = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (i < 1)
        i = 1;
    if (i > n)
        i = n;
    return v[i - 1];
}

/* ---------------------------------------------------------------- floor
 *
 * The kernel's floor under the fan-out figure: no WebSocket at all. The
 * writer (this process, pinned to --writer-cpu like the server) accepts
 * --conns loopback TCP connections from a receiver (a child, pinned to
 * --reader-cpu like the clients) and, --messages times (after 2 warm-up
 * passes), writes the same frame (a 2-byte server header and --size
 * bytes: 66 for 64) to every socket in one loop of write(2). Per pass:
 * the time of the write loop and the time until the receiver, which only
 * drains its sockets (epoll + read), has read every byte of the pass. */
static void pin(int cpu)
{
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) < 0)
        die("sched_setaffinity");
}

static void floor_receiver(int lport, int notify, int passes, size_t flen, int cpu)
{
    pin(cpu);
    int efd = epoll_create1(0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)lport)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    for (int i = 0; i < nconn; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
            perror("wsbench floor: connect");
            _exit(1);
        }
        int fl = 1;
        if (ioctl(fd, FIONBIO, &fl) < 0)
            _exit(1);
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(efd, EPOLL_CTL_ADD, fd, &ev) < 0)
            _exit(1);
    }
    if (write(notify, "R", 1) != 1)
        _exit(1);
    uint64_t total = 0, target = (uint64_t)nconn * flen;
    static struct epoll_event evs[1024];
    for (int pass = 0; pass < passes;) {
        int n = epoll_wait(efd, evs, 1024, 1000);
        for (int k = 0; k < n; k++) {
            for (;;) {
                ssize_t r = read(evs[k].data.fd, rbuf, sizeof(rbuf));
                if (r > 0) {
                    total += (uint64_t)r;
                    if ((size_t)r < sizeof(rbuf))
                        break;
                    continue;
                }
                if (r < 0 && errno == EINTR)
                    continue;
                if (r < 0 && errno == EAGAIN)
                    break;
                _exit(r == 0 ? 0 : 1); /* the writer went */
            }
        }
        while (pass < passes && total >= target) {
            if (write(notify, "D", 1) != 1)
                _exit(1);
            pass++;
            target += (uint64_t)nconn * flen;
        }
    }
    _exit(0);
}

static int floor_run(int writer_cpu, int reader_cpu)
{
    int warm = 2, passes = nmsg + warm;
    unsigned char fr[70016];
    size_t flen = 0;
    fr[flen++] = 0x82; /* FIN, binary: what a server sends */
    if (msize < 126) {
        fr[flen++] = (unsigned char)msize;
    } else {
        fr[flen++] = 126;
        fr[flen++] = (unsigned char)(msize >> 8);
        fr[flen++] = (unsigned char)msize;
    }
    memset(fr + flen, 'x', msize);
    flen += msize;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    socklen_t al = sizeof(a);
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(ls, 65535) < 0 ||
        getsockname(ls, (struct sockaddr *)&a, &al) < 0)
        die("floor: listen");
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0)
        die("floor: socketpair");
    pid_t child = fork();
    if (child < 0)
        die("floor: fork");
    if (child == 0) {
        close(sp[0]);
        close(ls);
        floor_receiver(ntohs(a.sin_port), sp[1], passes, flen, reader_cpu);
    }
    close(sp[1]);
    pin(writer_cpu);
    int *fds = calloc((size_t)nconn, sizeof(int));
    if (!fds)
        die("out of memory");
    for (int i = 0; i < nconn; i++) {
        fds[i] = accept(ls, NULL, NULL);
        if (fds[i] < 0)
            die("floor: accept");
        int one = 1; /* as keel's sockets: no Nagle */
        setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    char ch;
    if (read(sp[0], &ch, 1) != 1 || ch != 'R')
        die("floor: the receiver did not start");
    double *wr = calloc((size_t)passes, sizeof(double));
    double *dl = calloc((size_t)passes, sizeof(double));
    if (!wr || !dl)
        die("out of memory");
    double c0 = 0;
    for (int pass = 0; pass < passes; pass++) {
        if (pass == warm)
            c0 = cpu_s(0);
        double t0 = now_s();
        for (int i = 0; i < nconn; i++)
            if (write(fds[i], fr, flen) != (ssize_t)flen)
                die("floor: a short write (a socket buffer full?)");
        double t1 = now_s();
        if (read(sp[0], &ch, 1) != 1 || ch != 'D')
            die("floor: the receiver stopped");
        double t2 = now_s();
        wr[pass] = t1 - t0;
        dl[pass] = t2 - t0;
        struct timespec ts = {0, 100000000}; /* both sides quiet, as fanout */
        nanosleep(&ts, NULL);
    }
    double wcpu = cpu_s(0) - c0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double usr = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    double sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    for (int i = 0; i < nconn; i++)
        close(fds[i]);
    close(sp[0]);
    int st;
    waitpid(child, &st, 0);
    size_t m = (size_t)nmsg;
    qsort(wr + warm, m, sizeof(double), cmp_d);
    qsort(dl + warm, m, sizeof(double), cmp_d);
    printf("{\"mode\":\"floor\",\"connections\":%d,\"frame_bytes\":%zu,\"passes\":%d,"
           "\"write_p50_ms\":%.2f,\"write_p99_ms\":%.2f,\"write_max_ms\":%.2f,"
           "\"delivered_p50_ms\":%.2f,\"delivered_p99_ms\":%.2f,\"delivered_max_ms\":%.2f,"
           "\"writer_cpu_ms_per_pass\":%.1f,\"writer_sys_share\":%.2f}\n",
           nconn, flen, nmsg, pct(wr + warm, m, 50) * 1e3, pct(wr + warm, m, 99) * 1e3,
           wr[warm + m - 1] * 1e3, pct(dl + warm, m, 50) * 1e3, pct(dl + warm, m, 99) * 1e3,
           dl[warm + m - 1] * 1e3, wcpu * 1e3 / (double)m, usr + sys > 0 ? sys / (usr + sys) : 0);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}

/* ---------------------------------------------------------------- io_uring
 *
 * The echo loop over io_uring (raw system calls, no liburing): every
 * connection keeps one receive posted and at most one send; each
 * io_uring_enter submits everything queued since the last and waits for
 * a completion, so a wakeup that finds 64 echoes costs one system call
 * instead of 64 reads and 64 writes (on this VM the system call entry
 * and exit is the client's largest cost). Opt-in (--io uring): in smoke
 * runs on a loaded machine the client's CPU per echo fell only ~5-10 %
 * while keel's rose, so epoll stays the default until a quiet run says
 * otherwise. */
#define RB_SIZE 16384
static struct {
    int fd;
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_array, sq_entries;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
    unsigned to_submit;
} ur;

static int ur_init(unsigned entries)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    int fd = (int)syscall(__NR_io_uring_setup, entries, &p);
    if (fd < 0)
        return -1;
    size_t sqsz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cqsz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    int single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
    if (single)
        sqsz = cqsz = sqsz > cqsz ? sqsz : cqsz;
    unsigned char *sq = mmap(NULL, sqsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                             IORING_OFF_SQ_RING);
    if (sq == MAP_FAILED)
        return -1;
    unsigned char *cq = single ? sq
                               : mmap(NULL, cqsz, PROT_READ | PROT_WRITE,
                                      MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
    if (cq == MAP_FAILED)
        return -1;
    ur.sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (ur.sqes == MAP_FAILED)
        return -1;
    ur.fd = fd;
    ur.sq_head = (unsigned *)(sq + p.sq_off.head);
    ur.sq_tail = (unsigned *)(sq + p.sq_off.tail);
    ur.sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    ur.sq_array = (unsigned *)(sq + p.sq_off.array);
    ur.sq_entries = p.sq_entries;
    ur.cq_head = (unsigned *)(cq + p.cq_off.head);
    ur.cq_tail = (unsigned *)(cq + p.cq_off.tail);
    ur.cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    ur.cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    return 0;
}

static void ur_enter(unsigned wait)
{
    for (;;) {
        long r = syscall(__NR_io_uring_enter, ur.fd, ur.to_submit, wait,
                         wait ? IORING_ENTER_GETEVENTS : 0, NULL, 0);
        if (r >= 0) {
            ur.to_submit -= (unsigned)r < ur.to_submit ? (unsigned)r : ur.to_submit;
            return;
        }
        if (errno != EINTR && errno != EAGAIN && errno != EBUSY)
            die("io_uring_enter");
        if (!wait)
            return;
    }
}

static struct io_uring_sqe *ur_sqe(void)
{
    unsigned tail = *ur.sq_tail;
    if (tail - __atomic_load_n(ur.sq_head, __ATOMIC_ACQUIRE) >= ur.sq_entries)
        ur_enter(0); /* full: hand what is queued to the kernel */
    if (tail - __atomic_load_n(ur.sq_head, __ATOMIC_ACQUIRE) >= ur.sq_entries)
        die("io_uring: submission queue full");
    unsigned idx = tail & *ur.sq_mask;
    struct io_uring_sqe *e = &ur.sqes[idx];
    memset(e, 0, sizeof(*e));
    ur.sq_array[idx] = idx;
    __atomic_store_n(ur.sq_tail, tail + 1, __ATOMIC_RELEASE);
    ur.to_submit++;
    return e;
}

static void ur_recv(conn *c)
{
    struct io_uring_sqe *e = ur_sqe();
    e->opcode = IORING_OP_RECV;
    e->fd = c->fd;
    e->addr = (uint64_t)(uintptr_t)c->rb;
    e->len = RB_SIZE;
    e->user_data = (uint64_t)(c - cs) << 1;
}

static void ur_send_rest(conn *c)
{
    struct io_uring_sqe *e = ur_sqe();
    e->opcode = IORING_OP_SEND;
    e->fd = c->fd;
    e->addr = (uint64_t)(uintptr_t)(c->sendbuf + c->sent);
    e->len = (unsigned)(c->sendlen - c->sent);
    e->user_data = (uint64_t)(c - cs) << 1 | 1;
}

/* Sends every echo owed, as one buffer: the prebuilt frame itself for one,
 * copies of it in c->ob for more (at most --depth are ever owed). */
static void ur_send(conn *c)
{
    const unsigned char *f = echo_frames + (size_t)(c - cs) * echo_len;
    if (c->due == 1) {
        c->sendbuf = f;
    } else {
        for (unsigned i = 0; i < c->due; i++)
            memcpy(c->ob + (size_t)i * echo_len, f, echo_len);
        c->sendbuf = c->ob;
    }
    c->sendlen = (size_t)c->due * echo_len;
    c->sent = 0;
    c->due = 0;
    c->sending = 1;
    ur_send_rest(c);
}

static void ur_start(void)
{
    for (int i = 0; i < nconn; i++) {
        conn *c = &cs[i];
        c->rb = malloc(RB_SIZE);
        c->ob = malloc((size_t)depth * echo_len);
        if (!c->rb || !c->ob)
            die("out of memory");
        ur_recv(c);
        c->due = (unsigned)depth;
        ur_send(c);
    }
}

static void ur_pump(double until)
{
    while (now_s() < until) {
        ur_enter(1);
        unsigned head = *ur.cq_head;
        unsigned tail = __atomic_load_n(ur.cq_tail, __ATOMIC_ACQUIRE);
        for (; head != tail; head++) {
            struct io_uring_cqe *e = &ur.cqes[head & *ur.cq_mask];
            conn *c = &cs[e->user_data >> 1];
            int res = e->res;
            if (e->user_data & 1) {
                if (res < 0) {
                    fprintf(stderr, "wsbench: send: %s\n", strerror(-res));
                    exit(1);
                }
                c->sent += (size_t)res;
                if (c->sent < c->sendlen)
                    ur_send_rest(c);
                else if ((c->sending = 0, c->due))
                    ur_send(c);
            } else {
                if (res <= 0 && res != -EAGAIN && res != -EINTR) {
                    fprintf(stderr, "wsbench: connection %ld lost (%s)\n", (long)(c - cs),
                            res == 0 ? "EOF" : strerror(-res));
                    exit(1);
                }
                if (res > 0)
                    on_bytes(c, c->rb, (size_t)res);
                ur_recv(c);
                if (c->due && !c->sending)
                    ur_send(c);
            }
        }
        __atomic_store_n(ur.cq_head, head, __ATOMIC_RELEASE);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: wsbench idle|echo|fanout|rate|floor [--host H] [--port P] [--path P] "
                        "[--proto ws|sio] [--token JWT] [--conns N] [--size B] [--depth D] "
                        "[--seconds S] [--messages M] [--window W] [--server-pid PID] "
                        "[--settle S] [--writer-cpu C] [--reader-cpu C] [--io uring|epoll]\n");
        return 2;
    }
    int writer_cpu = -1, reader_cpu = -1;
    const char *io = "epoll"; /* echo: epoll, or uring (epoll when unavailable) */
    snprintf(mode, sizeof(mode), "%s", argv[1]);
    mode_id = !strcmp(mode, "echo")     ? M_ECHO
              : !strcmp(mode, "fanout") ? M_FANOUT
              : !strcmp(mode, "rate")   ? M_RATE
              : !strcmp(mode, "floor")  ? M_FLOOR
                                        : M_IDLE;
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--host")) host = v;
        else if (!strcmp(k, "--port")) port = atoi(v);
        else if (!strcmp(k, "--path")) path = v;
        else if (!strcmp(k, "--proto")) sio = !strcmp(v, "sio");
        else if (!strcmp(k, "--token")) token = v;
        else if (!strcmp(k, "--conns")) nconn = atoi(v);
        else if (!strcmp(k, "--size")) msize = (size_t)atol(v);
        else if (!strcmp(k, "--depth")) depth = atoi(v);
        else if (!strcmp(k, "--seconds")) seconds = atof(v);
        else if (!strcmp(k, "--messages")) nmsg = atoi(v);
        else if (!strcmp(k, "--window")) window = atoi(v);
        else if (!strcmp(k, "--server-pid")) server_pid = atoi(v);
        else if (!strcmp(k, "--settle")) settle = atof(v);
        else if (!strcmp(k, "--writer-cpu")) writer_cpu = atoi(v);
        else if (!strcmp(k, "--io")) io = v;
        else if (!strcmp(k, "--reader-cpu")) reader_cpu = atoi(v);
        else {
            fprintf(stderr, "wsbench: unknown option %s\n", k);
            return 2;
        }
    }
    if (mode_id == M_FLOOR)
        port = -1; /* no server: the writer is this process */
    if (!port || nconn < 1 || depth < 1 || msize < 16 || msize > 60000 || nmsg < 1 || window < 1)
        die("bad options (port, --conns >= 1, --size 16..60000, ...)");
    if (token && strlen(token) > 1000)
        die("token over 1000 bytes");
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if ((rlim_t)nconn + 16 > rl.rlim_cur) {
        fprintf(stderr, "wsbench: %d connections need RLIMIT_NOFILE > %d (hard limit %lu)\n",
                nconn, nconn + 16, (unsigned long)rl.rlim_max);
        return 1;
    }
    if (mode_id == M_FLOOR)
        return floor_run(writer_cpu, reader_cpu);
    ep = epoll_create1(0);
    cs = calloc((size_t)nconn + 1, sizeof(conn));
    if (!cs)
        die("out of memory");

    if (!strcmp(mode, "idle")) {
        if (!server_pid)
            die("idle needs --server-pid");
        /* one connection first: what the first one costs once (lazy
         * initialisation, buffers) is not a per-connection cost */
        open_all(1);
        pump(now_s() + 0.5);
        long before = rss_kb(server_pid);
        double t0 = now_s();
        open_all(nconn);
        double took = now_s() - t0;
        pump(now_s() + settle);
        long after = rss_kb(server_pid);
        if (before < 0 || after < 0)
            die("cannot read the server's VmRSS");
        printf("{\"mode\":\"idle\",\"connections\":%d,\"open_s\":%.2f,\"rss_before_kb\":%ld,"
               "\"rss_after_kb\":%ld,\"bytes_per_conn\":%.0f}\n",
               nconn, took, before, after,
               (double)(after - before) * 1024.0 / (double)(nconn - 1));
        return 0;
    }
    if (!strcmp(mode, "echo")) {
        open_all(nconn);
        char p[70000];
        size_t n = payload(p, "e", 0);
        static unsigned char one[70016];
        echo_len = frame(one, sio ? 1 : 2, p, n, 0); /* the same size for every key */
        echo_frames = malloc((size_t)nconn * echo_len);
        if (!echo_frames)
            die("out of memory");
        for (int i = 0; i < nconn; i++)
            frame(echo_frames + (size_t)i * echo_len, sio ? 1 : 2, p, n, cs[i].key);
        unsigned entries = 8;
        while (entries < 2u * (unsigned)nconn + 8)
            entries *= 2;
        int uring = !strcmp(io, "uring") && ur_init(entries) == 0;
        if (!strcmp(io, "uring") && !uring)
            fprintf(stderr, "wsbench: io_uring unavailable (%s): epoll\n", strerror(errno));
        void (*run)(double) = uring ? ur_pump : pump;
        if (uring) {
            ur_start();
        } else {
            for (int i = 0; i < nconn; i++) {
                cs[i].due = (unsigned)depth;
                flush_echoes(&cs[i]);
            }
        }
        run(now_s() + 1.0); /* warm-up */
        uint64_t e0 = echoes;
        double t0 = now_s(), s0 = cpu_s(server_pid), c0 = cpu_s(0);
        run(t0 + seconds);
        double rate = (double)(echoes - e0) / (now_s() - t0);
        double scpu = cpu_s(server_pid) - s0, ccpu = cpu_s(0) - c0;
        printf("{\"mode\":\"echo\",\"io\":\"%s\",\"connections\":%d,\"size\":%zu,\"depth\":%d,"
               "\"seconds\":%.1f,"
               "\"echoes_per_s\":%.0f,\"server_cpu_s\":%.2f,\"client_cpu_s\":%.2f,"
               "\"echoes_per_server_cpu_s\":%.0f}\n",
               uring ? "uring" : "epoll", nconn, msize, depth, seconds, rate, scpu, ccpu,
               scpu > 0 ? (double)(echoes - e0) / scpu : 0);
        return 0;
    }
    if (strcmp(mode, "fanout") && strcmp(mode, "rate"))
        die("mode: idle, echo, fanout, rate or floor");
    t_sent = calloc(SEQ_MAX, sizeof(double));
    got = calloc(SEQ_MAX, sizeof(uint32_t));
    lat = calloc((size_t)nmsg + 8, sizeof(double));
    if (!t_sent || !got || !lat)
        die("out of memory");
    open_all(nconn + 1); /* the last one publishes */
    cs[nconn].publisher = 1;
    pump(now_s() + settle);
    if (!strcmp(mode, "fanout")) {
        int warm = 2;
        double s0 = 0, c0 = 0;
        for (int m = 0; m < nmsg + warm; m++) {
            uint32_t before = done_msgs;
            publish();
            double limit = now_s() + 10;
            while (done_msgs == before) {
                poll_once(100);
                if (now_s() > limit)
                    die("a broadcast did not reach every subscriber within 10 s");
            }
            if (m < warm) {
                nlat = 0;
                s0 = cpu_s(server_pid);
                c0 = cpu_s(0);
            }
            pump(now_s() + 0.1); /* let both sides go quiet */
        }
        double scpu = cpu_s(server_pid) - s0, ccpu = cpu_s(0) - c0;
        qsort(lat, nlat, sizeof(double), cmp_d);
        /* the CPU figures include the 0.1 s pauses between messages (the
         * server's timers, the client's idle loop) */
        printf("{\"mode\":\"fanout\",\"subscribers\":%d,\"messages\":%zu,\"size\":%zu,"
               "\"p50_ms\":%.2f,\"p99_ms\":%.2f,\"max_ms\":%.2f,\"min_ms\":%.2f,"
               "\"server_cpu_ms_per_msg\":%.1f,\"client_cpu_ms_per_msg\":%.1f}\n",
               nconn, nlat, msize, pct(lat, nlat, 50) * 1e3, pct(lat, nlat, 99) * 1e3,
               lat[nlat - 1] * 1e3, lat[0] * 1e3, scpu * 1e3 / (double)nlat,
               ccpu * 1e3 / (double)nlat);
        return 0;
    }
    /* rate: 1 s warm-up, then --seconds measured */
    double t0 = now_s();
    measure_from = t0 + 1.0;
    measure_to = measure_from + seconds;
    for (int w = 0; w < window; w++)
        publish();
    pump(measure_from);
    double s0 = cpu_s(server_pid), c0 = cpu_s(0);
    pump(measure_to);
    double scpu = cpu_s(server_pid) - s0, ccpu = cpu_s(0) - c0;
    double limit = now_s() + 10;
    while (done_msgs < next_seq && now_s() < limit) /* drain what is in flight */
        poll_once(100);
    printf("{\"mode\":\"rate\",\"subscribers\":%d,\"window\":%d,\"size\":%zu,\"seconds\":%.1f,"
           "\"messages_per_s\":%.0f,\"deliveries_per_s\":%.0f,\"server_cpu_s\":%.2f,"
           "\"client_cpu_s\":%.2f,\"messages_per_server_cpu_s\":%.0f}\n",
           nconn, window, msize, seconds, (double)done_in_window / seconds,
           (double)done_in_window * nconn / seconds, scpu, ccpu,
           scpu > 0 ? (double)done_in_window / scpu : 0);
    return 0;
}
