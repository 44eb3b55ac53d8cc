/*
 * test_ca_stale_crl.c - the stale-CRL behaviour chosen in docs/PKI.md ("When
 * a CRL goes stale"), shown on OpenSSL's verifier itself, for the owner of
 * src/lib/tls.c who implements it in the proxy:
 *
 *   - today (no callback): a CRL past nextUpdate fails EVERY chain it covers
 *     with X509_V_ERR_CRL_HAS_EXPIRED - the outage;
 *   - chosen: a verify callback that accepts X509_V_ERR_CRL_HAS_EXPIRED (and
 *     only it) lets OpenSSL go on and still check the serial against that
 *     CRL: a listed certificate is refused (X509_V_ERR_CERT_REVOKED), an
 *     unlisted one accepted - and the callback saw the staleness, to warn.
 *
 * The PKI is made with the CA's own signing code (pki.c is included, as in
 * test_ca_pki.c); the clock is "moved" by signing CRLs whose nextUpdate has
 * passed.
 */
#include "../../../src/ca/pki.c"

#include <openssl/x509_vfy.h>

#include "check.h"

static int saw_stale;

/* The chosen behaviour: a stale CRL is noted (to warn and count), not fatal. */
static int accept_stale_crl(int ok, X509_STORE_CTX *ctx)
{
    if (!ok && X509_STORE_CTX_get_error(ctx) == X509_V_ERR_CRL_HAS_EXPIRED) {
        saw_stale++;
        return 1;
    }
    return ok;
}

struct pki {
    EVP_PKEY *rk, *ik, *ka, *kb;
    X509 *root, *inter, *a, *b; /* a is revoked, b is not */
    X509_CRL *root_crl, *inter_crl;
};

static int make_pki(struct pki *p, int root_days, int inter_days)
{
    struct meshtls_err err = MESHTLS_ERR_INIT;
    struct mt_cert_spec rs = {.cn = "T Root CA", .is_ca = 1, .pathlen = 1, .days = 3650};
    struct mt_cert_spec is = {.cn = "T Intermediate CA", .is_ca = 1, .pathlen = 0, .days = 1825};
    struct mt_cert_spec ls = {.cn = "a", .days = 90, .eku_client = 1, .eku_server = 1};
    memset(p, 0, sizeof(*p));
    if (mt_key_generate(MT_KEY_EC_P256, &p->rk, &err) ||
        mt_key_generate(MT_KEY_EC_P256, &p->ik, &err) ||
        mt_key_generate(MT_KEY_EC_P256, &p->ka, &err) ||
        mt_key_generate(MT_KEY_EC_P256, &p->kb, &err) ||
        mt_cert_sign(&rs, p->rk, NULL, p->rk, &p->root, &err) ||
        mt_cert_sign(&is, p->ik, p->root, p->rk, &p->inter, &err) ||
        mt_cert_sign(&ls, p->ka, p->inter, p->ik, &p->a, &err))
        return -1;
    ls.cn = "b";
    if (mt_cert_sign(&ls, p->kb, p->inter, p->ik, &p->b, &err))
        return -1;
    char serial[80];
    serial_hex(p->a, serial, sizeof(serial));
    struct ca_cert revoked = {
        .serial = serial, .revoked_at = (int64_t)time(NULL) - 3600, .reason = "keyCompromise"};
    /* days < 0: nextUpdate that many days ago, as if the clock had moved on */
    if (sign_crl(p->root, p->rk, 2, root_days, NULL, 0, &p->root_crl, &err) ||
        sign_crl(p->inter, p->ik, 2, inter_days, &revoked, 1, &p->inter_crl, &err))
        return -1;
    return 0;
}

static void free_pki(struct pki *p)
{
    EVP_PKEY_free(p->rk);
    EVP_PKEY_free(p->ik);
    EVP_PKEY_free(p->ka);
    EVP_PKEY_free(p->kb);
    X509_free(p->root);
    X509_free(p->inter);
    X509_free(p->a);
    X509_free(p->b);
    X509_CRL_free(p->root_crl);
    X509_CRL_free(p->inter_crl);
}

/* Verify `leaf` (+ the intermediate) with CRL checks on the whole chain; the X509_V_ code. */
static int verify(struct pki *p, X509 *leaf, int chosen)
{
    X509_STORE *st = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    int code = -1;
    if (!st || !ctx || !untrusted)
        goto out;
    X509_STORE_add_cert(st, p->root);
    X509_STORE_add_crl(st, p->root_crl);
    X509_STORE_add_crl(st, p->inter_crl);
    X509_STORE_set_flags(st, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    if (chosen)
        X509_STORE_set_verify_cb(st, accept_stale_crl);
    sk_X509_push(untrusted, p->inter);
    if (X509_STORE_CTX_init(ctx, st, leaf, untrusted) != 1)
        goto out;
    code = X509_verify_cert(ctx) == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
out:
    sk_X509_free(untrusted);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(st);
    ERR_clear_error();
    return code;
}

TEST(stale_crl_table)
{
    static const struct {
        const char *what;
        int root_days, inter_days, chosen;
        int want_a, want_b; /* a: revoked in the intermediate's CRL; b: not */
        int want_stale;     /* the callback saw a stale CRL (for b's verification): 0/1 */
    } t[] = {
        /* fresh CRLs: revocation works, with or without the callback */
        {"fresh", 365, 7, 0, X509_V_ERR_CERT_REVOKED, X509_V_OK, 0},
        {"fresh, chosen", 365, 7, 1, X509_V_ERR_CERT_REVOKED, X509_V_OK, 0},
        /* today: a stale root CRL (a year after init) refuses everyone */
        {"root stale, today", -1, 7, 0, X509_V_ERR_CERT_REVOKED, X509_V_ERR_CRL_HAS_EXPIRED, 0},
        /* today: a stale intermediate CRL (ca crl not run for 7 days) refuses everyone */
        {"intermediate stale, today", 365, -1, 0, X509_V_ERR_CRL_HAS_EXPIRED,
         X509_V_ERR_CRL_HAS_EXPIRED, 0},
        /* chosen: the stale CRL is still enforced, the others let in, the staleness seen */
        {"root stale, chosen", -1, 7, 1, X509_V_ERR_CERT_REVOKED, X509_V_OK, 1},
        {"intermediate stale, chosen", 365, -1, 1, X509_V_ERR_CERT_REVOKED, X509_V_OK, 1},
        {"both stale, chosen", -1, -1, 1, X509_V_ERR_CERT_REVOKED, X509_V_OK, 1},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct pki p;
        CHECK_INT_EQ(make_pki(&p, t[i].root_days, t[i].inter_days), 0);
        int a = verify(&p, p.a, t[i].chosen);
        saw_stale = 0;
        int b = verify(&p, p.b, t[i].chosen);
        if (a != t[i].want_a || b != t[i].want_b || (saw_stale > 0) != t[i].want_stale)
            fprintf(stderr, "case '%s': a=%d (%s) b=%d (%s) stale seen %d\n", t[i].what, a,
                    X509_verify_cert_error_string(a), b, X509_verify_cert_error_string(b),
                    saw_stale);
        CHECK_INT_EQ(a, t[i].want_a);
        CHECK_INT_EQ(b, t[i].want_b);
        CHECK_INT_EQ(saw_stale > 0, t[i].want_stale);
        free_pki(&p);
    }
}

int main(void)
{
    RUN(stale_crl_table);
    return check_summary();
}
