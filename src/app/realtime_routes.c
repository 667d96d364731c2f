/* realtime_routes.c — the HTTP side of realtime: tickets, GET /ws (the
 * authentication before the upgrade), rooms, invitations, history by
 * sequence, presence and the admin list of connected users. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "app/realtime_internal.h"

/* One job type for every route here. */
typedef struct rt_job {
    int http;          /* the answer's status (or a problem's when >= 400) */
    char detail[200];  /* the problem's detail */
    json_t *out;
    rt_ident id;
    char hash[65];     /* a ticket's */
    char room[65];
    char user[64];     /* the caller */
    char other[65];    /* an invitee */
    char name[256];
    int is_private;
    int64_t after, limit;
    int ok;
} rt_job;

static void job_cleanup(void *arg)
{
    json_decref(((rt_job *)arg)->out);
}

static rt_job *job_new(keel_req *r)
{
    rt_job *j = KEEL_REQ_JOB(r, rt_job, job_cleanup);
    const keel_principal *p = keel_req_principal(r);
    if (p && p->id)
        snprintf(j->user, sizeof(j->user), "%s", p->id);
    return j;
}

static int refuse(rt_job *j, int status, const char *detail)
{
    j->http = status;
    snprintf(j->detail, sizeof(j->detail), "%s", detail);
    return 0;
}

static void job_done(keel_req *r, void *arg, int status)
{
    rt_job *j = arg;
    if (status == KEEL_ECANCELED)
        return;
    if (status < 0) {
        keel_db_respond_error(r, status);
        return;
    }
    if (j->http >= 400) {
        keel_respond_problem(r, j->http, j->detail);
        return;
    }
    keel_respond_json(r, j->http ? j->http : 200, json_incref(j->out));
}

/* ---------------------------------------------------------------- tickets */

static int db_ticket(keel_db_conn *c, void *arg)
{
    rt_job *j = arg;
    int64_t now = app_now();
    /* expired tickets go as new ones come */
    keel_db_param d[] = {KEEL_DB_P_INT(now)};
    int rc = keel_db_exec(c, "DELETE FROM rt_tickets WHERE expires_at < $1", d, 1, NULL);
    if (rc < 0)
        return rc;
    int64_t exp = now + (int64_t)((R.o->ticket_ttl_ms + 999) / 1000);
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->hash),       KEEL_DB_P_TEXT(j->id.user),
                         KEEL_DB_P_TEXT(j->id.role),    KEEL_DB_P_TEXT(j->id.jti),
                         KEEL_DB_P_INT(j->id.iat),      KEEL_DB_P_INT(j->id.exp),
                         KEEL_DB_P_INT(exp)};
    rc = keel_db_exec(c,
                      "INSERT INTO rt_tickets (hash, user_id, role, jti, token_iat, token_exp, "
                      "expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                      p, 7, NULL);
    j->http = 201;
    return rc;
}

/* The claims of the caller's own Bearer token (verified again: the
 * principal does not carry iat). */
static int bearer_claims(keel_req *r, keel_jwt_claims *cl)
{
    keel_str h = keel_req_header(r, "authorization");
    if (!h.ptr || h.len < 8 || strncasecmp(h.ptr, "Bearer ", 7) != 0)
        return -1;
    app_auth *a = app_auth_get();
    return keel_jwt_verify(&a->jwt, h.ptr + 7, h.len - 7, app_now(), cl) == KEEL_JWT_OK ? 0 : -1;
}

static keel_flow h_ticket(keel_req *r)
{
    keel_jwt_claims cl;
    if (bearer_claims(r, &cl) < 0) { /* the middleware let it in: it cannot be */
        keel_respond_problem(r, 401, "a Bearer access token is required");
        return KEEL_DONE;
    }
    rt_job *j = job_new(r);
    snprintf(j->id.user, sizeof(j->id.user), "%s", cl.sub);
    snprintf(j->id.role, sizeof(j->id.role), "%s", keel_req_principal(r)->role);
    snprintf(j->id.jti, sizeof(j->id.jti), "%s", cl.jti);
    j->id.iat = cl.iat;
    j->id.exp = cl.exp;
    char ticket[64];
    app_random_token(ticket, sizeof(ticket), 32);
    app_sha256_hex(ticket, strlen(ticket), j->hash);
    j->out = json_pack("{s:s,s:I,s:s}", "ticket", ticket, "expires_in",
                       (json_int_t)((R.o->ticket_ttl_ms + 999) / 1000), "url",
                       "/ws?ticket=<ticket>");
    keel_res_set_header(r, "Cache-Control", "no-store");
    return keel_db_job_run(r, R.db, db_ticket, job_done, j);
}

