/* server.c — workers, listeners, routes, middleware and the lifecycle
 * (start, drain on SIGTERM/SIGINT, exit).
 *
 * Each worker owns a libuv loop and its own listening socket bound with
 * SO_REUSEPORT, so the kernel spreads connections and no lock is taken on
 * the request path. The main thread only starts, signals and waits.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <jansson.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/server_internal.h"
#include "keel/log.h"

#define SWEEP_MS 250

/* ---------------------------------------------------------------- setup */

keel_server *keel_server_new(const keel_config *cfg)
{
    keel_library_init();
    keel_server *s = keel_calloc(1, sizeof(*s));
    keel_config_copy(&s->cfg, cfg);
    s->nworkers = cfg->workers ? cfg->workers : uv_available_parallelism();
    if (s->nworkers == 0)
        s->nworkers = 1;
    s->limits.max_request_line = cfg->max_request_line;
    s->limits.max_header_line = cfg->max_header_size;
    s->limits.max_headers = cfg->max_headers;
    s->limits.max_head = cfg->max_head_size;
    s->router = keel_router_new();
    /* validated when loaded; an invalid list here trusts no one */
    int np = keel_cidr_parse_list(cfg->trust_proxy, s->proxies, KEEL_MAX_PROXIES);
    s->nproxies = np > 0 ? (size_t)np : 0;
    s->fwd = cfg->trust_proxy_header == 1 ? KEEL_FWD_FORWARDED : KEEL_FWD_XFF;
    s->ipcap = keel__ipcap_new();
    s->ws_ipcap = keel__ipcap_new();
    s->ws = keel_config_get(&s->cfg, &keel_ws_config);
    uv_mutex_init(&s->done_mu);
    uv_cond_init(&s->done_cond);
    return s;
}

const keel_config *keel_server_config(const keel_server *s)
{
    return &s->cfg;
}

static keel_method method_from_name(const char *m)
{
    for (int i = 1; i < KEEL_METHOD__COUNT; i++)
        if (m && strcmp(m, keel_method_name((keel_method)i)) == 0)
            return (keel_method)i;
    return KEEL_METHOD_OTHER;
}

int keel_server_add_routes(keel_server *s, const keel_route *routes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const keel_route *rt = &routes[i];
        keel_method m = method_from_name(rt->method);
        if (m == KEEL_METHOD_OTHER || (!rt->handler && !rt->websocket) || !rt->path ||
            (rt->websocket && m != KEEL_METHOD_GET)) {
            keel_log(KEEL_LOG_ERROR, "invalid route", "{s:s,s:s,s:s}", "name",
                     rt->name ? rt->name : "?", "method", rt->method ? rt->method : "?",
                     "path", rt->path ? rt->path : "?");
            return KEEL_EINVAL;
        }
        route_entry *e = keel_calloc(1, sizeof(*e));
        e->route = rt;
        e->index = (unsigned)s->nroutes;
        e->timeout_ms = rt->timeout_ms ? rt->timeout_ms : s->cfg.handler_timeout_ms;
        int rc = keel_router_add(s->router, m, rt->path, e);
        if (rc < 0) {
            keel_log(KEEL_LOG_ERROR, rc == KEEL_EEXISTS ? "duplicate route" : "invalid route pattern",
                     "{s:s,s:s,s:s}", "name", rt->name ? rt->name : "?", "method",
                     rt->method, "path", rt->path);
            keel_free(e);
            return rc;
        }
        if (s->nroutes == s->cap_routes) {
            s->cap_routes = s->cap_routes ? s->cap_routes * 2 : 32;
            s->routes = keel_realloc(s->routes, s->cap_routes * sizeof(*s->routes));
            s->entries = keel_realloc(s->entries, s->cap_routes * sizeof(*s->entries));
        }
        s->routes[s->nroutes] = rt;
        s->entries[s->nroutes] = e;
        s->nroutes++;
    }
    return 0;
}

size_t keel_server_routes(const keel_server *s, const keel_route *const **out)
{
    *out = s->routes;
    return s->nroutes;
}

/* ---------------------------------------------------------------- phases */

static const char *const phase_names[] = {
    [KEEL_PHASE_APP] = "app",       [KEEL_PHASE_EDGE] = "edge",
    [KEEL_PHASE_AUTHN] = "authn",   [KEEL_PHASE_LIMIT] = "limit",
    [KEEL_PHASE_AUTHZ] = "authz",   [KEEL_PHASE_VALIDATE] = "validate",
    [KEEL_PHASE_RESPOND] = "respond",
};

