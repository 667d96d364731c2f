/* hello-service — a service of its own on libkeel: two routes, one
 * middleware and one variable of its own, with keel's config, logs, health,
 * metrics and drain.
 * Build: make build/hello-service; run: build/hello-service serve */
#include <jansson.h>
#include <keel/keel.h>
#include <string.h>

/* A variable of our own, registered with keel's configuration: `config`
 * and `serve --print-config` list it, an empty value stops start-up. */
typedef struct hello_options {
    char *greeting;
} hello_options;

static const keel_config_var hello_vars[] = {
    {.name = "HELLO_GREETING", .type = KEEL_CONFIG_STR, .def = "hello",
     KEEL_CONFIG_AT(hello_options, greeting), .flags = KEEL_CONFIG_REQUIRED,
     .help = "the word GET /greet/:name answers with"},
};

static const keel_config_module hello_config =
    KEEL_CONFIG_MODULE("hello", "hello-service's own variables.", hello_options, hello_vars, NULL);

static const char *greeting = "hello"; /* set once in setup, before serving */

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
    char text[128];
    size_t pre = (size_t)snprintf(text, 64, "%s, ", greeting);
    if (pre > 63)
        pre = 63;
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
    const hello_options *o = keel_config_get(keel_service_config(svc), &hello_config);
    greeting = o->greeting;
    keel_middleware mw = {.name = "api_version", .on_request = api_version, .data = "1"};
    keel_service_use(svc, &mw);
    return keel_service_add_routes(svc, routes, sizeof(routes) / sizeof(routes[0]));
}

int main(int argc, char **argv)
{
    static const keel_config_module *const config_modules[] = {&hello_config};
    keel_app app = {.name = "hello-service", .version = "1.0.0", .setup = setup,
                    .config_modules = config_modules, .nconfig_modules = 1};
    return keel_main(argc, argv, &app);
}
