/* notify_push.c — push delivery of notifications (docs/notifications.md).
 *
 * app_notify enqueues one "notify.push" job per notification (queue
 * NOTIFY_QUEUE) when the user has push on and a device token. The job's
 * handler (synchronous, on a job runner thread with its own database
 * connection) sends the notification to every token of the user that has
 * no outcome recorded for it yet in notification_push_sent, through a
 * push provider (a table: build the request, classify the answer) over
 * keel's outbound HTTP client:
 *
 *   delivered       recorded: a retry of the job skips this token
 *   invalid_token   the provider says the token is dead: the token is
 *                   removed and the outcome recorded
 *   rejected        any other refusal (4xx): recorded and logged, not retried
 *   retry           no answer, 408, 429, 5xx: the job ends with
 *                   keel_job_retry once every token was tried, so the
 *                   queue's backoff applies and only the tokens without an
 *                   outcome are sent again
 *
 * The HTTP client runs on the server's worker loops, not on the job
 * runner's: the handler posts the call to a worker (round robin) with
 * keel_worker_post and waits on a condition variable for its callback —
 * the runner thread may block, the loops never do. A request carries
 * Idempotency-Key "<notification id>:<token hash>", so a crash between
 * the gateway's answer and the record (the one window where a retry
 * resends) is deduplicated by a gateway that honours the key.
 *
 * The HTTP calls of one job are made one after the other; a user has at
 * most NOTIFY_PUSH_TOKENS_MAX tokens. */
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "app/app.h"
#include "app/notify_internal.h"

static keel_http_client *HC;
static keel_server *SERVER;
static keel_metric *M_PUSH; /* notifications_push_total{result} */
static unsigned M_SHARD;
static atomic_uint NEXT_WORKER;
static const app_push_provider *PROVIDER = &app_push_gateway;

static const char *const RESULTS[] = {"delivered", "retry", "invalid_token", "rejected", NULL};

int app_notify_push_enabled(void)
{
    return *app_notify_opts()->push_url != '\0';
}

/* ---------------------------------------------------------------- the HTTP gateway */

static int gw_build(void *ctx, const app_push_message *m, app_push_request *out)
{
    (void)ctx;
    const notify_options *o = app_notify_opts();
    char h[65];
    app_sha256_hex(m->token, strlen(m->token), h);
    snprintf(out->url, sizeof(out->url), "%s", o->push_url);
    snprintf(out->idempotency_key, sizeof(out->idempotency_key), "%s:%.16s", m->notification_id, h);
    char created[32];
    app_format_time(m->created_at, created);
    json_t *doc =
        json_pack("{s:s, s:s, s:{s:s, s:s, s:s, s:s, s:O, s:s}}", "token", m->token, "platform",
                  m->platform, "notification", "id", m->notification_id, "type", m->type, "title",
                  m->title, "body", m->body, "data", m->data, "created_at", created);
    if (!doc)
        return KEEL_EINVAL;
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (!text)
        return KEEL_EINVAL;
    keel_buf_append(&out->body, text, strlen(text));
    free(text);
    size_t n = 0;
    out->headers[n++] = (keel_http_header){KEEL_STR("Content-Type"), KEEL_STR("application/json")};
    out->headers[n++] =
        (keel_http_header){KEEL_STR("Idempotency-Key"), keel_str_c(out->idempotency_key)};
    if (*o->push_token) {
        snprintf(out->authorization, sizeof(out->authorization), "Bearer %s", o->push_token);
        out->headers[n++] =
            (keel_http_header){KEEL_STR("Authorization"), keel_str_c(out->authorization)};
    }
    out->nheaders = n;
    return 0;
}

/* What push services answer for a dead token, as the gateway passes it
 * on in {"error": "..."} (FCM, APNs, Expo, Web Push spellings). */
static int says_invalid_token(const char *body, size_t len)
{
    json_t *doc = body && len ? json_loadb(body, len, 0, NULL) : NULL;
    const char *e = json_string_value(json_object_get(doc, "error"));
    static const char *const dead[] = {"invalid_token", "unregistered",        "not_registered",
                                       "NotRegistered", "InvalidRegistration", "BadDeviceToken",
                                       "Unregistered",  "DeviceNotRegistered", NULL};
    int yes = 0;
    for (size_t i = 0; e && dead[i]; i++)
        yes |= !strcmp(e, dead[i]);
    json_decref(doc);
    return yes;
}

