/* analytics_rollup.c — rollups and retention (job kinds analytics.rollup
 * and analytics.purge) and the admin analytics routes: metrics from the
 * rollups, raw events cursor-paged, and an export streamed page by page.
 *
 * Rollups are rewritten whole per period: for each hour and each day of
 * the range, one transaction deletes the period's rows and inserts them
 * again from the raw events (GROUP BY), so a re-run, or two runs over
 * overlapping ranges, give the same numbers as one.
 *
 * The export never holds more than one page (EXPORT_PAGE rows, formatted)
 * plus the connection's output buffer: a page is read on the database
 * pool, written to the socket, and the next one is read only once the
 * socket took it (keel_res_on_drain when the output is full). */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/analytics.h"

#define EXPORT_PAGE 1000
#define METRICS_MAX_POINTS 2000

static struct {
    keel_db *db;
    const app_analytics_options *o;
    int pg;
    char keybuf[1024];
    const char *keys[APP_ANALYTICS_ROLLUP_KEYS_MAX];
    size_t nkeys;
} R;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t floor_to(int64_t t, int64_t step)
{
    int64_t q = t / step;
    if (t % step < 0)
        q--;
    return q * step;
}

/* ---------------------------------------------------------------- rollup */

typedef struct period_arg {
    const char *gran;
    int64_t start, len; /* seconds */
    const char *const *keys;
    size_t nkeys;
} period_arg;

/* A property's value as text, the same on both databases for strings,
 * integers and booleans ("true"/"false"); objects and arrays as JSON. */
static const char *value_expr(void)
{
    return R.pg ? "(properties ->> ($5::text))"
                : "(CASE json_type(properties, '$.' || $5) WHEN 'true' THEN 'true' "
                  "WHEN 'false' THEN 'false' ELSE CAST(json_extract(properties, '$.' || $5) "
                  "AS TEXT) END)";
}

static int rollup_period(keel_db_conn *c, void *arg)
{
    period_arg *p = arg;
    keel_db_param pa[] = {KEEL_DB_P_TEXT(p->gran), KEEL_DB_P_INT(p->start),
                          KEEL_DB_P_INT(p->start * 1000),
                          KEEL_DB_P_INT((p->start + p->len) * 1000), KEEL_DB_P_NULL()};
    int rc;
    if ((rc = keel_db_exec(c, "DELETE FROM analytics_rollups WHERE granularity = $1 AND period = $2",
                           pa, 2, NULL)) < 0 ||
        (rc = keel_db_exec(c, "DELETE FROM analytics_active_users WHERE granularity = $1 AND "
                              "period = $2",
                           pa, 2, NULL)) < 0)
        return rc;
    if ((rc = keel_db_exec(c,
                           "INSERT INTO analytics_rollups (granularity, period, name, prop_key, "
                           "prop_value, count) SELECT $1, $2, name, '', '', COUNT(*) FROM "
                           "analytics_events WHERE ts >= $3 AND ts < $4 GROUP BY name",
                           pa, 4, NULL)) < 0)
        return rc;
    if ((rc = keel_db_exec(c,
                           "INSERT INTO analytics_active_users (granularity, period, users, "
                           "events) SELECT $1, $2, COUNT(DISTINCT user_id), COUNT(*) FROM "
                           "analytics_events WHERE ts >= $3 AND ts < $4 HAVING COUNT(*) > 0",
                           pa, 4, NULL)) < 0)
        return rc;
    for (size_t k = 0; k < p->nkeys; k++) {
        pa[4] = KEEL_DB_P_TEXT(p->keys[k]);
        char sql[1024];
        const char *v = value_expr();
        snprintf(sql, sizeof(sql),
                 "INSERT INTO analytics_rollups (granularity, period, name, prop_key, "
                 "prop_value, count) SELECT $1, $2, name, $5, %s, COUNT(*) FROM "
                 "analytics_events WHERE ts >= $3 AND ts < $4 AND %s IS NOT NULL "
                 "GROUP BY name, %s",
                 v, v, v);
        if ((rc = keel_db_exec(c, sql, pa, 5, NULL)) < 0)
            return rc;
    }
    return 0;
}

