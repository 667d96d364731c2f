/* multipart.c — the streaming multipart/form-data parser (keel/multipart.h).
 *
 * Design. The body is a sequence of parts separated by the delimiter
 * CRLF "--" boundary (RFC 2046 section 5.1.1); the CRLF before a
 * delimiter belongs to the delimiter, not to the data. The parser
 * behaves as if the body were preceded by a CRLF, so the first delimiter
 * may open the body (the usual case) or follow a preamble.
 *
 * The data scan looks for CR with memchr; where the whole delimiter
 * fits in the rest of the chunk it is compared at once (a CR in the data
 * then does not end the run handed to on_part_data: a chunk's data comes
 * as one run). Near the chunk's end it matches the delimiter byte by
 * byte, across chunk boundaries (`match` carries over). CR occurs
 * only at the delimiter's first position (a boundary cannot hold CR), so
 * on a mismatch the bytes matched so far are plain data — they equal
 * delim[0..match), which is where they are emitted from — and the byte
 * that broke the match is looked at afresh. No input byte is copied
 * except a part's header block, which is bounded by max_header_bytes.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "keel/multipart.h"

enum {
    S_PREAMBLE = 0, /* before the first delimiter */
    S_AFTER_DELIM,  /* just after a delimiter: "--", padding or CRLF */
    S_CLOSE,        /* after "-" of "--" */
    S_PAD,          /* transport padding (LWSP) before CRLF */
    S_CR,           /* CR seen, LF expected */
    S_HEADERS,      /* a part's header block */
    S_DATA,         /* a part's data */
    S_EPILOGUE      /* after the closing delimiter */
};

#define DEFAULT_HEADER_BYTES 8192

const char *keel_multipart_limit_name(keel_multipart_limit l)
{
    static const char *const names[] = {
        "none",      "max_body", "max_file_size",   "max_files",   "max_fields",
        "max_parts", "max_name", "max_field_value", "max_headers", "max_header_bytes",
    };
    return (unsigned)l < sizeof(names) / sizeof(names[0]) ? names[l] : "none";
}

/* ---------------------------------------------------------------- boundary */

static int is_bchar(unsigned char c)
{
    /* RFC 2046: DIGIT / ALPHA / "'" / "(" / ")" / "+" / "_" / "," / "-"
     * / "." / "/" / ":" / "=" / "?" and space (not last) */
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c && strchr("'()+_,-./:=? ", c) != NULL;
}

static int is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

int keel_multipart_boundary(keel_str ct, keel_str *out, const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    *out = KEEL_STR_NULL;
    static const char type[] = "multipart/form-data";
    size_t tl = sizeof(type) - 1, i = 0;
    if (!ct.ptr || ct.len < tl || strncasecmp(ct.ptr, type, tl) != 0 ||
        (ct.len > tl && ct.ptr[tl] != ';' && !ows((unsigned char)ct.ptr[tl]))) {
        *why = "the body must be multipart/form-data";
        return -415;
    }
    i = tl;
    int found = 0;
    while (i < ct.len) {
        while (i < ct.len && ows((unsigned char)ct.ptr[i]))
            i++;
        if (i == ct.len)
            break;
        if (ct.ptr[i] != ';')
            goto bad;
        i++;
        while (i < ct.len && ows((unsigned char)ct.ptr[i]))
            i++;
        size_t ns = i;
        while (i < ct.len && is_tchar((unsigned char)ct.ptr[i]))
            i++;
        keel_str name = {ct.ptr + ns, i - ns};
        if (name.len == 0 || i == ct.len || ct.ptr[i] != '=')
            goto bad;
        i++;
        keel_str val;
        if (i < ct.len && ct.ptr[i] == '"') {
            size_t vs = ++i;
            while (i < ct.len && ct.ptr[i] != '"') {
                if (ct.ptr[i] == '\\')
                    goto bad; /* no boundary needs an escape */
                i++;
            }
            if (i == ct.len)
                goto bad;
            val = (keel_str){ct.ptr + vs, i - vs};
            i++;
        } else {
            size_t vs = i;
            while (i < ct.len && is_tchar((unsigned char)ct.ptr[i]))
                i++;
            val = (keel_str){ct.ptr + vs, i - vs};
        }
        if (keel_str_ieq_c(name, "boundary")) {
            if (found)
                goto bad;
            found = 1;
            *out = val;
        }
    }
    if (!found) {
        *why = "the multipart body has no boundary parameter";
        return -400;
    }
    if (out->len < 1 || out->len > 70 || out->ptr[out->len - 1] == ' ')
        goto badb;
    for (size_t k = 0; k < out->len; k++)
        if (!is_bchar((unsigned char)out->ptr[k]))
            goto badb;
    return 0;
badb:
    *out = KEEL_STR_NULL;
    *why = "the multipart boundary is not 1 to 70 valid characters";
    return -400;
bad:
    *out = KEEL_STR_NULL;
    *why = "malformed Content-Type parameters";
    return -400;
}

