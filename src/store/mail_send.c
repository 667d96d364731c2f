/* mail_send.c — delivering messages (see keel/mail.h): SMTP through
 * libcurl, or, without SMTP_URL, the log and an in-memory outbox.
 *
 * Sending is blocking work for a pool thread. Each thread that sends
 * keeps one curl easy handle in thread-local storage (released when the
 * thread exits); an easy handle keeps its connections, so consecutive
 * messages from one thread reuse one SMTP session (a new MAIL FROM on the
 * open connection, no TCP/TLS/EHLO/AUTH again). A reused connection the
 * server closed while idle fails before anything was accepted; that one
 * attempt is repeated once on a fresh connection.
 *
 * The verdict is read from the last SMTP reply: 2xx sent; 4xx transient;
 * 5xx permanent — except a 5xx to AUTH, which is our configuration, not
 * the recipient, and so transient; no reply (no connection, timeout, TLS
 * failure) transient. The last reply line the server sent (captured from
 * curl's protocol trace, incoming lines only: our AUTH line, which holds
 * the password, is never read) goes back with it.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "keel/log.h"
#include "keel/mail.h"
#include "keel/metrics.h"

/* ---------------------------------------------------------------- options */

static int from_check(const char *v)
{
    char name[256], addr[256];
    return keel_mail_parse_mailbox(v, name, sizeof(name), addr, sizeof(addr));
}

#define AT(f) KEEL_CONFIG_AT(keel_mail_options, f)
static const keel_config_var mail_vars[] = {
    {.name = "SMTP_URL", .type = KEEL_CONFIG_URL, .def = "", AT(smtp_url),
     .values = KEEL_CONFIG_VALUES("smtp://", "smtps://"),
     .help = "SMTP server, smtp://host:587 (STARTTLS per SMTP_TLS) or smtps://host:465; "
             "empty = mails go to the log and GET /api/v1/admin/mail/outbox (development)"},
    {.name = "SMTP_USER", .type = KEEL_CONFIG_STR, .def = "", AT(smtp_user),
     .help = "SMTP login; empty = no AUTH"},
    {.name = "SMTP_PASSWORD", .type = KEEL_CONFIG_STR, .def = "", AT(smtp_password),
     .flags = KEEL_CONFIG_SECRET, .help = "SMTP password"},
    {.name = "SMTP_TLS", .type = KEEL_CONFIG_ENUM, .def = "try", AT(smtp_tls),
     .values = KEEL_CONFIG_VALUES("try", "required"),
     .help = "smtp:// URLs: try = STARTTLS when the server offers it, required = refuse to "
             "send without TLS (smtps:// is always TLS)"},
    {.name = "SMTP_TLS_VERIFY", .type = KEEL_CONFIG_BOOL, .def = "true", AT(smtp_tls_verify),
     .help = "check the SMTP server's certificate and host name"},
    {.name = "SMTP_TIMEOUT", .type = KEEL_CONFIG_DURATION, .def = "30s", AT(timeout_ms),
     .min = 1000, .help = "one whole delivery (connect, TLS, AUTH, DATA); past it: transient"},
    {.name = "SMTP_CONNECT_TIMEOUT", .type = KEEL_CONFIG_DURATION, .def = "10s",
     AT(connect_timeout_ms), .min = 100,
     .help = "establishing the SMTP session: TCP, TLS, greeting, EHLO and AUTH"},
    {.name = "MAIL_FROM", .type = KEEL_CONFIG_STR, .def = "keel <no-reply@localhost>", AT(from),
     .check = from_check, .accepts = "an address, or Name <address>",
     .help = "the From of keel's mails (and the envelope sender); its domain ends Message-IDs"},
    {.name = "MAIL_TEMPLATE_DIR", .type = KEEL_CONFIG_STR, .def = "", AT(template_dir),
     .help = "a directory whose <name>.subject.txt / .txt / .html files replace the built-in "
             "templates file by file; empty = built-in only"},
    {.name = "MAIL_OUTBOX_SIZE", .type = KEEL_CONFIG_UINT, .def = "100", AT(outbox_size),
     .min = 1, .max = 10000, .help = "without SMTP_URL: the last N mails kept for "
                                     "GET /api/v1/admin/mail/outbox"},
};
#undef AT

/* Production without SMTP_URL is allowed (a service may send no mail),
 * but its log lines then carry the headers only: a mail's text holds
 * reset and verification links, which are credentials. */
static int mail_validate(void *opts, const keel_config *cfg, FILE *err)
{
    (void)err;
    keel_mail_options *o = opts;
    o->log_text = !cfg->production;
    return 0;
}

