/* rl_redis.h — internals of the Redis rate-limit store shared with its
 * tests (the GCRA parity test runs the script itself). Never installed. */
#ifndef KEEL_RL_REDIS_H
#define KEEL_RL_REDIS_H

#include "keel/rl_store.h"

struct redisReply;

/* The GCRA script: KEYS[1..n] keys, ARGV limit_1, window_ms_1, ...,
 * limit_n, window_ms_n[, now_us]; checked in order, stopping at the first
 * refusal (rl_redis.c). */
extern const char keel__rl_gcra_lua[];

/* The script's answer {index, allowed, remaining, reset_ms,
 * retry_after_ms} for a chain of n checks with these limits: *idx (0-based)
 * and res. 0 or KEEL_EPROTO. */
int keel__rl_parse_reply(const struct redisReply *rep, const uint64_t *limits, size_t n,
                         size_t *idx, keel_rl_result *res);

#endif
