/* retry.c — retries with exponential backoff and full jitter, on a loop
 * (see keel/resil.h). The waits are libuv timers: nothing blocks. */
#include <sys/random.h>
#include <uv.h>

#include "keel/resil.h"

uint64_t keel_retry_backoff_ms(const keel_retry_opts *o, unsigned attempt, uint64_t rnd)
{
    if (attempt == 0)
        attempt = 1;
    uint64_t cap = o->base_ms;
    for (unsigned i = 1; i < attempt && cap < o->max_delay_ms; i++)
        cap = cap > UINT64_MAX / 2 ? UINT64_MAX : cap * 2;
    if (cap > o->max_delay_ms)
        cap = o->max_delay_ms;
    return cap == UINT64_MAX ? rnd : rnd % (cap + 1);
}

struct keel_retry {
    uv_timer_t timer;
    keel_retry_opts o;
    void (*op)(keel_retry *rt, unsigned attempt, void *arg);
    int (*retryable)(int status, void *arg);
    void (*done)(int status, unsigned attempts, void *arg);
    void *arg;
    unsigned attempt;
    uint64_t start_ms;
    int running;  /* op called, keel_retry_done not yet */
    int canceled;
};

static void on_closed(uv_handle_t *h)
{
    keel_free(h->data);
}

static void on_timer(uv_timer_t *t)
{
    keel_retry *rt = t->data;
    rt->attempt++;
    rt->running = 1;
    rt->op(rt, rt->attempt, rt->arg);
}

int keel_retry_start(struct uv_loop_s *loop, const keel_retry_opts *o,
                     void (*op)(keel_retry *rt, unsigned attempt, void *arg),
                     int (*retryable)(int status, void *arg),
                     void (*done)(int status, unsigned attempts, void *arg), void *arg)
{
    if (!loop || !o || !op || !done || o->max_attempts == 0)
        return KEEL_EINVAL;
    keel_retry *rt = keel_calloc(1, sizeof(*rt));
    rt->o = *o;
    rt->op = op;
    rt->retryable = retryable;
    rt->done = done;
    rt->arg = arg;
    rt->start_ms = uv_now(loop);
    uv_timer_init(loop, &rt->timer);
    rt->timer.data = rt;
    uv_timer_start(&rt->timer, on_timer, 0, 0);
    return 0;
}

void keel_retry_done(keel_retry *rt, int status)
{
    rt->running = 0;
    int again = status < 0 && !rt->canceled && rt->attempt < rt->o.max_attempts &&
                (rt->retryable ? rt->retryable(status, rt->arg) : 1);
    uint64_t delay = 0;
    if (again) {
        uint64_t rnd = 0;
        if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
            rnd = keel_now_ns() * 0x9e3779b97f4a7c15ull;
        delay = keel_retry_backoff_ms(&rt->o, rt->attempt, rnd);
        uint64_t now = uv_now(rt->timer.loop);
        if (rt->o.deadline_ms && now + delay - rt->start_ms >= rt->o.deadline_ms)
            again = 0;
    }
    if (again) {
        uv_timer_start(&rt->timer, on_timer, delay, 0);
        return;
    }
    rt->done(status, rt->attempt, rt->arg);
    uv_close((uv_handle_t *)&rt->timer, on_closed);
}

void keel_retry_cancel(keel_retry *rt, int status)
{
    rt->canceled = 1;
    if (rt->running)
        return; /* its keel_retry_done ends it */
    uv_timer_stop(&rt->timer);
    rt->done(status, rt->attempt, rt->arg);
    uv_close((uv_handle_t *)&rt->timer, on_closed);
}
