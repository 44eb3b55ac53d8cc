/*
 * cmd_cert.c - `meshtls cert inspect|check|verify`: look at certificate
 * files without a CA directory.
 *
 * Exit codes of `check` follow monitoring conventions: 0 fine, 1 expiring or
 * expired, 2 unreadable.  `verify` exits 0 trusted, 1 not trusted, 2 unreadable.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/x509v3.h>

#include "ca.h"
#include "cli.h"
#include "json_utf8.h"
#include "keys.h"
#include "meshtls/meshtls.h"

static const char HEAD[] =
    "usage: meshtls cert <subcommand> [options] FILE\n"
    "\n"
    "  inspect FILE [--json]          show the identity of every certificate in FILE:\n"
    "                                 subject, issuer, serial, validity, days left,\n"
    "                                 DNS/IP/URI SANs and the SPIFFE ID\n"
    "  check FILE --min-days N        exit 0 if the first certificate is valid for at\n"
    "                                 least N more days, 1 if it expires sooner or has\n"
    "                                 expired, 2 if the file cannot be read; a file of\n"
    "                                 CRLs (ca crl's bundle): every CRL's nextUpdate at\n"
    "                                 least N days ahead, 1 if one is nearer or past\n"
    "                                 (STALE: a proxy run with --crl refuses clients)\n"
    "  verify --ca FILE [--crl FILE] [--purpose client|server] FILE\n"
    "                                 verify the chain in FILE (leaf first) against the\n"
    "                                 CA bundle, and against the CRLs if given; exit 0\n"
    "                                 trusted, 1 not trusted, 2 unreadable\n";

/* The subcommands and their mode bits (keys.h). */
static const struct {
    const char *name;
    unsigned mode;
} SUBS[] = {{"inspect", CLI_KEY_INSPECT}, {"check", CLI_KEY_CHECK}, {"verify", CLI_KEY_VERIFY}};

static void cert_usage(FILE *f)
{
    cli_usage_of(f, CLI_TABLE_CERT, "cert", CLI_KEY_INSPECT | CLI_KEY_CHECK | CLI_KEY_VERIFY, HEAD);
}

static void fmt_time(int64_t t, char *buf, size_t cap)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* A JSON string of `s` ("" when NULL), valid even when `s` is not UTF-8. */
static json_t *jstr(const char *s)
{
    return mt_json_string(s ? s : "");
}

static json_t *jlist(char **v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, jstr(v[i]));
    return a;
}

/* The identity as a JSON object (a new reference). */
static json_t *identity_json(const struct meshtls_identity *id)
{
    char nb[32], na[32];
    fmt_time(id->not_before, nb, sizeof(nb));
    fmt_time(id->not_after, na, sizeof(na));
    json_t *o = json_object();
    json_object_set_new(o, "subject", jstr(id->subject));
    json_object_set_new(o, "issuer", jstr(id->issuer));
    json_object_set_new(o, "cn", jstr(id->cn));
    json_object_set_new(o, "o", jstr(id->o));
    json_object_set_new(o, "ou", jstr(id->ou));
    json_object_set_new(o, "serial", jstr(id->serial));
    json_object_set_new(o, "not_before", json_string(nb));
    json_object_set_new(o, "not_after", json_string(na));
    json_object_set_new(o, "days_left", json_integer(meshtls_identity_days_left(id, 0)));
    json_object_set_new(o, "is_ca", json_boolean(id->is_ca));
    json_object_set_new(o, "key_type", jstr(id->key_type));
    json_object_set_new(o, "dns", jlist(id->dns, id->n_dns));
    json_object_set_new(o, "ip", jlist(id->ips, id->n_ips));
    json_object_set_new(o, "uri", jlist(id->uris, id->n_uris));
    json_object_set_new(o, "spiffe_id", mt_json_string(id->spiffe_id)); /* NULL: null */
    return o;
}

static void print_list(const char *label, char **v, size_t n)
{
    printf("  %-12s", label);
    if (n == 0)
        printf(" -");
    for (size_t i = 0; i < n; i++)
        printf(" %s%s", v[i], i + 1 < n ? "," : "");
    putchar('\n');
}

