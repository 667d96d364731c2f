/* cron.c — cron expressions (see keel/cron.h).
 *
 * A parsed expression is five bit sets. The next fire time walks the
 * calendar from the minute after `after`, skipping whole months, days
 * and hours that cannot match before testing minutes, so a search costs
 * at most a few hundred steps even for "0 0 29 2 *" (next leap year) and
 * is bounded at 30 years. Dates are computed with the days-from-civil
 * arithmetic of the proleptic Gregorian calendar, not timegm, so the
 * result never depends on TZ or the C library.
 */
#include "keel/cron.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "keel/common.h"

/* ---------------------------------------------------------------- calendar */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned month_days(int64_t y, unsigned m)
{
    static const unsigned n[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : n[m - 1];
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* ---------------------------------------------------------------- parser */

typedef struct field_def {
    const char *name;
    unsigned lo, hi;
    const char *const *names; /* names[i] is value names_base + i */
    unsigned names_base;
} field_def;

static const char *const month_names[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                          "JUL", "AUG", "SEP", "OCT", "NOV", "DEC", NULL};
static const char *const day_names[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", NULL};

static const field_def fields[5] = {
    {"minute", 0, 59, NULL, 0},
    {"hour", 0, 23, NULL, 0},
    {"day-of-month", 1, 31, NULL, 0},
    {"month", 1, 12, month_names, 1},
    {"day-of-week", 0, 7, day_names, 0},
};

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return KEEL_EINVAL;
}

/* One value (number or name) at *p..end; advances *p. */
static int parse_value(const field_def *f, const char **p, const char *end, unsigned *out,
                       char *err, size_t errlen)
{
    const char *s = *p;
    if (s < end && isdigit((unsigned char)*s)) {
        unsigned v = 0;
        while (s < end && isdigit((unsigned char)*s)) {
            if (v > 1000)
                return fail(err, errlen, "%s: number too large", f->name);
            v = v * 10 + (unsigned)(*s++ - '0');
        }
        if (v < f->lo || v > f->hi)
            return fail(err, errlen, "%s: %u is out of range %u-%u", f->name, v, f->lo, f->hi);
        *out = v;
        *p = s;
        return 0;
    }
    if (s < end && isalpha((unsigned char)*s)) {
        const char *b = s;
        while (s < end && isalpha((unsigned char)*s))
            s++;
        size_t n = (size_t)(s - b);
        for (unsigned i = 0; f->names && f->names[i]; i++) {
            if (n == 3 && !strncasecmp(b, f->names[i], 3)) {
                *out = f->names_base + i;
                *p = s;
                return 0;
            }
        }
        if (!f->names)
            return fail(err, errlen, "%s: names are not allowed here (\"%.*s\")", f->name,
                        (int)(n > 16 ? 16 : n), b);
        return fail(err, errlen, "%s: unknown name \"%.*s\"", f->name, (int)(n > 16 ? 16 : n), b);
    }
    if (s >= end)
        return fail(err, errlen, "%s: a value is missing", f->name);
    return fail(err, errlen, "%s: unexpected character '%c'", f->name,
                isprint((unsigned char)*s) ? *s : '?');
}

/* One field (s..end, no spaces) into a bit set. */
static int parse_field(const field_def *f, const char *s, const char *end, uint64_t *bits,
                       int *star, char *err, size_t errlen)
{
    *bits = 0;
    *star = s < end && *s == '*';
    if (s == end)
        return fail(err, errlen, "%s: empty", f->name);
    while (s < end) {
        const char *e = memchr(s, ',', (size_t)(end - s));
        if (!e)
            e = end;
        if (e == s)
            return fail(err, errlen, "%s: empty list item", f->name);
        unsigned lo, hi, step = 1;
        const char *p = s;
        int ranged = 0;
        if (*p == '*') {
            lo = f->lo;
            hi = f->hi == 7 ? 6 : f->hi;
            p++;
            ranged = 1;
        } else {
            int rc = parse_value(f, &p, e, &lo, err, errlen);
            if (rc < 0)
                return rc;
            hi = lo;
            if (p < e && *p == '-') {
                p++;
                if ((rc = parse_value(f, &p, e, &hi, err, errlen)) < 0)
                    return rc;
                if (f->hi == 7 && hi == 0 && lo > 0) /* SAT-SUN: Sunday as 7 */
                    hi = 7;
                if (hi < lo)
                    return fail(err, errlen, "%s: range %u-%u runs backwards", f->name, lo, hi);
                ranged = 1;
            }
        }
        if (p < e && *p == '/') {
            p++;
            if (p == e || !isdigit((unsigned char)*p))
                return fail(err, errlen, "%s: a step needs a number after '/'", f->name);
            step = 0;
            while (p < e && isdigit((unsigned char)*p)) {
                if (step > 1000)
                    return fail(err, errlen, "%s: step too large", f->name);
                step = step * 10 + (unsigned)(*p++ - '0');
            }
            if (step == 0)
                return fail(err, errlen, "%s: a step of 0", f->name);
            if (step > f->hi)
                return fail(err, errlen, "%s: step %u is larger than the field's range",
                            f->name, step);
            if (!ranged) /* a/n: from a to the field's end (7/n: Sunday alone) */
                hi = f->hi == 7 && lo < 7 ? 6 : f->hi;
        }
        if (p != e)
            return fail(err, errlen, "%s: unexpected character '%c'", f->name,
                        isprint((unsigned char)*p) ? *p : '?');
        uint64_t item = 0;
        for (unsigned v = lo; v <= hi; v += step)
            item |= 1ull << (f->hi == 7 && v == 7 ? 0 : v);
        if (!item)
            return fail(err, errlen, "%s: an item that matches no value", f->name);
        *bits |= item;
        s = e < end ? e + 1 : e;
        if (e < end && s == end)
            return fail(err, errlen, "%s: empty list item", f->name);
    }
    return 0;
}

static int parse_every(const char *s, keel_cron *c, char *err, size_t errlen)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (!n)
        return fail(err, errlen, "@every: an interval is missing (e.g. @every 30s)");
    uint64_t total = 0;
    size_t i = 0;
    while (i < n) { /* one or more <number><unit>: 1h30m */
        if (!isdigit((unsigned char)s[i]))
            return fail(err, errlen, "@every: expected a number such as 30s, 5m, 2h or 1d");
        uint64_t v = 0;
        while (i < n && isdigit((unsigned char)s[i])) {
            if (v > 100000000ull)
                return fail(err, errlen, "@every: interval too long");
            v = v * 10 + (uint64_t)(s[i++] - '0');
        }
        uint64_t unit;
        if (i < n && s[i] == 's')
            unit = 1;
        else if (i < n && s[i] == 'm')
            unit = 60;
        else if (i < n && s[i] == 'h')
            unit = 3600;
        else if (i < n && s[i] == 'd')
            unit = 86400;
        else
            return fail(err, errlen, "@every: each number needs a unit: s, m, h or d");
        i++;
        total += v * unit;
        if (total > 366ull * 86400)
            return fail(err, errlen, "@every: interval longer than 366 days");
    }
    if (total == 0)
        return fail(err, errlen, "@every: the interval must be at least 1s");
    c->every_s = total;
    return 0;
}

/* "CRON_TZ=+05:30 " (or UTC, Z, -HH:MM, +HH) at the start of s. */
static int parse_tz(const char **ps, keel_cron *c, char *err, size_t errlen)
{
    const char *s = *ps + 8;
    const char *e = s;
    while (*e && *e != ' ' && *e != '\t')
        e++;
    size_t n = (size_t)(e - s);
    int32_t off = 0;
    if ((n == 3 && !strncasecmp(s, "UTC", 3)) || (n == 1 && (*s == 'Z' || *s == 'z'))) {
        off = 0;
    } else if (n >= 3 && (*s == '+' || *s == '-') && isdigit((unsigned char)s[1]) &&
               isdigit((unsigned char)s[2]) &&
               (n == 3 || (n == 6 && s[3] == ':' && isdigit((unsigned char)s[4]) &&
                           isdigit((unsigned char)s[5])))) {
        int hh = (s[1] - '0') * 10 + (s[2] - '0');
        int mm = n == 6 ? (s[4] - '0') * 10 + (s[5] - '0') : 0;
        if (hh > 14 || mm > 59)
            return fail(err, errlen, "CRON_TZ: offset out of range (at most +/-14:00)");
        off = (hh * 3600 + mm * 60) * (*s == '-' ? -1 : 1);
    } else {
        return fail(err, errlen, "CRON_TZ: expected UTC or a fixed offset such as +02:00 "
                                 "(named time zones are not supported)");
    }
    c->offset_s = off;
    *ps = e;
    return 0;
}

static const struct {
    const char *name;
    const char *expr;
} macros[] = {
    {"@yearly", "0 0 1 1 *"},  {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"},  {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
};

static int parse_fields(const char *s, keel_cron *c, char *err, size_t errlen)
{
    const char *start[5], *stop[5];
    int nf = 0;
    while (*s) {
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s)
            break;
        if (nf == 5)
            return fail(err, errlen, "expected 5 fields (minute hour day-of-month month "
                                     "day-of-week), got more");
        start[nf] = s;
        while (*s && *s != ' ' && *s != '\t')
            s++;
        stop[nf++] = s;
    }
    if (nf != 5)
        return fail(err, errlen, "expected 5 fields (minute hour day-of-month month "
                                 "day-of-week), got %d", nf);
    uint64_t bits[5];
    int star[5];
    for (int i = 0; i < 5; i++) {
        int rc = parse_field(&fields[i], start[i], stop[i], &bits[i], &star[i], err, errlen);
        if (rc < 0)
            return rc;
    }
    c->minutes = bits[0];
    c->hours = (uint32_t)bits[1];
    c->mdays = (uint32_t)bits[2];
    c->months = (uint16_t)bits[3];
    c->wdays = (uint8_t)bits[4];
    c->dom_star = (uint8_t)star[2];
    c->dow_star = (uint8_t)star[4];
    /* A day-of-month that no chosen month has, with no day-of-week to
     * match instead, never fires: refuse it now rather than never. */
    if (!(!c->dom_star && !c->dow_star)) {
        int any = 0;
        for (unsigned m = 1; m <= 12 && !any; m++) {
            if (!(c->months & (1u << m)))
                continue;
            unsigned maxd = m == 2 ? 29 : month_days(2001, m);
            for (unsigned d = 1; d <= maxd; d++)
                if (c->mdays & (1u << d)) {
                    any = 1;
                    break;
                }
        }
        if (!any)
            return fail(err, errlen, "day-of-month: no chosen day occurs in any chosen month "
                                     "(e.g. 30 February): the schedule would never fire");
    }
    return 0;
}

int keel_cron_parse(const char *expr, keel_cron *out, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!expr || !out)
        return fail(err, errlen, "no expression");
    if (strlen(expr) >= KEEL_CRON_MAX_EXPR)
        return fail(err, errlen, "expression longer than %d bytes", KEEL_CRON_MAX_EXPR - 1);
    for (const char *p = expr; *p; p++)
        if ((unsigned char)*p < 0x20 && *p != '\t')
            return fail(err, errlen, "control character in the expression");
    keel_cron c;
    memset(&c, 0, sizeof(c));
    const char *s = expr;
    while (*s == ' ' || *s == '\t')
        s++;
    if (!strncmp(s, "CRON_TZ=", 8)) {
        int rc = parse_tz(&s, &c, err, errlen);
        if (rc < 0)
            return rc;
        while (*s == ' ' || *s == '\t')
            s++;
    }
    int rc;
    if (*s == '@') {
        size_t n = strcspn(s, " \t");
        if (n == 6 && !strncasecmp(s, "@every", 6)) {
            rc = parse_every(s + 6, &c, err, errlen);
        } else {
            size_t i;
            for (i = 0; i < sizeof(macros) / sizeof(macros[0]); i++)
                if (strlen(macros[i].name) == n && !strncasecmp(s, macros[i].name, n))
                    break;
            if (i == sizeof(macros) / sizeof(macros[0]))
                return fail(err, errlen, "unknown macro \"%.*s\" (expected @hourly, @daily, "
                                         "@weekly, @monthly, @yearly or @every)",
                            (int)(n > 16 ? 16 : n), s);
            const char *rest = s + n;
            while (*rest == ' ' || *rest == '\t')
                rest++;
            if (*rest)
                return fail(err, errlen, "%s takes no fields after it", macros[i].name);
            rc = parse_fields(macros[i].expr, &c, err, errlen);
        }
    } else {
        rc = parse_fields(s, &c, err, errlen);
    }
    if (rc < 0)
        return rc;
    *out = c;
    return 0;
}

