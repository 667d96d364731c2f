/* breaker.c — circuit breakers and their registry (see keel/resil.h).
 *
 * Failures are kept as a ring of the last `failures` failure times: the
 * breaker opens when the ring is full and its oldest entry is still within
 * the window, i.e. when `failures` failures happened within `window_ms`.
 * A generation number changes with every state change; tickets carry the
 * generation they were issued in, so late reports are recognised. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "keel/resil.h"

#define AT(f) KEEL_CONFIG_AT(keel_breaker_opts, f)
static const keel_config_var breaker_vars[] = {
    {.name = "BREAKER_FAILURE_THRESHOLD", .type = KEEL_CONFIG_UINT, .def = "5", AT(failures),
     .min = 1, .max = 1000, .help = "failures within BREAKER_WINDOW that open a circuit breaker"},
    {.name = "BREAKER_WINDOW", .type = KEEL_CONFIG_DURATION, .def = "10s", AT(window_ms),
     .min = 1, .help = "window in which a circuit breaker counts failures"},
    {.name = "BREAKER_RECOVERY_TIMEOUT", .type = KEEL_CONFIG_DURATION, .def = "5s",
     AT(recovery_ms), .min = 1,
     .help = "time an open circuit breaker waits before letting probes through (half-open)"},
    {.name = "BREAKER_HALF_OPEN_PROBES", .type = KEEL_CONFIG_UINT, .def = "1", AT(probes),
     .min = 1, .max = 1000,
     .help = "calls a half-open breaker lets through; all must succeed to close it"},
};
#undef AT

const keel_config_module keel_breaker_config = KEEL_CONFIG_MODULE(
    "breaker", "Circuit breakers in front of keel's outbound dependencies (src/resil/breaker.c).",
    keel_breaker_opts, breaker_vars, NULL);

struct keel_breaker {
    keel_breaker *next; /* in the registry */
    keel_breakers *reg;
    char *name;
    keel_breaker_opts o;
    uv_mutex_t mu;
    keel_breaker_state state;
    uint64_t gen;       /* state changes so far */
    uint64_t *ring;     /* failure times, o.failures entries */
    uint64_t nring, head;
    uint64_t opened_at;
    uint64_t probes_out, probes_ok;
    uint64_t opened;    /* times it opened */
    uint64_t failures_total;
};

struct keel_breakers {
    uv_mutex_t mu;
    keel_breaker *head;
    keel_metric *state_metric;
    keel_metric *transitions;
};

static const char *const state_names[] = {"closed", "open", "half_open"};
static const char *const state_names_null[] = {"closed", "open", "half_open", NULL};

const char *keel_breaker_state_name(keel_breaker_state s)
{
    return (unsigned)s < 3 ? state_names[s] : "unknown";
}

const char *keel_breaker_name(const keel_breaker *b)
{
    return b->name;
}

/* Under b->mu. */
static void set_state(keel_breaker *b, keel_breaker_state s, uint64_t now)
{
    if (b->state == s)
        return;
    b->state = s;
    b->gen++;
    b->probes_out = b->probes_ok = 0;
    if (s == KEEL_BREAKER_OPEN) {
        b->opened_at = now;
        b->opened++;
    }
    if (s == KEEL_BREAKER_CLOSED)
        b->nring = b->head = 0;
    if (b->reg && b->reg->state_metric) {
        const char *lv[] = {b->name};
        const char *tv[] = {b->name, state_names[s]};
        keel_metric_set(b->reg->state_metric, UINT32_MAX, lv, (double)s);
        keel_metric_add(b->reg->transitions, UINT32_MAX, tv, 1);
    }
}

/* Under b->mu: OPEN whose recovery time passed becomes HALF_OPEN. */
static void refresh(keel_breaker *b, uint64_t now)
{
    if (b->state == KEEL_BREAKER_OPEN && now - b->opened_at >= b->o.recovery_ms)
        set_state(b, KEEL_BREAKER_HALF_OPEN, now);
}

keel_breaker *keel_breaker_new(keel_breakers *reg, const char *name,
                               const keel_breaker_opts *opts)
{
    keel_breaker *b = keel_calloc(1, sizeof(*b));
    b->name = keel_strdup(name);
    b->o = *opts;
    if (b->o.failures == 0)
        b->o.failures = 1;
    if (b->o.probes == 0)
        b->o.probes = 1;
    b->ring = keel_calloc(b->o.failures, sizeof(uint64_t));
    uv_mutex_init(&b->mu);
    if (reg) {
        b->reg = reg;
        uv_mutex_lock(&reg->mu);
        b->next = reg->head;
        reg->head = b;
        uv_mutex_unlock(&reg->mu);
        if (reg->state_metric) {
            const char *lv[] = {b->name};
            keel_metric_set(reg->state_metric, UINT32_MAX, lv, 0);
            const char *tv[] = {b->name, NULL}; /* "to": each state */
            keel_metric_declare_each(reg->transitions, tv, 1, state_names_null);
        }
    }
    return b;
}

static void breaker_destroy(keel_breaker *b)
{
    uv_mutex_destroy(&b->mu);
    keel_free(b->ring);
    keel_free(b->name);
    keel_free(b);
}

void keel_breaker_free(keel_breaker *b)
{
    if (b && !b->reg)
        breaker_destroy(b);
}

