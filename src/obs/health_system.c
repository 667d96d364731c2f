/* health_system.c — the checks every service gets: disk space of the data
 * directory, memory against MEMORY_LIMIT, work-pool saturation; and the
 * HEALTH_* options (keel/health.h). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "keel/health.h"
#include "obs/health_internal.h"

#define AT(f) KEEL_CONFIG_AT(keel_health_options, f)
static const keel_config_var health_vars[] = {
    {.name = "HEALTH_CACHE_TTL", .type = KEEL_CONFIG_DURATION, .def = "1s", AT(cache_ttl_ms),
     .max = 60000,
     .help = "health check results are reused this long: a storm of probes runs the checks "
             "about once per period (0 = every probe runs them)"},
    {.name = "HEALTH_DISK_PATH", .type = KEEL_CONFIG_STR, .def = "", AT(disk_path),
     .help = "directory whose file system the disk check watches; empty = the data "
             "directory (the SQLite database's, else the working directory)"},
    {.name = "HEALTH_DISK_MIN_FREE", .type = KEEL_CONFIG_SIZE, .def = "100mb",
     AT(disk_min_free),
     .help = "the service is degraded while its data directory has less free space than "
             "this (0 = not checked)"},
    {.name = "MEMORY_LIMIT", .type = KEEL_CONFIG_SIZE, .def = "0", AT(memory_limit),
     .help = "memory the process may use (e.g. 512mb); 0 = the cgroup's limit when there "
             "is one, else no memory check"},
    {.name = "HEALTH_MEMORY_WARN", .type = KEEL_CONFIG_UINT, .def = "80", AT(memory_warn_pct),
     .min = 1, .max = 100,
     .help = "degraded while resident memory is above this percentage of MEMORY_LIMIT"},
    {.name = "HEALTH_MEMORY_FAIL", .type = KEEL_CONFIG_UINT, .def = "95", AT(memory_fail_pct),
     .min = 1, .max = 100,
     .help = "unhealthy (503, not ready) while resident memory is above this percentage of "
             "MEMORY_LIMIT"},
    {.name = "HEALTH_POOL_SATURATION", .type = KEEL_CONFIG_UINT, .def = "80",
     AT(pool_warn_pct), .min = 1, .max = 100,
     .help = "degraded while a work pool's queue is fuller than this percentage of its bound"},
};
#undef AT

static int health_validate(void *opts, const keel_config *cfg, FILE *err)
{
    (void)cfg;
    const keel_health_options *o = opts;
    if (o->memory_warn_pct > o->memory_fail_pct) {
        fprintf(err, "keel: HEALTH_MEMORY_WARN: %u is above HEALTH_MEMORY_FAIL (%u)\n",
                o->memory_warn_pct, o->memory_fail_pct);
        return KEEL_ECONFIG;
    }
    return 0;
}

const keel_config_module keel_health_config = KEEL_CONFIG_MODULE(
    "health", "Deep health checks: cache, disk, memory, work pools (src/obs/health_system.c).",
    keel_health_options, health_vars, health_validate);

/* ---------------------------------------------------------------- verdicts */

int keel_health_disk_verdict(uint64_t free_bytes, uint64_t min_free)
{
    return min_free && free_bytes < min_free ? KEEL_HEALTH_WARN : KEEL_HEALTH_PASS;
}

int keel_health_memory_verdict(uint64_t rss, uint64_t limit, unsigned warn_pct,
                               unsigned fail_pct)
{
    if (!limit)
        return KEEL_HEALTH_PASS;
    /* rss * 100 > limit * pct, without overflow for any real size */
    long double used = (long double)rss * 100.0L;
    if (used > (long double)limit * fail_pct)
        return KEEL_HEALTH_FAIL;
    if (used > (long double)limit * warn_pct)
        return KEEL_HEALTH_WARN;
    return KEEL_HEALTH_PASS;
}

static uint64_t read_u64_file(const char *path, int *ok)
{
    *ok = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char buf[64] = "";
    if (!fgets(buf, sizeof(buf), f)) {
        fclose(f);
        return 0;
    }
    fclose(f);
    if (!strncmp(buf, "max", 3))
        return 0; /* no limit; ok stays 0 */
    char *end;
    unsigned long long v = strtoull(buf, &end, 10);
    if (end == buf)
        return 0;
    *ok = 1;
    return (uint64_t)v;
}

uint64_t keel_health_memory_limit(uint64_t limit)
{
    if (limit)
        return limit;
    int ok;
    uint64_t v = read_u64_file("/sys/fs/cgroup/memory.max", &ok);
    if (ok && v)
        return v;
    v = read_u64_file("/sys/fs/cgroup/memory/memory.limit_in_bytes", &ok);
    /* v1 says "no limit" with a huge number (PAGE_COUNTER_MAX pages) */
    if (ok && v && v < (1ull << 60))
        return v;
    return 0;
}

