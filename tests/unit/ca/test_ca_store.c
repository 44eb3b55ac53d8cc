/*
 * test_ca_store.c - the CA store (src/ca/store*.c) on SQLite: migrations,
 * services, certificates (unique serials, status changes, listing), audit,
 * and the errors a bad or busy store gives.  With MESHTLS_TEST_PG_URL set
 * (tests/integration/test_ca_pg.py does, on a real server whose database it
 * may empty), the backend-independent tests run on PostgreSQL instead, plus
 * its own: a database without a CA, a second CA refused, and the CA-wide
 * write lock (a second writer waits for the first, then sees its rows; gives
 * up after 5 s naming the database).
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "check.h"
#include "db.h"
#include "store.h"

static char tmpl[] = "/tmp/meshtls-store-XXXXXX";
static const char *dir;
static const char *pg_url; /* MESHTLS_TEST_PG_URL: the tests run on PostgreSQL */

/* What the tests open: the directory's SQLite store, or the PostgreSQL database. */
static const char *store(void)
{
    return pg_url ? pg_url : dir;
}

/* No store: the SQLite file removed, or every table of the database dropped. */
static void rm_db(void)
{
    if (!pg_url) {
        char p[4200];
        snprintf(p, sizeof(p), "%s/meshtls.db", dir);
        unlink(p);
        return;
    }
    struct mt_db *db = NULL;
    struct mt_db_conn *c = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    if (mt_db_open(pg_url, NULL, &db, &err) || mt_db_acquire(db, &c, &err) ||
        mt_db_exec(c, "DROP SCHEMA IF EXISTS public CASCADE", NULL, 0, NULL, &err) ||
        mt_db_exec(c, "CREATE SCHEMA public", NULL, 0, NULL, &err))
        fprintf(stderr, "emptying the database: %s\n", err.msg);
    mt_db_release(c);
    mt_db_close(db);
}

/* A fresh store with one service "api". */
static struct ca_store *fresh(void)
{
    struct ca_store *s = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    rm_db();
    if (ca_store_open(store(), 1, &s, &err) != 0) {
        fprintf(stderr, "open: %s\n", err.msg);
        return NULL;
    }
    char *dns[] = {"api.internal", "localhost"}, *ips[] = {"127.0.0.1"};
    struct ca_service svc = {.name = "api",
                             .spiffe_id = "spiffe://example.org/svc/api",
                             .dns = dns,
                             .n_dns = 2,
                             .ips = ips,
                             .n_ips = 1};
    int updated = -1;
    CHECK_INT_EQ(ca_store_service_put(s, &svc, &updated, &err), 0);
    CHECK_INT_EQ(updated, 0);
    return s;
}

static struct ca_cert row(const char *serial, const char *status, int64_t not_after)
{
    struct ca_cert c = {.serial = (char *)serial,
                        .service = "api",
                        .not_before = 1000,
                        .not_after = not_after,
                        .status = (char *)status,
                        .out_dir = "/out",
                        .cert_pem = "PEM",
                        .pubkey_pem = "PUB",
                        .key_held = 1};
    return c;
}

TEST(open_missing_says_init)
{
    struct ca_store *s = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    rm_db();
    CHECK_INT_EQ(ca_store_open(dir, 0, &s, &err), MESHTLS_ENOENT);
    CHECK(s == NULL);
    CHECK(strstr(err.msg, "meshtls ca init") != NULL);
}

TEST(migrations_recorded_and_idempotent)
{
    struct ca_store *s = fresh();
    CHECK(s != NULL);
    ca_store_close(s);
    /* reopening applies nothing new */
    struct meshtls_err err = MESHTLS_ERR_INIT;
    CHECK_INT_EQ(ca_store_open(dir, 0, &s, &err), 0);
    ca_store_close(s);
    char p[4200];
    snprintf(p, sizeof(p), "%s/meshtls.db", dir);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    CHECK(sqlite3_open(p, &db) == SQLITE_OK);
    CHECK(sqlite3_prepare_v2(db, "SELECT COUNT(*), MAX(version) FROM schema_migrations", -1, &st,
                             NULL) == SQLITE_OK);
    CHECK(sqlite3_step(st) == SQLITE_ROW);
    CHECK_INT_EQ(sqlite3_column_int(st, 0), sqlite3_column_int(st, 1));
    CHECK(sqlite3_column_int(st, 1) >= 1);
    sqlite3_finalize(st);
    struct stat sb;
    CHECK(stat(p, &sb) == 0 && (sb.st_mode & 0777) == 0600);
    /* a store from a newer meshtls is refused, naming the version */
    CHECK(sqlite3_exec(db, "INSERT INTO schema_migrations VALUES (9999, 0)", NULL, NULL, NULL) ==
          SQLITE_OK);
    sqlite3_close(db);
    CHECK_INT_EQ(ca_store_open(dir, 0, &s, &err), MESHTLS_ESTORE);
    CHECK(strstr(err.msg, "9999") != NULL && strstr(err.msg, "upgrade meshtls") != NULL);
}

