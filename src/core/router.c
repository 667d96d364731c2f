/* router.c — segment trie router (see keel/router.h). */
#include "keel/router.h"

#include <stdlib.h>

typedef struct node node;

struct node {
    char *seg;        /* static segment text (NULL for the root) */
    size_t seg_len;
    node **statics;   /* sorted by (len, bytes) for binary search */
    size_t nstatics;
    node *param;      /* ":name" child */
    char *param_name;
    node *wild;       /* "*name" child (always a leaf) */
    char *wild_name;
    void *data[KEEL_METHOD__COUNT];
    char *pattern[KEEL_METHOD__COUNT];
    unsigned allowed;
};

struct keel_router {
    node root;
};

keel_router *keel_router_new(void)
{
    return keel_calloc(1, sizeof(keel_router));
}

static void node_free(node *n)
{
    for (size_t i = 0; i < n->nstatics; i++) {
        node_free(n->statics[i]);
        keel_free(n->statics[i]);
    }
    keel_free(n->statics);
    if (n->param) {
        node_free(n->param);
        keel_free(n->param);
    }
    if (n->wild) {
        node_free(n->wild);
        keel_free(n->wild);
    }
    keel_free(n->seg);
    keel_free(n->param_name);
    keel_free(n->wild_name);
    for (int m = 0; m < KEEL_METHOD__COUNT; m++)
        keel_free(n->pattern[m]);
}

void keel_router_free(keel_router *r)
{
    if (!r)
        return;
    node_free(&r->root);
    keel_free(r);
}

static int seg_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return alen < blen ? -1 : 1;
    return memcmp(a, b, alen);
}

static node *find_static(const node *n, const char *s, size_t len)
{
    size_t lo = 0, hi = n->nstatics;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        node *c = n->statics[mid];
        int cmp = seg_cmp(c->seg, c->seg_len, s, len);
        if (cmp == 0)
            return c;
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static node *add_static(node *n, const char *s, size_t len)
{
    node *c = find_static(n, s, len);
    if (c)
        return c;
    c = keel_calloc(1, sizeof(*c));
    c->seg = keel_strndup(s, len);
    c->seg_len = len;
    n->statics = keel_realloc(n->statics, (n->nstatics + 1) * sizeof(node *));
    size_t i = n->nstatics;
    while (i > 0 && seg_cmp(n->statics[i - 1]->seg, n->statics[i - 1]->seg_len,
                            s, len) > 0) {
        n->statics[i] = n->statics[i - 1];
        i--;
    }
    n->statics[i] = c;
    n->nstatics++;
    return c;
}

static int valid_name(const char *s, size_t len)
{
    if (len == 0 || len > 64)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

/* Checks the syntax of a whole pattern before the trie is touched, so a
 * refused pattern leaves no nodes (and no parameter names) behind. */
static int valid_pattern(const char *pattern)
{
    const char *p = pattern + 1;
    int params = 0;
    for (;;) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len > 0 && (p[0] == ':' || p[0] == '*')) {
            if (!valid_name(p + 1, len - 1) || ++params > KEEL_MAX_PARAMS ||
                (p[0] == '*' && e))
                return 0;
        }
        if (!e)
            return 1;
        p = e + 1;
    }
}

int keel_router_add(keel_router *r, keel_method m, const char *pattern,
                    void *data)
{
    if (!pattern || pattern[0] != '/' || m <= KEEL_METHOD_OTHER ||
        m >= KEEL_METHOD__COUNT || !valid_pattern(pattern))
        return KEEL_EINVAL;
    node *n = &r->root;
    const char *p = pattern + 1;
    int params = 0;
    for (;;) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len > 0 && p[0] == ':') {
            if (!valid_name(p + 1, len - 1) || ++params > KEEL_MAX_PARAMS)
                return KEEL_EINVAL;
            if (n->param) {
                if (strlen(n->param_name) != len - 1 ||
                    memcmp(n->param_name, p + 1, len - 1) != 0)
                    return KEEL_EINVAL;
            } else {
                n->param = keel_calloc(1, sizeof(node));
                n->param_name = keel_strndup(p + 1, len - 1);
            }
            n = n->param;
        } else if (len > 0 && p[0] == '*') {
            if (e || !valid_name(p + 1, len - 1) || ++params > KEEL_MAX_PARAMS)
                return KEEL_EINVAL;
            if (n->wild) {
                if (strcmp(n->wild_name, p + 1) != 0)
                    return KEEL_EINVAL;
            } else {
                n->wild = keel_calloc(1, sizeof(node));
                n->wild_name = keel_strndup(p + 1, len - 1);
            }
            n = n->wild;
        } else {
            n = add_static(n, p, len);
        }
        if (!e)
            break;
        p = e + 1;
    }
    if (n->data[m])
        return KEEL_EEXISTS;
    n->data[m] = data;
    n->pattern[m] = keel_strdup(pattern);
    n->allowed |= 1u << m;
    return 0;
}

