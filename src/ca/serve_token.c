/*
 * serve_token.c - the control plane's pure checks and its own tables: bootstrap tokens
 * (format, hash, single use) and the CSR-versus-registration match (see serve.h).
 *
 * The tables live in the CA store beside the PKI's (their own migrations table,
 * serve_migrations), so every server on one store (one SQLite file, or one PostgreSQL
 * database shared by several hosts) sees the same tokens, peers and revocation epochs.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "db.h"
#include "serve.h"

/* ---- tokens ---------------------------------------------------------------------------- */

static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int cp_token_new(char *out, size_t cap, struct meshtls_err *err)
{
    unsigned char raw[33]; /* 32 random bytes; one spare so the groups of 3 come out even */
    if (cap < CP_TOKEN_LEN + 1)
        return meshtls_err_set(err, MESHTLS_EINVAL, "token buffer too small");
    if (RAND_bytes(raw, 32) != 1)
        return meshtls_err_set(err, MESHTLS_ETLS, "no random bytes for a token");
    raw[32] = 0;
    size_t o = 0;
    memcpy(out, CP_TOKEN_PREFIX, 4);
    o = 4;
    for (size_t i = 0; i < 33; i += 3) {
        unsigned v = (unsigned)raw[i] << 16 | (unsigned)raw[i + 1] << 8 | raw[i + 2];
        for (int k = 3; k >= 0 && o < CP_TOKEN_LEN; k--)
            out[o++] = B64URL[(v >> (6 * k)) & 63];
    }
    out[CP_TOKEN_LEN] = '\0';
    OPENSSL_cleanse(raw, sizeof(raw));
    return 0;
}

