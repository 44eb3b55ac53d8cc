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
#include <stdarg.h>
#include <stdatomic.h>
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

/* ---- pure helpers ------------------------------------------------------------ */

int ca_path_absolute(const char *cwd, const char *path, char *out, size_t cap)
{
    char buf[8192];
    int n;
    if (path[0] == '/')
        n = snprintf(buf, sizeof(buf), "%s", path);
    else if (cwd && cwd[0] == '/')
        n = snprintf(buf, sizeof(buf), "%s/%s", cwd, path);
    else
        return -1;
    if (n < 0 || (size_t)n >= sizeof(buf) || cap < 2)
        return -1;
    /* Lexical: the directory may not exist yet (issue creates it). */
    size_t o = 0;
    char *save = NULL;
    for (char *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
        if (!strcmp(c, "."))
            continue;
        if (!strcmp(c, "..")) {
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--; /* the slash before the dropped component */
            continue;
        }
        size_t l = strlen(c);
        if (o + 1 + l + 1 > cap)
            return -1;
        out[o++] = '/';
        memcpy(out + o, c, l);
        o += l;
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = '\0';
    return 0;
}

int ca_rotate_due(int64_t not_after, int64_t now, int within_days, int force)
{
    return force || not_after <= now + (int64_t)within_days * 86400;
}

enum ca_crl_fresh ca_crl_freshness(int64_t next_update, int64_t now, int64_t warn_secs)
{
    if (next_update <= now)
        return CA_CRL_STALE;
    return next_update - now <= warn_secs ? CA_CRL_NEAR : CA_CRL_FRESH;
}

static void warnf(ca_warn_fn warn, void *arg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void warnf(ca_warn_fn warn, void *arg, const char *fmt, ...)
{
    if (!warn)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    warn(msg, arg);
}

static void fmt_date(int64_t t, char *buf, size_t cap)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int64_t asn1_to_unix(const ASN1_TIME *t)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

/* `path` absolute against the working directory; EINVAL naming it if it cannot be. */
static int absolute_here(const char *path, char *out, size_t cap, struct meshtls_err *err)
{
    char cwd[4096];
    if (path[0] != '/' && !getcwd(cwd, sizeof(cwd)))
        return meshtls_err_set(err, MESHTLS_EIO,
                               "cannot resolve '%s': the working directory is unknown (%s); "
                               "give an absolute path",
                               path, strerror(errno));
    if (ca_path_absolute(path[0] == '/' ? NULL : cwd, path, out, cap) != 0)
        return meshtls_err_set(err, MESHTLS_EINVAL, "path too long: %.64s...", path);
    return 0;
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
 * Sign a leaf for `svc` over `pub` with the intermediate `inter`/`ikey` of the CA in `dir`
 * (for messages) and trust domain `td`: the registration's SANs, serverAuth + clientAuth,
 * `days` capped at the intermediate's notAfter.  Outputs: *leaf (caller frees), its serial
 * (`serial`, 80 bytes), its PEM and the PEM of `pub` (new strings the caller frees), and
 * its validity in Unix seconds.
 */
static int leaf_sign(const char *dir, const char *td, X509 *inter, EVP_PKEY *ikey,
                     const struct ca_service *svc, EVP_PKEY *pub, int days, X509 **leaf,
                     char *serial, char **cert_pem, char **pub_pem, int64_t *nb, int64_t *na,
                     struct meshtls_err *err)
{
    int rc;
    struct mt_cert_spec spec = {.cn = svc->name,
                                .o = td,
                                .days = days,
                                .dns = (const char *const *)svc->dns,
                                .n_dns = svc->n_dns,
                                .ips = (const char *const *)svc->ips,
                                .n_ips = svc->n_ips,
                                .uri = svc->spiffe_id,
                                .eku_server = 1,
                                .eku_client = 1};
    *leaf = NULL;
    *cert_pem = *pub_pem = NULL;
    /* A leaf never outlives its issuer: cap it at the intermediate's notAfter. */
    int left_days = 0, left_secs = 0;
    if (!ASN1_TIME_diff(&left_days, &left_secs, NULL, X509_get0_notAfter(inter)) || left_days < 1)
        return meshtls_err_set(err, MESHTLS_EEXPIRED,
                               "the intermediate CA %s/intermediate.crt expires within a day; "
                               "re-sign it with the offline root before issuing",
                               dir);
    if (spec.days > left_days)
        spec.days = left_days;
    if ((rc = mt_cert_sign(&spec, pub, inter, ikey, leaf, err)))
        return rc;
    serial_hex(*leaf, serial, 80);
    {
        /* the leaf's SubjectPublicKeyInfo as it is: PEM_write_bio_PUBKEY(pub) would run
         * OpenSSL 3's key encoder again (11 % of an issuance, measured) for the same bytes */
        BIO *b = BIO_new(BIO_s_mem());
        unsigned char *der = NULL;
        char *d = NULL;
        int dl = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(*leaf), &der);
        long n = b && dl > 0 && PEM_write_bio(b, PEM_STRING_PUBLIC, "", der, dl)
                     ? BIO_get_mem_data(b, &d)
                     : 0;
        *pub_pem = n > 0 ? strndup(d, (size_t)n) : NULL;
        OPENSSL_free(der);
        BIO_free(b);
    }
    if (!*pub_pem || (rc = mt_cert_to_pem(*leaf, cert_pem, NULL, err))) {
        rc = rc ? rc : meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
        goto fail;
    }
    *nb = asn1_to_unix(X509_get0_notBefore(*leaf));
    *na = asn1_to_unix(X509_get0_notAfter(*leaf));
    return 0;
fail:
    X509_free(*leaf);
    free(*cert_pem);
    free(*pub_pem);
    *leaf = NULL;
    *cert_pem = *pub_pem = NULL;
    return rc;
}

/*
 * Within an open transaction: supersede the active certificates of `service` (recording
 * `serial` as their replacement) and insert the new row.  Strings borrowed.
 */
static int leaf_record(struct ca_store *st, const char *service, const char *serial, int64_t nb,
                       int64_t na, const char *out_dir, const char *cert_pem, const char *pub_pem,
                       int key_held, struct meshtls_err *err)
{
    struct ca_cert *old = NULL;
    size_t n_old = 0;
    int rc = ca_store_cert_list(st, service, "active", &old, &n_old, err);
    for (size_t i = 0; !rc && i < n_old; i++)
        rc = ca_store_cert_set_status(st, old[i].serial, "superseded", NULL, serial, err);
    ca_cert_list_free(old, n_old);
    if (rc)
        return rc;
    struct ca_cert row = {.serial = (char *)serial,
                          .service = (char *)service,
                          .not_before = nb,
                          .not_after = na,
                          .status = "active",
                          .out_dir = (char *)out_dir,
                          .cert_pem = (char *)cert_pem,
                          .pubkey_pem = (char *)pub_pem,
                          .key_held = key_held};
    return ca_store_cert_insert(st, &row, err);
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
    char p[4096], serial[80];
    int64_t nb = 0, na = 0;
    if ((rc = leaf_sign(ca->dir, ca->td, ca->inter, ca->inter_key, svc, pub, days, &leaf, serial,
                        &cert_pem, &pub_pem, &nb, &na, err)) ||
        (rc = leaf_record(ca->store, svc->name, serial, nb, na, out_dir, cert_pem, pub_pem,
                          key != NULL, err)))
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
    /* Stored absolute: rotate runs from cron, in another working directory. */
    char abs_out[4096];
    if ((rc = absolute_here(out_dir, abs_out, sizeof(abs_out), err)))
        return rc;
    out_dir = abs_out;
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

/* ---- signing for a server ----------------------------------------------------------- */

/*
 * Measured with callgrind on one /api/v1/renew (the server calling ca_issue): 46 % of
 * the instructions went to ca_open() (store open and migration check, PEM parsing of
 * root.crt, intermediate.crt and the key), 13 % to parsing and checking the CSR a second
 * time, and the I/O was the fsyncs of the files staged into DIR/served/SERVICE plus the
 * store's own.  A server therefore parses the CA once (this object), keeps its store
 * connections open, and records only the row.
 */
struct ca_signer {
    atomic_int refs;
    char dir[2048];
    char *td;
    enum mt_key_type kt;
    X509 *root, *inter;
    EVP_PKEY *inter_key;
    char *inter_pem;
    struct stat crt_st, key_st; /* of intermediate.crt/.key when loaded: see ca_signer_stale */
};

static void signer_free(struct ca_signer *s)
{
    free(s->td);
    X509_free(s->root);
    X509_free(s->inter);
    EVP_PKEY_free(s->inter_key);
    free(s->inter_pem);
    free(s);
}

int ca_signer_load(const char *dir, struct ca_store *st, struct ca_signer **out,
                   struct meshtls_err *err)
{
    int rc;
    char p[4096], *kt = NULL;
    struct ca_signer *s = calloc(1, sizeof(*s));
    if (!s)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    atomic_init(&s->refs, 1);
    snprintf(s->dir, sizeof(s->dir), "%s", dir);
    if ((rc = ca_store_meta_get(st, "trust_domain", &s->td, err)) ||
        (rc = ca_store_meta_get(st, "key_type", &kt, err)) ||
        (rc = mt_key_type_parse(kt, &s->kt, err)))
        goto out;
    /* stat before reading: a file replaced in between is seen as stale next time */
    path_of(p, sizeof(p), dir, "intermediate.crt");
    if (stat(p, &s->crt_st) != 0) {
        rc = meshtls_err_set(err, MESHTLS_ENOENT, "cannot read %s: %s", p, strerror(errno));
        goto out;
    }
    if ((rc = read_one_cert(p, &s->inter, err)) ||
        (rc = mt_cert_to_pem(s->inter, &s->inter_pem, NULL, err)))
        goto out;
    path_of(p, sizeof(p), dir, "intermediate.key");
    if (stat(p, &s->key_st) != 0) {
        rc = meshtls_err_set(err, MESHTLS_ENOENT, "cannot read %s: %s", p, strerror(errno));
        goto out;
    }
    if ((rc = meshtls_pem_read_key(p, &s->inter_key, err)))
        goto out;
    if (X509_check_private_key(s->inter, s->inter_key) != 1) {
        ERR_clear_error();
        rc = meshtls_err_set(err, MESHTLS_EDENIED,
                             "%s/intermediate.key is not the key of %s/intermediate.crt (caught "
                             "between the two renames of renew-intermediate?); load again",
                             dir, dir);
        goto out;
    }
    path_of(p, sizeof(p), dir, "root.crt");
    rc = read_one_cert(p, &s->root, err);
out:
    free(kt);
    if (rc)
        signer_free(s);
    else
        *out = s;
    return rc;
}

struct ca_signer *ca_signer_ref(struct ca_signer *s)
{
    atomic_fetch_add(&s->refs, 1);
    return s;
}

void ca_signer_unref(struct ca_signer *s)
{
    if (s && atomic_fetch_sub(&s->refs, 1) == 1)
        signer_free(s);
}

static int same_file(const struct stat *a, const char *path)
{
    struct stat b;
    if (stat(path, &b) != 0)
        return 1; /* mid-rename or gone: keep signing with what is loaded */
    return a->st_ino == b.st_ino && a->st_dev == b.st_dev && a->st_size == b.st_size &&
           a->st_mtim.tv_sec == b.st_mtim.tv_sec && a->st_mtim.tv_nsec == b.st_mtim.tv_nsec;
}

int ca_signer_stale(const struct ca_signer *s)
{
    char p[4096];
    path_of(p, sizeof(p), s->dir, "intermediate.crt");
    if (!same_file(&s->crt_st, p))
        return 1;
    path_of(p, sizeof(p), s->dir, "intermediate.key");
    return !same_file(&s->key_st, p);
}

const char *ca_signer_inter_pem(const struct ca_signer *s)
{
    return s->inter_pem;
}

void ca_signed_clear(struct ca_signed *r)
{
    free(r->service);
    free(r->out_dir);
    free(r->cert_pem);
    free(r->pub_pem);
    memset(r, 0, sizeof(*r));
}

int ca_sign_leaf(struct ca_signer *s, const struct ca_service *svc, X509_REQ *req, int days,
                 const char *out_dir, struct ca_signed *out, struct meshtls_err *err)
{
    int rc;
    X509 *leaf = NULL;
    memset(out, 0, sizeof(*out));
    if (days < 1 || days > CA_LEAF_DAYS_MAX)
        return meshtls_err_set(err, MESHTLS_EINVAL, "--days %d: expected 1 to %d", days,
                               CA_LEAF_DAYS_MAX);
    EVP_PKEY *pub = X509_REQ_get0_pubkey(req);
    if (!pub)
        return meshtls_err_set(err, MESHTLS_EPARSE, "the CSR carries no readable public key");
    if ((rc = leaf_sign(s->dir, s->td, s->inter, s->inter_key, svc, pub, days, &leaf, out->serial,
                        &out->cert_pem, &out->pub_pem, &out->not_before, &out->not_after, err)))
        goto out;
    if (!(out->service = strdup(svc->name)) || !(out->out_dir = strdup(out_dir)))
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
out:
    X509_free(leaf);
    if (rc)
        ca_signed_clear(out);
    return rc;
}

int ca_record_signed(struct ca_store *st, const struct ca_signed *const *v, size_t n,
                     struct meshtls_err *err)
{
    int rc = ca_store_begin(st, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < n && !rc; i++) {
        const struct ca_signed *c = v[i];
        if (!(rc = leaf_record(st, c->service, c->serial, c->not_before, c->not_after, c->out_dir,
                               c->cert_pem, c->pub_pem, 0, err)))
            rc = ca_store_audit(st, "issue", c->service, c->serial, "signed CSR", err);
    }
    if (rc || (rc = ca_store_commit(st, err)))
        ca_store_rollback(st);
    return rc;
}

/*
 * Within a transaction: re-issue `old` under its service's current
 * registration, into the directory it was issued to, through `stg` (see
 * issue_locked()).  A new key if we held the old one; for a CSR-issued
 * certificate the same public key is re-signed (the key is the service's).
 */
static int reissue(struct ca *ca, const struct ca_cert *old, const char *out_dir, int days,
                   struct ca_stage *stg, char *serial_out, struct meshtls_err *err)
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
        rc = issue_locked(ca, &svc, pub, key, out_dir, days, stg, serial_out, err);
    if (!old->key_held)
        EVP_PKEY_free(pub);
    EVP_PKEY_free(key);
    ca_service_clear(&svc);
    return rc;
}

/*
 * Where `c`'s files go, as an absolute path in `abs`.  A relative path (as
 * stored before meshtls kept absolute ones) is resolved against the working
 * directory only if the certificate there is `c` itself; *migrate is then
 * set so that the caller records it.  A directory that no longer exists is
 * refused: writing there would create a directory nobody reads (the outage
 * of issue 9).
 */
static int resolve_out_dir(struct ca *ca, const struct ca_cert *c, char *abs, size_t cap,
                           int *migrate, struct meshtls_err *err)
{
    const char *od = c->out_dir && *c->out_dir ? c->out_dir : ".";
    int rc;
    struct stat st;
    *migrate = 0;
    if (od[0] != '/') {
        char cwd[4096] = "?", crt[4200], serial[80] = "";
        if (!getcwd(cwd, sizeof(cwd)) || ca_path_absolute(cwd, od, abs, cap) != 0)
            return meshtls_err_set(err, MESHTLS_ENOENT,
                                   "service %s: certificate %s was issued with the relative "
                                   "directory '%s', which cannot be resolved here; re-issue it "
                                   "with an absolute path: meshtls ca issue --dir %s %s --out "
                                   "/ABSOLUTE/DIR",
                                   c->service, c->serial, od, ca->dir, c->service);
        snprintf(crt, sizeof(crt), "%s/%s.crt", abs, c->service);
        X509 *x = NULL;
        if (read_one_cert(crt, &x, NULL) == 0 && x) {
            serial_hex(x, serial, sizeof(serial));
            X509_free(x);
        }
        if (strcmp(serial, c->serial) != 0)
            return meshtls_err_set(err, MESHTLS_ENOENT,
                                   "service %s: relative directory '%s' (stored by an older "
                                   "meshtls): %s is not certificate %s; run rotate from where "
                                   "'ca issue' ran, or re-issue: meshtls ca issue --dir %s %s "
                                   "--out /ABSOLUTE/DIR",
                                   c->service, od, crt, c->serial, ca->dir, c->service);
        *migrate = 1;
        return 0;
    }
    if ((rc = ca_path_absolute(NULL, od, abs, cap)) != 0)
        return meshtls_err_set(err, MESHTLS_EINVAL, "stored directory too long: %.64s...", od);
    if (stat(abs, &st) != 0 || !S_ISDIR(st.st_mode))
        return meshtls_err_set(err, MESHTLS_ENOENT,
                               "service %s: certificate %s goes to %s, which no longer exists "
                               "(or is not a directory); nothing was written. If the service "
                               "still reads it there: mkdir -p %s and rotate again; if it "
                               "moved: meshtls ca issue --dir %s %s --out NEWDIR",
                               c->service, c->serial, abs, abs, ca->dir, c->service);
    return 0;
}

/* Warn about what the CA itself is close to: root.crl's nextUpdate, the intermediate's end. */
static void warn_ca_health(struct ca *ca, ca_warn_fn warn, void *arg);

int ca_rotate(const char *dir, const struct ca_rotate_opts *o, int *count, int *failed,
              struct meshtls_err *err)
{
    int rc;
    struct ca ca;
    struct ca_cert *v = NULL;
    size_t nv = 0;
    char first[1024] = "";
    *count = 0;
    *failed = 0;
    if (o->within_days < 0 || o->within_days > 3650)
        return meshtls_err_set(err, MESHTLS_EINVAL, "--within-days %d: expected 0 to 3650",
                               o->within_days);
    if (o->days < 1 || o->days > CA_LEAF_DAYS_MAX || (!o->force && o->days <= o->within_days))
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "--days %d must be longer than --within-days %d (and at most "
                               "%d), or the new certificates would be due again at once",
                               o->days, o->within_days, CA_LEAF_DAYS_MAX);
    if ((rc = ca_open(&ca, dir, 1, err)))
        return rc;
    for (size_t i = 0; i < o->n; i++) {
        struct ca_service svc = {0};
        rc = ca_store_service_get(ca.store, o->services[i], &svc, err);
        ca_service_clear(&svc);
        if (rc)
            goto out;
    }
    warn_ca_health(&ca, o->warn, o->arg);
    if ((rc = ca_store_cert_list(ca.store, NULL, "active", &v, &nv, err)))
        goto out;
    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; i < nv; i++) {
        int wanted = o->n == 0;
        for (size_t j = 0; j < o->n; j++)
            wanted |= !strcmp(o->services[j], v[i].service);
        if (!wanted || !ca_rotate_due(v[i].not_after, now, o->within_days, o->force))
            continue;
        if (o->flag && o->flag(&v[i], o->arg)) {
            /* recorded at every run while it stays due: the audit log shows how long the
             * holder was told and did not renew */
            char detail[80];
            struct tm tm;
            time_t na = (time_t)v[i].not_after;
            gmtime_r(&na, &tm);
            strftime(detail, sizeof(detail), "not_after=%Y-%m-%dT%H:%M:%SZ", &tm);
            if ((rc = ca_store_begin(ca.store, err)))
                goto out;
            if ((rc = ca_store_audit(ca.store, "rotation-needed", v[i].service, v[i].serial, detail,
                                     err)) ||
                (rc = ca_store_commit(ca.store, err))) {
                ca_store_rollback(ca.store);
                goto out;
            }
            if (o->flagged)
                (*o->flagged)++;
            continue;
        }
        char serial[80], abs[4096];
        int migrate = 0;
        struct meshtls_err e2 = MESHTLS_ERR_INIT;
        if (resolve_out_dir(&ca, &v[i], abs, sizeof(abs), &migrate, &e2)) {
            /* Skip it and go on: one moved service must not hold back the others' rotation. */
            warnf(o->warn, o->arg, "not rotated: %s", e2.msg);
            if (!*first)
                snprintf(first, sizeof(first), "%s", e2.msg);
            (*failed)++;
            continue;
        }
        if ((rc = ca_store_begin(ca.store, err)))
            goto out;
        struct ca_stage stg = CA_STAGE_INIT;
        if ((migrate && (rc = ca_store_cert_set_out_dir(ca.store, v[i].serial, abs, err))) ||
            (rc = reissue(&ca, &v[i], abs, o->days, &stg, serial, err)) ||
            (rc = ca_store_audit(ca.store, o->force ? "rotate-force" : "rotate", v[i].service,
                                 serial, v[i].serial, err)) ||
            (rc = ca_store_commit(ca.store, err))) {
            ca_store_rollback(ca.store);
            ca_stage_undo(&stg);
            goto out;
        }
        ca_stage_done(&stg);
        if (migrate)
            warnf(o->warn, o->arg,
                  "service %s: the relative directory '%s' stored for it (by an older "
                  "meshtls) is now recorded as %s",
                  v[i].service, v[i].out_dir ? v[i].out_dir : ".", abs);
        (*count)++;
        if (o->report)
            o->report(v[i].service, v[i].serial, serial, abs, o->arg);
    }
    if (*failed)
        rc = meshtls_err_set(err, MESHTLS_ENOENT,
                             "%d certificate(s) not rotated (the others were): %s%s", *failed,
                             first, *failed > 1 ? " (and more above)" : "");
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

/*
 * Within an open transaction: revoke the live ones of `v` (skip revoked and
 * expired), calling nothing yet; *count = revoked, *last = the last one.
 */
static int revoke_locked(struct ca *ca, struct ca_cert *v, size_t nv, const char *reason,
                         int *count, struct ca_cert **last, struct meshtls_err *err)
{
    int rc = 0;
    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; i < nv; i++) {
        if (!strcmp(v[i].status, "revoked") || v[i].not_after < now)
            continue;
        if ((rc = ca_store_cert_set_status(ca->store, v[i].serial, "revoked", reason, NULL, err)) ||
            (rc = ca_store_audit(ca->store, "revoke", v[i].service, v[i].serial, reason, err)))
            return rc;
        v[i].revoked_at = 1; /* marks it for the callback below */
        (*count)++;
        *last = &v[i];
    }
    return 0;
}

