/* db.c — the database interface over the drivers: errors, URLs, direct
 * connections, statements and results, transactions, query logging and
 * metrics. The pool (keel_db_open / keel_db_run), the health check and
 * the pool gauges are in db_pool.c; the drivers in db_sqlite.c and
 * db_pg.c.
 *
 * Every statement goes through one path here, whatever the driver:
 * parameters are checked (text must be UTF-8 without NUL, so both
 * databases refuse the same inputs), the driver runs it, and one function
 * (keel__db_observe) times it into db_query_duration_seconds{op}, counts failures in
 * db_errors_total{kind} and writes the log lines: every query at info with
 * ENABLE_QUERY_LOGGING, slow ones at warn, failures at error (warn for the
 * expected ones: constraint violations and retried conflicts). Log lines
 * carry the SQL text and the driver's message, never parameter values.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "keel/log.h"
#include "store/db_internal.h"

/* ---------------------------------------------------------------- errors */

const char *keel_db_strerror(int err)
{
    switch (err) {
#define KEEL_DB_ERR_CASE(name, val, msg)                                       \
    case val:                                                                  \
        return msg;
        KEEL_DB_ERRNO_MAP(KEEL_DB_ERR_CASE)
#undef KEEL_DB_ERR_CASE
    default:
        return keel_strerror(err);
    }
}

int keel_db_error_status(int err)
{
    switch (err) {
    case 0:
        return 200;
    case KEEL_EDB_CONSTRAINT:
        return 409;
    case KEEL_EDB_UNAVAILABLE:
    case KEEL_EDB_TIMEOUT:
    case KEEL_EDB_RETRY: /* conflicts still failing after the retries: transient */
    case KEEL_EBUSY:     /* the pool queue is full */
        return 503;
    case KEEL_EDB_NOROW:
        return 404;
    default:
        return 500;
    }
}

int keel_db_respond_error(keel_req *r, int err)
{
    switch (keel_db_error_status(err)) {
    case 409:
        return keel_respond_problem(r, 409, "the request conflicts with existing data");
    case 404:
        return keel_respond_problem(r, 404, "not found");
    case 503:
        return keel_respond_unavailable(
            r, 1,
            err == KEEL_EDB_TIMEOUT ? "the database did not answer in time"
            : err == KEEL_EDB_RETRY ? "the database is busy; retry"
            : err == KEEL_EBUSY     ? "too many database requests are waiting"
                                    : "the database is unavailable");
    default:
        /* The SQL text and the driver's message were logged where the
         * error happened (on the pool thread); the client gets nothing
         * internal. */
        return keel_respond_problem(r, 500, "internal error");
    }
}

const char *const keel__db_error_kinds[] = {"constraint", "unavailable", "timeout", "retry",
                                            "sql", "norow", "invalid", "other", NULL};

static const char *error_kind(int err)
{
    switch (err) {
    case KEEL_EDB_CONSTRAINT: return "constraint";
    case KEEL_EDB_UNAVAILABLE: return "unavailable";
    case KEEL_EDB_TIMEOUT: return "timeout";
    case KEEL_EDB_RETRY: return "retry";
    case KEEL_EDB_SQL: return "sql";
    case KEEL_EDB_NOROW: return "norow";
    case KEEL_EINVAL: return "invalid";
    default: return "other";
    }
}

void keel__db_set_error(keel_db_conn *c, const char *fmt, ...)
{
    keel_free(c->errmsg);
    c->errmsg = NULL;
    if (!fmt)
        return;
    va_list ap;
    va_start(ap, fmt);
    char buf[1024];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0'; /* libpq messages end in newlines */
    c->errmsg = keel_strdup(buf);
}

const char *keel_db_errmsg(const keel_db_conn *c)
{
    return c && c->errmsg ? c->errmsg : "";
}

/* ---------------------------------------------------------------- text helpers */

/* Length of the valid UTF-8 sequence at p (1..4), or 0 when invalid
 * (overlong forms, surrogates and code points past U+10FFFF included). */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    size_t len;
    uint32_t cp, min;
    if ((c & 0xE0) == 0xC0) {
        len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

static int utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_seq(p + i, n - i);
        if (!k)
            return 0;
        i += k;
    }
    return 1;
}

json_t *keel__db_json_text(const char *p, size_t n)
{
    if (!p)
        return json_string("");
    if (utf8_valid(p, n) && !memchr(p, '\0', n))
        return json_stringn(p, n);
    /* Text SQLite stored without checking: keep what is valid. */
    keel_buf b = {0};
    const unsigned char *u = (const unsigned char *)p;
    for (size_t i = 0; i < n;) {
        size_t k = u[i] ? utf8_seq(u + i, n - i) : 0;
        if (k) {
            keel_buf_append(&b, u + i, k);
            i += k;
        } else {
            keel_buf_append(&b, "\xEF\xBF\xBD", 3);
            i++;
        }
    }
    json_t *j = json_stringn(b.data ? b.data : "", b.len);
    keel_buf_free(&b);
    return j;
}

