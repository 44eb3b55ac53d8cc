/*
 * db_sqlite.c - the SQLite backend of the database layer (see db.h).
 *
 * One sqlite3 handle per connection, opened without SQLite's own mutex: the
 * pool gives a connection to one thread at a time.  Statements are prepared
 * once per connection (SQLITE_PREPARE_PERSISTENT) and kept in a small cache
 * keyed by their SQL; $N placeholders become ?N.  The busy timeout makes a
 * locked file wait a little, then fail as MT_DB_ERR_RETRY.  Change
 * notification is PRAGMA data_version, polled: SQLite has no message between
 * connections, and the counter moves on every commit by another connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "db_internal.h"

#define CACHE_MAX 48

struct sq_stmt {
    char *sql; /* the caller's SQL (the cache key) */
    sqlite3_stmt *st;
    int busy; /* a cursor is open on it */
};

struct sq_conn {
    struct mt_db_conn base;
    sqlite3 *h;
    struct sq_stmt cache[CACHE_MAX];
    size_t n_cache;
    int64_t data_version; /* as mt_db_listen / the last change saw it */
};

/* How often mt_db_wait_change reads PRAGMA data_version: a cheap read of the file header. */
#define POLL_MS 25

struct sq_rows {
    struct mt_db_rows base;
    sqlite3_stmt *st;
    struct sq_stmt *slot; /* the cache's (reset on close) or NULL (finalized on close) */
};

#define SQ(c) ((struct sq_conn *)(c))

static enum mt_db_errkind kind_of(int code)
{
    switch (code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return MT_DB_ERR_RETRY;
    case SQLITE_CONSTRAINT:
        return code == SQLITE_CONSTRAINT_UNIQUE || code == SQLITE_CONSTRAINT_PRIMARYKEY
                   ? MT_DB_ERR_UNIQUE
                   : MT_DB_ERR_OTHER;
    default: return MT_DB_ERR_OTHER;
    }
}

static int fail(struct mt_db_conn *c, struct meshtls_err *err, const char *what)
{
    sqlite3 *h = SQ(c)->h;
    mt_db_conn_fail(c, kind_of(sqlite3_extended_errcode(h)), sqlite3_errmsg(h));
    return mt_db_conn_err(c, err, what);
}

static void sq_disconnect(struct mt_db_conn *c)
{
    struct sq_conn *q = SQ(c);
    for (size_t i = 0; i < q->n_cache; i++) {
        sqlite3_finalize(q->cache[i].st);
        free(q->cache[i].sql);
    }
    sqlite3_close(q->h);
    free(q);
}

static int sq_connect(struct mt_db *db, struct mt_db_conn **out, struct meshtls_err *err)
{
    const char *path = db->u.path;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (db->opts.must_exist || errno != ENOENT)
            return meshtls_err_set(err, errno == ENOENT ? MESHTLS_ENOENT : MESHTLS_EIO,
                                   "database file %s: %s", path, strerror(errno));
        /* 0600 from the first byte: SQLite itself would create it 0644 */
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd == -1 && errno != EEXIST)
            return meshtls_err_set(err, MESHTLS_EIO, "cannot create database file %s: %s", path,
                                   strerror(errno));
        if (fd != -1)
            close(fd);
    } else if (!S_ISREG(sb.st_mode)) {
        return meshtls_err_set(err, MESHTLS_ESTORE, "database file %s is not a regular file", path);
    }
    struct sq_conn *q = calloc(1, sizeof(*q));
    if (!q)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    q->base.db = db;
    int rc = sqlite3_open_v2(path, &q->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        rc = meshtls_err_set(err, MESHTLS_ESTORE, "cannot open database file %s: %s", path,
                             q->h ? sqlite3_errmsg(q->h) : "out of memory");
        sq_disconnect(&q->base);
        return rc;
    }
    sqlite3_extended_result_codes(q->h, 1);
    sqlite3_busy_timeout(q->h, db->opts.busy_timeout_ms);
    /* The schema_version read touches the file header: garbage is refused here. */
    static const char *const setup[] = {"PRAGMA foreign_keys = ON", "PRAGMA synchronous = FULL",
                                        "PRAGMA schema_version"};
    for (size_t i = 0; i < sizeof(setup) / sizeof(setup[0]); i++) {
        if (sqlite3_exec(q->h, setup[i], NULL, NULL, NULL) != SQLITE_OK) {
            mt_db_conn_fail(&q->base, kind_of(sqlite3_extended_errcode(q->h)),
                            sqlite3_errmsg(q->h));
            if (q->base.kind == MT_DB_ERR_RETRY)
                rc = meshtls_err_set(err, MESHTLS_ESTORE,
                                     "database file %s is locked by another process (%s); wait "
                                     "for it to finish and retry",
                                     path, q->base.msg);
            else
                rc = meshtls_err_set(err, MESHTLS_ESTORE, "cannot open database file %s: %s", path,
                                     q->base.msg);
            sq_disconnect(&q->base);
            return rc;
        }
    }
    *out = &q->base;
    return 0;
}