uint64_t keel_process_rss(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    unsigned long size = 0, resident = 0;
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    return n == 2 ? (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
}

/* ---------------------------------------------------------------- checks */

typedef struct sys_checks {
    keel_server *s;
    keel_health_options o;
    char *path;
    uint64_t limit;
} sys_checks;

static int check_disk(void *arg, char *detail, size_t cap, json_t **data)
{
    sys_checks *sc = arg;
    struct statvfs vfs;
    if (statvfs(sc->path, &vfs) != 0) {
        snprintf(detail, cap, "cannot stat %s: %s", sc->path, strerror(errno));
        return KEEL_HEALTH_FAIL;
    }
    uint64_t bsize = vfs.f_frsize ? vfs.f_frsize : vfs.f_bsize;
    uint64_t free_b = (uint64_t)vfs.f_bavail * bsize, total = (uint64_t)vfs.f_blocks * bsize;
    int v = keel_health_disk_verdict(free_b, sc->o.disk_min_free);
    snprintf(detail, cap, "%.1f MiB free of %.1f MiB on %s%s", (double)free_b / 1048576.0,
             (double)total / 1048576.0, sc->path,
             v == KEEL_HEALTH_PASS ? "" : " (below HEALTH_DISK_MIN_FREE)");
    *data = json_pack("{s:s,s:I,s:I,s:I,s:f}", "path", sc->path, "free_bytes",
                      (json_int_t)free_b, "total_bytes", (json_int_t)total, "min_free_bytes",
                      (json_int_t)sc->o.disk_min_free, "free_ratio",
                      total ? (double)free_b / (double)total : 0.0);
    return v;
}

static int check_memory(void *arg, char *detail, size_t cap, json_t **data)
{
    sys_checks *sc = arg;
    uint64_t rss = keel_process_rss();
    int v = keel_health_memory_verdict(rss, sc->limit, sc->o.memory_warn_pct,
                                       sc->o.memory_fail_pct);
    double pct = sc->limit ? (double)rss * 100.0 / (double)sc->limit : 0;
    if (sc->limit)
        snprintf(detail, cap, "rss %.1f MiB, %.1f%% of %.1f MiB", (double)rss / 1048576.0, pct,
                 (double)sc->limit / 1048576.0);
    else
        snprintf(detail, cap, "rss %.1f MiB, no limit (MEMORY_LIMIT)",
                 (double)rss / 1048576.0);
    *data = json_pack("{s:I,s:I,s:f,s:i,s:i}", "rss_bytes", (json_int_t)rss, "limit_bytes",
                      (json_int_t)sc->limit, "used_pct", pct, "warn_pct",
                      (int)sc->o.memory_warn_pct, "fail_pct", (int)sc->o.memory_fail_pct);
    return v;
}

static int check_pools(void *arg, char *detail, size_t cap, json_t **data)
{
    sys_checks *sc = arg;
    keel_pool *pools[16];
    size_t n = keel_server_pools(sc->s, pools, 16);
    int v = KEEL_HEALTH_PASS;
    size_t off = 0;
    json_t *arr = json_array();
    detail[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        uint64_t q = keel_pool_queued(pools[i]), max = keel_pool_queue_max(pools[i]);
        uint64_t busy = keel_pool_busy(pools[i]);
        unsigned threads = keel_pool_threads(pools[i]);
        double sat = max ? (double)q / (double)max : 0;
        if (max && q * 100 > max * sc->o.pool_warn_pct)
            v = KEEL_HEALTH_WARN;
        if (off < cap) {
            int k = snprintf(detail + off, cap - off, "%s%s %llu/%u busy, %llu/%llu queued",
                             off ? ", " : "", keel_pool_name(pools[i]),
                             (unsigned long long)busy, threads, (unsigned long long)q,
                             (unsigned long long)max);
            if (k > 0)
                off += (size_t)k;
        }
        json_array_append_new(arr, json_pack("{s:s,s:i,s:I,s:I,s:I,s:f}", "pool",
                                             keel_pool_name(pools[i]), "threads", (int)threads,
                                             "busy", (json_int_t)busy, "queued", (json_int_t)q,
                                             "queue_max", (json_int_t)max, "saturation", sat));
    }
    *data = json_pack("{s:o,s:i}", "pools", arr, "warn_pct", (int)sc->o.pool_warn_pct);
    return v;
}

static void sys_free(void *arg)
{
    sys_checks *sc = arg;
    keel_free(sc->path);
    keel_free(sc);
}

void keel_health_register_system(keel_health *h, keel_server *s,
                                 const keel_health_options *o, const char *data_dir)
{
    sys_checks *sc = keel_calloc(1, sizeof(*sc));
    sc->s = s;
    sc->o = *o;
    sc->o.disk_path = NULL;
    sc->path = keel_strdup(o->disk_path && *o->disk_path ? o->disk_path
                           : data_dir && *data_dir     ? data_dir
                                                       : ".");
    sc->limit = keel_health_memory_limit(o->memory_limit);
    keel_health_set_cache_ttl(h, o->cache_ttl_ms);
    keel_health_use_pool(h, s);
    keel_health_check disk = {.name = "disk", .timeout_ms = 1000, .data_fn = check_disk,
                              .arg = sc};
    keel_health_check mem = {.name = "memory", .critical = 1, .data_fn = check_memory,
                             .arg = sc, .flags = KEEL_HEALTH_INLINE};
    keel_health_check pool = {.name = "work_pool", .data_fn = check_pools, .arg = sc,
                              .flags = KEEL_HEALTH_INLINE};
    keel_health_add(h, &disk);
    keel_health_add(h, &mem);
    keel_health_add(h, &pool);
    keel__health_own(h, sc, sys_free);
}
