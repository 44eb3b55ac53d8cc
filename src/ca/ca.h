/*
 * ca.h - the PKI operations behind `meshtls ca` and `meshtls dev`.
 *
 * A CA directory holds: root.crt, root.key (0400; move it offline),
 * intermediate.crt, intermediate.key (0600), ca.crt (the trust bundle),
 * root.crl (the root's CRL, for whole-chain CRL checks), meshtls.db.
 * Every command's function opens the store, does its work in one transaction,
 * writes files atomically, and closes; a server instead loads the CA once
 * (struct ca_signer) and records what it signs on store connections it keeps
 * (ca_sign_leaf, ca_record_signed).  Errors follow meshtls/err.h.
 */
#ifndef MESHTLS_CA_H
#define MESHTLS_CA_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "meshtls/err.h"
#include "store.h"
#include "x509gen.h"

#define CA_ROOT_DAYS 3650
#define CA_INTERMEDIATE_DAYS 1825
#define CA_ROOT_CRL_DAYS 365
#define CA_CRL_DAYS 7
#define CA_LEAF_DAYS_DEFAULT 90
#define CA_LEAF_DAYS_MAX 825
/* ca crl and ca rotate warn this far ahead of root.crl's nextUpdate */
#define CA_ROOT_CRL_WARN_DAYS 30

/** Create a CA in `dir` (created 0700 if missing); refuses an existing one. */
int ca_init(const char *dir, const char *trust_domain, enum mt_key_type kt,
            struct meshtls_err *err);

/** 1 if `name` is a valid service name ([a-z0-9][a-z0-9._-]{0,62}), else 0. */
int ca_service_name_valid(const char *name);

/** Register (or update, *updated = 1) a service.  `spiffe_id` NULL = spiffe://TD/svc/NAME. */
int ca_register(const char *dir, const char *name, const char *const *dns, size_t n_dns,
                const char *const *ips, size_t n_ips, const char *spiffe_id, int *updated,
                char *spiffe_out, size_t spiffe_cap, struct meshtls_err *err);

/**
 * Issue a leaf for a registered service into `out_dir` (SERVICE.crt,
 * SERVICE.key unless `csr_path`, ca.crt).  Writes the serial to
 * `serial_out` (at least 80 bytes).
 */
int ca_issue(const char *dir, const char *service, const char *out_dir, int days,
             const char *csr_path, char *serial_out, struct meshtls_err *err);

/* ---- signing for a server: the CA loaded once (`meshtls ca serve`) ---- */

/**
 * The signing material of the CA in a directory, parsed once: root.crt, intermediate.crt
 * (also as PEM, the chain sent with a leaf), intermediate.key, the trust domain and key
 * type.  Immutable after ca_signer_load(); shared between threads by reference count, so a
 * server can swap in a new one (after `renew-intermediate`) while requests still sign
 * with the old one.
 */
struct ca_signer;

/**
 * Load the signer of the CA in `dir` (borrowed), reading the trust domain through the
 * open store `st` (borrowed).  @param out a new signer with one reference (ca_signer_unref).
 */
int ca_signer_load(const char *dir, struct ca_store *st, struct ca_signer **out,
                   struct meshtls_err *err);
/** Take one more reference to `s`; returns `s`. */
struct ca_signer *ca_signer_ref(struct ca_signer *s);
/** Drop a reference (NULL is fine); the last one frees the signer. */
void ca_signer_unref(struct ca_signer *s);
/**
 * 1 if intermediate.crt or intermediate.key in the signer's directory is no longer the
 * file it was loaded from (inode, size or modification time), so the caller should load
 * a new signer; 0 if unchanged (or unreadable: the loaded one goes on signing).
 */
int ca_signer_stale(const struct ca_signer *s);
/** The intermediate's certificate as PEM (borrowed from `s`): the chain after a leaf. */
const char *ca_signer_inter_pem(const struct ca_signer *s);

/** A certificate ca_sign_leaf() signed.  Strings owned; free with ca_signed_clear(). */
struct ca_signed {
    char serial[80]; /* lower-case hex */
    char *service;   /* the service it is for */
    char *out_dir;   /* recorded: where a rotation writes the re-issued files */
    char *cert_pem;  /* the leaf */
    char *pub_pem;   /* its public key (the row keeps it to re-sign on rotation) */
    int64_t not_before, not_after;
};
/** Free the strings of `r` and zero it. */
void ca_signed_clear(struct ca_signed *r);

