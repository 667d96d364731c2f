/* http_parser.c — strict HTTP/1.1 request head parser and chunked decoder.
 *
 * Design: like picohttpparser, the parser allocates nothing and points into
 * the caller's buffer. Unlike it, it does not rescan: keel_http_parse_state
 * remembers how far an incomplete head was parsed — the stage (request
 * line, field name, value, ...) and offsets, never pointers, because the
 * connection may move its buffer between reads — so a head arriving in
 * many small reads is scanned once. Errors are detected as early as the
 * bytes that prove them arrive (a bad method byte is refused before the
 * line ends), and the answer at every length is the one a single call on
 * that many bytes would give (tests/unit/core/test_http_parser.c feeds
 * every case byte by byte into moving buffers to hold it to that).
 *
 * Every rule where RFC 9112 allows leniency is taken strictly: CRLF only,
 * one SP between request-line parts, no whitespace before a field colon, no
 * obs-fold, one Content-Length, Transfer-Encoding only "chunked", one Host;
 * in a chunked body, no whitespace in a size line, chunk extensions to the
 * letter of the grammar, and no framing, routing or request-control field
 * among the trailers.
 */
#include "keel/http.h"

#include <limits.h>
#include <stdint.h>

/* RFC 9110 tchar. */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1,
    ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1,
    ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0' ... '9'] = 1,
    ['A' ... 'Z'] = 1,
    ['a' ... 'z'] = 1,
};

/* Bytes allowed in a request-target: RFC 3986 unreserved, sub-delims,
 * ":" "@" "/" "?" and "%" (escapes are checked by the router). */
static const unsigned char target_ok[256] = {
    ['0' ... '9'] = 1,
    ['A' ... 'Z'] = 1,
    ['a' ... 'z'] = 1,
    ['-'] = 1, ['.'] = 1, ['_'] = 1, ['~'] = 1, ['!'] = 1, ['$'] = 1,
    ['&'] = 1, ['\''] = 1, ['('] = 1, [')'] = 1, ['*'] = 1, ['+'] = 1,
    [','] = 1, [';'] = 1, ['='] = 1, [':'] = 1, ['@'] = 1, ['/'] = 1,
    ['?'] = 1, ['%'] = 1,
};

/* Field-value bytes: VCHAR (0x21-0x7e), obs-text (0x80-0xff), SP, HTAB. */
static const unsigned char value_ok[256] = {
    ['\t'] = 1,
    [0x20 ... 0x7e] = 1,
    [0x80 ... 0xff] = 1,
};

int keel_str_ieq_c(keel_str a, const char *c)
{
    /* one walk, no strlen: c ends early (a NUL) or a.len bytes match */
    for (size_t i = 0; i < a.len; i++) {
        unsigned char x = (unsigned char)a.ptr[i], y = (unsigned char)c[i];
        if (x == y) {
            if (!y)
                return 0; /* a NUL in a, where c ends */
            continue;
        }
        if (x >= 'A' && x <= 'Z')
            x += 32;
        if (y >= 'A' && y <= 'Z')
            y += 32;
        if (x != y)
            return 0; /* also where c ends before a */
    }
    return c[a.len] == '\0';
}

#define REFUSE(st, msg)                                                        \
    do {                                                                       \
        h->error = (msg);                                                      \
        return -(st);                                                          \
    } while (0)

static keel_method method_of(keel_str m)
{
    switch (m.len) {
    case 3:
        if (memcmp(m.ptr, "GET", 3) == 0)
            return KEEL_METHOD_GET;
        if (memcmp(m.ptr, "PUT", 3) == 0)
            return KEEL_METHOD_PUT;
        break;
    case 4:
        if (memcmp(m.ptr, "HEAD", 4) == 0)
            return KEEL_METHOD_HEAD;
        if (memcmp(m.ptr, "POST", 4) == 0)
            return KEEL_METHOD_POST;
        break;
    case 5:
        if (memcmp(m.ptr, "PATCH", 5) == 0)
            return KEEL_METHOD_PATCH;
        break;
    case 6:
        if (memcmp(m.ptr, "DELETE", 6) == 0)
            return KEEL_METHOD_DELETE;
        break;
    case 7:
        if (memcmp(m.ptr, "OPTIONS", 7) == 0)
            return KEEL_METHOD_OPTIONS;
        break;
    }
    return KEEL_METHOD_OTHER;
}

