/* fuzz_jwt.c — keel_jwt_verify_ex on hostile tokens. The first byte picks
 * the mode and the claims required:
 *   even: the rest is a token as sent (any bytes): never a crash, and
 *         nothing but a refusal unless it is signed with the secret;
 *   odd:  the rest is "header JSON \n payload JSON", which the harness
 *         encodes and signs with the secret (HS256), so the header and
 *         claim checks behind the signature are reached too.
 * Whatever verifies must hold its promises: exp not passed, nbf and iat
 * not in the future (within the leeway), NUL-terminated claim strings, a
 * claims object when asked for one. */
#include <jansson.h>
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keel/auth.h"
#include "keel/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                         \
    do {                                                                                 \
        if (!(c))                                                                        \
            abort();                                                                     \
    } while (0)

static const uint8_t SECRET[] = "fuzz-secret-0123456789abcdef0123456789abcdef";
#define NOW 1800000000

static size_t b64url(const uint8_t *in, size_t n, char *out, size_t cap)
{
    size_t need = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    if (need > cap)
        return 0;
    sodium_bin2base64(out, cap, in, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return strlen(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        keel_library_init();
        ready = 1;
    }
    if (size < 1 || size > 3 * KEEL_JWT_MAX_LEN)
        return 0;
    unsigned mode = data[0];
    data++;
    size--;
    keel_jwt_cfg cfg = {.secret = SECRET, .secret_len = sizeof(SECRET) - 1,
                        .issuer = (mode & 2) ? "keel" : NULL,
                        .audience = (mode & 4) ? "api" : NULL, .ttl_s = 900, .leeway_s = 30};
    static char token[4 * KEEL_JWT_MAX_LEN];
    const char *t = (const char *)data;
    size_t tlen = size;
    if (mode & 1) {
        const uint8_t *nl = memchr(data, '\n', size);
        if (!nl)
            return 0;
        size_t hl = (size_t)(nl - data), pl = size - hl - 1;
        size_t a = b64url(data, hl, token, sizeof(token));
        if (!a && hl)
            return 0;
        token[a++] = '.';
        size_t b = b64url(nl + 1, pl, token + a, sizeof(token) - a - 64);
        if (!b && pl)
            return 0;
        a += b;
        uint8_t mac[crypto_auth_hmacsha256_BYTES];
        crypto_auth_hmacsha256_state st;
        crypto_auth_hmacsha256_init(&st, SECRET, sizeof(SECRET) - 1);
        crypto_auth_hmacsha256_update(&st, (const uint8_t *)token, a);
        crypto_auth_hmacsha256_final(&st, mac);
        token[a++] = '.';
        a += b64url(mac, sizeof(mac), token + a, sizeof(token) - a);
        t = token;
        tlen = a;
    }
    json_t *payload = NULL;
    keel_jwt_verify_opts opts = {.require = (mode >> 3) & KEEL_JWT_REQUIRE_ALL,
                                 .payload = (mode & 0x80) ? &payload : NULL};
    keel_jwt_claims cl;
    memset(&cl, 0x55, sizeof(cl)); /* verify must terminate what it fills */
    keel_jwt_error e = keel_jwt_verify_ex(&cfg, &opts, t, tlen, NOW, &cl);
    CHECK(keel_jwt_strerror(e) != NULL);
    if (e == KEEL_JWT_OK) {
        CHECK((mode & 1) || tlen <= KEEL_JWT_MAX_LEN);
        CHECK(memchr(cl.sub, '\0', sizeof(cl.sub)) && memchr(cl.role, '\0', sizeof(cl.role)) &&
              memchr(cl.jti, '\0', sizeof(cl.jti)));
        CHECK(cl.exp == 0 || cl.exp + (int64_t)cfg.leeway_s > NOW);
        CHECK(cl.nbf <= NOW + (int64_t)cfg.leeway_s && cl.iat <= NOW + (int64_t)cfg.leeway_s);
        if (opts.payload)
            CHECK(payload && json_is_object(payload));
    } else if (opts.payload) {
        CHECK(payload == NULL);
    }
    json_decref(payload);
    return 0;
}
