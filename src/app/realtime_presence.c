/* realtime_presence.c — who is connected: online (at least one connection
 * not away), away (every connection away) or offline, per user, across
 * instances.
 *
 * Each instance counts its own connections per user (this table, under a
 * mutex: every worker opens and closes connections). It publishes a
 * user's counts on the bus (channel "rt:presence") whenever they change,
 * and the full table every WS_PRESENCE_HEARTBEAT; every instance keeps
 * the others' counts, each with a time to live of three heartbeats, so an
 * instance that died (or lost its bus) stops counting on its own. Without
 * Redis the bus is in-process and the table is all there is. */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "app/realtime_internal.h"

#define NBUCKETS 1024

typedef struct pr_remote {
    char inst[128];
    unsigned n, away;
    int64_t expires_ms;
    struct pr_remote *next;
} pr_remote;

typedef struct pr_user {
    char user[64];
    unsigned n, away;   /* this instance's connections, and how many are away */
    pr_remote *remote;  /* the other instances' */
    struct pr_user *next;
} pr_user;

static struct {
    pthread_mutex_t mu;
    pr_user *b[NBUCKETS];
    size_t local_users;
} P = {.mu = PTHREAD_MUTEX_INITIALIZER};

static unsigned hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % NBUCKETS;
}

static pr_user *get(const char *user, int create)
{
    pr_user **p = &P.b[hash(user)];
    for (pr_user *u = *p; u; u = u->next)
        if (!strcmp(u->user, user))
            return u;
    if (!create)
        return NULL;
    pr_user *u = keel_calloc(1, sizeof(*u));
    snprintf(u->user, sizeof(u->user), "%s", user);
    u->next = *p;
    *p = u;
    return u;
}

/* Drops remote entries past their time and a user with nothing left. */
static void prune(pr_user *u, int64_t now)
{
    for (pr_remote **r = &u->remote; *r;) {
        if ((*r)->expires_ms <= now || (*r)->n == 0) {
            pr_remote *d = *r;
            *r = d->next;
            keel_free(d);
        } else {
            r = &(*r)->next;
        }
    }
    if (u->n || u->remote)
        return;
    for (pr_user **p = &P.b[hash(u->user)]; *p; p = &(*p)->next)
        if (*p == u) {
            *p = u->next;
            keel_free(u);
            return;
        }
}

static void totals(const pr_user *u, int64_t now, unsigned *n, unsigned *away)
{
    *n = u->n;
    *away = u->away;
    for (const pr_remote *r = u->remote; r; r = r->next)
        if (r->expires_ms > now) {
            *n += r->n;
            *away += r->away;
        }
}

static const char *status_of(unsigned n, unsigned away)
{
    return n == 0 ? "offline" : away >= n ? "away" : "online";
}

void rt_presence_init(void)
{
}

/* Publishes this instance's counts of one user (NULL: all of them, a
 * heartbeat) on w's loop. */
static void publish_counts(keel_worker *w, const char *user, const char *before)
{
    json_t *users = json_object();
    json_t *change = NULL;
    pthread_mutex_lock(&P.mu);
    if (user) {
        pr_user *u = get(user, 0);
        json_object_set_new(users, user, json_pack("[I,I]", (json_int_t)(u ? u->n : 0),
                                                   (json_int_t)(u ? u->away : 0)));
        unsigned n = 0, away = 0;
        if (u)
            totals(u, rt_now_ms(), &n, &away);
        if (strcmp(before, status_of(n, away)) != 0)
            change = json_pack("{s:s,s:s}", "user", user, "status", status_of(n, away));
    } else {
        for (size_t i = 0; i < NBUCKETS; i++)
            for (pr_user *u = P.b[i]; u; u = u->next)
                if (u->n)
                    json_object_set_new(users, u->user,
                                        json_pack("[I,I]", (json_int_t)u->n,
                                                  (json_int_t)u->away));
    }
    pthread_mutex_unlock(&P.mu);
    json_t *p = json_pack("{s:s,s:o,s:b}", "inst", R.instance, "users", users, "full", user == NULL);
    if (change)
        json_object_set_new(p, "change", change);
    rt_publish(w, "presence", NULL, p);
}

void rt_presence_conn(rt_conn *c, int delta)
{
    char before[8];
    rt_presence_status_of(c->user, before);
    pthread_mutex_lock(&P.mu);
    pr_user *u = get(c->user, delta > 0);
    if (u) {
        if (delta > 0) {
            if (u->n++ == 0)
                P.local_users++;
            if (!strcmp(c->status, "away"))
                u->away++;
        } else if (u->n) {
            if (--u->n == 0)
                P.local_users--;
            if (!strcmp(c->status, "away") && u->away)
                u->away--;
            prune(u, rt_now_ms());
        }
    }
    pthread_mutex_unlock(&P.mu);
    publish_counts(c->wk->w, c->user, before);
}

void rt_presence_status(rt_conn *c, const char *status)
{
    if (!status || !strcmp(status, c->status))
        return;
    int away = !strcmp(status, "away");
    char before[8];
    rt_presence_status_of(c->user, before);
    pthread_mutex_lock(&P.mu);
    pr_user *u = get(c->user, 0);
    if (u) {
        if (away)
            u->away++;
        else if (u->away)
            u->away--;
    }
    pthread_mutex_unlock(&P.mu);
    snprintf(c->status, sizeof(c->status), "%s", away ? "away" : "online");
    publish_counts(c->wk->w, c->user, before);
}

/* A user's status changed (on some instance): each worker tells the rooms
 * its own connections of that user follow (a room where the user has
 * connections on several workers may hear it more than once). */
