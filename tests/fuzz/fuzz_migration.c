/* fuzz_migration.c — libFuzzer driver for the migration file parser and
 * the SQL statement splitter (src/store/migrate_file.c, migrate_sql.c).
 *
 * The first input byte picks the dialect (even: SQLite, odd: PostgreSQL);
 * the rest is a migration file, parsed into sections and then split again
 * section by section. Checks: no crash or overread (the text is a heap copy
 * of exactly the input plus its NUL), sections inside the text and in
 * order, every statement a non-empty slice of its section with a start line
 * no further than the section's lines, and the splitter's statement counts
 * agreeing with the parser's.
 *
 *   make build/fuzz/fuzz_migration
 *   build/fuzz/fuzz_migration -dict=tests/fuzz/fuzz_migration.dict CORPUS_DIR
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/migrate_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_migration: check failed: %s (line %d)\n", #cond, __LINE__);      \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct span {
    const char *base;
    size_t len;
    unsigned lines;
    size_t n;
} span;

static int on_stmt(const char *sql, size_t len, unsigned line, void *arg)
{
    span *s = arg;
    CHECK(sql >= s->base && sql + len <= s->base + s->len);
    CHECK(len > 0);
    CHECK(line >= 1 && line <= s->lines);
    s->n++;
    return 0;
}

static unsigned count_lines(const char *p, size_t n)
{
    unsigned lines = 1;
    for (size_t i = 0; i < n; i++)
        lines += p[i] == '\n';
    return lines;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    int pg = data[0] & 1;
    keel__mig_file f = {.label = "fuzz.sql", .len = size - 1};
    f.text = malloc(size);
    memcpy(f.text, data + 1, size - 1);
    f.text[size - 1] = '\0';
    char err[256];
    if (keel__mig_parse(&f, pg, err, sizeof(err)) == 0) {
        CHECK(f.up_off <= f.len && f.up_off + f.up_len <= f.down_off);
        CHECK(f.down_off + f.down_len == f.len);
        span up = {f.text + f.up_off, f.up_len, count_lines(f.text + f.up_off, f.up_len), 0};
        span down = {f.text + f.down_off, f.down_len, count_lines(f.text + f.down_off, f.down_len),
                     0};
        CHECK(keel__sql_split(up.base, up.len, pg, on_stmt, &up, NULL) == 0);
        CHECK(keel__sql_split(down.base, down.len, pg, on_stmt, &down, NULL) == 0);
        CHECK(up.n == f.nup && down.n == f.ndown);
    }
    /* the splitter alone, on the whole input */
    span all = {f.text, f.len, count_lines(f.text, f.len), 0};
    unsigned bad = 0;
    int rc = keel__sql_split(all.base, all.len, pg, on_stmt, &all, &bad);
    CHECK(rc == 0 || (rc == KEEL_EMIGRATE_FORMAT && bad >= 1 && bad <= all.lines));
    free(f.text);
    return 0;
}