static app_push_verdict gw_classify(void *ctx, int status, int http_status, const char *body,
                                    size_t body_len, char *why, size_t cap)
{
    (void)ctx;
    if (status < 0) {
        snprintf(why, cap, "no answer from the push gateway: %s", body ? body : "");
        return APP_PUSH_RETRY;
    }
    snprintf(why, cap, "push gateway answered %d", http_status);
    if (http_status >= 200 && http_status < 300)
        return APP_PUSH_DELIVERED;
    if (http_status == 404 || http_status == 410 ||
        (http_status >= 400 && http_status < 500 && says_invalid_token(body, body_len)))
        return APP_PUSH_INVALID_TOKEN;
    if (http_status == 408 || http_status == 429 || http_status >= 500)
        return APP_PUSH_RETRY;
    return APP_PUSH_REJECTED;
}

const app_push_provider app_push_gateway = {
    .name = "gateway", .build = gw_build, .classify = gw_classify};

/* ---------------------------------------------------------------- runner thread -> worker loop */

typedef struct push_wait {
    uv_mutex_t mu;
    keel_worker *w;
    uv_cond_t cv;
    int done, refs;
    keel_http_call call;
    app_push_request req;
    int status, http_status;
    char body[2048]; /* the answer's start, or the error in words */
    size_t body_len;
} push_wait;

static void pw_unref(push_wait *pw)
{
    uv_mutex_lock(&pw->mu);
    int left = --pw->refs;
    uv_mutex_unlock(&pw->mu);
    if (left)
        return;
    keel_buf_free(&pw->req.body);
    uv_cond_destroy(&pw->cv);
    uv_mutex_destroy(&pw->mu);
    free(pw);
}

static void pw_finish(push_wait *pw, int status, int http_status, const char *body, size_t len)
{
    uv_mutex_lock(&pw->mu);
    pw->status = status;
    pw->http_status = http_status;
    if (len >= sizeof(pw->body))
        len = sizeof(pw->body) - 1;
    memcpy(pw->body, body ? body : "", body ? len : 0);
    pw->body[body ? len : 0] = '\0';
    pw->body_len = body ? len : 0;
    pw->done = 1;
    uv_cond_signal(&pw->cv);
    uv_mutex_unlock(&pw->mu);
    pw_unref(pw);
}

static void on_answer(void *arg, int status, const keel_http_response *res)
{
    if (status < 0)
        pw_finish(arg, status, 0, res->error, strlen(res->error));
    else
        pw_finish(arg, 0, res->status, res->body, res->body_len);
}

static void on_worker(void *arg) /* the worker's loop */
{
    push_wait *pw = arg;
    int rc = keel_http_request(HC, pw->w, &pw->call, on_answer, pw);
    if (rc < 0) {
        const char *e = keel_strerror(rc);
        pw_finish(pw, rc, 0, e, strlen(e));
    }
}

typedef struct push_answer {
    int status, http_status;
    char body[2048];
    size_t body_len;
} push_answer;

/* Sends pw's request on a worker's loop and waits for its answer (runner
 * thread); the answer is copied to *out under the lock, so a callback
 * that comes after the backstop below writes only into pw. */
