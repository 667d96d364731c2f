/* test_jwt.c — keel_jwt_sign/verify, and every way libjwt 1.10 alone would
 * have been fooled: alg none / lower-case / HS512 / RS256 headers, crit,
 * jku, duplicate keys, claims it never checks; plus the password policy
 * and roles; keel_jwt_verify_ex's claim options with the benchmark's
 * token. Tokens are built by hand (libsodium HMAC) so the header and
 * payload can be anything. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "keel/auth.h"

#include "table_check.h"

static const char SECRET[] = "0123456789abcdef0123456789abcdef-test";
static const int64_t NOW = 1800000000;

static keel_jwt_cfg cfg(void)
{
    keel_jwt_cfg c = {(const uint8_t *)SECRET, sizeof(SECRET) - 1, "keel", "keel-api", 900, 30};
    return c;
}

static void b64(const void *p, size_t n, char *out, size_t cap)
{
    sodium_bin2base64(out, cap, p, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

/* header.payload signed with HS256 (alg 256), HS512 (512) or not at all
 * (0: empty signature), under key. */
static void make(const char *header, const char *payload, int alg, const char *key, char *out,
                 size_t cap)
{
    char h[1024], p[2048];
    b64(header, strlen(header), h, sizeof(h));
    b64(payload, strlen(payload), p, sizeof(p));
    snprintf(out, cap, "%s.%s", h, p);
    size_t n = strlen(out);
    char sig[200] = "";
    if (alg == 256) {
        uint8_t mac[32];
        crypto_auth_hmacsha256_state st;
        crypto_auth_hmacsha256_init(&st, (const uint8_t *)key, strlen(key));
        crypto_auth_hmacsha256_update(&st, (const uint8_t *)out, n);
        crypto_auth_hmacsha256_final(&st, mac);
        b64(mac, sizeof(mac), sig, sizeof(sig));
    } else if (alg == 512) {
        uint8_t mac[64];
        crypto_auth_hmacsha512_state st;
        crypto_auth_hmacsha512_init(&st, (const uint8_t *)key, strlen(key));
        crypto_auth_hmacsha512_update(&st, (const uint8_t *)out, n);
        crypto_auth_hmacsha512_final(&st, mac);
        b64(mac, sizeof(mac), sig, sizeof(sig));
    }
    snprintf(out + n, cap - n, ".%s", sig);
}

#define GOOD_PAYLOAD                                                                              \
    "{\"iss\":\"keel\",\"aud\":\"keel-api\",\"sub\":\"u1\",\"role\":\"user\",\"jti\":\"j1\","  \
    "\"iat\":1800000000,\"nbf\":1800000000,\"exp\":1800000900}"

static void test_sign_verify_round_trip(void **state)
{
    (void)state;
    keel_jwt_cfg c = cfg();
    char *tok = NULL;
    keel_jwt_claims made, got;
    assert_int_equal(keel_jwt_sign(&c, "user-42", "admin", NOW, &tok, &made), 0);
    assert_int_equal(keel_jwt_verify(&c, tok, strlen(tok), NOW + 10, &got), KEEL_JWT_OK);
    assert_string_equal(got.sub, "user-42");
    assert_string_equal(got.role, "admin");
    assert_string_equal(got.jti, made.jti);
    assert_int_equal(strlen(got.jti), 32);
    assert_int_equal(got.exp, NOW + 900);
    /* expiry with the leeway: valid at exp+29, not at exp+30 */
    assert_int_equal(keel_jwt_verify(&c, tok, strlen(tok), NOW + 929, &got), KEEL_JWT_OK);
    assert_int_equal(keel_jwt_verify(&c, tok, strlen(tok), NOW + 930, &got), KEEL_JWT_EXPIRED);
    /* another key */
    keel_jwt_cfg other = c;
    other.secret = (const uint8_t *)"another-secret-another-secret-xx";
    other.secret_len = 32;
    assert_int_equal(keel_jwt_verify(&other, tok, strlen(tok), NOW, &got), KEEL_JWT_BAD_SIGNATURE);
    /* two tokens never share a jti */
    char *tok2 = NULL;
    keel_jwt_claims made2;
    assert_int_equal(keel_jwt_sign(&c, "user-42", "admin", NOW, &tok2, &made2), 0);
    assert_string_not_equal(made.jti, made2.jti);
    keel_free(tok);
    keel_free(tok2);
}

