/* event_list.c — GET /api/v1/events: the events the caller may see, with
 * filters, search, a sort whitelist and keyset (cursor) pages.
 *
 * Visibility is part of the SQL, not a filter on the page: a restricted
 * event the caller is neither owner, assignee nor admin of is never in a
 * page, a count or a search. The cursor is the last row's sort key and
 * id (base64url JSON); the next page starts strictly after it, so rows
 * inserted meanwhile never shift a page. See docs/events.md. */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "app/events_internal.h"

static int64_t page_max; /* EVENTS_PAGE_MAX */

/* ---------------------------------------------------------------- list */

static const struct {
    const char *key, *column, *dir;
    int text;
} sorts[] = {{"created_at", "created_at", "ASC", 0}, {"-created_at", "created_at", "DESC", 0},
             {"updated_at", "updated_at", "ASC", 0}, {"-updated_at", "updated_at", "DESC", 0},
             {"starts_at", "starts_at", "ASC", 0},   {"-starts_at", "starts_at", "DESC", 0},
             {"title", "title", "ASC", 1},           {"-title", "title", "DESC", 1}};
#define NSORTS (sizeof(sorts) / sizeof(sorts[0]))

typedef struct list_job {
    app_ev_job e;
    char state[16], type[64], owner[64], assignee[64], tag[48], classification[16];
    char q[300]; /* a LIKE pattern, escaped */
    int64_t from, to, limit;
    int has_from, has_to, count;
    size_t sort;
    /* the cursor: the last row's sort key and id */
    int has_cursor;
    int64_t cur_int;
    char cur_text[800], cur_id[64];
    char next[1200]; /* the next page's cursor, "" at the end */
} list_job;

static void like_escape(const char *s, char *out, size_t cap, int lower)
{
    size_t k = 0;
    out[k++] = '%';
    for (; *s && k + 4 < cap; s++) {
        if (*s == '%' || *s == '_' || *s == '\\')
            out[k++] = '\\';
        out[k++] = (char)(lower && *s >= 'A' && *s <= 'Z' ? *s + 32 : *s);
    }
    out[k++] = '%';
    out[k] = '\0';
}

size_t app_ev_visible_sql(const app_actor *who, int64_t now, keel_db_param *p, size_t n,
                          char *where, size_t cap)
{
    size_t len = strlen(where);
    if (who->admin)
        return n;
    if (app_ev_is_user(who)) {
        p[n++] = KEEL_DB_P_TEXT(who->id);
        p[n++] = KEEL_DB_P_INT(now);
        snprintf(where + len, cap - len,
                 " AND (e.classification <> 'restricted' OR e.owner_id = $%zu OR EXISTS (SELECT "
                 "1 FROM event_assignments a WHERE a.event_id = e.id AND a.user_id = $%zu AND "
                 "a.revoked_at IS NULL AND (a.expires_at IS NULL OR a.expires_at > $%zu)))",
                 n - 1, n - 1, n);
    } else {
        snprintf(where + len, cap - len, " AND e.classification <> 'restricted'");
    }
    return n;
}

