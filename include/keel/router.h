/* keel/router.h — the path router: a segment trie with static segments,
 * `:name` parameters and a trailing `*name` wildcard, per-method values.
 *
 * Lookup walks the request path once, segment by segment: its cost grows
 * with the path's length, not with the number of routes. Static segments
 * win over parameters, parameters over the wildcard (with backtracking).
 * Segments are matched on the raw bytes of the path; parameter values are
 * percent-decoded into the caller's arena.
 */
#ifndef KEEL_ROUTER_H
#define KEEL_ROUTER_H

#include "arena.h"
#include "common.h"
#include "http.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KEEL_MAX_PARAMS 16

typedef struct keel_router keel_router;

typedef struct keel_route_match {
    int status;         /* 0 matched, 404, 405, or 400 (bad escape) */
    void *data;         /* the value added for this method and pattern */
    const char *pattern; /* the pattern as added, e.g. "/users/:id" */
    unsigned allowed;   /* bit (1 << method) for each method the path has */
    size_t num_params;
    keel_str names[KEEL_MAX_PARAMS];
    keel_str values[KEEL_MAX_PARAMS]; /* decoded, NUL-terminated, in arena */
} keel_route_match;

/* An empty router; free with keel_router_free. */
keel_router *keel_router_new(void);
void keel_router_free(keel_router *r);

/* Adds `data` for method m on `pattern` (copied). Returns 0, KEEL_EEXISTS
 * when that method and pattern are already taken, or KEEL_EINVAL for a bad
 * pattern (not starting with '/', empty parameter name, a wildcard that is
 * not last, more than KEEL_MAX_PARAMS parameters, or a parameter named
 * differently from an existing one at the same place). */
int keel_router_add(keel_router *r, keel_method m, const char *pattern,
                    void *data);

/* Looks up `path` (the raw origin-form path, no query) for method m.
 * HEAD falls back to GET. Always fills out->status; returns it too. */
int keel_router_match(const keel_router *r, keel_method m, keel_str path,
                      keel_arena *arena, keel_route_match *out);

/* Percent-decodes s into the arena (NUL-terminated). Returns NULL on a bad
 * escape or an encoded NUL. `plus_space` turns '+' into ' ' (queries). */
char *keel_url_decode(keel_arena *a, keel_str s, int plus_space,
                      size_t *out_len);

/* Calls fn for every (method, pattern, data), in pattern order. */
void keel_router_walk(const keel_router *r,
                      void (*fn)(keel_method m, const char *pattern,
                                 void *data, void *arg),
                      void *arg);

#ifdef __cplusplus
}
#endif
#endif
