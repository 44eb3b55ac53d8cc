/*
 * store_db.c - the CA store (see store.h) on the database layer (src/db/db.h):
 * one implementation for SQLite and PostgreSQL, with per-backend SQL only where
 * the two differ (the migrations' types, row order, the write lock).
 *
 * SQLite: the file format is that of every meshtls.db made so far: the same
 * tables, and schema_migrations (version, applied_at) recording what is
 * applied, so opening an older store upgrades it and opening a newer one is
 * refused (tests/unit/ca/test_ca_store_compat.c opens a store captured from
 * the code before src/db).  The busy timeout is short (2 s): a CA command that
 * finds the store locked by another process says so rather than hanging.
 *
 * PostgreSQL: the same tables (BIGINT times, a BIGSERIAL insertion order for
 * certificates where SQLite has its rowid), shared by every CA server and
 * command pointed at the database.  begin() is SQLite's BEGIN IMMEDIATE made
 * portable: READ COMMITTED plus one transaction-scoped advisory lock, so CA
 * writes from every host run one after another (serials, CRL numbers and
 * revocation epochs are allocated under it) and never fail with a
 * serialization error that pki.c would have to retry.  Waits are bounded: the
 * lock 5 s (then "locked by another process"), a statement 10 s, a connection
 * 3 s.
 *
 * The store keeps one connection for its whole life: a CA command is one thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "store.h"

/* The backend's store: the shared part first (see store.h). */
struct sq_store {
    struct ca_store base;
    struct mt_db *db;     /* owned */
    struct mt_db_conn *c; /* acquired from db for the store's life */
    int pg;               /* PostgreSQL (else SQLite) */
};

#define CONN(s) (((struct sq_store *)(s))->c)
#define IS_PG(s) (((struct sq_store *)(s))->pg)

/* The key of the CA-wide write lock on PostgreSQL (pg_advisory_xact_lock): FNV-1a of
 * "meshtls:ca-store-write", so that it does not collide with the migrations' locks. */
#define PG_WRITE_LOCK "3517158005470668401"

static const struct ca_store_ops SQ_OPS;
static int sq_service_get(struct ca_store *s, const char *name, struct ca_service *out,
                          struct meshtls_err *err);
static void sq_close(struct ca_store *s);