/* ---------------------------------------------------------------- setup */

int keel_multipart_init(keel_multipart *m, keel_str boundary,
                        const keel_multipart_limits *lim, const keel_multipart_cb *cb,
                        void *arg)
{
    memset(m, 0, sizeof(*m));
    if (!boundary.ptr || boundary.len < 1 || boundary.len > 70)
        return KEEL_EINVAL;
    memcpy(m->delim, "\r\n--", 4);
    memcpy(m->delim + 4, boundary.ptr, boundary.len);
    m->dlen = 4 + boundary.len;
    if (lim)
        m->lim = *lim;
    if (cb)
        m->cb = *cb;
    m->arg = arg;
    m->hcap = m->lim.max_header_bytes ? (size_t)m->lim.max_header_bytes : DEFAULT_HEADER_BYTES;
    m->hbuf = keel_malloc(m->hcap);
    m->state = S_PREAMBLE;
    m->match = 2; /* as if a CRLF came before the body */
    return 0;
}

void keel_multipart_free(keel_multipart *m)
{
    if (!m)
        return;
    keel_free(m->hbuf);
    m->hbuf = NULL;
}

static int fail(keel_multipart *m, int status, const char *why)
{
    m->rc = status;
    m->error = why;
    return status;
}

static int too_large(keel_multipart *m, keel_multipart_limit l, const char *why)
{
    m->limit = l;
    return fail(m, -413, why);
}

/* ---------------------------------------------------------------- headers */

/* A parameter value at p[*i..end): token or quoted-string. A backslash
 * in a quoted value is kept as it is, not taken as an escape: browsers
 * (the HTML form-submission algorithm) never escape with it — they
 * percent-encode '"', CR and LF — and old ones send Windows paths
 * ("C:\\dir\\a.txt") raw. 0 with *out, or -1. */
static int param_value(char *p, size_t *i, size_t end, keel_str *out)
{
    size_t k = *i;
    if (k < end && p[k] == '"') {
        size_t start = ++k;
        while (k < end && p[k] != '"')
            k++;
        if (k == end)
            return -1;
        *out = (keel_str){p + start, k - start};
        *i = k + 1;
        return 0;
    }
    size_t start = k;
    while (k < end && is_tchar((unsigned char)p[k]))
        k++;
    if (k == start)
        return -1;
    *out = (keel_str){p + start, k - start};
    *i = k;
    return 0;
}

/* Content-Disposition: form-data *( OWS ";" OWS name "=" value ). */
static int parse_disposition(keel_multipart *m, char *p, size_t len, keel_multipart_part *part)
{
    size_t i = 0;
    while (i < len && is_tchar((unsigned char)p[i]))
        i++;
    if (!keel_str_ieq_c((keel_str){p, i}, "form-data"))
        return fail(m, -400, "a part's Content-Disposition is not form-data");
    int have_name = 0, have_file = 0;
    while (1) {
        while (i < len && ows((unsigned char)p[i]))
            i++;
        if (i == len)
            break;
        if (p[i] != ';')
            return fail(m, -400, "malformed Content-Disposition parameters");
        i++;
        while (i < len && ows((unsigned char)p[i]))
            i++;
        size_t ns = i;
        while (i < len && is_tchar((unsigned char)p[i]))
            i++;
        keel_str name = {p + ns, i - ns};
        while (i < len && ows((unsigned char)p[i]))
            i++;
        if (name.len == 0 || i == len || p[i] != '=')
            return fail(m, -400, "malformed Content-Disposition parameters");
        i++;
        while (i < len && ows((unsigned char)p[i]))
            i++;
        keel_str val;
        if (param_value(p, &i, len, &val) < 0)
            return fail(m, -400, "malformed Content-Disposition parameters");
        if (keel_str_ieq_c(name, "name")) {
            if (have_name++)
                return fail(m, -400, "a part has two name parameters");
            part->name = val;
        } else if (keel_str_ieq_c(name, "filename")) {
            if (have_file++)
                return fail(m, -400, "a part has two filename parameters");
            part->filename = val;
            part->is_file = 1;
        }
        /* filename* (RFC 7578 section 4.2: not to be used) and others: ignored */
    }
    if (!have_name || part->name.len == 0)
        return fail(m, -400, "a part's Content-Disposition has no name");
    return 0;
}

