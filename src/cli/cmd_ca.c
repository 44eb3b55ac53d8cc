/*
 * cmd_ca.c - `meshtls ca init|register|issue|rotate|revoke|crl|list`:
 * argument parsing and output; the work is in src/ca.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ca.h"
#include "cli.h"
#include "db.h"
#include "json_utf8.h"
#include "keys.h"
#include "meshtls/meshtls.h"
#include "store.h"

#include <openssl/err.h>
#include <openssl/pem.h>

#define MAX_SANS 64

static const char USAGE[] =
    "usage: meshtls ca <subcommand> --dir DIR [options]\n"
    "\n"
    "  init --dir DIR --trust-domain TD [--key-type ec-p256|ec-p384|rsa-2048|ed25519]\n"
    "       [--crl-out FILE]\n"
    "        create the root (10 years) and intermediate (5 years, pathlen 0) CAs and the\n"
    "        store DIR/meshtls.db; the root key is written 0400: move it offline;\n"
    "        --crl-out: publish the CRL there now and after every revoke\n"
    "  register --dir DIR SERVICE [--dns NAME]... [--ip ADDR]... [--spiffe-id URI]\n"
    "        add SERVICE to the registered-services allow-list (default SPIFFE ID\n"
    "        spiffe://TD/svc/SERVICE); registering again updates it\n"
    "  issue --dir DIR SERVICE --out OUTDIR [--days 90] [--csr FILE]\n"
    "        issue a leaf (CN=SERVICE, SPIFFE URI SAN + DNS/IP SANs, serverAuth+clientAuth):\n"
    "        OUTDIR/SERVICE.crt (leaf then intermediate), OUTDIR/SERVICE.key (0600),\n"
    "        OUTDIR/ca.crt; with --csr, sign the CSR (no key is written)\n"
    "  rotate --dir DIR [--within-days 14] [--days 90] [--force] [SERVICE...]\n"
    "        re-issue active certificates expiring within the window (--force: all of\n"
    "        them, now), into the absolute directory they were issued to (a directory\n"
    "        that no longer exists is refused, naming it); the old ones stay valid until\n"
    "        they expire (overlap).  Safe from cron: no dependence on the working directory\n"
    "  revoke --dir DIR (--serial HEX | SERVICE) [--reason R] [--replace]\n"
    "        R: unspecified keyCompromise caCompromise affiliationChanged superseded\n"
    "        cessationOfOperation; --replace issues the replacement in the same transaction;\n"
    "        prints each serial revoked and writes the CRL where it is published\n"
    "  crl --dir DIR [--out FILE]\n"
    "        write the CRLs (one per live intermediate) followed by the root's CRL; --out is\n"
    "        remembered (revoke writes there too); without it, the remembered path\n"
    "  list (--dir DIR | --store URL) [--service S] [--status active|superseded|revoked|\n"
    "       expired] [--expiring-within DAYS] [--json]\n"
    "        inventory sorted by service: serial, SPIFFE ID, not-after, days left, status;\n"
    "        --store alone names the store (sqlite:PATH or postgres://...): no key file needed\n"
    "  services --dir DIR [--json]\n"
    "        the registered services: SPIFFE ID, DNS and IP SANs, valid certificates\n"
    "  unregister --dir DIR SERVICE [--revoke]\n"
    "        remove SERVICE from the allow-list; refused while it has valid certificates,\n"
    "        unless --revoke (cessationOfOperation; the CRL is written as by revoke)\n"
    "\n"
    "  The offline root's duties (bring root.key back for the ceremony, docs/PKI.md):\n"
    "  renew-intermediate --dir DIR --root-key FILE [--new-key] [--days 1825]\n"
    "        re-sign the intermediate: same key (every leaf keeps verifying), or a new key\n"
    "        (the old intermediate stays valid until its end: both chains verify; then\n"
    "        rotate --force moves the services)\n"
    "  root-crl --dir DIR --root-key FILE [--days 365] [--revoke-intermediate SERIAL\n"
    "       [--reason R]]\n"
    "        re-sign the root's CRL (DIR/root.crl, carried by every CRL bundle) before its\n"
    "        nextUpdate; rewrites the published bundle\n"
    "\n"
    "Exit status: 0 success, 1 failure, 2 usage error.  See docs/PKI.md.\n";

static int usage_err(const char *sub, const char *msg)
{
    fprintf(stderr, "meshtls ca %s: %s\n(run 'meshtls ca --help')\n", sub, msg);
    return 2;
}

static int fail(const char *sub, struct meshtls_err *err, int rc)
{
    char what[64];
    snprintf(what, sizeof(what), "ca %s", sub);
    cli_print_err(what, err, rc);
    return 1;
}

/* Warnings from src/ca (migrated paths, skipped services, CRLs near nextUpdate) on stderr. */
static void warn_cb(const char *msg, void *arg)
{
    fprintf(stderr, "meshtls ca %s: warning: %s\n", (const char *)arg, msg);
}

