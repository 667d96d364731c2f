/* rbac.c — roles and their permissions, and the request's principal. */
#include <string.h>

#include "keel/auth.h"

const char *const keel_roles[] = {"user", "moderator", "admin", NULL};

/* What each role may do beyond its own record (which every user may read
 * and change, role and status excepted). */
static const char *const perms_user[] = {"events:read", "events:write", "analytics:write",
                                         NULL};
static const char *const perms_moderator[] = {"users:read", "events:read", "events:write",
                                              "analytics:write", "reviews:manage", NULL};
static const char *const perms_admin[] = {"users:read",     "users:write",     "users:delete",
                                          "admin:access",   "apikeys:manage",  "events:read",
                                          "events:write",   "analytics:write", "analytics:read",
                                          "reviews:manage", NULL};

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

int keel_permission_known(const char *permission)
{
    for (int i = 0; permission && keel_roles[i]; i++)
        for (const char *const *p = keel_role_permissions(keel_roles[i]); *p; p++)
            if (!strcmp(*p, permission))
                return 1;
    return 0;
}
