/* rl_redis.c — the Redis rate-limit store: keel_gcra (src/mw/rate_limit.c)
 * as one Lua script, so a check is atomic across every instance sharing
 * the Redis. Same arithmetic, in µs, on Redis's clock (TIME inside the
 * script: instances' clocks never have to agree). Lua numbers are
 * doubles: µs since 1970 (~2^51) and every intermediate stay exact below
 * 2^53. The key holds the TAT and expires when it passes (a key whose TAT
 * has passed is the same as no key). ARGV[3], when given, replaces TIME and
 * the key is kept without expiry (which would run on Redis's real clock) —
 * only the parity test uses it. */
#include <stdio.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "keel/redis.h"
#include "keel/rl_store.h"
#include "store/rl_redis.h"

const char keel__rl_gcra_lua[] =
    "local limit = tonumber(ARGV[1])\n"
    "local window = tonumber(ARGV[2]) * 1000\n"
    "local now\n"
    "if ARGV[3] then now = tonumber(ARGV[3]) else\n"
    "  local t = redis.call('TIME')\n"
    "  now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "end\n"
    "local t = math.floor(window / limit)\n"
    "if t == 0 then t = 1 end\n"
    "local tat = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "if tat < now then tat = now end\n"
    "local nxt = tat + t\n"
    "if nxt - now <= window then\n"
    "  local ttl = math.floor((nxt - now + 999) / 1000)\n"
    "  if ttl < 1 then ttl = 1 end\n"
    "  if ARGV[3] then redis.call('SET', KEYS[1], string.format('%d', nxt))\n"
    "  else redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', ttl) end\n"
    "  return {1, math.floor((window - (nxt - now)) / t), ttl, 0}\n"
    "end\n"
    "return {0, 0, math.floor((tat - now + 999) / 1000),\n"
    "        math.floor((nxt - window - now + 999) / 1000)}\n";

typedef struct rl_redis {
    keel_redis *redis;
    keel_redis_script *script;
} rl_redis;

typedef struct hit_call {
    keel_rl_done_fn done;
    void *arg;
    uint64_t limit;
} hit_call;

int keel__rl_parse_reply(const redisReply *rep, uint64_t limit, keel_rl_result *res)
{
    memset(res, 0, sizeof(*res));
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 4)
        return KEEL_EPROTO;
    for (int i = 0; i < 4; i++)
        if (rep->element[i]->type != REDIS_REPLY_INTEGER || rep->element[i]->integer < 0)
            return KEEL_EPROTO;
    res->limit = limit;
    res->allowed = rep->element[0]->integer == 1;
    res->remaining = (uint64_t)rep->element[1]->integer;
    res->reset_ms = (uint64_t)rep->element[2]->integer;
    res->retry_after_ms = (uint64_t)rep->element[3]->integer;
    return 0;
}

static void on_reply(void *arg, int status, redisReply *reply)
{
    hit_call *h = arg;
    keel_rl_result res;
    if (status == 0)
        status = keel__rl_parse_reply(reply, h->limit, &res);
    h->done(h->arg, status, status == 0 ? &res : NULL);
    keel_free(h);
}

static void rr_hit(void *self, keel_worker *w, const char *key, size_t keylen,
                   const keel_rl_rate *rate, keel_rl_done_fn done, void *arg)
{
    rl_redis *st = self;
    if (rate->limit == 0) {
        keel_rl_result res = {.allowed = 1};
        done(arg, 0, &res);
        return;
    }
    const char *prefix = keel_redis_prefix(st->redis);
    char full[256], lim[24], win[24];
    int n = snprintf(full, sizeof(full), "%s%.*s", prefix, (int)keylen, key);
    if (n < 0 || (size_t)n >= sizeof(full))
        n = (int)sizeof(full) - 1;
    snprintf(lim, sizeof(lim), "%llu", (unsigned long long)rate->limit);
    snprintf(win, sizeof(win), "%llu", (unsigned long long)rate->window_ms);
    const char *argv[3] = {full, lim, win};
    size_t lens[3] = {(size_t)n, strlen(lim), strlen(win)};
    hit_call *h = keel_malloc(sizeof(*h));
    h->done = done;
    h->arg = arg;
    h->limit = rate->limit;
    int rc = keel_redis_eval(st->redis, w, st->script, 1, 3, argv, lens, on_reply, h);
    if (rc < 0) { /* breaker open or connection down: answered now */
        keel_free(h);
        done(arg, rc, NULL);
    }
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
    keel_rl_store s = {.name = "redis", .hit = rr_hit, .free = rr_free, .self = st};
    return s;
}