const keel_config_module keel_mail_config = KEEL_CONFIG_MODULE(
    "mail", "E-mail over SMTP, templates and the development outbox (src/store/mail*.c).",
    keel_mail_options, mail_vars, mail_validate);

/* ---------------------------------------------------------------- the mailer */

struct keel_mailer {
    keel_mail_options o; /* strings owned */
    char from_name[256], from_addr[256];
    const char *domain;  /* in from_addr */
    pthread_mutex_t mu;  /* the outbox */
    json_t **ring;
    size_t ring_cap, ring_len, ring_next;
    keel_metric *m_total, *m_seconds;
    unsigned shard;
};

static char *dup_or_empty(const char *s)
{
    return keel_strdup(s ? s : "");
}

keel_mailer *keel_mailer_new(const keel_mail_options *o)
{
    keel_mailer *m = keel_calloc(1, sizeof(*m));
    m->o = *o;
    m->o.smtp_url = dup_or_empty(o->smtp_url);
    m->o.smtp_user = dup_or_empty(o->smtp_user);
    m->o.smtp_password = dup_or_empty(o->smtp_password);
    m->o.from = dup_or_empty(o->from);
    m->o.template_dir = dup_or_empty(o->template_dir);
    if (!m->o.timeout_ms)
        m->o.timeout_ms = 30000;
    if (!m->o.connect_timeout_ms)
        m->o.connect_timeout_ms = 10000;
    if (keel_mail_parse_mailbox(m->o.from, m->from_name, sizeof(m->from_name), m->from_addr,
                                sizeof(m->from_addr)) < 0) {
        snprintf(m->from_addr, sizeof(m->from_addr), "no-reply@localhost");
        m->from_name[0] = '\0';
    }
    m->domain = strchr(m->from_addr, '@') + 1;
    pthread_mutex_init(&m->mu, NULL);
    m->ring_cap = o->outbox_size ? (size_t)o->outbox_size : 100;
    m->ring = keel_calloc(m->ring_cap, sizeof(json_t *));
    if (m->o.smtp_url[0])
        curl_global_init(CURL_GLOBAL_DEFAULT);
    return m;
}

void keel_mailer_set_metrics(keel_mailer *m, keel_metrics *reg)
{
    static const char *const labels[] = {"verdict", NULL};
    static const double buckets[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
    m->m_total = keel_metrics_counter(reg, "mail_deliveries_total",
                                      "Mails delivered, by verdict (sent, transient, permanent, "
                                      "invalid)",
                                      labels);
    m->m_seconds = keel_metrics_histogram(reg, "mail_delivery_seconds",
                                          "Time of one mail delivery (SMTP or log)", NULL,
                                          buckets, sizeof(buckets) / sizeof(buckets[0]));
    m->shard = keel_metrics_shards(reg);
}

void keel_mailer_free(keel_mailer *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->ring_cap; i++)
        json_decref(m->ring[i]);
    keel_free(m->ring);
    pthread_mutex_destroy(&m->mu);
    keel_free(m->o.smtp_url);
    keel_free(m->o.smtp_user);
    if (m->o.smtp_password) {
        memset(m->o.smtp_password, 0, strlen(m->o.smtp_password));
        keel_free(m->o.smtp_password);
    }
    keel_free(m->o.from);
    keel_free(m->o.template_dir);
    keel_free(m);
}

int keel_mailer_smtp(const keel_mailer *m)
{
    return m->o.smtp_url[0] != '\0';
}

const char *keel_mail_verdict_name(keel_mail_verdict v)
{
    switch (v) {
    case KEEL_MAIL_SENT: return "sent";
    case KEEL_MAIL_TRANSIENT: return "transient";
    case KEEL_MAIL_PERMANENT: return "permanent";
    case KEEL_MAIL_INVALID: return "invalid";
    }
    return "invalid";
}

/* ---------------------------------------------------------------- one handle per thread */

static pthread_key_t easy_key;
static pthread_once_t easy_once = PTHREAD_ONCE_INIT;

static void easy_free(void *p)
{
    curl_easy_cleanup(p);
}

static void easy_key_make(void)
{
    pthread_key_create(&easy_key, easy_free);
}

static CURL *thread_easy(void)
{
    pthread_once(&easy_once, easy_key_make);
    CURL *e = pthread_getspecific(easy_key);
    if (e) {
        curl_easy_reset(e); /* options only: the connection cache stays */
        return e;
    }
    e = curl_easy_init();
    if (e)
        pthread_setspecific(easy_key, e);
    return e;
}

