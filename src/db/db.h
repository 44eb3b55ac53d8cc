/*
 * db.h - one database layer for SQLite and PostgreSQL (see docs/DATABASE.md).
 *
 * A `struct mt_db` is opened from a URL and is shared by every thread: it
 * owns a small pool of connections.  A thread takes one connection with
 * mt_db_acquire() (bounded wait), runs statements on it and gives it back
 * with mt_db_release(); a connection is never used by two threads at once.
 * mt_db_tx() does the acquire / BEGIN / COMMIT / retry dance for the caller.
 *
 * URLs:
 *   sqlite:PATH                 one file (created 0600 unless opts.must_exist)
 *   postgres://... postgresql://...
 *                               handed to libpq as is, so the PG* environment
 *                               variables and ~/.pgpass fill in what the URL
 *                               leaves out.
 *
 * SQL: statements are parameterized only, with $1..$n placeholders on both
 * backends (translated to ?NNN for SQLite); values are never spliced into
 * SQL text.  Statements are prepared once per connection and cached.
 *
 * Threading: every call blocks on I/O or locks.  Never call this from an
 * event loop thread; run it on a job-pool worker.
 *
 * Passwords: a URL's password never appears in a message this layer writes:
 * messages name the URL as mt_db_url_redact() shows it, and server messages
 * are scrubbed of the password too.
 *
 * Strings passed in are borrowed for the duration of the call unless a
 * function says otherwise.  Errors follow meshtls/err.h: MESHTLS_EINVAL for a
 * bad URL or argument, MESHTLS_ENOENT for a missing SQLite file when
 * opts.must_exist, MESHTLS_ESTORE for everything the database refuses.
 */
#ifndef MESHTLS_DB_H
#define MESHTLS_DB_H

#include <stddef.h>
#include <stdint.h>

#include "meshtls/err.h"

/** The backend a URL selects. */
enum mt_db_backend {
    MT_DB_SQLITE = 1,
    MT_DB_POSTGRES = 2,
};

/** Options of mt_db_open(); zero means "the default" for every field. */
struct mt_db_opts {
    int pool_size;          /**< connections at most (default 4) */
    int acquire_timeout_ms; /**< how long mt_db_acquire() waits for a free one (default 5000) */
    int busy_timeout_ms;    /**< SQLite: wait on a locked file (default 2000) */
    int connect_timeout_s; /**< PostgreSQL: unless the URL or PGCONNECT_TIMEOUT says (default 10) */
    int tx_attempts;       /**< mt_db_tx(): attempts before giving up (default 5) */
    int must_exist;        /**< SQLite: a missing file is MESHTLS_ENOENT, not created */
    /** PostgreSQL: the server cancels a statement running longer (SET statement_timeout for
     *  the session, at connect), so a stuck lock or server never holds a thread for long;
     *  0: the server's setting.  The URL's own options=-c statement_timeout=... wins. */
    int statement_timeout_ms;
};

struct mt_db;      /* the shared handle: thread-safe */
struct mt_db_conn; /* one connection: one thread at a time */
struct mt_db_rows; /* a result cursor on one connection */

/** Kinds of a failed statement, to tell what a caller may do about it. */
enum mt_db_errkind {
    MT_DB_OK = 0,
    MT_DB_ERR_RETRY = 1,  /**< busy / serialization failure / deadlock / lock timeout: retry */
    MT_DB_ERR_UNIQUE = 2, /**< a UNIQUE or PRIMARY KEY constraint was violated */
    MT_DB_ERR_OTHER = 3,
};

/* ---- URLs ------------------------------------------------------------------------------------ */

/** A parsed URL: what mt_db_url_parse() fills. */
struct mt_db_url {
    enum mt_db_backend backend;
    char path[4096];     /**< SQLite: the file; empty for PostgreSQL */
    char redacted[4096]; /**< the URL with any password replaced by "***" (for messages) */
    int has_password;    /**< the URL carries a password (userinfo or ?password=) */
};

/**
 * Parse `url` (borrowed).  Accepts sqlite:PATH, postgres://..., postgresql://...
 * A bad URL is MESHTLS_EINVAL with a message that names it without its password.
 */
int mt_db_url_parse(const char *url, struct mt_db_url *out, struct meshtls_err *err);

/**
 * Write `url` with its password replaced by "***" into buf (always
 * terminated; truncated to cap).  Any string is accepted: what is not a
 * PostgreSQL URL is copied as is.
 */
void mt_db_url_redact(const char *url, char *buf, size_t cap);

/**
 * Overwrite, in place, the password of a PostgreSQL URL held in `arg` (e.g.
 * an argv[] entry, so that `ps` and /proc/PID/cmdline stop showing it once
 * the caller has copied the URL).  Returns 1 if something was hidden.
 */
int mt_db_url_hide_password(char *arg);

/* ---- handle ---------------------------------------------------------------------------------- */

