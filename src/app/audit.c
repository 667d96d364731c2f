/* audit.c — the tamper-evident audit log: append (inside the writer's own
 * transaction), verify, list and export; `keel audit verify|export`.
 *
 * Every record has a position `seq` (1, 2, 3, ... without gaps) and
 *
 *     hash = SHA-256( "keel-audit-v1\n"
 *                     || for each field, in this order: seq, at,
 *                        actor_kind, actor_id, request_id, action,
 *                        entity_type, entity_id, diff, prev_hash:
 *                        <decimal byte length> ":" <bytes> "\n" )
 *
 * in lower-case hex, where integers are written in decimal, `diff` is the
 * stored text (compact JSON with sorted keys, written once by
 * app_audit_append) and prev_hash is the previous record's hash (64 "0"
 * for the first). Length-prefixing makes the form unambiguous whatever
 * the fields hold; hashing the stored bytes makes it independent of how a
 * JSON library would re-serialise them.
 *
 * Linearity: an append first updates the one row of audit_head (seq + 1,
 * RETURNING the previous hash). On PostgreSQL that row lock serialises
 * appenders until the holder commits or rolls back; on SQLite the
 * transaction is already BEGIN IMMEDIATE. Writers append last in their
 * transaction, after their own rows, so the lock is held briefly and
 * always in the same order (no deadlock). The head also records the last
 * hash, so a truncated tail is found by verify as well as an edited or
 * removed record. */
#include <jansson.h>
#include <sodium.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/app.h"

static keel_db *DB;
static uint64_t export_max; /* AUDIT_EXPORT_MAX */

#define ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"
#define AUDIT_COLUMNS                                                                            \
    "seq, at, actor_kind, actor_id, request_id, action, entity_type, entity_id, diff, "         \
    "prev_hash, hash"

void app_actor_of(keel_req *r, app_actor *out)
{
    const keel_principal *p = keel_req_principal(r);
    memset(out, 0, sizeof(*out));
    snprintf(out->kind, sizeof(out->kind), "%s", p ? p->kind : "anonymous");
    snprintf(out->id, sizeof(out->id), "%s", p && p->id ? p->id : "");
    snprintf(out->role, sizeof(out->role), "%s", p && p->role ? p->role : "");
    snprintf(out->request_id, sizeof(out->request_id), "%s",
             keel_req_id(r) ? keel_req_id(r) : "");
    out->admin = keel_principal_can(p, "admin:access");
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- hashing */

static void field(crypto_hash_sha256_state *st, const char *p, size_t n)
{
    char len[32];
    int k = snprintf(len, sizeof(len), "%zu:", n);
    crypto_hash_sha256_update(st, (const unsigned char *)len, (unsigned long long)k);
    crypto_hash_sha256_update(st, (const unsigned char *)p, n);
    crypto_hash_sha256_update(st, (const unsigned char *)"\n", 1);
}

static void int_field(crypto_hash_sha256_state *st, int64_t v)
{
    char s[32];
    int k = snprintf(s, sizeof(s), "%lld", (long long)v);
    field(st, s, (size_t)k);
}

/* The record's hash (see the note at the top); f: the seven text fields
 * actor_kind .. diff, then prev_hash. */
static void record_hash(int64_t seq, int64_t at, const keel_str f[8], char out[65])
{
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, (const unsigned char *)"keel-audit-v1\n", 14);
    int_field(&st, seq);
    int_field(&st, at);
    for (int i = 0; i < 8; i++)
        field(&st, f[i].ptr ? f[i].ptr : "", f[i].len);
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&st, h);
    sodium_bin2hex(out, 65, h, sizeof(h));
}

/* ---------------------------------------------------------------- append */

/* Field names whose values never reach the log. */
static int secret_name(const char *k)
{
    static const char *const words[] = {"password", "secret", "token", "hash", "api_key"};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strstr(k, words[i]))
            return 1;
    return 0;
}