json_t *keel__db_json_blob(const void *p, size_t n)
{
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *s = p;
    size_t out_len = (n + 2) / 3 * 4;
    char *out = keel_malloc(out_len + 1), *o = out;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        *o++ = tbl[v >> 18], *o++ = tbl[(v >> 12) & 63];
        *o++ = tbl[(v >> 6) & 63], *o++ = tbl[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        *o++ = tbl[v >> 18], *o++ = tbl[(v >> 12) & 63], *o++ = '=', *o++ = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        *o++ = tbl[v >> 18], *o++ = tbl[(v >> 12) & 63];
        *o++ = tbl[(v >> 6) & 63], *o++ = '=';
    }
    json_t *j = json_stringn(out, out_len);
    keel_free(out);
    return j;
}

/* ---------------------------------------------------------------- SQL scanning */

static int ident_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '$' || (unsigned char)ch >= 0x80;
}

/* Skips a quoted or commented region starting at p; returns the position
 * after it, or p when p starts none. */
static const char *skip_region(const char *p)
{
    char close;
    switch (*p) {
    case '\'': close = '\''; break;
    case '"': close = '"'; break;
    case '`': close = '`'; break;
    case '[': close = ']'; break;
    case '-':
        if (p[1] != '-')
            return p;
        {
            const char *nl = strchr(p, '\n');
            return nl ? nl + 1 : p + strlen(p);
        }
    case '/':
        if (p[1] != '*')
            return p;
        {
            const char *e = strstr(p + 2, "*/");
            return e ? e + 2 : p + strlen(p);
        }
    default:
        return p;
    }
    /* A doubled quote ('it''s') closes and reopens: the loop handles it. */
    const char *e = strchr(p + 1, close);
    return e ? e + 1 : p + strlen(p);
}

char *keel__db_rewrite_dollar(const char *sql)
{
    keel_buf b = {0};
    const char *p = sql;
    while (*p) {
        const char *q = skip_region(p);
        if (q != p) {
            keel_buf_append(&b, p, (size_t)(q - p));
            p = q;
            continue;
        }
        if (*p == '$' && p[1] >= '0' && p[1] <= '9' && (p == sql || !ident_char(p[-1]))) {
            keel_buf_append(&b, "?", 1);
            p++;
            continue;
        }
        keel_buf_append(&b, p, 1);
        p++;
    }
    keel_buf_append(&b, "", 1);
    return b.data;
}

int keel__db_sql_blank(const char *sql)
{
    const char *p = sql;
    while (*p) {
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == ';') {
            p++;
        } else if ((p[0] == '-' && p[1] == '-') || (p[0] == '/' && p[1] == '*')) {
            p = skip_region(p);
        } else {
            return 0;
        }
    }
    return 1;
}

/* The metrics label of a statement: its first keyword. */
enum {
    OP_SELECT = 0,
    OP_INSERT,
    OP_UPDATE,
    OP_DELETE,
    OP_BEGIN,
    OP_COMMIT,
    OP_ROLLBACK,
    OP_COPY,
    OP_OTHER
};
static const char *const op_names[] = {"select", "insert", "update", "delete", "begin",
                                       "commit", "rollback", "copy", "other"};

unsigned keel__db_sql_op(const char *sql)
{
    const char *p = sql;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '(')
            p++;
        const char *q = (p[0] == '-' && p[1] == '-') || (p[0] == '/' && p[1] == '*')
                            ? skip_region(p)
                            : p;
        if (q == p)
            break;
        p = q;
    }
    char w[10];
    size_t n = 0;
    while (n < sizeof(w) - 1 && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
        w[n++] = (char)(*p++ | 0x20);
    w[n] = '\0';
    for (unsigned i = 0; i < OP_OTHER; i++)
        if (!strcmp(w, op_names[i]))
            return i;
    if (!strcmp(w, "start")) /* START TRANSACTION */
        return OP_BEGIN;
    if (!strcmp(w, "end"))
        return OP_COMMIT;
    return OP_OTHER;
}

/* ---------------------------------------------------------------- observing */

#define LOG_SQL_MAX 2048 /* longer statements are cut in log lines */

static void field_str(keel_buf *b, const char *key, const char *v, size_t n)
{
    keel_buf_printf(b, ",\"%s\":\"", key);
    keel_buf_append_json_escaped(b, v, n); /* also replaces invalid UTF-8 */
    keel_buf_append(b, "\"", 1);
}

/* Starts a log line with the fields every query line has. The line is
 * built by hand (keel_log_begin) rather than through jansson: it is on the
 * path of every query when ENABLE_QUERY_LOGGING is on, and durations print
 * as 1.234, not as a double's 17 digits. */
