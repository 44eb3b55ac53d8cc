/*
 * x509.c - reading certificate, key and CRL files; expiry; chain
 * verification; atomic file writes.
 *
 * Every file is read whole with a size cap (MESHTLS_PEM_FILE_MAX) before it
 * is parsed, so malformed or huge input is refused before OpenSSL sees it,
 * and errors can name the file.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "meshtls/log.h"
#include "meshtls/x509.h"

int meshtls_read_file(const char *path, size_t max, char **out, size_t *len,
                      struct meshtls_err *err)
{
    int fd = -1, rc;
    char *buf = NULL;
    struct stat st;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        int e = errno;
        rc =
            meshtls_err_set(err, e == ENOENT ? MESHTLS_ENOENT : MESHTLS_EIO, "cannot open %s: %s%s",
                            path, strerror(e), e == ENOENT ? " (check the path)" : "");
        goto out;
    }
    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
        rc = meshtls_err_set(err, MESHTLS_EIO, "%s is not a regular file", path);
        goto out;
    }
    if ((unsigned long long)st.st_size > max) {
        rc = meshtls_err_set(err, MESHTLS_EPARSE, "%s is %lld bytes, more than the %zu allowed",
                             path, (long long)st.st_size, max);
        goto out;
    }
    size_t cap = (size_t)st.st_size;
    buf = malloc(cap + 1);
    if (!buf) {
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory reading %s", path);
        goto out;
    }
    size_t got = 0;
    while (got < cap) {
        ssize_t n = read(fd, buf + got, cap - got);
        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1) {
            rc = meshtls_err_set(err, MESHTLS_EIO, "cannot read %s: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break; /* file shrank */
        got += (size_t)n;
    }
    buf[got] = '\0';
    *out = buf;
    buf = NULL; /* ownership passed to the caller */
    if (len)
        *len = got;
    rc = 0;
out:
    if (fd != -1)
        close(fd);
    free(buf);
    return rc;
}

int meshtls_pem_parse_certs(const char *buf, size_t len, const char *what, STACK_OF(X509) * *out,
                            struct meshtls_err *err)
{
    int rc;
    BIO *bio = NULL;
    STACK_OF(X509) *certs = NULL;
    X509 *x = NULL;

    if (len > MESHTLS_PEM_FILE_MAX || len > INT_MAX)
        return meshtls_err_set(err, MESHTLS_EPARSE, "%s: too large", what);
    ERR_clear_error();
    bio = BIO_new_mem_buf(buf, (int)len);
    certs = sk_X509_new_null();
    if (!bio || !certs) {
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory parsing %s", what);
        goto out;
    }
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_push(certs, x)) {
            rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory parsing %s", what);
            goto out;
        }
        x = NULL; /* the stack owns it */
    }
    /* End of input is PEM_R_NO_START_LINE; anything else is a broken block. */
    unsigned long e = ERR_peek_last_error();
    if (e && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
        rc = meshtls_err_set_ssl(err, MESHTLS_EPARSE,
                                 "%s: malformed PEM certificate after %d good one(s); "
                                 "check the file is complete (-----BEGIN/END CERTIFICATE-----)",
                                 what, sk_X509_num(certs));
        goto out;
    }
    ERR_clear_error();
    if (sk_X509_num(certs) == 0) {
        rc = meshtls_err_set(err, MESHTLS_EPARSE,
                             "%s holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
                             what);
        goto out;
    }
    *out = certs;
    certs = NULL;
    rc = 0;
out:
    X509_free(x);
    sk_X509_pop_free(certs, X509_free);
    BIO_free(bio);
    return rc;
}

int meshtls_pem_read_certs(const char *path, STACK_OF(X509) * *out, struct meshtls_err *err)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = meshtls_read_file(path, MESHTLS_PEM_FILE_MAX, &buf, &len, err);
    if (rc == 0)
        rc = meshtls_pem_parse_certs(buf, len, path, out, err);
    free(buf);
    return rc;
}

