/* rl_redis.c — the Redis rate-limit store: keel_gcra (src/mw/rate_limit.c)
 * as one Lua script, so a check is atomic across every instance sharing
 * the Redis. Same arithmetic, in µs, on Redis's clock (TIME inside the
 * script: instances' clocks never have to agree). Lua numbers are
 * doubles: µs since 1970 (~2^51) and every intermediate stay exact below
 * 2^53. A key holds its TAT and expires when it passes (a key whose TAT
 * has passed is the same as no key).
 *
 * A check is a chain of keys (the limiter's burst tier, then the route's
 * tier), checked in order and stopping at the first refusal: exactly what
 * single checks in turn would do (a request the route's tier refuses has
 * been charged to the burst tier; one the burst tier refuses never
 * reaches the route's). A single check is a chain of one.
 *
 * Batching. The chains a worker's loop asks for in one iteration (every
 * request read in one wake-up) go to Redis as one EVALSHA, sent from the
 * worker's mailbox (keel_worker_post) once the iteration's callbacks are
 * done: the script runs them in turn, as that many EVALSHAs back to back
 * would, with one TIME for all (they arrived in the same microseconds).
 * Each EVALSHA costs Redis ~6 µs of Lua set-up on top of the ~1.4 µs its
 * GETs and SETs take; one per batch instead of one per request is what
 * moved the Redis-backed limiter from 0.40x of the in-process one (docs/
 * performance.md). Each request still gets its own client span.
 *
 * The script: ARGV[1] the number of chains m, ARGV[2] "" or a fixed now
 * in µs (then keys are kept without expiry, which would run on Redis's
 * real clock — only the parity tests use it), then per chain: n, limit_1,
 * window_ms_1, ..., limit_n, window_ms_n; KEYS every chain's keys in
 * order. The answer: m groups of 5 integers {index (1-based) of the check
 * that decided, allowed, remaining, reset_ms, retry_after_ms}. The keys
 * are read with one MGET, each chain updates a table of TATs (a key that
 * comes back in the batch sees the charges before it), and every key
 * charged is written once at the end with the TTL of its last charge:
 * the state after the script is the one the chains in turn would leave,
 * in 2 + (keys charged) commands instead of up to 4 per chain. */
#include <stdio.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "keel/redis.h"
#include "keel/rl_store.h"
#include "keel/trace.h"
#include "store/rl_redis.h"

const char keel__rl_gcra_lua[] =
    "local m = tonumber(ARGV[1])\n"
    "local fixed = ARGV[2] ~= ''\n"
    "local now\n"
    "if fixed then now = tonumber(ARGV[2]) else\n"
    "  local t = redis.call('TIME')\n"
    "  now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "end\n"
    "local tat, ttl = {}, {}\n"
    "local vals = redis.call('MGET', unpack(KEYS))\n"
    "for i, key in ipairs(KEYS) do\n"
    "  if tat[key] == nil then tat[key] = tonumber(vals[i] or '0') end\n"
    "end\n"
    "local out = {}\n"
    "local a, k = 3, 1\n"
    "for c = 1, m do\n"
    "  local n = tonumber(ARGV[a])\n"
    "  a = a + 1\n"
    "  local res\n"
    "  for i = 1, n do\n"
    "    local limit = tonumber(ARGV[a])\n"
    "    local window = tonumber(ARGV[a + 1]) * 1000\n"
    "    local key = KEYS[k]\n"
    "    a = a + 2\n"
    "    k = k + 1\n"
    "    if res == nil or res[2] == 1 then\n"
    "      if limit == 0 then\n"
    "        res = {i, 1, 0, 0, 0}\n"
    "      else\n"
    "        local t = math.floor(window / limit)\n"
    "        if t == 0 then t = 1 end\n"
    "        local cur = tat[key]\n"
    "        if cur < now then cur = now end\n"
    "        local nxt = cur + t\n"
    "        if nxt - now > window then\n"
    "          res = {i, 0, 0, math.floor((cur - now + 999) / 1000),\n"
    "                 math.floor((nxt - window - now + 999) / 1000)}\n"
    "        else\n"
    "          local e = math.floor((nxt - now + 999) / 1000)\n"
    "          if e < 1 then e = 1 end\n"
    "          tat[key] = nxt\n"
    "          ttl[key] = e\n"
    "          res = {i, 1, math.floor((window - (nxt - now)) / t), e, 0}\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  for j = 1, 5 do out[#out + 1] = res[j] end\n"
    "end\n"
    "for key, e in pairs(ttl) do\n"
    "  if fixed then redis.call('SET', key, string.format('%d', tat[key]))\n"
    "  else redis.call('SET', key, string.format('%d', tat[key]), 'PX', e) end\n"
    "end\n"
    "return out\n";

