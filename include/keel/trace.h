/* keel/trace.h — distributed tracing: W3C trace context, sampling, spans
 * recorded per request, OTLP/HTTP JSON encoding, batching per worker, and
 * the last traces kept in memory for /api/v1/admin/traces.
 *
 * A tracer serves every worker of a server. Each worker owns its part:
 * a pool of trace records (one per sampled request in flight, reused:
 * no malloc per span once warm), an export queue of encoded spans
 * (OTEL_BSP_MAX_QUEUE_SIZE per worker: a full queue drops and counts
 * otel_spans_dropped_total, never waits), a ring of the last
 * TRACE_BUFFER_SIZE traces (its own mutex, taken by the worker once per
 * trace and by the admin routes; no lock is shared between workers), and
 * one export in flight at a time, sent through an exporter (below) from
 * the worker's own loop.
 *
 * Spans. The request-id middleware (keel_mw_request_id_traced) starts a
 * server span per sampled request and ends it when the request completes;
 * child spans are made by the database, Redis and outbound HTTP clients
 * and by handlers (keel_span_start / keel_span_end). A span is named by a
 * keel_span_ref: a value that stays safe to use after its request ended
 * (then every call on it is a no-op). Everything here runs on the
 * request's own loop thread unless said otherwise. When a request is not
 * sampled, every function is a no-op on an empty ref.
 */
#ifndef KEEL_TRACE_H
#define KEEL_TRACE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "metrics.h"
#include "server.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- context */

/* A W3C trace context. ids are raw bytes; all-zero ids are invalid. */
typedef struct keel_trace_ctx {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t flags; /* bit 0: sampled */
} keel_trace_ctx;

/* Parses a `traceparent` value strictly (W3C Trace Context level 1):
 * "vv-<32 hex>-<16 hex>-<2 hex>", lowercase hex only; version "ff" is
 * invalid; version 00 is exactly 55 characters; a later version may carry
 * more after a '-' at offset 55. 0 and *out filled, or KEEL_EINVAL. */
int keel_traceparent_parse(const char *v, size_t len, keel_trace_ctx *out);
/* Writes "00-<trace>-<span>-<flags>" and a NUL into out (56 bytes). */
void keel_traceparent_format(const keel_trace_ctx *c, char out[56]);
/* 1 when a `tracestate` value is acceptable to carry on: at most 512
 * characters of printable ASCII, at most 32 comma-separated members each
 * key=value. 0 otherwise (it is then dropped). */
int keel_tracestate_valid(const char *v, size_t len);

/* Samplers (OTEL_TRACES_SAMPLER). */
typedef enum keel_sampler {
    KEEL_SAMPLER_PARENT_ALWAYS_ON = 0, /* parentbased_always_on (the default) */
    KEEL_SAMPLER_PARENT_ALWAYS_OFF,    /* parentbased_always_off */
    KEEL_SAMPLER_PARENT_RATIO,         /* parentbased_traceidratio */
    KEEL_SAMPLER_ALWAYS_ON,            /* always_on */
    KEEL_SAMPLER_ALWAYS_OFF,           /* always_off */
    KEEL_SAMPLER_RATIO,                /* traceidratio */
} keel_sampler;

/* The sampling decision for a trace: with a parent (has_parent) a
 * parent-based sampler follows the parent's sampled flag; otherwise the
 * root sampler decides. The ratio samplers decide from the trace id
 * alone, as OpenTelemetry's TraceIdRatioBased does (the last 8 bytes as a
 * big-endian signed 64-bit number, its absolute value below ratio *
 * INT64_MAX), so every service of a trace decides alike. 1 or 0. */
int keel_sampler_decide(keel_sampler s, double ratio, const uint8_t trace_id[16],
                        int has_parent, int parent_sampled);

/* ---------------------------------------------------------------- options */

