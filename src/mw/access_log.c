/* access_log.c — one JSON line per request, written from on_complete.
 * The line is built by hand into the worker's log buffer (no JSON library
 * on this path) and flushed once per loop iteration. */
#include "keel/log.h"
#include "keel/mw.h"

typedef struct access_cfg {
    int all;
    uint64_t slow_ms;
} access_cfg;

static void str_field(keel_buf *b, const char *key, const char *v, size_t n)
{
    keel_buf_append(b, ",\"", 2);
    keel_buf_append_str(b, key);
    keel_buf_append(b, "\":\"", 3);
    keel_buf_append_json_escaped(b, v, n > 1024 ? 1024 : n);
    keel_buf_append(b, "\"", 1);
}

static void on_complete(keel_req *r, void *data)
{
    access_cfg *cfg = data;
    uint64_t dur_ns = keel_req_elapsed_ns(r);
    int status = keel_res_get_status(r);
    int slow = cfg->slow_ms && dur_ns / 1000000u >= cfg->slow_ms;
    const keel_route *rt = keel_req_route(r);
    if (!slow && (!cfg->all || (rt && (rt->flags & KEEL_ROUTE_NO_LOG) && status < 500)))
        return;
    int level = slow ? KEEL_LOG_WARN : KEEL_LOG_INFO;
    /* the line's request_id and trace_id come from the log context, as in
     * every other line logged for the request */
    keel_log_set_context(keel_req_id(r), keel_req_trace_id(r));
    keel_buf *b = keel_log_begin(level, slow ? "slow request" : "request");
    keel_req *cur = keel_req_current();
    keel_log_set_context(cur ? keel_req_id(cur) : NULL, cur ? keel_req_trace_id(cur) : NULL);
    if (!b)
        return;
    const keel_http_request_head *h = keel_req_head(r);
    str_field(b, "method", h->method_str.len ? h->method_str.ptr : "-",
              h->method_str.len ? h->method_str.len : 1);
    const char *route = keel_req_route_label(r);
    str_field(b, "route", route, strlen(route));
    str_field(b, "path", h->path.len ? h->path.ptr : "-", h->path.len ? h->path.len : 1);
    keel_buf_append_str(b, ",\"status\":");
    keel_buf_append_u64(b, (uint64_t)status);
    keel_buf_append_str(b, ",\"bytes\":");
    keel_buf_append_u64(b, keel_res_bytes(r));
    keel_buf_printf(b, ",\"duration_ms\":%.3f", (double)dur_ns / 1e6);
    const char *remote = keel_req_client_addr(r);
    str_field(b, "remote", remote, strlen(remote));
    keel_str ua = keel_req_header(r, "user-agent");
    if (ua.ptr)
        str_field(b, "user_agent", ua.ptr, ua.len);
    keel_log_end(b);
}

keel_middleware keel_mw_access_log(int all, uint64_t slow_ms)
{
    access_cfg *c = keel_calloc(1, sizeof(*c));
    c->all = all;
    c->slow_ms = slow_ms;
    keel_middleware m = {.name = "access_log", .phase = KEEL_PHASE_EDGE, .on_request = NULL,
                         .on_complete = on_complete, .dispose = keel_free, .data = c};
    return m;
}
