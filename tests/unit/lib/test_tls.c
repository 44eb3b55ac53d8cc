/*
 * test_tls.c - TLS contexts in memory: a development-mode server and client
 * joined by a BIO pair complete a TLS 1.3 mutual handshake and see each
 * other's identities; option validation fails closed with named errors.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>

#include "check.h"
#include "meshtls/tls.h"
#include "x509gen.h"

/* Drive both handshakes until done or stuck (bounded). @return 1 if both done. */
static int pump(SSL *c, SSL *s)
{
    int cdone = 0, sdone = 0;
    for (int i = 0; i < 100 && !(cdone && sdone); i++) {
        if (!cdone) {
            int r = SSL_connect(c);
            if (r == 1)
                cdone = 1;
            else if (SSL_get_error(c, r) != SSL_ERROR_WANT_READ)
                return 0;
        }
        if (!sdone) {
            int r = SSL_accept(s);
            if (r == 1)
                sdone = 1;
            else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ)
                return 0;
        }
    }
    return cdone && sdone;
}

static void pair(SSL *c, SSL *s)
{
    BIO *cb = NULL, *sb = NULL;
    BIO_new_bio_pair(&cb, 0, &sb, 0);
    SSL_set_bio(c, cb, cb);
    SSL_set_bio(s, sb, sb);
}

TEST(dev_mode_mutual_handshake)
{
    SSL_CTX *sctx = NULL, *cctx = NULL;
    char *ca_pem = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    CHECK_INT_EQ(meshtls_tls_dev_ctx_new("orders", &sctx, &cctx, &ca_pem, &err), 0);
    if (!sctx || !cctx)
        return;
    CHECK(ca_pem && strstr(ca_pem, "BEGIN CERTIFICATE"));
    SSL *c = NULL, *s = SSL_new(sctx);
    CHECK_INT_EQ(meshtls_tls_client_ssl_new(cctx, &c, &err), 0);
    pair(c, s);
    CHECK(pump(c, s));
    CHECK_STR_EQ(SSL_get_version(c), "TLSv1.3");
    struct meshtls_identity *peer = NULL;
    CHECK_INT_EQ(meshtls_tls_peer_identity(s, &peer, &err), 0);
    CHECK(peer && peer->spiffe_id && !strcmp(peer->spiffe_id, "spiffe://dev.local/svc/orders"));
    meshtls_identity_free(peer);
    SSL_free(c);
    SSL_free(s);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    free(ca_pem);
}

TEST(server_refuses_client_without_certificate)
{
    SSL_CTX *sctx = NULL, *cctx = NULL;
    CHECK_INT_EQ(meshtls_tls_dev_ctx_new("api", &sctx, NULL, NULL, NULL), 0);
    /* a plain client of the same CA but presenting no certificate */
    cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
    SSL *c = SSL_new(cctx), *s = SSL_new(sctx);
    pair(c, s);
    CHECK(!pump(c, s));
    char why[256];
    meshtls_tls_verify_failure(s, why, sizeof(why));
    CHECK_STR_EQ(why, "the client sent no certificate");
    SSL_free(c);
    SSL_free(s);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    ERR_clear_error();
}

TEST(clients_of_different_dev_cas_fail)
{
    SSL_CTX *sctx = NULL, *cctx = NULL;
    CHECK_INT_EQ(meshtls_tls_dev_ctx_new("a", &sctx, NULL, NULL, NULL), 0);
    CHECK_INT_EQ(meshtls_tls_dev_ctx_new("b", NULL, &cctx, NULL, NULL), 0);
    SSL *c = NULL, *s = SSL_new(sctx);
    CHECK_INT_EQ(meshtls_tls_client_ssl_new(cctx, &c, NULL), 0);
    pair(c, s);
    CHECK(!pump(c, s));
    char why[256];
    meshtls_tls_verify_failure(c, why, sizeof(why));
    CHECK(why[0] != '\0');
    SSL_free(c);
    SSL_free(s);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    ERR_clear_error();
}