typedef struct rl_redis {
    keel_redis *redis;
    keel_redis_script *script;
} rl_redis;

typedef struct hit_call {
    keel_rl_done_fn done;             /* hit() */
    keel_rl_chain_done_fn chain_done; /* hit_chain() */
    void *arg;
    size_t n;
    uint64_t limits[KEEL_RL_CHAIN_MAX];
    keel_span_ref span;
} hit_call;

#define BATCH_MAX 64 /* chains in one EVALSHA */

/* The chains of one loop iteration: their keys and their arguments, in
 * the order the script reads them. */
typedef struct rl_batch {
    rl_redis *st;
    keel_worker *w;
    size_t m, nkeys, nargs;
    hit_call *calls[BATCH_MAX];
    char *keys[BATCH_MAX * KEEL_RL_CHAIN_MAX];
    size_t keylens[BATCH_MAX * KEEL_RL_CHAIN_MAX];
    char nums[BATCH_MAX * (1 + 2 * KEEL_RL_CHAIN_MAX)][24];
} rl_batch;

/* The batch this thread (a worker's loop) is filling, if any. */
static __thread rl_batch *open_batch;

static int parse_group(redisReply *const *el, const uint64_t *limits, size_t n, size_t *idx,
                       keel_rl_result *res)
{
    memset(res, 0, sizeof(*res));
    *idx = 0;
    for (int i = 0; i < 5; i++)
        if (el[i]->type != REDIS_REPLY_INTEGER || el[i]->integer < 0)
            return KEEL_EPROTO;
    long long at = el[0]->integer;
    if (at < 1 || (size_t)at > n)
        return KEEL_EPROTO;
    *idx = (size_t)at - 1;
    res->limit = limits[*idx];
    res->allowed = el[1]->integer == 1;
    res->remaining = (uint64_t)el[2]->integer;
    res->reset_ms = (uint64_t)el[3]->integer;
    res->retry_after_ms = (uint64_t)el[4]->integer;
    return 0;
}

int keel__rl_parse_reply(const redisReply *rep, const uint64_t *limits, size_t n, size_t *idx,
                         keel_rl_result *res)
{
    memset(res, 0, sizeof(*res));
    *idx = 0;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 5)
        return KEEL_EPROTO;
    return parse_group(rep->element, limits, n, idx, res);
}

static void answer(hit_call *h, int status, size_t idx, const keel_rl_result *res)
{
    if (keel_span_ok(h->span)) {
        if (status < 0)
            keel_span_set_error(h->span, keel_strerror(status));
        keel_span_finish(h->span, 0);
    }
    if (h->chain_done)
        h->chain_done(h->arg, status, status == 0 ? idx : 0, status == 0 ? res : NULL);
    else
        h->done(h->arg, status, status == 0 ? res : NULL);
    keel_free(h);
}

static void batch_free(rl_batch *b)
{
    for (size_t i = 0; i < b->nkeys; i++)
        keel_free(b->keys[i]);
    keel_free(b);
}

static void on_batch_reply(void *arg, int status, redisReply *reply)
{
    rl_batch *b = arg;
    if (status == 0 && (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 5 * b->m))
        status = KEEL_EPROTO;
    for (size_t i = 0; i < b->m; i++) {
        hit_call *h = b->calls[i];
        keel_rl_result res;
        size_t idx = 0;
        int st = status;
        if (st == 0)
            st = parse_group(reply->element + 5 * i, h->limits, h->n, &idx, &res);
        answer(h, st, idx, &res);
    }
    batch_free(b);
}

/* Sends the batch (its worker's loop): one EVALSHA; every chain is
 * answered from its reply, or with the error now when it cannot be sent. */
