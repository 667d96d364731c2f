/* test_arena.c — the request arena (src/core/arena.c): alignment, the
 * caller's inline block first and heap chunks after it, large blocks,
 * the strndup/printf helpers, deferred cleanups (exactly once, last
 * registered first, before the memory goes) and reuse after a reset. The
 * sanitizer build turns any write past a block or leaked chunk into a
 * failure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "keel/arena.h"

#define ALIGN _Alignof(max_align_t)

/* Under ASan a malloc the system would refuse aborts the process unless
 * told to return NULL; keel_arena_try_alloc's NULL is what is tested. */
const char *__asan_default_options(void);
__attribute__((used)) const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}

static int aligned(const void *p)
{
    return ((uintptr_t)p & (ALIGN - 1)) == 0;
}

static int inside(const void *p, const void *base, size_t len)
{
    return (const char *)p >= (const char *)base && (const char *)p < (const char *)base + len;
}

static void test_alignment(void **state)
{
    (void)state;
    /* a deliberately misaligned inline block */
    static max_align_t store[64];
    char *block = (char *)store + 1;
    keel_arena a;
    keel_arena_init(&a, block, sizeof(store) - 1);
    char *got[64];
    size_t len[64], k = 0;
    for (size_t n = 1; n < 200; n += 7, k++) {
        got[k] = keel_arena_alloc(&a, n);
        len[k] = n;
        assert_true(aligned(got[k]));
        memset(got[k], (int)k, n);
    }
    assert_true(inside(got[0], store, sizeof(store)));
    /* no block overlaps another: each still holds its own byte */
    for (size_t i = 0; i < k; i++)
        for (size_t j = 0; j < len[i]; j++)
            assert_int_equal((unsigned char)got[i][j], i);
    /* the same from heap chunks */
    keel_arena b;
    keel_arena_init(&b, NULL, 0);
    for (size_t n = 1; n < 5000; n += 333) {
        void *p = keel_arena_alloc(&b, n);
        assert_true(aligned(p));
        memset(p, 0xcd, n);
    }
    /* a zero-byte request still gets its own aligned pointer */
    void *z1 = keel_arena_alloc(&b, 0), *z2 = keel_arena_alloc(&b, 0);
    assert_true(aligned(z1) && aligned(z2));
    assert_ptr_not_equal(z1, z2);
    keel_arena_close(&a);
    keel_arena_close(&b);
}

static void test_inline_block_then_growth(void **state)
{
    (void)state;
    static max_align_t store[16]; /* 256 bytes */
    keel_arena a;
    keel_arena_init(&a, store, sizeof(store));
    /* the inline block serves the first requests without a heap chunk */
    for (size_t i = 0; i < sizeof(store) / 32; i++) {
        void *p = keel_arena_alloc(&a, 32);
        assert_true(inside(p, store, sizeof(store)));
        assert_ptr_equal(p, (char *)store + i * 32);
    }
    assert_null(a.head);
    assert_int_equal(a.total, sizeof(store));
    /* full: the next one comes from a heap chunk */
    char *h = keel_arena_alloc(&a, 32);
    assert_false(inside(h, store, sizeof(store)));
    assert_non_null(a.head);
    memset(h, 1, 32);
    /* further small ones share that chunk, back to back */
    char *h2 = keel_arena_alloc(&a, 32);
    assert_ptr_equal(h2, h + 32);
    assert_int_equal(a.total, sizeof(store) + 64);
    /* a chunk that fills up is followed by a new one; every block stays
     * writable (the sanitizer build checks the bounds) */
    for (int i = 0; i < 1000; i++)
        memset(keel_arena_alloc(&a, 100), i & 0xff, 100);
    keel_arena_close(&a);

    /* an inline block too small to hold one aligned byte is ignored */
    keel_arena t;
    keel_arena_init(&t, (char *)store + 1, ALIGN - 1);
    assert_null(t.inline_buf);
    assert_false(inside(keel_arena_alloc(&t, 1), store, sizeof(store)));
    keel_arena_close(&t);
}

static void test_large_allocations(void **state)
{
    (void)state;
    keel_arena a;
    keel_arena_init(&a, NULL, 0);
    char *s1 = keel_arena_alloc(&a, 16);
    size_t big = 10 * a.chunk_size;
    char *large = keel_arena_alloc(&a, big);
    memset(large, 0x5a, big);
    assert_int_equal((unsigned char)large[big - 1], 0x5a);
    /* the small-block chunk is still the current one: the next small
     * block follows the first, it does not open a new chunk */
    char *s2 = keel_arena_alloc(&a, 16);
    assert_ptr_equal(s2, s1 + 16);
    /* a second large block, then small ones again */
    char *large2 = keel_arena_alloc(&a, a.chunk_size);
    memset(large2, 0x11, a.chunk_size);
    assert_ptr_equal(keel_arena_alloc(&a, 16), s1 + 32);
    assert_int_equal((unsigned char)large[0], 0x5a); /* untouched */
    assert_int_equal(a.total, 48 + big + a.chunk_size);

    /* sizes the system can never give: NULL, never a short block */
    assert_null(keel_arena_try_alloc(&a, SIZE_MAX));
    assert_null(keel_arena_try_alloc(&a, SIZE_MAX - ALIGN));
    assert_null(keel_arena_try_alloc(&a, SIZE_MAX - 64));
    assert_null(keel_arena_try_alloc(&a, SIZE_MAX / 2 + 1));
    /* and the arena still works after a refusal */
    char *ok = keel_arena_try_alloc(&a, 64);
    assert_non_null(ok);
    memset(ok, 0, 64);
    keel_arena_close(&a);
}

