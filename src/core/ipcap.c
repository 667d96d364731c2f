/* ipcap.c — open connections per client address, shared by the workers
 * of one server (MAX_CONNECTIONS_PER_IP). A sharded hash of address ->
 * count; an entry lives only while its address has connections, so the
 * table never holds more entries than there are open connections. */
#include <string.h>

#include "core/server_internal.h"

#define SHARDS 16
#define BUCKETS 256 /* per shard; chains grow past it, which is fine */

typedef struct ip_entry {
    struct ip_entry *next;
    keel_addr addr;
    uint64_t count;
} ip_entry;

typedef struct ip_shard {
    uv_mutex_t mu;
    ip_entry *buckets[BUCKETS];
} ip_shard;

struct keel_ipcap {
    ip_shard shards[SHARDS];
};

keel_ipcap *keel__ipcap_new(void)
{
    keel_ipcap *t = keel_calloc(1, sizeof(*t));
    for (int i = 0; i < SHARDS; i++)
        uv_mutex_init(&t->shards[i].mu);
    return t;
}

void keel__ipcap_free(keel_ipcap *t)
{
    if (!t)
        return;
    for (int i = 0; i < SHARDS; i++) {
        for (int b = 0; b < BUCKETS; b++) {
            ip_entry *e = t->shards[i].buckets[b], *next;
            for (; e; e = next) {
                next = e->next;
                keel_free(e);
            }
        }
        uv_mutex_destroy(&t->shards[i].mu);
    }
    keel_free(t);
}

/* FNV-1a over the family and the address bytes. */
static uint64_t addr_hash(const keel_addr *a)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)a->family;
    size_t n = a->family == AF_INET ? 4 : 16;
    for (size_t i = 0; i < n; i++) {
        h ^= a->b[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int addr_eq(const keel_addr *x, const keel_addr *y)
{
    return x->family == y->family && memcmp(x->b, y->b, 16) == 0;
}

int keel__ipcap_acquire(keel_ipcap *t, const keel_addr *a, uint64_t max)
{
    uint64_t h = addr_hash(a);
    ip_shard *sh = &t->shards[h % SHARDS];
    ip_entry **head = &sh->buckets[(h / SHARDS) % BUCKETS];
    int rc = 0;
    uv_mutex_lock(&sh->mu);
    ip_entry *e = *head;
    while (e && !addr_eq(&e->addr, a))
        e = e->next;
    if (!e) {
        e = keel_calloc(1, sizeof(*e));
        e->addr = *a;
        e->next = *head;
        *head = e;
    }
    if (e->count >= max)
        rc = KEEL_EBUSY;
    else
        e->count++;
    if (!e->count) { /* max == 0 and a new entry: nothing to keep */
        *head = e->next;
        keel_free(e);
    }
    uv_mutex_unlock(&sh->mu);
    return rc;
}

void keel__ipcap_release(keel_ipcap *t, const keel_addr *a)
{
    uint64_t h = addr_hash(a);
    ip_shard *sh = &t->shards[h % SHARDS];
    ip_entry **pp = &sh->buckets[(h / SHARDS) % BUCKETS];
    uv_mutex_lock(&sh->mu);
    for (; *pp; pp = &(*pp)->next) {
        ip_entry *e = *pp;
        if (!addr_eq(&e->addr, a))
            continue;
        if (--e->count == 0) {
            *pp = e->next;
            keel_free(e);
        }
        break;
    }
    uv_mutex_unlock(&sh->mu);
}
