/* redis.c — the Redis client (see keel/redis.h).
 *
 * One connection per worker, on the worker's loop, through hiredis's libuv
 * adapter. Each connection has one repeating "tick" timer that does three
 * things: (re)connects when the connection is down and its backoff has
 * passed, gives up on a connect that takes longer than
 * REDIS_CONNECT_TIMEOUT, and gives up on the oldest unanswered command
 * after REDIS_COMMAND_TIMEOUT. hiredis 0.14 has no timeouts of its own;
 * Redis answers in order, so the oldest pending command is the only one
 * that can be late first, and a late answer means the connection is no
 * good: it is dropped (every pending callback runs with an error) and
 * reconnected, which is also what keeps a half-open TCP connection from
 * swallowing commands forever.
 *
 * Commands refused while the connection is down count as breaker
 * failures: an outage opens the breaker within BREAKER_FAILURE_THRESHOLD
 * calls, and from then on callers fall back without touching the network.
 * Reconnection runs independently of the breaker; once it succeeds, the
 * half-open probes succeed and the breaker closes.
 */
#include "keel/redis.h"

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libuv.h>

#include <jansson.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>

#include "keel/log.h"
#include "keel/trace.h"

enum { C_DOWN = 0, C_CONNECTING, C_READY };
static const char *const conn_state_names[] = {"down", "connecting", "ready"};

typedef struct rd_cmd rd_cmd;
typedef struct rconn rconn;

struct keel_redis_script {
    keel_redis_script *next;
    const char *lua;
    char sha[41];
    int have_sha; /* atomic: sha is set */
};

struct rconn {
    keel_redis *r;
    keel_worker *w;
    uv_timer_t tick;
    redisAsyncContext *ac;
    int state;          /* atomic (read by status) */
    int stopping;
    int must_drop;      /* set in a callback, acted on by the tick */
    int drop_status;    /* status pending callbacks see when we drop */
    unsigned attempt;   /* failed connects in a row */
    uint64_t next_connect_ms, connect_started_ms;
    uint64_t reconnects; /* atomic */
    uint64_t npending;   /* atomic */
    rd_cmd *head, *tail;   /* pending, oldest first */
};

struct keel_redis {
    char ip[64];
    int port;
    char *user, *password;
    unsigned db;
    char *url_redacted;
    char *prefix;
    uint64_t timeout_ms, connect_timeout_ms, reconnect_max_ms;
    keel_breaker *breaker;
    int own_breaker;
    keel_redis_script *scripts;
    rconn *conns;
    unsigned nconns;
    keel_metric *m_commands, *m_duration, *m_errors;
};

struct rd_cmd {
    rd_cmd *prev, *next;
    rconn *c;
    keel_span_ref span; /* for a command of a traced request */
    keel_redis_cb cb;
    void *arg;
    uint64_t start_ns;
    uint64_t ticket; /* 0: internal, not reported to the breaker */
    const char *name;
};

/* ---------------------------------------------------------------- URL */

static int parse_url(keel_redis *r, const char *url)
{
    const char *p = url + 8; /* "redis://" (checked by the config) */
    const char *at = strrchr(p, '@');
    const char *slash;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            if (colon > p)
                r->user = keel_strndup(p, (size_t)(colon - p));
            r->password = keel_strndup(colon + 1, (size_t)(at - colon - 1));
        } else {
            r->password = keel_strndup(p, (size_t)(at - p)); /* redis://pass@host */
        }
        p = at + 1;
    }
    slash = strchr(p, '/');
    size_t hl = slash ? (size_t)(slash - p) : strlen(p);
    char host[256];
    if (hl == 0 || hl >= sizeof(host))
        return KEEL_EINVAL;
    memcpy(host, p, hl);
    host[hl] = '\0';
    r->port = 6379;
    char *h = host;
    char *colon = NULL;
    if (h[0] == '[') { /* [::1]:6379 */
        char *end = strchr(h, ']');
        if (!end)
            return KEEL_EINVAL;
        *end = '\0';
        h++;
        colon = end[1] == ':' ? end + 1 : NULL;
    } else {
        colon = strrchr(h, ':');
    }
    if (colon) {
        *colon = '\0';
        char *e;
        long port = strtol(colon + 1, &e, 10);
        if (*e || port <= 0 || port > 65535)
            return KEEL_EINVAL;
        r->port = (int)port;
    }
    if (slash && slash[1]) {
        char *e;
        long db = strtol(slash + 1, &e, 10);
        if (*e || db < 0 || db > 100000)
            return KEEL_EINVAL;
        r->db = (unsigned)db;
    }
    /* Resolved once, here, on the main thread: hiredis would call
     * getaddrinfo on the loop at every reconnect. */
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(h, NULL, &hints, &res) != 0 || !res)
        return KEEL_ENOTFOUND;
    int rc = getnameinfo(res->ai_addr, res->ai_addrlen, r->ip, sizeof(r->ip), NULL, 0,
                         NI_NUMERICHOST);
    freeaddrinfo(res);
    return rc == 0 ? 0 : KEEL_ENOTFOUND;
}

