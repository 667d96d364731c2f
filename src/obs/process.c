/* process.c — process metrics read from /proc at scrape time. */
#include <dirent.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

#include "keel/metrics.h"

static double start_time_s;

static double cpu_seconds(void *arg)
{
    (void)arg;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static double rss_bytes(void *arg)
{
    (void)arg;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    unsigned long size = 0, resident = 0;
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    return n == 2 ? (double)resident * (double)sysconf(_SC_PAGESIZE) : 0;
}

static double open_fds(void *arg)
{
    (void)arg;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    double n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory stream itself */
}

static double start_time(void *arg)
{
    (void)arg;
    return start_time_s;
}

void keel_metrics_register_process(keel_metrics *m, const char *version)
{
    start_time_s = (double)keel_wall_ms() / 1000.0;
    keel_metrics_callback(m, "process_cpu_seconds_total",
                          "Total user and system CPU time spent in seconds", KEEL_COUNTER,
                          cpu_seconds, NULL);
    keel_metrics_callback(m, "process_resident_memory_bytes", "Resident memory size in bytes",
                          KEEL_GAUGE, rss_bytes, NULL);
    keel_metrics_callback(m, "process_open_fds", "Number of open file descriptors",
                          KEEL_GAUGE, open_fds, NULL);
    keel_metrics_callback(m, "process_start_time_seconds",
                          "Start time of the process since the Unix epoch in seconds",
                          KEEL_GAUGE, start_time, NULL);
    static const char *const labels[] = {"version", NULL};
    keel_metric *bi = keel_metrics_gauge(m, "keel_build_info",
                                         "Build information; the value is always 1", labels);
    const char *v[] = {version};
    keel_metric_set(bi, 0, v, 1);
}
