/* keel/range.h — Range requests and conditional requests (RFC 9110
 * sections 13 and 14): the Range header parser, entity-tag comparison,
 * HTTP-date parsing and the precondition evaluation order.
 *
 * Nothing here allocates or reads anything but its arguments; each
 * function is a pure function of its input, fuzzed (tests/fuzz/fuzz_range.c).
 *
 * Range policy (RFC 9110 section 14.2 lets a server ignore or reject):
 *   - a Range header that is not `bytes=` or not syntactically valid is
 *     ignored: the full representation is served (200);
 *   - no satisfiable range: 416 with `Content-Range: bytes * /len` (the
 *     caller writes it; keel_range_parse answers KEEL_RANGE_UNSATISFIABLE);
 *   - more ranges than the caller's cap, or ranges that overlap each other
 *     once resolved: rejected with 416 (KEEL_RANGE_REFUSED), an explicit
 *     refusal of what RFC 9110 calls a sign of a broken client or a
 *     denial-of-service attempt, rather than a silent full download.
 */
#ifndef KEEL_RANGE_H
#define KEEL_RANGE_H

#include <time.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One resolved byte range, both ends inclusive, first <= last < size. */
typedef struct keel_byte_range {
    uint64_t first;
    uint64_t last;
} keel_byte_range;

enum {
    KEEL_RANGE_IGNORE = 0,         /* serve the whole representation */
    KEEL_RANGE_UNSATISFIABLE = -1, /* 416: no range overlaps the content */
    KEEL_RANGE_REFUSED = -2        /* 416: too many, or overlapping */
};

/* Parses the value of a Range header for a representation of `size`
 * bytes. Returns the number n > 0 of satisfiable ranges written to
 * out[0..n) in the order sent (unsatisfiable ones dropped), or one of the
 * KEEL_RANGE_* codes above. More than `cap` range specs is
 * KEEL_RANGE_REFUSED. */
int keel_range_parse(keel_str value, uint64_t size, keel_byte_range *out, size_t cap);

/* Entity-tag comparison against a list header value (If-Match,
 * If-None-Match: `*` or 1#entity-tag). `etag` is ours, quoted, e.g.
 * "\"abc\"" (strong) or "W/\"abc\"". strong != 0: strong comparison
 * (both strong, same opaque tag); else weak comparison (opaque tags
 * equal). Returns 1 on a match, 0 otherwise (a malformed list: 0). */
int keel_etag_list_match(keel_str list, const char *etag, int strong);

/* An IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), the obsolete RFC 850
 * and asctime forms: 0 with *out (Unix seconds), or -1. */
int keel_http_date_parse(keel_str s, time_t *out);

/* Formats t as an IMF-fixdate into out (at least 30 bytes). */
void keel_http_date_format(time_t t, char out[30]);

/* The outcome of the preconditions of RFC 9110 section 13.2.2 for a GET
 * or HEAD of a representation with this strong `etag` and `mtime`. The
 * header values are NULL views when absent. Returns 412 (If-Match or
 * If-Unmodified-Since failed), 304 (If-None-Match or If-Modified-Since:
 * not modified), or 0 (serve it; then check If-Range with
 * keel_if_range_ok). */
int keel_http_preconditions(keel_str if_match, keel_str if_none_match,
                            keel_str if_modified_since, keel_str if_unmodified_since,
                            const char *etag, time_t mtime);

/* If-Range (RFC 9110 section 13.1.5): 1 when the Range may be honoured —
 * the header is absent, or holds a strong entity-tag equal to `etag`, or
 * an HTTP-date exactly equal to mtime; 0 (serve the full 200) for a weak
 * tag, another tag, another date or anything malformed. */
int keel_if_range_ok(keel_str if_range, const char *etag, time_t mtime);

#ifdef __cplusplus
}
#endif
#endif
