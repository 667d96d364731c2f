/* migrate_file.c — migration files: names, sections, checksums, loading a
 * set (from MIGRATIONS_DIR or the compiled-in table) and `migrate create`.
 *
 * Everything about a file is checked when the set is loaded, before the
 * database is touched: a typo in a marker or an unterminated quote in the
 * tenth migration should not surface after nine were applied.
 */
#include "store/migrate_internal.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return rc;
}

/* The checksum of a migration file: SHA-256 (libsodium) of its bytes as
 * 64 lowercase hex digits — the digest and the spelling recorded in
 * schema_migrations since the first release. */
void keel__sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char digest[crypto_hash_sha256_BYTES];
    if (sodium_init() < 0) /* idempotent; fails only without a random source */
        abort();
    crypto_hash_sha256(digest, p, n);
    sodium_bin2hex(out, 65, digest, sizeof(digest));
}

static int name_char(unsigned char c)
{
    return isalnum(c) || c == '_' || c == '-';
}

int keel__mig_parse_filename(const char *base, int64_t *version, char **name)
{
    size_t len = strlen(base), i = 0;
    int64_t v = 0;
    if (len < 7 || strcmp(base + len - 4, ".sql") != 0)
        return KEEL_EMIGRATE_FORMAT;
    for (; isdigit((unsigned char)base[i]); i++) {
        if (i >= 18) /* keeps v within int64 */
            return KEEL_EMIGRATE_FORMAT;
        v = v * 10 + (base[i] - '0');
    }
    if (i == 0 || base[i] != '_' || i + 1 >= len - 4)
        return KEEL_EMIGRATE_FORMAT;
    for (size_t k = i + 1; k < len - 4; k++)
        if (!name_char((unsigned char)base[k]))
            return KEEL_EMIGRATE_FORMAT;
    *version = v;
    *name = keel_strndup(base + i + 1, len - 4 - i - 1);
    return 0;
}

/* ---------------------------------------------------------------- sections */

typedef struct check_ctx {
    size_t n;
    unsigned line; /* of a forbidden statement */
    const char *word;
} check_ctx;

/* Transaction control would end the transaction keel wraps each migration
 * in, and its schema_migrations row would no longer go with it. */
static int check_stmt(const char *sql, size_t len, unsigned line, void *arg)
{
    static const char *const forbidden[] = {"BEGIN", "COMMIT", "ROLLBACK",  "END",
                                            "START", "ABORT",  "SAVEPOINT", "RELEASE"};
    check_ctx *cx = arg;
    size_t w = 0;
    while (w < len && isalpha((unsigned char)sql[w]))
        w++;
    for (size_t k = 0; k < sizeof(forbidden) / sizeof(forbidden[0]); k++) {
        if (strlen(forbidden[k]) == w && strncasecmp(sql, forbidden[k], w) == 0) {
            cx->line = line;
            cx->word = forbidden[k];
            return 1;
        }
    }
    cx->n++;
    return 0;
}

static int check_section(keel__mig_file *f, size_t off, size_t len, unsigned first_line, int pg,
                         size_t *count, char *err, size_t errlen)
{
    check_ctx cx = {0};
    unsigned bad = 0;
    int rc = keel__sql_split(f->text + off, len, pg, check_stmt, &cx, &bad);
    if (rc == KEEL_EMIGRATE_FORMAT)
        return fail(err, errlen, rc, "%s: line %u: unterminated quote, comment or block", f->label,
                    first_line + bad - 1);
    if (rc != 0)
        return fail(err, errlen, KEEL_EMIGRATE_FORMAT,
                    "%s: line %u: %s: migrations must not control transactions "
                    "(each one already runs in its own)",
                    f->label, first_line + cx.line - 1, cx.word);
    *count = cx.n;
    return 0;
}

/* A marker line: "--", optional blanks, "migrate:" word. 1 up, 2 down,
 * -1 unknown word, 0 not a marker. */
static int marker(const char *p, size_t n)
{
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r'))
        n--;
    if (n < 2 || p[0] != '-' || p[1] != '-')
        return 0;
    size_t i = 2;
    while (i < n && (p[i] == ' ' || p[i] == '\t'))
        i++;
    if (n - i < 8 || strncmp(p + i, "migrate:", 8) != 0)
        return 0;
    i += 8;
    if (n - i == 2 && !strncmp(p + i, "up", 2))
        return 1;
    if (n - i == 4 && !strncmp(p + i, "down", 4))
        return 2;
    return -1;
}

static int blank_or_comment(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && isspace((unsigned char)p[i]))
        i++;
    return i == n || (n - i >= 2 && p[i] == '-' && p[i + 1] == '-');
}

