/* ws_metrics.c — the WebSocket transport's metrics: a keel_ws_observer
 * (keel/ws.h) that counts into the registry. The per-message series are
 * looked up once per worker shard and then updated without hashing. */
#include <stdio.h>

#include "keel/metrics.h"
#include "keel/server.h"
#include "keel/ws.h"

struct keel_ws_metrics {
    keel_metric *messages, *bytes, *closes, *dropped, *queue;
    unsigned nshards;
    /* per shard: messages in/out, bytes in/out, queue histogram */
    keel_metric_series **series;
};

enum { S_MSG_IN, S_MSG_OUT, S_BYTES_IN, S_BYTES_OUT, S_QUEUE, S_N };

static const char *const dir_names[] = {"in", "out"};

static keel_metric_series **shard_series(keel_ws_metrics *m, unsigned shard)
{
    if (shard >= m->nshards)
        return NULL;
    keel_metric_series **s = m->series + (size_t)shard * S_N;
    if (!s[0]) {
        for (int d = 0; d < 2; d++) {
            const char *lv[] = {dir_names[d]};
            keel_metric_add(m->messages, shard, lv, 0);
            keel_metric_add(m->bytes, shard, lv, 0);
            s[S_MSG_IN + d] = keel_metric_series_get(m->messages, shard, lv);
            s[S_BYTES_IN + d] = keel_metric_series_get(m->bytes, shard, lv);
        }
        s[S_QUEUE] = keel_metric_series_get(m->queue, shard, NULL);
    }
    return s;
}

static void on_message(void *arg, unsigned shard, keel_ws_dir dir, size_t bytes, size_t queued)
{
    keel_ws_metrics *m = arg;
    keel_metric_series **s = shard_series(m, shard);
    if (!s)
        return;
    keel_metric_series_add(s[S_MSG_IN + dir], 1);
    keel_metric_series_add(s[S_BYTES_IN + dir], (double)bytes);
    if (dir == KEEL_WS_OUT)
        keel_metric_series_observe(s[S_QUEUE], (double)queued);
}

/* Bounded labels: the codes of RFC 6455 and 4000-4099 (the application's
 * own, e.g. 4001 "token expired") as themselves, anything else "other". */
static void code_label(int code, char *buf, size_t cap)
{
    if ((code >= 1000 && code <= 1015) || (code >= 4000 && code <= 4099))
        snprintf(buf, cap, "%d", code);
    else
        snprintf(buf, cap, "other");
}

static void on_close(void *arg, unsigned shard, int code)
{
    keel_ws_metrics *m = arg;
    char b[16];
    code_label(code, b, sizeof(b));
    const char *lv[] = {b};
    keel_metric_add(m->closes, shard, lv, 1);
}

static void on_drop(void *arg, unsigned shard, const char *reason)
{
    keel_ws_metrics *m = arg;
    const char *lv[] = {reason};
    keel_metric_add(m->dropped, shard, lv, 1);
}

static double connections(void *arg)
{
    return (double)keel_ws_connections(arg);
}

keel_ws_metrics *keel_ws_metrics_new(keel_metrics *reg, keel_server *srv)
{
    static const double buckets[] = {0, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304};
    keel_ws_metrics *m = keel_calloc(1, sizeof(*m));
    m->nshards = keel_metrics_shards(reg);
    m->series = keel_calloc((size_t)m->nshards * S_N, sizeof(*m->series));
    keel_metrics_callback(reg, "ws_connections", "Open WebSocket connections", KEEL_GAUGE,
                          connections, srv);
    m->messages = keel_metrics_counter(reg, "ws_messages_total", "WebSocket messages",
                                       (const char *const[]){"direction", NULL});
    m->bytes = keel_metrics_counter(reg, "ws_bytes_total", "WebSocket payload bytes",
                                    (const char *const[]){"direction", NULL});
    m->closes = keel_metrics_counter(reg, "ws_closes_total",
                                     "WebSocket connections ended, by close code",
                                     (const char *const[]){"code", NULL});
    m->dropped = keel_metrics_counter(reg, "ws_dropped_total",
                                      "WebSocket messages not sent, by reason",
                                      (const char *const[]){"reason", NULL});
    m->queue = keel_metrics_histogram(reg, "ws_outbound_queue_bytes",
                                      "Bytes queued for a WebSocket client after each send",
                                      NULL, buckets, sizeof(buckets) / sizeof(buckets[0]));
    unsigned other = m->nshards - 1; /* the shared shard */
    static const int known[] = {1000, 1001, 1002, 1003, 1005, 1006, 1007,
                                1008, 1009, 1010, 1011, 1013};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        char b[16];
        code_label(known[i], b, sizeof(b));
        keel_metric_add(m->closes, other, (const char *const[]){b}, 0);
    }
    keel_metric_add(m->dropped, other, (const char *const[]){"slow_consumer"}, 0);
    keel_metric_add(m->dropped, other, (const char *const[]){"closing"}, 0);
    keel_metric_add(m->dropped, other, (const char *const[]){"droppable"}, 0);
    keel_metric_add(m->dropped, other, (const char *const[]){"droppable_oldest"}, 0);
    for (int d = 0; d < 2; d++) {
        keel_metric_add(m->messages, other, (const char *const[]){dir_names[d]}, 0);
        keel_metric_add(m->bytes, other, (const char *const[]){dir_names[d]}, 0);
    }
    keel_ws_observer o = {.on_message = on_message, .on_close = on_close, .on_drop = on_drop,
                          .arg = m};
    keel_server_set_ws_observer(srv, &o);
    return m;
}

void keel_ws_metrics_free(keel_ws_metrics *m)
{
    if (!m)
        return;
    keel_free(m->series);
    keel_free(m);
}
