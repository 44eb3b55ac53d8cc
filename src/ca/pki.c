/*
 * pki.c - CA operations (see ca.h).
 *
 * Consistency between the store and the files: each operation runs inside
 * one store transaction (BEGIN IMMEDIATE, so CA commands never interleave).
 * Issue, rotate and revoke --replace stage the new files next to the old
 * ones (stage.h: temp + fsync), then back up the old ones and rename the
 * new ones in, then COMMIT; if anything fails, including COMMIT, the
 * transaction rolls back and the old files are put back.  Only a crash (or
 * power loss) between the renames and the COMMIT can leave a certificate
 * file the store does not know about: it is valid but absent from the
 * inventory, the service keeps working, and the next issue or rotate for
 * that service overwrites it.  init writes every file exclusively and the
 * store last: a store means a complete CA, and a failed init removes what
 * it wrote.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca.h"
#include "meshtls/identity.h"
#include "parse.h"
#include "meshtls/spiffe.h"
#include "meshtls/x509.h"
#include "stage.h"
#include "store.h"

/* A loaded CA: store plus signing material.  Everything owned. */
struct ca {
    struct ca_store *store;
    char dir[2048];
    char *td;
    enum mt_key_type kt;
    X509 *root, *inter;
    EVP_PKEY *inter_key;
};

static void path_of(char *buf, size_t cap, const char *dir, const char *name)
{
    snprintf(buf, cap, "%s/%s", dir, name);
}

static void ca_close(struct ca *ca)
{
    ca_store_close(ca->store);
    free(ca->td);
    X509_free(ca->root);
    X509_free(ca->inter);
    EVP_PKEY_free(ca->inter_key);
    memset(ca, 0, sizeof(*ca));
}

static int read_one_cert(const char *path, X509 **out, struct meshtls_err *err)
{
    STACK_OF(X509) *v = NULL;
    int rc = meshtls_pem_read_certs(path, &v, err);
    if (rc)
        return rc;
    *out = sk_X509_shift(v);
    sk_X509_pop_free(v, X509_free);
    return 0;
}

/* Open the CA in `dir`; `signing` also loads the intermediate's key. */
static int ca_open(struct ca *ca, const char *dir, int signing, struct meshtls_err *err)
{
    int rc;
    char p[4096], *kt = NULL;
    memset(ca, 0, sizeof(*ca));
    snprintf(ca->dir, sizeof(ca->dir), "%s", dir);
    if ((rc = ca_store_open(dir, 0, &ca->store, err)) ||
        (rc = ca_store_meta_get(ca->store, "trust_domain", &ca->td, err)) ||
        (rc = ca_store_meta_get(ca->store, "key_type", &kt, err)) ||
        (rc = mt_key_type_parse(kt, &ca->kt, err)))
        goto out;
    path_of(p, sizeof(p), dir, "root.crt");
    if ((rc = read_one_cert(p, &ca->root, err)))
        goto out;
    path_of(p, sizeof(p), dir, "intermediate.crt");
    if ((rc = read_one_cert(p, &ca->inter, err)))
        goto out;
    if (signing) {
        path_of(p, sizeof(p), dir, "intermediate.key");
        if ((rc = meshtls_pem_read_key(p, &ca->inter_key, err)))
            goto out;
    }
out:
    free(kt);
    if (rc)
        ca_close(ca);
    return rc;
}

/*
 * PEM of `a` followed by `b` (optional) in a new buffer.
 * @param out caller frees; *len its length (no NUL counted).
 */
static int pem_certs(X509 *a, X509 *b, char **out, size_t *len, struct meshtls_err *err)
{
    char *pa = NULL, *pb = NULL, *all = NULL;
    size_t la = 0, lb = 0;
    int rc = mt_cert_to_pem(a, &pa, &la, err);
    if (!rc && b)
        rc = mt_cert_to_pem(b, &pb, &lb, err);
    if (!rc && !(all = malloc(la + lb + 1)))
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    if (rc)
        goto out;
    memcpy(all, pa, la);
    if (pb)
        memcpy(all + la, pb, lb);
    all[la + lb] = '\0';
    *out = all;
    *len = la + lb;
out:
    free(pa);
    free(pb);
    return rc;
}

/* Write `a` (+ `b`) to `path` atomically (exclusive: refuse an existing file). */
static int write_pem_cert(const char *path, X509 *a, X509 *b, mode_t mode, int excl,
                          struct meshtls_err *err)
{
    char *pem = NULL;
    size_t len = 0;
    int rc = pem_certs(a, b, &pem, &len, err);
    if (!rc)
        rc = meshtls_write_file_atomic(path, pem, len, mode, excl, err);
    free(pem);
    return rc;
}

