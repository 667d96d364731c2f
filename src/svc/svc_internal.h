/* svc_internal.h — what keel_main (service.c) calls in the other files of
 * src/svc. Never installed. */
#ifndef KEEL_SVC_INTERNAL_H
#define KEEL_SVC_INTERNAL_H

#include <stdio.h>

#include "keel/service.h"

/* `PROG migrate ...` (argv[1] is "migrate"): loads the configuration
 * itself (--env-file F is accepted) and returns the exit status: 0, 1 when
 * a migration failed or was refused (one log line says why), 2 for usage
 * or configuration errors. */
int keel__svc_migrate_main(const keel_app *app, int argc, char **argv);

/* Applies the app's pending migrations before `serve` listens. 0 or a
 * negative error, already logged. */
int keel__svc_migrate_on_start(const keel_app *app, const keel_config *cfg);

/* The migrate lines of --help. */
void keel__svc_migrate_usage(FILE *out);

#endif
