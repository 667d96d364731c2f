/* healthcheck.c — the process-level commands of operators:
 * `PROG healthcheck [PATH]`: asks the service running on
 * this host (HOST/PORT of the configuration; a wildcard HOST means the
 * loopback address) for PATH (default /health/live) and exits 0 on a 2xx
 * answer, 1 otherwise. For container HEALTHCHECKs in an image that carries
 * no curl: the binary checks itself. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "keel/common.h"
#include "svc/svc_internal.h"

#define HEALTHCHECK_TIMEOUT_MS 3000

static int remaining_ms(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long ms = (now.tv_sec - start->tv_sec) * 1000 + (now.tv_nsec - start->tv_nsec) / 1000000;
    return ms >= HEALTHCHECK_TIMEOUT_MS ? 0 : (int)(HEALTHCHECK_TIMEOUT_MS - ms);
}

/* One byte stream until the status line is in or the time is up. */
static int wait_fd(int fd, short events, const struct timespec *start)
{
    struct pollfd p = {.fd = fd, .events = events};
    int left = remaining_ms(start);
    return left > 0 && poll(&p, 1, left) == 1 ? 0 : -1;
}

int keel__svc_healthcheck(const keel_config *cfg, const char *path, FILE *out)
{
    if (!path)
        path = "/health/live";
    if (path[0] != '/' || strpbrk(path, " \r\n")) {
        fprintf(out, "healthcheck: invalid path \"%s\"\n", path);
        return 2;
    }
    const char *host = cfg->host;
    if (!host || !*host || !strcmp(host, "0.0.0.0") || !strcmp(host, "*"))
        host = "127.0.0.1";
    else if (!strcmp(host, "::"))
        host = "::1";
    char port[16];
    snprintf(port, sizeof(port), "%u", cfg->port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai;
    if (getaddrinfo(host, port, &hints, &ai) != 0) {
        fprintf(out, "healthcheck: cannot resolve %s\n", host);
        return 1;
    }
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int ok = fd >= 0;
    if (ok && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0)
        ok = errno == EINPROGRESS && wait_fd(fd, POLLOUT, &start) == 0;
    if (ok) {
        int err = 0;
        socklen_t elen = sizeof(err);
        ok = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) == 0 && err == 0;
    }
    freeaddrinfo(ai);
    char buf[256];
    size_t got = 0;
    if (ok) {
        int n = snprintf(buf, sizeof(buf),
                         "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                         "User-Agent: keel-healthcheck\r\n\r\n", path);
        ok = n > 0 && (size_t)n < sizeof(buf) && send(fd, buf, (size_t)n, MSG_NOSIGNAL) == n;
    }
    while (ok && got < 12) { /* "HTTP/1.1 200" */
        if (wait_fd(fd, POLLIN, &start) < 0)
            break;
        ssize_t r = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    if (fd >= 0)
        close(fd);
    buf[got] = '\0';
    if (got < 12 || strncmp(buf, "HTTP/1.", 7) != 0) {
        fprintf(out, "healthcheck: no answer from %s:%u%s\n", host, cfg->port, path);
        return 1;
    }
    int status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    fprintf(out, "healthcheck: %s:%u%s -> %d\n", host, cfg->port, path, status);
    return status >= 200 && status < 300 ? 0 : 1;
}

long keel__svc_upgrade_from(const keel_config *cfg, FILE *err)
{
    const char *path = cfg->pid_file;
    if (!path || !*path) {
        fprintf(err, "keel: serve --upgrade needs PID_FILE (the running process writes it)\n");
        return -1;
    }
    FILE *f = fopen(path, "r");
    long pid = 0;
    if (f) {
        if (fscanf(f, "%ld", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    if (pid <= 1 || pid == (long)getpid() || kill((pid_t)pid, 0) != 0) {
        fprintf(err, "keel: serve --upgrade: no running process named in PID_FILE %s\n", path);
        return -1;
    }
    return pid;
}
