/*
 * db.c - the backend-neutral part of the database layer (see db.h): URLs and
 * their passwords, the connection pool, transactions with retry, migrations.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db_internal.h"

/* ---- URLs and passwords --------------------------------------------------------------------- */

struct span {
    size_t off, len;
};

/*
 * Where the passwords are in a "scheme://..." URL: the userinfo's password
 * (user:PASSWORD@) and every ?password= / &password= value.  The userinfo
 * ends at the first '@' before any '/', as libpq reads it.
 */
static size_t pw_spans(const char *url, struct span *sp, size_t max)
{
    const char *p = strstr(url, "://");
    size_t n = 0;
    if (!p)
        return 0;
    const char *auth = p + 3, *q = auth;
    while (*q && *q != '@' && *q != '/')
        q++;
    const char *rest = auth;
    if (*q == '@') {
        const char *colon = memchr(auth, ':', (size_t)(q - auth));
        if (colon && n < max)
            sp[n++] = (struct span){(size_t)(colon + 1 - url), (size_t)(q - colon - 1)};
        rest = q + 1;
    }
    const char *query = strchr(rest, '?');
    while (query && *query) {
        const char *key = query + 1, *end = strchr(key, '&');
        if (!end)
            end = key + strlen(key);
        const char *eq = memchr(key, '=', (size_t)(end - key));
        if (eq && eq - key == 8 && !memcmp(key, "password", 8) && n < max)
            sp[n++] = (struct span){(size_t)(eq + 1 - url), (size_t)(end - eq - 1)};
        query = *end ? end : NULL;
    }
    return n;
}

void mt_db_url_redact(const char *url, char *buf, size_t cap)
{
    struct span sp[8];
    size_t n = pw_spans(url, sp, 8), at = 0, o = 0;
    if (!cap)
        return;
    for (size_t i = 0; i <= n; i++) {
        size_t upto = i < n ? sp[i].off : strlen(url);
        for (size_t k = at; k < upto && o + 1 < cap; k++)
            buf[o++] = url[k];
        if (i < n) {
            for (const char *s = "***"; *s && o + 1 < cap; s++)
                buf[o++] = *s;
            at = sp[i].off + sp[i].len;
        }
    }
    buf[o] = '\0';
}

