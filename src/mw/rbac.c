/* rbac.c — roles and their permissions, and the request's principal. */
#include <stdio.h>
#include <string.h>

#include "keel/auth.h"

const char *const keel_roles[] = {"user", "moderator", "admin", NULL};

/* What each role may do beyond its own record (which every user may read
 * and change, role and status excepted). */
static const char *const perms_user[] = {NULL};
static const char *const perms_moderator[] = {"users:read", NULL};
static const char *const perms_admin[] = {"users:read", "users:write", "users:delete",
                                          "admin:access", "apikeys:manage", NULL};

int keel_role_rank(const char *role)
{
    for (int i = 0; role && keel_roles[i]; i++)
        if (!strcmp(role, keel_roles[i]))
            return i;
    return -1;
}

int keel_role_valid(const char *role)
{
    return keel_role_rank(role) >= 0;
}

const char *const *keel_role_permissions(const char *role)
{
    switch (keel_role_rank(role)) {
    case 0: return perms_user;
    case 1: return perms_moderator;
    case 2: return perms_admin;
    }
    return perms_user;
}

int keel_role_can(const char *role, const char *permission)
{
    if (!permission)
        return 1;
    for (const char *const *p = keel_role_permissions(role); *p; p++)
        if (!strcmp(*p, permission))
            return 1;
    return 0;
}

/* "a,b,c" contains permission as a whole item. */
static int scopes_have(const char *scopes, const char *permission)
{
    size_t n = strlen(permission);
    for (const char *p = scopes; p && *p;) {
        while (*p == ',' || *p == ' ')
            p++;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ')
            e++;
        if ((size_t)(e - p) == n && !memcmp(p, permission, n))
            return 1;
        p = e;
    }
    return 0;
}

int keel_principal_can(const keel_principal *p, const char *permission)
{
    if (!p)
        return 0;
    if (!permission)
        return 1;
    if (!strcmp(p->kind, "apikey"))
        return scopes_have(p->scopes, permission);
    return keel_role_can(p->role, permission);
}

const keel_principal *keel_req_principal(const keel_req *r)
{
    return keel_req_get_local(r, KEEL_PRINCIPAL);
}

/* ---------------------------------------------------------------- middleware */

int keel_permission_known(const char *permission)
{
    for (int i = 0; permission && keel_roles[i]; i++)
        for (const char *const *p = keel_role_permissions(keel_roles[i]); *p; p++)
            if (!strcmp(*p, permission))
                return 1;
    return 0;
}

/* A permission means nothing without someone to hold it, and a
 * permission no role grants is a typo that would refuse every user. */
static int authz_check_route(const keel_route *rt, void *data, char *why, size_t cap)
{
    (void)data;
    if (!rt->auth || !strcmp(rt->auth, "none")) {
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
