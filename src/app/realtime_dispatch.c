/* realtime_dispatch.c — what each client message of GET /ws does
 * (docs/realtime.md, "Protocol"): rooms (join with authorization and
 * replay, leave), messages stored with the next per-room sequence before
 * they are published, direct messages in per-pair conversations, resume,
 * typing and presence status. Database work runs on the pool
 * (keel_db_run_worker); its completion finds the connection again by key. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "app/realtime_internal.h"

/* ---------------------------------------------------------------- shared */

int rt_db_user_ok(keel_db_conn *db, rt_ident *id, int *ok)
{
    keel_db_param p[] = {KEEL_DB_P_TEXT(id->user), KEEL_DB_P_TEXT(id->jti)};
    keel_db_rows *rows;
    int rc = keel_db_query(db,
                           "SELECT role, status, tokens_valid_after, "
                           "(SELECT COUNT(*) FROM revoked_tokens WHERE jti = $2) "
                           "FROM users WHERE id = $1 AND deleted_at IS NULL",
                           p, 2, &rows);
    if (rc < 0)
        return rc;
    *ok = 0;
    if ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str role = keel_db_get_text(rows, 0);
        int active = keel_str_eq(keel_db_get_text(rows, 1), keel_str_c("active"));
        if (active && keel_db_get_int(rows, 3) == 0 && id->iat >= keel_db_get_int(rows, 2)) {
            *ok = 1;
            snprintf(id->role, sizeof(id->role), "%.*s", (int)role.len, role.ptr);
        }
    }
    keel_db_rows_free(rows);
    return rc < 0 ? rc : 0;
}

json_t *rt_message_json(keel_db_rows *rows, size_t first, int dm)
{
    keel_str id = keel_db_get_text(rows, first), room = keel_db_get_text(rows, first + 1),
             sender = keel_db_get_text(rows, first + 3), body = keel_db_get_text(rows, first + 4);
    char at[32];
    app_format_time(keel_db_get_int(rows, first + 5), at);
    return json_pack("{s:s%,s:s%,s:I,s:s%,s:s%,s:s}", "id", id.ptr, id.len,
                     dm ? "conversation" : "room", room.ptr, room.len, "seq",
                     (json_int_t)keel_db_get_int(rows, first + 2), "sender", sender.ptr,
                     sender.len, "body", body.ptr, body.len, "created_at", at);
}

#define MSG_COLUMNS "id, room_id, seq, sender_id, body, created_at"

static char *dumps(json_t *v) /* steals v; NULL on OOM */
{
    char *t = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    return t;
}

/* Publishes a stored message to a room's followers or a user's
 * connections: the frame text, its sequence and room for ordering. */
static void publish_seq(keel_worker *w, const char *kind, const char *target, const char *room,
                        int64_t seq, const char *text, const char *skip)
{
    json_t *p = json_pack("{s:s,s:I,s:s}", "m", text, "seq", (json_int_t)seq, "room", room);
    if (skip)
        json_object_set_new(p, "skip", json_string(skip));
    rt_publish(w, kind, target, p);
}

/* A presence or typing note to a room: droppable, not to the sender's
 * own user. */
static void publish_note(keel_worker *w, const char *room, const char *user, json_t *msg)
{
    char *text = dumps(msg);
    if (!text)
        return;
    rt_publish(w, "room", room, json_pack("{s:s,s:s,s:b}", "m", text, "u", user, "d", 1));
    free(text);
}

static void db_error(rt_conn *c, json_t *id, int status)
{
    if (status == KEEL_EDB_NOROW)
        rt_error(c, id, "not_found", "no such room, conversation or user");
    else if (status == KEEL_EBUSY || keel_db_error_status(status) == 503)
        rt_error(c, id, "unavailable", "the database is busy or unavailable: try again");
    else
        rt_error(c, id, "internal", "the request failed");
}

/* ---------------------------------------------------------------- join, replay */

typedef struct join_job {
    rt_worker *wk;
    uint64_t key;
    char user[64];
    char room[65];
    int dm;            /* a conversation (resume) */
    int64_t after;     /* the client's last_seq, -1 for none */
    int created;       /* the sub was made for this job */
    int from_resume;
    json_t *id;        /* the client's id (owned) */
    /* results */
    int verdict;       /* 0 ok, 1 not found, 2 forbidden */
    char kind[16];
    char name[256];
    int64_t last_seq;
    int resync;
    json_t *msgs;
} join_job;

