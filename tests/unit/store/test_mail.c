/* test_mail.c — building messages (a golden message with a fixed Date,
 * boundary and Message-ID), header injection refused field by field,
 * quoted-printable and RFC 2047 words decoded back to the input with
 * every line within its limit, stable Message-IDs, MAIL_FROM parsing,
 * templates (escaping, raw tags, missing values, overrides from a
 * directory, a CR/LF value in the subject), and the development outbox.
 * Sending over SMTP is tested against a real server in
 * tests/e2e/test_mail.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "keel/common.h"
#include "keel/mail.h"

static const char golden[] =
    "From: =?UTF-8?B?S8OpZWwgU2VydmljZQ==?= <no-reply@example.com>\r\n"
    "To: \"Ann \\\"A\\\" Lee\" <ann@example.org>\r\n"
    "Subject: =?UTF-8?B?UsOpaW5pdGlhbGlzZXogdm90cmUgbW90IGRlIHBhc3NlIOKAlCDDvG7Dr2M=?=\r\n"
    " =?UTF-8?B?w7Zkw6k=?=\r\n"
    "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    "Message-ID: <abc@example.com>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/alternative; boundary=\"=_b\"\r\n"
    "\r\n"
    "--=_b\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "Hello Ann,\r\n"
    "line with trailing space=20\r\n"
    "na=C3=AFve =3D ok\r\n"
    "--=_b\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "<p>Hello &amp; welcome</p>\r\n"
    "--=_b--\r\n";

static keel_mail_msg base_msg(void)
{
    keel_mail_msg m = {.from = "no-reply@example.com",
                       .from_name = "K\xc3\xa9" "el Service",
                       .to = "ann@example.org",
                       .to_name = "Ann \"A\" Lee",
                       .subject = "R\xc3\xa9initialisez votre mot de passe \xe2\x80\x94 "
                                  "\xc3\xbcn\xc3\xaf" "c\xc3\xb6" "d\xc3\xa9",
                       .text = "Hello Ann,\nline with trailing space \nna\xc3\xafve = ok\n",
                       .html = "<p>Hello &amp; welcome</p>\n",
                       .message_id = "<abc@example.com>",
                       .date = 1700000000,
                       .boundary = "=_b"};
    return m;
}

static void test_golden(void **state)
{
    (void)state;
    keel_mail_msg m = base_msg();
    keel_buf b = {0};
    char err[200];
    assert_int_equal(keel_mail_build(&m, &b, err, sizeof(err)), 0);
    keel_buf_append(&b, "", 1);
    assert_string_equal(b.data, golden);
    keel_buf_free(&b);

    /* text only: no multipart */
    m.html = NULL;
    m.to_name = NULL;
    m.from_name = NULL;
    m.subject = "Plain subject";
    assert_int_equal(keel_mail_build(&m, &b, err, sizeof(err)), 0);
    keel_buf_append(&b, "", 1);
    assert_string_equal(b.data, "From: no-reply@example.com\r\n"
                                "To: ann@example.org\r\n"
                                "Subject: Plain subject\r\n"
                                "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
                                "Message-ID: <abc@example.com>\r\n"
                                "MIME-Version: 1.0\r\n"
                                "Content-Type: text/plain; charset=utf-8\r\n"
                                "Content-Transfer-Encoding: quoted-printable\r\n"
                                "\r\n"
                                "Hello Ann,\r\n"
                                "line with trailing space=20\r\n"
                                "na=C3=AFve =3D ok\r\n");
    keel_buf_free(&b);

    /* a random Message-ID and boundary when not given */
    m = base_msg();
    m.message_id = NULL;
    m.boundary = NULL;
    assert_int_equal(keel_mail_build(&m, &b, err, sizeof(err)), 0);
    keel_buf_append(&b, "", 1);
    assert_non_null(strstr(b.data, "@example.com>\r\n"));
    assert_non_null(strstr(b.data, "boundary=\"=_keel_"));
    keel_buf_free(&b);
}

typedef struct icase {
    const char *field; /* which field gets the bad value */
    const char *value;
    const char *needle;
} icase;

