/* test_migrate.c — migrations: file names, sections, the SQL splitter,
 * checksums and `create` (no database); then up, status, down, re-up,
 * edited and missing migrations, a failing migration rolled back whole,
 * and the repository's own migrations, against SQLite always and against
 * PostgreSQL when KEEL_TEST_PG_URL is set (tests/support/with_pg.sh).
 *
 * Every database test gets a fresh database (a temporary SQLite file, or a
 * PostgreSQL database created for it and dropped after) and a temporary
 * MIGRATIONS_DIR written by the test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "keel/log.h"
#include "store/migrate_internal.h"

/* ---------------------------------------------------------------- files */

typedef struct name_case {
    const char *base;
    int ok;
    int64_t version;
    const char *name;
} name_case;

static const name_case name_cases[] = {
    {"0001_demo_items.sql", 1, 1, "demo_items"},
    {"42_x.sql", 1, 42, "x"},
    {"20240101120000_add-users.sql", 1, 20240101120000LL, "add-users"},
    {"0001_.sql", 0, 0, NULL},
    {"_x.sql", 0, 0, NULL},
    {"0001-x.sql", 0, 0, NULL},
    {"0001_x.SQL", 0, 0, NULL},
    {"0001_x y.sql", 0, 0, NULL},
    {"0001_x.sql.bak", 0, 0, NULL},
    {"1234567890123456789_x.sql", 0, 0, NULL}, /* 19 digits: past int64 safety */
    {"abc_x.sql", 0, 0, NULL},
};

static void test_filenames(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(name_cases) / sizeof(name_cases[0]); i++) {
        const name_case *c = &name_cases[i];
        int64_t v = -1;
        char *name = NULL;
        int rc = keel__mig_parse_filename(c->base, &v, &name);
        if (!c->ok) {
            if (rc != KEEL_EMIGRATE_FORMAT)
                fail_msg("%s: accepted", c->base);
            continue;
        }
        if (rc != 0 || v != c->version || strcmp(name, c->name) != 0)
            fail_msg("%s: rc %d version %lld name %s", c->base, rc, (long long)v,
                     name ? name : "(null)");
        free(name);
    }
}

typedef struct parse_case {
    const char *text;
    int ok;
    size_t nup, ndown;
    const char *err; /* a piece of the message */
} parse_case;

static const parse_case parse_cases[] = {
    {"-- migrate:up\nCREATE TABLE a (x INT);\n-- migrate:down\nDROP TABLE a;\n", 1, 1, 1, NULL},
    {"-- header comment\n\n--migrate:up  \r\nSELECT 1;SELECT 2\n--  migrate:down\n", 1, 2, 0, NULL},
    {"-- migrate:up\n-- migrate:down\n", 1, 0, 0, NULL},
    {"CREATE TABLE a (x INT);\n-- migrate:up\n-- migrate:down\n", 0, 0, 0, "line 1: SQL before"},
    {"-- migrate:up\nSELECT 1;\n", 0, 0, 0, "no -- migrate:down"},
    {"SELECT 1;\n", 0, 0, 0, "SQL before"},
    {"", 0, 0, 0, "no -- migrate:up"},
    {"-- migrate:down\n-- migrate:up\n", 0, 0, 0, "down before"},
    {"-- migrate:up\n-- migrate:up\n-- migrate:down\n", 0, 0, 0, "second -- migrate:up"},
    {"-- migrate:up\n-- migrate:down\n-- migrate:down\n", 0, 0, 0, "second -- migrate:down"},
    {"-- migrate:up\n-- migrate:dwon\n", 0, 0, 0, "line 2: unknown marker"},
    {"-- migrate:up\nBEGIN;\nCREATE TABLE a (x INT);\nCOMMIT;\n-- migrate:down\n", 0, 0, 0,
     "line 2: BEGIN"},
    {"-- migrate:up\n-- migrate:down\nDROP TABLE a;\nrollback;\n", 0, 0, 0, "line 4: ROLLBACK"},
    {"-- migrate:up\nSELECT 'abc;\n-- migrate:down\n", 0, 0, 0, "line 2: unterminated"},
};

