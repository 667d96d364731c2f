/* mail_queue.c — every mail through the job queue: the outbox.
 *
 * A mail is a job of kind "mail.send" on queue "email" (app.h has the
 * args contract). The handler runs on a runner thread of the email queue
 * (JOBS_QUEUES="...,email=N") and blocks on SMTP there, never on a loop,
 * so a slow or dead server delays mails, never requests. What a delivery
 * verdict does to the job:
 *
 *   SENT       completed
 *   TRANSIENT  keel_job_retry: backoff with full jitter (JOBS_BACKOFF_*),
 *              dead after the job's max_attempts (MAIL_JOB_MAX_ATTEMPTS
 *              for app_mail_enqueue)
 *   PERMANENT  keel_job_fail (dead at once) and the address suppressed for
 *              the job's class (mail_suppressions): later mails of that
 *              class to it are not sent
 *   INVALID    keel_job_fail: bad data, retrying cannot help
 *
 * A job whose address is suppressed ends cancelled, its reason recorded
 * in the job's errors, logged (mail.suppressed) and counted. The
 * Message-ID is stable per message_key and recipient, so a job that runs
 * again after its worker died while the server had accepted it (the one
 * window the queue cannot close: at-least-once) carries the same id and
 * the receiver can drop the copy. Without SMTP_URL the mailer writes to
 * the log and the outbox: the job completes the same way.
 *
 * Sealed values: a job's args are readable by whoever reads the jobs
 * table or GET /api/v1/admin/jobs, for as long as the row is kept. Values
 * that are credentials (a reset link holds a token whose hash alone the
 * database keeps) go in "sealed_vars" instead: a JSON object encrypted
 * and authenticated with libsodium's secretbox (XSalsa20-Poly1305) under
 * a key derived from JWT_SECRET, opened by the handler and merged over
 * "vars" just before rendering. A job sealed under another key (the
 * secret rotated) cannot be opened: it fails as invalid. */
#include <ctype.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"

static keel_metric *M_JOBS; /* mail_jobs_total{result} */
static unsigned M_SHARD;
static unsigned max_attempts = 10;

static const char *const RESULTS[] = {"sent", "retried", "bounced", "invalid", "suppressed",
                                      NULL};

static unsigned char SEAL_KEY[crypto_secretbox_KEYBYTES];
/* deliveries in progress: a stop whose grace ran out leaves them running
 * while the service is torn down, and the mailer must outlive them */
static int in_flight;

int app_mail_queue_busy(void)
{
    return __atomic_load_n(&in_flight, __ATOMIC_ACQUIRE);
}

static void count(const char *result)
{
    keel_metric_add(M_JOBS, M_SHARD, (const char *[]){result}, 1);
}

/* ---------------------------------------------------------------- enqueue */

static int name_ok(const char *s, size_t max, int key)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (key ? (ch < 0x20 || ch == 0x7f)
                : !(islower(ch) || isdigit(ch) || ch == '_' || ch == '-' || ch == '.'))
            return 0;
    }
    return 1;
}

