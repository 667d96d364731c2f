/* event_recurrence.c — recurring events: the rule (an RFC 5545 RRULE
 * subset), instances for a range, and exceptions.
 *
 * A rule is {freq: daily|weekly|monthly, interval (1), by_weekday
 * ([MO..SU], weekly only), count | until}. Everything is UTC (no DST):
 * an instance starts at the series' time of day.
 *   daily    every `interval` days from starts_at;
 *   weekly   without by_weekday every `interval` weeks from starts_at;
 *            with it, on those weekdays of every `interval`-th week
 *            (weeks start on Monday), from starts_at's day on;
 *   monthly  on starts_at's day of the month every `interval` months; a
 *            month without that day (the 31st in April) has no instance,
 *            as RFC 5545 says.
 * count counts the instances from the first; until is inclusive. The
 * instances are computed, not stored: GET /api/v1/events/:id/instances
 * ?from&to lists those overlapping [from, to), at most
 * EVENTS_INSTANCES_MAX (then `truncated`). One instance is changed or
 * cancelled without touching the series by
 * PUT /api/v1/events/:id/instances/:recurrence_id (its original start,
 * Unix seconds): an event_exceptions row, audited.
 *
 * Materialised: the job events.recurrence (EVENTS_RECURRENCE_SCHEDULE)
 * writes every series' instances from now to EVENTS_RECURRENCE_HORIZON
 * ahead into event_instances, exceptions applied, one transaction per
 * series; an exception updates its row at once. GET
 * /api/v1/event-instances?from&to reads them across every series the
 * caller may see — a calendar is one indexed range query. A change of the
 * series itself (its rule, its times) reaches the rows at the next sweep;
 * the per-series route above is always computed, so always current. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/app.h"
#include "app/events_internal.h"

static size_t instances_max;
static int64_t horizon_s; /* EVENTS_RECURRENCE_HORIZON */

#define DAY 86400
#define STEPS_MAX 2000000 /* the most rule steps one expansion takes */

void app_ev_rrule_check(const json_t *rule, json_t *errs)
{
    const char *freq = json_string_value(json_object_get(rule, "freq"));
    if (json_object_get(rule, "count") && json_object_get(rule, "until"))
        json_array_append_new(errs, json_pack("{s:s,s:s}", "pointer", "/recurrence/until",
                                              "message", "count and until exclude each other"));
    if (json_object_get(rule, "by_weekday") && freq && strcmp(freq, "weekly"))
        json_array_append_new(errs, json_pack("{s:s,s:s}", "pointer", "/recurrence/by_weekday",
                                              "message", "is for weekly rules only"));
}

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

static int days_in_month(int y, int m /* 0..11 */)
{
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 1 && leap ? 29 : d[m];
}

/* Calls cb(start, arg) for each instance in order until cb returns
 * non-zero, the rule ends, or an instance reaches stop (exclusive).
 * 0, or -1 after STEPS_MAX steps (a range far from the series' start). */
