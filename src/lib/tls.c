/*
 * tls.c - mTLS server and client SSL_CTXs.
 *
 * Files are read and checked first (permissions, key/cert match, expiry),
 * each failure naming the file; then one builder turns the in-memory
 * objects into a context, so file-based and development contexts share
 * every TLS setting.  The expectations a client checks on the server
 * (host name, SPIFFE ID, trust domain) hang off the SSL_CTX as ex_data and
 * die with it.
 */
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "meshtls/log.h"
#include "meshtls/tls.h"
#include "meshtls/x509.h"
#include "session_cache.h"
#include "verify_cache.h"
#include "x509gen.h"

/* TLS 1.3 suites: AES-GCM first (AES-NI), ChaCha20 for machines without it. */
static const char TLS13_SUITES[] =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
/* TLS 1.2 (opt-in): forward-secret AEAD suites only. */
static const char TLS12_CIPHERS[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                                    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
static const char GROUPS[] = "X25519:P-256:P-384";
static const unsigned char SID_CTX[] = "meshtls";

/* What a client expects of the server; owned by the SSL_CTX (ex_data). */
struct client_expect {
    char *server_name;  /* DNS name or IP, also sent as SNI (if a name) */
    char *spiffe_id;    /* exact SPIFFE ID, or NULL */
    char *trust_domain; /* trust domain of the SPIFFE ID, or NULL */
};

static void expect_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    struct client_expect *e = ptr;
    if (!e)
        return;
    free(e->server_name);
    free(e->spiffe_id);
    free(e->trust_domain);
    free(e);
}

/* What a server context needs for stateful resumption; owned by the SSL_CTX. */
struct server_info {
    unsigned char trust[32];             /* SHA-256 over the CA bundle, CRLs and flags */
    struct meshtls_session_cache *cache; /* one reference, or NULL */
    struct meshtls_verify_cache *vcache; /* one reference, or NULL */
    int64_t crl_expires;                 /* earliest CRL nextUpdate (0: no CRL) */
    int profile;                         /* enum meshtls_tls_profile */
};

static void server_info_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                             void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    struct server_info *si = ptr;
    if (si) {
        meshtls_session_cache_free(si->cache);
        meshtls_verify_cache_free(si->vcache);
        free(si);
    }
}

/*
 * The SSL_CTX ex_data indexes.  File-scope because OpenSSL hands out indexes
 * per process; they are written once, inside CRYPTO_THREAD_run_once, and only
 * read afterwards (run_once orders the writes before every later read).
 * Creating them lazily without that let two threads building their first
 * client contexts at once get different indexes: a context then looked up
 * its expectations under the other index, found none, and accepted any server
 * the CA had signed.
 */
static CRYPTO_ONCE ex_once = CRYPTO_ONCE_STATIC_INIT;
static int expect_idx = -1;
static int server_idx = -1;
static int rejected_idx = -1;  /* SSL ex_data: the leaf a failed verification refused */
static int violation_idx = -1; /* SSL ex_data: the RFC 5280 rule the peer's chain broke */

static void rejected_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                          void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    X509_free(ptr);
}

static void violation_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                           void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    free(ptr);
}

static void ex_indexes_init(void)
{
    expect_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, expect_free);
    server_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, server_info_free);
    rejected_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, rejected_free);
    violation_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, violation_free);
}

/* @return 1 once the ex_data indexes exist (created on the first call), 0 if they cannot be. */
static int ex_indexes_ready(void)
{
    return CRYPTO_THREAD_run_once(&ex_once, ex_indexes_init) && expect_idx >= 0 &&
           server_idx >= 0 && rejected_idx >= 0 && violation_idx >= 0;
}

/*
 * Server side: remember the leaf the client presented when its verification fails.
 * OpenSSL stores the peer certificate in the session only after the chain verified,
 * so without this a refused handshake could not say whose certificate it was.  Called
 * for every certificate of the chain; on success it returns at once.
 */
static void keep_rejected(X509_STORE_CTX *sctx)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    X509 *leaf = X509_STORE_CTX_get0_cert(sctx);
    if (ssl && leaf && rejected_idx >= 0 && !SSL_get_ex_data(ssl, rejected_idx) &&
        X509_up_ref(leaf) == 1 && SSL_set_ex_data(ssl, rejected_idx, leaf) != 1)
        X509_free(leaf);
}