static char *redact(const char *url)
{
    const char *at = strrchr(url, '@');
    if (!at)
        return keel_strdup(url);
    size_t n = strlen(url) + 16;
    char *s = keel_malloc(n);
    snprintf(s, n, "redis://[REDACTED]%s", at);
    return s;
}

/* ---------------------------------------------------------------- metrics */

/* A bounded label: the command name when it is one keel sends, else "other". */
static const char *const known_commands[] = {
    "GET", "SET", "DEL", "EVAL", "EVALSHA", "PING", "INFO", "PUBLISH", "INCR",
    "PEXPIRE", "SCRIPT", "AUTH", "SELECT", "EXISTS", "MGET", "TIME", "SUBSCRIBE",
    "PSUBSCRIBE", "other", NULL};

static const char *command_label(const char *cmd, size_t len)
{
    const char *const *known = known_commands;
    for (int i = 0; known[i + 1]; i++) /* the last is "other" */
        if (strlen(known[i]) == len && !strncasecmp(known[i], cmd, len))
            return known[i];
    return "other";
}

static void count_error(keel_redis *r, unsigned shard, const char *kind)
{
    if (r->m_errors) {
        const char *lv[] = {kind};
        keel_metric_add(r->m_errors, shard, lv, 1);
    }
}

/* ---------------------------------------------------------------- connection */

static void connect_now(rconn *c);

static uint64_t rnd64(void)
{
    uint64_t v;
    if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v))
        v = keel_now_ns() * 0x9e3779b97f4a7c15ull;
    return v;
}

static void schedule_reconnect(rconn *c)
{
    __atomic_store_n(&c->state, C_DOWN, __ATOMIC_RELAXED);
    c->ac = NULL;
    if (c->stopping)
        return;
    keel_retry_opts o = {.base_ms = 100, .max_delay_ms = c->r->reconnect_max_ms};
    c->attempt++;
    uint64_t delay = keel_retry_backoff_ms(&o, c->attempt, rnd64());
    if (delay < 20)
        delay = 20;
    c->next_connect_ms = uv_now(c->tick.loop) + delay;
}

/* Drops the connection: every pending callback runs now with `status`. */
static void drop(rconn *c, int status)
{
    if (!c->ac)
        return;
    redisAsyncContext *ac = c->ac;
    c->drop_status = status;
    c->ac = NULL;
    ac->data = NULL; /* on_disconnect: nothing more to do */
    redisAsyncFree(ac);
    c->drop_status = 0;
    schedule_reconnect(c);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    rd_cmd *cmd = priv;
    rconn *c = cmd->c;
    keel_redis *r = c->r;
    (void)ac;
    if (cmd->prev)
        cmd->prev->next = cmd->next;
    else
        c->head = cmd->next;
    if (cmd->next)
        cmd->next->prev = cmd->prev;
    else
        c->tail = cmd->prev;
    __atomic_fetch_sub(&c->npending, 1, __ATOMIC_RELAXED);

    unsigned shard = keel_worker_id(c->w);
    int status = 0;
    redisReply *rep = reply;
    if (!rep) {
        status = c->drop_status ? c->drop_status : KEEL_ECLOSED;
        count_error(r, shard, status == KEEL_ETIMEDOUT ? "timeout" : "connection");
    } else if (rep->type == REDIS_REPLY_ERROR) {
        count_error(r, shard, "reply");
    }
    if (r->m_duration && cmd->name) {
        const char *lv[] = {cmd->name};
        keel_metric_observe(r->m_duration, shard, lv,
                            (double)(keel_now_ns() - cmd->start_ns) / 1e9);
    }
    /* An error reply is Redis answering: only silence counts against it. */
    if (cmd->ticket)
        keel_breaker_record(r->breaker, cmd->ticket, rep != NULL, keel_now_ms());
    if (keel_span_ok(cmd->span)) {
        if (!rep || rep->type == REDIS_REPLY_ERROR) {
            keel_span_set_str(cmd->span, "error.type", rep ? "reply" : keel_strerror(status));
            keel_span_set_error(cmd->span, rep && rep->str ? rep->str : NULL);
        }
        keel_span_finish(cmd->span, 0);
    }
    if (cmd->cb)
        cmd->cb(cmd->arg, status, rep);
    keel_free(cmd);
}