/**
 * Open the database at `url` (borrowed; copied).  One connection is made at
 * once so that a wrong URL, password or file fails here.
 * @param opts NULL for all defaults.
 * @param out  on success, a new handle the caller closes with mt_db_close().
 */
int mt_db_open(const char *url, const struct mt_db_opts *opts, struct mt_db **out,
               struct meshtls_err *err);

/** Close every connection and free `db` (NULL is fine).  No connection may be acquired. */
void mt_db_close(struct mt_db *db);

/** The backend of `db`. */
enum mt_db_backend mt_db_backend(const struct mt_db *db);

/** "sqlite" or "postgres". */
const char *mt_db_backend_name(const struct mt_db *db);

/** The URL without its password, for messages; borrowed from `db`. */
const char *mt_db_url_safe(const struct mt_db *db);

/**
 * Take a connection from the pool, opening one if the pool is not full;
 * waits at most opts.acquire_timeout_ms for one to come back (then
 * MESHTLS_ESTORE).  A PostgreSQL connection found broken is reset.
 * @param out the caller's until mt_db_release().
 */
int mt_db_acquire(struct mt_db *db, struct mt_db_conn **out, struct meshtls_err *err);

/** Give `c` back (NULL is fine).  An open transaction is rolled back first. */
void mt_db_release(struct mt_db_conn *c);

/* ---- statements --------------------------------------------------------------------------------
 */

enum mt_db_type {
    MT_DB_T_NULL = 0,
    MT_DB_T_TEXT = 1,
    MT_DB_T_INT64 = 2,
    MT_DB_T_BLOB = 3,
};

/** One parameter value; the data is borrowed for the duration of the call. */
struct mt_db_param {
    enum mt_db_type type;
    const char *text;
    int64_t i64;
    const void *blob;
    size_t len;
};

/** A text parameter; NULL becomes SQL NULL. */
#define MT_DB_TEXT(s)                                                                              \
    ((struct mt_db_param){.type = (s) != NULL ? MT_DB_T_TEXT : MT_DB_T_NULL, .text = (s)})
#define MT_DB_INT64(v) ((struct mt_db_param){.type = MT_DB_T_INT64, .i64 = (int64_t)(v)})
#define MT_DB_BLOB(p, n) ((struct mt_db_param){.type = MT_DB_T_BLOB, .blob = (p), .len = (n)})
#define MT_DB_NULL ((struct mt_db_param){.type = MT_DB_T_NULL})

/**
 * Run one statement that returns no rows.
 * @param sql      a constant with $1..$n placeholders (the cache keys on it)
 * @param changes  if not NULL, the number of rows changed
 */
int mt_db_exec(struct mt_db_conn *c, const char *sql, const struct mt_db_param *params, size_t n,
               int64_t *changes, struct meshtls_err *err);

/**
 * Run one query.  Rows are read with mt_db_row_next().
 * @param out a new cursor the caller closes with mt_db_rows_close() before
 *            the next statement on `c`.
 */
int mt_db_query(struct mt_db_conn *c, const char *sql, const struct mt_db_param *params, size_t n,
                struct mt_db_rows **out, struct meshtls_err *err);

/** Step to the next row: 1 a row, 0 no more, < 0 an error (set in err). */
int mt_db_row_next(struct mt_db_rows *r, struct meshtls_err *err);

/** Whether column `i` (from 0) of the current row is NULL. */
int mt_db_col_is_null(struct mt_db_rows *r, int i);
/** Column `i` as text (NULL if SQL NULL); borrowed until the next row_next or close. */
const char *mt_db_col_text(struct mt_db_rows *r, int i);
/** Column `i` as a number (0 if NULL or not a number). */
int64_t mt_db_col_int64(struct mt_db_rows *r, int i);
/** Column `i` as bytes (NULL if SQL NULL, *len 0); borrowed like col_text. */
const void *mt_db_col_blob(struct mt_db_rows *r, int i, size_t *len);

/** Close a cursor (NULL is fine). */
void mt_db_rows_close(struct mt_db_rows *r);

/* ---- transactions ------------------------------------------------------------------------------
 */

/**
 * Start a write transaction on `c`: SQLite BEGIN IMMEDIATE (takes the write
 * lock now, waiting busy_timeout_ms), PostgreSQL BEGIN ISOLATION LEVEL
 * SERIALIZABLE.
 */
int mt_db_begin(struct mt_db_conn *c, struct meshtls_err *err);
/** Commit; on failure the transaction is still open: call mt_db_rollback(). */
int mt_db_commit(struct mt_db_conn *c, struct meshtls_err *err);
/** Roll back; harmless without a transaction. */
void mt_db_rollback(struct mt_db_conn *c);

/** The body of a transaction: returns 0 or an error code (with err set). */
typedef int (*mt_db_tx_fn)(struct mt_db_conn *c, void *arg, struct meshtls_err *err);