static void test_sections(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
        const parse_case *c = &parse_cases[i];
        keel__mig_file f = {.text = (char *)c->text, .len = strlen(c->text), .label = "t.sql"};
        char err[256] = "";
        int rc = keel__mig_parse(&f, 0, err, sizeof(err));
        if (c->ok && (rc != 0 || f.nup != c->nup || f.ndown != c->ndown))
            fail_msg("case %zu: rc %d nup %zu ndown %zu (%s)", i, rc, f.nup, f.ndown, err);
        if (!c->ok && (rc != KEEL_EMIGRATE_FORMAT || !strstr(err, c->err)))
            fail_msg("case %zu: rc %d, message \"%s\" lacks \"%s\"", i, rc, err, c->err);
    }
}

/* ---------------------------------------------------------------- splitter */

typedef struct split_case {
    int pg;
    const char *sql;
    int rc;
    const char *want;  /* statements joined with '|', each trimmed by the splitter */
    const char *lines; /* start lines joined with ',' */
} split_case;

static const split_case split_cases[] = {
    {0, "SELECT 1; SELECT 2;", 0, "SELECT 1|SELECT 2", "1,1"},
    {0, "SELECT 1", 0, "SELECT 1", "1"},
    {0, ";;  ;\n-- only a comment;\n/* block; */\n", 0, "", ""},
    {0, "INSERT INTO t VALUES ('a;b', \"c;d\", `e;f`, [g;h]);\nSELECT 'it''s;';", 0,
     "INSERT INTO t VALUES ('a;b', \"c;d\", `e;f`, [g;h])|SELECT 'it''s;'", "1,2"},
    {0, "-- c;\nSELECT 1 -- trailing; comment\n;\n\n/* x;\n y */ SELECT 2;", 0,
     "SELECT 1 -- trailing; comment\n|SELECT 2", "2,6"},
    {0,
     "CREATE TRIGGER t AFTER INSERT ON a BEGIN\n  UPDATE b SET n = n + 1;\n"
     "  UPDATE c SET k = CASE WHEN 1 THEN 2 END;\nEND;\nSELECT 3;",
     0,
     "CREATE TRIGGER t AFTER INSERT ON a BEGIN\n  UPDATE b SET n = n + 1;\n"
     "  UPDATE c SET k = CASE WHEN 1 THEN 2 END;\nEND|SELECT 3",
     "1,5"},
    {0, "CREATE TABLE a (begin INT, x INT); SELECT 1;", 0,
     "CREATE TABLE a (begin INT, x INT)|SELECT 1", "1,1"},
    {0, "SELECT 'open;", KEEL_EMIGRATE_FORMAT, NULL, NULL},
    {0, "SELECT 1;\n/* open", KEEL_EMIGRATE_FORMAT, NULL, NULL},
    {1,
     "CREATE FUNCTION f() RETURNS int AS $$ BEGIN RETURN 1; END; $$ LANGUAGE plpgsql;\n"
     "SELECT $tag$ a;$$; $tag$, $1;",
     0,
     "CREATE FUNCTION f() RETURNS int AS $$ BEGIN RETURN 1; END; $$ LANGUAGE plpgsql|"
     "SELECT $tag$ a;$$; $tag$, $1",
     "1,2"},
    {1, "SELECT E'it\\'s;', 'x';SELECT 2", 0, "SELECT E'it\\'s;', 'x'|SELECT 2", "1,1"},
    {1, "/* outer /* inner; */ still; */ SELECT 1;", 0, "SELECT 1", "1"},
    {1,
     "CREATE OR REPLACE FUNCTION g() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n"
     "  SELECT 1;\n  SELECT 2;\nEND;\nSELECT 3;",
     0,
     "CREATE OR REPLACE FUNCTION g() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n"
     "  SELECT 1;\n  SELECT 2;\nEND|SELECT 3",
     "1,6"},
    {1, "SELECT [a;b]; SELECT 2", 0, "SELECT [a|b]|SELECT 2", NULL}, /* no [] quoting in pg */
    {1, "SELECT $$ open;", KEEL_EMIGRATE_FORMAT, NULL, NULL},
    {0, "SELECT a$b; SELECT 2", 0, "SELECT a$b|SELECT 2", "1,1"},
};