/* Sends argv on c (connected or connecting). */
static void send_argv(rconn *c, rd_cmd *cmd, int argc, const char **argv, const size_t *lens)
{
    cmd->c = c;
    cmd->start_ns = keel_now_ns();
    cmd->prev = c->tail;
    cmd->next = NULL;
    if (c->tail)
        c->tail->next = cmd;
    else
        c->head = cmd;
    c->tail = cmd;
    __atomic_fetch_add(&c->npending, 1, __ATOMIC_RELAXED);
    if (c->r->m_commands && cmd->name) {
        const char *lv[] = {cmd->name};
        keel_metric_add(c->r->m_commands, keel_worker_id(c->w), lv, 1);
    }
    if (redisAsyncCommandArgv(c->ac, on_reply, cmd, argc, argv, lens) != REDIS_OK) {
        /* only when the context is being freed: answer as a lost connection */
        redisReply *none = NULL;
        on_reply(c->ac, none, cmd);
    }
}

static void internal_cb(void *arg, int status, redisReply *reply)
{
    rconn *c = arg;
    if (status == 0 && reply->type == REDIS_REPLY_ERROR) {
        keel_log(KEEL_LOG_ERROR, "redis refused the connection's set-up", "{s:s,s:i}",
                 "error", reply->str, "worker", (int)keel_worker_id(c->w));
        c->must_drop = 1;
    }
}

static void script_loaded(void *arg, int status, redisReply *reply)
{
    keel_redis_script *s = arg;
    if (status == 0 && reply->type == REDIS_REPLY_STRING && reply->len == 40 &&
        !__atomic_load_n(&s->have_sha, __ATOMIC_ACQUIRE)) {
        /* Every connection loads the same text, so every answer is the
         * same digest: workers racing here write identical bytes, and
         * readers only look once have_sha is set (release/acquire). */
        char sha[41];
        memcpy(sha, reply->str, 40);
        sha[40] = '\0';
        for (int i = 0; i < 41; i++)
            __atomic_store_n(&s->sha[i], sha[i], __ATOMIC_RELAXED);
        __atomic_store_n(&s->have_sha, 1, __ATOMIC_RELEASE);
    }
}

static void send_internal(rconn *c, keel_redis_cb cb, void *arg, int argc, const char **argv)
{
    rd_cmd *cmd = keel_calloc(1, sizeof(*cmd));
    cmd->cb = cb;
    cmd->arg = arg;
    cmd->name = command_label(argv[0], strlen(argv[0]));
    send_argv(c, cmd, argc, argv, NULL);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    rconn *c = ac->data;
    if (!c)
        return;
    if (status != REDIS_OK) {
        if (c->attempt == 0 || keel_log_enabled(KEEL_LOG_DEBUG))
            keel_log(KEEL_LOG_WARN, "redis: cannot connect", "{s:s,s:i,s:i}", "error",
                     ac->errstr, "worker", (int)keel_worker_id(c->w), "attempt",
                     (int)c->attempt + 1);
        /* hiredis frees ac after this callback */
        schedule_reconnect(c);
        return;
    }
    if (c->attempt > 0)
        keel_log(KEEL_LOG_INFO, "redis: connected", "{s:i,s:i}", "worker",
                 (int)keel_worker_id(c->w), "attempts", (int)c->attempt + 1);
    c->attempt = 0;
    __atomic_store_n(&c->state, C_READY, __ATOMIC_RELAXED);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    rconn *c = ac->data;
    (void)status;
    if (!c)
        return; /* dropped by us */
    keel_log(KEEL_LOG_WARN, "redis: connection lost", "{s:s,s:i}", "error",
             ac->err ? ac->errstr : "closed by the server", "worker",
             (int)keel_worker_id(c->w));
    __atomic_fetch_add(&c->reconnects, 1, __ATOMIC_RELAXED);
    schedule_reconnect(c);
}

