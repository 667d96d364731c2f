/* jobs_bench — keel's side of bench/jobs/run.sh (docs/performance.md).
 *
 *   jobs_bench throughput URL N CONCURRENCY
 *       N no-op jobs enqueued (one transaction), then one runner with
 *       CONCURRENCY threads started; prints jobs per second from the start
 *       to the last job's completion.
 *   jobs_bench latency URL SAMPLES
 *       a runner in a child process; the parent enqueues SAMPLES jobs on an
 *       idle queue, 20 ms apart, each carrying its enqueue time; the child
 *       prints p50/p99 of enqueue-to-start (the wake-up goes through
 *       NOTIFY/LISTEN on PostgreSQL, as between instances).
 *
 * Output: one line "keel <metric> <value>" per result. */
#include <jansson.h>
#include <keel/keel.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static atomic_long g_done;
static long g_samples;
static double *g_lat;

static int64_t real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static keel_job_outcome noop(keel_job *job, void *arg)
{
    (void)arg;
    json_t *t = json_object_get(keel_job_args(job), "t");
    if (t && g_lat) {
        long i = atomic_fetch_add(&g_done, 1);
        if (i < g_samples)
            g_lat[i] = (double)(real_ns() - json_integer_value(t)) / 1e6;
    } else {
        atomic_fetch_add(&g_done, 1);
    }
    return KEEL_JOB_OK;
}

static keel_db_conn *connect_or_die(const char *url)
{
    keel_db_conn *c = NULL;
    char err[256];
    if (keel_db_connect(url, NULL, &c, err, sizeof(err)) < 0) {
        fprintf(stderr, "jobs_bench: %s\n", err);
        exit(1);
    }
    if (keel_jobs_install(c) < 0 || keel_db_exec(c, "DELETE FROM keel_jobs", NULL, 0, NULL) < 0)
        exit(1);
    return c;
}

static keel_jobs *runner(const char *url, unsigned conc)
{
    keel_config cfg;
    keel_config_defaults(&cfg);
    keel_jobs_options *o = keel_config_edit(&cfg, &keel_jobs_config);
    char q[64];
    snprintf(q, sizeof(q), "default=%u", conc);
    keel_free(o->queues);
    o->queues = keel_strdup(q);
    keel_jobs *j = NULL;
    if (keel_jobs_new(&j, url, &cfg, NULL) < 0)
        exit(1);
    keel_config_close(&cfg);
    keel_job_handler h = {.kind = "noop", .run = noop};
    keel_jobs_register(j, &h);
    return j;
}

static int enqueue_n(keel_db_conn *c, void *arg)
{
    long n = *(long *)arg;
    for (long i = 0; i < n; i++) {
        keel_job_spec s = {.kind = "noop"};
        int rc = keel_job_enqueue(c, &s, NULL);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    keel_config lc;
    keel_config_defaults(&lc);
    lc.log_level = KEEL_LOG_ERROR;
    keel_log_init(&lc);
    keel_config_close(&lc);
    if (argc >= 5 && !strcmp(argv[1], "throughput")) {
        const char *url = argv[2];
        long n = atol(argv[3]);
        keel_db_conn *c = connect_or_die(url);
        if (keel_db_tx(c, enqueue_n, &n) < 0)
            return 1;
        keel_jobs *j = runner(url, (unsigned)atoi(argv[4]));
        uint64_t t0 = keel_now_ns();
        keel_jobs_start(j);
        while (atomic_load(&g_done) < n)
            usleep(1000);
        double s = (double)(keel_now_ns() - t0) / 1e9;
        keel_jobs_stop(j, 5000);
        keel_jobs_free(j);
        keel_db_disconnect(c);
        printf("keel throughput_jobs_per_s %.0f\n", (double)n / s);
        return 0;
    }
    if (argc >= 4 && !strcmp(argv[1], "latency")) {
        const char *url = argv[2];
        g_samples = atol(argv[3]);
        keel_db_conn *c = connect_or_die(url);
        keel_db_disconnect(c);
        pid_t pid = fork();
        if (pid == 0) {
            g_lat = calloc((size_t)g_samples, sizeof(double));
            keel_jobs *j = runner(url, 4);
            keel_jobs_start(j);
            while (atomic_load(&g_done) < g_samples)
                usleep(1000);
            keel_jobs_stop(j, 5000);
            keel_jobs_free(j);
            qsort(g_lat, (size_t)g_samples, sizeof(double), cmp);
            printf("keel latency_p50_ms %.2f\nkeel latency_p99_ms %.2f\n",
                   g_lat[g_samples / 2], g_lat[(g_samples * 99) / 100]);
            fflush(stdout);
            _exit(0);
        }
        usleep(1000 * 1000); /* the runner is up and idle */
        char err[256];
        if (keel_db_connect(url, NULL, &c, err, sizeof(err)) < 0)
            return 1;
        for (long i = 0; i < g_samples; i++) {
            char args[64];
            snprintf(args, sizeof(args), "{\"t\":%lld}", (long long)real_ns());
            keel_job_spec s = {.kind = "noop", .args = args};
            if (keel_job_enqueue(c, &s, NULL) < 0)
                return 1;
            usleep(20 * 1000);
        }
        keel_db_disconnect(c);
        int st = 0;
        waitpid(pid, &st, 0);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
    }
    fprintf(stderr, "usage: jobs_bench throughput URL N CONC | latency URL SAMPLES\n");
    return 2;
}