/*
 * A CRL past its nextUpdate.  OpenSSL's answer is to refuse every peer (what nginx does:
 * a whole fleet locked out when one CRL publication is late).  Failing open for revoked
 * certificates is not acceptable either.  We keep enforcing the last CRL we have: a
 * certificate it lists stays refused (OpenSSL goes on to the revocation check when this
 * callback accepts the expiry), any other is accepted, and the staleness is loud elsewhere
 * (the proxy's meshtls_crl_stale gauge and its warnings; `meshtls cert check`).
 */
static int crl_expiry_tolerated(int ok, X509_STORE_CTX *sctx)
{
    return !ok && X509_STORE_CTX_get_error(sctx) == X509_V_ERR_CRL_HAS_EXPIRED;
}

static int server_verify_cb(int ok, X509_STORE_CTX *sctx)
{
    if (crl_expiry_tolerated(ok, sctx))
        return 1;
    if (!ok)
        keep_rejected(sctx);
    return ok;
}

X509 *meshtls_tls_presented_cert(SSL *ssl)
{
    X509 *peer = SSL_get0_peer_certificate(ssl);
    if (peer)
        return peer;
    return ex_indexes_ready() ? SSL_get_ex_data(ssl, rejected_idx) : NULL;
}

const struct meshtls_x509_violation *meshtls_tls_profile_violation(SSL *ssl)
{
    return ssl && ex_indexes_ready() ? SSL_get_ex_data(ssl, violation_idx) : NULL;
}

/*
 * RFC 5280's profile over the chain OpenSSL has just verified in `sctx` (the trust anchor,
 * last, is the operator's choice and is not checked).  @return 1 if it passes; 0 if it
 * breaks a rule: the store context then reports X509_V_ERR_CERT_REJECTED at the offending
 * certificate (libssl sends the bad_certificate alert for it), and the rule is kept on the
 * SSL (meshtls_tls_profile_violation) with the leaf (meshtls_tls_presented_cert) for the
 * log line that names both.
 */
static int profile_passes(X509_STORE_CTX *sctx)
{
    struct meshtls_x509_violation v;
    STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(sctx);
    if (meshtls_x509_profile_check(chain, 1, &v) == 0)
        return 1;
    SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct meshtls_x509_violation *kept = ssl ? malloc(sizeof(*kept)) : NULL;
    if (kept) {
        *kept = v;
        if (!ex_indexes_ready() || SSL_get_ex_data(ssl, violation_idx) ||
            SSL_set_ex_data(ssl, violation_idx, kept) != 1)
            free(kept); /* refused all the same; only the log loses the rule */
    }
    keep_rejected(sctx);
    X509_STORE_CTX_set_error(sctx, X509_V_ERR_CERT_REJECTED);
    X509_STORE_CTX_set_error_depth(sctx, v.depth);
    X509_STORE_CTX_set_current_cert(sctx, sk_X509_value(chain, v.depth));
    return 0;
}

/* Client contexts with the profile on: OpenSSL's verification (client_verify_cb included),
 * then the profile. */
static int profile_verify_cb(X509_STORE_CTX *sctx, void *arg)
{
    (void)arg;
    int rc = X509_verify_cert(sctx);
    return rc == 1 && !profile_passes(sctx) ? 0 : rc;
}

/* Like ex_indexes_ready(), for context builders.  @return 0, or MESHTLS_ENOMEM (with `err`). */
static int ex_indexes(struct meshtls_err *err)
{
    return ex_indexes_ready() ? 0
                              : meshtls_err_set_ssl(err, MESHTLS_ENOMEM,
                                                    "cannot create the OpenSSL SSL_CTX ex_data "
                                                    "indexes");
}

/* The client's expectations attached to `ctx` (borrowed), or NULL. */
static struct client_expect *expect_of(const SSL_CTX *ctx)
{
    return ctx && ex_indexes_ready() ? SSL_CTX_get_ex_data(ctx, expect_idx) : NULL;
}

static struct server_info *server_info_of(SSL_CTX *ctx)
{
    return ex_indexes_ready() ? SSL_CTX_get_ex_data(ctx, server_idx) : NULL;
}

static int sess_new_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct server_info *si = server_info_of(SSL_get_SSL_CTX(ssl));
    if (!si || !si->cache)
        return 0;
    /* Verification is over and resumption needs only the leaf: free the client's decoded
     * intermediates (~5 KB per connection and per cache entry).  `sess` is still this
     * connection's own session here, seen by no other thread until the cache holds it.
     * Server side, the peer chain holds no leaf. */
    STACK_OF(X509) *chain = SSL_get_session(ssl) == sess ? SSL_get_peer_cert_chain(ssl) : NULL;
    X509 *x;
    while (chain && (x = sk_X509_pop(chain)) != NULL)
        X509_free(x);
    return mt_session_cache_add(si->cache, sess, si->trust);
}