static keel_buf *log_start(int level, const char *msg, const keel_db_conn *c,
                           const char *sql, uint64_t ns)
{
    keel_buf *b = keel_log_begin(level, msg);
    if (!b)
        return NULL;
    size_t n = strlen(sql);
    if (n > LOG_SQL_MAX) {
        n = LOG_SQL_MAX;
        while (n && ((unsigned char)sql[n] & 0xC0) == 0x80)
            n--; /* cut on a character boundary */
    }
    field_str(b, "sql", sql, n);
    keel_buf_printf(b, ",\"duration_ms\":%.3f,\"driver\":\"%s\"", (double)ns / 1e6,
                    c->drv->name);
    if (c->request_id && !keel_log_context_request_id())
        field_str(b, "request_id", c->request_id, strlen(c->request_id));
    return b;
}

/* ---------------------------------------------------------------- spans */

keel__db_spans *keel__db_spans_new(keel_req *r, const char *driver)
{
    keel_span_ref parent = keel_trace_ref(r);
    if (!keel_span_ok(parent))
        return NULL;
    keel__db_spans *s = keel_arena_alloc(keel_req_arena(r), sizeof(*s));
    memset(s, 0, offsetof(keel__db_spans, rec));
    s->parent = parent;
    s->driver = driver;
    return s;
}

static const char *db_system(const char *driver)
{
    return driver && !strcmp(driver, "postgres") ? "postgresql" : driver ? driver : "other_sql";
}

/* span name: the operation, upper case ("SELECT"), as OTel's db spans */
static void span_emit(keel_span_ref parent, const char *driver, unsigned op, const char *sql,
                      size_t sql_len, uint64_t start, uint64_t end, int rc)
{
    char name[16];
    const char *on = op_names[op];
    size_t i = 0;
    for (; on[i] && i < sizeof(name) - 1; i++)
        name[i] = (char)(on[i] >= 'a' && on[i] <= 'z' ? on[i] - 32 : on[i]);
    name[i] = '\0';
    keel_span_ref s = keel_span_begin(parent, name, KEEL_SPAN_CLIENT, start);
    keel_span_set_str(s, "db.system.name", db_system(driver));
    keel_span_set_str(s, "db.operation.name", name);
    if (sql)
        keel_span_set_strn(s, "db.query.text", sql, sql_len);
    if (rc < 0) {
        keel_span_set_str(s, "error.type", error_kind(rc));
        keel_span_set_error(s, keel_db_strerror(rc));
    }
    keel_span_finish(s, end);
}

void keel__db_spans_emit(keel__db_spans *s)
{
    if (!s)
        return;
    for (unsigned i = 0; i < s->n; i++)
        span_emit(s->parent, s->driver, s->rec[i].op, s->rec[i].sql, strlen(s->rec[i].sql),
                  s->rec[i].start, s->rec[i].end, s->rec[i].rc);
}

void keel__db_span_one(keel_span_ref parent, const char *driver, unsigned op, const char *sql,
                       uint64_t start, int rc)
{
    if (!keel_span_ok(parent))
        return;
    size_t n = sql ? strlen(sql) : 0;
    span_emit(parent, driver, op, sql, n > 1024 ? 1024 : n, start, 0, rc);
}

/* Pool thread: notes a statement of a traced job (the loop emits it). */
static void spans_note(keel__db_spans *s, unsigned op, const char *sql, uint64_t ns, int rc)
{
    if (s->n >= KEEL__DB_SPAN_MAX) {
        s->dropped++;
        return;
    }
    uint64_t now = keel_now_ns();
    s->rec[s->n].start = now - ns;
    s->rec[s->n].end = now;
    s->rec[s->n].op = op;
    s->rec[s->n].rc = rc;
    size_t n = sql ? strnlen(sql, KEEL__DB_SPAN_SQL - 1) : 0; /* cut as snprintf would */
    if (n)
        memcpy(s->rec[s->n].sql, sql, n);
    s->rec[s->n].sql[n] = '\0';
    s->n++;
}

