/* http_parser.c — strict HTTP/1.1 request head parser and chunked decoder.
 *
 * Design: like picohttpparser, the parser is stateless between calls and
 * re-parses the head from the start when more bytes arrive. Heads are small
 * (limits below 64 KiB) and almost always arrive in one read, so the
 * simplicity is worth more than the rescan; errors are still detected as
 * early as the bytes that prove them arrive (a bad method byte is refused
 * before the line ends).
 *
 * Every rule where RFC 9112 allows leniency is taken strictly: CRLF only,
 * one SP between request-line parts, no whitespace before a field colon, no
 * obs-fold, one Content-Length, Transfer-Encoding only "chunked", one Host.
 */
#include "keel/http.h"

#include <limits.h>

/* RFC 9110 tchar. */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1,
    ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1,
    ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1,
    ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,
    ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1,
    ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
    ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
    ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1,
    ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
    ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
};

/* Bytes allowed in a request-target: RFC 3986 unreserved, sub-delims,
 * ":" "@" "/" "?" and "%" (escapes are checked by the router). */
static unsigned char target_ok[256];
/* Field-value bytes: VCHAR, obs-text, SP, HTAB. */
static unsigned char value_ok[256];

static void init_tables(void)
{
    static int done;
    if (__atomic_load_n(&done, __ATOMIC_ACQUIRE))
        return;
    const char *extra = "-._~!$&'()*+,;=:@/?%";
    for (int c = 0; c < 256; c++) {
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9');
        target_ok[c] = alnum || (c != 0 && strchr(extra, c) != NULL);
        value_ok[c] = (c >= 0x21 && c != 0x7f) || c == ' ' || c == '\t';
    }
    __atomic_store_n(&done, 1, __ATOMIC_RELEASE);
}

