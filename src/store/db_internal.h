/* db_internal.h — what the database drivers share with db.c. Never installed.
 *
 * A driver is a table of function pointers (STYLE.md rule 7): db.c owns
 * everything that is the same for every database (the pool, transactions
 * and their retries, error logging, metrics, parameter checks) and calls
 * the driver for what differs. A driver's connection and result structs
 * begin with the common heads below (keel_db_conn, keel_db_rows), so db.c
 * reads the shared fields and the driver casts to its own type.
 *
 * Error protocol: a driver function that fails records the driver's
 * message with keel__db_set_error(), classifies the failure itself (its
 * `classify` knows its native codes) and returns the KEEL_EDB_* code; a
 * lost connection also sets c->broken so the pool replaces it.
 */
#ifndef KEEL_DB_INTERNAL_H
#define KEEL_DB_INTERNAL_H

#include <jansson.h>
#include <pthread.h>

#include "keel/db.h"
#include "keel/trace.h"
#include "keel/metrics.h"

/* Transaction steps; `level` names the savepoint sp_<level>. */
typedef enum keel__db_tx_op {
    KEEL__TX_BEGIN = 0,
    KEEL__TX_COMMIT,
    KEEL__TX_ROLLBACK,
    KEEL__TX_SAVEPOINT,
    KEEL__TX_RELEASE,
    KEEL__TX_ROLLBACK_TO
} keel__db_tx_op;

/* What a driver needs to open a connection. */
typedef struct keel__db_settings {
    uint64_t connect_timeout_ms;   /* DATABASE_TIMEOUT */
    uint64_t statement_timeout_ms; /* DATABASE_STATEMENT_TIMEOUT, 0 = none */
} keel__db_settings;

/* Query logging and metrics for a connection: shared by the connections of
 * a keel_db, or owned by a connection from keel_db_connect (no metrics). */
typedef struct keel__db_obs {
    int query_logging;        /* ENABLE_QUERY_LOGGING: every query at info */
    uint64_t slow_query_ms;   /* SLOW_QUERY_THRESHOLD: warn at or above; 0 = off */
    keel_metric *duration;    /* db_query_duration_seconds{op}, may be NULL */
    keel_metric *errors;      /* db_errors_total{kind}, may be NULL */
    unsigned shard;           /* metrics shard for pool threads */
} keel__db_obs;

typedef struct keel__db_driver keel__db_driver;
struct keel__db_aq;

/* The statements a traced pool job ran, recorded on the pool thread
 * (keel__db_observe) into memory of the request's arena, and turned into
 * child spans on the request's loop when the job is done. */
#define KEEL__DB_SPAN_MAX 16
#define KEEL__DB_SPAN_SQL 256
typedef struct keel__db_spans {
    keel_span_ref parent;
    const char *driver;
    unsigned n, dropped;
    struct {
        uint64_t start, end;
        unsigned op;
        int rc;
        char sql[KEEL__DB_SPAN_SQL];
    } rec[KEEL__DB_SPAN_MAX];
} keel__db_spans;

/* A zeroed record for a job of r when r is traced, in r's arena; NULL
 * otherwise. */
keel__db_spans *keel__db_spans_new(keel_req *r, const char *driver);
/* One child span of `parent` per recorded statement (loop thread). */
void keel__db_spans_emit(keel__db_spans *s);
/* One span for a statement of the async engine, ended now. */
void keel__db_span_one(keel_span_ref parent, const char *driver, unsigned op, const char *sql,
                       uint64_t start, int rc);

/* The common head of every connection. */
struct keel_db_conn {
    const keel__db_driver *drv;
    const keel__db_obs *obs;  /* points at own_obs or at the keel_db's */
    keel__db_obs own_obs;
    keel__db_settings settings;
    int broken;               /* the connection is lost: replace it */
    unsigned tx_depth;        /* keel_db_tx nesting, 0 = none */
    char *errmsg;             /* the driver's last message (heap) */
    const char *request_id;   /* of the job running, for log lines */
    struct keel__db_spans *spans; /* of the job running when traced */
    keel_db_rows *open_rows;  /* results not freed yet (freed after a job) */
    uint64_t rng;             /* xorshift state for retry jitter */
};

