/* keel/cron.h — cron expressions and fixed intervals: parsing, the next
 * fire time, the one tick to run after downtime, and the CRON_JOBS list.
 *
 * Expressions (docs/scheduler.md has the full grammar):
 *
 *     minute hour day-of-month month day-of-week     "*\/15 9-17 * * MON-FRI"
 *     @hourly @daily (@midnight) @weekly @monthly @yearly (@annually)
 *     @every 30s | 5m | 2h | 1d                        (aligned to the epoch)
 *
 * Fields take `*`, numbers, names (JAN-DEC, SUN-SAT; 7 is Sunday too),
 * ranges `a-b`, steps `*\/n`, `a-b/n`, `a/n` (= a-max/n) and lists `x,y`.
 * When both day-of-month and day-of-week are restricted (neither starts
 * with `*`), a day matches when EITHER matches (the classic cron rule);
 * otherwise both must. Times are UTC; an expression may start with
 * `CRON_TZ=+HH:MM ` (or -HH:MM, or UTC) for a fixed offset — fixed: there is
 * no daylight-saving rule, the offset applies all year.
 *
 * Times are Unix seconds (UTC). The parser allocates nothing; a
 * keel_cron is a small value to copy freely.
 */
#ifndef KEEL_CRON_H
#define KEEL_CRON_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_cron {
    uint64_t minutes;  /* bit m: minute m (0-59) */
    uint32_t hours;    /* bit h: hour h (0-23) */
    uint32_t mdays;    /* bit d: day of month d (1-31) */
    uint16_t months;   /* bit m: month m (1-12) */
    uint8_t wdays;     /* bit w: day of week w (0 = Sunday .. 6) */
    uint8_t dom_star;  /* the day-of-month field started with '*' */
    uint8_t dow_star;  /* the day-of-week field started with '*' */
    uint64_t every_s;  /* > 0: a fixed interval (@every), the fields unused */
    int32_t offset_s;  /* fixed offset from UTC of the fields (CRON_TZ=) */
} keel_cron;

/* The longest expression keel_cron_parse accepts. */
#define KEEL_CRON_MAX_EXPR 256

/* Parses expr into *out. 0, or KEEL_EINVAL with a message naming the
 * field in err (e.g. "minute: 61 is out of range 0-59",
 * "day-of-week: unknown name \"FUNDAY\""); err may be NULL. A day-of-month
 * and month combination that never occurs (30 February) with an
 * unrestricted day-of-week is refused too: it would never fire. */
int keel_cron_parse(const char *expr, keel_cron *out, char *err, size_t errlen);

/* The first fire time strictly after `after` (Unix seconds), or -1 when
 * there is none in the next 30 years (cannot happen for a parsed
 * expression, but callers need not trust that). */
int64_t keel_cron_next(const keel_cron *c, int64_t after);

/* The missed-tick policy: the one tick to run now, given the last fire
 * time that ran (or, for a schedule that never ran, the time it was
 * registered). It is the latest fire time t with last < t <= now, or -1
 * when no tick is due. However many slots downtime missed, this yields
 * one: after it runs, pass it as `last` next time (the following ticks
 * come from keel_cron_next(c, now)). A queue keys the job by (schedule,
 * t), so instances that compute the same t enqueue it once. */
int64_t keel_cron_due(const keel_cron *c, int64_t last, int64_t now);

/* ---------------------------------------------------------------- CRON_JOBS
 *
 * CRON_JOBS declares schedules in configuration, entries separated by ';'
 * (or newlines), each `name = expression => kind`:
 *
 *     CRON_JOBS="cleanup=0 3 * * * => sessions.prune; digest=@every 15m => mail.digest"
 *
 * name: 1-63 of [A-Za-z0-9_.-], unique; kind: 1-63 of [A-Za-z0-9_.:-], the
 * job kind the queue runs at each tick. Spaces around the parts are
 * ignored; an empty entry (a trailing ';') is allowed. */
typedef struct keel_cron_entry {
    char name[64];
    char kind[64];
    char expr[KEEL_CRON_MAX_EXPR];
    keel_cron cron;
} keel_cron_entry;

/* Parses spec into a heap array (*out, keel_free; NULL when there are no
 * entries) of *n entries. 0, or KEEL_EINVAL with a message naming the
 * entry and the field in err. */
int keel_cron_jobs_parse(const char *spec, keel_cron_entry **out, size_t *n, char *err,
                         size_t errlen);

/* The `cron` configuration module: CRON_JOBS, checked at start-up. */
typedef struct keel_cron_options {
    char *jobs; /* CRON_JOBS */
} keel_cron_options;
extern const keel_config_module keel_cron_config;

#ifdef __cplusplus
}
#endif
#endif
