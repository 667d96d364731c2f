/* keel/migrate.h — schema migrations for SQLite and PostgreSQL.
 *
 * A migration is one file, migrations/<driver>/NNNN_name.sql, with an up
 * and a down section:
 *
 *     -- migrate:up
 *     CREATE TABLE items (...);
 *     -- migrate:down
 *     DROP TABLE items;
 *
 * The build compiles migrations/ into the binary (a table of
 * keel_migration, see scripts/embed_migrations.sh); MIGRATIONS_DIR makes a
 * running binary read <dir>/sqlite/ and <dir>/postgres/ instead. The
 * database records what it has applied in `schema_migrations` (version,
 * name, SHA-256 of the file, applied_at). Each migration runs in its own
 * transaction together with its schema_migrations row; concurrent runs
 * wait for each other (a PostgreSQL advisory lock, SQLite's write lock).
 * docs/migrations.md has the whole story.
 */
#ifndef KEEL_MIGRATE_H
#define KEEL_MIGRATE_H

#include "config.h"
#include "db.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Migration errors (negative, like every keel error). */
#define KEEL_MIGRATE_ERRNO_MAP(X)                                                                  \
    X(MIGRATE_FORMAT, -20201, "malformed migration file")                                          \
    X(MIGRATE_EDITED, -20202, "applied migration was edited")                                      \
    X(MIGRATE_MISSING, -20203, "applied migration is missing")                                     \
    X(MIGRATE_IRREVERSIBLE, -20204, "migration has no down section")

enum {
#define KEEL_MIGRATE_ERR_ENUM(name, val, msg) KEEL_E##name = (val),
    KEEL_MIGRATE_ERRNO_MAP(KEEL_MIGRATE_ERR_ENUM)
#undef KEEL_MIGRATE_ERR_ENUM
};

/* A static description of a migration, database or keel error. */
const char *keel_migrate_strerror(int err);

/* One migration file compiled into the binary. `text` is the whole file
 * (both sections), NUL-terminated; its checksum is taken over these bytes,
 * so an embedded file and the same file read from MIGRATIONS_DIR agree. */
typedef struct keel_migration {
    const char *driver; /* "sqlite" or "postgres" */
    int64_t version;    /* the NNNN of the file name */
    const char *name;   /* the file name's rest, without ".sql" */
    const char *text;
} keel_migration;

/* Where a migrator gets its database and its migrations. Everything is
 * borrowed for the migrator's lifetime. */
typedef struct keel_migrate_opts {
    const char *url;                  /* picks the driver; NULL = cfg's DATABASE_URL */
    const keel_config *cfg;           /* connection settings; NULL = defaults */
    const char *dir;                  /* MIGRATIONS_DIR; NULL or "" = embedded */
    const keel_migration *migrations; /* the embedded set (both drivers) */
    size_t nmigrations;
} keel_migrate_opts;

typedef struct keel_migrator keel_migrator;

/* Creates a migrator; it reads the migrations and connects on first use.
 * Never fails (allocation aborts). Free with keel_migrate_free. */
keel_migrator *keel_migrate_new(const keel_migrate_opts *opts);

/* Disconnects (releasing the PostgreSQL lock if held) and frees. NULL is
 * a no-op. */
void keel_migrate_free(keel_migrator *m);

/* Applies every pending migration in version order, each in its own
 * transaction, and logs one line per migration applied. *applied (may be
 * NULL) gets how many this call applied. Before changing anything it
 * refuses an applied migration whose file changed (KEEL_EMIGRATE_EDITED)
 * or is gone (KEEL_EMIGRATE_MISSING). A migration that fails is rolled
 * back whole and stops the run (the database error, e.g. KEEL_EDB_SQL).
 * Every failure logs one error line; keel_migrate_errmsg has the text. */
int keel_migrate_up(keel_migrator *m, size_t *applied);

/* Rolls back the last n applied migrations (highest versions first), each
 * in its own transaction. Refuses, before changing anything, when one of
 * them has an empty down section (KEEL_EMIGRATE_IRREVERSIBLE) and for the
 * same reasons as keel_migrate_up. *done (may be NULL) gets how many. */
int keel_migrate_down(keel_migrator *m, size_t n, size_t *done);

typedef enum keel_migration_status {
    KEEL_MIGRATION_PENDING = 0,
    KEEL_MIGRATION_APPLIED,
    KEEL_MIGRATION_EDITED, /* applied, but the file changed since */
    KEEL_MIGRATION_MISSING /* applied, but no file has its version */
} keel_migration_status;

/* One row of keel_migrate_status. Strings belong to the migrator. */
typedef struct keel_migration_state {
    int64_t version;
    const char *name;
    const char *file; /* where it was read; NULL when MISSING */
    keel_migration_status status;
    const char *applied_at; /* UTC "YYYY-MM-DDTHH:MM:SSZ"; "" when pending */
} keel_migration_state;

/* Every known migration (files and applied rows), in version order. The
 * array belongs to the migrator and lives until its next call. Reads only:
 * creates nothing and takes no lock. */
int keel_migrate_status(keel_migrator *m, const keel_migration_state **out, size_t *n);

/* The message of the last failure ("" when none). */
const char *keel_migrate_errmsg(const keel_migrator *m);

/* The migrator's connection (connecting first when needed), for callers
 * that look at the schema afterwards; NULL when it cannot connect. */
keel_db_conn *keel_migrate_conn(keel_migrator *m);

/* "sqlite" or "postgres", from the URL's scheme. */
const char *keel_migrate_driver(const char *url);

/* Writes empty dir/sqlite/NNNN_name.sql and dir/postgres/NNNN_name.sql
 * (creating the directories), NNNN one above the highest version found in
 * either; *version (may be NULL) gets it. name: letters, digits, '_'.
 * 0, KEEL_EINVAL (bad name), or -errno; err gets a one-line reason. */
int keel_migrate_create(const char *dir, const char *name, int64_t *version, char *err,
                        size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
