/* fuzz_mail.c — libFuzzer driver for keel_mail_build and keel_mail_render.
 *
 * The input is split at \x01 bytes into a subject, a display name, a text
 * part, an HTML part and a template body. Checks on every message that
 * builds: CRLF line endings only (no bare CR or LF), every line at most
 * 998 bytes and every body line at most 76, a head of printable ASCII
 * (encoded words, never raw UTF-8 or a control byte), and a refusal for
 * every subject or name that holds a CR or LF (no header injection).
 * The template body is rendered in memory with fixed values, as HTML (an
 * escaped value never brings markup) and as text; one input in 16 also
 * as a whole template from a scratch MAIL_TEMPLATE_DIR, whose rendered
 * subject never holds a line break.
 *
 *   make build/fuzz/fuzz_mail
 *   build/fuzz/fuzz_mail -dict=tests/fuzz/fuzz_mail.dict tests/fuzz/corpus/fuzz_mail
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel/mail.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "fuzz_mail: check failed: %s (line %d)\n", #cond, __LINE__);   \
            abort();                                                                        \
        }                                                                                   \
    } while (0)

static char dir[64];

static void put(const char *name, const char *s)
{
    char p[128];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f)
        abort();
    fputs(s, f);
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    if (!dir[0]) {
        snprintf(dir, sizeof(dir), "/tmp/keel-fuzz-mail-%d", (int)getpid());
        mkdir(dir, 0700);
    }
    char *buf = malloc(size + 1);
    memcpy(buf, data, size);
    buf[size] = '\0';
    char *part[5] = {"", "", "", NULL, ""};
    char *p = buf;
    for (int i = 0; i < 5 && p; i++) {
        part[i] = p;
        p = strchr(p, '\x01');
        if (p)
            *p++ = '\0';
    }
    keel_mail_msg m = {.from = "a@example.com", .to = "b@example.org", .subject = part[0],
                       .to_name = part[1], .text = part[2], .html = part[3],
                       .message_id = "<x@example.com>", .date = 1700000000, .boundary = "=_b"};
    keel_buf out = {0};
    char err[200];
    int rc = keel_mail_build(&m, &out, err, sizeof(err));
    if (strpbrk(part[0], "\r\n") || strpbrk(part[1], "\r\n"))
        CHECK(rc != 0);
    if (rc == 0) {
        size_t col = 0, head_end = 0;
        for (size_t i = 0; i < out.len; i++) {
            char c = out.data[i];
            if (c == '\r') {
                CHECK(i + 1 < out.len && out.data[i + 1] == '\n');
                CHECK(col <= (head_end ? 76 : 998));
                if (!head_end && col == 0)
                    head_end = i;
                col = 0;
                i++;
                continue;
            }
            CHECK(c != '\n');
            if (!head_end)
                CHECK((unsigned char)c >= 0x20 && (unsigned char)c < 0x7f);
            col++;
        }
        CHECK(head_end > 0);
    } else {
        CHECK(out.len == 0 && err[0]);
    }
    keel_buf_free(&out);

    /* the template engine, in memory, as HTML and as text */
    json_t *v = json_pack("{s:s, s:{s:i}, s:s}", "a", "<x>&\"'", "b", "c", 1, "nl", "x\r\ny");
    for (int html = 0; html < 2; html++) {
        keel_buf r = {0};
        if (keel_mail_render_text(part[4], "f", v, html, &r, err, sizeof(err)) == 0) {
            /* an escaped value never brings markup into the HTML part */
            if (html && !strstr(part[4], "{{{") && !strpbrk(part[4], "<>"))
                CHECK(!r.data || !memchr(r.data, '<', r.len));
        } else {
            CHECK(err[0]);
        }
        keel_buf_free(&r);
    }
    /* once in a while, the whole template from files (the subject check) */
    if (size % 16 == 0) {
        put("f.subject.txt", part[4]);
        put("f.txt", part[4]);
        keel_mail_rendered rr;
        if (keel_mail_render(dir, "f", v, &rr, err, sizeof(err)) == 0) {
            CHECK(!strpbrk(rr.subject, "\r\n"));
            keel_mail_rendered_free(&rr);
        } else {
            CHECK(err[0] && rr.subject == NULL);
        }
    }
    json_decref(v);
    free(buf);
    return 0;
}