typedef struct collected {
    char text[1024];
    char lines[128];
    size_t n;
} collected;

static int collect(const char *sql, size_t len, unsigned line, void *arg)
{
    collected *c = arg;
    size_t tl = strlen(c->text), ll = strlen(c->lines);
    snprintf(c->text + tl, sizeof(c->text) - tl, "%s%.*s", c->n ? "|" : "", (int)len, sql);
    snprintf(c->lines + ll, sizeof(c->lines) - ll, "%s%u", c->n ? "," : "", line);
    c->n++;
    return 0;
}

static void test_split(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(split_cases) / sizeof(split_cases[0]); i++) {
        const split_case *c = &split_cases[i];
        collected got = {{0}, {0}, 0};
        int rc = keel__sql_split(c->sql, strlen(c->sql), c->pg, collect, &got, NULL);
        if (rc != c->rc)
            fail_msg("case %zu: rc %d, want %d", i, rc, c->rc);
        if (c->want && strcmp(got.text, c->want) != 0)
            fail_msg("case %zu: got [%s]\nwant [%s]", i, got.text, c->want);
        if (c->lines && strcmp(got.lines, c->lines) != 0)
            fail_msg("case %zu: lines %s, want %s", i, got.lines, c->lines);
    }
}

static void test_split_bad_line(void **state)
{
    (void)state;
    collected got = {{0}, {0}, 0};
    unsigned bad = 0;
    assert_int_equal(keel__sql_split("SELECT 1;\n\nSELECT 'x", 20, 0, collect, &got, &bad),
                     KEEL_EMIGRATE_FORMAT);
    assert_int_equal(bad, 3);
}

