/*
 * db_internal.h - what src/db/db.c shares with its two backends
 * (db_sqlite.c, db_pg.c).  Not for use outside src/db.
 */
#ifndef MESHTLS_DB_INTERNAL_H
#define MESHTLS_DB_INTERNAL_H

#include <pthread.h>

#include "db.h"

/* What a backend implements; the mt_db_* wrappers check and dispatch. */
struct db_ops {
    const char *name;
    /* A new connection; messages go to err (the URL redacted). */
    int (*connect)(struct mt_db *db, struct mt_db_conn **out, struct meshtls_err *err);
    void (*disconnect)(struct mt_db_conn *c);
    /* Make a connection taken from the pool usable again (PostgreSQL: reset a broken one). */
    int (*revive)(struct mt_db_conn *c, struct meshtls_err *err);
    /* Constant SQL, possibly several statements, no parameters: BEGIN, migrations. */
    int (*script)(struct mt_db_conn *c, const char *sql, struct meshtls_err *err);
    int (*exec)(struct mt_db_conn *c, const char *sql, const struct mt_db_param *p, size_t n,
                int64_t *changes, struct meshtls_err *err);
    int (*query)(struct mt_db_conn *c, const char *sql, const struct mt_db_param *p, size_t n,
                 struct mt_db_rows **out, struct meshtls_err *err);
    int (*row_next)(struct mt_db_rows *r, struct meshtls_err *err);
    int (*col_is_null)(struct mt_db_rows *r, int i);
    const char *(*col_text)(struct mt_db_rows *r, int i);
    int64_t (*col_int64)(struct mt_db_rows *r, int i);
    const void *(*col_blob)(struct mt_db_rows *r, int i, size_t *len);
    void (*rows_close)(struct mt_db_rows *r);
    const char *begin_sql;
    /* Change notification (db.h); the wrappers have checked channel and payload. */
    int (*listen)(struct mt_db_conn *c, const char *channel, struct meshtls_err *err);
    int (*notify)(struct mt_db_conn *c, const char *channel, const char *payload,
                  struct meshtls_err *err);
    /* 1 a change, 0 none before the deadline (CLOCK_MONOTONIC ms), or an error. */
    int (*wait_change)(struct mt_db_conn *c, int64_t deadline_ms, char *payload, size_t cap,
                       struct meshtls_err *err);
    /* Forget every channel (on release); errors ignored: a lost session listens to nothing. */
    void (*unlisten)(struct mt_db_conn *c);
};

extern const struct db_ops mt_db_sqlite_ops;
extern const struct db_ops mt_db_pg_ops;

struct mt_db {
    const struct db_ops *ops;
    struct mt_db_opts opts; /* defaults filled in */
    struct mt_db_url u;     /* backend, path, redacted */
    char *url;              /* the full URL, password included: wiped by mt_db_close() */
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* a connection came back */
    struct mt_db_conn *idle; /* free connections */
    int n_open;              /* connections that exist (idle + acquired) */
};

/* The part of a connection every backend shares; theirs start with it. */
struct mt_db_conn {
    struct mt_db *db;
    struct mt_db_conn *next; /* in db->idle */
    int in_tx;
    int listening; /* mt_db_listen() succeeded: release forgets the channels */
    enum mt_db_errkind kind;
    char msg[MESHTLS_ERR_MSG_MAX]; /* the database's last message, scrubbed */
};

/* The part of a cursor every backend shares. */
struct mt_db_rows {
    struct mt_db_conn *c;
};

/* Record a failure on `c`: its kind and the database's message (scrubbed of passwords). */
void mt_db_conn_fail(struct mt_db_conn *c, enum mt_db_errkind kind, const char *msg);

/*
 * Set err from the failure recorded on `c`: "database URL: what: message".
 * `what` says what was being done (a statement's start is fine).  Returns
 * MESHTLS_ESTORE.
 */
int mt_db_conn_err(struct mt_db_conn *c, struct meshtls_err *err, const char *what);

/* Replace, in msg (cap bytes), every password of `url` (and PGPASSWORD) by "***". */
void mt_db_scrub(const char *url, char *msg, size_t cap);

/* CLOCK_MONOTONIC in milliseconds: the deadlines of mt_db_wait_change(). */
int64_t mt_db_now_ms(void);

/* The first `cap - 1` characters of sql on one line, for messages. */
void mt_db_sql_head(const char *sql, char *buf, size_t cap);

#endif
