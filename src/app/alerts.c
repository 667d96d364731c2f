/* alerts.c — the reference service's alerting: rules over keel's own
 * metrics (the engine is keel/alerts.h), evaluated every
 * ALERT_EVAL_INTERVAL by one instance at a time, their state and history
 * in the database, and notifications by webhook and live push.
 *
 * The evaluator. Worker 0 runs a timer. Each tick it takes (or extends)
 * the lock "alerts:evaluator" (keel/lock.h: Redis with several instances;
 * TTL three intervals, so when the holder dies another instance takes
 * over within that), then runs one evaluation on the work pool with a
 * database connection of its own: it reads the rules and the open
 * episodes, samples the metrics, steps each rule's state machine and
 * writes what changed before anything is sent — a crash between the two
 * loses a notification rather than repeating one. Because the state lives
 * in the database (started_at of a pending alert, fired_at and
 * last_notified_at of a firing one), a restart or a takeover neither
 * resets a `for` timer nor fires again; the new evaluator only has to fill
 * its windows again, and without data nothing changes. An instance that
 * does not hold the lock reads the active alerts, for its health check.
 *
 * Delivery. Notifications of one rule in one tick go as one payload
 * (grouped by rule) to ALERT_WEBHOOK_URL through the outbound client
 * (keel/http_client.h): POST, retried with backoff (safe: every payload
 * carries an Idempotency-Key that stays the same across retries), and to
 * the live-push listener (app_alerts_set_listener) on the loop.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "app/alerts_internal.h"

#define LOCK_NAME "alerts:evaluator"

/* ---------------------------------------------------------------- config */

#define AT(f) KEEL_CONFIG_AT(alerts_options, f)
static const keel_config_var alert_vars[] = {
    {.name = "ALERTS_ENABLED", .type = KEEL_CONFIG_BOOL, .def = "true", AT(enabled),
     .help = "evaluate the alert rules (the admin API answers either way)"},
    {.name = "ALERT_EVAL_INTERVAL", .type = KEEL_CONFIG_DURATION, .def = "15s",
     AT(interval_ms), .min = 100, .max = 3600000,
     .help = "how often the rules are evaluated (by one instance at a time: the lock "
             "alerts:evaluator, held three intervals)"},
    {.name = "ALERT_WEBHOOK_URL", .type = KEEL_CONFIG_STR, .def = "", AT(webhook_url),
     .flags = KEEL_CONFIG_SECRET,
     .help = "http(s) URL that receives firing and resolved notifications as JSON (POST, "
             "Idempotency-Key header); empty = no webhook"},
    {.name = "ALERT_WEBHOOK_TIMEOUT", .type = KEEL_CONFIG_DURATION, .def = "5s",
     AT(webhook_timeout_ms), .min = 100, .max = 120000,
     .help = "one attempt of a webhook delivery"},
    {.name = "ALERT_WEBHOOK_ATTEMPTS", .type = KEEL_CONFIG_UINT, .def = "5",
     AT(webhook_attempts), .min = 1, .max = 20,
     .help = "attempts of a webhook delivery (full-jitter backoff from 500 ms to 30 s) on a "
             "timeout, a lost connection or 429/502/503/504"},
    {.name = "ALERT_SEND_RESOLVED", .type = KEEL_CONFIG_BOOL, .def = "true",
     AT(send_resolved), .help = "notify when a firing alert resolves"},
    {.name = "ALERT_HISTORY_RETENTION", .type = KEEL_CONFIG_DURATION, .def = "30d",
     AT(retention_ms), .max = 86400000ull * 3650,
     .help = "resolved alerts older than this are deleted (checked once a minute by the "
             "evaluator); 0 = kept for ever"},
    {.name = "ALERT_EMAIL_TO", .type = KEEL_CONFIG_STR, .def = "", AT(email_to),
     .help = "addresses that get every alert notification by e-mail (comma-separated; through "
             "the mail queue, template alert, class alert); empty = none"},
    {.name = "ALERT_EMAIL_LINK", .type = KEEL_CONFIG_STR, .def = "/dashboard",
     AT(email_link),
     .help = "the link in alert e-mails: set it to the dashboard's public URL"},
};
#undef AT

/* Calls fn(address, arg) for each address of the ALERT_EMAIL_TO list
 * (trimmed, empty items skipped); stops at fn's first non-zero. */
static int each_address(const char *list, int (*fn)(const char *addr, void *arg), void *arg)
{
    for (const char *s = list ? list : ""; *s;) {
        size_t n = strcspn(s, ",");
        const char *a = s, *b = s + n;
        s = *b ? b + 1 : b;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (a == b)
            continue;
        char addr[320];
        snprintf(addr, sizeof(addr), "%.*s", (int)(b - a), a);
        int rc = fn(addr, arg);
        if (rc)
            return rc;
    }
    return 0;
}