static int expand(const json_t *rule, int64_t start, int64_t stop, int (*cb)(int64_t, void *),
                  void *arg)
{
    const char *freq = json_string_value(json_object_get(rule, "freq"));
    json_t *iv = json_object_get(rule, "interval"), *cnt = json_object_get(rule, "count"),
           *un = json_object_get(rule, "until"), *wd = json_object_get(rule, "by_weekday");
    int64_t interval = json_is_integer(iv) ? json_integer_value(iv) : 1;
    int64_t count = json_is_integer(cnt) ? json_integer_value(cnt) : -1, until = INT64_MAX;
    if (json_is_string(un))
        app_parse_time(json_string_value(un), json_string_length(un), &until);
    if (until < stop - 1)
        stop = until + 1;
    int64_t n = 0, tod = start - floor_div(start, DAY) * DAY, d0 = floor_div(start, DAY);
    if (!freq)
        return 0;
    if (!strcmp(freq, "daily") || (!strcmp(freq, "weekly") && !json_array_size(wd))) {
        int64_t step = (!strcmp(freq, "daily") ? 1 : 7) * interval * DAY;
        for (int64_t k = 0; k < STEPS_MAX; k++) {
            int64_t t = start + k * step;
            if (t >= stop || (count >= 0 && n >= count))
                return 0;
            n++;
            if (cb(t, arg))
                return 0;
        }
        return -1;
    }
    if (!strcmp(freq, "weekly")) {
        static const char *const names[] = {"MO", "TU", "WE", "TH", "FR", "SA", "SU"};
        int on[7] = {0};
        size_t i;
        json_t *v;
        json_array_foreach(wd, i, v)
            for (int k = 0; k < 7; k++)
                if (json_is_string(v) && !strcmp(json_string_value(v), names[k]))
                    on[k] = 1;
        /* 1970-01-01 was a Thursday: day d is weekday (d + 3) mod 7, Monday 0 */
        int64_t monday = d0 - ((d0 % 7 + 7 + 3) % 7);
        for (int64_t w = 0; w < STEPS_MAX / 7; w++) {
            for (int k = 0; k < 7; k++) {
                int64_t day = monday + w * 7 * interval + k;
                if (!on[k] || day < d0)
                    continue;
                int64_t t = day * DAY + tod;
                if (t >= stop || (count >= 0 && n >= count))
                    return 0;
                n++;
                if (cb(t, arg))
                    return 0;
            }
        }
        return -1;
    }
    /* monthly */
    time_t st = (time_t)start;
    struct tm tm;
    gmtime_r(&st, &tm);
    for (int64_t k = 0; k < STEPS_MAX; k++) {
        int64_t months = (int64_t)tm.tm_mon + k * interval;
        int y = tm.tm_year + 1900 + (int)(months / 12), m = (int)(months % 12);
        if (tm.tm_mday > days_in_month(y, m))
            continue;
        struct tm o = {.tm_year = y - 1900, .tm_mon = m, .tm_mday = tm.tm_mday,
                       .tm_hour = tm.tm_hour, .tm_min = tm.tm_min, .tm_sec = tm.tm_sec};
        int64_t t = (int64_t)timegm(&o);
        if (t >= stop || (count >= 0 && n >= count))
            return 0;
        n++;
        if (cb(t, arg))
            return 0;
    }
    return -1;
}

/* ---------------------------------------------------------------- instances */

typedef struct inst_job {
    app_ev_job e;
    int64_t from, to;
    /* PUT: the instance and its change */
    int64_t rid;
    json_t *body; /* borrowed: the request's */
    /* expansion */
    json_t *exceptions; /* {"<original start>": {changes, cancelled}} */
    json_t *data;
    int64_t duration;
    int truncated, found;
} inst_job;

static void inst_cleanup(inst_job *j)
{
    json_decref(j->exceptions);
    json_decref(j->data);
    j->exceptions = j->data = NULL;
}

static json_t *instance_json(const inst_job *j, int64_t t, const json_t *exc)
{
    const json_t *ev = j->e.before;
    char s[32], e[32];
    app_format_time(t, s);
    app_format_time(t + j->duration, e);
    json_t *o = json_pack("{s:I,s:s,s:o,s:O,s:O,s:O,s:b}", "recurrence_id", (json_int_t)t,
                          "starts_at", s, "ends_at", j->duration ? json_string(e) : json_null(),
                          "title", json_object_get(ev, "title"), "description",
                          json_object_get(ev, "description"), "location",
                          json_object_get(ev, "location"), "exception", exc != NULL);
    if (exc)
        json_object_update(o, json_object_get(exc, "changes"));
    return o;
}