/* Write the private key `k` to `path` atomically; the PEM is wiped from memory after. */
static int write_pem_key(const char *path, EVP_PKEY *k, mode_t mode, int excl,
                         struct meshtls_err *err)
{
    char *pem = NULL;
    size_t len = 0;
    int rc = mt_key_to_pem(k, &pem, &len, err);
    if (!rc)
        rc = meshtls_write_file_atomic(path, pem, len, mode, excl, err);
    if (pem)
        OPENSSL_cleanse(pem, len);
    free(pem);
    return rc;
}

/* Stage `a` (+ `b`) for `path` (see stage.h). */
static int stage_cert(struct ca_stage *st, const char *path, X509 *a, X509 *b,
                      struct meshtls_err *err)
{
    char *pem = NULL;
    size_t len = 0;
    int rc = pem_certs(a, b, &pem, &len, err);
    if (!rc)
        rc = ca_stage_add(st, path, pem, len, 0644, err);
    free(pem);
    return rc;
}

/* Stage the private key `k` for `path`, mode 0600. */
static int stage_key(struct ca_stage *st, const char *path, EVP_PKEY *k, struct meshtls_err *err)
{
    char *pem = NULL;
    size_t len = 0;
    int rc = mt_key_to_pem(k, &pem, &len, err);
    if (!rc)
        rc = ca_stage_add(st, path, pem, len, 0600, err);
    if (pem)
        OPENSSL_cleanse(pem, len);
    free(pem);
    return rc;
}

/* Write `bn` (taken: freed here, NULL allowed) as lower-case even-length hex. */
static int bn_to_hex(BIGNUM *bn, char *out, size_t cap)
{
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    BN_free(bn);
    if (!hex)
        return -1;
    size_t i = 0;
    for (; hex[i] && i + 1 < cap; i++)
        out[i] = (char)((hex[i] >= 'A' && hex[i] <= 'F') ? hex[i] - 'A' + 'a' : hex[i]);
    out[i] = '\0';
    OPENSSL_free(hex);
    return 0;
}

static int serial_hex(X509 *c, char *out, size_t cap)
{
    return bn_to_hex(ASN1_INTEGER_to_BN(X509_get0_serialNumber(c), NULL), out, cap);
}

int ca_serial_normalize(const char *in, char *out, size_t cap)
{
    BIGNUM *bn = NULL;
    if (!strncmp(in, "0x", 2) || !strncmp(in, "0X", 2))
        in += 2;
    size_t n = strlen(in);
    if (n == 0 || n > 64 || strspn(in, "0123456789abcdefABCDEF:") != n)
        return -1;
    char clean[80];
    size_t j = 0;
    for (size_t i = 0; i < n && j + 1 < sizeof(clean); i++)
        if (in[i] != ':')
            clean[j++] = in[i];
    clean[j] = '\0';
    if (!BN_hex2bn(&bn, clean))
        return -1;
    return bn_to_hex(bn, out, cap);
}

/* ---- init ---------------------------------------------------------------- */

static int sign_crl(X509 *issuer, EVP_PKEY *key, long number, int days, struct ca_cert *revoked,
                    size_t n, X509_CRL **out, struct meshtls_err *err);

