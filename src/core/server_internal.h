/* server_internal.h — the structures behind keel/server.h, shared by
 * server.c (workers, lifecycle), conn.c (connections, parsing, writing),
 * req.c (request and response API) and work.c (the work pool). Never
 * installed. */
#ifndef KEEL_SERVER_INTERNAL_H
#define KEEL_SERVER_INTERNAL_H

#include <uv.h>

#include "keel/server.h"
#include "keel/ws.h"

typedef struct keel_conn keel_conn;
typedef struct keel_work keel_work;
typedef struct keel_ipcap keel_ipcap;

#define KEEL_MAX_PROXIES 64

/* Per-worker counters: written by the owner, read by scrapers (relaxed). */
typedef struct keel_worker_stats {
    uint64_t connections_open;
    uint64_t connections_total;
    uint64_t requests_in_flight;
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t loop_lag_ms;
    uint64_t requests_pooled; /* request objects kept for reuse */
    uint64_t ws_open;         /* open WebSocket connections */
    uint64_t requests_total;  /* requests completed */
} keel_worker_stats;

#define STAT_ADD(w, f, n) __atomic_fetch_add(&(w)->stats.f, (n), __ATOMIC_RELAXED)
#define STAT_SUB(w, f, n) __atomic_fetch_sub(&(w)->stats.f, (n), __ATOMIC_RELAXED)
#define STAT_SET(w, f, n) __atomic_store_n(&(w)->stats.f, (n), __ATOMIC_RELAXED)

struct keel_worker {
    keel_server *srv;
    unsigned id;
    uv_loop_t loop;
    uv_tcp_t listener;
    int listen_fd;
    int listening;
    uv_async_t async;   /* mailbox: finished work, drain */
    uv_timer_t sweep;   /* deadlines, Date header, loop lag */
    uv_check_t check;   /* flushes buffered logs once per iteration */
    uv_idle_t drain_idle; /* runs drain callbacks of streams not writing */
    keel_conn *drain_head;
    uv_thread_t thread;
    int started;

    uv_mutex_t mbox_mu;
    keel_work *mbox_head, *mbox_tail;
    int drain_requested; /* under mbox_mu */
    int unlisten_requested; /* under mbox_mu: drain's first step */
    int mbox_closed;     /* under mbox_mu: the async handle is closing */
    int draining;        /* loop-owned */
    int finished;

    keel_conn *conns;    /* doubly linked list of open connections */
    uint64_t nconns;
    keel_req *free_reqs;   /* recycled requests, trimmed by the sweep */
    uint64_t nfree_reqs;
    uint64_t pending_jobs; /* work items whose completion targets us */
    uint64_t now_ms;     /* loop time, refreshed by the sweep */
    uint64_t sweep_expected;

    char date[40];       /* "Date: ...\r\n" */
    size_t date_len;
    int64_t date_sec;
    uint64_t date_next_ms; /* loop time at which date is checked again */
    char head200[256];   /* "HTTP/1.1 200 OK\r\n", Server, Date: with date */
    size_t head200_len;  /* 0: not rendered (a Server header too long) */

    keel_worker_stats stats;
};

typedef struct route_entry {
    const keel_route *route;
    unsigned index;
    uint64_t timeout_ms;
} route_entry;

struct keel_server {
    keel_config cfg;
    keel_http_limits limits;
    keel_router *router;
    route_entry **entries;
    const keel_route **routes;
    size_t nroutes, cap_routes;
    keel_middleware *mws;
    size_t nmws;
    size_t nresponse_hooks; /* middlewares with on_response */
    /* Indexes into mws of the middlewares with each hook, in chain order,
     * rebuilt by keel_server_use: a request runs its hooks without
     * looking at every middleware. */
    size_t *request_at, nrequest;
    size_t *response_at;    /* nresponse_hooks of them */
    size_t *complete_at, ncomplete;
    keel_worker **workers;
    unsigned nworkers;
    keel_pool *pool;       /* the default pool */
    keel_pool **pools;     /* every pool, the default first */
    size_t npools;
    int state;            /* keel_server_state, atomic */
    unsigned port;        /* the bound port (PORT=0 picks one) */
    uv_mutex_t done_mu;
    uv_cond_t done_cond;
    unsigned workers_done;
    int started;
    long takeover_pid;    /* keel_server_take_over: the process to replace */
    unsigned listeners_closed; /* atomic: workers that stopped listening */
    void (*hup_fn)(keel_server *s, void *arg); /* keel_server_on_hup */
    void *hup_arg;
    int wrote_pid_file;
    keel_cidr proxies[KEEL_MAX_PROXIES]; /* TRUST_PROXY */
    size_t nproxies;
    keel_fwd_header fwd;  /* TRUST_PROXY_HEADER */
    keel_ipcap *ipcap;    /* connections per client address */
    keel_worker_hooks *hooks;
    size_t nhooks;
    const keel_ws_options *ws;   /* the `ws` config module (owned by cfg) */
    keel_ws_observer ws_obs;     /* metrics; hooks NULL when none */
    keel_ipcap *ws_ipcap;        /* WebSocket connections per client address */
    /* keel_server_set_work_observer: set before start, read by pool threads */
    void (*work_observer)(void *arg, const keel_pool *p, uint64_t wait_ns);
    void *work_observer_arg;
};

