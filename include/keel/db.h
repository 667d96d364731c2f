/* keel/db.h — one database interface over SQLite and PostgreSQL.
 *
 * DATABASE_URL picks the driver: `sqlite:PATH` or a plain path (SQLite),
 * or `postgres://user:pass@host:port/db?sslmode=...` (libpq). The rest of
 * keel never knows which.
 *
 * Queries never run on an event loop. keel_db_run() hands a function to
 * the database pool: DATABASE_POOL_MAX threads, each owning one
 * connection (opened lazily, DATABASE_POOL_MIN kept open, idle ones closed
 * after DATABASE_IDLE_TIMEOUT, re-opened with backoff after a loss). The
 * function runs on a pool thread with that connection and may block; the
 * completion runs on the request's own loop.
 *
 * SQL is written once for both dialects, with positional parameters $1,
 * $2, ... (rewritten to ?1, ?2 for SQLite). Prepared statements are cached
 * per connection.
 */
#ifndef KEEL_DB_H
#define KEEL_DB_H

#include "server.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_db keel_db;           /* a database: driver + pool */
typedef struct keel_db_conn keel_db_conn; /* one connection (one thread) */
typedef struct keel_db_rows keel_db_rows; /* a result being read */

/* Database errors (negative, like every keel error). */
#define KEEL_DB_ERRNO_MAP(X)                                                   \
    X(DB_CONSTRAINT, -20101, "constraint violation")      /* -> 409 */        \
    X(DB_UNAVAILABLE, -20102, "database unavailable")     /* -> 503 */        \
    X(DB_TIMEOUT, -20103, "statement timeout")            /* -> 503 */        \
    X(DB_RETRY, -20104, "serialization failure or busy")  /* retried by tx */ \
    X(DB_SQL, -20105, "SQL error")                        /* -> 500 */        \
    X(DB_NOROW, -20106, "no row")                         /* -> 404 */

enum {
#define KEEL_DB_ERR_ENUM(name, val, msg) KEEL_E##name = (val),
    KEEL_DB_ERRNO_MAP(KEEL_DB_ERR_ENUM)
#undef KEEL_DB_ERR_ENUM
};

/* The HTTP status a database error maps to (409, 503, 404, 500). */
int keel_db_error_status(int err);
const char *keel_db_strerror(int err);

/* ---------------------------------------------------------------- params */

typedef enum keel_db_type {
    KEEL_DB_NULL = 0,
    KEEL_DB_INT,    /* int64 */
    KEEL_DB_DOUBLE,
    KEEL_DB_BOOL,
    KEEL_DB_TEXT,   /* UTF-8, no NUL */
    KEEL_DB_BLOB
} keel_db_type;

typedef struct keel_db_param {
    keel_db_type type;
    union {
        int64_t i;
        double d;
        int b;
        struct {
            const void *ptr;
            size_t len;
        } s;
    } v;
} keel_db_param;

#define KEEL_DB_P_NULL() ((keel_db_param){.type = KEEL_DB_NULL})
#define KEEL_DB_P_INT(x) ((keel_db_param){.type = KEEL_DB_INT, .v.i = (x)})
#define KEEL_DB_P_DOUBLE(x) ((keel_db_param){.type = KEEL_DB_DOUBLE, .v.d = (x)})
#define KEEL_DB_P_BOOL(x) ((keel_db_param){.type = KEEL_DB_BOOL, .v.b = !!(x)})
#define KEEL_DB_P_TEXT(p) ((keel_db_param){.type = KEEL_DB_TEXT, .v.s = {(p), strlen(p)}})
#define KEEL_DB_P_TEXTN(p, n) ((keel_db_param){.type = KEEL_DB_TEXT, .v.s = {(p), (n)}})
#define KEEL_DB_P_BLOB(p, n) ((keel_db_param){.type = KEEL_DB_BLOB, .v.s = {(p), (n)}})

/* ---------------------------------------------------------------- setup */

