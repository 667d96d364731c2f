/* migrate.c — applying and rolling back migrations.
 *
 * One run (up or down):
 *   1. read and check every file of the driver's set (migrate_file.c);
 *   2. connect on the calling thread (statement timeout off: a migration
 *      may legitimately run for minutes);
 *   3. PostgreSQL: take a session advisory lock with keel's fixed key, so a
 *      second instance starting at the same time waits here, then sees the
 *      migrations the first applied;
 *   4. create schema_migrations if needed, read it, and refuse before any
 *      change when an applied migration's file was edited or is gone;
 *   5. each migration: BEGIN (SQLite: BEGIN IMMEDIATE, which takes the
 *      write lock at once and waits for it under busy_timeout), check
 *      again that it is still pending (another SQLite process may have
 *      applied it while we waited), its statements, its schema_migrations
 *      row, COMMIT. Any failure rolls the whole migration back.
 * The lock goes with the session, so a crashed instance never leaves it
 * held.
 */
#include "store/migrate_internal.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "keel/log.h"

/* "keelmigr" as a big-endian int64: the advisory lock key of keel's
 * migrations. Fixed, so every instance of every keel version agrees. */
#define LOCK_KEY "7738703051072563058"

/* How long a SQLite migrator waits for another process's write lock. */
#define SQLITE_BUSY_MS "600000"

typedef struct dialect {
    const char *begin;
    const char *table_exists; /* one row: 1 or 0 */
    const char *create_table;
    const char *select_applied; /* version, name, checksum, applied_at as text */
} dialect;

static const dialect sqlite_dialect = {
    .begin = "BEGIN IMMEDIATE",
    .table_exists = "SELECT count(*) FROM sqlite_master "
                    "WHERE type = 'table' AND name = 'schema_migrations'",
    .create_table = "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, "
                    "applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')))",
    .select_applied = "SELECT version, name, checksum, applied_at FROM schema_migrations "
                      "ORDER BY version",
};

static const dialect pg_dialect = {
    .begin = "BEGIN",
    /* to_regclass resolves through search_path, as the queries below do */
    .table_exists = "SELECT CASE WHEN to_regclass('schema_migrations') IS NULL "
                    "THEN 0 ELSE 1 END",
    .create_table = "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    "version BIGINT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, "
                    "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    .select_applied = "SELECT version, name, checksum, "
                      "to_char(applied_at AT TIME ZONE 'UTC', "
                      "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
                      "FROM schema_migrations ORDER BY version",
};

typedef struct applied_row {
    int64_t version;
    char *name;
    char *checksum;
    char *applied_at;
} applied_row;

struct keel_migrator {
    keel_migrate_opts o;
    keel_config cfg; /* a copy of o.cfg (or the defaults), its db options changed */
    const char *driver;
    const dialect *sql;
    int pg;
    keel__mig_file *files;
    size_t nfiles;
    int loaded;
    keel_db_conn *conn;
    int locked;
    applied_row *applied;
    size_t napplied;
    keel_migration_state *states;
    char err[1024];
};

const char *keel_migrate_strerror(int err)
{
    switch (err) {
#define KEEL_MIGRATE_ERR_CASE(name, val, msg)                                                      \
    case KEEL_E##name:                                                                             \
        return msg;
        KEEL_MIGRATE_ERRNO_MAP(KEEL_MIGRATE_ERR_CASE)
#undef KEEL_MIGRATE_ERR_CASE
    }
    if (err <= -20100 && err > -20200)
        return keel_db_strerror(err);
    return keel_strerror(err);
}

const char *keel_migrate_driver(const char *url)
{
    if (url && (!strncmp(url, "postgres://", 11) || !strncmp(url, "postgresql://", 13)))
        return "postgres";
    return "sqlite";
}

keel_migrator *keel_migrate_new(const keel_migrate_opts *opts)
{
    keel_migrator *m = keel_calloc(1, sizeof(*m));
    m->o = *opts;
    if (opts->cfg)
        keel_config_copy(&m->cfg, opts->cfg);
    else
        keel_config_defaults(&m->cfg);
    /* a migration may legitimately run for minutes, and says how long it
     * took in its own log line; the options are the copy's own */
    keel_db_options *dbo = keel_config_edit(&m->cfg, &keel_db_config);
    dbo->db_statement_timeout_ms = 0;
    dbo->slow_query_ms = 0;
    if (!m->o.url)
        m->o.url = dbo->database_url;
    m->driver = keel_migrate_driver(m->o.url);
    m->pg = !strcmp(m->driver, "postgres");
    m->sql = m->pg ? &pg_dialect : &sqlite_dialect;
    return m;
}