static void revoked_cb(const char *service, const char *serial, void *arg)
{
    (void)arg;
    printf("revoked %s %s\n", serial, service);
}

static void fmt_utc(int64_t t, char *buf, size_t cap)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void report(const char *service, const char *old_serial, const char *new_serial,
                   const char *out_dir, void *arg)
{
    printf("%s %s: new certificate %s (replaces %s) written to %s\n", (const char *)arg, service,
           new_serial, old_serial, out_dir ? out_dir : "?");
}

/* A JSON string of `s` ("" when NULL), valid even when `s` is not UTF-8. */
static json_t *jstr(const char *s)
{
    return mt_json_string(s ? s : "");
}

/* Filters of `ca list`; NULL / -1 = any. */
struct list_filter {
    const char *service;
    const char *status;  /* active superseded revoked expired */
    int expiring_within; /* days, -1 = any */
};

static int cmp_cert(const void *a, const void *b)
{
    const struct ca_cert *x = a, *y = b;
    int c = strcmp(x->service, y->service);
    if (c)
        return c;
    return x->not_after < y->not_after ? -1 : x->not_after > y->not_after;
}

/* The SPIFFE ID of a stored certificate ("-" if none); into buf. */
static void cert_spiffe(const char *pem, char *buf, size_t cap)
{
    snprintf(buf, cap, "-");
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    struct meshtls_identity *id = NULL;
    if (x && meshtls_identity_from_x509(x, &id, NULL) == 0 && id->spiffe_id)
        snprintf(buf, cap, "%s", id->spiffe_id);
    meshtls_identity_free(id);
    X509_free(x);
    ERR_clear_error();
}