/* Parses the header block hbuf[0..hlen) (ending with the empty line) and
 * starts the part. */
static int begin_part(keel_multipart *m)
{
    keel_multipart_part part = {0};
    int have_cd = 0, have_ct = 0;
    char *p = m->hbuf;
    size_t end = m->hlen - 2, i = 0; /* without the final empty line's CRLF */
    uint64_t nh = 0;
    while (i < end) {
        size_t ls = i;
        while (i < end && p[i] != '\r')
            i++;
        /* the block only ever ends in CRLF CRLF and holds no bare CR/LF
         * (checked while reading), so p[i] is CR followed by LF */
        size_t le = i;
        i += 2;
        if (ows((unsigned char)p[ls]))
            return fail(m, -400, "a part header is folded (obs-fold)");
        size_t k = ls;
        while (k < le && is_tchar((unsigned char)p[k]))
            k++;
        if (k == ls || k == le || p[k] != ':')
            return fail(m, -400, "a part header line is not name: value");
        keel_str name = {p + ls, k - ls};
        k++;
        while (k < le && ows((unsigned char)p[k]))
            k++;
        size_t ve = le;
        while (ve > k && ows((unsigned char)p[ve - 1]))
            ve--;
        for (size_t q = k; q < ve; q++) {
            unsigned char c = (unsigned char)p[q];
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                return fail(m, -400, "a part header value holds a control character");
        }
        if (++nh > m->lim.max_headers && m->lim.max_headers)
            return too_large(m, KEEL_MP_LIMIT_HEADERS, "a part has too many header fields");
        if (keel_str_ieq_c(name, "content-disposition")) {
            if (have_cd++)
                return fail(m, -400, "a part has two Content-Disposition fields");
            int rc = parse_disposition(m, p + k, ve - k, &part);
            if (rc < 0)
                return rc;
        } else if (keel_str_ieq_c(name, "content-type")) {
            if (have_ct++)
                return fail(m, -400, "a part has two Content-Type fields");
            part.content_type = (keel_str){p + k, ve - k};
            if (part.content_type.len >= 10 && strncasecmp(p + k, "multipart/", 10) == 0)
                return fail(m, -400, "nested multipart parts are not accepted");
        }
    }
    if (!have_cd)
        return fail(m, -400, "a part has no Content-Disposition");
    if (m->lim.max_name && part.name.len > m->lim.max_name)
        return too_large(m, KEEL_MP_LIMIT_NAME, "a part's name is too long");
    if (part.is_file) {
        if (m->lim.max_files && ++m->nfiles > m->lim.max_files)
            return too_large(m, KEEL_MP_LIMIT_FILES, "too many files");
    } else if (m->lim.max_fields && ++m->nfields > m->lim.max_fields) {
        return too_large(m, KEEL_MP_LIMIT_FIELDS, "too many fields");
    }
    part.index = m->nparts - 1;
    m->cur_is_file = part.is_file;
    m->part_bytes = 0;
    if (m->cb.on_part_begin) {
        int rc = m->cb.on_part_begin(m->arg, &part);
        if (rc)
            return m->rc = rc ? rc : -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- data */

static int emit(keel_multipart *m, const char *p, size_t n)
{
    if (n == 0)
        return 0;
    m->part_bytes += n;
    if (m->cur_is_file) {
        if (m->lim.max_file_size && m->part_bytes > m->lim.max_file_size)
            return too_large(m, KEEL_MP_LIMIT_FILE_SIZE, "a file is larger than allowed") ? -1 : 0;
    } else if (m->lim.max_field_value && m->part_bytes > m->lim.max_field_value) {
        too_large(m, KEEL_MP_LIMIT_FIELD_VALUE, "a field value is longer than allowed");
        return -1;
    }
    if (m->cb.on_part_data) {
        int rc = m->cb.on_part_data(m->arg, p, n);
        if (rc) {
            m->rc = rc;
            return -1;
        }
    }
    return 0;
}

/* Scans p[*pos..n) in S_DATA or S_PREAMBLE for the delimiter; data
 * (S_DATA only) is emitted. Returns 1 when the delimiter was completed
 * (*pos just after it), 0 at the end of the input, or -1 (m->rc set). */
static int scan(keel_multipart *m, const char *p, size_t n, size_t *pos)
{
    int data = m->state == S_DATA;
    size_t i = *pos, run = i;
    int rc;
    while (i < n) {
        if (m->match == 0) {
            const char *cr = memchr(p + i, '\r', n - i);
            if (!cr) {
                i = n;
                break;
            }
            i = (size_t)(cr - p);
            if (n - i >= m->dlen) {
                /* the whole delimiter would fit here: decide at once, so
                 * a CR in the data does not cut the run (random bytes hold
                 * one every 256) */
                if (memcmp(cr, m->delim, m->dlen) != 0) {
                    i++;
                    continue;
                }
                if (data && (rc = emit(m, p + run, i - run)) != 0)
                    return rc;
                *pos = i + m->dlen;
                return 1;
            }
            if (data && (rc = emit(m, p + run, i - run)) != 0)
                return rc;
            m->match = 1;
            i++;
            continue;
        }
        if (p[i] == m->delim[m->match]) {
            i++;
            if (++m->match == m->dlen) {
                m->match = 0;
                *pos = i;
                return 1;
            }
            continue;
        }
        /* mismatch: what matched was data; look at p[i] again */
        if (data && (rc = emit(m, m->delim, m->match)) != 0)
            return rc;
        m->match = 0;
        run = i;
    }
    if (data && m->match == 0 && (rc = emit(m, p + run, n - run)) != 0)
        return rc;
    *pos = n;
    return 0;
}

int keel_multipart_feed(keel_multipart *m, const char *p, size_t n)
{
    if (m->rc)
        return m->rc;
    m->total += n;
    if (m->lim.max_body && m->total > m->lim.max_body)
        return too_large(m, KEEL_MP_LIMIT_BODY, "the body is larger than allowed");
    size_t i = 0;
    int rc;
    while (i < n) {
        unsigned char c = (unsigned char)p[i];
        switch (m->state) {
        case S_PREAMBLE:
        case S_DATA: {
            int was_data = m->state == S_DATA;
            rc = scan(m, p, n, &i);
            if (rc < 0)
                return m->rc;
            if (rc == 0)
                return 0;
            if (was_data && m->cb.on_part_end && (rc = m->cb.on_part_end(m->arg)) != 0)
                return m->rc = rc;
            m->state = S_AFTER_DELIM;
            break;
        }
        case S_AFTER_DELIM:
            i++;
            if (c == '-')
                m->state = S_CLOSE;
            else if (ows(c))
                m->state = S_PAD;
            else if (c == '\r')
                m->state = S_CR;
            else
                return fail(m, -400, "a delimiter is not followed by CRLF");
            break;
        case S_CLOSE:
            i++;
            if (c != '-')
                return fail(m, -400, "a delimiter is not followed by CRLF");
            m->state = S_EPILOGUE;
            break;
        case S_PAD:
            i++;
            if (c == '\r')
                m->state = S_CR;
            else if (!ows(c))
                return fail(m, -400, "a delimiter is not followed by CRLF");
            break;
        case S_CR:
            i++;
            if (c != '\n')
                return fail(m, -400, "a delimiter is not followed by CRLF");
            if (m->lim.max_parts && m->nparts >= m->lim.max_parts)
                return too_large(m, KEEL_MP_LIMIT_PARTS, "too many parts");
            m->nparts++;
            m->hlen = 0;
            m->state = S_HEADERS;
            break;
        case S_HEADERS:
            i++;
            if (m->hlen == m->hcap)
                return too_large(m, KEEL_MP_LIMIT_HEADER_BYTES, "a part's header block is too large");
            if (c == '\n' && (m->hlen == 0 || m->hbuf[m->hlen - 1] != '\r'))
                return fail(m, -400, "a part header line ends in a bare LF");
            if (m->hlen && m->hbuf[m->hlen - 1] == '\r' && c != '\n')
                return fail(m, -400, "a part header line holds a bare CR");
            m->hbuf[m->hlen++] = (char)c;
            if (c == '\n' && (m->hlen == 2 || (m->hlen >= 4 && m->hbuf[m->hlen - 3] == '\n'))) {
                if (begin_part(m) != 0)
                    return m->rc;
                m->state = S_DATA;
                m->match = 0;
            }
            break;
        case S_EPILOGUE:
            return 0; /* ignored (RFC 2046) */
        }
    }
    return 0;
}

int keel_multipart_finish(keel_multipart *m)
{
    if (m->rc)
        return m->rc;
    if (m->state != S_EPILOGUE)
        return fail(m, -400, "the multipart body ends before its closing delimiter");
    return 1;
}
