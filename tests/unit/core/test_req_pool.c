/* test_req_pool.c — the worker's pool of recycled request objects
 * (src/core/req.c): a spike's requests are kept for reuse, then the
 * worker's sweep (keel__req_pool_trim, every 250 ms) gives them back down
 * to KEEL_REQ_POOL_KEEP, and keel_worker_stats_get shows the pool's size. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "core/server_internal.h"

static uint64_t pooled(const keel_worker *w)
{
    keel_server_stats st;
    keel_worker_stats_get(w, &st);
    assert_int_equal(st.requests_pooled, w->nfree_reqs);
    return st.requests_pooled;
}

static void test_pool_shrinks_after_a_spike(void **state)
{
    (void)state;
    keel_server *s = calloc(1, sizeof(*s));
    keel_worker *w = calloc(1, sizeof(*w));
    assert_non_null(s);
    assert_non_null(w);
    s->limits.max_headers = 100;
    w->srv = s;

    /* a spike: 1000 requests at once, then all done */
    enum { SPIKE = 1000 };
    keel_req **rs = calloc(SPIKE, sizeof(*rs));
    assert_non_null(rs);
    for (int i = 0; i < SPIKE; i++)
        rs[i] = keel__req_new(w, NULL);
    assert_int_equal(pooled(w), 0);
    for (int i = 0; i < SPIKE; i++)
        keel__req_release(rs[i]);
    assert_int_equal(pooled(w), SPIKE);

    /* reuse takes from the pool, allocates nothing */
    keel_req *again = keel__req_new(w, NULL);
    assert_int_equal(pooled(w), SPIKE - 1);
    keel__req_release(again);

    /* each sweep halves what is above the floor: back to it in 10 sweeps
     * (2.5 s), never below it */
    int sweeps = 0;
    while (pooled(w) > KEEL_REQ_POOL_KEEP) {
        uint64_t before = pooled(w);
        keel__req_pool_trim(w);
        assert_true(pooled(w) < before);
        assert_true(pooled(w) >= KEEL_REQ_POOL_KEEP);
        sweeps++;
    }
    assert_int_equal(pooled(w), KEEL_REQ_POOL_KEEP);
    assert_true(sweeps <= 10);
    keel__req_pool_trim(w);
    assert_int_equal(pooled(w), KEEL_REQ_POOL_KEEP);

    /* steady load below the floor: nothing is trimmed */
    keel_req *r = keel__req_new(w, NULL);
    keel__req_pool_trim(w);
    assert_int_equal(pooled(w), KEEL_REQ_POOL_KEEP - 1);
    keel__req_release(r);

    while (w->free_reqs) {
        keel_req *f = w->free_reqs;
        w->free_reqs = f->next_free;
        keel_free(f->headers);
        keel_buf_free(&f->res_headers);
        keel_free(f);
    }
    free(rs);
    free(w);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_pool_shrinks_after_a_spike)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
