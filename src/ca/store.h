/*
 * store.h - the CA's store: services, certificates, metadata and the audit
 * log, behind an ops table so that a second backend (PostgreSQL, for several
 * CA servers sharing state) can be added without touching src/ca/pki.c.
 *
 * One implementation (store_db.c) on the database layer (src/db/db.h) for
 * both backends: SQLite, one file (DIR/meshtls.db), and PostgreSQL, one
 * database shared by several CA servers and commands (docs/CONTROL-PLANE.md).
 * Numbered migrations, parameterized SQL only.  A store is named by a
 * directory or a URL (sqlite:PATH, postgres://...).  A directory's store is
 * the URL in DIR/store.url if that file exists (the CA's key files stay in
 * DIR on every host; the data is in the database it names), else
 * DIR/meshtls.db.
 *
 * Rules every backend follows:
 *   - every change runs between begin() and commit(); begin() takes the
 *     write lock at once (SQLite: BEGIN IMMEDIATE; PostgreSQL: one advisory
 *     lock for the whole CA, held to the end of the transaction), so two CA
 *     commands or servers never interleave; a lock that is not released
 *     within ~2 s (SQLite) or 5 s (PostgreSQL) is MESHTLS_ESTORE "store ...
 *     is locked by another process (...)";
 *   - a missing store is MESHTLS_ENOENT, an unreadable or corrupt one
 *     MESHTLS_ESTORE, both naming the file;
 *   - strings passed in are borrowed for the duration of the call; strings
 *     returned in structs are new allocations the caller owns.
 *
 * Errors follow meshtls/err.h.
 */
#ifndef MESHTLS_CA_STORE_H
#define MESHTLS_CA_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "meshtls/err.h"

/** A registered service.  Strings owned by the struct; free with ca_service_clear(). */
struct ca_service {
    char *name;      /* [a-z0-9][a-z0-9._-]{0,62} */
    char *spiffe_id; /* unique across services */
    char **dns;      /* DNS SANs */
    size_t n_dns;
    char **ips; /* IP SANs, as given (v4 or v6 text) */
    size_t n_ips;
};

/** A certificate row.  Strings owned; free with ca_cert_clear(). */
struct ca_cert {
    char *serial;                  /* lower-case hex, no leading zeros; unique */
    char *service;                 /* the service it was issued to */
    int64_t not_before, not_after; /* Unix seconds */
    char *status;                  /* active | superseded | revoked ("expired" is computed) */
    char *out_dir;                 /* where issue/rotate wrote the files */
    char *cert_pem;                /* the leaf */
    char *pubkey_pem;              /* for re-signing CSR-issued certificates */
    int key_held;                  /* 1: we generated (and wrote) the key; 0: signed a CSR */
    int64_t revoked_at;            /* Unix seconds, 0 if not revoked */
    char *reason;                  /* RFC 5280 CRLReason name, NULL if not revoked */
};

struct ca_store;

/**
 * What a backend implements.  Each function has the meaning of the
 * ca_store_* wrapper of the same name below.
 */
struct ca_store_ops {
    const char *name; /* "db" */
    void (*close)(struct ca_store *s);
    int (*begin)(struct ca_store *s, struct meshtls_err *err);
    int (*commit)(struct ca_store *s, struct meshtls_err *err);
    void (*rollback)(struct ca_store *s);
    int (*meta_get)(struct ca_store *s, const char *key, char **out, struct meshtls_err *err);
    int (*meta_set)(struct ca_store *s, const char *key, const char *value,
                    struct meshtls_err *err);
    int (*service_put)(struct ca_store *s, const struct ca_service *svc, int *updated,
                       struct meshtls_err *err);
    int (*service_get)(struct ca_store *s, const char *name, struct ca_service *out,
                       struct meshtls_err *err);
    int (*cert_insert)(struct ca_store *s, const struct ca_cert *c, struct meshtls_err *err);
    int (*cert_set_status)(struct ca_store *s, const char *serial, const char *status,
                           const char *reason, const char *replaced_by, struct meshtls_err *err);
    int (*cert_get)(struct ca_store *s, const char *serial, struct ca_cert *out,
                    struct meshtls_err *err);
    int (*cert_list)(struct ca_store *s, const char *service, const char *status,
                     struct ca_cert **out, size_t *n, struct meshtls_err *err);
    int (*audit)(struct ca_store *s, const char *action, const char *service, const char *serial,
                 const char *detail, struct meshtls_err *err);
    int (*meta_find)(struct ca_store *s, const char *key, char **out, struct meshtls_err *err);
    int (*service_list)(struct ca_store *s, struct ca_service **out, size_t *n,
                        struct meshtls_err *err);
    int (*service_unregister)(struct ca_store *s, const char *name, struct meshtls_err *err);
    int (*cert_set_out_dir)(struct ca_store *s, const char *serial, const char *out_dir,
                            struct meshtls_err *err);
};

