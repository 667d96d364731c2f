/* init.c — what the library itself needs initialised, done once per
 * process on first use, so an application on libkeel never has to know
 * (libsodium wants sodium_init() before its first use; calling it again
 * takes a lock each time, so keel keeps its own once-flag). */
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>

#include "keel/common.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init_once(void)
{
    /* without a working random source keel cannot make tokens, ids or
     * salts: refusing to run is the only safe answer */
    if (sodium_init() < 0)
        abort();
}

void keel_library_init(void)
{
    pthread_once(&once, init_once);
}
