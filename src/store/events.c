/* events.c — the event bus (see keel/events.h).
 *
 * The subscriber is one thread per process with a blocking hiredis
 * context (keel_redis_connect_blocking: connect timeout, AUTH, SELECT)
 * that it only reads when poll() says so; an eventfd wakes the poll to
 * stop it. It PSUBSCRIBEs every distinct registered pattern (behind the
 * escaped key prefix), pings the server after 5 s of silence and drops a
 * connection that does not answer, and reconnects with exponential
 * backoff and full jitter up to REDIS_RECONNECT_MAX. A pmessage names the
 * pattern it matched, so a message is handed to the subscriptions of that
 * pattern only — Redis itself sends one pmessage per matching pattern.
 *
 * A message reaches the workers as one allocation holding the channel,
 * the envelope and one mailbox slot per worker, freed by the last worker
 * that ran it. No worker loop ever waits on the subscriber, and the
 * subscriber never waits on a worker: a backlog over EV_BACKLOG_MAX
 * undelivered messages drops new ones (counted).
 */
#include "keel/events.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <uv.h>

#include "keel/log.h"
#include "keel/redis.h"
#include "keel/resil.h"

#define EV_BACKLOG_MAX 10000
#define EV_PING_AFTER_MS 5000

typedef struct ev_sub {
    char *pattern;
    size_t pidx; /* into b->patterns */
    keel_event_cb fn;
    void *arg;
} ev_sub;

struct keel_events {
    keel_server *srv;
    keel_redis *redis;
    char *instance;
    char *prefix;     /* REDIS_KEY_PREFIX "events:" */
    char *sub_prefix; /* the same with glob characters escaped */
    uint64_t reconnect_max_ms, timeout_ms;
    ev_sub *subs;
    size_t nsubs;
    char **patterns; /* distinct */
    size_t npatterns;
    int started;   /* atomic: the workers started */
    int running;   /* atomic: workers not yet stopped */
    int connected; /* atomic */
    int thread_started;
    int efd;
    uv_thread_t thread;
    int64_t backlog; /* atomic: messages not yet run by every worker */
    keel_metric *m_published, *m_received, *m_dropped;
};

/* ---------------------------------------------------------------- glob */

/* Redis's stringmatchlen (util.c), case-sensitive, with every read bounded. */
int keel_events_match(const char *p, size_t plen, const char *s, size_t slen)
{
    while (plen && slen) {
        switch (p[0]) {
        case '*':
            while (plen > 1 && p[1] == '*') {
                p++;
                plen--;
            }
            if (plen == 1)
                return 1;
            while (slen) {
                if (keel_events_match(p + 1, plen - 1, s, slen))
                    return 1;
                s++;
                slen--;
            }
            return 0;
        case '?':
            s++;
            slen--;
            break;
        case '[': {
            int neg, match = 0;
            p++;
            plen--;
            neg = plen && p[0] == '^';
            if (neg) {
                p++;
                plen--;
            }
            for (;;) {
                if (plen == 0) {
                    /* unterminated: Redis steps back onto the last byte */
                    p--;
                    plen++;
                    break;
                }
                if (p[0] == '\\' && plen >= 2) {
                    p++;
                    plen--;
                    if (p[0] == s[0])
                        match = 1;
                } else if (p[0] == ']') {
                    break;
                } else if (plen >= 3 && p[1] == '-') {
                    unsigned char lo = (unsigned char)p[0], hi = (unsigned char)p[2],
                                  c = (unsigned char)s[0];
                    if (lo > hi) {
                        unsigned char t = lo;
                        lo = hi;
                        hi = t;
                    }
                    if (c >= lo && c <= hi)
                        match = 1;
                    p += 2;
                    plen -= 2;
                } else if (p[0] == s[0]) {
                    match = 1;
                }
                p++;
                plen--;
            }
            if (neg)
                match = !match;
            if (!match)
                return 0;
            s++;
            slen--;
            break;
        }
        case '\\':
            if (plen >= 2) {
                p++;
                plen--;
            }
            /* fall through */
        default:
            if (p[0] != s[0])
                return 0;
            s++;
            slen--;
            break;
        }
        p++;
        plen--;
        if (slen == 0) {
            while (plen && p[0] == '*') {
                p++;
                plen--;
            }
            break;
        }
    }
    return plen == 0 && slen == 0;
}

