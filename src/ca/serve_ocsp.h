/*
 * serve_ocsp.h - the OCSP responder of `meshtls ca serve` (serve_ocsp.c).
 * Errors follow meshtls/err.h.
 */
#ifndef MESHTLS_CA_SERVE_OCSP_H
#define MESHTLS_CA_SERVE_OCSP_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "meshtls/err.h"

#define CP_OCSP_VALIDITY_S 3600 /* nextUpdate = thisUpdate + this */

/** The responder: the issuer it answers for, and its delegated certificate and key. */
struct cp_ocsp {
    X509 *issuer; /* our intermediate (a reference) */
    X509 *cert;   /* the responder certificate, issued by `issuer` (owned) */
    EVP_PKEY *key;
};

/**
 * Make the delegated responder: a new P-256 key and a certificate `issuer` signs with
 * `issuer_key` (both borrowed; a reference to `issuer` is kept), valid `days`, with EKU
 * OCSPSigning and id-pkix-ocsp-nocheck.  Free with cp_ocsp_free().
 */
int cp_ocsp_init(X509 *issuer, EVP_PKEY *issuer_key, int days, struct cp_ocsp *out,
                 struct meshtls_err *err);
/** Free what cp_ocsp_init() made (a zeroed struct is fine). */
void cp_ocsp_free(struct cp_ocsp *o);

/**
 * The status of `serial` (store form: lower-case hex, no leading zeros): *status is
 * V_OCSP_CERTSTATUS_GOOD, _REVOKED (with *revoked_at and *reason, a CRLReason code or -1)
 * or _UNKNOWN.  @return 0, or non-zero when the store could not be read.
 */
typedef int (*cp_ocsp_lookup_fn)(void *arg, const char *serial, int *status, int64_t *revoked_at,
                                 int *reason);

/**
 * Answer the DER OCSP request `der` (`len` bytes, borrowed) at time `now`: each
 * certificate ID our intermediate issued is looked up; others are `unknown`.  The nonce is
 * echoed; the response is signed by the delegated responder and carries its certificate
 * and the intermediate.  A malformed request gets a malformedRequest response, a failed
 * look-up internalError (both still 0).
 * @param out a new DER response (OPENSSL_free) of *out_len bytes.
 * @param cacheable if not NULL, 1 when the response is a successful one to a request
 *        without a nonce (the same request bytes may get the same answer), else 0.
 * @return 0, or MESHTLS_ENOMEM.
 */
int cp_ocsp_respond(const struct cp_ocsp *o, const unsigned char *der, size_t len,
                    cp_ocsp_lookup_fn lookup, void *arg, int64_t now, unsigned char **out,
                    size_t *out_len, int *cacheable);

#endif
