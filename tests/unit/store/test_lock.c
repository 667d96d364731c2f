/* test_lock.c — the in-process lock table behind keel/lock.h (time driven
 * by the test): grants, TTL expiry, fencing numbers that only grow, wrong
 * tokens refused, many names (growth and sweeping), and the table shared
 * by threads with exactly one holder at a time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "keel/common.h"
#include "store/lock_internal.h"

static void test_grant_held_release(void **state)
{
    (void)state;
    keel__locktab *t = keel__locktab_new();
    uint64_t f1 = 0, f2 = 0, left = 0, f = 0;
    assert_int_equal(keel__locktab_acquire(t, "a", "tok1", 1000, 100, &f1, &left), 0);
    assert_true(f1 >= 1);
    assert_int_equal(keel__locktab_acquire(t, "a", "tok2", 1000, 400, &f2, &left),
                     KEEL_EBUSY);
    assert_int_equal(left, 700);
    /* another name is independent */
    assert_int_equal(keel__locktab_acquire(t, "b", "tok2", 1000, 400, &f2, &left), 0);
    assert_true(f2 > f1);
    /* wrong token: refused, the lock stays */
    assert_int_equal(keel__locktab_release(t, "a", "tok2", 500, &f), KEEL_EACCES);
    assert_int_equal(f, 0);
    assert_int_equal(keel__locktab_extend(t, "a", "nope", 1000, 500, &f), KEEL_EACCES);
    assert_int_equal(keel__locktab_count(t, 500), 2);
    /* the holder releases; a second release finds nothing */
    assert_int_equal(keel__locktab_release(t, "a", "tok1", 500, &f), 0);
    assert_int_equal(f, f1);
    assert_int_equal(keel__locktab_release(t, "a", "tok1", 500, &f), KEEL_ENOTFOUND);
    assert_int_equal(keel__locktab_extend(t, "a", "tok1", 1000, 500, &f), KEEL_ENOTFOUND);
    keel__locktab_free(t);
}

static void test_ttl_and_extend(void **state)
{
    (void)state;
    keel__locktab *t = keel__locktab_new();
    uint64_t f1 = 0, f2 = 0, left = 0, f = 0;
    assert_int_equal(keel__locktab_acquire(t, "k", "t1", 100, 1000, &f1, &left), 0);
    /* extended at 1090 for 100 more: still held at 1150, gone at 1190 */
    assert_int_equal(keel__locktab_extend(t, "k", "t1", 100, 1090, &f), 0);
    assert_int_equal(f, f1);
    assert_int_equal(keel__locktab_acquire(t, "k", "t2", 100, 1150, &f2, &left), KEEL_EBUSY);
    assert_int_equal(left, 40);
    assert_int_equal(keel__locktab_count(t, 1189), 1);
    assert_int_equal(keel__locktab_count(t, 1190), 0);
    /* expired: the holder can neither extend nor release, another takes it */
    assert_int_equal(keel__locktab_extend(t, "k", "t1", 100, 1200, &f), KEEL_ENOTFOUND);
    assert_int_equal(keel__locktab_acquire(t, "k", "t2", 100, 1200, &f2, &left), 0);
    assert_true(f2 > f1);
    assert_int_equal(keel__locktab_release(t, "k", "t1", 1201, &f), KEEL_EACCES);
    keel__locktab_free(t);
}

static void test_fencing_monotonic_many_names(void **state)
{
    (void)state;
    keel__locktab *t = keel__locktab_new();
    uint64_t last = 0, f = 0, left = 0;
    char name[32];
    /* many names: the table grows; short TTLs: expired entries are swept */
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "n%d", i % 1500);
        uint64_t now = (uint64_t)i * 10;
        int rc = keel__locktab_acquire(t, name, "tok", 50, now, &f, &left);
        if (rc == 0) {
            assert_true(f > last);
            last = f;
        } else {
            assert_int_equal(rc, KEEL_EBUSY);
        }
    }
    assert_true(keel__locktab_count(t, 50000) <= 5);
    assert_int_equal(keel__locktab_count(t, 1000000), 0);
    keel__locktab_free(t);
}

/* Threads contend for one name; a shared counter proves one holder. */
typedef struct race {
    keel__locktab *t;
    int holders, max_holders, grants;
    uint64_t last_fencing;
    int fencing_ok;
    uv_mutex_t mu;
} race;

static void racer(void *arg)
{
    race *r = arg;
    char tok[16];
    snprintf(tok, sizeof(tok), "%p", (void *)&tok);
    for (int i = 0; i < 2000; i++) {
        uint64_t f = 0, left = 0;
        if (keel__locktab_acquire(r->t, "one", tok, 60000, keel_now_ms(), &f, &left) != 0)
            continue;
        int h = __atomic_add_fetch(&r->holders, 1, __ATOMIC_SEQ_CST);
        uv_mutex_lock(&r->mu);
        if (h > r->max_holders)
            r->max_holders = h;
        if (f <= r->last_fencing)
            r->fencing_ok = 0;
        r->last_fencing = f;
        r->grants++;
        uv_mutex_unlock(&r->mu);
        __atomic_sub_fetch(&r->holders, 1, __ATOMIC_SEQ_CST);
        uint64_t g = 0;
        assert_int_equal(keel__locktab_release(r->t, "one", tok, keel_now_ms(), &g), 0);
    }
}

static void test_threads_one_holder(void **state)
{
    (void)state;
    race r = {.t = keel__locktab_new(), .fencing_ok = 1};
    uv_mutex_init(&r.mu);
    uv_thread_t th[4];
    for (int i = 0; i < 4; i++)
        uv_thread_create(&th[i], racer, &r);
    for (int i = 0; i < 4; i++)
        uv_thread_join(&th[i]);
    assert_int_equal(r.max_holders, 1);
    assert_true(r.fencing_ok);
    assert_true(r.grants > 0);
    uv_mutex_destroy(&r.mu);
    keel__locktab_free(r.t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grant_held_release),
        cmocka_unit_test(test_ttl_and_extend),
        cmocka_unit_test(test_fencing_monotonic_many_names),
        cmocka_unit_test(test_threads_one_holder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
