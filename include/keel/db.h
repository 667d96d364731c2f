/* keel/db.h — one database interface over SQLite and PostgreSQL.
 *
 * DATABASE_URL picks the driver: `sqlite:PATH` or a plain path (SQLite),
 * or `postgres://user:pass@host:port/db?sslmode=...` (libpq). The rest of
 * keel never knows which.
 *
 * One statement for a request: keel_db_query_async() (PostgreSQL: on the
 * request's own loop, over non-blocking connections of that worker;
 * SQLite: on the pool); the callback gets the rows on the request's loop.
 * Anything else — transactions, several statements on one connection —
 * goes through keel_db_run(), which hands a function to the database pool: DATABASE_POOL_MAX threads, each owning one
 * connection (opened lazily, DATABASE_POOL_MIN kept open, idle ones closed
 * after DATABASE_IDLE_TIMEOUT, re-opened with backoff after a loss). The
 * function runs on a pool thread with that connection and may block; the
 * completion runs on the request's own loop.
 *
 * SQL is written once for both dialects, with positional parameters $1,
 * $2, ... (rewritten to ?1, ?2 for SQLite). Prepared statements are cached
 * per connection (64, least recently used out first).
 *
 * Threads: a keel_db_conn belongs to one thread at a time — the pool
 * thread running the job, or the caller of keel_db_connect. Results and
 * the views they hand out live on that thread too. docs/storage.md has the
 * dialect differences, the error table and an example handler.
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
    X(DB_NOROW, -20106, "no row")                         /* -> 404 */         \
    X(DB_UNSUPPORTED, -20107, "not supported by this database") /* -> 500 */

enum {
#define KEEL_DB_ERR_ENUM(name, val, msg) KEEL_E##name = (val),
    KEEL_DB_ERRNO_MAP(KEEL_DB_ERR_ENUM)
#undef KEEL_DB_ERR_ENUM
};

/* The HTTP status an error from this module maps to: 409 constraint;
 * 503 unavailable, timeout, retry (still conflicting after the retries)
 * and KEEL_EBUSY (pool queue full); 404 no row; 500 for the rest. */
int keel_db_error_status(int err);
/* A static description of a KEEL_EDB_* code, or keel_strerror(err). */
const char *keel_db_strerror(int err);

/* KEEL_EDB_NOROW is never returned by the drivers: it is for job
 * functions to say "the row asked for does not exist" (-> 404). */

/* ---------------------------------------------------------------- params */

/* A parameter's type. TEXT must be valid UTF-8 without NUL bytes (both
 * databases then refuse the same inputs: KEEL_EINVAL before the query
 * runs). On PostgreSQL, INT goes as int8, DOUBLE as float8, BOOL as bool,
 * BLOB as bytea; TEXT and NULL go untyped, so the server infers their
 * type from the context as it would for a literal. */
typedef enum keel_db_type {
    KEEL_DB_NULL = 0,
    KEEL_DB_INT,    /* int64 */
    KEEL_DB_DOUBLE,
    KEEL_DB_BOOL,
    KEEL_DB_TEXT,   /* UTF-8, no NUL */
    KEEL_DB_BLOB
} keel_db_type;

/* One parameter; the KEEL_DB_P_* macros build them. Text and blob point
 * at the caller's bytes, which must live for the duration of the call. */

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

/* The database's options (keel/config.h), registered by services with a
 * database: DATABASE_*, query logging and migrations. Read them with
 * keel_config_get(cfg, &keel_db_config). */
typedef struct keel_db_options {
    char *database_url;     /* DATABASE_URL */
    unsigned db_pool_max;   /* DATABASE_POOL_MAX */
    unsigned db_pool_min;   /* DATABASE_POOL_MIN */
    uint64_t db_idle_timeout_ms; /* DATABASE_IDLE_TIMEOUT */
    uint64_t db_connect_timeout_ms; /* DATABASE_TIMEOUT */
    uint64_t db_statement_timeout_ms; /* DATABASE_STATEMENT_TIMEOUT (0 = none) */
    uint64_t db_queue_max;  /* DATABASE_QUEUE_MAX */
    int query_logging;      /* ENABLE_QUERY_LOGGING */
    uint64_t slow_query_ms; /* SLOW_QUERY_THRESHOLD */
    int migrate_on_start;   /* MIGRATE_ON_START */
    char *migrations_dir;   /* MIGRATIONS_DIR ("" = the compiled-in set) */
} keel_db_options;

extern const keel_config_module keel_db_config;