int mt_db_url_hide_password(char *arg)
{
    struct span sp[8];
    size_t n = pw_spans(arg, sp, 8);
    int hid = 0;
    for (size_t i = 0; i < n; i++) {
        memset(arg + sp[i].off, '*', sp[i].len);
        hid |= sp[i].len > 0;
    }
    return hid;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Replace every occurrence of secret[0..len) in msg by "***" (never longer: msg stays in place). */
static void scrub_one(char *msg, const char *secret, size_t len)
{
    /* Short secrets would blank ordinary words; a 1-2 character password is
     * not worth hiding anyway.  The URL itself is always redacted by span. */
    if (len < 3)
        return;
    char *from = msg, *hit;
    while ((hit = memmem(from, strlen(from), secret, len)) != NULL) {
        memcpy(hit, "***", 3);
        memmove(hit + 3, hit + len, strlen(hit + len) + 1);
        from = hit + 3;
    }
}

void mt_db_scrub(const char *url, char *msg, size_t cap)
{
    (void)cap; /* scrubbing only shortens msg */
    struct span sp[8];
    size_t n = url ? pw_spans(url, sp, 8) : 0;
    for (size_t i = 0; i < n; i++) {
        const char *s = url + sp[i].off;
        scrub_one(msg, s, sp[i].len);
        char dec[1024]; /* the percent-decoded form, as the server would see it */
        size_t o = 0;
        for (size_t k = 0; k < sp[i].len && o + 1 < sizeof(dec); k++) {
            if (s[k] == '%' && k + 2 < sp[i].len && hexval(s[k + 1]) >= 0 &&
                hexval(s[k + 2]) >= 0) {
                dec[o++] = (char)(hexval(s[k + 1]) * 16 + hexval(s[k + 2]));
                k += 2;
            } else {
                dec[o++] = s[k];
            }
        }
        scrub_one(msg, dec, o);
    }
    const char *env = getenv("PGPASSWORD");
    if (env)
        scrub_one(msg, env, strlen(env));
}

void mt_db_sql_head(const char *sql, char *buf, size_t cap)
{
    size_t o = 0;
    for (const char *p = sql; *p && o + 1 < cap; p++)
        buf[o++] = (*p == '\n' || *p == '\t') ? ' ' : *p;
    buf[o] = '\0';
}

int mt_db_url_parse(const char *url, struct mt_db_url *out, struct meshtls_err *err)
{
    memset(out, 0, sizeof(*out));
    if (!url)
        return meshtls_err_set(err, MESHTLS_EINVAL, "no database URL given");
    mt_db_url_redact(url, out->redacted, sizeof(out->redacted));
    struct span sp[8];
    size_t n = pw_spans(url, sp, 8);
    for (size_t i = 0; i < n; i++)
        out->has_password |= sp[i].len > 0;
    if (!strncmp(url, "sqlite:", 7)) {
        const char *path = url + 7;
        if (!strncmp(path, "//", 2)) {
            /* sqlite:///abs/path, as other tools write it; sqlite://host/... is no file */
            if (path[2] != '/')
                return meshtls_err_set(err, MESHTLS_EINVAL,
                                       "bad database URL '%s': an SQLite URL names a file: "
                                       "sqlite:/abs/path.db, sqlite:///abs/path.db or "
                                       "sqlite:relative/path.db",
                                       out->redacted);
            path += 2;
        }
        if (!*path)
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "bad database URL '%s': no file after 'sqlite:' (e.g. "
                                   "sqlite:/var/lib/meshtls/meshtls.db)",
                                   out->redacted);
        if (strlen(path) >= sizeof(out->path))
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "bad database URL '%.64s...': path too long", out->redacted);
        out->backend = MT_DB_SQLITE;
        memcpy(out->path, path, strlen(path) + 1);
        return 0;
    }
    if (!strncmp(url, "postgres://", 11) || !strncmp(url, "postgresql://", 13)) {
        if (strlen(url) >= sizeof(out->redacted) - 64)
            return meshtls_err_set(err, MESHTLS_EINVAL, "bad database URL '%.64s...': too long",
                                   out->redacted);
        out->backend = MT_DB_POSTGRES;
        return 0;
    }
    return meshtls_err_set(err, MESHTLS_EINVAL,
                           "unsupported database URL '%s': use sqlite:PATH or "
                           "postgres://USER@HOST:PORT/DBNAME (see docs/DATABASE.md)",
                           out->redacted);
}

/* ---- connections and the pool ------------------------------------------------------------- */

void mt_db_conn_fail(struct mt_db_conn *c, enum mt_db_errkind kind, const char *msg)
{
    c->kind = kind;
    snprintf(c->msg, sizeof(c->msg), "%s", msg ? msg : "unknown error");
    size_t l = strlen(c->msg);
    while (l && (c->msg[l - 1] == '\n' || c->msg[l - 1] == ' '))
        c->msg[--l] = '\0';
    mt_db_scrub(c->db->url, c->msg, sizeof(c->msg));
}

int mt_db_conn_err(struct mt_db_conn *c, struct meshtls_err *err, const char *what)
{
    if (c->kind == MT_DB_ERR_RETRY)
        return meshtls_err_set(err, MESHTLS_ESTORE,
                               "database %s: %s: %s (busy or conflicting with another "
                               "transaction; retry)",
                               c->db->u.redacted, what, c->msg);
    return meshtls_err_set(err, MESHTLS_ESTORE, "database %s: %s: %s", c->db->u.redacted, what,
                           c->msg);
}

enum mt_db_backend mt_db_backend(const struct mt_db *db)
{
    return db->u.backend;
}

const char *mt_db_backend_name(const struct mt_db *db)
{
    return db->ops->name;
}

const char *mt_db_url_safe(const struct mt_db *db)
{
    return db->u.redacted;
}

enum mt_db_errkind mt_db_errkind(const struct mt_db_conn *c)
{
    return c->kind;
}

const char *mt_db_errmsg(const struct mt_db_conn *c)
{
    return c->msg;
}

