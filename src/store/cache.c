/* cache.c — keel/cache.h: a JSON cache on Redis or in process, and
 * cache-aside with single-flight.
 *
 * Single-flight. Every keel_cache_fetch of a key looks in one table of
 * flights (a mutex: fetches of all workers meet there). The first one
 * becomes the leader: it reads the cache and, on a miss, runs its loader;
 * later ones append themselves to the flight's waiters and hold their
 * request. When the result is in (and stored), the flight leaves the
 * table and its waiters are answered: on the leader's loop directly,
 * on another worker's loop through keel_worker_post with the value as
 * JSON text, parsed there (no jansson value is shared between threads).
 *
 * Cancellation. A waiter whose request ended is answered KEEL_ECANCELED
 * and unheld. A leader whose request ended before or during its load
 * hands the flight to the next waiter, whose own loader then runs (on its
 * own worker), so one client going away does not fail the others.
 *
 * Invalidation vs. a load in flight. A load may read the source before a
 * write and finish after the write's keel_cache_del: storing it would
 * keep the old value for a whole TTL. keel_cache_del marks a flight of
 * the same key in this process dirty, and a dirty flight's result is
 * delivered to its waiters (they asked before the write) but not stored;
 * a delete that lands while the store is in flight is repeated after it.
 * Across instances (a write on one, a load on another) the window is the
 * load's duration, bounded by the TTL: keep TTLs short for such data.
 *
 * Parsed values per worker (in-process store only). A hit of
 * keel_cache_fetch would parse the stored JSON text on every read; each
 * worker keeps the values it parsed in a small direct-mapped table (L1_SLOTS
 * per worker, for the first L1_WORKERS workers), each tagged with the
 * cache's write generation read before the text was: every set and
 * delete of the process bumps the generation, so a kept value is used only
 * while nothing at all was written since — never after an invalidation —
 * and for at most L1_MAX_MS (or its TTL). fetch's values are read-only
 * (keel/cache.h), which is what lets one parsed value answer many reads on
 * its worker's thread. With Redis there is no such table: another
 * instance's write would not bump this process's generation. */
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include "keel/cache.h"
#include "keel/redis.h"
#include "store/cache_internal.h"

#define FLIGHT_BUCKETS 256
#define MEM_SHARDS 16
#define L1_SLOTS 64
#define L1_WORKERS 64
#define L1_MAX_MS 1000

typedef struct l1_entry {
    uint64_t hash;
    char *fkey; /* "ns:key" */
    size_t fklen;
    json_t *value;
    uint64_t gen, expires_ms;
} l1_entry;

typedef struct l1_table {
    l1_entry e[L1_SLOTS];
} l1_table;

typedef struct waiter waiter;

struct keel_cache_flight {
    keel_cache_flight *hnext;
    keel_cache *c;
    uint64_t hash;
    char ns[KEEL_CACHE_NS_MAX + 1];
    char *key;    /* the caller's key */
    char *fkey;   /* "ns:key" */
    size_t fklen;
    uint64_t ttl_ms;
    waiter *leader;
    waiter *head, *tail; /* waiting; under c->lock */
    int dirty;           /* deleted while loading; under c->lock */
    json_t *value;       /* the loaded value while it is stored */
    uint64_t gen0;       /* c->gen before the cache was read */
};

struct waiter {
    waiter *next;
    keel_cache_flight *f;
    keel_worker *w;
    keel_req *r;
    keel_cache_load_fn load;
    keel_cache_fetch_cb done;
    void *arg;
    /* a delivery posted to another worker */
    int promote;
    int status;
    char *text;
    size_t len;
};

struct keel_cache {
    keel_redis *redis;
    keel__cache_mem *mem;
    uint64_t default_ttl_ms;
    keel_metric *m_hits, *m_misses, *m_errors, *m_loads;
    pthread_mutex_t lock;
    keel_cache_flight *flights[FLIGHT_BUCKETS];
    uint64_t gen;                /* sets and deletes so far (__atomic) */
    l1_table *l1[L1_WORKERS];    /* each written by its own worker only */
};