/**
 * Sign a leaf for the registered service `svc` over the public key of `req` (both
 * borrowed; the caller has matched the CSR against the registration: cp_csr_match()),
 * valid `days` (1 to CA_LEAF_DAYS_MAX, capped at the intermediate's notAfter), with the
 * same extensions as ca_issue().  Pure CPU: no store, no lock, no file.  `out_dir`
 * (borrowed, absolute) is copied into the result for ca_record_signed().
 * @param out filled on success (caller clears).
 */
int ca_sign_leaf(struct ca_signer *s, const struct ca_service *svc, X509_REQ *req, int days,
                 const char *out_dir, struct ca_signed *out, struct meshtls_err *err);

/**
 * Record `n` signed leaves (borrowed) in `st` in one transaction, in order, each as
 * ca_issue() records a CSR-signed one: the service's active certificates superseded, the
 * row inserted (key_held 0), an "issue" audit event.  No files are written.  All or
 * nothing: on failure none is recorded.  One transaction for several leaves is how a
 * server commits concurrent issuances with one fsync (group commit).
 */
int ca_record_signed(struct ca_store *st, const struct ca_signed *const *v, size_t n,
                     struct meshtls_err *err);

/** Called for each certificate rotate/revoke --replace re-issued. */
typedef void (*ca_report_fn)(const char *service, const char *old_serial, const char *new_serial,
                             const char *out_dir, void *arg);
/** Called with each serial revoked (borrowed strings). */
typedef void (*ca_serial_fn)(const char *service, const char *serial, void *arg);
/** Called with a warning the operator must see: a migrated path, a CRL near nextUpdate. */
typedef void (*ca_warn_fn)(const char *msg, void *arg);

/** What `ca rotate` does; everything borrowed. */
struct ca_rotate_opts {
    int within_days;             /* re-issue what expires within this many days (0-3650) */
    int days;                    /* validity of the new ones: > within_days unless force */
    int force;                   /* re-issue now, whatever the expiry (after an incident) */
    const char *const *services; /* only these (each must be registered); n == 0: all */
    size_t n;
    ca_report_fn report; /* optional */
    ca_warn_fn warn;     /* optional */
    /*
     * Optional: asked about each due certificate before it is re-issued (borrowed).  A
     * non-zero answer means re-issuing it would not help (ca serve: a CSR-issued one whose
     * holder took its certificate from the API answer and reads no directory): it is left
     * as it is and recorded as a "rotation-needed" audit event (detail: its expiry), and
     * counted in *flagged.  The callback reports it to the operator.
     */
    int (*flag)(const struct ca_cert *c, void *arg);
    int *flagged; /* optional: how many `flag` claimed */
    void *arg;
};

/**
 * Re-issue every active certificate due (expiring within the window, or
 * all with `force`) into the absolute directory it was issued to.  A
 * certificate whose directory no longer exists, or whose relative directory
 * (stored by meshtls before 0.x kept absolute paths) cannot be resolved,
 * is skipped with a warning naming the path and the fix, and the others
 * are still rotated: *failed counts the skipped ones and the call then
 * returns MESHTLS_ENOENT.  A relative directory that holds the stored
 * certificate when seen from the working directory is migrated to its
 * absolute path, with a warning.  *count = how many were re-issued.
 */
int ca_rotate(const char *dir, const struct ca_rotate_opts *o, int *count, int *failed,
              struct meshtls_err *err);

/** Valid --reason values (RFC 5280 CRLReason names). */
int ca_reason_parse(const char *s);

/** What `ca revoke` does; everything borrowed. */
struct ca_revoke_opts {
    const char *serial;   /* one certificate (hex, any case), or */
    const char *service;  /* every unexpired unrevoked certificate of it */
    const char *reason;   /* NULL = unspecified */
    int replace;          /* issue the replacement in the same transaction */
    ca_report_fn report;  /* the replacement (optional) */
    ca_serial_fn revoked; /* each serial revoked (optional) */
    ca_warn_fn warn;      /* optional */
    void *arg;
    int no_publish; /* leave the CRL to the caller (ca serve re-signs it in the background) */
};