static void join_free(join_job *j)
{
    json_decref(j->id);
    json_decref(j->msgs);
    keel_free(j);
}

static int db_join(keel_db_conn *db, void *arg)
{
    join_job *j = arg;
    json_decref(j->msgs); /* a retried transaction */
    j->msgs = NULL;
    j->resync = 0;
    j->verdict = 1;
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->room)};
    keel_db_rows *rows;
    int rc = keel_db_query(db, "SELECT kind, name, last_seq FROM rt_rooms WHERE id = $1", p, 1,
                           &rows);
    if (rc < 0)
        return rc;
    if ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str k = keel_db_get_text(rows, 0), n = keel_db_get_text(rows, 1);
        snprintf(j->kind, sizeof(j->kind), "%.*s", (int)k.len, k.ptr);
        snprintf(j->name, sizeof(j->name), "%.*s", (int)n.len, n.ptr);
        j->last_seq = keel_db_get_int(rows, 2);
        j->verdict = 0;
    }
    keel_db_rows_free(rows);
    if (rc < 0)
        return rc;
    if (j->verdict)
        return 0;
    int is_dm = !strcmp(j->kind, "dm");
    if (is_dm != j->dm) {
        j->verdict = 1; /* a conversation is not joined as a room, nor the reverse */
        return 0;
    }
    int64_t now = app_now();
    if (!strcmp(j->kind, "public")) {
        keel_db_param q[] = {KEEL_DB_P_TEXT(j->room), KEEL_DB_P_TEXT(j->user),
                             KEEL_DB_P_INT(now)};
        rc = keel_db_exec(db,
                          "INSERT INTO rt_members (room_id, user_id, role, created_at) "
                          "VALUES ($1, $2, 'member', $3) ON CONFLICT DO NOTHING",
                          q, 3, NULL);
        if (rc < 0)
            return rc;
    } else {
        /* private rooms and conversations: members and invitees only */
        keel_db_param q[] = {KEEL_DB_P_TEXT(j->room), KEEL_DB_P_TEXT(j->user)};
        rc = keel_db_query(db, "SELECT role FROM rt_members WHERE room_id = $1 AND user_id = $2",
                           q, 2, &rows);
        if (rc < 0)
            return rc;
        int invited = 0;
        j->verdict = 2;
        if ((rc = keel_db_rows_next(rows)) == 1) {
            j->verdict = 0;
            invited = keel_str_eq(keel_db_get_text(rows, 0), keel_str_c("invited"));
        }
        keel_db_rows_free(rows);
        if (rc < 0)
            return rc;
        if (j->verdict)
            return 0;
        if (invited && (rc = keel_db_exec(db,
                                          "UPDATE rt_members SET role = 'member' "
                                          "WHERE room_id = $1 AND user_id = $2",
                                          q, 2, NULL)) < 0)
            return rc;
    }
    if (j->after < 0 || j->after >= j->last_seq)
        return 0;
    if ((uint64_t)(j->last_seq - j->after) > R.o->resume_max) {
        j->resync = 1;
        return 0;
    }
    keel_db_param q[] = {KEEL_DB_P_TEXT(j->room), KEEL_DB_P_INT(j->after),
                         KEEL_DB_P_INT((int64_t)R.o->resume_max)};
    rc = keel_db_query(db,
                       "SELECT " MSG_COLUMNS " FROM rt_messages WHERE room_id = $1 AND seq > $2 "
                       "ORDER BY seq LIMIT $3",
                       q, 3, &rows);
    if (rc < 0)
        return rc;
    j->msgs = json_array();
    while ((rc = keel_db_rows_next(rows)) == 1)
        json_array_append_new(j->msgs, rt_message_json(rows, 0, j->dm));
    keel_db_rows_free(rows);
    return rc < 0 ? rc : 0;
}

