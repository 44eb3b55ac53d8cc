/*
 * cmd_ca.c - `meshtls ca init|register|issue|rotate|revoke|crl|list`:
 * argument parsing and output; the work is in src/ca.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ca.h"
#include "cli.h"
#include "db.h"
#include "json_utf8.h"
#include "parse.h"
#include "meshtls/meshtls.h"
#include "store.h"

#define MAX_SANS 64

static const char USAGE[] =
    "usage: meshtls ca <subcommand> --dir DIR [options]\n"
    "\n"
    "  init --dir DIR --trust-domain TD [--key-type ec-p256|ec-p384|rsa-2048|ed25519]\n"
    "        create the root (10 years) and intermediate (5 years, pathlen 0) CAs and the\n"
    "        store DIR/meshtls.db; the root key is written 0400: move it offline\n"
    "  register --dir DIR SERVICE [--dns NAME]... [--ip ADDR]... [--spiffe-id URI]\n"
    "        add SERVICE to the registered-services allow-list (default SPIFFE ID\n"
    "        spiffe://TD/svc/SERVICE); registering again updates it\n"
    "  issue --dir DIR SERVICE --out OUTDIR [--days 90] [--csr FILE]\n"
    "        issue a leaf (CN=SERVICE, SPIFFE URI SAN + DNS/IP SANs, serverAuth+clientAuth):\n"
    "        OUTDIR/SERVICE.crt (leaf then intermediate), OUTDIR/SERVICE.key (0600),\n"
    "        OUTDIR/ca.crt; with --csr, sign the CSR (no key is written)\n"
    "  rotate --dir DIR [--within-days 14] [--days 90] [SERVICE...]\n"
    "        re-issue active certificates expiring within the window, into the directory\n"
    "        they were issued to; the old ones stay valid until they expire (overlap)\n"
    "  revoke --dir DIR (--serial HEX | SERVICE) [--reason R] [--replace]\n"
    "        R: unspecified keyCompromise caCompromise affiliationChanged superseded\n"
    "        cessationOfOperation; --replace issues the replacement in the same transaction\n"
    "  crl --dir DIR --out FILE\n"
    "        write the CRL signed by the intermediate, followed by the root's CRL\n"
    "  list (--dir DIR | --store URL) [--json]\n"
    "        --store names the store alone: sqlite:PATH (PATH/.. need not hold the keys);\n"
    "        postgres:// stores are not yet supported (docs/DATABASE.md)\n"
    "        inventory: service, serial, not-after, days left, status\n"
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

static int parse_int(const char *s, int min, int max, int *out)
{
    return mt_parse_int(s, min, max, out) == 0 ? 0 : -1;
}

static void report(const char *service, const char *old_serial, const char *new_serial,
                   const char *out_dir, void *arg)
{
    printf("%s %s: new certificate %s (replaces %s) written to %s\n", (const char *)arg, service,
           new_serial, old_serial, out_dir ? out_dir : "?");
}

enum {
    O_DIR = 256,
    O_TD,
    O_KT,
    O_DNS,
    O_IP,
    O_SPIFFE,
    O_OUT,
    O_DAYS,
    O_CSR,
    O_WITHIN,
    O_SERIAL,
    O_REASON,
    O_REPLACE,
    O_JSON,
    O_STORE,
    O_HELP
};

static const struct option copts[] = {{"dir", 1, 0, O_DIR},
                                      {"trust-domain", 1, 0, O_TD},
                                      {"key-type", 1, 0, O_KT},
                                      {"dns", 1, 0, O_DNS},
                                      {"ip", 1, 0, O_IP},
                                      {"spiffe-id", 1, 0, O_SPIFFE},
                                      {"out", 1, 0, O_OUT},
                                      {"days", 1, 0, O_DAYS},
                                      {"csr", 1, 0, O_CSR},
                                      {"within-days", 1, 0, O_WITHIN},
                                      {"serial", 1, 0, O_SERIAL},
                                      {"reason", 1, 0, O_REASON},
                                      {"replace", 0, 0, O_REPLACE},
                                      {"json", 0, 0, O_JSON},
                                      {"store", 1, 0, O_STORE},
                                      {"help", 0, 0, O_HELP},
                                      {0, 0, 0, 0}};

/* A JSON string of `s` ("" when NULL), valid even when `s` is not UTF-8. */
static json_t *jstr(const char *s)
{
    return mt_json_string(s ? s : "");
}