const char *keel_method_name(keel_method m)
{
    static const char *const names[KEEL_METHOD__COUNT] = {
        NULL, "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
    return (unsigned)m < KEEL_METHOD__COUNT ? names[m] : NULL;
}

/* Splits a comma-separated list value and calls fn on each trimmed,
 * non-empty element. Stops and returns fn's non-zero result. */
static int each_list_item(keel_str v, int (*fn)(keel_str item, void *arg),
                          void *arg)
{
    size_t i = 0;
    while (i <= v.len) {
        size_t start = i;
        while (i < v.len && v.ptr[i] != ',')
            i++;
        size_t end = i;
        while (start < end && (v.ptr[start] == ' ' || v.ptr[start] == '\t'))
            start++;
        while (end > start && (v.ptr[end - 1] == ' ' || v.ptr[end - 1] == '\t'))
            end--;
        if (end > start) {
            keel_str item = {v.ptr + start, end - start};
            int rc = fn(item, arg);
            if (rc)
                return rc;
        }
        i++;
    }
    return 0;
}

static int conn_item(keel_str item, void *arg)
{
    keel_http_parse_state *f = arg;
    if (keel_str_ieq_c(item, "close"))
        f->conn_close = 1;
    else if (keel_str_ieq_c(item, "keep-alive"))
        f->conn_keep_alive = 1;
    else if (keel_str_ieq_c(item, "upgrade"))
        f->conn_upgrade = 1;
    return 0;
}

/* te_codings: codings seen; te_chunked_at: index of "chunked" + 1, 0 when
 * none; te_unknown: 1 another coding, 2 chunked twice (a framing error). */
static int te_item(keel_str item, void *arg)
{
    keel_http_parse_state *t = arg;
    if (keel_str_ieq_c(item, "chunked")) {
        if (t->te_chunked_at)
            t->te_unknown = 2;
        t->te_chunked_at = t->te_codings + 1;
    } else {
        t->te_unknown = t->te_unknown ? t->te_unknown : 1;
    }
    t->te_codings++;
    return 0;
}

/* Content-Length: 1*DIGIT, no sign, no list, no overflow. */
static int parse_content_length(keel_str v, int64_t *out)
{
    if (v.len == 0 || v.len > 18)
        return -1;
    int64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        char c = v.ptr[i];
        if (c < '0' || c > '9')
            return -1;
        n = n * 10 + (c - '0');
    }
    *out = n;
    return 0;
}

/* Bytes allowed in a Host value: letters, digits and -._~!$&'()*+,;=:[]% */
static const unsigned char host_ok[256] = {
    ['-'] = 1, ['.'] = 1, ['_'] = 1, ['~'] = 1, ['!'] = 1, ['$'] = 1,
    ['&'] = 1, ['\''] = 1, ['('] = 1, [')'] = 1, ['*'] = 1, ['+'] = 1,
    [','] = 1, [';'] = 1, ['='] = 1, [':'] = 1, ['['] = 1, [']'] = 1,
    ['%'] = 1,
    ['0' ... '9'] = 1,
    ['A' ... 'Z'] = 1,
    ['a' ... 'z'] = 1,
};

/* Host = uri-host [ ":" port ]: reg-name / IPv4 / "[" IP-literal "]". */
static int host_valid(keel_str v)
{
    for (size_t i = 0; i < v.len; i++)
        if (!host_ok[(unsigned char)v.ptr[i]])
            return 0;
    return 1;
}

/* HTTP-version = "HTTP/" DIGIT "." DIGIT, then CRLF, from p (the byte
 * after the target's SP) to end: 1 when complete (the LF is p[9]), 0 when
 * more is needed, or a refusal. At most 10 bytes: rescanned on resume. */