static SSL_SESSION *sess_get_cb(SSL *ssl, const unsigned char *id, int len, int *copy)
{
    struct server_info *si = server_info_of(SSL_get_SSL_CTX(ssl));
    *copy = 0; /* the cache hands us a reference of our own */
    return si && si->cache && len > 0
               ? mt_session_cache_get(si->cache, id, (unsigned)len, si->trust)
               : NULL;
}

static void sess_remove_cb(SSL_CTX *ctx, SSL_SESSION *sess)
{
    struct server_info *si = server_info_of(ctx);
    if (si && si->cache)
        mt_session_cache_remove(si->cache, sess);
}

/* Digest of everything that decides trust: the anchors and the CRLs. */
static int trust_digest(STACK_OF(X509) * anchors, STACK_OF(X509_CRL) * crls, int flags,
                        unsigned char out[32])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char f = (unsigned char)flags;
    int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) && EVP_DigestUpdate(md, &f, 1);
    for (int i = 0; ok && i < sk_X509_num(anchors); i++) {
        unsigned char *der = NULL;
        int n = i2d_X509(sk_X509_value(anchors, i), &der);
        ok = n > 0 && EVP_DigestUpdate(md, der, (size_t)n);
        OPENSSL_free(der);
    }
    for (int i = 0; ok && crls && i < sk_X509_CRL_num(crls); i++) {
        unsigned char *der = NULL;
        int n = i2d_X509_CRL(sk_X509_CRL_value(crls, i), &der);
        ok = n > 0 && EVP_DigestUpdate(md, "crl", 3) && EVP_DigestUpdate(md, der, (size_t)n);
        OPENSSL_free(der);
    }
    unsigned int len = 0;
    ok = ok && EVP_DigestFinal_ex(md, out, &len) && len == 32;
    EVP_MD_CTX_free(md);
    return ok ? 0 : -1;
}

static int64_t asn1_unix(const ASN1_TIME *t)
{
    struct tm tm;
    return t && ASN1_TIME_to_tm(t, &tm) == 1 ? (int64_t)timegm(&tm) : 0;
}

/*
 * Server-side chain verification: through the verified-chain cache when there is one, then
 * the RFC 5280 profile when it is on.  The cache key is the trust digest (which covers the
 * profile setting) plus the DER of every certificate the client sent, in order.  A hit
 * within the entry's validity skips X509_verify_cert() and the profile: only chains that
 * passed both are ever added.
 */
static int server_cert_verify_cb(X509_STORE_CTX *sctx, void *arg)
{
    struct server_info *si = arg;
    unsigned char key[32];
    unsigned int klen = 0;
    int64_t now = (int64_t)time(NULL);
    int ok = 0;
    if (si->vcache) {
        X509 *leaf = X509_STORE_CTX_get0_cert(sctx);
        STACK_OF(X509) *untrusted = X509_STORE_CTX_get0_untrusted(sctx);
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        ok = md && leaf && EVP_DigestInit_ex(md, EVP_sha256(), NULL) &&
             EVP_DigestUpdate(md, si->trust, 32);
        for (int i = -1; ok && i < (untrusted ? sk_X509_num(untrusted) : 0); i++) {
            X509 *x = i < 0 ? leaf : sk_X509_value(untrusted, i);
            if (i >= 0 && x == leaf)
                continue; /* libssl passes the whole peer chain, leaf first: hash it once */
            unsigned char *der = NULL;
            int n = i2d_X509(x, &der);
            ok = n > 0 && EVP_DigestUpdate(md, der, (size_t)n);
            OPENSSL_free(der);
        }
        ok = ok && EVP_DigestFinal_ex(md, key, &klen) && klen == 32;
        EVP_MD_CTX_free(md);
        if (ok && mt_verify_cache_hit(si->vcache, key, now)) {
            X509_STORE_CTX_set_error(sctx, X509_V_OK);
            return 1;
        }
    }
    int rc = X509_verify_cert(sctx);
    if (rc == 1 && si->profile == MESHTLS_TLS_PROFILE_RFC5280 && !profile_passes(sctx))
        return 0; /* never cached: the next connection with this chain is refused again */
    if (rc == 1 && ok) {
        STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(sctx);
        int64_t nb = 0, exp = si->crl_expires ? si->crl_expires : INT64_MAX;
        for (int i = 0; chain && i < sk_X509_num(chain); i++) {
            X509 *x = sk_X509_value(chain, i);
            int64_t b = asn1_unix(X509_get0_notBefore(x)), a = asn1_unix(X509_get0_notAfter(x));
            nb = b > nb ? b : nb;
            exp = a < exp ? a : exp;
        }
        if (exp > now)
            mt_verify_cache_add(si->vcache, key, nb, exp);
    }
    return rc;
}