static void announce(rt_worker *wk, const char *user, const char *status)
{
    json_t *done = json_object();
    for (rt_conn *c = wk->conns; c; c = c->next) {
        if (!c->ws || strcmp(c->user, user) != 0)
            continue;
        for (rt_sub *s = c->subs; s; s = s->next) {
            if (!s->joined || s->dm || json_object_get(done, s->room))
                continue;
            json_object_set_new(done, s->room, json_true());
            json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s}", "type", "presence", "room", s->room,
                                  "user", user, "event", "status", "status", status);
            char *text = json_dumps(o, JSON_COMPACT);
            json_decref(o);
            if (text)
                rt_publish(wk->w, "room", s->room,
                           json_pack("{s:s,s:s,s:b}", "m", text, "u", user, "d", 1));
            free(text);
        }
    }
    json_decref(done);
}

void rt_presence_on_bus(rt_worker *wk, json_t *p)
{
    const char *inst = json_string_value(json_object_get(p, "inst"));
    json_t *users = json_object_get(p, "users");
    json_t *change = json_object_get(p, "change");
    const char *cu = json_string_value(json_object_get(change, "user"));
    const char *cs = json_string_value(json_object_get(change, "status"));
    if (cu && cs && strlen(cu) < 64)
        announce(wk, cu, cs);
    if (!inst || !json_is_object(users) || !strcmp(inst, R.instance))
        return;
    /* every worker gets the message: only the first one applies it (the
     * update is idempotent anyway) */
    if (keel_worker_id(wk->w) != 0)
        return;
    int full = json_is_true(json_object_get(p, "full"));
    int64_t now = rt_now_ms();
    int64_t exp = now + 3 * (int64_t)R.o->presence_heartbeat_ms;
    pthread_mutex_lock(&P.mu);
    if (full) /* a heartbeat lists all of that instance's users: the others are gone */
        for (size_t i = 0; i < NBUCKETS; i++)
            for (pr_user *u = P.b[i]; u; u = u->next)
                for (pr_remote *r = u->remote; r; r = r->next)
                    if (!strcmp(r->inst, inst) && !json_object_get(users, u->user))
                        r->n = 0;
    const char *k;
    json_t *v;
    json_object_foreach(users, k, v) {
        unsigned n = (unsigned)json_integer_value(json_array_get(v, 0));
        unsigned away = (unsigned)json_integer_value(json_array_get(v, 1));
        if (strlen(k) >= 64)
            continue;
        pr_user *u = get(k, n > 0);
        if (!u)
            continue;
        pr_remote *r = u->remote;
        while (r && strcmp(r->inst, inst))
            r = r->next;
        if (!r && n) {
            r = keel_calloc(1, sizeof(*r));
            snprintf(r->inst, sizeof(r->inst), "%s", inst);
            r->next = u->remote;
            u->remote = r;
        }
        if (r) {
            r->n = n;
            r->away = away;
            r->expires_ms = exp;
        }
    }
    for (size_t i = 0; i < NBUCKETS; i++)
        for (pr_user *u = P.b[i], *nx; u; u = nx) {
            nx = u->next;
            prune(u, now);
        }
    pthread_mutex_unlock(&P.mu);
}

void rt_presence_heartbeat(rt_worker *wk)
{
    /* nobody here: nothing to keep alive elsewhere (a user's last
     * connection leaving was published as it happened) */
    if (rt_presence_local_users() == 0)
        return;
    publish_counts(wk->w, NULL, NULL);
}

unsigned rt_presence_local_count(const char *user)
{
    pthread_mutex_lock(&P.mu);
    pr_user *u = get(user, 0);
    unsigned n = u ? u->n : 0;
    pthread_mutex_unlock(&P.mu);
    return n;
}

unsigned rt_presence_total_count(const char *user)
{
    unsigned n = 0, away = 0;
    pthread_mutex_lock(&P.mu);
    pr_user *u = get(user, 0);
    if (u)
        totals(u, rt_now_ms(), &n, &away);
    pthread_mutex_unlock(&P.mu);
    return n;
}

size_t rt_presence_local_users(void)
{
    pthread_mutex_lock(&P.mu);
    size_t n = P.local_users;
    pthread_mutex_unlock(&P.mu);
    return n;
}

const char *rt_presence_status_of(const char *user, char out[8])
{
    unsigned n = 0, away = 0;
    pthread_mutex_lock(&P.mu);
    pr_user *u = get(user, 0);
    if (u)
        totals(u, rt_now_ms(), &n, &away);
    pthread_mutex_unlock(&P.mu);
    snprintf(out, 8, "%s", status_of(n, away));
    return out;
}

json_t *rt_presence_get(const char *user)
{
    unsigned n = 0, away = 0;
    pthread_mutex_lock(&P.mu);
    pr_user *u = get(user, 0);
    if (u)
        totals(u, rt_now_ms(), &n, &away);
    pthread_mutex_unlock(&P.mu);
    return json_pack("{s:s,s:s,s:I,s:I}", "user", user, "status", status_of(n, away),
                     "connections", (json_int_t)n, "away", (json_int_t)away);
}

json_t *rt_presence_list(void)
{
    json_t *a = json_array();
    int64_t now = rt_now_ms();
    pthread_mutex_lock(&P.mu);
    for (size_t i = 0; i < NBUCKETS; i++)
        for (pr_user *u = P.b[i]; u; u = u->next) {
            unsigned n, away;
            totals(u, now, &n, &away);
            if (n)
                json_array_append_new(
                    a, json_pack("{s:s,s:I,s:I,s:I,s:s}", "user", u->user, "connections",
                                 (json_int_t)n, "here", (json_int_t)u->n, "away",
                                 (json_int_t)away, "status", status_of(n, away)));
        }
    pthread_mutex_unlock(&P.mu);
    return a;
}
