/*
 * test_db.c - the database layer (src/db) on SQLite always, and on
 * PostgreSQL when MESHTLS_TEST_PG_URL names a server to use (the integration
 * test tests/integration/test_db.py starts one and runs this binary).
 *
 * Tables: URL parsing (each bad URL named without its password), then per
 * backend: migrations applied once, parameters of each type, transactions
 * with retry, threads sharing one handle, errors, change notification
 * (LISTEN / NOTIFY on PostgreSQL, PRAGMA data_version on SQLite).
 *
 * Modes for the integration test (the URL's password is hidden from `ps`
 * as soon as it is copied):
 *   test_db                    the unit tests
 *   test_db migrate URL        apply the demo migrations, print "applied N"
 *   test_db hold URL           open, print "ready", wait for stdin to close
 *   test_db query URL          open, print the value of SELECT 1 ("one 1")
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "db.h"

/* ---- URLs ---------------------------------------------------------------------------------- */

static const struct {
    const char *url;
    int rc;
    enum mt_db_backend backend;
    const char *path;     /* SQLite: the file */
    const char *redacted; /* what messages show */
    int has_password;
} URLS[] = {
    {"sqlite:/var/lib/meshtls/ca.db", 0, MT_DB_SQLITE, "/var/lib/meshtls/ca.db",
     "sqlite:/var/lib/meshtls/ca.db", 0},
    {"sqlite:rel/x.db", 0, MT_DB_SQLITE, "rel/x.db", "sqlite:rel/x.db", 0},
    {"sqlite:///abs/x.db", 0, MT_DB_SQLITE, "/abs/x.db", "sqlite:///abs/x.db", 0},
    {"sqlite:", MESHTLS_EINVAL, 0, NULL, "sqlite:", 0},
    {"sqlite://host/x.db", MESHTLS_EINVAL, 0, NULL, "sqlite://host/x.db", 0},
    {"postgres://app@db.internal:5432/meshtls", 0, MT_DB_POSTGRES, "",
     "postgres://app@db.internal:5432/meshtls", 0},
    {"postgresql://app:s3cr3tpw@db/meshtls", 0, MT_DB_POSTGRES, "",
     "postgresql://app:***@db/meshtls", 1},
    {"postgres://app:p%40ss:w0rd@db/x?sslmode=require&password=other1pw", 0, MT_DB_POSTGRES, "",
     "postgres://app:***@db/x?sslmode=require&password=***", 1},
    {"postgres:///meshtls?host=/run/postgresql", 0, MT_DB_POSTGRES, "",
     "postgres:///meshtls?host=/run/postgresql", 0},
    {"postgres://:onlypw99@h/d", 0, MT_DB_POSTGRES, "", "postgres://:***@h/d", 1},
    {"mysql://root:t0psecret@db/x", MESHTLS_EINVAL, 0, NULL, "mysql://root:***@db/x", 1},
    {"/var/lib/meshtls.db", MESHTLS_EINVAL, 0, NULL, "/var/lib/meshtls.db", 0},
    {"", MESHTLS_EINVAL, 0, NULL, "", 0},
};

TEST(url_table)
{
    for (size_t i = 0; i < sizeof(URLS) / sizeof(URLS[0]); i++) {
        struct mt_db_url u;
        struct meshtls_err err = MESHTLS_ERR_INIT;
        int rc = mt_db_url_parse(URLS[i].url, &u, &err);
        if (rc != URLS[i].rc)
            fprintf(stderr, "url %zu (%s): rc %d\n", i, URLS[i].url, rc);
        CHECK_INT_EQ(rc, URLS[i].rc);
        CHECK_STR_EQ(u.redacted, URLS[i].redacted);
        CHECK_INT_EQ(u.has_password, URLS[i].has_password);
        if (rc == 0) {
            CHECK_INT_EQ(u.backend, URLS[i].backend);
            CHECK_STR_EQ(u.path, URLS[i].path);
        } else {
            /* the message names the URL, without any password */
            CHECK(strstr(err.msg, URLS[i].redacted) != NULL);
            CHECK(strstr(err.msg, "t0psecret") == NULL);
        }
    }
}

TEST(hide_password_in_place)
{
    char arg[] = "postgres://app:s3cr3tpw@db/x?password=again123";
    CHECK_INT_EQ(mt_db_url_hide_password(arg), 1);
    CHECK_STR_EQ(arg, "postgres://app:********@db/x?password=********");
    char plain[] = "sqlite:/x.db";
    CHECK_INT_EQ(mt_db_url_hide_password(plain), 0);
    CHECK_STR_EQ(plain, "sqlite:/x.db");
    char buf[16];
    mt_db_url_redact("postgres://u:pw@averylonghost/db", buf, sizeof(buf));
    CHECK_INT_EQ(strlen(buf), 15); /* truncated, terminated */
}