/* Opens the database of DATABASE_URL (cfg's keel_db_options) for server s, before
 * keel_server_start: creates the pool (DATABASE_POOL_MAX threads and
 * connections, DATABASE_QUEUE_MAX queued jobs), and registers the critical
 * `database` health check in h and the db_* metrics in m (each may be
 * NULL). Connections open as the pool threads start (the first
 * DATABASE_POOL_MIN) or on first use; failing to connect is not an error
 * here (the database may come up later), an unusable URL is: 0, or
 * KEEL_ECONFIG with a log line naming what is wrong (an unknown scheme, a
 * malformed PostgreSQL URL, a SQLite directory that cannot be created).
 * The health check uses one connection of its own, beyond
 * DATABASE_POOL_MAX. */
struct keel_metrics;
struct keel_health;
int keel_db_open(keel_db **out, keel_server *s, const keel_config *cfg,
                 struct keel_metrics *m, struct keel_health *h);
/* Releases db once the server has stopped (drained): before or after
 * keel_server_free (the pool threads hold db until they exit). m and h
 * keep pointers to db: free them after, and scrape/check no more. */
void keel_db_close(keel_db *db);

/* "sqlite" or "postgres". */
const char *keel_db_driver(const keel_db *db);

/* ---------------------------------------------------------------- running */

/* Runs on a pool thread with its connection (never NULL; the pool has
 * already connected or failed with KEEL_EDB_UNAVAILABLE without calling
 * fn); may block. Returns 0 or an error, handed to the done callback.
 * Results left open and transactions left open are freed / rolled back
 * after it returns (with a warning). */
typedef int (*keel_db_fn)(keel_db_conn *c, void *arg);
/* Runs on the request's loop with fn's result (or KEEL_ECANCELED when the
 * request ended first: then only free arg). */
typedef void (*keel_db_done_cb)(keel_req *r, void *arg, int status);

/* Queues fn for r. 0, or KEEL_EBUSY when the pool queue is full, or
 * KEEL_EINVAL; on failure nothing is called and arg is still the caller's
 * (answer with keel_db_respond_error: 503 + Retry-After). On success done
 * runs exactly once on r's loop with fn's result, KEEL_EDB_UNAVAILABLE
 * when no connection could be had, or KEEL_ECANCELED. */
int keel_db_run(keel_req *r, keel_db *db, keel_db_fn fn, keel_db_done_cb done,
                void *arg);

/* keel_db_run with fn inside one transaction, as keel_db_tx runs it on
 * the pool thread's connection: committed when fn returns 0, rolled back
 * on any other value (which done then receives); a serialization failure
 * or busy database reruns fn (up to 5 more times: fn must be safe to run
 * again, e.g. reset what it wrote into arg). The same contract otherwise:
 * 0, or KEEL_EBUSY / KEEL_EINVAL with nothing called and arg still the
 * caller's; on success done runs exactly once on r's loop — with fn's
 * result, KEEL_EDB_UNAVAILABLE (no connection: fn never ran), a failed
 * COMMIT's error, or KEEL_ECANCELED when the request ended first: fn
 * then either never started (the job was still queued) or ran to its end,
 * its transaction committed or rolled back as above — the pool thread
 * does not stop it; done only learns the answer is no longer wanted. */
int keel_db_run_tx(keel_req *r, keel_db *db, keel_db_fn fn, keel_db_done_cb done,
                   void *arg);

/* keel_db_run (tx 0) or keel_db_run_tx (tx 1) for work not tied to a
 * request — a WebSocket message, a timer on a worker's loop: fn runs on a
 * pool thread with its connection; done(arg, status) runs exactly once on
 * w's loop with fn's result (or KEEL_EDB_UNAVAILABLE, or KEEL_ECANCELED
 * when the worker stopped first). 0, or KEEL_EBUSY (pool queue full) /
 * KEEL_EINVAL with nothing called and arg still the caller's. */
typedef void (*keel_db_worker_cb)(void *arg, int status);
int keel_db_run_worker(keel_worker *w, keel_db *db, int tx, keel_db_fn fn,
                       keel_db_worker_cb done, void *arg);

/* The submit path of a request-scoped job (keel_req_job_new, whose
 * release frees it: nothing to free here on any path): keel_db_run /
 * keel_db_run_tx with job as arg. KEEL_SUSPEND when queued — done runs
 * exactly once as above, KEEL_ECANCELED included; KEEL_DONE after
 * answering the failure with keel_db_respond_error (a full queue: 503
 * with Retry-After: 1). A handler returns the flow as is. */