static const struct mt_db_migration MIGRATIONS[] = {
    /* 1: the initial schema */
    {1,
     "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
     "CREATE TABLE services ("
     "  name TEXT PRIMARY KEY,"
     "  spiffe_id TEXT NOT NULL UNIQUE,"
     "  dns TEXT NOT NULL DEFAULT ''," /* newline-separated */
     "  ips TEXT NOT NULL DEFAULT '',"
     "  created_at INTEGER NOT NULL,"
     "  updated_at INTEGER NOT NULL);"
     "CREATE TABLE certificates ("
     "  serial TEXT PRIMARY KEY,"
     "  service TEXT NOT NULL REFERENCES services(name),"
     "  not_before INTEGER NOT NULL,"
     "  not_after INTEGER NOT NULL,"
     "  status TEXT NOT NULL CHECK (status IN ('active','superseded','revoked')),"
     "  out_dir TEXT,"
     "  cert_pem TEXT NOT NULL,"
     "  pubkey_pem TEXT NOT NULL,"
     "  key_held INTEGER NOT NULL,"
     "  issued_at INTEGER NOT NULL,"
     "  revoked_at INTEGER,"
     "  reason TEXT,"
     "  replaced_by TEXT);"
     "CREATE INDEX certificates_service ON certificates(service, status);"
     "CREATE TABLE audit ("
     "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
     "  at INTEGER NOT NULL,"
     "  action TEXT NOT NULL,"
     "  service TEXT,"
     "  serial TEXT,"
     "  detail TEXT);",
     /* PostgreSQL: the same, with 64-bit times and `seq`, the insertion order that
      * SQLite's rowid gives (cert_list lists oldest first; pki.c takes the last) */
     "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
     "CREATE TABLE services ("
     "  name TEXT PRIMARY KEY,"
     "  spiffe_id TEXT NOT NULL UNIQUE,"
     "  dns TEXT NOT NULL DEFAULT '',"
     "  ips TEXT NOT NULL DEFAULT '',"
     "  created_at BIGINT NOT NULL,"
     "  updated_at BIGINT NOT NULL);"
     "CREATE TABLE certificates ("
     "  seq BIGSERIAL UNIQUE,"
     "  serial TEXT PRIMARY KEY,"
     "  service TEXT NOT NULL REFERENCES services(name),"
     "  not_before BIGINT NOT NULL,"
     "  not_after BIGINT NOT NULL,"
     "  status TEXT NOT NULL CHECK (status IN ('active','superseded','revoked')),"
     "  out_dir TEXT,"
     "  cert_pem TEXT NOT NULL,"
     "  pubkey_pem TEXT NOT NULL,"
     "  key_held INTEGER NOT NULL,"
     "  issued_at BIGINT NOT NULL,"
     "  revoked_at BIGINT,"
     "  reason TEXT,"
     "  replaced_by TEXT);"
     "CREATE INDEX certificates_service ON certificates(service, status);"
     "CREATE INDEX certificates_status ON certificates(status);"
     "CREATE TABLE audit ("
     "  id BIGSERIAL PRIMARY KEY,"
     "  at BIGINT NOT NULL,"
     "  action TEXT NOT NULL,"
     "  service TEXT,"
     "  serial TEXT,"
     "  detail TEXT);"},
    /* 2: `ca unregister` (issue 9).  A service row stays while certificates name it
     * (revoked ones must stay in the CRL until they expire), so unregistering marks it. */
    {2, "ALTER TABLE services ADD COLUMN unregistered_at INTEGER;",
     "ALTER TABLE services ADD COLUMN unregistered_at BIGINT;"},
};
#define N_MIGRATIONS (sizeof(MIGRATIONS) / sizeof(MIGRATIONS[0]))

/*
 * Set err from a failed store call: a lock held elsewhere says so (and what
 * to do); anything else names the store, what was done and SQLite's message.
 * Errors that are not the database's (out of memory, ...) pass through.
 */
static int db_err(struct ca_store *s, int rc, struct meshtls_err *err, const char *what)
{
    if (rc != MESHTLS_ESTORE)
        return rc;
    struct mt_db_conn *c = CONN(s);
    if (mt_db_errkind(c) == MT_DB_ERR_RETRY)
        return meshtls_err_set(err, MESHTLS_ESTORE,
                               "store %s is locked by another process (%s); wait for it to "
                               "finish and retry",
                               s->path, what);
    if (mt_db_errkind(c) == MT_DB_OK) /* set by this layer, not the database: keep it */
        return rc;
    return meshtls_err_set(err, MESHTLS_ESTORE, "store %s: %s: %s", s->path, what, mt_db_errmsg(c));
}

/* Run one statement; `what` is for the message. */
static int exec(struct ca_store *s, const char *sql, const struct mt_db_param *p, size_t n,
                const char *what, struct meshtls_err *err)
{
    int rc = mt_db_exec(CONN(s), sql, p, n, NULL, err);
    return rc ? db_err(s, rc, err, what) : 0;
}

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

/*
 * Open the SQLite store at `path`; `dir` (may be NULL) is the CA directory
 * it was derived from, for the "run meshtls ca init" hint.
 */
