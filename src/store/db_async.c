/* db_async.c — keel_db_query_async: one statement for a request, whatever
 * the driver.
 *
 * The call copies the SQL and the parameters into one block (a
 * keel__db_aq), holds the request and gives the block to the driver's
 * engine on the request's own loop (PostgreSQL: db_pg_async.c). A driver
 * without one — SQLite, or a libpq without pipeline mode — runs it on the
 * database pool like any keel_db_run job: the statement runs on a pool
 * thread and its rows are read there, whole, into a result in memory (a
 * small driver of its own below), since a SQLite statement cannot be read
 * from another thread. Either way the callback gets a keel_db_rows read
 * with the usual getters, and keel__db_aq_complete is the one place that
 * calls it, turns a finished request into KEEL_ECANCELED, frees the rows
 * and lets the request go.
 */
#include <errno.h>
#include <stdlib.h>

#include "keel/log.h"
#include "store/db_internal.h"

/* ---------------------------------------------------------------- the block */

static keel__db_aq *aq_new(keel_req *r, keel_db *db, const char *sql,
                           const keel_db_param *params, size_t n, keel_db_result_cb done,
                           void *arg)
{
    size_t sl = strlen(sql) + 1, bytes = 0;
    for (size_t i = 0; i < n; i++)
        if (params[i].type == KEEL_DB_TEXT || params[i].type == KEEL_DB_BLOB)
            bytes += params[i].v.s.len;
    /* Parameter sizes come from the caller's data: no abort on failure. */
    size_t total = sizeof(keel__db_aq) + n * sizeof(keel_db_param) + sl + bytes;
    keel__db_aq *q = keel_try_malloc(total);
    if (!q)
        return NULL;
    memset(q, 0, sizeof(*q));
    q->db = db;
    q->req = r;
    q->done = done;
    q->arg = arg;
    q->params = n ? (keel_db_param *)(void *)(q + 1) : NULL;
    q->nparams = n;
    char *p = (char *)(q + 1) + n * sizeof(keel_db_param);
    memcpy(p, sql, sl);
    q->sql = p;
    p += sl;
    for (size_t i = 0; i < n; i++) {
        q->params[i] = params[i];
        if ((params[i].type == KEEL_DB_TEXT || params[i].type == KEEL_DB_BLOB) &&
            params[i].v.s.ptr) {
            if (params[i].v.s.len)
                memcpy(p, params[i].v.s.ptr, params[i].v.s.len);
            q->params[i].v.s.ptr = p;
            p += params[i].v.s.len;
        }
    }
    q->op = keel__db_sql_op(sql);
    return q;
}

void keel__db_aq_complete(keel__db_aq *q, int status, keel_db_rows *rows)
{
    keel_req *r = q->req;
    keel__db_span_one(q->span_parent, q->db->drv->name, q->op, q->sql, q->span_start, status);
    if (r) {
        if (keel_req_is_finished(r)) /* answered already: deadline, client gone */
            status = KEEL_ECANCELED;
        q->done(r, q->arg, status, status == 0 ? rows : NULL);
    }
    keel_db_rows_free(rows);
    keel_free(q);
    if (r)
        keel_req_unhold(r);
}

void keel__db_rows_adopt(keel_db_conn *c, keel_db_rows *rows, const char *sql, unsigned op,
                         uint64_t ns, uint64_t nrows)
{
    rows->c = c;
    rows->sql = NULL; /* observed already: the text is not needed again */
    (void)sql;
    rows->op = op;
    rows->elapsed_ns = ns;
    rows->nrows = nrows;
    rows->failed = 1;
    rows->prev = NULL;
    rows->next = c->open_rows;
    if (c->open_rows)
        c->open_rows->prev = rows;
    c->open_rows = rows;
}

/* ---------------------------------------------------------------- rows in memory */

typedef struct mem_cell {
    int null;
    int64_t i;
    double d;
    int b;
    char *text, *blob; /* copies (NUL-terminated for convenience) */
    size_t tlen, blen;
    json_t *json;
} mem_cell;

