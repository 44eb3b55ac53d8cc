/*
 * test_ca_serve.c - the control plane's pure logic as tables (src/ca/serve_token.c):
 * bootstrap token format and hashing, the CSR-versus-registration match of /api/v1/sign
 * and /api/v1/renew, and the admin list.
 */
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "db.h"
#include "serve.h"

static char *dns_reg[] = {"api.internal", "localhost"};
static char *ip_reg[] = {"127.0.0.1", "::1"};
static struct ca_service reg = {.name = "api",
                                .spiffe_id = "spiffe://example.org/svc/api",
                                .dns = dns_reg,
                                .n_dns = 2,
                                .ips = ip_reg,
                                .n_ips = 2};

/* A CSR with subject CN `cn` (NULL: none) and SAN `san` (openssl syntax, or NULL);
 * `tamper` flips a byte of the signature. */
static X509_REQ *make_csr(const char *cn, const char *san, int tamper)
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
    if (tamper) {
        const ASN1_BIT_STRING *sig = NULL;
        X509_REQ_get0_signature(r, &sig, NULL);
        ((ASN1_BIT_STRING *)sig)->data[10] ^= 0x55;
    }
    EVP_PKEY_free(k);
    return r;
fail:
    EVP_PKEY_free(k);
    X509_REQ_free(r);
    return NULL;
}

#define ID "URI:spiffe://example.org/svc/api"

static const struct {
    const char *cn, *san;
    int tamper, rc;
    const char *why;
} csr_cases[] = {
    {"api", ID, 0, 0, NULL},
    {NULL, ID, 0, 0, NULL},
    {"api", ID ", DNS:api.internal, DNS:LOCALHOST", 0, 0, NULL},
    {"api", ID ", IP:127.0.0.1, IP:0:0:0:0:0:0:0:1", 0, 0, NULL},
    {"api", NULL, 0, MESHTLS_EDENIED, "carries no SPIFFE ID"},
    {"api", "DNS:api.internal", 0, MESHTLS_EDENIED, "carries no SPIFFE ID"},
    {"api", "URI:spiffe://example.org/svc/admin", 0, MESHTLS_EDENIED,
     "asks for the URI SAN 'spiffe://example.org/svc/admin'"},
    {"api", ID ", URI:spiffe://example.org/svc/api", 0, MESHTLS_EDENIED, "carries 2 URI SANs"},
    {"admin", ID, 0, MESHTLS_EDENIED, "asks for CN 'admin'"},
    {"api", ID ", DNS:admin.internal", 0, MESHTLS_EDENIED, "DNS name 'admin.internal'"},
    {"api", ID ", DNS:*.internal", 0, MESHTLS_EDENIED, "DNS name '*.internal'"},
    {"api", ID ", IP:10.0.0.1", 0, MESHTLS_EDENIED, "IP address 10.0.0.1"},
    {"api", ID ", IP:::2", 0, MESHTLS_EDENIED, "IP address ::2"},
    {"api", ID ", email:a@b.c", 0, MESHTLS_EDENIED, "a SAN of a kind we do not issue"},
    {"api", ID, 1, MESHTLS_EPARSE, "signature does not verify"},
};

TEST(csr_match_table)
{
    for (size_t i = 0; i < sizeof(csr_cases) / sizeof(csr_cases[0]); i++) {
        X509_REQ *r = make_csr(csr_cases[i].cn, csr_cases[i].san, csr_cases[i].tamper);
        CHECK(r != NULL);
        if (!r)
            continue;
        char why[600] = "";
        int rc = cp_csr_match(r, &reg, why, sizeof(why));
        if (rc != csr_cases[i].rc || (csr_cases[i].why && !strstr(why, csr_cases[i].why))) {
            fprintf(stderr, "case %zu (%s): rc %d, why '%s'\n", i,
                    csr_cases[i].san ? csr_cases[i].san : "-", rc, why);
            CHECK(0);
        }
        X509_REQ_free(r);
    }
}

