/* migrate_internal.h — the pieces of keel_migrate shared between its files
 * and its unit test: migration files in memory, and the SQL splitter. */
#ifndef KEEL_MIGRATE_INTERNAL_H
#define KEEL_MIGRATE_INTERNAL_H

#include "keel/migrate.h"

/* One migration file, read and parsed. */
typedef struct keel__mig_file {
    int64_t version;
    char *name;  /* "demo_items" */
    char *label; /* for messages: the path, or "postgres/0001_x.sql (embedded)" */
    char *text;  /* the file's bytes, NUL-terminated */
    size_t len;
    char checksum[65];     /* SHA-256 of text, lowercase hex */
    size_t up_off, up_len; /* the up section: bytes after its marker line */
    unsigned up_line;      /* 1-based line of the section's first byte */
    size_t down_off, down_len;
    unsigned down_line;
    size_t nup, ndown; /* statements in each section */
} keel__mig_file;

/* A file name "NNNN_name.sql" (no directory): 0 and *version, *name
 * (heap, without ".sql"), or KEEL_EMIGRATE_FORMAT. */
int keel__mig_parse_filename(const char *base, int64_t *version, char **name);

/* Finds the `-- migrate:up` / `-- migrate:down` sections of f->text and
 * checks that they split into statements (pg: PostgreSQL's lexical rules)
 * with no transaction control of their own. 0 or KEEL_EMIGRATE_FORMAT with
 * the reason in err. */
int keel__mig_parse(keel__mig_file *f, int pg, char *err, size_t errlen);

/* The set for one driver, sorted by version: from the .sql files of dir/<driver>/ when
 * dir is non-empty, else from the embedded table. 0, or
 * KEEL_EMIGRATE_FORMAT / -errno with the reason in err. */
int keel__mig_load(const char *dir, const keel_migration *embedded, size_t nembedded,
                   const char *driver, keel__mig_file **out, size_t *n, char *err, size_t errlen);
void keel__mig_files_free(keel__mig_file *files, size_t n);

/* SHA-256 of p[0..n) (libsodium) as 64 lowercase hex digits and a NUL:
 * the migration checksum. */
void keel__sha256_hex(const void *p, size_t n, char out[65]);

/* Called for each statement: its text (without the closing ';', not
 * NUL-terminated) and the 1-based line, within the split text, where it
 * starts. A non-zero return stops the split and is returned. */
typedef int (*keel__sql_stmt_cb)(const char *sql, size_t len, unsigned line, void *arg);

/* Splits SQL into statements at top-level semicolons: not inside quotes
 * ('', "", and for SQLite `` and []; E'' and $tag$ for PostgreSQL),
 * comments, or the BEGIN ... END body of a CREATE TRIGGER / FUNCTION /
 * PROCEDURE. Statements that are only blanks and comments are skipped.
 * 0, fn's first non-zero result, or KEEL_EMIGRATE_FORMAT for an
 * unterminated quote, comment or block (*bad_line gets where it began). */
int keel__sql_split(const char *sql, size_t len, int pg, keel__sql_stmt_cb fn, void *arg,
                    unsigned *bad_line);

#endif
