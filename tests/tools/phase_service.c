/* phase_service — a service on libkeel whose routes declare what its
 * middleware may or may not enforce, for tests/e2e/test_phases.py.
 * PHASE_CASE picks the declaration:
 *   ok          a plain route: starts
 *   auth        .auth = "user", no authentication installed
 *   permission  .permission = "users:read", no authentication installed
 *   tier        .rate_limit = "nope", a tier that is not configured
 * Every case but "ok" must refuse to start (exit 2) naming the route. */
#include <keel/keel.h>
#include <stdlib.h>
#include <string.h>

static keel_flow ok(keel_req *r)
{
    keel_respond_text(r, 200, "ok");
    return KEEL_DONE;
}

static keel_route routes[] = {
    {.name = "plain", .method = "GET", .path = "/plain", .handler = ok},
    {.name = "guarded", .method = "GET", .path = "/guarded", .handler = ok},
};

static int setup(keel_service *svc, void *arg)
{
    (void)arg;
    const char *c = getenv("PHASE_CASE");
    keel_route *g = &routes[1];
    if (!c || !strcmp(c, "ok"))
        ;
    else if (!strcmp(c, "auth"))
        g->auth = "user";
    else if (!strcmp(c, "permission"))
        g->permission = "users:read";
    else if (!strcmp(c, "tier"))
        g->rate_limit = "nope";
    return keel_service_add_routes(svc, routes, 2);
}

int main(int argc, char **argv)
{
    keel_app app = {.name = "phase-service", .version = "1.0.0", .setup = setup};
    return keel_main(argc, argv, &app);
}