int keel_str_ieq_c(keel_str a, const char *c)
{
    size_t n = strlen(c);
    if (a.len != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char x = (unsigned char)a.ptr[i], y = (unsigned char)c[i];
        if (x >= 'A' && x <= 'Z')
            x += 32;
        if (y >= 'A' && y <= 'Z')
            y += 32;
        if (x != y)
            return 0;
    }
    return 1;
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

struct conn_flags {
    int close, keep_alive, upgrade;
};

static int conn_item(keel_str item, void *arg)
{
    struct conn_flags *f = arg;
    if (keel_str_ieq_c(item, "close"))
        f->close = 1;
    else if (keel_str_ieq_c(item, "keep-alive"))
        f->keep_alive = 1;
    else if (keel_str_ieq_c(item, "upgrade"))
        f->upgrade = 1;
    return 0;
}

struct te_state {
    int count;      /* codings seen */
    int chunked_at; /* index of "chunked", -1 */
    int unknown;
};

static int te_item(keel_str item, void *arg)
{
    struct te_state *t = arg;
    if (keel_str_ieq_c(item, "chunked")) {
        if (t->chunked_at >= 0)
            t->unknown = 2; /* chunked twice: framing error */
        t->chunked_at = t->count;
    } else {
        t->unknown = t->unknown ? t->unknown : 1;
    }
    t->count++;
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

/* Host = uri-host [ ":" port ]: reg-name / IPv4 / "[" IP-literal "]". */
static int host_valid(keel_str v)
{
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.ptr[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 (c >= '0' && c <= '9') || strchr("-._~!$&'()*+,;=:[]%", c);
        if (!ok || c == 0)
            return 0;
    }
    return 1;
}

static int parse_request_line(const char *p, const char *end,
                              keel_http_request_head *h)
{
    /* method */
    const char *m = p;
    while (p < end && tchar[(unsigned char)*p])
        p++;
    if (p == end)
        return 0;
    if (*p != ' ' || p == m)
        REFUSE(400, "invalid character in method");
    h->method_str = (keel_str){m, (size_t)(p - m)};
    h->method = method_of(h->method_str);
    p++;

    /* request-target */
    const char *t = p;
    while (p < end && target_ok[(unsigned char)*p])
        p++;
    if (p == end)
        return 0;
    if (*p != ' ' || p == t)
        REFUSE(400, "invalid character in request target");
    h->target = (keel_str){t, (size_t)(p - t)};
    p++;

    /* HTTP-version = "HTTP/" DIGIT "." DIGIT, then CRLF */
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

int keel_http_parse_request(const char *buf, size_t len,
                            keel_http_request_head *h,
                            const keel_http_limits *lim)
{
    init_tables();
    const char *p = buf, *end = buf + len;
    keel_http_header *hdrs = h->headers;

    memset(h, 0, sizeof(*h));
    h->headers = hdrs;
    h->content_length = -1;

    /* RFC 9112 2.2: ignore at least one empty line before the request. */
    int empty_lines = 0;
    while (p < end && *p == '\r') {
        if (p + 1 == end)
            return 0;
        if (p[1] != '\n')
            REFUSE(400, "bare CR before request line");
        p += 2;
        if (++empty_lines > 4)
            REFUSE(400, "too many empty lines before request line");
    }
    if (p < end && *p == '\n')
        REFUSE(400, "bare LF before request line");
    const char *line_start = p;

    /* Request line. */
    const char *line_end_max = p + lim->max_request_line + 2;
    const char *rl_end = end < line_end_max ? end : line_end_max;
    int rc = parse_request_line(p, rl_end, h);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        if (rl_end < end || (size_t)(end - line_start) > lim->max_request_line + 1)
            REFUSE(414, "request line too long");
        return 0;
    }
    p = memchr(p, '\n', (size_t)(rl_end - p)) + 1;
    if (split_target(h) < 0)
        return -400;

    /* Header fields. */
    int seen_host = 0, seen_cl = 0;
    int te_count = 0;
    struct te_state tes = {0, -1, 0};
    struct conn_flags cf = {0, 0, 0};
    keel_str expect = KEEL_STR_NULL;

    for (;;) {
        if ((size_t)(p - buf) > lim->max_head)
            REFUSE(431, "request head too large");
        if (p == end)
            return 0;
        if (*p == '\r') {
            if (p + 1 == end)
                return 0;
            if (p[1] != '\n')
                REFUSE(400, "bare CR in header section");
            p += 2;
            break;
        }
        if (*p == '\n')
            REFUSE(400, "bare LF in header section");
        if (*p == ' ' || *p == '\t')
            REFUSE(400, "obsolete line folding is not accepted");

        /* Scan no further than the field line limit, nor past max_head:
         * what lies beyond is refused with 431 whatever it holds, so the
         * answer is the same however the bytes arrive. */
        const char *fl = p;
        size_t cap = lim->max_header_line + 2;
        size_t room = lim->max_head - (size_t)(p - buf); /* checked above */
        if (cap - 1 > room)
            cap = room + 1;
        const char *lend = (size_t)(end - p) < cap ? end : p + cap;

        const char *n = p;
        while (p < lend && tchar[(unsigned char)*p])
            p++;
        if (p == lend)
            goto partial_field;
        if (*p != ':') {
            if (*p == ' ' || *p == '\t')
                REFUSE(400, "whitespace between field name and colon");
            REFUSE(400, "invalid character in field name");
        }
        if (p == n)
            REFUSE(400, "empty field name");
        keel_str name = {n, (size_t)(p - n)};
        p++;
        while (p < lend && (*p == ' ' || *p == '\t'))
            p++;
        const char *v = p;
        while (p < lend && value_ok[(unsigned char)*p])
            p++;
        if (p == lend)
            goto partial_field;
        if (*p != '\r') {
            if (*p == '\n')
                REFUSE(400, "bare LF in header section");
            REFUSE(400, "invalid character in field value");
        }
        const char *vend = p;
        while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t'))
            vend--;
        if (p + 1 == lend)
            goto partial_field;
        if (p[1] != '\n')
            REFUSE(400, "bare CR in field value");
        p += 2;

        if (h->num_headers == lim->max_headers)
            REFUSE(431, "too many header fields");
        keel_str value = {v, (size_t)(vend - v)};
        h->headers[h->num_headers].name = name;
        h->headers[h->num_headers].value = value;
        h->num_headers++;

        /* Framing and routing fields. */
        switch (name.len) {
        case 4:
            if (keel_str_ieq_c(name, "host")) {
                if (seen_host++)
                    REFUSE(400, "more than one Host field");
                if (!host_valid(value))
                    REFUSE(400, "invalid Host field");
                if (h->host.len == 0)
                    h->host = value; /* absolute-form authority wins */
            }
            break;
        case 6:
            if (keel_str_ieq_c(name, "expect"))
                expect = value;
            break;
        case 10:
            if (keel_str_ieq_c(name, "connection"))
                each_list_item(value, conn_item, &cf);
            break;
        case 14:
            if (keel_str_ieq_c(name, "content-length")) {
                if (seen_cl++)
                    REFUSE(400, "more than one Content-Length field");
                if (parse_content_length(value, &h->content_length) < 0)
                    REFUSE(400, "invalid Content-Length");
            }
            break;
        case 17:
            if (keel_str_ieq_c(name, "transfer-encoding")) {
                te_count++;
                each_list_item(value, te_item, &tes);
            }
            break;
        }
        continue;

    partial_field:
        if ((size_t)(lend - fl) > lim->max_header_line + 1)
            REFUSE(431, "header field too large");
        if ((size_t)(lend - buf) > lim->max_head)
            REFUSE(431, "request head too large");
        return 0;
    }
    if ((size_t)(p - buf) > lim->max_head)
        REFUSE(431, "request head too large");

    /* Message framing (RFC 9112 section 6). */
    if (te_count) {
        if (seen_cl)
            REFUSE(400, "both Content-Length and Transfer-Encoding");
        if (h->version_minor == 0)
            REFUSE(400, "Transfer-Encoding in an HTTP/1.0 request");
        if (tes.unknown == 2 || tes.count == 0)
            REFUSE(400, "invalid Transfer-Encoding");
        /* RFC 9112 6.3: chunked anywhere but last leaves the length
         * unknowable, a 400 before any question of support. */
        if (tes.chunked_at >= 0 && tes.chunked_at != tes.count - 1)
            REFUSE(400, "chunked must be the final transfer coding");
        if (tes.unknown)
            REFUSE(501, "unsupported transfer coding");
        h->chunked = 1;
    }
    if (h->version_minor == 1 && !seen_host)
        REFUSE(400, "missing Host field");
    if (expect.ptr) {
        if (keel_str_ieq_c(expect, "100-continue"))
            h->expect_continue = h->version_minor == 1;
        else
            REFUSE(417, "unsupported expectation");
    }
    h->upgrade = (unsigned)cf.upgrade;
    if (h->version_minor == 1)
        h->keep_alive = !cf.close;
    else
        h->keep_alive = cf.keep_alive && !cf.close;
    return (int)(p - buf);
}

/* ---------------------------------------------------------------- chunked */

enum {
    CH_SIZE = 0,   /* reading hex digits */
    CH_EXT,        /* after ';': extensions, until CR */
    CH_SIZE_LF,    /* got CR after size line */
    CH_DATA,       /* copying chunk data */
    CH_DATA_CR,    /* expecting CR after data */
    CH_DATA_LF,    /* expecting LF after data */
    CH_TRAILER,    /* at the start of a trailer line (or the final CRLF) */
    CH_TRAILER_LINE, /* inside a trailer field line */
    CH_TRAILER_LF, /* got CR inside a trailer line */
    CH_END_LF,     /* got CR of the final empty line */
    CH_DONE,
    CH_SIZE_BWS    /* after the size: BWS, then ';' or CR */
};

#define MAX_CHUNK_LINE 4096


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
    init_tables();
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
            d->state = CH_SIZE_BWS;
            d->line = d->digits;
            break;
        }
        case CH_SIZE_BWS:
            /* Only BWS may sit between the size and ';' or CR: "5 6" is
             * not a size with an extension. */
            if (c == '\r')
                d->state = CH_SIZE_LF;
            else if (c == ';')
                d->state = CH_EXT;
            else if (c != ' ' && c != '\t')
                CH_FAIL(400, "invalid chunk size");
            if (++d->line > MAX_CHUNK_LINE)
                CH_FAIL(400, "chunk size line too long");
            d->in++;
            break;
        case CH_EXT:
            /* chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ):
             * after the first ';', validated loosely as field-value bytes,
             * length-bounded. */
            if (c == '\r')
                d->state = CH_SIZE_LF;
            else if (!value_ok[c])
                CH_FAIL(400, "invalid character in chunk extension");
            if (++d->line > MAX_CHUNK_LINE)
                CH_FAIL(400, "chunk size line too long");
            d->in++;
            break;
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
            break;
        case CH_TRAILER_LINE:
            if (c == '\r') {
                if (!d->digits)
                    CH_FAIL(400, "trailer field without a colon");
                d->state = CH_TRAILER_LF;
            } else if (c == '\n') {
                CH_FAIL(400, "bare LF in trailer section");
            } else if (!d->digits) {
                if (c == ':')
                    d->digits = 1;
                else if (!tchar[c])
                    CH_FAIL(400, "invalid character in trailer field name");
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