/* Our own identity, as loaded objects.  Borrowed by build_ctx(). */
struct material {
    X509 *leaf;
    STACK_OF(X509) * chain; /* intermediates, may be NULL */
    EVP_PKEY *key;
    STACK_OF(X509) * anchors;  /* trusted CAs */
    STACK_OF(X509_CRL) * crls; /* may be NULL */
};

/* Build a context for `server` (1) or client (0) from `m`. */
static int build_ctx(int server, const struct meshtls_tls_opts *o, const struct material *m,
                     SSL_CTX **out, struct meshtls_err *err)
{
    int rc;
    SSL_CTX *ctx = NULL;

    ERR_clear_error();
    ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!ctx)
        return meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot create a TLS context");

    int min = o->min_version == MESHTLS_TLS_MIN_1_2 ? TLS1_2_VERSION : TLS1_3_VERSION;
    SSL_CTX_set_min_proto_version(ctx, min);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (!SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES) ||
        !SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) || !SSL_CTX_set1_groups_list(ctx, GROUPS)) {
        rc = meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot set TLS ciphers");
        goto out;
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);

    /* Our certificate chain and key. */
    if (SSL_CTX_use_certificate(ctx, m->leaf) != 1 || SSL_CTX_use_PrivateKey(ctx, m->key) != 1) {
        rc = meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot use certificate %s",
                                 o->cert_file ? o->cert_file : "(in memory)");
        goto out;
    }
    for (int i = 0; m->chain && i < sk_X509_num(m->chain); i++)
        if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(m->chain, i)) != 1) {
            rc = meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot add chain certificate");
            goto out;
        }

    /* Trust: the bundle (several CAs allowed, for CA rotation), CRLs. */
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    for (int i = 0; i < sk_X509_num(m->anchors); i++) {
        X509 *ca = sk_X509_value(m->anchors, i);
        if (X509_STORE_add_cert(store, ca) != 1 ||
            (server && SSL_CTX_add_client_CA(ctx, ca) != 1)) {
            rc = meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot add CA certificate from %s",
                                     o->ca_file ? o->ca_file : "(in memory)");
            goto out;
        }
    }
    if (m->crls) {
        for (int i = 0; i < sk_X509_CRL_num(m->crls); i++)
            if (X509_STORE_add_crl(store, sk_X509_CRL_value(m->crls, i)) != 1) {
                rc = meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot add CRL from %s", o->crl_file);
                goto out;
            }
        /* Whole chain: a revoked intermediate is as bad as a revoked leaf. */
        X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    }
    X509_STORE_set_purpose(store, server ? X509_PURPOSE_SSL_CLIENT : X509_PURPOSE_SSL_SERVER);
    if (o->partial_chain)
        X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN);
    SSL_CTX_set_verify_depth(ctx, o->verify_depth > 0 ? o->verify_depth : 4);

    if (server) {
        int mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        if (o->insecure_no_client_cert) {
            mode = SSL_VERIFY_NONE;
            meshtls_log(MESHTLS_LOG_WARN, "TLS server: client certificates are NOT required "
                                          "(insecure-no-client-cert): this is not mutual TLS");
        }
        if ((rc = ex_indexes(err)) != 0)
            goto out;
        SSL_CTX_set_verify(ctx, mode, server_verify_cb);
        SSL_CTX_set_session_id_context(ctx, SID_CTX, sizeof(SID_CTX) - 1);
        int profile = o->verify_profile == MESHTLS_TLS_PROFILE_RFC5280;
        if (o->session_cache || o->verify_cache || profile) {
            /* State shared across contexts (so a reload keeps it), stamped with the trust
             * it was built under. */
            if ((rc = ex_indexes(err)) != 0)
                goto out;
            struct server_info *si = calloc(1, sizeof(*si));
            /* the profile is part of the trust: a chain verified without it is not
             * remembered (or resumed) as verified with it */
            if (!si ||
                trust_digest(m->anchors, m->crls, (o->partial_chain ? 1 : 0) | (profile ? 2 : 0),
                             si->trust) != 0 ||
                !SSL_CTX_set_ex_data(ctx, server_idx, si)) {
                free(si);
                rc = meshtls_err_set(err, MESHTLS_ENOMEM, "cannot set up the TLS caches");
                goto out;
            }
            for (int i = 0; m->crls && i < sk_X509_CRL_num(m->crls); i++) {
                int64_t nu = asn1_unix(X509_CRL_get0_nextUpdate(sk_X509_CRL_value(m->crls, i)));
                if (nu && (!si->crl_expires || nu < si->crl_expires))
                    si->crl_expires = nu;
            }
            if (o->session_cache) {
                /* Stateful resumption: TLS 1.3 "tickets" become session IDs looked up in
                 * the shared cache, which outlives this context. */
                mt_session_cache_up_ref(o->session_cache);
                si->cache = o->session_cache;
                SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
                SSL_CTX_set_session_cache_mode(ctx,
                                               SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL);
                SSL_CTX_sess_set_new_cb(ctx, sess_new_cb);
                SSL_CTX_sess_set_get_cb(ctx, sess_get_cb);
                SSL_CTX_sess_set_remove_cb(ctx, sess_remove_cb);
            }
            si->profile = o->verify_profile;
            if (o->verify_cache) {
                mt_verify_cache_up_ref(o->verify_cache);
                si->vcache = o->verify_cache;
                mt_verify_cache_attach(o->verify_cache, si->trust);
            }
            if (o->verify_cache || profile)
                SSL_CTX_set_cert_verify_callback(ctx, server_cert_verify_cb, si);
        }
        if (o->num_tickets < 0)
            SSL_CTX_set_num_tickets(ctx, 0);
        else if (o->num_tickets > 0)
            SSL_CTX_set_num_tickets(ctx, (size_t)o->num_tickets);
        else if (o->session_cache)
            SSL_CTX_set_num_tickets(ctx, 1);
    }
    *out = ctx;
    ctx = NULL;
    rc = 0;
