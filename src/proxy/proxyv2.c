/*
 * proxyv2.c - build a PROXY protocol v2 header (HAProxy's proxy-protocol.txt,
 * section 2.2) announcing the client's address and its verified TLS identity
 * to the target.
 *
 * TLVs: PP2_TYPE_SSL (0x20) with PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN,
 * verify = 0 (the chain was verified), and the sub-TLVs SSL_VERSION (0x21),
 * SSL_CN (0x22), SSL_CIPHER (0x23); PP2_TYPE_AUTHORITY (0x02) with the SNI
 * the client sent, if any; and the SPIFFE ID in the first custom type,
 * PP2_TYPE_MESHTLS_SPIFFE_ID (0xE0).  Values are truncated to bound the
 * header (at most PX_PP2_MAX bytes).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "proxyv2.h"

static const unsigned char SIG[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                      0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* Append one TLV; @return new length or 0 if it does not fit. */
static size_t tlv(unsigned char *buf, size_t n, size_t cap, unsigned char type, const void *v,
                  size_t len)
{
    if (len > 1024)
        len = 1024;
    if (n + 3 + len > cap)
        return 0;
    buf[n] = type;
    buf[n + 1] = (unsigned char)(len >> 8);
    buf[n + 2] = (unsigned char)(len & 0xff);
    memcpy(buf + n + 3, v, len);
    return n + 3 + len;
}

size_t px_pp2_build(unsigned char *buf, size_t cap, const struct sockaddr *src,
                    const struct sockaddr *dst, const struct px_pp2_tls *t)
{
    size_t n;
    if (cap < 16 + 36)
        return 0;
    memcpy(buf, SIG, 12);
    buf[12] = 0x21; /* version 2, PROXY */
    if (src->sa_family == AF_INET && dst->sa_family == AF_INET) {
        const struct sockaddr_in *s = (const void *)src, *d = (const void *)dst;
        buf[13] = 0x11; /* TCP over IPv4 */
        memcpy(buf + 16, &s->sin_addr, 4);
        memcpy(buf + 20, &d->sin_addr, 4);
        memcpy(buf + 24, &s->sin_port, 2);
        memcpy(buf + 26, &d->sin_port, 2);
        n = 28;
    } else if (src->sa_family == AF_INET6 && dst->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const void *)src, *d = (const void *)dst;
        buf[13] = 0x21; /* TCP over IPv6 */
        memcpy(buf + 16, &s->sin6_addr, 16);
        memcpy(buf + 32, &d->sin6_addr, 16);
        memcpy(buf + 48, &s->sin6_port, 2);
        memcpy(buf + 50, &d->sin6_port, 2);
        n = 52;
    } else {
        buf[13] = 0x20; /* LOCAL/unspec: mixed families */
        buf[12] = 0x21;
        n = 16;
    }
    if (t) {
        if (t->sni && *t->sni && !(n = tlv(buf, n, cap, 0x02, t->sni, strlen(t->sni))))
            return 0;
        /* PP2_TYPE_SSL: client(1) verify(4) then sub-TLVs */
        unsigned char ssl[1 + 4 + 3 * (3 + 256)];
        size_t sn = 5;
        ssl[0] = 0x01 | 0x02;  /* PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN */
        memset(ssl + 1, 0, 4); /* verify: 0 = success */
        if (t->version &&
            !(sn = tlv(ssl, sn, sizeof(ssl), 0x21, t->version, strnlen(t->version, 255))))
            return 0;
        if (t->cn && !(sn = tlv(ssl, sn, sizeof(ssl), 0x22, t->cn, strnlen(t->cn, 255))))
            return 0;
        if (t->cipher &&
            !(sn = tlv(ssl, sn, sizeof(ssl), 0x23, t->cipher, strnlen(t->cipher, 255))))
            return 0;
        if (!(n = tlv(buf, n, cap, 0x20, ssl, sn)))
            return 0;
        if (t->spiffe_id && *t->spiffe_id &&
            !(n = tlv(buf, n, cap, PX_PP2_TYPE_SPIFFE_ID, t->spiffe_id, strlen(t->spiffe_id))))
            return 0;
    }
    size_t body = n - 16;
    buf[14] = (unsigned char)(body >> 8);
    buf[15] = (unsigned char)(body & 0xff);
    return n;
}