int ca_init(const char *dir, const char *td, enum mt_key_type kt, struct meshtls_err *err)
{
    int rc;
    EVP_PKEY *rk = NULL, *ik = NULL;
    X509 *root = NULL, *inter = NULL;
    X509_CRL *crl = NULL;
    struct ca_store *store = NULL;
    char p[4096], cn[400];
    const char *files[] = {"root.crt", "root.key", "intermediate.crt", "intermediate.key",
                           "ca.crt",   "root.crl", "meshtls.db"};
    int created[7] = {0}, made_dir = 0;

    if ((rc = meshtls_trust_domain_validate(td, err)))
        return rc;
    for (size_t i = 0; i < 7; i++) {
        path_of(p, sizeof(p), dir, files[i]);
        if (access(p, F_OK) == 0)
            return meshtls_err_set(err, MESHTLS_EEXIST,
                                   "%s already exists: %s already holds a CA; refusing to "
                                   "overwrite it (use another --dir)",
                                   p, dir);
    }
    if (mkdir(dir, 0700) == 0)
        made_dir = 1;
    else if (errno != EEXIST)
        return meshtls_err_set(err, MESHTLS_EIO, "cannot create %s: %s", dir, strerror(errno));

    snprintf(cn, sizeof(cn), "%s Root CA", td);
    struct mt_cert_spec rs = {
        .cn = cn, .o = "meshtls", .is_ca = 1, .pathlen = 1, .days = CA_ROOT_DAYS};
    if ((rc = mt_key_generate(kt, &rk, err)) || (rc = mt_cert_sign(&rs, rk, NULL, rk, &root, err)))
        goto out;
    snprintf(cn, sizeof(cn), "%s Intermediate CA", td);
    struct mt_cert_spec is = {
        .cn = cn, .o = "meshtls", .is_ca = 1, .pathlen = 0, .days = CA_INTERMEDIATE_DAYS};
    if ((rc = mt_key_generate(kt, &ik, err)) ||
        (rc = mt_cert_sign(&is, ik, root, rk, &inter, err)) ||
        (rc = sign_crl(root, rk, 1, CA_ROOT_CRL_DAYS, NULL, 0, &crl, err)))
        goto out;

    /* files first (exclusive), the store last: a store means a complete CA */
    /* files[0..4] in order: certificates and keys, each created exclusively */
    struct {
        X509 *cert;
        EVP_PKEY *key;
        mode_t mode;
    } out_files[5] = {{root, NULL, 0644},
                      {NULL, rk, 0400},
                      {inter, NULL, 0644},
                      {NULL, ik, 0600},
                      {root, NULL, 0644}};
    for (size_t i = 0; i < 5; i++) {
        path_of(p, sizeof(p), dir, files[i]);
        rc = out_files[i].cert
                 ? write_pem_cert(p, out_files[i].cert, NULL, out_files[i].mode, 1, err)
                 : write_pem_key(p, out_files[i].key, out_files[i].mode, 1, err);
        if (rc)
            goto out;
        created[i] = 1;
    }
    {
        BIO *b = BIO_new(BIO_s_mem());
        char *data = NULL;
        long n = b && PEM_write_bio_X509_CRL(b, crl) ? BIO_get_mem_data(b, &data) : 0;
        path_of(p, sizeof(p), dir, "root.crl");
        rc = n > 0 ? meshtls_write_file_atomic(p, data, (size_t)n, 0644, 1, err)
                   : meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot encode the root CRL");
        BIO_free(b);
        if (rc)
            goto out;
        created[5] = 1;
    }
    created[6] = 1;
    if ((rc = ca_store_open(dir, 1, &store, err)) || (rc = ca_store_begin(store, err)))
        goto out;
    if ((rc = ca_store_meta_set(store, "trust_domain", td, err)) ||
        (rc = ca_store_meta_set(store, "key_type", mt_key_type_name(kt), err)) ||
        (rc = ca_store_meta_set(store, "crl_number", "1", err)) ||
        (rc = ca_store_audit(store, "init", NULL, NULL, td, err)) ||
        (rc = ca_store_commit(store, err))) {
        ca_store_rollback(store);
        goto out;
    }
out:
    ca_store_close(store);
    if (rc) { /* leave nothing behind */
        for (size_t i = 0; i < 7; i++)
            if (created[i]) {
                path_of(p, sizeof(p), dir, files[i]);
                unlink(p);
            }
        if (made_dir)
            rmdir(dir);
    }
    EVP_PKEY_free(rk);
    EVP_PKEY_free(ik);
    X509_free(root);
    X509_free(inter);
    X509_CRL_free(crl);
    return rc;
}

/* ---- register ------------------------------------------------------------ */

static int valid_service_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
        return 0;
    return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

int ca_service_name_valid(const char *name)
{
    return valid_service_name(name);
}

static int valid_dns(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253 || s[0] == '.' || s[n - 1] == '.' || strstr(s, ".."))
        return 0;
    const char *p = s;
    if (!strncmp(p, "*.", 2))
        p += 2; /* one leading wildcard label */
    return strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") ==
           strlen(p);
}

int ca_register(const char *dir, const char *name, const char *const *dns, size_t n_dns,
                const char *const *ips, size_t n_ips, const char *spiffe_id, int *updated,
                char *spiffe_out, size_t spiffe_cap, struct meshtls_err *err)
{
    int rc;
    struct ca ca;
    char sid[MESHTLS_SPIFFE_ID_MAX + 1];
    if (!valid_service_name(name))
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "service name '%s': use 1-63 characters of a-z 0-9 . _ -, "
                               "starting with a letter or digit",
                               name);
    for (size_t i = 0; i < n_dns; i++)
        if (!valid_dns(dns[i]))
            return meshtls_err_set(err, MESHTLS_EINVAL, "--dns '%s' is not a valid DNS name",
                                   dns[i]);
    for (size_t i = 0; i < n_ips; i++) {
        unsigned char buf[16];
        if (inet_pton(AF_INET, ips[i], buf) != 1 && inet_pton(AF_INET6, ips[i], buf) != 1)
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "--ip '%s' is not an IPv4 or IPv6 "
                                   "address",
                                   ips[i]);
    }
    if ((rc = ca_open(&ca, dir, 0, err)))
        return rc;
    if (spiffe_id) {
        struct meshtls_spiffe_id id;
        struct meshtls_err e2 = MESHTLS_ERR_INIT;
        if (meshtls_spiffe_parse(spiffe_id, strlen(spiffe_id), &id, &e2) != 0) {
            rc = meshtls_err_set(err, MESHTLS_EINVAL, "--spiffe-id: %s", e2.msg);
            goto out;
        }
        if (strcmp(id.trust_domain, ca.td) != 0) {
            rc = meshtls_err_set(err, MESHTLS_EINVAL,
                                 "--spiffe-id %s is in trust domain '%s', but this CA issues "
                                 "for '%s'",
                                 spiffe_id, id.trust_domain, ca.td);
            goto out;
        }
        snprintf(sid, sizeof(sid), "%s", spiffe_id);
    } else {
        snprintf(sid, sizeof(sid), "spiffe://%s/svc/%s", ca.td, name);
    }
    struct ca_service svc = {.name = (char *)name,
                             .spiffe_id = sid,
                             .dns = (char **)dns,
                             .n_dns = n_dns,
                             .ips = (char **)ips,
                             .n_ips = n_ips};
    if ((rc = ca_store_begin(ca.store, err)))
        goto out;
    if ((rc = ca_store_service_put(ca.store, &svc, updated, err)) ||
        (rc = ca_store_audit(ca.store, "register", name, NULL, sid, err)) ||
        (rc = ca_store_commit(ca.store, err))) {
        ca_store_rollback(ca.store);
        goto out;
    }
    if (spiffe_out)
        snprintf(spiffe_out, spiffe_cap, "%s", sid);
