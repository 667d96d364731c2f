/* test_rate_limit_async.c — the limiter middleware with a store that
 * answers later on the worker's loop (as the Redis store will): allowed,
 * refused, store errors with RATE_LIMIT_FAIL_OPEN on and off, and a
 * request whose deadline passes while the store has not answered. An
 * in-process server on a loopback port. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include <cmocka.h>

#include "keel/keel.h"

#include "loopback.h"

/* ---------------------------------------------------------------- a slow store */

typedef struct slow_store {
    keel_rl_store inner;
    uint64_t delay_ms;
    int fail; /* answer errors */
    int answered;
} slow_store;

typedef struct slow_hit {
    uv_timer_t timer;
    slow_store *st;
    char key[160];
    size_t keylen;
    keel_rl_rate rate;
    keel_rl_done_fn done;
    void *arg;
} slow_hit;

static void hit_closed(uv_handle_t *h)
{
    keel_free(h->data);
}

static void hit_fire(uv_timer_t *t)
{
    slow_hit *h = t->data;
    if (h->st->fail)
        h->done(h->arg, KEEL_EIO, NULL);
    else
        h->st->inner.hit(h->st->inner.self, NULL, h->key, h->keylen, &h->rate, h->done, h->arg);
    __atomic_fetch_add(&h->st->answered, 1, __ATOMIC_RELAXED);
    uv_close((uv_handle_t *)t, hit_closed);
}

static void slow_hit_fn(void *self, keel_worker *w, const char *key, size_t keylen,
                        const keel_rl_rate *rate, keel_rl_done_fn done, void *arg)
{
    slow_hit *h = keel_calloc(1, sizeof(*h));
    h->st = self;
    memcpy(h->key, key, keylen < sizeof(h->key) ? keylen : sizeof(h->key));
    h->keylen = keylen < sizeof(h->key) ? keylen : sizeof(h->key);
    h->rate = *rate;
    h->done = done;
    h->arg = arg;
    uv_timer_init(keel_worker_loop(w), &h->timer);
    h->timer.data = h;
    uv_timer_start(&h->timer, hit_fire, h->st->delay_ms, 0);
}

static void slow_free(void *self)
{
    slow_store *st = self;
    st->inner.free(st->inner.self);
    keel_free(st);
}

/* ---------------------------------------------------------------- server */

static keel_flow h_ok(keel_req *r)
{
    keel_respond_text(r, 200, "ok");
    return KEEL_DONE;
}

static const keel_route routes[] = {
    {.name = "ok", .method = "GET", .path = "/ok", .handler = h_ok},
    {.name = "quick", .method = "GET", .path = "/quick", .handler = h_ok, .timeout_ms = 30},
};

static slow_store *store;

static keel_server *start(uint64_t delay_ms, int fail, int fail_open)
{
    keel_config cfg;
    keel_config_defaults(&cfg);
    keel_free(cfg.host);
    cfg.host = keel_strdup("127.0.0.1");
    cfg.port = 0;
    cfg.workers = 1;
    cfg.log_level = KEEL_LOG_ERROR;
    cfg.rate_limit_max = 2;
    cfg.rate_limit_window_ms = 3600 * 1000;
    keel_free(cfg.rate_limit_burst);
    cfg.rate_limit_burst = keel_strdup("0");
    cfg.rate_limit_fail_open = fail_open;
    keel_log_init(&cfg);
    keel_server *s = keel_server_new(&cfg);
    store = keel_calloc(1, sizeof(*store));
    store->inner = keel_rl_memory_store(100);
    store->delay_ms = delay_ms;
    store->fail = fail;
    keel_rl_store st = {.name = "slow", .hit = slow_hit_fn, .free = slow_free, .self = store};
    keel_middleware m = keel_mw_rate_limit(keel_rate_limiter_new(&cfg, st, NULL));
    keel_server_use(s, &m);
    keel_config_close(&cfg);
    assert_int_equal(keel_server_add_routes(s, routes, 2), 0);
    assert_int_equal(keel_server_start(s), 0);
    return s;
}

static void stop(keel_server *s)
{
    keel_server_drain(s);
    assert_int_equal(keel_server_wait(s, 5000), 0);
    keel_server_free(s);
    keel_log_close();
}

static void get(unsigned port, const char *path, char *out, size_t cap)
{
    char req[256];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", path);
    int fd = connect_to(port, 5);
    assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    size_t n = 0;
    ssize_t k;
    while (n + 1 < cap && (k = read(fd, out + n, cap - n - 1)) > 0)
        n += (size_t)k;
    out[n] = '\0';
    close(fd);
}

static void test_deferred_allow_then_refuse(void **state)
{
    (void)state;
    keel_server *s = start(20, 0, 1);
    char buf[4096];
    get(keel_server_port(s), "/ok", buf, sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 200 OK"));
    assert_non_null(strstr(buf, "RateLimit-Remaining: 1\r\n"));
    get(keel_server_port(s), "/ok", buf, sizeof(buf));
    assert_non_null(strstr(buf, "RateLimit-Remaining: 0\r\n"));
    get(keel_server_port(s), "/ok", buf, sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 429 Too Many Requests"));
    assert_non_null(strstr(buf, "Retry-After: "));
    assert_int_equal(store->answered, 3);
    stop(s);
}

static void test_store_error_fail_open(void **state)
{
    (void)state;
    keel_server *s = start(5, 1, 1);
    char buf[4096];
    for (int i = 0; i < 4; i++) {
        get(keel_server_port(s), "/ok", buf, sizeof(buf));
        assert_non_null(strstr(buf, "HTTP/1.1 200 OK"));
        assert_null(strstr(buf, "RateLimit-Limit"));
    }
    stop(s);
}

static void test_store_error_fail_closed(void **state)
{
    (void)state;
    keel_server *s = start(5, 1, 0);
    char buf[4096];
    get(keel_server_port(s), "/ok", buf, sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 503 Service Unavailable"));
    assert_non_null(strstr(buf, "Retry-After: 1"));
    assert_non_null(strstr(buf, "rate limiter is unavailable"));
    stop(s);
}

static void test_deadline_while_store_pending(void **state)
{
    (void)state;
    /* the route's 30 ms deadline passes long before the 400 ms answer */
    keel_server *s = start(400, 0, 1);
    char buf[4096];
    get(keel_server_port(s), "/quick", buf, sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 503"));
    /* the late answer arrives on a finished request: dropped, no crash */
    for (int i = 0; i < 100 && __atomic_load_n(&store->answered, __ATOMIC_RELAXED) < 1; i++)
        uv_sleep(10);
    assert_int_equal(store->answered, 1);
    stop(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deferred_allow_then_refuse),
        cmocka_unit_test(test_store_error_fail_open),
        cmocka_unit_test(test_store_error_fail_closed),
        cmocka_unit_test(test_deadline_while_store_pending),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