int app_analytics_rollup(keel_db_conn *c, int64_t from_s, int64_t to_s, const char *const *keys,
                         size_t nkeys, int64_t *periods)
{
    int64_t first = floor_to(from_s, 86400), last = floor_to(to_s - 1, 86400) + 86400;
    int64_t n = 0;
    for (int64_t day = first; day < last; day += 86400) {
        period_arg d = {"day", day, 86400, keys, nkeys};
        int rc = keel_db_tx(c, rollup_period, &d);
        if (rc < 0)
            return rc;
        n++;
        for (int64_t h = day; h < day + 86400; h += 3600) {
            period_arg hp = {"hour", h, 3600, keys, nkeys};
            if ((rc = keel_db_tx(c, rollup_period, &hp)) < 0)
                return rc;
            n++;
        }
    }
    if (periods)
        *periods = n;
    return 0;
}

int app_analytics_purge(keel_db_conn *c, int64_t before_ms, uint64_t batch, int64_t *deleted)
{
    int64_t total = 0;
    for (;;) {
        keel_db_param p[] = {KEEL_DB_P_INT(before_ms), KEEL_DB_P_INT((int64_t)batch)};
        int64_t n = 0;
        int rc = keel_db_exec(c,
                              "DELETE FROM analytics_events WHERE id IN (SELECT id FROM "
                              "analytics_events WHERE ts < $1 ORDER BY ts LIMIT $2)",
                              p, 2, &n);
        if (rc < 0)
            return rc;
        total += n;
        if ((uint64_t)n < batch)
            break;
    }
    if (deleted)
        *deleted = total;
    return 0;
}

/* The range of a job's or a request's {from, to} (RFC 3339, optional):
 * default the last ANALYTICS_ROLLUP_LOOKBACK. -1 when malformed. */
static int range_of(json_t *args, int64_t *from_s, int64_t *to_s)
{
    int64_t now = now_ms() / 1000;
    *to_s = now + 1;
    *from_s = now - (int64_t)(R.o->rollup_lookback_ms / 1000);
    json_t *f = json_object_get(args, "from"), *t = json_object_get(args, "to");
    if (f && (!json_is_string(f) ||
              app_parse_time(json_string_value(f), json_string_length(f), from_s) < 0))
        return -1;
    if (t && (!json_is_string(t) ||
              app_parse_time(json_string_value(t), json_string_length(t), to_s) < 0))
        return -1;
    if (*to_s <= *from_s || *to_s - *from_s > 366 * 86400)
        return -1;
    return 0;
}

static keel_job_outcome job_rollup(keel_job *job, void *arg)
{
    (void)arg;
    keel_db_conn *c = keel_job_db(job);
    if (!c)
        return keel_job_retry(job, "no database connection");
    int64_t from, to, periods = 0;
    if (range_of(keel_job_args(job), &from, &to) < 0)
        return keel_job_fail(job, "args: from/to must be RFC 3339, from < to, at most 366 days");
    int rc = app_analytics_rollup(c, from, to, R.keys, R.nkeys, &periods);
    if (rc < 0)
        return keel_job_retry(job, keel_db_strerror(rc));
    keel_log(KEEL_LOG_INFO, "analytics rollup done", "{s:I,s:I,s:I}", "from", (json_int_t)from,
             "to", (json_int_t)to, "periods", (json_int_t)periods);
    return KEEL_JOB_OK;
}

static keel_job_outcome job_purge(keel_job *job, void *arg)
{
    (void)arg;
    keel_db_conn *c = keel_job_db(job);
    if (!c)
        return keel_job_retry(job, "no database connection");
    if (R.o->retention_ms == 0)
        return KEEL_JOB_OK; /* kept for ever */
    int64_t deleted = 0;
    int rc = app_analytics_purge(c, now_ms() - (int64_t)R.o->retention_ms, R.o->retention_batch,
                                 &deleted);
    if (rc < 0)
        return keel_job_retry(job, keel_db_strerror(rc));
    keel_log(KEEL_LOG_INFO, "analytics purge done", "{s:I}", "deleted", (json_int_t)deleted);
    return KEEL_JOB_OK;
}

/* ---------------------------------------------------------------- enqueue now */