static int parse_version(const char *p, const char *end, keel_http_request_head *h)
{
    static const char proto[] = "HTTP/";
    for (int i = 0; i < 5; i++, p++) {
        if (p == end)
            return 0;
        if (*p != proto[i])
            REFUSE(400, "malformed HTTP version");
    }
    if (end - p < 3)
        goto partial_version;
    if (p[0] < '0' || p[0] > '9' || p[1] != '.' || p[2] < '0' || p[2] > '9')
        REFUSE(400, "malformed HTTP version");
    if (p[0] != '1' || (p[2] != '0' && p[2] != '1'))
        REFUSE(505, "only HTTP/1.0 and HTTP/1.1 are supported");
    h->version_minor = p[2] - '0';
    p += 3;
    if (p == end)
        return 0;
    if (*p != '\r')
        REFUSE(400, "request line must end with CRLF");
    p++;
    if (p == end)
        return 0;
    if (*p != '\n')
        REFUSE(400, "bare CR in request line");
    return 1;

partial_version:
    /* Refuse what is already provably wrong. */
    for (const char *q = p; q < end; q++) {
        size_t k = (size_t)(q - p);
        if ((k == 1 && *q != '.') || (k != 1 && (*q < '0' || *q > '9')))
            REFUSE(400, "malformed HTTP version");
    }
    return 0;
}

/* Splits the request target into path and query; validates its form. */
static int split_target(keel_http_request_head *h)
{
    keel_str t = h->target;
    if (t.len == 1 && t.ptr[0] == '*') {
        if (h->method != KEEL_METHOD_OPTIONS)
            REFUSE(400, "asterisk-form is only allowed with OPTIONS");
        h->asterisk = 1;
        h->path = t;
        h->query = (keel_str){t.ptr + 1, 0};
        return 0;
    }
    if (t.ptr[0] != '/') {
        /* absolute-form: "http://" authority path-abempty [ "?" query ] */
        size_t skip = 0;
        if (t.len > 7 && keel_str_ieq_c((keel_str){t.ptr, 7}, "http://"))
            skip = 7;
        else if (t.len > 8 && keel_str_ieq_c((keel_str){t.ptr, 8}, "https://"))
            skip = 8;
        else
            REFUSE(400, "request target must be origin-form or absolute-form");
        size_t i = skip;
        while (i < t.len && t.ptr[i] != '/' && t.ptr[i] != '?')
            i++;
        if (i == skip)
            REFUSE(400, "absolute-form target without a host");
        h->host = (keel_str){t.ptr + skip, i - skip};
        t = (keel_str){t.ptr + i, t.len - i};
        if (t.len == 0 || t.ptr[0] == '?') {
            /* empty path means "/"; point at a static string */
            keel_str q = t.len ? (keel_str){t.ptr + 1, t.len - 1}
                               : (keel_str){t.ptr, 0};
            h->path = KEEL_STR("/");
            h->query = q;
            return 0;
        }
    }
    const char *qm = memchr(t.ptr, '?', t.len);
    if (qm) {
        h->path = (keel_str){t.ptr, (size_t)(qm - t.ptr)};
        h->query = (keel_str){qm + 1, t.len - (size_t)(qm - t.ptr) - 1};
    } else {
        h->path = t;
        h->query = (keel_str){t.ptr + t.len, 0};
    }
    return 0;
}

enum {
    PS_NEW = 0, /* a zeroed state */
    PS_LEAD,    /* empty lines before the request line */
    PS_METHOD,
    PS_TARGET,
    PS_VERSION,
    PS_FIELD,   /* at the start of a field line, or of the final CRLF */
    PS_NAME,
    PS_OWS,     /* after the colon */
    PS_VALUE,
    PS_CR,      /* at the CR ending a field value */
    PS_DONE     /* answered (a head or a refusal): the next call starts over */
};

/* The buffer moved since the last call: move the views already filled in
 * (those into the old bytes; an absolute-form path may be a static "/"). */
void keel_http_head_rebase(keel_http_request_head *h, uintptr_t old, size_t len, const char *nw)
{
#define RB(s)                                                                  \
    if ((s).ptr && (uintptr_t)(s).ptr >= old && (uintptr_t)(s).ptr <= old + len) \
        (s).ptr = nw + ((uintptr_t)(s).ptr - old);
    RB(h->method_str);
    RB(h->target);
    RB(h->path);
    RB(h->query);
    RB(h->host);
    for (size_t i = 0; i < h->num_headers; i++) {
        RB(h->headers[i].name);
        RB(h->headers[i].value);
    }
#undef RB
}

