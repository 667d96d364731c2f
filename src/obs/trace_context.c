/* trace_context.c — the parts of tracing that are pure functions of
 * their input: W3C traceparent / tracestate, the samplers, the tracing
 * configuration module and its k=v lists (OTEL_RESOURCE_ATTRIBUTES,
 * OTEL_EXPORTER_OTLP_HEADERS). The spans themselves: trace.c. */
#include "keel/trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "obs/trace_internal.h"


/* "000102...ff": the two digits of every byte value, one lookup a byte. */
static const char hex_pairs[513] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
/* Four bytes (as loaded: p[0] lowest) as eight hex digits in one word:
 * byte k spread to bytes 2k (its high nibble) and 2k+1 (its low one),
 * then '0' added to every nibble and 39 more to those from 10 ('a'). */
static inline uint64_t hex4(uint32_t a)
{
    uint64_t x = a;
    x = (x | (x << 16)) & 0x0000ffff0000ffffull;
    x = (x | (x << 8)) & 0x00ff00ff00ff00ffull;
    uint64_t n = ((x >> 4) & 0x000f000f000f000full) | ((x & 0x000f000f000f000full) << 8);
    uint64_t over9 = ((n + 0x0606060606060606ull) >> 4) & 0x0101010101010101ull;
    return n + 0x3030303030303030ull + over9 * 39;
}
#endif

void keel__trace_hex_encode(char *out, const uint8_t *p, size_t n)
{
    size_t i = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    for (; i + 4 <= n; i += 4) { /* ids: 16 and 8 bytes */
        uint32_t a;
        memcpy(&a, p + i, 4);
        uint64_t h = hex4(a);
        memcpy(out + 2 * i, &h, 8);
    }
#endif
    for (; i < n; i++)
        memcpy(out + 2 * i, hex_pairs + 2 * p[i], 2);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* uppercase is invalid in traceparent */
}

/* n bytes from 2n lowercase hex digits; -1 on a bad digit. */
static int hex_decode(uint8_t *out, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int h = hexval(p[2 * i]), l = hexval(p[2 * i + 1]);
        if (h < 0 || l < 0)
            return -1;
        out[i] = (uint8_t)(h << 4 | l);
    }
    return 0;
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

/* ---------------------------------------------------------------- context */

int keel_traceparent_parse(const char *v, size_t len, keel_trace_ctx *out)
{
    uint8_t ver;
    if (!v || len < 55 || hex_decode(&ver, v, 1) < 0 || ver == 0xff)
        return KEEL_EINVAL;
    if (ver == 0 && len != 55)
        return KEEL_EINVAL;
    if (len > 55 && v[55] != '-')
        return KEEL_EINVAL; /* a later version: more fields after a '-' */
    if (v[2] != '-' || v[35] != '-' || v[52] != '-')
        return KEEL_EINVAL;
    keel_trace_ctx c;
    if (hex_decode(c.trace_id, v + 3, 16) < 0 || hex_decode(c.span_id, v + 36, 8) < 0 ||
        hex_decode(&c.flags, v + 53, 1) < 0)
        return KEEL_EINVAL;
    if (all_zero(c.trace_id, 16) || all_zero(c.span_id, 8))
        return KEEL_EINVAL;
    *out = c;
    return 0;
}

void keel_traceparent_format(const keel_trace_ctx *c, char out[56])
{
    memcpy(out, "00-", 3);
    keel__trace_hex_encode(out + 3, c->trace_id, 16);
    out[35] = '-';
    keel__trace_hex_encode(out + 36, c->span_id, 8);
    out[52] = '-';
    keel__trace_hex_encode(out + 53, &c->flags, 1);
    out[55] = '\0';
}

int keel_tracestate_valid(const char *v, size_t len)
{
    if (!v || len == 0 || len > 512)
        return 0;
    unsigned members = 0;
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && v[j] != ',')
            j++;
        /* one member: OWS key=value OWS (empty members are allowed) */
        size_t a = i, b = j;
        while (a < b && (v[a] == ' ' || v[a] == '\t'))
            a++;
        while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t'))
            b--;
        if (a < b) {
            if (++members > 32)
                return 0;
            const char *eq = memchr(v + a, '=', b - a);
            if (!eq || eq == v + a || eq == v + b - 1)
                return 0;
            for (size_t k = a; k < b; k++) {
                unsigned char ch = (unsigned char)v[k];
                if (ch < 0x20 || ch > 0x7e)
                    return 0;
            }
        } else {
            for (size_t k = i; k < j; k++) /* an empty member: OWS only */
                if (v[k] != ' ' && v[k] != '\t')
                    return 0;
        }
        i = j + 1;
    }
    return members > 0;
}

