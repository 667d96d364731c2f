/* fuzz_router.c — libFuzzer driver for keel_router_match and
 * keel_url_decode.
 *
 * One fixed router (static routes, parameters, wildcards, overlapping so
 * that lookups backtrack) is built on the first call. Each input is taken
 * as a raw request path and matched with every method, including HEAD (the
 * GET fallback), KEEL_METHOD_OTHER and an out-of-range value. Checks: no
 * crash or overread (the path is a heap copy of exactly the input), a
 * status from {0, 400, 404, 405} returned and stored alike, captures
 * within KEEL_MAX_PARAMS and NUL-terminated, 405 and success carrying the
 * path's methods, and HEAD answering like GET when only GET is there.
 *
 *   clang-14 -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *     -Iinclude -Isrc tests/fuzz/fuzz_router.c src/core/router.c \
 *     src/core/arena.c src/core/http_parser.c -o fuzz_router
 *   ./fuzz_router -dict=tests/fuzz/fuzz_router.dict CORPUS_DIR
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/router.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_router: check failed: %s (line %d)\n",       \
                    #cond, __LINE__);                                          \
            abort();                                                           \
        }                                                                      \
    } while (0)

static const struct {
    keel_method m;
    const char *pattern;
} routes[] = {
    {KEEL_METHOD_GET, "/"},
    {KEEL_METHOD_GET, "/health"},
    {KEEL_METHOD_GET, "/users"},
    {KEEL_METHOD_POST, "/users"},
    {KEEL_METHOD_GET, "/users/me"},
    {KEEL_METHOD_GET, "/users/:id"},
    {KEEL_METHOD_PUT, "/users/:id"},
    {KEEL_METHOD_DELETE, "/users/:id"},
    {KEEL_METHOD_GET, "/users/:id/posts"},
    {KEEL_METHOD_GET, "/users/:id/posts/:post"},
    {KEEL_METHOD_PATCH, "/users/:id/posts/:post"},
    {KEEL_METHOD_GET, "/users/me/settings"},
    {KEEL_METHOD_GET, "/static/*path"},
    {KEEL_METHOD_GET, "/static/index.html"},
    {KEEL_METHOD_GET, "/static/:dir/meta"},
    {KEEL_METHOD_HEAD, "/static/:dir/meta"},
    {KEEL_METHOD_GET, "/api/v1/:a/:b/:c/:d/:e/:f/:g/:h/*rest"},
    {KEEL_METHOD_OPTIONS, "/api/v1"},
    {KEEL_METHOD_GET, "/a/b/c/d/e"},
    {KEEL_METHOD_GET, "/:any/x"},
    {KEEL_METHOD_GET, "/files/"},
    {KEEL_METHOD_GET, "/files/*all"},
};

#define NROUTES (sizeof(routes) / sizeof(routes[0]))

static keel_router *router;

static void build(void)
{
    router = keel_router_new();
    for (size_t i = 0; i < NROUTES; i++)
        if (keel_router_add(router, routes[i].m, routes[i].pattern, (void *)&routes[i]) != 0)
            abort();
}

static void check_one(const keel_route_match *mt, int st, keel_method m)
{
    CHECK(st == mt->status);
    CHECK(st == 0 || st == 400 || st == 404 || st == 405);
    CHECK(mt->num_params <= KEEL_MAX_PARAMS);
    if (st == 404) {
        CHECK(mt->allowed == 0 && mt->data == NULL);
        return;
    }
    CHECK(mt->allowed != 0);
    CHECK(mt->pattern != NULL && mt->pattern[0] == '/');
    if (st == 405) {
        CHECK(mt->data == NULL);
        CHECK((unsigned)m >= KEEL_METHOD__COUNT || !(mt->allowed & (1u << m)));
        return;
    }
    if (st == 400)
        return;
    CHECK(mt->data != NULL);
    CHECK(mt->allowed & (1u << m));
    for (size_t i = 0; i < mt->num_params; i++) {
        CHECK(mt->names[i].ptr && mt->names[i].len > 0);
        CHECK(mt->names[i].ptr[mt->names[i].len] == '\0');
        CHECK(mt->values[i].ptr != NULL);
        CHECK(mt->values[i].ptr[mt->values[i].len] == '\0');
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!router)
        build();
    char *path = malloc(size ? size : 1);
    if (!path)
        abort();
    if (size)
        memcpy(path, data, size);
    keel_str p = {path, size};

    char first[512];
    keel_arena arena;
    keel_arena_init(&arena, first, sizeof(first));

    int by_method[KEEL_METHOD__COUNT + 1];
    for (int m = 0; m <= KEEL_METHOD__COUNT; m++) {
        keel_route_match mt;
        memset(&mt, 0x5a, sizeof(mt));
        int st = keel_router_match(router, (keel_method)m, p, &arena, &mt);
        check_one(&mt, st, (keel_method)m);
        by_method[m] = st;
        /* the same lookup answers the same */
        keel_route_match again;
        CHECK(keel_router_match(router, (keel_method)m, p, &arena, &again) == st);
        CHECK(again.data == mt.data && again.num_params == mt.num_params);
    }
    /* 404 does not depend on the method; HEAD is at least as good as GET */
    for (int m = 0; m <= KEEL_METHOD__COUNT; m++)
        CHECK((by_method[m] == 404) == (by_method[KEEL_METHOD_GET] == 404));
    if (by_method[KEEL_METHOD_GET] == 0)
        CHECK(by_method[KEEL_METHOD_HEAD] == 0);

    /* The decoder on its own, as for a query string. */
    size_t n = 0;
    char *d = keel_url_decode(&arena, p, 1, &n);
    if (d) {
        CHECK(n <= size);
        CHECK(d[n] == '\0');
    }

    keel_arena_close(&arena);
    free(path);
    return 0;
}
