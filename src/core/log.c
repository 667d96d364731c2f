/* log.c — JSON-lines logger with per-thread buffers and size rotation.
 *
 * Each thread appends whole lines to its own buffer; a flush writes the
 * buffer to stdout (and the log file) under one mutex, so lines from
 * different threads never interleave and rotation happens between lines.
 */
#include "keel/log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static struct {
    int level;
    int pretty;
    char *service;
    char *file;
    int file_fd;
    uint64_t file_size;
    uint64_t file_max;
    unsigned keep;
    pthread_mutex_t mu;
} L = {KEEL_LOG_INFO, 0, NULL, NULL, -1, 0, 0, 0, PTHREAD_MUTEX_INITIALIZER};

static __thread keel_buf tl_buf;
static __thread int tl_buffered;
static __thread size_t tl_line_start;
static __thread time_t tl_sec = -1;
static __thread char tl_time[32];
/* The request whose code runs on this thread (set by the server around
 * middleware, handlers and completions): its ids go into every line. */
static __thread const char *tl_ctx_request_id;
static __thread const char *tl_ctx_trace_id;

#define FLUSH_AT (32 * 1024)

static const char *const level_names[] = {"trace", "debug", "info",
                                          "warn", "error", "fatal"};

const char *keel_log_level_name(int level)
{
    return level >= 0 && level <= KEEL_LOG_FATAL ? level_names[level] : "info";
}

/* ---------------------------------------------------------------- module levels */

#define MAX_SET 64     /* modules with a level of their own */
#define MAX_KNOWN 256  /* modules seen, for the listing */
#define SITE_CACHE 64  /* per thread */

static struct {
    pthread_mutex_t mu;
    unsigned gen;                 /* atomic: bumped by every change */
    struct { char name[64]; int level; } set[MAX_SET];
    size_t nset;
    char known[MAX_KNOWN][64];
    size_t nknown;
} M = {PTHREAD_MUTEX_INITIALIZER, 1, {{"", 0}}, 0, {""}, 0};

static __thread struct site {
    const char *file;
    unsigned gen;
    int level;
} tl_sites[SITE_CACHE];

void keel_log_module_of(const char *file, char *buf, size_t cap)
{
    if (!cap)
        return;
    const char *p = NULL, *q = file;
    while ((q = strstr(q, "src/")) != NULL) { /* the last "src/" */
        if (q == file || q[-1] == '/')
            p = q + 4;
        q += 4;
    }
    if (!p) { /* the last two components */
        const char *last = strrchr(file, '/');
        p = file;
        if (last) {
            const char *prev = last;
            while (prev > file && prev[-1] != '/')
                prev--;
            p = prev;
        }
    }
    size_t n = 0;
    for (; *p && n + 1 < cap; p++) {
        if (*p == '.' && strchr(p, '/') == NULL)
            break; /* the extension */
        buf[n++] = *p == '/' ? '.' : *p;
    }
    buf[n] = '\0';
}

/* Under M.mu: the level of module `mod`. */
static int resolve_locked(const char *mod)
{
    size_t best = 0;
    int level = L.level;
    for (size_t i = 0; i < M.nset; i++) {
        size_t l = strlen(M.set[i].name);
        if (l > best && !strncmp(mod, M.set[i].name, l) && (mod[l] == '\0' || mod[l] == '.')) {
            best = l;
            level = M.set[i].level;
        }
    }
    return level;
}

static void remember_locked(const char *mod)
{
    for (size_t i = 0; i < M.nknown; i++)
        if (!strcmp(M.known[i], mod))
            return;
    if (M.nknown < MAX_KNOWN)
        snprintf(M.known[M.nknown++], sizeof(M.known[0]), "%s", mod);
}