/* ---------------------------------------------------------------- next */

static int day_matches(const keel_cron *c, int64_t y, unsigned m, unsigned d)
{
    int dom = (c->mdays >> d) & 1;
    unsigned wd = (unsigned)((days_from_civil(y, m, d) % 7 + 11) % 7); /* 1970-01-01: Thu */
    int dow = (c->wdays >> wd) & 1;
    if (!c->dom_star && !c->dow_star)
        return dom || dow;
    return dom && dow;
}

int64_t keel_cron_next(const keel_cron *c, int64_t after)
{
    if (!c)
        return -1;
    if (after < -(1ll << 50) || after > (1ll << 50))
        return -1;
    if (c->every_s) {
        int64_t every = (int64_t)c->every_s;
        int64_t local = after + c->offset_s;
        return (floor_div(local, every) + 1) * every - c->offset_s;
    }
    int64_t local = after + c->offset_s;
    int64_t t = (floor_div(local, 60) + 1) * 60; /* the next whole minute */
    int64_t days = floor_div(t, 86400);
    int64_t sod = t - days * 86400;
    unsigned hour = (unsigned)(sod / 3600), minute = (unsigned)(sod % 3600 / 60);
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    int64_t end_year = y + 30;
    while (y <= end_year) {
        if (!(c->months & (1u << m))) {
            if (++m > 12) {
                m = 1;
                y++;
            }
            d = 1;
            hour = minute = 0;
            continue;
        }
        if (!day_matches(c, y, m, d)) {
            if (++d > month_days(y, m)) {
                d = 1;
                if (++m > 12) {
                    m = 1;
                    y++;
                }
            }
            hour = minute = 0;
            continue;
        }
        if (!(c->hours & (1u << hour))) {
            minute = 0;
            if (++hour > 23) {
                hour = 0;
                if (++d > month_days(y, m)) {
                    d = 1;
                    if (++m > 12) {
                        m = 1;
                        y++;
                    }
                }
            }
            continue;
        }
        while (minute < 60 && !(c->minutes & (1ull << minute)))
            minute++;
        if (minute == 60) {
            minute = 0;
            if (++hour > 23) {
                hour = 0;
                if (++d > month_days(y, m)) {
                    d = 1;
                    if (++m > 12) {
                        m = 1;
                        y++;
                    }
                }
            }
            continue;
        }
        return days_from_civil(y, m, d) * 86400 + hour * 3600 + minute * 60 - c->offset_s;
    }
    return -1;
}

