/*
 * x509gen.c - key generation and certificate signing (see x509gen.h), for
 * the CA and for development mode.  Uses OpenSSL's X509V3 config helpers
 * for extensions so their encoding is OpenSSL's own.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "x509gen.h"

static const struct {
    const char *name;
    enum mt_key_type type;
} key_types[] = {
    {"ec-p256", MT_KEY_EC_P256},
    {"ec-p384", MT_KEY_EC_P384},
    {"rsa-2048", MT_KEY_RSA2048},
    {"ed25519", MT_KEY_ED25519},
};

int mt_key_type_parse(const char *s, enum mt_key_type *out, struct meshtls_err *err)
{
    for (size_t i = 0; i < sizeof(key_types) / sizeof(key_types[0]); i++)
        if (s && !strcmp(s, key_types[i].name)) {
            *out = key_types[i].type;
            return 0;
        }
    return meshtls_err_set(err, MESHTLS_EINVAL,
                           "--key-type '%s': expected ec-p256, ec-p384, rsa-2048 or ed25519",
                           s ? s : "");
}

const char *mt_key_type_name(enum mt_key_type t)
{
    for (size_t i = 0; i < sizeof(key_types) / sizeof(key_types[0]); i++)
        if (key_types[i].type == t)
            return key_types[i].name;
    return "unknown";
}

int mt_key_generate(enum mt_key_type t, EVP_PKEY **out, struct meshtls_err *err)
{
    EVP_PKEY *k = NULL;
    ERR_clear_error();
    switch (t) {
    case MT_KEY_EC_P256: k = EVP_EC_gen("P-256"); break;
    case MT_KEY_EC_P384: k = EVP_EC_gen("P-384"); break;
    case MT_KEY_RSA2048:
        /* not EVP_RSA_gen(): OpenSSL 3.0's rsa.h declares it under the deprecation guard */
        k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
        break;
    case MT_KEY_ED25519: k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519"); break;
    }
    if (!k)
        return meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot generate a %s key",
                                   mt_key_type_name(t));
    *out = k;
    return 0;
}

int mt_key_type_of(EVP_PKEY *key, enum mt_key_type *out)
{
    switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_ED25519: *out = MT_KEY_ED25519; return 0;
    case EVP_PKEY_RSA: *out = MT_KEY_RSA2048; return 0;
    case EVP_PKEY_EC:
        *out = EVP_PKEY_get_bits(key) > 256 ? MT_KEY_EC_P384 : MT_KEY_EC_P256;
        return 0;
    default: return MESHTLS_EINVAL;
    }
}

const EVP_MD *mt_sign_md(EVP_PKEY *key)
{
    if (EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519)
        return NULL;
    return EVP_PKEY_get_bits(key) > 256 && EVP_PKEY_get_base_id(key) == EVP_PKEY_EC ? EVP_sha384()
                                                                                    : EVP_sha256();
}

/* Add extension `nid` = `value` (OpenSSL config syntax) to `cert`. */
static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer ? issuer : cert, cert, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (!e)
        return -1;
    int ok = X509_add_ext(cert, e, -1);
    X509_EXTENSION_free(e);
    return ok ? 0 : -1;
}

/* Append "<prefix><v>" to the SAN list in `buf`; @return -1 if it does not fit. */
static int san_add(char *buf, size_t cap, size_t *n, const char *prefix, const char *v)
{
    if (strpbrk(v, ",\n\r") != NULL)
        return -1; /* would break the config syntax */
    int w = snprintf(buf + *n, cap - *n, "%s%s%s", *n ? "," : "", prefix, v);
    if (w < 0 || (size_t)w >= cap - *n)
        return -1;
    *n += (size_t)w;
    return 0;
}