/**
 * The part every backend shares; a backend's own struct starts with it
 * (`struct sq_store { struct ca_store base; struct mt_db *db; ... }`).
 */
struct ca_store {
    const struct ca_store_ops *ops;
    char path[4096]; /* what messages name: a file, or a database URL without password */
};

/** The file of a CA directory that names its store by URL (one line; see ca_store_locate). */
#define CA_STORE_URL_FILE "store.url"

/**
 * Open the CA store `store` (borrowed): a CA directory (its store is the URL
 * in DIR/store.url, else DIR/meshtls.db) or a store URL (sqlite:PATH,
 * postgres://...; messages name it without its password).  `create` makes
 * it (and applies the migrations; a database that already holds a CA is
 * MESHTLS_EEXIST); otherwise it must exist (MESHTLS_ENOENT).  An existing
 * store is migrated to the current schema; a store newer than this meshtls
 * is refused.
 * @param out on success, a new store the caller closes with ca_store_close().
 */
int ca_store_open(const char *store, int create, struct ca_store **out, struct meshtls_err *err);

/**
 * The URL of the store `store` names (a directory or a URL, borrowed) into
 * `url` (cap bytes): a URL as is; a directory: the URL given to ca_store_use()
 * for it, else the first line of DIR/store.url if it exists, else
 * sqlite:DIR/meshtls.db.  Refused
 * (MESHTLS_EINVAL / MESHTLS_EDENIED, naming the file): DIR/store.url beside a
 * DIR/meshtls.db (which store is meant?), an empty or unreadable one, and one
 * whose URL carries a password while others may read the file (put the
 * password in ~/.pgpass or PGPASSWORD, or chmod 600 it).  The URL may hold a
 * password: the caller wipes `url` after use (OPENSSL_cleanse).
 */
int ca_store_locate(const char *store, char *url, size_t cap, struct meshtls_err *err);

/**
 * For the rest of this process, the CA directory `dir` keeps its data in the store `url`
 * (both borrowed, copied): what a --store URL flag beside --dir means, without writing
 * DIR/store.url.  ca_store_locate(), and so ca_store_open() and every ca_* function given
 * that directory (the same directory however spelled: compared by realpath), use `url`.
 * One directory at a time (a later call replaces it); `url` NULL forgets it.  Call it
 * before starting threads.  @return 0, or MESHTLS_EINVAL for a bad URL or directory.
 */
int ca_store_use(const char *dir, const char *url, struct meshtls_err *err);

/** The PostgreSQL backend at `url`; `dir` (may be NULL) for hints.  As ca_store_open(). */
int ca_store_pg_open(const char *url, const char *dir, int create, struct ca_store **out,
                     struct meshtls_err *err);

#define CA_META_KEY_MAX 320
/**
 * The stored name of the metadata `key` into `out` (cap bytes, at least
 * CA_META_KEY_MAX).  In a store `shared` by several hosts (PostgreSQL), keys
 * whose value is a path on one host (crl_out: where this host publishes the
 * CRL) are kept per host, as KEY@HOSTNAME; every other key, and every key of
 * a SQLite store, is itself.
 */
void ca_store_meta_key(int shared, const char *key, char *out, size_t cap);

/** The SQLite store DIR/meshtls.db (whatever DIR/store.url says).  As ca_store_open(). */
int ca_store_sqlite_open(const char *dir, int create, struct ca_store **out,
                         struct meshtls_err *err);

/** The SQLite backend on the file `path`.  Same contract as ca_store_open(). */
int ca_store_sqlite_open_file(const char *path, int create, struct ca_store **out,
                              struct meshtls_err *err);

/**
 * For a long-running server that commits many small transactions on `s` (borrowed):
 * on SQLite, journal_mode PERSIST on this connection, so that a commit overwrites the
 * rollback journal's header instead of creating and deleting the file (on ext4 that
 * inode churn was half of the kernel time of an issuance); durability is that of the
 * default mode, and other connections keep theirs.  Nothing to do for other backends.
 */
