/* testdb.h — the database suites' shared parts (tests/unit/store): each
 * group runs on SQLite in a temporary directory and again on PostgreSQL
 * when KEEL_TEST_PG_URL is set (`make unit-db`), against an in-process
 * server with metrics, health and the database pool. Include after
 * <cmocka.h> and testsrv.h. */
#ifndef KEEL_TEST_TESTDB_H
#define KEEL_TEST_TESTDB_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keel/keel.h"

/* The group's database: its URL, 1 on PostgreSQL, and its temporary directory. */
static __attribute__((unused)) char g_url[1024];
static __attribute__((unused)) int g_pg;
static __attribute__((unused)) char g_dir[256];

/* Group setup: a new directory g_dir from tmpl (ending in XXXXXX) and g_url,
 * KEEL_TEST_PG_URL when pg, else sqlite:g_dir/sqlite_file. 0, or -1. */
static __attribute__((unused)) int testdb_setup(const char *tmpl, const char *sqlite_file, int pg)
{
    snprintf(g_dir, sizeof(g_dir), "%s", tmpl);
    if (!mkdtemp(g_dir))
        return -1;
    if (pg)
        snprintf(g_url, sizeof(g_url), "%s", getenv("KEEL_TEST_PG_URL"));
    else
        snprintf(g_url, sizeof(g_url), "sqlite:%s/%s", g_dir, sqlite_file);
    g_pg = pg;
    return 0;
}

/* Group teardown: removes g_dir and everything in it. */
static __attribute__((unused)) int testdb_teardown(void **state)
{
    (void)state;
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* 1 when KEEL_TEST_PG_URL is set; else says that `<name> on PostgreSQL` is skipped. */
static __attribute__((unused)) int testdb_have_pg(const char *name)
{
    const char *pg = getenv("KEEL_TEST_PG_URL");
    if (pg && *pg)
        return 1;
    printf("[  SKIPPED ] %s on PostgreSQL: KEEL_TEST_PG_URL is not set "
           "(`make unit-db` runs this group against a throw-away PostgreSQL 15)\n",
           name);
    return 0;
}

/* Points cfg's database at url with the pool's bounds; returns the options for more. */
static __attribute__((unused)) keel_db_options *testdb_options(keel_config *cfg, const char *url,
                                                               unsigned pool_max, unsigned pool_min,
                                                               uint64_t queue_max)
{
    keel_db_options *dbo = keel_config_edit(cfg, &keel_db_config);
    keel_free(dbo->database_url);
    dbo->database_url = keel_strdup(url);
    dbo->db_pool_max = pool_max;
    dbo->db_pool_min = pool_min;
    dbo->db_queue_max = queue_max;
    return dbo;
}

/* A server with metrics and health, the database opened on it. */
typedef struct testdb_srv {
    keel_server *s;
    keel_metrics *m;
    keel_health *h;
} testdb_srv;

/* testsrv_new(cfg), metrics, health, and keel_db_open into *db; cfg stays the caller's. */
static __attribute__((unused)) testdb_srv testdb_open(const keel_config *cfg, keel_db **db)
{
    testdb_srv v;
    v.s = testsrv_new(cfg);
    v.m = keel_metrics_new(keel_server_workers(v.s));
    v.h = keel_health_new();
    assert_int_equal(keel_db_open(db, v.s, cfg, v.m, v.h), 0);
    return v;
}

/* Drains v (every loop closed) and frees it with *db; db_first: keel_db_close
 * before keel_server_free, as an app's teardown does (the pool threads still
 * hold the keel_db and free it last). The log stays open. */
static __attribute__((unused)) void testdb_close(testdb_srv v, keel_db **db, int db_first)
{
    testsrv_drain(v.s);
    if (db_first)
        keel_db_close(*db);
    keel_server_free(v.s); /* joins the pool threads: they close their connections */
    if (!db_first)
        keel_db_close(*db);
    *db = NULL;
    keel_health_free(v.h);
    keel_metrics_free(v.m);
}

/* A gauge of v's metrics (db_pool_waiting, ...) as rendered, or -1. */
static __attribute__((unused)) int testdb_gauge(testdb_srv v, const char *name)
{
    keel_buf mb = {0};
    keel_metrics_render(v.m, &mb);
    keel_buf_append(&mb, "", 1);
    char key[128];
    snprintf(key, sizeof(key), "\n%s ", name);
    const char *p = strstr(mb.data, key);
    int val = p ? atoi(p + strlen(key)) : -1;
    keel_buf_free(&mb);
    return val;
}

/* Waits (up to 5 s) until a gauge reads want; asserts it does. */
static __attribute__((unused)) void testdb_wait_gauge(testdb_srv v, const char *name, int want)
{
    uint64_t t0 = keel_now_ms();
    while (testdb_gauge(v, name) != want && keel_now_ms() - t0 < 5000)
        usleep(5 * 1000);
    assert_int_equal(testdb_gauge(v, name), want);
}

#endif