static int collect(int64_t t, void *arg)
{
    inst_job *j = arg;
    if (t + (j->duration ? j->duration : 1) <= j->from)
        return 0;
    char key[32];
    snprintf(key, sizeof(key), "%lld", (long long)t);
    json_t *exc = json_object_get(j->exceptions, key);
    if (exc && json_is_true(json_object_get(exc, "cancelled")))
        return 0;
    if (json_array_size(j->data) >= instances_max) {
        j->truncated = 1;
        return 1;
    }
    json_array_append_new(j->data, instance_json(j, t, exc));
    return 0;
}

static int load_exceptions(keel_db_conn *c, inst_job *j)
{
    json_decref(j->exceptions);
    j->exceptions = json_object();
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->e.id)};
    keel_db_rows *rows;
    int rc = keel_db_query(c, "SELECT original_start, changes, cancelled FROM event_exceptions "
                              "WHERE event_id = $1 LIMIT 100000",
                           p, 1, &rows);
    if (rc < 0)
        return rc;
    while ((rc = keel_db_rows_next(rows)) == 1) {
        char key[32];
        snprintf(key, sizeof(key), "%lld", (long long)keel_db_get_int(rows, 0));
        keel_str ch = keel_db_get_text(rows, 1);
        json_t *changes = json_loadb(ch.ptr ? ch.ptr : "{}", ch.len, 0, NULL);
        json_object_set_new(j->exceptions, key,
                            json_pack("{s:o,s:b}", "changes", changes ? changes : json_object(),
                                      "cancelled", keel_db_get_bool(rows, 2)));
    }
    keel_db_rows_free(rows);
    return rc < 0 ? rc : 0;
}

/* Loads the event and its series' shape (start, duration). */
static int load_series(keel_db_conn *c, inst_job *j, int64_t *start)
{
    int rc = app_ev_load(c, &j->e);
    if (rc < 0)
        return rc;
    json_t *sa = json_object_get(j->e.before, "starts_at"),
           *ea = json_object_get(j->e.before, "ends_at");
    int64_t end = 0;
    app_parse_time(json_string_value(sa), json_string_length(sa), start);
    j->duration = json_is_string(ea) && app_parse_time(json_string_value(ea),
                                                       json_string_length(ea), &end) == 0
                      ? end - *start
                      : 0;
    return load_exceptions(c, j);
}

static int db_instances(keel_db_conn *c, void *arg)
{
    inst_job *j = arg;
    inst_cleanup(j);
    int64_t start = 0;
    int rc = load_series(c, j, &start);
    if (rc < 0)
        return rc;
    j->data = json_array();
    j->truncated = 0;
    json_t *rule = json_object_get(j->e.before, "recurrence");
    if (json_is_object(rule)) {
        if (expand(rule, start, j->to, collect, j) < 0)
            return app_ev_refuse(&j->e, 422, "the range is too far from the series' start; "
                                             "ask for a range nearer to it");
    } else if (start < j->to) {
        collect(start, j);
    }
    j->e.out = json_pack("{s:O,s:b}", "data", j->data, "truncated", j->truncated);
    return 0;
}

static void inst_done(keel_req *r, void *arg, int status)
{
    inst_cleanup(arg);
    app_ev_done(r, arg, status);
}

/* The query's [from, to): 0, or -1 after answering 422. */
static int read_range(keel_req *r, int64_t *from, int64_t *to)
{
    json_t *q = keel_req_query_json(r);
    json_t *f = json_object_get(q, "from"), *t = json_object_get(q, "to");
    if (app_parse_time(json_string_value(f), json_string_length(f), from) < 0 ||
        app_parse_time(json_string_value(t), json_string_length(t), to) < 0) {
        app_invalid(r, "/query/from", "from and to are required RFC 3339 date-times");
        return -1;
    }
    if (*to <= *from) {
        app_invalid(r, "/query/to", "must be after from");
        return -1;
    }
    return 0;
}

static keel_flow h_instances(keel_req *r)
{
    inst_job *j = app_ev_job_new(r, sizeof(inst_job));
    if (read_range(r, &j->from, &j->to) < 0)
        return KEEL_DONE;
    return keel_db_job_run(r, app_ev_db, db_instances, inst_done, j);
}