int cp_token_hash(const char *token, char *hex, size_t cap)
{
    if (!token || cap < CP_TOKEN_HASH_LEN + 1 || strlen(token) != CP_TOKEN_LEN ||
        strncmp(token, CP_TOKEN_PREFIX, 4) != 0)
        return MESHTLS_EINVAL;
    for (size_t i = 4; i < CP_TOKEN_LEN; i++)
        if (!strchr(B64URL, token[i]) || token[i] == '\0')
            return MESHTLS_EINVAL;
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (EVP_Digest(token, CP_TOKEN_LEN, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return MESHTLS_ETLS;
    for (size_t i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return 0;
}

/* ---- tables ---------------------------------------------------------------------------- */

static const struct mt_db_migration CP_MIGRATIONS[] = {
    {1,
     "CREATE TABLE serve_tokens ("
     "  hash TEXT PRIMARY KEY,"
     "  service TEXT NOT NULL,"
     "  created_at INTEGER NOT NULL,"
     "  expires_at INTEGER NOT NULL,"
     "  used_at INTEGER,"
     "  used_by TEXT);"
     "CREATE TABLE serve_peers ("
     "  spiffe_id TEXT PRIMARY KEY,"
     "  serial TEXT NOT NULL,"
     "  address TEXT NOT NULL,"
     "  registered_at INTEGER NOT NULL,"
     "  last_seen INTEGER NOT NULL,"
     "  expires_at INTEGER NOT NULL);"
     "CREATE INDEX serve_peers_expires ON serve_peers(expires_at);",
     "CREATE TABLE serve_tokens ("
     "  hash TEXT PRIMARY KEY,"
     "  service TEXT NOT NULL,"
     "  created_at BIGINT NOT NULL,"
     "  expires_at BIGINT NOT NULL,"
     "  used_at BIGINT,"
     "  used_by TEXT);"
     "CREATE TABLE serve_peers ("
     "  spiffe_id TEXT PRIMARY KEY,"
     "  serial TEXT NOT NULL,"
     "  address TEXT NOT NULL,"
     "  registered_at BIGINT NOT NULL,"
     "  last_seen BIGINT NOT NULL,"
     "  expires_at BIGINT NOT NULL);"
     "CREATE INDEX serve_peers_expires ON serve_peers(expires_at);"},
    /* 2: the revocation feed.  Every revocation gets the next epoch in the transaction
     * that revokes (a trigger on the PKI's certificates table, so ca_revoke through the
     * API, another server or the command line all count); rows are never deleted, so
     * epochs are gap-free.  Revocations made before this migration are numbered first. */
    {2,
     "CREATE TABLE serve_revocations ("
     "  epoch INTEGER PRIMARY KEY,"
     "  serial TEXT NOT NULL,"
     "  service TEXT NOT NULL,"
     "  revoked_at INTEGER NOT NULL,"
     "  reason TEXT);"
     "INSERT INTO serve_revocations (serial, service, revoked_at, reason) "
     "  SELECT serial, service, COALESCE(revoked_at, 0), reason FROM certificates "
     "  WHERE status = 'revoked' ORDER BY revoked_at, serial;"
     "CREATE TRIGGER serve_revocation_epoch AFTER UPDATE OF status ON certificates "
     "  FOR EACH ROW WHEN NEW.status = 'revoked' AND OLD.status <> 'revoked' "
     "  BEGIN INSERT INTO serve_revocations (serial, service, revoked_at, reason) "
     "  VALUES (NEW.serial, NEW.service, COALESCE(NEW.revoked_at, 0), NEW.reason); END;",
     /* PostgreSQL: several servers revoke at once, so the next epoch comes from a counter
      * row updated in the revoking transaction: its row lock, held to COMMIT, orders the
      * revocations, so epochs are gap-free and become visible in their order (a follower
      * at epoch N never later finds an N-1 it missed).  The CA's write lock (store_db.c)
      * already orders them; the counter keeps that true on its own. */
     "CREATE TABLE serve_revocations ("
     "  epoch BIGINT PRIMARY KEY,"
     "  serial TEXT NOT NULL,"
     "  service TEXT NOT NULL,"
     "  revoked_at BIGINT NOT NULL,"
     "  reason TEXT);"
     "INSERT INTO serve_revocations (epoch, serial, service, revoked_at, reason) "
     "  SELECT row_number() OVER (ORDER BY revoked_at, serial), serial, service, "
     "  COALESCE(revoked_at, 0), reason FROM certificates WHERE status = 'revoked';"
     "CREATE TABLE serve_epoch (id INTEGER PRIMARY KEY CHECK (id = 1), value BIGINT NOT NULL);"
     "INSERT INTO serve_epoch (id, value) "
     "  SELECT 1, COALESCE(MAX(epoch), 0) FROM serve_revocations;"
     "CREATE FUNCTION serve_revocation_epoch() RETURNS trigger LANGUAGE plpgsql AS $f$"
     "  DECLARE e BIGINT;"
     "  BEGIN"
     "    UPDATE serve_epoch SET value = value + 1 WHERE id = 1 RETURNING value INTO e;"
     "    INSERT INTO serve_revocations (epoch, serial, service, revoked_at, reason)"
     "      VALUES (e, NEW.serial, NEW.service, COALESCE(NEW.revoked_at, 0), NEW.reason);"
     "    RETURN NEW;"
     "  END $f$;"
     "CREATE TRIGGER serve_revocation_epoch AFTER UPDATE OF status ON certificates "
     "  FOR EACH ROW WHEN (NEW.status = 'revoked' AND OLD.status <> 'revoked') "
     "  EXECUTE FUNCTION serve_revocation_epoch();"},
    /* 3: leases, so that of several servers on one store one runs the lifecycle worker
     * per interval */
    {3,
     "CREATE TABLE serve_leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, "
     "  until_ms INTEGER NOT NULL);"
     "INSERT INTO serve_leases (name, holder, until_ms) VALUES ('lifecycle', '', 0);",
     "CREATE TABLE serve_leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, "
     "  until_ms BIGINT NOT NULL);"
     "INSERT INTO serve_leases (name, holder, until_ms) VALUES ('lifecycle', '', 0);"},
    /* 4: cross-server change notification.  PostgreSQL: the revoking transaction also
     * notifies channel CP_REVOCATION_CHANNEL with the new epoch, delivered to every server
     * at COMMIT (serve.c's feed watcher LISTENs), whoever revoked: a server, `meshtls ca
     * revoke` on any host.  SQLite needs nothing: a listener sees the file's data_version
     * move (src/db), so its statement is a no-op. */
    {4, "SELECT 1;",
     "CREATE OR REPLACE FUNCTION serve_revocation_epoch() RETURNS trigger LANGUAGE plpgsql "
     "AS $f$"
     "  DECLARE e BIGINT;"
     "  BEGIN"
     "    UPDATE serve_epoch SET value = value + 1 WHERE id = 1 RETURNING value INTO e;"
     "    INSERT INTO serve_revocations (epoch, serial, service, revoked_at, reason)"
     "      VALUES (e, NEW.serial, NEW.service, COALESCE(NEW.revoked_at, 0), NEW.reason);"
     "    PERFORM pg_notify('" CP_REVOCATION_CHANNEL "', e::text);"
     "    RETURN NEW;"
     "  END $f$;"},
};

int cp_db_open(const char *dir, struct mt_db **out, struct meshtls_err *err)
{
    char url[4200];
    int rc = ca_store_locate(dir, url, sizeof(url), err);
    if (rc)
        return rc;
    /* PostgreSQL: bounded waits, so that a database that is down or stuck makes a request
     * fail (503) within seconds instead of holding a pool thread */
    struct mt_db_opts o = {.must_exist = 1,
                           .pool_size = 8,
                           .busy_timeout_ms = 5000,
                           .connect_timeout_s = 2,
                           .statement_timeout_ms = 5000};
    struct mt_db *db = NULL;
    struct ca_store *st = NULL;
    /* A database: the CA's own tables first (made by ca init, migrated here), so that a
     * database without a CA says so rather than failing in our migrations. */
    if (strncmp(url, "sqlite:", 7) != 0 && (rc = ca_store_open(dir, 0, &st, err)) != 0) {
        OPENSSL_cleanse(url, sizeof(url));
        return rc;
    }
    ca_store_close(st);
    rc = mt_db_open(url, &o, &db, err);
    OPENSSL_cleanse(url, sizeof(url));
    if (rc == MESHTLS_ENOENT)
        return meshtls_err_set(err, rc,
                               "%s/meshtls.db does not exist: create the CA first (meshtls ca "
                               "init --dir %s --trust-domain TD)",
                               dir, dir);
    if (rc)
        return rc;
    if ((rc = mt_db_migrate(db, "serve_migrations", CP_MIGRATIONS,
                            sizeof(CP_MIGRATIONS) / sizeof(CP_MIGRATIONS[0]), NULL, err))) {
        mt_db_close(db);
        return rc;
    }
    *out = db;
    return 0;
}

struct tok_ins {
    const char *hash, *service;
    int64_t now, ttl;
};

static int tok_ins_fn(struct mt_db_conn *c, void *arg, struct meshtls_err *err)
{
    struct tok_ins *t = arg;
    struct mt_db_param p[] = {MT_DB_TEXT(t->hash), MT_DB_TEXT(t->service), MT_DB_INT64(t->now),
                              MT_DB_INT64(t->now + t->ttl)};
    return mt_db_exec(c,
                      "INSERT INTO serve_tokens (hash, service, created_at, expires_at) "
                      "VALUES ($1, $2, $3, $4)",
                      p, 4, NULL, err);
}

int cp_token_create(struct mt_db *db, const char *service, int64_t ttl_s, int64_t now, char *out,
                    size_t cap, struct meshtls_err *err)
{
    char tok[CP_TOKEN_LEN + 1], hash[CP_TOKEN_HASH_LEN + 1];
    int rc;
    if (ttl_s < 1)
        return meshtls_err_set(err, MESHTLS_EINVAL, "--ttl must be at least 1 second");
    if ((rc = cp_token_new(tok, sizeof(tok), err)) || (rc = cp_token_hash(tok, hash, sizeof(hash))))
        return rc;
    struct tok_ins t = {.hash = hash, .service = service, .now = now, .ttl = ttl_s};
    if ((rc = mt_db_tx(db, tok_ins_fn, &t, err)) == 0)
        snprintf(out, cap, "%s", tok);
    OPENSSL_cleanse(tok, sizeof(tok));
    return rc;
}

int cp_token_peek(struct mt_db *db, const char *hash, int64_t now, enum cp_token_state *state,
                  char *svc, size_t cap, struct meshtls_err *err)
{
    struct mt_db_conn *c = NULL;
    struct mt_db_rows *r = NULL;
    int rc = mt_db_acquire(db, &c, err);
    if (rc)
        return rc;
    struct mt_db_param p[] = {MT_DB_TEXT(hash)};
    if ((rc =
             mt_db_query(c, "SELECT service, expires_at, used_at FROM serve_tokens WHERE hash = $1",
                         p, 1, &r, err)))
        goto out;
    int row = mt_db_row_next(r, err);
    if (row < 0) {
        rc = row;
        goto out;
    }
    if (row == 0) {
        *state = CP_TOKEN_UNKNOWN;
    } else {
        snprintf(svc, cap, "%s", mt_db_col_text(r, 0) ? mt_db_col_text(r, 0) : "");
        if (!mt_db_col_is_null(r, 2))
            *state = CP_TOKEN_USED;
        else if (mt_db_col_int64(r, 1) <= now)
            *state = CP_TOKEN_EXPIRED;
        else
            *state = CP_TOKEN_OK;
    }
out:
    mt_db_rows_close(r);
    mt_db_release(c);
    return rc;
}

struct tok_use {
    const char *hash, *by;
    int64_t now;
    int64_t changes;
};

static int tok_use_fn(struct mt_db_conn *c, void *arg, struct meshtls_err *err)
{
    struct tok_use *t = arg;
    struct mt_db_param p[] = {MT_DB_INT64(t->now), MT_DB_TEXT(t->by), MT_DB_TEXT(t->hash)};
    return mt_db_exec(c,
                      "UPDATE serve_tokens SET used_at = $1, used_by = $2 "
                      "WHERE hash = $3 AND used_at IS NULL AND expires_at > $1",
                      p, 3, &t->changes, err);
}

int cp_token_consume(struct mt_db *db, const char *hash, int64_t now, const char *by, int *won,
                     struct meshtls_err *err)
{
    struct tok_use t = {.hash = hash, .by = by, .now = now};
    int rc = mt_db_tx(db, tok_use_fn, &t, err);
    *won = rc == 0 && t.changes == 1;
    return rc;
}

static int tok_unuse_fn(struct mt_db_conn *c, void *arg, struct meshtls_err *err)
{
    struct mt_db_param p[] = {MT_DB_TEXT((const char *)arg)};
    return mt_db_exec(c, "UPDATE serve_tokens SET used_at = NULL, used_by = NULL WHERE hash = $1",
                      p, 1, NULL, err);
}

int cp_token_unconsume(struct mt_db *db, const char *hash, struct meshtls_err *err)
{
    return mt_db_tx(db, tok_unuse_fn, (void *)hash, err);
}

/* ---- CSR ------------------------------------------------------------------------------- */

X509_REQ *cp_csr_parse(const char *pem, size_t len)
{
    if (!pem || len == 0 || len > 64 * 1024)
        return NULL;
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    X509_REQ *r = b ? PEM_read_bio_X509_REQ(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    ERR_clear_error();
    return r;
}

static int ip_registered(const unsigned char *a, int len, const struct ca_service *svc)
{
    for (size_t j = 0; j < svc->n_ips; j++) {
        unsigned char b[16];
        int fam = strchr(svc->ips[j], ':') ? AF_INET6 : AF_INET;
        if (inet_pton(fam, svc->ips[j], b) == 1 && (fam == AF_INET ? 4 : 16) == len &&
            !memcmp(a, b, (size_t)len))
            return 1;
    }
    return 0;
}

int cp_csr_match(X509_REQ *req, const struct ca_service *svc, char *why, size_t cap)
{
    EVP_PKEY *pk = X509_REQ_get0_pubkey(req);
    if (!pk || X509_REQ_verify(req, pk) != 1) {
        ERR_clear_error();
        snprintf(why, cap, "the CSR's signature does not verify: generate it again");
        return MESHTLS_EPARSE;
    }
    char cn[256] = "";
    X509_NAME *subj = X509_REQ_get_subject_name(req);
    if (subj && X509_NAME_get_text_by_NID(subj, NID_commonName, cn, sizeof(cn)) > 0 &&
        strcmp(cn, svc->name) != 0) {
        snprintf(why, cap, "the CSR asks for CN '%.100s', but the token is for service '%.64s'", cn,
                 svc->name);
        return MESHTLS_EDENIED;
    }
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    GENERAL_NAMES *gens = NULL;
    int rc = 0, n_uri = 0;
    for (int i = 0; exts && i < sk_X509_EXTENSION_num(exts); i++) {
        X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);
        if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) == NID_subject_alt_name) {
            if (gens) {
                snprintf(why, cap, "the CSR has two subjectAltName extensions");
                rc = MESHTLS_EDENIED;
                break;
            }
            gens = X509V3_EXT_d2i(e);
        }
    }
    for (int i = 0; !rc && gens && i < sk_GENERAL_NAME_num(gens); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_DNS || g->type == GEN_URI) {
            ASN1_IA5STRING *s = g->type == GEN_DNS ? g->d.dNSName : g->d.uniformResourceIdentifier;
            int len = ASN1_STRING_length(s);
            const char *d = (const char *)ASN1_STRING_get0_data(s);
            char val[300];
            snprintf(val, sizeof(val), "%.*s", len > 255 ? 255 : len, d);
            if ((int)strlen(val) != len) {
                snprintf(why, cap, "the CSR has a %s SAN with a NUL byte or over 255 bytes",
                         g->type == GEN_DNS ? "DNS" : "URI");
                rc = MESHTLS_EDENIED;
            } else if (g->type == GEN_URI) {
                n_uri++;
                if (strcmp(val, svc->spiffe_id) != 0) {
                    snprintf(why, cap,
                             "the CSR asks for the URI SAN '%.255s', but service '%.64s' is "
                             "registered as '%.255s'",
                             val, svc->name, svc->spiffe_id);
                    rc = MESHTLS_EDENIED;
                }
            } else {
                int ok = 0;
                for (size_t j = 0; j < svc->n_dns; j++)
                    ok |= !strcasecmp(val, svc->dns[j]);
                if (!ok) {
                    snprintf(why, cap,
                             "the CSR asks for DNS name '%.255s', which service '%.64s' is not "
                             "registered for (meshtls ca register --dns)",
                             val, svc->name);
                    rc = MESHTLS_EDENIED;
                }
            }
        } else if (g->type == GEN_IPADD) {
            int len = ASN1_STRING_length(g->d.iPAddress);
            const unsigned char *a = ASN1_STRING_get0_data(g->d.iPAddress);
            if ((len != 4 && len != 16) || !ip_registered(a, len, svc)) {
                char t[64] = "?";
                if (len == 4 || len == 16)
                    inet_ntop(len == 4 ? AF_INET : AF_INET6, a, t, sizeof(t));
                snprintf(why, cap,
                         "the CSR asks for IP address %s, which service '%.64s' is not "
                         "registered for (meshtls ca register --ip)",
                         t, svc->name);
                rc = MESHTLS_EDENIED;
            }
        } else {
            snprintf(why, cap, "the CSR asks for a SAN of a kind we do not issue (type %d)",
                     g->type);
            rc = MESHTLS_EDENIED;
        }
    }
    if (!rc && n_uri == 0) {
        snprintf(why, cap, "the CSR carries no SPIFFE ID: add the URI SAN %.255s", svc->spiffe_id);
        rc = MESHTLS_EDENIED;
    } else if (!rc && n_uri > 1) {
        snprintf(why, cap, "the CSR carries %d URI SANs; it must carry one, the SPIFFE ID %.255s",
                 n_uri, svc->spiffe_id);
        rc = MESHTLS_EDENIED;
    }
    GENERAL_NAMES_free(gens);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    return rc;
}

