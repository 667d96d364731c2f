/* keel/otlp.h — the OTLP/HTTP JSON exporter of the tracer (keel/trace.h):
 * batches are POSTed with the outbound HTTP client (keel/http_client.h)
 * from each worker's own loop, to keel_trace_export_url() with
 * Content-Type application/json and OTEL_EXPORTER_OTLP_HEADERS; the
 * answer's status, Retry-After (seconds or an HTTP date) and
 * partialSuccess.rejectedSpans go back to the tracer, which retries and
 * counts. At shutdown the last batch goes with a blocking libcurl call
 * from the main thread (no loop is left to block), within
 * OTEL_SHUTDOWN_TIMEOUT.
 */
#ifndef KEEL_OTLP_H
#define KEEL_OTLP_H

#include "http_client.h"
#include "trace.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fills *out with an exporter sending through c (borrowed: it must outlive
 * the tracer's workers) with t's options. 0, or KEEL_EINVAL when no
 * endpoint is configured (nothing to export to). */
int keel_otlp_exporter(keel_trace_exporter *out, keel_http_client *c, const keel_tracer *t);

/* The partialSuccess.rejectedSpans of an OTLP JSON answer (a number or a
 * decimal string), 0 when absent or unreadable. */
uint64_t keel_otlp_rejected(const char *body, size_t len);

#ifdef __cplusplus
}
#endif
#endif
