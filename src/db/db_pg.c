/*
 * db_pg.c - the PostgreSQL backend of the database layer (see db.h), on libpq.
 *
 * The URL goes to libpq unchanged (PQconnectdbParams with expand_dbname), so
 * the PG* environment variables and ~/.pgpass fill in what it leaves out; we
 * only add a default connect_timeout and application name.  Statements are
 * prepared once per connection (PQprepare, named "mtN") and cached by their
 * SQL; parameter types are left to the server, values go as text except
 * blobs (binary); results come back as text.  Change notification is
 * LISTEN / pg_notify() / poll() on the connection's socket.  Notices (CREATE ... IF NOT
 * EXISTS "skipping") are dropped rather than printed to stderr.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "db_internal.h"
#include "parse.h"

#define CACHE_MAX 64
#define MAX_PARAMS 64

struct pg_stmt {
    char *sql;
    char name[16];
};

struct pg_conn {
    struct mt_db_conn base;
    PGconn *h;
    struct pg_stmt cache[CACHE_MAX];
    size_t n_cache;
    unsigned next_id;
};

struct pg_rows {
    struct mt_db_rows base;
    PGresult *res;
    int row;             /* current row, -1 before the first */
    unsigned char *blob; /* the last decoded bytea, freed on the next row or close */
};

#define PG(c) ((struct pg_conn *)(c))
#define RS(r) ((struct pg_rows *)(r))

static void no_notice(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

static enum mt_db_errkind kind_of(const char *state)
{
    if (!state)
        return MT_DB_ERR_OTHER;
    if (!strcmp(state, "40001") || !strcmp(state, "40P01") || !strcmp(state, "55P03"))
        return MT_DB_ERR_RETRY;
    if (!strcmp(state, "23505"))
        return MT_DB_ERR_UNIQUE;
    return MT_DB_ERR_OTHER;
}

/* Record the failure of `res` (or of the connection if res is NULL) and set err. */
static int fail(struct mt_db_conn *c, const PGresult *res, struct meshtls_err *err,
                const char *what)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorMessage(res) : NULL;
    if (!msg || !*msg)
        msg = PQerrorMessage(PG(c)->h);
    mt_db_conn_fail(c, kind_of(state), msg);
    return mt_db_conn_err(c, err, what);
}

static void cache_clear(struct pg_conn *q)
{
    for (size_t i = 0; i < q->n_cache; i++)
        free(q->cache[i].sql);
    q->n_cache = 0;
}

static void pg_disconnect(struct mt_db_conn *c)
{
    cache_clear(PG(c));
    PQfinish(PG(c)->h);
    free(c);
}

static int pg_connect(struct mt_db *db, struct mt_db_conn **out, struct meshtls_err *err)
{
    struct pg_conn *q = calloc(1, sizeof(*q));
    if (!q)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    q->base.db = db;
    /* Ours first: the URL's own values (expanded from dbname) override them. */
    const char *kw[5], *val[5];
    char timeout[16], options[48];
    int k = 0;
    if (!getenv("PGCONNECT_TIMEOUT")) {
        snprintf(timeout, sizeof(timeout), "%d", db->opts.connect_timeout_s);
        kw[k] = "connect_timeout";
        val[k++] = timeout;
    }
    if (db->opts.statement_timeout_ms > 0) {
        snprintf(options, sizeof(options), "-c statement_timeout=%d",
                 db->opts.statement_timeout_ms);
        kw[k] = "options";
        val[k++] = options;
    }
    kw[k] = "fallback_application_name";
    val[k++] = "meshtls";
    kw[k] = "dbname";
    val[k++] = db->url;
    kw[k] = NULL;
    val[k] = NULL;
    q->h = PQconnectdbParams(kw, val, 1);
    if (!q->h || PQstatus(q->h) != CONNECTION_OK) {
        mt_db_conn_fail(&q->base, MT_DB_ERR_OTHER, q->h ? PQerrorMessage(q->h) : "out of memory");
        int rc = meshtls_err_set(err, MESHTLS_ESTORE,
                                 "cannot connect to database %s: %s (check the URL, the PG* "
                                 "variables and ~/.pgpass)",
                                 db->u.redacted, q->base.msg);
        pg_disconnect(&q->base);
        return rc;
    }
    PQsetNoticeProcessor(q->h, no_notice, NULL);
    *out = &q->base;
    return 0;
}

static int pg_revive(struct mt_db_conn *c, struct meshtls_err *err)
{
    struct pg_conn *q = PG(c);
    /* A server that ended the session while the connection sat idle in the pool (it was
     * restarted, pg_terminate_backend) left its goodbye and then EOF on the socket: read
     * them now (without blocking), so that the connection is reset here rather than
     * failing the caller's first statement after the database came back. */
    struct pollfd pfd = {.fd = PQsocket(q->h), .events = POLLIN};
    for (int i = 0; i < 4 && PQstatus(q->h) == CONNECTION_OK && pfd.fd >= 0 &&
                    poll(&pfd, 1, 0) == 1 && PQconsumeInput(q->h);
         i++)
        ;
    if (PQstatus(q->h) == CONNECTION_OK)
        return 0;
    cache_clear(q); /* prepared statements died with the session */
    PQreset(q->h);
    if (PQstatus(q->h) != CONNECTION_OK) {
        mt_db_conn_fail(c, MT_DB_ERR_OTHER, PQerrorMessage(q->h));
        return meshtls_err_set(err, MESHTLS_ESTORE, "lost database %s and cannot reconnect: %s",
                               c->db->u.redacted, c->msg);
    }
    c->in_tx = 0;
    return 0;
}

