/* sdnotify.c — the systemd readiness protocol (sd_notify(3)), without
 * libsystemd: one datagram to the AF_UNIX socket named by NOTIFY_SOCKET
 * ("/path" or "@abstract"). Without NOTIFY_SOCKET (not started by systemd
 * with Type=notify) every call is a no-op. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/server_internal.h"

int keel__sd_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path || !state)
        return 0;
    size_t n = strlen(path);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if ((path[0] != '/' && path[0] != '@') || n >= sizeof(sa.sun_path))
        return -EINVAL;
    memcpy(sa.sun_path, path, n);
    if (path[0] == '@')
        sa.sun_path[0] = '\0'; /* abstract namespace */
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    ssize_t w = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, len);
    int rc = w < 0 ? -errno : 0;
    close(fd);
    return rc;
}