static int file_level(const char *file)
{
    unsigned gen = __atomic_load_n(&M.gen, __ATOMIC_ACQUIRE);
    struct site *st = &tl_sites[((uintptr_t)file >> 3) % SITE_CACHE];
    if (st->file == file && st->gen == gen)
        return st->level;
    char mod[64];
    keel_log_module_of(file, mod, sizeof(mod));
    pthread_mutex_lock(&M.mu);
    remember_locked(mod);
    int level = resolve_locked(mod);
    gen = M.gen;
    pthread_mutex_unlock(&M.mu);
    st->file = file;
    st->gen = gen;
    st->level = level;
    return level;
}

int keel_log_level_parse(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i <= KEEL_LOG_FATAL; i++)
        if (!strcasecmp(name, level_names[i]))
            return i;
    if (!strcasecmp(name, "warning"))
        return KEEL_LOG_WARN;
    return -1;
}

static int valid_module(const char *m)
{
    size_t n = strlen(m);
    if (n == 0 || n > 63 || m[0] == '.' || m[n - 1] == '.')
        return 0;
    for (; *m; m++)
        if (!((*m >= 'a' && *m <= 'z') || (*m >= '0' && *m <= '9') || *m == '_' ||
              *m == '.' || *m == '-'))
            return 0;
    return 1;
}

int keel_log_set_level(const char *module, int level)
{
    int root = !module || !*module || !strcmp(module, "root");
    if (level < -1 || level > KEEL_LOG_FATAL || (root && level < 0) ||
        (!root && !valid_module(module)))
        return KEEL_EINVAL;
    int rc = 0;
    pthread_mutex_lock(&M.mu);
    if (root) {
        pthread_mutex_lock(&L.mu);
        L.level = level;
        pthread_mutex_unlock(&L.mu);
    } else {
        size_t i = 0;
        while (i < M.nset && strcmp(M.set[i].name, module) != 0)
            i++;
        if (level < 0) {
            if (i < M.nset)
                M.set[i] = M.set[--M.nset];
        } else if (i < M.nset) {
            M.set[i].level = level;
        } else if (M.nset < MAX_SET) {
            snprintf(M.set[M.nset].name, sizeof(M.set[0].name), "%s", module);
            M.set[M.nset++].level = level;
        } else {
            rc = KEEL_EBUSY;
        }
    }
    if (rc == 0)
        __atomic_store_n(&M.gen, M.gen + 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&M.mu);
    return rc;
}

int keel_log_apply_levels(const char *spec, int apply)
{
    struct { char name[64]; int level; } e[MAX_SET];
    size_t n = 0;
    const char *p = spec ? spec : "";
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        const char *start = p;
        while (*p && *p != ',')
            p++;
        const char *end = p;
        while (end > start && end[-1] == ' ')
            end--;
        const char *eq = memchr(start, '=', (size_t)(end - start));
        if (!eq || n == MAX_SET)
            return KEEL_EINVAL;
        const char *ne = eq;
        while (ne > start && ne[-1] == ' ')
            ne--;
        const char *lv = eq + 1;
        while (lv < end && *lv == ' ')
            lv++;
        char level[16];
        if ((size_t)(ne - start) >= sizeof(e[0].name) || (size_t)(end - lv) >= sizeof(level))
            return KEEL_EINVAL;
        memcpy(e[n].name, start, (size_t)(ne - start));
        e[n].name[ne - start] = '\0';
        memcpy(level, lv, (size_t)(end - lv));
        level[end - lv] = '\0';
        e[n].level = keel_log_level_parse(level);
        if (e[n].level < 0 || !valid_module(e[n].name))
            return KEEL_EINVAL;
        n++;
    }
    if (!apply)
        return 0;
    pthread_mutex_lock(&M.mu);
    M.nset = 0;
    for (size_t i = 0; i < n; i++) {
        size_t j = 0;
        while (j < M.nset && strcmp(M.set[j].name, e[i].name) != 0)
            j++;
        if (j == M.nset)
            M.nset++;
        memcpy(M.set[j].name, e[i].name, sizeof(M.set[j].name));
        M.set[j].level = e[i].level;
    }
    __atomic_store_n(&M.gen, M.gen + 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&M.mu);
    return 0;
}