static void test_strndup_printf(void **state)
{
    (void)state;
    static max_align_t store[8];
    keel_arena a;
    keel_arena_init(&a, store, sizeof(store));
    const char src[] = "hello\0world";
    char *d = keel_arena_strndup(&a, src, 5);
    assert_string_equal(d, "hello");
    char *d2 = keel_arena_strndup(&a, src, sizeof(src) - 1); /* copies past a NUL */
    assert_memory_equal(d2, src, sizeof(src));
    char *e = keel_arena_strndup(&a, NULL, 0);
    assert_string_equal(e, "");
    char *p = keel_arena_printf(&a, "%s-%d-%.2f", "x", 42, 1.5);
    assert_string_equal(p, "x-42-1.50");
    /* longer than the inline block and than a chunk */
    char *w = keel_arena_printf(&a, "%020000d|%s", 7, "end");
    assert_int_equal(strlen(w), 20004);
    assert_int_equal(w[0], '0');
    assert_string_equal(w + 19999, "7|end");
    assert_string_equal(keel_arena_printf(&a, "%s", ""), "");
    /* the earlier copies were not disturbed */
    assert_string_equal(d, "hello");
    assert_string_equal(p, "x-42-1.50");
    keel_arena_close(&a);
}

/* ---------------------------------------------------------------- defers */

typedef struct trace {
    char order[32];
    int runs[8];
    const char *checked; /* a string in the arena the cleanup reads */
    int checked_ok;
} trace;

typedef struct item {
    trace *t;
    int id;
} item;

static void record(void *arg)
{
    item *it = arg;
    size_t n = strlen(it->t->order);
    it->t->order[n] = (char)('0' + it->id);
    it->t->order[n + 1] = '\0';
    it->t->runs[it->id]++;
}

static void read_arena_string(void *arg)
{
    trace *t = arg;
    /* the arena's memory must still be there when a cleanup runs */
    t->checked_ok = t->checked[0] == 'x' && t->checked[99999] == 'x' && t->checked[100000] == 0;
}

static void test_defer_reverse_once(void **state)
{
    (void)state;
    static max_align_t store[8];
    keel_arena a;
    keel_arena_init(&a, store, sizeof(store));
    trace t;
    memset(&t, 0, sizeof(t));
    item it[4] = {{&t, 1}, {&t, 2}, {&t, 3}, {&t, 4}};
    keel_arena_defer(&a, record, &it[0]);
    keel_arena_alloc(&a, 5000); /* the next items live in a heap chunk */
    keel_arena_defer(&a, record, &it[1]);
    keel_arena_defer(&a, record, &it[2]);
    assert_string_equal(t.order, ""); /* nothing runs early */
    keel_arena_reset(&a);
    assert_string_equal(t.order, "321");
    /* a second reset runs nothing again */
    keel_arena_reset(&a);
    assert_string_equal(t.order, "321");
    assert_int_equal(t.runs[1], 1);
    assert_int_equal(t.runs[2], 1);
    assert_int_equal(t.runs[3], 1);

    /* after a reset the arena takes new cleanups; close runs them */
    keel_arena_defer(&a, record, &it[3]);
    char *big = keel_arena_alloc(&a, 100001);
    memset(big, 'x', 100000);
    big[100000] = 0;
    t.checked = big;
    keel_arena_defer(&a, read_arena_string, &t);
    keel_arena_close(&a);
    assert_string_equal(t.order, "3214");
    assert_int_equal(t.runs[4], 1);
    assert_true(t.checked_ok);
    /* close on a closed arena is harmless and runs nothing */
    keel_arena_close(&a);
    assert_int_equal(t.runs[4], 1);
}

static void test_reset_reuses_memory(void **state)
{
    (void)state;
    static max_align_t store[32];
    keel_arena a;
    keel_arena_init(&a, store, sizeof(store));
    void *first = keel_arena_alloc(&a, 40);
    keel_arena_alloc(&a, 400);
    for (int i = 0; i < 50; i++)
        keel_arena_alloc(&a, 1000); /* several heap chunks */
    assert_non_null(a.head);
    keel_arena_reset(&a);
    assert_int_equal(a.total, 0);
    assert_null(a.head);
    assert_null(a.defers);
    /* the inline block serves again from its start */
    assert_ptr_equal(keel_arena_alloc(&a, 8), first);
    /* many request-sized cycles: the inline block, never a chunk */
    for (int round = 0; round < 1000; round++) {
        keel_arena_reset(&a);
        char *p = keel_arena_printf(&a, "round %d", round);
        assert_ptr_equal(p, first);
        assert_null(a.head);
    }
    keel_arena_close(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alignment),
        cmocka_unit_test(test_inline_block_then_growth),
        cmocka_unit_test(test_large_allocations),
        cmocka_unit_test(test_strndup_printf),
        cmocka_unit_test(test_defer_reverse_once),
        cmocka_unit_test(test_reset_reuses_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