static void batch_send(void *arg)
{
    rl_batch *b = arg;
    if (open_batch == b)
        open_batch = NULL;
    size_t argc = b->nkeys + b->nargs;
    const char *argv[BATCH_MAX * KEEL_RL_CHAIN_MAX + BATCH_MAX * (1 + 2 * KEEL_RL_CHAIN_MAX)];
    size_t lens[sizeof(argv) / sizeof(argv[0])];
    for (size_t i = 0; i < b->nkeys; i++) {
        argv[i] = b->keys[i];
        lens[i] = b->keylens[i];
    }
    for (size_t i = 0; i < b->nargs; i++) {
        argv[b->nkeys + i] = b->nums[i];
        lens[b->nkeys + i] = strlen(b->nums[i]);
    }
    int rc = keel_redis_eval(b->st->redis, b->w, b->st->script, (int)b->nkeys, (int)argc, argv,
                             lens, on_batch_reply, b);
    if (rc < 0) { /* breaker open or connection down: answered now */
        for (size_t i = 0; i < b->m; i++)
            answer(b->calls[i], rc, 0, NULL);
        batch_free(b);
    }
}

static void num(rl_batch *b, uint64_t v)
{
    snprintf(b->nums[b->nargs++], sizeof(b->nums[0]), "%llu", (unsigned long long)v);
}

/* Adds the chain to this loop iteration's batch (a new one is posted to
 * the worker's mailbox, which runs after the iteration's callbacks). */
static void queue_chain(rl_redis *st, keel_worker *w, const keel_rl_check *checks, size_t n,
                        hit_call *h)
{
    h->n = n;
    h->span = keel_redis_span_begin(st->redis, "EVALSHA", 7);
    rl_batch *b = open_batch;
    if (!b || b->st != st || b->w != w) {
        b = keel_malloc(sizeof(*b)); /* ~20 KiB, not worth zeroing */
        b->st = st;
        b->w = w;
        b->m = b->nkeys = 0;
        b->nargs = 2; /* m, and "" for the clock: filled when sent */
        b->nums[1][0] = '\0';
        open_batch = b;
        if (keel_worker_post(w, batch_send, b) < 0) {
            open_batch = NULL; /* the worker is ending: this one alone, now */
            snprintf(b->nums[0], sizeof(b->nums[0]), "1");
            goto add_and_send;
        }
    }
add_and_send:;
    const char *prefix = keel_redis_prefix(st->redis);
    size_t plen = strlen(prefix);
    num(b, n);
    for (size_t i = 0; i < n; i++) {
        char *k = keel_malloc(plen + checks[i].keylen + 1);
        memcpy(k, prefix, plen);
        memcpy(k + plen, checks[i].key, checks[i].keylen);
        k[plen + checks[i].keylen] = '\0';
        b->keys[b->nkeys] = k;
        b->keylens[b->nkeys++] = plen + checks[i].keylen;
        h->limits[i] = checks[i].rate->limit;
        num(b, checks[i].rate->limit);
        num(b, checks[i].rate->window_ms);
    }
    b->calls[b->m++] = h;
    snprintf(b->nums[0], sizeof(b->nums[0]), "%zu", b->m);
    if (open_batch != b)
        batch_send(b); /* not posted: the worker is ending */
    else if (b->m == BATCH_MAX)
        open_batch = NULL; /* full: the mailbox sends it; the next chain opens another */
}

static void rr_hit(void *self, keel_worker *w, const char *key, size_t keylen,
                   const keel_rl_rate *rate, keel_rl_done_fn done, void *arg)
{
    if (rate->limit == 0) {
        keel_rl_result res = {.allowed = 1};
        done(arg, 0, &res);
        return;
    }
    hit_call *h = keel_calloc(1, sizeof(*h));
    h->done = done;
    h->arg = arg;
    keel_rl_check c = {key, keylen, rate};
    queue_chain(self, w, &c, 1, h);
}

static void rr_hit_chain(void *self, keel_worker *w, const keel_rl_check *checks, size_t n,
                         keel_rl_chain_done_fn done, void *arg)
{
    if (n == 0 || n > KEEL_RL_CHAIN_MAX) {
        done(arg, KEEL_EINVAL, 0, NULL);
        return;
    }
    hit_call *h = keel_calloc(1, sizeof(*h));
    h->chain_done = done;
    h->arg = arg;
    queue_chain(self, w, checks, n, h);
}

static void rr_free(void *self)
{
    keel_free(self);
}

keel_rl_store keel_rl_redis_store(keel_redis *r)
{
    rl_redis *st = keel_calloc(1, sizeof(*st));
    st->redis = r;
    st->script = keel_redis_script_new(r, keel__rl_gcra_lua);
    keel_rl_store s = {.name = "redis", .hit = rr_hit, .hit_chain = rr_hit_chain,
                       .free = rr_free, .self = st};
    return s;
}
