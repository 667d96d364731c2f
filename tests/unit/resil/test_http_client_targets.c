/* test_http_client_targets.c — the outbound client's targets are bounded
 * (KEEL_HTTP_CLIENT_MAX_TARGETS, then "other") and a declared target's
 * series and breaker exist at 0 before any call (src/resil/http_client.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "keel/http_client.h"
#include "keel/metrics.h"
#include "keel/resil.h"
#include "keel/server.h"

static void test_declared_and_bounded(void **state)
{
    (void)state;
    keel_config cfg;
    keel_config_defaults(&cfg);
    cfg.workers = 1;
    keel_server *s = keel_server_new(&cfg);
    keel_metrics *m = keel_metrics_new(1);
    keel_breakers *br = keel_breakers_new(m);
    keel_http_client *hc = NULL;
    assert_int_equal(keel_http_client_new(&hc, s, &cfg, m, br), 0);
    assert_int_equal(keel_http_client_declare_target(hc, ""), KEEL_EINVAL);
    assert_int_equal(keel_http_client_declare_target(hc, "billing"), 0);
    char name[32];
    for (int i = 0; i < KEEL_HTTP_CLIENT_MAX_TARGETS + 10; i++) {
        snprintf(name, sizeof(name), "t%d", i);
        assert_int_equal(keel_http_client_declare_target(hc, name), 0);
    }
    keel_buf b = {0};
    keel_metrics_render(m, &b);
    keel_buf_append(&b, "", 1);
    const char *t = b.data;
    assert_non_null(strstr(t, "http_client_requests_total{target=\"billing\",status=\"timeout\"} 0"));
    assert_non_null(strstr(t, "http_client_requests_total{target=\"billing\",status=\"unavailable\"} 0"));
    assert_non_null(strstr(t, "http_client_request_duration_seconds_count{target=\"billing\"} 0"));
    assert_non_null(strstr(t, "circuit_breaker_state{name=\"http:billing\"} 0"));
    /* 64 names, then "other" for the rest */
    assert_non_null(strstr(t, "target=\"t62\""));
    assert_null(strstr(t, "target=\"t63\""));
    assert_non_null(strstr(t, "target=\"other\""));
    assert_non_null(strstr(t, "circuit_breaker_state{name=\"http:other\"} 0"));
    keel_buf_free(&b);
    keel_server_free(s);
    keel_http_client_free(hc);
    keel_breakers_free(br);
    keel_metrics_free(m);
    keel_config_close(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_declared_and_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
