/* analytics.h — event ingestion, rollups, the admin analytics routes and
 * the content review queue of the reference service (src/app only).
 * docs/analytics.md. */
#ifndef KEEL_APP_ANALYTICS_H
#define KEEL_APP_ANALYTICS_H

#include <stdint.h>

#include "app/app.h"

/* The `analytics` module's options (src/app/analytics.c). */
typedef struct app_analytics_options {
    uint64_t max_batch;         /* ANALYTICS_MAX_BATCH: events per POST */
    uint64_t buffer_max;        /* ANALYTICS_BUFFER_MAX: events buffered per worker */
    uint64_t buffer_bytes;      /* ANALYTICS_BUFFER_BYTES: bytes buffered per worker */
    uint64_t flush_ms;          /* ANALYTICS_FLUSH_MS */
    uint64_t flush_rows;        /* ANALYTICS_FLUSH_ROWS: rows per INSERT */
    uint64_t copy_rows;         /* ANALYTICS_COPY_ROWS: rows per COPY (PostgreSQL) */
    int sync_commit;            /* ANALYTICS_SYNC_COMMIT (PostgreSQL) */
    uint64_t past_ms;           /* ANALYTICS_MAX_AGE: oldest ts accepted */
    uint64_t future_ms;         /* ANALYTICS_MAX_SKEW: latest ts accepted */
    uint64_t props_bytes;       /* ANALYTICS_MAX_PROPERTIES_BYTES */
    uint64_t shutdown_ms;       /* ANALYTICS_SHUTDOWN_TIMEOUT */
    char *rollup_props;         /* ANALYTICS_ROLLUP_PROPERTIES: "plan,country" */
    uint64_t rollup_lookback_ms; /* ANALYTICS_ROLLUP_LOOKBACK */
    uint64_t retention_ms;      /* ANALYTICS_RETENTION (0 = kept) */
    uint64_t retention_batch;   /* ANALYTICS_RETENTION_BATCH */
    uint64_t page_max;          /* ANALYTICS_PAGE_MAX */
    uint64_t top_events;        /* ANALYTICS_TOP_EVENTS */
} app_analytics_options;

extern const keel_config_module app_analytics_config;

/* The most property keys ANALYTICS_ROLLUP_PROPERTIES may list. */
#define APP_ANALYTICS_ROLLUP_KEYS_MAX 16

/* Ingestion (src/app/analytics.c): POST /api/v1/analytics/events, the
 * per-worker buffers and their flusher; then the rollup, retention and
 * admin routes (app_analytics_admin_setup). */
int app_analytics_setup(keel_service *svc);
/* Flushes what is buffered (bounded by ANALYTICS_SHUTDOWN_TIMEOUT) and
 * stops the flusher: after the server stopped. */
void app_analytics_teardown(void);

/* src/app/analytics_rollup.c: the analytics.rollup and analytics.purge
 * job kinds and the /api/v1/admin/analytics routes. */
int app_analytics_admin_setup(keel_service *svc, const app_analytics_options *o);

/* One rollup pass over [from_s, to_s) (Unix seconds, widened to whole
 * days): per hour and per day, counts by name and by each key of keys,
 * and active users, each period rewritten in its own transaction (a
 * re-run gives the same rows). *periods gets the number of periods
 * written. On a database pool or job runner thread. */
int app_analytics_rollup(keel_db_conn *c, int64_t from_s, int64_t to_s, const char *const *keys,
                         size_t nkeys, int64_t *periods);
/* Deletes raw events with ts < before_ms, at most batch per statement,
 * until none is left; *deleted gets how many. */
int app_analytics_purge(keel_db_conn *c, int64_t before_ms, uint64_t batch, int64_t *deleted);
/* Splits "a,b" into keys (pointers into buf): the count, or -1 when a key
 * is not [A-Za-z0-9_]{1,64} or there are more than
 * APP_ANALYTICS_ROLLUP_KEYS_MAX. */
int app_analytics_split_keys(const char *list, char *buf, size_t cap, const char **keys,
                             size_t max);

/* The review queue and GET /api/v1/admin/stats (src/app/reviews.c). */
int app_reviews_setup(keel_service *svc);

#endif
