/*
 * test_tls.c - TLS contexts in memory: a development-mode server and client
 * joined by a BIO pair complete a TLS 1.3 mutual handshake and see each
 * other's identities; option validation fails closed with named errors.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "check.h"
#include "meshtls/tls.h"

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
    CHECK_INT_EQ(meshtls_tls_server_ctx_new(&o, &ctx, &err), MESHTLS_EINVAL);
    CHECK(strstr(err.msg, "certificate") != NULL);
    o.cert_file = "tests/data/identity_spiffe.pem";
    o.key_file = "tests/data/missing.key";
    CHECK_INT_EQ(meshtls_tls_server_ctx_new(&o, &ctx, &err), MESHTLS_EINVAL);
    CHECK(strstr(err.msg, "CA bundle") != NULL);
    o.ca_file = "tests/data/identity_ca.pem";
    CHECK_INT_EQ(meshtls_tls_server_ctx_new(&o, &ctx, &err), MESHTLS_ENOENT);
    CHECK(strstr(err.msg, "tests/data/missing.key") != NULL);
    /* a client must say whom it expects */
    CHECK_INT_EQ(meshtls_tls_client_ctx_new(&o, &ctx, &err), MESHTLS_EINVAL);
    CHECK(strstr(err.msg, "server name") != NULL);
    o.verify_spiffe_id = "spiffe://Bad/x";
    CHECK_INT_EQ(meshtls_tls_client_ctx_new(&o, &ctx, &err), MESHTLS_EINVAL);
    CHECK(ctx == NULL);
}

int main(void)
{
    RUN(dev_mode_mutual_handshake);
    RUN(server_refuses_client_without_certificate);
    RUN(clients_of_different_dev_cas_fail);
    RUN(options_fail_closed);
    return check_summary();
}
