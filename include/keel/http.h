/* keel/http.h — the strict, incremental, zero-copy HTTP/1.1 request parser
 * (RFC 9112) and its chunked body decoder.
 *
 * The parser allocates nothing: every keel_str it fills points into the
 * caller's buffer. It is re-entrant on more input: call it again with the
 * same buffer grown by what was read (keel_http_parse_request_resume
 * continues where the last call stopped instead of starting over), and it
 * answers
 *
 *     > 0   the head is complete; the value is its length in bytes
 *     0     incomplete: read more and call again
 *     < 0   the request is refused: the value is minus the HTTP status to
 *           answer (400, 414, 417, 431, 501, 505); head->error says why.
 *
 * Where RFC 9112 lets a server be lenient (bare LF line endings, duplicate
 * identical Content-Length, whitespace before the colon), keel refuses.
 * docs/http.md lists every rule.
 */
#ifndef KEEL_HTTP_H
#define KEEL_HTTP_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_http_header {
    keel_str name;
    keel_str value;
} keel_http_header;

typedef struct keel_http_limits {
    size_t max_request_line; /* request line, CRLF excluded: else 414 */
    size_t max_header_line;  /* one field line: else 431 */
    size_t max_headers;      /* number of fields: else 431 */
    size_t max_head;         /* whole head: else 431 */
} keel_http_limits;

/* Methods keel implements; anything else is answered 501. */
typedef enum keel_method {
    KEEL_METHOD_OTHER = 0,
    KEEL_METHOD_GET,
    KEEL_METHOD_HEAD,
    KEEL_METHOD_POST,
    KEEL_METHOD_PUT,
    KEEL_METHOD_DELETE,
    KEEL_METHOD_PATCH,
    KEEL_METHOD_OPTIONS,
    KEEL_METHOD__COUNT
} keel_method;

typedef struct keel_http_request_head {
    keel_str method_str;
    keel_method method;
    keel_str target; /* as sent */
    keel_str path;   /* origin-form path ("/..."), or "*" for OPTIONS * */
    keel_str query;  /* after '?', without it; empty when none */
    int version_minor; /* 0 or 1 */

    keel_http_header *headers; /* caller's array of max_headers entries */
    size_t num_headers;

    keel_str host;
    int64_t content_length; /* -1 when absent */
    unsigned chunked : 1;
    unsigned keep_alive : 1;
    unsigned expect_continue : 1;
    unsigned upgrade : 1;
    unsigned asterisk : 1;

    const char *error; /* static text, set when the parser refuses */
} keel_http_request_head;

/* Parses a request head from buf[0..len). `head->headers` must point at an
 * array of lim->max_headers entries. See the top of this file for the
 * return value. Leading empty lines (CRLF) before the request line are
 * skipped, as RFC 9112 section 2.2 recommends; they count in the length. */
int keel_http_parse_request(const char *buf, size_t len,
                            keel_http_request_head *head,
                            const keel_http_limits *lim);

/* How far keel_http_parse_request_resume got in an incomplete head: the
 * stage and offsets from the start of the head (never pointers, so the
 * caller may move its buffer between calls; the views already filled in
 * are rebased). Zero it before the first call of each head; the fields are
 * private. */
typedef struct keel_http_parse_state {
    uintptr_t base;        /* buf at the last call */
    size_t pos;            /* the next byte to look at */
    size_t line;           /* start of the request line / current field line */
    size_t mark, mark2;    /* token boundaries in the current line */
    size_t expect_at;      /* Expect value offset + 1; 0 when none */
    size_t expect_len;
    unsigned stage;
    unsigned empty_lines;
    unsigned seen_host, seen_cl;
    unsigned te_fields, te_codings, te_chunked_at, te_unknown;
    unsigned conn_close, conn_keep_alive, conn_upgrade;
} keel_http_parse_state;

/* keel_http_parse_request on buf[0..len), a longer copy of the bytes of
 * the previous call (possibly moved): only the bytes after where that call
 * stopped are scanned, so a head arriving in many small reads is scanned
 * once. Answers exactly what keel_http_parse_request would on the same
 * bytes. After a non-zero answer the next call starts a new head. */
int keel_http_parse_request_resume(const char *buf, size_t len,
                                   keel_http_request_head *head,
                                   const keel_http_limits *lim,
                                   keel_http_parse_state *st);

/* Moves the views of head that point into old[0..len] (a buffer that was
 * moved or grown) to the same offsets in nw; views elsewhere (a static
 * "/" for an absolute-form path) are left alone. */
void keel_http_head_rebase(keel_http_request_head *head, uintptr_t old, size_t len,
                           const char *nw);

/* State of an in-place chunked body decoder; zero it to start. */
typedef struct keel_http_chunked {
    size_t in;         /* raw bytes consumed from the body start */
    size_t out;        /* decoded bytes, stored from the body start */
    uint64_t remaining; /* bytes left in the current chunk */
    size_t line;       /* bytes in the current size/trailer line */
    size_t trailer;    /* trailer bytes so far */
    unsigned state;
    unsigned digits;
    uint32_t names;    /* trailer name: forbidden fields it may still be */
} keel_http_chunked;

/* Decodes the chunked body in buf[0..len) in place: the data goes to
 * buf[0..d->out). Call again with the same buf and a larger len as more
 * arrives. Returns 1 when the last chunk and the trailers (parsed and
 * dropped) are complete, d->in being the raw length; 0 when more input is
 * needed; or minus a status: -400 (bad framing, size overflow, a chunk
 * extension outside RFC 9112's grammar, a trailer field that must not be
 * a trailer: Content-Length, Transfer-Encoding, Host, ... — RFC 9110
 * section 6.5.1), -413 (the data would pass max_body), -431 (trailers
 * over max_trailer bytes). */
int keel_http_chunked_decode(keel_http_chunked *d, char *buf, size_t len,
                             uint64_t max_body, size_t max_trailer,
                             const char **error);

/* The reason phrase of a status ("Not Found"); "Unknown" for others. */
const char *keel_http_reason(int status);

/* The method's name ("GET"), or NULL for KEEL_METHOD_OTHER. */
const char *keel_method_name(keel_method m);

/* Finds a header by name, case-insensitively; returns NULL when absent. */
const keel_http_header *keel_http_find_header(const keel_http_request_head *h,
                                              const char *name);

#ifdef __cplusplus
}
#endif
#endif