enum conn_state {
    CONN_HEAD = 0, /* waiting for / reading a request head */
    CONN_BODY,     /* reading a body */
    CONN_HANDLING, /* a request is with the middleware / handler */
    CONN_STREAM,   /* a request is with its handler, its body streamed to it
                    * (KEEL_ROUTE_STREAM_BODY) as it arrives */
    CONN_CLOSING,
    CONN_WS        /* upgraded: WebSocket frames only, never HTTP again */
};

struct keel_conn {
    uv_tcp_t tcp; /* first: the handle's memory is the connection's */
    keel_worker *w;
    keel_conn *prev, *next;
    keel_buf in;         /* bytes read; a request's views point into it */
    size_t parsed;       /* bytes of `in` consumed by finished requests */
    keel_buf out;        /* response bytes not yet handed to the kernel */
    keel_buf wbuf;       /* bytes in the uv_write in flight */
    uv_write_t wreq;
    uv_shutdown_t sreq;
    int writing;
    int lingering;
    int closed;
    int drain_queued;    /* on the worker's drain list */
    keel_conn *drain_next;
    uint64_t write_started;
    keel_req *req;       /* the request being read or handled */
    enum conn_state state;
    uint64_t deadline;   /* ms, loop time; 0 = none */
    uint64_t head_started;
    int reading;
    int processing;      /* process_input() is on the stack */
    int close_after_write;
    int eof;
    uint64_t requests;
    keel_addr peer;      /* family 0 when unknown */
    int peer_trusted;    /* the peer is a TRUST_PROXY proxy */
    int ip_counted;      /* holds a slot in srv->ipcap */
    keel_ws *ws;         /* the WebSocket session once upgraded */
    char remote[48];
    char *sbuf;          /* reads of a streamed body (CONN_STREAM) */
};

typedef struct req_local {
    struct req_local *next;
    const char *key;
    void *value;
} req_local;

struct keel_req {
    keel_worker *w;
    keel_conn *c;        /* NULL once detached (client gone) */
    keel_req *next_free;
    keel_http_request_head head;
    keel_http_parse_state hp;  /* how far an incomplete head was parsed */
    keel_http_header *headers; /* max_headers entries */
    keel_str body;
    size_t head_len;
    size_t raw_len;      /* head + raw body bytes in conn->in */
    keel_http_chunked chunked;
    keel_route_match match;
    const route_entry *entry;
    keel_arena arena;
    keel_buf owned_in;   /* the connection's input, kept when detached */

    size_t mw_index;     /* next position in srv->request_at */
    int busy;            /* user code on the stack */
    int holds;           /* keel_req_hold + pending work */
    int suspended;
    int dispatched;      /* the chain ran (or runs) for it */
    int matched;         /* keel__req_match ran */
    int finished;        /* the response has been produced */
    int completed;       /* on_complete hooks ran */
    int canceled;        /* atomic: client gone or deadline passed */
    int streaming;
    int head_only;       /* HEAD: framing without the body */
    int responding;      /* on_response hooks are on the stack */
    int keep_alive;
    int status;
    int reject_status;   /* set when the connection layer refuses */
    int refusing;        /* an EDGE hook of a refused request is on the
                          * stack: it may not respond */
    const char *reject_detail;
    uint64_t bytes_out;
    keel_buf res_headers;
    uint64_t res_header_lens; /* bit (name length & 63) of every line ever
                               * added to res_headers: a set whose names'
                               * bits are all clear conflicts with none */
    uint64_t start_ns;
    uint64_t end_ns;     /* keel_req_elapsed_ns once completed, 0 before */
    uint64_t deadline;   /* handler deadline (ms, loop time) */
    const char *request_id;
    const char *trace_id;
    const char *span_id;
    void *obs;           /* keel_req_set_obs: the request's trace */
    keel_req *outer;     /* keel_req_current before this one entered */
    req_local *locals;
    int client_done;     /* client/https resolved */
    int https;
    keel_addr client;
    char *client_text;   /* in the arena */
    void (*drain_cb)(keel_req *r, void *arg);
    void *drain_arg;
    keel_ws *ws;         /* keel_ws_accept queued a 101: the session to start */
    /* a streamed body (KEEL_ROUTE_STREAM_BODY, keel_req_body_stream) */
    int body_pending;    /* body bytes remain to be read */
    int body_paused;     /* keel_req_body_pause: the socket is not read */
    keel_body_data_cb on_body;
    keel_body_end_cb on_body_end;
    void *body_arg;
    uint64_t body_max, body_seen;
    keel_buf cbuf;       /* chunked: raw bytes not yet decoded */
    /* keel_res_sendfile */
    int sf_open;         /* sf_fd is open and ours */
    int sf_fd;
    keel_sendfile_seg *sf_segs; /* in the arena */
    size_t sf_nsegs, sf_i;
    char inline_mem[3072];
};