out:
    ca_close(&ca);
    return rc;
}

/* ---- issue ----------------------------------------------------------------- */

/* SANs a CSR asks for must be within the registration. */
static int check_csr(X509_REQ *req, const struct ca_service *svc, const char *path,
                     struct meshtls_err *err)
{
    int rc = 0;
    EVP_PKEY *pk = X509_REQ_get0_pubkey(req);
    if (!pk || X509_REQ_verify(req, pk) != 1) {
        ERR_clear_error();
        return meshtls_err_set(err, MESHTLS_EPARSE,
                               "CSR %s: its signature does not verify; generate it again", path);
    }
    char cn[256] = "";
    X509_NAME *subj = X509_REQ_get_subject_name(req);
    if (subj && X509_NAME_get_text_by_NID(subj, NID_commonName, cn, sizeof(cn)) > 0 &&
        strcmp(cn, svc->name) != 0)
        return meshtls_err_set(err, MESHTLS_EDENIED,
                               "CSR %s asks for CN '%s', but it is issued for service '%s'", path,
                               cn, svc->name);
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    GENERAL_NAMES *gens = NULL;
    for (int i = 0; exts && i < sk_X509_EXTENSION_num(exts); i++) {
        X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);
        if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) == NID_subject_alt_name)
            gens = X509V3_EXT_d2i(e);
    }
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && !rc; i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        char val[600] = "";
        int ok = 0;
        if (g->type == GEN_DNS || g->type == GEN_URI) {
            ASN1_IA5STRING *s = g->type == GEN_DNS ? g->d.dNSName : g->d.uniformResourceIdentifier;
            snprintf(val, sizeof(val), "%.*s",
                     ASN1_STRING_length(s) > 500 ? 500 : ASN1_STRING_length(s),
                     (const char *)ASN1_STRING_get0_data(s));
            if (g->type == GEN_URI)
                ok = !strcmp(val, svc->spiffe_id);
            for (size_t j = 0; g->type == GEN_DNS && j < svc->n_dns; j++)
                ok |= !strcasecmp(val, svc->dns[j]);
        } else if (g->type == GEN_IPADD) {
            int len = ASN1_STRING_length(g->d.iPAddress);
            const unsigned char *a = ASN1_STRING_get0_data(g->d.iPAddress);
            inet_ntop(len == 4 ? AF_INET : AF_INET6, a, val, sizeof(val));
            for (size_t j = 0; j < svc->n_ips; j++) {
                unsigned char b[16];
                int fam = strchr(svc->ips[j], ':') ? AF_INET6 : AF_INET;
                ok |= inet_pton(fam, svc->ips[j], b) == 1 && (fam == AF_INET ? 4 : 16) == len &&
                      !memcmp(a, b, (size_t)len);
            }
        } else {
            snprintf(val, sizeof(val), "a SAN of type %d", g->type);
        }
        if (!ok)
            rc = meshtls_err_set(err, MESHTLS_EDENIED,
                                 "CSR %s asks for %s, which service '%s' is not registered for; "
                                 "register it first (meshtls ca register --dns/--ip/--spiffe-id)",
                                 path, val, svc->name);
    }
    GENERAL_NAMES_free(gens);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    return rc;
}

/*
 * Within an open transaction: sign a leaf for `svc` over `pub` (we hold its
 * private key `key` if non-NULL), record it, supersede the service's other
 * active certificates, and put the files in place through `stg` (the caller
 * commits then calls ca_stage_done(), or ca_stage_undo() on any failure).
 * `serial_out` (80 bytes) gets the new serial.
 */
