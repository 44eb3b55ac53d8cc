/*
 * serve_ocsp.c - the control plane's OCSP responder (RFC 6960 answers, RFC 5019 GET):
 * a delegated responder certificate (EKU OCSPSigning, id-pkix-ocsp-nocheck) that the
 * intermediate issues at start, and the answer to one DER request given a status look-up.
 * Pure apart from the look-up callback, so that it runs on a job thread (serve.c) and in
 * unit tests alike.
 */
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>

#include "ca.h"
#include "meshtls/x509.h"
#include "serve_ocsp.h"
#include "x509gen.h"

void cp_ocsp_free(struct cp_ocsp *o)
{
    if (!o)
        return;
    X509_free(o->issuer);
    X509_free(o->cert);
    EVP_PKEY_free(o->key);
    memset(o, 0, sizeof(*o));
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    int ok = e && X509_add_ext(cert, e, -1) == 1;
    X509_EXTENSION_free(e);
    return ok ? 0 : -1;
}

int cp_ocsp_init(X509 *issuer, EVP_PKEY *issuer_key, int days, struct cp_ocsp *out,
                 struct meshtls_err *err)
{
    memset(out, 0, sizeof(*out));
    int rc;
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    struct mt_cert_spec spec = {.cn = "meshtls OCSP responder", .o = "meshtls", .days = days};
    if ((rc = mt_key_generate(MT_KEY_EC_P256, &key, err)) ||
        (rc = mt_cert_sign(&spec, key, issuer, issuer_key, &cert, err)))
        goto fail;
    /* Delegated responder (RFC 6960 4.2.2.2): EKU id-kp-OCSPSigning; id-pkix-ocsp-nocheck
     * so that relying parties do not ask about the responder's own status. */
    if (add_ext(cert, issuer, NID_ext_key_usage, "critical,OCSPSigning") ||
        add_ext(cert, issuer, NID_id_pkix_OCSP_noCheck, "ignored") ||
        X509_sign(cert, issuer_key, mt_sign_md(issuer_key)) <= 0) {
        rc = meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot make the OCSP responder certificate");
        goto fail;
    }
    if (X509_up_ref(issuer) != 1) {
        rc = meshtls_err_set(err, MESHTLS_ETLS, "cannot reference the issuer");
        goto fail;
    }
    out->issuer = issuer;
    out->cert = cert;
    out->key = key;
    return 0;
fail:
    X509_free(cert);
    EVP_PKEY_free(key);
    return rc;
}

/* An OCSP response with only a status (malformedRequest, internalError, ...). */
static int bare(int status, unsigned char **out, size_t *len)
{
    OCSP_RESPONSE *r = OCSP_response_create(status, NULL);
    unsigned char *der = NULL;
    int n = r ? i2d_OCSP_RESPONSE(r, &der) : -1;
    OCSP_RESPONSE_free(r);
    if (n <= 0)
        return MESHTLS_ENOMEM;
    *out = der;
    *len = (size_t)n;
    return 0;
}

int cp_ocsp_respond(const struct cp_ocsp *o, const unsigned char *der, size_t len,
                    cp_ocsp_lookup_fn lookup, void *arg, int64_t now, unsigned char **out,
                    size_t *out_len, int *cacheable)
{
    if (cacheable)
        *cacheable = 0;
    const unsigned char *p = der;
    OCSP_REQUEST *req = len && len < 65536 ? d2i_OCSP_REQUEST(NULL, &p, (long)len) : NULL;
    int n = req ? OCSP_request_onereq_count(req) : 0;
    if (!req || n < 1 || n > 32 || p != der + len) {
        OCSP_REQUEST_free(req);
        ERR_clear_error();
        return bare(OCSP_RESPONSE_STATUS_MALFORMEDREQUEST, out, out_len);
    }
    OCSP_BASICRESP *bs = OCSP_BASICRESP_new();
    ASN1_TIME *this_upd = ASN1_TIME_set(NULL, (time_t)now);
    ASN1_TIME *next_upd = ASN1_TIME_set(NULL, (time_t)(now + CP_OCSP_VALIDITY_S));
    int rc = bs && this_upd && next_upd ? 0 : MESHTLS_ENOMEM;
    int internal = 0;
    for (int i = 0; !rc && i < n; i++) {
        OCSP_CERTID *id = OCSP_onereq_get0_id(OCSP_request_onereq_get0(req, i));
        ASN1_OBJECT *md_oid = NULL;
        ASN1_INTEGER *serial = NULL;
        OCSP_id_get0_info(NULL, &md_oid, NULL, &serial, id);
        const EVP_MD *md = md_oid ? EVP_get_digestbyobj(md_oid) : NULL;
        OCSP_CERTID *ours = md ? OCSP_cert_to_id(md, NULL, o->issuer) : NULL;
        int status = V_OCSP_CERTSTATUS_UNKNOWN, reason = -1;
        int64_t revoked_at = 0;
        /* ours only if issued by our intermediate (name and key hash match) */
        if (ours && serial && OCSP_id_issuer_cmp(ours, id) == 0) {
            BIGNUM *bn = ASN1_INTEGER_to_BN(serial, NULL);
            char *hex = bn ? BN_bn2hex(bn) : NULL;
            char norm[80];
            if (hex && ca_serial_normalize(hex, norm, sizeof(norm)) == 0) {
                int st = 0;
                if (lookup(arg, norm, &st, &revoked_at, &reason) != 0)
                    internal = 1;
                else
                    status = st;
            }
            OPENSSL_free(hex);
            BN_free(bn);
        }
        OCSP_CERTID_free(ours);
        if (internal)
            break;
        ASN1_TIME *rev = NULL;
        if (status == V_OCSP_CERTSTATUS_REVOKED)
            rev = ASN1_TIME_set(NULL, (time_t)revoked_at);
        if (!OCSP_basic_add1_status(bs, id, status, reason, rev, this_upd, next_upd))
            rc = MESHTLS_ENOMEM;
        ASN1_TIME_free(rev);
    }
    if (internal) {
        rc = bare(OCSP_RESPONSE_STATUS_INTERNALERROR, out, out_len);
        goto done;
    }
    /* Nonce (RFC 8954): echoed when the request has one. */
    if (!rc && OCSP_copy_nonce(bs, req) <= 0)
        rc = MESHTLS_ETLS;
    STACK_OF(X509) *chain = sk_X509_new_null();
    if (!rc && (!chain || !sk_X509_push(chain, o->issuer) ||
                OCSP_basic_sign(bs, o->cert, o->key, EVP_sha256(), chain, 0) != 1))
        rc = MESHTLS_ETLS;
    sk_X509_free(chain);
    if (!rc) {
        OCSP_RESPONSE *resp = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, bs);
        unsigned char *d = NULL;
        int dl = resp ? i2d_OCSP_RESPONSE(resp, &d) : -1;
        OCSP_RESPONSE_free(resp);
        if (dl > 0) {
            *out = d;
            *out_len = (size_t)dl;
            if (cacheable)
                *cacheable = OCSP_REQUEST_get_ext_by_NID(req, NID_id_pkix_OCSP_Nonce, -1) < 0;
        } else {
            rc = MESHTLS_ENOMEM;
        }
    }
    if (rc) {
        ERR_clear_error();
        rc = bare(OCSP_RESPONSE_STATUS_INTERNALERROR, out, out_len);
    }
done:
    OCSP_BASICRESP_free(bs);
    ASN1_TIME_free(this_upd);
    ASN1_TIME_free(next_upd);
    OCSP_REQUEST_free(req);
    return rc;
}
