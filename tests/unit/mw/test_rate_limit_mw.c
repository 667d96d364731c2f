/* test_rate_limit_mw.c — the limiter middleware in an in-process server
 * on a loopback port:
 * - every tier (general, strict, auth, public, custom, burst) refuses at
 *   its exact count with the right headers and lets the next request
 *   through once its (short) window allows;
 * - keys follow the authenticated subject (user id, API key id) that an
 *   auth middleware sets, else the address;
 * - security headers on 200, 429 and 500 responses;
 * - a store that answers later on the worker's loop (as the Redis store
 *   will): allowed, refused, store errors with RATE_LIMIT_FAIL_OPEN on and
 *   off, and a request whose deadline passes while the answer is due;
 * - the same with a store that checks both tiers in one operation
 *   (hit_chain, as the Redis store does). */
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
#include "testsrv.h"

/* ---------------------------------------------------------------- a slow store */

typedef struct slow_store {
    keel_rl_store inner;
    uint64_t delay_ms;
    int fail; /* answer errors */
    int answered;
    int chains; /* hit_chain calls (one per request with two checks) */
} slow_store;

typedef struct slow_hit {
    uv_timer_t timer;
    slow_store *st;
    char key[160];
    size_t keylen;
    keel_rl_rate rate;
    keel_rl_done_fn done;
    void *arg;
    /* hit_chain: the checks, answered by the inner store's hit() in turn */
    size_t n;
    char keys[2][160];
    size_t keylens[2];
    keel_rl_rate rates[2];
    keel_rl_chain_done_fn chain_done;
    size_t at;
    keel_rl_result res;
    int status;
} slow_hit;

static void hit_closed(uv_handle_t *h)
{
    keel_free(h->data);
}

static void chain_step(void *arg, int status, const keel_rl_result *res)
{
    slow_hit *h = arg;
    h->status = status;
    if (res)
        h->res = *res;
}