static int crl_write_locked(struct ca *ca, const char *out_path, int *revoked, ca_warn_fn warn,
                            void *arg, struct meshtls_err *err);

/* After a committed revocation: write the CRL where it is published, if a place is known. */
static int publish_crl(struct ca *ca, char *written, size_t cap, ca_warn_fn warn, void *arg,
                       struct meshtls_err *err)
{
    char *where = NULL;
    int n = 0, rc;
    if (written && cap)
        written[0] = '\0';
    if ((rc = ca_store_meta_find(ca->store, "crl_out", &where, err)) || !where)
        return rc;
    struct meshtls_err e2 = MESHTLS_ERR_INIT;
    if ((rc = crl_write_locked(ca, where, &n, warn, arg, &e2)))
        meshtls_err_set(err, rc,
                        "the revocation is recorded, but the CRL could not be written to %s: "
                        "%s; fix that and run 'meshtls ca crl --dir %s'",
                        where, e2.msg, ca->dir);
    else if (written)
        snprintf(written, cap, "%s", where);
    free(where);
    return rc;
}

int ca_revoke(const char *dir, const struct ca_revoke_opts *o, int *count, char *crl_written,
              size_t cap, struct meshtls_err *err)
{
    int rc;
    struct ca ca;
    struct ca_cert *v = NULL;
    size_t nv = 0;
    char want[80] = "";
    const char *reason = o->reason ? o->reason : "unspecified";
    *count = 0;
    if (crl_written && cap)
        crl_written[0] = '\0';
    if (ca_reason_parse(reason) < 0)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "--reason '%s': expected unspecified, keyCompromise, "
                               "caCompromise, affiliationChanged, superseded or "
                               "cessationOfOperation",
                               reason);
    if (o->serial && ca_serial_normalize(o->serial, want, sizeof(want)) != 0)
        return meshtls_err_set(err, MESHTLS_EINVAL, "--serial '%s' is not a hex serial number",
                               o->serial);
    if ((rc = ca_open(&ca, dir, 1, err)))
        return rc;
    if (o->service) {
        struct ca_service svc = {0};
        rc = ca_store_service_get(ca.store, o->service, &svc, err);
        ca_service_clear(&svc);
        if (rc || (rc = ca_store_cert_list(ca.store, o->service, NULL, &v, &nv, err)))
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
    for (size_t i = 0; i < nv; i++)
        v[i].revoked_at = 0; /* reused as "revoked now" by revoke_locked() */
    if ((rc = ca_store_begin(ca.store, err)))
        goto out;
    struct ca_cert *last = NULL;
    rc = revoke_locked(&ca, v, nv, reason, count, &last, err);
    if (!rc && *count == 0)
        rc = meshtls_err_set(err, MESHTLS_ENOENT,
                             "service '%s' has no unexpired, unrevoked certificate to revoke",
                             o->service ? o->service : want);
    char new_serial[80] = "", abs[4096] = "";
    int migrate = 0;
    struct ca_stage stg = CA_STAGE_INIT;
    if (!rc && o->replace && last &&
        !(rc = resolve_out_dir(&ca, last, abs, sizeof(abs), &migrate, err)) &&
        !(rc = reissue(&ca, last, abs, CA_LEAF_DAYS_DEFAULT, &stg, new_serial, err)) &&
        !(rc = ca_store_cert_set_status(ca.store, last->serial, "revoked", NULL, new_serial, err)))
        rc = ca_store_audit(ca.store, "replace", last->service, new_serial, last->serial, err);
    if (!rc && migrate)
        rc = ca_store_cert_set_out_dir(ca.store, last->serial, abs, err);
    if (!rc)
        rc = ca_store_commit(ca.store, err);
    if (rc) {
        ca_store_rollback(ca.store);
        ca_stage_undo(&stg);
        *count = 0;
        goto out;
    }
    ca_stage_done(&stg);
    for (size_t i = 0; i < nv && o->revoked; i++)
        if (v[i].revoked_at == 1)
            o->revoked(v[i].service, v[i].serial, o->arg);
    if (o->report && o->replace && last)
        o->report(last->service, last->serial, new_serial, abs, o->arg);
    if (!o->no_publish)
        rc = publish_crl(&ca, crl_written, cap, o->warn, o->arg, err);
out:
    ca_cert_list_free(v, nv);
    ca_close(&ca);
    return rc;
}