/* ---------------------------------------------------------------- options */

#define AT(f) KEEL_CONFIG_AT(keel_cache_options, f)
static const keel_config_var cache_vars[] = {
    {.name = "CACHE_MAX_ENTRIES", .type = KEEL_CONFIG_UINT, .def = "10000",
     AT(cache_max_entries), .min = 1, .max = 100000000,
     .help = "entries of the in-process cache (used without REDIS_URL); least recently used "
             "evicted"},
    {.name = "CACHE_MAX_BYTES", .type = KEEL_CONFIG_SIZE, .def = "64mb", AT(cache_max_bytes),
     .min = 4096, .max = 1ull << 40,
     .help = "bytes of the in-process cache (keys, values and overhead)"},
    {.name = "CACHE_DEFAULT_TTL", .type = KEEL_CONFIG_DURATION, .def = "5m",
     AT(cache_default_ttl_ms), .min = 1,
     .help = "lifetime of a cached value stored without its own TTL"},
};
#undef AT

const keel_config_module keel_cache_config =
    KEEL_CONFIG_MODULE("cache", "The cache; in process without REDIS_URL (src/store/cache.c).",
                       keel_cache_options, cache_vars, NULL);

/* ---------------------------------------------------------------- life cycle */

keel_cache *keel_cache_new(const keel_config *config, keel_redis *redis, keel_metrics *m)
{
    const keel_cache_options *cfg = keel_config_get(config, &keel_cache_config);
    keel_cache *c = keel_calloc(1, sizeof(*c));
    c->redis = redis;
    c->default_ttl_ms = cfg->cache_default_ttl_ms ? cfg->cache_default_ttl_ms : 300000;
    if (!redis)
        c->mem = keel__cache_mem_new(MEM_SHARDS,
                                     cfg->cache_max_entries ? cfg->cache_max_entries : 10000,
                                     cfg->cache_max_bytes ? cfg->cache_max_bytes : 64u << 20);
    pthread_mutex_init(&c->lock, NULL);
    if (m) {
        static const char *const ns_label[] = {"ns", NULL};
        c->m_hits = keel_metrics_counter(m, "cache_hits_total", "Cache reads that found a value",
                                         ns_label);
        c->m_misses = keel_metrics_counter(m, "cache_misses_total",
                                           "Cache reads that found nothing (or failed)", ns_label);
        c->m_errors = keel_metrics_counter(m, "cache_errors_total",
                                           "Cache commands Redis could not answer", NULL);
        c->m_loads = keel_metrics_counter(m, "cache_loads_total",
                                          "Loader runs of cache-aside fetches (one per key and "
                                          "miss per process: single-flight)",
                                          ns_label);
    }
    return c;
}

void keel_cache_free(keel_cache *c)
{
    if (!c)
        return;
    for (unsigned w = 0; w < L1_WORKERS; w++) {
        if (!c->l1[w])
            continue;
        for (unsigned i = 0; i < L1_SLOTS; i++) {
            json_decref(c->l1[w]->e[i].value);
            keel_free(c->l1[w]->e[i].fkey);
        }
        keel_free(c->l1[w]);
    }
    keel__cache_mem_free(c->mem);
    pthread_mutex_destroy(&c->lock);
    keel_free(c);
}

int keel_cache_is_shared(const keel_cache *c)
{
    return c->redis != NULL;
}

/* ---------------------------------------------------------------- keys, metrics */

static int ns_valid(const char *ns)
{
    size_t n = ns ? strlen(ns) : 0;
    if (n == 0 || n > KEEL_CACHE_NS_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = ns[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' ||
              ch == '-'))
            return 0;
    }
    return 1;
}

