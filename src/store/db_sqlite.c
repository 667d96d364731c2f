/* db_sqlite.c — the SQLite driver.
 *
 * Each connection is used by one thread at a time (a pool thread, or the
 * caller of keel_db_connect), so it is opened in multi-thread mode
 * (SQLITE_OPEN_NOMUTEX): no per-call mutex. Settings per connection: WAL
 * (readers never block the writer), synchronous=NORMAL (durable across a
 * crash of keel; the last commits may be lost on power loss), foreign keys
 * on, a busy timeout.
 *
 * Statement timeout: a progress handler checks a deadline every
 * PROGRESS_OPS virtual-machine instructions and interrupts the statement
 * past it (-> KEEL_EDB_TIMEOUT). The budget is the time spent inside
 * sqlite3_step for the statement, so a caller that works between rows is
 * not charged for its own time.
 *
 * Queries take their first step in keel_db_query, as PostgreSQL runs the
 * whole statement there: errors (a constraint violated by INSERT ...
 * RETURNING) surface at the same call in both dialects, and the effect of
 * a RETURNING statement happens even if no row is read.
 */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>

#include "store/db_internal.h"

#define PROGRESS_OPS 1000
#define BUSY_TIMEOUT_MS 5000

typedef struct sq_conn {
    keel_db_conn base;
    sqlite3 *db;
    keel__db_cache cache;
    uint64_t deadline_ns; /* 0 = none; read by the progress handler */
    int timed_out;
} sq_conn;

typedef struct sq_rows {
    keel_db_rows base;
    sqlite3_stmt *st;
    keel__db_cache_entry *entry; /* NULL: st is ours to finalize */
    uint64_t budget_ns;          /* statement time left */
    int pending;                 /* the first step produced a row not yet returned */
    int done;
} sq_rows;

int keel__db_sqlite_classify_code(int code, int deadline_passed)
{
    switch (code & 0xFF) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return 0;
    case SQLITE_CONSTRAINT:
        return KEEL_EDB_CONSTRAINT;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return KEEL_EDB_RETRY;
    case SQLITE_INTERRUPT:
        return deadline_passed ? KEEL_EDB_TIMEOUT : KEEL_EDB_SQL;
    case SQLITE_CANTOPEN:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_NOLFS:
        /* The file is gone, unreadable, full or damaged: not a bug in the
         * statement. 503, and the connection is reopened. */
        return KEEL_EDB_UNAVAILABLE;
    default:
        return KEEL_EDB_SQL;
    }
}

static int sq_classify(keel_db_conn *base)
{
    sq_conn *c = (sq_conn *)base;
    return keel__db_sqlite_classify_code(sqlite3_extended_errcode(c->db), c->timed_out);
}

/* Records the error of the last call and returns its kind. */
static int sq_fail(sq_conn *c, int code)
{
    int kind = keel__db_sqlite_classify_code(code, c->timed_out);
    if (kind == KEEL_EDB_TIMEOUT)
        keel__db_set_error(&c->base, "statement timeout (%llu ms)",
                           (unsigned long long)c->base.settings.statement_timeout_ms);
    else
        keel__db_set_error(&c->base, "%s (%s)", sqlite3_errmsg(c->db), sqlite3_errstr(code));
    if (kind == 0)
        kind = KEEL_EDB_SQL;
    if (kind == KEEL_EDB_UNAVAILABLE)
        c->base.broken = 1;
    return kind;
}

static int on_progress(void *arg)
{
    sq_conn *c = arg;
    if (c->deadline_ns && keel_now_ns() > c->deadline_ns) {
        c->timed_out = 1;
        return 1; /* interrupts the statement: SQLITE_INTERRUPT */
    }
    return 0;
}

static uint64_t full_budget(const sq_conn *c)
{
    return c->base.settings.statement_timeout_ms * 1000000u;
}

/* One sqlite3_step under the statement's remaining time budget. */
static int step(sq_conn *c, sqlite3_stmt *st, uint64_t *budget)
{
    uint64_t t0 = keel_now_ns();
    c->timed_out = 0;
    c->deadline_ns = c->base.settings.statement_timeout_ms ? t0 + *budget : 0;
    int rc = sqlite3_step(st);
    c->deadline_ns = 0;
    uint64_t dt = keel_now_ns() - t0;
    *budget = *budget > dt ? *budget - dt : 1;
    return rc;
}