static void print_identity_text(const struct meshtls_identity *id)
{
    char nb[32], na[32];
    fmt_time(id->not_before, nb, sizeof(nb));
    fmt_time(id->not_after, na, sizeof(na));
    int64_t days = meshtls_identity_days_left(id, 0);
    printf("  %-12s %s\n  %-12s %s\n  %-12s %s\n", "subject", id->subject, "issuer", id->issuer,
           "serial", id->serial);
    printf("  %-12s %s\n  %-12s %s\n  %-12s %s (%lld days %s)\n", "key", id->key_type, "not before",
           nb, "not after", na, (long long)(days < 0 ? -days : days),
           days < 0 ? "ago: EXPIRED" : "left");
    printf("  %-12s %s\n", "CA", id->is_ca ? "yes" : "no");
    print_list("DNS SANs", id->dns, id->n_dns);
    print_list("IP SANs", id->ips, id->n_ips);
    print_list("URI SANs", id->uris, id->n_uris);
    printf("  %-12s %s\n", "SPIFFE ID",
           id->spiffe_id    ? id->spiffe_id
           : id->n_uris > 1 ? "(none: more than one URI SAN)"
                            : "(none)");
}

static int cert_inspect(const struct meshtls_config *cfg, const char *path)
{
    int json = cli_bool(cfg, "cert.json", 0), rc = 0;
    STACK_OF(X509) *certs = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    if ((rc = meshtls_pem_read_certs(path, &certs, &err)) != 0) {
        cli_print_err("cert inspect", &err, rc);
        return 2;
    }
    json_t *arr = json ? json_array() : NULL;
    for (int i = 0; i < sk_X509_num(certs); i++) {
        struct meshtls_identity *id = NULL;
        if ((rc = meshtls_identity_from_x509(sk_X509_value(certs, i), &id, &err)) != 0) {
            cli_print_err("cert inspect", &err, rc);
            break;
        }
        if (json) {
            json_array_append_new(arr, identity_json(id));
        } else {
            printf("%s[%d] %s\n", i ? "\n" : "", i,
                   i == 0 ? (id->is_ca ? "CA certificate" : "leaf certificate")
                          : "chain certificate");
            print_identity_text(id);
        }
        meshtls_identity_free(id);
    }
    if (json)
        mt_json_print(arr, stdout);
    sk_X509_pop_free(certs, X509_free);
    return rc ? 2 : 0;
}

static int64_t asn1_unix(const ASN1_TIME *t)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

static int check_crls(const char *path, int min_days)
{
    STACK_OF(X509_CRL) *crls = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    int rc = meshtls_pem_read_crls(path, &crls, &err), status = 0;
    if (rc != 0) {
        cli_print_err("cert check", &err, rc);
        fprintf(stderr, "meshtls cert check: UNKNOWN: %s cannot be read\n", path);
        return 2;
    }
    int64_t now = (int64_t)time(NULL);
    for (int i = 0; i < sk_X509_CRL_num(crls); i++) {
        X509_CRL *c = sk_X509_CRL_value(crls, i);
        char issuer[512], when[32];
        X509_NAME_oneline(X509_CRL_get_issuer(c), issuer, sizeof(issuer));
        const ASN1_TIME *nu = X509_CRL_get0_nextUpdate(c);
        if (!nu) {
            printf("OK: %s: the CRL of %s has no nextUpdate\n", path, issuer);
            continue;
        }
        int64_t t = asn1_unix(nu);
        fmt_time(t, when, sizeof(when));
        long long hours = (long long)((t - now) / 3600);
        switch (ca_crl_freshness(t, now, (int64_t)min_days * 86400)) {
        case CA_CRL_FRESH:
            printf("OK: %s: the CRL of %s is valid until %s (%lld days; at least %d required)\n",
                   path, issuer, when, hours / 24, min_days);
            break;
        case CA_CRL_NEAR:
            printf("EXPIRING: %s: the CRL of %s goes stale on %s (in %lld hours, fewer than the "
                   "%d days required); publish a new one (meshtls ca crl; the root's: meshtls ca "
                   "root-crl with the root key)\n",
                   path, issuer, when, hours, min_days);
            status = 1;
            break;
        case CA_CRL_STALE:
            printf("STALE: %s: the CRL of %s passed its nextUpdate on %s (%lld hours ago): a "
                   "proxy run with --crl refuses every client whose chain it covers; publish a "
                   "new one now (meshtls ca crl; the root's: meshtls ca root-crl with the root "
                   "key)\n",
                   path, issuer, when, -hours);
            status = 1;
            break;
        }
    }
    sk_X509_CRL_pop_free(crls, X509_CRL_free);
    return status;
}

/* 1 if `path` holds a PEM CRL (and no certificate): `cert check` checks CRLs then. */
static int is_crl_file(const char *path)
{
    char *buf = NULL;
    size_t len = 0;
    if (meshtls_read_file(path, MESHTLS_CRL_FILE_MAX, &buf, &len, NULL) != 0)
        return 0;
    int crl = strstr(buf, "-----BEGIN X509 CRL-----") && !strstr(buf, "-----BEGIN CERTIFICATE");
    free(buf);
    return crl;
}

