/* mail.c — building messages (see keel/mail.h).
 *
 * Every value a caller gives (addresses, names, subject, Message-ID,
 * boundary) is checked before one byte is written: CR, LF or NUL in any
 * of them is refused, so no value can end a header line and start
 * another (header injection), and the bodies are quoted-printable, so
 * no body line can reach 998 bytes or look like a boundary. Headers are
 * ASCII: a UTF-8 subject or display name becomes RFC 2047 encoded words
 * ("=?UTF-8?B?...?="), each at most 75 bytes, on folded lines, cut only
 * between characters. The boundary starts with "=_", which quoted-
 * printable output never contains.
 */
#include "keel/mail.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "keel/common.h"

#define FAIL(...) (snprintf(err, errlen, __VA_ARGS__), KEEL_EINVAL)

/* ---------------------------------------------------------------- checks */

/* 0 when s is valid UTF-8 without control characters other than tab (and
 * CR/LF when allow_lines); else the offending byte offset + 1. */
static size_t bad_utf8(const char *s, int allow_lines)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (p[i]) {
        unsigned c = p[i];
        if (c < 0x80) {
            if ((c < 0x20 && c != '\t' && !(allow_lines && (c == '\r' || c == '\n'))) ||
                c == 0x7f)
                return i + 1;
            i++;
            continue;
        }
        size_t n;
        unsigned min;
        if ((c & 0xe0) == 0xc0)
            n = 1, min = 0x80, c &= 0x1f;
        else if ((c & 0xf0) == 0xe0)
            n = 2, min = 0x800, c &= 0x0f;
        else if ((c & 0xf8) == 0xf0)
            n = 3, min = 0x10000, c &= 0x07;
        else
            return i + 1;
        for (size_t k = 1; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return i + 1;
            c = (c << 6) | (p[i + k] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
            return i + 1;
        i += n + 1;
    }
    return 0;
}

static int has_line_break(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

/* A header value: no CR/LF (header injection), valid UTF-8, bounded. */
static int check_value(const char *what, const char *s, char *err, size_t errlen)
{
    if (has_line_break(s))
        return FAIL("%s: contains a line break (CR or LF): refused", what);
    if (strlen(s) > KEEL_MAIL_MAX_FIELD)
        return FAIL("%s: longer than %d bytes", what, KEEL_MAIL_MAX_FIELD);
    if (bad_utf8(s, 0))
        return FAIL("%s: not valid UTF-8 text (or a control character)", what);
    return 0;
}

int keel_mail_address_ok(const char *a)
{
    if (!a)
        return 0;
    size_t n = strlen(a);
    const char *at = strchr(a, '@');
    if (n == 0 || n > 254 || !at || at == a || !at[1] || strchr(at + 1, '@'))
        return 0;
    for (const char *p = a; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c >= 0x7f || strchr("<>()[]\\,;:\"", c))
            return 0;
    }
    const char *d = at + 1;
    if (*d == '.' || a[n - 1] == '.' || strstr(d, ".."))
        return 0;
    return 1;
}

static int check_address(const char *what, const char *a, char *err, size_t errlen)
{
    if (!a || !*a)
        return FAIL("%s: an address is required", what);
    if (has_line_break(a))
        return FAIL("%s: contains a line break (CR or LF): refused", what);
    if (!keel_mail_address_ok(a))
        return FAIL("%s: not an address keel sends to (ASCII local@domain, no spaces, "
                    "quotes or angle brackets)", what);
    return 0;
}

/* ---------------------------------------------------------------- encodings */

static void b64(keel_buf *out, const unsigned char *p, size_t n)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *w = keel_buf_reserve(out, (n + 2) / 3 * 4);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        w[o++] = t[(v >> 18) & 63];
        w[o++] = t[(v >> 12) & 63];
        w[o++] = i + 1 < n ? t[(v >> 6) & 63] : '=';
        w[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out->len += o;
}

static int plain_ascii(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p > 0x7e)
            return 0;
    return strstr(s, "=?") == NULL;
}

/* RFC 2047 encoded words of s, separated by folding ("\r\n "). Each word
 * holds at most 45 bytes of s (60 of base64: 72 with the frame), cut
 * between UTF-8 characters. */
static void encoded_words(keel_buf *out, const char *s)
{
    size_t n = strlen(s), i = 0;
    int first = 1;
    while (i < n || first) {
        size_t take = n - i > 45 ? 45 : n - i;
        while (take > 0 && i + take < n && ((unsigned char)s[i + take] & 0xc0) == 0x80)
            take--; /* never cut a character */
        if (!first)
            keel_buf_append_str(out, "\r\n ");
        keel_buf_append_str(out, "=?UTF-8?B?");
        b64(out, (const unsigned char *)s + i, take);
        keel_buf_append_str(out, "?=");
        i += take;
        first = 0;
    }
}