static int parse_head(const char *buf, size_t len, keel_http_request_head *h,
                      const keel_http_limits *lim, keel_http_parse_state *st)
{
    const char *end = buf + len;
    const char *p = buf + st->pos;
    const char *rl_end = end, *lend = end;
    int rc;

    if (st->stage >= PS_METHOD && st->stage <= PS_VERSION) {
        /* Scan the request line no further than its limit. */
        size_t cap = st->line + lim->max_request_line + 2;
        rl_end = buf + (len < cap ? len : cap);
    } else if (st->stage > PS_FIELD) {
        goto field_limit;
    }
    switch (st->stage) {
    case PS_LEAD: goto lead;
    case PS_METHOD: goto method;
    case PS_TARGET: goto target;
    case PS_VERSION: goto version;
    case PS_FIELD: goto field;
    }

lead:
    /* RFC 9112 2.2: ignore at least one empty line before the request. */
    while (p < end && *p == '\r') {
        if (p + 1 == end)
            goto more;
        if (p[1] != '\n')
            REFUSE(400, "bare CR before request line");
        p += 2;
        if (++st->empty_lines > 4)
            REFUSE(400, "too many empty lines before request line");
    }
    if (p == end)
        goto more;
    if (*p == '\n')
        REFUSE(400, "bare LF before request line");
    st->line = st->mark = (size_t)(p - buf);
    st->stage = PS_METHOD;
    {
        size_t cap = st->line + lim->max_request_line + 2;
        rl_end = buf + (len < cap ? len : cap);
    }

method:
    while (p < rl_end && tchar[(unsigned char)*p])
        p++;
    if (p == rl_end)
        goto rl_partial;
    if (*p != ' ' || p == buf + st->mark)
        REFUSE(400, "invalid character in method");
    h->method_str = (keel_str){buf + st->mark, (size_t)(p - buf) - st->mark};
    h->method = method_of(h->method_str);
    p++;
    st->mark = (size_t)(p - buf);
    st->stage = PS_TARGET;

target:
    while (p < rl_end && target_ok[(unsigned char)*p])
        p++;
    if (p == rl_end)
        goto rl_partial;
    if (*p != ' ' || p == buf + st->mark)
        REFUSE(400, "invalid character in request target");
    h->target = (keel_str){buf + st->mark, (size_t)(p - buf) - st->mark};
    p++;
    st->mark = (size_t)(p - buf);
    st->stage = PS_VERSION;

version:
    p = buf + st->mark;
    rc = parse_version(p, rl_end, h);
    if (rc < 0)
        return rc;
    if (rc == 0)
        goto rl_partial;
    p += 10;
    if (split_target(h) < 0)
        return -400;
    st->stage = PS_FIELD;

field:
    /* Header fields, one line at a time. */
    if ((size_t)(p - buf) > lim->max_head)
        REFUSE(431, "request head too large");
    if (p == end)
        goto more;
    if (*p == '\r') {
        if (p + 1 == end)
            goto more;
        if (p[1] != '\n')
            REFUSE(400, "bare CR in header section");
        p += 2;
        goto head_done;
    }
    if (*p == '\n')
        REFUSE(400, "bare LF in header section");
    if (*p == ' ' || *p == '\t')
        REFUSE(400, "obsolete line folding is not accepted");
    st->line = (size_t)(p - buf);
    st->stage = PS_NAME;

field_limit: {
    /* Scan no further than the field line limit, nor past max_head: what
     * lies beyond is refused with 431 whatever it holds, so the answer is
     * the same however the bytes arrive. */
    size_t cap = lim->max_header_line + 2;
    size_t room = lim->max_head - st->line; /* checked at the line's start */
    if (cap - 1 > room)
        cap = room + 1;
    lend = len - st->line < cap ? end : buf + st->line + cap;
    switch (st->stage) {
    case PS_OWS: goto ows;
    case PS_VALUE: goto value;
    case PS_CR: goto cr;
    }
}

    /* PS_NAME */
    while (p < lend && tchar[(unsigned char)*p])
        p++;
    if (p == lend)
        goto partial_field;
    if (*p != ':') {
        if (*p == ' ' || *p == '\t')
            REFUSE(400, "whitespace between field name and colon");
        REFUSE(400, "invalid character in field name");
    }
    if (p == buf + st->line)
        REFUSE(400, "empty field name");
    st->mark = (size_t)(p - buf); /* the name's end */
    p++;
    st->stage = PS_OWS;

ows:
    while (p < lend && (*p == ' ' || *p == '\t'))
        p++;
    if (p == lend)
        goto partial_field;
    st->mark2 = (size_t)(p - buf); /* the value's start */
    st->stage = PS_VALUE;

value:
    while (p < lend && value_ok[(unsigned char)*p])
        p++;
    if (p == lend)
        goto partial_field;
    if (*p != '\r') {
        if (*p == '\n')
            REFUSE(400, "bare LF in header section");
        REFUSE(400, "invalid character in field value");
    }
    st->stage = PS_CR;

cr:
    if (p + 1 == lend)
        goto partial_field;
    if (p[1] != '\n')
        REFUSE(400, "bare CR in field value");
    {
        const char *v = buf + st->mark2, *vend = p;
        while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t'))
            vend--;
        p += 2;
        if (h->num_headers == lim->max_headers)
            REFUSE(431, "too many header fields");
        keel_str name = {buf + st->line, st->mark - st->line};
        keel_str val = {v, (size_t)(vend - v)};
        h->headers[h->num_headers].name = name;
        h->headers[h->num_headers].value = val;
        h->num_headers++;
        st->stage = PS_FIELD;

        /* Framing and routing fields. */
        switch (name.len) {
        case 4:
            if (keel_str_ieq_c(name, "host")) {
                if (st->seen_host++)
                    REFUSE(400, "more than one Host field");
                if (!host_valid(val))
                    REFUSE(400, "invalid Host field");
                if (h->host.len == 0)
                    h->host = val; /* absolute-form authority wins */
            }
            break;
        case 6:
            if (keel_str_ieq_c(name, "expect")) {
                st->expect_at = (size_t)(v - buf) + 1;
                st->expect_len = val.len;
            }
            break;
        case 10:
            if (keel_str_ieq_c(name, "connection"))
                each_list_item(val, conn_item, st);
            break;
        case 14:
            if (keel_str_ieq_c(name, "content-length")) {
                if (st->seen_cl++)
                    REFUSE(400, "more than one Content-Length field");
                if (parse_content_length(val, &h->content_length) < 0)
                    REFUSE(400, "invalid Content-Length");
            }
            break;
        case 17:
            if (keel_str_ieq_c(name, "transfer-encoding")) {
                st->te_fields++;
                each_list_item(val, te_item, st);
            }
            break;
        }
    }
    goto field;

partial_field:
    if ((size_t)(lend - buf) - st->line > lim->max_header_line + 1)
        REFUSE(431, "header field too large");
    if ((size_t)(lend - buf) > lim->max_head)
        REFUSE(431, "request head too large");
    goto more;

rl_partial:
    if (rl_end < end || len - st->line > lim->max_request_line + 1)
        REFUSE(414, "request line too long");
    if (st->stage == PS_VERSION)
        p = buf + st->mark; /* the version is rescanned: at most 10 bytes */
    goto more;

more:
    st->pos = (size_t)(p - buf);
    return 0;

head_done:
    if ((size_t)(p - buf) > lim->max_head)
        REFUSE(431, "request head too large");

    /* Message framing (RFC 9112 section 6). */
    if (st->te_fields) {
        if (st->seen_cl)
            REFUSE(400, "both Content-Length and Transfer-Encoding");
        if (h->version_minor == 0)
            REFUSE(400, "Transfer-Encoding in an HTTP/1.0 request");
        if (st->te_unknown == 2 || st->te_codings == 0)
            REFUSE(400, "invalid Transfer-Encoding");
        /* RFC 9112 6.3: chunked anywhere but last leaves the length
         * unknowable, a 400 before any question of support. */
        if (st->te_chunked_at && st->te_chunked_at != st->te_codings)
            REFUSE(400, "chunked must be the final transfer coding");
        if (st->te_unknown)
            REFUSE(501, "unsupported transfer coding");
        h->chunked = 1;
    }
    if (h->version_minor == 1 && !st->seen_host)
        REFUSE(400, "missing Host field");
    if (st->expect_at) {
        keel_str expect = {buf + st->expect_at - 1, st->expect_len};
        if (keel_str_ieq_c(expect, "100-continue"))
            h->expect_continue = h->version_minor == 1;
        else
            REFUSE(417, "unsupported expectation");
    }
    h->upgrade = st->conn_upgrade;
    if (h->version_minor == 1)
        h->keep_alive = !st->conn_close;
    else
        h->keep_alive = st->conn_keep_alive && !st->conn_close;
    return (int)(p - buf);
}