/* conn.c */
/* sd_notify(3) for Type=notify units: "READY=1", "STOPPING=1", ...; a
 * no-op without NOTIFY_SOCKET (sdnotify.c). */
int keel__sd_notify(const char *state);

/* Sends what is left of r's keel_res_sendfile body (a drain callback). */
void keel__conn_sendfile_pump(keel_req *r, void *arg);
void keel__conn_accept(keel_worker *w);
void keel__conn_sweep(keel_worker *w, uint64_t now);
void keel__conn_drain_idle(keel_worker *w);
void keel__conn_close(keel_conn *c);
/* Appends response bytes to the connection and schedules the flush. */
void keel__conn_send(keel_conn *c, const void *p, size_t n);
void keel__conn_flush(keel_conn *c);
/* A stream registered a drain callback: run it from the loop soon if no
 * write is in flight (else the write's completion runs it). */
void keel__conn_want_drain(keel_conn *c);
/* The streamed body of r ends: status 0 (complete) or KEEL_ECANCELED
 * (the client went away; c NULL), KEEL_ETIMEDOUT, KEEL_ETOOBIG,
 * KEEL_EPROTO. Calls the handler's on_end once. */
void keel__conn_body_end(keel_conn *c, keel_req *r, int status);
/* The request on c finished (response produced): continue with the next. */
void keel__conn_request_done(keel_conn *c, keel_req *r);

/* ipcap.c: per-address connection counts. acquire returns 0, or
 * KEEL_EBUSY when the address already has `max` connections. */
keel_ipcap *keel__ipcap_new(void);
void keel__ipcap_free(keel_ipcap *t);
int keel__ipcap_acquire(keel_ipcap *t, const keel_addr *a, uint64_t max);
void keel__ipcap_release(keel_ipcap *t, const keel_addr *a);

/* req.c */
keel_req *keel__req_new(keel_worker *w, keel_conn *c);
void keel__req_dispatch(keel_req *r);
/* Matches r's route once (r->entry); 1 when a route matched. */
int keel__req_match(keel_req *r);
void keel__req_enter(keel_req *r);
void keel__req_leave(keel_req *r);
void keel__req_detach(keel_req *r);
void keel__req_unhold(keel_req *r);
void keel__req_release(keel_req *r);
/* Called by the worker's sweep: frees half of the recycled requests above
 * KEEL_REQ_POOL_KEEP, so the pool shrinks back after a spike (a few
 * seconds from thousands to the floor) but not under steady load. */
#define KEEL_REQ_POOL_KEEP 64
void keel__req_pool_trim(keel_worker *w);
/* The connection's output fell below half the cap: run the drain callback. */
void keel__req_drained(keel_req *r);
/* keel_res_sendfile finished sending: closes the file, completes r. */
void keel__req_sendfile_done(keel_req *r);
int keel__respond_problem_raw(keel_conn *c, int status, const char *detail);
void keel__worker_update_date(keel_worker *w);

/* work.c */
keel_pool *keel__pool_new(keel_server *s, const keel_pool_opts *opts);
void keel__pool_free(keel_pool *p);
/* Queues a posted function (keel_worker_post) on w's mailbox. */
int keel__worker_post(keel_worker *w, void (*fn)(void *arg), void *arg);
/* Runs the completions delivered to w's mailbox. */
void keel__worker_run_mailbox(keel_worker *w);

#endif