static void send_wait(push_wait *pw, push_answer *out)
{
    unsigned n = keel_server_workers(SERVER);
    pw->w = n ? keel_server_worker(SERVER, atomic_fetch_add(&NEXT_WORKER, 1) % n) : NULL;
    pw->refs = 2;
    if (!pw->w || keel_worker_post(pw->w, on_worker, pw) < 0) {
        pw->refs = 1;
        out->status = KEEL_ECLOSED;
        out->http_status = 0;
        out->body_len = (size_t)snprintf(out->body, sizeof(out->body), "the service is stopping");
        return;
    }
    /* the client's own timeout ends the call first; this is a backstop */
    uint64_t limit_ns = (app_notify_opts()->push_timeout_ms + 30000) * 1000000ull;
    uint64_t start = uv_hrtime();
    uv_mutex_lock(&pw->mu);
    while (!pw->done) {
        uint64_t spent = uv_hrtime() - start;
        if (spent >= limit_ns)
            break;
        (void)uv_cond_timedwait(&pw->cv, &pw->mu, limit_ns - spent);
    }
    if (pw->done) {
        out->status = pw->status;
        out->http_status = pw->http_status;
        memcpy(out->body, pw->body, pw->body_len + 1);
        out->body_len = pw->body_len;
    } else {
        out->status = KEEL_ETIMEDOUT;
        out->http_status = 0;
        out->body_len = (size_t)snprintf(out->body, sizeof(out->body),
                                         "no answer within the push gateway timeout");
    }
    uv_mutex_unlock(&pw->mu);
}

/* ---------------------------------------------------------------- the job */

typedef struct token_row {
    char token[4097];
    char platform[16];
} token_row;

static int record(keel_db_conn *c, const char *nid, const char *token, const char *result)
{
    keel_db_param p[] = {KEEL_DB_P_TEXT(nid), KEEL_DB_P_TEXT(token), KEEL_DB_P_TEXT(result),
                         KEEL_DB_P_INT(app_now())};
    return keel_db_exec(c,
                        "INSERT INTO notification_push_sent (notification_id, token, result, "
                        "at) VALUES ($1, $2, $3, $4) ON CONFLICT (notification_id, token) DO "
                        "NOTHING",
                        p, 4, NULL);
}

static app_push_verdict push_one(const app_push_message *m, char *why, size_t cap)
{
    push_wait *pw = calloc(1, sizeof(*pw));
    if (!pw) {
        snprintf(why, cap, "out of memory");
        return APP_PUSH_RETRY;
    }
    uv_mutex_init(&pw->mu);
    uv_cond_init(&pw->cv);
    pw->refs = 1;
    if (PROVIDER->build(PROVIDER->ctx, m, &pw->req) < 0) {
        snprintf(why, cap, "the provider could not build the message");
        pw_unref(pw);
        return APP_PUSH_REJECTED;
    }
    pw->call = (keel_http_call){.method = "POST",
                                .url = pw->req.url,
                                .headers = pw->req.headers,
                                .nheaders = pw->req.nheaders,
                                .body = pw->req.body.data,
                                .body_len = pw->req.body.len,
                                .timeout_ms = app_notify_opts()->push_timeout_ms,
                                .retry = {.max_attempts = 1},
                                .target = "push"};
    push_answer *a = malloc(sizeof(*a));
    if (!a) {
        pw_unref(pw);
        snprintf(why, cap, "out of memory");
        return APP_PUSH_RETRY;
    }
    send_wait(pw, a);
    pw_unref(pw);
    app_push_verdict v = PROVIDER->classify(PROVIDER->ctx, a->status, a->http_status, a->body,
                                            a->body_len, why, cap);
    if (a->status == KEEL_ECLOSED || a->status == KEEL_ECANCELED)
        snprintf(why, cap, "the service is stopping");
    free(a);
    return v;
}

