/* test_trace.c — tracing (src/obs/trace.c): traceparent and tracestate
 * parsing as tables of valid and invalid vectors, the samplers (the
 * ratio decided from the trace id alone), k=v lists; then an in-process
 * server with the tracer and an exporter table of the test's own (the
 * real OTLP receiver is in tests/e2e/test_tracing.py): span structure and
 * the OTLP JSON encoding, batching, the bounded queue, retries after
 * 503 + Retry-After, partialSuccess, and the leftovers sent at shutdown. */
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "keel/keel.h"
#include "loopback.h"
#include "obs/trace_internal.h"
#include "testsrv.h"

/* ---------------------------------------------------------------- traceparent */

static const char *const valid_tp[] = {
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    "00-00000000000000000000000000000001-0000000000000001-ff",
    /* a later version may add fields after a '-' */
    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever",
    "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09",
};

static const char *const invalid_tp[] = {
    "",
    "garbage",
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* version ff */
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  /* zero trace id */
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  /* zero parent */
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  /* uppercase */
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
    "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* uppercase version */
    "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",   /* short trace id */
    "00-4bf92f3577b34da6a3ce929d0e0e47366-0f067aa0ba902b7-01",  /* misplaced dash */
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", /* 00 with more */
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ", /* trailing space */
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",     /* no flags */
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",  /* bad flags */
    "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* bad separator */
    "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", /* later version, no dash */
    "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
};

static void test_traceparent_vectors(void **state)
{
    (void)state;
    keel_trace_ctx c;
    for (size_t i = 0; i < sizeof(valid_tp) / sizeof(valid_tp[0]); i++) {
        if (keel_traceparent_parse(valid_tp[i], strlen(valid_tp[i]), &c) != 0)
            fail_msg("refused a valid traceparent: %s", valid_tp[i]);
    }
    for (size_t i = 0; i < sizeof(invalid_tp) / sizeof(invalid_tp[0]); i++) {
        if (keel_traceparent_parse(invalid_tp[i], strlen(invalid_tp[i]), &c) == 0)
            fail_msg("accepted an invalid traceparent: \"%s\"", invalid_tp[i]);
    }
    assert_int_equal(keel_traceparent_parse(NULL, 0, &c), KEEL_EINVAL);
    /* fields and the round trip */
    assert_int_equal(keel_traceparent_parse(valid_tp[0], 55, &c), 0);
    assert_int_equal(c.trace_id[0], 0x4b);
    assert_int_equal(c.trace_id[15], 0x36);
    assert_int_equal(c.span_id[7], 0xb7);
    assert_int_equal(c.flags, 1);
    char out[56];
    keel_traceparent_format(&c, out);
    assert_string_equal(out, valid_tp[0]);
    /* a later version is read as version 00 */
    assert_int_equal(keel_traceparent_parse(valid_tp[3], strlen(valid_tp[3]), &c), 0);
    keel_traceparent_format(&c, out);
    assert_string_equal(out, valid_tp[0]);
}

static void test_tracestate(void **state)
{
    (void)state;
    static const char *const ok[] = {"congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
                                     " a=1 , b=2 ", "a=1,,b=2"};
    static const char *const bad[] = {"", "novalue", "=x", "a=", "a=1\x01", "a=\xc3\xa9",
                                      " \t\t", ","};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        if (!keel_tracestate_valid(ok[i], strlen(ok[i])))
            fail_msg("refused tracestate \"%s\"", ok[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (keel_tracestate_valid(bad[i], strlen(bad[i])))
            fail_msg("accepted tracestate \"%s\"", bad[i]);
    char many[1024] = "";
    for (int i = 0; i < 33; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), "%sk%d=v", i ? "," : "", i);
    assert_false(keel_tracestate_valid(many, strlen(many))); /* 33 members */
    char longv[600];
    memset(longv, 'a', sizeof(longv));
    longv[0] = 'k';
    longv[1] = '=';
    assert_false(keel_tracestate_valid(longv, sizeof(longv))); /* over 512 */
}

/* ---------------------------------------------------------------- sampler */

static void id_with_low(uint8_t id[16], uint64_t low)
{
    memset(id, 0xab, 8);
    for (int i = 15; i >= 8; i--) {
        id[i] = (uint8_t)(low & 0xff);
        low >>= 8;
    }
}

static void test_sampler(void **state)
{
    (void)state;
    uint8_t id[16];
    id_with_low(id, 1);
    /* roots */
    assert_int_equal(keel_sampler_decide(KEEL_SAMPLER_ALWAYS_ON, 0, id, 0, 0), 1);
    assert_int_equal(keel_sampler_decide(KEEL_SAMPLER_ALWAYS_OFF, 1, id, 0, 0), 0);
    assert_int_equal(keel_sampler_decide(KEEL_SAMPLER_PARENT_ALWAYS_ON, 0, id, 0, 0), 1);
    assert_int_equal(keel_sampler_decide(KEEL_SAMPLER_PARENT_ALWAYS_OFF, 1, id, 0, 0), 0);
    /* the ratio: |last 8 bytes as int64| < ratio * INT64_MAX */
    assert_int_equal(keel_sampler_decide(KEEL_SAMPLER_RATIO, 0.0, id, 0, 0), 0);
    assert_int_equal(keel_sampler_decide(KEEL_SAMPLER_RATIO, 1.0, id, 0, 0), 1);
    assert_int_equal(keel_sampler_decide(KEEL_SAMPLER_RATIO, 0.5, id, 0, 0), 1);
    id_with_low(id, 0x7fffffffffffffffull);
    assert_int_equal(keel_sampler_decide(KEEL_SAMPLER_RATIO, 0.5, id, 0, 0), 0);
    id_with_low(id, 0x3fffffffffffffffull); /* just under half */
    assert_int_equal(keel_sampler_decide(KEEL_SAMPLER_RATIO, 0.5, id, 0, 0), 1);
    id_with_low(id, 0xc000000000000001ull); /* negative: its absolute value, just under half */
    assert_int_equal(keel_sampler_decide(KEEL_SAMPLER_RATIO, 0.5, id, 0, 0), 1);
    id_with_low(id, 0x8000000000000000ull); /* INT64_MIN */
    assert_int_equal(keel_sampler_decide(KEEL_SAMPLER_RATIO, 0.5, id, 0, 0), 0);
    /* parent-based: the parent's flag wins over the root sampler */
    id_with_low(id, 0x7fffffffffffffffull);
    assert_int_equal(keel_sampler_decide(KEEL_SAMPLER_PARENT_RATIO, 0.0, id, 1, 1), 1);
    assert_int_equal(keel_sampler_decide(KEEL_SAMPLER_PARENT_RATIO, 1.0, id, 1, 0), 0);
    assert_int_equal(keel_sampler_decide(KEEL_SAMPLER_PARENT_ALWAYS_ON, 1.0, id, 1, 0), 0);
    assert_int_equal(keel_sampler_decide(KEEL_SAMPLER_PARENT_ALWAYS_OFF, 0.0, id, 1, 1), 1);
    assert_int_equal(keel_sampler_decide(KEEL_SAMPLER_PARENT_RATIO, 0.5, id, 0, 0), 0);
    /* a non-parent-based sampler ignores the parent */
    assert_int_equal(keel_sampler_decide(KEEL_SAMPLER_ALWAYS_OFF, 1.0, id, 1, 1), 0);
    /* statistically: about a quarter of spread ids */
    uint64_t x = 0x9e3779b97f4a7c15ull;
    int n = 0;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        id_with_low(id, x);
        n += keel_sampler_decide(KEEL_SAMPLER_RATIO, 0.25, id, 0, 0);
    }
    assert_in_range(n, 4500, 5500);
}