static void release_stmt(void *ctx, void *stmt, int live)
{
    (void)ctx;
    (void)live;
    sqlite3_finalize(stmt);
}

/* ---------------------------------------------------------------- open / close */

/* mkdir -p the database file's directory: `make run` works on a fresh
 * checkout with the default sqlite:./data/keel.db. */
static int sq_check(const char *path, char *err, size_t errlen)
{
    if (!strcmp(path, ":memory:"))
        return 0;
    char *dir = keel_strdup(path);
    char *slash = strrchr(dir, '/');
    int rc = 0;
    if (slash && slash != dir) {
        *slash = '\0';
        for (char *p = dir + 1; *p && !rc; p++) {
            if (*p != '/')
                continue;
            *p = '\0';
            if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                rc = -errno;
            *p = '/';
        }
        if (!rc && mkdir(dir, 0755) < 0 && errno != EEXIST)
            rc = -errno;
        if (rc)
            snprintf(err, errlen, "cannot create directory %s: %s", dir, strerror(-rc));
    }
    keel_free(dir);
    return rc ? KEEL_ECONFIG : 0;
}

static int sq_open(const char *path, const keel__db_settings *st, keel_db_conn **out,
                   char *err, size_t errlen)
{
    sq_conn *c = keel_calloc(1, sizeof(*c));
    int rc = sqlite3_open_v2(path, &c->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "sqlite: cannot open %s: %s", path,
                 c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_extended_result_codes(c->db, 1);
    /* A lock held by another connection is waited for, up to the statement
     * timeout when that is shorter (the busy wait does not run the
     * progress handler). */
    uint64_t busy = BUSY_TIMEOUT_MS;
    if (st->statement_timeout_ms && st->statement_timeout_ms < busy)
        busy = st->statement_timeout_ms;
    sqlite3_busy_timeout(c->db, (int)busy);
    static const char *const pragmas[] = {"PRAGMA journal_mode=WAL",
                                          "PRAGMA synchronous=NORMAL",
                                          "PRAGMA foreign_keys=ON"};
    for (size_t i = 0; i < sizeof(pragmas) / sizeof(pragmas[0]); i++) {
        char *msg = NULL;
        rc = sqlite3_exec(c->db, pragmas[i], NULL, NULL, &msg);
        /* Switching to WAL needs a moment of exclusive access; when another
         * process is mid-transaction SQLite can answer BUSY at once, without
         * the busy handler: wait for it like a busy lock (bounded). */
        for (uint64_t waited = 0;
             (rc & 0xff) == SQLITE_BUSY && waited < busy; waited += 50) {
            sqlite3_free(msg);
            msg = NULL;
            sqlite3_sleep(50);
            rc = sqlite3_exec(c->db, pragmas[i], NULL, NULL, &msg);
        }
        if (rc != SQLITE_OK) {
            snprintf(err, errlen, "sqlite: %s: %s", pragmas[i], msg ? msg : sqlite3_errstr(rc));
            sqlite3_free(msg);
            goto fail;
        }
    }
    sqlite3_progress_handler(c->db, PROGRESS_OPS, on_progress, c);
    c->cache.release = release_stmt;
    c->cache.ctx = c;
    *out = &c->base;
    return 0;
fail:
    sqlite3_close_v2(c->db);
    keel_free(c);
    return KEEL_EDB_UNAVAILABLE;
}

static void sq_close(keel_db_conn *base)
{
    sq_conn *c = (sq_conn *)base;
    keel__db_cache_clear(&c->cache, 0);
    sqlite3_close_v2(c->db);
    keel_free(c);
}

/* ---------------------------------------------------------------- statements */

/* A prepared statement for sql: from the cache when idle there, else newly
 * prepared (and cached when it is a single statement). *entry is the cache
 * entry (marked busy) or NULL when the caller must finalize. *multi is set
 * when sql holds more than one statement (then nothing is returned). */
static int prepare(sq_conn *c, const char *sql, sqlite3_stmt **out,
                   keel__db_cache_entry **entry, int *multi)
{
    *out = NULL;
    *entry = NULL;
    *multi = 0;
    keel__db_cache_entry *e = keel__db_cache_get(&c->cache, sql);
    if (e && !e->busy) {
        e->busy = 1;
        *entry = e;
        *out = e->stmt;
        return 0;
    }
    char *text = keel__db_rewrite_dollar(sql);
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v3(c->db, text, -1, SQLITE_PREPARE_PERSISTENT, &st, &tail);
    if (rc != SQLITE_OK) {
        keel_free(text);
        return sq_fail(c, rc);
    }
    if (tail && !keel__db_sql_blank(tail)) {
        sqlite3_finalize(st);
        keel_free(text);
        *multi = 1;
        return 0;
    }
    keel_free(text);
    if (!st) { /* only blanks and comments */
        keel__db_set_error(&c->base, "empty statement");
        return KEEL_EDB_SQL;
    }
    if (!e) { /* (a busy entry for this text: run this one uncached) */
        e = keel__db_cache_put(&c->cache, sql, st);
        if (e) {
            e->busy = 1;
            *entry = e;
        }
    }
    *out = st;
    return 0;
}

static void unprepare(sqlite3_stmt *st, keel__db_cache_entry *entry)
{
    if (entry) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        entry->busy = 0;
    } else {
        sqlite3_finalize(st);
    }
}

