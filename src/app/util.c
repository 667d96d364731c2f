/* util.c — helpers shared by the reference service's resources. */
#include <jansson.h>
#include <stdio.h>

#include "app/app.h"

#define JSON_MAX_DEPTH 64

/* Depth of nesting, counted without recursion on the raw text (strings
 * skipped), so a hostile body cannot exhaust the stack. */
static int too_deep(keel_str s)
{
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < s.len; i++) {
        char c = s.ptr[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > JSON_MAX_DEPTH)
                return 1;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return 0;
}

json_t *app_json_body(keel_req *r)
{
    keel_str ct = keel_req_header(r, "content-type");
    int is_json = 0;
    if (ct.ptr) {
        size_t n = 0;
        while (n < ct.len && ct.ptr[n] != ';' && ct.ptr[n] != ' ')
            n++;
        keel_str mt = {ct.ptr, n};
        is_json = keel_str_ieq_c(mt, "application/json") ||
                  (n > 5 && ct.ptr[n - 5] == '+' && keel_str_ieq_c((keel_str){ct.ptr + n - 4, 4}, "json"));
    }
    if (!is_json) {
        keel_respond_problem(r, 415, "expected a JSON body (Content-Type: application/json)");
        return NULL;
    }
    keel_str b = keel_req_body(r);
    if (too_deep(b)) {
        keel_respond_problem(r, 400, "JSON nesting too deep");
        return NULL;
    }
    json_error_t e;
    json_t *v = json_loadb(b.ptr ? b.ptr : "", b.len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e);
    if (!v) {
        char detail[256];
        snprintf(detail, sizeof(detail), "malformed JSON at byte %d: %s", e.position, e.text);
        keel_respond_problem_ex(r, 400, NULL, detail,
                                json_pack("{s:i}", "offset", e.position));
        return NULL;
    }
    return v;
}

void keel_req_resume_respond_text(keel_req *r, int status, const char *text)
{
    if (!keel_req_is_finished(r))
        keel_respond_text(r, status, text);
    keel_req_unhold(r);
}
