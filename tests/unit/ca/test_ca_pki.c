/*
 * test_ca_pki.c - the static helpers of src/ca/pki.c (included, h2o-style):
 * CSR checks against a registration, serial numbers, service and DNS name
 * rules; and src/ca/stage.c's apply/undo.
 */
#include "../../../src/ca/pki.c"

#include <dirent.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "check.h"
#include "stage.h"

static char *dns_reg[] = {"api.internal", "localhost"};
static char *ip_reg[] = {"127.0.0.1", "::1"};
static struct ca_service reg = {.name = "api",
                                .spiffe_id = "spiffe://example.org/svc/api",
                                .dns = dns_reg,
                                .n_dns = 2,
                                .ips = ip_reg,
                                .n_ips = 2};

/* A CSR with subject CN `cn` (NULL: empty subject) and SAN `san` (openssl syntax, or NULL). */
static X509_REQ *make_csr(const char *cn, const char *san)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509_REQ *r = X509_REQ_new();
    if (!k || !r)
        goto fail;
    X509_REQ_set_pubkey(r, k);
    if (cn)
        X509_NAME_add_entry_by_NID(X509_REQ_get_subject_name(r), NID_commonName, MBSTRING_ASC,
                                   (const unsigned char *)cn, -1, -1, 0);
    if (san) {
        STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
        if (!exts || !e)
            goto fail;
        sk_X509_EXTENSION_push(exts, e);
        X509_REQ_add_extensions(r, exts);
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    }
    if (!X509_REQ_sign(r, k, EVP_sha256()))
        goto fail;
    EVP_PKEY_free(k);
    return r;
fail:
    EVP_PKEY_free(k);
    X509_REQ_free(r);
    return NULL;
}

struct csr_case {
    const char *cn, *san;
    int rc;
    const char *errhas;
};

static const struct csr_case csr_cases[] = {
    {"api", NULL, 0, NULL},
    {NULL, NULL, 0, NULL},
    {"api", "DNS:api.internal, DNS:LOCALHOST", 0, NULL},
    {"api", "IP:127.0.0.1, IP:::1, URI:spiffe://example.org/svc/api", 0, NULL},
    {"api", "IP:0:0:0:0:0:0:0:1", 0, NULL},
    {"admin", NULL, MESHTLS_EDENIED, "asks for CN 'admin'"},
    {"api", "DNS:admin.internal", MESHTLS_EDENIED, "asks for admin.internal"},
    {"api", "DNS:api.internal, DNS:*.internal", MESHTLS_EDENIED, "asks for *.internal"},
    {"api", "IP:10.0.0.1", MESHTLS_EDENIED, "asks for 10.0.0.1"},
    {"api", "IP:::2", MESHTLS_EDENIED, "asks for ::2"},
    {"api", "URI:spiffe://example.org/svc/admin", MESHTLS_EDENIED,
     "spiffe://example.org/svc/admin"},
    {"api", "URI:spiffe://evil.org/svc/api", MESHTLS_EDENIED, "evil.org"},
    {"api", "email:a@example.org", MESHTLS_EDENIED, "a SAN of type"},
};

TEST(csr_checks)
{
    for (size_t i = 0; i < sizeof(csr_cases) / sizeof(csr_cases[0]); i++) {
        const struct csr_case *c = &csr_cases[i];
        X509_REQ *r = make_csr(c->cn, c->san);
        CHECK(r != NULL);
        if (!r)
            continue;
        struct meshtls_err err = MESHTLS_ERR_INIT;
        int rc = check_csr(r, &reg, "x.csr", &err);
        if (rc != c->rc)
            fprintf(stderr, "case %zu (%s / %s): rc %d, %s\n", i, c->cn ? c->cn : "-",
                    c->san ? c->san : "-", rc, err.msg);
        CHECK_INT_EQ(rc, c->rc);
        if (c->errhas) {
            CHECK(strstr(err.msg, c->errhas) != NULL);
            CHECK(strstr(err.msg, "x.csr") != NULL);
        }
        X509_REQ_free(r);
    }
}

