/* util.c — helpers shared by the reference service's resources. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/app.h"

json_t *app_json_body(keel_req *r)
{
    return keel_req_json(r);
}

void app_invalid(keel_req *r, const char *pointer, const char *message)
{
    keel_respond_problem_ex(r, 422, NULL, "the request is not valid",
                            json_pack("{s:[{s:s,s:s}]}", "errors", "pointer", pointer, "message",
                                      message));
}

void keel_req_resume_respond_text(keel_req *r, int status, const char *text)
{
    if (!keel_req_is_finished(r))
        keel_respond_text(r, status, text);
    keel_req_unhold(r);
}

/* RFC 3339 (keel_format_date_time) to Unix seconds, the offset applied and
 * fractions dropped; a leap second counts as :59. */
int app_parse_time(const char *s, size_t n, int64_t *out)
{
    if (!s || !keel_format_date_time(s, n))
        return -1;
    struct tm tm = {0};
    tm.tm_year = atoi(s) - 1900;
    tm.tm_mon = atoi(s + 5) - 1;
    tm.tm_mday = atoi(s + 8);
    tm.tm_hour = atoi(s + 11);
    tm.tm_min = atoi(s + 14);
    tm.tm_sec = atoi(s + 17);
    if (tm.tm_sec == 60)
        tm.tm_sec = 59;
    int64_t t = (int64_t)timegm(&tm);
    size_t i = 19;
    while (i < n && s[i] != 'Z' && s[i] != 'z' && s[i] != '+' && s[i] != '-')
        i++;
    if (i < n && (s[i] == '+' || s[i] == '-')) {
        int64_t off = (int64_t)atoi(s + i + 1) * 3600 + (int64_t)atoi(s + i + 4) * 60;
        t -= s[i] == '+' ? off : -off;
    }
    *out = t;
    return 0;
}

void app_format_time(int64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int app_link_next(keel_req *r, const char *param, const char *value)
{
    keel_str path = keel_req_path(r), q = keel_req_query(r);
    size_t plen = strlen(param);
    keel_buf b = {0};
    keel_buf_printf(&b, "<%.*s?", (int)path.len, path.ptr);
    /* the request's own parameters, its cursor replaced */
    const char *p = q.ptr, *end = q.ptr + q.len;
    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        if (e > p && !((size_t)(e - p) > plen && !memcmp(p, param, plen) && p[plen] == '='))
            keel_buf_printf(&b, "%.*s&", (int)(e - p), p);
        p = amp ? amp + 1 : end;
    }
    keel_buf_printf(&b, "%s=%s>; rel=\"next\"", param, value);
    keel_buf_append(&b, "", 1);
    int rc = keel_res_header(r, "Link", b.data);
    keel_buf_free(&b);
    return rc;
}