typedef struct keel_trace_options {
    int disabled;               /* OTEL_SDK_DISABLED */
    int sampler;                /* OTEL_TRACES_SAMPLER (keel_sampler) */
    char *sampler_arg;          /* OTEL_TRACES_SAMPLER_ARG */
    double ratio;               /* parsed from sampler_arg */
    char *endpoint;             /* OTEL_EXPORTER_OTLP_ENDPOINT */
    char *traces_endpoint;      /* OTEL_EXPORTER_OTLP_TRACES_ENDPOINT */
    char *headers;              /* OTEL_EXPORTER_OTLP_HEADERS (secret) */
    char *service_name;         /* OTEL_SERVICE_NAME ("" = SERVICE_NAME) */
    char *resource_attributes;  /* OTEL_RESOURCE_ATTRIBUTES */
    unsigned max_queue;         /* OTEL_BSP_MAX_QUEUE_SIZE, per worker */
    unsigned max_batch;         /* OTEL_BSP_MAX_EXPORT_BATCH_SIZE */
    uint64_t schedule_delay_ms; /* OTEL_BSP_SCHEDULE_DELAY */
    uint64_t export_timeout_ms; /* OTEL_BSP_EXPORT_TIMEOUT */
    uint64_t shutdown_timeout_ms; /* OTEL_SHUTDOWN_TIMEOUT */
    unsigned buffer_size;       /* TRACE_BUFFER_SIZE: traces kept per worker */
    unsigned max_spans;         /* TRACE_MAX_SPANS: spans of one request */
} keel_trace_options;

extern const keel_config_module keel_trace_config;

/* The traces URL: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as is, else
 * OTEL_EXPORTER_OTLP_ENDPOINT + "/v1/traces"; "" when neither is set. */
const char *keel_trace_export_url(const keel_trace_options *o);

/* Splits "k=v,k=v" (OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS),
 * trimming spaces and percent-decoding keys and values, calling fn for
 * each pair. 0, or KEEL_EINVAL for a member without '=' or an empty key
 * (fn may have been called for the members before it). */
int keel_trace_kv_parse(const char *s, void (*fn)(const char *k, const char *v, void *arg),
                        void *arg);

/* ---------------------------------------------------------------- exporter */

/* How a batch is sent; the tracer owns batching, retries and counting.
 * send runs on worker w's loop and must call done(status, ...) exactly
 * once later on that loop (never inside send), or return a negative error
 * without calling it. body stays valid and unchanged until done has run
 * (send may keep it instead of copying it). status: the HTTP status, or a negative error when
 * there was no answer. retry_after_ms: the answer's Retry-After (0: none).
 * rejected: partialSuccess.rejectedSpans of a 2xx answer (0: none).
 * send_sync sends from a thread that is no loop (shutdown), within
 * timeout_ms: the HTTP status or a negative error. */
typedef void (*keel_trace_sent_cb)(void *arg, int status, uint64_t retry_after_ms,
                                   uint64_t rejected);
typedef struct keel_trace_exporter {
    int (*send)(void *ctx, keel_worker *w, const char *body, size_t len,
                keel_trace_sent_cb done, void *arg);
    int (*send_sync)(void *ctx, const char *body, size_t len, uint64_t timeout_ms,
                     uint64_t *rejected);
    void (*free)(void *ctx);
    void *ctx;
} keel_trace_exporter;

/* ---------------------------------------------------------------- tracer */

typedef struct keel_tracer keel_tracer;

/* A tracer for every worker of s, with the options of keel_trace_config
 * in cfg (read now) and the otel_* counters in m (may be NULL). It
 * registers worker hooks (call before keel_server_start, and before
 * creating the client the exporter sends with, so that its stop hook runs
 * first). NULL when OTEL_SDK_DISABLED is true. */
keel_tracer *keel_tracer_new(keel_server *s, const keel_config *cfg, keel_metrics *m);
/* Hands the exporter to t (t owns it: exp->free runs in
 * keel_tracer_free). Before keel_server_start. Without one nothing is
 * exported (the in-memory traces still work). */
void keel_tracer_set_exporter(keel_tracer *t, const keel_trace_exporter *exp);
/* After the workers stopped: sends what is left (queued spans, batches
 * in flight when the workers stopped) with exporter->send_sync, within
 * OTEL_SHUTDOWN_TIMEOUT in all. Returns the number of spans sent. */