/* ---------------------------------------------------------------- k=v */

static void kv_collect(const char *k, const char *v, void *arg)
{
    keel_buf *b = arg;
    keel_buf_printf(b, "[%s|%s]", k, v);
}

static void test_kv_lists(void **state)
{
    (void)state;
    keel_buf b = {0};
    assert_int_equal(keel_trace_kv_parse(" a = 1 ,b=x%20y%2Cz, c%3D=%e2%82%ac ", kv_collect, &b), 0);
    keel_buf_append(&b, "", 1);
    assert_string_equal(b.data, "[a|1][b|x y,z][c=|\xe2\x82\xac]");
    b.len = 0;
    assert_int_equal(keel_trace_kv_parse("", kv_collect, &b), 0);
    assert_int_equal(b.len, 0);
    assert_int_equal(keel_trace_kv_parse("a=1,novalue", NULL, NULL), KEEL_EINVAL);
    assert_int_equal(keel_trace_kv_parse("=1", NULL, NULL), KEEL_EINVAL);
    assert_int_equal(keel_trace_kv_parse("a=%zz", NULL, NULL), KEEL_EINVAL);
    assert_int_equal(keel_trace_kv_parse("a=%4", NULL, NULL), KEEL_EINVAL);
    /* found by fuzz_traceparent: %00 made an empty key */
    assert_int_equal(keel_trace_kv_parse("%000=x", NULL, NULL), KEEL_EINVAL);
    assert_int_equal(keel_trace_kv_parse("a=b%00c", NULL, NULL), KEEL_EINVAL);
    keel_buf_free(&b);
}

/* The ids' hex (four bytes a word, then a byte at a time): every byte
 * value at every position of a word, every length up to 19. */
static void test_hex_encode(void **state)
{
    (void)state;
    uint8_t in[256 + 19];
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (uint8_t)(i * 7 + 3);
    for (size_t off = 0; off < 256; off++) {
        for (size_t n = 0; n <= 19; n++) {
            char got[40], want[40];
            memset(got, 'X', sizeof(got));
            keel__trace_hex_encode(got, in + off, n);
            for (size_t i = 0; i < n; i++)
                snprintf(want + 2 * i, 3, "%02x", in[off + i]);
            assert_memory_equal(got, want, 2 * n);
            assert_int_equal(got[2 * n], 'X'); /* nothing written past */
        }
    }
}

/* ---------------------------------------------------------------- in-process */

/* The exporter of these tests: keeps the bodies, answers from a script
 * (on the loop, later, as the contract says), or holds the answer until
 * the test releases it. */
static struct {
    pthread_mutex_t mu;
    json_t *bodies;        /* parsed payloads */
    int script[8];         /* statuses answered in turn; then 200 */
    uint64_t retry_after;  /* with each scripted non-2xx */
    uint64_t rejected;     /* with every 2xx */
    int nscript, used;
    int hold;              /* keep the answer until released */
    keel_trace_sent_cb held_cb;
    void *held_arg;
    keel_worker *held_w;
    int sync_calls;
    unsigned sync_spans;
} X;

typedef struct answer {
    keel_trace_sent_cb cb;
    void *arg;
    int status;
} answer;

static void deliver(void *p)
{
    answer *a = p;
    a->cb(a->arg, a->status, a->status == 200 ? 0 : X.retry_after,
          a->status == 200 ? X.rejected : 0);
    keel_free(a);
}

static unsigned count_spans(json_t *payload)
{
    json_t *rs = json_array_get(json_object_get(payload, "resourceSpans"), 0);
    json_t *ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
    return (unsigned)json_array_size(json_object_get(ss, "spans"));
}

static int fake_send(void *ctx, keel_worker *w, const char *body, size_t len,
                     keel_trace_sent_cb done, void *arg)
{
    (void)ctx;
    json_error_t e;
    /* strict: jansson refuses invalid UTF-8 (overlong forms, surrogates) */
    json_t *j = json_loadb(body, len, JSON_ALLOW_NUL, &e);
    if (!j)
        fail_msg("payload is not JSON: %s: %.*s", e.text, (int)(len > 300 ? 300 : len), body);
    pthread_mutex_lock(&X.mu);
    json_array_append_new(X.bodies, j);
    int status = X.used < X.nscript ? X.script[X.used++] : 200;
    int hold = X.hold;
    if (hold) {
        X.held_cb = done;
        X.held_arg = arg;
        X.held_w = w;
    }
    pthread_mutex_unlock(&X.mu);
    if (hold)
        return 0;
    answer *a = keel_malloc(sizeof(*a));
    *a = (answer){done, arg, status};
    return keel_worker_post(w, deliver, a);
}

