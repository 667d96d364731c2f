/* loopback.h — the in-process server tests' client side: a blocking TCP
 * connection to 127.0.0.1:port with a receive timeout, and requests that
 * are read until the server closes the connection. Include after
 * <cmocka.h>. */
#ifndef KEEL_TEST_LOOPBACK_H
#define KEEL_TEST_LOOPBACK_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/time.h>

static __attribute__((unused)) int connect_to(unsigned port, int timeout_s)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    struct timeval tv = {timeout_s, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/* Reads until EOF (or the receive timeout) and leaves fd open; out is NUL-terminated. */
static __attribute__((unused)) size_t loopback_read_all(int fd, char *out, size_t cap)
{
    size_t n = 0;
    ssize_t k;
    while (n + 1 < cap && (k = read(fd, out + n, cap - n - 1)) > 0)
        n += (size_t)k;
    out[n] = '\0';
    return n;
}

/* Sends req on a new connection and reads until the server closes it (the
 * request should say Connection: close); out is NUL-terminated. */
static __attribute__((unused)) size_t loopback_exchange(unsigned port, const char *req,
                                                        char *out, size_t cap)
{
    int fd = connect_to(port, 5);
    assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    size_t n = loopback_read_all(fd, out, cap);
    close(fd);
    return n;
}

/* The status code of the HTTP/1.1 response at the start of resp, or 0. */
static __attribute__((unused)) int loopback_status(const char *resp)
{
    int status = 0;
    sscanf(resp, "HTTP/1.1 %d", &status);
    return status;
}

/* Writes `GET path` with Connection: close on fd. */
static __attribute__((unused)) void loopback_send_get(int fd, const char *path)
{
    char req[256];
    int n =
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", path);
    assert_int_equal(write(fd, req, (size_t)n), n);
}

/* Reads the whole response, closes fd and returns the status. */
static __attribute__((unused)) int loopback_read_status(int fd, char *out, size_t cap)
{
    loopback_read_all(fd, out, cap);
    close(fd);
    return loopback_status(out);
}

/* `GET path` on a new connection (10 s receive timeout); returns the status. */
static __attribute__((unused)) int loopback_get(unsigned port, const char *path, char *out,
                                                size_t cap)
{
    int fd = connect_to(port, 10);
    loopback_send_get(fd, path);
    return loopback_read_status(fd, out, cap);
}

/* How many times needle occurs in hay (responses, header lines). */
static __attribute__((unused)) int loopback_count(const char *hay, const char *needle)
{
    int c = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++)
        c++;
    return c;
}

#endif