static int open_file(const char *path, const char *dir, int create, struct ca_store **out,
                     struct meshtls_err *err)
{
    int rc;
    struct sq_store *q = calloc(1, sizeof(*q));
    struct ca_store *s = &q->base;
    if (!q)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    s->ops = &SQ_OPS;
    snprintf(s->path, sizeof(s->path), "%s", path);
    struct stat st;
    if (!create && stat(s->path, &st) != 0) {
        if (dir)
            rc = meshtls_err_set(err, MESHTLS_ENOENT,
                                 "no CA in %s (no meshtls.db): run 'meshtls ca init --dir %s "
                                 "--trust-domain TD' first, or check --dir",
                                 dir, dir);
        else
            rc = meshtls_err_set(err, MESHTLS_ENOENT,
                                 "no CA store at %s: run 'meshtls ca init' with this store "
                                 "first, or check --store",
                                 s->path);
        goto fail;
    }
    if (!create && !S_ISREG(st.st_mode)) {
        rc = meshtls_err_set(err, MESHTLS_ESTORE, "store %s is not a regular file", s->path);
        goto fail;
    }
    if (create) { /* 0600 from the first byte, and never over an existing store */
        int fd = open(s->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd == -1) {
            rc = meshtls_err_set(err, errno == EEXIST ? MESHTLS_EEXIST : MESHTLS_EIO,
                                 "cannot create store %s: %s", s->path, strerror(errno));
            goto fail;
        }
        close(fd);
    }
    char url[4200];
    snprintf(url, sizeof(url), "sqlite:%s", s->path);
    struct mt_db_opts o = {.pool_size = 1, .busy_timeout_ms = 2000, .must_exist = 1};
    /* a file that is no database, or one locked elsewhere, fails here naming the file */
    if ((rc = mt_db_open(url, &o, &q->db, err)))
        goto fail;
    if ((rc = mt_db_acquire(q->db, &q->c, err)))
        goto fail;
    if ((rc =
             exec(s, "PRAGMA journal_mode = DELETE", NULL, 0, "PRAGMA journal_mode = DELETE", err)))
        goto fail;
    if ((rc = mt_db_migrate_conn(q->c, "schema_migrations", MIGRATIONS, N_MIGRATIONS, NULL, err))) {
        rc = db_err(s, rc, err, "applying migrations");
        goto fail;
    }
    *out = s;
    return 0;
fail:
    sq_close(s);
    return rc;
}

/* Whether the CA's tables exist in the database (PostgreSQL), into *out. */
static int pg_has_tables(struct ca_store *s, int *out, struct meshtls_err *err)
{
    struct mt_db_rows *r = NULL;
    int rc = mt_db_query(CONN(s), "SELECT to_regclass('meta') IS NOT NULL", NULL, 0, &r, err);
    if (rc)
        return db_err(s, rc, err, "looking for the CA's tables");
    int n = mt_db_row_next(r, err);
    *out = n == 1 && mt_db_col_int64(r, 0) == 1;
    mt_db_rows_close(r);
    return n < 0 ? db_err(s, n, err, "looking for the CA's tables") : 0;
}

int ca_store_pg_open(const char *url, const char *dir, int create, struct ca_store **out,
                     struct meshtls_err *err)
{
    struct mt_db_url u;
    int rc = mt_db_url_parse(url, &u, err);
    if (rc)
        return rc;
    struct sq_store *q = calloc(1, sizeof(*q));
    if (!q)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    struct ca_store *s = &q->base;
    s->ops = &SQ_OPS;
    q->pg = 1;
    snprintf(s->path, sizeof(s->path), "%s", u.redacted);
    /* bounded waits: a database that is down or stuck is an error within seconds (the
     * control plane answers 503), never a hung command or server thread */
    struct mt_db_opts o = {.pool_size = 1, .connect_timeout_s = 3, .statement_timeout_ms = 10000};
    int exists = 0;
    char *td = NULL;
    if ((rc = mt_db_open(url, &o, &q->db, err)) || (rc = mt_db_acquire(q->db, &q->c, err)) ||
        (rc = pg_has_tables(s, &exists, err)))
        goto fail;
    if (!exists && !create) {
        rc = meshtls_err_set(err, MESHTLS_ENOENT,
                             "no CA in database %s (no CA tables): create it with 'meshtls ca "
                             "init --dir %s --trust-domain TD' (with the store named in "
                             "%s/" CA_STORE_URL_FILE "), or check the URL",
                             s->path, dir ? dir : "DIR", dir ? dir : "DIR");
        goto fail;
    }
    if ((rc = mt_db_migrate_conn(q->c, "schema_migrations", MIGRATIONS, N_MIGRATIONS, NULL, err))) {
        rc = db_err(s, rc, err, "applying migrations");
        goto fail;
    }
    if (create && (rc = s->ops->meta_find(s, "trust_domain", &td, err)) == 0 && td) {
        /* another host made this CA: its key files are what this host needs */
        rc = meshtls_err_set(
            err, MESHTLS_EEXIST,
            "database %s already holds a CA (trust domain %s): refusing to "
            "create another; to serve it from this host too, copy root.crt, root.crl, "
            "intermediate.crt, intermediate.key (0600) and ca.crt from the "
            "first host's CA directory",
            s->path, td);
        free(td);
        goto fail;
    }
    if (rc)
        goto fail;
    *out = s;
    return 0;
fail:
    sq_close(s);
    return rc;
}