/* Position of a phase in the chain: APP is 0 in the enum (the default of
 * a zeroed table) but runs after VALIDATE. */
static const int phase_rank[] = {
    [KEEL_PHASE_EDGE] = 0,  [KEEL_PHASE_AUTHN] = 1,    [KEEL_PHASE_LIMIT] = 2,
    [KEEL_PHASE_AUTHZ] = 3, [KEEL_PHASE_VALIDATE] = 4, [KEEL_PHASE_APP] = 5,
    [KEEL_PHASE_RESPOND] = 6,
};

#define NPHASES (sizeof(phase_names) / sizeof(phase_names[0]))

const char *keel_phase_name(keel_phase p)
{
    return (unsigned)p < NPHASES ? phase_names[p] : "?";
}

int keel_server_use(keel_server *s, const keel_middleware *mw)
{
    const char *name = mw->name ? mw->name : "?";
    if ((unsigned)mw->phase >= NPHASES ||
        (mw->phase == KEEL_PHASE_RESPOND && mw->on_request)) {
        keel_log(KEEL_LOG_ERROR,
                 (unsigned)mw->phase >= NPHASES ? "middleware with an unknown phase"
                                                : "a respond-phase middleware has on_request",
                 "{s:s,s:i}", "middleware", name, "phase", (int)mw->phase);
        if (mw->dispose)
            mw->dispose(mw->data);
        return KEEL_EINVAL;
    }
    /* after every middleware of an earlier or the same phase */
    size_t at = s->nmws;
    while (at > 0 && phase_rank[s->mws[at - 1].phase] > phase_rank[mw->phase])
        at--;
    s->mws = keel_realloc(s->mws, (s->nmws + 1) * sizeof(*s->mws));
    memmove(&s->mws[at + 1], &s->mws[at], (s->nmws - at) * sizeof(*s->mws));
    s->mws[at] = *mw;
    s->nmws++;
    s->request_at = keel_realloc(s->request_at, s->nmws * sizeof(size_t));
    s->response_at = keel_realloc(s->response_at, s->nmws * sizeof(size_t));
    s->complete_at = keel_realloc(s->complete_at, s->nmws * sizeof(size_t));
    size_t nr = 0, nc = 0, nresp = 0;
    for (size_t i = 0; i < s->nmws; i++) {
        if (s->mws[i].on_request)
            s->request_at[nr++] = i;
        if (s->mws[i].on_response)
            s->response_at[nresp++] = i;
        if (s->mws[i].on_complete)
            s->complete_at[nc++] = i;
    }
    s->nrequest = nr;
    s->nresponse_hooks = nresp;
    s->ncomplete = nc;
    return 0;
}

const char *keel_route_auth(const keel_route *rt)
{
    return rt->auth && strcmp(rt->auth, "none") ? rt->auth : NULL;
}

/* The route fields a middleware may declare, and where they are. */
static const char *route_field(const keel_route *rt, const char *field)
{
    if (!strcmp(field, "auth"))
        return keel_route_auth(rt);
    if (!strcmp(field, "permission"))
        return rt->permission;
    if (!strcmp(field, "request_schema"))
        return rt->request_schema;
    if (!strcmp(field, "response_schema"))
        return rt->response_schema;
    if (!strcmp(field, "query_schema"))
        return rt->query_schema;
    if (!strcmp(field, "params_schema"))
        return rt->params_schema;
    if (!strcmp(field, "rate_limit"))
        return rt->rate_limit;
    return NULL;
}

static const char *const route_fields[] = {"auth",         "permission",    "request_schema",
                                           "response_schema", "query_schema", "params_schema",
                                           "rate_limit",   NULL};

static int mw_reads(const keel_middleware *mw, const char *field)
{
    for (const char *const *f = mw->reads; f && *f; f++)
        if (!strcmp(*f, field))
            return 1;
    return 0;
}

static int declared(const keel_server *s, const char *field)
{
    for (size_t i = 0; i < s->nmws; i++)
        if (mw_reads(&s->mws[i], field))
            return 1;
    return 0;
}

int keel_server_enforces(const keel_server *s, const char *field)
{
    for (size_t i = 0; i < s->nmws; i++)
        if (mw_reads(&s->mws[i], field) && s->mws[i].on_request)
            return 1;
    return 0;
}