typedef struct enq_job {
    char kind[32];
    char *args;
    keel_job_enqueued out;
} enq_job;

static void enq_cleanup(void *p)
{
    free(((enq_job *)p)->args);
}

static int db_enqueue(keel_db_conn *c, void *arg)
{
    enq_job *j = arg;
    keel_job_spec spec = {.kind = j->kind, .args = j->args, .max_attempts = 5};
    return keel_job_enqueue(c, &spec, &j->out);
}

static void enqueued(keel_req *r, void *arg, int status)
{
    enq_job *j = arg;
    if (status == KEEL_ECANCELED)
        return;
    if (status < 0) {
        keel_db_respond_error(r, status);
        return;
    }
    keel_respond_json(r, 202, json_pack("{s:I,s:s,s:s}", "job_id", (json_int_t)j->out.id, "kind",
                                        j->kind, "state", j->out.state));
}

static keel_flow h_rollup_now(keel_req *r)
{
    json_t *body = keel_req_json(r);
    int64_t from, to;
    if (range_of(body, &from, &to) < 0) {
        app_invalid(r, "", "from and to are RFC 3339, from before to, at most 366 days apart");
        return KEEL_DONE;
    }
    enq_job *j = KEEL_REQ_JOB(r, enq_job, enq_cleanup);
    snprintf(j->kind, sizeof(j->kind), "analytics.rollup");
    j->args = body ? json_dumps(body, JSON_COMPACT) : NULL;
    return keel_db_job_run(r, R.db, db_enqueue, enqueued, j);
}

static keel_flow h_purge_now(keel_req *r)
{
    enq_job *j = KEEL_REQ_JOB(r, enq_job, enq_cleanup);
    snprintf(j->kind, sizeof(j->kind), "analytics.purge");
    return keel_db_job_run(r, R.db, db_enqueue, enqueued, j);
}

/* ---------------------------------------------------------------- query ranges */

/* ?from&to (RFC 3339) into ms; defaults: the last `def_ms`. Answers 422
 * and returns -1 when malformed or reversed. */
