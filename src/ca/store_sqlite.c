/*
 * store_sqlite.c - the SQLite backend of the CA store (see store.h).
 *
 * Migrations are numbered and applied in order inside one transaction each;
 * schema_migrations records what is applied, so opening an older store
 * upgrades it and opening a newer one is refused.  The busy timeout is short
 * (2 s): a CA command that finds the store locked by another process says
 * so rather than hanging.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store.h"

/* The backend's store: the shared part first (see store.h). */
struct sq_store {
    struct ca_store base;
    sqlite3 *db; /* owned; closed by sq_close() */
};

#define DB(s) (((struct sq_store *)(s))->db)

static const struct ca_store_ops SQ_OPS;
static int sq_begin(struct ca_store *s, struct meshtls_err *err);
static int sq_commit(struct ca_store *s, struct meshtls_err *err);
static void sq_rollback(struct ca_store *s);
static int sq_service_get(struct ca_store *s, const char *name, struct ca_service *out,
                          struct meshtls_err *err);
static void sq_close(struct ca_store *s);

static const char *const MIGRATIONS[] = {
    /* 1: the initial schema */
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
};
#define N_MIGRATIONS ((int)(sizeof(MIGRATIONS) / sizeof(MIGRATIONS[0])))

static int db_err(struct ca_store *s, struct meshtls_err *err, const char *what)
{
    int code = sqlite3_errcode(DB(s));
    if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
        return meshtls_err_set(err, MESHTLS_ESTORE,
                               "store %s is locked by another process (%s); wait for it to "
                               "finish and retry",
                               s->path, what);
    return meshtls_err_set(err, MESHTLS_ESTORE, "store %s: %s: %s", s->path, what,
                           sqlite3_errmsg(DB(s)));
}

static int exec(struct ca_store *s, const char *sql, struct meshtls_err *err)
{
    if (sqlite3_exec(DB(s), sql, NULL, NULL, NULL) != SQLITE_OK) {
        char what[48]; /* the statement's start: "BEGIN IMMEDIATE", "PRAGMA ..." */
        snprintf(what, sizeof(what), "%.40s", sql);
        return db_err(s, err, what);
    }
    return 0;
}

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

static int migrate(struct ca_store *s, struct meshtls_err *err)
{
    int rc;
    sqlite3_stmt *st = NULL;
    if ((rc = exec(s,
                   "CREATE TABLE IF NOT EXISTS schema_migrations ("
                   "version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
                   err)))
        return rc;
    int have = 0;
    if (sqlite3_prepare_v2(DB(s), "SELECT COALESCE(MAX(version),0) FROM schema_migrations", -1, &st,
                           NULL) != SQLITE_OK)
        return db_err(s, err, "reading schema version");
    if (sqlite3_step(st) == SQLITE_ROW)
        have = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (have > N_MIGRATIONS)
        return meshtls_err_set(err, MESHTLS_ESTORE,
                               "store %s has schema version %d, newer than this meshtls (%d); "
                               "upgrade meshtls",
                               s->path, have, N_MIGRATIONS);
    for (int v = have + 1; v <= N_MIGRATIONS; v++) {
        if ((rc = sq_begin(s, err)))
            return rc;
        if ((rc = exec(s, MIGRATIONS[v - 1], err))) {
            sq_rollback(s);
            return rc;
        }
        if (sqlite3_prepare_v2(DB(s), "INSERT INTO schema_migrations VALUES (?, ?)", -1, &st,
                               NULL) != SQLITE_OK) {
            sq_rollback(s);
            return db_err(s, err, "recording migration");
        }
        sqlite3_bind_int(st, 1, v);
        sqlite3_bind_int64(st, 2, now_s());
        int step = sqlite3_step(st);
        sqlite3_finalize(st);
        if (step != SQLITE_DONE) {
            sq_rollback(s);
            return db_err(s, err, "recording migration");
        }
        if ((rc = sq_commit(s, err)))
            return rc;
    }
    return 0;
}