json_t *app_audit_diff(const json_t *before, const json_t *after)
{
    json_t *d = json_object();
    const char *k;
    json_t *v;
    if (after) {
        json_object_foreach((json_t *)after, k, v) {
            json_t *old = before ? json_object_get(before, k) : NULL;
            if (secret_name(k) || (old && json_equal(old, v)))
                continue;
            json_t *ch = json_object();
            if (before)
                json_object_set(ch, "from", old ? old : json_null());
            json_object_set(ch, "to", v);
            json_object_set_new(d, k, ch);
        }
    }
    if (before) {
        json_object_foreach((json_t *)before, k, v) {
            if (secret_name(k) || (after && json_object_get(after, k)))
                continue;
            json_t *ch = json_object();
            json_object_set(ch, "from", v);
            if (after)
                json_object_set(ch, "to", json_null());
            json_object_set_new(d, k, ch);
        }
    }
    return d;
}

int app_audit_append(keel_db_conn *c, const app_actor *a, const char *action,
                     const char *entity_type, const char *entity_id, const json_t *diff)
{
    /* the secrets filter applies to whatever the caller built */
    json_t *clean = json_object();
    const char *k;
    json_t *v;
    if (diff)
        json_object_foreach((json_t *)diff, k, v)
            if (!secret_name(k))
                json_object_set(clean, k, v);
    char *text = json_dumps(clean, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    json_decref(clean);
    if (!text)
        return KEEL_ENOMEM;
    keel_db_rows *rows;
    int rc = keel_db_query(c, "UPDATE audit_head SET seq = seq + 1 WHERE id = 1 "
                              "RETURNING seq, hash",
                           NULL, 0, &rows);
    if (rc < 0) {
        free(text);
        return rc;
    }
    int64_t seq = 0;
    char prev[65] = "";
    if ((rc = keel_db_rows_next(rows)) == 1) {
        seq = keel_db_get_int(rows, 0);
        keel_str h = keel_db_get_text(rows, 1);
        snprintf(prev, sizeof(prev), "%.*s", (int)h.len, h.ptr);
    }
    keel_db_rows_free(rows);
    if (rc != 1) {
        free(text);
        return rc < 0 ? rc : KEEL_EDB_SQL; /* no head row: the migration is missing */
    }
    int64_t at = now_ms();
    const char *actor_kind = a ? a->kind : "system", *actor_id = a ? a->id : "",
               *request_id = a ? a->request_id : "";
    /* in hashing order: kind, id, request, action, type, entity, diff, prev */
    keel_str order[8] = {keel_str_c(actor_kind),  keel_str_c(actor_id), keel_str_c(request_id),
                         keel_str_c(action),      keel_str_c(entity_type),
                         keel_str_c(entity_id),   keel_str_c(text),     keel_str_c(prev)};
    char hash[65];
    record_hash(seq, at, order, hash);
    keel_db_param p[] = {KEEL_DB_P_INT(seq),           KEEL_DB_P_INT(at),
                         KEEL_DB_P_TEXT(actor_kind),   KEEL_DB_P_TEXT(actor_id),
                         KEEL_DB_P_TEXT(request_id),   KEEL_DB_P_TEXT(action),
                         KEEL_DB_P_TEXT(entity_type),  KEEL_DB_P_TEXT(entity_id),
                         KEEL_DB_P_TEXT(text),         KEEL_DB_P_TEXT(prev),
                         KEEL_DB_P_TEXT(hash)};
    rc = keel_db_exec(c,
                      "INSERT INTO audit_log (" AUDIT_COLUMNS ") VALUES ($1, $2, $3, $4, $5, $6, "
                      "$7, $8, $9, $10, $11)",
                      p, 11, NULL);
    free(text);
    if (rc < 0)
        return rc;
    keel_db_param ph[] = {KEEL_DB_P_TEXT(hash)};
    return keel_db_exec(c, "UPDATE audit_head SET hash = $1 WHERE id = 1", ph, 1, NULL);
}

/* ---------------------------------------------------------------- verify */

/* Reads the log in seq order, in batches (PostgreSQL results are held
 * whole), and stops at the first record that does not follow. */
int app_audit_verify(keel_db_conn *c, json_t **report)
{
    char prev[65] = ZERO_HASH, reason[200] = "";
    int64_t expect = 1, checked = 0, broken = 0;
    for (;;) {
        keel_db_param p[] = {KEEL_DB_P_INT(expect - 1)};
        keel_db_rows *rows;
        int rc = keel_db_query(c, "SELECT " AUDIT_COLUMNS " FROM audit_log WHERE seq > $1 "
                                  "ORDER BY seq LIMIT 1000",
                               p, 1, &rows);
        if (rc < 0)
            return rc;
        int n = 0;
        while (!broken && (rc = keel_db_rows_next(rows)) == 1) {
            n++;
            int64_t seq = keel_db_get_int(rows, 0), at = keel_db_get_int(rows, 1);
            keel_str f[8];
            for (int i = 0; i < 8; i++)
                f[i] = keel_db_get_text(rows, 2 + (size_t)i);
            keel_str stored = keel_db_get_text(rows, 10);
            char h[65];
            record_hash(seq, at, f, h);
            if (seq != expect) {
                broken = expect;
                snprintf(reason, sizeof(reason), "record %lld is missing (next is %lld)",
                         (long long)expect, (long long)seq);
            } else if (!keel_str_eq(f[7], keel_str_c(prev))) {
                broken = seq;
                snprintf(reason, sizeof(reason), "prev_hash does not match record %lld's hash",
                         (long long)(seq - 1));
            } else if (!keel_str_eq(stored, keel_str_c(h))) {
                broken = seq;
                snprintf(reason, sizeof(reason), "the record's content does not match its hash");
            } else {
                memcpy(prev, h, sizeof(prev));
                expect++;
                checked++;
            }
        }
        keel_db_rows_free(rows);
        if (rc < 0)
            return rc;
        if (broken || n < 1000)
            break;
    }
    int64_t head_seq = 0;
    if (!broken) {
        keel_db_rows *rows;
        int rc = keel_db_query(c, "SELECT seq, hash FROM audit_head WHERE id = 1", NULL, 0, &rows);
        if (rc < 0)
            return rc;
        if (keel_db_rows_next(rows) == 1) {
            head_seq = keel_db_get_int(rows, 0);
            keel_str h = keel_db_get_text(rows, 1);
            if (head_seq != expect - 1) {
                broken = expect;
                snprintf(reason, sizeof(reason),
                         "the log ends at record %lld but its head says %lld",
                         (long long)(expect - 1), (long long)head_seq);
            } else if (!keel_str_eq(h, keel_str_c(prev))) {
                broken = expect - 1;
                snprintf(reason, sizeof(reason), "the last record's hash differs from the head's");
            }
        }
        keel_db_rows_free(rows);
    }
    *report = json_pack("{s:b,s:I,s:I}", "ok", !broken, "records", (json_int_t)checked,
                        "head_seq", (json_int_t)head_seq);
    json_object_set_new(*report, "first_broken",
                        broken ? json_pack("{s:I,s:s}", "seq", (json_int_t)broken, "reason",
                                           reason)
                               : json_null());
    return 0;
}

/* ---------------------------------------------------------------- list and export */

static json_t *record_json(const keel_db_rows *rows)
{
    json_t *o = json_object();
    json_object_set_new(o, "seq", json_integer(keel_db_get_int(rows, 0)));
    int64_t at = keel_db_get_int(rows, 1);
    char t[32], iso[40];
    app_format_time(at / 1000, t);
    snprintf(iso, sizeof(iso), "%.19s.%03dZ", t, (int)(at % 1000));
    json_object_set_new(o, "at", json_string(iso));
    static const char *const names[] = {"actor_kind", "actor_id", "request_id", "action",
                                        "entity_type", "entity_id"};
    for (size_t i = 0; i < 6; i++) {
        keel_str s = keel_db_get_text(rows, 2 + i);
        json_object_set_new(o, names[i], json_stringn(s.ptr ? s.ptr : "", s.len));
    }
    keel_str d = keel_db_get_text(rows, 8);
    json_t *diff = json_loadb(d.ptr ? d.ptr : "{}", d.len, 0, NULL);
    json_object_set_new(o, "diff", diff ? diff : json_stringn(d.ptr, d.len));
    keel_str ph = keel_db_get_text(rows, 9), h = keel_db_get_text(rows, 10);
    json_object_set_new(o, "prev_hash", json_stringn(ph.ptr ? ph.ptr : "", ph.len));
    json_object_set_new(o, "hash", json_stringn(h.ptr ? h.ptr : "", h.len));
    return o;
}

typedef struct audit_job {
    json_t *out;
    char entity_type[64], entity_id[64], actor[64], action[64];
    int64_t from_ms, to_ms, cursor, limit;
    int export_, more;
    keel_buf lines; /* export: JSON lines */
} audit_job;

static void audit_job_cleanup(void *p)
{
    audit_job *j = p;
    json_decref(j->out);
    keel_buf_free(&j->lines);
}

static int db_audit_list(keel_db_conn *c, void *arg)
{
    audit_job *j = arg;
    char sql[800];
    keel_db_param p[8];
    size_t n = 0;
    int len = snprintf(sql, sizeof(sql), "SELECT " AUDIT_COLUMNS " FROM audit_log WHERE 1 = 1");
#define COND(cond, param, fmt)                                                                   \
    if (cond) {                                                                                  \
        p[n++] = param;                                                                          \
        len += snprintf(sql + len, sizeof(sql) - (size_t)len, fmt, n);                           \
    }
    COND(*j->entity_type, KEEL_DB_P_TEXT(j->entity_type), " AND entity_type = $%zu")
    COND(*j->entity_id, KEEL_DB_P_TEXT(j->entity_id), " AND entity_id = $%zu")
    COND(*j->actor, KEEL_DB_P_TEXT(j->actor), " AND actor_id = $%zu")
    COND(*j->action, KEEL_DB_P_TEXT(j->action), " AND action = $%zu")
    COND(j->from_ms >= 0, KEEL_DB_P_INT(j->from_ms), " AND at >= $%zu")
    COND(j->to_ms >= 0, KEEL_DB_P_INT(j->to_ms), " AND at < $%zu")
    /* the list runs newest first, the export oldest first */
    COND(j->cursor > 0, KEEL_DB_P_INT(j->cursor), j->export_ ? " AND seq > $%zu" : " AND seq < $%zu")
#undef COND
    p[n++] = KEEL_DB_P_INT(j->limit + 1);
    snprintf(sql + len, sizeof(sql) - (size_t)len, " ORDER BY seq %s LIMIT $%zu",
             j->export_ ? "ASC" : "DESC", n);
    keel_db_rows *rows;
    int rc = keel_db_query(c, sql, p, n, &rows);
    if (rc < 0)
        return rc;
    json_t *data = json_array();
    int64_t last = 0, count = 0;
    j->more = 0;
    keel_buf_free(&j->lines);
    memset(&j->lines, 0, sizeof(j->lines));
    while ((rc = keel_db_rows_next(rows)) == 1) {
        if (count == j->limit) {
            j->more = 1;
            break;
        }
        count++;
        last = keel_db_get_int(rows, 0);
        json_t *rec = record_json(rows);
        if (j->export_) {
            char *line = json_dumps(rec, JSON_COMPACT);
            keel_buf_append_str(&j->lines, line);
            keel_buf_append(&j->lines, "\n", 1);
            free(line);
            json_decref(rec);
        } else {
            json_array_append_new(data, rec);
        }
    }
    keel_db_rows_free(rows);
    if (rc < 0) {
        json_decref(data);
        return rc;
    }
    json_decref(j->out);
    j->out = json_pack("{s:o}", "data", data);
    j->cursor = last;
    return 0;
}

static void audit_listed(keel_req *r, void *arg, int status)
{
    audit_job *j = arg;
    if (status < 0) {
        keel_db_respond_error(r, status);
        return;
    }
    char cur[32];
    snprintf(cur, sizeof(cur), "%lld", (long long)j->cursor);
    keel_res_set_header(r, "Cache-Control", "no-store");
    if (j->more)
        app_link_next(r, "cursor", cur);
    if (j->export_) {
        keel_respond(r, 200, "application/x-ndjson", j->lines.data ? j->lines.data : "",
                     j->lines.len);
        return;
    }
    json_object_set_new(j->out, "next_cursor", j->more ? json_string(cur) : json_null());
    keel_respond_json(r, 200, json_incref(j->out));
}

static int read_audit_query(keel_req *r, audit_job *j)
{
    json_t *q = keel_req_query_json(r);
    j->from_ms = j->to_ms = -1;
    j->limit = j->export_ ? (int64_t)export_max : 50;
    static const struct {
        const char *name;
        size_t off;
    } texts[] = {{"entity_type", offsetof(audit_job, entity_type)},
                 {"entity_id", offsetof(audit_job, entity_id)},
                 {"actor", offsetof(audit_job, actor)},
                 {"action", offsetof(audit_job, action)}};
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        const char *s = json_string_value(json_object_get(q, texts[i].name));
        if (s)
            snprintf((char *)j + texts[i].off, 64, "%s", s);
    }
    const char *tf[] = {"from", "to"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(q, tf[i]);
        int64_t t;
        if (!v)
            continue;
        if (app_parse_time(json_string_value(v), json_string_length(v), &t) < 0) {
            char ptr[16];
            snprintf(ptr, sizeof(ptr), "/query/%s", tf[i]);
            app_invalid(r, ptr, "must be an RFC 3339 date-time");
            return -1;
        }
        *(i ? &j->to_ms : &j->from_ms) = t * 1000;
    }
    json_t *lim = json_object_get(q, "limit");
    if (json_is_integer(lim))
        j->limit = json_integer_value(lim) < j->limit || !j->export_ ? json_integer_value(lim)
                                                                     : j->limit;
    const char *cur = json_string_value(json_object_get(q, "cursor"));
    if (cur) {
        char *end;
        long long x = strtoll(cur, &end, 10);
        if (!*cur || *end || x < 0) {
            app_invalid(r, "/query/cursor", "is not a cursor this list gave");
            return -1;
        }
        j->cursor = x;
    }
    return 0;
}