void keel_mail_thread_close(void)
{
    pthread_once(&easy_once, easy_key_make);
    CURL *e = pthread_getspecific(easy_key);
    if (e) {
        pthread_setspecific(easy_key, NULL);
        curl_easy_cleanup(e);
    }
}

/* ---------------------------------------------------------------- SMTP */

typedef struct upload {
    const char *data;
    size_t len, off;
} upload;

static size_t on_read(char *buf, size_t size, size_t n, void *arg)
{
    upload *u = arg;
    size_t want = size * n, left = u->len - u->off;
    if (want > left)
        want = left;
    memcpy(buf, u->data + u->off, want);
    u->off += want;
    return want;
}

typedef struct trace {
    char last[512];   /* the last complete reply line */
    char last_err[512]; /* the last 4xx/5xx reply line (a QUIT's 221 may follow it) */
    char partial[512];
    size_t plen;
    int auth;         /* the last command we sent was AUTH */
    int auth_reply;   /* the last reply answered AUTH */
} trace;

static int on_debug(CURL *h, curl_infotype type, char *data, size_t size, void *arg)
{
    (void)h;
    trace *t = arg;
    if (type == CURLINFO_HEADER_OUT) {
        /* only whether it is AUTH; the rest (credentials) is not kept */
        t->auth = size >= 4 && !strncasecmp(data, "AUTH", 4);
        return 0;
    }
    if (type != CURLINFO_HEADER_IN)
        return 0;
    for (size_t i = 0; i < size; i++) {
        char c = data[i];
        if (c == '\n') {
            while (t->plen && t->partial[t->plen - 1] == '\r')
                t->plen--;
            t->partial[t->plen] = '\0';
            memcpy(t->last, t->partial, t->plen + 1);
            if (t->plen >= 3 && (t->partial[0] == '4' || t->partial[0] == '5')) {
                memcpy(t->last_err, t->partial, t->plen + 1);
                t->auth_reply = t->auth;
            }
            t->plen = 0;
        } else if (c == '\r') {
            continue;
        } else if (t->plen + 1 < sizeof(t->partial)) {
            t->partial[t->plen++] = (unsigned char)c >= 0x20 && c != 0x7f ? c : '?';
        }
    }
    return 0;
}

static void count(keel_mailer *m, keel_mail_verdict v, uint64_t start_ns)
{
    const char *lv[] = {keel_mail_verdict_name(v)};
    keel_metric_add(m->m_total, m->shard, lv, 1);
    keel_metric_observe(m->m_seconds, m->shard, NULL,
                        (double)(keel_now_ns() - start_ns) / 1e9);
}

static keel_mail_verdict smtp_once(keel_mailer *m, CURL *e, const char *from, const char *to,
                                   const char *data, size_t len, int fresh,
                                   keel_mail_result *res, int *retry_fresh)
{
    char env_from[300], env_to[300];
    snprintf(env_from, sizeof(env_from), "<%s>", from);
    snprintf(env_to, sizeof(env_to), "<%s>", to);
    struct curl_slist *rcpt = curl_slist_append(NULL, env_to);
    upload u = {data, len, 0};
    trace t;
    memset(&t, 0, sizeof(t));
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(e, CURLOPT_URL, m->o.smtp_url);
    curl_easy_setopt(e, CURLOPT_MAIL_FROM, env_from);
    curl_easy_setopt(e, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(e, CURLOPT_READDATA, &u);
    curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)m->o.timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)m->o.connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_USE_SSL, m->o.smtp_tls ? (long)CURLUSESSL_ALL
                                                        : (long)CURLUSESSL_TRY);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, m->o.smtp_tls_verify ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, m->o.smtp_tls_verify ? 2L : 0L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(e, CURLOPT_VERBOSE, 1L);
    curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, on_debug);
    curl_easy_setopt(e, CURLOPT_DEBUGDATA, &t);
    if (m->o.smtp_user[0]) {
        curl_easy_setopt(e, CURLOPT_USERNAME, m->o.smtp_user);
        curl_easy_setopt(e, CURLOPT_PASSWORD, m->o.smtp_password);
    }
    if (fresh)
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
    CURLcode cc = curl_easy_perform(e);
    long code = 0, connects = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &connects);
    curl_slist_free_all(rcpt);
    /* the code of the reply that failed us (curl may report a later or
     * an intermediate one, e.g. 334 during AUTH) */
    if (cc != CURLE_OK && t.last_err[0])
        code = strtol(t.last_err, NULL, 10);
    res->code = (int)code;
    keel_mail_verdict v;
    if (cc == CURLE_OK) {
        v = KEEL_MAIL_SENT;
        snprintf(res->reply, sizeof(res->reply), "%s", t.last[0] ? t.last : "accepted");
        return v;
    }
    if (code >= 500 && code < 600 && !t.auth_reply && cc != CURLE_LOGIN_DENIED)
        v = KEEL_MAIL_PERMANENT;
    else
        v = KEEL_MAIL_TRANSIENT;
    if (code >= 400 && t.last_err[0])
        snprintf(res->reply, sizeof(res->reply), "%s", t.last_err);
    else
        snprintf(res->reply, sizeof(res->reply), "%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
    /* a reused connection that the server had closed: nothing was
     * accepted, nothing refused; worth one more try on a new one */
    *retry_fresh = !fresh && connects == 0 && code == 0 &&
                   (cc == CURLE_SEND_ERROR || cc == CURLE_RECV_ERROR || cc == CURLE_GOT_NOTHING ||
                    cc == CURLE_WEIRD_SERVER_REPLY);
    return v;
}

