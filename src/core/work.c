/* work.c — the work pool: a bounded queue of blocking jobs served by a
 * fixed set of threads. A finished job goes to its worker's mailbox and
 * its completion runs on that worker's loop.
 *
 * Why not uv_queue_work: libuv's pool is process-wide, sized once by an
 * environment variable and unbounded; keel needs a bound (a full queue is
 * a 503 with Retry-After, not an ever-growing backlog) and cancellation of
 * jobs whose request has gone.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/server_internal.h"
#include "keel/log.h"

struct keel_work {
    keel_work *next;
    keel_worker *w;
    keel_req *req;               /* NULL for keel_worker_submit */
    keel_work_fn work;
    keel_after_work_cb after_req;
    uint64_t queued_ns;          /* when it entered the queue */
    void (*after)(void *arg, int status);
    void (*posted)(void *arg);   /* keel_worker_post: no pool, no pending count */
    void *arg;
    int status;
};

struct keel_pool {
    uv_mutex_t mu;
    uv_cond_t cond;
    keel_work *head, *tail;
    uint64_t queued;
    uint64_t max;
    uint64_t rejected;
    uint64_t busy;      /* threads running a job (atomic) */
    keel_server *srv;   /* its observer, if any */
    int stop;
    unsigned nthreads;
    uv_thread_t *threads;
    keel_pool_opts opts;
};

static void deliver(keel_work *job)
{
    keel_worker *w = job->w;
    job->next = NULL;
    uv_mutex_lock(&w->mbox_mu);
    if (w->mbox_tail)
        w->mbox_tail->next = job;
    else
        w->mbox_head = job;
    w->mbox_tail = job;
    uv_mutex_unlock(&w->mbox_mu);
    uv_async_send(&w->async);
}

/* Lowers this thread's CPU priority by p->opts.nice (Linux: nice is per
 * thread, and raising it needs no privilege). With the loops at the
 * process's priority, the scheduler runs a loop the moment it wakes
 * instead of letting it wait behind CPU-bound jobs on the same core: a
 * /health probe while argon2 logins fill the pool. */
static void lower_priority(const keel_pool *p)
{
    if (!p->opts.nice)
        return;
    pid_t tid = (pid_t)syscall(SYS_gettid);
    errno = 0;
    int cur = getpriority(PRIO_PROCESS, (id_t)tid);
    if (cur == -1 && errno)
        return;
    int want = cur + (int)p->opts.nice;
    if (setpriority(PRIO_PROCESS, (id_t)tid, want > 19 ? 19 : want) < 0)
        keel_log(KEEL_LOG_WARN, "cannot lower a pool thread's priority", "{s:s,s:s}", "pool",
                 p->opts.name, "error", strerror(errno));
}

static void pool_thread(void *arg)
{
    keel_pool *p = arg;
    lower_priority(p);
    if (p->opts.thread_start)
        p->opts.thread_start(p->opts.arg);
    for (;;) {
        uv_mutex_lock(&p->mu);
        while (!p->head && !p->stop)
            uv_cond_wait(&p->cond, &p->mu);
        if (!p->head && p->stop) {
            uv_mutex_unlock(&p->mu);
            if (p->opts.thread_stop)
                p->opts.thread_stop(p->opts.arg);
            keel_log_thread_close();
            return;
        }
        keel_work *job = p->head;
        p->head = job->next;
        if (!p->head)
            p->tail = NULL;
        p->queued--;
        uv_mutex_unlock(&p->mu);
        if (p->srv && p->srv->work_observer)
            p->srv->work_observer(p->srv->work_observer_arg, p, keel_now_ns() - job->queued_ns);
        __atomic_fetch_add(&p->busy, 1, __ATOMIC_RELAXED);

        /* A job whose request is gone is not started. */
        if (job->req && __atomic_load_n(&job->req->canceled, __ATOMIC_ACQUIRE)) {
            job->status = KEEL_ECANCELED;
        } else {
            /* the request's ids in every line the job logs */
            if (job->req)
                keel_log_set_context(job->req->request_id, job->req->trace_id);
            job->work(job->arg);
            keel_log_set_context(NULL, NULL);
            job->status = 0;
        }
        __atomic_fetch_sub(&p->busy, 1, __ATOMIC_RELAXED);
        deliver(job);
    }
}

keel_pool *keel__pool_new(keel_server *s, const keel_pool_opts *opts)
{
    keel_pool *p = keel_calloc(1, sizeof(*p));
    p->srv = s;
    uv_mutex_init(&p->mu);
    uv_cond_init(&p->cond);
    p->opts = *opts;
    p->opts.name = keel_strdup(opts->name ? opts->name : "pool");
    unsigned threads = opts->threads ? opts->threads : 1;
    p->max = opts->queue_max ? opts->queue_max : 1024;
    p->nthreads = threads;
    p->threads = keel_calloc(threads, sizeof(uv_thread_t));
    for (unsigned i = 0; i < threads; i++) {
        uv_thread_options_t opt = {UV_THREAD_HAS_STACK_SIZE, 1 << 20};
        uv_thread_create_ex(&p->threads[i], &opt, pool_thread, p);
    }
    return p;
}

void keel__pool_free(keel_pool *p)
{
    if (!p)
        return;
    uv_mutex_lock(&p->mu);
    p->stop = 1;
    uv_cond_broadcast(&p->cond);
    uv_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++)
        uv_thread_join(&p->threads[i]);
    while (p->head) {
        keel_work *j = p->head;
        p->head = j->next;
        keel_free(j);
    }
    keel_free(p->threads);
    keel_free((char *)p->opts.name);
    uv_cond_destroy(&p->cond);
    uv_mutex_destroy(&p->mu);
    keel_free(p);
}

