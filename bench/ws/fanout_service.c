/* fanout_service.c — keel's side of the WebSocket fan-out and idle
 * connection benchmark (bench/ws/run.sh): a service of its own on libkeel
 * with one WebSocket route.
 *
 *   GET /ws/fanout   WebSocket; the upgrade needs `Authorization: Bearer
 *                    <HS256 JWT>` signed with FANOUT_JWT_SECRET (401
 *                    before the upgrade otherwise). Every message a client
 *                    sends is serialised once (keel_ws_frame_new) and
 *                    written to every connection of the route, the sender
 *                    included, with keel_ws_broadcast.
 *
 * The rooms of the realtime issue are not merged yet: this stands in for
 * "one room message to every member" with the transport's own broadcast,
 * which is what a room fan-out ends in.
 *
 * Build: make build/bench/fanout_service (make bench-ws builds it);
 * run:   FANOUT_JWT_SECRET=... build/bench/fanout_service serve */
#include <keel/keel.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

typedef struct fanout_options {
    char *jwt_secret;
} fanout_options;

static const keel_config_var fanout_vars[] = {
    {.name = "FANOUT_JWT_SECRET", .type = KEEL_CONFIG_STR, .def = "keel-bench-secret",
     KEEL_CONFIG_AT(fanout_options, jwt_secret), .flags = KEEL_CONFIG_SECRET | KEEL_CONFIG_REQUIRED,
     .help = "HS256 secret of the Bearer tokens GET /ws/fanout accepts"},
};

static const keel_config_module fanout_config =
    KEEL_CONFIG_MODULE("fanout", "The fan-out benchmark service's own variables.", fanout_options,
                       fanout_vars, NULL);

static keel_jwt_cfg jwt;          /* set once in setup, before serving */
static keel_server *server;       /* idem */
static const keel_ws_handler fanout_handler;

/* The authenticated user of a connection: its subject, as a service
 * would keep it (freed in on_close). */
typedef struct fanout_user {
    char sub[64];
} fanout_user;

static void unauthorized(keel_req *r, const char *detail)
{
    keel_res_set_header(r, "WWW-Authenticate", "Bearer realm=\"keel-bench\"");
    keel_respond_problem(r, 401, detail);
}

/* The upgrade: a valid Bearer token or 401, then the handshake. */
static keel_flow fanout_upgrade(keel_req *r)
{
    keel_str h = keel_req_header(r, "authorization");
    if (!h.ptr || h.len < 7 || strncasecmp(h.ptr, "Bearer ", 7) != 0) {
        unauthorized(r, "expected Authorization: Bearer <token>");
        return KEEL_DONE;
    }
    keel_jwt_claims c;
    keel_jwt_verify_opts opts = {.require = 0};
    keel_jwt_error e = keel_jwt_verify_ex(&jwt, &opts, h.ptr + 7, h.len - 7, (int64_t)time(NULL), &c);
    if (e) {
        unauthorized(r, keel_jwt_strerror(e));
        return KEEL_DONE;
    }
    if (!c.sub[0]) {
        unauthorized(r, "the token names no subject");
        return KEEL_DONE;
    }
    fanout_user *u = malloc(sizeof(*u));
    if (!u) {
        keel_respond_problem(r, 503, "out of memory");
        return KEEL_DONE;
    }
    memcpy(u->sub, c.sub, sizeof(u->sub));
    return keel_ws_accept(r, u);
}

static void fanout_message(keel_ws *ws, keel_ws_opcode op, const void *data, size_t len)
{
    (void)ws;
    keel_ws_frame *f = keel_ws_frame_new(op, data, len);
    if (!f)
        return;
    keel_ws_broadcast(server, &fanout_handler, f);
    keel_ws_frame_unref(f);
}

static void fanout_close(keel_ws *ws, int code, const char *reason, size_t reason_len)
{
    (void)code;
    (void)reason;
    (void)reason_len;
    free(keel_ws_user(ws));
}

static const keel_ws_handler fanout_handler = {.on_message = fanout_message,
                                               .on_close = fanout_close};

static const keel_route routes[] = {
    {.name = "fanout", .method = "GET", .path = "/ws/fanout", .handler = fanout_upgrade,
     .summary = "WebSocket (Bearer JWT): every message to every connection",
     .websocket = &fanout_handler},
};

static int setup(keel_service *svc, void *arg)
{
    (void)arg;
    const fanout_options *o = keel_config_get(keel_service_config(svc), &fanout_config);
    jwt = (keel_jwt_cfg){.secret = (const uint8_t *)o->jwt_secret,
                         .secret_len = strlen(o->jwt_secret)};
    server = keel_service_server(svc);
    return keel_service_add_routes(svc, routes, sizeof(routes) / sizeof(routes[0]));
}

int main(int argc, char **argv)
{
    static const keel_config_module *const config_modules[] = {&fanout_config};
    keel_app app = {.name = "fanout-service", .version = "1.0.0", .setup = setup,
                    .config_modules = config_modules, .nconfig_modules = 1};
    return keel_main(argc, argv, &app);
}