int meshtls_key_file_check(const char *path, struct meshtls_err *err)
{
    struct stat st;
    if (stat(path, &st) == -1) {
        int e = errno;
        return meshtls_err_set(err, e == ENOENT ? MESHTLS_ENOENT : MESHTLS_EIO,
                               "cannot open key file %s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode))
        return meshtls_err_set(err, MESHTLS_EIO, "key file %s is not a regular file", path);
    if (st.st_mode & (S_IRWXG | S_IRWXO))
        return meshtls_err_set(err, MESHTLS_EPERM,
                               "key file %s has mode %04o: it is readable or writable by group "
                               "or others; run 'chmod 600 %s'",
                               path, (unsigned)(st.st_mode & 07777), path);
    return 0;
}

/* A passphrase callback that refuses: encrypted keys are not supported. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    *(int *)u = 1;
    return -1;
}

int meshtls_pem_read_key(const char *path, EVP_PKEY **out, struct meshtls_err *err)
{
    int rc, asked = 0;
    char *buf = NULL;
    size_t len = 0;
    BIO *bio = NULL;
    EVP_PKEY *key = NULL;

    if ((rc = meshtls_key_file_check(path, err)) != 0)
        return rc;
    if ((rc = meshtls_read_file(path, MESHTLS_PEM_FILE_MAX, &buf, &len, err)) != 0)
        return rc;
    ERR_clear_error();
    bio = BIO_new_mem_buf(buf, (int)len);
    if (!bio) {
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory reading %s", path);
        goto out;
    }
    key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, &asked);
    if (!key) {
        if (asked)
            rc = meshtls_err_set(err, MESHTLS_EPARSE,
                                 "key file %s is encrypted; meshtls needs an unencrypted key "
                                 "protected by file permissions (0600)",
                                 path);
        else
            rc = meshtls_err_set_ssl(err, MESHTLS_EPARSE,
                                     "key file %s holds no readable PEM private key "
                                     "(expected -----BEGIN PRIVATE KEY-----)",
                                     path);
        goto out;
    }
    *out = key;
    key = NULL;
    rc = 0;
out:
    EVP_PKEY_free(key);
    BIO_free(bio);
    if (buf)
        OPENSSL_cleanse(buf, len); /* key material */
    free(buf);
    return rc;
}

int meshtls_pem_read_crls(const char *path, STACK_OF(X509_CRL) * *out, struct meshtls_err *err)
{
    int rc;
    char *buf = NULL;
    size_t len = 0;
    BIO *bio = NULL;
    STACK_OF(X509_CRL) *crls = NULL;
    X509_CRL *c = NULL;

    if ((rc = meshtls_read_file(path, MESHTLS_CRL_FILE_MAX, &buf, &len, err)) != 0)
        return rc;
    ERR_clear_error();
    bio = BIO_new_mem_buf(buf, (int)len);
    crls = sk_X509_CRL_new_null();
    if (!bio || !crls) {
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory reading %s", path);
        goto out;
    }
    while ((c = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_CRL_push(crls, c)) {
            rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory reading %s", path);
            goto out;
        }
        c = NULL;
    }
    unsigned long e = ERR_peek_last_error();
    if ((e && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) ||
        sk_X509_CRL_num(crls) == 0) {
        rc = meshtls_err_set_ssl(err, MESHTLS_EPARSE,
                                 "CRL file %s holds no valid PEM CRL "
                                 "(expected -----BEGIN X509 CRL-----)",
                                 path);
        goto out;
    }
    ERR_clear_error();
    *out = crls;
    crls = NULL;
    rc = 0;
out:
    X509_CRL_free(c);
    sk_X509_CRL_pop_free(crls, X509_CRL_free);
    BIO_free(bio);
    free(buf);
    return rc;
}

int meshtls_key_matches_cert(EVP_PKEY *key, X509 *cert, const char *cert_path,
                             struct meshtls_err *err)
{
    ERR_clear_error();
    if (X509_check_private_key(cert, key) != 1) {
        ERR_clear_error();
        return meshtls_err_set(err, MESHTLS_EKEYMISMATCH,
                               "the private key does not match the certificate %s; use the key "
                               "that was issued with this certificate",
                               cert_path ? cert_path : "(certificate)");
    }
    return 0;
}

/* Subject CN of `cert` for messages, or the whole subject. */
static void cert_name(X509 *cert, char *buf, size_t cap)
{
    buf[0] = '\0';
    X509_NAME *n = X509_get_subject_name(cert);
    if (n && X509_NAME_get_text_by_NID(n, NID_commonName, buf, (int)cap) > 0)
        return;
    if (n)
        X509_NAME_oneline(n, buf, (int)cap);
}

int meshtls_cert_check_expiry(X509 *cert, const char *what, int warn_days, int64_t now,
                              int *days_left, struct meshtls_err *err)
{
    time_t t = now ? (time_t)now : time(NULL);
    int days = 0, secs = 0;
    char name[256];
    cert_name(cert, name, sizeof(name));
    if (!what)
        what = name;

    if (X509_cmp_time(X509_get0_notBefore(cert), &t) > 0)
        return meshtls_err_set(err, MESHTLS_EEXPIRED,
                               "certificate %s (CN=%s) is not valid yet; check the clock or "
                               "wait for its notBefore",
                               what, name);
    ASN1_TIME *asn_now = ASN1_TIME_set(NULL, t);
    if (!asn_now)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    int ok = ASN1_TIME_diff(&days, &secs, asn_now, X509_get0_notAfter(cert));
    ASN1_TIME_free(asn_now);
    if (!ok)
        return meshtls_err_set(err, MESHTLS_EPARSE, "certificate %s has an unreadable notAfter",
                               what);
    if (days_left)
        *days_left = (secs < 0 && days <= 0) ? days - 1 : days;
    if (days < 0 || (days == 0 && secs < 0))
        return meshtls_err_set(err, MESHTLS_EEXPIRED,
                               "certificate %s (CN=%s) has expired (%d days ago); issue a new one "
                               "(meshtls ca issue / rotate)",
                               what, name, -days);
    if (days < warn_days)
        return meshtls_err_set(err, MESHTLS_EEXPIRING,
                               "certificate %s (CN=%s) expires in %d days (warning threshold %d); "
                               "rotate it (meshtls ca rotate)",
                               what, name, days, warn_days);
    return 0;
}

int meshtls_validate_cert_expiration(const char *path, int warn_days, struct meshtls_err *err)
{
    STACK_OF(X509) *certs = NULL;
    struct meshtls_err e2 = MESHTLS_ERR_INIT;
    int rc = meshtls_pem_read_certs(path, &certs, err);
    if (rc != 0)
        return rc;
    rc = meshtls_cert_check_expiry(sk_X509_value(certs, 0), path, warn_days, 0, NULL, &e2);
    sk_X509_pop_free(certs, X509_free);
    if (rc == MESHTLS_EEXPIRING) {
        meshtls_log(MESHTLS_LOG_WARN, "%s", e2.msg);
        return 0;
    }
    if (rc != 0)
        meshtls_err_set(err, rc, "%s", e2.msg);
    return rc;
}

int meshtls_verify_chain(STACK_OF(X509) * chain, STACK_OF(X509) * anchors,
                         STACK_OF(X509_CRL) * crls, int purpose, struct meshtls_err *err)
{
    int rc;
    X509_STORE *store = NULL;
    X509_STORE_CTX *ctx = NULL;
    STACK_OF(X509) *untrusted = NULL;

    if (!chain || sk_X509_num(chain) < 1 || !anchors || sk_X509_num(anchors) < 1)
        return meshtls_err_set(err, MESHTLS_EINVAL, "nothing to verify");
    ERR_clear_error();
    store = X509_STORE_new();
    ctx = X509_STORE_CTX_new();
    untrusted = sk_X509_new_null();
    if (!store || !ctx || !untrusted) {
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < sk_X509_num(anchors); i++)
        if (!X509_STORE_add_cert(store, sk_X509_value(anchors, i))) {
            rc = meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot add CA certificate");
            goto out;
        }
    for (int i = 1; i < sk_X509_num(chain); i++)
        if (!sk_X509_push(untrusted, sk_X509_value(chain, i))) {
            rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
            goto out;
        }
    unsigned long flags = 0;
    if (crls) {
        for (int i = 0; i < sk_X509_CRL_num(crls); i++)
            X509_STORE_add_crl(store, sk_X509_CRL_value(crls, i));
        flags |= X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL;
    }
    X509_STORE_set_flags(store, flags);
    if (!X509_STORE_CTX_init(ctx, store, sk_X509_value(chain, 0), untrusted)) {
        rc = meshtls_err_set_ssl(err, MESHTLS_ETLS, "cannot set up verification");
        goto out;
    }
    if (purpose)
        X509_STORE_CTX_set_purpose(ctx, purpose);
    if (X509_verify_cert(ctx) == 1) {
        rc = 0;
        goto out;
    }
    int verr = X509_STORE_CTX_get_error(ctx);
    int depth = X509_STORE_CTX_get_error_depth(ctx);
    X509 *bad = X509_STORE_CTX_get_current_cert(ctx);
    char name[256] = "?";
    if (bad)
        cert_name(bad, name, sizeof(name));
    switch (verr) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID: rc = MESHTLS_EEXPIRED; break;
    case X509_V_ERR_CERT_REVOKED: rc = MESHTLS_EREVOKED; break;
    default: rc = MESHTLS_EUNTRUSTED; break;
    }
    meshtls_err_set(err, rc, "certificate CN=%s (depth %d) failed verification: %s%s", name, depth,
                    X509_verify_cert_error_string(verr),
                    verr == X509_V_ERR_UNABLE_TO_GET_CRL
                        ? " (give a CRL for every CA of the chain, e.g. from 'meshtls ca crl')"
                    : rc == MESHTLS_EUNTRUSTED ? " (is it issued by a CA in the bundle?)"
                                               : "");
    ERR_clear_error();
out:
    sk_X509_free(untrusted); /* borrowed elements */
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return rc;
}

