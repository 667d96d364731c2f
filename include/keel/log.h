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

/* ---------------------------------------------------------------- levels per module
 *
 * Every line is logged by a module: a dotted name derived from the source
 * file of the call ("store.redis" for src/store/redis.c, "mw.access_log",
 * "app.users"; outside src/, the last directory and the file's name,
 * "hello-service.main"). keel_log, keel_log_json, keel_log_begin and
 * keel_log_enabled are macros that pass __FILE__, so every call is
 * attributed without naming its module. A module's level is the one set
 * for the longest dotted prefix of its name ("store" covers
 * "store.redis"), else the root level (LOG_LEVEL). Changes apply at once
 * on every thread; each thread caches a call site's level until the next
 * change, so the check on the hot path is a lookup in a small table.
 */

/* The level named `name` ("trace" .. "fatal", case-insensitive; "warning"
 * for warn), or -1. */
int keel_log_level_parse(const char *name);
/* Sets the level of `module` (NULL or "" or "root": the root level);
 * level -1 removes the module's own level (it inherits again). 0, or
 * KEEL_EINVAL (a module name not [a-z0-9_.-]{1,63}, an unknown level, -1
 * for the root), KEEL_EBUSY (64 module levels already set). */
int keel_log_set_level(const char *module, int level);
/* Parses "module=level, module2=level" (LOG_LEVELS; empty is fine) and,
 * when apply is set, replaces every module's own level with these. 0, or
 * KEEL_EINVAL (nothing applied) for a malformed entry, a bad module name
 * or an unknown level. */
int keel_log_apply_levels(const char *spec, int apply);
/* The level lines of `module` are logged at (NULL: the root's). */
int keel_log_effective_level(const char *module);
/* {"root": "info", "modules": {"store.redis": {"configured": "debug" or
 * null, "effective": "debug"}, ...}}: every module that has logged (or
 * asked whether to) since start, and every module with a level of its
 * own. New ref. */
struct json_t *keel_log_levels_json(void);
/* The module name of a source path (as above) into buf. */
void keel_log_module_of(const char *file, char *buf, size_t cap);

void keel__log_at(const char *file, int level, const char *msg, const char *fmt, ...);
void keel__log_json_at(const char *file, int level, const char *msg, struct json_t *fields);
keel_buf *keel__log_begin_at(const char *file, int level, const char *msg);
int keel__log_enabled_at(const char *file, int level);
#define keel_log(level, msg, ...) keel__log_at(__FILE__, (level), (msg), __VA_ARGS__)
#define keel_log_json(level, msg, fields) keel__log_json_at(__FILE__, (level), (msg), (fields))
#define keel_log_begin(level, msg) keel__log_begin_at(__FILE__, (level), (msg))
#define keel_log_enabled(level) keel__log_enabled_at(__FILE__, (level))

#ifdef __cplusplus
}
#endif
#endif