static int query_range(keel_req *r, int64_t def_ms, int64_t *from_ms, int64_t *to_ms)
{
    json_t *q = keel_req_query_json(r);
    json_t *f = json_object_get(q, "from"), *t = json_object_get(q, "to");
    int64_t s;
    *to_ms = now_ms() + 1;
    *from_ms = *to_ms - def_ms;
    if (f) {
        app_parse_time(json_string_value(f), json_string_length(f), &s);
        *from_ms = s * 1000;
    }
    if (t) {
        app_parse_time(json_string_value(t), json_string_length(t), &s);
        *to_ms = s * 1000;
    }
    if (*to_ms <= *from_ms) {
        app_invalid(r, "/to", "must be after from");
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- metrics */

typedef struct metrics_job {
    int64_t from, to; /* seconds, aligned to the granularity */
    int day;
    char prop[65];
    size_t top;
    json_t *out;
} metrics_job;

static void metrics_cleanup(void *p)
{
    json_decref(((metrics_job *)p)->out);
}

static int db_metrics(keel_db_conn *c, void *arg)
{
    metrics_job *j = arg;
    const char *gran = j->day ? "day" : "hour";
    int64_t step = j->day ? 86400 : 3600;
    keel_db_param p[] = {KEEL_DB_P_TEXT(gran), KEEL_DB_P_INT(j->from), KEEL_DB_P_INT(j->to),
                         KEEL_DB_P_INT((int64_t)j->top)};
    json_decref(j->out);
    json_t *series = json_array(), *top = json_array(), *by = json_object();
    j->out = json_pack("{s:s,s:o,s:o}", "granularity", gran, "series", series, "top_events", top);
    /* one point per period, zeros included */
    size_t npoints = (size_t)((j->to - j->from) / step);
    for (size_t i = 0; i < npoints; i++) {
        char t[32];
        app_format_time(j->from + (int64_t)i * step, t);
        json_array_append_new(series, json_pack("{s:s,s:i,s:i}", "period", t, "events", 0,
                                                "active_users", 0));
    }
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           "SELECT period, users, events FROM analytics_active_users WHERE "
                           "granularity = $1 AND period >= $2 AND period < $3",
                           p, 3, &rows);
    if (rc < 0)
        return rc;
    json_int_t total = 0;
    while ((rc = keel_db_rows_next(rows)) == 1) {
        size_t i = (size_t)((keel_db_get_int(rows, 0) - j->from) / step);
        json_t *pt = json_array_get(series, i);
        json_object_set_new(pt, "active_users", json_integer(keel_db_get_int(rows, 1)));
        json_object_set_new(pt, "events", json_integer(keel_db_get_int(rows, 2)));
        total += keel_db_get_int(rows, 2);
    }
    keel_db_rows_free(rows);
    if (rc < 0)
        return rc;
    json_object_set_new(j->out, "total_events", json_integer(total));
    rc = keel_db_query(c,
                       "SELECT name, SUM(count) AS n FROM analytics_rollups WHERE granularity = $1 "
                       "AND period >= $2 AND period < $3 AND prop_key = '' GROUP BY name "
                       "ORDER BY n DESC, name LIMIT $4",
                       p, 4, &rows);
    if (rc < 0)
        return rc;
    while ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str n = keel_db_get_text(rows, 0);
        json_array_append_new(top, json_pack("{s:s%,s:I}", "name", n.ptr, n.len, "count",
                                             (json_int_t)keel_db_get_int(rows, 1)));
    }
    keel_db_rows_free(rows);
    if (rc < 0)
        return rc;
    if (j->prop[0]) {
        keel_db_param q[] = {KEEL_DB_P_TEXT(gran), KEEL_DB_P_INT(j->from), KEEL_DB_P_INT(j->to),
                             KEEL_DB_P_TEXT(j->prop)};
        rc = keel_db_query(c,
                           "SELECT name, prop_value, SUM(count) AS n FROM analytics_rollups "
                           "WHERE granularity = $1 AND period >= $2 AND period < $3 AND "
                           "prop_key = $4 GROUP BY name, prop_value ORDER BY name, n DESC",
                           q, 4, &rows);
        if (rc < 0)
            return rc;
        while ((rc = keel_db_rows_next(rows)) == 1) {
            keel_str n = keel_db_get_text(rows, 0), v = keel_db_get_text(rows, 1);
            char name[200];
            snprintf(name, sizeof(name), "%.*s", (int)n.len, n.ptr);
            json_t *m = json_object_get(by, name);
            if (!m) {
                m = json_object();
                json_object_set_new(by, name, m);
            }
            char val[512];
            snprintf(val, sizeof(val), "%.*s", (int)v.len, v.ptr);
            json_object_set_new(m, val, json_integer(keel_db_get_int(rows, 2)));
        }
        keel_db_rows_free(rows);
        if (rc < 0)
            return rc;
        json_object_set_new(j->out, "property", json_string(j->prop));
        json_object_set_new(j->out, "by_property", by);
    } else {
        json_decref(by);
    }
    return 0;
}

static void metrics_done(keel_req *r, void *arg, int status)
{
    metrics_job *j = arg;
    if (status == KEEL_ECANCELED)
        return;
    if (status < 0) {
        keel_db_respond_error(r, status);
        return;
    }
    char f[32], t[32];
    app_format_time(j->from, f);
    app_format_time(j->to, t);
    json_object_set_new(j->out, "from", json_string(f));
    json_object_set_new(j->out, "to", json_string(t));
    keel_respond_json(r, 200, json_incref(j->out));
}

static keel_flow h_metrics(keel_req *r)
{
    json_t *q = keel_req_query_json(r);
    const char *g = json_string_value(json_object_get(q, "granularity"));
    int day = !g || !strcmp(g, "day");
    int64_t step = day ? 86400 : 3600, from_ms, to_ms;
    if (query_range(r, day ? 30 * 86400000LL : 86400000LL, &from_ms, &to_ms) < 0)
        return KEEL_DONE;
    metrics_job *j = KEEL_REQ_JOB(r, metrics_job, metrics_cleanup);
    j->day = day;
    j->from = floor_to(from_ms / 1000, step);
    j->to = floor_to((to_ms + 999) / 1000 - 1, step) + step;
    if ((j->to - j->from) / step > METRICS_MAX_POINTS) {
        app_invalid(r, "/from", "the range holds more than 2000 periods of this granularity");
        return KEEL_DONE;
    }
    j->top = (size_t)R.o->top_events;
    const char *prop = json_string_value(json_object_get(q, "property"));
    if (prop) {
        int known = 0;
        for (size_t i = 0; i < R.nkeys; i++)
            known |= !strcmp(R.keys[i], prop);
        if (!known) {
            app_invalid(r, "/property", "is not one of ANALYTICS_ROLLUP_PROPERTIES");
            return KEEL_DONE;
        }
        snprintf(j->prop, sizeof(j->prop), "%s", prop);
    }
    return keel_db_job_run(r, R.db, db_metrics, metrics_done, j);
}