/* ---------------------------------------------------------------- exceptions */

static int find(int64_t t, void *arg)
{
    inst_job *j = arg;
    if (t == j->rid)
        j->found = 1;
    return t >= j->rid;
}

static int db_exception(keel_db_conn *c, void *arg)
{
    inst_job *j = arg;
    inst_cleanup(j);
    int64_t start = 0;
    int rc = load_series(c, j, &start);
    if (rc < 0 || (rc = app_ev_check_change(&j->e, 0)) < 0)
        return rc;
    json_t *rule = json_object_get(j->e.before, "recurrence");
    j->found = 0;
    if (!json_is_object(rule))
        return app_ev_refuse(&j->e, 409, "the event does not recur");
    if (expand(rule, start, j->rid + 1, find, j) < 0 || !j->found)
        return app_ev_refuse(&j->e, 404, "the series has no instance starting then");
    json_t *changes = json_deep_copy(j->body);
    int cancelled = json_is_true(json_object_get(changes, "cancelled"));
    json_object_del(changes, "cancelled");
    /* the instance as it would be: its end after its start */
    json_t *inst = instance_json(j, j->rid, NULL);
    json_object_update(inst, changes);
    int64_t s = 0, e = 0;
    json_t *ss = json_object_get(inst, "starts_at"), *es = json_object_get(inst, "ends_at");
    app_parse_time(json_string_value(ss), json_string_length(ss), &s);
    if (json_is_string(es) &&
        app_parse_time(json_string_value(es), json_string_length(es), &e) == 0 && e <= s) {
        json_decref(changes);
        json_decref(inst);
        return app_ev_refuse(&j->e, 422, "the instance's ends_at must be after its starts_at");
    }
    json_object_set_new(inst, "exception", json_true());
    json_object_set_new(inst, "cancelled", json_boolean(cancelled));
    char key[32];
    snprintf(key, sizeof(key), "%lld", (long long)j->rid);
    json_t *before = json_object_get(j->exceptions, key);
    char *text = json_dumps(changes, JSON_COMPACT | JSON_SORT_KEYS);
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->e.id), KEEL_DB_P_INT(j->rid),
                         KEEL_DB_P_TEXT(text ? text : "{}"), KEEL_DB_P_BOOL(cancelled),
                         KEEL_DB_P_INT(app_now())};
    if ((rc = keel_db_exec(c, "DELETE FROM event_exceptions WHERE event_id = $1 AND "
                              "original_start = $2",
                           p, 2, NULL)) == 0)
        rc = keel_db_exec(c,
                          "INSERT INTO event_exceptions (event_id, original_start, changes, "
                          "cancelled, updated_at) VALUES ($1, $2, $3, $4, $5)",
                          p, 5, NULL);
    free(text);
    json_t *after = json_pack("{s:O,s:b}", "changes", changes, "cancelled", cancelled);
    json_t *diff = json_pack("{s:{s:I},s:{s:O,s:O}}", "recurrence_id", "to", (json_int_t)j->rid,
                             "exception", "from", before ? before : json_null(), "to", after);
    if (rc == 0) { /* its materialised row, when the sweep wrote one */
        int64_t me = 0;
        int has_end = json_is_string(es) &&
                      app_parse_time(json_string_value(es), json_string_length(es), &me) == 0;
        const char *title = json_string_value(json_object_get(inst, "title")),
                   *desc = json_string_value(json_object_get(inst, "description")),
                   *loc = json_string_value(json_object_get(inst, "location"));
        keel_db_param u[] = {KEEL_DB_P_INT(s),
                             has_end ? KEEL_DB_P_INT(me) : KEEL_DB_P_NULL(),
                             KEEL_DB_P_TEXT(title ? title : ""),
                             KEEL_DB_P_TEXT(desc ? desc : ""),
                             KEEL_DB_P_TEXT(loc ? loc : ""),
                             KEEL_DB_P_BOOL(cancelled),
                             KEEL_DB_P_INT(app_now()),
                             KEEL_DB_P_TEXT(j->e.id),
                             KEEL_DB_P_INT(j->rid)};
        rc = keel_db_exec(c,
                          "UPDATE event_instances SET starts_at = $1, ends_at = $2, title = $3, "
                          "description = $4, location = $5, exception = TRUE, cancelled = $6, "
                          "updated_at = $7 WHERE event_id = $8 AND recurrence_id = $9",
                          u, 9, NULL);
    }
    if (rc == 0)
        rc = app_audit_append(c, &j->e.who, "event.instance", "event", j->e.id, diff);
    json_decref(diff);
    json_decref(after);
    json_decref(changes);
    j->e.out = inst;
    return rc;
}