/* The thread's cache of accepted tokens (jwt.c): a repeat of an accepted
 * token is answered from it, and nothing about it can be used to get a
 * token through that the whole check refuses. */
static void test_accepted_token_cache(void **state)
{
    (void)state;
    keel_jwt_cfg c = cfg();
    char *tok = NULL;
    keel_jwt_claims made, got;
    assert_int_equal(keel_jwt_sign(&c, "user-7", "user", NOW, &tok, &made), 0);
    size_t n = strlen(tok);
    for (int i = 0; i < 3; i++) { /* the first fills the slot, the others hit it */
        memset(&got, 0xab, sizeof(got));
        assert_int_equal(keel_jwt_verify(&c, tok, n, NOW + 10, &got), KEEL_JWT_OK);
        assert_string_equal(got.sub, "user-7");
        assert_string_equal(got.jti, made.jti);
        assert_int_equal(got.exp, NOW + 900);
    }
    /* the claims are checked again on every hit: expiry, then the caller's needs */
    assert_int_equal(keel_jwt_verify(&c, tok, n, NOW + 930, &got), KEEL_JWT_EXPIRED);
    assert_string_equal(got.sub, "");
    assert_int_equal(keel_jwt_verify(&c, tok, n, NOW + 10, &got), KEEL_JWT_OK);
    keel_jwt_cfg other_iss = c;
    other_iss.issuer = "someone-else";
    assert_int_equal(keel_jwt_verify(&other_iss, tok, n, NOW + 10, &got), KEEL_JWT_BAD_ISSUER);
    /* one byte of the signature changed (the slot is chosen by its last
     * bytes: change one before them, so it lands in the same slot) */
    char *bad = keel_strdup(tok);
    bad[n - 6] = bad[n - 6] == 'A' ? 'B' : 'A';
    assert_int_equal(keel_jwt_verify(&c, bad, n, NOW + 10, &got), KEEL_JWT_BAD_SIGNATURE);
    /* the same cfg object with its key changed in place: checked again */
    uint8_t key[sizeof(SECRET) - 1];
    memcpy(key, SECRET, sizeof(key));
    keel_jwt_cfg k = c;
    k.secret = key;
    assert_int_equal(keel_jwt_verify(&k, tok, n, NOW + 10, &got), KEEL_JWT_OK);
    key[0] ^= 1;
    assert_int_equal(keel_jwt_verify(&k, tok, n, NOW + 10, &got), KEEL_JWT_BAD_SIGNATURE);
    /* the payload handed out is the claims object, shared and intact */
    json_t *p1 = NULL, *p2 = NULL;
    keel_jwt_verify_opts o = {.require = KEEL_JWT_REQUIRE_ALL, .payload = &p1};
    assert_int_equal(keel_jwt_verify_ex(&c, &o, tok, n, NOW + 10, &got), KEEL_JWT_OK);
    o.payload = &p2;
    assert_int_equal(keel_jwt_verify_ex(&c, &o, tok, n, NOW + 10, &got), KEEL_JWT_OK);
    assert_non_null(p1);
    assert_ptr_equal(p1, p2);
    assert_string_equal(json_string_value(json_object_get(p2, "sub")), "user-7");
    json_decref(p1);
    json_decref(p2);
    /* a refused verification hands out nothing */
    o.payload = &p1;
    assert_int_equal(keel_jwt_verify_ex(&c, &o, tok, n, NOW + 930, &got), KEEL_JWT_EXPIRED);
    assert_null(p1);
    keel_free(bad);
    keel_free(tok);
}

typedef struct tok_case {
    const char *name;
    const char *header;
    const char *payload;
    int alg;          /* 256, 512, 0 */
    const char *key;  /* NULL: SECRET */
    keel_jwt_error want;
} tok_case;

