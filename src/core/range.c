/* range.c — Range header parsing, entity-tag comparison, HTTP dates and
 * precondition evaluation (keel/range.h; RFC 9110 sections 13 and 14). */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "keel/range.h"

static int ows(char c)
{
    return c == ' ' || c == '\t';
}

static int digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Digits at s[*i..): 1 with *v (saturating at UINT64_MAX), or 0 if none. */
static int number(keel_str s, size_t *i, uint64_t *v)
{
    size_t k = *i;
    uint64_t n = 0;
    while (k < s.len && digit(s.ptr[k])) {
        uint64_t d = (uint64_t)(s.ptr[k] - '0');
        n = n > (UINT64_MAX - d) / 10 ? UINT64_MAX : n * 10 + d;
        k++;
    }
    if (k == *i)
        return 0;
    *i = k;
    *v = n;
    return 1;
}

int keel_range_parse(keel_str v, uint64_t size, keel_byte_range *out, size_t cap)
{
    if (!v.ptr || v.len < 6 || strncasecmp(v.ptr, "bytes=", 6) != 0)
        return KEEL_RANGE_IGNORE;
    size_t i = 6, n = 0, specs = 0;
    int any = 0;
    while (i <= v.len) {
        while (i < v.len && ows(v.ptr[i]))
            i++;
        if (i < v.len && v.ptr[i] == ',') { /* empty list element */
            i++;
            continue;
        }
        if (i == v.len)
            break;
        uint64_t first = 0, last = UINT64_MAX;
        int suffix = 0;
        if (v.ptr[i] == '-') {
            i++;
            if (!number(v, &i, &last))
                return KEEL_RANGE_IGNORE;
            suffix = 1;
        } else {
            if (!number(v, &i, &first) || i == v.len || v.ptr[i] != '-')
                return KEEL_RANGE_IGNORE;
            i++;
            if (i < v.len && digit(v.ptr[i])) {
                number(v, &i, &last);
                if (last < first)
                    return KEEL_RANGE_IGNORE; /* invalid: the header is ignored */
            }
        }
        while (i < v.len && ows(v.ptr[i]))
            i++;
        if (i < v.len) {
            if (v.ptr[i] != ',')
                return KEEL_RANGE_IGNORE;
            i++;
        }
        any = 1;
        if (++specs > cap)
            return KEEL_RANGE_REFUSED;
        /* resolve against the size */
        if (suffix) {
            if (last == 0 || size == 0)
                continue; /* unsatisfiable */
            first = last >= size ? 0 : size - last;
            last = size - 1;
        } else {
            if (first >= size)
                continue;
            if (last >= size)
                last = size - 1;
        }
        out[n].first = first;
        out[n].last = last;
        n++;
    }
    if (!any)
        return KEEL_RANGE_IGNORE;
    if (n == 0)
        return KEEL_RANGE_UNSATISFIABLE;
    /* overlap: any two resolved ranges sharing a byte (n <= cap, small) */
    for (size_t a = 0; a < n; a++)
        for (size_t b = a + 1; b < n; b++)
            if (out[a].first <= out[b].last && out[b].first <= out[a].last)
                return KEEL_RANGE_REFUSED;
    return (int)n;
}

/* ---------------------------------------------------------------- etags */

/* One entity-tag at s[*i..): 1 with its opaque part and weakness, else 0. */
static int entity_tag(keel_str s, size_t *i, keel_str *opaque, int *weak)
{
    size_t k = *i;
    *weak = 0;
    if (k + 1 < s.len && s.ptr[k] == 'W' && s.ptr[k + 1] == '/') {
        *weak = 1;
        k += 2;
    }
    if (k >= s.len || s.ptr[k] != '"')
        return 0;
    size_t start = ++k;
    while (k < s.len && s.ptr[k] != '"') {
        unsigned char c = (unsigned char)s.ptr[k];
        if (c < 0x21 || c == 0x7f)
            return 0; /* etagc = %x21 / %x23-7E / obs-text */
        k++;
    }
    if (k == s.len)
        return 0;
    *opaque = (keel_str){s.ptr + start, k - start};
    *i = k + 1;
    return 1;
}

int keel_etag_list_match(keel_str list, const char *etag, int strong)
{
    if (!list.ptr || !etag)
        return 0;
    keel_str mine;
    int mine_weak;
    size_t z = 0;
    keel_str e = keel_str_c(etag);
    if (!entity_tag(e, &z, &mine, &mine_weak))
        return 0;
    size_t i = 0;
    while (i < list.len && ows(list.ptr[i]))
        i++;
    if (i < list.len && list.ptr[i] == '*') {
        size_t k = i + 1;
        while (k < list.len && ows(list.ptr[k]))
            k++;
        return k == list.len;
    }
    while (i < list.len) {
        while (i < list.len && (ows(list.ptr[i]) || list.ptr[i] == ','))
            i++;
        if (i == list.len)
            break;
        keel_str theirs;
        int weak;
        if (!entity_tag(list, &i, &theirs, &weak))
            return 0;
        if (keel_str_eq(theirs, mine) && (!strong || (!weak && !mine_weak)))
            return 1;
        while (i < list.len && ows(list.ptr[i]))
            i++;
        if (i < list.len && list.ptr[i] != ',')
            return 0;
    }
    return 0;
}

/* ---------------------------------------------------------------- dates */