TEST(csr_parse)
{
    CHECK(cp_csr_parse(NULL, 0) == NULL);
    CHECK(cp_csr_parse("", 0) == NULL);
    CHECK(cp_csr_parse("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", 40) == NULL);
    X509_REQ *r = make_csr("api", ID, 0);
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509_REQ(b, r);
    char *d = NULL;
    long n = BIO_get_mem_data(b, &d);
    X509_REQ *back = cp_csr_parse(d, (size_t)n);
    CHECK(back != NULL);
    char why[300];
    CHECK_INT_EQ(back ? cp_csr_match(back, &reg, why, sizeof(why)) : -1, 0);
    X509_REQ_free(back);
    X509_REQ_free(r);
    BIO_free(b);
}

TEST(token_format_and_hash)
{
    char t1[CP_TOKEN_LEN + 1], t2[CP_TOKEN_LEN + 1], h1[65], h2[65];
    CHECK_INT_EQ(cp_token_new(t1, sizeof(t1), NULL), 0);
    CHECK_INT_EQ(cp_token_new(t2, sizeof(t2), NULL), 0);
    CHECK_INT_EQ(strlen(t1), CP_TOKEN_LEN);
    CHECK(strncmp(t1, "mtt_", 4) == 0);
    CHECK(strcmp(t1, t2) != 0);
    CHECK_INT_EQ(cp_token_hash(t1, h1, sizeof(h1)), 0);
    CHECK_INT_EQ(cp_token_hash(t1, h2, sizeof(h2)), 0);
    CHECK_STR_EQ(h1, h2); /* deterministic */
    CHECK_INT_EQ(strlen(h1), 64);
    CHECK(strstr(h1, t1 + 4) == NULL); /* the stored form is not the token */
    CHECK_INT_EQ(cp_token_hash(t2, h2, sizeof(h2)), 0);
    CHECK(strcmp(h1, h2) != 0);
    /* a known value: sha256("mtt_" + 43 'A') */
    char known[CP_TOKEN_LEN + 1] = "mtt_";
    memset(known + 4, 'A', 43);
    known[CP_TOKEN_LEN] = '\0';
    CHECK_INT_EQ(cp_token_hash(known, h1, sizeof(h1)), 0);
    unsigned char md[32];
    EVP_Digest(known, CP_TOKEN_LEN, md, NULL, EVP_sha256(), NULL);
    char want[65];
    for (int i = 0; i < 32; i++)
        snprintf(want + 2 * i, 3, "%02x", md[i]);
    CHECK_STR_EQ(h1, want);
}

TEST(token_malformed_table)
{
    char ok[CP_TOKEN_LEN + 1];
    cp_token_new(ok, sizeof(ok), NULL);
    char bad_char[CP_TOKEN_LEN + 1], bad_prefix[CP_TOKEN_LEN + 1], longer[CP_TOKEN_LEN + 2];
    memcpy(bad_char, ok, sizeof(ok));
    bad_char[10] = '+'; /* base64, not base64url */
    memcpy(bad_prefix, ok, sizeof(ok));
    bad_prefix[0] = 'x';
    snprintf(longer, sizeof(longer), "%sA", ok);
    const char *cases[] = {NULL, "", "mtt_", "nope", bad_char, bad_prefix, longer, ok + 1};
    char h[65];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK_INT_EQ(cp_token_hash(cases[i], h, sizeof(h)), MESHTLS_EINVAL);
    CHECK_INT_EQ(cp_token_hash(ok, h, 64), MESHTLS_EINVAL); /* no room for the NUL */
}

TEST(admin_list)
{
    const char *admins[] = {"spiffe://example.org/svc/admin", "spiffe://example.org/svc/ops"};
    CHECK_INT_EQ(cp_is_admin(admins, 2, "spiffe://example.org/svc/admin"), 1);
    CHECK_INT_EQ(cp_is_admin(admins, 2, "spiffe://example.org/svc/ops"), 1);
    CHECK_INT_EQ(cp_is_admin(admins, 2, "spiffe://example.org/svc/adminx"), 0);
    CHECK_INT_EQ(cp_is_admin(admins, 2, "spiffe://example.org/svc/Admin"), 0);
    CHECK_INT_EQ(cp_is_admin(admins, 2, NULL), 0);
    CHECK_INT_EQ(cp_is_admin(admins, 0, "spiffe://example.org/svc/admin"), 0);
}

