/* files_store.c — the `uploads` options, the local-directory storage,
 * content sniffing by magic bytes, image dimensions from headers, and safe
 * file names (src/app/files.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/files.h"

/* ---------------------------------------------------------------- options */

#define AT(f) KEEL_CONFIG_AT(app_upload_options, f)
static const keel_config_var upload_vars[] = {
    {.name = "UPLOAD_DIR", .type = KEEL_CONFIG_STR, .def = "./data/uploads", AT(dir),
     .help = "where uploaded files are kept (tmp/ for uploads in progress, objects/ by SHA-256)"},
    {.name = "UPLOAD_MAX_BODY", .type = KEEL_CONFIG_SIZE, .def = "100mb", AT(max_body),
     .min = 1, .help = "largest multipart upload body, all parts together (413 above)"},
    {.name = "UPLOAD_MAX_FILE_SIZE", .type = KEEL_CONFIG_SIZE, .def = "50mb", AT(max_file),
     .min = 1, .help = "largest single uploaded file (413 above)"},
    {.name = "UPLOAD_MAX_FILES", .type = KEEL_CONFIG_UINT, .def = "10", AT(max_files), .min = 1,
     .max = 1000, .help = "most file parts in one upload (413 above)"},
    {.name = "UPLOAD_MAX_FIELDS", .type = KEEL_CONFIG_UINT, .def = "20", AT(max_fields),
     .max = 1000, .help = "most non-file fields in one upload (413 above)"},
    {.name = "UPLOAD_MAX_PARTS", .type = KEEL_CONFIG_UINT, .def = "30", AT(max_parts), .min = 1,
     .max = 2000, .help = "most parts (files and fields) in one upload (413 above)"},
    {.name = "UPLOAD_MAX_FIELD_NAME", .type = KEEL_CONFIG_UINT, .def = "100", AT(max_name),
     .min = 1, .max = 4096, .help = "longest part name, bytes (413 above)"},
    {.name = "UPLOAD_MAX_FIELD_VALUE", .type = KEEL_CONFIG_SIZE, .def = "64kb", AT(max_value),
     .max = 1 << 24, .help = "longest non-file field value, bytes (413 above)"},
    {.name = "UPLOAD_MAX_PART_HEADERS", .type = KEEL_CONFIG_UINT, .def = "8",
     AT(max_part_headers), .min = 1, .max = 100,
     .help = "most header fields of one part (413 above)"},
    {.name = "UPLOAD_MAX_PART_HEADER_BYTES", .type = KEEL_CONFIG_SIZE, .def = "8kb",
     AT(max_header_bytes), .min = 256, .max = 1 << 20,
     .help = "largest header block of one part (413 above)"},
    {.name = "UPLOAD_QUOTA_BYTES", .type = KEEL_CONFIG_SIZE, .def = "1gb", AT(quota), .min = 1,
     .help = "bytes each user may store in all (507 above)"},
    {.name = "UPLOAD_ALLOWED_TYPES", .type = KEEL_CONFIG_STR,
     .def = "image/png,image/jpeg,image/gif,image/webp,application/pdf,text/plain,"
            "application/zip,application/gzip,application/octet-stream",
     AT(allowed_types),
     .help = "media types (detected from the bytes, never the client's word) accepted by "
             "POST /api/v1/files; application/octet-stream is what unrecognised bytes are"},
    {.name = "RANGE_MAX_RANGES", .type = KEEL_CONFIG_UINT, .def = "8", AT(range_max), .min = 1,
     .max = 100, .help = "most ranges in one Range request (416 above; overlapping: 416)"},
    {.name = "AVATAR_MAX_BYTES", .type = KEEL_CONFIG_SIZE, .def = "2mb", AT(avatar_max_bytes),
     .min = 1, .help = "largest avatar image (413 above)"},
    {.name = "AVATAR_MAX_DIMENSION", .type = KEEL_CONFIG_UINT, .def = "4096",
     AT(avatar_max_dim), .min = 1, .max = 65535,
     .help = "widest or tallest avatar in pixels, read from the image header (422 above)"},
};
#undef AT