TEST(bad_url_on_open_named_without_password)
{
    struct mt_db *db = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    /* nothing listens on port 1: the connection fails, the message keeps the secret out */
    CHECK_INT_EQ(
        mt_db_open("postgres://app:Sup3rSecretPw@127.0.0.1:1/x?connect_timeout=2", NULL, &db, &err),
        MESHTLS_ESTORE);
    CHECK(db == NULL);
    CHECK(strstr(err.msg, "Sup3rSecretPw") == NULL);
    CHECK(strstr(err.msg, "postgres://app:***@127.0.0.1:1/x") != NULL);
    CHECK_INT_EQ(mt_db_open("postgres://app:Sup3rSecretPw@127.0.0.1:notaport/x", NULL, &db, &err),
                 MESHTLS_ESTORE);
    CHECK(strstr(err.msg, "Sup3rSecretPw") == NULL);
    CHECK_INT_EQ(mt_db_open("sqlite:/nonexistent-dir-meshtls/x.db", NULL, &db, &err), MESHTLS_EIO);
    CHECK(strstr(err.msg, "/nonexistent-dir-meshtls/x.db") != NULL);
    struct mt_db_opts o = {.must_exist = 1};
    CHECK_INT_EQ(mt_db_open("sqlite:/tmp/meshtls-no-such.db", &o, &db, &err), MESHTLS_ENOENT);
}

/* ---- per backend --------------------------------------------------------------------------- */

static char url[4200]; /* the backend under test */
static enum mt_db_backend backend;

static struct mt_db *open_db(const struct mt_db_opts *o)
{
    struct mt_db *db = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    if (mt_db_open(url, o, &db, &err) != 0)
        fprintf(stderr, "open: %s\n", err.msg);
    return db;
}

/* Run one statement on a pooled connection; returns the rc. */
static int run(struct mt_db *db, const char *sql, const struct mt_db_param *p, size_t n,
               struct meshtls_err *err)
{
    struct mt_db_conn *c = NULL;
    int rc = mt_db_acquire(db, &c, err);
    if (rc)
        return rc;
    rc = mt_db_exec(c, sql, p, n, NULL, err);
    mt_db_release(c);
    return rc;
}

static int64_t scalar(struct mt_db *db, const char *sql)
{
    struct mt_db_conn *c = NULL;
    struct mt_db_rows *r = NULL;
    int64_t v = -1;
    if (mt_db_acquire(db, &c, NULL))
        return -1;
    if (!mt_db_query(c, sql, NULL, 0, &r, NULL) && mt_db_row_next(r, NULL) == 1)
        v = mt_db_col_int64(r, 0);
    mt_db_rows_close(r);
    mt_db_release(c);
    return v;
}

static const struct mt_db_migration MIGS[] = {
    {1, "CREATE TABLE mt_t1 (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
     "CREATE TABLE mt_t1 (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)"},
    {2, "ALTER TABLE mt_t1 ADD COLUMN note TEXT; CREATE INDEX mt_t1_note ON mt_t1(note)",
     "ALTER TABLE mt_t1 ADD COLUMN note TEXT; CREATE INDEX mt_t1_note ON mt_t1(note)"},
    {3, "CREATE TABLE mt_t2 (k TEXT PRIMARY KEY, v INTEGER NOT NULL)",
     "CREATE TABLE mt_t2 (k TEXT PRIMARY KEY, v BIGINT NOT NULL)"},
};

static void clean(struct mt_db *db)
{
    static const char *const drops[] = {
        "DROP TABLE IF EXISTS mt_t1",    "DROP TABLE IF EXISTS mt_t2",
        "DROP TABLE IF EXISTS mt_mig",   "DROP TABLE IF EXISTS mt_params",
        "DROP TABLE IF EXISTS mt_ctr",   "DROP TABLE IF EXISTS mt_other_mig",
        "DROP TABLE IF EXISTS mt_notes",
    };
    for (size_t i = 0; i < sizeof(drops) / sizeof(drops[0]); i++)
        run(db, drops[i], NULL, 0, NULL);
}

TEST(migrations_once)
{
    struct mt_db *db = open_db(NULL);
    CHECK(db != NULL);
    if (!db)
        return;
    clean(db);
    struct meshtls_err err = MESHTLS_ERR_INIT;
    int applied = -1;
    /* in steps: 2 now, the third later (an upgrade), then nothing */
    CHECK_INT_EQ(mt_db_migrate(db, "mt_mig", MIGS, 2, &applied, &err), 0);
    CHECK_INT_EQ(applied, 2);
    CHECK_INT_EQ(mt_db_migrate(db, "mt_mig", MIGS, 3, &applied, &err), 0);
    CHECK_INT_EQ(applied, 1);
    CHECK_INT_EQ(mt_db_migrate(db, "mt_mig", MIGS, 3, &applied, &err), 0);
    CHECK_INT_EQ(applied, 0);
    CHECK_INT_EQ(scalar(db, "SELECT COUNT(*) FROM mt_mig"), 3);
    CHECK_INT_EQ(scalar(db, "SELECT COUNT(*) FROM mt_t2"), 0);
    /* a database newer than the code is refused */
    CHECK_INT_EQ(mt_db_migrate(db, "mt_mig", MIGS, 2, &applied, &err), MESHTLS_ESTORE);
    CHECK(strstr(err.msg, "upgrade meshtls") != NULL);
    /* bad input: gaps, odd table names */
    struct mt_db_migration gap[] = {{1, "SELECT 1", "SELECT 1"}, {3, "SELECT 1", "SELECT 1"}};
    CHECK_INT_EQ(mt_db_migrate(db, "mt_other_mig", gap, 2, &applied, &err), MESHTLS_EINVAL);
    CHECK_INT_EQ(mt_db_migrate(db, "x; DROP TABLE mt_t1", MIGS, 1, &applied, &err), MESHTLS_EINVAL);
    /* a failing migration applies nothing of itself and says which */
    struct mt_db_migration bad[] = {
        {1, "CREATE TABLE mt_t1 (x INTEGER)", "CREATE TABLE mt_t1 (x INT)"}};
    CHECK_INT_EQ(mt_db_migrate(db, "mt_other_mig", bad, 1, &applied, &err), MESHTLS_ESTORE);
    CHECK_INT_EQ(applied, 0);
    CHECK(strstr(err.msg, "mt_t1") != NULL || strstr(err.msg, "CREATE TABLE") != NULL);
    /* a backend without SQL for a migration is "not yet supported" */
    struct mt_db_migration none[] = {{1, NULL, NULL}};
    CHECK_INT_EQ(mt_db_migrate(db, "mt_other_mig", none, 1, &applied, &err), MESHTLS_ESTORE);
    CHECK(strstr(err.msg, "not yet supported") != NULL);
    clean(db);
    mt_db_close(db);
}

