/* mail_template.c — mail templates (see keel/mail.h).
 *
 * A template is up to three files: <name>.subject.txt (one line; a
 * trailing line break in the file is dropped), <name>.txt and, optional,
 * <name>.html. Each file comes from MAIL_TEMPLATE_DIR when that directory
 * has it, else from the set compiled into libkeel (templates/mail/), so
 * an operator overrides one file without copying the others.
 *
 * The syntax is two tags, nothing more: {{ name }} and {{{ name }}}.
 * In the HTML part {{ }} escapes & < > " ' and {{{ }}} writes the value as
 * is; in the subject and text parts both write the value as is (they are
 * not HTML). A name missing from the values is an error, not an empty
 * string: a typo must not send a mail with a hole in it.
 */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "keel/mail.h"
#include "store/mail_internal.h"

#define MAX_TEMPLATE_FILE (256 * 1024)
#define FAIL(...) (snprintf(err, errlen, __VA_ARGS__), KEEL_EINVAL)

void keel_mail_html_escape(keel_buf *out, const char *s, size_t n)
{
    size_t from = 0;
    for (size_t i = 0; i < n; i++) {
        const char *e;
        switch (s[i]) {
        case '&': e = "&amp;"; break;
        case '<': e = "&lt;"; break;
        case '>': e = "&gt;"; break;
        case '"': e = "&quot;"; break;
        case '\'': e = "&#39;"; break;
        default: continue;
        }
        keel_buf_append(out, s + from, i - from);
        keel_buf_append_str(out, e);
        from = i + 1;
    }
    keel_buf_append(out, s + from, n - from);
}

static const char *builtin_names[64];
static char builtin_buf[64][72];
static pthread_once_t builtin_once = PTHREAD_ONCE_INIT;

/* The .subject.txt files name the templates. */
static void builtin_list(void)
{
    size_t n = 0;
    for (size_t i = 0; i < keel__mail_files_count && n < 63; i++) {
        const char *f = keel__mail_files[i].name;
        size_t len = strlen(f);
        if (len > 12 && len - 12 < sizeof(builtin_buf[0]) &&
            !strcmp(f + len - 12, ".subject.txt")) {
            memcpy(builtin_buf[n], f, len - 12);
            builtin_buf[n][len - 12] = '\0';
            builtin_names[n] = builtin_buf[n];
            n++;
        }
    }
    builtin_names[n] = NULL;
}

const char *const *keel_mail_builtin_templates(void)
{
    pthread_once(&builtin_once, builtin_list);
    return builtin_names;
}

static int name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
              name[i] == '_' || name[i] == '-'))
            return 0;
    return 1;
}

/* The file `file` of the template into *out (heap, NUL-terminated): 0,
 * KEEL_ENOTFOUND, or KEEL_EINVAL/KEEL_EIO with err. */
static int load(const char *dir, const char *file, char **out, char *err, size_t errlen)
{
    *out = NULL;
    if (dir && *dir) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, file);
        FILE *f = fopen(path, "rb");
        if (f) {
            keel_buf b = {0};
            char chunk[8192];
            size_t n;
            while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
                if (b.len + n > MAX_TEMPLATE_FILE) {
                    fclose(f);
                    keel_buf_free(&b);
                    return FAIL("%s: larger than %d bytes", path, MAX_TEMPLATE_FILE);
                }
                keel_buf_append(&b, chunk, n);
            }
            int bad = ferror(f);
            fclose(f);
            keel_buf_append(&b, "", 1);
            if (bad || memchr(b.data, '\0', b.len - 1)) {
                keel_buf_free(&b);
                return FAIL("%s: unreadable (or holds a NUL byte)", path);
            }
            *out = b.data;
            return 0;
        }
        if (errno != ENOENT)
            return (snprintf(err, errlen, "%s: %s", path, strerror(errno)), KEEL_EIO);
    }
    for (size_t i = 0; i < keel__mail_files_count; i++)
        if (!strcmp(keel__mail_files[i].name, file)) {
            char *s = keel_malloc(keel__mail_files[i].len + 1);
            memcpy(s, keel__mail_files[i].data, keel__mail_files[i].len);
            s[keel__mail_files[i].len] = '\0';
            *out = s;
            return 0;
        }
    return KEEL_ENOTFOUND;
}

/* The value of a dotted name in vars, as text appended to v. */
static int lookup(const json_t *vars, const char *name, size_t n, keel_buf *v, const char *file,
                  char *err, size_t errlen)
{
    const json_t *cur = vars;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && name[j] != '.')
            j++;
        char key[128];
        if (j - i == 0 || j - i >= sizeof(key))
            return FAIL("%s: bad variable name \"%.*s\"", file, (int)n, name);
        memcpy(key, name + i, j - i);
        key[j - i] = '\0';
        cur = json_is_object(cur) ? json_object_get(cur, key) : NULL;
        if (!cur)
            return FAIL("%s: variable \"%.*s\" is not given", file, (int)n, name);
        i = j + 1;
    }
    switch (json_typeof(cur)) {
    case JSON_STRING: {
        size_t len = json_string_length(cur);
        const char *s = json_string_value(cur);
        if (memchr(s, '\0', len))
            return FAIL("%s: variable \"%.*s\" holds a NUL character", file, (int)n, name);
        keel_buf_append(v, s, len);
        return 0;
    }
    case JSON_INTEGER:
        keel_buf_printf(v, "%" JSON_INTEGER_FORMAT, json_integer_value(cur));
        return 0;
    case JSON_REAL:
        keel_buf_printf(v, "%.15g", json_real_value(cur));
        return 0;
    case JSON_TRUE: keel_buf_append_str(v, "true"); return 0;
    case JSON_FALSE: keel_buf_append_str(v, "false"); return 0;
    case JSON_NULL: return 0;
    default:
        return FAIL("%s: variable \"%.*s\" is an object or array, not a value", file, (int)n,
                    name);
    }
}