static void route_error(FILE *err, const keel_route *rt, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void route_error(FILE *err, const keel_route *rt, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    const char *name = rt->name ? rt->name : "?";
    keel_log(KEEL_LOG_ERROR, "route declaration not enforced or not allowed",
             "{s:s,s:s,s:s,s:s}", "route", name, "method", rt->method, "path", rt->path,
             "reason", why);
    if (err)
        fprintf(err, "route %s (%s %s): %s\n", name, rt->method, rt->path, why);
}

int keel_server_check_routes(keel_server *s, FILE *err)
{
    int bad = 0;
    for (size_t i = 0; i < s->nroutes; i++) {
        const keel_route *rt = s->routes[i];
        int ok = 1;
        for (const char *const *f = route_fields; *f; f++) {
            const char *v = route_field(rt, *f);
            if (!v)
                continue;
            if (!declared(s, *f)) {
                /* schemas are long: name the field, not the value */
                int text = !strcmp(*f, "auth") || !strcmp(*f, "permission") ||
                           !strcmp(*f, "rate_limit");
                route_error(err, rt, "%s%s%s%s but no installed middleware enforces %s", *f,
                            text ? " = \"" : " is set", text ? v : "", text ? "\"" : "", *f);
                ok = 0;
            }
        }
        /* a streamed body is read by the handler, after every middleware:
         * nothing could validate it against a schema */
        if ((rt->flags & KEEL_ROUTE_STREAM_BODY) && rt->request_schema) {
            route_error(err, rt, "request_schema is set but the body is streamed "
                                 "(KEEL_ROUTE_STREAM_BODY): nothing can enforce it");
            ok = 0;
        }
        /* each middleware that reads a field of this route judges its values */
        for (size_t m = 0; ok && m < s->nmws; m++) {
            const keel_middleware *mw = &s->mws[m];
            if (!mw->check_route)
                continue;
            int uses = 0;
            for (const char *const *f = mw->reads; f && *f; f++)
                uses |= route_field(rt, *f) != NULL;
            if (!uses)
                continue;
            char why[384] = "";
            if (mw->check_route(rt, mw->data, why, sizeof(why)) < 0) {
                route_error(err, rt, "%s", why[0] ? why : "not allowed");
                ok = 0;
            }
        }
        bad += !ok;
    }
    return bad;
}

keel_server_state keel_server_get_state(const keel_server *s)
{
    return (keel_server_state)__atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
}

void keel_server_add_worker_hooks(keel_server *s, const keel_worker_hooks *h)
{
    s->hooks = keel_realloc(s->hooks, (s->nhooks + 1) * sizeof(*s->hooks));
    s->hooks[s->nhooks++] = *h;
}

keel_worker *keel_server_worker(const keel_server *s, unsigned i)
{
    return s->workers && i < s->nworkers ? s->workers[i] : NULL;
}

unsigned keel_worker_id(const keel_worker *w)
{
    return w->id;
}

unsigned keel_server_workers(const keel_server *s)
{
    return s->nworkers;
}

void keel_server_stats_get(const keel_server *s, keel_server_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (unsigned i = 0; s->workers && i < s->nworkers; i++) {
        if (!s->workers[i])
            continue;
        keel_worker_stats *ws = &s->workers[i]->stats;
        out->connections_open += __atomic_load_n(&ws->connections_open, __ATOMIC_RELAXED);
        out->connections_total += __atomic_load_n(&ws->connections_total, __ATOMIC_RELAXED);
        out->requests_in_flight += __atomic_load_n(&ws->requests_in_flight, __ATOMIC_RELAXED);
        out->bytes_in += __atomic_load_n(&ws->bytes_in, __ATOMIC_RELAXED);
        out->bytes_out += __atomic_load_n(&ws->bytes_out, __ATOMIC_RELAXED);
        out->requests_pooled += __atomic_load_n(&ws->requests_pooled, __ATOMIC_RELAXED);
        out->requests_total += __atomic_load_n(&ws->requests_total, __ATOMIC_RELAXED);
        uint64_t lag = __atomic_load_n(&ws->loop_lag_ms, __ATOMIC_RELAXED);
        if (lag > out->loop_lag_ms)
            out->loop_lag_ms = lag;
    }
    if (s->pool) {
        out->work_queued = keel_pool_queued(s->pool);
        out->work_rejected = keel_pool_rejected(s->pool);
    }
}

void keel_worker_stats_get(const keel_worker *w, keel_server_stats *out)
{
    memset(out, 0, sizeof(*out));
    const keel_worker_stats *ws = &w->stats;
    out->connections_open = __atomic_load_n(&ws->connections_open, __ATOMIC_RELAXED);
    out->connections_total = __atomic_load_n(&ws->connections_total, __ATOMIC_RELAXED);
    out->requests_in_flight = __atomic_load_n(&ws->requests_in_flight, __ATOMIC_RELAXED);
    out->bytes_in = __atomic_load_n(&ws->bytes_in, __ATOMIC_RELAXED);
    out->bytes_out = __atomic_load_n(&ws->bytes_out, __ATOMIC_RELAXED);
    out->loop_lag_ms = __atomic_load_n(&ws->loop_lag_ms, __ATOMIC_RELAXED);
    out->requests_pooled = __atomic_load_n(&ws->requests_pooled, __ATOMIC_RELAXED);
    out->requests_total = __atomic_load_n(&ws->requests_total, __ATOMIC_RELAXED);
    if (w->srv->pool) {
        out->work_queued = keel_pool_queued(w->srv->pool);
        out->work_rejected = keel_pool_rejected(w->srv->pool);
    }
}

/* ---------------------------------------------------------------- listen */

static int resolve(const char *host, unsigned port, struct sockaddr_storage *ss,
                   socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *len = sizeof(*a4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*a6);
        return 0;
    }
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return KEEL_EINVAL;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    if (ss->ss_family == AF_INET)
        a4->sin_port = htons((uint16_t)port);
    else
        a6->sin6_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return 0;
}

