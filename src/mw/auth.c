/* auth.c — the authentication middleware: a route's `auth` says which
 * credentials it takes ("user": Bearer access token, "apikey": X-API-Key,
 * "any": either), its `permission` what they must grant. 401 with
 * WWW-Authenticate for missing/invalid credentials, 403 for a missing
 * permission. The token is verified here (CPU only); the store then checks
 * what only the database knows (user active, current role, revocation). */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "keel/mw.h"
#include "keel/ratelimit.h"

#define APIKEY_MAX 256

typedef struct auth_cfg {
    keel_jwt_cfg jwt;
    uint8_t *secret;
    char *issuer, *audience;
    keel_auth_store store;
} auth_cfg;

typedef struct auth_call {
    auth_cfg *cfg;
    keel_req *r;
    int pending, in_call;
    int status;
    char role[256]; /* role, or an API key's scopes */
    char keyid[64];
    int is_key;
    keel_jwt_claims claims;
} auth_call;

static void unauthorized(keel_req *r, const char *error, const char *detail, int key)
{
    char h[256];
    if (key)
        snprintf(h, sizeof(h), "ApiKey realm=\"keel\"");
    else if (error)
        snprintf(h, sizeof(h), "Bearer realm=\"keel\", error=\"%s\", error_description=\"%s\"",
                 error, detail);
    else
        snprintf(h, sizeof(h), "Bearer realm=\"keel\"");
    keel_res_set_header(r, "WWW-Authenticate", h);
    keel_res_set_header(r, "Cache-Control", "no-store");
    keel_respond_problem(r, 401, detail);
}

/* The status from the store is in; answers or lets the request on. */
static keel_flow finish(auth_call *c)
{
    keel_req *r = c->r;
    if (c->status == KEEL_EACCES) {
        unauthorized(r, c->is_key ? NULL : "invalid_token",
                     c->is_key ? "the API key is not valid" : "the token has been revoked",
                     c->is_key);
        return KEEL_DONE;
    }
    if (c->status < 0) {
        keel_respond_unavailable(r, 1, "credentials cannot be checked right now");
        return KEEL_DONE;
    }
    keel_arena *a = keel_req_arena(r);
    keel_principal *p = keel_arena_alloc(a, sizeof(*p));
    memset(p, 0, sizeof(*p));
    if (c->is_key) {
        p->kind = "apikey";
        p->id = keel_arena_strndup(a, c->keyid, strlen(c->keyid));
        p->scopes = keel_arena_strndup(a, c->role, strlen(c->role));
    } else {
        p->kind = "user";
        p->id = keel_arena_strndup(a, c->claims.sub, strlen(c->claims.sub));
        p->role = keel_arena_strndup(a, c->role, strlen(c->role));
        p->jti = keel_arena_strndup(a, c->claims.jti, strlen(c->claims.jti));
        p->token_exp = c->claims.exp;
    }
    keel_req_set_local(r, KEEL_PRINCIPAL, p);
    size_t kl = strlen(p->kind), il = strlen(p->id);
    char *subject = keel_arena_alloc(a, kl + il + 2); /* "kind:id", the limiter's key */
    memcpy(subject, p->kind, kl);
    subject[kl] = ':';
    memcpy(subject + kl + 1, p->id, il + 1);
    keel_req_set_local(r, KEEL_RL_SUBJECT, subject);
    return KEEL_NEXT; /* permissions: keel_mw_authz, in the AUTHZ phase */
}

static void on_checked(keel_req *r, void *arg, int status, const char *role)
{
    auth_call *c = arg;
    c->pending = 0;
    c->status = status;
    if (status == 0)
        keel_strlcpy(c->role, role, sizeof(c->role));
    if (c->in_call)
        return;
    if (keel_req_is_finished(r)) {
        keel_req_unhold(r);
        return;
    }
    keel_req_resume(r, finish(c));
    keel_req_unhold(r);
}

static keel_flow wait_or_finish(auth_call *c)
{
    c->in_call = 0;
    if (c->pending) {
        keel_req_hold(c->r);
        return KEEL_SUSPEND;
    }
    return finish(c);
}

static keel_flow by_token(auth_call *c, keel_str h)
{
    keel_req *r = c->r;
    if (h.len > KEEL_JWT_MAX_LEN + 16) {
        unauthorized(r, "invalid_token", "the Authorization header is too long", 0);
        return KEEL_DONE;
    }
    if (h.len < 7 || strncasecmp(h.ptr, "Bearer ", 7) != 0) {
        unauthorized(r, "invalid_request", "expected Authorization: Bearer <token>", 0);
        return KEEL_DONE;
    }
    keel_str t = {h.ptr + 7, h.len - 7};
    while (t.len && *t.ptr == ' ') {
        t.ptr++;
        t.len--;
    }
    keel_jwt_error e = keel_jwt_verify(&c->cfg->jwt, t.ptr, t.len, (int64_t)time(NULL), &c->claims);
    if (e) {
        unauthorized(r, "invalid_token", keel_jwt_strerror(e), 0);
        return KEEL_DONE;
    }
    c->pending = 1;
    c->in_call = 1;
    c->cfg->store.check_user(c->cfg->store.self, r, &c->claims, on_checked, c);
    return wait_or_finish(c);
}

