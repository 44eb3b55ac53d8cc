/*
 * test_ca_store_locate.c - where a CA directory's store is (src/ca/store.c):
 * DIR/store.url naming a database, or DIR/meshtls.db; the refusals (both
 * present, empty, a password in a file others can read) as a table; and the
 * per-host metadata keys of a shared store.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "store.h"

static char tmpl[] = "/tmp/meshtls-locate-XXXXXX";
static const char *dir;

static void put(const char *name, const char *text, mode_t mode)
{
    char p[4200];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    unlink(p);
    if (!text)
        return;
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        fprintf(stderr, "cannot write %s\n", p);
    if (fd >= 0) {
        fchmod(fd, mode);
        close(fd);
    }
}

TEST(locate_table)
{
    static const struct {
        const char *url_file; /* DIR/store.url content, NULL: absent */
        mode_t mode;
        int with_db;      /* DIR/meshtls.db exists */
        int rc;           /* expected */
        const char *want; /* the URL (rc 0; "DB" = sqlite:DIR/meshtls.db) or words of the error */
        const char *never;
    } t[] = {
        {NULL, 0600, 0, 0, "DB", NULL},
        {NULL, 0600, 1, 0, "DB", NULL},
        {"postgres://ca@db.internal/meshtls\n", 0644, 0, 0, "postgres://ca@db.internal/meshtls",
         NULL},
        {"# the shared store\n\n  postgres://ca@db/m  \r\n", 0644, 0, 0, "postgres://ca@db/m",
         NULL},
        {"postgres://ca:s3cr3t-pw@db/m\n", 0600, 0, 0, "postgres://ca:s3cr3t-pw@db/m", NULL},
        {"postgres://ca:s3cr3t-pw@db/m\n", 0640, 0, MESHTLS_EDENIED, "chmod 600", "s3cr3t-pw"},
        {"postgres://ca@db/m?password=s3cr3t-pw\n", 0604, 0, MESHTLS_EDENIED, "~/.pgpass",
         "s3cr3t-pw"},
        {"postgres://ca@db/m\n", 0644, 1, MESHTLS_EINVAL, "both store.url and meshtls.db", NULL},
        {"\n# nothing\n", 0644, 0, MESHTLS_EINVAL, "names no store", NULL},
        {"mysql://ca:s3cr3t-pw@db/m\n", 0600, 0, MESHTLS_EINVAL, "store.url", "s3cr3t-pw"},
    };
    char dbfile[4200];
    snprintf(dbfile, sizeof(dbfile), "sqlite:%s/meshtls.db", dir);
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        put(CA_STORE_URL_FILE, t[i].url_file, t[i].mode);
        put("meshtls.db", t[i].with_db ? "" : NULL, 0600);
        char url[4200] = "";
        struct meshtls_err err = MESHTLS_ERR_INIT;
        int rc = ca_store_locate(dir, url, sizeof(url), &err);
        CHECK_INT_EQ(rc, t[i].rc);
        if (rc == 0)
            CHECK_STR_EQ(url, !strcmp(t[i].want, "DB") ? dbfile : t[i].want);
        else
            CHECK(strstr(err.msg, t[i].want) != NULL);
        if (t[i].never)
            CHECK(strstr(err.msg, t[i].never) == NULL);
    }
    put(CA_STORE_URL_FILE, NULL, 0);
    put("meshtls.db", NULL, 0);
    /* a URL is itself, whatever a directory of that name holds */
    char url[4200];
    CHECK_INT_EQ(ca_store_locate("postgres://x@y/z", url, sizeof(url), NULL), 0);
    CHECK_STR_EQ(url, "postgres://x@y/z");
    CHECK_INT_EQ(ca_store_locate("sqlite:/a/b.db", url, sizeof(url), NULL), 0);
    CHECK_STR_EQ(url, "sqlite:/a/b.db");
}

/* --store URL beside --dir DIR: the process's choice wins over the directory's files */
TEST(use_overrides_the_directory)
{
    char url[4200], other[4200], spelled[4200];
    struct meshtls_err err = MESHTLS_ERR_INIT;
    put("meshtls.db", "", 0600);
    CHECK_INT_EQ(ca_store_use(dir, "postgres://ca@db.internal/meshtls", &err), 0);
    snprintf(spelled, sizeof(spelled), "%s/./", dir);
    CHECK_INT_EQ(ca_store_locate(spelled, url, sizeof(url), &err), 0);
    CHECK_STR_EQ(url, "postgres://ca@db.internal/meshtls");
    /* another directory is not affected */
    snprintf(other, sizeof(other), "%s/other", dir);
    mkdir(other, 0700);
    CHECK_INT_EQ(ca_store_locate(other, url, sizeof(url), &err), 0);
    CHECK(strncmp(url, "sqlite:", 7) == 0 && strstr(url, "/other/meshtls.db") != NULL);
    rmdir(other);
    /* refused: a bad URL, a missing directory; NULL forgets */
    CHECK_INT_EQ(ca_store_use(dir, "mysql://a@b/c", &err), MESHTLS_EINVAL);
    CHECK_INT_EQ(ca_store_use("/nonexistent/meshtls", "postgres://a@b/c", &err), MESHTLS_EINVAL);
    CHECK_INT_EQ(ca_store_use(dir, NULL, &err), 0);
    CHECK_INT_EQ(ca_store_locate(dir, url, sizeof(url), &err), 0);
    CHECK(strncmp(url, "sqlite:", 7) == 0);
    put("meshtls.db", NULL, 0);
}

TEST(meta_keys_per_host_only_when_shared)
{
    char host[256] = "", want[400], out[CA_META_KEY_MAX];
    gethostname(host, sizeof(host) - 1);
    snprintf(want, sizeof(want), "crl_out@%s", host[0] ? host : "localhost");
    static const struct {
        int shared;
        const char *key, *want; /* NULL: want = crl_out@HOST */
    } t[] = {
        {0, "crl_out", "crl_out"},       {1, "crl_out", NULL},
        {1, "crl_number", "crl_number"}, {1, "trust_domain", "trust_domain"},
        {0, "crl_number", "crl_number"}, {1, "crl_out_x", "crl_out_x"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        ca_store_meta_key(t[i].shared, t[i].key, out, sizeof(out));
        CHECK_STR_EQ(out, t[i].want ? t[i].want : want);
    }
}

int main(void)
{
    dir = mkdtemp(tmpl);
    if (!dir)
        return 1;
    RUN(locate_table);
    RUN(use_overrides_the_directory);
    RUN(meta_keys_per_host_only_when_shared);
    rmdir(dir);
    return check_summary();
}