typedef struct mem_rows {
    keel_db_rows base;
    keel_db_conn conn; /* its own head: the rows are read on another thread */
    size_t ncols, nrows, cap, row; /* row: 1-based, 0 before the first */
    char **names;
    mem_cell *cells;   /* nrows * ncols */
} mem_rows;

#define M(rows) ((mem_rows *)(uintptr_t)(rows))

static const mem_cell *cell(const keel_db_rows *rows, size_t col)
{
    const mem_rows *m = M(rows);
    if (m->row == 0 || m->row > m->nrows)
        return NULL;
    const mem_cell *c = &m->cells[(m->row - 1) * m->ncols + col];
    return c->null ? NULL : c;
}

static int mem_rows_next(keel_db_rows *rows)
{
    mem_rows *m = M(rows);
    if (m->row >= m->nrows) {
        m->row = m->nrows + 1;
        return 0;
    }
    m->row++;
    return 1;
}

static void mem_rows_free(keel_db_rows *rows)
{
    mem_rows *m = M(rows);
    for (size_t i = 0; i < m->nrows * m->ncols; i++) {
        keel_free(m->cells[i].text);
        keel_free(m->cells[i].blob);
        json_decref(m->cells[i].json);
    }
    for (size_t i = 0; i < m->ncols; i++)
        keel_free(m->names[i]);
    keel_free(m->names);
    keel_free(m->cells);
    keel_free(m);
}

static size_t mem_columns(const keel_db_rows *rows) { return M(rows)->ncols; }
static const char *mem_name(const keel_db_rows *rows, size_t col) { return M(rows)->names[col]; }
static int mem_is_null(const keel_db_rows *rows, size_t col) { return cell(rows, col) == NULL; }

static int64_t mem_get_int(const keel_db_rows *rows, size_t col)
{
    const mem_cell *c = cell(rows, col);
    return c ? c->i : 0;
}

static double mem_get_double(const keel_db_rows *rows, size_t col)
{
    const mem_cell *c = cell(rows, col);
    return c ? c->d : 0.0;
}

static int mem_get_bool(const keel_db_rows *rows, size_t col)
{
    const mem_cell *c = cell(rows, col);
    return c ? c->b : 0;
}

static keel_str mem_get_text(const keel_db_rows *rows, size_t col)
{
    const mem_cell *c = cell(rows, col);
    return c ? (keel_str){c->text, c->tlen} : KEEL_STR_NULL;
}

static keel_str mem_get_blob(const keel_db_rows *rows, size_t col)
{
    const mem_cell *c = cell(rows, col);
    return c ? (keel_str){c->blob, c->blen} : KEEL_STR_NULL;
}

static json_t *mem_value_json(const keel_db_rows *rows, size_t col)
{
    const mem_cell *c = cell(rows, col);
    if (!c || !c->json)
        return json_null();
    /* a new reference the caller may change: containers are copied */
    return json_is_object(c->json) || json_is_array(c->json) ? json_deep_copy(c->json)
                                                             : json_incref(c->json);
}

static int mem_tx(keel_db_conn *c, keel__db_tx_op op, unsigned level)
{
    (void)c, (void)op, (void)level;
    return KEEL_EINVAL;
}

static int mem_in_tx(keel_db_conn *c)
{
    (void)c;
    return 0;
}

/* Only the result side is ever called: the rows' head is not a connection. */
static const keel__db_driver mem_driver = {
    .name = "memory",
    .rows_next = mem_rows_next,
    .rows_free = mem_rows_free,
    .columns = mem_columns,
    .column_name = mem_name,
    .is_null = mem_is_null,
    .get_int = mem_get_int,
    .get_double = mem_get_double,
    .get_bool = mem_get_bool,
    .get_text = mem_get_text,
    .get_blob = mem_get_blob,
    .value_json = mem_value_json,
    .tx = mem_tx,
    .in_tx = mem_in_tx,
};

static char *copy_view(keel_str s, size_t *len)
{
    *len = s.ptr ? s.len : 0;
    char *p = keel_malloc(*len + 1);
    if (*len)
        memcpy(p, s.ptr, *len);
    p[*len] = '\0';
    return p;
}

/* Reads every row of src (on the thread that owns its connection) into a
 * result that can be read anywhere. */
