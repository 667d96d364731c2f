/* keel/arena.h — a bump allocator freed all at once, and a growable byte
 * buffer.
 *
 * Every request owns an arena: whatever a handler allocates from it lives
 * until the response has been written, then goes in one free. Non-memory
 * resources (files, statements) can be tied to the same lifetime with
 * keel_arena_defer().
 */
#ifndef KEEL_ARENA_H
#define KEEL_ARENA_H

#include <stdarg.h>
#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_arena_chunk keel_arena_chunk;
typedef struct keel_arena_defer_item keel_arena_defer_item;

typedef struct keel_arena {
    keel_arena_chunk *head;        /* current chunk (owned) */
    keel_arena_defer_item *defers; /* run in reverse order on reset */
    size_t chunk_size;             /* default size of a new chunk */
    size_t total;                  /* bytes handed out since the last reset */
    char *inline_buf;              /* optional caller-provided first block */
    size_t inline_len;
    size_t inline_used;
} keel_arena;

/* Prepares an arena. `first` (may be NULL) is a caller-owned block used
 * before any heap chunk, so small requests never call malloc. */
void keel_arena_init(keel_arena *a, void *first, size_t first_len);

/* Runs the deferred callbacks (last registered first) and frees every chunk
 * but keeps the arena usable. */
void keel_arena_reset(keel_arena *a);

/* keel_arena_reset, then releases everything. */
void keel_arena_close(keel_arena *a);

/* Memory aligned for any type, valid until the next reset. Aborts on OOM. */
void *keel_arena_alloc(keel_arena *a, size_t n);

/* Like keel_arena_alloc but returns NULL when n exceeds `max_untrusted`
 * style limits are the caller's job; this one never aborts for large n:
 * it returns NULL when the system refuses. */
void *keel_arena_try_alloc(keel_arena *a, size_t n);

/* A NUL-terminated copy of n bytes. */
char *keel_arena_strndup(keel_arena *a, const char *s, size_t n);

/* printf into the arena. */
char *keel_arena_printf(keel_arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Calls fn(arg) at the next reset/close, before the memory goes. */
void keel_arena_defer(keel_arena *a, void (*fn)(void *arg), void *arg);

/* A growable heap buffer. Zero-initialised is a valid empty buffer. */
typedef struct keel_buf {
    char *data;
    size_t len;
    size_t cap;
} keel_buf;

/* Makes room for n more bytes; aborts on OOM. Returns the write position. */
char *keel_buf_reserve(keel_buf *b, size_t n);
void keel_buf_append(keel_buf *b, const void *p, size_t n);
void keel_buf_append_str(keel_buf *b, const char *s);
void keel_buf_printf(keel_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void keel_buf_vprintf(keel_buf *b, const char *fmt, va_list ap);
/* Appends an unsigned decimal number. */
void keel_buf_append_u64(keel_buf *b, uint64_t v);
/* Appends s as the inside of a JSON string (quotes not included). */
void keel_buf_append_json_escaped(keel_buf *b, const char *s, size_t n);
/* Drops the first n bytes. */
void keel_buf_consume(keel_buf *b, size_t n);
void keel_buf_free(keel_buf *b);

#ifdef __cplusplus
}
#endif
#endif