static int db_list(keel_db_conn *c, void *arg)
{
    list_job *j = arg;
    json_decref(j->e.out);
    j->e.out = NULL;
    char where[2000] = "e.deleted_at IS NULL";
    keel_db_param p[20];
    size_t n = 0;
    size_t len = strlen(where);
    int64_t now = app_now();
    char tag[200];
#define COND(param, ...)                                                                         \
    do {                                                                                         \
        p[n++] = param;                                                                          \
        len += (size_t)snprintf(where + len, sizeof(where) - len, __VA_ARGS__);                  \
    } while (0)
    n = app_ev_visible_sql(&j->e.who, now, p, n, where, sizeof(where));
    len = strlen(where);
    if (*j->state)
        COND(KEEL_DB_P_TEXT(j->state), " AND e.state = $%zu", n);
    if (*j->type)
        COND(KEEL_DB_P_TEXT(j->type), " AND e.type = $%zu", n);
    if (*j->owner)
        COND(KEEL_DB_P_TEXT(j->owner), " AND e.owner_id = $%zu", n);
    if (*j->classification)
        COND(KEEL_DB_P_TEXT(j->classification), " AND e.classification = $%zu", n);
    if (*j->assignee) {
        COND(KEEL_DB_P_TEXT(j->assignee),
             " AND EXISTS (SELECT 1 FROM event_assignments b WHERE b.event_id = e.id AND "
             "b.user_id = $%zu", n);
        COND(KEEL_DB_P_INT(now),
             " AND b.revoked_at IS NULL AND (b.expires_at IS NULL OR b.expires_at > $%zu))", n);
    }
    if (*j->tag) {
        snprintf(tag, sizeof(tag), ",%s,", j->tag);
        char pat[200];
        like_escape(tag, pat, sizeof(pat), 0);
        snprintf(tag, sizeof(tag), "%s", pat);
        COND(KEEL_DB_P_TEXT(tag), " AND e.tags LIKE $%zu ESCAPE '\\'", n);
    }
    if (*j->q) {
        COND(KEEL_DB_P_TEXT(j->q), " AND (lower(e.title) LIKE $%zu ESCAPE '\\'", n);
        len += (size_t)snprintf(where + len, sizeof(where) - len,
                                " OR lower(e.description) LIKE $%zu ESCAPE '\\')", n);
    }
    /* a date range: the events overlapping [from, to) */
    if (j->has_from)
        COND(KEEL_DB_P_INT(j->from), " AND COALESCE(e.ends_at, e.starts_at) >= $%zu", n);
    if (j->has_to)
        COND(KEEL_DB_P_INT(j->to), " AND e.starts_at < $%zu", n);
    char sql[3000];
    int64_t total = -1;
    int rc;
    keel_db_rows *rows;
    if (j->count) {
        snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM events e WHERE %s", where);
        if ((rc = keel_db_query(c, sql, p, n, &rows)) < 0)
            return rc;
        total = keel_db_rows_next(rows) == 1 ? keel_db_get_int(rows, 0) : 0;
        keel_db_rows_free(rows);
    }
    const char *col = sorts[j->sort].column, *dir = sorts[j->sort].dir;
    if (j->has_cursor) {
        p[n++] = sorts[j->sort].text ? KEEL_DB_P_TEXT(j->cur_text) : KEEL_DB_P_INT(j->cur_int);
        p[n++] = KEEL_DB_P_TEXT(j->cur_id);
        len += (size_t)snprintf(where + len, sizeof(where) - len,
                                " AND (e.%s, e.id) %s ($%zu, $%zu)", col,
                                !strcmp(dir, "ASC") ? ">" : "<", n - 1, n);
    }
#undef COND
    p[n++] = KEEL_DB_P_INT(j->limit + 1);
    snprintf(sql, sizeof(sql),
             "SELECT " EV_COLUMNS " FROM events e WHERE %s ORDER BY e.%s %s, e.id %s LIMIT $%zu",
             where, col, dir, dir, n);
    if ((rc = keel_db_query(c, sql, p, n, &rows)) < 0)
        return rc;
    json_t *data = json_array();
    int64_t count = 0;
    *j->next = '\0';
    json_t *last = NULL;
    while ((rc = keel_db_rows_next(rows)) == 1) {
        if (count == j->limit) {
            /* one more row exists: the cursor is the last row shown */
            json_t *key = json_array();
            json_array_append_new(key, json_string(sorts[j->sort].key));
            json_t *lv = json_object_get(last, sorts[j->sort].column);
            if (sorts[j->sort].text) {
                json_array_append(key, lv);
            } else {
                int64_t t = 0;
                app_parse_time(json_string_value(lv), json_string_length(lv), &t);
                json_array_append_new(key, json_integer(t));
            }
            json_array_append(key, json_object_get(last, "id"));
            char *s = json_dumps(key, JSON_COMPACT);
            json_decref(key);
            size_t sl = strlen(s);
            if (sodium_base64_ENCODED_LEN(sl, sodium_base64_VARIANT_URLSAFE_NO_PADDING) <=
                sizeof(j->next))
                sodium_bin2base64(j->next, sizeof(j->next), (const unsigned char *)s, sl,
                                  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
            free(s);
            break;
        }
        last = app_ev_json(rows, NULL);
        json_array_append_new(data, last);
        count++;
    }
    keel_db_rows_free(rows);
    if (rc < 0) {
        json_decref(data);
        return rc;
    }
    j->e.out = json_pack("{s:o,s:o,s:I}", "data", data, "next_cursor",
                         *j->next ? json_string(j->next) : json_null(), "limit",
                         (json_int_t)j->limit);
    if (total >= 0)
        json_object_set_new(j->e.out, "total", json_integer(total));
    return 0;
}

static void listed(keel_req *r, void *arg, int status)
{
    list_job *j = arg;
    if (status == 0 && *j->next)
        app_link_next(r, "cursor", j->next);
    app_ev_done(r, arg, status);
}

/* The list's query, already typed by the route's query schema. */
static int read_list_query(keel_req *r, list_job *j)
{
    json_t *q = keel_req_query_json(r);
    j->limit = 20;
    struct {
        const char *name;
        char *dst;
        size_t cap;
    } texts[] = {{"state", j->state, sizeof(j->state)},
                 {"type", j->type, sizeof(j->type)},
                 {"owner", j->owner, sizeof(j->owner)},
                 {"assignee", j->assignee, sizeof(j->assignee)},
                 {"tag", j->tag, sizeof(j->tag)},
                 {"classification", j->classification, sizeof(j->classification)}};
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        const char *s = json_string_value(json_object_get(q, texts[i].name));
        if (s)
            snprintf(texts[i].dst, texts[i].cap, "%s",
                     !strcmp(s, "me") && (i == 2 || i == 3) ? j->e.who.id : s);
    }
    const char *s = json_string_value(json_object_get(q, "q"));
    if (s && *s)
        like_escape(s, j->q, sizeof(j->q), 1);
    const char *tf[] = {"from", "to"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(q, tf[i]);
        if (!v)
            continue;
        if (app_parse_time(json_string_value(v), json_string_length(v), i ? &j->to : &j->from) <
            0) {
            app_invalid(r, i ? "/query/to" : "/query/from", "must be an RFC 3339 date-time");
            return -1;
        }
        *(i ? &j->has_to : &j->has_from) = 1;
    }
    json_t *lim = json_object_get(q, "limit");
    if (json_is_integer(lim)) {
        if (json_integer_value(lim) > page_max) {
            char msg[80];
            snprintf(msg, sizeof(msg), "must be at most %lld (EVENTS_PAGE_MAX)",
                     (long long)page_max);
            app_invalid(r, "/query/limit", msg);
            return -1;
        }
        j->limit = json_integer_value(lim);
    }
    j->count = json_is_true(json_object_get(q, "count"));
    const char *sort = json_string_value(json_object_get(q, "sort"));
    j->sort = 1; /* -created_at: new events first, and inserts never shift later pages */
    for (size_t i = 0; sort && i < NSORTS; i++)
        if (!strcmp(sort, sorts[i].key))
            j->sort = i;
    const char *cur = json_string_value(json_object_get(q, "cursor"));
    if (cur) {
        unsigned char raw[900];
        size_t rl = 0;
        json_t *key = NULL;
        if (sodium_base642bin(raw, sizeof(raw) - 1, cur, strlen(cur), NULL, &rl, NULL,
                              sodium_base64_VARIANT_URLSAFE_NO_PADDING) == 0)
            key = json_loadb((const char *)raw, rl, 0, NULL);
        json_t *k0 = json_array_get(key, 0), *k1 = json_array_get(key, 1),
               *k2 = json_array_get(key, 2);
        int ok = json_array_size(key) == 3 && json_is_string(k0) &&
                 !strcmp(json_string_value(k0), sorts[j->sort].key) && json_is_string(k2) &&
                 json_string_length(k2) < sizeof(j->cur_id) &&
                 (sorts[j->sort].text ? json_is_string(k1) &&
                                            json_string_length(k1) < sizeof(j->cur_text)
                                      : json_is_integer(k1));
        if (ok) {
            if (sorts[j->sort].text)
                snprintf(j->cur_text, sizeof(j->cur_text), "%s", json_string_value(k1));
            else
                j->cur_int = json_integer_value(k1);
            snprintf(j->cur_id, sizeof(j->cur_id), "%s", json_string_value(k2));
            j->has_cursor = 1;
        }
        json_decref(key);
        if (!ok) {
            app_invalid(r, "/query/cursor", "is not a cursor of this list with this sort");
            return -1;
        }
    }
    return 0;
}