/* Times one statement into the histogram and writes its log lines. */
void keel__db_observe(keel_db_conn *c, unsigned op, const char *sql, uint64_t ns, int rc,
                      uint64_t rows)
{
    const keel__db_obs *o = c->obs;
    if (c->spans)
        spans_note(c->spans, op, sql, ns, rc);
    if (o->duration)
        keel_metric_observe(o->duration, o->shard, (const char *[]){op_names[op]},
                            (double)ns / 1e9);
    if (rc < 0) {
        const char *kind = error_kind(rc);
        if (o->errors)
            keel_metric_add(o->errors, o->shard, (const char *[]){kind}, 1);
        /* Constraint violations are a client's conflict (409) and retried
         * conflicts usually succeed: warn, not error. */
        int level = rc == KEEL_EDB_CONSTRAINT || rc == KEEL_EDB_RETRY ? KEEL_LOG_WARN
                                                                      : KEEL_LOG_ERROR;
        keel_buf *b = log_start(level, "query failed", c, sql, ns);
        if (!b)
            return;
        keel_buf_printf(b, ",\"error\":\"%s\"", kind);
        field_str(b, "message", keel_db_errmsg(c), strlen(keel_db_errmsg(c)));
        keel_log_end(b);
        return;
    }
    int slow = o->slow_query_ms && ns >= o->slow_query_ms * 1000000u;
    if (!slow && !o->query_logging)
        return;
    keel_buf *b = log_start(slow ? KEEL_LOG_WARN : KEEL_LOG_INFO, slow ? "slow query" : "query",
                            c, sql, ns);
    if (!b)
        return;
    keel_buf_printf(b, ",\"op\":\"%s\",\"rows\":%llu", op_names[op],
                    (unsigned long long)rows);
    keel_log_end(b);
}

/* Checks a call before the driver sees it. */
static int precheck(keel_db_conn *c, const keel_db_param *p, size_t n)
{
    if (c->broken) {
        keel__db_set_error(c, "the connection was lost%s",
                           c->obs == &c->own_obs ? "; reconnect" : "; it is replaced for the next job");
        return KEEL_EDB_UNAVAILABLE;
    }
    return keel__db_check_params(c, p, n);
}