static int open_listener(keel_server *s, unsigned port, int *fd_out)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (resolve(s->cfg.host, port, &ss, &len) < 0)
        return KEEL_EINVAL;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 4096) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    *fd_out = fd;
    return 0;
}

/* ---------------------------------------------------------------- worker */

static void on_connection(uv_stream_t *l, int status)
{
    keel_worker *w = l->data;
    if (status < 0)
        return;
    keel__conn_accept(w);
}

static void worker_finish(keel_worker *w)
{
    if (w->finished)
        return;
    w->finished = 1;
    keel_server *s = w->srv;
    for (size_t i = 0; i < s->nhooks; i++)
        if (s->hooks[i].on_stop)
            s->hooks[i].on_stop(w, s->hooks[i].arg);
    /* Posts that arrived before the close run now; later ones are refused. */
    uv_mutex_lock(&w->mbox_mu);
    w->mbox_closed = 1;
    uv_mutex_unlock(&w->mbox_mu);
    keel__worker_run_mailbox(w);
    uv_close((uv_handle_t *)&w->async, NULL);
    uv_close((uv_handle_t *)&w->sweep, NULL);
    uv_close((uv_handle_t *)&w->check, NULL);
    uv_close((uv_handle_t *)&w->drain_idle, NULL);
}

static void maybe_finish_worker(keel_worker *w)
{
    if (w->draining && w->nconns == 0 && w->pending_jobs == 0)
        worker_finish(w);
}

static void stop_listening(keel_worker *w)
{
    if (!w->listening)
        return;
    uv_close((uv_handle_t *)&w->listener, NULL);
    w->listening = 0;
    __atomic_add_fetch(&w->srv->listeners_closed, 1, __ATOMIC_ACQ_REL);
}

static void on_async(uv_async_t *a)
{
    keel_worker *w = a->data;
    keel__worker_run_mailbox(w);
    uv_mutex_lock(&w->mbox_mu);
    int drain = w->drain_requested, unlisten = w->unlisten_requested;
    uv_mutex_unlock(&w->mbox_mu);
    if (unlisten)
        stop_listening(w);
    if (drain && !w->draining) {
        w->draining = 1;
        stop_listening(w);
        keel__conn_drain_idle(w);
    }
    maybe_finish_worker(w);
}

static void on_sweep(uv_timer_t *t)
{
    keel_worker *w = t->data;
    uint64_t now = uv_now(&w->loop);
    uint64_t lag = now > w->sweep_expected ? now - w->sweep_expected : 0;
    STAT_SET(w, loop_lag_ms, lag);
    w->sweep_expected = now + SWEEP_MS;
    w->now_ms = now;
    keel__worker_update_date(w);
    keel__conn_sweep(w, now);
    keel__req_pool_trim(w);
    maybe_finish_worker(w);
}

