/* fuzz_alert_rule.c — libFuzzer driver for the alert engine's input side
 * (keel/alerts.h): keel_alert_rule_from_json on hostile JSON (what an
 * admin POSTs), the rule's round trip through keel_alert_rule_to_json,
 * its windows over the same JSON taken as a metrics snapshot, and the
 * state machine driven by values drawn from the input.
 *
 * Checks: no crash, overread or leak; a refusal names a JSON pointer and
 * a message; an accepted rule keeps its hysteresis the right way round
 * (clear not beyond trigger), reads back equal from its own JSON, and its
 * state machine never tells RESOLVED for an episode it never told FIRING
 * and never leaves a pending episode with a notification.
 *
 *   make build/fuzz/fuzz_alert_rule
 *   build/fuzz/fuzz_alert_rule -dict=tests/fuzz/fuzz_alert_rule.dict tests/fuzz/corpus/fuzz_alert_rule
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/alerts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "fuzz_alert_rule: check failed: %s (line %d)\n", #cond,       \
                    __LINE__);                                                              \
            abort();                                                                        \
        }                                                                                   \
    } while (0)

static void drive(const keel_alert_rule *r, const uint8_t *data, size_t size)
{
    keel_alert_status st = {0};
    int64_t now = 1700000000000, rule_last = 0;
    int told_firing = 0;
    for (size_t i = 0; i < size && i < 256; i++) {
        now += 100 + (int64_t)(data[i] & 0x0f) * 250;
        double v = (double)(data[i] >> 2) - 16.0; /* -16 .. 47 around small thresholds */
        int have = (data[i] & 3) != 0;
        keel_alert_state before = st.state;
        keel_alert_notify n = keel_alert_step(r, &st, now, have, v, rule_last, 1, NULL);
        CHECK(st.state <= KEEL_ALERT_RESOLVED);
        if (n != KEEL_ALERT_NOTIFY_NONE)
            rule_last = now;
        if (n == KEEL_ALERT_NOTIFY_FIRING || n == KEEL_ALERT_NOTIFY_REPEAT) {
            CHECK(st.state == KEEL_ALERT_FIRING);
            told_firing = 1;
        }
        if (n == KEEL_ALERT_NOTIFY_RESOLVED) {
            CHECK(st.state == KEEL_ALERT_RESOLVED && told_firing);
            CHECK(before == KEEL_ALERT_FIRING);
        }
        if (st.state == KEEL_ALERT_PENDING)
            CHECK(n == KEEL_ALERT_NOTIFY_NONE && st.started_at > 0);
        if (!have)
            CHECK(st.state == before);
        if (st.state == KEEL_ALERT_INACTIVE || st.state == KEEL_ALERT_RESOLVED)
            told_firing = st.state == KEEL_ALERT_RESOLVED ? told_firing : 0;
        if (before == KEEL_ALERT_RESOLVED && st.state != KEEL_ALERT_RESOLVED)
            told_firing = n == KEEL_ALERT_NOTIFY_FIRING;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192)
        return 0;
    json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    if (!j)
        return 0;
    keel_alert_rule r;
    char err[200];
    const char *ptr = NULL;
    err[0] = 0;
    if (keel_alert_rule_from_json(j, &r, err, sizeof(err), &ptr) != 0) {
        CHECK(ptr != NULL && (ptr[0] == 0 || ptr[0] == '/'));
        CHECK(err[0] != 0);
    } else {
        int up = r.cmp == KEEL_ALERT_GT || r.cmp == KEEL_ALERT_GE;
        CHECK(up ? r.clear <= r.trigger : r.clear >= r.trigger);
        CHECK(r.window_ms >= 100 && r.nlabels <= KEEL_ALERT_LABELS_MAX);
        CHECK(memchr(r.id, 0, sizeof(r.id)) && memchr(r.name, 0, sizeof(r.name)));
        json_t *back = keel_alert_rule_to_json(&r);
        keel_alert_rule r2;
        CHECK(keel_alert_rule_from_json(back, &r2, err, sizeof(err), &ptr) == 0);
        CHECK(r2.kind == r.kind && r2.cmp == r.cmp && r2.severity == r.severity);
        CHECK(r2.trigger == r.trigger && r2.clear == r.clear && r2.agg == r.agg);
        CHECK(r2.window_ms == r.window_ms && r2.for_ms == r.for_ms);
        CHECK(r2.nlabels == r.nlabels && !strcmp(r2.metric, r.metric));
        json_decref(back);
        /* the input as a metrics snapshot: whatever its shape, no crash */
        keel_alert_ring *ring = keel_alert_ring_new(&r, 1000);
        keel_alert_env env = {.memory_limit = size};
        double v;
        for (int64_t t = 1000; t <= 4000; t += 1000) {
            keel_alert_ring_push(ring, &r, j, &env, t);
            (void)keel_alert_value(ring, &r, t, &v);
        }
        keel_alert_ring_free(ring);
        drive(&r, data, size);
    }
    json_decref(j);
    return 0;
}