TEST(garbage_and_directory_refused)
{
    char p[4200];
    struct ca_store *s = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    snprintf(p, sizeof(p), "%s/meshtls.db", dir);
    rm_db();
    FILE *f = fopen(p, "w");
    CHECK(f != NULL);
    for (int i = 0; f && i < 200; i++)
        fputs("not a database ", f);
    if (f)
        fclose(f);
    CHECK_INT_EQ(ca_store_open(dir, 0, &s, &err), MESHTLS_ESTORE);
    CHECK(strstr(err.msg, p) != NULL);
    rm_db();
    CHECK(mkdir(p, 0700) == 0);
    CHECK_INT_EQ(ca_store_open(dir, 0, &s, &err), MESHTLS_ESTORE);
    CHECK(strstr(err.msg, "not a regular file") != NULL);
    rmdir(p);
    /* create refuses to take over an existing file */
    f = fopen(p, "w");
    if (f)
        fclose(f);
    CHECK_INT_EQ(ca_store_open(dir, 1, &s, &err), MESHTLS_EEXIST);
    rm_db();
}

TEST(meta_roundtrip)
{
    struct ca_store *s = fresh();
    struct meshtls_err err = MESHTLS_ERR_INIT;
    char *v = NULL;
    CHECK_INT_EQ(ca_store_meta_get(s, "trust_domain", &v, &err), MESHTLS_ESTORE);
    CHECK(v == NULL);
    CHECK_INT_EQ(ca_store_meta_set(s, "trust_domain", "example.org", &err), 0);
    CHECK_INT_EQ(ca_store_meta_set(s, "trust_domain", "example.com", &err), 0);
    CHECK_INT_EQ(ca_store_meta_get(s, "trust_domain", &v, &err), 0);
    CHECK_STR_EQ(v, "example.com");
    free(v);
    ca_store_close(s);
}

TEST(services)
{
    struct ca_store *s = fresh();
    struct meshtls_err err = MESHTLS_ERR_INIT;
    struct ca_service got = {0};
    CHECK_INT_EQ(ca_store_service_get(s, "api", &got, &err), 0);
    CHECK_STR_EQ(got.spiffe_id, "spiffe://example.org/svc/api");
    CHECK_INT_EQ(got.n_dns, 2);
    CHECK_INT_EQ(got.n_ips, 1);
    if (got.n_dns == 2)
        CHECK_STR_EQ(got.dns[1], "localhost");
    ca_service_clear(&got);
    /* update: no SANs any more */
    struct ca_service svc = {.name = "api", .spiffe_id = "spiffe://example.org/svc/api"};
    int updated = 0;
    CHECK_INT_EQ(ca_store_service_put(s, &svc, &updated, &err), 0);
    CHECK_INT_EQ(updated, 1);
    CHECK_INT_EQ(ca_store_service_get(s, "api", &got, &err), 0);
    CHECK_INT_EQ(got.n_dns, 0);
    CHECK_INT_EQ(got.n_ips, 0);
    ca_service_clear(&got);
    /* one SPIFFE ID, one service */
    struct ca_service other = {.name = "web", .spiffe_id = "spiffe://example.org/svc/api"};
    CHECK_INT_EQ(ca_store_service_put(s, &other, &updated, &err), MESHTLS_EEXIST);
    CHECK(strstr(err.msg, "spiffe://example.org/svc/api") != NULL);
    /* unknown */
    CHECK_INT_EQ(ca_store_service_get(s, "ghost", &got, &err), MESHTLS_ENOENT);
    CHECK(strstr(err.msg, "'ghost'") != NULL && strstr(err.msg, "meshtls ca register") != NULL);
    ca_store_close(s);
}

