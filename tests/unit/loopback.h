/* loopback.h — the in-process server tests' client side: a blocking TCP
 * connection to 127.0.0.1:port with a receive timeout. Include after
 * <cmocka.h>. */
#ifndef KEEL_TEST_LOOPBACK_H
#define KEEL_TEST_LOOPBACK_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
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

/* Sends req on a new connection and reads until the server closes it (the
 * request should say Connection: close); out is NUL-terminated. */
static __attribute__((unused)) size_t loopback_exchange(unsigned port, const char *req,
                                                        char *out, size_t cap)
{
    int fd = connect_to(port, 5);
    assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    size_t n = 0;
    ssize_t k;
    while (n + 1 < cap && (k = read(fd, out + n, cap - n - 1)) > 0)
        n += (size_t)k;
    out[n] = '\0';
    close(fd);
    return n;
}

#endif