int meshtls_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode,
                              int exclusive, struct meshtls_err *err)
{
    char tmp[PATH_MAX];
    int fd = -1, rc;
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return meshtls_err_set(err, MESHTLS_EINVAL, "path too long: %s", path);
    if (exclusive && access(path, F_OK) == 0)
        return meshtls_err_set(err, MESHTLS_EEXIST, "%s already exists; refusing to overwrite it",
                               path);
    fd = mkstemp(tmp);
    if (fd == -1)
        return meshtls_err_set(err, MESHTLS_EIO, "cannot create a file next to %s: %s", path,
                               strerror(errno));
    if (fchmod(fd, mode) == -1) {
        rc = meshtls_err_set(err, MESHTLS_EIO, "cannot chmod %s: %s", tmp, strerror(errno));
        goto out;
    }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w == -1 && errno == EINTR)
            continue;
        if (w == -1) {
            rc = meshtls_err_set(err, MESHTLS_EIO, "cannot write %s: %s (disk full?)", path,
                                 strerror(errno));
            goto out;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) == -1) {
        rc = meshtls_err_set(err, MESHTLS_EIO, "cannot sync %s: %s", path, strerror(errno));
        goto out;
    }
    if (close(fd) == -1) {
        fd = -1;
        rc = meshtls_err_set(err, MESHTLS_EIO, "cannot close %s: %s", path, strerror(errno));
        goto out;
    }
    fd = -1;
    if (exclusive) {
        /* link() fails if `path` appeared meanwhile: no overwrite race. */
        if (link(tmp, path) == -1) {
            rc = meshtls_err_set(err, errno == EEXIST ? MESHTLS_EEXIST : MESHTLS_EIO,
                                 "cannot create %s: %s", path, strerror(errno));
            goto out;
        }
        unlink(tmp);
    } else if (rename(tmp, path) == -1) {
        rc = meshtls_err_set(err, MESHTLS_EIO, "cannot rename %s to %s: %s", tmp, path,
                             strerror(errno));
        goto out;
    }
    return 0;
out:
    if (fd != -1)
        close(fd);
    unlink(tmp);
    return rc;
}