/* `store`: the CA directory or a store URL; `shown`: how hints name it. */
static int do_list(const char *store, const char *shown, int json)
{
    struct ca_store *s = NULL;
    struct ca_cert *v = NULL;
    size_t n = 0;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    int rc;
    if ((rc = ca_store_open(store, 0, &s, &err)) ||
        (rc = ca_store_cert_list(s, NULL, NULL, &v, &n, &err))) {
        ca_store_close(s);
        return fail("list", &err, rc);
    }
    int64_t now = (int64_t)time(NULL);
    json_t *arr = json ? json_array() : NULL;
    if (!json)
        printf("%-20s %-34s %-20s %9s  %s\n", "SERVICE", "SERIAL", "NOT AFTER", "DAYS LEFT",
               "STATUS");
    for (size_t i = 0; i < n; i++) {
        char na[32];
        time_t t = (time_t)v[i].not_after;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(na, sizeof(na), "%Y-%m-%dT%H:%M:%SZ", &tm);
        int64_t d = v[i].not_after - now;
        long long days = d >= 0 ? d / 86400 : -((-d + 86399) / 86400);
        const char *status = strcmp(v[i].status, "revoked") && d < 0 ? "expired" : v[i].status;
        if (json) {
            json_t *o = json_object();
            json_object_set_new(o, "service", jstr(v[i].service));
            json_object_set_new(o, "serial", jstr(v[i].serial));
            json_object_set_new(o, "not_after", json_string(na));
            json_object_set_new(o, "days_left", json_integer(days));
            json_object_set_new(o, "status", jstr(status));
            json_object_set_new(o, "out_dir", jstr(v[i].out_dir));
            json_object_set_new(o, "reason", mt_json_string(v[i].reason)); /* NULL: null */
            json_array_append_new(arr, o);
        } else {
            printf("%-20s %-34s %-20s %9lld  %s%s%s\n", v[i].service, v[i].serial, na, days, status,
                   v[i].reason ? " " : "", v[i].reason ? v[i].reason : "");
        }
    }
    if (json)
        mt_json_print(arr, stdout);
    else if (n == 0)
        printf("(no certificates issued yet: meshtls ca issue --dir %s SERVICE --out DIR)\n",
               shown);
    ca_cert_list_free(v, n);
    ca_store_close(s);
    return 0;
}

