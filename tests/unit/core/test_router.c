/* test_router.c — the segment trie router: static segments, :params,
 * trailing *wildcards, precedence with backtracking, 404/405/400, HEAD to
 * GET, pattern validation and a router of 10,000 routes.
 *
 * Lookups are data: match_cases[] lists path -> expected route and
 * captures against one router built from routes[].
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "keel/router.h"

#define BIT(m) (1u << (m))
#define GET KEEL_METHOD_GET
#define HEAD KEEL_METHOD_HEAD
#define POST KEEL_METHOD_POST
#define PUT KEEL_METHOD_PUT
#define DELETE KEEL_METHOD_DELETE
#define PATCH KEEL_METHOD_PATCH
#define OPTIONS KEEL_METHOD_OPTIONS

#include "table_check.h"

/* ---------------------------------------------------------------- table */

typedef struct route {
    keel_method m;
    const char *pattern;
} route;

/* data of routes[i] is &routes[i] */
static const route routes[] = {
    {GET, "/"},
    {GET, "/users"},
    {POST, "/users"},
    {GET, "/users/me"},
    {GET, "/users/:id"},
    {PUT, "/users/:id"},
    {DELETE, "/users/:id"},
    {GET, "/users/:id/posts"},
    {GET, "/users/:id/posts/:post"},
    {GET, "/users/me/settings"},
    {GET, "/users/"}, /* a trailing slash is its own route */
    {GET, "/files/*path"},
    {GET, "/files/readme"},
    {GET, "/files/:name/meta"},
    {HEAD, "/files/:name/meta"},
    {GET, "/a/b/c"},
    {POST, "/only-post"},
    {GET, "/x/:p1/y/:p2/z/*rest"},
    {OPTIONS, "/opts"},
    {PATCH, "/opts"},
    {GET, "/catch/*all"},
    {GET, "/colon:in/static"},
};

#define NROUTES (sizeof(routes) / sizeof(routes[0]))

typedef struct match_case {
    const char *name;
    keel_method m;
    const char *path;
    int status;            /* 0, 400, 404, 405 */
    const char *pattern;   /* expected route (its data), or for 405 the path's */
    unsigned allowed;      /* checked for 0 and 405 */
    const char *const *params; /* name, value, ..., NULL (checked when status 0) */
} match_case;

#define PARAMS(...) .params = (const char *const[]){__VA_ARGS__, NULL}
#define NOPARAMS .params = (const char *const[]){NULL}

