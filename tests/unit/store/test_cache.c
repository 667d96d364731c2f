/* test_cache.c — the in-process cache store (src/store/cache_mem.c):
 * expiry, entry and byte bounds, LRU eviction order, replacement; and
 * keel_cache_fetch's single-flight on a real two-worker server: 50
 * concurrent requests for one uncached key run the loader once, requests
 * that end while they wait are safe, and the server drains clean. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include "loopback.h"
#include "testsrv.h"

#include "keel/keel.h"
#include "store/cache_internal.h"

/* ---------------------------------------------------------------- the LRU */

static int has(keel__cache_mem *m, const char *k, uint64_t now)
{
    size_t len;
    char *v = keel__cache_mem_get(m, k, strlen(k), now, &len);
    keel_free(v);
    return v != NULL;
}

static void set(keel__cache_mem *m, const char *k, const char *v, uint64_t exp)
{
    assert_int_equal(keel__cache_mem_set(m, k, strlen(k), v, strlen(v), exp), 0);
}

static void test_get_set_expiry(void **state)
{
    (void)state;
    keel__cache_mem *m = keel__cache_mem_new(4, 100, 1 << 20);
    set(m, "a", "{\"x\":1}", 1000);
    set(m, "b", "2", 0); /* never expires */
    size_t len = 0;
    char *v = keel__cache_mem_get(m, "a", 1, 999, &len);
    assert_non_null(v);
    assert_string_equal(v, "{\"x\":1}");
    assert_int_equal(len, 7);
    keel_free(v);
    assert_false(has(m, "a", 1000)); /* expired at its deadline, and removed */
    assert_int_equal(keel__cache_mem_count(m), 1);
    assert_true(has(m, "b", UINT64_MAX - 1));
    assert_false(has(m, "nope", 0));
    /* replace: one entry, the new value, bytes accounted once */
    set(m, "b", "333", 0);
    assert_int_equal(keel__cache_mem_count(m), 1);
    assert_int_equal(keel__cache_mem_bytes(m), keel__cache_mem_entry_size(1, 3));
    v = keel__cache_mem_get(m, "b", 1, 0, &len);
    assert_string_equal(v, "333");
    keel_free(v);
    /* delete: 1 when there, 0 when not (or expired) */
    assert_int_equal(keel__cache_mem_del(m, "b", 1, 0), 1);
    assert_int_equal(keel__cache_mem_del(m, "b", 1, 0), 0);
    set(m, "c", "1", 10);
    assert_int_equal(keel__cache_mem_del(m, "c", 1, 10), 0);
    assert_int_equal(keel__cache_mem_count(m), 0);
    assert_int_equal(keel__cache_mem_bytes(m), 0);
    keel__cache_mem_free(m);
}

static void test_lru_eviction_order(void **state)
{
    (void)state;
    keel__cache_mem *m = keel__cache_mem_new(1, 3, 1 << 20);
    set(m, "a", "1", 0);
    set(m, "b", "1", 0);
    set(m, "c", "1", 0);
    assert_true(has(m, "a", 0)); /* a is now the most recent: b is the oldest */
    set(m, "d", "1", 0);
    assert_int_equal(keel__cache_mem_count(m), 3);
    assert_false(has(m, "b", 0));
    assert_true(has(m, "a", 0) && has(m, "c", 0) && has(m, "d", 0));
    assert_int_equal(keel__cache_mem_evictions(m), 1);
    keel__cache_mem_free(m);
}

static void test_byte_bound(void **state)
{
    (void)state;
    size_t one = keel__cache_mem_entry_size(2, 10);
    keel__cache_mem *m = keel__cache_mem_new(1, 1000, 3 * one);
    char k[3];
    for (int i = 0; i < 10; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        set(m, k, "0123456789", 0);
        assert_true(keel__cache_mem_bytes(m) <= 3 * one);
    }
    assert_int_equal(keel__cache_mem_count(m), 3);
    assert_true(has(m, "k9", 0) && has(m, "k8", 0) && has(m, "k7", 0));
    /* one value bigger than the whole store is refused, nothing evicted */
    char big[200];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(keel__cache_mem_set(m, "z", 1, big, strlen(big), 0), KEEL_ETOOBIG);
    assert_int_equal(keel__cache_mem_count(m), 3);
    keel__cache_mem_free(m);
}

