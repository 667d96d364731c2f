/* parse_request — reads one raw request on stdin and prints keel's verdict
 * as one line: "accept <head-length> <body-length>", "incomplete", or
 * "reject <status> <reason>". Used by tests/e2e/test_llhttp_parity.py. */
#include <stdio.h>
#include <stdlib.h>

#include "keel/http.h"

int main(void)
{
    static char buf[1 << 20];
    size_t len = fread(buf, 1, sizeof(buf), stdin);
    keel_http_header hdrs[100];
    keel_http_request_head h = {.headers = hdrs};
    keel_http_limits lim = {8192, 8192, 100, 65536};
    int rc = keel_http_parse_request(buf, len, &h, &lim);
    if (rc == 0) {
        puts("incomplete");
        return 0;
    }
    if (rc < 0) {
        printf("reject %d %s\n", -rc, h.error);
        return 0;
    }
    if (h.method == KEEL_METHOD_OTHER) {
        puts("reject 501 method not implemented");
        return 0;
    }
    size_t body = 0;
    if (h.chunked) {
        keel_http_chunked d = {0};
        const char *err = NULL;
        int c = keel_http_chunked_decode(&d, buf + rc, len - (size_t)rc, 1 << 20, 65536, &err);
        if (c < 0) {
            printf("reject %d %s\n", -c, err);
            return 0;
        }
        if (c == 0) {
            puts("incomplete");
            return 0;
        }
        body = d.out;
    } else if (h.content_length > 0) {
        if ((size_t)h.content_length > len - (size_t)rc) {
            puts("incomplete");
            return 0;
        }
        body = (size_t)h.content_length;
    }
    printf("accept %d %zu\n", rc, body);
    return 0;
}