static int address_bad(const char *addr, void *arg)
{
    FILE *err = arg;
    if (keel_mail_address_ok(addr))
        return 0;
    fprintf(err, "keel: ALERT_EMAIL_TO: %s is not an e-mail address\n", addr);
    return 1;
}

static int alerts_validate(void *opts, const keel_config *cfg, FILE *err)
{
    (void)cfg;
    alerts_options *o = opts;
    if (o->webhook_url && *o->webhook_url && strncmp(o->webhook_url, "http://", 7) &&
        strncmp(o->webhook_url, "https://", 8)) {
        fprintf(err, "keel: ALERT_WEBHOOK_URL: must be an http:// or https:// URL\n");
        return KEEL_ECONFIG;
    }
    if (each_address(o->email_to, address_bad, err))
        return KEEL_ECONFIG;
    return 0;
}

const keel_config_module app_alerts_config = KEEL_CONFIG_MODULE(
    "alerts",
    "Alert rules over the service's own metrics: evaluation, webhook delivery "
    "(src/app/alerts.c; docs/observability.md).",
    alerts_options, alert_vars, alerts_validate);

/* ---------------------------------------------------------------- state */

typedef struct slot {
    keel_alert_rule rule;
    char *spec; /* the stored JSON, to see an edit (which restarts the window) */
    keel_alert_ring *ring;
    int64_t last_notified;
    int seen;
} slot;

static struct {
    keel_service *svc;
    keel_db *db;
    keel_locks *locks;
    keel_http_client *http;
    const alerts_options *o;
    const keel_config *cfg;
    const char *db_url;
    keel_alert_env env;
    /* worker 0's loop */
    keel_worker *w;
    uv_timer_t timer;
    int timer_on, busy, leader, stopping;
    char token[KEEL_LOCK_TOKEN_LEN + 1];
    /* the evaluation (one at a time, on a pool thread) */
    keel_db_conn *conn;
    slot *slots;
    size_t nslots;
    int64_t pruned_at;
    /* what health and /metrics/alerts read */
    pthread_mutex_t mu;
    json_t *active;
    int64_t last_eval;
    app_alerts_listener_fn listener;
    void *listener_arg;
    keel_metric *m_notifications, *m_evaluations;
} A = {.mu = PTHREAD_MUTEX_INITIALIZER};

const alerts_options *alerts_options_get(void)
{
    return A.o;
}
keel_db *alerts_db(void)
{
    return A.db;
}

void app_alerts_set_listener(app_alerts_listener_fn fn, void *arg)
{
    A.listener = fn;
    A.listener_arg = arg;
}

int64_t alerts_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

json_t *alerts_time_json(int64_t ms)
{
    if (ms <= 0)
        return json_null();
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char buf[96];
    snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    return json_string(buf);
}

static json_t *text_or_null(const keel_db_rows *rows, size_t col)
{
    if (keel_db_is_null(rows, col))
        return json_null();
    keel_str s = keel_db_get_text(rows, col);
    return json_stringn(s.ptr, s.len);
}

static int64_t int_or_0(const keel_db_rows *rows, size_t col)
{
    return keel_db_is_null(rows, col) ? 0 : keel_db_get_int(rows, col);
}

json_t *alerts_row_json(const keel_db_rows *rows)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", text_or_null(rows, 0));
    json_object_set_new(o, "rule_id", text_or_null(rows, 1));
    json_object_set_new(o, "rule_name", text_or_null(rows, 2));
    json_object_set_new(o, "severity", text_or_null(rows, 3));
    json_object_set_new(o, "state", text_or_null(rows, 4));
    json_object_set_new(o, "value", keel_db_is_null(rows, 5) ? json_null()
                                                             : json_real(keel_db_get_double(rows, 5)));
    json_object_set_new(o, "started_at", alerts_time_json(int_or_0(rows, 6)));
    json_object_set_new(o, "fired_at", alerts_time_json(int_or_0(rows, 7)));
    json_object_set_new(o, "resolved_at", alerts_time_json(int_or_0(rows, 8)));
    json_object_set_new(o, "acknowledged_at", alerts_time_json(int_or_0(rows, 9)));
    json_object_set_new(o, "acknowledged_by", text_or_null(rows, 10));
    json_object_set_new(o, "notified", json_boolean(int_or_0(rows, 11) > 0));
    return o;
}