struct mt_db *mt_db_conn_db(const struct mt_db_conn *c)
{
    return c->db;
}

int mt_db_open(const char *url, const struct mt_db_opts *opts, struct mt_db **out,
               struct meshtls_err *err)
{
    struct mt_db_url u;
    int rc = mt_db_url_parse(url, &u, err);
    if (rc)
        return rc;
    struct mt_db *db = calloc(1, sizeof(*db));
    if (!db || !(db->url = strdup(url))) {
        free(db);
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    }
    db->u = u;
    db->ops = u.backend == MT_DB_SQLITE ? &mt_db_sqlite_ops : &mt_db_pg_ops;
    if (opts)
        db->opts = *opts;
    if (db->opts.pool_size <= 0)
        db->opts.pool_size = 4;
    if (db->opts.acquire_timeout_ms <= 0)
        db->opts.acquire_timeout_ms = 5000;
    if (db->opts.busy_timeout_ms <= 0)
        db->opts.busy_timeout_ms = 2000;
    if (db->opts.connect_timeout_s <= 0)
        db->opts.connect_timeout_s = 10;
    if (db->opts.tx_attempts <= 0)
        db->opts.tx_attempts = 5;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&db->mu, NULL);
    pthread_cond_init(&db->cv, &ca);
    pthread_condattr_destroy(&ca);
    /* One connection now: a wrong URL, password or file is reported by open. */
    struct mt_db_conn *c = NULL;
    if ((rc = db->ops->connect(db, &c, err))) {
        mt_db_close(db);
        return rc;
    }
    c->db = db;
    db->n_open = 1;
    db->idle = c;
    *out = db;
    return 0;
}

void mt_db_close(struct mt_db *db)
{
    if (!db)
        return;
    while (db->idle) {
        struct mt_db_conn *c = db->idle;
        db->idle = c->next;
        db->ops->disconnect(c);
    }
    pthread_cond_destroy(&db->cv);
    pthread_mutex_destroy(&db->mu);
    if (db->url) {
        explicit_bzero(db->url, strlen(db->url));
        free(db->url);
    }
    free(db);
}

int mt_db_acquire(struct mt_db *db, struct mt_db_conn **out, struct meshtls_err *err)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += db->opts.acquire_timeout_ms / 1000;
    deadline.tv_nsec += (long)(db->opts.acquire_timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&db->mu);
    while (!db->idle && db->n_open >= db->opts.pool_size) {
        if (pthread_cond_timedwait(&db->cv, &db->mu, &deadline) == ETIMEDOUT && !db->idle &&
            db->n_open >= db->opts.pool_size) {
            pthread_mutex_unlock(&db->mu);
            return meshtls_err_set(err, MESHTLS_ESTORE,
                                   "database %s: all %d connections busy for %d ms; raise the "
                                   "pool size or find what holds them",
                                   db->u.redacted, db->opts.pool_size, db->opts.acquire_timeout_ms);
        }
    }
    struct mt_db_conn *c = db->idle;
    if (c) {
        db->idle = c->next;
        pthread_mutex_unlock(&db->mu);
        c->next = NULL;
        int rc = db->ops->revive(c, err);
        if (rc) {
            mt_db_release(c);
            return rc;
        }
        c->kind = MT_DB_OK;
        *out = c;
        return 0;
    }
    db->n_open++; /* reserve the slot, connect outside the lock */
    pthread_mutex_unlock(&db->mu);
    int rc = db->ops->connect(db, &c, err);
    if (rc) {
        pthread_mutex_lock(&db->mu);
        db->n_open--;
        pthread_cond_signal(&db->cv);
        pthread_mutex_unlock(&db->mu);
        return rc;
    }
    c->db = db;
    *out = c;
    return 0;
}

void mt_db_release(struct mt_db_conn *c)
{
    if (!c)
        return;
    struct mt_db *db = c->db;
    if (c->in_tx)
        mt_db_rollback(c);
    if (c->listening) { /* the next holder must not inherit our channels */
        db->ops->unlisten(c);
        c->listening = 0;
    }
    pthread_mutex_lock(&db->mu);
    c->next = db->idle;
    db->idle = c;
    pthread_cond_signal(&db->cv);
    pthread_mutex_unlock(&db->mu);
}

