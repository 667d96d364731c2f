/* migrate_cmd.c — `keel migrate up|down [N]|status|create NAME` and the
 * migrations `keel serve` applies before it listens. */
#include "svc/svc_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/db.h"
#include "keel/log.h"
#include "keel/migrate.h"

static keel_migrator *migrator_new(const keel_app *app, const keel_config *cfg)
{
    const keel_db_options *db = keel_config_get(cfg, &keel_db_config);
    keel_migrate_opts o = {.url = db->database_url,
                           .cfg = cfg,
                           .dir = db->migrations_dir,
                           .migrations = app->migrations,
                           .nmigrations = app->nmigrations};
    return keel_migrate_new(&o);
}

int keel__svc_migrate_on_start(const keel_app *app, const keel_config *cfg)
{
    keel_migrator *m = migrator_new(app, cfg);
    int rc = keel_migrate_up(m, NULL);
    keel_migrate_free(m);
    return rc;
}

static const char *status_word(keel_migration_status s)
{
    switch (s) {
    case KEEL_MIGRATION_PENDING:
        return "pending";
    case KEEL_MIGRATION_APPLIED:
        return "applied";
    case KEEL_MIGRATION_EDITED:
        return "EDITED";
    case KEEL_MIGRATION_MISSING:
        return "MISSING";
    }
    return "?";
}

/* Prints the table; exits 1 when an applied migration was edited or is
 * missing (what `up` would refuse), so scripts can check with it. */
static int cmd_status(keel_migrator *m, FILE *out)
{
    const keel_migration_state *st;
    size_t n;
    int bad = 0;
    if (keel_migrate_status(m, &st, &n) < 0)
        return 1;
    fprintf(out, "%-8s %-32s %-8s %-21s %s\n", "VERSION", "NAME", "STATUS", "APPLIED AT", "FILE");
    for (size_t i = 0; i < n; i++) {
        bad |= st[i].status == KEEL_MIGRATION_EDITED || st[i].status == KEEL_MIGRATION_MISSING;
        char v[24];
        snprintf(v, sizeof(v), "%04" PRId64, st[i].version);
        fprintf(out, "%-8s %-32s %-8s %-21s %s\n", v, st[i].name, status_word(st[i].status),
                *st[i].applied_at ? st[i].applied_at : "-", st[i].file ? st[i].file : "-");
    }
    return bad;
}

static int cmd_create(const keel_config *cfg, const char *name, const char *prog)
{
    const keel_db_options *db = keel_config_get(cfg, &keel_db_config);
    const char *dir = db->migrations_dir && *db->migrations_dir ? db->migrations_dir : "migrations";
    char err[512];
    int64_t v;
    if (keel_migrate_create(dir, name, &v, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s: migrate create: %s\n", prog, err);
        return 1;
    }
    printf("%s/sqlite/%04" PRId64 "_%s.sql\n%s/postgres/%04" PRId64 "_%s.sql\n", dir, v, name, dir,
           v, name);
    return 0;
}

void keel__svc_migrate_usage(FILE *out)
{
    fprintf(out, "  migrate up     apply every pending migration\n"
                 "  migrate down [N]\n"
                 "                 roll back the last N applied migrations (default 1)\n"
                 "  migrate status list migrations, applied (with when) or pending\n"
                 "  migrate create NAME\n"
                 "                 write empty NNNN_NAME.sql for SQLite and PostgreSQL in\n"
                 "                 MIGRATIONS_DIR (default ./migrations)\n");
}

static int usage_error(const char *prog, const char *what)
{
    fprintf(stderr,
            "%s: migrate: %s\nUsage: %s migrate up | down [N] | status | create NAME"
            " [--env-file F]\n",
            prog, what, prog);
    return 2;
}

int keel__svc_migrate_main(const keel_app *app, int argc, char **argv)
{
    const char *prog = app->name ? app->name : "keel";
    const char *env_file = NULL, *pos[3] = {NULL, NULL, NULL};
    int npos = 0, status = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--env-file") && i + 1 < argc)
            env_file = argv[++i];
        else if (argv[i][0] == '-' && argv[i][1] != '\0')
            return usage_error(prog, "unknown option");
        else if (npos < 3)
            pos[npos++] = argv[i];
        else
            return usage_error(prog, "too many arguments");
    }
    const char *sub = pos[0] ? pos[0] : "";
    size_t down_n = 1;
    if (!strcmp(sub, "down") && npos == 2) {
        char *end;
        unsigned long long v = strtoull(pos[1], &end, 10);
        if (*pos[1] == '\0' || *end != '\0' || v == 0 || pos[1][0] == '-')
            return usage_error(prog, "down N: N must be a positive number");
        down_n = (size_t)v;
    } else if (!strcmp(sub, "create")) {
        if (npos != 2)
            return usage_error(prog, "create needs a NAME");
    } else if (strcmp(sub, "up") && strcmp(sub, "down") && strcmp(sub, "status")) {
        return usage_error(prog, *sub ? "unknown subcommand" : "missing subcommand");
    } else if (npos != 1) {
        return usage_error(prog, "too many arguments");
    }

    keel_config cfg;
    const keel_config_module *mods[KEEL__SVC_MAX_CONFIG_MODULES];
    size_t nmods = keel__svc_config_modules(app, mods);
    if (keel_config_load_modules(&cfg, mods, nmods, env_file, stderr) < 0) {
        keel_config_close(&cfg);
        return 2;
    }
    if (!strcmp(sub, "create")) {
        status = cmd_create(&cfg, pos[1], prog);
        keel_config_close(&cfg);
        return status;
    }
    if (keel_log_init(&cfg) < 0) {
        keel_config_close(&cfg);
        return 2;
    }
    keel_migrator *m = migrator_new(app, &cfg);
    if (!strcmp(sub, "up"))
        status = keel_migrate_up(m, NULL) < 0;
    else if (!strcmp(sub, "down"))
        status = keel_migrate_down(m, down_n, NULL) < 0;
    else
        status = cmd_status(m, stdout);
    keel_migrate_free(m);
    keel_log_close();
    keel_config_close(&cfg);
    return status;
}