/* ---------------------------------------------------------------- database */

/* Set once the built-in rules are known to be in the database (a
 * rule deleted from it by hand comes back at the next start). */
static int seeded_once;

int alerts_seed(keel_db_conn *c)
{
    if (__atomic_load_n(&seeded_once, __ATOMIC_ACQUIRE))
        return 0;
    const keel_alert_rule *b;
    size_t n = keel_alert_builtin_rules(&b);
    int64_t now = alerts_now_ms();
    for (size_t i = 0; i < n; i++) {
        json_t *j = keel_alert_rule_to_json(&b[i]);
        json_object_del(j, "builtin");
        char *spec = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(j);
        keel_db_param p[] = {KEEL_DB_P_TEXT(b[i].id), KEEL_DB_P_TEXT(b[i].name),
                             KEEL_DB_P_TEXT(spec), KEEL_DB_P_INT(now)};
        int rc = keel_db_exec(c,
                              "INSERT INTO alert_rules (id, name, spec, builtin, created_at, "
                              "updated_at) VALUES ($1, $2, $3, TRUE, $4, $4) "
                              "ON CONFLICT (id) DO NOTHING",
                              p, 4, NULL);
        free(spec);
        if (rc < 0)
            return rc;
    }
    __atomic_store_n(&seeded_once, 1, __ATOMIC_RELEASE);
    return 0;
}

int alerts_load_active(keel_db_conn *c, json_t **out)
{
    *out = NULL;
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           "SELECT " ALERT_COLUMNS " FROM alerts WHERE state IN "
                           "('pending', 'firing') ORDER BY started_at DESC, id DESC LIMIT 1000",
                           NULL, 0, &rows);
    if (rc < 0)
        return rc;
    json_t *arr = json_array();
    while ((rc = keel_db_rows_next(rows)) == 1)
        json_array_append_new(arr, alerts_row_json(rows));
    keel_db_rows_free(rows);
    if (rc < 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

/* Reads the rules into A.slots (keeping the windows of unchanged ones). */
static int load_rules(keel_db_conn *c)
{
    keel_db_rows *rows;
    int rc = keel_db_query(c, "SELECT id, spec, builtin, last_notified_at FROM alert_rules "
                              "ORDER BY id LIMIT 1000",
                           NULL, 0, &rows);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < A.nslots; i++)
        A.slots[i].seen = 0;
    while ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str spec = keel_db_get_text(rows, 1);
        json_t *j = json_loadb(spec.ptr, spec.len, 0, NULL);
        keel_alert_rule r;
        char err[160];
        const char *ptr;
        if (!j || keel_alert_rule_from_json(j, &r, err, sizeof(err), &ptr) < 0) {
            keel_log(KEEL_LOG_WARN, "alerts: a stored rule is not valid", "{s:s%,s:s}", "rule",
                     keel_db_get_text(rows, 0).ptr, keel_db_get_text(rows, 0).len, "error",
                     j ? err : "not JSON");
            json_decref(j);
            continue;
        }
        json_decref(j);
        r.builtin = keel_db_get_bool(rows, 2);
        slot *s = NULL;
        for (size_t i = 0; i < A.nslots; i++)
            if (!strcmp(A.slots[i].rule.id, r.id))
                s = &A.slots[i];
        if (!s) {
            A.slots = keel_realloc(A.slots, (A.nslots + 1) * sizeof(slot));
            s = &A.slots[A.nslots++];
            memset(s, 0, sizeof(*s));
        }
        if (!s->spec || strlen(s->spec) != spec.len || memcmp(s->spec, spec.ptr, spec.len)) {
            keel_free(s->spec);
            s->spec = keel_strndup(spec.ptr, spec.len);
            keel_alert_ring_free(s->ring);
            s->ring = keel_alert_ring_new(&r, A.o->interval_ms);
        }
        s->rule = r;
        s->last_notified = int_or_0(rows, 3);
        s->seen = 1;
    }
    keel_db_rows_free(rows);
    /* rules gone: their slots go */
    size_t k = 0;
    for (size_t i = 0; i < A.nslots; i++) {
        if (A.slots[i].seen) {
            A.slots[k++] = A.slots[i];
        } else {
            keel_free(A.slots[i].spec);
            keel_alert_ring_free(A.slots[i].ring);
        }
    }
    A.nslots = k;
    return rc < 0 ? rc : 0;
}

typedef struct episode {
    char id[64];
    keel_alert_status st;
    int found;
} episode;

