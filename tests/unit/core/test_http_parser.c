/* test_http_parser.c — keel_http_parse_request and keel_http_chunked_decode.
 *
 * Regression cases are data: every request the parser must accept, wait on
 * or refuse is a row in parse_cases[] (or, for inputs too large to write
 * out, a row in big_cases[] that builds its input), and every chunked body
 * a row in chunk_cases[]. Each row is also checked incrementally: every
 * prefix of an accepted head returns 0, every prefix of a refused one
 * returns 0 or the same status, and chunked bodies decode the same fed in
 * one piece, byte by byte, or split at any point. Each row is also fed
 * byte by byte to keel_http_parse_request_resume in a buffer that moves
 * between calls, and must answer at every step what one call on that many
 * bytes answers (check_resumed).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include "table_check.h"

#include "keel/http.h"

/* ---------------------------------------------------------------- limits */

static const keel_http_limits LIM_DEFAULT = {8192, 8192, 100, 65536};
static const keel_http_limits LIM_RL = {32, 8192, 100, 65536};   /* line 32 */
static const keel_http_limits LIM_HL = {8192, 24, 100, 65536};   /* field 24 */
static const keel_http_limits LIM_NH = {8192, 8192, 3, 65536};   /* 3 fields */
static const keel_http_limits LIM_HEAD = {8192, 8192, 100, 64};  /* head 64 */

/* ---------------------------------------------------------------- table */

#define ALL INT32_MAX /* expected return: the whole input is the head */
#define NO_CL (-1)
#define RAW(s) .raw = (s), .raw_len = sizeof(s) - 1
#define HDRS(...) .hdrs = (const char *const[]){__VA_ARGS__, NULL}

typedef struct parse_case {
    const char *name;
    const char *raw;
    size_t raw_len;
    int ret; /* ALL, a head length, 0 (incomplete) or -status */
    const keel_http_limits *lim; /* NULL: LIM_DEFAULT */

    /* checked when ret > 0 */
    keel_method method;
    const char *method_str;
    const char *path;
    const char *query;
    const char *host; /* NULL: expect empty */
    int version;
    int64_t cl;
    unsigned chunked, keep_alive, expect_continue, upgrade, asterisk;
    const char *const *hdrs; /* name, value, name, value, ..., NULL */
} parse_case;

#define GET_ROOT .method = KEEL_METHOD_GET, .method_str = "GET", .path = "/", .query = ""

