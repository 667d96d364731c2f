/* net.c — addresses, CIDR lists (TRUST_PROXY: "10.0.0.0/8, ::1,
 * 192.168.1.5") and the client address behind trusted proxies.
 * IPv4 and IPv6; an address without a prefix is a single host, and an
 * IPv4-mapped IPv6 address (::ffff:a.b.c.d) is an IPv4 address. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "keel/net.h"

int keel_addr_parse(const char *s, size_t len, keel_addr *out)
{
    char buf[64];
    memset(out, 0, sizeof(*out));
    if (!s || len == 0 || len >= sizeof(buf))
        return KEEL_EINVAL;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, out->b) == 1) {
        out->family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, buf, out->b) != 1) {
        memset(out, 0, sizeof(*out));
        return KEEL_EINVAL;
    }
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(out->b, mapped, 12) == 0) {
        memmove(out->b, out->b + 12, 4);
        memset(out->b + 4, 0, 12);
        out->family = AF_INET;
    } else {
        out->family = AF_INET6;
    }
    return 0;
}

void keel_addr_format(const keel_addr *a, char *buf, size_t cap)
{
    if (!a->family || !inet_ntop(a->family, a->b, buf, (socklen_t)cap))
        snprintf(buf, cap, "-");
}

keel_addr keel_addr_prefix(const keel_addr *a, unsigned v6_bits)
{
    keel_addr r = *a;
    if (a->family != AF_INET6 || v6_bits >= 128)
        return r;
    unsigned whole = v6_bits / 8, rest = v6_bits % 8;
    if (rest)
        r.b[whole++] &= (uint8_t)(0xff << (8 - rest));
    memset(r.b + whole, 0, 16 - whole);
    return r;
}

static int parse_one(const char *s, size_t n, keel_cidr *out)
{
    const char *slash = memchr(s, '/', n);
    size_t alen = slash ? (size_t)(slash - s) : n;
    keel_addr a;
    if (keel_addr_parse(s, alen, &a) < 0)
        return KEEL_EINVAL;
    if (a.family == AF_INET && memchr(s, ':', alen))
        return KEEL_EINVAL; /* no ::ffff: blocks: write them as IPv4 */
    unsigned max = a.family == AF_INET ? 32 : 128, bits = max;
    if (slash) {
        const char *p = slash + 1, *end = s + n;
        if (p == end || end - p > 3)
            return KEEL_EINVAL;
        bits = 0;
        for (; p < end; p++) {
            if (*p < '0' || *p > '9')
                return KEEL_EINVAL;
            bits = bits * 10 + (unsigned)(*p - '0');
        }
        if (bits > max)
            return KEEL_EINVAL;
    }
    out->family = a.family;
    memcpy(out->addr, a.b, 16);
    out->bits = bits;
    return 0;
}

int keel_cidr_parse_list(const char *list, keel_cidr *out, size_t cap)
{
    size_t n = 0;
    const char *p = list ? list : "";
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (!*p)
            break;
        const char *start = p;
        while (*p && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        keel_cidr c;
        if (parse_one(start, (size_t)(p - start), &c) < 0)
            return KEEL_EINVAL;
        if (n < cap)
            out[n] = c;
        n++;
    }
    return n > cap ? KEEL_EINVAL : (int)n;
}

int keel_cidr_contains(const keel_cidr *list, size_t n, const keel_addr *a)
{
    if (!a->family)
        return 0;
    for (size_t i = 0; i < n; i++) {
        const keel_cidr *c = &list[i];
        if (c->family != a->family)
            continue;
        unsigned whole = c->bits / 8, rest = c->bits % 8;
        if (memcmp(a->b, c->addr, whole) != 0)
            continue;
        if (rest) {
            uint8_t mask = (uint8_t)(0xff << (8 - rest));
            if ((a->b[whole] & mask) != (c->addr[whole] & mask))
                continue;
        }
        return 1;
    }
    return 0;
}

int keel_cidr_match(const keel_cidr *list, size_t n, const char *addr)
{
    keel_addr a;
    if (!addr || keel_addr_parse(addr, strlen(addr), &a) < 0)
        return 0;
    return keel_cidr_contains(list, n, &a);
}

int keel_cidr_any(const keel_cidr *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (list[i].bits == 0)
            return 1;
    return 0;
}

/* ---------------------------------------------------------------- forwarded */

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static keel_str trim(const char *p, const char *end)
{
    while (p < end && is_ows(*p))
        p++;
    while (end > p && is_ows(end[-1]))
        end--;
    return (keel_str){p, (size_t)(end - p)};
}

/* One X-Forwarded-For hop or Forwarded for= value: an address, maybe with
 * a port, maybe bracketed ("[::1]:80"). */