static int issue_locked(struct ca *ca, const struct ca_service *svc, EVP_PKEY *pub, EVP_PKEY *key,
                        const char *out_dir, int days, struct ca_stage *stg, char *serial_out,
                        struct meshtls_err *err)
{
    int rc;
    X509 *leaf = NULL;
    char *cert_pem = NULL, *pub_pem = NULL;
    struct ca_cert *old = NULL;
    size_t n_old = 0;
    char p[4096], serial[80];
    struct mt_cert_spec spec = {.cn = svc->name,
                                .o = ca->td,
                                .days = days,
                                .dns = (const char *const *)svc->dns,
                                .n_dns = svc->n_dns,
                                .ips = (const char *const *)svc->ips,
                                .n_ips = svc->n_ips,
                                .uri = svc->spiffe_id,
                                .eku_server = 1,
                                .eku_client = 1};
    /* A leaf never outlives its issuer: cap it at the intermediate's notAfter. */
    int left_days = 0, left_secs = 0;
    if (!ASN1_TIME_diff(&left_days, &left_secs, NULL, X509_get0_notAfter(ca->inter)) ||
        left_days < 1) {
        rc = meshtls_err_set(err, MESHTLS_EEXPIRED,
                             "the intermediate CA %s/intermediate.crt expires within a day; "
                             "re-sign it with the offline root before issuing",
                             ca->dir);
        goto out;
    }
    if (spec.days > left_days)
        spec.days = left_days;
    if ((rc = mt_cert_sign(&spec, pub, ca->inter, ca->inter_key, &leaf, err)))
        goto out;
    serial_hex(leaf, serial, sizeof(serial));
    {
        BIO *b = BIO_new(BIO_s_mem());
        char *d = NULL;
        long n = b && PEM_write_bio_PUBKEY(b, pub) ? BIO_get_mem_data(b, &d) : 0;
        pub_pem = n > 0 ? strndup(d, (size_t)n) : NULL;
        BIO_free(b);
    }
    if (!pub_pem || (rc = mt_cert_to_pem(leaf, &cert_pem, NULL, err))) {
        rc = rc ? rc : meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = ca_store_cert_list(ca->store, svc->name, "active", &old, &n_old, err)))
        goto out;
    for (size_t i = 0; i < n_old; i++)
        if ((rc = ca_store_cert_set_status(ca->store, old[i].serial, "superseded", NULL, serial,
                                           err)))
            goto out;
    struct meshtls_identity *id = NULL;
    if ((rc = meshtls_identity_from_x509(leaf, &id, err)))
        goto out;
    struct ca_cert row = {.serial = serial,
                          .service = svc->name,
                          .not_before = id->not_before,
                          .not_after = id->not_after,
                          .status = "active",
                          .out_dir = (char *)out_dir,
                          .cert_pem = cert_pem,
                          .pubkey_pem = pub_pem,
                          .key_held = key != NULL};
    meshtls_identity_free(id);
    if ((rc = ca_store_cert_insert(ca->store, &row, err)))
        goto out;

    /* key first, chain second: a watcher that reloads on the .crt change sees both */
    if ((rc = ca_stage_mkdir(stg, out_dir, 0755, err)))
        goto out;
    snprintf(p, sizeof(p), "%s/%s.key", out_dir, svc->name);
    if (key && (rc = stage_key(stg, p, key, err)))
        goto out;
    snprintf(p, sizeof(p), "%s/%s.crt", out_dir, svc->name);
    if ((rc = stage_cert(stg, p, leaf, ca->inter, err)))
        goto out;
    snprintf(p, sizeof(p), "%s/ca.crt", out_dir);
    if ((rc = stage_cert(stg, p, ca->root, NULL, err)) || (rc = ca_stage_apply(stg, err)))
        goto out;
    snprintf(serial_out, 80, "%s", serial);
out:
    ca_cert_list_free(old, n_old);
    X509_free(leaf);
    free(cert_pem);
    free(pub_pem);
    return rc;
}

static int read_csr(const char *path, X509_REQ **out, struct meshtls_err *err)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = meshtls_read_file(path, 64 * 1024, &buf, &len, err);
    if (rc)
        return rc;
    BIO *b = BIO_new_mem_buf(buf, (int)len);
    X509_REQ *r = b ? PEM_read_bio_X509_REQ(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    free(buf);
    if (!r)
        return meshtls_err_set_ssl(err, MESHTLS_EPARSE,
                                   "CSR %s is not a PEM certificate request "
                                   "(-----BEGIN CERTIFICATE REQUEST-----)",
                                   path);
    *out = r;
    return 0;
}