TEST(options_fail_closed)
{
    SSL_CTX *ctx = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    struct meshtls_tls_opts o = {0};
    /* the library names the option fields, never a command's flags: a C program has none */
    CHECK_INT_EQ(meshtls_tls_server_ctx_new(&o, &ctx, &err), MESHTLS_EINVAL);
    CHECK(strstr(err.msg, "certificate") != NULL && strstr(err.msg, "(cert_file)") != NULL);
    CHECK(strstr(err.msg, "--") == NULL);
    o.cert_file = "tests/data/identity_spiffe.pem";
    CHECK_INT_EQ(meshtls_tls_server_ctx_new(&o, &ctx, &err), MESHTLS_EINVAL);
    CHECK(strstr(err.msg, "(key_file)") != NULL && strstr(err.msg, "--") == NULL);
    o.key_file = "tests/data/missing.key";
    CHECK_INT_EQ(meshtls_tls_server_ctx_new(&o, &ctx, &err), MESHTLS_EINVAL);
    CHECK(strstr(err.msg, "CA bundle") != NULL && strstr(err.msg, "(ca_file)") != NULL);
    CHECK(strstr(err.msg, "--") == NULL);
    o.ca_file = "tests/data/identity_ca.pem";
    CHECK_INT_EQ(meshtls_tls_server_ctx_new(&o, &ctx, &err), MESHTLS_ENOENT);
    CHECK(strstr(err.msg, "tests/data/missing.key") != NULL);
    /* a client must say whom it expects */
    CHECK_INT_EQ(meshtls_tls_client_ctx_new(&o, &ctx, &err), MESHTLS_EINVAL);
    CHECK(strstr(err.msg, "server name") != NULL);
    CHECK(strstr(err.msg, "server_name") && strstr(err.msg, "verify_spiffe_id") &&
          strstr(err.msg, "verify_trust_domain"));
    CHECK(strstr(err.msg, "--") == NULL && strstr(err.msg, "GRPC_") == NULL);
    o.verify_spiffe_id = "spiffe://Bad/x";
    CHECK_INT_EQ(meshtls_tls_client_ctx_new(&o, &ctx, &err), MESHTLS_EINVAL);
    CHECK(ctx == NULL);
}

/* Write `pem` to DIR/name (mode 0600).  @return 1 on success. */
static int put(const char *dir, const char *name, const char *pem1, const char *pem2)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        return 0;
    fputs(pem1, f);
    if (pem2)
        fputs(pem2, f);
    fclose(f);
    return chmod(path, 0600) == 0;
}

/* A leaf for `cn` under `ica`, written as DIR/cn.crt (leaf + intermediate) and DIR/cn.key. */
static int make_leaf(const char *dir, const char *cn, const char *uri, X509 *ica, EVP_PKEY *ikey,
                     const char *ica_pem)
{
    const char *dns[] = {"localhost"};
    struct mt_cert_spec spec = {
        .cn = cn, .days = 1, .dns = dns, .n_dns = 1, .uri = uri, .eku_server = 1, .eku_client = 1};
    EVP_PKEY *key = NULL;
    X509 *leaf = NULL;
    char *cpem = NULL, *kpem = NULL, name[64];
    size_t n = 0;
    int ok = mt_key_generate(MT_KEY_EC_P256, &key, NULL) == 0 &&
             mt_cert_sign(&spec, key, ica, ikey, &leaf, NULL) == 0 &&
             mt_cert_to_pem(leaf, &cpem, &n, NULL) == 0 && mt_key_to_pem(key, &kpem, &n, NULL) == 0;
    snprintf(name, sizeof(name), "%s.crt", cn);
    ok = ok && put(dir, name, cpem, ica_pem);
    snprintf(name, sizeof(name), "%s.key", cn);
    ok = ok && put(dir, name, kpem, NULL);
    free(cpem);
    free(kpem);
    X509_free(leaf);
    EVP_PKEY_free(key);
    return ok;
}