/* The common head of every result. */
struct keel_db_rows {
    keel_db_conn *c;
    keel_db_rows *prev, *next; /* in c->open_rows */
    char *sql;                 /* for the log line at free */
    unsigned op;               /* metrics label index */
    uint64_t elapsed_ns;       /* time spent in the driver so far */
    uint64_t nrows;            /* rows read */
    int failed;                /* logged and counted already: an error, or an
                                * asynchronous result (observed on arrival) */
};

struct keel__db_driver {
    const char *name; /* "sqlite" / "postgres" */
    /* Checks target before any connection (and prepares it: SQLite
     * creates the file's directory). 0, or KEEL_ECONFIG / KEEL_EINVAL
     * with the reason in err. */
    int (*check)(const char *target, char *err, size_t errlen);
    /* Opens a connection to target (a file path or a libpq URL). 0, or
     * KEEL_EDB_UNAVAILABLE with the reason in err. */
    int (*open)(const char *target, const keel__db_settings *st, keel_db_conn **out,
                char *err, size_t errlen);
    void (*close)(keel_db_conn *c);
    /* Statements and queries; params are already validated. */
    int (*exec)(keel_db_conn *c, const char *sql, const keel_db_param *p, size_t n,
                int64_t *affected);
    int (*query)(keel_db_conn *c, const char *sql, const keel_db_param *p, size_t n,
                 keel_db_rows **out);
    int (*rows_next)(keel_db_rows *rows);
    void (*rows_free)(keel_db_rows *rows);
    /* Getters of the current row; col is in range. */
    size_t (*columns)(const keel_db_rows *rows);
    const char *(*column_name)(const keel_db_rows *rows, size_t col);
    int (*is_null)(const keel_db_rows *rows, size_t col);
    int64_t (*get_int)(const keel_db_rows *rows, size_t col);
    double (*get_double)(const keel_db_rows *rows, size_t col);
    int (*get_bool)(const keel_db_rows *rows, size_t col);
    keel_str (*get_text)(const keel_db_rows *rows, size_t col);
    keel_str (*get_blob)(const keel_db_rows *rows, size_t col);
    /* One value of the current row as JSON (new reference). */
    json_t *(*value_json)(const keel_db_rows *rows, size_t col);
    /* BEGIN / COMMIT / ROLLBACK / SAVEPOINT sp_N / RELEASE / ROLLBACK TO. */
    int (*tx)(keel_db_conn *c, keel__db_tx_op op, unsigned level);
    /* 1 while a transaction is open on c (also an aborted one). */
    int (*in_tx)(keel_db_conn *c);
    /* A cheap round trip; 0 or an error. */
    int (*ping)(keel_db_conn *c);
    int (*last_insert_id)(keel_db_conn *c, int64_t *out);
    /* COPY ... FROM STDIN of data[0..len) (keel_db_copy_in); NULL: the
     * database has none (KEEL_EDB_UNSUPPORTED). */
    int (*copy_in)(keel_db_conn *c, const char *sql, const void *data, size_t len,
                   int64_t *rows);
    /* The KEEL_EDB_* kind of the driver's last error on c. */
    int (*classify)(keel_db_conn *c);
    /* keel_db_query_async on the request's own loop (db_pg_async.c); NULL,
     * or -ENOTSUP from it, means the pool runs it (db_async.c). On 0
     * the driver owns q and completes it with keel__db_aq_complete. */
    int (*async_submit)(keel_db *db, struct keel__db_aq *q);
};

extern const keel__db_driver keel__db_sqlite_driver;
extern const keel__db_driver keel__db_pg_driver;