int cmd_ca(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        fputs(USAGE, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    static const char *const subs[] = {"init",   "register", "issue", "rotate",
                                       "revoke", "crl",      "list"};
    int known = 0;
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++)
        known |= !strcmp(sub, subs[i]);
    if (!known) {
        fprintf(stderr, "meshtls ca: unknown subcommand '%s'\n\n%s", sub, USAGE);
        return 2;
    }
    const char *dir = NULL, *td = NULL, *kt = "ec-p256", *spiffe = NULL, *out = NULL, *csr = NULL,
               *serial = NULL, *reason = NULL;
    const char *dns[MAX_SANS], *ips[MAX_SANS];
    size_t n_dns = 0, n_ips = 0;
    int days = CA_LEAF_DAYS_DEFAULT, within = 14, replace = 0, json = 0, opt;
    char store[4200]; /* --store URL, possibly with a password: wiped after use */
    int have_store = 0, rc_store;
    argc--, argv++;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", copts, NULL)) != -1) {
        switch (opt) {
        case O_DIR: dir = optarg; break;
        case O_TD: td = optarg; break;
        case O_KT: kt = optarg; break;
        case O_DNS:
            if (n_dns == MAX_SANS)
                return usage_err(sub, "too many --dns (64 at most)");
            dns[n_dns++] = optarg;
            break;
        case O_IP:
            if (n_ips == MAX_SANS)
                return usage_err(sub, "too many --ip (64 at most)");
            ips[n_ips++] = optarg;
            break;
        case O_SPIFFE: spiffe = optarg; break;
        case O_OUT: out = optarg; break;
        case O_DAYS:
            if (parse_int(optarg, 1, CA_LEAF_DAYS_MAX, &days))
                return usage_err(sub, "--days: expected a number of days from 1 to 825");
            break;
        case O_CSR: csr = optarg; break;
        case O_WITHIN:
            if (parse_int(optarg, 0, 3650, &within))
                return usage_err(sub, "--within-days: expected a number from 0 to 3650");
            break;
        case O_SERIAL: serial = optarg; break;
        case O_REASON: reason = optarg; break;
        case O_REPLACE: replace = 1; break;
        case O_JSON: json = 1; break;
        case O_STORE:
            /* Copied, then hidden from `ps` / /proc/PID/cmdline at once. */
            snprintf(store, sizeof(store), "%s", optarg);
            mt_db_url_hide_password(optarg);
            have_store = 1;
            break;
        case O_HELP: fputs(USAGE, stdout); return 0;
        default: return 2;
        }
    }
    if (have_store && strcmp(sub, "list"))
        return usage_err(sub, "--store URL is accepted by 'list' only for now: the other "
                              "subcommands keep the store with the keys in --dir DIR");
    if (have_store && dir)
        return usage_err(sub, "give --dir DIR or --store URL, not both");
    if (have_store) {
        rc_store = do_list(store, "DIR", json);
        explicit_bzero(store, sizeof(store));
        return rc_store;
    }
    if (!dir)
        return usage_err(sub, "--dir DIR is required (the CA directory)");
    char **pos = argv + optind;
    int npos = argc - optind;
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
        if ((rc = ca_init(dir, td, t, &err)))
            return fail(sub, &err, rc);
        printf("created CA for trust domain %s in %s (%s keys)\n"
               "  root CA          %s/root.crt (10 years)\n"
               "  intermediate CA  %s/intermediate.crt (5 years, signs leaf certificates)\n"
               "  trust bundle     %s/ca.crt (give this to every service)\n"
               "  store            %s/meshtls.db\n"
               "IMPORTANT: %s/root.key (mode 0400) is only needed to re-sign the intermediate;\n"
               "move it offline now (e.g. to an encrypted USB key or a vault).\n",
               td, dir, kt, dir, dir, dir, dir, dir);
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
        printf("issued %s certificate %s valid %d days\n  %s/%s.crt (leaf + intermediate)\n",
               pos[0], s, days, out, pos[0]);
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
        int count = 0;
        if ((rc = ca_rotate(dir, within, days, (const char *const *)pos, (size_t)npos, report,
                            "rotated", &count, &err)))
            return fail(sub, &err, rc);
        if (count == 0)
            printf("nothing to rotate: no active certificate expires within %d days\n", within);
        else
            printf("rotated %d certificate(s); the previous ones stay valid until they expire\n",
                   count);
        return 0;
    }
    if (!strcmp(sub, "revoke")) {
        if ((serial && npos) || (!serial && npos != 1))
            return usage_err(sub, "give either --serial HEX or one SERVICE");
        int count = 0;
        if ((rc = ca_revoke(dir, serial, serial ? NULL : pos[0], reason, replace, report,
                            "replacement for", &count, &err)))
            return fail(sub, &err, rc);
        printf("revoked %d certificate(s); publish a new CRL: meshtls ca crl --dir %s --out "
               "FILE\n",
               count, dir);
        return 0;
    }
    if (!strcmp(sub, "crl")) {
        if (!out)
            return usage_err(sub, "--out FILE is required");
        int n = 0;
        if ((rc = ca_crl(dir, out, &n, &err)))
            return fail(sub, &err, rc);
        printf("wrote %s: %d revoked certificate(s), valid %d days, plus the root's CRL\n", out, n,
               CA_CRL_DAYS);
        return 0;
    }
    return do_list(dir, dir, json);
}