/* ---- statements --------------------------------------------------------------------------- */

int mt_db_exec(struct mt_db_conn *c, const char *sql, const struct mt_db_param *params, size_t n,
               int64_t *changes, struct meshtls_err *err)
{
    c->kind = MT_DB_OK;
    return c->db->ops->exec(c, sql, params, n, changes, err);
}

int mt_db_query(struct mt_db_conn *c, const char *sql, const struct mt_db_param *params, size_t n,
                struct mt_db_rows **out, struct meshtls_err *err)
{
    c->kind = MT_DB_OK;
    return c->db->ops->query(c, sql, params, n, out, err);
}

int mt_db_row_next(struct mt_db_rows *r, struct meshtls_err *err)
{
    return r->c->db->ops->row_next(r, err);
}

int mt_db_col_is_null(struct mt_db_rows *r, int i)
{
    return r->c->db->ops->col_is_null(r, i);
}

const char *mt_db_col_text(struct mt_db_rows *r, int i)
{
    return r->c->db->ops->col_text(r, i);
}

int64_t mt_db_col_int64(struct mt_db_rows *r, int i)
{
    return r->c->db->ops->col_int64(r, i);
}

const void *mt_db_col_blob(struct mt_db_rows *r, int i, size_t *len)
{
    return r->c->db->ops->col_blob(r, i, len);
}

void mt_db_rows_close(struct mt_db_rows *r)
{
    if (r)
        r->c->db->ops->rows_close(r);
}

/* ---- transactions ------------------------------------------------------------------------- */

int mt_db_begin(struct mt_db_conn *c, struct meshtls_err *err)
{
    c->kind = MT_DB_OK;
    int rc = c->db->ops->script(c, c->db->ops->begin_sql, err);
    if (!rc)
        c->in_tx = 1;
    return rc;
}

int mt_db_commit(struct mt_db_conn *c, struct meshtls_err *err)
{
    c->kind = MT_DB_OK;
    int rc = c->db->ops->script(c, "COMMIT", err);
    if (!rc)
        c->in_tx = 0;
    return rc;
}

void mt_db_rollback(struct mt_db_conn *c)
{
    /* Keep the failure that made the caller roll back, not the rollback's. */
    enum mt_db_errkind kind = c->kind;
    char msg[sizeof(c->msg)];
    memcpy(msg, c->msg, sizeof(msg));
    c->db->ops->script(c, "ROLLBACK", NULL);
    c->in_tx = 0;
    c->kind = kind;
    memcpy(c->msg, msg, sizeof(msg));
}

/* Sleep before attempt `attempt` (from 1): 10 ms doubling, capped at 500 ms, +-50 % jitter. */
static void backoff(int attempt, unsigned *seed)
{
    long ms = 10L << (attempt > 6 ? 6 : attempt - 1);
    if (ms > 500)
        ms = 500;
    ms = ms / 2 + (long)(rand_r(seed) % (unsigned)(ms + 1));
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

int mt_db_tx(struct mt_db *db, mt_db_tx_fn fn, void *arg, struct meshtls_err *err)
{
    struct mt_db_conn *c = NULL;
    int rc = mt_db_acquire(db, &c, err);
    if (rc)
        return rc;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    unsigned seed = (unsigned)now.tv_nsec ^ (unsigned)(uintptr_t)&now;
    for (int attempt = 1;; attempt++) {
        rc = mt_db_begin(c, err);
        if (!rc)
            rc = fn(c, arg, err);
        if (!rc)
            rc = mt_db_commit(c, err);
        if (!rc)
            break;
        int retry = c->kind == MT_DB_ERR_RETRY;
        mt_db_rollback(c);
        if (!retry || attempt >= db->opts.tx_attempts) {
            if (retry && err)
                meshtls_err_set(err, MESHTLS_ESTORE,
                                "database %s: transaction still conflicting after %d attempts: "
                                "%s; retry later",
                                db->u.redacted, attempt, c->msg);
            break;
        }
        backoff(attempt, &seed);
    }
    mt_db_release(c);
    return rc;
}

/* ---- migrations --------------------------------------------------------------------------- */

static int ident_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 48 || !((*s >= 'a' && *s <= 'z') || *s == '_'))
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return 0;
    return 1;
}

