/* testsrv.h — the in-process server tests' server side: a loopback
 * configuration, creating the server with logging, counters the test
 * waits for, and the drain that ends a test with every loop closed. Each
 * test sets its own options (log level, work threads, ...) between
 * testsrv_config and testsrv_new. Include after <cmocka.h>. */
#ifndef KEEL_TEST_TESTSRV_H
#define KEEL_TEST_TESTSRV_H

#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

#include "keel/keel.h"

/* keel's defaults, bound to 127.0.0.1 on a free port with one worker. */
static __attribute__((unused)) void testsrv_config(keel_config *cfg)
{
    keel_config_defaults(cfg);
    keel_free(cfg->host);
    cfg->host = keel_strdup("127.0.0.1");
    cfg->port = 0;
    cfg->workers = 1;
}

/* Starts logging as cfg says and creates the server; cfg stays the caller's. */
static __attribute__((unused)) keel_server *testsrv_new(const keel_config *cfg)
{
    keel_log_init(cfg);
    return keel_server_new(cfg);
}

/* Adds 1 to *counter under mu (counters that loop and pool threads bump). */
static __attribute__((unused)) void testsrv_count(pthread_mutex_t *mu, int *counter)
{
    pthread_mutex_lock(mu);
    (*counter)++;
    pthread_mutex_unlock(mu);
}

/* Waits (5 s at most) until *counter, read atomically, is not 0; the test asserts on it later. */
static __attribute__((unused)) void testsrv_wait_nonzero(int *counter)
{
    uint64_t t0 = keel_now_ms();
    while (__atomic_load_n(counter, __ATOMIC_SEQ_CST) == 0 && keel_now_ms() - t0 < 5000)
        usleep(10 * 1000);
}

/* Drains s and asserts that every loop closed within 5 s. */
static __attribute__((unused)) void testsrv_drain(keel_server *s)
{
    keel_server_drain(s);
    assert_int_equal(keel_server_wait(s, 5000), 0);
}

/* Frees s (drained, or never started) and closes the log testsrv_new opened. */
static __attribute__((unused)) void testsrv_free(keel_server *s)
{
    keel_server_free(s);
    keel_log_close();
}

/* testsrv_drain, then testsrv_free: the end of a test with a started server. */
static __attribute__((unused)) void testsrv_stop(keel_server *s)
{
    testsrv_drain(s);
    testsrv_free(s);
}

#endif