/* Sends what was read, then what was held, and goes live. */
static void replay(rt_conn *c, rt_sub *s, join_job *j)
{
    if (s->last < 0) /* no last_seq: from now on */
        s->last = j->last_seq;
    if (j->resync) {
        rt_send_new(c, json_pack("{s:s,s:s,s:I,s:I}", "type", "resync",
                                 j->dm ? "conversation" : "room", j->room, "after_seq",
                                 (json_int_t)j->after, "last_seq", (json_int_t)j->last_seq));
        if (s->last < j->last_seq)
            s->last = j->last_seq;
    }
    size_t i;
    json_t *m;
    json_array_foreach(j->msgs, i, m) {
        int64_t seq = (int64_t)json_integer_value(json_object_get(m, "seq"));
        if (seq <= s->last)
            continue;
        s->last = seq;
        json_t *o = json_pack("{s:s,s:s,s:O,s:b}", "type",
                              j->dm ? "dm:received" : "message:received",
                              j->dm ? "conversation" : "room", j->room, "message", m, "replay",
                              1);
        rt_send_new(c, o);
    }
    s->replaying = 0;
    /* then the held ones above (in order; a hole left means the database
     * did not have it yet when read: its live copy fills it) */
    while (s->held && s->held->seq <= s->last) {
        rt_held *h = s->held;
        s->held = h->next;
        keel_ws_frame_unref(h->frame);
        keel_free(h);
    }
    s->gap_since_ms = 0;
    rt_sub_drain(c, s);
}

static void resume_step(rt_conn *c, join_job *j, const char *outcome)
{
    if (!j->from_resume || !c->resuming)
        return;
    json_t *part = json_object_get(c->resume_report, j->dm ? "conversations" : "rooms");
    json_object_set_new(part, j->room, json_string(outcome));
    if (--c->resuming == 0) {
        json_t *rep = c->resume_report;
        c->resume_report = NULL;
        json_t *id = c->resume_id;
        c->resume_id = NULL;
        if (id)
            rt_ack(c, id, rep);
        else
            json_decref(rep);
        json_decref(id);
    }
}

static void joined(void *arg, int status)
{
    join_job *j = arg;
    rt_conn *c = rt_conn_find(j->wk, j->key);
    rt_sub *s = c ? rt_sub_find(c, j->room, j->dm) : NULL;
    if (!c || !c->ws || !s) {
        join_free(j);
        return;
    }
    if (status < 0 || j->verdict) {
        if (j->created)
            rt_sub_remove(c, s);
        if (status < 0)
            db_error(c, j->id, status);
        else if (j->verdict == 2)
            rt_error(c, j->id, "forbidden",
                     "a private room: only its members and those invited may join");
        else
            rt_error(c, j->id, "not_found", j->dm ? "no such conversation" : "no such room");
        resume_step(c, j, status < 0 ? "unavailable" : j->verdict == 2 ? "forbidden" : "not_found");
        join_free(j);
        return;
    }
    if (!j->from_resume)
        rt_ack(c, j->id, json_pack("{s:{s:s,s:s,s:s,s:I}}", "room", "id", j->room, "name",
                                   j->name, "kind", j->kind, "last_seq",
                                   (json_int_t)j->last_seq));
    replay(c, s, j);
    if (!s->joined && !j->dm) {
        s->joined = 1;
        __atomic_add_fetch(&R.rooms_followed, 1, __ATOMIC_RELAXED);
        publish_note(c->wk->w, j->room, c->user,
                     json_pack("{s:s,s:s,s:s,s:s,s:s}", "type", "presence", "room", j->room,
                               "user", c->user, "event", "join", "status", c->status));
    }
    s->joined = 1;
    resume_step(c, j, j->resync ? "resync" : "ok");
    join_free(j);
}

