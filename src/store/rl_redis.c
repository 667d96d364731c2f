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
    "local floor = math.floor\n"
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
    "local out, p = {}, 0\n"
    "local a, k = 3, 1\n"
    "for c = 1, m do\n"
    "  local n = tonumber(ARGV[a])\n"
    "  a = a + 1\n"
    "  local ri, ra, rr, rs, rt = 0, 1, 0, 0, 0\n"
    "  for i = 1, n do\n"
    "    if ra == 1 then\n"
    "      local limit = tonumber(ARGV[a])\n"
    "      if limit == 0 then\n"
    "        ri, ra, rr, rs, rt = i, 1, 0, 0, 0\n"
    "      else\n"
    "        local window = tonumber(ARGV[a + 1]) * 1000\n"
    "        local key = KEYS[k]\n"
    "        local t = floor(window / limit)\n"
    "        if t == 0 then t = 1 end\n"
    "        local cur = tat[key]\n"
    "        if cur < now then cur = now end\n"
    "        local nxt = cur + t\n"
    "        if nxt - now > window then\n"
    "          ri, ra, rr, rs, rt = i, 0, 0, floor((cur - now + 999) / 1000),\n"
    "                               floor((nxt - window - now + 999) / 1000)\n"
    "        else\n"
    "          local e = floor((nxt - now + 999) / 1000)\n"
    "          if e < 1 then e = 1 end\n"
    "          tat[key] = nxt\n"
    "          ttl[key] = e\n"
    "          ri, ra, rr, rs, rt = i, 1, floor((window - (nxt - now)) / t), e, 0\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "    a = a + 2\n"
    "    k = k + 1\n"
    "  end\n"
    "  out[p + 1], out[p + 2], out[p + 3], out[p + 4], out[p + 5] = ri, ra, rr, rs, rt\n"
    "  p = p + 5\n"
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

#define KEYS_MAX (BATCH_MAX * KEEL_RL_CHAIN_MAX)
#define ARGS_MAX (2 + BATCH_MAX * (1 + 2 * KEEL_RL_CHAIN_MAX))

/* The chains of one loop iteration: their keys and their arguments, in
 * the order the script reads them, as (offset, length) in one buffer. */
typedef struct rl_batch {
    rl_redis *st;
    keel_worker *w;
    size_t m, nkeys, nargs;
    hit_call *calls[BATCH_MAX];
    keel_buf bytes;
    uint32_t key_off[KEYS_MAX], key_len[KEYS_MAX];
    uint32_t arg_off[ARGS_MAX], arg_len[ARGS_MAX];
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
    keel_buf_free(&b->bytes);
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
    const char *argv[KEYS_MAX + ARGS_MAX];
    size_t lens[KEYS_MAX + ARGS_MAX];
    char m[24];
    int ml = snprintf(m, sizeof(m), "%zu", b->m);
    for (size_t i = 0; i < b->nkeys; i++) {
        argv[i] = b->bytes.data + b->key_off[i];
        lens[i] = b->key_len[i];
    }
    argv[b->nkeys] = m; /* ARGV[1]: the number of chains */
    lens[b->nkeys] = (size_t)ml;
    argv[b->nkeys + 1] = ""; /* ARGV[2]: Redis's clock */
    lens[b->nkeys + 1] = 0;
    for (size_t i = 2; i < b->nargs; i++) {
        argv[b->nkeys + i] = b->bytes.data + b->arg_off[i];
        lens[b->nkeys + i] = b->arg_len[i];
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
    b->arg_off[b->nargs] = (uint32_t)b->bytes.len;
    keel_buf_append_u64(&b->bytes, v);
    b->arg_len[b->nargs] = (uint32_t)(b->bytes.len - b->arg_off[b->nargs]);
    b->nargs++;
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
        b = keel_malloc(sizeof(*b)); /* ~15 KiB, not worth zeroing */
        b->st = st;
        b->w = w;
        b->m = b->nkeys = 0;
        b->nargs = 2; /* the number of chains and the clock: when sent */
        b->bytes = (keel_buf){0};
        keel_buf_reserve(&b->bytes, 1024);
        open_batch = b;
        if (keel_worker_post(w, batch_send, b) < 0)
            open_batch = NULL; /* the worker is ending: this one alone, now */
    }
    const char *prefix = keel_redis_prefix(st->redis);
    size_t plen = strlen(prefix);
    num(b, n);
    for (size_t i = 0; i < n; i++) {
        b->key_off[b->nkeys] = (uint32_t)b->bytes.len;
        keel_buf_append(&b->bytes, prefix, plen);
        keel_buf_append(&b->bytes, checks[i].key, checks[i].keylen);
        b->key_len[b->nkeys] = (uint32_t)(plen + checks[i].keylen);
        b->nkeys++;
        h->limits[i] = checks[i].rate->limit;
        num(b, checks[i].rate->limit);
        num(b, checks[i].rate->window_ms);
    }
    b->calls[b->m++] = h;
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
