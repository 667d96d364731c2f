/* otlp.c — sends the tracer's OTLP/HTTP JSON batches (keel/otlp.h). */
#include "keel/otlp.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "keel/log.h"

typedef struct otlp {
    keel_http_client *client;
    char *url;
    keel_http_header *headers; /* Content-Type first, then the configured ones */
    size_t nheaders;
    char **strings;            /* what the headers point to */
    size_t nstrings;
    uint64_t timeout_ms;
} otlp;

typedef struct otlp_call {
    keel_trace_sent_cb done;
    void *arg;
} otlp_call;

uint64_t keel_otlp_rejected(const char *body, size_t len)
{
    if (!body || !len)
        return 0;
    json_t *j = json_loadb(body, len, 0, NULL);
    json_t *v = json_object_get(json_object_get(j, "partialSuccess"), "rejectedSpans");
    uint64_t n = 0;
    if (json_is_integer(v) && json_integer_value(v) > 0)
        n = (uint64_t)json_integer_value(v);
    else if (json_is_string(v))
        n = strtoull(json_string_value(v), NULL, 10);
    json_decref(j);
    return n;
}

/* Retry-After: delta seconds or an HTTP date; 0 when absent or past. */
static uint64_t retry_after_ms(keel_str v)
{
    if (!v.ptr || !v.len || v.len > 64)
        return 0;
    char s[65];
    memcpy(s, v.ptr, v.len);
    s[v.len] = '\0';
    char *end;
    unsigned long long secs = strtoull(s, &end, 10);
    if (end != s && *end == '\0')
        return secs > 3600 ? 3600000 : secs * 1000;
    time_t when = curl_getdate(s, NULL);
    time_t now = time(NULL);
    return when > now ? (uint64_t)(when - now) * 1000 : 0;
}

static void on_answer(void *arg, int status, const keel_http_response *res)
{
    otlp_call *k = arg;
    if (status < 0) {
        k->done(k->arg, status, 0, 0);
    } else {
        uint64_t ra = retry_after_ms(keel_http_response_header(res, "retry-after"));
        uint64_t rej = res->status >= 200 && res->status < 300
                           ? keel_otlp_rejected(res->body, res->body_len)
                           : 0;
        k->done(k->arg, res->status, ra, rej);
    }
    keel_free(k);
}

static int otlp_send(void *ctx, keel_worker *w, const char *body, size_t len,
                     keel_trace_sent_cb done, void *arg)
{
    otlp *o = ctx;
    otlp_call *k = keel_malloc(sizeof(*k));
    k->done = done;
    k->arg = arg;
    keel_http_call call = {.method = "POST", .url = o->url, .headers = o->headers,
                           .nheaders = o->nheaders, .body = body, .body_len = len,
                           .timeout_ms = o->timeout_ms, .target = "otlp",
                           /* the tracer's batch buffer, left alone until on_answer */
                           .flags = KEEL_HTTP_BODY_BORROWED};
    call.retry.max_attempts = 1; /* the tracer retries, after Retry-After */
    int rc = keel_http_request(o->client, w, &call, on_answer, k);
    if (rc < 0)
        keel_free(k);
    return rc;
}

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
    keel_buf *b = arg;
    if (b->len + size * n > (1u << 20))
        return 0;
    keel_buf_append(b, p, size * n);
    return size * n;
}

static int otlp_send_sync(void *ctx, const char *body, size_t len, uint64_t timeout_ms,
                          uint64_t *rejected)
{
    otlp *o = ctx;
    uint64_t deadline = keel_now_ms() + timeout_ms;
    int status = KEEL_EIO;
    for (int attempt = 0; attempt < 3; attempt++) {
        uint64_t now = keel_now_ms();
        if (now >= deadline)
            break;
        CURL *e = curl_easy_init();
        if (!e)
            return KEEL_EIO;
        struct curl_slist *hl = NULL;
        keel_buf line = {0}, answer = {0};
        for (size_t i = 0; i < o->nheaders; i++) {
            line.len = 0;
            keel_buf_printf(&line, "%.*s: %.*s", (int)o->headers[i].name.len,
                            o->headers[i].name.ptr, (int)o->headers[i].value.len,
                            o->headers[i].value.ptr);
            keel_buf_append(&line, "", 1);
            hl = curl_slist_append(hl, line.data);
        }
        hl = curl_slist_append(hl, "Expect:");
        curl_easy_setopt(e, CURLOPT_URL, o->url);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, hl);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(deadline - now));
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, &answer);
        CURLcode cc = curl_easy_perform(e);
        long code = 0;
        char *ra = NULL;
        struct curl_header *h = NULL;
        if (cc == CURLE_OK) {
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
            if (curl_easy_header(e, "Retry-After", 0, CURLH_HEADER, -1, &h) == CURLHE_OK)
                ra = h->value;
        }
        uint64_t wait = ra ? retry_after_ms(keel_str_c(ra)) : 200;
        status = cc == CURLE_OK ? (int)code : cc == CURLE_OPERATION_TIMEDOUT ? KEEL_ETIMEDOUT
                                                                              : KEEL_EIO;
        if (code >= 200 && code < 300 && rejected)
            *rejected = keel_otlp_rejected(answer.data, answer.len);
        curl_slist_free_all(hl);
        curl_easy_cleanup(e);
        keel_buf_free(&line);
        keel_buf_free(&answer);
        if (!(code == 429 || code == 502 || code == 503 || code == 504))
            break;
        if (keel_now_ms() + wait >= deadline)
            break;
        struct timespec ts = {(time_t)(wait / 1000), (long)(wait % 1000) * 1000000};
        nanosleep(&ts, NULL); /* the main thread, after the workers stopped */
    }
    return status;
}

static void otlp_free(void *ctx)
{
    otlp *o = ctx;
    for (size_t i = 0; i < o->nstrings; i++)
        keel_free(o->strings[i]);
    keel_free(o->strings);
    keel_free(o->headers);
    keel_free(o->url);
    keel_free(o);
}

static char *keep(otlp *o, const char *s)
{
    o->strings = keel_realloc(o->strings, (o->nstrings + 1) * sizeof(char *));
    return o->strings[o->nstrings++] = keel_strdup(s);
}

static void add_header(const char *k, const char *v, void *arg)
{
    otlp *o = arg;
    if (strpbrk(k, "\r\n:") || strpbrk(v, "\r\n"))
        return; /* would split the header block */
    o->headers = keel_realloc(o->headers, (o->nheaders + 1) * sizeof(keel_http_header));
    o->headers[o->nheaders].name = keel_str_c(keep(o, k));
    o->headers[o->nheaders].value = keel_str_c(keep(o, v));
    o->nheaders++;
}

int keel_otlp_exporter(keel_trace_exporter *out, keel_http_client *c, const keel_tracer *t)
{
    const keel_trace_options *to = keel_tracer_options(t);
    const char *url = keel_trace_export_url(to);
    if (!c || !*url)
        return KEEL_EINVAL;
    otlp *o = keel_calloc(1, sizeof(*o));
    o->client = c;
    o->url = keel_strdup(url);
    o->timeout_ms = to->export_timeout_ms;
    add_header("Content-Type", "application/json", o);
    keel_trace_kv_parse(to->headers, add_header, o);
    *out = (keel_trace_exporter){.send = otlp_send, .send_sync = otlp_send_sync,
                                 .free = otlp_free, .ctx = o};
    return 0;
}