static void connect_now(rconn *c)
{
    keel_redis *r = c->r;
    redisAsyncContext *ac = redisAsyncConnect(r->ip, r->port);
    if (!ac || ac->err) {
        keel_log(KEEL_LOG_WARN, "redis: cannot connect", "{s:s,s:i}", "error",
                 ac ? ac->errstr : "out of memory", "worker", (int)keel_worker_id(c->w));
        if (ac)
            redisAsyncFree(ac);
        schedule_reconnect(c);
        return;
    }
    if (redisLibuvAttach(ac, c->tick.loop) != REDIS_OK) {
        redisAsyncFree(ac);
        schedule_reconnect(c);
        return;
    }
    ac->data = c;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
    c->must_drop = 0;
    c->connect_started_ms = uv_now(c->tick.loop);
    __atomic_store_n(&c->state, C_CONNECTING, __ATOMIC_RELAXED);
    /* Queued now, written once connected, answered before anything else. */
    if (r->password) {
        const char *argv[3] = {"AUTH", r->user ? r->user : r->password, r->password};
        send_internal(c, internal_cb, c, r->user ? 3 : 2, argv);
    }
    if (r->db) {
        char db[16];
        snprintf(db, sizeof(db), "%u", r->db);
        const char *argv[2] = {"SELECT", db};
        send_internal(c, internal_cb, c, 2, argv);
    }
    for (keel_redis_script *s = r->scripts; s; s = s->next) {
        if (__atomic_load_n(&s->have_sha, __ATOMIC_ACQUIRE))
            continue;
        const char *argv[3] = {"SCRIPT", "LOAD", s->lua};
        send_internal(c, script_loaded, s, 3, argv);
    }
}

static void on_tick(uv_timer_t *t)
{
    rconn *c = t->data;
    uint64_t now = uv_now(t->loop);
    int st = __atomic_load_n(&c->state, __ATOMIC_RELAXED);
    if (c->ac && c->must_drop) {
        drop(c, KEEL_ECLOSED);
    } else if (c->ac && st == C_CONNECTING &&
               now - c->connect_started_ms > c->r->connect_timeout_ms) {
        keel_log(KEEL_LOG_WARN, "redis: connect timed out", "{s:i}", "worker",
                 (int)keel_worker_id(c->w));
        drop(c, KEEL_ETIMEDOUT);
    } else if (c->ac && c->head &&
               (keel_now_ns() - c->head->start_ns) / 1000000 > c->r->timeout_ms) {
        keel_log(KEEL_LOG_WARN, "redis: command timed out; reconnecting", "{s:s,s:i}",
                 "command", c->head->name ? c->head->name : "?", "worker",
                 (int)keel_worker_id(c->w));
        __atomic_fetch_add(&c->reconnects, 1, __ATOMIC_RELAXED);
        drop(c, KEEL_ETIMEDOUT);
    } else if (!c->ac && now >= c->next_connect_ms) {
        connect_now(c);
    }
}

static void on_worker_start(keel_worker *w, void *arg)
{
    keel_redis *r = arg;
    rconn *c = &r->conns[keel_worker_id(w)];
    c->w = w;
    uv_timer_init(keel_worker_loop(w), &c->tick);
    c->tick.data = c;
    uint64_t iv = r->timeout_ms < r->connect_timeout_ms ? r->timeout_ms : r->connect_timeout_ms;
    iv /= 4;
    iv = iv < 10 ? 10 : iv > 100 ? 100 : iv;
    uv_timer_start(&c->tick, on_tick, iv, iv);
    connect_now(c);
}

static void on_worker_stop(keel_worker *w, void *arg)
{
    keel_redis *r = arg;
    rconn *c = &r->conns[keel_worker_id(w)];
    c->stopping = 1;
    drop(c, KEEL_ECLOSED);
    uv_close((uv_handle_t *)&c->tick, NULL);
}

/* ---------------------------------------------------------------- commands */

