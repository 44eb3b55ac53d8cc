/*
 * serve.h - `meshtls ca serve`: the control plane's HTTPS API on the shared engine
 * (src/net + src/http), backed by the CA directory's store (see docs/CONTROL-PLANE.md).
 *
 * Threads: the engine's event loops parse requests and check the TLS identity of the
 * caller (pure, no I/O); everything that touches the database or signs runs on the
 * engine's job pool, and its reply is sent from the job's done function.
 *
 * The pure pieces (tokens, CSR-versus-registration matching, admin list) are exported
 * here so that unit tests can drive them as tables.
 *
 * Errors follow meshtls/err.h.
 */
#ifndef MESHTLS_CA_SERVE_H
#define MESHTLS_CA_SERVE_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "meshtls/err.h"
#include "store.h"

struct mt_db;

#define CP_ADMINS_MAX 32
#define CP_SANS_MAX 16

/** What `meshtls ca serve` runs with.  Strings borrowed; they must outlive cp_serve_run(). */
struct cp_serve_opts {
    const char *dir;    /* the CA directory (keys + meshtls.db) */
    const char *listen; /* "host:port" of the HTTPS API */
    const char *status; /* optional plain-HTTP /healthz, /readyz, /metrics ("127.0.0.1:0") */
    const char *admins[CP_ADMINS_MAX]; /* SPIFFE IDs allowed on /api/admin/... */
    size_t n_admins;
    const char *sans[CP_SANS_MAX]; /* extra DNS names / IPs of the server certificate */
    size_t n_sans;
    int workers;            /* event loops (default 2) */
    int job_threads;        /* pool threads for database and signing work (default 4) */
    int peer_ttl_s;         /* /api/peers: a registration lives this long without a heartbeat */
    int leaf_days;          /* validity of certificates issued through /sign and /renew */
    int server_days;        /* validity of the server's own certificate */
    int drain_ms;           /* shutdown: wait this long for open requests */
    int64_t lifecycle_ms;   /* the lifecycle worker\'s interval (0: off) */
    int rotate_within_days; /* it rotates certificates expiring within this many days */
};

/** Fill `o` with the defaults (no dir/listen). */
void cp_serve_opts_default(struct cp_serve_opts *o);

/**
 * Run the control plane until SIGTERM/SIGINT: issue the server's certificate from its own
 * CA, listen, serve, drain.  Prints "listening on ADDR" (and "status on ADDR") on stdout.
 * @return 0 after a clean stop, or an error (nothing left running).
 */
int cp_serve_run(const struct cp_serve_opts *o, struct meshtls_err *err);

/**
 * Check what cp_serve_run() would start with, without serving or changing anything:
 * the store opens (and would migrate), the CA files and the intermediate's key load, the
 * addresses resolve, the options agree.  @return 0 or the first problem in `err`.
 */
int cp_serve_check(const struct cp_serve_opts *o, struct meshtls_err *err);

/* ---- bootstrap tokens (serve_token.c) ------------------------------------------------ */

#define CP_TOKEN_PREFIX "mtt_"
#define CP_TOKEN_LEN 47      /* "mtt_" + 43 base64url characters (32 random bytes) */
#define CP_TOKEN_HASH_LEN 64 /* hex SHA-256 */

/** A new random token in `out` (at least CP_TOKEN_LEN + 1 bytes). */
int cp_token_new(char *out, size_t cap, struct meshtls_err *err);

/**
 * The stored form of `token`: hex SHA-256 of the whole token (`hex`: 65 bytes).
 * @return 0, or MESHTLS_EINVAL if `token` is not of our format (prefix, length, base64url
 *         alphabet): such a token is refused without a database look-up.
 */
int cp_token_hash(const char *token, char *hex, size_t cap);

/** The channel every revocation is notified on (PostgreSQL LISTEN/NOTIFY; see serve.c). */
#define CP_REVOCATION_CHANNEL "meshtls_ca_revocations"

/**
 * Open the control plane's tables in the CA store DIR/meshtls.db (must exist) and apply
 * their migrations (table serve_migrations).  @param out caller closes with mt_db_close().
 */
int cp_db_open(const char *dir, struct mt_db **out, struct meshtls_err *err);

/**
 * Create a token for `service` (which must be registered: checked by the caller) valid
 * `ttl_s` seconds from `now`; only its hash is stored.  `out` gets the token (printed
 * once by the caller, never logged).
 */
int cp_token_create(struct mt_db *db, const char *service, int64_t ttl_s, int64_t now, char *out,
                    size_t cap, struct meshtls_err *err);

/** What a token look-up found. */
enum cp_token_state {
    CP_TOKEN_OK = 0,
    CP_TOKEN_UNKNOWN,
    CP_TOKEN_EXPIRED,
    CP_TOKEN_USED,
};

/** Look `hash` up without using it: its state at `now`, and its service (`svc`, cap bytes). */
int cp_token_peek(struct mt_db *db, const char *hash, int64_t now, enum cp_token_state *state,
                  char *svc, size_t cap, struct meshtls_err *err);

/**
 * Use `hash` once: one UPDATE ... WHERE used_at IS NULL AND expires_at > now, so of two
 * redemptions at once (one process or several sharing the store) exactly one wins.
 * *won = 1 for the winner.  `by` (the client address) is recorded.
 */
int cp_token_consume(struct mt_db *db, const char *hash, int64_t now, const char *by, int *won,
                     struct meshtls_err *err);

/** Give a consumed token back (the certificate could not be issued after all). */
int cp_token_unconsume(struct mt_db *db, const char *hash, struct meshtls_err *err);

/**
 * Take the lease `name` ("lifecycle") for `holder` until `until_ms` (wall clock, ms) if it
 * is free at `now_ms` (expired): one UPDATE ... WHERE until_ms <= now, so of several servers
 * asking at once one wins.  *won = 1 for the winner.
 */
int cp_lease_take(struct mt_db *db, const char *name, const char *holder, int64_t now_ms,
                  int64_t until_ms, int *won, struct meshtls_err *err);

/* ---- CSR checks (serve_token.c) ------------------------------------------------------ */

/**
 * Whether the CSR `req` (borrowed) fits the registration `svc`: its signature verifies,
 * it carries exactly the service's SPIFFE ID as its one URI SAN, every DNS/IP SAN is
 * registered, no other SAN kind, and its CN (if any) is the service's name.
 * @return 0 if it fits, else MESHTLS_EDENIED (MESHTLS_EPARSE for a bad signature) with
 *         the reason in `why` (cap bytes), a sentence naming the field.
 */
int cp_csr_match(X509_REQ *req, const struct ca_service *svc, char *why, size_t cap);

/** Parse a PEM CSR of `len` bytes (borrowed). @return NULL if it is not one. */
X509_REQ *cp_csr_parse(const char *pem, size_t len);

/** 1 if `spiffe_id` is one of `admins[0..n)`, else 0 (exact comparison). */
int cp_is_admin(const char *const *admins, size_t n, const char *spiffe_id);

#endif
