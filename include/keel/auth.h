/* keel/auth.h — access tokens (JWT HS256), passwords (argon2id), roles
 * and permissions, and the request's principal (src/auth). The middleware
 * that enforces a route's `auth` and `permission` is keel_mw_auth in
 * keel/mw.h.
 *
 * JWT: keel signs and verifies with libjwt, but does not trust it with the
 * decisions libjwt 1.10 gets wrong: the token's header is parsed by keel
 * first (algorithm exactly "HS256", no `crit`, no key-fetching members,
 * no duplicate keys), libjwt then checks the signature with keel's key,
 * keel checks jwt_get_alg() again, and validates every claim itself
 * (iss, aud, exp, nbf, iat with a small leeway; sub, role, jti present).
 * keel_jwt_verify_ex makes the same checks with fewer claims required
 * (the benchmark's token has only sub, name and iat).
 */
#ifndef KEEL_AUTH_H
#define KEEL_AUTH_H

#include "server.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- JWT */

typedef struct keel_jwt_cfg {
    const uint8_t *secret;  /* JWT_SECRET */
    size_t secret_len;
    const char *issuer;     /* JWT_ISSUER */
    const char *audience;   /* JWT_AUDIENCE */
    uint64_t ttl_s;         /* JWT_EXPIRES_IN */
    uint64_t leeway_s;      /* clock skew allowed on exp/nbf/iat */
} keel_jwt_cfg;

typedef struct keel_jwt_claims {
    char sub[64];
    char role[32];
    char jti[40];
    int64_t iat, nbf, exp;
} keel_jwt_claims;

/* Why a token was refused (0 = accepted). */
typedef enum keel_jwt_error {
    KEEL_JWT_OK = 0,
    KEEL_JWT_MALFORMED,     /* not three base64url parts of JSON objects */
    KEEL_JWT_TOO_LONG,
    KEEL_JWT_BAD_HEADER,    /* alg not HS256, crit, jku/x5u/jwk/x5c, typ */
    KEEL_JWT_BAD_SIGNATURE,
    KEEL_JWT_EXPIRED,
    KEEL_JWT_NOT_YET_VALID, /* nbf or iat in the future */
    KEEL_JWT_BAD_ISSUER,
    KEEL_JWT_BAD_AUDIENCE,
    KEEL_JWT_MISSING_CLAIM  /* sub, role, jti, exp, nbf or iat missing or mistyped */
} keel_jwt_error;

#define KEEL_JWT_MAX_LEN 4096

const char *keel_jwt_strerror(keel_jwt_error e);

/* A token for sub/role valid from now for cfg->ttl_s, with a random jti.
 * *out is malloc'd (keel_free). 0 or KEEL_ENOMEM / KEEL_EINVAL. */
int keel_jwt_sign(const keel_jwt_cfg *cfg, const char *sub, const char *role, int64_t now,
                  char **out, keel_jwt_claims *claims);

/* Verifies an access token (len bytes, not NUL-terminated) at time now
 * (Unix s): keel_jwt_verify_ex with every claim required
 * (KEEL_JWT_REQUIRE_ALL). */
keel_jwt_error keel_jwt_verify(const keel_jwt_cfg *cfg, const char *token, size_t len,
                               int64_t now, keel_jwt_claims *out);

/* The claims keel_jwt_verify_ex requires. A required claim that is absent
 * or mistyped is KEEL_JWT_MISSING_CLAIM. A claim that is not required but
 * present is checked all the same: its type (and for sub/role/jti the size
 * of keel_jwt_claims' field), iss equal to cfg->issuer and aud naming
 * cfg->audience (a token naming an issuer or audience is refused when cfg
 * has none), exp not passed, nbf and iat not in the future (with
 * cfg->leeway_s). The header checks and the signature are the same
 * whatever is required. */
#define KEEL_JWT_REQUIRE_ISS  (1u << 0)
#define KEEL_JWT_REQUIRE_AUD  (1u << 1)
#define KEEL_JWT_REQUIRE_SUB  (1u << 2)
#define KEEL_JWT_REQUIRE_ROLE (1u << 3)
#define KEEL_JWT_REQUIRE_JTI  (1u << 4)
#define KEEL_JWT_REQUIRE_EXP  (1u << 5)
#define KEEL_JWT_REQUIRE_NBF  (1u << 6)
#define KEEL_JWT_REQUIRE_IAT  (1u << 7)
#define KEEL_JWT_REQUIRE_ALL  0xffu /* keel's own access tokens */