/* ---------------------------------------------------------------- raw events */

typedef struct list_job {
    int64_t from, to;      /* ms */
    char name[129], user[64], session[129];
    int64_t cur_ts;        /* keyset: (ts, id) */
    char cur_id[40];
    int has_cursor, asc;
    size_t limit;
    /* list */
    json_t *out;
    char next[80];
    /* export */
    int csv, last, failed, started;
    keel_buf page;
    size_t rows;
} list_job;

static void list_cleanup(void *p)
{
    list_job *j = p;
    json_decref(j->out);
    keel_buf_free(&j->page);
}

/* The page's rows, filtered, in keyset order. */
static int query_page(keel_db_conn *c, list_job *j, keel_db_rows **rows)
{
    keel_buf sql = {0};
    keel_db_param p[8];
    size_t n = 0;
    keel_buf_append_str(&sql, "SELECT id, name, ts, received_at, user_id, api_key_id, "
                              "session_id, properties FROM analytics_events WHERE ts >= $1 "
                              "AND ts < $2");
    p[n++] = KEEL_DB_P_INT(j->from);
    p[n++] = KEEL_DB_P_INT(j->to);
    if (j->name[0]) {
        p[n++] = KEEL_DB_P_TEXT(j->name);
        keel_buf_printf(&sql, " AND name = $%zu", n);
    }
    if (j->user[0]) {
        p[n++] = KEEL_DB_P_TEXT(j->user);
        keel_buf_printf(&sql, " AND user_id = $%zu", n);
    }
    if (j->session[0]) {
        p[n++] = KEEL_DB_P_TEXT(j->session);
        keel_buf_printf(&sql, " AND session_id = $%zu", n);
    }
    if (j->has_cursor) {
        p[n++] = KEEL_DB_P_INT(j->cur_ts);
        p[n++] = KEEL_DB_P_TEXT(j->cur_id);
        keel_buf_printf(&sql, j->asc ? " AND (ts > $%zu OR (ts = $%zu AND id > $%zu))"
                                     : " AND (ts < $%zu OR (ts = $%zu AND id < $%zu))",
                        n - 1, n - 1, n);
    }
    p[n++] = KEEL_DB_P_INT((int64_t)j->limit + (j->asc ? 0 : 1));
    keel_buf_printf(&sql, j->asc ? " ORDER BY ts, id LIMIT $%zu" : " ORDER BY ts DESC, id DESC "
                                                                   "LIMIT $%zu",
                    n);
    keel_buf_append(&sql, "", 1);
    int rc = keel_db_query(c, sql.data, p, n, rows);
    keel_buf_free(&sql);
    return rc;
}

static json_t *event_json(keel_db_rows *rows)
{
    json_t *e = keel_db_row_json(rows);
    char t[40];
    int64_t ts = keel_db_get_int(rows, 2), rcv = keel_db_get_int(rows, 3);
    app_format_time(floor_to(ts, 1000) / 1000, t);
    /* milliseconds kept: 2026-01-31T09:00:00.123Z */
    char full[48];
    snprintf(full, sizeof(full), "%.19s.%03dZ", t, (int)(ts - floor_to(ts, 1000)));
    json_object_set_new(e, "ts", json_string(full));
    app_format_time(floor_to(rcv, 1000) / 1000, t);
    snprintf(full, sizeof(full), "%.19s.%03dZ", t, (int)(rcv - floor_to(rcv, 1000)));
    json_object_set_new(e, "received_at", json_string(full));
    json_t *props = json_object_get(e, "properties");
    if (json_is_string(props)) { /* SQLite: the text of the JSON */
        json_t *v = json_loads(json_string_value(props), 0, NULL);
        json_object_set_new(e, "properties", v ? v : json_object());
    }
    return e;
}