/* root -> intermediate -> leaves "server" and "client" in a new temporary directory. */
static int make_chain_pki(char *dir)
{
    struct mt_cert_spec rs = {.cn = "test root", .is_ca = 1, .pathlen = -1, .days = 2};
    struct mt_cert_spec is = {.cn = "test intermediate", .is_ca = 1, .pathlen = 0, .days = 2};
    EVP_PKEY *rk = NULL, *ik = NULL;
    X509 *root = NULL, *ica = NULL;
    char *rpem = NULL, *ipem = NULL;
    size_t n = 0;
    int ok = mkdtemp(dir) != NULL && mt_key_generate(MT_KEY_EC_P256, &rk, NULL) == 0 &&
             mt_cert_sign(&rs, rk, NULL, rk, &root, NULL) == 0 &&
             mt_key_generate(MT_KEY_EC_P256, &ik, NULL) == 0 &&
             mt_cert_sign(&is, ik, root, rk, &ica, NULL) == 0 &&
             mt_cert_to_pem(root, &rpem, &n, NULL) == 0 &&
             mt_cert_to_pem(ica, &ipem, &n, NULL) == 0 && put(dir, "ca.crt", rpem, NULL) &&
             make_leaf(dir, "server", "spiffe://test.local/svc/server", ica, ik, ipem) &&
             make_leaf(dir, "client", "spiffe://test.local/svc/client", ica, ik, ipem);
    free(rpem);
    free(ipem);
    X509_free(root);
    X509_free(ica);
    EVP_PKEY_free(rk);
    EVP_PKEY_free(ik);
    return ok;
}