keel_flow keel_db_job_run(keel_req *r, keel_db *db, keel_db_fn fn, keel_db_done_cb done,
                          void *job);
keel_flow keel_db_job_run_tx(keel_req *r, keel_db *db, keel_db_fn fn, keel_db_done_cb done,
                             void *job);

/* ---------------------------------------------------------------- one statement, asynchronously */

/* Runs on the request's loop with the statement's result: status 0 and
 * rows to read with keel_db_rows_next and the getters (on this thread,
 * until the callback returns: keel frees them then — do not call
 * keel_db_rows_free); or an error (KEEL_EDB_*, KEEL_EINVAL) and rows NULL;
 * or KEEL_ECANCELED and rows NULL when the request ended first (client
 * gone, handler deadline): then only free arg. The callback may respond,
 * or start another keel_db_query_async for the same request. */
typedef void (*keel_db_result_cb)(keel_req *r, void *arg, int status, keel_db_rows *rows);

/* Runs one statement for r without a pool thread, whatever the driver.
 * PostgreSQL: on r's own loop — each worker keeps a few non-blocking libpq
 * connections (DATABASE_POOL_MAX shared out among the workers), prepares
 * each statement once per connection and pipelines the statements ready
 * in one loop iteration; each statement is its own implicit transaction.
 * SQLite (or a libpq without pipeline mode): on the database pool, as
 * keel_db_run would, the rows read whole there and handed to done.
 * sql and params are copied (they need only live for this call). The
 * statement timeout, query logging, slow-query warnings and metrics are
 * those of keel_db_query; a lost connection fails its statements with
 * KEEL_EDB_UNAVAILABLE and is opened again (with the pool's backoff) for
 * the next. For transactions or several dependent statements on one
 * connection, use keel_db_run.
 * Returns 0, or KEEL_EBUSY when DATABASE_QUEUE_MAX statements are already
 * waiting (answer with keel_db_respond_error: 503 + Retry-After), or
 * KEEL_EINVAL; on failure done is never called. On success done runs
 * exactly once on r's loop, never before this returns. */
int keel_db_query_async(keel_req *r, keel_db *db, const char *sql,
                        const keel_db_param *params, size_t nparams,
                        keel_db_result_cb done, void *arg);

/* Answers an error from the database as problem+json: 409 constraint,
 * 503 unavailable / timeout / retry / KEEL_EBUSY (with Retry-After: 1),
 * 404 no row, 500 otherwise. The SQL text and the driver's message were
 * logged where the error happened; they are never sent. Returns what
 * keel_respond_problem returns (KEEL_EALREADY after a cancellation). */
int keel_db_respond_error(keel_req *r, int err);

/* A connection outside the pool (CLI commands, migrations, tests): opened
 * from a URL on the calling thread, with cfg's timeouts and query logging
 * (cfg NULL: the defaults; no metrics). 0; KEEL_EINVAL (empty URL, unknown
 * scheme) or KEEL_ECONFIG (a SQLite directory that cannot be created, a
 * malformed PostgreSQL URL); or KEEL_EDB_UNAVAILABLE. The reason goes to
 * errbuf (may be NULL). A lost
 * connection is not replaced: its calls fail with KEEL_EDB_UNAVAILABLE
 * until the caller disconnects and connects again. */
int keel_db_connect(const char *url, const keel_config *cfg, keel_db_conn **out,
                    char *errbuf, size_t errlen);
void keel_db_disconnect(keel_db_conn *c);

/* ---------------------------------------------------------------- queries
 * All of these run on the thread that owns c. */

/* Runs a statement; *affected (may be NULL) gets the rows changed (for a
 * read-only statement: the rows it returned). Without parameters the text
 * may hold several statements separated by `;` (migrations); with
 * parameters it must be one (KEEL_EDB_SQL otherwise). Errors: KEEL_EDB_*,
 * KEEL_EINVAL (bad parameters), KEEL_ENOMEM (huge parameters, PostgreSQL). */
int keel_db_exec(keel_db_conn *c, const char *sql, const keel_db_param *params,
                 size_t nparams, int64_t *affected);

/* Runs a query (one statement); read it with keel_db_rows_next and the
 * getters, then keel_db_rows_free. The statement has run when this
 * returns (its errors are returned here, and a RETURNING statement took
 * effect even if no row is read); PostgreSQL results are held in memory
 * whole, SQLite produces rows as they are read. *out is NULL on error. */
