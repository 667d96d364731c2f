/* lock.c — distributed locks (see keel/lock.h).
 *
 * One operation is one heap `lock_op` with a libuv timer on the caller's
 * worker loop: the timer runs the in-process attempts (so the callback is
 * always later than the call) and the waits between retries; the op is
 * freed in the timer's close callback. On Redis the value of a lock key is
 * "TOKEN FENCING", so extend and release can hand back the fencing number
 * of the grant they act on; the fencing counter is a separate key that
 * never expires (a restarted, empty Redis starts it again at 1 — the
 * documented limit of fencing on a volatile Redis).
 */
#include "keel/lock.h"

#include <hiredis/hiredis.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "keel/redis.h"
#include "store/lock_internal.h"

/* ---------------------------------------------------------------- scripts */

const char keel__lock_acquire_lua[] =
    "local f = tonumber(redis.call('GET', KEYS[2]) or '0') + 1\n"
    "if not redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. string.format('%d', f),\n"
    "                  'NX', 'PX', ARGV[2]) then\n"
    "  return {0, redis.call('PTTL', KEYS[1])}\n"
    "end\n"
    "return {1, redis.call('INCR', KEYS[2])}\n";

#define CHECK_TOKEN                                                  \
    "local v = redis.call('GET', KEYS[1])\n"                         \
    "if not v then return {0, 0} end\n"                              \
    "local sp = string.find(v, ' ', 1, true)\n"                      \
    "if not sp or string.sub(v, 1, sp - 1) ~= ARGV[1] then\n"        \
    "  return {-1, 0}\n"                                             \
    "end\n"                                                          \
    "local f = tonumber(string.sub(v, sp + 1)) or 0\n"

const char keel__lock_extend_lua[] = CHECK_TOKEN
    "redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "return {1, f}\n";

const char keel__lock_release_lua[] = CHECK_TOKEN
    "redis.call('DEL', KEYS[1])\n"
    "return {1, f}\n";

/* ---------------------------------------------------------------- the table */

typedef struct tab_entry {
    struct tab_entry *next;
    uint64_t expires_ms, fencing;
    char token[KEEL_LOCK_TOKEN_LEN + 1];
    char name[];
} tab_entry;

struct keel__locktab {
    uv_mutex_t mu;
    tab_entry **buckets;
    size_t nbuckets, count;
    uint64_t fencing; /* one counter for every name: monotonic per name too */
    uint64_t ops;
};

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

keel__locktab *keel__locktab_new(void)
{
    keel__locktab *t = keel_calloc(1, sizeof(*t));
    uv_mutex_init(&t->mu);
    t->nbuckets = 64;
    t->buckets = keel_calloc(t->nbuckets, sizeof(tab_entry *));
    return t;
}

void keel__locktab_free(keel__locktab *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        tab_entry *e = t->buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            keel_free(e);
        }
    }
    keel_free(t->buckets);
    uv_mutex_destroy(&t->mu);
    keel_free(t);
}

/* Removes every expired entry (under the lock). */
static void sweep(keel__locktab *t, uint64_t now)
{
    for (size_t i = 0; i < t->nbuckets; i++) {
        tab_entry **pp = &t->buckets[i];
        while (*pp) {
            tab_entry *e = *pp;
            if (e->expires_ms <= now) {
                *pp = e->next;
                keel_free(e);
                t->count--;
            } else {
                pp = &e->next;
            }
        }
    }
}

static void grow(keel__locktab *t)
{
    size_t n = t->nbuckets * 2;
    tab_entry **b = keel_calloc(n, sizeof(tab_entry *));
    for (size_t i = 0; i < t->nbuckets; i++) {
        tab_entry *e = t->buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            size_t k = hash_name(e->name) & (n - 1);
            e->next = b[k];
            b[k] = e;
        }
    }
    keel_free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
}

/* The live entry for name (an expired one is removed), under the lock. */
static tab_entry **find(keel__locktab *t, const char *name, uint64_t now)
{
    tab_entry **pp = &t->buckets[hash_name(name) & (t->nbuckets - 1)];
    while (*pp) {
        tab_entry *e = *pp;
        if (e->expires_ms <= now) {
            *pp = e->next;
            keel_free(e);
            t->count--;
            continue;
        }
        if (!strcmp(e->name, name))
            return pp;
        pp = &e->next;
    }
    return pp; /* the end of the chain: *pp == NULL */
}