int ca_store_sqlite_open(const char *dir, int create, struct ca_store **out,
                         struct meshtls_err *err)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof(path), "%s/meshtls.db", dir) >= sizeof(path))
        return meshtls_err_set(err, MESHTLS_EINVAL, "CA directory path too long: %.64s...", dir);
    return open_file(path, dir, create, out, err);
}

int ca_store_sqlite_open_file(const char *path, int create, struct ca_store **out,
                              struct meshtls_err *err)
{
    return open_file(path, NULL, create, out, err);
}

int ca_store_tune_server(struct ca_store *s, struct meshtls_err *err)
{
    if (IS_PG(s)) /* SQLite's journal; PostgreSQL has its own WAL */
        return 0;
    return exec(s, "PRAGMA journal_mode = PERSIST", NULL, 0, "PRAGMA journal_mode = PERSIST", err);
}

static void sq_close(struct ca_store *s)
{
    if (!s)
        return;
    struct sq_store *q = (struct sq_store *)s;
    mt_db_release(q->c); /* rolls back an open transaction */
    mt_db_close(q->db);
    free(q);
}

static int sq_begin(struct ca_store *s, struct meshtls_err *err)
{
    int rc = mt_db_begin(CONN(s), err);
    if (rc)
        return db_err(s, rc, err, "BEGIN IMMEDIATE");
    if (!IS_PG(s))
        return 0;
    /* PostgreSQL: the CA-wide write lock, as SQLite's BEGIN IMMEDIATE takes the file's.
     * READ COMMITTED (set before the first query, so allowed after BEGIN ... SERIALIZABLE):
     * under the lock every statement sees the previous writer's committed rows. */
    struct mt_db_rows *r = NULL;
    if ((rc = mt_db_exec(CONN(s), "SET TRANSACTION ISOLATION LEVEL READ COMMITTED", NULL, 0, NULL,
                         err)) ||
        (rc = mt_db_exec(CONN(s), "SET LOCAL lock_timeout = '5s'", NULL, 0, NULL, err)) ||
        (rc = mt_db_query(CONN(s), "SELECT pg_advisory_xact_lock(" PG_WRITE_LOCK ")", NULL, 0, &r,
                          err)) ||
        (rc = mt_db_row_next(r, err) < 0 ? MESHTLS_ESTORE : 0)) {
        mt_db_rows_close(r);
        mt_db_rollback(CONN(s));
        return db_err(s, rc, err, "taking the CA's write lock");
    }
    mt_db_rows_close(r);
    return 0;
}

static int sq_commit(struct ca_store *s, struct meshtls_err *err)
{
    int rc = mt_db_commit(CONN(s), err);
    return rc ? db_err(s, rc, err, "COMMIT") : 0;
}

static void sq_rollback(struct ca_store *s)
{
    mt_db_rollback(CONN(s));
}

static char *col_dup(struct mt_db_rows *r, int i)
{
    const char *t = mt_db_col_text(r, i);
    return t ? strdup(t) : NULL;
}