static int load_episode(keel_db_conn *c, const char *rule_id, episode *e)
{
    memset(e, 0, sizeof(*e));
    keel_db_param p[] = {KEEL_DB_P_TEXT(rule_id)};
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           "SELECT id, state, value, started_at, fired_at, last_active_at, "
                           "last_notified_at, acknowledged_at FROM alerts WHERE rule_id = $1 "
                           "AND state IN ('pending', 'firing') ORDER BY started_at DESC LIMIT 1",
                           p, 1, &rows);
    if (rc < 0)
        return rc;
    if ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str id = keel_db_get_text(rows, 0);
        snprintf(e->id, sizeof(e->id), "%.*s", (int)id.len, id.ptr);
        keel_str st = keel_db_get_text(rows, 1);
        char state[16];
        snprintf(state, sizeof(state), "%.*s", (int)st.len, st.ptr);
        int s = keel_alert_state_parse(state);
        e->st.state = s < 0 ? KEEL_ALERT_INACTIVE : (keel_alert_state)s;
        e->st.value = keel_db_is_null(rows, 2) ? 0 : keel_db_get_double(rows, 2);
        e->st.started_at = int_or_0(rows, 3);
        e->st.fired_at = int_or_0(rows, 4);
        e->st.last_active_at = int_or_0(rows, 5);
        e->st.last_notified_at = int_or_0(rows, 6);
        e->st.acknowledged_at = int_or_0(rows, 7);
        e->found = 1;
    }
    keel_db_rows_free(rows);
    return rc < 0 ? rc : 0;
}

static keel_db_param opt_int(int64_t v)
{
    return v ? KEEL_DB_P_INT(v) : KEEL_DB_P_NULL();
}

/* Writes an episode: a new row, an update, or (a pending alert that
 * cleared) its removal. */
static int save_episode(keel_db_conn *c, const keel_alert_rule *r, episode *e)
{
    if (e->st.state == KEEL_ALERT_INACTIVE) {
        if (!e->found)
            return 0;
        keel_db_param p[] = {KEEL_DB_P_TEXT(e->id)};
        e->found = 0;
        return keel_db_exec(c, "DELETE FROM alerts WHERE id = $1", p, 1, NULL);
    }
    const char *state = keel_alert_state_name(e->st.state);
    if (!e->found) {
        app_uuid(e->id);
        keel_db_param p[] = {KEEL_DB_P_TEXT(e->id),
                             KEEL_DB_P_TEXT(r->id),
                             KEEL_DB_P_TEXT(r->name),
                             KEEL_DB_P_TEXT(keel_alert_severity_name(r->severity)),
                             KEEL_DB_P_TEXT(state),
                             KEEL_DB_P_DOUBLE(e->st.value),
                             KEEL_DB_P_INT(e->st.started_at),
                             opt_int(e->st.fired_at),
                             opt_int(e->st.resolved_at),
                             KEEL_DB_P_INT(e->st.last_active_at),
                             opt_int(e->st.last_notified_at)};
        e->found = 1;
        return keel_db_exec(c,
                            "INSERT INTO alerts (id, rule_id, rule_name, severity, state, value, "
                            "started_at, fired_at, resolved_at, last_active_at, "
                            "last_notified_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
                            "$11)",
                            p, 11, NULL);
    }
    keel_db_param p[] = {KEEL_DB_P_TEXT(e->id),         KEEL_DB_P_TEXT(state),
                         KEEL_DB_P_DOUBLE(e->st.value), opt_int(e->st.fired_at),
                         opt_int(e->st.resolved_at),    KEEL_DB_P_INT(e->st.last_active_at),
                         opt_int(e->st.last_notified_at)};
    /* a manual resolve meanwhile wins: only an open row is updated */
    return keel_db_exec(c,
                        "UPDATE alerts SET state = $2, value = $3, fired_at = $4, "
                        "resolved_at = $5, last_active_at = $6, last_notified_at = $7 "
                        "WHERE id = $1 AND state IN ('pending', 'firing')",
                        p, 7, NULL);
}

static json_t *episode_json(keel_db_conn *c, const char *id)
{
    keel_db_param p[] = {KEEL_DB_P_TEXT(id)};
    keel_db_rows *rows;
    if (keel_db_query(c, "SELECT " ALERT_COLUMNS " FROM alerts WHERE id = $1", p, 1, &rows) < 0)
        return NULL;
    json_t *o = keel_db_rows_next(rows) == 1 ? alerts_row_json(rows) : NULL;
    keel_db_rows_free(rows);
    return o;
}

/* ---------------------------------------------------------------- notifications */

/* One payload: {version, status, repeat, rule, alerts, instance, sent_at}
 * and the Idempotency-Key it goes with. */
