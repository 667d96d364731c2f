/* test_notifications.c — app_notify (src/app/notifications.c) on a real
 * database, SQLite and, with KEEL_TEST_PG_URL, PostgreSQL: a rolled-back
 * transaction leaves no notification and no job; committed, the row and
 * one job per enabled channel with its unique key; the same idempotency
 * key again (in the same or a later transaction) is a duplicate that
 * enqueues nothing; preferences resolve default -> the user's "*" -> the
 * type's own; disabled users get no e-mail; bad arguments, unknown users
 * and oversized data are refused before anything is written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>

#include "testsrv.h"
#include "testdb.h"

#include "app/app.h"
#include "app/notify_internal.h"

static keel_db_conn *C;
static char USER[37], DISABLED[37];

static void ok(const char *sql, const keel_db_param *p, size_t n)
{
    int rc = keel_db_exec(C, sql, p, n, NULL);
    if (rc < 0)
        fail_msg("%s: %s (%s)", sql, keel_db_strerror(rc), keel_db_errmsg(C));
}

static int64_t count(const char *sql, const char *arg)
{
    keel_db_param p[] = {KEEL_DB_P_TEXT(arg)};
    keel_db_rows *rows = NULL;
    int rc = keel_db_query(C, sql, p, 1, &rows);
    if (rc < 0)
        fail_msg("%s: %s (%s)", sql, keel_db_strerror(rc), keel_db_errmsg(C));
    assert_int_equal(keel_db_rows_next(rows), 1);
    int64_t v = keel_db_get_int(rows, 0);
    keel_db_rows_free(rows);
    return v;
}

static int64_t jobs_of(const char *nid, const char *channel)
{
    char key[96];
    snprintf(key, sizeof(key), "notification:%s:%s", nid, channel);
    return count("SELECT COUNT(*) FROM keel_jobs WHERE unique_key = $1", key);
}

static void add_user(char id[37], const char *status)
{
    app_uuid(id);
    char email[80];
    snprintf(email, sizeof(email), "%.8s@example.com", id);
    keel_db_param p[] = {KEEL_DB_P_TEXT(id), KEEL_DB_P_TEXT(email), KEEL_DB_P_TEXT(status)};
    ok("INSERT INTO users (id, email, password_hash, name, status, created_at, updated_at) "
       "VALUES ($1, $2, 'x', 'Ann', $3, 0, 0)",
       p, 3);
}

static int group_setup(void **state)
{
    (void)state;
    keel_migrate_opts mo = {
        .url = g_url, .migrations = app_migrations, .nmigrations = app_migrations_count};
    keel_migrator *m = keel_migrate_new(&mo);
    int rc = keel_migrate_up(m, NULL);
    keel_migrate_free(m);
    if (rc < 0)
        return -1;
    char err[512];
    if (keel_db_connect(g_url, NULL, &C, err, sizeof(err)) < 0)
        return -1;
    add_user(USER, "active");
    add_user(DISABLED, "disabled");
    return 0;
}

static int group_teardown(void **state)
{
    keel_db_disconnect(C);
    C = NULL;
    return testdb_teardown(state);
}

/* ---------------------------------------------------------------- transactions */

typedef struct tx_arg {
    const char *key, *type;
    int fail; /* return this from the transaction (rolls it back) */
    app_notify_result res[2];
    int rc[2];
} tx_arg;

static int tx_notify(keel_db_conn *c, void *arg)
{
    tx_arg *a = arg;
    json_t *data = json_pack("{s:s, s:s}", "title", "Shipped", "body", "<b>now</b>");
    a->rc[0] = app_notify_ex(c, USER, a->type, data, a->key, &a->res[0]);
    a->rc[1] = app_notify_ex(c, USER, a->type, data, a->key, &a->res[1]);
    json_decref(data);
    return a->rc[0] < 0 ? a->rc[0] : a->fail;
}