/* ---------------------------------------------------------------- sampler */

static int ratio_decide(double ratio, const uint8_t id[16])
{
    if (ratio >= 1.0)
        return 1;
    if (!(ratio > 0.0))
        return 0;
    uint64_t x = 0;
    for (int i = 8; i < 16; i++)
        x = x << 8 | id[i];
    int64_t v = (int64_t)x;
    uint64_t a = v < 0 ? (v == INT64_MIN ? (uint64_t)INT64_MAX : (uint64_t)(-v)) : (uint64_t)v;
    uint64_t bound = (uint64_t)(ratio * (double)INT64_MAX);
    return a < bound;
}

int keel_sampler_decide(keel_sampler s, double ratio, const uint8_t trace_id[16],
                        int has_parent, int parent_sampled)
{
    switch (s) {
    case KEEL_SAMPLER_ALWAYS_ON:
        return 1;
    case KEEL_SAMPLER_ALWAYS_OFF:
        return 0;
    case KEEL_SAMPLER_RATIO:
        return ratio_decide(ratio, trace_id);
    case KEEL_SAMPLER_PARENT_ALWAYS_ON:
        return has_parent ? parent_sampled != 0 : 1;
    case KEEL_SAMPLER_PARENT_ALWAYS_OFF:
        return has_parent ? parent_sampled != 0 : 0;
    case KEEL_SAMPLER_PARENT_RATIO:
        return has_parent ? parent_sampled != 0 : ratio_decide(ratio, trace_id);
    }
    return 0;
}

/* ---------------------------------------------------------------- options */