/* sealed (a JSON object) as base64url(nonce | secretbox); NULL on failure. */
static json_t *seal(const json_t *sealed)
{
    char *plain = json_dumps(sealed, JSON_COMPACT);
    if (!plain)
        return NULL;
    size_t n = strlen(plain), blen = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + n;
    unsigned char *box = keel_malloc(blen);
    randombytes_buf(box, crypto_secretbox_NONCEBYTES);
    crypto_secretbox_easy(box + crypto_secretbox_NONCEBYTES, (const unsigned char *)plain, n, box,
                          SEAL_KEY);
    sodium_memzero(plain, n);
    free(plain);
    size_t tlen = sodium_base64_ENCODED_LEN(blen, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *text = keel_malloc(tlen);
    sodium_bin2base64(text, tlen, box, blen, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    keel_free(box);
    json_t *out = json_string(text);
    keel_free(text);
    return out;
}

/* The object sealed in text (new reference), or NULL: not base64url, too
 * short, opened by no key of ours, or not a JSON object. */
static json_t *unseal(const char *text)
{
    size_t tlen = strlen(text), cap = tlen, blen = 0;
    unsigned char *box = keel_malloc(cap + 1);
    json_t *out = NULL;
    if (sodium_base642bin(box, cap, text, tlen, NULL, &blen, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        blen < crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES)
        goto done;
    size_t n = blen - crypto_secretbox_NONCEBYTES - crypto_secretbox_MACBYTES;
    unsigned char *plain = keel_malloc(n + 1);
    if (crypto_secretbox_open_easy(plain, box + crypto_secretbox_NONCEBYTES,
                                   blen - crypto_secretbox_NONCEBYTES, box, SEAL_KEY) == 0) {
        out = json_loadb((const char *)plain, n, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(out)) {
            json_decref(out);
            out = NULL;
        }
    }
    sodium_memzero(plain, n);
    keel_free(plain);
done:
    keel_free(box);
    return out;
}

int app_mail_enqueue_named(keel_db_conn *c, const char *to, const char *to_name,
                           const char *template_name, const json_t *vars,
                           const char *message_key, const char *klass)
{
    return app_mail_enqueue_sealed(c, to, to_name, template_name, vars, NULL, message_key,
                                   klass);
}

int app_mail_enqueue_sealed(keel_db_conn *c, const char *to, const char *to_name,
                            const char *template_name, const json_t *vars,
                            const json_t *sealed_vars, const char *message_key,
                            const char *klass)
{
    const char *bad = !to || !keel_mail_address_ok(to)              ? "to"
                      : !name_ok(template_name, 64, 0)              ? "template"
                      : !name_ok(message_key, KEEL_JOB_NAME_MAX, 1) ? "message_key"
                      : !name_ok(klass, 64, 0)                      ? "class"
                      : vars && !json_is_object(vars)               ? "vars"
                      : sealed_vars && !json_is_object(sealed_vars) ? "sealed_vars"
                      : to_name && strlen(to_name) > 200            ? "to_name"
                                                                    : NULL;
    if (bad) {
        keel_log(KEEL_LOG_ERROR, "mail not enqueued: invalid field", "{s:s,s:s}", "field", bad,
                 "template", template_name ? template_name : "");
        return KEEL_EINVAL;
    }
    json_t *v = vars ? json_incref((json_t *)vars) : json_object();
    json_t *args = json_pack("{s:s, s:s, s:o, s:s, s:s}", "to", to, "template", template_name,
                             "vars", v, "message_key", message_key, "class", klass);
    if (!args) /* v was stolen all the same */
        return KEEL_EINVAL; /* invalid UTF-8 in a value */
    if (to_name)
        json_object_set_new(args, "to_name", json_string(to_name));
    if (sealed_vars) {
        json_t *box = seal(sealed_vars);
        if (!box) {
            json_decref(args);
            return KEEL_EINVAL;
        }
        json_object_set_new(args, "sealed_vars", box);
    }
    char *text = json_dumps(args, JSON_COMPACT);
    json_decref(args);
    if (!text)
        return KEEL_EINVAL;
    keel_job_spec s = {.kind = APP_MAIL_KIND, .queue = APP_MAIL_QUEUE, .args = text,
                       .max_attempts = max_attempts, .unique_key = message_key};
    keel_job_enqueued out;
    int rc = keel_job_enqueue(c, &s, &out);
    free(text);
    if (rc == 0)
        keel_log(KEEL_LOG_DEBUG, "mail enqueued", "{s:I,s:s,s:b}", "job_id", (json_int_t)out.id,
                 "template", template_name, "duplicate", out.duplicate);
    return rc;
}

int app_mail_enqueue(keel_db_conn *c, const char *to, const char *template_name,
                     const json_t *vars, const char *message_key, const char *klass)
{
    return app_mail_enqueue_named(c, to, NULL, template_name, vars, message_key, klass);
}

/* ---------------------------------------------------------------- suppression */

/* Addresses are kept lower-cased: the domain is case-insensitive and
 * keel's own account addresses are lower-cased already. */
static void lower_copy(const char *s, char *out, size_t cap)
{
    size_t i = 0;
    for (; s[i] && i + 1 < cap; i++)
        out[i] = (char)tolower((unsigned char)s[i]);
    out[i] = '\0';
}

int app_mail_suppressed(keel_db_conn *c, const char *addr, const char *klass)
{
    char a[KEEL_MAIL_MAX_FIELD + 1];
    lower_copy(addr, a, sizeof(a));
    keel_db_param p[] = {KEEL_DB_P_TEXT(a), KEEL_DB_P_TEXT(klass)};
    keel_db_rows *rows;
    int rc = keel_db_query(c, "SELECT 1 FROM mail_suppressions WHERE address = $1 AND class = $2",
                           p, 2, &rows);
    if (rc < 0)
        return rc;
    rc = keel_db_rows_next(rows);
    keel_db_rows_free(rows);
    return rc;
}

static int suppress(keel_db_conn *c, const char *addr, const char *klass,
                    const keel_mail_result *res, int64_t job_id)
{
    char a[KEEL_MAIL_MAX_FIELD + 1];
    lower_copy(addr, a, sizeof(a));
    keel_db_param p[] = {KEEL_DB_P_TEXT(a),        KEEL_DB_P_TEXT(klass),
                         KEEL_DB_P_TEXT(res->reply), KEEL_DB_P_INT(res->code),
                         KEEL_DB_P_INT(job_id),    KEEL_DB_P_INT(app_now())};
    return keel_db_exec(c,
                        "INSERT INTO mail_suppressions (address, class, reason, code, job_id, "
                        "created_at) VALUES ($1, $2, $3, $4, $5, $6) "
                        "ON CONFLICT (address, class) DO NOTHING",
                        p, 6, NULL);
}

/* ---------------------------------------------------------------- the handler */

static const char *arg_str(const json_t *a, const char *key, int *bad)
{
    const json_t *v = json_object_get(a, key);
    if (v && !json_is_string(v))
        *bad = 1;
    return json_string_value(v);
}

static keel_job_outcome invalid(keel_job *job, const char *why)
{
    count("invalid");
    keel_log(KEEL_LOG_ERROR, "mail.invalid", "{s:I,s:s}", "job_id",
             (json_int_t)keel_job_id(job), "reason", why);
    return keel_job_fail(job, why);
}

static keel_job_outcome run_mail_send(keel_job *job, void *arg)
{
    keel_mailer *m = arg;
    const json_t *a = keel_job_args(job);
    int bad = 0;
    const char *to = arg_str(a, "to", &bad), *to_name = arg_str(a, "to_name", &bad),
               *tmpl = arg_str(a, "template", &bad), *key = arg_str(a, "message_key", &bad),
               *klass = arg_str(a, "class", &bad);
    json_t *vars = json_object_get(a, "vars");
    const char *sealed = arg_str(a, "sealed_vars", &bad);
    if (bad || !to || !tmpl || (vars && !json_is_object(vars)))
        return invalid(job, "invalid args: to and template (strings) are required; vars an "
                            "object; to_name, message_key and class strings");
    if (!klass)
        klass = "default";
    if (!keel_mail_address_ok(to))
        return invalid(job, "invalid args: to is not an address keel sends to");
    char fallback_key[32];
    if (!key) { /* stable across attempts all the same */
        snprintf(fallback_key, sizeof(fallback_key), "job-%lld", (long long)keel_job_id(job));
        key = fallback_key;
    }
    keel_db_conn *c = keel_job_db(job);
    if (!c)
        return keel_job_retry(job, "no database connection (suppression list)");
    int rc = app_mail_suppressed(c, to, klass);
    if (rc < 0)
        return keel_job_retry(job, keel_db_strerror(rc));
    if (rc == 1) {
        count("suppressed");
        keel_log(KEEL_LOG_INFO, "mail.suppressed", "{s:I,s:s,s:s,s:s}", "job_id",
                 (json_int_t)keel_job_id(job), "to", to, "class", klass, "template", tmpl);
        char why[160];
        snprintf(why, sizeof(why), "not sent: the address is suppressed for class %s", klass);
        (void)keel_job_fail(job, why); /* records the reason; the job ends cancelled */
        return KEEL_JOB_CANCEL;
    }
    json_t *all = vars ? json_deep_copy(vars) : json_object();
    if (sealed) {
        json_t *opened = unseal(sealed);
        if (!opened) {
            json_decref(all);
            return invalid(job, "invalid args: sealed_vars cannot be opened (JWT_SECRET "
                                "changed since the mail was enqueued?)");
        }
        json_object_update(all, opened);
        json_decref(opened);
    }
    keel_mail_send_args sa = {.to = to, .to_name = to_name, .template_name = tmpl,
                              .vars = all, .notification_id = key};
    keel_mail_result res;
    __atomic_add_fetch(&in_flight, 1, __ATOMIC_ACQ_REL);
    keel_mail_verdict v = keel_mailer_send(m, &sa, &res);
    __atomic_sub_fetch(&in_flight, 1, __ATOMIC_ACQ_REL);
    json_decref(all);
    char detail[700];
    snprintf(detail, sizeof(detail), "%s: %d %s", keel_mail_verdict_name(v), res.code, res.reply);
    switch (v) {
    case KEEL_MAIL_SENT:
        count("sent");
        keel_log(KEEL_LOG_INFO, "mail.sent", "{s:I,s:s,s:s,s:i}", "job_id",
                 (json_int_t)keel_job_id(job), "template", tmpl, "message_id", res.message_id,
                 "attempt", (int)keel_job_attempt(job));
        return KEEL_JOB_OK;
    case KEEL_MAIL_TRANSIENT:
        count("retried");
        return keel_job_retry(job, detail);
    case KEEL_MAIL_PERMANENT:
        count("bounced");
        rc = suppress(c, to, klass, &res, keel_job_id(job));
        keel_log(rc < 0 ? KEEL_LOG_ERROR : KEEL_LOG_WARN, "mail.bounced",
                 "{s:I,s:s,s:s,s:i,s:s,s:b}", "job_id", (json_int_t)keel_job_id(job), "to", to,
                 "class", klass, "code", res.code, "reply", res.reply, "suppressed", rc == 0);
        return keel_job_fail(job, detail);
    case KEEL_MAIL_INVALID:
    default:
        return invalid(job, detail);
    }
}

/* ---------------------------------------------------------------- admin: suppressions
 *
 *   GET    /api/v1/admin/mail/suppressions?address=&class=&limit=   newest first
 *   DELETE /api/v1/admin/mail/suppressions?address=A[&class=C]      lift (one class, or all)
 */

static keel_db *DB;

typedef struct supp_job {
    int del;
    char address[KEEL_MAIL_MAX_FIELD + 1], klass[72];
    int has_address, has_class;
    int64_t limit, affected;
    json_t *out;
} supp_job;

static void supp_cleanup(void *arg)
{
    json_decref(((supp_job *)arg)->out);
}

static int db_supp(keel_db_conn *c, void *arg)
{
    supp_job *j = arg;
    json_decref(j->out);
    j->out = NULL;
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->address), KEEL_DB_P_TEXT(j->klass),
                         KEEL_DB_P_INT(j->limit)};
    if (j->del)
        return keel_db_exec(c,
                            "DELETE FROM mail_suppressions WHERE address = $1 AND "
                            "($2 = '' OR class = $2)",
                            p, 2, &j->affected);
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           "SELECT address, class, reason, code, job_id, created_at "
                           "FROM mail_suppressions WHERE ($1 = '' OR address = $1) AND "
                           "($2 = '' OR class = $2) ORDER BY created_at DESC, address, class "
                           "LIMIT $3",
                           p, 3, &rows);
    if (rc < 0)
        return rc;
    json_t *list = json_array();
    while ((rc = keel_db_rows_next(rows)) == 1) {
        json_t *o = keel_db_row_json(rows);
        char at[32];
        app_format_time(json_integer_value(json_object_get(o, "created_at")), at);
        json_object_set_new(o, "created_at", json_string(at));
        json_array_append_new(list, o);
    }
    keel_db_rows_free(rows);
    j->out = json_pack("{s:o}", "suppressions", list);
    return rc < 0 ? rc : 0;
}