static int sq_meta_get(struct ca_store *s, const char *key, char **out, struct meshtls_err *err)
{
    struct mt_db_rows *r = NULL;
    char k[CA_META_KEY_MAX];
    ca_store_meta_key(IS_PG(s), key, k, sizeof(k));
    struct mt_db_param p[] = {MT_DB_TEXT(k)};
    int rc = mt_db_query(CONN(s), "SELECT value FROM meta WHERE key = $1", p, 1, &r, err);
    if (rc)
        return db_err(s, rc, err, "reading meta");
    int n = mt_db_row_next(r, err);
    if (n == 1) {
        *out = col_dup(r, 0);
        rc = *out ? 0 : meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    } else if (n == 0) {
        rc = meshtls_err_set(err, MESHTLS_ESTORE, "store %s has no '%s': is it a meshtls CA?",
                             s->path, key);
    } else {
        rc = db_err(s, n, err, "reading meta");
    }
    mt_db_rows_close(r);
    return rc;
}

static int sq_meta_set(struct ca_store *s, const char *key, const char *value,
                       struct meshtls_err *err)
{
    char k[CA_META_KEY_MAX];
    ca_store_meta_key(IS_PG(s), key, k, sizeof(k));
    struct mt_db_param p[] = {MT_DB_TEXT(k), MT_DB_TEXT(value)};
    return exec(s,
                "INSERT INTO meta(key, value) VALUES ($1, $2) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                p, 2, "writing meta", err);
}

/* Join `v` with newlines into a new string. */
static char *join(char **v, size_t n)
{
    size_t len = 1;
    for (size_t i = 0; i < n; i++)
        len += strlen(v[i]) + 1;
    char *out = malloc(len), *p = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(v[i]);
        memcpy(p, v[i], l);
        p += l;
        if (i + 1 < n)
            *p++ = '\n';
    }
    *p = '\0';
    return out;
}

/* Split a newline-separated list. */
static int split(const char *s, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!s || !*s)
        return 0;
    size_t cnt = 1;
    for (const char *p = s; *p; p++)
        cnt += *p == '\n';
    char **v = calloc(cnt, sizeof(*v));
    if (!v)
        return MESHTLS_ENOMEM;
    const char *p = s;
    for (size_t i = 0; i < cnt; i++) {
        const char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        v[i] = strndup(p, l);
        if (!v[i]) {
            for (size_t j = 0; j < i; j++)
                free(v[j]);
            free(v);
            return MESHTLS_ENOMEM;
        }
        p = nl ? nl + 1 : p + l;
    }
    *out = v;
    *n = cnt;
    return 0;
}

static int sq_service_put(struct ca_store *s, const struct ca_service *svc, int *updated,
                          struct meshtls_err *err)
{
    int rc = 0;
    struct ca_service old = {0};
    *updated = sq_service_get(s, svc->name, &old, NULL) == 0;
    ca_service_clear(&old);
    char *dns = join(svc->dns, svc->n_dns), *ips = join(svc->ips, svc->n_ips);
    if (!dns || !ips) {
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
        goto out;
    }
    struct mt_db_param p[] = {MT_DB_TEXT(svc->name), MT_DB_TEXT(svc->spiffe_id),
                              MT_DB_TEXT(dns),       MT_DB_TEXT(ips),
                              MT_DB_INT64(now_s()),  MT_DB_INT64(now_s())};
    rc = mt_db_exec(CONN(s),
                    "INSERT INTO services(name, spiffe_id, dns, ips, created_at, updated_at) "
                    "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT(name) DO UPDATE SET "
                    "spiffe_id = excluded.spiffe_id, dns = excluded.dns, ips = excluded.ips, "
                    "updated_at = excluded.updated_at, unregistered_at = NULL",
                    p, 6, NULL, err);
    if (rc) {
        if (rc == MESHTLS_ESTORE && mt_db_errkind(CONN(s)) == MT_DB_ERR_UNIQUE)
            rc = meshtls_err_set(err, MESHTLS_EEXIST,
                                 "SPIFFE ID %s is already registered to another service (an "
                                 "unregistered service keeps its ID: see 'meshtls ca list' "
                                 "for whose certificates carry it)",
                                 svc->spiffe_id);
        else
            rc = db_err(s, rc, err, "registering the service");
    }
out:
    free(dns);
    free(ips);
    return rc;
}