/* ---------------------------------------------------------------- delivery */

typedef struct ev_msg ev_msg;
typedef struct ev_slot {
    ev_msg *msg;
    keel_worker *w;
} ev_slot;

struct ev_msg {
    keel_events *b;
    int refs;    /* atomic */
    long pidx;   /* the matched pattern; -1: match every subscription's */
    char *channel, *envelope;
    size_t chlen, len;
    ev_slot slots[];
};

static void count_dropped(keel_events *b, unsigned shard, const char *reason, uint64_t n)
{
    if (b->m_dropped) {
        const char *lv[] = {reason};
        keel_metric_add(b->m_dropped, shard, lv, n);
    }
}

void keel_events_count_dropped(keel_events *b, unsigned shard, const char *reason, uint64_t n)
{
    count_dropped(b, shard, reason, n);
}

static void msg_unref(ev_msg *m)
{
    if (__atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        __atomic_sub_fetch(&m->b->backlog, 1, __ATOMIC_RELAXED);
        keel_free(m);
    }
}

static void deliver(void *arg)
{
    ev_slot *sl = arg;
    ev_msg *m = sl->msg;
    keel_events *b = m->b;
    for (size_t i = 0; i < b->nsubs; i++) {
        ev_sub *s = &b->subs[i];
        if (m->pidx >= 0 ? s->pidx == (size_t)m->pidx
                         : keel_events_match(s->pattern, strlen(s->pattern), m->channel,
                                             m->chlen))
            s->fn(s->arg, sl->w, m->channel, m->envelope, m->len);
    }
    msg_unref(m);
}

/* Hands one message to every worker. shard: the caller's metric shard. */
static void fanout(keel_events *b, long pidx, const char *ch, size_t chlen, const char *env,
                   size_t len, unsigned shard)
{
    if (b->m_received)
        keel_metric_add(b->m_received, shard, NULL, 1);
    unsigned n = keel_server_workers(b->srv);
    if (b->nsubs == 0 || n == 0)
        return;
    if (__atomic_load_n(&b->backlog, __ATOMIC_RELAXED) >= EV_BACKLOG_MAX) {
        count_dropped(b, shard, "backlog", 1);
        return;
    }
    ev_msg *m = keel_malloc(sizeof(*m) + n * sizeof(ev_slot) + chlen + len + 2);
    m->b = b;
    m->refs = (int)n + 1; /* + this function, until every post is made */
    m->pidx = pidx;
    m->channel = (char *)(m->slots + n);
    memcpy(m->channel, ch, chlen);
    m->channel[chlen] = '\0';
    m->chlen = chlen;
    m->envelope = m->channel + chlen + 1;
    memcpy(m->envelope, env, len);
    m->envelope[len] = '\0';
    m->len = len;
    __atomic_add_fetch(&b->backlog, 1, __ATOMIC_RELAXED);
    for (unsigned i = 0; i < n; i++) {
        m->slots[i].msg = m;
        m->slots[i].w = keel_server_worker(b->srv, i);
        if (!m->slots[i].w || keel_worker_post(m->slots[i].w, deliver, &m->slots[i]) < 0) {
            count_dropped(b, shard, "closed", 1);
            msg_unref(m);
        }
    }
    msg_unref(m);
}

/* ---------------------------------------------------------------- the subscriber */

static uint64_t backoff_ms(keel_events *b, unsigned attempt)
{
    uint64_t seed;
    randombytes_buf(&seed, sizeof(seed));
    keel_retry_opts o = {.base_ms = 100, .max_delay_ms = b->reconnect_max_ms};
    uint64_t d = keel_retry_backoff_ms(&o, attempt, seed);
    return d < 20 ? 20 : d;
}

