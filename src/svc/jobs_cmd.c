/* jobs_cmd.c — `keel jobs list|get|retry|cancel|delete|pause|resume|queues`
 * for a service with a job queue (keel_app.use_jobs): one connection to
 * DATABASE_URL on this thread, the operations of keel/jobs.h, the answer
 * on stdout (list: one line per job; get/queues: JSON). Exit status 0, 1
 * when the job does not exist or the operation is refused, 2 for usage
 * or configuration errors. */
#include "svc/svc_internal.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/db.h"
#include "keel/jobs.h"
#include "keel/log.h"

void keel__svc_jobs_usage(FILE *out)
{
    fprintf(out, "  jobs list [--queue Q] [--state S] [--kind K] [--limit N] [--before ID]\n"
                 "  jobs get|retry|cancel|delete ID | pause|resume QUEUE | queues\n"
                 "                 inspect and manage the job queue (docs/jobs.md)\n");
}

static int usage_error(const char *prog, const char *what)
{
    fprintf(stderr, "%s: jobs: %s\n", prog, what);
    fprintf(stderr, "Usage:\n");
    keel__svc_jobs_usage(stderr);
    return 2;
}

static int parse_id(const char *s, int64_t *out)
{
    char *end = NULL;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || *end || v <= 0)
        return -1;
    *out = v;
    return 0;
}

static void print_list(json_t *page)
{
    printf("%-10s %-12s %-24s %-10s %-8s %s\n", "ID", "QUEUE", "KIND", "STATE", "ATTEMPT",
           "RUN_AT");
    size_t i;
    json_t *job;
    json_array_foreach(json_object_get(page, "jobs"), i, job) {
        printf("%-10" JSON_INTEGER_FORMAT " %-12s %-24s %-10s %" JSON_INTEGER_FORMAT
               "/%-6" JSON_INTEGER_FORMAT " %" JSON_INTEGER_FORMAT "\n",
               json_integer_value(json_object_get(job, "id")),
               json_string_value(json_object_get(job, "queue")),
               json_string_value(json_object_get(job, "kind")),
               json_string_value(json_object_get(job, "state")),
               json_integer_value(json_object_get(job, "attempt")),
               json_integer_value(json_object_get(job, "max_attempts")),
               json_integer_value(json_object_get(job, "run_at")));
    }
    json_t *next = json_object_get(page, "next_before");
    if (json_is_integer(next))
        printf("(more: --before %" JSON_INTEGER_FORMAT ")\n", json_integer_value(next));
}

static int report(const char *prog, int rc, const char *what)
{
    if (rc == 0)
        return 0;
    if (rc == KEEL_EDB_NOROW)
        fprintf(stderr, "%s: jobs: %s: no such job\n", prog, what);
    else if (rc == KEEL_EALREADY)
        fprintf(stderr, "%s: jobs: %s: not possible in the job's state\n", prog, what);
    else
        fprintf(stderr, "%s: jobs: %s: %s\n", prog, what, keel_db_strerror(rc));
    return 1;
}

int keel__svc_jobs_main(const keel_app *app, int argc, char **argv)
{
    const char *prog = app->name ? app->name : "keel";
    const char *env_file = NULL, *sub = NULL, *arg = NULL;
    keel_job_filter f = {.limit = 50};
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--env-file") && v) {
            env_file = v, i++;
        } else if (!strcmp(a, "--queue") && v) {
            f.queue = v, i++;
        } else if (!strcmp(a, "--state") && v) {
            if (!keel_job_state_valid(v))
                return usage_error(prog, "--state: available, scheduled, running, retryable, "
                                         "completed, cancelled or dead");
            f.state = v, i++;
        } else if (!strcmp(a, "--kind") && v) {
            f.kind = v, i++;
        } else if (!strcmp(a, "--limit") && v) {
            char *end;
            unsigned long n = strtoul(v, &end, 10);
            if (!*v || *end || n < 1 || n > 500)
                return usage_error(prog, "--limit: 1..500");
            f.limit = (unsigned)n, i++;
        } else if (!strcmp(a, "--before") && v) {
            if (parse_id(v, &f.before_id) < 0)
                return usage_error(prog, "--before: a job id");
            i++;
        } else if (a[0] == '-') {
            return usage_error(prog, "unknown option");
        } else if (!sub) {
            sub = a;
        } else if (!arg) {
            arg = a;
        } else {
            return usage_error(prog, "too many arguments");
        }
    }
    if (!sub)
        return usage_error(prog, "missing subcommand");
    int needs_id = !strcmp(sub, "get") || !strcmp(sub, "retry") || !strcmp(sub, "cancel") ||
                   !strcmp(sub, "delete");
    int needs_queue = !strcmp(sub, "pause") || !strcmp(sub, "resume");
    int bare = !strcmp(sub, "list") || !strcmp(sub, "queues");
    if (!needs_id && !needs_queue && !bare)
        return usage_error(prog, "unknown subcommand");
    int64_t id = 0;
    if (needs_id && parse_id(arg, &id) < 0)
        return usage_error(prog, "expected a job id");
    if (needs_queue && !arg)
        return usage_error(prog, "expected a queue name");
    if (bare && arg)
        return usage_error(prog, "too many arguments");

    keel_config cfg;
    const keel_config_module *mods[KEEL__SVC_MAX_CONFIG_MODULES];
    size_t nmods = keel__svc_config_modules(app, mods);
    if (keel_config_load_modules(&cfg, mods, nmods, env_file, stderr) < 0) {
        keel_config_close(&cfg);
        return 2;
    }
    keel_log_set_fd(2);
    if (keel_log_init(&cfg) < 0) {
        keel_config_close(&cfg);
        return 2;
    }
    const keel_db_options *dbo = keel_config_get(&cfg, &keel_db_config);
    keel_db_conn *c = NULL;
    char err[256];
    int status = 0;
    if (keel_db_connect(dbo->database_url, &cfg, &c, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s: jobs: %s\n", prog, err);
        status = 1;
        goto out;
    }
    int rc = keel_jobs_install(c);
    if (rc < 0) {
        status = report(prog, rc, "schema");
        goto out;
    }
    json_t *o = NULL;
    if (!strcmp(sub, "list")) {
        rc = keel_jobs_list(c, &f, &o);
        if (rc == 0)
            print_list(o);
    } else if (!strcmp(sub, "queues") || !strcmp(sub, "get")) {
        rc = !strcmp(sub, "get") ? keel_job_get(c, id, &o) : keel_jobs_queues(c, &o);
        if (rc == 0) {
            char *s = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
            printf("%s\n", s);
            free(s);
        }
    } else if (!strcmp(sub, "retry")) {
        rc = keel_job_retry_now(c, id);
    } else if (!strcmp(sub, "cancel")) {
        rc = keel_job_cancel(c, id);
    } else if (!strcmp(sub, "delete")) {
        rc = keel_job_delete(c, id);
    } else {
        rc = keel_jobs_queue_pause(c, arg, !strcmp(sub, "pause"));
        if (rc == KEEL_EINVAL) {
            keel_db_disconnect(c);
            keel_log_close();
            keel_config_close(&cfg);
            return usage_error(prog, "bad queue name");
        }
    }
    json_decref(o);
    status = report(prog, rc, sub);
    if (status == 0 && (needs_id || needs_queue) && strcmp(sub, "get") != 0)
        printf("%s %s: done\n", sub, arg);
out:
    keel_db_disconnect(c);
    keel_log_close();
    keel_config_close(&cfg);
    return status;
}