static void hit_fire(uv_timer_t *t)
{
    slow_hit *h = t->data;
    if (h->chain_done) {
        /* the reference semantics: in turn, stopping at the first refusal */
        size_t i = 0;
        for (; i < h->n; i++) {
            if (h->st->fail) {
                h->status = KEEL_EIO;
                break;
            }
            h->st->inner.hit(h->st->inner.self, NULL, h->keys[i], h->keylens[i], &h->rates[i],
                             chain_step, h);
            if (h->status < 0 || !h->res.allowed)
                break;
        }
        if (i == h->n)
            i = h->n - 1;
        h->chain_done(h->arg, h->status, h->status < 0 ? 0 : i,
                      h->status < 0 ? NULL : &h->res);
    } else if (h->st->fail)
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

static void slow_hit_chain_fn(void *self, keel_worker *w, const keel_rl_check *checks,
                              size_t n, keel_rl_chain_done_fn done, void *arg)
{
    assert_true(n >= 1 && n <= 2);
    slow_hit *h = keel_calloc(1, sizeof(*h));
    h->st = self;
    __atomic_fetch_add(&h->st->chains, 1, __ATOMIC_RELAXED);
    h->n = n;
    for (size_t i = 0; i < n; i++) {
        size_t kl = checks[i].keylen < sizeof(h->keys[i]) ? checks[i].keylen : sizeof(h->keys[i]);
        memcpy(h->keys[i], checks[i].key, kl);
        h->keylens[i] = kl;
        h->rates[i] = *checks[i].rate;
    }
    h->chain_done = done;
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

static keel_flow h_broken(keel_req *r)
{
    (void)r;
    return KEEL_DONE; /* no response: keel answers 500 */
}

static const keel_route routes[] = {
    {.name = "ok", .method = "GET", .path = "/ok", .handler = h_ok},
    {.name = "quick", .method = "GET", .path = "/quick", .handler = h_ok, .timeout_ms = 30},
    {.name = "strict", .method = "GET", .path = "/strict", .handler = h_ok, .rate_limit = "strict"},
    {.name = "auth", .method = "POST", .path = "/login", .handler = h_ok, .rate_limit = "auth"},
    {.name = "public", .method = "GET", .path = "/public", .handler = h_ok, .rate_limit = "public"},
    {.name = "reports", .method = "GET", .path = "/reports", .handler = h_ok,
     .rate_limit = "reports"},
    {.name = "free", .method = "GET", .path = "/free", .handler = h_ok, .rate_limit = "none"},
    {.name = "broken", .method = "GET", .path = "/broken", .handler = h_broken},
};
#define NROUTES (sizeof(routes) / sizeof(routes[0]))

/* A stand-in for the auth middleware: X-Test-User / X-Test-Key become
 * the subject the limiter keys by. */
static keel_flow fake_auth(keel_req *r, void *data)
{
    (void)data;
    keel_str u = keel_req_header(r, "x-test-user"), k = keel_req_header(r, "x-test-key");
    if (u.ptr)
        keel_req_set_local(r, KEEL_RL_SUBJECT,
                           keel_arena_printf(keel_req_arena(r), "user:%.*s", (int)u.len, u.ptr));
    else if (k.ptr)
        keel_req_set_local(r, KEEL_RL_SUBJECT,
                           keel_arena_printf(keel_req_arena(r), "apikey:%.*s", (int)k.len, k.ptr));
    return KEEL_NEXT;
}

static slow_store *store;

/* A server with tiers small enough to exhaust: general 2/1h (or
 * `general` when set), strict 3/900ms, auth 2/600ms, public 4/1200ms,
 * reports 1/300ms, burst as given: each refills one request every 300 ms,
 * far above a request's time even under a sanitizer. delay_ms > 0: the slow store. */
typedef struct opts {
    uint64_t delay_ms;
    int fail, fail_open;
    int chain; /* the slow store has hit_chain */
    const char *burst;
    const char *general; /* "N/window" */
} opts;

static keel_server *start_with(const opts *o)
{
    keel_config cfg;
    testsrv_config(&cfg);
    cfg.log_level = KEEL_LOG_ERROR;
    keel_rl_rate g = {2, 3600 * 1000};
    if (o->general)
        assert_int_equal(keel_rl_parse_rate(o->general, &g), 0);
    keel_rate_limit_options *rlo = keel_config_edit(&cfg, &keel_rate_limit_config);
    rlo->rate_limit_max = g.limit;
    rlo->rate_limit_window_ms = g.window_ms;
#define SET(f, v)                                                              \
    do {                                                                       \
        keel_free(rlo->f);                                                     \
        rlo->f = keel_strdup(v);                                               \
    } while (0)
    SET(rate_limit_burst, o->burst ? o->burst : "0");
    SET(rate_limit_strict, "3/900ms");
    SET(rate_limit_auth, "2/600ms");
    SET(rate_limit_public, "4/1200ms");
    SET(rate_limit_tiers, "reports=1/300ms");
#undef SET
    rlo->rate_limit_fail_open = o->fail_open;
    keel_server *s = testsrv_new(&cfg);
    keel_middleware auth = {.name = "fake_auth", .phase = KEEL_PHASE_AUTHN, .on_request = fake_auth};
    keel_server_use(s, &auth);
    keel_middleware sec = keel_mw_security_headers(&cfg);
    keel_server_use(s, &sec);
    keel_rl_store st = keel_rl_memory_store(1000);
    store = NULL;
    if (o->delay_ms) {
        store = keel_calloc(1, sizeof(*store));
        store->inner = st;
        store->delay_ms = o->delay_ms;
        store->fail = o->fail;
        st = (keel_rl_store){.name = "slow", .hit = slow_hit_fn, .free = slow_free, .self = store};
        if (o->chain)
            st.hit_chain = slow_hit_chain_fn;
    }
    keel_rate_limiter *rl = keel_rate_limiter_new(&cfg, st, NULL);
    const keel_route *ptrs[NROUTES];
    for (size_t i = 0; i < NROUTES; i++)
        ptrs[i] = &routes[i];
    assert_int_equal(keel_rate_limiter_check_routes(rl, ptrs, NROUTES, stderr), 0);
    keel_middleware m = keel_mw_rate_limit(rl);
    keel_server_use(s, &m);
    keel_config_close(&cfg);
    assert_int_equal(keel_server_add_routes(s, routes, NROUTES), 0);
    assert_int_equal(keel_server_start(s), 0);
    return s;
}

static keel_server *start(uint64_t delay_ms, int fail, int fail_open)
{
    opts o = {.delay_ms = delay_ms, .fail = fail, .fail_open = fail_open};
    return start_with(&o);
}

/* One request on a fresh connection; `extra` is more header lines. */
static void req(unsigned port, const char *method, const char *path, const char *extra,
                char *out, size_t cap)
{
    char req[512];
    snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: t\r\n%sConnection: close\r\n\r\n",
             method, path, extra ? extra : "");
    loopback_exchange(port, req, out, cap);
}

static void get(unsigned port, const char *path, char *out, size_t cap)
{
    req(port, "GET", path, NULL, out, cap);
}

static int has(const char *resp, const char *needle)
{
    return strstr(resp, needle) != NULL;
}

/* Runs `n` requests; checks the first `allowed` get 200 with the tier's
 * headers and the next one 429. */
static void exhaust(unsigned port, const char *method, const char *path, const char *extra,
                    int allowed, const char *policy)
{
    char buf[4096], want[64];
    for (int i = 0; i < allowed; i++) {
        req(port, method, path, extra, buf, sizeof(buf));
        if (loopback_status(buf) != 200)
            fail_msg("%s %s #%d: %s", method, path, i + 1, buf);
        snprintf(want, sizeof(want), "RateLimit-Remaining: %d\r\n", allowed - 1 - i);
        assert_true(has(buf, want));
        snprintf(want, sizeof(want), "RateLimit-Policy: %s\r\n", policy);
        assert_true(has(buf, want));
    }
    req(port, method, path, extra, buf, sizeof(buf));
    if (loopback_status(buf) != 429)
        fail_msg("%s %s #%d: %s", method, path, allowed + 1, buf);
    assert_true(has(buf, "Retry-After: "));
    assert_true(has(buf, "RateLimit-Remaining: 0\r\n"));
    assert_true(has(buf, "application/problem+json"));
}

static void test_each_tier_exact_count_and_reset(void **state)
{
    (void)state;
    keel_server *s = start(0, 0, 1);
    unsigned port = keel_server_port(s);
    /* refused at the count, allowed again once the window allows */
    exhaust(port, "GET", "/strict", NULL, 3, "3;w=1");
    exhaust(port, "POST", "/login", NULL, 2, "2;w=1");
    exhaust(port, "GET", "/public", NULL, 4, "4;w=2");
    exhaust(port, "GET", "/reports", NULL, 1, "1;w=1");
    exhaust(port, "GET", "/ok", NULL, 2, "2;w=3600");
    uv_sleep(700);
    char buf[4096];
    const char *again[] = {"/strict", "/public", "/reports"};
    for (size_t i = 0; i < 3; i++) {
        get(port, again[i], buf, sizeof(buf));
        assert_int_equal(loopback_status(buf), 200);
    }
    req(port, "POST", "/login", NULL, buf, sizeof(buf));
    assert_int_equal(loopback_status(buf), 200);
    /* the general tier's window is an hour: still refused */
    get(port, "/ok", buf, sizeof(buf));
    assert_int_equal(loopback_status(buf), 429);
    /* "none" is never limited */
    for (int i = 0; i < 10; i++) {
        get(port, "/free", buf, sizeof(buf));
        assert_int_equal(loopback_status(buf), 200);
        assert_false(has(buf, "RateLimit-Limit"));
    }
    testsrv_stop(s);
}

static void test_burst_tier_exact_and_reset(void **state)
{
    (void)state;
    opts o = {.fail_open = 1, .burst = "3/900ms", .general = "100/1h"};
    keel_server *s = start_with(&o);
    unsigned port = keel_server_port(s);
    char buf[4096];
    /* the burst budget spans routes */
    get(port, "/ok", buf, sizeof(buf));
    assert_int_equal(loopback_status(buf), 200);
    get(port, "/strict", buf, sizeof(buf));
    assert_int_equal(loopback_status(buf), 200);
    get(port, "/ok", buf, sizeof(buf));
    assert_int_equal(loopback_status(buf), 200);
    get(port, "/ok", buf, sizeof(buf));
    assert_int_equal(loopback_status(buf), 429);
    assert_true(has(buf, "\"tier\":\"burst\""));
    assert_true(has(buf, "RateLimit-Limit: 3\r\n"));
    uv_sleep(350);
    get(port, "/ok", buf, sizeof(buf));
    assert_int_equal(loopback_status(buf), 200);
    assert_true(has(buf, "RateLimit-Limit: 100\r\n")); /* headers: the route's tier */
    testsrv_stop(s);
}

static void test_keys_by_user_api_key_and_address(void **state)
{
    (void)state;
    keel_server *s = start(0, 0, 1);
    unsigned port = keel_server_port(s);
    /* same address, different subjects: separate budgets */
    exhaust(port, "GET", "/ok", "X-Test-User: alice\r\n", 2, "2;w=3600");
    exhaust(port, "GET", "/ok", "X-Test-User: bob\r\n", 2, "2;w=3600");
    exhaust(port, "GET", "/ok", "X-Test-Key: k1\r\n", 2, "2;w=3600");
    exhaust(port, "GET", "/ok", NULL, 2, "2;w=3600"); /* the address */
    char buf[4096];
    req(port, "GET", "/ok", "X-Test-User: alice\r\n", buf, sizeof(buf));
    assert_int_equal(loopback_status(buf), 429);
    /* a user named like a key is not that key */
    req(port, "GET", "/ok", "X-Test-User: k1\r\n", buf, sizeof(buf));
    assert_int_equal(loopback_status(buf), 200);
    testsrv_stop(s);
}

static void test_security_headers_on_200_429_500(void **state)
{
    (void)state;
    keel_server *s = start(0, 0, 1);
    unsigned port = keel_server_port(s);
    char buf[4096];
    const char *paths[] = {"/ok", "/ok", "/ok", "/broken"};
    const int want[] = {200, 200, 429, 429};
    for (int i = 0; i < 4; i++) {
        get(port, paths[i], buf, sizeof(buf));
        assert_int_equal(loopback_status(buf), want[i]);
        assert_true(has(buf, "X-Content-Type-Options: nosniff\r\n"));
        assert_true(has(buf, "Content-Security-Policy: default-src 'none'"));
        assert_true(has(buf, "X-Frame-Options: DENY\r\n"));
    }
    req(port, "GET", "/broken", "X-Test-User: carol\r\n", buf, sizeof(buf));
    assert_int_equal(loopback_status(buf), 500);
    assert_true(has(buf, "X-Content-Type-Options: nosniff\r\n"));
    assert_true(has(buf, "Content-Security-Policy: default-src 'none'"));
    assert_true(has(buf, "Referrer-Policy: no-referrer\r\n"));
    testsrv_stop(s);
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
    testsrv_stop(s);
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
    testsrv_stop(s);
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
    testsrv_stop(s);
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
    testsrv_stop(s);
}

/* A store with hit_chain (as the Redis store): the burst tier and the
 * route's in one operation, answered later on the loop; the same counts,
 * refusals and headers as checked one by one. */
static void test_chain_burst_then_route(void **state)
{
    (void)state;
    opts o = {.delay_ms = 5, .fail_open = 1, .chain = 1, .burst = "3/900ms",
              .general = "100/1h"};
    keel_server *s = start_with(&o);
    unsigned port = keel_server_port(s);
    char buf[4096];
    get(port, "/ok", buf, sizeof(buf));
    assert_int_equal(loopback_status(buf), 200);
    assert_true(has(buf, "RateLimit-Limit: 100\r\n")); /* headers: the route's tier */
    assert_true(has(buf, "RateLimit-Remaining: 99\r\n"));
    get(port, "/strict", buf, sizeof(buf));
    assert_int_equal(loopback_status(buf), 200);
    assert_true(has(buf, "RateLimit-Limit: 3\r\n")); /* strict: 3/900ms */
    get(port, "/ok", buf, sizeof(buf));
    assert_int_equal(loopback_status(buf), 200);
    get(port, "/ok", buf, sizeof(buf));
    assert_int_equal(loopback_status(buf), 429);
    assert_true(has(buf, "\"tier\":\"burst\""));
    assert_true(has(buf, "RateLimit-Limit: 3\r\n"));
    assert_int_equal(store->chains, 4); /* one store operation per request */
    uv_sleep(950); /* the whole burst quota is back */
    /* the route's tier refusing: reports 1/300ms, while burst 3/900ms allows */
    get(port, "/reports", buf, sizeof(buf));
    assert_int_equal(loopback_status(buf), 200);
    get(port, "/reports", buf, sizeof(buf));
    assert_int_equal(loopback_status(buf), 429);
    assert_true(has(buf, "\"tier\":\"reports\""));
    /* ... which was charged to the burst tier (checked first): one more
     * request fits it, not two */
    get(port, "/ok", buf, sizeof(buf));
    assert_int_equal(loopback_status(buf), 200);
    get(port, "/ok", buf, sizeof(buf));
    assert_int_equal(loopback_status(buf), 429);
    assert_true(has(buf, "\"tier\":\"burst\""));
    testsrv_stop(s);
}

static void test_chain_store_error_fail_open_and_closed(void **state)
{
    (void)state;
    opts o = {.delay_ms = 5, .fail = 1, .fail_open = 1, .chain = 1, .burst = "3/900ms"};
    keel_server *s = start_with(&o);
    char buf[4096];
    for (int i = 0; i < 4; i++) {
        get(keel_server_port(s), "/ok", buf, sizeof(buf));
        assert_non_null(strstr(buf, "HTTP/1.1 200 OK"));
        assert_null(strstr(buf, "RateLimit-Limit"));
    }
    assert_int_equal(store->chains, 4);
    testsrv_stop(s);
    o.fail_open = 0;
    s = start_with(&o);
    get(keel_server_port(s), "/ok", buf, sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 503 Service Unavailable"));
    assert_non_null(strstr(buf, "rate limiter is unavailable"));
    testsrv_stop(s);
}

static void test_chain_deadline_while_pending(void **state)
{
    (void)state;
    opts o = {.delay_ms = 400, .fail_open = 1, .chain = 1, .burst = "3/900ms"};
    keel_server *s = start_with(&o);
    char buf[4096];
    get(keel_server_port(s), "/quick", buf, sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 503"));
    for (int i = 0; i < 100 && __atomic_load_n(&store->answered, __ATOMIC_RELAXED) < 1; i++)
        uv_sleep(10);
    assert_int_equal(store->answered, 1);
    testsrv_stop(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_tier_exact_count_and_reset),
        cmocka_unit_test(test_burst_tier_exact_and_reset),
        cmocka_unit_test(test_keys_by_user_api_key_and_address),
        cmocka_unit_test(test_security_headers_on_200_429_500),
        cmocka_unit_test(test_deferred_allow_then_refuse),
        cmocka_unit_test(test_store_error_fail_open),
        cmocka_unit_test(test_store_error_fail_closed),
        cmocka_unit_test(test_deadline_while_store_pending),
        cmocka_unit_test(test_chain_burst_then_route),
        cmocka_unit_test(test_chain_store_error_fail_open_and_closed),
        cmocka_unit_test(test_chain_deadline_while_pending),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
