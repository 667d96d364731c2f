/* test_sha256.c — keel_sha256 (src/core/sha256.c): the FIPS 180-2 test
 * vectors, and a 3 MiB input fed in uneven pieces giving libsodium's
 * one-shot digest, whichever implementation the machine uses (the test
 * says which). Abandoned hashes are released (the sanitizer build turns a
 * leaked libcrypto context into a failure). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "keel/common.h"

static void hex(const uint8_t d[32], char out[65])
{
    sodium_bin2hex(out, 65, d, 32);
}

static void test_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    printf("keel_sha256: %s\n", keel_sha256_accelerated() ? "libcrypto" : "libsodium");
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        keel_sha256 h;
        uint8_t d[32];
        char got[65];
        keel_sha256_init(&h);
        keel_sha256_update(&h, v[i].in, strlen(v[i].in));
        keel_sha256_final(&h, d);
        keel_sha256_free(&h); /* after final: nothing left, safe */
        hex(d, got);
        assert_string_equal(got, v[i].want);
    }
}

static void test_pieces_match_libsodium(void **state)
{
    (void)state;
    size_t n = 3u << 20;
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)(i * 2654435761u >> 13);
    uint8_t want[32], got[32];
    crypto_hash_sha256(want, buf, n);
    keel_sha256 h;
    keel_sha256_init(&h);
    size_t off = 0, step = 1;
    while (off < n) {
        size_t k = step < n - off ? step : n - off;
        keel_sha256_update(&h, buf + off, k);
        off += k;
        step = step * 3 + 7; /* 1, 10, 37, ... bytes: every alignment */
        if (step > 300000)
            step = 63;
    }
    keel_sha256_final(&h, got);
    assert_memory_equal(got, want, 32);
    /* abandoned half-way: released without a digest */
    keel_sha256 a;
    keel_sha256_init(&a);
    keel_sha256_update(&a, buf, 1000);
    keel_sha256_free(&a);
    keel_sha256_free(&a);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_pieces_match_libsodium),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