static keel_flow h_list(keel_req *r)
{
    list_job *j = app_ev_job_new(r, sizeof(list_job));
    if (read_list_query(r, j) < 0)
        return KEEL_DONE;
    return keel_db_job_run(r, app_ev_db, db_list, listed, j);
}

/* ---------------------------------------------------------------- routes */

#define S_TIME "{\"type\":\"string\",\"format\":\"date-time\"}"
#define S_ID "{\"type\":\"string\",\"maxLength\":63}"
#define S_LIST_QUERY                                                                             \
    "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"                      \
    "\"state\":{\"type\":\"string\",\"enum\":[\"draft\",\"scheduled\",\"active\","               \
    "\"completed\",\"cancelled\",\"archived\"]},"                                                \
    "\"type\":{\"type\":\"string\",\"maxLength\":63},\"owner\":" S_ID ",\"assignee\":" S_ID ","  \
    "\"tag\":{\"type\":\"string\",\"maxLength\":40},"                                            \
    "\"classification\":{\"type\":\"string\",\"enum\":[\"public\",\"internal\","                 \
    "\"confidential\",\"restricted\"]},"                                                         \
    "\"q\":{\"type\":\"string\",\"maxLength\":100},\"from\":" S_TIME ",\"to\":" S_TIME ","       \
    "\"sort\":{\"type\":\"string\",\"enum\":[\"created_at\",\"-created_at\",\"updated_at\","     \
    "\"-updated_at\",\"starts_at\",\"-starts_at\",\"title\",\"-title\"]},"                       \
    "\"limit\":{\"type\":\"integer\",\"minimum\":1},\"cursor\":{\"type\":\"string\","            \
    "\"maxLength\":1200},\"count\":{\"type\":\"boolean\"}}}"

static const keel_route list_routes[] = {
    {.name = "events.list", .method = "GET", .path = "/api/v1/events", .handler = h_list,
     .summary = "Events the caller may see: filters (state, type, owner, assignee, tag, "
                "classification, from/to), q search, sort, cursor pages with Link",
     .auth = "any", .permission = "events:read", .query_schema = S_LIST_QUERY},
};

int app_event_list_setup(keel_service *svc, int64_t max)
{
    page_max = max;
    return keel_service_add_routes(svc, list_routes, sizeof(list_routes) / sizeof(list_routes[0]));
}
