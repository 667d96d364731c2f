/* rl_memory.c — the in-process rate-limit store: one table shared by every
 * worker of the process, in 64 shards, each with its own lock, hash
 * buckets and LRU list.
 *
 * Memory is bounded by RATE_LIMIT_MAX_KEYS: an expired key (its TAT has
 * passed, so it carries no information) is dropped when met — at lookup,
 * and two from the LRU tail on every insert, so a spray of one-off keys
 * drains again once it stops — and a full shard evicts its least recently
 * used key. Entries are fixed-size; longer keys are stored by a 128-bit
 * digest. */
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "keel/ratelimit.h"

#define SHARDS 64
#define KEY_INLINE 80

typedef struct rl_entry {
    struct rl_entry *hnext;
    struct rl_entry *prev, *next; /* LRU: head = most recent */
    uint64_t hash;
    uint64_t tat_us;
    uint8_t keylen;
    char key[KEY_INLINE];
} rl_entry;

typedef struct rl_shard {
    uv_mutex_t mu;
    rl_entry **buckets; /* nbuckets, allocated on first insert */
    size_t nbuckets;
    rl_entry *head, *tail;
    uint64_t count;
    uint64_t evictions;
} rl_shard;

typedef struct rl_mem {
    uint64_t per_shard;
    rl_shard shards[SHARDS];
} rl_mem;

static uint64_t fnv(const char *p, size_t n, uint64_t h)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 1099511628211ull;
    }
    /* final mix (splitmix64): FNV's low bits are weak for bucket indexes */
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h;
}

static void lru_unlink(rl_shard *sh, rl_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        sh->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        sh->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push(rl_shard *sh, rl_entry *e)
{
    e->prev = NULL;
    e->next = sh->head;
    if (sh->head)
        sh->head->prev = e;
    sh->head = e;
    if (!sh->tail)
        sh->tail = e;
}

static void hash_unlink(rl_shard *sh, rl_entry *e)
{
    rl_entry **pp = &sh->buckets[e->hash & (sh->nbuckets - 1)];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
}

/* Removes e from the shard; returns it for reuse. */
static rl_entry *drop(rl_shard *sh, rl_entry *e)
{
    hash_unlink(sh, e);
    lru_unlink(sh, e);
    sh->count--;
    return e;
}

static void mem_hit(void *self, keel_worker *w, const char *key, size_t keylen,
                    const keel_rl_rate *rate, keel_rl_done_fn done, void *arg)
{
    (void)w;
    rl_mem *m = self;
    char digest[40];
    if (keylen > KEY_INLINE) {
        snprintf(digest, sizeof(digest), "#%016llx%016llx",
                 (unsigned long long)fnv(key, keylen, 1469598103934665603ull),
                 (unsigned long long)fnv(key, keylen, 0x84222325cbf29ce4ull));
        key = digest;
        keylen = strlen(digest);
    }
    uint64_t h = fnv(key, keylen, 1469598103934665603ull);
    rl_shard *sh = &m->shards[h % SHARDS];
    uint64_t now = keel_now_ns() / 1000;
    keel_rl_result res;

    uv_mutex_lock(&sh->mu);
    if (!sh->buckets) {
        size_t nb = 16;
        while (nb < m->per_shard)
            nb <<= 1;
        sh->buckets = keel_calloc(nb, sizeof(*sh->buckets));
        sh->nbuckets = nb;
    }
    rl_entry *e = sh->buckets[h & (sh->nbuckets - 1)];
    while (e && !(e->hash == h && e->keylen == keylen && memcmp(e->key, key, keylen) == 0))
        e = e->hnext;
    if (e) {
        lru_unlink(sh, e);
        lru_push(sh, e);
    } else {
        /* two steps of cleanup from the cold end, then make room */
        rl_entry *spare = NULL;
        for (int i = 0; i < 2 && sh->tail && sh->tail->tat_us <= now; i++) {
            rl_entry *old = drop(sh, sh->tail);
            if (spare)
                keel_free(spare);
            spare = old;
        }
        if (!spare && sh->count >= m->per_shard) {
            spare = drop(sh, sh->tail);
            sh->evictions++;
        }
        e = spare ? spare : keel_malloc(sizeof(*e));
        e->hash = h;
        e->tat_us = 0;
        e->keylen = (uint8_t)keylen;
        memcpy(e->key, key, keylen);
        size_t b = h & (sh->nbuckets - 1);
        e->hnext = sh->buckets[b];
        sh->buckets[b] = e;
        lru_push(sh, e);
        sh->count++;
    }
    keel_gcra(&e->tat_us, now, rate, &res);
    uv_mutex_unlock(&sh->mu);
    done(arg, 0, &res);
}

static void mem_free(void *self)
{
    rl_mem *m = self;
    for (int i = 0; i < SHARDS; i++) {
        rl_shard *sh = &m->shards[i];
        rl_entry *e = sh->head, *next;
        for (; e; e = next) {
            next = e->next;
            keel_free(e);
        }
        keel_free(sh->buckets);
        uv_mutex_destroy(&sh->mu);
    }
    keel_free(m);
}

keel_rl_store keel_rl_memory_store(uint64_t max_keys)
{
    rl_mem *m = keel_calloc(1, sizeof(*m));
    m->per_shard = max_keys / SHARDS ? max_keys / SHARDS : 1;
    for (int i = 0; i < SHARDS; i++)
        uv_mutex_init(&m->shards[i].mu);
    keel_rl_store st = {.name = "memory", .hit = mem_hit, .free = mem_free, .self = m};
    return st;
}

void keel_rl_memory_stats_get(const keel_rl_store *st, keel_rl_memory_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!st || st->hit != mem_hit)
        return;
    rl_mem *m = st->self;
    for (int i = 0; i < SHARDS; i++) {
        rl_shard *sh = &m->shards[i];
        uv_mutex_lock(&sh->mu);
        out->keys += sh->count;
        out->evictions += sh->evictions;
        out->bytes += sh->count * sizeof(rl_entry) + sh->nbuckets * sizeof(rl_entry *);
        uv_mutex_unlock(&sh->mu);
    }
    out->bytes += sizeof(*m);
}