static int sq_revive(struct mt_db_conn *c, struct meshtls_err *err)
{
    (void)c;
    (void)err;
    return 0;
}

static int sq_script(struct mt_db_conn *c, const char *sql, struct meshtls_err *err)
{
    if (sqlite3_exec(SQ(c)->h, sql, NULL, NULL, NULL) != SQLITE_OK) {
        char what[48];
        mt_db_sql_head(sql, what, sizeof(what));
        return fail(c, err, what);
    }
    return 0;
}

/* $N -> ?N outside quotes and comments: the same SQL text serves both backends. */
static char *translate(const char *sql)
{
    char *out = strdup(sql);
    if (!out)
        return NULL;
    char quote = 0;
    for (char *p = out; *p; p++) {
        if (quote) {
            if (*p == quote)
                quote = 0;
        } else if (*p == '\'' || *p == '"') {
            quote = *p;
        } else if (p[0] == '-' && p[1] == '-') {
            while (p[1] && p[1] != '\n')
                p++;
        } else if (*p == '$' && p[1] >= '1' && p[1] <= '9') {
            *p = '?';
        }
    }
    return out;
}

/* The prepared statement for sql: from the cache, or new (*slot NULL: caller finalizes). */
static int stmt_get(struct mt_db_conn *c, const char *sql, sqlite3_stmt **st, struct sq_stmt **slot,
                    struct meshtls_err *err)
{
    struct sq_conn *q = SQ(c);
    *slot = NULL;
    for (size_t i = 0; i < q->n_cache; i++) {
        if (!q->cache[i].busy && !strcmp(q->cache[i].sql, sql)) {
            *slot = &q->cache[i];
            *st = q->cache[i].st;
            return 0;
        }
    }
    char *t = translate(sql);
    if (!t)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    int keep = q->n_cache < CACHE_MAX;
    int rc = sqlite3_prepare_v3(q->h, t, -1, keep ? SQLITE_PREPARE_PERSISTENT : 0, st, NULL);
    free(t);
    if (rc != SQLITE_OK) {
        char what[64] = "preparing ";
        mt_db_sql_head(sql, what + 10, sizeof(what) - 10);
        return fail(c, err, what);
    }
    if (keep) {
        char *key = strdup(sql);
        if (key) {
            q->cache[q->n_cache] = (struct sq_stmt){key, *st, 0};
            *slot = &q->cache[q->n_cache++];
        }
    }
    return 0;
}

static void stmt_put(sqlite3_stmt *st, struct sq_stmt *slot)
{
    if (slot) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        slot->busy = 0;
    } else {
        sqlite3_finalize(st);
    }
}

static int bind(struct mt_db_conn *c, sqlite3_stmt *st, const struct mt_db_param *p, size_t n,
                struct meshtls_err *err)
{
    if ((int)n != sqlite3_bind_parameter_count(st)) {
        mt_db_conn_fail(c, MT_DB_ERR_OTHER, "wrong number of parameters");
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "database %s: statement wants %d parameters, got %zu",
                               c->db->u.redacted, sqlite3_bind_parameter_count(st), n);
    }
    for (size_t i = 0; i < n; i++) {
        int k = (int)i + 1, r;
        switch (p[i].type) {
        case MT_DB_T_TEXT: r = sqlite3_bind_text(st, k, p[i].text, -1, SQLITE_TRANSIENT); break;
        case MT_DB_T_INT64: r = sqlite3_bind_int64(st, k, p[i].i64); break;
        case MT_DB_T_BLOB:
            r = sqlite3_bind_blob64(st, k, p[i].blob ? p[i].blob : "", p[i].len, SQLITE_TRANSIENT);
            break;
        default: r = sqlite3_bind_null(st, k); break;
        }
        if (r != SQLITE_OK)
            return fail(c, err, "binding a parameter");
    }
    return 0;
}

static int sq_exec(struct mt_db_conn *c, const char *sql, const struct mt_db_param *p, size_t n,
                   int64_t *changes, struct meshtls_err *err)
{
    sqlite3_stmt *st = NULL;
    struct sq_stmt *slot = NULL;
    int rc = stmt_get(c, sql, &st, &slot, err);
    if (rc)
        return rc;
    if (!(rc = bind(c, st, p, n, err))) {
        int r;
        while ((r = sqlite3_step(st)) == SQLITE_ROW) /* PRAGMAs answer with a row */
            ;
        if (r != SQLITE_DONE) {
            char what[48];
            mt_db_sql_head(sql, what, sizeof(what));
            rc = fail(c, err, what);
        } else if (changes) {
            *changes = (int64_t)sqlite3_changes64(SQ(c)->h);
        }
    }
    stmt_put(st, slot);
    return rc;
}