static int key_valid(const char *key)
{
    size_t n = key ? strlen(key) : 0;
    if (n == 0 || n > KEEL_CACHE_KEY_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)key[i] <= 0x20 || key[i] == 0x7f)
            return 0;
    return 1;
}

/* "<prefix>cache:<ns>:<key>" with Redis, "<ns>:<key>" in process;
 * keel_malloc'd. NULL when ns or key is not valid. */
static char *full_key(keel_cache *c, const char *ns, const char *key, size_t *len)
{
    if (!ns_valid(ns) || !key_valid(key))
        return NULL;
    const char *prefix = c->redis ? keel_redis_prefix(c->redis) : "";
    const char *mid = c->redis ? "cache:" : "";
    size_t n = strlen(prefix) + strlen(mid) + strlen(ns) + 1 + strlen(key);
    char *s = keel_malloc(n + 1);
    snprintf(s, n + 1, "%s%s%s:%s", prefix, mid, ns, key);
    *len = n;
    return s;
}

static unsigned shard_of(keel_worker *w)
{
    return w ? keel_worker_id(w) : UINT_MAX;
}

static void count(keel_metric *mt, keel_worker *w, const char *ns)
{
    if (!mt)
        return;
    const char *lv[] = {ns};
    keel_metric_add(mt, shard_of(w), ns ? lv : NULL, 1);
}

static void count_read(keel_cache *c, keel_worker *w, const char *ns, int status, int hit)
{
    if (status < 0)
        count(c->m_errors, w, NULL);
    count(hit ? c->m_hits : c->m_misses, w, ns);
}

/* ---------------------------------------------------------------- get, set, del */

typedef struct op {
    keel_cache *c;
    keel_worker *w;
    char ns[KEEL_CACHE_NS_MAX + 1];
    keel_cache_get_cb get;
    keel_cache_done_cb done;
    void *arg;
} op;

static op *op_new(keel_cache *c, keel_worker *w, const char *ns, void *arg)
{
    op *o = keel_calloc(1, sizeof(*o));
    o->c = c;
    o->w = w;
    snprintf(o->ns, sizeof(o->ns), "%s", ns);
    o->arg = arg;
    return o;
}

static void on_get_reply(void *arg, int status, redisReply *rep)
{
    op *o = arg;
    json_t *v = NULL;
    if (status == 0) {
        if (rep->type == REDIS_REPLY_STRING) {
            v = json_loadb(rep->str, rep->len, JSON_DECODE_ANY, NULL);
            if (!v)
                status = KEEL_EPROTO;
        } else if (rep->type != REDIS_REPLY_NIL) {
            status = KEEL_EPROTO;
        }
    }
    count_read(o->c, o->w, o->ns, status, v != NULL);
    o->get(o->arg, status, v);
    json_decref(v);
    keel_free(o);
}

int keel_cache_get(keel_cache *c, keel_worker *w, const char *ns, const char *key,
                   keel_cache_get_cb cb, void *arg)
{
    size_t klen;
    char *k = full_key(c, ns, key, &klen);
    if (!k)
        return KEEL_EINVAL;
    if (c->mem) {
        size_t len = 0;
        char *text = keel__cache_mem_get(c->mem, k, klen, keel_now_ms(), &len);
        keel_free(k);
        json_t *v = text ? json_loadb(text, len, JSON_DECODE_ANY, NULL) : NULL;
        int status = text && !v ? KEEL_EPROTO : 0;
        keel_free(text);
        count_read(c, w, ns, status, v != NULL);
        cb(arg, status, v);
        json_decref(v);
        return 0;
    }
    op *o = op_new(c, w, ns, arg);
    o->get = cb;
    const char *argv[] = {"GET", k};
    size_t lens[] = {3, klen};
    int rc = keel_redis_commandargv(c->redis, w, on_get_reply, o, 2, argv, lens);
    keel_free(k);
    if (rc < 0) { /* breaker open or connection down: a miss, never stale local data */
        count_read(c, w, ns, rc, 0);
        keel_free(o);
    }
    return rc;
}