int ca_issue(const char *dir, const char *service, const char *out_dir, int days,
             const char *csr_path, char *serial_out, struct meshtls_err *err)
{
    int rc;
    struct ca ca;
    struct ca_service svc = {0};
    EVP_PKEY *key = NULL;
    X509_REQ *req = NULL;
    if (days < 1 || days > CA_LEAF_DAYS_MAX)
        return meshtls_err_set(err, MESHTLS_EINVAL, "--days %d: expected 1 to %d", days,
                               CA_LEAF_DAYS_MAX);
    if (csr_path && (rc = read_csr(csr_path, &req, err)))
        return rc;
    if ((rc = ca_open(&ca, dir, 1, err))) {
        X509_REQ_free(req);
        return rc;
    }
    if ((rc = ca_store_service_get(ca.store, service, &svc, err)))
        goto out;
    if (req && (rc = check_csr(req, &svc, csr_path, err)))
        goto out;
    if (!req && (rc = mt_key_generate(ca.kt, &key, err)))
        goto out;
    if ((rc = ca_store_begin(ca.store, err)))
        goto out;
    EVP_PKEY *pub = req ? X509_REQ_get0_pubkey(req) : key;
    struct ca_stage stg = CA_STAGE_INIT;
    if ((rc = issue_locked(&ca, &svc, pub, key, out_dir, days, &stg, serial_out, err)) ||
        (rc = ca_store_audit(ca.store, "issue", service, serial_out, req ? "signed CSR" : out_dir,
                             err)) ||
        (rc = ca_store_commit(ca.store, err))) {
        ca_store_rollback(ca.store);
        ca_stage_undo(&stg);
    } else {
        ca_stage_done(&stg);
    }
out:
    ca_service_clear(&svc);
    EVP_PKEY_free(key);
    X509_REQ_free(req);
    ca_close(&ca);
    return rc;
}

/*
 * Within a transaction: re-issue `old` under its service's current
 * registration, into the directory it was issued to, through `stg` (see
 * issue_locked()).  A new key if we held the old one; for a CSR-issued
 * certificate the same public key is re-signed (the key is the service's).
 */
static int reissue(struct ca *ca, const struct ca_cert *old, int days, struct ca_stage *stg,
                   char *serial_out, struct meshtls_err *err)
{
    int rc;
    struct ca_service svc = {0};
    EVP_PKEY *key = NULL, *pub = NULL;
    if ((rc = ca_store_service_get(ca->store, old->service, &svc, err)))
        return rc;
    if (old->key_held) {
        rc = mt_key_generate(ca->kt, &key, err);
        pub = key;
    } else { /* CSR-issued: the key stays with the service; re-sign its public key */
        BIO *b = BIO_new_mem_buf(old->pubkey_pem, -1);
        pub = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
        rc = pub ? 0
                 : meshtls_err_set(err, MESHTLS_ESTORE, "stored public key of %s unreadable",
                                   old->serial);
    }
    if (!rc)
        rc = issue_locked(ca, &svc, pub, key, old->out_dir ? old->out_dir : ".", days, stg,
                          serial_out, err);
    if (!old->key_held)
        EVP_PKEY_free(pub);
    EVP_PKEY_free(key);
    ca_service_clear(&svc);
    return rc;
}

int ca_rotate(const char *dir, int within_days, int days, const char *const *services, size_t n,
              ca_report_fn report, void *arg, int *count, struct meshtls_err *err)
{
    int rc;
    struct ca ca;
    struct ca_cert *v = NULL;
    size_t nv = 0;
    *count = 0;
    if (within_days < 0 || within_days > 3650)
        return meshtls_err_set(err, MESHTLS_EINVAL, "--within-days %d: expected 0 to 3650",
                               within_days);
    if (days <= within_days || days > CA_LEAF_DAYS_MAX)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "--days %d must be longer than --within-days %d (and at most "
                               "%d), or the new certificates would be due again at once",
                               days, within_days, CA_LEAF_DAYS_MAX);
    if ((rc = ca_open(&ca, dir, 1, err)))
        return rc;
    for (size_t i = 0; i < n; i++) {
        struct ca_service svc = {0};
        rc = ca_store_service_get(ca.store, services[i], &svc, err);
        ca_service_clear(&svc);
        if (rc)
            goto out;
    }
    if ((rc = ca_store_cert_list(ca.store, NULL, "active", &v, &nv, err)))
        goto out;
    int64_t horizon = (int64_t)time(NULL) + (int64_t)within_days * 86400;
    for (size_t i = 0; i < nv; i++) {
        int wanted = n == 0;
        for (size_t j = 0; j < n; j++)
            wanted |= !strcmp(services[j], v[i].service);
        if (!wanted || v[i].not_after > horizon)
            continue;
        char serial[80];
        if ((rc = ca_store_begin(ca.store, err)))
            goto out;
        struct ca_stage stg = CA_STAGE_INIT;
        if ((rc = reissue(&ca, &v[i], days, &stg, serial, err)) ||
            (rc = ca_store_audit(ca.store, "rotate", v[i].service, serial, v[i].serial, err)) ||
            (rc = ca_store_commit(ca.store, err))) {
            ca_store_rollback(ca.store);
            ca_stage_undo(&stg);
            goto out;
        }
        ca_stage_done(&stg);
        (*count)++;
        if (report)
            report(v[i].service, v[i].serial, serial, v[i].out_dir, arg);
    }