static const match_case match_cases[] = {
    /* static */
    {"root", GET, "/", 0, "/", BIT(GET) | BIT(HEAD), NOPARAMS},
    {"static", GET, "/users", 0, "/users", BIT(GET) | BIT(HEAD) | BIT(POST), NOPARAMS},
    {"static, other method", POST, "/users", 0, "/users", BIT(GET) | BIT(HEAD) | BIT(POST), NOPARAMS},
    {"trailing slash is distinct", GET, "/users/", 0, "/users/", BIT(GET) | BIT(HEAD), NOPARAMS},
    {"deep static", GET, "/a/b/c", 0, "/a/b/c", BIT(GET) | BIT(HEAD), NOPARAMS},
    {"colon inside a static segment", GET, "/colon:in/static", 0, "/colon:in/static",
     BIT(GET) | BIT(HEAD), NOPARAMS},

    /* params */
    {"param", GET, "/users/42", 0, "/users/:id", BIT(GET) | BIT(HEAD) | BIT(PUT) | BIT(DELETE),
     PARAMS("id", "42")},
    {"param, PUT", PUT, "/users/42", 0, "/users/:id", BIT(GET) | BIT(HEAD) | BIT(PUT) | BIT(DELETE),
     PARAMS("id", "42")},
    {"two params", GET, "/users/7/posts/99", 0, "/users/:id/posts/:post", BIT(GET) | BIT(HEAD),
     PARAMS("id", "7", "post", "99")},
    {"param decoded", GET, "/users/J%C3%B6rg%20M", 0, "/users/:id",
     BIT(GET) | BIT(HEAD) | BIT(PUT) | BIT(DELETE), PARAMS("id", "J\xc3\xb6rg M")},
    {"param %2F decodes to a slash in one segment", GET, "/users/a%2Fb/posts", 0, "/users/:id/posts",
     BIT(GET) | BIT(HEAD), PARAMS("id", "a/b")},
    {"param keeps '+'", GET, "/users/a+b", 0, "/users/:id",
     BIT(GET) | BIT(HEAD) | BIT(PUT) | BIT(DELETE), PARAMS("id", "a+b")},
    {"param lower-case hex", GET, "/users/%7e%7E", 0, "/users/:id",
     BIT(GET) | BIT(HEAD) | BIT(PUT) | BIT(DELETE), PARAMS("id", "~~")},
    {"params and wildcard", GET, "/x/1/y/2/z/a/b%20c/", 0, "/x/:p1/y/:p2/z/*rest",
     BIT(GET) | BIT(HEAD), PARAMS("p1", "1", "p2", "2", "rest", "a/b c/")},

    /* wildcard */
    {"wildcard", GET, "/files/css/site.css", 0, "/files/*path", BIT(GET) | BIT(HEAD),
     PARAMS("path", "css/site.css")},
    {"wildcard, one segment", GET, "/files/x", 0, "/files/*path", BIT(GET) | BIT(HEAD),
     PARAMS("path", "x")},
    {"wildcard, empty", GET, "/files/", 0, "/files/*path", BIT(GET) | BIT(HEAD),
     PARAMS("path", "")},
    {"wildcard decoded", GET, "/files/a%20b/c%2Fd", 0, "/files/*path", BIT(GET) | BIT(HEAD),
     PARAMS("path", "a b/c/d")},
    {"wildcard needs its slash", GET, "/files", 404, NULL, 0, NULL},
    {"wildcard keeps double slashes", GET, "/catch//a//", 0, "/catch/*all", BIT(GET) | BIT(HEAD),
     PARAMS("all", "/a//")},

    /* precedence and backtracking */
    {"static wins over param", GET, "/users/me", 0, "/users/me", BIT(GET) | BIT(HEAD), NOPARAMS},
    {"static wins deeper", GET, "/users/me/settings", 0, "/users/me/settings",
     BIT(GET) | BIT(HEAD), NOPARAMS},
    {"backtrack from static to param", GET, "/users/me/posts", 0, "/users/:id/posts",
     BIT(GET) | BIT(HEAD), PARAMS("id", "me")},
    {"backtrack from static to param, two levels", GET, "/users/me/posts/1", 0,
     "/users/:id/posts/:post", BIT(GET) | BIT(HEAD), PARAMS("id", "me", "post", "1")},
    {"static wins over wildcard", GET, "/files/readme", 0, "/files/readme", BIT(GET) | BIT(HEAD),
     NOPARAMS},
    {"param wins over wildcard", GET, "/files/x/meta", 0, "/files/:name/meta",
     BIT(GET) | BIT(HEAD), PARAMS("name", "x")},
    {"backtrack from static to param to reach meta", GET, "/files/readme/meta", 0,
     "/files/:name/meta", BIT(GET) | BIT(HEAD), PARAMS("name", "readme")},
    {"backtrack from param to wildcard", GET, "/files/x/other", 0, "/files/*path",
     BIT(GET) | BIT(HEAD), PARAMS("path", "x/other")},
    {"backtrack from static and param to wildcard", GET, "/files/readme/x/y", 0, "/files/*path",
     BIT(GET) | BIT(HEAD), PARAMS("path", "readme/x/y")},
    {"explicit HEAD beside GET", HEAD, "/files/x/meta", 0, "/files/:name/meta",
     BIT(GET) | BIT(HEAD), PARAMS("name", "x")},
    {"params that lead nowhere are a 404", GET, "/x/1/y/2/q", 404, NULL, 0, NULL},

    /* 404 */
    {"unknown path", GET, "/nope", 404, NULL, 0, NULL},
    {"unknown deeper path", GET, "/users/1/comments", 404, NULL, 0, NULL},
    {"prefix of a route", GET, "/a/b", 404, NULL, 0, NULL},
    {"longer than a route", GET, "/a/b/c/d", 404, NULL, 0, NULL},
    {"empty param segment", GET, "/users//posts", 404, NULL, 0, NULL},
    {"case matters", GET, "/USERS", 404, NULL, 0, NULL},
    {"empty path", GET, "", 404, NULL, 0, NULL},
    {"relative path", GET, "users", 404, NULL, 0, NULL},
    {"asterisk", OPTIONS, "*", 404, NULL, 0, NULL},
    {"double slash at the root", GET, "//", 404, NULL, 0, NULL},

    /* 405 */
    {"405 on static", DELETE, "/users", 405, "/users", BIT(GET) | BIT(HEAD) | BIT(POST), NULL},
    {"405 on param", POST, "/users/42", 405, "/users/:id",
     BIT(GET) | BIT(HEAD) | BIT(PUT) | BIT(DELETE), NULL},
    {"405 lists OPTIONS and PATCH", GET, "/opts", 405, "/opts", BIT(OPTIONS) | BIT(PATCH), NULL},
    {"405 for HEAD without GET", HEAD, "/only-post", 405, "/only-post", BIT(POST), NULL},
    {"405 for an unknown method", KEEL_METHOD_OTHER, "/users", 405, "/users",
     BIT(GET) | BIT(HEAD) | BIT(POST), NULL},
    {"405 for an out-of-range method", KEEL_METHOD__COUNT, "/users", 405, "/users",
     BIT(GET) | BIT(HEAD) | BIT(POST), NULL},

    /* HEAD */
    {"HEAD falls back to GET", HEAD, "/users", 0, "/users", BIT(GET) | BIT(HEAD) | BIT(POST),
     NOPARAMS},
    {"HEAD falls back to GET with params", HEAD, "/users/5/posts", 0, "/users/:id/posts",
     BIT(GET) | BIT(HEAD), PARAMS("id", "5")},

    /* 400 */
    {"lone percent", GET, "/users/%", 400, NULL, 0, NULL},
    {"percent and one digit", GET, "/users/%4", 400, NULL, 0, NULL},
    {"percent at the end of a value", GET, "/users/ab%", 400, NULL, 0, NULL},
    {"bad hex", GET, "/users/%zz", 400, NULL, 0, NULL},
    {"half bad hex", GET, "/users/%4g", 400, NULL, 0, NULL},
    {"encoded NUL", GET, "/users/a%00b", 400, NULL, 0, NULL},
    {"encoded NUL in a wildcard", GET, "/files/a/%00", 400, NULL, 0, NULL},
    {"bad escape in the second param", GET, "/users/ok/posts/%x1", 400, NULL, 0, NULL},
};