static json_t *payload(const keel_alert_rule *r, const char *status, int repeat,
                       json_t *alerts /* taken */, int64_t now)
{
    json_t *rule = keel_alert_rule_to_json(r);
    const char *aid = json_string_value(json_object_get(json_array_get(alerts, 0), "id"));
    char key[160];
    snprintf(key, sizeof(key), "%s:%s:%s:%lld", r->id, aid ? aid : "-", status, (long long)now);
    return json_pack("{s:s,s:s,s:b,s:o,s:o,s:s,s:o,s:s}", "version", "1", "status", status,
                     "repeat", repeat, "rule", rule, "alerts", alerts, "instance",
                     app_instance_id(), "sent_at", alerts_time_json(now), "idempotency_key",
                     key);
}

typedef struct delivery {
    char *body;
    char key[160];
    char rule[KEEL_ALERT_ID_MAX];
} delivery;

static void delivered(void *arg, int status, const keel_http_response *res)
{
    delivery *d = arg;
    int ok = status == 0 && res->status >= 200 && res->status < 300;
    const char *l[] = {ok ? "delivered" : "failed"};
    keel_metric_add(A.m_notifications, UINT32_MAX, l, 1);
    if (!ok)
        keel_log(KEEL_LOG_WARN, "alerts: webhook delivery failed", "{s:s,s:s,s:i,s:s,s:i}",
                 "rule", d->rule, "idempotency_key", d->key, "status", res->status, "error",
                 status < 0 ? res->error : "not 2xx", "attempts", (int)res->attempts);
    keel_free(d->body);
    keel_free(d);
}

static void bus_published(void *arg, int status)
{
    (void)arg;
    (void)status; /* Redis away: the dashboard polls (docs/observability.md) */
}

/* On w's loop: the live push (the listener, and the event bus channel
 * "alerts": the dashboard's stream forwards it), then the webhook. Takes p. */
static void deliver(keel_worker *w, json_t *p)
{
    if (A.listener)
        A.listener(w, p, A.listener_arg);
    keel_events *bus = keel_service_events(A.svc);
    char id[KEEL_EVENTS_ID_LEN + 1];
    if (bus)
        keel_events_publish(bus, w, "alerts", p, id, bus_published, NULL);
    const char *url = A.o ? A.o->webhook_url : NULL;
    if (url && *url && A.http) {
        delivery *d = keel_calloc(1, sizeof(*d));
        json_t *key = json_object_get(p, "idempotency_key");
        snprintf(d->key, sizeof(d->key), "%s", json_string_value(key));
        snprintf(d->rule, sizeof(d->rule), "%s",
                 json_string_value(json_object_get(json_object_get(p, "rule"), "id")));
        d->body = json_dumps(p, JSON_COMPACT);
        keel_http_header h[] = {{KEEL_STR("Content-Type"), KEEL_STR("application/json")},
                                {KEEL_STR("Idempotency-Key"), {d->key, strlen(d->key)}}};
        keel_http_call call = {.method = "POST", .url = url, .headers = h, .nheaders = 2,
                               .body = d->body, .body_len = strlen(d->body),
                               .timeout_ms = A.o->webhook_timeout_ms,
                               .retry = {.max_attempts = (unsigned)A.o->webhook_attempts,
                                         .base_ms = 500, .max_delay_ms = 30000},
                               .target = "alert_webhook", .flags = KEEL_HTTP_RETRY_UNSAFE};
        int rc = keel_http_request(A.http, w, &call, delivered, d);
        if (rc < 0) {
            keel_log(KEEL_LOG_WARN, "alerts: webhook not sent", "{s:s,s:s}", "rule", d->rule,
                     "error", keel_strerror(rc));
            const char *l[] = {"failed"};
            keel_metric_add(A.m_notifications, UINT32_MAX, l, 1);
            keel_free(d->body);
            keel_free(d);
        }
    }
    json_decref(p);
}

void alerts_notify_manual_resolve(keel_worker *w, const json_t *alert, const json_t *rule)
{
    if (!A.o || !A.o->send_resolved || !json_is_true(json_object_get(alert, "notified")))
        return;
    keel_alert_rule r;
    char err[160];
    const char *ptr;
    if (!rule || keel_alert_rule_from_json(rule, &r, err, sizeof(err), &ptr) < 0)
        return;
    deliver(w, payload(&r, "resolved", 0, json_pack("[O]", alert), alerts_now_ms()));
}

/* ---------------------------------------------------------------- one evaluation */

/* One alert notification by e-mail to each ALERT_EMAIL_TO address: a
 * mail.send job on c (docs/mail.md), keyed by (alert, status, time,
 * address) so a retry of the evaluation's write does not mail twice. */