static const parse_case parse_cases[] = {
    /* --- accepted heads ------------------------------------------------ */
    {"simple GET 1.1 keeps alive", RAW("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
     ALL, NULL, GET_ROOT, .host = "example.com", .version = 1, .cl = NO_CL,
     .keep_alive = 1, HDRS("Host", "example.com")},
    {"GET 1.0 without Host, closes by default", RAW("GET / HTTP/1.0\r\n\r\n"), ALL, NULL,
     GET_ROOT, .version = 0, .cl = NO_CL, .keep_alive = 0},
    {"1.0 Connection: keep-alive", RAW("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
     ALL, NULL, GET_ROOT, .version = 0, .cl = NO_CL, .keep_alive = 1},
    {"1.0 Connection list, case-insensitive",
     RAW("GET / HTTP/1.0\r\nConnection: Upgrade , Keep-Alive\r\n\r\n"), ALL, NULL, GET_ROOT,
     .version = 0, .cl = NO_CL, .keep_alive = 1, .upgrade = 1},
    {"1.0 Connection: close", RAW("GET / HTTP/1.0\r\nConnection: close\r\n\r\n"), ALL, NULL,
     GET_ROOT, .version = 0, .cl = NO_CL, .keep_alive = 0},
    {"1.1 Connection: close", RAW("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
     ALL, NULL, GET_ROOT, .host = "a", .version = 1, .cl = NO_CL, .keep_alive = 0},
    {"1.1 close wins over keep-alive",
     RAW("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, CLOSE\r\n\r\n"), ALL, NULL,
     GET_ROOT, .host = "a", .version = 1, .cl = NO_CL, .keep_alive = 0},
    {"1.1 Connection: keep-alive", RAW("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"),
     ALL, NULL, GET_ROOT, .host = "a", .version = 1, .cl = NO_CL, .keep_alive = 1},
    {"Connection: Upgrade", RAW("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
     ALL, NULL, .method = KEEL_METHOD_GET, .method_str = "GET", .path = "/ws", .query = "",
     .host = "a", .version = 1, .cl = NO_CL, .keep_alive = 1, .upgrade = 1},
    {"path and query", RAW("GET /search/x?q=a&b=c%20d HTTP/1.1\r\nHost: a\r\n\r\n"), ALL, NULL,
     .method = KEEL_METHOD_GET, .method_str = "GET", .path = "/search/x", .query = "q=a&b=c%20d",
     .host = "a", .version = 1, .cl = NO_CL, .keep_alive = 1},
    {"empty query", RAW("GET /? HTTP/1.1\r\nHost: a\r\n\r\n"), ALL, NULL, GET_ROOT, .host = "a",
     .version = 1, .cl = NO_CL, .keep_alive = 1},
    {"second ? stays in the query", RAW("GET /a?b?c HTTP/1.1\r\nHost: a\r\n\r\n"), ALL, NULL,
     .method = KEEL_METHOD_GET, .method_str = "GET", .path = "/a", .query = "b?c", .host = "a",
     .version = 1, .cl = NO_CL, .keep_alive = 1},
    {"target sub-delims and escapes", RAW("GET /a%2Fb;c=d,e@f:g!$&'()*+~ HTTP/1.1\r\nHost: a\r\n\r\n"),
     ALL, NULL, .method = KEEL_METHOD_GET, .method_str = "GET", .path = "/a%2Fb;c=d,e@f:g!$&'()*+~",
     .query = "", .host = "a", .version = 1, .cl = NO_CL, .keep_alive = 1},
    {"absolute-form: authority wins over Host",
     RAW("GET http://example.com/a/b?x=1 HTTP/1.1\r\nHost: other\r\n\r\n"), ALL, NULL,
     .method = KEEL_METHOD_GET, .method_str = "GET", .path = "/a/b", .query = "x=1",
     .host = "example.com", .version = 1, .cl = NO_CL, .keep_alive = 1},
    {"absolute-form without a path", RAW("GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n"),
     ALL, NULL, GET_ROOT, .host = "example.com", .version = 1, .cl = NO_CL, .keep_alive = 1},
    {"absolute-form https, query only",
     RAW("GET HTTPS://Example.com:8443?q HTTP/1.1\r\nHost: Example.com:8443\r\n\r\n"), ALL, NULL,
     .method = KEEL_METHOD_GET, .method_str = "GET", .path = "/", .query = "q",
     .host = "Example.com:8443", .version = 1, .cl = NO_CL, .keep_alive = 1},
    {"OPTIONS *", RAW("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), ALL, NULL,
     .method = KEEL_METHOD_OPTIONS, .method_str = "OPTIONS", .path = "*", .query = "", .host = "a",
     .version = 1, .cl = NO_CL, .keep_alive = 1, .asterisk = 1},
    {"one leading CRLF is skipped and counted", RAW("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), ALL,
     NULL, GET_ROOT, .host = "a", .version = 1, .cl = NO_CL, .keep_alive = 1},
    {"four leading CRLF", RAW("\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), ALL, NULL,
     GET_ROOT, .host = "a", .version = 1, .cl = NO_CL, .keep_alive = 1},
    {"pipelined: the head stops at the first request",
     RAW("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"), 28, NULL,
     .method = KEEL_METHOD_GET, .method_str = "GET", .path = "/a", .query = "", .host = "x",
     .version = 1, .cl = NO_CL, .keep_alive = 1, HDRS("Host", "x")},
    {"pipelined: second request is garbage", RAW("GET /a HTTP/1.1\r\nHost: x\r\n\r\n\x01\n\n junk"),
     28, NULL, .method = KEEL_METHOD_GET, .method_str = "GET", .path = "/a", .query = "",
     .host = "x", .version = 1, .cl = NO_CL, .keep_alive = 1},
    {"POST with Content-Length and body",
     RAW("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"), 48, NULL,
     .method = KEEL_METHOD_POST, .method_str = "POST", .path = "/p", .query = "", .host = "x",
     .version = 1, .cl = 5, .keep_alive = 1, HDRS("Host", "x", "Content-Length", "5")},
    {"Content-Length: 0", RAW("PUT /p HTTP/1.1\r\nHost: x\r\ncontent-length: 0\r\n\r\n"), ALL,
     NULL, .method = KEEL_METHOD_PUT, .method_str = "PUT", .path = "/p", .query = "", .host = "x",
     .version = 1, .cl = 0, .keep_alive = 1},
    {"Content-Length with leading zeros and OWS",
     RAW("PUT /p HTTP/1.1\r\nHost: x\r\nContent-Length:\t007 \r\n\r\n"), ALL, NULL,
     .method = KEEL_METHOD_PUT, .method_str = "PUT", .path = "/p", .query = "", .host = "x",
     .version = 1, .cl = 7, .keep_alive = 1},
    {"Content-Length of 18 digits",
     RAW("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999999999\r\n\r\n"), ALL, NULL,
     .method = KEEL_METHOD_POST, .method_str = "POST", .path = "/", .query = "", .host = "x",
     .version = 1, .cl = 999999999999999999LL, .keep_alive = 1},
    {"Content-Length in HTTP/1.0", RAW("POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc"), 38, NULL,
     .method = KEEL_METHOD_POST, .method_str = "POST", .path = "/", .query = "", .version = 0,
     .cl = 3, .keep_alive = 0},
    {"Transfer-Encoding: chunked",
     RAW("POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
     57, NULL, .method = KEEL_METHOD_POST, .method_str = "POST", .path = "/c", .query = "",
     .host = "x", .version = 1, .cl = NO_CL, .chunked = 1, .keep_alive = 1},
    {"Transfer-Encoding: Chunked, case-insensitive, empty list items",
     RAW("POST / HTTP/1.1\r\nHost: x\r\ntransfer-encoding: , Chunked ,\r\n\r\n"), ALL, NULL,
     .method = KEEL_METHOD_POST, .method_str = "POST", .path = "/", .query = "", .host = "x",
     .version = 1, .cl = NO_CL, .chunked = 1, .keep_alive = 1},
    {"Expect: 100-continue", RAW("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n"),
     ALL, NULL, .method = KEEL_METHOD_POST, .method_str = "POST", .path = "/", .query = "",
     .host = "x", .version = 1, .cl = 1, .keep_alive = 1, .expect_continue = 1},
    {"Expect: 100-Continue is case-insensitive",
     RAW("POST / HTTP/1.1\r\nHost: x\r\nexpect: 100-Continue\r\nContent-Length: 1\r\n\r\n"), ALL,
     NULL, .method = KEEL_METHOD_POST, .method_str = "POST", .path = "/", .query = "",
     .host = "x", .version = 1, .cl = 1, .keep_alive = 1, .expect_continue = 1},
    {"Expect: 100-continue is ignored in HTTP/1.0",
     RAW("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"), ALL, NULL,
     .method = KEEL_METHOD_POST, .method_str = "POST", .path = "/", .query = "", .version = 0,
     .cl = 1, .keep_alive = 0, .expect_continue = 0},
    {"field values: OWS trimmed, empty value, inner spaces kept, obs-text",
     RAW("GET / HTTP/1.1\r\nHost:a\r\nX-Pad: \t padded \t \r\nX-Empty:\r\nX-In: a  b\r\nX-Obs: caf\xc3\xa9\r\n\r\n"),
     ALL, NULL, GET_ROOT, .host = "a", .version = 1, .cl = NO_CL, .keep_alive = 1,
     HDRS("Host", "a", "X-Pad", "padded", "X-Empty", "", "X-In", "a  b", "X-Obs", "caf\xc3\xa9")},
    {"field names: every tchar", RAW("GET / HTTP/1.1\r\nHost: a\r\n!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n"),
     ALL, NULL, GET_ROOT, .host = "a", .version = 1, .cl = NO_CL, .keep_alive = 1,
     HDRS("Host", "a", "!#$%&'*+-.^_`|~09azAZ", "v")},
    {"HOST in capitals", RAW("GET / HTTP/1.1\r\nHOST: a.b\r\n\r\n"), ALL, NULL, GET_ROOT,
     .host = "a.b", .version = 1, .cl = NO_CL, .keep_alive = 1},
    {"Host with a port", RAW("GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n"), ALL, NULL,
     GET_ROOT, .host = "example.com:8080", .version = 1, .cl = NO_CL, .keep_alive = 1},
    {"Host IPv6 literal", RAW("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"), ALL, NULL, GET_ROOT,
     .host = "[::1]:8080", .version = 1, .cl = NO_CL, .keep_alive = 1},
    {"empty Host on 1.1", RAW("GET / HTTP/1.1\r\nHost:\r\n\r\n"), ALL, NULL, GET_ROOT,
     .version = 1, .cl = NO_CL, .keep_alive = 1, HDRS("Host", "")},
    {"HEAD", RAW("HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n"), ALL, NULL, .method = KEEL_METHOD_HEAD,
     .method_str = "HEAD", .path = "/h", .query = "", .host = "a", .version = 1, .cl = NO_CL,
     .keep_alive = 1},
    {"DELETE", RAW("DELETE /d HTTP/1.1\r\nHost: a\r\n\r\n"), ALL, NULL,
     .method = KEEL_METHOD_DELETE, .method_str = "DELETE", .path = "/d", .query = "",
     .host = "a", .version = 1, .cl = NO_CL, .keep_alive = 1},
    {"PATCH", RAW("PATCH /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}"), 49, NULL,
     .method = KEEL_METHOD_PATCH, .method_str = "PATCH", .path = "/p", .query = "", .host = "a",
     .version = 1, .cl = 2, .keep_alive = 1},
    {"unknown method parses as OTHER", RAW("BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n"), ALL, NULL,
     .method = KEEL_METHOD_OTHER, .method_str = "BREW", .path = "/pot", .query = "", .host = "a",
     .version = 1, .cl = NO_CL, .keep_alive = 1},
    {"methods are case-sensitive", RAW("get / HTTP/1.1\r\nHost: a\r\n\r\n"), ALL, NULL,
     .method = KEEL_METHOD_OTHER, .method_str = "get", .path = "/", .query = "", .host = "a",
     .version = 1, .cl = NO_CL, .keep_alive = 1},
    {"request line of exactly max_request_line (32)",
     RAW("GET /0123456789abcdefgh HTTP/1.1\r\nHost: a\r\n\r\n"), ALL, &LIM_RL,
     .method = KEEL_METHOD_GET, .method_str = "GET", .path = "/0123456789abcdefgh", .query = "",
     .host = "a", .version = 1, .cl = NO_CL, .keep_alive = 1},
    {"field line of exactly max_header_line (24)",
     RAW("GET / HTTP/1.1\r\nHost: a\r\nX-Pad: 0123456789abcdefg\r\n\r\n"), ALL, &LIM_HL, GET_ROOT,
     .host = "a", .version = 1, .cl = NO_CL, .keep_alive = 1},
    {"exactly max_headers (3) fields", RAW("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n"), ALL,
     &LIM_NH, GET_ROOT, .host = "a", .version = 1, .cl = NO_CL, .keep_alive = 1,
     HDRS("Host", "a", "A", "1", "B", "2")},
    {"head of exactly max_head (64)",
     RAW("GET / HTTP/1.1\r\nHost: a\r\nX: 0123456789abcdef0123456789abcdef\r\n\r\n"), ALL,
     &LIM_HEAD, GET_ROOT, .host = "a", .version = 1, .cl = NO_CL, .keep_alive = 1},

    /* --- incomplete ---------------------------------------------------- */
    {"empty input", RAW(""), 0},
    {"one CR", RAW("\r"), 0},
    {"an empty line only", RAW("\r\n"), 0},
    {"request line only", RAW("GET / HTTP/1.1\r\n"), 0},
    {"no final CRLF", RAW("GET / HTTP/1.1\r\nHost: a\r\n"), 0},
    {"final CR without LF yet", RAW("GET / HTTP/1.1\r\nHost: a\r\n\r"), 0},
    {"partial version", RAW("GET / HTTP/1."), 0},
    {"request line within limit, incomplete", RAW("GET /0123456789abcdefgh HTTP/1.1\r"), 0, &LIM_RL},

    /* --- request line -------------------------------------------------- */
    {"asterisk-form with GET", RAW("GET * HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"asterisk-form with POST", RAW("POST * HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"), -400},
    {"OPTIONS *x", RAW("OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"five leading empty lines", RAW("\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"request line over max_request_line", RAW("GET /0123456789abcdefghi HTTP/1.1\r\nHost: a\r\n\r\n"),
     -414, &LIM_RL},
    {"request line over max_request_line, incomplete",
     RAW("GET /0123456789abcdefghijklmnopqrstuvwxyz"), -414, &LIM_RL},
    {"method over max_request_line, incomplete", RAW("GETGETGETGETGETGETGETGETGETGETGETGETGET"), -414,
     &LIM_RL},
    {"empty method", RAW(" / HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"invalid byte in method", RAW("G(T / HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"control byte in method", RAW("GE\x01T / HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"non-ASCII byte in method", RAW("G\xc3\x89T / HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"tab after method", RAW("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"two spaces after method", RAW("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"two spaces before version", RAW("GET /  HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"space inside target", RAW("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"quote in target", RAW("GET /a\"b HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"fragment in target", RAW("GET /a#f HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"DEL in target", RAW("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"NUL in target", RAW("GET /a\0 HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"non-ASCII in target", RAW("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"relative target", RAW("GET a/b HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"authority-form", RAW("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"), -400},
    {"absolute-form without authority", RAW("GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"absolute-form scheme only", RAW("GET http:// HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"absolute-form other scheme", RAW("GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"absolute-form still needs Host in 1.1", RAW("GET http://a/ HTTP/1.1\r\n\r\n"), -400},
    {"HTTP/0.9-style request line", RAW("GET /\r\n\r\n"), -400},
    {"missing version", RAW("GET / \r\nHost: a\r\n\r\n"), -400},
    {"HTTP/2.0", RAW("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), -505},
    {"HTTP/1.2", RAW("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), -505},
    {"HTTP/0.9", RAW("GET / HTTP/0.9\r\n\r\n"), -505},
    {"HTTP/3.0", RAW("GET / HTTP/3.0\r\nHost: a\r\n\r\n"), -505},
    {"HTTP/1", RAW("GET / HTTP/1\r\nHost: a\r\n\r\n"), -400},
    {"HTTP/1.1x", RAW("GET / HTTP/1.1x\r\nHost: a\r\n\r\n"), -400},
    {"HTTP/11.1", RAW("GET / HTTP/11.1\r\nHost: a\r\n\r\n"), -400},
    {"HTTP/1.10", RAW("GET / HTTP/1.10\r\nHost: a\r\n\r\n"), -400},
    {"HTTP/a.b", RAW("GET / HTTP/a.b\r\nHost: a\r\n\r\n"), -400},
    {"lowercase http/1.1", RAW("GET / http/1.1\r\nHost: a\r\n\r\n"), -400},
    {"HTTPS/1.1", RAW("GET / HTTPS/1.1\r\nHost: a\r\n\r\n"), -400},
    {"space after version", RAW("GET / HTTP/1.1 \r\nHost: a\r\n\r\n"), -400},
    {"malformed version, incomplete", RAW("GET / HTTP/1x"), -400},

    /* --- bare CR / LF -------------------------------------------------- */
    {"bare LF before the request line", RAW("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"bare LF after a leading CRLF", RAW("\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"bare CR before the request line", RAW("\rGET / HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"bare LF ends the request line", RAW("GET / HTTP/1.1\nHost: a\r\n\r\n"), -400},
    {"bare CR in the request line", RAW("GET / HTTP/1.1\rHost: a\r\n\r\n"), -400},
    {"bare LF ends a field line", RAW("GET / HTTP/1.1\r\nHost: a\n\r\n"), -400},
    {"bare LF ends the head", RAW("GET / HTTP/1.1\r\nHost: a\r\n\n"), -400},
    {"bare LF ends everything", RAW("GET / HTTP/1.1\nHost: a\n\n"), -400},
    {"bare LF inside a value", RAW("GET / HTTP/1.1\r\nHost: a\r\nX: a\nb\r\n\r\n"), -400},
    {"bare LF after a field name", RAW("GET / HTTP/1.1\r\nHost: a\r\nX\n\r\n"), -400},
    {"bare CR inside a value", RAW("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"), -400},
    {"bare CR ending the head", RAW("GET / HTTP/1.1\r\nHost: a\r\n\rX"), -400},

    /* --- field lines --------------------------------------------------- */
    {"whitespace before colon", RAW("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), -400},
    {"tab before colon", RAW("GET / HTTP/1.1\r\nHost: a\r\nX\t: 1\r\n\r\n"), -400},
    {"space inside a field name", RAW("GET / HTTP/1.1\r\nHost: a\r\nX Y: 1\r\n\r\n"), -400},
    {"separator in a field name", RAW("GET / HTTP/1.1\r\nHost: a\r\nX(y): 1\r\n\r\n"), -400},
    {"@ in a field name", RAW("GET / HTTP/1.1\r\nHost: a\r\nX@: 1\r\n\r\n"), -400},
    {"non-ASCII field name", RAW("GET / HTTP/1.1\r\nHost: a\r\n\xc3\xa9: 1\r\n\r\n"), -400},
    {"empty field name", RAW("GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n"), -400},
    {"field line without a colon", RAW("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n"), -400},
    {"NUL in a field value", RAW("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n"), -400},
    {"DEL in a field value", RAW("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f" "b\r\n\r\n"), -400},
    {"control byte in a field value", RAW("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01" "b\r\n\r\n"), -400},
    {"ESC in a field value", RAW("GET / HTTP/1.1\r\nHost: a\r\nX: \x1b[0m\r\n\r\n"), -400},
    {"obs-fold with SP", RAW("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"), -400},
    {"obs-fold with HTAB", RAW("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n"), -400},
    {"whitespace before the first field", RAW("GET / HTTP/1.1\r\n Host: a\r\n\r\n"), -400},
    {"field line over max_header_line", RAW("GET / HTTP/1.1\r\nHost: a\r\nX-Pad: 0123456789abcdefgh\r\n\r\n"),
     -431, &LIM_HL},
    {"field line over max_header_line, incomplete",
     RAW("GET / HTTP/1.1\r\nHost: a\r\nX-Pad: 0123456789abcdefghijklmnop"), -431, &LIM_HL},
    {"field name over max_header_line, incomplete",
     RAW("GET / HTTP/1.1\r\nHost: a\r\nX-0123456789abcdefghijklmnop"), -431, &LIM_HL},
    {"more than max_headers fields", RAW("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"),
     -431, &LIM_NH},
    {"head over max_head", RAW("GET / HTTP/1.1\r\nHost: a\r\nX: 0123456789abcdef0123456789abcdefg\r\n\r\n"),
     -431, &LIM_HEAD},
    {"head over max_head, incomplete",
     RAW("GET / HTTP/1.1\r\nHost: a\r\nX: 0123456789abcdef0123456789abcdef\r\nY: 0123"), -431,
     &LIM_HEAD},
    {"head over max_head, incomplete inside a field",
     RAW("GET / HTTP/1.1\r\nHost: a\r\nX: 0123456789abcdef0123456789abcdef0123456789"), -431,
     &LIM_HEAD},
    /* Regression: a byte that would be refused with 400, but only past
     * max_head: every prefix long enough says 431, so the whole must too. */
    {"bad byte past max_head is a 431",
     RAW("GET / HTTP/1.1\r\nHost: a\r\nX: 0123456789abcdef0123456789abcdef01234\0\r\n\r\n"), -431,
     &LIM_HEAD},

    /* --- Host ---------------------------------------------------------- */
    {"missing Host in 1.1", RAW("GET / HTTP/1.1\r\n\r\n"), -400},
    {"missing Host in 1.1 with other fields", RAW("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"), -400},
    {"two Host fields", RAW("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), -400},
    {"two Host fields, different case", RAW("GET / HTTP/1.1\r\nhost: a\r\nHOST: b\r\n\r\n"), -400},
    {"two Host fields in 1.0", RAW("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"), -400},
    {"space in Host", RAW("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), -400},
    {"slash in Host", RAW("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), -400},
    {"userinfo in Host", RAW("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"), -400},

    /* --- framing ------------------------------------------------------- */
    {"Content-Length and Transfer-Encoding",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), -400},
    {"Transfer-Encoding and Content-Length",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"), -400},
    {"duplicate identical Content-Length",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"), -400},
    {"duplicate different Content-Length",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\nhello!"), -400},
    {"Content-Length list", RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello"), -400},
    {"Content-Length +5", RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello"), -400},
    {"Content-Length -1", RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"), -400},
    {"Content-Length 1 2", RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n"), -400},
    {"Content-Length 0x10", RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n"), -400},
    {"Content-Length 1.0", RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1.0\r\n\r\n"), -400},
    {"Content-Length empty", RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n"), -400},
    {"Content-Length of 19 digits",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000000000000000\r\n\r\n"), -400},
    {"Content-Length of 20 digits",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n"), -400},
    {"Content-Length of 19 digits, leading zero",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0000000000000000001\r\n\r\n"), -400},
    {"Transfer-Encoding: gzip", RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"), -501},
    {"Transfer-Encoding: identity",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n"), -501},
    {"Transfer-Encoding: gzip, chunked",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), -501},
    {"Transfer-Encoding gzip then chunked fields",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"), -501},
    /* Regression: chunked not last makes the length unknowable (RFC 9112
     * 6.3), a 400 even when the other coding is also unknown. */
    {"Transfer-Encoding: chunked, gzip",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"), -400},
    {"Transfer-Encoding chunked then gzip fields",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n"), -400},
    {"Transfer-Encoding: chunked, chunked",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"), -400},
    {"Transfer-Encoding chunked twice in two fields",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"), -400},
    {"Transfer-Encoding empty", RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n"), -400},
    {"Transfer-Encoding: chunked in HTTP/1.0",
     RAW("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), -400},
    {"Transfer-Encoding: xchunked",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n"), -501},

    /* --- Expect -------------------------------------------------------- */
    {"Expect: other", RAW("POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\n"), -417},
    {"Expect: 100-continue plus another",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, foo\r\nContent-Length: 1\r\n\r\n"), -417},
    {"Expect empty", RAW("POST / HTTP/1.1\r\nHost: a\r\nExpect:\r\nContent-Length: 1\r\n\r\n"), -417},
};

#define NCASES (sizeof(parse_cases) / sizeof(parse_cases[0]))

/* ---------------------------------------------------------------- checks */


/* 1 when s is empty or points inside [buf, buf+len). */
static int inside(keel_str s, const char *buf, size_t len)
{
    return s.len == 0 || (s.ptr >= buf && s.ptr + s.len <= buf + len);
}

/* Parses a heap copy of exactly len bytes, so ASan sees any overread. */
static int parse_copy(const char *raw, size_t len, keel_http_request_head *h,
                      const keel_http_limits *lim, char **copy_out)
{
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len)
        memcpy(copy, raw, len);
    int rc = keel_http_parse_request(copy, len, h, lim);
    if (copy_out)
        *copy_out = copy;
    else
        free(copy);
    return rc;
}

static void check_fields(const parse_case *c, const keel_http_request_head *h,
                         const char *buf, size_t len)
{
    if (h->method != c->method)
        case_fail(c->name, "method %d, want %d", h->method, c->method);
    if (!str_is(h->method_str, c->method_str))
        case_fail(c->name, "method_str %.*s, want %s", (int)h->method_str.len, h->method_str.ptr,
             c->method_str);
    if (!str_is(h->path, c->path))
        case_fail(c->name, "path \"%.*s\", want \"%s\"", (int)h->path.len, h->path.ptr, c->path);
    if (!str_is(h->query, c->query))
        case_fail(c->name, "query \"%.*s\", want \"%s\"", (int)h->query.len, h->query.ptr, c->query);
    if (!str_is(h->host, c->host ? c->host : ""))
        case_fail(c->name, "host \"%.*s\", want \"%s\"", (int)h->host.len, h->host.ptr,
             c->host ? c->host : "");
    if (h->version_minor != c->version)
        case_fail(c->name, "version 1.%d, want 1.%d", h->version_minor, c->version);
    if (h->content_length != c->cl)
        case_fail(c->name, "content_length %lld, want %lld", (long long)h->content_length,
             (long long)c->cl);
    if (h->chunked != c->chunked)
        case_fail(c->name, "chunked %u, want %u", h->chunked, c->chunked);
    if (h->keep_alive != c->keep_alive)
        case_fail(c->name, "keep_alive %u, want %u", h->keep_alive, c->keep_alive);
    if (h->expect_continue != c->expect_continue)
        case_fail(c->name, "expect_continue %u, want %u", h->expect_continue, c->expect_continue);
    if (h->upgrade != c->upgrade)
        case_fail(c->name, "upgrade %u, want %u", h->upgrade, c->upgrade);
    if (h->asterisk != c->asterisk)
        case_fail(c->name, "asterisk %u, want %u", h->asterisk, c->asterisk);
    if (h->error)
        case_fail(c->name, "error set on success: %s", h->error);
    if (!str_is(h->method_str, "") && !inside(h->method_str, buf, len))
        case_fail(c->name, "method_str outside the buffer");
    if (!inside(h->target, buf, len) || h->target.len == 0)
        case_fail(c->name, "target outside the buffer or empty");
    if (!inside(h->query, buf, len))
        case_fail(c->name, "query outside the buffer");
    /* the path of an absolute-form target without one is a static "/" */
    if (!inside(h->path, buf, len) && !str_is(h->path, "/"))
        case_fail(c->name, "path outside the buffer");
    if (c->hdrs) {
        size_t n = 0;
        while (c->hdrs[2 * n])
            n++;
        if (h->num_headers != n) {
            case_fail(c->name, "%zu headers, want %zu", h->num_headers, n);
            return;
        }
        for (size_t i = 0; i < n; i++) {
            if (!str_is(h->headers[i].name, c->hdrs[2 * i]) ||
                !str_is(h->headers[i].value, c->hdrs[2 * i + 1]))
                case_fail(c->name, "header %zu is \"%.*s: %.*s\", want \"%s: %s\"", i,
                     (int)h->headers[i].name.len, h->headers[i].name.ptr,
                     (int)h->headers[i].value.len, h->headers[i].value.ptr, c->hdrs[2 * i],
                     c->hdrs[2 * i + 1]);
        }
    }
    for (size_t i = 0; i < h->num_headers; i++)
        if (!inside(h->headers[i].name, buf, len) || !inside(h->headers[i].value, buf, len))
            case_fail(c->name, "header %zu outside the buffer", i);
}

/* The head fed one byte at a time to keel_http_parse_request_resume. Small
 * inputs move at every call (a fresh heap copy of exactly the bytes so far,
 * the previous one freed, so ASan catches a view left pointing at it) and
 * every step must answer what keel_http_parse_request answers on the same
 * bytes, error text included; big ones move every 4 KiB and must end with
 * the same answer. An accepted head then carries the table's fields. */
static void check_resumed(const parse_case *c, int small)
{
    const keel_http_limits *lim = c->lim ? c->lim : &LIM_DEFAULT;
    keel_http_header *hdrs = calloc(lim->max_headers + 1, sizeof(*hdrs));
    keel_http_header *hdrs1 = calloc(lim->max_headers + 1, sizeof(*hdrs1));
    assert_non_null(hdrs);
    assert_non_null(hdrs1);
    keel_http_request_head h, one;
    memset(&h, 0xa5, sizeof(h));
    h.headers = hdrs;
    one.headers = hdrs1;
    keel_http_parse_state st;
    memset(&st, 0, sizeof(st));

    int want = c->ret == ALL ? (int)c->raw_len : c->ret;
    char *buf = NULL;
    int rc = 0;
    size_t k;
    for (k = 1; k <= c->raw_len; k++) {
        if (small || buf == NULL || k % 4096 == 0) {
            char *nb = malloc(small ? k : c->raw_len);
            assert_non_null(nb);
            memcpy(nb, c->raw, small ? k : c->raw_len);
            free(buf);
            buf = nb;
        }
        rc = keel_http_parse_request_resume(buf, k, &h, lim, &st);
        if (small) {
            int r1 = keel_http_parse_request(buf, k, &one, lim);
            if (r1 != rc || (rc < 0 && strcmp(h.error, one.error) != 0)) {
                case_fail(c->name, "byte by byte, %zu bytes: %d (%s), one call: %d (%s)", k, rc,
                          rc < 0 ? h.error : "-", r1, r1 < 0 ? one.error : "-");
                break;
            }
        }
        if (rc != 0)
            break;
    }
    if (rc != want)
        case_fail(c->name, "byte by byte returned %d, want %d (%s)", rc, want,
                  rc < 0 ? h.error : "-");
    else if (rc > 0 && c->method_str)
        check_fields(c, &h, buf, k);
    if (h.headers != hdrs)
        case_fail(c->name, "byte by byte: head->headers was changed");
    free(buf);
    free(hdrs1);
    free(hdrs);
}

/* The whole input, then every prefix: an accepted head is 0 until it is
 * complete and then its length; a refused one 0 or the same status. */
static void check_case(const parse_case *c, int all_prefixes)
{
    const keel_http_limits *lim = c->lim ? c->lim : &LIM_DEFAULT;
    keel_http_header *hdrs = calloc(lim->max_headers + 1, sizeof(*hdrs));
    assert_non_null(hdrs);
    keel_http_request_head h;
    memset(&h, 0xa5, sizeof(h)); /* the parser must not rely on a zeroed head */
    h.headers = hdrs;

    int want = c->ret == ALL ? (int)c->raw_len : c->ret;
    char *copy;
    int rc = parse_copy(c->raw, c->raw_len, &h, lim, &copy);
    if (rc != want) {
        case_fail(c->name, "returned %d, want %d (error: %s)", rc, want, rc < 0 ? h.error : "-");
    } else if (rc > 0 && c->method_str) {
        check_fields(c, &h, copy, c->raw_len);
    } else if (rc < 0 && (!h.error || !*h.error)) {
        case_fail(c->name, "refused without an error text");
    }
    if (h.headers != hdrs)
        case_fail(c->name, "head->headers was changed");

    /* Re-entrant: a second call on the same bytes answers the same. */
    int again = keel_http_parse_request(copy, c->raw_len, &h, lim);
    if (again != rc)
        case_fail(c->name, "second call returned %d, first %d", again, rc);
    free(copy);

    size_t step = all_prefixes ? 1 : 997;
    for (size_t k = 0; k < c->raw_len; k += (k + 8 >= c->raw_len ? 1 : step)) {
        int r = parse_copy(c->raw, k, &h, lim, NULL);
        if (want > 0) {
            int w = k < (size_t)want ? 0 : want;
            if (r != w)
                case_fail(c->name, "prefix of %zu bytes returned %d, want %d", k, r, w);
        } else if (r != 0 && r != want) {
            case_fail(c->name, "prefix of %zu bytes returned %d, want 0 or %d (%s)", k, r, want,
                 h.error);
        }
    }
    free(hdrs);
    check_resumed(c, all_prefixes);
}

static void test_parse_table(void **state)
{
    (void)state;
    failures = 0;
    for (size_t i = 0; i < NCASES; i++)
        check_case(&parse_cases[i], 1);
    assert_int_equal(failures, 0);
}

/* Case names are unique, so a failure names one row. */
static void test_parse_table_names_unique(void **state)
{
    (void)state;
    failures = 0;
    for (size_t i = 0; i < NCASES; i++)
        for (size_t j = i + 1; j < NCASES; j++)
            if (strcmp(parse_cases[i].name, parse_cases[j].name) == 0)
                case_fail(parse_cases[i].name, "duplicate case name");
    assert_int_equal(failures, 0);
}

/* ---------------------------------------------------------------- big */

/* Inputs too large to write out, built from a recipe at the default
 * limits: request line, one field line, field count, whole head. */
typedef enum { BIG_LINE, BIG_FIELD, BIG_COUNT, BIG_HEAD } big_kind;

typedef struct big_case {
    const char *name;
    big_kind kind;
    size_t n;   /* line length / field line length / fields / head size */
    size_t cut; /* 0: the whole input; else only its first `cut` bytes */
    int ret;    /* ALL, 0 or -status */
} big_case;

/* "GET / HTTP/1.1\r\nHost: a\r\n" is 25 bytes */
static const big_case big_cases[] = {
    {"request line of 8192", BIG_LINE, 8192, 0, ALL},
    {"request line of 8193", BIG_LINE, 8193, 0, -414},
    {"request line of 8193, incomplete", BIG_LINE, 8193, 8194, -414},
    {"request line of 8192, incomplete", BIG_LINE, 8192, 8193, 0},
    {"request line of 100000, incomplete", BIG_LINE, 100000, 50000, -414},
    {"field line of 8192", BIG_FIELD, 8192, 0, ALL},
    {"field line of 8193", BIG_FIELD, 8193, 0, -431},
    {"field line of 8193, incomplete", BIG_FIELD, 8193, 25 + 8194, -431},
    {"field line of 8192, incomplete", BIG_FIELD, 8192, 25 + 8193, 0},
    {"field line of 50000, incomplete", BIG_FIELD, 50000, 30000, -431},
    {"100 fields", BIG_COUNT, 100, 0, ALL},
    {"101 fields", BIG_COUNT, 101, 0, -431},
    {"1000 fields", BIG_COUNT, 1000, 0, -431},
    {"head of 65536", BIG_HEAD, 65536, 0, ALL},
    {"head of 65537", BIG_HEAD, 65537, 0, -431},
    {"head of 65537, incomplete", BIG_HEAD, 65537, 65536, 0},
    {"head of 70000, incomplete", BIG_HEAD, 70000, 69000, -431},
};

static char *build_big(const big_case *b, size_t *len)
{
    size_t cap = b->n + 200000;
    char *s = malloc(cap), *w = s;
    assert_non_null(s);
    switch (b->kind) {
    case BIG_LINE: {
        /* "GET /aaa... HTTP/1.1": n bytes without CRLF */
        w += sprintf(w, "GET /");
        size_t pad = b->n - strlen("GET / HTTP/1.1");
        memset(w, 'a', pad);
        w += pad;
        w += sprintf(w, " HTTP/1.1\r\nHost: a\r\n\r\n");
        break;
    }
    case BIG_FIELD: {
        w += sprintf(w, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: ");
        size_t pad = b->n - strlen("X-Big: ");
        memset(w, 'v', pad);
        w += pad;
        w += sprintf(w, "\r\n\r\n");
        break;
    }
    case BIG_COUNT:
        w += sprintf(w, "GET / HTTP/1.1\r\nHost: a\r\n");
        for (size_t i = 1; i < b->n; i++)
            w += sprintf(w, "X-%zu: %zu\r\n", i, i);
        w += sprintf(w, "\r\n");
        break;
    case BIG_HEAD: {
        w += sprintf(w, "GET / HTTP/1.1\r\nHost: a\r\n");
        /* fields of up to 1000 bytes until the head is exactly n bytes */
        for (;;) {
            size_t left = b->n - (size_t)(w - s) - 2; /* final CRLF */
            if (left == 0)
                break;
            size_t line = left > 1000 ? 1000 : left;
            if (left - line < 6 && left > 1000)
                line = left - 6; /* keep the last field at least "X: \r\n"+1 */
            assert_true(line >= 5);
            w += sprintf(w, "X: ");
            memset(w, 'h', line - 5);
            w += line - 5;
            w += sprintf(w, "\r\n");
        }
        w += sprintf(w, "\r\n");
        break;
    }
    }
    *len = (size_t)(w - s);
    if (b->cut) {
        assert_true(b->cut < *len);
        *len = b->cut;
    }
    return s;
}

static void test_parse_big(void **state)
{
    (void)state;
    failures = 0;
    for (size_t i = 0; i < sizeof(big_cases) / sizeof(big_cases[0]); i++) {
        const big_case *b = &big_cases[i];
        size_t len;
        char *s = build_big(b, &len);
        if (b->kind == BIG_HEAD && !b->cut && len != b->n)
            case_fail(b->name, "built %zu bytes, want %zu", len, b->n);
        parse_case c = {.name = b->name, .raw = s, .raw_len = len, .ret = b->ret,
                        .lim = &LIM_DEFAULT};
        if (b->ret > 0) {
            keel_http_header hdrs[100];
            keel_http_request_head h = {.headers = hdrs};
            int rc = keel_http_parse_request(s, len, &h, &LIM_DEFAULT);
            if (rc != (int)len)
                case_fail(b->name, "returned %d, want %zu (%s)", rc, len, rc < 0 ? h.error : "-");
            else if (b->kind == BIG_COUNT && h.num_headers != b->n)
                case_fail(b->name, "%zu headers, want %zu", h.num_headers, b->n);
        }
        check_case(&c, 0);
        free(s);
    }
    assert_int_equal(failures, 0);
}

/* ---------------------------------------------------------------- misc */

static void test_parse_error_texts(void **state)
{
    (void)state;
    keel_http_header hdrs[100];
    keel_http_request_head h = {.headers = hdrs};
    const char *bad = "GET / HTTP/1.1\r\nHost : a\r\n\r\n";
    assert_int_equal(keel_http_parse_request(bad, strlen(bad), &h, &LIM_DEFAULT), -400);
    assert_non_null(h.error);
    assert_non_null(strstr(h.error, "colon"));
    /* a later success clears the previous error */
    const char *good = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_int_equal(keel_http_parse_request(good, strlen(good), &h, &LIM_DEFAULT),
                     (int)strlen(good));
    assert_null(h.error);
}

static void test_find_header(void **state)
{
    (void)state;
    keel_http_header hdrs[100];
    keel_http_request_head h = {.headers = hdrs};
    const char *req = "GET / HTTP/1.1\r\nHost: a\r\nX-Thing: 1\r\nx-thing: 2\r\n\r\n";
    assert_true(keel_http_parse_request(req, strlen(req), &h, &LIM_DEFAULT) > 0);
    const keel_http_header *f = keel_http_find_header(&h, "X-THING");
    assert_non_null(f);
    assert_true(str_is(f->value, "1")); /* the first one */
    assert_null(keel_http_find_header(&h, "X-Thin"));
    assert_null(keel_http_find_header(&h, "Missing"));
}

static void test_reason_and_method_names(void **state)
{
    (void)state;
    assert_string_equal(keel_http_reason(200), "OK");
    assert_string_equal(keel_http_reason(404), "Not Found");
    assert_string_equal(keel_http_reason(414), "URI Too Long");
    assert_string_equal(keel_http_reason(431), "Request Header Fields Too Large");
    assert_string_equal(keel_http_reason(505), "HTTP Version Not Supported");
    assert_string_equal(keel_http_reason(599), "Unknown");
    assert_null(keel_method_name(KEEL_METHOD_OTHER));
    assert_null(keel_method_name(KEEL_METHOD__COUNT));
    assert_null(keel_method_name((keel_method)-1));
    for (int m = KEEL_METHOD_GET; m < KEEL_METHOD__COUNT; m++) {
        const char *name = keel_method_name((keel_method)m);
        assert_non_null(name);
        /* the parser maps the name back to the same method */
        char req[64];
        int n = snprintf(req, sizeof(req), "%s / HTTP/1.0\r\n\r\n", name);
        keel_http_header hdrs[4];
        keel_http_request_head h = {.headers = hdrs};
        assert_int_equal(keel_http_parse_request(req, (size_t)n, &h, &LIM_DEFAULT), n);
        assert_int_equal(h.method, m);
    }
}

static void test_str_ieq(void **state)
{
    (void)state;
    assert_true(keel_str_ieq_c(KEEL_STR("Content-LENGTH"), "content-length"));
    assert_false(keel_str_ieq_c(KEEL_STR("Content-Lengt"), "content-length"));
    assert_false(keel_str_ieq_c(KEEL_STR("a["), "A{")); /* only letters fold */
    assert_true(keel_str_ieq_c(KEEL_STR(""), ""));
}

/* ---------------------------------------------------------------- chunked */

#define DATA(s) .data = (s), .data_len = sizeof(s) - 1
#define DONE 1
#define MORE 0

typedef struct chunk_case {
    const char *name;
    const char *raw;
    size_t raw_len;
    int ret;             /* DONE, MORE or -status */
    uint64_t max_body;   /* 0: 1 MiB */
    size_t max_trailer;  /* 0: 4096 */
    const char *data;    /* decoded bytes, checked when set */
    size_t data_len;
    size_t in;           /* raw bytes consumed when DONE; 0: the whole input */
} chunk_case;

static const chunk_case chunk_cases[] = {
    {"simple", RAW("5\r\nhello\r\n0\r\n\r\n"), DONE, DATA("hello")},
    {"empty body", RAW("0\r\n\r\n"), DONE, DATA("")},
    {"multiple chunks", RAW("5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"), DONE,
     DATA("hello world")},
    {"hex sizes, both cases", RAW("a\r\n0123456789\r\nB\r\nabcdefghijk\r\n0\r\n\r\n"), DONE,
     DATA("0123456789abcdefghijk")},
    {"leading zeros", RAW("0005\r\nhello\r\n000\r\n\r\n"), DONE, DATA("hello")},
    {"chunk data with CR LF and NUL inside", RAW("6\r\n\r\n\0\r\n\n\r\n0\r\n\r\n"), DONE,
     DATA("\r\n\0\r\n\n")},
    {"chunk extensions", RAW("5;name=value\r\nhello\r\n0;last\r\n\r\n"), DONE, DATA("hello")},
    {"chunk extensions with quotes", RAW("5;a=\"x y\";b\r\nhello\r\n0;z=1\r\n\r\n"),
     DONE, DATA("hello")},
    {"trailers are dropped", RAW("5\r\nhello\r\n0\r\nX-Sum: abc\r\nY:\r\n\r\n"), DONE, DATA("hello")},
    {"quoted extension value with a quoted-pair",
     RAW("5;a=\"x\\\"y\";b=\"\"\r\nhello\r\n0\r\n\r\n"), DONE, DATA("hello")},
    {"extension names and values are tokens", RAW("5;!#$%&'*+-.^_`|~09Az=x-1\r\nhello\r\n0\r\n\r\n"),
     DONE, DATA("hello")},
    {"trailers that may be trailers",
     RAW("0\r\nServer-Timing: db;dur=53\r\nDigest: sha-256=x\r\nTE-X: 1\r\nHosts: a\r\n"
         "Content-Lengths: 1\r\nT: 1\r\nExpect-CT: 1\r\nTransfer-Encodin: x\r\n\r\n"),
     DONE, DATA("")},
    {"bytes after the end are left alone", RAW("3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n"), DONE,
     DATA("abc"), .in = 13},
    {"incomplete size line", RAW("5\r"), MORE},
    {"incomplete data", RAW("5\r\nhel"), MORE, DATA("hel")},
    {"incomplete after data", RAW("5\r\nhello\r"), MORE, DATA("hello")},
    {"incomplete last chunk", RAW("5\r\nhello\r\n0\r\n"), MORE},
    {"incomplete trailer", RAW("0\r\nX: y\r\n"), MORE},
    {"body of exactly max_body", RAW("5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n"), DONE, .max_body = 10,
     DATA("helloworld")},
    {"16 hex digits are fine", RAW("000000000000000a\r\n0123456789\r\n0\r\n\r\n"), DONE,
     .max_body = UINT64_MAX, DATA("0123456789")},
    {"largest size waits for data", RAW("ffffffffffffffff\r\nabc"), MORE, .max_body = UINT64_MAX},

    {"size overflow: 17 digits", RAW("10000000000000000\r\n"), -400, .max_body = UINT64_MAX},
    {"size overflow: 17 f", RAW("fffffffffffffffff\r\n"), -400, .max_body = UINT64_MAX},
    {"size over max_body", RAW("b\r\nhello world\r\n0\r\n\r\n"), -413, .max_body = 10},
    {"sum over max_body", RAW("5\r\nhello\r\n6\r\nworld!\r\n0\r\n\r\n"), -413, .max_body = 10},
    {"size with more than 16 hex digits overflows", RAW("fffffffffffffffffffff\r\n"), -400},
    /* Regression: out + size wrapped around 2^64 and passed the check. */
    {"sum over max_body by wrapping", RAW("5\r\nhello\r\nffffffffffffffff\r\n"), -413,
     .max_body = UINT64_MAX},
    {"missing CRLF after data", RAW("5\r\nhelloX\r\n0\r\n\r\n"), -400},
    {"data longer than its size", RAW("5\r\nhello!\r\n0\r\n\r\n"), -400},
    {"CR without LF after data", RAW("5\r\nhello\rX0\r\n\r\n"), -400},
    {"bare LF after data", RAW("5\r\nhello\n0\r\n\r\n"), -400},
    {"bad hex digit", RAW("g\r\nhello\r\n0\r\n\r\n"), -400},
    {"empty size", RAW("\r\nhello\r\n0\r\n\r\n"), -400},
    {"negative size", RAW("-5\r\nhello\r\n0\r\n\r\n"), -400},
    {"0x prefix", RAW("0x5\r\nhello\r\n0\r\n\r\n"), -400},
    {"garbage after the size", RAW("5x\r\nhello\r\n0\r\n\r\n"), -400},
    {"space before the size", RAW(" 5\r\nhello\r\n0\r\n\r\n"), -400},
    /* Regression: a size is one run of hex digits. */
    {"two sizes", RAW("5 6\r\nhello\r\n0\r\n\r\n"), -400},
    {"size, BWS, garbage", RAW("5\tx\r\nhello\r\n0\r\n\r\n"), -400},
    {"NUL in an extension", RAW("5;a\0\r\nhello\r\n0\r\n\r\n"), -400},
    {"DEL in an extension", RAW("5;a\x7f\r\nhello\r\n0\r\n\r\n"), -400},
    {"bare LF after the size", RAW("5\nhello\r\n0\r\n\r\n"), -400},
    {"bare LF after an extension", RAW("5;a=b\nhello\r\n0\r\n\r\n"), -400},
    {"bare CR after the size", RAW("5\rhello\r\n0\r\n\r\n"), -400},
    {"bare LF ends the body", RAW("5\r\nhello\r\n0\r\n\n"), -400},
    {"bare LF after the last size", RAW("0\n\r\n"), -400},
    {"bare CR ends the body", RAW("0\r\n\rX"), -400},
    {"bare LF ends a trailer", RAW("0\r\nX: y\n\r\n"), -400},
    {"bare CR in a trailer", RAW("0\r\nX: y\rz\r\n\r\n"), -400},
    {"trailer without a colon", RAW("0\r\nNoColon\r\n\r\n"), -400},
    {"trailer with space before colon", RAW("0\r\nX : y\r\n\r\n"), -400},
    {"trailer obs-fold", RAW("0\r\nX: y\r\n z\r\n\r\n"), -400},
    {"trailer with a bad name byte", RAW("0\r\nX(: y\r\n\r\n"), -400},
    {"trailer with NUL in the value", RAW("0\r\nX: a\0b\r\n\r\n"), -400},
    {"trailer too large", RAW("0\r\nX-Long: aaaaaaaaaa\r\n\r\n"), -431, .max_trailer = 8},
    /* Regression (differential run against llhttp): an extension has a
     * name and, after '=', a value (RFC 9112 7.1.1); no whitespace
     * anywhere in a size line, not even the BWS the grammar allows around
     * ';' and '=' (RFC 9110 5.6.3: a sender MUST NOT generate it; llhttp
     * refuses it). */
    {"SP after the size", RAW("5 \r\nhello\r\n0\r\n\r\n"), -400},
    {"SP after a two-digit size", RAW("49 \r\n"), -400},
    {"HTAB after the size", RAW("5\t\r\nhello\r\n0\r\n\r\n"), -400},
    {"SP after the last size", RAW("5\r\nhello\r\n0 \r\n\r\n"), -400},
    {"BWS before ';'", RAW("5 ;a=b\r\nhello\r\n0\r\n\r\n"), -400},
    {"HTAB before ';' of the last chunk", RAW("5\r\nhello\r\n0\t;z=1\r\n\r\n"), -400},
    {"BWS after ';'", RAW("5; a=b\r\nhello\r\n0\r\n\r\n"), -400},
    {"BWS before '='", RAW("5;a =b\r\nhello\r\n0\r\n\r\n"), -400},
    {"BWS after '='", RAW("5;a= b\r\nhello\r\n0\r\n\r\n"), -400},
    {"empty extension", RAW("0;\r\n\r\n"), -400},
    {"empty extension after data", RAW("5;\r\nhello\r\n0\r\n\r\n"), -400},
    {"empty extension with BWS", RAW("5; \r\nhello\r\n0\r\n\r\n"), -400},
    {"empty extension before another", RAW("5;;a\r\nhello\r\n0\r\n\r\n"), -400},
    {"empty extension after another", RAW("5;a;\r\nhello\r\n0\r\n\r\n"), -400},
    {"extension without a name", RAW("5;=b\r\nhello\r\n0\r\n\r\n"), -400},
    {"extension without a value", RAW("5;a=\r\nhello\r\n0\r\n\r\n"), -400},
    {"extension without a value, then another", RAW("5;a=;b\r\nhello\r\n0\r\n\r\n"), -400},
    {"SP after an extension name", RAW("5;a \r\nhello\r\n0\r\n\r\n"), -400},
    {"SP after an extension value", RAW("5;a=b \r\nhello\r\n0\r\n\r\n"), -400},
    {"SP after a quoted extension value", RAW("5;a=\"b\" \r\nhello\r\n0\r\n\r\n"), -400},
    {"two extension names", RAW("5;a b\r\nhello\r\n0\r\n\r\n"), -400},
    {"two extension values", RAW("5;a=b c\r\nhello\r\n0\r\n\r\n"), -400},
    {"bytes after a quoted value", RAW("5;a=\"b\"c\r\nhello\r\n0\r\n\r\n"), -400},
    {"unterminated quoted value", RAW("5;a=\"b\r\nhello\r\n0\r\n\r\n"), -400},
    {"CTL in a quoted-pair", RAW("5;a=\"\\\x01\"\r\nhello\r\n0\r\n\r\n"), -400},
    {"separator in an extension name", RAW("5;a/b\r\nhello\r\n0\r\n\r\n"), -400},
    {"separator in an extension value", RAW("5;a=b/c\r\nhello\r\n0\r\n\r\n"), -400},
    /* Regression: fields that must not be trailers (RFC 9110 6.5.1) are
     * refused, in any case, wherever they stand in the trailer section. */
    {"trailer Transfer-Encoding", RAW("0\r\nTransfer-Encoding: chunked\r\n\r\n"), -400},
    {"trailer Content-Length", RAW("5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n"), -400},
    {"trailer Host", RAW("0\r\nHost: evil\r\n\r\n"), -400},
    {"trailer Trailer", RAW("0\r\nTrailer: X\r\n\r\n"), -400},
    {"trailer Content-Encoding", RAW("0\r\nContent-Encoding: gzip\r\n\r\n"), -400},
    {"trailer Content-Type", RAW("0\r\nContent-Type: text/plain\r\n\r\n"), -400},
    {"trailer Content-Range", RAW("0\r\nContent-Range: bytes 0-1/2\r\n\r\n"), -400},
    {"trailer Authorization", RAW("0\r\nAuthorization: Bearer x\r\n\r\n"), -400},
    {"trailer Proxy-Authorization", RAW("0\r\nProxy-Authorization: Basic x\r\n\r\n"), -400},
    {"trailer Cookie", RAW("0\r\nCookie: a=b\r\n\r\n"), -400},
    {"trailer Cache-Control", RAW("0\r\nCache-Control: no-cache\r\n\r\n"), -400},
    {"trailer Expect", RAW("0\r\nExpect: 100-continue\r\n\r\n"), -400},
    {"trailer Max-Forwards", RAW("0\r\nMax-Forwards: 1\r\n\r\n"), -400},
    {"trailer Pragma", RAW("0\r\nPragma: no-cache\r\n\r\n"), -400},
    {"trailer Range", RAW("0\r\nRange: bytes=0-1\r\n\r\n"), -400},
    {"trailer TE", RAW("0\r\nTE: trailers\r\n\r\n"), -400},
    {"trailer If-Match", RAW("0\r\nIf-Match: *\r\n\r\n"), -400},
    {"trailer If-None-Match", RAW("0\r\nIf-None-Match: *\r\n\r\n"), -400},
    {"trailer If-Modified-Since", RAW("0\r\nIf-Modified-Since: x\r\n\r\n"), -400},
    {"trailer If-Unmodified-Since", RAW("0\r\nIf-Unmodified-Since: x\r\n\r\n"), -400},
    {"trailer If-Range", RAW("0\r\nIf-Range: x\r\n\r\n"), -400},
    {"trailer Connection", RAW("0\r\nConnection: close\r\n\r\n"), -400},
    {"trailer Keep-Alive", RAW("0\r\nKeep-Alive: timeout=5\r\n\r\n"), -400},
    {"trailer Upgrade", RAW("0\r\nUpgrade: h2c\r\n\r\n"), -400},
    {"trailer name in upper case", RAW("0\r\nTRANSFER-ENCODING: chunked\r\n\r\n"), -400},
    {"trailer name in mixed case", RAW("0\r\ncOnTeNt-LeNgTh: 0\r\n\r\n"), -400},
    {"forbidden trailer after an allowed one", RAW("0\r\nX-Sum: 1\r\nhost: a\r\n\r\n"), -400},
    {"forbidden trailer with an empty value", RAW("0\r\nTE:\r\n\r\n"), -400},
    {"trailers too large together", RAW("0\r\nA: 12\r\nB: 34\r\nC: 56\r\n\r\n"), -431,
     .max_trailer = 12},
};

#define NCHUNK (sizeof(chunk_cases) / sizeof(chunk_cases[0]))

static int run_chunked(const chunk_case *c, char *buf, size_t len, keel_http_chunked *d,
                       const char **err)
{
    return keel_http_chunked_decode(d, buf, len, c->max_body ? c->max_body : 1u << 20,
                                    c->max_trailer ? c->max_trailer : 4096, err);
}

/* Feeds c->raw in pieces ending at cuts[0..ncuts), the last being the
 * whole input; each byte is written into the buffer only when it
 * "arrives", so reading ahead would be seen. Returns the first non-zero
 * result (or the last 0), with *d and buf as the decoder left them. */
static int feed(const chunk_case *c, const size_t *cuts, size_t ncuts, char *buf,
                keel_http_chunked *d, const char **err, size_t *fed)
{
    memset(d, 0, sizeof(*d));
    memset(buf, 0x5a, c->raw_len + 1);
    size_t have = 0;
    int rc = 0;
    for (size_t i = 0; i < ncuts; i++) {
        memcpy(buf + have, c->raw + have, cuts[i] - have);
        have = cuts[i];
        *fed = have;
        rc = run_chunked(c, buf, have, d, err);
        if (rc != 0)
            return rc;
    }
    return rc;
}

static void check_chunk_result(const chunk_case *c, const char *how, int rc,
                               const keel_http_chunked *d, const char *buf, const char *err,
                               size_t fed)
{
    if (rc != c->ret) {
        case_fail(c->name, "%s: returned %d, want %d (%s)", how, rc, c->ret, err ? err : "-");
        return;
    }
    if (rc < 0 && !err)
        case_fail(c->name, "%s: refused without an error text", how);
    if (c->data && rc >= 0) {
        size_t n = c->data_len;
        if (d->out != n || memcmp(buf, c->data, n) != 0)
            case_fail(c->name, "%s: decoded %zu bytes \"%.*s\", want \"%s\"", how, d->out,
                 (int)d->out, buf, c->data);
    }
    if (rc == DONE) {
        size_t in = c->in ? c->in : c->raw_len;
        if (d->in != in)
            case_fail(c->name, "%s: consumed %zu raw bytes, want %zu", how, d->in, in);
        if (fed > d->in && memcmp(buf + d->in, c->raw + d->in, fed - d->in) != 0)
            case_fail(c->name, "%s: bytes after the body were changed", how);
    }
}

static void test_chunked_table(void **state)
{
    (void)state;
    failures = 0;
    for (size_t i = 0; i < NCHUNK; i++) {
        const chunk_case *c = &chunk_cases[i];
        char *buf = malloc(c->raw_len + 1);
        size_t *cuts = malloc((c->raw_len + 1) * sizeof(size_t));
        assert_non_null(buf);
        assert_non_null(cuts);
        keel_http_chunked d;
        const char *err;
        size_t fed = 0;

        /* one shot */
        size_t whole = c->raw_len;
        err = NULL;
        int rc = feed(c, &whole, 1, buf, &d, &err, &fed);
        check_chunk_result(c, "one shot", rc, &d, buf, err, fed);

        /* byte at a time */
        for (size_t k = 0; k < c->raw_len; k++)
            cuts[k] = k + 1;
        err = NULL;
        rc = feed(c, cuts, c->raw_len, buf, &d, &err, &fed);
        check_chunk_result(c, "byte at a time", rc, &d, buf, err, fed);

        /* split in two at every point */
        for (size_t k = 0; k <= c->raw_len; k++) {
            size_t two[2] = {k, c->raw_len};
            char how[64];
            snprintf(how, sizeof(how), "split at %zu", k);
            err = NULL;
            rc = feed(c, two, 2, buf, &d, &err, &fed);
            check_chunk_result(c, how, rc, &d, buf, err, fed);
        }

        /* once done, more calls keep answering done */
        if (c->ret == DONE) {
            rc = feed(c, &whole, 1, buf, &d, &err, &fed);
            size_t in = d.in;
            if (run_chunked(c, buf, c->raw_len, &d, &err) != DONE || d.in != in)
                case_fail(c->name, "a call after the end did not answer done");
        }
        free(cuts);
        free(buf);
    }
    assert_int_equal(failures, 0);
}

static void test_chunked_long_extension(void **state)
{
    (void)state;
    /* A size line is bounded: an endless extension is refused. */
    size_t n = 10000;
    char *buf = malloc(n);
    assert_non_null(buf);
    buf[0] = '5';
    buf[1] = ';';
    memset(buf + 2, 'e', n - 2);
    keel_http_chunked d = {0};
    const char *err = NULL;
    assert_int_equal(keel_http_chunked_decode(&d, buf, n, 1 << 20, 4096, &err), -400);
    assert_non_null(err);
    /* a long but bounded one is fine */
    memset(&d, 0, sizeof(d));
    const char *pre = "5;";
    size_t ext = 4000;
    size_t len = strlen(pre) + ext + strlen("\r\nhello\r\n0\r\n\r\n");
    memcpy(buf, pre, 2);
    memset(buf + 2, 'e', ext);
    memcpy(buf + 2 + ext, "\r\nhello\r\n0\r\n\r\n", len - 2 - ext);
    assert_int_equal(keel_http_chunked_decode(&d, buf, len, 1 << 20, 4096, NULL), 1);
    assert_int_equal(d.out, 5);
    assert_memory_equal(buf, "hello", 5);
    free(buf);
}

static void test_chunked_error_may_be_null(void **state)
{
    (void)state;
    char buf[] = "zz\r\n";
    keel_http_chunked d = {0};
    assert_int_equal(keel_http_chunked_decode(&d, buf, 4, 100, 100, NULL), -400);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_parse_table_names_unique),
        cmocka_unit_test(test_parse_big),
        cmocka_unit_test(test_parse_error_texts),
        cmocka_unit_test(test_find_header),
        cmocka_unit_test(test_reason_and_method_names),
        cmocka_unit_test(test_str_ieq),
        cmocka_unit_test(test_chunked_table),
        cmocka_unit_test(test_chunked_long_extension),
        cmocka_unit_test(test_chunked_error_may_be_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
