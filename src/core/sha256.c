/* sha256.c — SHA-256 on libcrypto's code (SHA instructions) when the
 * system has it, libsodium's otherwise (keel/common.h).
 *
 * Why: an upload is hashed as it streams (files.c names objects by
 * content), and on the server's one CPU libsodium's portable SHA-256
 * (~0.3 GB/s) was the largest user-space cost of a 100 MiB upload.
 * libcrypto is loaded with dlopen, as libjwt and libpq are: keel needs no
 * OpenSSL headers or link flag, and runs (slower) without it. */
#include <dlfcn.h>
#include <pthread.h>
#include <sodium.h>
#include <string.h>

#include "keel/common.h"

_Static_assert(sizeof(crypto_hash_sha256_state) <= sizeof(((keel_sha256 *)0)->state),
               "keel_sha256 too small for libsodium's state");

static struct {
    void *(*ctx_new)(void);
    void (*ctx_free)(void *);
    const void *(*md)(void);
    int (*init)(void *, const void *, void *);
    int (*update)(void *, const void *, size_t);
    int (*final)(void *, unsigned char *, unsigned int *);
    const void *sha256;
    int ok;
} E;

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void load(void)
{
    void *h = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
    if (!h)
        return;
#define SYM(field, name) *(void **)(&E.field) = dlsym(h, name)
    SYM(ctx_new, "EVP_MD_CTX_new");
    SYM(ctx_free, "EVP_MD_CTX_free");
    SYM(md, "EVP_sha256");
    SYM(init, "EVP_DigestInit_ex");
    SYM(update, "EVP_DigestUpdate");
    SYM(final, "EVP_DigestFinal_ex");
#undef SYM
    if (E.ctx_new && E.ctx_free && E.md && E.init && E.update && E.final)
        E.sha256 = E.md();
    E.ok = E.sha256 != NULL;
}

int keel_sha256_accelerated(void)
{
    pthread_once(&once, load);
    return E.ok;
}

void keel_sha256_init(keel_sha256 *h)
{
    memset(h, 0, sizeof(*h));
    if (keel_sha256_accelerated()) {
        void *c = E.ctx_new();
        if (c && E.init(c, E.sha256, NULL) == 1) {
            h->evp = c;
            return;
        }
        if (c)
            E.ctx_free(c);
    }
    keel_library_init();
    crypto_hash_sha256_init((crypto_hash_sha256_state *)h->state);
}

void keel_sha256_update(keel_sha256 *h, const void *p, size_t n)
{
    if (h->evp)
        (void)E.update(h->evp, p, n); /* cannot fail for a software digest */
    else
        crypto_hash_sha256_update((crypto_hash_sha256_state *)h->state, p,
                                  (unsigned long long)n);
}

void keel_sha256_final(keel_sha256 *h, uint8_t out[32])
{
    if (h->evp) {
        unsigned int len = 0;
        (void)E.final(h->evp, out, &len);
        E.ctx_free(h->evp);
        h->evp = NULL;
    } else {
        crypto_hash_sha256_final((crypto_hash_sha256_state *)h->state, out);
    }
}

void keel_sha256_free(keel_sha256 *h)
{
    if (h->evp)
        E.ctx_free(h->evp);
    h->evp = NULL;
}