TEST(csr_bad_signature)
{
    X509_REQ *r = make_csr("api", NULL);
    CHECK(r != NULL);
    if (!r)
        return;
    /* re-point the request at another key: the signature no longer verifies */
    EVP_PKEY *other = EVP_EC_gen("P-256");
    X509_REQ_set_pubkey(r, other);
    struct meshtls_err err = MESHTLS_ERR_INIT;
    CHECK_INT_EQ(check_csr(r, &reg, "x.csr", &err), MESHTLS_EPARSE);
    CHECK(strstr(err.msg, "signature") != NULL);
    EVP_PKEY_free(other);
    X509_REQ_free(r);
}

TEST(serials_random_positive_128_bit)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    struct mt_cert_spec spec = {.cn = "t", .days = 1};
    char seen[64][80];
    for (int i = 0; i < 64; i++) {
        X509 *c = NULL;
        CHECK_INT_EQ(mt_cert_sign(&spec, k, NULL, k, &c, NULL), 0);
        if (!c)
            return;
        const ASN1_INTEGER *sn = X509_get0_serialNumber(c);
        CHECK(sn->type == V_ASN1_INTEGER); /* positive */
        CHECK(sn->length <= 17 && sn->length >= 8);
        CHECK_INT_EQ(serial_hex(c, seen[i], sizeof(seen[i])), 0);
        CHECK(strlen(seen[i]) <= 32);
        for (int j = 0; j < i; j++)
            CHECK(strcmp(seen[i], seen[j]) != 0);
        X509_free(c);
    }
    EVP_PKEY_free(k);
}

TEST(serial_normalize)
{
    char out[80];
    CHECK_INT_EQ(ca_serial_normalize("0xABCdef", out, sizeof(out)), 0);
    CHECK_STR_EQ(out, "abcdef");
    CHECK_INT_EQ(ca_serial_normalize("0a:BC:de", out, sizeof(out)), 0);
    CHECK_STR_EQ(out, "0abcde"); /* BN_bn2hex: whole bytes, as serial_hex() writes */
    CHECK_INT_EQ(ca_serial_normalize("00ff", out, sizeof(out)), 0);
    CHECK_STR_EQ(out, "ff");
    CHECK(ca_serial_normalize("", out, sizeof(out)) != 0);
    CHECK(ca_serial_normalize("xyz", out, sizeof(out)) != 0);
    CHECK(ca_serial_normalize("12 34", out, sizeof(out)) != 0);
    CHECK(ca_serial_normalize("1111111111111111111111111111111111111111111111111111111111111111"
                              "1",
                              out, sizeof(out)) != 0);
}