static void test_sharded_bounds_hold(void **state)
{
    (void)state;
    keel__cache_mem *m = keel__cache_mem_new(16, 64, 1 << 20);
    char k[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(k, sizeof(k), "key-%d", i);
        set(m, k, "v", 0);
    }
    assert_true(keel__cache_mem_count(m) <= 64);
    assert_true(keel__cache_mem_count(m) >= 16);
    assert_true(keel__cache_mem_evictions(m) >= 5000 - 64);
    assert_true(has(m, "key-4999", 0)); /* the newest is always kept */
    keel__cache_mem_free(m);
    /* fewer entries than shards: still bounded */
    m = keel__cache_mem_new(16, 2, 1 << 20);
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof(k), "key-%d", i);
        set(m, k, "v", 0);
    }
    assert_true(keel__cache_mem_count(m) <= 2);
    keel__cache_mem_free(m);
}

/* ---------------------------------------------------------------- the API */

static void on_get(void *arg, int status, json_t *v)
{
    json_t **out = arg;
    assert_int_equal(status, 0);
    *out = v ? json_incref(v) : NULL;
}

static void on_done(void *arg, int status)
{
    *(int *)arg = status;
}

static void test_api_in_process(void **state)
{
    (void)state;
    keel_config cfg;
    keel_config_defaults(&cfg);
    keel_metrics *mx = keel_metrics_new(1);
    keel_cache *c = keel_cache_new(&cfg, NULL, mx);
    assert_false(keel_cache_is_shared(c));
    json_t *v = json_pack("{s:[i,s]}", "a", 1, "b"), *got = NULL;
    int st = 1;
    assert_int_equal(keel_cache_set(c, NULL, "t", "k", v, 0, on_done, &st), 0);
    assert_int_equal(st, 0);
    assert_int_equal(keel_cache_get(c, NULL, "t", "k", on_get, &got), 0);
    assert_true(json_equal(got, v));
    json_decref(got);
    assert_int_equal(keel_cache_get(c, NULL, "other", "k", on_get, &got), 0); /* namespaced */
    assert_null(got);
    assert_int_equal(keel_cache_del(c, NULL, "t", "k", on_done, &st), 0);
    assert_int_equal(st, 0);
    assert_int_equal(keel_cache_del(c, NULL, "t", "k", on_done, &st), 0);
    assert_int_equal(st, KEEL_ENOTFOUND);
    /* bad namespaces and keys */
    assert_int_equal(keel_cache_get(c, NULL, "Bad NS", "k", on_get, &got), KEEL_EINVAL);
    assert_int_equal(keel_cache_get(c, NULL, "t", "a b", on_get, &got), KEEL_EINVAL);
    assert_int_equal(keel_cache_get(c, NULL, "t", "", on_get, &got), KEEL_EINVAL);
    /* a TTL of 1 ms runs out */
    assert_int_equal(keel_cache_set(c, NULL, "t", "short", v, 1, NULL, NULL), 0);
    usleep(5000);
    assert_int_equal(keel_cache_get(c, NULL, "t", "short", on_get, &got), 0);
    assert_null(got);
    keel_buf b = {0};
    keel_metrics_render(mx, &b);
    keel_buf_append(&b, "", 1);
    assert_non_null(strstr(b.data, "cache_hits_total{ns=\"t\"} 1"));
    assert_non_null(strstr(b.data, "cache_misses_total{ns=\"other\"} 1"));
    keel_buf_free(&b);
    json_decref(v);
    keel_cache_free(c);
    keel_metrics_free(mx);
    keel_config_close(&cfg);
}

/* ---------------------------------------------------------------- single-flight */

