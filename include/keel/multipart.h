/* keel/multipart.h — a streaming multipart/form-data parser (RFC 7578, with
 * the body syntax of RFC 2046 section 5.1).
 *
 * The parser is fed the request body in chunks of any size, as they
 * arrive, and calls back for each part's headers, each run of its data
 * and its end. It never holds a part's data: the only memory it keeps is
 * one part's header block (bounded by max_header_bytes), so a file of any
 * size passes through in constant memory.
 *
 * Every limit is an overall one and is checked before the callback that
 * would pass it: a body over a limit is refused (413, naming the limit),
 * never truncated. A body that is not well-formed multipart/form-data is
 * refused with 400: no closing delimiter, a part header that is not
 * `name: value` CRLF (obs-fold, bare LF, control bytes), a part without a
 * `Content-Disposition: form-data; name=...`, a nested multipart part.
 *
 * Calls answer 0 (go on), 1 (keel_multipart_finish: complete) or minus
 * an HTTP status (-400, -413); m->error then says why (static text) and,
 * for 413, m->limit which limit. A callback that returns non-zero stops
 * the parse: feed returns that value, and every later call returns it too.
 */
#ifndef KEEL_MULTIPART_H
#define KEEL_MULTIPART_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The limits a body is held to; 0 means "none" for each. */
typedef struct keel_multipart_limits {
    uint64_t max_body;         /* bytes fed in all */
    uint64_t max_file_size;    /* data bytes of one file part */
    uint64_t max_files;        /* parts with a filename */
    uint64_t max_fields;       /* parts without a filename */
    uint64_t max_parts;        /* parts in all */
    uint64_t max_name;         /* bytes of a part's name */
    uint64_t max_field_value;  /* data bytes of one field part */
    uint64_t max_headers;      /* header fields of one part */
    uint64_t max_header_bytes; /* header block of one part (required: the
                                * parser's one buffer; 0 means 8 KiB) */
} keel_multipart_limits;

/* Which limit a 413 passed (keel_multipart_limit_name gives its name). */
typedef enum keel_multipart_limit {
    KEEL_MP_LIMIT_NONE = 0,
    KEEL_MP_LIMIT_BODY,
    KEEL_MP_LIMIT_FILE_SIZE,
    KEEL_MP_LIMIT_FILES,
    KEEL_MP_LIMIT_FIELDS,
    KEEL_MP_LIMIT_PARTS,
    KEEL_MP_LIMIT_NAME,
    KEEL_MP_LIMIT_FIELD_VALUE,
    KEEL_MP_LIMIT_HEADERS,
    KEEL_MP_LIMIT_HEADER_BYTES
} keel_multipart_limit;

/* "max_body", "max_file_size", ... ("none" for KEEL_MP_LIMIT_NONE). */
const char *keel_multipart_limit_name(keel_multipart_limit l);

/* One part, as on_part_begin sees it. The views point into the parser's
 * header buffer and are valid only during the callback. */
typedef struct keel_multipart_part {
    keel_str name;         /* the form field name (unquoted) */
    keel_str filename;     /* as sent, unquoted and unsanitised; ptr NULL
                            * when the part has no filename parameter */
    keel_str content_type; /* as sent (never to be trusted); may be empty */
    int is_file;           /* a filename parameter was present */
    uint64_t index;        /* 0, 1, ... */
} keel_multipart_part;

typedef struct keel_multipart_cb {
    int (*on_part_begin)(void *arg, const keel_multipart_part *part);
    int (*on_part_data)(void *arg, const char *data, size_t len);
    int (*on_part_end)(void *arg);
} keel_multipart_cb;

typedef struct keel_multipart {
    /* private */
    char delim[80];          /* "\r\n--" boundary */
    size_t dlen;
    size_t match;            /* delimiter bytes matched so far */
    unsigned state;
    int rc;                  /* sticky result once non-zero */
    keel_multipart_limits lim;
    keel_multipart_cb cb;
    void *arg;
    char *hbuf;              /* one part's header block */
    size_t hlen, hcap;
    uint64_t nheaders;
    uint64_t total, part_bytes;
    uint64_t nparts, nfiles, nfields;
    int cur_is_file;
    /* public, read-only */
    const char *error;           /* why the body was refused */
    keel_multipart_limit limit;  /* for a 413 */
} keel_multipart;

/* The boundary parameter of a Content-Type value. Returns 0 with *out
 * pointing into ctype (quotes removed; a quoted boundary with escapes is
 * refused), -415 when the type is not multipart/form-data, -400 when the
 * boundary is missing or not 1..70 bchars (RFC 2046) not ending in space.
 * *why, when not NULL, gets a static reason. */
int keel_multipart_boundary(keel_str ctype, keel_str *out, const char **why);

/* Prepares m for one body. boundary as keel_multipart_boundary found it
 * (1..70 bytes: else KEEL_EINVAL). Allocates the header buffer. */
int keel_multipart_init(keel_multipart *m, keel_str boundary,
                        const keel_multipart_limits *lim, const keel_multipart_cb *cb,
                        void *arg);

/* Feeds the next len bytes of the body. 0, or minus a status / a
 * callback's non-zero value (sticky). */
int keel_multipart_feed(keel_multipart *m, const char *data, size_t len);

/* The body ended: 1 when the closing delimiter was seen, else -400
 * (unterminated), or the sticky error. */
int keel_multipart_finish(keel_multipart *m);

/* Frees the header buffer; m may be zeroed or NULL. */
void keel_multipart_free(keel_multipart *m);

#ifdef __cplusplus
}
#endif
#endif
