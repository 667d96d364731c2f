/* health_internal.h — shared by health.c and health_system.c. Never
 * installed. */
#ifndef KEEL_HEALTH_INTERNAL_H
#define KEEL_HEALTH_INTERNAL_H

#include "keel/health.h"

/* h frees p with fn when it is freed (state of checks it registered). */
void keel__health_own(keel_health *h, void *p, void (*fn)(void *p));

#endif