static int materialise(keel_db_rows *src, keel_db_rows **out)
{
    mem_rows *m = keel_calloc(1, sizeof(*m));
    m->base.c = &m->conn;
    m->conn.drv = &mem_driver;
    m->conn.obs = &m->conn.own_obs;
    m->ncols = keel_db_rows_columns(src);
    m->names = keel_calloc(m->ncols ? m->ncols : 1, sizeof(char *));
    for (size_t i = 0; i < m->ncols; i++) {
        const char *name = keel_db_rows_name(src, i);
        m->names[i] = keel_strdup(name ? name : "?");
    }
    int rc;
    while ((rc = keel_db_rows_next(src)) == 1) {
        if (m->nrows == m->cap) {
            m->cap = m->cap ? m->cap * 2 : 4;
            m->cells = keel_realloc(m->cells, m->cap * (m->ncols ? m->ncols : 1) *
                                                  sizeof(mem_cell));
        }
        mem_cell *row = &m->cells[m->nrows * m->ncols];
        m->nrows++;
        for (size_t i = 0; i < m->ncols; i++) {
            mem_cell *c = &row[i];
            memset(c, 0, sizeof(*c));
            c->null = keel_db_is_null(src, i);
            if (c->null)
                continue;
            /* each view copied at once: SQLite may convert a column in place */
            c->blob = copy_view(keel_db_get_blob(src, i), &c->blen);
            c->text = copy_view(keel_db_get_text(src, i), &c->tlen);
            c->i = keel_db_get_int(src, i);
            c->d = keel_db_get_double(src, i);
            c->b = keel_db_get_bool(src, i);
            c->json = src->c->drv->value_json(src, i);
        }
    }
    m->conn.open_rows = &m->base;
    if (rc < 0) {
        m->base.failed = 1;
        keel_db_rows_free(&m->base);
        return rc;
    }
    m->base.failed = 1; /* observed on the pool thread */
    *out = &m->base;
    return 0;
}

/* ---------------------------------------------------------------- on the pool */

static int pool_fn(keel_db_conn *c, void *arg)
{
    keel__db_aq *q = arg;
    keel_db_rows *rows;
    int rc = keel_db_query(c, q->sql, q->params, q->nparams, &rows);
    if (rc < 0)
        return rc;
    rc = materialise(rows, &q->rows);
    keel_db_rows_free(rows); /* the sample and the log line, as for any query */
    return rc;
}

static void pool_done(keel_req *r, void *arg, int status)
{
    (void)r;
    keel__db_aq *q = arg;
    keel_db_rows *rows = q->rows;
    q->rows = NULL;
    /* keel_db_run let go of its hold on r when this returns; ours is kept
     * until the callback ran. */
    keel__db_aq_complete(q, status, rows);
}

/* ---------------------------------------------------------------- the call */

int keel_db_query_async(keel_req *r, keel_db *db, const char *sql,
                        const keel_db_param *params, size_t nparams,
                        keel_db_result_cb done, void *arg)
{
    if (!r || !db || !sql || !done || (nparams && !params))
        return KEEL_EINVAL;
    for (size_t i = 0; i < nparams; i++)
        if ((params[i].type == KEEL_DB_TEXT || params[i].type == KEEL_DB_BLOB) &&
            !params[i].v.s.ptr && params[i].v.s.len)
            return KEEL_EINVAL;
    keel__db_aq *q = aq_new(r, db, sql, params, nparams, done, arg);
    if (!q)
        return KEEL_ENOMEM;
    q->request_id = keel_req_id(r);
    keel_req_hold(r);
    int rc = -ENOTSUP;
    if (db->drv->async_submit) {
        /* traced here on the loop; on the pool, by the job instead */
        q->span_parent = keel_trace_ref(r);
        q->span_start = keel_now_ns();
        rc = db->drv->async_submit(db, q);
    }
    if (rc == -ENOTSUP) {
        q->span_parent = (keel_span_ref){0};
        rc = keel_db_run(r, db, pool_fn, pool_done, q);
    }
    if (rc < 0) {
        keel_free(q);
        keel_req_unhold(r);
    }
    return rc;
}