static int sq_service_get(struct ca_store *s, const char *name, struct ca_service *out,
                          struct meshtls_err *err)
{
    struct mt_db_rows *r = NULL;
    struct mt_db_param p[] = {MT_DB_TEXT(name)};
    int rc = mt_db_query(CONN(s),
                         "SELECT name, spiffe_id, dns, ips FROM services WHERE name = $1 "
                         "AND unregistered_at IS NULL",
                         p, 1, &r, err);
    if (rc)
        return db_err(s, rc, err, "reading the service");
    int n = mt_db_row_next(r, err);
    if (n == 1) {
        memset(out, 0, sizeof(*out));
        out->name = col_dup(r, 0);
        out->spiffe_id = col_dup(r, 1);
        if (!out->name || !out->spiffe_id || split(mt_db_col_text(r, 2), &out->dns, &out->n_dns) ||
            split(mt_db_col_text(r, 3), &out->ips, &out->n_ips)) {
            ca_service_clear(out);
            rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
        }
    } else if (n == 0) {
        rc = meshtls_err_set(err, MESHTLS_ENOENT,
                             "service '%s' is not registered; register it first with "
                             "'meshtls ca register --dir DIR %s'",
                             name, name);
    } else {
        rc = db_err(s, n, err, "reading the service");
    }
    mt_db_rows_close(r);
    return rc;
}

static int sq_service_list(struct ca_store *s, struct ca_service **out, size_t *n,
                           struct meshtls_err *err)
{
    struct mt_db_rows *r = NULL;
    int rc = mt_db_query(CONN(s),
                         "SELECT name, spiffe_id, dns, ips FROM services WHERE unregistered_at IS "
                         "NULL ORDER BY name",
                         NULL, 0, &r, err);
    if (rc)
        return db_err(s, rc, err, "listing services");
    struct ca_service *v = NULL;
    size_t cnt = 0, cap = 0;
    int more;
    while ((more = mt_db_row_next(r, err)) == 1) {
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 16;
            struct ca_service *nv = realloc(v, nc * sizeof(*nv));
            if (!nv) {
                rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
                break;
            }
            v = nv;
            cap = nc;
        }
        struct ca_service *o = &v[cnt];
        memset(o, 0, sizeof(*o));
        o->name = col_dup(r, 0);
        o->spiffe_id = col_dup(r, 1);
        cnt++;
        if (!o->name || !o->spiffe_id || split(mt_db_col_text(r, 2), &o->dns, &o->n_dns) ||
            split(mt_db_col_text(r, 3), &o->ips, &o->n_ips)) {
            rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
            break;
        }
    }
    if (!rc && more < 0)
        rc = db_err(s, more, err, "listing services");
    mt_db_rows_close(r);
    if (rc) {
        ca_service_list_free(v, cnt);
        return rc;
    }
    *out = v;
    *n = cnt;
    return 0;
}

static int sq_service_unregister(struct ca_store *s, const char *name, struct meshtls_err *err)
{
    struct mt_db_param p[] = {MT_DB_INT64(now_s()), MT_DB_TEXT(name)};
    return exec(s, "UPDATE services SET unregistered_at = $1 WHERE name = $2", p, 2,
                "unregistering the service", err);
}

static int sq_meta_find(struct ca_store *s, const char *key, char **out, struct meshtls_err *err)
{
    struct mt_db_rows *r = NULL;
    char k[CA_META_KEY_MAX];
    ca_store_meta_key(IS_PG(s), key, k, sizeof(k));
    struct mt_db_param p[] = {MT_DB_TEXT(k)};
    *out = NULL;
    int rc = mt_db_query(CONN(s), "SELECT value FROM meta WHERE key = $1", p, 1, &r, err);
    if (rc)
        return db_err(s, rc, err, "reading meta");
    int n = mt_db_row_next(r, err);
    if (n == 1 && !(*out = col_dup(r, 0)))
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    else if (n < 0)
        rc = db_err(s, n, err, "reading meta");
    mt_db_rows_close(r);
    return rc;
}