/* ---------------------------------------------------------------- GET /ws */

/* Redeems a ticket: the DELETE is the single use (one redeemer gets the
 * row, on any instance), then the user is checked as a request would be. */
static int db_redeem(keel_db_conn *c, void *arg)
{
    rt_job *j = arg;
    j->ok = 0;
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->hash), KEEL_DB_P_INT(app_now())};
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           "DELETE FROM rt_tickets WHERE hash = $1 AND expires_at >= $2 "
                           "RETURNING user_id, role, jti, token_iat, token_exp",
                           p, 2, &rows);
    if (rc < 0)
        return rc;
    int found = 0;
    if ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str u = keel_db_get_text(rows, 0), ro = keel_db_get_text(rows, 1),
                 jt = keel_db_get_text(rows, 2);
        snprintf(j->id.user, sizeof(j->id.user), "%.*s", (int)u.len, u.ptr);
        snprintf(j->id.role, sizeof(j->id.role), "%.*s", (int)ro.len, ro.ptr);
        snprintf(j->id.jti, sizeof(j->id.jti), "%.*s", (int)jt.len, jt.ptr);
        j->id.iat = keel_db_get_int(rows, 3);
        j->id.exp = keel_db_get_int(rows, 4);
        found = 1;
    }
    keel_db_rows_free(rows);
    if (rc < 0)
        return rc;
    if (!found)
        return 0;
    return rt_db_user_ok(c, &j->id, &j->ok);
}

static int db_bearer(keel_db_conn *c, void *arg)
{
    rt_job *j = arg;
    return rt_db_user_ok(c, &j->id, &j->ok);
}

static void ws_unauthorized(keel_req *r, const char *detail)
{
    keel_res_set_header(r, "WWW-Authenticate", "Bearer realm=\"keel\"");
    keel_res_set_header(r, "Cache-Control", "no-store");
    keel_respond_problem(r, 401, detail);
}

static void ws_checked(keel_req *r, void *arg, int status)
{
    rt_job *j = arg;
    if (status == KEEL_ECANCELED)
        return;
    if (status < 0) {
        keel_db_respond_error(r, status);
        return;
    }
    if (!j->ok) {
        ws_unauthorized(r, j->hash[0] ? "the ticket is not valid (unknown, used or expired)"
                                      : "the token has been revoked");
        return;
    }
    rt_upgrade(r, &j->id);
}

static keel_flow h_ws(keel_req *r)
{
    rt_job *j = job_new(r);
    keel_str t = keel_req_query_param(r, "ticket");
    if (t.ptr && t.len) {
        if (t.len > 128) {
            ws_unauthorized(r, "the ticket is not valid");
            return KEEL_DONE;
        }
        app_sha256_hex(t.ptr, t.len, j->hash);
        return keel_db_job_run(r, R.db, db_redeem, ws_checked, j);
    }
    keel_jwt_claims cl;
    if (!keel_req_header(r, "authorization").ptr) {
        ws_unauthorized(r, "authentication required: ?ticket= (POST /api/v1/realtime/ticket) "
                           "or Authorization: Bearer <token>");
        return KEEL_DONE;
    }
    if (bearer_claims(r, &cl) < 0) {
        ws_unauthorized(r, "the token is not valid");
        return KEEL_DONE;
    }
    snprintf(j->id.user, sizeof(j->id.user), "%s", cl.sub);
    snprintf(j->id.role, sizeof(j->id.role), "%s", cl.role);
    snprintf(j->id.jti, sizeof(j->id.jti), "%s", cl.jti);
    j->id.iat = cl.iat;
    j->id.exp = cl.exp;
    return keel_db_job_run(r, R.db, db_bearer, ws_checked, j);
}

/* ---------------------------------------------------------------- rooms */