static rconn *conn_of(keel_redis *r, keel_worker *w)
{
    unsigned id = keel_worker_id(w);
    return id < r->nconns && r->conns[id].w == w ? &r->conns[id] : NULL;
}

int keel_redis_commandargv(keel_redis *r, keel_worker *w, keel_redis_cb cb, void *arg,
                           int argc, const char **argv, const size_t *argvlen)
{
    rconn *c = conn_of(r, w);
    if (!c || argc < 1)
        return KEEL_EINVAL;
    unsigned shard = keel_worker_id(w);
    uint64_t ticket = keel_breaker_allow(r->breaker, keel_now_ms());
    if (!ticket) {
        count_error(r, shard, "unavailable");
        return KEEL_EUNAVAIL;
    }
    if (!c->ac || __atomic_load_n(&c->state, __ATOMIC_RELAXED) != C_READY || c->must_drop) {
        keel_breaker_record(r->breaker, ticket, 0, keel_now_ms());
        count_error(r, shard, "connection");
        return KEEL_EUNAVAIL;
    }
    rd_cmd *cmd = keel_calloc(1, sizeof(*cmd));
    cmd->cb = cb;
    cmd->arg = arg;
    cmd->ticket = ticket;
    cmd->name = command_label(argv[0], argvlen ? argvlen[0] : strlen(argv[0]));
    cmd->span = keel_redis_span_begin(r, argv[0], argvlen ? argvlen[0] : strlen(argv[0]));
    send_argv(c, cmd, argc, argv, argvlen);
    return 0;
}

keel_span_ref keel_redis_span_begin(keel_redis *r, const char *command, size_t len)
{
    keel_span_ref parent = keel_trace_current(); /* the request whose code runs now */
    if (!keel_span_ok(parent))
        return parent;
    /* named by the command, upper case ("GET"), as OTel's db spans */
    char op[24];
    size_t i;
    for (i = 0; i < len && i < sizeof(op) - 1; i++)
        op[i] = (char)(command[i] >= 'a' && command[i] <= 'z' ? command[i] - 32 : command[i]);
    op[i] = '\0';
    keel_span_ref sp = keel_span_begin(parent, op, KEEL_SPAN_CLIENT, 0);
    keel_span_set_str(sp, "db.system.name", "redis");
    keel_span_set_str(sp, "db.operation.name", op);
    keel_span_set_str(sp, "server.address", r->ip);
    keel_span_set_int(sp, "server.port", r->port);
    return sp;
}

int keel_redis_command(keel_redis *r, keel_worker *w, keel_redis_cb cb, void *arg,
                       const char *fmt, ...)
{
    /* Formatted into an argv with hiredis's own formatter, then sent as
     * argv so every command goes through one path. */
    char *cmdline = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = redisvFormatCommand(&cmdline, fmt, ap);
    va_end(ap);
    if (n < 0)
        return KEEL_EINVAL;
    /* parse the RESP array back into argv views */
    const char *argv[64];
    size_t lens[64];
    int argc = 0;
    const char *p = cmdline;
    int total = atoi(p + 1);
    p = strchr(p, '\n') + 1;
    for (int i = 0; i < total && argc < 64; i++) {
        size_t len = (size_t)strtoul(p + 1, NULL, 10);
        p = strchr(p, '\n') + 1;
        argv[argc] = p;
        lens[argc++] = len;
        p += len + 2;
    }
    int rc = argc == total ? keel_redis_commandargv(r, w, cb, arg, argc, argv, lens)
                           : KEEL_EINVAL;
    redisFreeCommand(cmdline);
    return rc;
}

/* ---------------------------------------------------------------- scripts */

keel_redis_script *keel_redis_script_new(keel_redis *r, const char *lua)
{
    keel_redis_script *s = keel_calloc(1, sizeof(*s));
    s->lua = lua;
    s->next = r->scripts;
    r->scripts = s;
    return s;
}

typedef struct eval_call {
    keel_redis *r;
    keel_worker *w;
    keel_redis_script *s;
    keel_redis_cb cb;
    void *arg;
    int argc; /* with "EVALSHA", sha, numkeys */
    const char **argv;
    size_t *lens;
    int retried;
} eval_call;

