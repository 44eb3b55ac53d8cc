/*
 * test_ca_store_compat.c - a meshtls.db made by the code before src/db opens
 * unchanged with today's store: the fixture tests/unit/ca/fixtures/store_v1.sql
 * (a dump of a real store: init, register, issue, revoke --replace) is loaded
 * into a fresh file, which ca_store_open() then opens by directory and by
 * sqlite: URL, lists, reads and writes.  Its schema changes only by the
 * numbered migration 2 (services.unregistered_at, for `ca unregister`).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "check.h"
#include "store.h"

static char tmpl[] = "/tmp/meshtls-compat-XXXXXX";
static const char *dir;
static char dbpath[4200];

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = calloc(1, 1 << 20);
    size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    (void)n;
    fclose(f);
    return buf;
}

/* The fixture loaded into DIR/meshtls.db (mode 0600, as meshtls makes it). */
static int load_fixture(void)
{
    unlink(dbpath);
    char *sql = slurp("tests/unit/ca/fixtures/store_v1.sql");
    if (!sql) {
        fprintf(stderr, "cannot read tests/unit/ca/fixtures/store_v1.sql (run from the source "
                        "root)\n");
        return -1;
    }
    sqlite3 *db = NULL;
    int rc = sqlite3_open(dbpath, &db) == SQLITE_OK &&
                     sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK
                 ? 0
                 : -1;
    if (rc)
        fprintf(stderr, "loading the fixture: %s\n", sqlite3_errmsg(db));
    sqlite3_close(db);
    free(sql);
    chmod(dbpath, 0600);
    return rc;
}

/* The schema as SQLite records it: what must not change. */
static char *schema(void)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    char *out = calloc(1, 16384);
    size_t len = 0;
    if (!out || sqlite3_open(dbpath, &db) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY name",
                           -1, &st, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return out;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(st, 0);
        int n = snprintf(out + len, 16384 - len, "%s;\n", t);
        if (n > 0 && (size_t)n < 16384 - len)
            len += (size_t)n;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return out;
}

