/*
 * test_x509_profile.c - RFC 5280's profile as a table: a good chain made by mt_cert_sign
 * (root, intermediate, leaf, as `meshtls ca` makes them) passes; each row changes one
 * thing in one certificate (or CRL) and names the rule it must break, or NULL when the
 * change is allowed.  The check is pure, so certificates need not be re-signed: each
 * changed certificate is re-read from its DER, so OpenSSL's extension cache sees it new.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/x509v3.h>

#include "check.h"
#include "meshtls/x509.h"
#include "x509gen.h"

static EVP_PKEY *root_key, *int_key, *leaf_key;
static X509 *root, *inter, *leaf;

/* ---- changes, each to one certificate ------------------------------------------------ */

static void del_ext(X509 *x, int nid)
{
    int i;
    while ((i = X509_get_ext_by_NID(x, nid, -1)) >= 0)
        X509_EXTENSION_free(X509_delete_ext(x, i));
}

/* Replace extension `nid` of `x` by the one `conf` describes (openssl.cnf syntax). */
static void set_ext(X509 *x, int nid, const char *conf)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, nid, conf);
    CHECK(e != NULL);
    del_ext(x, nid);
    if (e)
        X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
}

/* Replace extension `nid` by raw DER `der` (what the config syntax cannot say). */
static void set_raw(X509 *x, int nid, int crit, const char *der, int len)
{
    ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
    ASN1_OCTET_STRING_set(os, (const unsigned char *)der, len);
    X509_EXTENSION *e = X509_EXTENSION_create_by_NID(NULL, nid, crit, os);
    del_ext(x, nid);
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    ASN1_OCTET_STRING_free(os);
}

static void set_serial_hex(X509 *x, const char *hex)
{
    BIGNUM *bn = NULL;
    BN_hex2bn(&bn, hex);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
}

