/* test_metrics.c — the metrics registry (src/obs/metrics.c): families,
 * labels, callbacks, refused names, per-worker shards summed at scrape
 * time (from several threads at once), and the two renderings: the
 * Prometheus text exposition, compared byte for byte, and the JSON form. */
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "keel/metrics.h"
#include "table_check.h"

#define L(...) ((const char *const[]){__VA_ARGS__})

static char *render(keel_metrics *m)
{
    keel_buf b = {0};
    keel_metrics_render(m, &b);
    keel_buf_append(&b, "", 1);
    return b.data;
}

static int count(const char *hay, const char *needle)
{
    int c = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++)
        c++;
    return c;
}

static double forty_two(void *arg)
{
    (*(int *)arg)++;
    return 42;
}

/* A small registry of every kind, filled from three shards. */
static keel_metrics *small_registry(int *calls)
{
    keel_metrics *m = keel_metrics_new(2); /* shards 0, 1 and the shared one */
    keel_metric *req = keel_metrics_counter(m, "req_total", "Requests.", L("route", "code", NULL));
    keel_metric *temp = keel_metrics_gauge(m, "temp", "A gauge.", NULL);
    static const double bounds[] = {0.1, 0.5, 1};
    keel_metric *lat = keel_metrics_histogram(m, "lat_seconds", "Latency.", L("path", NULL),
                                              bounds, 3);
    keel_metric *esc = keel_metrics_counter(m, "esc_total", "Escapes.", L("v", NULL));
    keel_metrics_callback(m, "up_cb", "Computed.", KEEL_GAUGE, forty_two, calls);
    assert_non_null(req);
    assert_non_null(temp);
    assert_non_null(lat);
    assert_non_null(esc);

    keel_metric_add(req, 0, L("/a", "200"), 1);
    keel_metric_add(req, 1, L("/a", "200"), 2);
    keel_metric_add(req, 99, L("/b", "500"), 1); /* another thread: the shared shard */
    keel_metric_add(req, 1, L("/b", "500"), 0.5);
    keel_metric_set(temp, 0, NULL, 7);
    keel_metric_set(temp, 0, NULL, 1.5); /* set replaces within a shard */
    keel_metric_set(temp, 1, NULL, 2);   /* per-worker gauges add up */
    keel_metric_observe(lat, 0, L("/x"), 0.05);
    keel_metric_observe(lat, 1, L("/x"), 0.1); /* on the bound: le is inclusive */
    keel_metric_observe(lat, 0, L("/x"), 0.3);
    keel_metric_observe(lat, 2, L("/x"), 2);   /* above every bound: only +Inf */
    keel_metric_add(esc, 0, L("a\"b\\c\nd"), 1);
    return m;
}

static const char small_text[] =
    "# HELP req_total Requests.\n"
    "# TYPE req_total counter\n"
    "req_total{route=\"/a\",code=\"200\"} 3\n"
    "req_total{route=\"/b\",code=\"500\"} 1.5\n"
    "# HELP temp A gauge.\n"
    "# TYPE temp gauge\n"
    "temp 3.5\n"
    "# HELP lat_seconds Latency.\n"
    "# TYPE lat_seconds histogram\n"
    "lat_seconds_bucket{path=\"/x\",le=\"0.1\"} 2\n"
    "lat_seconds_bucket{path=\"/x\",le=\"0.5\"} 3\n"
    "lat_seconds_bucket{path=\"/x\",le=\"1\"} 3\n"
    "lat_seconds_bucket{path=\"/x\",le=\"+Inf\"} 4\n"
    "lat_seconds_sum{path=\"/x\"} 2.45\n"
    "lat_seconds_count{path=\"/x\"} 4\n"
    "# HELP esc_total Escapes.\n"
    "# TYPE esc_total counter\n"
    "esc_total{v=\"a\\\"b\\\\c\\nd\"} 1\n"
    "# HELP up_cb Computed.\n"
    "# TYPE up_cb gauge\n"
    "up_cb 42\n";

