/*
 * test_tls_race.c - client contexts built concurrently still check the
 * server's SPIFFE ID.  The SSL_CTX ex_data index holding a client's
 * expectations used to be created lazily without synchronisation: threads
 * building their first client contexts together could get different indexes,
 * and a context whose expectations sat under the "wrong" index accepted any
 * server its CA had signed.  This binary is its own fresh process, so the
 * threads below really build the process's first client contexts.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>

#include "check.h"
#include "meshtls/tls.h"
#include "x509gen.h"

#define NTHREADS 16
#define WANT_ID "spiffe://test.local/svc/server"

static char dir[] = "/tmp/meshtls-tls-race-XXXXXX";

/* Write `pem` (then `pem2`, if any) to DIR/name, mode 0600.  @return 1 on success. */
static int put(const char *name, const char *pem, const char *pem2)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        return 0;
    fputs(pem, f);
    if (pem2)
        fputs(pem2, f);
    fclose(f);
    return chmod(path, 0600) == 0;
}

/* A leaf `name` (DNS localhost, URI SAN `uri`) under `ca`: DIR/name.crt and DIR/name.key. */
static int make_leaf(const char *name, const char *uri, X509 *ca, EVP_PKEY *cakey)
{
    const char *dns[] = {"localhost"};
    struct mt_cert_spec spec = {.cn = name,
                                .days = 1,
                                .dns = dns,
                                .n_dns = 1,
                                .uri = uri,
                                .eku_server = 1,
                                .eku_client = 1};
    EVP_PKEY *key = NULL;
    X509 *leaf = NULL;
    char *cpem = NULL, *kpem = NULL, file[64];
    size_t n = 0;
    int ok = mt_key_generate(MT_KEY_EC_P256, &key, NULL) == 0 &&
             mt_cert_sign(&spec, key, ca, cakey, &leaf, NULL) == 0 &&
             mt_cert_to_pem(leaf, &cpem, &n, NULL) == 0 && mt_key_to_pem(key, &kpem, &n, NULL) == 0;
    snprintf(file, sizeof(file), "%s.crt", name);
    ok = ok && put(file, cpem, NULL);
    snprintf(file, sizeof(file), "%s.key", name);
    ok = ok && put(file, kpem, NULL);
    free(cpem);
    free(kpem);
    X509_free(leaf);
    EVP_PKEY_free(key);
    return ok;
}

/* One CA; leaves "server" (the expected ID), "other" (same CA, another ID) and "client". */
static int make_pki(void)
{
    struct mt_cert_spec cs = {.cn = "race test CA", .is_ca = 1, .pathlen = 0, .days = 2};
    EVP_PKEY *ck = NULL;
    X509 *ca = NULL;
    char *pem = NULL;
    size_t n = 0;
    int ok = mkdtemp(dir) != NULL && mt_key_generate(MT_KEY_EC_P256, &ck, NULL) == 0 &&
             mt_cert_sign(&cs, ck, NULL, ck, &ca, NULL) == 0 &&
             mt_cert_to_pem(ca, &pem, &n, NULL) == 0 && put("ca.crt", pem, NULL) &&
             make_leaf("server", WANT_ID, ca, ck) &&
             make_leaf("other", "spiffe://test.local/svc/other", ca, ck) &&
             make_leaf("client", "spiffe://test.local/svc/client", ca, ck);
    free(pem);
    X509_free(ca);
    EVP_PKEY_free(ck);
    return ok;
}