static void applied_clear(keel_migrator *m)
{
    for (size_t i = 0; i < m->napplied; i++) {
        keel_free(m->applied[i].name);
        keel_free(m->applied[i].checksum);
        keel_free(m->applied[i].applied_at);
    }
    keel_free(m->applied);
    m->applied = NULL;
    m->napplied = 0;
}

static void unlock(keel_migrator *m)
{
    if (!m->locked)
        return;
    keel_db_rows *rows = NULL;
    if (keel_db_query(m->conn, "SELECT pg_advisory_unlock(" LOCK_KEY ")", NULL, 0, &rows) == 0)
        while (keel_db_rows_next(rows) > 0) {
        }
    keel_db_rows_free(rows);
    m->locked = 0;
}

void keel_migrate_free(keel_migrator *m)
{
    if (!m)
        return;
    if (m->conn) {
        unlock(m);
        keel_db_disconnect(m->conn);
    }
    applied_clear(m);
    keel__mig_files_free(m->files, m->nfiles);
    keel_free(m->states);
    keel_config_close(&m->cfg);
    keel_free(m);
}

const char *keel_migrate_errmsg(const keel_migrator *m)
{
    return m->err;
}

/* Records the failure and logs it: one line, naming the file when there
 * is one. Returns rc. */
static int fail(keel_migrator *m, int rc, const keel__mig_file *f, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(keel_migrator *m, int rc, const keel__mig_file *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->err, sizeof(m->err), fmt, ap);
    va_end(ap);
    json_t *fields =
        json_pack("{s:s, s:s}", "driver", m->driver, "error", keel_migrate_strerror(rc));
    if (f) {
        json_object_set_new(fields, "file", json_string(f->label));
        json_object_set_new(fields, "version", json_integer(f->version));
    }
    keel_log_json(KEEL_LOG_ERROR, m->err, fields);
    json_decref(fields);
    return rc;
}

/* ---------------------------------------------------------------- plumbing */

static int query_int(keel_migrator *m, const char *sql, const keel_db_param *p, size_t np,
                     int64_t *out, int *found)
{
    keel_db_rows *rows = NULL;
    int rc = keel_db_query(m->conn, sql, p, np, &rows);
    if (rc < 0)
        goto cleanup;
    rc = keel_db_rows_next(rows);
    if (rc < 0)
        goto cleanup;
    if (found)
        *found = rc > 0;
    if (rc > 0 && out)
        *out = keel_db_get_int(rows, 0);
    while ((rc = keel_db_rows_next(rows)) > 0) {
    }
cleanup:
    keel_db_rows_free(rows);
    return rc < 0 ? rc : 0;
}

static int load(keel_migrator *m)
{
    if (m->loaded)
        return 0;
    char err[768] = "";
    int rc = keel__mig_load(m->o.dir, m->o.migrations, m->o.nmigrations, m->driver, &m->files,
                            &m->nfiles, err, sizeof(err));
    if (rc < 0)
        return fail(m, rc, NULL, "%s", err);
    m->loaded = 1;
    return 0;
}

keel_db_conn *keel_migrate_conn(keel_migrator *m)
{
    if (m->conn)
        return m->conn;
    char err[512] = "";
    int rc = keel_db_connect(m->o.url, &m->cfg, &m->conn, err, sizeof(err));
    if (rc < 0) {
        m->conn = NULL;
        fail(m, rc, NULL, "migrations: cannot connect to the %s database: %s", m->driver,
             *err ? err : keel_migrate_strerror(rc));
        return NULL;
    }
    if (!m->pg) {
        /* BEGIN IMMEDIATE waits this long for another process's write
         * lock: a second instance queues behind the first's migrations */
        int64_t ignored;
        query_int(m, "PRAGMA busy_timeout = " SQLITE_BUSY_MS, NULL, 0, &ignored, NULL);
    }
    return m->conn;
}