static void test_rollback_leaves_nothing(void **state)
{
    (void)state;
    tx_arg a = {.key = "rollback-1", .type = "order.shipped", .fail = KEEL_ECANCELED};
    assert_int_equal(keel_db_tx(C, tx_notify, &a), KEEL_ECANCELED);
    assert_int_equal(a.rc[0], 0);
    assert_int_equal(a.res[0].channels, APP_NOTIFY_IN_APP | APP_NOTIFY_EMAIL);
    assert_int_equal(count("SELECT COUNT(*) FROM notifications WHERE id = $1", a.res[0].id), 0);
    assert_int_equal(jobs_of(a.res[0].id, "email"), 0);
    /* the key is free again: the next try sends */
    a.fail = 0;
    assert_int_equal(keel_db_tx(C, tx_notify, &a), 0);
    assert_int_equal(a.res[0].duplicate, 0);
    assert_int_equal(count("SELECT COUNT(*) FROM notifications WHERE id = $1", a.res[0].id), 1);
}

static void test_commit_once_per_key(void **state)
{
    (void)state;
    tx_arg a = {.key = "invoice-9", .type = "invoice.ready"};
    assert_int_equal(keel_db_tx(C, tx_notify, &a), 0);
    assert_int_equal(a.rc[1], 0);
    assert_int_equal(a.res[0].duplicate, 0);
    assert_int_equal(a.res[1].duplicate, 1);
    assert_string_equal(a.res[0].id, a.res[1].id);
    assert_int_equal(a.res[1].channels, APP_NOTIFY_IN_APP | APP_NOTIFY_EMAIL);
    assert_int_equal(
        count("SELECT COUNT(*) FROM notifications WHERE idempotency_key = $1", "invoice-9"), 1);
    assert_int_equal(jobs_of(a.res[0].id, "email"), 1);
    assert_int_equal(jobs_of(a.res[0].id, "push"), 0); /* PUSH_GATEWAY_URL is empty */
    assert_int_equal(jobs_of(a.res[0].id, "live"), 0); /* no live hook */
    /* a later transaction with the key: still the first one, no new job */
    tx_arg b = {.key = "invoice-9", .type = "invoice.ready"};
    assert_int_equal(keel_db_tx(C, tx_notify, &b), 0);
    assert_int_equal(b.res[0].duplicate, 1);
    assert_string_equal(b.res[0].id, a.res[0].id);
    assert_int_equal(jobs_of(a.res[0].id, "email"), 1);
    /* the mail job's args: the contract of the mail.send handler */
    keel_db_param p[] = {KEEL_DB_P_TEXT(a.res[0].id)};
    char key[96];
    snprintf(key, sizeof(key), "notification:%s:email", a.res[0].id);
    p[0] = KEEL_DB_P_TEXT(key);
    keel_db_rows *rows;
    assert_int_equal(keel_db_query(C,
                                   "SELECT kind, queue, args FROM keel_jobs WHERE "
                                   "unique_key = $1",
                                   p, 1, &rows),
                     0);
    assert_int_equal(keel_db_rows_next(rows), 1);
    assert_string_equal(keel_db_get_text(rows, 0).ptr, "mail.send");
    assert_string_equal(keel_db_get_text(rows, 1).ptr, "email");
    keel_str t = keel_db_get_text(rows, 2);
    json_t *args = json_loadb(t.ptr, t.len, 0, NULL);
    keel_db_rows_free(rows);
    assert_non_null(args);
    assert_string_equal(json_string_value(json_object_get(args, "template")), "notification");
    assert_string_equal(json_string_value(json_object_get(args, "class")), "notification");
    assert_string_equal(json_string_value(json_object_get(args, "to_name")), "Ann");
    json_t *vars = json_object_get(args, "vars");
    assert_string_equal(json_string_value(json_object_get(vars, "title")), "Shipped");
    assert_string_equal(json_string_value(json_object_get(vars, "body")), "<b>now</b>");
    char mk[64];
    snprintf(mk, sizeof(mk), "notification:%s", a.res[0].id);
    assert_string_equal(json_string_value(json_object_get(args, "message_key")), mk);
    json_decref(args);
}

/* ---------------------------------------------------------------- preferences */

static void pref(const char *type, const char *channel, int on)
{
    keel_db_param p[] = {KEEL_DB_P_TEXT(USER), KEEL_DB_P_TEXT(type), KEEL_DB_P_TEXT(channel),
                         KEEL_DB_P_BOOL(on)};
    ok("INSERT INTO notification_preferences (user_id, type, channel, enabled, updated_at) "
       "VALUES ($1, $2, $3, $4, 0)",
       p, 4);
}