#define ROOM_COLUMNS "id, name, kind, created_by, last_seq, created_at"

static json_t *room_json(keel_db_rows *rows, size_t first)
{
    keel_str id = keel_db_get_text(rows, first), name = keel_db_get_text(rows, first + 1),
             kind = keel_db_get_text(rows, first + 2), by = keel_db_get_text(rows, first + 3);
    char at[32];
    app_format_time(keel_db_get_int(rows, first + 5), at);
    return json_pack("{s:s%,s:s%,s:s%,s:s%,s:I,s:s}", "id", id.ptr, id.len, "name", name.ptr,
                     name.len, "kind", kind.ptr, kind.len, "created_by", by.ptr, by.len,
                     "last_seq", (json_int_t)keel_db_get_int(rows, first + 4), "created_at", at);
}

static int fetch_room(keel_db_conn *c, const char *id, json_t **out)
{
    keel_db_param p[] = {KEEL_DB_P_TEXT(id)};
    keel_db_rows *rows;
    int rc = keel_db_query(c, "SELECT " ROOM_COLUMNS " FROM rt_rooms WHERE id = $1", p, 1, &rows);
    if (rc < 0)
        return rc;
    *out = NULL;
    if ((rc = keel_db_rows_next(rows)) == 1)
        *out = room_json(rows, 0);
    keel_db_rows_free(rows);
    return rc < 0 ? rc : 0;
}

static int db_create_room(keel_db_conn *c, void *arg)
{
    rt_job *j = arg;
    char id[37];
    app_uuid(id);
    int64_t now = app_now();
    keel_db_param p[] = {KEEL_DB_P_TEXT(id), KEEL_DB_P_TEXT(j->name),
                         KEEL_DB_P_TEXT(j->is_private ? "private" : "public"),
                         KEEL_DB_P_TEXT(j->user), KEEL_DB_P_INT(now)};
    int rc = keel_db_exec(c,
                          "INSERT INTO rt_rooms (id, name, kind, created_by, last_seq, "
                          "created_at) VALUES ($1, $2, $3, $4, 0, $5)",
                          p, 5, NULL);
    if (rc < 0)
        return rc;
    keel_db_param m[] = {KEEL_DB_P_TEXT(id), KEEL_DB_P_TEXT(j->user), KEEL_DB_P_INT(now)};
    rc = keel_db_exec(c,
                      "INSERT INTO rt_members (room_id, user_id, role, created_at) "
                      "VALUES ($1, $2, 'owner', $3)",
                      m, 3, NULL);
    if (rc < 0)
        return rc;
    json_decref(j->out);
    j->out = NULL;
    j->http = 201;
    return fetch_room(c, id, &j->out);
}

static keel_flow h_create_room(keel_req *r)
{
    json_t *b = app_json_body(r);
    if (!b)
        return KEEL_DONE;
    rt_job *j = job_new(r);
    snprintf(j->name, sizeof(j->name), "%s", json_string_value(json_object_get(b, "name")));
    j->is_private = json_is_true(json_object_get(b, "private"));
    return keel_db_job_run_tx(r, R.db, db_create_room, job_done, j);
}

static int db_list_rooms(keel_db_conn *c, void *arg)
{
    rt_job *j = arg;
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->user)};
    keel_db_rows *rows;
    int rc = keel_db_query(
        c,
        "SELECT r.id, r.name, r.kind, r.created_by, r.last_seq, r.created_at, m.role "
        "FROM rt_rooms r LEFT JOIN rt_members m ON m.room_id = r.id AND m.user_id = $1 "
        "WHERE r.kind = 'public' OR (r.kind = 'private' AND m.user_id IS NOT NULL) "
        "ORDER BY r.created_at, r.id LIMIT 1000",
        p, 1, &rows);
    if (rc < 0)
        return rc;
    json_t *data = json_array();
    while ((rc = keel_db_rows_next(rows)) == 1) {
        json_t *o = room_json(rows, 0);
        keel_str role = keel_db_get_text(rows, 6);
        json_object_set_new(o, "membership",
                            role.ptr ? json_stringn(role.ptr, role.len) : json_null());
        json_array_append_new(data, o);
    }
    keel_db_rows_free(rows);
    json_decref(j->out);
    j->out = json_pack("{s:o}", "data", data);
    return rc < 0 ? rc : 0;
}

