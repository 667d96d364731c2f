/* job.c — request-scoped jobs: an asynchronous handler's state in the
 * request's arena, released (cleanup, then wiped) with the request, and
 * the one way to hand it to a pool — or answer 503 when the pool is full.
 *
 * Why the arena is safe for state read on a pool thread: pending work
 * holds the request (req.c: `holds`), and the arena is reset only when the
 * request is released, i.e. after the last `after` ran. So the job lives
 * exactly as long as anything may still touch it, and its cleanup runs
 * once, on the loop, whatever way the request ended.
 */
#include <stddef.h>
#include <string.h>

#include "core/server_internal.h"

typedef struct job_head {
    void (*cleanup)(void *job);
    size_t size;
} job_head;

/* The job starts after the head, aligned for any type. */
#define JOB_OFFSET ((sizeof(job_head) + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1))

static void release_job(void *arg)
{
    job_head *h = arg;
    void *job = (char *)h + JOB_OFFSET;
    if (h->cleanup)
        h->cleanup(job);
    explicit_bzero(job, h->size); /* not optimised away: secrets end here */
}

void *keel_req_job_new(keel_req *r, size_t size, void (*cleanup)(void *job))
{
    job_head *h = keel_arena_alloc(&r->arena, JOB_OFFSET + size);
    memset(h, 0, JOB_OFFSET + size);
    h->cleanup = cleanup;
    h->size = size;
    keel_arena_defer(&r->arena, release_job, h);
    return (char *)h + JOB_OFFSET;
}

keel_flow keel_req_job_submit(keel_req *r, keel_pool *p, keel_work_fn work,
                              keel_after_work_cb after, void *job)
{
    if (keel_req_submit_pool(r, p, work, after, job) == 0)
        return KEEL_SUSPEND;
    keel_respond_unavailable(r, 1, "the server is busy");
    return KEEL_DONE;
}