uint64_t keel_pool_queued(const keel_pool *p)
{
    return __atomic_load_n(&p->queued, __ATOMIC_RELAXED);
}

uint64_t keel_pool_rejected(const keel_pool *p)
{
    return __atomic_load_n(&p->rejected, __ATOMIC_RELAXED);
}

uint64_t keel_pool_busy(const keel_pool *p)
{
    return __atomic_load_n(&p->busy, __ATOMIC_RELAXED);
}

const char *keel_pool_name(const keel_pool *p)
{
    return p->opts.name;
}

unsigned keel_pool_threads(const keel_pool *p)
{
    return p->nthreads;
}

uint64_t keel_pool_queue_max(const keel_pool *p)
{
    return p->max;
}

size_t keel_server_pools(const keel_server *s, keel_pool **out, size_t cap)
{
    size_t n = 0;
    if (s->pool && n < cap)
        out[n++] = s->pool;
    for (size_t i = 0; i < s->npools && n < cap; i++)
        out[n++] = s->pools[i];
    return n;
}

void keel_server_set_work_observer(keel_server *s,
                                   void (*fn)(void *arg, const keel_pool *p, uint64_t wait_ns),
                                   void *arg)
{
    s->work_observer = fn;
    s->work_observer_arg = arg;
}

keel_pool *keel_server_pool_new(keel_server *s, const keel_pool_opts *opts)
{
    keel_pool *p = keel__pool_new(s, opts);
    s->pools = keel_realloc(s->pools, (s->npools + 1) * sizeof(*s->pools));
    s->pools[s->npools++] = p;
    return p;
}

static int enqueue(keel_pool *p, keel_work *job)
{
    uv_mutex_lock(&p->mu);
    if (p->stop || p->queued >= p->max) {
        __atomic_fetch_add(&p->rejected, 1, __ATOMIC_RELAXED);
        uv_mutex_unlock(&p->mu);
        return KEEL_EBUSY;
    }
    job->next = NULL;
    job->queued_ns = keel_now_ns();
    if (p->tail)
        p->tail->next = job;
    else
        p->head = job;
    p->tail = job;
    __atomic_fetch_add(&p->queued, 1, __ATOMIC_RELAXED);
    uv_cond_signal(&p->cond);
    uv_mutex_unlock(&p->mu);
    return 0;
}

int keel_req_submit(keel_req *r, keel_work_fn work, keel_after_work_cb after,
                    void *arg)
{
    return keel_req_submit_pool(r, NULL, work, after, arg);
}

int keel_req_submit_pool(keel_req *r, keel_pool *pool, keel_work_fn work,
                         keel_after_work_cb after, void *arg)
{
    if (!work || !after)
        return KEEL_EINVAL;
    keel_work *job = keel_calloc(1, sizeof(*job));
    job->w = r->w;
    job->req = r;
    job->work = work;
    job->after_req = after;
    job->arg = arg;
    int rc = enqueue(pool ? pool : r->w->srv->pool, job);
    if (rc) {
        keel_free(job);
        return rc;
    }
    r->holds++;
    r->w->pending_jobs++;
    return 0;
}

int keel_worker_submit(keel_worker *w, keel_work_fn work,
                       void (*after)(void *arg, int status), void *arg)
{
    return keel_worker_submit_pool(w, NULL, work, after, arg);
}

int keel_worker_submit_pool(keel_worker *w, keel_pool *p, keel_work_fn work,
                            void (*after)(void *arg, int status), void *arg)
{
    if (!work || !after)
        return KEEL_EINVAL;
    keel_work *job = keel_calloc(1, sizeof(*job));
    job->w = w;
    job->work = work;
    job->after = after;
    job->arg = arg;
    int rc = enqueue(p ? p : w->srv->pool, job);
    if (rc)
        keel_free(job);
    else
        w->pending_jobs++;
    return rc;
}

int keel_worker_post(keel_worker *w, void (*fn)(void *arg), void *arg)
{
    if (!w || !fn)
        return KEEL_EINVAL;
    keel_work *job = keel_calloc(1, sizeof(*job));
    job->w = w;
    job->posted = fn;
    job->arg = arg;
    uv_mutex_lock(&w->mbox_mu);
    if (w->mbox_closed) {
        uv_mutex_unlock(&w->mbox_mu);
        keel_free(job);
        return KEEL_ECLOSED;
    }
    if (w->mbox_tail)
        w->mbox_tail->next = job;
    else
        w->mbox_head = job;
    w->mbox_tail = job;
    /* sent under the lock: the handle cannot be closed meanwhile */
    uv_async_send(&w->async);
    uv_mutex_unlock(&w->mbox_mu);
    return 0;
}

void keel__worker_run_mailbox(keel_worker *w)
{
    uv_mutex_lock(&w->mbox_mu);
    keel_work *job = w->mbox_head;
    w->mbox_head = w->mbox_tail = NULL;
    uv_mutex_unlock(&w->mbox_mu);
    while (job) {
        keel_work *next = job->next;
        if (job->posted) {
            job->posted(job->arg);
            keel_free(job);
            job = next;
            continue;
        }
        w->pending_jobs--;
        if (job->req) {
            keel_req *r = job->req;
            int status = job->status;
            if (r->finished || r->canceled)
                status = KEEL_ECANCELED;
            keel__req_enter(r);
            job->after_req(r, job->arg, status);
            r->holds--;
            keel__req_leave(r);
        } else {
            job->after(job->arg, job->status);
        }
        keel_free(job);
        job = next;
    }
}