static void eval_reply(void *arg, int status, redisReply *reply)
{
    eval_call *e = arg;
    if (status == 0 && reply->type == REDIS_REPLY_ERROR && !e->retried &&
        !strncmp(reply->str, "NOSCRIPT", 8)) {
        /* the server lost its scripts (restart, SCRIPT FLUSH): send the text */
        e->retried = 1;
        e->argv[0] = "EVAL";
        e->lens[0] = 4;
        e->argv[1] = e->s->lua;
        e->lens[1] = strlen(e->s->lua);
        if (keel_redis_commandargv(e->r, e->w, eval_reply, e, e->argc, e->argv, e->lens) == 0)
            return;
        e->cb(e->arg, KEEL_EUNAVAIL, NULL);
        keel_free(e);
        return;
    }
    e->cb(e->arg, status, reply);
    keel_free(e);
}

int keel_redis_eval(keel_redis *r, keel_worker *w, keel_redis_script *s, int nkeys,
                    int argc, const char **argv, const size_t *argvlen, keel_redis_cb cb,
                    void *arg)
{
    int n = argc + 3;
    /* The arguments are copied: a NOSCRIPT answer resends them later, when
     * the caller's buffers (often on its stack) are gone. */
    size_t bytes = 0;
    for (int i = 0; i < argc; i++)
        bytes += argvlen ? argvlen[i] : strlen(argv[i]);
    eval_call *e = keel_calloc(1, sizeof(*e) + (size_t)n * (sizeof(char *) + sizeof(size_t)) +
                                      16 + bytes);
    e->r = r;
    e->w = w;
    e->s = s;
    e->cb = cb;
    e->arg = arg;
    e->argc = n;
    e->argv = (const char **)(e + 1);
    e->lens = (size_t *)(e->argv + n);
    char *nk = (char *)(e->lens + n);
    snprintf(nk, 16, "%d", nkeys);
    int have = __atomic_load_n(&s->have_sha, __ATOMIC_ACQUIRE);
    e->argv[0] = have ? "EVALSHA" : "EVAL";
    e->argv[1] = have ? s->sha : s->lua;
    e->argv[2] = nk;
    e->retried = !have;
    char *copy = nk + 16;
    for (int i = 0; i < argc; i++) {
        size_t len = argvlen ? argvlen[i] : strlen(argv[i]);
        memcpy(copy, argv[i], len);
        e->argv[i + 3] = copy;
        e->lens[i + 3] = len;
        copy += len;
    }
    e->lens[0] = strlen(e->argv[0]);
    e->lens[1] = strlen(e->argv[1]);
    e->lens[2] = strlen(nk);
    int rc = keel_redis_commandargv(r, w, eval_reply, e, n, e->argv, e->lens);
    if (rc < 0)
        keel_free(e);
    return rc;
}

/* ---------------------------------------------------------------- blocking, health */

redisContext *keel_redis_connect_blocking(const keel_redis *r, char *err, size_t cap)
{
    struct timeval tv = {(time_t)(r->connect_timeout_ms / 1000),
                         (suseconds_t)(r->connect_timeout_ms % 1000) * 1000};
    redisContext *ctx = redisConnectWithTimeout(r->ip, r->port, tv);
    if (!ctx || ctx->err) {
        snprintf(err, cap, "%s", ctx ? ctx->errstr : "out of memory");
        if (ctx)
            redisFree(ctx);
        return NULL;
    }
    struct timeval ctv = {(time_t)(r->timeout_ms / 1000),
                          (suseconds_t)(r->timeout_ms % 1000) * 1000};
    redisSetTimeout(ctx, ctv);
    redisReply *rep = NULL;
    if (r->password)
        rep = r->user ? redisCommand(ctx, "AUTH %s %s", r->user, r->password)
                      : redisCommand(ctx, "AUTH %s", r->password);
    if (r->password && (!rep || rep->type == REDIS_REPLY_ERROR))
        goto fail;
    if (rep)
        freeReplyObject(rep);
    rep = NULL;
    if (r->db) {
        rep = redisCommand(ctx, "SELECT %u", r->db);
        if (!rep || rep->type == REDIS_REPLY_ERROR)
            goto fail;
        freeReplyObject(rep);
    }
    return ctx;
fail:
    snprintf(err, cap, "%s", rep ? rep->str : ctx->errstr);
    if (rep)
        freeReplyObject(rep);
    redisFree(ctx);
    return NULL;
}