size_t keel_tracer_shutdown(keel_tracer *t);
/* Frees t (NULL: no-op); the workers must have stopped. */
void keel_tracer_free(keel_tracer *t);
const keel_trace_options *keel_tracer_options(const keel_tracer *t);

/* OTLP JSON of a resource's spans, the prefix and suffix around the
 * comma-separated spans (built at start; exposed for tests). */
const char *keel_tracer_payload_prefix(const keel_tracer *t);

/* Request side, used by keel_mw_request_id_traced: decides, starts the
 * server span (when sampled), sets the request's trace and span ids and
 * X-Trace-Id; keel_trace_request_end ends the span and hands the trace
 * to the worker's queue and ring. */
void keel_trace_request_begin(keel_tracer *t, keel_req *r, keel_str traceparent,
                              keel_str tracestate);
void keel_trace_request_end(keel_tracer *t, keel_req *r);

/* ---------------------------------------------------------------- spans */

typedef struct keel_span_ref {
    void *trace;  /* the request's record; NULL: nothing is recorded */
    uint32_t gen; /* the record's generation when the ref was made */
    int32_t idx;  /* the span within it */
} keel_span_ref;

enum { KEEL_SPAN_INTERNAL = 1, KEEL_SPAN_SERVER = 2, KEEL_SPAN_CLIENT = 3 };

/* The current span of r (the server span, or the innermost open one
 * started with keel_span_start); an empty ref when r is not sampled. */
keel_span_ref keel_trace_ref(keel_req *r);
/* The same for the request running on this thread (keel_req_current). */
keel_span_ref keel_trace_current(void);
/* 1 when ref still names a span that is recorded. */
int keel_span_ok(keel_span_ref ref);

/* A child of parent, started now (or at start_ns, monotonic, when not 0).
 * An empty ref when parent is empty or the request has TRACE_MAX_SPANS. */
keel_span_ref keel_span_begin(keel_span_ref parent, const char *name, int kind,
                              uint64_t start_ns);
/* Ends the span now (or at end_ns when not 0). Once only; later no-op. */
void keel_span_finish(keel_span_ref s, uint64_t end_ns);
void keel_span_set_str(keel_span_ref s, const char *key, const char *value);
void keel_span_set_strn(keel_span_ref s, const char *key, const char *value, size_t n);
void keel_span_set_int(keel_span_ref s, const char *key, int64_t value);
void keel_span_add_event(keel_span_ref s, const char *name);
/* Status error with a message (NULL: none). */
void keel_span_set_error(keel_span_ref s, const char *message);
/* "00-<trace>-<span>-<flags>" for a call made inside span s; 0, or
 * KEEL_EINVAL (s empty: the caller may use keel_trace_propagate). */
int keel_span_traceparent(keel_span_ref s, char out[56]);
/* The traceparent to send for r when no span is recorded (not sampled):
 * r's trace id, r's span id and flags 00. 0 or KEEL_EINVAL. */
int keel_trace_propagate(keel_req *r, char out[56]);
/* The tracestate r came with (NULL: none). */
const char *keel_trace_tracestate(keel_req *r);

/* Handler API: a child of r's current span that becomes r's current span
 * (database, Redis and HTTP calls made meanwhile are its children), and
 * its end, which makes its parent current again. */
keel_span_ref keel_span_start(keel_req *r, const char *name);
void keel_span_end(keel_req *r, keel_span_ref s);

/* ---------------------------------------------------------------- in memory */

/* The recent traces, newest first, at most `limit`: a JSON array of
 * {trace_id, name, start (RFC 3339), start_unix_nano, duration_ms,
 * status ("ok"/"error"/"unset"), http_status, span_count}. New reference. */
struct json_t *keel_tracer_recent(keel_tracer *t, size_t limit);
/* One trace: {trace_id, spans: [OTLP span objects, parentSpanId set]}; NULL
 * when no worker keeps it. trace_id is 32 hex characters. New reference. */
struct json_t *keel_tracer_get(keel_tracer *t, const char *trace_id);

#ifdef __cplusplus
}
#endif
#endif