static keel_flow h_exception(keel_req *r)
{
    json_t *body = app_json_body(r);
    if (!body)
        return KEEL_DONE;
    inst_job *j = app_ev_job_new(r, sizeof(inst_job));
    j->body = body;
    keel_str rid = keel_req_param(r, "rid");
    char buf[24];
    snprintf(buf, sizeof(buf), "%.*s", (int)(rid.len < 20 ? rid.len : 20), rid.ptr);
    char *end;
    j->rid = strtoll(buf, &end, 10);
    if (!*buf || *end) {
        keel_respond_problem(r, 404, "an instance is named by its original start (Unix seconds)");
        return KEEL_DONE;
    }
    return keel_db_job_run_tx(r, app_ev_db, db_exception, inst_done, j);
}


/* ---------------------------------------------------------------- materialised */

typedef struct mat_job {
    inst_job ij;
    keel_db_conn *c;
    int64_t now;
    size_t written;
    int rc;
} mat_job;

static int materialise_one(int64_t t, void *arg)
{
    mat_job *m = arg;
    inst_job *j = &m->ij;
    if (t + (j->duration ? j->duration : 1) <= m->now)
        return 0;
    if (m->written >= instances_max)
        return 1;
    char key[32];
    snprintf(key, sizeof(key), "%lld", (long long)t);
    const json_t *exc = json_object_get(j->exceptions, key);
    json_t *inst = instance_json(j, t, exc);
    int64_t s = t, e = 0;
    json_t *ss = json_object_get(inst, "starts_at"), *es = json_object_get(inst, "ends_at");
    app_parse_time(json_string_value(ss), json_string_length(ss), &s);
    int has_end = json_is_string(es) &&
                  app_parse_time(json_string_value(es), json_string_length(es), &e) == 0;
    const char *title = json_string_value(json_object_get(inst, "title")),
               *desc = json_string_value(json_object_get(inst, "description")),
               *loc = json_string_value(json_object_get(inst, "location"));
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->e.id),
                         KEEL_DB_P_INT(t),
                         KEEL_DB_P_INT(s),
                         has_end ? KEEL_DB_P_INT(e) : KEEL_DB_P_NULL(),
                         KEEL_DB_P_TEXT(title ? title : ""),
                         KEEL_DB_P_TEXT(desc ? desc : ""),
                         KEEL_DB_P_TEXT(loc ? loc : ""),
                         KEEL_DB_P_BOOL(exc != NULL),
                         KEEL_DB_P_BOOL(exc && json_is_true(json_object_get(exc, "cancelled"))),
                         KEEL_DB_P_INT(m->now)};
    m->rc = keel_db_exec(m->c,
                         "INSERT INTO event_instances (event_id, recurrence_id, starts_at, ends_at, "
                         "title, description, location, exception, cancelled, updated_at) VALUES "
                         "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                         p, 10, NULL);
    json_decref(inst);
    m->written++;
    return m->rc < 0;
}