static const icase injections[] = {
    {"to", "ann@example.org\r\nBcc: eve@example.net", "to: contains a line break"},
    {"to", "ann@example.org\nBcc: eve@example.net", "to: contains a line break"},
    {"from", "x@example.com\rBcc: eve@example.net", "from: contains a line break"},
    {"to_name", "Ann\r\nBcc: eve@example.net", "to name: contains a line break"},
    {"from_name", "Service\nX-Evil: 1", "from name: contains a line break"},
    {"subject", "Hello\r\nBcc: eve@example.net", "subject: contains a line break"},
    {"subject", "Hello\nthere", "subject: contains a line break"},
    {"subject", "Hello\rthere", "subject: contains a line break"},
    {"message_id", "<a@b>\r\nBcc: eve@example.net", "message id: contains a line break"},
    {"subject", "bad \xff utf-8", "subject: not valid UTF-8"},
    {"subject", "bell \x07", "subject: not valid UTF-8 text (or a control character)"},
    {"to", "Ann <ann@example.org>", "to: not an address"},
    {"to", "ann@@example.org", "to: not an address"},
    {"to", "ann example@example.org", "to: not an address"},
    {"to", "", "to: an address is required"},
    {"to", "\xc3\xa4@example.org", "to: not an address"},
    {"message_id", "no-brackets@example.com", "message id: expected <id@domain>"},
    {"boundary", "has space", "boundary: a character outside"},
};

static void test_injection_refused(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(injections) / sizeof(injections[0]); i++) {
        const icase *k = &injections[i];
        keel_mail_msg m = base_msg();
        if (!strcmp(k->field, "to"))
            m.to = k->value;
        else if (!strcmp(k->field, "from"))
            m.from = k->value;
        else if (!strcmp(k->field, "to_name"))
            m.to_name = k->value;
        else if (!strcmp(k->field, "from_name"))
            m.from_name = k->value;
        else if (!strcmp(k->field, "subject"))
            m.subject = k->value;
        else if (!strcmp(k->field, "message_id"))
            m.message_id = k->value;
        else if (!strcmp(k->field, "boundary"))
            m.boundary = k->value;
        keel_buf b = {0};
        char err[200] = "";
        int rc = keel_mail_build(&m, &b, err, sizeof(err));
        if (rc != KEEL_EINVAL || !strstr(err, k->needle) || b.len != 0)
            fail_msg("case %zu (%s): rc %d, \"%s\", %zu bytes written; want \"%s\"", i, k->field,
                     rc, err, b.len, k->needle);
    }
    /* bodies may hold line breaks (they are encoded), but not bad UTF-8 */
    keel_mail_msg m = base_msg();
    m.text = "ok\r\nBcc: not a header, a body line\n";
    keel_buf b = {0};
    char err[200];
    assert_int_equal(keel_mail_build(&m, &b, err, sizeof(err)), 0);
    keel_buf_free(&b);
    m.html = "\xc0\x80";
    assert_int_equal(keel_mail_build(&m, &b, err, sizeof(err)), KEEL_EINVAL);
    assert_non_null(strstr(err, "html: not valid UTF-8"));
}

/* ---------------------------------------------------------------- decoders (test side) */

static size_t qp_decode(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=' && i + 2 < n && s[i + 1] == '\r' && s[i + 2] == '\n') {
            i += 2;
        } else if (s[i] == '=' && i + 2 < n) {
            out[o++] = (char)(keel_hex_digit((unsigned char)s[i + 1]) * 16 +
                              keel_hex_digit((unsigned char)s[i + 2]));
            i += 2;
        } else if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') {
            out[o++] = '\n';
            i++;
        } else {
            out[o++] = s[i];
        }
    }
    return o;
}

static void check_lines(const char *msg, size_t len, size_t body_max)
{
    const char *body = strstr(msg, "\r\n\r\n");
    assert_non_null(body);
    size_t col = 0;
    for (size_t i = 0; i < len; i++) {
        if (msg[i] == '\r') {
            assert_int_equal(msg[i + 1], '\n'); /* no bare CR */
            assert_true(col <= (msg + i > body ? body_max : 998));
            col = 0;
            i++;
            continue;
        }
        assert_true(msg[i] != '\n'); /* no bare LF */
        col++;
    }
}