int keel_http_parse_request_resume(const char *buf, size_t len, keel_http_request_head *h,
                                   const keel_http_limits *lim, keel_http_parse_state *st)
{
    if (st->stage == PS_NEW || st->stage == PS_DONE || len < st->pos) {
        keel_http_header *hdrs = h->headers;
        memset(h, 0, sizeof(*h));
        h->headers = hdrs;
        h->content_length = -1;
        memset(st, 0, sizeof(*st));
        st->stage = PS_LEAD;
    } else if ((uintptr_t)buf != st->base) {
        keel_http_head_rebase(h, st->base, st->pos, buf);
    }
    st->base = (uintptr_t)buf;
    int rc = parse_head(buf, len, h, lim, st);
    if (rc != 0)
        st->stage = PS_DONE;
    return rc;
}

int keel_http_parse_request(const char *buf, size_t len, keel_http_request_head *h,
                            const keel_http_limits *lim)
{
    keel_http_parse_state st = {0};
    return keel_http_parse_request_resume(buf, len, h, lim, &st);
}

/* ---------------------------------------------------------------- chunked */

enum {
    CH_SIZE = 0,   /* reading hex digits */
    CH_EXT,        /* after ';': an extension name */
    CH_SIZE_LF,    /* got CR after size line */
    CH_DATA,       /* copying chunk data */
    CH_DATA_CR,    /* expecting CR after data */
    CH_DATA_LF,    /* expecting LF after data */
    CH_TRAILER,    /* at the start of a trailer line (or the final CRLF) */
    CH_TRAILER_LINE, /* inside a trailer field line */
    CH_TRAILER_LF, /* got CR inside a trailer line */
    CH_END_LF,     /* got CR of the final empty line */
    CH_DONE,
    CH_SIZE_END,   /* after the size's digits or a quoted value: ';' or CR */
    CH_EXT_NAME,
    CH_EXT_EQ,     /* after '=': a token or a quoted string */
    CH_EXT_TOKEN,
    CH_EXT_QUOTED,
    CH_EXT_QPAIR   /* after a backslash in a quoted string */
};