/* ---- the tables (a real SQLite store in a temporary directory) ---- */

static char tmpl[] = "/tmp/meshtls-serve-XXXXXX";

/* A CA store with service "api" and one certificate "abc" (active). */
static struct ca_store *store_with_cert(void)
{
    struct ca_store *s = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    if (ca_store_open(tmpl, 1, &s, &err) != 0) {
        fprintf(stderr, "open: %s\n", err.msg);
        return NULL;
    }
    int updated = 0;
    struct ca_service svc = {.name = "api", .spiffe_id = "spiffe://example.org/svc/api"};
    struct ca_cert c = {.serial = "abc",
                        .service = "api",
                        .not_before = 1,
                        .not_after = 4000000000,
                        .status = "active",
                        .cert_pem = "x",
                        .pubkey_pem = "y"};
    CHECK_INT_EQ(ca_store_service_put(s, &svc, &updated, &err), 0);
    CHECK_INT_EQ(ca_store_cert_insert(s, &c, &err), 0);
    return s;
}

TEST(tokens_single_use_and_expiry)
{
    struct mt_db *db = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    CHECK_INT_EQ(cp_db_open(tmpl, &db, &err), 0);
    if (!db)
        return;
    char tok[CP_TOKEN_LEN + 1], hash[65], svc[64];
    enum cp_token_state st;
    CHECK_INT_EQ(cp_token_create(db, "api", 60, 1000, tok, sizeof(tok), &err), 0);
    CHECK_INT_EQ(cp_token_hash(tok, hash, sizeof(hash)), 0);
    CHECK_INT_EQ(cp_token_peek(db, hash, 1000, &st, svc, sizeof(svc), &err), 0);
    CHECK_INT_EQ(st, CP_TOKEN_OK);
    CHECK_STR_EQ(svc, "api");
    CHECK_INT_EQ(cp_token_peek(db, hash, 1060, &st, svc, sizeof(svc), &err), 0);
    CHECK_INT_EQ(st, CP_TOKEN_EXPIRED);
    int won = -1;
    CHECK_INT_EQ(cp_token_consume(db, hash, 1060, "x", &won, &err), 0);
    CHECK_INT_EQ(won, 0); /* expired: not usable */
    CHECK_INT_EQ(cp_token_consume(db, hash, 1001, "x", &won, &err), 0);
    CHECK_INT_EQ(won, 1);
    CHECK_INT_EQ(cp_token_consume(db, hash, 1002, "y", &won, &err), 0);
    CHECK_INT_EQ(won, 0); /* used */
    CHECK_INT_EQ(cp_token_peek(db, hash, 1002, &st, svc, sizeof(svc), &err), 0);
    CHECK_INT_EQ(st, CP_TOKEN_USED);
    CHECK_INT_EQ(cp_token_unconsume(db, hash, &err), 0);
    CHECK_INT_EQ(cp_token_consume(db, hash, 1003, "z", &won, &err), 0);
    CHECK_INT_EQ(won, 1); /* given back, usable once more */
    char other[65];
    memset(other, 'a', 64);
    other[64] = '\0';
    CHECK_INT_EQ(cp_token_peek(db, other, 1000, &st, svc, sizeof(svc), &err), 0);
    CHECK_INT_EQ(st, CP_TOKEN_UNKNOWN);
    CHECK_INT_EQ(cp_token_create(db, "api", 0, 1000, tok, sizeof(tok), &err), MESHTLS_EINVAL);
    mt_db_close(db);
}

TEST(lease_one_holder_per_interval)
{
    struct mt_db *db = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    CHECK_INT_EQ(cp_db_open(tmpl, &db, &err), 0);
    if (!db)
        return;
    int a = -1, b = -1;
    CHECK_INT_EQ(cp_lease_take(db, "lifecycle", "a", 10000, 10900, &a, &err), 0);
    CHECK_INT_EQ(cp_lease_take(db, "lifecycle", "b", 10000, 10900, &b, &err), 0);
    CHECK_INT_EQ(a + b, 1);
    CHECK_INT_EQ(a, 1);
    CHECK_INT_EQ(cp_lease_take(db, "lifecycle", "b", 10899, 11800, &b, &err), 0);
    CHECK_INT_EQ(b, 0); /* still held */
    CHECK_INT_EQ(cp_lease_take(db, "lifecycle", "b", 10900, 11800, &b, &err), 0);
    CHECK_INT_EQ(b, 1); /* ran out */
    CHECK_INT_EQ(cp_lease_take(db, "nosuch", "b", 99999, 100000, &b, &err), 0);
    CHECK_INT_EQ(b, 0);
    mt_db_close(db);
}