static int lock(keel_migrator *m)
{
    if (!m->pg || m->locked)
        return 0;
    int64_t got = 0;
    int rc = query_int(m, "SELECT CASE WHEN pg_try_advisory_lock(" LOCK_KEY ") THEN 1 ELSE 0 END",
                       NULL, 0, &got, NULL);
    if (rc == 0 && !got) {
        keel_log(KEEL_LOG_INFO, "migrations: waiting for another instance to finish its migrations",
                 NULL);
        rc = query_int(m, "SELECT 1 FROM (SELECT pg_advisory_lock(" LOCK_KEY ")) AS l", NULL, 0,
                       NULL, NULL);
    }
    if (rc < 0)
        return fail(m, rc, NULL, "migrations: cannot take the migration lock: %s",
                    keel_db_errmsg(m->conn));
    m->locked = 1;
    return 0;
}

static int read_applied(keel_migrator *m)
{
    keel_db_rows *rows = NULL;
    size_t cap = 0;
    int64_t exists = 0;
    applied_clear(m);
    int rc = query_int(m, m->sql->table_exists, NULL, 0, &exists, NULL);
    if (rc < 0 || !exists)
        goto cleanup;
    if ((rc = keel_db_query(m->conn, m->sql->select_applied, NULL, 0, &rows)) < 0)
        goto cleanup;
    while ((rc = keel_db_rows_next(rows)) > 0) {
        if (m->napplied == cap) {
            cap = cap ? 2 * cap : 16;
            m->applied = keel_realloc(m->applied, cap * sizeof(*m->applied));
        }
        applied_row *a = &m->applied[m->napplied++];
        keel_str s;
        a->version = keel_db_get_int(rows, 0);
        s = keel_db_get_text(rows, 1);
        a->name = keel_strndup(s.ptr ? s.ptr : "", s.len);
        s = keel_db_get_text(rows, 2);
        a->checksum = keel_strndup(s.ptr ? s.ptr : "", s.len);
        s = keel_db_get_text(rows, 3);
        a->applied_at = keel_strndup(s.ptr ? s.ptr : "", s.len);
    }
cleanup:
    keel_db_rows_free(rows);
    if (rc < 0)
        return fail(m, rc, NULL, "migrations: cannot read schema_migrations: %s",
                    keel_db_errmsg(m->conn));
    return 0;
}