int cp_is_admin(const char *const *admins, size_t n, const char *spiffe_id)
{
    if (!spiffe_id)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (admins[i] && strcmp(admins[i], spiffe_id) == 0)
            return 1;
    return 0;
}

struct lease {
    const char *name, *holder;
    int64_t now_ms, until_ms, changes;
};

static int lease_fn(struct mt_db_conn *c, void *arg, struct meshtls_err *err)
{
    struct lease *l = arg;
    struct mt_db_param p[] = {MT_DB_TEXT(l->holder), MT_DB_INT64(l->until_ms), MT_DB_TEXT(l->name),
                              MT_DB_INT64(l->now_ms)};
    return mt_db_exec(c,
                      "UPDATE serve_leases SET holder = $1, until_ms = $2 "
                      "WHERE name = $3 AND until_ms <= $4",
                      p, 4, &l->changes, err);
}

int cp_lease_take(struct mt_db *db, const char *name, const char *holder, int64_t now_ms,
                  int64_t until_ms, int *won, struct meshtls_err *err)
{
    struct lease l = {.name = name, .holder = holder, .now_ms = now_ms, .until_ms = until_ms};
    int rc = mt_db_tx(db, lease_fn, &l, err);
    *won = rc == 0 && l.changes == 1;
    return rc;
}