static void test_sha256(void **state)
{
    (void)state;
    char hex[65];
    keel__sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    keel__sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

/* ---------------------------------------------------------------- fixture */

typedef struct fixture {
    char dir[64];  /* the test's temporary directory */
    char mdir[96]; /* dir/migrations: the MIGRATIONS_DIR */
    char url[512];
    char pgdb[64]; /* the PostgreSQL database made for the test */
    keel_migrator *m;
} fixture;

static int pg_mode; /* which backend the database group runs on */
static unsigned pg_seq;

static void write_text(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    assert_int_equal(fclose(fp), 0);
}

/* Writes NAME into both drivers' directories. */
static void put(fixture *f, const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/sqlite/%s", f->mdir, name);
    write_text(path, text);
    snprintf(path, sizeof(path), "%s/postgres/%s", f->mdir, name);
    write_text(path, text);
}

static void del(fixture *f, const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/sqlite/%s", f->mdir, name);
    unlink(path);
    snprintf(path, sizeof(path), "%s/postgres/%s", f->mdir, name);
    unlink(path);
}

/* url with its database name replaced. */
static void pg_url_for(char *out, size_t cap, const char *base, const char *db)
{
    const char *slash = strrchr(base, '/');
    const char *q = strchr(slash, '?');
    snprintf(out, cap, "%.*s/%s%s", (int)(slash - base), base, db, q ? q : "");
}

static void admin_exec(const char *sql)
{
    keel_db_conn *c = NULL;
    char err[256];
    if (keel_db_connect(getenv("KEEL_TEST_PG_URL"), NULL, &c, err, sizeof(err)) < 0)
        fail_msg("cannot connect to KEEL_TEST_PG_URL: %s", err);
    if (keel_db_exec(c, sql, NULL, 0, NULL) < 0)
        fail_msg("%s: %s", sql, keel_db_errmsg(c));
    keel_db_disconnect(c);
}

static keel_migrator *migrator(fixture *f)
{
    keel_migrate_free(f->m);
    keel_migrate_opts o = {.url = f->url, .dir = f->mdir};
    f->m = keel_migrate_new(&o);
    return f->m;
}

static int db_setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    strcpy(f->dir, "/tmp/keel-test-migrate-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->mdir, sizeof(f->mdir), "%s/migrations", f->dir);
    char sub[160];
    assert_int_equal(mkdir(f->mdir, 0755), 0);
    snprintf(sub, sizeof(sub), "%s/sqlite", f->mdir);
    assert_int_equal(mkdir(sub, 0755), 0);
    snprintf(sub, sizeof(sub), "%s/postgres", f->mdir);
    assert_int_equal(mkdir(sub, 0755), 0);
    if (pg_mode) {
        char sql[128];
        snprintf(f->pgdb, sizeof(f->pgdb), "keel_migrate_%d_%u", (int)getpid(), ++pg_seq);
        snprintf(sql, sizeof(sql), "CREATE DATABASE %s", f->pgdb);
        admin_exec(sql);
        pg_url_for(f->url, sizeof(f->url), getenv("KEEL_TEST_PG_URL"), f->pgdb);
    } else {
        snprintf(f->url, sizeof(f->url), "sqlite:%s/test.db", f->dir);
    }
    *state = f;
    return 0;
}

static int db_teardown(void **state)
{
    fixture *f = *state;
    keel_migrate_free(f->m);
    if (pg_mode) {
        char sql[128];
        snprintf(sql, sizeof(sql), "DROP DATABASE %s", f->pgdb);
        admin_exec(sql);
    }
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static int64_t scalar(keel_db_conn *c, const char *sql, const char *arg)
{
    keel_db_rows *rows = NULL;
    keel_db_param p = KEEL_DB_P_TEXT(arg ? arg : "");
    if (keel_db_query(c, sql, &p, arg ? 1 : 0, &rows) < 0)
        fail_msg("%s: %s", sql, keel_db_errmsg(c));
    assert_int_equal(keel_db_rows_next(rows), 1);
    int64_t v = keel_db_get_int(rows, 0);
    while (keel_db_rows_next(rows) > 0) {
    }
    keel_db_rows_free(rows);
    return v;
}

static int has_table(fixture *f, const char *name)
{
    keel_db_conn *c = keel_migrate_conn(f->m);
    assert_non_null(c);
    return (int)scalar(c,
                       pg_mode ? "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' "
                                 "AND tablename = $1"
                               : "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                                 "AND name = $1",
                       name);
}

static int64_t count_rows(fixture *f, const char *table)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", table);
    return scalar(keel_migrate_conn(f->m), sql, NULL);
}

static const char *const M1 = "-- migrate:up\nCREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT);\n"
                              "-- migrate:down\nDROP TABLE a;\n";
static const char *const M2 = "-- second\n-- migrate:up\n"
                              "CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT NOT NULL);\n"
                              "INSERT INTO b (id, v) VALUES (1, 'one;'), (2, 'two');\n"
                              "-- migrate:down\nDROP TABLE b;\n";

/* The status rows as "0001:applied,0002:pending". */
static void status_string(fixture *f, char *out, size_t cap)
{
    const keel_migration_state *st;
    size_t n;
    static const char *const words[] = {"pending", "applied", "edited", "missing"};
    assert_int_equal(keel_migrate_status(f->m, &st, &n), 0);
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(out);
        snprintf(out + l, cap - l, "%s%04lld:%s", i ? "," : "", (long long)st[i].version,
                 words[st[i].status]);
        if (st[i].status != KEEL_MIGRATION_PENDING && strlen(st[i].applied_at) != 20)
            fail_msg("applied_at \"%s\" is not YYYY-MM-DDTHH:MM:SSZ", st[i].applied_at);
        if (st[i].status == KEEL_MIGRATION_PENDING && *st[i].applied_at)
            fail_msg("a pending migration has applied_at %s", st[i].applied_at);
    }
}