out:
    SSL_CTX_free(ctx);
    return rc;
}

static void material_free(struct material *m)
{
    X509_free(m->leaf);
    sk_X509_pop_free(m->chain, X509_free);
    EVP_PKEY_free(m->key);
    sk_X509_pop_free(m->anchors, X509_free);
    sk_X509_CRL_pop_free(m->crls, X509_CRL_free);
    memset(m, 0, sizeof(*m));
}

/* Read and check the files named in `o` into `m`. */
static int load_material(const char *role, const struct meshtls_tls_opts *o, struct material *m,
                         struct meshtls_err *err)
{
    int rc;
    STACK_OF(X509) *certs = NULL;

    if (!o->cert_file || !*o->cert_file)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "TLS %s: no certificate file given "
                               "(cert_file)",
                               role);
    if (!o->key_file || !*o->key_file)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "TLS %s: no private key file given "
                               "(key_file)",
                               role);
    if (!o->ca_file || !*o->ca_file)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "TLS %s: no CA bundle given "
                               "(ca_file): mutual TLS needs one to verify peers",
                               role);

    if ((rc = meshtls_pem_read_certs(o->cert_file, &certs, err)) != 0)
        goto out;
    m->leaf = sk_X509_shift(certs);
    m->chain = certs;
    certs = NULL;
    if ((rc = meshtls_pem_read_key(o->key_file, &m->key, err)) != 0)
        goto out;
    if ((rc = meshtls_key_matches_cert(m->key, m->leaf, o->cert_file, err)) != 0) {
        meshtls_err_set(err, rc,
                        "the private key %s does not match the certificate %s; use the "
                        "key issued with this certificate",
                        o->key_file, o->cert_file);
        goto out;
    }
    int warn = o->expiry_warn_days > 0 ? o->expiry_warn_days : 30, days = 0;
    struct meshtls_err e2 = MESHTLS_ERR_INIT;
    rc = meshtls_cert_check_expiry(m->leaf, o->cert_file, warn, 0, &days, &e2);
    if (rc == MESHTLS_EEXPIRING) {
        meshtls_log(MESHTLS_LOG_WARN, "%s", e2.msg);
        rc = 0;
    } else if (rc != 0) {
        meshtls_err_set(err, rc, "%s", e2.msg);
        goto out;
    }
    if ((rc = meshtls_pem_read_certs(o->ca_file, &m->anchors, err)) != 0)
        goto out;
    if (o->crl_file && *o->crl_file &&
        (rc = meshtls_pem_read_crls(o->crl_file, &m->crls, err)) != 0)
        goto out;
    /* The CRLs are ours to load, not a peer's to send: one that breaks the profile fails
     * the build (a reload keeps the old context) rather than each handshake. */
    for (int i = 0; o->verify_profile == MESHTLS_TLS_PROFILE_RFC5280 && m->crls &&
                    i < sk_X509_CRL_num(m->crls);
         i++) {
        struct meshtls_x509_violation v;
        char what[300];
        snprintf(what, sizeof(what), "CRL %d of %.250s", i + 1, o->crl_file);
        if ((rc = meshtls_x509_profile_check_crl(sk_X509_CRL_value(m->crls, i), what, &v)) != 0) {
            meshtls_err_set(err, rc, "%s (or turn the RFC 5280 profile check off)", v.msg);
            goto out;
        }
    }
    rc = 0;