int keel_db_query(keel_db_conn *c, const char *sql, const keel_db_param *params,
                  size_t nparams, keel_db_rows **out);

/* 1 when a row is ready, 0 at the end (and after), or a negative error.
 * Getters read the current row; a column out of range, a NULL value or no
 * current row give 0 / 0.0 / a NULL view. Conversions follow the
 * database: get_int of a text column parses it (strtoll on PostgreSQL,
 * SQLite's own rules), get_bool is true for non-zero numbers and "t",
 * "true". Column names are valid until keel_db_rows_free. */
int keel_db_rows_next(keel_db_rows *rows);
size_t keel_db_rows_columns(const keel_db_rows *rows);
const char *keel_db_rows_name(const keel_db_rows *rows, size_t col);
int keel_db_is_null(const keel_db_rows *rows, size_t col);
int64_t keel_db_get_int(const keel_db_rows *rows, size_t col);
double keel_db_get_double(const keel_db_rows *rows, size_t col);
int keel_db_get_bool(const keel_db_rows *rows, size_t col);
/* Text / blob views, valid until the next keel_db_rows_next. get_blob on
 * a PostgreSQL bytea column decodes it; on other columns it is get_text. */
keel_str keel_db_get_text(const keel_db_rows *rows, size_t col);
keel_str keel_db_get_blob(const keel_db_rows *rows, size_t col);
/* The current row as a JSON object {column: value} (new reference);
 * integers, reals, booleans (PostgreSQL bool; SQLite columns declared
 * BOOLEAN), text, null; blobs base64; PostgreSQL json/jsonb embedded as
 * JSON; NaN/Infinity as text. A repeated column name keeps the last. */
struct json_t *keel_db_row_json(const keel_db_rows *rows);
void keel_db_rows_free(keel_db_rows *rows);

/* The id of the last inserted row (SQLite rowid); with PostgreSQL use
 * RETURNING instead (this returns KEEL_EINVAL there). */
int keel_db_last_insert_id(keel_db_conn *c, int64_t *out);

/* The driver's message for the last error on c (for logs, not clients). */
const char *keel_db_errmsg(const keel_db_conn *c);

/* ---------------------------------------------------------------- bulk load (COPY) */

/* PostgreSQL's COPY ... FROM STDIN: sql is the COPY statement (text
 * format, the default: one line per row, fields separated by a tab, ending
 * in a newline), data[0..len) the rows, built with keel_db_copy_field.
 * The COPY is one statement: every row goes in, or none (a bad row fails
 * the whole of it). *rows (may be NULL) gets the rows loaded. 0, or
 * KEEL_EDB_* as keel_db_exec (a duplicate key: KEEL_EDB_CONSTRAINT), or
 * KEEL_EDB_UNSUPPORTED on SQLite, which has no COPY: the caller writes
 * the rows another way (a multi-row INSERT). Timed and logged as
 * db_query_duration_seconds{op="copy"}. */
int keel_db_copy_in(keel_db_conn *c, const char *sql, const void *data, size_t len,
                    int64_t *rows);

/* Appends one field of a COPY text-format row to b: s[0..n) with
 * backslash, tab, newline and carriage return escaped (\\, \t, \n, \r),
 * every other byte as is (UTF-8 passes through); s NULL appends \N (SQL
 * NULL). The caller writes the tab between fields and the newline after
 * the last one. s must hold no NUL byte (PostgreSQL text cannot). */
void keel_db_copy_field(keel_buf *b, const char *s, size_t n);
/* Appends a decimal int64 field. */
void keel_db_copy_int(keel_buf *b, int64_t v);

/* Runs fn in a transaction (SQLite: BEGIN IMMEDIATE): commit when it
 * returns 0, roll back on any other value, which is returned. Nested calls
 * use savepoints (SAVEPOINT sp_N / RELEASE / ROLLBACK TO): a failing inner
 * level is undone alone and the outer one goes on. KEEL_EDB_RETRY (a
 * serialization failure or deadlock, PostgreSQL 40001/40P01; SQLITE_BUSY /
 * LOCKED) — from a statement or returned by fn — reruns the whole
 * outermost transaction, up to 5 more times, after a jittered 10..200 ms
 * pause; fn must therefore be safe to run again. On PostgreSQL a
 * transaction an ignored error aborted cannot commit: KEEL_EDB_SQL. */
int keel_db_tx(keel_db_conn *c, keel_db_fn fn, void *arg);

#ifdef __cplusplus
}
#endif
#endif