static int pg_script(struct mt_db_conn *c, const char *sql, struct meshtls_err *err)
{
    PGresult *res = PQexec(PG(c)->h, sql);
    int s = PQresultStatus(res), rc = 0;
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        char what[48];
        mt_db_sql_head(sql, what, sizeof(what));
        rc = fail(c, res, err, what);
    }
    PQclear(res);
    return rc;
}

/* The name of the prepared statement for sql, preparing it if new; NULL on error. */
static const char *stmt_name(struct mt_db_conn *c, const char *sql, size_t n,
                             struct meshtls_err *err)
{
    struct pg_conn *q = PG(c);
    for (size_t i = 0; i < q->n_cache; i++)
        if (!strcmp(q->cache[i].sql, sql))
            return q->cache[i].name;
    /* A full cache drops its oldest statement rather than growing without bound. */
    if (q->n_cache == CACHE_MAX) {
        char dealloc[48];
        snprintf(dealloc, sizeof(dealloc), "DEALLOCATE %s", q->cache[0].name);
        PQclear(PQexec(q->h, dealloc));
        free(q->cache[0].sql);
        memmove(&q->cache[0], &q->cache[1], (CACHE_MAX - 1) * sizeof(q->cache[0]));
        q->n_cache--;
    }
    struct pg_stmt *s = &q->cache[q->n_cache];
    snprintf(s->name, sizeof(s->name), "mt%u", q->next_id++);
    if (!(s->sql = strdup(sql))) {
        meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
        return NULL;
    }
    PGresult *res = PQprepare(q->h, s->name, sql, (int)n, NULL);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        char what[64] = "preparing ";
        mt_db_sql_head(sql, what + 10, sizeof(what) - 10);
        fail(c, res, err, what);
        PQclear(res);
        free(s->sql);
        return NULL;
    }
    PQclear(res);
    q->n_cache++;
    return s->name;
}

/* Run the prepared statement for sql with params; *res on success (status checked). */
static int run(struct mt_db_conn *c, const char *sql, const struct mt_db_param *p, size_t n,
               PGresult **res, struct meshtls_err *err)
{
    if (n > MAX_PARAMS)
        return meshtls_err_set(err, MESHTLS_EINVAL, "database: more than %d parameters",
                               MAX_PARAMS);
    const char *name = stmt_name(c, sql, n, err);
    if (!name)
        return MESHTLS_ESTORE;
    const char *vals[MAX_PARAMS];
    int lens[MAX_PARAMS], fmts[MAX_PARAMS];
    char nums[MAX_PARAMS][24];
    for (size_t i = 0; i < n; i++) {
        lens[i] = 0;
        fmts[i] = 0;
        switch (p[i].type) {
        case MT_DB_T_TEXT: vals[i] = p[i].text; break;
        case MT_DB_T_INT64:
            snprintf(nums[i], sizeof(nums[i]), "%lld", (long long)p[i].i64);
            vals[i] = nums[i];
            break;
        case MT_DB_T_BLOB: /* binary: bytea takes the bytes as they are */
            vals[i] = p[i].blob ? p[i].blob : "";
            lens[i] = (int)p[i].len;
            fmts[i] = 1;
            break;
        default: vals[i] = NULL; break;
        }
    }
    PGresult *r = PQexecPrepared(PG(c)->h, name, (int)n, vals, lens, fmts, 0);
    int s = PQresultStatus(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        char what[48];
        mt_db_sql_head(sql, what, sizeof(what));
        int rc = fail(c, r, err, what);
        PQclear(r);
        return rc;
    }
    *res = r;
    return 0;
}

static int pg_exec(struct mt_db_conn *c, const char *sql, const struct mt_db_param *p, size_t n,
                   int64_t *changes, struct meshtls_err *err)
{
    PGresult *res = NULL;
    int rc = run(c, sql, p, n, &res, err);
    if (rc)
        return rc;
    if (changes) {
        int64_t v = 0;
        const char *t = PQcmdTuples(res);
        *changes = (t && *t && !mt_parse_i64(t, 0, INT64_MAX, &v)) ? v : 0;
    }
    PQclear(res);
    return 0;
}

static int pg_query(struct mt_db_conn *c, const char *sql, const struct mt_db_param *p, size_t n,
                    struct mt_db_rows **out, struct meshtls_err *err)
{
    PGresult *res = NULL;
    int rc = run(c, sql, p, n, &res, err);
    if (rc)
        return rc;
    struct pg_rows *r = calloc(1, sizeof(*r));
    if (!r) {
        PQclear(res);
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    }
    r->base.c = c;
    r->res = res;
    r->row = -1;
    *out = &r->base;
    return 0;
}