keel_mail_verdict keel_mailer_send_raw(keel_mailer *m, const char *from, const char *to,
                                       const char *data, size_t len, keel_mail_result *res)
{
    res->code = 0;
    res->reply[0] = '\0';
    if (!keel_mail_address_ok(from) || !keel_mail_address_ok(to) || strpbrk(from, "\r\n") ||
        strpbrk(to, "\r\n")) {
        snprintf(res->reply, sizeof(res->reply), "envelope: not an address keel sends to");
        return res->verdict = KEEL_MAIL_INVALID;
    }
    if (!m->o.smtp_url[0]) {
        snprintf(res->reply, sizeof(res->reply), "no SMTP_URL: nothing sent");
        return res->verdict = KEEL_MAIL_TRANSIENT;
    }
    CURL *e = thread_easy();
    if (!e) {
        snprintf(res->reply, sizeof(res->reply), "curl_easy_init failed");
        return res->verdict = KEEL_MAIL_TRANSIENT;
    }
    int again = 0;
    keel_mail_verdict v = smtp_once(m, e, from, to, data, len, 0, res, &again);
    if (again) {
        curl_easy_reset(e);
        v = smtp_once(m, e, from, to, data, len, 1, res, &again);
    }
    return res->verdict = v;
}

/* ---------------------------------------------------------------- the outbox */

/* The head of a built message as {name: value} (folded lines unfolded). */
static json_t *headers_json(const char *msg, size_t len)
{
    json_t *h = json_object();
    const char *p = msg, *end = msg + len;
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!eol || eol == p)
            break;
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        keel_buf v = {0};
        if (colon) {
            const char *vs = colon + 1;
            while (vs < eol && *vs == ' ')
                vs++;
            keel_buf_append(&v, vs, (size_t)(eol - vs));
            /* continuation lines */
            while (eol + 2 < end && (eol[2] == ' ' || eol[2] == '\t')) {
                const char *n = memmem(eol + 2, (size_t)(end - eol - 2), "\r\n", 2);
                if (!n)
                    break;
                keel_buf_append(&v, eol + 2, (size_t)(n - eol - 2));
                eol = n;
            }
            char name[64];
            size_t nl = (size_t)(colon - p) < sizeof(name) - 1 ? (size_t)(colon - p) : sizeof(name) - 1;
            memcpy(name, p, nl);
            name[nl] = '\0';
            json_object_set_new(h, name, json_stringn(v.data ? v.data : "", v.len));
        } else {
            while (eol + 2 < end && (eol[2] == ' ' || eol[2] == '\t')) {
                const char *n = memmem(eol + 2, (size_t)(end - eol - 2), "\r\n", 2);
                if (!n)
                    break;
                eol = n;
            }
        }
        keel_buf_free(&v);
        p = eol + 2;
    }
    return h;
}