static int fake_send_sync(void *ctx, const char *body, size_t len, uint64_t timeout_ms,
                          uint64_t *rejected)
{
    (void)ctx;
    (void)timeout_ms;
    (void)rejected;
    json_t *j = json_loadb(body, len, 0, NULL);
    assert_non_null(j);
    X.sync_calls++;
    X.sync_spans += count_spans(j);
    json_decref(j);
    return 200;
}

static void release_held(void)
{
    pthread_mutex_lock(&X.mu);
    keel_trace_sent_cb cb = X.held_cb;
    void *arg = X.held_arg;
    keel_worker *w = X.held_w;
    X.held_cb = NULL;
    pthread_mutex_unlock(&X.mu);
    if (!cb)
        return;
    answer *a = keel_malloc(sizeof(*a));
    *a = (answer){cb, arg, 200};
    assert_int_equal(keel_worker_post(w, deliver, a), 0);
}

static keel_flow h_work(keel_req *r)
{
    keel_span_ref s = keel_span_start(r, "compute \"prices\"");
    keel_span_set_str(s, "note", "quote \" backslash \\ newline \n caf\xc3\xa9");
    keel_span_set_int(s, "items", -42);
    keel_span_set_int(s, "big", INT64_MAX);
    keel_span_add_event(s, "cache miss");
    keel_span_ref inner = keel_span_begin(keel_trace_ref(r), "inner", KEEL_SPAN_INTERNAL, 0);
    keel_span_set_error(inner, "went wrong");
    keel_span_finish(inner, 0);
    keel_span_end(r, s);
    keel_respond_text(r, 200, "ok");
    return KEEL_DONE;
}

static keel_flow h_fail(keel_req *r)
{
    keel_respond_problem(r, 503, "down");
    return KEEL_DONE;
}

static keel_http_client *HC;

static void called(keel_req *r, void *arg, int status, const keel_http_response *res)
{
    (void)arg;
    if (status == KEEL_ECANCELED)
        return;
    keel_respond_text(r, status == 0 ? res->status : 502, "called");
}

/* an outbound call to this very server (its one loop serves both ends) */
static keel_flow h_call(keel_req *r)
{
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/work/9", keel_server_port(keel_req_server(r)));
    keel_http_call call = {.url = url, .target = "self"};
    if (keel_http_request_for(HC, r, &call, called, NULL) < 0) {
        keel_respond_problem(r, 503, "no call");
        return KEEL_DONE;
    }
    return KEEL_SUSPEND;
}

/* a span ref kept past its request (/late/keep), used by a later request
 * (/late/use) on the same loop: every call on it must be a no-op */
static keel_span_ref late_ref;

static keel_flow h_late_keep(keel_req *r)
{
    late_ref = keel_span_start(r, "kept");
    keel_span_end(r, late_ref);
    keel_respond_text(r, 200, "kept");
    return KEEL_DONE;
}

static keel_flow h_late_use(keel_req *r)
{
    int ok = keel_span_ok(late_ref);
    keel_span_set_str(late_ref, "late", "write");
    keel_span_set_int(late_ref, "late.n", 1);
    keel_span_add_event(late_ref, "late event");
    keel_span_set_error(late_ref, "late error");
    keel_span_ref child = keel_span_begin(late_ref, "late child", KEEL_SPAN_INTERNAL, 0);
    keel_span_finish(child, 0);
    keel_respond_text(r, ok || keel_span_ok(child) ? 500 : 200, "used");
    return KEEL_DONE;
}

/* Attribute values and what a JSON parser must read back from the
 * encoder's output: escaping (quotes, backslashes, every control byte, DEL,
 * NUL), UTF-8 kept when well formed, each byte of an ill-formed sequence
 * as U+FFFD, and specials at every offset of the eight-byte words. */