static const struct {
    const char *text; /* NULL: SQL NULL */
    int64_t i64;
    const char *blob;
    size_t blob_len;
} VALUES[] = {
    {"plain", 0, "abc", 3},
    {"", INT64_MAX, "", 0},
    {"it's \"quoted\" $1 ?2 -- not a comment", INT64_MIN, "\0\1\2\377", 4},
    {"ünïcødé ✓\nnew line", -1, "x\0y", 3},
    {NULL, 42, NULL, 0},
};

TEST(params_of_each_type)
{
    struct mt_db *db = open_db(NULL);
    CHECK(db != NULL);
    if (!db)
        return;
    clean(db);
    struct meshtls_err err = MESHTLS_ERR_INIT;
    CHECK_INT_EQ(run(db,
                     backend == MT_DB_SQLITE
                         ? "CREATE TABLE mt_params (id INTEGER PRIMARY KEY, t TEXT, i INTEGER, "
                           "b BLOB, n TEXT)"
                         : "CREATE TABLE mt_params (id INTEGER PRIMARY KEY, t TEXT, i BIGINT, "
                           "b BYTEA, n TEXT)",
                     NULL, 0, &err),
                 0);
    struct mt_db_conn *c = NULL;
    CHECK_INT_EQ(mt_db_acquire(db, &c, &err), 0);
    if (!c) {
        mt_db_close(db);
        return;
    }
    size_t nv = sizeof(VALUES) / sizeof(VALUES[0]);
    for (size_t i = 0; i < nv; i++) {
        struct mt_db_param p[] = {
            MT_DB_INT64(i), MT_DB_TEXT(VALUES[i].text), MT_DB_INT64(VALUES[i].i64),
            VALUES[i].blob ? MT_DB_BLOB(VALUES[i].blob, VALUES[i].blob_len) : MT_DB_NULL,
            MT_DB_NULL};
        int64_t changes = -1;
        CHECK_INT_EQ(mt_db_exec(c,
                                "INSERT INTO mt_params (id, t, i, b, n) VALUES ($1, $2, $3, "
                                "$4, $5)",
                                p, 5, &changes, &err),
                     0);
        CHECK_INT_EQ(changes, 1);
    }
    /* read back, each row by a parameter; a reused placeholder ($1 twice) works */
    for (size_t i = 0; i < nv; i++) {
        struct mt_db_rows *r = NULL;
        struct mt_db_param p[] = {MT_DB_INT64(i)};
        CHECK_INT_EQ(mt_db_query(c,
                                 "SELECT t, i, b, n, id FROM mt_params WHERE id = $1 AND id >= $1",
                                 p, 1, &r, &err),
                     0);
        if (!r)
            continue;
        CHECK_INT_EQ(mt_db_row_next(r, &err), 1);
        if (VALUES[i].text)
            CHECK_STR_EQ(mt_db_col_text(r, 0), VALUES[i].text);
        else
            CHECK(mt_db_col_text(r, 0) == NULL && mt_db_col_is_null(r, 0));
        CHECK_INT_EQ(mt_db_col_int64(r, 1), VALUES[i].i64);
        size_t len = 99;
        const void *b = mt_db_col_blob(r, 2, &len);
        if (VALUES[i].blob) {
            CHECK(b != NULL);
            CHECK_INT_EQ(len, VALUES[i].blob_len);
            CHECK(b && memcmp(b, VALUES[i].blob, len) == 0);
        } else {
            CHECK(b == NULL && len == 0);
        }
        CHECK(mt_db_col_is_null(r, 3));
        CHECK_INT_EQ(mt_db_col_int64(r, 4), i);
        CHECK_INT_EQ(mt_db_row_next(r, &err), 0);
        mt_db_rows_close(r);
    }
    /* a cursor over every row; a nested query on the same connection meanwhile */
    struct mt_db_rows *r = NULL, *r2 = NULL;
    CHECK_INT_EQ(mt_db_query(c, "SELECT id FROM mt_params ORDER BY id", NULL, 0, &r, &err), 0);
    int64_t seen = 0;
    while (r && mt_db_row_next(r, &err) == 1) {
        CHECK_INT_EQ(mt_db_col_int64(r, 0), seen);
        seen++;
        CHECK_INT_EQ(mt_db_query(c, "SELECT id FROM mt_params ORDER BY id", NULL, 0, &r2, &err), 0);
        CHECK_INT_EQ(mt_db_row_next(r2, &err), 1);
        mt_db_rows_close(r2);
    }
    mt_db_rows_close(r);
    CHECK_INT_EQ(seen, nv);
    /* changes counts an UPDATE */
    int64_t changes = -1;
    struct mt_db_param up[] = {MT_DB_TEXT("x"), MT_DB_INT64(2)};
    CHECK_INT_EQ(mt_db_exec(c, "UPDATE mt_params SET n = $1 WHERE id < $2", up, 2, &changes, &err),
                 0);
    CHECK_INT_EQ(changes, 2);
    mt_db_release(c);
    clean(db);
    mt_db_close(db);
}

