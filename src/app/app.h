/* app.h — the reference service's own helpers (src/app only). */
#ifndef KEEL_APP_H
#define KEEL_APP_H

#include "keel/keel.h"

struct json_t;

/* Parses the request body as JSON. On failure answers 415 (not JSON) or
 * 400 (malformed, with the byte offset) and returns NULL. */
struct json_t *app_json_body(keel_req *r);

/* Responds with text and releases a keel_req_hold() — for timer-driven
 * handlers; a no-op response when the request already ended. */
void keel_req_resume_respond_text(keel_req *r, int status, const char *text);

int app_demo_setup(keel_service *svc);
int app_distributed_setup(keel_service *svc);

/* The reference service's migrations, compiled from migrations/ into
 * build/gen/migrations.c by scripts/embed_migrations.sh. */
extern const keel_migration app_migrations[];
extern const size_t app_migrations_count;

#endif