static void test_text_exposition(void **state)
{
    (void)state;
    int calls = 0;
    keel_metrics *m = small_registry(&calls);
    char *text = render(m);
    assert_string_equal(text, small_text);
    assert_int_equal(calls, 1); /* the callback runs at scrape time, once */
    free(text);
    /* a scrape changes nothing: the second one is the same */
    text = render(m);
    assert_string_equal(text, small_text);
    assert_int_equal(calls, 2);
    free(text);
    keel_metrics_free(m);
}

static void test_unlabelled_histogram_and_numbers(void **state)
{
    (void)state;
    keel_metrics *m = keel_metrics_new(1);
    static const double bounds[] = {0.0005, 2.5};
    keel_metric *h = keel_metrics_histogram(m, "h", "H.", NULL, bounds, 2);
    keel_metric *c = keel_metrics_counter(m, "big_total", "Big.", NULL);
    keel_metric_observe(h, 0, NULL, 0.0001);
    keel_metric_observe(h, 0, NULL, 3);
    keel_metric_add(c, 0, NULL, 1e20);
    char *text = render(m);
    assert_string_equal(text, "# HELP h H.\n"
                              "# TYPE h histogram\n"
                              "h_bucket{le=\"0.0005\"} 1\n"
                              "h_bucket{le=\"2.5\"} 1\n"
                              "h_bucket{le=\"+Inf\"} 2\n"
                              "h_sum 3.0001\n"
                              "h_count 2\n"
                              "# HELP big_total Big.\n"
                              "# TYPE big_total counter\n"
                              "big_total 1e+20\n");
    free(text);
    keel_metrics_free(m);
}

static void test_json_form(void **state)
{
    (void)state;
    int calls = 0;
    keel_metrics *m = small_registry(&calls);
    json_t *got = keel_metrics_json(m);
    json_error_t err;
    json_t *want = json_loads(
        "{\"req_total\": {\"type\": \"counter\", \"help\": \"Requests.\", \"series\": ["
        "   {\"labels\": {\"route\": \"/a\", \"code\": \"200\"}, \"value\": 3.0},"
        "   {\"labels\": {\"route\": \"/b\", \"code\": \"500\"}, \"value\": 1.5}]},"
        " \"temp\": {\"type\": \"gauge\", \"help\": \"A gauge.\", \"series\": ["
        "   {\"labels\": {}, \"value\": 3.5}]},"
        " \"lat_seconds\": {\"type\": \"histogram\", \"help\": \"Latency.\", \"series\": ["
        "   {\"labels\": {\"path\": \"/x\"}, \"count\": 4, \"sum\": 2.45,"
        "    \"buckets\": {\"0.1\": 2, \"0.5\": 3, \"1\": 3, \"+Inf\": 4}}]},"
        " \"esc_total\": {\"type\": \"counter\", \"help\": \"Escapes.\", \"series\": ["
        "   {\"labels\": {\"v\": \"a\\\"b\\\\c\\nd\"}, \"value\": 1.0}]},"
        " \"up_cb\": {\"type\": \"gauge\", \"help\": \"Computed.\", \"series\": ["
        "   {\"labels\": {}, \"value\": 42.0}]}}",
        0, &err);
    assert_non_null(want);
    /* the sum is a float sum: compare it apart, then the rest exactly */
    json_t *s = json_array_get(json_object_get(json_object_get(got, "lat_seconds"), "series"), 0);
    double sum = json_real_value(json_object_get(s, "sum"));
    assert_true(sum > 2.4499999 && sum < 2.4500001);
    json_object_set_new(s, "sum", json_real(2.45));
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_SORT_KEYS);
        print_error("got %s\n", g);
        free(g);
        fail();
    }
    assert_int_equal(calls, 1);
    json_decref(got);
    json_decref(want);
    keel_metrics_free(m);
}