/* Starts following a room (dm 0) or conversation (dm 1). */
void rt_follow(rt_conn *c, const char *room, int dm, int64_t after, json_t *id,
                   int from_resume)
{
    rt_sub *s = rt_sub_find(c, room, dm);
    int created = 0;
    if (!s) {
        if (!(s = rt_sub_add(c, room, dm))) {
            rt_error(c, id, "limit", "this connection follows WS_ROOMS_MAX rooms already");
            if (from_resume)
                c->resuming--; /* counted by the caller */
            return;
        }
        s->last = after; /* -1: set from the room once read */
        created = 1;
    } else if (after >= 0 && after < s->last) {
        /* the client knows less than this connection sent: it asks again */
        s->last = after;
    }
    s->replaying = 1;
    join_job *j = keel_calloc(1, sizeof(*j));
    j->wk = c->wk;
    j->key = c->key;
    snprintf(j->user, sizeof(j->user), "%s", c->user);
    snprintf(j->room, sizeof(j->room), "%s", room);
    j->dm = dm;
    j->after = after;
    j->created = created;
    j->from_resume = from_resume;
    j->id = from_resume ? NULL : json_incref(id);
    if (keel_db_run_worker(c->wk->w, R.db, 1, db_join, joined, j) < 0) {
        if (created)
            rt_sub_remove(c, s);
        else
            s->replaying = 0;
        rt_error(c, id, "unavailable", "the database is busy: try again");
        if (from_resume)
            resume_step(c, j, "unavailable");
        join_free(j);
    }
}

/* ---------------------------------------------------------------- send */

typedef struct send_job {
    rt_worker *wk;
    uint64_t key;
    char user[64];
    char room[65]; /* the room, or the conversation once found */
    char to[65];   /* dm:send */
    int dm;
    char *body;
    json_t *id;
    json_t *msg;   /* the stored message */
    int64_t seq;
    int self;      /* dm to oneself */
} send_job;

static void send_free(send_job *j)
{
    free(j->body);
    json_decref(j->id);
    json_decref(j->msg);
    keel_free(j);
}

/* The next sequence of the room, then the row: inside the caller's
 * transaction. The UPDATE takes the room's row lock on PostgreSQL (and
 * SQLite's write lock), so two senders never get the same number; UNIQUE
 * (room_id, seq) stands behind it. */
static int store_message(keel_db_conn *db, send_job *j)
{
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->room)};
    keel_db_rows *rows;
    int rc = keel_db_query(db,
                           j->dm ? "UPDATE rt_rooms SET last_seq = last_seq + 1 WHERE id = $1 "
                                   "AND kind = 'dm' RETURNING last_seq"
                                 : "UPDATE rt_rooms SET last_seq = last_seq + 1 WHERE id = $1 "
                                   "AND kind <> 'dm' RETURNING last_seq",
                           p, 1, &rows);
    if (rc < 0)
        return rc;
    int64_t seq = -1;
    if ((rc = keel_db_rows_next(rows)) == 1)
        seq = keel_db_get_int(rows, 0);
    keel_db_rows_free(rows);
    if (rc < 0)
        return rc;
    if (seq < 0)
        return KEEL_EDB_NOROW;
    char id[37];
    app_uuid(id);
    int64_t now = app_now();
    keel_db_param q[] = {KEEL_DB_P_TEXT(id), KEEL_DB_P_TEXT(j->room), KEEL_DB_P_INT(seq),
                         KEEL_DB_P_TEXT(j->user), KEEL_DB_P_TEXT(j->body), KEEL_DB_P_INT(now)};
    rc = keel_db_exec(db,
                      "INSERT INTO rt_messages (" MSG_COLUMNS ") VALUES ($1, $2, $3, $4, $5, $6)",
                      q, 6, NULL);
    if (rc < 0)
        return rc;
    char at[32];
    app_format_time(now, at);
    json_decref(j->msg);
    j->msg = json_pack("{s:s,s:s,s:I,s:s,s:s,s:s}", "id", id, j->dm ? "conversation" : "room",
                       j->room, "seq", (json_int_t)seq, "sender", j->user, "body", j->body,
                       "created_at", at);
    j->seq = seq;
    return 0;
}

static int db_send(keel_db_conn *db, void *arg)
{
    return store_message(db, arg);
}

static void sent(void *arg, int status)
{
    send_job *j = arg;
    rt_conn *c = rt_conn_find(j->wk, j->key);
    if (status < 0) {
        if (c && c->ws)
            db_error(c, j->id, status);
        send_free(j);
        return;
    }
    /* stored: now published, whether or not the sender is still here */
    char *text = dumps(json_pack("{s:s,s:s,s:O}", "type", "message:received", "room", j->room,
                                 "message", j->msg));
    if (text)
        publish_seq(j->wk->w, "room", j->room, j->room, j->seq, text, NULL);
    free(text);
    if (c && c->ws) {
        rt_sub *s = rt_sub_find(c, j->room, 0);
        (void)s; /* the sender's own copy comes through the bus like the others' */
        rt_ack(c, j->id, json_pack("{s:O}", "message", j->msg));
    }
    send_free(j);
}

