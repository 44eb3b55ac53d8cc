/* session_cache.h - internal interface of the shared session cache (tls.c uses it). */
#ifndef MESHTLS_SESSION_CACHE_H
#define MESHTLS_SESSION_CACHE_H

#include <openssl/ssl.h>

#include "meshtls/tls.h"

/** Take one more reference on `c`. */
void mt_session_cache_up_ref(struct meshtls_session_cache *c);
/** Insert `sess`, taking the caller's reference on success (@return 1), else 0. */
int mt_session_cache_add(struct meshtls_session_cache *c, SSL_SESSION *sess,
                         const unsigned char trust[32]);
/** Look up a live session verified under `trust`; @return a new reference or NULL. */
SSL_SESSION *mt_session_cache_get(struct meshtls_session_cache *c, const unsigned char *id,
                                  unsigned len, const unsigned char trust[32]);
/** Forget `sess` (OpenSSL's remove callback). */
void mt_session_cache_remove(struct meshtls_session_cache *c, SSL_SESSION *sess);

#endif