static void test_series_and_labels(void **state)
{
    (void)state;
    keel_metrics *m = keel_metrics_new(1);
    keel_metric *c = keel_metrics_counter(m, "hits_total", "Hits.", L("a", "b", NULL));
    /* values that differ only where they are joined stay apart */
    keel_metric_add(c, 0, L("x", "yz"), 1);
    keel_metric_add(c, 0, L("xy", "z"), 2);
    keel_metric_add(c, 0, L("", ""), 4);
    /* many series: the table grows and keeps every one */
    char v[16];
    for (int i = 0; i < 300; i++) {
        snprintf(v, sizeof(v), "%d", i);
        keel_metric_add(c, (unsigned)i % 2, L(v, "n"), i);
        keel_metric_add(c, (unsigned)i % 2, L(v, "n"), 1);
    }
    char *text = render(m);
    assert_non_null(strstr(text, "hits_total{a=\"x\",b=\"yz\"} 1\n"));
    assert_non_null(strstr(text, "hits_total{a=\"xy\",b=\"z\"} 2\n"));
    assert_non_null(strstr(text, "hits_total{a=\"\",b=\"\"} 4\n"));
    assert_non_null(strstr(text, "hits_total{a=\"0\",b=\"n\"} 1\n"));
    assert_non_null(strstr(text, "hits_total{a=\"299\",b=\"n\"} 300\n"));
    assert_int_equal(count(text, "hits_total{"), 303);
    free(text);
    /* updates through a NULL family (a refused declaration) are no-ops */
    keel_metric_add(NULL, 0, NULL, 1);
    keel_metric_set(NULL, 0, NULL, 1);
    keel_metric_observe(NULL, 0, NULL, 1);
    keel_metrics_free(m);
    keel_metrics_free(NULL);
}

/* A series looked up once and updated through its handle renders the
 * same as updates by label values, summed with them per shard. */
static void test_series_handles(void **state)
{
    (void)state;
    keel_metrics *m = keel_metrics_new(2);
    assert_int_equal(keel_metrics_shards(m), 3);
    keel_metric *c = keel_metrics_counter(m, "h_total", "Hits.", L("route", NULL));
    static const double bounds[] = {0.1, 1};
    keel_metric *h = keel_metrics_histogram(m, "h_seconds", "Lat.", L("route", NULL), bounds, 2);
    keel_metric_add(c, 0, L("/a"), 1);
    keel_metric_observe(h, 1, L("/a"), 0.05);
    keel_metric_series *sc = keel_metric_series_get(c, 0, L("/a"));
    keel_metric_series *sh = keel_metric_series_get(h, 1, L("/a"));
    assert_non_null(sc);
    assert_non_null(sh);
    assert_ptr_equal(sc, keel_metric_series_get(c, 0, L("/a"))); /* the same series */
    for (int i = 0; i < 4; i++) {
        keel_metric_series_add(sc, 1);
        keel_metric_series_observe(sh, i % 2 ? 0.5 : 5);
    }
    keel_metric_add(c, 1, L("/a"), 10); /* another shard: summed at scrape */
    char *text = render(m);
    assert_non_null(strstr(text, "h_total{route=\"/a\"} 15\n"));
    assert_non_null(strstr(text, "h_seconds_bucket{route=\"/a\",le=\"0.1\"} 1\n"));
    assert_non_null(strstr(text, "h_seconds_bucket{route=\"/a\",le=\"1\"} 3\n"));
    assert_non_null(strstr(text, "h_seconds_bucket{route=\"/a\",le=\"+Inf\"} 5\n"));
    assert_non_null(strstr(text, "h_seconds_count{route=\"/a\"} 5\n"));
    free(text);
    /* a NULL family has no series, and NULL handles are ignored */
    assert_null(keel_metric_series_get(NULL, 0, L("/a")));
    keel_metric_series_add(NULL, 1);
    keel_metric_series_observe(NULL, 1);
    keel_metrics_free(m);
}

