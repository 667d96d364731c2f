/* realtime.c — GET /ws, the reference service's realtime protocol
 * (docs/realtime.md, "Protocol"): authentication before the upgrade (a
 * single-use ticket or a Bearer token), the message dispatcher, rooms with
 * stored per-room sequences, direct messages, resume, typing, presence,
 * and the push API (app_push_*) — across instances through the event bus.
 *
 * Threads. Each worker owns the connections it accepted (rt_worker.conns,
 * touched on its loop only). Database work runs on the database pool
 * (keel_db_run_worker) and comes back to the worker's loop, where the
 * connection is looked up again by its key: it may have gone meanwhile.
 * Delivery always goes through the bus (channel "rt:..."), even on one
 * instance: the bus hands every message to every worker of every
 * instance, and each worker writes one shared frame (keel_ws_frame, built
 * once per worker) to the sockets it owns.
 *
 * Resume without gaps or duplicates. A connection keeps, per room (and
 * conversation) it follows, the highest sequence it has sent. When it
 * starts following a room (room:join, resume) the room is "replaying":
 * live messages for it are held (with their sequence) while the stored
 * ones after the client's last_seq are read; then the stored ones are
 * sent, then the held ones above what was sent, then live delivery goes
 * on — any message whose sequence is not above the last sent is dropped.
 * The stored sequence, not pub/sub, is the source of truth: a message
 * lost by pub/sub reaches the client at its next resume. */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "app/app.h"
#include "app/realtime.h"
#include "app/realtime_internal.h"

rt_state R;

/* ---------------------------------------------------------------- config */

#define AT(f) KEEL_CONFIG_AT(app_rt_options, f)
static const keel_config_var rt_vars[] = {
    {.name = "WS_AUTH_RECHECK", .type = KEEL_CONFIG_DURATION, .def = "30s", AT(auth_recheck_ms),
     .min = 100, .max = 3600000,
     .help = "how often each GET /ws connection's user and token are checked again (expired "
             "token, user disabled or logged out: close 4001)"},
    {.name = "WS_TICKET_TTL", .type = KEEL_CONFIG_DURATION, .def = "30s", AT(ticket_ttl_ms),
     .min = 1000, .max = 600000,
     .help = "lifetime of a single-use ticket from POST /api/v1/realtime/ticket"},
    {.name = "WS_RESUME_MAX", .type = KEEL_CONFIG_UINT, .def = "500", AT(resume_max), .min = 1,
     .max = 100000,
     .help = "most stored messages replayed per room on resume; a larger gap gets `resync`"},
    {.name = "WS_MESSAGE_BODY_MAX", .type = KEEL_CONFIG_UINT, .def = "4000", AT(body_max),
     .min = 1, .max = 65536, .help = "longest message body (characters) of message:send, dm:send"},
    {.name = "WS_ROOMS_MAX", .type = KEEL_CONFIG_UINT, .def = "100", AT(rooms_max), .min = 1,
     .max = 10000, .help = "rooms and conversations one connection follows at most"},
    {.name = "WS_TYPING_TTL", .type = KEEL_CONFIG_DURATION, .def = "5s", AT(typing_ttl_ms),
     .min = 200, .max = 60000,
     .help = "a typing:start expires after this (typing with state stop is sent)"},
    {.name = "WS_TYPING_INTERVAL", .type = KEEL_CONFIG_DURATION, .def = "1s",
     AT(typing_interval_ms), .min = 0, .max = 60000,
     .help = "typing:start at most once per room and connection in this time (error "
             "rate_limited beyond)"},
    {.name = "WS_PRESENCE_HEARTBEAT", .type = KEEL_CONFIG_DURATION, .def = "10s",
     AT(presence_heartbeat_ms), .min = 100, .max = 600000,
     .help = "each instance republishes its users' presence this often; an instance silent "
             "for 3 heartbeats counts as gone"},
    {.name = "WS_MAX_PER_USER", .type = KEEL_CONFIG_UINT, .def = "20", AT(max_per_user),
     .min = 0, .max = 100000,
     .help = "GET /ws connections per user across all instances, as presence counts them "
             "(429 beyond); 0 = no cap"},
};
#undef AT

const keel_config_module app_realtime_config = KEEL_CONFIG_MODULE(
    "realtime",
    "The reference service's realtime protocol on GET /ws: tickets, auth rechecks, resume, "
    "typing, presence (src/app/realtime.c, docs/realtime.md).",
    app_rt_options, rt_vars, NULL);

