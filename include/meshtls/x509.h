/*
 * meshtls/x509.h - reading PEM files: certificate chains, private keys,
 * CA bundles and CRLs; checking expiry and verifying chains.
 *
 * Ownership uses OpenSSL's vocabulary: every `**out` hands the caller a new
 * reference that the caller frees (sk_X509_pop_free(.., X509_free),
 * EVP_PKEY_free, ...).  Out-parameters are written only on success.
 */
#ifndef MESHTLS_X509_H
#define MESHTLS_X509_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "meshtls/err.h"
#include "meshtls/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Upper bound on any PEM/DER file meshtls reads (bounded input), CRL files excepted. */
#define MESHTLS_PEM_FILE_MAX (4u * 1024u * 1024u)
/**
 * Upper bound on a CRL file: a CRL grows by about 65 bytes (PEM) per revoked certificate, so
 * 4 MiB would stop at some 63,000 revocations -- a CA of that size is ordinary.  64 MiB holds
 * about a million; still a bound, and the file is the operator's, not a peer's.
 */
#define MESHTLS_CRL_FILE_MAX (64u * 1024u * 1024u)

/**
 * Read every certificate in the PEM file `path`, in file order (a chain file
 * starts with the leaf).  Fails with MESHTLS_EPARSE on malformed PEM or a
 * file holding no certificate, MESHTLS_ENOENT if it is missing.
 */
MESHTLS_API int meshtls_pem_read_certs(const char *path, STACK_OF(X509) * *out,
                                       struct meshtls_err *err);

/** Same as meshtls_pem_read_certs() on an in-memory buffer; `what` names it in errors. */
MESHTLS_API int meshtls_pem_parse_certs(const char *buf, size_t len, const char *what,
                                        STACK_OF(X509) * *out, struct meshtls_err *err);

/**
 * Check that the key file `path` is not readable or writable by group or
 * others (and is a regular file).
 * @return 0, MESHTLS_EPERM naming the file and the `chmod 600` fix, or MESHTLS_ENOENT.
 */
MESHTLS_API int meshtls_key_file_check(const char *path, struct meshtls_err *err);

/**
 * Read a private key (PKCS#8, traditional EC/RSA) from `path` after
 * meshtls_key_file_check().  Encrypted keys are refused (EPARSE).
 */
MESHTLS_API int meshtls_pem_read_key(const char *path, EVP_PKEY **out, struct meshtls_err *err);

/** Read every CRL in the PEM file `path` (at least one). */
MESHTLS_API int meshtls_pem_read_crls(const char *path, STACK_OF(X509_CRL) * *out,
                                      struct meshtls_err *err);

/**
 * Check `key` matches the public key of `cert`; `cert_path` names the
 * certificate in the error message.
 * @return 0 or MESHTLS_EKEYMISMATCH.
 */
MESHTLS_API int meshtls_key_matches_cert(EVP_PKEY *key, X509 *cert, const char *cert_path,
                                         struct meshtls_err *err);

/**
 * Expiry check (003's validate_cert_expiration): `cert` borrowed, `now` in
 * Unix seconds (0 means the current time), `warn_days` the warning window.
 * @param days_left optional; set to whole days left (negative if expired).
 * @return 0 if valid for more than `warn_days`, MESHTLS_EEXPIRING if valid
 *         but expiring within the window, MESHTLS_EEXPIRED if expired or not
 *         yet valid.  `err` says which, naming `what`.
 */
MESHTLS_API int meshtls_cert_check_expiry(X509 *cert, const char *what, int warn_days, int64_t now,
                                          int *days_left, struct meshtls_err *err);

/**
 * 003's validate_cert_expiration(): read the first certificate of the PEM
 * file `path` and check it as meshtls_cert_check_expiry() does with the
 * current time; when it expires within `warn_days`, log a warning and
 * return 0.
 * @return 0 (valid, possibly with a warning), MESHTLS_EEXPIRED, or a read error.
 */