int keel__locktab_acquire(keel__locktab *t, const char *name, const char *token,
                          uint64_t ttl_ms, uint64_t now_ms, uint64_t *fencing,
                          uint64_t *left_ms)
{
    int rc = 0;
    uv_mutex_lock(&t->mu);
    /* names never seen again are swept now and then */
    if ((++t->ops & 1023) == 0)
        sweep(t, now_ms);
    tab_entry **pp = find(t, name, now_ms);
    if (*pp) {
        *left_ms = (*pp)->expires_ms - now_ms;
        rc = KEEL_EBUSY;
    } else {
        size_t n = strlen(name);
        tab_entry *e = keel_malloc(sizeof(*e) + n + 1);
        memcpy(e->name, name, n + 1);
        snprintf(e->token, sizeof(e->token), "%s", token);
        e->expires_ms = now_ms + ttl_ms;
        e->fencing = *fencing = ++t->fencing;
        e->next = NULL;
        *pp = e;
        if (++t->count > t->nbuckets * 2)
            grow(t);
    }
    uv_mutex_unlock(&t->mu);
    return rc;
}

static int check(keel__locktab *t, const char *name, const char *token, uint64_t now_ms,
                 uint64_t *fencing, tab_entry ***out)
{
    tab_entry **pp = find(t, name, now_ms);
    *fencing = 0;
    if (!*pp)
        return KEEL_ENOTFOUND;
    if (strcmp((*pp)->token, token))
        return KEEL_EACCES;
    *fencing = (*pp)->fencing;
    *out = pp;
    return 0;
}

int keel__locktab_extend(keel__locktab *t, const char *name, const char *token,
                         uint64_t ttl_ms, uint64_t now_ms, uint64_t *fencing)
{
    tab_entry **pp;
    uv_mutex_lock(&t->mu);
    int rc = check(t, name, token, now_ms, fencing, &pp);
    if (rc == 0)
        (*pp)->expires_ms = now_ms + ttl_ms;
    uv_mutex_unlock(&t->mu);
    return rc;
}

int keel__locktab_release(keel__locktab *t, const char *name, const char *token,
                          uint64_t now_ms, uint64_t *fencing)
{
    tab_entry **pp;
    uv_mutex_lock(&t->mu);
    int rc = check(t, name, token, now_ms, fencing, &pp);
    if (rc == 0) {
        tab_entry *e = *pp;
        *pp = e->next;
        keel_free(e);
        t->count--;
    }
    uv_mutex_unlock(&t->mu);
    return rc;
}

size_t keel__locktab_count(keel__locktab *t, uint64_t now_ms)
{
    uv_mutex_lock(&t->mu);
    sweep(t, now_ms);
    size_t n = t->count;
    uv_mutex_unlock(&t->mu);
    return n;
}

/* ---------------------------------------------------------------- operations */

struct keel_locks {
    keel_redis *redis;
    keel_redis_script *s_acquire, *s_extend, *s_release;
    keel__locktab *tab;
    keel_metric *m_acquired, *m_contended, *m_errors;
};

enum { OP_ACQUIRE, OP_EXTEND, OP_RELEASE };

typedef struct lock_op {
    keel_locks *l;
    keel_worker *w;
    uv_timer_t timer;
    int kind;
    unsigned attempts_left;
    uint64_t ttl_ms, delay_ms;
    uint64_t deadline_ms; /* loop time after which no attempt is made; 0: none */
    uint64_t sent_wall_ms;
    keel_lock_cb cb;
    void *arg;
    char token[KEEL_LOCK_TOKEN_LEN + 1];
    char name[];
} lock_op;

static void count(keel_metric *m, keel_worker *w)
{
    if (m)
        keel_metric_add(m, keel_worker_id(w), NULL, 1);
}

static void op_closed(uv_handle_t *h)
{
    keel_free(h->data);
}

static void op_finish(lock_op *op, int status, uint64_t fencing)
{
    keel_lock_grant g;
    if (status == 0) {
        memcpy(g.token, op->token, sizeof(g.token));
        g.fencing = fencing;
        g.expires_at_ms = op->kind == OP_RELEASE ? 0 : op->sent_wall_ms + op->ttl_ms;
        if (op->kind == OP_ACQUIRE)
            count(op->l->m_acquired, op->w);
    } else if (status != KEEL_EBUSY && status != KEEL_ENOTFOUND && status != KEEL_EACCES) {
        count(op->l->m_errors, op->w);
    }
    op->cb(op->arg, status, status == 0 ? &g : NULL);
    uv_close((uv_handle_t *)&op->timer, op_closed);
}

