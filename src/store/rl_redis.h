/* rl_redis.h — internals of the Redis rate-limit store shared with its
 * tests (the GCRA parity test runs the script itself). Never installed. */
#ifndef KEEL_RL_REDIS_H
#define KEEL_RL_REDIS_H

#include "keel/rl_store.h"

struct redisReply;

/* The GCRA script, for a batch of chains: ARGV[1] the number of chains,
 * ARGV[2] "" or a fixed now_us, then per chain n, limit_1, window_ms_1,
 * ..., limit_n, window_ms_n; KEYS every chain's keys in order. Each chain
 * is checked in order, stopping at its first refusal; the answer is 5
 * integers per chain (rl_redis.c). */
extern const char keel__rl_gcra_lua[];

/* The script's answer for a batch of one chain of n checks with these
 * limits: {index, allowed, remaining, reset_ms, retry_after_ms} -> *idx
 * (0-based) and res. 0 or KEEL_EPROTO. */
int keel__rl_parse_reply(const struct redisReply *rep, const uint64_t *limits, size_t n,
                         size_t *idx, keel_rl_result *res);

#endif
