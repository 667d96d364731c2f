/* jwt.c — HS256 access tokens. libjwt 1.10 signs and checks signatures;
 * everything it would otherwise decide is decided here (keel/auth.h). */
#include <dlfcn.h>
#include <jansson.h>
#include <jwt.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "keel/auth.h"
#include "keel/log.h"

/* libjwt is loaded on first use, as libpq is (src/store/db_pg.c): linking
 * it maps OpenSSL's libcrypto into every process (~1.5 MB of idle RSS)
 * whether or not a token is ever seen. */
static struct {
    int (*new_)(jwt_t **);
    void (*free_)(jwt_t *);
    int (*set_alg)(jwt_t *, jwt_alg_t, const unsigned char *, int);
    int (*add_grant)(jwt_t *, const char *, const char *);
    int (*add_grant_int)(jwt_t *, const char *, long);
    char *(*encode_str)(jwt_t *);
    int (*decode)(jwt_t **, const char *, const unsigned char *, int);
    jwt_alg_t (*get_alg)(jwt_t *);
    int ok;
} J;

static pthread_once_t jwt_once = PTHREAD_ONCE_INIT;

static void jwt_load(void)
{
    void *h = dlopen("libjwt.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        keel_log(KEEL_LOG_ERROR, "cannot load libjwt: access tokens cannot be issued or "
                                 "checked (install libjwt0)",
                 "{s:s}", "error", dlerror());
        return;
    }
#define SYM(field, name) *(void **)(&J.field) = dlsym(h, name)
    SYM(new_, "jwt_new");
    SYM(free_, "jwt_free");
    SYM(set_alg, "jwt_set_alg");
    SYM(add_grant, "jwt_add_grant");
    SYM(add_grant_int, "jwt_add_grant_int");
    SYM(encode_str, "jwt_encode_str");
    SYM(decode, "jwt_decode");
    SYM(get_alg, "jwt_get_alg");
#undef SYM
    J.ok = J.new_ && J.free_ && J.set_alg && J.add_grant && J.add_grant_int && J.encode_str &&
           J.decode && J.get_alg;
    if (!J.ok)
        keel_log(KEEL_LOG_ERROR, "libjwt lacks a function keel needs", NULL);
}

static int jwt_ready(void)
{
    pthread_once(&jwt_once, jwt_load);
    return J.ok;
}

const char *keel_jwt_strerror(keel_jwt_error e)
{
    switch (e) {
    case KEEL_JWT_OK: return "ok";
    case KEEL_JWT_MALFORMED: return "the token is malformed";
    case KEEL_JWT_TOO_LONG: return "the token is too long";
    case KEEL_JWT_BAD_HEADER: return "the token's header is not accepted";
    case KEEL_JWT_BAD_SIGNATURE: return "the token's signature is invalid";
    case KEEL_JWT_EXPIRED: return "the token has expired";
    case KEEL_JWT_NOT_YET_VALID: return "the token is not valid yet";
    case KEEL_JWT_BAD_ISSUER: return "the token's issuer is not accepted";
    case KEEL_JWT_BAD_AUDIENCE: return "the token's audience is not accepted";
    case KEEL_JWT_MISSING_CLAIM: return "the token lacks a required claim";
    }
    return "the token is invalid";
}

int keel_jwt_sign(const keel_jwt_cfg *cfg, const char *sub, const char *role, int64_t now,
                  char **out, keel_jwt_claims *claims)
{
    *out = NULL;
    if (!cfg->secret_len || !sub || !role || strlen(sub) >= sizeof(claims->sub) ||
        strlen(role) >= sizeof(claims->role))
        return KEEL_EINVAL;
    keel_jwt_claims c = {0};
    uint8_t rnd[16];
    keel_library_init();
    randombytes_buf(rnd, sizeof(rnd));
    sodium_bin2hex(c.jti, sizeof(c.jti), rnd, sizeof(rnd));
    snprintf(c.sub, sizeof(c.sub), "%s", sub);
    snprintf(c.role, sizeof(c.role), "%s", role);
    c.iat = c.nbf = now;
    c.exp = now + (int64_t)cfg->ttl_s;
    jwt_t *j = NULL;
    if (!jwt_ready())
        return KEEL_EUNAVAIL;
    if (J.new_(&j) != 0)
        return KEEL_ENOMEM;
    int rc = J.set_alg(j, JWT_ALG_HS256, cfg->secret, (int)cfg->secret_len);
    rc = rc ? rc : J.add_grant(j, "iss", cfg->issuer);
    rc = rc ? rc : J.add_grant(j, "aud", cfg->audience);
    rc = rc ? rc : J.add_grant(j, "sub", c.sub);
    rc = rc ? rc : J.add_grant(j, "role", c.role);
    rc = rc ? rc : J.add_grant(j, "jti", c.jti);
    rc = rc ? rc : J.add_grant_int(j, "iat", (long)c.iat);
    rc = rc ? rc : J.add_grant_int(j, "nbf", (long)c.nbf);
    rc = rc ? rc : J.add_grant_int(j, "exp", (long)c.exp);
    char *s = rc ? NULL : J.encode_str(j);
    J.free_(j);
    if (!s)
        return KEEL_ENOMEM;
    *out = keel_strdup(s);
    free(s); /* libjwt's allocator */
    if (claims)
        *claims = c;
    return 0;
}