/* A display name: a quoted string when plain ASCII and short, else
 * encoded words. */
static void phrase(keel_buf *out, const char *s)
{
    if (plain_ascii(s) && strlen(s) <= 200) {
        keel_buf_append(out, "\"", 1);
        for (const char *p = s; *p; p++) {
            if (*p == '"' || *p == '\\')
                keel_buf_append(out, "\\", 1);
            keel_buf_append(out, p, 1);
        }
        keel_buf_append(out, "\"", 1);
    } else {
        encoded_words(out, s);
    }
}

static void mailbox(keel_buf *out, const char *field, const char *name, const char *addr)
{
    keel_buf_append_str(out, field);
    keel_buf_append_str(out, ": ");
    if (name && *name) {
        phrase(out, name);
        keel_buf_printf(out, " <%s>\r\n", addr);
    } else {
        keel_buf_printf(out, "%s\r\n", addr);
    }
}

/* Quoted-printable (RFC 2045 6.7) of a body: line breaks of any kind
 * become CRLF, encoded lines are at most 76 bytes (soft breaks "="). */
static void qp(keel_buf *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t col = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned c = *p;
        if (c == '\r' || c == '\n') {
            if (c == '\r' && p[1] == '\n')
                p++;
            keel_buf_append(out, "\r\n", 2);
            col = 0;
            continue;
        }
        int at_eol = p[1] == '\0' || p[1] == '\r' || p[1] == '\n';
        char enc[3];
        size_t w;
        if ((c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !at_eol)) {
            enc[0] = (char)c;
            w = 1;
        } else {
            enc[0] = '=';
            enc[1] = hex[c >> 4];
            enc[2] = hex[c & 15];
            w = 3;
        }
        /* keep room for a soft break "=" unless this ends the line */
        if (col + w > (at_eol ? 76u : 75u)) {
            keel_buf_append(out, "=\r\n", 3);
            col = 0;
        }
        keel_buf_append(out, enc, w);
        col += w;
    }
    if (col > 0)
        keel_buf_append(out, "\r\n", 2);
}

