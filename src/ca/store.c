/*
 * store.c - backend-independent part of the CA store (see store.h): picks
 * the backend from the store URL, dispatches through its ops table, frees
 * the row structs.
 */
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "store.h"

int ca_store_open(const char *store, int create, struct ca_store **out, struct meshtls_err *err)
{
    /* A plain directory (today's --dir) is sqlite:DIR/meshtls.db; anything with a
     * scheme is a database URL. */
    if (strncmp(store, "sqlite:", 7) && !strstr(store, "://"))
        return ca_store_sqlite_open(store, create, out, err);
    struct mt_db_url u;
    int rc = mt_db_url_parse(store, &u, err);
    if (rc)
        return rc;
    if (u.backend == MT_DB_SQLITE)
        return ca_store_sqlite_open_file(u.path, create, out, err);
    return meshtls_err_set(err, MESHTLS_EINVAL,
                           "store %s: the CA store on PostgreSQL is not yet supported (it comes "
                           "with the control plane); use a directory or sqlite:PATH",
                           u.redacted);
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