TEST(certificates_and_unique_serials)
{
    struct ca_store *s = fresh();
    struct meshtls_err err = MESHTLS_ERR_INIT;
    struct ca_cert a = row("0abc", "active", 5000), b = row("0def", "active", 6000);
    CHECK_INT_EQ(ca_store_cert_insert(s, &a, &err), 0);
    CHECK_INT_EQ(ca_store_cert_insert(s, &b, &err), 0);
    CHECK_INT_EQ(ca_store_cert_insert(s, &a, &err), MESHTLS_EEXIST);
    CHECK(strstr(err.msg, "0abc") != NULL);
    /* a certificate needs a registered service */
    struct ca_cert orphan = row("0f00", "active", 1);
    orphan.service = "ghost";
    CHECK(ca_store_cert_insert(s, &orphan, &err) != 0);

    CHECK_INT_EQ(ca_store_cert_set_status(s, "0abc", "superseded", NULL, "0def", &err), 0);
    CHECK_INT_EQ(ca_store_cert_set_status(s, "0def", "revoked", "keyCompromise", NULL, &err), 0);
    struct ca_cert got = {0};
    CHECK_INT_EQ(ca_store_cert_get(s, "0def", &got, &err), 0);
    CHECK_STR_EQ(got.status, "revoked");
    CHECK_STR_EQ(got.reason, "keyCompromise");
    CHECK(got.revoked_at > 0);
    CHECK_STR_EQ(got.out_dir, "/out");
    CHECK_INT_EQ(got.key_held, 1);
    ca_cert_clear(&got);
    CHECK_INT_EQ(ca_store_cert_get(s, "0abc", &got, &err), 0);
    CHECK_STR_EQ(got.status, "superseded");
    CHECK(got.reason == NULL);
    CHECK_INT_EQ(got.revoked_at, 0);
    ca_cert_clear(&got);
    CHECK_INT_EQ(ca_store_cert_get(s, "0999", &got, &err), MESHTLS_ENOENT);
    /* an unknown status is refused by the schema */
    CHECK(ca_store_cert_set_status(s, "0abc", "bogus", NULL, NULL, &err) != 0);

    struct ca_cert *v = NULL;
    size_t n = 99;
    CHECK_INT_EQ(ca_store_cert_list(s, NULL, NULL, &v, &n, &err), 0);
    CHECK_INT_EQ(n, 2);
    if (n == 2) { /* oldest first */
        CHECK_STR_EQ(v[0].serial, "0abc");
        CHECK_STR_EQ(v[1].serial, "0def");
    }
    ca_cert_list_free(v, n);
    CHECK_INT_EQ(ca_store_cert_list(s, "api", "revoked", &v, &n, &err), 0);
    CHECK_INT_EQ(n, 1);
    ca_cert_list_free(v, n);
    CHECK_INT_EQ(ca_store_cert_list(s, "web", NULL, &v, &n, &err), 0);
    CHECK_INT_EQ(n, 0);
    ca_cert_list_free(v, n);
    ca_store_close(s);
}

TEST(rollback_undoes_everything)
{
    struct ca_store *s = fresh();
    struct meshtls_err err = MESHTLS_ERR_INIT;
    struct ca_cert a = row("01", "active", 5000);
    CHECK_INT_EQ(ca_store_begin(s, &err), 0);
    CHECK_INT_EQ(ca_store_cert_insert(s, &a, &err), 0);
    CHECK_INT_EQ(ca_store_audit(s, "issue", "api", "01", NULL, &err), 0);
    ca_store_rollback(s);
    struct ca_cert got = {0};
    CHECK_INT_EQ(ca_store_cert_get(s, "01", &got, &err), MESHTLS_ENOENT);
    CHECK_INT_EQ(ca_store_begin(s, &err), 0);
    CHECK_INT_EQ(ca_store_cert_insert(s, &a, &err), 0);
    CHECK_INT_EQ(ca_store_commit(s, &err), 0);
    CHECK_INT_EQ(ca_store_cert_get(s, "01", &got, &err), 0);
    ca_cert_clear(&got);
    ca_store_close(s);
}