static const tok_case cases[] = {
    {"good", "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", GOOD_PAYLOAD, 256, NULL, KEEL_JWT_OK},
    {"good without typ", "{\"alg\":\"HS256\"}", GOOD_PAYLOAD, 256, NULL, KEEL_JWT_OK},
    {"aud array", "{\"alg\":\"HS256\"}",
     "{\"iss\":\"keel\",\"aud\":[\"x\",\"keel-api\"],\"sub\":\"u1\",\"role\":\"user\","
     "\"jti\":\"j1\",\"iat\":1800000000,\"nbf\":1800000000,\"exp\":1800000900}",
     256, NULL, KEEL_JWT_OK},
    {"alg none unsigned", "{\"alg\":\"none\"}", GOOD_PAYLOAD, 0, NULL, KEEL_JWT_MALFORMED},
    {"alg none signed", "{\"alg\":\"none\"}", GOOD_PAYLOAD, 256, NULL, KEEL_JWT_BAD_HEADER},
    {"alg None", "{\"alg\":\"None\"}", GOOD_PAYLOAD, 256, NULL, KEEL_JWT_BAD_HEADER},
    {"alg lower-case hs256", "{\"alg\":\"hs256\"}", GOOD_PAYLOAD, 256, NULL, KEEL_JWT_BAD_HEADER},
    {"alg HS512 same key", "{\"alg\":\"HS512\"}", GOOD_PAYLOAD, 512, NULL, KEEL_JWT_BAD_HEADER},
    {"alg RS256", "{\"alg\":\"RS256\"}", GOOD_PAYLOAD, 256, NULL, KEEL_JWT_BAD_HEADER},
    {"alg missing", "{\"typ\":\"JWT\"}", GOOD_PAYLOAD, 256, NULL, KEEL_JWT_BAD_HEADER},
    {"alg not a string", "{\"alg\":256}", GOOD_PAYLOAD, 256, NULL, KEEL_JWT_BAD_HEADER},
    {"duplicate alg", "{\"alg\":\"none\",\"alg\":\"HS256\"}", GOOD_PAYLOAD, 256, NULL,
     KEEL_JWT_MALFORMED},
    {"crit", "{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", GOOD_PAYLOAD, 256, NULL,
     KEEL_JWT_BAD_HEADER},
    {"jku", "{\"alg\":\"HS256\",\"jku\":\"https://evil/jwks\"}", GOOD_PAYLOAD, 256, NULL,
     KEEL_JWT_BAD_HEADER},
    {"x5u", "{\"alg\":\"HS256\",\"x5u\":\"https://evil/cert\"}", GOOD_PAYLOAD, 256, NULL,
     KEEL_JWT_BAD_HEADER},
    {"jwk", "{\"alg\":\"HS256\",\"jwk\":{}}", GOOD_PAYLOAD, 256, NULL, KEEL_JWT_BAD_HEADER},
    {"typ other", "{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}", GOOD_PAYLOAD, 256, NULL,
     KEEL_JWT_BAD_HEADER},
    {"header not object", "[\"HS256\"]", GOOD_PAYLOAD, 256, NULL, KEEL_JWT_MALFORMED},
    {"wrong key", "{\"alg\":\"HS256\"}", GOOD_PAYLOAD, 256, "not-the-secret", KEEL_JWT_BAD_SIGNATURE},
    {"empty signature", "{\"alg\":\"HS256\"}", GOOD_PAYLOAD, 0, NULL, KEEL_JWT_MALFORMED},
    {"duplicate sub", "{\"alg\":\"HS256\"}",
     "{\"iss\":\"keel\",\"aud\":\"keel-api\",\"sub\":\"u1\",\"sub\":\"admin\",\"role\":\"user\","
     "\"jti\":\"j1\",\"iat\":1800000000,\"nbf\":1800000000,\"exp\":1800000900}",
     256, NULL, KEEL_JWT_MALFORMED},
    {"payload not object", "{\"alg\":\"HS256\"}", "\"hi\"", 256, NULL, KEEL_JWT_MALFORMED},
    {"wrong issuer", "{\"alg\":\"HS256\"}",
     "{\"iss\":\"evil\",\"aud\":\"keel-api\",\"sub\":\"u1\",\"role\":\"user\",\"jti\":\"j1\","
     "\"iat\":1800000000,\"nbf\":1800000000,\"exp\":1800000900}",
     256, NULL, KEEL_JWT_BAD_ISSUER},
    {"no issuer", "{\"alg\":\"HS256\"}",
     "{\"aud\":\"keel-api\",\"sub\":\"u1\",\"role\":\"user\",\"jti\":\"j1\","
     "\"iat\":1800000000,\"nbf\":1800000000,\"exp\":1800000900}",
     256, NULL, KEEL_JWT_BAD_ISSUER},
    {"wrong audience", "{\"alg\":\"HS256\"}",
     "{\"iss\":\"keel\",\"aud\":\"other\",\"sub\":\"u1\",\"role\":\"user\",\"jti\":\"j1\","
     "\"iat\":1800000000,\"nbf\":1800000000,\"exp\":1800000900}",
     256, NULL, KEEL_JWT_BAD_AUDIENCE},
    {"expired", "{\"alg\":\"HS256\"}",
     "{\"iss\":\"keel\",\"aud\":\"keel-api\",\"sub\":\"u1\",\"role\":\"user\",\"jti\":\"j1\","
     "\"iat\":1799990000,\"nbf\":1799990000,\"exp\":1799999000}",
     256, NULL, KEEL_JWT_EXPIRED},
    {"nbf in the future", "{\"alg\":\"HS256\"}",
     "{\"iss\":\"keel\",\"aud\":\"keel-api\",\"sub\":\"u1\",\"role\":\"user\",\"jti\":\"j1\","
     "\"iat\":1800000000,\"nbf\":1800000100,\"exp\":1800000900}",
     256, NULL, KEEL_JWT_NOT_YET_VALID},
    {"iat in the future", "{\"alg\":\"HS256\"}",
     "{\"iss\":\"keel\",\"aud\":\"keel-api\",\"sub\":\"u1\",\"role\":\"user\",\"jti\":\"j1\","
     "\"iat\":1800000100,\"nbf\":1800000000,\"exp\":1800000900}",
     256, NULL, KEEL_JWT_NOT_YET_VALID},
    {"exp as string", "{\"alg\":\"HS256\"}",
     "{\"iss\":\"keel\",\"aud\":\"keel-api\",\"sub\":\"u1\",\"role\":\"user\",\"jti\":\"j1\","
     "\"iat\":1800000000,\"nbf\":1800000000,\"exp\":\"1800000900\"}",
     256, NULL, KEEL_JWT_MISSING_CLAIM},
    {"no jti", "{\"alg\":\"HS256\"}",
     "{\"iss\":\"keel\",\"aud\":\"keel-api\",\"sub\":\"u1\",\"role\":\"user\","
     "\"iat\":1800000000,\"nbf\":1800000000,\"exp\":1800000900}",
     256, NULL, KEEL_JWT_MISSING_CLAIM},
    {"no role", "{\"alg\":\"HS256\"}",
     "{\"iss\":\"keel\",\"aud\":\"keel-api\",\"sub\":\"u1\",\"jti\":\"j1\","
     "\"iat\":1800000000,\"nbf\":1800000000,\"exp\":1800000900}",
     256, NULL, KEEL_JWT_MISSING_CLAIM},
    {"empty sub", "{\"alg\":\"HS256\"}",
     "{\"iss\":\"keel\",\"aud\":\"keel-api\",\"sub\":\"\",\"role\":\"user\",\"jti\":\"j1\","
     "\"iat\":1800000000,\"nbf\":1800000000,\"exp\":1800000900}",
     256, NULL, KEEL_JWT_MISSING_CLAIM},
};