static keel_flow h_audit_list(keel_req *r)
{
    audit_job *j = KEEL_REQ_JOB(r, audit_job, audit_job_cleanup);
    if (read_audit_query(r, j) < 0)
        return KEEL_DONE;
    return keel_db_job_run(r, DB, db_audit_list, audit_listed, j);
}

static keel_flow h_audit_export(keel_req *r)
{
    audit_job *j = KEEL_REQ_JOB(r, audit_job, audit_job_cleanup);
    j->export_ = 1;
    if (read_audit_query(r, j) < 0)
        return KEEL_DONE;
    return keel_db_job_run(r, DB, db_audit_list, audit_listed, j);
}

static int db_verify(keel_db_conn *c, void *arg)
{
    audit_job *j = arg;
    json_decref(j->out);
    j->out = NULL;
    return app_audit_verify(c, &j->out);
}

static void verified(keel_req *r, void *arg, int status)
{
    audit_job *j = arg;
    if (status < 0) {
        keel_db_respond_error(r, status);
        return;
    }
    keel_res_set_header(r, "Cache-Control", "no-store");
    keel_respond_json(r, 200, json_incref(j->out));
}

static keel_flow h_audit_verify(keel_req *r)
{
    audit_job *j = KEEL_REQ_JOB(r, audit_job, audit_job_cleanup);
    return keel_db_job_run(r, DB, db_verify, verified, j);
}