/* Declarations refused for their names (each declares nothing); every
 * row has a name of its own, so no row is refused as a duplicate. */
typedef struct refused_case {
    const char *why;
    const char *name;
    const char *const *labels;
    int histogram;
} refused_case;

static const refused_case refused[] = {
    {"empty name", "", NULL, 0},
    {"no name", NULL, NULL, 0},
    {"dash", "jobs-total", NULL, 0},
    {"digit first", "9jobs", NULL, 0},
    {"space", "jobs total", NULL, 0},
    {"non-ASCII", "caf\xc3\xa9_total", NULL, 0},
    {"label with a dash", "l1_total", L("bad-label", NULL), 0},
    {"label with a colon", "l2_total", L("a:b", NULL), 0},
    {"label digit first", "l3_total", L("1a", NULL), 0},
    {"empty label", "l4_total", L("", NULL), 0},
    {"reserved label", "l5_total", L("__x", NULL), 0},
    {"label twice", "l6_total", L("a", "b", "a", NULL), 0},
    {"le in a histogram", "l7_seconds", L("le", NULL), 1},
};

static void test_duplicate_and_invalid_names(void **state)
{
    (void)state;
    keel_metrics *m = keel_metrics_new(1);
    keel_metric *a = keel_metrics_counter(m, "jobs_total", "Jobs.", L("kind", NULL));
    assert_non_null(a);
    /* a second family by the same name would make the scrape invalid
     * (two TYPE lines) and hide one family in the JSON form */
    assert_null(keel_metrics_counter(m, "jobs_total", "Again.", L("kind", NULL)));
    assert_null(keel_metrics_gauge(m, "jobs_total", "Again.", NULL));
    static const double b[] = {1};
    assert_null(keel_metrics_histogram(m, "jobs_total", "Again.", NULL, b, 1));
    keel_metrics_callback(m, "jobs_total", "Again.", KEEL_COUNTER, forty_two, &(int){0});
    /* names the exposition format cannot carry */
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        const refused_case *c = &refused[i];
        keel_metric *mt = c->histogram
                              ? keel_metrics_histogram(m, c->name, "Refused.", c->labels, b, 1)
                              : keel_metrics_counter(m, c->name, "Refused.", c->labels);
        if (mt)
            case_fail(c->why, "declared %s", c->name ? c->name : "(null)");
    }
    keel_metrics_callback(m, "bad.name", "Dot.", KEEL_GAUGE, forty_two, &(int){0});
    assert_int_equal(failures, 0);
    /* valid names, colons included, still declare */
    keel_metric *ok = keel_metrics_counter(m, "ns:ok_total", "Fine.", L("_a1", NULL));
    assert_non_null(ok);
    keel_metric_add(a, 0, L("email"), 1);
    keel_metric_add(ok, 0, L("v"), 1);
    char *text = render(m);
    assert_string_equal(text, "# HELP jobs_total Jobs.\n"
                              "# TYPE jobs_total counter\n"
                              "jobs_total{kind=\"email\"} 1\n"
                              "# HELP ns:ok_total Fine.\n"
                              "# TYPE ns:ok_total counter\n"
                              "ns:ok_total{_a1=\"v\"} 1\n");
    free(text);
    json_t *j = keel_metrics_json(m);
    assert_int_equal(json_object_size(j), 2);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "jobs_total"), "help")),
                        "Jobs.");
    json_decref(j);
    keel_metrics_free(m);
}

static void test_help_escaped(void **state)
{
    (void)state;
    keel_metrics *m = keel_metrics_new(1);
    keel_metric *c = keel_metrics_counter(m, "x_total", "Line one\nline two \\ end", NULL);
    keel_metric_add(c, 0, NULL, 1);
    char *text = render(m);
    /* HELP escapes backslash and newline: one line per HELP */
    assert_string_equal(text, "# HELP x_total Line one\\nline two \\\\ end\n"
                              "# TYPE x_total counter\n"
                              "x_total 1\n");
    free(text);
    keel_metrics_free(m);
}