static int insert_one(struct mt_db_conn *c, void *arg, struct meshtls_err *err)
{
    int *calls = arg;
    (*calls)++;
    struct mt_db_param p[] = {MT_DB_TEXT("a"), MT_DB_INT64(1)};
    return mt_db_exec(c, "INSERT INTO mt_t2 (k, v) VALUES ($1, $2)", p, 2, NULL, err);
}

static int insert_then_fail(struct mt_db_conn *c, void *arg, struct meshtls_err *err)
{
    int rc = insert_one(c, arg, err);
    if (rc)
        return rc;
    /* not retryable: a syntax error */
    return mt_db_exec(c, "SELEC nonsense", NULL, 0, NULL, err);
}

/* Fails with a real retryable database error on the first `*arg` calls. */
struct flaky {
    int fail_first, calls;
    const char *fail_sql; /* what raises the retryable error; NULL: 40001 */
};

static int flaky_fn(struct mt_db_conn *c, void *arg, struct meshtls_err *err)
{
    struct flaky *f = arg;
    f->calls++;
    struct mt_db_param p[] = {MT_DB_TEXT("k"), MT_DB_INT64(f->calls)};
    int rc = mt_db_exec(c, "INSERT INTO mt_t2 (k, v) VALUES ($1, $2)", p, 2, NULL, err);
    if (rc || f->calls > f->fail_first)
        return rc;
    /* PostgreSQL raises 40001 itself; SQLite has no such statement, so the busy case is
     * shown in tx_retries_busy_sqlite with a real lock. */
    return mt_db_exec(c, f->fail_sql ? f->fail_sql : "SELECT mt_fail_40001()", NULL, 0, NULL, err);
}