static keel__mig_file *find_file(keel_migrator *m, int64_t version)
{
    size_t lo = 0, hi = m->nfiles;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (m->files[mid].version == version)
            return &m->files[mid];
        if (m->files[mid].version < version)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static const applied_row *find_applied(keel_migrator *m, int64_t version)
{
    for (size_t i = 0; i < m->napplied; i++)
        if (m->applied[i].version == version)
            return &m->applied[i];
    return NULL;
}

static const char *source(keel_migrator *m)
{
    return m->o.dir && *m->o.dir ? m->o.dir : "the migrations compiled into this binary";
}

/* Every applied migration must still be in the set, unchanged. */
static int verify(keel_migrator *m)
{
    for (size_t i = 0; i < m->napplied; i++) {
        const applied_row *a = &m->applied[i];
        keel__mig_file *f = find_file(m, a->version);
        if (!f)
            return fail(m, KEEL_EMIGRATE_MISSING, NULL,
                        "migration %04" PRId64 "_%s was applied but is missing from %s "
                        "(%s); refusing to go on",
                        a->version, a->name, source(m), m->driver);
        if (strcmp(f->checksum, a->checksum) != 0)
            return fail(m, KEEL_EMIGRATE_EDITED, f,
                        "%s was edited after it was applied (checksum %.12s, applied %.12s); "
                        "restore it and put the change in a new migration",
                        f->label, f->checksum, a->checksum);
    }
    return 0;
}

/* Load, connect, lock, create the table and verify: what up and down
 * share before their first change. */
static int prepare(keel_migrator *m)
{
    int rc;
    if ((rc = load(m)) < 0)
        return rc;
    if (!keel_migrate_conn(m))
        return KEEL_EDB_UNAVAILABLE;
    if ((rc = lock(m)) < 0)
        return rc;
    int64_t exists = 0;
    if ((rc = query_int(m, m->sql->table_exists, NULL, 0, &exists, NULL)) == 0 && !exists)
        rc = keel_db_exec(m->conn, m->sql->create_table, NULL, 0, NULL);
    if (rc < 0)
        return fail(m, rc, NULL, "migrations: cannot create schema_migrations: %s",
                    keel_db_errmsg(m->conn));
    if ((rc = read_applied(m)) < 0)
        return rc;
    return verify(m);
}

/* ---------------------------------------------------------------- running */

typedef struct run_ctx {
    keel_migrator *m;
    unsigned line; /* of the statement that failed, within its section */
} run_ctx;

static int run_stmt(const char *sql, size_t len, unsigned line, void *arg)
{
    run_ctx *cx = arg;
    char *s = keel_strndup(sql, len);
    int rc = keel_db_exec(cx->m->conn, s, NULL, 0, NULL);
    keel_free(s);
    if (rc < 0)
        cx->line = line;
    return rc;
}

static void rollback(keel_migrator *m)
{
    keel_db_exec(m->conn, "ROLLBACK", NULL, 0, NULL);
}

/* Runs one section of f inside an open transaction; on failure records
 * the error (the driver's message, before ROLLBACK replaces it). */
static int run_section(keel_migrator *m, keel__mig_file *f, int up)
{
    run_ctx cx = {.m = m};
    size_t off = up ? f->up_off : f->down_off, len = up ? f->up_len : f->down_len;
    unsigned first = up ? f->up_line : f->down_line;
    int rc = keel__sql_split(f->text + off, len, m->pg, run_stmt, &cx, NULL);
    if (rc < 0)
        fail(m, rc, f, "%s: line %u (%s section): %s; rolled back", f->label, first + cx.line - 1,
             up ? "up" : "down", keel_db_errmsg(m->conn));
    return rc;
}

/* 1 when version has a row in schema_migrations (inside the transaction:
 * another process may have got there first). */
static int still_applied(keel_migrator *m, keel__mig_file *f, int *yes)
{
    keel_db_param p = KEEL_DB_P_INT(f->version);
    int64_t n = 0;
    int rc =
        query_int(m, "SELECT count(*) FROM schema_migrations WHERE version = $1", &p, 1, &n, NULL);
    *yes = n > 0;
    return rc;
}

static int begin(keel_migrator *m, keel__mig_file *f)
{
    int rc = keel_db_exec(m->conn, m->sql->begin, NULL, 0, NULL);
    if (rc < 0)
        fail(m, rc, f, "%s: cannot start its transaction: %s", f->label, keel_db_errmsg(m->conn));
    return rc;
}

static int commit(keel_migrator *m, keel__mig_file *f)
{
    int rc = keel_db_exec(m->conn, "COMMIT", NULL, 0, NULL);
    if (rc < 0) {
        fail(m, rc, f, "%s: commit failed: %s", f->label, keel_db_errmsg(m->conn));
        rollback(m);
    }
    return rc;
}

/* Applies (up) or reverts (down) one migration in its own transaction:
 * the section and the schema_migrations row change together. */
static int step_one(keel_migrator *m, keel__mig_file *f, int up, int *did)
{
    uint64_t t0 = keel_now_ms();
    int rc, there = 0;
    *did = 0;
    if ((rc = begin(m, f)) < 0)
        return rc;
    if ((rc = still_applied(m, f, &there)) < 0) {
        fail(m, rc, f, "%s: cannot read schema_migrations: %s", f->label, keel_db_errmsg(m->conn));
        goto cleanup;
    }
    /* applied (or rolled back) by a concurrent process while we waited */
    if (there == up)
        goto cleanup;
    if ((rc = run_section(m, f, up)) < 0)
        goto cleanup;
    if (up) {
        keel_db_param p[3] = {KEEL_DB_P_INT(f->version), KEEL_DB_P_TEXT(f->name),
                              KEEL_DB_P_TEXT(f->checksum)};
        rc = keel_db_exec(m->conn,
                          "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                          p, 3, NULL);
    } else {
        keel_db_param p = KEEL_DB_P_INT(f->version);
        rc = keel_db_exec(m->conn, "DELETE FROM schema_migrations WHERE version = $1", &p, 1,
                          NULL);
    }
    if (rc < 0) {
        fail(m, rc, f,
             up ? "%s: cannot record it in schema_migrations: %s; rolled back"
                : "%s: cannot delete its schema_migrations row: %s; rolled back",
             f->label, keel_db_errmsg(m->conn));
        goto cleanup;
    }
    if ((rc = commit(m, f)) < 0)
        return rc;
    *did = 1;
    keel_log(KEEL_LOG_INFO, up ? "migration applied" : "migration rolled back",
             "{s:I, s:s, s:s, s:I}", "version", (json_int_t)f->version, "name", f->name, "file",
             f->label, "ms", (json_int_t)(keel_now_ms() - t0));
    return 0;
cleanup:
    rollback(m);
    return rc;
}

static int64_t current_version(keel_migrator *m)
{
    return m->napplied ? m->applied[m->napplied - 1].version : 0;
}

int keel_migrate_up(keel_migrator *m, size_t *applied)
{
    size_t n = 0;
    int64_t last = 0;
    m->err[0] = '\0';
    int rc = prepare(m);
    if (rc < 0)
        goto cleanup;
    last = current_version(m);
    for (size_t i = 0; i < m->nfiles; i++) {
        keel__mig_file *f = &m->files[i];
        if (find_applied(m, f->version))
            continue;
        if (f->version < current_version(m))
            keel_log(KEEL_LOG_WARN, "migration applied out of order", "{s:s, s:I}", "file",
                     f->label, "after", (json_int_t)current_version(m));
        int did;
        if ((rc = step_one(m, f, 1, &did)) < 0)
            goto cleanup;
        n += (size_t)did;
        if (f->version > last)
            last = f->version;
    }
    keel_log(KEEL_LOG_INFO, n ? "migrations applied" : "migrations up to date", "{s:s, s:I, s:I}",
             "driver", m->driver, "applied", (json_int_t)n, "version", (json_int_t)last);
cleanup:
    unlock(m);
    if (applied)
        *applied = n;
    return rc;
}

int keel_migrate_down(keel_migrator *m, size_t n, size_t *done)
{
    size_t k = 0;
    m->err[0] = '\0';
    int rc = prepare(m);
    if (rc < 0)
        goto cleanup;
    if (n > m->napplied)
        n = m->napplied;
    /* all or nothing for the check: refuse before rolling anything back */
    for (size_t i = 0; i < n; i++) {
        keel__mig_file *f = find_file(m, m->applied[m->napplied - 1 - i].version);
        if (f->ndown == 0) {
            rc = fail(m, KEEL_EMIGRATE_IRREVERSIBLE, f,
                      "%s has an empty down section: it cannot be rolled back", f->label);
            goto cleanup;
        }
    }
    for (size_t i = 0; i < n; i++) {
        keel__mig_file *f = find_file(m, m->applied[m->napplied - 1 - i].version);
        int did;
        if ((rc = step_one(m, f, 0, &did)) < 0)
            goto cleanup;
        k += (size_t)did;
    }
    keel_log(KEEL_LOG_INFO, "migrations rolled back", "{s:s, s:I, s:I}", "driver", m->driver,
             "rolled_back", (json_int_t)k, "version",
             (json_int_t)(m->napplied > n ? m->applied[m->napplied - 1 - n].version : 0));
cleanup:
    unlock(m);
    if (done)
        *done = k;
    return rc;
}

static int by_state_version(const void *a, const void *b)
{
    const keel_migration_state *x = a, *y = b;
    return x->version < y->version ? -1 : x->version > y->version;
}

int keel_migrate_status(keel_migrator *m, const keel_migration_state **out, size_t *n)
{
    int rc;
    m->err[0] = '\0';
    *out = NULL;
    *n = 0;
    if ((rc = load(m)) < 0)
        return rc;
    if (!keel_migrate_conn(m))
        return KEEL_EDB_UNAVAILABLE;
    if ((rc = read_applied(m)) < 0)
        return rc;
    keel_free(m->states);
    m->states = keel_calloc(m->nfiles + m->napplied + 1, sizeof(*m->states));
    size_t k = 0;
    for (size_t i = 0; i < m->nfiles; i++) {
        keel__mig_file *f = &m->files[i];
        const applied_row *a = find_applied(m, f->version);
        keel_migration_state *s = &m->states[k++];
        s->version = f->version;
        s->name = f->name;
        s->file = f->label;
        s->applied_at = a ? a->applied_at : "";
        s->status = !a                                 ? KEEL_MIGRATION_PENDING
                    : strcmp(a->checksum, f->checksum) ? KEEL_MIGRATION_EDITED
                                                       : KEEL_MIGRATION_APPLIED;
    }
    for (size_t i = 0; i < m->napplied; i++) {
        const applied_row *a = &m->applied[i];
        if (find_file(m, a->version))
            continue;
        m->states[k++] = (keel_migration_state){.version = a->version,
                                                .name = a->name,
                                                .status = KEEL_MIGRATION_MISSING,
                                                .applied_at = a->applied_at};
    }
    qsort(m->states, k, sizeof(*m->states), by_state_version);
    *out = m->states;
    *n = k;
    return 0;
}
