/*
 * meshtls/identity.h - who a certificate says it is.
 *
 * A struct meshtls_identity is a read-only record extracted from one X.509
 * certificate.  It is created by meshtls_identity_from_*() and owned by the
 * caller, who frees it with meshtls_identity_free(); every string inside it
 * belongs to it.  Strings are NUL-terminated UTF-8 ("" when absent, never NULL),
 * except `spiffe_id`, which is NULL when the certificate has no SPIFFE ID.
 */
#ifndef MESHTLS_IDENTITY_H
#define MESHTLS_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "meshtls/err.h"
#include "meshtls/export.h"
#include "meshtls/spiffe.h"

#ifdef __cplusplus
extern "C" {
#endif

struct meshtls_identity {
    char *subject; /**< full subject, RFC 2253 ("CN=api,O=acme") */
    char *issuer;  /**< full issuer, RFC 2253 */
    char *cn;      /**< subject commonName (first) */
    char *o;       /**< subject organizationName (first) */
    char *ou;      /**< subject organizationalUnitName (first) */
    char *serial; /**< serial number, lower-case hex, even length (openssl x509 -serial, lower case)
                   */
    int64_t not_before; /**< Unix seconds */
    int64_t not_after;  /**< Unix seconds */
    char **dns;         /**< DNS SANs */
    size_t n_dns;
    char **ips; /**< IP SANs, textual (IPv4 dotted, IPv6 RFC 5952) */
    size_t n_ips;
    char **uris; /**< URI SANs */
    size_t n_uris;
    char *spiffe_id;                 /**< the SPIFFE ID: the single URI SAN, if it is a valid
                                          SPIFFE ID; NULL otherwise (incl. >1 URI SAN) */
    struct meshtls_spiffe_id spiffe; /**< parsed `spiffe_id`; zeroed if NULL */
    int is_ca;                       /**< basicConstraints CA:TRUE */
    char *key_type;                  /**< "EC P-256", "RSA 2048", "ED25519", ... */
    char **emails;                   /**< rfc822Name (email) SANs */
    size_t n_emails;
};

/** Extract the identity of `cert` (borrowed). */
MESHTLS_API int meshtls_identity_from_x509(X509 *cert, struct meshtls_identity **out,
                                           struct meshtls_err *err);

/** Extract the identity of the first certificate in PEM text `buf` of `len` bytes. */
MESHTLS_API int meshtls_identity_from_pem(const char *buf, size_t len,
                                          struct meshtls_identity **out, struct meshtls_err *err);

/** Extract the identity of a DER certificate of `len` bytes. */
MESHTLS_API int meshtls_identity_from_der(const unsigned char *der, size_t len,
                                          struct meshtls_identity **out, struct meshtls_err *err);

/** Free `id` and everything it holds; NULL is fine. */
MESHTLS_API void meshtls_identity_free(struct meshtls_identity *id);

/**
 * Whole days from `now` (Unix seconds; 0 = current time) until not_after,
 * rounded down; negative once expired.
 */
MESHTLS_API int64_t meshtls_identity_days_left(const struct meshtls_identity *id, int64_t now);

#ifdef __cplusplus
}
#endif
#endif
