/* chat.c — serves the realtime browser client and the /chat demo page
 * (docs/realtime.md, "Browser client" and "The /chat page"). The files
 * live in web/chat/ and are compiled into the binary (build/gen/
 * chat_assets.c from scripts/embed_web.sh), so nothing is read from disk
 * and nothing comes from a CDN. Each answer carries a strict CSP: the page
 * runs only its own module scripts and style sheet (no inline script or
 * style), and connects only to its own origin (fetch and the WebSocket). */
#include <string.h>

#include "app/chat.h"

/* CSP of the page and of the scripts ('self' covers ws:/wss: to the same
 * host in CSP level 3 browsers). */
#define CHAT_CSP                                                                   \
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " \
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

static int chat_validate(void *opts, const keel_config *cfg, FILE *err)
{
    (void)err;
    app_chat_options *o = opts;
    if (o->page < 0)
        o->page = !cfg->production;
    return 0;
}

#define AT(f) KEEL_CONFIG_AT(app_chat_options, f)
static const keel_config_var chat_vars[] = {
    {.name = "CHAT_PAGE", .type = KEEL_CONFIG_BOOL, .def = "", AT(page),
     .help = "serve the /chat demo page (a chat over GET /ws); default true, false in "
             "production"},
    {.name = "REALTIME_CLIENT_JS", .type = KEEL_CONFIG_BOOL, .def = "true", AT(client_js),
     .help = "serve the browser client GET /realtime/client.js (an ES module)"},
};
#undef AT

const keel_config_module app_chat_config = KEEL_CONFIG_MODULE(
    "chat",
    "The realtime browser client (GET /realtime/client.js) and the /chat demo page "
    "(src/app/chat.c, web/chat/, docs/realtime.md).",
    app_chat_options, chat_vars, chat_validate);

static const app_asset *asset(const char *name)
{
    for (size_t i = 0; i < app_chat_assets_count; i++)
        if (!strcmp(app_chat_assets[i].name, name))
            return &app_chat_assets[i];
    return NULL;
}

static keel_flow h_asset(keel_req *r)
{
    const app_asset *a = keel_req_route(r)->data;
    keel_res_header(r, "Content-Security-Policy", CHAT_CSP);
    keel_res_header(r, "X-Content-Type-Options", "nosniff");
    keel_res_header(r, "Cache-Control", "no-cache");
    keel_respond(r, 200, a->content_type, a->data, a->len);
    return KEEL_DONE;
}

static struct {
    const char *name, *path, *file, *summary;
    int page; /* 1: a /chat file (CHAT_PAGE), 0: the client (REALTIME_CLIENT_JS) */
} const files[] = {
    {"realtime.client", "/realtime/client.js", "client.js",
     "The realtime browser client (an ES module; docs/realtime.md)", 0},
    {"chat.page", "/chat", "index.html", "The chat demo page (CHAT_PAGE)", 1},
    {"chat.script", "/chat/chat.js", "chat.js", "The chat page's script", 1},
    {"chat.style", "/chat/chat.css", "chat.css", "The chat page's style sheet", 1},
};
#define NFILES (sizeof(files) / sizeof(files[0]))

static keel_route routes[NFILES];

int app_chat_setup(keel_service *svc)
{
    const app_chat_options *o = keel_config_get(keel_service_config(svc), &app_chat_config);
    size_t n = 0;
    for (size_t i = 0; i < NFILES; i++) {
        if (files[i].page ? !o->page : !o->client_js)
            continue;
        const app_asset *a = asset(files[i].file);
        if (!a) {
            keel_log(KEEL_LOG_ERROR, "chat: a file is missing from the binary", "{s:s}", "file",
                     files[i].file);
            return -1;
        }
        routes[n++] = (keel_route){.name = files[i].name, .method = "GET",
                                   .path = files[i].path, .handler = h_asset,
                                   .summary = files[i].summary, .data = (void *)a};
    }
    return n ? keel_service_add_routes(svc, routes, n) : 0;
}
