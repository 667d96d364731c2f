/* db_pg_internal.h — what the PostgreSQL driver (db_pg.c) shares with its
 * loop engine for keel_db_query_async (db_pg_async.c). Never installed. */
#ifndef KEEL_DB_PG_INTERNAL_H
#define KEEL_DB_PG_INTERNAL_H

#include <libpq-fe.h>

#include "store/db_internal.h"

/* libpq, loaded with dlopen on first use (db_pg.c). */
#define PQ_FUNCS(X) X(PQclear) X(PQcmdTuples) X(PQconnectdbParams) X(PQconninfoFree) X(PQconninfoParse) X(PQerrorMessage) X(PQexec) X(PQexecPrepared) X(PQfinish) X(PQfname) X(PQfreemem) X(PQftype) X(PQgetisnull) X(PQgetlength) X(PQgetvalue) X(PQnfields) X(PQnotifies) X(PQntuples) X(PQprepare) X(PQputCopyData) X(PQputCopyEnd) X(PQresultErrorField) X(PQresultErrorMessage) X(PQresultStatus) X(PQsetNoticeProcessor) X(PQstatus) X(PQtransactionStatus) X(PQunescapeBytea)
/* Optional: non-blocking use and pipeline mode (libpq >= 14). */
#define PQ_ASYNC_FUNCS(X) X(PQsetnonblocking) X(PQsocket) X(PQenterPipelineMode) X(PQpipelineSync) X(PQsendPrepare) X(PQsendQueryPrepared) X(PQsendQueryParams) X(PQflush) X(PQconsumeInput) X(PQisBusy) X(PQgetResult)

struct keel__pq_funcs {
#define PQ_FIELD(name) __typeof__(&name) name;
    PQ_FUNCS(PQ_FIELD)
    PQ_ASYNC_FUNCS(PQ_FIELD)
#undef PQ_FIELD
};
extern struct keel__pq_funcs keel__pq;
/* 1 when PQ_ASYNC_FUNCS were all found (set once libpq is loaded). */
extern int keel__pq_async_ok;
#define pq keel__pq

enum {
    OID_BOOL = 16,
    OID_BYTEA = 17,
    OID_INT8 = 20,
    OID_INT2 = 21,
    OID_INT4 = 23,
    OID_OID = 26,
    OID_JSON = 114,
    OID_FLOAT4 = 700,
    OID_FLOAT8 = 701,
    OID_NUMERIC = 1700,
    OID_JSONB = 3802
};

typedef struct pg_conn {
    keel_db_conn base;
    PGconn *pg;
    keel__db_cache cache;
    uint64_t seq;      /* statement names: keel_1, keel_2, ... */
    char state[6];     /* SQLSTATE of the last error */
    int bad;           /* the last error lost the connection */
} pg_conn;

typedef struct pg_rows {
    keel_db_rows base;
    PGresult *res;
    int nrows, ncols, row; /* row: -1 before the first keel_db_rows_next */
    char **dec;            /* decoded bytea per column, for row decrow[col] - 1 */
    size_t *declen;
    int *decrow;
} pg_rows;

/* Parameters in libpq's form. */
typedef struct pg_params {
    const char **values;
    int *lengths;
    int *formats;
    Oid *types;
    char *sig;     /* one letter per parameter type: part of the cache key */
    char *scratch; /* binary numbers and NUL-terminated text copies */
    void *block;
} pg_params;

int keel__pg_params_build(pg_conn *c, const keel_db_param *p, size_t n, pg_params *pp);
void keel__pg_params_free(pg_params *pp);
/* Records the error of res (or of the connection: res NULL) in c and
 * returns its KEEL_EDB_* kind; a lost connection is marked broken. */
int keel__pg_fail(pg_conn *c, const PGresult *res);
int keel__pg_ok_status(ExecStatusType st);
/* A result of the driver's own over res (owned). */
keel_db_rows *keel__pg_rows_new(PGresult *res);

/* db_pg_async.c: the driver's async_submit. */
int keel__db_pg_async_submit(keel_db *db, keel__db_aq *q);

#endif