typedef struct alert_mail {
    keel_db_conn *c;
    const json_t *vars;
    char key[96];
    unsigned n;
} alert_mail;

static int mail_one(const char *addr, void *arg)
{
    alert_mail *m = arg;
    char key[128];
    snprintf(key, sizeof(key), "%s:%u", m->key, m->n++);
    int rc = app_mail_enqueue(m->c, addr, "alert", m->vars, key, "alert");
    if (rc < 0)
        keel_log(KEEL_LOG_WARN, "alerts: e-mail not enqueued", "{s:s,s:s}", "to", addr, "error",
                 keel_db_strerror(rc));
    return 0; /* the others still get theirs */
}

static void mail_alert(keel_db_conn *c, const keel_alert_rule *r, const char *alert_id,
                       const char *status, double value, int64_t now)
{
    if (!A.o->email_to || !*A.o->email_to)
        return;
    char title[300], message[400], at[40];
    snprintf(title, sizeof(title), "%s %s", r->name, status);
    snprintf(message, sizeof(message), "The rule %s (%s) is %s: value %g, trigger %g, clear %g.",
             r->name, r->id, status, value, r->trigger, r->clear);
    json_t *t = alerts_time_json(now);
    snprintf(at, sizeof(at), "%s", json_string_value(t) ? json_string_value(t) : "");
    json_decref(t);
    json_t *vars = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "title", title, "severity",
                             keel_alert_severity_name(r->severity), "service", app_instance_id(),
                             "at", at, "message", message, "link",
                             A.o->email_link ? A.o->email_link : "");
    alert_mail m = {.c = c, .vars = vars};
    snprintf(m.key, sizeof(m.key), "alert:%.40s:%s:%lld", alert_id, status, (long long)now);
    each_address(A.o->email_to, mail_one, &m);
    json_decref(vars);
}

typedef struct tick {
    int leader;
    int ok;         /* the evaluation ran to its end */
    json_t *notes;  /* payloads to deliver */
    json_t *active; /* the active alerts after the tick */
} tick;

static int evaluate(keel_db_conn *c, tick *t)
{
    int rc;
    if ((rc = alerts_seed(c)) < 0)
        return rc;
    if ((rc = load_rules(c)) < 0)
        return rc;
    int64_t now0 = alerts_now_ms();
    if (A.o->retention_ms && now0 - A.pruned_at >= 60000) {
        keel_db_param p[] = {KEEL_DB_P_INT(now0 - (int64_t)A.o->retention_ms)};
        int64_t gone = 0;
        if ((rc = keel_db_exec(c, "DELETE FROM alerts WHERE state = 'resolved' AND "
                                  "resolved_at < $1",
                               p, 1, &gone)) < 0)
            return rc;
        A.pruned_at = now0;
        if (gone)
            keel_log(KEEL_LOG_INFO, "alerts: old history deleted", "{s:I}", "alerts",
                     (json_int_t)gone);
    }
    json_t *snap = keel_metrics_json(keel_service_metrics(A.svc));
    int64_t now = alerts_now_ms();
    for (size_t i = 0; i < A.nslots && rc >= 0; i++) {
        slot *s = &A.slots[i];
        episode e;
        if ((rc = load_episode(c, s->rule.id, &e)) < 0)
            break;
        double v = 0;
        int have = 0;
        keel_alert_notify n = KEEL_ALERT_NOTIFY_NONE;
        int changed = 0;
        if (s->rule.enabled) {
            keel_alert_ring_push(s->ring, &s->rule, snap, &A.env, now);
            have = keel_alert_value(s->ring, &s->rule, now, &v);
            n = keel_alert_step(&s->rule, &e.st, now, have, v, s->last_notified,
                                A.o->send_resolved, &changed);
            keel_log(KEEL_LOG_DEBUG, "alerts: evaluated", "{s:s,s:b,s:f,s:s}", "rule",
                     s->rule.id, "data", have, "value", have ? v : 0.0, "state",
                     keel_alert_state_name(e.st.state));
        } else if (e.found) { /* disabled: its open episode ends */
            if (e.st.state == KEEL_ALERT_FIRING && e.st.last_notified_at && A.o->send_resolved)
                n = KEEL_ALERT_NOTIFY_RESOLVED;
            e.st.state = KEEL_ALERT_RESOLVED;
            e.st.resolved_at = now;
            changed = 1;
        }
        if (changed && (rc = save_episode(c, &s->rule, &e)) < 0)
            break;
        if (n == KEEL_ALERT_NOTIFY_NONE)
            continue;
        keel_db_param p[] = {KEEL_DB_P_TEXT(s->rule.id), KEEL_DB_P_INT(now)};
        if ((rc = keel_db_exec(c, "UPDATE alert_rules SET last_notified_at = $2 WHERE id = $1",
                               p, 2, NULL)) < 0)
            break;
        s->last_notified = now;
        json_t *a = episode_json(c, e.id);
        if (!a)
            continue;
        json_array_append_new(t->notes,
                              payload(&s->rule, n == KEEL_ALERT_NOTIFY_RESOLVED ? "resolved"
                                                                                : "firing",
                                      n == KEEL_ALERT_NOTIFY_REPEAT, json_pack("[o]", a), now));
        mail_alert(c, &s->rule, e.id,
                   n == KEEL_ALERT_NOTIFY_RESOLVED ? "resolved" : "firing", v, now);
        keel_log(KEEL_LOG_INFO, "alerts: notification", "{s:s,s:s,s:s,s:f}", "rule",
                 s->rule.id, "alert", e.id,
                 "status", n == KEEL_ALERT_NOTIFY_RESOLVED ? "resolved"
                           : n == KEEL_ALERT_NOTIFY_REPEAT ? "repeat"
                                                           : "firing",
                 "value", v);
    }
    json_decref(snap);
    return rc;
}

