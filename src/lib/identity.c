/*
 * identity.c - extract who a certificate says it is: subject fields, serial,
 * validity, SANs and the SPIFFE ID.
 *
 * A certificate has a SPIFFE ID only if it has exactly one URI SAN and that
 * URI is a valid SPIFFE ID (X.509-SVID specification, section 2).
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "meshtls/identity.h"
#include "meshtls/x509.h"

/* Bound on the SANs we keep: a certificate with more is refused (EPARSE). */
#define MAX_SANS 1024

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* Append a copy of `s` (`n` bytes) to the array *v of *n entries. */
static int push(char ***v, size_t *n, const char *s, size_t len)
{
    if (*n >= MAX_SANS)
        return MESHTLS_EPARSE;
    char **nv = realloc(*v, (*n + 1) * sizeof(**v));
    if (!nv)
        return MESHTLS_ENOMEM;
    *v = nv;
    if (!(nv[*n] = dup_n(s, len)))
        return MESHTLS_ENOMEM;
    (*n)++;
    return 0;
}

static char *name_to_str(X509_NAME *n)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *out = NULL, *data;
    if (!b)
        return NULL;
    if (n && X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
        long len = BIO_get_mem_data(b, &data);
        out = dup_n(len > 0 ? data : "", len > 0 ? (size_t)len : 0);
    }
    BIO_free(b);
    return out;
}

/* First entry `nid` of `n` as UTF-8, or "". */
static char *name_entry(X509_NAME *n, int nid)
{
    int idx = n ? X509_NAME_get_index_by_NID(n, nid, -1) : -1;
    if (idx < 0)
        return dup_n("", 0);
    ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(n, idx));
    unsigned char *utf8 = NULL;
    int len = ASN1_STRING_to_UTF8(&utf8, s);
    if (len < 0)
        return dup_n("", 0);
    char *out = dup_n((const char *)utf8, (size_t)len);
    OPENSSL_free(utf8);
    return out;
}

static int64_t asn1_to_unix(const ASN1_TIME *t)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

static char *key_type(X509 *cert)
{
    EVP_PKEY *k = X509_get0_pubkey(cert);
    char buf[64] = "unknown";
    if (k) {
        switch (EVP_PKEY_get_base_id(k)) {
        case EVP_PKEY_EC: {
            char grp[32] = "";
            size_t gl = 0;
            EVP_PKEY_get_utf8_string_param(k, "group", grp, sizeof(grp), &gl);
            snprintf(buf, sizeof(buf), "EC %s",
                     !strcmp(grp, "prime256v1")  ? "P-256"
                     : !strcmp(grp, "secp384r1") ? "P-384"
                                                 : grp);
            break;
        }
        case EVP_PKEY_RSA: snprintf(buf, sizeof(buf), "RSA %d", EVP_PKEY_get_bits(k)); break;
        case EVP_PKEY_ED25519: snprintf(buf, sizeof(buf), "ED25519"); break;
        default: break;
        }
    }
    return dup_n(buf, strlen(buf));
}

static int add_sans(struct meshtls_identity *id, X509 *cert)
{
    int rc = 0, crit = 0;
    GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
    if (!gens)
        return crit == -1 ? 0 : MESHTLS_EPARSE; /* -1: absent; otherwise malformed */
    for (int i = 0; i < sk_GENERAL_NAME_num(gens) && rc == 0; i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_DNS || g->type == GEN_URI || g->type == GEN_EMAIL) {
            ASN1_IA5STRING *s = g->type == GEN_DNS   ? g->d.dNSName
                                : g->type == GEN_URI ? g->d.uniformResourceIdentifier
                                                     : g->d.rfc822Name;
            const char *data = (const char *)ASN1_STRING_get0_data(s);
            size_t len = (size_t)ASN1_STRING_length(s);
            if (memchr(data, '\0', len)) {
                rc = MESHTLS_EPARSE; /* embedded NUL: never a valid name */
                break;
            }
            rc = g->type == GEN_DNS   ? push(&id->dns, &id->n_dns, data, len)
                 : g->type == GEN_URI ? push(&id->uris, &id->n_uris, data, len)
                                      : push(&id->emails, &id->n_emails, data, len);
        } else if (g->type == GEN_IPADD) {
            char buf[INET6_ADDRSTRLEN];
            const unsigned char *a = ASN1_STRING_get0_data(g->d.iPAddress);
            int len = ASN1_STRING_length(g->d.iPAddress);
            const char *txt = NULL;
            if (len == 4)
                txt = inet_ntop(AF_INET, a, buf, sizeof(buf));
            else if (len == 16)
                txt = inet_ntop(AF_INET6, a, buf, sizeof(buf));
            if (!txt) {
                rc = MESHTLS_EPARSE;
                break;
            }
            rc = push(&id->ips, &id->n_ips, txt, strlen(txt));
        }
    }
    GENERAL_NAMES_free(gens);
    return rc;
}