static void none(X509 *x)
{
    (void)x;
}
static void serial_negative(X509 *x)
{
    set_serial_hex(x, "-05");
}
static void serial_zero(X509 *x)
{
    set_serial_hex(x, "00");
}
static void serial_21_octets(X509 *x)
{
    set_serial_hex(x, "0102030405060708090a0b0c0d0e0f101112131415");
}
static void serial_20_top_bit(X509 *x) /* 20 bytes, but DER needs a 21st (sign) */
{
    set_serial_hex(x, "8102030405060708090a0b0c0d0e0f1011121314");
}
static void serial_20_octets(X509 *x)
{
    set_serial_hex(x, "7f02030405060708090a0b0c0d0e0f1011121314");
}
static void version_1(X509 *x)
{
    X509_set_version(x, X509_VERSION_1);
}
static void sig_alg_differs(X509 *x)
{
    /* the pure check compares the two; the signature itself is not looked at */
    X509_ALGOR *a = (X509_ALGOR *)X509_get0_tbs_sigalg(x);
    X509_ALGOR_set0(a, OBJ_nid2obj(NID_ecdsa_with_SHA384), V_ASN1_UNDEF, NULL);
}
static void issuer_empty(X509 *x)
{
    X509_NAME *n = X509_NAME_new();
    X509_set_issuer_name(x, n);
    X509_NAME_free(n);
}
static void subject_empty(X509 *x)
{
    X509_NAME *n = X509_NAME_new();
    X509_set_subject_name(x, n);
    X509_NAME_free(n);
}
static void generalized_2030(X509 *x)
{
    ASN1_TIME *t = ASN1_GENERALIZEDTIME_new();
    ASN1_GENERALIZEDTIME_set_string(t, "20300101000000Z");
    X509_set1_notAfter(x, t);
    ASN1_TIME_free(t);
}
static void generalized_2051(X509 *x)
{
    ASN1_TIME *t = ASN1_GENERALIZEDTIME_new();
    ASN1_GENERALIZEDTIME_set_string(t, "20510101000000Z");
    X509_set1_notAfter(x, t);
    ASN1_TIME_free(t);
}
static void ski_twice(X509 *x)
{
    X509_add_ext(x, X509_get_ext(x, X509_get_ext_by_NID(x, NID_subject_key_identifier, -1)), -1);
}
static void many_extensions(X509 *x) /* all different, more than the check compares */
{
    ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
    ASN1_OCTET_STRING_set(os, (const unsigned char *)"\x05\x00", 2);
    for (int i = 0; i < 300; i++) {
        char oid[64];
        snprintf(oid, sizeof(oid), "1.3.6.1.4.1.55555.%d", i);
        ASN1_OBJECT *o = OBJ_txt2obj(oid, 1);
        X509_EXTENSION *e = X509_EXTENSION_create_by_OBJ(NULL, o, 0, os);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
        ASN1_OBJECT_free(o);
    }
    ASN1_OCTET_STRING_free(os);
}
static void bc_not_critical(X509 *x)
{
    set_ext(x, NID_basic_constraints, "CA:TRUE");
}
static void bc_absent(X509 *x)
{
    del_ext(x, NID_basic_constraints);
}
static void ski_absent(X509 *x)
{
    del_ext(x, NID_subject_key_identifier);
}
static void ku_absent(X509 *x)
{
    del_ext(x, NID_key_usage);
}
static void aki_absent(X509 *x)
{
    del_ext(x, NID_authority_key_identifier);
}
static void ku_empty(X509 *x)
{
    set_raw(x, NID_key_usage, 1, "\x03\x01\x00", 3);
}
static void ku_cert_sign(X509 *x)
{
    set_ext(x, NID_key_usage, "critical,digitalSignature,keyCertSign");
}
static void ku_crl_sign(X509 *x) /* a CRL issuer need not be a CA: allowed */
{
    set_ext(x, NID_key_usage, "critical,digitalSignature,cRLSign");
}
static void leaf_pathlen(X509 *x)
{
    set_raw(x, NID_basic_constraints, 1, "\x30\x03\x02\x01\x00", 5);
}
static void ca_pathlen_no_cert_sign(X509 *x)
{
    set_ext(x, NID_key_usage, "critical,digitalSignature");
}
static void nc_permitted(X509 *x)
{
    set_ext(x, NID_name_constraints, "critical,permitted;DNS:example.com");
}
static void nc_not_critical(X509 *x)
{
    set_ext(x, NID_name_constraints, "permitted;DNS:example.com");
}
static void nc_empty(X509 *x)
{
    set_raw(x, NID_name_constraints, 1, "\x30\x00", 2);
}
static void san_no_names(X509 *x)
{
    set_raw(x, NID_subject_alt_name, 0, "\x30\x00", 2);
}
static void san_empty_subject_not_critical(X509 *x)
{
    subject_empty(x);
    set_ext(x, NID_subject_alt_name, "URI:spiffe://td/svc/a");
}
static void san_empty_subject_critical(X509 *x)
{
    subject_empty(x);
    set_ext(x, NID_subject_alt_name, "critical,URI:spiffe://td/svc/a");
}
static void san_empty_subject_absent(X509 *x)
{
    subject_empty(x);
    del_ext(x, NID_subject_alt_name);
}
static void san_absent(X509 *x) /* a subject CN is enough for the profile */
{
    del_ext(x, NID_subject_alt_name);
}
static void san_dns_empty(X509 *x)
{
    set_raw(x, NID_subject_alt_name, 0, "\x30\x02\x82\x00", 4);
}
static void san_dns_space(X509 *x)
{
    set_raw(x, NID_subject_alt_name, 0, "\x30\x03\x82\x01 ", 5);
}
static void san_dns_empty_label(X509 *x)
{
    set_ext(x, NID_subject_alt_name, "DNS:a..example");
}
static void san_dns_underscore(X509 *x)
{
    set_ext(x, NID_subject_alt_name, "DNS:my_service.example");
}
static void san_dns_wildcard(X509 *x)
{
    set_ext(x, NID_subject_alt_name, "DNS:*.example.com, DNS:localhost");
}
static void san_uri_relative(X509 *x)
{
    set_ext(x, NID_subject_alt_name, "URI:svc/web");
}
static void san_uri_no_rest(X509 *x)
{
    set_ext(x, NID_subject_alt_name, "URI:spiffe:");
}
static void san_email_no_at(X509 *x)
{
    set_ext(x, NID_subject_alt_name, "email:nobody");
}
static void san_ip_3_octets(X509 *x)
{
    set_raw(x, NID_subject_alt_name, 0, "\x30\x05\x87\x03\x7f\x00\x01", 7);
}
static void san_ip_v6(X509 *x)
{
    set_ext(x, NID_subject_alt_name, "IP:::1, IP:127.0.0.1, email:a@b.example");
}