/* `store`: the CA directory or a store URL; `shown`: how hints name it. */
static int do_list(const char *store, const char *shown, int json, const struct list_filter *f)
{
    struct ca_store *s = NULL;
    struct ca_cert *v = NULL;
    size_t n = 0, shown_n = 0;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    int rc;
    /* "expired" is computed, so it is filtered here, not in SQL */
    const char *sql_status = f->status && strcmp(f->status, "expired") ? f->status : NULL;
    if ((rc = ca_store_open(store, 0, &s, &err)) ||
        (rc = ca_store_cert_list(s, f->service, sql_status, &v, &n, &err))) {
        ca_store_close(s);
        return fail("list", &err, rc);
    }
    if (n)
        qsort(v, n, sizeof(*v), cmp_cert);
    int64_t now = (int64_t)time(NULL);
    json_t *arr = json ? json_array() : NULL;
    if (!json)
        printf("%-20s %-34s %-44s %-20s %9s  %s\n", "SERVICE", "SERIAL", "SPIFFE ID", "NOT AFTER",
               "DAYS LEFT", "STATUS");
    for (size_t i = 0; i < n; i++) {
        char na[32], sid[600];
        fmt_utc(v[i].not_after, na, sizeof(na));
        int64_t d = v[i].not_after - now;
        long long days = d >= 0 ? d / 86400 : -((-d + 86399) / 86400);
        const char *status = strcmp(v[i].status, "revoked") && d < 0 ? "expired" : v[i].status;
        if (f->status && strcmp(f->status, status))
            continue;
        if (f->expiring_within >= 0 && v[i].not_after > now + (int64_t)f->expiring_within * 86400)
            continue;
        shown_n++;
        cert_spiffe(v[i].cert_pem, sid, sizeof(sid));
        if (!strcmp(status, "active") && (!v[i].out_dir || v[i].out_dir[0] != '/'))
            fprintf(stderr,
                    "meshtls ca list: warning: %s %s was issued with the relative directory "
                    "'%s' (an older meshtls stored it as given): 'ca rotate' records the "
                    "absolute path when run from the directory 'ca issue' ran in, and refuses "
                    "elsewhere\n",
                    v[i].service, v[i].serial, v[i].out_dir ? v[i].out_dir : ".");
        if (json) {
            json_t *o = json_object();
            json_object_set_new(o, "service", jstr(v[i].service));
            json_object_set_new(o, "serial", jstr(v[i].serial));
            json_object_set_new(o, "spiffe_id", strcmp(sid, "-") ? jstr(sid) : json_null());
            json_object_set_new(o, "not_after", json_string(na));
            json_object_set_new(o, "days_left", json_integer(days));
            json_object_set_new(o, "status", jstr(status));
            json_object_set_new(o, "out_dir", jstr(v[i].out_dir));
            json_object_set_new(o, "reason", mt_json_string(v[i].reason)); /* NULL: null */
            json_array_append_new(arr, o);
        } else {
            printf("%-20s %-34s %-44s %-20s %9lld  %s%s%s\n", v[i].service, v[i].serial, sid, na,
                   days, status, v[i].reason ? " " : "", v[i].reason ? v[i].reason : "");
        }
    }
    if (json)
        mt_json_print(arr, stdout);
    else if (n == 0 && !f->service && !f->status && f->expiring_within < 0)
        printf("(no certificates issued yet: meshtls ca issue --dir %s SERVICE --out DIR)\n",
               shown);
    else if (shown_n == 0)
        printf("(no certificate matches)\n");
    ca_cert_list_free(v, n);
    ca_store_close(s);
    return 0;
}

/* `ca services`: the registrations, with how many valid certificates each has. */
static int do_services(const char *dir, int json)
{
    struct ca_store *s = NULL;
    struct ca_service *v = NULL;
    size_t n = 0;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    int rc;
    if ((rc = ca_store_open(dir, 0, &s, &err)) || (rc = ca_store_service_list(s, &v, &n, &err))) {
        ca_store_close(s);
        return fail("services", &err, rc);
    }
    int64_t now = (int64_t)time(NULL);
    json_t *arr = json ? json_array() : NULL;
    if (!json)
        printf("%-20s %-44s %5s  %s\n", "SERVICE", "SPIFFE ID", "CERTS", "SANS");
    for (size_t i = 0; i < n; i++) {
        struct ca_cert *c = NULL;
        size_t nc = 0, live = 0;
        if (ca_store_cert_list(s, v[i].name, NULL, &c, &nc, &err) == 0)
            for (size_t j = 0; j < nc; j++)
                live += strcmp(c[j].status, "revoked") && c[j].not_after > now;
        ca_cert_list_free(c, nc);
        if (json) {
            json_t *o = json_object(), *d = json_array(), *ip = json_array();
            for (size_t j = 0; j < v[i].n_dns; j++)
                json_array_append_new(d, jstr(v[i].dns[j]));
            for (size_t j = 0; j < v[i].n_ips; j++)
                json_array_append_new(ip, jstr(v[i].ips[j]));
            json_object_set_new(o, "service", jstr(v[i].name));
            json_object_set_new(o, "spiffe_id", jstr(v[i].spiffe_id));
            json_object_set_new(o, "dns", d);
            json_object_set_new(o, "ip", ip);
            json_object_set_new(o, "valid_certificates", json_integer((json_int_t)live));
            json_array_append_new(arr, o);
            continue;
        }
        printf("%-20s %-44s %5zu  ", v[i].name, v[i].spiffe_id, live);
        if (v[i].n_dns + v[i].n_ips == 0)
            printf("-");
        for (size_t j = 0; j < v[i].n_dns; j++)
            printf("%sDNS:%s", j ? "," : "", v[i].dns[j]);
        for (size_t j = 0; j < v[i].n_ips; j++)
            printf("%sIP:%s", j || v[i].n_dns ? "," : "", v[i].ips[j]);
        printf("\n");
    }
    if (json)
        mt_json_print(arr, stdout);
    else if (n == 0)
        printf("(no services registered: meshtls ca register --dir %s SERVICE)\n", dir);
    ca_service_list_free(v, n);
    ca_store_close(s);
    return 0;
}