/* ---------------------------------------------------------------- routes */

#define S_AUDIT_QUERY(maxlimit)                                                                   \
    "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"                       \
    "\"entity_type\":{\"type\":\"string\",\"maxLength\":63},"                                    \
    "\"entity_id\":{\"type\":\"string\",\"maxLength\":63},"                                      \
    "\"actor\":{\"type\":\"string\",\"maxLength\":63},"                                          \
    "\"action\":{\"type\":\"string\",\"maxLength\":63},"                                         \
    "\"from\":{\"type\":\"string\",\"format\":\"date-time\"},"                                   \
    "\"to\":{\"type\":\"string\",\"format\":\"date-time\"},"                                     \
    "\"cursor\":{\"type\":\"string\",\"maxLength\":20},"                                         \
    "\"limit\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":" maxlimit "}}}"

static const keel_route audit_routes[] = {
    {.name = "admin.audit.list", .method = "GET", .path = "/api/v1/admin/audit",
     .handler = h_audit_list,
     .summary = "Audit records, newest first (entity_type, entity_id, actor, action, from, to; "
                "cursor-paged, Link)",
     .auth = "any", .permission = "admin:access", .query_schema = S_AUDIT_QUERY("500")},
    {.name = "admin.audit.export", .method = "GET", .path = "/api/v1/admin/audit/export",
     .handler = h_audit_export,
     .summary = "Audit records as JSON lines, oldest first (the same filters; Link to the next "
                "part)",
     .auth = "any", .permission = "admin:access", .query_schema = S_AUDIT_QUERY("1000000")},
    {.name = "admin.audit.verify", .method = "GET", .path = "/api/v1/admin/audit/verify",
     .handler = h_audit_verify,
     .summary = "Checks the audit log's hash chain; reports the first broken link",
     .auth = "any", .permission = "admin:access"},
};