static keel_job_outcome run_push(keel_job *job, void *arg)
{
    (void)arg;
    const char *nid = json_string_value(json_object_get(keel_job_args(job), "notification_id"));
    if (!nid)
        return keel_job_fail(job, "no notification_id in the job's args");
    keel_db_conn *c = keel_job_db(job);
    if (!c)
        return keel_job_retry(job, "no database connection");
    if (!HC)
        return keel_job_fail(job, "push is not configured (PUSH_GATEWAY_URL)");
    json_t *n = NULL;
    int rc = app_notify_load(c, nid, &n);
    if (rc == KEEL_EDB_NOROW)
        return KEEL_JOB_OK; /* gone: nothing to send */
    if (rc < 0)
        return keel_job_retry(job, keel_db_strerror(rc));
    const char *user = json_string_value(json_object_get(n, "user_id"));
    keel_db_param p[] = {KEEL_DB_P_TEXT(user), KEEL_DB_P_TEXT(nid)};
    keel_db_rows *rows;
    token_row *toks = NULL;
    size_t ntoks = 0;
    rc = keel_db_query(c,
                       "SELECT t.token, t.platform FROM notification_push_tokens t WHERE "
                       "t.user_id = $1 AND NOT EXISTS (SELECT 1 FROM notification_push_sent s "
                       "WHERE s.notification_id = $2 AND s.token = t.token) ORDER BY "
                       "t.created_at, t.token LIMIT 1000",
                       p, 2, &rows);
    if (rc >= 0) {
        while ((rc = keel_db_rows_next(rows)) == 1) {
            token_row *grown = realloc(toks, (ntoks + 1) * sizeof(*toks));
            if (!grown)
                break;
            toks = grown;
            keel_str t = keel_db_get_text(rows, 0), pl = keel_db_get_text(rows, 1);
            snprintf(toks[ntoks].token, sizeof(toks[ntoks].token), "%.*s", (int)t.len,
                     t.ptr ? t.ptr : "");
            snprintf(toks[ntoks].platform, sizeof(toks[ntoks].platform), "%.*s", (int)pl.len,
                     pl.ptr ? pl.ptr : "");
            ntoks++;
        }
        keel_db_rows_free(rows);
    }
    if (rc < 0) {
        free(toks);
        json_decref(n);
        return keel_job_retry(job, keel_db_strerror(rc));
    }
    json_t *data = json_object_get(n, "data");
    char title[200];
    app_notify_title(data, json_string_value(json_object_get(n, "type")), title, sizeof(title));
    const char *body = json_string_value(json_object_get(data, "body"));
    int64_t created = 0;
    app_parse_time(json_string_value(json_object_get(n, "created_at")),
                   strlen(json_string_value(json_object_get(n, "created_at"))), &created);
    char retry_why[300] = "";
    int stopping = 0, nretry = 0;
    for (size_t i = 0; i < ntoks && !keel_job_expired(job); i++) {
        app_push_message m = {.notification_id = nid,
                              .user_id = user,
                              .type = json_string_value(json_object_get(n, "type")),
                              .title = title,
                              .body = body ? body : "",
                              .data = data,
                              .created_at = created,
                              .token = toks[i].token,
                              .platform = toks[i].platform};
        char why[300];
        app_push_verdict v = push_one(&m, why, sizeof(why));
        if (M_PUSH)
            keel_metric_add(M_PUSH, M_SHARD, (const char *[]){RESULTS[v]}, 1);
        switch (v) {
        case APP_PUSH_DELIVERED:
            rc = record(c, nid, toks[i].token, "delivered");
            break;
        case APP_PUSH_INVALID_TOKEN: {
            keel_db_param pd[] = {KEEL_DB_P_TEXT(toks[i].token), KEEL_DB_P_TEXT(user)};
            rc = keel_db_exec(c,
                              "DELETE FROM notification_push_tokens WHERE token = $1 AND "
                              "user_id = $2",
                              pd, 2, NULL);
            if (rc >= 0)
                rc = record(c, nid, toks[i].token, "invalid_token");
            keel_log(KEEL_LOG_INFO, "push token removed: the provider says it is invalid",
                     "{s:s, s:s, s:s}", "user_id", user, "notification_id", nid, "reason", why);
            break;
        }
        case APP_PUSH_REJECTED:
            rc = record(c, nid, toks[i].token, "rejected");
            keel_log(KEEL_LOG_WARN, "push refused by the provider (not retried)", "{s:s, s:s, s:s}",
                     "user_id", user, "notification_id", nid, "reason", why);
            break;
        default:
            nretry++;
            snprintf(retry_why, sizeof(retry_why), "%s", why);
            stopping |= strstr(why, "stopping") != NULL;
            rc = 0;
            break;
        }
        if (stopping) /* the workers are gone: the rest waits for the next run */
            break;
        if (rc < 0) { /* the outcome was not recorded: try this token again */
            nretry++;
            snprintf(retry_why, sizeof(retry_why), "recording the outcome: %s",
                     keel_db_strerror(rc));
        }
    }
    free(toks);
    json_decref(n);
    if (stopping)
        return keel_job_snooze(job, 1000); /* the workers stopped: not an attempt */
    if (nretry) {
        char msg[400];
        snprintf(msg, sizeof(msg), "%d token(s) to retry; last: %s", nretry, retry_why);
        return keel_job_retry(job, msg);
    }
    return KEEL_JOB_OK;
}

