/* keel/net.h — addresses, CIDR lists and the client behind a proxy.
 *
 * TRUST_PROXY names the proxies whose forwarding headers keel believes.
 * From a trusted peer, the client address is the rightmost address of
 * X-Forwarded-For (or of Forwarded's for= parameters) that is not itself a
 * trusted proxy; from anyone else those headers are ignored, so a client
 * cannot choose the address its rate limit is counted against.
 */
#ifndef KEEL_NET_H
#define KEEL_NET_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An IPv4 or IPv6 address; an IPv4-mapped IPv6 address (::ffff:a.b.c.d)
 * is stored as IPv4. */
typedef struct keel_addr {
    int family; /* AF_INET or AF_INET6; 0 = none */
    uint8_t b[16];
} keel_addr;

/* Parses "1.2.3.4" or "2001:db8::1" (exactly len bytes). 0 or KEEL_EINVAL. */
int keel_addr_parse(const char *s, size_t len, keel_addr *out);

/* Writes the textual form (at most 46 bytes with the NUL). */
void keel_addr_format(const keel_addr *a, char *buf, size_t cap);

/* The address with every bit past `bits` cleared (IPv6 only; IPv4 is
 * returned as is): how keel groups IPv6 clients, who usually own a
 * whole /64, for per-client limits. */
keel_addr keel_addr_prefix(const keel_addr *a, unsigned v6_bits);

/* One IPv4 or IPv6 block: an address and a prefix length. */
typedef struct keel_cidr {
    int family;        /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    unsigned bits;
} keel_cidr;

/* Parses a comma- or space-separated list ("10.0.0.0/8, ::1") into out
 * (at most cap entries; an address alone is one host). Returns the number
 * of entries (0 for an empty list) or KEEL_EINVAL (a malformed entry, a
 * prefix too long for its family, more than cap entries). */
int keel_cidr_parse_list(const char *list, keel_cidr *out, size_t cap);

/* 1 when the address is in one of the n blocks, else 0. The textual form
 * takes what keel_req_remote_addr returns ("-" and garbage match nothing). */
int keel_cidr_contains(const keel_cidr *list, size_t n, const keel_addr *a);
int keel_cidr_match(const keel_cidr *list, size_t n, const char *addr);

/* 1 when a block of the list covers every address of its family (/0). */
int keel_cidr_any(const keel_cidr *list, size_t n);

/* Which header carries the client chain (TRUST_PROXY_HEADER). */
typedef enum keel_fwd_header {
    KEEL_FWD_XFF = 0,   /* X-Forwarded-For: 203.0.113.7, 10.0.0.2 */
    KEEL_FWD_FORWARDED  /* RFC 7239 Forwarded: for=203.0.113.7;proto=https */
} keel_fwd_header;

/* The client address from the chain in `values` (the header's field
 * values in the order received; several lines form one list), for a
 * request that came from a trusted peer: walking from the right, the
 * first hop that is not in `trusted`. Hops may carry a port
 * ("1.2.3.4:80", "[::1]:80"); Forwarded's for= may be quoted. When the
 * walk meets a hop it cannot parse (garbage, "unknown", an obfuscated
 * name) it stops and answers the hop to its right — the last address a
 * trusted proxy vouched for; when every hop is trusted, the leftmost.
 * Returns 1 with *out set, or 0 when the chain is empty or its rightmost
 * hop is unusable (then the peer is the client). */
int keel_forwarded_client(const keel_str *values, size_t nvalues, keel_fwd_header kind,
                          const keel_cidr *trusted, size_t ntrusted, keel_addr *out);

/* The scheme the client used, from a trusted peer's X-Forwarded-Proto
 * (first value) or Forwarded proto= (first element that has one):
 * 1 for https, 0 otherwise. */
int keel_forwarded_https(const keel_str *values, size_t nvalues, keel_fwd_header kind);

#ifdef __cplusplus
}
#endif
#endif