static double m_ready(void *arg);

static int check_redis(void *arg, char *detail, size_t cap)
{
    keel_redis *r = arg;
    char err[128];
    uint64_t t0 = keel_now_ns();
    redisContext *ctx = keel_redis_connect_blocking(r, err, sizeof(err));
    if (!ctx) {
        snprintf(detail, cap, "unreachable: %s", err);
        return 1;
    }
    uint64_t t1 = keel_now_ns();
    redisReply *rep = redisCommand(ctx, "PING");
    uint64_t t2 = keel_now_ns();
    int bad = !rep || rep->type == REDIS_REPLY_ERROR;
    if (!bad && m_ready(r) == (double)r->nconns)
        /* Redis answers and every worker is connected again: a breaker
         * left open by the outage closes now, traffic or not */
        keel_breaker_probe_ok(r->breaker, keel_now_ms());
    if (bad)
        snprintf(detail, cap, "PING failed: %s", rep ? rep->str : ctx->errstr);
    else
        snprintf(detail, cap, "PING %.2fms (connect %.2fms), breaker %s",
                 (double)(t2 - t1) / 1e6, (double)(t1 - t0) / 1e6,
                 keel_breaker_state_name(keel_breaker_get_state(r->breaker, keel_now_ms())));
    if (rep)
        freeReplyObject(rep);
    redisFree(ctx);
    return bad;
}

static double m_ready(void *arg)
{
    keel_redis *r = arg;
    double n = 0;
    for (unsigned i = 0; i < r->nconns; i++)
        n += __atomic_load_n(&r->conns[i].state, __ATOMIC_RELAXED) == C_READY;
    return n;
}

/* ---------------------------------------------------------------- options */

#define AT(f) KEEL_CONFIG_AT(keel_redis_options, f)
static const keel_config_var redis_vars[] = {
    {.name = "REDIS_URL", .type = KEEL_CONFIG_URL, .def = "", AT(redis_url),
     .values = KEEL_CONFIG_VALUES("redis://"), .flags = KEEL_CONFIG_SECRET,
     .accepts = "redis://[:password@]host:port[/db] or empty",
     .help = "redis://[:password@]host:port/db; empty = in-process fallbacks"},
    {.name = "REDIS_COMMAND_TIMEOUT", .type = KEEL_CONFIG_DURATION, .def = "500ms",
     AT(redis_timeout_ms), .min = 10,
     .help = "a Redis command not answered within this fails, and the connection is reset"},
    {.name = "REDIS_CONNECT_TIMEOUT", .type = KEEL_CONFIG_DURATION, .def = "2s",
     AT(redis_connect_timeout_ms), .min = 10, .help = "time to establish a Redis connection"},
    {.name = "REDIS_RECONNECT_MAX", .type = KEEL_CONFIG_DURATION, .def = "5s",
     AT(redis_reconnect_max_ms), .min = 10,
     .help = "longest wait between reconnection attempts (exponential backoff with jitter)"},
    {.name = "REDIS_KEY_PREFIX", .type = KEEL_CONFIG_STR, .def = "keel:", AT(redis_key_prefix),
     .help = "namespace in front of every Redis key and channel keel uses"},
};
#undef AT

const keel_config_module keel_redis_config =
    KEEL_CONFIG_MODULE("redis",
                       "Redis, shared by every instance; without it keel uses in-process fallbacks "
                       "(src/store/redis.c).",
                       keel_redis_options, redis_vars, NULL);

/* ---------------------------------------------------------------- life cycle */