out:
    sk_X509_pop_free(certs, X509_free);
    if (rc)
        material_free(m);
    return rc;
}

int meshtls_tls_server_ctx_new(const struct meshtls_tls_opts *opts, SSL_CTX **out,
                               struct meshtls_err *err)
{
    struct material m = {0};
    int rc = load_material("server", opts, &m, err);
    if (rc == 0)
        rc = build_ctx(1, opts, &m, out, err);
    material_free(&m);
    return rc;
}

/* Attach the client's expectations of the server to `ctx` (which then owns them); every
 * client context meshtls builds gets one, even with only a server name, since
 * client_verify_cb refuses a context without. */
static int set_expect(SSL_CTX *ctx, const char *name, const char *spiffe, const char *td,
                      struct meshtls_err *err)
{
    int rc = ex_indexes(err);
    if (rc != 0)
        return rc;
    int idx = expect_idx;
    struct client_expect *e = calloc(1, sizeof(*e));
    if (!e)
        goto nomem;
    if ((name && !(e->server_name = strdup(name))) ||
        (spiffe && !(e->spiffe_id = strdup(spiffe))) || (td && !(e->trust_domain = strdup(td))))
        goto nomem;
    if (!SSL_CTX_set_ex_data(ctx, idx, e))
        goto nomem;
    return 0;
nomem:
    expect_free(NULL, e, NULL, 0, 0, NULL);
    return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
}

/*
 * Verify callback of client contexts: OpenSSL has checked the chain; at
 * depth 0 we add the SPIFFE ID / trust domain check.  Only records the
 * failure (as X509_V_ERR_APPLICATION_VERIFICATION); messages come later.
 * Only meshtls installs it, always with expectations attached: a context
 * without them is a bug, and is refused (fail closed) rather than trusting
 * anything the CA signed.  Expectations with only a server name add nothing
 * here (OpenSSL checks the name, set by meshtls_tls_client_ssl_new).
 */
static int client_verify_cb(int ok, X509_STORE_CTX *sctx)
{
    if (crl_expiry_tolerated(ok, sctx))
        ok = 1; /* the last CRL we have still decides (see crl_expiry_tolerated) */
    if (!ok)
        keep_rejected(sctx); /* so the error can name what the server presented */
    if (!ok || X509_STORE_CTX_get_error_depth(sctx) != 0)
        return ok;
    SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct client_expect *e = ssl ? expect_of(SSL_get_SSL_CTX(ssl)) : NULL;
    if (!e) {
        X509_STORE_CTX_set_error(sctx, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    if (!e->spiffe_id && !e->trust_domain)
        return ok;
    struct meshtls_identity *id = NULL;
    int match = 0;
    if (meshtls_identity_from_x509(X509_STORE_CTX_get_current_cert(sctx), &id, NULL) == 0 &&
        id->spiffe_id) {
        match = 1;
        if (e->spiffe_id && strcmp(e->spiffe_id, id->spiffe_id) != 0)
            match = 0;
        if (e->trust_domain && strcmp(e->trust_domain, id->spiffe.trust_domain) != 0)
            match = 0;
    }
    meshtls_identity_free(id);
    if (!match) {
        X509_STORE_CTX_set_error(sctx, X509_V_ERR_APPLICATION_VERIFICATION);
        keep_rejected(sctx);
    }
    return match;
}

int meshtls_tls_client_ctx_new(const struct meshtls_tls_opts *opts, SSL_CTX **out,
                               struct meshtls_err *err)
{
    int rc;
    struct material m = {0};
    SSL_CTX *ctx = NULL;
    const char *name = opts->server_name && *opts->server_name ? opts->server_name : NULL;
    const char *sid =
        opts->verify_spiffe_id && *opts->verify_spiffe_id ? opts->verify_spiffe_id : NULL;
    const char *td =
        opts->verify_trust_domain && *opts->verify_trust_domain ? opts->verify_trust_domain : NULL;

    if (!name && !sid && !td)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "TLS client: give the server's expected identity: a server name "
                               "(server_name), a SPIFFE ID (verify_spiffe_id) or a trust domain "
                               "(verify_trust_domain)");
    struct meshtls_spiffe_id parsed;
    if (sid && (rc = meshtls_spiffe_parse(sid, strlen(sid), &parsed, err)) != 0)
        return rc;
    if (td && (rc = meshtls_trust_domain_validate(td, err)) != 0)
        return rc;
    if ((rc = load_material("client", opts, &m, err)) != 0)
        return rc;
    if ((rc = build_ctx(0, opts, &m, &ctx, err)) != 0)
        goto out;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, client_verify_cb);
    if (opts->verify_profile == MESHTLS_TLS_PROFILE_RFC5280)
        SSL_CTX_set_cert_verify_callback(ctx, profile_verify_cb, NULL);
    if ((rc = set_expect(ctx, name, sid, td, err)) != 0)
        goto out;
    *out = ctx;
    ctx = NULL;
out:
    SSL_CTX_free(ctx);
    material_free(&m);
    return rc;
}

