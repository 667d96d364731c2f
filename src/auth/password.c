/* password.c — argon2id hashes (libsodium) and the password policy:
 * length MIN..1024 bytes and not one of the most common passwords. */
#include <sodium.h>
#include <string.h>
#include <strings.h>

#include "keel/auth.h"

#define PW_MAX KEEL_PASSWORD_MAX

int keel_password_hash(const char *pw, size_t len, uint64_t ops, uint64_t mem,
                       char out[KEEL_PW_HASH_MAX])
{
    keel_library_init();
    if (crypto_pwhash_str_alg(out, pw, len, ops, (size_t)mem, crypto_pwhash_ALG_ARGON2ID13) != 0)
        return KEEL_ENOMEM;
    return 0;
}

int keel_password_verify(const char *hash, const char *pw, size_t len)
{
    keel_library_init();
    return hash && crypto_pwhash_str_verify(hash, pw, len) == 0;
}

int keel_password_needs_rehash(const char *hash, uint64_t ops, uint64_t mem)
{
    return crypto_pwhash_str_needs_rehash(hash, ops, (size_t)mem) != 0;
}

/* The most common passwords of the public breach lists that satisfy an
 * 8-character minimum (compared case-insensitively). */
static const char *const common[] = {
    "password", "password1", "password12", "password123", "password!", "passw0rd",
    "p@ssw0rd", "p@ssword", "12345678", "123456789", "1234567890", "12345678910",
    "87654321", "11111111", "00000000", "88888888", "qwertyui", "qwerty123",
    "qwertyuiop", "1qaz2wsx", "1q2w3e4r", "1q2w3e4r5t", "zaq12wsx", "asdfghjk",
    "asdfasdf", "iloveyou", "iloveyou1", "sunshine", "princess", "football",
    "baseball", "welcome1", "welcome123", "letmein1", "superman", "trustno1",
    "starwars", "whatever", "computer", "michelle", "jennifer", "corvette",
    "mercedes", "liverpool", "chelsea1", "arsenal1", "abcd1234", "abc12345",
    "abcdefgh", "aa123456", "admin123", "administrator", "changeme", "letmein!",
    "monkey12", "dragon12", "master12", "shadow12", "pokemon1", "samsung1",
    "q1w2e3r4", "q1w2e3r4t5", "123qweasd", "qweasdzxc", "1234qwer", "zxcvbnm1",
    "secret123", "default1", "test1234", "testtest", "guest123", "google123",
    NULL};

const char *keel_password_weakness(const char *pw, size_t len, size_t min)
{
    if (len < min)
        return "the password is too short";
    if (len > PW_MAX)
        return "the password is too long (at most 1024 bytes)";
    for (size_t i = 0; common[i]; i++)
        if (strlen(common[i]) == len && strncasecmp(common[i], pw, len) == 0)
            return "the password is one of the most common passwords";
    return NULL;
}