/* Split a '\n'-separated list (a repeated flag's items) into v[0..*n), in `buf` (modified). */
static int split_items(char *buf, const char **v, size_t *n, size_t cap)
{
    for (char *save = NULL, *t = strtok_r(buf, "\n", &save); t; t = strtok_r(NULL, "\n", &save)) {
        if (*n == cap)
            return -1;
        v[(*n)++] = t;
    }
    return 0;
}

/* One subcommand `sub` of the offline CA with the configuration of `c` and its positional
 * arguments `pos[0..npos)`.  @return the exit status. */
static int ca_sub(const struct cli_cmd *c, const char *sub, char **pos, int npos)
{
    const struct meshtls_config *cfg = c->cfg;
    static char dnsbuf[8192], ipbuf[4096];
    const char *dir = meshtls_config_get(cfg, "ca.dir", NULL);
    const char *td = meshtls_config_get(cfg, "ca.trust_domain", NULL);
    const char *kt = meshtls_config_get(cfg, "ca.key_type", NULL);
    const char *spiffe = meshtls_config_get(cfg, "ca.spiffe_id", NULL);
    const char *out = meshtls_config_get(cfg, "ca.out", NULL);
    const char *csr = meshtls_config_get(cfg, "ca.csr", NULL);
    const char *serial = meshtls_config_get(cfg, "ca.serial", NULL);
    const char *reason = meshtls_config_get(cfg, "ca.reason", NULL);
    const char *crl_out = meshtls_config_get(cfg, "ca.crl_out", NULL);
    const char *root_key = meshtls_config_get(cfg, "ca.root_key", NULL);
    const char *revoke_inter = meshtls_config_get(cfg, "ca.revoke_intermediate", NULL);
    const char *store = meshtls_config_get(cfg, "ca.store", NULL);
    const char *dns_v = meshtls_config_get(cfg, "ca.dns", NULL);
    const char *ip_v = meshtls_config_get(cfg, "ca.ip", NULL);
    struct list_filter lf = {meshtls_config_get(cfg, "ca.service", NULL),
                             meshtls_config_get(cfg, "ca.status", NULL),
                             (int)cli_int(cfg, "ca.expiring_within", -1)};
    const char *dns[MAX_SANS], *ips[MAX_SANS];
    size_t n_dns = 0, n_ips = 0;
    /* ranges were checked when each value was set (src/cli/keys.c) */
    int ceremony = !strcmp(sub, "renew-intermediate") || !strcmp(sub, "root-crl");
    int days_given = meshtls_config_get(cfg, ceremony ? "ca.ca_days" : "ca.days", NULL) != NULL;
    int days = (int)cli_int(cfg, ceremony ? "ca.ca_days" : "ca.days", CA_LEAF_DAYS_DEFAULT);
    int within = (int)cli_int(cfg, "ca.within_days", 14);
    int replace = cli_bool(cfg, "ca.replace", 0), json = cli_bool(cfg, "ca.json", 0);
    int force = cli_bool(cfg, "ca.force", 0), revoke = cli_bool(cfg, "ca.revoke", 0);
    int new_key = cli_bool(cfg, "ca.new_key", 0);
    snprintf(dnsbuf, sizeof(dnsbuf), "%s", dns_v ? dns_v : "");
    snprintf(ipbuf, sizeof(ipbuf), "%s", ip_v ? ip_v : "");
    if (split_items(dnsbuf, dns, &n_dns, MAX_SANS) || split_items(ipbuf, ips, &n_ips, MAX_SANS))
        return usage_err(sub, "too many --dns or --ip (64 at most)");
    if (store && dir) {
        /* a flag names what this invocation is about: it beats the other key configured in
         * the environment or a file (MESHTLS_CA_DIR set, `ca list --store URL` given); both
         * from the same place: the keys in DIR, the data at the URL */
        const char *ssrc = NULL, *dsrc = NULL;
        meshtls_config_get(cfg, "ca.store", &ssrc);
        meshtls_config_get(cfg, "ca.dir", &dsrc);
        int sflag = !strncmp(ssrc, "--", 2), dflag = !strncmp(dsrc, "--", 2);
        if (sflag != dflag) {
            if (dflag)
                store = NULL;
            else
                dir = NULL;
        }
    }
    if (store && !dir && !strcmp(sub, "list")) /* list needs no key file: the store alone */
        return do_list(store, "DIR", json, &lf);
    static char dirbuf[4096];
    if (!(dir = cli_ca_resolve(sub, dir, store, "ca.dir", dirbuf, sizeof(dirbuf))))
        return 2;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    int rc;

    if (!strcmp(sub, "init")) {
        enum mt_key_type t;
        if (!td)
            return usage_err(sub, "--trust-domain TD is required (e.g. example.org)");
        if (npos)
            return usage_err(sub, "unexpected argument");
        if ((rc = mt_key_type_parse(kt, &t, &err)))
            return usage_err(sub, err.msg);
        if (crl_out) { /* checked first: a failed publish must not leave a CA half set up */
            char parent[4096];
            snprintf(parent, sizeof(parent), "%s", crl_out);
            char *slash = strrchr(parent, '/');
            if (slash)
                *(slash == parent ? slash + 1 : slash) = '\0';
            else
                snprintf(parent, sizeof(parent), ".");
            if (access(parent, W_OK) != 0) {
                char m[4300];
                snprintf(m, sizeof(m), "--crl-out %s: the directory %s %s; create it first",
                         crl_out, parent, errno == ENOENT ? "does not exist" : "is not writable");
                return usage_err(sub, m);
            }
        }
        if ((rc = ca_init(dir, td, t, &err)))
            return fail(sub, &err, rc);
        char published[4096] = "";
        int nrev = 0;
        if (crl_out && (rc = ca_crl(dir, crl_out, &nrev, published, sizeof(published), warn_cb,
                                    (void *)sub, &err)))
            return fail(sub, &err, rc);
        printf("created CA for trust domain %s in %s (%s keys)\n"
               "  root CA          %s/root.crt (10 years)\n"
               "  intermediate CA  %s/intermediate.crt (5 years, signs leaf certificates)\n"
               "  trust bundle     %s/ca.crt (give this to every service)\n"
               "  store            %s/meshtls.db\n"
               "IMPORTANT: %s/root.key (mode 0400) is only needed to re-sign the intermediate;\n"
               "move it offline now (e.g. to an encrypted USB key or a vault).\n",
               td, dir, kt, dir, dir, dir, dir, dir);
        if (*published)
            printf("CRL published to %s (rewritten after every revoke)\n", published);
        return 0;
    }
    if (!strcmp(sub, "register")) {
        if (npos != 1)
            return usage_err(sub, "give exactly one SERVICE name");
        int updated = 0;
        char sid[MESHTLS_SPIFFE_ID_MAX + 1];
        if ((rc = ca_register(dir, pos[0], dns, n_dns, ips, n_ips, spiffe, &updated, sid,
                              sizeof(sid), &err)))
            return fail(sub, &err, rc);
        printf("%s service %s (%s", updated ? "updated" : "registered", pos[0], sid);
        for (size_t i = 0; i < n_dns; i++)
            printf(", DNS:%s", dns[i]);
        for (size_t i = 0; i < n_ips; i++)
            printf(", IP:%s", ips[i]);
        printf(")\n");
        return 0;
    }
    if (!strcmp(sub, "issue")) {
        if (npos != 1)
            return usage_err(sub, "give exactly one SERVICE name");
        if (!out)
            return usage_err(sub, "--out OUTDIR is required");
        char s[80];
        if ((rc = ca_issue(dir, pos[0], out, days, csr, s, &err)))
            return fail(sub, &err, rc);
        /* the end date as the certificate says it (capped at the intermediate's end) */
        char kp0[4200], until[32] = "?";
        snprintf(kp0, sizeof(kp0), "%s/%s.crt", out, pos[0]);
        STACK_OF(X509) *issued = NULL;
        if (meshtls_pem_read_certs(kp0, &issued, NULL) == 0) {
            struct meshtls_identity *id = NULL;
            if (meshtls_identity_from_x509(sk_X509_value(issued, 0), &id, NULL) == 0)
                fmt_utc(id->not_after, until, sizeof(until));
            meshtls_identity_free(id);
        }
        sk_X509_pop_free(issued, X509_free);
        printf("issued %s certificate %s valid until %s (%d days)\n  %s/%s.crt (leaf + "
               "intermediate)\n",
               pos[0], s, until, days, out, pos[0]);
        if (!csr)
            printf("  %s/%s.key (private key, mode 0600)\n", out, pos[0]);
        char kp[4200];
        snprintf(kp, sizeof(kp), "%s/%s.key", out, pos[0]);
        if (csr && access(kp, F_OK) == 0)
            fprintf(stderr,
                    "meshtls ca issue: warning: %s is left from an earlier certificate "
                    "and does not match this one; use the key the CSR was made with, and "
                    "remove %s\n",
                    kp, kp);
        printf("  %s/ca.crt (trust bundle)\n", out);
        return 0;
    }
    if (!strcmp(sub, "rotate")) {
        int count = 0, failed = 0;
        if (!force && days <= within) {
            char m[160];
            snprintf(m, sizeof(m),
                     "--days %d must be longer than --within-days %d, or the new certificates "
                     "would be due again at once",
                     days, within);
            return usage_err(sub, m);
        }
        struct ca_rotate_opts ro = {.within_days = within,
                                    .days = days,
                                    .force = force,
                                    .services = (const char *const *)pos,
                                    .n = (size_t)npos,
                                    .report = report,
                                    .warn = warn_cb,
                                    .arg = "rotate"};
        rc = ca_rotate(dir, &ro, &count, &failed, &err);
        if (rc && !failed)
            return fail(sub, &err, rc);
        if (count == 0 && !failed)
            printf(force ? "nothing to rotate: no active certificate\n"
                         : "nothing to rotate: no active certificate expires within %d days\n",
                   within);
        else if (count)
            printf("rotated %d certificate(s); the previous ones stay valid until they expire\n",
                   count);
        return rc ? fail(sub, &err, rc) : 0;
    }
    if (!strcmp(sub, "revoke")) {
        if ((serial && npos) || (!serial && npos != 1))
            return usage_err(sub, "give either --serial HEX or one SERVICE");
        int count = 0;
        char published[4096] = "";
        struct ca_revoke_opts ro = {.serial = serial,
                                    .service = serial ? NULL : pos[0],
                                    .reason = reason,
                                    .replace = replace,
                                    .report = report,
                                    .revoked = revoked_cb,
                                    .warn = warn_cb,
                                    .arg = "replacement for"};
        rc = ca_revoke(dir, &ro, &count, published, sizeof(published), &err);
        if (rc && count == 0)
            return fail(sub, &err, rc);
        printf("revoked %d certificate(s)\n", count);
        if (rc)
            return fail(sub, &err, rc);
        if (*published)
            printf("CRL written to %s\n", published);
        else
            printf("publish a new CRL: meshtls ca crl --dir %s --out FILE (remembered: revoke "
                   "then writes it by itself)\n",
                   dir);
        return 0;
    }
    if (!strcmp(sub, "unregister")) {
        if (npos != 1)
            return usage_err(sub, "give exactly one SERVICE name");
        int count = 0;
        char published[4096] = "";
        rc = ca_unregister(dir, pos[0], revoke, revoked_cb, NULL, &count, published,
                           sizeof(published), &err);
        if (rc && (count == 0 || rc == MESHTLS_EEXIST))
            return fail(sub, &err, rc);
        printf("unregistered %s%s", pos[0], count ? "" : "\n");
        if (count)
            printf(" (revoked %d certificate(s))\n", count);
        if (rc)
            return fail(sub, &err, rc);
        if (*published)
            printf("CRL written to %s\n", published);
        return 0;
    }
    if (!strcmp(sub, "services")) {
        if (npos)
            return usage_err(sub, "unexpected argument");
        return do_services(dir, json);
    }
    if (!strcmp(sub, "renew-intermediate") || !strcmp(sub, "root-crl")) {
        if (!root_key)
            return usage_err(sub, "--root-key FILE is required (the root key brought back for "
                                  "the ceremony)");
        if (npos)
            return usage_err(sub, "unexpected argument");
        if (!strcmp(sub, "root-crl")) {
            int d = days_given ? days : CA_ROOT_CRL_DAYS;
            if ((rc = ca_root_crl(dir, root_key, d, revoke_inter, reason, warn_cb, (void *)sub,
                                  &err)))
                return fail(sub, &err, rc);
            printf("re-signed %s/root.crl, valid %d days%s%s\n", dir, d,
                   revoke_inter ? "; revoked intermediate " : "", revoke_inter ? revoke_inter : "");
            printf("put the root key offline again\n");
            return 0;
        }
        char s[80];
        int d = days_given ? days : CA_INTERMEDIATE_DAYS;
        if ((rc = ca_renew_intermediate(dir, root_key, new_key, d, s, warn_cb, (void *)sub, &err)))
            return fail(sub, &err, rc);
        printf("renewed the intermediate CA (%s key): %s/intermediate.crt, serial %s\n",
               new_key ? "new" : "same", dir, s);
        printf("put the root key offline again\n");
        return 0;
    }
    if (!strcmp(sub, "crl")) {
        int n = 0;
        char written[4096] = "";
        if ((rc = ca_crl(dir, out, &n, written, sizeof(written), warn_cb, (void *)sub, &err))) {
            if (!out && rc == MESHTLS_EINVAL) /* nothing remembered: a usage error */
                return usage_err(sub, err.msg);
            return fail(sub, &err, rc);
        }
        printf("wrote %s: %d revoked certificate(s), valid %d days, plus the root's CRL\n", written,
               n, CA_CRL_DAYS);
        return 0;
    }
    return do_list(dir, dir, json, &lf);
}