int keel_log_effective_level(const char *module)
{
    if (!module || !*module || !strcmp(module, "root"))
        return L.level;
    pthread_mutex_lock(&M.mu);
    int level = resolve_locked(module);
    pthread_mutex_unlock(&M.mu);
    return level;
}

json_t *keel_log_levels_json(void)
{
    json_t *mods = json_object();
    pthread_mutex_lock(&M.mu);
    for (size_t i = 0; i < M.nknown; i++)
        json_object_set_new(mods, M.known[i],
                            json_pack("{s:n,s:s}", "configured", "effective",
                                      keel_log_level_name(resolve_locked(M.known[i]))));
    for (size_t i = 0; i < M.nset; i++) {
        json_t *o = json_object_get(mods, M.set[i].name);
        if (!o) {
            o = json_object();
            json_object_set_new(mods, M.set[i].name, o);
        }
        json_object_set_new(o, "configured", json_string(keel_log_level_name(M.set[i].level)));
        json_object_set_new(o, "effective",
                            json_string(keel_log_level_name(resolve_locked(M.set[i].name))));
    }
    json_t *root = json_pack("{s:s,s:o}", "root", keel_log_level_name(L.level), "modules", mods);
    pthread_mutex_unlock(&M.mu);
    return root;
}

int(keel_log_enabled)(int level)
{
    return level >= __atomic_load_n(&L.level, __ATOMIC_RELAXED);
}

int keel__log_enabled_at(const char *file, int level)
{
    return level >= file_level(file);
}