int ca_store_sqlite_open(const char *dir, int create, struct ca_store **out,
                         struct meshtls_err *err)
{
    int rc;
    struct sq_store *q = calloc(1, sizeof(*q));
    struct ca_store *s = &q->base;
    if (!q)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    s->ops = &SQ_OPS;
    snprintf(s->path, sizeof(s->path), "%s/meshtls.db", dir);
    struct stat st;
    if (!create && stat(s->path, &st) != 0) {
        rc = meshtls_err_set(err, MESHTLS_ENOENT,
                             "no CA in %s (no meshtls.db): run 'meshtls ca init --dir %s "
                             "--trust-domain TD' first, or check --dir",
                             dir, dir);
        goto fail;
    }
    if (!create && !S_ISREG(st.st_mode)) {
        rc = meshtls_err_set(err, MESHTLS_ESTORE, "store %s is not a regular file", s->path);
        goto fail;
    }
    if (create) { /* 0600 from the first byte: SQLite itself would create it 0644 */
        int fd = open(s->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd == -1) {
            rc = meshtls_err_set(err, errno == EEXIST ? MESHTLS_EEXIST : MESHTLS_EIO,
                                 "cannot create store %s: %s", s->path, strerror(errno));
            goto fail;
        }
        close(fd);
    }
    int flags = SQLITE_OPEN_READWRITE;
    if (sqlite3_open_v2(s->path, &DB(s), flags, NULL) != SQLITE_OK) {
        rc = meshtls_err_set(err, MESHTLS_ESTORE, "cannot open store %s: %s", s->path,
                             DB(s) ? sqlite3_errmsg(DB(s)) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(DB(s), 2000);
    /* Integrity of the file itself: garbage is refused here, not half-read later. */
    if ((rc = exec(s, "PRAGMA foreign_keys = ON", err)) ||
        (rc = exec(s, "PRAGMA journal_mode = DELETE", err)) ||
        (rc = exec(s, "PRAGMA synchronous = FULL", err)))
        goto fail;
    if ((rc = migrate(s, err)))
        goto fail;
    *out = s;
    return 0;
fail:
    sq_close(s);
    return rc;
}

static void sq_close(struct ca_store *s)
{
    if (!s)
        return;
    sqlite3_close(DB(s));
    free(s);
}

static int sq_begin(struct ca_store *s, struct meshtls_err *err)
{
    return exec(s, "BEGIN IMMEDIATE", err);
}

static int sq_commit(struct ca_store *s, struct meshtls_err *err)
{
    return exec(s, "COMMIT", err);
}

static void sq_rollback(struct ca_store *s)
{
    sqlite3_exec(DB(s), "ROLLBACK", NULL, NULL, NULL);
}

/* Prepare `sql`; on failure set err. */
static int prep(struct ca_store *s, const char *sql, sqlite3_stmt **st, struct meshtls_err *err)
{
    if (sqlite3_prepare_v2(DB(s), sql, -1, st, NULL) != SQLITE_OK)
        return db_err(s, err, "preparing a query");
    return 0;
}

static int step_done(struct ca_store *s, sqlite3_stmt *st, const char *what,
                     struct meshtls_err *err)
{
    int r = sqlite3_step(st);
    sqlite3_finalize(st);
    if (r != SQLITE_DONE)
        return db_err(s, err, what);
    return 0;
}

static char *col_dup(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? strdup((const char *)t) : NULL;
}

static int sq_meta_get(struct ca_store *s, const char *key, char **out, struct meshtls_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(s, "SELECT value FROM meta WHERE key = ?", &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        *out = col_dup(st, 0);
        rc = *out ? 0 : meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    } else if (r == SQLITE_DONE) {
        rc = meshtls_err_set(err, MESHTLS_ESTORE, "store %s has no '%s': is it a meshtls CA?",
                             s->path, key);
    } else {
        rc = db_err(s, err, "reading meta");
    }
    sqlite3_finalize(st);
    return rc;
}

static int sq_meta_set(struct ca_store *s, const char *key, const char *value,
                       struct meshtls_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(s,
                  "INSERT INTO meta(key, value) VALUES (?, ?) "
                  "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                  &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
    return step_done(s, st, "writing meta", err);
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
    sqlite3_stmt *st = NULL;
    int rc;
    struct ca_service old = {0};
    *updated = sq_service_get(s, svc->name, &old, NULL) == 0;
    ca_service_clear(&old);
    char *dns = join(svc->dns, svc->n_dns), *ips = join(svc->ips, svc->n_ips);
    if (!dns || !ips) {
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = prep(s,
                   "INSERT INTO services(name, spiffe_id, dns, ips, created_at, updated_at) "
                   "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                   "spiffe_id = excluded.spiffe_id, dns = excluded.dns, ips = excluded.ips, "
                   "updated_at = excluded.updated_at",
                   &st, err)))
        goto out;
    sqlite3_bind_text(st, 1, svc->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, svc->spiffe_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, dns, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, ips, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, now_s());
    sqlite3_bind_int64(st, 6, now_s());
    int r = sqlite3_step(st);
    sqlite3_finalize(st);
    if (r != SQLITE_DONE) {
        if (sqlite3_extended_errcode(DB(s)) == SQLITE_CONSTRAINT_UNIQUE)
            rc = meshtls_err_set(err, MESHTLS_EEXIST,
                                 "SPIFFE ID %s is already registered to another service",
                                 svc->spiffe_id);
        else
            rc = db_err(s, err, "registering the service");
    }
out:
    free(dns);
    free(ips);
    return rc;
}

static int sq_service_get(struct ca_store *s, const char *name, struct ca_service *out,
                          struct meshtls_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(s, "SELECT name, spiffe_id, dns, ips FROM services WHERE name = ?", &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        memset(out, 0, sizeof(*out));
        out->name = col_dup(st, 0);
        out->spiffe_id = col_dup(st, 1);
        if (!out->name || !out->spiffe_id ||
            split((const char *)sqlite3_column_text(st, 2), &out->dns, &out->n_dns) ||
            split((const char *)sqlite3_column_text(st, 3), &out->ips, &out->n_ips)) {
            ca_service_clear(out);
            rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
        }
    } else if (r == SQLITE_DONE) {
        rc = meshtls_err_set(err, MESHTLS_ENOENT,
                             "service '%s' is not registered; register it first with "
                             "'meshtls ca register --dir DIR %s'",
                             name, name);
    } else {
        rc = db_err(s, err, "reading the service");
    }
    sqlite3_finalize(st);
    return rc;
}

static int sq_cert_insert(struct ca_store *s, const struct ca_cert *c, struct meshtls_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(s,
                  "INSERT INTO certificates(serial, service, not_before, not_after, status, "
                  "out_dir, cert_pem, pubkey_pem, key_held, issued_at) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, c->serial, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, c->service, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, c->not_before);
    sqlite3_bind_int64(st, 4, c->not_after);
    sqlite3_bind_text(st, 5, c->status, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, c->out_dir, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, c->cert_pem, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, c->pubkey_pem, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 9, c->key_held);
    sqlite3_bind_int64(st, 10, now_s());
    int r = sqlite3_step(st);
    sqlite3_finalize(st);
    if (r == SQLITE_DONE)
        return 0;
    if (sqlite3_extended_errcode(DB(s)) == SQLITE_CONSTRAINT_PRIMARYKEY)
        return meshtls_err_set(err, MESHTLS_EEXIST, "serial %s already issued (retry)", c->serial);
    return db_err(s, err, "recording the certificate");
}

static int sq_cert_set_status(struct ca_store *s, const char *serial, const char *status,
                              const char *reason, const char *replaced_by, struct meshtls_err *err)
{
    sqlite3_stmt *st = NULL;
    int revoke = !strcmp(status, "revoked");
    int rc = prep(s,
                  "UPDATE certificates SET status = ?1, reason = COALESCE(?2, reason), "
                  "replaced_by = COALESCE(?3, replaced_by), "
                  "revoked_at = CASE WHEN ?4 THEN ?5 ELSE revoked_at END WHERE serial = ?6",
                  &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, status, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, reason, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, replaced_by, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, revoke);
    sqlite3_bind_int64(st, 5, now_s());
    sqlite3_bind_text(st, 6, serial, -1, SQLITE_STATIC);
    return step_done(s, st, "updating the certificate", err);
}

static int row_to_cert(sqlite3_stmt *st, struct ca_cert *c)
{
    memset(c, 0, sizeof(*c));
    c->serial = col_dup(st, 0);
    c->service = col_dup(st, 1);
    c->not_before = sqlite3_column_int64(st, 2);
    c->not_after = sqlite3_column_int64(st, 3);
    c->status = col_dup(st, 4);
    c->out_dir = col_dup(st, 5);
    c->cert_pem = col_dup(st, 6);
    c->pubkey_pem = col_dup(st, 7);
    c->key_held = sqlite3_column_int(st, 8);
    c->revoked_at = sqlite3_column_int64(st, 9);
    c->reason = col_dup(st, 10);
    return c->serial && c->service && c->status && c->cert_pem && c->pubkey_pem ? 0
                                                                                : MESHTLS_ENOMEM;
}

#define CERT_COLS                                                                                  \
    "serial, service, not_before, not_after, status, out_dir, cert_pem, pubkey_pem, key_held, "    \
    "COALESCE(revoked_at, 0), reason"

static int sq_cert_get(struct ca_store *s, const char *serial, struct ca_cert *out,
                       struct meshtls_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(s, "SELECT " CERT_COLS " FROM certificates WHERE serial = ?", &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, serial, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW)
        rc = row_to_cert(st, out) ? meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory") : 0;
    else if (r == SQLITE_DONE)
        rc = meshtls_err_set(err, MESHTLS_ENOENT,
                             "no certificate with serial %s in %s; see 'meshtls ca list'", serial,
                             s->path);
    else
        rc = db_err(s, err, "reading the certificate");
    if (rc && r == SQLITE_ROW)
        ca_cert_clear(out);
    sqlite3_finalize(st);
    return rc;
}

static int sq_cert_list(struct ca_store *s, const char *service, const char *status,
                        struct ca_cert **out, size_t *n, struct meshtls_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(s,
                  "SELECT " CERT_COLS " FROM certificates WHERE (?1 IS NULL OR service = ?1) "
                  "AND (?2 IS NULL OR status = ?2) ORDER BY issued_at, rowid",
                  &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, service, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, status, -1, SQLITE_STATIC);
    struct ca_cert *v = NULL;
    size_t cnt = 0, cap = 0;
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
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
        if (row_to_cert(st, &v[cnt])) {
            ca_cert_clear(&v[cnt]);
            rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
            break;
        }
        cnt++;
    }
    if (!rc && r != SQLITE_DONE)
        rc = db_err(s, err, "listing certificates");
    sqlite3_finalize(st);
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
    sqlite3_stmt *st = NULL;
    int rc = prep(s,
                  "INSERT INTO audit(at, action, service, serial, detail) "
                  "VALUES (?, ?, ?, ?, ?)",
                  &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, now_s());
    sqlite3_bind_text(st, 2, action, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, service, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, serial, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, detail, -1, SQLITE_STATIC);
    return step_done(s, st, "writing the audit log", err);
}

static const struct ca_store_ops SQ_OPS = {
    .name = "sqlite",
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
};