typedef struct esc_case {
    const char *key, *in;
    size_t in_len;
    const char *want;
    size_t want_len;
} esc_case;
#define ESC(k, in, want) {k, in, sizeof(in) - 1, want, sizeof(want) - 1}
static const esc_case esc_cases[] = {
    ESC("empty", "", ""),
    ESC("plain", "GET /hello", "GET /hello"),
    ESC("quote", "say \"hi\"", "say \"hi\""),
    ESC("backslash", "C:\\dir\\", "C:\\dir\\"),
    ESC("controls", "\x01\x02\x03\x04\x05\x06\x07\x08\t\n\x0b\x0c\r\x0e\x0f\x10"
                    "\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x7f",
        "\x01\x02\x03\x04\x05\x06\x07\x08\t\n\x0b\x0c\r\x0e\x0f\x10"
        "\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x7f"),
    ESC("nul", "a\0b", "a\0b"),
    ESC("word0", "\"bcdefghijklmnop", "\"bcdefghijklmnop"),
    ESC("word7", "abcdefg\"ijklmnop", "abcdefg\"ijklmnop"),
    ESC("word8", "abcdefgh\\jklmnop", "abcdefgh\\jklmnop"),
    ESC("tail", "abcdefghijklmno\n", "abcdefghijklmno\n"),
    ESC("utf8", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbf \xf4\x8f\xbf\xbf",
        "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbf \xf4\x8f\xbf\xbf"),
    ESC("utf8_long", "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"),
    ESC("lone_cont", "a\x80" "b", "a\xef\xbf\xbd" "b"),
    ESC("overlong", "\xc0\x80", "\xef\xbf\xbd\xef\xbf\xbd"),
    ESC("overlong3", "\xe0\x80\xaf", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"),
    ESC("surrogate", "\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"),
    ESC("past_max", "\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"),
    ESC("f5", "\xf5", "\xef\xbf\xbd"),
    ESC("cut", "x\xe2\x82", "x\xef\xbf\xbd\xef\xbf\xbd"),
    ESC("bad_cont", "\xe2\x28\xa1", "\xef\xbf\xbd(\xef\xbf\xbd"),
};
static const int64_t int_cases[] = {0, 7, -1, 99, 100, 99999999, 100000000, -100000000,
                                    9999999999999999, 10000000000000000, INT64_MAX, INT64_MIN};

static keel_flow h_esc(keel_req *r)
{
    keel_span_ref s = keel_span_start(r, "esc \"\x01\xc3\xa9");
    for (size_t i = 0; i < sizeof(esc_cases) / sizeof(esc_cases[0]); i++)
        keel_span_set_strn(s, esc_cases[i].key, esc_cases[i].in, esc_cases[i].in_len);
    for (size_t i = 0; i < sizeof(int_cases) / sizeof(int_cases[0]); i++) {
        char key[16];
        snprintf(key, sizeof(key), "int%zu", i);
        keel_span_set_int(s, key, int_cases[i]);
    }
    keel_span_set_str(s, "key \"\n", "v");
    keel_span_add_event(s, "ev \"\t");
    keel_span_set_error(s, "bad \"thing\"\r\n");
    keel_span_end(r, s);
    keel_respond_text(r, 200, "ok");
    return KEEL_DONE;
}

static const keel_route routes[] = {
    {.name = "esc", .method = "GET", .path = "/esc/:n", .handler = h_esc},
    {.name = "work", .method = "GET", .path = "/work/:n", .handler = h_work},
    {.name = "fail", .method = "GET", .path = "/fail", .handler = h_fail},
    {.name = "call", .method = "GET", .path = "/call", .handler = h_call},
    {.name = "late_keep", .method = "GET", .path = "/late/keep", .handler = h_late_keep},
    {.name = "late_use", .method = "GET", .path = "/late/use", .handler = h_late_use},
};

static struct {
    keel_config cfg;
    keel_server *s;
    keel_tracer *t;
    keel_metrics *m;
} F;

static void fx_start_with(unsigned max_queue, unsigned max_batch, uint64_t delay_ms,
                          int exporter)
{
    memset(&X, 0, sizeof(X));
    pthread_mutex_init(&X.mu, NULL);
    X.bodies = json_array();
    testsrv_config(&F.cfg);
    keel_trace_options *o = keel_config_edit(&F.cfg, &keel_trace_config);
    o->max_queue = max_queue;
    o->max_batch = max_batch;
    o->schedule_delay_ms = delay_ms;
    o->buffer_size = 4;
    o->max_spans = 3;
    if (!exporter) { /* the ring test also checks a forwarded client */
        keel_free(F.cfg.trust_proxy);
        F.cfg.trust_proxy = keel_strdup("127.0.0.1/32");
    }
    F.s = testsrv_new(&F.cfg);
    F.m = keel_metrics_new(1);
    F.t = keel_tracer_new(F.s, &F.cfg, F.m);
    assert_non_null(F.t);
    keel_trace_exporter exp = {.send = fake_send, .send_sync = fake_send_sync};
    if (exporter)
        keel_tracer_set_exporter(F.t, &exp);
    keel_middleware mw = keel_mw_request_id_traced(F.t);
    keel_server_use(F.s, &mw);
    keel_server_add_routes(F.s, routes, sizeof(routes) / sizeof(routes[0]));
    assert_int_equal(keel_http_client_new(&HC, F.s, &F.cfg, NULL, NULL), 0);
    assert_int_equal(keel_server_start(F.s), 0);
}

static void fx_start(unsigned max_queue, unsigned max_batch, uint64_t delay_ms)
{
    fx_start_with(max_queue, max_batch, delay_ms, 1);
}

static void fx_stop(void)
{
    testsrv_drain(F.s);
    keel_tracer_shutdown(F.t);
    testsrv_free(F.s);
    keel_http_client_free(HC);
    HC = NULL;
    keel_tracer_free(F.t);
    keel_metrics_free(F.m);
    keel_config_close(&F.cfg);
    json_decref(X.bodies);
    pthread_mutex_destroy(&X.mu);
}

static double metric(const char *series)
{
    keel_buf b = {0};
    keel_metrics_render(F.m, &b);
    keel_buf_append(&b, "", 1);
    double v = -1;
    char want[256];
    snprintf(want, sizeof(want), "\n%s ", series); /* a sample line, not # HELP */
    char *p = strstr(b.data, want);
    if (p)
        v = strtod(p + strlen(want), NULL);
    keel_buf_free(&b);
    return v;
}

static unsigned spans_received(void)
{
    pthread_mutex_lock(&X.mu);
    unsigned n = 0;
    for (size_t i = 0; i < json_array_size(X.bodies); i++)
        n += count_spans(json_array_get(X.bodies, i));
    pthread_mutex_unlock(&X.mu);
    return n;
}

static int wait_metric(const char *series, double want)
{
    for (int i = 0; i < 500; i++) {
        if (metric(series) == want)
            return 1;
        usleep(10000);
    }
    return 0;
}

static json_t *attr_of(json_t *span, const char *key)
{
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(span, "attributes"), i, a)
    {
        if (!strcmp(json_string_value(json_object_get(a, "key")), key))
            return json_object_get(a, "value");
    }
    return NULL;
}