static int open_log_file(void)
{
    L.file_fd = open(L.file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (L.file_fd < 0)
        return -errno;
    struct stat st;
    L.file_size = fstat(L.file_fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    return 0;
}

int keel_log_init(const keel_config *cfg)
{
    pthread_mutex_lock(&L.mu);
    L.level = cfg->log_level;
    __atomic_add_fetch(&M.gen, 1, __ATOMIC_RELEASE);
    L.pretty = cfg->log_pretty;
    keel_free(L.service);
    L.service = keel_strdup(cfg->service_name);
    if (L.file_fd >= 0)
        close(L.file_fd);
    L.file_fd = -1;
    keel_free(L.file);
    L.file = NULL;
    int rc = 0;
    if (cfg->log_file && *cfg->log_file) {
        L.file = keel_strdup(cfg->log_file);
        L.file_max = cfg->log_file_max_bytes;
        L.keep = cfg->log_file_keep;
        rc = open_log_file();
    }
    pthread_mutex_unlock(&L.mu);
    keel_log_apply_levels(cfg->log_levels, 1); /* checked when loaded */
    if (rc)
        fprintf(stderr, "keel: LOG_FILE: cannot open %s: %s\n", cfg->log_file,
                strerror(-rc));
    return rc;
}

void keel_log_close(void)
{
    keel_log_flush();
    pthread_mutex_lock(&L.mu);
    if (L.file_fd >= 0)
        close(L.file_fd);
    L.file_fd = -1;
    keel_free(L.file);
    L.file = NULL;
    keel_free(L.service);
    L.service = NULL;
    pthread_mutex_unlock(&L.mu);
    keel_buf_free(&tl_buf);
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* a log sink that fails must not take the service down */
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Renames FILE.(k-1) -> FILE.k, ..., FILE -> FILE.1 and reopens. */
static void rotate_locked(void)
{
    size_t n = strlen(L.file) + 16;
    char *from = keel_malloc(n), *to = keel_malloc(n);
    close(L.file_fd);
    L.file_fd = -1;
    if (L.keep == 0) {
        unlink(L.file);
    } else {
        for (unsigned k = L.keep; k >= 1; k--) {
            snprintf(to, n, "%s.%u", L.file, k);
            if (k == 1)
                snprintf(from, n, "%s", L.file);
            else
                snprintf(from, n, "%s.%u", L.file, k - 1);
            rename(from, to);
        }
    }
    keel_free(from);
    keel_free(to);
    open_log_file();
}

static int out_fd = STDOUT_FILENO;

void keel_log_set_fd(int fd)
{
    out_fd = fd;
}

static void sink(const char *p, size_t n)
{
    pthread_mutex_lock(&L.mu);
    write_all(out_fd, p, n);
    if (L.file_fd >= 0) {
        write_all(L.file_fd, p, n);
        L.file_size += n;
        if (L.file_max && L.file_size >= L.file_max)
            rotate_locked();
    }
    pthread_mutex_unlock(&L.mu);
}

void keel_log_flush(void)
{
    if (tl_buf.len) {
        sink(tl_buf.data, tl_buf.len);
        tl_buf.len = 0;
    }
}

void keel_log_thread_close(void)
{
    keel_log_flush();
    keel_buf_free(&tl_buf);
    tl_buffered = 0;
}

void keel_log_set_buffered(int on)
{
    tl_buffered = on;
    if (!on)
        keel_log_flush();
}

static void append_time(keel_buf *b)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != tl_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(tl_time, sizeof(tl_time), "%Y-%m-%dT%H:%M:%S", &tm);
        tl_sec = ts.tv_sec;
    }
    char ms[8];
    unsigned m = (unsigned)(ts.tv_nsec / 1000000) % 1000u;
    ms[0] = '.';
    ms[1] = (char)('0' + m / 100);
    ms[2] = (char)('0' + m / 10 % 10);
    ms[3] = (char)('0' + m % 10);
    ms[4] = 'Z';
    ms[5] = '\0';
    keel_buf_append_str(b, tl_time);
    keel_buf_append_str(b, ms);
}

static keel_buf *log_begin(int level, const char *msg)
{
    keel_buf *b = &tl_buf;
    tl_line_start = b->len;
    keel_buf_append_str(b, "{\"time\":\"");
    append_time(b);
    keel_buf_append_str(b, "\",\"level\":\"");
    keel_buf_append_str(b, keel_log_level_name(level));
    keel_buf_append_str(b, "\",\"msg\":\"");
    keel_buf_append_json_escaped(b, msg, strlen(msg));
    keel_buf_append(b, "\"", 1);
    if (L.service) {
        keel_buf_append_str(b, ",\"service\":\"");
        keel_buf_append_json_escaped(b, L.service, strlen(L.service));
        keel_buf_append(b, "\"", 1);
    }
    if (tl_ctx_request_id) {
        keel_buf_append_str(b, ",\"request_id\":\"");
        keel_buf_append_json_escaped(b, tl_ctx_request_id, strlen(tl_ctx_request_id));
        keel_buf_append(b, "\"", 1);
    }
    if (tl_ctx_trace_id) {
        keel_buf_append_str(b, ",\"trace_id\":\"");
        keel_buf_append_json_escaped(b, tl_ctx_trace_id, strlen(tl_ctx_trace_id));
        keel_buf_append(b, "\"", 1);
    }
    return b;
}

void keel_log_set_context(const char *request_id, const char *trace_id)
{
    tl_ctx_request_id = request_id;
    tl_ctx_trace_id = trace_id;
}

const char *keel_log_context_request_id(void)
{
    return tl_ctx_request_id;
}

/* LOG_FORMAT=pretty: "15:07:19.123 INFO  msg key=value ..." */
static void prettify_last_line(keel_buf *b)
{
    json_error_t e;
    json_t *o = json_loadb(b->data + tl_line_start, b->len - tl_line_start, 0, &e);
    b->len = tl_line_start;
    if (!o)
        return;
    const char *t = json_string_value(json_object_get(o, "time"));
    const char *lv = json_string_value(json_object_get(o, "level"));
    const char *msg = json_string_value(json_object_get(o, "msg"));
    keel_buf_printf(b, "%.12s %-5s %s", t && strlen(t) > 11 ? t + 11 : "",
                    lv ? lv : "", msg ? msg : "");
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        if (!strcmp(k, "time") || !strcmp(k, "level") || !strcmp(k, "msg") ||
            !strcmp(k, "service"))
            continue;
        if (json_is_string(v)) {
            keel_buf_printf(b, " %s=%s", k, json_string_value(v));
        } else {
            char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(6));
            keel_buf_printf(b, " %s=%s", k, s ? s : "?");
            free(s);
        }
    }
    keel_buf_append(b, "\n", 1);
    json_decref(o);
}

