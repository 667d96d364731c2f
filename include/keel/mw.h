/* keel/mw.h — keel's standard middleware. Each constructor returns a
 * middleware table to pass to keel_server_use(); order matters (see
 * docs/extending.md): request id first, then the access log and metrics,
 * then the rest. */
#ifndef KEEL_MW_H
#define KEEL_MW_H

#include "metrics.h"
#include "server.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Request id and W3C trace context: accepts a well-formed X-Request-Id or
 * X-Correlation-Id (1..128 of [A-Za-z0-9._:-]) or generates one, echoes it
 * as X-Request-Id; parses `traceparent` (continuing its trace) or starts a
 * new trace. */
keel_middleware keel_mw_request_id(void);

/* Whether an incoming request id is acceptable as-is. */
int keel_request_id_valid(keel_str id);

/* One JSON log line per request when `all` is set (ACCESS_LOG); requests
 * slower than slow_ms are logged at warn either way. Routes flagged
 * KEEL_ROUTE_NO_LOG are skipped unless slow or failing (5xx). */
keel_middleware keel_mw_access_log(int all, uint64_t slow_ms);

/* http_requests_total{method,route,status} and
 * http_request_duration_seconds{method,route}, declared in m. */
keel_middleware keel_mw_http_metrics(keel_metrics *m);

#ifdef __cplusplus
}
#endif
#endif
