/* hello-service — a service of its own on libkeel: two routes, one
 * middleware and one variable of its own, with keel's config, logs, health,
 * metrics and drain.
 * Build: make build/hello-service; run: build/hello-service serve */
#include <keel/keel.h>
#include <stdio.h>

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

static keel_flow greet(keel_req *r)
{
    keel_str name = keel_req_param(r, "name");
    char body[160];
    int n = snprintf(body, sizeof(body), "{\"greeting\":\"%.32s, %.*s\"}", greeting,
                     (int)(name.len > 64 ? 64 : name.len), name.ptr);
    for (int i = 13; i < n - 2; i++) /* keep the JSON valid */
        if (body[i] == '"' || body[i] == '\\' || (unsigned char)body[i] < 0x20)
            body[i] = '_';
    keel_respond(r, 200, "application/json", body, (size_t)n);
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