static int bind(sq_conn *c, sqlite3_stmt *st, const keel_db_param *p, size_t n, int copy)
{
    /* Strict like PostgreSQL: SQLite would bind missing parameters as NULL. */
    int want = sqlite3_bind_parameter_count(st);
    if ((size_t)want != n) {
        keel__db_set_error(&c->base, "the statement takes %d parameters, %zu given", want, n);
        return KEEL_EDB_SQL;
    }
    void (*mem)(void *) = copy ? SQLITE_TRANSIENT : SQLITE_STATIC;
    for (size_t i = 0; i < n; i++) {
        int idx = (int)i + 1, rc;
        switch (p[i].type) {
        case KEEL_DB_INT:
            rc = sqlite3_bind_int64(st, idx, p[i].v.i);
            break;
        case KEEL_DB_DOUBLE:
            rc = sqlite3_bind_double(st, idx, p[i].v.d);
            break;
        case KEEL_DB_BOOL:
            rc = sqlite3_bind_int(st, idx, p[i].v.b ? 1 : 0);
            break;
        case KEEL_DB_TEXT:
            /* An empty text is '', not NULL (a NULL pointer would bind NULL). */
            rc = sqlite3_bind_text64(st, idx, p[i].v.s.len ? p[i].v.s.ptr : "",
                                     p[i].v.s.len, mem, SQLITE_UTF8);
            break;
        case KEEL_DB_BLOB:
            rc = p[i].v.s.len ? sqlite3_bind_blob64(st, idx, p[i].v.s.ptr, p[i].v.s.len, mem)
                              : sqlite3_bind_zeroblob(st, idx, 0);
            break;
        default:
            rc = sqlite3_bind_null(st, idx);
            break;
        }
        if (rc != SQLITE_OK)
            return sq_fail(c, rc);
    }
    return 0;
}

/* Several statements in one text (a migration): no parameters, run in
 * order with sqlite3_exec under one time budget. */
static int exec_multi(sq_conn *c, const char *sql, size_t n, int64_t *affected)
{
    if (n) {
        keel__db_set_error(&c->base, "parameters need a single statement");
        return KEEL_EDB_SQL;
    }
    char *text = keel__db_rewrite_dollar(sql);
    c->timed_out = 0;
    c->deadline_ns = c->base.settings.statement_timeout_ms ? keel_now_ns() + full_budget(c) : 0;
    int rc = sqlite3_exec(c->db, text, NULL, NULL, NULL);
    c->deadline_ns = 0;
    keel_free(text);
    if (rc != SQLITE_OK)
        return sq_fail(c, rc);
    *affected = sqlite3_changes64(c->db);
    return 0;
}

static int sq_exec(keel_db_conn *base, const char *sql, const keel_db_param *p, size_t n,
                   int64_t *affected)
{
    sq_conn *c = (sq_conn *)base;
    sqlite3_stmt *st;
    keel__db_cache_entry *entry;
    int multi;
    int rc = prepare(c, sql, &st, &entry, &multi);
    if (rc < 0)
        return rc;
    if (multi)
        return exec_multi(c, sql, n, affected);
    rc = bind(c, st, p, n, 0);
    uint64_t budget = full_budget(c), rows = 0;
    while (rc == 0) {
        int s = step(c, st, &budget);
        if (s == SQLITE_ROW) {
            rows++;
        } else if (s == SQLITE_DONE) {
            break;
        } else {
            rc = sq_fail(c, s);
        }
    }
    if (rc == 0)
        /* A read-only statement changes nothing: report the rows it
         * returned, as PostgreSQL's command tag does for SELECT. */
        *affected = sqlite3_stmt_readonly(st) ? (int64_t)rows : sqlite3_changes64(c->db);
    unprepare(st, entry);
    return rc;
}