static void supp_done(keel_req *r, void *arg, int status)
{
    supp_job *j = arg;
    if (status < 0)
        keel_db_respond_error(r, status);
    else if (j->del && j->affected == 0)
        keel_respond_problem(r, 404, "this address is not suppressed (for this class)");
    else if (j->del)
        keel_respond(r, 204, NULL, NULL, 0);
    else
        keel_respond_json(r, 200, json_incref(j->out));
}

static keel_flow supp(keel_req *r, int del)
{
    supp_job *j = KEEL_REQ_JOB(r, supp_job, supp_cleanup);
    j->del = del;
    keel_str a = keel_req_query_param(r, "address"), k = keel_req_query_param(r, "class"),
             l = keel_req_query_param(r, "limit");
    /* lengths and the limit's range were the query schema's */
    snprintf(j->address, sizeof(j->address), "%.*s", a.ptr ? (int)a.len : 0, a.ptr ? a.ptr : "");
    lower_copy(j->address, j->address, sizeof(j->address));
    snprintf(j->klass, sizeof(j->klass), "%.*s", k.ptr ? (int)k.len : 0, k.ptr ? k.ptr : "");
    j->limit = l.ptr ? strtoll(l.ptr, NULL, 10) : 100;
    if (del && !j->address[0]) {
        app_invalid(r, "/query/address", "address is required");
        return KEEL_DONE;
    }
    return keel_db_job_run(r, DB, db_supp, supp_done, j);
}