const keel_config_module app_uploads_config = KEEL_CONFIG_MODULE(
    "uploads",
    "File uploads and downloads: multipart limits, storage, quota, Range (src/app/files.c, "
    "docs/uploads.md).",
    app_upload_options, upload_vars, NULL);

const char *app_upload_limit_var(keel_multipart_limit l, int avatar)
{
    switch (l) {
    case KEEL_MP_LIMIT_BODY:
        return avatar ? "AVATAR_MAX_BYTES" : "UPLOAD_MAX_BODY";
    case KEEL_MP_LIMIT_FILE_SIZE:
        return avatar ? "AVATAR_MAX_BYTES" : "UPLOAD_MAX_FILE_SIZE";
    case KEEL_MP_LIMIT_FILES:
        return "UPLOAD_MAX_FILES";
    case KEEL_MP_LIMIT_FIELDS:
        return "UPLOAD_MAX_FIELDS";
    case KEEL_MP_LIMIT_PARTS:
        return "UPLOAD_MAX_PARTS";
    case KEEL_MP_LIMIT_NAME:
        return "UPLOAD_MAX_FIELD_NAME";
    case KEEL_MP_LIMIT_FIELD_VALUE:
        return "UPLOAD_MAX_FIELD_VALUE";
    case KEEL_MP_LIMIT_HEADERS:
        return "UPLOAD_MAX_PART_HEADERS";
    case KEEL_MP_LIMIT_HEADER_BYTES:
        return "UPLOAD_MAX_PART_HEADER_BYTES";
    default:
        return "UPLOAD_MAX_BODY";
    }
}

/* ---------------------------------------------------------------- local storage */

typedef struct local_store {
    char dir[512];
} local_store;

static int mkdirs(const char *path)
{
    char p[600];
    snprintf(p, sizeof(p), "%s", path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(p, 0750) < 0 && errno != EEXIST)
            return -errno;
        *s = '/';
    }
    if (mkdir(p, 0750) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

static int local_tmp_open(void *self, char *path, size_t cap)
{
    local_store *ls = self;
    char id[37];
    app_uuid(id);
    snprintf(path, cap, "%s/tmp/%s.part", ls->dir, id);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    return fd < 0 ? -errno : fd;
}

static void object_path(local_store *ls, const char *key, char *out, size_t cap)
{
    snprintf(out, cap, "%s/objects/%.2s/%s", ls->dir, key, key);
}

static int local_commit(void *self, const char *tmp, const char *key)
{
    local_store *ls = self;
    char dst[700], dir[700];
    snprintf(dir, sizeof(dir), "%s/objects/%.2s", ls->dir, key);
    if (mkdir(dir, 0750) < 0 && errno != EEXIST)
        return -errno;
    object_path(ls, key, dst, sizeof(dst));
    struct stat st;
    if (stat(dst, &st) == 0)
        return 1; /* the same bytes are already stored: tmp is the caller's */
    if (rename(tmp, dst) < 0)
        return -errno;
    /* the rename is durable once the directory is */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

static int local_open(void *self, const char *key, int *fd, uint64_t *size)
{
    char path[700];
    object_path(self, key, path, sizeof(path));
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return -errno;
    struct stat st;
    if (fstat(f, &st) < 0) {
        int e = -errno;
        close(f);
        return e;
    }
    *fd = f;
    *size = (uint64_t)st.st_size;
    return 0;
}

static int local_remove(void *self, const char *key)
{
    char path[700];
    object_path(self, key, path, sizeof(path));
    return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
}

static void local_free(void *self)
{
    keel_free(self);
}

app_storage *app_storage_local_new(const char *dir)
{
    local_store *ls = keel_calloc(1, sizeof(*ls));
    snprintf(ls->dir, sizeof(ls->dir), "%s", dir && *dir ? dir : "./data/uploads");
    char p[600];
    snprintf(p, sizeof(p), "%s/tmp", ls->dir);
    int rc = mkdirs(p);
    if (rc == 0) {
        snprintf(p, sizeof(p), "%s/objects", ls->dir);
        rc = mkdirs(p);
    }
    if (rc < 0) {
        keel_log(KEEL_LOG_ERROR, "UPLOAD_DIR cannot be used", "{s:s,s:s}", "dir", ls->dir,
                 "error", strerror(-rc));
        keel_free(ls);
        return NULL;
    }
    /* uploads in progress when a previous process died */
    snprintf(p, sizeof(p), "%s/tmp", ls->dir);
    DIR *d = opendir(p);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            size_t n = strlen(e->d_name);
            if (n > 5 && strcmp(e->d_name + n - 5, ".part") == 0)
                unlinkat(dirfd(d), e->d_name, 0);
        }
        closedir(d);
    }
    app_storage *s = keel_calloc(1, sizeof(*s));
    *s = (app_storage){"local", ls, local_tmp_open, local_commit, local_open, local_remove,
                       local_free};
    return s;
}