/* Opens the database of cfg->database_url for server s: creates the pool
 * (DATABASE_POOL_* settings), registers the critical `database` health
 * check and the db_* metrics in m (may be NULL). Does not connect yet
 * (DATABASE_POOL_MIN connections open when the pool threads start).
 * 0, or KEEL_ECONFIG with a log line naming what is wrong. */
struct keel_metrics;
struct keel_health;
int keel_db_open(keel_db **out, keel_server *s, const keel_config *cfg,
                 struct keel_metrics *m, struct keel_health *h);
void keel_db_close(keel_db *db);

/* "sqlite" or "postgres". */
const char *keel_db_driver(const keel_db *db);

/* ---------------------------------------------------------------- running */

/* Runs on a pool thread with its connection; returns 0 or an error. */
typedef int (*keel_db_fn)(keel_db_conn *c, void *arg);
/* Runs on the request's loop with fn's result (or KEEL_ECANCELED when the
 * request ended first: then only free arg). */
typedef void (*keel_db_done_cb)(keel_req *r, void *arg, int status);

/* Queues fn for r. 0, or KEEL_EBUSY when the pool queue is full (nothing
 * is called; answer with keel_respond_unavailable). */
int keel_db_run(keel_req *r, keel_db *db, keel_db_fn fn, keel_db_done_cb done,
                void *arg);

/* Answers an error from the database as problem+json: 409 constraint,
 * 503 unavailable/timeout (with Retry-After), 404 no row, 500 otherwise
 * (the SQL text and driver message are logged, never sent). */
int keel_db_respond_error(keel_req *r, int err);

/* A connection outside the pool (CLI commands, migrations, tests): opened
 * from a URL on the calling thread. */
int keel_db_connect(const char *url, const keel_config *cfg, keel_db_conn **out,
                    char *errbuf, size_t errlen);
void keel_db_disconnect(keel_db_conn *c);

/* ---------------------------------------------------------------- queries
 * All of these run on the thread that owns c. */

/* Runs a statement; *affected (may be NULL) gets the rows changed. */
int keel_db_exec(keel_db_conn *c, const char *sql, const keel_db_param *params,
                 size_t nparams, int64_t *affected);

/* Runs a query; read it with keel_db_rows_next and the getters, then
 * keel_db_rows_free. */
int keel_db_query(keel_db_conn *c, const char *sql, const keel_db_param *params,
                  size_t nparams, keel_db_rows **out);

/* 1 when a row is ready, 0 at the end, or a negative error. */
int keel_db_rows_next(keel_db_rows *rows);
size_t keel_db_rows_columns(const keel_db_rows *rows);
const char *keel_db_rows_name(const keel_db_rows *rows, size_t col);
int keel_db_is_null(const keel_db_rows *rows, size_t col);
int64_t keel_db_get_int(const keel_db_rows *rows, size_t col);
double keel_db_get_double(const keel_db_rows *rows, size_t col);
int keel_db_get_bool(const keel_db_rows *rows, size_t col);
/* Text / blob views, valid until the next keel_db_rows_next. */
keel_str keel_db_get_text(const keel_db_rows *rows, size_t col);
keel_str keel_db_get_blob(const keel_db_rows *rows, size_t col);
/* The current row as a JSON object {column: value} (new reference);
 * integers, reals, booleans (PostgreSQL bool), text, null; blobs base64. */
struct json_t *keel_db_row_json(const keel_db_rows *rows);
void keel_db_rows_free(keel_db_rows *rows);

/* The id of the last inserted row (SQLite rowid); with PostgreSQL use
 * RETURNING instead (this returns KEEL_EINVAL there). */
int keel_db_last_insert_id(keel_db_conn *c, int64_t *out);

/* The driver's message for the last error on c (for logs, not clients). */
const char *keel_db_errmsg(const keel_db_conn *c);

/* Runs fn in a transaction: commit when it returns 0, roll back on any
 * error. Nested calls use savepoints. A serialization failure (PostgreSQL
 * 40001/40P01) or SQLITE_BUSY retries the whole transaction up to 5 times
 * with a bounded, jittered backoff (outermost level only). */
int keel_db_tx(keel_db_conn *c, keel_db_fn fn, void *arg);

#ifdef __cplusplus
}
#endif
#endif