static int sq_cert_set_out_dir(struct ca_store *s, const char *serial, const char *out_dir,
                               struct meshtls_err *err)
{
    struct mt_db_param p[] = {MT_DB_TEXT(out_dir), MT_DB_TEXT(serial)};
    return exec(s, "UPDATE certificates SET out_dir = $1 WHERE serial = $2", p, 2,
                "updating the certificate's directory", err);
}

static int sq_cert_insert(struct ca_store *s, const struct ca_cert *c, struct meshtls_err *err)
{
    struct mt_db_param p[] = {MT_DB_TEXT(c->serial),      MT_DB_TEXT(c->service),
                              MT_DB_INT64(c->not_before), MT_DB_INT64(c->not_after),
                              MT_DB_TEXT(c->status),      MT_DB_TEXT(c->out_dir),
                              MT_DB_TEXT(c->cert_pem),    MT_DB_TEXT(c->pubkey_pem),
                              MT_DB_INT64(c->key_held),   MT_DB_INT64(now_s())};
    int rc = mt_db_exec(CONN(s),
                        "INSERT INTO certificates(serial, service, not_before, not_after, status, "
                        "out_dir, cert_pem, pubkey_pem, key_held, issued_at) "
                        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                        p, 10, NULL, err);
    if (!rc)
        return 0;
    if (rc == MESHTLS_ESTORE && mt_db_errkind(CONN(s)) == MT_DB_ERR_UNIQUE)
        return meshtls_err_set(err, MESHTLS_EEXIST, "serial %s already issued (retry)", c->serial);
    return db_err(s, rc, err, "recording the certificate");
}

static int sq_cert_set_status(struct ca_store *s, const char *serial, const char *status,
                              const char *reason, const char *replaced_by, struct meshtls_err *err)
{
    struct mt_db_param p[] = {MT_DB_TEXT(status),      MT_DB_TEXT(reason),
                              MT_DB_TEXT(replaced_by), MT_DB_INT64(!strcmp(status, "revoked")),
                              MT_DB_INT64(now_s()),    MT_DB_TEXT(serial)};
    return exec(s,
                "UPDATE certificates SET status = $1, reason = COALESCE($2, reason), "
                "replaced_by = COALESCE($3, replaced_by), "
                "revoked_at = CASE WHEN $4 = 1 THEN CAST($5 AS BIGINT) ELSE revoked_at END "
                "WHERE serial = $6",
                p, 6, "updating the certificate", err);
}

static int row_to_cert(struct mt_db_rows *r, struct ca_cert *c)
{
    memset(c, 0, sizeof(*c));
    c->serial = col_dup(r, 0);
    c->service = col_dup(r, 1);
    c->not_before = mt_db_col_int64(r, 2);
    c->not_after = mt_db_col_int64(r, 3);
    c->status = col_dup(r, 4);
    c->out_dir = col_dup(r, 5);
    c->cert_pem = col_dup(r, 6);
    c->pubkey_pem = col_dup(r, 7);
    c->key_held = (int)mt_db_col_int64(r, 8);
    c->revoked_at = mt_db_col_int64(r, 9);
    c->reason = col_dup(r, 10);
    return c->serial && c->service && c->status && c->cert_pem && c->pubkey_pem ? 0
                                                                                : MESHTLS_ENOMEM;
}

#define CERT_COLS                                                                                  \
    "serial, service, not_before, not_after, status, out_dir, cert_pem, pubkey_pem, key_held, "    \
    "COALESCE(revoked_at, 0), reason"

static int sq_cert_get(struct ca_store *s, const char *serial, struct ca_cert *out,
                       struct meshtls_err *err)
{
    struct mt_db_rows *r = NULL;
    struct mt_db_param p[] = {MT_DB_TEXT(serial)};
    int rc = mt_db_query(CONN(s), "SELECT " CERT_COLS " FROM certificates WHERE serial = $1", p, 1,
                         &r, err);
    if (rc)
        return db_err(s, rc, err, "reading the certificate");
    int n = mt_db_row_next(r, err);
    if (n == 1) {
        if (row_to_cert(r, out)) {
            ca_cert_clear(out);
            rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
        }
    } else if (n == 0) {
        rc = meshtls_err_set(err, MESHTLS_ENOENT,
                             "no certificate with serial %s in %s; see 'meshtls ca list'", serial,
                             s->path);
    } else {
        rc = db_err(s, n, err, "reading the certificate");
    }
    mt_db_rows_close(r);
    return rc;
}