int keel__mig_parse(keel__mig_file *f, int pg, char *err, size_t errlen)
{
    int up = 0, down = 0;
    unsigned line = 1;
    for (size_t pos = 0; pos < f->len; line++) {
        const char *nl = memchr(f->text + pos, '\n', f->len - pos);
        size_t end = nl ? (size_t)(nl - f->text) : f->len;
        size_t next = nl ? end + 1 : f->len;
        int m = marker(f->text + pos, end - pos);
        if (m < 0)
            return fail(err, errlen, KEEL_EMIGRATE_FORMAT,
                        "%s: line %u: unknown marker (expected -- migrate:up or -- migrate:down)",
                        f->label, line);
        if (m == 1) {
            if (up || down)
                return fail(err, errlen, KEEL_EMIGRATE_FORMAT,
                            "%s: line %u: a second -- migrate:up", f->label, line);
            up = 1;
            f->up_off = next;
            f->up_line = line + 1;
        } else if (m == 2) {
            if (!up || down)
                return fail(err, errlen, KEEL_EMIGRATE_FORMAT, "%s: line %u: %s", f->label, line,
                            down ? "a second -- migrate:down"
                                 : "-- migrate:down before -- migrate:up");
            down = 1;
            f->up_len = pos - f->up_off;
            f->down_off = next;
            f->down_line = line + 1;
        } else if (!up && !blank_or_comment(f->text + pos, end - pos)) {
            return fail(err, errlen, KEEL_EMIGRATE_FORMAT,
                        "%s: line %u: SQL before the -- migrate:up line", f->label, line);
        }
        pos = next;
    }
    if (!up || !down)
        return fail(err, errlen, KEEL_EMIGRATE_FORMAT, "%s: no -- migrate:%s line", f->label,
                    up ? "down" : "up");
    f->down_len = f->len - f->down_off;
    int rc = check_section(f, f->up_off, f->up_len, f->up_line, pg, &f->nup, err, errlen);
    if (rc == 0)
        rc = check_section(f, f->down_off, f->down_len, f->down_line, pg, &f->ndown, err, errlen);
    return rc;
}

/* ---------------------------------------------------------------- loading */

void keel__mig_files_free(keel__mig_file *files, size_t n)
{
    for (size_t i = 0; files && i < n; i++) {
        keel_free(files[i].name);
        keel_free(files[i].label);
        keel_free(files[i].text);
    }
    keel_free(files);
}

static int by_version(const void *a, const void *b)
{
    const keel__mig_file *x = a, *y = b;
    return x->version < y->version ? -1 : x->version > y->version;
}

static int read_file(const char *path, char **out, size_t *len)
{
    int rc = 0;
    char *buf = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return -errno;
    struct stat st;
    if (fstat(fileno(fp), &st) < 0) {
        rc = -errno;
        goto cleanup;
    }
    if (st.st_size > (64 << 20)) {
        rc = KEEL_ETOOBIG;
        goto cleanup;
    }
    buf = keel_malloc((size_t)st.st_size + 1);
    size_t n = fread(buf, 1, (size_t)st.st_size, fp);
    if (ferror(fp)) {
        rc = KEEL_EIO;
        goto cleanup;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    buf = NULL;
cleanup:
    keel_free(buf);
    fclose(fp);
    return rc;
}

static int load_dir(const char *dir, const char *driver, keel__mig_file **out, size_t *n, char *err,
                    size_t errlen)
{
    int rc = 0;
    size_t cap = 0;
    char sub[4096], path[4096 + 256];
    snprintf(sub, sizeof(sub), "%s/%s", dir, driver);
    DIR *d = opendir(sub);
    if (!d)
        return fail(err, errlen, -errno, "MIGRATIONS_DIR: cannot read %s: %s", sub,
                    strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t bl = strlen(e->d_name);
        if (e->d_name[0] == '.' || bl < 4 || strcmp(e->d_name + bl - 4, ".sql") != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", sub, e->d_name);
        keel__mig_file f = {0};
        if (keel__mig_parse_filename(e->d_name, &f.version, &f.name) < 0) {
            rc = fail(err, errlen, KEEL_EMIGRATE_FORMAT,
                      "%s: not a migration file name (expected NNNN_name.sql)", path);
            goto cleanup;
        }
        int r = read_file(path, &f.text, &f.len);
        if (r < 0) {
            keel_free(f.name);
            rc = fail(err, errlen, r, "%s: %s", path, keel_strerror(r));
            goto cleanup;
        }
        f.label = keel_strdup(path);
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            *out = keel_realloc(*out, cap * sizeof(**out));
        }
        (*out)[(*n)++] = f;
        if (strlen(f.text) != f.len) {
            rc = fail(err, errlen, KEEL_EMIGRATE_FORMAT, "%s: contains a NUL byte", path);
            goto cleanup;
        }
    }
cleanup:
    closedir(d);
    return rc;
}

static int load_embedded(const keel_migration *emb, size_t nemb, const char *driver,
                         keel__mig_file **out, size_t *n)
{
    size_t k = 0;
    *out = keel_calloc(nemb ? nemb : 1, sizeof(**out));
    for (size_t i = 0; i < nemb; i++) {
        if (!emb[i].driver || strcmp(emb[i].driver, driver) != 0 || !emb[i].text)
            continue;
        keel__mig_file *f = &(*out)[k++];
        char label[512];
        snprintf(label, sizeof(label), "%s/%04" PRId64 "_%s.sql (embedded)", driver, emb[i].version,
                 emb[i].name ? emb[i].name : "");
        f->version = emb[i].version;
        f->name = keel_strdup(emb[i].name ? emb[i].name : "");
        f->label = keel_strdup(label);
        f->len = strlen(emb[i].text);
        f->text = keel_strndup(emb[i].text, f->len);
    }
    *n = k;
    return 0;
}

int keel__mig_load(const char *dir, const keel_migration *embedded, size_t nembedded,
                   const char *driver, keel__mig_file **out, size_t *n, char *err, size_t errlen)
{
    int rc;
    int pg = strcmp(driver, "postgres") == 0;
    *out = NULL;
    *n = 0;
    if (dir && *dir)
        rc = load_dir(dir, driver, out, n, err, errlen);
    else
        rc = load_embedded(embedded, nembedded, driver, out, n);
    if (rc < 0)
        goto cleanup;
    qsort(*out, *n, sizeof(**out), by_version);
    for (size_t i = 0; i < *n; i++) {
        keel__mig_file *f = &(*out)[i];
        if (i > 0 && f->version == (*out)[i - 1].version) {
            rc = fail(err, errlen, KEEL_EMIGRATE_FORMAT, "%s and %s: the same version %" PRId64,
                      (*out)[i - 1].label, f->label, f->version);
            goto cleanup;
        }
        keel__sha256_hex(f->text, f->len, f->checksum);
        if ((rc = keel__mig_parse(f, pg, err, errlen)) < 0)
            goto cleanup;
    }
    return 0;
cleanup:
    keel__mig_files_free(*out, *n);
    *out = NULL;
    *n = 0;
    return rc;
}

/* ---------------------------------------------------------------- create */

static int mkdir_p(const char *path)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof(buf))
        return KEEL_EINVAL;
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return -errno;
        buf[i] = c;
    }
    return 0;
}