static unsigned channels(const char *user, const char *type)
{
    app_notify_result r;
    assert_int_equal(app_notify_ex(C, user, type, NULL, NULL, &r), 0);
    return r.channels;
}

static void test_preference_order(void **state)
{
    (void)state;
    pref("*", "email", 0);          /* the user's default: no e-mail */
    pref("billing", "email", 1);    /* but billing by e-mail */
    pref("marketing", "in_app", 0); /* and marketing nowhere */
    assert_int_equal(channels(USER, "chat"), APP_NOTIFY_IN_APP);
    assert_int_equal(channels(USER, "billing"), APP_NOTIFY_IN_APP | APP_NOTIFY_EMAIL);
    assert_int_equal(channels(USER, "marketing"), 0);
    assert_int_equal(count("SELECT COUNT(*) FROM notifications WHERE user_id = $1 AND "
                           "type = 'marketing' AND NOT in_app",
                           USER),
                     1);
    /* a disabled account: in-app only */
    assert_int_equal(channels(DISABLED, "billing"), APP_NOTIFY_IN_APP);
    keel_db_param p[] = {KEEL_DB_P_TEXT(USER)};
    ok("DELETE FROM notification_preferences WHERE user_id = $1", p, 1);
}

/* ---------------------------------------------------------------- the live hook */

static int live_calls;

static void live(const char *user_id, const json_t *n, void *arg)
{
    (void)user_id;
    (void)n;
    (void)arg;
    live_calls++;
}

static void test_live_hook_enqueues_after_commit_only(void **state)
{
    (void)state;
    app_notify_result r;
    live_calls = 0;
    app_notify_live(USER, NULL); /* unset: a no-op */
    assert_false(app_notify_live_enabled());
    app_notify_set_live(live, NULL);
    assert_true(app_notify_live_enabled());
    assert_int_equal(app_notify_ex(C, USER, "chat", NULL, NULL, &r), 0);
    assert_int_equal(jobs_of(r.id, "live"), 1); /* delivered by the job, after commit */
    assert_int_equal(live_calls, 0);
    pref("quiet", "in_app", 0);
    assert_int_equal(app_notify_ex(C, USER, "quiet", NULL, NULL, &r), 0);
    assert_int_equal(jobs_of(r.id, "live"), 0); /* nothing in-app, nothing live */
    app_notify_live(USER, NULL);
    assert_int_equal(live_calls, 1);
    app_notify_set_live(NULL, NULL);
    keel_db_param p[] = {KEEL_DB_P_TEXT(USER)};
    ok("DELETE FROM notification_preferences WHERE user_id = $1", p, 1);
}

/* ---------------------------------------------------------------- retention */