/* ---- the table ------------------------------------------------------------------------ */

enum { LEAF = 0, INTER = 1, ROOT = 2 };

static const struct tcase {
    const char *name;
    int target;  /* which certificate of [leaf, intermediate, root] is changed */
    int anchors; /* trailing certificates not checked */
    void (*change)(X509 *x);
    const char *rule; /* NULL: must pass */
} CASES[] = {
    {"good chain", LEAF, 1, none, NULL},
    {"serial negative", LEAF, 1, serial_negative, "rfc5280-serial-positive"},
    {"serial zero", INTER, 1, serial_zero, "rfc5280-serial-positive"},
    {"serial of 21 octets", LEAF, 1, serial_21_octets, "rfc5280-serial-length"},
    {"serial of 20 bytes, top bit set", LEAF, 1, serial_20_top_bit, "rfc5280-serial-length"},
    {"serial of 20 octets", LEAF, 1, serial_20_octets, NULL},
    {"signature algorithms differ", LEAF, 1, sig_alg_differs, "rfc5280-signature-algorithm"},
    {"v1 with extensions", LEAF, 1, version_1, "rfc5280-version"},
    {"issuer empty", LEAF, 1, issuer_empty, "rfc5280-issuer-empty"},
    {"GeneralizedTime in 2030", LEAF, 1, generalized_2030, "rfc5280-time-encoding"},
    {"GeneralizedTime in 2051", LEAF, 1, generalized_2051, NULL},
    {"an extension twice", INTER, 1, ski_twice, "rfc5280-extension-repeated"},
    {"300 extensions", LEAF, 1, many_extensions, "rfc5280-extension-repeated"},
    {"CA subject empty", INTER, 1, subject_empty, "rfc5280-ca-subject"},
    {"CA basicConstraints not critical", INTER, 1, bc_not_critical, "rfc5280-ca-basic-constraints"},
    {"CA without basicConstraints", INTER, 1, bc_absent, "rfc5280-ca-basic-constraints"},
    {"CA without subjectKeyIdentifier", INTER, 1, ski_absent, "rfc5280-ca-key-id"},
    {"leaf without subjectKeyIdentifier", LEAF, 1, ski_absent, NULL},
    {"CA without keyUsage", INTER, 1, ku_absent, "rfc5280-ca-key-usage"},
    {"leaf without keyUsage", LEAF, 1, ku_absent, NULL},
    {"leaf without authorityKeyIdentifier", LEAF, 1, aki_absent, "rfc5280-authority-key-id"},
    {"CA without authorityKeyIdentifier", INTER, 1, aki_absent, "rfc5280-authority-key-id"},
    {"self-signed root without one, checked", ROOT, 0, none, NULL},
    {"keyUsage with no bit", LEAF, 1, ku_empty, "rfc5280-extension-malformed"},
    {"leaf asserts keyCertSign", LEAF, 1, ku_cert_sign, "rfc5280-key-cert-sign-non-ca"},
    {"leaf asserts cRLSign", LEAF, 1, ku_crl_sign, NULL},
    {"leaf with a path length", LEAF, 1, leaf_pathlen, "rfc5280-path-length"},
    {"CA path length without keyCertSign", INTER, 1, ca_pathlen_no_cert_sign,
     "rfc5280-path-length"},
    {"leaf with name constraints", LEAF, 1, nc_permitted, "rfc5280-name-constraints"},
    {"CA name constraints not critical", INTER, 1, nc_not_critical, "rfc5280-name-constraints"},
    {"CA name constraints empty", INTER, 1, nc_empty, "rfc5280-name-constraints"},
    {"CA name constraints critical", INTER, 1, nc_permitted, NULL},
    {"SAN with no name", LEAF, 1, san_no_names, "rfc5280-subject-alt-name"},
    {"empty subject, SAN not critical", LEAF, 1, san_empty_subject_not_critical,
     "rfc5280-subject-alt-name"},
    {"empty subject, SAN critical", LEAF, 1, san_empty_subject_critical, NULL},
    {"empty subject, no SAN", LEAF, 1, san_empty_subject_absent, "rfc5280-subject-alt-name"},
    {"subject, no SAN", LEAF, 1, san_absent, NULL},
    {"DNS name empty", LEAF, 1, san_dns_empty, "rfc5280-subject-alt-name"},
    {"DNS name ' '", LEAF, 1, san_dns_space, "rfc5280-subject-alt-name"},
    {"DNS name with an empty label", LEAF, 1, san_dns_empty_label, "rfc5280-subject-alt-name"},
    {"DNS name with '_'", LEAF, 1, san_dns_underscore, "rfc5280-subject-alt-name"},
    {"DNS wildcard", LEAF, 1, san_dns_wildcard, NULL},
    {"URI relative", LEAF, 1, san_uri_relative, "rfc5280-subject-alt-name"},
    {"URI with only a scheme", LEAF, 1, san_uri_no_rest, "rfc5280-subject-alt-name"},
    {"email without '@'", LEAF, 1, san_email_no_at, "rfc5280-subject-alt-name"},
    {"IP of 3 octets", LEAF, 1, san_ip_3_octets, "rfc5280-subject-alt-name"},
    {"IPv6, IPv4 and email", LEAF, 1, san_ip_v6, NULL},
    /* the anchor is the operator's choice: not checked unless asked */
    {"anchor without critical basicConstraints", ROOT, 1, bc_not_critical, NULL},
    {"same, anchor checked", ROOT, 0, bc_not_critical, "rfc5280-ca-basic-constraints"},
};