int64_t keel_cron_due(const keel_cron *c, int64_t last, int64_t now)
{
    if (!c || now <= last)
        return -1;
    int64_t first = keel_cron_next(c, last);
    if (first < 0 || first > now)
        return -1;
    if (c->every_s) {
        int64_t every = (int64_t)c->every_s, local = now + c->offset_s;
        return floor_div(local, every) * every - c->offset_s;
    }
    /* The latest fire time <= now: search forward from a window before
     * now that is wide enough to hold one, widening it; each window is
     * scanned tick by tick, so the widening keeps the scan short. */
    static const int64_t windows[] = {60, 3600, 86400, 32 * 86400, 367 * 86400,
                                      9 * 367 * 86400ll, 31 * 367 * 86400ll};
    for (size_t i = 0; i < sizeof(windows) / sizeof(windows[0]); i++) {
        int64_t from = now - windows[i];
        if (from < last)
            from = last;
        int64_t t = keel_cron_next(c, from);
        if (t < 0 || t > now) {
            if (from == last)
                break;
            continue;
        }
        for (;;) {
            int64_t n = keel_cron_next(c, t);
            if (n < 0 || n > now)
                return t;
            t = n;
        }
    }
    return first;
}

/* ---------------------------------------------------------------- CRON_JOBS */