int meshtls_identity_from_x509(X509 *cert, struct meshtls_identity **out, struct meshtls_err *err)
{
    int rc;
    struct meshtls_identity *id = calloc(1, sizeof(*id));
    if (!id)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");

    X509_NAME *subj = X509_get_subject_name(cert);
    id->subject = name_to_str(subj);
    id->issuer = name_to_str(X509_get_issuer_name(cert));
    id->cn = name_entry(subj, NID_commonName);
    id->o = name_entry(subj, NID_organizationName);
    id->ou = name_entry(subj, NID_organizationalUnitName);
    id->key_type = key_type(cert);
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    BN_free(bn);
    if (hex) {
        for (char *c = hex; *c; c++)
            *c = (char)((*c >= 'A' && *c <= 'F') ? *c - 'A' + 'a' : *c);
        id->serial = dup_n(hex, strlen(hex));
        OPENSSL_free(hex);
    }
    if (!id->subject || !id->issuer || !id->cn || !id->o || !id->ou || !id->serial ||
        !id->key_type) {
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
        goto out;
    }
    id->not_before = asn1_to_unix(X509_get0_notBefore(cert));
    id->not_after = asn1_to_unix(X509_get0_notAfter(cert));
    id->is_ca = X509_check_ca(cert) > 0 && (X509_get_extension_flags(cert) & EXFLAG_CA);

    if ((rc = add_sans(id, cert)) != 0) {
        meshtls_err_set(err, rc,
                        rc == MESHTLS_ENOMEM
                            ? "out of memory"
                            : "certificate %s has a malformed subjectAltName extension",
                        id->subject);
        goto out;
    }
    if (id->n_uris == 1) {
        struct meshtls_spiffe_id sid;
        if (meshtls_spiffe_parse(id->uris[0], strlen(id->uris[0]), &sid, NULL) == 0) {
            id->spiffe = sid;
            if (!(id->spiffe_id = dup_n(id->uris[0], strlen(id->uris[0])))) {
                rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
                goto out;
            }
        }
    }
    *out = id;
    id = NULL;
    rc = 0;
out:
    meshtls_identity_free(id);
    return rc;
}

int meshtls_identity_from_pem(const char *buf, size_t len, struct meshtls_identity **out,
                              struct meshtls_err *err)
{
    STACK_OF(X509) *certs = NULL;
    int rc = meshtls_pem_parse_certs(buf, len, "PEM input", &certs, err);
    if (rc == 0)
        rc = meshtls_identity_from_x509(sk_X509_value(certs, 0), out, err);
    sk_X509_pop_free(certs, X509_free);
    return rc;
}

int meshtls_identity_from_der(const unsigned char *der, size_t len, struct meshtls_identity **out,
                              struct meshtls_err *err)
{
    if (len > MESHTLS_PEM_FILE_MAX)
        return meshtls_err_set(err, MESHTLS_EPARSE, "DER certificate too large");
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    if (!x)
        return meshtls_err_set_ssl(err, MESHTLS_EPARSE, "malformed DER certificate");
    int rc = meshtls_identity_from_x509(x, out, err);
    X509_free(x);
    return rc;
}

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void meshtls_identity_free(struct meshtls_identity *id)
{
    if (!id)
        return;
    free(id->subject);
    free(id->issuer);
    free(id->cn);
    free(id->o);
    free(id->ou);
    free(id->serial);
    free(id->key_type);
    free(id->spiffe_id);
    free_list(id->dns, id->n_dns);
    free_list(id->ips, id->n_ips);
    free_list(id->uris, id->n_uris);
    free_list(id->emails, id->n_emails);
    free(id);
}

int64_t meshtls_identity_days_left(const struct meshtls_identity *id, int64_t now)
{
    if (!now)
        now = (int64_t)time(NULL);
    int64_t d = id->not_after - now;
    return d >= 0 ? d / 86400 : -((-d + 86399) / 86400);
}