/**
 * Revoke, then write the CRL where the CA publishes it (unless o->no_publish) (see ca_crl(): the
 * path remembered from `ca crl --out` or `init --crl-out`).  `crl_written`
 * (cap bytes) gets that path, or "" when none is remembered.  A failure to
 * write the CRL after the revocation committed returns the error with
 * *count > 0: the revocation stands, the CRL must be written again.
 */
int ca_revoke(const char *dir, const struct ca_revoke_opts *o, int *count, char *crl_written,
              size_t cap, struct meshtls_err *err);

/**
 * Write the CRL bundle: one CRL per intermediate still valid (the current
 * one, and one retired by `renew-intermediate --new-key` during its
 * overlap), then the root's CRL.  `out` NULL: the remembered path (an error
 * if none); otherwise `out` is written and remembered (absolute) for the
 * next `crl` and `revoke`.  `written` (cap bytes) gets the path.  Warns
 * (through `warn`) when the root's CRL is within 30 days of its nextUpdate.
 */
int ca_crl(const char *dir, const char *out, int *revoked, char *written, size_t cap,
           ca_warn_fn warn, void *arg, struct meshtls_err *err);

/** Remember `path` (made absolute) as where the CRL is published; write it now. */
int ca_set_crl_out(const char *dir, const char *path, struct meshtls_err *err);

/**
 * Unregister `service`: refused (MESHTLS_EEXIST, naming the serials) while
 * it has unexpired unrevoked certificates, unless `revoke`: then they are
 * revoked (cessationOfOperation) in the same transaction and the CRL is
 * written as ca_revoke() does.  *count = revoked.
 */
int ca_unregister(const char *dir, const char *service, int revoke, ca_serial_fn revoked, void *arg,
                  int *count, char *crl_written, size_t cap, struct meshtls_err *err);

/* ---- the offline root's duties (a ceremony: run with the root key brought back) ---- */

/**
 * Re-sign the intermediate with the root key at `root_key_path` (checked to
 * match root.crt), valid `days` (capped at the root's notAfter).  Same key:
 * the new certificate has the same subject and key, so every leaf issued
 * keeps verifying.  `new_key`: a new key and a new name ("... G2"); the old
 * intermediate (kept as intermediate-SERIAL.crt/.key) stays valid until its
 * notAfter, so leaves issued under it keep verifying (the overlap) and its
 * CRL stays in the bundle; rotate --force moves services to the new one.
 * `serial_out` (80 bytes) gets the new intermediate's serial.
 */
int ca_renew_intermediate(const char *dir, const char *root_key_path, int new_key, int days,
                          char *serial_out, ca_warn_fn warn, void *arg, struct meshtls_err *err);

/**
 * Re-sign root.crl with the root key, valid `days`, listing the retired
 * intermediates revoked now (`revoke_serial`, optional, with `reason`, NULL
 * = superseded; never the current one) or before.  The published CRL bundle
 * is rewritten if a path is remembered.
 */
int ca_root_crl(const char *dir, const char *root_key_path, int days, const char *revoke_serial,
                const char *reason, ca_warn_fn warn, void *arg, struct meshtls_err *err);

/* ---- pure helpers (unit-tested as tables) ---- */

/**
 * `path` made absolute against `cwd` and normalised lexically (".", "..",
 * repeated and trailing slashes) into `out`.  @return 0, or -1 if it does
 * not fit in `cap` or `cwd` is not absolute.
 */
int ca_path_absolute(const char *cwd, const char *path, char *out, size_t cap);

/** A certificate is due for rotation at `now`: force, or not_after <= now + within_days. */
int ca_rotate_due(int64_t not_after, int64_t now, int within_days, int force);

enum ca_crl_fresh { CA_CRL_FRESH = 0, CA_CRL_NEAR = 1, CA_CRL_STALE = 2 };
/** How a CRL with `next_update` stands at `now` when warning `warn_secs` ahead. */
enum ca_crl_fresh ca_crl_freshness(int64_t next_update, int64_t now, int64_t warn_secs);

/** Canonical lower-case hex of a serial given in any case, with or without 0x. */
int ca_serial_normalize(const char *in, char *out, size_t cap);

#endif
