/* db_pg.c — the PostgreSQL driver (libpq).
 *
 * Statements with parameters, and every query, use the extended protocol
 * with named prepared statements (PQprepare once per connection, then
 * PQexecPrepared), cached per connection (bounded, LRU; an evicted one is
 * DEALLOCATEd). Parameters go typed: int64 as int8, double as float8, bool,
 * and blobs as bytea, all in binary (a 5 MB blob is sent as is, not
 * escaped); text goes as text of unknown type, so the server infers it
 * from the context ('2024-01-01' into a timestamp column, a JSON document
 * into jsonb) the way a literal would be. Results come back as text; bytea
 * values are decoded from hex on demand.
 *
 * keel_db_exec without parameters uses the simple protocol, which accepts
 * several statements in one text (migrations).
 *
 * A lost connection (PQstatus bad, SQLSTATE 08xxx / 57P01-3 / 53xxx)
 * marks the connection broken: the pool closes it after the job and opens
 * a new one, with backoff, for the next. "Prepared statement does not
 * exist" (26000: the server forgot our statements, e.g. DISCARD ALL or a
 * pooler in front) clears the cache and the statement is prepared again;
 * "cached plan must not change result type" (0A000, a table was altered
 * under a cached SELECT *) prepares that one statement again. Both are
 * retried at once outside a transaction; inside one, the error aborted it
 * and is returned.
 */
#include <endian.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "keel/log.h"
#include "store/db_pg_internal.h"

#include <dlfcn.h>
#include <pthread.h>

/* libpq is loaded when the first PostgreSQL URL is used, not linked: a
 * service on the default SQLite database never maps libpq and what it
 * pulls in (libssl, libcrypto, GSSAPI, LDAP, gnutls: ~9 MB of resident
 * library pages). Every function is resolved at once, with the prototypes
 * of libpq-fe.h, so a missing symbol fails the first open with one clear
 * message instead of a crash later. The non-blocking and pipeline-mode
 * functions of keel_db_query_async (PQ_ASYNC_FUNCS, libpq >= 14) are
 * optional: without them the pool runs those statements. */
struct keel__pq_funcs keel__pq;
int keel__pq_async_ok;

static pthread_once_t pq_once = PTHREAD_ONCE_INIT;
static char pq_error[256];

static void pq_load(void)
{
    void *h = dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(pq_error, sizeof(pq_error),
                 "cannot load libpq.so.5 (install libpq5): %s", dlerror());
        return;
    }
