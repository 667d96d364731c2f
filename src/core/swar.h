/* swar.h — eight bytes at a time in a uint64_t ("SIMD within a register"),
 * for the scanners whose common case is a word with nothing special in it:
 * JSON string escaping (json.c, the OTLP encoder in obs/trace.c) and the
 * header values of every response (req.c). Never installed.
 *
 * keel__swar_below(x, n): non-zero when some byte of x is below n (n at
 * most 128; bytes from 0x80 never count, test them with KEEL_SWAR_HIGHS).
 * keel__swar_byte(x, c): non-zero when some byte of x is c. Both are exact
 * as "some byte", not per byte: a borrow can mark a neighbour, so use them
 * only to decide whether a word needs the byte-by-byte path. */
#ifndef KEEL_SWAR_H
#define KEEL_SWAR_H

#include <stdint.h>

#define KEEL_SWAR_ONES 0x0101010101010101ull
#define KEEL_SWAR_HIGHS 0x8080808080808080ull

static inline uint64_t keel__swar_below(uint64_t x, uint64_t n)
{
    return (x - KEEL_SWAR_ONES * n) & ~x & KEEL_SWAR_HIGHS;
}

static inline uint64_t keel__swar_byte(uint64_t x, uint64_t c)
{
    return keel__swar_below(x ^ (KEEL_SWAR_ONES * c), 1);
}

#endif
