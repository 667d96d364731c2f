/* distributed.c — the /distributed/ routes: what an operator asks of a
 * running instance (info, effective config, Redis status) and endpoints
 * that show keel's distributed primitives at work (the rate limiter; the
 * cache, locks and events register theirs from here too). Everything but
 * /distributed/info needs an admin, or a service API key with the
 * admin:access scope. */
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/app.h"
#include "keel/ratelimit.h"
#include "keel/redis.h"

static struct {
    keel_service *svc;
    const keel_instance_options *inst; /* INSTANCE_ID, REGION, ZONE */
    char instance[128];
    uint64_t started_ns;
} D;

const char *app_instance_id(void)
{
    return D.instance;
}

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

/* GET /distributed/info — who answers: for load balancer debugging. */
static keel_flow info(keel_req *r)
{
    const keel_config *cfg = keel_service_config(D.svc);
    const keel_instance_options *inst = D.inst;
    json_t *o = json_pack("{s:s,s:s,s:s,s:s?,s:s?,s:f,s:s,s:b}", "service", cfg->service_name,
                          "instance_id", D.instance, "version", KEEL_VERSION, "region",
                          *inst->region ? inst->region : NULL, "zone",
                          *inst->zone ? inst->zone : NULL, "uptime_s",
                          (double)(keel_now_ns() - D.started_ns) / 1e9, "environment", cfg->env,
                          "redis", keel_service_redis(D.svc) != NULL);
    keel_respond_json(r, 200, o);
    return KEEL_DONE;
}

/* GET /distributed/config — the effective configuration, secrets (and the
 * password in URLs) redacted: keel_config_print's lines as an object. */
static keel_flow config(keel_req *r)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        keel_respond_problem(r, 500, "out of memory");
        return KEEL_DONE;
    }
    keel_config_print(keel_service_config(D.svc), f);
    fclose(f);
    json_t *o = json_object();
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        json_object_set_new(o, line, json_string(eq + 1));
    }
    free(text);
    keel_res_set_header(r, "Cache-Control", "no-store");
    keel_respond_json(r, 200, o);
    return KEEL_DONE;
}

/* GET /distributed/redis/status — the client's state per worker and a few
 * lines of the server's INFO. */
static const char *const info_fields[] = {"redis_version", "redis_mode", "role",
                                          "uptime_in_seconds", "connected_clients",
                                          "used_memory_human", "maxmemory_policy",
                                          "instantaneous_ops_per_sec", NULL};

static void redis_info_done(void *arg, int status, struct redisReply *reply)
{
    keel_req *r = arg;
    if (keel_req_is_finished(r)) {
        keel_req_unhold(r);
        return;
    }
    json_t *o = keel_redis_status_json(keel_service_redis(D.svc));
    if (status == 0 && reply && reply->type == REDIS_REPLY_STRING) {
        json_t *inf = json_object();
        char *copy = strndup(reply->str, reply->len);
        for (char *line = strtok(copy, "\r\n"); line; line = strtok(NULL, "\r\n")) {
            char *colon = strchr(line, ':');
            if (!colon)
                continue;
            *colon = '\0';
            for (size_t i = 0; info_fields[i]; i++)
                if (!strcmp(line, info_fields[i]))
                    json_object_set_new(inf, line, json_string(colon + 1));
        }
        free(copy);
        json_object_set_new(o, "info", inf);
    } else {
        json_object_set_new(o, "info", json_null());
        json_object_set_new(o, "info_error", json_string(status ? keel_strerror(status)
                                                                : "unexpected reply"));
    }
    keel_res_set_header(r, "Cache-Control", "no-store");
    keel_respond_json(r, 200, o);
    keel_req_unhold(r);
}

static keel_flow redis_status(keel_req *r)
{
    keel_redis *rd = keel_service_redis(D.svc);
    if (!rd) {
        keel_respond_json(r, 200, json_pack("{s:b,s:s}", "configured", 0, "detail",
                                            "REDIS_URL is not set: in-process fallbacks"));
        return KEEL_DONE;
    }
    if (keel_redis_command(rd, keel_req_worker(r), redis_info_done, r, "INFO") < 0) {
        json_t *o = keel_redis_status_json(rd);
        json_object_set_new(o, "info", json_null());
        json_object_set_new(o, "info_error", json_string("Redis is unavailable"));
        keel_respond_json(r, 200, o);
        return KEEL_DONE;
    }
    keel_req_hold(r);
    return KEEL_SUSPEND;
}

#define ADMIN .auth = "any", .permission = "admin:access", .flags = KEEL_ROUTE_SECRET

static const keel_route distributed_routes[] = {
    {.name = "distributed.rate_limit_test", .method = "GET",
     .path = "/distributed/rate-limit/test", .handler = rate_limit_test,
     .summary = "Counts against the strict rate-limit tier and shows what is left",
     .rate_limit = "strict"},
    {.name = "distributed.info", .method = "GET", .path = "/distributed/info", .handler = info,
     .summary = "Service name, instance id, version, region/zone, uptime"},
    {.name = "distributed.config", .method = "GET", .path = "/distributed/config",
     .handler = config, .summary = "The effective configuration, secrets redacted", ADMIN},
    {.name = "distributed.redis_status", .method = "GET", .path = "/distributed/redis/status",
     .handler = redis_status, .summary = "Redis connection state per worker and server INFO",
     ADMIN},
};

int app_distributed_setup(keel_service *svc)
{
    const keel_instance_options *inst =
        keel_config_get(keel_service_config(svc), &keel_instance_config);
    D.svc = svc;
    D.inst = inst;
    D.started_ns = keel_now_ns();
    if (inst->instance_id && *inst->instance_id) {
        snprintf(D.instance, sizeof(D.instance), "%s", inst->instance_id);
    } else {
        char host[64] = "localhost";
        gethostname(host, sizeof(host) - 1);
        snprintf(D.instance, sizeof(D.instance), "%s-%ld", host, (long)getpid());
    }
    if (app_dist_cache_setup(svc) < 0)
        return -1;
    if (app_dist_lock_setup(svc) < 0) /* locks and the event bus: dist_lock.c */
        return -1;
    return keel_service_add_routes(svc, distributed_routes,
                                   sizeof(distributed_routes) / sizeof(distributed_routes[0]));
}