TEST(names)
{
    CHECK(valid_service_name("api"));
    CHECK(valid_service_name("0api.v2_x-y"));
    CHECK(!valid_service_name(""));
    CHECK(!valid_service_name("Api"));
    CHECK(!valid_service_name("-api"));
    CHECK(!valid_service_name("a/b"));
    CHECK(!valid_service_name("a b"));
    CHECK(!valid_service_name("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
    CHECK(valid_dns("api.internal"));
    CHECK(valid_dns("localhost"));
    CHECK(valid_dns("*.internal"));
    CHECK(!valid_dns(""));
    CHECK(!valid_dns("a..b"));
    CHECK(!valid_dns(".a"));
    CHECK(!valid_dns("a b"));
    CHECK(!valid_dns("a.*.b"));
    CHECK(!valid_dns("a_b"));
    CHECK_INT_EQ(ca_reason_parse("keyCompromise"), 1);
    CHECK_INT_EQ(ca_reason_parse("cessationOfOperation"), 5);
    CHECK_INT_EQ(ca_reason_parse("keycompromise"), -1);
}

static int slurp(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
    return 0;
}

TEST(stage_apply_done_undo)
{
    char tmpl[] = "/tmp/meshtls-stage-XXXXXX", a[4200], b[4200], sub[4200], buf[64];
    const char *d = mkdtemp(tmpl);
    CHECK(d != NULL);
    if (!d)
        return;
    snprintf(a, sizeof(a), "%s/a.crt", d);
    snprintf(b, sizeof(b), "%s/b.key", d);
    /* first: both new; undo removes them */
    struct ca_stage st = CA_STAGE_INIT;
    CHECK_INT_EQ(ca_stage_add(&st, a, "A1", 2, 0644, NULL), 0);
    CHECK_INT_EQ(ca_stage_add(&st, b, "B1", 2, 0600, NULL), 0);
    CHECK(access(a, F_OK) != 0); /* nothing visible before apply */
    CHECK_INT_EQ(ca_stage_apply(&st, NULL), 0);
    ca_stage_undo(&st);
    CHECK(access(a, F_OK) != 0 && access(b, F_OK) != 0);
    /* apply + done */
    st = (struct ca_stage)CA_STAGE_INIT;
    CHECK_INT_EQ(ca_stage_add(&st, a, "A1", 2, 0644, NULL), 0);
    CHECK_INT_EQ(ca_stage_add(&st, b, "B1", 2, 0600, NULL), 0);
    CHECK_INT_EQ(ca_stage_apply(&st, NULL), 0);
    ca_stage_done(&st);
    CHECK(slurp(a, buf, sizeof(buf)) == 0 && !strcmp(buf, "A1"));
    struct stat sb;
    CHECK(stat(b, &sb) == 0 && (sb.st_mode & 0777) == 0600);
    /* replace, then undo: the previous contents come back */
    st = (struct ca_stage)CA_STAGE_INIT;
    CHECK_INT_EQ(ca_stage_add(&st, a, "A2", 2, 0644, NULL), 0);
    CHECK_INT_EQ(ca_stage_add(&st, b, "B2", 2, 0600, NULL), 0);
    CHECK_INT_EQ(ca_stage_apply(&st, NULL), 0);
    CHECK(slurp(b, buf, sizeof(buf)) == 0 && !strcmp(buf, "B2"));
    ca_stage_undo(&st);
    CHECK(slurp(a, buf, sizeof(buf)) == 0 && !strcmp(buf, "A1"));
    CHECK(slurp(b, buf, sizeof(buf)) == 0 && !strcmp(buf, "B1"));
    /* a failing rename (target is a directory) undoes the first file by itself */
    snprintf(sub, sizeof(sub), "%s/c.crt", d);
    CHECK(mkdir(sub, 0700) == 0);
    st = (struct ca_stage)CA_STAGE_INIT;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    CHECK_INT_EQ(ca_stage_add(&st, a, "A3", 2, 0644, NULL), 0);
    CHECK_INT_EQ(ca_stage_add(&st, sub, "C3", 2, 0644, NULL), 0);
    CHECK(ca_stage_apply(&st, &err) != 0);
    CHECK(strstr(err.msg, "c.crt") != NULL);
    CHECK(slurp(a, buf, sizeof(buf)) == 0 && !strcmp(buf, "A1"));
    rmdir(sub);
    /* a directory made by the stage goes away on undo */
    snprintf(sub, sizeof(sub), "%s/out", d);
    st = (struct ca_stage)CA_STAGE_INIT;
    CHECK_INT_EQ(ca_stage_mkdir(&st, sub, 0755, NULL), 0);
    ca_stage_undo(&st);
    CHECK(access(sub, F_OK) != 0);
    /* only a.crt and b.key are left: no temporaries, no backups */
    DIR *dh = opendir(d);
    int n = 0;
    for (struct dirent *e; dh && (e = readdir(dh));)
        n += e->d_name[0] != '.' || (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."));
    if (dh)
        closedir(dh);
    CHECK_INT_EQ(n, 2);
    unlink(a);
    unlink(b);
    rmdir(d);
}

int main(void)
{
    RUN(csr_checks);
    RUN(csr_bad_signature);
    RUN(serials_random_positive_128_bit);
    RUN(serial_normalize);
    RUN(names);
    RUN(stage_apply_done_undo);
    return check_summary();
}