static void on_check(uv_check_t *c)
{
    (void)c;
    keel_log_flush();
}

static void worker_main(void *arg)
{
    keel_worker *w = arg;
    keel_server *s = w->srv;
    keel_log_set_buffered(1);
    for (size_t i = 0; i < s->nhooks; i++)
        if (s->hooks[i].on_start)
            s->hooks[i].on_start(w, s->hooks[i].arg);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    keel_log_thread_close();
    uv_mutex_lock(&s->done_mu);
    s->workers_done++;
    uv_cond_signal(&s->done_cond);
    uv_mutex_unlock(&s->done_mu);
}

static int worker_init(keel_server *s, unsigned id, int fd, keel_worker **out)
{
    keel_worker *w = keel_calloc(1, sizeof(*w));
    w->srv = s;
    w->id = id;
    w->listen_fd = fd;
    w->date_sec = -1;
    uv_loop_init(&w->loop);
    uv_mutex_init(&w->mbox_mu);
    uv_tcp_init(&w->loop, &w->listener);
    w->listener.data = w;
    int rc = uv_tcp_open(&w->listener, fd);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&w->listener, 4096, on_connection);
    if (rc < 0) {
        keel_log(KEEL_LOG_ERROR, "cannot listen", "{s:s}", "error", uv_strerror(rc));
        *out = w;
        return rc;
    }
    w->listening = 1;
    uv_async_init(&w->loop, &w->async, on_async);
    w->async.data = w;
    uv_timer_init(&w->loop, &w->sweep);
    w->sweep.data = w;
    w->sweep_expected = uv_now(&w->loop) + SWEEP_MS;
    uv_timer_start(&w->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    uv_check_init(&w->loop, &w->check);
    uv_check_start(&w->check, on_check);
    uv_idle_init(&w->loop, &w->drain_idle);
    keel__worker_update_date(w);
    *out = w;
    return 0;
}

/* SO_REUSEPORT would let a second keel on the same port start and quietly
 * share its traffic (an old process left behind by a deploy, say). Probe
 * the port first with a plain bind: a listener of anyone's makes it fail. */
static int port_taken(keel_server *s, unsigned port)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (port == 0 || resolve(s->cfg.host, port, &ss, &len) < 0)
        return 0;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)); /* TIME_WAIT is fine */
    int rc = bind(fd, (struct sockaddr *)&ss, len) < 0 ? -errno : 0;
    close(fd);
    return rc == -EADDRINUSE;
}

/* Every connection is a descriptor: lift the soft limit to the hard one
 * (as nginx's worker_rlimit_nofile does) and say when it is still lower
 * than MAX_CONNECTIONS allows. */
static void raise_nofile(const keel_server *s)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    uint64_t want = s->cfg.max_connections * s->nworkers + 64;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want)
        keel_log(KEEL_LOG_INFO, "the open-file limit is below what MAX_CONNECTIONS allows",
                 "{s:I,s:I}", "nofile", (json_int_t)rl.rlim_cur, "wanted", (json_int_t)want);
}

void keel_server_take_over(keel_server *s, long old_pid)
{
    s->takeover_pid = old_pid;
}

/* PID_FILE: written (atomically: a temporary file renamed) once serving. */
static void write_pid_file(keel_server *s)
{
    const char *path = s->cfg.pid_file;
    if (!path || !*path)
        return;
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0 ||
        rename(tmp, path) != 0) {
        keel_log(KEEL_LOG_ERROR, "cannot write PID_FILE", "{s:s,s:s}", "path", path, "error",
                 strerror(errno));
        unlink(tmp);
        return;
    }
    s->wrote_pid_file = 1;
}

/* At exit: removed only while it still names this process (after an
 * upgrade it names the new one). */