MESHTLS_API int meshtls_validate_cert_expiration(const char *path, int warn_days,
                                                 struct meshtls_err *err);

/**
 * Verify `chain` (leaf first, then intermediates; borrowed) against the CA
 * certificates in `anchors` (borrowed; several CAs allowed, for CA rotation),
 * with the CRLs in `crls` (borrowed, may be NULL: no revocation check; if
 * given, every certificate of the chain is checked).  `purpose` is
 * X509_PURPOSE_SSL_CLIENT, X509_PURPOSE_SSL_SERVER or 0 for none.
 * @return 0, MESHTLS_EEXPIRED, MESHTLS_EREVOKED or MESHTLS_EUNTRUSTED with
 *         `err` naming the failing certificate and depth.
 */
MESHTLS_API int meshtls_verify_chain(STACK_OF(X509) * chain, STACK_OF(X509) * anchors,
                                     STACK_OF(X509_CRL) * crls, int purpose,
                                     struct meshtls_err *err);

/**
 * What a certificate or CRL breaks of RFC 5280's profile, as found by
 * meshtls_x509_profile_check() or meshtls_x509_profile_check_crl().  Caller-owned
 * (usually on the stack); written only when a rule is broken.
 */
struct meshtls_x509_violation {
    const char *rule;              /**< static rule id, e.g. "rfc5280-serial-positive" */
    const char *section;           /**< static RFC 5280 section, e.g. "4.1.2.2" */
    int depth;                     /**< chain position of the certificate (0: leaf); -1: a CRL */
    char msg[MESHTLS_ERR_MSG_MAX]; /**< names the certificate or CRL (subject or issuer,
                                        serial), says what is wrong and what to do */
};

/**
 * Check a chain that OpenSSL has verified against the MUST-level rules of RFC 5280's
 * certificate profile that OpenSSL does not enforce (the rule table is in
 * src/lib/x509_profile.c and docs/PKI.md).  Pure: no I/O, no allocation but OpenSSL's
 * own extension decoding.
 * @param chain   leaf first, then each issuer (X509_STORE_CTX_get0_chain()); borrowed
 * @param anchors how many certificates at the end of `chain` are trust anchors: they
 *                are the operator's choice (RFC 5280 6.1.1 takes them as input) and are
 *                not checked, only used as issuers
 * @param v       out: the first rule broken (leaf first); may be NULL
 * @return 0, or MESHTLS_EUNTRUSTED with `v` filled.
 */
MESHTLS_API int meshtls_x509_profile_check(STACK_OF(X509) * chain, int anchors,
                                           struct meshtls_x509_violation *v);

/**
 * Check `crl` (borrowed) against the CRL profile of RFC 5280 (version, issuer,
 * nextUpdate, authorityKeyIdentifier, cRLNumber, time encodings, repeated extensions).
 * @param what names the CRL in the message (e.g. "CRL 2 of /etc/mesh/crl.pem")
 * @return 0, or MESHTLS_EUNTRUSTED with `v` (may be NULL) filled and v->depth == -1.
 */
MESHTLS_API int meshtls_x509_profile_check_crl(X509_CRL *crl, const char *what,
                                               struct meshtls_x509_violation *v);

/**
 * Write `len` bytes to `path` atomically: a temporary file in the same
 * directory, created with `mode`, fsync'd, then renamed over `path`.  On any
 * failure nothing is left behind and `path` is unchanged.
 * @param exclusive if non-zero, fail with MESHTLS_EEXIST when `path` exists.
 */
MESHTLS_API int meshtls_write_file_atomic(const char *path, const void *data, size_t len,
                                          mode_t mode, int exclusive, struct meshtls_err *err);

/**
 * Read a whole file of at most `max` bytes into a new NUL-terminated buffer.
 * @param out caller frees with free().
 */
MESHTLS_API int meshtls_read_file(const char *path, size_t max, char **out, size_t *len,
                                  struct meshtls_err *err);

#ifdef __cplusplus
}
#endif
#endif