static int db_list(keel_db_conn *c, void *arg)
{
    list_job *j = arg;
    keel_db_rows *rows;
    int rc = query_page(c, j, &rows);
    if (rc < 0)
        return rc;
    json_decref(j->out);
    json_t *data = json_array();
    j->out = json_pack("{s:o}", "data", data);
    j->next[0] = '\0';
    size_t k = 0;
    while ((rc = keel_db_rows_next(rows)) == 1) {
        if (k++ == j->limit) { /* one more than asked: there is a next page */
            json_t *lastv = json_array_get(data, j->limit - 1);
            snprintf(j->next, sizeof(j->next), "%" PRId64 "_%s", j->cur_ts,
                     json_string_value(json_object_get(lastv, "id")));
            break;
        }
        json_array_append_new(data, event_json(rows));
        j->cur_ts = keel_db_get_int(rows, 2);
    }
    keel_db_rows_free(rows);
    return rc < 0 ? rc : 0;
}

static void list_done(keel_req *r, void *arg, int status)
{
    list_job *j = arg;
    if (status == KEEL_ECANCELED)
        return;
    if (status < 0) {
        keel_db_respond_error(r, status);
        return;
    }
    json_object_set_new(j->out, "next_cursor", j->next[0] ? json_string(j->next) : json_null());
    if (j->next[0])
        app_link_next(r, "cursor", j->next);
    keel_respond_json(r, 200, json_incref(j->out));
}

/* The filters shared by the list and the export; -1 after answering 422. */
static int list_filters(keel_req *r, list_job *j, int64_t def_ms)
{
    json_t *q = keel_req_query_json(r);
    if (query_range(r, def_ms, &j->from, &j->to) < 0)
        return -1;
    const char *v;
    if ((v = json_string_value(json_object_get(q, "name"))))
        snprintf(j->name, sizeof(j->name), "%s", v);
    if ((v = json_string_value(json_object_get(q, "user_id"))))
        snprintf(j->user, sizeof(j->user), "%s", v);
    if ((v = json_string_value(json_object_get(q, "session_id"))))
        snprintf(j->session, sizeof(j->session), "%s", v);
    return 0;
}

static keel_flow h_events(keel_req *r)
{
    list_job *j = KEEL_REQ_JOB(r, list_job, list_cleanup);
    if (list_filters(r, j, 7 * 86400000LL) < 0)
        return KEEL_DONE;
    json_t *q = keel_req_query_json(r);
    json_int_t lim = json_integer_value(json_object_get(q, "limit"));
    j->limit = lim > 0 ? (size_t)lim : 50;
    if (j->limit > R.o->page_max)
        j->limit = (size_t)R.o->page_max;
    const char *cur = json_string_value(json_object_get(q, "cursor"));
    if (cur) {
        char *end;
        long long ts = strtoll(cur, &end, 10);
        if (end == cur || *end != '_' || strlen(end + 1) == 0 || strlen(end + 1) >= 40) {
            app_invalid(r, "/cursor", "is not a cursor this list gave");
            return KEEL_DONE;
        }
        j->cur_ts = ts;
        snprintf(j->cur_id, sizeof(j->cur_id), "%s", end + 1);
        j->has_cursor = 1;
    }
    return keel_db_job_run(r, R.db, db_list, list_done, j);
}

/* ---------------------------------------------------------------- export */

static void csv_field(keel_buf *b, const char *s, size_t n)
{
    keel_buf_append(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"')
            keel_buf_append(b, "\"", 1);
        keel_buf_append(b, s + i, 1);
    }
    keel_buf_append(b, "\"", 1);
}

