/* distributed.c — the /distributed/ routes: endpoints that show keel's distributed
 * primitives at work. For now the rate limiter; the Redis-backed cache,
 * locks and events join here. */
#include <jansson.h>

#include "app/app.h"
#include "keel/ratelimit.h"

/* GET /distributed/rate-limit/test — in the strict tier: each call counts,
 * and the answer shows what is left. */
static keel_flow rate_limit_test(keel_req *r)
{
    const keel_rl_result *res = keel_req_get_local(r, KEEL_RL_RESULT);
    json_t *o = json_pack("{s:s,s:s}", "tier", "strict", "client", keel_req_client_addr(r));
    if (res) {
        json_object_set_new(o, "limit", json_integer((json_int_t)res->limit));
        json_object_set_new(o, "remaining", json_integer((json_int_t)res->remaining));
        json_object_set_new(o, "reset_seconds",
                            json_integer((json_int_t)((res->reset_ms + 999) / 1000)));
    } else {
        json_object_set_new(o, "limited", json_false()); /* RATE_LIMIT_ENABLED=false */
    }
    keel_respond_json(r, 200, o);
    return KEEL_DONE;
}

static const keel_route distributed_routes[] = {
    {.name = "distributed.rate_limit_test", .method = "GET",
     .path = "/distributed/rate-limit/test", .handler = rate_limit_test,
     .summary = "Counts against the strict rate-limit tier and shows what is left",
     .rate_limit = "strict"},
};

int app_distributed_setup(keel_service *svc)
{
    if (app_dist_lock_setup(svc) < 0) /* locks and the event bus: dist_lock.c */
        return -1;
    return keel_service_add_routes(svc, distributed_routes,
                                   sizeof(distributed_routes) / sizeof(distributed_routes[0]));
}
