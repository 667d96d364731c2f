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

/* What a token's claims are, read once per token (and kept with it in
 * the thread's cache below): each claim absent, present and well-typed,
 * or present and wrong (a string claim empty or too long for
 * keel_jwt_claims, a time that is not an integer), and whether iss and
 * aud name the configuration's issuer and audience. claims_check then
 * decides for a caller's requirements and a time without touching JSON. */
enum { C_ABSENT = 0, C_OK, C_BAD };
enum { K_ISS, K_AUD, K_SUB, K_ROLE, K_JTI, K_EXP, K_NBF, K_IAT, K_COUNT };

typedef struct claim_facts {
    unsigned char state[K_COUNT];
    const char *issuer, *audience; /* the cfg strings iss/aud were checked against */
    keel_jwt_claims c;             /* the present claims (absent: 0 / "") */
} claim_facts;

static unsigned char str_claim(json_t *o, const char *key, char *out, size_t cap)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return C_ABSENT;
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= cap)
        return C_BAD;
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return C_OK;
}

static unsigned char time_claim(json_t *o, const char *key, int64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return C_ABSENT;
    if (!json_is_integer(v))
        return C_BAD;
    *out = (int64_t)json_integer_value(v);
    return C_OK;
}

/* iss and aud against cfg (C_BAD: present and not naming it, or cfg has none). */
static void facts_audience(claim_facts *f, const keel_jwt_cfg *cfg, json_t *p)
{
    json_t *iss = json_object_get(p, "iss");
    f->state[K_ISS] = !iss ? C_ABSENT
                      : json_is_string(iss) && cfg->issuer &&
                              strcmp(json_string_value(iss), cfg->issuer) == 0
                          ? C_OK
                          : C_BAD;
    json_t *aud = json_object_get(p, "aud");
    int aud_ok = 0;
    if (aud && cfg->audience) {
        if (json_is_string(aud)) {
            aud_ok = strcmp(json_string_value(aud), cfg->audience) == 0;
        } else if (json_is_array(aud)) {
            size_t i;
            json_t *a;
            json_array_foreach(aud, i, a)
                if (json_is_string(a) && strcmp(json_string_value(a), cfg->audience) == 0)
                    aud_ok = 1;
        }
    }
    f->state[K_AUD] = !aud ? C_ABSENT : aud_ok ? C_OK : C_BAD;
    f->issuer = cfg->issuer;
    f->audience = cfg->audience;
}

static void facts_read(claim_facts *f, const keel_jwt_cfg *cfg, json_t *p)
{
    memset(f, 0, sizeof(*f));
    facts_audience(f, cfg, p);
    f->state[K_SUB] = str_claim(p, "sub", f->c.sub, sizeof(f->c.sub));
    f->state[K_ROLE] = str_claim(p, "role", f->c.role, sizeof(f->c.role));
    f->state[K_JTI] = str_claim(p, "jti", f->c.jti, sizeof(f->c.jti));
    f->state[K_EXP] = time_claim(p, "exp", &f->c.exp);
    f->state[K_NBF] = time_claim(p, "nbf", &f->c.nbf);
    f->state[K_IAT] = time_claim(p, "iat", &f->c.iat);
}

/* A claim that is required must be there and well-typed; one that is not
 * required is checked all the same when present (keel/auth.h). */
static keel_jwt_error claims_check(const claim_facts *f, const keel_jwt_cfg *cfg, unsigned req,
                                   int64_t now, keel_jwt_claims *out)
{
    static const unsigned bit[K_COUNT] = {
        KEEL_JWT_REQUIRE_ISS,  KEEL_JWT_REQUIRE_AUD, KEEL_JWT_REQUIRE_SUB, KEEL_JWT_REQUIRE_ROLE,
        KEEL_JWT_REQUIRE_JTI,  KEEL_JWT_REQUIRE_EXP, KEEL_JWT_REQUIRE_NBF, KEEL_JWT_REQUIRE_IAT};
    if (f->state[K_ISS] == C_BAD || (f->state[K_ISS] == C_ABSENT && (req & bit[K_ISS])))
        return KEEL_JWT_BAD_ISSUER;
    if (f->state[K_AUD] == C_BAD || (f->state[K_AUD] == C_ABSENT && (req & bit[K_AUD])))
        return KEEL_JWT_BAD_AUDIENCE;
    for (int k = K_SUB; k < K_COUNT; k++)
        if (f->state[k] == C_BAD || (f->state[k] == C_ABSENT && (req & bit[k])))
            return KEEL_JWT_MISSING_CLAIM;
    int64_t leeway = (int64_t)cfg->leeway_s;
    if (f->state[K_EXP] == C_OK && f->c.exp <= now - leeway)
        return KEEL_JWT_EXPIRED;
    if ((f->state[K_NBF] == C_OK && f->c.nbf > now + leeway) ||
        (f->state[K_IAT] == C_OK && f->c.iat > now + leeway))
        return KEEL_JWT_NOT_YET_VALID;
    *out = f->c;
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
 * cost (132,500 instructions per request of the demo /auth/me's under
 * callgrind, the rest of the request ~6,000). So each thread remembers
 * the last tokens whose header and signature it accepted, byte for byte,
 * with what their claims are (claim_facts): a token equal to one
 * of them has the same header and the same valid signature (under the
 * same key: the entry keeps a copy of it), so only the claims are checked
 * again (time, issuer, audience, what the caller requires). A token that
 * differs in any byte is a miss and goes the whole way. The comparison is
 * constant-time over the whole token (ct_equal), so a probe learns
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
    claim_facts facts;
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

/* 1 when a[0..n) equals b[0..n), in a time that depends on n only
 * (sodium_memcmp's byte loop, 8 bytes at a time: a token is ~300 bytes). */
static int ct_equal(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    uint64_t d = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t u, v;
        memcpy(&u, x + i, 8);
        memcpy(&v, y + i, 8);
        d |= u ^ v;
    }
    for (; i < n; i++)
        d |= (uint64_t)(x[i] ^ y[i]);
    return d == 0;
}

static int token_hit(const token_entry *e, const keel_jwt_cfg *cfg, const char *token, size_t len)
{
    return e->payload && e->cfg == cfg && e->len == len && e->secret_len == cfg->secret_len &&
           ct_equal(e->secret, cfg->secret, cfg->secret_len) & ct_equal(e->tok, token, len);
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
    facts_read(&e->facts, cfg, payload);
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
        if (slot->facts.issuer != cfg->issuer || slot->facts.audience != cfg->audience)
            facts_audience(&slot->facts, cfg, slot->payload); /* cfg's strings changed */
        keel_jwt_error e = claims_check(&slot->facts, cfg, opts->require, now, out);
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
    if (!e) {
        claim_facts f;
        facts_read(&f, cfg, p);
        e = claims_check(&f, cfg, opts->require, now, out);
    }
    if (!e && opts->payload)
        *opts->payload = json_incref(p);
    json_decref(h);
    json_decref(p);
    if (e)
        memset(out, 0, sizeof(*out));
    return e;
}