static void message_send(rt_conn *c, const rt_parsed *m)
{
    const char *room = json_string_value(json_object_get(m->msg, "room"));
    rt_sub *s = rt_sub_find(c, room, 0);
    if (!s || !s->joined) {
        rt_error(c, m->id, "not_joined", "join the room first (room:join)");
        return;
    }
    send_job *j = keel_calloc(1, sizeof(*j));
    j->wk = c->wk;
    j->key = c->key;
    snprintf(j->user, sizeof(j->user), "%s", c->user);
    snprintf(j->room, sizeof(j->room), "%s", room);
    j->body = strdup(json_string_value(json_object_get(m->msg, "body")));
    j->id = m->id ? json_incref(m->id) : NULL;
    if (!j->body || keel_db_run_worker(c->wk->w, R.db, 1, db_send, sent, j) < 0) {
        rt_error(c, m->id, "unavailable", "the database is busy: try again");
        send_free(j);
    }
}

/* ---------------------------------------------------------------- direct messages */

static int db_dm(keel_db_conn *db, void *arg)
{
    send_job *j = arg;
    keel_db_param u[] = {KEEL_DB_P_TEXT(j->to)};
    keel_db_rows *rows;
    int rc = keel_db_query(db, "SELECT 1 FROM users WHERE id = $1 AND deleted_at IS NULL", u, 1,
                           &rows);
    if (rc < 0)
        return rc;
    rc = keel_db_rows_next(rows);
    keel_db_rows_free(rows);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return KEEL_EDB_NOROW;
    /* one conversation per pair: dm_key is the two ids, sorted */
    const char *a = strcmp(j->user, j->to) < 0 ? j->user : j->to;
    const char *b = a == j->user ? j->to : j->user;
    char key[140];
    snprintf(key, sizeof(key), "%s:%s", a, b);
    char id[37];
    app_uuid(id);
    int64_t now = app_now();
    keel_db_param ins[] = {KEEL_DB_P_TEXT(id), KEEL_DB_P_TEXT(key), KEEL_DB_P_TEXT(j->user),
                           KEEL_DB_P_INT(now)};
    rc = keel_db_exec(db,
                      "INSERT INTO rt_rooms (id, name, kind, dm_key, created_by, last_seq, "
                      "created_at) VALUES ($1, $2, 'dm', $2, $3, 0, $4) "
                      "ON CONFLICT (dm_key) DO NOTHING",
                      ins, 4, NULL);
    if (rc < 0)
        return rc;
    keel_db_param k[] = {KEEL_DB_P_TEXT(key)};
    rc = keel_db_query(db, "SELECT id FROM rt_rooms WHERE dm_key = $1", k, 1, &rows);
    if (rc < 0)
        return rc;
    if ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str s = keel_db_get_text(rows, 0);
        snprintf(j->room, sizeof(j->room), "%.*s", (int)s.len, s.ptr);
    }
    keel_db_rows_free(rows);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return KEEL_EDB_NOROW;
    const char *who[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        keel_db_param m[] = {KEEL_DB_P_TEXT(j->room), KEEL_DB_P_TEXT(who[i]),
                             KEEL_DB_P_INT(now)};
        rc = keel_db_exec(db,
                          "INSERT INTO rt_members (room_id, user_id, role, created_at) "
                          "VALUES ($1, $2, 'member', $3) ON CONFLICT DO NOTHING",
                          m, 3, NULL);
        if (rc < 0)
            return rc;
    }
    return store_message(db, j);
}