int keel__db_check_params(keel_db_conn *c, const keel_db_param *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        switch (p[i].type) {
        case KEEL_DB_NULL:
        case KEEL_DB_INT:
        case KEEL_DB_DOUBLE:
        case KEEL_DB_BOOL:
            break;
        case KEEL_DB_TEXT:
            if (!p[i].v.s.ptr && p[i].v.s.len) {
                keel__db_set_error(c, "parameter $%zu: NULL text pointer", i + 1);
                return KEEL_EINVAL;
            }
            /* Both databases must refuse the same inputs: PostgreSQL
             * rejects NUL and invalid UTF-8 in text, SQLite would store it. */
            if (p[i].v.s.len && (memchr(p[i].v.s.ptr, '\0', p[i].v.s.len) ||
                                 !utf8_valid(p[i].v.s.ptr, p[i].v.s.len))) {
                keel__db_set_error(c, "parameter $%zu: text must be UTF-8 without NUL bytes",
                                   i + 1);
                return KEEL_EINVAL;
            }
            break;
        case KEEL_DB_BLOB:
            if (!p[i].v.s.ptr && p[i].v.s.len) {
                keel__db_set_error(c, "parameter $%zu: NULL blob pointer", i + 1);
                return KEEL_EINVAL;
            }
            break;
        default:
            keel__db_set_error(c, "parameter $%zu: unknown type %d", i + 1, (int)p[i].type);
            return KEEL_EINVAL;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- statements */

int keel_db_exec(keel_db_conn *c, const char *sql, const keel_db_param *params,
                 size_t nparams, int64_t *affected)
{
    if (affected)
        *affected = 0;
    if (!c || !sql || (nparams && !params))
        return KEEL_EINVAL;
    uint64_t t0 = keel_now_ns();
    int64_t n = 0;
    int rc = precheck(c, params, nparams);
    if (rc == 0)
        rc = c->drv->exec(c, sql, params, nparams, &n);
    keel__db_observe(c, keel__db_sql_op(sql), sql, keel_now_ns() - t0, rc,
                     rc == 0 ? (uint64_t)n : 0);
    if (rc == 0 && affected)
        *affected = n;
    return rc;
}

int keel_db_copy_in(keel_db_conn *c, const char *sql, const void *data, size_t len,
                    int64_t *rows)
{
    if (rows)
        *rows = 0;
    if (!c || !sql || (len && !data))
        return KEEL_EINVAL;
    if (!c->drv->copy_in) {
        keel__db_set_error(c, "%s has no COPY", c->drv->name);
        return KEEL_EDB_UNSUPPORTED; /* not a failure of the database: not observed */
    }
    uint64_t t0 = keel_now_ns();
    int64_t n = 0;
    int rc = c->drv->copy_in(c, sql, data, len, &n);
    keel__db_observe(c, OP_COPY, sql, keel_now_ns() - t0, rc, rc == 0 ? (uint64_t)n : 0);
    if (rc == 0 && rows)
        *rows = n;
    return rc;
}

void keel_db_copy_field(keel_buf *b, const char *s, size_t n)
{
    if (!s) {
        keel_buf_append(b, "\\N", 2);
        return;
    }
    if (!n)
        return; /* the empty string: nothing between the tabs */
    /* at most two bytes out per byte in */
    char *w = keel_buf_reserve(b, 2 * n), *o = w;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        switch (ch) {
        case '\\': *o++ = '\\', *o++ = '\\'; break;
        case '\t': *o++ = '\\', *o++ = 't'; break;
        case '\n': *o++ = '\\', *o++ = 'n'; break;
        case '\r': *o++ = '\\', *o++ = 'r'; break;
        default: *o++ = ch; break;
        }
    }
    b->len += (size_t)(o - w);
}

void keel_db_copy_int(keel_buf *b, int64_t v)
{
    char tmp[24];
    int k = snprintf(tmp, sizeof(tmp), "%lld", (long long)v);
    keel_buf_append(b, tmp, (size_t)k);
}

int keel_db_query(keel_db_conn *c, const char *sql, const keel_db_param *params,
                  size_t nparams, keel_db_rows **out)
{
    if (out)
        *out = NULL;
    if (!c || !sql || !out || (nparams && !params))
        return KEEL_EINVAL;
    uint64_t t0 = keel_now_ns();
    keel_db_rows *rows = NULL;
    unsigned op = keel__db_sql_op(sql);
    int rc = precheck(c, params, nparams);
    if (rc == 0)
        rc = c->drv->query(c, sql, params, nparams, &rows);
    uint64_t ns = keel_now_ns() - t0;
    if (rc < 0) {
        keel__db_observe(c, op, sql, ns, rc, 0);
        return rc;
    }
    rows->c = c;
    rows->sql = keel_strdup(sql);
    rows->op = op;
    rows->elapsed_ns = ns;
    rows->prev = NULL;
    rows->next = c->open_rows;
    if (c->open_rows)
        c->open_rows->prev = rows;
    c->open_rows = rows;
    *out = rows;
    return 0;
}

int keel_db_rows_next(keel_db_rows *rows)
{
    if (!rows)
        return KEEL_EINVAL;
    uint64_t t0 = keel_now_ns();
    int rc = rows->c->drv->rows_next(rows);
    rows->elapsed_ns += keel_now_ns() - t0;
    if (rc == 1) {
        rows->nrows++;
    } else if (rc < 0 && !rows->failed) {
        rows->failed = 1;
        keel__db_observe(rows->c, rows->op, rows->sql, rows->elapsed_ns, rc, 0);
    }
    return rc;
}

void keel_db_rows_free(keel_db_rows *rows)
{
    if (!rows)
        return;
    keel_db_conn *c = rows->c;
    /* One log line and one histogram sample per query, with the time spent
     * in the driver over the whole read (SQLite produces rows as they are
     * read) and the number of rows the caller read. */
    if (!rows->failed)
        keel__db_observe(c, rows->op, rows->sql, rows->elapsed_ns, 0, rows->nrows);
    if (rows->prev)
        rows->prev->next = rows->next;
    else
        c->open_rows = rows->next;
    if (rows->next)
        rows->next->prev = rows->prev;
    keel_free(rows->sql);
    c->drv->rows_free(rows);
}

size_t keel_db_rows_columns(const keel_db_rows *rows)
{
    return rows ? rows->c->drv->columns(rows) : 0;
}

static int col_ok(const keel_db_rows *rows, size_t col)
{
    return rows && col < rows->c->drv->columns(rows);
}

const char *keel_db_rows_name(const keel_db_rows *rows, size_t col)
{
    return col_ok(rows, col) ? rows->c->drv->column_name(rows, col) : NULL;
}

int keel_db_is_null(const keel_db_rows *rows, size_t col)
{
    return col_ok(rows, col) ? rows->c->drv->is_null(rows, col) : 1;
}

int64_t keel_db_get_int(const keel_db_rows *rows, size_t col)
{
    return col_ok(rows, col) ? rows->c->drv->get_int(rows, col) : 0;
}

double keel_db_get_double(const keel_db_rows *rows, size_t col)
{
    return col_ok(rows, col) ? rows->c->drv->get_double(rows, col) : 0.0;
}

int keel_db_get_bool(const keel_db_rows *rows, size_t col)
{
    return col_ok(rows, col) ? rows->c->drv->get_bool(rows, col) : 0;
}

keel_str keel_db_get_text(const keel_db_rows *rows, size_t col)
{
    return col_ok(rows, col) ? rows->c->drv->get_text(rows, col) : KEEL_STR_NULL;
}

keel_str keel_db_get_blob(const keel_db_rows *rows, size_t col)
{
    return col_ok(rows, col) ? rows->c->drv->get_blob(rows, col) : KEEL_STR_NULL;
}

json_t *keel_db_row_json(const keel_db_rows *rows)
{
    json_t *o = json_object();
    size_t n = keel_db_rows_columns(rows);
    for (size_t i = 0; i < n; i++) {
        const char *name = rows->c->drv->column_name(rows, i);
        json_object_set_new(o, name ? name : "?", rows->c->drv->value_json(rows, i));
    }
    return o;
}

int keel_db_last_insert_id(keel_db_conn *c, int64_t *out)
{
    if (!c || !out)
        return KEEL_EINVAL;
    *out = 0;
    return c->drv->last_insert_id(c, out);
}

/* ---------------------------------------------------------------- transactions */

#define TX_RETRIES 5          /* retries of the outermost transaction */
#define TX_BACKOFF_MIN_MS 10
#define TX_BACKOFF_MAX_MS 200

static uint64_t next_rand(keel_db_conn *c)
{
    uint64_t x = c->rng ? c->rng : 0x9E3779B97F4A7C15ull;
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return c->rng = x;
}

static int tx_step(keel_db_conn *c, keel__db_tx_op op, unsigned level)
{
    static const char *const text[] = {"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT",
                                       "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT"};
    static const unsigned ops[] = {OP_BEGIN, OP_COMMIT, OP_ROLLBACK,
                                   OP_OTHER, OP_OTHER, OP_ROLLBACK};
    char sql[64];
    if (op >= KEEL__TX_SAVEPOINT)
        snprintf(sql, sizeof(sql), "%s sp_%u", text[op], level);
    else
        snprintf(sql, sizeof(sql), "%s", text[op]);
    uint64_t t0 = keel_now_ns();
    int rc = precheck(c, NULL, 0);
    if (rc == 0)
        rc = c->drv->tx(c, op, level);
    keel__db_observe(c, ops[op], sql, keel_now_ns() - t0, rc, 0);
    return rc;
}

int keel_db_tx(keel_db_conn *c, keel_db_fn fn, void *arg)
{
    if (!c || !fn)
        return KEEL_EINVAL;
    if (c->tx_depth > 0) {
        /* Nested: a savepoint, so a failure undoes only this level and the
         * outer transaction goes on as if the inner one never ran. */
        unsigned level = c->tx_depth;
        int rc = tx_step(c, KEEL__TX_SAVEPOINT, level);
        if (rc < 0)
            return rc;
        c->tx_depth++;
        rc = fn(c, arg);
        c->tx_depth--;
        if (rc == 0 && (rc = tx_step(c, KEEL__TX_RELEASE, level)) == 0)
            return 0;
        if (!c->broken && tx_step(c, KEEL__TX_ROLLBACK_TO, level) == 0)
            tx_step(c, KEEL__TX_RELEASE, level);
        return rc;
    }
    for (unsigned attempt = 0;; attempt++) {
        int rc = tx_step(c, KEEL__TX_BEGIN, 0);
        if (rc == 0) {
            c->tx_depth = 1;
            rc = fn(c, arg);
            c->tx_depth = 0;
            if (rc == 0)
                rc = tx_step(c, KEEL__TX_COMMIT, 0);
            /* A failed COMMIT may have ended the transaction already
             * (PostgreSQL) or not (SQLite busy): ask the driver. */
            if (rc != 0 && !c->broken && c->drv->in_tx(c))
                tx_step(c, KEEL__TX_ROLLBACK, 0);
        }
        if (rc != KEEL_EDB_RETRY || attempt == TX_RETRIES)
            return rc;
        /* Jittered backoff so two transactions that conflicted do not meet
         * again in lockstep: 10ms, then up to 20, 40, 80, 160 ms. */
        uint64_t cap = (uint64_t)TX_BACKOFF_MIN_MS << attempt;
        if (cap > TX_BACKOFF_MAX_MS)
            cap = TX_BACKOFF_MAX_MS;
        uint64_t ms = TX_BACKOFF_MIN_MS + next_rand(c) % (cap - TX_BACKOFF_MIN_MS + 1);
        keel_log(KEEL_LOG_WARN, "transaction retried", "{s:i,s:i,s:s*}", "attempt",
                 (int)attempt + 1, "backoff_ms", (int)ms, "request_id", c->request_id);
        struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
    }
}

/* ---------------------------------------------------------------- connections */

int keel__db_parse_url(const char *url, const keel__db_driver **drv, char **target,
                       char *err, size_t errlen)
{
    *drv = NULL;
    *target = NULL;
    if (!url || !*url) {
        snprintf(err, errlen, "empty database URL");
        return KEEL_EINVAL;
    }
    if (!strncmp(url, "postgres://", 11) || !strncmp(url, "postgresql://", 13)) {
        *drv = &keel__db_pg_driver;
        *target = keel_strdup(url);
        return 0;
    }
    const char *path = url;
    if (!strncmp(url, "sqlite:", 7)) {
        path = url + 7;
        if (!strncmp(path, "//", 2)) /* sqlite:///abs/path, sqlite://rel/path */
            path += 2;
    } else if (strstr(url, "://")) {
        snprintf(err, errlen, "unknown database URL scheme (use sqlite:PATH or postgres://)");
        return KEEL_EINVAL;
    }
    if (!*path) {
        snprintf(err, errlen, "empty SQLite path");
        return KEEL_EINVAL;
    }
    *drv = &keel__db_sqlite_driver;
    *target = keel_strdup(path);
    return 0;
}

int keel__db_prepare_target(const keel__db_driver *drv, const char *target, char *err,
                            size_t errlen)
{
    return drv->check(target, err, errlen);
}

int keel__db_conn_open(const keel__db_driver *drv, const char *target,
                       const keel__db_settings *st, const keel__db_obs *obs,
                       keel_db_conn **out, char *err, size_t errlen)
{
    *out = NULL;
    keel_db_conn *c = NULL;
    int rc = drv->open(target, st, &c, err, errlen);
    if (rc < 0)
        return rc;
    c->drv = drv;
    c->settings = *st;
    c->obs = obs ? obs : &c->own_obs;
    c->rng = keel_now_ns() ^ (uint64_t)(uintptr_t)c;
    *out = c;
    return 0;
}

void keel__db_conn_reset(keel_db_conn *c)
{
    /* A job must leave its connection as it found it: results freed and
     * no transaction open, or the next job would inherit them. */
    if (c->open_rows) {
        keel_log(KEEL_LOG_WARN, "database job left results open; freeing them", "{s:s*}",
                 "request_id", c->request_id);
        while (c->open_rows)
            keel_db_rows_free(c->open_rows);
    }
    if (!c->broken && c->drv->in_tx(c)) {
        keel_log(KEEL_LOG_WARN, "database job left a transaction open; rolling back",
                 "{s:s*}", "request_id", c->request_id);
        c->tx_depth = 0;
        if (tx_step(c, KEEL__TX_ROLLBACK, 0) < 0)
            c->broken = 1; /* cannot be trusted any more: replace it */
    }
    c->tx_depth = 0;
    c->request_id = NULL;
    c->spans = NULL;
}

void keel__db_conn_close(keel_db_conn *c)
{
    if (!c)
        return;
    while (c->open_rows) {
        keel_db_rows *r = c->open_rows;
        r->failed = 1; /* no log line for a result dropped with its connection */
        keel_db_rows_free(r);
    }
    keel_free(c->errmsg);
    c->errmsg = NULL;
    c->drv->close(c);
}

/* ---------------------------------------------------------------- options */

/* sqlite:PATH, a bare path, or postgres:// / postgresql:// (not a
 * misspelt postgres scheme, which would otherwise become a file name). */
static int check_db_url(const char *s)
{
    if (strncmp(s, "postgres", 8) == 0 && strncmp(s, "postgres://", 11) != 0 &&
        strncmp(s, "postgresql://", 13) != 0)
        return KEEL_EINVAL;
    return 0;
}

#define AT(f) KEEL_CONFIG_AT(keel_db_options, f)
static const keel_config_var db_vars[] = {
    {.name = "DATABASE_URL", .type = KEEL_CONFIG_URL, .def = "sqlite:./data/keel.db",
     AT(database_url), .flags = KEEL_CONFIG_SECRET | KEEL_CONFIG_REQUIRED,
     .check = check_db_url,
     .accepts = "sqlite:PATH, a file path, or postgres://user:pass@host:port/db",
     .help = "sqlite:PATH or postgres://user:pass@host:port/db"},
    {.name = "DATABASE_POOL_MAX", .type = KEEL_CONFIG_UINT, .def = "4", AT(db_pool_max),
     .min = 1, .max = 256, .help = "database connections (one per database pool thread)"},
    {.name = "DATABASE_POOL_MIN", .type = KEEL_CONFIG_UINT, .def = "1", AT(db_pool_min),
     .max = 256, .help = "connections kept open even when idle"},
    {.name = "DATABASE_IDLE_TIMEOUT", .type = KEEL_CONFIG_DURATION, .def = "30s",
     AT(db_idle_timeout_ms),
     .help = "idle connections above DATABASE_POOL_MIN are closed after this"},
    {.name = "DATABASE_TIMEOUT", .type = KEEL_CONFIG_DURATION, .def = "5s",
     AT(db_connect_timeout_ms), .min = 100, .help = "connect timeout"},
    {.name = "DATABASE_STATEMENT_TIMEOUT", .type = KEEL_CONFIG_DURATION, .def = "10s",
     AT(db_statement_timeout_ms),
     .help = "longest a statement may run (503 beyond); 0 = no limit"},
    {.name = "DATABASE_QUEUE_MAX", .type = KEEL_CONFIG_UINT, .def = "1024", AT(db_queue_max),
     .min = 1, .max = 10000000,
     .help = "queries waiting for a connection before new ones get 503 with Retry-After"},
    {.name = "ENABLE_QUERY_LOGGING", .type = KEEL_CONFIG_BOOL, .def = "false",
     AT(query_logging),
     .help = "log every query (SQL text and duration, never parameter values) at info"},
    {.name = "SLOW_QUERY_THRESHOLD", .type = KEEL_CONFIG_DURATION, .def = "200",
     AT(slow_query_ms), .help = "queries slower than this (ms) are logged at warn"},
    {.name = "MIGRATE_ON_START", .type = KEEL_CONFIG_BOOL, .def = "true", AT(migrate_on_start),
     .help = "keel serve applies pending migrations before listening"},
    {.name = "MIGRATIONS_DIR", .type = KEEL_CONFIG_STR, .def = "", AT(migrations_dir),
     .help = "read migrations from this directory instead of the compiled-in set"},
};
#undef AT

const keel_config_module keel_db_config = KEEL_CONFIG_MODULE(
    "db", "The database and its migrations, for services with a database (src/store/db.c).",
    keel_db_options, db_vars, NULL);

void keel__db_settings_from(keel__db_settings *st, keel__db_obs *obs, const keel_config *cfg)
{
    keel_config def;
    if (!cfg) {
        keel_config_defaults(&def);
        cfg = &def;
    }
    const keel_db_options *o = keel_config_get(cfg, &keel_db_config);
    st->connect_timeout_ms = o->db_connect_timeout_ms;
    st->statement_timeout_ms = o->db_statement_timeout_ms;
    if (obs) {
        memset(obs, 0, sizeof(*obs));
        obs->query_logging = o->query_logging;
        obs->slow_query_ms = o->slow_query_ms;
    }
    if (cfg == &def)
        keel_config_close(&def);
}

int keel_db_connect(const char *url, const keel_config *cfg, keel_db_conn **out,
                    char *errbuf, size_t errlen)
{
    char tmp[256];
    if (!errbuf || !errlen)
        errbuf = tmp, errlen = sizeof(tmp);
    errbuf[0] = '\0';
    if (!out)
        return KEEL_EINVAL;
    *out = NULL;
    const keel__db_driver *drv;
    char *target = NULL;
    keel__db_settings st;
    keel__db_obs obs;
    int rc = keel__db_parse_url(url, &drv, &target, errbuf, errlen);
    if (rc < 0)
        goto cleanup;
    rc = keel__db_prepare_target(drv, target, errbuf, errlen);
    if (rc < 0)
        goto cleanup;
    keel__db_settings_from(&st, &obs, cfg);
    rc = keel__db_conn_open(drv, target, &st, NULL, out, errbuf, errlen);
    if (rc < 0)
        goto cleanup;
    (*out)->own_obs = obs;
cleanup:
    keel_free(target);
    return rc;
}

void keel_db_disconnect(keel_db_conn *c)
{
    keel__db_conn_close(c);
}

/* ---------------------------------------------------------------- statement cache */

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

keel__db_cache_entry *keel__db_cache_get(keel__db_cache *cache, const char *key)
{
    uint64_t h = fnv1a(key);
    for (size_t i = 0; i < KEEL__DB_CACHE_MAX; i++) {
        keel__db_cache_entry *e = &cache->e[i];
        if (e->key && e->hash == h && !strcmp(e->key, key)) {
            e->used = ++cache->tick;
            return e;
        }
    }
    return NULL;
}

keel__db_cache_entry *keel__db_cache_put(keel__db_cache *cache, const char *key, void *stmt)
{
    keel__db_cache_entry *slot = NULL;
    for (size_t i = 0; i < KEEL__DB_CACHE_MAX; i++) {
        keel__db_cache_entry *e = &cache->e[i];
        if (!e->key) {
            slot = e;
            break;
        }
        if (!e->busy && (!slot || e->used < slot->used))
            slot = e;
    }
    if (!slot)
        return NULL;
    if (slot->key) {
        if (cache->release)
            cache->release(cache->ctx, slot->stmt, 1);
        keel_free(slot->key);
    }
    slot->key = keel_strdup(key);
    slot->hash = fnv1a(key);
    slot->stmt = stmt;
    slot->used = ++cache->tick;
    slot->busy = 0;
    return slot;
}

void keel__db_cache_drop(keel__db_cache *cache, keel__db_cache_entry *e, int live)
{
    if (!e->key)
        return;
    if (cache->release)
        cache->release(cache->ctx, e->stmt, live);
    keel_free(e->key);
    memset(e, 0, sizeof(*e));
}

void keel__db_cache_clear(keel__db_cache *cache, int live)
{
    for (size_t i = 0; i < KEEL__DB_CACHE_MAX; i++) {
        keel__db_cache_entry *e = &cache->e[i];
        if (!e->key)
            continue;
        if (cache->release)
            cache->release(cache->ctx, e->stmt, live);
        keel_free(e->key);
        memset(e, 0, sizeof(*e));
    }
}