TEST(locked_store_names_file)
{
    struct ca_store *s = fresh();
    ca_store_close(s);
    char p[4200];
    snprintf(p, sizeof(p), "%s/meshtls.db", dir);
    sqlite3 *holder = NULL;
    CHECK(sqlite3_open(p, &holder) == SQLITE_OK);
    CHECK(sqlite3_exec(holder, "BEGIN EXCLUSIVE", NULL, NULL, NULL) == SQLITE_OK);
    struct meshtls_err err = MESHTLS_ERR_INIT;
    /* Opening may succeed or already see the lock; a write must fail after ~2 s. */
    int rc = ca_store_open(dir, 0, &s, &err);
    if (rc == 0) {
        rc = ca_store_begin(s, &err);
        ca_store_close(s);
    }
    CHECK_INT_EQ(rc, MESHTLS_ESTORE);
    CHECK(strstr(err.msg, "locked by another process") != NULL);
    CHECK(strstr(err.msg, p) != NULL);
    sqlite3_exec(holder, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(holder);
}

/* ---- PostgreSQL only ---- */

TEST(pg_no_ca_and_second_ca)
{
    struct ca_store *s = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    rm_db();
    CHECK_INT_EQ(ca_store_open(pg_url, 0, &s, &err), MESHTLS_ENOENT);
    CHECK(strstr(err.msg, "no CA in database") != NULL && strstr(err.msg, "ca init") != NULL);
    s = fresh();
    CHECK_INT_EQ(ca_store_meta_set(s, "trust_domain", "example.org", &err), 0);
    ca_store_close(s);
    s = NULL;
    CHECK_INT_EQ(ca_store_open(pg_url, 1, &s, &err), MESHTLS_EEXIST);
    CHECK(strstr(err.msg, "already holds a CA (trust domain example.org)") != NULL);
    CHECK(strstr(err.msg, "intermediate.key") != NULL);
    CHECK(s == NULL);
}

struct second_writer {
    volatile int first_committed; /* set by the first writer just before its COMMIT */
    int saw_first_committed, begin_rc, found;
};

static void *second_writer(void *arg)
{
    struct second_writer *w = arg;
    struct ca_store *s = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    if (ca_store_open(pg_url, 0, &s, &err) != 0) {
        w->begin_rc = -1000;
        return NULL;
    }
    w->begin_rc = ca_store_begin(s, &err); /* waits for the first writer's COMMIT */
    w->saw_first_committed = w->first_committed;
    struct ca_cert got = {0};
    w->found = ca_store_cert_get(s, "0a1", &got, &err) == 0; /* its row, at READ COMMITTED */
    ca_cert_clear(&got);
    ca_store_rollback(s);
    ca_store_close(s);
    return NULL;
}

TEST(pg_write_lock_orders_writers_across_connections)
{
    struct ca_store *s = fresh();
    struct meshtls_err err = MESHTLS_ERR_INIT;
    struct ca_cert a = row("0a1", "active", 5000);
    struct second_writer w = {0};
    pthread_t t;
    CHECK_INT_EQ(ca_store_begin(s, &err), 0);
    CHECK_INT_EQ(ca_store_cert_insert(s, &a, &err), 0);
    CHECK(pthread_create(&t, NULL, second_writer, &w) == 0);
    usleep(300 * 1000); /* the second writer is waiting for the lock by now (if not, it
                         * still cannot pass it before the commit below) */
    w.first_committed = 1;
    CHECK_INT_EQ(ca_store_commit(s, &err), 0);
    pthread_join(t, NULL);
    CHECK_INT_EQ(w.begin_rc, 0);
    CHECK_INT_EQ(w.saw_first_committed, 1);
    CHECK_INT_EQ(w.found, 1);
    /* a writer that keeps the lock: the other gives up after 5 s, saying so */
    struct ca_store *s2 = NULL;
    CHECK_INT_EQ(ca_store_begin(s, &err), 0);
    CHECK_INT_EQ(ca_store_open(pg_url, 0, &s2, &err), 0);
    CHECK_INT_EQ(ca_store_begin(s2, &err), MESHTLS_ESTORE);
    CHECK(strstr(err.msg, "locked by another process") != NULL);
    CHECK(strstr(err.msg, "postgres") != NULL);
    ca_store_close(s2);
    ca_store_rollback(s);
    ca_store_close(s);
}

int main(void)
{
    dir = mkdtemp(tmpl);
    if (!dir)
        return 1;
    pg_url = getenv("MESHTLS_TEST_PG_URL");
    if (pg_url && *pg_url) {
        RUN(meta_roundtrip);
        RUN(services);
        RUN(certificates_and_unique_serials);
        RUN(rollback_undoes_everything);
        RUN(pg_no_ca_and_second_ca);
        RUN(pg_write_lock_orders_writers_across_connections);
        rm_db();
        rmdir(dir);
        return check_summary();
    }
    pg_url = NULL;
    RUN(open_missing_says_init);
    RUN(migrations_recorded_and_idempotent);
    RUN(garbage_and_directory_refused);
    RUN(meta_roundtrip);
    RUN(services);
    RUN(certificates_and_unique_serials);
    RUN(rollback_undoes_everything);
    RUN(locked_store_names_file);
    rm_db();
    rmdir(dir);
    return check_summary();
}
