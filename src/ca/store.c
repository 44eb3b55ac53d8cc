/*
 * store.c - backend-independent part of the CA store (see store.h): finds
 * a directory's store (DIR/store.url or DIR/meshtls.db), picks the backend
 * from the store URL, dispatches through its ops table, frees the row
 * structs.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "db.h"
#include "store.h"

/* Read DIR/store.url into url: its first line that is neither empty nor a # comment. */
static int read_url_file(const char *path, char *url, size_t cap, struct meshtls_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return meshtls_err_set(err, MESHTLS_EIO, "cannot read %s: %s", path,
                               fd >= 0 ? "not a regular file" : strerror(e));
    }
    char buf[4200];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n < 0 || (size_t)n >= sizeof(buf) - 1) {
        OPENSSL_cleanse(buf, sizeof(buf));
        return meshtls_err_set(err, MESHTLS_EINVAL, "%s: %s", path,
                               n < 0 ? strerror(errno) : "too long (one URL, under 4 KiB)");
    }
    buf[n] = '\0';
    url[0] = '\0';
    for (char *line = buf, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        while (*line == ' ' || *line == '\t')
            line++;
        size_t l = strlen(line);
        while (l && (line[l - 1] == ' ' || line[l - 1] == '\t' || line[l - 1] == '\r'))
            line[--l] = '\0';
        if (l && line[0] != '#') {
            snprintf(url, cap, "%s", line);
            break;
        }
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    if (!url[0])
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "%s names no store: write one URL in it (postgres://USER@HOST/DB; "
                               "the password in ~/.pgpass or PGPASSWORD)",
                               path);
    struct mt_db_url u;
    int rc = mt_db_url_parse(url, &u, err);
    if (rc) {
        char m[MESHTLS_ERR_MSG_MAX];
        snprintf(m, sizeof(m), "%s", err ? err->msg : "");
        OPENSSL_cleanse(url, cap);
        return meshtls_err_set(err, rc, "%s: %s", path, m);
    }
    /* a password in a file others can read is a password given away: fail closed */
    if (u.has_password && (st.st_mode & 077)) {
        OPENSSL_cleanse(url, cap);
        return meshtls_err_set(err, MESHTLS_EDENIED,
                               "%s holds a database password and others may read it (mode %03o): "
                               "chmod 600 it, or better keep the password in ~/.pgpass or "
                               "PGPASSWORD and write the URL without it",
                               path, (unsigned)(st.st_mode & 0777));
    }
    return 0;
}

/* ca_store_use(): one directory (its realpath) and the URL it keeps its data in */
static char use_dir[4096], use_url[4200];

int ca_store_use(const char *dir, const char *url, struct meshtls_err *err)
{
    OPENSSL_cleanse(use_url, sizeof(use_url));
    use_dir[0] = use_url[0] = '\0';
    if (!url)
        return 0;
    struct mt_db_url u;
    int rc = mt_db_url_parse(url, &u, err);
    if (rc)
        return rc;
    if (!realpath(dir, use_dir))
        return meshtls_err_set(err, MESHTLS_EINVAL, "CA directory %s: %s", dir, strerror(errno));
    if ((size_t)snprintf(use_url, sizeof(use_url), "%s", url) >= sizeof(use_url)) {
        OPENSSL_cleanse(use_url, sizeof(use_url));
        use_dir[0] = use_url[0] = '\0';
        return meshtls_err_set(err, MESHTLS_EINVAL, "store URL too long");
    }
    return 0;
}

int ca_store_locate(const char *store, char *url, size_t cap, struct meshtls_err *err)
{
    /* anything with a scheme is a database URL */
    if (!strncmp(store, "sqlite:", 7) || strstr(store, "://")) {
        if ((size_t)snprintf(url, cap, "%s", store) >= cap)
            return meshtls_err_set(err, MESHTLS_EINVAL, "store URL too long");
        return 0;
    }
    char f[4200], db[4200];
    if (use_dir[0] && realpath(store, f) && !strcmp(f, use_dir)) {
        if ((size_t)snprintf(url, cap, "%s", use_url) >= cap)
            return meshtls_err_set(err, MESHTLS_EINVAL, "store URL too long");
        return 0;
    }
    if ((size_t)snprintf(f, sizeof(f), "%s/" CA_STORE_URL_FILE, store) >= sizeof(f) ||
        (size_t)snprintf(db, sizeof(db), "%s/meshtls.db", store) >= sizeof(db))
        return meshtls_err_set(err, MESHTLS_EINVAL, "CA directory path too long: %.64s...", store);
    if (access(f, F_OK) != 0) {
        if ((size_t)snprintf(url, cap, "sqlite:%s", db) >= cap)
            return meshtls_err_set(err, MESHTLS_EINVAL, "CA directory path too long");
        return 0;
    }
    if (access(db, F_OK) == 0)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "%s has both %s and meshtls.db: which store is the CA's? Remove "
                               "the one that is not (a CA on PostgreSQL keeps only its key files "
                               "in the directory)",
                               store, CA_STORE_URL_FILE);
    return read_url_file(f, url, cap, err);
}