int meshtls_tls_client_ssl_new(SSL_CTX *ctx, SSL **out, struct meshtls_err *err)
{
    ERR_clear_error();
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        return meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot create a TLS connection");
    struct client_expect *e = expect_of(ctx);
    if (e && e->server_name) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
        int is_ip = X509_VERIFY_PARAM_set1_ip_asc(vp, e->server_name) == 1;
        if ((!is_ip && (SSL_set_tlsext_host_name(ssl, e->server_name) != 1 ||
                        SSL_set1_host(ssl, e->server_name) != 1))) {
            SSL_free(ssl);
            return meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot set server name '%s'",
                                       e->server_name);
        }
    }
    *out = ssl;
    return 0;
}

int meshtls_tls_peer_identity(SSL *ssl, struct meshtls_identity **out, struct meshtls_err *err)
{
    X509 *peer = SSL_get1_peer_certificate(ssl);
    if (!peer)
        return meshtls_err_set(err, MESHTLS_ENOENT, "the peer sent no certificate");
    int rc = meshtls_identity_from_x509(peer, out, err);
    X509_free(peer);
    return rc;
}

void meshtls_tls_verify_failure(SSL *ssl, char *buf, size_t cap)
{
    long v = SSL_get_verify_result(ssl);
    if (cap == 0)
        return;
    buf[0] = '\0';
    if (v == X509_V_OK) {
        /* An alert from the peer means the peer gave up (e.g. it did not trust us); the
         * error queue still holds it, since callers drain it only after this. */
        unsigned long e = ERR_peek_last_error();
        if (e && ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) >= SSL_AD_REASON_OFFSET) {
            snprintf(buf, cap, "the peer aborted the handshake (%s)",
                     ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "alert");
            return;
        }
        /* only when the client answered the certificate request with none: a scan, a
         * TLS 1.2 client or junk also fail before any certificate arrives */
        if (SSL_is_server(ssl) && e && ERR_GET_LIB(e) == ERR_LIB_SSL &&
            ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
            snprintf(buf, cap, "the client sent no certificate");
        return;
    }
    const struct meshtls_x509_violation *pv = meshtls_tls_profile_violation(ssl);
    if (pv) {
        snprintf(buf, cap, "%s", pv->msg);
        return;
    }
    if (v == X509_V_ERR_APPLICATION_VERIFICATION) {
        struct client_expect *e = expect_of(SSL_get_SSL_CTX(ssl));
        if (!e) {
            snprintf(buf, cap,
                     "the client context carries no expectations of the server "
                     "(not built by meshtls_tls_client_ctx_new?): refused");
            return;
        }
        /* name what the server presented: the fix is on one side or the other */
        struct meshtls_identity *id = NULL;
        X509 *x = meshtls_tls_presented_cert(ssl);
        if (x)
            meshtls_identity_from_x509(x, &id, NULL);
        snprintf(buf, cap, "the server's SPIFFE ID does not match %s%s: it presented %s%s%s",
                 e && e->spiffe_id ? e->spiffe_id : "trust domain ",
                 e && !e->spiffe_id && e->trust_domain ? e->trust_domain : "",
                 id && id->spiffe_id ? id->spiffe_id : "no SPIFFE ID",
                 id && id->subject ? " with subject " : "", id && id->subject ? id->subject : "");
        meshtls_identity_free(id);
        return;
    }
    if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH) {
        /* name the names the certificate carries, so the fix (another server_name, or a
         * certificate with this name) is plain */
        struct client_expect *e = expect_of(SSL_get_SSL_CTX(ssl));
        struct meshtls_identity *id = NULL;
        X509 *x = meshtls_tls_presented_cert(ssl);
        if (x)
            meshtls_identity_from_x509(x, &id, NULL);
        char names[512] = "";
        size_t used = 0;
        for (size_t i = 0; id && i < id->n_dns + id->n_ips && used + 1 < sizeof(names); i++) {
            int w = snprintf(names + used, sizeof(names) - used, "%s%s:%s", used ? ", " : "",
                             i < id->n_dns ? "DNS" : "IP",
                             i < id->n_dns ? id->dns[i] : id->ips[i - id->n_dns]);
            used = w > 0 && (size_t)w < sizeof(names) - used ? used + (size_t)w : sizeof(names) - 1;
        }
        snprintf(buf, cap, "the server's certificate does not name %s: it presented %s%s%s",
                 e && e->server_name ? e->server_name : "the expected server",
                 *names ? names : "no DNS or IP name", id && id->subject ? " with subject " : "",
                 id && id->subject ? id->subject : "");
        meshtls_identity_free(id);
        return;
    }
    snprintf(buf, cap, "%s", X509_verify_cert_error_string(v));
}

