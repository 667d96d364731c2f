/* keel/common.h — value types, error codes and flow-control codes shared by
 * every keel module.
 *
 * Conventions (see docs/extending.md):
 *   - functions return 0 on success and a negative KEEL_E* code on failure;
 *     -errno values pass through unchanged;
 *   - middleware and handlers return a flow-control code (keel_flow), never
 *     an error code.
 */
#ifndef KEEL_COMMON_H
#define KEEL_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A non-owning view of bytes: {ptr, len}. Not NUL-terminated unless said. */
typedef struct keel_str {
    const char *ptr;
    size_t len;
} keel_str;

#define KEEL_STR(lit) ((keel_str){(lit), sizeof(lit) - 1})
#define KEEL_STR_NULL ((keel_str){NULL, 0})

/* Builds a view of a NUL-terminated string (NULL gives the empty view). */
static inline keel_str keel_str_c(const char *s)
{
    keel_str r = {s, s ? strlen(s) : 0};
    return r;
}

/* 1 when a and b hold the same bytes. */
static inline int keel_str_eq(keel_str a, keel_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* The value of a hex digit, or -1. */
static inline int keel_hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* 1 when a equals the NUL-terminated c, ASCII case-insensitively. */
int keel_str_ieq_c(keel_str a, const char *c);

/* Error codes. 0 is success; every error is negative. */
#define KEEL_ERRNO_MAP(X)                                                      \
    X(NOMEM, -20001, "out of memory")                                          \
    X(INVAL, -20002, "invalid argument")                                       \
    X(BUSY, -20003, "queue full")                                              \
    X(CANCELED, -20004, "canceled")                                            \
    X(TIMEDOUT, -20005, "timed out")                                           \
    X(NOTFOUND, -20006, "not found")                                           \
    X(EXISTS, -20007, "already exists")                                        \
    X(ALREADY, -20008, "already done")                                         \
    X(TOOBIG, -20009, "too large")                                             \
    X(CONFIG, -20010, "invalid configuration")                                 \
    X(IO, -20011, "input/output error")                                        \
    X(CLOSED, -20012, "closed")                                                \
    X(PROTO, -20013, "protocol error")                                         \
    X(ACCES, -20014, "access denied")                                          \
    X(UNAVAIL, -20015, "service unavailable")

enum {
#define KEEL_ERR_ENUM(name, val, msg) KEEL_E##name = (val),
    KEEL_ERRNO_MAP(KEEL_ERR_ENUM)
#undef KEEL_ERR_ENUM
};

/* A static description of a KEEL_E* code or a negative errno. Never NULL. */
const char *keel_strerror(int err);

/* Flow control returned by middleware and handlers (never an error code). */
typedef enum keel_flow {
    KEEL_NEXT = 1,    /* go on to the next middleware / the handler */
    KEEL_DONE = 2,    /* a response was produced (or will be, synchronously) */
    KEEL_SUSPEND = 3  /* the request waits; keel_req_resume() continues it */
} keel_flow;

/* One allocator. keel_malloc aborts on out-of-memory: use it where the size
 * is ours; use keel_try_malloc where an untrusted size drives it. */
void *keel_malloc(size_t n);
void *keel_calloc(size_t n, size_t size);
void *keel_realloc(void *p, size_t n);
void *keel_try_malloc(size_t n);
char *keel_strdup(const char *s);
/* Copies src into dst[cap] (cap > 0), cut to cap - 1 bytes and always
 * NUL-terminated; returns the bytes copied. snprintf(dst, cap, "%s", src)
 * without the format machinery (a few thousand instructions per call on
 * the request path). */
size_t keel_strlcpy(char *dst, const char *src, size_t cap);
char *keel_strndup(const char *s, size_t n);
void keel_free(void *p);

/* Monotonic milliseconds and nanoseconds; wall-clock milliseconds. */
uint64_t keel_now_ms(void);
uint64_t keel_now_ns(void);
uint64_t keel_wall_ms(void);

/* 64 random bits from a per-thread generator (xoshiro256**) seeded from
 * the kernel: for ids that must be unique (request, trace and span ids),
 * never for secrets (tokens, keys: libsodium's randombytes). */
uint64_t keel_random64(void);

/* SHA-256, streaming. With the system's OpenSSL libcrypto (already
 * mapped into keel by libcurl and libpq; loaded with dlopen, no link
 * dependency) it runs on the CPU's SHA instructions where there are any
 * (~2 GB/s against ~0.3 GB/s for libsodium's portable C, which is the
 * fallback when libcrypto cannot be loaded). For content hashes of large
 * bodies (uploads); the same digest either way. A started hash that is
 * abandoned must be released with keel_sha256_free (keel_sha256_final
 * releases it too; both are safe to call twice). */
typedef struct keel_sha256 {
    void *evp;          /* OpenSSL's EVP_MD_CTX, or NULL: state below */
    uint64_t state[16]; /* libsodium's crypto_hash_sha256_state */
} keel_sha256;

void keel_sha256_init(keel_sha256 *h);
void keel_sha256_update(keel_sha256 *h, const void *p, size_t n);
void keel_sha256_final(keel_sha256 *h, uint8_t out[32]);
void keel_sha256_free(keel_sha256 *h);
/* 1 when keel_sha256 uses libcrypto (docs, /health/detailed), else 0. */
int keel_sha256_accelerated(void);

/* Initialises what the library needs (libsodium) once per process.
 * Thread-safe and cheap after the first call; keel calls it itself
 * wherever it needs it (keel_main, keel_server_new, tokens, passwords,
 * locks, events), so applications need not. Aborts when the system has
 * no random source, which nothing in keel can do safely without. */
void keel_library_init(void);

#ifdef __cplusplus
}
#endif
#endif