/* ---------------------------------------------------------------- sniffing */

/* Length of the valid UTF-8 sequence at p[0..n), 0 when invalid, -1 when
 * cut off by the end. */
static int utf8_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    int len;
    uint32_t min;
    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0) {
        len = 2;
        min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3;
        min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4;
        min = 0x10000;
    } else {
        return 0;
    }
    if ((size_t)len > n)
        return -1;
    uint32_t cp = c & (0x7f >> len);
    for (int i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

const char *app_sniff_type(const unsigned char *p, size_t n)
{
    if (n >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0)
        return "image/png";
    if (n >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff)
        return "image/jpeg";
    if (n >= 6 && (memcmp(p, "GIF87a", 6) == 0 || memcmp(p, "GIF89a", 6) == 0))
        return "image/gif";
    if (n >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0)
        return "image/webp";
    if (n >= 5 && memcmp(p, "%PDF-", 5) == 0)
        return "application/pdf";
    if (n >= 4 && memcmp(p, "PK\x03\x04", 4) == 0)
        return "application/zip";
    if (n >= 3 && p[0] == 0x1f && p[1] == 0x8b && p[2] == 8)
        return "application/gzip";
    if (n == 0)
        return "application/octet-stream";
    /* text: UTF-8 without control bytes other than TAB, CR, LF, FF */
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        if ((c < 0x20 && c != '\t' && c != '\r' && c != '\n' && c != '\f') || c == 0x7f)
            return "application/octet-stream";
        int l = utf8_len(p + i, n - i);
        if (l == 0)
            return "application/octet-stream";
        if (l < 0)
            break; /* a character cut by the end of the sample */
        i += (size_t)l;
    }
    return "text/plain";
}