static keel_flow h_list_rooms(keel_req *r)
{
    return keel_db_job_run(r, R.db, db_list_rooms, job_done, job_new(r));
}

/* The caller's standing in a room: -1 none, 0 invited, 1 member/owner;
 * *kind gets the room's kind ("" when there is no such room). */
static int standing(keel_db_conn *c, const char *room, const char *user, char kind[16], int *out)
{
    keel_db_param p[] = {KEEL_DB_P_TEXT(room), KEEL_DB_P_TEXT(user)};
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           "SELECT r.kind, m.role FROM rt_rooms r LEFT JOIN rt_members m "
                           "ON m.room_id = r.id AND m.user_id = $2 WHERE r.id = $1",
                           p, 2, &rows);
    if (rc < 0)
        return rc;
    kind[0] = '\0';
    *out = -1;
    if ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str k = keel_db_get_text(rows, 0), role = keel_db_get_text(rows, 1);
        snprintf(kind, 16, "%.*s", (int)k.len, k.ptr);
        if (role.ptr)
            *out = keel_str_eq(role, keel_str_c("invited")) ? 0 : 1;
    }
    keel_db_rows_free(rows);
    return rc < 0 ? rc : 0;
}

static int db_invite(keel_db_conn *c, void *arg)
{
    rt_job *j = arg;
    char kind[16];
    int st;
    int rc = standing(c, j->room, j->user, kind, &st);
    if (rc < 0)
        return rc;
    if (!*kind || !strcmp(kind, "dm"))
        return refuse(j, 404, "no such room");
    if (st < 1)
        return refuse(j, 403, "only the room's members may invite");
    keel_db_param u[] = {KEEL_DB_P_TEXT(j->other)};
    keel_db_rows *rows;
    if ((rc = keel_db_query(c, "SELECT 1 FROM users WHERE id = $1 AND deleted_at IS NULL", u, 1,
                            &rows)) < 0)
        return rc;
    rc = keel_db_rows_next(rows);
    keel_db_rows_free(rows);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return refuse(j, 404, "no such user");
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->room), KEEL_DB_P_TEXT(j->other),
                         KEEL_DB_P_TEXT(j->user), KEEL_DB_P_INT(app_now())};
    rc = keel_db_exec(c,
                      "INSERT INTO rt_members (room_id, user_id, role, invited_by, created_at) "
                      "VALUES ($1, $2, 'invited', $3, $4) ON CONFLICT DO NOTHING",
                      p, 4, NULL);
    if (rc < 0)
        return rc;
    int other;
    if ((rc = standing(c, j->room, j->other, kind, &other)) < 0)
        return rc;
    json_decref(j->out);
    j->out = json_pack("{s:s,s:s,s:s,s:s}", "room", j->room, "user_id", j->other, "membership",
                       other == 1 ? "member" : "invited", "invited_by", j->user);
    j->http = 201;
    return 0;
}

static keel_flow h_invite(keel_req *r)
{
    json_t *b = app_json_body(r);
    if (!b)
        return KEEL_DONE;
    rt_job *j = job_new(r);
    keel_str room = keel_req_param(r, "id");
    snprintf(j->room, sizeof(j->room), "%.*s", (int)(room.len < 64 ? room.len : 64), room.ptr);
    snprintf(j->other, sizeof(j->other), "%s", json_string_value(json_object_get(b, "user_id")));
    return keel_db_job_run_tx(r, R.db, db_invite, job_done, j);
}