int ca_store_tune_server(struct ca_store *s, struct meshtls_err *err);

/** Close and free `s` (NULL is fine); an open transaction is rolled back. */
void ca_store_close(struct ca_store *s);

/** Start a write transaction (takes the lock now). */
int ca_store_begin(struct ca_store *s, struct meshtls_err *err);
/** Commit it; on failure the caller still calls ca_store_rollback(). */
int ca_store_commit(struct ca_store *s, struct meshtls_err *err);
/** Roll back; harmless without a transaction. */
void ca_store_rollback(struct ca_store *s);

/**
 * Metadata: trust_domain, key_type, crl_number.
 * @param out a new string the caller frees; MESHTLS_ESTORE if the key is absent.
 */
int ca_store_meta_get(struct ca_store *s, const char *key, char **out, struct meshtls_err *err);
/** Insert or replace a metadata value (borrowed). */
int ca_store_meta_set(struct ca_store *s, const char *key, const char *value,
                      struct meshtls_err *err);

/**
 * Insert or update the service `svc` (borrowed).  *updated = 1 if it
 * existed.  A SPIFFE ID already used by another service is MESHTLS_EEXIST.
 */
int ca_store_service_put(struct ca_store *s, const struct ca_service *svc, int *updated,
                         struct meshtls_err *err);
/** Load a service into *out (caller clears); MESHTLS_ENOENT naming it if unknown. */
int ca_store_service_get(struct ca_store *s, const char *name, struct ca_service *out,
                         struct meshtls_err *err);
/** Free the strings of `svc` and zero it. */
void ca_service_clear(struct ca_service *svc);

/** Record a new certificate (borrowed); a duplicate serial is MESHTLS_EEXIST. */
int ca_store_cert_insert(struct ca_store *s, const struct ca_cert *c, struct meshtls_err *err);
/**
 * Set the status of `serial`; "revoked" also records the time and `reason`;
 * `replaced_by` (optional) records the serial that replaced it.
 */
int ca_store_cert_set_status(struct ca_store *s, const char *serial, const char *status,
                             const char *reason, const char *replaced_by, struct meshtls_err *err);
/** Load one certificate into *out (caller clears); MESHTLS_ENOENT if none. */
int ca_store_cert_get(struct ca_store *s, const char *serial, struct ca_cert *out,
                      struct meshtls_err *err);
/**
 * List certificates (of one `service` or all if NULL, with one `status` or
 * any if NULL), oldest first.
 * @param out a new array of *n entries; free with ca_cert_list_free().
 */
int ca_store_cert_list(struct ca_store *s, const char *service, const char *status,
                       struct ca_cert **out, size_t *n, struct meshtls_err *err);
/** Free the strings of `c` and zero it. */
void ca_cert_clear(struct ca_cert *c);
/** Free an array from ca_store_cert_list() (NULL is fine). */
void ca_cert_list_free(struct ca_cert *v, size_t n);

/** Append an audit event (init, register, issue, rotate, revoke, replace, crl). */
int ca_store_audit(struct ca_store *s, const char *action, const char *service, const char *serial,
                   const char *detail, struct meshtls_err *err);

/**
 * Metadata that may be absent (crl_out, root_crl_number, ...).
 * @param out a new string the caller frees, or NULL when the key is absent (not an error).
 */
int ca_store_meta_find(struct ca_store *s, const char *key, char **out, struct meshtls_err *err);

/**
 * The registered services, by name (unregistered ones are left out).
 * @param out a new array of *n entries; free with ca_service_list_free().
 */
int ca_store_service_list(struct ca_store *s, struct ca_service **out, size_t *n,
                          struct meshtls_err *err);
/** Free an array from ca_store_service_list() (NULL is fine). */
void ca_service_list_free(struct ca_service *v, size_t n);

/**
 * Mark `name` unregistered: service_get() no longer finds it, its rows and
 * certificates stay (revoked ones stay in the CRL until they expire).
 * Registering the name again clears the mark.
 */
int ca_store_service_unregister(struct ca_store *s, const char *name, struct meshtls_err *err);

/** Record that `serial`'s files now live in `out_dir` (borrowed; absolute). */
int ca_store_cert_set_out_dir(struct ca_store *s, const char *serial, const char *out_dir,
                              struct meshtls_err *err);

/** Path of the store (for messages); borrowed from `s`. */
const char *ca_store_path(const struct ca_store *s);

#endif