static uint32_t be16(const unsigned char *p) { return (uint32_t)p[0] << 8 | p[1]; }
static uint32_t le16(const unsigned char *p) { return (uint32_t)p[1] << 8 | p[0]; }
static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint32_t le24(const unsigned char *p)
{
    return (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

int app_image_size(const char *type, const unsigned char *p, size_t n, uint32_t *w, uint32_t *h)
{
    if (!strcmp(type, "image/png")) {
        /* signature, then the IHDR chunk: length, "IHDR", width, height */
        if (n < 24 || memcmp(p + 12, "IHDR", 4) != 0)
            return -1;
        *w = be32(p + 16);
        *h = be32(p + 20);
        return 0;
    }
    if (!strcmp(type, "image/gif")) {
        if (n < 10)
            return -1;
        *w = le16(p + 6);
        *h = le16(p + 8);
        return 0;
    }
    if (!strcmp(type, "image/webp")) {
        if (n < 30)
            return -1;
        if (memcmp(p + 12, "VP8 ", 4) == 0) {
            /* key frame: 3-byte tag, start code 9d 01 2a, 14-bit sizes */
            if (p[23] != 0x9d || p[24] != 0x01 || p[25] != 0x2a)
                return -1;
            *w = le16(p + 26) & 0x3fff;
            *h = le16(p + 28) & 0x3fff;
            return 0;
        }
        if (memcmp(p + 12, "VP8L", 4) == 0) {
            if (p[20] != 0x2f)
                return -1;
            uint32_t b = (uint32_t)p[21] | (uint32_t)p[22] << 8 | (uint32_t)p[23] << 16 |
                         (uint32_t)p[24] << 24;
            *w = (b & 0x3fff) + 1;
            *h = ((b >> 14) & 0x3fff) + 1;
            return 0;
        }
        if (memcmp(p + 12, "VP8X", 4) == 0) {
            *w = le24(p + 24) + 1;
            *h = le24(p + 27) + 1;
            return 0;
        }
        return -1;
    }
    if (!strcmp(type, "image/jpeg")) {
        /* walk the markers to the first SOFn (C0-CF but C4, C8, CC) */
        size_t i = 2;
        while (i + 4 <= n) {
            if (p[i] != 0xff)
                return -1;
            unsigned char m = p[i + 1];
            if (m == 0xff) {
                i++; /* fill byte */
                continue;
            }
            if (m == 0xd8 || (m >= 0xd0 && m <= 0xd7) || m == 0x01) {
                i += 2;
                continue;
            }
            uint32_t len = be16(p + i + 2);
            if (len < 2)
                return -1;
            if (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc) {
                if (i + 9 > n)
                    return -1;
                *h = be16(p + i + 5);
                *w = be16(p + i + 7);
                return 0;
            }
            if (m == 0xd9 || m == 0xda)
                return -1; /* image data before any frame header */
            i += 2 + len;
        }
        return -1;
    }
    return -1;
}

int app_type_allowed(const char *list, const char *type)
{
    size_t tl = strlen(type);
    const char *s = list;
    while (s && *s) {
        while (*s == ' ' || *s == ',')
            s++;
        const char *e = s;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > s && t[-1] == ' ')
            t--;
        if ((size_t)(t - s) == tl && strncasecmp(s, type, tl) == 0)
            return 1;
        s = e;
    }
    return 0;
}

/* ---------------------------------------------------------------- names */

void app_safe_filename(const char *in, size_t n, char *out, size_t cap)
{
    /* the last path component: after the last '/' or '\' */
    size_t start = 0;
    for (size_t i = 0; i < n; i++)
        if (in[i] == '/' || in[i] == '\\')
            start = i + 1;
    const unsigned char *p = (const unsigned char *)in + start;
    size_t len = n - start, k = 0;
    for (size_t i = 0; i < len && k + 1 < cap;) {
        unsigned char c = p[i];
        if (c < 0x20 || c == 0x7f) {
            i++; /* CR, LF, NUL and every other control byte: dropped */
            continue;
        }
        /* browsers send '"', CR and LF of a name as %22, %0D, %0A */
        if (c == '%' && i + 2 < len + 0 && p[i + 1] == '0' &&
            (p[i + 2] == 'D' || p[i + 2] == 'd' || p[i + 2] == 'A' || p[i + 2] == 'a')) {
            i += 3;
            continue;
        }
        if (c == '%' && i + 2 < len + 0 && p[i + 1] == '2' && p[i + 2] == '2') {
            if (k + 2 > cap)
                break;
            out[k++] = '"';
            i += 3;
            continue;
        }
        if (k == 0 && (c == '.' || c == ' ')) {
            i++; /* no hidden names, no "..", no leading blanks */
            continue;
        }
        int l = utf8_len(p + i, len - i);
        if (l <= 0) {
            out[k++] = '_';
            i++;
            continue;
        }
        if (k + (size_t)l + 1 > cap)
            break; /* whole characters only */
        memcpy(out + k, p + i, (size_t)l);
        k += (size_t)l;
        i += (size_t)l;
    }
    while (k > 0 && (out[k - 1] == ' ' || out[k - 1] == '.'))
        k--;
    out[k] = 0;
    if (k == 0)
        snprintf(out, cap, "file");
}

void app_content_disposition(const char *disposition, const char *name, char *out, size_t cap)
{
    keel_buf b = {0};
    keel_buf_printf(&b, "%s; filename=\"", disposition);
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        keel_buf_append(&b, (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\' && *p != '%')
                                ? (const char *)p
                                : "_",
                        1);
    keel_buf_append_str(&b, "\"; filename*=UTF-8''");
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        /* attr-char (RFC 8187) as is, the rest percent-encoded */
        if ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
            strchr("!#$&+-.^_`|~", *p)) {
            keel_buf_append(&b, (const char *)p, 1);
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            keel_buf_append(&b, e, 3);
        }
    }
    snprintf(out, cap, "%.*s", (int)b.len, b.data);
    keel_buf_free(&b);
}
