/*
 * store.h - the CA's store: SQLite (one file, DIR/meshtls.db), numbered
 * migrations, every change inside one transaction, parameterized SQL only.
 *
 * Errors follow meshtls/err.h; a locked or unreadable database is
 * MESHTLS_ESTORE with a message naming the file.
 */
#ifndef MESHTLS_CA_STORE_H
#define MESHTLS_CA_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "meshtls/err.h"

struct ca_store;

/** A registered service.  Strings owned by the struct; free with ca_service_clear(). */
struct ca_service {
    char *name;
    char *spiffe_id;
    char **dns;
    size_t n_dns;
    char **ips;
    size_t n_ips;
};

/** A certificate row.  Strings owned; free with ca_cert_clear(). */
struct ca_cert {
    char *serial;     /* lower-case hex */
    char *service;
    int64_t not_before, not_after;
    char *status;     /* active | superseded | revoked */
    char *out_dir;    /* where issue/rotate wrote the files */
    char *cert_pem;   /* the leaf */
    char *pubkey_pem; /* for re-signing CSR-issued certificates */
    int key_held;     /* 1: we generated (and wrote) the key; 0: signed a CSR */
    int64_t revoked_at;
    char *reason;
};

/**
 * Open DIR/meshtls.db; `create` makes it (and applies migrations), else it
 * must exist.  @param out caller closes with ca_store_close().
 */
int ca_store_open(const char *dir, int create, struct ca_store **out, struct meshtls_err *err);
void ca_store_close(struct ca_store *s);

/** BEGIN IMMEDIATE / COMMIT / ROLLBACK. */
int ca_store_begin(struct ca_store *s, struct meshtls_err *err);
int ca_store_commit(struct ca_store *s, struct meshtls_err *err);
void ca_store_rollback(struct ca_store *s);

/** meta key/value: trust_domain, key_type, crl_number.  *out: malloc'd. */
int ca_store_meta_get(struct ca_store *s, const char *key, char **out, struct meshtls_err *err);
int ca_store_meta_set(struct ca_store *s, const char *key, const char *value,
                      struct meshtls_err *err);

/** Insert or replace a service; *updated set to 1 if it existed. */
int ca_store_service_put(struct ca_store *s, const struct ca_service *svc, int *updated,
                         struct meshtls_err *err);
/** Load a service; MESHTLS_ENOENT if unknown. */
int ca_store_service_get(struct ca_store *s, const char *name, struct ca_service *out,
                         struct meshtls_err *err);
void ca_service_clear(struct ca_service *svc);

int ca_store_cert_insert(struct ca_store *s, const struct ca_cert *c, struct meshtls_err *err);
/** Set status (and revocation fields when status is "revoked"). */
int ca_store_cert_set_status(struct ca_store *s, const char *serial, const char *status,
                             const char *reason, const char *replaced_by,
                             struct meshtls_err *err);
/** Load one certificate; MESHTLS_ENOENT if none. */
int ca_store_cert_get(struct ca_store *s, const char *serial, struct ca_cert *out,
                      struct meshtls_err *err);
/**
 * List certificates (optionally of one service, optionally only with one
 * status), oldest first.  *out: array of *n entries; free with ca_cert_list_free().
 */
int ca_store_cert_list(struct ca_store *s, const char *service, const char *status,
                       struct ca_cert **out, size_t *n, struct meshtls_err *err);
void ca_cert_clear(struct ca_cert *c);
void ca_cert_list_free(struct ca_cert *v, size_t n);

/** Append an audit event (issue, rotate, revoke, register, init, crl). */
int ca_store_audit(struct ca_store *s, const char *action, const char *service,
                   const char *serial, const char *detail, struct meshtls_err *err);

/** Path of the database file (for messages). */
const char *ca_store_path(const struct ca_store *s);

#endif