static int64_t count(const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_open(dbpath, &db) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void list_and_issue(const char *name)
{
    struct meshtls_err err = MESHTLS_ERR_INIT;
    struct ca_store *s = NULL;
    CHECK(load_fixture() == 0);
    char *before = schema();
    CHECK_INT_EQ(ca_store_open(name, 0, &s, &err), 0);
    if (!s) {
        fprintf(stderr, "open %s: %s\n", name, err.msg);
        free(before);
        return;
    }
    char *td = NULL;
    CHECK_INT_EQ(ca_store_meta_get(s, "trust_domain", &td, &err), 0);
    CHECK_STR_EQ(td, "fixture.test");
    free(td);

    struct ca_service svc = {0};
    CHECK_INT_EQ(ca_store_service_get(s, "api", &svc, &err), 0);
    CHECK_STR_EQ(svc.spiffe_id, "spiffe://fixture.test/svc/api");
    CHECK_INT_EQ(svc.n_dns, 2);
    if (svc.n_dns == 2) {
        CHECK_STR_EQ(svc.dns[0], "api.internal");
        CHECK_STR_EQ(svc.dns[1], "localhost");
    }
    CHECK_INT_EQ(svc.n_ips, 1);
    ca_service_clear(&svc);

    /* list: the revoked first certificate, then its active replacement */
    struct ca_cert *v = NULL;
    size_t n = 0;
    CHECK_INT_EQ(ca_store_cert_list(s, NULL, NULL, &v, &n, &err), 0);
    CHECK_INT_EQ(n, 2);
    if (n == 2) {
        CHECK_STR_EQ(v[0].serial, "41a6d5a327c55199e9a78a7614c10eea");
        CHECK_STR_EQ(v[0].status, "revoked");
        CHECK_STR_EQ(v[0].reason, "keyCompromise");
        CHECK(v[0].revoked_at > 0);
        CHECK_STR_EQ(v[1].serial, "5712f8f015b90858b3bfaf18c520098d");
        CHECK_STR_EQ(v[1].status, "active");
        CHECK(v[1].reason == NULL);
        CHECK_INT_EQ(v[1].key_held, 1);
        CHECK(strstr(v[1].cert_pem, "BEGIN CERTIFICATE") != NULL);
    }
    ca_cert_list_free(v, n);

    /* issue: supersede the active one and record a new one, as `ca issue` does */
    struct ca_cert c = {.serial = "0abc",
                        .service = "api",
                        .not_before = 1000,
                        .not_after = 2000,
                        .status = "active",
                        .out_dir = "/out",
                        .cert_pem = "PEM",
                        .pubkey_pem = "PUB",
                        .key_held = 1};
    CHECK_INT_EQ(ca_store_begin(s, &err), 0);
    CHECK_INT_EQ(ca_store_cert_set_status(s, "5712f8f015b90858b3bfaf18c520098d", "superseded", NULL,
                                          "0abc", &err),
                 0);
    CHECK_INT_EQ(ca_store_cert_insert(s, &c, &err), 0);
    CHECK_INT_EQ(ca_store_audit(s, "issue", "api", "0abc", "/out", &err), 0);
    CHECK_INT_EQ(ca_store_commit(s, &err), 0);
    /* a duplicate serial is still EEXIST */
    CHECK_INT_EQ(ca_store_cert_insert(s, &c, &err), MESHTLS_EEXIST);
    CHECK_INT_EQ(ca_store_cert_list(s, "api", "active", &v, &n, &err), 0);
    CHECK_INT_EQ(n, 1);
    if (n == 1)
        CHECK_STR_EQ(v[0].serial, "0abc");
    ca_cert_list_free(v, n);
    ca_store_close(s);

    /* migrated once: migration 2 adds services.unregistered_at (ca unregister, issue 9);
     * nothing else changed, and no table was added */
    char *after = schema();
    CHECK(strstr(before, "unregistered_at") == NULL);
    CHECK(strstr(after, "unregistered_at INTEGER") != NULL);
    CHECK_INT_EQ(count("SELECT COUNT(*) FROM schema_migrations"), 2);
    CHECK_INT_EQ(count("SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table'"),
                 count("SELECT 6")); /* meta services certificates audit schema_migrations
                                        sqlite_sequence */
    CHECK_INT_EQ(count("SELECT COUNT(*) FROM services WHERE unregistered_at IS NULL"), 1);
    CHECK_INT_EQ(count("SELECT MAX(id) FROM audit"), 6);
    struct stat sb;
    CHECK(stat(dbpath, &sb) == 0 && (sb.st_mode & 0777) == 0600);
    free(before);
    free(after);
}

TEST(old_store_opens_by_directory)
{
    list_and_issue(dir);
}

TEST(old_store_opens_by_sqlite_url)
{
    char url[4300];
    snprintf(url, sizeof(url), "sqlite:%s", dbpath);
    list_and_issue(url);
}

/* A PostgreSQL store that cannot be reached: an error at once (port 1 refuses), naming
 * the URL without its password (tests/integration/test_ca_pg.py runs a real one). */
TEST(postgres_url_unreachable_named_without_password)
{
    struct ca_store *s = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    CHECK_INT_EQ(ca_store_open("postgres://ca:hunter2secret@127.0.0.1:1/ca", 0, &s, &err),
                 MESHTLS_ESTORE);
    CHECK(s == NULL);
    CHECK(strstr(err.msg, "cannot connect") != NULL);
    CHECK(strstr(err.msg, "hunter2secret") == NULL);
    CHECK(strstr(err.msg, "postgres://ca:***@127.0.0.1:1/ca") != NULL);
    CHECK_INT_EQ(ca_store_open("mysql://a:b@c/d", 0, &s, &err), MESHTLS_EINVAL);
    CHECK(strstr(err.msg, "unsupported database URL") != NULL);
}

TEST(missing_sqlite_url_store)
{
    struct ca_store *s = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    char url[4300];
    snprintf(url, sizeof(url), "sqlite:%s/none.db", dir);
    CHECK_INT_EQ(ca_store_open(url, 0, &s, &err), MESHTLS_ENOENT);
    CHECK(strstr(err.msg, "none.db") != NULL);
}

int main(void)
{
    dir = mkdtemp(tmpl);
    if (!dir)
        return 1;
    snprintf(dbpath, sizeof(dbpath), "%s/meshtls.db", dir);
    RUN(old_store_opens_by_directory);
    RUN(old_store_opens_by_sqlite_url);
    RUN(postgres_url_unreachable_named_without_password);
    RUN(missing_sqlite_url_store);
    unlink(dbpath);
    rmdir(dir);
    return check_summary();
}