/* Waits up to ms for the stop signal: 1 when stopping. */
static int wait_stop(keel_events *b, uint64_t ms)
{
    struct pollfd p = {.fd = b->efd, .events = POLLIN};
    int rc = poll(&p, 1, (int)(ms > 60000 ? 60000 : ms));
    return rc > 0;
}

static int flush_out(redisContext *c)
{
    int done = 0;
    while (!done)
        if (redisBufferWrite(c, &done) != REDIS_OK)
            return -1;
    return 0;
}

static void handle_reply(keel_events *b, redisReply *rep, size_t *confirmed)
{
    unsigned shard = keel_server_workers(b->srv); /* the shared shard */
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
        rep->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = rep->element[0]->str;
    if (!strcmp(kind, "pmessage") && rep->elements == 4) {
        const redisReply *pat = rep->element[1], *ch = rep->element[2], *data = rep->element[3];
        size_t spl = strlen(b->sub_prefix), pl = strlen(b->prefix);
        if (pat->type != REDIS_REPLY_STRING || ch->type != REDIS_REPLY_STRING ||
            data->type != REDIS_REPLY_STRING || pat->len < spl || ch->len < pl)
            return;
        long pidx = -1;
        for (size_t i = 0; i < b->npatterns; i++)
            if (strlen(b->patterns[i]) == pat->len - spl &&
                !memcmp(b->patterns[i], pat->str + spl, pat->len - spl))
                pidx = (long)i;
        if (pidx >= 0)
            fanout(b, pidx, ch->str + pl, ch->len - pl, data->str, data->len, shard);
    } else if (!strcmp(kind, "psubscribe")) {
        if (++*confirmed == b->npatterns) {
            __atomic_store_n(&b->connected, 1, __ATOMIC_RELAXED);
            keel_log(KEEL_LOG_INFO, "events: subscribed", "{s:i}", "patterns",
                     (int)b->npatterns);
        }
    }
}

/* One connection's life: 0 when asked to stop, -1 when it was lost. */
static int serve_connection(keel_events *b, redisContext *c)
{
    size_t argc = b->npatterns + 1, confirmed = 0;
    const char **argv = keel_calloc(argc, sizeof(char *));
    char **full = keel_calloc(argc, sizeof(char *));
    argv[0] = "PSUBSCRIBE";
    for (size_t i = 0; i < b->npatterns; i++) {
        size_t n = strlen(b->sub_prefix) + strlen(b->patterns[i]) + 1;
        full[i] = keel_malloc(n);
        snprintf(full[i], n, "%s%s", b->sub_prefix, b->patterns[i]);
        argv[i + 1] = full[i];
    }
    int rc = redisAppendCommandArgv(c, (int)argc, argv, NULL) == REDIS_OK ? flush_out(c) : -1;
    for (size_t i = 0; i < b->npatterns; i++)
        keel_free(full[i]);
    keel_free(full);
    keel_free(argv);
    uint64_t last_rx = keel_now_ms(), ping_sent = 0;
    uint64_t ping_wait = b->timeout_ms * 4 < 2000 ? 2000 : b->timeout_ms * 4;
    while (rc == 0) {
        struct pollfd p[2] = {{.fd = c->fd, .events = POLLIN}, {.fd = b->efd, .events = POLLIN}};
        int n = poll(p, 2, 250);
        if (n < 0 && errno != EINTR) {
            rc = -1;
            break;
        }
        if (n > 0 && p[1].revents)
            return 0;
        uint64_t now = keel_now_ms();
        if (n > 0 && p[0].revents) {
            if (redisBufferRead(c) != REDIS_OK) {
                rc = -1;
                break;
            }
            last_rx = now;
            ping_sent = 0;
            void *rep = NULL;
            while (redisGetReplyFromReader(c, &rep) == REDIS_OK && rep) {
                handle_reply(b, rep, &confirmed);
                freeReplyObject(rep);
                rep = NULL;
            }
            if (c->err) {
                rc = -1;
                break;
            }
            continue;
        }
        if (ping_sent && now - ping_sent > ping_wait) {
            keel_log(KEEL_LOG_WARN, "events: the subscriber connection stopped answering",
                     NULL);
            rc = -1;
        } else if (!ping_sent && now - last_rx > EV_PING_AFTER_MS) {
            const char *ping[1] = {"PING"};
            ping_sent = now;
            if (redisAppendCommandArgv(c, 1, ping, NULL) != REDIS_OK || flush_out(c) < 0)
                rc = -1;
        }
    }
    keel_log(KEEL_LOG_WARN, "events: subscriber connection lost", "{s:s}", "error",
             c->err ? c->errstr : "no answer");
    return -1;
}