out:
    ca_cert_list_free(v, nv);
    ca_close(&ca);
    return rc;
}

static const char *const REASONS[] = {"unspecified",  "keyCompromise",
                                      "caCompromise", "affiliationChanged",
                                      "superseded",   "cessationOfOperation"};
/* CRLReason codes in the same order: 0 1 2 3 4 5 */

int ca_reason_parse(const char *s)
{
    for (int i = 0; i < 6; i++)
        if (!strcmp(s, REASONS[i]))
            return i;
    return -1;
}

int ca_revoke(const char *dir, const char *serial, const char *service, const char *reason,
              int replace, ca_report_fn report, void *arg, int *count, struct meshtls_err *err)
{
    int rc;
    struct ca ca;
    struct ca_cert *v = NULL;
    size_t nv = 0;
    char want[80] = "";
    *count = 0;
    if (!reason)
        reason = "unspecified";
    if (ca_reason_parse(reason) < 0)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "--reason '%s': expected unspecified, keyCompromise, "
                               "caCompromise, affiliationChanged, superseded or "
                               "cessationOfOperation",
                               reason);
    if (serial && ca_serial_normalize(serial, want, sizeof(want)) != 0)
        return meshtls_err_set(err, MESHTLS_EINVAL, "--serial '%s' is not a hex serial number",
                               serial);
    if ((rc = ca_open(&ca, dir, 1, err)))
        return rc;
    if (service) {
        struct ca_service svc = {0};
        rc = ca_store_service_get(ca.store, service, &svc, err);
        ca_service_clear(&svc);
        if (rc || (rc = ca_store_cert_list(ca.store, service, NULL, &v, &nv, err)))
            goto out;
    } else {
        if (!(v = calloc(1, sizeof(*v)))) {
            rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
            goto out;
        }
        if ((rc = ca_store_cert_get(ca.store, want, v, err)))
            goto out;
        nv = 1;
        if (!strcmp(v[0].status, "revoked")) {
            rc = meshtls_err_set(err, MESHTLS_EEXIST, "certificate %s is already revoked (%s)",
                                 want, v[0].reason ? v[0].reason : "unspecified");
            goto out;
        }
    }
    if ((rc = ca_store_begin(ca.store, err)))
        goto out;
    int64_t now = (int64_t)time(NULL);
    struct ca_cert *last = NULL;
    for (size_t i = 0; i < nv; i++) {
        if (!strcmp(v[i].status, "revoked") || v[i].not_after < now)
            continue;
        if ((rc = ca_store_cert_set_status(ca.store, v[i].serial, "revoked", reason, NULL, err)) ||
            (rc = ca_store_audit(ca.store, "revoke", v[i].service, v[i].serial, reason, err)))
            break;
        (*count)++;
        last = &v[i];
    }
    if (!rc && *count == 0)
        rc = meshtls_err_set(err, MESHTLS_ENOENT,
                             "service '%s' has no unexpired, unrevoked certificate to revoke",
                             service ? service : want);
    char new_serial[80] = "";
    struct ca_stage stg = CA_STAGE_INIT;
    if (!rc && replace && last &&
        !(rc = reissue(&ca, last, CA_LEAF_DAYS_DEFAULT, &stg, new_serial, err)) &&
        !(rc = ca_store_cert_set_status(ca.store, last->serial, "revoked", NULL, new_serial, err)))
        rc = ca_store_audit(ca.store, "replace", last->service, new_serial, last->serial, err);
    if (!rc)
        rc = ca_store_commit(ca.store, err);
    if (rc) {
        ca_store_rollback(ca.store);
        ca_stage_undo(&stg);
    } else {
        ca_stage_done(&stg);
    }
    if (!rc && report && replace && last)
        report(last->service, last->serial, new_serial, last->out_dir, arg);
out:
    ca_cert_list_free(v, nv);
    ca_close(&ca);
    return rc;
}

/* ---- CRL ------------------------------------------------------------------ */