int mt_cert_sign(const struct mt_cert_spec *spec, EVP_PKEY *subject_key, X509 *issuer,
                 EVP_PKEY *issuer_key, X509 **out, struct meshtls_err *err)
{
    int rc;
    X509 *cert = NULL;
    BIGNUM *bn = NULL;
    char *san = NULL;
    unsigned char rnd[16];

    if (!spec->cn || !*spec->cn || spec->days < 1)
        return meshtls_err_set(err, MESHTLS_EINVAL, "certificate needs a CN and a validity");
    ERR_clear_error();
    cert = X509_new();
    if (!cert || !X509_set_version(cert, 2)) {
        rc = meshtls_err_set_ssl(err, MESHTLS_ENOMEM, "cannot create a certificate");
        goto out;
    }
    /* Random positive 128-bit serial (RFC 5280: at most 20 octets, positive). */
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        rc = meshtls_err_set_ssl(err, MESHTLS_ETLS, "no randomness for the serial number");
        goto out;
    }
    rnd[0] &= 0x7f;
    rnd[0] |= 0x01 << 6; /* keep 16 octets */
    bn = BN_bin2bn(rnd, sizeof(rnd), NULL);
    if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert))) {
        rc = meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot set the serial number");
        goto out;
    }
    time_t nb = spec->not_before ? (time_t)spec->not_before : time(NULL) - 300;
    if (!ASN1_TIME_set(X509_getm_notBefore(cert), nb) ||
        !ASN1_TIME_set(X509_getm_notAfter(cert), nb + (time_t)spec->days * 86400)) {
        rc = meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot set the validity");
        goto out;
    }
    X509_NAME *name = X509_get_subject_name(cert);
    if ((spec->o && !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                                (const unsigned char *)spec->o, -1, -1, 0)) ||
        (spec->ou && !X509_NAME_add_entry_by_txt(name, "OU", MBSTRING_UTF8,
                                                 (const unsigned char *)spec->ou, -1, -1, 0)) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)spec->cn, -1,
                                    -1, 0) ||
        !X509_set_issuer_name(cert, issuer ? X509_get_subject_name(issuer) : name) ||
        !X509_set_pubkey(cert, subject_key)) {
        rc = meshtls_err_set_ssl(err, MESHTLS_EINVAL, "cannot set the subject '%s'", spec->cn);
        goto out;
    }

    int bad = 0;
    if (spec->is_ca) {
        char bc[64];
        if (spec->pathlen >= 0)
            snprintf(bc, sizeof(bc), "critical,CA:TRUE,pathlen:%d", spec->pathlen);
        else
            snprintf(bc, sizeof(bc), "critical,CA:TRUE");
        bad |= add_ext(cert, issuer, NID_basic_constraints, bc);
        bad |= add_ext(cert, issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        bad |= add_ext(cert, issuer, NID_basic_constraints, "critical,CA:FALSE");
        bad |= add_ext(cert, issuer, NID_key_usage,
                       EVP_PKEY_get_base_id(subject_key) == EVP_PKEY_RSA
                           ? "critical,digitalSignature,keyEncipherment"
                           : "critical,digitalSignature");
        if (spec->eku_server || spec->eku_client)
            bad |= add_ext(cert, issuer, NID_ext_key_usage,
                           spec->eku_server && spec->eku_client ? "serverAuth,clientAuth"
                           : spec->eku_server                   ? "serverAuth"
                                                                : "clientAuth");
    }
    bad |= add_ext(cert, issuer, NID_subject_key_identifier, "hash");
    if (issuer)
        bad |= add_ext(cert, issuer, NID_authority_key_identifier, "keyid:always");
    size_t cap = 64 + (spec->uri ? strlen(spec->uri) : 0), n = 0;
    for (size_t i = 0; i < spec->n_dns; i++)
        cap += strlen(spec->dns[i]) + 8;
    for (size_t i = 0; i < spec->n_ips; i++)
        cap += strlen(spec->ips[i]) + 8;
    if (!(san = malloc(cap))) {
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
        goto out;
    }
    san[0] = '\0';
    for (size_t i = 0; i < spec->n_dns && !bad; i++)
        bad |= san_add(san, cap, &n, "DNS:", spec->dns[i]);
    for (size_t i = 0; i < spec->n_ips && !bad; i++)
        bad |= san_add(san, cap, &n, "IP:", spec->ips[i]);
    if (spec->uri && !bad)
        bad |= san_add(san, cap, &n, "URI:", spec->uri);
    if (n && !bad)
        bad |= add_ext(cert, issuer, NID_subject_alt_name, san);
    if (spec->crl_url && !bad) {
        char dp[600];
        snprintf(dp, sizeof(dp), "URI:%.500s", spec->crl_url);
        bad |= add_ext(cert, issuer, NID_crl_distribution_points, dp);
    }
    if (bad) {
        rc = meshtls_err_set_ssl(err, MESHTLS_EINVAL,
                                 "cannot encode the extensions of '%s' (check the DNS names, IP "
                                 "addresses and URI)",
                                 spec->cn);
        goto out;
    }
    if (X509_sign(cert, issuer_key, mt_sign_md(issuer_key)) <= 0) {
        rc = meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot sign the certificate for '%s'",
                                 spec->cn);
        goto out;
    }
    *out = cert;
    cert = NULL;
    rc = 0;
out:
    free(san);
    BN_free(bn);
    X509_free(cert);
    return rc;
}

/* PEM-encode through a memory BIO into a new NUL-terminated buffer. */
static int bio_to_buf(BIO *b, char **out, size_t *len, struct meshtls_err *err)
{
    char *data = NULL;
    long n = BIO_get_mem_data(b, &data);
    if (n <= 0)
        return meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot encode PEM");
    char *buf = malloc((size_t)n + 1);
    if (!buf)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    memcpy(buf, data, (size_t)n);
    buf[n] = '\0';
    *out = buf;
    if (len)
        *len = (size_t)n;
    return 0;
}

int mt_cert_to_pem(X509 *cert, char **out, size_t *len, struct meshtls_err *err)
{
    BIO *b = BIO_new(BIO_s_mem());
    int rc = b && PEM_write_bio_X509(b, cert) ? bio_to_buf(b, out, len, err)
                                              : meshtls_err_set_ssl(err, MESHTLS_ETLS, "PEM");
    BIO_free(b);
    return rc;
}

int mt_key_to_pem(EVP_PKEY *key, char **out, size_t *len, struct meshtls_err *err)
{
    BIO *b = BIO_new(BIO_s_secmem());
    if (!b)
        b = BIO_new(BIO_s_mem());
    int rc = b && PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL)
                 ? bio_to_buf(b, out, len, err)
                 : meshtls_err_set_ssl(err, MESHTLS_ETLS, "PEM");
    BIO_free(b);
    return rc;
}