static void test_qp_and_words(void **state)
{
    (void)state;
    /* a long body: one 5000-byte line of mixed ASCII and UTF-8, tabs,
     * '=' and trailing spaces */
    keel_buf text = {0};
    for (int i = 0; i < 500; i++)
        keel_buf_append_str(&text, i % 3 ? "ab=c\t \xc3\xa9" : "x ");
    keel_buf_append_str(&text, "   \nshort\n\n.leading dot\n");
    keel_buf_append(&text, "", 1);
    /* a long UTF-8 subject: every cut must fall between characters */
    keel_buf subj = {0};
    for (int i = 0; i < 120; i++)
        keel_buf_append_str(&subj, "\xe2\x82\xac\xc3\xa9z");
    keel_buf_append(&subj, "", 1);
    keel_mail_msg m = base_msg();
    m.text = text.data;
    m.html = NULL;
    m.subject = subj.data;
    keel_buf b = {0};
    char err[200];
    assert_int_equal(keel_mail_build(&m, &b, err, sizeof(err)), 0);
    check_lines(b.data, b.len, 76);
    keel_buf_append(&b, "", 1);

    /* the body decodes back to the text (line breaks as LF) */
    const char *body = strstr(b.data, "\r\n\r\n") + 4;
    char *dec = malloc(b.len);
    size_t dn = qp_decode(body, strlen(body), dec);
    assert_int_equal(dn, text.len - 1);
    assert_memory_equal(dec, text.data, dn);

    /* the subject's words decode back to the subject, each <= 75 bytes */
    const char *s = strstr(b.data, "Subject: ") + 9;
    const char *end = strstr(s, "\r\nDate:");
    keel_buf got = {0};
    while (s < end) {
        const char *w = strstr(s, "=?UTF-8?B?");
        assert_true(w && w < end);
        const char *we = strstr(w + 10, "?=");
        assert_true(we - w + 2 <= 75);
        unsigned char bin[64];
        size_t bl;
        assert_int_equal(sodium_base642bin(bin, sizeof(bin), w + 10, (size_t)(we - w - 10), NULL,
                                           &bl, NULL, sodium_base64_VARIANT_ORIGINAL),
                         0);
        /* each word is whole characters: valid UTF-8 on its own */
        assert_true(bl == 0 || (bin[0] & 0xc0) != 0x80);
        keel_buf_append(&got, bin, bl);
        s = we + 2;
        if (s < end) {
            assert_memory_equal(s, "\r\n ", 3);
            s += 3;
        }
    }
    assert_int_equal(got.len, subj.len - 1);
    assert_memory_equal(got.data, subj.data, got.len);
    free(dec);
    keel_buf_free(&got);
    keel_buf_free(&b);
    keel_buf_free(&text);
    keel_buf_free(&subj);
}

static void test_message_id_and_mailbox(void **state)
{
    (void)state;
    char a[128], b[128], c[128];
    assert_int_equal(keel_mail_message_id("notif-1", "ann@example.org", "example.com", a,
                                          sizeof(a)), 0);
    assert_int_equal(keel_mail_message_id("notif-1", "ann@example.org", "example.com", b,
                                          sizeof(b)), 0);
    assert_string_equal(a, b); /* stable */
    assert_int_equal(strlen(a), 1 + 32 + 1 + 11 + 1);
    assert_int_equal(keel_mail_message_id("notif-1", "bob@example.org", "example.com", c,
                                          sizeof(c)), 0);
    assert_string_not_equal(a, c); /* per recipient */
    assert_int_equal(keel_mail_message_id("notif-2", "ann@example.org", "example.com", c,
                                          sizeof(c)), 0);
    assert_string_not_equal(a, c); /* per notification */
    /* the separator: ("ab","c") is not ("a","bc") */
    assert_int_equal(keel_mail_message_id("ab", "c@x", "example.com", b, sizeof(b)), 0);
    assert_int_equal(keel_mail_message_id("a", "bc@x", "example.com", c, sizeof(c)), 0);
    assert_string_not_equal(b, c);
    assert_int_equal(keel_mail_message_id("n\r\n", "ann@example.org", "example.com", c,
                                          sizeof(c)), KEEL_EINVAL);
    assert_int_equal(keel_mail_message_id("n", "ann@example.org", "exa mple.com", c, sizeof(c)),
                     KEEL_EINVAL);
    assert_int_equal(keel_mail_message_id("n", "ann@example.org", "example.com", c, 10),
                     KEEL_EINVAL);

    char name[64], addr[64];
    assert_int_equal(keel_mail_parse_mailbox("keel <no-reply@localhost>", name, sizeof(name),
                                             addr, sizeof(addr)), 0);
    assert_string_equal(name, "keel");
    assert_string_equal(addr, "no-reply@localhost");
    assert_int_equal(keel_mail_parse_mailbox("\"My App\" <a@b.c>", name, sizeof(name), addr,
                                             sizeof(addr)), 0);
    assert_string_equal(name, "My App");
    assert_int_equal(keel_mail_parse_mailbox("a@b.c", name, sizeof(name), addr, sizeof(addr)),
                     0);
    assert_string_equal(name, "");
    assert_string_equal(addr, "a@b.c");
    assert_int_equal(keel_mail_parse_mailbox("x <a@b.c", name, sizeof(name), addr, sizeof(addr)),
                     KEEL_EINVAL);
    assert_int_equal(keel_mail_parse_mailbox("x <a@b.c>\r\nBcc: e@f", name, sizeof(name), addr,
                                             sizeof(addr)), KEEL_EINVAL);
    assert_int_equal(keel_mail_parse_mailbox("not an address", name, sizeof(name), addr,
                                             sizeof(addr)), KEEL_EINVAL);
}