static void subscriber_run(keel_events *b)
{
    unsigned attempt = 0;
    for (;;) {
        char err[160];
        redisContext *c = keel_redis_connect_blocking(b->redis, err, sizeof(err));
        if (c) {
            /* reads are driven by poll: no socket timeout on an idle subscription */
            struct timeval none = {0, 0};
            redisSetTimeout(c, none);
            if (attempt > 0)
                keel_log(KEEL_LOG_INFO, "events: subscriber connected", "{s:i}", "attempts",
                         (int)attempt + 1);
            attempt = 0;
            int rc = serve_connection(b, c);
            __atomic_store_n(&b->connected, 0, __ATOMIC_RELAXED);
            redisFree(c);
            if (rc == 0)
                return;
        } else if (attempt == 0) {
            keel_log(KEEL_LOG_WARN, "events: cannot connect the subscriber", "{s:s}", "error",
                     err);
        }
        attempt++;
        if (wait_stop(b, backoff_ms(b, attempt)))
            return;
    }
}

static void subscriber_main(void *arg)
{
    subscriber_run(arg);
    keel_log_thread_close(); /* this thread's log buffer */
}

static void on_worker_start(keel_worker *w, void *arg)
{
    keel_events *b = arg;
    (void)w;
    __atomic_add_fetch(&b->running, 1, __ATOMIC_RELAXED);
    if (__atomic_exchange_n(&b->started, 1, __ATOMIC_ACQ_REL))
        return;
    if (b->redis && b->npatterns) {
        uv_thread_options_t opt = {UV_THREAD_HAS_STACK_SIZE, 256 << 10};
        if (uv_thread_create_ex(&b->thread, &opt, subscriber_main, b) == 0)
            b->thread_started = 1;
        else
            keel_log(KEEL_LOG_ERROR, "events: cannot start the subscriber thread", NULL);
    }
}

static void signal_stop(keel_events *b)
{
    uint64_t one = 1;
    if (write(b->efd, &one, sizeof(one)) < 0) {
        /* the counter is far from overflowing: nothing to do */
    }
}

static void on_worker_stop(keel_worker *w, void *arg)
{
    keel_events *b = arg;
    (void)w;
    if (__atomic_sub_fetch(&b->running, 1, __ATOMIC_ACQ_REL) == 0)
        signal_stop(b); /* joined by keel_events_free */
}

/* ---------------------------------------------------------------- publish */

typedef struct pub_call {
    keel_events *b;
    keel_worker *w;
    keel_events_done_cb cb;
    void *arg;
} pub_call;

static void published(void *arg, int status, redisReply *reply)
{
    pub_call *pc = arg;
    if (status == 0 && reply && reply->type == REDIS_REPLY_ERROR)
        status = KEEL_EPROTO;
    if (status == 0 && pc->b->m_published)
        keel_metric_add(pc->b->m_published, keel_worker_id(pc->w), NULL, 1);
    pc->cb(pc->arg, status);
    keel_free(pc);
}

static void published_local(void *arg)
{
    published(arg, 0, NULL);
}