static int db_export_page(keel_db_conn *c, void *arg)
{
    list_job *j = arg;
    keel_db_rows *rows;
    int rc = query_page(c, j, &rows);
    if (rc < 0)
        return rc;
    j->page.len = 0;
    size_t k = 0;
    while ((rc = keel_db_rows_next(rows)) == 1) {
        k++;
        json_t *e = event_json(rows);
        if (j->csv) {
            static const char *const cols[] = {"id",      "name",       "ts",
                                               "received_at", "user_id", "api_key_id",
                                               "session_id"};
            for (size_t i = 0; i < sizeof(cols) / sizeof(cols[0]); i++) {
                const char *s = json_string_value(json_object_get(e, cols[i]));
                if (i)
                    keel_buf_append(&j->page, ",", 1);
                if (s)
                    csv_field(&j->page, s, strlen(s));
            }
            char *props = json_dumps(json_object_get(e, "properties"),
                                     JSON_COMPACT | JSON_SORT_KEYS);
            keel_buf_append(&j->page, ",", 1);
            csv_field(&j->page, props ? props : "{}", props ? strlen(props) : 2);
            free(props);
            keel_buf_append(&j->page, "\r\n", 2);
        } else {
            char *line = json_dumps(e, JSON_COMPACT | JSON_PRESERVE_ORDER);
            if (line) {
                keel_buf_append_str(&j->page, line);
                keel_buf_append(&j->page, "\n", 1);
                free(line);
            }
        }
        j->cur_ts = keel_db_get_int(rows, 2);
        keel_str id = keel_db_get_text(rows, 0);
        snprintf(j->cur_id, sizeof(j->cur_id), "%.*s", (int)id.len, id.ptr);
        j->has_cursor = 1;
        json_decref(e);
    }
    keel_db_rows_free(rows);
    if (rc < 0)
        return rc;
    j->rows += k;
    j->last = k < j->limit;
    return 0;
}

static void export_next(keel_req *r, list_job *j);

static void export_drained(keel_req *r, void *arg)
{
    export_next(r, arg);
}

static void export_page_done(keel_req *r, void *arg, int status)
{
    list_job *j = arg;
    if (status == KEEL_ECANCELED)
        return;
    if (!j->started) {
        if (status < 0) { /* nothing sent yet: a proper error */
            keel_db_respond_error(r, status);
            return;
        }
        keel_res_header(r, "Content-Disposition",
                        j->csv ? "attachment; filename=\"analytics-events.csv\""
                               : "attachment; filename=\"analytics-events.jsonl\"");
        keel_res_stream_begin(r, 200, j->csv ? "text/csv; charset=utf-8" : "application/x-ndjson");
        j->started = 1;
        if (j->csv) {
            static const char head[] =
                "id,name,ts,received_at,user_id,api_key_id,session_id,properties\r\n";
            keel_res_write(r, head, sizeof(head) - 1);
        }
    } else if (status < 0) {
        /* the status line is gone: say it in the body, where a reader sees it */
        keel_log(KEEL_LOG_ERROR, "analytics export interrupted", "{s:s}", "error",
                 keel_db_strerror(status));
        j->page.len = 0;
        keel_buf_append_str(&j->page, j->csv ? "# export interrupted: database error\r\n"
                                             : "{\"error\":\"export interrupted: database "
                                               "error\"}\n");
        j->failed = 1;
        j->last = 1;
    }
    export_next(r, j);
}

/* Writes the page read (when the socket takes it), then reads the next. */
static void export_next(keel_req *r, list_job *j)
{
    if (keel_req_is_finished(r))
        return;
    if (j->page.len) {
        int rc = keel_res_write(r, j->page.data, j->page.len);
        if (rc == KEEL_EBUSY) {
            keel_res_on_drain(r, export_drained, j);
            return;
        }
        if (rc < 0)
            return; /* the client is gone: the request ends */
        j->page.len = 0;
    }
    if (j->last) {
        keel_res_stream_end(r);
        return;
    }
    int rc = keel_db_run(r, R.db, db_export_page, export_page_done, j);
    if (rc < 0) {
        j->page.len = 0;
        keel_buf_append_str(&j->page, j->csv ? "# export interrupted: database busy\r\n"
                                             : "{\"error\":\"export interrupted: database "
                                               "busy\"}\n");
        j->last = 1;
        export_next(r, j);
    }
}