static int sq_query(keel_db_conn *base, const char *sql, const keel_db_param *p, size_t n,
                    keel_db_rows **out)
{
    sq_conn *c = (sq_conn *)base;
    sqlite3_stmt *st;
    keel__db_cache_entry *entry;
    int multi;
    int rc = prepare(c, sql, &st, &entry, &multi);
    if (rc < 0)
        return rc;
    if (multi) {
        keel__db_set_error(&c->base, "a query must be a single statement");
        return KEEL_EDB_SQL;
    }
    /* Parameters are copied: the caller's buffers may be gone by the time
     * later rows are stepped. */
    rc = bind(c, st, p, n, 1);
    uint64_t budget = full_budget(c);
    int s = SQLITE_DONE;
    if (rc == 0) {
        s = step(c, st, &budget);
        if (s != SQLITE_ROW && s != SQLITE_DONE)
            rc = sq_fail(c, s);
    }
    if (rc < 0) {
        unprepare(st, entry);
        return rc;
    }
    sq_rows *r = keel_calloc(1, sizeof(*r));
    r->st = st;
    r->entry = entry;
    r->budget_ns = budget;
    r->pending = s == SQLITE_ROW;
    r->done = s == SQLITE_DONE;
    if (r->done)
        sqlite3_reset(st); /* releases the read snapshot at once (WAL checkpoints) */
    *out = &r->base;
    return 0;
}

static int sq_rows_next(keel_db_rows *base)
{
    sq_rows *r = (sq_rows *)base;
    sq_conn *c = (sq_conn *)base->c;
    if (r->pending) {
        r->pending = 0;
        return 1;
    }
    if (r->done)
        return 0;
    int s = step(c, r->st, &r->budget_ns);
    if (s == SQLITE_ROW)
        return 1;
    r->done = 1;
    if (s == SQLITE_DONE) {
        sqlite3_reset(r->st);
        return 0;
    }
    int rc = sq_fail(c, s);
    sqlite3_reset(r->st);
    return rc;
}

static void sq_rows_free(keel_db_rows *base)
{
    sq_rows *r = (sq_rows *)base;
    unprepare(r->st, r->entry);
    keel_free(r);
}

/* ---------------------------------------------------------------- getters */

#define ST(rows) (((const sq_rows *)(rows))->st)

static size_t sq_columns(const keel_db_rows *rows)
{
    return (size_t)sqlite3_column_count(ST(rows));
}

static const char *sq_name(const keel_db_rows *rows, size_t col)
{
    return sqlite3_column_name(ST(rows), (int)col);
}

static int sq_is_null(const keel_db_rows *rows, size_t col)
{
    return sqlite3_column_type(ST(rows), (int)col) == SQLITE_NULL;
}

static int64_t sq_get_int(const keel_db_rows *rows, size_t col)
{
    return sqlite3_column_int64(ST(rows), (int)col);
}

static double sq_get_double(const keel_db_rows *rows, size_t col)
{
    return sqlite3_column_double(ST(rows), (int)col);
}

static int sq_get_bool(const keel_db_rows *rows, size_t col)
{
    sqlite3_stmt *st = ST(rows);
    if (sqlite3_column_type(st, (int)col) == SQLITE_TEXT) {
        const char *t = (const char *)sqlite3_column_text(st, (int)col);
        return t && (!strcasecmp(t, "true") || !strcasecmp(t, "t") || !strcmp(t, "1"));
    }
    return sqlite3_column_int64(st, (int)col) != 0;
}

static keel_str sq_get_text(const keel_db_rows *rows, size_t col)
{
    sqlite3_stmt *st = ST(rows);
    const char *p = (const char *)sqlite3_column_text(st, (int)col);
    if (!p)
        return KEEL_STR_NULL;
    return (keel_str){p, (size_t)sqlite3_column_bytes(st, (int)col)};
}