static void test_token_table(void **state)
{
    (void)state;
    keel_jwt_cfg c = cfg();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const tok_case *tc = &cases[i];
        char tok[4096];
        make(tc->header, tc->payload, tc->alg, tc->key ? tc->key : SECRET, tok, sizeof(tok));
        keel_jwt_claims out;
        keel_jwt_error got = keel_jwt_verify(&c, tok, strlen(tok), NOW, &out);
        if (got != tc->want)
            case_fail(tc->name, "got %d (%s), want %d", got, keel_jwt_strerror(got), tc->want);
    }
    assert_int_equal(failures, 0);
}

static void test_malformed_strings(void **state)
{
    (void)state;
    keel_jwt_cfg c = cfg();
    keel_jwt_claims out;
    char good[4096];
    make("{\"alg\":\"HS256\"}", GOOD_PAYLOAD, 256, SECRET, good, sizeof(good));
    const char *bad[] = {"", ".", "..", "a.b", "a.b.c.d", "a..c", "a.b.", "!!.!!.!!",
                         "eyJhbGciOiJIUzI1NiJ9.e30.=", "eyJhbGciOiJIUzI1NiJ9 .e30.x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (keel_jwt_verify(&c, bad[i], strlen(bad[i]), NOW, &out) != KEEL_JWT_MALFORMED)
            case_fail(bad[i], "accepted or misclassified");
    /* a flipped bit in the payload */
    char t[4096];
    strcpy(t, good);
    char *p = strchr(t, '.') + 5;
    *p = *p == 'A' ? 'B' : 'A';
    assert_int_not_equal(keel_jwt_verify(&c, t, strlen(t), NOW, &out), KEEL_JWT_OK);
    /* too long before anything is parsed */
    char big[KEEL_JWT_MAX_LEN + 10];
    memset(big, 'a', sizeof(big));
    assert_int_equal(keel_jwt_verify(&c, big, sizeof(big), NOW, &out), KEEL_JWT_TOO_LONG);
    /* an empty key verifies nothing */
    keel_jwt_cfg nokey = c;
    nokey.secret_len = 0;
    assert_int_equal(keel_jwt_verify(&nokey, good, strlen(good), NOW, &out), KEEL_JWT_BAD_SIGNATURE);
    assert_int_equal(failures, 0);
}

/* ---------------------------------------------------------------- claim options */

/* The benchmark's token (../shared/bench/README.md): HS256 under
 * keel-bench-secret, sub/name/iat only. The verifier with no claim
 * required (the demo route GET /auth/me) against the default rules. */
#define BENCH_SECRET "keel-bench-secret"
#define BENCH_HEADER "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define BENCH_PAYLOAD "{\"sub\":\"bench-user\",\"name\":\"Bench User\",\"iat\":1700000000}"
#define BENCH_TOKEN                                                                               \
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJiZW5jaC11c2VyIiwibmFtZSI6IkJlbmNoIFVzZXIiLCJp" \
    "YXQiOjE3MDAwMDAwMDB9.Uiwm0NmqLgn9OxyDdaNsVMXblgeEK2bkpXiyz83c9As"

typedef struct opt_case {
    const char *name;
    const char *header;
    const char *payload;
    int alg;
    const char *key;             /* NULL: BENCH_SECRET */
    keel_jwt_error want_default; /* keel_jwt_verify (every claim required) */
    keel_jwt_error want_none;    /* keel_jwt_verify_ex, require = 0 */
    keel_jwt_error want_sub_exp; /* require = SUB | EXP */
} opt_case;

static const opt_case opt_cases[] = {
    {"bench token", BENCH_HEADER, BENCH_PAYLOAD, 256, NULL, KEEL_JWT_BAD_ISSUER, KEEL_JWT_OK,
     KEEL_JWT_MISSING_CLAIM},
    {"bench token, other key", BENCH_HEADER, BENCH_PAYLOAD, 256, "keel-bench-secreT",
     KEEL_JWT_BAD_SIGNATURE, KEEL_JWT_BAD_SIGNATURE, KEEL_JWT_BAD_SIGNATURE},
    {"alg none", "{\"alg\":\"none\",\"typ\":\"JWT\"}", BENCH_PAYLOAD, 0, NULL,
     KEEL_JWT_MALFORMED, KEEL_JWT_MALFORMED, KEEL_JWT_MALFORMED},
    {"alg none signed", "{\"alg\":\"none\"}", BENCH_PAYLOAD, 256, NULL, KEEL_JWT_BAD_HEADER,
     KEEL_JWT_BAD_HEADER, KEEL_JWT_BAD_HEADER},
    {"alg HS512", "{\"alg\":\"HS512\"}", BENCH_PAYLOAD, 512, NULL, KEEL_JWT_BAD_HEADER,
     KEEL_JWT_BAD_HEADER, KEEL_JWT_BAD_HEADER},
    {"crit", "{\"alg\":\"HS256\",\"crit\":[\"x\"]}", BENCH_PAYLOAD, 256, NULL,
     KEEL_JWT_BAD_HEADER, KEEL_JWT_BAD_HEADER, KEEL_JWT_BAD_HEADER},
    {"duplicate alg", "{\"alg\":\"none\",\"alg\":\"HS256\"}", BENCH_PAYLOAD, 256, NULL,
     KEEL_JWT_MALFORMED, KEEL_JWT_MALFORMED, KEEL_JWT_MALFORMED},
    {"duplicate sub", BENCH_HEADER, "{\"sub\":\"bench-user\",\"sub\":\"admin\",\"iat\":1}", 256,
     NULL, KEEL_JWT_MALFORMED, KEEL_JWT_MALFORMED, KEEL_JWT_MALFORMED},
    {"iat in the future", BENCH_HEADER, "{\"sub\":\"b\",\"iat\":1800000100}", 256, NULL,
     KEEL_JWT_BAD_ISSUER, KEEL_JWT_NOT_YET_VALID, KEEL_JWT_MISSING_CLAIM},
    {"iat within the leeway", BENCH_HEADER, "{\"sub\":\"b\",\"iat\":1800000029}", 256, NULL,
     KEEL_JWT_BAD_ISSUER, KEEL_JWT_OK, KEEL_JWT_MISSING_CLAIM},
    {"iat a string", BENCH_HEADER, "{\"sub\":\"b\",\"iat\":\"1700000000\"}", 256, NULL,
     KEEL_JWT_BAD_ISSUER, KEEL_JWT_MISSING_CLAIM, KEEL_JWT_MISSING_CLAIM},
    {"no claims at all", BENCH_HEADER, "{}", 256, NULL, KEEL_JWT_BAD_ISSUER, KEEL_JWT_OK,
     KEEL_JWT_MISSING_CLAIM},
    {"exp passed", BENCH_HEADER, "{\"sub\":\"b\",\"exp\":1799999000}", 256, NULL,
     KEEL_JWT_BAD_ISSUER, KEEL_JWT_EXPIRED, KEEL_JWT_EXPIRED},
    {"exp ahead", BENCH_HEADER, "{\"sub\":\"b\",\"exp\":1800000900}", 256, NULL,
     KEEL_JWT_BAD_ISSUER, KEEL_JWT_OK, KEEL_JWT_OK},
    {"nbf in the future", BENCH_HEADER, "{\"sub\":\"b\",\"exp\":1800000900,\"nbf\":1800000100}",
     256, NULL, KEEL_JWT_BAD_ISSUER, KEEL_JWT_NOT_YET_VALID, KEEL_JWT_NOT_YET_VALID},
    {"an issuer the cfg has not", BENCH_HEADER, "{\"iss\":\"keel\",\"sub\":\"b\"}", 256, NULL,
     KEEL_JWT_BAD_ISSUER, KEEL_JWT_BAD_ISSUER, KEEL_JWT_BAD_ISSUER},
    {"an audience the cfg has not", BENCH_HEADER, "{\"aud\":\"keel-api\",\"sub\":\"b\"}", 256,
     NULL, KEEL_JWT_BAD_ISSUER, KEEL_JWT_BAD_AUDIENCE, KEEL_JWT_BAD_AUDIENCE},
    {"sub a number", BENCH_HEADER, "{\"sub\":42,\"exp\":1800000900}", 256, NULL,
     KEEL_JWT_BAD_ISSUER, KEEL_JWT_MISSING_CLAIM, KEEL_JWT_MISSING_CLAIM},
    {"sub too long", BENCH_HEADER,
     "{\"sub\":\"0123456789012345678901234567890123456789012345678901234567890123\"}", 256,
     NULL, KEEL_JWT_BAD_ISSUER, KEEL_JWT_MISSING_CLAIM, KEEL_JWT_MISSING_CLAIM},
};

static void test_claim_options_table(void **state)
{
    (void)state;
    keel_jwt_cfg c = {(const uint8_t *)BENCH_SECRET, sizeof(BENCH_SECRET) - 1, NULL, NULL, 0, 30};
    keel_jwt_verify_opts none = {.require = 0};
    keel_jwt_verify_opts sub_exp = {.require = KEEL_JWT_REQUIRE_SUB | KEEL_JWT_REQUIRE_EXP};
    for (size_t i = 0; i < sizeof(opt_cases) / sizeof(opt_cases[0]); i++) {
        const opt_case *tc = &opt_cases[i];
        char tok[4096];
        make(tc->header, tc->payload, tc->alg, tc->key ? tc->key : BENCH_SECRET, tok, sizeof(tok));
        keel_jwt_claims out;
        keel_jwt_error got = keel_jwt_verify(&c, tok, strlen(tok), NOW, &out);
        if (got != tc->want_default)
            case_fail(tc->name, "default: got %d (%s), want %d", got, keel_jwt_strerror(got),
                      tc->want_default);
        got = keel_jwt_verify_ex(&c, &none, tok, strlen(tok), NOW, &out);
        if (got != tc->want_none)
            case_fail(tc->name, "require none: got %d (%s), want %d", got,
                      keel_jwt_strerror(got), tc->want_none);
        got = keel_jwt_verify_ex(&c, &sub_exp, tok, strlen(tok), NOW, &out);
        if (got != tc->want_sub_exp)
            case_fail(tc->name, "require sub|exp: got %d (%s), want %d", got,
                      keel_jwt_strerror(got), tc->want_sub_exp);
    }
    assert_int_equal(failures, 0);
}

static void test_bench_token(void **state)
{
    (void)state;
    char tok[4096];
    make(BENCH_HEADER, BENCH_PAYLOAD, 256, BENCH_SECRET, tok, sizeof(tok));
    assert_string_equal(tok, BENCH_TOKEN); /* the harness's token, byte for byte */
    keel_jwt_cfg c = {(const uint8_t *)BENCH_SECRET, sizeof(BENCH_SECRET) - 1, NULL, NULL, 0, 30};
    json_t *claims = (json_t *)1;
    keel_jwt_verify_opts opts = {.require = 0, .payload = &claims};
    keel_jwt_claims out;
    assert_int_equal(keel_jwt_verify_ex(&c, &opts, tok, strlen(tok), NOW, &out), KEEL_JWT_OK);
    assert_string_equal(out.sub, "bench-user");
    assert_int_equal(out.iat, 1700000000);
    assert_int_equal(out.exp, 0);
    assert_string_equal(out.role, "");
    assert_non_null(claims);
    assert_string_equal(json_string_value(json_object_get(claims, "name")), "Bench User");
    assert_int_equal(json_object_size(claims), 3);
    json_decref(claims);
    /* the same token with its signature broken: refused, no claims */
    size_t n = strlen(tok);
    tok[n - 2] = tok[n - 2] == 'A' ? 'B' : 'A';
    claims = (json_t *)1;
    assert_int_equal(keel_jwt_verify_ex(&c, &opts, tok, n, NOW, &out), KEEL_JWT_BAD_SIGNATURE);
    assert_null(claims);
    assert_string_equal(out.sub, "");
    assert_int_equal(keel_jwt_verify(&c, tok, n, NOW, &out), KEEL_JWT_BAD_SIGNATURE);
    /* the signature cut short */
    assert_int_equal(keel_jwt_verify_ex(&c, &opts, tok, n - 1, NOW, &out),
                     KEEL_JWT_BAD_SIGNATURE);
    /* default rules: refused for its missing claims even with a valid signature */
    make(BENCH_HEADER, BENCH_PAYLOAD, 256, BENCH_SECRET, tok, sizeof(tok));
    keel_jwt_cfg full = {(const uint8_t *)BENCH_SECRET, sizeof(BENCH_SECRET) - 1, "keel",
                         "keel-api", 900, 30};
    assert_int_equal(keel_jwt_verify(&full, tok, strlen(tok), NOW, &out), KEEL_JWT_BAD_ISSUER);
    keel_jwt_verify_opts all = {.require = KEEL_JWT_REQUIRE_ALL & ~(KEEL_JWT_REQUIRE_ISS |
                                                                    KEEL_JWT_REQUIRE_AUD)};
    assert_int_equal(keel_jwt_verify_ex(&full, &all, tok, strlen(tok), NOW, &out),
                     KEEL_JWT_MISSING_CLAIM);
}

static void test_password_policy_and_hash(void **state)
{
    (void)state;
    assert_null(keel_password_weakness("correct horse battery", 21, 8));
    assert_non_null(keel_password_weakness("short", 5, 8));
    assert_non_null(keel_password_weakness("Password1", 9, 8));
    assert_non_null(keel_password_weakness("QWERTYUIOP", 10, 8));
    char big[1100];
    memset(big, 'x', sizeof(big));
    assert_non_null(keel_password_weakness(big, 1025, 8));
    assert_null(keel_password_weakness(big, 1024, 8));
    char h[KEEL_PW_HASH_MAX];
    uint64_t ops = 1, mem = 8192 * 1024;
    assert_int_equal(keel_password_hash("s3cret-pass", 11, ops, mem, h), 0);
    assert_true(strncmp(h, "$argon2id$", 10) == 0);
    assert_true(keel_password_verify(h, "s3cret-pass", 11));
    assert_false(keel_password_verify(h, "s3cret-pasS", 11));
    assert_false(keel_password_verify(h, "s3cret-pass", 10));
    assert_false(keel_password_needs_rehash(h, ops, mem));
    assert_true(keel_password_needs_rehash(h, 2, mem));
}

static void *idle_thread(void *arg)
{
    char c;
    (void)!read(*(int *)arg, &c, 1); /* until the test writes */
    return NULL;
}

/* The hasher child's pid: the one process whose parent is this one and
 * whose name is keel-hasher. */
static pid_t hasher_pid(void)
{
    DIR *d = opendir("/proc");
    pid_t found = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        char path[300], buf[512];
        snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = 0;
        char *close_paren = strrchr(buf, ')');
        int ppid = 0;
        if (strstr(buf, "(keel-hasher)") && close_paren &&
            sscanf(close_paren + 2, "%*c %d", &ppid) == 1 && ppid == getpid())
            found = (pid_t)atoi(e->d_name);
    }
    if (d)
        closedir(d);
    return found;
}