#define PQ_SYM(name)                                                           \
    pq.name = (__typeof__(pq.name))dlsym(h, #name);                            \
    if (!pq.name) {                                                            \
        snprintf(pq_error, sizeof(pq_error), "libpq.so.5 has no " #name);     \
        return;                                                                \
    }
    PQ_FUNCS(PQ_SYM)
#undef PQ_SYM
    int ok = 1;
#define PQ_OPT(name)                                                           \
    pq.name = (__typeof__(pq.name))dlsym(h, #name);                            \
    ok = ok && pq.name;
    PQ_ASYNC_FUNCS(PQ_OPT)
#undef PQ_OPT
    keel__pq_async_ok = ok;
}

/* 0 once libpq is usable; else the reason in err. */
static int pq_ready(char *err, size_t errlen)
{
    pthread_once(&pq_once, pq_load);
    if (pq_error[0]) {
        snprintf(err, errlen, "%s", pq_error);
        return KEEL_ECONFIG;
    }
    return 0;
}

int keel__db_pg_classify_state(const char *s, int connection_bad)
{
    if (connection_bad)
        return KEEL_EDB_UNAVAILABLE;
    if (!s || strlen(s) != 5)
        return KEEL_EDB_SQL;
    if (!strncmp(s, "23", 2)) /* integrity_constraint_violation */
        return KEEL_EDB_CONSTRAINT;
    if (!strcmp(s, "57014") || !strcmp(s, "55P03")) /* query_canceled, lock_not_available */
        return KEEL_EDB_TIMEOUT;
    if (!strncmp(s, "08", 2) || !strcmp(s, "57P01") || !strcmp(s, "57P02") ||
        !strcmp(s, "57P03") || !strncmp(s, "53", 2))
        /* connection exceptions, admin/crash shutdown, cannot connect now,
         * insufficient resources (too many connections, disk full) */
        return KEEL_EDB_UNAVAILABLE;
    if (!strcmp(s, "40001") || !strcmp(s, "40P01")) /* serialization failure, deadlock */
        return KEEL_EDB_RETRY;
    return KEEL_EDB_SQL;
}

static int pg_classify(keel_db_conn *base)
{
    pg_conn *c = (pg_conn *)base;
    return keel__db_pg_classify_state(c->state, c->bad);
}

int keel__pg_fail(pg_conn *c, const PGresult *res)
{
    const char *state = res ? pq.PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = res ? pq.PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    snprintf(c->state, sizeof(c->state), "%s", state ? state : "");
    c->bad = pq.PQstatus(c->pg) == CONNECTION_BAD;
    if (primary) {
        /* Only the primary message: DETAIL repeats the row's values
         * ("Key (email)=(...) already exists"), and data exceptions (22xxx)
         * quote the offending value after the last colon. Logs never get
         * parameter values. */
        size_t len = strlen(primary);
        const char *colon = strrchr(primary, ':');
        if (state && !strncmp(state, "22", 2) && colon)
            len = (size_t)(colon - primary);
        keel__db_set_error(&c->base, "%.*s (SQLSTATE %s)", (int)len, primary,
                           state ? state : "?");
    } else {
        /* A libpq-side error: no connection, the server went away. */
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", pq.PQerrorMessage(c->pg));
        for (char *p = msg; *p; p++)
            if (*p == '\n' && p[1])
                *p = ' ';
        keel__db_set_error(&c->base, "%s", msg[0] ? msg : "unknown libpq error");
    }
    int kind = keel__db_pg_classify_state(c->state, c->bad);
    if (kind == KEEL_EDB_UNAVAILABLE)
        c->base.broken = 1;
    return kind;
}

static void release_name(void *ctx, void *stmt, int live)
{
    pg_conn *c = ctx;
    if (live && pq.PQstatus(c->pg) == CONNECTION_OK) {
        char sql[64];
        snprintf(sql, sizeof(sql), "DEALLOCATE %s", (const char *)stmt);
        pq.PQclear(pq.PQexec(c->pg, sql));
    }
    keel_free(stmt);
}

static void on_notice(void *arg, const char *message)
{
    (void)arg;
    /* libpq prints notices on stderr by default ("there is no transaction
     * in progress"); they belong in the log, at debug. */
    size_t n = strlen(message);
    while (n && message[n - 1] == '\n')
        n--;
    if (keel_log_enabled(KEEL_LOG_DEBUG))
        keel_log(KEEL_LOG_DEBUG, "postgres notice", "{s:s%}", "message", message, n);
}

/* ---------------------------------------------------------------- open / close */

/* A malformed URL is a configuration error at start-up, not an endless
 * series of failed connections. */
static int pg_check(const char *url, char *err, size_t errlen)
{
    int rc = pq_ready(err, errlen);
    if (rc < 0)
        return rc;
    char *msg = NULL;
    PQconninfoOption *opts = pq.PQconninfoParse(url, &msg);
    if (!opts) {
        char text[256];
        snprintf(text, sizeof(text), "%s", msg ? msg : "out of memory");
        for (char *p = text; *p; p++)
            if (*p == '\n')
                *p = p[1] ? ' ' : '\0';
        snprintf(err, errlen, "invalid PostgreSQL URL: %s", text);
        pq.PQfreemem(msg);
        return KEEL_ECONFIG;
    }
    pq.PQconninfoFree(opts);
    return 0;
}

static int pg_open(const char *url, const keel__db_settings *st, keel_db_conn **out,
                   char *err, size_t errlen)
{
    int rc = pq_ready(err, errlen);
    if (rc < 0)
        return rc;
    char timeout[24];
    uint64_t secs = (st->connect_timeout_ms + 999) / 1000;
    snprintf(timeout, sizeof(timeout), "%llu", (unsigned long long)(secs < 2 ? 2 : secs));
    /* dbname is expanded from the URL after connect_timeout, so a
     * connect_timeout (or sslmode, ...) in the URL itself wins. */
    const char *keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *vals[] = {timeout, "keel", url, NULL};
    PGconn *pg = pq.PQconnectdbParams(keys, vals, 1);
    if (!pg || pq.PQstatus(pg) != CONNECTION_OK) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", pg ? pq.PQerrorMessage(pg) : "out of memory");
        for (char *p = msg; *p; p++)
            if (*p == '\n')
                *p = p[1] ? ' ' : '\0';
        snprintf(err, errlen, "postgres: %s", msg);
        pq.PQfinish(pg);
        return KEEL_EDB_UNAVAILABLE;
    }
    if (st->statement_timeout_ms) {
        char sql[64];
        snprintf(sql, sizeof(sql), "SET statement_timeout = %llu",
                 (unsigned long long)st->statement_timeout_ms);
        PGresult *res = pq.PQexec(pg, sql);
        int ok = pq.PQresultStatus(res) == PGRES_COMMAND_OK;
        if (!ok)
            snprintf(err, errlen, "postgres: %s", pq.PQerrorMessage(pg));
        pq.PQclear(res);
        if (!ok) {
            pq.PQfinish(pg);
            return KEEL_EDB_UNAVAILABLE;
        }
    }
    pq.PQsetNoticeProcessor(pg, on_notice, NULL);
    pg_conn *c = keel_calloc(1, sizeof(*c));
    c->pg = pg;
    c->cache.release = release_name;
    c->cache.ctx = c;
    *out = &c->base;
    return 0;
}

static void pg_close(keel_db_conn *base)
{
    pg_conn *c = (pg_conn *)base;
    keel__db_cache_clear(&c->cache, 0); /* they die with the session */
    pq.PQfinish(c->pg);
    keel_free(c);
}

/* ---------------------------------------------------------------- parameters */

void keel__pg_params_free(pg_params *pp)
{
    keel_free(pp->scratch);
    keel_free(pp->block);
}

int keel__pg_params_build(pg_conn *c, const keel_db_param *p, size_t n, pg_params *pp)
{
    memset(pp, 0, sizeof(*pp));
    if (n > 65535) {
        keel__db_set_error(&c->base, "too many parameters (%zu; PostgreSQL takes 65535)", n);
        return KEEL_EDB_SQL;
    }
    size_t scratch = 8 * n + 1;
    for (size_t i = 0; i < n; i++)
        if (p[i].type == KEEL_DB_TEXT)
            scratch += p[i].v.s.len + 1;
    /* Text is copied to end in NUL (libpq reads text parameters up to it);
     * its size comes from the caller's data, so no abort on failure. */
    pp->scratch = keel_try_malloc(scratch);
    if (!pp->scratch) {
        keel__db_set_error(&c->base, "out of memory for %zu bytes of parameters", scratch);
        return KEEL_ENOMEM;
    }
    size_t each = sizeof(char *) + 2 * sizeof(int) + sizeof(Oid) + 1;
    char *b = pp->block = keel_calloc(1, each * n + 1);
    pp->values = (const char **)(void *)b;
    pp->lengths = (int *)(void *)(b + n * sizeof(char *));
    pp->formats = pp->lengths + n;
    pp->types = (Oid *)(void *)(pp->formats + n);
    pp->sig = (char *)(pp->types + n);
    char *s = pp->scratch;
    for (size_t i = 0; i < n; i++) {
        uint64_t be;
        switch (p[i].type) {
        case KEEL_DB_INT:
            be = htobe64((uint64_t)p[i].v.i);
            memcpy(s, &be, 8);
            pp->values[i] = s, pp->lengths[i] = 8, pp->formats[i] = 1;
            pp->types[i] = OID_INT8, pp->sig[i] = 'i';
            s += 8;
            break;
        case KEEL_DB_DOUBLE:
            memcpy(&be, &p[i].v.d, 8);
            be = htobe64(be);
            memcpy(s, &be, 8);
            pp->values[i] = s, pp->lengths[i] = 8, pp->formats[i] = 1;
            pp->types[i] = OID_FLOAT8, pp->sig[i] = 'd';
            s += 8;
            break;
        case KEEL_DB_BOOL:
            *s = p[i].v.b ? 1 : 0;
            pp->values[i] = s, pp->lengths[i] = 1, pp->formats[i] = 1;
            pp->types[i] = OID_BOOL, pp->sig[i] = 'b';
            s += 1;
            break;
        case KEEL_DB_TEXT:
            if (p[i].v.s.len)
                memcpy(s, p[i].v.s.ptr, p[i].v.s.len);
            s[p[i].v.s.len] = '\0';
            pp->values[i] = s, pp->sig[i] = 'u';
            s += p[i].v.s.len + 1;
            break;
        case KEEL_DB_BLOB:
            if (p[i].v.s.len > 0x7fffffff) {
                keel__db_set_error(&c->base, "parameter $%zu: blob over 2 GB", i + 1);
                return KEEL_EDB_SQL;
            }
            pp->values[i] = p[i].v.s.len ? p[i].v.s.ptr : "";
            pp->lengths[i] = (int)p[i].v.s.len, pp->formats[i] = 1;
            pp->types[i] = OID_BYTEA, pp->sig[i] = 'x';
            break;
        default: /* NULL, of unknown type like text */
            pp->values[i] = NULL, pp->sig[i] = 'u';
            break;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- statements */

int keel__pg_ok_status(ExecStatusType st)
{
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY;
}

/* Runs sql as a cached prepared statement. *out: the result on success. */
static int run_prepared(pg_conn *c, const char *sql, const keel_db_param *p, size_t n,
                        PGresult **out)
{
    pg_params pp;
    char *key = NULL;
    int rc = keel__pg_params_build(c, p, n, &pp);
    if (rc < 0)
        goto cleanup;
    /* The statement's parameter types are fixed when it is prepared, so
     * the same text with other types is another statement. */
    size_t sl = strlen(sql);
    key = keel_malloc(sl + n + 2);
    memcpy(key, sql, sl);
    key[sl] = '\x1f';
    memcpy(key + sl + 1, pp.sig, n);
    key[sl + 1 + n] = '\0';
    for (int attempt = 0;; attempt++) {
        keel__db_cache_entry *e = keel__db_cache_get(&c->cache, key);
        if (!e) {
            char name[32];
            snprintf(name, sizeof(name), "keel_%llu", (unsigned long long)++c->seq);
            PGresult *res = pq.PQprepare(c->pg, name, sql, (int)n, pp.types);
            if (pq.PQresultStatus(res) != PGRES_COMMAND_OK) {
                rc = keel__pg_fail(c, res);
                pq.PQclear(res);
                goto cleanup;
            }
            pq.PQclear(res);
            /* PostgreSQL results are read whole, so no entry is ever busy
             * and put always finds a slot. */
            e = keel__db_cache_put(&c->cache, key, keel_strdup(name));
        }
        PGresult *res = pq.PQexecPrepared(c->pg, e->stmt, (int)n, pp.values, pp.lengths,
                                       pp.formats, 0);
        if (keel__pg_ok_status(pq.PQresultStatus(res))) {
            *out = res;
            rc = 0;
            goto cleanup;
        }
        const char *state = pq.PQresultErrorField(res, PG_DIAG_SQLSTATE);
        int stale = 0;
        if (attempt == 0 && state && !strcmp(state, "26000")) {
            /* "prepared statement does not exist": the session lost our
             * statements. Forget them all. */
            keel__db_cache_clear(&c->cache, 0);
            stale = 1;
        } else if (attempt == 0 && state && !strcmp(state, "0A000") &&
                   strstr(pq.PQresultErrorMessage(res), "cached plan")) {
            /* "cached plan must not change result type": a table the
             * statement reads was altered (a migration). Prepare anew. */
            keel__db_cache_drop(&c->cache, e, 1);
            stale = 1;
        }
        /* Run again, unless a transaction was open: the failure aborted
         * it, so the caller's transaction must be retried as a whole. */
        if (stale && pq.PQtransactionStatus(c->pg) == PQTRANS_IDLE) {
            pq.PQclear(res);
            continue;
        }
        rc = keel__pg_fail(c, res);
        pq.PQclear(res);
        goto cleanup;
    }
cleanup:
    keel_free(key);
    keel__pg_params_free(&pp);
    return rc;
}

/* A statement without parameters on the simple protocol. */
static int run_simple(pg_conn *c, const char *sql, PGresult **out)
{
    PGresult *res = pq.PQexec(c->pg, sql);
    if (!keel__pg_ok_status(pq.PQresultStatus(res))) {
        int rc = keel__pg_fail(c, res);
        pq.PQclear(res);
        return rc;
    }
    if (out)
        *out = res;
    else
        pq.PQclear(res);
    return 0;
}

static int pg_exec(keel_db_conn *base, const char *sql, const keel_db_param *p, size_t n,
                   int64_t *affected)
{
    pg_conn *c = (pg_conn *)base;
    PGresult *res = NULL;
    int rc = n ? run_prepared(c, sql, p, n, &res) : run_simple(c, sql, &res);
    if (rc < 0)
        return rc;
    const char *t = pq.PQcmdTuples(res);
    *affected = t && *t ? strtoll(t, NULL, 10) : 0;
    pq.PQclear(res);
    return 0;
}

static int pg_query(keel_db_conn *base, const char *sql, const keel_db_param *p, size_t n,
                    keel_db_rows **out)
{
    pg_conn *c = (pg_conn *)base;
    PGresult *res = NULL;
    int rc = run_prepared(c, sql, p, n, &res);
    if (rc < 0)
        return rc;
    *out = keel__pg_rows_new(res);
    return 0;
}

keel_db_rows *keel__pg_rows_new(PGresult *res)
{
    pg_rows *r = keel_calloc(1, sizeof(*r));
    r->res = res;
    r->nrows = pq.PQntuples(res);
    r->ncols = pq.PQnfields(res);
    r->row = -1;
    return &r->base;
}

static int pg_rows_next(keel_db_rows *base)
{
    pg_rows *r = (pg_rows *)base;
    if (r->row + 1 >= r->nrows) {
        r->row = r->nrows;
        return 0;
    }
    r->row++;
    return 1;
}

static void pg_rows_free(keel_db_rows *base)
{
    pg_rows *r = (pg_rows *)base;
    if (r->dec)
        for (int i = 0; i < r->ncols; i++)
            keel_free(r->dec[i]);
    keel_free(r->dec);
    keel_free(r->declen);
    keel_free(r->decrow);
    pq.PQclear(r->res);
    keel_free(r);
}

/* ---------------------------------------------------------------- getters */

#define R(rows) ((pg_rows *)(uintptr_t)(rows))

static int on_row(const pg_rows *r)
{
    return r->row >= 0 && r->row < r->nrows;
}

static const char *value(const pg_rows *r, size_t col)
{
    if (!on_row(r) || pq.PQgetisnull(r->res, r->row, (int)col))
        return NULL;
    return pq.PQgetvalue(r->res, r->row, (int)col);
}

static size_t pg_columns(const keel_db_rows *rows)
{
    return (size_t)R(rows)->ncols;
}

static const char *pg_name(const keel_db_rows *rows, size_t col)
{
    return pq.PQfname(R(rows)->res, (int)col);
}

static int pg_is_null(const keel_db_rows *rows, size_t col)
{
    return value(R(rows), col) == NULL;
}

static int truthy(const char *v)
{
    return v[0] == 't' || v[0] == 'T' || strtoll(v, NULL, 10) != 0;
}

static int64_t pg_get_int(const keel_db_rows *rows, size_t col)
{
    const char *v = value(R(rows), col);
    if (!v)
        return 0;
    if (pq.PQftype(R(rows)->res, (int)col) == OID_BOOL)
        return v[0] == 't';
    return strtoll(v, NULL, 10);
}

static double pg_get_double(const keel_db_rows *rows, size_t col)
{
    const char *v = value(R(rows), col);
    if (!v)
        return 0.0;
    if (pq.PQftype(R(rows)->res, (int)col) == OID_BOOL)
        return v[0] == 't';
    return strtod(v, NULL);
}

static int pg_get_bool(const keel_db_rows *rows, size_t col)
{
    const char *v = value(R(rows), col);
    return v ? truthy(v) : 0;
}

static keel_str pg_get_text(const keel_db_rows *rows, size_t col)
{
    const char *v = value(R(rows), col);
    if (!v)
        return KEEL_STR_NULL;
    return (keel_str){v, (size_t)pq.PQgetlength(R(rows)->res, R(rows)->row, (int)col)};
}

static keel_str pg_get_blob(const keel_db_rows *rows, size_t col)
{
    pg_rows *r = R(rows);
    const char *v = value(r, col);
    if (!v)
        return KEEL_STR_NULL;
    if (pq.PQftype(r->res, (int)col) != OID_BYTEA)
        return pg_get_text(rows, col);
    if (!r->dec) {
        r->dec = keel_calloc((size_t)r->ncols, sizeof(char *));
        r->declen = keel_calloc((size_t)r->ncols, sizeof(size_t));
        r->decrow = keel_calloc((size_t)r->ncols, sizeof(int));
    }
    if (r->decrow[col] != r->row + 1) { /* decode once per row and column */
        size_t len = (size_t)pq.PQgetlength(r->res, r->row, (int)col), n = 0;
        if (len >= 2 && v[0] == '\\' && v[1] == 'x') {
            r->dec[col] = keel_realloc(r->dec[col], (len - 2) / 2 + 1);
            for (size_t i = 2; i + 1 < len; i += 2) {
                int hi = keel_hex_digit((unsigned char)v[i]);
                int lo = keel_hex_digit((unsigned char)v[i + 1]);
                if (hi < 0 || lo < 0)
                    break;
                r->dec[col][n++] = (char)(hi << 4 | lo);
            }
        } else { /* bytea_output = escape */
            size_t un = 0;
            unsigned char *u = pq.PQunescapeBytea((const unsigned char *)v, &un);
            r->dec[col] = keel_realloc(r->dec[col], un + 1);
            if (u)
                memcpy(r->dec[col], u, un);
            n = u ? un : 0;
            pq.PQfreemem(u);
        }
        r->declen[col] = n;
        r->decrow[col] = r->row + 1;
    }
    return (keel_str){r->dec[col], r->declen[col]};
}

static json_t *pg_value_json(const keel_db_rows *rows, size_t col)
{
    pg_rows *r = R(rows);
    const char *v = value(r, col);
    if (!v)
        return json_null();
    size_t len = (size_t)pq.PQgetlength(r->res, r->row, (int)col);
    switch (pq.PQftype(r->res, (int)col)) {
    case OID_INT2:
    case OID_INT4:
    case OID_INT8:
    case OID_OID:
        return json_integer((json_int_t)strtoll(v, NULL, 10));
    case OID_FLOAT4:
    case OID_FLOAT8:
    case OID_NUMERIC: {
        double d = strtod(v, NULL);
        /* JSON has no NaN or Infinity: keep PostgreSQL's text for those. */
        return isfinite(d) ? json_real(d) : json_stringn(v, len);
    }
    case OID_BOOL:
        return json_boolean(v[0] == 't');
    case OID_BYTEA: {
        keel_str b = pg_get_blob(rows, col);
        return keel__db_json_blob(b.ptr, b.len);
    }
    case OID_JSON:
    case OID_JSONB: {
        json_t *j = json_loadb(v, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        return j ? j : keel__db_json_text(v, len);
    }
    default:
        return keel__db_json_text(v, len);
    }
}

/* ---------------------------------------------------------------- COPY */

/* COPY ... FROM STDIN on the (blocking) connection: the statement on the
 * simple protocol, then the data in pieces of at most 1 MiB, the end, and
 * the result ("COPY n"). A failure after the COPY started (the connection
 * lost, a row refused) ends it: the server then rolls the whole COPY back.
 * Every result is read, so the connection is idle again on return. */
static int pg_copy_in(keel_db_conn *base, const char *sql, const void *data, size_t len,
                      int64_t *rows)
{
    pg_conn *c = (pg_conn *)base;
    if (!pq.PQgetResult) {
        keel__db_set_error(base, "this libpq has no PQgetResult");
        return KEEL_EDB_UNSUPPORTED;
    }
    PGresult *res = pq.PQexec(c->pg, sql);
    if (pq.PQresultStatus(res) != PGRES_COPY_IN) {
        int rc = keel__pg_ok_status(pq.PQresultStatus(res))
                     ? KEEL_EDB_SQL /* not a COPY FROM STDIN at all */
                     : keel__pg_fail(c, res);
        if (rc == KEEL_EDB_SQL && keel__pg_ok_status(pq.PQresultStatus(res)))
            keel__db_set_error(base, "not a COPY ... FROM STDIN statement");
        pq.PQclear(res);
        return rc;
    }
    pq.PQclear(res);
    const char *p = data;
    int sent = 1;
    for (size_t off = 0; off < len && sent == 1;) {
        size_t k = len - off > (1u << 20) ? (1u << 20) : len - off;
        sent = pq.PQputCopyData(c->pg, p + off, (int)k);
        off += k;
    }
    if (sent == 1)
        sent = pq.PQputCopyEnd(c->pg, NULL);
    else
        pq.PQputCopyEnd(c->pg, "keel: sending the data failed");
    int rc = 0, seen = 0, ends = 0;
    while ((res = pq.PQgetResult(c->pg)) != NULL) {
        ExecStatusType st = pq.PQresultStatus(res);
        if (st == PGRES_COPY_IN) { /* the end was not taken: give up on it */
            if (ends++) { /* still in COPY: the connection is unusable */
                pq.PQclear(res);
                c->base.broken = 1;
                c->bad = 1;
                keel__db_set_error(base, "postgres: the COPY could not be ended");
                return KEEL_EDB_UNAVAILABLE;
            }
            pq.PQputCopyEnd(c->pg, "keel: the copy could not be ended");
        } else if (!seen) {
            seen = 1;
            if (keel__pg_ok_status(st)) {
                const char *t = pq.PQcmdTuples(res);
                *rows = t && *t ? strtoll(t, NULL, 10) : 0;
            } else {
                rc = keel__pg_fail(c, res);
            }
        }
        pq.PQclear(res);
        if (pq.PQstatus(c->pg) == CONNECTION_BAD)
            break;
    }
    if (rc == 0 && (sent != 1 || !seen))
        rc = keel__pg_fail(c, NULL); /* a libpq-side failure: the connection */
    return rc;
}

/* ---------------------------------------------------------------- the rest */

static int pg_tx(keel_db_conn *base, keel__db_tx_op op, unsigned level)
{
    pg_conn *c = (pg_conn *)base;
    char sql[64];
    switch (op) {
    case KEEL__TX_BEGIN: snprintf(sql, sizeof(sql), "BEGIN"); break;
    case KEEL__TX_COMMIT:
        /* COMMIT of a transaction an earlier error aborted "succeeds" with
         * the tag ROLLBACK: report it as the failure it is. */
        if (pq.PQtransactionStatus(c->pg) == PQTRANS_INERROR) {
            pq.PQclear(pq.PQexec(c->pg, "ROLLBACK"));
            keel__db_set_error(base, "transaction aborted by an earlier error; rolled back");
            c->state[0] = '\0';
            c->bad = 0;
            return KEEL_EDB_SQL;
        }
        snprintf(sql, sizeof(sql), "COMMIT");
        break;
    case KEEL__TX_ROLLBACK: snprintf(sql, sizeof(sql), "ROLLBACK"); break;
    case KEEL__TX_SAVEPOINT: snprintf(sql, sizeof(sql), "SAVEPOINT sp_%u", level); break;
    case KEEL__TX_RELEASE: snprintf(sql, sizeof(sql), "RELEASE SAVEPOINT sp_%u", level); break;
    default: snprintf(sql, sizeof(sql), "ROLLBACK TO SAVEPOINT sp_%u", level); break;
    }
    return run_simple(c, sql, NULL);
}

static int pg_in_tx(keel_db_conn *base)
{
    PGTransactionStatusType s = pq.PQtransactionStatus(((pg_conn *)base)->pg);
    return s == PQTRANS_INTRANS || s == PQTRANS_INERROR || s == PQTRANS_ACTIVE;
}

static int pg_ping(keel_db_conn *base)
{
    return run_simple((pg_conn *)base, "SELECT 1", NULL);
}

static int pg_last_insert_id(keel_db_conn *base, int64_t *out)
{
    (void)out;
    keel__db_set_error(base, "PostgreSQL has no last insert id: use RETURNING");
    return KEEL_EINVAL;
}

const keel__db_driver keel__db_pg_driver = {
    .name = "postgres",
    .check = pg_check,
    .open = pg_open,
    .close = pg_close,
    .exec = pg_exec,
    .query = pg_query,
    .rows_next = pg_rows_next,
    .rows_free = pg_rows_free,
    .columns = pg_columns,
    .column_name = pg_name,
    .is_null = pg_is_null,
    .get_int = pg_get_int,
    .get_double = pg_get_double,
    .get_bool = pg_get_bool,
    .get_text = pg_get_text,
    .get_blob = pg_get_blob,
    .value_json = pg_value_json,
    .tx = pg_tx,
    .in_tx = pg_in_tx,
    .ping = pg_ping,
    .last_insert_id = pg_last_insert_id,
    .copy_in = pg_copy_in,
    .classify = pg_classify,
    .async_submit = keel__db_pg_async_submit,
};