static void test_prune(void **state)
{
    (void)state;
    char other[37];
    add_user(other, "active");
    for (int i = 0; i < 5; i++) {
        char id[37];
        app_uuid(id);
        keel_db_param p[] = {KEEL_DB_P_TEXT(id), KEEL_DB_P_TEXT(other), KEEL_DB_P_INT(100 + i)};
        ok("INSERT INTO notifications (id, user_id, type, created_at) VALUES ($1, $2, 'old', $3)",
           p, 3);
        keel_db_param q[] = {KEEL_DB_P_TEXT(id), KEEL_DB_P_INT(100 + i)};
        ok("INSERT INTO notification_push_sent (notification_id, token, result, at) VALUES "
           "($1, 'tok', 'delivered', $2)",
           q, 2);
    }
    assert_int_equal(app_notify(C, other, "fresh", NULL, NULL), 0);
    int64_t n;
    assert_int_equal(app_notify_prune(C, 1000, 2, &n), 0); /* a batch of 2, oldest first */
    assert_int_equal(n, 4);                                /* 2 notifications, 2 outcomes */
    assert_int_equal(count("SELECT COUNT(*) FROM notifications WHERE user_id = $1 AND "
                           "created_at < 102",
                           other),
                     0);
    assert_int_equal(app_notify_prune(C, 1000, 10, &n), 0);
    assert_int_equal(n, 6);
    assert_int_equal(app_notify_prune(C, 1000, 10, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(count("SELECT COUNT(*) FROM notifications WHERE user_id = $1", other), 1);
    assert_int_equal(count("SELECT COUNT(*) FROM notification_push_sent WHERE at < $1", "1000"), 0);
    assert_int_equal(app_notify_prune(C, 1000, 0, &n), KEEL_EINVAL);
}

/* ---------------------------------------------------------------- the gateway provider */

static void test_gateway_classify(void **state)
{
    (void)state;
    static const struct {
        int status, http;
        const char *body;
        app_push_verdict want;
    } cases[] = {
        {0, 200, "{}", APP_PUSH_DELIVERED},
        {0, 202, "", APP_PUSH_DELIVERED},
        {0, 404, "", APP_PUSH_INVALID_TOKEN},
        {0, 410, "{\"error\":\"Unregistered\"}", APP_PUSH_INVALID_TOKEN},
        {0, 400, "{\"error\":\"invalid_token\"}", APP_PUSH_INVALID_TOKEN},
        {0, 400, "{\"error\":\"BadDeviceToken\"}", APP_PUSH_INVALID_TOKEN},
        {0, 422, "{\"error\":\"DeviceNotRegistered\"}", APP_PUSH_INVALID_TOKEN},
        {0, 400, "{\"error\":\"payload too large\"}", APP_PUSH_REJECTED},
        {0, 400, "not json", APP_PUSH_REJECTED},
        {0, 401, "", APP_PUSH_REJECTED},
        {0, 403, "{\"error\":\"invalid_token\"}", APP_PUSH_INVALID_TOKEN},
        {0, 408, "", APP_PUSH_RETRY},
        {0, 429, "", APP_PUSH_RETRY},
        {0, 500, "", APP_PUSH_RETRY},
        {0, 503, "{\"error\":\"invalid_token\"}", APP_PUSH_RETRY},
        {0, 301, "", APP_PUSH_REJECTED},
        {KEEL_ETIMEDOUT, 0, "timed out", APP_PUSH_RETRY},
        {-111, 0, "refused", APP_PUSH_RETRY},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char why[200];
        app_push_verdict v =
            app_push_gateway.classify(NULL, cases[i].status, cases[i].http, cases[i].body,
                                      strlen(cases[i].body), why, sizeof(why));
        if (v != cases[i].want)
            fail_msg("case %zu (%d, %d, %s): verdict %d, want %d", i, cases[i].status,
                     cases[i].http, cases[i].body, v, cases[i].want);
    }
}

static void test_gateway_build(void **state)
{
    (void)state;
    json_t *data = json_pack("{s:i}", "room", 7);
    app_push_message m = {.notification_id = "n-1",
                          .user_id = "u",
                          .type = "chat",
                          .title = "Hi",
                          .body = "there",
                          .data = data,
                          .created_at = 0,
                          .token = "tok0123456789abcdef",
                          .platform = "ios"};
    app_push_request req;
    memset(&req, 0, sizeof(req));
    assert_int_equal(app_push_gateway.build(NULL, &m, &req), 0);
    assert_int_equal(req.nheaders, 2); /* no PUSH_GATEWAY_TOKEN: no Authorization */
    assert_true(keel_str_ieq_c(req.headers[1].name, "Idempotency-Key"));
    char h[65];
    app_sha256_hex(m.token, strlen(m.token), h);
    char want[64];
    snprintf(want, sizeof(want), "n-1:%.16s", h);
    assert_string_equal(req.idempotency_key, want);
    json_t *doc = json_loadb(req.body.data, req.body.len, 0, NULL);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "token")), m.token);
    json_t *n = json_object_get(doc, "notification");
    assert_string_equal(json_string_value(json_object_get(n, "title")), "Hi");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(n, "data"), "room")), 7);
    assert_string_equal(json_string_value(json_object_get(n, "created_at")),
                        "1970-01-01T00:00:00Z");
    json_decref(doc);
    keel_buf_free(&req.body);
    json_decref(data);
}

/* ---------------------------------------------------------------- refusals */