static void eval_work(void *arg)
{
    tick *t = arg;
    if (!A.conn) {
        char err[256] = "";
        if (keel_db_connect(A.db_url, A.cfg, &A.conn, err, sizeof(err)) < 0) {
            keel_log(KEEL_LOG_WARN, "alerts: no database connection", "{s:s}", "error", err);
            A.conn = NULL;
            return;
        }
    }
    int rc = t->leader ? evaluate(A.conn, t) : 0;
    if (rc >= 0)
        rc = alerts_load_active(A.conn, &t->active);
    t->ok = rc >= 0;
    if (rc < 0) {
        keel_log(KEEL_LOG_WARN, "alerts: evaluation failed", "{s:s,s:s}", "error",
                 keel_db_strerror(rc), "detail", keel_db_errmsg(A.conn));
        if (rc == KEEL_EDB_UNAVAILABLE) { /* connect again next time */
            keel_db_disconnect(A.conn);
            A.conn = NULL;
        }
    }
}

static void eval_after(void *arg, int status)
{
    tick *t = arg;
    if (t->leader && status == 0) {
        const char *l[] = {t->ok ? "ok" : "failed"};
        keel_metric_add(A.m_evaluations, UINT32_MAX, l, 1);
    }
    if (t->active) {
        pthread_mutex_lock(&A.mu);
        json_decref(A.active);
        A.active = t->active;
        A.last_eval = alerts_now_ms();
        pthread_mutex_unlock(&A.mu);
        t->active = NULL;
    }
    size_t i;
    json_t *p;
    json_array_foreach(t->notes, i, p) {
        if (status == 0 && !A.stopping)
            deliver(A.w, json_incref(p));
    }
    json_decref(t->notes);
    keel_free(t);
    A.busy = 0;
}

static void submit(int leader)
{
    tick *t = keel_calloc(1, sizeof(*t));
    t->leader = leader;
    t->notes = json_array();
    if (A.stopping || keel_worker_submit(A.w, eval_work, eval_after, t) < 0) {
        json_decref(t->notes);
        keel_free(t);
        A.busy = 0;
    }
}

static void on_lock(void *arg, int status, const keel_lock_grant *g)
{
    (void)arg;
    if (status == 0) {
        if (!A.leader)
            keel_log(KEEL_LOG_INFO, "alerts: this instance evaluates the rules", "{s:s}",
                     "instance", app_instance_id());
        A.leader = 1;
        memcpy(A.token, g->token, sizeof(A.token));
    } else {
        if (A.leader)
            keel_log(KEEL_LOG_WARN, "alerts: lost the evaluator lock", "{s:s}", "error",
                     keel_strerror(status));
        A.leader = 0;
    }
    submit(A.leader);
}

static void on_tick(uv_timer_t *h)
{
    (void)h;
    if (A.busy || A.stopping)
        return;
    A.busy = 1;
    uint64_t ttl = A.o->interval_ms * 3;
    if (ttl < 1000)
        ttl = 1000;
    int rc = A.leader ? keel_lock_extend(A.locks, A.w, LOCK_NAME, A.token, ttl, on_lock, NULL)
                      : keel_lock_acquire(A.locks, A.w, LOCK_NAME, ttl, NULL, on_lock, NULL);
    if (rc < 0)
        on_lock(NULL, rc, NULL);
}