static void rm_pki(const char *dir)
{
    const char *names[] = {"ca.crt", "server.crt", "server.key", "client.crt", "client.key"};
    char path[512];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

TEST(session_cache_keeps_the_leaf_and_frees_the_intermediates)
{
    char dir[] = "/tmp/meshtls-tls-test-XXXXXX", crt[600], key[600], ca[600], ccrt[600], ckey[600];
    CHECK(make_chain_pki(dir));
    snprintf(crt, sizeof(crt), "%s/server.crt", dir);
    snprintf(key, sizeof(key), "%s/server.key", dir);
    snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
    snprintf(ccrt, sizeof(ccrt), "%s/client.crt", dir);
    snprintf(ckey, sizeof(ckey), "%s/client.key", dir);
    struct meshtls_session_cache *cache = NULL;
    CHECK_INT_EQ(meshtls_session_cache_new(100, 300, &cache), 0);
    struct meshtls_tls_opts so = {
        .cert_file = crt, .key_file = key, .ca_file = ca, .session_cache = cache};
    struct meshtls_tls_opts co = {
        .cert_file = ccrt, .key_file = ckey, .ca_file = ca, .server_name = "localhost"};
    SSL_CTX *sctx = NULL, *cctx = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    CHECK_INT_EQ(meshtls_tls_server_ctx_new(&so, &sctx, &err), 0);
    CHECK_INT_EQ(meshtls_tls_client_ctx_new(&co, &cctx, &err), 0);
    if (!sctx || !cctx)
        goto out;
    SSL_SESSION *resume = NULL;
    for (int round = 0; round < 2; round++) {
        SSL *c = NULL, *s = SSL_new(sctx);
        CHECK_INT_EQ(meshtls_tls_client_ssl_new(cctx, &c, &err), 0);
        if (!c || !s)
            break;
        if (resume)
            SSL_set_session(c, resume);
        pair(c, s);
        CHECK(pump(c, s));
        char b;
        CHECK(SSL_read(c, &b, 1) <= 0); /* takes in the session ticket */
        /* the client's leaf stays (identity, resumption); its intermediate is gone, also
         * from the session in the cache; the client side keeps the server's chain */
        CHECK(SSL_get0_peer_certificate(s) != NULL);
        CHECK_INT_EQ(sk_X509_num(SSL_get_peer_cert_chain(s)), 0);
        CHECK_INT_EQ(SSL_session_reused(s), round);
        struct meshtls_identity *id = NULL;
        CHECK_INT_EQ(meshtls_tls_peer_identity(s, &id, &err), 0);
        CHECK(id && id->spiffe_id && !strcmp(id->spiffe_id, "spiffe://test.local/svc/client"));
        meshtls_identity_free(id);
        if (round == 0) {
            CHECK_INT_EQ(sk_X509_num(SSL_get_peer_cert_chain(c)), 2);
            CHECK_INT_EQ((int)meshtls_session_cache_size(cache), 1);
            resume = SSL_get1_session(c);
        }
        /* OpenSSL marks the session of an SSL freed without close_notify not resumable */
        SSL_shutdown(c);
        SSL_shutdown(s);
        SSL_free(c);
        SSL_free(s);
    }
    SSL_SESSION_free(resume);
out:
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    meshtls_session_cache_free(cache);
    rm_pki(dir);
    ERR_clear_error();
}

/* One handshake of a client from `cdir` against a server from `sdir` (BIO pair).
 * @return 1 if it completed; *legacy_key is 1 if the server holds the client's key
 * as a non-provider (legacy) EVP_PKEY. */
static int handshake_dirs(const char *sdir, const char *cdir, int *legacy_key)
{
    char crt[600], key[600], ca[600], ccrt[600], ckey[600];
    snprintf(crt, sizeof(crt), "%s/server.crt", sdir);
    snprintf(key, sizeof(key), "%s/server.key", sdir);
    snprintf(ca, sizeof(ca), "%s/ca.crt", sdir);
    snprintf(ccrt, sizeof(ccrt), "%s/client.crt", cdir);
    snprintf(ckey, sizeof(ckey), "%s/client.key", cdir);
    struct meshtls_tls_opts so = {.cert_file = crt, .key_file = key, .ca_file = ca};
    struct meshtls_tls_opts co = {
        .cert_file = ccrt, .key_file = ckey, .ca_file = ca, .server_name = "localhost"};
    SSL_CTX *sctx = NULL, *cctx = NULL;
    SSL *c = NULL, *s = NULL;
    int ok = 0;
    if (meshtls_tls_server_ctx_new(&so, &sctx, NULL) == 0 &&
        meshtls_tls_client_ctx_new(&co, &cctx, NULL) == 0 && (s = SSL_new(sctx)) &&
        meshtls_tls_client_ssl_new(cctx, &c, NULL) == 0) {
        pair(c, s);
        ok = pump(c, s);
        X509 *peer = SSL_get0_peer_certificate(s);
        *legacy_key = peer && X509_get0_pubkey(peer) &&
                      EVP_PKEY_get0_provider(X509_get0_pubkey(peer)) == NULL;
    }
    SSL_free(c);
    SSL_free(s);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    ERR_clear_error();
    return ok;
}

/* Last: it changes how the whole process decodes EC keys. */
TEST(legacy_ec_path_verifies_and_refuses_like_the_provider_path)
{
    char a[] = "/tmp/meshtls-tls-test-XXXXXX", b[] = "/tmp/meshtls-tls-test-XXXXXX";
    CHECK(make_chain_pki(a) && make_chain_pki(b));
    int legacy = -1;
    CHECK(handshake_dirs(a, a, &legacy));
    CHECK_INT_EQ(legacy, 0);               /* OpenSSL 3.0's default: provider keys */
    CHECK(!handshake_dirs(a, b, &legacy)); /* a client of another CA */

    struct meshtls_err err = MESHTLS_ERR_INIT;
    CHECK_INT_EQ(meshtls_tls_legacy_ec_active(), 0);
    CHECK_INT_EQ(meshtls_tls_use_legacy_ec(&err), 0);
    CHECK_INT_EQ(meshtls_tls_use_legacy_ec(&err), 0); /* idempotent */
    CHECK_INT_EQ(meshtls_tls_legacy_ec_active(), 1);
    CHECK(handshake_dirs(a, a, &legacy));
    CHECK_INT_EQ(legacy, 1);               /* the client's key went through the built-in EC code */
    CHECK(!handshake_dirs(a, b, &legacy)); /* still refused */
    CHECK(!handshake_dirs(b, a, &legacy));
    CHECK(handshake_dirs(b, b, &legacy));
    rm_pki(a);
    rm_pki(b);
}

int main(void)
{
    RUN(dev_mode_mutual_handshake);
    RUN(server_refuses_client_without_certificate);
    RUN(clients_of_different_dev_cas_fail);
    RUN(options_fail_closed);
    RUN(session_cache_keeps_the_leaf_and_frees_the_intermediates);
    RUN(legacy_ec_path_verifies_and_refuses_like_the_provider_path);
    return check_summary();
}