static int db_history(keel_db_conn *c, void *arg)
{
    rt_job *j = arg;
    char kind[16];
    int st;
    int rc = standing(c, j->room, j->user, kind, &st);
    if (rc < 0)
        return rc;
    if (!*kind)
        return refuse(j, 404, "no such room");
    if (strcmp(kind, "public") != 0 && st < 0)
        return refuse(j, 403, "only the room's members (and invitees) may read it");
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->room), KEEL_DB_P_INT(j->after),
                         KEEL_DB_P_INT(j->limit + 1)};
    keel_db_rows *rows;
    rc = keel_db_query(c,
                       "SELECT id, room_id, seq, sender_id, body, created_at FROM rt_messages "
                       "WHERE room_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                       p, 3, &rows);
    if (rc < 0)
        return rc;
    json_t *data = json_array();
    int dm = !strcmp(kind, "dm");
    while ((rc = keel_db_rows_next(rows)) == 1)
        json_array_append_new(data, rt_message_json(rows, 0, dm));
    keel_db_rows_free(rows);
    if (rc < 0) {
        json_decref(data);
        return rc;
    }
    int more = json_array_size(data) > (size_t)j->limit;
    if (more)
        json_array_remove(data, json_array_size(data) - 1);
    json_t *last = json_array_get(data, json_array_size(data) - 1);
    json_decref(j->out);
    j->out = json_pack("{s:o,s:o}", "data", data, "next_after_seq",
                       more ? json_integer(json_integer_value(json_object_get(last, "seq")))
                            : json_null());
    return 0;
}

static void history_done(keel_req *r, void *arg, int status)
{
    rt_job *j = arg;
    if (status == 0 && j->http < 400) {
        json_t *next = json_object_get(j->out, "next_after_seq");
        if (json_is_integer(next)) {
            char v[32];
            snprintf(v, sizeof(v), "%lld", (long long)json_integer_value(next));
            app_link_next(r, "after_seq", v);
        }
    }
    job_done(r, arg, status);
}

static keel_flow h_history(keel_req *r)
{
    rt_job *j = job_new(r);
    keel_str room = keel_req_param(r, "id");
    snprintf(j->room, sizeof(j->room), "%.*s", (int)(room.len < 64 ? room.len : 64), room.ptr);
    json_t *q = keel_req_query_json(r);
    json_t *a = json_object_get(q, "after_seq"), *l = json_object_get(q, "limit");
    j->after = json_is_integer(a) ? (int64_t)json_integer_value(a) : 0;
    j->limit = json_is_integer(l) ? (int64_t)json_integer_value(l) : 50;
    return keel_db_job_run(r, R.db, db_history, history_done, j);
}

/* ---------------------------------------------------------------- presence */

static keel_flow h_presence(keel_req *r)
{
    keel_str u = keel_req_param(r, "userId");
    char user[65];
    snprintf(user, sizeof(user), "%.*s", (int)(u.len < 64 ? u.len : 64), u.ptr);
    keel_respond_json(r, 200, rt_presence_get(user));
    return KEEL_DONE;
}

static keel_flow h_admin_connections(keel_req *r)
{
    json_t *users = rt_presence_list();
    json_t *o = json_pack("{s:o,s:I,s:s}", "data", users, "connections_here",
                          (json_int_t)keel_ws_connections(R.srv), "instance", R.instance);
    keel_respond_json(r, 200, o);
    return KEEL_DONE;
}

/* POST /api/v1/admin/realtime/push — the push API over HTTP, for
 * operators (a maintenance notice) and for tests of the API itself. */
static keel_flow h_admin_push(keel_req *r)
{
    json_t *b = app_json_body(r);
    if (!b)
        return KEEL_DONE;
    const char *to = json_string_value(json_object_get(b, "to"));
    const char *target = json_string_value(json_object_get(b, "target"));
    const char *type = json_string_value(json_object_get(b, "type"));
    json_t *data = json_object_get(b, "data");
    if (strcmp(to, "all") != 0 && !target) {
        app_invalid(r, "/target", "required unless to is \"all\"");
        return KEEL_DONE;
    }
    keel_worker *w = keel_req_worker(r);
    int rc = !strcmp(to, "user")   ? app_push_user(w, target, type, data)
             : !strcmp(to, "room") ? app_push_room(w, target, type, data)
             : !strcmp(to, "role") ? app_push_role(w, target, type, data)
                                   : app_push_all(w, type, data);
    if (rc == KEEL_EINVAL) {
        app_invalid(r, "/target", "not a role");
        return KEEL_DONE;
    }
    if (rc < 0) {
        keel_respond_unavailable(r, 1, "the event bus is unavailable");
        return KEEL_DONE;
    }
    keel_respond_json(r, 202, json_pack("{s:s,s:s?,s:s}", "to", to, "target", target, "type",
                                        type));
    return KEEL_DONE;
}