static void on_worker_start(keel_worker *w, void *arg)
{
    (void)arg;
    if (keel_worker_id(w) != 0)
        return;
    A.w = w;
    uv_timer_init(keel_worker_loop(w), &A.timer);
    uv_timer_start(&A.timer, on_tick, A.o->interval_ms, A.o->interval_ms);
    A.timer_on = 1;
}

static void on_worker_stop(keel_worker *w, void *arg)
{
    (void)arg;
    if (keel_worker_id(w) != 0 || !A.timer_on)
        return;
    A.stopping = 1;
    uv_timer_stop(&A.timer);
    uv_close((uv_handle_t *)&A.timer, NULL);
    A.timer_on = 0;
}

/* ---------------------------------------------------------------- health, /metrics/alerts */

static int check_alerts(void *arg, char *detail, size_t cap, json_t **data)
{
    (void)arg;
    pthread_mutex_lock(&A.mu);
    json_t *active = A.active ? json_deep_copy(A.active) : json_array();
    int64_t last = A.last_eval;
    pthread_mutex_unlock(&A.mu);
    size_t firing = 0, serious = 0, i;
    json_t *a;
    json_array_foreach(active, i, a) {
        const char *state = json_string_value(json_object_get(a, "state"));
        if (!state || strcmp(state, "firing"))
            continue;
        firing++;
        const char *sev = json_string_value(json_object_get(a, "severity"));
        if (!sev)
            continue;
        if (!strcmp(sev, "error") || !strcmp(sev, "critical"))
            serious++;
    }
    snprintf(detail, cap, "%zu firing, %zu pending%s", firing, json_array_size(active) - firing,
             A.leader ? " (this instance evaluates)" : "");
    *data = json_pack("{s:o,s:b,s:o}", "active", active, "evaluator", A.leader,
                      "last_refresh", alerts_time_json(last));
    return serious ? KEEL_HEALTH_WARN : KEEL_HEALTH_PASS;
}

/* ---------------------------------------------------------------- setup */

int app_alerts_setup(keel_service *svc)
{
    const keel_config *cfg = keel_service_config(svc);
    A.svc = svc;
    A.cfg = cfg;
    A.o = keel_config_get(cfg, &app_alerts_config);
    A.db = keel_service_db(svc);
    A.locks = keel_service_locks(svc);
    A.db_url = ((const keel_db_options *)keel_config_get(cfg, &keel_db_config))->database_url;
    A.env.memory_limit =
        ((const keel_health_options *)keel_config_get(cfg, &keel_health_config))->memory_limit;
    keel_metrics *m = keel_service_metrics(svc);
    static const char *const ol[] = {"outcome", NULL};
    A.m_notifications = keel_metrics_counter(m, "alert_notifications_total",
                                             "Alert webhook deliveries, by outcome", ol);
    keel_metric_declare_each(A.m_notifications, NULL, 0,
                             (const char *const[]){"delivered", "failed", NULL});
    A.m_evaluations = keel_metrics_counter(m, "alert_evaluations_total",
                                           "Evaluations of the alert rules run by this instance",
                                           ol);
    keel_metric_declare_each(A.m_evaluations, NULL, 0,
                             (const char *const[]){"ok", "failed", NULL});
    if (alerts_api_setup(svc) < 0)
        return -1;
    if (!A.db)
        return 0;
    keel_health_check hc = {.name = "alerts", .critical = 0, .data_fn = check_alerts,
                            .flags = KEEL_HEALTH_INLINE};
    keel_health_add(keel_service_health(svc), &hc);
    if (!A.o->enabled)
        return 0;
    if (A.o->webhook_url && *A.o->webhook_url &&
        keel_http_client_new(&A.http, keel_service_server(svc), cfg, m,
                             keel_service_breakers(svc)) < 0)
        return -1;
    keel_worker_hooks hooks = {.on_start = on_worker_start, .on_stop = on_worker_stop};
    keel_server_add_worker_hooks(keel_service_server(svc), &hooks);
    return 0;
}

void app_alerts_teardown(void)
{
    keel_http_client_free(A.http);
    A.http = NULL;
    if (A.conn)
        keel_db_disconnect(A.conn);
    A.conn = NULL;
    for (size_t i = 0; i < A.nslots; i++) {
        keel_free(A.slots[i].spec);
        keel_alert_ring_free(A.slots[i].ring);
    }
    keel_free(A.slots);
    A.slots = NULL;
    A.nslots = 0;
    json_decref(A.active);
    A.active = NULL;
}