static void test_html_escape(void **state)
{
    (void)state;
    keel_buf b = {0};
    const char in[] = "<a href=\"x\">Tom & 'Jerry'</a>";
    keel_mail_html_escape(&b, in, sizeof(in) - 1);
    keel_buf_append(&b, "", 1);
    assert_string_equal(b.data,
                        "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;");
    keel_buf_free(&b);

    /* one template text in memory: escaped in HTML, as is in text */
    json_t *v = json_pack("{s:s}", "x", "<i>&");
    char err[200];
    assert_int_equal(keel_mail_render_text("a{{x}}b{{{ x }}}c", "t.html", v, 1, &b, err,
                                           sizeof(err)), 0);
    keel_buf_append(&b, "", 1);
    assert_string_equal(b.data, "a&lt;i&gt;&amp;b<i>&c");
    keel_buf_free(&b);
    assert_int_equal(keel_mail_render_text("a{{x}}b", "t.txt", v, 0, &b, err, sizeof(err)), 0);
    keel_buf_append(&b, "", 1);
    assert_string_equal(b.data, "a<i>&b");
    keel_buf_free(&b);
    assert_int_equal(keel_mail_render_text("{{ y }}", "t.txt", v, 0, &b, err, sizeof(err)),
                     KEEL_EINVAL);
    assert_string_equal(err, "t.txt: variable \"y\" is not given");
    keel_buf_free(&b);
    assert_int_equal(keel_mail_render_text("{{ }}", "t.txt", v, 0, &b, err, sizeof(err)),
                     KEEL_EINVAL);
    assert_int_equal(keel_mail_render_text("{{a b}}", "t.txt", v, 0, &b, err, sizeof(err)),
                     KEEL_EINVAL);
    assert_non_null(strstr(err, "bad variable name"));
    keel_buf_free(&b);
    json_decref(v);
}

/* ---------------------------------------------------------------- templates */