static int percent_decode(char *s)
{
    char *w = s;
    for (char *p = s; *p; p++) {
        if (*p == '%') {
            int h = p[1] ? (p[1] >= 'A' && p[1] <= 'F' ? p[1] - 'A' + 10 : hexval(p[1])) : -1;
            int l = h >= 0 && p[2] ? (p[2] >= 'A' && p[2] <= 'F' ? p[2] - 'A' + 10 : hexval(p[2]))
                                   : -1;
            if (h < 0 || l < 0 || (h == 0 && l == 0))
                return KEEL_EINVAL; /* %00 would cut the string */
            *w++ = (char)(h << 4 | l);
            p += 2;
        } else {
            *w++ = *p;
        }
    }
    *w = '\0';
    return 0;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

int keel_trace_kv_parse(const char *s, void (*fn)(const char *k, const char *v, void *arg),
                        void *arg)
{
    if (!s || !*s)
        return 0;
    char *copy = keel_strdup(s), *save = NULL;
    int rc = 0;
    for (char *m = strtok_r(copy, ",", &save); m; m = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(m, '=');
        if (!eq) {
            if (*trim(m))
                rc = KEEL_EINVAL;
            if (rc)
                break;
            continue;
        }
        *eq = '\0';
        char *k = trim(m), *v = trim(eq + 1);
        if (!*k || percent_decode(k) < 0 || percent_decode(v) < 0 || !*k) {
            rc = KEEL_EINVAL;
            break;
        }
        if (fn)
            fn(k, v, arg);
    }
    keel_free(copy);
    return rc;
}

static int check_kv(const char *v)
{
    return keel_trace_kv_parse(v, NULL, NULL);
}

#define AT(f) KEEL_CONFIG_AT(keel_trace_options, f)
static const keel_config_var trace_vars[] = {
    {.name = "OTEL_SDK_DISABLED", .type = KEEL_CONFIG_BOOL, .def = "false", AT(disabled),
     .help = "true: no tracing at all (no spans, no X-Trace-Id from the tracer; "
             "trace ids are still made for logs)"},
    {.name = "OTEL_TRACES_SAMPLER", .type = KEEL_CONFIG_ENUM, .def = "parentbased_always_on",
     AT(sampler),
     .values = KEEL_CONFIG_VALUES("parentbased_always_on", "parentbased_always_off",
                                  "parentbased_traceidratio", "always_on", "always_off",
                                  "traceidratio"),
     .help = "which requests are traced: the parent's decision when a traceparent came in "
             "(parentbased_*), else always, never, or a ratio of trace ids"},
    {.name = "OTEL_TRACES_SAMPLER_ARG", .type = KEEL_CONFIG_STR, .def = "1.0", AT(sampler_arg),
     .help = "the ratio (0..1) of the traceidratio samplers"},
    {.name = "OTEL_EXPORTER_OTLP_ENDPOINT", .type = KEEL_CONFIG_URL, .def = "", AT(endpoint),
     .values = KEEL_CONFIG_VALUES("http://", "https://"),
     .help = "OTLP/HTTP collector base URL; spans go to it + /v1/traces (empty: no export)"},
    {.name = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", .type = KEEL_CONFIG_URL, .def = "",
     AT(traces_endpoint), .values = KEEL_CONFIG_VALUES("http://", "https://"),
     .help = "full OTLP/HTTP traces URL, used as is (wins over OTEL_EXPORTER_OTLP_ENDPOINT)"},
    {.name = "OTEL_EXPORTER_OTLP_HEADERS", .type = KEEL_CONFIG_STR, .def = "", AT(headers),
     .flags = KEEL_CONFIG_SECRET, .check = check_kv, .accepts = "key=value,key=value",
     .help = "headers sent with every export (k=v,k=v, percent-encoded), e.g. an API key"},
    {.name = "OTEL_SERVICE_NAME", .type = KEEL_CONFIG_STR, .def = "", AT(service_name),
     .help = "service.name of the spans (empty: SERVICE_NAME)"},
    {.name = "OTEL_RESOURCE_ATTRIBUTES", .type = KEEL_CONFIG_STR, .def = "",
     AT(resource_attributes), .check = check_kv, .accepts = "key=value,key=value",
     .help = "resource attributes of the spans (k=v,k=v, percent-encoded)"},
    {.name = "OTEL_BSP_MAX_QUEUE_SIZE", .type = KEEL_CONFIG_UINT, .def = "2048", AT(max_queue),
     .min = 1, .max = 1000000,
     .help = "spans waiting for export per worker; more are dropped (otel_spans_dropped_total)"},
    {.name = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", .type = KEEL_CONFIG_UINT, .def = "512",
     AT(max_batch), .min = 1, .max = 1000000,
     .help = "spans per export request (at most OTEL_BSP_MAX_QUEUE_SIZE)"},
    {.name = "OTEL_BSP_SCHEDULE_DELAY", .type = KEEL_CONFIG_DURATION, .def = "5000",
     AT(schedule_delay_ms), .min = 1,
     .help = "longest wait before queued spans are exported (bare numbers are milliseconds)"},
    {.name = "OTEL_BSP_EXPORT_TIMEOUT", .type = KEEL_CONFIG_DURATION, .def = "30000",
     AT(export_timeout_ms), .min = 1,
     .help = "one export request, retries after 429/502/503/504 included, gives up after this"},
    {.name = "OTEL_SHUTDOWN_TIMEOUT", .type = KEEL_CONFIG_DURATION, .def = "5s",
     AT(shutdown_timeout_ms), .min = 1,
     .help = "on SIGTERM, after the drain, the last spans are sent within this"},
    {.name = "TRACE_BUFFER_SIZE", .type = KEEL_CONFIG_UINT, .def = "100", AT(buffer_size),
     .max = 100000,
     .help = "recent traces kept in memory per worker for /api/v1/admin/traces (0: none)"},
    {.name = "TRACE_MAX_SPANS", .type = KEEL_CONFIG_UINT, .def = "64", AT(max_spans), .min = 1,
     .max = 10000, .help = "spans recorded for one request; more are dropped and counted"},
};
#undef AT

static int trace_validate(void *opts, const keel_config *cfg, FILE *err)
{
    (void)cfg;
    keel_trace_options *o = opts;
    char *end = NULL;
    double d = o->sampler_arg ? strtod(o->sampler_arg, &end) : 1.0;
    if (o->sampler_arg && (end == o->sampler_arg || *trim(end) || !(d >= 0.0 && d <= 1.0))) {
        fprintf(err, "keel: OTEL_TRACES_SAMPLER_ARG: expected a ratio from 0 to 1, got \"%s\"\n",
                o->sampler_arg);
        return KEEL_ECONFIG;
    }
    o->ratio = d;
    if (o->max_batch > o->max_queue) {
        fprintf(err, "keel: OTEL_BSP_MAX_EXPORT_BATCH_SIZE: must be at most "
                     "OTEL_BSP_MAX_QUEUE_SIZE (%u)\n",
                o->max_queue);
        return KEEL_ECONFIG;
    }
    return 0;
}

const keel_config_module keel_trace_config = KEEL_CONFIG_MODULE(
    "tracing", "Tracing: W3C trace context, sampling, OTLP/HTTP JSON export (src/obs/trace_context.c).",
    keel_trace_options, trace_vars, trace_validate);

const char *keel_trace_export_url(const keel_trace_options *o)
{
    static __thread char url[2048];
    if (o->traces_endpoint && *o->traces_endpoint)
        return o->traces_endpoint;
    if (!o->endpoint || !*o->endpoint)
        return "";
    size_t n = strlen(o->endpoint);
    while (n && o->endpoint[n - 1] == '/')
        n--;
    snprintf(url, sizeof(url), "%.*s/v1/traces", (int)n, o->endpoint);
    return url;
}