/**
 * Run fn(c, arg, err) inside a transaction on a connection from the pool,
 * and commit.  If a statement or the commit fails with a retryable error
 * (SQLite busy, PostgreSQL 40001 / 40P01 / 55P03), everything is rolled back
 * and fn runs again after a backoff (10 ms doubling, capped at 500 ms, with
 * jitter), at most opts.tx_attempts times.  So fn must do nothing outside
 * the database that it cannot repeat.  Any other error rolls back and is
 * returned at once.
 */
int mt_db_tx(struct mt_db *db, mt_db_tx_fn fn, void *arg, struct meshtls_err *err);

/* ---- errors -----------------------------------------------------------------------------------
 */

/** The kind of the last failure on `c` (MT_DB_OK after a success). */
enum mt_db_errkind mt_db_errkind(const struct mt_db_conn *c);
/** The database's message for the last failure on `c` (password scrubbed); borrowed. */
const char *mt_db_errmsg(const struct mt_db_conn *c);
/** The handle `c` belongs to. */
struct mt_db *mt_db_conn_db(const struct mt_db_conn *c);

/* ---- migrations -------------------------------------------------------------------------------
 */

/**
 * A numbered migration.  Versions run 1..n without gaps; each may hold
 * several statements.  A backend whose SQL is NULL cannot be migrated (a
 * "not yet supported" error naming the version).
 */
struct mt_db_migration {
    int version;
    const char *sqlite;
    const char *postgres;
};

/**
 * Apply the migrations of `m[0..n)` not yet recorded in `table` (a plain
 * identifier, [a-z_][a-z0-9_]*, created as (version INTEGER PRIMARY KEY,
 * applied_at INTEGER NOT NULL) if missing).  Applied once however many
 * processes start together: when something is pending, SQLite runs it all
 * in one BEGIN IMMEDIATE transaction; PostgreSQL under pg_advisory_lock on the table name, each
 * migration in its own transaction.  A database newer than `n` is refused
 * ("upgrade meshtls").
 * @param applied if not NULL, how many this call applied.
 */
int mt_db_migrate(struct mt_db *db, const char *table, const struct mt_db_migration *m, size_t n,
                  int *applied, struct meshtls_err *err);

/**
 * mt_db_migrate() on a connection the caller holds (and keeps): for a
 * caller that wants mt_db_errkind() of a failure (e.g. to say "locked").
 * `c` must not be inside a transaction.
 */
int mt_db_migrate_conn(struct mt_db_conn *c, const char *table, const struct mt_db_migration *m,
                       size_t n, int *applied, struct meshtls_err *err);

/* ---- change notification -------------------------------------------------------------------
 */

/** The longest payload mt_db_notify() takes (PostgreSQL's own limit is 8000 bytes). */
#define MT_DB_NOTIFY_PAYLOAD_MAX 1024

/**
 * Start listening for changes on `channel` (borrowed; [a-z_]{1,40}, else
 * MESHTLS_EINVAL) on `c`.  The caller keeps `c` acquired for as long as it
 * listens, on a thread of its own (mt_db_wait_change() blocks); releasing `c`
 * forgets every channel.
 *   PostgreSQL: LISTEN channel (several calls listen to several channels).
 *   SQLite: remembers PRAGMA data_version; any commit to the file by another
 *   connection (this process's pool or another process) counts as a change,
 *   whatever the channel.
 */
int mt_db_listen(struct mt_db_conn *c, const char *channel, struct meshtls_err *err);

/**
 * Tell listeners of `channel` (as in mt_db_listen) that something changed;
 * `payload` (borrowed; NULL is "", at most MT_DB_NOTIFY_PAYLOAD_MAX bytes) goes
 * with it.
 *   PostgreSQL: SELECT pg_notify($1, $2): delivered when the transaction on
 *   `c` commits (at once outside one); several equal notifications in one
 *   transaction arrive once.
 *   SQLite: nothing to do (a listener sees data_version move when a commit by
 *   any other connection lands); validated like PostgreSQL's so that callers
 *   behave the same on both.
 */
int mt_db_notify(struct mt_db_conn *c, const char *channel, const char *payload,
                 struct meshtls_err *err);

/**
 * Wait at most `timeout_ms` (0: only look) for a change on `c`, which must be
 * listening (else MESHTLS_EINVAL).  Returns 1 when one arrived, 0 on timeout,
 * or an error code (err set; the connection may be lost: release it and listen
 * on a fresh one, and assume that changes were missed meanwhile).
 * @param payload if not NULL, receives the notification's payload, terminated
 *                and truncated to `cap` (SQLite: always "").
 *   PostgreSQL: one notification per call, oldest first (call with 0 to drain
 *   the rest); waits in poll() on the connection's socket.
 *   SQLite: polls PRAGMA data_version every 25 ms; commits by `c` itself do not
 *   count, and several commits between two calls are one change.
 */
int mt_db_wait_change(struct mt_db_conn *c, int timeout_ms, char *payload, size_t cap,
                      struct meshtls_err *err);

#endif