TEST(transactions)
{
    struct mt_db *db = open_db(NULL);
    CHECK(db != NULL);
    if (!db)
        return;
    clean(db);
    struct meshtls_err err = MESHTLS_ERR_INIT;
    CHECK_INT_EQ(mt_db_migrate(db, "mt_mig", MIGS, 3, NULL, &err), 0);
    int calls = 0;
    /* commit */
    CHECK_INT_EQ(mt_db_tx(db, insert_one, &calls, &err), 0);
    CHECK_INT_EQ(calls, 1);
    CHECK_INT_EQ(scalar(db, "SELECT COUNT(*) FROM mt_t2"), 1);
    /* a unique violation: not retried, rolled back, kind UNIQUE */
    calls = 0;
    CHECK_INT_EQ(mt_db_tx(db, insert_one, &calls, &err), MESHTLS_ESTORE);
    CHECK_INT_EQ(calls, 1);
    struct mt_db_conn *c = NULL;
    CHECK_INT_EQ(mt_db_acquire(db, &c, &err), 0);
    struct mt_db_param p[] = {MT_DB_TEXT("a"), MT_DB_INT64(1)};
    CHECK_INT_EQ(mt_db_exec(c, "INSERT INTO mt_t2 (k, v) VALUES ($1, $2)", p, 2, NULL, &err),
                 MESHTLS_ESTORE);
    CHECK_INT_EQ(mt_db_errkind(c), MT_DB_ERR_UNIQUE);
    CHECK(strstr(err.msg, mt_db_url_safe(db)) != NULL);
    /* explicit begin / rollback undoes */
    CHECK_INT_EQ(mt_db_begin(c, &err), 0);
    CHECK_INT_EQ(mt_db_exec(c, "DELETE FROM mt_t2", NULL, 0, NULL, &err), 0);
    mt_db_rollback(c);
    mt_db_release(c);
    CHECK_INT_EQ(scalar(db, "SELECT COUNT(*) FROM mt_t2"), 1);
    /* a non-retryable error inside: rolled back at once, the insert undone */
    CHECK_INT_EQ(run(db, "DELETE FROM mt_t2", NULL, 0, &err), 0);
    calls = 0;
    CHECK_INT_EQ(mt_db_tx(db, insert_then_fail, &calls, &err), MESHTLS_ESTORE);
    CHECK_INT_EQ(calls, 1);
    CHECK(strstr(err.msg, "SELEC") != NULL);
    CHECK_INT_EQ(scalar(db, "SELECT COUNT(*) FROM mt_t2"), 0);
    /* a connection released inside a transaction comes back clean */
    CHECK_INT_EQ(mt_db_acquire(db, &c, &err), 0);
    CHECK_INT_EQ(mt_db_begin(c, &err), 0);
    CHECK_INT_EQ(mt_db_exec(c, "INSERT INTO mt_t2 (k, v) VALUES ($1, $2)", p, 2, NULL, &err), 0);
    mt_db_release(c);
    CHECK_INT_EQ(scalar(db, "SELECT COUNT(*) FROM mt_t2"), 0);

    if (backend == MT_DB_POSTGRES) {
        /* a real 40001 from the server: retried with the work redone, then committed */
        CHECK_INT_EQ(run(db,
                         "CREATE OR REPLACE FUNCTION mt_fail_40001() RETURNS int LANGUAGE plpgsql "
                         "AS 'BEGIN RAISE EXCEPTION ''injected'' USING ERRCODE = ''40001''; END'",
                         NULL, 0, &err),
                     0);
        struct flaky f = {.fail_first = 2};
        CHECK_INT_EQ(mt_db_tx(db, flaky_fn, &f, &err), 0);
        CHECK_INT_EQ(f.calls, 3);
        CHECK_INT_EQ(scalar(db, "SELECT v FROM mt_t2"), 3);
        CHECK_INT_EQ(run(db, "DELETE FROM mt_t2", NULL, 0, &err), 0);
        /* bounded: never succeeding gives up after tx_attempts */
        struct mt_db_opts o = {.tx_attempts = 3};
        struct mt_db *db3 = open_db(&o);
        f = (struct flaky){.fail_first = 100};
        CHECK_INT_EQ(mt_db_tx(db3, flaky_fn, &f, &err), MESHTLS_ESTORE);
        CHECK_INT_EQ(f.calls, 3);
        CHECK(strstr(err.msg, "after 3 attempts") != NULL);
        mt_db_close(db3);
        CHECK_INT_EQ(scalar(db, "SELECT COUNT(*) FROM mt_t2"), 0);
        /* a lock timeout (55P03, lock_timeout) and a deadlock (40P01) are retried too:
         * another transaction held the row; this one's work is redone */
        static const char *const states[] = {"55P03", "40P01"};
        for (size_t i = 0; i < 2; i++) {
            char sql[300];
            snprintf(sql, sizeof(sql),
                     "CREATE OR REPLACE FUNCTION mt_fail_state() RETURNS int LANGUAGE plpgsql "
                     "AS 'BEGIN RAISE EXCEPTION ''injected'' USING ERRCODE = ''%s''; END'",
                     states[i]);
            CHECK_INT_EQ(run(db, sql, NULL, 0, &err), 0);
            f = (struct flaky){.fail_first = 1, .fail_sql = "SELECT mt_fail_state()"};
            CHECK_INT_EQ(mt_db_tx(db, flaky_fn, &f, &err), 0);
            CHECK_INT_EQ(f.calls, 2);
            CHECK_INT_EQ(scalar(db, "SELECT v FROM mt_t2"), 2);
            CHECK_INT_EQ(run(db, "DELETE FROM mt_t2", NULL, 0, &err), 0);
        }
        run(db, "DROP FUNCTION mt_fail_state()", NULL, 0, NULL);
        run(db, "DROP FUNCTION mt_fail_40001()", NULL, 0, NULL);
    }
    clean(db);
    mt_db_close(db);
}

/* SQLite: another process-like handle holds the write lock for a while. */
struct holder {
    struct mt_db_conn *c;
    int ms;
};