static int64_t highest_version(const char *sub)
{
    int64_t max = 0;
    DIR *d = opendir(sub);
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int64_t v;
        char *name;
        if (keel__mig_parse_filename(e->d_name, &v, &name) == 0) {
            keel_free(name);
            if (v > max)
                max = v;
        }
    }
    closedir(d);
    return max;
}

int keel_migrate_create(const char *dir, const char *name, int64_t *version, char *err,
                        size_t errlen)
{
    static const char *const drivers[] = {"sqlite", "postgres"};
    static const char template_text[] = "-- migrate:up\n\n\n-- migrate:down\n\n";
    char sub[2][4096], path[2][4096 + 300];
    int created = 0, rc = 0;
    size_t nl = name ? strlen(name) : 0;
    if (nl == 0 || nl > 200)
        return fail(err, errlen, KEEL_EINVAL, "migration name must be 1 to 200 characters");
    for (size_t i = 0; i < nl; i++)
        if (!name_char((unsigned char)name[i]))
            return fail(err, errlen, KEEL_EINVAL,
                        "migration name \"%s\": use letters, digits, '_' and '-'", name);
    int64_t next = 0;
    for (int k = 0; k < 2; k++) {
        snprintf(sub[k], sizeof(sub[k]), "%s/%s", dir, drivers[k]);
        if ((rc = mkdir_p(sub[k])) < 0)
            return fail(err, errlen, rc, "cannot create %s: %s", sub[k], keel_strerror(rc));
        int64_t v = highest_version(sub[k]);
        if (v > next)
            next = v;
    }
    next++;
    for (created = 0; created < 2; created++) {
        snprintf(path[created], sizeof(path[created]), "%s/%04" PRId64 "_%s.sql", sub[created],
                 next, name);
        int fd = open(path[created], O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0) {
            rc = fail(err, errlen, -errno, "cannot create %s: %s", path[created], strerror(errno));
            goto cleanup;
        }
        ssize_t w = write(fd, template_text, sizeof(template_text) - 1);
        int werr = errno;
        close(fd);
        if (w != (ssize_t)sizeof(template_text) - 1) {
            unlink(path[created]);
            rc = fail(err, errlen, w < 0 ? -werr : KEEL_EIO, "cannot write %s", path[created]);
            goto cleanup;
        }
    }
    if (version)
        *version = next;
    return 0;
cleanup:
    /* both files or neither: a lone sqlite file would be applied without
     * its postgres twin */
    while (created-- > 0)
        unlink(path[created]);
    return rc;
}