/* `x` changed by `change`, as a fresh object read back from DER. */
static X509 *changed(X509 *x, void (*change)(X509 *))
{
    X509 *copy = X509_dup(x);
    change(copy);
    i2d_re_X509_tbs(copy, NULL); /* extension edits leave OpenSSL's cached encoding stale */
    unsigned char *der = NULL;
    int n = i2d_X509(copy, &der);
    const unsigned char *p = der;
    X509 *out = n > 0 ? d2i_X509(NULL, &p, n) : NULL;
    OPENSSL_free(der);
    X509_free(copy);
    return out;
}

TEST(certificate_rules)
{
    for (size_t i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++) {
        const struct tcase *t = &CASES[i];
        X509 *orig[3] = {leaf, inter, root};
        X509 *mod = changed(orig[t->target], t->change);
        CHECK(mod != NULL);
        if (!mod)
            continue;
        STACK_OF(X509) *chain = sk_X509_new_null();
        for (int k = 0; k < 3; k++)
            sk_X509_push(chain, k == t->target ? mod : orig[k]);
        struct meshtls_x509_violation v = {.rule = NULL};
        int rc = meshtls_x509_profile_check(chain, t->anchors, &v);
        if (t->rule) {
            CHECK_INT_EQ(rc, MESHTLS_EUNTRUSTED);
            CHECK_STR_EQ(v.rule, t->rule);
            CHECK_INT_EQ(v.depth, t->target);
            CHECK(strstr(v.msg, t->rule) && strstr(v.msg, "serial") && strstr(v.msg, "RFC 5280"));
            CHECK(strstr(v.msg, "reissue") != NULL);
        } else {
            CHECK_INT_EQ(rc, 0);
        }
        if ((t->rule == NULL) != (rc == 0) || (t->rule && v.rule && strcmp(v.rule, t->rule)))
            fprintf(stderr, "  case '%s': got %s\n", t->name, rc ? v.msg : "pass");
        sk_X509_free(chain);
        X509_free(mod);
    }
}