static keel_flow h_supp_list(keel_req *r)
{
    return supp(r, 0);
}

static keel_flow h_supp_delete(keel_req *r)
{
    return supp(r, 1);
}

#define S_SUPP_QUERY(extra)                                                                       \
    "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"                 \
    "\"address\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":254},"                \
    "\"class\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":64}" extra "}}"

static const keel_route supp_routes[] = {
    {.name = "admin.mail.suppressions", .method = "GET",
     .path = "/api/v1/admin/mail/suppressions", .handler = h_supp_list,
     .summary = "Addresses suppressed after a bounce, per mail class, newest first",
     .auth = "any", .permission = "admin:access", .flags = KEEL_ROUTE_SECRET,
     .query_schema = S_SUPP_QUERY(",\"limit\":{\"type\":\"integer\",\"minimum\":1,"
                                  "\"maximum\":500}")},
    {.name = "admin.mail.suppressions.delete", .method = "DELETE",
     .path = "/api/v1/admin/mail/suppressions", .handler = h_supp_delete,
     .summary = "Lift a suppression: ?address= (and ?class=, else every class)",
     .auth = "any", .permission = "admin:access", .flags = KEEL_ROUTE_SECRET,
     .query_schema = S_SUPP_QUERY("")},
};

int app_mail_queue_setup(keel_service *svc, keel_mailer *m)
{
    DB = keel_service_db(svc);
    if (keel_service_add_routes(svc, supp_routes, sizeof(supp_routes) / sizeof(supp_routes[0])) <
        0)
        return -1;
    const app_accounts_options *o = app_accounts_options_get();
    /* the sealing key: BLAKE2b of a context and the JWT key (auth's setup
     * ran first: a random one per process without JWT_SECRET) */
    const app_auth *auth = app_auth_get();
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof(SEAL_KEY));
    crypto_generichash_update(&st, (const unsigned char *)"keel mail sealed_vars v1", 24);
    crypto_generichash_update(&st, auth->jwt.secret, auth->jwt.secret_len);
    crypto_generichash_final(&st, SEAL_KEY, sizeof(SEAL_KEY));
    max_attempts = (unsigned)o->mail_max_attempts;
    keel_metrics *reg = keel_service_metrics(svc);
    static const char *const labels[] = {"result", NULL};
    M_JOBS = keel_metrics_counter(reg, "mail_jobs_total",
                                  "mail.send jobs run, by result (sent, retried, bounced, "
                                  "invalid, suppressed)",
                                  labels);
    keel_metric_declare_each(M_JOBS, NULL, 0, RESULTS);
    M_SHARD = keel_metrics_shards(reg);
    keel_jobs *jq = keel_service_jobs(svc);
    if (!jq)
        return 0; /* a service without a job queue: nothing sends */
    const keel_mail_options *mo = keel_config_get(keel_service_config(svc), &keel_mail_config);
    /* longer than any one delivery (a kept connection found dead is
     * retried once on a new one): a result is never dropped as late
     * while the server may have taken the mail */
    keel_job_handler h = {.kind = APP_MAIL_KIND, .run = run_mail_send, .arg = m,
                          .timeout_ms = 2 * (mo->timeout_ms + mo->connect_timeout_ms) + 10000};
    return keel_jobs_register(jq, &h);
}