static keel_cache *cache;
static int loads;      /* loader runs */
static int canceled;   /* fetch answers with KEEL_ECANCELED */
static uint64_t load_ms = 150;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

typedef struct slow {
    uv_timer_t t;
    keel_req *r;
    keel_cache_flight *f;
} slow;

static void slow_closed(uv_handle_t *h)
{
    keel_free(h->data);
}

static void slow_fire(uv_timer_t *t)
{
    slow *s = t->data;
    /* a loader whose request ended hands over (the next waiter loads) */
    if (keel_req_is_finished(s->r)) {
        keel_cache_loaded(s->f, KEEL_ECANCELED, NULL);
    } else {
        json_t *v = json_pack("{s:s}", "answer", "forty-two");
        keel_cache_loaded(s->f, 0, v);
        json_decref(v);
    }
    keel_req_unhold(s->r);
    uv_close((uv_handle_t *)&s->t, slow_closed);
}

static void slow_load(keel_req *r, void *arg, keel_cache_flight *f)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    loads++;
    pthread_mutex_unlock(&mu);
    slow *s = keel_calloc(1, sizeof(*s));
    s->r = r;
    s->f = f;
    keel_req_hold(r); /* the timer outlives a request that ends */
    uv_timer_init(keel_worker_loop(keel_req_worker(r)), &s->t);
    s->t.data = s;
    uv_timer_start(&s->t, slow_fire, load_ms, 0);
}

static void fetched(keel_req *r, void *arg, int status, json_t *v)
{
    (void)arg;
    if (status == KEEL_ECANCELED) {
        pthread_mutex_lock(&mu);
        canceled++;
        pthread_mutex_unlock(&mu);
        return;
    }
    assert_int_equal(status, 0);
    keel_respond_json(r, 200, json_incref(v));
}

static keel_flow h_fetch(keel_req *r)
{
    keel_str k = keel_req_param(r, "key");
    char key[64];
    snprintf(key, sizeof(key), "%.*s", (int)k.len, k.ptr);
    assert_int_equal(keel_cache_fetch(cache, r, "sf", key, 60000, slow_load, fetched, NULL), 0);
    return keel_req_is_finished(r) ? KEEL_DONE : KEEL_SUSPEND;
}

static const keel_route routes[] = {
    {.name = "fetch", .method = "GET", .path = "/f/:key", .handler = h_fetch},
    {.name = "fetch_short", .method = "GET", .path = "/short/:key", .handler = h_fetch,
     .timeout_ms = 40},
};

static keel_server *start(keel_config *cfg)
{
    testsrv_config(cfg);
    cfg->workers = 2;
    cfg->log_level = KEEL_LOG_ERROR;
    keel_server *s = testsrv_new(cfg);
    cache = keel_cache_new(cfg, NULL, NULL);
    assert_int_equal(keel_server_add_routes(s, routes, 2), 0);
    assert_int_equal(keel_server_start(s), 0);
    loads = canceled = 0;
    return s;
}

static void stop(keel_server *s, keel_config *cfg)
{
    testsrv_drain(s);
    keel_server_free(s);
    keel_cache_free(cache);
    keel_config_close(cfg);
    keel_log_close();
}

/* n requests at once, each on its own connection; statuses and bodies. */
static void burst(unsigned port, const char *path, int n, int *status, char (*bodies)[512])
{
    int fds[64];
    for (int i = 0; i < n; i++)
        fds[i] = connect_to(port, 10);
    for (int i = 0; i < n; i++)
        loopback_send_get(fds[i], path);
    for (int i = 0; i < n; i++) {
        char buf[4096];
        status[i] = loopback_read_status(fds[i], buf, sizeof(buf));
        const char *body = strstr(buf, "\r\n\r\n");
        snprintf(bodies[i], 512, "%s", body ? body + 4 : "");
    }
}