static void rfc5322_date(keel_buf *out, int64_t t)
{
    static const char *const wd[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const mo[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    keel_buf_printf(out, "%s, %02d %s %04d %02d:%02d:%02d +0000", wd[tm.tm_wday], tm.tm_mday,
                    mo[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static void hex_random(char *out, size_t nbytes)
{
    unsigned char b[32];
    keel_library_init();
    randombytes_buf(b, nbytes);
    sodium_bin2hex(out, nbytes * 2 + 1, b, nbytes);
}

/* ---------------------------------------------------------------- ids */

int keel_mail_message_id(const char *notification_id, const char *recipient,
                         const char *domain, char *out, size_t cap)
{
    if (!notification_id || !recipient || !domain || !*domain ||
        has_line_break(notification_id) || has_line_break(recipient) || domain[0] == '.' ||
        strlen(domain) > 100)
        return KEEL_EINVAL;
    for (const char *p = domain; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || strchr("<>@\"\\", *p))
            return KEEL_EINVAL;
    keel_library_init();
    unsigned char h[16];
    crypto_generichash_state st;
    crypto_generichash_init(&st, (const unsigned char *)"keel-mid", 8, sizeof(h));
    crypto_generichash_update(&st, (const unsigned char *)notification_id,
                              strlen(notification_id) + 1); /* with the NUL: a separator */
    crypto_generichash_update(&st, (const unsigned char *)recipient, strlen(recipient));
    crypto_generichash_final(&st, h, sizeof(h));
    char hex[33];
    sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
    int n = snprintf(out, cap, "<%s@%s>", hex, domain);
    return n < 0 || (size_t)n >= cap ? KEEL_EINVAL : 0;
}

int keel_mail_parse_mailbox(const char *s, char *name, size_t name_cap, char *addr,
                            size_t addr_cap)
{
    if (!s || has_line_break(s) || name_cap == 0 || addr_cap == 0)
        return KEEL_EINVAL;
    const char *lt = strrchr(s, '<');
    const char *a = s, *ae = s + strlen(s), *nb = s, *ne = s;
    if (lt) {
        const char *gt = strchr(lt, '>');
        if (!gt || gt[1] != '\0')
            return KEEL_EINVAL;
        a = lt + 1;
        ae = gt;
        ne = lt;
    }
    while (a < ae && *a == ' ')
        a++;
    while (ae > a && ae[-1] == ' ')
        ae--;
    while (nb < ne && *nb == ' ')
        nb++;
    while (ne > nb && ne[-1] == ' ')
        ne--;
    if (ne - nb >= 2 && *nb == '"' && ne[-1] == '"') {
        nb++;
        ne--;
    }
    if ((size_t)(ae - a) >= addr_cap || (size_t)(ne - nb) >= name_cap)
        return KEEL_EINVAL;
    memcpy(addr, a, (size_t)(ae - a));
    addr[ae - a] = '\0';
    memcpy(name, nb, (size_t)(ne - nb));
    name[ne - nb] = '\0';
    return keel_mail_address_ok(addr) && !bad_utf8(name, 0) ? 0 : KEEL_EINVAL;
}

/* ---------------------------------------------------------------- build */

int keel_mail_build(const keel_mail_msg *m, keel_buf *out, char *err, size_t errlen)
{
    char dummy[8];
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = '\0';
    int rc;
    if (!m)
        return FAIL("no message");
    if ((rc = check_address("from", m->from, err, errlen)) < 0 ||
        (rc = check_address("to", m->to, err, errlen)) < 0)
        return rc;
    if (m->from_name && (rc = check_value("from name", m->from_name, err, errlen)) < 0)
        return rc;
    if (m->to_name && (rc = check_value("to name", m->to_name, err, errlen)) < 0)
        return rc;
    if (!m->subject)
        return FAIL("subject: required");
    if ((rc = check_value("subject", m->subject, err, errlen)) < 0)
        return rc;
    if (!m->text)
        return FAIL("text: the text part is required");
    size_t bad;
    if ((bad = bad_utf8(m->text, 1)))
        return FAIL("text: not valid UTF-8 text at byte %zu", bad - 1);
    if (m->html && (bad = bad_utf8(m->html, 1)))
        return FAIL("html: not valid UTF-8 text at byte %zu", bad - 1);
    char mid[160];
    if (m->message_id) {
        size_t n = strlen(m->message_id);
        if (has_line_break(m->message_id))
            return FAIL("message id: contains a line break (CR or LF): refused");
        if (n < 5 || n >= sizeof(mid) || m->message_id[0] != '<' ||
            m->message_id[n - 1] != '>' || !strchr(m->message_id, '@'))
            return FAIL("message id: expected <id@domain>");
        for (size_t i = 1; i + 1 < n; i++)
            if ((unsigned char)m->message_id[i] <= 0x20 ||
                (unsigned char)m->message_id[i] >= 0x7f || strchr("<>\"\\", m->message_id[i]))
                return FAIL("message id: expected <id@domain> of printable ASCII");
        memcpy(mid, m->message_id, n + 1);
    } else {
        char hex[33];
        hex_random(hex, 16);
        snprintf(mid, sizeof(mid), "<%s@%s>", hex, strchr(m->from, '@') + 1);
    }
    char boundary[80];
    if (m->boundary) {
        size_t n = strlen(m->boundary);
        if (n == 0 || n > 70)
            return FAIL("boundary: 1-70 characters");
        for (size_t i = 0; i < n; i++)
            if (!strchr("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                        "'()+_,-./:=?", m->boundary[i]))
                return FAIL("boundary: a character outside RFC 2046's set");
        memcpy(boundary, m->boundary, n + 1);
    } else {
        char hex[33];
        hex_random(hex, 12);
        snprintf(boundary, sizeof(boundary), "=_keel_%s", hex);
    }

    keel_buf b = {0};
    mailbox(&b, "From", m->from_name, m->from);
    mailbox(&b, "To", m->to_name, m->to);
    keel_buf_append_str(&b, "Subject: ");
    if (plain_ascii(m->subject) && strlen(m->subject) <= 900)
        keel_buf_append_str(&b, m->subject);
    else
        encoded_words(&b, m->subject);
    keel_buf_append_str(&b, "\r\nDate: ");
    rfc5322_date(&b, m->date ? m->date : (int64_t)time(NULL));
    keel_buf_printf(&b, "\r\nMessage-ID: %s\r\nMIME-Version: 1.0\r\n", mid);
    static const char text_head[] = "Content-Type: text/plain; charset=utf-8\r\n"
                                    "Content-Transfer-Encoding: quoted-printable\r\n\r\n";
    static const char html_head[] = "Content-Type: text/html; charset=utf-8\r\n"
                                    "Content-Transfer-Encoding: quoted-printable\r\n\r\n";
    if (m->html) {
        keel_buf_printf(&b, "Content-Type: multipart/alternative; boundary=\"%s\"\r\n\r\n",
                        boundary);
        keel_buf_printf(&b, "--%s\r\n%s", boundary, text_head);
        qp(&b, m->text);
        keel_buf_printf(&b, "--%s\r\n%s", boundary, html_head);
        qp(&b, m->html);
        keel_buf_printf(&b, "--%s--\r\n", boundary);
    } else {
        keel_buf_append_str(&b, text_head);
        qp(&b, m->text);
    }
    keel_buf_append(out, b.data, b.len);
    keel_buf_free(&b);
    return 0;
}