/* cert_list's statements, one per filter and backend (see there) */
#define CERT_LIST(where, order) "SELECT " CERT_COLS " FROM certificates " where " ORDER BY " order
#define CERT_LISTS(order)                                                                          \
    {                                                                                              \
        CERT_LIST("", order), CERT_LIST("WHERE service = $1", order),                              \
            CERT_LIST("WHERE status = $1", order),                                                 \
            CERT_LIST("WHERE service = $1 AND status = $2", order)                                 \
    }

static int sq_cert_list(struct ca_store *s, const char *service, const char *status,
                        struct ca_cert **out, size_t *n, struct meshtls_err *err)
{
    struct mt_db_rows *r = NULL;
    /* One statement per filter: "($1 IS NULL OR service = $1)" is planned once, without
     * the index, so every issuance (which lists the service's active certificates) would
     * scan the whole table; spelled out, both backends use certificates_service.  Oldest
     * first: by time, then in the order of insertion (SQLite's rowid, PostgreSQL's seq). */
    static const char *const sq_sql[4] = CERT_LISTS("issued_at, rowid");
    static const char *const pg_sql[4] = CERT_LISTS("issued_at, seq");
    struct mt_db_param p[2];
    size_t np = 0;
    if (service)
        p[np++] = MT_DB_TEXT(service);
    if (status)
        p[np++] = MT_DB_TEXT(status);
    int k = (service ? 1 : 0) + (status ? 2 : 0);
    int rc = mt_db_query(CONN(s), IS_PG(s) ? pg_sql[k] : sq_sql[k], p, np, &r, err);
    if (rc)
        return db_err(s, rc, err, "listing certificates");
    struct ca_cert *v = NULL;
    size_t cnt = 0, cap = 0;
    int more;
    while ((more = mt_db_row_next(r, err)) == 1) {
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 16;
            struct ca_cert *nv = realloc(v, nc * sizeof(*nv));
            if (!nv) {
                rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
                break;
            }
            v = nv;
            cap = nc;
        }
        if (row_to_cert(r, &v[cnt])) {
            ca_cert_clear(&v[cnt]);
            rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
            break;
        }
        cnt++;
    }
    if (!rc && more < 0)
        rc = db_err(s, more, err, "listing certificates");
    mt_db_rows_close(r);
    if (rc) {
        ca_cert_list_free(v, cnt);
        return rc;
    }
    *out = v;
    *n = cnt;
    return 0;
}

static int sq_audit(struct ca_store *s, const char *action, const char *service, const char *serial,
                    const char *detail, struct meshtls_err *err)
{
    struct mt_db_param p[] = {MT_DB_INT64(now_s()), MT_DB_TEXT(action), MT_DB_TEXT(service),
                              MT_DB_TEXT(serial), MT_DB_TEXT(detail)};
    return exec(s,
                "INSERT INTO audit(at, action, service, serial, detail) "
                "VALUES ($1, $2, $3, $4, $5)",
                p, 5, "writing the audit log", err);
}

static const struct ca_store_ops SQ_OPS = {
    .name = "db",
    .close = sq_close,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .meta_get = sq_meta_get,
    .meta_set = sq_meta_set,
    .service_put = sq_service_put,
    .service_get = sq_service_get,
    .cert_insert = sq_cert_insert,
    .cert_set_status = sq_cert_set_status,
    .cert_get = sq_cert_get,
    .cert_list = sq_cert_list,
    .audit = sq_audit,
    .meta_find = sq_meta_find,
    .service_list = sq_service_list,
    .service_unregister = sq_service_unregister,
    .cert_set_out_dir = sq_cert_set_out_dir,
};