static keel_str sq_get_blob(const keel_db_rows *rows, size_t col)
{
    sqlite3_stmt *st = ST(rows);
    const char *p = sqlite3_column_blob(st, (int)col);
    size_t n = (size_t)sqlite3_column_bytes(st, (int)col);
    if (!p)
        return sqlite3_column_type(st, (int)col) == SQLITE_NULL ? KEEL_STR_NULL
                                                                : (keel_str){"", 0};
    return (keel_str){p, n};
}

static json_t *sq_value_json(const keel_db_rows *rows, size_t col)
{
    sqlite3_stmt *st = ST(rows);
    int i = (int)col;
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER: {
        /* SQLite has no boolean type: a column declared BOOLEAN gives JSON
         * true/false, as PostgreSQL's bool does. */
        const char *decl = sqlite3_column_decltype(st, i);
        if (decl && (!strcasecmp(decl, "BOOLEAN") || !strcasecmp(decl, "BOOL")))
            return json_boolean(sqlite3_column_int64(st, i) != 0);
        return json_integer((json_int_t)sqlite3_column_int64(st, i));
    }
    case SQLITE_FLOAT:
        return json_real(sqlite3_column_double(st, i));
    case SQLITE_TEXT:
        return keel__db_json_text((const char *)sqlite3_column_text(st, i),
                                  (size_t)sqlite3_column_bytes(st, i));
    case SQLITE_BLOB:
        return keel__db_json_blob(sqlite3_column_blob(st, i),
                                  (size_t)sqlite3_column_bytes(st, i));
    default:
        return json_null();
    }
}

/* ---------------------------------------------------------------- the rest */

static int sq_tx(keel_db_conn *base, keel__db_tx_op op, unsigned level)
{
    sq_conn *c = (sq_conn *)base;
    char sql[64];
    switch (op) {
    case KEEL__TX_BEGIN:
        /* IMMEDIATE takes the write lock now: a deferred transaction that
         * reads and then writes can fail to upgrade (SQLITE_BUSY_SNAPSHOT)
         * after doing its work; waiting up front is cheaper and retryable. */
        snprintf(sql, sizeof(sql), "BEGIN IMMEDIATE");
        break;
    case KEEL__TX_COMMIT: snprintf(sql, sizeof(sql), "COMMIT"); break;
    case KEEL__TX_ROLLBACK: snprintf(sql, sizeof(sql), "ROLLBACK"); break;
    case KEEL__TX_SAVEPOINT: snprintf(sql, sizeof(sql), "SAVEPOINT sp_%u", level); break;
    case KEEL__TX_RELEASE: snprintf(sql, sizeof(sql), "RELEASE SAVEPOINT sp_%u", level); break;
    default: snprintf(sql, sizeof(sql), "ROLLBACK TO SAVEPOINT sp_%u", level); break;
    }
    c->timed_out = 0;
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : sq_fail(c, rc);
}

static int sq_in_tx(keel_db_conn *base)
{
    return !sqlite3_get_autocommit(((sq_conn *)base)->db);
}

static int sq_ping(keel_db_conn *base)
{
    sq_conn *c = (sq_conn *)base;
    /* Reads the schema page: fails when the file is gone or unreadable. */
    int rc = sqlite3_exec(c->db, "SELECT count(*) FROM sqlite_schema", NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : sq_fail(c, rc);
}

static int sq_last_insert_id(keel_db_conn *base, int64_t *out)
{
    *out = sqlite3_last_insert_rowid(((sq_conn *)base)->db);
    return 0;
}

const keel__db_driver keel__db_sqlite_driver = {
    .name = "sqlite",
    .check = sq_check,
    .open = sq_open,
    .close = sq_close,
    .exec = sq_exec,
    .query = sq_query,
    .rows_next = sq_rows_next,
    .rows_free = sq_rows_free,
    .columns = sq_columns,
    .column_name = sq_name,
    .is_null = sq_is_null,
    .get_int = sq_get_int,
    .get_double = sq_get_double,
    .get_bool = sq_get_bool,
    .get_text = sq_get_text,
    .get_blob = sq_get_blob,
    .value_json = sq_value_json,
    .tx = sq_tx,
    .in_tx = sq_in_tx,
    .ping = sq_ping,
    .last_insert_id = sq_last_insert_id,
    .classify = sq_classify,
};