/* ---------------------------------------------------------------- threads */

#define THREADS 6
#define ROUNDS 20000

typedef struct worker_arg {
    keel_metric *c, *h, *g;
    unsigned shard;
    int odd;
} worker_arg;

static void *hammer(void *p)
{
    worker_arg *a = p;
    const char *route = a->odd ? "odd" : "even";
    for (int i = 0; i < ROUNDS; i++) {
        keel_metric_add(a->c, a->shard, L(route), 1);
        keel_metric_add(a->c, a->shard, L("all"), 1);
        keel_metric_observe(a->h, a->shard, L("all"), i % 2 ? 0.25 : 4);
    }
    keel_metric_set(a->g, a->shard, NULL, 1);
    return NULL;
}

static void *scrape(void *p)
{
    keel_metrics *m = p;
    for (int i = 0; i < 20; i++) {
        char *t = render(m);
        free(t);
        json_decref(keel_metrics_json(m));
    }
    return NULL;
}

static void test_shards_summed_across_threads(void **state)
{
    (void)state;
    /* four worker shards; threads 4 and 5 pass indexes past the last
     * worker and share the locked extra shard */
    keel_metrics *m = keel_metrics_new(4);
    static const double bounds[] = {0.5};
    keel_metric *c = keel_metrics_counter(m, "ops_total", "Ops.", L("route", NULL));
    keel_metric *h = keel_metrics_histogram(m, "ops_seconds", "Op time.", L("route", NULL),
                                            bounds, 1);
    keel_metric *g = keel_metrics_gauge(m, "workers_up", "Workers.", NULL);
    pthread_t th[THREADS], scraper;
    worker_arg args[THREADS];
    pthread_create(&scraper, NULL, scrape, m); /* scrapes while they count */
    for (unsigned i = 0; i < THREADS; i++) {
        args[i] = (worker_arg){c, h, g, i < 4 ? i : 4 + i * 1000, (int)(i % 2)};
        pthread_create(&th[i], NULL, hammer, &args[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_join(scraper, NULL);

    char want[2048];
    /* threads 0, 2, 4 count "even", 1, 3, 5 "odd"; thread 0 (shard 0,
     * merged first) fixes the order of the series */
    snprintf(want, sizeof(want),
             "# HELP ops_total Ops.\n"
             "# TYPE ops_total counter\n"
             "ops_total{route=\"even\"} %d\n"
             "ops_total{route=\"all\"} %d\n"
             "ops_total{route=\"odd\"} %d\n"
             "# HELP ops_seconds Op time.\n"
             "# TYPE ops_seconds histogram\n"
             "ops_seconds_bucket{route=\"all\",le=\"0.5\"} %d\n"
             "ops_seconds_bucket{route=\"all\",le=\"+Inf\"} %d\n"
             "ops_seconds_sum{route=\"all\"} %d\n"
             "ops_seconds_count{route=\"all\"} %d\n"
             "# HELP workers_up Workers.\n"
             "# TYPE workers_up gauge\n"
             "workers_up 5\n",
             3 * ROUNDS, THREADS * ROUNDS, 3 * ROUNDS, THREADS * ROUNDS / 2, THREADS * ROUNDS,
             THREADS * (ROUNDS / 2) * 4 + THREADS * (ROUNDS / 2) / 4, THREADS * ROUNDS);
    char *text = render(m);
    assert_string_equal(text, want);
    free(text);
    keel_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_exposition),
        cmocka_unit_test(test_unlabelled_histogram_and_numbers),
        cmocka_unit_test(test_json_form),
        cmocka_unit_test(test_series_and_labels),
        cmocka_unit_test(test_series_handles),
        cmocka_unit_test(test_duplicate_and_invalid_names),
        cmocka_unit_test(test_help_escaped),
        cmocka_unit_test(test_shards_summed_across_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