/* keel_password_isolate: refused once there are threads; then hashes and
 * checks go through the child, give the same answers, and keep working
 * (in process) after the child is killed. */
static void test_password_hasher_process(void **state)
{
    (void)state;
    pthread_t t;
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(pthread_create(&t, NULL, idle_thread, &p[0]), 0);
    assert_int_equal(keel_password_isolate(2, 3), KEEL_EINVAL); /* not with a second thread */
    assert_int_equal(write(p[1], "x", 1), 1);
    pthread_join(t, NULL);
    close(p[0]);
    close(p[1]);
    assert_int_equal(keel_password_isolate(2, 3), 0);
    assert_int_equal(keel_password_isolate(2, 3), KEEL_EALREADY);
    pid_t child = hasher_pid();
    assert_true(child > 0);
    errno = 0;
    assert_int_equal(getpriority(PRIO_PROCESS, (id_t)child), getpriority(PRIO_PROCESS, 0) + 3);
    char h[KEEL_PW_HASH_MAX];
    uint64_t ops = 1, mem = 8192 * 1024;
    assert_int_equal(keel_password_hash("s3cret-pass", 11, ops, mem, h), 0);
    assert_true(strncmp(h, "$argon2id$", 10) == 0);
    assert_true(keel_password_verify(h, "s3cret-pass", 11));
    assert_false(keel_password_verify(h, "s3cret-pasS", 11));
    assert_false(keel_password_verify("$argon2id$v=19$m=8192,t=1,p=1$bad", "x", 1));
    assert_false(keel_password_verify(NULL, "s3cret-pass", 11));
    /* a password with a NUL byte inside, and the longest allowed */
    char big[KEEL_PASSWORD_MAX];
    memset(big, 'y', sizeof(big));
    big[7] = 0;
    assert_int_equal(keel_password_hash(big, sizeof(big), ops, mem, h), 0);
    assert_true(keel_password_verify(h, big, sizeof(big)));
    assert_false(keel_password_verify(h, big, 7));
    /* the child dies: the next calls hash in process */
    assert_int_equal(kill(child, SIGKILL), 0);
    (void)waitpid(child, NULL, 0);
    assert_int_equal(keel_password_hash("after-death", 11, ops, mem, h), 0);
    assert_true(keel_password_verify(h, "after-death", 11));
    assert_false(keel_password_verify(h, "after-deatH", 11));
}