static int parse_hop(keel_str h, keel_addr *out)
{
    const char *p = h.ptr;
    size_t n = h.len;
    if (n && p[0] == '[') {
        const char *close = memchr(p, ']', n);
        if (!close)
            return KEEL_EINVAL;
        return keel_addr_parse(p + 1, (size_t)(close - p - 1), out);
    }
    if (keel_addr_parse(p, n, out) == 0)
        return 0;
    /* "1.2.3.4:80": one colon means IPv4 with a port */
    const char *colon = memchr(p, ':', n);
    if (colon && !memchr(colon + 1, ':', n - (size_t)(colon - p) - 1) &&
        keel_addr_parse(p, (size_t)(colon - p), out) == 0 && out->family == AF_INET)
        return 0;
    return KEEL_EINVAL;
}

/* The value of parameter `name` in one Forwarded element
 * ("for=1.2.3.4;proto=https"), unquoted; a NULL view when absent. */
static keel_str fwd_param(keel_str elem, const char *name)
{
    size_t nl = strlen(name);
    const char *p = elem.ptr, *end = elem.ptr + elem.len;
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *pe = semi ? semi : end;
        keel_str pair = trim(p, pe);
        const char *eq = memchr(pair.ptr, '=', pair.len);
        if (eq && (size_t)(eq - pair.ptr) == nl && strncasecmp(pair.ptr, name, nl) == 0) {
            keel_str v = trim(eq + 1, pair.ptr + pair.len);
            if (v.len >= 2 && v.ptr[0] == '"' && v.ptr[v.len - 1] == '"') {
                v.ptr++;
                v.len -= 2;
            }
            return v;
        }
        p = semi ? semi + 1 : end;
    }
    return KEEL_STR_NULL;
}

/* Calls back on the list's items from the right: the values' comma
 * separated members, last value first. Stops when fn returns nonzero. */
typedef int (*item_fn)(keel_str item, void *arg);

static int each_from_right(const keel_str *values, size_t nvalues, item_fn fn, void *arg)
{
    for (size_t i = nvalues; i-- > 0;) {
        const char *start = values[i].ptr, *end = start + values[i].len;
        if (!start)
            continue;
        const char *p = end;
        while (p > start) {
            const char *q = p;
            while (q > start && q[-1] != ',')
                q--;
            keel_str item = trim(q, p);
            if (item.len) {
                int rc = fn(item, arg);
                if (rc)
                    return rc;
            }
            p = q > start ? q - 1 : start;
        }
    }
    return 0;
}

typedef struct walk {
    keel_fwd_header kind;
    const keel_cidr *trusted;
    size_t ntrusted;
    keel_addr last; /* the last good hop, family 0 before the first */
    int found;
} walk;

static int walk_hop(keel_str item, void *arg)
{
    walk *w = arg;
    keel_str hop = item;
    if (w->kind == KEEL_FWD_FORWARDED) {
        hop = fwd_param(item, "for");
        if (!hop.ptr)
            return 1; /* an element without for=: the chain is broken */
    }
    keel_addr a;
    if (parse_hop(hop, &a) < 0)
        return 1;
    w->last = a;
    if (!keel_cidr_contains(w->trusted, w->ntrusted, &a)) {
        w->found = 1;
        return 1;
    }
    return 0;
}

int keel_forwarded_client(const keel_str *values, size_t nvalues, keel_fwd_header kind,
                          const keel_cidr *trusted, size_t ntrusted, keel_addr *out)
{
    walk w = {.kind = kind, .trusted = trusted, .ntrusted = ntrusted};
    each_from_right(values, nvalues, walk_hop, &w);
    if (!w.last.family)
        return 0;
    *out = w.last;
    return 1;
}

typedef struct proto_find {
    keel_str proto;
} proto_find;

static int remember_proto(keel_str item, void *arg)
{
    proto_find *f = arg;
    keel_str p = fwd_param(item, "proto");
    if (p.ptr)
        f->proto = p; /* walking right to left: the last one kept is the first */
    return 0;
}

int keel_forwarded_https(const keel_str *values, size_t nvalues, keel_fwd_header kind)
{
    keel_str proto = KEEL_STR_NULL;
    if (kind == KEEL_FWD_FORWARDED) {
        proto_find f = {KEEL_STR_NULL};
        each_from_right(values, nvalues, remember_proto, &f);
        proto = f.proto;
    } else {
        for (size_t i = 0; i < nvalues && !proto.ptr; i++) {
            if (!values[i].ptr)
                continue;
            const char *p = values[i].ptr, *end = p + values[i].len;
            const char *comma = memchr(p, ',', values[i].len);
            keel_str v = trim(p, comma ? comma : end);
            if (v.len)
                proto = v;
        }
    }
    return proto.len == 5 && strncasecmp(proto.ptr, "https", 5) == 0;
}
