/* rl_redis.c — the Redis rate-limit store: keel_gcra (src/mw/rate_limit.c)
 * as one Lua script, so a check is atomic across every instance sharing
 * the Redis. Same arithmetic, in µs, on Redis's clock (TIME inside the
 * script: instances' clocks never have to agree). Lua numbers are
 * doubles: µs since 1970 (~2^51) and every intermediate stay exact below
 * 2^53. A key holds its TAT and expires when it passes (a key whose TAT
 * has passed is the same as no key).
 *
 * The script takes a chain of keys (KEYS[1..n], ARGV limit and window_ms
 * for each) and checks them in order in one round trip, stopping at the
 * first refusal: exactly what n single checks in turn would do (the
 * limiter's burst tier, then the route's tier: a request the route's tier
 * refuses has been charged to the burst tier; one the burst tier refuses
 * never reaches the route's). A single check is a chain of one. It answers
 * {index (1-based) of the check that decided, allowed, remaining,
 * reset_ms, retry_after_ms}. ARGV[2n+1], when given, replaces TIME and the
 * keys are kept without expiry (which would run on Redis's real clock) —
 * only the parity test uses it. */
#include <stdio.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "keel/redis.h"
#include "keel/rl_store.h"
#include "store/rl_redis.h"

const char keel__rl_gcra_lua[] =
    "local n = #KEYS\n"
    "local fixed = ARGV[2 * n + 1]\n"
    "local now\n"
    "if fixed then now = tonumber(fixed) else\n"
    "  local t = redis.call('TIME')\n"
    "  now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "end\n"
    "local res\n"
    "for i = 1, n do\n"
    "  local limit = tonumber(ARGV[2 * i - 1])\n"
    "  local window = tonumber(ARGV[2 * i]) * 1000\n"
    "  if limit == 0 then\n"
    "    res = {i, 1, 0, 0, 0}\n"
    "  else\n"
    "    local t = math.floor(window / limit)\n"
    "    if t == 0 then t = 1 end\n"
    "    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')\n"
    "    if tat < now then tat = now end\n"
    "    local nxt = tat + t\n"
    "    if nxt - now > window then\n"
    "      return {i, 0, 0, math.floor((tat - now + 999) / 1000),\n"
    "              math.floor((nxt - window - now + 999) / 1000)}\n"
    "    end\n"
    "    local ttl = math.floor((nxt - now + 999) / 1000)\n"
    "    if ttl < 1 then ttl = 1 end\n"
    "    if fixed then redis.call('SET', KEYS[i], string.format('%d', nxt))\n"
    "    else redis.call('SET', KEYS[i], string.format('%d', nxt), 'PX', ttl) end\n"
    "    res = {i, 1, math.floor((window - (nxt - now)) / t), ttl, 0}\n"
    "  end\n"
    "end\n"
    "return res\n";

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
} hit_call;

int keel__rl_parse_reply(const redisReply *rep, const uint64_t *limits, size_t n, size_t *idx,
                         keel_rl_result *res)
{
    memset(res, 0, sizeof(*res));
    *idx = 0;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 5)
        return KEEL_EPROTO;
    for (int i = 0; i < 5; i++)
        if (rep->element[i]->type != REDIS_REPLY_INTEGER || rep->element[i]->integer < 0)
            return KEEL_EPROTO;
    long long at = rep->element[0]->integer;
    if (at < 1 || (size_t)at > n)
        return KEEL_EPROTO;
    *idx = (size_t)at - 1;
    res->limit = limits[*idx];
    res->allowed = rep->element[1]->integer == 1;
    res->remaining = (uint64_t)rep->element[2]->integer;
    res->reset_ms = (uint64_t)rep->element[3]->integer;
    res->retry_after_ms = (uint64_t)rep->element[4]->integer;
    return 0;
}

static void on_reply(void *arg, int status, redisReply *reply)
{
    hit_call *h = arg;
    keel_rl_result res;
    size_t idx = 0;
    if (status == 0)
        status = keel__rl_parse_reply(reply, h->limits, h->n, &idx, &res);
    if (h->chain_done)
        h->chain_done(h->arg, status, status == 0 ? idx : 0, status == 0 ? &res : NULL);
    else
        h->done(h->arg, status, status == 0 ? &res : NULL);
    keel_free(h);
}

/* One EVALSHA for the chain; h is answered (and freed) by on_reply, or
 * here with the error when the command cannot be sent. */
static void eval_chain(rl_redis *st, keel_worker *w, const keel_rl_check *checks, size_t n,
                       hit_call *h)
{
    const char *prefix = keel_redis_prefix(st->redis);
    char keys[KEEL_RL_CHAIN_MAX][256], nums[KEEL_RL_CHAIN_MAX][2][24];
    const char *argv[3 * KEEL_RL_CHAIN_MAX];
    size_t lens[3 * KEEL_RL_CHAIN_MAX];
    h->n = n;
    for (size_t i = 0; i < n; i++) {
        int k = snprintf(keys[i], sizeof(keys[i]), "%s%.*s", prefix, (int)checks[i].keylen,
                         checks[i].key);
        if (k < 0 || (size_t)k >= sizeof(keys[i]))
            k = (int)sizeof(keys[i]) - 1;
        snprintf(nums[i][0], sizeof(nums[i][0]), "%llu",
                 (unsigned long long)checks[i].rate->limit);
        snprintf(nums[i][1], sizeof(nums[i][1]), "%llu",
                 (unsigned long long)checks[i].rate->window_ms);
        h->limits[i] = checks[i].rate->limit;
        argv[i] = keys[i];
        lens[i] = (size_t)k;
        argv[n + 2 * i] = nums[i][0];
        lens[n + 2 * i] = strlen(nums[i][0]);
        argv[n + 2 * i + 1] = nums[i][1];
        lens[n + 2 * i + 1] = strlen(nums[i][1]);
    }
    int rc = keel_redis_eval(st->redis, w, st->script, (int)n, (int)(3 * n), argv, lens,
                             on_reply, h);
    if (rc < 0) { /* breaker open or connection down: answered now */
        if (h->chain_done)
            h->chain_done(h->arg, rc, 0, NULL);
        else
            h->done(h->arg, rc, NULL);
        keel_free(h);
    }
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
    eval_chain(self, w, &c, 1, h);
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
    eval_chain(self, w, checks, n, h);
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
