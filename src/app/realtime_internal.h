/* realtime_internal.h — state shared by src/app/realtime*.c. */
#ifndef KEEL_APP_REALTIME_INTERNAL_H
#define KEEL_APP_REALTIME_INTERNAL_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "app/realtime.h"
#include "keel/keel.h"

#define RT_CLOSE_AUTH 4001 /* token expired, user disabled or logged out */
#define RT_REORDER_MS 250  /* a hole in the sequence waits this long for the bus */

/* The `realtime` config module (src/app/realtime.c). */
typedef struct app_rt_options {
    uint64_t auth_recheck_ms;       /* WS_AUTH_RECHECK */
    uint64_t ticket_ttl_ms;         /* WS_TICKET_TTL */
    uint64_t resume_max;            /* WS_RESUME_MAX */
    uint64_t body_max;              /* WS_MESSAGE_BODY_MAX */
    uint64_t rooms_max;             /* WS_ROOMS_MAX */
    uint64_t typing_ttl_ms;         /* WS_TYPING_TTL */
    uint64_t typing_interval_ms;    /* WS_TYPING_INTERVAL */
    uint64_t presence_heartbeat_ms; /* WS_PRESENCE_HEARTBEAT */
    uint64_t max_per_user;          /* WS_MAX_PER_USER */
} app_rt_options;

/* Who a connection is: from the ticket or the Bearer token. */
typedef struct rt_ident {
    char user[64];
    char role[32];
    char jti[64];
    int64_t iat, exp; /* the access token's */
} rt_ident;

/* A live message held while its room replays. */
typedef struct rt_held {
    int64_t seq;
    keel_ws_frame *frame;
    struct rt_held *next;
} rt_held;

/* A room (dm 0) or conversation (dm 1) a connection follows. */
typedef struct rt_sub {
    char room[65];
    int dm;
    int64_t last;        /* highest sequence sent */
    int replaying;       /* stored messages being read: live ones held */
    int joined;          /* room:join answered (counted in rooms_followed) */
    rt_held *held;       /* in sequence order */
    int64_t gap_since_ms; /* held messages wait for a hole since then */
    int64_t typing_until_ms; /* this connection types here until then */
    int64_t typing_sent_ms;  /* last typing:start accepted (rate limit) */
    struct rt_sub *next;
} rt_sub;

enum { RT_PENDING = 0, RT_OPEN = 1 };

struct rt_worker;
typedef struct rt_conn {
    struct rt_worker *wk;
    keel_ws *ws;        /* NULL until on_open */
    uint64_t wsid;
    uint64_t key;       /* process-unique, what async work finds it by */
    int64_t created_ms;
    int state;
    int closing;
    unsigned resuming;  /* resume entries still being read */
    json_t *resume_id;  /* the resume message's id, acked when done */
    json_t *resume_report;
    char user[64];
    char role[32];
    char jti[64];
    int64_t iat, exp;
    char status[8];     /* online | away */
    rt_sub *subs;
    unsigned nsubs;
    struct rt_conn *prev, *next;
} rt_conn;

typedef struct rt_worker {
    keel_worker *w;
    rt_conn *conns;
    uv_timer_t tick;
    int64_t next_recheck_ms;
    int checking;       /* an auth recheck round in flight */
    int started;
} rt_worker;

typedef struct rt_state {
    keel_service *svc;
    keel_server *srv;
    keel_db *db;
    keel_events *bus;
    const app_rt_options *o;
    rt_proto *proto;
    rt_worker *workers;
    unsigned nworkers;
    char instance[128];
    uint64_t next_key;
    int64_t rooms_followed;
    int64_t next_heartbeat_ms;
    keel_metric *m_in, *m_errors;
} rt_state;

extern rt_state R;
extern const keel_config_module app_realtime_config;
extern const keel_ws_handler rt_ws_handler;

int64_t rt_now_ms(void);
rt_worker *rt_worker_of(keel_worker *w);
rt_conn *rt_conn_find(rt_worker *wk, uint64_t key);
rt_sub *rt_sub_find(rt_conn *c, const char *room, int dm);
/* NULL when the connection follows WS_ROOMS_MAX already. */
rt_sub *rt_sub_add(rt_conn *c, const char *room, int dm);
void rt_sub_remove(rt_conn *c, rt_sub *s);
void rt_conn_name(const rt_conn *c, char *out, size_t cap);
int rt_send_json(rt_conn *c, const json_t *v);
void rt_send_new(rt_conn *c, json_t *v);          /* steals v */
void rt_ack(rt_conn *c, json_t *id, json_t *extra); /* extra stolen; nothing without id */
void rt_error(rt_conn *c, json_t *id, const char *code, const char *message);
int rt_publish(keel_worker *w, const char *kind, const char *target, json_t *payload);
void rt_upgrade(keel_req *r, const rt_ident *id);
int64_t rt_rooms_followed(json_t **unused);

/* Sends the held messages that follow what was sent. */
void rt_sub_drain(rt_conn *c, rt_sub *s);

/* realtime_dispatch.c */
/* Starts following a room (dm 0) or conversation (dm 1): authorization,
 * then the stored messages after `after` (-1: none, from now on), then
 * the live ones; ack with id (borrowed) unless from_resume. */
void rt_follow(rt_conn *c, const char *room, int dm, int64_t after, json_t *id,
               int from_resume);
void rt_dispatch(rt_conn *c, const rt_parsed *m);
void rt_typing_tick(rt_worker *wk, int64_t now);
void rt_typing_clear(rt_conn *c);
/* 0 with *ok (1: the user is active, the token not revoked nor older
 * than a logout-all; id->role updated), or a database error. */
int rt_db_user_ok(keel_db_conn *db, rt_ident *id, int *ok);
/* A stored message row (id, room_id, seq, sender_id, body, created_at)
 * from column `first`, as the client sees it (new reference). */
json_t *rt_message_json(keel_db_rows *rows, size_t first, int dm);

/* realtime_presence.c */
void rt_presence_init(void);
void rt_presence_conn(rt_conn *c, int delta);
void rt_presence_status(rt_conn *c, const char *status);
void rt_presence_on_bus(rt_worker *wk, json_t *payload);
void rt_presence_heartbeat(rt_worker *wk);
unsigned rt_presence_local_count(const char *user);
/* This instance's connections of the user and the other instances' (as
 * their last presence counts said, while not expired): WS_MAX_PER_USER. */
unsigned rt_presence_total_count(const char *user);
/* online | away | offline, into out. */
const char *rt_presence_status_of(const char *user, char out[8]);
size_t rt_presence_local_users(void);
/* {"user", "status": online|away|offline, "connections"} across instances. */
json_t *rt_presence_get(const char *user);
/* [{"user", "connections", "away"}] of this instance, plus the others'. */
json_t *rt_presence_list(void);

/* realtime_routes.c */
int rt_routes_setup(keel_service *svc);

#endif