int ca_store_open(const char *store, int create, struct ca_store **out, struct meshtls_err *err)
{
    /* A plain directory is its store.url or DIR/meshtls.db (the historic layout, opened
     * with the hints that name the directory). */
    int is_dir = strncmp(store, "sqlite:", 7) && !strstr(store, "://");
    char url[4200];
    int rc = ca_store_locate(store, url, sizeof(url), err);
    if (rc)
        return rc;
    struct mt_db_url u;
    char dbfile[4200];
    snprintf(dbfile, sizeof(dbfile), "sqlite:%s/meshtls.db", store);
    if (is_dir && !strcmp(url, dbfile)) /* today's DIR/meshtls.db, with its hints */
        return ca_store_sqlite_open(store, create, out, err);
    if ((rc = mt_db_url_parse(url, &u, err)) == 0)
        rc = u.backend == MT_DB_SQLITE
                 ? ca_store_sqlite_open_file(u.path, create, out, err)
                 : ca_store_pg_open(url, is_dir ? store : NULL, create, out, err);
    OPENSSL_cleanse(url, sizeof(url));
    return rc;
}

void ca_store_meta_key(int shared, const char *key, char *out, size_t cap)
{
    /* keys whose value is a path on one host */
    static const char *const local[] = {"crl_out"};
    char host[256] = "";
    for (size_t i = 0; shared && i < sizeof(local) / sizeof(local[0]); i++)
        if (!strcmp(key, local[i])) {
            if (gethostname(host, sizeof(host) - 1) != 0 || !host[0])
                snprintf(host, sizeof(host), "localhost");
            snprintf(out, cap, "%.63s@%.250s", key, host);
            return;
        }
    snprintf(out, cap, "%s", key);
}

void ca_store_close(struct ca_store *s)
{
    if (s)
        s->ops->close(s);
}

int ca_store_begin(struct ca_store *s, struct meshtls_err *err)
{
    return s->ops->begin(s, err);
}

int ca_store_commit(struct ca_store *s, struct meshtls_err *err)
{
    return s->ops->commit(s, err);
}

void ca_store_rollback(struct ca_store *s)
{
    s->ops->rollback(s);
}

int ca_store_meta_get(struct ca_store *s, const char *key, char **out, struct meshtls_err *err)
{
    return s->ops->meta_get(s, key, out, err);
}

int ca_store_meta_set(struct ca_store *s, const char *key, const char *value,
                      struct meshtls_err *err)
{
    return s->ops->meta_set(s, key, value, err);
}

int ca_store_service_put(struct ca_store *s, const struct ca_service *svc, int *updated,
                         struct meshtls_err *err)
{
    return s->ops->service_put(s, svc, updated, err);
}

int ca_store_service_get(struct ca_store *s, const char *name, struct ca_service *out,
                         struct meshtls_err *err)
{
    return s->ops->service_get(s, name, out, err);
}

int ca_store_cert_insert(struct ca_store *s, const struct ca_cert *c, struct meshtls_err *err)
{
    return s->ops->cert_insert(s, c, err);
}

int ca_store_cert_set_status(struct ca_store *s, const char *serial, const char *status,
                             const char *reason, const char *replaced_by, struct meshtls_err *err)
{
    return s->ops->cert_set_status(s, serial, status, reason, replaced_by, err);
}

int ca_store_cert_get(struct ca_store *s, const char *serial, struct ca_cert *out,
                      struct meshtls_err *err)
{
    return s->ops->cert_get(s, serial, out, err);
}

int ca_store_cert_list(struct ca_store *s, const char *service, const char *status,
                       struct ca_cert **out, size_t *n, struct meshtls_err *err)
{
    return s->ops->cert_list(s, service, status, out, n, err);
}

int ca_store_audit(struct ca_store *s, const char *action, const char *service, const char *serial,
                   const char *detail, struct meshtls_err *err)
{
    return s->ops->audit(s, action, service, serial, detail, err);
}

int ca_store_meta_find(struct ca_store *s, const char *key, char **out, struct meshtls_err *err)
{
    return s->ops->meta_find(s, key, out, err);
}

int ca_store_service_list(struct ca_store *s, struct ca_service **out, size_t *n,
                          struct meshtls_err *err)
{
    return s->ops->service_list(s, out, n, err);
}

int ca_store_service_unregister(struct ca_store *s, const char *name, struct meshtls_err *err)
{
    return s->ops->service_unregister(s, name, err);
}

int ca_store_cert_set_out_dir(struct ca_store *s, const char *serial, const char *out_dir,
                              struct meshtls_err *err)
{
    return s->ops->cert_set_out_dir(s, serial, out_dir, err);
}

const char *ca_store_path(const struct ca_store *s)
{
    return s->path;
}

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void ca_service_clear(struct ca_service *svc)
{
    free(svc->name);
    free(svc->spiffe_id);
    free_list(svc->dns, svc->n_dns);
    free_list(svc->ips, svc->n_ips);
    memset(svc, 0, sizeof(*svc));
}

void ca_service_list_free(struct ca_service *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ca_service_clear(&v[i]);
    free(v);
}

void ca_cert_clear(struct ca_cert *c)
{
    free(c->serial);
    free(c->service);
    free(c->status);
    free(c->out_dir);
    free(c->cert_pem);
    free(c->pubkey_pem);
    free(c->reason);
    memset(c, 0, sizeof(*c));
}

void ca_cert_list_free(struct ca_cert *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ca_cert_clear(&v[i]);
    free(v);
}