struct json_t;

typedef struct keel_jwt_verify_opts {
    unsigned require;          /* KEEL_JWT_REQUIRE_* */
    struct json_t **payload;   /* if not NULL: on success a new reference to the
                                  token's claims object (json_decref), else NULL.
                                  Read-only: the object is shared with the
                                  thread's cache of accepted tokens (jwt.c) */
} keel_jwt_verify_opts;

/* keel_jwt_verify with the claim rules of opts; out gets the claims that
 * were present (absent ones stay 0 / ""). */
keel_jwt_error keel_jwt_verify_ex(const keel_jwt_cfg *cfg, const keel_jwt_verify_opts *opts,
                                  const char *token, size_t len, int64_t now,
                                  keel_jwt_claims *out);

/* ---------------------------------------------------------------- passwords */

/* argon2id (libsodium crypto_pwhash_str) with ops/mem limits; blocking:
 * call on a pool thread. 0, or KEEL_ENOMEM. out has KEEL_PW_HASH_MAX. */
#define KEEL_PW_HASH_MAX 128
int keel_password_hash(const char *pw, size_t len, uint64_t ops, uint64_t mem,
                       char out[KEEL_PW_HASH_MAX]);
/* 1 when pw matches hash, else 0. Blocking. */
int keel_password_verify(const char *hash, const char *pw, size_t len);
/* 1 when the hash was made with other limits than these (rehash on login). */
int keel_password_needs_rehash(const char *hash, uint64_t ops, uint64_t mem);

/* Moves keel_password_hash and keel_password_verify into a child process
 * with `threads` threads (each call then blocks on a socket to it, as it
 * blocked on the CPU before), running `nice` steps below this process.
 * Why: argon2id maps and unmaps its whole memory (64 MiB by default) for
 * every hash, and unmapping that much holds the address space's lock for
 * tens of milliseconds; every thread of the process that faults a page or
 * copies to or from user memory in a system call waits for it, so during
 * logins the event loops stalled up to 40 ms (docs/performance.md). In a
 * child process the unmapping locks only the child.
 * Must be called while the process has one thread (keel_main calls it for
 * `serve` before anything starts: PASSWORD_HASH_PROCESS); returns 0, or
 * KEEL_EINVAL when there already are threads, KEEL_EIO when the child
 * cannot be made — the functions then hash in process, as they do when
 * the child dies (logged once). The child ends with this process. */
int keel_password_isolate(unsigned threads, unsigned nice);
/* NULL when pw is acceptable, else why not: too short (min bytes), too
 * long (KEEL_PASSWORD_MAX bytes), or one of the most common passwords. */
#define KEEL_PASSWORD_MAX 1024
const char *keel_password_weakness(const char *pw, size_t len, size_t min);

/* ---------------------------------------------------------------- roles */

/* Roles, lowest first: "user", "moderator", "admin". NULL-terminated. */
extern const char *const keel_roles[];
int keel_role_valid(const char *role);
/* The rank of a role (0 user, 1 moderator, 2 admin), -1 when unknown. */
int keel_role_rank(const char *role);
/* Whether role grants permission ("users:read", ...). */
int keel_role_can(const char *role, const char *permission);
/* The permissions of a role, NULL-terminated. */
const char *const *keel_role_permissions(const char *role);

/* ---------------------------------------------------------------- principal */

/* Who a request is from, once authenticated (request local
 * KEEL_PRINCIPAL). kind "user": id is the user's id, role its current
 * role; kind "apikey": id is the key's id, scopes its permissions. */
#define KEEL_PRINCIPAL "auth.principal"
typedef struct keel_principal {
    const char *kind;   /* "user" or "apikey" */
    const char *id;
    const char *role;   /* users */
    const char *scopes; /* API keys: comma-separated permissions */
    const char *jti;    /* users: the access token's id */
    int64_t token_exp;  /* users: the access token's exp */
} keel_principal;

const keel_principal *keel_req_principal(const keel_req *r);
/* Whether the request's principal holds permission (role or scopes). */
int keel_principal_can(const keel_principal *p, const char *permission);

/* Whether some role grants permission (a route's permission that none
 * grants is a typo: start-up refuses it). */
int keel_permission_known(const char *permission);

#ifdef __cplusplus
}
#endif
#endif