static void *release_later(void *arg)
{
    struct holder *h = arg;
    struct timespec ts = {h->ms / 1000, (long)(h->ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    mt_db_commit(h->c, NULL);
    return NULL;
}

TEST(tx_retries_busy_sqlite)
{
    if (backend != MT_DB_SQLITE)
        return;
    struct mt_db_opts quick = {.busy_timeout_ms = 1, .tx_attempts = 8};
    struct mt_db *db = open_db(&quick), *other = open_db(NULL);
    CHECK(db && other);
    if (!db || !other)
        return;
    clean(db);
    struct meshtls_err err = MESHTLS_ERR_INIT;
    CHECK_INT_EQ(mt_db_migrate(db, "mt_mig", MIGS, 3, NULL, &err), 0);
    struct holder h = {NULL, 60};
    CHECK_INT_EQ(mt_db_acquire(other, &h.c, &err), 0);
    CHECK_INT_EQ(mt_db_begin(h.c, &err), 0);
    pthread_t t;
    pthread_create(&t, NULL, release_later, &h);
    int calls = 0;
    CHECK_INT_EQ(mt_db_tx(db, insert_one, &calls, &err), 0); /* busy at first, then through */
    CHECK_INT_EQ(calls, 1);
    pthread_join(t, NULL);
    mt_db_release(h.c);
    CHECK_INT_EQ(scalar(db, "SELECT COUNT(*) FROM mt_t2"), 1);
    /* a lock never released: bounded attempts, then a message that says retry */
    CHECK_INT_EQ(mt_db_acquire(other, &h.c, &err), 0);
    CHECK_INT_EQ(mt_db_begin(h.c, &err), 0);
    calls = 0;
    CHECK_INT_EQ(mt_db_tx(db, insert_one, &calls, &err), MESHTLS_ESTORE);
    CHECK_INT_EQ(calls, 0);
    CHECK(strstr(err.msg, "after 8 attempts") != NULL);
    mt_db_release(h.c);
    clean(db);
    mt_db_close(other);
    mt_db_close(db);
}

/* Threads share one handle: every increment lands exactly once. */
#define THREADS 4
#define PER_THREAD 25

struct ctr_arg {
    struct mt_db *db;
    int calls, fails;
};

static int incr(struct mt_db_conn *c, void *arg, struct meshtls_err *err)
{
    ((struct ctr_arg *)arg)->calls++;
    /* read then write: under SERIALIZABLE two of these conflict (40001) and retry */
    struct mt_db_rows *r = NULL;
    int rc = mt_db_query(c, "SELECT v FROM mt_ctr WHERE id = 1", NULL, 0, &r, err);
    if (rc)
        return rc;
    int64_t v = mt_db_row_next(r, err) == 1 ? mt_db_col_int64(r, 0) : -1;
    mt_db_rows_close(r);
    if (backend == MT_DB_POSTGRES) { /* widen the window so that transactions overlap */
        struct timespec ts = {0, 2000000L};
        nanosleep(&ts, NULL);
    }
    struct mt_db_param p[] = {MT_DB_INT64(v + 1)};
    return mt_db_exec(c, "UPDATE mt_ctr SET v = $1 WHERE id = 1", p, 1, NULL, err);
}

static void *worker(void *arg)
{
    struct ctr_arg *a = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        struct meshtls_err err = MESHTLS_ERR_INIT;
        if (mt_db_tx(a->db, incr, a, &err)) {
            fprintf(stderr, "tx: %s\n", err.msg);
            a->fails++;
        }
    }
    return NULL;
}

TEST(threads_share_a_handle)
{
    struct mt_db_opts o = {.pool_size = THREADS, .tx_attempts = 50, .busy_timeout_ms = 5000};
    struct mt_db *db = open_db(&o);
    CHECK(db != NULL);
    if (!db)
        return;
    clean(db);
    struct meshtls_err err = MESHTLS_ERR_INIT;
    CHECK_INT_EQ(
        run(db, "CREATE TABLE mt_ctr (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)", NULL, 0, &err),
        0);
    CHECK_INT_EQ(run(db, "INSERT INTO mt_ctr VALUES (1, 0)", NULL, 0, &err), 0);
    pthread_t t[THREADS];
    struct ctr_arg a[THREADS];
    for (int i = 0; i < THREADS; i++) {
        a[i] = (struct ctr_arg){db, 0, 0};
        pthread_create(&t[i], NULL, worker, &a[i]);
    }
    int calls = 0, fails = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        calls += a[i].calls;
        fails += a[i].fails;
    }
    CHECK_INT_EQ(fails, 0);
    CHECK_INT_EQ(scalar(db, "SELECT v FROM mt_ctr"), THREADS * PER_THREAD);
    printf("     %s: %d transactions took %d attempts\n", mt_db_backend_name(db),
           THREADS * PER_THREAD, calls);
    /* PostgreSQL: overlapping SERIALIZABLE read-then-write transactions really conflicted
     * (40001) and were retried; SQLite's BEGIN IMMEDIATE makes them wait instead */
    if (backend == MT_DB_POSTGRES)
        CHECK(calls > THREADS * PER_THREAD);
    /* the pool is bounded: with both connections held, a third waits, then fails */
    struct mt_db_opts small = {.pool_size = 1, .acquire_timeout_ms = 100};
    struct mt_db *one = open_db(&small);
    struct mt_db_conn *c1 = NULL, *c2 = NULL;
    CHECK_INT_EQ(mt_db_acquire(one, &c1, &err), 0);
    CHECK_INT_EQ(mt_db_acquire(one, &c2, &err), MESHTLS_ESTORE);
    CHECK(strstr(err.msg, "busy") != NULL);
    mt_db_release(c1);
    CHECK_INT_EQ(mt_db_acquire(one, &c2, &err), 0);
    mt_db_release(c2);
    mt_db_close(one);
    clean(db);
    mt_db_close(db);
}

TEST(errors)
{
    struct mt_db *db = open_db(NULL);
    CHECK(db != NULL);
    if (!db)
        return;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    struct mt_db_conn *c = NULL;
    CHECK_INT_EQ(mt_db_acquire(db, &c, &err), 0);
    /* a syntax error names the database (no password) and the statement */
    CHECK_INT_EQ(mt_db_exec(c, "SELEKT 1", NULL, 0, NULL, &err), MESHTLS_ESTORE);
    CHECK(strstr(err.msg, mt_db_url_safe(db)) != NULL);
    CHECK(strstr(err.msg, "SELEKT") != NULL);
    CHECK_INT_EQ(mt_db_errkind(c), MT_DB_ERR_OTHER);
    CHECK(mt_db_errmsg(c)[0] != '\0');
    /* a missing table */
    CHECK_INT_EQ(mt_db_exec(c, "DELETE FROM mt_no_such_table", NULL, 0, NULL, &err),
                 MESHTLS_ESTORE);
    CHECK(strstr(err.msg, "mt_no_such_table") != NULL);
    /* the connection still works after errors */
    struct mt_db_rows *r = NULL;
    struct mt_db_param p[] = {MT_DB_INT64(7)};
    CHECK_INT_EQ(mt_db_query(c, "SELECT $1 + 1", p, 1, &r, &err), 0);
    CHECK_INT_EQ(r ? mt_db_row_next(r, &err) : -1, 1);
    CHECK_INT_EQ(r ? mt_db_col_int64(r, 0) : 0, 8);
    mt_db_rows_close(r);
    CHECK_INT_EQ(mt_db_errkind(c), MT_DB_OK);
    mt_db_release(c);
    CHECK(mt_db_backend(db) == backend);
    mt_db_close(db);
}