int cmd_ca(int argc, char **argv)
{
    /* the control plane (cmd_ca_serve.c) */
    if (argc >= 2 && !strcmp(argv[1], "serve"))
        return cmd_ca_serve(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "token"))
        return cmd_ca_token(argc - 1, argv + 1);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        /* every subcommand's flags, each once and tagged with the subcommands that take it */
        cli_usage_of(argc < 2 ? stderr : stdout, CLI_TABLE_CA, "ca", CA_KEY_OFFLINE, USAGE);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    /* the subcommands and their mode bits (src/cli/keys.h), one per line */
    /* clang-format off */
    static const struct {
        const char *name;
        unsigned mode;
    } subs[] = {
        {"init", CA_KEY_INIT},
        {"register", CA_KEY_REGISTER},
        {"issue", CA_KEY_ISSUE},
        {"rotate", CA_KEY_ROTATE},
        {"revoke", CA_KEY_REVOKE},
        {"crl", CA_KEY_CRL},
        {"list", CA_KEY_LIST},
        {"services", CA_KEY_SERVICES},
        {"unregister", CA_KEY_UNREGISTER},
        {"renew-intermediate", CA_KEY_RENEW},
        {"root-crl", CA_KEY_ROOT_CRL},
    };
    /* clang-format on */
    size_t k;
    for (k = 0; k < sizeof(subs) / sizeof(subs[0]) && strcmp(sub, subs[k].name); k++)
        ;
    if (k == sizeof(subs) / sizeof(subs[0])) {
        fprintf(stderr, "meshtls ca: unknown subcommand '%s'\n\n%s", sub, USAGE);
        return 2;
    }
    char what[48];
    const char *pos[MAX_SANS];
    snprintf(what, sizeof(what), "ca %s", sub);
    struct cli_cmd c = {.what = what,
                        .tables = CLI_TABLE_CA,
                        .role = "ca",
                        .modes = subs[k].mode,
                        .pos = pos,
                        .maxpos = MAX_SANS};
    int status = cli_config_load(&c, argc - 2, argv + 2);
    cli_hide_passwords(argc - 2, argv + 2);
    if (status == 0 && c.help)
        cli_usage(stdout, &c, USAGE, NULL);
    if (status == 0 && !c.help)
        status = ca_sub(&c, sub, (char **)pos, (int)c.npos);
    meshtls_config_free(c.cfg);
    return status;
}