static void make_uuid(char out[KEEL_EVENTS_ID_LEN + 1])
{
    unsigned char u[16];
    randombytes_buf(u, sizeof(u));
    u[6] = (unsigned char)((u[6] & 0x0f) | 0x40);
    u[8] = (unsigned char)((u[8] & 0x3f) | 0x80);
    snprintf(out, KEEL_EVENTS_ID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
             u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
             u[15]);
}

int keel_events_publish(keel_events *b, keel_worker *w, const char *channel,
                        const json_t *payload, char id_out[KEEL_EVENTS_ID_LEN + 1],
                        keel_events_done_cb cb, void *arg)
{
    size_t chlen = channel ? strnlen(channel, KEEL_EVENTS_CHANNEL_MAX + 1) : 0;
    if (!b || !w || !cb || !payload || chlen == 0 || chlen > KEEL_EVENTS_CHANNEL_MAX)
        return KEEL_EINVAL;
    char id[KEEL_EVENTS_ID_LEN + 1];
    make_uuid(id);
    json_t *env = json_pack("{s:s,s:s,s:I,s:s,s:O}", "id", id, "channel", channel, "ts",
                            (json_int_t)keel_wall_ms(), "source_instance", b->instance,
                            "payload", payload);
    char *text = env ? json_dumps(env, JSON_COMPACT) : NULL;
    json_decref(env);
    if (!text)
        return KEEL_EINVAL;
    pub_call *pc = keel_malloc(sizeof(*pc));
    *pc = (pub_call){.b = b, .w = w, .cb = cb, .arg = arg};
    int rc;
    if (b->redis) {
        size_t pl = strlen(b->prefix);
        char *key = keel_malloc(pl + chlen + 1);
        memcpy(key, b->prefix, pl);
        memcpy(key + pl, channel, chlen + 1);
        const char *argv[3] = {"PUBLISH", key, text};
        size_t lens[3] = {7, pl + chlen, strlen(text)};
        rc = keel_redis_commandargv(b->redis, w, published, pc, 3, argv, lens);
        keel_free(key);
    } else {
        rc = keel_worker_post(w, published_local, pc);
        if (rc == 0)
            fanout(b, -1, channel, chlen, text, strlen(text), keel_worker_id(w));
    }
    if (rc < 0)
        keel_free(pc);
    else
        memcpy(id_out, id, sizeof(id));
    free(text);
    return rc;
}

/* ---------------------------------------------------------------- set-up */

int keel_events_subscribe(keel_events *b, const char *pattern, keel_event_cb fn, void *arg)
{
    size_t n = pattern ? strnlen(pattern, KEEL_EVENTS_CHANNEL_MAX + 1) : 0;
    if (!b || !fn || n == 0 || n > KEEL_EVENTS_CHANNEL_MAX)
        return KEEL_EINVAL;
    if (__atomic_load_n(&b->started, __ATOMIC_ACQUIRE))
        return KEEL_EALREADY;
    size_t pidx = b->npatterns;
    for (size_t i = 0; i < b->npatterns; i++)
        if (!strcmp(b->patterns[i], pattern))
            pidx = i;
    if (pidx == b->npatterns) {
        b->patterns = keel_realloc(b->patterns, (b->npatterns + 1) * sizeof(char *));
        b->patterns[b->npatterns++] = keel_strdup(pattern);
    }
    b->subs = keel_realloc(b->subs, (b->nsubs + 1) * sizeof(ev_sub));
    b->subs[b->nsubs++] = (ev_sub){.pattern = b->patterns[pidx], .pidx = pidx, .fn = fn,
                                   .arg = arg};
    return 0;
}

static double m_connected(void *arg)
{
    return keel_events_connected(arg);
}

#define AT(f) KEEL_CONFIG_AT(keel_instance_options, f)
static const keel_config_var instance_vars[] = {
    {.name = "INSTANCE_ID", .type = KEEL_CONFIG_STR, .def = "", AT(instance_id),
     .help = "this instance's id in events and /distributed/info; empty = hostname-pid"},
    {.name = "REGION", .type = KEEL_CONFIG_STR, .def = "", AT(region),
     .help = "region shown in /distributed/info"},
    {.name = "ZONE", .type = KEEL_CONFIG_STR, .def = "", AT(zone),
     .help = "zone shown in /distributed/info"},
};
#undef AT

