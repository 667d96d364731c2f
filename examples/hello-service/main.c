/* hello-service — a service of its own on libkeel: two routes and one
 * middleware, with keel's config, logs, health, metrics and drain.
 * Build: make build/hello-service; run: build/hello-service serve */
#include <jansson.h>
#include <keel/keel.h>
#include <string.h>

/* A middleware of our own: tag every response with the API version. */
static keel_flow api_version(keel_req *r, void *data)
{
    keel_res_header(r, "X-Api-Version", data);
    return KEEL_NEXT;
}

/* Responses are built with jansson, which escapes what must be escaped
 * (quotes, backslashes, control characters) and refuses invalid UTF-8. */
static keel_flow greet(keel_req *r)
{
    keel_str name = keel_req_param(r, "name");
    if (name.len > 64) {
        keel_respond_problem(r, 400, "a name is at most 64 bytes");
        return KEEL_DONE;
    }
    char text[80] = "hello, ";
    size_t pre = strlen(text);
    memcpy(text + pre, name.ptr, name.len);
    json_t *body = json_pack("{s:s%}", "greeting", text, pre + name.len);
    if (!body) {
        keel_respond_problem(r, 400, "the name is not valid UTF-8");
        return KEEL_DONE;
    }
    keel_respond_json(r, 200, body);
    return KEEL_DONE;
}

static keel_flow hello(keel_req *r)
{
    keel_respond_text(r, 200, "hello from hello-service");
    return KEEL_DONE;
}

static const keel_route routes[] = {
    {.name = "hello", .method = "GET", .path = "/", .handler = hello,
     .summary = "Says hello"},
    {.name = "greet", .method = "GET", .path = "/greet/:name", .handler = greet,
     .summary = "Greets someone by name"},
};

static int setup(keel_service *svc, void *arg)
{
    (void)arg;
    keel_middleware mw = {.name = "api_version", .on_request = api_version, .data = "1"};
    keel_service_use(svc, &mw);
    return keel_service_add_routes(svc, routes, sizeof(routes) / sizeof(routes[0]));
}

int main(int argc, char **argv)
{
    keel_app app = {.name = "hello-service", .version = "1.0.0", .setup = setup};
    return keel_main(argc, argv, &app);
}