/* ---------------------------------------------------------------- lookup */

struct cap {
    size_t n;
    const char *names[KEEL_MAX_PARAMS];
    keel_str raw[KEEL_MAX_PARAMS];
};

/* Finds the node for path p[0..len) (after a '/'), with backtracking.
 * Returns the node with at least one method, or NULL. */
static const node *walk(const node *n, const char *p, size_t len, struct cap *cap,
                        int depth)
{
    if (depth > 256)
        return NULL;
    const char *e = memchr(p, '/', len);
    size_t seg = e ? (size_t)(e - p) : len;

    const node *c = find_static(n, p, seg);
    if (c) {
        const node *r = e ? walk(c, e + 1, len - seg - 1, cap, depth + 1)
                          : (c->allowed ? c : NULL);
        if (r)
            return r;
    }
    if (n->param && seg > 0 && cap->n < KEEL_MAX_PARAMS) {
        size_t save = cap->n;
        cap->names[cap->n] = n->param_name;
        cap->raw[cap->n] = (keel_str){p, seg};
        cap->n++;
        const node *r = e ? walk(n->param, e + 1, len - seg - 1, cap, depth + 1)
                          : (n->param->allowed ? n->param : NULL);
        if (r)
            return r;
        cap->n = save;
    }
    if (n->wild && n->wild->allowed && cap->n < KEEL_MAX_PARAMS) {
        cap->names[cap->n] = n->wild_name;
        cap->raw[cap->n] = (keel_str){p, len};
        cap->n++;
        return n->wild;
    }
    return NULL;
}


char *keel_url_decode(keel_arena *a, keel_str s, int plus_space, size_t *out_len)
{
    char *d = keel_arena_alloc(a, s.len + 1), *w = d;
    for (size_t i = 0; i < s.len; i++) {
        char c = s.ptr[i];
        if (c == '%') {
            if (i + 2 >= s.len)
                return NULL;
            int hi = keel_hex_digit((unsigned char)s.ptr[i + 1]), lo = keel_hex_digit((unsigned char)s.ptr[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return NULL;
            *w++ = (char)(hi << 4 | lo);
            i += 2;
        } else if (c == '+' && plus_space) {
            *w++ = ' ';
        } else {
            *w++ = c;
        }
    }
    *w = '\0';
    if (out_len)
        *out_len = (size_t)(w - d);
    return d;
}

int keel_router_match(const keel_router *r, keel_method m, keel_str path,
                      keel_arena *arena, keel_route_match *out)
{
    memset(out, 0, offsetof(keel_route_match, names));
    if (path.len == 0 || path.ptr[0] != '/')
        return out->status = 404;
    struct cap cap;
    cap.n = 0;
    const node *n = walk(&r->root, path.ptr + 1, path.len - 1, &cap, 0);
    if (!n)
        return out->status = 404;
    out->allowed = n->allowed;
    if (n->allowed & (1u << KEEL_METHOD_GET))
        out->allowed |= 1u << KEEL_METHOD_HEAD;
    keel_method use = m;
    if (m == KEEL_METHOD_HEAD && !n->data[m])
        use = KEEL_METHOD_GET;
    if ((unsigned)use >= KEEL_METHOD__COUNT || !n->data[use]) {
        out->pattern = n->pattern[__builtin_ctz(n->allowed)];
        return out->status = 405;
    }
    out->data = n->data[use];
    out->pattern = n->pattern[use];
    out->num_params = cap.n;
    for (size_t i = 0; i < cap.n; i++) {
        out->names[i] = keel_str_c(cap.names[i]);
        size_t dl;
        char *v = keel_url_decode(arena, cap.raw[i], 0, &dl);
        if (!v)
            return out->status = 400;
        out->values[i] = (keel_str){v, dl};
    }
    return out->status = 0;
}

/* ---------------------------------------------------------------- walk */

static void walk_all(const node *n,
                     void (*fn)(keel_method, const char *, void *, void *),
                     void *arg)
{
    for (int m = 1; m < KEEL_METHOD__COUNT; m++)
        if (n->data[m])
            fn((keel_method)m, n->pattern[m], n->data[m], arg);
    for (size_t i = 0; i < n->nstatics; i++)
        walk_all(n->statics[i], fn, arg);
    if (n->param)
        walk_all(n->param, fn, arg);
    if (n->wild)
        walk_all(n->wild, fn, arg);
}

void keel_router_walk(const keel_router *r,
                      void (*fn)(keel_method m, const char *pattern,
                                 void *data, void *arg),
                      void *arg)
{
    walk_all(&r->root, fn, arg);
}