#define MAX_CHUNK_LINE 4096

/* The state after byte c of a chunk-size line, once the digits are read
 * (RFC 9112 section 7.1.1):
 *
 *     chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )
 *
 * An extension has a name ("5;\r\n", "5;;a" are refused) and, after '=',
 * a value. BWS is refused wherever it stands ("5 \r\n", "5 ;a", "5;a =b"):
 * a sender MUST NOT generate it (RFC 9110 5.6.3), llhttp's strict mode
 * refuses it too, and parsers that disagree on where a size line ends are
 * how chunked bodies get smuggled. Returns -1 with *why set for a byte the
 * grammar does not allow. */
static int size_line_next(unsigned state, unsigned char c, const char **why)
{
    if ((c == ' ' || c == '\t') && state != CH_EXT_QUOTED && state != CH_EXT_QPAIR) {
        *why = "whitespace in a chunk size line";
        return -1;
    }
    switch (state) {
    case CH_EXT_NAME:
        if (c == '=')
            return CH_EXT_EQ;
        /* fall through */
    case CH_EXT_TOKEN:
        if (tchar[c])
            return (int)state;
        /* fall through */
    case CH_SIZE_END:
        if (c == '\r')
            return CH_SIZE_LF;
        if (c == ';')
            return CH_EXT;
        *why = state == CH_SIZE_END ? "invalid chunk size" : "invalid chunk extension";
        return -1;
    case CH_EXT:
        if (tchar[c])
            return CH_EXT_NAME;
        *why = "chunk extension without a name";
        return -1;
    case CH_EXT_EQ:
        if (tchar[c])
            return CH_EXT_TOKEN;
        if (c == '"')
            return CH_EXT_QUOTED;
        *why = "chunk extension without a value";
        return -1;
    case CH_EXT_QUOTED:
        /* qdtext: field-value bytes (SP and HTAB included) but DQUOTE
         * and backslash */
        if (c == '"')
            return CH_SIZE_END;
        if (c == '\\')
            return CH_EXT_QPAIR;
        if (value_ok[c])
            return CH_EXT_QUOTED;
        *why = "invalid character in chunk extension";
        return -1;
    case CH_EXT_QPAIR:
        if (value_ok[c])
            return CH_EXT_QUOTED;
        *why = "invalid character in chunk extension";
        return -1;
    }
    *why = "invalid chunk size line";
    return -1;
}