static int cert_check(const struct meshtls_config *cfg, const char *path)
{
    int min_days = (int)cli_int(cfg, "cert.min_days", 0); /* required: checked by the caller */
    if (is_crl_file(path))
        return check_crls(path, min_days);
    STACK_OF(X509) *certs = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    int rc = meshtls_pem_read_certs(path, &certs, &err);
    if (rc != 0) {
        cli_print_err("cert check", &err, rc);
        fprintf(stderr, "meshtls cert check: UNKNOWN: %s cannot be read\n", path);
        return 2;
    }
    int days = 0;
    rc = meshtls_cert_check_expiry(sk_X509_value(certs, 0), path, min_days, 0, &days, &err);
    sk_X509_pop_free(certs, X509_free);
    if (rc == 0) {
        printf("OK: %s is valid for %d more days (at least %d required)\n", path, days, min_days);
        return 0;
    }
    if (rc == MESHTLS_EEXPIRING) {
        printf("EXPIRING: %s expires in %d days, fewer than the %d required; rotate it\n", path,
               days, min_days);
        return 1;
    }
    if (rc == MESHTLS_EEXPIRED) {
        printf("EXPIRED: %s\n", err.msg);
        return 1;
    }
    cli_print_err("cert check", &err, rc);
    return 2;
}

static int cert_verify(const struct meshtls_config *cfg, const char *path)
{
    int rc, status = 2;
    const char *ca = meshtls_config_get(cfg, "cert.ca", NULL);
    const char *crl = meshtls_config_get(cfg, "cert.crl", NULL);
    const char *pv = meshtls_config_get(cfg, "cert.purpose", NULL);
    int purpose = !pv                     ? 0
                  : !strcmp(pv, "client") ? X509_PURPOSE_SSL_CLIENT
                                          : X509_PURPOSE_SSL_SERVER;
    STACK_OF(X509) *chain = NULL, *anchors = NULL;
    STACK_OF(X509_CRL) *crls = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    if ((rc = meshtls_pem_read_certs(path, &chain, &err)) != 0 ||
        (rc = meshtls_pem_read_certs(ca, &anchors, &err)) != 0 ||
        (crl && (rc = meshtls_pem_read_crls(crl, &crls, &err)) != 0)) {
        cli_print_err("cert verify", &err, rc);
        goto out;
    }
    rc = meshtls_verify_chain(chain, anchors, crls, purpose, &err);
    if (rc == 0) {
        struct meshtls_identity *id = NULL;
        if (meshtls_identity_from_x509(sk_X509_value(chain, 0), &id, NULL) == 0) {
            printf("OK: %s is trusted by %s%s (CN=%s%s%s)\n", path, ca,
                   crl ? " and not revoked" : "", id->cn, id->spiffe_id ? ", " : "",
                   id->spiffe_id ? id->spiffe_id : "");
            meshtls_identity_free(id);
        }
        status = 0;
    } else {
        printf("NOT TRUSTED: %s: %s\n", path, err.msg);
        status = 1;
    }
out:
    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(anchors, X509_free);
    sk_X509_CRL_pop_free(crls, X509_CRL_free);
    return status;
}

int cmd_cert(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        cert_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    size_t k;
    for (k = 0; k < sizeof(SUBS) / sizeof(SUBS[0]) && strcmp(argv[1], SUBS[k].name); k++)
        ;
    if (k == sizeof(SUBS) / sizeof(SUBS[0])) {
        fprintf(stderr, "meshtls cert: unknown subcommand '%s'\n", argv[1]);
        cert_usage(stderr);
        return 2;
    }
    char what[32];
    snprintf(what, sizeof(what), "cert %s", SUBS[k].name);
    const char *file = NULL;
    struct cli_cmd c = {.what = what,
                        .tables = CLI_TABLE_CERT,
                        .role = "cert",
                        .modes = SUBS[k].mode,
                        .pos = &file,
                        .maxpos = 1};
    int status = cli_config_load(&c, argc - 2, argv + 2);
    if (status == 0 && c.help)
        cli_usage(stdout, &c, HEAD, NULL);
    if (status || c.help)
        goto out;
    status = 2;
    if (!file) {
        fprintf(stderr, "meshtls %s: give the FILE to read (see --help)\n", what);
        goto out;
    }
    if (SUBS[k].mode == CLI_KEY_INSPECT)
        status = cert_inspect(c.cfg, file);
    else if (SUBS[k].mode == CLI_KEY_CHECK)
        status = cli_need(&c, "cert.min_days") ? cert_check(c.cfg, file) : 2;
    else
        status = cli_need(&c, "cert.ca") ? cert_verify(c.cfg, file) : 2;
out:
    meshtls_config_free(c.cfg);
    return status;
}