static keel_flow h_export(keel_req *r)
{
    list_job *j = KEEL_REQ_JOB(r, list_job, list_cleanup);
    if (list_filters(r, j, 86400000LL) < 0)
        return KEEL_DONE;
    const char *fmt = json_string_value(json_object_get(keel_req_query_json(r), "format"));
    j->csv = fmt && !strcmp(fmt, "csv");
    j->asc = 1;
    j->limit = EXPORT_PAGE;
    return keel_db_job_run(r, R.db, db_export_page, export_page_done, j);
}

/* ---------------------------------------------------------------- routes */

#define S_TIME "{\"type\":\"string\",\"format\":\"date-time\"}"
#define S_RANGE "\"from\":" S_TIME ",\"to\":" S_TIME
#define S_FILTERS                                                                               \
    "\"name\":{\"type\":\"string\",\"maxLength\":128},\"user_id\":{\"type\":\"string\","        \
    "\"maxLength\":63},\"session_id\":{\"type\":\"string\",\"maxLength\":128}"

static const keel_route admin_routes[] = {
    {.name = "admin.analytics.metrics", .method = "GET", .path = "/api/v1/admin/analytics/metrics",
     .handler = h_metrics, .auth = "any", .permission = "analytics:read",
     .summary = "Counts per period, active users and top events (from the rollups)",
     .query_schema = "{\"type\":\"object\",\"properties\":{" S_RANGE ",\"granularity\":{"
                     "\"enum\":[\"hour\",\"day\"]},\"property\":{\"type\":\"string\","
                     "\"maxLength\":64}}}"},
    {.name = "admin.analytics.events", .method = "GET", .path = "/api/v1/admin/analytics/events",
     .handler = h_events, .auth = "any", .permission = "analytics:read",
     .summary = "Raw events, newest first, filtered, cursor-paged",
     .query_schema = "{\"type\":\"object\",\"properties\":{" S_RANGE "," S_FILTERS
                     ",\"limit\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":10000},"
                     "\"cursor\":{\"type\":\"string\",\"maxLength\":80}}}"},
    {.name = "admin.analytics.export", .method = "GET", .path = "/api/v1/admin/analytics/export",
     .handler = h_export, .auth = "any", .permission = "analytics:read",
     .summary = "Raw events of a range, oldest first, streamed as CSV or JSON lines",
     .query_schema = "{\"type\":\"object\",\"properties\":{" S_RANGE "," S_FILTERS
                     ",\"format\":{\"enum\":[\"csv\",\"jsonl\"]}}}"},
    {.name = "admin.analytics.rollup", .method = "POST", .path = "/api/v1/admin/analytics/rollup",
     .handler = h_rollup_now, .auth = "any", .permission = "admin:access",
     .summary = "Enqueue an analytics.rollup job now (default range: ANALYTICS_ROLLUP_LOOKBACK)",
     .request_schema = "{\"type\":\"object\",\"properties\":{" S_RANGE "}}"},
    {.name = "admin.analytics.purge", .method = "POST", .path = "/api/v1/admin/analytics/purge",
     .handler = h_purge_now, .auth = "any", .permission = "admin:access",
     .summary = "Enqueue an analytics.purge job now (raw events older than ANALYTICS_RETENTION)"},
};

int app_analytics_admin_setup(keel_service *svc, const app_analytics_options *o)
{
    R.o = o;
    R.db = keel_service_db(svc);
    R.pg = R.db && !strcmp(keel_db_driver(R.db), "postgres");
    int n = app_analytics_split_keys(o->rollup_props, R.keybuf, sizeof(R.keybuf), R.keys,
                                     APP_ANALYTICS_ROLLUP_KEYS_MAX);
    R.nkeys = n > 0 ? (size_t)n : 0;
    keel_jobs *jobs = keel_service_jobs(svc);
    if (jobs) {
        keel_job_handler roll = {.kind = "analytics.rollup", .run = job_rollup};
        keel_job_handler purge = {.kind = "analytics.purge", .run = job_purge};
        if (keel_jobs_register(jobs, &roll) < 0 || keel_jobs_register(jobs, &purge) < 0)
            return -1;
    }
    return keel_service_add_routes(svc, admin_routes, sizeof(admin_routes) / sizeof(admin_routes[0]));
}