/* The advisory-lock key of a migrations table: FNV-1a of "meshtls:TABLE". */
static int64_t lock_key(const char *table)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = "meshtls:"; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    for (const char *p = table; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return (int64_t)(h & 0x7fffffffffffffffULL);
}

/* The highest version recorded in `table` (0 if none); an error (no table) sets only c. */
static int current_version(struct mt_db_conn *c, const char *table, int64_t *have)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT COALESCE(MAX(version), 0) FROM %s", table);
    struct mt_db_rows *r = NULL;
    int rc = mt_db_query(c, sql, NULL, 0, &r, NULL);
    if (rc)
        return rc;
    *have = 0;
    if ((rc = mt_db_row_next(r, NULL)) == 1)
        *have = mt_db_col_int64(r, 0);
    mt_db_rows_close(r);
    return rc < 0 ? rc : 0;
}

/*
 * Apply what is missing, on `c`.  SQLite: the caller holds BEGIN IMMEDIATE
 * around all of it (tx_each = 0); PostgreSQL: the caller holds the advisory
 * lock and each migration gets its own transaction (tx_each = 1).
 */
static int migrate_on(struct mt_db_conn *c, const char *table, const struct mt_db_migration *m,
                      size_t n, int tx_each, int *applied, struct meshtls_err *err)
{
    struct mt_db *db = c->db;
    int pg = db->u.backend == MT_DB_POSTGRES;
    char sql[256];
    /* The table name is an identifier (checked by ident_ok), never a value. */
    snprintf(sql, sizeof(sql),
             "CREATE TABLE IF NOT EXISTS %s (version INTEGER PRIMARY KEY, applied_at %s NOT NULL)",
             table, pg ? "BIGINT" : "INTEGER");
    int rc = db->ops->script(c, sql, err);
    if (rc)
        return rc;
    int64_t have = 0;
    if ((rc = current_version(c, table, &have)))
        return mt_db_conn_err(c, err, "reading the schema version");
    if (have > (int64_t)n)
        return meshtls_err_set(err, MESHTLS_ESTORE,
                               "database %s has schema version %lld in %s, newer than this "
                               "meshtls (%zu); upgrade meshtls",
                               db->u.redacted, (long long)have, table, n);
    snprintf(sql, sizeof(sql), "INSERT INTO %s (version, applied_at) VALUES ($1, $2)", table);
    for (size_t v = (size_t)have + 1; v <= n; v++) {
        const char *body = pg ? m[v - 1].postgres : m[v - 1].sqlite;
        if (!body)
            return meshtls_err_set(err, MESHTLS_ESTORE,
                                   "database %s: migration %zu of %s has no %s version: this "
                                   "store on %s is not yet supported",
                                   db->u.redacted, v, table, db->ops->name, db->ops->name);
        if (tx_each && (rc = mt_db_begin(c, err)))
            return rc;
        struct mt_db_param p[2] = {MT_DB_INT64(v), MT_DB_INT64(time(NULL))};
        if ((rc = db->ops->script(c, body, err)) || (rc = mt_db_exec(c, sql, p, 2, NULL, err)) ||
            (tx_each && (rc = mt_db_commit(c, err)))) {
            if (tx_each)
                mt_db_rollback(c);
            return rc;
        }
        if (applied)
            (*applied)++;
    }
    return 0;
}