static void random_token(char out[KEEL_LOCK_TOKEN_LEN + 1])
{
    unsigned char b[KEEL_LOCK_TOKEN_LEN / 2];
    randombytes_buf(b, sizeof(b));
    sodium_bin2hex(out, KEEL_LOCK_TOKEN_LEN + 1, b, sizeof(b));
}

static int attempt(lock_op *op);
static void on_timer(uv_timer_t *t);

/* Held: wait and try again, or give up with KEEL_EBUSY. */
static void contended(lock_op *op)
{
    count(op->l->m_contended, op->w);
    uint64_t now = uv_now(op->timer.loop);
    if (op->attempts_left <= 1 || (op->deadline_ms && now >= op->deadline_ms)) {
        op_finish(op, KEEL_EBUSY, 0);
        return;
    }
    op->attempts_left--;
    uint64_t wait = op->delay_ms;
    if (wait / 2)
        wait += randombytes_uniform((uint32_t)(wait / 2 + 1));
    if (op->deadline_ms && now + wait > op->deadline_ms)
        wait = op->deadline_ms - now; /* one last try at the deadline */
    uv_timer_start(&op->timer, on_timer, wait, 0);
}

/* Parses {code, number}; -1 when the reply is not that. */
static int parse_pair(const redisReply *rep, long long *code, long long *num)
{
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        rep->element[0]->type != REDIS_REPLY_INTEGER ||
        rep->element[1]->type != REDIS_REPLY_INTEGER)
        return -1;
    *code = rep->element[0]->integer;
    *num = rep->element[1]->integer;
    return 0;
}

static void on_reply(void *arg, int status, redisReply *reply)
{
    lock_op *op = arg;
    long long code = 0, num = 0;
    if (status == 0 && parse_pair(reply, &code, &num) < 0)
        status = KEEL_EPROTO;
    if (status < 0) {
        op_finish(op, status, 0);
        return;
    }
    if (op->kind == OP_ACQUIRE) {
        if (code == 1)
            op_finish(op, 0, (uint64_t)num);
        else
            contended(op);
        return;
    }
    op_finish(op, code == 1 ? 0 : code == 0 ? KEEL_ENOTFOUND : KEEL_EACCES,
              code == 1 ? (uint64_t)num : 0);
}

static int attempt_redis(lock_op *op)
{
    keel_locks *l = op->l;
    const char *prefix = keel_redis_prefix(l->redis);
    size_t pl = strlen(prefix), nl = strlen(op->name);
    char *key = keel_malloc(2 * (pl + nl) + 16);
    char *fence = key + pl + nl + 6;
    int kl = sprintf(key, "%slock:%s", prefix, op->name);
    int fl = sprintf(fence, "%sfence:%s", prefix, op->name);
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)op->ttl_ms);
    keel_redis_script *s = op->kind == OP_ACQUIRE  ? l->s_acquire
                           : op->kind == OP_EXTEND ? l->s_extend
                                                   : l->s_release;
    const char *argv[4] = {key, fence, op->token, ttl};
    size_t lens[4] = {(size_t)kl, (size_t)fl, strlen(op->token), strlen(ttl)};
    op->sent_wall_ms = keel_wall_ms();
    int rc = keel_redis_eval(l->redis, op->w, s, 2, op->kind == OP_RELEASE ? 3 : 4, argv,
                             lens, on_reply, op);
    keel_free(key);
    return rc;
}

static void attempt_memory(lock_op *op)
{
    uint64_t fencing = 0, left = 0, now = keel_now_ms();
    op->sent_wall_ms = keel_wall_ms();
    int rc;
    switch (op->kind) {
    case OP_ACQUIRE:
        rc = keel__locktab_acquire(op->l->tab, op->name, op->token, op->ttl_ms, now, &fencing,
                                   &left);
        if (rc == KEEL_EBUSY) {
            contended(op);
            return;
        }
        break;
    case OP_EXTEND:
        rc = keel__locktab_extend(op->l->tab, op->name, op->token, op->ttl_ms, now, &fencing);
        break;
    default:
        rc = keel__locktab_release(op->l->tab, op->name, op->token, now, &fencing);
        break;
    }
    op_finish(op, rc, fencing);
}

static void on_timer(uv_timer_t *t)
{
    lock_op *op = t->data;
    int rc = attempt(op);
    if (rc < 0)
        op_finish(op, rc, 0);
}

