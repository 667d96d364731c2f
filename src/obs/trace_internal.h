/* trace_internal.h — shared by trace.c and trace_context.c (src/obs only). */
#ifndef KEEL_OBS_TRACE_INTERNAL_H
#define KEEL_OBS_TRACE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* n bytes as 2n lowercase hex digits (no NUL). */
void keel__trace_hex_encode(char *out, const uint8_t *p, size_t n);

#endif