TEST(revocation_epochs_from_the_revoking_transaction)
{
    struct ca_store *s = store_with_cert();
    struct mt_db *db = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    CHECK_INT_EQ(cp_db_open(tmpl, &db, &err), 0); /* the trigger is installed */
    if (!s || !db)
        goto out;
    struct ca_cert c2 = {.serial = "def",
                         .service = "api",
                         .not_before = 1,
                         .not_after = 4000000000,
                         .status = "active",
                         .cert_pem = "x",
                         .pubkey_pem = "y"};
    CHECK_INT_EQ(ca_store_cert_insert(s, &c2, &err), 0);
    /* superseding is no revocation; a rolled-back revocation takes no epoch */
    CHECK_INT_EQ(ca_store_cert_set_status(s, "abc", "superseded", NULL, "def", &err), 0);
    CHECK_INT_EQ(ca_store_begin(s, &err), 0);
    CHECK_INT_EQ(ca_store_cert_set_status(s, "abc", "revoked", "keyCompromise", NULL, &err), 0);
    ca_store_rollback(s);
    CHECK_INT_EQ(ca_store_cert_set_status(s, "def", "revoked", "superseded", NULL, &err), 0);
    CHECK_INT_EQ(ca_store_cert_set_status(s, "abc", "revoked", "keyCompromise", NULL, &err), 0);
    /* revoking again is not a new revocation */
    CHECK_INT_EQ(ca_store_cert_set_status(s, "abc", "revoked", "keyCompromise", NULL, &err), 0);
    struct mt_db_conn *c = NULL;
    struct mt_db_rows *r = NULL;
    CHECK_INT_EQ(mt_db_acquire(db, &c, &err), 0);
    CHECK_INT_EQ(mt_db_query(c,
                             "SELECT epoch, serial, reason FROM serve_revocations ORDER BY epoch",
                             NULL, 0, &r, &err),
                 0);
    const char *want[][2] = {{"def", "superseded"}, {"abc", "keyCompromise"}};
    int n = 0;
    while (r && mt_db_row_next(r, &err) > 0) {
        CHECK(n < 2);
        if (n < 2) {
            CHECK_INT_EQ(mt_db_col_int64(r, 0), n + 1); /* 1, 2: no gap */
            CHECK_STR_EQ(mt_db_col_text(r, 1), want[n][0]);
            CHECK_STR_EQ(mt_db_col_text(r, 2), want[n][1]);
        }
        n++;
    }
    CHECK_INT_EQ(n, 2);
    mt_db_rows_close(r);
    mt_db_release(c);
out:
    mt_db_close(db);
    ca_store_close(s);
}

int main(void)
{
    RUN(csr_match_table);
    RUN(csr_parse);
    RUN(token_format_and_hash);
    RUN(token_malformed_table);
    RUN(admin_list);
    if (!mkdtemp(tmpl))
        return 1;
    struct ca_store *s = store_with_cert();
    ca_store_close(s);
    RUN(tokens_single_use_and_expiry);
    RUN(lease_one_holder_per_interval);
    char p[200];
    snprintf(p, sizeof(p), "%s/meshtls.db", tmpl);
    unlink(p); /* a fresh store: epochs from 1 */
    RUN(revocation_epochs_from_the_revoking_transaction);
    unlink(p);
    snprintf(p, sizeof(p), "%s/meshtls.db-wal", tmpl);
    unlink(p);
    snprintf(p, sizeof(p), "%s/meshtls.db-shm", tmpl);
    unlink(p);
    rmdir(tmpl);
    return check_summary();
}