/* in one transaction: one series' rows from now on, written again */
static int tx_materialise(keel_db_conn *c, void *arg)
{
    mat_job *m = arg;
    inst_job *j = &m->ij;
    inst_cleanup(j);
    m->c = c;
    m->rc = 0;
    m->written = 0;
    int64_t start = 0;
    int rc = load_series(c, j, &start);
    if (rc == EV_REFUSED) /* gone meanwhile */
        return 0;
    if (rc < 0)
        return rc;
    keel_db_param d[] = {KEEL_DB_P_TEXT(j->e.id), KEEL_DB_P_INT(m->now)};
    /* what has not ended yet is rewritten; the past stays as it was */
    rc = keel_db_exec(c,
                      "DELETE FROM event_instances WHERE event_id = $1 AND "
                      "COALESCE(ends_at, starts_at + 1) > $2",
                      d, 2, NULL);
    if (rc < 0)
        return rc;
    json_t *rule = json_object_get(j->e.before, "recurrence");
    if (!json_is_object(rule))
        return 0;
    if (expand(rule, start, m->now + horizon_s, materialise_one, m) < 0)
        keel_log(KEEL_LOG_WARN, "events: a series is too far from its start to materialise",
                 "{s:s}", "event_id", j->e.id);
    return m->rc < 0 ? m->rc : 0;
}

int app_events_run_recurrence(keel_db_conn *c, int64_t now, json_t **report)
{
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           "SELECT id FROM events WHERE recurrence IS NOT NULL AND deleted_at IS "
                           "NULL ORDER BY id LIMIT 100000",
                           NULL, 0, &rows);
    if (rc < 0)
        return rc;
    json_t *ids = json_array();
    while ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str id = keel_db_get_text(rows, 0);
        json_array_append_new(ids, json_stringn(id.ptr, id.len));
    }
    keel_db_rows_free(rows);
    size_t series = 0, instances = 0, i;
    json_t *v;
    json_array_foreach(ids, i, v) {
        if (rc < 0)
            break;
        mat_job m;
        memset(&m, 0, sizeof(m));
        m.now = now;
        snprintf(m.ij.e.who.kind, sizeof(m.ij.e.who.kind), "system");
        snprintf(m.ij.e.who.id, sizeof(m.ij.e.who.id), "recurrence");
        m.ij.e.who.admin = 1;
        snprintf(m.ij.e.id, sizeof(m.ij.e.id), "%s", json_string_value(v));
        rc = keel_db_tx(c, tx_materialise, &m);
        inst_cleanup(&m.ij);
        json_decref(m.ij.e.before);
        json_decref(m.ij.e.out);
        json_decref(m.ij.e.err_extra);
        if (rc >= 0) {
            series++;
            instances += m.written;
        }
    }
    json_decref(ids);
    if (rc < 0)
        return rc;
    *report = json_pack("{s:I,s:I}", "series", (json_int_t)series, "instances",
                        (json_int_t)instances);
    return 0;
}

typedef struct cal_job {
    app_ev_job e;
    int64_t from, to;
    json_t *data;
    int truncated;
} cal_job;