static void test_roles(void **state)
{
    (void)state;
    assert_true(keel_role_valid("admin"));
    assert_false(keel_role_valid("root"));
    assert_true(keel_role_rank("admin") > keel_role_rank("moderator"));
    assert_true(keel_role_can("admin", "users:write"));
    assert_true(keel_role_can("moderator", "users:read"));
    assert_false(keel_role_can("moderator", "users:write"));
    assert_false(keel_role_can("user", "users:read"));
    assert_false(keel_role_can("nobody", "users:read"));
    keel_principal key = {.kind = "apikey", .id = "k1", .scopes = "users:read, reports:run"};
    assert_true(keel_principal_can(&key, "users:read"));
    assert_true(keel_principal_can(&key, "reports:run"));
    assert_false(keel_principal_can(&key, "users:rea"));
    assert_false(keel_principal_can(&key, "users:write"));
    assert_false(keel_principal_can(NULL, "users:read"));
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_verify_round_trip),
        cmocka_unit_test(test_token_table),
        cmocka_unit_test(test_accepted_token_cache),
        cmocka_unit_test(test_malformed_strings),
        cmocka_unit_test(test_claim_options_table),
        cmocka_unit_test(test_bench_token),
        cmocka_unit_test(test_password_policy_and_hash),
        cmocka_unit_test(test_roles),
        cmocka_unit_test(test_password_hasher_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