uint64_t keel_breaker_allow(keel_breaker *b, uint64_t now_ms)
{
    uint64_t ticket = 0;
    uv_mutex_lock(&b->mu);
    refresh(b, now_ms);
    switch (b->state) {
    case KEEL_BREAKER_CLOSED:
        ticket = b->gen + 1;
        break;
    case KEEL_BREAKER_HALF_OPEN:
        if (b->probes_out < b->o.probes) {
            b->probes_out++;
            ticket = b->gen + 1;
        }
        break;
    case KEEL_BREAKER_OPEN:
        break;
    }
    uv_mutex_unlock(&b->mu);
    return ticket;
}

void keel_breaker_record(keel_breaker *b, uint64_t ticket, int ok, uint64_t now_ms)
{
    uv_mutex_lock(&b->mu);
    if (!ok)
        b->failures_total++;
    if (ticket != b->gen + 1) { /* issued before the last state change */
        uv_mutex_unlock(&b->mu);
        return;
    }
    switch (b->state) {
    case KEEL_BREAKER_CLOSED:
        if (!ok) {
            b->ring[b->head] = now_ms;
            b->head = (b->head + 1) % b->o.failures;
            if (b->nring < b->o.failures)
                b->nring++;
            /* full: the oldest kept failure is the one at head */
            if (b->nring == b->o.failures && now_ms - b->ring[b->head] < b->o.window_ms)
                set_state(b, KEEL_BREAKER_OPEN, now_ms);
        }
        break;
    case KEEL_BREAKER_HALF_OPEN:
        if (!ok)
            set_state(b, KEEL_BREAKER_OPEN, now_ms);
        else if (++b->probes_ok >= b->o.probes)
            set_state(b, KEEL_BREAKER_CLOSED, now_ms);
        break;
    case KEEL_BREAKER_OPEN:
        break;
    }
    uv_mutex_unlock(&b->mu);
}

keel_breaker_state keel_breaker_get_state(keel_breaker *b, uint64_t now_ms)
{
    uv_mutex_lock(&b->mu);
    keel_breaker_state s = b->state;
    if (s == KEEL_BREAKER_OPEN && now_ms - b->opened_at >= b->o.recovery_ms)
        s = KEEL_BREAKER_HALF_OPEN; /* reported, not changed: allow() moves it */
    uv_mutex_unlock(&b->mu);
    return s;
}

/* ---------------------------------------------------------------- registry */

keel_breakers *keel_breakers_new(keel_metrics *m)
{
    keel_breakers *reg = keel_calloc(1, sizeof(*reg));
    uv_mutex_init(&reg->mu);
    if (m) {
        static const char *const name_label[] = {"name", NULL};
        static const char *const tr_labels[] = {"name", "to", NULL};
        reg->state_metric = keel_metrics_gauge(m, "circuit_breaker_state",
                                               "Circuit breaker state: 0 closed, 1 open, "
                                               "2 half-open", name_label);
        reg->transitions = keel_metrics_counter(m, "circuit_breaker_transitions_total",
                                                "Circuit breaker state changes", tr_labels);
    }
    return reg;
}

void keel_breakers_free(keel_breakers *reg)
{
    if (!reg)
        return;
    keel_breaker *b = reg->head, *next;
    for (; b; b = next) {
        next = b->next;
        breaker_destroy(b);
    }
    uv_mutex_destroy(&reg->mu);
    keel_free(reg);
}

json_t *keel_breakers_json(keel_breakers *reg)
{
    json_t *o = json_object();
    uint64_t now = keel_now_ms();
    uv_mutex_lock(&reg->mu);
    for (keel_breaker *b = reg->head; b; b = b->next) {
        keel_breaker_state s = keel_breaker_get_state(b, now);
        uv_mutex_lock(&b->mu);
        json_object_set_new(o, b->name,
                            json_pack("{s:s,s:I,s:I}", "state", keel_breaker_state_name(s),
                                      "failures_total", (json_int_t)b->failures_total,
                                      "opened_total", (json_int_t)b->opened));
        uv_mutex_unlock(&b->mu);
    }
    uv_mutex_unlock(&reg->mu);
    return o;
}

void keel_breaker_probe_ok(keel_breaker *b, uint64_t now_ms)
{
    for (uint64_t i = 0; i < b->o.probes; i++) {
        if (keel_breaker_get_state(b, now_ms) == KEEL_BREAKER_CLOSED)
            return;
        uint64_t t = keel_breaker_allow(b, now_ms); /* 0 while OPEN or every probe is out */
        if (!t)
            return;
        keel_breaker_record(b, t, 1, now_ms);
    }
}

static int check_breakers(void *arg, char *detail, size_t cap, json_t **data)
{
    keel_breakers *reg = arg;
    uint64_t now = keel_now_ms();
    size_t off = 0;
    int bad = 0;
    detail[0] = '\0';
    uv_mutex_lock(&reg->mu);
    for (keel_breaker *b = reg->head; b; b = b->next) {
        keel_breaker_state s = keel_breaker_get_state(b, now);
        if (off < cap) {
            int n = snprintf(detail + off, cap - off, "%s%s %s", off ? ", " : "", b->name,
                             keel_breaker_state_name(s));
            if (n > 0)
                off += (size_t)n;
        }
        bad |= s != KEEL_BREAKER_CLOSED;
    }
    uv_mutex_unlock(&reg->mu);
    *data = keel_breakers_json(reg);
    return bad ? KEEL_HEALTH_WARN : KEEL_HEALTH_PASS;
}

void keel_breakers_register_health(keel_breakers *reg, keel_health *h)
{
    /* inline: it runs after the dependencies' own checks, which close the
     * breakers of dependencies that answer again (keel_breaker_probe_ok) */
    keel_health_check c = {.name = "circuit_breakers", .data_fn = check_breakers, .arg = reg,
                           .flags = KEEL_HEALTH_INLINE};
    keel_health_add(h, &c);
}
