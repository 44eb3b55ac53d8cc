/* verify_cache.h - internal interface of the verified-chain cache (tls.c uses it). */
#ifndef MESHTLS_VERIFY_CACHE_H
#define MESHTLS_VERIFY_CACHE_H

#include <stdint.h>

#include "meshtls/tls.h"

void mt_verify_cache_up_ref(struct meshtls_verify_cache *c);
/** A context with trust digest `trust` starts using `c`: other trust empties it. */
void mt_verify_cache_attach(struct meshtls_verify_cache *c, const unsigned char trust[32]);
/** 1 if `key` was verified and is valid at `now`. */
int mt_verify_cache_hit(struct meshtls_verify_cache *c, const unsigned char key[32], int64_t now);
/** Remember a successful verification valid in [not_before, expires). */
void mt_verify_cache_add(struct meshtls_verify_cache *c, const unsigned char key[32],
                         int64_t not_before, int64_t expires);

#endif