static void rm_pki(void)
{
    const char *names[] = {"ca.crt",    "server.crt", "server.key", "other.crt",
                           "other.key", "client.crt", "client.key"};
    char path[512];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* A server context presenting DIR/name.crt.  @return it, or NULL. */
static SSL_CTX *server_ctx(const char *name)
{
    char crt[600], key[600], ca[600];
    snprintf(crt, sizeof(crt), "%s/%s.crt", dir, name);
    snprintf(key, sizeof(key), "%s/%s.key", dir, name);
    snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
    struct meshtls_tls_opts o = {.cert_file = crt, .key_file = key, .ca_file = ca};
    SSL_CTX *ctx = NULL;
    return meshtls_tls_server_ctx_new(&o, &ctx, NULL) == 0 ? ctx : NULL;
}

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

/* One in-memory handshake of `cctx` against `sctx`.  @return 1 if it completed; the client's
 * verify result in *verify and meshtls_tls_verify_failure's text in why[cap]. */
static int handshake(SSL_CTX *cctx, SSL_CTX *sctx, long *verify, char *why, size_t cap)
{
    SSL *c = NULL, *s = SSL_new(sctx);
    BIO *cb = NULL, *sb = NULL;
    int ok = 0;
    if (s && meshtls_tls_client_ssl_new(cctx, &c, NULL) == 0 &&
        BIO_new_bio_pair(&cb, 0, &sb, 0) == 1) {
        SSL_set_bio(c, cb, cb);
        SSL_set_bio(s, sb, sb);
        ok = pump(c, s);
        *verify = SSL_get_verify_result(c);
        meshtls_tls_verify_failure(c, why, cap);
    }
    SSL_free(c);
    SSL_free(s);
    ERR_clear_error();
    return ok;
}

struct racer {
    pthread_t tid;
    pthread_barrier_t *go;
    SSL_CTX *ctx; /* owned; NULL if building failed */
    int rc;
    char msg[MESHTLS_ERR_MSG_MAX];
};

/* Thread body: wait for the others, then build this process's first client context. */
static void *race(void *arg)
{
    struct racer *r = arg;
    char crt[600], key[600], ca[600];
    snprintf(crt, sizeof(crt), "%s/client.crt", dir);
    snprintf(key, sizeof(key), "%s/client.key", dir);
    snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
    struct meshtls_tls_opts o = {
        .cert_file = crt, .key_file = key, .ca_file = ca, .verify_spiffe_id = WANT_ID};
    struct meshtls_err err = MESHTLS_ERR_INIT;
    pthread_barrier_wait(r->go);
    r->rc = meshtls_tls_client_ctx_new(&o, &r->ctx, &err);
    snprintf(r->msg, sizeof(r->msg), "%s", err.msg);
    return NULL;
}

static struct racer racers[NTHREADS];
static SSL_CTX *good_srv, *other_srv;

TEST(concurrent_first_client_contexts_all_check_the_spiffe_id)
{
    pthread_barrier_t go;
    int started = 0;
    CHECK_INT_EQ(pthread_barrier_init(&go, NULL, NTHREADS), 0);
    for (int i = 0; i < NTHREADS; i++) {
        racers[i].go = &go;
        if (pthread_create(&racers[i].tid, NULL, race, &racers[i]) != 0)
            break;
        started++;
    }
    CHECK_INT_EQ(started, NTHREADS);
    if (started != NTHREADS) {
        /* the barrier would never open; give up the whole binary */
        fprintf(stderr, "cannot start %d threads\n", NTHREADS);
        exit(1);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(racers[i].tid, NULL);
    pthread_barrier_destroy(&go);

    good_srv = server_ctx("server");
    other_srv = server_ctx("other");
    CHECK(good_srv && other_srv);
    if (!good_srv || !other_srv)
        return;
    for (int i = 0; i < NTHREADS; i++) {
        struct racer *r = &racers[i];
        CHECK_INT_EQ(r->rc, 0);
        if (r->rc != 0) {
            fprintf(stderr, "thread %d: %s\n", i, r->msg);
            continue;
        }
        long v = -1;
        char why[256];
        CHECK(!handshake(r->ctx, other_srv, &v, why, sizeof(why)));
        CHECK_INT_EQ(v, X509_V_ERR_APPLICATION_VERIFICATION);
        CHECK(strstr(why, WANT_ID) != NULL);
        CHECK(handshake(r->ctx, good_srv, &v, why, sizeof(why)));
        CHECK_INT_EQ(v, X509_V_OK);
    }
}

/*
 * White box: detach the expectations from a client context (they sit in the
 * only ex_data slot a meshtls client context uses; slot 0 is OpenSSL's
 * app_data) and the verify callback must refuse even the right server.
 */
TEST(client_context_without_expectations_fails_closed)
{
    SSL_CTX *cctx = racers[0].ctx;
    CHECK(cctx && good_srv);
    if (!cctx || !good_srv)
        return;
    int slot = -1, used = 0;
    for (int i = 0; i < 64; i++)
        if (SSL_CTX_get_ex_data(cctx, i) != NULL)
            slot = i, used++;
    CHECK_INT_EQ(used, 1);
    if (used != 1)
        return;
    void *expect = SSL_CTX_get_ex_data(cctx, slot);
    CHECK_INT_EQ(SSL_CTX_set_ex_data(cctx, slot, NULL), 1);
    long v = -1;
    char why[256];
    CHECK(!handshake(cctx, good_srv, &v, why, sizeof(why)));
    CHECK_INT_EQ(v, X509_V_ERR_APPLICATION_VERIFICATION);
    CHECK(strstr(why, "no expectations") != NULL);
    /* put them back: the context owns and frees them */
    CHECK_INT_EQ(SSL_CTX_set_ex_data(cctx, slot, expect), 1);
    CHECK(handshake(cctx, good_srv, &v, why, sizeof(why)));
}

int main(void)
{
    if (!make_pki()) {
        fprintf(stderr, "cannot make the test PKI in %s\n", dir);
        return 1;
    }
    RUN(concurrent_first_client_contexts_all_check_the_spiffe_id);
    RUN(client_context_without_expectations_fails_closed);
    for (int i = 0; i < NTHREADS; i++)
        SSL_CTX_free(racers[i].ctx);
    SSL_CTX_free(good_srv);
    SSL_CTX_free(other_srv);
    rm_pki();
    return check_summary();
}
