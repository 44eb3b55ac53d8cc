/*
 * test_identity.c - identity extraction from fixture certificates in
 * tests/data (made once with openssl, valid for 100 years), and the PEM,
 * key-permission and expiry helpers.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/pem.h>

#include "check.h"
#include "meshtls/identity.h"
#include "meshtls/x509.h"

static struct meshtls_identity *load(const char *path)
{
    char *buf = NULL;
    size_t len = 0;
    struct meshtls_identity *id = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    if (meshtls_read_file(path, MESHTLS_PEM_FILE_MAX, &buf, &len, &err) != 0 ||
        meshtls_identity_from_pem(buf, len, &id, &err) != 0)
        fprintf(stderr, "load %s: %s\n", path, err.msg);
    free(buf);
    return id;
}

TEST(spiffe_leaf)
{
    struct meshtls_identity *id = load("tests/data/identity_spiffe.pem");
    CHECK(id != NULL);
    if (!id)
        return;
    CHECK_STR_EQ(id->cn, "api");
    CHECK_STR_EQ(id->o, "acme");
    CHECK_STR_EQ(id->ou, "payments");
    CHECK_STR_EQ(id->issuer, "CN=Fixture CA");
    CHECK_STR_EQ(id->serial, "0a1b2c3d");
    CHECK_STR_EQ(id->key_type, "EC P-256");
    CHECK_INT_EQ(id->n_dns, 2);
    CHECK_STR_EQ(id->dns[0], "api.local");
    CHECK_STR_EQ(id->dns[1], "api.acme.svc");
    CHECK_INT_EQ(id->n_ips, 2);
    CHECK_STR_EQ(id->ips[0], "127.0.0.1");
    CHECK_STR_EQ(id->ips[1], "::1");
    CHECK_INT_EQ(id->n_uris, 1);
    CHECK_STR_EQ(id->spiffe_id, "spiffe://acme.org/svc/api");
    CHECK_STR_EQ(id->spiffe.trust_domain, "acme.org");
    CHECK_STR_EQ(id->spiffe.path, "/svc/api");
    CHECK(!id->is_ca);
    CHECK(id->not_after > id->not_before);
    CHECK(meshtls_identity_days_left(id, 0) > 30000);
    CHECK_INT_EQ(meshtls_identity_days_left(id, id->not_after + 1), -1);
    CHECK_INT_EQ(meshtls_identity_days_left(id, id->not_after - 86400), 1);
    meshtls_identity_free(id);
}

TEST(two_uri_sans_have_no_spiffe_id)
{
    struct meshtls_identity *id = load("tests/data/identity_two_uris.pem");
    CHECK(id != NULL);
    if (!id)
        return;
    CHECK_INT_EQ(id->n_uris, 2);
    CHECK(id->spiffe_id == NULL);
    meshtls_identity_free(id);
}

TEST(invalid_spiffe_uri_is_not_an_id)
{
    struct meshtls_identity *id = load("tests/data/identity_bad_spiffe.pem");
    CHECK(id != NULL);
    if (!id)
        return;
    CHECK_INT_EQ(id->n_uris, 1);
    CHECK(id->spiffe_id == NULL);
    meshtls_identity_free(id);
}

TEST(no_san)
{
    struct meshtls_identity *id = load("tests/data/identity_no_san.pem");
    CHECK(id != NULL);
    if (!id)
        return;
    CHECK_STR_EQ(id->cn, "plain");
    CHECK_STR_EQ(id->ou, "");
    CHECK_INT_EQ(id->n_dns + id->n_ips + id->n_uris, 0);
    CHECK(id->spiffe_id == NULL);
    meshtls_identity_free(id);
    id = load("tests/data/identity_ca.pem");
    CHECK(id && id->is_ca);
    meshtls_identity_free(id);
}

TEST(malformed_input)
{
    struct meshtls_identity *id = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    const char *junk =
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n";
    CHECK_INT_EQ(meshtls_identity_from_pem(junk, strlen(junk), &id, &err), MESHTLS_EPARSE);
    CHECK(id == NULL);
    CHECK_INT_EQ(meshtls_identity_from_pem("hello", 5, &id, &err), MESHTLS_EPARSE);
    CHECK(strstr(err.msg, "no PEM certificate") != NULL);
    static const unsigned char der[] = {0x30, 0x82, 0x01, 0x00, 0x30};
    CHECK_INT_EQ(meshtls_identity_from_der(der, sizeof(der), &id, &err), MESHTLS_EPARSE);
    STACK_OF(X509) *certs = NULL;
    CHECK_INT_EQ(meshtls_pem_read_certs("tests/data/does-not-exist.pem", &certs, &err),
                 MESHTLS_ENOENT);
    CHECK(strstr(err.msg, "does-not-exist.pem") != NULL);
}

TEST(key_permissions)
{
    char dir[] = "/tmp/meshtls-test-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof(path), "%s/k.pem", dir);
    struct meshtls_err err = MESHTLS_ERR_INIT;
    const char *pem = "not a key\n";
    CHECK_INT_EQ(meshtls_write_file_atomic(path, pem, strlen(pem), 0644, 1, &err), 0);
    CHECK_INT_EQ(meshtls_key_file_check(path, &err), MESHTLS_EPERM);
    CHECK(strstr(err.msg, path) != NULL && strstr(err.msg, "chmod 600") != NULL);
    CHECK_INT_EQ(meshtls_write_file_atomic(path, pem, strlen(pem), 0600, 1, &err), MESHTLS_EEXIST);
    chmod(path, 0600);
    CHECK_INT_EQ(meshtls_key_file_check(path, &err), 0);
    EVP_PKEY *k = NULL;
    CHECK_INT_EQ(meshtls_pem_read_key(path, &k, &err), MESHTLS_EPARSE);
    CHECK(k == NULL);
    unlink(path);
    rmdir(dir);
}

TEST(expiry_windows)
{
    STACK_OF(X509) *certs = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    CHECK_INT_EQ(meshtls_pem_read_certs("tests/data/identity_spiffe.pem", &certs, &err), 0);
    if (!certs)
        return;
    X509 *x = sk_X509_value(certs, 0);
    struct meshtls_identity *id = NULL;
    CHECK_INT_EQ(meshtls_identity_from_x509(x, &id, NULL), 0);
    int days = 0;
    CHECK_INT_EQ(meshtls_cert_check_expiry(x, "f", 30, 0, &days, &err), 0);
    /* 10 days before expiry: expiring with a 30-day window, fine with 5 */
    int64_t t = id->not_after - 10 * 86400 - 60;
    CHECK_INT_EQ(meshtls_cert_check_expiry(x, "f", 30, t, &days, &err), MESHTLS_EEXPIRING);
    CHECK_INT_EQ(days, 10);
    CHECK_INT_EQ(meshtls_cert_check_expiry(x, "f", 5, t, &days, &err), 0);
    /* after not_after: expired, whatever the window */
    CHECK_INT_EQ(meshtls_cert_check_expiry(x, "f", 0, id->not_after + 3 * 86400, &days, &err),
                 MESHTLS_EEXPIRED);
    CHECK(strstr(err.msg, "expired") != NULL);
    /* before not_before: not yet valid */
    CHECK_INT_EQ(meshtls_cert_check_expiry(x, "f", 0, id->not_before - 10, &days, &err),
                 MESHTLS_EEXPIRED);
    meshtls_identity_free(id);
    sk_X509_pop_free(certs, X509_free);
}

int main(void)
{
    RUN(spiffe_leaf);
    RUN(two_uri_sans_have_no_spiffe_id);
    RUN(invalid_spiffe_uri_is_not_an_id);
    RUN(no_san);
    RUN(malformed_input);
    RUN(key_permissions);
    RUN(expiry_windows);
    return check_summary();
}