static void test_templates_builtin(void **state)
{
    (void)state;
    const char *const *names = keel_mail_builtin_templates();
    int reset = 0, verify = 0, alert = 0;
    for (size_t i = 0; names[i]; i++) {
        reset |= !strcmp(names[i], "password_reset");
        verify |= !strcmp(names[i], "verify_email");
        alert |= !strcmp(names[i], "alert");
    }
    assert_true(reset && verify && alert);

    json_t *v = json_pack("{s:s, s:s, s:s, s:i}", "name", "<script>alert(1)</script> & Co",
                          "service", "Acme", "link", "https://x.test/reset?t=a&b=c",
                          "expires_minutes", 30);
    keel_mail_rendered r;
    char err[300];
    assert_int_equal(keel_mail_render(NULL, "password_reset", v, &r, err, sizeof(err)), 0);
    assert_string_equal(r.subject, "Reset your Acme password");
    /* text: as is */
    assert_non_null(strstr(r.text, "Hello <script>alert(1)</script> & Co,"));
    assert_non_null(strstr(r.text, "https://x.test/reset?t=a&b=c"));
    assert_non_null(strstr(r.text, "expires in 30 minutes"));
    /* HTML: escaped, the raw markup nowhere */
    assert_non_null(r.html);
    assert_non_null(strstr(r.html, "Hello &lt;script&gt;alert(1)&lt;/script&gt; &amp; Co,"));
    assert_null(strstr(r.html, "<script>"));
    assert_non_null(strstr(r.html, "href=\"https://x.test/reset?t=a&amp;b=c\""));
    keel_mail_rendered_free(&r);

    /* a missing value is an error naming the file and the variable */
    json_object_del(v, "expires_minutes");
    assert_int_equal(keel_mail_render(NULL, "password_reset", v, &r, err, sizeof(err)),
                     KEEL_EINVAL);
    assert_non_null(strstr(err, "password_reset.txt: variable \"expires_minutes\" is not given"));
    assert_null(r.subject);
    /* a value with CR/LF cannot reach the subject */
    json_object_set_new(v, "expires_minutes", json_integer(30));
    json_object_set_new(v, "service", json_string("Acme\r\nBcc: eve@example.net"));
    assert_int_equal(keel_mail_render(NULL, "password_reset", v, &r, err, sizeof(err)),
                     KEEL_EINVAL);
    assert_non_null(strstr(err, "subject holds a line break"));
    /* a NUL inside a value */
    json_object_set_new(v, "service", json_stringn("A\0B", 3));
    assert_int_equal(keel_mail_render(NULL, "password_reset", v, &r, err, sizeof(err)),
                     KEEL_EINVAL);
    assert_non_null(strstr(err, "NUL"));
    /* an object where a value is expected */
    json_object_set_new(v, "service", json_object());
    assert_int_equal(keel_mail_render(NULL, "password_reset", v, &r, err, sizeof(err)),
                     KEEL_EINVAL);
    assert_non_null(strstr(err, "object or array"));
    json_decref(v);

    assert_int_equal(keel_mail_render(NULL, "no_such_template", NULL, &r, err, sizeof(err)),
                     KEEL_ENOTFOUND);
    assert_int_equal(keel_mail_render(NULL, "../etc/passwd", NULL, &r, err, sizeof(err)),
                     KEEL_EINVAL);
    assert_int_equal(keel_mail_render(NULL, "Alert", NULL, &r, err, sizeof(err)), KEEL_EINVAL);
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_templates_override(void **state)
{
    (void)state;
    char dir[] = "/tmp/keel-mail-XXXXXX";
    assert_non_null(mkdtemp(dir));
    /* one file of a built-in template replaced: the others stay built in */
    write_file(dir, "alert.subject.txt", "ALERT {{ title }}!\n\n");
    /* a template of one's own, text only, dotted names, raw and escaped */
    write_file(dir, "welcome.subject.txt", "Welcome {{user.name}}\n");
    write_file(dir, "welcome.txt", "Hi {{user.name}}, n={{n}} r={{r}} b={{b}} z={{z}}.\n");
    write_file(dir, "broken.subject.txt", "x\n");
    write_file(dir, "broken.txt", "line 1\nline 2 {{oops\n");
    write_file(dir, "twolines.subject.txt", "one\ntwo\n");
    write_file(dir, "twolines.txt", "x\n");
    write_file(dir, "tags.subject.txt", "s\n");
    write_file(dir, "tags.txt", "t\n");
    write_file(dir, "tags.html", "<b>{{v}}</b><i>{{{v}}}</i>");

    json_t *v = json_pack("{s:s, s:s, s:s, s:s, s:s}", "title", "disk full", "severity",
                          "critical", "service", "db", "at", "now", "message", "95%");
    json_object_set_new(v, "link", json_string("https://x.test"));
    keel_mail_rendered r;
    char err[300];
    assert_int_equal(keel_mail_render(dir, "alert", v, &r, err, sizeof(err)), 0);
    assert_string_equal(r.subject, "ALERT disk full!");
    assert_non_null(strstr(r.text, "Severity: critical")); /* built-in .txt */
    assert_non_null(r.html);
    keel_mail_rendered_free(&r);
    json_decref(v);

    v = json_pack("{s:{s:s}, s:i, s:f, s:b, s:n}", "user", "name", "Zo\xc3\xab", "n", 42, "r",
                  1.5, "b", 1, "z");
    assert_int_equal(keel_mail_render(dir, "welcome", v, &r, err, sizeof(err)), 0);
    assert_string_equal(r.subject, "Welcome Zo\xc3\xab");
    assert_string_equal(r.text, "Hi Zo\xc3\xab, n=42 r=1.5 b=true z=.\n");
    assert_null(r.html);
    keel_mail_rendered_free(&r);
    json_decref(v);

    assert_int_equal(keel_mail_render(dir, "broken", NULL, &r, err, sizeof(err)), KEEL_EINVAL);
    assert_non_null(strstr(err, "broken.txt:2: a {{ tag is not closed"));
    assert_int_equal(keel_mail_render(dir, "twolines", NULL, &r, err, sizeof(err)), KEEL_EINVAL);
    assert_non_null(strstr(err, "line break"));

    v = json_pack("{s:s}", "v", "<b>&");
    assert_int_equal(keel_mail_render(dir, "tags", v, &r, err, sizeof(err)), 0);
    assert_string_equal(r.html, "<b>&lt;b&gt;&amp;</b><i><b>&</i>");
    keel_mail_rendered_free(&r);
    json_decref(v);
    v = json_array();
    assert_int_equal(keel_mail_render(dir, "tags", v, &r, err, sizeof(err)), KEEL_EINVAL);
    json_decref(v);

    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* ---------------------------------------------------------------- the outbox */

static void test_outbox(void **state)
{
    (void)state;
    keel_mail_options o = {.smtp_url = "", .from = "Keel <no-reply@example.com>",
                           .template_dir = "", .outbox_size = 3, .log_text = 1};
    keel_mailer *m = keel_mailer_new(&o);
    assert_false(keel_mailer_smtp(m));
    json_t *v = json_pack("{s:s, s:s, s:s, s:i}", "name", "Ann <3", "service", "Acme", "link",
                          "https://x.test/r", "expires_minutes", 30);
    keel_mail_send_args a = {.to = "ann@example.org", .template_name = "password_reset",
                             .vars = v, .notification_id = "n-1"};
    keel_mail_result res;
    assert_int_equal(keel_mailer_send(m, &a, &res), KEEL_MAIL_SENT);
    char want[128];
    assert_int_equal(keel_mail_message_id("n-1", "ann@example.org", "example.com", want,
                                          sizeof(want)), 0);
    assert_string_equal(res.message_id, want);

    json_t *box = keel_mailer_outbox_json(m);
    assert_int_equal(json_array_size(box), 1);
    json_t *it = json_array_get(box, 0);
    assert_string_equal(json_string_value(json_object_get(it, "to")), "ann@example.org");
    assert_string_equal(json_string_value(json_object_get(it, "subject")),
                        "Reset your Acme password");
    json_t *h = json_object_get(it, "headers");
    assert_string_equal(json_string_value(json_object_get(h, "From")),
                        "\"Keel\" <no-reply@example.com>");
    assert_string_equal(json_string_value(json_object_get(h, "Message-ID")), want);
    assert_non_null(strstr(json_string_value(json_object_get(it, "html")), "Ann &lt;3"));
    json_decref(box);

    /* bounded: the last 3 */
    for (int i = 0; i < 5; i++) {
        char nid[16];
        snprintf(nid, sizeof(nid), "k-%d", i);
        a.notification_id = nid;
        assert_int_equal(keel_mailer_send(m, &a, &res), KEEL_MAIL_SENT);
    }
    box = keel_mailer_outbox_json(m);
    assert_int_equal(json_array_size(box), 3);
    assert_int_equal(keel_mail_message_id("k-4", "ann@example.org", "example.com", want,
                                          sizeof(want)), 0);
    assert_string_equal(json_string_value(json_object_get(json_array_get(box, 2), "message_id")),
                        want);
    json_decref(box);

    /* refused before anything is sent: invalid, with the reason */
    a.to = "eve@example.net\r\nBcc: x@y";
    assert_int_equal(keel_mailer_send(m, &a, &res), KEEL_MAIL_INVALID);
    assert_non_null(strstr(res.reply, "line break"));
    a.to = "ann@example.org";
    a.template_name = "nope";
    assert_int_equal(keel_mailer_send(m, &a, &res), KEEL_MAIL_INVALID);
    assert_non_null(strstr(res.reply, "no file nope.subject.txt"));
    a.template_name = NULL;
    a.subject = "s";
    a.text = "t";
    a.notification_id = "x\ny";
    assert_int_equal(keel_mailer_send(m, &a, &res), KEEL_MAIL_INVALID);
    box = keel_mailer_outbox_json(m);
    assert_int_equal(json_array_size(box), 3);
    json_decref(box);
    assert_int_equal(keel_mailer_send_raw(m, "a@b.c", "d@e.f", "x", 1, &res), KEEL_MAIL_TRANSIENT);
    json_decref(v);
    keel_mailer_free(m);
    keel_mailer_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_injection_refused),
        cmocka_unit_test(test_qp_and_words),
        cmocka_unit_test(test_message_id_and_mailbox),
        cmocka_unit_test(test_html_escape),
        cmocka_unit_test(test_templates_builtin),
        cmocka_unit_test(test_templates_override),
        cmocka_unit_test(test_outbox),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
