/*
 * meshtls/tls.h - mTLS server and client contexts.
 *
 * The contexts returned are ordinary OpenSSL SSL_CTX objects, configured and
 * verified, that the caller owns (SSL_CTX_free) and may share between threads.
 * Secure by default: TLS 1.3 only, a client certificate required and verified
 * by servers, the server's name or SPIFFE ID verified by clients, no
 * renegotiation, no compression.
 */
#ifndef MESHTLS_TLS_H
#define MESHTLS_TLS_H

#include <openssl/ssl.h>

#include "meshtls/err.h"
#include "meshtls/export.h"
#include "meshtls/identity.h"
#include "meshtls/x509.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Lowest TLS version accepted. */
enum meshtls_tls_min {
    MESHTLS_TLS_MIN_1_3 = 0, /**< default */
    MESHTLS_TLS_MIN_1_2 = 1, /**< opt-in, for peers that cannot do 1.3 */
};

/** Checks run after OpenSSL has verified the peer's chain. */
enum meshtls_tls_profile {
    MESHTLS_TLS_PROFILE_OPENSSL = 0, /**< OpenSSL's verification only (the library's default) */
    MESHTLS_TLS_PROFILE_RFC5280 = 1, /**< also RFC 5280's certificate and CRL profile
                                          (meshtls_x509_profile_check(); the proxy's default) */
};

/**
 * What a context is built from.  Caller-owned, borrowed for the duration of
 * the call only; zero-initialise, then set fields.  Zero means the default.
 */
struct meshtls_tls_opts {
    const char *cert_file; /**< our certificate chain, PEM, leaf first (required) */
    const char *key_file;  /**< our private key, PEM, mode 0600 or stricter (required) */
    const char *ca_file;   /**< trust bundle, PEM, one or more CAs (required) */
    const char *crl_file;  /**< CRLs, PEM; if set, every cert of the peer's chain is checked */
    int min_version;       /**< enum meshtls_tls_min */
    int insecure_no_client_cert; /**< server: do not require a client certificate */
    const char *server_name; /**< client: DNS name (or IP) the server certificate must carry; SNI */
    const char *verify_spiffe_id;    /**< client: exact SPIFFE ID the server must present */
    const char *verify_trust_domain; /**< client: trust domain of the server's SPIFFE ID */
    int expiry_warn_days; /**< warn when our certificate has fewer days left (default 30) */
    struct meshtls_session_cache *session_cache; /**< server: stateful resumption through this
                                                      cache (borrowed; the context takes its own
                                                      reference); NULL = OpenSSL's stateless
                                                      tickets.  A stored session keeps only the
                                                      client's leaf: after the handshake
                                                      SSL_get_peer_cert_chain() is empty (use
                                                      SSL_get0_verified_chain() for the chain) */
    int num_tickets; /**< server: session tickets per handshake; 0 = default (1 with a
                          session cache, OpenSSL's 2 otherwise); -1 = none */
    struct meshtls_verify_cache *verify_cache; /**< server: skip re-verifying a chain verified
                                                    before under the same trust (borrowed; the
                                                    context takes a reference); NULL = off */
    int partial_chain;  /**< accept a chain ending at any certificate in the bundle (e.g.
                             the intermediate), not only at a root; opt-in: the root's
                             validity and constraints are then not checked */
    int verify_depth;   /**< most intermediates allowed between the peer's certificate and a
                             trust anchor; 0 = the default (4) */
    int verify_profile; /**< enum meshtls_tls_profile.  With RFC5280 a peer chain that breaks
                             the profile fails the handshake (alert bad_certificate,
                             meshtls_tls_profile_violation() says which rule), a CRL file that
                             breaks it fails the build, and the verified-chain and session
                             caches keep only chains that passed it */
};

/**
 * A server-side TLS session cache, shared by any number of server contexts
 * and threads, and kept apart from them: rebuilding a context to rotate our
 * own certificate keeps every session, so clients resume instead of paying a
 * full handshake.  Each session is stamped with the *trust* it was verified
 * under (a digest of the CA bundle and CRL contents): a context with other
 * trust never resumes it, so a session never outlives the trust it was
 * verified under.  A session is also never resumed after the client
 * certificate's notAfter.  Refcounted: each context using it holds a
 * reference.
 */
struct meshtls_session_cache;

/**
 * @param max_entries bound on cached sessions (oldest evicted first), >= 1
 * @param lifetime_s  session lifetime in seconds, >= 1
 * @param out         new cache with one reference; release with
 *                    meshtls_session_cache_free()
 */
MESHTLS_API int meshtls_session_cache_new(size_t max_entries, int lifetime_s,
                                          struct meshtls_session_cache **out);
/** Drop one reference; frees the cache with the last.  NULL is fine. */
MESHTLS_API void meshtls_session_cache_free(struct meshtls_session_cache *c);
/** Sessions currently cached (for metrics and tests). */
MESHTLS_API size_t meshtls_session_cache_size(struct meshtls_session_cache *c);

/**
 * A cache of successful client-chain verifications, shared like the session
 * cache.  Keyed by a SHA-256 of the exact chain the client presented plus a
 * digest of the trust it was verified under (CA bundle, CRLs, verification
 * flags): a new bundle or CRL never hits an old entry, and the cache is
 * emptied when a context with other trust attaches.  Only successes are
 * kept; an entry lives no longer than the earliest notAfter of the verified
 * chain and the earliest nextUpdate of the CRLs, and not before the latest
 * notBefore.  Identity policy is never cached: it runs on every connection.
 */