/* ---------------------------------------------------------------- routes */

#define S_ID "{\"type\":\"string\",\"minLength\":1,\"maxLength\":64}"

static const keel_route rt_routes[] = {
    {.name = "realtime.ticket", .method = "POST", .path = "/api/v1/realtime/ticket",
     .handler = h_ticket, .auth = "user", .flags = KEEL_ROUTE_SECRET,
     .summary = "A single-use ticket (WS_TICKET_TTL) for GET /ws?ticket= (browsers cannot send "
                "Authorization on a WebSocket)"},
    {.name = "realtime.ws", .method = "GET", .path = "/ws", .handler = h_ws,
     .websocket = &rt_ws_handler,
     .query_schema = "{\"type\":\"object\",\"properties\":{\"ticket\":{\"type\":\"string\","
                     "\"maxLength\":128}}}",
     .summary = "The realtime protocol (docs/realtime.md): ?ticket= or Authorization: Bearer; "
                "401 before the upgrade without either"},
    {.name = "rooms.create", .method = "POST", .path = "/api/v1/rooms", .handler = h_create_room,
     .auth = "user", .summary = "Create a room (public, or private: members and invitees)",
     .request_schema = "{\"type\":\"object\",\"required\":[\"name\"],\"properties\":{"
                       "\"name\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":100},"
                       "\"private\":{\"type\":\"boolean\"}}}"},
    {.name = "rooms.list", .method = "GET", .path = "/api/v1/rooms", .handler = h_list_rooms,
     .auth = "user", .summary = "Public rooms and the private rooms one belongs or is invited to"},
    {.name = "rooms.invite", .method = "POST", .path = "/api/v1/rooms/:id/invitations",
     .handler = h_invite, .auth = "user",
     .summary = "Invite a user to a room (members of the room only)",
     .params_schema = "{\"type\":\"object\",\"properties\":{\"id\":" S_ID "}}",
     .request_schema = "{\"type\":\"object\",\"required\":[\"user_id\"],\"properties\":{"
                       "\"user_id\":" S_ID "}}"},
    {.name = "rooms.messages", .method = "GET", .path = "/api/v1/rooms/:id/messages",
     .handler = h_history, .auth = "user",
     .summary = "A room's (or conversation's) stored messages by sequence: after_seq, limit",
     .params_schema = "{\"type\":\"object\",\"properties\":{\"id\":" S_ID "}}",
     .query_schema = "{\"type\":\"object\",\"properties\":{\"after_seq\":{\"type\":\"integer\","
                     "\"minimum\":0},\"limit\":{\"type\":\"integer\",\"minimum\":1,"
                     "\"maximum\":500}}}"},
    {.name = "presence.get", .method = "GET", .path = "/api/v1/presence/:userId",
     .handler = h_presence, .auth = "user",
     .summary = "A user's presence across instances: online, away or offline",
     .params_schema = "{\"type\":\"object\",\"properties\":{\"userId\":" S_ID "}}"},
    {.name = "admin.realtime.push", .method = "POST", .path = "/api/v1/admin/realtime/push",
     .handler = h_admin_push, .auth = "any", .permission = "admin:access",
     .summary = "Push a message to the GET /ws connections of a user, a room, a role or "
                "everyone, on every instance (not stored)",
     .request_schema = "{\"type\":\"object\",\"required\":[\"to\",\"type\"],"
                       "\"properties\":{\"to\":{\"enum\":[\"user\",\"room\",\"role\","
                       "\"all\"]},\"target\":" S_ID ",\"type\":{\"type\":\"string\","
                       "\"minLength\":1,\"maxLength\":64,\"pattern\":\"^[a-z][a-z0-9_.:-]*$\"},"
                       "\"data\":{\"type\":\"object\"}}}"},
    {.name = "admin.realtime.connections", .method = "GET",
     .path = "/api/v1/admin/realtime/connections", .handler = h_admin_connections,
     .auth = "any", .permission = "admin:access",
     .summary = "Connected users with their connection counts (all instances)"},
};

int rt_routes_setup(keel_service *svc)
{
    return keel_service_add_routes(svc, rt_routes, sizeof(rt_routes) / sizeof(rt_routes[0]));
}