/* ---- change notification ------------------------------------------------------------------ */

static const struct {
    const char *channel;
    int rc;
} CHANNELS[] = {
    {"router_authz", 0},
    {"a", 0},
    {"abcdefghij_abcdefghij_abcdefghij_abcdefg", 0},               /* 40 */
    {"abcdefghij_abcdefghij_abcdefghij_abcdefgh", MESHTLS_EINVAL}, /* 41 */
    {"", MESHTLS_EINVAL},
    {NULL, MESHTLS_EINVAL},
    {"Router", MESHTLS_EINVAL},
    {"router1", MESHTLS_EINVAL},
    {"router authz", MESHTLS_EINVAL},
    {"x; DROP TABLE mt_notes", MESHTLS_EINVAL},
    {"\"quoted\"", MESHTLS_EINVAL},
};

/* A change committed by `c`: a row (SQLite sees data_version move) and a notification. */
static int change(struct mt_db_conn *c, const char *payload, struct meshtls_err *err)
{
    int rc = mt_db_exec(c, "INSERT INTO mt_notes (v) VALUES (1)", NULL, 0, NULL, err);
    return rc ? rc : mt_db_notify(c, "mt_test", payload, err);
}

struct waiter {
    struct mt_db_conn *c;
    int rc;
    char payload[64];
};

static void *wait_thread(void *arg)
{
    struct waiter *w = arg;
    w->rc = mt_db_wait_change(w->c, 10000, w->payload, sizeof(w->payload), NULL);
    return NULL;
}

