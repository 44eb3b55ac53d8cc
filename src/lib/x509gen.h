/*
 * x509gen.h - internal: key generation and certificate signing, shared by
 * the CA (src/ca) and development mode (src/lib/tls.c).  Not public API.
 * Errors follow meshtls/err.h.  Every `**out` is a new object the caller frees.
 */
#ifndef MESHTLS_X509GEN_H
#define MESHTLS_X509GEN_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "meshtls/err.h"

enum mt_key_type {
    MT_KEY_EC_P256 = 1,
    MT_KEY_EC_P384,
    MT_KEY_RSA2048,
    MT_KEY_ED25519,
};

/** Parse "ec-p256|ec-p384|rsa-2048|ed25519". */
int mt_key_type_parse(const char *s, enum mt_key_type *out, struct meshtls_err *err);
/** Name of `t` as accepted by mt_key_type_parse(). */
const char *mt_key_type_name(enum mt_key_type t);
/** Generate a new key. */
int mt_key_generate(enum mt_key_type t, EVP_PKEY **out, struct meshtls_err *err);
/** The key type of an existing key (for leaves: same type as the issuing CA). */
int mt_key_type_of(EVP_PKEY *key, enum mt_key_type *out);

/** What to put in a certificate.  All pointers borrowed. */
struct mt_cert_spec {
    const char *cn;         /**< subject CN (required) */
    const char *o;          /**< subject O, optional */
    const char *ou;         /**< subject OU, optional */
    int is_ca;              /**< CA:TRUE, keyCertSign+cRLSign */
    int pathlen;            /**< for CAs: -1 = unlimited, else pathlen */
    int64_t not_before;     /**< Unix seconds (0 = now - 5 minutes) */
    int64_t days;           /**< validity from not_before */
    const char *const *dns; /**< DNS SANs */
    size_t n_dns;
    const char *const *ips; /**< IP SANs (v4 or v6 text) */
    size_t n_ips;
    const char *uri;     /**< one URI SAN (SPIFFE ID), optional */
    int eku_server;      /**< leaf: EKU serverAuth */
    int eku_client;      /**< leaf: EKU clientAuth */
    const char *crl_url; /**< optional CRL distribution point */
};

/**
 * Build and sign a certificate for `subject_key` (public part used).  If
 * `issuer` is NULL it is self-signed with `issuer_key` (== subject_key).
 * The serial is a random positive 128-bit number.  SKID/AKID are set.
 */
int mt_cert_sign(const struct mt_cert_spec *spec, EVP_PKEY *subject_key, X509 *issuer,
                 EVP_PKEY *issuer_key, X509 **out, struct meshtls_err *err);

/** PEM-encode a certificate / key into a new malloc'd NUL-terminated buffer. */
int mt_cert_to_pem(X509 *cert, char **out, size_t *len, struct meshtls_err *err);
int mt_key_to_pem(EVP_PKEY *key, char **out, size_t *len, struct meshtls_err *err);

/** The digest to sign with for `key` (NULL for Ed25519). */
const EVP_MD *mt_sign_md(EVP_PKEY *key);

#endif