static int pg_row_next(struct mt_db_rows *r, struct meshtls_err *err)
{
    (void)err;
    struct pg_rows *q = RS(r);
    if (q->blob) {
        PQfreemem(q->blob);
        q->blob = NULL;
    }
    if (q->row + 1 >= PQntuples(q->res))
        return 0;
    q->row++;
    return 1;
}

static int pg_col_is_null(struct mt_db_rows *r, int i)
{
    struct pg_rows *q = RS(r);
    return q->row < 0 || i >= PQnfields(q->res) || PQgetisnull(q->res, q->row, i);
}

static const char *pg_col_text(struct mt_db_rows *r, int i)
{
    return pg_col_is_null(r, i) ? NULL : PQgetvalue(RS(r)->res, RS(r)->row, i);
}

static int64_t pg_col_int64(struct mt_db_rows *r, int i)
{
    const char *t = pg_col_text(r, i);
    int64_t v = 0;
    if (!t)
        return 0;
    if (!strcmp(t, "t")) /* booleans come back as t / f */
        return 1;
    return mt_parse_i64(t, INT64_MIN, INT64_MAX, &v) ? 0 : v;
}

static const void *pg_col_blob(struct mt_db_rows *r, int i, size_t *len)
{
    struct pg_rows *q = RS(r);
    *len = 0;
    const char *t = pg_col_text(r, i);
    if (!t)
        return NULL;
    if (q->blob)
        PQfreemem(q->blob);
    q->blob = PQunescapeBytea((const unsigned char *)t, len);
    return q->blob ? (const void *)q->blob : (const void *)"";
}

static void pg_rows_close(struct mt_db_rows *r)
{
    if (RS(r)->blob)
        PQfreemem(RS(r)->blob);
    PQclear(RS(r)->res);
    free(r);
}

static int pg_listen(struct mt_db_conn *c, const char *channel, struct meshtls_err *err)
{
    /* LISTEN takes no parameter: the channel is an identifier checked by mt_db_listen. */
    char sql[64];
    snprintf(sql, sizeof(sql), "LISTEN %s", channel);
    return pg_script(c, sql, err);
}

static int pg_notify(struct mt_db_conn *c, const char *channel, const char *payload,
                     struct meshtls_err *err)
{
    struct mt_db_param p[] = {MT_DB_TEXT(channel), MT_DB_TEXT(payload)};
    return pg_exec(c, "SELECT pg_notify($1, $2)", p, 2, NULL, err);
}

/* One queued notification into payload: 1, or 0 if none is queued. */
static int take_notify(PGconn *h, char *payload, size_t cap)
{
    PGnotify *n = PQnotifies(h);
    if (!n)
        return 0;
    if (payload && cap)
        snprintf(payload, cap, "%s", n->extra ? n->extra : "");
    PQfreemem(n);
    return 1;
}

static int pg_wait_change(struct mt_db_conn *c, int64_t deadline_ms, char *payload, size_t cap,
                          struct meshtls_err *err)
{
    PGconn *h = PG(c)->h;
    for (;;) {
        /* Read what the socket holds without blocking; a closed session fails here. */
        if (!PQconsumeInput(h) || PQstatus(h) != CONNECTION_OK) {
            mt_db_conn_fail(c, MT_DB_ERR_OTHER, PQerrorMessage(h));
            return mt_db_conn_err(c, err, "waiting for notifications (connection lost)");
        }
        if (take_notify(h, payload, cap))
            return 1;
        int64_t left = deadline_ms - mt_db_now_ms();
        if (left <= 0)
            return 0;
        struct pollfd pfd = {.fd = PQsocket(h), .events = POLLIN};
        if (pfd.fd < 0) {
            mt_db_conn_fail(c, MT_DB_ERR_OTHER, "no socket");
            return mt_db_conn_err(c, err, "waiting for notifications (connection lost)");
        }
        if (poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left) < 0 && errno != EINTR) {
            mt_db_conn_fail(c, MT_DB_ERR_OTHER, strerror(errno));
            return mt_db_conn_err(c, err, "waiting for notifications");
        }
    }
}

static void pg_unlisten(struct mt_db_conn *c)
{
    PGconn *h = PG(c)->h;
    if (PQstatus(h) == CONNECTION_OK)
        PQclear(PQexec(h, "UNLISTEN *"));
    while (take_notify(h, NULL, 0)) /* what is queued was for the previous holder */
        ;
}

const struct db_ops mt_db_pg_ops = {
    .name = "postgres",
    .connect = pg_connect,
    .disconnect = pg_disconnect,
    .revive = pg_revive,
    .script = pg_script,
    .exec = pg_exec,
    .query = pg_query,
    .row_next = pg_row_next,
    .col_is_null = pg_col_is_null,
    .col_text = pg_col_text,
    .col_int64 = pg_col_int64,
    .col_blob = pg_col_blob,
    .rows_close = pg_rows_close,
    .begin_sql = "BEGIN ISOLATION LEVEL SERIALIZABLE",
    .listen = pg_listen,
    .notify = pg_notify,
    .wait_change = pg_wait_change,
    .unlisten = pg_unlisten,
};