int ca_unregister(const char *dir, const char *service, int revoke, ca_serial_fn revoked, void *arg,
                  int *count, char *crl_written, size_t cap, struct meshtls_err *err)
{
    int rc;
    struct ca ca;
    struct ca_cert *v = NULL;
    size_t nv = 0;
    struct ca_service svc = {0};
    *count = 0;
    if (crl_written && cap)
        crl_written[0] = '\0';
    if ((rc = ca_open(&ca, dir, revoke, err)))
        return rc;
    if ((rc = ca_store_service_get(ca.store, service, &svc, err)) ||
        (rc = ca_store_cert_list(ca.store, service, NULL, &v, &nv, err)))
        goto out;
    int64_t now = (int64_t)time(NULL);
    char live[512] = "";
    size_t n_live = 0, used = 0;
    for (size_t i = 0; i < nv; i++) {
        v[i].revoked_at = 0;
        if (!strcmp(v[i].status, "revoked") || v[i].not_after < now)
            continue;
        n_live++;
        int w = snprintf(live + used, sizeof(live) - used, "%s%s", used ? ", " : "", v[i].serial);
        if (w > 0 && (size_t)w < sizeof(live) - used)
            used += (size_t)w;
    }
    /* Superseded certificates count: they still authenticate until they expire. */
    if (n_live && !revoke) {
        rc = meshtls_err_set(err, MESHTLS_EEXIST,
                             "service %s still has %zu valid certificate(s) (%s), which would "
                             "keep authenticating after it is unregistered; revoke them with "
                             "it: meshtls ca unregister --dir %s %s --revoke",
                             service, n_live, live, dir, service);
        goto out;
    }
    if ((rc = ca_store_begin(ca.store, err)))
        goto out;
    struct ca_cert *last = NULL;
    if ((rc = revoke_locked(&ca, v, nv, "cessationOfOperation", count, &last, err)) ||
        (rc = ca_store_service_unregister(ca.store, service, err)) ||
        (rc = ca_store_audit(ca.store, "unregister", service, NULL, svc.spiffe_id, err)) ||
        (rc = ca_store_commit(ca.store, err))) {
        ca_store_rollback(ca.store);
        *count = 0;
        goto out;
    }
    for (size_t i = 0; i < nv && revoked; i++)
        if (v[i].revoked_at == 1)
            revoked(v[i].service, v[i].serial, arg);
    if (*count)
        rc = publish_crl(&ca, crl_written, cap, NULL, NULL, err);
out:
    ca_service_clear(&svc);
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

/* A CRL in PEM appended to `b`. */
static int crl_pem(BIO *b, X509_CRL *crl, struct meshtls_err *err)
{
    return PEM_write_bio_X509_CRL(b, crl)
               ? 0
               : meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot encode the CRL");
}

#define CA_RETIRED_MAX 16

/* The intermediates retired by renew-intermediate --new-key (meta retired_intermediates)
 * that are still valid: certs[i] with keys[i], *n of them (owned by the caller). */
static int load_retired(struct ca *ca, X509 **certs, EVP_PKEY **keys, int *n,
                        struct meshtls_err *err)
{
    char *list = NULL;
    int rc = ca_store_meta_find(ca->store, "retired_intermediates", &list, err);
    int64_t now = (int64_t)time(NULL);
    char *save = NULL;
    *n = 0;
    for (char *sn = list ? strtok_r(list, "\n", &save) : NULL; sn && !rc && *n < CA_RETIRED_MAX;
         sn = strtok_r(NULL, "\n", &save)) {
        char p[4200];
        X509 *x = NULL;
        EVP_PKEY *k = NULL;
        snprintf(p, sizeof(p), "%s/intermediate-%s.crt", ca->dir, sn);
        if ((rc = read_one_cert(p, &x, err)))
            break;
        if (asn1_to_unix(X509_get0_notAfter(x)) <= now) { /* its leaves have expired too */
            X509_free(x);
            continue;
        }
        snprintf(p, sizeof(p), "%s/intermediate-%s.key", ca->dir, sn);
        if ((rc = meshtls_pem_read_key(p, &k, err))) {
            X509_free(x);
            break;
        }
        certs[*n] = x;
        keys[(*n)++] = k;
    }
    free(list);
    return rc;
}

/*
 * Check root.crl's nextUpdate and the intermediate's notAfter; warn ahead.
 * A root CRL past nextUpdate makes every proxy run with --crl refuse every
 * client (docs/PKI.md "When a CRL goes stale"): that must never be a surprise.
 */
static void warn_ca_health(struct ca *ca, ca_warn_fn warn, void *arg)
{
    char p[4200], when[32];
    STACK_OF(X509_CRL) *crls = NULL;
    int64_t now = (int64_t)time(NULL);
    snprintf(p, sizeof(p), "%s/root.crl", ca->dir);
    if (meshtls_pem_read_crls(p, &crls, NULL) == 0 && sk_X509_CRL_num(crls) > 0) {
        int64_t nu = asn1_to_unix(X509_CRL_get0_nextUpdate(sk_X509_CRL_value(crls, 0)));
        fmt_date(nu, when, sizeof(when));
        enum ca_crl_fresh f = ca_crl_freshness(nu, now, (int64_t)CA_ROOT_CRL_WARN_DAYS * 86400);
        if (f != CA_CRL_FRESH)
            warnf(warn, arg,
                  "the root's CRL %s %s %s (%lld days): every 'meshtls proxy server --crl' "
                  "refuses clients once a CRL in its file is past nextUpdate; bring the root key "
                  "back and run 'meshtls ca root-crl --dir %s --root-key FILE' (docs/PKI.md, "
                  "the ceremony)",
                  p, f == CA_CRL_STALE ? "went stale on" : "goes stale on", when,
                  (long long)((nu - now) / 86400), ca->dir);
    }
    sk_X509_CRL_pop_free(crls, X509_CRL_free);
    int64_t na = asn1_to_unix(X509_get0_notAfter(ca->inter));
    if (na - now < (int64_t)90 * 86400) {
        fmt_date(na, when, sizeof(when));
        warnf(warn, arg,
              "the intermediate CA %s/intermediate.crt expires on %s; leaves are capped at that "
              "date: renew it with the root key ('meshtls ca renew-intermediate --dir %s "
              "--root-key FILE')",
              ca->dir, when, ca->dir);
    }
}

/*
 * Write the CRL bundle to `out_path` in its own transaction: a CRL per live
 * intermediate (current first), each listing the revoked leaves it issued,
 * then root.crl.  Each CRL's number comes from the one crl_number counter,
 * so it increases for every issuer.
 */
static int crl_write_locked(struct ca *ca, const char *out_path, int *revoked, ca_warn_fn warn,
                            void *arg, struct meshtls_err *err)
{
    int rc;
    struct ca_cert *v = NULL;
    size_t nv = 0;
    char *num = NULL, *root_crl = NULL, p[4096];
    size_t root_len = 0;
    BIO *b = NULL;
    X509 *ret[CA_RETIRED_MAX];
    EVP_PKEY *ret_keys[CA_RETIRED_MAX];
    int n_ret = 0;
    X509 **leaves = NULL;
    struct ca_cert *sub = NULL;
    warn_ca_health(ca, warn, arg);
    path_of(p, sizeof(p), ca->dir, "root.crl");
    if ((rc = meshtls_read_file(p, MESHTLS_PEM_FILE_MAX, &root_crl, &root_len, err)))
        goto out;
    if ((rc = ca_store_begin(ca->store, err)))
        goto out;
    if ((rc = ca_store_meta_get(ca->store, "crl_number", &num, err)) ||
        (rc = ca_store_cert_list(ca->store, NULL, "revoked", &v, &nv, err)) ||
        (rc = load_retired(ca, ret, ret_keys, &n_ret, err)))
        goto fail;
    int64_t n;
    if (mt_parse_i64(num, 0, INT64_MAX - 1, &n) != 0) {
        rc = meshtls_err_set(err, MESHTLS_ESTORE,
                             "store %s: crl_number '%.32s' is not a number; the store was "
                             "edited by hand or is damaged: restore it from a backup",
                             ca->dir, num);
        goto fail;
    }
    n++;
    char nbuf[32];
    snprintf(nbuf, sizeof(nbuf), "%lld", (long long)n);
    if (!(b = BIO_new(BIO_s_mem())) || (nv && !(leaves = calloc(nv, sizeof(*leaves)))) ||
        (nv && !(sub = calloc(nv, sizeof(*sub))))) {
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
        goto fail;
    }
    /* Which intermediate issued each revoked leaf matters only when a retired one still has
     * leaves out: parsing 100,000 certificates was 91 % of a CRL's cost (docs/PERFORMANCE.md),
     * and with the current intermediate alone every entry goes on its CRL (leaves[i] NULL). */
    for (size_t i = 0; n_ret > 0 && i < nv; i++) {
        BIO *cb = BIO_new_mem_buf(v[i].cert_pem, -1);
        leaves[i] = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
        BIO_free(cb);
    }
    ERR_clear_error();
    /* issuer 0 is the current intermediate; it also takes what matches no retired one */
    int n_iss = 1 + n_ret;
    for (int k = 0; k < n_iss && !rc; k++) {
        X509 *iss = k ? ret[k - 1] : ca->inter;
        EVP_PKEY *key = k ? ret_keys[k - 1] : ca->inter_key;
        size_t ns = 0;
        for (size_t i = 0; i < nv; i++) {
            int mine = leaves[i] && X509_check_issued(iss, leaves[i]) == X509_V_OK;
            if (k == 0 && !mine) { /* unparsable or from no retired one: the current CRL */
                mine = 1;
                for (int j = 0; j < n_ret; j++)
                    if (leaves[i] && X509_check_issued(ret[j], leaves[i]) == X509_V_OK)
                        mine = 0;
            }
            if (mine)
                sub[ns++] = v[i];
        }
        X509_CRL *crl = NULL;
        if (!(rc = sign_crl(iss, key, n, CA_CRL_DAYS, sub, ns, &crl, err)))
            rc = crl_pem(b, crl, err);
        X509_CRL_free(crl);
    }
    if (rc)
        goto fail;
    if ((rc = ca_store_meta_set(ca->store, "crl_number", nbuf, err)) ||
        (rc = ca_store_audit(ca->store, "crl", NULL, NULL, nbuf, err)))
        goto fail;
    if (BIO_write(b, root_crl, (int)root_len) <= 0) {
        rc = meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot encode the CRL");
        goto fail;
    }
    char *data = NULL;
    long len = BIO_get_mem_data(b, &data);
    if ((rc = meshtls_write_file_atomic(out_path, data, (size_t)len, 0644, 0, err)) ||
        (rc = ca_store_commit(ca->store, err)))
        goto fail;
    *revoked = (int)nv;
    goto out;
fail:
    ca_store_rollback(ca->store);
out:
    for (size_t i = 0; leaves && i < nv; i++)
        X509_free(leaves[i]);
    free(leaves);
    free(sub);
    for (int k = 0; k < n_ret; k++) {
        X509_free(ret[k]);
        EVP_PKEY_free(ret_keys[k]);
    }
    BIO_free(b);
    free(num);
    free(root_crl);
    ca_cert_list_free(v, nv);
    return rc;
}

int ca_crl(const char *dir, const char *out, int *revoked, char *written, size_t cap,
           ca_warn_fn warn, void *arg, struct meshtls_err *err)
{
    int rc;
    struct ca ca;
    char abs[4096], *remembered = NULL;
    if (out && (rc = absolute_here(out, abs, sizeof(abs), err)))
        return rc;
    if ((rc = ca_open(&ca, dir, 1, err)))
        return rc;
    if (!out) {
        if ((rc = ca_store_meta_find(ca.store, "crl_out", &remembered, err)))
            goto out;
        if (!remembered) {
            rc = meshtls_err_set(err, MESHTLS_EINVAL,
                                 "no --out FILE given, and this CA has no CRL path yet: give "
                                 "--out FILE once (it is remembered for crl and revoke)");
            goto out;
        }
        snprintf(abs, sizeof(abs), "%s", remembered);
    }
    if ((rc = crl_write_locked(&ca, abs, revoked, warn, arg, err)))
        goto out;
    if (out) { /* remembered after a successful write: revoke publishes here from now on */
        if ((rc = ca_store_begin(ca.store, err)))
            goto out;
        if ((rc = ca_store_meta_set(ca.store, "crl_out", abs, err)) ||
            (rc = ca_store_commit(ca.store, err))) {
            ca_store_rollback(ca.store);
            goto out;
        }
    }
    if (written)
        snprintf(written, cap, "%s", abs);
out:
    free(remembered);
    ca_close(&ca);
    return rc;
}

/* ---- the offline root's duties ------------------------------------------------ */

/* The root key at `path`, checked against root.crt. */
static int load_root_key(struct ca *ca, const char *path, EVP_PKEY **out, struct meshtls_err *err)
{
    int rc = meshtls_pem_read_key(path, out, err);
    if (rc)
        return rc;
    if (X509_check_private_key(ca->root, *out) != 1) {
        ERR_clear_error();
        EVP_PKEY_free(*out);
        *out = NULL;
        return meshtls_err_set(err, MESHTLS_EDENIED,
                               "--root-key %s is not the key of %s/root.crt; bring back the "
                               "root key made by 'ca init' for this CA",
                               path, ca->dir);
    }
    return 0;
}

int ca_renew_intermediate(const char *dir, const char *root_key_path, int new_key, int days,
                          char *serial_out, ca_warn_fn warn, void *arg, struct meshtls_err *err)
{
    int rc;
    struct ca ca;
    EVP_PKEY *rk = NULL, *ik = NULL;
    X509 *ni = NULL;
    char *gen = NULL, *retired = NULL, *kpem = NULL;
    size_t klen = 0;
    char old_serial[80] = "", cn[400] = "", p[4200], when[32];
    struct ca_stage stg = CA_STAGE_INIT;
    if (days < 1 || days > CA_ROOT_DAYS)
        return meshtls_err_set(err, MESHTLS_EINVAL, "--days %d: expected 1 to %d", days,
                               CA_ROOT_DAYS);
    if ((rc = ca_open(&ca, dir, 1, err)))
        return rc;
    if ((rc = load_root_key(&ca, root_key_path, &rk, err)))
        goto out;
    serial_hex(ca.inter, old_serial, sizeof(old_serial));
    int left_days = 0, left_secs = 0;
    if (!ASN1_TIME_diff(&left_days, &left_secs, NULL, X509_get0_notAfter(ca.root)) ||
        left_days < 2) {
        rc = meshtls_err_set(err, MESHTLS_EEXPIRED,
                             "the root CA %s/root.crt expires within two days: a new root (and "
                             "trust bundle) is needed, not a renewed intermediate",
                             dir);
        goto out;
    }
    if (days > left_days - 1)
        days = left_days - 1; /* an intermediate never outlives the root */
    if ((rc = ca_store_meta_find(ca.store, "intermediate_generation", &gen, err)))
        goto out;
    long g = 1;
    if (gen) {
        int64_t gv = 1;
        if (mt_parse_i64(gen, 1, 1000000, &gv) == 0)
            g = (long)gv;
    }
    if (new_key) {
        /* A new name too: leaves and CRLs of the two intermediates never get mixed up. */
        snprintf(cn, sizeof(cn), "%s Intermediate CA G%ld", ca.td, g + 1);
        if ((rc = mt_key_generate(ca.kt, &ik, err)))
            goto out;
    } else {
        X509_NAME_get_text_by_NID(X509_get_subject_name(ca.inter), NID_commonName, cn, sizeof(cn));
        ik = ca.inter_key;
        EVP_PKEY_up_ref(ik);
    }
    struct mt_cert_spec is = {.cn = cn, .o = "meshtls", .is_ca = 1, .pathlen = 0, .days = days};
    if ((rc = mt_cert_sign(&is, ik, ca.root, rk, &ni, err)))
        goto out;
    serial_hex(ni, serial_out, 80);
    if ((rc = ca_store_begin(ca.store, err)))
        goto out;
    /* the old certificate (and key) kept under their serial, then the new pair */
    snprintf(p, sizeof(p), "%s/intermediate-%s.crt", dir, old_serial);
    if ((rc = stage_cert(&stg, p, ca.inter, NULL, err)))
        goto fail;
    if (new_key) {
        snprintf(p, sizeof(p), "%s/intermediate-%s.key", dir, old_serial);
        if ((rc = mt_key_to_pem(ca.inter_key, &kpem, &klen, err)) ||
            (rc = ca_stage_add(&stg, p, kpem, klen, 0600, err)))
            goto fail;
        path_of(p, sizeof(p), dir, "intermediate.key");
        if ((rc = stage_key(&stg, p, ik, err)))
            goto fail;
    }
    path_of(p, sizeof(p), dir, "intermediate.crt");
    if ((rc = stage_cert(&stg, p, ni, NULL, err)))
        goto fail;
    char gbuf[32], detail[256];
    snprintf(gbuf, sizeof(gbuf), "%ld", g + 1);
    snprintf(detail, sizeof(detail), "%s key; replaces %s", new_key ? "new" : "same", old_serial);
    if (new_key) {
        if ((rc = ca_store_meta_find(ca.store, "retired_intermediates", &retired, err)))
            goto fail;
        char list[4096];
        snprintf(list, sizeof(list), "%s%s%s", retired ? retired : "", retired ? "\n" : "",
                 old_serial);
        if ((rc = ca_store_meta_set(ca.store, "retired_intermediates", list, err)) ||
            (rc = ca_store_meta_set(ca.store, "intermediate_generation", gbuf, err)))
            goto fail;
    }
    if ((rc = ca_store_audit(ca.store, "renew-intermediate", NULL, serial_out, detail, err)) ||
        (rc = ca_stage_apply(&stg, err)) || (rc = ca_store_commit(ca.store, err)))
        goto fail;
    ca_stage_done(&stg);
    fmt_date(asn1_to_unix(X509_get0_notAfter(ca.inter)), when, sizeof(when));
    warnf(warn, arg,
          "every service's chain file (SERVICE.crt) still carries the previous intermediate "
          "%s, valid until %s%s; move them all to the new one before then: meshtls ca rotate "
          "--dir %s --force",
          old_serial, when,
          new_key ? ", which keeps verifying (and has its own CRL in the bundle) until then" : "",
          dir);
    /* republish: the bundle gains (or renews) the new intermediate's CRL */
    {
        char *where = NULL;
        int nrev = 0;
        ca_close(&ca);
        if ((rc = ca_open(&ca, dir, 1, err)) ||
            (rc = ca_store_meta_find(ca.store, "crl_out", &where, err)))
            goto out;
        if (where)
            rc = crl_write_locked(&ca, where, &nrev, warn, arg, err);
        free(where);
    }
    goto out;
fail:
    ca_store_rollback(ca.store);
    ca_stage_undo(&stg);
out:
    if (kpem)
        OPENSSL_cleanse(kpem, klen);
    free(kpem);
    free(gen);
    free(retired);
    X509_free(ni);
    EVP_PKEY_free(ik);
    EVP_PKEY_free(rk);
    ca_close(&ca);
    return rc;
}

int ca_root_crl(const char *dir, const char *root_key_path, int days, const char *revoke_serial,
                const char *reason, ca_warn_fn warn, void *arg, struct meshtls_err *err)
{
    int rc;
    struct ca ca;
    EVP_PKEY *rk = NULL;
    X509_CRL *crl = NULL;
    char *num = NULL, *retired = NULL, *revoked = NULL, want[80] = "", cur[80] = "", p[4200];
    struct ca_cert list[64];
    size_t nl = 0;
    BIO *b = NULL;
    if (days < 1 || days > CA_ROOT_DAYS)
        return meshtls_err_set(err, MESHTLS_EINVAL, "--days %d: expected 1 to %d", days,
                               CA_ROOT_DAYS);
    if (!reason)
        reason = "superseded";
    if (ca_reason_parse(reason) < 0)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "--reason '%s': expected unspecified, keyCompromise, "
                               "caCompromise, affiliationChanged, superseded or "
                               "cessationOfOperation",
                               reason);
    if (revoke_serial && ca_serial_normalize(revoke_serial, want, sizeof(want)) != 0)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "--revoke-intermediate '%s' is not a hex serial number",
                               revoke_serial);
    if ((rc = ca_open(&ca, dir, 0, err)))
        return rc;
    if ((rc = load_root_key(&ca, root_key_path, &rk, err)))
        goto out;
    serial_hex(ca.inter, cur, sizeof(cur));
    if ((rc = ca_store_begin(ca.store, err)))
        goto out;
    if ((rc = ca_store_meta_find(ca.store, "root_crl_number", &num, err)) ||
        (rc = ca_store_meta_find(ca.store, "retired_intermediates", &retired, err)) ||
        (rc = ca_store_meta_find(ca.store, "revoked_intermediates", &revoked, err)))
        goto fail;
    if (*want) {
        int known = 0;
        char *save = NULL, *copy = retired ? strdup(retired) : NULL;
        for (char *t = copy ? strtok_r(copy, "\n", &save) : NULL; t;
             t = strtok_r(NULL, "\n", &save))
            known |= !strcmp(t, want);
        free(copy);
        if (!strcmp(want, cur)) {
            rc = meshtls_err_set(err, MESHTLS_EDENIED,
                                 "--revoke-intermediate %s is the current intermediate, which "
                                 "signs every leaf: renew it with a new key first "
                                 "(renew-intermediate --new-key), move the services (rotate "
                                 "--force), then revoke the old one",
                                 want);
            goto fail;
        }
        if (!known) {
            rc = meshtls_err_set(err, MESHTLS_ENOENT,
                                 "--revoke-intermediate %s is not an intermediate this CA retired "
                                 "(retired: %s)",
                                 want, retired ? retired : "none");
            goto fail;
        }
    }
    /* revoked_intermediates: "SERIAL UNIXTIME REASON" lines */
    char all[4096];
    snprintf(all, sizeof(all), "%s", revoked ? revoked : "");
    if (*want && !strstr(all, want)) {
        size_t l = strlen(all);
        snprintf(all + l, sizeof(all) - l, "%s%s %lld %s", l ? "\n" : "", want,
                 (long long)time(NULL), reason);
    }
    char *save = NULL, copy[4096];
    snprintf(copy, sizeof(copy), "%s", all);
    for (char *t = strtok_r(copy, "\n", &save); t && nl < 64; t = strtok_r(NULL, "\n", &save)) {
        char *sp = strchr(t, ' '), *why = NULL;
        int64_t at = 0;
        if (!sp)
            continue;
        *sp = '\0';
        if ((why = strchr(sp + 1, ' ')))
            *why++ = '\0';
        if (mt_parse_i64(sp + 1, 0, INT64_MAX, &at) != 0)
            continue;
        list[nl++] =
            (struct ca_cert){.serial = t,
                             .revoked_at = at,
                             .reason = why && ca_reason_parse(why) >= 0 ? why : "superseded"};
    }
    int64_t n = 1;
    if (num && mt_parse_i64(num, 0, INT64_MAX - 1, &n) != 0)
        n = 1;
    n++;
    char nbuf[32];
    snprintf(nbuf, sizeof(nbuf), "%lld", (long long)n);
    char *data = NULL;
    long len = 0;
    if ((rc = sign_crl(ca.root, rk, n, days, list, nl, &crl, err)))
        goto fail;
    if (!(b = BIO_new(BIO_s_mem())) || !PEM_write_bio_X509_CRL(b, crl) ||
        (len = BIO_get_mem_data(b, &data)) <= 0) {
        rc = meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot encode the root CRL");
        goto fail;
    }
    path_of(p, sizeof(p), dir, "root.crl");
    if ((rc = ca_store_meta_set(ca.store, "root_crl_number", nbuf, err)) ||
        (*all && (rc = ca_store_meta_set(ca.store, "revoked_intermediates", all, err))) ||
        (rc = ca_store_audit(ca.store, "root-crl", NULL, *want ? want : NULL, nbuf, err)) ||
        (rc = meshtls_write_file_atomic(p, data, (size_t)len, 0644, 0, err)) ||
        (rc = ca_store_commit(ca.store, err)))
        goto fail;
    {
        char *where = NULL;
        int nrev = 0;
        ca_close(&ca);
        if ((rc = ca_open(&ca, dir, 1, err)) ||
            (rc = ca_store_meta_find(ca.store, "crl_out", &where, err)))
            goto out;
        if (where)
            rc = crl_write_locked(&ca, where, &nrev, warn, arg, err);
        else
            warnf(warn, arg,
                  "no CRL path is remembered: publish the new bundle with 'meshtls ca crl --dir "
                  "%s --out FILE' (it carries root.crl)",
                  dir);
        free(where);
    }
    goto out;
fail:
    ca_store_rollback(ca.store);
out:
    BIO_free(b);
    X509_CRL_free(crl);
    EVP_PKEY_free(rk);
    free(num);
    free(retired);
    free(revoked);
    ca_close(&ca);
    return rc;
}