/* Records the driver's message for c (copied; NULL clears it). */
void keel__db_set_error(keel_db_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Error classification tables, exposed for the unit tests. */
int keel__db_pg_classify_state(const char *sqlstate, int connection_bad);
int keel__db_sqlite_classify_code(int extended_code, int deadline_passed);

/* SQLite: a copy of sql with every $N outside string literals, quoted
 * identifiers and comments rewritten to ?N (SQLite reads `$1` as a named
 * parameter numbered by order of appearance, not as parameter 1). */
char *keel__db_rewrite_dollar(const char *sql);

/* 1 when sql holds nothing but blanks, comments and semicolons. */
int keel__db_sql_blank(const char *sql);

/* JSON for text from a database: a string, with invalid UTF-8 replaced by
 * U+FFFD so the document stays valid. And base64 text for a blob. */
json_t *keel__db_json_text(const char *p, size_t n);
json_t *keel__db_json_blob(const void *p, size_t n);

/* ---------------------------------------------------------------- statement cache
 * Per connection, bounded, least recently used out first. Entries in use
 * by an open result are `busy` and never evicted (the caller then runs an
 * uncached statement instead). */
#define KEEL__DB_CACHE_MAX 64

typedef struct keel__db_cache_entry {
    char *key;      /* heap; NULL = free slot */
    uint64_t hash;
    uint64_t used;  /* LRU tick */
    void *stmt;     /* the driver's statement (sqlite3_stmt *, a PG name) */
    int busy;
} keel__db_cache_entry;

typedef struct keel__db_cache {
    keel__db_cache_entry e[KEEL__DB_CACHE_MAX];
    uint64_t tick;
    /* Releases a statement (finalize; DEALLOCATE when live, i.e. the
     * server still has it). */
    void (*release)(void *ctx, void *stmt, int live);
    void *ctx;
} keel__db_cache;

/* The entry for key (marked most recently used), or NULL. */
keel__db_cache_entry *keel__db_cache_get(keel__db_cache *cache, const char *key);
/* Stores stmt under key, evicting the least recently used idle entry;
 * NULL when every entry is busy (stmt then stays the caller's). */
keel__db_cache_entry *keel__db_cache_put(keel__db_cache *cache, const char *key,
                                         void *stmt);
/* Releases one entry (its statement went stale). */
void keel__db_cache_drop(keel__db_cache *cache, keel__db_cache_entry *e, int live);
/* Releases every entry; live 0 when the server already dropped them
 * (reconnect, "prepared statement does not exist", closing). */
void keel__db_cache_clear(keel__db_cache *cache, int live);

/* ---------------------------------------------------------------- shared by db.c, the pool and the drivers */

/* The metrics label index of a statement (its first keyword). */
unsigned keel__db_sql_op(const char *sql);
/* The kind label values of db_errors_total, NULL-terminated. */
extern const char *const keel__db_error_kinds[];
/* Times one statement into db_query_duration_seconds{op}, counts a failure
 * in db_errors_total{kind} and writes the log lines (query logging, slow
 * queries, failures with c's message and request id). */
void keel__db_observe(keel_db_conn *c, unsigned op, const char *sql, uint64_t ns, int rc,
                      uint64_t rows);
/* Checks parameters (text UTF-8 without NUL, known types); KEEL_EINVAL
 * with the reason in c's message. */
int keel__db_check_params(keel_db_conn *c, const keel_db_param *p, size_t n);

/* ---------------------------------------------------------------- asynchronous statements
 * One keel_db_query_async call: its SQL and parameters copied into one
 * block (the caller's buffers need only live for the call), the request
 * held until it completes. The driver's fields are for the engine that
 * runs it (db_pg_async.c). */
typedef struct keel__db_aq {
    struct keel__db_aq *next;
    keel_db *db;
    keel_req *req;              /* held; NULL for an internal statement */
    keel_db_result_cb done;
    void *arg;
    const char *request_id;     /* the held request's, for log lines */
    keel_span_ref span_parent;  /* traced on the loop (async engine) */
    uint64_t span_start;
    const char *sql;            /* in the block */
    keel_db_param *params;      /* in the block; text and blobs too */
    size_t nparams;
    unsigned op;                /* metrics label */
    /* engine state */
    uint64_t sent_ns;
    int phase;
    int prepared;               /* a Prepare went ahead of it */
    int retried;                /* re-sent once after a stale statement */
    void *err_res;              /* the first error result */
    int err_phase;              /* the step it came from */
    void *res;                  /* the result */
    void *entry;                /* statement cache entry used (busy) */
    char stmt[24];              /* its name, to tell a reused slot */
    keel_db_rows *rows;         /* pool fallback: the materialised result */
} keel__db_aq;

/* Runs q's callback on its request's loop — with KEEL_ECANCELED instead
 * when the request ended first — frees rows after it returns, lets go of
 * the request and frees q. */
void keel__db_aq_complete(keel__db_aq *q, int status, keel_db_rows *rows);
/* A result delivered asynchronously: linked to c (which must stay open
 * until the callback returned) and marked observed. */
void keel__db_rows_adopt(keel_db_conn *c, keel_db_rows *rows, const char *sql, unsigned op,
                         uint64_t ns, uint64_t nrows);

/* ---------------------------------------------------------------- the database (db_pool.c) */

typedef struct db_slot db_slot;
struct keel_db {
    const keel__db_driver *drv;
    char *target;         /* file path or libpq URL (may hold a password) */
    char *safe_target;    /* for log lines: the password masked */
    keel__db_settings settings;
    keel__db_obs obs;
    keel_server *server;
    keel_pool *pool;
    db_slot *slots;
    unsigned nslots, pool_min;
    uint64_t idle_timeout_ms;
    uint64_t queue_max;   /* DATABASE_QUEUE_MAX */
    unsigned next_slot;   /* atomic */
    int refs;             /* atomic: the owner + each pool thread + each loop engine */
    int open_conns;       /* atomic, for the gauges */
    int in_use;           /* atomic */
    unsigned epoch;       /* atomic: bumped when a connection is found lost */

    pthread_mutex_t backoff_mu;
    uint64_t retry_at_ms; /* no connection attempt before this */
    uint64_t backoff_ms;  /* 0 = the last attempt succeeded */

    pthread_mutex_t health_mu;
    keel_db_conn *health_conn;

    pthread_t janitor;
    int has_janitor;
    pthread_mutex_t jmu;
    pthread_cond_t jcond;
    int stopping;

    /* the per-loop engines of keel_db_query_async (db_pg_async.c) */
    unsigned nworkers;
    void **engines;       /* [worker id], each touched by its loop only */
    uint64_t async_waiting;  /* atomic: statements not sent yet, all loops */
    uint64_t async_rejected; /* atomic: refused, the queue being full */
};

void keel__db_ref(keel_db *db);
void keel__db_unref(keel_db *db);
/* Opens a connection for db on the calling thread (blocking), unless a
 * recent failure says to wait: the shared backoff of the pool. Counted in
 * the open gauge; close it with keel__db_release_conn. `who` names the
 * user in the log line. 0 or KEEL_EDB_UNAVAILABLE. */
int keel__db_acquire_conn(keel_db *db, const char *who, int index, keel_db_conn **out);
void keel__db_release_conn(keel_db *db, keel_db_conn *c);
/* A connection of db was found lost: logs it and marks the others
 * suspect (they are checked before their next job). */
void keel__db_conn_lost(keel_db *db, keel_db_conn *c);

/* ---------------------------------------------------------------- db.c for db_pool.c */

/* Splits a DATABASE_URL into its driver and target (path or libpq URL,
 * heap). KEEL_EINVAL with the reason in err. */
int keel__db_parse_url(const char *url, const keel__db_driver **drv, char **target,
                       char *err, size_t errlen);
/* The driver's check of target (a SQLite directory is created, a libpq
 * URL parsed). KEEL_ECONFIG / KEEL_EINVAL with the reason in err. */
int keel__db_prepare_target(const keel__db_driver *drv, const char *target, char *err,
                            size_t errlen);
/* Connection settings and logging options from cfg (NULL: the defaults). */
void keel__db_settings_from(keel__db_settings *st, keel__db_obs *obs,
                            const keel_config *cfg);
/* Opens a connection; obs NULL = the connection's own (own_obs). */
int keel__db_conn_open(const keel__db_driver *drv, const char *target,
                       const keel__db_settings *st, const keel__db_obs *obs,
                       keel_db_conn **out, char *err, size_t errlen);
/* After a job: frees forgotten results, rolls back a forgotten transaction. */
void keel__db_conn_reset(keel_db_conn *c);
void keel__db_conn_close(keel_db_conn *c);

#endif
