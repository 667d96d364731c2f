/* cidr.c — address lists for TRUST_PROXY: "10.0.0.0/8, ::1, 192.168.1.5".
 * IPv4 and IPv6, an address without a prefix is a single host, and an
 * IPv4-mapped IPv6 peer (::ffff:a.b.c.d) matches IPv4 blocks. */
#include <arpa/inet.h>
#include <stdlib.h>

#include "keel/mw.h"

/* Parses one address into 16 bytes; returns the family or 0. */
static int parse_addr(const char *s, uint8_t out[16])
{
    memset(out, 0, 16);
    if (inet_pton(AF_INET, s, out) == 1)
        return AF_INET;
    if (inet_pton(AF_INET6, s, out) != 1)
        return 0;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(out, mapped, 12) == 0) {
        memmove(out, out + 12, 4);
        memset(out + 4, 0, 12);
        return AF_INET;
    }
    return AF_INET6;
}

static int parse_one(const char *s, size_t n, keel_cidr *out)
{
    char buf[64];
    if (n == 0 || n >= sizeof(buf))
        return KEEL_EINVAL;
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *slash = strchr(buf, '/');
    if (slash)
        *slash = '\0';
    int fam = parse_addr(buf, out->addr);
    if (!fam || (fam == AF_INET && strchr(buf, ':')))
        return KEEL_EINVAL; /* no ::ffff: blocks: write them as IPv4 */
    unsigned max = fam == AF_INET ? 32 : 128, bits = max;
    if (slash) {
        const char *p = slash + 1;
        if (!*p || strlen(p) > 3)
            return KEEL_EINVAL;
        bits = 0;
        for (; *p; p++) {
            if (*p < '0' || *p > '9')
                return KEEL_EINVAL;
            bits = bits * 10 + (unsigned)(*p - '0');
        }
        if (bits > max)
            return KEEL_EINVAL;
    }
    out->family = fam;
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

int keel_cidr_match(const keel_cidr *list, size_t n, const char *addr)
{
    uint8_t a[16];
    int fam = addr ? parse_addr(addr, a) : 0;
    if (!fam)
        return 0;
    for (size_t i = 0; i < n; i++) {
        const keel_cidr *c = &list[i];
        if (c->family != fam)
            continue;
        unsigned whole = c->bits / 8, rest = c->bits % 8;
        if (memcmp(a, c->addr, whole) != 0)
            continue;
        if (rest) {
            uint8_t mask = (uint8_t)(0xff << (8 - rest));
            if ((a[whole] & mask) != (c->addr[whole] & mask))
                continue;
        }
        return 1;
    }
    return 0;
}
