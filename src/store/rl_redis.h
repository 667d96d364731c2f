/* rl_redis.h — internals of the Redis rate-limit store shared with its
 * tests (the GCRA parity test runs the script itself). Never installed. */
#ifndef KEEL_RL_REDIS_H
#define KEEL_RL_REDIS_H

#include "keel/rl_store.h"

struct redisReply;

/* The GCRA script: KEYS[1] key, ARGV limit, window_ms[, now_us]. */
extern const char keel__rl_gcra_lua[];

/* The script's answer {allowed, remaining, reset_ms, retry_after_ms} as a
 * keel_rl_result. 0 or KEEL_EPROTO. */
int keel__rl_parse_reply(const struct redisReply *rep, uint64_t limit, keel_rl_result *res);

#endif
