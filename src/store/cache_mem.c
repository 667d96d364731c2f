/* cache_mem.c — the in-process cache store: a sharded LRU with expiry.
 *
 * A key hashes (FNV-1a with a per-store seed) to one shard; each shard is
 * a mutex, a chained hash table that doubles as it fills, and a doubly
 * linked list from most to least recently used. Bounds are per shard (an
 * equal share of the totals), so an insert only ever evicts from its own
 * shard under its own lock: no global lock, no global list. Expired
 * entries are dropped when met (a read, a write of the same key) and are
 * the first to go when the shard is over its bounds, since nothing reads
 * them and they drift to the tail. */
#include <pthread.h>
#include <string.h>

#include "keel/common.h"
#include "store/cache_internal.h"

typedef struct ent {
    struct ent *hnext;      /* hash chain */
    struct ent *prev, *next; /* LRU: head = most recent */
    uint64_t hash;
    uint64_t expires_ms;    /* 0 = never */
    size_t klen, vlen;
    char data[];            /* key, NUL, value, NUL */
} ent;

typedef struct shard {
    pthread_mutex_t lock;
    ent **buckets;
    size_t nbuckets;        /* a power of two */
    ent *head, *tail;
    uint64_t count, bytes;
    uint64_t evictions;
} shard;

struct keel__cache_mem {
    unsigned nshards;
    uint64_t max_entries, max_bytes; /* per shard */
    uint64_t seed;
    shard *shards;
};

size_t keel__cache_mem_entry_size(size_t klen, size_t vlen)
{
    return sizeof(ent) + klen + vlen + 2;
}

