/* keel/log.h — structured logs: one JSON object per line on stdout (and
 * optionally a size-rotated file), or a human format (LOG_FORMAT=pretty).
 *
 * Fields whose names look secret (password, token, secret, authorization,
 * cookie, api key) are written as "[REDACTED]", at any depth.
 *
 * Worker threads buffer their lines and flush once per loop iteration, so
 * the access log costs one write(2) per batch, not per request.
 */
#ifndef KEEL_LOG_H
#define KEEL_LOG_H

#include "arena.h"
#include "config.h"

#ifdef __cplusplus
extern "C" {
#endif

enum {
    KEEL_LOG_TRACE = 0,
    KEEL_LOG_DEBUG,
    KEEL_LOG_INFO,
    KEEL_LOG_WARN,
    KEEL_LOG_ERROR,
    KEEL_LOG_FATAL
};

/* Applies LOG_LEVEL, LOG_FORMAT, LOG_FILE* and SERVICE_NAME. Logging works
 * before this call (info level, JSON, stdout). 0 or a negative error (the
 * log file cannot be opened). */
int keel_log_init(const keel_config *cfg);
/* Where lines go besides LOG_FILE: stdout (the default, for a service) or
 * e.g. stderr for CLI commands whose stdout is their output. */
void keel_log_set_fd(int fd);
void keel_log_close(void);

int keel_log_enabled(int level);
const char *keel_log_level_name(int level);

/* Logs `msg` with fields built by jansson's json_pack format `fmt` (an
 * object, e.g. "{s:s, s:i}"), or no fields when fmt is NULL. */
void keel_log(int level, const char *msg, const char *fmt, ...);

/* Logs msg with the fields of a jansson object (borrowed). */
struct json_t;
void keel_log_json(int level, const char *msg, struct json_t *fields);

/* For hot paths: starts a line in the thread's buffer with time, level and
 * msg, and returns the buffer so the caller appends `,"key":value` pairs;
 * keel_log_end() closes the line. Returns NULL when level is disabled. */
keel_buf *keel_log_begin(int level, const char *msg);
void keel_log_end(keel_buf *b);

/* The request context of the calling thread: every line begun while it
 * is set carries "request_id" and "trace_id" (either may be NULL). The
 * server sets it around a request's middleware, handler and completions
 * (keel_req_current); the strings must outlive the setting. */
void keel_log_set_context(const char *request_id, const char *trace_id);
/* The request id of the calling thread's context, or NULL. */
const char *keel_log_context_request_id(void);

/* Worker threads: buffer lines (1) until keel_log_flush(), or write each
 * line at once (0, the default). */
void keel_log_set_buffered(int on);
void keel_log_flush(void);

/* Flushes and frees the calling thread's buffer (call before a thread that
 * logged exits). */
void keel_log_thread_close(void);

/* 1 when a field name should be redacted. */
int keel_log_is_secret_key(const char *key);

#ifdef __cplusplus
}
#endif
#endif
