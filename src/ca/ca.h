/*
 * ca.h - the PKI operations behind `meshtls ca` and `meshtls dev`.
 *
 * A CA directory holds: root.crt, root.key (0400; move it offline),
 * intermediate.crt, intermediate.key (0600), ca.crt (the trust bundle),
 * root.crl (the root's CRL, for whole-chain CRL checks), meshtls.db.
 * Every function opens the store, does its work in one transaction, writes
 * files atomically, and closes.  Errors follow meshtls/err.h.
 */
#ifndef MESHTLS_CA_H
#define MESHTLS_CA_H

#include <stddef.h>

#include "meshtls/err.h"
#include "x509gen.h"

#define CA_ROOT_DAYS 3650
#define CA_INTERMEDIATE_DAYS 1825
#define CA_ROOT_CRL_DAYS 365
#define CA_CRL_DAYS 7
#define CA_LEAF_DAYS_DEFAULT 90
#define CA_LEAF_DAYS_MAX 825

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

/** Called for each certificate rotate/revoke --replace re-issued. */
typedef void (*ca_report_fn)(const char *service, const char *old_serial, const char *new_serial,
                             const char *out_dir, void *arg);

/**
 * Re-issue every active certificate expiring within `within_days` (of the
 * listed services, or all if n == 0), each valid `days` (which must exceed
 * the window, so that a second run finds nothing to do).  *count = how many.
 */
int ca_rotate(const char *dir, int within_days, int days, const char *const *services, size_t n,
              ca_report_fn report, void *arg, int *count, struct meshtls_err *err);

/** Valid --reason values (RFC 5280 CRLReason names). */
int ca_reason_parse(const char *s);

/**
 * Revoke the certificate `serial` (hex, any case) or, if `service` is given,
 * every unexpired unrevoked certificate of it; with `replace`, issue the
 * replacement in the same transaction.  *count = revoked.
 */
int ca_revoke(const char *dir, const char *serial, const char *service, const char *reason,
              int replace, ca_report_fn report, void *arg, int *count, struct meshtls_err *err);

/** Write the CRL (intermediate-signed, then the root's) to `out`. */
int ca_crl(const char *dir, const char *out, int *revoked, struct meshtls_err *err);

/** Canonical lower-case hex of a serial given in any case, with or without 0x. */
int ca_serial_normalize(const char *in, char *out, size_t cap);

#endif