static int all_digits(const char *s)
{
    if (!s || !*s)
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

static void test_spans_and_encoding(void **state)
{
    (void)state;
    fx_start(16, 3, 60000); /* a batch of 3 leaves at once: one request's spans */
    char out[4096];
    loopback_exchange(keel_server_port(F.s),
                      "GET /work/7 HTTP/1.1\r\nHost: t\r\nConnection: close\r\ntraceparent: "
                      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
                      "tracestate: congo=t61rcWkgMzE\r\n\r\n",
                      out, sizeof(out));
    assert_int_equal(loopback_status(out), 200);
    assert_non_null(strstr(out, "X-Trace-Id: 4bf92f3577b34da6a3ce929d0e0e4736\r\n"));
    assert_true(wait_metric("otel_spans_exported_total", 3));

    /* the payload: one resource, one scope, the request's three spans */
    pthread_mutex_lock(&X.mu);
    json_t *p = json_incref(json_array_get(X.bodies, 0));
    pthread_mutex_unlock(&X.mu);
    json_t *rs = json_array_get(json_object_get(p, "resourceSpans"), 0);
    json_t *res = json_object_get(rs, "resource");
    assert_non_null(json_object_get(res, "attributes"));
    json_t *spans = json_object_get(json_array_get(json_object_get(rs, "scopeSpans"), 0), "spans");
    assert_int_equal(json_array_size(spans), 3);
    json_t *server = json_array_get(spans, 0), *work = json_array_get(spans, 1),
           *inner = json_array_get(spans, 2);
    assert_string_equal(json_string_value(json_object_get(server, "name")), "GET /work/:n");
    assert_int_equal(json_integer_value(json_object_get(server, "kind")), 2);
    assert_string_equal(json_string_value(json_object_get(server, "traceId")),
                        "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(json_string_value(json_object_get(server, "parentSpanId")),
                        "00f067aa0ba902b7");
    assert_string_equal(json_string_value(json_object_get(server, "traceState")),
                        "congo=t61rcWkgMzE");
    const char *sid = json_string_value(json_object_get(server, "spanId"));
    assert_int_equal(strlen(sid), 16);
    assert_int_equal(strspn(sid, "0123456789abcdef"), 16);
    assert_string_equal(json_string_value(json_object_get(work, "parentSpanId")), sid);
    assert_string_equal(json_string_value(json_object_get(inner, "parentSpanId")),
                        json_string_value(json_object_get(work, "spanId")));
    /* 64-bit integers are decimal strings: timestamps and intValue */
    const char *st = json_string_value(json_object_get(server, "startTimeUnixNano"));
    const char *et = json_string_value(json_object_get(server, "endTimeUnixNano"));
    assert_true(all_digits(st) && all_digits(et));
    assert_true(strtoull(et, NULL, 10) >= strtoull(st, NULL, 10));
    assert_true(strtoull(st, NULL, 10) > 1600000000000000000ull); /* wall clock, ns */
    assert_string_equal(json_string_value(json_object_get(attr_of(server,
                                                                  "http.response.status_code"),
                                                          "intValue")),
                        "200");
    assert_string_equal(json_string_value(json_object_get(attr_of(server, "http.route"),
                                                          "stringValue")),
                        "/work/:n");
    assert_string_equal(json_string_value(json_object_get(attr_of(server, "url.path"),
                                                          "stringValue")),
                        "/work/7");
    assert_string_equal(json_string_value(json_object_get(work, "name")), "compute \"prices\"");
    assert_string_equal(json_string_value(json_object_get(attr_of(work, "note"), "stringValue")),
                        "quote \" backslash \\ newline \n caf\xc3\xa9");
    assert_string_equal(json_string_value(json_object_get(attr_of(work, "items"), "intValue")),
                        "-42");
    assert_string_equal(json_string_value(json_object_get(attr_of(work, "big"), "intValue")),
                        "9223372036854775807");
    json_t *ev = json_array_get(json_object_get(work, "events"), 0);
    assert_string_equal(json_string_value(json_object_get(ev, "name")), "cache miss");
    assert_true(all_digits(json_string_value(json_object_get(ev, "timeUnixNano"))));
    json_t *ist = json_object_get(inner, "status");
    assert_int_equal(json_integer_value(json_object_get(ist, "code")), 2);
    assert_string_equal(json_string_value(json_object_get(ist, "message")), "went wrong");
    json_decref(p);

    /* the same trace in memory */
    json_t *recent = keel_tracer_recent(F.t, 10);
    assert_int_equal(json_array_size(recent), 1);
    json_t *t0 = json_array_get(recent, 0);
    assert_string_equal(json_string_value(json_object_get(t0, "name")), "GET /work/:n");
    assert_int_equal(json_integer_value(json_object_get(t0, "span_count")), 3);
    assert_string_equal(json_string_value(json_object_get(t0, "status")), "unset");
    json_decref(recent);
    json_t *one = keel_tracer_get(F.t, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_non_null(one);
    assert_int_equal(json_array_size(json_object_get(one, "spans")), 3);
    json_decref(one);
    assert_null(keel_tracer_get(F.t, "00000000000000000000000000000001"));
    fx_stop();
}

/* The encoder against a strict JSON parser: every field of both spans of
 * each request, the values read back byte for byte, and whole batches of
 * spans of several requests written straight into reused batch buffers
 * (more batches than the ring holds). */
static void test_encoder_against_jansson(void **state)
{
    (void)state;
    fx_start(6, 4, 60000); /* 4 spans a batch: two requests; a ring of 3 buffers */
    enum { NREQ = 12 };
    char want_trace[NREQ][33];
    for (int q = 0; q < NREQ; q++) {
        char req[512], out[4096];
        snprintf(want_trace[q], sizeof(want_trace[q]), "%032x", q + 1);
        snprintf(req, sizeof(req),
                 "GET /esc/%d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                 "traceparent: 00-%s-00000000000000%02x-01\r\n\r\n",
                 q, want_trace[q], q + 1);
        loopback_exchange(keel_server_port(F.s), req, out, sizeof(out));
        assert_int_equal(loopback_status(out), 200);
        /* one batch in flight, the queue holds 6: let each batch go */
        assert_true(wait_metric("otel_spans_exported_total", 4.0 * ((q + 1) / 2)));
    }
    pthread_mutex_lock(&X.mu);
    json_t *bodies = json_incref(X.bodies);
    pthread_mutex_unlock(&X.mu);
    assert_int_equal(json_array_size(bodies), NREQ / 2);
    int seen = 0;
    for (size_t b = 0; b < json_array_size(bodies); b++) {
        json_t *p = json_array_get(bodies, b);
        assert_int_equal(json_object_size(p), 1);
        json_t *rs = json_array_get(json_object_get(p, "resourceSpans"), 0);
        assert_int_equal(json_array_size(json_object_get(p, "resourceSpans")), 1);
        json_t *ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
        assert_string_equal(json_string_value(json_object_get(json_object_get(ss, "scope"),
                                                              "name")),
                            "keel");
        json_t *spans = json_object_get(ss, "spans");
        assert_int_equal(json_array_size(spans), 4);
        for (size_t i = 0; i < 4; i += 2) {
            json_t *srv = json_array_get(spans, i), *sp = json_array_get(spans, i + 1);
            int q = seen++;
            /* ids: lowercase hex of the right length */
            assert_string_equal(json_string_value(json_object_get(srv, "traceId")),
                                want_trace[q]);
            assert_string_equal(json_string_value(json_object_get(sp, "traceId")),
                                want_trace[q]);
            char parent[17];
            snprintf(parent, sizeof(parent), "00000000000000%02x", (unsigned)(q + 1) & 0xffu);
            assert_string_equal(json_string_value(json_object_get(srv, "parentSpanId")), parent);
            const char *sid = json_string_value(json_object_get(srv, "spanId"));
            const char *cid = json_string_value(json_object_get(sp, "spanId"));
            assert_int_equal(strspn(sid, "0123456789abcdef"), 16);
            assert_int_equal(strlen(sid), 16);
            assert_int_equal(strspn(cid, "0123456789abcdef"), 16);
            assert_int_equal(strlen(cid), 16);
            assert_string_equal(json_string_value(json_object_get(sp, "parentSpanId")), sid);
            /* the server span */
            assert_string_equal(json_string_value(json_object_get(srv, "name")), "GET /esc/:n");
            assert_int_equal(json_integer_value(json_object_get(srv, "kind")), 2);
            char path[32];
            snprintf(path, sizeof(path), "/esc/%d", q);
            assert_string_equal(
                json_string_value(json_object_get(attr_of(srv, "url.path"), "stringValue")),
                path);
            assert_string_equal(json_string_value(json_object_get(
                                    attr_of(srv, "http.request.method"), "stringValue")),
                                "GET");
            assert_string_equal(
                json_string_value(json_object_get(attr_of(srv, "http.route"), "stringValue")),
                "/esc/:n");
            assert_string_equal(json_string_value(json_object_get(
                                    attr_of(srv, "http.response.status_code"), "intValue")),
                                "200");
            assert_non_null(attr_of(srv, "client.address"));
            assert_int_equal(json_object_size(json_object_get(srv, "status")), 0);
            /* timestamps: decimal strings, wall clock ns, end after start */
            for (int k = 0; k < 2; k++) {
                json_t *x = k ? sp : srv;
                const char *st = json_string_value(json_object_get(x, "startTimeUnixNano"));
                const char *et = json_string_value(json_object_get(x, "endTimeUnixNano"));
                assert_true(all_digits(st) && all_digits(et));
                assert_int_equal(strlen(st), 19); /* no leading zero, nine ns digits */
                assert_int_equal(strlen(et), 19);
                assert_true(strtoull(st, NULL, 10) > 1600000000000000000ull);
                assert_true(strtoull(et, NULL, 10) >= strtoull(st, NULL, 10));
            }
            /* the handler's span: name, kind, every attribute read back */
            assert_string_equal(json_string_value(json_object_get(sp, "name")),
                                "esc \"\x01\xc3\xa9");
            assert_int_equal(json_integer_value(json_object_get(sp, "kind")), 1);
            for (size_t c = 0; c < sizeof(esc_cases) / sizeof(esc_cases[0]); c++) {
                json_t *v = json_object_get(attr_of(sp, esc_cases[c].key), "stringValue");
                if (!json_is_string(v))
                    fail_msg("attribute %s missing", esc_cases[c].key);
                if (json_string_length(v) != esc_cases[c].want_len ||
                    memcmp(json_string_value(v), esc_cases[c].want, esc_cases[c].want_len))
                    fail_msg("attribute %s: got %zu bytes \"%s\"", esc_cases[c].key,
                             json_string_length(v), json_string_value(v));
            }
            for (size_t c = 0; c < sizeof(int_cases) / sizeof(int_cases[0]); c++) {
                char key[16], want[24];
                snprintf(key, sizeof(key), "int%zu", c);
                snprintf(want, sizeof(want), "%lld", (long long)int_cases[c]);
                assert_string_equal(
                    json_string_value(json_object_get(attr_of(sp, key), "intValue")), want);
            }
            assert_string_equal(
                json_string_value(json_object_get(attr_of(sp, "key \"\n"), "stringValue")), "v");
            json_t *ev = json_array_get(json_object_get(sp, "events"), 0);
            assert_string_equal(json_string_value(json_object_get(ev, "name")), "ev \"\t");
            assert_true(all_digits(json_string_value(json_object_get(ev, "timeUnixNano"))));
            json_t *st = json_object_get(sp, "status");
            assert_int_equal(json_integer_value(json_object_get(st, "code")), 2);
            assert_string_equal(json_string_value(json_object_get(st, "message")),
                                "bad \"thing\"\r\n");
        }
    }
    assert_int_equal(seen, NREQ);
    json_decref(bodies);
    assert_true(metric("otel_spans_dropped_total{reason=\"queue_full\"}") == 0);
    fx_stop();
}

static void test_span_limit_and_5xx(void **state)
{
    (void)state;
    fx_start(16, 16, 60000);
    char out[4096];
    /* sampled by a new root; 5xx: status error */
    assert_int_equal(loopback_get(keel_server_port(F.s), "/fail", out, sizeof(out)), 503);
    json_t *recent = keel_tracer_recent(F.t, 10);
    json_t *t0 = json_array_get(recent, 0);
    assert_string_equal(json_string_value(json_object_get(t0, "status")), "error");
    assert_int_equal(json_integer_value(json_object_get(t0, "http_status")), 503);
    json_decref(recent);
    /* not sampled by the parent: nothing recorded, still an id */
    loopback_exchange(keel_server_port(F.s),
                      "GET /work/1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\ntraceparent: "
                      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00\r\n\r\n",
                      out, sizeof(out));
    assert_non_null(strstr(out, "X-Trace-Id: 4bf92f3577b34da6a3ce929d0e0e4736\r\n"));
    assert_null(keel_tracer_get(F.t, "4bf92f3577b34da6a3ce929d0e0e4736"));
    /* TRACE_MAX_SPANS = 3 here: /work makes 3, so none dropped yet */
    assert_int_equal(loopback_get(keel_server_port(F.s), "/work/2", out, sizeof(out)), 200);
    assert_true(metric("otel_spans_dropped_total{reason=\"span_limit\"}") == 0);
    fx_stop();
    /* the queue's spans were left at the drain and sent by the shutdown */
    assert_int_equal(X.sync_calls, 1);
    assert_int_equal(X.sync_spans, 4);
}

static void test_queue_full_drops_and_counts(void **state)
{
    (void)state;
    fx_start(3, 1, 60000);
    X.hold = 1; /* the first batch stays in flight */
    char out[4096];
    unsigned port = keel_server_port(F.s);
    for (int i = 0; i < 3; i++) /* 9 spans: 1 in flight, 3 queued, 5 dropped */
        assert_int_equal(loopback_get(port, "/work/1", out, sizeof(out)), 200);
    assert_true(metric("otel_spans_dropped_total{reason=\"queue_full\"}") == 5);
    assert_true(metric("otel_spans_exported_total") == 0);
    /* the service answers while the exporter is stuck */
    assert_int_equal(loopback_get(port, "/work/1", out, sizeof(out)), 200);
    for (int i = 0; i < 20 && metric("otel_spans_exported_total") < 4; i++) {
        release_held();
        usleep(20000);
    }
    assert_true(metric("otel_spans_exported_total") == 4);
    X.hold = 0;
    release_held();
    fx_stop();
}

static void test_retry_after_503_then_ok(void **state)
{
    (void)state;
    fx_start(16, 3, 60000);
    X.script[0] = 503;
    X.script[1] = 429;
    X.nscript = 2;
    X.retry_after = 30; /* ms */
    X.rejected = 1;
    char out[4096];
    assert_int_equal(loopback_get(keel_server_port(F.s), "/work/1", out, sizeof(out)), 200);
    assert_true(wait_metric("otel_spans_exported_total", 2)); /* 3 sent, 1 rejected */
    assert_true(metric("otel_spans_rejected_total") == 1);
    assert_true(metric("otel_export_failures_total") == 2);
    assert_int_equal(spans_received(), 9); /* the same batch three times */
    fx_stop();
}

static void test_no_retry_on_400(void **state)
{
    (void)state;
    fx_start(16, 3, 60000);
    X.script[0] = 400;
    X.nscript = 1;
    char out[4096];
    assert_int_equal(loopback_get(keel_server_port(F.s), "/work/1", out, sizeof(out)), 200);
    assert_true(wait_metric("otel_spans_dropped_total{reason=\"export_failed\"}", 3));
    assert_true(metric("otel_export_failures_total") == 1);
    assert_int_equal(spans_received(), 3);
    fx_stop();
}

static void test_schedule_delay_sends_a_partial_batch(void **state)
{
    (void)state;
    fx_start(64, 32, 50);
    char out[4096];
    assert_int_equal(loopback_get(keel_server_port(F.s), "/fail", out, sizeof(out)), 503);
    assert_true(wait_metric("otel_spans_exported_total", 1));
    fx_stop();
}

static json_t *span_named(json_t *spans, const char *name)
{
    size_t i;
    json_t *sp;
    json_array_foreach(spans, i, sp)
    {
        if (!strcmp(json_string_value(json_object_get(sp, "name")), name))
            return sp;
    }
    fail_msg("no span named %s", name);
    return NULL;
}

static void test_outbound_call_span_and_propagation(void **state)
{
    (void)state;
    fx_start(64, 64, 60000);
    char out[4096];
    loopback_exchange(keel_server_port(F.s),
                      "GET /call HTTP/1.1\r\nHost: t\r\nConnection: close\r\ntraceparent: "
                      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
                      "tracestate: congo=t61rcWkgMzE\r\n\r\n",
                      out, sizeof(out));
    assert_int_equal(loopback_status(out), 200);
    /* both requests of the trace are in memory: the caller's and the callee's */
    json_t *t = keel_tracer_get(F.t, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_non_null(t);
    json_t *spans = json_object_get(t, "spans");
    json_t *caller = span_named(spans, "GET /call");
    json_t *client = span_named(spans, "GET");
    json_t *callee = span_named(spans, "GET /work/:n");
    assert_int_equal(json_integer_value(json_object_get(client, "kind")), 3);
    assert_string_equal(json_string_value(json_object_get(client, "parentSpanId")),
                        json_string_value(json_object_get(caller, "spanId")));
    /* the traceparent sent made the client span the callee's parent */
    assert_string_equal(json_string_value(json_object_get(callee, "parentSpanId")),
                        json_string_value(json_object_get(client, "spanId")));
    assert_string_equal(json_string_value(json_object_get(callee, "traceState")),
                        "congo=t61rcWkgMzE");
    assert_string_equal(json_string_value(json_object_get(attr_of(client,
                                                                  "http.response.status_code"),
                                                          "intValue")),
                        "200");
    assert_string_equal(json_string_value(json_object_get(attr_of(client, "server.address"),
                                                          "stringValue")),
                        "self");
    json_decref(t);
    fx_stop();
}

/* Without an exporter the ring keeps the finished records themselves
 * (TRACE_BUFFER_SIZE = 4 here) and encodes them only when asked: the
 * oldest are replaced, the kept ones still carry the request's method,
 * path, route, client and status (copied when the request ended), and a
 * span ref kept past its request changes nothing. */
static void test_ring_without_exporter(void **state)
{
    (void)state;
    fx_start_with(16, 16, 60000, 0);
    unsigned port = keel_server_port(F.s);
    char out[4096], req[512];
    for (int i = 1; i <= 6; i++) {
        snprintf(req, sizeof(req),
                 "GET /work/%d HTTP/1.1\r\nHost: t\r\nConnection: close\r\ntraceparent: "
                 "00-4bf92f3577b34da6a3ce929d0e0e47%02d-00f067aa0ba902b7-01\r\n\r\n",
                 i, i);
        loopback_exchange(port, req, out, sizeof(out));
        assert_int_equal(loopback_status(out), 200);
    }
    json_t *recent = keel_tracer_recent(F.t, 10);
    assert_int_equal(json_array_size(recent), 4);
    json_t *t0 = json_array_get(recent, 0);
    assert_string_equal(json_string_value(json_object_get(t0, "name")), "GET /work/:n");
    assert_int_equal(json_integer_value(json_object_get(t0, "span_count")), 3);
    assert_int_equal(json_integer_value(json_object_get(t0, "http_status")), 200);
    assert_true(json_integer_value(json_object_get(t0, "start_unix_nano")) >
                (json_int_t)1600000000000000000ll);
    json_decref(recent);
    assert_null(keel_tracer_get(F.t, "4bf92f3577b34da6a3ce929d0e0e4701"));
    assert_null(keel_tracer_get(F.t, "4bf92f3577b34da6a3ce929d0e0e4702"));
    json_t *one = keel_tracer_get(F.t, "4bf92f3577b34da6a3ce929d0e0e4706");
    assert_non_null(one);
    json_t *spans = json_object_get(one, "spans");
    assert_int_equal(json_array_size(spans), 3);
    json_t *server = json_array_get(spans, 0);
    assert_string_equal(json_string_value(json_object_get(server, "name")), "GET /work/:n");
    assert_string_equal(json_string_value(json_object_get(server, "parentSpanId")),
                        "00f067aa0ba902b7");
    assert_string_equal(json_string_value(json_object_get(attr_of(server, "url.path"),
                                                          "stringValue")),
                        "/work/6");
    assert_string_equal(json_string_value(json_object_get(attr_of(server, "http.request.method"),
                                                          "stringValue")),
                        "GET");
    assert_string_equal(json_string_value(json_object_get(attr_of(server, "client.address"),
                                                          "stringValue")),
                        "127.0.0.1");
    assert_string_equal(json_string_value(json_object_get(attr_of(server,
                                                                  "http.response.status_code"),
                                                          "intValue")),
                        "200");
    json_t *work = json_array_get(spans, 1);
    assert_string_equal(json_string_value(json_object_get(attr_of(work, "items"), "intValue")),
                        "-42");
    json_decref(one);

    /* from a trusted proxy: the forwarded client (TRUST_PROXY) */
    loopback_exchange(port,
                      "GET /work/8 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                      "X-Forwarded-For: 203.0.113.9\r\ntraceparent: "
                      "00-4bf92f3577b34da6a3ce929d0e0e47ff-00f067aa0ba902b7-01\r\n\r\n",
                      out, sizeof(out));
    assert_int_equal(loopback_status(out), 200);
    one = keel_tracer_get(F.t, "4bf92f3577b34da6a3ce929d0e0e47ff");
    assert_non_null(one);
    server = json_array_get(json_object_get(one, "spans"), 0);
    assert_string_equal(json_string_value(json_object_get(attr_of(server, "client.address"),
                                                          "stringValue")),
                        "203.0.113.9");
    json_decref(one);

    /* a ref kept past its request: a no-op on the record in the ring */
    snprintf(req, sizeof(req),
             "GET /late/keep HTTP/1.1\r\nHost: t\r\nConnection: close\r\ntraceparent: "
             "00-4bf92f3577b34da6a3ce929d0e0e47aa-00f067aa0ba902b7-01\r\n\r\n");
    loopback_exchange(port, req, out, sizeof(out));
    assert_int_equal(loopback_status(out), 200);
    assert_int_equal(loopback_get(port, "/late/use", out, sizeof(out)), 200);
    one = keel_tracer_get(F.t, "4bf92f3577b34da6a3ce929d0e0e47aa");
    assert_non_null(one);
    spans = json_object_get(one, "spans");
    assert_int_equal(json_array_size(spans), 2);
    json_t *kept = json_array_get(spans, 1);
    assert_string_equal(json_string_value(json_object_get(kept, "name")), "kept");
    assert_null(attr_of(kept, "late"));
    assert_null(json_object_get(kept, "events"));
    assert_null(json_object_get(json_object_get(kept, "status"), "code"));
    json_decref(one);
    /* nothing was exported, nothing is left for the shutdown */
    assert_int_equal((int)json_array_size(X.bodies), 0);
    fx_stop();
    assert_int_equal(X.sync_calls, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traceparent_vectors),
        cmocka_unit_test(test_tracestate),
        cmocka_unit_test(test_sampler),
        cmocka_unit_test(test_kv_lists),
        cmocka_unit_test(test_spans_and_encoding),
        cmocka_unit_test(test_encoder_against_jansson),
        cmocka_unit_test(test_hex_encode),
        cmocka_unit_test(test_span_limit_and_5xx),
        cmocka_unit_test(test_queue_full_drops_and_counts),
        cmocka_unit_test(test_retry_after_503_then_ok),
        cmocka_unit_test(test_no_retry_on_400),
        cmocka_unit_test(test_schedule_delay_sends_a_partial_batch),
        cmocka_unit_test(test_outbound_call_span_and_propagation),
        cmocka_unit_test(test_ring_without_exporter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
