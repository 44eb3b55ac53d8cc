/* proxyv2.h - PROXY protocol v2 header with TLS identity TLVs (see proxyv2.c). */
#ifndef MESHTLS_PROXYV2_H
#define MESHTLS_PROXYV2_H

#include <stddef.h>
#include <sys/socket.h>

#define PX_PP2_MAX 4096
#define PX_PP2_TYPE_SPIFFE_ID 0xE0

/* TLS facts to announce; all strings borrowed, any may be NULL. */
struct px_pp2_tls {
    const char *version;   /* "TLSv1.3" */
    const char *cn;        /* client certificate subject CN */
    const char *cipher;    /* negotiated cipher */
    const char *sni;       /* server name the client asked for */
    const char *spiffe_id; /* client SPIFFE ID */
};

/**
 * Write a PROXY v2 header for a connection from `src` to `dst` (borrowed)
 * into `buf` (`cap` bytes; PX_PP2_MAX is always enough).
 * @return bytes written, or 0 if it does not fit.
 */
size_t px_pp2_build(unsigned char *buf, size_t cap, const struct sockaddr *src,
                    const struct sockaddr *dst, const struct px_pp2_tls *t);

#endif