static void on_done_reply(void *arg, int status, redisReply *rep)
{
    op *o = arg;
    if (status == 0) {
        if (rep->type == REDIS_REPLY_INTEGER) /* DEL */
            status = rep->integer > 0 ? 0 : KEEL_ENOTFOUND;
        else if (rep->type != REDIS_REPLY_STATUS) /* SET: +OK */
            status = KEEL_EPROTO;
    }
    if (status < 0 && status != KEEL_ENOTFOUND)
        count(o->c->m_errors, o->w, NULL);
    if (o->done)
        o->done(o->arg, status);
    keel_free(o);
}

int keel_cache_set(keel_cache *c, keel_worker *w, const char *ns, const char *key,
                   const json_t *value, uint64_t ttl_ms, keel_cache_done_cb cb, void *arg)
{
    if (!value)
        return KEEL_EINVAL;
    size_t klen;
    char *k = full_key(c, ns, key, &klen);
    if (!k)
        return KEEL_EINVAL;
    char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text || strlen(text) > KEEL_CACHE_VALUE_MAX) {
        free(text);
        keel_free(k);
        return text ? KEEL_ETOOBIG : KEEL_EINVAL;
    }
    if (!ttl_ms)
        ttl_ms = c->default_ttl_ms;
    int rc;
    if (c->mem) {
        __atomic_add_fetch(&c->gen, 1, __ATOMIC_SEQ_CST);
        rc = keel__cache_mem_set(c->mem, k, klen, text, strlen(text), keel_now_ms() + ttl_ms);
        if (rc == 0 && cb)
            cb(arg, 0);
    } else {
        char px[24];
        snprintf(px, sizeof(px), "%llu", (unsigned long long)ttl_ms);
        const char *argv[] = {"SET", k, text, "PX", px};
        size_t lens[] = {3, klen, strlen(text), 2, strlen(px)};
        op *o = op_new(c, w, ns, arg);
        o->done = cb;
        rc = keel_redis_commandargv(c->redis, w, on_done_reply, o, 5, argv, lens);
        if (rc < 0) {
            count(c->m_errors, w, NULL);
            keel_free(o);
        }
    }
    free(text);
    keel_free(k);
    return rc;
}