int keel_redis_new(keel_redis **out, keel_server *s, const keel_config *cfg,
                   keel_metrics *m, keel_health *h, keel_breakers *br)
{
    *out = NULL;
    keel_redis *r = keel_calloc(1, sizeof(*r));
    const keel_redis_options *ro = keel_config_get(cfg, &keel_redis_config);
    int rc = ro->redis_url && *ro->redis_url ? parse_url(r, ro->redis_url) : KEEL_EINVAL;
    if (rc < 0) {
        char *red = redact(ro->redis_url ? ro->redis_url : "");
        fprintf(stderr, "keel: REDIS_URL: %s \"%s\": expected "
                        "redis://[:password@]host:port[/db] with a resolvable host\n",
                rc == KEEL_ENOTFOUND ? "cannot resolve the host of" : "invalid value", red);
        keel_free(red);
        keel_redis_free(r);
        return KEEL_ECONFIG;
    }
    r->url_redacted = redact(ro->redis_url);
    r->prefix = keel_strdup(ro->redis_key_prefix ? ro->redis_key_prefix : "");
    r->timeout_ms = ro->redis_timeout_ms ? ro->redis_timeout_ms : 500;
    r->connect_timeout_ms = ro->redis_connect_timeout_ms ? ro->redis_connect_timeout_ms
                                                          : 2000;
    r->reconnect_max_ms = ro->redis_reconnect_max_ms ? ro->redis_reconnect_max_ms : 5000;
    r->breaker = keel_breaker_new(br, "redis", keel_config_get(cfg, &keel_breaker_config));
    r->own_breaker = br == NULL;
    r->nconns = keel_server_workers(s);
    r->conns = keel_calloc(r->nconns, sizeof(rconn));
    for (unsigned i = 0; i < r->nconns; i++)
        r->conns[i].r = r;
    if (m) {
        static const char *const cmd_label[] = {"command", NULL};
        static const char *const kind_label[] = {"kind", NULL};
        r->m_commands = keel_metrics_counter(m, "redis_commands_total",
                                             "Redis commands sent", cmd_label);
        r->m_duration = keel_metrics_histogram(m, "redis_command_duration_seconds",
                                               "Redis command round trips", cmd_label,
                                               keel_latency_buckets, keel_latency_nbuckets);
        r->m_errors = keel_metrics_counter(m, "redis_errors_total",
                                           "Redis commands that failed: timeout, connection "
                                           "(lost or down), reply (an error answer), "
                                           "unavailable (refused by the open breaker)",
                                           kind_label);
        keel_metric_declare_each(r->m_errors, NULL, 0,
                                 (const char *const[]){"timeout", "connection", "reply",
                                                       "unavailable", NULL});
        keel_metric_declare_each(r->m_commands, NULL, 0, known_commands);
        keel_metrics_callback(m, "redis_connections_ready",
                              "Workers whose Redis connection is up", KEEL_GAUGE, m_ready, r);
    }
    if (h)
        keel_health_register(h, "redis", 0, (uint32_t)(r->connect_timeout_ms +
                                                       r->timeout_ms + 500),
                             check_redis, r);
    keel_worker_hooks hooks = {.on_start = on_worker_start, .on_stop = on_worker_stop,
                               .arg = r};
    keel_server_add_worker_hooks(s, &hooks);
    *out = r;
    return 0;
}

void keel_redis_free(keel_redis *r)
{
    if (!r)
        return;
    keel_redis_script *s = r->scripts, *next;
    for (; s; s = next) {
        next = s->next;
        keel_free(s);
    }
    if (r->own_breaker)
        keel_breaker_free(r->breaker);
    keel_free(r->conns);
    keel_free(r->user);
    keel_free(r->password);
    keel_free(r->url_redacted);
    keel_free(r->prefix);
    keel_free(r);
}

const char *keel_redis_prefix(const keel_redis *r)
{
    return r->prefix;
}

keel_breaker *keel_redis_breaker(keel_redis *r)
{
    return r->breaker;
}

json_t *keel_redis_status_json(keel_redis *r)
{
    json_t *workers = json_array();
    for (unsigned i = 0; i < r->nconns; i++) {
        rconn *c = &r->conns[i];
        int st = __atomic_load_n(&c->state, __ATOMIC_RELAXED);
        json_array_append_new(
            workers, json_pack("{s:i,s:s,s:I,s:I}", "worker", (int)i, "state",
                               conn_state_names[st], "reconnects",
                               (json_int_t)__atomic_load_n(&c->reconnects, __ATOMIC_RELAXED),
                               "pending",
                               (json_int_t)__atomic_load_n(&c->npending, __ATOMIC_RELAXED)));
    }
    char addr[96];
    snprintf(addr, sizeof(addr), "%s:%d", r->ip, r->port);
    return json_pack("{s:s,s:s,s:i,s:s,s:o}", "url", r->url_redacted, "address", addr, "db",
                     (int)r->db, "breaker",
                     keel_breaker_state_name(keel_breaker_get_state(r->breaker, keel_now_ms())),
                     "workers", workers);
}