static keel_job_outcome run_live(keel_job *job, void *arg)
{
    (void)arg;
    const char *nid = json_string_value(json_object_get(keel_job_args(job), "notification_id"));
    keel_db_conn *c = keel_job_db(job);
    if (!nid)
        return keel_job_fail(job, "no notification_id in the job's args");
    if (!c)
        return keel_job_retry(job, "no database connection");
    json_t *n = NULL;
    int rc = app_notify_load(c, nid, &n);
    if (rc == KEEL_EDB_NOROW)
        return KEEL_JOB_OK;
    if (rc < 0)
        return keel_job_retry(job, keel_db_strerror(rc));
    json_t *user = json_incref(json_object_get(n, "user_id"));
    json_object_del(n, "user_id");
    app_notify_live(json_string_value(user), n);
    json_decref(user);
    json_decref(n);
    return KEEL_JOB_OK;
}

/* notify.prune: NOTIFY_RETENTION, in batches of 1,000, each its own
 * statement (no long lock); scheduled hourly by the job queue's scheduler
 * (docs/scheduler.md) while NOTIFY_RETENTION is not 0. */
static keel_job_outcome run_prune(keel_job *job, void *arg)
{
    (void)arg;
    uint64_t keep = app_notify_opts()->retention_ms;
    keel_db_conn *c = keel_job_db(job);
    if (!keep)
        return KEEL_JOB_OK;
    if (!c)
        return keel_job_retry(job, "no database connection");
    int64_t before = app_now() - (int64_t)(keep / 1000), n, total = 0;
    int rc;
    do {
        if ((rc = app_notify_prune(c, before, 1000, &n)) < 0)
            return keel_job_retry(job, keel_db_strerror(rc));
        total += n;
    } while (n >= 1000 && !keel_job_expired(job));
    if (total)
        keel_log(KEEL_LOG_INFO, "notifications pruned", "{s:I}", "deleted", (json_int_t)total);
    return KEEL_JOB_OK;
}

int app_notify_push_setup(keel_service *svc)
{
    keel_jobs *jobs = keel_service_jobs(svc);
    keel_metrics *m = keel_service_metrics(svc);
    M_SHARD = keel_metrics_shards(m);
    M_PUSH = keel_metrics_counter(m, "notifications_push_total",
                                  "Push deliveries (one notification to one token), by result",
                                  (const char *[]){"result", NULL});
    keel_metric_declare_each(M_PUSH, NULL, 0, RESULTS);
    SERVER = keel_service_server(svc);
    if (app_notify_push_enabled()) {
        int rc = keel_http_client_new(&HC, SERVER, keel_service_config(svc), m,
                                      keel_service_breakers(svc));
        if (rc < 0)
            return rc;
        keel_http_client_declare_target(HC, "push");
    }
    if (!jobs)
        return 0;
    keel_job_handler push = {.kind = "notify.push", .run = run_push};
    keel_job_handler live = {.kind = "notify.live", .run = run_live};
    keel_job_handler prune = {.kind = "notify.prune", .run = run_prune};
    int rc = keel_jobs_register(jobs, &push);
    if (rc >= 0)
        rc = keel_jobs_register(jobs, &live);
    if (rc >= 0)
        rc = keel_jobs_register(jobs, &prune);
    if (rc >= 0 && app_notify_opts()->retention_ms) {
        keel_job_schedule s = {.name = "notify.prune", .expr = "@every 1h", .kind = "notify.prune",
                               .max_attempts = 3};
        char why[300];
        if ((rc = keel_jobs_schedule(jobs, &s, why, sizeof(why))) < 0)
            keel_log(KEEL_LOG_ERROR, "notifications: the prune cannot be scheduled", "{s:s}",
                     "error", why);
    }
    return rc;
}

void app_notify_push_teardown(void)
{
    keel_http_client_free(HC);
    HC = NULL;
}