TEST(message_names_the_certificate)
{
    X509 *mod = changed(inter, ski_absent);
    STACK_OF(X509) *chain = sk_X509_new_null();
    sk_X509_push(chain, leaf);
    sk_X509_push(chain, mod);
    sk_X509_push(chain, root);
    struct meshtls_x509_violation v;
    CHECK_INT_EQ(meshtls_x509_profile_check(chain, 1, &v), MESHTLS_EUNTRUSTED);
    CHECK(strstr(v.msg, "the CA certificate (subject \"CN=test intermediate,O=test\"") == v.msg);
    CHECK_STR_EQ(v.section, "4.2.1.2");
    CHECK_INT_EQ(meshtls_x509_profile_check(chain, 1, NULL), MESHTLS_EUNTRUSTED);
    sk_X509_free(chain);
    X509_free(mod);
}

/* ---- CRLs ------------------------------------------------------------------------------ */

enum crl_change {
    CRL_GOOD,
    CRL_V1,
    CRL_NO_ISSUER,
    CRL_NO_NEXT,
    CRL_NO_AKI,
    CRL_NO_NUMBER,
    CRL_NEG_NUMBER,
    CRL_LONG_NUMBER,
    CRL_CRIT_NUMBER,
    CRL_TWICE,
    CRL_GENERALIZED,
};

static X509_CRL *make_crl(enum crl_change c)
{
    X509_CRL *crl = X509_CRL_new();
    ASN1_TIME *t = ASN1_TIME_set(NULL, 1700000000);
    X509_CRL_set_version(crl, c == CRL_V1 ? 0 : 1);
    X509_NAME *empty = X509_NAME_new();
    X509_CRL_set_issuer_name(crl, c == CRL_NO_ISSUER ? empty : X509_get_subject_name(inter));
    X509_NAME_free(empty);
    if (c == CRL_GENERALIZED) {
        ASN1_TIME *g = ASN1_GENERALIZEDTIME_new();
        ASN1_GENERALIZEDTIME_set_string(g, "20300101000000Z");
        X509_CRL_set1_lastUpdate(crl, g);
        ASN1_TIME_free(g);
    } else {
        X509_CRL_set1_lastUpdate(crl, t);
    }
    if (c != CRL_NO_NEXT) {
        ASN1_TIME_set(t, 1800000000);
        X509_CRL_set1_nextUpdate(crl, t);
    }
    ASN1_TIME_free(t);
    if (c != CRL_NO_AKI) {
        X509V3_CTX v3;
        X509V3_set_ctx(&v3, inter, NULL, NULL, crl, 0);
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, NID_authority_key_identifier, "keyid");
        X509_CRL_add_ext(crl, e, -1);
        X509_EXTENSION_free(e);
    }
    if (c != CRL_NO_NUMBER) {
        BIGNUM *bn = NULL;
        BN_hex2bn(&bn, c == CRL_NEG_NUMBER    ? "-1"
                       : c == CRL_LONG_NUMBER ? "0102030405060708090a0b0c0d0e0f101112131415"
                                              : "2a");
        ASN1_INTEGER *num = BN_to_ASN1_INTEGER(bn, NULL);
        X509_CRL_add1_ext_i2d(crl, NID_crl_number, num, c == CRL_CRIT_NUMBER, X509V3_ADD_DEFAULT);
        if (c == CRL_TWICE)
            X509_CRL_add1_ext_i2d(crl, NID_crl_number, num, 0, X509V3_ADD_APPEND);
        ASN1_INTEGER_free(num);
        BN_free(bn);
    }
    return crl;
}