/* ---------------------------------------------------------------- helpers */

int64_t rt_now_ms(void)
{
    return (int64_t)(keel_now_ns() / 1000000u);
}

rt_worker *rt_worker_of(keel_worker *w)
{
    unsigned i = keel_worker_id(w);
    return i < R.nworkers ? &R.workers[i] : NULL;
}

rt_conn *rt_conn_find(rt_worker *wk, uint64_t key)
{
    for (rt_conn *c = wk ? wk->conns : NULL; c; c = c->next)
        if (c->key == key)
            return c;
    return NULL;
}

rt_sub *rt_sub_find(rt_conn *c, const char *room, int dm)
{
    for (rt_sub *s = c->subs; s; s = s->next)
        if (s->dm == dm && !strcmp(s->room, room))
            return s;
    return NULL;
}

static void held_free(rt_held *h)
{
    while (h) {
        rt_held *n = h->next;
        keel_ws_frame_unref(h->frame);
        keel_free(h);
        h = n;
    }
}

rt_sub *rt_sub_add(rt_conn *c, const char *room, int dm)
{
    rt_sub *s = rt_sub_find(c, room, dm);
    if (s)
        return s;
    if (c->nsubs >= R.o->rooms_max)
        return NULL;
    s = keel_calloc(1, sizeof(*s));
    snprintf(s->room, sizeof(s->room), "%s", room);
    s->dm = dm;
    s->next = c->subs;
    c->subs = s;
    c->nsubs++;
    return s;
}

void rt_sub_remove(rt_conn *c, rt_sub *s)
{
    for (rt_sub **p = &c->subs; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            c->nsubs--;
            held_free(s->held);
            keel_free(s);
            return;
        }
}

static void conn_free(rt_conn *c)
{
    while (c->subs)
        rt_sub_remove(c, c->subs);
    keel_free(c);
}