struct meshtls_verify_cache;

/** @param out new cache (one reference) of at most `max_entries` chains. */
MESHTLS_API int meshtls_verify_cache_new(size_t max_entries, struct meshtls_verify_cache **out);
/** Drop one reference; NULL is fine. */
MESHTLS_API void meshtls_verify_cache_free(struct meshtls_verify_cache *c);
/** Hits and misses so far (for metrics and tests); either pointer may be NULL. */
MESHTLS_API void meshtls_verify_cache_stats(struct meshtls_verify_cache *c,
                                            unsigned long long *hits, unsigned long long *misses);

/**
 * Build a server context: loads and checks cert/key/CA/CRL files (key
 * permissions, key matches certificate, our certificate not expired),
 * requires and verifies client certificates.
 * @param out new SSL_CTX, caller frees with SSL_CTX_free().
 * @return 0 or a MESHTLS_E* code with `err` naming the file or field.
 */
MESHTLS_API int meshtls_tls_server_ctx_new(const struct meshtls_tls_opts *opts, SSL_CTX **out,
                                           struct meshtls_err *err);

/**
 * Build a client context: presents our certificate, verifies the server
 * chain against the bundle, and its name (`server_name`) and/or SPIFFE ID
 * (`verify_spiffe_id` or `verify_trust_domain`).  At least one of the three
 * is required; a context that would accept any server is refused.
 * Use meshtls_tls_client_ssl_new() to create connections from it so SNI and
 * name checks are applied.
 */
MESHTLS_API int meshtls_tls_client_ctx_new(const struct meshtls_tls_opts *opts, SSL_CTX **out,
                                           struct meshtls_err *err);

/**
 * Create an SSL for a client connection from `ctx` (borrowed): sets SNI and
 * the expected host name configured on the context.
 * @param out new SSL, caller frees with SSL_free().
 */
MESHTLS_API int meshtls_tls_client_ssl_new(SSL_CTX *ctx, SSL **out, struct meshtls_err *err);

/**
 * The identity of the peer of an established connection `ssl` (borrowed).
 * @return 0, or MESHTLS_ENOENT if the peer sent no certificate.
 */
MESHTLS_API int meshtls_tls_peer_identity(SSL *ssl, struct meshtls_identity **out,
                                          struct meshtls_err *err);

/**
 * The certificate the peer presented on `ssl` (borrowed: valid while `ssl` lives), also
 * after its verification failed on a server built by meshtls_tls_server_ctx_new (the
 * refused leaf is kept for the logs), or NULL if the peer sent none.
 */
MESHTLS_API X509 *meshtls_tls_presented_cert(SSL *ssl);

/**
 * The RFC 5280 profile rule the peer's chain broke on `ssl` (a context built with
 * verify_profile = MESHTLS_TLS_PROFILE_RFC5280), or NULL if it broke none or was not
 * checked.  Borrowed: valid while `ssl` lives.
 */
MESHTLS_API const struct meshtls_x509_violation *meshtls_tls_profile_violation(SSL *ssl);

/**
 * After a failed handshake, a sentence on why peer verification failed
 * (e.g. "certificate has expired (depth 0, CN=api)"), or "" if it did not.
 * Writes at most `cap` bytes to `buf`.
 */
MESHTLS_API void meshtls_tls_verify_failure(SSL *ssl, char *buf, size_t cap);

/**
 * Development mode (003's development()): an ephemeral in-memory CA and a
 * leaf for `service` (SANs: service name, localhost, 127.0.0.1, ::1, and
 * spiffe://dev.local/svc/<service>), valid 1 day, and contexts built from
 * them.  Logs a loud warning: development only.
 * @param server_out, client_out  new contexts (either may be NULL).
 * @param ca_pem_out optional: the CA certificate as PEM, caller frees.
 */
MESHTLS_API int meshtls_tls_dev_ctx_new(const char *service, SSL_CTX **server_out,
                                        SSL_CTX **client_out, char **ca_pem_out,
                                        struct meshtls_err *err);

/**
 * Process-wide, opt-in: decode and use EC keys through OpenSSL 3.0's built-in
 * ("legacy") EC code instead of its provider decoder framework, which spends
 * ~0.9 M instructions decoding each certificate's public key.  Measured: a
 * full mTLS handshake costs ~44 % less server CPU (bench/floor, P-256).  It
 * registers an ENGINE offering OpenSSL's own EC method, so the cryptography
 * is OpenSSL's either way; other key types are unaffected.  Call it once at
 * start-up, before contexts are built; it affects every EC key the process
 * parses afterwards, which is why the library never calls it by itself (the
 * `meshtls` command does, unless MESHTLS_OPENSSL_EC_LEGACY=0).  Idempotent and
 * thread-safe; nothing to free.
 * @return 0, or MESHTLS_ETLS if this OpenSSL has no ENGINE support (3.0
 *         builds with OPENSSL_NO_ENGINE, 4.0) or registration failed.
 */
MESHTLS_API int meshtls_tls_use_legacy_ec(struct meshtls_err *err);

/** 1 if meshtls_tls_use_legacy_ec() is in effect in this process, else 0. */
MESHTLS_API int meshtls_tls_legacy_ec_active(void);

#ifdef __cplusplus
}
#endif
#endif