static void test_refusals(void **state)
{
    (void)state;
    json_t *arr = json_array();
    assert_int_equal(app_notify(C, USER, "", NULL, NULL), KEEL_EINVAL);
    assert_int_equal(app_notify(C, USER, "Upper", NULL, NULL), KEEL_EINVAL);
    assert_int_equal(app_notify(C, USER, ".dot", NULL, NULL), KEEL_EINVAL);
    assert_int_equal(app_notify(C, USER, "a b", NULL, NULL), KEEL_EINVAL);
    assert_int_equal(app_notify(C, USER, "ok", arr, NULL), KEEL_EINVAL);
    assert_int_equal(app_notify(C, USER, "ok", NULL, ""), KEEL_EINVAL);
    assert_int_equal(app_notify(C, NULL, "ok", NULL, NULL), KEEL_EINVAL);
    assert_int_equal(app_notify(NULL, USER, "ok", NULL, NULL), KEEL_EINVAL);
    assert_int_equal(app_notify(C, "no-such-user", "ok", NULL, NULL), KEEL_EDB_NOROW);
    char big[20000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    json_t *d = json_pack("{s:s}", "b", big);
    assert_int_equal(app_notify(C, USER, "ok", d, NULL), KEEL_ETOOBIG);
    json_decref(d);
    json_decref(arr);
    assert_int_equal(count("SELECT COUNT(*) FROM notifications WHERE user_id = $1 AND "
                           "type = 'ok'",
                           USER),
                     0);
    assert_true(app_notify_type_valid("order.shipped_v2-x"));
    /* a long title of multi-byte characters is cut at a character */
    char title[801] = "";
    for (int i = 0; i < 400; i++)
        strcat(title, "\xc3\xa9"); /* U+00E9 */
    json_t *td = json_pack("{s:s}", "title", title);
    app_notify_result r;
    assert_int_equal(app_notify_ex(C, USER, "long", td, NULL, &r), 0);
    assert_int_equal(r.channels, APP_NOTIFY_IN_APP | APP_NOTIFY_EMAIL);
    json_decref(td);
    char cut[200];
    td = json_pack("{s:s}", "title", "ab\xc3\xa9\ncd");
    app_notify_title(td, "t", cut, 4); /* "ab" + half of the e-acute: cut before it */
    assert_string_equal(cut, "ab");
    app_notify_title(td, "t", cut, sizeof(cut));
    assert_string_equal(cut, "ab\xc3\xa9 cd");
    app_notify_title(NULL, "the.type", cut, sizeof(cut));
    assert_string_equal(cut, "the.type");
    json_decref(td);
    assert_false(app_notify_type_valid(
        "a23456789012345678901234567890123456789012345678901234567890123456"));
}

#define TESTS                                                                                      \
    cmocka_unit_test(test_rollback_leaves_nothing), cmocka_unit_test(test_commit_once_per_key),    \
        cmocka_unit_test(test_preference_order),                                                   \
        cmocka_unit_test(test_live_hook_enqueues_after_commit_only),                               \
        cmocka_unit_test(test_gateway_classify), cmocka_unit_test(test_gateway_build),             \
        cmocka_unit_test(test_prune), cmocka_unit_test(test_refusals)

static int setup_sqlite(void **state)
{
    if (testdb_setup("/tmp/keel-test-notify.XXXXXX", "n.db", 0) < 0)
        return -1;
    return group_setup(state);
}

static int setup_pg(void **state)
{
    if (testdb_setup("/tmp/keel-test-notify.XXXXXX", NULL, 1) < 0)
        return -1;
    return group_setup(state);
}

int main(void)
{
    keel_config cfg;
    keel_config_defaults(&cfg);
    cfg.log_level = KEEL_LOG_FATAL;
    keel_log_init(&cfg);
    keel_config_close(&cfg);
    const struct CMUnitTest tests[] = {TESTS};
    int failed =
        cmocka_run_group_tests_name("notifications on SQLite", tests, setup_sqlite, group_teardown);
    if (testdb_have_pg("notifications"))
        failed += cmocka_run_group_tests_name("notifications on PostgreSQL", tests, setup_pg,
                                              group_teardown);
    keel_log_close();
    return failed;
}