/* Fields that must not be trailers (RFC 9110 section 6.5.1): those needed
 * before the content can be processed — framing, routing, request
 * modifiers (controls and conditionals), authentication, the content's
 * format — and the connection's own hop-by-hop fields. keel drops
 * trailers, but a proxy or a later hop may merge them into the header
 * section, where such a field would rewrite the framing, the route or the
 * credentials after the fact; so a trailer section naming one is refused.
 * Lower case; at most 32 (one bit each in keel_http_chunked.names). */
static const struct {
    const char *name;
    size_t len;
} trailer_forbidden[] = {
#define F(s) {s, sizeof(s) - 1}
    /* framing and routing */
    F("transfer-encoding"), F("content-length"), F("host"), F("trailer"),
    /* how to process the content */
    F("content-encoding"), F("content-type"), F("content-range"),
    /* authentication */
    F("authorization"), F("proxy-authorization"), F("cookie"),
    /* request controls and conditionals */
    F("cache-control"), F("expect"), F("max-forwards"), F("pragma"), F("range"), F("te"),
    F("if-match"), F("if-none-match"), F("if-modified-since"), F("if-unmodified-since"),
    F("if-range"),
    /* the connection's own */
    F("connection"), F("keep-alive"), F("upgrade"),
#undef F
};
#define NFORBIDDEN (sizeof(trailer_forbidden) / sizeof(trailer_forbidden[0]))
_Static_assert(NFORBIDDEN <= 32, "one bit per forbidden trailer in keel_http_chunked.names");
#define ALL_FORBIDDEN ((uint32_t)((1ull << NFORBIDDEN) - 1))

/* Narrows the candidates to the names whose byte at pos is c. The name's
 * bytes are never looked at again (the connection may compact them away
 * between calls), so the match is made as they pass. */
static uint32_t trailer_name_byte(uint32_t names, size_t pos, unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        c += 32;
    for (uint32_t m = names; m; m &= m - 1) {
        unsigned i = (unsigned)__builtin_ctz(m);
        if (pos >= trailer_forbidden[i].len ||
            (unsigned char)trailer_forbidden[i].name[pos] != c)
            names &= ~(1u << i);
    }
    return names;
}

/* Whether a candidate is exactly len bytes long: the name is forbidden. */
static int trailer_name_forbidden(uint32_t names, size_t len)
{
    for (uint32_t m = names; m; m &= m - 1)
        if (trailer_forbidden[__builtin_ctz(m)].len == len)
            return 1;
    return 0;
}

#define CH_FAIL(st, msg)                                                       \
    do {                                                                       \
        if (error)                                                             \
            *error = (msg);                                                    \
        return -(st);                                                          \
    } while (0)