static int month_of(const char *p)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    for (int m = 0; m < 12; m++)
        if (memcmp(p, months + 3 * m, 3) == 0)
            return m;
    return -1;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; m 0-based). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    m += 1;
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int num_at(const char *p, int n, int *out)
{
    int v = 0;
    for (int k = 0; k < n; k++) {
        if (!digit(p[k]))
            return -1;
        v = v * 10 + (p[k] - '0');
    }
    *out = v;
    return 0;
}

static int finish_date(int y, int mon, int d, int hh, int mm, int ss, time_t *out)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mon < 0 || d < 1 || d > mdays[mon] || hh > 23 || mm > 59 || ss > 60)
        return -1;
    *out = (time_t)(days_from_civil(y, mon, d) * 86400 + hh * 3600 + mm * 60 + ss);
    return 0;
}

int keel_http_date_parse(keel_str s, time_t *out)
{
    char b[64];
    if (!s.ptr || s.len >= sizeof(b) || s.len < 24)
        return -1;
    memcpy(b, s.ptr, s.len);
    b[s.len] = 0;
    int y, d, hh, mm, ss, mon;
    /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" (29 bytes) */
    if (s.len == 29 && b[3] == ',' && b[4] == ' ' && b[7] == ' ' && b[11] == ' ' &&
        b[16] == ' ' && b[19] == ':' && b[22] == ':' && memcmp(b + 25, " GMT", 4) == 0) {
        if (num_at(b + 5, 2, &d) || num_at(b + 12, 4, &y) || num_at(b + 17, 2, &hh) ||
            num_at(b + 20, 2, &mm) || num_at(b + 23, 2, &ss))
            return -1;
        mon = month_of(b + 8);
        return finish_date(y, mon, d, hh, mm, ss, out);
    }
    /* asctime: "Sun Nov  6 08:49:37 1994" (24 bytes) */
    if (s.len == 24 && b[3] == ' ' && b[7] == ' ' && b[10] == ' ' && b[13] == ':' &&
        b[16] == ':' && b[19] == ' ') {
        if (b[8] == ' ')
            b[8] = '0';
        if (num_at(b + 8, 2, &d) || num_at(b + 11, 2, &hh) || num_at(b + 14, 2, &mm) ||
            num_at(b + 17, 2, &ss) || num_at(b + 20, 4, &y))
            return -1;
        mon = month_of(b + 4);
        return finish_date(y, mon, d, hh, mm, ss, out);
    }
    /* RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT" */
    const char *c = strchr(b, ',');
    if (c && (size_t)(c - b) <= 9 && strlen(c) == 24 && c[1] == ' ' && c[4] == '-' &&
        c[8] == '-' && c[11] == ' ' && c[14] == ':' && c[17] == ':' &&
        memcmp(c + 20, " GMT", 4) == 0) {
        if (num_at(c + 2, 2, &d) || num_at(c + 9, 2, &y) || num_at(c + 12, 2, &hh) ||
            num_at(c + 15, 2, &mm) || num_at(c + 18, 2, &ss))
            return -1;
        y += y < 70 ? 2000 : 1900; /* RFC 9110 section 5.6.7: 50-year window, simplified */
        mon = month_of(c + 5);
        return finish_date(y, mon, d, hh, mm, ss, out);
    }
    return -1;
}

void keel_http_date_format(time_t t, char out[30])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 30, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* ---------------------------------------------------------------- preconditions */

int keel_http_preconditions(keel_str if_match, keel_str if_none_match,
                            keel_str if_modified_since, keel_str if_unmodified_since,
                            const char *etag, time_t mtime)
{
    time_t t;
    /* 1. If-Match (strong), else 2. If-Unmodified-Since */
    if (if_match.ptr) {
        if (!keel_etag_list_match(if_match, etag, 1))
            return 412;
    } else if (if_unmodified_since.ptr && keel_http_date_parse(if_unmodified_since, &t) == 0) {
        if (mtime > t)
            return 412;
    }
    /* 3. If-None-Match (weak), else 4. If-Modified-Since (GET/HEAD) */
    if (if_none_match.ptr) {
        if (keel_etag_list_match(if_none_match, etag, 0))
            return 304;
    } else if (if_modified_since.ptr && keel_http_date_parse(if_modified_since, &t) == 0) {
        if (mtime <= t)
            return 304;
    }
    return 0;
}

int keel_if_range_ok(keel_str v, const char *etag, time_t mtime)
{
    if (!v.ptr)
        return 1;
    size_t i = 0;
    while (i < v.len && ows(v.ptr[i]))
        i++;
    keel_str val = {v.ptr + i, v.len - i};
    while (val.len && ows(val.ptr[val.len - 1]))
        val.len--;
    if (val.len && (val.ptr[0] == '"' || val.ptr[0] == 'W')) {
        keel_str theirs, mine;
        int weak, mine_weak;
        size_t k = 0, z = 0;
        if (!entity_tag(val, &k, &theirs, &weak) || k != val.len || weak)
            return 0;
        keel_str e = keel_str_c(etag);
        if (!etag || !entity_tag(e, &z, &mine, &mine_weak) || mine_weak)
            return 0;
        return keel_str_eq(theirs, mine);
    }
    time_t t;
    return keel_http_date_parse(val, &t) == 0 && t == mtime;
}
