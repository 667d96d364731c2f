/* arena.c — allocator, request arena, growable buffer, clocks, errors. */
#include "keel/arena.h"

#include <errno.h>
#include <stdint.h>
#include <sys/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* ---------------------------------------------------------------- errors */

const char *keel_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
#define KEEL_ERR_CASE(name, val, msg)                                          \
    case val:                                                                  \
        return msg;
        KEEL_ERRNO_MAP(KEEL_ERR_CASE)
#undef KEEL_ERR_CASE
    default:
        break;
    }
    if (err < 0 && err > -4096)
        return strerror(-err);
    return "unknown error";
}

/* ---------------------------------------------------------------- memory */

static void oom(size_t n)
{
    fprintf(stderr, "keel: out of memory allocating %zu bytes\n", n);
    abort();
}

void *keel_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *keel_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *keel_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

void *keel_try_malloc(size_t n)
{
    return malloc(n ? n : 1);
}

size_t keel_strlcpy(char *dst, const char *src, size_t cap)
{
    size_t n = src ? strnlen(src, cap - 1) : 0;
    memcpy(dst, src ? src : "", n);
    dst[n] = 0;
    return n;
}

char *keel_strdup(const char *s)
{
    return s ? keel_strndup(s, strlen(s)) : NULL;
}

