/* chat.h — the realtime browser client (GET /realtime/client.js) and the
 * /chat demo page, served from web/chat/ compiled into build/keel
 * (scripts/embed_web.sh; docs/realtime.md, "Browser client"). */
#ifndef KEEL_APP_CHAT_H
#define KEEL_APP_CHAT_H

#include <stddef.h>

#include "app/app.h" /* app_asset */

/* The files of web/chat/ (build/gen/chat_assets.c). */
extern const app_asset app_chat_assets[];
extern const size_t app_chat_assets_count;

typedef struct app_chat_options {
    int page;      /* CHAT_PAGE: serve /chat (-1 until validated: !production) */
    int client_js; /* REALTIME_CLIENT_JS: serve /realtime/client.js */
} app_chat_options;

extern const keel_config_module app_chat_config;

/* Adds GET /realtime/client.js and, with CHAT_PAGE, GET /chat and its
 * script and style sheet. */
int app_chat_setup(keel_service *svc);

#endif
