/* compress.c — gzip for complete responses (zlib), from on_response.
 *
 * A body is compressed when it is at least COMPRESSION_MIN_BYTES, its
 * content type is not already compressed (images, audio, video, archives,
 * woff2), the route is not KEEL_ROUTE_SECRET (BREACH: secrets next to
 * reflected input must not share a compression window), the handler set
 * no Content-Encoding of its own and Accept-Encoding allows gzip (q > 0).
 * Streams are never compressed. HEAD compresses the body the GET handler
 * produced, so it carries the same Content-Length and Content-Encoding.
 * Eligible responses carry Vary: Accept-Encoding either way.
 */
#include <strings.h>
#include <zlib.h>

#include "keel/mw.h"

typedef struct compress_cfg {
    uint64_t min_bytes;
} compress_cfg;

/* ---------------------------------------------------------------- Accept-Encoding */

/* A qvalue: "0", "0.5", "1", "1.000". Returns 1 when > 0, 0 when 0, -1 when
 * malformed. */
static int qvalue_positive(const char *p, size_t n)
{
    if (n == 0 || n > 5 || (p[0] != '0' && p[0] != '1'))
        return -1;
    int pos = p[0] == '1';
    if (n > 1) {
        if (p[1] != '.')
            return -1;
        for (size_t i = 2; i < n; i++) {
            if (p[i] < '0' || p[i] > '9')
                return -1;
            if (p[i] != '0') {
                if (p[0] == '1')
                    return -1; /* above 1 */
                pos = 1;
            }
        }
    }
    return pos;
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

int keel_accept_gzip(keel_str ae)
{
    int gzip = -1, star = -1; /* -1: not named; else acceptable 0/1 */
    size_t i = 0;
    while (ae.ptr && i < ae.len) {
        while (i < ae.len && (is_ows(ae.ptr[i]) || ae.ptr[i] == ','))
            i++;
        size_t s = i;
        while (i < ae.len && ae.ptr[i] != ',' && ae.ptr[i] != ';' && !is_ows(ae.ptr[i]))
            i++;
        keel_str coding = {ae.ptr + s, i - s};
        int ok = 1;
        /* parameters: only q matters */
        while (i < ae.len && ae.ptr[i] != ',') {
            while (i < ae.len && (is_ows(ae.ptr[i]) || ae.ptr[i] == ';'))
                i++;
            size_t ps = i;
            while (i < ae.len && ae.ptr[i] != ',' && ae.ptr[i] != ';' && !is_ows(ae.ptr[i]))
                i++;
            size_t pl = i - ps;
            if (pl >= 2 && (ae.ptr[ps] == 'q' || ae.ptr[ps] == 'Q') && ae.ptr[ps + 1] == '=') {
                int q = qvalue_positive(ae.ptr + ps + 2, pl - 2);
                ok = q == 1; /* a malformed qvalue counts as "no" */
            }
        }
        if (!coding.len)
            continue;
        if (keel_str_ieq_c(coding, "gzip") || keel_str_ieq_c(coding, "x-gzip"))
            gzip = gzip == 1 ? 1 : ok;
        else if (coding.len == 1 && coding.ptr[0] == '*')
            star = ok;
    }
    if (gzip >= 0)
        return gzip;
    return star == 1;
}

/* ---------------------------------------------------------------- middleware */

static int prefix(const char *ct, const char *p)
{
    return strncasecmp(ct, p, strlen(p)) == 0;
}

/* Already-compressed formats: compressing them again wastes CPU. */
static int precompressed(const char *ct)
{
    static const char *const types[] = {
        "image/", "video/", "audio/", "font/woff", "application/zip",
        "application/gzip", "application/x-gzip", "application/zstd",
        "application/x-bzip2", "application/x-xz", "application/x-7z-compressed",
        "application/x-rar-compressed", "application/pdf", "application/wasm"};
    if (prefix(ct, "image/svg+xml"))
        return 0;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if (prefix(ct, types[i]))
            return 1;
    return 0;
}

/* gzip of src into the request arena; the length, or 0 when it fails or
 * does not shrink. */
static size_t gzip_into(keel_arena *a, const void *src, size_t len, void **out)
{
    z_stream z = {0};
    if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return 0;
    size_t cap = deflateBound(&z, (uLong)len);
    unsigned char *dst = keel_arena_alloc(a, cap);
    z.next_in = (Bytef *)(uintptr_t)src;
    z.avail_in = (uInt)len;
    z.next_out = dst;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    size_t n = z.total_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END || n >= len)
        return 0;
    *out = dst;
    return n;
}

static void on_response(keel_req *r, keel_response *res, void *data)
{
    const compress_cfg *c = data;
    if (res->streaming || res->len < c->min_bytes || res->len > UINT32_MAX ||
        !res->content_type || precompressed(res->content_type))
        return;
    const keel_route *rt = keel_req_route(r);
    if ((rt && (rt->flags & KEEL_ROUTE_SECRET)) || keel_res_has_header(r, "Content-Encoding"))
        return;
    keel_res_header(r, "Vary", "Accept-Encoding");
    if (!keel_accept_gzip(keel_req_header(r, "accept-encoding")))
        return;
    void *gz;
    size_t n = gzip_into(keel_req_arena(r), res->body, res->len, &gz);
    if (!n)
        return;
    keel_res_header(r, "Content-Encoding", "gzip");
    res->body = gz;
    res->len = n;
}

keel_middleware keel_mw_compress(uint64_t min_bytes)
{
    compress_cfg *c = keel_calloc(1, sizeof(*c));
    c->min_bytes = min_bytes ? min_bytes : 1;
    keel_middleware m = {.name = "compress", .phase = KEEL_PHASE_RESPOND, .on_response = on_response,
                         .dispose = keel_free, .data = c};
    return m;
}