int keel_http_chunked_decode(keel_http_chunked *d, char *buf, size_t len,
                             uint64_t max_body, size_t max_trailer,
                             const char **error)
{
    while (d->in < len) {
        unsigned char c = (unsigned char)buf[d->in];
        switch (d->state) {
        case CH_SIZE: {
            int v = keel_hex_digit(c);
            if (v >= 0) {
                if (d->digits == 16 || (d->remaining >> 60) != 0)
                    CH_FAIL(400, "chunk size overflow");
                d->remaining = (d->remaining << 4) | (uint64_t)v;
                d->digits++;
                d->in++;
                break;
            }
            if (d->digits == 0)
                CH_FAIL(400, "invalid chunk size");
            /* The size is complete (an overflow was a 400 above); now the
             * limit. out <= max_body holds, so the subtraction cannot wrap. */
            if (d->remaining > max_body || d->out > max_body - d->remaining)
                CH_FAIL(413, "request body too large");
            d->state = CH_SIZE_END;
            d->line = d->digits;
            break;
        }
        case CH_SIZE_END:
        case CH_EXT:
        case CH_EXT_NAME:
        case CH_EXT_EQ:
        case CH_EXT_TOKEN:
        case CH_EXT_QUOTED:
        case CH_EXT_QPAIR: {
            /* the rest of the size line: extensions are parsed, then
             * ignored (RFC 9112 7.1.1), and the line is bounded */
            const char *why = NULL;
            int next = size_line_next(d->state, c, &why);
            if (next < 0)
                CH_FAIL(400, why);
            if (++d->line > MAX_CHUNK_LINE)
                CH_FAIL(400, "chunk size line too long");
            d->state = (unsigned)next;
            d->in++;
            break;
        }
        case CH_SIZE_LF:
            if (c != '\n')
                CH_FAIL(400, "bare CR in chunk size line");
            d->in++;
            d->digits = 0;
            d->line = 0;
            d->state = d->remaining ? CH_DATA : CH_TRAILER;
            break;
        case CH_DATA: {
            size_t avail = len - d->in;
            size_t n = avail < d->remaining ? avail : (size_t)d->remaining;
            if (d->out != d->in)
                memmove(buf + d->out, buf + d->in, n);
            d->out += n;
            d->in += n;
            d->remaining -= n;
            if (d->remaining == 0)
                d->state = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            if (c != '\r')
                CH_FAIL(400, "chunk data not followed by CRLF");
            d->in++;
            d->state = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (c != '\n')
                CH_FAIL(400, "chunk data not followed by CRLF");
            d->in++;
            d->state = CH_SIZE;
            break;
        case CH_TRAILER:
            if (c == '\r') {
                d->state = CH_END_LF;
                d->in++;
                break;
            }
            if (!tchar[c])
                CH_FAIL(400, "invalid trailer field");
            d->state = CH_TRAILER_LINE;
            d->line = 0;
            d->digits = 0; /* here: 1 once the colon was seen */
            d->names = ALL_FORBIDDEN;
            break;
        case CH_TRAILER_LINE:
            if (c == '\r') {
                if (!d->digits)
                    CH_FAIL(400, "trailer field without a colon");
                d->state = CH_TRAILER_LF;
            } else if (c == '\n') {
                CH_FAIL(400, "bare LF in trailer section");
            } else if (!d->digits) {
                if (c == ':') {
                    if (trailer_name_forbidden(d->names, d->line))
                        CH_FAIL(400, "a framing, routing or request-control field "
                                     "must not be a trailer");
                    d->digits = 1;
                } else if (!tchar[c]) {
                    CH_FAIL(400, "invalid character in trailer field name");
                } else if (d->names) {
                    d->names = trailer_name_byte(d->names, d->line, c);
                }
            } else if (!value_ok[c]) {
                CH_FAIL(400, "invalid character in trailer field");
            }
            d->line++;
            d->in++;
            if (++d->trailer > max_trailer)
                CH_FAIL(431, "trailer section too large");
            break;
        case CH_TRAILER_LF:
            if (c != '\n')
                CH_FAIL(400, "bare CR in trailer section");
            d->in++;
            d->state = CH_TRAILER;
            break;
        case CH_END_LF:
            if (c != '\n')
                CH_FAIL(400, "bare CR after last chunk");
            d->in++;
            d->state = CH_DONE;
            return 1;
        default:
            return 1;
        }
    }
    return d->state == CH_DONE ? 1 : 0;
}

/* ---------------------------------------------------------------- misc */

const char *keel_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

const keel_http_header *keel_http_find_header(const keel_http_request_head *h,
                                              const char *name)
{
    for (size_t i = 0; i < h->num_headers; i++)
        if (keel_str_ieq_c(h->headers[i].name, name))
            return &h->headers[i];
    return NULL;
}