static void conn_unlink(rt_conn *c)
{
    rt_worker *wk = c->wk;
    if (c->prev)
        c->prev->next = c->next;
    else
        wk->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

/* Sends a JSON value (borrowed) to one connection. */
int rt_send_json(rt_conn *c, const json_t *v)
{
    if (!c->ws)
        return KEEL_ECLOSED;
    char *text = json_dumps(v, JSON_COMPACT);
    if (!text)
        return KEEL_ENOMEM;
    int rc = keel_ws_send(c->ws, KEEL_WS_TEXT, text, strlen(text));
    free(text);
    return rc;
}

void rt_send_new(rt_conn *c, json_t *v)
{
    rt_send_json(c, v);
    json_decref(v);
}

void rt_ack(rt_conn *c, json_t *id, json_t *extra)
{
    if (!id) {
        json_decref(extra);
        return;
    }
    json_t *o = extra ? extra : json_object();
    json_object_set_new(o, "type", json_string("ack"));
    json_object_set(o, "id", id);
    rt_send_new(c, o);
}

void rt_error(rt_conn *c, json_t *id, const char *code, const char *message)
{
    json_t *o = json_pack("{s:s,s:O?,s:s,s:s}", "type", "error", "id", id, "code", code,
                          "message", message);
    if (!id)
        json_object_set_new(o, "id", json_null());
    rt_send_new(c, o);
    keel_metric_add(R.m_errors, keel_worker_id(c->wk->w), (const char *const[]){code}, 1);
}

/* "instance:key", what tells this connection apart on every instance. */
void rt_conn_name(const rt_conn *c, char *out, size_t cap)
{
    snprintf(out, cap, "%s:%llu", R.instance, (unsigned long long)c->key);
}

/* ---------------------------------------------------------------- the bus */

static void published(void *arg, int status)
{
    (void)arg;
    if (status < 0)
        keel_log(KEEL_LOG_WARN, "realtime: publish failed", "{s:i}", "status", status);
}

/* Publishes payload (stolen) on channel "rt:<kind>[:<target>]" from w's
 * loop. The payload carries the client's message as text ("m"), so that
 * every worker makes its frame from the same bytes. */
int rt_publish(keel_worker *w, const char *kind, const char *target, json_t *payload)
{
    char ch[KEEL_EVENTS_CHANNEL_MAX + 1];
    if (target)
        snprintf(ch, sizeof(ch), "rt:%s:%s", kind, target);
    else
        snprintf(ch, sizeof(ch), "rt:%s", kind);
    json_object_set_new(payload, "k", json_string(kind));
    if (target)
        json_object_set_new(payload, "t", json_string(target));
    char id[KEEL_EVENTS_ID_LEN + 1];
    int rc = keel_events_publish(R.bus, w, ch, payload, id, published, NULL);
    json_decref(payload);
    if (rc < 0)
        keel_log(KEEL_LOG_WARN, "realtime: publish refused", "{s:s,s:i}", "channel", ch,
                 "status", rc);
    return rc;
}

/* Holds a message (a reference to its frame) in sequence order; a
 * sequence already held is dropped. */
static void hold(rt_sub *s, int64_t seq, keel_ws_frame *f)
{
    rt_held **p = &s->held;
    while (*p && (*p)->seq < seq)
        p = &(*p)->next;
    if (*p && (*p)->seq == seq)
        return;
    rt_held *h = keel_calloc(1, sizeof(*h));
    h->seq = seq;
    h->frame = keel_ws_frame_ref(f);
    h->next = *p;
    *p = h;
}

void rt_sub_drain(rt_conn *c, rt_sub *s)
{
    while (s->held && s->held->seq <= s->last + 1) {
        rt_held *h = s->held;
        s->held = h->next;
        if (h->seq == s->last + 1) {
            s->last = h->seq;
            keel_ws_send_frame(c->ws, h->frame);
        }
        keel_ws_frame_unref(h->frame);
        keel_free(h);
    }
    s->gap_since_ms = s->held ? (s->gap_since_ms ? s->gap_since_ms : rt_now_ms()) : 0;
}

/* A message for a followed room or conversation, delivered in sequence
 * order, each once: held while the room replays; held when it comes
 * before one it follows (two senders on two workers or instances publish
 * concurrently, and the bus keeps only each publisher's order) until the
 * hole is filled — by the bus, or after RT_REORDER_MS from the database
 * (the tick); dropped when not above what was sent. */
static void deliver_seq(rt_conn *c, rt_sub *s, int64_t seq, keel_ws_frame *f)
{
    if (s->replaying) {
        hold(s, seq, f);
        return;
    }
    if (seq <= s->last)
        return;
    if (seq == s->last + 1) {
        s->last = seq;
        keel_ws_send_frame(c->ws, f);
    } else {
        hold(s, seq, f);
    }
    rt_sub_drain(c, s);
}

/* One bus message on worker w: to the connections it names. */
static void on_bus(void *arg, keel_worker *w, const char *channel, const char *envelope,
                   size_t len)
{
    (void)arg;
    rt_worker *wk = rt_worker_of(w);
    if (!wk)
        return;
    if (!wk->conns && strcmp(channel, "rt:presence") != 0)
        return;
    json_t *env = json_loadb(envelope, len, 0, NULL);
    json_t *p = json_object_get(env, "payload");
    const char *kind = json_string_value(json_object_get(p, "k"));
    const char *target = json_string_value(json_object_get(p, "t"));
    const char *m = json_string_value(json_object_get(p, "m"));
    if (!kind) {
        json_decref(env);
        return;
    }
    if (!strcmp(kind, "presence")) {
        rt_presence_on_bus(wk, p);
        json_decref(env);
        return;
    }
    if (!m) {
        json_decref(env);
        return;
    }
    json_t *seqv = json_object_get(p, "seq");
    int64_t seq = json_is_integer(seqv) ? (int64_t)json_integer_value(seqv) : -1;
    const char *room = json_string_value(json_object_get(p, "room"));
    const char *skip = json_string_value(json_object_get(p, "skip"));
    const char *from = json_string_value(json_object_get(p, "u"));
    int droppable = json_is_true(json_object_get(p, "d"));
    keel_ws_frame *f = keel_ws_frame_new(KEEL_WS_TEXT, m, strlen(m));
    char name[160];
    for (rt_conn *c = wk->conns; c && f; c = c->next) {
        if (!c->ws || c->closing)
            continue;
        if (!strcmp(kind, "room")) {
            rt_sub *s = target ? rt_sub_find(c, target, 0) : NULL;
            if (!s)
                continue;
            if (seq >= 0) {
                deliver_seq(c, s, seq, f);
            } else {
                if (from && !strcmp(from, c->user))
                    continue; /* one's own typing */
                keel_ws_send_frame_droppable(c->ws, f);
            }
        } else if (!strcmp(kind, "user")) {
            if (!target || strcmp(target, c->user))
                continue;
            if (skip) {
                rt_conn_name(c, name, sizeof(name));
                if (!strcmp(skip, name))
                    continue;
            }
            rt_sub *s = NULL;
            if (room && seq >= 0 && !(s = rt_sub_find(c, room, 1)) &&
                (s = rt_sub_add(c, room, 1)))
                s->last = seq - 1; /* followed from this one on */
            if (s)
                deliver_seq(c, s, seq, f);
            else
                keel_ws_send_frame(c->ws, f);
        } else if (!strcmp(kind, "all")) {
            keel_ws_send_frame(c->ws, f);
        } else if (!strcmp(kind, "role")) {
            if (target && !strcmp(target, c->role))
                keel_ws_send_frame(c->ws, f);
        }
        (void)droppable;
    }
    keel_ws_frame_unref(f);
    json_decref(env);
}

/* ---------------------------------------------------------------- push API */

static int push(keel_worker *w, const char *kind, const char *target, const char *type,
                const json_t *data)
{
    if (!R.bus || !type || !*type || (data && !json_is_object(data)))
        return KEEL_EINVAL;
    if (!w)
        w = keel_server_worker(R.srv, 0);
    if (!w)
        return KEEL_EINVAL;
    json_t *msg = data ? json_deep_copy(data) : json_object();
    json_object_set_new(msg, "type", json_string(type));
    char *text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (!text)
        return KEEL_ENOMEM;
    json_t *p = json_pack("{s:s}", "m", text);
    free(text);
    return rt_publish(w, kind, target, p);
}

int app_push_user(keel_worker *w, const char *user_id, const char *type, const json_t *data)
{
    return user_id ? push(w, "user", user_id, type, data) : KEEL_EINVAL;
}

int app_push_room(keel_worker *w, const char *room_id, const char *type, const json_t *data)
{
    return room_id ? push(w, "room", room_id, type, data) : KEEL_EINVAL;
}

int app_push_all(keel_worker *w, const char *type, const json_t *data)
{
    return push(w, "all", NULL, type, data);
}

int app_push_role(keel_worker *w, const char *role, const char *type, const json_t *data)
{
    return role && keel_role_valid(role) ? push(w, "role", role, type, data) : KEEL_EINVAL;
}

/* ---------------------------------------------------------------- the route */

static void rt_on_open(keel_ws *ws)
{
    rt_conn *c = keel_ws_user(ws);
    if (!c)
        return;
    c->ws = ws;
    c->state = RT_OPEN;
    c->wsid = keel_ws_id(ws);
    char name[160];
    rt_conn_name(c, name, sizeof(name));
    rt_send_new(c, json_pack("{s:s,s:s,s:s,s:I,s:I}", "type", "welcome", "user", c->user,
                             "connection", name, "resume_max", (json_int_t)R.o->resume_max,
                             "body_max", (json_int_t)R.o->body_max));
    rt_presence_conn(c, +1);
}

static void rt_on_close(keel_ws *ws, int code, const char *reason, size_t rlen)
{
    (void)code;
    (void)reason;
    (void)rlen;
    rt_conn *c = keel_ws_user(ws);
    if (!c)
        return;
    rt_presence_conn(c, -1);
    rt_typing_clear(c);
    conn_unlink(c);
    conn_free(c);
}

static void rt_on_message(keel_ws *ws, keel_ws_opcode op, const void *data, size_t len)
{
    rt_conn *c = keel_ws_user(ws);
    if (!c || c->closing)
        return;
    if (op != KEEL_WS_TEXT) {
        rt_error(c, NULL, "invalid_message", "messages are JSON text, not binary");
        return;
    }
    rt_parsed m;
    if (rt_proto_parse(R.proto, data, len, &m) < 0) {
        rt_error(c, m.id, m.code, m.message);
        rt_parsed_clear(&m);
        return;
    }
    keel_metric_add(R.m_in, keel_worker_id(c->wk->w), (const char *const[]){rt_msg_names[m.type]},
                    1);
    rt_dispatch(c, &m);
    rt_parsed_clear(&m);
}

const keel_ws_handler rt_ws_handler = {
    .on_open = rt_on_open, .on_message = rt_on_message, .on_close = rt_on_close};

/* The identity is known: count, then upgrade (or refuse). */
void rt_upgrade(keel_req *r, const rt_ident *id)
{
    rt_worker *wk = rt_worker_of(keel_req_worker(r));
    if (!wk) {
        keel_respond_problem(r, 503, "not ready");
        return;
    }
    if (R.o->max_per_user) {
        unsigned n = 0;
        for (rt_conn *c = wk->conns; c; c = c->next)
            if (!strcmp(c->user, id->user))
                n++;
        /* every instance's connections of the user (this one's, and the
         * others' as their presence counts arrived over the bus), and the
         * 101s of this worker not yet open */
        if (rt_presence_total_count(id->user) >= R.o->max_per_user ||
            n >= R.o->max_per_user) {
            keel_res_header(r, "Retry-After", "10");
            keel_respond_problem(r, 429, "too many realtime connections for this user");
            return;
        }
    }
    rt_conn *c = keel_calloc(1, sizeof(*c));
    c->wk = wk;
    c->key = __atomic_add_fetch(&R.next_key, 1, __ATOMIC_RELAXED);
    c->created_ms = rt_now_ms();
    snprintf(c->user, sizeof(c->user), "%s", id->user);
    snprintf(c->role, sizeof(c->role), "%s", id->role);
    snprintf(c->jti, sizeof(c->jti), "%s", id->jti);
    snprintf(c->status, sizeof(c->status), "online");
    c->iat = id->iat;
    c->exp = id->exp;
    c->state = RT_PENDING;
    keel_ws_accept(r, c);
    if (keel_res_get_status(r) != 101) {
        conn_free(c);
        return;
    }
    /* on_open claims it; a 101 that never takes effect (the client left)
     * is swept by the tick after RT_PENDING_MAX_MS */
    c->next = wk->conns;
    if (wk->conns)
        wk->conns->prev = c;
    wk->conns = c;
}

/* ---------------------------------------------------------------- auth recheck
 *
 * Every WS_AUTH_RECHECK each worker checks all its connections in ONE
 * pool job (not one per connection: 10,000 idle connections must not
 * fill the database pool's queue every round and starve HTTP requests),
 * one query per distinct user and token. A connection whose token
 * expired is closed at once, without asking the database. */

typedef struct recheck_item {
    uint64_t key;
    rt_ident id;
    int ok;
} recheck_item;

typedef struct recheck_job {
    rt_worker *wk;
    size_t n;
    recheck_item *items;
} recheck_job;

static int db_recheck(keel_db_conn *db, void *arg)
{
    recheck_job *j = arg;
    json_t *seen = json_object(); /* "user jti iat" -> the item that asked */
    int rc = 0;
    for (size_t i = 0; i < j->n && rc == 0; i++) {
        recheck_item *it = &j->items[i];
        char k[200];
        snprintf(k, sizeof(k), "%s %s %lld", it->id.user, it->id.jti, (long long)it->id.iat);
        json_t *prev = json_object_get(seen, k);
        if (prev) { /* the same user and token: the same answer */
            const recheck_item *p = &j->items[json_integer_value(prev)];
            it->ok = p->ok;
            memcpy(it->id.role, p->id.role, sizeof(it->id.role));
            continue;
        }
        rc = rt_db_user_ok(db, &it->id, &it->ok);
        json_object_set_new(seen, k, json_integer((json_int_t)i));
    }
    json_decref(seen);
    return rc;
}

static void rechecked(void *arg, int status)
{
    recheck_job *j = arg;
    j->wk->checking = 0;
    for (size_t i = 0; status == 0 && i < j->n; i++) {
        rt_conn *c = rt_conn_find(j->wk, j->items[i].key);
        if (!c || !c->ws || c->closing)
            continue;
        if (!j->items[i].ok) {
            c->closing = 1;
            keel_ws_close(c->ws, RT_CLOSE_AUTH, "session ended");
        } else {
            snprintf(c->role, sizeof(c->role), "%s", j->items[i].id.role);
        }
    }
    keel_free(j->items);
    keel_free(j);
}

static void recheck(rt_worker *wk)
{
    int64_t now_s = app_now(); /* exp is wall-clock time */
    size_t n = 0;
    for (rt_conn *c = wk->conns; c; c = c->next) {
        if (!c->ws || c->closing)
            continue;
        if (c->exp && now_s >= c->exp) {
            c->closing = 1;
            keel_ws_close(c->ws, RT_CLOSE_AUTH, "token expired");
            continue;
        }
        n++;
    }
    if (!n || wk->checking) /* the last round is still running: skip this one */
        return;
    recheck_job *j = keel_calloc(1, sizeof(*j));
    j->wk = wk;
    j->items = keel_calloc(n, sizeof(recheck_item));
    for (rt_conn *c = wk->conns; c && j->n < n; c = c->next) {
        if (!c->ws || c->closing)
            continue;
        recheck_item *it = &j->items[j->n++];
        it->key = c->key;
        snprintf(it->id.user, sizeof(it->id.user), "%s", c->user);
        snprintf(it->id.jti, sizeof(it->id.jti), "%s", c->jti);
        it->id.iat = c->iat;
    }
    if (keel_db_run_worker(wk->w, R.db, 0, db_recheck, rechecked, j) < 0) {
        keel_free(j->items); /* the pool is full: next round */
        keel_free(j);
        return;
    }
    wk->checking = 1;
}

/* ---------------------------------------------------------------- the tick */

#define RT_TICK_MS 250
#define RT_PENDING_MAX_MS 60000

static void on_tick(uv_timer_t *t)
{
    rt_worker *wk = t->data;
    int64_t now = rt_now_ms();
    for (rt_conn *c = wk->conns, *n; c; c = n) {
        n = c->next;
        if (c->state == RT_PENDING && now - c->created_ms > RT_PENDING_MAX_MS) {
            conn_unlink(c);
            conn_free(c);
        }
    }
    rt_typing_tick(wk, now);
    for (rt_conn *c = wk->conns; c; c = c->next)
        for (rt_sub *s = c->ws && !c->closing ? c->subs : NULL; s; s = s->next)
            if (s->held && !s->replaying && s->gap_since_ms &&
                now - s->gap_since_ms >= RT_REORDER_MS) {
                s->gap_since_ms = 0;
                rt_follow(c, s->room, s->dm, s->last, NULL, 0); /* fills the hole */
            }
    if (now >= wk->next_recheck_ms) {
        wk->next_recheck_ms = now + (int64_t)R.o->auth_recheck_ms;
        recheck(wk);
    }
    if (keel_worker_id(wk->w) == 0 && now >= R.next_heartbeat_ms) {
        R.next_heartbeat_ms = now + (int64_t)R.o->presence_heartbeat_ms;
        rt_presence_heartbeat(wk);
    }
}

static void worker_start(keel_worker *w, void *arg)
{
    (void)arg;
    rt_worker *wk = rt_worker_of(w);
    if (!wk)
        return;
    wk->w = w;
    uv_timer_init(keel_worker_loop(w), &wk->tick);
    wk->tick.data = wk;
    wk->next_recheck_ms = rt_now_ms() + (int64_t)R.o->auth_recheck_ms;
    uv_timer_start(&wk->tick, on_tick, RT_TICK_MS, RT_TICK_MS);
    wk->started = 1;
}

static void worker_stop(keel_worker *w, void *arg)
{
    (void)arg;
    rt_worker *wk = rt_worker_of(w);
    if (!wk || !wk->started)
        return;
    uv_timer_stop(&wk->tick);
    uv_close((uv_handle_t *)&wk->tick, NULL);
    wk->started = 0;
    /* connections that never opened (their 101 was lost) */
    while (wk->conns) {
        rt_conn *c = wk->conns;
        conn_unlink(c);
        conn_free(c);
    }
}

/* ---------------------------------------------------------------- health, metrics */

static int health_realtime(void *arg, char *detail, size_t cap, json_t **data)
{
    (void)arg;
    uint64_t conns = keel_ws_connections(R.srv);
    json_t *rooms = NULL;
    int64_t nrooms = rt_rooms_followed(&rooms);
    snprintf(detail, cap, "%llu connections, %lld rooms followed", (unsigned long long)conns,
             (long long)nrooms);
    *data = json_pack("{s:I,s:I,s:I,s:s}", "connections", (json_int_t)conns, "users",
                      (json_int_t)rt_presence_local_users(), "rooms", (json_int_t)nrooms,
                      "bus", keel_events_backend(R.bus));
    json_decref(rooms);
    return KEEL_HEALTH_PASS;
}

int64_t rt_rooms_followed(json_t **unused)
{
    *unused = NULL;
    return __atomic_load_n(&R.rooms_followed, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------- setup */

/* ---------------------------------------------------------------- live notifications
 *
 * The notifications module's live hook (app_notify_set_live): each in-app
 * notification, once committed, reaches the user's open connections as
 * {"type": "notification", "notification": {...}}. The hook runs on a job
 * runner thread; the push API wants a worker's loop: the notification is
 * posted to worker 0 as text and pushed from there. */
typedef struct live_post {
    keel_worker *w;
    char user[64];
    char *text;
} live_post;

static void live_on_worker(void *arg)
{
    live_post *p = arg;
    json_t *n = json_loads(p->text, 0, NULL);
    if (n) {
        json_t *data = json_pack("{s:o}", "notification", n);
        app_push_user(p->w, p->user, "notification", data);
        json_decref(data);
    }
    free(p->text);
    keel_free(p);
}

static void live_notification(const char *user_id, const json_t *notification, void *arg)
{
    (void)arg;
    keel_worker *w = keel_server_worker(R.srv, 0);
    char *text = json_dumps(notification, JSON_COMPACT);
    if (!w || !text || !user_id) {
        free(text);
        return;
    }
    live_post *p = keel_calloc(1, sizeof(*p));
    p->w = w;
    snprintf(p->user, sizeof(p->user), "%s", user_id);
    p->text = text;
    if (keel_worker_post(w, live_on_worker, p) < 0) { /* stopping: the inbox still has it */
        free(text);
        keel_free(p);
    }
}

/* Alert notifications (src/app/alerts.c) to the admins' connections, as
 * {"type": "alert", "alert": <the webhook's payload>}; on w's loop. */
static void live_alert(keel_worker *w, const json_t *payload, void *arg)
{
    (void)arg;
    json_t *data = json_pack("{s:O}", "alert", payload);
    app_push_role(w, "admin", "alert", data);
    json_decref(data);
}

int app_realtime_setup(keel_service *svc)
{
    const keel_config *cfg = keel_service_config(svc);
    R.svc = svc;
    R.srv = keel_service_server(svc);
    R.db = keel_service_db(svc);
    R.bus = keel_service_events(svc);
    R.o = keel_config_get(cfg, &app_realtime_config);
    if (!R.o)
        return -1;
    if (!R.db || !R.bus) /* a command, not `serve`: the routes only (keel routes, openapi) */
        return rt_routes_setup(svc);
    snprintf(R.instance, sizeof(R.instance), "%s", keel_events_instance(R.bus));
    char err[256];
    if (!(R.proto = rt_proto_new(R.o->body_max, err, sizeof(err)))) {
        keel_log(KEEL_LOG_ERROR, "realtime: a message schema does not compile", "{s:s}",
                 "error", err);
        return -1;
    }
    R.nworkers = keel_server_workers(R.srv);
    R.workers = keel_calloc(R.nworkers ? R.nworkers : 1, sizeof(rt_worker));
    keel_worker_hooks h = {.on_start = worker_start, .on_stop = worker_stop};
    keel_server_add_worker_hooks(R.srv, &h);
    if (keel_events_subscribe(R.bus, "rt:*", on_bus, NULL) < 0)
        return -1;
    keel_metrics *m = keel_service_metrics(svc);
    if (m) {
        static const char *const type_label[] = {"type", NULL};
        static const char *const code_label[] = {"code", NULL};
        R.m_in = keel_metrics_counter(m, "realtime_messages_total",
                                      "client messages of GET /ws by type (valid ones)",
                                      type_label);
        static const char *names[RT_MSG__COUNT + 1];
        for (int i = 0; i < RT_MSG__COUNT; i++)
            names[i] = rt_msg_names[i];
        keel_metric_declare_each(R.m_in, NULL, 0, names);
        R.m_errors = keel_metrics_counter(m, "realtime_errors_total",
                                          "error answers of GET /ws by code", code_label);
    }
    keel_health_check hc = {.name = "realtime", .critical = 0, .data_fn = health_realtime,
                            .flags = KEEL_HEALTH_INLINE};
    if (keel_service_health(svc))
        keel_health_add(keel_service_health(svc), &hc);
    rt_presence_init();
    app_notify_set_live(live_notification, NULL);
    app_alerts_set_listener(live_alert, NULL);
    return rt_routes_setup(svc);
}