static int name_ok(const char *s, size_t n, const char *extra)
{
    if (n == 0 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-' &&
            !strchr(extra, s[i]))
            return 0;
    return 1;
}

static void trim(const char **s, const char **e)
{
    while (*s < *e && isspace((unsigned char)**s))
        (*s)++;
    while (*e > *s && isspace((unsigned char)(*e)[-1]))
        (*e)--;
}

int keel_cron_jobs_parse(const char *spec, keel_cron_entry **out, size_t *n, char *err,
                         size_t errlen)
{
    *out = NULL;
    *n = 0;
    if (err && errlen)
        err[0] = '\0';
    if (!spec)
        return 0;
    keel_cron_entry *v = NULL;
    size_t cnt = 0, cap = 0, idx = 0;
    const char *s = spec;
    int rc = 0;
    while (*s) {
        const char *e = s + strcspn(s, ";\n");
        const char *a = s, *b = e;
        s = *e ? e + 1 : e;
        trim(&a, &b);
        if (a == b)
            continue;
        idx++;
        const char *eq = memchr(a, '=', (size_t)(b - a));
        const char *arrow = NULL;
        for (const char *p = b - 2; p >= a; p--)
            if (p[0] == '=' && p[1] == '>') {
                arrow = p;
                break;
            }
        if (!eq || !arrow || arrow <= eq) {
            rc = fail(err, errlen, "entry %zu: expected name = expression => kind", idx);
            goto fail;
        }
        const char *na = a, *nb = eq, *xa = eq + 1, *xb = arrow, *ka = arrow + 2, *kb = b;
        trim(&na, &nb);
        trim(&xa, &xb);
        trim(&ka, &kb);
        if (!name_ok(na, (size_t)(nb - na), "")) {
            rc = fail(err, errlen, "entry %zu: the name must be 1-63 of A-Z a-z 0-9 _ . -", idx);
            goto fail;
        }
        if (!name_ok(ka, (size_t)(kb - ka), ":")) {
            rc = fail(err, errlen, "entry %zu (%.*s): the kind must be 1-63 of A-Z a-z 0-9 _ . : -",
                      idx, (int)(nb - na), na);
            goto fail;
        }
        if ((size_t)(xb - xa) >= KEEL_CRON_MAX_EXPR) {
            rc = fail(err, errlen, "entry %zu (%.*s): expression too long", idx, (int)(nb - na),
                      na);
            goto fail;
        }
        for (size_t i = 0; i < cnt; i++)
            if (strlen(v[i].name) == (size_t)(nb - na) && !memcmp(v[i].name, na, (size_t)(nb - na))) {
                rc = fail(err, errlen, "entry %zu: the name %.*s is used twice", idx,
                          (int)(nb - na), na);
                goto fail;
            }
        if (cnt == cap) {
            cap = cap ? cap * 2 : 4;
            v = keel_realloc(v, cap * sizeof(*v));
        }
        keel_cron_entry *en = &v[cnt];
        memset(en, 0, sizeof(*en));
        memcpy(en->name, na, (size_t)(nb - na));
        memcpy(en->kind, ka, (size_t)(kb - ka));
        memcpy(en->expr, xa, (size_t)(xb - xa));
        char why[200];
        if (keel_cron_parse(en->expr, &en->cron, why, sizeof(why)) < 0) {
            rc = fail(err, errlen, "entry %zu (%s): %s", idx, en->name, why);
            goto fail;
        }
        cnt++;
    }
    *out = v;
    *n = cnt;
    return 0;
fail:
    keel_free(v);
    return rc;
}

static int cron_validate(void *opts, const keel_config *cfg, FILE *err)
{
    (void)cfg;
    keel_cron_options *o = opts;
    keel_cron_entry *v;
    size_t n;
    char why[300];
    if (keel_cron_jobs_parse(o->jobs, &v, &n, why, sizeof(why)) < 0) {
        fprintf(err, "keel: CRON_JOBS: %s\n", why);
        return KEEL_ECONFIG;
    }
    keel_free(v);
    return 0;
}

static const keel_config_var cron_vars[] = {
    {.name = "CRON_JOBS", .type = KEEL_CONFIG_STR, .def = "",
     KEEL_CONFIG_AT(keel_cron_options, jobs),
     .help = "schedules, `name = expression => kind` separated by ';' "
             "(docs/scheduler.md); empty = none"},
};

const keel_config_module keel_cron_config =
    KEEL_CONFIG_MODULE("cron", "Cron schedules declared in configuration (src/store/cron.c).",
                       keel_cron_options, cron_vars, cron_validate);