#define NMATCH (sizeof(match_cases) / sizeof(match_cases[0]))

static keel_router *build_table_router(void)
{
    keel_router *r = keel_router_new();
    assert_non_null(r);
    for (size_t i = 0; i < NROUTES; i++) {
        int rc = keel_router_add(r, routes[i].m, routes[i].pattern, (void *)&routes[i]);
        if (rc != 0)
            case_fail(routes[i].pattern, "add returned %d", rc);
    }
    return r;
}

static const route *route_of(const char *pattern, keel_method m)
{
    for (size_t i = 0; i < NROUTES; i++)
        if (routes[i].m == m && strcmp(routes[i].pattern, pattern) == 0)
            return &routes[i];
    return NULL;
}

static void check_match(const keel_router *r, const match_case *c, keel_arena *arena)
{
    /* a heap copy of exactly the path, so ASan sees any overread */
    size_t len = strlen(c->path);
    char *copy = malloc(len + 1);
    assert_non_null(copy);
    memcpy(copy, c->path, len + 1);
    keel_route_match mt;
    memset(&mt, 0xa5, sizeof(mt));
    int st = keel_router_match(r, c->m, (keel_str){copy, len}, arena, &mt);
    if (st != mt.status)
        case_fail(c->name, "returned %d but status %d", st, mt.status);
    if (st != c->status) {
        case_fail(c->name, "status %d, want %d", st, c->status);
        goto out;
    }
    if (st == 0 || st == 405) {
        if (mt.allowed != c->allowed)
            case_fail(c->name, "allowed 0x%x, want 0x%x", mt.allowed, c->allowed);
        if (!mt.pattern || strcmp(mt.pattern, c->pattern) != 0)
            case_fail(c->name, "pattern %s, want %s", mt.pattern ? mt.pattern : "(null)",
                      c->pattern);
    }
    if (st == 405 && mt.data)
        case_fail(c->name, "data set on 405");
    if (st == 404 && (mt.data || mt.pattern || mt.allowed))
        case_fail(c->name, "data, pattern or allowed set on 404");
    if (st != 0)
        goto out;
    keel_method use = c->m == HEAD && !route_of(c->pattern, HEAD) ? GET : c->m;
    const route *want = route_of(c->pattern, use);
    if (mt.data != want)
        case_fail(c->name, "data %p, want the route %s", mt.data, c->pattern);
    size_t n = 0;
    while (c->params[2 * n])
        n++;
    if (mt.num_params != n) {
        case_fail(c->name, "%zu params, want %zu", mt.num_params, n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (!str_is(mt.names[i], c->params[2 * i]))
            case_fail(c->name, "param %zu named %.*s, want %s", i, (int)mt.names[i].len,
                      mt.names[i].ptr, c->params[2 * i]);
        if (!str_is(mt.values[i], c->params[2 * i + 1]))
            case_fail(c->name, "param %zu is \"%.*s\", want \"%s\"", i, (int)mt.values[i].len,
                      mt.values[i].ptr, c->params[2 * i + 1]);
        if (mt.values[i].ptr[mt.values[i].len] != '\0')
            case_fail(c->name, "param %zu is not NUL-terminated", i);
    }
out:
    free(copy);
}

static void test_match_table(void **state)
{
    (void)state;
    failures = 0;
    keel_router *r = build_table_router();
    keel_arena arena;
    char first[256];
    keel_arena_init(&arena, first, sizeof(first));
    for (size_t i = 0; i < NMATCH; i++) {
        check_match(r, &match_cases[i], &arena);
        keel_arena_reset(&arena);
    }
    keel_arena_close(&arena);
    keel_router_free(r);
    assert_int_equal(failures, 0);
}

/* ---------------------------------------------------------------- add */

typedef struct add_case {
    const char *name;
    keel_method m;
    const char *pattern; /* NULL allowed */
    int rc;
} add_case;

static char long_name_pattern[80];  /* "/:" + 65 letters */
static char ok_name_pattern[80];    /* "/:" + 64 letters */
static char params16[128];          /* "/:a0/:a1/.../:a15" */
static char params17[128];          /* 17 params */
static char params16_wild[128];     /* 15 params and a wildcard */

static void build_patterns(void)
{
    strcpy(long_name_pattern, "/n/:");
    memset(long_name_pattern + 4, 'x', 65);
    long_name_pattern[4 + 65] = '\0';
    strcpy(ok_name_pattern, "/n/:");
    memset(ok_name_pattern + 4, 'x', 64);
    ok_name_pattern[4 + 64] = '\0';
    char *w = params16;
    for (int i = 0; i < 16; i++)
        w += sprintf(w, "/:a%d", i);
    w = params17;
    for (int i = 0; i < 17; i++)
        w += sprintf(w, "/:a%d", i);
    w = params16_wild;
    w += sprintf(w, "/wild");
    for (int i = 0; i < 15; i++)
        w += sprintf(w, "/:a%d", i);
    sprintf(w, "/*rest");
}

/* Applied in order to one router. */
static const add_case add_cases[] = {
    {"first add", GET, "/items/:id", 0},
    {"other method, same pattern", POST, "/items/:id", 0},
    {"duplicate", GET, "/items/:id", KEEL_EEXISTS},
    {"duplicate static", GET, "/", 0},
    {"duplicate static again", GET, "/", KEEL_EEXISTS},
    {"conflicting param name", PUT, "/items/:item", KEEL_EINVAL},
    {"conflicting param name deeper", GET, "/items/:key/x", KEEL_EINVAL},
    {"same param name deeper", GET, "/items/:id/x", 0},
    {"wildcard", GET, "/files/*path", 0},
    {"conflicting wildcard name", POST, "/files/*rest", KEEL_EINVAL},
    {"same wildcard, other method", POST, "/files/*path", 0},
    {"duplicate wildcard", GET, "/files/*path", KEEL_EEXISTS},
    {"NULL pattern", GET, NULL, KEEL_EINVAL},
    {"empty pattern", GET, "", KEEL_EINVAL},
    {"no leading slash", GET, "items", KEEL_EINVAL},
    {"empty param name", GET, "/a/:", KEEL_EINVAL},
    {"empty param name, not last", GET, "/a/:/b", KEEL_EINVAL},
    {"empty wildcard name", GET, "/a/*", KEEL_EINVAL},
    {"wildcard not last", GET, "/a/*x/b", KEEL_EINVAL},
    {"wildcard then slash", GET, "/a/*x/", KEEL_EINVAL},
    {"bad param name", GET, "/a/:a-b", KEEL_EINVAL},
    {"bad param name with dot", GET, "/a/:a.json", KEEL_EINVAL},
    {"bad wildcard name", GET, "/a/*a b", KEEL_EINVAL},
    {"param name of 65", GET, long_name_pattern, KEEL_EINVAL},
    {"param name of 64", GET, ok_name_pattern, 0},
    {"16 params", GET, params16, 0},
    {"17 params", GET, params17, KEEL_EINVAL},
    {"15 params and a wildcard", GET, params16_wild, 0},
    {"method OTHER", KEEL_METHOD_OTHER, "/m", KEEL_EINVAL},
    {"method out of range", KEEL_METHOD__COUNT, "/m", KEEL_EINVAL},
    /* Regression: a refused pattern must leave nothing behind, so a later
     * parameter at the same place is not "named differently". */
    {"refused after a param", GET, "/left/:x/*", KEEL_EINVAL},
    {"param where a refused one was", GET, "/left/:y", 0},
    {"refused after a wildcard-free prefix", GET, "/left2/:x/:", KEEL_EINVAL},
    {"param where a refused one was, deeper", GET, "/left2/:z/q", 0},
};

static void test_add_table(void **state)
{
    (void)state;
    failures = 0;
    build_patterns();
    keel_router *r = keel_router_new();
    static int data;
    for (size_t i = 0; i < sizeof(add_cases) / sizeof(add_cases[0]); i++) {
        const add_case *c = &add_cases[i];
        int rc = keel_router_add(r, c->m, c->pattern, &data);
        if (rc != c->rc)
            case_fail(c->name, "returned %d (%s), want %d", rc, keel_strerror(rc), c->rc);
    }
    /* nothing refused was added */
    keel_arena arena;
    keel_arena_init(&arena, NULL, 0);
    keel_route_match mt;
    assert_int_equal(keel_router_match(r, PUT, KEEL_STR("/items/1"), &arena, &mt), 405);
    assert_int_equal(mt.allowed, BIT(GET) | BIT(HEAD) | BIT(POST));
    assert_int_equal(keel_router_match(r, GET, KEEL_STR("/a/x/b"), &arena, &mt), 404);
    assert_int_equal(keel_router_match(r, GET, KEEL_STR("/left/1"), &arena, &mt), 0);
    assert_true(str_is(mt.names[0], "y"));
    /* 16 params all captured */
    assert_int_equal(keel_router_match(r, GET,
                                       KEEL_STR("/0/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15"),
                                       &arena, &mt),
                     0);
    assert_int_equal(mt.num_params, 16);
    assert_true(str_is(mt.names[15], "a15"));
    assert_true(str_is(mt.values[15], "15"));
    assert_int_equal(keel_router_match(r, GET,
                                       KEEL_STR("/wild/0/1/2/3/4/5/6/7/8/9/10/11/12/13/14/r/e/s/t"),
                                       &arena, &mt),
                     0);
    assert_int_equal(mt.num_params, 16);
    assert_true(str_is(mt.names[15], "rest"));
    assert_true(str_is(mt.values[15], "r/e/s/t"));
    keel_arena_close(&arena);
    keel_router_free(r);
    assert_int_equal(failures, 0);
}

static void test_pattern_is_copied(void **state)
{
    (void)state;
    keel_router *r = keel_router_new();
    char pat[] = "/copy/:id";
    int data;
    assert_int_equal(keel_router_add(r, GET, pat, &data), 0);
    memset(pat, 'z', sizeof(pat) - 1);
    keel_arena arena;
    keel_arena_init(&arena, NULL, 0);
    keel_route_match mt;
    assert_int_equal(keel_router_match(r, GET, KEEL_STR("/copy/9"), &arena, &mt), 0);
    assert_string_equal(mt.pattern, "/copy/:id");
    assert_ptr_equal(mt.data, &data);
    keel_arena_close(&arena);
    keel_router_free(r);
    keel_router_free(NULL); /* a no-op */
}

/* ---------------------------------------------------------------- walk */

typedef struct walk_seen {
    size_t n;
    int hits[NROUTES];
    int unknown;
} walk_seen;

static void on_route(keel_method m, const char *pattern, void *data, void *arg)
{
    walk_seen *w = arg;
    w->n++;
    const route *rt = route_of(pattern, m);
    if (!rt || data != (void *)rt) {
        w->unknown++;
        return;
    }
    w->hits[rt - routes]++;
}

static void test_walk_visits_all(void **state)
{
    (void)state;
    failures = 0;
    keel_router *r = build_table_router();
    walk_seen w;
    memset(&w, 0, sizeof(w));
    keel_router_walk(r, on_route, &w);
    assert_int_equal(w.n, NROUTES);
    assert_int_equal(w.unknown, 0);
    for (size_t i = 0; i < NROUTES; i++)
        if (w.hits[i] != 1)
            case_fail(routes[i].pattern, "visited %d times", w.hits[i]);
    keel_router_free(r);

    /* an empty router visits nothing */
    r = keel_router_new();
    memset(&w, 0, sizeof(w));
    keel_router_walk(r, on_route, &w);
    assert_int_equal(w.n, 0);
    keel_router_free(r);
    assert_int_equal(failures, 0);
}

/* ---------------------------------------------------------------- decode */

static void test_url_decode(void **state)
{
    (void)state;
    keel_arena a;
    keel_arena_init(&a, NULL, 0);
    size_t n = 99;
    char *s = keel_url_decode(&a, KEEL_STR("a%20b+c%2b%2F"), 0, &n);
    assert_string_equal(s, "a b+c+/");
    assert_int_equal(n, 7);
    s = keel_url_decode(&a, KEEL_STR("a%20b+c"), 1, &n);
    assert_string_equal(s, "a b c");
    s = keel_url_decode(&a, KEEL_STR(""), 1, &n);
    assert_string_equal(s, "");
    assert_int_equal(n, 0);
    s = keel_url_decode(&a, KEEL_STR("%41"), 0, NULL);
    assert_string_equal(s, "A");
    assert_null(keel_url_decode(&a, KEEL_STR("%"), 0, &n));
    assert_null(keel_url_decode(&a, KEEL_STR("%4"), 0, &n));
    assert_null(keel_url_decode(&a, KEEL_STR("%G0"), 0, &n));
    assert_null(keel_url_decode(&a, KEEL_STR("%00"), 0, &n));
    assert_null(keel_url_decode(&a, KEEL_STR("x%0"), 0, &n));
    /* a view that is not NUL-terminated is read only up to its length */
    const char buf[] = "%41%4";
    s = keel_url_decode(&a, (keel_str){buf, 3}, 0, &n);
    assert_string_equal(s, "A");
    keel_arena_close(&a);
}

/* ---------------------------------------------------------------- scale */

static void count_route(keel_method m, const char *pattern, void *data, void *arg)
{
    (void)m;
    (void)pattern;
    assert_non_null(data);
    (*(size_t *)arg)++;
}

#define N_STATIC 5000
#define N_PARAM 3000
#define N_WILD 2000

static void test_ten_thousand_routes(void **state)
{
    (void)state;
    keel_router *r = keel_router_new();
    char pat[64];
    /* data is the route number + 1 */
    for (uintptr_t i = 0; i < N_STATIC; i++) {
        snprintf(pat, sizeof(pat), "/static/s%lu", (unsigned long)i);
        assert_int_equal(keel_router_add(r, GET, pat, (void *)(i + 1)), 0);
    }
    for (uintptr_t i = 0; i < N_PARAM; i++) {
        snprintf(pat, sizeof(pat), "/p%lu/:id/edit", (unsigned long)i);
        assert_int_equal(keel_router_add(r, POST, pat, (void *)(N_STATIC + i + 1)), 0);
    }
    for (uintptr_t i = 0; i < N_WILD; i++) {
        snprintf(pat, sizeof(pat), "/w/%lu/*rest", (unsigned long)i);
        assert_int_equal(keel_router_add(r, GET, pat, (void *)(N_STATIC + N_PARAM + i + 1)), 0);
    }
    assert_int_equal(keel_router_add(r, GET, "/static/s4999", NULL), KEEL_EEXISTS);

    size_t count = 0;
    keel_router_walk(r, count_route, &count);
    assert_int_equal(count, N_STATIC + N_PARAM + N_WILD);

    keel_arena a;
    keel_arena_init(&a, NULL, 0);
    keel_route_match mt;
    char path[96];
    for (uintptr_t i = 0; i < N_STATIC; i++) {
        int n = snprintf(path, sizeof(path), "/static/s%lu", (unsigned long)i);
        assert_int_equal(keel_router_match(r, GET, (keel_str){path, (size_t)n}, &a, &mt), 0);
        assert_ptr_equal(mt.data, (void *)(i + 1));
        assert_int_equal(mt.num_params, 0);
    }
    for (uintptr_t i = 0; i < N_PARAM; i++) {
        int n = snprintf(path, sizeof(path), "/p%lu/v%lu/edit", (unsigned long)i,
                         (unsigned long)(i * 7));
        assert_int_equal(keel_router_match(r, POST, (keel_str){path, (size_t)n}, &a, &mt), 0);
        assert_ptr_equal(mt.data, (void *)(N_STATIC + i + 1));
        char want[32];
        snprintf(want, sizeof(want), "v%lu", (unsigned long)(i * 7));
        assert_int_equal(mt.num_params, 1);
        assert_string_equal(mt.values[0].ptr, want);
        assert_int_equal(keel_router_match(r, GET, (keel_str){path, (size_t)n}, &a, &mt), 405);
        assert_int_equal(mt.allowed, BIT(POST));
        keel_arena_reset(&a);
    }
    for (uintptr_t i = 0; i < N_WILD; i++) {
        int n = snprintf(path, sizeof(path), "/w/%lu/a/%lu", (unsigned long)i, (unsigned long)i);
        assert_int_equal(keel_router_match(r, GET, (keel_str){path, (size_t)n}, &a, &mt), 0);
        assert_ptr_equal(mt.data, (void *)(N_STATIC + N_PARAM + i + 1));
        char want[32];
        snprintf(want, sizeof(want), "a/%lu", (unsigned long)i);
        assert_string_equal(mt.values[0].ptr, want);
        keel_arena_reset(&a);
    }
    assert_int_equal(keel_router_match(r, GET, KEEL_STR("/static/s5000"), &a, &mt), 404);
    assert_int_equal(keel_router_match(r, GET, KEEL_STR("/static/s"), &a, &mt), 404);
    assert_int_equal(keel_router_match(r, POST, KEEL_STR("/p3000/x/edit"), &a, &mt), 404);
    assert_int_equal(keel_router_match(r, POST, KEEL_STR("/p1/x/edit/more"), &a, &mt), 404);
    assert_int_equal(keel_router_match(r, GET, KEEL_STR("/w/2000/x"), &a, &mt), 404);
    keel_arena_close(&a);
    keel_router_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match_table),
        cmocka_unit_test(test_add_table),
        cmocka_unit_test(test_pattern_is_copied),
        cmocka_unit_test(test_walk_visits_all),
        cmocka_unit_test(test_url_decode),
        cmocka_unit_test(test_ten_thousand_routes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