int mt_db_migrate_conn(struct mt_db_conn *c, const char *table, const struct mt_db_migration *m,
                       size_t n, int *applied, struct meshtls_err *err)
{
    struct mt_db *db = c->db;
    if (applied)
        *applied = 0;
    if (!ident_ok(table))
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "migrations table name '%s' is not a plain identifier",
                               table ? table : "(null)");
    for (size_t i = 0; i < n; i++)
        if (m[i].version != (int)i + 1)
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "migrations of %s are not numbered 1..%zu (entry %zu is %d)",
                                   table, n, i, m[i].version);
    /* Up to date (the common case): nothing to lock, nothing written. */
    int64_t have = -1;
    if (current_version(c, table, &have) == 0 && have == (int64_t)n)
        return 0;
    int count = 0, rc;
    if (db->u.backend == MT_DB_SQLITE) {
        /* One write transaction: a second process waits on the lock, then finds all applied. */
        rc = mt_db_begin(c, err);
        if (!rc)
            rc = migrate_on(c, table, m, n, 0, &count, err);
        if (!rc)
            rc = mt_db_commit(c, err);
        if (rc) {
            mt_db_rollback(c);
            count = 0;
        }
    } else {
        struct mt_db_param key = MT_DB_INT64(lock_key(table));
        struct mt_db_rows *r = NULL;
        if (!(rc = mt_db_query(c, "SELECT pg_advisory_lock($1)", &key, 1, &r, err))) {
            rc = mt_db_row_next(r, err) < 0 ? MESHTLS_ESTORE : 0;
            mt_db_rows_close(r);
        }
        if (!rc) {
            rc = migrate_on(c, table, m, n, 1, &count, err);
            /* Unlock even after a failure (the session ending would too). */
            enum mt_db_errkind kind = c->kind;
            r = NULL;
            if (!mt_db_query(c, "SELECT pg_advisory_unlock($1)", &key, 1, &r, NULL))
                mt_db_row_next(r, NULL);
            mt_db_rows_close(r);
            if (rc)
                c->kind = kind;
        }
    }
    if (applied)
        *applied = count;
    return rc;
}

int mt_db_migrate(struct mt_db *db, const char *table, const struct mt_db_migration *m, size_t n,
                  int *applied, struct meshtls_err *err)
{
    struct mt_db_conn *c = NULL;
    int rc = mt_db_acquire(db, &c, err);
    if (rc)
        return rc;
    rc = mt_db_migrate_conn(c, table, m, n, applied, err);
    mt_db_release(c);
    return rc;
}

/* ---- change notification ------------------------------------------------------------------ */

int64_t mt_db_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* [a-z_]{1,40}: PostgreSQL's LISTEN takes an identifier, never a parameter. */
static int channel_ok(const char *s)
{
    size_t n = 0;
    for (; s && *s; s++, n++)
        if (!((*s >= 'a' && *s <= 'z') || *s == '_'))
            return 0;
    return n >= 1 && n <= 40;
}

static int bad_channel(const struct mt_db_conn *c, const char *channel, struct meshtls_err *err)
{
    return meshtls_err_set(err, MESHTLS_EINVAL,
                           "database %s: notification channel '%.48s' is not 1 to 40 of a-z and "
                           "'_'",
                           c->db->u.redacted, channel ? channel : "(null)");
}

int mt_db_listen(struct mt_db_conn *c, const char *channel, struct meshtls_err *err)
{
    if (!channel_ok(channel))
        return bad_channel(c, channel, err);
    c->kind = MT_DB_OK;
    int rc = c->db->ops->listen(c, channel, err);
    if (!rc)
        c->listening = 1;
    return rc;
}

int mt_db_notify(struct mt_db_conn *c, const char *channel, const char *payload,
                 struct meshtls_err *err)
{
    if (!channel_ok(channel))
        return bad_channel(c, channel, err);
    if (!payload)
        payload = "";
    if (strlen(payload) > MT_DB_NOTIFY_PAYLOAD_MAX)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "database %s: notification on '%s': payload of %zu bytes, more "
                               "than %d",
                               c->db->u.redacted, channel, strlen(payload),
                               MT_DB_NOTIFY_PAYLOAD_MAX);
    c->kind = MT_DB_OK;
    return c->db->ops->notify(c, channel, payload, err);
}

int mt_db_wait_change(struct mt_db_conn *c, int timeout_ms, char *payload, size_t cap,
                      struct meshtls_err *err)
{
    if (payload && cap)
        payload[0] = '\0';
    if (!c->listening)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "database %s: waiting for changes on a connection that does not "
                               "listen (call mt_db_listen first)",
                               c->db->u.redacted);
    c->kind = MT_DB_OK;
    int64_t deadline = mt_db_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    return c->db->ops->wait_change(c, deadline, payload, cap, err);
}