const keel_config_module keel_instance_config = KEEL_CONFIG_MODULE(
    "instance", "This instance's identity, in events and /distributed/info (src/store/events.c).",
    keel_instance_options, instance_vars, NULL);

keel_events *keel_events_new(keel_server *s, keel_redis *r, const keel_config *cfg,
                             keel_metrics *m)
{
    const keel_instance_options *inst = keel_config_get(cfg, &keel_instance_config);
    const keel_redis_options *ro = keel_config_get(cfg, &keel_redis_config);
    keel_library_init(); /* randomness for ids */
    keel_events *b = keel_calloc(1, sizeof(*b));
    b->srv = s;
    b->redis = r;
    b->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (b->efd < 0)
        abort();
    if (inst->instance_id && *inst->instance_id) {
        b->instance = keel_strdup(inst->instance_id);
    } else {
        char host[256] = "keel";
        gethostname(host, sizeof(host) - 1);
        host[sizeof(host) - 1] = '\0';
        size_t n = strlen(host) + 24;
        b->instance = keel_malloc(n);
        snprintf(b->instance, n, "%s-%d", host, (int)getpid());
    }
    const char *kp = r ? keel_redis_prefix(r) : "";
    size_t n = strlen(kp) + 8;
    b->prefix = keel_malloc(n);
    snprintf(b->prefix, n, "%sevents:", kp);
    b->sub_prefix = keel_malloc(2 * strlen(b->prefix) + 1);
    char *o = b->sub_prefix;
    for (const char *p = b->prefix; *p; p++) {
        if (strchr("*?[]\\^", *p))
            *o++ = '\\';
        *o++ = *p;
    }
    *o = '\0';
    b->reconnect_max_ms = ro->redis_reconnect_max_ms ? ro->redis_reconnect_max_ms : 5000;
    b->timeout_ms = ro->redis_timeout_ms ? ro->redis_timeout_ms : 500;
    if (m) {
        static const char *const reason[] = {"reason", NULL};
        b->m_published = keel_metrics_counter(m, "events_published_total",
                                              "Events published by this process", NULL);
        b->m_received = keel_metrics_counter(m, "events_received_total",
                                             "Events that reached this process", NULL);
        b->m_dropped = keel_metrics_counter(m, "events_dropped_total",
                                            "Events not delivered: backlog (workers behind), "
                                            "slow_reader (a consumer's queue was full), "
                                            "closed (workers stopped)",
                                            reason);
        keel_metric_declare_each(b->m_dropped, NULL, 0,
                                 (const char *const[]){"backlog", "slow_reader", "closed", NULL});
        keel_metrics_callback(m, "events_subscriber_connected",
                              "1 while the event bus subscription is live", KEEL_GAUGE,
                              m_connected, b);
    }
    keel_worker_hooks h = {.on_start = on_worker_start, .on_stop = on_worker_stop, .arg = b};
    keel_server_add_worker_hooks(s, &h);
    return b;
}

void keel_events_free(keel_events *b)
{
    if (!b)
        return;
    if (b->thread_started) {
        signal_stop(b);
        uv_thread_join(&b->thread);
    }
    close(b->efd);
    for (size_t i = 0; i < b->npatterns; i++)
        keel_free(b->patterns[i]);
    keel_free(b->patterns);
    keel_free(b->subs);
    keel_free(b->instance);
    keel_free(b->prefix);
    keel_free(b->sub_prefix);
    keel_free(b);
}

const char *keel_events_instance(const keel_events *b)
{
    return b->instance;
}

const char *keel_events_backend(const keel_events *b)
{
    return b->redis ? "redis" : "memory";
}

int keel_events_connected(const keel_events *b)
{
    return b->redis ? __atomic_load_n(&b->connected, __ATOMIC_RELAXED) : 1;
}
