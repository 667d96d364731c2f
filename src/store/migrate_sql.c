/* migrate_sql.c — splits a migration section into statements.
 *
 * Drivers run one statement per call (sqlite3_prepare_v2 compiles only the
 * first; PQexecParams refuses several), so migrations are split here. The
 * splitter is a lexer, not a parser: it knows where semicolons do not end a
 * statement — inside quotes, comments, dollar-quoted bodies, and the
 * BEGIN ... END body of a trigger or SQL-standard function — and nothing
 * else. Splitting here also lets an error name the line of the statement
 * that failed.
 */
#include "store/migrate_internal.h"

#include <ctype.h>
#include <strings.h>

typedef struct lexer {
    const char *s;
    size_t len;
    size_t i;
    unsigned line;
    int pg;
} lexer;

static int ident_start(unsigned char c)
{
    return isalpha(c) || c == '_' || c >= 0x80;
}

static int ident_char(unsigned char c)
{
    return ident_start(c) || isdigit(c) || c == '$';
}

/* Skips a quoted run opening at lx->i and closing with `close`; a doubled
 * closing character is part of the text. 0, or -1 when it never closes. */
static int skip_quoted(lexer *lx, char close, int backslash)
{
    lx->i++;
    while (lx->i < lx->len) {
        char c = lx->s[lx->i];
        if (c == '\n')
            lx->line++;
        if (backslash && c == '\\' && lx->i + 1 < lx->len) {
            if (lx->s[lx->i + 1] == '\n')
                lx->line++;
            lx->i += 2;
            continue;
        }
        lx->i++;
        if (c == close) {
            if (close != ']' && lx->i < lx->len && lx->s[lx->i] == close) {
                lx->i++;
                continue;
            }
            return 0;
        }
    }
    return -1;
}

/* Skips a block comment at lx->i; PostgreSQL's nest, SQLite's do not. */
static int skip_block_comment(lexer *lx)
{
    int nest = 1;
    lx->i += 2;
    while (lx->i < lx->len && nest > 0) {
        const char *p = lx->s + lx->i;
        if (*p == '\n')
            lx->line++;
        if (lx->pg && p[0] == '/' && lx->i + 1 < lx->len && p[1] == '*') {
            nest++;
            lx->i += 2;
        } else if (p[0] == '*' && lx->i + 1 < lx->len && p[1] == '/') {
            nest--;
            lx->i += 2;
        } else {
            lx->i++;
        }
    }
    return nest ? -1 : 0;
}

/* At a '$': a dollar quote $tag$ ... $tag$ (PostgreSQL) is skipped whole
 * (1), -1 when it never closes; anything else ($1, a$b) is not one (0). */
static int skip_dollar_quote(lexer *lx)
{
    size_t j = lx->i + 1;
    if (lx->i > 0 && ident_char((unsigned char)lx->s[lx->i - 1]))
        return 0;
    if (j < lx->len && ident_start((unsigned char)lx->s[j]))
        while (j < lx->len && ident_char((unsigned char)lx->s[j]) && lx->s[j] != '$')
            j++;
    if (j >= lx->len || lx->s[j] != '$')
        return 0;
    size_t taglen = j + 1 - lx->i;
    const char *tag = lx->s + lx->i;
    for (size_t k = j + 1; k + taglen <= lx->len; k++) {
        if (lx->s[k] == '\n')
            lx->line++;
        if (lx->s[k] == '$' && memcmp(lx->s + k, tag, taglen) == 0) {
            lx->i = k + taglen;
            return 1;
        }
    }
    return -1;
}

static int word_is(const char *w, size_t n, const char *kw)
{
    return strlen(kw) == n && strncasecmp(w, kw, n) == 0;
}

int keel__sql_split(const char *sql, size_t len, int pg, keel__sql_stmt_cb fn, void *arg,
                    unsigned *bad_line)
{
    lexer lx = {.s = sql, .len = len, .line = 1, .pg = pg};
    size_t start = 0;
    unsigned start_line = 0;
    unsigned bad = 0;
    int in_stmt = 0, words = 0, create = 0, block = 0, depth = 0;

    while (lx.i < len) {
        unsigned char c = (unsigned char)sql[lx.i];
        unsigned here = lx.line;
        if (c == '\n') {
            lx.line++;
            lx.i++;
            continue;
        }
        if (isspace(c)) {
            lx.i++;
            continue;
        }
        if (c == '-' && lx.i + 1 < len && sql[lx.i + 1] == '-') {
            while (lx.i < len && sql[lx.i] != '\n')
                lx.i++;
            continue;
        }
        if (c == '/' && lx.i + 1 < len && sql[lx.i + 1] == '*') {
            if (skip_block_comment(&lx) < 0) {
                bad = here;
                goto unterminated;
            }
            continue;
        }
        if (c == ';' && !in_stmt) { /* an empty statement */
            lx.i++;
            continue;
        }
        if (!in_stmt) {
            in_stmt = 1;
            start = lx.i;
            start_line = lx.line;
        }
        if (c == ';') {
            lx.i++;
            if (depth > 0)
                continue;
            int rc = fn(sql + start, lx.i - 1 - start, start_line, arg);
            if (rc != 0)
                return rc;
            in_stmt = words = create = block = 0;
            continue;
        }
        int q = 0;
        if (c == '\'')
            q = skip_quoted(&lx, '\'', 0);
        else if (c == '"')
            q = skip_quoted(&lx, '"', 0);
        else if (!pg && c == '`')
            q = skip_quoted(&lx, '`', 0);
        else if (!pg && c == '[')
            q = skip_quoted(&lx, ']', 0);
        else if (pg && c == '$') {
            q = skip_dollar_quote(&lx);
            if (q == 0)
                lx.i++;
        } else if (ident_start(c)) {
            size_t w = lx.i;
            while (lx.i < len && ident_char((unsigned char)sql[lx.i]))
                lx.i++;
            size_t n = lx.i - w;
            if (pg && n == 1 && (c == 'E' || c == 'e') && lx.i < len && sql[lx.i] == '\'') {
                q = skip_quoted(&lx, '\'', 1); /* E'...' takes backslash escapes */
            } else {
                words++;
                if (words == 1)
                    create = word_is(sql + w, n, "CREATE");
                else if (create && words <= 6 &&
                         (word_is(sql + w, n, "TRIGGER") || word_is(sql + w, n, "FUNCTION") ||
                          word_is(sql + w, n, "PROCEDURE")))
                    block = 1;
                /* In a trigger or function body, BEGIN/CASE ... END nest and
                 * the body's semicolons do not end the CREATE. */
                if (block && (word_is(sql + w, n, "BEGIN") || word_is(sql + w, n, "CASE")))
                    depth++;
                else if (block && depth > 0 && word_is(sql + w, n, "END"))
                    depth--;
            }
        } else {
            lx.i++;
        }
        if (q < 0) {
            bad = here;
            goto unterminated;
        }
    }
    if (depth > 0) {
        bad = start_line;
        goto unterminated;
    }
    if (in_stmt)
        return fn(sql + start, len - start, start_line, arg);
    return 0;

unterminated:
    if (bad_line)
        *bad_line = bad;
    return KEEL_EMIGRATE_FORMAT;
}