static keel_flow by_key(auth_call *c, keel_str k)
{
    keel_req *r = c->r;
    c->is_key = 1;
    if (k.len == 0 || k.len > APIKEY_MAX) {
        unauthorized(r, NULL, "the API key is not valid", 1);
        return KEEL_DONE;
    }
    c->pending = 1;
    c->in_call = 1;
    c->cfg->store.check_apikey(c->cfg->store.self, r, k.ptr, k.len, c->keyid, on_checked, c);
    return wait_or_finish(c);
}

int keel_auth_check_route(const keel_route *rt, void *data, char *why, size_t cap)
{
    (void)data;
    static const char *const kinds[] = {"none", "user", "apikey", "any"};
    for (size_t i = 0; rt->auth && i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (!strcmp(rt->auth, kinds[i]))
            return 0;
    snprintf(why, cap, "auth = \"%s\" is not one of none, user, apikey, any",
             rt->auth ? rt->auth : "");
    return -1;
}

static keel_flow on_request(keel_req *r, void *data)
{
    auth_cfg *cfg = data;
    const keel_route *rt = keel_req_route(r);
    if (!rt || !keel_route_auth(rt))
        return KEEL_NEXT;
    int want_user = !strcmp(rt->auth, "user") || !strcmp(rt->auth, "any");
    int want_key = !strcmp(rt->auth, "apikey") || !strcmp(rt->auth, "any");
    auth_call *c = keel_arena_alloc(keel_req_arena(r), sizeof(*c));
    memset(c, 0, sizeof(*c));
    c->cfg = cfg;
    c->r = r;
    keel_str h = keel_req_header(r, "authorization");
    keel_str k = keel_req_header(r, "x-api-key");
    if (want_user && h.ptr)
        return by_token(c, h);
    if (want_key && k.ptr)
        return by_key(c, k);
    if (want_user)
        unauthorized(r, NULL, "authentication required: Authorization: Bearer <token>", 0);
    else
        unauthorized(r, NULL, "authentication required: X-API-Key", 1);
    return KEEL_DONE;
}

static void dispose(void *data)
{
    auth_cfg *c = data;
    sodium_memzero(c->secret, c->jwt.secret_len);
    keel_free(c->secret);
    keel_free(c->issuer);
    keel_free(c->audience);
    keel_free(c);
}

keel_middleware keel_mw_auth(const keel_jwt_cfg *cfg, keel_auth_store store)
{
    auth_cfg *c = keel_calloc(1, sizeof(*c));
    c->jwt = *cfg;
    c->secret = keel_malloc(cfg->secret_len ? cfg->secret_len : 1);
    memcpy(c->secret, cfg->secret, cfg->secret_len);
    c->jwt.secret = c->secret;
    c->issuer = keel_strdup(cfg->issuer);
    c->audience = keel_strdup(cfg->audience);
    c->jwt.issuer = c->issuer;
    c->jwt.audience = c->audience;
    c->store = store;
    static const char *const reads[] = {"auth", NULL};
    keel_middleware m = {.name = "auth", .phase = KEEL_PHASE_AUTHN, .on_request = on_request,
                         .dispose = dispose, .data = c, .reads = reads,
                         .check_route = keel_auth_check_route};
    return m;
}

/* ---------------------------------------------------------------- authorization */

/* A permission means nothing without someone to hold it, and a
 * permission no role grants is a typo that would refuse every user. */
static int authz_check_route(const keel_route *rt, void *data, char *why, size_t cap)
{
    (void)data;
    if (!keel_route_auth(rt)) {
        snprintf(why, cap, "permission = \"%s\" but the route takes no credentials (set auth)",
                 rt->permission);
        return -1;
    }
    if (!keel_permission_known(rt->permission)) {
        snprintf(why, cap, "permission = \"%s\" is granted by no role", rt->permission);
        return -1;
    }
    return 0;
}

static keel_flow authz_on_request(keel_req *r, void *data)
{
    (void)data;
    const keel_route *rt = keel_req_route(r);
    if (!rt || !rt->permission)
        return KEEL_NEXT;
    const keel_principal *p = keel_req_principal(r);
    if (!p) { /* authentication did not run: never let it through */
        keel_res_set_header(r, "WWW-Authenticate", "Bearer realm=\"keel\"");
        keel_respond_problem(r, 401, "authentication required");
        return KEEL_DONE;
    }
    if (!keel_principal_can(p, rt->permission)) {
        char detail[160];
        snprintf(detail, sizeof(detail), "this needs the permission %s", rt->permission);
        keel_respond_problem(r, 403, detail);
        return KEEL_DONE;
    }
    return KEEL_NEXT;
}

keel_middleware keel_mw_authz(void)
{
    static const char *const reads[] = {"permission", NULL};
    keel_middleware m = {.name = "authz", .phase = KEEL_PHASE_AUTHZ,
                         .on_request = authz_on_request, .reads = reads,
                         .check_route = authz_check_route};
    return m;
}