static void dm_sent(void *arg, int status)
{
    send_job *j = arg;
    rt_conn *c = rt_conn_find(j->wk, j->key);
    if (status < 0) {
        if (c && c->ws)
            db_error(c, j->id, status);
        send_free(j);
        return;
    }
    json_object_set_new(j->msg, "to", json_string(j->to));
    char *text = dumps(json_pack("{s:s,s:s,s:O}", "type", "dm:received", "conversation", j->room,
                                 "message", j->msg));
    if (text) {
        char name[160];
        name[0] = '\0';
        if (c)
            rt_conn_name(c, name, sizeof(name));
        publish_seq(j->wk->w, "user", j->to, j->room, j->seq, text, NULL);
        publish_seq(j->wk->w, "user", j->user, j->room, j->seq, text, *name ? name : NULL);
    }
    free(text);
    if (c && c->ws) {
        rt_sub *s = rt_sub_add(c, j->room, 1);
        if (s && !s->replaying && s->last < j->seq)
            s->last = j->seq; /* the sender has it: the ack carries it */
        rt_ack(c, j->id, json_pack("{s:s,s:O}", "conversation", j->room, "message", j->msg));
    }
    send_free(j);
}

static void dm_send(rt_conn *c, const rt_parsed *m)
{
    const char *to = json_string_value(json_object_get(m->msg, "to"));
    if (!strcmp(to, c->user)) {
        rt_error(c, m->id, "invalid_message", "/to: a direct message goes to someone else");
        return;
    }
    send_job *j = keel_calloc(1, sizeof(*j));
    j->wk = c->wk;
    j->key = c->key;
    j->dm = 1;
    snprintf(j->user, sizeof(j->user), "%s", c->user);
    snprintf(j->to, sizeof(j->to), "%s", to);
    j->body = strdup(json_string_value(json_object_get(m->msg, "body")));
    j->id = m->id ? json_incref(m->id) : NULL;
    if (!j->body || keel_db_run_worker(c->wk->w, R.db, 1, db_dm, dm_sent, j) < 0) {
        rt_error(c, m->id, "unavailable", "the database is busy: try again");
        send_free(j);
    }
}

/* ---------------------------------------------------------------- resume */

static void resume(rt_conn *c, const rt_parsed *m)
{
    json_t *rooms = json_object_get(m->msg, "rooms");
    json_t *convs = json_object_get(m->msg, "conversations");
    size_t n = json_object_size(rooms) + json_object_size(convs);
    if (n > R.o->rooms_max) {
        rt_error(c, m->id, "invalid_message", "more rooms and conversations than WS_ROOMS_MAX");
        return;
    }
    if (c->resuming) {
        rt_error(c, m->id, "busy", "a resume is already under way");
        return;
    }
    if (n == 0) {
        rt_ack(c, m->id, json_pack("{s:{},s:{}}", "rooms", "conversations"));
        return;
    }
    c->resuming = (unsigned)n;
    json_decref(c->resume_id);
    c->resume_id = m->id ? json_incref(m->id) : NULL;
    json_decref(c->resume_report);
    c->resume_report = json_pack("{s:{},s:{}}", "rooms", "conversations");
    const char *k;
    json_t *v;
    json_t *lists[2] = {rooms, convs};
    for (int dm = 0; dm < 2; dm++)
        json_object_foreach(lists[dm], k, v) {
            if (strlen(k) > 64) {
                rt_error(c, NULL, "invalid_message", "an id is at most 64 bytes");
                c->resuming--;
                continue;
            }
            rt_follow(c, k, dm, (int64_t)json_integer_value(v), NULL, 1);
        }
    if (c->resuming == 0 && c->resume_report) { /* every entry failed at once */
        json_t *rep = c->resume_report, *id = c->resume_id;
        c->resume_report = c->resume_id = NULL;
        if (id)
            rt_ack(c, id, rep);
        else
            json_decref(rep);
        json_decref(id);
    }
}

/* ---------------------------------------------------------------- typing */

static void typing_note(rt_conn *c, const char *room, const char *state, int expired)
{
    json_t *o = json_pack("{s:s,s:s,s:s,s:s}", "type", "typing", "room", room, "user", c->user,
                          "state", state);
    if (!strcmp(state, "start"))
        json_object_set_new(o, "expires_in_ms", json_integer((json_int_t)R.o->typing_ttl_ms));
    if (expired)
        json_object_set_new(o, "expired", json_true());
    publish_note(c->wk->w, room, c->user, o);
}