/* ---------------------------------------------------------------- database */

static void test_up_status_down_reup(void **state)
{
    fixture *f = *state;
    char st[256];
    size_t n = 99;
    put(f, "0001_a.sql", M1);
    put(f, "0002_b.sql", M2);
    migrator(f);
    status_string(f, st, sizeof(st));
    assert_string_equal(st, "0001:pending,0002:pending");
    assert_int_equal(has_table(f, "schema_migrations"), 0); /* status creates nothing */

    assert_int_equal(keel_migrate_up(f->m, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(count_rows(f, "b"), 2);
    status_string(f, st, sizeof(st));
    assert_string_equal(st, "0001:applied,0002:applied");
    assert_int_equal(keel_migrate_up(f->m, &n), 0); /* nothing left */
    assert_int_equal(n, 0);

    assert_int_equal(keel_migrate_down(f->m, 1, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(has_table(f, "b"), 0);
    assert_int_equal(has_table(f, "a"), 1);
    status_string(f, st, sizeof(st));
    assert_string_equal(st, "0001:applied,0002:pending");

    migrator(f); /* a new process, same database */
    assert_int_equal(keel_migrate_up(f->m, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(count_rows(f, "schema_migrations"), 2);

    assert_int_equal(keel_migrate_down(f->m, 10, &n), 0); /* more than there are: all */
    assert_int_equal(n, 2);
    assert_int_equal(has_table(f, "a") + has_table(f, "b"), 0);
    assert_int_equal(count_rows(f, "schema_migrations"), 0);
    assert_int_equal(keel_migrate_down(f->m, 1, &n), 0); /* nothing to roll back */
    assert_int_equal(n, 0);
}

static void test_checksum_mismatch_refused(void **state)
{
    fixture *f = *state;
    char st[256];
    put(f, "0001_a.sql", M1);
    migrator(f);
    assert_int_equal(keel_migrate_up(f->m, NULL), 0);

    put(f, "0001_a.sql",
        "-- migrate:up\nCREATE TABLE a (id INTEGER PRIMARY KEY, w TEXT);\n"
        "-- migrate:down\nDROP TABLE a;\n");
    put(f, "0002_b.sql", M2);
    migrator(f);
    size_t n = 99;
    assert_int_equal(keel_migrate_up(f->m, &n), KEEL_EMIGRATE_EDITED);
    assert_int_equal(n, 0);
    assert_non_null(strstr(keel_migrate_errmsg(f->m), "0001_a.sql"));
    assert_non_null(strstr(keel_migrate_errmsg(f->m), "edited"));
    assert_int_equal(has_table(f, "b"), 0); /* refused before any change */
    assert_int_equal(keel_migrate_down(f->m, 1, NULL), KEEL_EMIGRATE_EDITED);
    assert_int_equal(has_table(f, "a"), 1);
    status_string(f, st, sizeof(st));
    assert_string_equal(st, "0001:edited,0002:pending");
}

static void test_missing_migration_refused(void **state)
{
    fixture *f = *state;
    char st[256];
    put(f, "0001_a.sql", M1);
    put(f, "0002_b.sql", M2);
    migrator(f);
    assert_int_equal(keel_migrate_up(f->m, NULL), 0);
    del(f, "0002_b.sql");
    put(f, "0003_c.sql",
        "-- migrate:up\nCREATE TABLE c (id INTEGER);\n-- migrate:down\n"
        "DROP TABLE c;\n");
    migrator(f);
    assert_int_equal(keel_migrate_up(f->m, NULL), KEEL_EMIGRATE_MISSING);
    assert_non_null(strstr(keel_migrate_errmsg(f->m), "0002_b"));
    assert_int_equal(has_table(f, "c"), 0);
    status_string(f, st, sizeof(st));
    assert_string_equal(st, "0001:applied,0002:missing,0003:pending");
}

static void test_failing_migration_rolls_back(void **state)
{
    fixture *f = *state;
    char st[256];
    size_t n = 99;
    put(f, "0001_a.sql", M1);
    /* the table and the first rows would exist if the transaction leaked */
    put(f, "0002_bad.sql",
        "-- migrate:up\nCREATE TABLE c (id INTEGER PRIMARY KEY);\n"
        "INSERT INTO c (id) VALUES (1);\n"
        "INSERT INTO no_such_table (id) VALUES (2);\n"
        "-- migrate:down\nDROP TABLE c;\n");
    put(f, "0003_b.sql", M2);
    migrator(f);
    int rc = keel_migrate_up(f->m, &n);
    assert_true(rc < 0);
    assert_int_equal(rc, KEEL_EDB_SQL);
    assert_int_equal(n, 1);
    const char *msg = keel_migrate_errmsg(f->m);
    assert_non_null(strstr(msg, "0002_bad.sql"));
    assert_non_null(strstr(msg, "line 4"));
    assert_int_equal(has_table(f, "c"), 0);
    assert_int_equal(has_table(f, "b"), 0); /* stops at the failure */
    status_string(f, st, sizeof(st));
    assert_string_equal(st, "0001:applied,0002:pending,0003:pending");

    /* fixed: the same file name, never applied, so no checksum to match */
    put(f, "0002_bad.sql",
        "-- migrate:up\nCREATE TABLE c (id INTEGER PRIMARY KEY);\n"
        "-- migrate:down\nDROP TABLE c;\n");
    migrator(f);
    assert_int_equal(keel_migrate_up(f->m, &n), 0);
    assert_int_equal(n, 2);
}

static void test_irreversible_and_format_errors(void **state)
{
    fixture *f = *state;
    put(f, "0001_a.sql", M1);
    put(f, "0002_oneway.sql",
        "-- migrate:up\nCREATE TABLE d (id INTEGER);\n-- migrate:down\n"
        "-- nothing to undo\n");
    migrator(f);
    assert_int_equal(keel_migrate_up(f->m, NULL), 0);
    assert_int_equal(keel_migrate_down(f->m, 2, NULL), KEEL_EMIGRATE_IRREVERSIBLE);
    assert_int_equal(has_table(f, "a") + has_table(f, "d"), 2); /* nothing rolled back */

    /* a malformed file anywhere stops the run before the database */
    put(f, "0003_typo.sql", "-- migrate:up\nSELECT 1;\n-- migrate:dwon\n");
    migrator(f);
    assert_int_equal(keel_migrate_up(f->m, NULL), KEEL_EMIGRATE_FORMAT);
    assert_non_null(strstr(keel_migrate_errmsg(f->m), "0003_typo.sql"));
    del(f, "0003_typo.sql");
    put(f, "0003_x.sql", M1);
    put(f, "03_y.sql", M1);
    migrator(f);
    assert_int_equal(keel_migrate_up(f->m, NULL), KEEL_EMIGRATE_FORMAT);
    assert_non_null(strstr(keel_migrate_errmsg(f->m), "the same version"));
}

/* Semicolons inside bodies, on the real databases: a SQLite trigger; a
 * PL/pgSQL function in dollar quotes and a SQL-standard function body. */
static void test_bodies_with_semicolons(void **state)
{
    fixture *f = *state;
    char path[256];
    snprintf(path, sizeof(path), "%s/sqlite/0001_bodies.sql", f->mdir);
    write_text(path, "-- migrate:up\n"
                     "CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT);\n"
                     "CREATE TABLE n (k INTEGER);\nINSERT INTO n VALUES (0);\n"
                     "CREATE TRIGGER count_a AFTER INSERT ON a BEGIN\n"
                     "  UPDATE n SET k = k + CASE WHEN NEW.v = 'x;y' THEN 10 ELSE 1 END;\n"
                     "  UPDATE n SET k = k + 100;\n"
                     "END;\n"
                     "INSERT INTO a (v) VALUES ('x;y'), ('z');\n"
                     "-- migrate:down\nDROP TABLE a;\nDROP TABLE n;\n");
    snprintf(path, sizeof(path), "%s/postgres/0001_bodies.sql", f->mdir);
    write_text(path,
               "-- migrate:up\n"
               "CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT);\n"
               "CREATE TABLE n (k INTEGER);\nINSERT INTO n VALUES (0);\n"
               "CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $body$\n"
               "BEGIN\n  UPDATE n SET k = k + CASE WHEN NEW.v = 'x;y' THEN 10 ELSE 1 END;\n"
               "  UPDATE n SET k = k + 100;\n  RETURN NEW;\nEND;\n$body$;\n"
               "CREATE TRIGGER count_a AFTER INSERT ON a FOR EACH ROW EXECUTE FUNCTION bump();\n"
               "CREATE FUNCTION two() RETURNS int LANGUAGE sql\n"
               "BEGIN ATOMIC\n  SELECT 1;\n  SELECT 2;\nEND;\n"
               "INSERT INTO a (id, v) VALUES (1, E'x;y'), (2, 'z');\n"
               "-- migrate:down\nDROP TABLE a;\nDROP TABLE n;\n"
               "DROP FUNCTION bump;\nDROP FUNCTION two;\n");
    migrator(f);
    assert_int_equal(keel_migrate_up(f->m, NULL), 0);
    assert_int_equal(count_rows(f, "a"), 2);
    assert_int_equal(scalar(keel_migrate_conn(f->m), "SELECT k FROM n", NULL), 211);
    if (pg_mode)
        assert_int_equal(scalar(keel_migrate_conn(f->m), "SELECT two()", NULL), 2);
    assert_int_equal(keel_migrate_down(f->m, 1, NULL), 0);
    assert_int_equal(has_table(f, "a") + has_table(f, "n"), 0);
}

/* The compiled-in path: a keel_migration table instead of a directory. */
static void test_embedded_set(void **state)
{
    fixture *f = *state;
    static const keel_migration set[] = {
        {"sqlite", 1, "a",
         "-- migrate:up\nCREATE TABLE a (id INTEGER);\n-- migrate:down\n"
         "DROP TABLE a;\n"},
        {"postgres", 1, "a",
         "-- migrate:up\nCREATE TABLE a (id INTEGER);\n-- migrate:down\n"
         "DROP TABLE a;\n"},
        {"sqlite", 2, "b",
         "-- migrate:up\nCREATE TABLE b (id INTEGER);\n-- migrate:down\n"
         "DROP TABLE b;\n"},
        {"postgres", 2, "b",
         "-- migrate:up\nCREATE TABLE b (id INTEGER);\n-- migrate:down\n"
         "DROP TABLE b;\n"},
    };
    keel_migrate_opts o = {.url = f->url, .migrations = set, .nmigrations = 4};
    f->m = keel_migrate_new(&o);
    size_t n = 0;
    assert_int_equal(keel_migrate_up(f->m, &n), 0);
    assert_int_equal(n, 2);
    const keel_migration_state *st;
    assert_int_equal(keel_migrate_status(f->m, &st, &n), 0);
    assert_int_equal(n, 2);
    assert_non_null(strstr(st[1].file, "0002_b.sql (embedded)"));

    /* the same bytes read from a directory hash the same */
    put(f, "0001_a.sql", set[0].text);
    put(f, "0002_b.sql", set[2].text);
    migrator(f);
    assert_int_equal(keel_migrate_up(f->m, &n), 0);
    assert_int_equal(n, 0);
}

/* migrations/ of this repository: the demo items table and its seed. */
static void test_repository_migrations(void **state)
{
    fixture *f = *state;
    struct stat sb;
    if (stat("migrations/sqlite", &sb) != 0)
        skip(); /* not run from the repository root */
    keel_migrate_opts o = {.url = f->url, .dir = "migrations"};
    f->m = keel_migrate_new(&o);
    assert_int_equal(keel_migrate_up(f->m, NULL), 0);
    assert_int_equal(count_rows(f, "items"), 10000);
    keel_db_conn *c = keel_migrate_conn(f->m);
    assert_int_equal(scalar(c,
                            "SELECT count(*) FROM items WHERE price_cents BETWEEN 100 AND 9999 "
                            "AND name <> '' AND created_at IS NOT NULL",
                            NULL),
                     10000);
    assert_int_equal(scalar(c, "SELECT min(id) + max(id) FROM items", NULL), 10001);
    assert_int_equal(keel_migrate_down(f->m, 100, NULL), 0);
    assert_int_equal(has_table(f, "items"), 0);
}

/* ---------------------------------------------------------------- create */

static void test_create(void **state)
{
    (void)state;
    char dir[64] = "/tmp/keel-test-create-XXXXXX", sub[128], err[256];
    assert_non_null(mkdtemp(dir));
    snprintf(sub, sizeof(sub), "%s/m", dir);
    int64_t v = 0;
    assert_int_equal(keel_migrate_create(sub, "add_users", &v, err, sizeof(err)), 0);
    assert_int_equal(v, 1);
    /* the next number is above the highest of either driver */
    char path[256];
    snprintf(path, sizeof(path), "%s/postgres/0007_x.sql", sub);
    write_text(path, M1);
    assert_int_equal(keel_migrate_create(sub, "second", &v, err, sizeof(err)), 0);
    assert_int_equal(v, 8);
    snprintf(path, sizeof(path), "%s/sqlite/0008_second.sql", sub);
    keel__mig_file f = {.label = path};
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    FILE *fp = fopen(path, "r");
    char text[128] = "";
    size_t n = fread(text, 1, sizeof(text) - 1, fp);
    fclose(fp);
    f.text = text;
    f.len = n;
    assert_int_equal(keel__mig_parse(&f, 0, err, sizeof(err)), 0); /* a valid, empty file */
    assert_int_equal(keel_migrate_create(sub, "bad name", &v, err, sizeof(err)), KEEL_EINVAL);
    assert_int_equal(keel_migrate_create(sub, "", &v, err, sizeof(err)), KEEL_EINVAL);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* ---------------------------------------------------------------- main */

#define DB_TEST(fn) cmocka_unit_test_setup_teardown(fn, db_setup, db_teardown)

int main(void)
{
    /* errors are expected by the tests: keep the output to failures */
    keel_config cfg;
    keel_config_defaults(&cfg);
    cfg.log_level = KEEL_LOG_FATAL;
    keel_log_init(&cfg);
    keel_config_close(&cfg);

    const struct CMUnitTest files[] = {
        cmocka_unit_test(test_filenames), cmocka_unit_test(test_sections),
        cmocka_unit_test(test_split),     cmocka_unit_test(test_split_bad_line),
        cmocka_unit_test(test_sha256),    cmocka_unit_test(test_create),
    };
    const struct CMUnitTest db[] = {
        DB_TEST(test_up_status_down_reup),
        DB_TEST(test_checksum_mismatch_refused),
        DB_TEST(test_missing_migration_refused),
        DB_TEST(test_failing_migration_rolls_back),
        DB_TEST(test_irreversible_and_format_errors),
        DB_TEST(test_bodies_with_semicolons),
        DB_TEST(test_embedded_set),
        DB_TEST(test_repository_migrations),
    };
    int failed = cmocka_run_group_tests_name("migrate files", files, NULL, NULL);
    pg_mode = 0;
    failed += cmocka_run_group_tests_name("migrate sqlite", db, NULL, NULL);
    if (getenv("KEEL_TEST_PG_URL") && *getenv("KEEL_TEST_PG_URL")) {
        pg_mode = 1;
        failed += cmocka_run_group_tests_name("migrate postgres", db, NULL, NULL);
    } else {
        printf("migrate postgres: skipped (KEEL_TEST_PG_URL not set; "
               "run under tests/support/with_pg.sh)\n");
    }
    keel_log_close();
    return failed ? 1 : 0;
}