void keel_log_end(keel_buf *b)
{
    keel_buf_append(b, "}\n", 2);
    if (L.pretty)
        prettify_last_line(b);
    if (!tl_buffered || b->len >= FLUSH_AT)
        keel_log_flush();
}

int keel_log_is_secret_key(const char *key)
{
    static const char *const bad[] = {"password", "passwd", "secret", "token",
                                      "authorization", "cookie", "api_key",
                                      "apikey", "api-key", "credential"};
    size_t n = strlen(key);
    char low[64];
    if (n >= sizeof(low))
        n = sizeof(low) - 1;
    for (size_t i = 0; i < n; i++)
        low[i] = (char)((key[i] >= 'A' && key[i] <= 'Z') ? key[i] + 32 : key[i]);
    low[n] = '\0';
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (strstr(low, bad[i]))
            return 1;
    return 0;
}

static void redact(json_t *v)
{
    const char *k;
    json_t *c;
    size_t i;
    if (json_is_object(v)) {
        json_object_foreach(v, k, c) {
            if (keel_log_is_secret_key(k))
                json_object_set_new(v, k, json_string("[REDACTED]"));
            else
                redact(c);
        }
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, c) redact(c);
    }
}

keel_buf *(keel_log_begin)(int level, const char *msg)
{
    return level < L.level ? NULL : log_begin(level, msg);
}

keel_buf *keel__log_begin_at(const char *file, int level, const char *msg)
{
    return level < file_level(file) ? NULL : log_begin(level, msg);
}

static void log_fields(int level, const char *msg, json_t *fields)
{
    keel_buf *b = log_begin(level, msg);
    if (fields && json_is_object(fields) && json_object_size(fields)) {
        json_t *copy = json_deep_copy(fields);
        redact(copy);
        char *s = json_dumps(copy, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (s && s[0] == '{' && s[1] != '}') {
            keel_buf_append(b, ",", 1);
            keel_buf_append(b, s + 1, strlen(s) - 2);
        }
        free(s);
        json_decref(copy);
    }
    keel_log_end(b);
}

void(keel_log_json)(int level, const char *msg, json_t *fields)
{
    if (level >= L.level)
        log_fields(level, msg, fields);
}

void keel__log_json_at(const char *file, int level, const char *msg, json_t *fields)
{
    if (level >= file_level(file))
        log_fields(level, msg, fields);
}

static void vlog(int level, const char *msg, const char *fmt, va_list ap)
{
    json_t *fields = NULL;
    if (fmt) {
        json_error_t e;
        fields = json_vpack_ex(&e, 0, fmt, ap);
    }
    log_fields(level, msg, fields);
    json_decref(fields);
}

void(keel_log)(int level, const char *msg, const char *fmt, ...)
{
    if (level < __atomic_load_n(&L.level, __ATOMIC_RELAXED))
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, msg, fmt, ap);
    va_end(ap);
}

void keel__log_at(const char *file, int level, const char *msg, const char *fmt, ...)
{
    if (level < file_level(file))
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, msg, fmt, ap);
    va_end(ap);
}
