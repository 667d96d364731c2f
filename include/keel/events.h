/* keel/events.h — an event bus: publish/subscribe on named channels with
 * Redis glob patterns, across every instance sharing a Redis, or inside
 * the process without one.
 *
 * A message is a JSON envelope
 *     {"id": uuid, "channel": ..., "ts": Unix ms, "source_instance": ...,
 *      "payload": ...}
 * (source_instance is INSTANCE_ID, or hostname-pid when that is empty).
 *
 * With Redis, publish is a PUBLISH on the publishing worker's connection
 * (channel REDIS_KEY_PREFIX "events:" CHANNEL), and the process holds ONE
 * subscriber connection, on a thread of its own, that PSUBSCRIBEs every
 * registered pattern; each message is posted to every worker's mailbox
 * (keel_worker_post), so handlers run on the worker loops — a handler on
 * worker w delivers to what lives on w (its WebSocket or SSE clients).
 * The subscriber reconnects with exponential backoff and jitter; delivery
 * is Redis pub/sub's: at most once, nothing is kept while a subscriber is
 * disconnected. Without Redis, publish posts to the workers directly.
 *
 * Metrics: events_published_total, events_received_total (messages that
 * reached this process), events_dropped_total{reason} (backlog: workers
 * behind by more than 10,000 messages; slow_reader: a consumer's own
 * queue was full, see keel_events_count_dropped; closed: the workers had
 * stopped), events_subscriber_connected (1 while the subscription is
 * live; always 1 without Redis).
 */
#ifndef KEEL_EVENTS_H
#define KEEL_EVENTS_H

#include "metrics.h"
#include "server.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_events keel_events;

/* This instance's identity (keel/config.h): INSTANCE_ID, REGION, ZONE.
 * keel_config_get(cfg, &keel_instance_config). */
typedef struct keel_instance_options {
    char *instance_id; /* INSTANCE_ID ("" = hostname-pid) */
    char *region;      /* REGION */
    char *zone;        /* ZONE */
} keel_instance_options;

extern const keel_config_module keel_instance_config;
struct keel_redis;
struct json_t;

#define KEEL_EVENTS_CHANNEL_MAX 200
#define KEEL_EVENTS_ID_LEN 36

/* A bus for the workers of s, on r (NULL: in-process), INSTANCE_ID
 * as the source. Before keel_server_start; keel_events_free after the
 * workers stopped (it stops and joins the subscriber thread). */
keel_events *keel_events_new(keel_server *s, struct keel_redis *r, const keel_config *cfg,
                             keel_metrics *m);
void keel_events_free(keel_events *b);

/* Runs on worker w's loop for each message whose channel matches the
 * pattern it was registered with: the channel and the envelope as
 * compact JSON text (NUL-terminated; valid during the call). */
typedef void (*keel_event_cb)(void *arg, keel_worker *w, const char *channel,
                              const char *envelope, size_t len);

/* Registers fn for channels matching pattern (a Redis glob: * ? [abc]
 * [^a] [a-z] \x), on every worker. Before keel_server_start. 0, or
 * KEEL_EINVAL (empty or too long pattern), KEEL_EALREADY (started). */
int keel_events_subscribe(keel_events *b, const char *pattern, keel_event_cb fn, void *arg);

/* status 0 once the message has been handed on (Redis answered the
 * PUBLISH, or it was posted to the workers), else a Redis failure. */
typedef void (*keel_events_done_cb)(void *arg, int status);

/* Publishes payload (borrowed, any JSON value) on channel (1 ..
 * KEEL_EVENTS_CHANNEL_MAX bytes). The envelope's id is written to id_out.
 * Call on w's loop. 0 (cb runs later, once, on w's loop), or KEEL_EINVAL
 * / KEEL_EUNAVAIL (Redis unavailable: nothing published, cb not called). */
int keel_events_publish(keel_events *b, keel_worker *w, const char *channel,
                        const struct json_t *payload, char id_out[KEEL_EVENTS_ID_LEN + 1],
                        keel_events_done_cb cb, void *arg);

/* 1 when str matches the glob pattern the way Redis PSUBSCRIBE matches. */
int keel_events_match(const char *pattern, size_t plen, const char *str, size_t slen);

/* This instance's id (INSTANCE_ID or hostname-pid). */
const char *keel_events_instance(const keel_events *b);
/* "redis" or "memory". */
const char *keel_events_backend(const keel_events *b);
/* 1 while the subscription is live (always without Redis). Any thread. */
int keel_events_connected(const keel_events *b);
/* Adds n to events_dropped_total{reason} (a consumer's own drops), from
 * worker `shard`. */
void keel_events_count_dropped(keel_events *b, unsigned shard, const char *reason, uint64_t n);

#ifdef __cplusplus
}
#endif
#endif