static int sign_crl(X509 *issuer, EVP_PKEY *key, long number, int days, struct ca_cert *revoked,
                    size_t n, X509_CRL **out, struct meshtls_err *err)
{
    int rc = 0;
    X509_CRL *crl = X509_CRL_new();
    ASN1_TIME *t = NULL;
    ASN1_INTEGER *num = NULL;
    time_t now = time(NULL);
    if (!crl || !X509_CRL_set_version(crl, 1) ||
        !X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer)) ||
        !(t = ASN1_TIME_set(NULL, now - 60)) || !X509_CRL_set1_lastUpdate(crl, t) ||
        !ASN1_TIME_set(t, now + (time_t)days * 86400) || !X509_CRL_set1_nextUpdate(crl, t)) {
        rc = meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot build the CRL");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        X509_REVOKED *r = X509_REVOKED_new();
        BIGNUM *bn = NULL;
        ASN1_INTEGER *sn = NULL;
        ASN1_TIME *rt = ASN1_TIME_set(NULL, (time_t)revoked[i].revoked_at);
        ASN1_ENUMERATED *code = ASN1_ENUMERATED_new();
        int ok = r && rt && code && BN_hex2bn(&bn, revoked[i].serial) &&
                 (sn = BN_to_ASN1_INTEGER(bn, NULL)) && X509_REVOKED_set_serialNumber(r, sn) &&
                 X509_REVOKED_set_revocationDate(r, rt) &&
                 ASN1_ENUMERATED_set(code, ca_reason_parse(revoked[i].reason ? revoked[i].reason
                                                                             : "unspecified")) &&
                 X509_REVOKED_add1_ext_i2d(r, NID_crl_reason, code, 0, 0) &&
                 X509_CRL_add0_revoked(crl, r);
        BN_free(bn);
        ASN1_INTEGER_free(sn);
        ASN1_TIME_free(rt);
        ASN1_ENUMERATED_free(code);
        if (!ok) {
            X509_REVOKED_free(r);
            rc = meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot add serial %s to the CRL",
                                     revoked[i].serial);
            goto out;
        }
    }
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer, NULL, NULL, crl, 0);
    X509_EXTENSION *akid =
        X509V3_EXT_conf_nid(NULL, &v3, NID_authority_key_identifier, "keyid:always");
    if (!(num = ASN1_INTEGER_new()) || !ASN1_INTEGER_set(num, number) ||
        !X509_CRL_add1_ext_i2d(crl, NID_crl_number, num, 0, 0) || !akid ||
        !X509_CRL_add_ext(crl, akid, -1)) {
        X509_EXTENSION_free(akid);
        rc = meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot add CRL extensions");
        goto out;
    }
    X509_EXTENSION_free(akid);
    X509_CRL_sort(crl);
    if (!X509_CRL_sign(crl, key, mt_sign_md(key))) {
        rc = meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot sign the CRL");
        goto out;
    }
    *out = crl;
    crl = NULL;
out:
    ASN1_TIME_free(t);
    ASN1_INTEGER_free(num);
    X509_CRL_free(crl);
    return rc;
}

int ca_crl(const char *dir, const char *out_path, int *revoked, struct meshtls_err *err)
{
    int rc;
    struct ca ca;
    struct ca_cert *v = NULL;
    size_t nv = 0;
    char *num = NULL, *root_crl = NULL, p[4096];
    size_t root_len = 0;
    X509_CRL *crl = NULL;
    BIO *b = NULL;
    if ((rc = ca_open(&ca, dir, 1, err)))
        return rc;
    path_of(p, sizeof(p), dir, "root.crl");
    if ((rc = meshtls_read_file(p, MESHTLS_PEM_FILE_MAX, &root_crl, &root_len, err)))
        goto out;
    if ((rc = ca_store_begin(ca.store, err)))
        goto out;
    if ((rc = ca_store_meta_get(ca.store, "crl_number", &num, err)) ||
        (rc = ca_store_cert_list(ca.store, NULL, "revoked", &v, &nv, err)))
        goto fail;
    int64_t n;
    if (mt_parse_i64(num, 0, INT64_MAX - 1, &n) != 0) {
        rc = meshtls_err_set(err, MESHTLS_ESTORE,
                             "store %s: crl_number '%.32s' is not a number; the store was "
                             "edited by hand or is damaged: restore it from a backup",
                             dir, num);
        goto fail;
    }
    n++;
    char nbuf[32];
    snprintf(nbuf, sizeof(nbuf), "%lld", (long long)n);
    if ((rc = sign_crl(ca.inter, ca.inter_key, n, CA_CRL_DAYS, v, nv, &crl, err)) ||
        (rc = ca_store_meta_set(ca.store, "crl_number", nbuf, err)) ||
        (rc = ca_store_audit(ca.store, "crl", NULL, NULL, nbuf, err)))
        goto fail;
    b = BIO_new(BIO_s_mem());
    if (!b || !PEM_write_bio_X509_CRL(b, crl) || BIO_write(b, root_crl, (int)root_len) <= 0) {
        rc = meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot encode the CRL");
        goto fail;
    }
    char *data = NULL;
    long len = BIO_get_mem_data(b, &data);
    if ((rc = meshtls_write_file_atomic(out_path, data, (size_t)len, 0644, 0, err)) ||
        (rc = ca_store_commit(ca.store, err)))
        goto fail;
    *revoked = (int)nv;
    goto out;
fail:
    ca_store_rollback(ca.store);
out:
    BIO_free(b);
    X509_CRL_free(crl);
    free(num);
    free(root_crl);
    ca_cert_list_free(v, nv);
    ca_close(&ca);
    return rc;
}