/* One try; an error return means nothing was sent (cb not yet called). */
static int attempt(lock_op *op)
{
    if (!op->l->redis) {
        attempt_memory(op);
        return 0;
    }
    return attempt_redis(op);
}

static int valid_name(const char *name)
{
    size_t n = name ? strnlen(name, KEEL_LOCK_NAME_MAX + 1) : 0;
    return n > 0 && n <= KEEL_LOCK_NAME_MAX;
}

static int start(keel_locks *l, keel_worker *w, int kind, const char *name, const char *token,
                 uint64_t ttl_ms, const keel_lock_opts *o, keel_lock_cb cb, void *arg)
{
    if (!l || !w || !cb || !valid_name(name))
        return KEEL_EINVAL;
    if (kind != OP_RELEASE && (ttl_ms == 0 || ttl_ms > 24ull * 3600 * 1000))
        return KEEL_EINVAL;
    if (kind != OP_ACQUIRE && (!token || strnlen(token, KEEL_LOCK_TOKEN_LEN + 1) >
                                             KEEL_LOCK_TOKEN_LEN))
        return KEEL_EINVAL;
    size_t nl = strlen(name);
    lock_op *op = keel_calloc(1, sizeof(*op) + nl + 1);
    memcpy(op->name, name, nl + 1);
    op->l = l;
    op->w = w;
    op->kind = kind;
    op->ttl_ms = ttl_ms;
    op->cb = cb;
    op->arg = arg;
    op->attempts_left = o && o->attempts ? o->attempts : 1;
    op->delay_ms = o && o->retry_delay_ms ? o->retry_delay_ms : 50;
    if (kind == OP_ACQUIRE)
        random_token(op->token);
    else
        snprintf(op->token, sizeof(op->token), "%s", token);
    uv_timer_init(keel_worker_loop(w), &op->timer);
    op->timer.data = op;
    if (o && o->max_wait_ms)
        op->deadline_ms = uv_now(op->timer.loop) + o->max_wait_ms;
    if (!l->redis) {
        /* the first try on the next loop turn: cb is never called from here */
        uv_timer_start(&op->timer, on_timer, 0, 0);
        return 0;
    }
    int rc = attempt_redis(op);
    if (rc < 0) {
        count(l->m_errors, w);
        op->timer.data = op;
        uv_close((uv_handle_t *)&op->timer, op_closed);
    }
    return rc;
}

int keel_lock_acquire(keel_locks *l, keel_worker *w, const char *name, uint64_t ttl_ms,
                      const keel_lock_opts *opts, keel_lock_cb cb, void *arg)
{
    return start(l, w, OP_ACQUIRE, name, NULL, ttl_ms, opts, cb, arg);
}

int keel_lock_extend(keel_locks *l, keel_worker *w, const char *name, const char *token,
                     uint64_t ttl_ms, keel_lock_cb cb, void *arg)
{
    return start(l, w, OP_EXTEND, name, token, ttl_ms, NULL, cb, arg);
}

int keel_lock_release(keel_locks *l, keel_worker *w, const char *name, const char *token,
                      keel_lock_cb cb, void *arg)
{
    return start(l, w, OP_RELEASE, name, token, 0, NULL, cb, arg);
}

/* ---------------------------------------------------------------- life cycle */

keel_locks *keel_locks_new(keel_redis *r, keel_metrics *m)
{
    keel_locks *l = keel_calloc(1, sizeof(*l));
    keel_library_init(); /* randomness for tokens */
    l->redis = r;
    if (r) {
        l->s_acquire = keel_redis_script_new(r, keel__lock_acquire_lua);
        l->s_extend = keel_redis_script_new(r, keel__lock_extend_lua);
        l->s_release = keel_redis_script_new(r, keel__lock_release_lua);
    } else {
        l->tab = keel__locktab_new();
    }
    if (m) {
        l->m_acquired = keel_metrics_counter(m, "locks_acquired_total", "Locks granted", NULL);
        l->m_contended = keel_metrics_counter(m, "locks_contended_total",
                                              "Lock attempts that found the lock held", NULL);
        l->m_errors = keel_metrics_counter(m, "locks_errors_total",
                                           "Lock operations that failed (Redis unavailable, "
                                           "timed out or lost)",
                                           NULL);
    }
    return l;
}

void keel_locks_free(keel_locks *l)
{
    if (!l)
        return;
    keel__locktab_free(l->tab);
    keel_free(l);
}

const char *keel_locks_backend(const keel_locks *l)
{
    return l->redis ? "redis" : "memory";
}
