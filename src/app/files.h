/* files.h — uploads and downloads of the reference service (src/app only):
 * the `uploads` options, the storage interface and its local-directory
 * implementation, content sniffing, image dimensions and safe file names.
 * See docs/uploads.md. */
#ifndef KEEL_APP_FILES_H
#define KEEL_APP_FILES_H

#include <stdint.h>
#include <time.h>

#include "app/app.h"

/* The `uploads` module's options (src/app/files_store.c). */
typedef struct app_upload_options {
    char *dir;                  /* UPLOAD_DIR */
    uint64_t max_body;          /* UPLOAD_MAX_BODY */
    uint64_t max_file;          /* UPLOAD_MAX_FILE_SIZE */
    uint64_t max_files;         /* UPLOAD_MAX_FILES */
    uint64_t max_fields;        /* UPLOAD_MAX_FIELDS */
    uint64_t max_parts;         /* UPLOAD_MAX_PARTS */
    uint64_t max_name;          /* UPLOAD_MAX_FIELD_NAME */
    uint64_t max_value;         /* UPLOAD_MAX_FIELD_VALUE */
    uint64_t max_part_headers;  /* UPLOAD_MAX_PART_HEADERS */
    uint64_t max_header_bytes;  /* UPLOAD_MAX_PART_HEADER_BYTES */
    uint64_t quota;             /* UPLOAD_QUOTA_BYTES */
    char *allowed_types;        /* UPLOAD_ALLOWED_TYPES */
    uint64_t range_max;         /* RANGE_MAX_RANGES */
    uint64_t avatar_max_bytes;  /* AVATAR_MAX_BYTES */
    uint64_t avatar_max_dim;    /* AVATAR_MAX_DIMENSION */
} app_upload_options;

extern const keel_config_module app_uploads_config;

/* The config variable that a multipart limit is configured by
 * ("UPLOAD_MAX_FILE_SIZE", ...). */
const char *app_upload_limit_var(keel_multipart_limit l, int avatar);

/* Where uploaded bytes live. Objects are named by the SHA-256 (hex) of
 * their content: the same bytes uploaded twice are stored once, and no
 * client-supplied name ever reaches a path. Every function runs on a
 * blocking thread (work pool, database pool) and answers 0 or -errno.
 * docs/uploads.md shows how to add an S3-compatible one. */
typedef struct app_storage {
    const char *name;
    void *self;
    /* A new temporary file for an upload in progress, opened for writing;
     * its path into path[0..cap). Returns the fd or -errno. */
    int (*tmp_open)(void *self, char *path, size_t cap);
    /* Makes the finished (fsynced) temporary file the object `key`:
     * returns 0 and the temporary path is gone; or 1 when the object
     * already exists (the same bytes), and the temporary file is left to
     * the caller, which removes it after answering. */
    int (*commit)(void *self, const char *tmp, const char *key);
    /* Opens object `key` for reading (for sendfile): *fd, *size. */
    int (*open)(void *self, const char *key, int *fd, uint64_t *size);
    /* Removes object `key` (no longer referenced). */
    int (*remove)(void *self, const char *key);
    void (*free)(void *self);
} app_storage;

/* The local-directory storage: dir/tmp/ for uploads in progress,
 * dir/objects/ab/abcdef... for objects. Creates the directories; leftover
 * temporary files of a previous run (a crash) are removed. NULL (logged)
 * when dir cannot be used. */
app_storage *app_storage_local_new(const char *dir);

/* The media type the bytes p[0..n) (the start of a file) are:
 * image/png, image/jpeg, image/gif, image/webp, application/pdf,
 * application/zip, application/gzip, text/plain (UTF-8 text without
 * control bytes), else application/octet-stream. Never what the client
 * said. */
const char *app_sniff_type(const unsigned char *p, size_t n);

/* Width and height from an image's header (PNG IHDR, GIF logical screen,
 * WebP VP8/VP8L/VP8X, JPEG SOFn), without decoding it. 0, or -1 when the
 * header is not there or not readable in p[0..n). */
int app_image_size(const char *type, const unsigned char *p, size_t n, uint32_t *w,
                   uint32_t *h);

/* Whether type is in the comma-separated list. */
int app_type_allowed(const char *list, const char *type);

/* A file name safe to store and show: the last path component only (no
 * '/' or '\\'), no control bytes (CR, LF, NUL, ...), invalid UTF-8
 * replaced by '_', no leading dots, at most cap-1 bytes (whole UTF-8
 * characters); "file" when nothing is left. */
void app_safe_filename(const char *in, size_t n, char *out, size_t cap);

/* Content-Disposition value (RFC 6266): `disposition; filename="ascii";
 * filename*=UTF-8''pct-encoded`. */
void app_content_disposition(const char *disposition, const char *name, char *out,
                             size_t cap);

/* files.c */
int app_files_setup(keel_service *svc);

#endif