/* A base64url segment decoded and parsed as one JSON object, duplicate
 * keys refused. New reference or NULL. */
static json_t *segment_json(const char *p, size_t n)
{
    if (n == 0 || n > KEEL_JWT_MAX_LEN)
        return NULL;
    uint8_t buf[KEEL_JWT_MAX_LEN];
    size_t len = 0;
    const char *end = NULL;
    if (sodium_base642bin(buf, sizeof(buf), p, n, NULL, &len, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        end != p + n)
        return NULL;
    json_t *j = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, NULL);
    if (j && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* A claim absent and not required: 1 (nothing to check). Present: 0.
 * Absent but required: -1. */
static int absent(json_t *o, const char *key, unsigned require, unsigned bit)
{
    if (json_object_get(o, key))
        return 0;
    return (require & bit) ? -1 : 1;
}

static int copy_str(json_t *o, const char *key, unsigned require, unsigned bit, char *out,
                    size_t cap)
{
    int a = absent(o, key, require, bit);
    if (a)
        return a > 0 ? 0 : -1;
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= cap)
        return -1;
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

/* *present is set when the claim is there (and an integer). */
static int get_time(json_t *o, const char *key, unsigned require, unsigned bit, int64_t *out,
                    int *present)
{
    *present = 0;
    int a = absent(o, key, require, bit);
    if (a)
        return a > 0 ? 0 : -1;
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        return -1;
    *out = (int64_t)json_integer_value(v);
    *present = 1;
    return 0;
}

static keel_jwt_error check_header(json_t *h)
{
    json_t *alg = json_object_get(h, "alg");
    if (!json_is_string(alg) || strcmp(json_string_value(alg), "HS256") != 0)
        return KEEL_JWT_BAD_HEADER; /* exactly HS256: not hs256, none, HS512, RS256 */
    static const char *const refused[] = {"crit", "jku", "x5u", "jwk", "x5c", "zip", "enc"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        if (json_object_get(h, refused[i]))
            return KEEL_JWT_BAD_HEADER;
    json_t *typ = json_object_get(h, "typ");
    if (typ && (!json_is_string(typ) || strcasecmp(json_string_value(typ), "JWT") != 0))
        return KEEL_JWT_BAD_HEADER;
    return KEEL_JWT_OK;
}

static keel_jwt_error check_claims(const keel_jwt_cfg *cfg, unsigned req, json_t *p,
                                   int64_t now, keel_jwt_claims *out)
{
    json_t *iss = json_object_get(p, "iss");
    if ((iss || (req & KEEL_JWT_REQUIRE_ISS)) &&
        (!json_is_string(iss) || !cfg->issuer ||
         strcmp(json_string_value(iss), cfg->issuer) != 0))
        return KEEL_JWT_BAD_ISSUER;
    json_t *aud = json_object_get(p, "aud");
    if (aud || (req & KEEL_JWT_REQUIRE_AUD)) {
        int aud_ok = 0;
        if (!cfg->audience) {
            aud_ok = 0;
        } else if (json_is_string(aud)) {
            aud_ok = strcmp(json_string_value(aud), cfg->audience) == 0;
        } else if (json_is_array(aud)) {
            size_t i;
            json_t *a;
            json_array_foreach(aud, i, a)
                if (json_is_string(a) && strcmp(json_string_value(a), cfg->audience) == 0)
                    aud_ok = 1;
        }
        if (!aud_ok)
            return KEEL_JWT_BAD_AUDIENCE;
    }
    int has_exp, has_nbf, has_iat;
    if (copy_str(p, "sub", req, KEEL_JWT_REQUIRE_SUB, out->sub, sizeof(out->sub)) < 0 ||
        copy_str(p, "role", req, KEEL_JWT_REQUIRE_ROLE, out->role, sizeof(out->role)) < 0 ||
        copy_str(p, "jti", req, KEEL_JWT_REQUIRE_JTI, out->jti, sizeof(out->jti)) < 0 ||
        get_time(p, "exp", req, KEEL_JWT_REQUIRE_EXP, &out->exp, &has_exp) < 0 ||
        get_time(p, "nbf", req, KEEL_JWT_REQUIRE_NBF, &out->nbf, &has_nbf) < 0 ||
        get_time(p, "iat", req, KEEL_JWT_REQUIRE_IAT, &out->iat, &has_iat) < 0)
        return KEEL_JWT_MISSING_CLAIM;
    int64_t leeway = (int64_t)cfg->leeway_s;
    if (has_exp && out->exp <= now - leeway)
        return KEEL_JWT_EXPIRED;
    if ((has_nbf && out->nbf > now + leeway) || (has_iat && out->iat > now + leeway))
        return KEEL_JWT_NOT_YET_VALID;
    return KEEL_JWT_OK;
}

keel_jwt_error keel_jwt_verify(const keel_jwt_cfg *cfg, const char *token, size_t len,
                               int64_t now, keel_jwt_claims *out)
{
    keel_jwt_verify_opts opts = {.require = KEEL_JWT_REQUIRE_ALL};
    return keel_jwt_verify_ex(cfg, &opts, token, len, now, out);
}

/* ---------------------------------------------------------------- accepted tokens
 * A client sends the same token with every request until it expires, and
 * checking its signature twice (libsodium in constant time, then libjwt)
 * and parsing its two JSON segments is most of an authenticated request's
 * cost (132,000 instructions of /auth/me's 138,000 under callgrind). So
 * each thread remembers the last tokens whose header and signature it
 * accepted, byte for byte, with their parsed claims: a token equal to one
 * of them has the same header and the same valid signature (under the
 * same key: the entry keeps a copy of it), so only the claims are checked
 * again (time, issuer, audience, what the caller requires). A token that
 * differs in any byte is a miss and goes the whole way. The comparison is
 * constant-time over the whole token (sodium_memcmp), so a probe learns
 * nothing of a remembered token from timing; the slot is chosen by the
 * token's last signature bytes, so a client can at worst evict entries.
 * Per thread: no lock, and the shared payload object is only ever used on
 * the thread that owns it. */
#define TOKEN_CACHE_SLOTS 64
#define TOKEN_CACHE_MAX   768 /* longer tokens are checked every time */
#define TOKEN_CACHE_KEY   64  /* longer secrets are not remembered */

typedef struct token_entry {
    const keel_jwt_cfg *cfg;
    json_t *payload;           /* the parsed claims (one reference) */
    size_t len, secret_len;
    uint8_t secret[TOKEN_CACHE_KEY];
    char tok[TOKEN_CACHE_MAX];
} token_entry;

static pthread_key_t token_key;
static pthread_once_t token_once = PTHREAD_ONCE_INIT;

static void token_cache_free(void *p)
{
    token_entry *c = p;
    for (size_t i = 0; i < TOKEN_CACHE_SLOTS; i++)
        json_decref(c[i].payload);
    free(c);
}

static void token_key_make(void)
{
    (void)pthread_key_create(&token_key, token_cache_free);
}

static token_entry *token_slot(const keel_jwt_cfg *cfg, const char *token, size_t len)
{
    if (len > TOKEN_CACHE_MAX || cfg->secret_len > TOKEN_CACHE_KEY || len < 8)
        return NULL;
    pthread_once(&token_once, token_key_make);
    token_entry *c = pthread_getspecific(token_key);
    if (!c) {
        c = calloc(TOKEN_CACHE_SLOTS, sizeof(*c));
        if (!c || pthread_setspecific(token_key, c) != 0) {
            free(c);
            return NULL;
        }
    }
    const unsigned char *t = (const unsigned char *)token + len - 4;
    unsigned h = (unsigned)t[0] * 31u * 31u * 31u + (unsigned)t[1] * 31u * 31u +
                 (unsigned)t[2] * 31u + t[3];
    return &c[h % TOKEN_CACHE_SLOTS];
}

static int token_hit(const token_entry *e, const keel_jwt_cfg *cfg, const char *token, size_t len)
{
    return e->payload && e->cfg == cfg && e->len == len && e->secret_len == cfg->secret_len &&
           sodium_memcmp(e->secret, cfg->secret, cfg->secret_len) == 0 &&
           sodium_memcmp(e->tok, token, len) == 0;
}

static void token_keep(token_entry *e, const keel_jwt_cfg *cfg, const char *token, size_t len,
                       json_t *payload)
{
    json_decref(e->payload);
    e->cfg = cfg;
    e->len = len;
    e->secret_len = cfg->secret_len;
    memcpy(e->secret, cfg->secret, cfg->secret_len);
    memcpy(e->tok, token, len);
    e->payload = json_incref(payload);
}

keel_jwt_error keel_jwt_verify_ex(const keel_jwt_cfg *cfg, const keel_jwt_verify_opts *opts,
                                  const char *token, size_t len, int64_t now,
                                  keel_jwt_claims *out)
{
    memset(out, 0, sizeof(*out));
    if (opts->payload)
        *opts->payload = NULL;
    keel_library_init();
    if (len > KEEL_JWT_MAX_LEN)
        return KEEL_JWT_TOO_LONG;
    token_entry *slot = cfg->secret_len ? token_slot(cfg, token, len) : NULL;
    if (slot && token_hit(slot, cfg, token, len)) {
        keel_jwt_error e = check_claims(cfg, opts->require, slot->payload, now, out);
        if (e)
            memset(out, 0, sizeof(*out));
        else if (opts->payload)
            *opts->payload = json_incref(slot->payload);
        return e;
    }
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (!dot1 || !dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) ||
        dot2 + 1 == token + len)
        return KEEL_JWT_MALFORMED;
    for (size_t i = 0; i < len; i++) {
        char ch = token[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == '.'))
            return KEEL_JWT_MALFORMED;
    }
    json_t *h = segment_json(token, (size_t)(dot1 - token));
    json_t *p = segment_json(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    keel_jwt_error e = KEEL_JWT_OK;
    if (!h || !p)
        e = KEEL_JWT_MALFORMED;
    if (!e)
        e = check_header(h);
    if (!e) {
        /* the signature, first in constant time by libsodium (libjwt
         * compares with strcmp), then by libjwt with our key, then its
         * idea of alg */
        uint8_t mac[crypto_auth_hmacsha256_BYTES];
        size_t maclen = 0;
        const char *end = NULL;
        crypto_auth_hmacsha256_state st;
        if (sodium_base642bin(mac, sizeof(mac), dot2 + 1, len - (size_t)(dot2 + 1 - token), NULL,
                              &maclen, &end, sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
            maclen != sizeof(mac) || end != token + len) {
            e = KEEL_JWT_BAD_SIGNATURE;
        } else {
            uint8_t want[crypto_auth_hmacsha256_BYTES];
            crypto_auth_hmacsha256_init(&st, cfg->secret, cfg->secret_len);
            crypto_auth_hmacsha256_update(&st, (const uint8_t *)token, (size_t)(dot2 - token));
            crypto_auth_hmacsha256_final(&st, want);
            if (!cfg->secret_len || sodium_memcmp(mac, want, sizeof(mac)) != 0)
                e = KEEL_JWT_BAD_SIGNATURE;
        }
    }
    if (!e) {
        char tok[KEEL_JWT_MAX_LEN + 1];
        memcpy(tok, token, len);
        tok[len] = '\0';
        jwt_t *j = NULL;
        if (!cfg->secret_len || !jwt_ready() ||
            J.decode(&j, tok, cfg->secret, (int)cfg->secret_len) != 0 || !j ||
            J.get_alg(j) != JWT_ALG_HS256)
            e = KEEL_JWT_BAD_SIGNATURE;
        if (j)
            J.free_(j);
    }
    /* remembered once header and signature are accepted, whatever the
     * claims say: an expired token stays expired without a second parse */
    if (!e && slot)
        token_keep(slot, cfg, token, len, p);
    if (!e)
        e = check_claims(cfg, opts->require, p, now, out);
    if (!e && opts->payload)
        *opts->payload = json_incref(p);
    json_decref(h);
    json_decref(p);
    if (e)
        memset(out, 0, sizeof(*out));
    return e;
}