static int sq_query(struct mt_db_conn *c, const char *sql, const struct mt_db_param *p, size_t n,
                    struct mt_db_rows **out, struct meshtls_err *err)
{
    sqlite3_stmt *st = NULL;
    struct sq_stmt *slot = NULL;
    int rc = stmt_get(c, sql, &st, &slot, err);
    if (rc)
        return rc;
    struct sq_rows *r = NULL;
    if (!(rc = bind(c, st, p, n, err)) && !(r = calloc(1, sizeof(*r))))
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    if (rc) {
        stmt_put(st, slot);
        return rc;
    }
    if (slot)
        slot->busy = 1;
    r->base.c = c;
    r->st = st;
    r->slot = slot;
    *out = &r->base;
    return 0;
}

#define RS(r) ((struct sq_rows *)(r))

static int sq_row_next(struct mt_db_rows *r, struct meshtls_err *err)
{
    int s = sqlite3_step(RS(r)->st);
    if (s == SQLITE_ROW)
        return 1;
    if (s == SQLITE_DONE)
        return 0;
    return fail(r->c, err, "reading rows");
}

static int sq_col_is_null(struct mt_db_rows *r, int i)
{
    return sqlite3_column_type(RS(r)->st, i) == SQLITE_NULL;
}

static const char *sq_col_text(struct mt_db_rows *r, int i)
{
    return (const char *)sqlite3_column_text(RS(r)->st, i);
}

static int64_t sq_col_int64(struct mt_db_rows *r, int i)
{
    return (int64_t)sqlite3_column_int64(RS(r)->st, i);
}

static const void *sq_col_blob(struct mt_db_rows *r, int i, size_t *len)
{
    const void *b = sqlite3_column_blob(RS(r)->st, i);
    int l = sqlite3_column_bytes(RS(r)->st, i);
    if (sqlite3_column_type(RS(r)->st, i) == SQLITE_NULL) {
        *len = 0;
        return NULL;
    }
    *len = (size_t)l;
    return b ? b : ""; /* an empty blob is not NULL */
}

static void sq_rows_close(struct mt_db_rows *r)
{
    stmt_put(RS(r)->st, RS(r)->slot);
    free(r);
}

static int data_version(struct mt_db_conn *c, int64_t *v, struct meshtls_err *err)
{
    struct mt_db_rows *r = NULL;
    int rc = sq_query(c, "PRAGMA data_version", NULL, 0, &r, err);
    if (rc)
        return rc;
    rc = sq_row_next(r, err);
    if (rc == 1)
        *v = sq_col_int64(r, 0);
    sq_rows_close(r);
    return rc == 1 ? 0 : rc < 0 ? rc : fail(c, err, "PRAGMA data_version");
}

static int sq_listen(struct mt_db_conn *c, const char *channel, struct meshtls_err *err)
{
    (void)channel; /* every commit to the file is a change */
    return data_version(c, &SQ(c)->data_version, err);
}

static int sq_notify(struct mt_db_conn *c, const char *channel, const char *payload,
                     struct meshtls_err *err)
{
    (void)c, (void)channel, (void)payload, (void)err;
    return 0;
}

static int sq_wait_change(struct mt_db_conn *c, int64_t deadline_ms, char *payload, size_t cap,
                          struct meshtls_err *err)
{
    (void)payload, (void)cap; /* already "" */
    for (;;) {
        int64_t v = 0;
        int rc = data_version(c, &v, err);
        if (rc)
            return rc;
        if (v != SQ(c)->data_version) {
            SQ(c)->data_version = v;
            return 1;
        }
        int64_t left = deadline_ms - mt_db_now_ms();
        if (left <= 0)
            return 0;
        if (left > POLL_MS)
            left = POLL_MS;
        struct timespec ts = {0, (long)left * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static void sq_unlisten(struct mt_db_conn *c)
{
    (void)c;
}

const struct db_ops mt_db_sqlite_ops = {
    .name = "sqlite",
    .connect = sq_connect,
    .disconnect = sq_disconnect,
    .revive = sq_revive,
    .script = sq_script,
    .exec = sq_exec,
    .query = sq_query,
    .row_next = sq_row_next,
    .col_is_null = sq_col_is_null,
    .col_text = sq_col_text,
    .col_int64 = sq_col_int64,
    .col_blob = sq_col_blob,
    .rows_close = sq_rows_close,
    .begin_sql = "BEGIN IMMEDIATE",
    .listen = sq_listen,
    .notify = sq_notify,
    .wait_change = sq_wait_change,
    .unlisten = sq_unlisten,
};