static int render(const char *src, const char *file, const json_t *vars, int html,
                  keel_buf *out, char *err, size_t errlen)
{
    const char *p = src;
    for (;;) {
        const char *open = strstr(p, "{{");
        if (!open) {
            keel_buf_append_str(out, p);
            return 0;
        }
        keel_buf_append(out, p, (size_t)(open - p));
        int raw = open[2] == '{';
        const char *a = open + (raw ? 3 : 2);
        const char *close = strstr(a, raw ? "}}}" : "}}");
        if (!close) {
            size_t line = 1;
            for (const char *q = src; q < open; q++)
                line += *q == '\n';
            return FAIL("%s:%zu: a %s tag is not closed", file, line, raw ? "{{{" : "{{");
        }
        const char *b = close;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        for (const char *q = a; q < b; q++)
            if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
                  (*q >= '0' && *q <= '9') || *q == '_' || *q == '.' || *q == '-'))
                return FAIL("%s: bad variable name \"%.*s\"", file,
                            (int)(b - a > 40 ? 40 : b - a), a);
        if (a == b)
            return FAIL("%s: an empty tag", file);
        keel_buf v = {0};
        int rc = lookup(vars, a, (size_t)(b - a), &v, file, err, errlen);
        if (rc == 0) {
            if (html && !raw)
                keel_mail_html_escape(out, v.data ? v.data : "", v.len);
            else
                keel_buf_append(out, v.data ? v.data : "", v.len);
        }
        keel_buf_free(&v);
        if (rc < 0)
            return rc;
        p = close + (raw ? 3 : 2);
    }
}

int keel_mail_render_text(const char *src, const char *file, const json_t *vars, int html,
                          keel_buf *out, char *err, size_t errlen)
{
    char dummy[8];
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = '\0';
    if (!src || (vars && !json_is_object(vars)))
        return FAIL("%s: no template text, or values that are not a JSON object",
                    file ? file : "template");
    json_t *empty = vars ? NULL : json_object();
    int rc = render(src, file ? file : "template", vars ? vars : empty, html, out, err, errlen);
    json_decref(empty);
    return rc;
}

static char *take(keel_buf *b)
{
    keel_buf_append(b, "", 1);
    return b->data;
}

int keel_mail_render(const char *dir, const char *name, const json_t *vars,
                     keel_mail_rendered *out, char *err, size_t errlen)
{
    char dummy[8];
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = '\0';
    memset(out, 0, sizeof(*out));
    if (!name_ok(name))
        return FAIL("template: the name must be 1-64 of a-z 0-9 _ -");
    if (vars && !json_is_object(vars))
        return FAIL("template %s: the values must be a JSON object", name);
    json_t *empty = NULL;
    if (!vars)
        vars = empty = json_object();
    static const char *const ext[3] = {".subject.txt", ".txt", ".html"};
    char *src[3] = {0};
    int rc = 0;
    for (int i = 0; i < 3; i++) {
        char file[96];
        snprintf(file, sizeof(file), "%s%s", name, ext[i]);
        rc = load(dir, file, &src[i], err, errlen);
        if (rc == KEEL_ENOTFOUND && i == 2)
            rc = 0; /* no HTML part */
        else if (rc == KEEL_ENOTFOUND) {
            snprintf(err, errlen, "template %s: no file %s", name, file);
            goto done;
        }
        if (rc < 0)
            goto done;
    }
    /* the subject is one line: drop the file's trailing line breaks */
    size_t sl = strlen(src[0]);
    while (sl && (src[0][sl - 1] == '\n' || src[0][sl - 1] == '\r'))
        src[0][--sl] = '\0';
    keel_buf parts[3] = {{0}, {0}, {0}};
    for (int i = 0; i < 3 && rc == 0; i++) {
        if (!src[i])
            continue;
        char file[96];
        snprintf(file, sizeof(file), "%s%s", name, ext[i]);
        rc = render(src[i], file, vars, i == 2, &parts[i], err, errlen);
    }
    if (rc == 0 && parts[0].data && memchr(parts[0].data, '\n', parts[0].len)) {
        rc = FAIL("%s.subject.txt: the subject holds a line break (a value with CR/LF, or "
                  "a second line): refused", name);
    }
    if (rc == 0 && parts[0].data && memchr(parts[0].data, '\r', parts[0].len)) {
        rc = FAIL("%s.subject.txt: the subject holds a line break (a value with CR/LF): "
                  "refused", name);
    }
    if (rc == 0) {
        out->subject = take(&parts[0]);
        out->text = take(&parts[1]);
        out->html = src[2] ? take(&parts[2]) : NULL;
    } else {
        for (int i = 0; i < 3; i++)
            keel_buf_free(&parts[i]);
    }
done:
    for (int i = 0; i < 3; i++)
        keel_free(src[i]);
    json_decref(empty);
    return rc;
}

void keel_mail_rendered_free(keel_mail_rendered *r)
{
    if (!r)
        return;
    keel_free(r->subject);
    keel_free(r->text);
    keel_free(r->html);
    memset(r, 0, sizeof(*r));
}