char *keel_strndup(const char *s, size_t n)
{
    char *d = keel_malloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

void keel_free(void *p)
{
    free(p);
}

/* ---------------------------------------------------------------- ids */

static __thread uint64_t rng[4];
static __thread int rng_seeded;

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t keel_random64(void)
{
    if (!rng_seeded) {
        if (getrandom(rng, sizeof(rng), 0) != (ssize_t)sizeof(rng)) {
            uint64_t t = keel_now_ns();
            for (int i = 0; i < 4; i++)
                rng[i] = t * 0x9e3779b97f4a7c15ull + (uint64_t)i + (uint64_t)(uintptr_t)&rng;
        }
        rng_seeded = 1;
    }
    uint64_t r = rotl(rng[1] * 5, 7) * 9, t = rng[1] << 17;
    rng[2] ^= rng[0];
    rng[3] ^= rng[1];
    rng[1] ^= rng[2];
    rng[0] ^= rng[3];
    rng[2] ^= t;
    rng[3] = rotl(rng[3], 45);
    return r;
}

/* ---------------------------------------------------------------- clocks */

uint64_t keel_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t keel_now_ms(void)
{
    return keel_now_ns() / 1000000u;
}

uint64_t keel_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---------------------------------------------------------------- arena */

struct keel_arena_chunk {
    keel_arena_chunk *next;
    size_t size;
    size_t used;
    max_align_t data[]; /* keeps data aligned for any type */
};

struct keel_arena_defer_item {
    keel_arena_defer_item *next;
    void (*fn)(void *);
    void *arg;
};

#define ALIGN_UP(n) (((n) + (_Alignof(max_align_t) - 1)) & ~(_Alignof(max_align_t) - 1))

void keel_arena_init(keel_arena *a, void *first, size_t first_len)
{
    memset(a, 0, sizeof(*a));
    a->chunk_size = 8192;
    if (first) {
        /* align the caller's block */
        uintptr_t p = (uintptr_t)first;
        uintptr_t al = ALIGN_UP(p);
        if (al - p < first_len) {
            a->inline_buf = (char *)al;
            a->inline_len = first_len - (al - p);
        }
    }
}

void keel_arena_reset(keel_arena *a)
{
    while (a->defers) {
        keel_arena_defer_item *d = a->defers;
        a->defers = d->next;
        d->fn(d->arg);
    }
    keel_arena_chunk *c = a->head;
    while (c) {
        keel_arena_chunk *n = c->next;
        free(c);
        c = n;
    }
    a->head = NULL;
    a->total = 0;
    a->inline_used = 0;
}

void keel_arena_close(keel_arena *a)
{
    keel_arena_reset(a);
}

void *keel_arena_try_alloc(keel_arena *a, size_t n)
{
    size_t need = ALIGN_UP(n ? n : 1);
    /* a size whose chunk header would wrap size_t around: no block */
    if (need < n || need > SIZE_MAX - sizeof(keel_arena_chunk))
        return NULL;
    if (a->inline_buf && a->inline_len - a->inline_used >= need) {
        void *p = a->inline_buf + a->inline_used;
        a->inline_used += need;
        a->total += need;
        return p;
    }
    keel_arena_chunk *c = a->head;
    if (!c || c->size - c->used < need) {
        size_t size = need > a->chunk_size / 2 ? need : a->chunk_size;
        c = malloc(sizeof(*c) + size);
        if (!c)
            return NULL;
        c->size = size;
        c->used = 0;
        if (need > a->chunk_size / 2 && a->head) {
            /* a big block: keep the current chunk in front for small ones */
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    void *p = (char *)c->data + c->used;
    c->used += need;
    a->total += need;
    return p;
}

void *keel_arena_alloc(keel_arena *a, size_t n)
{
    void *p = keel_arena_try_alloc(a, n);
    if (!p)
        oom(n);
    return p;
}

char *keel_arena_strndup(keel_arena *a, const char *s, size_t n)
{
    char *d = keel_arena_alloc(a, n + 1);
    if (n)
        memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *keel_arena_printf(keel_arena *a, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    char *d = keel_arena_alloc(a, (size_t)n + 1);
    vsnprintf(d, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return d;
}

void keel_arena_defer(keel_arena *a, void (*fn)(void *arg), void *arg)
{
    keel_arena_defer_item *d = keel_arena_alloc(a, sizeof(*d));
    d->fn = fn;
    d->arg = arg;
    d->next = a->defers;
    a->defers = d;
}

/* ---------------------------------------------------------------- buf */

char *keel_buf_reserve(keel_buf *b, size_t n)
{
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n)
            cap *= 2;
        b->data = keel_realloc(b->data, cap);
        b->cap = cap;
    }
    return b->data + b->len;
}

void keel_buf_append(keel_buf *b, const void *p, size_t n)
{
    if (!n)
        return;
    memcpy(keel_buf_reserve(b, n), p, n);
    b->len += n;
}

void keel_buf_append_str(keel_buf *b, const char *s)
{
    keel_buf_append(b, s, strlen(s));
}

void keel_buf_vprintf(keel_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    char *w = keel_buf_reserve(b, 128);
    int n = vsnprintf(w, b->cap - b->len, fmt, ap);
    if (n >= 0 && (size_t)n >= b->cap - b->len) {
        w = keel_buf_reserve(b, (size_t)n + 1);
        n = vsnprintf(w, b->cap - b->len, fmt, ap2);
    }
    va_end(ap2);
    if (n > 0)
        b->len += (size_t)n;
}

void keel_buf_printf(keel_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    keel_buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void keel_buf_append_u64(keel_buf *b, uint64_t v)
{
    char tmp[24];
    char *e = tmp + sizeof(tmp), *p = e;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    keel_buf_append(b, p, (size_t)(e - p));
}

void keel_buf_append_json_escaped(keel_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char *w = keel_buf_reserve(b, n * 6);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *w++ = '\\';
            *w++ = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            switch (c) {
            case '\n': *w++ = '\\'; *w++ = 'n'; break;
            case '\r': *w++ = '\\'; *w++ = 'r'; break;
            case '\t': *w++ = '\\'; *w++ = 't'; break;
            default:
                *w++ = '\\'; *w++ = 'u'; *w++ = '0'; *w++ = '0';
                *w++ = hex[c >> 4]; *w++ = hex[c & 15];
            }
        } else if (c >= 0x80) {
            /* Keep valid UTF-8; replace invalid bytes so logs stay JSON. */
            size_t need = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : 0;
            int ok = need && c < 0xf5;
            for (size_t k = 1; ok && k <= need; k++)
                ok = i + k < n && ((unsigned char)s[i + k] & 0xc0) == 0x80;
            if (ok) {
                memcpy(w, s + i, need + 1);
                w += need + 1;
                i += need;
            } else {
                memcpy(w, "\\ufffd", 6);
                w += 6;
            }
        } else {
            *w++ = (char)c;
        }
    }
    b->len = (size_t)(w - b->data);
}

void keel_buf_consume(keel_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void keel_buf_free(keel_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