static void outbox_put(keel_mailer *m, const keel_mail_msg *msg, const char *mid,
                       const char *built, size_t len)
{
    json_t *h = headers_json(built, len);
    json_t *item = json_pack("{s:s, s:s, s:s, s:s, s:I, s:O, s:s, s:s?}", "to", msg->to, "from",
                             msg->from, "subject", msg->subject, "message_id", mid, "date",
                             (json_int_t)msg->date, "headers", h, "text", msg->text, "html",
                             msg->html);
    /* the log line: headers and the text part (never the HTML, never a
     * credential: the mailer's own secrets are not in the message) */
    keel_log(KEEL_LOG_INFO, "mail.outbox", "{s:s, s:s, s:s, s:O, s:s*}", "to", msg->to,
             "subject", msg->subject, "message_id", mid, "headers", h, "text",
             m->o.log_text ? msg->text : NULL);
    json_decref(h);
    if (!item)
        return;
    pthread_mutex_lock(&m->mu);
    json_decref(m->ring[m->ring_next]);
    m->ring[m->ring_next] = item;
    m->ring_next = (m->ring_next + 1) % m->ring_cap;
    if (m->ring_len < m->ring_cap)
        m->ring_len++;
    pthread_mutex_unlock(&m->mu);
}

json_t *keel_mailer_outbox_json(keel_mailer *m)
{
    json_t *a = json_array();
    pthread_mutex_lock(&m->mu);
    size_t start = (m->ring_next + m->ring_cap - m->ring_len) % m->ring_cap;
    for (size_t i = 0; i < m->ring_len; i++)
        json_array_append(a, m->ring[(start + i) % m->ring_cap]);
    pthread_mutex_unlock(&m->mu);
    return a;
}

/* ---------------------------------------------------------------- send */

keel_mail_verdict keel_mailer_send(keel_mailer *m, const keel_mail_send_args *a,
                                   keel_mail_result *res)
{
    uint64_t start = keel_now_ns();
    memset(res, 0, sizeof(*res));
    keel_mail_rendered r = {0};
    keel_mail_msg msg = {0};
    keel_buf built = {0};
    char err[256] = "";
    msg.from = a->from ? a->from : m->from_addr;
    msg.from_name = a->from ? a->from_name : (m->from_name[0] ? m->from_name : NULL);
    msg.to = a->to;
    msg.to_name = a->to_name;
    msg.date = (int64_t)time(NULL);
    if (a->template_name) {
        int rc = keel_mail_render(m->o.template_dir, a->template_name, a->vars, &r, err,
                                  sizeof(err));
        if (rc < 0) {
            snprintf(res->reply, sizeof(res->reply), "%s", err);
            res->verdict = KEEL_MAIL_INVALID;
            goto done;
        }
        msg.subject = r.subject;
        msg.text = r.text;
        msg.html = r.html;
    } else {
        msg.subject = a->subject;
        msg.text = a->text;
        msg.html = a->html;
    }
    /* (a recipient that is not an address is the builder's to report) */
    if (a->notification_id && a->to && keel_mail_address_ok(a->to)) {
        const char *dom = strchr(msg.from ? msg.from : "", '@');
        if (keel_mail_message_id(a->notification_id, a->to, dom ? dom + 1 : m->domain,
                                 res->message_id, sizeof(res->message_id)) < 0) {
            snprintf(res->reply, sizeof(res->reply),
                     "notification id: contains a line break (CR or LF), or is too long: refused");
            res->verdict = KEEL_MAIL_INVALID;
            goto done;
        }
        msg.message_id = res->message_id;
    }
    if (keel_mail_build(&msg, &built, err, sizeof(err)) < 0) {
        snprintf(res->reply, sizeof(res->reply), "%s", err);
        res->verdict = KEEL_MAIL_INVALID;
        goto done;
    }
    if (!msg.message_id) { /* the random one the builder chose */
        const char *p = strstr(built.data, "\r\nMessage-ID: ");
        if (p) {
            p += 14;
            size_t n = strcspn(p, "\r");
            snprintf(res->message_id, sizeof(res->message_id), "%.*s", (int)n, p);
        }
    }
    if (keel_mailer_smtp(m)) {
        keel_mailer_send_raw(m, msg.from, msg.to, built.data, built.len, res);
    } else {
        outbox_put(m, &msg, res->message_id, built.data, built.len);
        res->verdict = KEEL_MAIL_SENT;
        res->code = 250;
        snprintf(res->reply, sizeof(res->reply), "logged to the outbox (no SMTP_URL)");
    }
done:
    if (res->verdict != KEEL_MAIL_SENT)
        keel_log(res->verdict == KEEL_MAIL_TRANSIENT ? KEEL_LOG_WARN : KEEL_LOG_ERROR,
                 "mail.failed", "{s:s, s:s, s:i, s:s}", "to", a->to ? a->to : "", "verdict",
                 keel_mail_verdict_name(res->verdict), "code", res->code, "reply", res->reply);
    count(m, res->verdict, start);
    keel_buf_free(&built);
    keel_mail_rendered_free(&r);
    return res->verdict;
}