static void remove_pid_file(keel_server *s)
{
    if (!s->wrote_pid_file)
        return;
    FILE *f = fopen(s->cfg.pid_file, "r");
    long pid = 0;
    if (f) {
        if (fscanf(f, "%ld", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    if (pid == (long)getpid())
        unlink(s->cfg.pid_file);
    s->wrote_pid_file = 0;
}

int keel_server_start(keel_server *s)
{
    int rc = 0;
    if (keel_server_check_routes(s, NULL) > 0) {
        keel_log(KEEL_LOG_FATAL, "not starting: routes declare what nothing enforces", NULL);
        return KEEL_EINVAL;
    }
    raise_nofile(s);
    if (!s->takeover_pid && port_taken(s, s->cfg.port)) {
        keel_log(KEEL_LOG_FATAL, "cannot listen: the address is already in use",
                 "{s:s,s:i}", "host", s->cfg.host, "port", (int)s->cfg.port);
        return -EADDRINUSE;
    }
    int *fds = keel_calloc(s->nworkers, sizeof(int));
    for (unsigned i = 0; i < s->nworkers; i++)
        fds[i] = -1;
    unsigned port = s->cfg.port;
    for (unsigned i = 0; i < s->nworkers; i++) {
        rc = open_listener(s, port, &fds[i]);
        if (rc < 0) {
            keel_log(KEEL_LOG_FATAL, "cannot listen", "{s:s,s:i,s:s}", "host",
                     s->cfg.host, "port", (int)port, "error", keel_strerror(rc));
            goto cleanup;
        }
        if (port == 0) {
            struct sockaddr_storage ss;
            socklen_t len = sizeof(ss);
            getsockname(fds[i], (struct sockaddr *)&ss, &len);
            port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                 : ((struct sockaddr_in6 *)&ss)->sin6_port);
        }
    }
    s->port = port;
    signal(SIGPIPE, SIG_IGN);
    keel_pool_opts po = {.name = "work", .threads = s->cfg.work_threads,
                         .queue_max = s->cfg.work_queue_max, .nice = s->cfg.work_nice};
    s->pool = keel__pool_new(s, &po);
    s->workers = keel_calloc(s->nworkers, sizeof(keel_worker *));
    for (unsigned i = 0; i < s->nworkers; i++) {
        rc = worker_init(s, i, fds[i], &s->workers[i]);
        fds[i] = -1;
        if (rc < 0)
            goto cleanup;
    }
    /* Logged before the workers run: the sockets already accept in the
     * kernel, and a client that got an answer finds this line written. */
    keel_log(KEEL_LOG_INFO, "listening", "{s:s,s:i,s:i,s:s}", "host", s->cfg.host,
             "port", (int)port, "workers", (int)s->nworkers, "env", s->cfg.env);
    for (unsigned i = 0; i < s->nworkers; i++) {
        uv_thread_options_t opt = {UV_THREAD_HAS_STACK_SIZE, 1 << 20};
        uv_thread_create_ex(&s->workers[i]->thread, &opt, worker_main, s->workers[i]);
        s->workers[i]->started = 1;
    }
    s->started = 1;
    __atomic_store_n(&s->state, KEEL_STATE_SERVING, __ATOMIC_RELEASE);
    char ready[64];
    snprintf(ready, sizeof(ready), "READY=1\nMAINPID=%ld", (long)getpid());
    keel__sd_notify(ready); /* systemd Type=notify: the port answers now */
    write_pid_file(s);
    if (s->takeover_pid > 0) {
        /* both listen now: the old one can drain */
        int k = kill((pid_t)s->takeover_pid, SIGTERM);
        keel_log(k == 0 ? KEEL_LOG_INFO : KEEL_LOG_ERROR,
                 k == 0 ? "upgrade: serving beside the old process; told it to drain"
                        : "upgrade: could not signal the old process",
                 "{s:I,s:s}", "old_pid", (json_int_t)s->takeover_pid, "error",
                 k == 0 ? "" : strerror(errno));
    }
cleanup:
    for (unsigned i = 0; i < s->nworkers; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    keel_free(fds);
    return rc;
}

unsigned keel_server_port(const keel_server *s)
{
    return s->port;
}

/* Two steps. First every worker closes its listener, and only when all
 * have (or after a second) do they start closing connections: a client
 * told "Connection: close" by one worker must not reconnect into the
 * accept queue of another worker about to close its listener — the
 * kernel resets what waits in a closed listener's queue. */
void keel_server_drain(keel_server *s)
{
    __atomic_store_n(&s->state, KEEL_STATE_DRAINING, __ATOMIC_RELEASE);
    keel__sd_notify("STOPPING=1");
    unsigned running = 0;
    for (unsigned i = 0; s->workers && i < s->nworkers; i++) {
        keel_worker *w = s->workers[i];
        if (!w || !w->started)
            continue;
        running++;
        uv_mutex_lock(&w->mbox_mu);
        w->unlisten_requested = 1;
        uv_mutex_unlock(&w->mbox_mu);
        uv_async_send(&w->async);
    }
    for (int waited = 0; waited < 1000 &&
                         __atomic_load_n(&s->listeners_closed, __ATOMIC_ACQUIRE) < running;
         waited++)
        usleep(1000);
    for (unsigned i = 0; s->workers && i < s->nworkers; i++) {
        keel_worker *w = s->workers[i];
        if (!w || !w->started)
            continue;
        uv_mutex_lock(&w->mbox_mu);
        w->drain_requested = 1;
        uv_mutex_unlock(&w->mbox_mu);
        uv_async_send(&w->async);
    }
}

int keel_server_wait(keel_server *s, uint64_t grace_ms)
{
    uint64_t deadline = keel_now_ms() + grace_ms;
    uv_mutex_lock(&s->done_mu);
    while (s->workers_done < s->nworkers) {
        uint64_t now = keel_now_ms();
        if (now >= deadline)
            break;
        uv_cond_timedwait(&s->done_cond, &s->done_mu, (deadline - now) * 1000000u);
    }
    int rc = s->workers_done < s->nworkers ? KEEL_ETIMEDOUT : 0;
    uv_mutex_unlock(&s->done_mu);
    return rc;
}

/* ---------------------------------------------------------------- run */

typedef struct run_ctx {
    keel_server *s;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t delay;
    int signals;
} run_ctx;

static void on_delay_over(uv_timer_t *t)
{
    run_ctx *rc = t->data;
    keel_log(KEEL_LOG_INFO, "shutdown delay over: draining", NULL);
    keel_server_drain(rc->s);
    uv_stop(t->loop);
}

void keel_server_on_hup(keel_server *s, void (*fn)(keel_server *s, void *arg), void *arg)
{
    s->hup_fn = fn;
    s->hup_arg = arg;
}

int keel_server_reload(keel_server *s, const keel_config *next)
{
    int refused = 0;
    for (size_t i = 0; i < s->nmws; i++) {
        keel_middleware *mw = &s->mws[i];
        if (!mw->reload)
            continue;
        int rc = mw->reload(mw->data, next);
        if (rc < 0) {
            refused++;
            keel_log(KEEL_LOG_ERROR, "reload: a middleware kept its old settings",
                     "{s:s,s:s}", "middleware", mw->name ? mw->name : "?", "error",
                     keel_strerror(rc));
        }
    }
    /* logged at the old level, then the new one applies */
    keel_log(refused ? KEEL_LOG_WARN : KEEL_LOG_INFO, "reload done", "{s:i,s:s}", "refused",
             refused, "log_level", keel_log_level_name(next->log_level));
    keel_log_set_level(NULL, next->log_level);
    if (keel_log_apply_levels(next->log_levels ? next->log_levels : "", 1) < 0)
        refused++; /* validated with the configuration: not expected */
    return refused;
}

static void on_hup(uv_signal_t *h, int signum)
{
    (void)signum;
    run_ctx *rc = h->data;
    if (!rc->s->hup_fn) {
        keel_log(KEEL_LOG_WARN, "SIGHUP: nothing to reload", NULL);
        return;
    }
    keel_log(KEEL_LOG_INFO, "SIGHUP: reloading the configuration", NULL);
    rc->s->hup_fn(rc->s, rc->s->hup_arg);
}

static void on_signal(uv_signal_t *h, int signum)
{
    run_ctx *rc = h->data;
    if (++rc->signals > 1) {
        keel_log(KEEL_LOG_WARN, "second signal: exiting now", "{s:i}", "signal", signum);
        keel_log_flush();
        _exit(1);
    }
    keel_server *s = rc->s;
    keel_log(KEEL_LOG_INFO, "shutting down: draining", "{s:s,s:i,s:i}", "signal",
             signum == SIGTERM ? "SIGTERM" : "SIGINT", "grace_ms",
             (int)s->cfg.shutdown_grace_ms, "delay_ms", (int)s->cfg.shutdown_delay_ms);
    if (s->cfg.shutdown_delay_ms > 0) {
        /* Not ready any more (a proxy's health check sees 503), but still
         * accepting and serving until the proxy has stopped sending. */
        __atomic_store_n(&s->state, KEEL_STATE_DRAINING, __ATOMIC_RELEASE);
        keel__sd_notify("STOPPING=1");
        uv_timer_start(&rc->delay, on_delay_over, s->cfg.shutdown_delay_ms, 0);
        return;
    }
    keel_server_drain(s);
    uv_stop(h->loop);
}

int keel_server_run(keel_server *s)
{
    /* The signal watchers first: a SIGTERM that arrives as soon as the
     * first request has been answered must drain, not kill. */
    uv_loop_t loop;
    uv_loop_init(&loop);
    run_ctx ctx = {.s = s};
    uv_signal_init(&loop, &ctx.sigterm);
    uv_signal_init(&loop, &ctx.sigint);
    uv_signal_init(&loop, &ctx.sighup);
    uv_timer_init(&loop, &ctx.delay);
    ctx.sigterm.data = ctx.sigint.data = ctx.sighup.data = ctx.delay.data = &ctx;
    uv_signal_start(&ctx.sigterm, on_signal, SIGTERM);
    uv_signal_start(&ctx.sigint, on_signal, SIGINT);
    uv_signal_start(&ctx.sighup, on_hup, SIGHUP);
    if (keel_server_start(s) < 0) {
        uv_close((uv_handle_t *)&ctx.sigterm, NULL);
        uv_close((uv_handle_t *)&ctx.sigint, NULL);
        uv_close((uv_handle_t *)&ctx.sighup, NULL);
        uv_close((uv_handle_t *)&ctx.delay, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        return 1;
    }
    uv_run(&loop, UV_RUN_DEFAULT); /* until the first signal */

    /* Drain, still listening for a second signal. */
    uint64_t deadline = keel_now_ms() + s->cfg.shutdown_grace_ms;
    int done = 0;
    while (!done) {
        uv_run(&loop, UV_RUN_NOWAIT);
        uint64_t now = keel_now_ms();
        if (now >= deadline)
            break;
        uint64_t step = deadline - now < 50 ? deadline - now : 50;
        done = keel_server_wait(s, step) == 0;
    }
    int status = 0;
    if (!done) {
        keel_log(KEEL_LOG_WARN, "shutdown grace expired; exiting with requests in flight",
                 "{s:i}", "grace_ms", (int)s->cfg.shutdown_grace_ms);
        status = 1;
    } else {
        for (unsigned i = 0; i < s->nworkers; i++)
            uv_thread_join(&s->workers[i]->thread);
        keel_log(KEEL_LOG_INFO, "stopped", NULL);
    }
    uv_close((uv_handle_t *)&ctx.sigterm, NULL);
    uv_close((uv_handle_t *)&ctx.sigint, NULL);
    uv_close((uv_handle_t *)&ctx.sighup, NULL);
    uv_close((uv_handle_t *)&ctx.delay, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    remove_pid_file(s);
    keel_log_flush();
    return status;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void keel_server_free(keel_server *s)
{
    if (!s)
        return;
    if (s->workers) {
        for (unsigned i = 0; i < s->nworkers; i++) {
            keel_worker *w = s->workers[i];
            if (!w)
                continue;
            if (w->finished || !w->started) {
                if (!w->started) {
                    /* never ran: close its handles here */
                    uv_walk(&w->loop, close_walk, NULL);
                    uv_run(&w->loop, UV_RUN_DEFAULT);
                }
                while (w->free_reqs) {
                    keel_req *r = w->free_reqs;
                    w->free_reqs = r->next_free;
                    keel_free(r->headers);
                    keel_buf_free(&r->res_headers);
                    keel_free(r);
                }
                if (uv_loop_close(&w->loop) == 0) {
                    uv_mutex_destroy(&w->mbox_mu);
                    keel_free(w);
                }
            }
        }
        keel_free(s->workers);
    }
    keel__pool_free(s->pool);
    keel__ipcap_free(s->ipcap);
    keel__ipcap_free(s->ws_ipcap);
    keel_free(s->hooks);
    for (size_t i = 0; i < s->npools; i++)
        keel__pool_free(s->pools[i]);
    keel_free(s->pools);
    for (size_t i = 0; i < s->nmws; i++)
        if (s->mws[i].dispose)
            s->mws[i].dispose(s->mws[i].data);
    keel_free(s->mws);
    keel_free(s->request_at);
    keel_free(s->response_at);
    keel_free(s->complete_at);
    for (size_t i = 0; i < s->nroutes; i++)
        keel_free(s->entries[i]);
    keel_free(s->entries);
    keel_free(s->routes);
    keel_router_free(s->router);
    keel_config_close(&s->cfg);
    uv_cond_destroy(&s->done_cond);
    uv_mutex_destroy(&s->done_mu);
    keel_free(s);
}