int app_audit_setup(keel_service *svc)
{
    DB = keel_service_db(svc);
    export_max = app_options_of(svc)->audit_export_max;
    return keel_service_add_routes(svc, audit_routes,
                                   sizeof(audit_routes) / sizeof(audit_routes[0]));
}

/* ---------------------------------------------------------------- CLI */

int app_audit_command(keel_service *svc, int argc, char **argv)
{
    const char *sub = argc > 0 ? argv[0] : "";
    if (strcmp(sub, "verify") && strcmp(sub, "export")) {
        fprintf(stderr, "usage: keel audit verify | export\n");
        return 2;
    }
    const keel_config *cfg = keel_service_config(svc);
    const keel_db_options *o = keel_config_get(cfg, &keel_db_config);
    keel_db_conn *c = NULL;
    char err[256] = "";
    if (keel_db_connect(o->database_url, cfg, &c, err, sizeof(err)) < 0) {
        fprintf(stderr, "keel: cannot open the database: %s\n", err);
        return 1;
    }
    int rc, status = 0;
    if (!strcmp(sub, "verify")) {
        json_t *rep = NULL;
        rc = app_audit_verify(c, &rep);
        if (rc == 0) {
            char *s = json_dumps(rep, JSON_COMPACT);
            printf("%s\n", s);
            free(s);
            status = json_is_true(json_object_get(rep, "ok")) ? 0 : 3;
            if (status)
                fprintf(stderr, "keel: the audit chain is broken at record %lld: %s\n",
                        (long long)json_integer_value(
                            json_object_get(json_object_get(rep, "first_broken"), "seq")),
                        json_string_value(
                            json_object_get(json_object_get(rep, "first_broken"), "reason")));
            json_decref(rep);
        }
    } else {
        audit_job j = {.export_ = 1, .from_ms = -1, .to_ms = -1, .limit = 1000};
        do {
            rc = db_audit_list(c, &j);
            if (rc == 0 && j.lines.len)
                fwrite(j.lines.data, 1, j.lines.len, stdout);
        } while (rc == 0 && j.more);
        audit_job_cleanup(&j);
    }
    keel_db_disconnect(c);
    if (rc < 0) {
        fprintf(stderr, "keel: %s\n", keel_db_strerror(rc));
        if (rc == KEEL_EDB_SQL)
            fprintf(stderr, "keel: the tables are missing: run `keel migrate up` first\n");
        return 1;
    }
    return status;
}