static uint64_t hash_fkey(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* The flight of fkey, or NULL. Under c->lock. */
static keel_cache_flight **flight_find(keel_cache *c, uint64_t h, const char *fkey, size_t n)
{
    keel_cache_flight **p = &c->flights[h % FLIGHT_BUCKETS];
    for (; *p; p = &(*p)->hnext)
        if ((*p)->hash == h && (*p)->fklen == n && !memcmp((*p)->fkey, fkey, n))
            return p;
    return p;
}

static void mark_dirty(keel_cache *c, const char *ns, const char *key)
{
    size_t n = strlen(ns) + 1 + strlen(key);
    char *fkey = keel_malloc(n + 1);
    snprintf(fkey, n + 1, "%s:%s", ns, key);
    uint64_t h = hash_fkey(fkey, n);
    pthread_mutex_lock(&c->lock);
    keel_cache_flight **p = flight_find(c, h, fkey, n);
    if (*p)
        (*p)->dirty = 1;
    pthread_mutex_unlock(&c->lock);
    keel_free(fkey);
}

int keel_cache_del(keel_cache *c, keel_worker *w, const char *ns, const char *key,
                   keel_cache_done_cb cb, void *arg)
{
    size_t klen;
    char *k = full_key(c, ns, key, &klen);
    if (!k)
        return KEEL_EINVAL;
    mark_dirty(c, ns, key);
    int rc;
    if (c->mem) {
        int found = keel__cache_mem_del(c->mem, k, klen, keel_now_ms());
        __atomic_add_fetch(&c->gen, 1, __ATOMIC_SEQ_CST); /* after: a read between sees no entry */
        rc = 0;
        if (cb)
            cb(arg, found ? 0 : KEEL_ENOTFOUND);
    } else {
        const char *argv[] = {"DEL", k};
        size_t lens[] = {3, klen};
        op *o = op_new(c, w, ns, arg);
        o->done = cb;
        rc = keel_redis_commandargv(c->redis, w, on_done_reply, o, 2, argv, lens);
        if (rc < 0) {
            count(c->m_errors, w, NULL);
            keel_free(o);
        }
    }
    keel_free(k);
    return rc;
}

/* ---------------------------------------------------------------- single-flight */

static void start_load(keel_cache_flight *f);

/* ---------------------------------------------------------------- parsed values per worker */

static l1_table *l1_of(keel_cache *c, keel_worker *w, int create)
{
    if (!c->mem || !w)
        return NULL;
    unsigned id = keel_worker_id(w);
    if (id >= L1_WORKERS)
        return NULL;
    if (!c->l1[id] && create)
        c->l1[id] = keel_calloc(1, sizeof(l1_table));
    return c->l1[id];
}

/* The value this worker keeps for fkey, or NULL. */
static json_t *l1_get(keel_cache *c, keel_worker *w, uint64_t h, const char *fkey, size_t n)
{
    l1_table *t = l1_of(c, w, 0);
    if (!t)
        return NULL;
    l1_entry *e = &t->e[h % L1_SLOTS];
    if (!e->value || e->hash != h || e->fklen != n || memcmp(e->fkey, fkey, n) != 0)
        return NULL;
    if (e->gen != __atomic_load_n(&c->gen, __ATOMIC_SEQ_CST) ||
        uv_now(keel_worker_loop(w)) >= e->expires_ms) { /* the loop's time: no clock read */
        json_decref(e->value);
        e->value = NULL;
        return NULL;
    }
    return e->value;
}

static void l1_put(keel_cache_flight *f, keel_worker *w, json_t *value)
{
    keel_cache *c = f->c;
    l1_table *t = l1_of(c, w, 1);
    if (!t || f->gen0 != __atomic_load_n(&c->gen, __ATOMIC_SEQ_CST))
        return;
    l1_entry *e = &t->e[f->hash % L1_SLOTS];
    json_decref(e->value);
    if (e->fklen != f->fklen || !e->fkey || memcmp(e->fkey, f->fkey, f->fklen) != 0) {
        keel_free(e->fkey);
        e->fkey = keel_malloc(f->fklen);
        memcpy(e->fkey, f->fkey, f->fklen);
        e->fklen = f->fklen;
    }
    e->hash = f->hash;
    e->value = json_incref(value);
    e->gen = f->gen0;
    uint64_t ttl = f->ttl_ms ? f->ttl_ms : c->default_ttl_ms;
    e->expires_ms = uv_now(keel_worker_loop(w)) + (ttl < L1_MAX_MS ? ttl : L1_MAX_MS);
}

static void flight_free(keel_cache_flight *f)
{
    json_decref(f->value);
    keel_free(f->key);
    keel_free(f->fkey);
    keel_free(f);
}

/* Answers one waiter on its own loop and releases its request. */
static void deliver(waiter *wt, int status, json_t *value)
{
    keel_req *r = wt->r;
    if (keel_req_is_finished(r))
        wt->done(r, wt->arg, KEEL_ECANCELED, NULL);
    else
        wt->done(r, wt->arg, status, status == 0 ? value : NULL);
    keel_req_unhold(r);
    keel_free(wt->text);
    keel_free(wt);
}

/* On a waiter's own loop: the result, or the load handed over to it. */
static void on_posted(void *arg)
{
    waiter *wt = arg;
    if (wt->promote) {
        wt->promote = 0;
        start_load(wt->f);
        return;
    }
    json_t *v = NULL;
    int status = wt->status;
    if (status == 0 && !(v = json_loadb(wt->text, wt->len, JSON_DECODE_ANY, NULL)))
        status = KEEL_EPROTO;
    deliver(wt, status, v);
    json_decref(v);
}

/* The flight is over: out of the table (atomically with taking its
 * waiters, so a later fetch starts a new flight instead of joining a
 * finished one), then everyone is answered. */
static void finish(keel_cache_flight *f, int status, const json_t *value)
{
    keel_cache *c = f->c;
    json_t *v = value ? json_incref((json_t *)value) : NULL; /* the leader's done may drop its own */
    pthread_mutex_lock(&c->lock);
    keel_cache_flight **p = flight_find(c, f->hash, f->fkey, f->fklen);
    if (*p == f)
        *p = f->hnext;
    waiter *list = f->head;
    f->head = f->tail = NULL;
    pthread_mutex_unlock(&c->lock);

    waiter *leader = f->leader;
    keel_worker *lw = leader->w; /* leader is freed once answered */
    char *text = NULL;
    size_t len = 0;
    for (waiter *wt = list; wt && !text && status == 0 && v; wt = wt->next)
        if (wt->w != lw) {
            text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            len = text ? strlen(text) : 0;
        }
    deliver(leader, status, v);
    for (waiter *wt = list, *next; wt; wt = next) {
        next = wt->next;
        if (wt->w == lw) {
            deliver(wt, status, v);
            continue;
        }
        wt->status = status;
        if (status == 0 && text) {
            wt->text = keel_malloc(len + 1);
            memcpy(wt->text, text, len + 1);
            wt->len = len;
        } else if (status == 0) {
            wt->status = KEEL_ENOMEM;
        }
        if (keel_worker_post(wt->w, on_posted, wt) < 0) { /* that worker has ended */
            keel_free(wt->text);
            keel_free(wt);
        }
    }
    free(text);
    json_decref(v);
    flight_free(f);
}

/* The leader (on worker `from`) is gone: the next waiter loads, on its own
 * loop; with none left the flight ends. */
static void hand_over(keel_cache_flight *f, keel_worker *from)
{
    keel_cache *c = f->c;
    for (;;) {
        pthread_mutex_lock(&c->lock);
        waiter *next = f->head;
        if (next) {
            f->head = next->next;
            if (!f->head)
                f->tail = NULL;
            next->next = NULL;
            f->leader = next;
        } else {
            keel_cache_flight **p = flight_find(c, f->hash, f->fkey, f->fklen);
            if (*p == f)
                *p = f->hnext;
        }
        pthread_mutex_unlock(&c->lock);
        if (!next) {
            flight_free(f);
            return;
        }
        if (next->w == from) {
            start_load(f);
            return;
        }
        next->promote = 1;
        if (keel_worker_post(next->w, on_posted, next) == 0)
            return;
        keel_free(next); /* that worker has ended */
    }
}

static void start_load(keel_cache_flight *f)
{
    waiter *l = f->leader;
    if (keel_req_is_finished(l->r)) { /* ended while it waited: the next one loads */
        keel_worker *w = l->w;
        f->leader = NULL;
        deliver(l, KEEL_ECANCELED, NULL);
        hand_over(f, w);
        return;
    }
    count(f->c->m_loads, l->w, f->ns);
    l->load(l->r, l->arg, f);
}

static void on_flight_get(void *arg, int status, json_t *value)
{
    keel_cache_flight *f = arg;
    (void)status; /* an error is a miss: load from the source */
    if (value && f->c->mem) /* read on the leader's own loop */
        l1_put(f, f->leader->w, value);
    if (value)
        finish(f, 0, value);
    else
        start_load(f);
}

static void on_flight_stored(void *arg, int status)
{
    keel_cache_flight *f = arg;
    keel_cache *c = f->c;
    pthread_mutex_lock(&c->lock);
    int dirty = f->dirty;
    pthread_mutex_unlock(&c->lock);
    if (dirty && status == 0) /* a delete may have run before this store: repeat it */
        keel_cache_del(c, f->leader->w, f->ns, f->key, NULL, NULL);
    json_t *v = f->value;
    f->value = NULL;
    finish(f, 0, v);
    json_decref(v);
}

void keel_cache_loaded(keel_cache_flight *f, int status, const json_t *value)
{
    if (status == KEEL_ECANCELED) {
        waiter *l = f->leader;
        keel_worker *w = l->w;
        f->leader = NULL;
        deliver(l, KEEL_ECANCELED, NULL);
        hand_over(f, w);
        return;
    }
    if (status < 0 || !value) {
        finish(f, status < 0 ? status : KEEL_ENOTFOUND, NULL);
        return;
    }
    keel_cache *c = f->c;
    pthread_mutex_lock(&c->lock);
    int dirty = f->dirty;
    pthread_mutex_unlock(&c->lock);
    if (dirty) { /* the source changed during the load: answer, do not store */
        finish(f, 0, value);
        return;
    }
    f->value = json_incref((json_t *)value);
    int rc = keel_cache_set(c, f->leader->w, f->ns, f->key, value, f->ttl_ms, on_flight_stored, f);
    if (rc < 0) /* Redis unavailable, value too big: answer uncached */
        on_flight_stored(f, rc);
}

int keel_cache_fetch(keel_cache *c, keel_req *r, const char *ns, const char *key,
                     uint64_t ttl_ms, keel_cache_load_fn load, keel_cache_fetch_cb done,
                     void *arg)
{
    if (!ns_valid(ns) || !key_valid(key) || !load || !done)
        return KEEL_EINVAL;
    waiter *wt = keel_calloc(1, sizeof(*wt));
    wt->w = keel_req_worker(r);
    wt->r = r;
    wt->load = load;
    wt->done = done;
    wt->arg = arg;
    keel_req_hold(r);

    size_t nl = strlen(ns), kl = strlen(key), n = nl + 1 + kl;
    char *fkey = keel_malloc(n + 1); /* "ns:key" */
    memcpy(fkey, ns, nl);
    fkey[nl] = ':';
    memcpy(fkey + nl + 1, key, kl + 1);
    uint64_t h = hash_fkey(fkey, n);
    uint64_t gen0 = __atomic_load_n(&c->gen, __ATOMIC_SEQ_CST);
    json_t *kept = l1_get(c, wt->w, h, fkey, n);
    if (kept) { /* parsed on this worker, nothing written since */
        keel_free(fkey);
        keel_free(wt);
        count_read(c, keel_req_worker(r), ns, 0, 1);
        json_incref(kept); /* done may end the request, and a write may drop the entry */
        done(r, arg, 0, kept);
        json_decref(kept);
        keel_req_unhold(r);
        return 0;
    }
    pthread_mutex_lock(&c->lock);
    keel_cache_flight **p = flight_find(c, h, fkey, n);
    if (*p) { /* a load is on its way: wait for it */
        keel_cache_flight *f = *p;
        wt->f = f;
        if (f->tail)
            f->tail->next = wt;
        else
            f->head = wt;
        f->tail = wt;
        pthread_mutex_unlock(&c->lock);
        keel_free(fkey);
        return 0;
    }
    keel_cache_flight *f = keel_calloc(1, sizeof(*f));
    f->c = c;
    f->hash = h;
    snprintf(f->ns, sizeof(f->ns), "%s", ns);
    f->key = keel_strdup(key);
    f->fkey = fkey;
    f->fklen = n;
    f->ttl_ms = ttl_ms;
    f->gen0 = gen0;
    f->leader = wt;
    wt->f = f;
    *p = f;
    pthread_mutex_unlock(&c->lock);
    if (keel_cache_get(c, wt->w, ns, key, on_flight_get, f) < 0)
        start_load(f); /* Redis unavailable: a miss */
    return 0;
}