static uint64_t hash_key(uint64_t seed, const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull ^ seed;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

keel__cache_mem *keel__cache_mem_new(unsigned nshards, uint64_t max_entries, uint64_t max_bytes)
{
    if (nshards == 0)
        nshards = 1;
    if (max_entries < nshards)
        nshards = max_entries ? (unsigned)max_entries : 1;
    keel__cache_mem *m = keel_calloc(1, sizeof(*m));
    m->nshards = nshards;
    m->max_entries = max_entries / nshards ? max_entries / nshards : 1;
    m->max_bytes = max_bytes / nshards ? max_bytes / nshards : 1;
    m->seed = keel_now_ns() ^ (uint64_t)(uintptr_t)m;
    m->shards = keel_calloc(nshards, sizeof(shard));
    for (unsigned i = 0; i < nshards; i++) {
        pthread_mutex_init(&m->shards[i].lock, NULL);
        m->shards[i].nbuckets = 16;
        m->shards[i].buckets = keel_calloc(16, sizeof(ent *));
    }
    return m;
}

void keel__cache_mem_free(keel__cache_mem *m)
{
    if (!m)
        return;
    for (unsigned i = 0; i < m->nshards; i++) {
        shard *s = &m->shards[i];
        for (ent *e = s->head, *next; e; e = next) {
            next = e->next;
            keel_free(e);
        }
        keel_free(s->buckets);
        pthread_mutex_destroy(&s->lock);
    }
    keel_free(m->shards);
    keel_free(m);
}

static shard *shard_of(keel__cache_mem *m, uint64_t h)
{
    return &m->shards[(h >> 48) % m->nshards];
}

static void lru_unlink(shard *s, ent *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        s->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        s->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(shard *s, ent *e)
{
    e->prev = NULL;
    e->next = s->head;
    if (s->head)
        s->head->prev = e;
    s->head = e;
    if (!s->tail)
        s->tail = e;
}

/* The link that points at the entry for key, or at the chain's NULL end. */
static ent **find(shard *s, uint64_t h, const char *key, size_t klen)
{
    ent **p = &s->buckets[h & (s->nbuckets - 1)];
    for (; *p; p = &(*p)->hnext)
        if ((*p)->hash == h && (*p)->klen == klen && !memcmp((*p)->data, key, klen))
            return p;
    return p;
}

static void remove_at(shard *s, ent **link)
{
    ent *e = *link;
    *link = e->hnext;
    lru_unlink(s, e);
    s->count--;
    s->bytes -= keel__cache_mem_entry_size(e->klen, e->vlen);
    keel_free(e);
}

static void remove_ent(shard *s, ent *e)
{
    ent **p = find(s, e->hash, e->data, e->klen);
    if (*p == e)
        remove_at(s, p);
}

static void grow(shard *s)
{
    size_t n = s->nbuckets * 2;
    ent **b = keel_calloc(n, sizeof(ent *));
    for (size_t i = 0; i < s->nbuckets; i++) {
        for (ent *e = s->buckets[i], *next; e; e = next) {
            next = e->hnext;
            e->hnext = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    keel_free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
}

static int expired(const ent *e, uint64_t now_ms)
{
    return e->expires_ms && e->expires_ms <= now_ms;
}

char *keel__cache_mem_get(keel__cache_mem *m, const char *key, size_t klen, uint64_t now_ms,
                          size_t *len)
{
    uint64_t h = hash_key(m->seed, key, klen);
    shard *s = shard_of(m, h);
    char *out = NULL;
    pthread_mutex_lock(&s->lock);
    ent **p = find(s, h, key, klen);
    if (*p && expired(*p, now_ms)) {
        remove_at(s, p);
    } else if (*p) {
        ent *e = *p;
        lru_unlink(s, e);
        lru_push_front(s, e);
        out = keel_malloc(e->vlen + 1);
        memcpy(out, e->data + e->klen + 1, e->vlen + 1);
        *len = e->vlen;
    }
    pthread_mutex_unlock(&s->lock);
    return out;
}

int keel__cache_mem_set(keel__cache_mem *m, const char *key, size_t klen, const char *val,
                        size_t vlen, uint64_t expires_ms)
{
    size_t size = keel__cache_mem_entry_size(klen, vlen);
    if (size > m->max_bytes)
        return KEEL_ETOOBIG;
    uint64_t h = hash_key(m->seed, key, klen);
    shard *s = shard_of(m, h);
    ent *e = keel_malloc(size);
    e->hash = h;
    e->expires_ms = expires_ms;
    e->klen = klen;
    e->vlen = vlen;
    memcpy(e->data, key, klen);
    e->data[klen] = '\0';
    memcpy(e->data + klen + 1, val, vlen);
    e->data[klen + 1 + vlen] = '\0';
    pthread_mutex_lock(&s->lock);
    ent **p = find(s, h, key, klen);
    if (*p)
        remove_at(s, p);
    p = find(s, h, key, klen); /* the chain may have changed */
    e->hnext = NULL;
    *p = e;
    lru_push_front(s, e);
    s->count++;
    s->bytes += size;
    while (s->count > m->max_entries || s->bytes > m->max_bytes) {
        remove_ent(s, s->tail); /* never e: it alone fits */
        s->evictions++;
    }
    if (s->count > s->nbuckets)
        grow(s);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int keel__cache_mem_del(keel__cache_mem *m, const char *key, size_t klen, uint64_t now_ms)
{
    uint64_t h = hash_key(m->seed, key, klen);
    shard *s = shard_of(m, h);
    int found = 0;
    pthread_mutex_lock(&s->lock);
    ent **p = find(s, h, key, klen);
    if (*p) {
        found = !expired(*p, now_ms);
        remove_at(s, p);
    }
    pthread_mutex_unlock(&s->lock);
    return found;
}

static uint64_t sum(keel__cache_mem *m, size_t off)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < m->nshards; i++) {
        shard *s = &m->shards[i];
        pthread_mutex_lock(&s->lock);
        n += *(const uint64_t *)((const char *)s + off);
        pthread_mutex_unlock(&s->lock);
    }
    return n;
}

uint64_t keel__cache_mem_count(keel__cache_mem *m)
{
    return sum(m, offsetof(shard, count));
}

uint64_t keel__cache_mem_bytes(keel__cache_mem *m)
{
    return sum(m, offsetof(shard, bytes));
}

uint64_t keel__cache_mem_evictions(keel__cache_mem *m)
{
    return sum(m, offsetof(shard, evictions));
}