static void test_single_flight_fifty_requests_one_load(void **state)
{
    (void)state;
    keel_config cfg;
    keel_server *s = start(&cfg);
    int st[50];
    static char bodies[50][512];
    load_ms = 150;
    burst(keel_server_port(s), "/f/hot", 50, st, bodies);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(st[i], 200);
        assert_non_null(strstr(bodies[i], "forty-two"));
    }
    assert_int_equal(loads, 1);
    /* stored: the next ones are hits */
    burst(keel_server_port(s), "/f/hot", 5, st, bodies);
    assert_int_equal(loads, 1);
    /* another key loads once more */
    burst(keel_server_port(s), "/f/cold", 10, st, bodies);
    assert_int_equal(loads, 2);
    stop(s, &cfg);
}

static void test_requests_ending_while_waiting_are_safe(void **state)
{
    (void)state;
    keel_config cfg;
    keel_server *s = start(&cfg);
    int st[20];
    static char bodies[20][512];
    load_ms = 800; /* far past the route's 40 ms deadline (checked every 250 ms) */
    burst(keel_server_port(s), "/short/late", 20, st, bodies);
    for (int i = 0; i < 20; i++)
        if (st[i] < 500)
            fail_msg("#%d: %d %s", i, st[i], bodies[i]);
    /* the load finishes after every request ended: each is answered
     * KEEL_ECANCELED and released; the leader's loader hands over to
     * waiters that all ended too, and the flight ends */
    for (int i = 0; i < 300 && canceled < 20; i++)
        usleep(10000);
    assert_int_equal(canceled, 20);
    assert_int_equal(loads, 1);
    /* nothing was stored and no flight is left: a new fetch loads again */
    load_ms = 1;
    burst(keel_server_port(s), "/f/late", 3, st, bodies);
    for (int i = 0; i < 3; i++)
        assert_int_equal(st[i], 200);
    assert_int_equal(loads, 2);
    stop(s, &cfg);
}

/* Each worker keeps the values it parsed: hits need no parse, and any
 * write — a delete or a set of this key from another thread, even a set
 * of another key — is seen by the very next read. */
static void test_kept_values_follow_every_write(void **state)
{
    (void)state;
    keel_config cfg;
    keel_server *s = start(&cfg);
    int st[10];
    static char bodies[10][512];
    load_ms = 1;
    burst(keel_server_port(s), "/f/k", 1, st, bodies);
    assert_int_equal(loads, 1);
    for (int round = 0; round < 3; round++) { /* kept per worker: still one load */
        burst(keel_server_port(s), "/f/k", 10, st, bodies);
        for (int i = 0; i < 10; i++)
            assert_non_null(strstr(bodies[i], "forty-two"));
    }
    assert_int_equal(loads, 1);
    /* a set from another thread: the next reads answer the new value */
    json_t *v = json_pack("{s:s}", "answer", "changed");
    assert_int_equal(keel_cache_set(cache, NULL, "sf", "k", v, 60000, NULL, NULL), 0);
    json_decref(v);
    burst(keel_server_port(s), "/f/k", 10, st, bodies);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(st[i], 200);
        if (!strstr(bodies[i], "changed"))
            fail_msg("#%d answered a kept value after a set: %s", i, bodies[i]);
    }
    assert_int_equal(loads, 1);
    /* a delete: the next read loads again */
    assert_int_equal(keel_cache_del(cache, NULL, "sf", "k", NULL, NULL), 0);
    burst(keel_server_port(s), "/f/k", 1, st, bodies);
    assert_int_equal(loads, 2);
    assert_non_null(strstr(bodies[0], "forty-two"));
    stop(s, &cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_set_expiry),
        cmocka_unit_test(test_lru_eviction_order),
        cmocka_unit_test(test_byte_bound),
        cmocka_unit_test(test_sharded_bounds_hold),
        cmocka_unit_test(test_api_in_process),
        cmocka_unit_test(test_single_flight_fifty_requests_one_load),
        cmocka_unit_test(test_requests_ending_while_waiting_are_safe),
        cmocka_unit_test(test_kept_values_follow_every_write),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