TEST(notifications)
{
    struct mt_db *db = open_db(NULL);
    CHECK(db != NULL);
    if (!db)
        return;
    clean(db);
    struct meshtls_err err = MESHTLS_ERR_INIT;
    int pg = backend == MT_DB_POSTGRES;
    CHECK_INT_EQ(run(db, "CREATE TABLE mt_notes (v INTEGER)", NULL, 0, &err), 0);
    struct mt_db_conn *lc = NULL, *wc = NULL; /* the listener, and a writer beside it */
    CHECK_INT_EQ(mt_db_acquire(db, &lc, &err), 0);
    CHECK_INT_EQ(mt_db_acquire(db, &wc, &err), 0);
    if (!lc || !wc)
        goto out;
    char buf[64] = "x";
    /* waiting before listening is a mistake, said so */
    CHECK_INT_EQ(mt_db_wait_change(lc, 0, buf, sizeof(buf), &err), MESHTLS_EINVAL);
    CHECK(strstr(err.msg, "mt_db_listen") != NULL);
    CHECK_STR_EQ(buf, "");
    /* channel names: a table, the same on both backends and for listen and notify (whose
     * notifications are rolled back, so that none arrives later) */
    CHECK_INT_EQ(mt_db_begin(wc, &err), 0);
    for (size_t i = 0; i < sizeof(CHANNELS) / sizeof(CHANNELS[0]); i++) {
        CHECK_INT_EQ(mt_db_listen(lc, CHANNELS[i].channel, &err), CHANNELS[i].rc);
        CHECK_INT_EQ(mt_db_notify(wc, CHANNELS[i].channel, "p", &err), CHANNELS[i].rc);
        if (CHANNELS[i].rc)
            CHECK(strstr(err.msg, "notification channel") != NULL);
    }
    char big[MT_DB_NOTIFY_PAYLOAD_MAX + 2];
    memset(big, 'p', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    CHECK_INT_EQ(mt_db_notify(wc, "mt_test", big, &err), MESHTLS_EINVAL);
    CHECK(strstr(err.msg, "payload") != NULL);
    mt_db_rollback(wc);
    int64_t pid = 0;
    if (pg) {
        struct mt_db_rows *r = NULL;
        CHECK_INT_EQ(mt_db_query(lc, "SELECT pg_backend_pid()", NULL, 0, &r, &err), 0);
        if (r && mt_db_row_next(r, &err) == 1)
            pid = mt_db_col_int64(r, 0);
        mt_db_rows_close(r);
    }
    CHECK_INT_EQ(mt_db_listen(lc, "mt_test", &err), 0);
    CHECK_INT_EQ(mt_db_wait_change(lc, 0, buf, sizeof(buf), &err), 0);  /* nothing yet */
    CHECK_INT_EQ(mt_db_wait_change(lc, 50, buf, sizeof(buf), &err), 0); /* bounded */
    /* not before the commit, then once */
    CHECK_INT_EQ(mt_db_begin(wc, &err), 0);
    CHECK_INT_EQ(change(wc, "row 1", &err), 0);
    CHECK_INT_EQ(mt_db_notify(wc, "mt_test", "row 1", &err), 0); /* the same again: folded */
    CHECK_INT_EQ(mt_db_wait_change(lc, 100, buf, sizeof(buf), &err), 0);
    CHECK_INT_EQ(mt_db_commit(wc, &err), 0);
    CHECK_INT_EQ(mt_db_wait_change(lc, 5000, buf, sizeof(buf), &err), 1);
    CHECK_STR_EQ(buf, pg ? "row 1" : "");
    CHECK_INT_EQ(mt_db_wait_change(lc, 0, buf, sizeof(buf), &err), 0);
    /* outside a transaction: at once; a small buffer truncates */
    char small[5];
    CHECK_INT_EQ(change(wc, "a longer payload", &err), 0);
    CHECK_INT_EQ(mt_db_wait_change(lc, 5000, small, sizeof(small), &err), 1);
    CHECK_STR_EQ(small, pg ? "a lo" : "");
    /* a waiter in poll() wakes when the change lands (bounded by its 10 s) */
    struct waiter w = {lc, -1, ""};
    pthread_t t;
    pthread_create(&t, NULL, wait_thread, &w);
    struct timespec ts = {0, 100000000L};
    nanosleep(&ts, NULL);
    CHECK_INT_EQ(change(wc, "woken", &err), 0);
    pthread_join(t, NULL);
    CHECK_INT_EQ(w.rc, 1);
    CHECK_STR_EQ(w.payload, pg ? "woken" : "");
    if (pg) {
        /* a channel nobody listens to is not heard (SQLite hears every commit) */
        CHECK_INT_EQ(mt_db_notify(wc, "mt_other", "x", &err), 0);
        CHECK_INT_EQ(mt_db_wait_change(lc, 100, buf, sizeof(buf), &err), 0);
        /* the session killed under a waiter: an error that says so, not a hang */
        struct mt_db_param p[] = {MT_DB_INT64(pid)};
        struct mt_db_rows *r = NULL;
        CHECK_INT_EQ(mt_db_query(wc, "SELECT pg_terminate_backend($1)", p, 1, &r, &err), 0);
        mt_db_rows_close(r);
        CHECK_INT_EQ(mt_db_wait_change(lc, 5000, buf, sizeof(buf), &err), MESHTLS_ESTORE);
        CHECK(strstr(err.msg, "connection lost") != NULL);
    }
    /* released, a connection forgets its channels; the next holder must listen itself */
    mt_db_release(lc);
    lc = NULL;
    CHECK_INT_EQ(mt_db_acquire(db, &lc, &err), 0);
    if (lc)
        CHECK_INT_EQ(mt_db_wait_change(lc, 0, buf, sizeof(buf), &err), MESHTLS_EINVAL);
out:
    mt_db_release(lc);
    mt_db_release(wc);
    clean(db);
    mt_db_close(db);
}

static void run_backend(void)
{
    RUN(migrations_once);
    RUN(params_of_each_type);
    RUN(transactions);
    RUN(tx_retries_busy_sqlite);
    RUN(threads_share_a_handle);
    RUN(errors);
    RUN(notifications);
}

/* ---- modes for the integration test ------------------------------------------------------- */

static const struct mt_db_migration DEMO[] = {
    {1, "CREATE TABLE demo_a (id INTEGER PRIMARY KEY)",
     /* slow on purpose: a second process starting now must wait, not migrate too */
     "CREATE TABLE demo_a (id INTEGER PRIMARY KEY); SELECT pg_sleep(0.5)"},
    {2, "CREATE TABLE demo_b (id INTEGER PRIMARY KEY)",
     "CREATE TABLE demo_b (id INTEGER PRIMARY KEY)"},
    {3, "INSERT INTO demo_a VALUES (1)", "INSERT INTO demo_a VALUES (1)"},
};

static int mode(const char *what, char *arg)
{
    char u[4200];
    snprintf(u, sizeof(u), "%s", arg);
    mt_db_url_hide_password(arg); /* from here on `ps` shows no password */
    struct mt_db *db = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    int rc = mt_db_open(u, NULL, &db, &err);
    explicit_bzero(u, sizeof(u));
    if (rc) {
        fprintf(stderr, "test_db: %s\n", err.msg);
        return 1;
    }
    if (!strcmp(what, "migrate")) {
        int applied = 0;
        if ((rc = mt_db_migrate(db, "demo_migrations", DEMO, 3, &applied, &err)))
            fprintf(stderr, "test_db: %s\n", err.msg);
        else
            printf("applied %d\n", applied);
    } else if (!strcmp(what, "hold")) {
        printf("ready\n");
        fflush(stdout);
        char buf[64];
        while (fread(buf, 1, sizeof(buf), stdin) > 0)
            ;
    } else {
        printf("one %lld\n", (long long)scalar(db, "SELECT 1"));
    }
    mt_db_close(db);
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 3)
        return mode(argv[1], argv[2]);
    RUN(url_table);
    RUN(hide_password_in_place);
    RUN(bad_url_on_open_named_without_password);

    char tmpl[] = "/tmp/meshtls-db-XXXXXX";
    const char *dir = mkdtemp(tmpl);
    if (!dir)
        return 1;
    snprintf(url, sizeof(url), "sqlite:%s/test.db", dir);
    backend = MT_DB_SQLITE;
    printf("-- sqlite\n");
    run_backend();
    char p[4200];
    snprintf(p, sizeof(p), "%s/test.db", dir);
    unlink(p);
    rmdir(dir);

    const char *pg = getenv("MESHTLS_TEST_PG_URL");
    if (pg && *pg) {
        snprintf(url, sizeof(url), "%s", pg);
        backend = MT_DB_POSTGRES;
        printf("-- postgres\n");
        run_backend();
    } else {
        printf("-- postgres: skipped (set MESHTLS_TEST_PG_URL; test_db.py does)\n");
    }
    return check_summary();
}