static int db_calendar(keel_db_conn *c, void *arg)
{
    cal_job *j = arg;
    json_decref(j->data);
    j->data = json_array();
    j->truncated = 0;
    char where[1000] = "e.deleted_at IS NULL AND NOT i.cancelled AND i.starts_at < $1 AND "
                       "COALESCE(i.ends_at, i.starts_at + 1) > $2";
    keel_db_param p[6] = {KEEL_DB_P_INT(j->to), KEEL_DB_P_INT(j->from)};
    size_t n = app_ev_visible_sql(&j->e.who, app_now(), p, 2, where, sizeof(where));
    p[n++] = KEEL_DB_P_INT((int64_t)instances_max + 1);
    char sql[1600];
    snprintf(sql, sizeof(sql),
             "SELECT i.event_id, i.recurrence_id, i.starts_at, i.ends_at, i.title, "
             "i.description, i.location, i.exception FROM event_instances i JOIN events e ON "
             "e.id = i.event_id WHERE %s ORDER BY i.starts_at, i.event_id LIMIT $%zu",
             where, n);
    keel_db_rows *rows;
    int rc = keel_db_query(c, sql, p, n, &rows);
    if (rc < 0)
        return rc;
    while ((rc = keel_db_rows_next(rows)) == 1) {
        if (json_array_size(j->data) >= instances_max) {
            j->truncated = 1;
            break;
        }
        json_array_append_new(
            j->data, json_pack("{s:o,s:I,s:o,s:o,s:o,s:o,s:o,s:b}", "event_id",
                               app_ev_text(rows, 0), "recurrence_id",
                               (json_int_t)keel_db_get_int(rows, 1), "starts_at",
                               app_ev_time(rows, 2), "ends_at", app_ev_time(rows, 3), "title",
                               app_ev_text(rows, 4), "description", app_ev_text(rows, 5),
                               "location", app_ev_text(rows, 6), "exception",
                               keel_db_get_bool(rows, 7)));
    }
    keel_db_rows_free(rows);
    if (rc < 0)
        return rc;
    j->e.out = json_pack("{s:O,s:b}", "data", j->data, "truncated", j->truncated);
    return 0;
}

static void cal_done(keel_req *r, void *arg, int status)
{
    cal_job *j = arg;
    json_decref(j->data);
    j->data = NULL;
    app_ev_done(r, arg, status);
}

static keel_flow h_calendar(keel_req *r)
{
    cal_job *j = app_ev_job_new(r, sizeof(cal_job));
    if (read_range(r, &j->from, &j->to) < 0)
        return KEEL_DONE;
    return keel_db_job_run(r, app_ev_db, db_calendar, cal_done, j);
}

/* ---------------------------------------------------------------- routes */

#define S_TIME "{\"type\":\"string\",\"format\":\"date-time\"}"

static const keel_route recurrence_routes[] = {
    {.name = "events.calendar", .method = "GET", .path = "/api/v1/event-instances",
     .handler = h_calendar,
     .summary = "Materialised instances of every recurring event the caller may see, overlapping "
                "[from, to), by start",
     .auth = "any", .permission = "events:read",
     .query_schema = "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"from\","
                     "\"to\"],\"properties\":{\"from\":" S_TIME ",\"to\":" S_TIME "}}"},
    {.name = "events.instances", .method = "GET", .path = "/api/v1/events/:id/instances",
     .handler = h_instances,
     .summary = "The instances of a recurring event overlapping [from, to), exceptions applied",
     .auth = "any", .permission = "events:read",
     .query_schema = "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"from\","
                     "\"to\"],\"properties\":{\"from\":" S_TIME ",\"to\":" S_TIME "}}"},
    {.name = "events.instance", .method = "PUT",
     .path = "/api/v1/events/:id/instances/:rid", .handler = h_exception,
     .summary = "Change or cancel one instance of a series (an exception)", .auth = "any",
     .permission = "events:write",
     .request_schema = "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
                       "\"title\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":200},"
                       "\"description\":{\"type\":\"string\",\"maxLength\":10000},"
                       "\"location\":{\"type\":\"string\",\"maxLength\":500},"
                       "\"starts_at\":" S_TIME ",\"ends_at\":" S_TIME ","
                       "\"cancelled\":{\"type\":\"boolean\"}}}"},
};

int app_event_recurrence_setup(keel_service *svc, size_t max)
{
    instances_max = max;
    const app_options *o = app_options_of(svc);
    horizon_s = (int64_t)(o->events_recurrence_horizon_ms / 1000);
    if (app_ev_schedule_sweep(svc, "events.recurrence", o->events_recurrence_schedule,
                              app_events_run_recurrence) < 0)
        return -1;
    return keel_service_add_routes(svc, recurrence_routes,
                                   sizeof(recurrence_routes) / sizeof(recurrence_routes[0]));
}