/* ---- development mode ------------------------------------------------- */

int meshtls_tls_dev_ctx_new(const char *service, SSL_CTX **server_out, SSL_CTX **client_out,
                            char **ca_pem_out, struct meshtls_err *err)
{
    int rc;
    EVP_PKEY *ca_key = NULL, *leaf_key = NULL;
    X509 *ca = NULL, *leaf = NULL;
    SSL_CTX *srv = NULL, *cli = NULL;
    char *ca_pem = NULL;
    struct material m = {0};
    char uri[MESHTLS_SPIFFE_ID_MAX + 1];

    if (!service || !*service)
        service = "dev";
    snprintf(uri, sizeof(uri), "spiffe://dev.local/svc/%s", service);
    struct meshtls_spiffe_id sid;
    if ((rc = meshtls_spiffe_parse(uri, strlen(uri), &sid, err)) != 0)
        return rc;

    meshtls_log(MESHTLS_LOG_WARN,
                "DEVELOPMENT MODE: using an ephemeral in-memory CA and certificate for '%s'. "
                "Anyone can make such a certificate: NEVER use this in production.",
                service);
    const char *dns[] = {service, "localhost"};
    const char *ips[] = {"127.0.0.1", "::1"};
    struct mt_cert_spec ca_spec = {.cn = "meshtls development CA (ephemeral)",
                                   .o = "meshtls dev",
                                   .is_ca = 1,
                                   .pathlen = 0,
                                   .days = 1};
    struct mt_cert_spec leaf_spec = {.cn = service,
                                     .o = "meshtls dev",
                                     .days = 1,
                                     .dns = dns,
                                     .n_dns = 2,
                                     .ips = ips,
                                     .n_ips = 2,
                                     .uri = uri,
                                     .eku_server = 1,
                                     .eku_client = 1};
    if ((rc = mt_key_generate(MT_KEY_EC_P256, &ca_key, err)) ||
        (rc = mt_cert_sign(&ca_spec, ca_key, NULL, ca_key, &ca, err)) ||
        (rc = mt_key_generate(MT_KEY_EC_P256, &leaf_key, err)) ||
        (rc = mt_cert_sign(&leaf_spec, leaf_key, ca, ca_key, &leaf, err)))
        goto out;
    m.leaf = leaf;
    m.key = leaf_key;
    m.anchors = sk_X509_new_null();
    if (!m.anchors || !sk_X509_push(m.anchors, ca)) {
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
        goto out;
    }
    struct meshtls_tls_opts o = {.server_name = "localhost"};
    if (server_out && (rc = build_ctx(1, &o, &m, &srv, err)) != 0)
        goto out;
    if (client_out) {
        if ((rc = build_ctx(0, &o, &m, &cli, err)) != 0)
            goto out;
        SSL_CTX_set_verify(cli, SSL_VERIFY_PEER, client_verify_cb);
        if ((rc = set_expect(cli, "localhost", NULL, NULL, err)) != 0)
            goto out;
    }
    if (ca_pem_out && (rc = mt_cert_to_pem(ca, &ca_pem, NULL, err)) != 0)
        goto out;
    if (server_out)
        *server_out = srv, srv = NULL;
    if (client_out)
        *client_out = cli, cli = NULL;
    if (ca_pem_out)
        *ca_pem_out = ca_pem, ca_pem = NULL;
    rc = 0;
out:
    sk_X509_free(m.anchors); /* holds `ca`, freed below */
    SSL_CTX_free(srv);
    SSL_CTX_free(cli);
    free(ca_pem);
    X509_free(ca);
    X509_free(leaf);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(leaf_key);
    return rc;
}