static void typing(rt_conn *c, const rt_parsed *m, int start)
{
    const char *room = json_string_value(json_object_get(m->msg, "room"));
    rt_sub *s = rt_sub_find(c, room, 0);
    if (!s || !s->joined) {
        rt_error(c, m->id, "not_joined", "join the room first (room:join)");
        return;
    }
    int64_t now = rt_now_ms();
    if (start) {
        if (s->typing_sent_ms && now - s->typing_sent_ms < (int64_t)R.o->typing_interval_ms) {
            rt_error(c, m->id, "rate_limited", "typing:start at most once per WS_TYPING_INTERVAL");
            return;
        }
        s->typing_sent_ms = now;
        s->typing_until_ms = now + (int64_t)R.o->typing_ttl_ms;
        typing_note(c, room, "start", 0);
    } else if (s->typing_until_ms) {
        s->typing_until_ms = 0;
        typing_note(c, room, "stop", 0);
    }
    rt_ack(c, m->id, NULL);
}

void rt_typing_tick(rt_worker *wk, int64_t now)
{
    for (rt_conn *c = wk->conns; c; c = c->next)
        for (rt_sub *s = c->ws ? c->subs : NULL; s; s = s->next)
            if (s->typing_until_ms && now >= s->typing_until_ms) {
                s->typing_until_ms = 0;
                typing_note(c, s->room, "stop", 1);
            }
}

void rt_typing_clear(rt_conn *c)
{
    for (rt_sub *s = c->subs; s; s = s->next) {
        if (s->typing_until_ms) {
            s->typing_until_ms = 0;
            typing_note(c, s->room, "stop", 0);
        }
        if (s->joined && !s->dm) {
            char st[8];
            __atomic_sub_fetch(&R.rooms_followed, 1, __ATOMIC_RELAXED);
            publish_note(c->wk->w, s->room, c->user,
                         json_pack("{s:s,s:s,s:s,s:s,s:s}", "type", "presence", "room", s->room,
                                   "user", c->user, "event", "leave", "status",
                                   rt_presence_status_of(c->user, st)));
        }
    }
    json_decref(c->resume_id);
    json_decref(c->resume_report);
    c->resume_id = c->resume_report = NULL;
}

/* ---------------------------------------------------------------- dispatch */

void rt_dispatch(rt_conn *c, const rt_parsed *m)
{
    switch (m->type) {
    case RT_MSG_PING:
        rt_ack(c, m->id, NULL);
        break;
    case RT_MSG_ROOM_JOIN: {
        json_t *ls = json_object_get(m->msg, "last_seq");
        rt_follow(c, json_string_value(json_object_get(m->msg, "room")), 0,
               ls ? (int64_t)json_integer_value(ls) : -1, m->id, 0);
        break;
    }
    case RT_MSG_ROOM_LEAVE: {
        const char *room = json_string_value(json_object_get(m->msg, "room"));
        rt_sub *s = rt_sub_find(c, room, 0);
        if (!s) {
            rt_error(c, m->id, "not_joined", "this connection has not joined the room");
            break;
        }
        if (s->typing_until_ms)
            typing_note(c, room, "stop", 0);
        if (s->joined) {
            __atomic_sub_fetch(&R.rooms_followed, 1, __ATOMIC_RELAXED);
            publish_note(c->wk->w, room, c->user,
                         json_pack("{s:s,s:s,s:s,s:s,s:s}", "type", "presence", "room", room,
                                   "user", c->user, "event", "leave", "status", c->status));
        }
        rt_sub_remove(c, s);
        rt_ack(c, m->id, NULL);
        break;
    }
    case RT_MSG_MESSAGE_SEND:
        message_send(c, m);
        break;
    case RT_MSG_DM_SEND:
        dm_send(c, m);
        break;
    case RT_MSG_RESUME:
        resume(c, m);
        break;
    case RT_MSG_TYPING_START:
        typing(c, m, 1);
        break;
    case RT_MSG_TYPING_STOP:
        typing(c, m, 0);
        break;
    case RT_MSG_PRESENCE_SET:
        rt_presence_status(c, json_string_value(json_object_get(m->msg, "status")));
        rt_ack(c, m->id, NULL);
        break;
    default:
        rt_error(c, m->id, "unknown_type", "unknown message type");
        break;
    }
}