TEST(crl_rules)
{
    static const struct {
        enum crl_change c;
        const char *rule;
    } T[] = {
        {CRL_GOOD, NULL},
        {CRL_V1, "rfc5280-crl-version"},
        {CRL_NO_ISSUER, "rfc5280-crl-issuer"},
        {CRL_NO_NEXT, "rfc5280-crl-next-update"},
        {CRL_NO_AKI, "rfc5280-crl-authority-key-id"},
        {CRL_NO_NUMBER, "rfc5280-crl-number"},
        {CRL_NEG_NUMBER, "rfc5280-crl-number"},
        {CRL_LONG_NUMBER, "rfc5280-crl-number"},
        {CRL_CRIT_NUMBER, "rfc5280-crl-number"},
        {CRL_TWICE, "rfc5280-crl-extension-repeated"},
        {CRL_GENERALIZED, "rfc5280-crl-time-encoding"},
    };
    for (size_t i = 0; i < sizeof(T) / sizeof(T[0]); i++) {
        X509_CRL *crl = make_crl(T[i].c);
        struct meshtls_x509_violation v = {.rule = NULL};
        int rc = meshtls_x509_profile_check_crl(crl, "CRL 1 of /x/crl.pem", &v);
        if (T[i].rule) {
            CHECK_INT_EQ(rc, MESHTLS_EUNTRUSTED);
            CHECK_STR_EQ(v.rule, T[i].rule);
            CHECK_INT_EQ(v.depth, -1);
            CHECK(strstr(v.msg, "CRL 1 of /x/crl.pem breaks RFC 5280") == v.msg);
        } else {
            CHECK_INT_EQ(rc, 0);
        }
        if ((T[i].rule == NULL) != (rc == 0))
            fprintf(stderr, "  crl case %zu: got %s\n", i, rc ? v.msg : "pass");
        X509_CRL_free(crl);
    }
}

int main(void)
{
    struct meshtls_err err = MESHTLS_ERR_INIT;
    struct mt_cert_spec rs = {.cn = "test root", .o = "test", .is_ca = 1, .pathlen = -1, .days = 1};
    struct mt_cert_spec is = {
        .cn = "test intermediate", .o = "test", .is_ca = 1, .pathlen = 0, .days = 1};
    const char *dns[] = {"api.example"};
    struct mt_cert_spec ls = {.cn = "api",
                              .days = 1,
                              .dns = dns,
                              .n_dns = 1,
                              .uri = "spiffe://td/svc/api",
                              .eku_client = 1,
                              .eku_server = 1};
    if (mt_key_generate(MT_KEY_EC_P256, &root_key, &err) ||
        mt_key_generate(MT_KEY_EC_P256, &int_key, &err) ||
        mt_key_generate(MT_KEY_EC_P256, &leaf_key, &err) ||
        mt_cert_sign(&rs, root_key, NULL, root_key, &root, &err) ||
        mt_cert_sign(&is, int_key, root, root_key, &inter, &err) ||
        mt_cert_sign(&ls, leaf_key, inter, int_key, &leaf, &err)) {
        fprintf(stderr, "cannot make the test chain: %s\n", err.msg);
        return 1;
    }
    RUN(certificate_rules);
    RUN(message_names_the_certificate);
    RUN(crl_rules);
    X509_free(leaf);
    X509_free(inter);
    X509_free(root);
    EVP_PKEY_free(leaf_key);
    EVP_PKEY_free(int_key);
    EVP_PKEY_free(root_key);
    return check_summary();
}
